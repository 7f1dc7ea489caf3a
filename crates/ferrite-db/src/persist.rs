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
use crate::shared::Shared;
use crate::store::{Store, Value};
use bytes::Bytes;
use ferrite_storage::{
    AppendFsync, BlockLocation, CommitLog, EntryId, FsBackend, LogOptions, Recovery, StorageError,
    StreamKeyId, StreamStore, StreamStoreOptions,
};
use ferrite_streams::block::Block;
use ferrite_streams::stream::StreamMeta;
use ferrite_streams::{
    BlockCache, BlockLoc, BlockSource, Group, RestoredBlock, SealTicket, SnapBlock, Storage,
    Stream, StreamId, Summary,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
}
const SNAPSHOT_VERSION: u8 = 3;

/// Reads evicted blocks back from the per-stream segment files.
struct SegmentSource(Arc<StreamStore>);

impl BlockSource for SegmentSource {
    fn read(&self, stream: u64, master: StreamId, loc: BlockLoc) -> Result<Vec<u8>, String> {
        let loc = BlockLocation {
            segment: loc.segment,
            offset: loc.offset,
            len: loc.len,
        };
        let b = self
            .0
            .read_block(StreamKeyId(stream), loc)
            .map_err(|e| e.to_string())?;
        if b.first != EntryId::new(master.ms, master.seq) {
            return Err(format!(
                "segment {} offset {} holds block {}-{}, not {master}",
                loc.segment, loc.offset, b.first.ms, b.first.seq
            ));
        }
        Ok(b.payload)
    }
}

/// The open commit log and checkpoint bookkeeping.
pub struct Persistence {
    log: CommitLog,
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
    put_cmd_parts(out, db, &[], argv);
}

/// [`put_cmd`] of the command `head ++ tail`.
pub fn put_cmd_parts(out: &mut Vec<u8>, db: usize, head: &[&[u8]], tail: &[Bytes]) {
    let len = 8
        + head.iter().map(|x| 4 + x.len()).sum::<usize>()
        + tail.iter().map(|x| 4 + x.len()).sum::<usize>();
    out.reserve(len);
    put_u32(out, db);
    put_u32(out, head.len() + tail.len());
    for a in head {
        put_bytes(out, a);
    }
    for a in tail {
        put_bytes(out, a);
    }
}

/// `n` commands encoded by [`put_cmd`], back as `(db, argv)` (what
/// `Store::take_effects` returns). Encoded by this process: a malformed
/// buffer would be a bug, and yields what decodes before it.
pub fn decode_cmds(b: &[u8], n: usize) -> Vec<(usize, Vec<Bytes>)> {
    let mut r = Reader { b, pos: 0 };
    (0..n).map_while(|_| r.cmd().ok()).collect()
}

/// The largest record the commit log takes: the frame format's limit
/// (~4 GiB), not the storage crate's 512 MiB default, so that no command a
/// client can send is refused by the log after it was applied in memory
/// (`cmd::dispatch` refuses larger ones before they run).
pub const LOG_RECORD_MAX: usize =
    ferrite_storage::frame::MAX_BODY_LEN - ferrite_storage::frame::LOG_BODY_MIN;

/// An upper bound of the record that logging `cmds` (as given by clients)
/// takes, for commands whose logged effects are their arguments (XADD's
/// `*` becomes an ID, a trim becomes an exact XTRIM: `SLACK` covers them).
pub fn record_size_bound<'a>(cmds: impl IntoIterator<Item = &'a Vec<Bytes>>) -> usize {
    const SLACK: usize = 256;
    5 + cmds.into_iter().map(|a| cmd_len(a) + SLACK).sum::<usize>()
}

