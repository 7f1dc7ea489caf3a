//! Per-stream segment files: append, read back, trim by deleting whole
//! files, reopen, power loss, corruption, poisoning.

mod common;

use common::*;
use ferrite_storage::sim::{FaultKind, SimBackend, SimOp};
use ferrite_storage::{BlockLocation, EntryId, StorageError, StreamKeyId, StreamStore};

fn block(i: u64) -> (EntryId, EntryId, Vec<u8>) {
    let first = EntryId::new(1000 + i * 10, 0);
    let last = EntryId::new(1000 + i * 10 + 5, 3);
    (first, last, payload(i).repeat(2))
}

fn append_blocks(s: &StreamStore, range: std::ops::Range<u64>) -> Vec<(u64, BlockLocation)> {
    range
        .map(|i| {
            let (f, l, p) = block(i);
            (i, s.append_block(KEY, f, l, &p).unwrap())
        })
        .collect()
}

fn check_blocks(s: &StreamStore, locs: &[(u64, BlockLocation)]) {
    for (i, loc) in locs {
        let b = s.read_block(KEY, *loc).unwrap();
        let (f, l, p) = block(*i);
        assert_eq!((b.first, b.last, b.payload), (f, l, p), "block {i}");
    }
}

#[test]
fn blocks_are_appended_across_segments_and_read_back() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append_blocks(&s, 0..20);
    check_blocks(&s, &locs);
    let segs = s.segments(KEY).unwrap();
    assert!(segs.len() > 2, "{segs:?}");
    for seg in &segs {
        assert!(seg.bytes <= 300);
        let scan = s.scan_segment(KEY, seg.number).unwrap();
        assert_eq!(scan.stopped, None);
        assert_eq!(scan.valid_bytes, seg.bytes);
        for b in &scan.blocks {
            assert!(locs.iter().any(|(_, l)| *l == b.location));
        }
    }
    let total: usize = segs
        .iter()
        .map(|seg| s.scan_segment(KEY, seg.number).unwrap().blocks.len())
        .sum();
    assert_eq!(total, 20);
    assert_eq!(s.list_streams().unwrap(), vec![KEY]);
}

#[test]
fn blocks_may_come_in_any_id_order_but_not_inverted() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let (f, l, p) = block(5);
    s.append_block(KEY, f, l, &p).unwrap();
    // A block changed after it was stored is stored again, after newer ones.
    let (f2, l2, p2) = block(4);
    let loc = s.append_block(KEY, f2, l2, &p2).unwrap();
    assert_eq!(s.read_block(KEY, loc).unwrap().payload, p2);
    assert!(matches!(
        s.append_block(KEY, l, f, &p),
        Err(StorageError::InvalidArgument(_))
    ));
    // Another stream is independent.
    s.append_block(StreamKeyId(7), f2, l2, &p2).unwrap();
}

#[test]
fn deleting_whole_segment_files_frees_disk_and_keeps_the_rest_readable() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append_blocks(&s, 0..20);
    s.sync().unwrap();
    let segs = s.segments(KEY).unwrap();
    // Trim: the first live block is block 10.
    let first_live = locs[10].1.segment;
    let removed = s.delete_segments_before(KEY, first_live).unwrap();
    assert_eq!(removed.len() as u64, first_live - segs[0].number);
    let left = s.segments(KEY).unwrap();
    assert_eq!(left.len() + removed.len(), segs.len());
    assert!(left.iter().all(|seg| seg.number >= first_live));
    check_blocks(&s, &locs[10..]);
    assert!(s.read_block(KEY, locs[0].1).is_err());
    // Appending continues in the active segment.
    let more = append_blocks(&s, 20..25);
    check_blocks(&s, &more);
    // Deletion is durable after sync.
    s.sync().unwrap();
    let numbers = |s: &StreamStore| -> Vec<u64> {
        s.segments(KEY).unwrap().iter().map(|x| x.number).collect()
    };
    let before_loss = numbers(&s);
    disk.power_loss();
    let s = store(&disk);
    assert_eq!(numbers(&s), before_loss);
    assert!(before_loss.iter().all(|&n| n >= first_live));
    check_blocks(&s, &locs[10..]);
    check_blocks(&s, &more);
}

