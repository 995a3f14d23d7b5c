//! The PyDo compatibility suite (tests/pydo, run with pytest from the virtual environment
//! `make test` creates) against a live pgplane: DigitalOcean's official Python client must work
//! unchanged, and every call's effect is checked on the target.

use pgplane_testkit::{AppOptions, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydo_works_unchanged_against_pgplane() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    crate::run_pytest(&app, "pydo", &[]).await;
}
