//! Rows of the metadata database, as the store reads them. Secrets stay sealed here; callers
//! open them with the `Sealer` when they need them.

use chrono::{DateTime, Utc};

use crate::lifecycle::{ClusterStatus, DesiredState, SyncStatus, UserRole};
use crate::parameters::RoleParameter;
use uuid::Uuid;

/// The bootstrap team created by the first migration.
pub const DEFAULT_TEAM_ID: Uuid = Uuid::from_u128(1);

/// A registered target server and the cluster pgplane presents for it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cluster {
    pub cluster_id: Uuid,
    pub team_id: Uuid,
    pub name: String,
    pub region: String,
    pub size: String,
    pub num_nodes: i32,
    pub tags: Vec<String>,
    pub host: String,
    pub port: i32,
    pub admin_user: String,
    pub admin_password_sealed: Vec<u8>,
    pub admin_database: String,
    pub sslmode: String,
    pub primary_user: String,
    pub default_database: String,
    pub server_version_num: i32,
    pub server_version: String,
    pub status: ClusterStatus,
    pub generation: i64,
    pub reconciled_generation: i64,
    pub last_error: Option<String>,
    pub last_reconciled_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// PEM of the CA that `verify-full` checks the target's certificate against.
    pub ca_certificate: Option<String>,
    /// When a full pass (every object compared, drift repaired) last finished without error.
    pub last_resync_at: Option<DateTime<Utc>>,
    /// The server's identity, `<system_identifier>:<port>` (see [`server_id`]); None for a
    /// cluster registered before pgplane recorded it, until its next pass learns it.
    pub server_id: Option<String>,
    /// The version of the cluster's users listing: it moves in every transaction that changes
    /// the cluster's users (their parameters and access levels too) or databases (see the
    /// migration `listing_versions`). None where it was not read (a pass does not need it).
    pub listing_version: Option<i64>,
}

/// A server's identity as pgplane records it: what the server is (its system identifier, the
/// same on a primary and its physical standbys, and the port it is configured with), not the
/// name or address it was reached by.
pub fn server_id(system_identifier: i64, port: i32) -> String {
    format!("{system_identifier}:{port}")
}

/// What a server found at a cluster's address is to the cluster (the server-identity rule): a
/// cluster's names are read and changed only on the server it was registered on (or confirmed
/// moved to), never on another that an address now leads to (DNS, a failover to the wrong host,
/// a re-used port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerIdentity<'a> {
    /// The server the cluster is registered on.
    Registered,
    /// Another server than the `registered` one.
    Other { registered: &'a str },
    /// The cluster was registered before pgplane recorded server identities: not known yet
    /// (its next pass learns it).
    Unknown,
}

impl Cluster {
    /// What the server identified as `found` (see [`server_id`]) is to this cluster.
    pub fn identify_server(&self, found: &str) -> ServerIdentity<'_> {
        match self.server_id.as_deref() {
            Some(registered) if registered == found => ServerIdentity::Registered,
            Some(registered) => ServerIdentity::Other { registered },
            None => ServerIdentity::Unknown,
        }
    }

    /// The additional-data context that binds the sealed admin password to this cluster.
    pub fn admin_password_context(cluster_id: Uuid) -> String {
        format!("clusters:{cluster_id}:admin_password")
    }
}

