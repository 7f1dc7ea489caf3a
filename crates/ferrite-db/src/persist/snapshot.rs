//! The checkpoint body: the keyspace framing (databases, keys, expiry,
//! type tag) around each value's own persisted form, the rebuild commands
//! and the subsystems' sections (docs/storage.md §13.4).

use super::*;

/// Checkpoint body v5: `u64 next_stream_id, u64 nkeys`; per key `u32 db,
/// bytes key, u64 expires_at_ms (0: no expiry), u8 kind` then the value in
/// its type's own form: kind 0 (string) `bytes value`, kind 1 (stream) as
/// `ferrite_streams::snapshot` writes it; then `u32 n` rebuild commands
/// encoded like batch commands, replayed after the keys load (the CONFIG
/// SET of the block limits in force at the snapshot); then `u32
/// nsections`, per section `bytes subsystem name, bytes state`
/// ([`Subsystem::snapshot`]; a [`Section::Deferred`] one is encoded by
/// [`Snapshot::assemble`]). Lengths are u32, integers little-endian. Keys
/// come in the order the cut wrote them, databases mixed.
///
/// Version 4 (still read) groups the keys by database: `u32 ndb`, per db
/// `u32 index, u64 nkeys`, per key the same without `db`. Version 3 also
/// has no expiry and no sections; version 2 also has no `next_stream_id`
/// and the older stream form.
///
/// Full blocks not stored yet are returned as [`SealJob`]s: their
/// locations are written as zeros that [`Snapshot::store_blocks`] patches
/// once the block is in its stream's segment file.
///
/// Taken with the store locked, all at once (SAVE, DEBUG RELOAD, shutdown,
/// tests): [`begin_cut`], then [`walk_whole`]. A background
/// checkpoint takes the walk in steps instead, the lock released between
/// them (`Persistence::start_checkpoint`).
pub fn encode_snapshot(
    store: &mut Store,
    rebuild: &[(usize, Vec<Bytes>)],
    sections: Vec<(String, Section)>,
) -> Snapshot {
    let cut = begin_cut(store, 0, rebuild.to_vec(), sections);
    walk_whole(store, cut).1
}

/// The rest of a cut's walk in this one hold of the lock, then its end
/// ([`end_cut`]).
pub fn walk_whole(store: &mut Store, cut: Cut) -> (u64, Snapshot) {
    while !cut_step(store, usize::MAX) {}
    end_cut(store, cut)
}

/// What the keys of a checkpoint cut are written with: by the cut's walk,
/// or by the first change to a key still due ([`crate::store::Db`]'s
/// hooks). Shared by the databases' cuts; always used under the store
/// lock (its own lock is never contended).
#[derive(Default)]
pub struct CutWriter {
    out: Vec<u8>,
    st: SnapshotState,
    /// The streams (db, slot) that hand blocks out: the next settling's.
    settle_keys: Vec<(usize, usize)>,
    /// Keys written so far.
    keys: u64,
}

impl std::fmt::Debug for CutWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutWriter")
            .field("bytes", &self.out.len())
            .field("keys", &self.keys)
            .finish()
    }
}

impl CutWriter {
    /// Write one key as it is now (it is due: not changed since the cut).
    /// Copies only what changed since the last checkpoint: each stream's
    /// stored blocks encoded then, and large values, are taken by reference
    /// ([`Insert`]) and put into the body by [`Snapshot::assemble`], off
    /// the lock (docs/storage.md, "The snapshot's lock hold").
    pub(crate) fn write_key(
        &mut self,
        db: usize,
        slot: usize,
        k: &Bytes,
        when: u64,
        v: &mut Value,
    ) {
        let out = &mut self.out;
        put_u32(out, db);
        put_bytes(out, k);
        out.extend_from_slice(&when.to_le_bytes());
        v.write_snapshot(out, &mut self.st);
        if matches!(v, Value::Stream(s) if s.settling()) {
            self.settle_keys.push((db, slot));
        }
        self.keys += 1;
    }
}

