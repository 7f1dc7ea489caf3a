//! Durability: every command's deterministic effects (see `Ctx::propagate`)
//! go to the commit log of `ferrite-storage` as one record per command or
//! EXEC; start-up loads the last checkpoint and replays the records after it.
//! The argument for what each `appendfsync` policy survives is in
//! `docs/storage.md`.
//!
//! By job: [`record`] (the record codec), [`commit`] (the commit path after
//! every command, the park hook, shutdown), [`replay`] (start-up),
//! [`snapshot`] (the checkpoint body's keyspace framing; each value writes
//! its own form, `crate::types`), [`checkpoint`] (taking, storing, verifying
//! and collecting checkpoints). This file opens the log ([`Persistence::open`])
//! and holds what they share.

use crate::embedded::Session;
use crate::reply::Reply;
use crate::shared::Shared;
use crate::store::{Store, Value};
use bytes::Bytes;
use ferrite_storage::{
    AppendFsync, BlockLocation, CommitLog, EntryId, FsBackend, LogOptions, Recovery, StorageError,
    StreamKeyId, StreamStore, StreamStoreOptions,
};
pub use ferrite_streams::snapshot::Encoder;
use ferrite_streams::snapshot::{
    assemble_from, publish_runs, put_bytes, put_u32, Garbage, HandBack, Insert, ListPool, Reader,
    RunFill, SealJob, SnapshotState,
};
use ferrite_streams::{BlockCache, BlockLoc, BlockSource, Fetched, StreamId};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub mod checkpoint;
pub mod commit;
pub mod record;
pub mod replay;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use commit::*;
pub use record::*;
pub use replay::*;
pub use snapshot::*;

const KIND_BATCH: u8 = 1;

/// The `db` field that marks a batch item as a subsystem's effect instead
/// of a command: its two "arguments" are the subsystem's name and the
/// effect's bytes ([`Store::log_subsystem`]). No database has this number,
/// so a build that knows no subsystems refuses such a record on replay
/// rather than skipping it.
pub const SUBSYSTEM_DB: usize = u32::MAX as usize;

/// State kept outside the keyspace whose changes must be atomic with
/// commands: the pipeline engine's cursors commit in the same record as the
/// results they produced. Registered on [`Shared`] before recovery
/// ([`Shared::register_subsystem`]), so that replay can hand it its
/// effects.
pub trait Subsystem: Send + Sync {
    /// Re-apply one effect that it logged with [`Store::log_subsystem`],
    /// in log order, with the store locked. An `Err` is a replay error
    /// (fatal unless `replay-errors skip`).
    fn replay(&self, store: &mut Store, effect: &[u8]) -> Result<(), String>;
    /// Its whole state for a checkpoint, as of the instant the keyspace is
    /// snapshotted (called with the store locked, so the two agree): the
    /// bytes, or what is needed to encode them later off the lock
    /// ([`Section::Deferred`]).
    fn snapshot(&self, store: &Store) -> Section;
    /// Load the state [`Subsystem::snapshot`] wrote (before the log after
    /// the checkpoint is replayed). An `Err` stops the start-up.
    fn restore(&self, store: &mut Store, state: &[u8]) -> Result<(), String>;
}

/// A subsystem's checkpoint section, as [`Subsystem::snapshot`] hands it
/// over. Either way the body's bytes are the same (`bytes state`).
pub enum Section {
    /// Encoded under the store lock.
    Bytes(Vec<u8>),
    /// Appends the state to the body later, in [`Snapshot::assemble`]: on
    /// the checkpoint thread, off the store lock (or under it, for SAVE,
    /// DEBUG RELOAD). IMPORTANT: it must write the state as of the
    /// `snapshot` call, so the subsystem keeps that state from changing
    /// until the function has run or been dropped; and it must not wait for
    /// the store lock or for anything its holder may keep while waiting
    /// (SAVE runs it with the store locked).
    Deferred(Encoder),
}

impl Section {
    /// The state's bytes (a deferred one encoded now).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Section::Bytes(b) => b,
            Section::Deferred(f) => {
                let mut v = Vec::new();
                f(&mut v);
                v
            }
        }
    }
}

