//! Checkpoints: replay after them, old segment deletion, crash at every
//! step of writing one, leftover temp files, corrupt checkpoints.

mod common;

use std::sync::Arc;

use common::*;
use ferrite_storage::sim::{FaultKind, SimBackend, SimOp};
use ferrite_storage::{AppendFsync, LogOptions, StorageError};

type State = Vec<(u64, Vec<u8>)>;

fn opts() -> LogOptions {
    LogOptions {
        segment_max_bytes: 200,
        ..LogOptions::new(AppendFsync::Always)
    }
}

fn records(range: std::ops::RangeInclusive<u64>) -> State {
    range.map(|i| (i, payload(i))).collect()
}

fn append_range(log: &ferrite_storage::CommitLog, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        assert_eq!(log.append(payload(i)).unwrap().wait().unwrap(), i);
    }
}

/// The caller's state after open: checkpoint body + replayed records.
fn rebuilt(o: &Opened) -> State {
    let mut state: State = match &o.checkpoint {
        Some(cp) => {
            assert_eq!(cp.body_version, 1);
            let s: State = decode_versioned(1, &cp.body).unwrap();
            assert_eq!(
                s.len() as u64,
                cp.covered_seq,
                "body covers exactly covered_seq"
            );
            s
        }
        None => Vec::new(),
    };
    let covered = state.len() as u64;
    for (seq, p) in &o.records {
        assert!(*seq > covered, "replay starts after the checkpoint");
        state.push((*seq, p.clone()));
    }
    state
}

fn body_for(upto: u64) -> Vec<u8> {
    encode_versioned(1, &records(1..=upto)).unwrap()
}

#[test]
fn checkpoint_then_replay_only_what_follows_and_delete_old_segments() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=100);
    let before = sim_segments(&disk);
    let rep = o.log.checkpoint(60, 1, &body_for(60)).unwrap();
    assert_eq!(rep.covered_seq, 60);
    assert!(!rep.removed_segments.is_empty());
    let after = sim_segments(&disk);
    assert_eq!(after.len() + rep.removed_segments.len(), before.len());
    // Every remaining segment holds a record > 60, except possibly the one
    // holding 61, which starts at or before 61.
    let bases: Vec<u64> = after
        .iter()
        .map(|n| n.trim_end_matches(".log").parse().unwrap())
        .collect();
    assert!(
        bases[0] <= 61 && (bases.len() < 2 || bases[1] > 61),
        "{bases:?}"
    );
    assert!(disk
        .list_files(&log_dir())
        .contains(&"checkpoint-00000000000000000060.ckpt".to_string()));
    assert_eq!(o.log.checkpoint_seq(), 60);
    append_range(&o.log, 101..=120);
    o.log.close().unwrap();

    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.checkpoint.as_ref().unwrap().covered_seq, 60);
    assert_eq!(o.report.checkpoint_seq, 60);
    assert_eq!(o.records, records(61..=120));
    assert_eq!(o.report.records_replayed, 60);
    assert_eq!(rebuilt(&o), records(1..=120));

    // A second checkpoint keeps the first (its fallback, two slots) and
    // the log after it; a third removes the first.
    let ckpts = |disk: &SimBackend| -> Vec<String> {
        disk.list_files(&log_dir())
            .into_iter()
            .filter(|n| n.ends_with(".ckpt"))
            .collect()
    };
    let rep = o.log.checkpoint(110, 1, &body_for(110)).unwrap();
    assert!(rep.removed_checkpoints.is_empty());
    assert_eq!(
        ckpts(&disk),
        vec![
            "checkpoint-00000000000000000060.ckpt".to_string(),
            "checkpoint-00000000000000000110.ckpt".to_string()
        ]
    );
    let rep = o.log.checkpoint(115, 1, &body_for(115)).unwrap();
    assert_eq!(rep.removed_checkpoints.len(), 1);
    assert_eq!(
        ckpts(&disk),
        vec![
            "checkpoint-00000000000000000110.ckpt".to_string(),
            "checkpoint-00000000000000000115.ckpt".to_string()
        ]
    );
    drop(o);
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.records, records(116..=120));
    assert_eq!(rebuilt(&o), records(1..=120));
}

