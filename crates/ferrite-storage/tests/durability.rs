//! Durability claims, proved on the simulated backend: power loss under each
//! appendfsync policy, process crashes, failed fsync/write poisoning, ENOSPC,
//! and group commit.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::*;
use ferrite_storage::sim::{FaultKind, SimBackend, SimOp};
use ferrite_storage::{AppendFsync, Clock, LogOptions, ManualClock, StorageError};

const WAIT: Duration = Duration::from_secs(30);

fn opts(fsync: AppendFsync) -> LogOptions {
    LogOptions {
        segment_max_bytes: 4096,
        ..LogOptions::new(fsync)
    }
}

/// Check that `records` is exactly 1..=n with the payloads in `acked`
/// where given; returns n.
fn check_prefix(records: &[(u64, Vec<u8>)], acked: &[(u64, Vec<u8>)]) -> u64 {
    for (i, (seq, _)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "recovered log is a contiguous prefix");
    }
    let n = records.len() as u64;
    for (seq, p) in acked {
        assert!(
            *seq <= n,
            "acknowledged record {seq} lost (recovered up to {n})"
        );
        assert_eq!(&records[(*seq - 1) as usize].1, p, "payload of {seq}");
    }
    n
}

#[test]
fn always_power_loss_keeps_every_acknowledged_record() {
    for round in 0..6u64 {
        let disk = SimBackend::new();
        let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
        let log = Arc::new(o.log);
        let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let log = Arc::clone(&log);
            let tx = tx.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..400u64 {
                    let p = payload(t * 100_000 + i);
                    let Ok(h) = log.append(p.clone()) else { break };
                    match h.wait() {
                        Ok(seq) => {
                            if tx.send((seq, p)).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        drop(tx);
        let crash_after = 30 + round * 41;
        let mut acked = Vec::new();
        while (acked.len() as u64) < crash_after {
            acked.push(rx.recv_timeout(WAIT).expect("producers stalled"));
        }
        // Power loss while the producers are still appending.
        disk.power_loss();
        for t in threads {
            t.join().unwrap();
        }
        acked.extend(rx.try_iter());
        drop(log);
        let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
        let n = check_prefix(&o.records, &acked);
        assert!(n >= acked.len() as u64);
    }
}

/// Append one record per step of a manual clock, crash, and check what
/// survived against the everysec bound.
#[test]
fn everysec_power_loss_loses_at_most_the_last_interval_or_two() {
    let interval = Duration::from_secs(1);
    // Fixed steps: the exact outcome is known.
    {
        let disk = SimBackend::new();
        let clock = Arc::new(ManualClock::new());
        let o = open_sim(
            &disk,
            LogOptions {
                everysec_interval: interval,
                clock: clock.clone(),
                ..opts(AppendFsync::EverySec)
            },
        )
        .unwrap();
        let step = Duration::from_millis(100);
        for i in 0..60u64 {
            let seq = o.log.append(payload(i)).unwrap().wait().unwrap();
            assert_eq!(seq, i + 1);
            // The fsync runs on the fsync thread: let the one this record
            // made due (if any) finish before the clock moves on.
            assert!(o.log.wait_everysec_fsync(WAIT));
            if i < 59 {
                clock.advance(step);
            }
        }
        // Clock = 5.9 s at the crash. An fsync runs at the first batch (or
        // the fsync thread's timed wake-up) at least 1 s after the previous
        // fsync started. The wake-up's clock reading can be one 100 ms step
        // late (the clock moves on while the fsync thread waits), so the
        // fsyncs happen at s1 in [1.0, 1.1],
        // s(k+1) in [sk + 1.0, sk + 1.1]: the fifth one, between 5.0 and
        // 5.5 s, is the last. It covers at least records 1..=50 (written
        // up to 4.9 s) and at most 1..=56; records 57..=60 (5.6..5.9 s) are
        // always lost.
        disk.power_loss();
        drop(o.log);
        let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
        let n = check_prefix(&o.records, &[]);
        assert!((50..=56).contains(&n), "survived {n}");
    }
    // Irregular steps and crash points: the bound holds.
    let mut rng = Rng(0xDEAD_BEEF);
    for round in 0..20 {
        let disk = SimBackend::new();
        let clock = Arc::new(ManualClock::new());
        let o = open_sim(
            &disk,
            LogOptions {
                everysec_interval: interval,
                clock: clock.clone(),
                ..opts(AppendFsync::EverySec)
            },
        )
        .unwrap();
        let max_step = Duration::from_millis(100);
        let n_records = 20 + rng.next() % 80;
        let mut times = Vec::new();
        for i in 0..n_records {
            let t = clock.now();
            let seq = o.log.append(payload(i)).unwrap().wait().unwrap();
            assert!(o.log.wait_everysec_fsync(WAIT));
            times.push((seq, t));
            if i + 1 < n_records {
                clock.advance(Duration::from_millis(1 + rng.next() % 100));
            }
        }
        let crash = clock.now();
        disk.power_loss();
        drop(o.log);
        let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
        let n = check_prefix(&o.records, &[]);
        // What is lost was written after the last fsync; that fsync started
        // at most `interval` plus a few steps (its clock reading, the
        // decision after a batch and the next batch can each be one step
        // late) before the crash: less than two intervals.
        let bound = interval + 3 * max_step;
        assert!(bound < 2 * interval);
        for (seq, t) in times {
            if crash.saturating_sub(t) > bound {
                assert!(
                    seq <= n,
                    "round {round}: record {seq} written {:?} before the crash was lost",
                    crash - t
                );
            }
        }
    }
}

#[test]
fn no_policy_power_loss_keeps_sealed_segments_and_may_lose_the_active_one() {
    let disk = SimBackend::new();
    let o = open_sim(
        &disk,
        LogOptions {
            segment_max_bytes: 300,
            ..opts(AppendFsync::No)
        },
    )
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..60u64 {
        let p = payload(i);
        let seq = o.log.append(p.clone()).unwrap().wait().unwrap();
        acked.push((seq, p));
    }
    let segs = sim_segments(&disk);
    let active_base: u64 = segs
        .last()
        .unwrap()
        .trim_end_matches(".log")
        .parse()
        .unwrap();
    assert!(segs.len() > 2);
    assert!(active_base <= 60);
    disk.power_loss();
    drop(o.log);
    let o = open_sim(&disk, opts(AppendFsync::No)).unwrap();
    let n = check_prefix(&o.records, &acked[..(active_base - 1) as usize]);
    // With `no`, nothing in the active segment was ever fsynced.
    assert_eq!(n, active_base - 1);
}

#[test]
fn process_crash_loses_nothing_acknowledged_under_any_policy() {
    for policy in [AppendFsync::Always, AppendFsync::EverySec, AppendFsync::No] {
        let disk = SimBackend::new();
        let o = open_sim(&disk, opts(policy)).unwrap();
        let mut acked = Vec::new();
        for i in 0..50u64 {
            let p = payload(i);
            acked.push((o.log.append(p.clone()).unwrap().wait().unwrap(), p));
        }
        // kill -9: the page cache survives, the process does not.
        let restarted = disk.process_crash_copy();
        let o2 = open_sim(&restarted, opts(policy)).unwrap();
        assert_eq!(check_prefix(&o2.records, &acked), 50, "{policy}");
        // Open fsyncs what it replayed, so a power loss right after the
        // restart loses none of it either.
        restarted.power_loss();
        drop(o2.log);
        let o3 = open_sim(&restarted, opts(policy)).unwrap();
        assert_eq!(check_prefix(&o3.records, &acked), 50, "{policy}");
        drop(o.log);
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_retried() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    let mut acked = Vec::new();
    for i in 0..5u64 {
        let p = payload(i);
        acked.push((o.log.append(p.clone()).unwrap().wait().unwrap(), p));
    }
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    let err = o
        .log
        .append(b"doomed".to_vec())
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "fsync", .. }), "{err}");
    let syncs_after_failure = disk.count(SimOp::SyncData);

    // Every later operation fails at once with the typed error.
    let e = o.log.append(b"later".to_vec()).unwrap_err();
    assert!(e.is_poisoned(), "{e}");
    let called = Arc::new(Mutex::new(false));
    let c = Arc::clone(&called);
    let e = o
        .log
        .append_with(
            b"later".to_vec(),
            Box::new(move |_| *c.lock().unwrap() = true),
        )
        .unwrap_err();
    assert!(e.is_poisoned());
    assert!(o
        .log
        .append_batch(vec![b"x".to_vec()])
        .unwrap_err()
        .is_poisoned());
    assert!(o.log.sync().unwrap_err().is_poisoned());
    assert!(o.log.checkpoint(1, 1, b"body").unwrap_err().is_poisoned());
    assert!(o.log.failure().is_some());
    assert!(o.log.close().unwrap_err().is_poisoned());
    assert!(
        !*called.lock().unwrap(),
        "a refused append's callback is dropped, not called"
    );
    assert_eq!(
        disk.count(SimOp::SyncData),
        syncs_after_failure,
        "no fsync after the failed one (not on sync(), not on close)"
    );
    drop(o.log);

    disk.power_loss();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    assert_eq!(check_prefix(&o.records, &acked), 5);
}

#[test]
fn a_failed_write_poisons_the_log() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    let acked: Vec<_> = (0..5u64)
        .map(|i| {
            (
                o.log.append(payload(i)).unwrap().wait().unwrap(),
                payload(i),
            )
        })
        .collect();
    disk.fail_nth(SimOp::Write, 1, FaultKind::Io);
    let err = o
        .log
        .append(b"doomed".to_vec())
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "write", .. }), "{err}");
    assert!(o.log.append(b"later".to_vec()).unwrap_err().is_poisoned());
    drop(o.log);
    // Restart (process crash): the acknowledged records are all there.
    let o = open_sim(&disk.process_crash_copy(), opts(AppendFsync::EverySec)).unwrap();
    assert_eq!(check_prefix(&o.records, &acked), 5);
}

