//! The settings a tenant may give each of its users beyond DigitalOcean's
//! `pg_allow_replication` (a pgplane extension of the user's `settings`): a connection limit,
//! and a short list of session parameters, for every database or for one database of the
//! cluster. Values are checked here before anything is stored, and each has a canonical form
//! (a duration in milliseconds, an amount of memory in kB, a boolean as on/off, a schema list
//! as its names), so that the reconciler finds `30s` set by pgplane and `30000` set by hand
//! equal, and a real difference drift. Parameters outside this list are never set nor reset
//! by pgplane.

use serde::{Deserialize, Serialize};

use crate::names::check_identifier_shape;

/// The connection limit meaning "none" (PostgreSQL's own `-1`).
pub const NO_CONNECTION_LIMIT: i32 = -1;

/// The highest connection limit accepted (far above any server's `max_connections`).
pub const MAX_CONNECTION_LIMIT: i32 = 100_000;

/// How many parameters one user may carry (all databases together).
pub const MAX_PARAMETERS: usize = 32;

/// One parameter of a user: set at each login, in every database (`database` None) or in one
/// database of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleParameter {
    pub name: String,
    /// As the tenant gave it (trimmed), once checked.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// What kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A time, in milliseconds without a unit (0 disables).
    Millis,
    /// An amount of memory, in kB without a unit, at least `min_kb`.
    Memory {
        min_kb: i64,
    },
    Bool,
    /// A list of schema names.
    Schemas,
}

/// The parameters a tenant may set, all of them settable by a role with CREATEROLE (context
/// `user`): none reaches beyond the sessions of the user it is set on.
const PARAMETERS: &[(&str, Kind)] = &[
    ("statement_timeout", Kind::Millis),
    ("lock_timeout", Kind::Millis),
    ("idle_in_transaction_session_timeout", Kind::Millis),
    ("idle_session_timeout", Kind::Millis),
    ("search_path", Kind::Schemas),
    ("work_mem", Kind::Memory { min_kb: 64 }),
    ("default_transaction_read_only", Kind::Bool),
];

/// The names of the parameters a tenant may set, in the order of the documentation.
pub fn parameter_names() -> impl Iterator<Item = &'static str> {
    PARAMETERS.iter().map(|(name, _)| *name)
}

/// Whether pgplane manages `name` on its users (reads it as drift, resets it when unwanted).
pub fn is_managed(name: &str) -> bool {
    kind_of(name).is_some()
}

fn kind_of(name: &str) -> Option<Kind> {
    PARAMETERS.iter().find(|(n, _)| *n == name).map(|(_, kind)| *kind)
}

/// How a value is written in `ALTER ROLE … SET name TO …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// One quoted literal.
    Literal(String),
    /// A list of identifiers, each quoted (a schema list).
    Identifiers(Vec<String>),
}

