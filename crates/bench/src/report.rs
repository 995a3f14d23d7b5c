//! BENCHMARKS.md: the machine, the versions, the commands, every measurement as median (min–max)
//! over the runs with its ratio to the floor, the goals with a verdict computed from the
//! numbers, and the findings (crates/bench/FINDINGS.md, written by people from these
//! numbers, included verbatim).

use std::fmt::Write as _;

use crate::cpu::CpuUse;
use crate::ctx::Config;
use crate::floor;
use crate::pgplane::mib;
use crate::scenarios::credentials::{CredentialsResult, LOGIN_CLIENTS};
use crate::scenarios::databases::{DatabasesRun, DbPhase};
use crate::scenarios::fleet::FleetResult;
use crate::scenarios::floods::{self, Flood, FloodsRun};
use crate::scenarios::pools::{self, PoolsResult, POOL_SIZE};
use crate::scenarios::reads::{Endpoint, ReadsRun};
use crate::scenarios::replicas::ReplicasResult;
use crate::scenarios::scale::ScaleResult;
use crate::scenarios::users::{ApiPhase, UsersRun};
use crate::stats::{paired_ratios, Summary};

/// Where and with what the bench ran.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_start: String,
    pub load_end: String,
    pub target_version: String,
    pub metadata_version: String,
    pub psql: String,
    pub pgbench: String,
    pub commit: String,
    pub pgplane_command: String,
    pub total_secs: f64,
}

/// pgplane's memory at the moments the bench looked, KiB.
#[derive(Debug, Clone, Default)]
pub struct MemoryReport {
    pub idle_start_kib: u64,
    pub idle_loaded_kib: u64,
    pub reads_peak_kib: Vec<u64>,
    pub scale_peak_kib: u64,
    pub overall_peak_kib: u64,
    pub end_kib: u64,
    pub peak_reset_works: bool,
}

pub struct Results<'a> {
    pub config: &'a Config,
    pub env: &'a Environment,
    pub users: &'a [UsersRun],
    pub reads: &'a [ReadsRun],
    pub databases: &'a [DatabasesRun],
    pub floods: &'a [FloodsRun],
    pub scale: &'a ScaleResult,
    pub replicas: &'a ReplicasResult,
    pub fleet: &'a FleetResult,
    pub credentials: &'a CredentialsResult,
    pub pools: &'a Option<PoolsResult>,
    pub memory: &'a MemoryReport,
    pub findings: Option<String>,
}

const MB_100_IN_MIB: f64 = 100e6 / 1048576.0;
const MB_200_IN_MIB: f64 = 200e6 / 1048576.0;

fn s(values: impl IntoIterator<Item = f64>) -> Summary {
    Summary::of(&values.into_iter().collect::<Vec<_>>())
}

/// The reads goal's line of the report.
fn write_reads_goal(w: &mut String, read_ratios: &[(Endpoint, usize, Summary)], reads_ok: bool) {
    let _ = writeln!(
        w,
        "| reads at least 0.8× pgbench's throughput | {} | {} |",
        read_ratios
            .iter()
            .map(|(e, cc, s)| format!("{} c={cc}: {}×", short(*e), s.show(2)))
            .collect::<Vec<_>>()
            .join("; "),
        verdict(reads_ok)
    );
}

/// Where the CPU time of each users phase went, per user; and the lowest ratio that much CPU
/// allows on this machine's cores.
fn write_users_cpu(w: &mut String, r: &Results<'_>, rows: &[UserRows]) {
    let (users, cores) = (r.config.users as f64, r.env.cores.max(1) as f64);
    let _ = writeln!(
        w,
        "CPU time per user of pgplane's phases (ms, summed over all cores; from /proc, over each \
         phase): pgplane's process, each PostgreSQL server (postmaster and backends) and the \
         bench's own threads (the load). \"Machine busy\" is the share of the {cores} cores in use \
         over the phase, whoever used them (the floor keeps about one core busy: psql waits for \
         its server). \"CPU bound\" is the total over the {cores} cores against the floor's time \
         per user: the lowest ratio the phase could reach on this machine at that CPU cost, were \
         every core kept busy.\n"
    );
    let _ = writeln!(
        w,
        "| operation | pgplane | metadata DB | target | load | total | machine busy | floor (ms per user) | CPU bound |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let floor_ms: Vec<f64> = row.floor.iter().map(|f| f * 1e3 / users).collect();
        let cpu: Vec<CpuUse> = row.api.iter().map(|p| p.cpu).collect();
        let per = |f: &dyn Fn(&CpuUse) -> f64| s(cpu.iter().map(|c| f(c) / users)).show(2);
        let bound = s(cpu.iter().zip(&floor_ms).map(|(c, f)| c.total_ms() / users / cores / f));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} % | {} | {}× |",
            row.label,
            per(&|c| c.pgplane_ms),
            per(&|c| c.meta_ms),
            per(&|c| c.target_ms),
            per(&|c| c.bench_ms),
            per(&|c| c.total_ms()),
            s(cpu.iter().map(|c| 100.0 * c.busy)).show(0),
            s(floor_ms.iter().copied()).show(2),
            bound.show(2),
        );
    }
    let _ = writeln!(w);
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

struct UserRows {
    label: &'static str,
    api: Vec<ApiPhase>,
    floor: Vec<f64>,
}

fn user_rows(users: &[UsersRun]) -> Vec<UserRows> {
    vec![
        UserRows {
            label: "create",
            api: users.iter().map(|u| u.create).collect(),
            floor: users.iter().map(|u| u.floor.create).collect(),
        },
        UserRows {
            label: "reset password",
            api: users.iter().map(|u| u.reset).collect(),
            floor: users.iter().map(|u| u.floor.reset).collect(),
        },
        UserRows {
            label: "delete",
            api: users.iter().map(|u| u.delete).collect(),
            floor: users.iter().map(|u| u.floor.delete).collect(),
        },
    ]
}