#[test]
fn everysec_background_fsync_failure_poisons_the_log() {
    let disk = SimBackend::new();
    let clock = Arc::new(ManualClock::new());
    let o = open_sim(
        &disk,
        LogOptions {
            clock: clock.clone(),
            ..opts(AppendFsync::EverySec)
        },
    )
    .unwrap();
    o.log.append(b"a".to_vec()).unwrap().wait().unwrap();
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    clock.advance(Duration::from_secs(2));
    // The fsync is now due. The idle writer may run it before "b" is
    // queued (then "b" is refused at once), after "b" is queued but before
    // it is written (then "b" completes with the error), or right after
    // writing "b" (then "b" was acknowledged before the fsync failed: that
    // is the everysec deal).
    match o.log.append(b"b".to_vec()).and_then(|h| h.wait()) {
        Ok(seq) => assert_eq!(seq, 2),
        Err(e) => assert!(e.is_poisoned(), "{e}"),
    }
    assert!(o.log.sync().unwrap_err().is_poisoned());
    assert!(o.log.append(b"c".to_vec()).unwrap_err().is_poisoned());
}

#[test]
fn enospc_is_an_error_to_the_client_and_loses_nothing_acknowledged() {
    // Under always, with a power loss after the disk filled up.
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    let log = Arc::new(o.log);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    // The disk fills up on the 20th write from now and stays full.
    disk.fail_from(SimOp::Write, 20, FaultKind::NoSpace);
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (log, acked, errors) = (Arc::clone(&log), Arc::clone(&acked), Arc::clone(&errors));
        threads.push(std::thread::spawn(move || {
            for i in 0..200u64 {
                let p = payload(t * 1000 + i);
                match log.append(p.clone()).and_then(|h| h.wait()) {
                    Ok(seq) => acked.lock().unwrap().push((seq, p)),
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        break;
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 4, "every producer got an error");
    assert!(errors.iter().all(|e| e.is_no_space()), "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| matches!(e, StorageError::NoSpace { .. })));
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    drop(log);
    disk.power_loss();
    // Reopening works on a still-full disk (recovery only truncates).
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    check_prefix(&o.records, &acked);
    drop(o);

    // Without a power loss: the failing write's half frame is cut at once
    // by the writer (as Redis truncates its AOF after a short write); if
    // that cut fails too, the half frame is a torn tail for recovery.
    let no_prealloc = LogOptions {
        preallocate_bytes: 0,
        ..opts(AppendFsync::EverySec)
    };
    for cut_fails in [false, true] {
        let disk = SimBackend::new();
        let o = open_sim(&disk, no_prealloc.clone()).unwrap();
        let acked: Vec<_> = (0..5u64)
            .map(|i| {
                (
                    o.log.append(payload(i)).unwrap().wait().unwrap(),
                    payload(i),
                )
            })
            .collect();
        disk.fail_nth(SimOp::Write, 1, FaultKind::NoSpace);
        if cut_fails {
            disk.fail_nth(SimOp::SetLen, 1, FaultKind::Io);
        }
        let e = o.log.append(vec![9u8; 100]).unwrap().wait().unwrap_err();
        assert!(matches!(e, StorageError::NoSpace { .. }), "{e}");
        let e = o.log.append(b"x".to_vec()).unwrap_err();
        assert!(e.is_poisoned() && e.is_no_space(), "{e}");
        let restarted = disk.process_crash_copy();
        drop(o.log);
        let o = open_sim(&restarted, opts(AppendFsync::EverySec)).unwrap();
        assert_eq!(check_prefix(&o.records, &acked), 5);
        match (cut_fails, &o.report.truncation) {
            (false, t) => assert!(t.is_none(), "{t:?}"),
            (true, Some(t)) => assert_eq!(t.bytes_dropped, (17 + 100) / 2),
            (true, None) => panic!("the half-written frame must be cut"),
        }
    }
}

/// Preallocation: records overwrite zeros written ahead of them; a sealed
/// segment is cut to its last record before the next one exists, so only
/// the active segment ever ends in zeros; a crash leaves them as a tail
/// that recovery cuts (nothing acknowledged lost, no "corruption"); a
/// clean close cuts them itself.
#[test]
fn preallocated_zeros_are_cut_from_sealed_segments_and_by_recovery() {
    use ferrite_storage::frame::encode_log_record;
    let frame_len = |seq: u64, p: &[u8]| {
        let mut v = Vec::new();
        encode_log_record(seq, p, &mut v);
        v.len() as u64
    };
    for policy in [AppendFsync::Always, AppendFsync::EverySec] {
        let disk = SimBackend::new();
        let o = open_sim(&disk, opts(policy)).unwrap();
        let acked: Vec<_> = (0..300u64)
            .map(|i| {
                (
                    o.log.append(payload(i)).unwrap().wait().unwrap(),
                    payload(i),
                )
            })
            .collect();
        let segs = sim_segments(&disk);
        assert!(segs.len() >= 3, "{segs:?}");
        // Each sealed segment holds exactly its records: its length is the
        // sum of their frames (segment names are their first seq).
        let bases: Vec<u64> = segs
            .iter()
            .map(|s| s.trim_end_matches(".log").parse().unwrap())
            .collect();
        for (k, s) in segs[..segs.len() - 1].iter().enumerate() {
            let len = disk.read_file(&log_dir().join(s)).unwrap().len() as u64;
            let want: u64 = (bases[k]..bases[k + 1])
                .map(|seq| frame_len(seq, &acked[(seq - 1) as usize].1))
                .sum();
            assert_eq!(len, want, "sealed segment {s} is exactly its records");
        }
        // The active one is preallocated up to the segment size.
        let last = log_dir().join(segs.last().unwrap());
        let active_records: u64 = (*bases.last().unwrap()..=300)
            .map(|seq| frame_len(seq, &acked[(seq - 1) as usize].1))
            .sum();
        let bytes = disk.read_file(&last).unwrap();
        assert_eq!(bytes.len() as u64, 4096, "active segment preallocated");
        assert!(bytes[active_records as usize..].iter().all(|&b| b == 0));

        // A process crash: recovery cuts the zeros, keeps every record.
        let crashed = disk.process_crash_copy();
        let r = open_sim(&crashed, opts(policy)).unwrap();
        assert_eq!(check_prefix(&r.records, &acked), 300);
        let t = r.report.truncation.clone().expect("zeros cut");
        assert_eq!(t.kind, ferrite_storage::TruncationKind::TornTail);
        assert_eq!(t.file, last);
        assert_eq!(t.offset, active_records);
        assert_eq!(t.bytes_dropped, 4096 - active_records);
        // ... and appends after it land right behind the last record.
        let seq = r.log.append(b"after".to_vec()).unwrap().wait().unwrap();
        assert_eq!(seq, 301);
        drop(r);
        let r = open_sim(&crashed, opts(policy)).unwrap();
        assert_eq!(r.records.len(), 301);
        assert_eq!(r.records[300].1, b"after");
        drop(r);

        // A clean close cuts them: the next open finds nothing to truncate.
        drop(o.log);
        let bytes = disk.read_file(&last).unwrap();
        assert_eq!(bytes.len() as u64, active_records, "close trims");
        let r = open_sim(&disk, opts(policy)).unwrap();
        assert!(r.report.truncation.is_none(), "{:?}", r.report.truncation);
        assert_eq!(check_prefix(&r.records, &acked), 300);
    }
}

/// Preallocation is only an optimisation: when its zeros cannot be written
/// (full disk, file size limit) the records are written without it, and
/// the log is not poisoned.
#[test]
fn a_failed_preallocation_is_not_a_failed_write() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    // The first batch's first write is the preallocation (no write before).
    disk.fail_nth(SimOp::Write, 1, FaultKind::NoSpace);
    let acked: Vec<_> = (0..100u64)
        .map(|i| {
            (
                o.log.append(payload(i)).unwrap().wait().unwrap(),
                payload(i),
            )
        })
        .collect();
    assert!(o.log.failure().is_none());
    drop(o.log);
    disk.power_loss();
    let r = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    assert_eq!(check_prefix(&r.records, &acked), 100);
}

/// Why the log never retries a failed fsync: on Linux the failed fsync may
/// have dropped the dirty pages, so the retry succeeds and the data is gone.
#[test]
fn retrying_a_failed_fsync_would_lie() {
    use ferrite_storage::{Backend, OpenMode};
    let disk = SimBackend::new();
    let dir = log_dir();
    disk.create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let f = disk.open_file(&path, OpenMode::CreateNew).unwrap();
    disk.sync_dir(&dir).unwrap();
    f.write_at(0, b"acknowledged?").unwrap();
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_ok(), "the retry 'succeeds'...");
    disk.power_loss();
    let data = disk.read_file(&path).unwrap();
    assert_ne!(
        &data[..],
        b"acknowledged?",
        "...but the data never reached the disk"
    );
    assert!(data.iter().all(|&b| b == 0));
}

/// Group commit, deterministically: hold the first fsync while every
/// producer queues its records, then release it. All of them must then be
/// written and fsynced as one batch.
#[test]
fn group_commit_many_producers_share_one_fsync() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 50;
    let disk = SimBackend::new();
    // One segment: no roll (which has its own fsync) during the test.
    let o = open_sim(&disk, LogOptions::new(AppendFsync::Always)).unwrap();
    let log = Arc::new(o.log);
    let syncs_at_start = disk.count(SimOp::SyncData);
    disk.hold_syncs();

    let completions = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let (log, completions, barrier) = (
            Arc::clone(&log),
            Arc::clone(&completions),
            Arc::clone(&barrier),
        );
        threads.push(std::thread::spawn(move || {
            let mut assigned = Vec::new();
            for i in 0..PER_THREAD {
                let c = Arc::clone(&completions);
                let seq = log
                    .append_with(
                        payload(t * 1000 + i),
                        Box::new(move |r| c.lock().unwrap().push((t, i, r))),
                    )
                    .unwrap();
                assigned.push(seq);
            }
            barrier.wait();
            assigned
        }));
    }
    barrier.wait(); // every record is queued (or already in the held batch)
    assert!(
        completions.lock().unwrap().is_empty(),
        "nothing completes before its fsync"
    );
    disk.release_syncs();
    let durable = log.sync().unwrap(); // completions fire before sync waiters
    assert_eq!(durable, THREADS * PER_THREAD);

    let assigned: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let fsyncs = disk.count(SimOp::SyncData) - syncs_at_start;
    assert!(
        fsyncs <= 2,
        "{} records took {fsyncs} fsyncs",
        THREADS * PER_THREAD
    );
    assert_eq!(log.stats().fsyncs, fsyncs);

    let completions = completions.lock().unwrap();
    assert_eq!(completions.len() as u64, THREADS * PER_THREAD);
    let seqs: Vec<u64> = completions
        .iter()
        .map(|(_, _, r)| r.clone().expect("append failed"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "completions fire in increasing seq order"
    );
    for (t, a) in assigned.iter().enumerate() {
        assert!(
            a.windows(2).all(|w| w[0] < w[1]),
            "thread {t}'s seqs increase"
        );
    }
    for (t, i, r) in completions.iter() {
        assert_eq!(r.as_ref().ok(), Some(&assigned[*t as usize][*i as usize]));
    }
}

/// Group commit under load: many producers, each waiting for its own
/// records, with an emulated fsync latency. Checks correctness; prints the
/// batching it got (no timing assertions).
#[test]
fn group_commit_under_concurrent_load() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 150;
    let disk = SimBackend::new();
    disk.set_sync_latency(Duration::from_micros(300));
    let o = open_sim(&disk, LogOptions::new(AppendFsync::Always)).unwrap();
    let log = Arc::new(o.log);
    let before = disk.count(SimOp::SyncData);
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let log = Arc::clone(&log);
        threads.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            for i in 0..PER_THREAD {
                let p = payload(t * 1000 + i);
                let seq = log.append(p.clone()).unwrap().wait().unwrap();
                got.push((seq, p));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in threads {
        let got = t.join().unwrap();
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(got);
    }
    all.sort();
    let total = THREADS * PER_THREAD;
    assert_eq!(
        all.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let fsyncs = disk.count(SimOp::SyncData) - before;
    assert!(fsyncs <= total);
    eprintln!(
        "group commit: {total} records from {THREADS} producers, {fsyncs} fsyncs ({:.1} records/fsync)",
        total as f64 / fsyncs.max(1) as f64
    );
    drop(log);
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    check_prefix(&o.records, &all);
}

#[test]
fn a_panicking_completion_does_not_kill_the_writer() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    o.log
        .append_with(b"a".to_vec(), Box::new(|_| panic!("callback bug")))
        .unwrap();
    assert_eq!(
        o.log
            .append(b"b".to_vec())
            .unwrap()
            .wait_timeout(WAIT)
            .unwrap()
            .unwrap(),
        2
    );
}

#[test]
fn closing_from_a_completion_does_not_deadlock() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    let log = Arc::new(o.log);
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&log);
    log.append_with(
        b"a".to_vec(),
        Box::new(move |r| {
            let closed = inner.close();
            let _ = tx.send((r, closed.is_ok()));
        }),
    )
    .unwrap();
    let (r, closed_ok) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(r.unwrap(), 1);
    assert!(closed_ok);
    assert!(matches!(
        log.append(b"b".to_vec()),
        Err(StorageError::Closed)
    ));
    log.close().unwrap();
    drop(log);
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    assert_eq!(o.records, vec![(1, b"a".to_vec())]);
}

