//! Attacks on access groups: squatted names, predicted names, planted members and ADMIN holders.

use pgplane_core::access::{AccessLevel, GROUP_PREFIX};
use pgplane_reconciler::ReconcilerConfig;
use pgplane_target_server::sql::ident;
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;
use uuid::Uuid;

use super::Rival;
use crate::{on_each_version, sqlstate};

/// The name pgplane recorded for the group holding `level` on `database` of the test's cluster.
async fn recorded_group(app: &TestApp, database: &str, level: AccessLevel) -> String {
    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.store.access_group_role(cluster, database, level).await.unwrap().expect("a recorded group name")
}

/// A table in the test's default database, made by its primary user, with a secret in it.
async fn secret_table(app: &TestApp) {
    let password = app.primary_password().await;
    let owner = app.target.login(&app.primary_user, &password, &app.default_db).await.unwrap();
    owner
        .batch_execute("CREATE TABLE public.secrets (s text); INSERT INTO public.secrets VALUES ('x')")
        .await
        .unwrap();
}

/// `SELECT {sql}` as the server's superuser on `database`, as one boolean.
async fn check(
    app: &TestApp,
    database: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> bool {
    app.target_admin(database).await.query_one(&format!("SELECT {sql}"), params).await.unwrap().get(0)
}

/// The members of a role, whatever the grantor, and whether each holds ADMIN OPTION.
async fn members(app: &TestApp, role: &str) -> Vec<String> {
    app.target_strings(
        "SELECT u.rolname::text || CASE WHEN m.admin_option THEN ' admin' ELSE '' END
           FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
          WHERE g.rolname = $1 ORDER BY 1",
        &[&role],
    )
    .await
}

async fn a_squatted_group_name_is_a_conflict_and_gets_nothing(major: u32) {
    let options =
        AppOptions { target_major: major, register: false, reconciler: false, ..AppOptions::default() };
    let mut app = TestApp::spawn_with(options).await;
    let reconciler = app.start_reconciler(ReconcilerConfig::default());
    app.register().await;
    let rival = Rival::register(&app, "rival").await;
    let user = app.unique("reader");
    app.create_user(&user).await;
    secret_table(&app).await;
    reconciler.stop().await.expect("the reconciler ran until stopped");

    // The level is asked for while nothing reconciles: its group's name is recorded, no role
    // made yet. The rival takes the name first, with itself as member and ADMIN holder (17:
    // its primary user has CREATEROLE; on 15 it has none, so the server's superuser plays
    // "someone else").
    let path = app.cluster_path(&format!("/users/{user}/access"));
    let (status, body) =
        app.put(&path, json!({ "access": [{ "database": app.default_db, "level": "read_only" }] })).await;
    assert_eq!(status, 200, "{body}");
    let group = recorded_group(&app, &app.default_db, AccessLevel::ReadOnly).await;
    assert!(!app.role_exists(&group).await);
    let (g, r) = (ident(&group), ident(&rival.primary_user));
    if major >= 16 {
        // Its creator holds ADMIN OPTION on it already.
        let squat = format!("CREATE ROLE {g}; GRANT {g} TO {r} WITH INHERIT TRUE, SET TRUE");
        rival.session(&app, &rival.default_db).await.batch_execute(&squat).await.expect("the rival squats");
    } else {
        let squat = format!("CREATE ROLE {g}; GRANT {g} TO {r} WITH ADMIN OPTION");
        app.target_admin("postgres").await.batch_execute(&squat).await.unwrap();
    }

    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let (_, body) = app.get(&path).await;
    let entry = &body["access"][0];
    assert_eq!(entry["status"], "conflict", "{body}");
    assert!(entry["last_error"].as_str().unwrap().contains(&group), "{body}");
    assert_eq!(body["status"], "pending", "{body}");

    // The squatted role got no privilege and no member; the user is in nothing.
    let db = app.default_db.clone();
    assert!(!check(&app, &db, "has_database_privilege($1, $2, 'CONNECT')", &[&group, &db]).await);
    assert!(!check(&app, &db, "has_table_privilege($1, 'public.secrets', 'SELECT')", &[&group]).await);
    let squatters = members(&app, &group).await;
    assert!(!squatters.is_empty(), "the squatter's own grants are left alone");
    assert!(squatters.iter().all(|m| m.starts_with(&rival.primary_user)), "{squatters:?}");
    assert!(!check(&app, &db, "pg_has_role($1, $2, 'MEMBER')", &[&user, &group]).await);
    // The rival gained nothing: it cannot even connect to the database the level covers.
    let err = app.target.login(&rival.primary_user, &rival.primary_password, &db).await.expect_err("refused");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    assert!(
        !check(&app, &db, "has_table_privilege($1, 'public.secrets', 'SELECT')", &[&rival.primary_user])
            .await
    );

    // Once the operator drops the squatted role, pgplane creates its own under the name.
    app.target_admin("postgres").await.batch_execute(&format!("DROP ROLE {}", ident(&group))).await.unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let (_, body) = app.get(&path).await;
    assert_eq!(body["status"], "ready", "{body}");
    assert!(body["access"][0].get("status").is_none(), "{body}");
    assert!(check(&app, &db, "has_table_privilege($1, 'public.secrets', 'SELECT')", &[&user]).await);
}
on_each_version!(a_squatted_group_name_is_a_conflict_and_gets_nothing);

async fn planted_members_admin_holders_and_logins_are_removed_and_nothing_names_the_cluster(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let user = app.unique("reader");
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": user, "access": [{ "database": app.default_db, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let group = recorded_group(&app, &app.default_db, AccessLevel::ReadOnly).await;
    assert!(app.role_exists(&group).await);
    let before = members(&app, &group).await;

    // By hand, as the server's superuser: a foreign member, a foreign ADMIN holder, LOGIN and
    // a password on the group.
    let planted = app.unique("planted");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!(
            "CREATE ROLE {p}; GRANT {g} TO {p}; GRANT {g} TO {r} WITH ADMIN OPTION; \
             ALTER ROLE {g} LOGIN PASSWORD 'planted-password'",
            p = ident(&planted),
            g = ident(&group),
            r = ident(&rival.primary_user)
        ))
        .await
        .unwrap();
    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    assert_eq!(members(&app, &group).await, before, "only what pgplane granted is left");
    let attrs = app
        .target_strings(
            "SELECT rolcanlogin::text || ' ' || (rolpassword IS NULL)::text FROM pg_authid WHERE rolname = $1",
            &[&group],
        )
        .await;
    assert_eq!(attrs, ["false true"], "no LOGIN, no password");
    let drift = app.store.list_drift(cluster, 50).await.unwrap();
    let about_group: Vec<&str> = drift
        .iter()
        .filter(|d| d.name == app.default_db && d.repaired_at.is_some())
        .map(|d| d.description.as_str())
        .collect();
    for what in ["had LOGIN", "not one of the cluster's users", "held ADMIN OPTION"] {
        assert!(about_group.iter().any(|d| d.contains(what)), "{what}: {about_group:?}");
    }
    assert!(about_group.iter().all(|d| !d.contains(&planted) && !d.contains(&rival.primary_user)));

    // Names: random, nothing of the cluster in them, and no comment anywhere names a cluster.
    assert!(group.starts_with(GROUP_PREFIX));
    for id in [&app.cluster_id, &rival.cluster_id] {
        let hex = id.replace('-', "");
        assert!(!group.contains(&hex[..8]) && !group.contains(&id[..8]), "{group}");
        let comments = app
            .target_strings(
                "SELECT coalesce(description, '') FROM pg_shdescription
                  UNION ALL SELECT coalesce(description, '') FROM pg_description",
                &[],
            )
            .await;
        assert!(comments.iter().all(|c| !c.contains(id.as_str()) && !c.contains(&hex)), "{comments:?}");
    }
    let described = app
        .target_strings(
            "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1",
            &[&group],
        )
        .await;
    assert_eq!(described, [""]);
}
on_each_version!(planted_members_admin_holders_and_logins_are_removed_and_nothing_names_the_cluster);

