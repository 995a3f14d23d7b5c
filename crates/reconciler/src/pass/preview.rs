//! A pass that only looks: loads what a full pass would, observes the target with the pass's
//! own queries (roles, databases, what dropped roles own, the access groups, and per database
//! what the groups lack there), then renders the pass's own plan ([`plan_pass`]): every
//! phase, access levels included, verifiers redacted, drift marked as a pass would report it.
//! Nothing is written to the target or to the store; the sessions it opens are closed when the
//! plan is made. This is what `GET …/plan` shows.

use futures::stream::{self, StreamExt};
use pgplane_core::lifecycle::{DesiredState, Lifecycle};
use pgplane_core::model::{Cluster, ServerIdentity};
use pgplane_core::secrets::Sealer;
use pgplane_core::Store;
use pgplane_target_server::plan::{Plan, PlanFuture, Planner};
use pgplane_target_server::{SessionLimits, TargetError, TargetPolicy, TargetSpec};
use tokio_postgres::Client;

use super::access::VISITS_AT_ONCE;
use super::apply;
use super::connect::prepare;
use crate::controller::ReconcilerConfig;
use crate::observe::access::{observe_database, observe_groups, observe_schemas};
use crate::observe::observe;
use crate::plan::access::{self, DatabaseFacts, Group, Inputs};
use crate::plan::pass::{plan_pass, Seen, Wanted, WantedDatabase, WantedRole};
use crate::plan::DesiredDatabase;
use crate::pools::one_off;

/// Makes plans for the gateway (see [`Planner`]): what a full pass would do right now.
pub struct Previewer {
    store: Store,
    sealer: Sealer,
    policy: TargetPolicy,
    limits: SessionLimits,
    allow_replication: bool,
}

impl Previewer {
    /// A previewer that reaches targets as the reconciler configured by `config` does.
    pub fn new(store: Store, sealer: Sealer, config: &ReconcilerConfig) -> Self {
        Self {
            store,
            sealer,
            policy: config.target_policy.clone(),
            limits: config.session_limits,
            allow_replication: config.allow_replication_for_sole_tenants,
        }
    }

    /// Loads the desired state, observes the target (read-only, on sessions closed when the
    /// plan is made), then plans a full pass with [`plan_pass`].
    async fn preview(&self, cluster: &Cluster) -> Result<Plan, TargetError> {
        // Load.
        let id = cluster.cluster_id;
        let ((users, databases), pending) =
            tokio::try_join!(self.store.cluster_objects(id, false), self.store.pending_access(id))?;
        let (spec, mut roles, unopened) = prepare(&self.sealer, cluster, users)?;
        super::powers::withhold_replication(&self.store, self.allow_replication, cluster, &mut roles).await?;
        let spec = spec.checked(&self.policy).await?;
        // Observe: one session of its own, closed when the plan is made.
        let client = one_off(&spec, self.limits).await?;
        let role_names: Vec<&str> = roles.iter().map(|r| r.desired.name.as_str()).collect();
        let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let observed = observe(&client, &role_names, &db_names, &cluster.primary_user).await?;
        if matches!(cluster.identify_server(&observed.server_id), ServerIdentity::Other { .. }) {
            return Err(TargetError::Refused(format!(
                "the server at {}:{} is not the one this cluster is registered on; a pass would \
                 change nothing there",
                cluster.host, cluster.port
            )));
        }
        let access = self.store.access_for_pass(id, pending).await?;
        let inputs = Inputs::new(
            cluster,
            observed.version_num,
            observed.admin_is_superuser,
            true,
            &access,
            &databases,
        );
        let mut seen = Seen {
            observed: Some(&observed),
            admin_database: spec.admin_database().to_string(),
            ..Seen::default()
        };
        let dropped: Vec<&str> = roles
            .iter()
            .filter(|r| {
                r.desired.state == DesiredState::Absent && observed.roles.contains_key(&r.desired.name)
            })
            .map(|r| r.desired.name.as_str())
            .collect();
        if !dropped.is_empty() {
            for (database, owners) in
                apply::dependent_databases(&client, &dropped, spec.admin_database()).await?
            {
                for owner in owners {
                    seen.owned_in.entry(owner).or_default().push(database.clone());
                }
            }
        }
        let has_access = !inputs.groups.is_empty();
        if has_access {
            seen.groups = observe_groups(&client, &inputs).await?;
            self.observe_databases(&spec, &client, &inputs, &mut seen).await?;
        }

        // Plan.
        let wanted = Wanted {
            primary_user: &cluster.primary_user,
            roles: roles
                .iter()
                .map(|r| WantedRole { desired: &r.desired, watched: r.user.watched_for_drift() })
                .collect(),
            left_out: unopened.iter().map(|u| (u.user.name.clone(), u.reason.clone())).collect(),
            databases: databases
                .iter()
                .map(|db| WantedDatabase {
                    desired: DesiredDatabase {
                        name: db.name.clone(),
                        state: db.desired(),
                        claimed: db.claimed,
                    },
                    watched: db.watched_for_drift(),
                })
                .collect(),
            access: has_access.then_some(&inputs),
        };
        Ok(plan_pass(&wanted, &seen).render())
    }

