//! Deleting the segment files a checkpoint no longer references:
//! `delete_segments` (exact, idempotent, skips the active segment, durable
//! at the next sync), no reuse of segment numbers, and the whole
//! garbage-collection recipe of docs/storage.md §8 across a power loss.

mod common;

use std::collections::BTreeSet;

use common::*;
use ferrite_storage::sim::{FaultKind, SimBackend, SimOp};
use ferrite_storage::{BlockLocation, EntryId, StorageError, StreamKeyId, StreamStore};

fn block(i: u64) -> (EntryId, EntryId, Vec<u8>) {
    let first = EntryId::new(1000 + i * 10, 0);
    let last = EntryId::new(1000 + i * 10 + 5, 3);
    // Random bytes: stored raw, so the segment sizes do not depend on LZ4.
    (first, last, Rng(i + 1).bytes(60))
}

fn append(
    s: &StreamStore,
    id: StreamKeyId,
    range: std::ops::Range<u64>,
) -> Vec<(u64, BlockLocation)> {
    range
        .map(|i| {
            let (f, l, p) = block(i);
            (i, s.append_block(id, f, l, &p).unwrap())
        })
        .collect()
}

fn check(s: &StreamStore, id: StreamKeyId, locs: &[(u64, BlockLocation)]) {
    for (i, loc) in locs {
        let b = s.read_block(id, *loc).unwrap();
        assert_eq!(b.payload, block(*i).2, "block {i}");
    }
}

fn numbers(s: &StreamStore, id: StreamKeyId) -> Vec<u64> {
    s.segments(id).unwrap().iter().map(|x| x.number).collect()
}

#[test]
fn delete_segments_deletes_exactly_those_files_and_is_idempotent() {
    let disk = SimBackend::new();
    let s = store(&disk);
    // 102-byte frames, 300-byte segments: 2 blocks a file, so 19 blocks
    // leave room in the active segment.
    let locs = append(&s, KEY, 0..19);
    s.sync().unwrap();
    let all = numbers(&s, KEY);
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    let active = *all.last().unwrap();
    // Delete the 2nd and 4th segments, with a duplicate and a number that
    // never existed.
    let doomed = [all[3], all[1], all[3], 999_999];
    let removed = s.delete_segments(KEY, &doomed).unwrap();
    let path = |n: u64| root().join(format!("{:016x}-{n:020}.blocks", KEY.0));
    assert_eq!(removed, vec![path(all[1]), path(all[3])]);
    let left: Vec<u64> = all
        .iter()
        .copied()
        .filter(|n| *n != all[1] && *n != all[3])
        .collect();
    assert_eq!(numbers(&s, KEY), left);
    let (gone, kept): (Vec<_>, Vec<_>) = locs
        .iter()
        .partition(|(_, l)| l.segment == all[1] || l.segment == all[3]);
    assert!(!gone.is_empty());
    for (_, loc) in &gone {
        assert!(s.read_block(KEY, *loc).is_err());
    }
    check(&s, KEY, &kept);
    // Again: nothing left to delete, no error.
    assert!(s.delete_segments(KEY, &doomed).unwrap().is_empty());
    assert!(s.delete_segments(KEY, &[]).unwrap().is_empty());
    // A stream that has no directory at all.
    assert!(s
        .delete_segments(StreamKeyId(77), &[1, 2])
        .unwrap()
        .is_empty());
    // Appending still goes to the active segment, untouched.
    let more = append(&s, KEY, 19..20);
    assert_eq!(more[0].1.segment, active);
    check(&s, KEY, &more);
}

