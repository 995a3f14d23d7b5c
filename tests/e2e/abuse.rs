//! Attacks on the tenant boundary that need no valid secret: floods of wrong secrets (for a
//! real token id and for made-up ones), and a revoked token that must stop working on every
//! gateway at once, also across a lost revocation listener and a verification in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgplane_gateway::FailureLimits;
use pgplane_testkit::{unique_suffix, AppOptions, TestApp};
use reqwest::Method;

/// The status of `GET /v2/databases` on `base` with `token`.
async fn status_of(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    let response = http.get(format!("{base}/v2/databases")).bearer_auth(token).send().await.expect("request");
    response.status().as_u16()
}

/// A well-formed token with a made-up secret for `token_id`.
fn wrong_secret(token_id: &str) -> String {
    format!("pgp_{token_id}_{}", (0..5).map(|_| unique_suffix()).collect::<String>())
}

/// A well-formed token whose id exists nowhere.
fn made_up() -> String {
    wrong_secret(&format!("{}{}", unique_suffix(), &unique_suffix()[..4]))
}

fn id_of(token: &str) -> String {
    pgplane_core::tokens::token_id(token).expect("well-formed token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_secrets_is_cut_short_and_valid_tokens_keep_working() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let token_id = id_of(&app.token);
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200, "the valid token is cached");

    const FLOODERS: usize = 16;
    const PER_FLOODER: usize = 100;
    let started = Instant::now();
    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (http, base, statuses, token_id) =
                (app.http.clone(), app.base_url.clone(), statuses.clone(), token_id.clone());
            tokio::spawn(async move {
                for n in 0..PER_FLOODER {
                    let token = if (i + n) % 2 == 0 { wrong_secret(&token_id) } else { made_up() };
                    let status = status_of(&http, &base, &token).await;
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                }
            })
        })
        .collect();
    let mut valid = 0;
    while !flood.iter().all(|f| f.is_finished()) {
        assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200, "valid during the flood");
        valid += 1;
    }
    for f in flood {
        f.await.unwrap();
    }
    assert!(valid > 0);
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.keys().all(|s| [401, 429].contains(s)), "{statuses:?}");
    // Only the allowance of failures (30 a minute, all at once) is ever verified, plus those
    // already queued when it ran out; everything else is refused before any lookup.
    let allowance = 30 + started.elapsed().as_secs() / 2 + 1;
    let verified = statuses.get(&401).copied().unwrap_or(0) as u64;
    assert!(verified <= allowance + FLOODERS as u64, "{verified} failures verified: {statuses:?}");
    assert!(statuses.get(&429).copied().unwrap_or(0) > 0, "{statuses:?}");

    // The refusal is cheap and in DigitalOcean's shape, with a hint when to come back.
    let response = app
        .http
        .get(format!("{}/v2/databases", app.base_url))
        .bearer_auth(wrong_secret(&token_id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], "too_many_requests");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["request_id"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_lock_their_token_id_and_their_address_but_not_others() {
    let app = TestApp::spawn_with(AppOptions {
        register: false,
        auth_failures: FailureLimits { per_address: 1000, per_token: 5 },
        ..Default::default()
    })
    .await;
    let other = app.issue_token("default", &["*"]).await;
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(status_of(&app.http, &app.base_url, &wrong_secret(&id_of(&app.token))).await);
    }
    assert_eq!(seen.iter().filter(|s| **s == 401).count(), 5, "the allowance, then 429: {seen:?}");
    assert_eq!(seen.last(), Some(&429));
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200, "its cached owner still works");
    assert_eq!(status_of(&app.http, &app.base_url, &wrong_secret(&id_of(&other))).await, 401, "other ids");
    assert_eq!(status_of(&app.http, &app.base_url, &other).await, 200);

    let app = TestApp::spawn_with(AppOptions {
        register: false,
        auth_failures: FailureLimits { per_address: 5, per_token: 1000 },
        ..Default::default()
    })
    .await;
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(status_of(&app.http, &app.base_url, &made_up()).await);
    }
    assert_eq!(seen.last(), Some(&429), "{seen:?}");
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200, "cached tokens still work");
    // Another client address (still loopback, still to 127.0.0.1) has its own allowance.
    let elsewhere = reqwest::Client::builder().local_address("127.0.0.2".parse().ok()).build().unwrap();
    assert_eq!(status_of(&elsewhere, &app.base_url, &made_up()).await, 401);
}

/// Ends the revocation listeners of every gateway on the app's metadata database (as a
/// network blip or a failover would); returns their process ids.
async fn terminate_revocation_listeners(app: &TestApp) -> Vec<i32> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "select pid from pg_stat_activity
          where datname = current_database() and query ilike 'listen%pgplane_tokens%'
            and pid <> pg_backend_pid()",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    for pid in &pids {
        sqlx::query("select pg_terminate_backend($1)").bind(pid).execute(app.store.pool()).await.unwrap();
    }
    pids
}