    /// Observes, in each database where the access levels have work, what pgplane's groups lack
    /// there and its schemas (for groups a pass would create): a few databases at once, each
    /// on a session of its own closed after (the admin database on the admin session).
    async fn observe_databases(
        &self,
        spec: &TargetSpec,
        admin: &Client,
        inputs: &Inputs<'_>,
        seen: &mut Seen<'_>,
    ) -> Result<(), TargetError> {
        let work = access::plan(inputs, &seen.groups).visits;
        let primary = inputs.cluster.primary_user.as_str();
        let mut visits = Vec::new();
        for (database, visit) in &work {
            if visit.ensure.is_empty() {
                continue;
            }
            let existing: Vec<(Group, bool)> = visit.ensure.iter().filter(|(_, new)| !new).cloned().collect();
            visits.push(look_in(spec, admin, self.limits, database.clone(), existing, primary));
        }
        let found: Vec<Result<_, TargetError>> =
            stream::iter(visits).buffer_unordered(VISITS_AT_ONCE).collect().await;
        for result in found {
            let (database, (facts, schemas)) = result?;
            seen.in_databases.insert(database.clone(), facts);
            seen.schemas.insert(database, schemas);
        }
        Ok(())
    }
}

/// Looks into `database`: on the admin session when it is the admin database, otherwise on a
/// session of its own, closed after.
async fn look_in(
    spec: &TargetSpec,
    admin: &Client,
    limits: SessionLimits,
    database: String,
    existing: Vec<(Group, bool)>,
    primary: &str,
) -> Result<(String, (DatabaseFacts, Vec<(String, bool, bool)>)), TargetError> {
    let found = if database == spec.admin_database() {
        look(admin, &existing, primary).await?
    } else {
        let session = spec.connect(&database, limits).await?;
        look(&session, &existing, primary).await?
    };
    Ok((database, found))
}

/// What one database shows a preview: what pgplane's `existing` groups lack there, and its
/// schemas.
async fn look(
    client: &Client,
    existing: &[(Group, bool)],
    primary: &str,
) -> Result<(DatabaseFacts, Vec<(String, bool, bool)>), TargetError> {
    let facts = if existing.is_empty() {
        DatabaseFacts::default()
    } else {
        observe_database(client, existing, primary).await?
    };
    Ok((facts, observe_schemas(client).await?))
}

impl std::fmt::Debug for Previewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previewer").finish_non_exhaustive()
    }
}

impl Planner for Previewer {
    fn plan<'a>(&'a self, cluster: &'a Cluster) -> PlanFuture<'a> {
        Box::pin(self.preview(cluster))
    }
}
