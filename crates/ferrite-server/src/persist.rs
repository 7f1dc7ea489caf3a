//! Durability: every command's deterministic effects (see `Ctx::propagate`)
//! go to the commit log of `ferrite-storage` as one record per command or
//! EXEC; start-up loads the last checkpoint and replays the records after it.
//! The argument for what each `appendfsync` policy survives is in
//! `docs/storage.md`.
//!
//! Record payload (hand-encoded, little-endian): `u8 kind = 1`, `u32 count`,
//! then per command `u32 db, u32 argc`, and per argument `u32 len, bytes`.
//! Checkpoint body (version 1): see [`encode_snapshot`].

use crate::embedded::Session;
use crate::reply::Reply;
use crate::server::Shared;
use crate::store::{Store, Value};
use bytes::Bytes;
use ferrite_storage::{AppendFsync, CommitLog, FsBackend, LogOptions, Recovery, StorageError};
use ferrite_streams::block::Block;
use ferrite_streams::stream::StreamMeta;
use ferrite_streams::{Group, Stream, StreamId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

const KIND_BATCH: u8 = 1;
const SNAPSHOT_VERSION: u8 = 2;

/// The open commit log and checkpoint bookkeeping.
pub struct Persistence {
    log: CommitLog,
    /// Highest sequence number appended (appends happen under the store
    /// lock), for replies that depend on records other than their own.
    appended: AtomicU64,
    bytes_since_checkpoint: AtomicU64,
    checkpoint_running: AtomicBool,
    /// Signalled (under `idle_lock`) when a checkpoint finishes.
    idle_lock: parking_lot::Mutex<()>,
    idle: parking_lot::Condvar,
    pub checkpoints_done: AtomicU64,
}

/// Redis's wording for a failed AOF write, which clients and tools know.
pub fn misconf_message(e: &StorageError) -> String {
    format!("MISCONF Errors writing to the AOF file: {e}")
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_cmd(out: &mut Vec<u8>, db: usize, argv: &[Bytes]) {
    put_u32(out, db);
    put_u32(out, argv.len());
    for a in argv {
        put_bytes(out, a);
    }
}

/// Encode one command batch record.
pub fn encode_batch(cmds: &[(usize, Vec<Bytes>)]) -> Vec<u8> {
    let size: usize = cmds
        .iter()
        .map(|(_, a)| 8 + a.iter().map(|x| 4 + x.len()).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(KIND_BATCH);
    put_u32(&mut out, cmds.len());
    for (db, argv) in cmds {
        put_cmd(&mut out, *db, argv);
    }
    out
}

/// A cursor over bytes read from disk: every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn id(&mut self) -> Result<StreamId, String> {
        Ok(StreamId::new(self.u64()?, self.u64()?))
    }
    fn cmd(&mut self) -> Result<(usize, Vec<Bytes>), String> {
        let db = self.u32()?;
        let argc = self.u32()?;
        // NOTE: capacity bounded by what the payload can hold, not by the count.
        let mut argv = Vec::with_capacity(argc.min(self.b.len() / 4 + 1));
        for _ in 0..argc {
            argv.push(self.bytes()?);
        }
        Ok((db, argv))
    }
    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

pub fn decode_batch(payload: &[u8]) -> Result<Vec<(usize, Vec<Bytes>)>, String> {
    let mut r = Reader { b: payload, pos: 0 };
    let kind = r.u8()?;
    if kind != KIND_BATCH {
        return Err(format!("unknown record kind {kind}"));
    }
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(payload.len() / 8 + 1));
    for _ in 0..n {
        out.push(r.cmd()?);
    }
    if !r.done() {
        return Err("trailing bytes in record".into());
    }
    Ok(out)
}

/// Checkpoint body v2: `u32 ndb`; per db `u32 index, u64 nkeys`; per key
/// `bytes key, u8 kind` then kind 0 (string) `bytes value`, kind 1 (stream)
/// `id last, id first, id max_deleted, u64 entries_added, u64 nblocks` and per
/// block `id master, bytes encoded`, then its consumer groups: `u32 ngroups`,
/// per group `bytes name, id last, i64 entries_read (-1: unknown), u32
/// nconsumers` with per consumer `bytes name, u64 seen_ms`, then `u64
/// npending` with per entry `id, u32 consumer index, u64 delivery_ms, u64
/// delivery_count`; then `u32 n` rebuild commands encoded
/// like batch commands, replayed after the keys load: the CONFIG SET of the
/// block limits in force at the snapshot, then consumer groups. IDs are two
/// u64s.
pub fn encode_snapshot(store: &Store, rebuild: &[(usize, Vec<Bytes>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let dbs: Vec<(usize, &crate::store::Db)> = store
        .dbs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.is_empty())
        .collect();
    put_u32(&mut out, dbs.len());
    for (i, db) in dbs {
        put_u32(&mut out, i);
        out.extend_from_slice(&(db.len() as u64).to_le_bytes());
        for (k, v) in db.iter() {
            put_bytes(&mut out, k);
            match v {
                Value::String(s) => {
                    out.push(0);
                    put_bytes(&mut out, s);
                }
                Value::Stream(s) => {
                    out.push(1);
                    let m = s.meta();
                    for id in [m.last_id, m.first_id, m.max_deleted_id] {
                        out.extend_from_slice(&id.ms.to_le_bytes());
                        out.extend_from_slice(&id.seq.to_le_bytes());
                    }
                    out.extend_from_slice(&m.entries_added.to_le_bytes());
                    out.extend_from_slice(&(s.block_count() as u64).to_le_bytes());
                    for b in s.blocks() {
                        let id = b.master_id();
                        out.extend_from_slice(&id.ms.to_le_bytes());
                        out.extend_from_slice(&id.seq.to_le_bytes());
                        put_bytes(&mut out, b.encoded());
                    }
                    encode_groups(&mut out, s);
                }
            }
        }
    }
    put_u32(&mut out, rebuild.len());
    for (db, argv) in rebuild {
        put_cmd(&mut out, *db, argv);
    }
    out
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

/// A stream's consumer groups, exactly: every pending entry with its owner,
/// delivery time and count, including entries whose stream entry was deleted
/// (which no replayable command could recreate).
fn encode_groups(out: &mut Vec<u8>, s: &Stream) {
    let Some(groups) = s.groups() else {
        put_u32(out, 0);
        return;
    };
    put_u32(out, groups.len());
    for (name, g) in groups.iter() {
        put_bytes(out, name);
        put_id(out, g.last_id());
        out.extend_from_slice(&g.entries_read_raw().to_le_bytes());
        let mut index = std::collections::HashMap::new();
        put_u32(out, g.consumer_count());
        for (i, c) in g.consumers().enumerate() {
            if let Some(id) = g.consumer_id(c.name()) {
                index.insert(id, i as u32);
            }
            put_bytes(out, c.name());
            out.extend_from_slice(&c.seen_time().to_le_bytes());
        }
        out.extend_from_slice(&(g.pending_count() as u64).to_le_bytes());
        for p in g.pending_range(StreamId::MIN, StreamId::MAX) {
            put_id(out, p.id);
            let ci = index.get(&p.consumer).copied().unwrap_or(u32::MAX);
            out.extend_from_slice(&ci.to_le_bytes());
            out.extend_from_slice(&p.delivery_time.to_le_bytes());
            out.extend_from_slice(&p.delivery_count.to_le_bytes());
        }
    }
}

fn decode_groups(r: &mut Reader<'_>, s: &mut Stream) -> Result<(), String> {
    let ngroups = r.u32()?;
    for _ in 0..ngroups {
        let name = r.bytes()?;
        let last = r.id()?;
        let entries_read = r.u64()? as i64;
        let mut g = Group::new(last, entries_read);
        let nconsumers = r.u32()?;
        let mut ids = Vec::with_capacity(nconsumers.min(1 << 16));
        for _ in 0..nconsumers {
            let cname = r.bytes()?;
            let seen = r.u64()?;
            ids.push(g.create_consumer(&cname, seen).0);
        }
        let npending = r.u64()?;
        for _ in 0..npending {
            let id = r.id()?;
            let ci = r.u32()?;
            let time = r.u64()?;
            let count = r.u64()?;
            let owner = *ids
                .get(ci)
                .ok_or_else(|| format!("pending entry {id}: no consumer {ci}"))?;
            g.set_pending(id, owner, time, count);
        }
        let created = s.with_groups(|_, groups| groups.create(&name, g));
        if !created {
            return Err(format!("duplicate consumer group {name:?} in checkpoint"));
        }
    }
    Ok(())
}

/// Load a checkpoint body into an empty store; returns the rebuild commands.
pub fn decode_snapshot(body: &[u8], store: &mut Store) -> Result<Vec<(usize, Vec<Bytes>)>, String> {
    let mut r = Reader { b: body, pos: 0 };
    let ndb = r.u32()?;
    for _ in 0..ndb {
        let idx = r.u32()?;
        let nkeys = r.u64()?;
        if idx >= store.dbs.len() {
            return Err(format!(
                "checkpoint has db {idx}, server has {} databases",
                store.dbs.len()
            ));
        }
        for _ in 0..nkeys {
            let key = r.bytes()?;
            let value = match r.u8()? {
                0 => Value::String(r.bytes()?),
                1 => {
                    let meta = StreamMeta {
                        last_id: r.id()?,
                        first_id: r.id()?,
                        max_deleted_id: r.id()?,
                        entries_added: r.u64()?,
                    };
                    let nblocks = r.u64()?;
                    let mut blocks = Vec::new();
                    for _ in 0..nblocks {
                        let master = r.id()?;
                        let buf = r.bytes()?;
                        let b = Block::from_parts(master, buf.to_vec())
                            .map_err(|e| format!("bad block {master} of key {key:?}: {e:?}"))?;
                        blocks.push(b);
                    }
                    let mut s = Stream::restore(meta, blocks);
                    decode_groups(&mut r, &mut s)?;
                    Value::Stream(Box::new(s))
                }
                k => return Err(format!("unknown value kind {k}")),
            };
            store.dbs[idx].insert(key, value);
        }
    }
    let n = r.u32()?;
    let mut rebuild = Vec::new();
    for _ in 0..n {
        rebuild.push(r.cmd()?);
    }
    if !r.done() {
        return Err("trailing bytes in checkpoint".into());
    }
    Ok(rebuild)
}

/// What start-up recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct Recovered {
    pub checkpoint_seq: u64,
    pub records: u64,
    pub commands: u64,
    pub replay_errors: u64,
    pub millis: u128,
}

fn replay(session: &mut Session, cmds: Vec<(usize, Vec<Bytes>)>, out: &mut Recovered) {
    for (db, argv) in cmds {
        let reply = session.call_in_db(db, argv);
        out.commands += 1;
        if let Reply::Error(e) = &reply {
            out.replay_errors += 1;
            tracing::warn!("replay: command failed: {}", String::from_utf8_lossy(e));
        }
    }
    session.shared().store.lock().pending_log.clear();
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
        let mut rec = Recovered::default();
        let mut session = Session::internal(shared.clone());
        let startup_cfg = shared.config.read().clone();
        let fail = |e: StorageError| {
            let hint = if matches!(e, StorageError::Corrupt { .. }) && !repair {
                ". To start anyway, dropping the log from that offset on, run once with \
                 FERRITE_REPAIR_LOG=1 (an operator decision: valid records after it are lost)"
            } else {
                ""
            };
            format!("cannot open the commit log in {}: {e}{hint}", dir.display())
        };
        let mut recovery = Recovery::open(FsBackend::shared(), &dir, opts).map_err(fail)?;
        if let Some(cp) = recovery.take_checkpoint() {
            if cp.body_version != SNAPSHOT_VERSION {
                return Err(format!(
                    "checkpoint {} has body version {} (this build reads {SNAPSHOT_VERSION})",
                    cp.file.display(),
                    cp.body_version
                ));
            }
            let rebuild = {
                let mut store = shared.store.lock();
                decode_snapshot(&cp.body, &mut store)
                    .map_err(|e| format!("checkpoint {}: {e}", cp.file.display()))?
            };
            rec.checkpoint_seq = cp.covered_seq;
            replay(&mut session, rebuild, &mut rec);
        }
        while let Some(r) = recovery.next_record().map_err(fail)? {
            let cmds = decode_batch(&r.payload)
                .map_err(|e| format!("commit log record {}: {e}", r.seq))?;
            rec.records += 1;
            replay(&mut session, cmds, &mut rec);
        }
        let (log, report) = recovery.finish().map_err(fail)?;
        drop(session);
        if let Some(t) = &report.truncation {
            tracing::warn!("commit log: truncated a torn or invalid tail: {t:?}");
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
            appended: AtomicU64::new(0),
            bytes_since_checkpoint: AtomicU64::new(0),
            checkpoint_running: AtomicBool::new(false),
            idle_lock: parking_lot::Mutex::new(()),
            idle: parking_lot::Condvar::new(),
            checkpoints_done: AtomicU64::new(0),
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

    /// Append one record (called with the store locked, so log order is
    /// execution order) and return its sequence number. The reply must wait
    /// until [`Persistence::outcome`] of it is `Ok`, under every policy: the
    /// record is then fsynced (`always`) or written to the kernel, so it
    /// survives a kill -9 (`everysec`, `no`); a record still queued in this
    /// process when it is killed is lost.
    ///
    /// The writer is not woken here: call [`Persistence::kick`] before
    /// waiting (so a round of commands from many clients costs one wake-up
    /// and one write).
    pub fn append(&self, cmds: &[(usize, Vec<Bytes>)]) -> Result<u64, StorageError> {
        let payload = encode_batch(cmds);
        self.bytes_since_checkpoint
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let seq = self.log.append_deferred(payload)?;
        self.appended.fetch_max(seq, Ordering::AcqRel);
        Ok(seq)
    }

    /// Wake the log writer for the records [`Persistence::append`] queued.
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
        let r = match self.log.outcome(seq) {
            Some(r) => r,
            None => {
                let (tx, rx) = oneshot::channel();
                self.log.when_acked(
                    seq,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
                rx.await.unwrap_or(Err(StorageError::Closed))
            }
        };
        if let Err(e) = &r {
            tracing::error!("commit log write failed: {e}");
        }
        r
    }

    /// The commit log's counters (INFO persistence).
    pub fn log_stats(&self) -> ferrite_storage::LogStats {
        self.log.stats()
    }

    /// Bytes logged since the last checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.bytes_since_checkpoint.load(Ordering::Relaxed)
    }

    pub fn checkpoint_running(&self) -> bool {
        self.checkpoint_running.load(Ordering::Relaxed)
    }

    /// Snapshot the store now (call with it locked): returns what to write
    /// and the last sequence number the snapshot covers, or `None` if a
    /// checkpoint is already running.
    ///
    /// `cfg` is the configuration in force (read under the same store lock):
    /// its block limits go first in the rebuild commands, so the records
    /// replayed after this checkpoint build their blocks with the limits
    /// they were written under, not the limits of the next start's command
    /// line (those are put back after replay).
    pub fn begin_checkpoint(
        &self,
        store: &Store,
        cfg: &crate::config::Config,
    ) -> Option<(u64, Vec<u8>)> {
        if self.checkpoint_running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let covered = self.log.next_seq().saturating_sub(1);
        let rebuild = vec![(0, data_config_command(cfg))];
        let body = encode_snapshot(store, &rebuild);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
        Some((covered, body))
    }

    /// Write a snapshot taken by [`Persistence::begin_checkpoint`]. Blocking
    /// file I/O: call from a blocking thread.
    pub fn finish_checkpoint(&self, covered: u64, body: &[u8]) -> Result<(), StorageError> {
        let r = self.log.checkpoint(covered, SNAPSHOT_VERSION, body);
        if r.is_ok() {
            self.checkpoints_done.fetch_add(1, Ordering::Relaxed);
        }
        self.checkpoint_running.store(false, Ordering::Release);
        let _g = self.idle_lock.lock();
        self.idle.notify_all();
        r.map(|_| ())
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

/// `CONFIG SET` of the parameters that shape stored data (block limits):
/// logged at start-up and whenever they change, so replay rebuilds the same
/// blocks.
pub fn data_config_command(cfg: &crate::config::Config) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"CONFIG"),
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"stream-node-max-entries"),
        Bytes::from(cfg.stream_node_max_entries.to_string()),
        Bytes::from_static(b"stream-node-max-bytes"),
        Bytes::from(cfg.stream_node_max_bytes.to_string()),
    ]
}

