//! Configuration shared by several subcommands, from flags or environment variables: the
//! metadata database, the sealing key and logging.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use pgplane_core::secrets::Sealer;
use pgplane_core::Store;

/// Where the metadata database is.
#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// URL of pgplane's metadata database (postgres://user:password@host:port/dbname).
    #[arg(long = "database-url", env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Connections to the metadata database.
    #[arg(long = "database-max-connections", env = "PGPLANE_DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub max_connections: u32,
}

impl DatabaseArgs {
    pub fn store(&self) -> anyhow::Result<Store> {
        Store::connect_lazy(&self.url, self.max_connections).context("invalid --database-url")
    }
}

/// The key that seals secrets at rest (32 bytes, base64). Give exactly one of the two.
#[derive(Args, Clone)]
pub struct SecretKeyArgs {
    /// The sealing key itself, base64-encoded.
    #[arg(long = "secret-key", env = "PGPLANE_SECRET_KEY", hide_env_values = true, conflicts_with = "file")]
    pub key: Option<String>,
    /// A file holding the base64-encoded sealing key (should be readable by pgplane only).
    #[arg(long = "secret-key-file", env = "PGPLANE_SECRET_KEY_FILE")]
    pub file: Option<PathBuf>,
    /// During a key rotation: a file holding the previous key, still accepted for opening.
    #[arg(long = "previous-secret-key-file", env = "PGPLANE_PREVIOUS_SECRET_KEY_FILE")]
    pub previous_file: Option<PathBuf>,
}

impl SecretKeyArgs {
    pub fn sealer(&self) -> anyhow::Result<Sealer> {
        let encoded = match (&self.key, &self.file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the secret key file {}", path.display()))?,
            (None, None) => bail!(
                "no secret key: set PGPLANE_SECRET_KEY or --secret-key-file \
                 (make one with `pgplane secret-key generate`)"
            ),
        };
        let sealer = Sealer::from_base64(&encoded).map_err(anyhow::Error::msg)?;
        match &self.previous_file {
            None => Ok(sealer),
            Some(path) => {
                let previous = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the previous secret key file {}", path.display()))?;
                let previous = Sealer::from_base64(&previous).map_err(anyhow::Error::msg)?;
                Ok(sealer.with_previous(&previous))
            }
        }
    }
}

/// Logging.
#[derive(Args, Clone)]
pub struct LogArgs {
    /// Log format: text or json.
    #[arg(long = "log-format", env = "PGPLANE_LOG_FORMAT", default_value = "text")]
    pub format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (for example "info,pgplane_reconciler=debug").
    #[arg(long = "log", env = "PGPLANE_LOG", default_value = "info,sqlx=warn")]
    pub filter: String,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match self.format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}
