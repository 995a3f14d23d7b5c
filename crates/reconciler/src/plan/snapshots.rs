//! Snapshot tests of representative pass plans (pure: no server): an empty target, adoption of
//! an existing role, drift of each kind, the primary user's foreign memberships and database
//! rights on a shared server, access levels on PostgreSQL 15 and 17, deletions with heirs,
//! expiries and a rotation's two logins. Each plan is shown as text; `UPDATE_EXPECT=1 cargo
//! test -p pgplane-reconciler` rewrites the snapshots after a deliberate change.

use std::collections::HashMap;

use expect_test::{expect, Expect};
use pgplane_core::access::{AccessLevel, GROUP_PREFIX};
use pgplane_core::lifecycle::DesiredState;
use pgplane_core::store::AccessForPass;

use super::access::tests::{cluster, grant, membership, new_read_only_level, recorded};
use super::access::{DatabaseFacts, GroupFacts, Inputs};
use super::pass::{plan_pass, PassPlan, Seen, Wanted, WantedDatabase, WantedRole};
use super::tests::observed;
use super::{DesiredDatabase, DesiredRole};
use crate::observe::rights::DatabaseRights;
use crate::observe::{Observed, RoleFacts};
use pgplane_target_server::primary::{ForeignGrant, Side};

const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";

/// A role as the snapshots want it: the primary user is `doadmin`.
fn role(name: &str) -> DesiredRole {
    DesiredRole { primary: name == "doadmin", verifier: VERIFIER.into(), ..super::tests::role(name) }
}

/// A role on the target exactly as `r` wants it on `version`.
fn as_wanted(r: &DesiredRole, version: i32) -> RoleFacts {
    RoleFacts {
        attrs: r.attrs(version),
        password: Some(r.verifier.clone()),
        settings: Vec::new(),
        sessions: 0,
        member_of: Vec::new(),
        acts_as: None,
    }
}

fn database(name: &str) -> WantedDatabase {
    WantedDatabase {
        desired: DesiredDatabase { name: name.into(), state: DesiredState::Present, claimed: true },
        watched: true,
    }
}

fn wanted<'a>(roles: &'a [DesiredRole], databases: Vec<WantedDatabase>) -> Wanted<'a> {
    Wanted {
        primary_user: "doadmin",
        roles: roles.iter().map(|r| WantedRole { desired: r, watched: !r.changed }).collect(),
        left_out: Vec::new(),
        databases,
        access: None,
    }
}

fn seen(observed: &Observed) -> Seen<'_> {
    Seen { observed: Some(observed), admin_database: "postgres".into(), ..Seen::default() }
}

/// The plan as text: phases, operations, statements (with their database when not the admin
/// session's). Group names drawn at random read `<new group>`.
fn show(plan: PassPlan) -> String {
    let mut out = format!("PostgreSQL {}, {} in sync\n", plan.server_version, plan.in_sync);
    for phase in plan.phases {
        out.push_str(&format!("== {}\n", phase.phase.as_str()));
        for op in phase.operations.into_iter().map(|o| o.step) {
            assert_eq!(op.phase, phase.phase);
            out.push_str(&format!("{} {}: {}", op.kind, op.name, op.step));
            if !op.changes_target {
                out.push_str(" (no change)");
            }
            if let Some(drift) = &op.drift {
                out.push_str(&format!(" [drift: {drift}]"));
            }
            if let Some(note) = &op.note {
                out.push_str(&format!(" ({note})"));
            }
            out.push('\n');
            for s in op.statements {
                let on = s.database.map(|d| format!("[{d}] ")).unwrap_or_default();
                out.push_str(&format!("    {on}{}\n", s.sql));
            }
        }
    }
    assert!(!out.contains("SCRAM-SHA-256$"), "never a verifier in a plan: {out}");
    redact_new_groups(&out)
}

