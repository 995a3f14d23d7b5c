//! The load driver: a fixed number of jobs, or as many as fit in a duration, run by a fixed
//! number of concurrent workers (tokio tasks on the multi-threaded runtime), with the latency
//! of every job recorded.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats;

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// From the first job's start to the last job's end.
    pub wall: Duration,
    pub completed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// p50 and p99 latency, ms.
    pub fn p50_p99_ms(&self) -> (f64, f64) {
        stats::p50_p99_ms(&mut self.latencies.clone())
    }

    fn merge(&mut self, worker: Worker) {
        self.completed += worker.completed;
        self.errors += worker.errors;
        if self.first_error.is_none() {
            self.first_error = worker.first_error;
        }
        self.latencies.extend(worker.latencies);
    }

    /// An error when any job failed.
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        match &self.first_error {
            None => Ok(()),
            Some(e) => anyhow::bail!("{what}: {} of {} failed; first: {e}", self.errors, {
                self.completed + self.errors
            }),
        }
    }
}

#[derive(Default)]
struct Worker {
    completed: usize,
    errors: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

impl Worker {
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        self.latencies.push(started.elapsed());
        match result {
            Ok(()) => self.completed += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Runs jobs `0..n`, `concurrency` at a time.
pub async fn run_count<F, Fut>(n: usize, concurrency: usize, job: F) -> LoadResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                let mut w = Worker::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    let r = job(i).await;
                    w.record(t, r);
                }
                w
            })
        })
        .collect();
    collect(started, workers).await
}

/// Runs jobs for `duration`, `concurrency` at a time (no job starts after the deadline).
pub async fn run_for<F, Fut>(duration: Duration, concurrency: usize, job: F) -> LoadResult
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let deadline = Instant::now() + duration;
    run_while(move || Instant::now() < deadline, concurrency, job).await
}

/// Runs jobs `concurrency` at a time for as long as `go` says (no job starts after it says
/// no).
pub async fn run_while<G, F, Fut>(go: G, concurrency: usize, job: F) -> LoadResult
where
    G: Fn() -> bool + Send + Sync + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (job, go) = (Arc::new(job), Arc::new(go));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (job, go) = (job.clone(), go.clone());
            tokio::spawn(async move {
                let mut w = Worker::default();
                while go() {
                    let t = Instant::now();
                    let r = job().await;
                    w.record(t, r);
                }
                w
            })
        })
        .collect();
    collect(started, workers).await
}

async fn collect(started: Instant, workers: Vec<tokio::task::JoinHandle<Worker>>) -> LoadResult {
    let mut result = LoadResult::default();
    for w in workers {
        match w.await {
            Ok(w) => result.merge(w),
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert(e.to_string());
            }
        }
    }
    result.wall = started.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_job_runs_once_and_failures_are_counted() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let r = run_count(50, 7, move |i| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(i);
                if i % 10 == 0 {
                    Err(format!("job {i}"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!((r.completed, r.errors), (45, 5));
        assert_eq!(r.latencies.len(), 50);
        assert!(r.check("x").is_err());
    }
}
