//! Attacks on a deleted user's heirs: planted SECURITY DEFINER code, heirs chosen without the
//! right scope, an heir deleted at the same moment.

use std::time::Duration;

use pgplane_testkit::TestApp;
use serde_json::Value;

use crate::{on_each_version, sqlstate};

/// A user plants SECURITY DEFINER code (one routine answers `current_user`, others write to a
/// table only the heir may write, one with a name that needs quoting) and is deleted with an
/// heir. The dependency preview names the routines and says what happens to them; after the
/// hand-over they belong to the heir but are SECURITY INVOKER, so that another user calling
/// them runs with its own rights: it is `current_user`, and the write fails with 42501.
async fn planted_security_definer_code_runs_with_its_callers_rights(major: u32) {
    let app = TestApp::spawn(major).await;
    let db = app.default_db.clone();
    let (heir, leaver, caller) = (app.unique("heir"), app.unique("leaver"), app.unique("caller"));
    app.create_user(&heir).await;
    let leaver_password = app.create_user(&leaver).await;
    let caller_password = app.create_user(&caller).await;
    let table = app.unique("heir_only");
    app.target_admin(&db)
        .await
        .batch_execute(&format!(
            "CREATE TABLE public.\"{table}\" (x int); ALTER TABLE public.\"{table}\" OWNER TO \"{heir}\";
             CREATE SCHEMA trap AUTHORIZATION \"{leaver}\""
        ))
        .await
        .expect("a table only the heir may write, and a schema for the leaver");
    let write = format!("INSERT INTO public.\"{table}\" VALUES (1)");
    app.target
        .login(&leaver, &leaver_password, &db)
        .await
        .expect("the leaver logs in")
        .batch_execute(&format!(
            "CREATE FUNCTION trap.who() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text';
             CREATE FUNCTION trap.write() RETURNS void LANGUAGE sql SECURITY DEFINER AS $f${write}$f$;
             CREATE FUNCTION trap.\"odd \"\"name\"\"; x\"(int) RETURNS void LANGUAGE sql SECURITY DEFINER AS $f${write}$f$;
             CREATE PROCEDURE trap.put() LANGUAGE sql SECURITY DEFINER AS $f${write}$f$;
             GRANT USAGE ON SCHEMA trap TO PUBLIC"
        ))
        .await
        .expect("the leaver plants SECURITY DEFINER code");

    let (status, report) = app.get(&app.cluster_path(&format!("/users/{leaver}/dependencies"))).await;
    assert_eq!(status, 200, "{report}");
    let databases = report["dependencies"]["databases"].as_array().unwrap();
    let here = databases.iter().find(|d| d["database"] == db.as_str()).expect("the default database");
    let definers = &here["security_definer"];
    assert_eq!(definers["count"], 4, "{report}");
    assert!(
        definers["first"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().contains("who()")),
        "{report}"
    );
    assert!(definers["on_delete"].as_str().unwrap().contains("SECURITY INVOKER"), "{report}");

    let (status, answer) =
        app.delete(&app.cluster_path(&format!("/users/{leaver}?reassign_to={heir}"))).await;
    assert_eq!(status, 204, "{answer}");
    assert!(!app.role_exists(&leaver).await);

    let admin = app.target_admin(&db).await;
    let rows = admin
        .query(
            "SELECT p.prosecdef, pg_catalog.pg_get_userbyid(p.proowner)::text FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'trap'::regnamespace",
            &[],
        )
        .await
        .expect("routines");
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert!(!row.get::<_, bool>(0), "a routine kept SECURITY DEFINER");
        assert_eq!(row.get::<_, String>(1), heir, "the heir owns the routines");
    }

    let session = app.target.login(&caller, &caller_password, &db).await.expect("the caller logs in");
    let who: String = session.query_one("SELECT trap.who()", &[]).await.expect("who").get(0);
    assert_eq!(who, caller, "the routine runs with its caller's rights, not the heir's");
    for call in ["SELECT trap.write()", "SELECT trap.\"odd \"\"name\"\"; x\"(1)", "CALL trap.put()"] {
        let err = session.batch_execute(call).await.expect_err("the write needs the heir's rights");
        assert_eq!(sqlstate(&err), "42501", "{call}: {err}");
    }
    let written: i64 =
        admin.query_one(&format!("SELECT count(*) FROM public.\"{table}\""), &[]).await.unwrap().get(0);
    assert_eq!(written, 0, "nothing was written with the heir's rights");
}
on_each_version!(planted_security_definer_code_runs_with_its_callers_rights);

