//! Frame codec and recovery: torn tails, bit flips, garbage, mid-log
//! corruption, repair, segment roll, repeated reopen. All on the simulated
//! backend (fast, exact control of the bytes).

mod common;

use common::*;
use ferrite_storage::sim::SimBackend;
use ferrite_storage::{AppendFsync, Backend, LogOptions, StorageError, TruncationKind};

fn opts() -> LogOptions {
    LogOptions::new(AppendFsync::Always)
}

fn seg_path(base: u64) -> std::path::PathBuf {
    log_dir().join(format!("{base:020}.log"))
}

/// Write records 1..=n (in batches of 3) and close; returns the payloads.
fn build_log(disk: &SimBackend, n: u64, options: LogOptions) -> Vec<(u64, Vec<u8>)> {
    let o = open_sim(disk, options).unwrap();
    let mut all = Vec::new();
    let mut i = 1;
    while i <= n {
        let batch: Vec<Vec<u8>> = (i..=(i + 2).min(n)).map(payload).collect();
        let seqs = o.log.append_batch(batch.clone()).unwrap();
        all.extend(seqs.into_iter().zip(batch));
        i += 3;
    }
    o.log.close().unwrap();
    all
}

fn fresh_disk_with(files: &[(std::path::PathBuf, Vec<u8>)]) -> SimBackend {
    let d = SimBackend::new();
    d.create_dir_all(&log_dir()).unwrap();
    for (p, b) in files {
        d.write_file_durable(p, b).unwrap();
    }
    d
}

#[test]
fn a_log_cut_at_every_byte_recovers_exactly_the_whole_records_before_the_cut() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 40, opts());
    let bytes = disk.read_file(&seg_path(1)).unwrap();
    let mut ends = Vec::new();
    let mut off = 0usize;
    for (_, p) in &expected {
        off += 9 + 8 + p.len();
        ends.push(off);
    }
    assert_eq!(off, bytes.len(), "frame sizes are as documented");

    for cut in 0..=bytes.len() {
        let d = fresh_disk_with(&[(seg_path(1), bytes[..cut].to_vec())]);
        let o = open_sim(&d, opts()).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(o.records, expected[..whole], "cut at {cut}");
        assert_eq!(o.report.last_seq, whole as u64);
        let boundary = if whole == 0 { 0 } else { ends[whole - 1] };
        match &o.report.truncation {
            None => assert_eq!(cut, boundary, "cut at {cut} not reported"),
            Some(t) => {
                assert_eq!(t.kind, TruncationKind::TornTail);
                assert_eq!(t.offset, boundary as u64);
                assert_eq!(t.bytes_dropped, (cut - boundary) as u64);
                assert_eq!(t.valid_records_dropped, 0);
            }
        }
        // The log continues right after the last whole record.
        let seq = o.log.append(b"next".to_vec()).unwrap().wait().unwrap();
        assert_eq!(seq, whole as u64 + 1);
        o.log.close().unwrap();
        let o = open_sim(&d, opts()).unwrap();
        assert!(o.report.truncation.is_none());
        assert_eq!(o.records.len(), whole + 1);
        assert_eq!(o.records[whole], (whole as u64 + 1, b"next".to_vec()));
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 4, opts());
    let bytes = disk.read_file(&seg_path(1)).unwrap();
    let mut starts = vec![0usize];
    for (_, p) in &expected {
        let last = *starts.last().unwrap();
        starts.push(last + 17 + p.len());
    }
    for bit in 0..bytes.len() * 8 {
        let byte = bit / 8;
        let rec = starts.iter().rposition(|&s| s <= byte).unwrap();
        let mut corrupt = bytes.clone();
        corrupt[byte] ^= 1 << (bit % 8);
        let is_last = rec == expected.len() - 1;

        // Without repair.
        let d = fresh_disk_with(&[(seg_path(1), corrupt.clone())]);
        match open_sim(&d, opts()) {
            Ok(o) => {
                assert!(is_last, "bit {bit} in record {rec} accepted");
                assert_eq!(o.records, expected[..rec]);
                let t = o.report.truncation.as_ref().unwrap();
                assert_eq!(t.kind, TruncationKind::TornTail);
                assert_eq!(t.offset, starts[rec] as u64);
            }
            Err(StorageError::Corrupt { file, offset, .. }) => {
                assert!(!is_last, "bit {bit}: last record should be a torn tail");
                assert_eq!(file, seg_path(1));
                assert_eq!(offset, starts[rec] as u64, "bit {bit}");
            }
            Err(e) => panic!("bit {bit}: unexpected error {e}"),
        }

        // With repair: always opens, cut at the flipped record.
        let d = fresh_disk_with(&[(seg_path(1), corrupt)]);
        let o = open_sim(
            &d,
            LogOptions {
                repair: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(o.records, expected[..rec], "bit {bit}");
        let t = o.report.truncation.as_ref().unwrap();
        assert_eq!(t.offset, starts[rec] as u64);
        let after = (expected.len() - rec - 1) as u64;
        assert_eq!(t.valid_records_dropped, after, "bit {bit}");
        let kind = if after == 0 {
            TruncationKind::TornTail
        } else {
            TruncationKind::Repaired
        };
        assert_eq!(t.kind, kind);
    }
}

#[test]
fn zero_filled_and_garbage_tails_are_truncated() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 10, opts());
    let good = disk.read_file(&seg_path(1)).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0u8; 4096]),
        ("one zero byte", vec![0u8; 1]),
        ("garbage", rng.bytes(3000)),
        ("0xff", vec![0xffu8; 100]),
        // A header that claims a huge body: must not allocate or panic.
        ("huge length", {
            let mut h = vec![0u8; 9];
            h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            h[8] = 1;
            h
        }),
    ];
    for (name, tail) in tails {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&tail);
        let d = fresh_disk_with(&[(seg_path(1), bytes)]);
        let o = open_sim(&d, opts()).unwrap();
        assert_eq!(o.records, expected, "{name}");
        let t = o.report.truncation.clone().unwrap();
        assert_eq!(t.kind, TruncationKind::TornTail, "{name}");
        assert_eq!(t.offset, good.len() as u64);
        assert_eq!(t.bytes_dropped, tail.len() as u64);
        o.log.close().unwrap();
        assert_eq!(
            d.read_file(&seg_path(1)).unwrap(),
            good,
            "{name}: truncated and kept"
        );
    }
}

