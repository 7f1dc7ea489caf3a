//! Commit-log benchmark on the real file system. Measures, never asserts.
//!
//! ```text
//! cargo run -p ferrite-storage --release --example log_bench [DIR] [RECORDS_PER_RUN]
//! ```
//!
//! DIR defaults to a fresh directory under the system temp dir (removed at
//! the end); results depend entirely on the disk and file system behind it
//! (tmpfs makes fdatasync free).

use std::sync::Arc;
use std::time::Instant;

use ferrite_storage::{AppendFsync, CommitLog, FsBackend, LogOptions};

fn run(dir: &std::path::Path, policy: AppendFsync, producers: usize, total: usize, payload: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let (log, _) = match CommitLog::open(
        FsBackend::shared(),
        dir,
        LogOptions::new(policy),
        |_| Ok(()),
        |_, _| Ok(()),
    ) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("open failed: {e}");
            return;
        }
    };
    let log = Arc::new(log);
    let per = total / producers;
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let body = vec![b'x'; payload];
                for _ in 0..per {
                    if let Err(e) = log.append(body.clone()).and_then(|h| h.wait()) {
                        eprintln!("append failed: {e}");
                        return;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let s = log.stats();
    let n = (per * producers) as f64;
    let fsync_avg_us = if s.fsyncs > 0 {
        s.fsync_nanos_total as f64 / s.fsyncs as f64 / 1000.0
    } else {
        0.0
    };
    println!(
        "{policy:>8} producers={producers:>3} records={:>6} {:>10.0} appends/s  batches={:>6} fsyncs={:>6} \
         records/fsync={:>6.1}  fsync avg={fsync_avg_us:>8.1}us max={:>8.1}us",
        per * producers,
        n / elapsed.as_secs_f64(),
        s.batches,
        s.fsyncs,
        if s.fsyncs > 0 { n / s.fsyncs as f64 } else { f64::NAN },
        s.fsync_nanos_max as f64 / 1000.0,
    );
    let _ = log.close();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (dir, cleanup) = match args.next() {
        Some(d) => (std::path::PathBuf::from(d), false),
        None => (
            std::env::temp_dir().join(format!("ferrite-log-bench-{}", std::process::id())),
            true,
        ),
    };
    let total: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4000);
    println!("dir={} payload=100 bytes", dir.display());
    let log_dir = dir.join("log");
    run(&log_dir, AppendFsync::Always, 1, total / 4, 100);
    for producers in [4, 16, 64] {
        run(&log_dir, AppendFsync::Always, producers, total, 100);
    }
    for policy in [AppendFsync::EverySec, AppendFsync::No] {
        run(&log_dir, policy, 1, total * 5, 100);
        run(&log_dir, policy, 16, total * 5, 100);
    }
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
