//! The OpenAPI document: served without auth, valid OpenAPI 3.1 (checked with
//! openapi-spec-validator), and every operation it documents exists in the router.

use std::process::Command;

use pgplane_testkit::{AppOptions, TestApp};
use reqwest::Method;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_valid_and_complete() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let response = app.http.get(format!("{}/v2/openapi.json", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let file = std::env::temp_dir().join(format!("pgplane-openapi-{}.json", app.suffix));
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let output = Command::new(crate::python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Every documented operation is routed: without a token it is refused (401) or open (200),
    // never the unknown-route 404 or a 405.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{database_cluster_uuid}", "00000000-0000-0000-0000-000000000000")
            .replace("{username}", "someone")
            .replace("{database_name}", "something")
            .replace("{pool_name}", "some-pool");
        for (method, _) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let open = item[method.as_str().to_lowercase()]["security"] == serde_json::json!([{}]);
            let (status, body) = app.call_as("", method.clone(), &concrete, None).await;
            let expected = if open { 200 } else { 401 };
            assert_eq!(status, expected, "{method} {path}: {body}");
            operations += 1;
        }
    }
    assert_eq!(operations, 36);
}
