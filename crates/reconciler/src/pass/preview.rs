//! A pass that only looks: loads what a full pass would, observes the target with the pass's
//! own queries (roles, databases, the primary user's foreign memberships, the rights on a
//! shared server's databases, what dropped roles own, the access groups, and per database what
//! the groups lack there: `access::look_into`), then renders the plan the pass executes
//! ([`plan_pass`]): every phase, access levels included, verifiers and other teams' role names
//! redacted, drift marked as a pass would report it.
//! Nothing is written to the target or to the store; the sessions it opens are closed when the
//! plan is made. This is what `GET …/plan` shows.

use pgplane_core::lifecycle::DesiredState;
use pgplane_core::model::{Cluster, ServerIdentity};
use pgplane_core::secrets::Sealer;
use pgplane_core::Store;
use pgplane_target_server::plan::{Plan, PlanFuture, Planner};
use pgplane_target_server::{SessionLimits, TargetError, TargetPolicy};

use super::access::look_into;
use super::apply;
use super::connect::{hold_waiting_parameters, names_to_observe, prepare};
use crate::controller::ReconcilerConfig;
use crate::observe::access::observe_groups;
use crate::observe::observe;
use crate::plan::access::Inputs;
use crate::plan::pass::{plan_pass, Seen};
use crate::pools::one_off;
use pgplane_core::credentials::CredentialsCache;

/// Makes plans for the gateway (see [`Planner`]): what a full pass would do right now.
pub struct Previewer {
    store: Store,
    credentials: CredentialsCache,
    policy: TargetPolicy,
    limits: SessionLimits,
    allow_replication: bool,
}

impl Previewer {
    /// A previewer that reaches targets as the reconciler configured by `config` does.
    pub fn new(store: Store, sealer: Sealer, config: &ReconcilerConfig) -> Self {
        Self {
            store,
            credentials: CredentialsCache::new(sealer),
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
            tokio::try_join!(self.store.cluster_objects(id), self.store.pending_access(id))?;
        let (spec, mut roles, unopened) = prepare(&self.credentials, cluster, users, chrono::Utc::now())?;
        super::powers::withhold_replication(&self.store, self.allow_replication, cluster, &mut roles).await?;
        let spec = spec.checked(&self.policy).await?;
        // Observe: one session of its own, closed when the plan is made.
        let client = one_off(&spec, self.limits).await?;
        let observed = observe(&client, &names_to_observe(&roles, &databases), cluster, None).await?;
        hold_waiting_parameters(&mut roles, &observed, &cluster.primary_user);
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
            primary_grants: super::primary::foreign_of(
                &observed,
                super::primary_alternate(&roles, &cluster.primary_user),
            ),
            rights: super::rights::observe_shared(&self.store, &client, cluster, &observed, None).await?,
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
            for (database, found) in look_into(&spec, &client, self.limits, &inputs, &seen.groups).await {
                let (facts, schemas) = found?;
                seen.in_databases.insert(database.clone(), facts);
                seen.schemas.insert(database, schemas);
            }
        }

        // Plan.
        let access = has_access.then_some(&inputs);
        let wanted = super::wanted(cluster, &roles, &unopened, &databases, access);
        Ok(plan_pass(&wanted, &seen).render())
    }
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
