//! Configuration shared by several subcommands, from flags or environment variables: the
//! metadata database, the sealing key and logging. Every secret can come from a file or the
//! environment; one given on the command line (where other local users and shell history see
//! it) draws a warning.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use pgplane_core::secrets::Sealer;
use pgplane_core::Store;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What each long-running process (`serve`, `pooler`) takes: the metadata database, the
/// sealing key and logging.
#[derive(Args, Clone)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secret_key: SecretKeyArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where the metadata database is.
#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// URL of pgplane's metadata database (postgres://user:password@host:port/dbname). It holds
    /// a password: prefer PGPLANE_DATABASE_URL or --database-url-file.
    #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true, conflicts_with = "database_url_file")]
    pub database_url: Option<String>,
    /// A file holding the metadata database's URL (should be readable by pgplane only).
    #[arg(long, env = "PGPLANE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the metadata database's certificate: pgplane then
    /// connects over TLS and verifies the certificate and the host name (sslmode=verify-full,
    /// whatever the URL says).
    #[arg(long, env = "PGPLANE_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Connections to the metadata database.
    #[arg(long = "database-max-connections", env = "PGPLANE_DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub max_connections: u32,
}

impl DatabaseArgs {
    pub fn store(&self) -> anyhow::Result<Store> {
        let url = match (&self.database_url, &self.database_url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(path)) => read_secret_file(path, "metadata database URL")?,
            (None, None) => bail!(
                "no metadata database: set PGPLANE_DATABASE_URL or PGPLANE_DATABASE_URL_FILE \
                 (or pass --database-url-file)"
            ),
        };
        let url = match &self.database_ca_file {
            Some(ca) => verifying(&url, ca),
            None => url,
        };
        Store::connect_lazy(&url, self.max_connections).context("invalid metadata database URL")
    }
}

/// `url` with TLS required and the server's certificate and host name verified against the CA
/// in `ca` (the last value of a repeated option is the one that counts).
fn verifying(url: &str, ca: &Path) -> String {
    let ca = percent_encoding::utf8_percent_encode(&ca.to_string_lossy(), percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=verify-full&sslrootcert={ca}")
}

/// Reads a secret from a file, without the white space around it (a trailing newline).
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// The flags that carry a secret, by argument id, with where to put it instead.
const SECRET_FLAGS: &[(&str, &str, &str)] = &[
    (
        "access_token",
        "--access-token",
        "PGPLANE_ACCESS_TOKEN_FILE (--access-token-file) or PGPLANE_ACCESS_TOKEN",
    ),
    ("secret_key", "--secret-key", "PGPLANE_SECRET_KEY_FILE (--secret-key-file) or PGPLANE_SECRET_KEY"),
    (
        "database_url",
        "--database-url",
        "PGPLANE_DATABASE_URL_FILE (--database-url-file) or PGPLANE_DATABASE_URL",
    ),
];

/// Warns, on standard error, about each secret given on the command line (never showing it).
/// A database URL counts only when it holds a password.
pub fn warn_about_secret_flags(matches: &ArgMatches) {
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    for id in leaf.ids() {
        let Some((_, flag, instead)) = SECRET_FLAGS.iter().find(|(secret, _, _)| id == *secret) else {
            continue;
        };
        if leaf.value_source(id.as_str()) != Some(ValueSource::CommandLine) {
            continue;
        }
        if *flag == "--database-url"
            && !leaf.get_one::<String>(id.as_str()).is_some_and(|url| url_has_password(url))
        {
            continue;
        }
        eprintln!(
            "warning: {flag} puts a secret on the command line, where other users of this machine \
             (ps, /proc) and shell history can read it; use {instead} instead"
        );
    }
}

/// Whether a postgres:// URL carries a password (in its user info or its query).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, query),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let in_userinfo = authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'));
    in_userinfo || query.split('&').any(|pair| pair.starts_with("password="))
}

/// The key that seals secrets at rest (32 bytes, base64). Give exactly one of the two.
#[derive(Args, Clone)]
pub struct SecretKeyArgs {
    /// The sealing key itself, base64-encoded: prefer PGPLANE_SECRET_KEY or --secret-key-file.
    #[arg(long, env = "PGPLANE_SECRET_KEY", hide_env_values = true, conflicts_with = "secret_key_file")]
    pub secret_key: Option<String>,
    /// A file holding the base64-encoded sealing key (should be readable by pgplane only).
    #[arg(long, env = "PGPLANE_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// During a key rotation: a file holding the previous key, still accepted for opening.
    #[arg(long = "previous-secret-key-file", env = "PGPLANE_PREVIOUS_SECRET_KEY_FILE")]
    pub previous_file: Option<PathBuf>,
}

impl SecretKeyArgs {
    pub fn sealer(&self) -> anyhow::Result<Sealer> {
        let encoded = match (&self.secret_key, &self.secret_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => read_secret_file(path, "secret key")?,
            (None, None) => bail!(
                "no secret key: set PGPLANE_SECRET_KEY or --secret-key-file \
                 (make one with `pgplane secret-key generate`)"
            ),
        };
        let sealer = Sealer::from_base64(&encoded).map_err(anyhow::Error::msg)?;
        match &self.previous_file {
            None => Ok(sealer),
            Some(path) => {
                let previous = read_secret_file(path, "previous secret key")?;
                let previous = Sealer::from_base64(&previous).map_err(anyhow::Error::msg)?;
                Ok(sealer.with_previous(&previous))
            }
        }
    }
}

/// Logging, to standard output (one JSON object a line with `--log-format json`, as container
/// log collectors expect); the client commands' own messages and errors go to standard error.
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
    /// Installs the logger. A filter by target and level (the usual kind) is a `Targets`, which
    /// decides once per call site; `EnvFilter`, needed only for span and field directives
    /// (`[...]`), also looks each span up on every entry and exit, and a request's span is
    /// entered for every row a metadata query yields.
    pub fn init(&self) {
        let targets = match self.filter.contains('[') {
            false => self.filter.parse::<Targets>().ok(),
            true => None,
        };
        let env = targets.is_none().then(|| {
            tracing_subscriber::EnvFilter::try_new(&self.filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        });
        let logger = tracing_subscriber::registry().with(targets).with(env);
        let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
        match self.format {
            LogFormat::Text => logger.with(lines).init(),
            LogFormat::Json => logger.with(lines.json()).init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{url_has_password, verifying};

    #[test]
    fn a_ca_file_makes_the_metadata_connection_verify_the_server() {
        let ca = Path::new("/etc/pgplane/metadata ca.crt");
        let url = verifying("postgres://app:pw@db.example:5432/app", ca);
        assert_eq!(
            url,
            "postgres://app:pw@db.example:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fpgplane%2Fmetadata%20ca%2Ecrt"
        );
        let url = verifying("postgres://app:pw@db.example/app?sslmode=disable", ca);
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert!(matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::VerifyFull), "{url}");
    }

    #[test]
    fn finds_a_password_in_a_database_url() {
        assert!(url_has_password("postgres://pgplane:s3cret@db:5432/pgplane"));
        assert!(url_has_password("postgresql://pgplane:p%40ss@db/pgplane?sslmode=require"));
        assert!(url_has_password("postgres://db/pgplane?user=pgplane&password=x"));
        assert!(!url_has_password("postgres://pgplane@db:5432/pgplane"));
        assert!(!url_has_password("postgres://db/pgplane?sslmode=verify-full"));
        assert!(!url_has_password("postgres:///pgplane?host=/run/postgresql"));
    }
}