#[test]
fn garbage_or_empty_segments_after_the_end_are_removed() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 10, opts());
    let good = disk.read_file(&seg_path(1)).unwrap();
    let mut rng = Rng(7);
    // A segment named for the next record, full of garbage; and an empty,
    // misnamed one after it.
    let d = fresh_disk_with(&[
        (seg_path(1), good.clone()),
        (seg_path(11), rng.bytes(500)),
        (seg_path(40), Vec::new()),
    ]);
    let o = open_sim(&d, opts()).unwrap();
    assert_eq!(o.records, expected);
    let t = o.report.truncation.clone().unwrap();
    assert_eq!(t.kind, TruncationKind::TornTail);
    assert_eq!(t.removed_segments, vec![seg_path(40)]);
    assert_eq!(o.log.append(b"x".to_vec()).unwrap().wait().unwrap(), 11);
    o.log.close().unwrap();
    assert_eq!(
        sim_segments(&d),
        vec![format!("{:020}.log", 1), format!("{:020}.log", 11)]
    );
}

#[test]
fn repeated_reopen_is_stable() {
    let disk = SimBackend::new();
    let mut expected = build_log(&disk, 20, opts());
    // Start from a torn tail.
    let mut bytes = disk.read_file(&seg_path(1)).unwrap();
    bytes.extend_from_slice(&[0x13, 0x37, 0, 0, 0]);
    disk.write_file_durable(&seg_path(1), &bytes).unwrap();
    let o = open_sim(&disk, opts()).unwrap();
    assert!(o.report.truncation.is_some());
    assert_eq!(o.records, expected);
    drop(o);
    let after_first = disk.read_file(&seg_path(1)).unwrap();
    for round in 0..10u64 {
        let o = open_sim(&disk, opts()).unwrap();
        assert!(o.report.truncation.is_none(), "round {round}");
        assert_eq!(o.records, expected, "round {round}");
        assert_eq!(o.report.last_seq, expected.len() as u64);
        drop(o);
        assert_eq!(disk.read_file(&seg_path(1)).unwrap(), after_first);
    }
    // And with an append between reopens.
    for round in 0..10u64 {
        let o = open_sim(&disk, opts()).unwrap();
        assert!(o.report.truncation.is_none());
        assert_eq!(o.records, expected, "round {round}");
        let p = payload(1000 + round);
        let seq = o.log.append(p.clone()).unwrap().wait().unwrap();
        assert_eq!(seq, expected.len() as u64 + 1);
        expected.push((seq, p));
    }
}