const SNAPSHOT_VERSION: u8 = 5;

/// Reads evicted blocks back from the per-stream segment files.
struct SegmentSource(Arc<StreamStore>);

impl BlockSource for SegmentSource {
    fn read(&self, stream: u64, master: StreamId, loc: BlockLoc) -> Result<Fetched, String> {
        let loc = BlockLocation {
            segment: loc.segment,
            offset: loc.offset,
            len: loc.len,
        };
        let (b, packed) = self
            .0
            .read_block_packed(StreamKeyId(stream), loc)
            .map_err(|e| e.to_string())?;
        if b.first != EntryId::new(master.ms, master.seq) {
            return Err(format!(
                "segment {} offset {} holds block {}-{}, not {master}",
                loc.segment, loc.offset, b.first.ms, b.first.seq
            ));
        }
        Ok(Fetched {
            bytes: b.payload,
            packed,
        })
    }

    fn unpack(&self, packed: &[u8]) -> Result<Vec<u8>, String> {
        ferrite_storage::block_codec::unpack_block(packed)
    }
}

/// The open commit log and checkpoint bookkeeping.
/// What INFO persistence and LASTSAVE say of checkpoints (Redis's
/// `rdb_*`/`aof_*` fields: a checkpoint is both Ferrite's SAVE and its
/// AOF rewrite).
#[derive(Clone, Debug, Default)]
pub struct CheckpointStats {
    /// The running one's start.
    pub started: Option<std::time::Instant>,
    /// Unix seconds at the end of the last one that succeeded.
    pub last_success_unix: Option<u64>,
    /// Whole seconds the last one took.
    pub last_secs: Option<u64>,
    /// Whether the last one failed.
    pub last_failed: bool,
    /// Failures in a row.
    pub consecutive_failures: u64,
    /// Microseconds the last checkpoint held the store lock at once: its
    /// cut's longest hold (the cut itself, one step of its walk, or its
    /// end; all of them for a checkpoint taken at once, SAVE), subsystem
    /// sections included but for [`Section::Deferred`] ones, encoded after;
    /// and the longest since start (docs/storage.md §15.5).
    pub lock_us_last: u64,
    pub lock_us_max: u64,
    /// The holds the last checkpoint's cut took (1: taken at once).
    pub cut_holds_last: u64,
}

pub struct Persistence {
    log: CommitLog,
    /// The database, for the checkpoint thread to settle the blocks it
    /// stored (weak: the database holds this).
    shared: std::sync::Weak<Shared>,
    /// The store's block cache (also `Store::block_cache`), here for reads
    /// without the store lock.
    block_cache: Arc<BlockCache>,
    /// Sealed stream blocks, segment files of every stream in `dir/streams`.
    streams: Arc<StreamStore>,
    /// The first failed read of a stored block: writes are refused from then on.
    read_failure: std::sync::OnceLock<String>,
    /// Highest sequence number appended (appends happen under the store
    /// lock), for replies that depend on records other than their own.
    appended: AtomicU64,
    bytes_since_checkpoint: AtomicU64,
    /// `bytes_since_checkpoint` in MiB when `commit` last compared it with
    /// the checkpoint threshold.
    threshold_checked_mib: AtomicU64,
    checkpoint_running: AtomicBool,
    /// A BGSAVE ran inside a transaction after its writes: the checkpoint
    /// starts once the transaction's record is in the log
    /// ([`Persistence::start_checkpoint`], `commit::commit_effects`).
    checkpoint_after_commit: AtomicBool,
    /// Signalled (under `idle_lock`) when a checkpoint finishes.
    idle_lock: parking_lot::Mutex<()>,
    idle: parking_lot::Condvar,
    pub checkpoints_done: AtomicU64,
    /// When and how the checkpoints went (INFO persistence, LASTSAVE).
    checkpoint_stats: parking_lot::Mutex<CheckpointStats>,
    /// Databases a checkpoint may hold (for decoding one to verify it).
    databases: usize,
    /// The stream segment files the previous checkpoint references: kept
    /// with the newest one's, so recovery can fall back to it (two slots).
    previous_referenced: parking_lot::Mutex<HashMap<u64, BTreeSet<u64>>>,
}

