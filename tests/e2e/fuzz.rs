//! Fuzzing the whole API from its OpenAPI document with schemathesis (installed in the virtual
//! environment `make test` creates): no 5xx, and no answer that contradicts the document.
//! Registration and connection updates are left out: fuzzed host names would send traffic
//! beyond the loopback interface.

use std::process::Command;

use pgplane_testkit::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_the_api_from_its_document_finds_no_server_errors() {
    let app = TestApp::spawn(15).await;
    let schemathesis = crate::python().with_file_name("schemathesis");
    let mut command = Command::new(schemathesis);
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pydo/schemathesis.toml");
    command
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{}/v2/openapi.json", app.base_url))
        .args(["--url", &app.base_url])
        .args(["--header", &format!("Authorization: Bearer {}", app.token)])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
        .args(["--exclude-operation-id", "databases_create_cluster"])
        .args(["--exclude-operation-id", "pgplane_update_target"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--generation-deterministic", "--request-timeout", "30"])
        .env("PGPLANE_CLUSTER_ID", &app.cluster_id)
        .env("NO_COLOR", "1");
    let output =
        tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run schemathesis");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "{report}");
    eprintln!("{}", report.lines().rev().take(12).collect::<Vec<_>>().join("\n"));
    // The primary user survived whatever was thrown at the API.
    assert!(app.role_exists(&app.primary_user).await);
}
