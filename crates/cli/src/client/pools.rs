//! `pgplane databases pool ...`: a cluster's connection pools (served on PgBouncer by the
//! `pgplane pooler` beside its server), with doctl's arguments, flags, aliases and columns.
//! `update` changes only the fields it is given, keeping the pool's others.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::Api;
use super::output::{OutputArgs, POOL};
use super::{delete, list, show, ClusterAt};

#[derive(Subcommand)]
pub(super) enum PoolCommand {
    /// List the connection pools of a cluster.
    #[command(visible_alias = "ls")]
    List(ClusterAt),
    /// Show a connection pool.
    #[command(visible_alias = "g")]
    Get(PoolAt),
    /// Create a connection pool: clients connect to a database named as the pool.
    #[command(visible_alias = "c")]
    Create {
        #[command(flatten)]
        at: PoolAt,
        /// The pool mode: session, transaction or statement.
        #[arg(long, default_value = "transaction")]
        mode: String,
        /// The most server connections the pool uses.
        #[arg(long)]
        size: i32,
        /// The database of the cluster the pool leads to.
        #[arg(long)]
        db: String,
        /// The user the pool logs in as [default: each client's own].
        #[arg(long)]
        user: Option<String>,
    },
    /// Change a connection pool's mode, size, database or user (what is not given stays as it
    /// is; `--user ""`: each client's own).
    #[command(visible_alias = "u")]
    Update {
        #[command(flatten)]
        at: PoolAt,
        /// The pool mode: session, transaction or statement.
        #[arg(long)]
        mode: Option<String>,
        /// The most server connections the pool uses.
        #[arg(long)]
        size: Option<i32>,
        /// The database of the cluster the pool leads to.
        #[arg(long)]
        db: Option<String>,
        /// The user the pool logs in as.
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a connection pool; its clients are disconnected.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        at: PoolAt,
        /// Delete without asking for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// A pool, named by its cluster and its name.
#[derive(Args)]
pub(super) struct PoolAt {
    #[arg(value_name = "cluster-id")]
    cluster_id: String,
    #[arg(value_name = "pool-name")]
    pool_name: String,
}

impl PoolAt {
    fn path(&self) -> [&str; 4] {
        ["databases", &self.cluster_id, "pools", &self.pool_name]
    }
}

pub(super) async fn run(api: &Api, out: &OutputArgs, command: PoolCommand) -> anyhow::Result<()> {
    match command {
        PoolCommand::List(ClusterAt { cluster_id }) => {
            list(api, out, &POOL, &["databases", &cluster_id, "pools"]).await
        }
        PoolCommand::Get(at) => show(api, out, &POOL, Method::GET, &at.path(), None).await,
        PoolCommand::Create { at, mode, size, db, user } => {
            let body = json!({ "name": at.pool_name, "mode": mode, "size": size, "db": db, "user": user });
            show(api, out, &POOL, Method::POST, &["databases", &at.cluster_id, "pools"], Some(body)).await
        }
        PoolCommand::Update { at, mode, size, db, user } => {
            // The API replaces the whole pool: what is not given is sent back as it is.
            let current = api.fetch(Method::GET, &at.path(), None, POOL.one).await?;
            let keep = |given: Option<Value>, field: &str| given.unwrap_or_else(|| current[field].clone());
            let body = json!({
                "mode": keep(mode.map(Value::from), "mode"),
                "size": keep(size.map(Value::from), "size"),
                "db": keep(db.map(Value::from), "db"),
                "user": keep(user.map(Value::from), "user"),
            });
            api.call(Method::PUT, &at.path(), Some(&body)).await?;
            Ok(())
        }
        PoolCommand::Delete { at, force } => delete(api, &POOL, &at.pool_name, force, &at.path()).await,
    }
}
