//! `pgplane`: the one binary. `serve` runs the gateway and the reconciler; `pooler` serves one
//! server's connection pools on PgBouncer; `migrate` applies
//! the metadata schema; `token` issues API tokens; `secret-key generate` makes a sealing key;
//! `databases` and `auth` are the doctl-like client of the REST API.

mod admin;
mod client;
mod config;
mod pooler;
mod serve;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Serve(Box<serve::ServeArgs>),
    /// Serve the connection pools of the clusters on one server, on PgBouncer, beside it.
    Pooler(Box<pooler::PoolerArgs>),
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
        command: admin::TokenCommand,
    },
    /// Manage the key that seals secrets at rest.
    SecretKey {
        #[command(subcommand)]
        command: admin::SecretKeyCommand,
    },
    /// Manage database clusters, their users and databases through the REST API (doctl-style).
    Databases(client::DatabasesArgs),
    /// Save the API URL and access token the client commands use.
    Auth(client::AuthArgs),
}

/// mimalloc rather than the system allocator: glibc's keeps large freed blocks (argon2's
/// 19 MiB per token check, 200 KiB answers) in per-thread arenas and raises its mmap
/// threshold as it goes, so a long-running `serve` held on to several times the memory it
/// used (see BENCHMARKS.md, Memory); mimalloc returns freed memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    config::warn_about_secret_flags(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let outcome = match cli.command {
        // The client prints its own errors, on one line as doctl does.
        Command::Databases(args) => return Ok(client::databases(args).await),
        Command::Auth(args) => return Ok(client::auth(args).await),
        Command::Serve(args) => serve::run(*args).await,
        Command::Pooler(args) => pooler::run(*args).await,
        Command::Migrate { database, log } => {
            log.init();
            let store = database.store()?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("metadata schema is up to date");
            Ok(())
        }
        Command::Token { command } => admin::token(command).await,
        Command::SecretKey { command } => admin::secret_key(command).await,
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
