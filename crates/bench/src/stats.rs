//! Summaries of repeated measurements (median, min, max over runs), percentiles of latency
//! samples, and the number formats the report uses.

use std::time::Duration;

/// Median, minimum and maximum of one quantity measured in several runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Summary {
    /// Summarises `values`; NaN-free input expected (empty input gives zeros).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Self { median, min: v[0], max: v[n - 1], runs: n }
    }

    /// "1.23 (1.20–1.31)" with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        if self.runs <= 1 {
            return format!("{:.digits$}", self.median);
        }
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median, self.min, self.max)
    }
}

/// The `q`-quantile (0..=1) of sorted samples, nearest-rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and p99 of unsorted samples, in milliseconds.
pub fn p50_p99_ms(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    (ms(quantile(samples, 0.50)), ms(quantile(samples, 0.99)))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// pgplane / floor, for values where lower is better (times).
pub fn ratio(pgplane: f64, floor: f64) -> f64 {
    if floor > 0.0 {
        pgplane / floor
    } else {
        f64::NAN
    }
}

/// Ratios run by run (pgplane run i against floor run i), summarised.
pub fn paired_ratios(pgplane: &[f64], floor: &[f64]) -> Summary {
    let r: Vec<f64> =
        pgplane.iter().zip(floor).map(|(p, f)| ratio(*p, *f)).filter(|r| r.is_finite()).collect();
    Summary::of(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Summary::of(&[]).runs, 0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&v[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn ratios_pair_runs() {
        let r = paired_ratios(&[2.0, 3.0, 4.0], &[1.0, 1.0, 2.0]);
        assert_eq!((r.median, r.min, r.max), (2.0, 2.0, 3.0));
    }
}
