//! The route table and the layers around it, plus what handlers share beyond the extractors:
//! reading the caller's cluster together with what a handler needs about it, and refusing to
//! read a target that is not the cluster's registered server.

mod access;
mod account;
mod audit_events;
mod ca;
mod clusters;
mod dbs;
mod events;
mod firewall;
mod health;
mod inspect;
mod pools;
mod users;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};

use axum::Router;
use pgplane_core::model::{Cluster, ServerIdentity};
use pgplane_target_server::TargetError;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit;
use crate::auth::{authenticate, authorize};
use crate::console;
use crate::error::{finish_errors, method_not_allowed, route_not_found, ApiError};
use crate::extract::refuse_control_characters;
use crate::metrics;
use crate::openapi::{ApiDoc, SharedErrors};
use crate::request_id;
use crate::state::AppState;

/// Largest request body accepted.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// The /v2 operations, all behind the bearer token.
fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(clusters::list, clusters::create))
        .routes(routes!(clusters::get, clusters::delete))
        .routes(routes!(clusters::update_target))
        .routes(routes!(inspect::drift))
        .routes(routes!(inspect::unmanaged))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::reset_auth))
        .routes(routes!(users::leases::renew))
        .routes(routes!(access::get, access::put))
        .routes(routes!(users::dependencies::dependencies))
        .routes(routes!(inspect::plan))
        .routes(routes!(dbs::list, dbs::create))
        .routes(routes!(dbs::get, dbs::delete))
        .routes(routes!(pools::list, pools::create))
        .routes(routes!(pools::get, pools::update, pools::delete))
        .routes(routes!(firewall::list, firewall::replace))
        .routes(routes!(ca::get))
        .routes(routes!(events::list))
        .routes(routes!(audit_events::list))
        .routes(routes!(account::get))
}

/// Health and the API document, open to all.
fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi_json))
}

/// Every route with its documentation (routes are only ever added through `routes!`, which
/// takes the path and method from the handler's annotation: undocumented routes cannot exist).
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(protected()).merge(public())
}

/// The API's OpenAPI document: every route's own, with the error answers every operation shares.
pub(crate) fn api_document() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    SharedErrors.modify(&mut doc);
    doc
}

pub(crate) fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(request_id::HEADER);
    let timeout = state.config.request_timeout;
    let (routes, _) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(
            protected()
                .route_layer(from_fn(authorize))
                .route_layer(from_fn_with_state(state.clone(), audit::record))
                .route_layer(from_fn_with_state(state.clone(), authenticate)),
        )
        .merge(public())
        .split_for_parts();
    let routes = if state.config.console { routes.merge(console::router()) } else { routes };
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(request_id::screen))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    // Paths carry only ids and names; headers (with the token) are never logged.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(from_fn(finish_errors))
                .layer(from_fn(refuse_control_characters))
                .layer(from_fn(console::api_headers))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout)),
        )
        // Outermost, so that it counts what the client gets (timeouts and errors included).
        .layer(from_fn(metrics::track))
        .with_state(state)
}

/// 503 with `why`: the target cannot be read (or is not the registered server).
fn unavailable(why: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
}

