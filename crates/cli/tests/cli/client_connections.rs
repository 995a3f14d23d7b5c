//! End-to-end tests of the client commands for the ways into a cluster: connection pools (on a
//! real PgBouncer run by a test pooler), firewall rules and the CA certificate. The real binary
//! against a spawned pgplane on a real PostgreSQL 15 server; effects are asserted through the
//! API and by logging in through a pool with the connection string the CLI prints.

use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};
use serde_json::{json, Value};

use crate::client::{table, Cli, Run};

/// `pool create`, tried again while the pooler has not registered the cluster's server yet.
async fn create_pool(cli: &Cli, args: &[&str]) -> Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = cli.run(args).await;
        if run.code == Some(0) || tokio::time::Instant::now() > deadline || !run.stderr.contains("no pooler")
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pool as the API shows it.
async fn pool_in_api(app: &TestApp, name: &str) -> Value {
    let (status, body) = app.get(&app.cluster_path(&format!("/pools/{name}"))).await;
    assert_eq!(status, 200, "{body}");
    body["pool"].clone()
}

/// Waits until the pooler runs the pool as last asked (the CLI's Status column says `ready`).
async fn wait_ready(app: &TestApp, cli: &Cli, name: &str) {
    let id = app.cluster_id.as_str();
    let ready = app
        .eventually(Duration::from_secs(30), || async {
            let run =
                cli.run(&["databases", "pool", "get", id, name, "--format", "Status", "--no-header"]).await;
            run.stdout == "ready\n"
        })
        .await;
    assert!(ready, "the pool {name} did not become ready: {}", pool_in_api(app, name).await);
}