/// A user deleted with an heir and the heir deleted at the same moment, a few times over:
/// while one deletion is pending the other is refused with a clear 409 or 422, nothing stays
/// stuck, and the first user's table ends up owned by the heir or (when the heir went first)
/// stays with the first user, which can still be deleted; when the first deletion was done
/// before the second arrived, both go through, one after the other.
async fn a_user_and_its_heir_deleted_at_once_leave_nothing_stuck(major: u32) {
    let app = TestApp::spawn(major).await;
    let admin = app.target_admin(&app.default_db).await;
    let owner = |table: String| {
        let admin = &admin;
        async move {
            let sql = "SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class
                        WHERE relname = $1 AND relnamespace = 'public'::regnamespace";
            admin.query_opt(sql, &[&table]).await.expect("owner").map(|r| r.get::<_, String>(0))
        }
    };
    for round in 0..4 {
        let heir = app.unique(&format!("heir{round}"));
        let leaver = app.unique(&format!("leaver{round}"));
        let table = app.unique(&format!("kept{round}"));
        app.create_user(&heir).await;
        let password = app.create_user(&leaver).await;
        app.create_owned_table(&leaver, &password, &app.default_db, &table).await;

        let leaver_path = app.cluster_path(&format!("/users/{leaver}?reassign_to={heir}"));
        let heir_path = app.cluster_path(&format!("/users/{heir}"));
        let ((first, first_body), (second, second_body)) =
            tokio::join!(app.delete(&leaver_path), app.delete(&heir_path));
        let refused = |status: u16, body: &Value| {
            matches!(status, 409 | 422) && body["message"].as_str().is_some_and(|m| !m.is_empty())
        };
        match (first, second) {
            // The first deletion was carried out before the second reached the metadata
            // database (the two requests are sent together, not run in lockstep): the heir,
            // deleted in turn, handed the table on to the primary user.
            (204, 204) => {
                assert!(!app.role_exists(&leaver).await && !app.role_exists(&heir).await, "round {round}");
                assert_eq!(owner(table.clone()).await, Some(app.primary_user.clone()), "round {round}");
                // Not the fallback of an heir that vanished under the first deletion.
                let drift = app.store.list_drift(app.cluster_id.parse().unwrap(), 50).await.expect("drift");
                assert!(!drift.iter().any(|d| d.name == leaver), "round {round}: {drift:?}");
            }
            (204, s) => {
                assert!(refused(s, &second_body), "round {round}: the heir's deletion: {s} {second_body}");
                assert!(!app.role_exists(&leaver).await, "round {round}: the user is gone");
                assert_eq!(owner(table.clone()).await, Some(heir.clone()), "round {round}");
                let (status, body) = app.delete(&heir_path).await;
                assert_eq!(status, 204, "round {round}: the heir can go once the first is gone: {body}");
            }
            (s, 204) => {
                assert!(refused(s, &first_body), "round {round}: the first deletion: {s} {first_body}");
                assert!(!app.role_exists(&heir).await, "round {round}: the heir is gone");
                assert_eq!(owner(table.clone()).await, Some(leaver.clone()), "round {round}");
                let (status, body) = app.delete(&app.cluster_path(&format!("/users/{leaver}"))).await;
                assert_eq!(status, 204, "round {round}: the first user is not stuck: {body}");
                assert_eq!(owner(table.clone()).await, Some(app.primary_user.clone()), "round {round}");
            }
            other => panic!(
                "round {round}: at most one deletion goes through at once: {other:?} {first_body} {second_body}"
            ),
        }
        let gone = app
            .eventually(Duration::from_secs(20), || async {
                !app.role_exists(&heir).await && !app.role_exists(&leaver).await
            })
            .await;
        assert!(gone, "round {round}: both users end up gone");
    }
}
on_each_version!(a_user_and_its_heir_deleted_at_once_leave_nothing_stuck);

/// An heir that is gone from the target when the pass drops the user (dropped by hand behind
/// pgplane's back) does not leave the user stuck: what it owned goes to the primary user, and
/// a drift event on the user says so.
async fn a_user_whose_heir_is_gone_hands_over_to_the_primary_user(major: u32) {
    let app = TestApp::spawn(major).await;
    let (heir, leaver, table) = (app.unique("lost_heir"), app.unique("orphan"), app.unique("orphaned"));
    app.create_user(&heir).await;
    let password = app.create_user(&leaver).await;
    app.create_owned_table(&leaver, &password, &app.default_db, &table).await;
    app.target_admin("postgres").await.batch_execute(&format!("DROP ROLE \"{heir}\"")).await.expect("drop");

    let (status, answer) =
        app.delete(&app.cluster_path(&format!("/users/{leaver}?reassign_to={heir}"))).await;
    assert_eq!(status, 204, "{answer}");
    let gone = app.eventually(Duration::from_secs(20), || async { !app.role_exists(&leaver).await }).await;
    assert!(gone, "the user is dropped all the same");
    let owner: String = app
        .target_admin(&app.default_db)
        .await
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class WHERE relname = $1",
            &[&table],
        )
        .await
        .expect("the table is kept")
        .get(0);
    assert_eq!(owner, app.primary_user);
    let id = app.cluster_id.parse().unwrap();
    let drift = app.store.list_drift(id, 20).await.expect("drift");
    assert!(
        drift.iter().any(|d| d.name == leaver && d.description.contains("heir")),
        "the fallback is recorded: {drift:?}"
    );
}
on_each_version!(a_user_whose_heir_is_gone_hands_over_to_the_primary_user);
