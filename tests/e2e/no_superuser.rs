//! An admin role with only CREATEROLE and CREATEDB, as hosted servers give: registration, a
//! user with a connection limit and parameters (and their drift repaired), a password reset, a
//! database owned by the primary user, an access level, the deletion of a user that owns a
//! table, an expiry, a rotation with a grace and a lease all work as with a superuser (and a
//! deletion refused on one role, 16 and later, leaves that role whole and drops the others), on
//! PostgreSQL 15 and 17, and no verifier reaches the server's log once the server's superuser
//! has set that role's logging as README asks. An admin unmade and made a superuser while
//! pgplane runs is observed as it is.

use std::time::Duration;

use pgplane_testkit::{AppOptions, OwnServer, TestApp};
use serde_json::json;

use crate::on_each_version;
use crate::settings::settings_on_target;

/// pgplane (resyncing every second) with a target server of its own, of `options.target_major`;
/// None where the tests cannot start servers of their own.
async fn on_own_server(options: AppOptions) -> Option<(OwnServer, TestApp)> {
    if !pgplane_testkit::own_containers() {
        return None;
    }
    let server = OwnServer::start(options.target_major).await;
    let app = TestApp::spawn_with(AppOptions {
        target_server: Some(server.server.clone()),
        resync_interval: Duration::from_secs(1),
        ..options
    })
    .await;
    Some((server, app))
}

