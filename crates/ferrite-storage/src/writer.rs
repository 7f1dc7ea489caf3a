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

/// One queued record; its encoded frame is in `Queue::frames`.
struct Pending {
    seq: u64,
    frame_len: usize,
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
    /// The encoded frames of `pending`, in order. Appends encode here (the
    /// payload's allocation is freed on the appending thread) and the
    /// writer writes it as is.
    frames: Vec<u8>,
    /// Barrier requests from `sync()` / checkpoints.
    syncs: Vec<Completion>,
    next_seq: u64,
    closing: bool,
    /// Set once, by the first failed write/fsync: the Poisoned error.
    failed: Option<StorageError>,
    /// The window the writer lent (see the module doc): only while
    /// `pending` is empty do appenders copy into it.
    window: Option<Window>,
}

/// A writable mapping of the active segment from its last record on: the
/// preallocated zeros that the next records overwrite.
struct Window {
    map: Box<dyn FileMap>,
    /// File offset of the map's first byte.
    base: u64,
    /// File offset of the end of the last record (where the next goes).
    tail: u64,
    /// The last record in the file (copied in, or written before the
    /// window was lent).
    last_seq: u64,
    /// Once `tail` passes this offset, the appender asks the writer to
    /// extend the window (`wants_more`), so that appends need not fall
    /// back to the queue while it preallocates and maps.
    low_at: u64,
    /// Asked, and not yet taken up by the writer.
    wants_more: bool,
    /// What `stats.records` and `stats.bytes_written` count already.
    counted_seq: u64,
    counted_tail: u64,
}

/// What [`Window::put`] did.
#[derive(PartialEq, Eq)]
enum Put {
    /// The frame does not fit: queue it.
    Full,
    Copied,
    /// Copied, and the window runs low: wake the writer to extend it.
    CopiedLow,
}

impl Window {
    fn end(&self) -> u64 {
        self.base + self.map.len() as u64
    }

    /// Copy `frame` (record `seq`) in if it fits.
    fn put(&mut self, seq: u64, frame: &[u8]) -> Put {
        let n = frame.len() as u64;
        if self.tail + n > self.end() {
            return Put::Full;
        }
        let at = (self.tail - self.base) as usize;
        self.map.write(at, frame);
        self.tail += n;
        self.last_seq = seq;
        if self.tail >= self.low_at {
            self.low_at = u64::MAX;
            self.wants_more = true;
            return Put::CopiedLow;
        }
        Put::Copied
    }