/// What was read live from a cluster's target (`read`, from the server `server_of` names), kept
/// only when that server is the cluster's registered one (the server-identity rule): another
/// server at the cluster's address, or one pgplane has not identified yet, is not the
/// cluster's, and its names are not this team's to see. Either failure is a 503.
fn read_from_registered_server<T>(
    cluster: &Cluster,
    read: Result<T, TargetError>,
    server_of: impl FnOnce(&T) -> &str,
) -> Result<T, ApiError> {
    let read = read.map_err(|e| unavailable(format!("the target cannot be read: {e}")))?;
    if cluster.identify_server(server_of(&read)) == ServerIdentity::Registered {
        return Ok(read);
    }
    Err(unavailable(
        "the server at the cluster's address is not (or not yet known to be) the registered one; \
         see the cluster's last_error"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    /// Routes are added only through `routes!` (documented by construction); axum's plain
    /// route method would add an undocumented one.
    #[test]
    fn every_route_goes_through_the_documented_router() {
        let source = include_str!("mod.rs");
        let plain = format!(".{}(", "route");
        assert!(!source.contains(&plain), "use .routes(routes!(handler)) so the route is documented");
    }

    /// The shared error answers reach every operation behind the token (and only those), and
    /// an operation's own answer of the same status wins.
    #[test]
    fn every_protected_operation_documents_the_shared_errors() {
        let doc = serde_json::to_value(super::api_document()).unwrap();
        let mut protected = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = &op["responses"];
                assert!(responses.get("408").is_some(), "{method} {path}");
                let in_path =
                    op["parameters"].as_array().map_or(0, |p| p.iter().filter(|p| p["in"] == "path").count());
                assert_eq!(in_path, path.matches('{').count(), "{method} {path}");
                if path.contains("{database_cluster_uuid}") {
                    assert!(responses["404"]["description"].as_str().unwrap().starts_with("No such cluster"));
                }
                if op["security"] == serde_json::json!([{}]) {
                    assert!(responses.get("401").is_none(), "{method} {path} is open");
                    continue;
                }
                protected += 1;
                for status in ["401", "403", "429", "500", "503"] {
                    assert!(responses.get(status).is_some(), "{method} {path} lacks {status}");
                }
                assert_eq!(
                    responses["401"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody"
                );
            }
        }
        assert_eq!(protected, 33);
        let malformed =
            |path: &str, method: &str| doc["paths"][path][method]["responses"].get("400").is_some();
        assert!(malformed("/v2/databases/{database_cluster_uuid}/pgplane", "put"));
        assert!(malformed("/v2/databases/{database_cluster_uuid}/users/{username}/reset_auth", "post"));
        assert!(!malformed("/v2/databases/{database_cluster_uuid}/users/{username}", "delete"));
        let moved = &doc["paths"]["/v2/databases/{database_cluster_uuid}/pgplane"]["put"]["responses"]["403"];
        assert_eq!(moved["description"], "A move to another server needs a full-access token");
    }

    #[test]
    fn a_plans_phases_are_documented_in_the_order_a_pass_runs_them() {
        let doc = serde_json::to_value(super::api_document()).unwrap();
        let phases = [
            "roles",
            "primary_user",
            "databases",
            "database_rights",
            "access_groups",
            "access_privileges",
            "access_members",
            "access_cleanup",
            "drop_roles",
        ];
        assert_eq!(doc["components"]["schemas"]["Phase"]["enum"], serde_json::json!(phases));
        let step = &doc["components"]["schemas"]["PlannedStep"]["properties"]["phase"];
        assert_eq!(step["$ref"], "#/components/schemas/Phase", "{step}");
    }

    #[test]
    fn the_document_covers_every_operation_of_the_api() {
        let doc = super::api_document();
        let mut operations = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                if op.is_some() {
                    operations.push(format!("{method} {path}"));
                }
            }
        }
        operations.sort();
        let expected = [
            "delete /v2/databases/{database_cluster_uuid}",
            "delete /v2/databases/{database_cluster_uuid}/dbs/{database_name}",
            "delete /v2/databases/{database_cluster_uuid}/pools/{pool_name}",
            "delete /v2/databases/{database_cluster_uuid}/users/{username}",
            "get /healthz",
            "get /readyz",
            "get /v2/account",
            "get /v2/audit_events",
            "get /v2/databases",
            "get /v2/databases/{database_cluster_uuid}",
            "get /v2/databases/{database_cluster_uuid}/ca",
            "get /v2/databases/{database_cluster_uuid}/dbs",
            "get /v2/databases/{database_cluster_uuid}/dbs/{database_name}",
            "get /v2/databases/{database_cluster_uuid}/drift",
            "get /v2/databases/{database_cluster_uuid}/events",
            "get /v2/databases/{database_cluster_uuid}/firewall",
            "get /v2/databases/{database_cluster_uuid}/plan",
            "get /v2/databases/{database_cluster_uuid}/pools",
            "get /v2/databases/{database_cluster_uuid}/pools/{pool_name}",
            "get /v2/databases/{database_cluster_uuid}/unmanaged",
            "get /v2/databases/{database_cluster_uuid}/users",
            "get /v2/databases/{database_cluster_uuid}/users/{username}",
            "get /v2/databases/{database_cluster_uuid}/users/{username}/access",
            "get /v2/databases/{database_cluster_uuid}/users/{username}/dependencies",
            "get /v2/openapi.json",
            "post /v2/databases",
            "post /v2/databases/{database_cluster_uuid}/dbs",
            "post /v2/databases/{database_cluster_uuid}/pools",
            "post /v2/databases/{database_cluster_uuid}/users",
            "post /v2/databases/{database_cluster_uuid}/users/{username}/renew",
            "post /v2/databases/{database_cluster_uuid}/users/{username}/reset_auth",
            "put /v2/databases/{database_cluster_uuid}/firewall",
            "put /v2/databases/{database_cluster_uuid}/pgplane",
            "put /v2/databases/{database_cluster_uuid}/pools/{pool_name}",
            "put /v2/databases/{database_cluster_uuid}/users/{username}",
            "put /v2/databases/{database_cluster_uuid}/users/{username}/access",
        ];
        assert_eq!(operations, expected);
    }
}
