//! The doctl-like client: `pgplane databases ...` (clusters, their users, databases, connection
//! pools, firewall rules and CA certificate) and `pgplane auth init`, with doctl's arguments,
//! aliases and columns, and doctl's global flags (`-t`, `-u`, `-o`, ...) before or after the
//! subcommand. This module defines the global flags and the subcommands and dispatches them
//! (pools and firewall rules in modules of their own); most commands are one of four shapes
//! (list, show one, delete, save the config), each a single function below.

mod api;
mod config;
mod firewalls;
mod output;
mod pools;
mod preview;
mod prompt;

use std::process::ExitCode;

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use self::api::Api;
use self::config::ConnectionArgs;
use self::output::{Kind, Mode, OutputArgs, ACCESS, CA, CLUSTER, DB, USER};

/// doctl's global flags: where the API is, its token, and the output's form. They are global
/// to the whole command line, so that they may come before the subcommand as well as after it;
/// the server commands refuse them ([`GlobalArgs::refused`]).
#[derive(Args)]
pub struct GlobalArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    output: OutputArgs,
}

impl GlobalArgs {
    /// Why one of these flags given on the command line to the top-level command `name` is
    /// refused (every one for a server command, the table's for `auth`); None when none is.
    pub fn refused(matches: &ArgMatches, name: &str) -> Option<String> {
        let unused = |id: &str| match name {
            "databases" => false,
            "auth" => ["output_format", "output_no_header"].contains(&id),
            _ => true,
        };
        let command = Self::augment_args(clap::Command::new("pgplane"));
        let arg = command.get_arguments().find(|arg| {
            let id = arg.get_id().as_str();
            unused(id) && matches.value_source(id) == Some(ValueSource::CommandLine)
        })?;
        let flag = format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str()));
        Some(match name {
            "auth" => format!("{flag} shapes tables, and `pgplane auth` prints none"),
            _ => format!(
                "{flag} is an option of the client commands (databases, auth), not of `pgplane {name}`"
            ),
        })
    }
}

/// `pgplane databases ...`
#[derive(Args)]
pub struct DatabasesArgs {
    #[command(subcommand)]
    command: DatabasesCommand,
}

