//! The PyDo compatibility suite (tests/pydo, run with pytest from the virtual environment
//! `make test` creates) against a live pgplane: DigitalOcean's official Python client must work
//! unchanged, and every call's effect is checked on the target.

use std::path::PathBuf;
use std::process::Command;

use pgplane_testkit::{AppOptions, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydo_works_unchanged_against_pgplane() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(crate::python());
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pydo"])
        .current_dir(&root)
        .env("PGPLANE_API_URL", &app.base_url)
        .env("PGPLANE_TOKEN", &app.token)
        .env("PGPLANE_TARGET_HOST", &app.target.host)
        .env("PGPLANE_TARGET_PORT", app.target.port.to_string())
        .env("PGPLANE_TARGET_ADMIN_USER", &app.admin_user)
        .env("PGPLANE_TARGET_ADMIN_PASSWORD", &app.admin_password)
        .env("PGPLANE_SUFFIX", &app.suffix);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run pytest");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the PyDo suite failed:\n{report}");
    assert!(report.contains(" passed") && !report.contains("skipped"), "{report}");
    eprintln!("{}", report.lines().last().unwrap_or_default());
}
