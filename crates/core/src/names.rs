//! Which names pgplane accepts for clusters, users and databases. Checked before anything is
//! stored, so that a bad name never reaches SQL. Identifiers are always quoted in SQL
//! (`pgplane_target_server::sql`), so any character but control characters is safe; the limits
//! here are PostgreSQL's own (63 bytes, reserved names) plus a few that avoid confusion.

use crate::lifecycle::ObjectKind;

/// PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Role names PostgreSQL reserves or that would shadow built-in roles and keywords.
const RESERVED_ROLES: &[&str] =
    &["postgres", "public", "none", "current_user", "current_role", "session_user", "system_user"];

/// Database names that belong to the server itself.
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

/// Checks a user or database name; the error says what is wrong in a sentence fit for an API
/// answer.
pub fn check_identifier(kind: ObjectKind, name: &str) -> Result<(), String> {
    let noun = kind.noun();
    check_identifier_shape(&format!("{noun} name"), name)?;
    let lower = name.to_lowercase();
    if lower.starts_with("pg_") {
        return Err(format!(
            "{noun} name {name:?} is reserved: names starting with pg_ belong to PostgreSQL"
        ));
    }
    if kind == ObjectKind::User && lower.starts_with(crate::access::GROUP_PREFIX) {
        return Err(format!(
            "user name {name:?} is reserved: names starting with {} are pgplane's access groups",
            crate::access::GROUP_PREFIX
        ));
    }
    let reserved = match kind {
        ObjectKind::User => RESERVED_ROLES,
        ObjectKind::Database => RESERVED_DATABASES,
    };
    if reserved.contains(&lower.as_str()) {
        return Err(format!("{noun} name {name:?} is reserved"));
    }
    Ok(())
}

/// Checks what any PostgreSQL identifier pgplane sends must be, reserved or not (the admin
/// connection's role and database may well be `postgres`): not empty, at most 63 bytes, no
/// control characters (CR, LF and NUL would smuggle lines into a protocol), no padding.
/// `what` names the field in the error ("user name", "pgplane.user").
pub fn check_identifier_shape(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{what} is {} bytes long; PostgreSQL names are limited to {MAX_IDENTIFIER_BYTES} bytes",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    if name.trim() != name {
        return Err(format!("{what} must not start or end with white space"));
    }
    Ok(())
}

/// Checks a target's host: an IP address or a DNS host name (letters, digits and hyphens in
/// dot-separated labels of at most 63 characters, 253 in all). Nothing else reaches the
/// connection code: no socket directories (`/...`), no lists of hosts, no ports, no spaces or
/// control characters.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("pgplane.host {host:?} is not a host name or an IP address"));
    }
    Ok(())
}

/// Checks a cluster name: DigitalOcean's rule, lowercase letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen, 3 to 63 characters.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if !(3..=63).contains(&name.len()) || !ok_chars || !first_ok || name.ends_with('-') {
        return Err(format!(
            "cluster name {name:?} is invalid: use 3 to 63 lowercase letters, digits and hyphens, \
             starting with a letter and not ending with a hyphen"
        ));
    }
    Ok(())
}

/// Checks a connection pool's name, which clients give as the database to connect to: 3 to 60
/// characters (DigitalOcean's limit), lowercase letters, digits, hyphens and underscores,
/// starting with a letter or digit; not PgBouncer's own admin database.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    let ok_chars =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let first_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=60).contains(&name.len()) || !ok_chars || !first_ok {
        return Err(format!(
            "pool name {name:?} is invalid: use 3 to 60 lowercase letters, digits, hyphens and underscores, \
             starting with a letter or a digit"
        ));
    }
    if name == "pgbouncer" {
        return Err("pool name \"pgbouncer\" is reserved: it is PgBouncer's admin console".into());
    }
    Ok(())
}

