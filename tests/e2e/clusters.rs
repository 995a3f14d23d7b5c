//! Registering, listing, showing and unregistering clusters.

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;

use crate::on_each_version;

async fn registration_creates_the_primary_user_and_default_database(major: u32) {
    let app = TestApp::spawn(major).await;
    let (status, body) = app.get(&app.cluster_path("")).await;
    assert_eq!(status, 200);
    let c = &body["database"];
    assert_eq!(c["status"], "online");
    assert_eq!(c["engine"], "pg");
    let version = c["version"].as_str().unwrap();
    assert!(c["semantic_version"].as_str().unwrap().starts_with(&format!("{version}.")), "{c}");
    if std::env::var_os("PGPLANE_TEST_PG_URL").is_none() {
        assert_eq!(version, major.to_string());
    }
    assert_eq!(c["db_names"], json!([app.default_db]));
    assert_eq!(c["users"][0]["name"], app.primary_user.as_str());
    assert_eq!(c["users"][0]["role"], "primary");
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
    let conn = &c["connection"];
    assert_eq!(conn["user"], app.primary_user.as_str());
    assert_eq!(conn["database"], app.default_db.as_str());
    assert_eq!(conn["port"], app.target.port);
    assert!(conn["uri"].as_str().unwrap().starts_with("postgresql://"));
    assert!(c["pgplane"].get("password").is_none(), "the admin password is never shown");

    // On the target: the primary user has LOGIN and CREATEDB, CREATEROLE from PostgreSQL 16 on
    // (before 16 it would reach every role on the server), nothing more.
    let row = app
        .target_admin("postgres")
        .await
        .query_one(
            "SELECT rolcanlogin, rolcreatedb, rolcreaterole, rolsuper, rolreplication, rolbypassrls
               FROM pg_roles WHERE rolname = $1",
            &[&app.primary_user],
        )
        .await
        .unwrap();
    let attrs: Vec<bool> = (0..6).map(|i| row.get(i)).collect();
    let version: i32 = app
        .target_admin("postgres")
        .await
        .query_one("SHOW server_version_num", &[])
        .await
        .map_or(0, |r| r.get::<_, String>(0).parse().unwrap());
    assert_eq!(attrs, [true, true, version >= 160000, false, false, false]);
    let owner = app
        .target_strings(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&app.default_db],
        )
        .await;
    assert_eq!(owner, [app.primary_user.as_str()]);

    // The connection's password logs in to the default database.
    let password = conn["password"].as_str().unwrap();
    let client = app.target.login(&app.primary_user, password, &app.default_db).await.unwrap();
    let who: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, app.primary_user);
}
on_each_version!(registration_creates_the_primary_user_and_default_database);