impl Persistence {
    /// Open (or create) the commit log under `dir/log`, rebuilding `shared`'s
    /// store from the last checkpoint and the records after it.
    pub fn open(
        shared: &Arc<Shared>,
        repair: bool,
    ) -> Result<(Arc<Persistence>, Recovered), String> {
        let started = std::time::Instant::now();
        let (dir, fsync) = {
            let cfg = shared.config.read();
            (std::path::Path::new(&cfg.dir).join("log"), cfg.appendfsync)
        };
        let mut opts = LogOptions::new(fsync);
        opts.repair = repair;
        opts.max_record_bytes = LOG_RECORD_MAX;
        let mut rec = Recovered::default();
        let mut session = Session::internal(shared.clone());
        let startup_cfg = shared.config.read().clone();
        let skip = startup_cfg.replay_skip_errors;
        let fail = |e: StorageError| {
            let hint = if matches!(e, StorageError::Corrupt { .. }) && !repair {
                ". To start anyway, dropping the log from that offset on, start once with \
                 `--log-repair yes` (an operator decision: valid records after it are lost)"
            } else {
                ""
            };
            format!("cannot open the commit log in {}: {e}{hint}", dir.display())
        };
        let streams_dir = dir.with_file_name("streams");
        let streams = StreamStore::open(
            FsBackend::shared(),
            &streams_dir,
            StreamStoreOptions::default(),
        )
        .map(Arc::new)
        .map_err(|e| format!("cannot open {}: {e}", streams_dir.display()))?;
        let block_cache = BlockCache::new(Arc::new(SegmentSource(streams.clone())));
        {
            let mut store = shared.store.lock();
            store.block_cache = Some(block_cache.clone());
            store.cache_budget = startup_cfg.block_cache_size;
        }
        // Nothing expires while the log is replayed (see `crate::expire`).
        shared.store.lock().loading = true;
        let mut recovery = Recovery::open(FsBackend::shared(), &dir, opts).map_err(fail)?;
        let mut previous_referenced = HashMap::new();
        let mut next_cp = recovery.take_checkpoint();
        while let Some(cp) = next_cp.take() {
            let decoded = if (2..=SNAPSHOT_VERSION).contains(&cp.body_version) {
                let mut store = shared.store.lock();
                decode_snapshot(cp.body_version, &cp.body, &mut store)
            } else {
                Err(format!(
                    "body version {} (this build reads 2 to {SNAPSHOT_VERSION})",
                    cp.body_version
                ))
            };
            let decoded = match decoded {
                Ok(d) => d,
                Err(e) => {
                    // Two slots: the checkpoint before this one, and the log
                    // after it, are still there.
                    let why = format!("checkpoint {}: {e}", cp.file.display());
                    {
                        let mut store = shared.store.lock();
                        for db in store.dbs.iter_mut() {
                            db.clear();
                        }
                    }
                    match recovery.fall_back(&why).map_err(fail)? {
                        Some(older) => {
                            tracing::warn!(
                                "{why}; set aside as .bad, recovering from the previous checkpoint {} and the log after it",
                                older.file.display()
                            );
                            next_cp = Some(older);
                            continue;
                        }
                        None => {
                            return Err(format!(
                                "{why}, and there is no previous checkpoint to fall back to"
                            ))
                        }
                    }
                }
            };
            previous_referenced = referenced_segments(&shared.store.lock());
            rec.checkpoint_seq = cp.covered_seq;
            replay(&mut session, decoded.rebuild, 0, skip, &mut rec)?;
            for (name, state) in decoded.sections {
                let sub = shared.subsystem(&name).ok_or_else(|| {
                    format!(
                        "checkpoint {} has state of subsystem '{name}', which this build does not have",
                        cp.file.display()
                    )
                })?;
                let mut store = shared.store.lock();
                sub.restore(&mut store, &state).map_err(|e| {
                    format!("checkpoint {}: subsystem '{name}': {e}", cp.file.display())
                })?;
            }
        }
        while let Some(r) = recovery.next_record().map_err(fail)? {
            let cmds = decode_batch(&r.payload)
                .map_err(|e| format!("commit log record {}: {e}", r.seq))?;
            rec.records += 1;
            replay(&mut session, cmds, r.seq, skip, &mut rec)?;
        }
        let (log, report) = recovery.finish().map_err(fail)?;
        drop(session);
        shared.store.lock().loading = false;
        match &report.truncation {
            Some(t) if t.zeros_only => tracing::info!(
                "commit log: cut {} preallocated zero bytes after the last record of {}",
                t.bytes_dropped,
                t.file.display()
            ),
            Some(t) => tracing::warn!("commit log: truncated a torn or invalid tail: {t:?}"),
            None => {}
        }
        // Replayed CONFIG SETs reproduced the block layout of their time; the
        // configuration of this start wins from here on.
        {
            let mut cfg = shared.config.write();
            cfg.restore_data_params(&startup_cfg);
        }
        rec.millis = started.elapsed().as_millis();
        let p = Arc::new(Persistence {
            log,
            shared: Arc::downgrade(shared),
            block_cache,
            streams,
            read_failure: std::sync::OnceLock::new(),
            appended: AtomicU64::new(0),
            bytes_since_checkpoint: AtomicU64::new(0),
            threshold_checked_mib: AtomicU64::new(0),
            checkpoint_running: AtomicBool::new(false),
            checkpoint_after_commit: AtomicBool::new(false),
            idle_lock: parking_lot::Mutex::new(()),
            idle: parking_lot::Condvar::new(),
            checkpoints_done: AtomicU64::new(0),
            checkpoint_stats: parking_lot::Mutex::new(CheckpointStats::default()),
            databases: startup_cfg.databases,
            previous_referenced: parking_lot::Mutex::new(previous_referenced),
        });
        // Replay after this point must use the block settings in force now.
        let cfg_cmd = data_config_command(&shared.config.read());
        let seqs = p
            .log
            .append_batch([encode_batch(&[(0, cfg_cmd)])])
            .map_err(|e| format!("cannot write to the commit log: {e}"))?;
        let last = seqs.last().copied().unwrap_or(0);
        p.appended.store(last, Ordering::Release);
        Ok((p, rec))
    }

