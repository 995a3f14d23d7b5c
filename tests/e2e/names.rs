//! Property-based: names drawn from an alphabet of quotes, semicolons, backslashes, white space,
//! percent signs, slashes and unicode. Every name the API accepts round-trips exactly through a
//! real server (created, listed, shown, dropped); every name it refuses changes nothing; and no
//! name runs SQL of its own (a canary table and every other role survive).

use pgplane_core::lifecycle::ObjectKind;
use pgplane_core::names::check_identifier;
use pgplane_testkit::TestApp;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::encode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_accepted_name_round_trips_and_none_runs_sql() {
    let app = TestApp::spawn(17).await;
    let canary = app.unique("canary");
    app.target_admin(&app.default_db)
        .await
        .batch_execute(&format!("CREATE TABLE {canary} (id int)"))
        .await
        .unwrap();
    // A canary role outside pgplane's management, with attributes a stray statement would change.
    let canary_role = format!("canary_role_{}", app.suffix);
    app.target_admin("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE {canary_role} NOLOGIN CONNECTION LIMIT 7"))
        .await
        .unwrap();
    let canary_facts = "SELECT rolcanlogin::text || rolconnlimit::text FROM pg_roles WHERE rolname = $1";

    // At most 12 characters of up to 4 bytes, plus the 8-byte suffix: within 63 bytes unless a
    // tab or a leading space makes the name invalid.
    let strategy = proptest::string::string_regex("[a-zA-Z0-9_\"';\\\\ %/?#.é名🐘\\t-]{0,12}").unwrap();
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..40 {
        let raw = strategy.new_tree(&mut runner).unwrap().current();
        let name = format!("{raw}{}", app.suffix);
        let path = app.cluster_path("/users");
        if let Err(why) = check_identifier(ObjectKind::User, &name) {
            let (status, body) = app.post(&path, json!({ "name": name })).await;
            assert_eq!(status, 422, "{name:?} ({why}): {body}");
            assert!(!app.role_exists(&name).await);
            refused += 1;
            continue;
        }
        let password = app.create_user(&name).await;
        let found =
            app.target_strings("SELECT rolname::text FROM pg_roles WHERE rolname = $1", &[&name]).await;
        assert_eq!(found, [name.as_str()], "exactly {name:?} exists");
        assert!(app.target.login(&name, &password, &app.default_db).await.is_ok(), "{name:?} logs in");
        let (_, list) = app.get(&path).await;
        assert!(list["users"].as_array().unwrap().iter().any(|u| u["name"] == name.as_str()));
        let (status, shown) = app.get(&format!("{path}/{}", encode(&name))).await;
        assert_eq!((status, shown["user"]["name"].as_str()), (200, Some(name.as_str())));
        let (status, _) = app.delete(&format!("{path}/{}", encode(&name))).await;
        assert_eq!(status, 204, "{name:?}");
        assert!(!app.role_exists(&name).await, "{name:?} dropped");
        accepted += 1;
    }
    assert!(
        accepted >= 10 && refused >= 1,
        "the alphabet exercised both sides ({accepted} accepted, {refused} refused)"
    );
    let canary_left = app
        .target_admin(&app.default_db)
        .await
        .query_one("SELECT count(*) FROM pg_class WHERE relname = $1", &[&canary])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(canary_left, 1, "the canary table survived");
    assert_eq!(
        app.target_strings(canary_facts, &[&canary_role]).await,
        ["false7"],
        "no other role was touched"
    );
    assert!(app.role_exists("postgres").await);
}
