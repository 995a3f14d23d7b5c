//! Attacks on the limits that must hold across replicas (registration probes, failed
//! authentications), on the scopes a hand-over needs, and on the completeness of the audit
//! record.

use pgplane_gateway::{FailureLimits, GatewayConfig};
use pgplane_testkit::{unique_suffix, AppOptions, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

use crate::on_each_version;

/// A second gateway on the app's metadata database with `config`; its base URL.
async fn replica(app: &TestApp, config: GatewayConfig) -> String {
    let gateway = app.start_gateway(None, GatewayConfig { rate_limit_per_minute: 0, ..config }).await;
    format!("http://{}", gateway.api_address.expect("the API listens"))
}

/// Sends a request to the gateway at `base`; the status, the JSON body and the request id.
async fn send(
    app: &TestApp,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut request = app.http.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = response.bytes().await.expect("body");
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
    (status, value, id)
}

/// The team's audit event of the request `request_id`.
async fn audit_event(app: &TestApp, request_id: &str) -> Value {
    let (status, body) = app.get("/v2/audit_events?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_id"] == request_id)
        .cloned()
        .unwrap_or_else(|| panic!("no audit event for request {request_id}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_probe_allowance() {
    let app =
        TestApp::spawn_with(AppOptions { register: false, probes_per_minute: 1, ..Default::default() }).await;
    let other = replica(&app, GatewayConfig { probes_per_minute: 1, ..GatewayConfig::default() }).await;
    let dry_run = app.registration(&format!("c-{}", app.suffix));
    let (status, body, _) = send(
        &app,
        &app.base_url,
        &app.token,
        Method::POST,
        "/v2/databases?dry_run=true",
        Some(dry_run.clone()),
    )
    .await;
    assert_eq!(status, 200, "the allowance's one probe: {body}");
    let (status, body, _) =
        send(&app, &other, &app.token, Method::POST, "/v2/databases?dry_run=true", Some(dry_run.clone()))
            .await;
    assert_eq!(status, 429, "the second probe, on another replica: {body}");
    assert_eq!(body["id"], "too_many_requests");
    let (status, body, _) =
        send(&app, &other, &app.token, Method::POST, "/v2/databases", Some(dry_run)).await;
    assert_eq!(status, 429, "{body}");
    let (_, clusters) = app.get("/v2/databases").await;
    assert_eq!(clusters["databases"], json!([]), "nothing was registered");
}

/// A well-formed token with a made-up secret for `token_id`.
fn wrong_secret(token_id: &str) -> String {
    format!("pgp_{token_id}_{}", (0..5).map(|_| unique_suffix()).collect::<String>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_allowance_of_failed_authentications() {
    let limits = FailureLimits { per_address: 1000, per_token: 3 };
    let app =
        TestApp::spawn_with(AppOptions { register: false, auth_failures: limits, ..Default::default() })
            .await;
    let other = replica(&app, GatewayConfig { auth_failures: limits, ..GatewayConfig::default() }).await;
    let victim = app.issue_token(&app.unique("victim"), &["*"]).await;
    let id = pgplane_core::tokens::token_id(&victim).unwrap().to_string();
    let gateways = [app.base_url.clone(), other.clone()];
    let mut seen = Vec::new();
    for i in 0..4 {
        let (status, _, _) =
            send(&app, &gateways[i % 2], &wrong_secret(&id), Method::GET, "/v2/databases", None).await;
        seen.push(status);
    }
    assert_eq!(seen, [401, 401, 401, 429], "three failures across both, then refused");
    for base in &gateways {
        let (status, body, _) = send(&app, base, &victim, Method::GET, "/v2/databases", None).await;
        assert_eq!(status, 429, "even the right secret waits, on every replica: {body}");
    }

    // Per client address, with made-up token ids.
    let limits = FailureLimits { per_address: 3, per_token: 1000 };
    let app =
        TestApp::spawn_with(AppOptions { register: false, auth_failures: limits, ..Default::default() })
            .await;
    let other = replica(&app, GatewayConfig { auth_failures: limits, ..GatewayConfig::default() }).await;
    let gateways = [app.base_url.clone(), other];
    let mut seen = Vec::new();
    for i in 0..4 {
        let made_up = wrong_secret(&format!("{}{}", unique_suffix(), &unique_suffix()[..4]));
        let (status, _, _) = send(&app, &gateways[i % 2], &made_up, Method::GET, "/v2/databases", None).await;
        seen.push(status);
    }
    assert_eq!(seen, [401, 401, 401, 429], "three failures from this address across both, then refused");
}

async fn a_delete_only_token_cannot_choose_an_heir(major: u32) {
    let app = TestApp::spawn(major).await;
    let (user, heir) = (app.unique("leaver"), app.unique("heir"));
    let password = app.create_user(&user).await;
    app.create_user(&heir).await;
    let delete_only = app.issue_token("default", &["database:read", "database:delete"]).await;
    for query in [
        format!("reassign_to={heir}"),
        format!("reassign%5Fto={heir}"),
        format!("if_owns=reassign&reassign_to={heir}"),
    ] {
        let path = app.cluster_path(&format!("/users/{user}?{query}"));
        let (status, body) = app.call_as(&delete_only, Method::DELETE, &path, None).await;
        assert_eq!(status, 403, "{query}: {body}");
    }
    assert!(app.role_exists(&user).await, "the user stays on the server");
    assert!(app.target.login(&user, &password, &app.default_db).await.is_ok(), "and logs in");
    let (status, _) = app.get(&app.cluster_path(&format!("/users/{user}"))).await;
    assert_eq!(status, 200);
    // With both scopes the hand-over goes ahead; a delete-only token may still delete to the
    // primary user.
    let both = app.issue_token("default", &["database:read", "database:delete", "database:update"]).await;
    let path = app.cluster_path(&format!("/users/{user}?reassign_to={heir}"));
    let (status, body) = app.call_as(&both, Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    assert!(!app.role_exists(&user).await);
    let (status, body) =
        app.call_as(&delete_only, Method::DELETE, &app.cluster_path(&format!("/users/{heir}")), None).await;
    assert_eq!(status, 204, "{body}");
}
on_each_version!(a_delete_only_token_cannot_choose_an_heir);

async fn the_audit_record_is_complete(major: u32) {
    let app = TestApp::spawn(major).await;
    // The registration records the cluster it made.
    let (status, body) = app.get("/v2/audit_events?limit=1000").await;
    assert_eq!(status, 200);
    let registered =
        body["audit_events"].as_array().unwrap().iter().find(|e| e["action"] == "cluster.register");
    assert_eq!(registered.unwrap()["cluster_id"], app.cluster_id, "{body}");

    // A dry run is recorded as one however its query is spelled; a spelling the handler does
    // not take is a 422, recorded as a refused registration, and registers nothing.
    let body = app.registration(&format!("d-{}", app.suffix));
    for (query, status, action) in [
        ("dry_run=true", 200, "cluster.register_dry_run"),
        ("x=1&dry_run=true", 200, "cluster.register_dry_run"),
        ("dry%5Frun=true", 200, "cluster.register_dry_run"),
        ("dry_run=%74rue", 200, "cluster.register_dry_run"),
        ("dry_run=1", 422, "cluster.register"),
        ("dry_run=True", 422, "cluster.register"),
        ("dry_run=yes", 422, "cluster.register"),
        ("dry_run=true&dry_run=false", 422, "cluster.register"),
        ("dry_run=false&dry_run=true", 422, "cluster.register"),
    ] {
        let (got, answer, id) = send(
            &app,
            &app.base_url,
            &app.token,
            Method::POST,
            &format!("/v2/databases?{query}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{query}: {answer}");
        let event = audit_event(&app, &id).await;
        assert_eq!(event["action"], action, "{query}: {event}");
        assert_eq!(event["status"], status, "{query}: {event}");
    }
    let (_, clusters) = app.get("/v2/databases").await;
    assert_eq!(clusters["databases"].as_array().unwrap().len(), 1, "nothing else was registered");

    // A deletion records its heir and its ownership mode.
    let (user, heir, other) = (app.unique("leaver"), app.unique("heir"), app.unique("other"));
    for name in [&user, &heir, &other] {
        app.create_user(name).await;
    }
    let path = app.cluster_path(&format!("/users/{user}?reassign_to={heir}"));
    let (status, answer, id) = send(&app, &app.base_url, &app.token, Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{answer}");
    let event = audit_event(&app, &id).await;
    assert_eq!(event["action"], "user.delete");
    assert_eq!(event["object"], user.as_str());
    assert_eq!(event["detail"], json!({ "reassign_to": heir, "if_owns": "reassign" }), "{event}");
    let path = app.cluster_path(&format!("/users/{other}?if_owns=refuse"));
    let (status, answer, id) = send(&app, &app.base_url, &app.token, Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{answer}");
    let event = audit_event(&app, &id).await;
    assert_eq!(event["detail"], json!({ "reassign_to": app.primary_user, "if_owns": "refuse" }), "{event}");
}
on_each_version!(the_audit_record_is_complete);