/// Under `everysec` the periodic fsync runs on the fsync thread: while it is
/// stuck in `fdatasync`, appends keep completing (their `pwrite` is enough),
/// and once it returns, what it covered survives a power loss.
#[test]
fn everysec_appends_complete_while_the_periodic_fsync_runs() {
    let disk = SimBackend::new();
    let clock = Arc::new(ManualClock::new());
    let o = open_sim(
        &disk,
        LogOptions {
            segment_max_bytes: 1 << 20,
            clock: clock.clone(),
            ..LogOptions::new(AppendFsync::EverySec)
        },
    )
    .unwrap();
    let syncs_at_start = disk.count(SimOp::SyncData);
    let mut acked = Vec::new();
    for i in 0..3u64 {
        acked.push((
            o.log.append(payload(i)).unwrap().wait().unwrap(),
            payload(i),
        ));
    }
    disk.hold_syncs();
    clock.advance(Duration::from_secs(2));
    // This batch makes the fsync due; the fsync thread takes it and blocks
    // in the held fdatasync.
    acked.push((
        o.log.append(payload(3)).unwrap().wait().unwrap(),
        payload(3),
    ));
    assert!(disk.wait_for_held_syncs(1, WAIT));
    for i in 4..104u64 {
        let h = o.log.append(payload(i)).unwrap();
        let seq = h
            .wait_timeout(WAIT)
            .expect("completes during the fsync")
            .unwrap();
        assert_eq!(seq, i + 1);
    }
    assert!(
        !o.log.wait_everysec_fsync(Duration::ZERO),
        "the fsync is still held"
    );
    assert_eq!(o.log.stats().written_seq, 104);
    disk.release_syncs();
    assert!(o.log.wait_everysec_fsync(WAIT));
    assert_eq!(disk.count(SimOp::SyncData), syncs_at_start + 1);
    assert!(o.log.durable_seq() >= 4);
    disk.power_loss();
    drop(o.log);
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    check_prefix(&o.records, &acked);
}