async fn an_admin_without_superuser_manages_users_settings_databases_and_access(major: u32) {
    // A server of its own: what this admin's sessions leave in the server's log is checked.
    let Some((_server, app)) = on_own_server(AppOptions {
        target_major: major,
        // The cluster registered below is alone on its server: only what its admin role may not
        // do refuses REPLICATION.
        register: false,
        allow_replication_for_sole_tenants: true,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let (admin_user, admin_password) = (app.unique("plainadmin"), "plain-admin-secret-1");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!(
            // As README asks of an operator whose admin role is not a superuser: the server's
            // superuser keeps that role's statements out of the server log, once.
            "CREATE ROLE {admin_user} LOGIN CREATEROLE CREATEDB PASSWORD '{admin_password}'; \
             ALTER ROLE {admin_user} SET log_statement = 'none'; \
             ALTER ROLE {admin_user} SET log_min_error_statement = 'panic'; \
             ALTER ROLE {admin_user} SET log_min_duration_statement = -1; \
             ALTER ROLE {admin_user} SET log_min_duration_sample = -1; \
             ALTER ROLE {admin_user} SET log_transaction_sample_rate = 0"
        ))
        .await
        .unwrap();
    // A server that stores passwords set by hand as MD5: registration says so.
    let superuser = app.target_admin("postgres").await;
    superuser.batch_execute("ALTER SYSTEM SET password_encryption = 'md5'").await.unwrap();
    superuser.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let mut body = app.registration(&app.unique("plain").replace('_', "-"));
    let primary = app.unique("plainowner");
    let db = app.unique("plaindb");
    body["pgplane"]["user"] = json!(admin_user);
    body["pgplane"]["password"] = json!(admin_password);
    body["pgplane"]["primary_user"] = json!(primary);
    body["pgplane"]["default_database"] = json!(db);
    let (status, answer) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{answer}");
    let cluster = answer["database"]["id"].as_str().unwrap().to_string();
    let notices = answer["database"]["pgplane"]["notices"].to_string();
    assert!(
        notices.contains("password_encryption is \\\"md5\\\"") && notices.contains("is not a superuser"),
        "{notices}"
    );
    assert!(notices.contains("cannot give REPLICATION"), "{notices}");
    let owner_password = answer["database"]["connection"]["password"].as_str().unwrap().to_string();
    let online = app
        .eventually(Duration::from_secs(20), || async {
            app.get(&format!("/v2/databases/{cluster}")).await.1["database"]["status"] == "online"
        })
        .await;
    let (_, shown) = app.get(&format!("/v2/databases/{cluster}")).await;
    assert!(online, "registered with an admin that has CREATEROLE and CREATEDB only: {shown}");

    // What this admin cannot do is refused before anything is stored.
    let (status, refused) = app
        .post(
            &format!("/v2/databases/{cluster}/users"),
            json!({"name": app.unique("replicator"), "settings": {"pg_allow_replication": true}}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("may not give REPLICATION"), "{refused}");
    assert!(!app.role_exists(&app.unique("replicator")).await);

    let name = app.unique("plainuser");
    let settings = json!({
        "connection_limit": 4,
        "parameters": [{"name": "lock_timeout", "value": "2s"}, {"name": "work_mem", "value": "4MB", "database": db}],
    });
    let path = format!("/v2/databases/{cluster}/users");
    let (status, answer) = app.post(&path, json!({"name": name, "settings": settings})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["user"]["status"], "ready", "{answer}");
    let limit = "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = $1";
    assert_eq!(app.target_strings(limit, &[&name]).await, ["4"]);
    assert_eq!(settings_on_target(&app, &name).await, ["*:lock_timeout=2s", &format!("{db}:work_mem=4MB")]);

    app.target_admin("postgres")
        .await
        .batch_execute(&format!("ALTER ROLE {name} CONNECTION LIMIT 9; ALTER ROLE {name} RESET lock_timeout"))
        .await
        .unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            app.target_strings(limit, &[&name]).await == ["4"]
                && settings_on_target(&app, &name).await.contains(&"*:lock_timeout=2s".to_string())
        })
        .await;
    let (_, shown) = app.get(&format!("/v2/databases/{cluster}")).await;
    assert!(repaired, "{:?} {}", settings_on_target(&app, &name).await, shown["database"]["pgplane"]);

    // A password reset, and a database of the primary user's, need no superuser either.
    let old = answer["user"]["password"].as_str().unwrap().to_string();
    let (status, reset) = app.post(&format!("{path}/{name}/reset_auth"), json!({})).await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["user"]["status"], "ready", "{reset}");
    let new = reset["user"]["password"].as_str().unwrap();
    assert!(app.target.login(&name, new, &db).await.is_ok(), "the new password logs in");
    assert!(app.target.login(&name, &old, &db).await.is_err(), "the old one does not");
    let more = app.unique("plainmore");
    let (status, created) = app.post(&format!("/v2/databases/{cluster}/dbs"), json!({"name": more})).await;
    assert_eq!(status, 201, "{created}");
    let owner = "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1";
    assert_eq!(app.target_strings(owner, &[&more]).await, [primary.as_str()]);

    // And an access level: its reader reads what the primary user made there, and writes nothing.
    let owner = app.target.login(&primary, &owner_password, &more).await.expect("the primary user logs in");
    owner.batch_execute("CREATE TABLE books (n int); INSERT INTO books VALUES (1)").await.unwrap();
    let reader = app.unique("plainreader");
    let (status, made) =
        app.post(&path, json!({"name": reader, "access": [{"database": more, "level": "read_only"}]})).await;
    assert_eq!(status, 201, "{made}");
    let (_, access) = app.get(&format!("{path}/{reader}/access")).await;
    assert_eq!(access["status"], "ready", "{access}");
    let session = app
        .target
        .login(&reader, made["user"]["password"].as_str().unwrap(), &more)
        .await
        .expect("the reader logs in");
    let rows = session.query("SELECT n FROM books", &[]).await.expect("read_only reads");
    assert_eq!(rows.len(), 1);
    let err = session.batch_execute("INSERT INTO books VALUES (2)").await.unwrap_err();
    assert_eq!(crate::sqlstate(&err), "42501", "{err}");

    // A user that owns a table is deleted: the table goes to the primary user, nothing is lost.
    let maker = app.unique("plainmaker");
    let (status, made) = app.post(&path, json!({"name": maker})).await;
    assert_eq!(status, 201, "{made}");
    app.create_owned_table(&maker, made["user"]["password"].as_str().unwrap(), &more, "made").await;
    let (status, gone) = app.delete(&format!("{path}/{maker}")).await;
    assert_eq!(status, 204, "{gone}");
    let row = app
        .target_admin(&more)
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'made'", &[])
        .await
        .expect("the table is still there");
    assert_eq!(row.get::<_, String>(0), primary);
    assert!(!app.role_exists(&maker).await);

    // The credential lifecycle: an expiry ends the user's session, a rotation's second login
    // acts as the user and the old one stops after its grace, a lease's table goes to its heir (a user, not the primary one).
    let session = app.target.login(&name, new, &db).await.expect("logs in before its expiry");
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, expiring) =
        app.put(&format!("{path}/{name}"), json!({"settings": {"valid_until": soon}})).await;
    assert_eq!(status, 201, "{expiring}");
    let ended = app
        .eventually(Duration::from_secs(30), || async { session.simple_query("SELECT 1").await.is_err() })
        .await;
    assert!(ended, "the expired user's session outlived its expiry");
    let rotated = app.unique("plainrotated");
    let (status, made) =
        app.post(&path, json!({"name": rotated, "access": [{"database": more, "level": "read_only"}]})).await;
    assert_eq!(status, 201, "{made}");
    let before = made["user"]["password"].as_str().unwrap().to_string();
    let (status, reset) = app.post(&format!("{path}/{rotated}/reset_auth"), json!({"grace": "3s"})).await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["user"]["status"], "ready", "{reset}");
    let alternate = format!("{rotated}_alt");
    let second = app
        .target
        .login(&alternate, reset["user"]["password"].as_str().unwrap(), &more)
        .await
        .expect("the second login logs in");
    let row = second
        .query_one("SELECT current_user::text, count(*) FROM books", &[])
        .await
        .expect("reads as the user");
    assert_eq!(row.get::<_, String>(0), rotated);
    app.target.login(&rotated, &before, &more).await.expect("the old password within its grace");
    let stopped = app
        .eventually(Duration::from_secs(30), || async {
            app.target.login(&rotated, &before, &more).await.is_err()
        })
        .await;
    assert!(stopped, "the old login outlived its grace");
    let lease = app.unique("plainlease");
    let (status, made) = app.post(&path, json!({"name": lease, "ttl": "1h", "reassign_to": rotated})).await;
    assert_eq!(status, 201, "{made}");
    app.create_owned_table(&lease, made["user"]["password"].as_str().unwrap(), &more, "leased").await;
    let (status, renewed) = app.post(&format!("{path}/{lease}/renew"), json!({"ttl": "2s"})).await;
    assert_eq!(status, 200, "{renewed}");
    let gone = app.eventually(Duration::from_secs(30), || async { !app.role_exists(&lease).await }).await;
    assert!(gone, "the lease outlived its end: {}", app.get(&format!("{path}/{lease}")).await.1);
    let row = app
        .target_admin(&more)
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'leased'", &[])
        .await
        .expect("the lease's table is still there");
    assert_eq!(row.get::<_, String>(0), rotated, "the lease's heir owns it");

    // A deletion whose NOLOGIN is refused on one of its roles (the admin lost its ADMIN OPTION
    // on it, which PostgreSQL 16 and later ask for): that role keeps its login and its session,
    // the other one is dropped and its session ended; once the option is back, it goes too.
    if major >= 16 {
        let (kept, dropped) = (app.unique("plainkept"), app.unique("plaindropped"));
        let mut sessions = Vec::new();
        for user in [&kept, &dropped] {
            let (status, made) = app.post(&path, json!({"name": user})).await;
            assert_eq!(status, 201, "{made}");
            let password = made["user"]["password"].as_str().unwrap();
            sessions.push(app.target.login(user, password, &db).await.expect("logs in"));
        }
        let superuser = app.target_admin("postgres").await;
        superuser.batch_execute(&format!("REVOKE {kept} FROM {admin_user} CASCADE")).await.unwrap();
        let (kept_path, dropped_path) = (format!("{path}/{kept}"), format!("{path}/{dropped}"));
        let (refused, deleted) = tokio::join!(app.delete(&kept_path), app.delete(&dropped_path));
        assert_eq!(deleted.0, 204, "{}", deleted.1);
        assert!(!app.role_exists(&dropped).await);
        assert!(sessions[1].simple_query("SELECT 1").await.is_err(), "the dropped user's session goes on");
        let can_login = "SELECT rolcanlogin::text FROM pg_roles WHERE rolname = $1";
        assert_eq!(app.target_strings(can_login, &[&kept]).await, ["true"], "{}", refused.1);
        assert!(sessions[0].simple_query("SELECT 1").await.is_ok(), "a role still there lost its session");
        let (_, shown) = app.get(&format!("{path}/{kept}")).await;
        let error = shown["user"]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("permission denied"), "{shown}");
        superuser.batch_execute(&format!("GRANT {kept} TO {admin_user} WITH ADMIN OPTION")).await.unwrap();
        let gone = app.eventually(Duration::from_secs(30), || async { !app.role_exists(&kept).await }).await;
        assert!(gone, "the deletion did not finish: {}", app.get(&format!("{path}/{kept}")).await.1);
        assert!(sessions[0].simple_query("SELECT 1").await.is_err(), "its session outlived the role");
    }

    // Set up so, the server's log (log_statement=all and every other way) never saw a verifier.
    let log = app.target.log();
    let leaked: Vec<&str> = log.lines().filter(|l| l.contains("SCRAM-SHA-256$")).collect();
    assert!(leaked.is_empty(), "verifiers in the server log: {leaked:?}");
}
on_each_version!(an_admin_without_superuser_manages_users_settings_databases_and_access);