fn small_segments() -> LogOptions {
    LogOptions {
        segment_max_bytes: 120,
        ..opts()
    }
}

#[test]
fn segments_roll_at_the_configured_size_and_are_named_by_first_seq() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 30, small_segments());
    let names = sim_segments(&disk);
    assert!(names.len() > 3, "{names:?}");
    let mut next = 1u64;
    for name in &names {
        let base: u64 = name.trim_end_matches(".log").parse().unwrap();
        assert_eq!(base, next, "segments are contiguous");
        let bytes = disk.read_file(&log_dir().join(name)).unwrap();
        assert!(bytes.len() <= 120, "{name} has {} bytes", bytes.len());
        let mut off = 0;
        while off < bytes.len() {
            off += 17 + expected[(next - 1) as usize].1.len();
            next += 1;
        }
    }
    assert_eq!(next, 31);
    let o = open_sim(&disk, small_segments()).unwrap();
    assert_eq!(o.records, expected);
    // A record larger than the segment size gets a segment of its own.
    let big = vec![7u8; 500];
    let seq = o.log.append(big.clone()).unwrap().wait().unwrap();
    let seq2 = o.log.append(b"after".to_vec()).unwrap().wait().unwrap();
    o.log.close().unwrap();
    assert!(sim_segments(&disk).contains(&format!("{seq:020}.log")));
    assert!(sim_segments(&disk).contains(&format!("{seq2:020}.log")));
}

#[test]
fn mid_log_corruption_refuses_to_open_naming_file_and_offset_and_repair_truncates() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 30, small_segments());
    let names = sim_segments(&disk);
    // Corrupt the second record of the second segment.
    let victim = log_dir().join(&names[1]);
    let base: u64 = names[1].trim_end_matches(".log").parse().unwrap();
    let mut bytes = disk.read_file(&victim).unwrap();
    let second = 17 + expected[(base - 1) as usize].1.len();
    bytes[second + 12] ^= 0x40;
    disk.write_file_durable(&victim, &bytes).unwrap();

    let err = open_sim(&disk, small_segments()).unwrap_err();
    match &err {
        StorageError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &victim);
            assert_eq!(*offset, second as u64);
        }
        e => panic!("unexpected {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&names[1]) && msg.contains(&format!("offset {second}")),
        "{msg}"
    );
    // Refusing changed nothing.
    assert_eq!(sim_segments(&disk), names);
    assert_eq!(disk.read_file(&victim).unwrap(), bytes);

    let o = open_sim(
        &disk,
        LogOptions {
            repair: true,
            ..small_segments()
        },
    )
    .unwrap();
    let kept = base as usize; // records 1..=base survive
    assert_eq!(o.records, expected[..kept]);
    let t = o.report.truncation.clone().unwrap();
    assert_eq!(t.kind, TruncationKind::Repaired);
    assert_eq!(t.file, victim);
    assert_eq!(t.offset, second as u64);
    assert_eq!(t.valid_records_dropped, (expected.len() - kept - 1) as u64);
    assert_eq!(t.removed_segments.len(), names.len() - 2);
    let seq = o
        .log
        .append(b"after repair".to_vec())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(seq, kept as u64 + 1);
    o.log.close().unwrap();

    // Stable afterwards, without repair.
    let o = open_sim(&disk, small_segments()).unwrap();
    assert!(o.report.truncation.is_none());
    assert_eq!(o.records.len(), kept + 1);
}

