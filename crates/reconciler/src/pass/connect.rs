//! Connecting and observing: unsealing what a pass needs (the admin connection, each role's
//! verifier), the pass's sessions on the target, and the check that the target is still the
//! server the cluster is registered on.

use std::cell::Cell;
use std::time::Duration;

use chrono::{DateTime, Utc};

use pgplane_core::credentials::{ClusterCredentials, CredentialsCache, Login};
use pgplane_core::lifecycle::{DesiredState, Lifecycle, ObjectKind};
use pgplane_core::model::{Cluster, Database, ServerIdentity, User};
use pgplane_target_server::{TargetError, TargetSpec};
use tokio_postgres::Client;

use super::RoleItem;
use crate::controller::Shared;
use crate::observe::{observe, Names, Observed};
use crate::plan::{waits_for_a_database, DesiredRole, WAITING_DATABASE};
use crate::pools::{Object, Pool, Pools};

/// The target, reached and observed.
pub(super) struct Opened {
    /// The admin connection, its address checked against the target policy.
    pub spec: TargetSpec,
    pub pool: Pool,
    /// A session to the admin database.
    pub client: Object,
    pub observed: Observed,
}

/// What the passes made under one hold of a cluster's lock (`controller::locked_pass`) need to
/// do only once.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    /// What dead processes of this deployment left on the target was looked for (and ended)
    /// since the lock was taken. No process can begin work on the cluster while this one holds
    /// its lock, so nothing can be left there since: the passes after the first need not ask
    /// the metadata database about the other processes they see there.
    leftovers_ended: bool,
}

/// Checks the target's address against the policy, takes a session from the pool of its admin
/// connection, observes what the pass's objects look like there and checks that it is the
/// cluster's server; the first time under `hold`, ends what dead processes left there.
pub(super) async fn open(
    shared: &Shared,
    cluster: &Cluster,
    spec: TargetSpec,
    roles: &[RoleItem],
    databases: &[Database],
    hold: &mut Hold,
) -> Result<Opened, TargetError> {
    let spec = spec.checked(&shared.config.target_policy).await?;
    let pool = shared.pools.get(cluster.cluster_id, &spec, shared.config.session_limits)?;
    let client = pool.get().await?;
    let names = names_to_observe(roles, databases);
    let mut observed = observe(&client, &names, cluster, client.known()).await?;
    client.remember(observed.known());
    check_server(shared, cluster, &observed).await?;
    if !hold.leftovers_ended {
        if end_what_the_dead_left(shared, &client, &observed.others_here).await? {
            observed = observe(&client, &names, cluster, client.known()).await?;
        }
        hold.leftovers_ended = true;
    }
    Ok(Opened { spec, pool, client, observed })
}

/// How long a pass waits for the sessions it ended to be gone.
const DEAD_SESSIONS_WAIT: Duration = Duration::from_secs(5);

