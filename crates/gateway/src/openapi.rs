//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]` annotations and
//! the request and response types, collected by the router itself (utoipa-axum), so that a
//! route cannot exist without being documented. Served at `/v2/openapi.json` without auth.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
