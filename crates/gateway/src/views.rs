//! The JSON objects the API returns, shaped as DigitalOcean's (cluster, user, db, connection),
//! plus the fields DigitalOcean lacks: reconcile status, last error, timestamps and the
//! `pgplane` block describing the registered target. Passwords are opened (through the
//! credentials cache) only here.

use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pgplane_core::lifecycle::{DesiredState, Lifecycle, ShownStatus};
use pgplane_core::model::{Cluster, Database, FirewallRule, Pool, PoolListener, User};
use pgplane_core::parameters::RoleParameter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::rendered::Rendering;
use pgplane_core::credentials::{ClusterCredentials, CredentialsCache};

/// Everything but unreserved URI characters is escaped in URI user info and paths.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub(crate) fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserSettings {
    pub pg_allow_replication: bool,
    /// Connections the user may hold at once; -1: no limit (pgplane extension).
    pub connection_limit: i32,
    /// Session parameters set at each login (pgplane extension).
    pub parameters: Vec<ParameterView>,
    /// When the server stops accepting the user's logins; absent: never (pgplane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// The login a rotation's old credentials still work on, and until when.
#[derive(Serialize, ToSchema)]
pub(crate) struct GraceView {
    pub login: String,
    pub until: String,
}

/// A lease: a user that is deleted when its `settings.valid_until` comes, unless renewed.
#[derive(Serialize, ToSchema)]
pub(crate) struct LeaseView {
    /// How far `POST …/renew` moves its end, in seconds.
    pub ttl_seconds: i32,
    /// Who inherits what it owns when it ends.
    pub reassign_to: String,
}

/// A session parameter of a user: set at each of its logins in every database, or only in
/// `database`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub(crate) struct ParameterView {
    #[schema(example = "statement_timeout")]
    pub name: String,
    #[schema(example = "30s")]
    pub value: String,
    /// A database of the cluster; absent: every database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl From<ParameterView> for RoleParameter {
    fn from(p: ParameterView) -> Self {
        RoleParameter { name: p.name, value: p.value, database: p.database }
    }
}

impl From<&RoleParameter> for ParameterView {
    fn from(p: &RoleParameter) -> Self {
        ParameterView { name: p.name.clone(), value: p.value.clone(), database: p.database.clone() }
    }
}

/// One database a user has access to.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessEntry {
    /// A database of the cluster.
    pub database: String,
    /// `read_only` (CONNECT, USAGE on every schema but the system ones, SELECT on their tables,
    /// views and sequences) or `read_write` (also INSERT, UPDATE, DELETE, TRUNCATE on tables and
    /// USAGE, UPDATE on sequences; never CREATE). Objects the primary user creates later are
    /// covered at once (default privileges); objects other roles create, at the next full
    /// reconcile pass. `none` in a request removes the entry; `owner` (the primary user, every
    /// database) is shown, never accepted.
    #[schema(example = "read_only")]
    pub level: String,
    /// `conflict` when a role that pgplane did not create stands under the name of the group
    /// role that would carry this level (see `last_error`): the level is not carried out, and
    /// that role gets nothing. Absent otherwise (the response's `status` tells the rest).
    /// Ignored in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the entry is in conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl AccessEntry {
    /// An entry as stored: a database and its level.
    pub fn new(database: String, level: String) -> Self {
        AccessEntry { database, level, status: None, last_error: None }
    }
}

/// A database user, as in `{"user": {...}}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    pub name: String,
    pub role: &'static str,
    /// Shown only to tokens with `database:view_credentials`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub settings: UserSettings,
    /// `ready`, `pending` (see `last_error`), `conflict`, `deleting`, or `expired` (past its
    /// `settings.valid_until`: no login is accepted).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The user's access level per database (pgplane extension; see
    /// `GET …/users/{username}/access`). Shown by the users endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AccessEntry>>,
    /// Present for a lease (pgplane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    /// The role the password logs in as, when it is not `name`: after a rotation with a grace,
    /// the user's second login, which acts as the user (pgplane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// While a rotation's grace runs: the login the old password still works on, and until
    /// when (pgplane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<GraceView>,
}

/// What a user shows when its stored credentials cannot be opened.
const UNOPENED: &str = "its stored credentials cannot be opened with the configured secret key";