    /// The error that stops writes, if the log has failed.
    pub fn failure(&self) -> Option<StorageError> {
        self.log.failure()
    }

    pub fn fsync_policy(&self) -> AppendFsync {
        self.log.fsync_policy()
    }

    pub fn set_fsync(&self, p: AppendFsync) {
        self.log.set_fsync(p);
    }

    /// Append one record of `n` commands already encoded by [`put_cmd`]
    /// (`Store::pending_log`; one copy into the log's queue, no buffer of
    /// its own), called with the store locked, so log order is execution
    /// order, and return its sequence number. The reply must wait until
    /// [`Persistence::outcome`] of it is `Ok`, under every policy: the
    /// record is then fsynced (`always`) or written to the kernel, so it
    /// survives a kill -9 (`everysec`, `no`); a record still queued in this
    /// process when it is killed is lost.
    ///
    /// The writer is not woken here: call [`Persistence::kick`] before
    /// waiting (so a round of commands from many clients costs one wake-up
    /// and one write).
    pub fn append_encoded(&self, cmds: &[u8], n: usize) -> Result<u64, StorageError> {
        let len = 5 + cmds.len();
        let seq = self.log.append_deferred_with(|out| {
            out.reserve(len);
            out.push(KIND_BATCH);
            put_u32(out, n);
            out.extend_from_slice(cmds);
        })?;
        // Plain stores, not read-modify-writes: appends happen under the
        // store lock, in sequence order (and so does the checkpoint's reset).
        let logged = self.bytes_since_checkpoint.load(Ordering::Relaxed);
        self.bytes_since_checkpoint
            .store(logged + len as u64, Ordering::Relaxed);
        self.appended.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Block the calling thread until record `seq` is decided, for at most
    /// `timeout` (`None` if it is not decided by then). For synchronous
    /// callers (the pipeline engine's threads); async ones use
    /// [`Persistence::wait`]. Wakes the writer first.
    pub fn wait_blocking(
        &self,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Option<Result<u64, StorageError>> {
        if let Some(r) = self.log.outcome(seq) {
            return Some(r);
        }
        let slot = Arc::new((parking_lot::Mutex::new(None), parking_lot::Condvar::new()));
        let s2 = slot.clone();
        self.log.when_acked(
            seq,
            Box::new(move |r| {
                *s2.0.lock() = Some(r);
                s2.1.notify_all();
            }),
        );
        self.log.kick();
        let deadline = std::time::Instant::now() + timeout;
        let mut got = slot.0.lock();
        while got.is_none() {
            if slot.1.wait_until(&mut got, deadline).timed_out() {
                break;
            }
        }
        got.take()
    }

    /// Wake the log writer for the records [`Persistence::append_encoded`] queued.
    /// Call before waiting for one.
    pub fn kick(&self) {
        self.log.kick();
    }

    /// For a reply with no record of its own (a read, a served blocked
    /// command): `None` if every record appended so far has completed, else
    /// the last of them, to wait for. Call with the store locked, right after
    /// the command, so that "appended so far" is every record whose effects
    /// the reply can show.
    pub fn barrier(&self) -> Option<u64> {
        let target = self.appended.load(Ordering::Acquire);
        if self.log.acked_seq() >= target || self.log.failure().is_some() {
            // NOTE: once the log failed nothing more becomes durable; reads
            // go on (they may show the effects of the failed writes).
            return None;
        }
        Some(target)
    }

    /// The outcome of record `seq` if decided: `Ok` once it (and every
    /// record before it) is as durable as the policy promises.
    pub fn outcome(&self, seq: u64) -> Option<Result<u64, StorageError>> {
        self.log.outcome(seq)
    }

    /// Wait until record `seq` is decided (call [`Persistence::kick`] first).
    /// Completions come in sequence order, so this also waits for every
    /// record before it.
    pub async fn wait(&self, seq: u64) -> Result<u64, StorageError> {
        // Woken by the writer thread; nothing is allocated per wait.
        let r = std::future::poll_fn(|cx| match self.log.poll_acked(seq, cx.waker()) {
            Some(r) => std::task::Poll::Ready(r),
            None => std::task::Poll::Pending,
        })
        .await;
        if let Err(e) = &r {
            tracing::error!("commit log write failed: {e}");
        }
        r
    }

    /// The commit log's counters (INFO persistence).
    pub fn log_stats(&self) -> ferrite_storage::LogStats {
        self.log.stats()
    }

    /// When and how the checkpoints went.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoint_stats.lock().clone()
    }

    /// Bytes logged since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.bytes_since_checkpoint.load(Ordering::Relaxed)
    }

