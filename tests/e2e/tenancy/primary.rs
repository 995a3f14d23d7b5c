//! Attacks on a primary user adopted at registration or after a move: a pre-created role with
//! planted members, ADMIN holders or memberships.

use pgplane_testkit::TestApp;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::Rival;
use crate::{on_each_version, sqlstate};

/// Who holds `role`, and what `role` holds with INHERIT or SET (on 15, every membership), but
/// the admin role: `holder/role` pairs.
async fn foreign_memberships(app: &TestApp, role: &str, major: u32) -> Vec<String> {
    let acts_as = if major >= 16 { "AND (m.inherit_option OR m.set_option)" } else { "" };
    let sql = format!(
        "SELECT mem.rolname || '/' || r.rolname FROM pg_catalog.pg_auth_members m
           JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
           JOIN pg_catalog.pg_roles mem ON mem.oid = m.member
          WHERE (r.rolname = $1 AND mem.rolname <> $2) OR (mem.rolname = $1 {acts_as})
          ORDER BY 1"
    );
    app.target_strings(&sql, &[&role, &app.admin_user]).await
}

/// The rival pre-creates `trap`, the role a third team will use as its primary user, makes
/// itself a member and ADMIN holder of it and makes it a member of the rival's role `club`: on
/// 16+ with its own CREATEROLE; on 15, where tenants have none, a superuser plants the same.
async fn plant(app: &TestApp, rival: &Rival, trap: &str, club: &str, major: u32) {
    let (t, c, r) = (format!("\"{trap}\""), format!("\"{club}\""), format!("\"{}\"", rival.primary_user));
    if major >= 16 {
        rival
            .session(app, &rival.default_db)
            .await
            .batch_execute(&format!(
                "CREATE ROLE {t} LOGIN PASSWORD 'rival-knows-it'; CREATE ROLE {c};
                 GRANT {t} TO {r} WITH INHERIT TRUE, SET TRUE; GRANT {c} TO {t}"
            ))
            .await
            .expect("the rival's primary user plants its traps with CREATEROLE");
    } else {
        app.target_admin("postgres")
            .await
            .batch_execute(&format!(
                "CREATE ROLE {t} LOGIN PASSWORD 'rival-knows-it'; CREATE ROLE {c};
                 GRANT {t} TO {r} WITH ADMIN OPTION; GRANT {c} TO {t}"
            ))
            .await
            .expect("a superuser plants the traps");
    }
    assert!(!foreign_memberships(app, trap, major).await.is_empty());
}

/// A third team's token and registration body, with `primary_user`.
async fn third_team(app: &TestApp, primary_user: &str) -> (String, serde_json::Value) {
    let token = app.issue_token(&app.unique("third"), &["*"]).await;
    let mut body = app.registration(&app.unique("third").replace('_', "-"));
    body["pgplane"]["host"] = json!("localhost");
    body["pgplane"]["primary_user"] = json!(primary_user);
    body["pgplane"]["default_database"] = json!(app.unique("third_db"));
    (token, body)
}

