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
//! States of a node's bytes:
//!
//! ```text
//!   Stored::No ──seal (checkpoint snapshot)──▶ Pending(ticket)
//!   Pending(ticket) ──ticket filled once the checkpoint is durable──▶ At(loc)
//!   At(loc): resident ──evict──▶ not resident ──read──▶ resident
//!   any ──mutation (XDEL, exact trim, append)──▶ Stored::No (dirty)
//! ```
//!
//! Invariants:
//! - a node without a location ([`Stored::No`], or a ticket not yet filled)
//!   is always resident: nothing else holds its bytes;
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

/// Reads stored blocks back (implemented by the server over its segment files).
pub trait BlockSource: Send + Sync {
    /// The encoded bytes ([`Block::encoded`]) of the block with master
    /// `master` that stream `stream` stored at `loc`.
    fn read(&self, stream: u64, master: StreamId, loc: BlockLoc) -> Result<Vec<u8>, String>;
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
    /// Blocks read ahead of a command by [`BlockCache::prefetch`] (off the
    /// store lock), waiting for the command that will make them resident:
    /// `(stream storage id, location)` → the source's bytes.
    staged: Mutex<HashMap<(u64, BlockLoc), Vec<u8>>>,
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
    ) -> Vec<(u64, BlockLoc, Vec<u8>)> {
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
    pub fn stage(&self, read: Vec<(u64, BlockLoc, Vec<u8>)>) {
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

    fn take_staged(&self, stream: u64, loc: BlockLoc) -> Option<Vec<u8>> {
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
/// that is durable (see [`crate::Stream::write_snapshot`]).
#[derive(Debug, Default)]
pub(crate) struct SealTicket(OnceLock<BlockLoc>);

impl SealTicket {
    /// Records the location (the first call wins).
    pub fn fill(&self, loc: BlockLoc) {
        let _ = self.0.set(loc);
    }

    pub fn get(&self) -> Option<BlockLoc> {
        self.0.get().copied()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Stored {
    /// Only in memory (new, or changed since it was stored).
    No,
    /// Handed to a running checkpoint.
    Pending(Arc<SealTicket>),
    /// Stored here.
    At(BlockLoc),
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
    body: OnceCell<Box<Block>>,
    /// [`BlockCache::now`] at the last access (0 = never through a cache).
    tick: Cell<u64>,
}

impl Node {
    pub(crate) fn resident(block: Block) -> Node {
        Node {
            sum: Summary::of(&block),
            stored: Stored::No,
            body: OnceCell::from(Box::new(block)),
            tick: Cell::new(0),
        }
    }

    pub(crate) fn stored(sum: Summary, loc: BlockLoc) -> Node {
        Node {
            sum,
            stored: Stored::At(loc),
            body: OnceCell::new(),
            tick: Cell::new(0),
        }
    }

    /// Where the node's current bytes are stored, if they are.
    pub(crate) fn location(&self) -> Option<BlockLoc> {
        match &self.stored {
            Stored::No => None,
            Stored::Pending(t) => t.get(),
            Stored::At(loc) => Some(*loc),
        }
    }

    pub(crate) fn is_resident(&self) -> bool {
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

    pub(crate) fn heap_bytes(&self) -> usize {
        self.body
            .get()
            .map_or(0, |b| b.heap_bytes() + std::mem::size_of::<Block>())
    }

    /// The block, read through `storage` if it was evicted. `None` only if
    /// that read failed (recorded in the cache, see [`BlockCache::take_error`]).
    pub(crate) fn block<'a>(
        &'a self,
        master: StreamId,
        storage: Option<&Storage>,
    ) -> Option<&'a Block> {
        // Only stored nodes can be evicted, so only they need the LRU clock
        // (a shared atomic): the tail an XADD appends to is never stamped.
        let stored = !matches!(self.stored, Stored::No);
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
        let read = match s.cache.take_staged(s.id, loc) {
            Some(bytes) => Ok(bytes),
            None => s.cache.source.read(s.id, master, loc),
        };
        let loaded = read
            .and_then(|bytes| Block::from_parts(master, bytes).map_err(|e| e.to_string()))
            .and_then(|b| {
                if Summary::of(&b) == self.sum {
                    Ok(b)
                } else {
                    Err(format!(
                        "block {master}: stored counts do not match the index"
                    ))
                }
            });
        match loaded {
            Ok(b) => {
                self.tick.set(s.cache.tick());
                s.cache.loads.fetch_add(1, Ordering::Relaxed);
                s.cache.loaded_one();
                s.cache
                    .grown
                    .fetch_add(b.heap_bytes() as u64, Ordering::Relaxed);
                let _ = self.body.set(Box::new(b));
                self.body.get().map(|b| &**b)
            }
            Err(e) => {
                s.cache
                    .record_error(format!("reading stream {} block {master}: {e}", s.id));
                None
            }
        }
    }

    /// The block for changing it: read back if needed, then marked as no
    /// longer stored (the stored copy is stale from now on).
    pub(crate) fn block_mut(
        &mut self,
        master: StreamId,
        storage: Option<&Storage>,
    ) -> Option<&mut Block> {
        self.block(master, storage)?;
        self.stored = Stored::No;
        self.body.get_mut().map(|b| &mut **b)
    }

    /// Recompute the summary after a change through [`Node::block_mut`].
    pub(crate) fn refresh(&mut self) {
        if let Some(b) = self.body.get() {
            self.sum = Summary::of(b);
        }
    }

    /// Turn a filled ticket into a plain location.
    pub(crate) fn resolve(&mut self) {
        if let Stored::Pending(t) = &self.stored {
            if let Some(loc) = t.get() {
                self.stored = Stored::At(loc);
            }
        }
    }

    /// Drop the bytes if they are stored; returns the bytes freed.
    pub(crate) fn evict(&mut self) -> usize {
        self.resolve();
        if !matches!(self.stored, Stored::At(_)) {
            return 0;
        }
        let freed = self.heap_bytes();
        self.body.take();
        freed
    }
}
