//! The commit log's write path: [`CommitLog`], its single writer thread and
//! group commit.
//!
//! Producers (any number of threads) call [`CommitLog::append_with`],
//! [`CommitLog::append`] or [`CommitLog::append_batch`]. Each call takes the
//! queue lock just long enough to assign the next sequence number and push
//! the payload, then returns; it never does I/O. One writer thread
//! (`std::thread`) loops:
//!
//! 1. take **everything** queued (one batch, any number of producers);
//! 2. encode the frames into one buffer and `pwrite` it (rolling to a new
//!    segment file when the current one is full);
//! 3. depending on [`AppendFsync`]: `Always` -> `fdatasync`, then fire the
//!    completions; `EverySec` -> fire the completions, then `fdatasync` if the
//!    last one is at least an interval old; `No` -> fire the completions.
//!
//! While the writer is inside `fdatasync`, new appends pile up in the queue
//! and all go into the next batch, so under `Always` N concurrent producers
//! share one fsync instead of paying N of them (group commit).
//!
//! Failure handling: the first failed write or fsync **poisons** the log.
//! The records of the failing batch complete with that error (e.g.
//! [`StorageError::NoSpace`]), everything queued behind it and every later
//! append fails with [`StorageError::Poisoned`]. A failed fsync is never
//! retried: after an fsync error Linux may already have dropped the dirty
//! pages, so a retry could "succeed" with the data gone (docs/storage.md).
//!
//! Completions run **on the writer thread**: keep them short and
//! non-blocking (send on a channel, wake a task). A panic in one is caught
//! and ignored. From async code, pass a callback that completes a
//! `tokio::sync::oneshot` — the tokio worker never blocks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::backend::{Backend, BackendFile, OpenMode};
use crate::config::{AppendFsync, LogOptions};
use crate::error::{Result, StorageError};
use crate::frame::{encode_log_record, log_record_len};
use crate::segment::segment_file_name;

/// A completion callback: called exactly once with the record's sequence
/// number once it is as durable as the policy promises, or with the error
/// that prevented it. Runs on the writer thread.
pub type Completion = Box<dyn FnOnce(Result<u64>) + Send + 'static>;

/// Counters for monitoring and tests; a consistent-enough snapshot (each
/// field is read atomically, not all together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The sequence number the next append will get.
    pub next_seq: u64,
    /// Highest sequence number written to the kernel (0 = none).
    pub written_seq: u64,
    /// Highest sequence number known durable (fdatasync'd, or recovered
    /// and fsynced at open).
    pub durable_seq: u64,
    /// Records written since open.
    pub records: u64,
    /// Batches written since open (one `pwrite` each, more if a batch
    /// crossed a segment roll).
    pub batches: u64,
    /// `fdatasync` calls on segment files since open (including the ones
    /// done at segment roll, `sync()` and close).
    pub fsyncs: u64,
    /// Total time spent in those `fdatasync` calls, in nanoseconds.
    pub fsync_nanos_total: u64,
    /// Longest single `fdatasync`, in nanoseconds.
    pub fsync_nanos_max: u64,
    /// Bytes written to segment files since open.
    pub bytes_written: u64,
    /// Segment files currently in the log directory.
    pub segments: u64,
}

#[derive(Debug, Default)]
struct AtomicStats {
    written_seq: AtomicU64,
    durable_seq: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos_total: AtomicU64,
    fsync_nanos_max: AtomicU64,
    bytes_written: AtomicU64,
}

/// One queued record.
struct Pending {
    seq: u64,
    payload: Vec<u8>,
    done: Option<Completion>,
}

impl Pending {
    fn complete(mut self, r: Result<u64>) {
        if let Some(done) = self.done.take() {
            call(done, r);
        }
    }
}

impl Drop for Pending {
    /// A record dropped without completing (only if the writer thread died)
    /// still completes, with [`StorageError::Closed`], so nobody waits
    /// forever.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            call(done, Err(StorageError::Closed));
        }
    }
}

fn call(done: Completion, r: Result<u64>) {
    // A panicking callback must not kill the writer thread.
    let _ = catch_unwind(AssertUnwindSafe(move || done(r)));
}

struct Queue {
    pending: Vec<Pending>,
    /// Barrier requests from `sync()` / checkpoints.
    syncs: Vec<Completion>,
    next_seq: u64,
    closing: bool,
    /// Set once, by the first failed write/fsync: the Poisoned error.
    failed: Option<StorageError>,
}

