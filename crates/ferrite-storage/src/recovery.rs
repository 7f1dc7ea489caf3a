//! Opening a commit log: load the last checkpoint, stream the records after
//! it, decide what to do about a bad tail, then start the writer.
//!
//! Use it in three steps:
//!
//! ```no_run
//! # use ferrite_storage::*;
//! # fn main() -> Result<(), StorageError> {
//! let mut rec = Recovery::open(FsBackend::shared(), "/var/lib/ferrite/log", LogOptions::default())?;
//! if let Some(cp) = rec.take_checkpoint() {
//!     // load cp.body (cp.covered_seq tells which records it already holds)
//! }
//! while let Some(record) = rec.next_record()? {
//!     // apply record.payload (record.seq is increasing, starts after the checkpoint)
//! }
//! let (log, report) = rec.finish()?; // truncates a torn tail, starts the writer
//! # Ok(()) }
//! ```
//!
//! Nothing on disk is modified before [`Recovery::finish`]; dropping a
//! `Recovery` leaves the directory untouched.
//!
//! How a bad record is judged. Segments are scanned in order; within the
//! kept segments every record must be valid and carry exactly the next
//! sequence number. At the first bad point (a frame that fails to decode, a
//! wrong sequence number, or a gap between segments not covered by the
//! checkpoint) recovery looks for **any valid record after it** (in the rest
//! of that segment, byte by byte, and in every later segment):
//! - none -> a torn or garbage **tail**: truncate there (and fsync), delete
//!   later (empty or garbage) segments, report it, open normally;
//! - some -> **mid-log corruption**: refuse with [`StorageError::Corrupt`]
//!   naming the file and offset, unless [`LogOptions::repair`] is set, in
//!   which case truncate there too and report how many valid records and
//!   bytes were dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, OpenMode};
use crate::checkpoint::{is_temp_name, parse_checkpoint_name, read_checkpoint, Checkpoint};
use crate::config::LogOptions;
use crate::error::{Result, StorageError};
use crate::frame::{FRAME_HEADER_LEN, LOG_BODY_MIN};
use crate::segment::{parse_segment_name, segment_file_name, FrameReader};
use crate::writer::{ActiveSegment, CommitLog, SegmentInfo, StartState};

/// One replayed commit-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// The opaque payload given to `append`.
    pub payload: Vec<u8>,
}

/// Why recovery cut the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationKind {
    /// No valid record followed the bad point: a torn write or garbage at
    /// the end (the expected result of a crash). Nothing acknowledged under
    /// `always` is ever in a torn tail.
    TornTail,
    /// Valid records followed the bad point and [`LogOptions::repair`] was
    /// set: they were dropped.
    Repaired,
}

/// What recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Torn tail or repair.
    pub kind: TruncationKind,
    /// The segment file that was cut (or deleted if the cut was at offset 0
    /// of a misnamed segment).
    pub file: PathBuf,
    /// The byte offset of the bad point: the file's new length.
    pub offset: u64,
    /// What was wrong at that offset.
    pub reason: String,
    /// Bytes removed (from `offset` to the end of the log).
    pub bytes_dropped: u64,
    /// Valid (CRC-correct) records that were among the dropped bytes; 0
    /// for a torn tail.
    pub valid_records_dropped: u64,
    /// Later segment files deleted because they came after the cut.
    pub removed_segments: Vec<PathBuf>,
    /// Every dropped byte of the cut file was zero and no later segment
    /// was deleted: only the space the writer preallocates past its last
    /// record (what a crash normally leaves), nothing of a record.
    pub zeros_only: bool,
}

/// What [`Recovery::finish`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sequence number covered by the loaded checkpoint (0 = none).
    pub checkpoint_seq: u64,
    /// Records returned by `next_record` (those after the checkpoint).
    pub records_replayed: u64,
    /// The last sequence number in the log after recovery (the next append
    /// gets `last_seq + 1`).
    pub last_seq: u64,
    /// Set if the log was truncated.
    pub truncation: Option<Truncation>,
    /// Temp files of an interrupted checkpoint that were deleted.
    pub removed_temp_files: Vec<PathBuf>,
    /// Older checkpoint files that were deleted.
    pub removed_old_checkpoints: Vec<PathBuf>,
    /// Segments wholly covered by the checkpoint that were deleted (a crash
    /// between a checkpoint and its cleanup leaves them behind).
    pub removed_obsolete_segments: Vec<PathBuf>,
    /// Files in the log directory that are none of the above (left alone).
    pub ignored_files: Vec<String>,
    /// Checkpoints that could not be used (unreadable, or refused by the
    /// caller's decoder through [`Recovery::fall_back`]): renamed to
    /// `<name>.bad`, with why; recovery used the one before.
    pub set_aside: Vec<(PathBuf, String)>,
}

