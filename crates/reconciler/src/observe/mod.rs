//! Reading a target's catalogs: the roles and databases pgplane manages (by name), their
//! attributes (expiry included), sessions and owners, and (for a superuser admin) the stored
//! password verifiers; the access levels' facts are read in `access`.

pub(crate) mod access;
pub(crate) mod rights;

use std::collections::{HashMap, HashSet};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use pgplane_core::model::Cluster;
use pgplane_core::parameters::is_managed;
use pgplane_target_server::primary::{foreign_grants_sql, grants_of, ForeignGrant};
use pgplane_target_server::TargetError;

/// A role's attributes as the catalog shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleFacts {
    pub attrs: RoleAttrs,
    /// `pg_authid.rolpassword`; None when the admin cannot read it (not a superuser).
    pub password: Option<String>,
    /// Its settings of the parameters pgplane manages (`pgplane_core::parameters`), from
    /// `pg_db_role_setting`.
    pub settings: Vec<FoundSetting>,
    /// How many sessions are logged in as it (`pg_stat_activity`); counted only for the roles
    /// named in [`Names::sessions_of`] (0 for the others).
    pub sessions: i64,
    /// The roles it is a direct member of; read only for [`Names::memberships_of`].
    pub member_of: Vec<String>,
    /// The role its sessions start as (`ALTER ROLE … SET role`, in every database), if any.
    pub acts_as: Option<String>,
}

/// A parameter set on a role (`ALTER ROLE … [IN DATABASE …] SET`), as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundSetting {
    /// None: every database.
    pub database: Option<String>,
    /// The owner of `database`.
    pub database_owner: Option<String>,
    pub name: String,
    pub value: String,
}

/// The role attributes pgplane sets and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoleAttrs {
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub login: bool,
    pub replication: bool,
    pub bypassrls: bool,
    /// -1: no limit.
    pub connection_limit: i32,
    /// `VALID UNTIL`, in microseconds since the Unix epoch; None: never (`infinity` too).
    pub valid_until: Option<i64>,
}

impl RoleAttrs {
    /// The attributes written as flags (`NAME` or `NONAME`), in the order statements name them.
    pub fn flags(self) -> [(&'static str, bool); 6] {
        [
            ("LOGIN", self.login),
            ("SUPERUSER", self.superuser),
            ("CREATEDB", self.createdb),
            ("CREATEROLE", self.createrole),
            ("REPLICATION", self.replication),
            ("BYPASSRLS", self.bypassrls),
        ]
    }
}

/// What a pass (or a preview) observes: its roles and databases, by name, and among the roles
/// those whose sessions are counted (the expired ones, whose sessions end) and those whose
/// memberships are read (alternate logins, which act as their user). Reading sessions and
/// memberships costs every pass that needs neither nothing.
#[derive(Debug, Default)]
pub(crate) struct Names<'a> {
    pub roles: Vec<&'a str>,
    pub databases: Vec<&'a str>,
    pub sessions_of: Vec<&'a str>,
    pub memberships_of: Vec<&'a str>,
}

/// What one pass sees on a target.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub version_num: i32,
    pub version: String,
    /// The server's identity ([`pgplane_core::model::server_id`]).
    pub server_id: String,
    pub admin_is_superuser: bool,
    pub roles: HashMap<String, RoleFacts>,
    /// Managed databases that exist, with their owner.
    pub databases: HashMap<String, String>,
    /// Roles on which the primary user holds ADMIN OPTION (matters on PostgreSQL 16+).
    pub primary_admin_of: HashSet<String>,
    /// Whether the admin role may act as the primary user and holds its privileges (SET and
    /// INHERIT on 16+, an inheriting membership before), which a non-superuser needs to create
    /// databases owned by it and set default privileges for it. False while the primary user
    /// does not exist.
    pub admin_sets_primary: bool,
    /// The primary user's memberships pgplane did not give it
    /// (`pgplane_target_server::primary`), read when the primary user is among the observed
    /// roles (empty otherwise, or when it does not exist).
    pub primary_foreign: Vec<ForeignGrant>,
    /// The other pgplane processes (`pgplane_core::instance`) with a session of the admin role
    /// on the server: live replicas, or one that died mid-pass (see `pass::connect::open`).
    /// Idle sessions count: one that has just ended a transaction of a pipeline shows idle
    /// before it reads the next statement already sent to it.
    pub others_here: Vec<String>,
}