/// A segment roll seals the old segment on the writer thread. If the fsync
/// thread's fdatasync of that segment is running, the roll waits for it; if
/// it fails, the roll does not fsync again (never retried), no new segment
/// is created, and the records that needed it fail.
#[test]
fn a_roll_behind_a_failing_background_fsync_never_retries_it() {
    let disk = SimBackend::new();
    let clock = Arc::new(ManualClock::new());
    let o = open_sim(
        &disk,
        LogOptions {
            clock: clock.clone(),
            ..opts(AppendFsync::EverySec)
        },
    )
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..5u64 {
        acked.push((
            o.log.append(payload(i)).unwrap().wait().unwrap(),
            payload(i),
        ));
    }
    let segments = disk
        .list_files(&log_dir())
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    let syncs_before = disk.count(SimOp::SyncData);
    disk.hold_syncs();
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    clock.advance(Duration::from_secs(2));
    acked.push((
        o.log.append(payload(5)).unwrap().wait().unwrap(),
        payload(5),
    ));
    assert!(disk.wait_for_held_syncs(1, WAIT));
    // 4000 bytes do not fit behind the records in the 4 KiB segment: the
    // writer must roll, and waits at the fsync gate behind the held
    // (doomed) fdatasync.
    let big = o.log.append(vec![7u8; 4000]).unwrap();
    disk.release_syncs();
    let err = big.wait_timeout(WAIT).expect("completes").unwrap_err();
    assert!(err.is_poisoned(), "{err}");
    assert!(o.log.wait_everysec_fsync(WAIT));
    assert_eq!(
        disk.count(SimOp::SyncData),
        syncs_before + 1,
        "the failed fsync is the only one"
    );
    assert!(o.log.append(b"later".to_vec()).unwrap_err().is_poisoned());
    assert!(o.log.sync().unwrap_err().is_poisoned());
    assert!(o.log.close().unwrap_err().is_poisoned());
    assert_eq!(disk.count(SimOp::SyncData), syncs_before + 1);
    assert_eq!(
        disk.list_files(&log_dir())
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        segments,
        "no segment after one whose seal failed"
    );
    drop(o.log);
    // A kill -9 loses nothing acknowledged; a power loss leaves a prefix
    // (the failed fsync made nothing durable: the everysec deal).
    let o = open_sim(&disk.process_crash_copy(), opts(AppendFsync::EverySec)).unwrap();
    check_prefix(&o.records, &acked);
    disk.power_loss();
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    check_prefix(&o.records, &[]);
}