    /// Where a window over `base..end` asks for more: half its size, at
    /// most `chunk / 2`, before its end.
    fn low_mark(base: u64, end: u64, chunk: u64) -> u64 {
        end - ((end - base) / 2).min(chunk / 2)
    }
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

/// Waiters of [`CommitLog::when_acked`].
#[derive(Default)]
struct Acks {
    waiting: Vec<(u64, Waiter)>,
    /// The first batch that failed: its first and last seq and the error
    /// its records completed with. Every record after it failed too.
    failed: Option<(u64, u64, StorageError)>,
    /// The writer thread has exited: nothing more completes.
    gone: bool,
}

/// Who waits in [`Acks::waiting`]: a callback ([`CommitLog::when_acked`])
/// or a task ([`CommitLog::poll_acked`]), which is woken and asks again.
enum Waiter {
    Call(Completion),
    Wake(Waker),
}

impl Waiter {
    fn done(self, r: Result<u64>) {
        match self {
            Waiter::Call(done) => call(done, r),
            Waiter::Wake(w) => w.wake(),
        }
    }
}

impl Acks {
    /// The outcome of record `seq` if it is decided (`acked` = every record
    /// up to it completed `Ok`).
    fn outcome(&self, seq: u64, acked: u64) -> Option<Result<u64>> {
        if seq <= acked {
            return Some(Ok(seq));
        }
        match &self.failed {
            Some((first, _, _)) if seq < *first => Some(Ok(seq)),
            Some((_, last, e)) if seq <= *last => Some(Err(e.clone())),
            Some((_, _, e)) => Some(Err(e.clone().into_poisoned())),
            None if self.gone => Some(Err(StorageError::Closed)),
            None => None,
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
        let writer = Writer {
            shared: Arc::clone(&shared),
            active: st.active,
            written_seq: last,
            decided: last,
            map: None,
            lent: false,
            no_map,
            spare_pending: Vec::new(),
            spare_frames: Vec::new(),
            ready: Vec::new(),
            syncer: Some(syncer),
        };
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

/// State owned by the writer thread.
struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    /// The last record in the active segment (or before it), including
    /// those appenders copied into the window as far as the writer has
    /// taken them in (`Writer::absorb`).
    written_seq: u64,
    /// Every record up to this one has completed, `Ok` or not.
    decided: u64,
    /// The mapping to lend, while not lent.
    map: Option<WriterMap>,
    /// The map is in `Queue::window`: the writer must not touch the
    /// active segment's file but to fsync it.
    lent: bool,
    /// Mapped writes are off, or the backend cannot map files.
    no_map: bool,
    /// Empty buffers swapped with the queue's, so their capacity is reused.
    spare_pending: Vec<Pending>,
    spare_frames: Vec<u8>,
    /// `Writer::ack`'s buffer of waiters to wake, kept for its capacity.
    ready: Vec<(u64, Waiter)>,
    /// The fsync thread; stopped and joined when the writer exits.
    syncer: Option<JoinHandle<()>>,
}

/// A mapping of the active segment from `base` on (see [`Window`]).
struct WriterMap {
    map: Box<dyn FileMap>,
    base: u64,
}

/// The writer remaps when the window has less room than this left.
const MAP_MIN_ROOM: u64 = 64 * 1024;
/// No window is lent with less room than this (the segment is nearly full:
/// the next records go through the queue, which rolls it).
const MAP_MIN_LEND: u64 = 512;

/// Before sleeping, an idle writer yields the CPU up to this many times (and
/// for at most `SPIN_MAX`), watching for a `kick`.
const SPIN_YIELDS: u32 = 50;
const SPIN_MAX: Duration = Duration::from_micros(100);

/// A busy server's next records usually come right after the writer went
/// idle (under `everysec`/`no` a batch takes microseconds; under `always`
/// the replies to the last batch just went out, and their clients' next
/// commands follow): noticing the `kick` that announces them while yielding
/// (not the first deferred append: the kick comes once the appender's round
/// is done, so the batch is as large) saves both the writer's sleep and the
/// futex wake-up the `kick` would pay (the most expensive part of a batch on
/// a VM, where a wake-up is an inter-processor interrupt).
fn spin_for_records(shared: &Shared) {
    let start = Instant::now();
    for _ in 0..SPIN_YIELDS {
        std::thread::yield_now();
        // Read-only until it is set: the appenders' cache line stays shared.
        if (shared.kicked.load(Ordering::Relaxed) && shared.kicked.swap(false, Ordering::AcqRel))
            || start.elapsed() >= SPIN_MAX
        {
            return;
        }
    }
}

/// A frames buffer above this capacity is dropped after use rather than
/// kept for the next batch (one huge record must not pin its memory).
const KEEP_FRAMES_CAPACITY: usize = 4 << 20;

impl Writer {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        self.prepare_map();
        let mut q = shared.queue.lock();
        let mut spun = false;
        loop {
            if q.window.as_ref().is_some_and(|w| w.wants_more) {
                self.extend_window(&mut q);
            }
            self.absorb(&mut q);
            if q.failed.is_some() {
                // Unmapped once the log failed: nothing may be copied in.
                self.retire(&mut q);
            }
            self.lend(&mut q);
            // Records copied into the window under `always` wait for the
            // writer's fsync (under `everysec`/`no` their appenders
            // acknowledged them).
            let acked = shared.acked_seq.load(Ordering::Acquire);
            let undecided = self.written_seq > self.decided.max(acked);
            if q.pending.is_empty() && q.syncs.is_empty() && !undecided {
                if q.closing {
                    self.retire(&mut q);
                    break;
                }
                // NOTE: the periodic `everysec` fsync is the fsync thread's
                // job; an idle writer just sleeps, after a short spin.
                if !spun {
                    spun = true;
                    MutexGuard::unlocked(&mut q, || spin_for_records(&shared));
                    continue;
                }
                shared.wake.wait(&mut q);
                continue;
            }
            spun = false;
            if !q.pending.is_empty() {
                // The queued frames go after the records copied into the
                // window: take it back (and the file with it) first.
                self.retire(&mut q);
            }
            let mut batch =
                std::mem::replace(&mut q.pending, std::mem::take(&mut self.spare_pending));
            let mut frames =
                std::mem::replace(&mut q.frames, std::mem::take(&mut self.spare_frames));
            let syncs = std::mem::take(&mut q.syncs);
            let failed = q.failed.clone();
            MutexGuard::unlocked(&mut q, || {
                self.process(&mut batch, &frames, syncs, failed);
                frames.clear();
                if frames.capacity() <= KEEP_FRAMES_CAPACITY {
                    self.spare_frames = frames;
                }
                self.spare_pending = batch;
                self.prepare_map();
            });
        }
        // Closing: everything queued has been processed. Make it durable.
        let failed = q.failed.is_some();
        drop(q);
        if !failed {
            // On failure the log is poisoned (`fsync_through` did it).
            // NOTE: should the trim fail, recovery cuts the zeros instead.
            let _ = self.trim_preallocation();
        }
        stop_fsync_thread(&shared, self.syncer.take());
    }

    /// Write (and under `always` fsync) one batch, then fire its
    /// completions, its `when_acked` waiters and the `sync()` barriers.
    /// Leaves `batch` empty.
    fn process(
        &mut self,
        batch: &mut Vec<Pending>,
        frames: &[u8],
        syncs: Vec<Completion>,
        failed: Option<StorageError>,
    ) {
        // What this round decides: the records copied into the window and
        // not yet acknowledged, then the batch.
        let first = self
            .decided
            .max(self.shared.acked_seq.load(Ordering::Acquire))
            + 1;
        let r = match failed {
            Some(err) => Err(err),
            None => self.write_and_sync(batch, frames),
        };
        let last = batch.last().map_or(0, |p| p.seq).max(self.written_seq);
        let span = (first <= last).then_some((first, last));
        self.decided = self.decided.max(last);
        match r {
            Ok(()) => {
                // `acked_seq` first: whoever sees a completion also sees
                // the record acknowledged in `outcome`.
                if let Some((_, last)) = span {
                    self.shared.acked_seq.fetch_max(last, Ordering::SeqCst);
                }
                for p in batch.drain(..) {
                    let seq = p.seq;
                    p.complete(Ok(seq));
                }
                if let Some((_, last)) = span {
                    self.ack(last);
                }
                if !syncs.is_empty() {
                    let r = self
                        .fsync()
                        .map(|()| self.written_seq)
                        .map_err(|e| self.shared.poison(e));
                    for s in syncs {
                        call(s, r.clone());
                    }
                }
            }
            Err(e) => {
                // The batch's records complete with the error itself (e.g.
                // NoSpace); the barriers, like everything after, with Poisoned.
                let poisoned = self.shared.poison(e.clone());
                if let Some((first, last)) = span {
                    self.ack_failed(first, last, &e);
                }
                for p in batch.drain(..) {
                    p.complete(Err(e.clone()));
                }
                for s in syncs {
                    call(s, Err(poisoned.clone()));
                }
            }
        }
    }

    /// Write a batch and make it as durable as the policy asks. An error is
    /// what the batch's records complete with.
    fn write_and_sync(&mut self, batch: &[Pending], frames: &[u8]) -> Result<()> {
        let policy = self.shared.policy();
        if !batch.is_empty() {
            self.write_batch(batch, frames)?;
            self.publish(policy);
        }
        if policy == AppendFsync::Always {
            // Also covers the records copied into the window (a no-op if
            // everything written is durable already).
            self.fsync()?;
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            // The fsync thread failed meanwhile (`everysec`): like
            // everything queued behind a failure, this batch fails.
            return Err(self.shared.poison_error());
        }
        Ok(())
    }

    /// Every record up to `last` completed `Ok` (and `acked_seq` says so):
    /// wake `when_acked` waiters.
    fn ack(&mut self, last: u64) {
        self.shared.wake_acked(last, &mut self.ready);
    }

    /// Records `first..=last` failed with `err`: record the first failure
    /// and fail every `when_acked` waiter (all of them wait for records at
    /// or after `first`: completions come in order).
    fn ack_failed(&self, first: u64, last: u64, err: &StorageError) {
        let sh = &self.shared;
        let ready = {
            let mut acks = sh.acks.lock();
            acks.failed.get_or_insert((first, last, err.clone()));
            sh.has_ack_waiters.store(false, Ordering::SeqCst);
            let acked = sh.acked_seq.load(Ordering::SeqCst);
            std::mem::take(&mut acks.waiting)
                .into_iter()
                .map(|(seq, done)| {
                    let r = acks.outcome(seq, acked).unwrap_or(Err(err.clone()));
                    (done, r)
                })
                .collect::<Vec<_>>()
        };
        for (done, r) in ready {
            done.done(r);
        }
    }

    /// Under `everysec`, ask the fsync thread for an fsync if one is due
    /// (before the batch's completions fire, so `wait_everysec_fsync` after
    /// a completion sees the request).
    fn publish(&mut self, policy: AppendFsync) {
        if policy == AppendFsync::EverySec {
            self.shared.request_sync(&mut self.shared.bg.lock());
        }
    }

    /// Take in what appenders copied into the lent window (queue lock held).
    fn absorb(&mut self, q: &mut Queue) {
        if let Some(w) = &mut q.window {
            self.written_seq = self.written_seq.max(w.last_seq);
            self.active.len = w.tail;
            let s = &self.shared.stats;
            s.records
                .fetch_add(w.last_seq - w.counted_seq, Ordering::Relaxed);
            s.mapped_records
                .fetch_add(w.last_seq - w.counted_seq, Ordering::Relaxed);
            s.bytes_written
                .fetch_add(w.tail - w.counted_tail, Ordering::Relaxed);
            w.counted_seq = w.last_seq;
            w.counted_tail = w.tail;
        }
    }

    /// Take the window back (queue lock held): appenders queue from now on.
    fn retire(&mut self, q: &mut Queue) {
        self.absorb(q);
        if let Some(w) = q.window.take() {
            self.map = Some(WriterMap {
                map: w.map,
                base: w.base,
            });
        }
        self.lent = false;
    }

    /// Lend the map as the window if appenders may copy into it (queue lock
    /// held): nothing queued (file order is sequence order), the log open
    /// and healthy, and room past the last record.
    fn lend(&mut self, q: &mut Queue) {
        if self.lent || !q.pending.is_empty() || q.failed.is_some() || q.closing {
            return;
        }
        let Some(m) = self.map.take() else {
            return;
        };
        let end = m.base + m.map.len() as u64;
        if m.base > self.active.len || end < self.active.len + MAP_MIN_LEND {
            self.map = Some(m);
            return;
        }
        let low_at = Window::low_mark(self.active.len, end, self.shared.options.preallocate_bytes);
        q.window = Some(Window {
            map: m.map,
            base: m.base,
            tail: self.active.len,
            last_seq: self.written_seq,
            low_at,
            wants_more: false,
            counted_seq: self.written_seq,
            counted_tail: self.active.len,
        });
        self.lent = true;
    }

    /// An appender asked for a longer window (queue lock held, window
    /// lent): preallocate more zeros past its end and map from its tail on,
    /// with the lock released (appenders go on copying into the old map
    /// meanwhile; the new zeros lie beyond their reach), then swap the maps.
    /// Nothing changes if the segment cannot grow (it is nearly full: the
    /// next records go through the queue, which rolls it).
    fn extend_window(&mut self, q: &mut MutexGuard<'_, Queue>) {
        if q.failed.is_some() {
            // Taken back below, not extended.
            return;
        }
        let Some(w) = q.window.as_mut() else {
            return;
        };
        w.wants_more = false;
        let from = w.tail;
        let old_end = w.end();
        let new = MutexGuard::unlocked(q, || {
            let alloc = self.active.alloc;
            // NOTE: `preallocate` starts at `alloc` (`active.len` is stale
            // while the window is lent, and below it).
            self.preallocate(alloc + 1);
            if self.active.alloc <= old_end {
                return None;
            }
            let n = usize::try_from(self.active.alloc - from).ok()?;
            match self.active.file.map_writable(from, n) {
                Ok(Some(map)) => Some(map),
                _ => None,
            }
        });
        let (Some(w), Some(map)) = (q.window.as_mut(), new) else {
            return;
        };
        // Only the writer moves the window; appenders moved `tail` on,
        // inside what both maps cover.
        let old = std::mem::replace(&mut w.map, map);
        w.base = from;
        w.low_at = Window::low_mark(w.tail, w.end(), self.shared.options.preallocate_bytes);
        MutexGuard::unlocked(q, || drop(old));
    }

    /// Keep a map ready to lend (not while lent): the active segment from
    /// its last record to the end of its preallocated zeros, preallocating
    /// more first if fewer than `MAP_MIN_ROOM` bytes are left. Best effort:
    /// without a map, appends go through the queue.
    fn prepare_map(&mut self) {
        if self.lent || self.no_map || self.shared.poisoned.load(Ordering::Acquire) {
            return;
        }
        let len = self.active.len;
        let room = |m: &WriterMap| {
            (m.base <= len).then(|| (m.base + m.map.len() as u64).saturating_sub(len))
        };
        if self
            .map
            .as_ref()
            .and_then(room)
            .is_some_and(|r| r >= MAP_MIN_ROOM)
        {
            return;
        }
        self.map = None;
        if self.active.alloc < len + MAP_MIN_ROOM {
            self.preallocate(len + MAP_MIN_ROOM);
        }
        let room = self.active.alloc.saturating_sub(len);
        let Ok(n) = usize::try_from(room) else {
            return;
        };
        if room < MAP_MIN_LEND {
            return;
        }
        match self.active.file.map_writable(len, n) {
            Ok(Some(map)) => self.map = Some(WriterMap { map, base: len }),
            Ok(None) => self.no_map = true,
            // E.g. out of address space: try again after the next batch.
            Err(_) => {}
        }
    }

    /// Write a batch's frames, rolling segments as needed.
    fn write_batch(&mut self, batch: &[Pending], frames: &[u8]) -> Result<()> {
        let max = self.shared.options.segment_max_bytes;
        let (mut start, mut end) = (0usize, 0usize);
        let mut last_seq = self.written_seq;
        for p in batch {
            let flen = p.frame_len as u64;
            let used = self.active.len + (end - start) as u64;
            if used > 0 && used + flen > max {
                self.flush(&frames[start..end], last_seq)?;
                self.roll(p.seq)?;
                start = end;
            }
            end += p.frame_len;
            last_seq = p.seq;
        }
        self.flush(&frames[start..end], last_seq)
    }

    /// Write encoded frames (records up to `last_seq`) at the end of the
    /// active segment.
    fn flush(&mut self, bytes: &[u8], last_seq: u64) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = self.active.len + bytes.len() as u64;
        if end > self.active.alloc {
            self.preallocate(end);
        }
        if let Err(e) = self.active.file.write_at(self.active.len, bytes) {
            // A short write may have left whole frames of this failing
            // batch, whose clients get the error: cut the file back to the
            // last record written before it, so that a restart does not
            // bring them back (as Redis truncates its AOF after a short
            // write). Best effort: if this fails too, they may come back
            // (the outcome of a failed write is unknown, §5.3).
            // IMPORTANT: no map may outlive a cut of what it maps (SIGBUS;
            // it is not lent while a batch is written).
            self.map = None;
            let _ = self.active.file.set_len(self.active.len);
            self.active.alloc = self.active.len;
            return Err(StorageError::io("write", &self.active.path, e));
        }
        let n = bytes.len() as u64;
        self.active.len += n;
        let records = last_seq - self.written_seq;
        self.written_seq = last_seq;
        let s = &self.shared.stats;
        s.written_seq.store(last_seq, Ordering::Release);
        s.records.fetch_add(records, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.bytes_written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Write zeros past the end of the active segment, through at least
    /// `end` and `LogOptions::preallocate_bytes` beyond what is there (at
    /// most up to the segment size), so that the records written into them
    /// later do not change the file's size: their `fdatasync` then writes
    /// the data alone, without the inode, which on ext4 saves an I/O per
    /// fsync (docs/storage.md §3.5). The zeros reach the disk with the next
    /// fsync; recovery cuts them off like any torn tail (a zero frame is
    /// never valid).
    ///
    /// Only an optimisation: if the zeros cannot be written (a full disk, a
    /// file size limit) the segment goes on without it, and whether the
    /// records themselves fit is up to their own write. Zeros partly
    /// written stay behind `len`, where records overwrite them.
    fn preallocate(&mut self, end: u64) {
        let chunk = self.shared.options.preallocate_bytes;
        let max = self.shared.options.segment_max_bytes;
        if chunk == 0 || end > max || self.active.no_prealloc {
            return;
        }
        let from = self.active.alloc.max(self.active.len);
        let to = from.saturating_add(chunk).max(end).min(max);
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if self.active.file.write_at(at, &ZEROS[..n]).is_err() {
                self.active.no_prealloc = true;
                // `alloc` only counts what is known to be zeros.
                self.active.alloc = at;
                return;
            }
            at += n as u64;
        }
        self.active.alloc = to;
    }

    /// Cut the preallocated zeros off the active segment and make its
    /// length durable (before sealing it, and at close): only the last
    /// segment may ever end in bytes that are not records (§6).
    fn trim_preallocation(&mut self) -> Result<()> {
        // IMPORTANT: unmap before the cut (SIGBUS); the window was taken
        // back before the batch that rolls, and at close.
        debug_assert!(!self.lent);
        self.map = None;
        if self.active.alloc <= self.active.len {
            return self.fsync();
        }
        self.active
            .file
            .set_len(self.active.len)
            .map_err(|e| StorageError::io("truncate", &self.active.path, e))?;
        self.active.alloc = self.active.len;
        // IMPORTANT: forced, even if every record is durable already: the
        // new length must be.
        self.shared
            .sync_now(&self.active.file, &self.active.path, self.written_seq)
    }

    /// Seal the active segment and start a new one whose first record is
    /// `base`.
    fn roll(&mut self, base: u64) -> Result<()> {
        // IMPORTANT: seal the old segment durably *before* the next one
        // exists. Recovery relies on it: only the last segment can ever
        // have a torn tail, so a bad record in an earlier one is real
        // corruption, never a crash artifact. (Done under every policy,
        // including `no`: one fsync per segment, not per record; on this
        // thread, waiting for an `everysec` fsync in progress, and refused
        // if that one failed.) The preallocated zeros are cut off first.
        self.trim_preallocation()?;
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
        // From now on the fsync thread syncs the new segment. Its records
        // so far (none) are durable: the old segment was sealed above.
        self.shared.bg.lock().target = SyncTarget {
            file: Arc::clone(&file),
            path: path.clone(),
        };
        self.active = ActiveSegment::new(path, file, 0);
        Ok(())
    }

    /// `fdatasync` the active segment through everything written (a no-op
    /// if that is durable already); never retried on failure.
    fn fsync(&mut self) -> Result<()> {
        self.shared
            .fsync_through(&self.active.file, &self.active.path, self.written_seq)
    }
}

impl Drop for Writer {
    /// Whatever way the writer thread ends, `when_acked` waiters still get
    /// an answer (`Closed` for records it never decided).
    fn drop(&mut self) {
        let sh = &self.shared;
        let ready = {
            let mut acks = sh.acks.lock();
            acks.gone = true;
            let acked = sh.acked_seq.load(Ordering::SeqCst);
            std::mem::take(&mut acks.waiting)
                .into_iter()
                .map(|(seq, done)| (done, acks.outcome(seq, acked)))
                .collect::<Vec<_>>()
        };
        for (done, r) in ready {
            done.done(r.unwrap_or(Err(StorageError::Closed)));
        }
    }
}

/// The fsync thread: runs the `everysec` fsyncs the writer requests, and
/// the one due while the writer is idle with unsynced data (Redis's bio).
fn run_fsync_thread(shared: &Shared) {
    let interval = shared.options.everysec_interval;
    let mut bg = shared.bg.lock();
    loop {
        if bg.stop {
            return;
        }
        if !bg.requested {
            let everysec = shared.policy() == AppendFsync::EverySec;
            let dirty = shared.stats.written_seq.load(Ordering::Acquire)
                > shared.stats.durable_seq.load(Ordering::Acquire)
                && !shared.poisoned.load(Ordering::Acquire);
            if !everysec || !dirty {
                bg.parked = true;
                if everysec {
                    // Appenders that copy into the window do not wake this
                    // thread (it would cost them a check per record): look
                    // again an interval later. A record copied right after
                    // this look is fsynced within two intervals.
                    shared.bg_wake.wait_for(&mut bg, interval);
                } else {
                    shared.bg_wake.wait(&mut bg);
                }
                bg.parked = false;
                continue;
            }
            let now = shared.options.clock.now();
            let due = bg.last_sync_at + interval;
            if now < due {
                shared.bg_wake.wait_for(&mut bg, (due - now).min(interval));
                continue;
            }
            bg.requested = true;
        }
        bg.requested = false;
        bg.running = true;
        let target = bg.target.clone();
        // Read under the lock: every record up to it is in `target` or in
        // a sealed segment (see `SyncTarget`).
        let seq = shared.stats.written_seq.load(Ordering::Acquire);
        // An error poisons the log inside `fsync_through`; the writer and
        // every later append see it.
        let _ = MutexGuard::unlocked(&mut bg, || {
            shared.fsync_through(&target.file, &target.path, seq)
        });
        bg.running = false;
        shared.bg_wake.notify_all();
    }
}

/// Stop the fsync thread and join it (if `handle` is given).
fn stop_fsync_thread(shared: &Shared, handle: Option<JoinHandle<()>>) {
    {
        let mut bg = shared.bg.lock();
        bg.stop = true;
        shared.bg_wake.notify_all();
    }
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// Queue one record (under the queue lock; `admit` said yes): assign its
/// sequence number and encode its frame. Returns the sequence number.
fn push_record(q: &mut Queue, payload: &[u8], done: Option<Completion>) -> u64 {
    let seq = q.next_seq;
    q.next_seq += 1;
    let before = q.frames.len();
    encode_log_record(seq, payload, &mut q.frames);
    push_pending(q, seq, before, done);
    seq
}

/// Queue the record whose frame `q.frames[before..]` is.
fn push_pending(q: &mut Queue, seq: u64, before: usize, done: Option<Completion>) {
    q.pending.push(Pending {
        seq,
        frame_len: q.frames.len() - before,
        done,
    });
}