/// Database create and drop through the API, with the floor's times, run by run.
fn database_rows(databases: &[DatabasesRun]) -> [(&'static str, Vec<DbPhase>, Vec<f64>); 2] {
    [
        (
            "create",
            databases.iter().map(|d| d.create).collect(),
            databases.iter().map(|d| d.floor_create).collect(),
        ),
        (
            "drop",
            databases.iter().map(|d| d.drop).collect(),
            databases.iter().map(|d| d.floor_drop).collect(),
        ),
    ]
}

fn read_points(reads: &[ReadsRun], endpoint: Endpoint, c: usize) -> Vec<&crate::scenarios::reads::ReadPoint> {
    reads
        .iter()
        .flat_map(|r| r.points.iter())
        .filter(|p| p.endpoint == endpoint && p.concurrency == c)
        .collect()
}

/// Growth exponent between the smallest and the largest configuration: how fast `y` grows
/// with `x` (1 = proportionally, below 1 = slower).
fn exponent(x0: f64, y0: f64, x1: f64, y1: f64) -> f64 {
    if x0 <= 0.0 || y0 <= 0.0 || x1 <= x0 {
        return f64::NAN;
    }
    (y1 / y0).ln() / (x1 / x0).ln()
}

pub fn render(r: &Results<'_>) -> String {
    let c = r.config;
    let env = r.env;
    let mut o = String::new();
    let w = &mut o;
    let n = c.runs;
    let _ = writeln!(w, "# pgplane benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `make bench` (crates/bench, binary `pgplane-bench`) on {}. Every figure is \
         the **median (min–max) of {n} runs** unless marked otherwise; ratios are pgplane / \
         floor computed run by run (for times lower is better, for throughput higher is better). \
         The whole bench took **{:.1} minutes** (containers, {n} runs of scenarios 1–3 and 5, \
         scenario 4, {} rounds of scenario 6 (figures the median of the rounds), scenario 7).\n",
        env.date,
        env.total_secs / 60.0,
        c.replica_rounds
    );

    let _ = writeln!(w, "## Machine and versions\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| CPU | {} ({} cores, shared with other work) |", env.cpu, env.cores);
    let _ = writeln!(w, "| memory | {:.1} GiB |", env.memory_gib);
    let _ = writeln!(w, "| kernel | {} |", env.kernel);
    let _ =
        writeln!(w, "| load average (1/5/15 min) | at start {}; at end {} |", env.load_start, env.load_end);
    let _ = writeln!(
        w,
        "| targets | PostgreSQL {} (`pgplane-pg:{}` containers, host network, fsync off) |",
        env.target_version, c.pg_major
    );
    let _ = writeln!(w, "| metadata DB | PostgreSQL {} (own container) |", env.metadata_version);
    let _ = writeln!(w, "| floor clients | {} ; {} |", env.psql, env.pgbench);
    let _ = writeln!(w, "| pgplane | release build, commit {} |", env.commit);
    let _ = writeln!(w, "| pgplane process | `{}` |", env.pgplane_command);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "pgplane runs as its own process (`pgplane serve`, release build, default pool sizes and \
         timeouts); the bench drives it over HTTP/1.1 keep-alive connections from the same \
         machine, so the load generator, pgplane, pgbench/psql and every PostgreSQL server share \
         the {} cores. The resync interval is set to 3600 s so that no periodic pass runs unless \
         scenario 4 asks for one.\n",
        env.cores
    );

    // Goals.
    let rows = user_rows(r.users);
    let user_ratios: Vec<(String, Summary)> = rows
        .iter()
        .map(|row| {
            let api: Vec<f64> = row.api.iter().map(|p| p.secs).collect();
            (row.label.to_string(), paired_ratios(&api, &row.floor))
        })
        .collect();
    let users_ok = user_ratios.iter().all(|(_, s)| s.median <= 1.10);
    let database_ratios: Vec<(&str, Summary)> = database_rows(r.databases)
        .into_iter()
        .map(|(label, api, floor)| {
            (label, paired_ratios(&api.iter().map(|p| p.secs).collect::<Vec<_>>(), &floor))
        })
        .collect();
    let databases_ok = database_ratios.iter().all(|(_, s)| s.median <= 1.15);
    let mut read_ratios = Vec::new();
    for endpoint in Endpoint::ALL {
        for &cc in &c.read_concurrency {
            let pts = read_points(r.reads, endpoint, cc);
            let ratio = s(pts.iter().map(|p| p.pgplane.per_second / p.floor.per_second));
            read_ratios.push((endpoint, cc, ratio));
        }
    }
    let reads_ok = read_ratios.iter().all(|(_, _, s)| s.median >= 0.8);
    let peak_mib = mib(r.memory.overall_peak_kib);
    let memory_ok = peak_mib < MB_100_IN_MIB;
    let growth = scale_growth(r.scale);
    let flood_ratios: Vec<(Flood, Summary)> =
        [Flood::RealTokenId, Flood::MadeUpIds].into_iter().map(|f| (f, flood_ratio(r.floods, f))).collect();
    let floods_ok = !r.floods.is_empty() && flood_ratios.iter().all(|(_, s)| s.median <= 2.0);

    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(w, "| goal | result | verdict |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| users end to end within 1.10× the floor | {} | {} |",
        user_ratios.iter().map(|(l, s)| format!("{l} {}×", s.show(2))).collect::<Vec<_>>().join("; "),
        verdict(users_ok)
    );
    let _ = writeln!(
        w,
        "| databases end to end within 1.15× the floor | {} | {} |",
        database_ratios.iter().map(|(l, s)| format!("{l} {}×", s.show(2))).collect::<Vec<_>>().join("; "),
        verdict(databases_ok)
    );
    if r.reads.is_empty() {
        let _ = writeln!(w, "| reads at least 0.8× pgbench's throughput | not measured | – |");
    } else {
        write_reads_goal(w, &read_ratios, reads_ok);
    }
    match &growth {
        Some(g) => {
            let _ = writeln!(
                w,
                "| a drift pass grows no faster than the number of objects | {} | {} |",
                g.summary,
                verdict(g.ok)
            );
        }
        None => {
            let _ =
                writeln!(w, "| a drift pass grows no faster than the number of objects | not measured | – |");
        }
    }
    let _ = writeln!(
        w,
        "| valid requests during a flood of wrong secrets within 2× their idle median latency | {} | {} |",
        flood_ratios
            .iter()
            .map(|(f, s)| format!("{}: {}×", short_flood(*f), s.show(2)))
            .collect::<Vec<_>>()
            .join("; "),
        verdict(floods_ok)
    );
    let _ = writeln!(
        w,
        "| under 100 MB resident (scenarios 1–6) | peak {:.1} MiB (VmHWM), idle {:.1} MiB | {} |",
        peak_mib,
        mib(r.memory.idle_start_kib),
        verdict(memory_ok)
    );
    fleet_goals(w, r.fleet);
    replica_goals(w, r.replicas);
    if let Some(rotation) = &r.credentials.rotation {
        let failed = rotation.during.failed_clients;
        let _ = writeln!(
            w,
            "| no failed login during a rotation's grace | {} logins with the old password, {failed} failed | {} |",
            rotation.during.transactions,
            verdict(failed == 0 && rotation.during.transactions > 0)
        );
    }
    let _ = writeln!(w);

    // 1. Users.
    let _ = writeln!(w, "## 1. Users\n");
    let _ = writeln!(
        w,
        "{} users on one cluster: created through the API with {} requests in flight, then \
         every password reset, then every user deleted; each request is answered once the \
         change is applied on the target (the answer must be 201/200 with `status: ready`, or \
         204; the bench checks `pg_roles` after each phase). The floor is psql running the same \
         statements pgplane sends, from a generated file, in one session with autocommit:\n",
        c.users, c.user_concurrency
    );
    let _ = writeln!(
        w,
        "- create: `CREATE ROLE \"…\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
         NOBYPASSRLS INHERIT CONNECTION LIMIT -1 PASSWORD 'SCRAM-SHA-256$4096:…'`{} (verifiers computed beforehand with \
         `pgplane_core::passwords::scram_verifier`, not timed);",
        if c.pg_major >= 16 {
            " plus (PostgreSQL 16 and later, as pgplane does there) `GRANT \"…\" TO \"doadmin\" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE`"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "- reset: `ALTER ROLE \"…\" WITH INHERIT PASSWORD 'SCRAM-SHA-256$4096:…'`;");
    let _ = writeln!(
        w,
        "- delete: what pgplane's deletion sends, per role (`ALTER ROLE … NOLOGIN`, \
         `pg_terminate_backend` of its sessions, a `pg_shdepend` query for the databases where it \
         owns something or holds a privilege, `DO …` (its SECURITY DEFINER routines made SECURITY \
         INVOKER), `REASSIGN OWNED BY … TO doadmin; DROP OWNED BY …` in each of them — none \
         for these fresh roles — and `DROP ROLE IF EXISTS …`); pgplane sends these for all the \
         roles of a pass together, in one pipeline (their NOLOGINs in one message, one commit; \
         one session-ending statement for them all; one `DROP ROLE` naming them all, in a `DO` \
         block that runs it only when `pg_shdepend` shows nothing depending on them; then the \
         `pg_shdepend` query for the databases where something does, which the hand-over visits). \
         Bare `DROP ROLE` is shown for reference.\n"
    );
    let _ = writeln!(w, "Command: `{}`\n", floor::psql_command("<generated>.sql"));
    let _ = writeln!(
        w,
        "| operation | pgplane (s) | floor (s) | ratio | pgplane users/s | request p50 / p99 (ms) | reconcile passes | changes per pass | reconciler busy | target sessions opened |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (row, (_, ratio)) in rows.iter().zip(&user_ratios) {
        let api_s = s(row.api.iter().map(|p| p.secs));
        let floor_s = Summary::of(&row.floor);
        let _ = writeln!(
            w,
            "| {} | {} | {} | **{}×** | {} | {} / {} | {} | {} | {} | {} |",
            row.label,
            api_s.show(2),
            floor_s.show(2),
            ratio.show(2),
            s(row.api.iter().map(|p| c.users as f64 / p.secs)).show(0),
            s(row.api.iter().map(|p| p.p50_ms)).show(0),
            s(row.api.iter().map(|p| p.p99_ms)).show(0),
            s(row.api.iter().map(|p| p.passes.passes as f64)).show(0),
            s(row.api.iter().map(|p| p.passes.changes as f64 / (p.passes.passes.max(1)) as f64)).show(1),
            s(row.api.iter().map(|p| 100.0 * p.passes.busy_ms / 1e3 / p.secs)).show(0) + " %",
            s(row.api.iter().map(|p| p.sessions as f64)).show(0),
        );
    }
    let bare = s(r.users.iter().map(|u| u.floor.bare_drop));
    let _ = writeln!(w, "| (bare `DROP ROLE`, reference) | | {} | | | | | | | |", bare.show(2));
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "One SCRAM-SHA-256 verifier (4096 PBKDF2 rounds, pgplane-core, release build) costs \
         {} ms on one core of this machine; pgplane computes one per create and per reset, \
         and PostgreSQL checks it against the empty password during CREATE/ALTER ROLE (most of the floor's time). \
         \"Reconciler busy\" is the sum of the cluster's pass durations over the phase's wall \
         time: passes over one cluster never overlap, so near 100 % the single pass loop is \
         the limit. Sessions are `pg_stat_database.sessions` on the target.\n",
        s(r.users.iter().map(|u| u.verifier_ms)).show(2)
    );

    write_users_cpu(w, r, &rows);

    // 2. Databases.
    let _ = writeln!(w, "## 2. Databases\n");
    let _ = writeln!(
        w,
        "{} databases created through the API ({} requests in flight, each answered once \
         applied), then dropped; against psql running the same `CREATE DATABASE \"…\" OWNER \
         \"doadmin\"` and `DROP DATABASE IF EXISTS \"…\" WITH (FORCE)` statements (DROP DATABASE \
         forces a checkpoint).\n",
        c.databases, c.db_concurrency
    );
    let _ = writeln!(
        w,
        "| operation | pgplane (s) | floor (s) | ratio | request p50 / p99 (ms) | reconcile passes |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (label, api, fl) in database_rows(r.databases) {
        let api_secs: Vec<f64> = api.iter().map(|p| p.secs).collect();
        let _ = writeln!(
            w,
            "| {label} | {} | {} | **{}×** | {} / {} | {} |",
            Summary::of(&api_secs).show(2),
            Summary::of(&fl).show(2),
            paired_ratios(&api_secs, &fl).show(2),
            s(api.iter().map(|p| p.p50_ms)).show(0),
            s(api.iter().map(|p| p.p99_ms)).show(0),
            s(api.iter().map(|p| p.passes.passes as f64)).show(0),
        );
    }
    let _ = writeln!(w);

    // 3. Reads.
    let _ = writeln!(w, "## 3. Reads\n");
    let body = r.reads.first().map_or(0, |x| x.users_body_bytes);
    let _ = writeln!(
        w,
        "The cluster holds {} users (plus its primary user) while these run; each answer lists \
         all of them with their passwords (`GET .../users` is {:.0} KiB of JSON). Bearer-token \
         authentication is on (argon2id, successful checks cached 30 s). Each point runs {} s \
         after a 0.5 s warm-up. The floor is pgbench on the metadata DB running the SELECTs the \
         request makes (`-M prepared`, one transaction = one request):\n",
        c.users,
        body as f64 / 1024.0,
        c.read_seconds
    );
    let _ = writeln!(
        w,
        "- users: the caller's cluster (`SELECT * FROM clusters WHERE cluster_id = … AND team_id = …`), \
         its users with their parameters (`cluster_users` joined with `cluster_user_parameters` \
         grouped by user, by name), their access levels (`cluster_user_access` joined with \
         `cluster_databases`) and its databases (`cluster_databases`, by name): the four \
         statements pgplane's store sends to render the answer. pgplane keeps the rendered answer \
         and serves it again while the cluster's listing version (read with the cluster) has not \
         moved; nothing changes the cluster while this runs, so after the first request each \
         answer costs pgplane the cluster's row, not the four statements. An answer rendered anew \
         (after any change to the cluster's users or databases) costs what the floor measures \
         plus pgplane's own work;"
    );
    let _ = writeln!(
        w,
        "- cluster: the cluster, its users with their parameters, its databases and its trusted \
         sources (`cluster_firewall_rules`).\n"
    );
    let _ = writeln!(
        w,
        "Command: `{}` (and `-c 1 -j 1`)\n",
        floor::pgbench_command("<script>.sql", 64, c.read_seconds)
    );
    let _ = writeln!(
        w,
        "| request | concurrency | pgplane req/s | pgbench tx/s | throughput ratio | pgplane p50 / p99 (ms) | pgbench p50 / p99 (ms) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for endpoint in Endpoint::ALL {
        for &cc in &c.read_concurrency {
            let pts = read_points(r.reads, endpoint, cc);
            let _ = writeln!(
                w,
                "| `{}` | {cc} | {} | {} | **{}×** | {} / {} | {} / {} |",
                endpoint.label(),
                s(pts.iter().map(|p| p.pgplane.per_second)).show(0),
                s(pts.iter().map(|p| p.floor.per_second)).show(0),
                s(pts.iter().map(|p| p.pgplane.per_second / p.floor.per_second)).show(2),
                s(pts.iter().map(|p| p.pgplane.p50_ms)).show(1),
                s(pts.iter().map(|p| p.pgplane.p99_ms)).show(1),
                s(pts.iter().map(|p| p.floor.p50_ms)).show(1),
                s(pts.iter().map(|p| p.floor.p99_ms)).show(1),
            );
        }
    }
    let _ = writeln!(w);

    // 4. Scale.
    render_scale(w, r);

    // 5. Floods.
    render_floods(w, r);

    render_replicas(w, r);
    render_fleet(w, r);
    render_credentials(w, r.credentials);
    if let Some(pools) = r.pools {
        render_pools(w, pools);
    }

    // 10. Memory.
    let m = &r.memory;
    let _ = writeln!(w, "## 10. Memory\n");
    let _ = writeln!(
        w,
        "Resident memory of the `pgplane serve` process from `/proc/<pid>/status` (VmRSS now, \
         VmHWM peak; the peak is reset through `/proc/<pid>/clear_refs` before a phase{}).\n",
        if m.peak_reset_works {
            ""
        } else {
            " — **the reset was refused here, so every peak is the peak since start**"
        }
    );
    let _ = writeln!(w, "| moment | MiB |\n|---|---|");
    let _ = writeln!(w, "| idle after start (one cluster registered) | {:.1} |", mib(m.idle_start_kib));
    let _ = writeln!(
        w,
        "| idle with {} users, after the first run's reads | {:.1} |",
        c.users,
        mib(m.idle_loaded_kib)
    );
    let _ = writeln!(
        w,
        "| peak during the reads (c up to {}) | {} |",
        c.read_concurrency.iter().max().copied().unwrap_or(0),
        s(m.reads_peak_kib.iter().map(|k| mib(*k))).show(1)
    );
    let _ = writeln!(
        w,
        "| peak during scenario 4 ({} clusters, users added, drift rounds) | {:.1} |",
        r.scale.targets,
        mib(m.scale_peak_kib)
    );
    let _ = writeln!(w, "| peak over scenarios 1–6 | {:.1} |", mib(m.overall_peak_kib));
    if r.fleet.clusters > 0 {
        let _ = writeln!(
            w,
            "| idle with the fleet ({} more clusters) registered | {:.1} |",
            r.fleet.clusters,
            mib(r.fleet.idle_kib)
        );
        let _ = writeln!(w, "| peak during scenario 7 (the fleet) | {:.1} |", mib(r.fleet.peak_kib));
    }
    let _ = writeln!(w, "| at the end | {:.1} |", mib(m.end_kib));
    let _ = writeln!(w);

    // 11. Findings.
    let _ = writeln!(w, "## 11. Bottlenecks and findings\n");
    match &r.findings {
        Some(text) => {
            let _ = writeln!(w, "{}", text.trim());
        }
        None => {
            let _ = writeln!(w, "(crates/bench/FINDINGS.md is missing.)");
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "## Reproducing\n");
    let _ = writeln!(
        w,
        "`make bench` (root, Docker engine, images built by `deploy/dev/prepare-tests.sh`). \
         Parameters of this run: `--runs {} --users {} --user-concurrency {} --databases {} \
         --db-concurrency {} --read-seconds {} --read-concurrency {} --scale-targets {} \
         --scale-clusters {} --scale-users {} --scale-repeats {} --flood-rate {} \
         --flood-addresses {} --replica-users {} --replica-rounds {} --replica-kills {} --fleet-servers {} \
         --fleet-clusters {} --fleet-users {} --fleet-probe-creates {} --rotation-grace {} \
         --leases {} --pool-seconds {} --pool-rounds {} --pg {}`; `target/release/pgplane-bench --help` explains \
         each (`--runs 0`, `--scale-targets 0`, `--replica-users 0`, `--fleet-clusters 0`, \
         `--rotation-grace 0`, `--leases 0` and `--pool-seconds 0` skip scenarios).",
        c.runs,
        c.users,
        c.user_concurrency,
        c.databases,
        c.db_concurrency,
        c.read_seconds,
        join(&c.read_concurrency),
        c.scale_targets,
        join(&c.scale_clusters),
        join(&c.scale_users),
        c.scale_repeats,
        c.flood_rate,
        c.flood_addresses,
        c.replica_users,
        c.replica_rounds,
        c.replica_kills,
        c.fleet_servers,
        c.fleet_clusters,
        c.fleet_users,
        c.fleet_probe_creates,
        c.rotation_grace_secs,
        c.leases,
        c.pool_seconds,
        c.pool_rounds,
        c.pg_major
    );
    o
}

