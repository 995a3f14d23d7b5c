//! Authentication: every /v2 request needs a valid bearer token; a token sees only its team's
//! clusters; health endpoints are open.

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_in_digitalocean_format() {
    let app = TestApp::spawn(15).await;
    let last = if app.token.ends_with('x') { "y" } else { "x" };
    let wrong = format!("{}{last}", &app.token[..app.token.len() - 1]);
    let routes = [
        (Method::GET, "/v2/databases".to_string()),
        (Method::POST, "/v2/databases".to_string()),
        (Method::GET, app.cluster_path("/users")),
        (Method::DELETE, app.cluster_path(&format!("/users/{}", app.primary_user))),
        (Method::POST, app.cluster_path("/dbs")),
    ];
    for token in ["", "garbage", "pgp_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", wrong.as_str()]
    {
        for (method, path) in &routes {
            let (status, body) = app.call_as(token, method.clone(), path, Some(json!({}))).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(body["id"], "unauthorized");
            assert_eq!(body["message"], "Unable to authenticate you.");
        }
    }
    let response = app.http.get(format!("{}/v2/databases", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    for path in ["/healthz", "/readyz"] {
        let response = app.http.get(format!("{}{path}", app.base_url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // Nothing was changed by the refused requests.
    assert!(app.role_exists(&app.primary_user).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_teams_token_sees_none_of_the_clusters() {
    let app = TestApp::spawn(15).await;
    let other = app.issue_token(&format!("other-{}", app.suffix), &["*"]).await;
    let other = other.as_str();
    let (status, body) = app.call_as(other, Method::GET, "/v2/databases", None).await;
    assert_eq!((status, body), (200, json!({"databases": []})));
    for (method, path) in [
        (Method::GET, app.cluster_path("")),
        (Method::GET, app.cluster_path("/users")),
        (Method::DELETE, app.cluster_path("")),
        (Method::POST, app.cluster_path(&format!("/users/{}/reset_auth", app.primary_user))),
    ] {
        let (status, body) = app.call_as(other, method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = app.get(&app.cluster_path("")).await;
    assert_eq!(status, 200, "the owner still sees it");
}