/// A checkpoint cut in progress: what goes after the keys, taken at the
/// cut. Held by whoever ends it (the checkpoint thread), not by the store.
pub struct Cut {
    writer: Arc<parking_lot::Mutex<CutWriter>>,
    /// Keys present at the cut: the body's count.
    nkeys: u64,
    /// The last sequence number of the commit log the cut covers.
    covered: u64,
    rebuild: Vec<(usize, Vec<Bytes>)>,
    sections: Vec<(String, Section)>,
    /// The settle list before the cut (emptied with the snapshot).
    old_settle_keys: Vec<(usize, usize)>,
}

/// Cut the keyspace for a checkpoint covering the log through `covered`
/// (call with the store locked): from now on each key present is written
/// as it is at this instant, by [`cut_step`] or just before its first
/// change, whichever comes first; a key added later is not in it. The
/// subsystems' `sections` and the `rebuild` commands are of this instant
/// too. O(databases): no key is visited. IMPORTANT: one cut at a time
/// (the caller holds `checkpoint_running`).
pub fn begin_cut(
    store: &mut Store,
    covered: u64,
    rebuild: Vec<(usize, Vec<Bytes>)>,
    sections: Vec<(String, Section)>,
) -> Cut {
    let (written, sealed) = store.snapshot_hint;
    // The last snapshot's buffers, emptied on the checkpoint thread: pages
    // already mapped, and no large allocation under the lock (one was 10%
    // of the hold: glibc consolidates its free lists first).
    let spare = std::mem::take(&mut *store.snapshot_buffers.lock());
    // Half as much again as last time: under a growing load a buffer that
    // grows under the lock copies itself into fresh pages (a third of one
    // hold in the server, in page faults).
    let mut out = spare.written;
    out.reserve(written + written / 2);
    let mut jobs = spare.jobs;
    jobs.reserve(sealed + sealed / 2);
    let st = SnapshotState {
        jobs,
        inserts: spare.inserts,
        fills: spare.fills,
        garbage: spare.garbage,
        handed_back: spare.handed_back,
        lists: spare.lists,
        cache: store.block_cache.clone(),
        next_storage_id: store.next_stream_id,
        ..SnapshotState::default()
    };
    let nkeys: u64 = store.dbs.iter().map(|d| d.len() as u64).sum();
    // `next_stream_id` is patched in when the cut ends.
    out.extend_from_slice(&st.next_storage_id.to_le_bytes());
    out.extend_from_slice(&nkeys.to_le_bytes());
    let writer = Arc::new(parking_lot::Mutex::new(CutWriter {
        out,
        st,
        settle_keys: spare.settle_keys,
        keys: 0,
    }));
    for (i, db) in store.dbs.iter_mut().enumerate() {
        db.begin_cut(i, &writer);
    }
    // The last list (empty unless settling was cut short) is emptied with
    // the snapshot, off the lock; the streams still settling are written
    // to the new one.
    let old_settle_keys = std::mem::take(&mut store.settle_keys);
    Cut {
        writer,
        nkeys,
        covered,
        rebuild,
        sections,
        old_settle_keys,
    }
}

/// One step of the running cut's walk (store locked): at most `budget`
/// keys written, and no more once [`CUT_STEP_TIME`] has passed (a key with
/// a large value inline may take long). True once every key of the cut is
/// written (or when no cut runs): then [`end_cut`]. `usize::MAX` walks it
/// all, however long it takes.
pub fn cut_step(store: &mut Store, budget: usize) -> bool {
    let t = std::time::Instant::now();
    let timed = budget != usize::MAX;
    let mut left = budget;
    'dbs: for db in &mut store.dbs {
        while left > 0 && db.cutting() {
            // A few keys at a time between looks at the clock.
            let mut chunk = if timed { left.min(32) } else { left };
            let given = chunk;
            db.cut_step(&mut chunk);
            left -= given - chunk;
            if timed && t.elapsed() >= CUT_STEP_TIME {
                break 'dbs;
            }
        }
    }
    !store.dbs.iter().any(|d| d.cutting())
}

