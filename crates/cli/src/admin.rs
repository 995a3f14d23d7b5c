//! Admin subcommands that work on the metadata database directly: `pgplane token
//! create|list|revoke` and `pgplane secret-key generate|rotate`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use pgplane_core::scopes::check_scopes;
use pgplane_core::secrets::Sealer;
use pgplane_core::tokens;

use crate::config::{read_secret_file, DatabaseArgs, SecretKeyArgs};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a new token and print it (it is shown only once).
    Create {
        /// A name to recognise the token by.
        #[arg(long, default_value = "default")]
        name: String,
        /// The team the token acts for (created if missing).
        #[arg(long, default_value = "default")]
        team: String,
        /// A scope the token gets (repeatable): * (full access), database:read,
        /// database:create, database:update, database:delete, database:view_credentials.
        #[arg(long = "scope", default_value = "*")]
        scopes: Vec<String>,
        /// Lifetime, e.g. "30d" or "12h"; no expiry when omitted.
        #[arg(long)]
        expires_in: Option<humantime::Duration>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a token by its id (the part after "pgp_" and before the next "_").
    Revoke {
        token_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
pub enum SecretKeyCommand {
    /// Print a new random key (base64) for PGPLANE_SECRET_KEY or --secret-key-file.
    Generate,
    /// Re-seal every stored secret under a new key. First restart every pgplane with the new key
    /// as its key and the old one as --previous-secret-key-file; then rotate (it repeats until no
    /// secret is left under the old key); then drop --previous-secret-key-file.
    Rotate {
        /// The current key.
        #[command(flatten)]
        current: SecretKeyArgs,
        /// A file holding the new base64 key.
        #[arg(long)]
        new_key_file: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, team, scopes, expires_in, database } => {
            check_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let expires_at = expires_in
                .map(|d| chrono::Duration::from_std(d.into()).map(|d| chrono::Utc::now() + d))
                .transpose()
                .context("--expires-in is too long")?;
            let store = database.store()?;
            store.migrate().await.context("applying migrations")?;
            let team_id = store.ensure_team(&team).await?;
            let issued = tokio::task::spawn_blocking(tokens::issue).await?;
            store.insert_token(team_id, &name, &issued, &scopes, expires_at).await?;
            println!("{}", issued.token);
        }
        TokenCommand::List { database } => {
            let store = database.store()?;
            println!(
                "{:<14} {:<16} {:<12} {:<21} {:<21} {:<21} SCOPES",
                "ID", "NAME", "TEAM", "CREATED", "EXPIRES", "LAST USED"
            );
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            };
            for listing in store.list_tokens().await? {
                let t = listing.token;
                let state = if t.revoked_at.is_some() { " (revoked)" } else { "" };
                println!(
                    "{:<14} {:<16} {:<12} {:<21} {:<21} {:<21} {}{state}",
                    t.token_id,
                    t.name,
                    listing.team_name,
                    at(Some(t.created_at)),
                    at(t.expires_at),
                    at(t.last_used_at),
                    t.scopes.join(",")
                );
            }
        }
        TokenCommand::Revoke { token_id, database } => {
            database.store()?.revoke_token(&token_id).await?;
            println!("revoked {token_id}");
        }
    }
    Ok(())
}

pub async fn secret_key(command: SecretKeyCommand) -> anyhow::Result<()> {
    match command {
        SecretKeyCommand::Generate => println!("{}", Sealer::generate_key()),
        SecretKeyCommand::Rotate { current, new_key_file, database } => {
            let from = current.sealer()?;
            let encoded = read_secret_file(&new_key_file, "new secret key")?;
            let to = Sealer::from_base64(&encoded).map_err(anyhow::Error::msg)?;
            let rotation = database.store()?.reseal_all(&from, &to).await.context("re-sealing secrets")?;
            println!("re-sealed {} secrets under the new key", rotation.resealed);
            if !rotation.unopenable.is_empty() {
                bail!(
                    "{} secrets open with neither key and were left as they are: {}",
                    rotation.unopenable.len(),
                    rotation.unopenable.join("; ")
                );
            }
        }
    }
    Ok(())
}
