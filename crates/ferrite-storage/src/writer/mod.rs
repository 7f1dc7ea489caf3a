//! The commit log's write path: [`CommitLog`], its single writer thread and
//! group commit.
//!
//! Producers (any number of threads) call [`CommitLog::append_with`],
//! [`CommitLog::append`], [`CommitLog::append_batch`] or
//! [`CommitLog::append_deferred`]. Each call takes the queue lock just long
//! enough to assign the next sequence number and encode the record's frame
//! into the queue's buffer, then returns; it never does I/O. One writer
//! thread (`std::thread`) loops:
//!
//! 1. take **everything** queued (one batch, any number of producers: the
//!    buffer of encoded frames is swapped with an empty one);
//! 2. `pwrite` the frames (rolling to a new segment file when the current
//!    one is full);
//! 3. depending on [`AppendFsync`]: `Always` -> `fdatasync`, then fire the
//!    completions; `EverySec` -> tell the fsync thread what was written (and
//!    ask it for an `fdatasync` if the last one is at least an interval
//!    old), then fire the completions; `No` -> fire the completions.
//!
//! While the writer is inside `fdatasync`, new appends pile up in the queue
//! and all go into the next batch, so under `Always` N concurrent producers
//! share one fsync instead of paying N of them (group commit).
//!
//! Under `EverySec` the periodic `fdatasync` runs on a second thread, the
//! **fsync thread** (Redis's bio), so appends and the completions waiting
//! for their `pwrite` never stall behind it. Every `fdatasync` of a segment
//! file, from either thread, goes through `Shared::fsync_through`: one at a
//! time, never after a failure, and the segment roll still seals the old
//! segment on the writer thread before the next one exists.
//!
//! Failure handling: the first failed write or fsync **poisons** the log.
//! The records of the failing batch complete with that error (e.g.
//! [`StorageError::NoSpace`]), everything queued behind it and every later
//! append fails with [`StorageError::Poisoned`] (a failed background fsync
//! has no batch of its own: every batch not yet completed fails). A failed
//! fsync is never retried: after an fsync error Linux may already have
//! dropped the dirty pages, so a retry could "succeed" with the data gone
//! (docs/storage.md).
//!
//! Completions run **on the writer thread**: keep them short and
//! non-blocking (send on a channel, wake a task). A panic in one is caught
//! and ignored. From async code, pass a callback that completes a
//! `tokio::sync::oneshot` — the tokio worker never blocks.
//!
//! The cheap path for a server (`append_deferred`, `kick`, `when_acked`):
//! no completion per record and no wake-up per record. Records are queued
//! with the writer left asleep; whoever is about to wait kicks it once, and
//! waits once for the last record it cares about (completions come in
//! sequence order, so that covers the records before it).
//!
//! The cheapest path (`append_deferred_with`, docs/storage.md §3.6): while
//! the queue is empty the writer **lends** the appenders a writable shared
//! mapping of the active segment's preallocated zeros (the window), and an
//! append copies its frame into it under the queue lock: the record is in
//! the page cache at once, with no system call and no hand-off. Under
//! `everysec`/`no` that is all the policy promises (a kill -9 cannot lose
//! it), so the appender acknowledges it itself; under `always` the writer
//! still fsyncs and acknowledges it. A record that does not fit, or any
//! record queued the other ways, goes to the queue; the writer takes the
//! window back before it writes the queue (so file order stays sequence
//! order) and lends it again, remapped if needed, once the queue is empty.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::backend::{Backend, BackendFile, FileMap, OpenMode};
use crate::config::{AppendFsync, LogOptions};
use crate::error::{Result, StorageError};
use crate::frame::{encode_log_record, encode_log_record_with};
use crate::segment::segment_file_name;

mod acks;
mod queue;
mod thread;

use acks::{Acks, Waiter};
use queue::{call, push_pending, push_record, Pending, Put, Queue, Window};
use thread::{run_fsync_thread, stop_fsync_thread, Writer};

/// The largest record payload the commit log's frame format can hold
/// (a `u32` body length, less the sequence number): what
/// `LogOptions::max_record_bytes` may be raised to.
pub const MAX_RECORD_LEN: usize = crate::frame::MAX_BODY_LEN - crate::frame::LOG_BODY_MIN;

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
    /// Of `records`, those appenders copied into the mapped window
    /// themselves (docs/storage.md §3.6).
    pub mapped_records: u64,
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
    mapped_records: AtomicU64,
}