/// How long one step of a cut's walk goes on writing keys.
pub const CUT_STEP_TIME: std::time::Duration = std::time::Duration::from_micros(400);

/// End the cut once [`cut_step`] said so (store locked): what follows the
/// keys appended; the log sequence the snapshot covers, and the snapshot.
pub fn end_cut(store: &mut Store, cut: Cut) -> (u64, Snapshot) {
    debug_assert!(!store.dbs.iter().any(|d| d.cutting()), "cut not walked");
    let Cut {
        writer,
        nkeys,
        covered,
        rebuild,
        sections,
        old_settle_keys,
    } = cut;
    let CutWriter {
        mut out,
        mut st,
        settle_keys,
        keys,
    } = std::mem::take(&mut *writer.lock());
    if keys != nkeys {
        // The body says `nkeys`: its read-back fails, and the checkpoint
        // with it, rather than a checkpoint without some keys.
        tracing::error!("checkpoint cut wrote {keys} keys of {nkeys}");
        debug_assert_eq!(keys, nkeys, "checkpoint cut");
    }
    store.settle_keys = settle_keys;
    st.done();
    put_u32(&mut out, rebuild.len());
    for (db, argv) in &rebuild {
        put_cmd(&mut out, *db, argv);
    }
    put_u32(&mut out, sections.len());
    for (name, state) in sections {
        put_bytes(&mut out, name.as_bytes());
        match state {
            Section::Bytes(b) => put_bytes(&mut out, &b),
            // Framed as `bytes` once encoded: the length is patched in
            // front of what the encoder appended. (Inserts go in body
            // order: these come after every key's.)
            Section::Deferred(f) => st.insert(
                out.len(),
                Insert::Encode(Box::new(move |o: &mut Vec<u8>| {
                    let at = o.len();
                    o.extend_from_slice(&[0; 4]);
                    f(o);
                    let len = (o.len() - at - 4) as u32;
                    o[at..at + 4].copy_from_slice(&len.to_le_bytes());
                })),
            ),
        }
    }
    store.next_stream_id = st.next_storage_id;
    // What was written under the lock (the lists' blocks are written by
    // `assemble`).
    store.snapshot_hint = (out.len(), st.jobs.len());
    out[..8].copy_from_slice(&st.next_storage_id.to_le_bytes());
    (
        covered,
        Snapshot {
            body: out,
            inserts: st.inserts,
            _garbage: (st.garbage, old_settle_keys),
            fills: st.fills,
            jobs: st.jobs,
            referenced: st.referenced,
            buffers: store.snapshot_buffers.clone(),
            listed: st.listed,
            lists: st.lists,
        },
    )
}

/// A snapshot's buffers, emptied off the store lock and handed to the next
/// snapshot (`Store::snapshot_buffers`): the bytes written under the lock
/// (given back once assembled), the jobs, the inserts, the runs' fills,
/// the garbage lists, the settle list and the emptied sealed lists (given
/// back when the snapshot is dropped), and what the last durable checkpoint hands back to the
/// streams' runs (put here by [`Snapshot::publish`]). They keep about the last snapshot's size allocated between
/// checkpoints. Why: any allocation of a KiB or more under the lock made
/// glibc consolidate the small chunks the commands had freed first (10%
/// of the hold with 1,000 streams), and growing a buffer copies it.
#[derive(Default)]
pub struct SnapshotBuffers {
    written: Vec<u8>,
    jobs: Vec<SealJob>,
    inserts: Vec<(usize, Insert)>,
    fills: Vec<RunFill>,
    garbage: Garbage,
    settle_keys: Vec<(usize, usize)>,
    handed_back: HandBack,
    lists: ListPool,
}