#[derive(Subcommand)]
enum DatabasesCommand {
    /// List the database clusters.
    #[command(visible_alias = "ls")]
    List,
    /// Show a database cluster, with its connection URI.
    #[command(visible_alias = "g")]
    Get(ClusterAt),
    /// Register an existing PostgreSQL server as a database cluster.
    #[command(visible_alias = "c")]
    Create(Box<CreateCluster>),
    /// Unregister a database cluster (nothing is dropped on its server).
    #[command(visible_alias = "rm")]
    Delete {
        #[arg(value_name = "cluster-id")]
        cluster_id: String,
        /// Delete without asking for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Show the CA certificate clients verify the cluster's server with (PEM; base64 in JSON,
    /// as doctl's).
    #[command(visible_alias = "gc")]
    GetCa(ClusterAt),
    /// Show what the reconciler would do on the cluster's server right now, statement by
    /// statement (passwords redacted), drift it would repair marked.
    Plan(ClusterAt),
    /// Manage the users of a database cluster.
    #[command(visible_alias = "u")]
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the databases of a database cluster.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Manage the connection pools of a database cluster (served by `pgplane pooler`).
    #[command(visible_alias = "p")]
    Pool {
        #[command(subcommand)]
        command: pools::PoolCommand,
    },
    /// Manage the firewall rules (trusted sources) of a database cluster.
    #[command(visible_alias = "fw")]
    Firewalls {
        #[command(subcommand)]
        command: firewalls::FirewallsCommand,
    },
}

/// `pgplane databases create`: DigitalOcean's fields plus the target's admin connection.
#[derive(Args)]
struct CreateCluster {
    /// Name of the cluster: 3 to 63 lowercase letters, digits and hyphens.
    #[arg(value_name = "name")]
    name: String,
    /// Host name or address of the PostgreSQL server.
    #[arg(long)]
    host: String,
    /// Port of the PostgreSQL server.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// The admin role pgplane manages the server with (a superuser, or a role with
    /// CREATEROLE and CREATEDB).
    #[arg(long)]
    user: String,
    /// Read the admin role's password from standard input (a hidden prompt on a terminal).
    /// Without it the password is read from the file PGPLANE_TARGET_PASSWORD_FILE names, else
    /// taken from PGPLANE_TARGET_PASSWORD, else it is empty (for trust or peer authentication).
    #[arg(long)]
    password_stdin: bool,
    /// sslmode of the admin connection.
    #[arg(long, default_value = "disable")]
    sslmode: String,
    /// The database the admin connection uses [default: postgres].
    #[arg(long)]
    database: Option<String>,
    /// Name of the cluster's primary user [default: doadmin].
    #[arg(long)]
    primary_user: Option<String>,
    /// Name of the cluster's default database [default: defaultdb].
    #[arg(long)]
    default_database: Option<String>,
    /// Database engine (pgplane manages PostgreSQL only).
    #[arg(long, default_value = "pg")]
    engine: String,
    /// The server's expected major version (registration fails if it differs).
    #[arg(long)]
    version: Option<String>,
    /// Region label.
    #[arg(long)]
    region: Option<String>,
    /// Size label.
    #[arg(long)]
    size: Option<String>,
    /// Number of nodes label.
    #[arg(long)]
    num_nodes: Option<u32>,
    /// A tag for the cluster (repeat the flag or separate tags with commas).
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    tags: Vec<String>,
    /// Only say what registering would create, adopt or refuse on the server; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A cluster, named by its id.
#[derive(Args)]
struct ClusterAt {
    #[arg(value_name = "cluster-id")]
    cluster_id: String,
}

/// A user, named by its cluster and its name.
#[derive(Args)]
struct UserAt {
    #[arg(value_name = "cluster-id")]
    cluster_id: String,
    #[arg(value_name = "user-name")]
    user_name: String,
}

/// A database, named by its cluster and its name.
#[derive(Args)]
struct DbAt {
    #[arg(value_name = "cluster-id")]
    cluster_id: String,
    #[arg(value_name = "db-name")]
    db_name: String,
}

/// A user's settings beyond DigitalOcean's (pgplane extensions).
#[derive(Args)]
struct SettingsArgs {
    /// Connections the user may hold at once (-1: no limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    connection_limit: Option<i32>,
    /// A session parameter set at each of the user's logins, as NAME=VALUE
    /// (statement_timeout, lock_timeout, idle_in_transaction_session_timeout,
    /// idle_session_timeout, work_mem, search_path, default_transaction_read_only); repeat the
    /// flag for several.
    #[arg(long = "parameter", value_name = "NAME=VALUE", value_parser = parse_parameter)]
    parameters: Vec<(String, String)>,
    /// A session parameter set in one database of the cluster only: DATABASE NAME=VALUE.
    #[arg(long = "parameter-in", num_args = 2, value_names = ["DATABASE", "NAME=VALUE"])]
    parameters_in: Vec<String>,
    /// When the server stops accepting the user's logins and pgplane ends its sessions (RFC
    /// 3339, e.g. 2027-01-31T18:00:00Z); `never` removes the expiry.
    #[arg(long, value_name = "TIME|never")]
    valid_until: Option<String>,
}

impl SettingsArgs {
    /// `settings` with the connection limit and the parameters given (with `clear` and none
    /// given: no parameters).
    fn add_to(&self, mut settings: Value, clear: bool) -> anyhow::Result<Value> {
        if let Some(limit) = self.connection_limit {
            settings["connection_limit"] = json!(limit);
        }
        match self.valid_until.as_deref() {
            Some("never") => settings["valid_until"] = Value::Null,
            Some(time) => settings["valid_until"] = json!(time),
            None => {}
        }
        match self.parameters()? {
            Some(parameters) => settings["parameters"] = Value::Array(parameters),
            None if clear => settings["parameters"] = json!([]),
            None => {}
        }
        Ok(settings)
    }