/// Encode one command batch record (the server's own records are built in
/// place instead: `Store::pending_log`, [`Persistence::append_encoded`]).
pub fn encode_batch(cmds: &[(usize, Vec<Bytes>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + cmds.iter().map(|(_, a)| cmd_len(a)).sum::<usize>());
    out.push(KIND_BATCH);
    put_u32(&mut out, cmds.len());
    for (db, argv) in cmds {
        put_cmd(&mut out, *db, argv);
    }
    out
}

/// The encoded length of one command of a batch (`put_cmd`).
fn cmd_len(argv: &[Bytes]) -> usize {
    8 + argv.iter().map(|x| 4 + x.len()).sum::<usize>()
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

/// Checkpoint body v3: `u64 next_stream_id, u32 ndb`; per db `u32 index,
/// u64 nkeys`; per key `bytes key, u8 kind` then kind 0 (string) `bytes
/// value`, kind 1 (stream) `id last, id first, id max_deleted, u64
/// entries_added, u8 disordered, u64 storage_id (0: none), u64 nblocks` and
/// per block `u8 tag, id master` then tag 0 (inline) `bytes encoded`, tag 1
/// (stored) `u64 live, u64 deleted, u64 listpack_bytes, id last, u64
/// segment, u64 offset, u64 len`; then its consumer groups: `u32 ngroups`,
/// per group `bytes name, id last, i64 entries_read (-1: unknown), u32
/// nconsumers` with per consumer `bytes name, u64 seen_ms`, then `u64
/// npending` with per entry `id, u32 consumer index, u64 delivery_ms, u64
/// delivery_count`; then `u32 n` rebuild commands encoded like batch
/// commands, replayed after the keys load: the CONFIG SET of the block
/// limits in force at the snapshot. IDs are two u64s.
///
/// Version 2 (still read) has no `next_stream_id`, `disordered`,
/// `storage_id` nor block tags: every block is `id master, bytes encoded`.
///
/// Full blocks not stored yet are returned as [`SealJob`]s: their `tag 1`
/// records are written with a zero location that [`Snapshot::patch`] fills
/// once the block is in its stream's segment file.
pub fn encode_snapshot(store: &mut Store, rebuild: &[(usize, Vec<Bytes>)]) -> Snapshot {
    let mut out = Vec::new();
    let mut jobs = Vec::new();
    let mut referenced: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    let cache = store.block_cache.clone();
    let mut next_stream_id = store.next_stream_id;
    out.extend_from_slice(&next_stream_id.to_le_bytes());
    let ndb = store.dbs.iter().filter(|d| !d.is_empty()).count();
    put_u32(&mut out, ndb);
    for (i, db) in store.dbs.iter_mut().enumerate() {
        if db.is_empty() {
            continue;
        }
        put_u32(&mut out, i);
        out.extend_from_slice(&(db.len() as u64).to_le_bytes());
        for (k, v) in db.iter_mut() {
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
                        put_id(&mut out, id);
                    }
                    out.extend_from_slice(&m.entries_added.to_le_bytes());
                    out.push(u8::from(s.is_disordered()));
                    // Only with persistence on (a cache) are blocks stored.
                    let blocks = match &cache {
                        Some(_) => s.seal_snapshot(),
                        None => s
                            .blocks()
                            .map(|b| SnapBlock::Inline {
                                master: b.master_id(),
                                bytes: b.encoded().to_vec(),
                            })
                            .collect(),
                    };
                    let needs_storage = blocks
                        .iter()
                        .any(|b| !matches!(b, SnapBlock::Inline { .. }));
                    if needs_storage && s.storage().is_none() {
                        if let Some(cache) = &cache {
                            s.set_storage(Storage {
                                id: next_stream_id,
                                cache: cache.clone(),
                            });
                            next_stream_id += 1;
                        }
                    }
                    let sid = s.storage().map_or(0, |st| st.id);
                    out.extend_from_slice(&sid.to_le_bytes());
                    out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
                    for b in blocks {
                        match b {
                            SnapBlock::Inline { master, bytes } => {
                                out.push(0);
                                put_id(&mut out, master);
                                put_bytes(&mut out, &bytes);
                            }
                            SnapBlock::Stored {
                                master,
                                summary,
                                loc,
                            } => {
                                put_stored(&mut out, master, &summary);
                                put_loc(&mut out, loc);
                                referenced.entry(sid).or_default().insert(loc.segment);
                            }
                            SnapBlock::Seal {
                                master,
                                summary,
                                bytes,
                                ticket,
                            } => {
                                put_stored(&mut out, master, &summary);
                                jobs.push(SealJob {
                                    stream: sid,
                                    master,
                                    last: summary.last_id,
                                    bytes,
                                    ticket,
                                    patch_at: out.len(),
                                });
                                put_loc(
                                    &mut out,
                                    BlockLoc {
                                        segment: 0,
                                        offset: 0,
                                        len: 0,
                                    },
                                );
                            }
                        }
                    }
                    encode_groups(&mut out, s);
                }
            }
        }
    }
    // Times to live ride as rebuild commands (`PEXPIREAT key ms`, replayed
    // after the keys while nothing expires), so the body format is unchanged.
    let expiries: Vec<(usize, Vec<Bytes>)> = store
        .dbs
        .iter()
        .enumerate()
        .flat_map(|(i, db)| {
            db.expires().iter().map(move |(k, when)| {
                let when = Bytes::from(when.to_string());
                (i, vec![Bytes::from_static(b"PEXPIREAT"), k.clone(), when])
            })
        })
        .collect();
    put_u32(&mut out, rebuild.len() + expiries.len());
    for (db, argv) in rebuild.iter().chain(&expiries) {
        put_cmd(&mut out, *db, argv);
    }
    store.next_stream_id = next_stream_id;
    out[..8].copy_from_slice(&next_stream_id.to_le_bytes());
    Snapshot {
        body: out,
        jobs,
        referenced,
    }
}