/// A checkpoint body and the blocks to store before writing it.
pub struct Snapshot {
    /// The body once [`Snapshot::assemble`] ran; before, the bytes written
    /// under the lock, without `inserts`.
    pub body: Vec<u8>,
    /// What [`Snapshot::assemble`] puts into `body`.
    pub(crate) inserts: Vec<(usize, Insert)>,
    /// Freed with the snapshot, off the lock.
    _garbage: (Garbage, Vec<(usize, usize)>),
    /// Streams' runs to give the entries of their stored blocks.
    fills: Vec<RunFill>,
    pub jobs: Vec<SealJob>,
    /// Segment files (by stream id) that the body's stored blocks live in.
    pub referenced: HashMap<u64, BTreeSet<u64>>,
    /// Where its buffers go back to, emptied.
    buffers: Arc<parking_lot::Mutex<SnapshotBuffers>>,
    /// Streams written from their sealed lists (no walk of their blocks).
    pub listed: usize,
    /// Emptied sealed lists: the spares this snapshot did not use, and
    /// those [`Snapshot::assemble`] emptied.
    lists: ListPool,
}

impl Drop for Snapshot {
    /// Empties the jobs, fills and garbage here (off the lock: the blocks'
    /// bytes and tickets are freed with them) and hands the buffers to the
    /// next snapshot.
    fn drop(&mut self) {
        let mut jobs = std::mem::take(&mut self.jobs);
        jobs.clear();
        let mut fills = std::mem::take(&mut self.fills);
        fills.clear();
        let mut inserts = std::mem::take(&mut self.inserts);
        inserts.clear();
        let (mut garbage, mut settle_keys) = std::mem::take(&mut self._garbage);
        garbage.clear();
        settle_keys.clear();
        let lists = std::mem::take(&mut self.lists);
        let mut spare = self.buffers.lock();
        spare.jobs = jobs;
        spare.lists = lists;
        spare.fills = fills;
        spare.garbage = garbage;
        spare.settle_keys = settle_keys;
        if spare.inserts.capacity() < inserts.capacity() {
            spare.inserts = inserts;
        }
    }
}

impl Snapshot {
    /// Put the body together (the shared runs copied, the shared values
    /// encoded, the jobs' positions moved): the first step on the
    /// checkpoint thread, without the store lock. It drops the snapshot's
    /// references, so the keyspace's next write to a shared value does not
    /// copy it. Does nothing the second time.
    pub fn assemble(&mut self) {
        if self.inserts.is_empty() {
            return;
        }
        let mut written = std::mem::take(&mut self.body);
        self.body = assemble_from(
            &written,
            &mut self.inserts,
            &mut self.jobs,
            &mut self.referenced,
            &mut self.lists,
        );
        written.clear();
        let inserts = std::mem::take(&mut self.inserts);
        let mut spare = self.buffers.lock();
        spare.written = written;
        spare.inserts = inserts;
    }

    /// [`Snapshot::assemble`], by value.
    pub fn assembled(mut self) -> Snapshot {
        self.assemble();
        self
    }

    /// Store every sealed block (appending to the streams' segment files),
    /// and write their locations into the body. Not durable until
    /// `streams.sync()`.
    pub(crate) fn store_blocks(&mut self, streams: &StreamStore) -> Result<(), StorageError> {
        for job in &self.jobs {
            let (l, packed) = streams.append_block_packed(
                StreamKeyId(job.stream),
                EntryId::new(job.master.ms, job.master.seq),
                EntryId::new(job.last.ms, job.last.seq),
                &job.bytes,
            )?;
            if let Some(p) = packed {
                job.keep_packed(p);
            }
            let loc = BlockLoc {
                segment: l.segment,
                offset: l.offset,
                len: l.len,
            };
            job.patch(&mut self.body, loc);
            self.referenced
                .entry(job.stream)
                .or_default()
                .insert(loc.segment);
        }
        Ok(())
    }