/// `append_deferred` does not wake the writer; `kick`, a full deferred queue
/// or an ordinary append do, and write everything queued. Deferred records
/// are followed with `acked_seq`, `when_acked` and `outcome`.
#[test]
fn deferred_appends_are_written_on_kick_or_when_the_queue_is_full() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    let (tx, rx) = mpsc::channel::<Result<u64, StorageError>>();
    let send = |tx: &mpsc::Sender<Result<u64, StorageError>>| {
        let tx = tx.clone();
        Box::new(move |r| {
            let _ = tx.send(r);
        }) as ferrite_storage::Completion
    };
    // NOTE: a writer that happens to be awake takes a deferred record with
    // its next batch, so "not written before the kick" cannot be asserted.
    assert_eq!(o.log.append_deferred(b"a".to_vec()).unwrap(), 1);
    o.log.when_acked(1, send(&tx));
    o.log.kick();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 1);
    assert_eq!(o.log.outcome(1).unwrap().unwrap(), 1);
    assert!(o.log.acked_seq() >= 1);
    // Already acknowledged: the callback runs at once, on this thread.
    o.log.when_acked(1, send(&tx));
    assert_eq!(rx.try_recv().unwrap().unwrap(), 1);
    // A full deferred queue wakes the writer on its own.
    for i in 0..128u64 {
        assert_eq!(o.log.append_deferred(payload(i)).unwrap(), i + 2);
    }
    o.log.when_acked(129, send(&tx));
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 129);
    // An ordinary append takes deferred records along.
    o.log.append_deferred(b"b".to_vec()).unwrap();
    assert_eq!(o.log.append(b"c".to_vec()).unwrap().wait().unwrap(), 131);
    assert_eq!(o.log.outcome(130).unwrap().unwrap(), 130);
    o.log.close().unwrap();
    disk.power_loss();
    let o = open_sim(&disk, opts(AppendFsync::Always)).unwrap();
    assert_eq!(o.records.len(), 131);
}