/// A checkpoint body and the blocks to store before writing it.
pub struct Snapshot {
    pub body: Vec<u8>,
    pub jobs: Vec<SealJob>,
    /// Segment files (by stream id) that the body's stored blocks live in.
    pub referenced: HashMap<u64, BTreeSet<u64>>,
}

/// A full block to store in its stream's segment file.
pub struct SealJob {
    stream: u64,
    master: StreamId,
    last: StreamId,
    bytes: Arc<Vec<u8>>,
    ticket: Arc<SealTicket>,
    /// Where its location goes in the body.
    patch_at: usize,
}

impl Snapshot {
    /// Store every sealed block (appending to the streams' segment files),
    /// and write their locations into the body. Not durable until
    /// `streams.sync()`.
    fn store_blocks(&mut self, streams: &StreamStore) -> Result<(), StorageError> {
        for job in &self.jobs {
            let l = streams.append_block(
                StreamKeyId(job.stream),
                EntryId::new(job.master.ms, job.master.seq),
                EntryId::new(job.last.ms, job.last.seq),
                &job.bytes,
            )?;
            let loc = BlockLoc {
                segment: l.segment,
                offset: l.offset,
                len: l.len,
            };
            let mut enc = Vec::with_capacity(24);
            put_loc(&mut enc, loc);
            self.body[job.patch_at..job.patch_at + 24].copy_from_slice(&enc);
            self.referenced
                .entry(job.stream)
                .or_default()
                .insert(loc.segment);
        }
        Ok(())
    }

    /// After the checkpoint is durable: the stored blocks' nodes may now
    /// drop their bytes. Returns the bytes made evictable.
    fn publish(&self) -> u64 {
        let mut bytes = 0;
        for job in &self.jobs {
            // The location was written into the body by store_blocks.
            let mut r = Reader {
                b: &self.body[job.patch_at..job.patch_at + 24],
                pos: 0,
            };
            if let (Ok(segment), Ok(offset), Ok(len)) = (r.u64(), r.u64(), r.u64()) {
                job.ticket.fill(BlockLoc {
                    segment,
                    offset,
                    len,
                });
                bytes += job.bytes.len() as u64;
            }
        }
        bytes
    }
}

fn put_stored(out: &mut Vec<u8>, master: StreamId, s: &Summary) {
    out.push(1);
    put_id(out, master);
    out.extend_from_slice(&s.live.to_le_bytes());
    out.extend_from_slice(&s.deleted.to_le_bytes());
    out.extend_from_slice(&s.listpack_bytes.to_le_bytes());
    put_id(out, s.last_id);
}