/// Ends the sessions on the target that processes of this deployment which died mid-pass left
/// (among the other processes `others` with sessions there): the cluster's lock went with such
/// a process, but a statement it sent (a `CREATE ROLE` of the pass it was making) may still be
/// running or waiting to be read, and would land after this pass observed the catalogs. Waits
/// until they are gone, their transactions rolled back or committed. True when there were
/// some: the catalogs must be read again. Sessions of live processes and of other deployments
/// are left alone.
async fn end_what_the_dead_left(
    shared: &Shared,
    client: &Client,
    others: &[String],
) -> Result<bool, TargetError> {
    if others.is_empty() {
        return Ok(false);
    }
    let dead = shared.store.dead_processes(others).await?;
    if dead.is_empty() {
        return Ok(false);
    }
    let ended: Vec<i32> = client
        .query(
            "SELECT pid FROM (SELECT pid FROM pg_catalog.pg_stat_activity
                               WHERE usename = current_user AND application_name = ANY($1) OFFSET 0) s
              WHERE pg_catalog.pg_terminate_backend(pid)",
            &[&dead],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    tracing::info!(processes = ?dead, sessions = ended.len(), "ended the sessions a dead pgplane process left on the target");
    let deadline = tokio::time::Instant::now() + DEAD_SESSIONS_WAIT;
    loop {
        let left: i64 = client
            .query_one("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = ANY($1)", &[&ended])
            .await?
            .get(0);
        if left == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TargetError::Busy(format!(
                "{left} session(s) a stopped pgplane process left on the target did not end within {} s",
                DEAD_SESSIONS_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The most sessions a pass spreads its role steps, its database creations or its database
/// drops over.
const MAX_SESSIONS: usize = 4;

/// The pass's sessions: `client`, and more from the pool (up to [`MAX_SESSIONS`] in all, at
/// least two of the `steps` in one phase each) while it has one to spare at once: each role
/// step costs the server a few milliseconds of CPU, and each database creation tens (it copies
/// a template), which sessions in parallel spread over its cores, and database drops under way
/// together share their checkpoints. Until the role steps
/// say otherwise, each may be left with logging off (see [`Sessions`]).
pub(super) async fn sessions(pool: &Pool, client: Object, steps: usize, observed: &Observed) -> Sessions {
    let mut objects = vec![client];
    while objects.len() < MAX_SESSIONS && steps >= 2 * objects.len() {
        match Pools::spare(pool).await {
            Some(helper) => objects.push(helper),
            None => break,
        }
    }
    let sessions = Sessions::new(objects);
    sessions.set_restored(sessions.objects.iter().map(|_| !observed.admin_is_superuser));
    sessions
}

/// The pass's sessions on the target. A session that may still have statement logging turned
/// off (its role steps did not get as far as restoring it) is closed when the pass ends,
/// however it ends, instead of going back to the pool.
pub(super) struct Sessions {
    objects: Vec<Object>,
    restored: Vec<Cell<bool>>,
}

impl Sessions {
    fn new(objects: Vec<Object>) -> Self {
        let restored = objects.iter().map(|_| Cell::new(true)).collect();
        Self { objects, restored }
    }

    pub(super) fn clients(&self) -> Vec<&Client> {
        self.objects.iter().map(|o| &****o).collect()
    }

    /// Marks whether each session's logging settings are as they were.
    pub(super) fn set_restored(&self, restored: impl IntoIterator<Item = bool>) {
        for (cell, value) in self.restored.iter().zip(restored) {
            cell.set(value);
        }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for (object, restored) in self.objects.drain(..).zip(&self.restored) {
            if !restored.get() {
                drop(Object::take(object));
            }
        }
    }
}

/// A pass changes only the server the cluster was registered on (or confirmed moved to): a
/// target address that now leads to another server (DNS, a failover to the wrong host, a
/// re-used port) is refused before any step. A cluster registered before pgplane recorded
/// server identities learns it here, claiming its names on that server.
async fn check_server(shared: &Shared, cluster: &Cluster, observed: &Observed) -> Result<(), TargetError> {
    match cluster.identify_server(&observed.server_id) {
        ServerIdentity::Registered => Ok(()),
        ServerIdentity::Other { registered: expected } => Err(TargetError::Refused(format!(
            "the server at {}:{} is not the one this cluster is registered on (server {}, registered \
             {expected}); pgplane changed nothing there. If the cluster moved, confirm it with \
             PUT /v2/databases/{}/pgplane and \"confirm_move\": true",
            cluster.host, cluster.port, observed.server_id, cluster.cluster_id
        ))),
        ServerIdentity::Unknown => {
            Ok(shared.store.learn_server_id(cluster.cluster_id, &observed.server_id).await?)
        }
    }
}

/// A user left out of a pass because its stored credentials cannot be opened (the secret key
/// changed without it, or the row was damaged), with the reason recorded on it.
pub(super) struct Unopened {
    pub(super) user: User,
    pub(super) reason: String,
}

/// What a pass (or a preview) observes: its roles and databases, the databases its roles'
/// parameters name (a parameter is set in a database only when it is the cluster's), the
/// sessions of its expired roles and the memberships of its alternate logins.
pub(super) fn names_to_observe<'a>(roles: &'a [RoleItem], databases: &'a [Database]) -> Names<'a> {
    let names_of = |keep: fn(&DesiredRole) -> bool| -> Vec<&'a str> {
        roles.iter().filter(|r| keep(&r.desired)).map(|r| r.desired.name.as_str()).collect()
    };
    let mut db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    db_names
        .extend(roles.iter().flat_map(|r| r.desired.parameters.iter().filter_map(|p| p.database.as_deref())));
    db_names.sort_unstable();
    db_names.dedup();
    Names {
        roles: names_of(|_| true),
        databases: db_names,
        sessions_of: names_of(|r| r.expired),
        memberships_of: names_of(|r| r.acts_as.is_some()),
    }
}

/// Holds back the roles with a parameter whose database is not the cluster's on the target yet:
/// their step ends failed, saying so, until it is (see [`waits_for_a_database`]).
pub(super) fn hold_waiting_parameters(roles: &mut [RoleItem], observed: &Observed, primary_user: &str) {
    for role in roles.iter_mut().filter(|r| r.desired.withheld.is_none()) {
        if waits_for_a_database(&role.desired, observed, primary_user) {
            role.desired.withheld = Some(WAITING_DATABASE);
        }
    }
}

/// Unseals what the pass needs: the admin connection and the verifier of each role that should
/// exist (a role to be dropped needs none); a role whose expiry is not after `now` has expired.
/// A user with an alternate login (see `pgplane_core::model::User::alternate_login`) gives two
/// roles: its own and that login, each with its credentials, the one that is not current
/// accepting logins only during its grace. A user whose credentials cannot be opened is left
/// out of the pass and returned apart: it fails alone, the rest of the cluster goes ahead.
pub(super) fn prepare(
    credentials: &CredentialsCache,
    cluster: &Cluster,
    users: Vec<User>,
    now: DateTime<Utc>,
) -> Result<(TargetSpec, Vec<RoleItem>, Vec<Unopened>), TargetError> {
    let spec = TargetSpec::of(cluster, credentials.sealer())?;
    let mut opened = credentials.of_cluster(cluster.cluster_id);
    let mut roles = Vec::with_capacity(users.len());
    let mut unopened = Vec::new();
    for user in users {
        match logins_of(&mut opened, &user, now) {
            Ok(logins) => {
                // The end of a rotation's grace changes what a login should be, and is no drift.
                let watched = user.watched_for_drift() && user.grace_until.is_none_or(|t| t > now);
                roles.extend(logins.into_iter().map(|(desired, alternate)| RoleItem {
                    desired,
                    user: user.clone(),
                    alternate,
                    watched,
                }))
            }
            Err(e) => unopened.push(Unopened { user, reason: e.to_string() }),
        }
    }
    Ok((spec, roles, unopened))
}

/// The roles a user is on the target: its own, and its alternate login when it has one (marked
/// true), with what each should be at `now`.
fn logins_of(
    opened: &mut ClusterCredentials<'_>,
    user: &User,
    now: DateTime<Utc>,
) -> Result<Vec<(DesiredRole, bool)>, TargetError> {
    let state = user.desired();
    let in_grace = user.in_grace(now);
    let own = DesiredRole {
        name: user.name.clone(),
        primary: user.is_primary(),
        allow_replication: user.allow_replication,
        verifier: String::new(),
        state,
        claimed: user.claimed,
        changed: user.applied_generation < user.generation,
        reassign_to: user.reassign_to.clone(),
        withheld: None,
        connection_limit: user.connection_limit,
        parameters: user.parameters.0.clone(),
        valid_until: user.valid_until.map(|t| t.timestamp_micros()),
        expired: user.expired_at(now),
        login: true,
        acts_as: None,
    };
    let alternate = user.alternate_login.as_ref().map(|name| DesiredRole {
        name: name.clone(),
        primary: false,
        allow_replication: false,
        claimed: user.alternate_claimed,
        acts_as: Some(user.name.clone()),
        ..own.clone()
    });
    let mut logins: Vec<(DesiredRole, bool)> =
        std::iter::once((own, false)).chain(alternate.map(|a| (a, true))).collect();
    for (role, _) in &mut logins {
        let current = role.name == user.login();
        role.login = current || in_grace == Some(role.name.as_str());
        role.expired |= !role.login;
        // A role to be dropped needs no verifier.
        if state == DesiredState::Present {
            role.verifier = if current {
                opened.verifier(user, Login::Current)?
            } else if user.other_credentials_sealed.is_some() {
                opened.verifier(user, Login::Other)?
            } else {
                return Err(TargetError::Internal("the credentials of its other login are missing".into()));
            };
        }
    }
    Ok(logins)
}

/// Records the failure of each user left out of the pass; returns the first, for the pass.
pub(super) async fn record_unopened(
    shared: &Shared,
    cluster: &Cluster,
    unopened: &[Unopened],
) -> Result<Option<String>, pgplane_core::Error> {
    for u in unopened {
        tracing::warn!(cluster.id = %cluster.cluster_id, name = %u.user.name, error = %u.reason, "user left out of the pass");
    }
    let left_out: Vec<(&str, &str)> =
        unopened.iter().map(|u| (u.user.name.as_str(), u.reason.as_str())).collect();
    shared.store.record_left_out(cluster.cluster_id, ObjectKind::User, &left_out).await?;
    Ok(unopened.first().map(|u| format!("user {:?}: {}", u.user.name, u.reason)))
}
