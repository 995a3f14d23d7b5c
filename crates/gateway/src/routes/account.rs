//! `GET /v2/account`: who the caller is, in DigitalOcean's account shape, plus a pgplane block
//! with the token's id, team and scopes, so that clients (the console among them) can tell what
//! the token may do instead of guessing from 403s. Reveals nothing the token itself lacks.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::views::rfc3339;

/// The caller's team.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountTeam {
    uuid: Uuid,
}

/// pgplane's extension: the token behind the request.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountToken {
    /// The token's public id (never its secret).
    token_id: String,
    /// The token's scopes, e.g. `["database:read"]`; `*` is full access.
    scopes: Vec<String>,
    /// When the token stops working (absent: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

/// The account, as DigitalOcean's `account` object (pgplane has no e-mail addresses or
/// resource limits: those fields are empty or zero).
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountView {
    uuid: String,
    email: String,
    email_verified: bool,
    status: &'static str,
    status_message: String,
    droplet_limit: i32,
    floating_ip_limit: i32,
    team: AccountTeam,
}

/// `{"account": {...}, "pgplane": {...}}`
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountResponse {
    account: AccountView,
    pgplane: AccountToken,
}

/// The caller's account and token: its team and the scopes it holds.
#[utoipa::path(get, path = "/v2/account", operation_id = "account_get", tag = "Account",
    responses((status = 200, description = "The caller's account and token", body = AccountResponse)))]
pub(super) async fn get(caller: Caller) -> Json<AccountResponse> {
    Json(AccountResponse {
        account: AccountView {
            uuid: caller.token_id.clone(),
            email: String::new(),
            email_verified: false,
            status: "active",
            status_message: String::new(),
            droplet_limit: 0,
            floating_ip_limit: 0,
            team: AccountTeam { uuid: caller.team_id },
        },
        pgplane: AccountToken {
            token_id: caller.token_id.clone(),
            scopes: caller.scopes.clone(),
            expires_at: caller.expires_at().as_ref().map(rfc3339),
        },
    })
}
