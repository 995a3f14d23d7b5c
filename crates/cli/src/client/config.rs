//! Where the client finds the API and its token: the `--api-url`/`--access-token` flags (or
//! `--access-token-file`), their environment variables, the per-user config file that `pgplane auth init` writes
//! (`<config dir>/pgplane/config.json`, or `--config`/`PGPLANE_CONFIG`; a 0600 file in a 0700
//! directory), then the default URL, in that order.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::api::Api;
use super::prompt;
use crate::config::read_secret_file;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// The connection flags every client command takes (before or after its subcommand). They are
/// global, so their ids are the client's own (`client_config`, not `config`): clap does not give
/// a global flag to a subcommand that has an argument of the same id, and mixes their values.
#[derive(Args)]
#[command(next_help_heading = "Client options (databases, auth)")]
pub struct ConnectionArgs {
    /// URL of the pgplane API [default: saved by `pgplane auth init`, else
    /// http://127.0.0.1:8080].
    #[arg(short = 'u', long, env = "PGPLANE_API_URL", global = true)]
    api_url: Option<String>,
    /// API access token [default: saved by `pgplane auth init`]. Prefer PGPLANE_ACCESS_TOKEN or
    /// --access-token-file: a flag's value is visible to other users of the machine.
    #[arg(
        short = 't',
        long,
        env = "PGPLANE_ACCESS_TOKEN",
        hide_env_values = true,
        global = true,
        conflicts_with = "access_token_file"
    )]
    access_token: Option<String>,
    /// A file holding the API access token.
    #[arg(long, env = "PGPLANE_ACCESS_TOKEN_FILE", global = true)]
    access_token_file: Option<PathBuf>,
    /// The client configuration file [default: <config dir>/pgplane/config.json].
    #[arg(
        id = "client_config",
        short = 'c',
        long = "config",
        value_name = "CONFIG",
        env = "PGPLANE_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
}

/// What `pgplane auth init` saves.
#[derive(Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
}

impl ConnectionArgs {
    /// The token given by flag, file or environment, if any.
    fn given_token(&self) -> anyhow::Result<Option<String>> {
        match (&self.access_token, &self.access_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => read_secret_file(path, "access token").map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The API, with the URL and token from flags, environment, config file or default.
    pub fn api(&self) -> anyhow::Result<Api> {
        let given = self.given_token()?;
        let saved = match (&self.api_url, &given) {
            (Some(_), Some(_)) => ConfigFile::default(),
            _ => ConfigFile::load(&self.config_path()?)?,
        };
        let api_url = self.api_url.clone().or(saved.api_url).unwrap_or_else(|| DEFAULT_API_URL.to_string());
        let token = given.or(saved.access_token).ok_or_else(|| {
            anyhow!(
                "no access token: run `pgplane auth init`, or set PGPLANE_ACCESS_TOKEN or \
                 PGPLANE_ACCESS_TOKEN_FILE"
            )
        })?;
        Api::new(&api_url, token)
    }

    /// `pgplane auth init`: takes the token from the flag or environment, else from a prompt
    /// or standard input; checks it against the API; saves URL and token.
    pub async fn init(&self) -> anyhow::Result<()> {
        let path = self.config_path()?;
        let api_url = match &self.api_url {
            Some(url) => url.clone(),
            None => ConfigFile::load(&path)?.api_url.unwrap_or_else(|| DEFAULT_API_URL.to_string()),
        };
        let token = match self.given_token()? {
            Some(token) => token,
            None => prompt::read_secret("access token")?,
        };
        Api::new(&api_url, token.clone())?
            .call(reqwest::Method::GET, &["databases"], None)
            .await
            .context("the access token could not be used")?;
        ConfigFile { api_url: Some(api_url.clone()), access_token: Some(token) }.save(&path)?;
        super::output::write_stdout(&format!("Token accepted by {api_url}; saved to {}\n", path.display()))
    }

    fn config_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.config {
            return Ok(path.clone());
        }
        let dir = dirs::config_dir().ok_or_else(|| {
            anyhow!("no per-user config directory on this system: pass --config or set PGPLANE_CONFIG")
        })?;
        Ok(dir.join("pgplane").join("config.json"))
    }
}

impl ConfigFile {
    /// Reads the file; a missing file is an empty configuration.
    fn load(path: &Path) -> anyhow::Result<Self> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the client configuration {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading the client configuration {}", path.display())),
        }
    }

    /// Replaces the file atomically with a new one readable by the user only, creating its
    /// directory (0700) if needed.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let context = || format!("writing the client configuration {}", path.display());
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        private_dir_builder().create(dir).with_context(context)?;
        let temporary = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let written = private_file(&temporary).and_then(|mut file| {
            file.write_all(&serde_json::to_vec_pretty(self)?)?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        let result = written.and_then(|()| fs::rename(&temporary, path));
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result.with_context(context)
    }
}

#[cfg(unix)]
fn private_dir_builder() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    builder
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}