    /// The parameters given, as the API takes them (None when none is).
    fn parameters(&self) -> anyhow::Result<Option<Vec<Value>>> {
        let mut list: Vec<Value> =
            self.parameters.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect();
        for pair in self.parameters_in.chunks(2) {
            let [database, raw] = pair else { anyhow::bail!("--parameter-in takes DATABASE NAME=VALUE") };
            let (name, value) = parse_parameter(raw).map_err(anyhow::Error::msg)?;
            list.push(json!({ "name": name, "value": value, "database": database }));
        }
        Ok((!list.is_empty()).then_some(list))
    }
}

/// Parses `NAME=VALUE` (parameter names have no `=`; the value may).
fn parse_parameter(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.to_string())),
        _ => Err(format!("{raw:?} is not NAME=VALUE")),
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// List the users of a cluster.
    #[command(visible_alias = "ls")]
    List {
        #[arg(value_name = "cluster-id")]
        cluster_id: String,
        /// Only the users whose expiry comes within this long (24h, 7d), expired ones included.
        #[arg(long, value_name = "DURATION")]
        expiring_within: Option<String>,
    },
    /// Show a user, with its password.
    #[command(visible_alias = "g")]
    Get(UserAt),
    /// Create a user (LOGIN, nothing more) with a generated password.
    #[command(visible_alias = "c")]
    Create {
        #[command(flatten)]
        at: UserAt,
        /// An access level to start with, as DATABASE=LEVEL (read_only or read_write); repeat
        /// the flag for several databases.
        #[arg(long = "access", value_name = "DATABASE=LEVEL", value_parser = parse_access)]
        access: Vec<(String, String)>,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Make it a lease that is deleted this long after its creation (15m, 2h, 7d) unless
        /// renewed; what it owns then goes to `--reassign-to` or the primary user.
        #[arg(long, value_name = "DURATION", conflicts_with = "valid_until")]
        ttl: Option<String>,
        /// The lease's heir: the user of the same cluster that inherits what it owns.
        #[arg(long, value_name = "user-name", requires = "ttl")]
        reassign_to: Option<String>,
    },
    /// Renew a lease: its end moves to its lifetime (or `--ttl`) from now.
    Renew {
        #[command(flatten)]
        at: UserAt,
        /// The new lifetime (15m, 2h), which becomes the lease's own.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Change a user's connection limit, parameters and expiry (a pgplane extension; what is
    /// not given stays as it is).
    Update {
        #[command(flatten)]
        at: UserAt,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Remove every parameter of the user (with `--parameter`: keep only those).
        #[arg(long)]
        clear_parameters: bool,
    },
    /// Show the access level a user holds per database.
    Access(UserAt),
    /// Give a user an access level on a database (replacing the one it had there).
    Grant {
        #[command(flatten)]
        at: UserAt,
        #[arg(value_name = "db-name")]
        db_name: String,
        /// read_only: read every table and sequence; read_write: also insert, update, delete
        /// and truncate (no schema changes).
        #[arg(long, value_parser = ["read_only", "read_write"])]
        level: String,
    },
    /// Take a user's access to a database away.
    Revoke {
        #[command(flatten)]
        at: UserAt,
        #[arg(value_name = "db-name")]
        db_name: String,
    },
    /// Give a user a new generated password; the old one stops at once, or after `--grace`.
    #[command(visible_alias = "rs")]
    Reset {
        #[command(flatten)]
        at: UserAt,
        /// Keep the old password working this long (10m, 1h) while the new one is taken up; the
        /// new one then logs in as the user's second login (the Login column), which acts as
        /// the user.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
    },
    /// Show what a user owns and the privileges it holds, per database, read live.
    #[command(visible_alias = "deps")]
    Dependencies(UserAt),
    /// Delete a user; what it owns goes to the primary user or `--reassign-to`. Unless forced,
    /// shows what it owns first and asks.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        at: UserAt,
        /// Delete without asking for confirmation.
        #[arg(short, long)]
        force: bool,
        /// The user of the same cluster that inherits what it owns [default: the primary user].
        #[arg(long, value_name = "user-name", conflicts_with = "refuse_if_owning")]
        reassign_to: Option<String>,
        /// Do not delete it if it owns objects (the server answers with what it owns).
        #[arg(long)]
        refuse_if_owning: bool,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// List the databases of a cluster.
    #[command(visible_alias = "ls")]
    List(ClusterAt),
    /// Show a database.
    #[command(visible_alias = "g")]
    Get(DbAt),
    /// Create a database, owned by the primary user.
    #[command(visible_alias = "c")]
    Create(DbAt),
    /// Delete a database, even with clients connected to it.
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        at: DbAt,
        /// Delete without asking for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// `pgplane auth ...`
#[derive(Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Check an access token against the API and save it with the API URL for later commands
    /// (the token is read from a prompt or standard input unless PGPLANE_ACCESS_TOKEN,
    /// --access-token-file or --access-token gives it).
    Init,
}

/// Runs `pgplane databases ...`; errors are printed as one line.
pub async fn databases(global: GlobalArgs, args: DatabasesArgs) -> ExitCode {
    let mode = global.output.mode;
    finish(mode, run_databases(global, args.command).await)
}

/// Runs `pgplane auth ...`; errors are printed as one line.
pub async fn auth(global: GlobalArgs, args: AuthArgs) -> ExitCode {
    let AuthCommand::Init = args.command;
    finish(global.output.mode, global.connection.init().await)
}

fn finish(mode: Mode, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(mode, &error);
            ExitCode::FAILURE
        }
    }
}

