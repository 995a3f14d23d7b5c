//! `/v2/databases/{cluster}/firewall`: trusted sources, as DigitalOcean's rules, replaced as a
//! whole by `PUT`. They are enforced where pgplane controls the way in: the cluster's pools
//! (its pooler's PgBouncer lets in only these addresses). Connections straight to the server
//! are its own `pg_hba.conf`'s business: `GET` reports what in that file lets anyone in from
//! anywhere (read live, never changed).

use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use pgplane_core::store::NewFirewallRule;
use pgplane_target_server::hba::{open_hba_entries, OpenEntry};
use pgplane_target_server::TargetSpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::read_from_registered_server;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, TeamCluster};
use crate::views::FirewallRuleView;

/// DigitalOcean's limit on a cluster's rules.
const MAX_RULES: usize = 100;

/// Where the rules are enforced, said in every answer.
const ENFORCEMENT: &str = "Trusted sources are enforced for connections through the cluster's connection pools \
    (its pooler's PgBouncer accepts only these addresses; none: any address). Connections straight to the server \
    are governed by the server's own pg_hba.conf, which pgplane does not change: server_hba reports what in it \
    lets anyone in too easily.";

/// `{"rules": [...]}`, with pgplane's report.
#[derive(Serialize, ToSchema)]
pub(crate) struct FirewallResponse {
    rules: Vec<FirewallRuleView>,
    pgplane: FirewallReport,
}

/// What the rules govern, and the server's own `pg_hba.conf` (pgplane extension).
#[derive(Serialize, ToSchema)]
pub(crate) struct FirewallReport {
    enforcement: &'static str,
    server_hba: HbaReport,
}

/// The entries of the server's `pg_hba.conf` that let anyone in too easily.
#[derive(Serialize, ToSchema)]
pub(crate) struct HbaReport {
    /// Whether the file could be read (it needs a superuser admin role and a reachable server).
    readable: bool,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    open_entries: Vec<OpenEntry>,
}

/// `PUT …/firewall`
#[derive(Deserialize, ToSchema)]
pub(super) struct ReplaceRules {
    rules: Option<Vec<RuleBody>>,
}

/// A rule as clients send it (godo also sends `uuid`, `cluster_uuid` and `created_at`, which are
/// ignored).
#[derive(Deserialize, ToSchema)]
pub(super) struct RuleBody {
    /// `ip_addr`: a host address or a CIDR network.
    #[schema(example = "ip_addr")]
    r#type: Option<String>,
    #[schema(example = "192.168.1.0/24")]
    value: Option<String>,
    description: Option<String>,
}

impl RuleBody {
    /// The rule with its value in canonical form (a network, its host bits cleared).
    fn checked(self) -> Result<NewFirewallRule, ApiError> {
        let kind = self.r#type.unwrap_or_default();
        if kind != "ip_addr" {
            return Err(ApiError::unprocessable(format!(
                "rule type {kind:?} is not supported: pgplane enforces ip_addr rules (a host address or a CIDR \
                 network); droplet, k8s, tag and app rules name DigitalOcean resources"
            )));
        }
        let value = self.value.unwrap_or_default();
        let network = value
            .parse::<IpNet>()
            .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ApiError::unprocessable(format!(
                    "rule value {value:?} is not an IP address or a CIDR network"
                ))
            })?;
        Ok(NewFirewallRule { value: network.trunc().to_string(), description: self.description })
    }
}

/// A cluster's rules as a request gives them (`PUT …/firewall`, or the `rules` of a
/// registration), checked, canonical and without repeats.
pub(super) fn checked_rules(given: Vec<RuleBody>) -> Result<Vec<NewFirewallRule>, ApiError> {
    if given.len() > MAX_RULES {
        return Err(ApiError::unprocessable(format!(
            "{} rules given: a cluster has at most {MAX_RULES}",
            given.len()
        )));
    }
    let mut rules: Vec<NewFirewallRule> = Vec::with_capacity(given.len());
    for rule in given {
        let rule = rule.checked()?;
        if !rules.iter().any(|r| r.value == rule.value) {
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// List a cluster's trusted sources, with what the server's pg_hba.conf lets in.
#[utoipa::path(get, path = "/v2/databases/{database_cluster_uuid}/firewall", operation_id = "databases_list_firewall_rules", tag = "Firewall",
    responses((status = 200, description = "The rules", body = FirewallResponse)))]
pub(super) async fn list(
    TeamCluster { state, cluster, .. }: TeamCluster,
) -> Result<Json<FirewallResponse>, ApiError> {
    let rules = state.store.firewall_rules(cluster.cluster_id).await?;
    let spec = TargetSpec::of(&cluster, &state.sealer).map_err(|_| ApiError::internal())?;
    let read = open_hba_entries(&spec, state.prober.policy()).await;
    let server_hba = match read_from_registered_server(&cluster, read, |r| &r.server_id).map(|r| r.open) {
        Ok(Ok(open_entries)) => HbaReport { readable: true, reason: None, open_entries },
        Ok(Err(reason)) => HbaReport { readable: false, reason: Some(reason), open_entries: Vec::new() },
        Err(e) => HbaReport { readable: false, reason: Some(e.message), open_entries: Vec::new() },
    };
    Ok(Json(FirewallResponse {
        rules: rules.iter().map(FirewallRuleView::of).collect(),
        pgplane: FirewallReport { enforcement: ENFORCEMENT, server_hba },
    }))
}

/// Replace a cluster's trusted sources (an empty list lets any address in).
#[utoipa::path(put, path = "/v2/databases/{database_cluster_uuid}/firewall", operation_id = "databases_update_firewall_rules", tag = "Firewall", request_body = ReplaceRules,
    responses((status = 204, description = "Replaced; the cluster's pooler applies them at once"),
        (status = 422, description = "A rule that is not ip_addr, a value that is not an address or a network, or more than 100 rules", body = ErrorBody)))]
pub(super) async fn replace(
    TeamCluster { state, cluster, .. }: TeamCluster,
    ApiJson(body): ApiJson<ReplaceRules>,
) -> Result<StatusCode, ApiError> {
    let rules = checked_rules(body.rules.unwrap_or_default())?;
    state.store.replace_firewall_rules(cluster.cluster_id, &rules).await?;
    Ok(StatusCode::NO_CONTENT)
}
