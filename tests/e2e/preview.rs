//! Seeing before doing: the dependency preview of a user (objects in several databases and
//! schemas, created by different roles), deleting it with an heir or refusing to, the plan of
//! the next pass (drift it would repair, access levels included, verifiers redacted) and a
//! registration dry run on a server that already has roles, each checked against the target's
//! catalogs.

use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::{json, Value};

use crate::on_each_version;

/// The group of `kind` in a report's `owned` or `privileges` list.
fn group<'a>(groups: &'a Value, kind: &str) -> Option<&'a Value> {
    groups.as_array()?.iter().find(|g| g["kind"] == kind)
}

/// The names in a group, or none.
fn names(groups: &Value, kind: &str) -> Vec<String> {
    group(groups, kind)
        .and_then(|g| g["first"].as_array())
        .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The report's entry for `database`.
fn database<'a>(report: &'a Value, database: &str) -> &'a Value {
    report["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["database"] == database)
        .unwrap_or_else(|| panic!("{database} missing from {report}"))
}

async fn the_preview_shows_what_a_user_owns_and_the_heir_inherits_it(major: u32) {
    let app = TestApp::spawn(major).await;
    let owner = app.unique("owner");
    let heir = app.unique("heir");
    let owner_password = app.create_user(&owner).await;
    let heir_password = app.create_user(&heir).await;
    let second = app.unique("second");
    app.create_db(&second).await;
    let schema = app.unique("s_owned");
    // In the default database: a schema the admin made for the owner, and objects the owner made
    // in public, with default privileges it set for the heir.
    app.target_admin(&app.default_db)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{owner}\"; GRANT CREATE ON SCHEMA public TO \"{owner}\""
        ))
        .await
        .unwrap();
    let session = app.target.login(&owner, &owner_password, &app.default_db).await.unwrap();
    session
        .batch_execute(&format!(
            "CREATE TABLE public.t1 (id int); CREATE VIEW public.v1 AS SELECT id FROM public.t1;
             CREATE SEQUENCE public.seq1; CREATE FUNCTION public.f1() RETURNS int LANGUAGE sql AS 'SELECT 1';
             CREATE TYPE public.mood AS ENUM ('ok'); CREATE TABLE \"{schema}\".t_in_schema (id int);
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO \"{heir}\""
        ))
        .await
        .unwrap();
    drop(session);
    // In the second database: a table the owner made in a schema of the heir's, and a table of
    // the heir's it may read.
    let other_schema = app.unique("s_heir");
    app.target_admin(&second)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA \"{other_schema}\" AUTHORIZATION \"{heir}\"; GRANT USAGE, CREATE ON SCHEMA \"{other_schema}\" TO \"{owner}\";
             GRANT \"{heir}\" TO \"{owner}\""
        ))
        .await
        .unwrap();
    let heir_session = app.target.login(&heir, &heir_password, &second).await.unwrap();
    heir_session
        .batch_execute(&format!(
            "CREATE TABLE \"{other_schema}\".heirs_own (id int); GRANT SELECT ON \"{other_schema}\".heirs_own TO \"{owner}\""
        ))
        .await
        .unwrap();
    drop(heir_session);
    let session = app.target.login(&owner, &owner_password, &second).await.unwrap();
    session.batch_execute(&format!("CREATE TABLE \"{other_schema}\".t2 (id int)")).await.unwrap();
    drop(session);

    let (status, body) = app.get(&app.cluster_path(&format!("/users/{owner}/dependencies"))).await;
    assert_eq!(status, 200, "{body}");
    let report = &body["dependencies"];
    assert_eq!(report["exists"], true);
    assert_eq!(report["owns_objects"], true);
    let first = database(report, &app.default_db);
    assert_eq!(names(&first["owned"], "schema"), std::slice::from_ref(&schema));
    assert_eq!(names(&first["owned"], "table"), ["public.t1".to_string(), format!("{schema}.t_in_schema")]);
    assert_eq!(group(&first["owned"], "table").unwrap()["count"], 2);
    assert_eq!(names(&first["owned"], "view"), ["public.v1"]);
    assert_eq!(names(&first["owned"], "sequence"), ["public.seq1"]);
    assert_eq!(names(&first["owned"], "function"), ["public.f1()"]);
    assert_eq!(names(&first["owned"], "type"), ["public.mood"]);
    assert_eq!(names(&first["privileges"], "schema"), ["public"], "{first}");
    let defaults = first["default_privileges"].as_array().unwrap();
    assert_eq!(defaults.len(), 1, "{first}");
    assert_eq!(defaults[0]["schema"], "public");
    assert_eq!(defaults[0]["object_type"], "tables");
    assert!(defaults[0]["acl"][0].as_str().unwrap().contains(&heir), "{first}");
    let other = database(report, &second);
    assert_eq!(names(&other["owned"], "table"), [format!("{other_schema}.t2")]);
    let held = names(&other["privileges"], "table");
    assert_eq!(held, [format!("{other_schema}.heirs_own")]);
    assert_eq!(names(&other["privileges"], "schema"), std::slice::from_ref(&other_schema));
    assert_eq!(report["member_of"], json!([{ "role": heir, "admin_option": false }]));
    // A database it has nothing in is not reported.
    assert!(!report["databases"].as_array().unwrap().iter().any(|d| d["database"] == "postgres"));

    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{owner}?reassign_to={heir}"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.role_exists(&owner).await);
    let owner_of = |db: String, sql: String| {
        let app = &app;
        async move { app.target_admin(&db).await.query_one(&sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    for (db, table) in [
        (app.default_db.clone(), "public.t1".to_string()),
        (app.default_db.clone(), format!("\"{schema}\".t_in_schema")),
        (second.clone(), format!("\"{other_schema}\".t2")),
        (second.clone(), format!("\"{other_schema}\".heirs_own")),
    ] {
        let sql = format!("SELECT relowner::regrole::text FROM pg_class WHERE oid = '{table}'::regclass");
        assert_eq!(owner_of(db.clone(), sql).await.trim_matches('"'), heir, "{table} in {db}");
    }
    let sql = format!("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = '{schema}'");
    assert_eq!(owner_of(app.default_db.clone(), sql).await.trim_matches('"'), heir);
    let sql = "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'f1'".to_string();
    assert_eq!(owner_of(app.default_db.clone(), sql).await.trim_matches('"'), heir);
    // The heir can use what it inherited.
    let heir_session = app.target.login(&heir, &heir_password, &app.default_db).await.unwrap();
    heir_session.batch_execute("INSERT INTO public.t1 VALUES (1)").await.unwrap();
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{heir}"))).await;
    assert_eq!(status, 200);
}
on_each_version!(the_preview_shows_what_a_user_owns_and_the_heir_inherits_it);

async fn refusing_to_delete_a_user_that_owns_objects_changes_nothing(major: u32) {
    let app = TestApp::spawn(major).await;
    let owner = app.unique("keeper");
    let password = app.create_user(&owner).await;
    let plain = app.unique("plain");
    app.create_user(&plain).await;
    app.create_owned_table(&owner, &password, &app.default_db, "kept").await;
    let session = app.target.login(&owner, &password, &app.default_db).await.unwrap();

    let path = app.cluster_path(&format!("/users/{owner}?if_owns=refuse"));
    let (status, body) = app.delete(&path).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], "conflict");
    assert!(body["request_id"].is_string());
    let report = &body["dependencies"];
    assert_eq!(names(&database(report, &app.default_db)["owned"], "table"), ["public.kept"]);
    // Nothing changed: the role still logs in, its session lives, it still owns its table, and
    // the API still shows it ready.
    let row = app
        .target_admin(&app.default_db)
        .await
        .query_one(
            "SELECT r.rolcanlogin, (SELECT tableowner::text FROM pg_tables WHERE tablename = 'kept')
               FROM pg_roles r WHERE rolname = $1",
            &[&owner],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), owner);
    session.batch_execute("SELECT 1").await.expect("its session was not ended");
    assert!(app.target.login(&owner, &password, &app.default_db).await.is_ok());
    let (_, body) = app.get(&app.cluster_path(&format!("/users/{owner}"))).await;
    assert_eq!(body["user"]["status"], "ready", "{body}");

    // Heirs that cannot inherit are refused, and change nothing either.
    for (query, why) in [
        ("reassign_to=nobody_here".to_string(), "not a user"),
        (format!("reassign_to={owner}"), "another user"),
        (format!("reassign_to={plain}&if_owns=refuse"), "cannot be combined"),
        ("if_owns=maybe".to_string(), "must be"),
    ] {
        let (status, body) = app.delete(&app.cluster_path(&format!("/users/{owner}?{query}"))).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{query}: {body}");
    }
    assert!(app.role_exists(&owner).await);

    // A user that owns nothing is deleted in refusal mode.
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{plain}?if_owns=refuse"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.role_exists(&plain).await);
}
on_each_version!(refusing_to_delete_a_user_that_owns_objects_changes_nothing);

