//! Consumer group scale: heap bytes per pending entry (counting allocator)
//! and operations per second with 1,000,000 pending entries spread over
//! 1,000 consumers. Measures only; nothing here asserts a time.
//!
//! ```sh
//! cargo test -p ferrite-streams --release --test group_scale -- --ignored --nocapture
//! ```
//!
//! The figures are recorded in docs/consumer-groups.md. The small test that
//! always runs guards the memory layout (bytes per pending entry).

// NOTE: a counting global allocator needs `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

use bytes::Bytes;
use ferrite_streams::group::{ClaimOptions, ConsumerId, Group, ENTRIES_READ_INVALID};
use ferrite_streams::{Stream, StreamConfig, StreamId, XaddId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocation counter is process-wide: measurements run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stream entries with IDs `(base + i)-0`, one small field each.
fn stream(n: u64) -> Stream {
    let cfg = StreamConfig::default();
    let fields = [Bytes::from_static(b"f"), Bytes::from_static(b"v")];
    let mut s = Stream::new();
    for i in 0..n {
        s.add(
            XaddId::Explicit(StreamId::new(1_700_000_000_000 + i, 0)),
            &fields,
            0,
            &cfg,
        )
        .expect("add");
    }
    s
}

fn consumer_name(i: usize) -> Vec<u8> {
    format!("consumer-{i}").into_bytes()
}

/// Delivers every entry of `s`, `per` at a time to each of `consumers`
/// consumers in turn. Returns the group, the consumer indexes, the heap
/// bytes the group took, and the seconds the deliveries took.
fn build(s: &Stream, consumers: usize, per: usize) -> (Group, Vec<ConsumerId>, usize, f64) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut g = Group::new(StreamId::MIN, ENTRIES_READ_INVALID);
    let ids: Vec<ConsumerId> = (0..consumers)
        .map(|i| g.create_consumer(&consumer_name(i), 1).0)
        .collect();
    let t = Instant::now();
    let mut k = 0;
    loop {
        let got = g.deliver_new(s, ids[k % consumers], Some(per), false, 2);
        if got.is_empty() {
            break;
        }
        k += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let heap = LIVE.load(Ordering::Relaxed) - before;
    (g, ids, heap, secs)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn bytes_per_pending_entry_small() {
    let _serial = serial();
    let s = stream(100_000);
    let (g, _, heap, _) = build(&s, 100, 1000);
    assert_eq!(g.pending_count(), 100_000);
    let per = heap as f64 / 100_000.0;
    println!(
        "100k pending, 100 consumers: {per:.1} heap bytes per pending entry (estimate {:.1})",
        g.memory_usage() as f64 / 100_000.0
    );
    // Group PEL 32 bytes + consumer PEL 8 bytes per entry, plus chunk and
    // tree overhead: about a quarter of Redis's ~180.
    assert!(per < 50.0, "{per} bytes per pending entry");
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture (release)"]
fn scale_one_million_pending_thousand_consumers() {
    let _serial = serial();
    const N: u64 = 1_000_000;
    const CONSUMERS: usize = 1000;
    let s = stream(N);
    let (mut g, ids, heap, secs) = build(&s, CONSUMERS, 10);
    assert_eq!(g.pending_count(), N as usize);
    println!(
        "1M pending / 1000 consumers: {:.1} heap bytes per pending entry (estimate {:.1})",
        heap as f64 / N as f64,
        g.memory_usage() as f64 / N as f64
    );
    println!(
        "deliver (XREADGROUP >, COUNT 10): {:.0} entries/s",
        N as f64 / secs
    );
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let rand_id = |r: &mut Rng| StreamId::new(1_700_000_000_000 + r.next() % N, 0);

    // XPENDING - + 10 from a random start, and the same for one consumer.
    let ops = 200_000;
    let t = Instant::now();
    let mut seen = 0usize;
    for _ in 0..ops {
        seen += g
            .pending_range(rand_id(&mut r), StreamId::MAX)
            .take(10)
            .count();
    }
    let e = t.elapsed().as_secs_f64();
    println!(
        "XPENDING range of 10 (group): {:.0} ops/s ({seen} entries)",
        ops as f64 / e
    );
    let t = Instant::now();
    let mut seen = 0usize;
    for _ in 0..ops {
        let c = ids[(r.next() % CONSUMERS as u64) as usize];
        seen += g
            .consumer_pending_range(c, rand_id(&mut r), StreamId::MAX)
            .take(10)
            .count();
    }
    let e = t.elapsed().as_secs_f64();
    println!(
        "XPENDING range of 10 (one consumer): {:.0} ops/s ({seen} entries)",
        ops as f64 / e
    );

    // XCLAIM of one random pending entry to a random consumer.
    let opts = ClaimOptions {
        min_idle: 0,
        delivery_time: 3,
        retry_count: None,
        force: false,
        justid: true,
    };
    let ops = 500_000;
    let t = Instant::now();
    for _ in 0..ops {
        let i = rand_id(&mut r);
        let name = consumer_name((r.next() % CONSUMERS as u64) as usize);
        let mut cache = None;
        g.claim(&s, i, &name, &mut cache, &opts, 4);
    }
    let e = t.elapsed().as_secs_f64();
    println!("XCLAIM (one entry): {:.0} ops/s", ops as f64 / e);

    // XACK of random entries (most of them pending).
    let t = Instant::now();
    let mut acked = 0;
    for _ in 0..ops {
        if g.ack(rand_id(&mut r)) {
            acked += 1;
        }
    }
    let e = t.elapsed().as_secs_f64();
    println!(
        "XACK (random order): {:.0} ops/s ({acked} acked)",
        ops as f64 / e
    );

    // XACK in delivery order (the common case): the rest.
    let t = Instant::now();
    let mut n = 0;
    for i in 0..N {
        if g.ack(StreamId::new(1_700_000_000_000 + i, 0)) {
            n += 1;
        }
    }
    let e = t.elapsed().as_secs_f64();
    println!("XACK (in order): {:.0} ops/s ({n} acked)", N as f64 / e);
    assert_eq!(g.pending_count(), 0);
    g.check_invariants().expect("invariants");
}
