//! Prometheus metrics: the recorder (`metrics-exporter-prometheus`, text format only), the
//! `/metrics` endpoint on a listener of its own (never on the API's), HTTP request counts and
//! latencies by route template, method and status, token-cache hits and misses, build info,
//! and the gauges read from the metadata database (objects pending, failed, in conflict; users
//! expired and expiring).
//! Labels are route templates (`/v2/databases/{database_cluster_uuid}/users/{username}`, never
//! a raw path), methods from a fixed list and status codes: nothing unbounded, no names.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pgplane_core::lifecycle::ObjectKind;
use pgplane_core::Store;

pub const HTTP_REQUESTS: &str = "pgplane_http_requests_total";
pub const HTTP_DURATION: &str = "pgplane_http_request_duration_seconds";
pub const TOKEN_CACHE_HITS: &str = "pgplane_token_cache_hits_total";
pub const TOKEN_CACHE_MISSES: &str = "pgplane_token_cache_misses_total";
pub const OBJECTS: &str = "pgplane_objects";
pub const USERS_EXPIRED: &str = "pgplane_users_expired";
pub const USERS_EXPIRING: &str = "pgplane_users_expiring";

/// The window `pgplane_users_expiring` counts.
const EXPIRING_WINDOW: Duration = Duration::from_secs(24 * 3600);
pub const BUILD_INFO: &str = "pgplane_build_info";

/// Histogram buckets, in seconds: API requests wait up to the apply timeout (10 s) and passes
/// over slow targets take longer.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often the metadata database gauges are read again.
const REFRESH: Duration = Duration::from_secs(15);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and describes
/// the API's metrics (the reconciler describes its own).
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "API requests answered, by route template, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "API request latency, by route template and method");
    describe_counter!(TOKEN_CACHE_HITS, "Bearer tokens found in the verification cache");
    describe_counter!(TOKEN_CACHE_MISSES, "Bearer tokens not in the cache (verified with argon2 or refused)");
    describe_gauge!(
        OBJECTS,
        "Users and databases over every cluster that are pending, failed or in conflict (from the metadata database: the same on every replica)"
    );
    describe_gauge!(
        USERS_EXPIRED,
        "Users over every cluster past their expiry (valid_until), leases not yet ended included (from the metadata database)"
    );
    describe_gauge!(
        USERS_EXPIRING,
        "Users over every cluster whose expiry comes within the window label (from the metadata database)"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label is pgplane's");
}

/// Counts a token looked up in the verification cache.
pub(crate) fn token_cache(hit: bool) {
    counter!(if hit { TOKEN_CACHE_HITS } else { TOKEN_CACHE_MISSES }).increment(1);
}

/// A method as a label: one of the standard ones, or "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware around the whole API: counts each request and its latency under its matched
/// route template ("unmatched" for what no route matched: 404s of unknown paths).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status).increment(1);
    histogram!(HTTP_DURATION, "route" => route, "method" => method).record(started.elapsed().as_secs_f64());
    response
}

/// Reads the metadata database gauges now.
async fn refresh(store: &Store) {
    for kind in [ObjectKind::User, ObjectKind::Database] {
        match store.object_counts(kind).await {
            Ok(counts) => {
                let object = kind.noun();
                gauge!(OBJECTS, "object" => object, "state" => "pending").set(counts.pending as f64);
                gauge!(OBJECTS, "object" => object, "state" => "failed").set(counts.failed as f64);
                gauge!(OBJECTS, "object" => object, "state" => "conflict").set(counts.conflict as f64);
            }
            Err(e) => tracing::debug!(error = %e, "cannot count objects for the metrics"),
        }
    }
    match store.expiry_counts(EXPIRING_WINDOW).await {
        Ok((expired, expiring)) => {
            gauge!(USERS_EXPIRED).set(expired as f64);
            gauge!(USERS_EXPIRING, "window" => "24h").set(expiring as f64);
        }
        Err(e) => tracing::debug!(error = %e, "cannot count expiring users for the metrics"),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, refreshing the metadata
/// database gauges every 15 s meanwhile.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            refresh(&store).await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
                        .into_response()
                }
            }),
        )
        .fallback(|| async { StatusCode::NOT_FOUND });
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    refresher.abort();
    served
}
