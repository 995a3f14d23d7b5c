//! Drift, told from the step an object that was in sync now needs: what changed on the target
//! behind pgplane's back, in words (pure; `pass::drift` logs, counts and records it).

use super::{DesiredRole, RoleTies, Step};
use crate::observe::Observed;

/// What changed behind pgplane's back, when a role that was in sync needs a step.
pub(crate) fn role_drift(role: &DesiredRole, step: &Step, observed: &Observed) -> Option<String> {
    match step {
        Step::CreateRole { .. } => Some("the role was missing on the target".into()),
        Step::AlterRole {
            attrs,
            set_password,
            ties: RoleTies { grant_admin_to, settings, admin_member, .. },
            ..
        } => {
            let mut found = Vec::new();
            if let Some(facts) = observed.roles.get(&role.name) {
                for ((name, want), (_, have)) in attrs.flags().into_iter().zip(facts.attrs.flags()) {
                    if want != have {
                        found.push(format!("{name} was {}", if have { "granted" } else { "removed" }));
                    }
                }
                if attrs.valid_until != facts.attrs.valid_until {
                    found.push(
                        match facts.attrs.valid_until.and_then(chrono::DateTime::from_timestamp_micros) {
                            Some(t) => format!("its expiry was changed to {}", t.to_rfc3339()),
                            None => "its expiry was removed".into(),
                        },
                    );
                }
                if attrs.connection_limit != facts.attrs.connection_limit {
                    found.push(format!(
                        "its connection limit was changed to {}",
                        facts.attrs.connection_limit
                    ));
                }
                for change in settings {
                    let place =
                        change.database.as_ref().map(|d| format!(" in database {d:?}")).unwrap_or_default();
                    let had = facts
                        .settings
                        .iter()
                        .find(|f| f.database == change.database && f.name == change.name);
                    found.push(match (had, &change.value) {
                        (Some(f), Some(_)) => {
                            format!("parameter {}{place} was changed to {:?}", f.name, f.value)
                        }
                        (None, _) => format!("parameter {}{place} was removed", change.name),
                        (Some(f), None) => format!("parameter {}{place} was set to {:?}", f.name, f.value),
                    });
                }
            }
            if *set_password {
                // Hash hygiene: a verifier that is not SCRAM is named (PostgreSQL 10+ hashes every
                // password it is given, as MD5 when `password_encryption` says so).
                let stored = observed.roles.get(&role.name).and_then(|f| f.password.as_deref());
                found.push(match stored {
                    Some(p) if p.starts_with("md5") => "the password was stored as MD5".into(),
                    Some(p) if !p.starts_with("SCRAM-SHA-256$") => {
                        "the password was stored in plaintext".into()
                    }
                    _ => "the password was changed".into(),
                });
            }
            if grant_admin_to.is_some() {
                found.push("the primary user's ADMIN OPTION on it was revoked".into());
            }
            if admin_member.is_some() {
                found.push("pgplane's admin role lost its membership in it".into());
            }
            // Ending an expired role's sessions alone is not drift.
            (!found.is_empty()).then(|| found.join(", "))
        }
        _ => None,
    }
}

/// What changed behind pgplane's back, when a database that was in sync needs a step.
pub(crate) fn database_drift(name: &str, step: &Step, observed: &Observed) -> Option<String> {
    match step {
        Step::CreateDatabase { .. } => Some("the database was missing on the target".into()),
        Step::AlterDatabaseOwner { .. } => Some(format!(
            "its owner was changed to {:?}",
            observed.databases.get(name).map(String::as_str).unwrap_or_default()
        )),
        _ => None,
    }
}