#[test]
fn synced_blocks_survive_power_loss_and_unsynced_ones_may_not() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let durable = append_blocks(&s, 0..10);
    s.sync().unwrap();
    let volatile = append_blocks(&s, 10..14);
    disk.power_loss();
    let s = store(&disk);
    check_blocks(&s, &durable);
    for (i, loc) in volatile {
        assert!(
            s.read_block(KEY, loc).is_err(),
            "unsynced block {i} came back"
        );
    }
    // After a restart, appends start a new segment; old blocks stay readable.
    let before: Vec<u64> = s.segments(KEY).unwrap().iter().map(|x| x.number).collect();
    let (f, l, p) = block(100);
    let loc = s.append_block(KEY, f, l, &p).unwrap();
    assert!(loc.segment > *before.last().unwrap());
    assert_eq!(loc.offset, 0);
    check_blocks(&s, &durable);
}

#[test]
fn a_crash_leaves_a_torn_tail_that_is_never_written_behind() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append_blocks(&s, 0..3);
    s.sync().unwrap();
    // Half of a block reaches the disk, then the process dies.
    disk.fail_nth(SimOp::Write, 1, FaultKind::NoSpace);
    let (f, l, p) = block(3);
    assert!(s.append_block(KEY, f, l, &p).unwrap_err().is_no_space());
    assert!(s.failure().is_some());
    assert!(s.append_block(KEY, f, l, &p).unwrap_err().is_poisoned());
    let s = store(&disk.process_crash_copy());
    let seg = locs[0].1.segment;
    let scan = s.scan_segment(KEY, seg).unwrap();
    assert_eq!(scan.blocks.len(), 3);
    assert!(scan.stopped.is_some(), "torn tail reported");
    check_blocks(&s, &locs);
    let loc = s.append_block(KEY, f, l, &p).unwrap();
    assert_ne!(loc.segment, seg);
}

#[test]
fn a_corrupt_block_is_reported_with_file_and_offset() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append_blocks(&s, 0..3);
    s.sync().unwrap();
    let loc = locs[1].1;
    let path = root().join(format!("{:016x}-{:020}.blocks", KEY.0, loc.segment));
    let mut bytes = disk.read_file(&path).unwrap();
    bytes[(loc.offset + 20) as usize] ^= 0x08;
    disk.write_file_durable(&path, &bytes).unwrap();
    match s.read_block(KEY, loc) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, loc.offset);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A location with the wrong length is refused too.
    let bad = BlockLocation {
        len: locs[0].1.len + 1,
        ..locs[0].1
    };
    assert!(matches!(
        s.read_block(KEY, bad),
        Err(StorageError::Corrupt { .. })
    ));
    check_blocks(&s, &locs[..1]);
}

#[test]
fn delete_stream_removes_its_files_durably() {
    let disk = SimBackend::new();
    let s = store(&disk);
    append_blocks(&s, 0..5);
    let other = StreamKeyId(99);
    let (f, l, p) = block(0);
    let keep = s.append_block(other, f, l, &p).unwrap();
    s.sync().unwrap();
    assert_eq!(s.list_streams().unwrap(), vec![KEY, other]);
    s.delete_stream(KEY).unwrap();
    s.sync().unwrap();
    disk.power_loss();
    let s = store(&disk);
    assert_eq!(s.list_streams().unwrap(), vec![other]);
    assert!(s.segments(KEY).unwrap().is_empty());
    assert_eq!(s.read_block(other, keep).unwrap().payload, p);
}