/// Whether a database or role name can be written in PgBouncer's configuration as it is: no
/// quote, backslash or white space in it. A pool cannot lead to a database, or log in as a
/// user, whose name has one.
pub fn pgbouncer_can_carry(name: &str) -> bool {
    !name.chars().any(|c| c == '\'' || c == '\\' || c == '"' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_plain_and_of_digitalocean_length() {
        for ok in ["backend-pool", "p_01", "9ab"] {
            assert_eq!(check_pool_name(ok), Ok(()), "{ok}");
        }
        for bad in ["ab", "Pool", "-ab", "a b", "pgbouncer", &"a".repeat(61)] {
            assert!(check_pool_name(bad).is_err(), "{bad}");
        }
        assert!(
            pgbouncer_can_carry("defaultdb")
                && pgbouncer_can_carry("app-db_1")
                && pgbouncer_can_carry("Straße")
        );
        assert!(!pgbouncer_can_carry("it's") && !pgbouncer_can_carry("a\\b") && !pgbouncer_can_carry("a b"));
    }

    #[test]
    fn accepts_ordinary_and_unusual_but_safe_names() {
        for name in [
            "app",
            "App-01",
            "a b",
            "o'brien",
            "x\"; drop role postgres; --",
            "back\\slash",
            "ünïcødé-名前",
            "emoji-🐘",
            "a/b?c%d",
        ] {
            assert_eq!(check_identifier(ObjectKind::User, name), Ok(()), "{name}");
            assert_eq!(check_identifier(ObjectKind::Database, name), Ok(()), "{name}");
        }
    }

    #[test]
    fn enforces_the_63_byte_limit_in_bytes_not_characters() {
        let at_limit = "a".repeat(63);
        assert!(check_identifier(ObjectKind::User, &at_limit).is_ok());
        let over = "a".repeat(64);
        let err = check_identifier(ObjectKind::User, &over).unwrap_err();
        assert!(err.contains("64 bytes"), "{err}");
        // 21 three-byte characters are 63 bytes; one more makes 66.
        assert!(check_identifier(ObjectKind::Database, &"名".repeat(21)).is_ok());
        assert!(check_identifier(ObjectKind::Database, &"名".repeat(22)).is_err());
    }

    #[test]
    fn rejects_empty_control_characters_and_padding() {
        assert!(check_identifier(ObjectKind::User, "").is_err());
        assert!(check_identifier(ObjectKind::User, "a\0b").is_err());
        assert!(check_identifier(ObjectKind::User, "a\nb").is_err());
        assert!(check_identifier(ObjectKind::User, "\u{7f}").is_err());
        assert!(check_identifier(ObjectKind::User, " a").is_err());
        assert!(check_identifier(ObjectKind::User, "a ").is_err());
    }

    #[test]
    fn rejects_reserved_names_in_any_case() {
        for name in [
            "postgres",
            "PUBLIC",
            "none",
            "current_user",
            "session_user",
            "pg_monitor",
            "PG_x",
            "pgplane_access_ro_1",
        ] {
            assert!(check_identifier(ObjectKind::User, name).is_err(), "{name}");
        }
        for name in ["postgres", "template0", "Template1", "pg_anything"] {
            assert!(check_identifier(ObjectKind::Database, name).is_err(), "{name}");
        }
        // "public" is a fine database name; it is only reserved for roles.
        assert!(check_identifier(ObjectKind::Database, "public").is_ok());
    }

    #[test]
    fn connection_identifiers_may_be_reserved_but_never_carry_control_characters() {
        assert!(check_identifier_shape("pgplane.user", "postgres").is_ok());
        for bad in ["", "a\r\nb", "a\0", &"a".repeat(64), " x"] {
            let err = check_identifier_shape("pgplane.user", bad).unwrap_err();
            assert!(err.starts_with("pgplane.user "), "{err}");
        }
    }

    #[test]
    fn hosts_are_names_or_addresses_and_nothing_else() {
        for ok in ["127.0.0.1", "::1", "localhost", "db-1.internal.example.com", "db.example.com.", "fe80::1"]
        {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/var/run/postgresql",
            "@abstract",
            "a,b",
            "host:5432",
            "a b",
            "db\r\nuser=x",
            "db\0",
            "-lead.example",
            "under_score",
            "[::1]",
            &"a".repeat(64),
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cluster_names_follow_digitalocean_rules() {
        for ok in ["local", "backend-01", "abc"] {
            assert!(check_cluster_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "Backend", "back_end", "-abc", "abc-", "1abc", &"a".repeat(64)] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
