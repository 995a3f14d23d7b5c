//! `pgplane`: the one binary. `serve` runs the gateway and the reconciler; `migrate` applies
//! the metadata schema; `token` issues API tokens; `secret-key generate` makes a sealing key;
//! `databases` and `auth` are the doctl-like client of the REST API.

mod client;
mod config;
mod serve;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgplane_core::tokens;

use crate::config::{DatabaseArgs, LogArgs};

/// Self-hosted control plane for managed PostgreSQL.
#[derive(Parser)]
#[command(name = "pgplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the REST API and the reconciler.
    Serve(serve::ServeArgs),
    /// Apply the metadata database schema migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the key that seals secrets at rest.
    SecretKey {
        #[command(subcommand)]
        command: SecretKeyCommand,
    },
    /// Manage database clusters, their users and databases through the REST API (doctl-style).
    Databases(client::DatabasesArgs),
    /// Save the API URL and access token the client commands use.
    Auth(client::AuthArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a new full-access token and print it (it is shown only once).
    Create {
        /// A name to recognise the token by.
        #[arg(long, default_value = "default")]
        name: String,
        /// The team the token acts for (created if missing).
        #[arg(long, default_value = "default")]
        team: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum SecretKeyCommand {
    /// Print a new random key (base64) for PGPLANE_SECRET_KEY or --secret-key-file.
    Generate,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let outcome = match cli.command {
        // The client prints its own errors, on one line as doctl does.
        Command::Databases(args) => return Ok(client::databases(args).await),
        Command::Auth(args) => return Ok(client::auth(args).await),
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate { database, log } => {
            log.init();
            let store = database.store()?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("metadata schema is up to date");
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    name,
                    team,
                    database,
                },
        } => {
            let store = database.store()?;
            store.migrate().await.context("applying migrations")?;
            let team_id = store.ensure_team(&team).await?;
            let issued = tokio::task::spawn_blocking(tokens::issue).await?;
            store
                .insert_token(team_id, &name, &issued, &["*".to_string()])
                .await?;
            println!("{}", issued.token);
            Ok(())
        }
        Command::SecretKey {
            command: SecretKeyCommand::Generate,
        } => {
            println!("{}", pgplane_core::secrets::Sealer::generate_key());
            Ok(())
        }
    };
    outcome.map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
