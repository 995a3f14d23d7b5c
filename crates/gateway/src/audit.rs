//! The audit trail: a middleware that records every mutating request (POST, PUT, DELETE) of an
//! authenticated caller after it has been answered: token, team, action, cluster, object name,
//! status and request id. Only names and ids are recorded, never a body (the registration body
//! carries the target's admin password).

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pgplane_core::store::NewAuditEvent;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::read_body;
use crate::state::AppState;

/// The action name of an operation, from its method and route: `user.create`,
/// `database.delete`, `cluster.register`, ...
fn action(method: &Method, route: &str) -> String {
    let noun = if route.contains("/users") {
        "user"
    } else if route.contains("/dbs") {
        "database"
    } else {
        "cluster"
    };
    let verb = match *method {
        Method::POST if route.ends_with("/reset_auth") => "reset_auth",
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
    let mut cluster_id = None;
    let mut object = None;
    for (key, value) in params.iter() {
        match key {
            "database_cluster_uuid" => cluster_id = Uuid::parse_str(value).ok(),
            "username" | "database_name" => object = Some(value.to_string()),
            _ => {}
        }
    }
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A create names its object in the body: read the name (and nothing else) from it.
    let response = if object.is_none() && method == Method::POST {
        let (parts, body) = request.into_parts();
        match read_body(body).await {
            Ok(bytes) => {
                object = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
                next.run(Request::from_parts(parts, Body::from(bytes))).await
            }
            Err(refused) => refused.into_response(),
        }
    } else {
        next.run(request).await
    };
    let event = NewAuditEvent {
        team_id: caller.team_id,
        token_id: caller.token_id,
        action: action(&method, &route),
        cluster_id,
        object,
        status: response.status().as_u16(),
        request_id,
    };
    if let Err(e) = state.store.record_audit_event(&event).await {
        tracing::error!(error = %e, action = %event.action, "cannot write the audit log");
    }
    response
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
        assert_eq!(action(&Method::DELETE, &format!("{c}/dbs/{{database_name}}")), "database.delete");
    }
}