/// A PostgreSQL role pgplane manages on a cluster.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub cluster_id: Uuid,
    pub name: String,
    pub role: UserRole,
    pub credentials_sealed: Vec<u8>,
    pub allow_replication: bool,
    /// Connections it may open at once (-1: no limit).
    pub connection_limit: i32,
    /// Session parameters set at each login ([`crate::parameters`]), in every database or in
    /// one of the cluster's.
    pub parameters: Parameters,
    pub state: DesiredState,
    pub generation: i64,
    pub applied_generation: i64,
    pub sync_status: SyncStatus,
    pub last_error: Option<String>,
    pub claimed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Once its deletion is requested: the role what it owns is handed to (None: the primary
    /// user). For a lease, from its creation.
    pub reassign_to: Option<String>,
    /// When the server stops accepting its logins (None: never).
    pub valid_until: Option<DateTime<Utc>>,
    /// When a pass after `valid_until` ended its sessions (None: not yet, or no expiry).
    pub expiry_enforced_at: Option<DateTime<Utc>>,
    /// For a lease: how far a renewal moves `valid_until`, in seconds; at `valid_until` its
    /// deletion is requested. None for every other user.
    pub lease_seconds: Option<i32>,
    /// The second login role that alternates with the user's own in rotations with a grace
    /// period (None until the first): a member of the user's role that acts as it.
    pub alternate_login: Option<String>,
    /// pgplane created the alternate login on the target.
    pub alternate_claimed: bool,
    /// `credentials_sealed` are the alternate login's (else the user's own role's).
    pub alternate_active: bool,
    /// The other login's credentials (sealed under [`User::other_credentials_context`]).
    pub other_credentials_sealed: Option<Vec<u8>>,
    /// Until when the other login still accepts logins (None: it accepts none).
    pub grace_until: Option<DateTime<Utc>>,
    /// Raised by every change to its access levels (see [`AccessProgress`]): 0 while it has
    /// never had any.
    pub access_generation: i64,
}

impl User {
    pub fn is_primary(&self) -> bool {
        self.role == UserRole::Primary
    }
    /// Whether the server refuses its logins at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.valid_until.is_some_and(|t| t <= now)
    }
    /// The additional-data context that binds sealed credentials to this user.
    pub fn credentials_context(cluster_id: Uuid, name: &str) -> String {
        format!("cluster_users:{cluster_id}:{name}")
    }
    /// The context of the other login's credentials (`other_credentials_sealed`).
    pub fn other_credentials_context(cluster_id: Uuid, name: &str) -> String {
        format!("cluster_users:{cluster_id}:{name}:other")
    }
    /// The role its current credentials log in as: its own, or its alternate login.
    pub fn login(&self) -> &str {
        match (&self.alternate_login, self.alternate_active) {
            (Some(alternate), true) => alternate,
            _ => &self.name,
        }
    }
    /// The login that is not the current one, while it still accepts logins at `now`.
    pub fn in_grace(&self, now: DateTime<Utc>) -> Option<&str> {
        let other = match (&self.alternate_login, self.alternate_active) {
            (Some(_), true) => self.name.as_str(),
            (Some(alternate), false) => alternate.as_str(),
            (None, _) => return None,
        };
        self.grace_until.is_some_and(|t| t > now).then_some(other)
    }
}

/// A user's parameters as the store reads them (one JSON array).
pub type Parameters = sqlx::types::Json<Vec<RoleParameter>>;

/// The settings of a new user.
#[derive(Debug, Clone, Default)]
pub struct UserSettings {
    pub allow_replication: bool,
    /// -1: no limit.
    pub connection_limit: i32,
    pub parameters: Vec<RoleParameter>,
    /// When the server stops accepting its logins (None: never).
    pub valid_until: Option<DateTime<Utc>>,
    /// A lease: its lifetime in seconds (see [`User::lease_seconds`]) and its heir.
    pub lease: Option<Lease>,
}

/// What makes a new user a lease: how long it lives (and each renewal extends it), and who
/// inherits what it owns when it ends (None: the primary user).
#[derive(Debug, Clone)]
pub struct Lease {
    pub seconds: i32,
    pub heir: Option<String>,
}

/// A change of a user's settings: REPLICATION as given (DigitalOcean's `PUT` replaces it), the
/// pgplane extensions only when given.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub allow_replication: bool,
    pub connection_limit: Option<i32>,
    pub parameters: Option<Vec<RoleParameter>>,
    /// A new expiry: `Some(None)` removes it.
    pub valid_until: Option<Option<DateTime<Utc>>>,
}