impl UserView {
    /// The user as shown to a caller; the password only when given its cluster's `passwords`
    /// (the caller holds `database:view_credentials`). A user whose stored credentials cannot
    /// be opened is shown without them, saying so in its `last_error`, rather than failing a
    /// whole listing.
    pub fn of(user: &User, passwords: Option<&mut ClusterCredentials<'_>>, primary_user: &str) -> Self {
        let (password, unopened) = match passwords.map(|p| p.password(user)) {
            None => (None, None),
            Some(Ok(password)) => (Some(password), None),
            Some(Err(_)) => (None, Some(UNOPENED.to_string())),
        };
        // The clock is read only for a user with an expiry or a grace (not once per user).
        let now = (user.valid_until.is_some() || user.grace_until.is_some()).then(Utc::now);
        Self {
            name: user.name.clone(),
            role: user.role.as_str(),
            password,
            settings: UserSettings {
                pg_allow_replication: user.allow_replication,
                connection_limit: user.connection_limit,
                parameters: user.parameters.iter().map(ParameterView::from).collect(),
                valid_until: user.valid_until.as_ref().map(rfc3339),
            },
            status: match user.shown_status() {
                ShownStatus::Ready if now.is_some_and(|now| user.expired_at(now)) => "expired",
                shown => shown.as_str(),
            },
            last_error: user.last_error.clone().or(unopened),
            created_at: rfc3339(&user.created_at),
            updated_at: rfc3339(&user.updated_at),
            access: None,
            lease: user.lease_seconds.map(|ttl_seconds| LeaseView {
                ttl_seconds,
                reassign_to: user.reassign_to.clone().unwrap_or_else(|| primary_user.to_string()),
            }),
            login: (user.login() != user.name).then(|| user.login().to_string()),
            grace: now
                .and_then(|now| user.in_grace(now))
                .zip(user.grace_until.as_ref())
                .map(|(login, until)| GraceView { login: login.to_string(), until: rfc3339(until) }),
        }
    }
}

/// `users` as an answer shows them (a JSON array), with their passwords when given their
/// cluster's `passwords`, each with the access levels `access` gives it; and when the clock
/// alone next changes what they show, after `now` (read before the users were).
pub(crate) fn users_json<'a>(
    users: impl IntoIterator<Item = &'a User>,
    mut passwords: Option<ClusterCredentials<'_>>,
    primary_user: &str,
    access: impl Fn(&User) -> Option<Vec<AccessEntry>>,
    now: DateTime<Utc>,
) -> Result<Rendering, ApiError> {
    let mut fresh_until = None;
    let views: Vec<UserView> = users
        .into_iter()
        .map(|user| {
            fresh_until = fresh_until.into_iter().chain(shown_until(user, now)).min();
            UserView { access: access(user), ..UserView::of(user, passwords.as_mut(), primary_user) }
        })
        .collect();
    let body = serde_json::value::to_raw_value(&views).map_err(|_| ApiError::internal())?;
    Ok(Rendering { body, fresh_until })
}

/// When the clock alone next changes how `user` is shown, after `now`: its expiry (it shows
/// `expired` from then) or the end of its rotation's grace (its `grace` goes), whichever comes
/// first; None when neither is ahead.
fn shown_until(user: &User, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    [user.valid_until, user.grace_until].into_iter().flatten().filter(|t| *t > now).min()
}

/// A database, as in `{"db": {...}}`: just `{"name"}` when it is in sync, as DigitalOcean
/// answers; `status` and `last_error` appear while it is not.
#[derive(Serialize, ToSchema)]
pub(crate) struct DbView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl DbView {
    pub fn of(db: &Database) -> Self {
        let status = db.shown_status().as_str();
        Self {
            name: db.name.clone(),
            status: (status != "ready").then_some(status),
            last_error: db.last_error.clone(),
        }
    }
}

/// A connection description, as DigitalOcean's `connection` object.
#[derive(Serialize, ToSchema, Clone)]
pub(crate) struct ConnectionView {
    pub uri: String,
    pub database: String,
    pub host: String,
    pub port: i32,
    pub user: String,
    /// Shown only to tokens with `database:view_credentials`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub ssl: bool,
}

impl ConnectionView {
    /// The connection of `user` to the cluster's default database; the URI carries the
    /// password only when it is given.
    fn new(cluster: &Cluster, user: &str, password: Option<&str>) -> Self {
        Self::at(&cluster.host, cluster.port, &cluster.default_database, user, password, &cluster.sslmode)
    }

    /// The connection of `user` to `database` at `host:port`.
    pub fn at(
        host: &str,
        port: i32,
        database: &str,
        user: &str,
        password: Option<&str>,
        sslmode: &str,
    ) -> Self {
        let bracketed = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        let userinfo = match password {
            Some(p) => format!(
                "{}:{}",
                utf8_percent_encode(user, URI_COMPONENT),
                utf8_percent_encode(p, URI_COMPONENT)
            ),
            None => utf8_percent_encode(user, URI_COMPONENT).to_string(),
        };
        let uri = format!(
            "postgresql://{userinfo}@{bracketed}:{port}/{}?sslmode={sslmode}",
            utf8_percent_encode(database, URI_COMPONENT),
        );
        Self {
            uri,
            database: database.to_string(),
            host: host.to_string(),
            port,
            user: user.to_string(),
            password: password.map(str::to_owned),
            ssl: sslmode != "disable",
        }
    }
}