/// After a failed write, `when_acked` and `outcome` report the failing
/// batch's own error for its records, Poisoned for later ones, and `Ok` for
/// the records before.
#[test]
fn deferred_records_report_a_failed_write() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts(AppendFsync::EverySec)).unwrap();
    for i in 0..3u64 {
        o.log.append(payload(i)).unwrap().wait().unwrap();
    }
    disk.fail_nth(SimOp::Write, 1, FaultKind::Io);
    let (tx, rx) = mpsc::channel::<Result<u64, StorageError>>();
    let seq = o.log.append_deferred(b"doomed".to_vec()).unwrap();
    assert_eq!(seq, 4);
    let tx2 = tx.clone();
    o.log.when_acked(
        seq,
        Box::new(move |r| {
            let _ = tx2.send(r);
        }),
    );
    o.log.kick();
    let err = rx.recv_timeout(WAIT).unwrap().unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "write", .. }), "{err}");
    assert!(matches!(
        o.log.outcome(4),
        Some(Err(StorageError::Io { op: "write", .. }))
    ));
    assert_eq!(o.log.outcome(3).unwrap().unwrap(), 3);
    assert!(o.log.outcome(5).unwrap().unwrap_err().is_poisoned());
    assert!(o
        .log
        .append_deferred(b"later".to_vec())
        .unwrap_err()
        .is_poisoned());
    assert!(o.log.failure().is_some());
}
