//! Role statements: CREATE ROLE and ALTER ROLE for users (attributes, connection limit and
//! expiry, password verifier, the primary user's ADMIN OPTION, parameter settings, the end of
//! an expired role's sessions), and the statements of a role's deletion (no logins, sessions
//! ended, SECURITY DEFINER routines disarmed, what it owns handed over, DROP ROLE).

use pgplane_target_server::sql::{ident, literal};

use crate::observe::RoleAttrs;
use crate::plan::{ActsAs, AdminMembership, EndSessions, RoleTies, SettingChange, Step};
use pgplane_core::parameters::{sql_value, SqlValue};

/// The attribute clauses of `attrs`; with `was` (ALTER ROLE), only those that differ from it:
/// an admin that is not a superuser may not name SUPERUSER, REPLICATION or BYPASSRLS at all,
/// even to keep them as they are.
fn attrs_sql(attrs: RoleAttrs, was: Option<RoleAttrs>) -> String {
    let mut sql = String::new();
    let before = was.map(RoleAttrs::flags);
    for (i, (name, on)) in attrs.flags().into_iter().enumerate() {
        if before.is_some_and(|b| b[i].1 == on) {
            continue;
        }
        sql.push_str(if on { " " } else { " NO" });
        sql.push_str(name);
    }
    sql.push_str(" INHERIT");
    if was.is_none_or(|w| w.connection_limit != attrs.connection_limit) {
        sql.push_str(&format!(" CONNECTION LIMIT {}", attrs.connection_limit));
    }
    match (attrs.valid_until, was) {
        (None, None) => {}
        (until, Some(w)) if w.valid_until == until => {}
        (until, _) => {
            sql.push_str(" VALID UNTIL ");
            sql.push_str(&literal(&valid_until_text(until)));
        }
    }
    sql
}

/// A `VALID UNTIL` value: the moment in UTC to the microsecond, or `infinity` (never).
fn valid_until_text(until: Option<i64>) -> String {
    until
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| "infinity".into())
}

/// The statement that makes the admin role (the session's `CURRENT_USER`) a member of `name`
/// (the primary user; a role being dropped and its heir, whose objects it hands over), as
/// [`AdminMembership`] says.
pub(crate) fn admin_member_sql(name: &str, membership: AdminMembership) -> String {
    match membership {
        AdminMembership::Member => format!("GRANT {} TO CURRENT_USER", ident(name)),
        AdminMembership::InheritAndSet => {
            format!("GRANT {} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE", ident(name))
        }
    }
}

/// `ALTER ROLE … [IN DATABASE …] SET name TO value` (or `RESET name`) for each change. A
/// value is a quoted literal, a schema list quoted identifiers ([`SqlValue`]).
fn settings_sql(name: &str, settings: &[SettingChange]) -> Vec<String> {
    settings
        .iter()
        .map(|change| {
            let place = match &change.database {
                Some(db) => format!("ALTER ROLE {} IN DATABASE {}", ident(name), ident(db)),
                None => format!("ALTER ROLE {}", ident(name)),
            };
            // The parameter names are pgplane's own list, checked before they were stored.
            match &change.value {
                None => format!("{place} RESET {}", change.name),
                Some(value) => {
                    let value = match sql_value(&change.name, value) {
                        SqlValue::Literal(v) => literal(&v),
                        SqlValue::Identifiers(names) => {
                            names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ")
                        }
                    };
                    format!("{place} SET {} TO {value}", change.name)
                }
            }
        })
        .collect()
}