#[test]
fn the_active_segment_is_skipped_and_deletable_once_it_is_no_longer_active() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append(&s, KEY, 0..3);
    let active = locs[2].1.segment;
    // A GC that lists everything as garbage: every segment but the active
    // one goes.
    let all = numbers(&s, KEY);
    let removed = s.delete_segments(KEY, &all).unwrap();
    assert_eq!(removed.len(), all.len() - 1);
    assert_eq!(numbers(&s, KEY), vec![active]);
    // A block appended to the active segment after the GC listed its
    // candidates survives (102-byte frames, 300-byte segments: 2 a file).
    let late = append(&s, KEY, 3..4);
    assert_eq!(late[0].1.segment, active);
    check(&s, KEY, &late);
    check(&s, KEY, &locs[2..]);
    // After a restart the old active segment is sealed: now it can go.
    s.sync().unwrap();
    drop(s);
    let s = store(&disk);
    let before = numbers(&s, KEY);
    let removed = s.delete_segments(KEY, &before).unwrap();
    assert_eq!(removed.len(), before.len());
    assert!(numbers(&s, KEY).is_empty());
    // The next append takes a new number, above every deleted one.
    let next = append(&s, KEY, 10..11);
    assert!(next[0].1.segment > *before.last().unwrap());
}

#[test]
fn segment_numbers_are_never_reused_after_deleting_the_highest() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let first = append(&s, KEY, 0..10);
    let highest = first.last().unwrap().1.segment;
    // Trim everything (the active segment included).
    let removed = s.delete_segments_before(KEY, highest + 1).unwrap();
    assert_eq!(removed.len() as u64, highest);
    assert!(numbers(&s, KEY).is_empty());
    let again = append(&s, KEY, 10..12);
    assert_eq!(again[0].1.segment, highest + 1);
    // An old location never reads a new block.
    for (_, loc) in &first {
        assert!(s.read_block(KEY, *loc).is_err());
    }
    check(&s, KEY, &again);

    // The same when the stream was never appended to by this process.
    s.sync().unwrap();
    drop(s);
    let s = store(&disk);
    let on_disk = numbers(&s, KEY);
    let top = *on_disk.last().unwrap();
    assert_eq!(
        s.delete_segments(KEY, &on_disk).unwrap().len(),
        on_disk.len()
    );
    let later = append(&s, KEY, 20..21);
    assert_eq!(later[0].1.segment, top + 1);
}

#[test]
fn deletions_are_durable_only_after_sync() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append(&s, KEY, 0..12);
    s.sync().unwrap();
    let all = numbers(&s, KEY);
    let doomed = &all[..2];

    // Not synced: a power loss may bring the files back (the simulated
    // disk undoes unsynced unlinks); they are unreferenced garbage, and
    // deleting them again works.
    s.delete_segments(KEY, doomed).unwrap();
    disk.power_loss();
    let s = store(&disk);
    assert_eq!(numbers(&s, KEY), all);
    check(&s, KEY, &locs);
    assert_eq!(s.delete_segments(KEY, doomed).unwrap().len(), 2);

    // Synced: gone for good.
    s.sync().unwrap();
    disk.power_loss();
    let s = store(&disk);
    assert_eq!(numbers(&s, KEY), all[2..].to_vec());
    let kept: Vec<_> = locs
        .into_iter()
        .filter(|(_, l)| !doomed.contains(&l.segment))
        .collect();
    check(&s, KEY, &kept);
}

#[test]
fn a_failed_unlink_is_an_error_and_the_rest_is_consistent() {
    failed_removal_is_an_error_and_the_rest_is_consistent(0, SimOp::Remove);
}

/// The same with the files kept as spares: the rename that makes one fails.
#[test]
fn a_failed_rename_to_a_spare_is_an_error_and_the_rest_is_consistent() {
    failed_removal_is_an_error_and_the_rest_is_consistent(16, SimOp::Rename);
}

