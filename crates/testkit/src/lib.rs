//! pgplane-testkit: fixtures for tests against real PostgreSQL. [`servers`] starts (once per
//! test process) a metadata server and PostgreSQL 15 and 17 targets in containers built from
//! Debian packages (`deploy/images/build.sh`), or uses the server named by
//! `PGPLANE_TEST_PG_URL`. [`TestApp`] runs a whole pgplane (gateway and reconciler) on a
//! random port with its own metadata database and a cluster registered on a target. Tests leave
//! no role or database behind ([`cleanup`]).

mod app;
pub mod cleanup;
mod logs;
mod pooler;
mod servers;

pub use app::{AppOptions, Process, TestApp};
pub use logs::captured_logs;
pub use pooler::TestPooler;
pub use servers::{
    free_port, own_containers, remove_at_exit, remove_attempt, servers, OwnServer, PgServer, Servers,
    START_ATTEMPTS,
};

/// A random lowercase suffix that keeps names of one test apart from every other's: role and
/// database names are server-wide.
pub fn unique_suffix() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 8).to_lowercase()
}

/// The Python of the virtual environment `make test` creates (PyDo, pytest, the Prometheus
/// parser, openapi-spec-validator), or PGPLANE_PYTHON.
pub fn python() -> std::path::PathBuf {
    let path = std::env::var_os("PGPLANE_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
    });
    assert!(
        path.exists(),
        "{} is missing: `make test` creates the virtual environment (or set PGPLANE_PYTHON)",
        path.display()
    );
    path
}