fn render_credentials(w: &mut String, c: &CredentialsResult) {
    if c.rotation.is_none() && c.leases.is_none() {
        return;
    }
    let _ = writeln!(w, "## 8. Credentials: a rotation under load, leases reaped\n");
    if let Some(r) = &c.rotation {
        let _ = writeln!(
            w,
            "A user under a login load: `{}` (a new login for every transaction). First with its \
             only password (the baseline), then with the same password right after a reset with a \
             {} s grace (`POST …/reset_auth {{\"grace\": \"{}s\"}}`): the old password must keep \
             working throughout; then logins with it are tried every 20 ms until one is refused.\n",
            floor::pgbench_logins_command(LOGIN_CLIENTS, r.load_secs),
            r.grace_secs,
            r.grace_secs
        );
        let _ = writeln!(
            w,
            "| load | logins | failed clients | logins/s | ratio to the baseline |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            w,
            "| baseline (no rotation) | {} | {} | {:.0} | – |",
            r.baseline.transactions, r.baseline.failed_clients, r.baseline.tps
        );
        let ratio = if r.baseline.tps > 0.0 { r.during.tps / r.baseline.tps } else { f64::NAN };
        let _ = writeln!(
            w,
            "| old password during the grace | {} | {} | {:.0} | **{ratio:.2}×** |",
            r.during.transactions, r.during.failed_clients, r.during.tps
        );
        let _ = writeln!(
            w,
            "\nThe old login was refused {:.0} ms after the grace's end (the reconciler looks for \
             ended graces every second, then a pass sets NOLOGIN and ends its sessions).\n",
            r.cut_after_ms
        );
    }
    if let Some(l) = &c.leases {
        let _ = writeln!(
            w,
            "{} leases created through the API ({:.1} s), then their end moved to the same moment in \
             the metadata database; reaped when every role is gone from the target (each lease's \
             deletion: NOLOGIN, sessions ended, what it owns found through `pg_shdepend`, DROP ROLE), \
             against psql running those statements for as many roles.\n",
            l.count, l.create_secs
        );
        let _ =
            writeln!(w, "| | pgplane (s) | floor (s) | ratio | reconcile passes |\n|---|---|---|---|---|");
        let _ = writeln!(
            w,
            "| {} leases expired and reaped | {:.2} | {:.2} | **{:.2}×** | {} |\n",
            l.count,
            l.reap_secs,
            l.floor_secs,
            l.reap_secs / l.floor_secs,
            l.passes.passes
        );
    }
}