/// Waits until `count` revocation listeners other than `gone` are connected.
async fn listeners_back(app: &TestApp, gone: &[i32], count: usize) -> bool {
    app.eventually(Duration::from_secs(10), || async {
        let pids: Vec<i32> = sqlx::query_scalar(
            "select pid from pg_stat_activity
              where datname = current_database() and query ilike 'listen%pgplane_tokens%'",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        pids.iter().filter(|p| !gone.contains(p)).count() >= count
    })
    .await
}

/// Revokes `token` and checks that both gateways refuse it soon after and keep refusing it.
async fn revoke_and_check(app: &TestApp, gateways: &[&str], token: &str) {
    app.store.revoke_token(&id_of(token)).await.unwrap();
    for base in gateways {
        let refused = app
            .eventually(Duration::from_secs(3), || async { status_of(&app.http, base, token).await == 401 })
            .await;
        assert!(refused, "{base} still accepts the revoked token");
    }
    for _ in 0..10 {
        for base in gateways {
            assert_eq!(status_of(&app.http, base, token).await, 401, "{base} accepts it again");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_gateway_also_after_the_listener_was_lost() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let second = app.second_gateway().await;
    let gateways = [app.base_url.as_str(), second.as_str()];
    assert!(listeners_back(&app, &[], 2).await, "both gateways listen for revocations");
    let cached = || async {
        let token = app.issue_token("default", &["*"]).await;
        for base in gateways {
            assert_eq!(status_of(&app.http, base, &token).await, 200);
        }
        token
    };

    // Announced while both listen.
    revoke_and_check(&app, &gateways, &cached().await).await;

    // Announced after the listeners were cut and came back.
    let token = cached().await;
    let gone = terminate_revocation_listeners(&app).await;
    assert_eq!(gone.len(), 2);
    assert!(listeners_back(&app, &gone, 2).await, "the listeners reconnect");
    revoke_and_check(&app, &gateways, &token).await;

    // Revoked right after the listeners were cut: the announcement is lost for good.
    let token = cached().await;
    let gone = terminate_revocation_listeners(&app).await;
    assert_eq!(gone.len(), 2);
    revoke_and_check(&app, &gateways, &token).await;
    assert!(listeners_back(&app, &gone, 2).await);
    for base in gateways {
        assert_eq!(status_of(&app.http, base, &token).await, 401);
        assert_eq!(status_of(&app.http, base, &app.token).await, 200, "valid tokens work on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_in_flight_during_a_revocation_does_not_cache_the_token() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let second = app.second_gateway().await;
    let gateways = [app.base_url.as_str(), second.as_str()];
    assert!(listeners_back(&app, &[], 2).await);
    for round in 0..6u64 {
        let token = app.issue_token("default", &["*"]).await;
        // First uses of the token on both gateways, so argon2 runs while the revocation lands.
        let in_flight: Vec<_> = (0..6)
            .map(|i| {
                let (http, base, token) = (app.http.clone(), gateways[i % 2].to_string(), token.clone());
                tokio::spawn(async move { status_of(&http, &base, &token).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5 * round)).await;
        revoke_and_check(&app, &gateways, &token).await;
        for request in in_flight {
            assert!([200, 401].contains(&request.await.unwrap()));
        }
        for base in gateways {
            assert_eq!(status_of(&app.http, base, &token).await, 401);
        }
    }
    let (status, _) = app.call(Method::GET, "/v2/databases", None).await;
    assert_eq!(status, 200);
}

/// Reads from `stream` until the server closes it (or `within` passes); whether it closed.
async fn closed_within(stream: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let reading = async {
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, reading).await.is_ok()
}

/// The address of `base` (`http://127.0.0.1:port`).
fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    // The production limits: the header read timeout is 10 s.
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let stream = tokio::net::TcpStream::connect(address(&app.base_url)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        writer.write_all(b"GET /v2/databases HTTP/1.1\r\nHost: 127.0.0.1\r\n").await?;
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            writer.write_all(format!("X-Slow-{n}: still coming\r\n").as_bytes()).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    assert!(
        closed_within(&mut reader, Duration::from_secs(30 + 15)).await,
        "the trickling client is cut off"
    );
    trickle.abort();
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_new_requests() {
    pgplane_gateway::raise_open_files_limit(8192);
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let mut idle = Vec::new();
    for n in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(address(&app.base_url)).await.unwrap();
        if n % 2 == 0 {
            // Half of them made a request and keep the connection alive; half never say a word.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 512];
            let read = stream.read(&mut buf).await.unwrap();
            assert!(buf[..read].starts_with(b"HTTP/1.1 200"));
        }
        idle.push(stream);
    }
    assert_eq!(status_of(&app.http, &app.base_url, &app.token).await, 200);
    let fresh = reqwest::Client::new();
    assert_eq!(status_of(&fresh, &app.base_url, &app.token).await, 200, "on a new connection too");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_the_cap_makes_new_ones_wait() {
    let limits = pgplane_gateway::ServeLimits {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(6),
        max_connections: 20,
        ..pgplane_gateway::ServeLimits::default()
    };
    let app =
        TestApp::spawn_with(AppOptions { register: false, serve_limits: limits, ..Default::default() }).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(address(&app.base_url)).await.unwrap().into_split());
    }
    // All 20 places are taken: a new client waits, then is served once idle ones are closed.
    let mut waiting = tokio::net::TcpStream::connect(address(&app.base_url)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut waiting, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early =
        tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read(&mut waiting, &mut buf));
    assert!(early.await.is_err(), "over the cap, a new connection is not served yet");
    let read = tokio::io::AsyncReadExt::read(&mut waiting, &mut buf).await.unwrap();
    assert!(buf[..read].starts_with(b"HTTP/1.1 200"), "then it is");
    let fresh = reqwest::Client::new();
    assert_eq!(status_of(&fresh, &app.base_url, &app.token).await, 200);
    for (reader, _) in &mut idle {
        assert!(closed_within(reader, Duration::from_secs(30)).await, "an idle connection is closed");
    }
}
