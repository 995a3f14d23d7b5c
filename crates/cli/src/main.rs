//! `pgplane`: the one binary. `serve` runs the gateway and the reconciler; `pooler` serves one
//! server's connection pools on PgBouncer; `migrate` applies
//! the metadata schema; `token` issues API tokens; `secret-key generate` makes a sealing key;
//! `databases` and `auth` are the doctl-like client of the REST API. The client's global flags
//! (`-t`, `-u`, `-o`, ...) may come before the subcommand, as doctl's; the server commands
//! refuse them.

mod admin;
mod client;
mod config;
mod pooler;
mod serve;

use std::process::ExitCode;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{DatabaseArgs, LogArgs};

/// Self-hosted control plane for managed PostgreSQL.
#[derive(Parser)]
#[command(name = "pgplane", version, about)]
struct Cli {
    #[command(flatten)]
    client: client::GlobalArgs,
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
    /// Manage database clusters, their users, databases, pools and firewall rules through the
    /// REST API (doctl-style).
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
    refuse_client_flags(&matches);
    config::warn_about_secret_flags(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let outcome = match cli.command {
        // The client prints its own errors, on one line as doctl does.
        Command::Databases(args) => return Ok(client::databases(cli.client, args).await),
        Command::Auth(args) => return Ok(client::auth(cli.client, args).await),
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

/// Exits with clap's usage error when a client flag is given to a command that would not use
/// it (`pgplane -t TOKEN serve`, `pgplane serve -o json`): clap accepts them everywhere, being
/// global so that they may come before the client's subcommands.
fn refuse_client_flags(matches: &clap::ArgMatches) {
    let Some((name, _)) = matches.subcommand() else { return };
    let Some(message) = client::GlobalArgs::refused(matches, name) else { return };
    let mut command = Cli::command();
    command.build();
    match command.find_subcommand_mut(name) {
        Some(sub) => sub.error(ErrorKind::ArgumentConflict, message).exit(),
        None => command.error(ErrorKind::ArgumentConflict, message).exit(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_are_refused_only_where_unused() {
        let refused = |args: &[&str]| {
            let matches = super::Cli::command().try_get_matches_from(args).expect("valid arguments");
            super::client::GlobalArgs::refused(&matches, matches.subcommand_name().unwrap())
        };
        assert_eq!(refused(&["pgplane", "-t", "x", "-o", "json", "databases", "list"]), None);
        assert_eq!(refused(&["pgplane", "databases", "user", "list", "c", "--no-header"]), None);
        assert_eq!(refused(&["pgplane", "-u", "http://h", "auth", "init", "-o", "json"]), None);
        let serve = refused(&["pgplane", "-t", "x", "serve"]).expect("refused");
        assert!(serve.starts_with("--access-token is an option of the client commands"), "{serve}");
        assert!(refused(&["pgplane", "migrate", "--format", "Name"]).is_some());
        assert!(refused(&["pgplane", "auth", "init", "--no-header"]).is_some());
    }
}