#[test]
fn corruption_followed_by_valid_records_in_the_last_segment_refuses() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 10, opts());
    let mut bytes = disk.read_file(&seg_path(1)).unwrap();
    // Zero out record 5 entirely (a hole, as a lost page would leave).
    let start: usize = expected[..4].iter().map(|(_, p)| 17 + p.len()).sum();
    let len = 17 + expected[4].1.len();
    bytes[start..start + len].fill(0);
    disk.write_file_durable(&seg_path(1), &bytes).unwrap();
    match open_sim(&disk, opts()) {
        Err(StorageError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, seg_path(1));
            assert_eq!(offset, start as u64);
            assert!(reason.contains("5 valid record(s) follow"), "{reason}");
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("opened a log with a hole"),
    }
}

#[test]
fn a_missing_middle_segment_refuses_and_repair_drops_what_follows() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 30, small_segments());
    let names = sim_segments(&disk);
    let gone = log_dir().join(&names[1]);
    disk.remove_file(&gone).unwrap();
    disk.sync_dir(&log_dir()).unwrap();
    match open_sim(&disk, small_segments()) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, log_dir().join(&names[2]));
            assert_eq!(offset, 0);
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("opened a log with a gap"),
    }
    let base2: u64 = names[1].trim_end_matches(".log").parse().unwrap();
    let o = open_sim(
        &disk,
        LogOptions {
            repair: true,
            ..small_segments()
        },
    )
    .unwrap();
    assert_eq!(o.records, expected[..(base2 - 1) as usize]);
    assert_eq!(o.log.append(b"x".to_vec()).unwrap().wait().unwrap(), base2);
}

#[test]
fn oversized_records_are_rejected_without_poisoning() {
    let disk = SimBackend::new();
    let o = open_sim(
        &disk,
        LogOptions {
            max_record_bytes: 10,
            ..opts()
        },
    )
    .unwrap();
    assert!(matches!(
        o.log.append(vec![0; 11]),
        Err(StorageError::RecordTooLarge { len: 11, max: 10 })
    ));
    assert_eq!(o.log.append(vec![0; 10]).unwrap().wait().unwrap(), 1);
}

#[test]
fn unknown_files_are_left_alone_and_reported() {
    let disk = SimBackend::new();
    build_log(&disk, 3, opts());
    disk.write_file_durable(&log_dir().join("README"), b"hello")
        .unwrap();
    let o = open_sim(&disk, opts()).unwrap();
    assert_eq!(o.report.ignored_files, vec!["README".to_string()]);
    assert_eq!(o.records.len(), 3);
}

/// Random multi-byte damage anywhere in a multi-segment log: recovery never
/// panics, and what it returns is always a prefix of what was written.
#[test]
fn random_damage_never_panics_and_yields_a_prefix() {
    let disk = SimBackend::new();
    let expected = build_log(&disk, 40, small_segments());
    let names = sim_segments(&disk);
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let p = log_dir().join(n);
            let b = disk.read_file(&p).unwrap();
            (p, b)
        })
        .collect();
    let mut rng = Rng(42);
    for round in 0..300 {
        let mut damaged = files.clone();
        for _ in 0..1 + rng.next() % 4 {
            let f = (rng.next() % damaged.len() as u64) as usize;
            let bytes = &mut damaged[f].1;
            match rng.next() % 3 {
                0 if !bytes.is_empty() => {
                    let i = (rng.next() % bytes.len() as u64) as usize;
                    bytes[i] = rng.next() as u8;
                }
                1 => {
                    let cut = (rng.next() % (bytes.len() as u64 + 1)) as usize;
                    bytes.truncate(cut);
                }
                _ => {
                    let n = (rng.next() % 64) as usize;
                    bytes.extend(rng.bytes(n));
                }
            }
        }
        for repair in [false, true] {
            let d = fresh_disk_with(&damaged);
            match open_sim(
                &d,
                LogOptions {
                    repair,
                    ..small_segments()
                },
            ) {
                Ok(o) => {
                    assert!(o.records.len() <= expected.len());
                    assert_eq!(o.records, expected[..o.records.len()], "round {round}");
                    drop(o);
                    // Whatever was done is stable.
                    let again = open_sim(&d, small_segments()).unwrap();
                    assert!(again.report.truncation.is_none(), "round {round}");
                }
                Err(StorageError::Corrupt { .. }) => assert!(!repair, "round {round}"),
                Err(e) => panic!("round {round}: unexpected {e}"),
            }
        }
    }
}