fn render_pools(w: &mut String, p: &PoolsResult) {
    let _ = writeln!(w, "## 9. Connection pools\n");
    let _ = writeln!(
        w,
        "A pool of size {POOL_SIZE} in transaction mode on the main cluster's default database, \
         served by `pgplane pooler` (release build, beside the target) on {}; its clients log in as \
         themselves (SCRAM, checked by PgBouncer against the verifier pgplane set). The baseline is a \
         PgBouncer configured by hand as an operator would: the same pool settings, the same user's \
         verifier in its `auth_file`, `auth_type = scram-sha-256`. Each round runs `{}` through one \
         and then the other (the order alternates between rounds).\n",
        p.pgbouncer,
        pools::pgbench_command(p.seconds)
    );
    let managed = Summary::of(&p.managed_tps);
    let hand = Summary::of(&p.hand_tps);
    let ratios: Vec<f64> = p.managed_tps.iter().zip(&p.hand_tps).map(|(m, h)| m / h).collect();
    let ratio = Summary::of(&ratios);
    let _ = writeln!(
        w,
        "| through | tps (median, min–max) | ratio to the hand-configured PgBouncer |\n|---|---|---|"
    );
    let _ = writeln!(w, "| PgBouncer configured by hand | {} | – |", hand.show(0));
    let _ = writeln!(
        w,
        "| the pool pgplane manages | {} | **{}×** (goal ≥ 0.95: {}) |\n",
        managed.show(0),
        ratio.show(3),
        verdict(ratio.median >= 0.95)
    );
    let further = Summary::of(&p.further_pool_ms);
    let _ = writeln!(
        w,
        "From the API's answer (201) to the first successful login through the pool, tried every \
         5 ms: the cluster's first pool, which starts its PgBouncer, took {:.0} ms; {} further pools, \
         each a rewrite of its files and a RELOAD, took {} ms (median, min–max). The pooler is told \
         by NOTIFY and otherwise looks every second.\n",
        p.first_pool_ms,
        p.further_pool_ms.len(),
        further.show(0)
    );
}

