//! pgplane-gateway: the REST API, in the DigitalOcean Managed Databases v2 dialect, over
//! axum. It validates requests, writes desired state to the metadata store, wakes the
//! reconcilers and answers once the change is applied on the target (or a bounded wait
//! has passed, leaving the object pending with its last error).

mod audit;
mod auth;
mod console;
mod error;
mod extract;
mod failures;
mod listing;
pub mod metrics;
mod openapi;
mod probes;
mod rate;
mod rendered;
mod request_id;
mod routes;
mod serving;
mod state;
mod tls;
mod views;
mod wait;

use std::future::Future;
use std::time::Duration;

use pgplane_core::secrets::Sealer;
use pgplane_core::Store;

pub use error::ApiError;
pub use failures::FailureLimits;
pub use serving::{raise_open_files_limit, ServeLimits, SHUTDOWN_GRACE};
pub use state::AppState;
pub use tls::{serve_tls, server_config};

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a write waits for the change to be applied on the target before answering
    /// with the object still pending.
    pub apply_timeout: Duration,
    /// Upper bound for any request.
    pub request_timeout: Duration,
    /// Requests a minute allowed per token (0: no limit).
    pub rate_limit_per_minute: u32,
    /// Failed authentications allowed a minute per client address and per token id.
    pub auth_failures: FailureLimits,
    /// The in-process reconciler's heartbeat, for `/readyz` (None when it runs elsewhere).
    pub reconciler: Option<std::sync::Arc<pgplane_core::heartbeat::Heartbeat>>,
    /// Where registered targets may be (checked before any connection).
    pub target_policy: pgplane_target_server::TargetPolicy,
    /// Registration probes (`POST /v2/databases`, `PUT …/pgplane`) a minute per team (0: no
    /// limit).
    pub probes_per_minute: u32,
    /// Plans what a reconcile pass would do on a cluster's target, for `GET …/plan` (None: the
    /// endpoint answers 503). The reconciler provides it; the process that runs both hands it
    /// over, so that the gateway does not depend on the reconciler.
    pub planner: Option<std::sync::Arc<dyn pgplane_target_server::plan::Planner>>,
    /// Serve the web console at `/` (its assets are embedded; it calls `/v2` like any client).
    pub console: bool,
    /// Users of a cluster alone on its server may get REPLICATION (`pg_allow_replication`);
    /// such a user can read the whole server. Off: every request for it is refused (422).
    pub allow_replication_for_sole_tenants: bool,
    /// A registration or move whose primary user exists with memberships pgplane did not grant
    /// is refused (409) instead of adopting it and removing them (`--adopted-primary-user`).
    pub refuse_foreign_primary_user: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            apply_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            rate_limit_per_minute: 1200,
            auth_failures: FailureLimits::default(),
            reconciler: None,
            target_policy: pgplane_target_server::TargetPolicy::default(),
            probes_per_minute: 30,
            planner: None,
            console: true,
            allow_replication_for_sole_tenants: false,
            refuse_foreign_primary_user: false,
        }
    }
}

/// Builds the HTTP application. Must be called within a tokio runtime: it starts the task that
/// listens for finished reconcile passes.
pub fn app(store: Store, sealer: Sealer, config: GatewayConfig) -> axum::Router {
    routes::router(AppState::new(store, sealer, config))
}

/// The OpenAPI document of the API, as served at `/v2/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api_document()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight finish
/// (up to `limits.shutdown_grace`); `limits` bound slow, idle and too many connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serving::serve_connections(listener, app, None, limits, shutdown).await
}