/// A commit-log segment known to the log.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: AtomicStats,
    /// All segments, oldest first; the last one is the active segment.
    pub(crate) segments: Mutex<Vec<SegmentInfo>>,
    /// Serialises checkpoints; holds the last checkpoint's covered seq.
    pub(crate) checkpoint: Mutex<u64>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) dir: PathBuf,
    pub(crate) options: LogOptions,
    /// The live fsync policy (starts as `options.fsync`; CONFIG SET changes it).
    policy: std::sync::atomic::AtomicU8,
}

fn policy_code(p: AppendFsync) -> u8 {
    match p {
        AppendFsync::Always => 0,
        AppendFsync::EverySec => 1,
        AppendFsync::No => 2,
    }
}

impl Shared {
    /// The fsync policy in force now.
    pub(crate) fn policy(&self) -> AppendFsync {
        match self.policy.load(Ordering::Acquire) {
            0 => AppendFsync::Always,
            1 => AppendFsync::EverySec,
            _ => AppendFsync::No,
        }
    }

    /// Put the log in the failed state (first error wins) and return the
    /// Poisoned error.
    pub(crate) fn poison(&self, err: StorageError) -> StorageError {
        let mut q = self.queue.lock();
        q.failed.get_or_insert(err.into_poisoned()).clone()
    }
}

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn BackendFile>,
    pub(crate) len: u64,
}

/// What recovery hands to [`CommitLog::start`].
pub(crate) struct StartState {
    pub(crate) active: ActiveSegment,
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) next_seq: u64,
    pub(crate) checkpoint_seq: u64,
}

/// The commit log: one ordered, CRC-framed, segmented log of opaque
/// payloads, each with a `u64` sequence number (1, 2, 3, ...). Open it with
/// [`crate::Recovery::open`] (or [`CommitLog::open`]); share it between
/// threads with `Arc<CommitLog>`. Dropping it closes it (see
/// [`CommitLog::close`]).
pub struct CommitLog {
    pub(crate) shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog")
            .field("dir", &self.shared.dir)
            .field("fsync", &self.shared.options.fsync)
            .finish_non_exhaustive()
    }
}

/// Handle returned by [`CommitLog::append`]: the record's sequence number
/// now, its outcome later.
#[derive(Debug)]
pub struct AppendHandle {
    seq: u64,
    slot: Arc<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    result: Mutex<Option<Result<u64>>>,
    cv: Condvar,
}

impl Slot {
    fn completion(self: &Arc<Self>) -> Completion {
        let slot = Arc::clone(self);
        Box::new(move |r| {
            *slot.result.lock() = Some(r);
            slot.cv.notify_all();
        })
    }
}

impl AppendHandle {
    /// The sequence number assigned to the record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Block until the record is durable per the policy; `Ok(seq)` or the
    /// error. Do not call from an async task (use
    /// [`CommitLog::append_with`] there).
    pub fn wait(self) -> Result<u64> {
        let mut r = self.slot.result.lock();
        loop {
            if let Some(res) = r.clone() {
                return res;
            }
            self.slot.cv.wait(&mut r);
        }
    }

    /// Like [`AppendHandle::wait`] but gives up after `timeout`
    /// (`None` = not completed yet).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<u64>> {
        let deadline = Instant::now() + timeout;
        let mut r = self.slot.result.lock();
        loop {
            if let Some(res) = r.clone() {
                return Some(res);
            }
            if self.slot.cv.wait_until(&mut r, deadline).timed_out() {
                return r.clone();
            }
        }
    }

    /// The outcome if it is already known, without blocking.
    pub fn try_result(&self) -> Option<Result<u64>> {
        self.slot.result.lock().clone()
    }
}