/// A cluster carries every field the real service returns, with honest values, so that a
/// strict typed client that requires them accepts it; a registration takes DigitalOcean's
/// `rules` (the first trusted sources), and a bad rule refuses it, registering nothing.
async fn clusters_carry_every_field_the_real_service_returns(major: u32) {
    let app = TestApp::spawn(major).await;
    let (_, body) = app.get(&app.cluster_path("")).await;
    let c = &body["database"];
    for field in [
        "id",
        "name",
        "engine",
        "version",
        "semantic_version",
        "num_nodes",
        "size",
        "region",
        "status",
        "created_at",
        "private_network_uuid",
        "tags",
        "db_names",
        "connection",
        "private_connection",
        "users",
        "maintenance_window",
        "project_id",
        "rules",
        "version_end_of_life",
        "version_end_of_availability",
        "storage_size_mib",
        "metrics_endpoints",
    ] {
        assert!(c.get(field).is_some(), "no {field}: {c}");
    }
    assert_eq!(c["private_connection"], c["connection"], "one network: the private connection is the same");
    let network: uuid::Uuid = c["private_network_uuid"].as_str().unwrap().parse().expect("a UUID");
    assert_eq!(network.get_version_num(), 8, "{network}");
    let (_, account) = app.get("/v2/account").await;
    assert_eq!(c["project_id"], account["account"]["team"]["uuid"], "the project is the team");
    assert_eq!(c["metrics_endpoints"], json!([]));
    assert_eq!(c["rules"], json!([]));
    if std::env::var_os("PGPLANE_TEST_PG_URL").is_none() {
        let end = if major == 15 { "2027-11-11T00:00:00Z" } else { "2029-11-08T00:00:00Z" };
        assert_eq!(c["version_end_of_life"], end);
    }

    let mut second = app.registration(&format!("second-{}", app.suffix));
    second["pgplane"]["primary_user"] = json!(app.unique("second_admin"));
    second["pgplane"]["default_database"] = json!(app.unique("second_db"));
    second["rules"] = json!([
        {"type": "ip_addr", "value": "127.0.0.2", "description": "the app"},
        {"type": "ip_addr", "value": "10.1.2.3/16"},
    ]);
    let mut refused = second.clone();
    refused["name"] = json!(format!("third-{}", app.suffix));
    refused["rules"] = json!([{"type": "ip_addr", "value": "127.0.0.2"}, {"type": "tag", "value": "web"}]);
    let (status, answer) = app.post("/v2/databases", refused).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("\"tag\" is not supported"), "{answer}");
    let (_, clusters) = app.get("/v2/databases").await;
    assert_eq!(
        clusters["databases"].as_array().unwrap().len(),
        1,
        "a refused registration registered: {clusters}"
    );

    let (status, answer) = app.post("/v2/databases", second).await;
    assert_eq!(status, 201, "{answer}");
    let second = &answer["database"];
    assert_eq!(
        second["private_network_uuid"], c["private_network_uuid"],
        "clusters of one server share its network"
    );
    let values: Vec<&str> =
        second["rules"].as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values.len(), 2, "{second}");
    assert!(values.contains(&"127.0.0.2/32") && values.contains(&"10.1.0.0/16"), "{values:?}");
    let (_, firewall) = app.get(&format!("/v2/databases/{}/firewall", second["id"].as_str().unwrap())).await;
    assert_eq!(firewall["rules"], second["rules"], "{firewall}");
    assert!(firewall["rules"].as_array().unwrap().iter().all(|r| r["cluster_uuid"] == second["id"]));
}
on_each_version!(clusters_carry_every_field_the_real_service_returns);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_refused_and_nothing_stored_when_the_target_cannot_be_used() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let weak = app.unique("weak");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE {weak} LOGIN PASSWORD 'weak-pw'"))
        .await
        .unwrap();
    let good = app.registration("good-name");
    let cases = [
        ("wrong password", json!({"pgplane": {"password": "wrong"}}), "registration failed"),
        ("unprivileged admin", json!({"pgplane": {"user": weak, "password": "weak-pw"}}), "needs SUPERUSER"),
        ("closed port", json!({"pgplane": {"port": pgplane_testkit::free_port()}}), "cannot connect"),
        ("engine", json!({"engine": "mysql"}), "not supported"),
        ("name", json!({"name": "Bad_Name"}), "invalid"),
        ("sslmode", json!({"pgplane": {"sslmode": "verify-ca"}}), "not supported"),
        ("version", json!({"version": "9"}), "but the target runs PostgreSQL"),
        (
            "same primary as admin",
            json!({"pgplane": {"primary_user": app.admin_user}}),
            "must not be the admin role",
        ),
        ("reserved primary", json!({"pgplane": {"primary_user": "postgres"}}), "reserved"),
    ];
    for (case, patch, expected) in cases {
        let mut body = good.clone();
        merge(&mut body, &patch);
        let (status, answer) = app.post("/v2/databases", body).await;
        assert_eq!(status, 422, "{case}: {answer}");
        assert_eq!(answer["id"], "unprocessable_entity", "{case}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expected), "{case}: {message}");
        assert!(!message.contains(&app.admin_password), "{case}: the message leaks the password");
    }
    let (_, list) = app.get("/v2/databases").await;
    assert_eq!(list["databases"], json!([]));
    assert!(!app.role_exists(&app.primary_user).await);
    let mut no_block = good.clone();
    no_block.as_object_mut().unwrap().remove("pgplane");
    let (status, _) = app.post("/v2/databases", no_block).await;
    assert_eq!(status, 422);
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_are_unique_and_lists_filter_by_tag() {
    let app = TestApp::spawn(15).await;
    let (status, body) = app.post("/v2/databases", app.registration(&format!("c-{}", app.suffix))).await;
    assert!(status == 422 || status == 409, "{status} {body}");
    let mut second = app.registration(&format!("d-{}", app.suffix));
    second["pgplane"]["primary_user"] = json!(app.unique("other_admin"));
    second["pgplane"]["default_database"] = json!(app.unique("otherdb"));
    second["tags"] = json!(["blue"]);
    let (status, body) = app.post("/v2/databases", second).await;
    assert_eq!(status, 201, "{body}");
    let (_, all) = app.get("/v2/databases").await;
    assert_eq!(all["databases"].as_array().unwrap().len(), 2);
    let (_, blue) = app.get("/v2/databases?tag_name=blue&page=1&per_page=200").await;
    let names: Vec<&str> =
        blue["databases"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("d-{}", app.suffix)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_a_cluster_drops_nothing_on_the_target() {
    let app = TestApp::spawn(15).await;
    let user = app.unique("keep_user");
    let db = app.unique("keep_db");
    app.create_user(&user).await;
    app.create_db(&db).await;
    let (status, body) = app.delete(&app.cluster_path("")).await;
    assert_eq!((status, body), (204, serde_json::Value::Null));
    let (status, body) = app.get(&app.cluster_path("")).await;
    assert_eq!(status, 404);
    assert_eq!(body["id"], "not_found");
    assert!(app.role_exists(&user).await);
    assert!(app.role_exists(&app.primary_user).await);
    assert!(app.database_exists(&db).await);
    assert!(app.database_exists(&app.default_db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_clusters_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn(15).await;
    for path in [
        "/v2/databases/00000000-0000-0000-0000-000000000000".to_string(),
        "/v2/databases/not-a-uuid/users".to_string(),
        "/v2/nothing-here".to_string(),
        app.cluster_path("/users/nobody"),
        app.cluster_path("/dbs/nothing"),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["id"], "not_found", "{path}");
        assert!(body["request_id"].is_string(), "{path}");
    }
    let (status, body) = app.call(reqwest::Method::PATCH, &app.cluster_path("/users"), Some(json!({}))).await;
    assert_eq!(status, 405);
    assert_eq!(body["id"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_shaped_like_godos_are_accepted() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    // godo sends every field of its structs: empty strings, nulls and zero timestamps.
    let mut body = app.registration(&format!("godo-{}", app.suffix));
    merge(
        &mut body,
        &json!({
            "version": "", "private_network_uuid": "", "project_id": "", "rules": null, "tags": null,
            "storage_size_mib": 0, "backup_restore": null,
            "rules_extra": [{"uuid": "", "cluster_uuid": "", "type": "ip_addr", "value": "127.0.0.1",
                             "created_at": "0001-01-01T00:00:00Z"}],
        }),
    );
    let (status, cluster) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{cluster}");
    let id = cluster["database"]["id"].as_str().unwrap();
    assert_eq!(cluster["database"]["tags"], json!([]));
    for path in ["/users", "/dbs"] {
        let (status, _) = app.get(&format!("/v2/databases/{id}{path}?page=1&per_page=200")).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = app.get("/v2/databases?page=1&per_page=200").await;
    assert_eq!(status, 200);
    let name = app.unique("godo_user");
    let (status, body) = app
        .post(
            &format!("/v2/databases/{id}/users"),
            json!({"name": name, "mysql_settings": null, "settings": null}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(app.role_exists(&name).await);
}