async fn run_databases(global: GlobalArgs, command: DatabasesCommand) -> anyhow::Result<()> {
    let api = global.connection.api()?;
    let out = &global.output;
    match command {
        DatabasesCommand::List => list(&api, out, &CLUSTER, &["databases"]).await,
        DatabasesCommand::Get(ClusterAt { cluster_id }) => {
            show(&api, out, &CLUSTER, Method::GET, &["databases", &cluster_id], None).await
        }
        DatabasesCommand::Create(create) if create.dry_run => {
            preview::dry_run_registration(&api, out, &create.body()?).await
        }
        DatabasesCommand::Create(create) => {
            out.check(&CLUSTER)?;
            let body = create.body()?;
            show(&api, out, &CLUSTER, Method::POST, &["databases"], Some(body)).await
        }
        DatabasesCommand::Delete { cluster_id, force } => {
            delete(&api, &CLUSTER, &cluster_id, force, &["databases", &cluster_id]).await
        }
        DatabasesCommand::GetCa(ClusterAt { cluster_id }) => show_ca(&api, out, &cluster_id).await,
        DatabasesCommand::Plan(ClusterAt { cluster_id }) => preview::show_plan(&api, out, &cluster_id).await,
        DatabasesCommand::User { command } => run_user(&api, out, command).await,
        DatabasesCommand::Db { command } => run_db(&api, out, command).await,
        DatabasesCommand::Pool { command } => pools::run(&api, out, command).await,
        DatabasesCommand::Firewalls { command } => firewalls::run(&api, out, command).await,
    }
}