struct Plan {
    idx: usize,
    offset: u64,
    expected: u64,
    kind: TruncationKind,
    reason: String,
    bytes_dropped: u64,
    valid_after: u64,
}

enum State {
    Scanning,
    Done(Option<Plan>),
    Failed(StorageError),
}

/// A commit log being opened: see the module docs for the three steps.
pub struct Recovery {
    backend: Arc<dyn Backend>,
    dir: PathBuf,
    options: LogOptions,
    checkpoint: Option<Checkpoint>,
    /// The loaded checkpoint's file.
    loaded: Option<PathBuf>,
    /// The checkpoint before it (the second slot): kept, with the log
    /// after it, so that recovery can fall back to it.
    previous: Option<(u64, PathBuf)>,
    /// Checkpoints found unusable, to rename to `.bad` at `finish`.
    set_aside: Vec<(PathBuf, String)>,
    covered: u64,
    segments: Vec<SegmentInfo>,
    temps: Vec<PathBuf>,
    old_checkpoints: Vec<PathBuf>,
    obsolete: Vec<PathBuf>,
    ignored: Vec<String>,
    cur: usize,
    reader: Option<FrameReader>,
    offset: u64,
    expected: u64,
    replayed: u64,
    state: State,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("dir", &self.dir)
            .field("covered", &self.covered)
            .field("segments", &self.segments.len())
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Recovery {
    /// Create the directory if needed, list it, load and verify the latest
    /// checkpoint. Fails with [`StorageError::Corrupt`] if that checkpoint
    /// is unreadable (checkpoints are never repaired automatically).
    pub fn open(
        backend: Arc<dyn Backend>,
        dir: impl Into<PathBuf>,
        options: LogOptions,
    ) -> Result<Recovery> {
        options.validate()?;
        let dir = dir.into();
        backend
            .create_dir_all(&dir)
            .map_err(|e| StorageError::io("create dir", &dir, e))?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // IMPORTANT: fsync the parent directory so that a log directory we
        // just created survives power loss (harmless if it already existed).
        backend
            .sync_dir(&parent)
            .map_err(|e| StorageError::io("fsync dir", &parent, e))?;

        let mut segments = Vec::new();
        let mut checkpoints = Vec::new();
        let mut temps = Vec::new();
        let mut ignored = Vec::new();
        let entries = backend
            .list_dir(&dir)
            .map_err(|e| StorageError::io("list dir", &dir, e))?;
        for entry in entries.into_iter().filter(|e| !e.is_dir) {
            let path = dir.join(&entry.name);
            if let Some(base) = parse_segment_name(&entry.name) {
                segments.push(SegmentInfo { base, path });
            } else if let Some(seq) = parse_checkpoint_name(&entry.name) {
                checkpoints.push((seq, path));
            } else if is_temp_name(&entry.name) {
                temps.push(path);
            } else {
                ignored.push(entry.name);
            }
        }
        segments.sort_by_key(|s| s.base);
        checkpoints.sort_by_key(|c| c.0);
        ignored.sort();

        // Two slots: the newest checkpoint that reads back is loaded; one
        // that does not (checksum, truncation) while an older one exists is
        // set aside and the older one used, with the longer log after it.
        let mut checkpoint = None;
        let mut loaded = None;
        let mut set_aside = Vec::new();
        while let Some((_, path)) = checkpoints.pop() {
            match read_checkpoint(&backend, &path) {
                Ok(cp) => {
                    checkpoint = Some(cp);
                    loaded = Some(path);
                    break;
                }
                Err(e) if !checkpoints.is_empty() => set_aside.push((path, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        let previous = checkpoints.pop();
        let old_checkpoints = checkpoints.into_iter().map(|c| c.1).collect();
        let covered = checkpoint.as_ref().map_or(0, |c| c.covered_seq);
        // The log is kept from the previous checkpoint on (its fallback).
        let keep_after = previous.as_ref().map_or(covered, |p| p.0.min(covered));

        // Keep from the last segment that starts at or before keep_after +
        // 1: everything before it holds only records <= keep_after.
        let k = segments
            .iter()
            .rposition(|s| s.base <= keep_after.saturating_add(1))
            .unwrap_or(0);
        let obsolete = segments.drain(..k).map(|s| s.path).collect();

        Ok(Recovery {
            backend,
            dir,
            options,
            checkpoint,
            loaded,
            previous,
            set_aside,
            covered,
            segments,
            temps,
            old_checkpoints,
            obsolete,
            ignored,
            cur: 0,
            reader: None,
            offset: 0,
            expected: 0,
            replayed: 0,
            state: State::Scanning,
        })
    }

    /// The loaded checkpoint, if any.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Take the loaded checkpoint (avoids copying a large body).
    pub fn take_checkpoint(&mut self) -> Option<Checkpoint> {
        self.checkpoint.take()
    }

    /// The loaded checkpoint could not be used (`why`: the caller's decoder
    /// refused its body): set it aside (renamed to `<name>.bad` at
    /// [`Recovery::finish`]) and load the one before it, whose log is kept.
    /// `Ok(None)` if there is none: the caller must stop. Only before the
    /// first [`Recovery::next_record`].
    pub fn fall_back(&mut self, why: &str) -> Result<Option<Checkpoint>> {
        if self.cur != 0 || self.reader.is_some() || self.expected != 0 {
            return Err(StorageError::InvalidArgument(
                "fall_back after records were read".into(),
            ));
        }
        let Some(bad) = self.loaded.take() else {
            return Ok(None);
        };
        self.set_aside.push((bad, why.to_string()));
        self.checkpoint = None;
        let Some((_, path)) = self.previous.take() else {
            return Ok(None);
        };
        let cp = read_checkpoint(&self.backend, &path)?;
        self.covered = cp.covered_seq;
        self.loaded = Some(path);
        Ok(Some(cp))
    }

    /// The sequence number the checkpoint covers (0 = none).
    pub fn checkpoint_seq(&self) -> u64 {
        self.covered
    }

    /// The next record after the checkpoint, `Ok(None)` at the end of the
    /// valid log. Returns [`StorageError::Corrupt`] if a bad record is
    /// followed by valid ones and `repair` is off.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            match &self.state {
                State::Scanning => {}
                State::Done(_) => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
            }
            match self.step() {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => {}
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Advance the scan by one frame or one segment boundary.
    fn step(&mut self) -> Result<Option<Record>> {
        if self.reader.is_none() {
            let Some(seg) = self.segments.get(self.cur) else {
                self.state = State::Done(None);
                return Ok(None);
            };
            let base = seg.base;
            let ceiling = self.covered.saturating_add(1);
            if self.cur == 0 {
                if base > ceiling {
                    let reason = format!(
                        "the log starts at seq {base} but the checkpoint covers only up to {}: \
                         records {ceiling}..{} are missing",
                        self.covered,
                        base - 1
                    );
                    self.expected = ceiling;
                    return self.bad_point(0, 0, reason).map(|()| None);
                }
                self.expected = base;
            } else if base != self.expected {
                if base > self.expected && base <= ceiling {
                    // The gap lies wholly inside the checkpoint.
                    self.expected = base;
                } else {
                    let reason =
                        format!("segment starts at seq {base}, expected {}", self.expected);
                    return self.bad_point(self.cur, 0, reason).map(|()| None);
                }
            }
            let path = seg.path.clone();
            self.reader = Some(self.open_reader(&path)?);
            self.offset = 0;
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        if self.offset >= reader.len() {
            self.reader = None;
            self.cur += 1;
            return Ok(None);
        }
        let path = &self.segments[self.cur].path;
        let decoded = reader
            .log_record_at(self.offset)
            .map_err(|e| StorageError::io("read", path, e))?;
        match decoded {
            Ok((len, seq, payload)) if seq == self.expected => {
                let record = (seq > self.covered).then(|| Record {
                    seq,
                    payload: payload.to_vec(),
                });
                self.offset += len;
                self.expected += 1;
                if record.is_some() {
                    self.replayed += 1;
                }
                Ok(record)
            }
            Ok((_, seq, _)) => {
                let reason = crate::frame::FrameError::BadSequence {
                    expected: self.expected,
                    found: seq,
                }
                .to_string();
                self.bad_point(self.cur, self.offset, reason).map(|()| None)
            }
            Err(e) => self
                .bad_point(self.cur, self.offset, e.to_string())
                .map(|()| None),
        }
    }

    fn open_reader(&self, path: &Path) -> Result<FrameReader> {
        let f = self
            .backend
            .open_file(path, OpenMode::Existing)
            .map_err(|e| StorageError::io("open", path, e))?;
        FrameReader::new(f).map_err(|e| StorageError::io("stat", path, e))
    }

    /// Classify the bad point at (`idx`, `offset`): torn tail, repair, or
    /// refuse. Sets the state to `Done(plan)` or returns the error.
    fn bad_point(&mut self, idx: usize, offset: u64, reason: String) -> Result<()> {
        self.reader = None;
        // Open every reader from the bad segment on, and count the bytes.
        let mut readers = Vec::new();
        let mut bytes_after = 0u64;
        for (j, seg) in self.segments.iter().enumerate().skip(idx) {
            let r = self.open_reader(&seg.path)?;
            bytes_after += if j == idx {
                r.len().saturating_sub(offset)
            } else {
                r.len()
            };
            readers.push((seg.path.clone(), r));
        }
        // A real record after the bad point has a sequence number between
        // the first one the kept log could hold and `expected` plus the
        // number of frames that fit in the bytes after it.
        let lo = self
            .segments
            .first()
            .map_or(1, |s| s.base.min(self.expected));
        let hi = self
            .expected
            .saturating_add(bytes_after / (FRAME_HEADER_LEN + LOG_BODY_MIN) as u64 + 1);
        let mut valid_after = 0u64;
        let mut first_valid: Option<(PathBuf, u64)> = None;
        for (j, (path, r)) in readers.iter_mut().enumerate() {
            let from = if j == 0 { offset } else { 0 };
            let (n, first) = r
                .count_valid_log_records(from, (lo, hi))
                .map_err(|e| StorageError::io("read", path.as_path(), e))?;
            valid_after += n;
            if let (None, Some(off)) = (&first_valid, first) {
                first_valid = Some((path.clone(), off));
            }
        }
        let file = self.segments[idx].path.clone();
        let kind = if valid_after == 0 {
            TruncationKind::TornTail
        } else if self.options.repair {
            TruncationKind::Repaired
        } else {
            let (vf, vo) = first_valid.unwrap_or((file.clone(), offset));
            return Err(StorageError::Corrupt {
                file,
                offset,
                reason: format!(
                    "{reason}; {valid_after} valid record(s) follow (the first in {} at offset {vo}), \
                     so this is not a torn tail. Refusing to open; set the repair option to \
                     truncate the log here and drop them",
                    vf.display()
                ),
            });
        };
        self.state = State::Done(Some(Plan {
            idx,
            offset,
            expected: self.expected,
            kind,
            reason,
            bytes_dropped: bytes_after,
            valid_after,
        }));
        Ok(())
    }

    /// Apply the plan (truncate, delete), make the recovered log durable,
    /// and start the writer. Reads any records not yet read (discarding
    /// them). Returns the log and a report of what was found and done.
    pub fn finish(mut self) -> Result<(CommitLog, RecoveryReport)> {
        while self.next_record()?.is_some() {}
        let plan = match std::mem::replace(&mut self.state, State::Done(None)) {
            State::Done(p) => p,
            State::Failed(e) => return Err(e),
            State::Scanning => None,
        };
        let backend = Arc::clone(&self.backend);
        let remove = |p: &Path| {
            backend
                .remove_file(p)
                .map_err(|e| StorageError::io("remove", p, e))
        };
        let mut report = RecoveryReport {
            checkpoint_seq: self.covered,
            records_replayed: self.replayed,
            ignored_files: std::mem::take(&mut self.ignored),
            ..RecoveryReport::default()
        };
        let mut dir_changed = false;
        for p in std::mem::take(&mut self.temps) {
            remove(&p)?;
            report.removed_temp_files.push(p);
            dir_changed = true;
        }
        for p in std::mem::take(&mut self.old_checkpoints) {
            remove(&p)?;
            report.removed_old_checkpoints.push(p);
            dir_changed = true;
        }
        for (p, why) in std::mem::take(&mut self.set_aside) {
            let mut to = p.clone().into_os_string();
            to.push(".bad");
            backend
                .rename(&p, Path::new(&to))
                .map_err(|e| StorageError::io("rename", &p, e))?;
            report.set_aside.push((p, why));
            dir_changed = true;
        }
        for p in std::mem::take(&mut self.obsolete) {
            remove(&p)?;
            report.removed_obsolete_segments.push(p);
            dir_changed = true;
        }

        let mut kept = std::mem::take(&mut self.segments);
        if let Some(plan) = plan {
            let later = kept.split_off(plan.idx + 1);
            let mut removed_segments = Vec::new();
            for s in later {
                remove(&s.path)?;
                removed_segments.push(s.path);
                dir_changed = true;
            }
            // `split_off(idx + 1)` leaves the bad segment last in `kept`.
            let mut zeros_only = false;
            let (base, path) = match kept.last() {
                Some(s) => (s.base, s.path.clone()),
                None => (
                    plan.expected,
                    self.dir.join(segment_file_name(plan.expected)),
                ),
            };
            if plan.offset == 0 && base != plan.expected {
                // The segment's name no longer matches the record that
                // would come next in it: delete it rather than keep an
                // empty, misnamed file.
                kept.pop();
                remove(&path)?;
                removed_segments.push(path.clone());
                dir_changed = true;
            } else {
                let f = backend
                    .open_file(&path, OpenMode::Existing)
                    .map_err(|e| StorageError::io("open", &path, e))?;
                zeros_only = removed_segments.is_empty()
                    && plan.kind == TruncationKind::TornTail
                    && all_zeros_from(f.as_ref(), plan.offset)
                        .map_err(|e| StorageError::io("read", &path, e))?;
                // IMPORTANT: truncation. Cuts the torn tail (or, with
                // repair, everything after the first bad byte).
                f.set_len(plan.offset)
                    .map_err(|e| StorageError::io("truncate", &path, e))?;
                // IMPORTANT: make the truncation durable, or a power loss
                // could bring the bad bytes back after new records were
                // appended behind them.
                f.sync_data()
                    .map_err(|e| StorageError::io("fsync", &path, e))?;
            }
            self.expected = plan.expected;
            report.truncation = Some(Truncation {
                kind: plan.kind,
                file: path,
                offset: plan.offset,
                reason: plan.reason,
                bytes_dropped: plan.bytes_dropped,
                valid_records_dropped: plan.valid_after,
                removed_segments,
                zeros_only,
            });
        }
        let next_seq = self.expected.max(self.covered.saturating_add(1)).max(1);
        let active = match kept.last() {
            Some(last) if self.expected == next_seq => {
                let f = backend
                    .open_file(&last.path, OpenMode::Existing)
                    .map_err(|e| StorageError::io("open", &last.path, e))?;
                let len = f
                    .len()
                    .map_err(|e| StorageError::io("stat", &last.path, e))?;
                ActiveSegment::new(last.path.clone(), f, len)
            }
            _ => {
                let path = self.dir.join(segment_file_name(next_seq));
                let f = backend
                    .open_file(&path, OpenMode::CreateNew)
                    .map_err(|e| StorageError::io("create segment", &path, e))?;
                kept.push(SegmentInfo {
                    base: next_seq,
                    path: path.clone(),
                });
                dir_changed = true;
                ActiveSegment::new(path, f, 0)
            }
        };
        // IMPORTANT: after a process crash the replayed records may still
        // be only in the page cache. Make them durable before anything new
        // is built on them.
        active
            .file
            .sync_data()
            .map_err(|e| StorageError::io("fsync", &active.path, e))?;
        if dir_changed {
            // IMPORTANT: fsync the directory so deletions (temp files,
            // obsolete or cut segments) and a newly created segment are
            // durable before the writer starts.
            backend
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        }
        report.last_seq = next_seq - 1;
        let log = CommitLog::start(
            backend,
            self.dir.clone(),
            self.options.clone(),
            StartState {
                active,
                segments: kept,
                next_seq,
                checkpoint_seq: self.covered,
            },
        )?;
        Ok((log, report))
    }
}

/// True if every byte of `f` from `offset` on is zero.
fn all_zeros_from(f: &dyn crate::backend::BackendFile, offset: u64) -> std::io::Result<bool> {
    let len = f.len()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        f.read_at(at, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
