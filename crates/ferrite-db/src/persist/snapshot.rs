//! The checkpoint body: the keyspace framing (databases, keys, expiry,
//! type tag) around each value's own persisted form, the rebuild commands
//! and the subsystems' sections (docs/storage.md §13.4).

use super::*;

/// Checkpoint body v4: `u64 next_stream_id, u32 ndb`; per db `u32 index,
/// u64 nkeys`; per key `bytes key, u64 expires_at_ms (0: no expiry), u8
/// kind` then the value in its type's own form: kind 0 (string) `bytes
/// value`, kind 1 (stream) as `ferrite_streams::snapshot` writes it; then
/// `u32 n` rebuild commands encoded like batch commands, replayed after the
/// keys load (the CONFIG SET of the block limits in force at the snapshot);
/// then `u32 nsections`, per section `bytes subsystem name, bytes state`
/// ([`Subsystem::snapshot`]; a [`Section::Deferred`] one is encoded by
/// [`Snapshot::assemble`]). Lengths are u32, integers little-endian.
///
/// Version 3 (still read) has no expiry and no sections; version 2 also
/// has no `next_stream_id` and the older stream form.
///
/// Full blocks not stored yet are returned as [`SealJob`]s: their
/// locations are written as zeros that [`Snapshot::store_blocks`] patches
/// once the block is in its stream's segment file.
///
/// Called with the store locked, it copies only what changed since the
/// last checkpoint: each stream's stored blocks encoded then, and large
/// values, and deferred subsystem sections, are taken by reference
/// ([`Insert`]) and put into the body by
/// [`Snapshot::assemble`], off the lock (docs/storage.md, "The snapshot's
/// lock hold").
pub fn encode_snapshot(
    store: &mut Store,
    rebuild: &[(usize, Vec<Bytes>)],
    sections: Vec<(String, Section)>,
) -> Snapshot {
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
    let mut st = SnapshotState {
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
    out.extend_from_slice(&st.next_storage_id.to_le_bytes());
    let ndb = store.dbs.iter().filter(|d| !d.is_empty()).count();
    put_u32(&mut out, ndb);
    // The last list (empty unless settling was cut short) is emptied with
    // the snapshot, off the lock, and is the next snapshot's buffer.
    let old_settle_keys = std::mem::take(&mut store.settle_keys);
    let mut settle_keys = spare.settle_keys;
    for (i, db) in store.dbs.iter_mut().enumerate() {
        if db.is_empty() {
            continue;
        }
        put_u32(&mut out, i);
        out.extend_from_slice(&(db.len() as u64).to_le_bytes());
        for (slot, k, v, when) in db.iter_mut_with_expiry() {
            put_bytes(&mut out, k);
            out.extend_from_slice(&when.to_le_bytes());
            v.write_snapshot(&mut out, &mut st);
            if matches!(v, Value::Stream(s) if s.settling()) {
                settle_keys.push((i, slot));
            }
        }
    }
    store.settle_keys = settle_keys;
    st.done();
    put_u32(&mut out, rebuild.len());
    for (db, argv) in rebuild {
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
    }
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
            let key = Bytes::copy_from_slice(r.bytes()?);
            let when = if version >= 4 { r.u64()? } else { 0 };
            let cache = store.block_cache.clone();
            let value =
                Value::read_snapshot(&mut r, version, &key, cache.as_ref(), store.next_stream_id)?;
            if store.dbs[idx].contains(&key) {
                return Err(format!("key {key:?} twice in db {idx}"));
            }
            store.dbs[idx].insert(key.clone(), value);
            if when != 0 {
                store.dbs[idx].set_expiry(&key, when);
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