/// pgplane's extension block: the registered target (never its password) and reconcile state.
#[derive(Serialize, ToSchema)]
pub(crate) struct TargetView {
    pub host: String,
    pub port: i32,
    pub user: String,
    pub database: String,
    pub sslmode: String,
    pub primary_user: String,
    pub default_database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconciled_at: Option<String>,
    /// In the registration's answer: what works differently on this server (passwords set by
    /// hand stored as MD5, what an admin role that is not a superuser cannot do).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

/// A database cluster, as in `{"database": {...}}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterView {
    pub id: Uuid,
    pub name: String,
    pub engine: &'static str,
    pub version: String,
    pub semantic_version: String,
    pub num_nodes: i32,
    pub size: String,
    pub region: String,
    pub status: String,
    pub created_at: String,
    /// The network the cluster's server is reached on: one id per server address (pgplane
    /// knows no separate private network; clusters on the same server share it).
    pub private_network_uuid: Uuid,
    /// The team that owns the cluster.
    pub project_id: Uuid,
    pub tags: Vec<String>,
    pub db_names: Vec<String>,
    pub connection: ConnectionView,
    /// The same as `connection`: a server you run yourself is reached on one network.
    pub private_connection: ConnectionView,
    /// Trusted sources (see `GET …/firewall`).
    pub rules: Vec<FirewallRuleView>,
    /// Rendered by [`users_json`] (and kept: see `rendered`).
    #[schema(value_type = Vec<UserView>)]
    pub users: Box<RawValue>,
    /// Always null: maintenance is up to the server's operator.
    #[schema(value_type = Option<Object>)]
    pub maintenance_window: Option<()>,
    /// When the PostgreSQL project ends support for the server's major version (the date of
    /// its last release); null for a version pgplane does not know.
    pub version_end_of_life: Option<String>,
    /// Always null: nobody stops offering a server you run yourself.
    #[schema(value_type = Option<String>)]
    pub version_end_of_availability: Option<()>,
    /// Always empty: pgplane has no metrics endpoint per cluster (its own is `/metrics`).
    #[schema(value_type = Vec<Object>)]
    pub metrics_endpoints: [(); 0],
    pub storage_size_mib: i64,
    pub pgplane: TargetView,
}

impl ClusterView {
    /// The cluster as shown to a caller, with its `users` rendered already and its `primary`
    /// user's row; passwords only when `reveal`.
    pub fn of(
        cluster: &Cluster,
        users: Box<RawValue>,
        primary: Option<&User>,
        dbs: &[Database],
        rules: &[FirewallRule],
        credentials: &CredentialsCache,
        reveal: bool,
    ) -> Result<Self, ApiError> {
        let primary_password = primary.filter(|_| reveal).and_then(|u| credentials.password(u).ok());
        // After a rotation with a grace, the primary user's password logs in as its second login.
        let primary_login = primary.map_or(cluster.primary_user.as_str(), User::login).to_string();
        let connection = ConnectionView::new(cluster, &primary_login, primary_password.as_deref());
        Ok(Self {
            id: cluster.cluster_id,
            name: cluster.name.clone(),
            engine: "pg",
            version: (cluster.server_version_num / 10000).to_string(),
            semantic_version: cluster
                .server_version
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            num_nodes: cluster.num_nodes,
            size: cluster.size.clone(),
            region: cluster.region.clone(),
            status: cluster.status.as_str().into(),
            created_at: rfc3339(&cluster.created_at),
            private_network_uuid: network_id(&cluster.host, cluster.port),
            project_id: cluster.team_id,
            tags: cluster.tags.clone(),
            db_names: dbs
                .iter()
                .filter(|d| d.desired() == DesiredState::Present)
                .map(|d| d.name.clone())
                .collect(),
            connection: connection.clone(),
            private_connection: connection,
            rules: rules.iter().map(FirewallRuleView::of).collect(),
            users,
            maintenance_window: None,
            version_end_of_life: end_of_life(cluster.server_version_num / 10000).map(str::to_string),
            version_end_of_availability: None,
            metrics_endpoints: [],
            storage_size_mib: 0,
            pgplane: TargetView {
                host: cluster.host.clone(),
                port: cluster.port,
                user: cluster.admin_user.clone(),
                database: cluster.admin_database.clone(),
                sslmode: cluster.sslmode.clone(),
                primary_user: cluster.primary_user.clone(),
                default_database: cluster.default_database.clone(),
                last_error: cluster.last_error.clone(),
                last_reconciled_at: cluster.last_reconciled_at.as_ref().map(rfc3339),
                notices: Vec::new(),
            },
        })
    }
}

/// `{"database": cluster}`
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterResponse {
    pub database: ClusterView,
}