fn redact_new_groups(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(GROUP_PREFIX) {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('"').map_or(rest.len(), |e| i + e);
        out.push_str("<new group>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn check(plan: PassPlan, snapshot: Expect) {
    snapshot.assert_eq(&show(plan));
}

#[test]
fn an_empty_target_gets_every_role_and_database() {
    let roles = [role("doadmin"), role("app")];
    let o = observed(170000);
    check(
        plan_pass(&wanted(&roles, vec![database("defaultdb")]), &seen(&o)),
        expect![[r#"
            PostgreSQL 17.1, 0 in sync
            == roles
            user doadmin: create_role [drift: the role was missing on the target]
                CREATE ROLE "doadmin" WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 PASSWORD '<redacted>'
            user app: create_role [drift: the role was missing on the target]
                CREATE ROLE "app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 PASSWORD '<redacted>'; GRANT "app" TO "doadmin" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE
            == databases
            database defaultdb: create_database [drift: the database was missing on the target]
                CREATE DATABASE "defaultdb" OWNER "doadmin" TEMPLATE template0
        "#]],
    );
}

#[test]
fn an_existing_primary_user_is_adopted() {
    let roles = [DesiredRole { changed: true, ..role("doadmin") }];
    let mut o = observed(150000);
    o.roles.insert(
        "doadmin".into(),
        RoleFacts {
            attrs: role("app").attrs(150000),
            password: None,
            settings: Vec::new(),
            sessions: 0,
            member_of: Vec::new(),
            acts_as: None,
        },
    );
    o.databases.insert("defaultdb".into(), "postgres".into());
    let db = WantedDatabase { watched: false, ..database("defaultdb") };
    check(
        plan_pass(&wanted(&roles, vec![db]), &seen(&o)),
        expect![[r#"
            PostgreSQL 15.1, 0 in sync
            == roles
            user doadmin: alter_role
                ALTER ROLE "doadmin" WITH CREATEDB INHERIT PASSWORD '<redacted>'
            == databases
            database defaultdb: alter_database_owner
                ALTER DATABASE "defaultdb" OWNER TO "doadmin"
        "#]],
    );
}

#[test]
fn drift_of_each_kind_is_repaired() {
    let roles = [role("doadmin"), role("app"), role("ops")];
    let mut o = observed(170000);
    o.roles.insert("doadmin".into(), as_wanted(&roles[0], 170000));
    // The password was changed by hand.
    o.roles.insert(
        "app".into(),
        RoleFacts { password: Some("md5changed".into()), ..as_wanted(&roles[1], 170000) },
    );
    // Powers granted by hand, and the primary user's ADMIN OPTION revoked.
    let mut powers = as_wanted(&roles[2], 170000);
    powers.attrs.superuser = true;
    powers.attrs.createrole = true;
    o.roles.insert("ops".into(), powers);
    o.primary_admin_of.insert("app".into());
    // One database dropped, another given away.
    o.databases.insert("shop".into(), "mallory".into());
    check(
        plan_pass(&wanted(&roles, vec![database("gone"), database("shop")]), &seen(&o)),
        expect![[r#"
            PostgreSQL 17.1, 1 in sync
            == roles
            user app: alter_role [drift: the password was stored as MD5]
                ALTER ROLE "app" WITH INHERIT PASSWORD '<redacted>'
            user ops: alter_role [drift: SUPERUSER was granted, CREATEROLE was granted, the primary user's ADMIN OPTION on it was revoked]
                ALTER ROLE "ops" WITH NOSUPERUSER NOCREATEROLE INHERIT; GRANT "ops" TO "doadmin" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE
            == databases
            database gone: create_database [drift: the database was missing on the target]
                CREATE DATABASE "gone" OWNER "doadmin" TEMPLATE template0
            database shop: alter_database_owner [drift: its owner was changed to "mallory"]
                ALTER DATABASE "shop" OWNER TO "doadmin"
        "#]],
    );
}

#[test]
fn on_a_shared_server_foreign_memberships_go_and_databases_are_closed_to_public() {
    // Another tenant made itself a member of the primary user and gave it ADMIN OPTION on one
    // of its own roles; PUBLIC's rights on `shop` were granted back by hand, `app` lost its
    // CONNECT on `reports`; `new` is created and `web` joins in this pass.
    let roles = [role("doadmin"), role("app"), DesiredRole { changed: true, ..role("web") }];
    let mut o = observed(170000);
    for r in &roles[..2] {
        o.roles.insert(r.name.clone(), as_wanted(r, 170000));
    }
    o.primary_admin_of.insert("app".into());
    for db in ["shop", "reports"] {
        o.databases.insert(db.into(), "doadmin".into());
    }
    let mut s = seen(&o);
    s.primary_grants = vec![
        ForeignGrant {
            side: Side::Holder,
            role: "rival".into(),
            grantor: Some("rival".into()),
            admin_option: false,
        },
        ForeignGrant { side: Side::MemberOf, role: "rivals_own".into(), grantor: None, admin_option: true },
    ];
    let found = |database: &str, public, missing: &[&str], closed_before| DatabaseRights {
        database: database.into(),
        public,
        missing: missing.iter().map(|m| m.to_string()).collect(),
        closed_before,
    };
    s.rights = Some((
        vec!["app".into(), "doadmin".into()],
        vec![found("reports", false, &["app"], true), found("shop", true, &[], true)],
    ));
    let new = WantedDatabase { watched: false, ..database("new") };
    let databases = vec![database("shop"), database("reports"), new];
    let plan = show(plan_pass(&wanted(&roles, databases), &s));
    assert!(!plan.contains("rival"), "no other team's role is named: {plan}");
    expect![[r#"
        PostgreSQL 17.1, 4 in sync
        == roles
        user web: create_role
            CREATE ROLE "web" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 PASSWORD '<redacted>'; GRANT "web" TO "doadmin" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE
        == primary_user
        user doadmin: revoke_foreign_memberships [drift: 1 member and 1 membership of another role that pgplane did not grant]
            REVOKE "doadmin" FROM "<another role>" GRANTED BY "<another role>" CASCADE
            REVOKE "<another role>" FROM "doadmin" CASCADE
        == databases
        database new: create_database
            CREATE DATABASE "new" OWNER "doadmin" TEMPLATE template0
            REVOKE CONNECT, TEMPORARY ON DATABASE "new" FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE "new" TO "app", "web"
        == database_rights
        database reports: grant_connect
            GRANT CONNECT, TEMPORARY ON DATABASE "reports" TO "app", "web"
        database shop: close_to_public [drift: PUBLIC's CONNECT or TEMPORARY on it was granted back (the server is shared)]
            REVOKE CONNECT, TEMPORARY ON DATABASE "shop" FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE "shop" TO "web"
    "#]].assert_eq(&plan);
}

/// A level held by `app` on `shop`, planned against a target where its group is new.
fn new_level(version: i32) -> String {
    let c = cluster();
    let access = new_read_only_level();
    let inputs = Inputs::new(&c, version, true, true, &access, &[]);
    let roles = [role("doadmin"), role("app")];
    let mut o = observed(version);
    for r in &roles {
        o.roles.insert(r.name.clone(), as_wanted(r, version));
    }
    o.primary_admin_of.insert("app".into());
    o.databases.insert("shop".into(), "doadmin".into());
    let mut s = seen(&o);
    let role = inputs.groups.values().next().unwrap().role.clone();
    s.groups.insert(role, GroupFacts { database_exists: true, ..GroupFacts::default() });
    s.schemas.insert("shop".into(), vec![("public".into(), true, false), ("sales".into(), true, true)]);
    let mut w = wanted(&roles, vec![database("shop")]);
    w.access = Some(&inputs);
    show(plan_pass(&w, &s))
}

#[test]
fn a_new_access_level_on_15_grants_membership_plainly() {
    expect![[r#"
        PostgreSQL 15.1, 3 in sync
        == access_groups
        access_group shop/read_only: create_group
            CREATE ROLE "<new group>" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; GRANT CONNECT ON DATABASE "shop" TO "<new group>"
        == access_privileges
        access_group shop/read_only: grant_privileges
            [shop] GRANT USAGE ON SCHEMA "public" TO "<new group>"
            [shop] GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "<new group>"
            [shop] GRANT USAGE ON SCHEMA "sales" TO "<new group>"
            [shop] GRANT SELECT ON ALL TABLES IN SCHEMA "sales" TO "<new group>"
            [shop] GRANT SELECT ON ALL SEQUENCES IN SCHEMA "sales" TO "<new group>"
            [shop] ALTER DEFAULT PRIVILEGES FOR ROLE "doadmin" GRANT SELECT ON TABLES TO "<new group>"
            [shop] ALTER DEFAULT PRIVILEGES FOR ROLE "doadmin" GRANT SELECT ON SEQUENCES TO "<new group>"
            [shop] ALTER DEFAULT PRIVILEGES FOR ROLE "doadmin" GRANT USAGE ON SCHEMAS TO "<new group>"
        == access_members
        user app: grant_membership
            GRANT "<new group>" TO "app"
    "#]].assert_eq(&new_level(150000));
}

#[test]
fn a_new_access_level_on_17_differs_only_in_who_grants_the_membership() {
    // From 16 on the primary user holds ADMIN OPTION on the group and grants its memberships.
    let (on_15, on_17) = (new_level(150000), new_level(170000));
    assert_eq!(on_15.lines().count(), on_17.lines().count());
    let differences: Vec<String> = on_15
        .lines()
        .zip(on_17.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("15: {}\n17: {}", a.trim(), b.trim()))
        .collect();
    expect![[r#"
        15: PostgreSQL 15.1, 3 in sync
        17: PostgreSQL 17.1, 3 in sync
        15: CREATE ROLE "<new group>" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; GRANT CONNECT ON DATABASE "shop" TO "<new group>"
        17: CREATE ROLE "<new group>" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; GRANT CONNECT ON DATABASE "shop" TO "<new group>"; GRANT "<new group>" TO "doadmin" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE
        15: GRANT "<new group>" TO "app"
        17: GRANT "<new group>" TO "app" WITH INHERIT TRUE, SET FALSE GRANTED BY "doadmin""#]].assert_eq(&differences.join("\n"));
}

#[test]
fn access_group_drift_in_privileges_and_memberships_is_repaired() {
    let c = cluster();
    let access = AccessForPass {
        grants: vec![
            grant("app", "shop", AccessLevel::ReadWrite),
            grant("bob", "shop", AccessLevel::ReadWrite),
        ],
        pending: Vec::new(),
        groups: vec![recorded("shop", AccessLevel::ReadWrite, "g_rw", Some(41))],
        users: vec!["app".into(), "bob".into(), "doadmin".into()],
    };
    let inputs = Inputs::new(&c, 170000, true, true, &access, &[]);
    let roles = [role("doadmin"), role("app"), role("bob")];
    let mut o = observed(170000);
    for r in &roles {
        o.roles.insert(r.name.clone(), as_wanted(r, 170000));
    }
    o.primary_admin_of.extend(["app".to_string(), "bob".to_string()]);
    o.databases.insert("shop".into(), "doadmin".into());
    let mut s = seen(&o);
    // CONNECT revoked, bob's membership revoked, a stranger made a member.
    s.groups.insert(
        "g_rw".into(),
        GroupFacts {
            oid: Some(41),
            database_exists: true,
            connect: false,
            memberships: vec![
                membership("doadmin", "postgres", true, false),
                membership("app", "doadmin", false, true),
                membership("mallory", "postgres", false, false),
            ],
            ..GroupFacts::default()
        },
    );
    // Privileges revoked on the tables of schema public; default privileges intact.
    let mut facts = DatabaseFacts {
        schemas: vec![("g_rw".into(), "public".into(), false, true, false)],
        defaults: HashMap::new(),
    };
    for (letter, privileges) in [
        ("r", AccessLevel::ReadWrite.privileges().tables),
        ("S", AccessLevel::ReadWrite.privileges().sequences),
        ("n", AccessLevel::ReadWrite.privileges().schemas),
    ] {
        let have = privileges.iter().map(|p| p.to_string()).collect();
        facts.defaults.insert(("g_rw".into(), letter.into()), have);
    }
    s.in_databases.insert("shop".into(), facts);
    let mut w = wanted(&roles, vec![database("shop")]);
    w.access = Some(&inputs);
    check(
        plan_pass(&w, &s),
        expect![[r#"
        PostgreSQL 17.1, 4 in sync
        == access_groups
        access_group shop/read_write: fix_group [drift: CONNECT was revoked from its read_write access group; a role that is not one of the cluster's users was a member of its read_write access group (removed)]
            GRANT CONNECT ON DATABASE "shop" TO "g_rw"
            REVOKE "g_rw" FROM "mallory" GRANTED BY "postgres"
        == access_privileges
        access_group shop/read_write: grant_privileges [drift: its read_write access group lacked privileges in schema(s) "public" (revoked behind pgplane's back, or objects created there by a role other than the primary user)]
            [shop] GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "public" TO "g_rw"
        == access_members
        user bob: grant_membership [drift: its membership in the read_write access group of database "shop" was revoked]
            GRANT "g_rw" TO "bob" WITH INHERIT TRUE, SET FALSE GRANTED BY "doadmin"
    "#]],
    );
}

#[test]
fn deleted_users_go_to_their_heirs_or_to_the_primary_user() {
    let leaver =
        DesiredRole { state: DesiredState::Absent, reassign_to: Some("taker".into()), ..role("leaver") };
    let orphan =
        DesiredRole { state: DesiredState::Absent, reassign_to: Some("vanished".into()), ..role("orphan") };
    let plain = DesiredRole { state: DesiredState::Absent, ..role("plain") };
    let never = DesiredRole { state: DesiredState::Absent, ..role("never_made") };
    let roles = [role("doadmin"), role("taker"), leaver, orphan, plain, never];
    let mut o = observed(170000);
    for r in &roles[..5] {
        o.roles.insert(r.name.clone(), as_wanted(r, 170000));
    }
    o.primary_admin_of.insert("taker".into());
    let mut s = seen(&o);
    s.owned_in.insert("leaver".into(), vec!["postgres".into(), "shop".into()]);
    s.owned_in.insert("orphan".into(), vec!["shop".into()]);
    check(
        plan_pass(&wanted(&roles, Vec::new()), &s),
        expect![[r#"
        PostgreSQL 17.1, 2 in sync
        == drop_roles
        user leaver: drop_role
            ALTER ROLE "leaver" NOLOGIN
            SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
                   JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
                  WHERE r.rolname = ANY(ARRAY['leaver']::pg_catalog.name[]) AND NOT r.rolcanlogin
                    AND a.pid <> pg_catalog.pg_backend_pid()
            DO 'DECLARE f pg_catalog.regprocedure; BEGIN FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner WHERE r.rolname = ''leaver'' AND p.prosecdef LOOP EXECUTE pg_catalog.format(''ALTER ROUTINE %s SECURITY INVOKER'', f); END LOOP; END'; REASSIGN OWNED BY "leaver" TO "taker"; DROP OWNED BY "leaver"
            [shop] DO 'DECLARE f pg_catalog.regprocedure; BEGIN FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner WHERE r.rolname = ''leaver'' AND p.prosecdef LOOP EXECUTE pg_catalog.format(''ALTER ROUTINE %s SECURITY INVOKER'', f); END LOOP; END'; REASSIGN OWNED BY "leaver" TO "taker"; DROP OWNED BY "leaver"
            DROP ROLE IF EXISTS "leaver"
        user orphan: drop_role [drift: its heir "vanished" is gone from the target; what it owned goes to the primary user]
            ALTER ROLE "orphan" NOLOGIN
            SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
                   JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
                  WHERE r.rolname = ANY(ARRAY['orphan']::pg_catalog.name[]) AND NOT r.rolcanlogin
                    AND a.pid <> pg_catalog.pg_backend_pid()
            [shop] DO 'DECLARE f pg_catalog.regprocedure; BEGIN FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner WHERE r.rolname = ''orphan'' AND p.prosecdef LOOP EXECUTE pg_catalog.format(''ALTER ROUTINE %s SECURITY INVOKER'', f); END LOOP; END'; REASSIGN OWNED BY "orphan" TO "doadmin"; DROP OWNED BY "orphan"
            DROP ROLE IF EXISTS "orphan"
        user plain: drop_role
            ALTER ROLE "plain" NOLOGIN
            SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
                   JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
                  WHERE r.rolname = ANY(ARRAY['plain']::pg_catalog.name[]) AND NOT r.rolcanlogin
                    AND a.pid <> pg_catalog.pg_backend_pid()
            DROP ROLE IF EXISTS "plain"
        user never_made: forget (no change) (the user is not on the target: its record is removed)
    "#]],
    );
}

#[test]
fn strangers_objects_are_conflicts_and_unopened_users_are_left_out() {
    let roles = [role("doadmin"), DesiredRole { claimed: false, ..role("taken") }];
    let mut o = observed(150000);
    o.roles.insert("doadmin".into(), as_wanted(&roles[0], 150000));
    o.roles.insert("taken".into(), as_wanted(&roles[1], 150000));
    o.databases.insert("theirs".into(), "someone".into());
    let theirs = WantedDatabase {
        desired: DesiredDatabase { name: "theirs".into(), state: DesiredState::Present, claimed: false },
        watched: false,
    };
    let mut w = wanted(&roles, vec![theirs]);
    w.left_out.push(("sealed".into(), "its stored credentials cannot be opened".into()));
    check(
        plan_pass(&w, &seen(&o)),
        expect![[r#"
        PostgreSQL 15.1, 1 in sync
        == roles
        user taken: conflict (no change) (a role named "taken" already exists on the target server and is not managed by pgplane; it was left untouched)
        user sealed: left_out (no change) (its stored credentials cannot be opened)
        == databases
        database theirs: conflict (no change) (a database named "theirs" already exists on the target server and is not managed by pgplane; it was left untouched)
    "#]],
    );
}

#[test]
fn expiries_end_sessions_and_a_rotation_has_two_logins() {
    let expired = DesiredRole { valid_until: Some(1_800_000_000_000_000), expired: true, ..role("app") };
    let expiring = DesiredRole { valid_until: Some(1_900_000_000_000_000), changed: true, ..role("job") };
    // A rotation: the grace of the user's own role has ended (not drift: the pass does not watch
    // it), its second login is new.
    let old_login = DesiredRole { login: false, expired: true, changed: true, ..role("web") };
    let new_login =
        DesiredRole { acts_as: Some("web".into()), claimed: false, changed: true, ..role("web_alt") };
    let roles = [role("doadmin"), expired.clone(), expiring.clone(), old_login, new_login];
    let mut o = observed(170000);
    for r in &roles[..4] {
        o.roles.insert(r.name.clone(), as_wanted(r, 170000));
        o.primary_admin_of.insert(r.name.clone());
    }
    o.roles.get_mut("app").unwrap().sessions = 2;
    o.roles.insert("job".into(), as_wanted(&DesiredRole { valid_until: None, ..expiring }, 170000));
    let web = o.roles.get_mut("web").unwrap();
    (web.attrs.login, web.sessions) = (true, 1);
    check(
        plan_pass(&wanted(&roles, Vec::new()), &seen(&o)),
        expect![[r#"
            PostgreSQL 17.1, 1 in sync
            == roles
            user app: alter_role
                SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
                       JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
                      WHERE r.rolname = ANY(ARRAY['app']::pg_catalog.name[])
                        AND a.pid <> pg_catalog.pg_backend_pid()
            user job: alter_role
                ALTER ROLE "job" WITH INHERIT VALID UNTIL '2030-03-17T17:46:40.000000Z' PASSWORD '<redacted>'
            user web: alter_role
                ALTER ROLE "web" WITH NOLOGIN INHERIT PASSWORD '<redacted>'; SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
                       JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
                      WHERE r.rolname = ANY(ARRAY['web']::pg_catalog.name[])
                        AND a.pid <> pg_catalog.pg_backend_pid()
            user web_alt: create_role
                CREATE ROLE "web_alt" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 PASSWORD '<redacted>'; GRANT "web_alt" TO "doadmin" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE; GRANT "web" TO "web_alt" WITH INHERIT TRUE, SET TRUE; ALTER ROLE "web_alt" SET role TO 'web'
        "#]],
    );
}
