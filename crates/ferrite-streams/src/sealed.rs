//! Sealed blocks that live on disk: the stream's side of "streams larger
//! than RAM".
//!
//! A [`Stream`](crate::Stream) keeps one [`Node`] per block. A node always
//! holds the block's summary (live and deleted counts, listpack bytes, last
//! ID), which is all that XLEN, XINFO, trimming and the tail's "is it full"
//! check need. Its bytes are either resident or, once a storage engine has
//! stored them ([`Stored::At`]), may be evicted and read back on demand
//! through the stream's [`BlockCache`] (whose [`BlockSource`] the server
//! implements over its per-stream segment files).
//!
//! A stored block's bytes live in up to two tiers: *decoded* (the
//! [`Block`], what reads walk) and *packed* (the compressed bytes the
//! storage engine wrote, kept in memory: about a quarter of the size, and
//! decoded again at memory speed, no disk read). A node is
//! decoded-resident (with or without its packed copy), packed-resident,
//! or absent (read back through the source).
//!
//! States of a node's bytes:
//!
//! ```text
//!   Stored::No ──filled up (next block started; a stream with storage)──▶ Sealed(bytes, ticket)
//!   Stored::No / Sealed ──seal (checkpoint snapshot)──▶ Pending(ticket)
//!       (a Sealed block handed out from the stream's sealed list stays
//!        Sealed: its ticket is the one handed out)
//!   Pending(ticket) / Sealed ──ticket filled once the checkpoint is durable──▶ At(loc)
//!       (with the packed bytes; a block not read since the seal then
//!        drops its decoded copy: Stream::settle_stored)
//!   At(loc): decoded ──demote──▶ packed ──read (unpack)──▶ decoded
//!   At(loc): decoded/packed ──evict──▶ absent ──read (source)──▶ decoded (+ packed)
//!   any ──mutation (XDEL, exact trim, append)──▶ Stored::No (dirty, decoded only)
//! ```
//!
//! Invariants:
//! - a node without a location ([`Stored::No`], [`Stored::Sealed`], or a
//!   ticket not yet filled) is always decoded-resident: nothing else holds
//!   its bytes;
//! - a [`Stored::Sealed`] node's shared bytes are its block's bytes: every
//!   change goes through [`Node::block_mut`], which makes it `No` first;
//! - a node has packed bytes only while it is [`Stored::At`] (they are a
//!   copy of what is stored there);
//! - a node's summary equals its block's counts whenever the block is
//!   resident (mutations refresh it; reads check it against what they load);
//! - eviction needs `&mut Stream`, loading only `&Stream` (a `OnceCell`), so
//!   every `&Block` handed out stays valid for the borrow it came from.

