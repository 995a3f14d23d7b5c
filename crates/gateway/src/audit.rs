//! The audit trail: a middleware that records every mutating request (POST, PUT, DELETE) of an
//! authenticated caller after it has been answered: token, team, action, cluster, object name,
//! status, request id and what the request chose beyond its path. Only names and ids are
//! recorded, never a body (the registration body carries the target's admin password): the
//! path names the object; what only the handler knows it tells through the [`AuditNote`] (the
//! name of a create, read from the body; the cluster a registration made; whether a request
//! was a dry run, as the query's one parser read it; a deleted user's heir and ownership mode).
//! The request's handling and its record run in a task
//! of their own, so a client that hangs up mid-request (hyper then drops the answer's future)
//! stops neither the change nor its record. Records are written in batches ([`AuditWriter`]):
//! an answer still goes out only once its record is written.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use pgplane_core::store::NewAuditEvent;
use pgplane_core::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::required;
use crate::state::AppState;

/// The action name of an operation, from its method and route: `user.create`,
/// `database.delete`, `cluster.register`, ...
fn action(method: &Method, route: &str) -> String {
    let noun = if route.contains("/users") {
        "user"
    } else if route.contains("/dbs") {
        "database"
    } else if route.contains("/pools") {
        "pool"
    } else if route.ends_with("/firewall") {
        "firewall"
    } else {
        "cluster"
    };
    let verb = match *method {
        Method::POST if route.ends_with("/reset_auth") => "reset_auth",
        Method::POST if route.ends_with("/renew") => "renew",
        Method::POST if noun == "cluster" => "register",
        Method::POST => "create",
        Method::PUT => "update",
        Method::DELETE if noun == "cluster" => "unregister",
        Method::DELETE => "delete",
        _ => "other",
    };
    format!("{noun}.{verb}")
}

/// Middleware: records mutating requests in the audit log.
pub(crate) async fn record(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if !matches!(method, Method::POST | Method::PUT | Method::DELETE) {
        return next.run(request).await;
    }
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let route = matched.as_ref().map_or("", |m| m.as_str()).to_string();
    let mut event = NewAuditEvent {
        team_id: caller.team_id,
        token_id: caller.token_id,
        action: action(&method, &route),
        cluster_id: None,
        object: None,
        status: 0,
        request_id: request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
        detail: None,
    };
    for (key, value) in params.iter() {
        match key {
            "database_cluster_uuid" => event.cluster_id = Uuid::parse_str(value).ok(),
            "username" | "database_name" | "pool_name" => event.object = Some(value.to_string()),
            _ => {}
        }
    }
    let handled = tokio::spawn(handle_and_record(state, event, request, next).in_current_span());
    handled.await.unwrap_or_else(|_| ApiError::internal().into_response())
}

/// Answers the request and records the answer's status; a handler that panics is recorded as a
/// 500.
async fn handle_and_record(
    state: AppState,
    mut event: NewAuditEvent,
    mut request: Request,
    next: Next,
) -> Response {
    let note = AuditNote::default();
    request.extensions_mut().insert(note.clone());
    let response = std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| ApiError::internal().into_response());
    event.status = response.status().as_u16();
    let noted = note.take();
    event.object = event.object.or(noted.object);
    event.cluster_id = event.cluster_id.or(noted.cluster_id);
    if noted.dry_run {
        // A dry run writes nothing but is still a probe of a server: recorded apart.
        event.action.push_str("_dry_run");
    }
    if !noted.detail.is_empty() {
        event.detail = Some(serde_json::Value::Object(noted.detail).to_string());
    }
    state.audit.record(event).await;
    response
}

/// The most events written in one statement.
const BATCH: usize = 256;

/// Writes the audit log: a request hands its event over and waits until it is written. Events
/// handed over while a batch is being written make the next batch, so many requests in flight
/// cost the metadata database one statement and one commit, not one each.
#[derive(Clone)]
pub(crate) struct AuditWriter(mpsc::UnboundedSender<(NewAuditEvent, oneshot::Sender<()>)>);