/// A database pgplane manages on a cluster.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Database {
    pub cluster_id: Uuid,
    pub name: String,
    pub is_default: bool,
    pub state: DesiredState,
    pub generation: i64,
    pub applied_generation: i64,
    pub sync_status: SyncStatus,
    pub last_error: Option<String>,
    pub claimed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored API token (its hash, never the token).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiToken {
    pub token_id: String,
    pub team_id: Uuid,
    pub name: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token with the name of its team, for listings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenListing {
    #[sqlx(flatten)]
    pub token: ApiToken,
    pub team_name: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub event_id: i64,
    pub at: DateTime<Utc>,
    pub team_id: Uuid,
    pub token_id: String,
    pub action: String,
    pub cluster_id: Option<Uuid>,
    pub object: Option<String>,
    pub status: i32,
    pub request_id: Option<String>,
    /// A JSON object: what the request chose beyond its path, if anything.
    pub detail: Option<String>,
}

/// Something found changed on a target behind pgplane's back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DriftEvent {
    pub event_id: i64,
    pub cluster_id: Uuid,
    /// "user" or "database".
    pub kind: String,
    pub name: String,
    pub description: String,
    pub found_at: DateTime<Utc>,
    pub repaired_at: Option<DateTime<Utc>>,
}

crate::lifecycle::lifecycle_columns!(User);
crate::lifecycle::lifecycle_columns!(Database);

/// One access level a user holds on a database of its cluster (desired state).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessGrant {
    pub user_name: String,
    pub database_name: String,
    /// An [`AccessLevel`](crate::access::AccessLevel) name.
    pub level: String,
}

impl AccessGrant {
    /// The grant's level (rows are checked by the table's constraint).
    pub fn level(&self) -> crate::access::AccessLevel {
        crate::access::AccessLevel::parse(&self.level).unwrap_or(crate::access::AccessLevel::ReadOnly)
    }
}

/// How far a user's access levels have been carried out on the target.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessProgress {
    pub name: String,
    pub access_generation: i64,
    pub access_applied_generation: i64,
    pub access_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// How a pool lends its server connections (PgBouncer's `pool_mode`): for a client's whole
/// session, for one transaction, or for one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [PoolMode::Session, PoolMode::Transaction, PoolMode::Statement]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// A connection pool of a cluster: PgBouncer's database `name`, leading to `database_name` as
/// `user_name` (None: as each client's own user), with at most `size` server connections.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pool {
    pub cluster_id: Uuid,
    pub name: String,
    pub mode: PoolMode,
    pub size: i32,
    pub database_name: String,
    pub user_name: Option<String>,
    /// Moves with every change; the pooler sets `applied_generation` to it once PgBouncer runs
    /// the change.
    pub generation: i64,
    pub applied_generation: i64,
    /// Why the pooler cannot run the pool as asked, if it cannot.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a pool is asked to be (creation, or a `PUT` that replaces it).
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub mode: PoolMode,
    pub size: i32,
    pub database_name: String,
    pub user_name: Option<String>,
}

/// Where a cluster's pools are served: the pooler's host and the port of the cluster's
/// PgBouncer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PoolListener {
    pub host: String,
    pub port: i32,
    /// When the pooler last said it was alive.
    pub heartbeat_at: DateTime<Utc>,
}

/// A trusted source: an address (`ip_addr`, a host or a CIDR network) allowed to log in through
/// the cluster's pools.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FirewallRule {
    pub rule_id: Uuid,
    pub cluster_id: Uuid,
    pub r#type: String,
    pub value: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One entry of a cluster's event log (`GET …/events`): a change made through the API, or drift
/// found and repaired.
#[derive(Debug, Clone)]
pub struct ClusterEvent {
    pub id: String,
    /// What happened: `cluster_register`, `user_create`, `pool_delete`, `user_drift_repaired`, ...
    pub action: String,
    /// The user, database or pool it happened to, when there is one.
    pub object: Option<String>,
    pub at: DateTime<Utc>,
}