impl CommitLog {
    /// Start the writer thread over a recovered log (called by
    /// `Recovery::finish`).
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        dir: PathBuf,
        options: LogOptions,
        st: StartState,
    ) -> Result<CommitLog> {
        let last = st.next_seq.saturating_sub(1);
        let shared = Arc::new(Shared {
            policy: std::sync::atomic::AtomicU8::new(policy_code(options.fsync)),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                syncs: Vec::new(),
                next_seq: st.next_seq,
                closing: false,
                failed: None,
            }),
            wake: Condvar::new(),
            stats: AtomicStats {
                written_seq: AtomicU64::new(last),
                durable_seq: AtomicU64::new(last),
                ..AtomicStats::default()
            },
            segments: Mutex::new(st.segments),
            checkpoint: Mutex::new(st.checkpoint_seq),
            backend,
            dir,
            options,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            active: st.active,
            written_seq: last,
            synced_seq: last,
            last_sync_at: shared.options.clock.now(),
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("ferrite-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StorageError::io("spawn writer thread", &shared.dir, e))?;
        Ok(CommitLog {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Open (recovering if needed) and replay in one call: `on_checkpoint`
    /// gets the last checkpoint if there is one, then `on_record` every
    /// record after it, in order. An error from either callback aborts the
    /// open and is returned. See [`crate::Recovery`] for the streaming form.
    pub fn open(
        backend: Arc<dyn Backend>,
        dir: impl Into<PathBuf>,
        options: LogOptions,
        mut on_checkpoint: impl FnMut(&crate::Checkpoint) -> Result<()>,
        mut on_record: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(CommitLog, crate::RecoveryReport)> {
        let mut rec = crate::Recovery::open(backend, dir, options)?;
        if let Some(cp) = rec.checkpoint() {
            on_checkpoint(cp)?;
        }
        while let Some(r) = rec.next_record()? {
            on_record(r.seq, &r.payload)?;
        }
        rec.finish()
    }

    /// Enqueue `payload`; `on_done` is called later, on the writer thread,
    /// with `Ok(seq)` once the record is as durable as the policy promises
    /// (or with the error that prevented it). Returns the assigned sequence
    /// number at once. If the log is poisoned or closed, or the payload is
    /// too large, returns the error immediately and drops `on_done` without
    /// calling it. Never blocks on I/O: safe to call from an async task.
    pub fn append_with(&self, payload: Vec<u8>, on_done: Completion) -> Result<u64> {
        let mut q = self.shared.queue.lock();
        let seq = self.admit(&q, payload.len())?;
        q.next_seq += 1;
        q.pending.push(Pending {
            seq,
            payload,
            done: Some(on_done),
        });
        drop(q);
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// Enqueue `payload` and return a handle with the sequence number and a
    /// blocking [`AppendHandle::wait`]. Errors as for
    /// [`CommitLog::append_with`].
    pub fn append(&self, payload: Vec<u8>) -> Result<AppendHandle> {
        let slot = Arc::new(Slot::default());
        let seq = self.append_with(payload, slot.completion())?;
        Ok(AppendHandle { seq, slot })
    }

    /// Synchronous helper (tests, tools): append all payloads as one
    /// contiguous run of sequence numbers and wait for all of them. Returns
    /// their sequence numbers, or the first error.
    pub fn append_batch<I>(&self, payloads: I) -> Result<Vec<u64>>
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        let payloads: Vec<Vec<u8>> = payloads.into_iter().collect();
        let mut slots = Vec::with_capacity(payloads.len());
        {
            let mut q = self.shared.queue.lock();
            for p in &payloads {
                self.admit(&q, p.len())?;
            }
            for payload in payloads {
                let slot = Arc::new(Slot::default());
                let seq = q.next_seq;
                q.next_seq += 1;
                q.pending.push(Pending {
                    seq,
                    payload,
                    done: Some(slot.completion()),
                });
                slots.push(AppendHandle { seq, slot });
            }
        }
        self.shared.wake.notify_one();
        slots.into_iter().map(AppendHandle::wait).collect()
    }

    /// Check that an append may be queued; returns the seq it would get.
    fn admit(&self, q: &MutexGuard<'_, Queue>, len: usize) -> Result<u64> {
        if let Some(e) = &q.failed {
            return Err(e.clone());
        }
        if q.closing {
            return Err(StorageError::Closed);
        }
        let max = self.shared.options.max_record_bytes;
        if len > max {
            return Err(StorageError::RecordTooLarge { len, max });
        }
        Ok(q.next_seq)
    }

    /// Barrier: wait until every record appended before this call is
    /// fsynced, whatever the policy. Returns the durable sequence number.
    /// Blocks the calling thread (use from a blocking context).
    pub fn sync(&self) -> Result<u64> {
        let slot = Arc::new(Slot::default());
        {
            let mut q = self.shared.queue.lock();
            if let Some(e) = &q.failed {
                return Err(e.clone());
            }
            if q.closing {
                return Err(StorageError::Closed);
            }
            q.syncs.push(slot.completion());
        }
        self.shared.wake.notify_one();
        AppendHandle { seq: 0, slot }.wait()
    }

    /// Stop accepting appends, write and fsync everything already queued,
    /// and join the writer thread. Idempotent. Returns the poison error if
    /// the log failed at any point (so a clean `Ok` means everything
    /// acknowledged is durable). Called from a completion callback it only
    /// stops the log (it cannot wait for the thread it runs on).
    pub fn close(&self) -> Result<()> {
        {
            let mut q = self.shared.queue.lock();
            q.closing = true;
        }
        self.shared.wake.notify_all();
        let mut writer = self.writer.lock();
        // Called from a completion (i.e. on the writer thread itself)?
        // Then joining would deadlock: leave the handle; the writer exits
        // on its own once the queue is drained.
        let on_writer = writer
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id());
        if !on_writer {
            if let Some(h) = writer.take() {
                let _ = h.join();
            }
        }
        drop(writer);
        match &self.shared.queue.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Change the fsync policy from the next batch on (`CONFIG SET appendfsync`).
    /// Switching to `always` makes later completions wait for an fsync that
    /// also covers everything written before.
    pub fn set_fsync(&self, policy: AppendFsync) {
        self.shared
            .policy
            .store(policy_code(policy), Ordering::Release);
        self.shared.wake.notify_all();
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> AppendFsync {
        self.shared.policy()
    }

    /// The poison error, if a write or fsync has failed.
    pub fn failure(&self) -> Option<StorageError> {
        self.shared.queue.lock().failed.clone()
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.queue.lock().next_seq
    }

    /// Highest sequence number known durable.
    pub fn durable_seq(&self) -> u64 {
        self.shared.stats.durable_seq.load(Ordering::Acquire)
    }

    /// The sequence number covered by the last checkpoint (0 = none).
    pub fn checkpoint_seq(&self) -> u64 {
        *self.shared.checkpoint.lock()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.shared.options
    }

    /// Counters (fsyncs, batches, bytes, ...).
    pub fn stats(&self) -> LogStats {
        let s = &self.shared.stats;
        LogStats {
            next_seq: self.next_seq(),
            written_seq: s.written_seq.load(Ordering::Acquire),
            durable_seq: s.durable_seq.load(Ordering::Acquire),
            records: s.records.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_nanos_total: s.fsync_nanos_total.load(Ordering::Relaxed),
            fsync_nanos_max: s.fsync_nanos_max.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            segments: self.shared.segments.lock().len() as u64,
        }
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// State owned by the writer thread.
struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    written_seq: u64,
    synced_seq: u64,
    /// Clock time at which the last fsync started.
    last_sync_at: Duration,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let interval = shared.options.everysec_interval;
        let mut q = shared.queue.lock();
        loop {
            if q.pending.is_empty() && q.syncs.is_empty() {
                if q.closing {
                    break;
                }
                let dirty = self.written_seq > self.synced_seq;
                if shared.policy() == AppendFsync::EverySec && dirty && q.failed.is_none() {
                    // Idle but not yet synced: fsync when the interval is up.
                    let now = shared.options.clock.now();
                    let due = self.last_sync_at + interval;
                    if now >= due {
                        if let Err(e) = MutexGuard::unlocked(&mut q, || self.fsync()) {
                            q.failed.get_or_insert(e.into_poisoned());
                        }
                    } else {
                        shared.wake.wait_for(&mut q, (due - now).min(interval));
                    }
                } else {
                    shared.wake.wait(&mut q);
                }
                continue;
            }
            let batch = std::mem::take(&mut q.pending);
            let syncs = std::mem::take(&mut q.syncs);
            let failed = q.failed.clone();
            MutexGuard::unlocked(&mut q, || self.process(batch, syncs, failed));
        }
        // Closing: everything queued has been processed. Make it durable.
        let failed = q.failed.is_some();
        drop(q);
        if !failed && self.written_seq > self.synced_seq {
            if let Err(e) = self.fsync() {
                shared.poison(e);
            }
        }
    }

    fn process(
        &mut self,
        batch: Vec<Pending>,
        syncs: Vec<Completion>,
        failed: Option<StorageError>,
    ) {
        if let Some(err) = failed {
            fail_all(batch, syncs, &err);
            return;
        }
        let policy = self.shared.policy();
        if !batch.is_empty() {
            if let Err(e) = self.write_batch(&batch) {
                let poisoned = self.shared.poison(e.clone());
                for p in batch {
                    p.complete(Err(e.clone()));
                }
                fail_all(Vec::new(), syncs, &poisoned);
                return;
            }
            match policy {
                AppendFsync::Always => {
                    if let Err(e) = self.fsync() {
                        let poisoned = self.shared.poison(e.clone());
                        for p in batch {
                            p.complete(Err(e.clone()));
                        }
                        fail_all(Vec::new(), syncs, &poisoned);
                        return;
                    }
                    complete_ok(batch);
                }
                AppendFsync::EverySec => {
                    complete_ok(batch);
                    let now = self.shared.options.clock.now();
                    if now >= self.last_sync_at + self.shared.options.everysec_interval {
                        if let Err(e) = self.fsync() {
                            let poisoned = self.shared.poison(e);
                            fail_all(Vec::new(), syncs, &poisoned);
                            return;
                        }
                    }
                }
                AppendFsync::No => complete_ok(batch),
            }
        }
        if !syncs.is_empty() {
            let r = if self.written_seq > self.synced_seq {
                self.fsync().map_err(|e| self.shared.poison(e))
            } else {
                Ok(())
            };
            for s in syncs {
                call(s, r.clone().map(|()| self.synced_seq));
            }
        }
    }

    /// Encode and write a batch, rolling segments as needed.
    fn write_batch(&mut self, batch: &[Pending]) -> Result<()> {
        let max = self.shared.options.segment_max_bytes;
        self.buf.clear();
        let mut buf_last_seq = self.written_seq;
        for p in batch {
            let flen = log_record_len(p.payload.len());
            let used = self.active.len + self.buf.len() as u64;
            if used > 0 && used + flen > max {
                self.flush(buf_last_seq)?;
                self.roll(p.seq)?;
            }
            encode_log_record(p.seq, &p.payload, &mut self.buf);
            buf_last_seq = p.seq;
        }
        self.flush(buf_last_seq)
    }

    /// Write the encoded buffer at the end of the active segment.
    fn flush(&mut self, last_seq: u64) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active
            .file
            .write_at(self.active.len, &self.buf)
            .map_err(|e| StorageError::io("write", &self.active.path, e))?;
        let n = self.buf.len() as u64;
        self.active.len += n;
        let records = last_seq - self.written_seq;
        self.written_seq = last_seq;
        self.buf.clear();
        let s = &self.shared.stats;
        s.written_seq.store(last_seq, Ordering::Release);
        s.records.fetch_add(records, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.bytes_written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Seal the active segment and start a new one whose first record is
    /// `base`.
    fn roll(&mut self, base: u64) -> Result<()> {
        // IMPORTANT: seal the old segment durably *before* the next one
        // exists. Recovery relies on it: only the last segment can ever
        // have a torn tail, so a bad record in an earlier one is real
        // corruption, never a crash artifact. (Done under every policy,
        // including `no`: one fsync per segment, not per record.)
        self.fsync()?;
        let path = self.shared.dir.join(segment_file_name(base));
        let file = self
            .shared
            .backend
            .open_file(&path, OpenMode::CreateNew)
            .map_err(|e| StorageError::io("create segment", &path, e))?;
        // IMPORTANT: fsync the directory so the new segment's entry is
        // durable before any record in it can be acknowledged as durable
        // (fdatasync of the file does not persist its directory entry).
        self.shared
            .backend
            .sync_dir(&self.shared.dir)
            .map_err(|e| StorageError::io("fsync dir", &self.shared.dir, e))?;
        self.shared.segments.lock().push(SegmentInfo {
            base,
            path: path.clone(),
        });
        self.active = ActiveSegment { path, file, len: 0 };
        Ok(())
    }

    /// `fdatasync` the active segment; never retried on failure.
    fn fsync(&mut self) -> Result<()> {
        self.last_sync_at = self.shared.options.clock.now();
        let target = self.written_seq;
        let t = Instant::now();
        let r = self.active.file.sync_data();
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let s = &self.shared.stats;
        s.fsyncs.fetch_add(1, Ordering::Relaxed);
        s.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        s.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        r.map_err(|e| StorageError::io("fsync", &self.active.path, e))?;
        self.synced_seq = target;
        s.durable_seq.store(target, Ordering::Release);
        Ok(())
    }
}

fn complete_ok(batch: Vec<Pending>) {
    for p in batch {
        let seq = p.seq;
        p.complete(Ok(seq));
    }
}

fn fail_all(batch: Vec<Pending>, syncs: Vec<Completion>, err: &StorageError) {
    for p in batch {
        p.complete(Err(err.clone()));
    }
    for s in syncs {
        call(s, Err(err.clone()));
    }
}
