//! Access-level statements: the NOLOGIN group roles (created, fixed, dropped), users'
//! memberships of them (granted by the primary user on 16+), and the levels' privileges in a
//! database (USAGE on schemas, privileges on all tables and sequences, default privileges).

use pgplane_target_server::sql::ident;

use super::roles::grant_admin_option_sql;

/// `CREATE ROLE` for a group and CONNECT on its database, with ADMIN OPTION for
/// `admin_option_to` (the primary user, 16+): one message. No comment: nothing on the server
/// tells whose group it is.
pub(crate) fn create_group_sql(role: &str, database: &str, admin_option_to: Option<&str>) -> String {
    let mut sql = format!(
        "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; {}",
        ident(role),
        grant_connect_sql(database, role),
    );
    if let Some(grantee) = admin_option_to {
        sql.push_str("; ");
        sql.push_str(&grant_admin_option_sql(role, grantee));
    }
    sql
}

/// CONNECT on a group's database.
pub(crate) fn grant_connect_sql(database: &str, role: &str) -> String {
    format!("GRANT CONNECT ON DATABASE {} TO {}", ident(database), ident(role))
}

/// A member inherits the group's privileges; with a grantor (16+) it cannot SET ROLE to it,
/// and the grant is the grantor's.
pub(crate) fn grant_membership_sql(role: &str, user: &str, granted_by: Option<&str>) -> String {
    match granted_by {
        Some(grantor) => format!(
            "GRANT {} TO {} WITH INHERIT TRUE, SET FALSE GRANTED BY {}",
            ident(role),
            ident(user),
            ident(grantor)
        ),
        None => format!("GRANT {} TO {}", ident(role), ident(user)),
    }
}

/// Revokes a membership (with a grantor, 16+: that grantor's only).
pub(crate) fn revoke_membership_sql(role: &str, member: &str, granted_by: Option<&str>) -> String {
    format!("REVOKE {} FROM {}{}", ident(role), ident(member), granted_by_clause(granted_by))
}

/// Revokes a member's ADMIN OPTION on a group (with a grantor, 16+: that grantor's only).
pub(crate) fn revoke_admin_option_sql(role: &str, member: &str, granted_by: Option<&str>) -> String {
    format!("REVOKE ADMIN OPTION FOR {} FROM {}{}", ident(role), ident(member), granted_by_clause(granted_by))
}

fn granted_by_clause(granted_by: Option<&str>) -> String {
    granted_by.map(|g| format!(" GRANTED BY {}", ident(g))).unwrap_or_default()
}

/// Takes LOGIN and any password from a group.
pub(crate) fn nologin_sql(role: &str) -> String {
    format!("ALTER ROLE {} NOLOGIN PASSWORD NULL", ident(role))
}

/// Removes the comment groups of the time of predictable names carried (it named the cluster).
pub(crate) fn clear_comment_sql(role: &str) -> String {
    format!("COMMENT ON ROLE {} IS NULL", ident(role))
}

/// USAGE on a schema.
pub(crate) fn grant_usage_sql(schema: &str, role: &str) -> String {
    format!("GRANT USAGE ON SCHEMA {} TO {}", ident(schema), ident(role))
}

/// A level's privileges on every `objects` (TABLES, SEQUENCES) of a schema.
pub(crate) fn grant_on_all_sql(privileges: &[&str], objects: &str, schema: &str, role: &str) -> String {
    format!("GRANT {} ON ALL {objects} IN SCHEMA {} TO {}", privileges.join(", "), ident(schema), ident(role))
}

/// A level's privileges on the `objects` (TABLES, SEQUENCES, SCHEMAS) `owner` creates later.
pub(crate) fn default_privileges_sql(owner: &str, privileges: &[&str], objects: &str, role: &str) -> String {
    format!(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT {} ON {objects} TO {}",
        ident(owner),
        privileges.join(", "),
        ident(role)
    )
}

/// Drops what groups own and every privilege granted to them in the current database.
pub(crate) fn drop_owned_sql(roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| ident(r)).collect();
    format!("DROP OWNED BY {}", roles.join(", "))
}
