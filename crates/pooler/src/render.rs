//! The three files a cluster's PgBouncer runs on, written from what pgplane wants: its
//! configuration (`pgbouncer.ini`: one `[databases]` entry per pool), its logins (`users.txt`:
//! the SCRAM verifiers pgplane set on the server, and a plaintext password only for a pool's
//! fixed user, which PgBouncer must log in as itself) and who may connect from where
//! (`hba.conf`: the trusted sources). Pure text, so that what the pooler writes can be compared
//! with what is on disk.

use std::fmt::Write;
use std::path::Path;

use pgplane_core::model::PoolMode;

/// The PgBouncer admin console's one user: a name no cluster user can have (pgplane refuses
/// user names starting with `pg_`), so that it never collides with a login in `users.txt`.
pub const ADMIN_USER: &str = "pg_pgplane_pooler";

/// Where a cluster's PgBouncer listens and what it leads to.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    /// The folder of its files and its Unix socket.
    pub dir: &'a Path,
    pub listen_host: &'a str,
    pub listen_port: u16,
    pub server_host: &'a str,
    pub server_port: u16,
    /// The cluster's registered sslmode, used for PgBouncer's own server connections.
    pub sslmode: &'a str,
    /// A CA certificate is written beside the files (verify-ca and verify-full).
    pub has_ca: bool,
    pub max_client_conn: u32,
}

/// A pool as PgBouncer runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub name: String,
    pub database: String,
    /// The server login it uses (None: each client's own).
    pub user: Option<String>,
    pub mode: PoolMode,
    pub size: i32,
}

/// A login PgBouncer accepts: a role name and its SCRAM verifier or, for a pool's fixed user,
/// its password.
#[derive(Debug, Clone)]
pub struct LoginEntry {
    pub name: String,
    pub secret: String,
}

/// The rendered files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ini: String,
    pub users: String,
    pub hba: String,
}

pub const INI: &str = "pgbouncer.ini";
pub const USERS: &str = "users.txt";
pub const HBA: &str = "hba.conf";
pub const CA: &str = "server-ca.pem";

/// The files of one cluster's PgBouncer. `sources`: the trusted sources as CIDR networks
/// (empty: any address).
pub fn render(
    layout: &Layout<'_>,
    pools: &[PoolEntry],
    logins: &[LoginEntry],
    sources: &[String],
    admin_password: &str,
) -> Files {
    let dir = layout.dir.display();
    let mut ini = String::from("; Written by pgplane pooler; changes by hand are undone.\n[databases]\n");
    for pool in pools {
        let _ = write!(
            ini,
            "{} = host={} port={} dbname={} pool_size={} max_db_connections={} pool_mode={}",
            pool.name,
            quoted(layout.server_host),
            layout.server_port,
            quoted(&pool.database),
            pool.size,
            pool.size,
            pool.mode.as_str()
        );
        if let Some(user) = &pool.user {
            let _ = write!(ini, " user={}", quoted(user));
        }
        ini.push('\n');
    }
    let _ = write!(
        ini,
        "\n[pgbouncer]\nlisten_addr = {}\nlisten_port = {}\nunix_socket_dir = {dir}\n\
         auth_type = hba\nauth_hba_file = {dir}/{HBA}\nauth_file = {dir}/{USERS}\n\
         admin_users = {ADMIN_USER}\npidfile = {dir}/pgbouncer.pid\nmax_client_conn = {}\n\
         ignore_startup_parameters = extra_float_digits\nlog_connections = 0\nlog_disconnections = 0\n\
         server_tls_sslmode = {}\n",
        layout.listen_host,
        layout.listen_port,
        layout.max_client_conn,
        server_tls_sslmode(layout.sslmode),
    );
    if layout.has_ca {
        let _ = writeln!(ini, "server_tls_ca_file = {dir}/{CA}");
    }

    let mut users = String::new();
    let _ = writeln!(users, "{} {}", auth_quoted(ADMIN_USER), auth_quoted(admin_password));
    for login in logins {
        let _ = writeln!(users, "{} {}", auth_quoted(&login.name), auth_quoted(&login.secret));
    }

    let mut hba = format!("local pgbouncer {ADMIN_USER} scram-sha-256\n");
    if !pools.is_empty() {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let names = names.join(",");
        let any = ["0.0.0.0/0".to_string(), "::/0".to_string()];
        let sources = if sources.is_empty() { &any[..] } else { sources };
        for source in sources {
            let _ = writeln!(hba, "host {names} all {source} scram-sha-256");
        }
    }
    Files { ini, users, hba }
}