/// The message that carries out a role's step, if the step issues DDL here in one message
/// (dropping a role takes several, see `pass::apply::drop_roles`): CREATE or ALTER ROLE (the
/// attributes that change, the password verifier), the primary user's ADMIN OPTION on it, the
/// admin role's membership in the primary user, an alternate login's acting as its user's role,
/// parameter settings, and last, for a role that
/// expired, the end of its sessions (the expiry is in place by then: they cannot log in again).
/// One message, so all of it happens or none.
pub(crate) fn role_sql(name: &str, verifier: &str, step: &Step) -> Option<String> {
    let mut statements = Vec::new();
    let (ties, end_sessions) = match step {
        Step::CreateRole { attrs, ties } => {
            statements.push(format!(
                "CREATE ROLE {} WITH{} PASSWORD {}",
                ident(name),
                attrs_sql(*attrs, None),
                literal(verifier)
            ));
            (ties, None)
        }
        Step::AlterRole { attrs, was, set_password, ties, end_sessions } => {
            if attrs != was || *set_password {
                let mut alter = format!("ALTER ROLE {} WITH{}", ident(name), attrs_sql(*attrs, Some(*was)));
                if *set_password {
                    alter.push_str(" PASSWORD ");
                    alter.push_str(&literal(verifier));
                }
                statements.push(alter);
            }
            (ties, *end_sessions)
        }
        _ => return None,
    };
    let RoleTies { grant_admin_to, settings, admin_member, acts_as } = ties;
    statements.extend(grant_admin_to.as_deref().map(|grantee| grant_admin_option_sql(name, grantee)));
    statements.extend(admin_member.map(|m| admin_member_sql(name, m)));
    if let Some(ActsAs { owner, with_options }) = acts_as {
        let options = if *with_options { " WITH INHERIT TRUE, SET TRUE" } else { "" };
        statements.push(format!("GRANT {} TO {}{options}", ident(owner), ident(name)));
        statements.push(format!("ALTER ROLE {} SET role TO {}", ident(name), literal(owner)));
    }
    statements.extend(settings_sql(name, settings));
    if let Some(EndSessions { as_member }) = end_sessions {
        statements.extend(as_member.map(|m| admin_member_sql(name, m)));
        statements.push(terminate_sql(&[name]));
        statements.extend(as_member.map(|_| format!("REVOKE {} FROM CURRENT_USER", ident(name))));
    }
    Some(statements.join("; "))
}

/// Grants the primary user ADMIN OPTION on a role (PostgreSQL 16+), without membership
/// privileges: it may manage the role (a user, an access group) and grant it, not act as it.
pub(crate) fn grant_admin_option_sql(role: &str, grantee: &str) -> String {
    format!("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE", ident(role), ident(grantee))
}

/// Ends the sessions of roles (but the pass's own): those of a role that expired.
pub(crate) fn terminate_sql(roles: &[&str]) -> String {
    terminate_sessions_sql(roles, "")
}

/// Ends the sessions of roles being dropped whose logins are stopped (NOLOGIN), but the
/// pass's own. It follows their NOLOGINs in the same pipeline and passes over a role whose
/// NOLOGIN failed: that role is not dropped in this pass, and its sessions go on.
pub(crate) fn terminate_stopped_sql(roles: &[&str]) -> String {
    terminate_sessions_sql(roles, " AND NOT r.rolcanlogin")
}

/// Ends the sessions of the roles named (`r`, from `pg_roles`) that meet `condition` too,
/// but the pass's own. The sessions are found by the role's oid, which every role may read.
fn terminate_sessions_sql(roles: &[&str], condition: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
           JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
          WHERE r.rolname = ANY({}){condition}
            AND a.pid <> pg_catalog.pg_backend_pid()",
        names_array(roles)
    )
}

/// The roles' names as an array of `name` literals.
fn names_array(roles: &[&str]) -> String {
    let names: Vec<String> = roles.iter().map(|r| literal(r)).collect();
    format!("ARRAY[{}]::pg_catalog.name[]", names.join(", "))
}

/// The first statement of a role's deletion: no new logins.
pub(crate) fn nologin_sql(role: &str) -> String {
    format!("ALTER ROLE {} NOLOGIN", ident(role))
}

/// What a role's deletion runs in each database where it owns something or holds a privilege
/// (REASSIGN and DROP OWNED act on the current database only), in one message (one
/// transaction): its SECURITY DEFINER routines disarmed first ([`disarm_definers_sql`]), then
/// what it owns handed over and its privileges dropped.
pub(crate) fn hand_over_sql(role: &str, reassign_to: &str) -> String {
    format!(
        "{}; REASSIGN OWNED BY {r} TO {to}; DROP OWNED BY {r}",
        disarm_definers_sql(role),
        r = ident(role),
        to = ident(reassign_to)
    )
}