/// Sessions pgplane may hold on one server (`--max-sessions-per-server`, left at its default).
const SESSIONS_PER_SERVER: i64 = 10;

fn ints(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

fn fleet_goals(w: &mut String, f: &FleetResult) {
    if f.clusters == 0 {
        let _ = writeln!(w, "| the fleet (scenario 7) | not measured | – |");
        return;
    }
    let round = s(f.round_secs.iter().copied());
    // 60 s for 10,000 clusters, in proportion for a smaller fleet.
    let round_goal = 60.0 * f.clusters as f64 / 10_000.0;
    let _ = writeln!(
        w,
        "| a drift round over {} clusters within {round_goal:.0} s (60 s per 10,000) | {} s (of {} rounds) | {} |",
        f.clusters,
        round.show(1),
        round.runs,
        verdict(round.max < round_goal)
    );
    let p99_ratio = f.create_in_round.1 / f.create_idle.1.max(1e-9);
    let _ = writeln!(
        w,
        "| a user create's p99 during a drift round within 2× idle | {:.0} ms against {:.0} ms idle: **{:.2}×** | {} |",
        f.create_in_round.1,
        f.create_idle.1,
        p99_ratio,
        verdict(p99_ratio <= 2.0)
    );
    let growth = f.idle_tps_fleet / f.idle_tps_small.max(1e-9);
    let _ = writeln!(
        w,
        "| idle metadata load does not grow with the clusters (within 1.5×) | {:.2} transactions/s with {} \
         clusters, {:.2} with {}: **{:.2}×** | {} |",
        f.idle_tps_small,
        f.small_clusters,
        f.idle_tps_fleet,
        f.small_clusters + f.clusters,
        growth,
        verdict(growth <= 1.5)
    );
    let peak = mib(f.peak_kib);
    let _ = writeln!(
        w,
        "| under 200 MB resident with {} clusters | peak {:.1} MiB (VmHWM), idle {:.1} MiB | {} |",
        f.small_clusters + f.clusters,
        peak,
        mib(f.idle_kib),
        verdict(peak < MB_200_IN_MIB)
    );
    let loaded = f.sessions_loaded.iter().copied().max().unwrap_or(0);
    let idle = f.sessions_idle.iter().copied().max().unwrap_or(0);
    let _ = writeln!(
        w,
        "| sessions per target server bounded whatever the clusters it hosts ({} each), far from \
         `max_connections` | under load at most {loaded} per server (cap {SESSIONS_PER_SERVER}), idle \
         {idle}; `max_connections` {} | {} |",
        f.clusters / f.servers.max(1),
        f.max_connections,
        verdict(loaded <= SESSIONS_PER_SERVER && loaded * 10 <= f.max_connections)
    );
}

fn replica_goals(w: &mut String, p: &ReplicasResult) {
    if p.users == 0 {
        let _ = writeln!(w, "| replicas (scenario 6) | not measured | – |");
        return;
    }
    let ratio = paired_ratios(&p.three_secs, &p.one_secs);
    let _ = writeln!(
        w,
        "| three processes no slower than one | creates through three take **{}×** the time through one | {} |",
        ratio.show(2),
        verdict(ratio.median <= 1.0)
    );
    let take = s(p.takeover_ms.iter().copied());
    let _ = writeln!(
        w,
        "| a takeover after SIGKILL under 100 ms (median), no failed request | {} ms (of {} kills); {} of {} \
         requests failed | {} |",
        take.show(0),
        take.runs,
        p.live_failures,
        p.live_requests,
        verdict(take.median < 100.0 && p.live_failures == 0)
    );
}

fn render_replicas(w: &mut String, r: &Results<'_>) {
    let p = r.replicas;
    let _ = writeln!(w, "## 6. Replicas: three processes, one metadata DB\n");
    if p.users == 0 {
        let _ = writeln!(w, "Not run (`--replica-users 0`).\n");
        return;
    }
    let _ = writeln!(
        w,
        "{} users created on the main cluster (16 requests in flight, each answered once applied, \
         then deleted) through one `pgplane serve` and through three sharing the metadata DB \
         (requests round-robin over them), alternately, {} times each. The cluster's passes run in \
         one process at a time (its advisory lock), whichever answers the request; on this \
         2-core machine the three processes share the cores with the servers and the load \
         generator.\n",
        p.users,
        p.one_secs.len()
    );
    let _ = writeln!(
        w,
        "| through | create (s) | users/s | request p99 (ms) | time ratio to one |\n|---|---|---|---|---|"
    );
    let ratio = paired_ratios(&p.three_secs, &p.one_secs);
    for (label, secs, p99, ratio) in [
        ("one process", &p.one_secs, &p.one_p99_ms, "1".to_string()),
        ("three processes", &p.three_secs, &p.three_p99_ms, format!("**{}×**", ratio.show(2))),
    ] {
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {ratio} |",
            s(secs.iter().copied()).show(2),
            s(secs.iter().map(|t| p.users as f64 / t)).show(0),
            s(p99.iter().copied()).show(0),
        );
    }
    let _ = writeln!(w);
    let take = s(p.takeover_ms.iter().copied());
    let _ = writeln!(
        w,
        "Takeover: a writer keeps creating users on the main cluster through the live processes (4 \
         in flight); the process whose pass over the cluster ended last, when it is one of the two \
         extra ones, is killed with SIGKILL (its metadata sessions, and with them the cluster's \
         advisory lock, end with it), and a new one replaces it before the next kill. From the \
         SIGKILL to the end of the next pass that applied a change to the cluster in a surviving \
         process: **{} ms** (median (min–max) of {} kills). Requests to the processes that stayed \
         alive: {} sent, {} failed{}.\n",
        take.show(0),
        take.runs,
        p.live_requests,
        p.live_failures,
        p.first_failure.as_ref().map(|f| format!("; the first was sent {f}")).unwrap_or_default()
    );
}

