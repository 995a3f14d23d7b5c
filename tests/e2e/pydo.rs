//! The PyDo compatibility suite (tests/pydo, run with pytest from the virtual environment
//! `make test` creates) against a live pgplane: DigitalOcean's official Python client must work
//! unchanged, and every call's effect is checked on the target (pools through a pooler's
//! PgBouncer).

use pgplane_testkit::{AppOptions, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydo_works_unchanged_against_pgplane() {
    // The suite asks for REPLICATION on a cluster alone on its server, as an operator may allow.
    let options =
        AppOptions { register: false, allow_replication_for_sole_tenants: true, ..Default::default() };
    let app = TestApp::spawn_with(options).await;
    // The pools PyDo creates are served by a pooler beside the target.
    let pooler = app.start_pooler().await;
    crate::run_pytest(&app, "pydo", &[]).await;
    pooler.stop().await;
}
