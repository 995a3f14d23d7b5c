//! End-to-end tests of the client commands (`pgplane databases ...`, `pgplane auth init`): the
//! real binary against a spawned pgplane whose cluster is a real PostgreSQL 15 server. Effects
//! are asserted on that server (roles, databases, logins), not only on what the binary prints.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use pgplane_testkit::{free_port, TestApp};
use serde_json::Value;

/// The outcome of one run of the binary.
pub(crate) struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success; returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert_eq!(self.stderr, "", "a successful run prints nothing on stderr");
        &self.stdout
    }

    /// Asserts failure with exit code 1 and nothing on stdout; returns stderr.
    pub fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "stdout: {}", self.stdout);
        assert_eq!(self.stdout, "");
        &self.stderr
    }

    /// Asserts failure as [`Run::failed`] with one line on stderr that starts with `prefix`
    /// and contains each of `needles`; returns that line.
    pub fn refused(&self, prefix: &str, needles: &[&str]) -> &str {
        let stderr = self.failed();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(prefix), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{stderr} (expected {needle:?})");
        }
        stderr.trim_end()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).expect("JSON output")
    }
}

/// Runs the binary for one test, with its own config file path (in a temporary directory)
/// and none of the caller's client environment variables.
pub(crate) struct Cli {
    api_url: String,
    token: String,
    home: tempfile::TempDir,
}

impl Cli {
    /// A pgplane with a cluster on PostgreSQL 15, and the binary pointed at it.
    pub async fn spawn() -> (TestApp, Self) {
        let app = TestApp::spawn(15).await;
        let cli = Self::new(&app);
        (app, cli)
    }

    pub fn new(app: &TestApp) -> Self {
        Self {
            api_url: app.base_url.clone(),
            token: app.token.clone(),
            home: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Where `auth init` writes (its directory does not exist at first).
    fn config_path(&self) -> PathBuf {
        self.home.path().join("pgplane").join("config.json")
    }

    /// `pgplane <args> --api-url <app>`, the token in PGPLANE_ACCESS_TOKEN.
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--api-url", &self.api_url]);
        self.raw(&all, None, &[("PGPLANE_ACCESS_TOKEN", &self.token)]).await
    }

    /// `pgplane <args>` exactly, with `input` on stdin (never a terminal) and `env` set.
    pub async fn raw(&self, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgplane"));
        command
            .args(args)
            .env_remove("PGPLANE_API_URL")
            .env_remove("PGPLANE_ACCESS_TOKEN")
            .env_remove("PGPLANE_ACCESS_TOKEN_FILE")
            .env_remove("PGPLANE_TARGET_PASSWORD")
            .env_remove("PGPLANE_TARGET_PASSWORD_FILE")
            .env("PGPLANE_CONFIG", self.config_path())
            .envs(env.iter().copied())
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = input.map(str::to_string);
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("run pgplane");
            if let Some(input) = input {
                use std::io::Write;
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(input.as_bytes()).expect("write stdin");
            }
            child.wait_with_output().expect("wait for pgplane")
        })
        .await
        .expect("join");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }
}

/// The cells of each line of a text table (columns are at least two spaces apart).
pub(crate) fn table(text: &str) -> Vec<Vec<&str>> {
    text.lines().map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect()
}