fn render_fleet(w: &mut String, r: &Results<'_>) {
    let f = r.fleet;
    let _ = writeln!(w, "## 7. Fleet: {} clusters on one process\n", f.clusters);
    if f.clusters == 0 {
        let _ = writeln!(w, "Not run (`--fleet-clusters 0`).\n");
        return;
    }
    let _ = writeln!(
        w,
        "{} clusters on {} PostgreSQL servers ({} each, `max_connections` {}), each with its own \
         primary user and default database plus {} users, registered through the API on the one \
         `pgplane serve` of the other scenarios (which keeps its {} clusters from them; pgplane's \
         default of {SESSIONS_PER_SERVER} sessions per target server). Sessions are \
         `pg_stat_activity` rows of applications `pgplane/…` on each fleet server, sampled every \
         100 ms. The idle metadata load is the transactions of the metadata database \
         (`pg_stat_database` xact_commit + xact_rollback, every statement of pgplane's is one) over \
         10 s with no request and no pass due, after a `VACUUM (ANALYZE)` of the metadata database \
         (autovacuum's transactions count too; none is due then) and 12 s of quiet (sessions report \
         their counts up to 10 s after they go idle) (the resync interval is 3600 s: a drift round is \
         started as in scenario 4, by moving every fleet cluster's `last_resync_at` a day back); \
         the round lasts from the first pass's start to the last one's end, while 4 user creates \
         at a time go to fleet clusters.\n",
        f.clusters,
        f.servers,
        f.clusters / f.servers.max(1),
        f.max_connections,
        f.users_per_cluster,
        f.small_clusters
    );
    let _ = writeln!(w, "| measure | result |\n|---|---|");
    let _ =
        writeln!(w, "| registering the {} clusters (8 at a time) | {:.1} s |", f.clusters, f.register_secs);
    let _ = writeln!(
        w,
        "| adding {} users (16 at a time) | {:.1} s |",
        f.clusters * f.users_per_cluster,
        f.populate_secs
    );
    let _ = writeln!(
        w,
        "| full drift round | {} s ({} passes) |",
        s(f.round_secs.iter().copied()).show(1),
        f.round_passes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        w,
        "| idle metadata transactions/s | {:.2} with {} clusters; {:.2} with {} (**{:.2}×**) |",
        f.idle_tps_small,
        f.small_clusters,
        f.idle_tps_fleet,
        f.small_clusters + f.clusters,
        f.idle_tps_fleet / f.idle_tps_small.max(1e-9)
    );
    let _ = writeln!(
        w,
        "| user create p50 / p99, idle fleet ({} creates, 4 at a time) | {:.0} / {:.0} ms |",
        r.config.fleet_probe_creates, f.create_idle.0, f.create_idle.1
    );
    let _ = writeln!(
        w,
        "| user create p50 / p99 during the drift rounds ({} creates) | {:.0} / {:.0} ms (p99 **{:.2}×** idle) |",
        f.creates_in_round,
        f.create_in_round.0,
        f.create_in_round.1,
        f.create_in_round.1 / f.create_idle.1.max(1e-9)
    );
    let _ = writeln!(
        w,
        "| peak sessions per server while registering (registration probes included) | {} |",
        ints(&f.sessions_registering)
    );
    let _ = writeln!(
        w,
        "| peak sessions per server while adding users and during the drift rounds | {} |",
        ints(&f.sessions_loaded)
    );
    let _ = writeln!(
        w,
        "| sessions per server once idle (15 s after the last request) | {} |",
        ints(&f.sessions_idle)
    );
    let _ = writeln!(
        w,
        "| resident memory: idle with the fleet / peak during the scenario | {:.1} / {:.1} MiB |",
        mib(f.idle_kib),
        mib(f.peak_kib)
    );
    let _ = writeln!(w);
}

