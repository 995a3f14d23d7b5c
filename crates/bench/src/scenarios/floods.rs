//! Scenario 5, floods before authentication: the latency of valid requests (`GET
//! /v2/databases` with the bench's cached token) when nothing else happens, and while a flood
//! of requests with wrong secrets arrives at a fixed rate from many client addresses (loopback
//! addresses 127.0.0.2 and up, all sent to pgplane on 127.0.0.1): once with wrong secrets for
//! the bench token's real id, once with made-up token ids. Each flooding request is sent on
//! schedule whether or not earlier ones were answered, as an attacker would.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::load::run_for;

/// Valid requests in flight during each measurement.
pub const VALID_CONCURRENCY: usize = 4;
/// Flooding requests left unanswered at most (more are not sent until some are answered).
const MAX_OUTSTANDING: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    None,
    RealTokenId,
    MadeUpIds,
}

impl Flood {
    pub const ALL: [Flood; 3] = [Flood::None, Flood::RealTokenId, Flood::MadeUpIds];

    pub fn label(self) -> &'static str {
        match self {
            Flood::None => "idle (no flood)",
            Flood::RealTokenId => "flood: wrong secrets for the real token id",
            Flood::MadeUpIds => "flood: made-up token ids",
        }
    }
}

/// One measurement of one run.
#[derive(Debug, Clone)]
pub struct FloodPoint {
    pub flood: Flood,
    pub valid_p50_ms: f64,
    pub valid_p99_ms: f64,
    pub valid_per_second: f64,
    /// Flooding requests sent, and how they were answered.
    pub sent: usize,
    pub unauthorized: usize,
    pub too_many: usize,
    /// Answered otherwise, or failed (a 200 here would be a hole).
    pub other: usize,
    /// Not answered by the end, or not sent because too many were waiting.
    pub unanswered: usize,
}

/// The result of the flood scenario in one run.
#[derive(Debug, Clone, Default)]
pub struct FloodsRun {
    pub points: Vec<FloodPoint>,
}

impl FloodsRun {
    pub fn point(&self, flood: Flood) -> Option<&FloodPoint> {
        self.points.iter().find(|p| p.flood == flood)
    }
}

#[derive(Default)]
struct Answers {
    sent: AtomicUsize,
    unauthorized: AtomicUsize,
    too_many: AtomicUsize,
    other: AtomicUsize,
    skipped: AtomicUsize,
}

/// A well-formed token with a random secret for `token_id`.
fn wrong_token(token_id: &str) -> String {
    let secret: String = (0..5).map(|_| pgplane_testkit::unique_suffix()).collect();
    format!("pgp_{token_id}_{secret}")
}

fn made_up_token() -> String {
    let id = format!("{}{}", pgplane_testkit::unique_suffix(), &pgplane_testkit::unique_suffix()[..4]);
    wrong_token(&id)
}

/// Sends the flood at `rate` requests a second, spread over `addresses` client addresses, until
/// `stop` is set.
async fn flood(
    ctx: &Ctx,
    kind: Flood,
    stop: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<Answers>,
) -> Result<()> {
    let clients = (0..ctx.config.flood_addresses.max(1))
        .map(|i| {
            let source = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32));
            reqwest::Client::builder()
                .local_address(source)
                .timeout(Duration::from_secs(30))
                .tcp_nodelay(true)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let url = format!("{}/v2/databases", ctx.pgplane.api.base);
    let real_id = ctx.pgplane.api.token_id().to_string();
    let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ctx.config.flood_rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            answers.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let token = match kind {
            Flood::RealTokenId => wrong_token(&real_id),
            _ => made_up_token(),
        };
        let request = clients[n % clients.len()].get(&url).bearer_auth(token);
        n += 1;
        answers.sent.fetch_add(1, Ordering::Relaxed);
        let answers = answers.clone();
        tokio::spawn(async move {
            let counter = match request.send().await.map(|r| r.status().as_u16()) {
                Ok(401) => &answers.unauthorized,
                Ok(429) => &answers.too_many,
                _ => &answers.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    Ok(())
}

pub async fn run(ctx: &Ctx) -> Result<FloodsRun> {
    let api = ctx.pgplane.api.clone();
    let job = move || {
        let api = api.clone();
        async move { api.get("/v2/databases").await.map(|_| ()) }
    };
    let seconds = Duration::from_secs(ctx.config.read_seconds);
    let mut out = FloodsRun::default();
    for kind in Flood::ALL {
        // Warm up: connections open, the token verified and cached.
        run_for(Duration::from_millis(500), VALID_CONCURRENCY, job.clone()).await.check("warm-up")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Answers::default());
        let flooding = (kind != Flood::None).then(|| {
            let (stop, answers) = (stop.clone(), answers.clone());
            async move { flood(ctx, kind, stop, answers).await }
        });
        let flooded_too = flooding.is_some();
        let measure = async {
            // Let the flood reach its steady state first (the failure allowance used up).
            if flooded_too {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let result = run_for(seconds, VALID_CONCURRENCY, job.clone()).await;
            stop.store(true, Ordering::Relaxed);
            result
        };
        let (result, flooded) = match flooding {
            Some(f) => tokio::join!(measure, f),
            None => (measure.await, Ok(())),
        };
        flooded?;
        result.check(kind.label())?;
        let (p50, p99) = result.p50_p99_ms();
        // Give the last flooding requests a moment to be answered.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = answers.sent.load(Ordering::Relaxed);
        let unauthorized = answers.unauthorized.load(Ordering::Relaxed);
        let too_many = answers.too_many.load(Ordering::Relaxed);
        let other = answers.other.load(Ordering::Relaxed);
        out.points.push(FloodPoint {
            flood: kind,
            valid_p50_ms: p50,
            valid_p99_ms: p99,
            valid_per_second: result.per_second(),
            sent,
            unauthorized,
            too_many,
            other,
            unanswered: sent.saturating_sub(unauthorized + too_many + other)
                + answers.skipped.load(Ordering::Relaxed),
        });
    }
    Ok(out)
}
