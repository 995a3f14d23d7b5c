//! pgplane's own log output during tests, captured in memory (at debug level) so that tests can
//! search it, for example for passwords that must never appear. One subscriber per test
//! process, shared by all tests; set TEST_LOG=1 to also see it on stderr.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().expect("log buffer").extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the capturing subscriber (once).
pub(crate) fn install() {
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,sqlx=info,hyper=info,tokio_postgres=info,bollard=info,testcontainers=info",
            )
            .with_ansi(false)
            .with_writer(Capture)
            .try_init();
    });
}

/// Everything pgplane logged in this test process so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().expect("log buffer")).into_owned()
}