/// Median latency of valid requests during `flood` over their idle median, run by run.
fn flood_ratio(runs: &[FloodsRun], flood: Flood) -> Summary {
    s(runs.iter().filter_map(|run| {
        let idle = run.point(Flood::None)?.valid_p50_ms;
        let flooded = run.point(flood)?.valid_p50_ms;
        (idle > 0.0).then(|| flooded / idle)
    }))
}

fn short_flood(f: Flood) -> &'static str {
    match f {
        Flood::None => "idle",
        Flood::RealTokenId => "real token id",
        Flood::MadeUpIds => "made-up ids",
    }
}

fn render_floods(w: &mut String, r: &Results<'_>) {
    let c = r.config;
    let _ = writeln!(w, "## 5. Floods before authentication\n");
    let _ = writeln!(
        w,
        "Valid requests (`GET /v2/databases` with the bench's token, already verified and cached, \
         {} in flight, {} s each) with nothing else going on, then while a flood of requests with \
         wrong secrets arrives at {} requests/s from {} client addresses (127.0.0.2 and up, \
         loopback), sent on schedule whether or not earlier ones were answered: once with wrong \
         secrets for the bench token's own id, once with made-up token ids. The flood starts 1 s \
         before the measurement. pgplane runs with its default limits on failed authentication \
         (30 a minute per client address, 10 per token id): past them, attempts get 429 before \
         any lookup or argon2.\n",
        floods::VALID_CONCURRENCY,
        c.read_seconds,
        c.flood_rate,
        c.flood_addresses
    );
    let _ = writeln!(
        w,
        "| valid requests | p50 (ms) | p99 (ms) | requests/s | p50 / idle p50 | flood sent | 401 | 429 | other | unanswered |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for flood in Flood::ALL {
        let pts: Vec<_> = r.floods.iter().filter_map(|run| run.point(flood)).collect();
        let ratio = if flood == Flood::None {
            "1".to_string()
        } else {
            format!("**{}×**", flood_ratio(r.floods, flood).show(2))
        };
        let count = |f: fn(&floods::FloodPoint) -> usize| s(pts.iter().map(|p| f(p) as f64)).show(0);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            flood.label(),
            s(pts.iter().map(|p| p.valid_p50_ms)).show(2),
            s(pts.iter().map(|p| p.valid_p99_ms)).show(2),
            s(pts.iter().map(|p| p.valid_per_second)).show(0),
            ratio,
            count(|p| p.sent),
            count(|p| p.unauthorized),
            count(|p| p.too_many),
            count(|p| p.other),
            count(|p| p.unanswered),
        );
    }
    let _ = writeln!(w);
}

