//! Databases: created owned by the primary user (many at once too), listed, shown, dropped
//! even with clients connected; the default database stays; other people's databases are left
//! alone.

use pgplane_testkit::TestApp;
use serde_json::json;

use crate::on_each_version;

async fn databases_are_created_owned_by_the_primary_user(major: u32) {
    let app = TestApp::spawn(major).await;
    let name = app.unique("alpha");
    let (status, body) = app.post(&app.cluster_path("/dbs"), json!({ "name": name })).await;
    assert_eq!(status, 201);
    assert_eq!(body, json!({"db": {"name": name}}), "exactly DigitalOcean's shape");
    let owner = app
        .target_strings("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[&name])
        .await;
    assert_eq!(owner, [app.primary_user.as_str()]);
    let (status, body) = app.get(&app.cluster_path("/dbs")).await;
    assert_eq!(status, 200);
    let dbs = body["dbs"].as_array().unwrap();
    assert!(dbs.contains(&json!({"name": name})));
    assert!(dbs.contains(&json!({"name": app.default_db})));
    let (status, body) = app.get(&app.cluster_path(&format!("/dbs/{name}"))).await;
    assert_eq!((status, body), (200, json!({"db": {"name": name}})));
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert!(cluster["database"]["db_names"].as_array().unwrap().contains(&json!(name)));
    let primary = app.target.login(&app.primary_user, &app.primary_password().await, &name).await;
    assert!(primary.is_ok());

    let (status, _) = app.post(&app.cluster_path("/dbs"), json!({ "name": name })).await;
    assert_eq!(status, 422, "duplicate");
    for bad in ["", "postgres", "template0", "template1", "pg_catalog_copy"] {
        let (status, body) = app.post(&app.cluster_path("/dbs"), json!({ "name": bad })).await;
        assert_eq!(status, 422, "{bad:?}: {body}");
    }
    let (status, _) = app.post(&app.cluster_path("/dbs"), json!({})).await;
    assert_eq!(status, 422);
}
on_each_version!(databases_are_created_owned_by_the_primary_user);

async fn a_database_with_clients_connected_is_dropped(major: u32) {
    let app = TestApp::spawn(major).await;
    let name = app.unique("busy");
    app.create_db(&name).await;
    let user = app.unique("busy_user");
    let password = app.create_user(&user).await;
    let session = app.target.login(&user, &password, &name).await.unwrap();
    let owner_session =
        app.target.login(&app.primary_user, &app.primary_password().await, &name).await.unwrap();
    owner_session.batch_execute("BEGIN; CREATE TABLE t (id int); SELECT * FROM t").await.unwrap();
    let (status, body) = app.delete(&app.cluster_path(&format!("/dbs/{name}"))).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.database_exists(&name).await);
    assert!(session.simple_query("SELECT 1").await.is_err());
    let (status, body) = app.get(&app.cluster_path(&format!("/dbs/{name}"))).await;
    assert_eq!((status, body["id"].as_str()), (404, Some("not_found")));
}
on_each_version!(a_database_with_clients_connected_is_dropped);

async fn databases_deleted_together_are_all_dropped(major: u32) {
    // Deleted at once, they are dropped by the same passes, spread over several sessions; one
    // has a client connected. Every drop is recorded and every database gone.
    let app = TestApp::spawn(major).await;
    let names: Vec<String> = (0..6).map(|i| app.unique(&format!("many{i}"))).collect();
    for name in &names {
        app.create_db(name).await;
    }
    let user = app.unique("many_user");
    let password = app.create_user(&user).await;
    let session = app.target.login(&user, &password, &names[3]).await.unwrap();
    let paths: Vec<String> = names.iter().map(|name| app.cluster_path(&format!("/dbs/{name}"))).collect();
    for (status, body) in futures::future::join_all(paths.iter().map(|path| app.delete(path))).await {
        assert_eq!(status, 204, "{body}");
    }
    for name in &names {
        assert!(!app.database_exists(name).await, "{name} is still on the server");
        let (status, _) = app.get(&app.cluster_path(&format!("/dbs/{name}"))).await;
        assert_eq!(status, 404, "{name} is still listed");
    }
    assert!(session.simple_query("SELECT 1").await.is_err(), "the connected client was ended");
}
on_each_version!(databases_deleted_together_are_all_dropped);

async fn databases_created_together_are_all_created(major: u32) {
    // Asked for at once, they are created by the same passes, spread over several sessions:
    // every one is on the server, owned by the primary user, who logs in to it.
    let app = TestApp::spawn(major).await;
    let names: Vec<String> = (0..6).map(|i| app.unique(&format!("made{i}"))).collect();
    let path = app.cluster_path("/dbs");
    let asked = names.iter().map(|name| app.post(&path, json!({ "name": name })));
    for (status, body) in futures::future::join_all(asked).await {
        assert_eq!(status, 201, "{body}");
    }
    let password = app.primary_password().await;
    for name in &names {
        let owner = app
            .target_strings(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[name],
            )
            .await;
        assert_eq!(owner, [app.primary_user.as_str()], "{name}");
        assert!(app.target.login(&app.primary_user, &password, name).await.is_ok(), "{name}");
    }
}
on_each_version!(databases_created_together_are_all_created);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_database_cannot_be_deleted() {
    let app = TestApp::spawn(15).await;
    let (status, body) = app.delete(&app.cluster_path(&format!("/dbs/{}", app.default_db))).await;
    assert_eq!(status, 422);
    assert_eq!(body["id"], "unprocessable_entity");
    assert!(body["message"].as_str().unwrap().contains("default database"));
    assert!(app.database_exists(&app.default_db).await);
    let (status, _) = app.get(&app.cluster_path(&format!("/dbs/{}", app.default_db))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_pgplane_does_not_manage_is_never_touched() {
    let app = TestApp::spawn(17).await;
    let name = app.unique("theirs");
    let admin = app.target_admin("postgres").await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let (status, body) = app.post(&app.cluster_path("/dbs"), json!({ "name": name })).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], "conflict");
    let owner = app
        .target_strings("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[&name])
        .await;
    assert_eq!(owner, ["postgres"], "owner unchanged");
    let (status, _) = app.delete(&app.cluster_path(&format!("/dbs/{name}"))).await;
    assert_eq!(status, 404);
    assert!(app.database_exists(&name).await);
}