use crate::block::Block;
use crate::id::StreamId;
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a storage engine stored a block (opaque to this crate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockLoc {
    /// Segment file number within the stream's directory.
    pub segment: u64,
    /// Byte offset of the block's frame in that file.
    pub offset: u64,
    /// Length of the frame.
    pub len: u64,
}

/// A block read back by a [`BlockSource`].
#[derive(Debug)]
pub struct Fetched {
    /// Its encoded bytes ([`Block::encoded`]).
    pub bytes: Vec<u8>,
    /// Its packed form, if the source has one (the node keeps it, so that
    /// demoting the block later keeps it in memory).
    pub packed: Option<Box<[u8]>>,
}

/// Reads stored blocks back (implemented by the server over its segment files).
pub trait BlockSource: Send + Sync {
    /// The block with master `master` that stream `stream` stored at `loc`.
    fn read(&self, stream: u64, master: StreamId, loc: BlockLoc) -> Result<Fetched, String>;
    /// The encoded bytes of a block from its packed form (what the storage
    /// engine handed to [`crate::snapshot::SealJob::keep_packed`]). No I/O:
    /// called under the store lock.
    fn unpack(&self, packed: &[u8]) -> Result<Vec<u8>, String>;
}

/// Shared by every stream of one server: the source of evicted blocks, the
/// access clock for least-recently-used eviction, and how many bytes were
/// made resident since the last eviction sweep.
pub struct BlockCache {
    source: Arc<dyn BlockSource>,
    clock: AtomicU64,
    /// Bytes loaded from the source or made evictable since the last sweep:
    /// the server sweeps when this plus the resident bytes it last counted
    /// pass its budget.
    grown: AtomicU64,
    loads: AtomicU64,
    /// Blocks decoded from their packed bytes (not loads: no read).
    unpacks: AtomicU64,
    /// A checkpoint filled tickets since the store last settled them
    /// ([`crate::Stream::settle_stored`]).
    settle: AtomicBool,
    /// Blocks read ahead of a command by [`BlockCache::prefetch`] (off the
    /// store lock), waiting for the command that will make them resident:
    /// `(stream storage id, location)` → the source's bytes.
    staged: Mutex<HashMap<(u64, BlockLoc), Fetched>>,
    /// Stored blocks not in memory, an upper bound: blocks evicted or
    /// restored without their bytes, minus blocks loaded (one dropped while
    /// absent, by DEL or a trim, is not taken off). Zero: every stored
    /// block is resident and no command needs a read-ahead plan.
    absent: AtomicU64,
    /// Whether `staged` may hold anything (checked first, without the lock).
    has_staged: AtomicBool,
    prefetched: AtomicU64,
    /// The first failed read since [`BlockCache::take_error`].
    error: Mutex<Option<String>>,
    /// Whether `error` may be set (checked first: `take_error` runs after
    /// every command).
    has_error: AtomicBool,
}

impl BlockCache {
    pub fn new(source: Arc<dyn BlockSource>) -> Arc<BlockCache> {
        Arc::new(BlockCache {
            source,
            clock: AtomicU64::new(1),
            grown: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            unpacks: AtomicU64::new(0),
            settle: AtomicBool::new(false),
            staged: Mutex::new(HashMap::new()),
            absent: AtomicU64::new(0),
            has_staged: AtomicBool::new(false),
            prefetched: AtomicU64::new(0),
            error: Mutex::new(None),
            has_error: AtomicBool::new(false),
        })
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The access clock now (nodes stamped later were used more recently).
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Bytes made resident since the last [`BlockCache::reset_grown`].
    pub fn grown(&self) -> u64 {
        self.grown.load(Ordering::Relaxed)
    }

    /// Records `bytes` as newly evictable (e.g. blocks a checkpoint stored).
    pub fn add_grown(&self, bytes: u64) {
        self.grown.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn reset_grown(&self) {
        self.grown.store(0, Ordering::Relaxed);
    }

    /// Blocks read back from the source so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Blocks decoded from their packed bytes in memory so far.
    pub fn unpacks(&self) -> u64 {
        self.unpacks.load(Ordering::Relaxed)
    }

    /// Record that a checkpoint stored blocks (filled their tickets): the
    /// store should settle them ([`crate::Stream::settle_stored`]).
    pub fn stored(&self, bytes: u64) {
        self.add_grown(bytes);
        self.settle.store(true, Ordering::Release);
    }

    /// Settling is not finished: the next [`BlockCache::take_settle`]
    /// says so again.
    pub fn rearm_settle(&self) {
        self.settle.store(true, Ordering::Release);
    }

    /// Whether blocks were stored since the last call.
    pub fn take_settle(&self) -> bool {
        self.settle.load(Ordering::Acquire) && self.settle.swap(false, Ordering::AcqRel)
    }

    /// Whether some stored block may be out of memory (see `absent`):
    /// without one, the server skips planning read-aheads.
    pub fn may_have_absent(&self) -> bool {
        self.absent.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn add_absent(&self, n: u64) {
        if n > 0 {
            self.absent.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn loaded_one(&self) {
        // Saturating: a node cloned while absent (COPY) is loaded twice.
        let _ = self
            .absent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Of [`BlockCache::loads`], those read ahead by
    /// [`BlockCache::prefetch`] (the rest were read by the command itself).
    pub fn prefetched(&self) -> u64 {
        self.prefetched.load(Ordering::Relaxed)
    }

    /// Read `blocks` (from [`crate::Stream::evicted_in_range`]) from the
    /// source. Blocking I/O: call it on a blocking thread, without the
    /// store lock. A failed read is skipped: the command reads that block
    /// itself and reports the error as before.
    pub fn read_ahead(
        &self,
        blocks: &[(u64, StreamId, BlockLoc)],
    ) -> Vec<(u64, BlockLoc, Fetched)> {
        blocks
            .iter()
            .filter_map(|&(stream, master, loc)| {
                Some((stream, loc, self.source.read(stream, master, loc).ok()?))
            })
            .collect()
    }

    /// Set aside what [`BlockCache::read_ahead`] read, for the command about
    /// to run: [`Node`] reads take these bytes instead of reading. Call
    /// [`BlockCache::unstage`] after the command, with no `.await` in
    /// between (a cancelled task must not leave bytes behind).
    pub fn stage(&self, read: Vec<(u64, BlockLoc, Fetched)>) {
        if read.is_empty() {
            return;
        }
        if let Ok(mut staged) = self.staged.lock() {
            for (stream, loc, bytes) in read {
                staged.insert((stream, loc), bytes);
            }
            self.has_staged.store(true, Ordering::Release);
        }
    }

    /// Drop what was staged for `blocks` and the command did not use
    /// (another command loaded the block first, or the plan over-read).
    pub fn unstage(&self, blocks: &[(u64, StreamId, BlockLoc)]) {
        if !self.has_staged.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut staged) = self.staged.lock() {
            for &(stream, _, loc) in blocks {
                staged.remove(&(stream, loc));
            }
            if staged.is_empty() {
                self.has_staged.store(false, Ordering::Release);
            }
        }
    }

    fn take_staged(&self, stream: u64, loc: BlockLoc) -> Option<Fetched> {
        if !self.has_staged.load(Ordering::Acquire) {
            return None;
        }
        let bytes = self.staged.lock().ok()?.remove(&(stream, loc))?;
        self.prefetched.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }

    /// The first read failure since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        // A plain load first: this runs after every command, and a swap
        // would write the shared cache line each time.
        if !self.has_error.load(Ordering::Acquire) || !self.has_error.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    fn record_error(&self, msg: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(msg);
        }
        self.has_error.store(true, Ordering::Release);
    }
}

/// A stream's link to stored blocks: its numeric id (the server's name for
/// its directory) and the shared cache.
#[derive(Clone)]
pub struct Storage {
    pub id: u64,
    pub cache: Arc<BlockCache>,
}

/// Filled by the storage engine with where it stored a sealed block, once
/// that is durable (see [`crate::Stream::write_snapshot`]), and the packed
/// bytes it wrote there, if it kept them.
#[derive(Debug, Default)]
pub(crate) struct SealTicket {
    loc: OnceLock<BlockLoc>,
    packed: Mutex<Option<Box<[u8]>>>,
}

impl SealTicket {
    /// A new ticket, twice: the node's handle and the checkpoint job's.
    pub fn pair() -> (Arc<SealTicket>, Arc<SealTicket>) {
        let t = Arc::new(SealTicket::default());
        (t.clone(), t)
    }

    /// Records the location (the first call wins).
    pub fn fill(&self, loc: BlockLoc) {
        let _ = self.loc.set(loc);
    }

    pub fn get(&self) -> Option<BlockLoc> {
        self.loc.get().copied()
    }

    /// Keep `packed` for the node (before [`SealTicket::fill`]).
    pub fn keep_packed(&self, packed: Box<[u8]>) {
        if let Ok(mut p) = self.packed.lock() {
            *p = Some(packed);
        }
    }

    fn take_packed(&self) -> Option<Box<[u8]>> {
        self.packed.lock().ok()?.take()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Stored {
    /// Only in memory (new, or changed since it was stored).
    No,
    /// Full and unchanged since it filled up, not handed to a checkpoint
    /// yet: its bytes shared (and, for a stream with storage, its ticket
    /// made) then, at the append that started the next block, while block
    /// and node were in cache, so that the snapshot hands it out without
    /// touching the block ([`crate::Stream::write_snapshot`]). No location,
    /// like `No`, until its ticket is filled: a snapshot that hands it out
    /// from the stream's sealed list ([`crate::snapshot::SealedList`])
    /// leaves the node as it is, so a filled ticket here means stored
    /// (resolved to `At` by [`Node::resolve`]), and an unfilled one that
    /// its checkpoint failed (handed out again, ticket and all).
    Sealed(Presealed),
    /// Handed to a running checkpoint.
    Pending(Arc<SealTicket>),
    /// Stored here.
    At(BlockLoc),
}

/// What a [`Stored::Sealed`] node hands out: its shared bytes and its
/// ticket, twice (one for the node, one for the job: no reference count is
/// touched under the snapshot's lock). The ticket is made only for a
/// stream that has storage (so without persistence a sealed block costs
/// nothing more; a stream's first checkpoint makes its tickets). Inline:
/// three pointers, no bigger than a location, so the node does not grow.
#[derive(Clone, Debug)]
pub(crate) struct Presealed {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) tickets: Option<(Arc<SealTicket>, Arc<SealTicket>)>,
}

/// The counts of a block that the stream needs without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) live: u64,
    pub(crate) deleted: u64,
    pub(crate) listpack_bytes: u64,
    pub(crate) last_id: StreamId,
}

impl Summary {
    pub(crate) fn of(b: &Block) -> Summary {
        Summary {
            live: b.live_count(),
            deleted: b.deleted_count(),
            listpack_bytes: b.listpack_bytes(),
            last_id: b.last_id(),
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.live.saturating_add(self.deleted)
    }
}

/// One block of a stream: summary, storage state and (maybe) its bytes.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) sum: Summary,
    pub(crate) stored: Stored,
    /// The decoded tier.
    body: OnceCell<Box<Block>>,
    /// The packed tier: only while [`Stored::At`] (a cell: a load from the
    /// source may set it through `&self`).
    packed: OnceCell<Box<[u8]>>,
    /// [`BlockCache::now`] at the last access (0 = never through a cache).
    tick: Cell<u64>,
}

/// Bytes of a node's two tiers, for the cache's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierBytes {
    pub decoded: usize,
    pub packed: usize,
}

impl TierBytes {
    pub fn total(&self) -> usize {
        self.decoded + self.packed
    }
}

impl Node {
    pub(crate) fn resident(block: Block) -> Node {
        Node {
            sum: Summary::of(&block),
            stored: Stored::No,
            body: OnceCell::from(Box::new(block)),
            packed: OnceCell::new(),
            tick: Cell::new(0),
        }
    }

    pub(crate) fn stored(sum: Summary, loc: BlockLoc) -> Node {
        Node {
            sum,
            stored: Stored::At(loc),
            body: OnceCell::new(),
            packed: OnceCell::new(),
            tick: Cell::new(0),
        }
    }

    /// Where the node's current bytes are stored, if they are. A sealed
    /// node's ticket may be filled too: a snapshot handed it out from the
    /// stream's sealed list without touching the node
    /// ([`crate::snapshot::SealedList`]).
    pub(crate) fn location(&self) -> Option<BlockLoc> {
        match &self.stored {
            Stored::No => None,
            Stored::Sealed(p) => p.tickets.as_ref().and_then(|(t, _)| t.get()),
            Stored::Pending(t) => t.get(),
            Stored::At(loc) => Some(*loc),
        }
    }

    /// Whether its bytes are in memory, decoded or packed (reading it
    /// needs no I/O).
    pub(crate) fn in_memory(&self) -> bool {
        self.is_decoded() || self.packed.get().is_some()
    }

    pub(crate) fn is_decoded(&self) -> bool {
        self.body.get().is_some()
    }

    pub(crate) fn resident_block(&self) -> Option<&Block> {
        self.body.get().map(|b| &**b)
    }

    /// The resident block, to share its bytes ([`Block::share`]): no read,
    /// and the node stays as stored as it was.
    pub(crate) fn resident_block_mut(&mut self) -> Option<&mut Block> {
        self.body.get_mut().map(|b| &mut **b)
    }

    pub(crate) fn last_access(&self) -> u64 {
        self.tick.get()
    }

    /// Mark a full block, not stored and unchanged since it filled up, as
    /// sealed: share its bytes, and with `ticket` make its ticket now (see
    /// [`Stored::Sealed`]). Does nothing to a node that is stored or
    /// sealed already, or not resident.
    pub(crate) fn preseal(&mut self, ticket: bool) {
        if !matches!(self.stored, Stored::No) {
            return;
        }
        let Some(block) = self.body.get_mut() else {
            return;
        };
        let tickets = ticket.then(SealTicket::pair);
        self.stored = Stored::Sealed(Presealed {
            bytes: block.share(),
            tickets,
        });
        // Reads do not stamp it until it is stored: unread by then, it
        // keeps only its packed bytes (`Stream::settle_stored`).
        self.unstamp();
    }

    /// Forget the last access (as if never read through a cache).
    pub(crate) fn unstamp(&self) {
        self.tick.set(0);
    }

    /// Heap bytes of each tier (the decoded one with its `Block` struct).
    pub(crate) fn tier_bytes(&self) -> TierBytes {
        TierBytes {
            decoded: self
                .body
                .get()
                .map_or(0, |b| b.heap_bytes() + std::mem::size_of::<Block>()),
            packed: self.packed.get().map_or(0, |p| p.len()),
        }
    }

    /// The block, decoded from its packed bytes or read through `storage`
    /// if it is not decoded. `None` only if that failed (recorded in the
    /// cache, see [`BlockCache::take_error`]).
    pub(crate) fn block<'a>(
        &'a self,
        master: StreamId,
        storage: Option<&Storage>,
    ) -> Option<&'a Block> {
        // Only stored nodes can be evicted, so only they need the LRU clock
        // (a shared atomic): the tail an XADD appends to is never stamped.
        let stored = !matches!(self.stored, Stored::No | Stored::Sealed(_));
        if let Some(b) = self.body.get() {
            if let (true, Some(s)) = (stored, storage) {
                self.tick.set(s.cache.tick());
            }
            return Some(b);
        }
        let (Some(s), Some(loc)) = (storage, self.location()) else {
            // Unreachable by the invariant (unstored nodes stay resident).
            return None;
        };
        // NOTE: unpacking runs here, under the store lock: LZ4 decodes a
        // 100-entry block in well under a microsecond, and packed bytes are
        // this process's own encoding of a block whose summary the node
        // holds, so they are rebuilt without walking every entry
        // (`from_known_parts`); no read-ahead is planned for packed nodes.
        // Bytes from the source are checked whole (`from_parts`).
        let mut packed = None;
        let loaded = match self.packed.get() {
            Some(p) => s.cache.source.unpack(p).and_then(|bytes| {
                let m = self.sum;
                Block::from_known_parts(
                    master,
                    bytes,
                    m.live,
                    m.deleted,
                    m.listpack_bytes,
                    m.last_id,
                )
                .map_err(|e| e.to_string())
            }),
            None => match s.cache.take_staged(s.id, loc) {
                Some(f) => Ok(f),
                None => s.cache.source.read(s.id, master, loc),
            }
            .and_then(|f| {
                packed = f.packed;
                Block::from_parts(master, f.bytes).map_err(|e| e.to_string())
            })
            .and_then(|b| {
                if Summary::of(&b) == self.sum {
                    Ok(b)
                } else {
                    Err(format!(
                        "block {master}: stored counts do not match the index"
                    ))
                }
            }),
        };
        let from_source = self.packed.get().is_none();
        match loaded {
            Ok(b) => {
                self.tick.set(s.cache.tick());
                if from_source {
                    s.cache.loads.fetch_add(1, Ordering::Relaxed);
                    s.cache.loaded_one();
                } else {
                    s.cache.unpacks.fetch_add(1, Ordering::Relaxed);
                }
                let mut grown = b.heap_bytes() + std::mem::size_of::<Block>();
                // Kept only while the bytes are stored where it was read
                // (always, for a node whose location came from `At`).
                if let (Some(p), Stored::At(_)) = (packed, &self.stored) {
                    grown += p.len();
                    let _ = self.packed.set(p);
                }
                s.cache.grown.fetch_add(grown as u64, Ordering::Relaxed);
                let _ = self.body.set(Box::new(b));
                self.body.get().map(|b| &**b)
            }
            Err(e) => {
                let tier = if from_source {
                    ""
                } else {
                    " (packed in memory)"
                };
                s.cache
                    .record_error(format!("reading stream {} block {master}{tier}: {e}", s.id));
                None
            }
        }
    }

    /// The block for changing it: read back if needed, then marked as no
    /// longer stored (the stored copy, and its packed bytes, are stale from
    /// now on).
    pub(crate) fn block_mut(
        &mut self,
        master: StreamId,
        storage: Option<&Storage>,
    ) -> Option<&mut Block> {
        self.block(master, storage)?;
        self.stored = Stored::No;
        self.packed.take();
        self.body.get_mut().map(|b| &mut **b)
    }

    /// Recompute the summary after a change through [`Node::block_mut`].
    pub(crate) fn refresh(&mut self) {
        if let Some(b) = self.body.get() {
            self.sum = Summary::of(b);
        }
    }

    /// Turn a filled ticket into a plain location, taking the packed bytes
    /// the storage engine kept. Returns the packed bytes taken.
    pub(crate) fn resolve(&mut self) -> usize {
        let t = match &self.stored {
            Stored::Pending(t) => t,
            // Handed out from the sealed list: the node was not touched.
            Stored::Sealed(Presealed {
                tickets: Some((t, _)),
                ..
            }) => t,
            _ => return 0,
        };
        if let Some(loc) = t.get() {
            self.packed = t.take_packed().map(OnceCell::from).unwrap_or_default();
            self.stored = Stored::At(loc);
            return self.packed.get().map_or(0, |p| p.len());
        }
        0
    }

    /// Drop the decoded copy of a stored block if it has a packed one
    /// (`keep_packed`), or else both tiers (`!keep_packed`, or nothing
    /// packed: the node is absent after). Returns the bytes freed per tier
    /// and whether the node is absent now (0 and false: not stored).
    pub(crate) fn evict(&mut self, keep_packed: bool) -> (TierBytes, bool) {
        self.resolve();
        if !matches!(self.stored, Stored::At(_)) || !self.in_memory() {
            return (TierBytes::default(), false);
        }
        let mut freed = self.tier_bytes();
        if keep_packed && self.packed.get().is_some() {
            freed.packed = 0;
        } else {
            self.packed.take();
        }
        self.body.take();
        (freed, !self.in_memory())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::XaddId;
    use crate::snapshot::SnapshotState;
    use crate::stream::{Stream, StreamConfig};
    use bytes::Bytes;

    /// Blocks "on disk" by segment number, and a packed form that is the
    /// bytes reversed (the crate treats packed bytes as opaque; the server
    /// packs with LZ4). Counts reads from "disk".
    #[derive(Default)]
    struct Src {
        disk: Mutex<HashMap<u64, Vec<u8>>>,
        reads: AtomicU64,
    }

    impl BlockSource for Src {
        fn read(&self, _: u64, _: StreamId, loc: BlockLoc) -> Result<Fetched, String> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let disk = self.disk.lock().map_err(|e| e.to_string())?;
            let bytes = disk.get(&loc.segment).cloned().ok_or("no such block")?;
            let packed = Some(bytes.iter().rev().copied().collect());
            Ok(Fetched { bytes, packed })
        }
        fn unpack(&self, packed: &[u8]) -> Result<Vec<u8>, String> {
            Ok(packed.iter().rev().copied().collect())
        }
    }

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    /// 45 entries in blocks of 10: four full blocks and an open tail.
    fn stream(src: &Arc<Src>) -> (Stream, Arc<BlockCache>) {
        let cache = BlockCache::new(src.clone());
        let mut s = Stream::new();
        s.set_storage(Storage {
            id: 1,
            cache: cache.clone(),
        });
        let cfg = StreamConfig {
            node_max_entries: 10,
            node_max_bytes: 4096,
        };
        for ms in 1..=45 {
            let price = Bytes::from(format!("{}", 42000 + ms));
            let f = [
                Bytes::from("symbol"),
                Bytes::from("BTC"),
                Bytes::from("price"),
                price,
            ];
            s.add(XaddId::Explicit(id(ms)), &f, 0, &cfg)
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        (s, cache)
    }

    /// A checkpoint: every full block stored, with its packed form kept.
    /// Returns the masters stored.
    fn checkpoint(s: &mut Stream, src: &Src, cache: &BlockCache) -> Vec<StreamId> {
        let mut st = SnapshotState {
            cache: Some(
                s.storage()
                    .map(|x| x.cache.clone())
                    .unwrap_or_else(|| panic!()),
            ),
            next_storage_id: 2,
            ..SnapshotState::default()
        };
        let mut body = Vec::new();
        s.write_snapshot(&mut body, &mut st);
        let mut disk = src.disk.lock().unwrap_or_else(|e| panic!("{e}"));
        let mut stored = Vec::new();
        for job in &st.jobs {
            let loc = BlockLoc {
                segment: disk.len() as u64 + 1,
                offset: 0,
                len: job.bytes.len() as u64,
            };
            disk.insert(loc.segment, job.bytes.to_vec());
            job.keep_packed(job.bytes.iter().rev().copied().collect());
            job.patch(&mut body, loc);
            stored.push(job.master);
        }
        let bytes = st.jobs.iter().map(|j| j.publish(&body)).sum();
        cache.stored(bytes);
        stored
    }

    fn node(s: &Stream, master: StreamId) -> &Node {
        s.blocks
            .get(&master)
            .unwrap_or_else(|| panic!("no block {master}"))
    }

    #[test]
    fn a_block_read_from_the_packed_tier_equals_the_original() {
        let src = Arc::new(Src::default());
        let (mut s, cache) = stream(&src);
        let before: Vec<Block> = s.blocks().cloned().collect();
        let stored = checkpoint(&mut s, &src, &cache);
        assert_eq!(stored, vec![id(1), id(11), id(21), id(31)]);
        assert!(cache.take_settle());
        // Not read since the seal: each keeps only its packed bytes.
        assert!(s.settle_stored() > 0);
        for &m in &stored {
            let n = node(&s, m);
            assert!(!n.is_decoded() && n.in_memory(), "{m}");
            assert!(n.tier_bytes().packed > 0 && n.tier_bytes().decoded == 0);
        }
        assert!(node(&s, id(41)).is_decoded(), "the open tail stays decoded");
        // Nothing to read ahead: packed blocks are in memory.
        assert!(!cache.may_have_absent());
        assert!(s
            .evicted_in_range(StreamId::MIN, StreamId::MAX, false, None, 100)
            .is_empty());
        let after: Vec<Block> = s.blocks().cloned().collect();
        assert_eq!(after, before);
        assert_eq!(
            s.range(id(5), id(25), None, false).len(),
            21,
            "a read across packed blocks"
        );
        assert_eq!((cache.loads(), src.reads.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(cache.unpacks(), 4);
        for &m in &stored {
            assert!(node(&s, m).is_decoded(), "decoded once read");
        }
    }

    #[test]
    fn xdel_on_a_packed_block_works_and_marks_it_dirty() {
        let src = Arc::new(Src::default());
        let (mut s, cache) = stream(&src);
        checkpoint(&mut s, &src, &cache);
        s.settle_stored();
        assert!(node(&s, id(11)).location().is_some());
        assert_eq!(s.delete(&[id(15)]), 1);
        let n = node(&s, id(11));
        assert!(n.location().is_none(), "the stored copy is stale");
        assert!(n.is_decoded() && n.tier_bytes().packed == 0);
        assert_eq!(n.sum.deleted, 1);
        assert_eq!(s.len(), 44);
        assert!(s.get(id(15)).is_none() && s.get(id(16)).is_some());
        // The next checkpoint stores it again, and only it.
        assert_eq!(checkpoint(&mut s, &src, &cache), vec![id(11)]);
        s.settle_stored();
        assert!(!node(&s, id(11)).is_decoded());
        let ids: Vec<StreamId> = s
            .range(id(11), id(20), None, false)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids.len(), 9);
        assert!(!ids.contains(&id(15)));
        assert_eq!(cache.loads(), 0);
    }

    #[test]
    fn eviction_demotes_to_the_packed_tier_before_dropping_it() {
        let src = Arc::new(Src::default());
        let (mut s, cache) = stream(&src);
        let stored = checkpoint(&mut s, &src, &cache);
        // Read in order: block 1 least recently, block 31 most.
        for &m in &stored {
            s.range(m, m, None, false);
            s.resolve_for_test(m);
        }
        let tick = |s: &Stream, m| node(s, m).last_access();
        let both = |s: &Stream, m| node(s, m).tier_bytes();
        assert!(stored
            .iter()
            .all(|&m| both(&s, m).decoded > 0 && both(&s, m).packed > 0));
        // Demote the two oldest: they keep their packed bytes.
        let decoded = both(&s, id(1)).decoded + both(&s, id(11)).decoded;
        let freed = s.evict_before(tick(&s, id(21)), 0);
        assert_eq!(freed.decoded, decoded);
        assert_eq!(freed.packed, 0);
        assert!(!node(&s, id(1)).is_decoded() && node(&s, id(1)).in_memory());
        assert!(node(&s, id(21)).is_decoded());
        assert!(!cache.may_have_absent());
        // Drop the oldest whole: absent, read back from "disk".
        let packed1 = both(&s, id(1)).packed;
        let freed = s.evict_before(0, tick(&s, id(11)));
        assert_eq!(
            freed,
            TierBytes {
                decoded: 0,
                packed: packed1
            }
        );
        assert!(!node(&s, id(1)).in_memory());
        assert!(cache.may_have_absent());
        assert_eq!(
            s.evicted_in_range(StreamId::MIN, StreamId::MAX, false, None, 100)
                .iter()
                .map(|x| x.1)
                .collect::<Vec<_>>(),
            vec![id(1)]
        );
        assert_eq!(s.range(id(1), id(45), None, false).len(), 45);
        assert_eq!((cache.loads(), src.reads.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(cache.unpacks(), 1, "block 11, demoted above");
        // A block read back from disk keeps the packed form the source
        // gave with it: demoting it keeps it in memory.
        assert_eq!(both(&s, id(1)).packed, packed1);
        let (f, gone) = s
            .blocks
            .get_mut(&id(1))
            .map(|n| n.evict(true))
            .unwrap_or_default();
        assert!(f.decoded > 0 && f.packed == 0 && !gone);
        assert_eq!(s.range(id(1), id(10), None, false).len(), 10);
        assert_eq!((cache.loads(), cache.unpacks()), (1, 2));
    }
}