fn join(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn short(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Users => "users",
        Endpoint::Cluster => "cluster",
    }
}

struct Growth {
    ok: bool,
    summary: String,
}

/// Compares the smallest and the largest measured configuration.
fn scale_growth(scale: &ScaleResult) -> Option<Growth> {
    let med = |v: &[f64]| Summary::of(v).median;
    let smallest = scale.points.iter().min_by_key(|p| p.objects)?;
    let largest = scale.points.iter().max_by_key(|p| p.objects)?;
    if largest.objects == smallest.objects {
        return None;
    }
    let (x0, x1) = (smallest.objects as f64, largest.objects as f64);
    let round_exp = exponent(x0, med(&smallest.round_ms), x1, med(&largest.round_ms));
    // Per pass: the same number of clusters, more users each.
    let per_pass = scale
        .points
        .iter()
        .filter(|p| p.clusters == largest.clusters && p.users_per_cluster != largest.users_per_cluster)
        .min_by_key(|p| p.users_per_cluster)
        .map(|p| {
            (
                exponent(
                    (p.users_per_cluster + 2) as f64,
                    med(&p.pass_ms),
                    (largest.users_per_cluster + 2) as f64,
                    med(&largest.pass_ms),
                ),
                med(&p.target_statements_per_pass),
                med(&largest.target_statements_per_pass),
            )
        });
    let statements_flat = per_pass.is_none_or(|(_, a, b)| b <= a);
    let ok = round_exp <= 1.05 && per_pass.is_none_or(|(e, _, _)| e <= 1.05) && statements_flat;
    let mut summary = format!(
        "{}→{} objects ({}×): round time ×{:.2} (growth exponent {:.2})",
        smallest.objects,
        largest.objects,
        largest.objects / smallest.objects.max(1),
        med(&largest.round_ms) / med(&smallest.round_ms),
        round_exp
    );
    if let Some((e, a, b)) = per_pass {
        let _ = write!(
            summary,
            "; one pass, users per cluster up: exponent {e:.2}, target statements per pass {a:.0}→{b:.0}"
        );
    }
    Some(Growth { ok, summary })
}

fn render_scale(w: &mut String, r: &Results<'_>) {
    let sc = r.scale;
    let c = r.config;
    let _ = writeln!(w, "## 4. Scale: the periodic drift pass\n");
    let _ = writeln!(
        w,
        "{} targets (one PostgreSQL container and one registered cluster each). Users are added \
         to every cluster through the API; after each step the cost of one drift round — every \
         selected cluster checked once, nothing to repair — is measured over the first N \
         clusters, {} times each.\n",
        sc.targets, c.scale_repeats
    );
    let _ = writeln!(
        w,
        "How it is measured: pgplane's resync interval is longer than the bench, so no drift pass \
         runs by itself; a round is started as the resync timer would start it, by moving the \
         selected clusters' `last_resync_at` (the end of their last full pass) one day back in the metadata DB; the reconciler's \
         one-second tick finds them due and checks them (at most 8 at once, the default \
         `--max-concurrent-passes`). Times come from pgplane's own debug event \"reconcile pass \
         finished\" (`elapsed_ms`, from taking the cluster's advisory lock to releasing it): the \
         round is first pass start to last pass end. Statements are counted in the servers' logs: \
         `log_statement = all` is switched on (ALTER SYSTEM + reload) for the measurement only, \
         the bench writes a marker statement before and after each round, and the lines logged by \
         applications `pgplane/…` (pgplane's processes) between the markers are counted (simple-protocol statements and \
         extended-protocol executes; parse/describe round trips are not logged, so round trips \
         are somewhat more). Metadata statements exclude the reconcile loop's `due_clusters` poll, \
         shown apart. \"Extra passes\" counts clusters checked twice in one round (none expected).\n"
    );
    if !sc.populate.is_empty() {
        let _ = writeln!(w, "| adding users (API, c={}) | users | s | users/s |", c.user_concurrency);
        let _ = writeln!(w, "|---|---|---|---|");
        for p in &sc.populate {
            let _ = writeln!(
                w,
                "| up to {} per cluster on {} clusters | {} | {:.1} | {:.0} |",
                p.users_per_cluster,
                sc.targets,
                p.added,
                p.secs,
                p.added as f64 / p.secs
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "| clusters | users per cluster | objects | round (ms) | one pass (ms, median) | per 1000 objects (ms of round) | target statements per pass | metadata statements per pass | loop polls per round | extra passes per round |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for p in &sc.points {
        let round = Summary::of(&p.round_ms);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            p.clusters,
            p.users_per_cluster,
            p.objects,
            round.show(1),
            Summary::of(&p.pass_ms).show(1),
            round.median / p.objects as f64 * 1000.0,
            Summary::of(&p.target_statements_per_pass).show(1),
            Summary::of(&p.metadata_statements_per_pass).show(1),
            Summary::of(&p.loop_polls).show(0),
            Summary::of(&p.extra_passes).show(0),
        );
    }
    let _ = writeln!(w);
}