    /// After the checkpoint is durable: the stored blocks' nodes may now
    /// drop their bytes. Returns the bytes made evictable.
    pub(crate) fn publish(&self) -> u64 {
        let bytes = self.jobs.iter().map(|job| job.publish(&self.body)).sum();
        let back = publish_runs(&self.fills, &self.jobs, &self.body);
        // The one it replaces (never taken: no snapshot since) is freed
        // after the buffers' lock is released.
        let _old = std::mem::replace(&mut self.buffers.lock().handed_back, back);
        bytes
    }
}

/// What a checkpoint body holds besides the keys it loads.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Commands to replay after the keys load.
    pub rebuild: Vec<(usize, Vec<Bytes>)>,
    /// Each subsystem's state: `(name, bytes)`.
    pub sections: Vec<(String, Bytes)>,
}

/// Load a checkpoint body into an empty store.
pub fn decode_snapshot(version: u8, body: &[u8], store: &mut Store) -> Result<Decoded, String> {
    let mut r = Reader::new(body);
    if version >= 3 {
        store.next_stream_id = store.next_stream_id.max(r.u64()?);
    }
    // One key of database `idx`.
    let read_key = |r: &mut Reader<'_>, store: &mut Store, idx: usize| -> Result<(), String> {
        if idx >= store.dbs.len() {
            return Err(format!(
                "checkpoint has db {idx}, server has {} databases",
                store.dbs.len()
            ));
        }
        let key = Bytes::copy_from_slice(r.bytes()?);
        let when = if version >= 4 { r.u64()? } else { 0 };
        let cache = store.block_cache.clone();
        let value = Value::read_snapshot(r, version, &key, cache.as_ref(), store.next_stream_id)?;
        if store.dbs[idx].contains(&key) {
            return Err(format!("key {key:?} twice in db {idx}"));
        }
        store.dbs[idx].insert(key.clone(), value);
        if when != 0 {
            store.dbs[idx].set_expiry(&key, when);
        }
        Ok(())
    };
    if version >= 5 {
        let nkeys = r.u64()?;
        for _ in 0..nkeys {
            let idx = r.u32()?;
            read_key(&mut r, store, idx)?;
        }
    } else {
        let ndb = r.u32()?;
        for _ in 0..ndb {
            let idx = r.u32()?;
            let nkeys = r.u64()?;
            for _ in 0..nkeys {
                read_key(&mut r, store, idx)?;
            }
        }
    }
    let mut out = Decoded::default();
    let n = r.u32()?;
    for _ in 0..n {
        out.rebuild.push(read_cmd(&mut r, body.len())?);
    }
    if version >= 4 {
        let n = r.u32()?;
        for _ in 0..n {
            let name = String::from_utf8(r.bytes()?.to_vec())
                .map_err(|_| "a section name that is not UTF-8".to_string())?;
            let state = Bytes::copy_from_slice(r.bytes()?);
            if out.sections.iter().any(|(n, _)| *n == name) {
                return Err(format!("section '{name}' twice"));
            }
            out.sections.push((name, state));
        }
    }
    if !r.done() {
        return Err(format!(
            "trailing bytes in checkpoint at byte {}",
            r.position()
        ));
    }
    Ok(out)
}

/// The segment files each stream's stored blocks live in, by storage id.
pub(crate) fn referenced_segments(store: &Store) -> HashMap<u64, BTreeSet<u64>> {
    let mut out: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for db in &store.dbs {
        for (_, v) in db.iter() {
            if let Value::Stream(s) = v {
                if let Some(st) = s.storage() {
                    let set = out.entry(st.id).or_default();
                    s.stored_segments(|seg| {
                        set.insert(seg);
                    });
                }
            }
        }
    }
    out
}