/// Makes every SECURITY DEFINER function and procedure `role` owns in the current database
/// SECURITY INVOKER, so that code a deleted user planted never runs with its heir's rights
/// (whoever may execute it then runs it with their own). Each routine is named by its oid's
/// `regprocedure`, which quotes and qualifies it as needed; the role by a literal, in a `DO`
/// block that is itself one quoted literal.
pub(crate) fn disarm_definers_sql(role: &str) -> String {
    let body = format!(
        "DECLARE f pg_catalog.regprocedure; BEGIN \
         FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p \
           JOIN pg_catalog.pg_roles r ON r.oid = p.proowner \
          WHERE r.rolname = {} AND p.prosecdef LOOP \
           EXECUTE pg_catalog.format('ALTER ROUTINE %s SECURITY INVOKER', f); \
         END LOOP; END",
        literal(role)
    );
    format!("DO {}", literal(&body))
}

/// The last statement of a role's deletion.
pub(crate) fn drop_role_sql(role: &str) -> String {
    drop_roles_sql(&[role])
}

/// The last statement of the deletion of several roles at once (one transaction: should one
/// of them still be depended on, none is dropped).
pub(crate) fn drop_roles_sql(roles: &[&str]) -> String {
    let names: Vec<String> = roles.iter().map(|r| ident(r)).collect();
    format!("DROP ROLE IF EXISTS {}", names.join(", "))
}

/// The deletion of several roles at once when nothing stands in its way, in one message: DROP
/// ROLE only if every one of them exists, has stopped accepting logins and nothing in any
/// database depends on it (`pg_shdepend`); otherwise nothing. A pass sends it right behind
/// the NOLOGINs and the end of their sessions, saving the round trip that reads the
/// dependencies first in the usual case (roles that own nothing). The block is a literal, as
/// in [`hand_over_sql`]: no name can end it.
pub(crate) fn drop_roles_if_clean_sql(roles: &[&str]) -> String {
    let names = names_array(roles);
    let body = format!(
        "BEGIN
           IF (SELECT count(*) FROM pg_catalog.pg_roles r
                WHERE r.rolname = ANY({names}) AND NOT r.rolcanlogin) = {count}
              AND NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend s
                                JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid
                               WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                                 AND r.rolname = ANY({names}))
           THEN {drop}; END IF;
         END",
        count = roles.iter().collect::<std::collections::BTreeSet<_>>().len(),
        drop = drop_roles_sql(roles)
    );
    format!("DO {}", literal(&body))
}

