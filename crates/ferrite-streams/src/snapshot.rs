//! A stream's persisted form in a checkpoint: its metadata, its blocks
//! (inline bytes for the open tail, a summary and a segment-file location
//! for stored ones, and full blocks to store now), and its consumer groups
//! with every pending entry. The keyspace around it (key names, types,
//! databases) is framed by the database crate; this module owns the bytes
//! from the stream's metadata to its last pending entry.
//!
//! Layout (little-endian; IDs are two u64s), version 3 and later:
//! `id last, id first, id max_deleted, u64 entries_added, u8 disordered,
//! u64 storage_id (0: none), u64 nblocks`, per block `u8 tag` then
//! tag 0 (inline): `id master, u32 len, bytes`; tag 1 (stored): `id master,
//! u64 live, u64 deleted, u64 listpack_bytes, id last, u64 segment,
//! u64 offset, u64 len`; then `u32 ngroups`, per group `u32 len, name,
//! id last_delivered, i64 entries_read, u32 nconsumers` (per consumer
//! `u32 len, name, u64 seen_time`), `u64 npending` (per entry `id, u32
//! consumer index, u64 delivery_time, u64 delivery_count`).
//! Version 2 (still read) has no `disordered`, no `storage_id` and no block
//! tags: every block is `id master, u32 len, bytes`.
//!
//! Decoding checks every length against the bytes present and every block
//! with [`Block::from_parts`]; what it does not understand is an error that
//! says what and where, never a panic or a guess.

