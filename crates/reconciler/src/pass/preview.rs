//! A pass that only looks: observes a cluster's target with the pass's own queries, plans
//! every object with the pass's own rules (`plan_role`, `plan_database`) and renders each step
//! with the statements `apply` would send, verifiers redacted, drift marked as a pass would
//! report it. Nothing is written to the target or to the store; the session it opens is closed
//! when the plan is made. This is what `GET …/plan` shows.

use pgplane_core::lifecycle::{DesiredState, Lifecycle, ObjectKind};
use pgplane_core::model::Cluster;
use pgplane_core::secrets::Sealer;
use pgplane_core::Store;
use pgplane_target_server::plan::{Plan, PlanFuture, PlannedStatement, PlannedStep, Planner, REDACTED};
use pgplane_target_server::{SessionLimits, TargetError, TargetPolicy};

use super::apply;
use super::connect::prepare;
use super::drift::{database_drift, role_drift};
use crate::controller::ReconcilerConfig;
use crate::observe::observe;
use crate::plan::{plan_database, plan_role, DesiredDatabase, Step};
use crate::pools::one_off;
use crate::sql::databases::database_sql;
use crate::sql::roles;

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

    async fn preview(&self, cluster: &Cluster) -> Result<Plan, TargetError> {
        let (users, databases) = self.store.cluster_objects(cluster.cluster_id, false).await?;
        let (spec, mut roles, unopened) = prepare(&self.sealer, cluster, users)?;
        super::powers::withhold_replication(&self.store, self.allow_replication, cluster, &mut roles).await?;
        let spec = spec.checked(&self.policy).await?;
        // One session of its own, closed when the plan is made.
        let client = one_off(&spec, self.limits).await?;
        let role_names: Vec<&str> = roles.iter().map(|r| r.desired.name.as_str()).collect();
        let db_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let observed = observe(&client, &role_names, &db_names, &cluster.primary_user).await?;
        if cluster.server_id.as_deref().is_some_and(|id| id != observed.server_id) {
            return Err(TargetError::Refused(format!(
                "the server at {}:{} is not the one this cluster is registered on; a pass would \
                 change nothing there",
                cluster.host, cluster.port
            )));
        }

        let mut plan = Plan { server_version: observed.version.clone(), steps: Vec::new(), in_sync: 0 };
        let mut planned: Vec<_> =
            roles.iter().map(|r| (r, plan_role(&r.desired, &observed, &cluster.primary_user))).collect();
        // The pass's order: roles to create or fix (the primary user first), databases, then
        // roles to drop.
        planned.sort_by_key(|(r, _)| (r.desired.state == DesiredState::Absent, !r.desired.primary));
        let (present, absent): (Vec<_>, Vec<_>) =
            planned.into_iter().partition(|(r, _)| r.desired.state == DesiredState::Present);
        for (item, step) in &present {
            let drift =
                item.user.watched_for_drift().then(|| role_drift(&item.desired, step, &observed)).flatten();
            let sql = roles::role_sql(&item.desired.name, REDACTED, step);
            match entry(
                ObjectKind::User,
                &item.desired.name,
                step,
                drift,
                sql.into_iter().map(admin).collect(),
            ) {
                Some(e) => plan.steps.push(e),
                None => plan.in_sync += 1,
            }
        }
        for user in &unopened {
            plan.steps.push(PlannedStep {
                kind: ObjectKind::User.noun(),
                name: user.user.name.clone(),
                step: "left_out",
                changes_target: false,
                drift: None,
                note: Some(user.reason.clone()),
                statements: Vec::new(),
            });
        }
        let mut db_steps: Vec<_> = databases
            .iter()
            .map(|db| {
                let desired =
                    DesiredDatabase { name: db.name.clone(), state: db.desired(), claimed: db.claimed };
                (db, plan_database(&desired, &observed, &cluster.primary_user))
            })
            .collect();
        db_steps.sort_by_key(|(db, _)| db.desired() == DesiredState::Absent);
        for (db, step) in &db_steps {
            let drift = db.watched_for_drift().then(|| database_drift(&db.name, step, &observed)).flatten();
            let sql = database_sql(&db.name, step);
            match entry(ObjectKind::Database, &db.name, step, drift, sql.into_iter().map(admin).collect()) {
                Some(e) => plan.steps.push(e),
                None => plan.in_sync += 1,
            }
        }
        for (item, step) in &absent {
            let statements = match step {
                Step::DropRole { reassign_to } => {
                    drop_statements(&client, &item.desired.name, reassign_to, spec.admin_database()).await?
                }
                _ => Vec::new(),
            };
            plan.steps.extend(entry(ObjectKind::User, &item.desired.name, step, None, statements));
        }
        Ok(plan)
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

/// A statement on the admin connection's database.
fn admin(sql: String) -> PlannedStatement {
    PlannedStatement { database: None, sql }
}

/// The plan's entry for one object's step (None when it is in sync).
fn entry(
    kind: ObjectKind,
    name: &str,
    step: &Step,
    drift: Option<String>,
    statements: Vec<PlannedStatement>,
) -> Option<PlannedStep> {
    if *step == Step::InSync {
        return None;
    }
    let note = match step {
        Step::Conflict(why) => Some(why.clone()),
        Step::Forget => Some(format!("the {} is not on the target: its record is removed", kind.noun())),
        _ => None,
    };
    Some(PlannedStep {
        kind: kind.noun(),
        name: name.to_string(),
        step: step.name(),
        changes_target: step.changes_target(),
        drift,
        note,
        statements,
    })
}

/// What dropping `role` sends, as `apply::drop_roles` would: no logins, its sessions ended,
/// its objects handed over in every database where `pg_shdepend` shows it has some, then the
/// DROP.
async fn drop_statements(
    client: &tokio_postgres::Client,
    role: &str,
    heir: &str,
    admin_database: &str,
) -> Result<Vec<PlannedStatement>, TargetError> {
    let mut statements = vec![admin(roles::nologin_sql(role)), admin(roles::terminate_sql(&[role]))];
    for (database, _) in apply::dependent_databases(client, &[role], admin_database).await? {
        let database = (database != admin_database).then_some(database);
        statements.push(PlannedStatement { database, sql: roles::hand_over_sql(role, heir) });
    }
    statements.push(admin(roles::drop_role_sql(role)));
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::RoleAttrs;

    const ATTRS: RoleAttrs = RoleAttrs {
        superuser: false,
        createdb: false,
        createrole: false,
        login: true,
        replication: false,
        bypassrls: false,
    };

    #[test]
    fn a_password_step_shows_the_redaction_and_never_a_verifier() {
        let step = Step::AlterRole { attrs: ATTRS, set_password: true, grant_admin_to: None };
        let sql = roles::role_sql("app", REDACTED, &step).expect("an ALTER");
        let e =
            entry(ObjectKind::User, "app", &step, Some("the password was changed".into()), vec![admin(sql)])
                .expect("a step");
        assert_eq!(e.step, "alter_role");
        assert!(e.changes_target);
        assert!(e.statements[0].sql.ends_with(" PASSWORD '<redacted>'"), "{}", e.statements[0].sql);
        assert!(!e.statements[0].sql.contains("SCRAM"));
    }

    #[test]
    fn objects_in_sync_have_no_entry_and_conflicts_say_why_without_sql() {
        assert_eq!(entry(ObjectKind::Database, "db", &Step::InSync, None, Vec::new()), None);
        let why = "a role named \"x\" already exists".to_string();
        let e = entry(ObjectKind::User, "x", &Step::Conflict(why.clone()), None, Vec::new()).expect("a step");
        assert_eq!((e.step, e.changes_target, e.note), ("conflict", false, Some(why)));
        assert!(e.statements.is_empty());
    }
}