impl AuditWriter {
    pub(crate) fn start(store: Store) -> Self {
        let (sender, mut handed) = mpsc::unbounded_channel::<(NewAuditEvent, oneshot::Sender<()>)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while handed.recv_many(&mut batch, BATCH).await > 0 {
                // Answers that go out together (the waiters of one pass) are handed one after
                // another, the first waking this task before the others run: let them join.
                pgplane_core::store::let_those_woken_with_it_run().await;
                while batch.len() < BATCH {
                    let Ok(more) = handed.try_recv() else { break };
                    batch.push(more);
                }
                let (events, written): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                if store.record_audit_events(&events).await.is_err() {
                    // One event the database refuses (its team deleted meanwhile) must not
                    // cost the others their record.
                    for event in &events {
                        if let Err(e) = store.record_audit_events(std::slice::from_ref(event)).await {
                            tracing::error!(error = %e, action = %event.action, "cannot write the audit log");
                        }
                    }
                }
                written.into_iter().for_each(|w| _ = w.send(()));
            }
        });
        Self(sender)
    }

    /// Records `event`; returns once it is written (or could not be, which is logged).
    async fn record(&self, event: NewAuditEvent) {
        let (done, written) = oneshot::channel();
        if self.0.send((event, done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// How a handler tells the audit log what only it knows about the request.
#[derive(Clone, Default)]
pub(crate) struct AuditNote(Arc<Mutex<Noted>>);

/// What handlers noted.
#[derive(Default)]
struct Noted {
    object: Option<String>,
    cluster_id: Option<Uuid>,
    dry_run: bool,
    detail: serde_json::Map<String, serde_json::Value>,
}

impl AuditNote {
    fn with(&self, note: impl FnOnce(&mut Noted)) {
        note(&mut self.0.lock().expect("audit note lock"));
    }

    /// The request is about the object `name`.
    pub fn object(&self, name: &str) {
        self.with(|n| n.object = Some(name.to_string()));
    }

    /// The name a create request gives its new object, from the body's `field`: required (422
    /// naming the field), noted as the request's object even when `check` then refuses it (422
    /// saying why).
    pub fn new_name(
        &self,
        name: Option<String>,
        field: &str,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<String, ApiError> {
        let name = required(name, field)?;
        self.object(&name);
        check(&name).map_err(ApiError::unprocessable)?;
        Ok(name)
    }

    /// The request made the cluster `id`.
    pub fn cluster(&self, id: Uuid) {
        self.with(|n| n.cluster_id = Some(id));
    }

    /// The request is a dry run (it writes nothing).
    pub fn dry_run(&self) {
        self.with(|n| n.dry_run = true);
    }

    /// The request chose `value` for `key` (recorded in the event's detail).
    pub fn detail(&self, key: &str, value: &str) {
        self.with(|n| {
            n.detail.insert(key.to_string(), value.into());
        });
    }

    fn take(&self) -> Noted {
        std::mem::take(&mut *self.0.lock().expect("audit note lock"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditNote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Outside the audit middleware (reads), a note goes nowhere.
        Ok(parts.extensions.get::<AuditNote>().cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_after_noun_and_verb() {
        let c = "/v2/databases/{database_cluster_uuid}";
        assert_eq!(action(&Method::POST, "/v2/databases"), "cluster.register");
        assert_eq!(action(&Method::DELETE, c), "cluster.unregister");
        assert_eq!(action(&Method::POST, &format!("{c}/users")), "user.create");
        assert_eq!(action(&Method::PUT, &format!("{c}/users/{{username}}")), "user.update");
        assert_eq!(action(&Method::POST, &format!("{c}/users/{{username}}/reset_auth")), "user.reset_auth");
        assert_eq!(action(&Method::POST, &format!("{c}/users/{{username}}/renew")), "user.renew");
        assert_eq!(action(&Method::DELETE, &format!("{c}/dbs/{{database_name}}")), "database.delete");
        assert_eq!(action(&Method::POST, &format!("{c}/pools")), "pool.create");
        assert_eq!(action(&Method::PUT, &format!("{c}/pools/{{pool_name}}")), "pool.update");
        assert_eq!(action(&Method::PUT, &format!("{c}/firewall")), "firewall.update");
    }
}
