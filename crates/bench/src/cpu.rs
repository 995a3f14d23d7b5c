//! CPU time spent over a phase, by who spent it, read from /proc: pgplane's process, each
//! PostgreSQL server (its postmaster and every backend; a backend that ended during the phase
//! counts too, its time added to the postmaster's when it was reaped) and the bench's own
//! threads (the load generator); with the share of the machine's cores that was busy. Cores
//! shared by all of them set a bound on how fast a phase can go: its CPU time over the cores.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The processes whose time is counted.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub pgplane: u32,
    /// The metadata database's postmaster.
    pub meta: u32,
    /// The target's postmaster.
    pub target: u32,
}

/// CPU time over a phase, milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub pgplane_ms: f64,
    pub meta_ms: f64,
    pub target_ms: f64,
    /// The bench's own threads: the load generator (and its polling).
    pub bench_ms: f64,
    /// The share of all cores busy over the phase (0 to 1), whoever used them.
    pub busy: f64,
}

impl CpuUse {
    /// Everything counted but the machine's share.
    pub fn total_ms(&self) -> f64 {
        self.pgplane_ms + self.meta_ms + self.target_ms + self.bench_ms
    }
}

/// The counters at a phase's start.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    ticks: [u64; 4],
    machine: (u64, u64),
}

/// The process ID of a container's first process (for the test images, the postmaster: the
/// entrypoint execs it).
pub fn container_pid(container_id: &str) -> Result<u32> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", container_id])
        .output()
        .context("docker inspect")?;
    if !out.status.success() {
        bail!("docker inspect {container_id}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().context("a container's pid")
}

impl Watched {
    pub fn mark(&self) -> Mark {
        let procs = processes();
        let own = std::process::id();
        Mark {
            ticks: [
                tree(&procs, self.pgplane),
                tree(&procs, self.meta),
                tree(&procs, self.target),
                procs.iter().find(|p| p.pid == own).map_or(0, |p| p.own),
            ],
            machine: machine(),
        }
    }

    /// What was spent since `mark`.
    pub fn since(&self, mark: &Mark) -> CpuUse {
        let now = self.mark();
        let ms = |i: usize| now.ticks[i].saturating_sub(mark.ticks[i]) as f64 * 1e3 / TICKS_PER_SECOND;
        let (busy, total) = (now.machine.0 - mark.machine.0, now.machine.1 - mark.machine.1);
        CpuUse {
            pgplane_ms: ms(0),
            meta_ms: ms(1),
            target_ms: ms(2),
            bench_ms: ms(3),
            busy: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
        }
    }
}

/// One process's counters (clock ticks): its own time, and its reaped children's.
struct Proc {
    pid: u32,
    ppid: u32,
    own: u64,
    reaped: u64,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's closing parenthesis: state, ppid, ... utime (14th field of
            // the line), stime, cutime, cstime.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let field = |i: usize| rest.get(i)?.parse::<u64>().ok();
            Some(Proc {
                pid,
                ppid: field(1)? as u32,
                own: field(11)? + field(12)?,
                reaped: field(13)? + field(14)?,
            })
        })
        .collect()
}

/// A process and its children, with the time of the children it reaped.
fn tree(procs: &[Proc], root: u32) -> u64 {
    procs
        .iter()
        .map(|p| match p.pid == root {
            true => p.own + p.reaped,
            false if p.ppid == root => p.own,
            false => 0,
        })
        .sum()
}

/// The machine's busy and total time (`/proc/stat`, all cores), in clock ticks.
fn machine() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 8 {
        return (0, 0);
    }
    // user nice system idle iowait irq softirq steal
    let idle = v[3] + v[4];
    let total: u64 = v[..8].iter().sum();
    (total - idle, total)
}

/// The unit of /proc's times: USER_HZ, which Linux fixes at 100 for user space whatever the
/// kernel's own tick.
const TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_counts_its_postmaster_its_backends_and_the_backends_it_reaped() {
        let p = |pid, ppid, own, reaped| Proc { pid, ppid, own, reaped };
        let procs = [p(10, 1, 5, 7), p(11, 10, 3, 0), p(12, 10, 4, 0), p(20, 1, 100, 0), p(21, 11, 50, 0)];
        assert_eq!(tree(&procs, 10), 5 + 7 + 3 + 4);
        assert_eq!(tree(&procs, 99), 0);
    }

    #[test]
    fn the_bench_own_work_is_counted() {
        let watched = Watched { pgplane: 0, meta: 0, target: 0 };
        let mark = watched.mark();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = watched.since(&mark);
        assert!(used.bench_ms >= 100.0, "{used:?}");
        assert!(used.busy > 0.0 && used.busy <= 1.0, "{used:?}");
    }
}
