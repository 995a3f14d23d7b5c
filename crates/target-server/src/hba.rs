//! What a server's own `pg_hba.conf` lets in from anywhere, read (never changed) for the
//! trusted-sources report: entries that ask for no password (`trust`), that check passwords
//! with MD5 or take them in clear, or that accept every address. pgplane enforces trusted
//! sources only where it controls the way in (the pooler); the server's file is its
//! operator's.

use serde::Serialize;
use utoipa::ToSchema;

use crate::probe::admin_session;
use crate::{within, TargetError, TargetPolicy, TargetSpec, EXCHANGE_TIMEOUT, SERVER_ID_SQL};

/// A `pg_hba.conf` entry that lets someone in too easily, and why.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct OpenEntry {
    pub line_number: i32,
    /// `local`, `host`, `hostssl`, `hostnossl`, ...
    pub r#type: String,
    pub database: Vec<String>,
    pub user_name: Vec<String>,
    /// The address (with its netmask as a prefix length), or `all`; absent for `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub auth_method: String,
    /// What is open about it, in words.
    pub findings: Vec<String>,
}

/// What was read of a server's `pg_hba.conf`, and on which server.
#[derive(Debug, Clone)]
pub struct ServerHba {
    /// The server read ([`pgplane_core::model::server_id`]).
    pub server_id: String,
    /// The open entries in file order, or why the file could not be read (the view needs a
    /// superuser admin role).
    pub open: Result<Vec<OpenEntry>, String>,
}

/// Reads the open entries of the server's `pg_hba.conf`.
pub async fn open_hba_entries(spec: &TargetSpec, policy: &TargetPolicy) -> Result<ServerHba, TargetError> {
    let (_, client) = admin_session(spec, policy).await?;
    let id = within(EXCHANGE_TIMEOUT, async {
        Ok(client.query_one(&format!("SELECT {SERVER_ID_SQL}"), &[]).await?)
    })
    .await?;
    let server_id = pgplane_core::model::server_id(id.get(0), id.get(1));
    let rows = within(EXCHANGE_TIMEOUT, async {
        Ok(client
            .query(
                "SELECT line_number, type, coalesce(database, '{}'), coalesce(user_name, '{}'), address,
                        netmask, auth_method
                   FROM pg_catalog.pg_hba_file_rules WHERE error IS NULL ORDER BY line_number",
                &[],
            )
            .await?)
    })
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if e.sqlstate() == Some("42501") => {
            let why =
                "the admin role may not read pg_hba_file_rules (it needs to be a superuser)".to_string();
            return Ok(ServerHba { server_id, open: Err(why) });
        }
        Err(e) => return Err(e),
    };
    let open = rows
        .iter()
        .filter_map(|row| {
            let address: Option<String> = row.get(4);
            let netmask: Option<String> = row.get(5);
            // The netmask as a prefix length (its one bits).
            let prefix = netmask.and_then(|m| m.parse::<std::net::IpAddr>().ok()).map(|m| match m {
                std::net::IpAddr::V4(m) => u32::from(m).count_ones(),
                std::net::IpAddr::V6(m) => u128::from(m).count_ones(),
            });
            let entry = OpenEntry {
                line_number: row.get(0),
                r#type: row.get(1),
                database: row.get(2),
                user_name: row.get(3),
                address: address.map(|a| match prefix {
                    Some(p) => format!("{a}/{p}"),
                    None => a,
                }),
                auth_method: row.get(6),
                findings: Vec::new(),
            };
            with_findings(entry)
        })
        .collect();
    Ok(ServerHba { server_id, open: Ok(open) })
}

/// The entry with what is open about it, or None when nothing is.
fn with_findings(mut entry: OpenEntry) -> Option<OpenEntry> {
    match entry.auth_method.as_str() {
        "trust" => entry
            .findings
            .push("trust: anyone who reaches it logs in as any of its users, with no password".into()),
        "md5" => entry.findings.push("md5: passwords stored as MD5 are accepted (weaker than SCRAM)".into()),
        "password" => entry.findings.push("password: passwords are sent in clear".into()),
        _ => {}
    }
    let everywhere = match entry.address.as_deref() {
        Some("all") => true,
        Some(a) => a.ends_with("/0"),
        None => false,
    };
    if everywhere && entry.auth_method != "reject" {
        entry.findings.push("open to every address".into());
    }
    (!entry.findings.is_empty()).then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, address: Option<&str>, method: &str) -> OpenEntry {
        OpenEntry {
            line_number: 1,
            r#type: kind.into(),
            database: vec!["all".into()],
            user_name: vec!["all".into()],
            address: address.map(str::to_owned),
            auth_method: method.into(),
            findings: Vec::new(),
        }
    }

    #[test]
    fn trust_md5_clear_passwords_and_every_address_are_open() {
        assert!(with_findings(entry("local", None, "peer")).is_none());
        assert!(with_findings(entry("host", Some("127.0.0.1/32"), "scram-sha-256")).is_none());
        assert!(with_findings(entry("host", Some("0.0.0.0/0"), "reject")).is_none());
        let trust = with_findings(entry("local", None, "trust")).unwrap();
        assert_eq!(trust.findings.len(), 1);
        let wide = with_findings(entry("host", Some("0.0.0.0/0"), "md5")).unwrap();
        assert_eq!(wide.findings.len(), 2);
        assert!(with_findings(entry("hostssl", Some("all"), "scram-sha-256")).is_some());
        assert!(with_findings(entry("host", Some("::/0"), "password")).unwrap().findings.len() == 2);
    }
}
