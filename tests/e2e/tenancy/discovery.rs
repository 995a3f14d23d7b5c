//! Attacks that try to learn another team's names through listings, previews, dry runs and
//! errors, and hostile bytes in paths and queries.

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

use super::Rival;
use crate::on_each_version;

/// Team A's names on the shared server: its primary user, default database, a user, a
/// database and the access group role that carries the user's level on that database.
struct TeamNames(Vec<String>);

impl TeamNames {
    /// Panics if `answer` names any of them but those in `except` (names the caller typed).
    fn assert_absent(&self, what: &str, answer: &Value, except: &[&str]) {
        let text = answer.to_string();
        for name in self.0.iter().filter(|n| !except.contains(&n.as_str())) {
            assert!(!text.contains(name.as_str()), "{what} names team A's {name:?}: {text}");
        }
    }
}

/// Team A (the test app's cluster) with a user, a database and an access level granted on it.
async fn team_a(app: &TestApp) -> TeamNames {
    let user = app.unique("a_user");
    let db = app.unique("a_db");
    app.create_user(&user).await;
    app.create_db(&db).await;
    let (status, body) = app
        .put(
            &app.cluster_path(&format!("/users/{user}/access")),
            json!({ "access": [{ "database": db, "level": "read_only" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let group = app
        .target_strings(
            "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
               JOIN pg_roles u ON u.oid = m.member
              WHERE u.rolname = $1 AND g.rolname LIKE 'pgplane\\_access\\_%'",
            &[&user],
        )
        .await;
    assert_eq!(group.len(), 1, "the user's access group role: {group:?}");
    TeamNames(vec![app.primary_user.clone(), app.default_db.clone(), user, db, group[0].clone()])
}

async fn nothing_of_another_team_is_named_to_the_rival(major: u32) {
    let app = TestApp::spawn(major).await;
    let a = team_a(&app).await;
    let [a_primary, a_default_db, a_user, a_db, a_group] = [0, 1, 2, 3, 4].map(|i| a.0[i].clone());
    let rival = Rival::register(&app, "rival").await;
    let r_user = app.unique("r_user");
    let (status, body) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({ "name": r_user }))).await;
    assert_eq!(status, 201, "{body}");

    // The rival's user is entangled with team A's roles and databases, as a superuser (or team
    // A itself) could do: memberships both ways, a privilege on A's database, an object in it,
    // default privileges granting to A's user.
    app.target_admin("postgres")
        .await
        .batch_execute(&format!(
            "GRANT \"{r_user}\" TO \"{a_user}\";
             GRANT \"{a_group}\" TO \"{r_user}\";
             GRANT CONNECT ON DATABASE \"{a_db}\" TO \"{r_user}\""
        ))
        .await
        .unwrap();
    app.target_admin(&a_db)
        .await
        .batch_execute(&format!("CREATE TABLE a_tab (id int); ALTER TABLE a_tab OWNER TO \"{r_user}\""))
        .await
        .unwrap();
    app.target_admin(&rival.default_db)
        .await
        .batch_execute(&format!(
            "CREATE TABLE r_tab (id int); ALTER TABLE r_tab OWNER TO \"{r_user}\";
             ALTER DEFAULT PRIVILEGES FOR ROLE \"{r_user}\" IN SCHEMA public GRANT SELECT ON TABLES TO \"{a_user}\""
        ))
        .await
        .unwrap();

    // The dependency preview of the rival's own user: A's names are counted, never named.
    let (status, body) =
        rival.call(&app, Method::GET, &rival.path(&format!("/users/{r_user}/dependencies")), None).await;
    assert_eq!(status, 200, "{body}");
    a.assert_absent("the dependency preview", &body, &[]);
    let report = &body["dependencies"];
    assert!(report["other_roles"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["other_databases"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["owns_objects"], true, "{report}");
    let defaults = report.to_string();
    assert!(defaults.contains("<another role>"), "the default privileges' grantee is redacted: {report}");

    // The refusal of a deletion shows the same report, redacted alike.
    let (status, body) =
        rival.call(&app, Method::DELETE, &rival.path(&format!("/users/{r_user}?if_owns=refuse")), None).await;
    assert_eq!(status, 409, "{body}");
    a.assert_absent("the refused deletion", &body, &[]);
    assert!(app.role_exists(&r_user).await, "a refused deletion changes nothing");

    // The preview answers only for the rival's own users.
    for name in [&a_user, &a_primary, &a_group] {
        let (status, body) =
            rival.call(&app, Method::GET, &rival.path(&format!("/users/{name}/dependencies")), None).await;
        assert_eq!(status, 404, "{name}: {body}");
        a.assert_absent("a preview of another team's role", &body, &[]);
    }

    // The listing of what pgplane does not manage.
    let (status, body) = rival.call(&app, Method::GET, &rival.path("/unmanaged"), None).await;
    assert_eq!(status, 200, "{body}");
    a.assert_absent("the unmanaged listing", &body, &[]);
    assert!(body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| !r.as_str().unwrap().starts_with("pgplane_access_")));

    // A registration dry run on the shared server.
    let mut registration = app.registration(&app.unique("probe").replace('_', "-"));
    registration["pgplane"]["host"] = json!("localhost");
    registration["pgplane"]["primary_user"] = json!(app.unique("r2_admin"));
    registration["pgplane"]["default_database"] = json!(app.unique("r2_db"));
    let (status, body) =
        rival.call(&app, Method::POST, "/v2/databases?dry_run=true", Some(registration.clone())).await;
    assert_eq!(status, 200, "{body}");
    a.assert_absent("the registration dry run", &body, &[]);
    assert!(body["registration"]["untouched"]["role_count"].as_u64().is_some(), "{body}");

    // A database team A's primary user made outside pgplane: a dry run that would adopt it does
    // not say whose it is.
    let loose_db = app.unique("a_loose");
    app.target_admin("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE \"{loose_db}\" OWNER \"{a_primary}\""))
        .await
        .unwrap();
    registration["pgplane"]["default_database"] = json!(loose_db);
    let (status, body) =
        rival.call(&app, Method::POST, "/v2/databases?dry_run=true", Some(registration.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registration"]["actions"][1]["action"], "adopt", "{body}");
    a.assert_absent("a dry run adopting team A's loose database", &body, &[]);
    app.target_admin("postgres").await.batch_execute(&format!("DROP DATABASE \"{loose_db}\"")).await.unwrap();

    // Refusals name only what the caller asked for.
    for (path, name) in [("/users", &a_user), ("/dbs", &a_db), ("/users", &a_group), ("/dbs", &a_default_db)]
    {
        let (status, body) =
            rival.call(&app, Method::POST, &rival.path(path), Some(json!({ "name": name }))).await;
        assert!(status == 409 || status == 422, "{path} {name}: {status} {body}");
        a.assert_absent("a refusal", &body, &[name.as_str()]);
    }
    registration["pgplane"]["primary_user"] = json!(a_primary);
    registration["pgplane"]["default_database"] = json!(a_default_db);
    let (status, body) =
        rival.call(&app, Method::POST, "/v2/databases?dry_run=true", Some(registration.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registration"]["would_register"], false, "{body}");
    a.assert_absent("a refused dry run", &body["registration"]["untouched"], &[]);
    let (status, body) = rival.call(&app, Method::POST, "/v2/databases", Some(registration)).await;
    assert_eq!(status, 409, "{body}");
    a.assert_absent("a refused registration", &body, &[&a_primary, &a_default_db]);

    // Team A's objects are as they were.
    for name in [&a_user, &a_primary, &a_group] {
        assert!(app.role_exists(name).await, "{name}");
    }
    assert!(app.database_exists(&a_db).await);
}
on_each_version!(nothing_of_another_team_is_named_to_the_rival);

/// What another tenant makes by hand on the shared server (a database its primary user owns;
/// on 16+ a role it created, holding ADMIN OPTION on it) carries no record in pgplane, and is
/// still not listed to team A: it is recognised by who holds it, not by its name.
async fn what_a_rival_makes_by_hand_is_not_listed_to_another_team(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    let session = rival.session(&app, &rival.default_db).await;
    let (hand_db, hand_role) = (app.unique("rival_hand_db"), app.unique("rival_hand_role"));
    session.batch_execute(&format!("CREATE DATABASE \"{hand_db}\"")).await.expect("the rival has CREATEDB");
    let mut hidden = vec![hand_db.clone()];
    if major >= 16 {
        session.batch_execute(&format!("CREATE ROLE \"{hand_role}\"")).await.expect("CREATEROLE on 16+");
        hidden.push(hand_role.clone());
    }

    let (status, unmanaged) = app.get(&app.cluster_path("/unmanaged")).await;
    assert_eq!(status, 200, "{unmanaged}");
    let mut registration = app.registration(&app.unique("probe").replace('_', "-"));
    registration["pgplane"]["host"] = json!("localhost");
    registration["pgplane"]["primary_user"] = json!(app.unique("p_admin"));
    registration["pgplane"]["default_database"] = json!(app.unique("p_db"));
    let (status, dry_run) = app.post("/v2/databases?dry_run=true", registration).await;
    assert_eq!(status, 200, "{dry_run}");
    for answer in [&unmanaged, &dry_run] {
        for name in &hidden {
            assert!(!answer.to_string().contains(name.as_str()), "team A sees the rival's {name}: {answer}");
        }
    }
    // The rival sees its own.
    let (status, own) = rival.call(&app, Method::GET, &rival.path("/unmanaged"), None).await;
    assert_eq!(status, 200, "{own}");
    for name in &hidden {
        assert!(own.to_string().contains(name.as_str()), "the rival's own {name} is listed to it: {own}");
    }
}
on_each_version!(what_a_rival_makes_by_hand_is_not_listed_to_another_team);

async fn a_role_created_in_conflict_has_no_preview(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "rival").await;
    // A role of another team's making, unknown to pgplane.
    let stranger = app.unique("a_raw");
    app.target_admin("postgres").await.batch_execute(&format!("CREATE ROLE \"{stranger}\"")).await.unwrap();
    app.target_admin(&app.default_db)
        .await
        .batch_execute(&format!(
            "CREATE TABLE secret_plans (id int); ALTER TABLE secret_plans OWNER TO \"{stranger}\""
        ))
        .await
        .unwrap();
    let (status, body) =
        rival.call(&app, Method::POST, &rival.path("/users"), Some(json!({ "name": stranger }))).await;
    assert_eq!(status, 409, "{body}");
    assert!(!body.to_string().contains("secret_plans"), "{body}");
    let (status, body) =
        rival.call(&app, Method::GET, &rival.path(&format!("/users/{stranger}/dependencies")), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("secret_plans") && !body.to_string().contains(&app.default_db));
    let (status, body) = rival
        .call(&app, Method::DELETE, &rival.path(&format!("/users/{stranger}?if_owns=refuse")), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(app.role_exists(&stranger).await, "the stranger's role is untouched");
}
on_each_version!(a_role_created_in_conflict_has_no_preview);

/// Every route family, with a hostile byte in a path segment or the query: 404 or 422 with a
/// DigitalOcean error body, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_paths_and_queries_are_refused() {
    let app = TestApp::spawn(17).await;
    let user = app.unique("ctl_user");
    app.create_user(&user).await;
    let c = app.cluster_path("");
    for bad in ["%00", "%0A", "%1B", "a%00b"] {
        let cases: Vec<(Method, String)> = vec![
            (Method::GET, format!("/v2/databases/{bad}")),
            (Method::DELETE, format!("/v2/databases/{bad}")),
            (Method::GET, format!("{c}/users/{bad}")),
            (Method::PUT, format!("{c}/users/{bad}")),
            (Method::DELETE, format!("{c}/users/{bad}")),
            (Method::POST, format!("{c}/users/{bad}/reset_auth")),
            (Method::GET, format!("{c}/users/{bad}/dependencies")),
            (Method::GET, format!("{c}/users/{bad}/access")),
            (Method::PUT, format!("{c}/users/{bad}/access")),
            (Method::GET, format!("{c}/dbs/{bad}")),
            (Method::DELETE, format!("{c}/dbs/{bad}")),
            (Method::GET, format!("{c}/users?x={bad}")),
            (Method::GET, format!("/v2/databases?tag_name={bad}")),
            (Method::GET, format!("/v2/audit_events?cluster_id={bad}")),
            (Method::DELETE, format!("{c}/users/{user}?reassign_to={bad}")),
            (Method::DELETE, format!("{c}/users/{user}?if_owns={bad}")),
            (Method::POST, format!("/v2/databases?dry_run={bad}")),
            (Method::GET, format!("{c}/unmanaged?{bad}=1")),
            (Method::GET, format!("{c}/plan?x={bad}")),
            (Method::GET, format!("{c}/drift?x={bad}")),
            (Method::GET, format!("/v2/account?x={bad}")),
            (Method::GET, format!("/healthz?x={bad}")),
            (Method::PUT, format!("{c}/pgplane?x={bad}")),
        ];
        for (method, path) in cases {
            let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
            let (status, answer) = app.call(method.clone(), &path, body).await;
            assert!(status == 404 || status == 422, "{method} {path}: {status} {answer}");
            for field in ["id", "message", "request_id"] {
                assert!(answer[field].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}: {answer}");
            }
        }
    }
    assert!(app.role_exists(&user).await, "nothing was deleted");
}
