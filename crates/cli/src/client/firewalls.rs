//! `pgplane databases firewalls ...`: a cluster's firewall rules (trusted sources), with
//! doctl's arguments, flags, aliases and columns. The API replaces the rules as a whole, so
//! `append` and `remove` read them, change the list and put it back; every command then prints
//! the rules as they are. pgplane enforces `ip_addr` rules only; the API refuses other types.

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use std::str::FromStr;

use super::api::Api;
use super::output::{OutputArgs, FIREWALL_RULE};
use super::{list, ClusterAt};

#[derive(Subcommand)]
pub(super) enum FirewallsCommand {
    /// List the firewall rules of a cluster.
    #[command(visible_alias = "ls")]
    List(ClusterAt),
    /// Add a firewall rule to those of a cluster.
    #[command(visible_alias = "a")]
    Append {
        #[arg(value_name = "cluster-id")]
        cluster_id: String,
        /// The rule, as type:value (ip_addr:192.168.1.1 or ip_addr:10.0.0.0/8).
        #[arg(long, value_name = "type:value")]
        rule: Rule,
    },
    /// Remove a firewall rule from those of a cluster.
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(value_name = "cluster-id")]
        cluster_id: String,
        /// The rule's UUID (see `firewalls list`).
        #[arg(long)]
        uuid: String,
    },
    /// Replace the firewall rules of a cluster.
    #[command(visible_alias = "r")]
    Replace {
        #[arg(value_name = "cluster-id")]
        cluster_id: String,
        /// The rules, as type:value, separated by commas or with the flag repeated.
        #[arg(long, alias = "rules", value_name = "type:value", value_delimiter = ',', required = true)]
        rule: Vec<Rule>,
    },
}

pub(super) async fn run(api: &Api, out: &OutputArgs, command: FirewallsCommand) -> anyhow::Result<()> {
    match command {
        FirewallsCommand::List(ClusterAt { cluster_id }) => {
            list(api, out, &FIREWALL_RULE, &path(&cluster_id)).await
        }
        FirewallsCommand::Append { cluster_id, rule } => {
            let mut rules = vec![rule.0];
            rules.extend(current_rules(api, &cluster_id).await?);
            replace(api, out, &cluster_id, rules).await
        }
        FirewallsCommand::Remove { cluster_id, uuid } => {
            let mut rules = current_rules(api, &cluster_id).await?;
            let before = rules.len();
            rules.retain(|rule| rule["uuid"] != uuid.as_str());
            if rules.len() == before {
                bail!("cluster {cluster_id} has no firewall rule {uuid} (see `pgplane databases firewalls list`)");
            }
            replace(api, out, &cluster_id, rules).await
        }
        FirewallsCommand::Replace { cluster_id, rule } => {
            replace(api, out, &cluster_id, rule.into_iter().map(|r| r.0).collect()).await
        }
    }
}

fn path(cluster_id: &str) -> [&str; 3] {
    ["databases", cluster_id, "firewall"]
}

/// The cluster's rules as the API gives them (sent back as they are, descriptions included).
async fn current_rules(api: &Api, cluster_id: &str) -> anyhow::Result<Vec<Value>> {
    let rules = api.fetch(Method::GET, &path(cluster_id), None, FIREWALL_RULE.many).await?;
    Ok(rules.as_array().cloned().unwrap_or_default())
}

/// Puts `rules` in place of the cluster's; prints them as the API then lists them.
async fn replace(api: &Api, out: &OutputArgs, cluster_id: &str, rules: Vec<Value>) -> anyhow::Result<()> {
    out.check(&FIREWALL_RULE)?;
    api.call(Method::PUT, &path(cluster_id), Some(&json!({ "rules": rules }))).await?;
    list(api, out, &FIREWALL_RULE, &path(cluster_id)).await
}

/// A rule given as `type:value`, as the API takes it.
#[derive(Clone, Debug)]
pub(super) struct Rule(Value);

impl FromStr for Rule {
    type Err = String;

    /// Splits at the first colon, so that `ip_addr:::1` is an IPv6 address.
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.split_once(':') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => {
                Ok(Rule(json!({ "type": kind, "value": value })))
            }
            _ => Err(format!("{raw:?} is not a type:value pair (for example ip_addr:192.168.1.1)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_split_at_their_first_colon() {
        let rule = |raw: &str| raw.parse::<Rule>().map(|r| r.0);
        assert_eq!(rule("ip_addr:::1").unwrap(), json!({ "type": "ip_addr", "value": "::1" }));
        assert_eq!(rule("ip_addr:10.0.0.0/8").unwrap(), json!({ "type": "ip_addr", "value": "10.0.0.0/8" }));
        assert!(rule("10.0.0.1").is_err());
        assert!(rule("ip_addr:").is_err());
    }
}