async fn run_user(api: &Api, out: &OutputArgs, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::List { cluster_id, expiring_within: None } => {
            list(api, out, &USER, &["databases", &cluster_id, "users"]).await
        }
        UserCommand::List { cluster_id, expiring_within: Some(window) } => {
            out.check(&USER)?;
            let path = ["databases", &cluster_id, "users"];
            let answer = api
                .call_with_query(Method::GET, &path, &[("expiring_within", window.as_str())], None)
                .await?;
            out.print_list(&USER, &answer[USER.many])
        }
        UserCommand::Get(UserAt { cluster_id, user_name }) => {
            let path = ["databases", &cluster_id, "users", &user_name];
            show(api, out, &USER, Method::GET, &path, None).await
        }
        UserCommand::Create { at: UserAt { cluster_id, user_name }, access, settings, ttl, reassign_to } => {
            let path = ["databases", &cluster_id, "users"];
            let mut body = json!({ "name": user_name });
            if let Some(ttl) = ttl {
                body["ttl"] = json!(ttl);
            }
            if let Some(heir) = reassign_to {
                body["reassign_to"] = json!(heir);
            }
            if !access.is_empty() {
                let entries: Vec<Value> =
                    access.iter().map(|(d, l)| json!({ "database": d, "level": l })).collect();
                body["access"] = Value::Array(entries);
            }
            let given = settings.add_to(json!({}), false)?;
            if given != json!({}) {
                body["settings"] = given;
            }
            show(api, out, &USER, Method::POST, &path, Some(body)).await
        }
        UserCommand::Update { at: UserAt { cluster_id, user_name }, settings, clear_parameters } => {
            let path = ["databases", &cluster_id, "users", &user_name];
            // DigitalOcean's update replaces REPLICATION: the user's own is sent back.
            let current = api.fetch(Method::GET, &path, None, USER.one).await?;
            let replication =
                current.pointer("/settings/pg_allow_replication").cloned().unwrap_or(json!(false));
            let given = settings.add_to(json!({ "pg_allow_replication": replication }), clear_parameters)?;
            show(api, out, &USER, Method::PUT, &path, Some(json!({ "settings": given }))).await
        }
        UserCommand::Access(UserAt { cluster_id, user_name }) => {
            list(api, out, &ACCESS, &["databases", &cluster_id, "users", &user_name, "access"]).await
        }
        UserCommand::Grant { at: UserAt { cluster_id, user_name }, db_name, level } => {
            change_access(api, out, &cluster_id, &user_name, &db_name, Some(&level)).await
        }
        UserCommand::Revoke { at: UserAt { cluster_id, user_name }, db_name } => {
            change_access(api, out, &cluster_id, &user_name, &db_name, None).await
        }
        UserCommand::Reset { at: UserAt { cluster_id, user_name }, grace } => {
            // As doctl does: look the cluster up first, so an unknown one says so.
            api.fetch(Method::GET, &["databases", &cluster_id], None, CLUSTER.one).await?;
            let path = ["databases", &cluster_id, "users", &user_name, "reset_auth"];
            let body = match grace {
                Some(grace) => json!({ "grace": grace }),
                None => json!({}),
            };
            show(api, out, &USER, Method::POST, &path, Some(body)).await
        }
        UserCommand::Renew { at: UserAt { cluster_id, user_name }, ttl } => {
            let path = ["databases", &cluster_id, "users", &user_name, "renew"];
            let body = match ttl {
                Some(ttl) => json!({ "ttl": ttl }),
                None => json!({}),
            };
            show(api, out, &USER, Method::POST, &path, Some(body)).await
        }
        UserCommand::Dependencies(UserAt { cluster_id, user_name }) => {
            preview::show_dependencies(api, out, &cluster_id, &user_name).await
        }
        UserCommand::Delete {
            at: UserAt { cluster_id, user_name },
            force,
            reassign_to,
            refuse_if_owning,
        } => {
            let heir = reassign_to.as_deref();
            preview::delete_user(api, &cluster_id, &user_name, heir, refuse_if_owning, force).await
        }
    }
}

async fn run_db(api: &Api, out: &OutputArgs, command: DbCommand) -> anyhow::Result<()> {
    match command {
        DbCommand::List(ClusterAt { cluster_id }) => {
            list(api, out, &DB, &["databases", &cluster_id, "dbs"]).await
        }
        DbCommand::Get(DbAt { cluster_id, db_name }) => {
            let path = ["databases", &cluster_id, "dbs", &db_name];
            show(api, out, &DB, Method::GET, &path, None).await
        }
        DbCommand::Create(DbAt { cluster_id, db_name }) => {
            let path = ["databases", &cluster_id, "dbs"];
            let body = json!({ "name": db_name });
            show(api, out, &DB, Method::POST, &path, Some(body)).await
        }
        DbCommand::Delete { at: DbAt { cluster_id, db_name }, force } => {
            let path = ["databases", &cluster_id, "dbs", &db_name];
            delete(api, &DB, &db_name, force, &path).await
        }
    }
}

