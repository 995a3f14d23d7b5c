//! Three real `pgplane serve` processes on one metadata database share the work: a storm of
//! creates, resets and deletes over several clusters, spread round-robin over the three, with
//! one process killed (SIGKILL) in the middle; then a rolling restart (SIGTERM, each in turn,
//! under load). Requests to live processes never fail, the survivors take over the killed
//! process's clusters within [`TAKEOVER_BOUND`], every target ends exactly as the API says
//! (roles, databases, and logins with the passwords the API last returned), nothing is in
//! conflict or recorded as drift (which a step applied twice or out of order would leave), and
//! each SIGTERM ends with exit code 0 and JSON log lines on standard output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{json_lines, Replica, Secrets};
use pgplane_testkit::{AppOptions, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const REPLICAS: usize = 3;
const CLUSTERS: usize = 3;
/// Writers per cluster during the storm.
const WRITERS_PER_CLUSTER: usize = 2;
/// Users each storm writer creates (and resets; every third is deleted again).
const USERS_PER_WRITER: usize = 6;
/// Once this many storm requests have been answered, one process is killed.
const KILL_AFTER: usize = 40;
/// How long after a SIGKILL a write to each cluster, sent to a surviving process, may take to
/// be applied. The killed process's advisory locks go when its metadata sessions die (at once
/// on a killed process: the kernel closes its sockets) and the survivors look for due clusters
/// every second, so a takeover takes about a second plus a pass; the bound leaves room for a
/// loaded machine. The same bound is stated in README.md (Replicas).
const TAKEOVER_BOUND: Duration = Duration::from_secs(15);
/// The grace given to each process stopped with SIGTERM.
const GRACE_S: &str = "10";

/// The processes as the load sees them: their URLs and which ones to send nothing to.
struct Fleet {
    urls: Vec<String>,
    token: String,
    http: reqwest::Client,
    /// Not to be sent new requests (being stopped, or killed).
    avoid: Vec<AtomicBool>,
    /// Killed: its requests may fail.
    killed: Vec<AtomicBool>,
    next: AtomicUsize,
    answered: AtomicUsize,
    /// Requests to live processes that failed, with why.
    failures: Mutex<Vec<String>>,
    /// Writes answered before their change was applied (allowed; they converge later).
    pending: AtomicUsize,
    /// Requests sent again to a live process after the killed one failed them.
    retries: AtomicUsize,
}

/// What one request ended with.
struct Answer {
    status: u16,
    body: Value,
}

impl Fleet {
    fn pick(&self) -> usize {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
            if !self.avoid[i].load(Ordering::SeqCst) {
                return i;
            }
        }
    }

    async fn send(
        &self,
        i: usize,
        method: &Method,
        path: &str,
        body: &Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.urls[i])).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    /// Sends a request to the next process, expecting `ok`. A request to a process that has
    /// been killed may fail: it is then sent to a live one, where `already` (the first attempt
    /// took effect) counts as done too. Any other failure is recorded.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        ok: u16,
        already: u16,
    ) -> Option<Answer> {
        let mut retried = false;
        loop {
            let i = self.pick();
            let result = self.send(i, &method, path, &body).await;
            match result {
                Ok((status, body)) if status == ok || (retried && status == already) => {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                    if body.pointer("/user/status").or(body.pointer("/db/status")) == Some(&json!("pending"))
                    {
                        self.pending.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(Answer { status, body });
                }
                _ if self.killed[i].load(Ordering::SeqCst) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    retried = true;
                }
                other => {
                    let what = match other {
                        Ok((status, body)) => format!("{status} {body}"),
                        Err(e) => e,
                    };
                    self.failures.lock().unwrap().push(format!("{method} {path} to process {i}: {what}"));
                    return None;
                }
            }
        }
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// What every cluster should hold: users (with the last password the API returned, or None
/// once deleted) and databases (present or deleted).
#[derive(Default)]
struct Model {
    users: Mutex<BTreeMap<(usize, String), Option<String>>>,
    dbs: Mutex<BTreeMap<(usize, String), bool>>,
}

/// One cluster of the test: its id and its own primary user and default database.
struct Cluster {
    id: String,
    primary_user: String,
    default_db: String,
}

fn password(answer: &Answer) -> String {
    answer.body["user"]["password"].as_str().expect("password").to_string()
}

/// Creates a user and resets its password, then deletes it when `delete`, through the fleet;
/// records the outcome in the model.
async fn user_lifecycle(
    fleet: &Fleet,
    model: &Model,
    cluster: &Cluster,
    c: usize,
    name: String,
    delete: bool,
) {
    let users = format!("/v2/databases/{}/users", cluster.id);
    let Some(created) = fleet.call(Method::POST, &users, Some(json!({ "name": name })), 201, 422).await
    else {
        return;
    };
    // A create that had to be sent again (422: the first one was stored) returned no password.
    let mut last = (created.status == 201).then(|| password(&created));
    let reset = format!("{users}/{name}/reset_auth");
    if let Some(answer) = fleet.call(Method::POST, &reset, Some(json!({})), 200, 200).await {
        last = Some(password(&answer));
    }
    assert!(last.is_some() || !fleet.failures().is_empty(), "user {name}: no password known");
    if delete && fleet.call(Method::DELETE, &format!("{users}/{name}"), None, 204, 404).await.is_some() {
        last = None;
    }
    model.users.lock().unwrap().insert((c, name), last);
}

async fn db_lifecycle(fleet: &Fleet, model: &Model, cluster: &Cluster, c: usize, name: String, delete: bool) {
    let dbs = format!("/v2/databases/{}/dbs", cluster.id);
    if fleet.call(Method::POST, &dbs, Some(json!({ "name": name })), 201, 422).await.is_none() {
        return;
    }
    let mut present = true;
    if delete && fleet.call(Method::DELETE, &format!("{dbs}/{name}"), None, 204, 404).await.is_some() {
        present = false;
    }
    model.dbs.lock().unwrap().insert((c, name), present);
}

/// Waits until every object of every cluster is settled in the API, then compares the API,
/// the model and the target.
async fn check_everything(app: &TestApp, fleet: &Fleet, model: &Model, clusters: &[Cluster]) {
    let live = (0..REPLICAS).find(|i| !fleet.avoid[*i].load(Ordering::SeqCst)).expect("a live process");
    let get = |path: String| async move { fleet.send(live, &Method::GET, &path, &None).await.expect("GET") };
    for (c, cluster) in clusters.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (users, dbs) = loop {
            let (_, users) = get(format!("/v2/databases/{}/users", cluster.id)).await;
            let (_, dbs) = get(format!("/v2/databases/{}/dbs", cluster.id)).await;
            let settled = users["users"].as_array().expect("users").iter().all(|u| u["status"] == "ready")
                && dbs["dbs"].as_array().expect("dbs").iter().all(|d| d.get("status").is_none());
            if settled {
                break (users, dbs);
            }
            assert!(Instant::now() < deadline, "cluster {c} did not settle: {users} {dbs}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let api_users: BTreeMap<String, String> = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["name"] != json!(cluster.primary_user))
            .map(|u| (u["name"].as_str().unwrap().to_string(), u["password"].as_str().unwrap().to_string()))
            .collect();
        let api_dbs: BTreeSet<String> = dbs["dbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .filter(|d| *d != cluster.default_db)
            .collect();
        let expected_users: BTreeMap<String, Option<String>> = model
            .users
            .lock()
            .unwrap()
            .iter()
            .filter(|((of, _), _)| *of == c)
            .map(|((_, name), password)| (name.clone(), password.clone()))
            .collect();
        let present: BTreeSet<String> =
            expected_users.iter().filter(|(_, p)| p.is_some()).map(|(n, _)| n.clone()).collect();
        assert_eq!(
            api_users.keys().cloned().collect::<BTreeSet<_>>(),
            present,
            "cluster {c}: users in the API"
        );
        let expected_dbs: BTreeMap<String, bool> = model
            .dbs
            .lock()
            .unwrap()
            .iter()
            .filter(|((of, _), _)| *of == c)
            .map(|((_, name), present)| (name.clone(), *present))
            .collect();
        let present_dbs: BTreeSet<String> =
            expected_dbs.iter().filter(|(_, p)| **p).map(|(n, _)| n.clone()).collect();
        assert_eq!(api_dbs, present_dbs, "cluster {c}: databases in the API");

        for (name, password) in &expected_users {
            match password {
                Some(password) => {
                    assert_eq!(
                        api_users.get(name),
                        Some(password),
                        "{name}: the API shows the last password"
                    );
                    let login = app.target.login(name, password, &cluster.default_db).await;
                    assert!(
                        login.is_ok(),
                        "{name} logs in with the last password the API returned: {login:?}"
                    );
                }
                None => assert!(!app.role_exists(name).await, "{name} was deleted on the target"),
            }
        }
        for (name, present) in &expected_dbs {
            assert_eq!(app.database_exists(name).await, *present, "database {name} on the target");
        }
        let (_, drift) = get(format!("/v2/databases/{}/drift", cluster.id)).await;
        assert_eq!(
            drift["drift_events"],
            json!([]),
            "cluster {c}: nothing found changed behind pgplane's back"
        );
    }
}

/// Every line a process wrote on standard output is a JSON object; the last one says it stopped.
fn assert_stopped_cleanly(replica: &Replica) {
    let lines = json_lines(&replica.log());
    let last = lines.last().expect("log lines");
    assert_eq!(last["fields"]["message"], "stopped", "{}: the last log line is the stop", replica.name);
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "stopping" && l["level"] == "INFO"),
        "{}: the stop is logged",
        replica.name
    );
    assert_eq!(replica.errors(), "", "{}: nothing on standard error", replica.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_the_work_through_a_kill_and_a_rolling_restart() {
    let mut app =
        TestApp::spawn_with(AppOptions { register: false, reconciler: false, ..Default::default() }).await;
    let secrets = Secrets::of(&app);
    // Full passes every few seconds: a step applied twice or out of order would show as drift.
    let flags = ["--resync-interval", "3", "--shutdown-grace", GRACE_S];
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        replicas.push(Replica::start(&format!("replica{i}"), &secrets, &flags).await);
    }

    // Several clusters on the test's target, each with its own primary user and default
    // database (named with the test's suffix, so that the test's cleanup drops them).
    let mut clusters = Vec::new();
    for c in 0..CLUSTERS {
        app.base_url = replicas[c % REPLICAS].base_url.clone();
        let mut body = app.registration(&format!("c{c}-{}", app.suffix.replace('_', "-")));
        let (primary_user, default_db) =
            (format!("doadmin{c}_{}", app.suffix), format!("defaultdb{c}_{}", app.suffix));
        body["pgplane"]["primary_user"] = json!(primary_user);
        body["pgplane"]["default_database"] = json!(default_db);
        let (status, answer) = app.post("/v2/databases", body).await;
        assert_eq!(status, 201, "registering cluster {c}: {answer}");
        clusters.push(Cluster {
            id: answer["database"]["id"].as_str().unwrap().to_string(),
            primary_user,
            default_db,
        });
    }
    let clusters = Arc::new(clusters);
    let fleet = Arc::new(Fleet {
        urls: replicas.iter().map(|r| r.base_url.clone()).collect(),
        token: app.token.clone(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        avoid: (0..REPLICAS).map(|_| AtomicBool::new(false)).collect(),
        killed: (0..REPLICAS).map(|_| AtomicBool::new(false)).collect(),
        next: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
        pending: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
    });
    let model = Arc::new(Model::default());
    let suffix = app.suffix.clone();

    // The storm.
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..CLUSTERS * WRITERS_PER_CLUSTER {
        let (fleet, model, clusters, suffix) =
            (fleet.clone(), model.clone(), clusters.clone(), suffix.clone());
        writers.spawn(async move {
            let c = w % CLUSTERS;
            for j in 0..USERS_PER_WRITER {
                user_lifecycle(&fleet, &model, &clusters[c], c, format!("u{w}x{j}_{suffix}"), j % 3 == 0)
                    .await;
                if j % 2 == 0 {
                    db_lifecycle(&fleet, &model, &clusters[c], c, format!("d{w}x{j}_{suffix}"), j % 4 == 0)
                        .await;
                }
            }
        });
    }
    while fleet.answered.load(Ordering::Relaxed) < KILL_AFTER && !writers.is_empty() {
        if let Some(done) = writers.try_join_next() {
            done.expect("a storm writer");
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!writers.is_empty(), "the storm lasted until the kill");
    let victim = 1;
    fleet.killed[victim].store(true, Ordering::SeqCst);
    fleet.avoid[victim].store(true, Ordering::SeqCst);
    replicas[victim].kill().await;
    let killed_at = Instant::now();

    // Each cluster takes a write, through the survivors, within the bound.
    let mut probes = tokio::task::JoinSet::new();
    for c in 0..CLUSTERS {
        let (fleet, clusters, suffix) = (fleet.clone(), clusters.clone(), suffix.clone());
        probes.spawn(async move {
            let name = format!("probe{c}_{suffix}");
            let users = format!("/v2/databases/{}/users", clusters[c].id);
            let created = fleet.call(Method::POST, &users, Some(json!({ "name": name })), 201, 422).await;
            let created = created.expect("the probe write is answered");
            let mut status = created.body["user"]["status"].clone();
            while status != "ready" && killed_at.elapsed() < TAKEOVER_BOUND * 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let i = fleet.pick();
                let (_, body) =
                    fleet.send(i, &Method::GET, &format!("{users}/{name}"), &None).await.expect("GET");
                status = body["user"]["status"].clone();
            }
            (c, name, password(&created), killed_at.elapsed(), status)
        });
    }
    let mut takeover = Duration::ZERO;
    while let Some(probe) = probes.join_next().await {
        let (c, name, password, elapsed, status) = probe.unwrap();
        assert_eq!(status, "ready", "cluster {c}: the probe write was applied");
        takeover = takeover.max(elapsed);
        model.users.lock().unwrap().insert((c, name), Some(password));
    }
    assert!(
        takeover < TAKEOVER_BOUND,
        "the survivors took over within {TAKEOVER_BOUND:?} (took {takeover:?})"
    );
    while let Some(done) = writers.join_next().await {
        done.expect("a storm writer");
    }
    let failures = fleet.failures();
    assert!(failures.is_empty(), "requests to live processes failed: {failures:#?}");
    eprintln!(
        "storm: {} requests in {:?}, {} answered pending, {} sent again after the kill, takeover within {takeover:?}",
        fleet.answered.load(Ordering::Relaxed),
        started.elapsed(),
        fleet.pending.load(Ordering::Relaxed),
        fleet.retries.load(Ordering::Relaxed)
    );
    check_everything(&app, &fleet, &model, &clusters).await;

    // The killed process comes back; then a rolling restart under load.
    fleet.killed[victim].store(false, Ordering::SeqCst);
    replicas[victim].spawn(&secrets).await;
    fleet.avoid[victim].store(false, Ordering::SeqCst);
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for c in 0..CLUSTERS {
        let (fleet, model, clusters, suffix, stop) =
            (fleet.clone(), model.clone(), clusters.clone(), suffix.clone(), stop_load.clone());
        load.spawn(async move {
            let mut j = 0;
            while !stop.load(Ordering::SeqCst) {
                user_lifecycle(&fleet, &model, &clusters[c], c, format!("r{c}x{j}_{suffix}"), j % 2 == 0)
                    .await;
                j += 1;
            }
            j
        });
    }
    for (i, replica) in replicas.iter_mut().enumerate() {
        fleet.avoid[i].store(true, Ordering::SeqCst);
        // Requests already sent to it are in flight; the stop must let them finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = replica.terminate(Duration::from_secs(40)).await;
        assert_eq!(status.code(), Some(0), "{} exits 0 on SIGTERM: {}", replica.name, replica.log());
        assert_stopped_cleanly(replica);
        replica.spawn(&secrets).await;
        fleet.avoid[i].store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop_load.store(true, Ordering::SeqCst);
    let mut rounds = 0;
    while let Some(done) = load.join_next().await {
        rounds += done.unwrap();
    }
    assert!(rounds >= CLUSTERS, "the load ran through the rolling restart");
    let failures = fleet.failures();
    assert!(failures.is_empty(), "requests failed during the rolling restart: {failures:#?}");
    check_everything(&app, &fleet, &model, &clusters).await;
    eprintln!("rolling restart: {rounds} user lifecycles, total {:?}", started.elapsed());
}