async fn groups_from_before_random_names_are_adopted_once_checked(major: u32) {
    // The reconciler runs only while the user is made: the group is then changed behind its
    // back in two steps (target, metadata) that no pass may fall between.
    let options =
        AppOptions { target_major: major, register: false, reconciler: false, ..AppOptions::default() };
    let mut app = TestApp::spawn_with(options).await;
    let reconciler = app.start_reconciler(ReconcilerConfig::default());
    app.register().await;
    secret_table(&app).await;
    let user = app.unique("reader");
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": user, "access": [{ "database": app.default_db, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let password = body["user"]["password"].as_str().unwrap().to_string();
    reconciler.stop().await.expect("the reconciler ran until stopped");
    // Made as before: a name from the cluster id, a comment naming the cluster, no oid.
    let group = recorded_group(&app, &app.default_db, AccessLevel::ReadOnly).await;
    let legacy = format!("{GROUP_PREFIX}ro_{}", &app.suffix);
    app.target_admin("postgres")
        .await
        .batch_execute(&format!(
            "ALTER ROLE {g} RENAME TO {l}; COMMENT ON ROLE {l} IS 'pgplane access group of cluster {id}'",
            g = ident(&group),
            l = ident(&legacy),
            id = app.cluster_id
        ))
        .await
        .unwrap();
    let meta = app.metadata_session().await;
    let oid_sql = "select role_oid from cluster_access_groups where role = $1";
    meta.execute(
        "update cluster_access_groups set role = $2, role_oid = 0 where role = $1",
        &[&group, &legacy],
    )
    .await
    .unwrap();

    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let oid: Option<i64> = meta.query_one(oid_sql, &[&legacy]).await.unwrap().get(0);
    assert!(oid.is_some_and(|o| o > 0), "adopted: {oid:?}");
    let comment = app
        .target_strings(
            "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1",
            &[&legacy],
        )
        .await;
    assert_eq!(comment, [""], "the comment naming the cluster is gone");
    let reader = app.target.login(&user, &password, &app.default_db).await.unwrap();
    reader.batch_execute("SELECT * FROM public.secrets").await.expect("the level still works");

    // Gone from the server, it is made again under a fresh name.
    app.target_admin(&app.default_db)
        .await
        .batch_execute(&format!("DROP OWNED BY {l}; DROP ROLE {l}", l = ident(&legacy)))
        .await
        .unwrap();
    meta.execute("update cluster_access_groups set role_oid = 0 where role = $1", &[&legacy]).await.unwrap();
    app.reconciler.reconcile_now(cluster).await.unwrap();
    let fresh = recorded_group(&app, &app.default_db, AccessLevel::ReadOnly).await;
    assert_ne!(fresh, legacy);
    assert!(app.role_exists(&fresh).await && !app.role_exists(&legacy).await);
    reader.batch_execute("SELECT * FROM public.secrets").await.expect("the level works again");
}
on_each_version!(groups_from_before_random_names_are_adopted_once_checked);
