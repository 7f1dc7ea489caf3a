//! The mapped write path (docs/storage.md §3.6): appenders copy records into
//! a writable mapping of the active segment's preallocated zeros. Proved on
//! the simulated backend with mapping on (process crash, power loss, fsync
//! failure, segment rolls) and on the real file system (`mmap`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrite_storage::sim::{FaultKind, SimBackend, SimOp};
use ferrite_storage::{AppendFsync, Backend, CommitLog, FsBackend, LogOptions, StorageError};

const WAIT: Duration = Duration::from_secs(30);

fn opts(fsync: AppendFsync) -> LogOptions {
    LogOptions {
        segment_max_bytes: 64 * 1024,
        ..LogOptions::new(fsync)
    }
}

fn mapped_disk() -> SimBackend {
    let disk = SimBackend::new();
    disk.enable_mapping();
    disk
}

/// Wait (bounded) until `done()`; `what` names it if it never is.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

/// Wait (bounded) until the writer has lent the window.
fn wait_lent(log: &CommitLog) {
    wait_until("the window was never lent", || log.window_lent());
}

/// A log on `disk` under `everysec` with a short interval, its window lent.
fn open_everysec(disk: &SimBackend, interval_ms: u64) -> Opened {
    let o = open_sim(
        disk,
        LogOptions {
            everysec_interval: Duration::from_millis(interval_ms),
            ..opts(AppendFsync::EverySec)
        },
    )
    .unwrap();
    wait_lent(&o.log);
    o
}

/// Append `p` the server's way.
fn append(log: &CommitLog, p: &[u8]) -> Result<u64, StorageError> {
    log.append_deferred_with(|out| out.extend_from_slice(p))
}

/// The record's outcome, kicking the writer and waiting (bounded) for it.
fn settle(log: &CommitLog, seq: u64) -> Result<u64, StorageError> {
    log.kick();
    let (tx, rx) = std::sync::mpsc::channel();
    log.when_acked(seq, Box::new(move |r| drop(tx.send(r))));
    rx.recv_timeout(WAIT).expect("record never decided")
}

#[test]
fn copied_records_are_acknowledged_at_once_under_everysec_and_no_and_survive_a_crash() {
    for policy in [AppendFsync::EverySec, AppendFsync::No] {
        let disk = mapped_disk();
        let o = open_sim(&disk, opts(policy)).unwrap();
        wait_lent(&o.log);
        let writes = disk.count(SimOp::Write);
        let mut acked = Vec::new();
        for i in 0..20u64 {
            let p = payload(i);
            let seq = append(&o.log, &p).unwrap();
            // No kick, no writer: the copy into the page cache is what
            // these policies promise.
            assert!(
                matches!(o.log.outcome(seq), Some(Ok(s)) if s == seq),
                "{policy}: record {seq} not acknowledged at once"
            );
            acked.push((seq, p));
        }
        let st = o.log.stats();
        assert_eq!(st.mapped_records, 20, "{policy}");
        assert_eq!(st.records, 20, "{policy}");
        assert_eq!(disk.count(SimOp::Write), writes, "{policy}: no write call");
        // kill -9: the page cache survives.
        let restarted = disk.process_crash_copy();
        let o2 = open_sim(&restarted, opts(policy)).unwrap();
        assert_eq!(o2.records, acked, "{policy}");
        drop(o.log);
    }
}

/// Under `always` appends go through the queue even while a window is
/// lent (an fsync per batch would write-protect the mapped pages each
/// time): a record is acknowledged only after its fsync, and survives power
/// loss after that; records copied before the switch are fsynced with it.
#[test]
fn under_always_records_are_written_and_fsynced_by_the_writer() {
    let disk = mapped_disk();
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    wait_lent(&o.log);
    let copied = append(&o.log, b"copied").unwrap();
    assert!(matches!(o.log.outcome(copied), Some(Ok(_))));
    o.log.set_fsync(AppendFsync::Always);
    disk.hold_syncs();
    let seq = append(&o.log, b"held").unwrap();
    assert!(
        o.log.outcome(seq).is_none(),
        "acknowledged before its fsync"
    );
    o.log.kick();
    assert!(disk.wait_for_held_syncs(1, WAIT));
    assert!(
        o.log.outcome(seq).is_none(),
        "acknowledged during its fsync"
    );
    disk.release_syncs();
    assert_eq!(settle(&o.log, seq).unwrap(), seq);
    assert_eq!(o.log.stats().mapped_records, 1);
    disk.power_loss();
    drop(o.log);
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    assert_eq!(
        o.records,
        vec![(copied, b"copied".to_vec()), (seq, b"held".to_vec())]
    );
}