fn failed_removal_is_an_error_and_the_rest_is_consistent(spare_files: usize, op: SimOp) {
    let disk = SimBackend::new();
    let s = store_with_spares(&disk, spare_files);
    append(&s, KEY, 0..12);
    s.sync().unwrap();
    let all = numbers(&s, KEY);
    disk.fail_nth(op, 2, FaultKind::Io);
    let err = s.delete_segments(KEY, &all[..3]).unwrap_err();
    assert!(
        matches!(err, StorageError::Io { op: "remove", .. }),
        "{err:?}"
    );
    // The first one went, the second failed (still there), the third was
    // not tried; a retry finishes the job.
    assert_eq!(numbers(&s, KEY), all[1..].to_vec());
    disk.clear_faults();
    assert_eq!(s.delete_segments(KEY, &all[..3]).unwrap().len(), 2);
    assert_eq!(numbers(&s, KEY), all[3..].to_vec());
}

#[test]
fn a_poisoned_store_deletes_nothing() {
    let disk = SimBackend::new();
    let s = store(&disk);
    append(&s, KEY, 0..6);
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    assert!(s.sync().is_err());
    let all = numbers(&s, KEY);
    assert!(s.delete_segments(KEY, &all).unwrap_err().is_poisoned());
    assert_eq!(numbers(&s, KEY), all);
}

/// The recipe of docs/storage.md §8: list the candidates when the
/// snapshot is taken, delete them once the checkpoint is durable, sync.
#[test]
fn checkpoint_driven_garbage_collection_survives_power_loss() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let (a, b, c) = (StreamKeyId(1), StreamKeyId(2), StreamKeyId(3));
    let a_locs = append(&s, a, 0..12);
    let b_locs = append(&s, b, 0..4);
    let c_locs = append(&s, c, 0..8);
    s.sync().unwrap();

    // Snapshot: stream `a` was trimmed to its last 5 blocks, `b` was
    // deleted (DEL), `c` is whole. The snapshot references these blocks.
    let referenced: BTreeSet<(StreamKeyId, u64)> = a_locs[7..]
        .iter()
        .map(|(_, l)| (a, l.segment))
        .chain(c_locs.iter().map(|(_, l)| (c, l.segment)))
        .collect();
    let referenced_streams: BTreeSet<StreamKeyId> = referenced.iter().map(|(id, _)| *id).collect();
    // Candidates, listed under the same lock as the snapshot.
    let mut doomed_streams = Vec::new();
    let mut doomed_segments = Vec::new();
    for id in s.list_streams().unwrap() {
        if !referenced_streams.contains(&id) {
            doomed_streams.push(id);
            continue;
        }
        let dead: Vec<u64> = s
            .segments(id)
            .unwrap()
            .iter()
            .map(|seg| seg.number)
            .filter(|n| !referenced.contains(&(id, *n)))
            .collect();
        doomed_segments.push((id, dead));
    }
    assert_eq!(doomed_streams, vec![b]);

    // Meanwhile (checkpoint being written), stream `a` gets a new block.
    let a_late = append(&s, a, 12..13);

    // The checkpoint is durable: collect.
    for (id, dead) in &doomed_segments {
        s.delete_segments(*id, dead).unwrap();
    }
    for id in &doomed_streams {
        s.delete_stream(*id).unwrap();
    }
    s.sync().unwrap();
    disk.power_loss();

    let s = store(&disk);
    assert_eq!(s.list_streams().unwrap(), vec![a, c]);
    let a_left: BTreeSet<u64> = numbers(&s, a).into_iter().collect();
    let a_needed: BTreeSet<u64> = a_locs[7..]
        .iter()
        .chain(&a_late)
        .map(|(_, l)| l.segment)
        .collect();
    assert_eq!(a_left, a_needed);
    check(&s, a, &a_locs[7..]);
    check(&s, a, &a_late);
    check(&s, c, &c_locs);
    for (_, loc) in &b_locs {
        assert!(s.read_block(b, *loc).is_err());
    }
}

fn spares(disk: &SimBackend) -> Vec<String> {
    disk.list_files(&root())
        .into_iter()
        .filter(|n| n.starts_with("spare-"))
        .collect()
}