    /// Whether a command may have to read stored blocks back (some may be
    /// out of memory): only then is a read-ahead planned (`conn::execute`).
    pub fn blocks_may_be_absent(&self) -> bool {
        self.block_cache.may_have_absent()
    }

    /// Bytes in stream segment files (INFO).
    pub fn stream_segment_bytes(&self) -> u64 {
        let Ok(ids) = self.streams.list_streams() else {
            return 0;
        };
        ids.into_iter()
            .filter_map(|id| self.streams.segments(id).ok())
            .flatten()
            .map(|s| s.bytes)
            .sum()
    }

    /// Record the first failed read of a stored block (see [`commit`]).
    pub fn set_read_failure(&self, msg: String) {
        let _ = self.read_failure.set(msg);
    }

    pub fn read_failure(&self) -> Option<&str> {
        self.read_failure.get().map(String::as_str)
    }

    /// Wait until no checkpoint is running (false if `timeout` passed first).
    pub fn wait_checkpoint_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.idle_lock.lock();
        while self.checkpoint_running.load(Ordering::Acquire) {
            if self.idle.wait_until(&mut g, deadline).timed_out() {
                return !self.checkpoint_running.load(Ordering::Acquire);
            }
        }
        true
    }

    /// Flush and fsync everything appended so far (clean shutdown).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.log.sync().map(|_| ())
    }

    pub fn close(&self) -> Result<(), StorageError> {
        self.log.close()
    }
}