/// Make `p` the server's commit log: from now on every command's effects
/// are collected and appended.
pub fn install(shared: &Arc<Shared>, p: Arc<Persistence>) -> bool {
    let fresh = shared.persist.set(p).is_ok();
    shared.store.lock().logging = true;
    fresh
}

/// What the caller must do after a command's effects were handed to the log.
pub enum Commit {
    /// Nothing to wait for (no effects, or persistence off).
    Done,
    /// Reply only once this record's outcome is `Ok`: it is written
    /// (`everysec`, `no`) or fsynced (`always`).
    Wait(u64),
    /// The log refused the record: the reply must be this error.
    Failed(String),
}

/// [`Persistence::barrier`] if persistence is on (call with the store locked).
pub fn barrier(shared: &Shared) -> Option<u64> {
    shared.persist.get()?.barrier()
}

/// [`Persistence::kick`] if persistence is on.
pub fn kick(shared: &Shared) {
    if let Some(p) = shared.persist.get() {
        p.kick();
    }
}

/// [`Persistence::outcome`]; `Closed` if persistence is off (a record
/// cannot exist then).
pub fn outcome(shared: &Shared, seq: u64) -> Option<Result<u64, StorageError>> {
    match shared.persist.get() {
        Some(p) => p.outcome(seq),
        None => Some(Err(StorageError::Closed)),
    }
}

