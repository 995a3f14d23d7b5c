//! Connection pools on a real PgBouncer run by `pgplane pooler`: clients log in through a pool
//! with SCRAM (as themselves, or as its fixed user), a pool never uses more server connections
//! than its size, resets, trusted sources and deletions reach PgBouncer, drift in PgBouncer is
//! repaired, and bad requests are refused changing nothing. On PostgreSQL 15 and 17.

use std::time::Duration;

use pgplane_testkit::{TestApp, TestPooler};
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

use crate::on_each_version;

/// Creates a pool, trying again while the pooler has not registered its server yet.
pub(crate) async fn create_pool(app: &TestApp, body: Value) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = app.post(&app.cluster_path("/pools"), body.clone()).await;
        if status == 201 {
            return answer;
        }
        let waiting =
            answer["message"].as_str().is_some_and(|m| m.contains("no pooler") || m.contains("too large"));
        assert!(status == 422 && waiting && tokio::time::Instant::now() < deadline, "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the pool's status is `ready`; returns it.
pub(crate) async fn ready_pool(app: &TestApp, name: &str) -> Value {
    let path = app.cluster_path(&format!("/pools/{name}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = app.get(&path).await;
        if body["pool"]["status"] == "ready" {
            return body["pool"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the pool did not become ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in through a pool from `source` (a loopback address).
pub(crate) async fn through_pool(
    port: u16,
    source: &str,
    pool: &str,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().unwrap()).expect("bind the source address");
    let stream = socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.expect("reach PgBouncer");
    let (client, connection) = tokio_postgres::Config::new()
        .user(user)
        .password(password)
        .dbname(pool)
        .connect_raw(stream, NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The target's connection slots: max_connections less its reserved ones (the pool budget
/// before the pooler's own reserve).
pub(crate) async fn connection_slots(app: &TestApp) -> i32 {
    app.target
        .admin("postgres")
        .await
        .query_one(
            "SELECT current_setting('max_connections')::int4 - current_setting('superuser_reserved_connections')::int4
                    - coalesce(current_setting('reserved_connections', true)::int4, 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The sessions `user` holds on `database` on the target.
async fn server_sessions(app: &TestApp, user: &str, database: &str) -> i64 {
    app.target
        .admin("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2 AND backend_type = 'client backend'",
            &[&user, &database],
        )
        .await
        .unwrap()
        .get(0)
}

async fn pools_serve_clients_through_pgbouncer(major: u32) {
    let app = TestApp::spawn(major).await;
    let pooler = app.start_pooler().await;
    let db = app.default_db.clone();
    let primary = app.primary_user.clone();
    let primary_password = app.primary_password().await;

    // A pool without a user: each client logs in as itself, with SCRAM checked by PgBouncer
    // against the verifier pgplane set on the server.
    let created =
        create_pool(&app, json!({"name": "tx-pool", "mode": "transaction", "size": 2, "db": db})).await;
    let connection = &created["pool"]["connection"];
    assert_eq!(connection["database"], "tx-pool", "{created}");
    assert_eq!(connection["port"], pooler.port, "{created}");
    assert_eq!(created["pool"]["user"], "", "{created}");
    assert_eq!(created["pool"]["private_connection"], *connection, "{created}");
    ready_pool(&app, "tx-pool").await;
    let client =
        through_pool(pooler.port, "127.0.0.1", "tx-pool", &primary, &primary_password).await.unwrap();
    let row = client.query_one("SELECT current_user::text, current_database()::text", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), (primary.clone(), db.clone()));
    let wrong = through_pool(pooler.port, "127.0.0.1", "tx-pool", &primary, "not-the-password").await;
    assert!(wrong.is_err(), "a wrong password is refused by PgBouncer");
    drop(client);

    // Six clients at once through a pool of size 2: never more than 2 server connections.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(
            through_pool(pooler.port, "127.0.0.1", "tx-pool", &primary, &primary_password).await.unwrap(),
        );
    }
    let work = futures::future::join_all(clients.iter().map(|c| c.simple_query("SELECT pg_sleep(0.6)")));
    let sample = async {
        let mut most = 0;
        for _ in 0..15 {
            most = most.max(server_sessions(&app, &primary, &db).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        most
    };
    let (done, most) = tokio::join!(work, sample);
    assert!(done.iter().all(Result::is_ok), "every client was served: {done:?}");
    assert!((1..=2).contains(&most), "server connections of the pool: {most} (size 2)");
    let console = pooler.console(&app.cluster_id).await;
    let pools = console.simple_query("SHOW POOLS").await.unwrap();
    let row = pools
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("tx-pool") => Some(r),
            _ => None,
        })
        .expect("SHOW POOLS lists the pool");
    let servers: i64 = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
        .iter()
        .map(|c| row.get(*c).unwrap().parse::<i64>().unwrap())
        .sum();
    assert!(servers <= 2, "PgBouncer holds {servers} server connections for a pool of size 2");
    drop(clients);

    // A pool with a fixed user: psql with the pool's own connection string.
    let fixed_user = app.unique("pooled");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({"name": fixed_user})).await;
    assert_eq!(status, 201, "{body}");
    let created = create_pool(
        &app,
        json!({"name": "fixed-pool", "mode": "session", "size": 1, "db": db, "user": fixed_user}),
    )
    .await;
    assert_eq!(created["pool"]["user"], fixed_user.as_str());
    let pool = ready_pool(&app, "fixed-pool").await;
    let uri = pool["connection"]["uri"].as_str().unwrap().to_string();
    assert!(uri.contains(&format!(":{}/fixed-pool?", pooler.port)), "{uri}");
    let out = tokio::process::Command::new("psql")
        .args([uri.as_str(), "-tAc", "SELECT current_user"])
        .output()
        .await
        .expect("psql");
    assert!(out.status.success(), "psql through the pool: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fixed_user);
    // Its user cannot be deleted while the pool logs in as it.
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{fixed_user}"))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("fixed-pool"), "{body}");
    assert!(app.role_exists(&fixed_user).await);
    // Its user taken away (godo sends "user": ""): each client logs in as itself through it
    // (PgBouncer keeps a fixed user through a RELOAD, so the pooler takes the pool out first).
    let (status, body) = app
        .put(
            &app.cluster_path("/pools/fixed-pool"),
            json!({"mode": "session", "size": 1, "db": db, "user": ""}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let own = app
        .eventually(Duration::from_secs(20), || async {
            let (_, body) = app.get(&app.cluster_path("/pools/fixed-pool")).await;
            if body["pool"]["status"] != "ready" || body["pool"]["user"] != "" {
                return false;
            }
            match through_pool(pooler.port, "127.0.0.1", "fixed-pool", &primary, &primary_password).await {
                Ok(c) => {
                    c.query_one("SELECT current_user::text", &[]).await.unwrap().get::<_, String>(0)
                        == primary
                }
                Err(_) => false,
            }
        })
        .await;
    assert!(own, "without its fixed user, the pool logs clients in as themselves");

    // A reset: the new password logs in through the pool, the old one no more.
    let rotated = app.unique("rotated");
    let old = app.create_user(&rotated).await;
    let (status, body) =
        app.post(&app.cluster_path(&format!("/users/{rotated}/reset_auth")), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let new = body["user"]["password"].as_str().unwrap().to_string();
    let switched = app
        .eventually(Duration::from_secs(20), || async {
            through_pool(pooler.port, "127.0.0.1", "tx-pool", &rotated, &new).await.is_ok()
                && through_pool(pooler.port, "127.0.0.1", "tx-pool", &rotated, &old).await.is_err()
        })
        .await;
    assert!(switched, "the new password logs in through the pool and the old one is refused");

    // Trusted sources: 127.0.0.2 in, 127.0.0.1 out, at the pooler.
    let (status, body) = app
        .put(&app.cluster_path("/firewall"), json!({"rules": [{"type": "ip_addr", "value": "127.0.0.2", "uuid": "", "cluster_uuid": "", "created_at": "0001-01-01T00:00:00Z"}]}))
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, listed) = app.get(&app.cluster_path("/firewall")).await;
    assert_eq!(listed["rules"][0]["value"], "127.0.0.2/32", "{listed}");
    assert_eq!(listed["rules"][0]["cluster_uuid"], app.cluster_id.as_str(), "{listed}");
    assert!(listed["pgplane"]["enforcement"].as_str().unwrap().contains("pg_hba.conf"), "{listed}");
    let enforced = app
        .eventually(Duration::from_secs(20), || async {
            through_pool(pooler.port, "127.0.0.1", "tx-pool", &primary, &primary_password).await.is_err()
                && through_pool(pooler.port, "127.0.0.2", "tx-pool", &primary, &primary_password)
                    .await
                    .is_ok()
        })
        .await;
    assert!(enforced, "only 127.0.0.2 may log in through the pool");
    let (status, _) = app.put(&app.cluster_path("/firewall"), json!({"rules": []})).await;
    assert_eq!(status, 204);
    let open = app
        .eventually(Duration::from_secs(20), || async {
            through_pool(pooler.port, "127.0.0.1", "tx-pool", &primary, &primary_password).await.is_ok()
        })
        .await;
    assert!(open, "without trusted sources any address may log in again");

    // A deleted pool is gone from PgBouncer, its sessions with it.
    let held =
        through_pool(pooler.port, "127.0.0.1", "fixed-pool", &primary, &primary_password).await.unwrap();
    let (status, _) = app.delete(&app.cluster_path("/pools/fixed-pool")).await;
    assert_eq!(status, 204);
    let gone = app
        .eventually(Duration::from_secs(20), || async {
            through_pool(pooler.port, "127.0.0.1", "fixed-pool", &primary, &primary_password).await.is_err()
        })
        .await;
    assert!(gone, "the deleted pool refuses logins");
    assert!(held.simple_query("SELECT 1").await.is_err(), "its open session was ended");
    let (status, _) = app.get(&app.cluster_path("/pools/fixed-pool")).await;
    assert_eq!(status, 404);
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{fixed_user}"))).await;
    assert_eq!(status, 204, "its user can be deleted now: {body}");

    // A database with a pool is deleted with it: the pool goes too.
    let dropped = app.unique("dropped");
    app.create_db(&dropped).await;
    create_pool(&app, json!({"name": "on-dropped", "mode": "transaction", "size": 1, "db": dropped})).await;
    ready_pool(&app, "on-dropped").await;
    let (status, body) = app.delete(&app.cluster_path(&format!("/dbs/{dropped}"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.database_exists(&dropped).await);
    let (status, _) = app.get(&app.cluster_path("/pools/on-dropped")).await;
    assert_eq!(status, 404);

    // The events tell what happened.
    let (status, body) = app.get(&app.cluster_path("/events")).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    // DigitalOcean's event types only (typed clients may hold them as an enum); the detail is
    // pgplane's.
    assert!(events
        .iter()
        .all(|e| ["cluster_create", "cluster_update"].contains(&e["event_type"].as_str().unwrap())));
    assert_eq!(events.last().unwrap()["event_type"], "cluster_create", "{body}");
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["pgplane"]["action"].as_str().unwrap(), e["pgplane"]["object"].as_str().unwrap_or("")))
        .collect();
    for expected in [
        ("pool_create", "tx-pool"),
        ("pool_delete", "fixed-pool"),
        ("firewall_update", ""),
        ("user_reset_auth", rotated.as_str()),
        ("database_delete", dropped.as_str()),
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    assert!(body["events"][0]["cluster_name"].as_str().unwrap().starts_with("c-"), "{body}");
    pooler.stop().await;
}
on_each_version!(pools_serve_clients_through_pgbouncer);

async fn drift_in_pgbouncer_is_repaired_and_recorded(major: u32) {
    let app = TestApp::spawn(major).await;
    let pooler = app.start_pooler().await;
    let db = app.default_db.clone();
    create_pool(&app, json!({"name": "drifty", "mode": "transaction", "size": 3, "db": db})).await;
    ready_pool(&app, "drifty").await;
    let console = pooler.console(&app.cluster_id).await;

    // The configuration changed by hand and reloaded: put back.
    let ini = pooler.run_dir.join(&app.cluster_id).join("pgbouncer.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(
        &ini,
        text.replace("pool_size=3 max_db_connections=3", "pool_size=50 max_db_connections=50"),
    )
    .unwrap();
    console.simple_query("RELOAD").await.unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            let size = pool_size_in_pgbouncer(&pooler, &app.cluster_id, "drifty").await;
            size.as_deref() == Some("3") && std::fs::read_to_string(&ini).unwrap().contains("pool_size=3 ")
        })
        .await;
    assert!(repaired, "the pool's size in PgBouncer is put back");

    // PgBouncer stopped behind the pooler's back: started again.
    let _ = console.simple_query("SHUTDOWN").await;
    let restarted = app
        .eventually(Duration::from_secs(20), || async {
            pool_size_in_pgbouncer(&pooler, &app.cluster_id, "drifty").await.as_deref() == Some("3")
        })
        .await;
    assert!(restarted, "PgBouncer runs again with the pool");
    let client =
        through_pool(pooler.port, "127.0.0.1", "drifty", &app.primary_user, &app.primary_password().await)
            .await
            .unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    let described = app
        .eventually(Duration::from_secs(10), || async {
            let (_, body) = app.get(&app.cluster_path("/events")).await;
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["pgplane"]["action"] == "pool_drift_repaired")
                .count()
                >= 2
        })
        .await;
    let found = crate::drift_described(&app, "drifty").await;
    assert!(described, "both repairs are in the events: {found:?}");
    assert!(found.iter().any(|d| d.contains("changed")), "{found:?}");
    assert!(found.iter().any(|d| d.contains("not running")), "{found:?}");
    pooler.stop().await;
}
on_each_version!(drift_in_pgbouncer_is_repaired_and_recorded);

/// The pool's `pool_size` as PgBouncer runs it (None when it does not, or does not answer).
async fn pool_size_in_pgbouncer(pooler: &TestPooler, cluster_id: &str, pool: &str) -> Option<String> {
    let password = std::fs::read_to_string(pooler.run_dir.join("admin-password")).ok()?;
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(pooler.run_dir.join(cluster_id))
        .port(pooler.port)
        .user("pg_pgplane_pooler")
        .password(password.trim())
        .dbname("pgbouncer")
        .connect(NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let rows = client.simple_query("SHOW DATABASES").await.ok()?;
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get("name") == Some(pool) => {
            r.get("pool_size").map(str::to_owned)
        }
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pools_and_rules_are_refused_saying_why_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let db = app.default_db.clone();
    // Without a pooler beside the server, a pool cannot be served: said at once.
    let (status, body) = app
        .post(&app.cluster_path("/pools"), json!({"name": "early", "mode": "session", "size": 1, "db": db}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("pgplane pooler --server"), "{body}");

    let pooler = app.start_pooler().await;
    create_pool(&app, json!({"name": "kept", "mode": "session", "size": 1, "db": db})).await;
    let lease = app.unique("leased");
    let (status, body) = app.post(&app.cluster_path("/users"), json!({"name": lease, "ttl": "1h"})).await;
    assert_eq!(status, 201, "{body}");
    let cases = [
        (json!({"mode": "session", "size": 1, "db": db}), "name field required"),
        (json!({"name": "ab", "mode": "session", "size": 1, "db": db}), "3 to 60"),
        (json!({"name": "Bad Name", "mode": "session", "size": 1, "db": db}), "is invalid"),
        (json!({"name": "pgbouncer", "mode": "session", "size": 1, "db": db}), "reserved"),
        (json!({"name": "p-mode", "mode": "sometimes", "size": 1, "db": db}), "mode \"sometimes\""),
        (json!({"name": "p-size", "mode": "session", "size": 0, "db": db}), "size 0"),
        (json!({"name": "p-huge", "mode": "session", "size": 9000, "db": db}), "too large"),
        (json!({"name": "p-nodb", "mode": "session", "size": 1}), "db field required"),
        (
            json!({"name": "p-otherdb", "mode": "session", "size": 1, "db": "postgres"}),
            "not a database of this cluster",
        ),
        (
            json!({"name": "p-nouser", "mode": "session", "size": 1, "db": db, "user": "nobody_here"}),
            "not a user",
        ),
        (json!({"name": "p-lease", "mode": "session", "size": 1, "db": db, "user": lease}), "lease"),
        (json!({"name": "kept", "mode": "session", "size": 1, "db": db}), "already exists"),
    ];
    for (body, says) in cases {
        let (status, answer) = app.post(&app.cluster_path("/pools"), body.clone()).await;
        assert!(status == 422 || status == 409, "{body}: {status} {answer}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    // More than the team's share (50%) of the server's pool connections (its slots less the 13
    // the test pooler keeps), though within the server's.
    let slots = connection_slots(&app).await;
    let over_share = (slots - 13) / 2 + 1;
    let (_, share) = app
        .post(
            &app.cluster_path("/pools"),
            json!({"name": "p-share", "mode": "session", "size": over_share, "db": db}),
        )
        .await;
    assert!(share["message"].as_str().unwrap().contains("one team's pools"), "{share}");
    let (status, body) =
        app.put(&app.cluster_path("/pools/kept"), json!({"mode": "statement", "size": 1})).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) =
        app.put(&app.cluster_path("/pools/missing"), json!({"mode": "session", "size": 1, "db": db})).await;
    assert_eq!(status, 404);
    let (_, listed) = app.get(&app.cluster_path("/pools")).await;
    let names: Vec<&str> =
        listed["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kept"], "{listed}");
    assert_eq!(listed["pools"][0]["mode"], "session");

    for (rules, says) in [
        (json!([{"type": "droplet", "value": "123"}]), "not supported"),
        (json!([{"type": "ip_addr", "value": "not-an-address"}]), "not an IP address"),
        (
            json!((0..101)
                .map(|i| json!({"type": "ip_addr", "value": format!("10.0.0.{}", i % 250)}))
                .collect::<Vec<_>>()),
            "at most 100",
        ),
    ] {
        let (status, answer) = app.put(&app.cluster_path("/firewall"), json!({"rules": rules})).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{answer}");
    }
    let (_, listed) = app.get(&app.cluster_path("/firewall")).await;
    assert_eq!(listed["rules"], json!([]), "{listed}");
    // The test's admin role is a superuser: the server's pg_hba.conf is read.
    assert_eq!(listed["pgplane"]["server_hba"]["readable"], true, "{listed}");
    pooler.stop().await;
}

/// One pooler per server: a second `pgplane pooler` for the same server (which would claim the
/// same ports) is refused once it has waited out the first one's lease, saying why; when the
/// first stops it gives the server up, and the next pooler serves the pools at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pooler_for_one_server_is_refused_and_the_next_one_takes_over() {
    let app = TestApp::spawn(17).await;
    let first = app.start_pooler().await;
    create_pool(&app, json!({"name": "one-pooler", "mode": "transaction", "size": 1, "db": app.default_db}))
        .await;
    ready_pool(&app, "one-pooler").await;

    let second = app.start_pooler().await;
    let refused =
        tokio::time::timeout(Duration::from_secs(60), second.ended()).await.expect("the second pooler ends");
    let message = format!("{:#}", refused.expect_err("the second pooler is refused"));
    assert!(message.contains("another `pgplane pooler` serves"), "{message}");
    // The first still serves.
    let password = app.primary_password().await;
    through_pool(first.port, "127.0.0.1", "one-pooler", &app.primary_user, &password).await.unwrap();

    // The cluster keeps its port (pool_listeners): the next pooler serves it there.
    let port = first.port;
    first.stop().await;
    let next = app.start_pooler().await;
    let served = app
        .eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && through_pool(port, "127.0.0.1", "one-pooler", &app.primary_user, &password).await.is_ok()
        })
        .await;
    assert!(served, "the next pooler serves the pool at once");
    next.stop().await;
}
