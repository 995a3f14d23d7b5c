//! The checks of `DELETE …/users/{name}` beyond the primary user's: the options a deletion
//! takes (`reassign_to`, `if_owns`), whether the named heir may inherit (the heir rule,
//! [`pgplane_core::heirs`]), and the refusal (409 with the dependency report) of a user that
//! owns objects when the caller asked to refuse. Nothing is written here.

use pgplane_core::heirs::{may_inherit, Candidate, NotHeir};
use pgplane_core::model::Cluster;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dependencies::{dependencies_of, on_server};
use crate::audit::AuditNote;
use crate::error::ApiError;
use crate::state::AppState;

/// What deleting a user does with what it owns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IfOwns {
    /// Hand it to the heir (`reassign_to`, default the primary user), then drop the user.
    Reassign,
    /// Answer 409 with the dependency report and change nothing.
    Refuse,
}

/// `DELETE …/users/{name}` options (pgplane extensions; DigitalOcean clients send none).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteUserQuery {
    /// The user that inherits what the deleted user owns, in every database: another present
    /// user of the same cluster, already created on the target, or the primary user (the
    /// default). Kept with the deletion request until the reconciler has dropped the user.
    reassign_to: Option<String>,
    /// `reassign` (default) or `refuse`: answer 409 with the dependency report, changing
    /// nothing, when the user owns objects or set default privileges.
    if_owns: Option<String>,
}

impl DeleteUserQuery {
    /// Whether the request names an heir.
    pub(super) fn names_heir(&self) -> bool {
        self.reassign_to.as_deref().is_some_and(|h| !h.is_empty())
    }

    /// Tells the audit log the heir (the primary user unless named) and the ownership mode.
    pub(super) fn note(&self, note: &AuditNote, primary_user: &str) {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        note.detail("reassign_to", &given(&self.reassign_to).unwrap_or_else(|| primary_user.into()));
        note.detail("if_owns", &given(&self.if_owns).unwrap_or_else(|| "reassign".into()));
    }
}

/// Refuses (422) `heir` as the heir of `name` unless it may inherit (the heir rule): when the
/// user is deleted, or when a lease names it at its creation.
pub(super) async fn check_heir(
    state: &AppState,
    cluster: &Cluster,
    name: &str,
    heir: &str,
) -> Result<(), ApiError> {
    let found = match state.store.get_user(cluster.cluster_id, heir).await {
        Ok(u) => Some(u),
        Err(pgplane_core::Error::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match may_inherit(name, heir, found.as_ref().map(Candidate::of)) {
        Ok(()) => Ok(()),
        Err(NotHeir::Itself) => {
            Err(ApiError::unprocessable("reassign_to must name another user than the one deleted"))
        }
        Err(NotHeir::NotCreated) => {
            let status = found.as_ref().map_or("", |u| u.sync_status.as_str());
            Err(ApiError::unprocessable(format!(
                "reassign_to {heir:?} is not created on the target yet (status {status})"
            )))
        }
        Err(NotHeir::Gone) => Err(ApiError::unprocessable(format!(
            "reassign_to {heir:?} is not a user of this cluster (or is being deleted)"
        ))),
    }
}

/// Checks a deletion's options; returns the heir to store (None: the primary user), or the
/// 409 with the report when the caller asked to refuse and the user owns something.
pub(super) async fn check_user_deletion(
    state: &AppState,
    cluster: &Cluster,
    name: &str,
    query: DeleteUserQuery,
) -> Result<Option<String>, ApiError> {
    let heir = query.reassign_to.filter(|h| !h.is_empty());
    let mode = match query.if_owns.as_deref() {
        None | Some("" | "reassign") => IfOwns::Reassign,
        Some("refuse") => IfOwns::Refuse,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "if_owns must be \"reassign\" or \"refuse\", not {other:?}"
            )))
        }
    };
    let id = cluster.cluster_id;
    // (A user that is the heir of a pending deletion is refused by the store, atomically.)
    if let Some(heir) = &heir {
        if mode == IfOwns::Refuse {
            return Err(ApiError::unprocessable("reassign_to cannot be combined with if_owns=refuse"));
        }
        check_heir(state, cluster, name, heir).await?;
    }
    if mode == IfOwns::Refuse && on_server(&state.store.get_user(id, name).await?) {
        let report = dependencies_of(state, cluster, name).await?;
        if report.owns_objects {
            let report = serde_json::to_value(&report).expect("reports serialise");
            return Err(ApiError::conflict(format!(
                "the user {name:?} owns objects on the target; nothing was changed (see dependencies; \
                 delete with reassign_to to hand them over)"
            ))
            .with_detail("dependencies", report));
        }
    }
    Ok(heir.filter(|h| *h != cluster.primary_user))
}
