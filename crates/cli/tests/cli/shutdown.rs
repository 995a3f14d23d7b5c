//! SIGTERM with a reconcile pass stuck on a target that stopped answering: `pgplane serve`
//! does not wait for the pass past `--shutdown-grace`, exits 0, and the cancelled pass leaves
//! nothing behind that the next process cannot finish. The target is reached through a relay
//! in the test that can freeze (hold every byte, as a hung host would).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{json_lines, Replica, Secrets};
use pgplane_testkit::{AppOptions, TestApp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Copies `from` to `to`, holding each chunk while the relay is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP relay to `target` on a loopback port; returns the port and the switch that freezes it.
async fn relay(target: (String, u16)) -> (u16, Arc<watch::Sender<bool>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (frozen, _) = watch::channel(false);
    let frozen = Arc::new(frozen);
    let switch = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else { continue };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, frozen.subscribe()));
            tokio::spawn(pump(server_read, client_write, frozen.subscribe()));
        }
    });
    (port, switch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_a_stuck_pass_after_the_grace_and_exits_0() {
    let mut app =
        TestApp::spawn_with(AppOptions { register: false, reconciler: false, ..Default::default() }).await;
    let secrets = Secrets::of(&app);
    let flags = ["--shutdown-grace", "2", "--apply-timeout", "1"];
    let mut replica = Replica::start("stuck", &secrets, &flags).await;
    let (port, frozen) = relay((app.target.host.clone(), app.target.port)).await;
    app.base_url = replica.base_url.clone();
    let mut body = app.registration(&format!("c-{}", app.suffix));
    body["pgplane"]["port"] = json!(port);
    let (status, answer) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{answer}");
    app.cluster_id = answer["database"]["id"].as_str().unwrap().to_string();

    // The target hangs; a write's pass gets stuck on it (its statements would time out only
    // after a minute).
    frozen.send_replace(true);
    let name = app.unique("after_stop");
    let (status, created) = app.post(&app.cluster_path("/users"), json!({ "name": name })).await;
    assert_eq!(status, 201);
    assert_eq!(created["user"]["status"], "pending", "the hung target cannot apply it: {created}");
    let password = created["user"]["password"].as_str().unwrap().to_string();

    let asked = Instant::now();
    let exit = replica.terminate(Duration::from_secs(60)).await;
    let took = asked.elapsed();
    assert_eq!(exit.code(), Some(0), "exit code 0 after SIGTERM: {}", replica.log());
    let lines = json_lines(&replica.log());
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("passes still running after the shutdown grace period"))),
        "the stuck pass was cancelled at the deadline, not finished: {}",
        replica.log()
    );
    assert_eq!(lines.last().unwrap()["fields"]["message"], "stopped");
    // Far below the minute the stuck statement would have taken (the grace is 2 s).
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");

    // The target answers again; the next process finishes the cancelled work.
    frozen.send_replace(false);
    replica.spawn(&secrets).await;
    let user = app.cluster_path(&format!("/users/{name}"));
    let ready = app
        .eventually(Duration::from_secs(60), || async { app.get(&user).await.1["user"]["status"] == "ready" })
        .await;
    assert!(ready, "the user is created after the restart");
    assert!(app.target.login(&name, &password, "postgres").await.is_ok(), "{name} logs in");
    let exit = replica.terminate(Duration::from_secs(60)).await;
    assert_eq!(exit.code(), Some(0));
}