/// The current user of a session opened with `uri`, through PgBouncer.
async fn current_user_through(uri: &str) -> Result<String, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_created_listed_shown_updated_and_deleted() {
    let app = TestApp::spawn(15).await;
    let _pooler = app.start_pooler().await;
    let cli = Cli::new(&app);
    let id = app.cluster_id.as_str();
    let (db, primary) = (app.default_db.as_str(), app.primary_user.as_str());
    let name = format!("cli-pool-{}", app.suffix);

    let args = ["databases", "pool", "create", id, &name, "--db", db, "--size", "3", "--user", primary];
    let created = create_pool(&cli, &args).await;
    let rows = table(created.ok());
    assert_eq!(rows[0], ["User", "Name", "Size", "Database", "Mode", "URI"]);
    assert_eq!(rows[1][..5], [primary, name.as_str(), "3", db, "transaction"]);
    let uri = rows[1][5].to_string();
    assert!(uri.starts_with("postgresql://"), "{uri}");
    let pool = pool_in_api(&app, &name).await;
    assert_eq!((pool["size"].clone(), pool["mode"].clone()), (json!(3), json!("transaction")));
    assert_eq!((pool["db"].as_str(), pool["user"].as_str()), (Some(db), Some(primary)));

    // The printed connection string logs in through PgBouncer, as the pool's user.
    wait_ready(&app, &cli, &name).await;
    assert_eq!(current_user_through(&uri).await.expect("a login through the pool"), primary);

    let listed = cli.run(&["databases", "pool", "ls", id, "--format", "Name,Size,Mode", "--no-header"]).await;
    assert_eq!(table(listed.ok()), [[name.as_str(), "3", "transaction"]]);
    let shown = cli.run(&["databases", "p", "g", id, &name, "-o", "json"]).await.json();
    assert_eq!((shown["name"].as_str(), shown["db"].as_str()), (Some(name.as_str()), Some(db)));
    assert_eq!(shown["connection"]["uri"], uri.as_str());

    // An update changes what it is given and keeps the rest; it prints nothing, as doctl's.
    let updated = cli.run(&["databases", "pool", "update", id, &name, "--size", "5"]).await;
    assert_eq!(updated.ok(), "");
    let pool = pool_in_api(&app, &name).await;
    assert_eq!(
        [&pool["size"], &pool["mode"], &pool["db"], &pool["user"]],
        [&json!(5), &json!("transaction"), &json!(db), &json!(primary)]
    );
    cli.run(&["databases", "pool", "u", id, &name, "--mode", "session"]).await.ok();
    let pool = pool_in_api(&app, &name).await;
    assert_eq!(
        [&pool["size"], &pool["mode"], &pool["user"]],
        [&json!(5), &json!("session"), &json!(primary)]
    );
    wait_ready(&app, &cli, &name).await;
    assert_eq!(current_user_through(&uri).await.expect("a login through the changed pool"), primary);
    // An empty user: each client logs in as itself.
    cli.run(&["databases", "pool", "u", id, &name, "--user", ""]).await.ok();
    assert_eq!(pool_in_api(&app, &name).await["user"], "");

    let bad = cli.run(&["databases", "pool", "update", id, &name, "--mode", "sometimes"]).await;
    bad.refused("Error: PUT ", &[": 422 ", "sometimes"]);

    // A delete asks first, as the other deletes do.
    let refused = cli.run(&["databases", "pool", "delete", id, &name]).await;
    assert!(refused.failed().ends_with("Error: Operation aborted.\n"), "{}", refused.stderr);
    assert_eq!(app.get(&app.cluster_path(&format!("/pools/{name}"))).await.0, 200);
    assert_eq!(cli.run(&["databases", "pool", "rm", id, &name, "--force"]).await.ok(), "");
    assert_eq!(app.get(&app.cluster_path(&format!("/pools/{name}"))).await.0, 404);
    let gone = cli.run(&["databases", "pool", "get", id, &name]).await;
    gone.refused("Error: GET ", &[": 404 "]);
    let closed =
        app.eventually(Duration::from_secs(30), || async { current_user_through(&uri).await.is_err() });
    assert!(closed.await, "the deleted pool still lets clients in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_rules_are_appended_listed_removed_and_replaced() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let rules_in_api = || async {
        let (status, body) = app.get(&app.cluster_path("/firewall")).await;
        assert_eq!(status, 200, "{body}");
        let mut values: Vec<String> = body["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_str().unwrap().to_string())
            .collect();
        values.sort();
        values
    };

    let empty = cli.run(&["databases", "firewalls", "list", id]).await;
    assert_eq!(table(empty.ok()), [["UUID", "ClusterUUID", "Type", "Value"]]);

    let appended = cli.run(&["databases", "firewalls", "append", id, "--rule", "ip_addr:127.0.0.2"]).await;
    let rows = table(appended.ok());
    assert_eq!(rows[0], ["UUID", "ClusterUUID", "Type", "Value"]);
    assert_eq!(rows[1][1..], [id, "ip_addr", "127.0.0.2/32"]);
    let first_uuid = rows[1][0].to_string();
    cli.run(&["databases", "fw", "a", id, "--rule", "ip_addr:10.1.2.3/16"]).await.ok();
    assert_eq!(rules_in_api().await, ["10.1.0.0/16", "127.0.0.2/32"]);

    let listed = cli.run(&["databases", "fw", "ls", id, "--format", "Value,Type", "--no-header"]).await;
    let mut rows = table(listed.ok());
    rows.sort();
    assert_eq!(rows, [["10.1.0.0/16", "ip_addr"], ["127.0.0.2/32", "ip_addr"]]);
    let json = cli.run(&["databases", "firewalls", "list", id, "-o", "json"]).await.json();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");

    let removed = cli.run(&["databases", "firewalls", "remove", id, "--uuid", &first_uuid]).await;
    assert_eq!(table(removed.ok())[1][2..], ["ip_addr", "10.1.0.0/16"]);
    assert_eq!(rules_in_api().await, ["10.1.0.0/16"]);
    let unknown = cli.run(&["databases", "firewalls", "rm", id, "--uuid", &first_uuid]).await;
    unknown.refused("Error: cluster ", &[]);

    let replaced = cli
        .run(&[
            "databases",
            "firewalls",
            "replace",
            id,
            "--rule",
            "ip_addr:192.168.1.1,ip_addr:::1",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(replaced.json().as_array().map(Vec::len), Some(2));
    assert_eq!(rules_in_api().await, ["192.168.1.1/32", "::1/128"]);

    // Only ip_addr rules: the API's refusal, passed through; nothing changes.
    let tag = cli.run(&["databases", "firewalls", "append", id, "--rule", "tag:backend"]).await;
    tag.refused("Error: PUT ", &[": 422 ", "\"tag\" is not supported"]);
    assert_eq!(rules_in_api().await, ["192.168.1.1/32", "::1/128"]);
    let malformed = cli.run(&["databases", "firewalls", "replace", id, "--rule", "127.0.0.1"]).await;
    assert_eq!(malformed.code, Some(2), "{}", malformed.stderr);
    assert!(malformed.stderr.contains("is not a type:value pair"), "{}", malformed.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_certificate_is_printed_as_pem_or_a_missing_one_is_one_error_line() {
    let (app, cli) = Cli::spawn().await;
    let missing = cli.run(&["databases", "get-ca", &app.cluster_id]).await;
    missing.refused("Error: GET ", &["/ca: 404 ", "has no CA certificate"]);

    // A cluster registered with a CA certificate (kept, though sslmode disable does not use it).
    let mut app = TestApp::spawn_with(AppOptions { register: false, ..AppOptions::default() }).await;
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUTest\nAQID\n-----END CERTIFICATE-----\n";
    let mut body = app.registration(&format!("ca-{}", app.suffix));
    body["pgplane"]["ca_certificate"] = json!(pem);
    let (status, answer) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{answer}");
    app.cluster_id = answer["database"]["id"].as_str().expect("id").to_string();
    let cli = Cli::new(&app);

    let shown = cli.run(&["databases", "get-ca", &app.cluster_id]).await;
    assert_eq!(shown.ok(), format!("Certificate\n{pem}"));
    let bare = cli.run(&["databases", "gc", &app.cluster_id, "--no-header"]).await;
    assert_eq!(bare.ok(), pem);
    let json = cli.run(&["databases", "get-ca", &app.cluster_id, "-o", "json"]).await.json();
    let (_, api) = app.get(&app.cluster_path("/ca")).await;
    assert_eq!(json, api["ca"], "base64 in JSON, as doctl's");
}
