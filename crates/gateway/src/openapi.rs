//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]` annotations and
//! the request and response types, collected by the router itself (utoipa-axum), so that a
//! route cannot exist without being documented. Served at `/v2/openapi.json` without auth.
//! What follows from an operation's place rather than from what it does is declared once, here,
//! and added to each operation of the finished document: the error answers every operation can
//! give (401, 403, 429, ...), the 404 of a path that names a cluster, user or database, the 400 of a
//! JSON body, and the path parameters themselves. A route declares only its own.

use std::collections::BTreeMap;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{ResponseBuilder, Responses};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};

use utoipa::openapi::response::Response;
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// The document's fixed parts; paths and schemas are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pgplane",
        description = "Self-hosted control plane for managed PostgreSQL, in the DigitalOcean \
                       Managed Databases v2 dialect (clusters, users, databases).",
    ),
    modifiers(&BearerAuth),
    security(("bearer_auth" = [])),
    tags(
        (name = "Databases", description = "Clusters: registered PostgreSQL servers"),
        (name = "Users", description = "Database users (roles) of a cluster, and their access levels per database (`…/access`, a pgplane extension)"),
        (name = "Dbs", description = "Databases of a cluster"),
        (name = "Audit", description = "The audit log of mutating requests"),
        (name = "Account", description = "The caller: its team and its token's scopes"),
        (name = "Health", description = "Liveness, readiness and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the bearer-token scheme every /v2 operation uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Answers every operation can give, whatever it does: status and description.
const EVERY_OPERATION: &[(&str, &str)] =
    &[("408", "The request took too long to complete (the request timeout)")];

/// Answers every operation behind the bearer token can give besides, from the layers around
/// it (authentication, scopes, the rate limit) and from the metadata database.
const EVERY_PROTECTED_OPERATION: &[(&str, &str)] = &[
    ("401", "Missing or invalid token"),
    ("403", "The token lacks the scope this operation needs"),
    ("429", "Too many requests with this token; `Retry-After` says when to try again"),
    ("500", "Unexpected server-side error"),
    ("503", "The metadata database cannot be reached"),
];

/// The parameters a path can name: the name, what it is (in a 404's "No such ..."), and its
/// description.
const PATH_PARAMETERS: &[(&str, &str, &str)] = &[
    ("database_cluster_uuid", "cluster", "The cluster's id"),
    ("username", "user", "The user's name (percent-encoded)"),
    ("database_name", "database", "The database's name (percent-encoded)"),
    ("pool_name", "pool", "The connection pool's name"),
];

/// Adds to every operation of a finished document (one with its paths) its path parameters and
/// the error answers it shares with others, each with DigitalOcean's error body; an answer an
/// operation declares itself, with the same status, is kept as it is.
pub(crate) struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.entry(ErrorBody::name().into_owned()).or_insert_with(ErrorBody::schema);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let named: Vec<_> =
                PATH_PARAMETERS.iter().filter(|(n, ..)| path.contains(&format!("{{{n}}}"))).collect();
            let what: Vec<&str> = named.iter().map(|(_, what, _)| *what).collect();
            let not_found = format!("No such {}", what.join(" or "));
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                for (i, (name, _, description)) in named.iter().enumerate() {
                    let parameter = ParameterBuilder::new()
                        .name(*name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .description(Some(*description))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build();
                    parameters.insert(i, parameter);
                }
                add(&mut operation.responses, EVERY_OPERATION);
                if reads_json(operation) {
                    add(&mut operation.responses, &[("400", "Malformed JSON")]);
                }
                if !named.is_empty() {
                    add(&mut operation.responses, &[("404", &not_found)]);
                }
                if !is_open(operation) {
                    add(&mut operation.responses, EVERY_PROTECTED_OPERATION);
                }
            }
        }
    }
}

/// Whether an operation is open to all (its security is the empty requirement).
fn is_open(operation: &Operation) -> bool {
    serde_json::to_value(&operation.security).ok() == Some(serde_json::json!([{}]))
}

/// Whether an operation reads a body of a declared type (with `ApiJson`, which answers 400 to
/// a body that is not that type's JSON).
fn reads_json(operation: &Operation) -> bool {
    let body = operation.request_body.as_ref().and_then(|b| b.content.get("application/json"));
    matches!(body.and_then(|c| c.schema.as_ref()), Some(RefOr::Ref(_)))
}

/// Adds each of `answers` that `responses` lacks, with the error body.
fn add(responses: &mut Responses, answers: &[(&str, &str)]) {
    for (status, description) in answers {
        responses.responses.entry((*status).to_string()).or_insert_with(|| error_response(description));
    }
}

/// An error answer: `description`, with DigitalOcean's error body.
fn error_response(description: &str) -> RefOr<Response> {
    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name()))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", body).build())
}

/// Declares error answers that several operations give for the same reason, once, as a type to
/// name in their `responses(...)`.
macro_rules! shared_answers {
    ($($(#[$doc:meta])* $name:ident: $(($status:literal, $description:literal)),+;)+) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(($status.to_string(), error_response($description))),+].into_iter().collect()
            }
        }
    )+};
}

shared_answers! {
    /// Operations that probe a target before they store it (registering, moving).
    ProbeErrors:
        ("429", "Too many registration attempts for the team"),
        ("503", "Every session pgplane may hold on the target's server stayed busy; try again shortly");
    /// Operations that read the cluster's target live.
    ReadsTarget:
        ("503", "The target cannot be read, or is not (or not yet known to be) the cluster's registered server");
    /// Operations that change a user (refused while its deletion is pending).
    ChangesUser:
        ("409", "The user is being deleted");
}