async fn the_plan_shows_the_drift_the_next_pass_would_repair(major: u32) {
    // No resync during the test: the plan is read before any pass would look.
    let options = AppOptions {
        target_major: major,
        resync_interval: Duration::from_secs(3600),
        ..AppOptions::default()
    };
    let app = TestApp::spawn_with(options).await;
    let name = app.unique("drifter");
    let password = app.create_user(&name).await;
    let gone = app.unique("gone");
    app.create_db(&gone).await;
    let (status, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"]["steps"], json!([]), "a converged cluster plans nothing");
    assert_eq!(body["plan"]["in_sync"], 4);

    let admin = app.target_admin("postgres").await;
    admin.batch_execute(&format!("ALTER ROLE \"{name}\" CREATEDB PASSWORD 'changed-by-hand'")).await.unwrap();
    // DROP DATABASE cannot share a message with another statement.
    admin.batch_execute(&format!("DROP DATABASE \"{gone}\"")).await.unwrap();
    let (status, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{body}");
    let steps = body["plan"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{body}");
    let role = &steps[0];
    assert_eq!((role["kind"].as_str(), role["name"].as_str()), (Some("user"), Some(name.as_str())));
    assert_eq!(role["step"], "alter_role");
    assert_eq!(role["changes_target"], true);
    assert_eq!(role["drift"], "CREATEDB was granted, the password was changed");
    let sql = role["statements"][0]["sql"].as_str().unwrap();
    assert_eq!(sql, format!("ALTER ROLE \"{name}\" WITH NOCREATEDB INHERIT PASSWORD '<redacted>'"));
    let db = &steps[1];
    assert_eq!((db["kind"].as_str(), db["step"].as_str()), (Some("database"), Some("create_database")));
    assert_eq!(db["drift"], "the database was missing on the target");
    assert_eq!(
        db["statements"][0]["sql"],
        format!("CREATE DATABASE \"{gone}\" OWNER \"{}\" TEMPLATE template0", app.primary_user)
    );
    let text = body.to_string();
    assert!(!text.contains("SCRAM-SHA-256$") && !text.contains(&password), "no verifier or password: {text}");

    // Planning changed nothing on the target.
    let createdb =
        app.target_strings("SELECT rolcreatedb::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
    assert_eq!(createdb, ["true"]);
    assert!(!app.database_exists(&gone).await);
    assert!(app.target.login(&name, "changed-by-hand", &app.default_db).await.is_ok());
}
on_each_version!(the_plan_shows_the_drift_the_next_pass_would_repair);

async fn the_plan_shows_access_level_work_and_the_drift_it_repairs(major: u32) {
    // No resync during the test: the plan is read before any pass would look.
    let options = AppOptions {
        target_major: major,
        resync_interval: Duration::from_secs(3600),
        ..AppOptions::default()
    };
    let app = TestApp::spawn_with(options).await;
    let shop = app.unique("shop");
    app.create_db(&shop).await;
    let password = app.primary_password().await;
    let owner =
        app.target.login(&app.primary_user, &password, &shop).await.expect("the primary user logs in");
    owner.batch_execute("CREATE SCHEMA sales; CREATE TABLE sales.orders (n int)").await.unwrap();
    let user = app.unique("reader");
    let user_password = app.create_user(&user).await;
    let access = json!({ "access": [{ "database": shop, "level": "read_only" }] });
    let (status, body) = app.put(&app.cluster_path(&format!("/users/{user}/access")), access).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")), "{body}");
    let (status, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"]["steps"], json!([]), "carried-out levels plan nothing");

    // Behind pgplane's back: the schema's USAGE and the membership go.
    let cluster = uuid::Uuid::parse_str(&app.cluster_id).unwrap();
    let level = pgplane_core::access::AccessLevel::ReadOnly;
    let ro = app.store.access_group_role(cluster, &shop, level).await.unwrap().expect("a recorded group");
    let granted_by =
        if major >= 16 { format!(" GRANTED BY \"{}\"", app.primary_user) } else { String::new() };
    app.target_admin(&shop)
        .await
        .batch_execute(&format!(
            "REVOKE USAGE ON SCHEMA sales FROM \"{ro}\"; REVOKE \"{ro}\" FROM \"{user}\"{granted_by}"
        ))
        .await
        .unwrap();
    let (status, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{body}");
    let steps = body["plan"]["steps"].as_array().unwrap();
    let phases: Vec<&str> = steps.iter().map(|s| s["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["access_privileges", "access_members"], "{body}");
    let privileges = &steps[0];
    assert_eq!(privileges["kind"], "access_group");
    assert_eq!(privileges["name"], format!("{shop}/read_only"));
    assert_eq!(privileges["step"], "grant_privileges");
    assert!(
        privileges["drift"].as_str().unwrap().contains("lacked privileges in schema(s) \"sales\""),
        "{body}"
    );
    assert_eq!(
        privileges["statements"][0],
        json!({ "database": shop, "sql": format!("GRANT USAGE ON SCHEMA \"sales\" TO \"{ro}\"") })
    );
    let membership = &steps[1];
    assert_eq!(
        (membership["kind"].as_str(), membership["name"].as_str()),
        (Some("user"), Some(user.as_str()))
    );
    assert_eq!(membership["step"], "grant_membership");
    assert!(
        membership["drift"].as_str().unwrap().contains("membership in the read_only access group"),
        "{body}"
    );
    let sql = membership["statements"][0]["sql"].as_str().unwrap();
    assert!(sql.starts_with(&format!("GRANT \"{ro}\" TO \"{user}\"")), "{sql}");
    let text = body.to_string();
    assert!(
        !text.contains("SCRAM-SHA-256$") && !text.contains(&user_password),
        "no verifier or password: {text}"
    );

    // Planning changed nothing on the target; the next pass repairs it.
    let reader = app.target.login(&user, &user_password, &shop).await.unwrap();
    assert!(reader.batch_execute("SELECT * FROM sales.orders").await.is_err());
    drop(reader);
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let (_, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(body["plan"]["steps"], json!([]), "{body}");
    let reader = app.target.login(&user, &user_password, &shop).await.unwrap();
    reader.batch_execute("SELECT * FROM sales.orders").await.unwrap();
}
on_each_version!(the_plan_shows_access_level_work_and_the_drift_it_repairs);

/// Runs the test app's reconciler until `work` is done.
async fn reconciling<T>(app: &TestApp, work: impl std::future::Future<Output = T>) -> T {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(app.reconciler.clone().run(async {
        let _ = stopped.await;
    }));
    let out = work.await;
    let _ = stop.send(());
    reconciler.await.expect("reconciler stops");
    out
}

async fn a_pending_deletion_plans_the_hand_over_to_its_stored_heir(major: u32) {
    // The reconciler runs only when the test says: in between, the deletion stays planned (its
    // DELETE answers once the apply timeout has passed).
    let options =
        AppOptions { target_major: major, reconciler: false, register: false, ..AppOptions::default() };
    let mut app = TestApp::spawn_with(options).await;
    app.register_then_stop_reconciling().await;
    let leaver = app.unique("leaver");
    let taker = app.unique("taker");
    let second = app.unique("second");
    let (password, _) = reconciling(&app, async {
        app.create_db(&second).await;
        (app.create_user(&leaver).await, app.create_user(&taker).await)
    })
    .await;
    for db in [&app.default_db, &second] {
        app.create_owned_table(&leaver, &password, db, "left_behind").await;
    }
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{leaver}?reassign_to={taker}"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(app.role_exists(&leaver).await, "no reconciler ran yet");
    // The heir of a pending deletion is not deleted meanwhile (the plan below shows it kept).
    let (status, body) = app.delete(&app.cluster_path(&format!("/users/{taker}"))).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&format!("inherits what \"{leaver}\" owns")),
        "{body}"
    );

    let (status, body) = app.get(&app.cluster_path("/plan")).await;
    assert_eq!(status, 200, "{body}");
    let steps = body["plan"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{body}");
    assert_eq!(steps[0]["step"], "drop_role");
    let statements: Vec<(Option<&str>, &str)> = steps[0]["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["database"].as_str(), s["sql"].as_str().unwrap()))
        .collect();
    let hand_over = format!("REASSIGN OWNED BY \"{leaver}\" TO \"{taker}\"; DROP OWNED BY \"{leaver}\"");
    let mut in_databases: Vec<&str> =
        statements.iter().filter(|(_, sql)| sql.ends_with(&hand_over)).filter_map(|(db, _)| *db).collect();
    in_databases.sort_unstable();
    let mut expected = [app.default_db.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(in_databases, expected, "{body}");
    assert_eq!(statements.first().unwrap().1, format!("ALTER ROLE \"{leaver}\" NOLOGIN"));
    assert_eq!(statements.last().unwrap().1, format!("DROP ROLE IF EXISTS \"{leaver}\""));

    // A reconciler started afterwards (as after a restart) hands the objects to the stored heir.
    reconciling(&app, async {
        assert!(app.eventually(Duration::from_secs(30), || async { !app.role_exists(&leaver).await }).await);
    })
    .await;
    for db in [&app.default_db, &second] {
        let owner: String = app
            .target_admin(db)
            .await
            .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'left_behind'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, taker, "in {db}");
    }
}
on_each_version!(a_pending_deletion_plans_the_hand_over_to_its_stored_heir);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_dry_run_says_what_it_would_create_adopt_and_refuse() {
    let app = TestApp::spawn(17).await;
    let existing = app.unique("existing_role");
    let fresh_db = app.unique("fresh_db");
    let admin = app.target_admin("postgres").await;
    admin.batch_execute(&format!("CREATE ROLE \"{existing}\" NOLOGIN CREATEDB")).await.unwrap();
    let before = app
        .target_strings(
            "SELECT concat_ws(',', rolcanlogin, rolcreatedb, rolpassword) FROM pg_authid WHERE rolname = $1",
            &[&existing],
        )
        .await;

    let mut body = app.registration(&format!("dry-{}", app.suffix));
    body["pgplane"]["primary_user"] = json!(existing);
    body["pgplane"]["default_database"] = json!(fresh_db);
    let (status, answer) = app.post("/v2/databases?dry_run=true", body).await;
    assert_eq!(status, 200, "{answer}");
    let preview = &answer["registration"];
    assert_eq!(preview["would_register"], true, "{answer}");
    assert_eq!(preview["refusals"], json!([]));
    assert_eq!(preview["admin_is_superuser"], true);
    assert!(preview["server_version"].as_str().unwrap().starts_with("17"));
    let actions = preview["actions"].as_array().unwrap();
    assert_eq!(actions[0]["action"], "adopt");
    assert!(actions[0]["detail"].as_str().unwrap().contains("CREATEDB"), "{answer}");
    assert_eq!(actions[1]["action"], "create");
    // The server's other roles stay as they are; those of another cluster (this test's) are
    // not named.
    assert!(preview["untouched"]["role_count"].as_u64().unwrap() >= 1, "{answer}");
    assert!(preview["untouched"]["roles"].as_array().unwrap().contains(&json!("postgres")), "{answer}");
    assert!(!answer.to_string().contains(&format!("\"{}\"", app.primary_user)), "{answer}");

    // Nothing was written: no cluster, the role as it was, no database.
    let (_, clusters) = app.get("/v2/databases").await;
    assert_eq!(clusters["databases"].as_array().unwrap().len(), 1);
    let after = app
        .target_strings(
            "SELECT concat_ws(',', rolcanlogin, rolcreatedb, rolpassword) FROM pg_authid WHERE rolname = $1",
            &[&existing],
        )
        .await;
    assert_eq!(after, before);
    assert!(!app.database_exists(&fresh_db).await);

    // Another cluster's names on that server, and a taken cluster name, are refused.
    let (status, answer) =
        app.post("/v2/databases?dry_run=true", app.registration(&format!("c-{}", app.suffix))).await;
    assert_eq!(status, 200, "{answer}");
    let preview = &answer["registration"];
    assert_eq!(preview["would_register"], false);
    assert_eq!(preview["actions"][0]["action"], "refuse");
    assert_eq!(preview["actions"][1]["action"], "refuse");
    let refusals = preview["refusals"].to_string();
    assert!(refusals.contains("already exists") && refusals.contains("another cluster"), "{refusals}");
    let (_, clusters) = app.get("/v2/databases").await;
    assert_eq!(clusters["databases"].as_array().unwrap().len(), 1);

    // Dry runs are audited apart from registrations.
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_events where action like 'cluster.register%' order by event_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(actions, ["cluster.register", "cluster.register_dry_run", "cluster.register_dry_run"]);
}
