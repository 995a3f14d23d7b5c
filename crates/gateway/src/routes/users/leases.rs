//! Expiring users and leases (pgplane extensions of a user). A user may carry an expiry
//! (`settings.valid_until`): the server refuses its logins from then on, and pgplane ends its
//! sessions and shows it `expired`. A lease is a user created with a lifetime (`ttl`): at its
//! end pgplane requests its deletion, as `DELETE …/users/{name}` does (its sessions end, what it
//! owns goes to its heir), and `POST …/users/{name}/renew` moves that end. Here: the lifetimes
//! the API reads (`15m`, `2h`, `7d`), the rules of an expiry, `GET …/users?expiring_within=`,
//! and the renewal.

use std::time::Duration;

use axum::extract::Path;
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use pgplane_core::model::User;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{one, settled_user};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, TeamCluster};
use crate::openapi::ChangesUser;
use crate::views::UserResponse;

/// The longest lease, and the widest `expiring_within` window: a year and a day.
const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

/// Reads a lifetime given as `field` (`90s`, `15m`, `2h`, `7d`, `1h 30m`): at least a second, at
/// most [`LONGEST`], in whole seconds (422 saying which field and why otherwise).
pub(super) fn lifetime(field: &str, text: &str) -> Result<Duration, ApiError> {
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
        ApiError::unprocessable(format!(
            "{field} {text:?} is not a duration such as \"15m\", \"2h\" or \"7d\": {e}"
        ))
    })?;
    if parsed < Duration::from_secs(1) || parsed > LONGEST {
        return Err(ApiError::unprocessable(format!("{field} must be between 1s and 366d, not {text:?}")));
    }
    Ok(Duration::from_secs(parsed.as_secs()))
}

/// The expiry a user is given, to the whole second (what PostgreSQL keeps, and shows, is then
/// exactly what pgplane stores): refused (422) for the primary user, which every cluster keeps
/// working, and for a lease, whose end moves only by renewal; at creation, refused in the past.
pub(super) fn checked_expiry(
    user: Option<&User>,
    valid_until: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    let valid_until = valid_until.trunc_subsecs(0);
    match user {
        Some(u) if u.is_primary() => {
            Err(ApiError::unprocessable(format!("the primary user {:?} cannot expire", u.name)))
        }
        Some(u) if u.lease_seconds.is_some() => Err(ApiError::unprocessable(format!(
            "{:?} is a lease: its end moves with POST …/users/{}/renew, not valid_until",
            u.name, u.name
        ))),
        None if valid_until <= Utc::now() => {
            Err(ApiError::unprocessable("valid_until must be in the future for a new user"))
        }
        _ => Ok(valid_until),
    }
}

/// `GET …/users` options (pgplane extension).
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListUsersQuery {
    /// Only the users whose expiry (`settings.valid_until`, leases included) comes within this
    /// lifetime from now (`24h`, `7d`), those that have expired already included (their
    /// `status` says `expired`).
    expiring_within: Option<String>,
}

impl ListUsersQuery {
    /// The latest expiry a listed user may have (None: list every user).
    pub(super) fn horizon(&self) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(window) = self.expiring_within.as_deref() else { return Ok(None) };
        let window = lifetime("expiring_within", window)?;
        Ok(Some(Utc::now() + chrono::Duration::from_std(window).expect("within a year")))
    }
}

/// `POST …/users/{name}/renew`.
#[derive(Deserialize, ToSchema, Default)]
pub(in crate::routes) struct RenewLease {
    /// The new lifetime, from now (`15m`, `2h`); omitted: the lease's own.
    #[schema(example = "15m")]
    ttl: Option<String>,
}

/// Renew a lease: its end moves to its lifetime (or the `ttl` given, which becomes its
/// lifetime) from now; an expired lease not yet ended logs in again (pgplane extension).
#[utoipa::path(post, path = "/v2/databases/{database_cluster_uuid}/users/{username}/renew", operation_id = "databases_renew_lease", tag = "Users", request_body = RenewLease,
    responses((status = 200, description = "The lease with its new end", body = UserResponse),
        ChangesUser,
        (status = 422, description = "Not a lease, or an invalid `ttl`", body = ErrorBody)))]
pub(in crate::routes) async fn renew(
    TeamCluster { state, caller, cluster, .. }: TeamCluster,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<RenewLease>,
) -> Result<Json<UserResponse>, ApiError> {
    let seconds = match body.ttl.as_deref() {
        Some(ttl) => Some(i32::try_from(lifetime("ttl", ttl)?.as_secs()).expect("a year fits")),
        None => None,
    };
    let written = state.store.renew_lease(cluster.cluster_id, &name, seconds).await?;
    let user = settled_user(&state, &cluster, &written).await?.ok_or_else(ApiError::not_found)?;
    one(&user, &state, &caller, &cluster).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_whole_seconds_between_a_second_and_a_year() {
        assert_eq!(lifetime("ttl", "15m").unwrap(), Duration::from_secs(900));
        assert_eq!(lifetime("ttl", "1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(lifetime("ttl", "7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(lifetime("ttl", "1500ms").unwrap(), Duration::from_secs(1));
        for bad in ["", "15", "soon", "500ms", "400d", "-5m"] {
            let e = lifetime("ttl", bad).unwrap_err();
            assert!(format!("{e:?}").contains("ttl"), "{bad}: {e:?}");
        }
    }
}