#[test]
fn a_failed_fsync_poisons_the_store() {
    let disk = SimBackend::new();
    let s = store(&disk);
    append_blocks(&s, 0..3);
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    assert!(matches!(
        s.sync(),
        Err(StorageError::Io { op: "fsync", .. })
    ));
    assert!(s.sync().unwrap_err().is_poisoned());
    let (f, l, p) = block(10);
    assert!(s.append_block(KEY, f, l, &p).unwrap_err().is_poisoned());
}

/// A sync of many files is one `syncfs`: every block of 40 streams survives
/// a power loss after it, and a failed one poisons the store.
#[test]
fn a_sync_of_many_streams_is_one_syncfs() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let mut locs = Vec::new();
    for k in 0..40u64 {
        let (f, l, p) = block(k);
        locs.push((k, s.append_block(StreamKeyId(k), f, l, &p).unwrap()));
    }
    let before = disk.count(SimOp::SyncData);
    s.sync().unwrap();
    assert_eq!(disk.count(SimOp::SyncData), before + 1, "one syncfs");
    disk.power_loss();
    drop(s);
    let s = store(&disk);
    for (k, loc) in &locs {
        let b = s.read_block(StreamKeyId(*k), *loc).unwrap();
        assert_eq!(b.payload, block(*k).2, "stream {k}");
    }
    for k in 0..40u64 {
        let (f, l, p) = block(100 + k);
        s.append_block(StreamKeyId(k), f, l, &p).unwrap();
    }
    disk.fail_nth(SimOp::SyncData, 1, FaultKind::Io);
    assert!(matches!(
        s.sync(),
        Err(StorageError::Io { op: "syncfs", .. })
    ));
    assert!(s.sync().unwrap_err().is_poisoned());
}

/// Stores written before the flat layout kept a directory per stream
/// (`<root>/<id>/<number>.blocks`). Opening moves those files to their flat
/// names, durably, and reads them at the same locations; a migration cut
/// half-way (some files moved, some not) is finished by the next open.
#[test]
fn stream_directories_of_the_older_layout_are_moved_into_the_flat_one() {
    let disk = SimBackend::new();
    let s = store(&disk);
    let locs = append_blocks(&s, 0..12);
    let other = StreamKeyId(99);
    let (f, l, p) = block(0);
    let keep = s.append_block(other, f, l, &p).unwrap();
    s.sync().unwrap();
    drop(s);

    // Rebuild the older layout by hand, leaving KEY's first file flat (as a
    // migration interrupted after its first rename would have left it).
    let backend = disk.shared();
    let mut names = disk.list_files(&root());
    names.sort();
    assert!(names.len() > 3, "{names:?}");
    for name in &names[1..] {
        let (id, number) = name.split_once('-').unwrap();
        let old_dir = root().join(id);
        backend.create_dir_all(&old_dir).unwrap();
        let from = root().join(name);
        let bytes = disk.read_file(&from).unwrap();
        disk.write_file_durable(&old_dir.join(number), &bytes)
            .unwrap();
        backend.remove_file(&from).unwrap();
    }
    backend.sync_dir(&root()).unwrap();
    assert_eq!(disk.list_files(&root()), vec![names[0].clone()]);

    for round in 0..2 {
        let s = store(&disk);
        // Reads first: the files are moved when the store opens.
        check_blocks(&s, &locs);
        assert_eq!(s.read_block(other, keep).unwrap().payload, p);
        assert_eq!(s.list_streams().unwrap(), vec![KEY, other], "round {round}");
        let mut now = disk.list_files(&root());
        now.sort();
        assert_eq!(now, names, "round {round}");
        assert!(!backend
            .exists(&root().join(format!("{:016x}", KEY.0)))
            .unwrap());
        // New segments continue after the moved ones.
        let (f, l, p) = block(100 + round);
        let loc = s.append_block(KEY, f, l, &p).unwrap();
        assert!(loc.segment > locs.last().unwrap().1.segment);
        drop(s);
        // The move was durable: a power loss does not undo it.
        disk.power_loss();
        let mut after = disk.list_files(&root());
        after.sort();
        assert_eq!(after, names, "round {round}");
    }
}
