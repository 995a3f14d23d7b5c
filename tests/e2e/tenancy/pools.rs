//! Attacks on connection pools and trusted sources by another team's primary user and token,
//! on one shared server: its users cannot log in through my pools (each cluster's PgBouncer
//! knows its own cluster's logins only), its pools and rules cannot reach my cluster's databases
//! and users, it cannot read or change mine through the API, and it cannot take every server
//! connection the server's pools may use.

use reqwest::Method;
use serde_json::json;

use super::Rival;
use crate::on_each_version;
use crate::pools::{connection_slots, create_pool, ready_pool, through_pool};
use pgplane_testkit::TestApp;

async fn pools_stay_within_the_team(major: u32) {
    let app = TestApp::spawn(major).await;
    let mine = app.start_pooler().await;
    let rival = Rival::register(&app, "rival").await;
    // The rival's cluster is registered as `localhost`: a pooler for that name of the server.
    let theirs = app.start_pooler_for("localhost").await;
    let primary_password = app.primary_password().await;

    create_pool(&app, json!({"name": "same-name", "mode": "transaction", "size": 2, "db": app.default_db}))
        .await;
    ready_pool(&app, "same-name").await;
    // The same pool name in the rival's cluster is its own pool, on its own PgBouncer.
    let body = json!({"name": "same-name", "mode": "transaction", "size": 2, "db": rival.default_db});
    let (status, answer) = rival.call(&app, Method::POST, &rival.path("/pools"), Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["pool"]["connection"]["port"], theirs.port, "{answer}");
    let path = rival.path("/pools/same-name");
    let ready = app
        .eventually(std::time::Duration::from_secs(30), || async {
            rival.call(&app, Method::GET, &path, None).await.1["pool"]["status"] == "ready"
        })
        .await;
    assert!(ready, "the rival's pool runs");

    // Its primary user cannot log in through my PgBouncer, to my pool or any name.
    for pool in ["same-name", app.default_db.as_str(), rival.default_db.as_str(), "pgbouncer"] {
        let attempt =
            through_pool(mine.port, "127.0.0.1", pool, &rival.primary_user, &rival.primary_password).await;
        assert!(attempt.is_err(), "the rival logged in through my pooler to {pool}");
    }
    // Nor my primary user through the rival's.
    let attempt =
        through_pool(theirs.port, "127.0.0.1", "same-name", &app.primary_user, &primary_password).await;
    assert!(attempt.is_err(), "my primary user logged in through the rival's pooler");
    // Each logs in through its own.
    through_pool(mine.port, "127.0.0.1", "same-name", &app.primary_user, &primary_password).await.unwrap();
    let session =
        through_pool(theirs.port, "127.0.0.1", "same-name", &rival.primary_user, &rival.primary_password)
            .await
            .unwrap();
    let row = session.query_one("SELECT current_database()::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), rival.default_db);

    // Its pools cannot lead to my database or log in as my users.
    for (body, says) in [
        (
            json!({"name": "steal-db", "mode": "session", "size": 1, "db": app.default_db}),
            "not a database of this cluster",
        ),
        (
            json!({"name": "steal-user", "mode": "session", "size": 1, "db": rival.default_db, "user": app.primary_user}),
            "not a user of this cluster",
        ),
    ] {
        let (status, answer) = rival.call(&app, Method::POST, &rival.path("/pools"), Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{answer}");
    }
    // Nor read or change mine.
    for (method, rest, body) in [
        (Method::GET, "/pools", None),
        (Method::GET, "/pools/same-name", None),
        (Method::PUT, "/pools/same-name", Some(json!({"mode": "session", "size": 1, "db": app.default_db}))),
        (Method::DELETE, "/pools/same-name", None),
        (Method::GET, "/firewall", None),
        (Method::PUT, "/firewall", Some(json!({"rules": [{"type": "ip_addr", "value": "127.0.0.9"}]}))),
        (Method::GET, "/events", None),
        (Method::GET, "/ca", None),
    ] {
        let (status, answer) = rival.call(&app, method.clone(), &app.cluster_path(rest), body).await;
        assert_eq!(status, 404, "{method} {rest}: {answer}");
    }
    let (_, mine_listed) = app.get(&app.cluster_path("/pools/same-name")).await;
    assert_eq!(mine_listed["pool"]["mode"], "transaction", "{mine_listed}");

    // Its trusted sources do not shut my pools.
    let rules = json!({"rules": [{"type": "ip_addr", "value": "127.0.0.2"}]});
    let (status, _) = rival.call(&app, Method::PUT, &rival.path("/firewall"), Some(rules)).await;
    assert_eq!(status, 204);
    let shut = app
        .eventually(std::time::Duration::from_secs(10), || async {
            through_pool(theirs.port, "127.0.0.1", "same-name", &rival.primary_user, &rival.primary_password)
                .await
                .is_err()
        })
        .await;
    assert!(shut, "the rival's rule applies to its own pools");
    through_pool(mine.port, "127.0.0.1", "same-name", &app.primary_user, &primary_password).await.unwrap();

    // It cannot take every server connection pools may use: its share is half of them, though
    // it reaches the server by another name.
    let share = (connection_slots(&app).await - 13) / 2;
    let body = json!({"name": "hog", "mode": "session", "size": share - 2, "db": rival.default_db});
    let (status, answer) = rival.call(&app, Method::POST, &rival.path("/pools"), Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let body = json!({"name": "hog-more", "mode": "session", "size": 1, "db": rival.default_db});
    let (status, answer) = rival.call(&app, Method::POST, &rival.path("/pools"), Some(body)).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("one team's pools"), "{answer}");
    create_pool(
        &app,
        json!({"name": "mine-still", "mode": "session", "size": share - 2, "db": app.default_db}),
    )
    .await;
    mine.stop().await;
    theirs.stop().await;
}
on_each_version!(pools_stay_within_the_team);
