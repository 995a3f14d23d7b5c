//! Tests leave nothing behind on the servers they use, above all on a developer's own server
//! (PGPLANE_TEST_PG_URL): every role and database a test makes is named with its suffix, and a
//! [`TestApp`](crate::TestApp) removes them all when it is dropped, also when its test panics.
//! A test process that is killed cannot clean up, so each test holds a claim on its suffix (a
//! session-level advisory lock, released by the server when the process dies), and the next
//! run sweeps every suffix that nobody claims any more. The markers the sweep looks for, the
//! metadata role `pgplane_meta_<suffix>` and database `pgplane_test_<suffix>`, are made first
//! and removed last.

use pgplane_target_server::sql::ident;
use tokio_postgres::Client;

use crate::servers::PgServer;

/// The advisory lock class of test claims (the object id is a hash of the suffix).
const CLAIM_CLASS: i32 = 0x7067_7463;

/// The prefix of each test's metadata role; the suffix follows.
pub(crate) const META_ROLE_PREFIX: &str = "pgplane_meta_";
/// The prefix of each test's metadata database; the suffix follows.
pub(crate) const META_DB_PREFIX: &str = "pgplane_test_";

/// A session that holds a test's claim on its suffix for as long as it is open.
pub(crate) struct Claim {
    _session: Client,
}

impl Claim {
    /// Claims `suffix` on `server` (before anything is named with it).
    pub(crate) async fn take(server: &PgServer, suffix: &str) -> Self {
        let session = server.admin("postgres").await;
        session
            .execute("SELECT pg_advisory_lock($1, hashtext($2))", &[&CLAIM_CLASS, &suffix])
            .await
            .expect("claim the test's names");
        Self { _session: session }
    }
}

/// Removes every role and database named with `suffix` from each server, from a thread of its
/// own (it is called from `Drop`, on the test's runtime). Failures are reported, never raised.
pub(crate) fn remove_now(servers: Vec<PgServer>, suffix: String) {
    let cleaning = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        for server in &servers {
            if let Err(e) = runtime.block_on(remove(server, &suffix)) {
                eprintln!(
                    "testkit: could not remove the objects of test {suffix} on port {}: {e}",
                    server.port
                );
            }
        }
    });
    let _ = cleaning.join();
}

/// Removes every role and database named with `suffix`: no login, sessions ended, databases
/// dropped, what the roles own or were granted elsewhere dropped, then the roles, the markers
/// (the metadata role) among the last.
pub async fn remove(server: &PgServer, suffix: &str) -> Result<(), tokio_postgres::Error> {
    let admin = server.login(&server.user, &server.password, "postgres").await?;
    let named = |catalog: &str, column: &str| {
        format!("SELECT {column}::text FROM {catalog} WHERE right({column}, length($1)) = $1 ORDER BY 1")
    };
    let strings = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get(0)).collect::<Vec<String>>();
    let mut roles = strings(admin.query(&named("pg_roles", "rolname"), &[&suffix]).await?);
    // pgplane's access groups are named by a hash; their comment names their database.
    roles.extend(strings(
        admin
            .query(
                "SELECT rolname::text FROM pg_roles
                  WHERE starts_with(rolname, 'pgplane_access_')
                    AND strpos(shobj_description(oid, 'pg_authid'), $1) > 0 ORDER BY 1",
                &[&suffix],
            )
            .await?,
    ));
    // Nothing of the test's logs in again (its pgplane may still be running): the admin role
    // first, so no reconciler can put anything back.
    for role in &roles {
        admin.batch_execute(&format!("ALTER ROLE {} NOLOGIN", ident(role))).await?;
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE pid <> pg_backend_pid()
                AND (right(usename::text, length($1)) = $1 OR right(datname::text, length($1)) = $1)",
            &[&suffix],
        )
        .await?;
    let databases = strings(admin.query(&named("pg_database", "datname"), &[&suffix]).await?);
    let (markers, others): (Vec<&String>, Vec<&String>) =
        databases.iter().partition(|d| d.starts_with(META_DB_PREFIX));
    for database in others.into_iter().chain(markers) {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database))).await?;
    }
    if roles.is_empty() {
        return Ok(());
    }
    let role_list = roles.iter().map(|r| ident(r)).collect::<Vec<_>>().join(", ");
    // Objects and privileges in databases that stay: DROP OWNED acts on one database (and the
    // shared objects), so it runs in each database the roles appear in.
    let elsewhere = strings(
        admin
            .query(
                "SELECT DISTINCT d.datname::text FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
                  WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid IN
                        (SELECT oid FROM pg_roles WHERE right(rolname, length($1)) = $1)
                    AND d.datname <> 'postgres' AND d.datallowconn",
                &[&suffix],
            )
            .await?,
    );
    admin.batch_execute(&format!("DROP OWNED BY {role_list}")).await?;
    for database in &elsewhere {
        let session = server.login(&server.user, &server.password, database).await?;
        session.batch_execute(&format!("DROP OWNED BY {role_list}")).await?;
    }
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {role_list}")).await
}

/// Removes what killed test runs left on `server`: the objects of every suffix whose markers
/// remain and that no live test claims. Returns the suffixes swept.
pub async fn sweep_stale(server: &PgServer) -> Result<Vec<String>, tokio_postgres::Error> {
    let session = server.login(&server.user, &server.password, "postgres").await?;
    let rows = session
        .query(
            "SELECT substr(rolname, length($1) + 1) FROM pg_roles WHERE starts_with(rolname, $1)
             UNION SELECT substr(datname, length($2) + 1) FROM pg_database WHERE starts_with(datname, $2)",
            &[&META_ROLE_PREFIX, &META_DB_PREFIX],
        )
        .await?;
    let mut swept = Vec::new();
    for suffix in rows.iter().map(|r| r.get::<_, String>(0)) {
        let unclaimed: bool = session
            .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&CLAIM_CLASS, &suffix])
            .await?
            .get(0);
        if !unclaimed {
            continue;
        }
        let removed = remove(server, &suffix).await;
        session.execute("SELECT pg_advisory_unlock($1, hashtext($2))", &[&CLAIM_CLASS, &suffix]).await?;
        removed?;
        swept.push(suffix);
    }
    Ok(swept)
}