/// `{"databases": [cluster, ...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct ClustersResponse {
    pub databases: Vec<ClusterView>,
}

/// `{"user": user}`
#[derive(Serialize, ToSchema)]
pub(crate) struct UserResponse {
    pub user: UserView,
}

/// `{"users": [user, ...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct UsersResponse {
    pub users: Vec<UserView>,
}

/// `{"db": db}`
#[derive(Serialize, ToSchema)]
pub(crate) struct DbResponse {
    pub db: DbView,
}

/// `{"dbs": [db, ...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct DbsResponse {
    pub dbs: Vec<DbView>,
}

/// The id of the network a server address is on, the same for every cluster registered there
/// (a name-based UUID: the first 16 bytes of a SHA-256 of the address, as UUID version 8).
/// The end of the PostgreSQL project's support for a major version (its final release, by the
/// versioning policy on postgresql.org: five years after the first release).
fn end_of_life(major: i32) -> Option<&'static str> {
    Some(match major {
        13 => "2025-11-13T00:00:00Z",
        14 => "2026-11-12T00:00:00Z",
        15 => "2027-11-11T00:00:00Z",
        16 => "2028-11-09T00:00:00Z",
        17 => "2029-11-08T00:00:00Z",
        18 => "2030-11-14T00:00:00Z",
        _ => return None,
    })
}

/// A cluster's `private_network_uuid`: a UUID (version 8) drawn from its server's address, the same for
/// every cluster reached there.
fn network_id(host: &str, port: i32) -> Uuid {
    let digest = Sha256::digest(format!("pgplane network {host}:{port}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// A trusted source, as DigitalOcean's firewall rule.
#[derive(Serialize, ToSchema)]
pub(crate) struct FirewallRuleView {
    pub uuid: Uuid,
    pub cluster_uuid: Uuid,
    /// Always `ip_addr`: a host address or a CIDR network.
    #[schema(example = "ip_addr")]
    pub r#type: String,
    #[schema(example = "192.168.1.0/24")]
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
}

impl FirewallRuleView {
    pub fn of(rule: &FirewallRule) -> Self {
        Self {
            uuid: rule.rule_id,
            cluster_uuid: rule.cluster_id,
            r#type: rule.r#type.clone(),
            value: rule.value.clone(),
            description: rule.description.clone(),
            created_at: rfc3339(&rule.created_at),
        }
    }
}

/// How long a pooler may stay silent before its pools are shown as unserved.
const POOLER_SILENCE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// A connection pool, as in `{"pool": {...}}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolView {
    #[schema(example = "backend-pool")]
    pub name: String,
    /// `session`, `transaction` or `statement`.
    pub mode: &'static str,
    /// The most server connections the pool uses.
    pub size: i32,
    pub db: String,
    /// The user the pool logs in to the server as; empty: each client's own.
    pub user: String,
    /// Through the pool: its database is the pool's name.
    pub connection: ConnectionView,
    /// The same as `connection` (one network).
    pub private_connection: ConnectionView,
    /// `ready` (PgBouncer runs it as asked), `pending` (the pooler has not applied the last
    /// change yet) or `error` (see `last_error`) (pgplane extension).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl PoolView {
    /// The pool as shown to a caller; `login`: the login its connection names (its fixed
    /// user's current one) and that login's password, when the caller may see it.
    pub fn of(pool: &Pool, listener: Option<&PoolListener>, login: Option<(&str, Option<&str>)>) -> Self {
        let (host, port) = listener.map_or(("", 0), |l| (l.host.as_str(), l.port));
        let (login, password) = login.unwrap_or(("", None));
        // PgBouncer takes clients in plaintext (pgplane does not give it a certificate).
        let connection = ConnectionView::at(host, port, &pool.name, login, password, "disable");
        let silent = listener.filter(|l| Utc::now() - l.heartbeat_at > POOLER_SILENCE).map(|l| {
            format!(
                "the pooler beside this cluster's server has not reported since {}: is `pgplane pooler` running?",
                rfc3339(&l.heartbeat_at)
            )
        });
        let last_error = pool.last_error.clone().or(silent);
        let status = match (&last_error, pool.applied_generation >= pool.generation) {
            (Some(_), _) => "error",
            (None, false) => "pending",
            (None, true) => "ready",
        };
        Self {
            name: pool.name.clone(),
            mode: pool.mode.as_str(),
            size: pool.size,
            db: pool.database_name.clone(),
            user: pool.user_name.clone().unwrap_or_default(),
            private_connection: connection.clone(),
            connection,
            status,
            last_error,
        }
    }
}

/// `{"pool": pool}`
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolResponse {
    pub pool: PoolView,
}

/// `{"pools": [pool, ...]}`
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolsResponse {
    pub pools: Vec<PoolView>,
}