/// An admin role unmade and made a superuser while pgplane runs: its next passes observe it as
/// it is then (a pooled session remembers what it last saw of the server, and reads the catalog
/// again when the server's facts say otherwise: a role that is no longer a superuser cannot
/// read `pg_authid`), so users are still created, and a password changed by hand is still
/// repaired once it is a superuser again.
async fn an_admin_unmade_and_made_a_superuser_is_observed_as_it_is_then(major: u32) {
    // A server of its own: a session opened while its admin was a superuser keeps the server's
    // statement logging once it is not (it can no longer turn it off), and the shared servers'
    // logs are checked for verifiers.
    let Some((_server, app)) = on_own_server(AppOptions { target_major: major, ..Default::default() }).await
    else {
        return;
    };
    let superuser = app.target_admin("postgres").await;
    let admin = pgplane_target_server::sql::ident(&app.admin_user);
    // Passes with a superuser admin: the cluster's pooled sessions remember it.
    app.create_user(&app.unique("before")).await;

    superuser.batch_execute(&format!("ALTER ROLE {admin} NOSUPERUSER CREATEROLE CREATEDB")).await.unwrap();
    let demoted = app.unique("demoted");
    let password = app.create_user(&demoted).await;
    assert!(app.target.login(&demoted, &password, "postgres").await.is_ok(), "created by a demoted admin");

    superuser.batch_execute(&format!("ALTER ROLE {admin} SUPERUSER")).await.unwrap();
    let promoted = app.unique("promoted");
    let password = app.create_user(&promoted).await;
    assert!(app.target.login(&promoted, &password, "postgres").await.is_ok(), "created by a promoted admin");
    let role = pgplane_target_server::sql::ident(&promoted);
    superuser.batch_execute(&format!("ALTER ROLE {role} PASSWORD 'changed-by-hand-1'")).await.unwrap();
    let repaired = app
        .eventually(Duration::from_secs(20), || async {
            app.target.login(&promoted, &password, "postgres").await.is_ok()
        })
        .await;
    assert!(
        repaired,
        "a password changed by hand was not put back: {}",
        app.get(&app.cluster_path("")).await.1
    );
}
on_each_version!(an_admin_unmade_and_made_a_superuser_is_observed_as_it_is_then);