/// A commit-log segment known to the log.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
}

/// A value alone on its cache lines (128 bytes: a line and the adjacent
/// one some CPUs prefetch with it). The writer thread writes some atomics
/// of [`Shared`] all the time (its spin, its counters) and the appending
/// threads others: sharing a line would make every append and every
/// per-command `failure()` check a cache miss.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Shared {
    queue: Padded<Mutex<Queue>>,
    wake: Condvar,
    /// Set by [`CommitLog::append_deferred`] when it left the writer asleep;
    /// [`CommitLog::kick`] clears it and wakes the writer.
    unkicked: Padded<AtomicBool>,
    /// Set by a `kick` that had deferred records to announce; what an idle
    /// writer watches for while it spins.
    kicked: Padded<AtomicBool>,
    /// True once `Queue::failed` is set (set under the queue lock, read
    /// without it by the fsync paths and before completions fire).
    poisoned: Padded<AtomicBool>,

    stats: Padded<AtomicStats>,
    /// Held for the whole of every `fdatasync` of a segment file, by
    /// whichever thread runs it (see [`Shared::fsync_through`]).
    fsync_gate: Mutex<()>,
    /// What the fsync thread may sync, and its requests.
    bg: Mutex<Background>,
    /// Wakes the fsync thread, and `wait_everysec_fsync` callers.
    bg_wake: Condvar,
    /// Every record up to this one has completed `Ok` (completions fire in
    /// sequence order).
    acked_seq: Padded<AtomicU64>,
    /// Callbacks waiting for `acked_seq`, and how the log failed.
    acks: Padded<Mutex<Acks>>,
    /// `acks.waiting` may be non-empty (set under its lock), so the writer
    /// takes that lock only when somebody waits.
    has_ack_waiters: Padded<AtomicBool>,
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
        let e = q.failed.get_or_insert(err.into_poisoned()).clone();
        self.poisoned.store(true, Ordering::Release);
        drop(q);
        // The writer takes the window back (nothing may be copied into a
        // failed log's segment).
        self.wake.notify_all();
        e
    }

    /// The Poisoned error (call only once `poisoned` is set).
    fn poison_error(&self) -> StorageError {
        self.queue
            .lock()
            .failed
            .clone()
            .unwrap_or(StorageError::Closed)
    }

    /// `fdatasync` `file` so that every record up to `seq` is durable: the
    /// caller guarantees that each of them was written to `file` (its
    /// `pwrite` returned) or lies in an earlier, sealed segment. Called by
    /// the writer thread (`always`, roll, `sync()`, close) and by the fsync
    /// thread (`everysec`).
    ///
    /// IMPORTANT: one fsync at a time, under `fsync_gate`, and none once the
    /// log is poisoned: a failed fsync poisons the log *before* the gate is
    /// released, so no thread ever fsyncs again after a failure (after a
    /// failed fsync the kernel may have dropped the dirty pages, and a
    /// second fsync would "succeed" with the data gone; docs/storage.md
    /// §5.2). On failure the log is poisoned and the I/O error returned.
    fn fsync_through(&self, file: &Arc<dyn BackendFile>, path: &Path, seq: u64) -> Result<()> {
        self.fsync_gated(file, path, seq, false)
    }

    /// [`Shared::fsync_through`], but fsync even if `seq` is durable
    /// already (after a truncation, whose new length must be).
    fn sync_now(&self, file: &Arc<dyn BackendFile>, path: &Path, seq: u64) -> Result<()> {
        self.fsync_gated(file, path, seq, true)
    }

    /// Wake the `when_acked`/`poll_acked` waiters of records up to `last`
    /// (every one of which completed `Ok`, and `acked_seq` says so).
    /// `ready` is an empty buffer to use.
    fn wake_acked(&self, last: u64, ready: &mut Vec<(u64, Waiter)>) {
        // IMPORTANT: SeqCst, paired with `CommitLog::decided_or_wait`: the
        // `acked_seq` update came before this load.
        if !self.has_ack_waiters.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut acks = self.acks.lock();
            let mut i = 0;
            while i < acks.waiting.len() {
                if acks.waiting[i].0 <= last {
                    ready.push(acks.waiting.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if acks.waiting.is_empty() {
                self.has_ack_waiters.store(false, Ordering::SeqCst);
            }
        }
        for (seq, w) in ready.drain(..) {
            w.done(Ok(seq));
        }
    }

    /// Under `everysec`, data was just written: ask the fsync thread for
    /// an fsync if one is due (so that it runs before the records'
    /// replies, which `wait_everysec_fsync` relies on), or wake it if it
    /// sleeps without a deadline. `bg` is the locked `Shared::bg`.
    fn request_sync(&self, bg: &mut Background) {
        let now = self.options.clock.now();
        if !bg.requested && now >= bg.last_sync_at + self.options.everysec_interval {
            bg.requested = true;
        } else if !bg.parked {
            return;
        }
        // Data is dirty now: the fsync thread runs the fsync, or arms its
        // timer.
        bg.parked = false;
        self.bg_wake.notify_all();
    }

    fn fsync_gated(
        &self,
        file: &Arc<dyn BackendFile>,
        path: &Path,
        seq: u64,
        force: bool,
    ) -> Result<()> {
        let _gate = self.fsync_gate.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        if !force && self.stats.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        self.bg.lock().last_sync_at = self.options.clock.now();
        let t = Instant::now();
        let r = file.sync_data();
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let s = &self.stats;
        s.fsyncs.fetch_add(1, Ordering::Relaxed);
        s.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        s.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        match r {
            Ok(()) => {
                s.durable_seq.fetch_max(seq, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                let err = StorageError::io("fsync", path, e);
                self.poison(err.clone());
                Err(err)
            }
        }
    }
}

/// The newest segment written to: what an `everysec` fsync makes durable.
/// Every record up to `stats.written_seq` is in it or in a sealed segment
/// when both are read under `Shared::bg` (the writer changes the target,
/// under that lock, before any record goes to the new segment).
#[derive(Clone)]
struct SyncTarget {
    file: Arc<dyn BackendFile>,
    path: PathBuf,
}

/// State shared by the writer and the fsync thread (under `Shared::bg`).
struct Background {
    target: SyncTarget,
    /// Clock time at which the last fsync (by any thread) started.
    last_sync_at: Duration,
    /// An `everysec` fsync is due: the fsync thread runs it next.
    requested: bool,
    /// The fsync thread is inside `fsync_through`.
    running: bool,
    /// The fsync thread sleeps without a deadline (nothing to sync): the
    /// writer wakes it when it makes data dirty under `everysec`.
    parked: bool,
    stop: bool,
}

/// Records per deferred queue that wake the writer even without a kick.
const DEFER_MAX_RECORDS: usize = 128;
/// Payload bytes per deferred queue that wake the writer even without a kick.
const DEFER_MAX_BYTES: usize = 1 << 20;

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn BackendFile>,
    /// End of the last record written.
    pub(crate) len: u64,
    /// End of the file: `len..alloc` is zeros written ahead
    /// (`LogOptions::preallocate_bytes`).
    alloc: u64,
    /// Preallocation failed in this segment: append without it.
    no_prealloc: bool,
    /// Records before this offset were handed to the kernel's write-back
    /// (`BackendFile::start_writeback`) as the appenders passed them.
    pub(crate) wb_from: u64,
}

impl ActiveSegment {
    /// A segment whose file ends right after its last record.
    pub(crate) fn new(path: PathBuf, file: Arc<dyn BackendFile>, len: u64) -> Self {
        ActiveSegment {
            path,
            file,
            len,
            alloc: len,
            no_prealloc: false,
            wb_from: len,
        }
    }
}

/// Zeros for preallocation, written this much at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

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
        let now = options.clock.now();
        let shared = Arc::new(Shared {
            policy: std::sync::atomic::AtomicU8::new(policy_code(options.fsync)),
            queue: Padded(Mutex::new(Queue {
                pending: Vec::new(),
                frames: Vec::new(),
                syncs: Vec::new(),
                next_seq: st.next_seq,
                closing: false,
                failed: None,
                window: None,
            })),
            wake: Condvar::new(),
            unkicked: Padded(AtomicBool::new(false)),
            kicked: Padded(AtomicBool::new(false)),
            poisoned: Padded(AtomicBool::new(false)),
            fsync_gate: Mutex::new(()),
            bg: Mutex::new(Background {
                target: SyncTarget {
                    file: Arc::clone(&st.active.file),
                    path: st.active.path.clone(),
                },
                last_sync_at: now,
                requested: false,
                running: false,
                parked: false,
                stop: false,
            }),
            bg_wake: Condvar::new(),
            acked_seq: Padded(AtomicU64::new(last)),
            acks: Padded(Mutex::new(Acks::default())),
            has_ack_waiters: Padded(AtomicBool::new(false)),
            stats: Padded(AtomicStats {
                written_seq: AtomicU64::new(last),
                durable_seq: AtomicU64::new(last),
                ..AtomicStats::default()
            }),
            segments: Mutex::new(st.segments),
            checkpoint: Mutex::new(st.checkpoint_seq),
            backend,
            dir,
            options,
        });
        let s2 = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("ferrite-log-fsync".into())
            .spawn(move || run_fsync_thread(&s2))
            .map_err(|e| StorageError::io("spawn fsync thread", &shared.dir, e))?;
        let no_map = !(shared.options.mapped_writes
            && shared.options.preallocate_bytes > 0
            && shared.backend.maps_files(&shared.dir));
        let writer = Writer::new(Arc::clone(&shared), st.active, last, no_map, syncer);
        let handle = match std::thread::Builder::new()
            .name("ferrite-log-writer".into())
            .spawn(move || writer.run())
        {
            Ok(h) => h,
            Err(e) => {
                // The writer (and with it the fsync thread's handle) was
                // dropped: stop the fsync thread.
                stop_fsync_thread(&shared, None);
                return Err(StorageError::io("spawn writer thread", &shared.dir, e));
            }
        };
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
        self.enqueue(payload, Some(on_done), true)
    }

    /// Enqueue `payload` without a completion of its own and without
    /// waking the writer; returns the sequence number. The record is written
    /// once somebody calls [`CommitLog::kick`] (or `append_with`, `sync`,
    /// `close`), or once 128 records or 1 MiB are queued; its outcome is
    /// known through [`CommitLog::acked_seq`], [`CommitLog::when_acked`] and
    /// [`CommitLog::outcome`]. A caller about to wait for it must call
    /// `kick` first.
    ///
    /// This is the cheap path for a server: it appends the records of every
    /// client it served in one round and wakes the writer once (as Redis
    /// writes its AOF buffer once per event-loop turn), and waits once per
    /// group of replies instead of once per record. Errors as for
    /// [`CommitLog::append_with`].
    pub fn append_deferred(&self, payload: Vec<u8>) -> Result<u64> {
        self.enqueue(payload, None, false)
    }

    /// [`CommitLog::append_deferred`] with the payload written by `encode`
    /// straight into the queue's frame buffer (under the queue lock: keep
    /// it to copying bytes): no payload buffer is allocated, copied and
    /// freed per record. A payload over `max_record_bytes` is taken back
    /// out and refused with [`StorageError::RecordTooLarge`].
    ///
    /// If the writer has lent the window (module doc) and the frame fits,
    /// it is copied into the mapped segment right here: under
    /// `everysec`/`no` the record is then acknowledged before this returns
    /// (no `kick` needed), under `always` it still waits for the writer's
    /// fsync.
    pub fn append_deferred_with(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u64> {
        let mut q = self.shared.queue.lock();
        let seq = self.admit(&q, 0)?;
        let before = q.frames.len();
        let len = encode_log_record_with(seq, &mut q.frames, encode);
        let max = self.shared.options.max_record_bytes;
        if len > max {
            q.frames.truncate(before);
            return Err(StorageError::RecordTooLarge { len, max });
        }
        q.next_seq += 1;
        // NOTE: not under `always`: its fsync per batch would write-protect
        // the mapped pages each time (a TLB shootdown, then a fault per
        // page on the next copies), which cost more than the `pwrite` the
        // copy saves (docs/storage.md §3.6).
        if q.pending.is_empty() && self.shared.policy() != AppendFsync::Always {
            let Queue { window, frames, .. } = &mut *q;
            if let Some(w) = window {
                let put = w.put(seq, &frames[before..]);
                if put != Put::Full {
                    frames.truncate(before);
                    self.copied(q, seq, put == Put::CopiedLow);
                    return Ok(seq);
                }
            }
        }
        push_pending(&mut q, seq, before, None);
        self.announce(q, false);
        Ok(seq)
    }

    /// Record `seq` was just copied into the window (queue lock held): it
    /// is in the page cache. Under `everysec`/`no` that is
    /// what the policy promises, so it is acknowledged now; under `always`
    /// the writer fsyncs it after the next `kick`.
    ///
    /// Kept to one locked instruction (the `acked_seq` store): the record
    /// and byte counters are taken in from the window by the writer and by
    /// [`CommitLog::stats`], and the fsync thread looks at `written_seq`
    /// on its own timer.
    fn copied(&self, q: MutexGuard<'_, Queue>, seq: u64, low: bool) {
        let sh = &self.shared;
        sh.stats.written_seq.store(seq, Ordering::Release);
        if sh.policy() == AppendFsync::Always {
            // Switched to `always` since the caller looked: the writer
            // fsyncs it after the next `kick`.
            self.announce(q, low);
            return;
        }
        // A store, not `fetch_max`: under the queue lock, `seq` is the
        // newest record, and every record before it is acknowledged or in
        // the page cache too (the window is lent only once the writer has
        // completed everything queued before it). SeqCst: see
        // `Shared::wake_acked`.
        sh.acked_seq.store(seq, Ordering::SeqCst);
        drop(q);
        if low {
            sh.kicked.store(true, Ordering::Release);
            sh.wake.notify_one();
        }
        sh.wake_acked(seq, &mut Vec::new());
    }

    /// Wake the writer for records queued by [`CommitLog::append_deferred`].
    /// Cheap when there is nothing to do (one atomic swap).
    pub fn kick(&self) {
        if self.shared.unkicked.swap(false, Ordering::AcqRel) {
            self.shared.kicked.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
    }

    fn enqueue(&self, payload: Vec<u8>, done: Option<Completion>, wake: bool) -> Result<u64> {
        let mut q = self.shared.queue.lock();
        let seq = self.admit(&q, payload.len())?;
        push_record(&mut q, &payload, done);
        self.announce(q, wake);
        Ok(seq)
    }

    /// After queueing a record: wake the writer (if `wake`, or if the queue
    /// is full), or leave it asleep for a later `kick`.
    fn announce(&self, q: MutexGuard<'_, Queue>, wake: bool) {
        let wake =
            wake || q.pending.len() >= DEFER_MAX_RECORDS || q.frames.len() >= DEFER_MAX_BYTES;
        if !wake && !self.shared.unkicked.load(Ordering::Relaxed) {
            self.shared.unkicked.store(true, Ordering::Release);
        }
        drop(q);
        if wake {
            self.shared.kicked.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
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
                let seq = push_record(&mut q, &payload, Some(slot.completion()));
                slots.push(AppendHandle { seq, slot });
            }
        }
        self.shared.wake.notify_one();
        slots.into_iter().map(AppendHandle::wait).collect()
    }

    /// Every record up to this sequence number has completed `Ok`: it is as
    /// durable as the policy promises (written, or fsynced under `always`).
    pub fn acked_seq(&self) -> u64 {
        self.shared.acked_seq.load(Ordering::Acquire)
    }

    /// The outcome of appended record `seq` if it is decided: `Ok(seq)`
    /// once it (and every record before it) completed `Ok`, or the error it
    /// completed with; `None` while it is queued or being written.
    pub fn outcome(&self, seq: u64) -> Option<Result<u64>> {
        let acked = self.acked_seq();
        if seq <= acked {
            return Some(Ok(seq));
        }
        self.shared.acks.lock().outcome(seq, acked)
    }

    /// Call `on_done` once record `seq` (which must have been appended) is
    /// decided, with what [`CommitLog::outcome`] would return: on the thread
    /// that decides it (the writer, or an appender whose copy into the
    /// window acknowledged it, §3.6), or at once on the calling thread if it
    /// already is. The same rules as for completions apply (short, never
    /// blocking). After an `Err`, every later record has failed too.
    pub fn when_acked(&self, seq: u64, on_done: Completion) {
        if let Some((r, w)) = self.decided_or_wait(seq, Waiter::Call(on_done)) {
            w.done(r);
        }
    }

    /// For async callers: the outcome of record `seq` (which must have been
    /// appended) if it is decided, as [`CommitLog::outcome`]; otherwise
    /// `None`, and `waker` is woken once it may be (on the writer thread or
    /// an appending one, or at once if the writer has exited): ask again then. Allocates
    /// nothing and hands nothing to the writer thread but the waker, unlike
    /// a `when_acked` callback. Each `None` registers the waker once more;
    /// a caller that polls only when woken registers it once per wait.
    pub fn poll_acked(&self, seq: u64, waker: &Waker) -> Option<Result<u64>> {
        if seq <= self.shared.acked_seq.load(Ordering::Acquire) {
            return Some(Ok(seq));
        }
        self.decided_or_wait(seq, Waiter::Wake(waker.clone()))
            .map(|(r, _)| r)
    }

    /// The outcome of `seq` and `w` back if it is decided; else `w` waits
    /// in `acks.waiting` (the writer completes it).
    fn decided_or_wait(&self, seq: u64, w: Waiter) -> Option<(Result<u64>, Waiter)> {
        let sh = &self.shared;
        if seq <= sh.acked_seq.load(Ordering::Acquire) {
            return Some((Ok(seq), w));
        }
        let mut acks = sh.acks.lock();
        // IMPORTANT: announce the waiter, then re-read `acked_seq` (SeqCst,
        // paired with `Writer::ack`): either the writer sees the flag and
        // takes this lock, or we see its new `acked_seq`.
        sh.has_ack_waiters.store(true, Ordering::SeqCst);
        let acked = sh.acked_seq.load(Ordering::SeqCst);
        match acks.outcome(seq, acked) {
            Some(r) => {
                if acks.waiting.is_empty() {
                    sh.has_ack_waiters.store(false, Ordering::SeqCst);
                }
                Some((r, w))
            }
            None => {
                acks.waiting.push((seq, w));
                None
            }
        }
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
            // The writer stops the fsync thread when it exits; this covers a
            // writer that died.
            stop_fsync_thread(&self.shared, None);
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
        // The fsync thread re-reads the policy (data written under `no`
        // becomes due under `everysec`).
        let _bg = self.shared.bg.lock();
        self.shared.bg_wake.notify_all();
    }

    /// Wait until no `everysec` fsync is due or running on the fsync thread
    /// (at most `timeout`; false if it passed first). An fsync becomes due
    /// when the writer finishes a batch, before that batch's completions
    /// fire; so after a completion, this waits for the periodic fsync that
    /// batch triggered, if any. For tests and tools that need the `everysec`
    /// schedule to be deterministic.
    pub fn wait_everysec_fsync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut bg = self.shared.bg.lock();
        while bg.requested || bg.running {
            if self
                .shared
                .bg_wake
                .wait_until(&mut bg, deadline)
                .timed_out()
            {
                return !(bg.requested || bg.running);
            }
        }
        true
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> AppendFsync {
        self.shared.policy()
    }

    /// The poison error, if a write or fsync has failed.
    pub fn failure(&self) -> Option<StorageError> {
        if !self.shared.poisoned.load(Ordering::Acquire) {
            // NOTE: cheap for the server's per-command check; `poisoned` is
            // set under the queue lock right after `failed`.
            return None;
        }
        self.shared.queue.lock().failed.clone()
    }

    /// True while the writer has lent the window (appends of
    /// [`CommitLog::append_deferred_with`] are copied into the mapped
    /// segment). For tests that need that path deterministically.
    #[doc(hidden)]
    pub fn window_lent(&self) -> bool {
        self.shared.queue.lock().window.is_some()
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
        let (next_seq, records, bytes) = {
            let q = self.shared.queue.lock();
            // What appenders copied into the window and the writer has not
            // counted yet.
            let (r, b) = q.window.as_ref().map_or((0, 0), |w| {
                (w.last_seq - w.counted_seq, w.tail - w.counted_tail)
            });
            (q.next_seq, r, b)
        };
        LogStats {
            next_seq,
            written_seq: s.written_seq.load(Ordering::Acquire),
            durable_seq: s.durable_seq.load(Ordering::Acquire),
            records: s.records.load(Ordering::Relaxed) + records,
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_nanos_total: s.fsync_nanos_total.load(Ordering::Relaxed),
            fsync_nanos_max: s.fsync_nanos_max.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed) + bytes,
            mapped_records: s.mapped_records.load(Ordering::Relaxed) + records,
            segments: self.shared.segments.lock().len() as u64,
        }
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
