//! A primary user's memberships that pgplane did not give it. A primary user adopted at
//! registration (or after a move) may have been pre-created by another tenant, who (with
//! CREATEROLE, on PostgreSQL 16 and later) holds ADMIN OPTION on it as its creator and may
//! have made itself a member, or made it a member of its own roles. pgplane keeps none of it:
//! the only role that may hold the primary user (as member or ADMIN holder) is the cluster's
//! admin role, and the only memberships the primary user may hold are ADMIN OPTION without
//! INHERIT and SET (PostgreSQL 16+): the one pgplane grants on the cluster's users and access
//! groups, and the one PostgreSQL gives a CREATEROLE role on the roles it creates itself. Power
//! over a role is not a trap; acting as another role (INHERIT, SET ROLE) is. On 15 and older a
//! membership always carries both, and the primary user gets none from pgplane.
//! [`foreign_grants`] reads them (registration dry runs count them; passes read them with
//! their observation, revoke them and record drift); [`revoke_sql`] removes one, naming its
//! grantor on 16+ where memberships are keyed by grantor.

use serde::Serialize;
use tokio_postgres::{Client, Row};
use utoipa::ToSchema;

use crate::error::TargetError;
use crate::policy::TargetPolicy;
use crate::probe::admin_session;
use crate::spec::{within, TargetSpec, EXCHANGE_TIMEOUT};
use crate::sql::ident;

/// From this version memberships are keyed by grantor and carry INHERIT and SET options.
const GRANTOR_KEYED_VERSION_NUM: i32 = 160000;

/// Which way a foreign membership goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Another role holds the primary user (as a member, or with ADMIN OPTION).
    Holder,
    /// The primary user is a member of another role (with INHERIT or SET).
    MemberOf,
}

/// One membership pgplane did not give the primary user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignGrant {
    pub side: Side,
    /// The other role.
    pub role: String,
    /// Who granted it (None: the grantor is unknown).
    pub grantor: Option<String>,
    pub admin_option: bool,
}

/// What stands in a plan for a role of a foreign membership (it may be another team's).
pub const UNNAMED_ROLE: &str = "<another role>";

impl ForeignGrant {
    /// The grant with the other roles' names replaced by [`UNNAMED_ROLE`], as plans show it.
    pub fn unnamed(&self) -> ForeignGrant {
        let unnamed = || UNNAMED_ROLE.to_string();
        ForeignGrant { role: unnamed(), grantor: self.grantor.as_ref().map(|_| unnamed()), ..self.clone() }
    }
}

/// How many foreign memberships a primary user has, by kind (no names: they may be another
/// team's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct GrantCounts {
    /// Roles that are members of the primary user (without ADMIN OPTION).
    pub members: usize,
    /// Roles that hold ADMIN OPTION on the primary user.
    pub admin_holders: usize,
    /// Roles the primary user is a member of (with INHERIT or SET).
    pub memberships: usize,
}