/// Runs a query through the session's statement cache: parsed and planned once per session,
/// then one round trip per run.
pub(crate) async fn query(
    client: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// The settings of the parameters pgplane manages, from a row of the roles query.
fn settings_of(row: &Row) -> Vec<FoundSetting> {
    let databases: Vec<Option<String>> = row.get::<_, Option<_>>(9).unwrap_or_default();
    let owners: Vec<Option<String>> = row.get::<_, Option<_>>(10).unwrap_or_default();
    let settings: Vec<String> = row.get::<_, Option<_>>(11).unwrap_or_default();
    databases
        .into_iter()
        .zip(owners)
        .zip(settings)
        .filter_map(|((database, database_owner), setting)| {
            let (name, value) = setting.split_once('=')?;
            is_managed(name).then(|| FoundSetting {
                database,
                database_owner,
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

/// The role a row's sessions start as: its `role` setting in every database.
fn acts_as(row: &Row) -> Option<String> {
    let databases: Vec<Option<String>> = row.get::<_, Option<_>>(9).unwrap_or_default();
    let settings: Vec<String> = row.get::<_, Option<_>>(11).unwrap_or_default();
    databases.into_iter().zip(settings).find_map(|(database, setting)| {
        setting.strip_prefix("role=").filter(|_| database.is_none()).map(str::to_string)
    })
}

/// What the catalog queries of [`observe`] depend on: which catalog shows passwords, and the
/// server's version. A pooled session remembers them from its last observation
/// (`crate::pools::Session::known`), so that its next observation need not wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub admin_is_superuser: bool,
    pub version_num: i32,
}

/// Observes the named roles and databases: the server's facts (they say which catalog shows
/// passwords, and whether the admin may act as the primary user), then the catalog queries
/// pipelined, in one round trip (the primary user's foreign memberships among them when it is
/// named). With what the session `known` from its last observation, the catalog queries go in
/// the same round trip as the facts, and run again only if the facts differ (the admin was
/// made or unmade a superuser, the server upgraded).
pub(crate) async fn observe(
    client: &ClientWrapper,
    names: &Names<'_>,
    cluster: &Cluster,
    known: Option<Known>,
) -> Result<Observed, TargetError> {
    let primary_user = cluster.primary_user.as_str();
    let (server, guessed) = match known {
        Some(guess) => {
            let (server, catalog) = futures::join!(
                server_facts(client, primary_user),
                read_catalog(client, names, cluster, guess)
            );
            (server?, Some((guess, catalog)))
        }
        None => (server_facts(client, primary_user).await?, None),
    };
    let facts = server_known(&server);
    let catalog = match guessed {
        Some((guess, catalog)) if guess == facts => catalog?,
        _ => read_catalog(client, names, cluster, facts).await?,
    };
    let Catalog { roles, databases, primary_admin_of, foreign } = catalog;
    let roles = roles
        .into_iter()
        .map(|row| {
            let facts = RoleFacts {
                attrs: RoleAttrs {
                    superuser: row.get(1),
                    createdb: row.get(2),
                    createrole: row.get(3),
                    login: row.get(4),
                    replication: row.get(5),
                    bypassrls: row.get(6),
                    connection_limit: row.get(8),
                    valid_until: row.get(12),
                },
                password: row.get(7),
                settings: settings_of(&row),
                sessions: row.get(13),
                member_of: row.get::<_, Option<Vec<String>>>(14).unwrap_or_default(),
                acts_as: acts_as(&row),
            };
            (row.get::<_, String>(0), facts)
        })
        .collect();
    let databases =
        databases.into_iter().map(|row| (row.get::<_, String>(0), row.get::<_, String>(1))).collect();
    let primary_admin_of = primary_admin_of.into_iter().map(|row| row.get::<_, String>(0)).collect();
    Ok(Observed {
        version_num: server.get(0),
        version: server.get(1),
        server_id: pgplane_core::model::server_id(server.get(3), server.get(4)),
        admin_is_superuser: server.get(2),
        roles,
        databases,
        primary_admin_of,
        admin_sets_primary: server.get::<_, Option<bool>>(5).unwrap_or(false),
        others_here: server.get(6),
        primary_foreign: grants_of(&foreign),
    })
}

/// The server's facts: a row of version number, version, superuser admin, the server's
/// identity (two columns) and whether the admin may act as the primary user.
async fn server_facts(client: &ClientWrapper, primary_user: &str) -> Result<Row, TargetError> {
    let server_sql = format!(
        "SELECT current_setting('server_version_num')::int4, current_setting('server_version'),
                (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), {},
                (SELECT CASE WHEN current_setting('server_version_num')::int4 >= 160000
                             THEN pg_catalog.pg_has_role(current_user, r.oid, 'SET')
                                  AND pg_catalog.pg_has_role(current_user, r.oid, 'USAGE')
                             ELSE pg_catalog.pg_has_role(current_user, r.oid, 'USAGE') END
                   FROM pg_catalog.pg_roles r WHERE r.rolname = $1),
                ARRAY(SELECT DISTINCT a.application_name FROM pg_catalog.pg_stat_activity a
                       WHERE a.usename = current_user
                         AND a.application_name LIKE '{}%' AND a.application_name <> $2)",
        pgplane_target_server::SERVER_ID_SQL,
        pgplane_core::instance::PREFIX
    );
    query(client, &server_sql, &[&primary_user, &pgplane_core::instance::name()])
        .await?
        .pop()
        .ok_or_else(|| TargetError::Internal("the server facts query returned no row".into()))
}

/// What the catalog queries depend on, from the server's facts.
fn server_known(server: &Row) -> Known {
    Known { version_num: server.get(0), admin_is_superuser: server.get(2) }
}

impl Observed {
    /// What the next observation on the same session may take for granted (see [`Known`]).
    pub(crate) fn known(&self) -> Known {
        Known { admin_is_superuser: self.admin_is_superuser, version_num: self.version_num }
    }
}

/// The catalog queries' rows.
struct Catalog {
    roles: Vec<Row>,
    databases: Vec<Row>,
    primary_admin_of: Vec<Row>,
    foreign: Vec<Row>,
}

/// The catalog queries of [`observe`], pipelined, for a server as `known`.
async fn read_catalog(
    client: &ClientWrapper,
    names: &Names<'_>,
    cluster: &Cluster,
    known: Known,
) -> Result<Catalog, tokio_postgres::Error> {
    let (primary_user, admin_user) = (cluster.primary_user.as_str(), cluster.admin_user.as_str());
    let Known { admin_is_superuser, version_num } = known;
    // pg_authid (with rolpassword) is readable by superusers only; pg_roles masks passwords.
    // Each role's parameter settings come along, with the database each applies in and its
    // owner (one row per setting, aggregated into parallel arrays, grouped once for the whole
    // catalog: a LATERAL per role costs 300 scans of it, 0.3 ms a pass at 300 users).
    let roles_sql = format!(
        "SELECT a.rolname, a.rolsuper, a.rolcreatedb, a.rolcreaterole, a.rolcanlogin, a.rolreplication,
                a.rolbypassrls, {}, a.rolconnlimit, s.databases, s.owners, s.settings,
                CASE WHEN a.rolvaliduntil IS NULL OR a.rolvaliduntil = 'infinity' THEN NULL
                     WHEN a.rolvaliduntil = '-infinity' THEN (-9223372036854775807)::int8
                     ELSE (extract(epoch FROM a.rolvaliduntil) * 1000000)::int8 END,
                coalesce(p.sessions, 0), m.member_of
           FROM pg_catalog.{} a
           LEFT JOIN (SELECT usesysid, count(*) AS sessions FROM pg_catalog.pg_stat_activity
                       WHERE cardinality($2::text[]) > 0 AND usename::text = ANY($2)
                       GROUP BY usesysid) p ON p.usesysid = a.oid
           LEFT JOIN (SELECT am.member, array_agg(g.rolname::text) AS member_of
                        FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles g ON g.oid = am.roleid
                       WHERE cardinality($3::text[]) > 0
                         AND am.member IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ANY($3))
                       GROUP BY am.member) m ON m.member = a.oid
           LEFT JOIN (
                SELECT rs.setrole, array_agg(d.datname) AS databases,
                       array_agg(pg_catalog.pg_get_userbyid(d.datdba)) AS owners,
                       array_agg(c.setting) AS settings
                  FROM pg_catalog.pg_db_role_setting rs
                  LEFT JOIN pg_catalog.pg_database d ON d.oid = rs.setdatabase
                 CROSS JOIN LATERAL pg_catalog.unnest(rs.setconfig) AS c(setting)
                 GROUP BY rs.setrole) s ON s.setrole = a.oid
          WHERE a.rolname = ANY($1)",
        if admin_is_superuser { "a.rolpassword" } else { "NULL::text" },
        if admin_is_superuser { "pg_authid" } else { "pg_roles" }
    );
    let by_role: [&(dyn ToSql + Sync); 3] = [&names.roles, &names.sessions_of, &names.memberships_of];
    let by_database: [&(dyn ToSql + Sync); 1] = [&names.databases];
    let by_grantee: [&(dyn ToSql + Sync); 2] = [&primary_user, &names.roles];
    let by_primary: [&(dyn ToSql + Sync); 2] = [&primary_user, &admin_user];
    let foreign = async {
        if !names.roles.contains(&primary_user) {
            return Ok(Vec::new());
        }
        query(client, &foreign_grants_sql(version_num), &by_primary).await
    };
    let (roles, databases, primary_admin_of, foreign) = futures::try_join!(
        query(client, &roles_sql, &by_role),
        query(
            client,
            "SELECT datname, pg_catalog.pg_get_userbyid(datdba)
               FROM pg_catalog.pg_database WHERE datname = ANY($1)",
            &by_database,
        ),
        // From each named role to its membership of the primary user (an index probe each,
        // forced by LATERAL ... LIMIT): the planner, left alone, scans every role the primary
        // user holds ADMIN OPTION on, thousands of them, to find a pass's few.
        query(
            client,
            "SELECT r.rolname FROM pg_catalog.pg_roles r
              CROSS JOIN LATERAL (
                    SELECT 1 FROM pg_catalog.pg_auth_members m
                     WHERE m.roleid = r.oid AND m.admin_option
                       AND m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
                     LIMIT 1) admin
              WHERE r.rolname = ANY($2)",
            &by_grantee,
        ),
        foreign
    )?;
    Ok(Catalog { roles, databases, primary_admin_of, foreign })
}