/// The sorted lines of some output.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_listed_shown_and_reset() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let name = app.unique("cli_user");

    let created = cli.run(&["databases", "user", "create", id, &name]).await;
    let rows = table(created.ok());
    assert_eq!(rows[0], ["Name", "Role", "Password"]);
    assert_eq!(rows.len(), 2, "{}", created.stdout);
    assert_eq!(rows[1][..2], [name.as_str(), "normal"]);
    let password = rows[1][2].to_string();
    let lines: Vec<&str> = created.stdout.lines().collect();
    assert_eq!(lines[0].find("Role"), lines[1].find("normal"), "aligned");
    assert!(app.role_exists(&name).await);
    app.target.login(&name, &password, &app.default_db).await.expect("the printed password logs in");

    let listed = cli.run(&["databases", "user", "list", id]).await;
    let rows = table(listed.ok());
    assert_eq!(rows[0], ["Name", "Role", "Password"]);
    assert!(rows.contains(&vec![name.as_str(), "normal", password.as_str()]));
    assert!(rows.iter().any(|r| r[..2] == [app.primary_user.as_str(), "primary"]));

    let names = cli.run(&["databases", "u", "ls", id, "--format", "Name", "--no-header"]).await;
    let mut expected = vec![name.as_str(), app.primary_user.as_str()];
    expected.sort();
    assert_eq!(sorted_lines(names.ok()), expected);

    let listed = cli.run(&["databases", "user", "list", id, "-o", "json"]).await;
    let users = listed.json();
    let user = users
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|u| u["name"] == name.as_str())
        .expect("the new user is listed");
    assert_eq!(user["password"], password.as_str());

    let shown = cli.run(&["databases", "user", "get", id, &name, "--output", "json"]).await;
    let user = shown.json();
    assert_eq!(user["name"], name.as_str());
    assert_eq!(user["role"], "normal");
    assert_eq!(user["password"], password.as_str());

    let shown = cli.run(&["databases", "u", "g", id, &name, "--format", "Password,name"]).await;
    assert_eq!(table(shown.ok()), [["Password", "Name"], [password.as_str(), name.as_str()]]);

    let reset =
        cli.run(&["databases", "user", "reset", id, &name, "--format", "Password", "--no-header"]).await;
    let new_password = reset.ok().trim_end().to_string();
    assert_ne!(new_password, password);
    assert_eq!(new_password.len(), password.len());
    app.target.login(&name, &new_password, &app.default_db).await.expect("the new password logs in");
    assert!(
        app.target.login(&name, &password, &app.default_db).await.is_err(),
        "the old password no longer logs in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_and_parameters_are_set_shown_and_changed() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let db = app.default_db.as_str();
    let name = app.unique("tuned");
    let created = cli
        .run(&[
            "databases",
            "user",
            "create",
            id,
            &name,
            "--connection-limit",
            "3",
            "--parameter",
            "statement_timeout=1s",
            "--parameter-in",
            db,
            "work_mem=8MB",
        ])
        .await;
    // doctl's columns by default; pgplane's by name.
    assert_eq!(table(created.ok())[0], ["Name", "Role", "Password"]);
    let shown =
        cli.run(&["databases", "user", "get", id, &name, "--format", "ConnectionLimit,Parameters"]).await;
    assert_eq!(
        table(shown.ok()),
        [
            vec!["Connection Limit", "Parameters"],
            vec!["3", &format!("statement_timeout=1s, {db}:work_mem=8MB")]
        ]
    );
    let on_target = "SELECT rolconnlimit::text FROM pg_roles WHERE rolname = $1";
    assert_eq!(app.target_strings(on_target, &[&name]).await, ["3"]);

    // An update changes what it names and keeps the rest.
    let updated = cli
        .run(&[
            "databases",
            "user",
            "update",
            id,
            &name,
            "--connection-limit",
            "-1",
            "--format",
            "ConnectionLimit,Parameters",
            "--no-header",
        ])
        .await;
    assert_eq!(table(updated.ok()), [vec!["-1", &format!("statement_timeout=1s, {db}:work_mem=8MB")]]);
    let cleared =
        cli.run(&["databases", "user", "update", id, &name, "--clear-parameters", "-o", "json"]).await;
    assert_eq!(cleared.json()["settings"]["parameters"], serde_json::json!([]));
    assert_eq!(app.target_strings(on_target, &[&name]).await, ["-1"]);

    let bad = cli.run(&["databases", "user", "update", id, &name, "--parameter", "role=postgres"]).await;
    bad.refused("Error: PUT ", &["parameter \"role\" cannot be set"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_and_leases_are_set_listed_and_renewed() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let (lease, plain) = (app.unique("job"), app.unique("plain"));
    app.create_user(&plain).await;
    let created = cli.run(&["databases", "user", "create", id, &lease, "--ttl", "1h", "-o", "json"]).await;
    let until = created.json()["settings"]["valid_until"].as_str().expect("a lease has an end").to_string();
    let shown = cli
        .run(&["databases", "user", "get", id, &lease, "--format", "Status,LeaseSeconds,Heir", "--no-header"])
        .await;
    assert_eq!(table(shown.ok()), [vec!["ready", "3600", app.primary_user.as_str()]]);

    // Renewed for longer: the end moves.
    let renewed = cli.run(&["databases", "user", "renew", id, &lease, "--ttl", "2h", "-o", "json"]).await;
    let later = renewed.json()["settings"]["valid_until"].as_str().unwrap().to_string();
    assert!(later > until, "{later} after {until}");
    assert_eq!(renewed.json()["lease"]["ttl_seconds"], 7200);

    // A plain user given an expiry, listed with the lease among those expiring within a day.
    let time =
        (chrono::Utc::now() + chrono::Duration::hours(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let updated = cli
        .run(&[
            "databases",
            "user",
            "update",
            id,
            &plain,
            "--valid-until",
            &time,
            "--format",
            "ValidUntil",
            "--no-header",
        ])
        .await;
    assert_eq!(table(updated.ok()), [vec![time.as_str()]]);
    let listed = cli
        .run(&["databases", "user", "list", id, "--expiring-within", "1d", "--format", "Name", "--no-header"])
        .await;
    let mut names: Vec<String> = table(listed.ok()).into_iter().map(|row| row[0].to_string()).collect();
    names.sort();
    let mut expected = vec![lease.clone(), plain.clone()];
    expected.sort();
    assert_eq!(names, expected);
    let never =
        cli.run(&["databases", "user", "update", id, &plain, "--valid-until", "never", "-o", "json"]).await;
    assert!(never.json()["settings"].get("valid_until").is_none(), "{}", never.json());

    // A rotation with a grace: the new password's login, and the old one's until when.
    let rotated = cli
        .run(&[
            "databases",
            "user",
            "reset",
            id,
            &plain,
            "--grace",
            "10m",
            "--format",
            "Login,GraceLogin",
            "--no-header",
        ])
        .await;
    assert_eq!(table(rotated.ok()), [vec![format!("{plain}_alt"), plain.clone()]]);

    let bad = cli.run(&["databases", "user", "renew", id, &plain]).await;
    bad.refused("Error: POST ", &["not a lease"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_levels_are_granted_shown_and_revoked() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let (shop, books) = (app.unique("shop"), app.unique("books"));
    app.create_db(&shop).await;
    app.create_db(&books).await;
    let primary = app.primary_password().await;
    let owner = app.target.login(&app.primary_user, &primary, &shop).await.expect("primary logs in");
    owner.batch_execute("CREATE TABLE goods (n int); INSERT INTO goods VALUES (1)").await.unwrap();

    let name = app.unique("clerk");
    let created =
        cli.run(&["databases", "user", "create", id, &name, "--access", &format!("{books}=read_only")]).await;
    let password = table(created.ok())[1][2].to_string();
    let granted = cli.run(&["databases", "user", "grant", id, &name, &shop, "--level", "read_write"]).await;
    let mut rows = table(granted.ok());
    rows.sort();
    let mut expected =
        vec![vec!["Database", "Level"], vec![books.as_str(), "read_only"], vec![shop.as_str(), "read_write"]];
    expected.sort();
    assert_eq!(rows, expected);
    let clerk = app.target.login(&name, &password, &shop).await.expect("the user logs in");
    clerk.batch_execute("INSERT INTO goods VALUES (2)").await.expect("read_write writes");
    let err = clerk.batch_execute("DROP TABLE goods").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    drop(clerk);

    let revoked = cli.run(&["databases", "user", "revoke", id, &name, &shop]).await;
    assert_eq!(table(revoked.ok()), [vec!["Database", "Level"], vec![books.as_str(), "read_only"]]);
    let clerk = app.target.login(&name, &password, &shop).await.expect("the user logs in");
    let err = clerk.batch_execute("SELECT * FROM goods").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let shown = cli.run(&["databases", "user", "access", id, &name, "-o", "json"]).await;
    assert_eq!(shown.json(), serde_json::json!([{ "database": books, "level": "read_only" }]));

    let bad = cli.run(&["databases", "user", "grant", id, &name, "nowhere", "--level", "read_only"]).await;
    bad.refused("Error: PUT ", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_created_listed_shown_and_deleted() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let plain = app.unique("cli_db");
    // Path segments are percent-encoded: this name has '/', '?', '%', quotes and Unicode.
    let odd = format!("odd db/?%'\"ü_{}", app.suffix);

    for name in [&plain, &odd] {
        let created = cli.run(&["databases", "db", "create", id, name]).await;
        assert_eq!(created.ok(), format!("Name\n{name}\n"));
        assert!(app.database_exists(name).await, "{name}");
        let shown = cli.run(&["databases", "db", "get", id, name]).await;
        assert_eq!(shown.ok(), format!("Name\n{name}\n"));
    }

    let names = cli.run(&["databases", "db", "list", id, "--format", "Name", "--no-header"]).await;
    let mut expected = vec![plain.as_str(), odd.as_str(), app.default_db.as_str()];
    expected.sort();
    assert_eq!(sorted_lines(names.ok()), expected);

    let listed = cli.run(&["databases", "db", "ls", id, "-o", "json"]).await;
    let dbs = listed.json();
    assert!(dbs.as_array().expect("a JSON array").contains(&serde_json::json!({ "name": plain })));
    let shown = cli.run(&["databases", "db", "g", id, &odd, "-o", "json"]).await;
    assert_eq!(shown.json(), serde_json::json!({ "name": odd }));

    for name in [&plain, &odd] {
        let deleted = cli.run(&["databases", "db", "delete", id, name, "--force"]).await;
        assert_eq!(deleted.ok(), "");
        assert!(!app.database_exists(name).await, "{name}");
        let gone = cli.run(&["databases", "db", "get", id, name]).await;
        gone.refused("Error: GET ", &[": 404 "]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_need_force_without_a_terminal() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let name = format!("o'dd us\"er/?%ü_{}", app.suffix);
    let db = app.unique("keep_db");
    app.create_db(&db).await;

    let created = cli.run(&["databases", "user", "create", id, &name, "-o", "json"]).await;
    assert_eq!(created.json()["name"], name.as_str());
    assert!(app.role_exists(&name).await);
    let shown = cli.run(&["databases", "user", "get", id, &name, "-o", "json"]).await;
    assert_eq!(shown.json()["name"], name.as_str());

    let refusals = [
        cli.run(&["databases", "user", "delete", id, &name]).await,
        cli.run(&["databases", "db", "rm", id, &db]).await,
        cli.run(&["databases", "delete", id]).await,
    ];
    for refused in &refusals {
        assert_eq!(
            refused.failed(),
            "Warning: Requires confirmation. Use the `--force` flag to continue without confirmation.\n\
             Error: Operation aborted.\n"
        );
    }
    assert!(app.role_exists(&name).await, "the user is still there");
    assert!(app.database_exists(&db).await, "the database is still there");
    assert_eq!(app.get(&app.cluster_path("")).await.0, 200, "the cluster too");

    let deleted = cli.run(&["databases", "user", "rm", id, &name, "-f"]).await;
    assert_eq!(deleted.ok(), "");
    assert!(!app.role_exists(&name).await, "the user is gone");
    let gone = cli.run(&["databases", "user", "get", id, &name]).await;
    assert!(gone.failed().contains(": 404 "), "{}", gone.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line() {
    let (app, cli) = Cli::spawn().await;
    let unknown = "00000000-0000-4000-8000-000000000000";

    let missing = cli.run(&["databases", "user", "list", unknown]).await;
    let line = missing.refused("Error: GET ", &[]);
    let url = format!("{}/v2/databases/{unknown}/users", app.base_url);
    assert!(line.starts_with(&format!("Error: GET {url}: 404 (request \"")), "{line}");
    assert!(line.ends_with("The resource you requested could not be found."), "{line}");

    // reset looks the cluster up first, as doctl does.
    let reset = cli.run(&["databases", "user", "reset", unknown, "someone"]).await;
    reset.refused("Error: GET ", &[&format!("/v2/databases/{unknown}: 404 ")]);

    let json = cli.run(&["databases", "get", unknown, "-o", "json"]).await;
    let error: Value = serde_json::from_str(json.failed()).expect("a JSON error");
    let detail = error["errors"][0]["detail"].as_str().expect("detail");
    assert!(detail.starts_with("GET ") && detail.contains(": 404 "), "{detail}");

    let primary =
        cli.run(&["databases", "user", "delete", &app.cluster_id, &app.primary_user, "--force"]).await;
    primary.refused("Error: DELETE ", &[": 422 ", "primary user"]);
    assert!(app.role_exists(&app.primary_user).await);

    let wrong_token = "pgp_wrongid_wrongsecret";
    let refused = cli
        .raw(
            &["databases", "list", "--api-url", &app.base_url],
            None,
            &[("PGPLANE_ACCESS_TOKEN", wrong_token)],
        )
        .await;
    refused.refused("Error: GET ", &[": 401 "]);
    assert!(!line.contains(wrong_token), "the token is never printed: {line}");

    let port = free_port();
    let unreachable_url = format!("http://127.0.0.1:{port}");
    let unreachable = cli
        .raw(
            &["databases", "list", "--api-url", &unreachable_url],
            None,
            &[("PGPLANE_ACCESS_TOKEN", &app.token)],
        )
        .await;
    unreachable.refused("Error: GET ", &[&format!("cannot reach the pgplane API at {unreachable_url}")]);
    assert!(!line.contains(&app.token), "the token is never printed: {line}");

    let typo = cli.run(&["databases", "user", "create", &app.cluster_id, "never", "--format", "Nme"]).await;
    typo.refused("Error: unknown column \"Nme\"", &[]);
    assert!(!app.role_exists("never").await, "nothing is created on a bad --format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_flags_come_before_the_subcommand_as_in_doctl() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();

    let listed =
        cli.raw(&["-t", &app.token, "-u", &app.base_url, "-o", "json", "databases", "list"], None, &[]).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(listed.stderr.starts_with("warning: --access-token puts a secret"), "{}", listed.stderr);
    assert_eq!(listed.stderr.lines().count(), 1, "{}", listed.stderr);
    let clusters: Value = serde_json::from_str(&listed.stdout).expect("JSON output");
    assert_eq!(clusters[0]["id"], id);

    let users = cli
        .raw(
            &[
                "--access-token",
                &app.token,
                "--api-url",
                &app.base_url,
                "databases",
                "user",
                "list",
                id,
                "-o",
                "json",
            ],
            None,
            &[],
        )
        .await;
    assert_eq!(users.code, Some(0), "{}", users.stderr);
    assert!(users.stderr.starts_with("warning: --access-token puts a secret"), "{}", users.stderr);
    assert!(!users.stderr.contains(&app.token), "the token is never printed: {}", users.stderr);
    let users: Value = serde_json::from_str(&users.stdout).expect("JSON output");
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == app.primary_user.as_str()), "{users}");

    // Before and after mixed, the token from the environment.
    let names = cli.run(&["-o", "text", "--no-header", "databases", "u", "ls", id, "--format", "Name"]).await;
    assert_eq!(names.ok(), format!("{}\n", app.primary_user));

    // The server commands refuse them, in either position, before doing anything.
    for args in [
        vec!["-t", "pgp_x_y", "serve"],
        vec!["serve", "--api-url", "http://127.0.0.1:1"],
        vec!["-o", "json", "migrate"],
        vec!["token", "list", "--format", "Name"],
    ] {
        let refused = cli.raw(&args, None, &[]).await;
        assert_eq!(refused.code, Some(2), "{args:?}: {}", refused.stderr);
        assert!(refused.stderr.starts_with("error: --"), "{args:?}: {}", refused.stderr);
        assert!(
            refused
                .stderr
                .contains("is an option of the client commands (databases, auth), not of `pgplane "),
            "{args:?}: {}",
            refused.stderr
        );
        assert!(!refused.stderr.contains("pgp_x_y"), "{}", refused.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_init_saves_a_private_config_that_later_commands_use() {
    let (app, cli) = Cli::spawn().await;
    let path = cli.config_path();

    let saved =
        cli.raw(&["auth", "init", "--api-url", &app.base_url], Some(&format!("{}\n", app.token)), &[]).await;
    assert!(saved.ok().contains(&path.display().to_string()), "{}", saved.stdout);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(config["api_url"], app.base_url.as_str());
    assert_eq!(config["access_token"], app.token.as_str());

    let id = app.cluster_id.as_str();
    let listed =
        cli.raw(&["databases", "user", "list", id, "--format", "Name", "--no-header"], None, &[]).await;
    assert_eq!(listed.ok(), format!("{}\n", app.primary_user));

    // A flag, then the environment or a token file, win over the config file; the flag draws a
    // warning that does not repeat the token.
    let flag = cli.raw(&["databases", "list", "--access-token", "pgp_x_y"], None, &[]).await;
    let stderr = flag.failed();
    assert!(stderr.contains(": 401 "), "{stderr}");
    assert!(stderr.starts_with("warning: --access-token puts a secret on the command line"), "{stderr}");
    assert!(stderr.contains("PGPLANE_ACCESS_TOKEN_FILE") && !stderr.contains("pgp_x_y"), "{stderr}");
    let env = cli.raw(&["databases", "list"], None, &[("PGPLANE_ACCESS_TOKEN", "pgp_x_y")]).await;
    assert!(env.failed().contains(": 401 "), "{}", env.stderr);
    assert!(!env.stderr.contains("warning"), "{}", env.stderr);
    let token_file = cli.home.path().join("token");
    std::fs::write(&token_file, "pgp_x_y\n").unwrap();
    let file =
        cli.raw(&["databases", "list", "--access-token-file", token_file.to_str().unwrap()], None, &[]).await;
    assert_eq!(file.failed().lines().count(), 1, "{}", file.stderr);
    assert!(file.stderr.contains(": 401 "), "{}", file.stderr);
    std::fs::write(&token_file, format!("{}\n", app.token)).unwrap();
    let file_env = [("PGPLANE_ACCESS_TOKEN_FILE", token_file.to_str().unwrap())];
    assert_eq!(
        cli.raw(&["databases", "user", "list", id, "--format", "Name", "--no-header"], None, &file_env)
            .await
            .ok(),
        format!("{}\n", app.primary_user)
    );

    // A token the API refuses is not saved.
    let refused = cli.raw(&["auth", "init"], Some("pgp_x_y\n"), &[]).await;
    assert!(refused.failed().contains(": 401 "), "{}", refused.stderr);
    let config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(config["access_token"], app.token.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_listed_shown_registered_and_unregistered() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let name = format!("c-{}", app.suffix);

    let listed = cli.run(&["databases", "list"]).await;
    let rows = table(listed.ok());
    assert_eq!(
        rows[0],
        ["ID", "Name", "Engine", "Version", "Number of Nodes", "Region", "Status", "Size", "Storage (MiB)"]
    );
    assert_eq!(rows[1][..3], [id, name.as_str(), "pg"]);
    assert_eq!(rows[1][4..7], ["1", "nyc3", "online"]);

    let shown = cli.run(&["databases", "get", id]).await;
    let rows = table(shown.ok());
    assert_eq!(rows[0][9..], ["URI", "Created At"]);
    assert_eq!(rows[1][..3], [id, name.as_str(), "pg"]);
    assert_eq!(rows[1][6], "online");
    assert!(rows[1][9].starts_with("postgresql://"), "{:?}", rows[1]);

    let picked = cli.run(&["databases", "g", id, "--format", "ID,Status", "--no-header"]).await;
    assert_eq!(picked.ok(), format!("{id}    online\n"));
    let clusters = cli.run(&["databases", "ls", "-o", "json"]).await.json();
    assert_eq!(clusters[0]["id"], id);
    assert_eq!(clusters[0]["engine"], "pg");

    let primary = app.unique("doadmin2");
    let default_db = app.unique("defaultdb2");
    let port = app.target.port.to_string();
    let new_name = format!("cli-{}", app.suffix);
    // The arguments of `databases create` for the second cluster, the password aside.
    let create = |password_stdin: bool| {
        let mut args = vec![
            "databases",
            "create",
            new_name.as_str(),
            "--host",
            app.target.host.as_str(),
            "--port",
            port.as_str(),
            "--user",
            app.admin_user.as_str(),
            "--primary-user",
            primary.as_str(),
            "--default-database",
            default_db.as_str(),
            "-o",
            "json",
            "--api-url",
            app.base_url.as_str(),
        ];
        if password_stdin {
            args.extend(["--password-stdin", "--tag", "cli,test"]);
        }
        args
    };
    let created = cli
        .raw(
            &create(true),
            Some(&format!("{}\n", app.admin_password)),
            &[("PGPLANE_ACCESS_TOKEN", &app.token)],
        )
        .await;
    let cluster = created.json();
    assert_eq!(cluster["name"], new_name.as_str());
    assert_eq!(cluster["status"], "online");
    assert_eq!(cluster["tags"], serde_json::json!(["cli", "test"]));
    assert!(app.role_exists(&primary).await);
    assert!(app.database_exists(&default_db).await);
    let new_id = cluster["id"].as_str().expect("id");

    let refused = cli.run(&["databases", "rm", new_id]).await;
    assert!(refused.failed().contains("Operation aborted"));
    let deleted = cli.run(&["databases", "delete", new_id, "--force"]).await;
    assert_eq!(deleted.ok(), "");
    let gone = cli.run(&["databases", "get", new_id]).await;
    assert!(gone.failed().contains(": 404 "), "{}", gone.stderr);
    assert!(app.role_exists(&primary).await, "unregistering drops nothing on the target");

    // Again, with the admin password in a file named by the environment (a container secret).
    let dir = tempfile::tempdir().expect("temporary directory");
    let password_file = dir.path().join("target-password");
    std::fs::write(&password_file, format!("{}\n", app.admin_password)).expect("write password file");
    let password_file = password_file.to_string_lossy().into_owned();
    let again = cli
        .raw(
            &create(false),
            None,
            &[("PGPLANE_ACCESS_TOKEN", &app.token), ("PGPLANE_TARGET_PASSWORD_FILE", &password_file)],
        )
        .await;
    assert_eq!(again.json()["status"], "online", "registered with the password from the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_shows_what_it_owns_and_hands_it_to_the_heir() {
    let (app, cli) = Cli::spawn().await;
    let id = app.cluster_id.as_str();
    let owner = app.unique("cli_owner");
    let heir = app.unique("cli_heir");
    let password = app.create_user(&owner).await;
    app.create_user(&heir).await;
    app.create_owned_table(&owner, &password, &app.default_db, "cli_kept").await;

    let shown = cli.run(&["databases", "user", "deps", id, &owner]).await;
    let text = shown.ok();
    assert!(text.contains("owns objects"), "{text}");
    assert!(text.contains(&format!("Database \"{}\":", app.default_db)), "{text}");
    assert!(text.contains("table: 1 (public.cli_kept)"), "{text}");

    // Without a terminal the preview is shown, then the delete is aborted.
    let refused = cli.run(&["databases", "user", "rm", id, &owner, "--reassign-to", &heir]).await;
    let stderr = refused.failed();
    assert!(stderr.contains("table: 1 (public.cli_kept)"), "{stderr}");
    assert!(stderr.contains("Operation aborted."), "{stderr}");
    assert!(app.role_exists(&owner).await);

    // The plan of a converged cluster has no step.
    let plan = cli.run(&["databases", "plan", id]).await;
    assert!(plan.ok().contains(": 0 step(s), 4 object(s) in sync."), "{}", plan.stdout);

    cli.run(&["databases", "user", "rm", id, &owner, "--reassign-to", &heir, "--force"]).await.ok();
    assert!(!app.role_exists(&owner).await);
    let owner_now = app
        .target_admin(&app.default_db)
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'cli_kept'", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(owner_now, heir);

    // A dry run of a registration on the same server changes nothing.
    let port = app.target.port.to_string();
    let fresh = app.unique("cli_fresh");
    let args = [
        "databases",
        "create",
        "cli-dry",
        "--dry-run",
        "--host",
        &app.target.host,
        "--port",
        &port,
        "--user",
        &app.admin_user,
        "--primary-user",
        &fresh,
        "--default-database",
        &fresh,
        "--api-url",
        &app.base_url,
    ];
    let env = [
        ("PGPLANE_ACCESS_TOKEN", app.token.as_str()),
        ("PGPLANE_TARGET_PASSWORD", app.admin_password.as_str()),
    ];
    let dry = cli.raw(&args, None, &env).await;
    let text = dry.ok();
    assert!(text.contains("would be registered"), "{text}");
    assert!(text.contains(&format!("create user \"{fresh}\"")), "{text}");
    assert!(!app.role_exists(&fresh).await && !app.database_exists(&fresh).await);
}