/// The rival pre-creates the role a third team will use as its primary user (on 17 with its
/// own CREATEROLE; on 15, where tenants have none, a superuser plants the same grants), makes
/// itself a member and ADMIN holder and the role a member of a rival role. The third team's
/// dry run counts what would be removed (naming none of the rival's roles), its registration
/// removes it all, the rival can then neither act as the role nor change its password, and a
/// membership planted again is gone after the next full pass, recorded as drift.
async fn a_pre_created_primary_user_keeps_nothing_foreign(major: u32) {
    let app = TestApp::spawn(major).await;
    let rival = Rival::register(&app, "squatter").await;
    let trap = app.unique("third_admin");
    let club = app.unique("rival_club");
    plant(&app, &rival, &trap, &club, major).await;
    let (t, r) = (format!("\"{trap}\""), format!("\"{}\"", rival.primary_user));

    // The third team's dry run says what would go, by counts.
    let (token, body) = third_team(&app, &trap).await;
    let (status, preview) =
        app.call_as(&token, Method::POST, "/v2/databases?dry_run=true", Some(body.clone())).await;
    assert_eq!(status, 200, "{preview}");
    let action = &preview["registration"]["actions"][0];
    assert_eq!(action["action"], "adopt", "{preview}");
    assert!(action["removes"]["admin_holders"].as_u64().unwrap() >= 1, "{preview}");
    assert_eq!(action["removes"]["memberships"], 1, "{preview}");
    let detail = action["detail"].as_str().unwrap();
    assert!(detail.contains("would remove"), "{detail}");
    for name in [&rival.primary_user, &club] {
        assert!(
            !action.to_string().contains(name.as_str()),
            "the action names another team's role: {action}"
        );
    }
    assert!(!foreign_memberships(&app, &trap, major).await.is_empty(), "a dry run changes nothing");

    // The registration removes them.
    let (status, registered) = app.call_as(&token, Method::POST, "/v2/databases", Some(body)).await;
    assert_eq!(status, 201, "{registered}");
    let id: Uuid = registered["database"]["id"].as_str().unwrap().parse().unwrap();
    let password = registered["database"]["connection"]["password"].as_str().unwrap().to_string();
    app.reconciler.reconcile_now(id).await.expect("pass");
    assert_eq!(foreign_memberships(&app, &trap, major).await, Vec::<String>::new());
    app.target.login(&trap, &password, "postgres").await.expect("the third team's primary user logs in");

    let session = rival.session(&app, &rival.default_db).await;
    let err = session.batch_execute(&format!("SET ROLE {t}")).await.expect_err("no SET ROLE");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let err = session
        .batch_execute(&format!("ALTER ROLE {t} PASSWORD 'taken-over'"))
        .await
        .expect_err("no password change");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    app.target.login(&trap, "rival-knows-it", "postgres").await.expect_err("the rival's password is gone");

    // Planted again by hand: the next full pass removes it and records drift.
    app.target_admin("postgres").await.batch_execute(&format!("GRANT {t} TO {r}")).await.expect("plant");
    assert!(!foreign_memberships(&app, &trap, major).await.is_empty());
    // The plan shows the revocation without naming the rival's role.
    let (status, plan) = app.call_as(&token, Method::GET, &format!("/v2/databases/{id}/plan"), None).await;
    assert_eq!(status, 200, "{plan}");
    let steps = plan["plan"]["steps"].as_array().unwrap();
    let revoke = steps.iter().find(|s| s["phase"] == "primary_user").expect("a primary_user step");
    assert_eq!((&revoke["name"], &revoke["step"]), (&json!(trap), &json!("revoke_foreign_memberships")));
    assert!(revoke["drift"].as_str().unwrap().contains("1 member"), "{revoke}");
    assert!(revoke["statements"][0]["sql"].as_str().unwrap().contains("<another role>"), "{revoke}");
    assert!(!plan.to_string().contains(&rival.primary_user), "{plan}");
    app.reconciler.reconcile_now(id).await.expect("pass");
    assert_eq!(foreign_memberships(&app, &trap, major).await, Vec::<String>::new());
    let drift = app.store.list_drift(id, 20).await.expect("drift");
    let event = drift.iter().find(|d| d.name == trap).expect("a drift event on the primary user");
    assert!(event.description.contains("1 member"), "{}", event.description);
    assert!(event.repaired_at.is_some());
    assert!(!event.description.contains(&rival.primary_user), "{}", event.description);
}
on_each_version!(a_pre_created_primary_user_keeps_nothing_foreign);

/// Where the operator prefers it (`--adopted-primary-user=refuse`), the third team's
/// registration with the trapped role is refused (409, naming none of the rival's roles) and
/// changes nothing: no cluster, the memberships as they were.
async fn a_primary_user_with_foreign_grants_can_be_refused(major: u32) {
    let options = pgplane_testkit::AppOptions {
        target_major: major,
        refuse_foreign_primary_user: true,
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;
    let rival = Rival::register(&app, "squatter").await;
    let (trap, club) = (app.unique("third_admin"), app.unique("rival_club"));
    plant(&app, &rival, &trap, &club, major).await;
    let before = foreign_memberships(&app, &trap, major).await;

    let (token, body) = third_team(&app, &trap).await;
    let (status, answer) = app.call_as(&token, Method::POST, "/v2/databases", Some(body)).await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("did not grant") && message.contains(&trap), "{message}");
    for name in [&rival.primary_user, &club] {
        assert!(!message.contains(name.as_str()), "the refusal names another team's role: {message}");
    }
    let (_, listed) = app.call_as(&token, Method::GET, "/v2/databases", None).await;
    assert_eq!(listed["databases"], json!([]), "no cluster was registered");
    assert_eq!(foreign_memberships(&app, &trap, major).await, before, "nothing changed");
}
on_each_version!(a_primary_user_with_foreign_grants_can_be_refused);