#[test]
fn a_crash_at_any_step_of_a_checkpoint_leaves_a_recoverable_consistent_state() {
    let ops = [
        SimOp::Open,
        SimOp::Write,
        SimOp::SyncData,
        SimOp::Rename,
        SimOp::SyncDir,
        SimOp::Remove,
    ];
    let mut outcomes = std::collections::BTreeSet::new();
    for op in ops {
        for n in 1..=3 {
            let disk = SimBackend::new();
            let o = open_sim(&disk, opts()).unwrap();
            append_range(&o.log, 1..=100);
            o.log.checkpoint(40, 1, &body_for(40)).unwrap();
            append_range(&o.log, 101..=150);
            disk.fail_nth(op, n, FaultKind::Io);
            let result = o.log.checkpoint(120, 1, &body_for(120));
            // The crash: right after the failed (or the last) step.
            disk.power_loss();
            disk.clear_faults(); // a fault that did not fire is not for the reopen
            drop(o);
            let o = open_sim(&disk, opts())
                .unwrap_or_else(|e| panic!("{op:?} #{n}: reopen failed: {e}"));
            assert_eq!(rebuilt(&o), records(1..=150), "{op:?} #{n}");
            let covered = o.report.checkpoint_seq;
            assert!(covered == 40 || covered == 120, "{op:?} #{n}: {covered}");
            if result.is_ok() {
                assert_eq!(
                    covered, 120,
                    "{op:?} #{n}: a successful checkpoint is durable"
                );
            }
            assert!(
                !disk
                    .list_files(&log_dir())
                    .iter()
                    .any(|f| f.ends_with(".tmp")),
                "{op:?} #{n}: temp files cleaned"
            );
            outcomes.insert((format!("{op:?}"), n, result.is_ok(), covered));
            drop(o);
            // And the directory stays stable.
            let o = open_sim(&disk, opts()).unwrap();
            assert!(o.report.truncation.is_none());
            assert_eq!(rebuilt(&o), records(1..=150));
        }
    }
    // Both outcomes were exercised.
    assert!(outcomes.iter().any(|o| o.3 == 40));
    assert!(outcomes.iter().any(|o| o.3 == 120));
}

#[test]
fn temp_files_from_a_crash_mid_checkpoint_are_ignored_and_removed() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=30);
    o.log.checkpoint(10, 1, &body_for(10)).unwrap();
    o.log.close().unwrap();
    let tmp = log_dir().join("checkpoint-00000000000000000025.ckpt.tmp");
    disk.write_file_durable(&tmp, b"half a checkpoint").unwrap();
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.report.removed_temp_files, vec![tmp]);
    assert_eq!(o.report.checkpoint_seq, 10);
    assert_eq!(rebuilt(&o), records(1..=30));
    assert!(!disk
        .list_files(&log_dir())
        .iter()
        .any(|f| f.ends_with(".tmp")));
}

#[test]
fn a_corrupt_checkpoint_refuses_to_open_even_with_repair() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=30);
    o.log.checkpoint(20, 1, &body_for(20)).unwrap();
    o.log.close().unwrap();
    let path = log_dir().join("checkpoint-00000000000000000020.ckpt");
    let mut bytes = disk.read_file(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    disk.write_file_durable(&path, &bytes).unwrap();
    for repair in [false, true] {
        match open_sim(&disk, LogOptions { repair, ..opts() }) {
            Err(StorageError::Corrupt { file, .. }) => assert_eq!(file, path),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("opened with a corrupt checkpoint"),
        }
    }
}

#[test]
fn checkpoint_arguments_are_checked() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=10);
    assert!(matches!(
        o.log.checkpoint(11, 1, b""),
        Err(StorageError::InvalidArgument(_))
    ));
    o.log.checkpoint(5, 1, &body_for(5)).unwrap();
    assert!(matches!(
        o.log.checkpoint(4, 1, b""),
        Err(StorageError::InvalidArgument(_))
    ));
    // Not poisoned by bad arguments.
    assert_eq!(o.log.append(b"x".to_vec()).unwrap().wait().unwrap(), 11);
}

#[test]
fn checkpoint_under_no_policy_makes_the_covered_records_durable_first() {
    let disk = SimBackend::new();
    let o = open_sim(
        &disk,
        LogOptions {
            fsync: AppendFsync::No,
            ..opts()
        },
    )
    .unwrap();
    append_range(&o.log, 1..=50);
    o.log.checkpoint(50, 1, &body_for(50)).unwrap();
    disk.power_loss();
    drop(o);
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(rebuilt(&o), records(1..=50));
    assert_eq!(o.log.append(b"next".to_vec()).unwrap().wait().unwrap(), 51);
}