/// [`Persistence::wait`]; `Closed` if persistence is off.
pub async fn wait(shared: &Shared, seq: u64) -> Result<u64, StorageError> {
    match shared.persist.get() {
        Some(p) => p.wait(seq).await,
        None => Err(StorageError::Closed),
    }
}

/// Hand the store's pending effects to the commit log (call with the store
/// locked, right after the command and the blocked clients it served), and
/// start a checkpoint when enough was logged since the last one.
pub fn commit(shared: &Arc<Shared>, store: &mut Store) -> Commit {
    if store.pending_log.is_empty() {
        return Commit::Done;
    }
    let effects = std::mem::take(&mut store.pending_log);
    let Some(p) = shared.persist.get() else {
        return Commit::Done;
    };
    let result = match p.append(&effects) {
        Ok(seq) => Commit::Wait(seq),
        Err(e) => Commit::Failed(misconf_message(&e)),
    };
    let threshold = shared.config.read().auto_checkpoint_min_size;
    if p.log_bytes() >= threshold && !p.checkpoint_running() {
        let snap = p.begin_checkpoint(store, &shared.config.read());
        if let Some((covered, body)) = snap {
            let p = p.clone();
            // IMPORTANT: checkpoint file I/O runs on its own thread, never on
            // a tokio worker and never under the store lock.
            let spawned = std::thread::Builder::new()
                .name("ferrite-checkpoint".into())
                .spawn(move || {
                    if let Err(e) = p.finish_checkpoint(covered, &body) {
                        tracing::error!("checkpoint failed: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start the checkpoint thread: {e}");
            }
        }
    }
    result
}

/// Clean shutdown: fsync the log, write a checkpoint (so the next start
/// replays nothing), close.
pub fn shutdown(shared: &Arc<Shared>) {
    let Some(p) = shared.persist.get() else {
        return;
    };
    // A background checkpoint may be running: wait for it, then write the
    // final one (it must cover everything, so the next start replays
    // nothing). Connections may still be finishing commands, which can start
    // another background checkpoint: hence the loop.
    let mut snap = None;
    for _ in 0..10 {
        snap = {
            let store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&store, &cfg)
        };
        if snap.is_some() || !p.wait_checkpoint_idle(std::time::Duration::from_secs(120)) {
            break;
        }
    }
    match snap {
        Some((covered, body)) => {
            if let Err(e) = p.finish_checkpoint(covered, &body) {
                tracing::error!("checkpoint at shutdown failed: {e}");
            }
        }
        None => tracing::error!(
            "no checkpoint at shutdown: a background checkpoint did not finish; \
             the next start replays the commit log"
        ),
    }
    if let Err(e) = p.sync().and_then(|_| p.close()) {
        tracing::error!("closing the commit log failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::embedded::Session;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("ferrite-persist-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// A server state on `dir` with its commit log open (recovered).
    fn open(dir: &std::path::Path, node_entries: &str) -> Arc<Shared> {
        let mut cfg = Config::default();
        cfg.set_startup("dir", &dir.to_string_lossy())
            .unwrap_or_else(|e| panic!("{e:?}"));
        cfg.set_startup("stream-node-max-entries", node_entries)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let shared = Shared::new(cfg);
        let (p, _) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(install(&shared, p));
        shared
    }

    fn call(s: &mut Session, parts: &[&str]) -> Reply {
        let r = s.call(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        );
        assert!(!r.is_error(), "{parts:?}: {r:?}");
        r
    }

    fn blocks(shared: &Shared, key: &[u8]) -> (usize, u64) {
        match shared.store.lock().dbs[0].get(key) {
            Some(Value::Stream(s)) => (s.block_count(), s.len()),
            _ => panic!("no stream {key:?}"),
        }
    }

    /// Regression: records replayed after a checkpoint used the block limits
    /// of the new start's command line instead of those in force when they
    /// were written, so a stream came back with other blocks (XINFO
    /// radix-tree-keys) after a crash.
    #[test]
    fn replay_after_a_checkpoint_uses_the_block_limits_of_its_time() {
        let dir = temp_dir("ckpt-cfg");
        let shared = open(&dir, "100");
        let mut s = Session::attach(shared.clone());
        call(&mut s, &["CONFIG", "SET", "stream-node-max-entries", "3"]);
        for i in 1..=5 {
            call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
        }
        let p = shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        let snap = {
            let store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&store, &cfg)
        };
        let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        p.finish_checkpoint(covered, &body)
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 6..=10 {
            call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
        }
        let before = blocks(&shared, b"s");
        assert_eq!(before, (4, 10));
        // A crash: everything written is in the log, no final checkpoint.
        p.sync().unwrap_or_else(|e| panic!("{e}"));
        p.close().unwrap_or_else(|e| panic!("{e}"));
        drop(s);
        drop(shared);
        let again = open(&dir, "100");
        assert_eq!(blocks(&again, b"s"), before);
        // The command line's limit is in force afterwards.
        assert_eq!(again.config.read().stream_node_max_entries, 100);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression: a clean shutdown while a background checkpoint was
    /// running wrote no checkpoint of its own (and the background one could
    /// fail on the closed log), so the next start replayed the log.
    #[test]
    fn shutdown_waits_for_a_running_checkpoint_then_writes_its_own() {
        let dir = temp_dir("ckpt-shutdown");
        let shared = open(&dir, "100");
        let mut s = Session::attach(shared.clone());
        call(&mut s, &["XADD", "s", "1-1", "f", "v"]);
        let p = shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        let snap = {
            let store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&store, &cfg)
        };
        let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        call(&mut s, &["XADD", "s", "2-1", "f", "v"]);
        let sh = shared.clone();
        let stopper = std::thread::spawn(move || shutdown(&sh));
        // The background checkpoint finishes while shutdown waits for it.
        p.finish_checkpoint(covered, &body)
            .unwrap_or_else(|e| panic!("{e}"));
        stopper
            .join()
            .unwrap_or_else(|_| panic!("shutdown panicked"));
        drop(s);
        drop(p);
        drop(shared);
        let mut cfg = Config::default();
        cfg.set_startup("dir", &dir.to_string_lossy())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let again = Shared::new(cfg);
        let (_p, rec) = Persistence::open(&again, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.records, 0, "{rec:?}");
        assert_eq!(blocks(&again, b"s"), (1, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn batch_round_trip_and_garbage() {
        let cmds = vec![(
            3usize,
            vec![Bytes::from("XADD"), Bytes::from("k"), Bytes::new()],
        )];
        let enc = encode_batch(&cmds);
        assert_eq!(decode_batch(&enc), Ok(cmds));
        for cut in 0..enc.len() {
            assert!(decode_batch(&enc[..cut]).is_err());
        }
        let mut huge = vec![KIND_BATCH];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&huge).is_err());
    }
}
