//! pgplane as it is deployed (deploy/): replicas that start together migrate the schema once,
//! the container image (`make image`) serves the API against real servers, the Compose stack
//! comes up, works and keeps its data across `down` and `up`, and the Kubernetes manifests are
//! valid against Kubernetes' schemas and keep their promises (deploy/kubernetes/check.py).
//! Everything runs on loopback with host networking; the tests that need Docker skip
//! themselves, saying so, when PGPLANE_TEST_PG_URL is set.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgplane_core::secrets::Sealer;
use pgplane_testkit::{free_port, own_containers, remove_at_exit, unique_suffix, OwnServer, PgServer};
use serde_json::{json, Value};

/// The repository's top folder.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository")
}

/// Runs a command to its end, off the async workers; returns its output.
async fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run command")).await.expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a command succeeded; returns its standard output.
fn succeeded(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what} failed: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// `docker <args>`.
async fn docker<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut command = Command::new("docker");
    command.args(args);
    run(command).await
}

/// The image under test: $PGPLANE_TEST_IMAGE (`make test-e2e` builds pgplane:test from the test
/// build's binary first), else pgplane:latest (`make image`).
async fn image() -> String {
    let image = std::env::var("PGPLANE_TEST_IMAGE").unwrap_or_else(|_| "pgplane:latest".into());
    let out = docker(&["image", "inspect", &image]).await;
    assert!(out.status.success(), "no image {image}: build it with `make image` (deploy/image/build.sh)");
    image
}

/// A file holding `secret` in `dir`, readable by the image's user (uid 10001) through a bind
/// mount; the directory itself stays private.
fn secret_file(dir: &Path, name: &str, secret: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod secret");
}

/// Waits until `GET {base}/readyz` answers 200.
async fn wait_ready(http: &reqwest::Client, base: &str, what: &str, logs: impl Fn() -> String) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        if let Ok(answer) = http.get(format!("{base}/readyz")).send().await {
            if answer.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} never became ready; its log:\n{}", logs());
}

/// A request with a token; returns the status and the JSON body (Null when empty).
async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Registers `target` (admin: its superuser) through the API; returns the cluster's id.
async fn register(http: &reqwest::Client, base: &str, token: &str, target: &PgServer) -> String {
    let body = json!({
        "name": "deployed", "engine": "pg", "region": "nyc3", "size": "db-s-1vcpu-1gb", "num_nodes": 1,
        "pgplane": {
            "host": target.host, "port": target.port, "user": target.user, "password": target.password,
            "sslmode": "disable", "primary_user": "doadmin", "default_database": "defaultdb",
        }
    });
    let (status, body) =
        call(http, token, reqwest::Method::POST, &format!("{base}/v2/databases"), Some(body)).await;
    assert_eq!(status, 201, "registering the target: {body}");
    body["database"]["id"].as_str().expect("cluster id").to_string()
}

/// Creates a user through the API and checks that it can log in to the target with the
/// password the API answered; returns that password.
async fn create_user_on_target(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cluster: &str,
    target: &PgServer,
    name: &str,
) -> String {
    let url = format!("{base}/v2/databases/{cluster}/users");
    let (status, body) = call(http, token, reqwest::Method::POST, &url, Some(json!({ "name": name }))).await;
    assert_eq!(status, 201, "creating {name}: {body}");
    let password = body["user"]["password"].as_str().expect("password");
    let admin = target.admin("postgres").await;
    let rows =
        admin.query("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", &[&name]).await.expect("pg_roles");
    assert_eq!(rows.len(), 1, "{name} is not on the target");
    assert!(rows[0].get::<_, bool>(0), "{name} cannot log in");
    target.login(name, password, "defaultdb").await.expect("the new user logs in to the target");
    password.to_string()
}