/// Sets (or, with None, removes) a user's level on one database: reads its levels, changes
/// that one and puts them back; prints the levels the API answers with.
async fn change_access(
    api: &Api,
    out: &OutputArgs,
    cluster_id: &str,
    user_name: &str,
    db_name: &str,
    level: Option<&str>,
) -> anyhow::Result<()> {
    out.check(&ACCESS)?;
    let path = ["databases", cluster_id, "users", user_name, "access"];
    let current = api.fetch(Method::GET, &path, None, ACCESS.many).await?;
    let mut entries: Vec<Value> = current
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["database"] != db_name)
        .cloned()
        .collect();
    if let Some(level) = level {
        entries.push(json!({ "database": db_name, "level": level }));
    }
    let items = api.fetch(Method::PUT, &path, Some(&json!({ "access": entries })), ACCESS.many).await?;
    out.print_list(&ACCESS, &items)
}

/// Parses `--access DATABASE=LEVEL`.
fn parse_access(raw: &str) -> Result<(String, String), String> {
    match raw.rsplit_once('=') {
        Some((database, level)) if !database.is_empty() && ["read_only", "read_write"].contains(&level) => {
            Ok((database.to_string(), level.to_string()))
        }
        _ => Err(format!("{raw:?} is not DATABASE=LEVEL with LEVEL read_only or read_write")),
    }
}

/// GETs a list of `kind` and prints it.
async fn list(api: &Api, out: &OutputArgs, kind: &Kind, path: &[&str]) -> anyhow::Result<()> {
    out.check(kind)?;
    let items = api.fetch(Method::GET, path, None, kind.many).await?;
    out.print_list(kind, &items)
}

/// Sends a request answered with one `kind` and prints it.
async fn show(
    api: &Api,
    out: &OutputArgs,
    kind: &Kind,
    method: Method,
    path: &[&str],
    body: Option<Value>,
) -> anyhow::Result<()> {
    out.check(kind)?;
    let item = api.fetch(method, path, body.as_ref(), kind.one).await?;
    out.print_one(kind, &item)
}

/// Prints a cluster's CA certificate: the PEM itself in text, as the API gives it (base64) in
/// JSON, as doctl does.
async fn show_ca(api: &Api, out: &OutputArgs, cluster_id: &str) -> anyhow::Result<()> {
    out.check(&CA)?;
    let mut ca = api.fetch(Method::GET, &["databases", cluster_id, "ca"], None, CA.one).await?;
    if out.mode == Mode::Text {
        let encoded = ca["certificate"].as_str().unwrap_or_default();
        let pem = B64.decode(encoded).context("the API's certificate is not base64")?;
        ca["certificate"] = json!(String::from_utf8_lossy(&pem).trim_end());
    }
    out.print_one(&CA, &ca)
}

/// Deletes one `kind` named `name` once confirmed (or forced); prints nothing.
async fn delete(api: &Api, kind: &Kind, name: &str, force: bool, path: &[&str]) -> anyhow::Result<()> {
    prompt::confirm_delete(kind.noun, name, force)?;
    api.call(Method::DELETE, path, None).await?;
    Ok(())
}

impl CreateCluster {
    /// The `POST /v2/databases` body; reads the admin password first.
    fn body(&self) -> anyhow::Result<Value> {
        let password = if self.password_stdin {
            prompt::read_secret("admin password")?
        } else if let Some(path) = std::env::var_os("PGPLANE_TARGET_PASSWORD_FILE") {
            crate::config::read_secret_file(std::path::Path::new(&path), "target admin password")?
        } else {
            std::env::var("PGPLANE_TARGET_PASSWORD").unwrap_or_default()
        };
        Ok(json!({
            "name": self.name,
            "engine": self.engine,
            "version": self.version,
            "region": self.region,
            "size": self.size,
            "num_nodes": self.num_nodes,
            "tags": self.tags,
            "pgplane": {
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "password": password,
                "sslmode": self.sslmode,
                "database": self.database,
                "primary_user": self.primary_user,
                "default_database": self.default_database,
            },
        }))
    }
}