#[test]
fn checkpoints_while_producers_append() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, LogOptions::new(AppendFsync::Always)).unwrap();
    let log = Arc::new(o.log);
    let producer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 1..=300u64 {
                assert_eq!(log.append(payload(i)).unwrap().wait().unwrap(), i);
            }
        })
    };
    // Checkpoint whatever is durable, repeatedly, until the producer is
    // done (bounded: the producer stops after 300 records).
    let mut last = 0;
    while !producer.is_finished() {
        let upto = log.durable_seq();
        if upto > last {
            log.checkpoint(upto, 1, &body_for(upto)).unwrap();
            last = upto;
        }
        std::thread::yield_now();
    }
    producer.join().unwrap();
    drop(log);
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(rebuilt(&o), records(1..=300));
}

/// Two slots: a checkpoint that does not read back as the caller's decoder
/// expects is removed and the previous one stays in force, with its log.
#[test]
fn a_checkpoint_refused_by_its_verifier_leaves_the_previous_in_force() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=100);
    o.log.checkpoint(40, 1, &body_for(40)).unwrap();
    append_range(&o.log, 101..=120);
    let err = o
        .log
        .checkpoint_verified(110, 1, &body_for(110), &|cp| {
            // The decoder finds what it wrote unreadable (a codec bug).
            Err(format!("cannot decode {} bytes", cp.body.len()))
        })
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { reason, .. } if reason.contains("cannot decode")),
        "{err}"
    );
    assert_eq!(o.log.checkpoint_seq(), 40);
    assert!(
        o.log.failure().is_none(),
        "a refused checkpoint poisons nothing"
    );
    let names = disk.list_files(&log_dir());
    assert!(!names.iter().any(|n| n.contains("00000000000000000110")));
    drop(o);
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.report.checkpoint_seq, 40);
    assert_eq!(rebuilt(&o), records(1..=120));
}

/// The newest checkpoint unreadable at open (its checksum fails): recovery
/// falls back to the one before and replays the longer log; the bad file
/// is set aside, not deleted.
#[test]
fn an_unreadable_newest_checkpoint_falls_back_to_the_previous_one() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=100);
    o.log.checkpoint(40, 1, &body_for(40)).unwrap();
    append_range(&o.log, 101..=120);
    o.log.checkpoint(110, 1, &body_for(110)).unwrap();
    o.log.close().unwrap();
    drop(o);
    let newest = log_dir().join("checkpoint-00000000000000000110.ckpt");
    let mut bytes = disk.read_file(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    disk.write_file_durable(&newest, &bytes).unwrap();

    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.report.checkpoint_seq, 40);
    assert_eq!(o.report.set_aside.len(), 1);
    assert_eq!(rebuilt(&o), records(1..=120));
    let names = disk.list_files(&log_dir());
    assert!(names.contains(&"checkpoint-00000000000000000110.ckpt.bad".to_string()));
}

/// The caller's decoder refuses the newest checkpoint at open:
/// `Recovery::fall_back` loads the previous one, and replay starts after it.
#[test]
fn recovery_falls_back_when_the_caller_cannot_decode_the_newest() {
    let disk = SimBackend::new();
    let o = open_sim(&disk, opts()).unwrap();
    append_range(&o.log, 1..=100);
    o.log.checkpoint(40, 1, &body_for(40)).unwrap();
    append_range(&o.log, 101..=120);
    o.log.checkpoint(110, 1, &body_for(110)).unwrap();
    o.log.close().unwrap();
    drop(o);

    let mut rec = ferrite_storage::Recovery::open(disk.shared(), log_dir(), opts()).unwrap();
    assert_eq!(rec.take_checkpoint().map(|c| c.covered_seq), Some(110));
    let older = rec.fall_back("decoder refused it").unwrap().unwrap();
    assert_eq!(older.covered_seq, 40);
    let mut state: State = decode_versioned(1, &older.body).unwrap();
    while let Some(r) = rec.next_record().unwrap() {
        state.push((r.seq, r.payload));
    }
    assert_eq!(state, records(1..=120));
    // No third slot: nothing more to fall back to.
    let (_log, report) = rec.finish().unwrap();
    assert_eq!(report.set_aside.len(), 1);
    assert!(report.set_aside[0].1.contains("decoder refused it"));
}
