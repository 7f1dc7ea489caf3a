//! Server-wide counters that live outside the store lock (network bytes,
//! reads and writes, counted by the network layer) and Redis's
//! instantaneous rates (`instantaneous_ops_per_sec`, `..._kbps`): a rate
//! per 100 ms sample, averaged over the last 16 samples, as Redis's
//! `trackInstantaneousMetric` does from its cron.

use std::sync::atomic::{AtomicU64, Ordering};

/// Samples averaged for an instantaneous rate (Redis's `STATS_METRIC_SAMPLES`).
const SAMPLES: usize = 16;

#[derive(Default)]
pub struct Metrics {
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Socket reads and writes that moved bytes (`total_reads_processed`,
    /// `total_writes_processed`).
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Highest `used_memory` INFO has computed (`used_memory_peak`).
    pub peak_memory: AtomicU64,
    rates: parking_lot::Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    last_ms: u64,
    last: [u64; 3],
    samples: [[f64; SAMPLES]; 3],
    next: usize,
}

/// Which instantaneous rate.
#[derive(Clone, Copy)]
pub enum Rate {
    /// Commands per second.
    Ops = 0,
    /// Input bytes per second.
    Input = 1,
    /// Output bytes per second.
    Output = 2,
}

impl Metrics {
    pub fn count_input(&self, bytes: usize) {
        self.net_input_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_output(&self, bytes: usize) {
        self.net_output_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// One sample (the cron calls this ten times a second) with the
    /// commands processed so far.
    pub fn sample(&self, now_ms: u64, commands: u64) {
        let totals = [
            commands,
            self.net_input_bytes.load(Ordering::Relaxed),
            self.net_output_bytes.load(Ordering::Relaxed),
        ];
        let mut r = self.rates.lock();
        if r.last_ms != 0 && now_ms > r.last_ms {
            let dt = (now_ms - r.last_ms) as f64 / 1000.0;
            let i = r.next;
            for (m, total) in totals.iter().enumerate() {
                r.samples[m][i] = total.saturating_sub(r.last[m]) as f64 / dt;
            }
            r.next = (i + 1) % SAMPLES;
        }
        r.last_ms = now_ms;
        r.last = totals;
    }

    /// The mean of the last samples of `rate`, per second.
    pub fn instantaneous(&self, rate: Rate) -> f64 {
        let r = self.rates.lock();
        r.samples[rate as usize].iter().sum::<f64>() / SAMPLES as f64
    }

    /// Record `used` and return the peak so far.
    pub fn peak(&self, used: u64) -> u64 {
        self.peak_memory
            .fetch_max(used, Ordering::Relaxed)
            .max(used)
    }
}

/// Sub-buckets per power of two: values are kept to within 1/8 (12.5%).
const SUB_BITS: u32 = 3;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) << SUB_BITS;

/// A command's latency distribution in nanoseconds, log-linear buckets
/// (each power of two split in eight): INFO latencystats' percentiles,
/// within 12.5% as Redis's HDR histogram (2 significant digits) is within
/// 1%. Allocated on the first call (about 2 KiB per command used).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    counts: Option<Box<[u64; BUCKETS]>>,
    total: u64,
}

impl LatencyHistogram {
    fn bucket(ns: u64) -> usize {
        let v = ns.max(1);
        let exp = 63 - v.leading_zeros();
        if exp < SUB_BITS {
            return v as usize;
        }
        let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((exp - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The largest value bucket `i` holds.
    fn upper(i: usize) -> u64 {
        let per = 1usize << SUB_BITS;
        if i < per {
            return i as u64;
        }
        let exp = (i / per) as u32 + SUB_BITS - 1;
        let sub = (i % per) as u64;
        let base = (per as u64 + sub) << (exp - SUB_BITS);
        base + (1u64 << (exp - SUB_BITS)) - 1
    }

    pub fn record(&mut self, ns: u64) {
        let counts = self.counts.get_or_insert_with(|| Box::new([0; BUCKETS]));
        counts[Self::bucket(ns).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value at percentile `p` (0..=100), in nanoseconds.
    pub fn percentile(&self, p: f64) -> u64 {
        let Some(counts) = &self.counts else { return 0 };
        let want = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Self::upper(i);
            }
        }
        Self::upper(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_within_an_eighth() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentile(50.0), 0);
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        for (p, exact) in [(50.0, 500_000.0), (99.0, 990_000.0), (99.9, 999_000.0)] {
            let got = h.percentile(p) as f64;
            assert!(
                got >= exact && got <= exact * 1.125,
                "p{p}: {got} vs {exact}"
            );
        }
        for v in [0u64, 1, 7, 8, 9, 1000, u64::MAX / 2, u64::MAX] {
            let b = LatencyHistogram::bucket(v).min(BUCKETS - 1);
            assert!(
                LatencyHistogram::upper(b) >= v.max(1) || b == BUCKETS - 1,
                "{v}"
            );
        }
    }

    #[test]
    fn rates_average_the_last_samples() {
        let m = Metrics::default();
        m.sample(1000, 0);
        for i in 1..=SAMPLES as u64 {
            m.count_input(1000);
            m.sample(1000 + i * 100, i * 10);
        }
        // 10 commands and 1000 bytes per 100 ms.
        assert!((m.instantaneous(Rate::Ops) - 100.0).abs() < 1e-9);
        assert!((m.instantaneous(Rate::Input) - 10_000.0).abs() < 1e-9);
        assert_eq!(m.instantaneous(Rate::Output), 0.0);
        assert_eq!(m.peak(5), 5);
        assert_eq!(m.peak(3), 5);
    }
}
