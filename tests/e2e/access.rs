//! Access levels (`…/users/{name}/access`): what read_only and read_write allow and refuse,
//! tried by logging in as the user, on objects in several databases and schemas made by
//! different roles, before and after the level was given; drift (a privilege or membership
//! revoked by hand) put back; a converged pass issuing nothing; levels removed cleanly.

use std::sync::atomic::Ordering;

use pgplane_core::access::AccessLevel;
use pgplane_testkit::TestApp;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{on_each_version, sqlstate};

/// Runs `sql` and asserts it is refused for lack of privilege (42501).
async fn refused(client: &Client, sql: &str) {
    let err = client.batch_execute(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
}

/// Runs `sql` and asserts it succeeds.
async fn allowed(client: &Client, sql: &str) {
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Sets a user's levels through the API and asserts they were carried out.
async fn put_access(app: &TestApp, user: &str, access: Value) -> Value {
    let (status, body) =
        app.put(&app.cluster_path(&format!("/users/{user}/access")), json!({ "access": access })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    body
}

/// The name pgplane recorded for the group holding `level` on `database`.
async fn group(app: &TestApp, database: &str, level: AccessLevel) -> String {
    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    app.store.access_group_role(cluster, database, level).await.unwrap().expect("a recorded group")
}

/// A session as the primary user (the owner of the cluster's databases).
async fn as_primary(app: &TestApp, database: &str) -> Client {
    let password = app.primary_password().await;
    app.target.login(&app.primary_user, &password, database).await.expect("the primary user logs in")
}

async fn levels_allow_what_they_say_and_nothing_more(major: u32) {
    let app = TestApp::spawn(major).await;
    let (shop, books, other) = (app.unique("shop"), app.unique("books"), app.unique("other"));
    for db in [&shop, &books, &other] {
        app.create_db(db).await;
    }
    // Before any level: objects of the primary user in two schemas, and one of another role
    // (the server's superuser) in a third.
    let owner_shop = as_primary(&app, &shop).await;
    allowed(
        &owner_shop,
        "CREATE SCHEMA sales; CREATE TABLE sales.orders (id serial PRIMARY KEY, note text);
         INSERT INTO sales.orders (note) VALUES ('first'); CREATE TABLE public.items (n int);
         CREATE VIEW sales.order_notes AS SELECT note FROM sales.orders",
    )
    .await;
    let super_shop = app.target_admin(&shop).await;
    allowed(&super_shop, "CREATE SCHEMA audit; CREATE TABLE audit.log (at timestamptz)").await;
    let owner_books = as_primary(&app, &books).await;
    allowed(&owner_books, "CREATE TABLE public.titles (id serial PRIMARY KEY, title text)").await;
    let owner_other = as_primary(&app, &other).await;
    allowed(&owner_other, "CREATE TABLE public.secrets (s text); INSERT INTO public.secrets VALUES ('x')")
        .await;

    let user = app.unique("reader");
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": user, "access": [{ "database": shop, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["access"], json!([{ "database": shop, "level": "read_only" }]));
    let password = body["user"]["password"].as_str().unwrap().to_string();
    let body = put_access(
        &app,
        &user,
        json!([{ "database": shop, "level": "read_only" }, { "database": books, "level": "read_write" }]),
    )
    .await;
    assert_eq!(body["access"].as_array().unwrap().len(), 2, "{body}");

    // Created after the level was given, by the primary user: covered by default privileges.
    allowed(
        &owner_shop,
        "CREATE TABLE sales.later (n int); INSERT INTO sales.later VALUES (1);
         CREATE SCHEMA fresh; CREATE TABLE fresh.t (n int); CREATE SEQUENCE fresh.s",
    )
    .await;
    allowed(&owner_books, "CREATE TABLE public.reviews (id serial PRIMARY KEY, body text)").await;

    // read_only on shop: reads everything, writes and creates nothing.
    let reader = app.target.login(&user, &password, &shop).await.expect("the user logs in to shop");
    for table in ["sales.orders", "sales.order_notes", "public.items", "audit.log", "sales.later", "fresh.t"]
    {
        allowed(&reader, &format!("SELECT * FROM {table}")).await;
    }
    allowed(&reader, "SELECT last_value FROM fresh.s; SELECT last_value FROM sales.orders_id_seq").await;
    refused(&reader, "INSERT INTO sales.orders (note) VALUES ('no')").await;
    refused(&reader, "UPDATE sales.orders SET note = 'no'").await;
    refused(&reader, "DELETE FROM public.items").await;
    refused(&reader, "TRUNCATE sales.later").await;
    refused(&reader, "SELECT nextval('fresh.s')").await;
    refused(&reader, "CREATE TABLE public.mine (n int)").await;
    refused(&reader, "CREATE TABLE sales.mine (n int)").await;
    refused(&reader, "CREATE SCHEMA mine").await;
    refused(&reader, "DROP TABLE sales.orders").await;

    // read_write on books: changes rows (old and new tables), uses sequences, but changes no
    // schema, drops nothing it does not own and creates no role.
    let writer = app.target.login(&user, &password, &books).await.expect("the user logs in to books");
    for table in ["public.titles", "public.reviews"] {
        allowed(&writer, &format!("INSERT INTO {table} DEFAULT VALUES")).await;
        allowed(&writer, &format!("UPDATE {table} SET id = id")).await;
        allowed(&writer, &format!("DELETE FROM {table}")).await;
        allowed(&writer, &format!("TRUNCATE {table}")).await;
    }
    allowed(&writer, "SELECT nextval('public.titles_id_seq'), setval('public.reviews_id_seq', 5)").await;
    refused(&writer, "DROP TABLE public.titles").await;
    refused(&writer, "ALTER TABLE public.titles ADD COLUMN x int").await;
    refused(&writer, "CREATE TABLE public.mine (n int)").await;
    refused(&writer, &format!("CREATE ROLE {}", app.unique("nope"))).await;
    refused(&writer, &format!("CREATE DATABASE {}", app.unique("nope"))).await;

    // No level on the third database: nothing there can be read.
    if let Ok(elsewhere) = app.target.login(&user, &password, &other).await {
        refused(&elsewhere, "SELECT * FROM public.secrets").await;
    }

    // The primary user's access is implicit and cannot be changed.
    let (status, body) = app.get(&app.cluster_path(&format!("/users/{}/access", app.primary_user))).await;
    assert_eq!(status, 200);
    assert!(body["access"].as_array().unwrap().iter().all(|e| e["level"] == "owner"), "{body}");
    let (status, body) = app
        .put(
            &app.cluster_path(&format!("/users/{}/access", app.primary_user)),
            json!({ "access": [{ "database": shop, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}
on_each_version!(levels_allow_what_they_say_and_nothing_more);

async fn revoked_privileges_come_back_as_drift_and_a_converged_pass_grants_nothing(major: u32) {
    let app = TestApp::spawn(major).await;
    let shop = app.unique("shop");
    app.create_db(&shop).await;
    let owner = as_primary(&app, &shop).await;
    allowed(
        &owner,
        "CREATE SCHEMA sales; CREATE TABLE sales.orders (n int); INSERT INTO sales.orders VALUES (1)",
    )
    .await;
    let user = app.unique("app");
    let password = app.create_user(&user).await;
    put_access(&app, &user, json!([{ "database": shop, "level": "read_only" }])).await;
    let ro = group(&app, &shop, AccessLevel::ReadOnly).await;

    // A converged pass (a full one) issues no statement at all, GRANT or REVOKE included.
    let stats = app.reconciler.stats();
    let before = stats.ddl_steps.load(Ordering::Relaxed);
    let log_before = app.target.log().len();
    let cluster_id = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster_id).await.unwrap();
    app.reconciler.reconcile_now(cluster_id).await.unwrap();
    assert_eq!(stats.ddl_steps.load(Ordering::Relaxed), before);
    let log = app.target.log();
    let granted: Vec<&str> = log[log_before..]
        .lines()
        .filter(|l| l.contains(&ro) && (l.contains("GRANT") || l.contains("REVOKE")))
        .collect();
    assert!(granted.is_empty(), "a converged pass issued {granted:?}");

    // Behind pgplane's back: the table privilege, the schema's USAGE and the membership go.
    let admin = app.target_admin(&shop).await;
    let revoke_membership = if major >= 16 {
        format!("REVOKE \"{ro}\" FROM \"{user}\" GRANTED BY \"{}\"", app.primary_user)
    } else {
        format!("REVOKE \"{ro}\" FROM \"{user}\"")
    };
    allowed(
        &admin,
        &format!("REVOKE SELECT ON sales.orders FROM \"{ro}\"; REVOKE USAGE ON SCHEMA sales FROM \"{ro}\"; {revoke_membership}"),
    )
    .await;
    let reader = app.target.login(&user, &password, &shop).await.unwrap();
    refused(&reader, "SELECT * FROM sales.orders").await;
    drop(reader);

    app.reconciler.reconcile_now(cluster_id).await.unwrap();
    let reader = app.target.login(&user, &password, &shop).await.unwrap();
    allowed(&reader, "SELECT * FROM sales.orders").await;
    let (status, body) = app.get(&app.cluster_path("/drift")).await;
    assert_eq!(status, 200);
    let events = body.to_string();
    assert!(events.contains("membership in the read_only access group"), "{body}");
    assert!(events.contains("lacked privileges in schema(s) \\\"sales\\\""), "{body}");
    // Put back once, and quiet again after.
    let after_repair = stats.ddl_steps.load(Ordering::Relaxed);
    app.reconciler.reconcile_now(cluster_id).await.unwrap();
    assert_eq!(stats.ddl_steps.load(Ordering::Relaxed), after_repair);
    if major >= 16 {
        // pgplane's membership is the primary user's grant, with INHERIT and without SET.
        let grantors = app
            .target_strings(
                "SELECT pg_get_userbyid(m.grantor)::text FROM pg_auth_members m
                  WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = $1)
                    AND m.member = (SELECT oid FROM pg_roles WHERE rolname = $2)
                    AND m.inherit_option AND NOT m.set_option",
                &[&ro, &user],
            )
            .await;
        assert_eq!(grantors, std::slice::from_ref(&app.primary_user));
    }
}
on_each_version!(revoked_privileges_come_back_as_drift_and_a_converged_pass_grants_nothing);

async fn removing_levels_databases_and_users_removes_what_was_granted(major: u32) {
    let app = TestApp::spawn(major).await;
    let (shop, books) = (app.unique("shop"), app.unique("books"));
    app.create_db(&shop).await;
    app.create_db(&books).await;
    allowed(&as_primary(&app, &shop).await, "CREATE TABLE t (n int)").await;
    let (alice, bob) = (app.unique("alice"), app.unique("bob"));
    let alice_password = app.create_user(&alice).await;
    app.create_user(&bob).await;
    put_access(
        &app,
        &alice,
        json!([{ "database": shop, "level": "read_write" }, { "database": books, "level": "read_only" }]),
    )
    .await;
    put_access(&app, &bob, json!([{ "database": shop, "level": "read_write" }])).await;
    let (shop_rw, books_ro) =
        (group(&app, &shop, AccessLevel::ReadWrite).await, group(&app, &books, AccessLevel::ReadOnly).await);
    assert!(app.role_exists(&shop_rw).await && app.role_exists(&books_ro).await);

    // Alice loses shop: her membership goes, the group stays for Bob.
    put_access(&app, &alice, json!([{ "database": books, "level": "read_only" }])).await;
    let alice_shop = app.target.login(&alice, &alice_password, &shop).await.unwrap();
    refused(&alice_shop, "SELECT * FROM t").await;
    assert!(app.role_exists(&shop_rw).await);
    // Bob is deleted: the last member of shop's read_write group, which goes with him.
    let (status, _) = app.delete(&app.cluster_path(&format!("/users/{bob}"))).await;
    assert_eq!(status, 204);
    assert!(!app.role_exists(&shop_rw).await, "the unused group is dropped");
    // The books database is deleted: its group goes, and Alice's levels with it.
    let (status, _) = app.delete(&app.cluster_path(&format!("/dbs/{books}"))).await;
    assert_eq!(status, 204);
    let cluster_id = Uuid::parse_str(&app.cluster_id).unwrap();
    app.reconciler.reconcile_now(cluster_id).await.unwrap();
    assert!(!app.role_exists(&books_ro).await, "the deleted database's group is dropped");
    let (_, body) = app.get(&app.cluster_path(&format!("/users/{alice}/access"))).await;
    assert_eq!(body["access"], json!([]), "{body}");
    assert_eq!(body["status"], "ready", "{body}");
}
on_each_version!(removing_levels_databases_and_users_removes_what_was_granted);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_access_requests_get_do_style_errors_and_change_nothing() {
    let app = TestApp::spawn(15).await;
    let shop = app.unique("shop");
    app.create_db(&shop).await;
    let user = app.unique("app");
    app.create_user(&user).await;
    let path = app.cluster_path(&format!("/users/{user}/access"));
    for (body, message) in [
        (json!({}), "invalid request: access field required"),
        (json!({ "access": [{ "database": shop, "level": "admin" }] }), "unknown access level \"admin\""),
        (
            json!({ "access": [{ "database": app.unique("nowhere"), "level": "read_only" }] }),
            "unknown database",
        ),
        (
            json!({ "access": [{ "database": shop, "level": "read_only" }, { "database": shop, "level": "read_write" }] }),
            "more than once",
        ),
    ] {
        let (status, answer) = app.put(&path, body).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["id"], "unprocessable_entity");
        assert!(answer["message"].as_str().unwrap().contains(message), "{answer}");
    }
    let (status, answer) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": app.unique("other"), "access": [{ "database": "nowhere", "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(!app.role_exists(&app.unique("other")).await, "a refused create stores nothing");
    let (status, answer) = app.put(&app.cluster_path("/users/nobody/access"), json!({ "access": [] })).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["id"], "not_found");
    let (_, answer) = app.get(&path).await;
    assert_eq!(answer["access"], json!([]));
    // "none" is no entry.
    let body = put_access(&app, &user, json!([{ "database": shop, "level": "none" }])).await;
    assert_eq!(body["access"], json!([]));
    let cluster = Uuid::parse_str(&app.cluster_id).unwrap();
    let recorded = app.store.access_group_role(cluster, &shop, AccessLevel::ReadOnly).await.unwrap();
    assert_eq!(recorded, None, "no level, no group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_pgplane_does_not_manage_never_gets_a_level() {
    let app = TestApp::spawn(15).await;
    let shop = app.unique("shop");
    app.create_db(&shop).await;
    let theirs = app.unique("theirs");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE \"{theirs}\" LOGIN"))
        .await
        .unwrap();
    let (status, body) = app
        .post(
            &app.cluster_path("/users"),
            json!({ "name": theirs, "access": [{ "database": shop, "level": "read_write" }] }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let memberships = app
        .target_strings(
            "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
              WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            &[&theirs],
        )
        .await;
    assert!(memberships.is_empty(), "{memberships:?}");
}
