//! Measures real heap bytes per entry with a counting allocator, for the
//! small-entry workload `symbol BTC price 42000.5 volume 3` at default
//! config, and checks it against `Stream::memory_usage`'s estimate.
//! Run with `--nocapture` to see the numbers.

// NOTE: a counting global allocator needs `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

use bytes::Bytes;
use ferrite_streams::{Stream, StreamConfig, XaddId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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

const N: u64 = 1_000_000;
/// Value bytes of one entry: "BTC" + "42000.5" + "3".
const VALUE_BYTES: f64 = 11.0;

/// `ms_step` ms between consecutive entries' clocks, `per_ms` entries per clock value.
fn measure(ms_step: u64, per_ms: u64) -> (f64, f64) {
    let fields: Vec<Bytes> = ["symbol", "BTC", "price", "42000.5", "volume", "3"]
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect();
    let cfg = StreamConfig::default();
    let before = LIVE.load(Ordering::Relaxed);
    let mut s = Box::new(Stream::new());
    for i in 0..N {
        let now = 1_700_000_000_000 + (i / per_ms) * ms_step;
        s.add(XaddId::Auto, &fields, now, &cfg).expect("add");
    }
    let heap = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
    let estimate = s.memory_usage() as f64 / N as f64;
    drop(s);
    (heap, estimate)
}

#[test]
fn bytes_per_small_entry() {
    for (ms_step, per_ms) in [(1, 1), (1, 10), (50, 1)] {
        let (heap, estimate) = measure(ms_step, per_ms);
        println!(
            "{per_ms} entries every {ms_step} ms: {heap:.2} heap bytes/entry \
             ({:.2} over the 11 value bytes), memory_usage() estimate {estimate:.2}",
            heap - VALUE_BYTES
        );
        assert!(heap - VALUE_BYTES < 12.0, "overhead {heap} bytes/entry");
        assert!(
            (estimate - heap).abs() / heap < 0.15,
            "estimate {estimate} vs heap {heap}"
        );
    }
}