/// Many producers, many segments: the window is extended, given back for
/// queued records and rolls, and lent again; every acknowledged record is
/// there after a crash, and after a power loss under `always`.
#[test]
fn concurrent_producers_across_rolls_lose_nothing_acknowledged() {
    for policy in [AppendFsync::Always, AppendFsync::EverySec] {
        let disk = mapped_disk();
        let o = open_sim(&disk, opts(policy)).unwrap();
        let log = Arc::new(o.log);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..1500u64 {
                        let p = payload(t * 1_000_000 + i);
                        // Every tenth record through the queue, as a
                        // completion-based append would go.
                        let seq = if i % 10 == 9 {
                            log.append(p.clone()).unwrap().seq()
                        } else {
                            append(&log, &p).unwrap()
                        };
                        assert_eq!(settle(&log, seq).unwrap(), seq);
                        acked.push((seq, p));
                    }
                    acked
                })
            })
            .collect();
        let mut acked: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        acked.sort();
        let st = log.stats();
        assert_eq!(
            st.mapped_records > 0,
            policy == AppendFsync::EverySec,
            "{policy}: {st:?}"
        );
        assert!(st.segments > 3, "{policy}: {st:?}");
        let crashed = disk.process_crash_copy();
        let o2 = open_sim(&crashed, opts(policy)).unwrap();
        assert_eq!(o2.records, acked, "{policy}: after a crash");
        if policy == AppendFsync::Always {
            disk.power_loss();
            let o3 = open_sim(&disk, opts(policy)).unwrap();
            assert_eq!(o3.records, acked, "after a power loss");
        }
        drop(log);
    }
}

/// A failed background fsync poisons the log: the window is taken back
/// and every later append is refused (records copied before it were
/// acknowledged: that is the `everysec` deal).
#[test]
fn a_failed_everysec_fsync_poisons_the_log_and_unmaps_the_window() {
    let disk = mapped_disk();
    let o = open_everysec(&disk, 10);
    disk.fail_from(SimOp::SyncData, 1, FaultKind::Io);
    let a = append(&o.log, b"a").unwrap();
    assert!(matches!(o.log.outcome(a), Some(Ok(_))));
    wait_until("the fsync never ran", || o.log.failure().is_some());
    assert!(append(&o.log, b"b").unwrap_err().is_poisoned());
    // The writer takes the window back once it sees the failure.
    wait_until("the window stayed lent", || !o.log.window_lent());
    assert!(o.log.sync().unwrap_err().is_poisoned());
}

/// Under `everysec` nobody wakes the fsync thread for a copied record: its
/// own timer finds it.
#[test]
fn the_fsync_thread_finds_copied_records_on_its_own() {
    let disk = mapped_disk();
    let o = open_everysec(&disk, 20);
    let seq = append(&o.log, b"x").unwrap();
    wait_until("never fsynced", || o.log.durable_seq() >= seq);
    disk.power_loss();
    drop(o.log);
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    assert_eq!(o.records, vec![(seq, b"x".to_vec())]);
}

/// The real thing: `mmap` of real segment files, rolled many times; every
/// segment ends at its last record once sealed or closed.
#[test]
fn mapped_appends_on_disk() {
    let tmp = TempDir::new("mapped");
    let dir = tmp.path().join("log");
    let opts = LogOptions {
        segment_max_bytes: 256 * 1024,
        ..LogOptions::new(AppendFsync::EverySec)
    };
    let o = open_at(FsBackend::shared(), &dir, opts.clone()).unwrap();
    // Only file systems that overwrite in place are mapped (ext4, XFS,
    // tmpfs); elsewhere this checks the `pwrite` path.
    let maps = FsBackend::new().maps_files(&dir);
    if maps {
        wait_lent(&o.log);
    }
    let mut last = 0;
    for i in 0..40_000u64 {
        last = append(&o.log, &payload(i)).unwrap();
        if i % 1000 == 999 {
            assert_eq!(settle(&o.log, last).unwrap(), last);
        }
    }
    assert_eq!(settle(&o.log, last).unwrap(), last);
    let st = o.log.stats();
    // At least the first 1,000 (they fit in the first window, lent before
    // them); how many later ones race the writer's re-lending after each
    // roll depends on scheduling.
    if maps {
        assert!(st.mapped_records >= 1000, "{st:?}");
    } else {
        assert_eq!(st.mapped_records, 0, "{st:?}");
    }
    o.log.close().unwrap();
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments > 3, "{segments} segments");
    // Recovery refuses a sealed segment with bytes after its last record,
    // and reports a cut of the last one: neither happens.
    let o = open_at(FsBackend::shared(), &dir, opts).unwrap();
    assert!(o.report.truncation.is_none(), "{:?}", o.report.truncation);
    assert_eq!(
        o.records,
        (0..40_000u64)
            .map(|i| (i + 1, payload(i)))
            .collect::<Vec<_>>()
    );
}
