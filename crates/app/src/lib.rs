//! pgplane-app: the composition root. Starts the parts of a pgplane process on one metadata
//! store (the REST API, the reconciler, the metrics listener, retention of the event logs),
//! stops them all through one cancellation token, and treats a part that ends on its own as
//! the process failing, instead of running on half alive. `pgplane serve`, the test kit and the
//! tests start pgplane here.

pub mod retention;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgplane_core::secrets::Sealer;
use pgplane_core::Store;
use pgplane_gateway::{GatewayConfig, ServeLimits};
use pgplane_reconciler::{Previewer, Reconciler, ReconcilerConfig};
use pgplane_target_server::plan::Planner;
use pgplane_target_server::{SessionBudget, TargetPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use retention::Retention;

/// The REST API of a process.
pub struct Api {
    /// Where it listens (bound by the caller, so that a busy address fails before anything
    /// starts and tests can bind port 0).
    pub listener: TcpListener,
    /// Serve over TLS with this configuration.
    pub tls: Option<rustls::ServerConfig>,
    pub config: GatewayConfig,
    pub limits: ServeLimits,
}

/// What a process runs (by default nothing but a reconciler that is built and not run).
#[derive(Default)]
pub struct Parts {
    /// The REST API (None: another process serves it).
    pub api: Option<Api>,
    /// The reconciler's settings; it is built either way (for `Reconciler::reconcile_now`),
    /// and runs when `reconcile` is set.
    pub reconciler: ReconcilerConfig,
    pub reconcile: bool,
    /// A listener for Prometheus metrics at /metrics (installs the process-wide recorder).
    pub metrics: Option<TcpListener>,
    /// Pruning of the audit and drift logs (None: not in this process).
    pub retention: Option<Retention>,
}

/// A started process.
pub struct Running {
    stop: CancellationToken,
    parts: JoinSet<(&'static str, Result<(), String>)>,
    /// The reconciler (running or not, see [`Parts::reconcile`]).
    pub reconciler: Reconciler,
    /// Where the API listens.
    pub api_address: Option<SocketAddr>,
}

/// Starts every part; they run until the returned process's token is cancelled.
pub fn start(store: Store, sealer: Sealer, mut parts: Parts) -> Result<Running, String> {
    // One budget of sessions per target server for the whole process: every session the API
    // and the reconciler open on a target counts against it.
    let budget = SessionBudget::new(parts.reconciler.max_sessions_per_server);
    let policy = |p: &TargetPolicy| p.clone().with_budget(budget.clone());
    parts.reconciler.target_policy = policy(&parts.reconciler.target_policy);
    if let Some(api) = &mut parts.api {
        api.config.target_policy = policy(&api.config.target_policy);
    }
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let stopped = || stop.clone().cancelled_owned();
    // Plans are made by every process with an API, reaching targets as its reconciler would.
    let planner: Arc<dyn Planner> =
        Arc::new(Previewer::new(store.clone(), sealer.clone(), &parts.reconciler));
    let reconciler = Reconciler::new(store.clone(), sealer.clone(), parts.reconciler);
    if let Some(listener) = parts.metrics {
        let handle = pgplane_gateway::metrics::install()?;
        pgplane_reconciler::metrics::describe();
        tracing::info!(address = %local(&listener), "metrics listening");
        let (store, shutdown) = (store.clone(), stopped());
        tasks.spawn(async move {
            let served = pgplane_gateway::metrics::serve_metrics(listener, handle, store, shutdown).await;
            ("metrics listener", served.map_err(|e| e.to_string()))
        });
    }
    if let Some(retention) = parts.retention {
        let (store, shutdown) = (store.clone(), stopped());
        tasks.spawn(async move {
            retention.run(store, shutdown).await;
            ("retention", Ok(()))
        });
    }
    let heartbeat = reconciler.stats().heartbeat.clone();
    if parts.reconcile {
        let (reconciler, shutdown) = (reconciler.clone(), stopped());
        tasks.spawn(async move {
            reconciler.run(shutdown).await;
            ("reconciler", Ok(()))
        });
    }
    let mut api_address = None;
    if let Some(api) = parts.api {
        let config = GatewayConfig {
            reconciler: parts.reconcile.then_some(heartbeat),
            planner: Some(planner),
            ..api.config
        };
        let console = config.console;
        let app = pgplane_gateway::app(store, sealer, config);
        let address = local(&api.listener);
        api_address = Some(address);
        let shutdown = stopped();
        match api.tls {
            Some(tls) => {
                tracing::info!(%address, console, "REST API listening (TLS)");
                tasks.spawn(async move {
                    let served =
                        pgplane_gateway::serve_tls(api.listener, app, tls, api.limits, shutdown).await;
                    ("REST API", served.map_err(|e| e.to_string()))
                });
            }
            None => {
                tracing::info!(%address, console, "REST API listening");
                tasks.spawn(async move {
                    let served = pgplane_gateway::serve(api.listener, app, api.limits, shutdown).await;
                    ("REST API", served.map_err(|e| e.to_string()))
                });
            }
        }
    }
    Ok(Running { stop, parts: tasks, reconciler, api_address })
}

fn local(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Running {
    /// The token that stops every part (cancel it, or a child of it, to stop the process).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs until `shutdown` completes or the token is cancelled, then stops every part and
    /// waits for them (each has its own grace period). A part that ends before that stops the
    /// others too, and its end is the error returned.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let failure = tokio::select! {
            _ = shutdown => None,
            _ = self.stop.cancelled() => None,
            Some(ended) = self.parts.join_next() => Some(match ended {
                Ok((part, Ok(()))) => format!("the {part} stopped on its own"),
                Ok((part, Err(e))) => format!("the {part} stopped with an error: {e}"),
                Err(e) => format!("a part of pgplane panicked: {e}"),
            }),
        };
        if let Some(failure) = &failure {
            tracing::error!(error = %failure, "stopping: a part of pgplane died");
        }
        self.stop.cancel();
        while let Some(ended) = self.parts.join_next().await {
            match ended {
                Ok((_, Ok(()))) => {}
                Ok((part, Err(e))) => tracing::error!(part, error = %e, "stopped with an error"),
                Err(e) => tracing::error!(error = %e, "a part of pgplane panicked while stopping"),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process with no parts but those a test adds (the store is never reached).
    fn bare() -> Running {
        let store = Store::connect_lazy("postgres://nobody@127.0.0.1:1/none", 1).unwrap();
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        start(store, sealer, Parts::default()).unwrap()
    }

    #[tokio::test]
    async fn a_part_that_dies_stops_the_others_and_fails_the_process() {
        let mut running = bare();
        let stop = running.stop_token();
        let (told_tx, told_rx) = tokio::sync::oneshot::channel();
        running.parts.spawn(async move {
            stop.cancelled().await;
            let _ = told_tx.send(());
            ("REST API", Ok(()))
        });
        running.parts.spawn(async { ("reconciler", Err("the metadata database is gone".to_string())) });
        let ended = running.run_until(std::future::pending()).await;
        assert_eq!(ended, Err("the reconciler stopped with an error: the metadata database is gone".into()));
        told_rx.await.expect("the other part was told to stop");
    }

    #[tokio::test]
    async fn a_stop_asked_for_ends_every_part_cleanly() {
        let mut running = bare();
        let stop = running.stop_token();
        running.parts.spawn(async move {
            stop.cancelled().await;
            ("REST API", Ok(()))
        });
        assert_eq!(running.run_until(async {}).await, Ok(()));
    }
}