impl GrantCounts {
    pub fn of(grants: &[ForeignGrant]) -> Self {
        let mut counts = GrantCounts::default();
        for g in grants {
            match (g.side, g.admin_option) {
                (Side::Holder, true) => counts.admin_holders += 1,
                (Side::Holder, false) => counts.members += 1,
                (Side::MemberOf, _) => counts.memberships += 1,
            }
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        *self == GrantCounts::default()
    }

    /// "2 members, 1 ADMIN holder and 1 membership of another role", for messages.
    pub fn describe(&self) -> String {
        let part = |n: usize, one: &str, many: &str| {
            (n > 0).then(|| format!("{n} {}", if n == 1 { one } else { many }))
        };
        let parts: Vec<String> = [
            part(self.members, "member", "members"),
            part(self.admin_holders, "ADMIN OPTION holder", "ADMIN OPTION holders"),
            part(self.memberships, "membership of another role", "memberships of other roles"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.as_slice() {
            [] => "no foreign memberships".into(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }
}

/// The memberships pgplane did not give `primary_user` (see the module header), `admin_role`
/// (pgplane's own login) aside, on a server of `version_num`. Empty when the role is absent.
pub async fn foreign_grants(
    client: &Client,
    primary_user: &str,
    admin_role: &str,
    version_num: i32,
) -> Result<Vec<ForeignGrant>, tokio_postgres::Error> {
    let rows = client.query(&foreign_grants_sql(version_num), &[&primary_user, &admin_role]).await?;
    Ok(grants_of(&rows))
}

/// The query [`foreign_grants`] sends to a server of `version_num` (`$1` the primary user, `$2`
/// the admin role), for callers that keep it prepared on their session; [`grants_of`] reads
/// its rows.
pub fn foreign_grants_sql(version_num: i32) -> String {
    let acts_as =
        if version_num >= GRANTOR_KEYED_VERSION_NUM { "AND (m.inherit_option OR m.set_option)" } else { "" };
    format!(
        "WITH p AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
         SELECT true, r.rolname::text, g.rolname::text, m.admin_option
           FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles r ON r.oid = m.member
           LEFT JOIN pg_catalog.pg_roles g ON g.oid = m.grantor
          WHERE m.roleid = (SELECT oid FROM p) AND r.rolname <> $2
         UNION ALL
         SELECT false, r.rolname::text, g.rolname::text, m.admin_option
           FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
           LEFT JOIN pg_catalog.pg_roles g ON g.oid = m.grantor
          WHERE m.member = (SELECT oid FROM p) {acts_as}
          ORDER BY 1, 2, 3"
    )
}

/// The grants in the rows of [`foreign_grants_sql`].
pub fn grants_of(rows: &[Row]) -> Vec<ForeignGrant> {
    rows.iter()
        .map(|r| ForeignGrant {
            side: if r.get(0) { Side::Holder } else { Side::MemberOf },
            role: r.get(1),
            grantor: r.get(2),
            admin_option: r.get(3),
        })
        .collect()
}

/// Counts `primary_user`'s foreign memberships on a target (its address checked against
/// `policy` first), read-only, in one session within a deadline: what a registration that
/// refuses to adopt them checks.
pub async fn count_foreign_grants(
    spec: &TargetSpec,
    policy: &TargetPolicy,
    primary_user: &str,
) -> Result<GrantCounts, TargetError> {
    let (_, client) = admin_session(spec, policy).await?;
    within(EXCHANGE_TIMEOUT, async {
        let version: i32 =
            client.query_one("SELECT current_setting('server_version_num')::int4", &[]).await?.get(0);
        let grants = foreign_grants(&client, primary_user, &spec.admin.user, version).await?;
        Ok(GrantCounts::of(&grants))
    })
    .await
}

/// The statement that removes `grant` from `primary_user` entirely (membership and ADMIN
/// OPTION, and whatever was granted on the strength of it). On 16+ it names the grantor, as a
/// membership there is one per grantor. A superuser admin may revoke any; an admin with
/// CREATEROLE only may revoke memberships only of roles it holds ADMIN OPTION on, so those of a
/// role another tenant created are beyond it.
pub fn revoke_sql(grant: &ForeignGrant, primary_user: &str, version_num: i32) -> String {
    let (role, member) = match grant.side {
        Side::Holder => (primary_user, grant.role.as_str()),
        Side::MemberOf => (grant.role.as_str(), primary_user),
    };
    let granted_by = match (&grant.grantor, version_num >= GRANTOR_KEYED_VERSION_NUM) {
        (Some(grantor), true) => format!(" GRANTED BY {}", ident(grantor)),
        _ => String::new(),
    };
    format!("REVOKE {} FROM {}{granted_by} CASCADE", ident(role), ident(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(side: Side, admin_option: bool) -> ForeignGrant {
        ForeignGrant { side, role: "mallory".into(), grantor: Some("postgres".into()), admin_option }
    }

    #[test]
    fn revokes_name_the_grantor_where_memberships_are_keyed_by_it() {
        let holder = grant(Side::Holder, true);
        assert_eq!(
            revoke_sql(&holder, "doadmin", 170000),
            "REVOKE \"doadmin\" FROM \"mallory\" GRANTED BY \"postgres\" CASCADE"
        );
        assert_eq!(revoke_sql(&holder, "doadmin", 150000), "REVOKE \"doadmin\" FROM \"mallory\" CASCADE");
        let member_of = grant(Side::MemberOf, false);
        assert_eq!(revoke_sql(&member_of, "doadmin", 150000), "REVOKE \"mallory\" FROM \"doadmin\" CASCADE");
    }

    #[test]
    fn counts_say_how_many_of_each_kind_without_names() {
        let counts = GrantCounts::of(&[
            grant(Side::Holder, true),
            grant(Side::Holder, false),
            grant(Side::Holder, false),
            grant(Side::MemberOf, false),
        ]);
        assert_eq!(counts, GrantCounts { members: 2, admin_holders: 1, memberships: 1 });
        assert_eq!(counts.describe(), "2 members, 1 ADMIN OPTION holder and 1 membership of another role");
        assert!(!counts.describe().contains("mallory"));
        assert!(GrantCounts::default().is_empty());
    }
}