/// Creates a pool through the API (trying again until the pooler has registered its server)
/// and waits until it is ready; returns the pool.
async fn create_ready_pool(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cluster: &str,
    body: Value,
) -> Value {
    let url = format!("{base}/v2/databases/{cluster}/pools");
    let name = body["name"].as_str().expect("pool name").to_string();
    let started = Instant::now();
    loop {
        let (status, answer) = call(http, token, reqwest::Method::POST, &url, Some(body.clone())).await;
        if status == 201 {
            break;
        }
        let waiting = answer["message"].as_str().is_some_and(|m| m.contains("no pooler"));
        assert!(status == 422 && waiting && started.elapsed() < Duration::from_secs(60), "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    loop {
        let (_, answer) = call(http, token, reqwest::Method::GET, &format!("{url}/{name}"), None).await;
        if answer["pool"]["status"] == "ready" {
            return answer["pool"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the pool did not become ready: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates the database `pgplane` on a fresh server; returns its URL (as the superuser).
async fn metadata_database(server: &PgServer) -> String {
    let admin = server.admin("postgres").await;
    admin.batch_execute("CREATE DATABASE pgplane").await.expect("create the metadata database");
    server.url("pgplane")
}

/// The last line a command printed (a token printed by `pgplane token create`).
fn last_line(stdout: &str) -> String {
    stdout.lines().rfind(|l| !l.trim().is_empty()).expect("output").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_the_schema_once() {
    if !own_containers() {
        return;
    }
    // A fresh server of the test's own: its log shows every statement each process sent.
    let server = OwnServer::start(17).await;
    let url = metadata_database(&server.server).await;
    // What `pgplane serve` does first is what `pgplane migrate` does (Store::migrate): four
    // replicas starting at once.
    let starts = (0..4).map(|_| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgplane"));
        command.arg("migrate").env("PGPLANE_DATABASE_URL", &url).env_remove("PGPLANE_DATABASE_URL_FILE");
        run(command)
    });
    for (i, out) in futures::future::join_all(starts).await.iter().enumerate() {
        succeeded(&format!("pgplane migrate #{i}"), out);
    }
    let migrations = std::fs::read_dir(repo().join("migrations"))
        .expect("migrations")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    let admin = server.server.admin("pgplane").await;
    let rows = admin
        .query("SELECT version, success FROM _sqlx_migrations ORDER BY version", &[])
        .await
        .expect("migration history");
    assert_eq!(rows.len(), migrations, "each migration recorded once");
    assert!(rows.iter().all(|r| r.get::<_, bool>(1)), "every migration succeeded");
    // Each migration ran once: the first one's first statement is in the log once, while all
    // four processes asked for the migration lock (the others waited, then found nothing to do).
    let log = server.server.log();
    assert_eq!(
        log.matches("create table teams").count(),
        1,
        "the first migration ran more than once:\n{log}"
    );
    assert!(
        log.matches("pg_advisory_lock(").count() >= 4,
        "not every process took the migration lock:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_the_api_against_real_servers() {
    if !own_containers() {
        return;
    }
    let image = image().await;
    let config =
        docker(&["image", "inspect", "-f", "{{.Config.User}} {{json .Config.Entrypoint}}", &image]).await;
    assert_eq!(
        succeeded("docker image inspect", &config).trim(),
        r#"10001:10001 ["/usr/local/bin/pgplane"]"#,
        "the image runs pgplane as uid 10001"
    );
    let shell =
        docker(&["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", &image, "-c", "true"]).await;
    assert!(!shell.status.success(), "the image has a shell");
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", &image]).await;
    let size: f64 = succeeded("docker image inspect", &size).trim().parse().expect("size");
    eprintln!("image {image}: {:.1} MB", size / 1e6);

    let (metadata, target) = tokio::join!(OwnServer::start(15), OwnServer::start(17));
    let secrets = tempfile::tempdir().expect("tempdir");
    secret_file(secrets.path(), "database-url", &metadata_database(&metadata.server).await);
    secret_file(secrets.path(), "secret-key", &Sealer::generate_key());
    let mount = format!("{}:/etc/pgplane:ro", secrets.path().display());
    let with_config = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["run", "--network", "host", "--read-only", "--cap-drop", "ALL"]
            .into_iter()
            .chain(["--security-opt", "no-new-privileges", "--label", "pgplane.test=image", "-v", &mount])
            .chain(["-e", "PGPLANE_DATABASE_URL_FILE=/etc/pgplane/database-url"])
            .chain(["-e", "PGPLANE_SECRET_KEY_FILE=/etc/pgplane/secret-key"])
            .map(String::from)
            .collect();
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    succeeded("migrate in the image", &docker(&with_config(&["--rm", &image, "migrate"])).await);
    let create = with_config(&["--rm", &image, "token", "create", "--name", "image-test"]);
    let token = last_line(&succeeded("token create in the image", &docker(&create).await));

    let port = free_port();
    let listen = format!("PGPLANE_LISTEN=127.0.0.1:{port}");
    let serve = with_config(&["-d", "-e", &listen, &image]);
    let started = docker(&serve).await;
    let id = last_line(&succeeded("docker run (serve)", &started));
    remove_at_exit(std::slice::from_ref(&id));
    let _removed = RemoveOnDrop(id.clone());
    let logs = || {
        let out = Command::new("docker").args(["logs", &id]).output().expect("docker logs");
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &base, "pgplane in its image", logs).await;

    let cluster = register(&http, &base, &token, &target.server).await;
    let name = format!("image_user_{}", unique_suffix());
    create_user_on_target(&http, &base, &token, &cluster, &target.server, &name).await;
    // The image logs JSON by default, one object a line.
    let log = logs();
    let first = log.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object()),
        "not a JSON log line: {first}"
    );
}

/// Removes a container when the test ends (also when it fails).
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-fv", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One Compose project of the test's own (deploy/compose with the host-network override).
struct Compose {
    project: String,
    secrets: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Compose {
    fn command(&self, args: &[&str]) -> Command {
        let dir = repo().join("deploy/compose");
        let mut command = Command::new("docker-compose");
        command
            .current_dir(&dir)
            .args(["-p", &self.project, "-f", "docker-compose.yml", "-f", "docker-compose.host.yml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    async fn run(&self, args: &[&str]) -> String {
        succeeded(&format!("docker-compose {}", args.join(" ")), &run(self.command(args)).await)
    }

    fn logs(&self) -> String {
        let out = self.command(&["logs", "--no-color"]).output().expect("docker-compose logs");
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_comes_up_works_and_keeps_its_data() {
    if !own_containers() {
        return;
    }
    let image = image().await;
    let (api, metadata_port, target_port, pool_port) = (free_port(), free_port(), free_port(), free_port());
    let secrets = tempfile::tempdir().expect("tempdir");
    let env: Vec<(String, String)> = [
        ("PGPLANE_COMPOSE_IMAGE", image),
        ("PGPLANE_COMPOSE_SECRETS", secrets.path().display().to_string()),
        ("PGPLANE_COMPOSE_HOST_NETWORK", "1".into()),
        ("PGPLANE_COMPOSE_API_PORT", api.to_string()),
        ("PGPLANE_COMPOSE_METADATA_PORT", metadata_port.to_string()),
        ("PGPLANE_COMPOSE_TARGET_PORT", target_port.to_string()),
        ("PGPLANE_COMPOSE_POOL_PORTS", format!("{pool_port}-{pool_port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let stack = Compose { project: format!("pgplane-test-{}", unique_suffix()), secrets, env };
    let mut init = Command::new(repo().join("deploy/compose/init-secrets.sh"));
    init.envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    succeeded("init-secrets.sh", &run(init).await);

    stack.run(&["up", "-d"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    wait_ready(&http, &base, "the Compose stack", || stack.logs()).await;
    let token = last_line(
        &stack
            .run(&["exec", "-T", "pgplane", "/usr/local/bin/pgplane", "token", "create", "--name", "compose"])
            .await,
    );
    let password =
        std::fs::read_to_string(stack.secrets.path().join("target-password")).expect("target password");
    let target = PgServer {
        host: "127.0.0.1".into(),
        port: target_port,
        user: "postgres".into(),
        password: password.trim().to_string(),
        container_id: None,
    };
    let cluster = register(&http, &base, &token, &target).await;
    let name = format!("compose_user_{}", unique_suffix());
    let password = create_user_on_target(&http, &base, &token, &cluster, &target, &name).await;
    // The stack's pooler serves a pool on its PgBouncer; the user logs in through it.
    let pool = create_ready_pool(
        &http,
        &base,
        &token,
        &cluster,
        json!({"name": "compose_pool", "mode": "transaction", "size": 2, "db": "defaultdb"}),
    )
    .await;
    assert_eq!(pool["connection"]["port"], pool_port, "{pool}");
    let through_pool = PgServer { port: pool_port, ..target.clone() };
    let client = through_pool.login(&name, &password, "compose_pool").await.expect("log in through the pool");
    let database: String = client.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    assert_eq!(database, "defaultdb");

    // `down` removes the containers but keeps the volumes: after `up`, the same token, cluster
    // and user are still there.
    stack.run(&["down"]).await;
    let left =
        docker(&["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={}", stack.project)])
            .await;
    assert_eq!(succeeded("docker ps", &left).trim(), "", "down left containers");
    stack.run(&["up", "-d"]).await;
    wait_ready(&http, &base, "the Compose stack, started again", || stack.logs()).await;
    let url = format!("{base}/v2/databases/{cluster}/users/{name}");
    let (status, body) = call(&http, &token, reqwest::Method::GET, &url, None).await;
    assert_eq!(status, 200, "the user is gone after down and up: {body}");
    let admin = target.admin("postgres").await;
    let rows = admin.query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]).await.expect("pg_roles");
    assert_eq!(rows.len(), 1, "the target lost {name} after down and up");
}

#[test]
fn the_kubernetes_manifests_are_valid_and_keep_their_promises() {
    // kubectl renders the kustomization; the repository's .venv (make .venv/installed) holds
    // kubernetes-validate with Kubernetes' published schemas.
    let repo = repo();
    let python = repo.join(".venv/bin/python");
    assert!(python.exists(), "no {}: run `make .venv/installed`", python.display());
    let out = Command::new(&python)
        .arg(repo.join("deploy/kubernetes/check.py"))
        .stdin(Stdio::null())
        .output()
        .expect("run check.py");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the manifests fail their checks:\n{report}");
    assert!(report.contains("all manifest checks passed"), "{report}");
}