/// How many of the roles named exist (`$1`, names).
pub(crate) const ROLES_LEFT_SQL: &str = "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY($1)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{alter_role, create_role};

    /// A role with LOGIN and nothing else, expiring at `valid_until`.
    fn login_only(valid_until: Option<i64>) -> RoleAttrs {
        RoleAttrs {
            superuser: false,
            createdb: false,
            createrole: false,
            login: true,
            replication: false,
            bypassrls: false,
            connection_limit: -1,
            valid_until,
        }
    }

    #[test]
    fn settings_quote_databases_and_values_and_list_schemas_as_identifiers() {
        let change = |db: Option<&str>, name: &str, value: Option<&str>| SettingChange {
            database: db.map(str::to_string),
            name: name.into(),
            value: value.map(str::to_string),
        };
        let sql = settings_sql(
            "app",
            &[
                change(None, "statement_timeout", Some("30s'; DROP ROLE x; --")),
                change(Some("my db"), "search_path", Some("\"$user\", Public")),
                change(Some("d"), "work_mem", None),
            ],
        );
        assert_eq!(
            sql,
            [
                "ALTER ROLE \"app\" SET statement_timeout TO '30s''; DROP ROLE x; --'",
                "ALTER ROLE \"app\" IN DATABASE \"my db\" SET search_path TO \"$user\", \"public\"",
                "ALTER ROLE \"app\" IN DATABASE \"d\" RESET work_mem"
            ]
        );
    }

    #[test]
    fn an_alter_names_only_the_attributes_that_change() {
        let was = login_only(None);
        let step = |attrs: RoleAttrs, set_password: bool| alter_role(attrs, was, set_password, Vec::new());
        // A password reset names no attribute a non-superuser admin may not touch.
        assert_eq!(
            role_sql("app", "v", &step(was, true)).unwrap(),
            "ALTER ROLE \"app\" WITH INHERIT PASSWORD 'v'"
        );
        let changed = RoleAttrs { createdb: true, connection_limit: 3, ..was };
        assert_eq!(
            role_sql("app", "v", &step(changed, false)).unwrap(),
            "ALTER ROLE \"app\" WITH CREATEDB INHERIT CONNECTION LIMIT 3"
        );
    }

    #[test]
    fn an_expiry_is_a_utc_moment_or_infinity_and_an_expired_roles_sessions_end_last() {
        let was = login_only(Some(1_800_000_000_000_000));
        let step = |attrs: RoleAttrs, end_sessions| Step::AlterRole {
            attrs,
            was,
            set_password: false,
            ties: RoleTies::default(),
            end_sessions,
        };
        let never = RoleAttrs { valid_until: None, ..was };
        assert_eq!(
            role_sql("app", "v", &step(never, None)).unwrap(),
            "ALTER ROLE \"app\" WITH INHERIT VALID UNTIL 'infinity'"
        );
        assert!(role_sql("app", "v", &create_role(was, None))
            .unwrap()
            .contains("CONNECTION LIMIT -1 VALID UNTIL '2027-01-15T08:00:00.000000Z' PASSWORD"));
        // Nothing to alter: the sessions alone, as a member for the time it takes.
        let end = EndSessions { as_member: Some(AdminMembership::Member) };
        let sql = role_sql("app", "v", &step(was, Some(end))).unwrap();
        assert!(
            sql.starts_with("GRANT \"app\" TO CURRENT_USER; SELECT pg_catalog.pg_terminate_backend"),
            "{sql}"
        );
        assert!(sql.ends_with("REVOKE \"app\" FROM CURRENT_USER"), "{sql}");
        let sql = role_sql("app", "v", &step(never, Some(EndSessions { as_member: None }))).unwrap();
        assert!(sql.starts_with("ALTER ROLE") && sql.contains("pg_terminate_backend"), "{sql}");
    }

    #[test]
    fn a_hand_over_disarms_definers_first_and_quotes_any_name() {
        let sql = hand_over_sql("o'brien\"; DROP", "heir");
        assert!(sql.starts_with("DO '"), "{sql}");
        // The role is a literal inside the DO block's literal: its quote doubled twice.
        assert!(sql.contains("rolname = ''o''''brien\"; DROP''"), "{sql}");
        assert!(sql.contains("ALTER ROUTINE %s SECURITY INVOKER"), "{sql}");
        assert!(sql.ends_with(
            "; REASSIGN OWNED BY \"o'brien\"\"; DROP\" TO \"heir\"; DROP OWNED BY \"o'brien\"\"; DROP\""
        ));
    }

    #[test]
    fn a_drop_if_nothing_depends_names_each_role_quoted_inside_its_block() {
        let sql = drop_roles_if_clean_sql(&["app", "o'neil", "x' END; DROP ROLE admin; --"]);
        assert!(sql.starts_with("DO 'BEGIN") && sql.ends_with("END'"), "{sql}");
        // Each name is a literal inside the block's literal: its quotes doubled twice.
        assert!(sql.contains("ARRAY[''app'', ''o''''neil'', ''x'''' END; DROP ROLE admin; --'']"), "{sql}");
        assert!(sql.contains(") = 3"), "every role must have stopped its logins: {sql}");
        assert!(sql.contains(
            "THEN DROP ROLE IF EXISTS \"app\", \"o''neil\", \"x'' END; DROP ROLE admin; --\"; END IF;"
        ));
    }
}