/// Deleted segment files are kept, emptied, as spares (no inode freed), and
/// new segments take them (no inode made): docs/storage.md §8.3.
#[test]
fn deleted_segments_become_spares_that_new_segments_take() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let (a, b) = (StreamKeyId(1), StreamKeyId(2));
    append(&s, a, 0..12);
    s.sync().unwrap();
    let files = disk.list_files(&root()).len();
    assert!(files > 2, "{files} segments");
    s.delete_stream(a).unwrap();
    s.sync().unwrap();
    assert_eq!(spares(&disk).len(), files);
    assert_eq!(disk.list_files(&root()).len(), files);
    for name in spares(&disk) {
        assert_eq!(
            disk.read_file(&root().join(&name)),
            Some(Vec::new()),
            "{name}"
        );
    }
    assert!(s.list_streams().unwrap().is_empty());

    // Stream b's segments are the spares renamed: no file is created.
    let b_locs = append(&s, b, 0..12);
    assert_eq!(numbers(&s, b).len(), files);
    assert!(spares(&disk).is_empty());
    assert_eq!(disk.list_files(&root()).len(), files);
    check(&s, b, &b_locs);
    s.sync().unwrap();
    disk.power_loss();
    let s = store(&disk);
    assert_eq!(s.list_streams().unwrap(), vec![b]);
    check(&s, b, &b_locs);
}

/// A spare's emptying is not made durable (only its new name is): after a
/// power loss it may hold its old blocks again. It is emptied when taken, so
/// the new segment holds exactly its own blocks.
#[test]
fn a_spare_full_again_after_a_power_loss_is_emptied_when_taken() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let (a, b) = (StreamKeyId(1), StreamKeyId(2));
    append(&s, a, 0..12);
    s.sync().unwrap();
    s.delete_stream(a).unwrap();
    s.sync().unwrap();
    disk.power_loss();
    let full = spares(&disk)
        .iter()
        .filter(|n| {
            disk.read_file(&root().join(n))
                .is_some_and(|b| !b.is_empty())
        })
        .count();
    assert!(full > 0, "the simulated disk kept no old bytes in a spare");

    // One block: shorter than what any spare held (two blocks a segment).
    let s = store(&disk);
    let b_locs = append(&s, b, 0..1);
    s.sync().unwrap();
    disk.power_loss();
    let s = store(&disk);
    check(&s, b, &b_locs);
    for n in numbers(&s, b) {
        let scan = s.scan_segment(b, n).unwrap();
        assert_eq!(scan.stopped, None, "segment {n}");
        assert_eq!(scan.valid_bytes, scan.file_len, "segment {n}");
    }
    let scanned: usize = numbers(&s, b)
        .iter()
        .map(|n| s.scan_segment(b, *n).unwrap().blocks.len())
        .sum();
    assert_eq!(scanned, b_locs.len());
}

/// At most `spare_files` spares are kept; past it a deleted segment is
/// unlinked, and an open with a lower limit unlinks the excess.
#[test]
fn spares_are_bounded() {
    let disk = SimBackend::new();
    let s = store_with_spares(&disk, 2);
    append(&s, KEY, 0..12);
    s.sync().unwrap();
    assert!(numbers(&s, KEY).len() > 2);
    s.delete_stream(KEY).unwrap();
    s.sync().unwrap();
    assert_eq!(disk.list_files(&root()), spares(&disk));
    assert_eq!(spares(&disk).len(), 2);
    drop(s);
    let s = store_with_spares(&disk, 1);
    assert_eq!(spares(&disk).len(), 1);
    // No spares at all: every deleted segment is unlinked.
    let s0 = {
        drop(s);
        store_with_spares(&disk, 0)
    };
    assert!(disk.list_files(&root()).is_empty());
    append(&s0, KEY, 0..12);
    s0.delete_stream(KEY).unwrap();
    assert!(disk.list_files(&root()).is_empty());
}