/// PgBouncer's server-side sslmode for the cluster's registered one (PgBouncer knows the same
/// names; `allow` is not among them).
fn server_tls_sslmode(sslmode: &str) -> &str {
    match sslmode {
        "allow" => "prefer",
        other => other,
    }
}

/// A value in a `[databases]` connection string, single-quoted. Names a pool may lead to are
/// checked to hold no quote or backslash (`pgplane_core::names::pgbouncer_can_carry`).
fn quoted(value: &str) -> String {
    format!("'{value}'")
}

/// A field of `users.txt`: double-quoted, a double quote written twice.
fn auth_quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn a_cluster_with_two_pools_and_one_trusted_source() {
        let layout = Layout {
            dir: Path::new("/run/pooler/c1"),
            listen_host: "127.0.0.1",
            listen_port: 25061,
            server_host: "127.0.0.1",
            server_port: 5432,
            sslmode: "disable",
            has_ca: false,
            max_client_conn: 1000,
        };
        let pools = [
            PoolEntry {
                name: "backend-pool".into(),
                database: "defaultdb".into(),
                user: None,
                mode: PoolMode::Transaction,
                size: 10,
            },
            PoolEntry {
                name: "reports".into(),
                database: "analytics".into(),
                user: Some("doadmin".into()),
                mode: PoolMode::Session,
                size: 3,
            },
        ];
        let logins = [
            LoginEntry { name: "doadmin".into(), secret: "pw".into() },
            LoginEntry { name: "app\"x".into(), secret: "SCRAM-SHA-256$4096:c2FsdA==$a:b".into() },
        ];
        let files = render(&layout, &pools, &logins, &["127.0.0.2/32".into()], "admin-pw");
        expect![[r#"
            ; Written by pgplane pooler; changes by hand are undone.
            [databases]
            backend-pool = host='127.0.0.1' port=5432 dbname='defaultdb' pool_size=10 max_db_connections=10 pool_mode=transaction
            reports = host='127.0.0.1' port=5432 dbname='analytics' pool_size=3 max_db_connections=3 pool_mode=session user='doadmin'

            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = 25061
            unix_socket_dir = /run/pooler/c1
            auth_type = hba
            auth_hba_file = /run/pooler/c1/hba.conf
            auth_file = /run/pooler/c1/users.txt
            admin_users = pg_pgplane_pooler
            pidfile = /run/pooler/c1/pgbouncer.pid
            max_client_conn = 1000
            ignore_startup_parameters = extra_float_digits
            log_connections = 0
            log_disconnections = 0
            server_tls_sslmode = disable
        "#]]
        .assert_eq(&files.ini);
        expect![[r#"
            "pg_pgplane_pooler" "admin-pw"
            "doadmin" "pw"
            "app""x" "SCRAM-SHA-256$4096:c2FsdA==$a:b"
        "#]]
        .assert_eq(&files.users);
        expect![[r#"
            local pgbouncer pg_pgplane_pooler scram-sha-256
            host backend-pool,reports all 127.0.0.2/32 scram-sha-256
        "#]]
        .assert_eq(&files.hba);
    }

    #[test]
    fn without_trusted_sources_any_address_may_log_in_and_without_pools_none() {
        let layout = Layout {
            dir: Path::new("/d"),
            listen_host: "127.0.0.1",
            listen_port: 6432,
            server_host: "db",
            server_port: 5432,
            sslmode: "verify-full",
            has_ca: true,
            max_client_conn: 10,
        };
        let pool = PoolEntry {
            name: "p1".into(),
            database: "d".into(),
            user: None,
            mode: PoolMode::Statement,
            size: 1,
        };
        let open = render(&layout, &[pool], &[], &[], "a");
        assert!(open.hba.contains("host p1 all 0.0.0.0/0 scram-sha-256\nhost p1 all ::/0 scram-sha-256\n"));
        assert!(open
            .ini
            .contains("server_tls_sslmode = verify-full\nserver_tls_ca_file = /d/server-ca.pem\n"));
        let closed = render(&layout, &[], &[], &[], "a");
        assert_eq!(closed.hba, "local pgbouncer pg_pgplane_pooler scram-sha-256\n");
    }
}
