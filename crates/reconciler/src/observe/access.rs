//! Observing access levels on a target: the groups' facts on the admin session (the role under
//! each recorded name, its attributes, CONNECT, memberships), and, database by database, what
//! each group lacks there (schemas, tables, sequences, default privileges).

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use pgplane_target_server::TargetError;

use crate::plan::access::{DatabaseFacts, Group, GroupFacts, Inputs, Membership};

/// The schemas a level covers: all but PostgreSQL's own.
const USER_SCHEMAS: &str = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// Reads the groups' facts on the admin session: the role under each name (its oid, LOGIN and,
/// for a superuser admin, whether it has a password), CONNECT, and every membership row. Two
/// queries, pipelined.
pub(crate) async fn observe_groups(
    client: &Client,
    inputs: &Inputs<'_>,
) -> Result<HashMap<String, GroupFacts>, TargetError> {
    let roles: Vec<&str> = inputs.groups.values().map(|g| g.role.as_str()).collect();
    let databases: Vec<&str> = inputs.groups.values().map(|g| g.database.as_str()).collect();
    let primary = inputs.cluster.primary_user.as_str();
    // pg_authid (with rolpassword) is readable by superusers only; pg_roles masks passwords.
    let (catalog, password) = if inputs.admin_is_superuser {
        ("pg_authid", "r.rolpassword IS NOT NULL")
    } else {
        ("pg_roles", "false")
    };
    let found_sql = format!(
        "SELECT c.name, r.oid::int8, d.oid IS NOT NULL,
                coalesce(r.oid IS NOT NULL AND d.oid IS NOT NULL
                         AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT'), false),
                coalesce(r.rolcanlogin, false), coalesce({password}, false)
           FROM unnest($1::text[], $2::text[]) AS c(name, db)
           LEFT JOIN pg_catalog.{catalog} r ON r.rolname = c.name
           LEFT JOIN pg_catalog.pg_database d ON d.datname = c.db"
    );
    // On 16+ only the primary user's grant, with INHERIT and without SET, is pgplane's.
    let ours = if inputs.grantor_keyed() {
        "m.grantor = p.oid AND m.inherit_option AND NOT m.set_option"
    } else {
        "true"
    };
    let members_sql = format!(
        "SELECT g.rolname::text, u.rolname::text, coalesce(gr.rolname::text, ''), m.admin_option, {ours}
           FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
           JOIN pg_catalog.pg_roles u ON u.oid = m.member
           LEFT JOIN pg_catalog.pg_roles gr ON gr.oid = m.grantor
           LEFT JOIN pg_catalog.pg_roles p ON p.rolname = $2
          WHERE g.rolname = ANY($1)"
    );
    let by_group: [&(dyn ToSql + Sync); 2] = [&roles, &databases];
    let by_member: [&(dyn ToSql + Sync); 2] = [&roles, &primary];
    let (found, members) =
        futures::try_join!(client.query(&found_sql, &by_group), client.query(&members_sql, &by_member))?;
    let mut facts: HashMap<String, GroupFacts> = found
        .iter()
        .map(|row| {
            let facts = GroupFacts {
                oid: row.get(1),
                database_exists: row.get(2),
                connect: row.get(3),
                login: row.get(4),
                password: row.get(5),
                memberships: Vec::new(),
            };
            (row.get::<_, String>(0), facts)
        })
        .collect();
    for row in &members {
        let Some(group) = facts.get_mut(row.get::<_, &str>(0)) else { continue };
        group.memberships.push(Membership {
            member: row.get(1),
            grantor: row.get(2),
            admin: row.get(3),
            pgplanes: row.get(4),
        });
    }
    Ok(facts)
}

/// Observes what `groups` lack in the database `client` is connected to.
pub(crate) async fn observe_database(
    client: &Client,
    groups: &[(Group, bool)],
    primary: &str,
) -> Result<DatabaseFacts, TargetError> {
    let roles: Vec<&str> = groups.iter().map(|(g, _)| g.role.as_str()).collect();
    let tables: Vec<String> = groups.iter().map(|(g, _)| g.level.privileges().tables.join(",")).collect();
    let sequences: Vec<String> =
        groups.iter().map(|(g, _)| g.level.privileges().sequences.join(",")).collect();
    let all_of = |check: &str, list: &str| {
        format!(
            "NOT (SELECT bool_and(pg_catalog.{check}(c.g, t.oid, p))
                    FROM unnest(string_to_array(c.{list}, ',')) AS p)"
        )
    };
    // One scan of the database's relations (pg_class has no index on relnamespace alone), each
    // checked against every group's level; then one row per (group, schema) lacking anything.
    let schemas_sql = format!(
        "SELECT c.g, n.nspname::text,
                NOT pg_catalog.has_schema_privilege(c.g, n.oid, 'USAGE'),
                coalesce(bool_or(t.relkind <> 'S' AND {tables}), false),
                coalesce(bool_or(t.relkind = 'S' AND {sequences}), false)
           FROM unnest($1::text[], $2::text[], $3::text[]) AS c(g, tp, sp)
          CROSS JOIN pg_catalog.pg_namespace n
           LEFT JOIN pg_catalog.pg_class t
                  ON t.relnamespace = n.oid AND t.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          WHERE {USER_SCHEMAS}
          GROUP BY c.g, n.oid, n.nspname
         HAVING NOT pg_catalog.has_schema_privilege(c.g, n.oid, 'USAGE')
             OR coalesce(bool_or(t.relkind <> 'S' AND {tables}), false)
             OR coalesce(bool_or(t.relkind = 'S' AND {sequences}), false)
          ORDER BY 1, 2",
        tables = all_of("has_table_privilege", "tp"),
        sequences = all_of("has_sequence_privilege", "sp"),
    );
    let by_group: [&(dyn ToSql + Sync); 3] = [&roles, &tables, &sequences];
    let by_grantee: [&(dyn ToSql + Sync); 2] = [&roles, &primary];
    let (schemas, defaults) = futures::try_join!(
        client.query(&schemas_sql, &by_group),
        client.query(
            "SELECT c.g, d.defaclobjtype::text, a.privilege_type::text
               FROM unnest($1::text[]) AS c(g)
               JOIN pg_catalog.pg_roles r ON r.rolname = c.g
               JOIN pg_catalog.pg_default_acl d
                 ON d.defaclnamespace = 0
                AND d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
              CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a
              WHERE a.grantee = r.oid",
            &by_grantee,
        ),
    )?;
    let mut facts = DatabaseFacts {
        schemas: schemas.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect(),
        ..DatabaseFacts::default()
    };
    for row in &defaults {
        facts.defaults.entry((row.get(0), row.get(1))).or_default().insert(row.get(2));
    }
    Ok(facts)
}

/// The schemas of the database `client` is connected to (PostgreSQL's own aside), each with
/// whether it holds tables (or views) and sequences: what a group created later lacks there.
pub(crate) async fn observe_schemas(client: &Client) -> Result<Vec<(String, bool, bool)>, TargetError> {
    let sql = format!(
        "SELECT n.nspname::text,
                EXISTS (SELECT 1 FROM pg_catalog.pg_class t
                         WHERE t.relnamespace = n.oid AND t.relkind IN ('r', 'p', 'v', 'm', 'f')),
                EXISTS (SELECT 1 FROM pg_catalog.pg_class t WHERE t.relnamespace = n.oid AND t.relkind = 'S')
           FROM pg_catalog.pg_namespace n
          WHERE {USER_SCHEMAS}
          ORDER BY 1"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}