use crate::block::Block;
use crate::group::Group;
use crate::sealed::{BlockCache, BlockLoc, SealTicket, Storage, Summary};
use crate::stream::{RestoredBlock, SnapBlock, Stream, StreamMeta};
use crate::StreamId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A bounds-checked cursor over checkpoint bytes (from disk: every read is
/// checked, every error says at which byte).
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<usize, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A `u32` length and that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()?;
        self.take(n)
    }
    pub fn id(&mut self) -> Result<StreamId, String> {
        Ok(StreamId::new(self.u64()?, self.u64()?))
    }
    /// Run a decoder that reads from a byte slice (advancing it) on the
    /// bytes not read yet, and move past what it consumed.
    pub fn with_rest<T>(
        &mut self,
        f: impl FnOnce(&mut &'a [u8]) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut rest = &self.b[self.pos..];
        let out = f(&mut rest)?;
        self.pos = self.b.len() - rest.len();
        Ok(out)
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

fn put_stored(out: &mut Vec<u8>, master: StreamId, s: &Summary) {
    out.push(1);
    put_id(out, master);
    out.extend_from_slice(&s.live.to_le_bytes());
    out.extend_from_slice(&s.deleted.to_le_bytes());
    out.extend_from_slice(&s.listpack_bytes.to_le_bytes());
    put_id(out, s.last_id);
}

const LOC_LEN: usize = 24;

fn put_loc(out: &mut Vec<u8>, loc: BlockLoc) {
    out.extend_from_slice(&loc.segment.to_le_bytes());
    out.extend_from_slice(&loc.offset.to_le_bytes());
    out.extend_from_slice(&loc.len.to_le_bytes());
}

/// A full block that the checkpoint must store in its stream's segment
/// file before the body is written; its location in the body is a
/// placeholder until [`SealJob::patch`].
#[derive(Debug)]
pub struct SealJob {
    /// The stream's storage id (its segment files).
    pub stream: u64,
    pub master: StreamId,
    pub last: StreamId,
    pub bytes: Arc<Vec<u8>>,
    ticket: Arc<SealTicket>,
    /// Where its location sits in the body.
    patch_at: usize,
}

impl SealJob {
    /// Write the location the block was stored at into `body`.
    pub fn patch(&self, body: &mut [u8], loc: BlockLoc) {
        let mut enc = Vec::with_capacity(LOC_LEN);
        put_loc(&mut enc, loc);
        if let Some(dst) = body.get_mut(self.patch_at..self.patch_at + LOC_LEN) {
            dst.copy_from_slice(&enc);
        }
    }

    /// Keep `packed`, the compressed bytes stored for this block, in
    /// memory for its node once [`SealJob::publish`] runs (see
    /// [`crate::sealed`]; [`crate::BlockSource::unpack`] decodes them).
    pub fn keep_packed(&self, packed: Box<[u8]>) {
        self.ticket.keep_packed(packed);
    }

    /// Once the checkpoint is durable: the block may drop its bytes (they
    /// can be read back from where `body` says). Returns the bytes made
    /// evictable (0 if the location was never patched in).
    pub fn publish(&self, body: &[u8]) -> u64 {
        let Some(loc) = body.get(self.patch_at..self.patch_at + LOC_LEN) else {
            return 0;
        };
        let mut r = Reader::new(loc);
        match (r.u64(), r.u64(), r.u64()) {
            (Ok(segment), Ok(offset), Ok(len)) => {
                self.ticket.fill(BlockLoc {
                    segment,
                    offset,
                    len,
                });
                self.bytes.len() as u64
            }
            _ => 0,
        }
    }
}

/// What writing streams into one checkpoint body collects.
#[derive(Default)]
pub struct SnapshotState {
    /// The block cache of stored blocks (persistence on); without one every
    /// block is written inline.
    pub cache: Option<Arc<BlockCache>>,
    /// The next storage id to give a stream that stores its first block.
    pub next_storage_id: u64,
    /// Full blocks to store before the body is written.
    pub jobs: Vec<SealJob>,
    /// Segment files (by storage id) that the body's stored blocks live in.
    pub referenced: HashMap<u64, BTreeSet<u64>>,
}

impl Stream {
    /// Append this stream's persisted form to `out` (the layout in the
    /// module doc). Full blocks not stored yet become [`SealJob`]s in
    /// `st`; a stream that stores its first block gets a storage id.
    pub fn write_snapshot(&mut self, out: &mut Vec<u8>, st: &mut SnapshotState) {
        let m = self.meta();
        for id in [m.last_id, m.first_id, m.max_deleted_id] {
            put_id(out, id);
        }
        out.extend_from_slice(&m.entries_added.to_le_bytes());
        out.push(u8::from(self.is_disordered()));
        // Only with persistence on (a cache) are blocks stored.
        let blocks = match &st.cache {
            Some(_) => self.seal_snapshot(),
            None => self
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
        if needs_storage && self.storage().is_none() {
            if let Some(cache) = &st.cache {
                self.set_storage(Storage {
                    id: st.next_storage_id,
                    cache: cache.clone(),
                });
                st.next_storage_id += 1;
            }
        }
        let sid = self.storage().map_or(0, |s| s.id);
        out.extend_from_slice(&sid.to_le_bytes());
        out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
        for b in blocks {
            match b {
                SnapBlock::Inline { master, bytes } => {
                    out.push(0);
                    put_id(out, master);
                    put_bytes(out, &bytes);
                }
                SnapBlock::Stored {
                    master,
                    summary,
                    loc,
                } => {
                    put_stored(out, master, &summary);
                    put_loc(out, loc);
                    st.referenced.entry(sid).or_default().insert(loc.segment);
                }
                SnapBlock::Seal {
                    master,
                    summary,
                    bytes,
                    ticket,
                } => {
                    put_stored(out, master, &summary);
                    st.jobs.push(SealJob {
                        stream: sid,
                        master,
                        last: summary.last_id,
                        bytes,
                        ticket,
                        patch_at: out.len(),
                    });
                    put_loc(
                        out,
                        BlockLoc {
                            segment: 0,
                            offset: 0,
                            len: 0,
                        },
                    );
                }
            }
        }
        self.write_groups(out);
    }

    /// A stream's consumer groups, exactly: every pending entry with its
    /// owner, delivery time and count, including entries whose stream entry
    /// was deleted (which no replayable command could recreate).
    fn write_groups(&self, out: &mut Vec<u8>) {
        let Some(groups) = self.groups() else {
            put_u32(out, 0);
            return;
        };
        put_u32(out, groups.len());
        for (name, g) in groups.iter() {
            put_bytes(out, name);
            put_id(out, g.last_id());
            out.extend_from_slice(&g.entries_read_raw().to_le_bytes());
            let mut index = HashMap::new();
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

    /// Read a stream written by [`Stream::write_snapshot`] (`version` 3 or
    /// later) or by version 2. `key` names it in errors; stored blocks are
    /// read back through `cache`; the stream's storage id must be below
    /// `next_storage_id` (the checkpoint's next id).
    pub fn read_snapshot(
        r: &mut Reader<'_>,
        version: u8,
        key: &[u8],
        cache: Option<&Arc<BlockCache>>,
        next_storage_id: u64,
    ) -> Result<Stream, String> {
        let meta = StreamMeta {
            last_id: r.id()?,
            first_id: r.id()?,
            max_deleted_id: r.id()?,
            entries_added: r.u64()?,
        };
        let mut s = if version >= 3 {
            read_blocks_v3(r, meta, key, cache, next_storage_id)?
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
        read_groups(r, &mut s)?;
        Ok(s)
    }
}

/// A v3 stream's blocks: inline ones are rebuilt (and checked) from their
/// bytes, stored ones keep only their summary and location until read.
fn read_blocks_v3(
    r: &mut Reader<'_>,
    meta: StreamMeta,
    key: &[u8],
    cache: Option<&Arc<BlockCache>>,
    next_storage_id: u64,
) -> Result<Stream, String> {
    let disordered = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(format!("bad disordered flag {b} in key {key:?}")),
    };
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
        let cache = cache.ok_or("checkpoint has stored blocks but no block store is open")?;
        // Ids are handed out below the header's next id: one at or above
        // it means a damaged body, not an id to adopt.
        if sid >= next_storage_id {
            return Err(format!(
                "key {key:?} has storage id {sid}, not below the checkpoint's next id {next_storage_id}"
            ));
        }
        Some(Storage {
            id: sid,
            cache: cache.clone(),
        })
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

fn read_groups(r: &mut Reader<'_>, s: &mut Stream) -> Result<(), String> {
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
            ids.push(g.create_consumer(cname, seen).0);
        }
        let npending = r.u64()?;
        let mut prev: Option<StreamId> = None;
        for _ in 0..npending {
            let id = r.id()?;
            // The PEL is written in ID order: anything else is damage (a
            // later duplicate would silently replace an entry).
            if prev.is_some_and(|p| p >= id) {
                return Err(format!("pending entry {id} out of order"));
            }
            prev = Some(id);
            let ci = r.u32()?;
            let time = r.u64()?;
            let count = r.u64()?;
            let owner = *ids
                .get(ci)
                .ok_or_else(|| format!("pending entry {id}: no consumer {ci}"))?;
            g.set_pending(id, owner, time, count);
        }
        let created = s.with_groups(|_, groups| groups.create(name, g));
        if !created {
            return Err(format!(
                "duplicate consumer group {:?} in checkpoint",
                String::from_utf8_lossy(name)
            ));
        }
    }
    Ok(())
}
