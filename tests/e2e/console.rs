//! The web console: its pages and headers as pgplane serves them, `GET /v2/account` (how the
//! console learns the token's scopes), and the browser suite (tests/console: Selenium driving
//! headless Chromium against a live pgplane, every effect checked on the target with psycopg,
//! pools and trusted sources through a real `pgplane pooler`, every menu and dialog looked at
//! as a person sees it at common window sizes).

use std::path::PathBuf;
use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_needs_no_token_for_its_files() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let page = app.http.get(format!("{}/", app.base_url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header =
        |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"));

    let script = app.http.get(format!("{}/console/app.js", app.base_url)).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.headers().contains_key("content-security-policy"));
    let missing = app.http.get(format!("{}/console/nothing.js", app.base_url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // API answers (which may carry passwords) are not cached either.
    let users = app.http.get(format!("{}/v2/databases", app.base_url)).bearer_auth(&app.token).send().await;
    assert_eq!(users.unwrap().headers()["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_can_be_switched_off_leaving_the_api() {
    let app = TestApp::spawn_with(AppOptions { register: false, console: false, ..Default::default() }).await;
    for path in ["/", "/console/app.js"] {
        let response = app.http.get(format!("{}{path}", app.base_url)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let (status, _) = app.get("/v2/databases").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_tells_a_token_its_scopes_and_team() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let reader = app.issue_token(&format!("readers-{}", app.suffix), &["database:read"]).await;
    let (status, body) = app.call_as(&reader, Method::GET, "/v2/account", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pgplane"]["scopes"], serde_json::json!(["database:read"]));
    assert_eq!(body["account"]["status"], "active");
    let team = app.store.team_id_by_name(&format!("readers-{}", app.suffix)).await.unwrap().unwrap();
    assert_eq!(body["account"]["team"]["uuid"], team.to_string());
    assert!(!body.to_string().contains(&reader), "the answer must not echo the token");

    let (status, body) = app.call(Method::GET, "/v2/account", None).await;
    assert_eq!((status, &body["pgplane"]["scopes"]), (200, &serde_json::json!(["*"])));
    let (status, _) = app.call_as("dop_v1_not-a-token", Method::GET, "/v2/account", None).await;
    assert_eq!(status, 401);
    let writer_only = app.issue_token("default", &["database:create"]).await;
    let (status, _) = app.call_as(&writer_only, Method::GET, "/v2/account", None).await;
    assert_eq!(status, 403, "reading the account needs database:read like any read");
}

/// Chromium and its driver, as Debian installs them (`make test` installs them when missing).
fn chromium() -> (PathBuf, PathBuf) {
    let find = |names: &[&str]| {
        names.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
            panic!("{names:?} missing: `make test` installs chromium and chromium-driver (apt-get)")
        })
    };
    (find(&["/usr/bin/chromium"]), find(&["/usr/bin/chromedriver"]))
}

/// Runs one file of the browser suite against `app`; `extra` adds environment variables.
async fn run_browser_suite(app: &TestApp, file: &str, extra: &[(&str, String)]) {
    let (browser, driver) = chromium();
    let reader = app.issue_token("default", &["database:read"]).await;
    let no_credentials = app
        .issue_token("default", &["database:read", "database:create", "database:update", "database:delete"])
        .await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let screenshots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot directory");
    let mut env = vec![
        ("PGPLANE_READ_ONLY_TOKEN", reader),
        ("PGPLANE_NO_CREDENTIALS_TOKEN", no_credentials),
        ("PGPLANE_CLUSTER_ID", app.cluster_id.clone()),
        ("PGPLANE_PRIMARY_USER", app.primary_user.clone()),
        ("PGPLANE_DEFAULT_DB", app.default_db.clone()),
        ("PGPLANE_CHROMIUM", browser.display().to_string()),
        ("PGPLANE_CHROMEDRIVER", driver.display().to_string()),
        ("PGPLANE_SCREENSHOTS", screenshots.display().to_string()),
        ("SE_OFFLINE", "true".to_string()),
    ];
    env.extend(extra.iter().cloned());
    crate::run_pytest(app, &format!("console/{file}"), &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let app = TestApp::spawn(15).await;
    run_browser_suite(&app, "test_console.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_edits_access_levels() {
    let app = TestApp::spawn(15).await;
    run_browser_suite(&app, "test_access.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_edits_user_settings() {
    let app = TestApp::spawn(15).await;
    run_browser_suite(&app, "test_settings.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_renews_and_expires_users() {
    let app = TestApp::spawn(15).await;
    run_browser_suite(&app, "test_expiry.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_previews_deletes_and_shows_the_plan() {
    // No resync while the browser looks: drift made by hand stays until the plan shows it.
    let app =
        TestApp::spawn_with(AppOptions { resync_interval: Duration::from_secs(3600), ..Default::default() })
            .await;
    run_browser_suite(&app, "test_preview.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_user_turns_ready_on_screen_by_itself() {
    // A reconciler runs only for the registration; the user is added while none runs (its
    // create answers pending after the 1 s apply timeout) and one starts once the browser saw
    // it pending.
    let mut app = TestApp::spawn_with(AppOptions {
        register: false,
        reconciler: false,
        apply_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    app.register_then_stop_reconciling().await;

    let marker = std::env::temp_dir().join(format!("pgplane-console-pending-{}", app.suffix));
    let _ = std::fs::remove_file(&marker);
    // The reconciler starts when the browser suite says so, and stops once it is done.
    let env = [("PGPLANE_PENDING_MARKER", marker.display().to_string())];
    let browser = run_browser_suite(&app, "test_pending.py", &env);
    tokio::pin!(browser);
    let mut reconciler = None;
    loop {
        tokio::select! {
            () = &mut browser => break,
            () = tokio::time::sleep(Duration::from_millis(100)), if reconciler.is_none() => {
                if marker.exists() {
                    reconciler = Some(app.start_reconciler(pgplane_reconciler::ReconcilerConfig::default()));
                }
            }
        }
    }
    if let Some(reconciler) = reconciler {
        reconciler.stop().await.expect("the reconciler ran until stopped");
    }
    let _ = std::fs::remove_file(&marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_manages_connection_pools_and_trusted_sources() {
    let app = TestApp::spawn(15).await;
    let pooler = app.start_pooler().await;
    run_browser_suite(&app, "test_pools.py", &[("PGPLANE_POOLER_PORT", pooler.port.to_string())]).await;
    pooler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_menu_and_dialog_is_seen_whole_at_common_window_sizes() {
    let app = TestApp::spawn(15).await;
    let pooler = app.start_pooler().await;
    run_browser_suite(&app, "test_layout.py", &[]).await;
    pooler.stop().await;
}