fn put_loc(out: &mut Vec<u8>, loc: BlockLoc) {
    out.extend_from_slice(&loc.segment.to_le_bytes());
    out.extend_from_slice(&loc.offset.to_le_bytes());
    out.extend_from_slice(&loc.len.to_le_bytes());
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
pub fn decode_snapshot(
    version: u8,
    body: &[u8],
    store: &mut Store,
) -> Result<Vec<(usize, Vec<Bytes>)>, String> {
    let mut r = Reader { b: body, pos: 0 };
    if version >= 3 {
        store.next_stream_id = store.next_stream_id.max(r.u64()?);
    }
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
                    let mut s = if version >= 3 {
                        decode_stream_v3(&mut r, meta, &key, store)?
                    } else {
                        let nblocks = r.u64()?;
                        let mut blocks = Vec::new();
                        for _ in 0..nblocks {
                            let master = r.id()?;
                            let buf = r.bytes()?;
                            let b = Block::from_parts(master, buf.to_vec())
                                .map_err(|e| format!("bad block {master} of key {key:?}: {e:?}"))?;
                            blocks.push(b);
                        }
                        Stream::restore(meta, blocks)
                    };
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

/// A v3 stream's blocks: inline ones are rebuilt (and checked) from their
/// bytes, stored ones keep only their summary and location until read.
fn decode_stream_v3(
    r: &mut Reader<'_>,
    meta: StreamMeta,
    key: &[u8],
    store: &mut Store,
) -> Result<Stream, String> {
    let disordered = r.u8()? != 0;
    let sid = r.u64()?;
    let nblocks = r.u64()?;
    let mut blocks = Vec::new();
    for _ in 0..nblocks {
        let tag = r.u8()?;
        let master = r.id()?;
        blocks.push(match tag {
            0 => {
                let buf = r.bytes()?;
                let b = Block::from_parts(master, buf.to_vec())
                    .map_err(|e| format!("bad block {master} of key {key:?}: {e:?}"))?;
                RestoredBlock::Resident(b)
            }
            1 => {
                let summary = Summary {
                    live: r.u64()?,
                    deleted: r.u64()?,
                    listpack_bytes: r.u64()?,
                    last_id: r.id()?,
                };
                let loc = BlockLoc {
                    segment: r.u64()?,
                    offset: r.u64()?,
                    len: r.u64()?,
                };
                if summary.entry_count() == 0 || summary.last_id < master && !disordered {
                    return Err(format!("bad stored block {master} of key {key:?}"));
                }
                RestoredBlock::Stored {
                    master,
                    summary,
                    loc,
                }
            }
            t => return Err(format!("unknown block tag {t} in key {key:?}")),
        });
    }
    let storage = if sid == 0 {
        None
    } else {
        let cache = store
            .block_cache
            .clone()
            .ok_or("checkpoint has stored blocks but no block store is open")?;
        store.next_stream_id = store.next_stream_id.max(sid + 1);
        Some(Storage { id: sid, cache })
    };
    if storage.is_none()
        && blocks
            .iter()
            .any(|b| matches!(b, RestoredBlock::Stored { .. }))
    {
        return Err(format!("stored blocks without a storage id in key {key:?}"));
    }
    Ok(Stream::restore_nodes(meta, disordered, storage, blocks))
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

/// Replay one record's commands (or a checkpoint's rebuild commands, `seq`
/// 0). A command that fails is fatal unless `replay-errors skip` says
/// otherwise: Redis refuses to load an AOF whose commands fail, and a
/// skipped effect is a silent divergence from what clients were told.
fn replay(
    session: &mut Session,
    cmds: Vec<(usize, Vec<Bytes>)>,
    seq: u64,
    skip_errors: bool,
    out: &mut Recovered,
) -> Result<(), String> {
    let result = replay_cmds(session, cmds, seq, skip_errors, out);
    session.shared().store.lock().clear_effects();
    result
}

fn replay_cmds(
    session: &mut Session,
    cmds: Vec<(usize, Vec<Bytes>)>,
    seq: u64,
    skip_errors: bool,
    out: &mut Recovered,
) -> Result<(), String> {
    for (i, (db, argv)) in cmds.into_iter().enumerate() {
        let place = || match seq {
            0 => format!("checkpoint rebuild command {i}"),
            _ => format!("commit log record {seq}, command {i}"),
        };
        out.commands += 1;
        let what = if db == SUBSYSTEM_DB {
            match replay_subsystem(session.shared(), &argv) {
                Ok(()) => continue,
                Err(e) => format!("{} (a subsystem's effect) failed on replay: {e}", place()),
            }
        } else {
            let name = argv
                .first()
                .map(|n| String::from_utf8_lossy(n).into_owned());
            let reply = session.call_in_db(db, argv);
            let Reply::Error(e) = &reply else { continue };
            format!(
                "{} ({}) failed on replay: {}",
                place(),
                name.as_deref().unwrap_or("?"),
                String::from_utf8_lossy(e)
            )
        };
        if !skip_errors {
            return Err(format!(
                "{what}. Refusing to start; `replay-errors skip` starts anyway, \
                 skipping such commands (an operator decision)"
            ));
        }
        out.replay_errors += 1;
        tracing::warn!("{what} (skipped: replay-errors skip)");
    }
    Ok(())
}

/// Hand a logged subsystem effect (`[name, effect]`) to its subsystem.
fn replay_subsystem(shared: &Arc<Shared>, item: &[Bytes]) -> Result<(), String> {
    let [name, effect] = item else {
        return Err(format!(
            "{} parts instead of a name and an effect",
            item.len()
        ));
    };
    let name = String::from_utf8_lossy(name);
    let sub = shared
        .subsystem(&name)
        .ok_or_else(|| format!("no subsystem '{name}' in this build"))?;
    let mut store = shared.store.lock();
    sub.replay(&mut store, effect)
        .map_err(|e| format!("subsystem '{name}': {e}"))
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
        if let Some(cp) = recovery.take_checkpoint() {
            if !(2..=SNAPSHOT_VERSION).contains(&cp.body_version) {
                return Err(format!(
                    "checkpoint {} has body version {} (this build reads 2 to {SNAPSHOT_VERSION})",
                    cp.file.display(),
                    cp.body_version
                ));
            }
            let rebuild = {
                let mut store = shared.store.lock();
                decode_snapshot(cp.body_version, &cp.body, &mut store)
                    .map_err(|e| format!("checkpoint {}: {e}", cp.file.display()))?
            };
            rec.checkpoint_seq = cp.covered_seq;
            replay(&mut session, rebuild, 0, skip, &mut rec)?;
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
            block_cache,
            streams,
            read_failure: std::sync::OnceLock::new(),
            appended: AtomicU64::new(0),
            bytes_since_checkpoint: AtomicU64::new(0),
            threshold_checked_mib: AtomicU64::new(0),
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
        store: &mut Store,
        cfg: &crate::config::Config,
    ) -> Option<(u64, Snapshot)> {
        if self.checkpoint_running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let covered = self.log.next_seq().saturating_sub(1);
        let rebuild = vec![(0, data_config_command(cfg))];
        let snap = encode_snapshot(store, &rebuild);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
        Some((covered, snap))
    }

    /// Write a snapshot taken by [`Persistence::begin_checkpoint`]. Blocking
    /// file I/O: call from a blocking thread, without the store lock.
    ///
    /// IMPORTANT, the order that keeps every checkpoint loadable: (1) append
    /// the sealed blocks to their segment files and fsync them (and their
    /// directories); (2) write the checkpoint (temp, fsync, rename, dir
    /// fsync), which references them; (3) only then let their nodes drop
    /// their bytes, and delete the segment files this checkpoint does not
    /// reference (no later start can need them:
    /// it loads this checkpoint or a newer one).
    pub fn finish_checkpoint(
        &self,
        covered: u64,
        mut snap: Snapshot,
        cache: Option<&BlockCache>,
    ) -> Result<(), StorageError> {
        let r = snap
            .store_blocks(&self.streams)
            .and_then(|_| self.streams.sync())
            .and_then(|_| self.log.checkpoint(covered, SNAPSHOT_VERSION, &snap.body));
        if r.is_ok() {
            self.checkpoints_done.fetch_add(1, Ordering::Relaxed);
            let bytes = snap.publish();
            if let Some(c) = cache {
                c.add_grown(bytes);
            }
            if let Err(e) = self.collect_garbage(&snap.referenced) {
                tracing::warn!("deleting unreferenced stream segments failed: {e}");
            }
        }
        self.checkpoint_running.store(false, Ordering::Release);
        let _g = self.idle_lock.lock();
        self.idle.notify_all();
        r.map(|_| ())
    }

    /// Delete the stream segment files that the checkpoint just written
    /// does not reference (trimmed or rewritten blocks, deleted
    /// streams, blocks of a checkpoint that failed half-way).
    fn collect_garbage(
        &self,
        referenced: &HashMap<u64, BTreeSet<u64>>,
    ) -> Result<(), StorageError> {
        for sid in self.streams.list_streams()? {
            let Some(keep) = referenced.get(&sid.0) else {
                self.streams.delete_stream(sid)?;
                continue;
            };
            let dead: Vec<u64> = self
                .streams
                .segments(sid)?
                .iter()
                .map(|s| s.number)
                .filter(|n| !keep.contains(n))
                .collect();
            if !dead.is_empty() {
                self.streams.delete_segments(sid, &dead)?;
            }
        }
        self.streams.sync()
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
    let _ = PARKING.set(Arc::downgrade(&p));
    let fresh = shared.persist.set(p).is_ok();
    shared.store.lock().logging = true;
    fresh
}

/// The log the tokio workers look at before they park (the first server
/// of the process; not kept alive by this).
static PARKING: std::sync::OnceLock<std::sync::Weak<Persistence>> = std::sync::OnceLock::new();

/// At most this long a worker about to park waits for the log writer.
const PARK_SPIN_MAX: std::time::Duration = std::time::Duration::from_micros(50);

/// Called by a tokio worker about to park (`on_thread_park`): under
/// `everysec`/`no`, if records were appended that the writer has not
/// written yet, yield the CPU (for at most 50 µs) until it has. Without
/// pipelining every connection then waits for that one `pwrite`; the
/// writer's wake-ups arrive while the worker is still running and it does
/// not sleep, which on a VM costs about 10 µs of CPU per sleep and wake-up
/// (docs/storage.md §15.3). Not under `always`: an fsync takes longer. Only
/// a hint: nothing depends on it for correctness (tokio re-checks its
/// queues after this hook, before it parks).
pub fn before_park() {
    if let Some(p) = PARKING.get().and_then(std::sync::Weak::upgrade) {
        p.spin_for_acks();
    }
}

impl Persistence {
    fn spin_for_acks(&self) {
        if self.log.fsync_policy() == AppendFsync::Always {
            return;
        }
        let target = self.appended.load(Ordering::Acquire);
        let done = || self.log.acked_seq() >= target || self.log.failure().is_some();
        if done() {
            return;
        }
        let start = std::time::Instant::now();
        while start.elapsed() < PARK_SPIN_MAX {
            std::thread::yield_now();
            if done() {
                return;
            }
        }
    }
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
    // A stored block that could not be read back (I/O error, corruption)
    // made the command see less than the stream holds: it replies an error,
    // and writes are refused from now on (see `Shared::write_error`).
    let read_error = store.block_cache.as_ref().and_then(|c| c.take_error());
    if let Some(e) = &read_error {
        tracing::error!("reading a stored stream block failed: {e}");
        if let Some(p) = shared.persist.get() {
            p.set_read_failure(e.clone());
        }
    }
    let result = commit_effects(shared, store);
    store.maybe_evict();
    match read_error {
        Some(e) => Commit::Failed(format!("ERR reading stored stream data failed: {e}")),
        None => result,
    }
}

fn commit_effects(shared: &Arc<Shared>, store: &mut Store) -> Commit {
    if store.pending_cmds == 0 {
        return Commit::Done;
    }
    let Some(p) = shared.persist.get() else {
        store.clear_effects();
        return Commit::Done;
    };
    let result = match p.append_encoded(&store.pending_log, store.pending_cmds) {
        Ok(seq) => Commit::Wait(seq),
        Err(e) => Commit::Failed(misconf_message(&e)),
    };
    // Cleared, not taken: its capacity serves the next command.
    store.clear_effects();
    // NOTE: past the first MiB since the last checkpoint, the configuration
    // lock is taken once per MiB logged, not per command (a checkpoint then
    // starts within 1 MiB past its threshold).
    let logged = p.log_bytes();
    let mib = logged >> 20;
    let due = (mib == 0 || mib != p.threshold_checked_mib.load(Ordering::Relaxed)) && {
        p.threshold_checked_mib.store(mib, Ordering::Relaxed);
        logged >= shared.config.read().auto_checkpoint_min_size
    };
    if due && !p.checkpoint_running() {
        let snap = p.begin_checkpoint(store, &shared.config.read());
        if let Some((covered, body)) = snap {
            let p = p.clone();
            let cache = store.block_cache.clone();
            // IMPORTANT: checkpoint file I/O runs on its own thread, never on
            // a tokio worker and never under the store lock.
            let spawned = std::thread::Builder::new()
                .name("ferrite-checkpoint".into())
                .spawn(move || {
                    if let Err(e) = p.finish_checkpoint(covered, body, cache.as_deref()) {
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
    let cache = shared.store.lock().block_cache.clone();
    for _ in 0..10 {
        snap = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&mut store, &cfg)
        };
        if snap.is_some() || !p.wait_checkpoint_idle(std::time::Duration::from_secs(120)) {
            break;
        }
    }
    match snap {
        Some((covered, body)) => {
            if let Err(e) = p.finish_checkpoint(covered, body, cache.as_deref()) {
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

    /// A damaged checkpoint body (the file's CRC would catch it first; this
    /// is defence in depth) is an error or a state, never a panic: every
    /// truncation and every single-byte change of a v3 body with stored
    /// blocks, inline blocks, strings and consumer groups.
    #[test]
    fn damaged_v3_bodies_never_panic() {
        let dir = temp_dir("damaged-body");
        let shared = open(&dir, "3");
        let mut s = Session::internal(shared.clone());
        for i in 1..=10 {
            call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
        }
        call(&mut s, &["XGROUP", "CREATE", "s", "g", "0"]);
        call(
            &mut s,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "4",
                "STREAMS",
                "s",
                ">",
            ],
        );
        call(&mut s, &["SET", "k", "v"]);
        let mut snap = {
            let mut store = shared.store.lock();
            encode_snapshot(&mut store, &[(0, data_config_command(&Config::default()))])
        };
        assert_eq!(snap.jobs.len(), 3, "three full blocks to store");
        // Give the stored blocks made-up locations (nothing reads them here).
        for (n, job) in snap.jobs.iter().enumerate() {
            let mut enc = Vec::new();
            put_loc(
                &mut enc,
                BlockLoc {
                    segment: 1,
                    offset: n as u64 * 100,
                    len: 100,
                },
            );
            snap.body[job.patch_at..job.patch_at + 24].copy_from_slice(&enc);
        }
        let cache = shared.store.lock().block_cache.clone();
        let fresh = || {
            let mut st = Store::new(16, 0);
            st.block_cache = cache.clone();
            st
        };
        assert!(decode_snapshot(3, &snap.body, &mut fresh()).is_ok());
        for cut in 0..snap.body.len() {
            assert!(decode_snapshot(3, &snap.body[..cut], &mut fresh()).is_err());
        }
        for i in 0..snap.body.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut b = snap.body.clone();
                b[i] ^= v;
                let _ = decode_snapshot(3, &b, &mut fresh());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
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
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&mut store, &cfg)
        };
        let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        p.finish_checkpoint(covered, body, None)
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
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&mut store, &cfg)
        };
        let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        call(&mut s, &["XADD", "s", "2-1", "f", "v"]);
        let sh = shared.clone();
        let stopper = std::thread::spawn(move || shutdown(&sh));
        // The background checkpoint finishes while shutdown waits for it.
        p.finish_checkpoint(covered, body, None)
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
