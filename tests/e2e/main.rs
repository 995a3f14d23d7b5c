//! End-to-end tests: HTTP requests to a spawned pgplane, effects asserted on real PostgreSQL
//! 15 and 17 targets (catalog rows, logins that work and logins that are refused).

mod abuse;
mod auth;
mod boundary;
mod clusters;
mod console;
mod dbs;
mod faults;
mod fuzz;
mod names;
mod openapi;
mod ops;
mod pydo;
mod reliability;
mod security;
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

/// Percent-encodes a name for a path segment, as PyDo does (including '/').
pub fn encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub use pgplane_testkit::python;
