//! End-to-end tests: HTTP requests to a spawned pgplane, effects asserted on real PostgreSQL
//! 15 and 17 targets (catalog rows, logins that work and logins that are refused).

mod abuse;
mod access;
mod auth;
mod boundary;
mod clusters;
mod console;
mod dbs;
mod expiry;
mod faults;
mod fuzz;
mod names;
mod no_superuser;
mod openapi;
mod ops;
mod pools;
mod preview;
mod pydo;
mod reliability;
mod rotation;
mod security;
mod settings;
mod tenancy;
mod tls;
mod users;

/// Runs an async test body, which takes the target's major version, once per supported
/// PostgreSQL version: `on_each_version!(test_name);` makes `test_name::pg15` and
/// `test_name::pg17`.
#[macro_export]
macro_rules! on_each_version {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg15() {
                super::$name(15).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pg17() {
                super::$name(17).await
            }
        }
    };
}

/// The SQLSTATE of a failed statement or login.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The descriptions of the drift events recorded on `name` (a user or database) of the test's
/// cluster, as `GET …/drift` lists them.
pub async fn drift_described(app: &pgplane_testkit::TestApp, name: &str) -> Vec<String> {
    let (status, body) = app.get(&app.cluster_path("/drift")).await;
    assert_eq!(status, 200, "{body}");
    body["drift_events"]
        .as_array()
        .expect("drift_events")
        .iter()
        .filter(|e| e["name"] == name)
        .map(|e| e["description"].as_str().expect("description").to_string())
        .collect()
}

/// The drift recorded for `name` once one of its descriptions is `wanted` (or as it is after
/// 20 s): a pass records the drift it repaired once the repair is on the target, so a test
/// that saw the repair there may look before the record is written.
pub async fn drift_described_once(
    app: &pgplane_testkit::TestApp,
    name: &str,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let wanted = &wanted;
    app.eventually(std::time::Duration::from_secs(20), || async move {
        drift_described(app, name).await.iter().any(|d| wanted(d))
    })
    .await;
    drift_described(app, name).await
}

/// Percent-encodes a name for a path segment, as PyDo does (including '/').
pub fn encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub use pgplane_testkit::python;

/// Runs a pytest suite (a folder or file under the repository's `tests/`) with the virtual
/// environment's Python and `env` on top of the target's and the app's basics; fails the test
/// with pytest's report unless every test passed and none was skipped.
pub async fn run_pytest(app: &pgplane_testkit::TestApp, suite: &str, env: &[(&str, String)]) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = std::process::Command::new(python());
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", &format!("tests/{suite}")])
        .current_dir(&root)
        .env("PGPLANE_API_URL", &app.base_url)
        .env("PGPLANE_TOKEN", &app.token)
        .env("PGPLANE_TARGET_HOST", &app.target.host)
        .env("PGPLANE_TARGET_PORT", app.target.port.to_string())
        .env("PGPLANE_TARGET_ADMIN_USER", &app.admin_user)
        .env("PGPLANE_TARGET_ADMIN_PASSWORD", &app.admin_password)
        .env("PGPLANE_SUFFIX", &app.suffix);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run pytest");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the suite tests/{suite} failed:\n{report}");
    assert!(report.contains(" passed") && !report.contains("skipped"), "{report}");
    eprintln!("{}", report.lines().last().unwrap_or_default());
}
