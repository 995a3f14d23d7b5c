//! Registration probes: `POST /v2/databases` (its dry run too) and `PUT …/pgplane` make pgplane connect where the
//! caller says. Each probe is checked against the operator's target policy (refused before any
//! connection when outside it), counted against its team's allowance (so that registration is
//! no port scanner or password-guessing oracle, even inside the allowed networks), and bounded
//! in time. The allowance is shared by every replica (a counter in the metadata database); each
//! process also keeps its own, smaller burst as a first filter that only ever refuses sooner.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use pgplane_core::Store;
use pgplane_target_server::{probe, survey, ServerFacts, Survey, TargetError, TargetPolicy, TargetSpec};
use uuid::Uuid;

use crate::error::ApiError;

type TeamLimiter = RateLimiter<Uuid, governor::state::keyed::DefaultKeyedStateStore<Uuid>, DefaultClock>;

/// Where registrations may lead, and how often each team may try.
pub(crate) struct Prober {
    policy: TargetPolicy,
    per_team: Option<TeamLimiter>,
    per_minute: u32,
    store: Store,
}

impl Prober {
    /// `per_minute` probes a minute per team across replicas, and in each process a fifth of
    /// them in a burst (0: unlimited).
    pub fn new(policy: TargetPolicy, per_minute: u32, store: Store) -> Self {
        let per_team = NonZeroU32::new(per_minute).map(|n| {
            let burst = NonZeroU32::new(per_minute.div_ceil(5)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst))
        });
        Self { policy, per_team, per_minute, store }
    }

    /// The target policy every connection is checked against.
    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// Connects to the target for `team_id` and checks that pgplane can manage it: 429 over the
    /// team's allowance, 422 when the target is refused, cannot be reached or cannot be
    /// managed (`context` starts the message).
    pub async fn probe(
        &self,
        team_id: Uuid,
        spec: &TargetSpec,
        context: &str,
    ) -> Result<ServerFacts, ApiError> {
        self.admit(team_id).await?;
        let facts = probe(spec, &self.policy).await.map_err(|e| failed(context, e))?;
        if let Some(why) = facts.unsuitability(&spec.admin.user) {
            return Err(ApiError::unprocessable(format!("{context}: {why}")));
        }
        Ok(facts)
    }

    /// Surveys the target for a registration dry run, counted like a probe: 429 over the
    /// team's allowance, 422 when the target is refused or cannot be reached. An unsuitable
    /// server or admin role is not an error here: the dry run reports it.
    pub async fn survey(
        &self,
        team_id: Uuid,
        spec: &TargetSpec,
        primary_user: &str,
        default_database: &str,
    ) -> Result<Survey, ApiError> {
        self.admit(team_id).await?;
        survey(spec, &self.policy, primary_user, default_database)
            .await
            .map_err(|e| failed("dry run failed", e))
    }

    /// Counts one probe against the team's allowance, in this process and then across
    /// replicas: 429 when either is used up.
    async fn admit(&self, team_id: Uuid) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_team else { return Ok(()) };
        if let Err(not_until) = limiter.check_key(&team_id) {
            return Err(too_many(not_until.wait_time_from(DefaultClock::default().now())));
        }
        let (count, left) = self.store.count_event(&format!("probe:team:{team_id}"), MINUTE).await?;
        if count > self.per_minute {
            return Err(too_many(left));
        }
        Ok(())
    }
}

/// A probe's failure: 503 when every session pgplane may hold on the server was busy (the
/// probe may be tried again shortly), 422 otherwise (`context` starts the message).
fn failed(context: &str, e: TargetError) -> ApiError {
    match e {
        TargetError::Busy(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{context}: {e}")),
        e => ApiError::unprocessable(format!("{context}: {e}")),
    }
}

/// The window of the shared allowance.
const MINUTE: Duration = Duration::from_secs(60);

fn too_many(wait: Duration) -> ApiError {
    ApiError::too_many_requests("Too many registration attempts for this team; try again later.", wait)
}