/// The canonical form of `value` for parameter `name`, or why it is not acceptable (a sentence
/// naming the parameter, fit for an API answer).
pub fn canonical(name: &str, value: &str) -> Result<String, String> {
    let kind = kind_of(name).ok_or_else(|| {
        format!(
            "parameter {name:?} cannot be set: the parameters a user may have are {}",
            parameter_names().collect::<Vec<_>>().join(", ")
        )
    })?;
    let value = value.trim();
    let bad = |why: &str| format!("invalid value {value:?} for parameter {name}: {why}");
    match kind {
        Kind::Millis => {
            let ms = number_with_unit(
                value,
                &[
                    ("us", 1),
                    ("ms", 1_000),
                    ("s", 1_000_000),
                    ("min", 60_000_000),
                    ("h", 3_600_000_000),
                    ("d", 86_400_000_000),
                ],
                1_000,
            )
            .map_err(|why| bad(&why))?;
            // Microseconds round to the nearest millisecond, as PostgreSQL does.
            let ms = (ms + 500) / 1_000;
            if ms > i64::from(i32::MAX) {
                return Err(bad("the most is 2147483647ms (about 24 days)"));
            }
            Ok(format!("{ms}ms"))
        }
        Kind::Memory { min_kb } => {
            let bytes = number_with_unit(
                value,
                &[("B", 1), ("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40)],
                1 << 10,
            )
            .map_err(|why| bad(&why))?;
            let kb = (bytes + 512) >> 10;
            if kb < min_kb {
                return Err(bad(&format!("the least is {min_kb}kB")));
            }
            if kb > i64::from(i32::MAX) {
                return Err(bad("the most is 2147483647kB"));
            }
            Ok(format!("{kb}kB"))
        }
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok("on".into()),
            "off" | "false" | "no" | "0" => Ok("off".into()),
            _ => Err(bad("expected on or off")),
        },
        Kind::Schemas => {
            let schemas = split_schemas(value).map_err(|why| bad(&why))?;
            Ok(schemas
                .iter()
                .map(|s| format!("\"{}\"", s.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(", "))
        }
    }
}

/// How to send the (checked) `value` of parameter `name`.
pub fn sql_value(name: &str, value: &str) -> SqlValue {
    match kind_of(name) {
        Some(Kind::Schemas) => SqlValue::Identifiers(split_schemas(value.trim()).unwrap_or_default()),
        _ => SqlValue::Literal(value.trim().to_string()),
    }
}

/// Whether a value found on the server (`pg_db_role_setting`, as `name=value`) is the same
/// setting as the wanted `value`: equal canonical forms. A value that cannot be read is a
/// difference.
pub fn same_value(name: &str, found: &str, wanted: &str) -> bool {
    match (canonical(name, found), canonical(name, wanted)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks a connection limit: -1 (none) or 0 up to [`MAX_CONNECTION_LIMIT`].
pub fn check_connection_limit(limit: i32) -> Result<(), String> {
    if limit == NO_CONNECTION_LIMIT || (0..=MAX_CONNECTION_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(format!("invalid connection_limit {limit}: -1 (no limit) or 0 to {MAX_CONNECTION_LIMIT}"))
    }
}

/// Checks a user's parameters as a whole: each name and value, each database among
/// `databases` (the cluster's present databases), no parameter twice for the same database, at
/// most [`MAX_PARAMETERS`]. Returns them with trimmed values.
pub fn check_parameters(
    parameters: &[RoleParameter],
    databases: &[&str],
) -> Result<Vec<RoleParameter>, String> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(format!("too many parameters: at most {MAX_PARAMETERS} per user"));
    }
    let mut checked: Vec<RoleParameter> = Vec::with_capacity(parameters.len());
    for p in parameters {
        canonical(&p.name, &p.value)?;
        if let Some(db) = &p.database {
            if !databases.contains(&db.as_str()) {
                return Err(format!(
                    "unknown database {db:?} for parameter {}: the cluster has no such database",
                    p.name
                ));
            }
        }
        if checked.iter().any(|c| c.name == p.name && c.database == p.database) {
            let place =
                p.database.as_deref().map_or("every database".to_string(), |d| format!("database {d:?}"));
            return Err(format!("parameter {} is given twice for {place}", p.name));
        }
        checked.push(RoleParameter { value: p.value.trim().to_string(), ..p.clone() });
    }
    Ok(checked)
}

/// A whole number with an optional unit among `units` (name, size in the smallest unit),
/// `default` being the size of the parameter's own unit; the result in the smallest unit.
fn number_with_unit(value: &str, units: &[(&str, i64)], default: i64) -> Result<i64, String> {
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err("expected a whole number, with an optional unit".into());
    }
    let size = if unit.is_empty() {
        default
    } else {
        units.iter().find(|(u, _)| *u == unit).map(|(_, s)| *s).ok_or_else(|| {
            let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
            format!("unknown unit {unit:?}; units are {}", names.join(", "))
        })?
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| "the number is too large".to_string())
}

/// The schema names of a `search_path` value: comma-separated, each bare (folded to lower
/// case, as PostgreSQL does) or double-quoted (`"$user"`, `""` inside for a quote).
fn split_schemas(value: &str) -> Result<Vec<String>, String> {
    let mut schemas = Vec::new();
    let mut rest = value.trim();
    loop {
        let (name, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                        name.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => name.push(c),
                    None => return Err("a quoted schema name is not closed".into()),
                }
            };
            (name, &quoted[end..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let bare = rest[..end].trim();
            if bare.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(format!("schema name {bare:?} must be double-quoted"));
            }
            (bare.to_lowercase(), &rest[end..])
        };
        check_identifier_shape("a schema name", &name)?;
        schemas.push(name);
        let after = after.trim_start();
        match after.strip_prefix(',') {
            Some(more) => rest = more.trim_start(),
            None if after.is_empty() => return Ok(schemas),
            None => return Err("schema names are separated by commas".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_memory_compare_in_their_base_units() {
        assert_eq!(canonical("statement_timeout", "30s").unwrap(), "30000ms");
        assert!(same_value("statement_timeout", "30000", "30s"));
        assert!(same_value("lock_timeout", "1min", "60s"));
        assert!(!same_value("lock_timeout", "1min", "61s"));
        assert_eq!(canonical("idle_session_timeout", " 0 ").unwrap(), "0ms");
        assert_eq!(canonical("work_mem", "64MB").unwrap(), "65536kB");
        assert!(same_value("work_mem", "65536", "64MB"));
        assert!(canonical("work_mem", "1kB").unwrap_err().contains("the least is 64kB"));
        assert!(canonical("statement_timeout", "30 S").unwrap_err().contains("unknown unit"));
        assert!(canonical("statement_timeout", "1.5s").is_err());
        assert!(canonical("statement_timeout", "-1").is_err());
        assert!(canonical("statement_timeout", "99999999999999999999").is_err());
        assert!(canonical("statement_timeout", "25d").unwrap_err().contains("the most"));
    }

    #[test]
    fn booleans_and_schema_lists_have_one_form() {
        assert_eq!(canonical("default_transaction_read_only", "TRUE").unwrap(), "on");
        assert!(same_value("default_transaction_read_only", "off", "no"));
        assert!(canonical("default_transaction_read_only", "maybe").is_err());
        // As PostgreSQL stores it, and as a tenant writes it.
        assert!(same_value("search_path", "\"$user\", public", "\"$user\",Public"));
        assert!(same_value("search_path", "app, \"We\"\"ird\"", "App , \"We\"\"ird\""));
        assert!(!same_value("search_path", "app", "\"App\""));
        assert_eq!(
            sql_value("search_path", "a, \"B c\""),
            SqlValue::Identifiers(vec!["a".into(), "B c".into()])
        );
        for bad in ["", "a,,b", "a b", "\"open", "a; DROP ROLE x", "\"x\"y"] {
            assert!(canonical("search_path", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_parameters_on_the_clusters_databases_once_each() {
        let p = |name: &str, value: &str, db: Option<&str>| RoleParameter {
            name: name.into(),
            value: value.into(),
            database: db.map(str::to_string),
        };
        let err = check_parameters(&[p("session_authorization", "postgres", None)], &[]).unwrap_err();
        assert!(err.contains("cannot be set") && err.contains("statement_timeout"), "{err}");
        assert!(check_parameters(&[p("role", "x", None)], &[]).is_err());
        let err = check_parameters(&[p("work_mem", "4MB", Some("theirs"))], &["ours"]).unwrap_err();
        assert!(err.contains("unknown database \"theirs\""), "{err}");
        let twice = [p("work_mem", "4MB", Some("ours")), p("work_mem", "8MB", Some("ours"))];
        assert!(check_parameters(&twice, &["ours"]).unwrap_err().contains("twice"));
        let fine = [p("work_mem", " 4MB ", Some("ours")), p("work_mem", "8MB", None)];
        assert_eq!(check_parameters(&fine, &["ours"]).unwrap()[0].value, "4MB");
        assert!(check_connection_limit(-1).is_ok() && check_connection_limit(0).is_ok());
        assert!(check_connection_limit(-2).is_err() && check_connection_limit(100_001).is_err());
    }
}
