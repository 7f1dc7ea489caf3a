//! Time base, measurement windows, percentiles and the `RESULT` line.
//!
//! Every load prints exactly one line `RESULT key=value ...` on stdout; the
//! harness (`scripts/bench.sh`) stores it and [`crate::report`] takes the
//! median of each key over rounds.

use std::sync::OnceLock;
use std::time::Instant;

static T0: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic). End-to-end
/// latencies embed this value in the entry (`ts` field) and subtract it on
/// delivery: producer and consumers share one process and one clock.
pub fn now_ns() -> u64 {
    T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `CLOCK_MONOTONIC` minus [`now_ns`], in nanoseconds: add it to a
/// [`now_ns`] value to line it up with a system trace (`perf record -k
/// mono`, `perf sched`). Read once; both clocks are monotonic.
#[allow(unsafe_code)] // one FFI call, SAFETY below
pub fn monotonic_offset_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let rel = now_ns();
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).saturating_sub(rel)
}

/// The measured part of a timed run: operations that *start* in
/// `[measure_start, end)` count; the warm-up before it does not.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub measure_start: u64,
    pub end: u64,
}

impl Window {
    pub fn starting_now(warmup_secs: f64, duration_secs: f64) -> Window {
        let now = now_ns();
        let measure_start = now + secs_to_ns(warmup_secs);
        Window {
            measure_start,
            end: measure_start + secs_to_ns(duration_secs),
        }
    }
    pub fn counts(&self, start_ns: u64) -> bool {
        start_ns >= self.measure_start && start_ns < self.end
    }
}

pub fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

/// Latency samples in nanoseconds, bounded in count.
pub struct Samples {
    v: Vec<u64>,
    cap: usize,
    pub dropped: u64,
}

impl Samples {
    pub fn with_cap(cap: usize) -> Samples {
        Samples {
            v: Vec::with_capacity(cap.min(1 << 16)),
            cap,
            dropped: 0,
        }
    }
    #[inline]
    pub fn push(&mut self, ns: u64) {
        if self.v.len() < self.cap {
            self.v.push(ns);
        } else {
            self.dropped += 1;
        }
    }
    pub fn merge(&mut self, other: Samples) {
        self.dropped += other.dropped;
        self.v.extend(other.v);
    }
    pub fn percentiles(mut self) -> Option<Pcts> {
        if self.v.is_empty() {
            return None;
        }
        self.v.sort_unstable();
        let n = self.v.len();
        let at = |q: f64| self.v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Pcts {
            n,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: self.v[n - 1],
        })
    }
}

/// Nearest-rank percentiles of a sorted sample vector, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Pcts {
    pub n: usize,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Builder for the single `RESULT` line a load prints.
#[derive(Default)]
pub struct ResultLine(Vec<(String, String)>);

impl ResultLine {
    pub fn new() -> ResultLine {
        ResultLine::default()
    }
    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.0.push((k.to_string(), v.to_string()));
        self
    }
    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.0.push((k.to_string(), format!("{v:.3}")));
        self
    }
    pub fn text(&mut self, k: &str, v: &str) -> &mut Self {
        let clean: String = v
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '=' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        self.0.push((k.to_string(), clean));
        self
    }
    /// Adds `p50_ms`, `p99_ms`, `p999_ms`, `max_ms` and `samples`.
    pub fn latency(&mut self, p: Option<Pcts>) -> &mut Self {
        match p {
            Some(p) => {
                let ms = |ns: u64| ns as f64 / 1e6;
                self.0.push(("p50_ms".into(), format!("{:.4}", ms(p.p50))));
                self.0.push(("p99_ms".into(), format!("{:.4}", ms(p.p99))));
                self.0
                    .push(("p999_ms".into(), format!("{:.4}", ms(p.p999))));
                self.0.push(("max_ms".into(), format!("{:.4}", ms(p.max))));
                self.int("samples", p.n as u64)
            }
            None => self.int("samples", 0),
        }
    }
    pub fn render(&self) -> String {
        let mut s = String::from("RESULT");
        for (k, v) in &self.0 {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// Operations per second over `ops` operations that took `ns` nanoseconds.
pub fn rate(ops: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        ops as f64 * 1e9 / ns as f64
    }
}

/// Small, fast, deterministic PRNG (xorshift64*): key and range choice only.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-enough in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::with_cap(10_000);
        for i in 1..=1000 {
            s.push(i);
        }
        let p = s.percentiles().unwrap();
        assert_eq!(
            (p.n, p.p50, p.p99, p.p999, p.max),
            (1000, 500, 990, 999, 1000)
        );
        assert!(Samples::with_cap(3).percentiles().is_none());
    }

    #[test]
    fn samples_are_bounded() {
        let mut s = Samples::with_cap(2);
        for i in 0..5 {
            s.push(i);
        }
        assert_eq!(s.dropped, 3);
        assert_eq!(s.percentiles().unwrap().n, 2);
    }

    #[test]
    fn result_line_sanitizes_text() {
        let mut r = ResultLine::new();
        r.int("ops", 3).text("error", "a b=c");
        assert_eq!(r.render(), "RESULT ops=3 error=a_b_c");
    }
}
