//! The stream: entries in blocks (Redis's listpack macro nodes) kept in a
//! `BTreeMap` keyed by each block's master ID, plus the metadata XINFO shows.
//!
//! Every operation follows the Redis 7.0 algorithm it replaces, step by step,
//! because the observable results (block counts, which entries approximate
//! trimming removes, `recorded-first-entry-id`, ...) depend on those steps:
//!
//! - [`Stream::add`]: `streamAppendItem` (tail block full when it holds
//!   `node_max_entries` entries, deleted included, or when its listpack bytes
//!   plus the new entry's field+value bytes reach `node_max_bytes`);
//! - [`Stream::trim`]: `streamTrim` (whole blocks from the head; MAXLEN/MINID;
//!   approximate mode stops at the first block it cannot drop whole; LIMIT
//!   bounds the work; exact mode flags entries inside the first partial block);
//! - [`Stream::delete`]: XDEL with `streamIteratorRemoveEntry` (flag the
//!   entry; drop the block when its last live entry goes);
//! - [`Stream::iter_range`]: `streamIterator` (seek the block whose master is
//!   `<=` the bound, skip deleted entries before comparing bounds, stop at the
//!   first live entry out of range);
//! - [`Stream::set_id`]: XSETID's checks in Redis 7.0.15's order.
//!
//! Stream-level invariants: `len` is the sum of the blocks' live counts;
//! `last_id` is never below an ID that XADD generated unless XSETID moved it
//! (legal only over deleted entries); no block is empty of stored entries.

use crate::block::{Block, EntryRef, FieldList, Flat, PairList};
use crate::id::{StreamId, XaddId};
use crate::sealed::{BlockLoc, Node, Storage, Summary, TierBytes};
use crate::snapshot::StoredRun;
use bytes::Bytes;
use std::collections::btree_map::{self, BTreeMap};
use std::fmt;

/// `STREAM_LISTPACK_MAX_SIZE`: hard cap on a node's bytes (and on one
/// entry's total field+value bytes).
pub const STREAM_LISTPACK_MAX_SIZE: u64 = 1 << 30;

/// Block limits, read from the live config on every call (CONFIG SET changes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// `stream-node-max-entries` (Redis default 100; 0 = no limit).
    pub node_max_entries: u64,
    /// `stream-node-max-bytes` (Redis default 4096; 0 = no limit, which
    /// Redis treats as [`STREAM_LISTPACK_MAX_SIZE`]).
    pub node_max_bytes: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            node_max_entries: 100,
            node_max_bytes: 4096,
        }
    }
}

impl StreamConfig {
    /// The LIMIT Redis uses for `~` trimming when none is given:
    /// `100 * node_max_entries`, computed in i64 as Redis does, then
    /// clamped to 10000 if not positive and to 1000000 at most.
    pub fn default_approx_limit(&self) -> u64 {
        let limit = (self.node_max_entries as i64).wrapping_mul(100);
        if limit <= 0 {
            10_000
        } else {
            limit.min(1_000_000) as u64
        }
    }

    fn effective_node_max_bytes(&self) -> u64 {
        if self.node_max_bytes == 0 || self.node_max_bytes > STREAM_LISTPACK_MAX_SIZE {
            STREAM_LISTPACK_MAX_SIZE
        } else {
            self.node_max_bytes
        }
    }
}

/// One entry as returned by reads: its ID and the flat field/value list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: StreamId,
    /// `[field1, value1, field2, value2, ...]`
    pub fields: Vec<Bytes>,
}

/// XADD failures, in the order Redis checks them.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum AddError {
    /// Explicit `0-0` (or `0`): `ERR The ID specified in XADD must be greater than 0-0`.
    /// Redis checks this before even looking the key up.
    IdZero,
    /// The stream's last ID is already MAX:
    /// `ERR The stream has exhausted the last possible ID, unable to add more items`.
    Exhausted,
    /// The ID is not greater than the last ID:
    /// `ERR The ID specified in XADD is equal or smaller than the target stream top item`.
    /// Also returned for `<ms>-*` when `<ms>` equals the last ID's ms and its
    /// seq is already `u64::MAX` (redis-server 7.0.15 picks the error text for
    /// that case from a stale `errno`, so it may also say "Elements are too
    /// large to be stored"; later Redis versions fixed it to this error).
    IdTooSmall,
    /// Field and value bytes add up to more than 1 GiB:
    /// `ERR Elements are too large to be stored`.
    TooLarge,
    /// `fields` is empty or has odd length. Never reaches Redis (its arity
    /// check answers "wrong number of arguments"); the server should check first.
    BadFieldCount,
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddError::IdZero => "ID must be greater than 0-0",
            AddError::Exhausted => "stream exhausted the last possible ID",
            AddError::IdTooSmall => "ID is equal or smaller than the stream top item",
            AddError::TooLarge => "elements too large",
            AddError::BadFieldCount => "fields must be non-empty field/value pairs",
        })
    }
}

impl std::error::Error for AddError {}

/// XSETID failures, in Redis 7.0.15's order.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum SetIdError {
    /// MAXDELETEDID is greater than the new last ID:
    /// `ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id`.
    /// Redis checks this while parsing arguments, before looking the key up
    /// (see [`check_set_id_args`]).
    MaxDeletedGreaterThanId,
    /// The stream is not empty and the new ID is below its last live entry:
    /// `ERR The ID specified in XSETID is smaller than the target stream top item`.
    IdSmallerThanTop,
    /// The stream is not empty and ENTRIESADDED is below its length:
    /// `ERR The entries_added specified in XSETID is smaller than the target stream length`.
    EntriesAddedSmallerThanLength,
}

impl fmt::Display for SetIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetIdError::MaxDeletedGreaterThanId => "ID is smaller than the given max deleted ID",
            SetIdError::IdSmallerThanTop => "ID is smaller than the stream top item",
            SetIdError::EntriesAddedSmallerThanLength => "entries_added is smaller than the length",
        })
    }
}

impl std::error::Error for SetIdError {}

/// The argument-only XSETID check Redis makes before the key lookup.
pub fn check_set_id_args(last: StreamId, max_deleted: Option<StreamId>) -> Result<(), SetIdError> {
    match max_deleted {
        Some(md) if last < md => Err(SetIdError::MaxDeletedGreaterThanId),
        _ => Ok(()),
    }
}

/// Trimming strategy (XTRIM / XADD's MAXLEN and MINID).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Trim {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Remove entries with IDs below this one.
    MinId(StreamId),
}

/// A trim request.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct TrimSpec {
    pub strategy: Trim,
    /// `~`: remove whole blocks only.
    pub approx: bool,
    /// LIMIT: most entries to remove, `Some(0)` = unlimited. `None` = Redis's
    /// default: [`StreamConfig::default_approx_limit`] with `~`, unlimited
    /// without. (Redis rejects LIMIT without `~` from clients and forces
    /// `Some(0)` for its master/AOF; that is the server's job.)
    pub limit: Option<u64>,
}

/// The stream-level metadata a storage engine persists next to the blocks
/// (everything else is derived from the blocks).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamMeta {
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
}

/// A stream value.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    /// Blocks by master ID (Redis's rax keys); see [`crate::sealed`].
    pub(crate) blocks: BTreeMap<StreamId, Node>,
    /// Live entries (XLEN).
    len: u64,
    /// last-generated-id.
    last_id: StreamId,
    /// recorded-first-entry-id.
    first_id: StreamId,
    /// max-deleted-entry-id.
    max_deleted: StreamId,
    /// entries-added.
    entries_added: u64,
    /// Consumer groups, created with the first one (see [`crate::group`]).
    pub(crate) groups: Option<Box<crate::group::Groups>>,
    /// Set once an entry was stored below its block's master or a block was
    /// created below the tail block (only possible after XSETID moved the
    /// last ID back over deleted entries). While false, no stored ID is
    /// below its block's master, which lets reverse seeks skip a Redis
    /// fallback scan that could only find nothing.
    disordered: bool,
    /// Set once some of its blocks are stored by a storage engine.
    pub(crate) storage: Option<Storage>,
    /// Its stored blocks as the last checkpoint encoded them (see
    /// [`StoredRun`]): every change to a block below its end goes through
    /// it.
    pub(crate) run: StoredRun,
    /// The first block a snapshot handed out to be stored that
    /// [`Stream::settle_stored`] has not seen stored yet: settling starts
    /// there instead of at the first block (it runs under the store lock
    /// after every checkpoint; a scan of every block of a large stream held
    /// it for 5-20 ms).
    pub(crate) settle_from: Option<StreamId>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({})", self.id)
    }
}

/// One block for [`Stream::restore_nodes`].
#[derive(Debug)]
pub(crate) enum RestoredBlock {
    Resident(Block),
    Stored {
        master: StreamId,
        summary: Summary,
        loc: BlockLoc,
    },
}

impl Stream {
    pub fn new() -> Self {
        Stream::default()
    }

    /// A new stream whose blocks a checkpoint will store (persistence
    /// on): it lists its blocks as they are sealed from the first one, so
    /// that its first checkpoint's snapshot does not walk them under the
    /// store lock (docs/storage.md, "The incremental snapshot").
    pub fn new_stored() -> Self {
        let mut s = Stream::default();
        s.run.list_from(StreamId::MIN, StreamId::MIN);
        s
    }

    /// Number of live entries (XLEN).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// XINFO `last-generated-id`.
    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// XINFO `recorded-first-entry-id`: the first live entry's ID as last
    /// recorded (`0-0` when the stream is empty).
    pub fn first_id(&self) -> StreamId {
        self.first_id
    }

    /// XINFO `max-deleted-entry-id`: the largest ID removed by XDEL
    /// (trimming does not update it).
    pub fn max_deleted_id(&self) -> StreamId {
        self.max_deleted
    }

    /// XINFO `entries-added`: entries ever added (or as set by XSETID).
    pub fn entries_added(&self) -> u64 {
        self.entries_added
    }

    /// XINFO `radix-tree-keys`: number of blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The blocks in key order, reading evicted ones back (a block whose
    /// read fails is skipped and the failure recorded in the cache).
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = &Block> + '_ {
        self.blocks
            .iter()
            .filter_map(|(k, n)| n.block(*k, self.storage.as_ref()))
    }

    /// Whether entries were ever stored out of key order (persisted with
    /// stored blocks, which [`Stream::restore_nodes`] cannot scan).
    pub fn is_disordered(&self) -> bool {
        self.disordered
    }

    /// The stream's link to stored blocks, if it has one.
    pub fn storage(&self) -> Option<&Storage> {
        self.storage.as_ref()
    }

    /// Link the stream to a storage engine (before its first seal).
    pub fn set_storage(&mut self, storage: Storage) {
        self.storage = Some(storage);
    }

    /// The segment files (numbers) its stored blocks live in.
    pub fn stored_segments(&self, mut f: impl FnMut(u64)) {
        for node in self.blocks.values() {
            if let Some(loc) = node.location() {
                f(loc.segment);
            }
        }
    }

    /// Whether the blocks sealed since the last snapshot are kept in a
    /// list for the next one (see `snapshot::SealedList`). For tests.
    #[doc(hidden)]
    pub fn keeps_sealed_list(&self) -> bool {
        self.run.keeps_sealed_list()
    }

    /// Whether blocks a snapshot handed out wait to be settled
    /// ([`Stream::settle_stored`]).
    pub fn settling(&self) -> bool {
        self.settle_from.is_some()
    }

    /// After a checkpoint stored blocks (filled their tickets): take each
    /// one's location and packed bytes, and drop the decoded copy of those
    /// not read since they were sealed (they are history nobody is
    /// reading; a read decodes them again from memory). Returns the
    /// decoded bytes freed.
    pub fn settle_stored(&mut self) -> usize {
        self.settle_stored_bytes(&mut { usize::MAX }).decoded
    }

    /// [`Stream::settle_stored`] over at most `budget` blocks (counted
    /// down), returning the decoded bytes it freed and the packed bytes the
    /// settled blocks took (the block cache's count moves by both without a
    /// full count). Out of budget, the next call goes on from where this
    /// one stopped.
    pub fn settle_stored_bytes(&mut self, budget: &mut usize) -> TierBytes {
        let Some(from) = self.settle_from.take() else {
            return TierBytes::default();
        };
        let mut moved = TierBytes::default();
        let mut pending = None;
        for (&master, n) in self.blocks.range_mut(from..) {
            if *budget == 0 {
                // NOTE: a block before this one still waiting for its
                // checkpoint is not come back to (that could never end);
                // its snapshot set `settle_from` when it handed it out, so
                // this only misses one handed out before a settling that
                // ran out of budget: the next eviction pass settles it.
                self.settle_from = Some(master);
                return moved;
            }
            *budget -= 1;
            let packed = n.resolve();
            moved.packed += packed;
            if packed > 0 && n.last_access() == 0 {
                moved.decoded += n.evict(true).0.decoded;
            }
            // Not stored yet (its checkpoint failed, or a newer one runs):
            // the next settling starts here.
            if pending.is_none() && matches!(n.stored, crate::sealed::Stored::Pending(_)) {
                pending = Some(master);
            }
        }
        self.settle_from = pending;
        moved
    }

    /// Each stored block in memory: its last access and the bytes of its
    /// tiers.
    pub fn evictable(&self, mut f: impl FnMut(u64, TierBytes)) {
        for node in self.blocks.values() {
            if node.in_memory() && node.location().is_some() {
                f(node.last_access(), node.tier_bytes());
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn resolve_for_test(&mut self, master: StreamId) {
        if let Some(n) = self.blocks.get_mut(&master) {
            n.resolve();
        }
    }

    /// Drop the decoded copy of the stored blocks last used before
    /// `demote` (those with packed bytes keep them), and both tiers of
    /// those last used before `drop`. Returns the bytes freed per tier.
    pub fn evict_before(&mut self, demote: u64, drop: u64) -> TierBytes {
        let (mut absent, mut freed) = (0, TierBytes::default());
        for n in self.blocks.values_mut() {
            let tick = n.last_access();
            if tick >= demote.max(drop) || !n.in_memory() {
                continue;
            }
            let (f, gone) = n.evict(tick >= drop);
            freed.decoded += f.decoded;
            freed.packed += f.packed;
            absent += u64::from(gone);
        }
        if let Some(s) = &self.storage {
            s.cache.add_absent(absent);
        }
        freed
    }

    /// Blocks in memory (decoded or packed, stored or not), and their bytes.
    pub fn resident(&self) -> (usize, usize) {
        self.blocks
            .values()
            .filter(|n| n.in_memory())
            .fold((0, 0), |(c, b), n| (c + 1, b + n.tier_bytes().total()))
    }

    /// The metadata to persist beside the blocks.
    pub fn meta(&self) -> StreamMeta {
        StreamMeta {
            last_id: self.last_id,
            first_id: self.first_id,
            max_deleted_id: self.max_deleted,
            entries_added: self.entries_added,
        }
    }

    /// Rebuilds a stream from persisted metadata and blocks (e.g. from
    /// [`Block::from_parts`]). Blocks are keyed by their master IDs; a later
    /// block with the same master replaces an earlier one.
    pub(crate) fn restore(meta: StreamMeta, blocks: impl IntoIterator<Item = Block>) -> Stream {
        let mut s = Stream::restore_nodes(
            meta,
            false,
            None,
            blocks.into_iter().map(RestoredBlock::Resident),
        );
        // Conservative: any stored ID below its master, or any master below
        // an earlier block's last ID, means appends were out of key order.
        let mut prev_last: Option<StreamId> = None;
        let mut disordered = false;
        for block in s.blocks.values().filter_map(Node::resident_block) {
            let below_master = block.entries().any(|e| e.id() < block.master_id());
            let overlaps = prev_last.is_some_and(|last| block.master_id() < last);
            if below_master || overlaps {
                disordered = true;
            }
            prev_last = Some(block.last_id());
        }
        s.disordered = disordered;
        s
    }

    /// Rebuilds a stream from a checkpoint that stored some blocks: the
    /// `disordered` flag comes from [`Stream::is_disordered`] at checkpoint
    /// time, and `storage` reads the stored blocks back.
    pub(crate) fn restore_nodes(
        meta: StreamMeta,
        disordered: bool,
        storage: Option<Storage>,
        blocks: impl IntoIterator<Item = RestoredBlock>,
    ) -> Stream {
        let mut s = Stream {
            last_id: meta.last_id,
            first_id: meta.first_id,
            max_deleted: meta.max_deleted_id,
            entries_added: meta.entries_added,
            disordered,
            storage,
            ..Stream::default()
        };
        for block in blocks {
            let (master, node) = match block {
                RestoredBlock::Resident(b) => (b.master_id(), Node::resident(b)),
                RestoredBlock::Stored {
                    master,
                    summary,
                    loc,
                } => (master, Node::stored(summary, loc)),
            };
            s.blocks.insert(master, node);
        }
        s.len = s.blocks.values().map(|n| n.sum.live).sum();
        if let Some(st) = &s.storage {
            let absent = s.blocks.values().filter(|n| !n.in_memory()).count();
            st.cache.add_absent(absent as u64);
        }
        s
    }

    /// XINFO `first-entry`.
    pub fn first_entry(&self) -> Option<Entry> {
        self.iter_range(StreamId::MIN, StreamId::MAX, false)
            .next()
            .map(|e| e.to_entry())
    }

    /// XINFO `last-entry`.
    pub fn last_entry(&self) -> Option<Entry> {
        self.iter_range(StreamId::MIN, StreamId::MAX, true)
            .next()
            .map(|e| e.to_entry())
    }

    /// ID of the last live entry, `0-0` if none (`streamLastValidID`).
    /// XREAD serves synchronously only if this is greater than the given ID.
    pub fn last_valid_id(&self) -> StreamId {
        self.iter_range(StreamId::MIN, StreamId::MAX, true)
            .next()
            .map_or(StreamId::MIN, |e| e.id())
    }

    /// The live entry with this ID.
    pub fn get(&self, id: StreamId) -> Option<Entry> {
        self.iter_range(id, id, false).next().map(|e| e.to_entry())
    }

    /// Whether a live entry with this ID exists (no copy).
    pub fn contains(&self, id: StreamId) -> bool {
        self.iter_range(id, id, false).next().is_some()
    }

    /// Live entries with `start <= id <= end`, ascending (or descending with
    /// `rev`), at most `count` (`None` = all; `Some(0)` = none: note that
    /// Redis replies a null array to `XRANGE ... COUNT 0`, and XREAD treats
    /// COUNT 0 as no limit; the server maps those).
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        count: Option<usize>,
        rev: bool,
    ) -> Vec<Entry> {
        let limit = count.unwrap_or(usize::MAX);
        self.iter_range(start, end, rev)
            .take(limit)
            .map(|e| e.to_entry())
            .collect()
    }

    /// XREAD: live entries with ID strictly greater than `after`, ascending,
    /// at most `count` (`None` = all).
    pub fn entries_after(&self, after: StreamId, count: Option<usize>) -> Vec<Entry> {
        match after.incr() {
            Some(start) => self.range(start, StreamId::MAX, count, false),
            None => Vec::new(),
        }
    }

    /// The stored blocks not in memory that a range read of `[start, end]`
    /// (reversed with `rev`) taking up to `count` live entries would read,
    /// in reading order, at most `max` of them: `(stream storage id, master,
    /// location)`. From the index alone (counts and last IDs), so it reads
    /// nothing; the server reads these off the store lock and the async
    /// workers before it runs the command ([`BlockCache::read_ahead`]). An
    /// estimate: a block it misses is read by the command as before.
    /// The evicted block an exact trim with `spec` will read (the first
    /// block it does not remove whole, whose head entries it flags), from
    /// the summaries alone; `added` entries are appended before the trim
    /// (XADD trims after its append). `None` when it reads no evicted
    /// block (an approximate trim never reads one).
    pub fn trim_reads(&self, spec: &TrimSpec, added: u64) -> Option<(u64, StreamId, BlockLoc)> {
        if spec.approx || self.disordered {
            return None;
        }
        let storage = self.storage.as_ref()?;
        let mut len = self.len.saturating_add(added);
        for (&master, node) in &self.blocks {
            let entries = node.sum.live;
            let remove = match spec.strategy {
                Trim::MaxLen(max) => {
                    if len <= max {
                        return None;
                    }
                    len.saturating_sub(entries) >= max
                }
                Trim::MinId(min) => node.sum.last_id < min,
            };
            if remove {
                len = len.saturating_sub(entries);
                continue;
            }
            if node.in_memory() {
                return None;
            }
            return node.location().map(|loc| (storage.id, master, loc));
        }
        None
    }

    pub fn evicted_in_range(
        &self,
        start: StreamId,
        end: StreamId,
        rev: bool,
        count: Option<usize>,
        max: usize,
    ) -> Vec<(u64, StreamId, BlockLoc)> {
        let mut out = Vec::new();
        let Some(storage) = &self.storage else {
            return out;
        };
        // A disordered stream (rare: XSETID below a master) is read by the
        // command itself; its blocks' bounds do not say what they hold.
        if start > end || end.is_zero() || max == 0 || self.disordered {
            return out;
        }
        let want = count.map_or(u64::MAX, |c| c as u64);
        let mut seen = 0u64;
        // The block holding `start` may begin before it.
        let lo = self
            .blocks
            .range(..=start)
            .next_back()
            .map_or(start, |(m, _)| *m);
        let nodes: Box<dyn Iterator<Item = (&StreamId, &Node)>> = if rev {
            Box::new(self.blocks.range(..=end).rev())
        } else {
            Box::new(self.blocks.range(lo..=end))
        };
        for (&master, node) in nodes {
            if node.sum.last_id < start {
                if rev {
                    break;
                }
                continue;
            }
            if !node.in_memory() {
                if let Some(loc) = node.location() {
                    out.push((storage.id, master, loc));
                    if out.len() >= max {
                        break;
                    }
                }
            }
            // A block only partly in the range does not count (some of its
            // live entries may be outside): over-reading beats a miss.
            let whole = if rev {
                node.sum.last_id <= end
            } else {
                master >= start
            };
            if whole {
                seen = seen.saturating_add(node.sum.live);
            }
            if seen >= want {
                break;
            }
        }
        out
    }

    /// Lazy, allocation-free iteration over live entries in `[start, end]`.
    /// Seeks in O(log blocks), then scans; see [`RangeIter`].
    pub fn iter_range(&self, start: StreamId, end: StreamId, rev: bool) -> RangeIter<'_> {
        RangeIter::new(self, start, end, rev)
    }

    /// A copy with the same entries and IDs, metadata and consumer groups
    /// (COPY): every live entry is read (evicted blocks are read back) and
    /// appended to new blocks of the copy, which has no storage of its own
    /// until a checkpoint stores it.
    pub fn deep_copy(&self, cfg: &StreamConfig) -> Stream {
        let mut s = Stream::new();
        let mut fields: Vec<bytes::Bytes> = Vec::new();
        for e in self.iter_range(StreamId::MIN, StreamId::MAX, false) {
            fields.clear();
            for (f, v) in e.pairs() {
                fields.push(bytes::Bytes::copy_from_slice(f));
                fields.push(bytes::Bytes::copy_from_slice(v));
            }
            // Ascending IDs into an empty stream: never refused.
            let _ = s.add(XaddId::Explicit(e.id()), &fields, 0, cfg);
        }
        s.last_id = self.last_id;
        s.first_id = self.first_id;
        s.max_deleted = self.max_deleted;
        s.entries_added = self.entries_added;
        s.groups = self.groups.clone();
        s
    }

    /// XADD. `fields` is the flat `[f1, v1, ...]` list; `now_ms` is the
    /// server's clock for `*`. Checks run in Redis's order: `0-0`, exhausted
    /// stream, ID generation/monotonicity, size.
    pub fn add<F: AsRef<[u8]>>(
        &mut self,
        id: XaddId,
        fields: &[F],
        now_ms: u64,
        cfg: &StreamConfig,
    ) -> Result<StreamId, AddError> {
        if fields.is_empty() || fields.len() & 1 == 1 {
            return Err(AddError::BadFieldCount);
        }
        self.add_list(id, &Flat(fields), now_ms, cfg)
    }

    /// [`Stream::add`] of `(field, value)` pairs (no flat copy of them).
    pub fn add_pairs<A: AsRef<[u8]>, B: AsRef<[u8]>>(
        &mut self,
        id: XaddId,
        pairs: &[(A, B)],
        now_ms: u64,
        cfg: &StreamConfig,
    ) -> Result<StreamId, AddError> {
        if pairs.is_empty() {
            return Err(AddError::BadFieldCount);
        }
        self.add_list(id, &PairList(pairs), now_ms, cfg)
    }

    /// [`Stream::add`] once the field count is checked (at least one pair).
    fn add_list<L: FieldList + ?Sized>(
        &mut self,
        id: XaddId,
        fields: &L,
        now_ms: u64,
        cfg: &StreamConfig,
    ) -> Result<StreamId, AddError> {
        if id == XaddId::Explicit(StreamId::MIN) {
            return Err(AddError::IdZero);
        }
        if self.last_id == StreamId::MAX {
            return Err(AddError::Exhausted);
        }
        let new_id = match id {
            XaddId::Auto => {
                if now_ms > self.last_id.ms {
                    StreamId::new(now_ms, 0)
                } else {
                    // Cannot fail: last_id != MAX was checked above.
                    self.last_id.incr().ok_or(AddError::Exhausted)?
                }
            }
            XaddId::AutoSeq(ms) => {
                if ms == self.last_id.ms {
                    if self.last_id.seq == u64::MAX {
                        return Err(AddError::IdTooSmall);
                    }
                    StreamId::new(ms, self.last_id.seq + 1)
                } else {
                    StreamId::new(ms, 0)
                }
            }
            XaddId::Explicit(id) => id,
        };
        if new_id <= self.last_id {
            return Err(AddError::IdTooSmall);
        }
        let total: u64 = (0..fields.pair_count()).fold(0u64, |acc, i| {
            acc.saturating_add(fields.name(i).len() as u64)
                .saturating_add(fields.value(i).len() as u64)
        });
        if total > STREAM_LISTPACK_MAX_SIZE {
            return Err(AddError::TooLarge);
        }
        self.append(new_id, fields, total, cfg);
        self.len += 1;
        self.entries_added = self.entries_added.wrapping_add(1);
        self.last_id = new_id;
        if self.len == 1 {
            self.first_id = new_id;
        }
        Ok(new_id)
    }

    /// Stores an entry in the tail block, or in a new block if the tail is full.
    fn append<L: FieldList + ?Sized>(
        &mut self,
        id: StreamId,
        fields: &L,
        total: u64,
        cfg: &StreamConfig,
    ) {
        let max_bytes = cfg.effective_node_max_bytes();
        if let Some(mut tail) = self.blocks.last_entry() {
            let master = *tail.key();
            let node = tail.get_mut();
            let full = node.sum.listpack_bytes.saturating_add(total) >= max_bytes
                || (cfg.node_max_entries != 0 && node.sum.entry_count() >= cfg.node_max_entries);
            if !full {
                if id < master {
                    self.disordered = true;
                }
                // A stored tail (read back if evicted) stops being stored.
                self.run.changed_last(master);
                if let Some(block) = node.block_mut(master, self.storage.as_ref()) {
                    block.append_list(id, fields);
                    node.refresh();
                    return;
                }
                // Its read failed (recorded): start a new block instead.
            } else if node.location().is_none() {
                // Sealed: give back the growth slack (Redis's lpShrinkToFit).
                self.run.changed_last(master);
                if let Some(block) = node.block_mut(master, None) {
                    block.shrink_to_fit();
                }
                // Its bytes go behind an `Arc` now, once, so that the
                // checkpoint that hands them out under the store lock only
                // counts a reference (a later change copies them only while
                // a snapshot still holds them); with storage, its ticket is
                // made too. Both while the block is in cache: the snapshot
                // then hands it out from the node alone (Stored::Sealed;
                // about 1 µs of cache misses per block under the store lock
                // otherwise).
                // (A listing stream is one a checkpoint will store.)
                node.preseal(self.storage.is_some() || self.run.keeps_sealed_list());
                // And listed, so the snapshot need not find it in the tree.
                self.run.sealed_one(master, &node.sum, &node.stored, id);
            }
            if id < master {
                self.disordered = true;
            }
        }
        // An empty stream's first block: the tail of a list kept from the
        // start.
        if self.blocks.is_empty() {
            self.run.first_block(id);
        }
        // A key collision is only reachable after XSETID over a zombie block;
        // Redis then overwrites the rax value (leaking the old node and
        // leaving its length counter stale). We drop the old block's entries
        // from `len` instead so our counters stay consistent.
        self.run.changed(id);
        if let Some(old) = self
            .blocks
            .insert(id, Node::resident(Block::new_list(id, fields)))
        {
            self.len = self.len.saturating_sub(old.sum.live);
        }
    }

    /// XDEL. Returns how many of `ids` were live entries and got deleted.
    /// Updates max-deleted-entry-id and recorded-first-entry-id like Redis.
    pub fn delete(&mut self, ids: &[StreamId]) -> u64 {
        let mut deleted = 0u64;
        let mut first_deleted = false;
        for &id in ids {
            if self.delete_one(id) {
                if id == self.first_id {
                    first_deleted = true;
                }
                if id > self.max_deleted {
                    self.max_deleted = id;
                }
                deleted += 1;
            }
        }
        if deleted > 0 {
            if self.len == 0 {
                self.first_id = StreamId::MIN;
            } else if first_deleted {
                self.first_id = self.first_live_id();
            }
        }
        deleted
    }

    /// `streamDeleteItem`: find the live entry with exactly this ID via the
    /// normal iterator, flag it, and drop its block if nothing live is left.
    fn delete_one(&mut self, id: StreamId) -> bool {
        let found = {
            let mut it = self.iter_range(id, id, false);
            it.next().map(|e| (it.current_key(), e.offset()))
        };
        let Some((Some(key), pos)) = found else {
            return false;
        };
        let Some(node) = self.blocks.get_mut(&key) else {
            return false;
        };
        if node.sum.live == 1 {
            self.run.removed(key);
            self.blocks.remove(&key);
        } else if let Some(block) = node.block_mut(key, self.storage.as_ref()) {
            self.run.changed(key);
            block.mark_deleted(pos);
            node.refresh();
        } else {
            return false;
        }
        // A live entry was found, so len >= 1 (len = sum of live counts).
        self.len = self.len.saturating_sub(1);
        true
    }

    fn first_live_id(&self) -> StreamId {
        // streamGetEdgeID(first, skip tombstones) returns MAX when nothing is
        // found; callers only use it on non-empty streams.
        self.iter_range(StreamId::MIN, StreamId::MAX, false)
            .next()
            .map_or(StreamId::MAX, |e| e.id())
    }

    /// XTRIM / XADD trimming. Returns the number of entries removed.
    pub fn trim(&mut self, spec: &TrimSpec, cfg: &StreamConfig) -> u64 {
        let limit = match spec.limit {
            Some(limit) => limit,
            None if spec.approx => cfg.default_approx_limit(),
            None => 0,
        };
        let mut deleted = 0u64;
        while let Some(mut head) = self.blocks.first_entry() {
            if let Trim::MaxLen(maxlen) = spec.strategy {
                if self.len <= maxlen {
                    break;
                }
            }
            let master = *head.key();
            let node = head.get_mut();
            let entries = node.sum.live;
            if limit != 0 && deleted.saturating_add(entries) > limit {
                break;
            }
            let remove_block = match spec.strategy {
                Trim::MaxLen(maxlen) => self.len.saturating_sub(entries) >= maxlen,
                // The last stored entry, even if deleted, as Redis reads it.
                Trim::MinId(min) => node.sum.last_id < min,
            };
            if remove_block {
                self.run.removed(master);
                head.remove();
                self.len = self.len.saturating_sub(entries);
                deleted += entries;
                continue;
            }
            if spec.approx {
                break;
            }
            // Exact: flag entries from the head of this block until done.
            // This may leave a block with no live entry (MINID stopping at a
            // deleted entry); Redis keeps such a block too.
            self.run.changed(master);
            let Some(block) = node.block_mut(master, self.storage.as_ref()) else {
                break;
            };
            let mut pos = block.first_pos();
            while let Some(e) = block.entry_at(pos) {
                let stop = match spec.strategy {
                    Trim::MaxLen(maxlen) => self.len <= maxlen,
                    Trim::MinId(min) => e.id() >= min,
                };
                if stop {
                    break;
                }
                let flags_pos = e.offset();
                pos = e.next_pos();
                if block.mark_deleted(flags_pos) {
                    self.len = self.len.saturating_sub(1);
                    deleted += 1;
                }
            }
            node.refresh();
            break;
        }
        if self.len == 0 {
            self.first_id = StreamId::MIN;
        } else if deleted > 0 {
            self.first_id = self.first_live_id();
        }
        deleted
    }

    /// XSETID. `entries_added` and `max_deleted` are the optional
    /// ENTRIESADDED / MAXDELETEDID arguments (a negative ENTRIESADDED is the
    /// server's parse error). A MAXDELETEDID of `0-0` is accepted and ignored,
    /// as in Redis.
    pub fn set_id(
        &mut self,
        last: StreamId,
        entries_added: Option<u64>,
        max_deleted: Option<StreamId>,
    ) -> Result<(), SetIdError> {
        check_set_id_args(last, max_deleted)?;
        if self.len > 0 {
            if last < self.last_valid_id() {
                return Err(SetIdError::IdSmallerThanTop);
            }
            if let Some(added) = entries_added {
                if self.len > added {
                    return Err(SetIdError::EntriesAddedSmallerThanLength);
                }
            }
        }
        self.last_id = last;
        if let Some(added) = entries_added {
            self.entries_added = added;
        }
        if let Some(md) = max_deleted {
            if !md.is_zero() {
                self.max_deleted = md;
            }
        }
        Ok(())
    }

    /// Approximate heap + inline bytes of this stream: block buffers
    /// (capacity), block structs and B-tree nodes (estimated at 11/6 of a
    /// key/value pair each, i.e. nodes about half full), and the stream struct.
    pub fn memory_usage(&self) -> usize {
        let per_block = (std::mem::size_of::<StreamId>() + std::mem::size_of::<Node>()) * 11 / 6;
        std::mem::size_of::<Stream>()
            + self
                .blocks
                .values()
                .map(|n| per_block + n.tier_bytes().total())
                .sum::<usize>()
    }

    /// Checks the internal invariants, rebuilding every block from its bytes.
    /// For tests and debug assertions; O(stream size).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0u64;
        for (key, node) in &self.blocks {
            let block = node
                .block(*key, self.storage.as_ref())
                .ok_or_else(|| format!("block {key}: read failed"))?;
            if node.sum != Summary::of(block) {
                return Err(format!(
                    "block {key}: summary {:?} != block {block:?}",
                    node.sum
                ));
            }
            if *key != block.master_id() {
                return Err(format!("block key {key} != master {}", block.master_id()));
            }
            let rebuilt = Block::from_parts(block.master_id(), block.encoded().to_vec())
                .map_err(|e| format!("block {key}: {e}"))?;
            if rebuilt.live_count() != block.live_count()
                || rebuilt.deleted_count() != block.deleted_count()
                || rebuilt.listpack_bytes() != block.listpack_bytes()
                || rebuilt.last_id() != block.last_id()
            {
                return Err(format!(
                    "block {key}: tracked {block:?} != rebuilt {rebuilt:?}"
                ));
            }
            live += block.live_count();
        }
        if live != self.len {
            return Err(format!("len {} != live entries {live}", self.len));
        }
        Ok(())
    }
}

/// Iterator over live entries of a range (Redis's `streamIterator`).
///
/// Forward: starts at the block whose master is the greatest `<= start`
/// (or the first block), skips deleted entries and entries below `start`,
/// and ends at the first live entry above `end`. Reverse mirrors it from the
/// block whose master is the greatest `<= end`.
pub struct RangeIter<'a> {
    blocks: btree_map::Range<'a, StreamId, Node>,
    storage: Option<&'a Storage>,
    /// Current block and the offset to continue from: forward, the next
    /// entry's start; reverse, the end of the next entry to read.
    cur: Option<(&'a Block, usize)>,
    start: StreamId,
    end: StreamId,
    rev: bool,
    done: bool,
    /// Whether every block's entries lie in `[master, summary.last_id]`
    /// (no XSETID moved the stream below a master): then a block outside
    /// the interval is skipped from its index entry, without reading it.
    ordered: bool,
}

impl<'a> RangeIter<'a> {
    fn new(s: &'a Stream, start: StreamId, end: StreamId, rev: bool) -> Self {
        let all = s.blocks.range::<StreamId, _>(..);
        let mut it = RangeIter {
            blocks: all,
            storage: s.storage.as_ref(),
            cur: None,
            start,
            end,
            rev,
            done: false,
            ordered: !s.disordered,
        };
        // No ID lies in an inverted interval, and no entry can be 0-0, so
        // these would be (possibly long) scans that find nothing.
        if start > end || end.is_zero() {
            it.done = true;
            return it;
        }
        if !rev {
            if !start.is_zero() {
                if let Some((&key, _)) = s.blocks.range(..=start).next_back() {
                    it.blocks = s.blocks.range(key..);
                }
            }
        } else {
            match s.blocks.range(..=end).next_back() {
                Some((&key, _)) => it.blocks = s.blocks.range(..=key),
                // Redis falls back to scanning from the last block; while the
                // stream is ordered every stored ID is above `end`.
                None if !s.disordered => it.done = true,
                None => {}
            }
        }
        it
    }

    /// Master ID of the block the last returned entry came from.
    fn current_key(&self) -> Option<StreamId> {
        self.cur.map(|(b, _)| b.master_id())
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        while !self.done {
            let (block, pos) = match self.cur {
                Some(cur) => cur,
                None => {
                    let next = if self.rev {
                        self.blocks.next_back()
                    } else {
                        self.blocks.next()
                    };
                    match next {
                        Some((&key, node)) => {
                            // From the index alone: an evicted block that
                            // cannot hold an entry of the interval is not
                            // read (Stream::evicted_in_range plans the same).
                            if self.ordered {
                                let past = if self.rev {
                                    node.sum.last_id < self.start
                                } else {
                                    key > self.end
                                };
                                if past {
                                    self.done = true;
                                    break;
                                }
                                if !self.rev && node.sum.last_id < self.start {
                                    continue;
                                }
                            }
                            // A failed read is recorded in the cache and the
                            // block skipped; the server turns it into an error.
                            let Some(b) = node.block(key, self.storage) else {
                                continue;
                            };
                            (b, if self.rev { b.end_pos() } else { b.first_pos() })
                        }
                        None => {
                            self.done = true;
                            break;
                        }
                    }
                }
            };
            let entry = if self.rev {
                block.entry_before(pos)
            } else {
                block.entry_at(pos)
            };
            let Some(e) = entry else {
                self.cur = None;
                continue;
            };
            self.cur = Some((block, if self.rev { e.offset() } else { e.next_pos() }));
            if e.is_deleted() {
                continue;
            }
            let id = e.id();
            if !self.rev {
                if id >= self.start {
                    if id > self.end {
                        self.done = true;
                        break;
                    }
                    return Some(e);
                }
            } else if id <= self.end {
                if id < self.start {
                    self.done = true;
                    break;
                }
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn fv(items: &[&str]) -> Vec<Bytes> {
        items.iter().map(|s| b(s)).collect()
    }

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    fn ex(ms: u64, seq: u64) -> XaddId {
        XaddId::Explicit(id(ms, seq))
    }

    const CFG: StreamConfig = StreamConfig {
        node_max_entries: 100,
        node_max_bytes: 4096,
    };

    fn ids(entries: &[Entry]) -> Vec<StreamId> {
        entries.iter().map(|e| e.id).collect()
    }

    fn stream_with(n: u64, cfg: &StreamConfig) -> Stream {
        let mut s = Stream::new();
        for i in 1..=n {
            assert_eq!(s.add(ex(i, 1), &fv(&["a", "1"]), 0, cfg), Ok(id(i, 1)));
        }
        s
    }

    #[test]
    fn add_id_generation() {
        let mut s = Stream::new();
        let f = fv(&["a", "1"]);
        assert_eq!(s.add(ex(0, 0), &f, 0, &CFG), Err(AddError::IdZero));
        assert_eq!(s.add(XaddId::AutoSeq(0), &f, 0, &CFG), Ok(id(0, 1)));
        assert_eq!(s.add(XaddId::AutoSeq(0), &f, 0, &CFG), Ok(id(0, 2)));
        assert_eq!(s.add(ex(0, 1), &f, 0, &CFG), Err(AddError::IdTooSmall));
        assert_eq!(s.add(XaddId::AutoSeq(5), &f, 0, &CFG), Ok(id(5, 0)));
        assert_eq!(
            s.add(XaddId::AutoSeq(3), &f, 0, &CFG),
            Err(AddError::IdTooSmall)
        );
        assert_eq!(s.add(ex(5, u64::MAX), &f, 0, &CFG), Ok(id(5, u64::MAX)));
        assert_eq!(
            s.add(XaddId::AutoSeq(5), &f, 0, &CFG),
            Err(AddError::IdTooSmall)
        );
        // `*` with the clock behind: last ms, seq rolls over into ms+1.
        assert_eq!(s.add(XaddId::Auto, &f, 3, &CFG), Ok(id(6, 0)));
        assert_eq!(s.add(XaddId::Auto, &f, 6, &CFG), Ok(id(6, 1)));
        assert_eq!(s.add(XaddId::Auto, &f, 1000, &CFG), Ok(id(1000, 0)));
        assert_eq!(
            s.add(ex(u64::MAX, u64::MAX), &f, 0, &CFG),
            Ok(StreamId::MAX)
        );
        assert_eq!(s.add(XaddId::Auto, &f, 0, &CFG), Err(AddError::Exhausted));
        assert_eq!(
            s.add(XaddId::AutoSeq(u64::MAX), &f, 0, &CFG),
            Err(AddError::Exhausted)
        );
        assert_eq!(s.add(ex(0, 0), &f, 0, &CFG), Err(AddError::IdZero));
        assert_eq!(s.len(), 8);
        assert_eq!(s.entries_added(), 8);
        assert_eq!(s.first_id(), id(0, 1));
        assert_eq!(
            s.add::<Bytes>(ex(1, 1), &[], 0, &CFG),
            Err(AddError::BadFieldCount)
        );
        assert_eq!(
            s.add(ex(1, 1), &fv(&["a"]), 0, &CFG),
            Err(AddError::BadFieldCount)
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn add_near_max() {
        let f = fv(&["a", "1"]);
        let mut s = Stream::new();
        s.add(ex(u64::MAX, u64::MAX - 1), &f, 0, &CFG).unwrap();
        assert_eq!(
            s.add(XaddId::AutoSeq(u64::MAX), &f, 0, &CFG),
            Ok(StreamId::MAX)
        );
        assert_eq!(
            s.add(XaddId::AutoSeq(u64::MAX), &f, 0, &CFG),
            Err(AddError::Exhausted)
        );
        let mut s = Stream::new();
        s.add(ex(u64::MAX - 1, u64::MAX), &f, 0, &CFG).unwrap();
        assert_eq!(s.add(XaddId::Auto, &f, 0, &CFG), Ok(id(u64::MAX, 0)));
        assert_eq!(s.add(XaddId::Auto, &f, 0, &CFG), Ok(id(u64::MAX, 1)));
    }

    #[test]
    fn too_large() {
        // 1 GiB + 1 byte of fields is rejected before anything is copied
        // (the chunks share one refcounted buffer).
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let mut fields = Vec::new();
        for _ in 0..1024 {
            fields.push(Bytes::new());
            fields.push(chunk.clone());
        }
        fields[0] = Bytes::from_static(b"f");
        let mut s = Stream::new();
        assert_eq!(s.add(ex(1, 1), &fields, 0, &CFG), Err(AddError::TooLarge));
        assert!(s.is_empty());
        assert_eq!(s.block_count(), 0);
        // The ID checks come first.
        assert_eq!(s.add(ex(0, 0), &fields, 0, &CFG), Err(AddError::IdZero));
    }

    #[test]
    fn block_split_by_entries_counts_deleted() {
        let cfg = StreamConfig {
            node_max_entries: 3,
            node_max_bytes: 0,
        };
        let mut s = stream_with(3, &cfg);
        assert_eq!(s.delete(&[id(2, 1)]), 1);
        s.add(ex(4, 1), &fv(&["a", "1"]), 0, &cfg).unwrap();
        // Same as redis-server 7.0.15: 2 keys, length 3.
        assert_eq!((s.block_count(), s.len()), (2, 3));
        assert_eq!(s.max_deleted_id(), id(2, 1));
        s.check_invariants().unwrap();
    }

    #[test]
    fn block_split_by_bytes() {
        // One-entry node: 7 + 11 + 10 = 28 listpack bytes; next entry has 2
        // bytes of fields, so the split happens when 28 + 2 >= max.
        for (max, blocks) in [(30, 2), (31, 1)] {
            let cfg = StreamConfig {
                node_max_entries: 0,
                node_max_bytes: max,
            };
            let s = stream_with(2, &cfg);
            assert_eq!(s.block_count(), blocks, "max_bytes {max}");
        }
    }

    #[test]
    fn range_and_rev_range() {
        let cfg = StreamConfig {
            node_max_entries: 3,
            node_max_bytes: 0,
        };
        let mut s = stream_with(10, &cfg);
        assert_eq!(s.block_count(), 4);
        s.delete(&[id(4, 1), id(5, 1)]);
        let all: Vec<_> = (1..=10)
            .filter(|&i| i != 4 && i != 5)
            .map(|i| id(i, 1))
            .collect();
        assert_eq!(
            ids(&s.range(StreamId::MIN, StreamId::MAX, None, false)),
            all
        );
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(ids(&s.range(StreamId::MIN, StreamId::MAX, None, true)), rev);
        assert_eq!(
            ids(&s.range(id(3, 0), id(7, 0), None, false)),
            vec![id(3, 1), id(6, 1)]
        );
        assert_eq!(
            ids(&s.range(id(3, 0), id(7, 1), Some(2), true)),
            vec![id(7, 1), id(6, 1)]
        );
        assert_eq!(ids(&s.range(id(4, 0), id(5, 9), None, false)), vec![]);
        assert_eq!(ids(&s.range(id(4, 0), id(5, 9), None, true)), vec![]);
        assert_eq!(
            s.range(StreamId::MIN, StreamId::MAX, Some(0), false),
            vec![]
        );
        assert_eq!(ids(&s.range(id(0, 0), id(0, 5), None, true)), vec![]);
        assert_eq!(ids(&s.range(id(9, 0), id(2, 0), None, false)), vec![]);
        assert_eq!(
            ids(&s.entries_after(id(7, 1), Some(2))),
            vec![id(8, 1), id(9, 1)]
        );
        assert_eq!(ids(&s.entries_after(id(10, 1), None)), vec![]);
        assert_eq!(ids(&s.entries_after(StreamId::MAX, None)), vec![]);
        assert_eq!(s.get(id(6, 1)).map(|e| e.fields), Some(fv(&["a", "1"])));
        assert_eq!(s.get(id(5, 1)), None);
        assert!(s.contains(id(10, 1)));
        assert!(!s.contains(id(10, 2)));
        assert_eq!(s.first_entry().map(|e| e.id), Some(id(1, 1)));
        assert_eq!(s.last_entry().map(|e| e.id), Some(id(10, 1)));
        assert_eq!(s.last_valid_id(), id(10, 1));
    }

    #[test]
    fn delete_updates_metadata() {
        let mut s = stream_with(3, &CFG);
        assert_eq!(s.delete(&[id(2, 1), id(2, 1), id(9, 9)]), 1);
        assert_eq!(
            (s.len(), s.first_id(), s.max_deleted_id()),
            (2, id(1, 1), id(2, 1))
        );
        assert_eq!(s.delete(&[id(1, 1)]), 1);
        assert_eq!((s.first_id(), s.max_deleted_id()), (id(3, 1), id(2, 1)));
        assert_eq!(s.delete(&[id(3, 1)]), 1);
        assert_eq!(
            (s.len(), s.block_count(), s.first_id()),
            (0, 0, StreamId::MIN)
        );
        assert_eq!(s.max_deleted_id(), id(3, 1));
        assert_eq!(s.last_id(), id(3, 1));
        assert_eq!(s.entries_added(), 3);
    }

    #[test]
    fn exact_trim_marks_inside_block() {
        let mut s = stream_with(10, &CFG);
        let maxlen = |n, approx| TrimSpec {
            strategy: Trim::MaxLen(n),
            approx,
            limit: None,
        };
        assert_eq!(s.trim(&maxlen(7, true), &CFG), 0);
        assert_eq!(s.trim(&maxlen(7, false), &CFG), 3);
        assert_eq!((s.len(), s.block_count(), s.first_id()), (7, 1, id(4, 1)));
        let minid = TrimSpec {
            strategy: Trim::MinId(id(9, 0)),
            approx: false,
            limit: None,
        };
        assert_eq!(s.trim(&minid, &CFG), 5);
        assert_eq!(
            (s.len(), s.first_id(), s.max_deleted_id()),
            (2, id(9, 1), StreamId::MIN)
        );
        assert_eq!(s.trim(&maxlen(0, false), &CFG), 2);
        assert_eq!(
            (s.len(), s.block_count(), s.first_id()),
            (0, 0, StreamId::MIN)
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn minid_trim_can_leave_a_zombie_block() {
        // Verified on redis-server 7.0.15: length 0, radix-tree-keys 1.
        let mut s = stream_with(3, &CFG);
        s.delete(&[id(3, 1)]);
        let spec = TrimSpec {
            strategy: Trim::MinId(id(3, 0)),
            approx: false,
            limit: None,
        };
        assert_eq!(s.trim(&spec, &CFG), 2);
        assert_eq!(
            (s.len(), s.block_count(), s.first_id()),
            (0, 1, StreamId::MIN)
        );
        s.add(ex(4, 1), &fv(&["a", "1"]), 0, &CFG).unwrap();
        assert_eq!((s.len(), s.block_count(), s.first_id()), (1, 1, id(4, 1)));
        assert_eq!(
            ids(&s.range(StreamId::MIN, StreamId::MAX, None, false)),
            vec![id(4, 1)]
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn approx_trim_and_limit() {
        let cfg = StreamConfig {
            node_max_entries: 10,
            node_max_bytes: 0,
        };
        let mut s = stream_with(100, &cfg);
        let spec = |n, limit| TrimSpec {
            strategy: Trim::MaxLen(n),
            approx: true,
            limit,
        };
        assert_eq!(s.trim(&spec(55, Some(20)), &cfg), 20);
        assert_eq!(s.len(), 80);
        assert_eq!(s.trim(&spec(55, Some(5)), &cfg), 0);
        assert_eq!(s.trim(&spec(55, None), &cfg), 20);
        assert_eq!((s.len(), s.block_count(), s.first_id()), (60, 6, id(41, 1)));
        assert_eq!(s.trim(&spec(0, Some(0)), &cfg), 60);
        assert_eq!(
            (s.len(), s.block_count(), s.first_id()),
            (0, 0, StreamId::MIN)
        );
    }

    #[test]
    fn default_limits() {
        let c = |n| StreamConfig {
            node_max_entries: n,
            node_max_bytes: 0,
        };
        assert_eq!(c(100).default_approx_limit(), 10_000);
        assert_eq!(c(0).default_approx_limit(), 10_000);
        assert_eq!(c(7).default_approx_limit(), 700);
        assert_eq!(c(20_000).default_approx_limit(), 1_000_000);
        assert_eq!(c(i64::MAX as u64).default_approx_limit(), 10_000); // wraps negative
        assert_eq!(c(92_233_720_368_547_758).default_approx_limit(), 1_000_000);
    }

    #[test]
    fn set_id_rules() {
        // Sequence verified on redis-server 7.0.15.
        let mut s = stream_with(3, &CFG);
        s.delete(&[id(3, 1)]);
        assert_eq!(s.set_id(id(2, 1), None, None), Ok(()));
        assert_eq!(s.last_id(), id(2, 1));
        assert_eq!(
            s.set_id(id(2, 0), None, None),
            Err(SetIdError::IdSmallerThanTop)
        );
        assert_eq!(
            s.set_id(id(2, 5), None, Some(id(3, 0))),
            Err(SetIdError::MaxDeletedGreaterThanId)
        );
        assert_eq!(
            s.set_id(id(3, 5), Some(1), None),
            Err(SetIdError::EntriesAddedSmallerThanLength)
        );
        assert_eq!(
            s.set_id(id(2, 0), Some(1), None),
            Err(SetIdError::IdSmallerThanTop)
        );
        assert_eq!(s.set_id(id(3, 1), Some(2), None), Ok(()));
        assert_eq!(s.entries_added(), 2);
        assert_eq!(s.set_id(id(3, 1), None, Some(StreamId::MIN)), Ok(()));
        assert_eq!(s.max_deleted_id(), id(3, 1));
        assert_eq!(s.set_id(id(3, 3), None, Some(id(3, 2))), Ok(()));
        assert_eq!(s.max_deleted_id(), id(3, 2));
        let mut e = Stream::new();
        assert_eq!(e.set_id(StreamId::MIN, Some(0), None), Ok(()));
        assert_eq!(
            check_set_id_args(id(1, 0), Some(id(1, 1))),
            Err(SetIdError::MaxDeletedGreaterThanId)
        );
    }

    #[test]
    fn xsetid_backwards_over_deleted_entries_keeps_live_order() {
        let cfg = StreamConfig {
            node_max_entries: 4,
            node_max_bytes: 0,
        };
        let mut s = stream_with(3, &cfg);
        s.delete(&[id(3, 1)]);
        s.set_id(id(2, 5), None, None).unwrap();
        // 2-6 lands after the deleted 3-1 in the same block, as in Redis.
        s.add(ex(2, 6), &fv(&["a", "1"]), 0, &cfg).unwrap();
        s.add(ex(2, 7), &fv(&["a", "1"]), 0, &cfg).unwrap();
        assert_eq!(s.block_count(), 2);
        assert_eq!(
            ids(&s.range(StreamId::MIN, StreamId::MAX, None, false)),
            vec![id(1, 1), id(2, 1), id(2, 6), id(2, 7)]
        );
        assert_eq!(
            ids(&s.range(id(2, 2), id(2, 6), None, true)),
            vec![id(2, 6)]
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn restore_roundtrip() {
        let cfg = StreamConfig {
            node_max_entries: 4,
            node_max_bytes: 0,
        };
        let mut s = stream_with(10, &cfg);
        s.delete(&[id(1, 1), id(6, 1)]);
        let blocks = s
            .blocks()
            .map(|b| Block::from_parts(b.master_id(), b.encoded().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut r = Stream::restore(s.meta(), blocks);
        r.check_invariants().unwrap();
        assert_eq!(r.meta(), s.meta());
        assert_eq!((r.len(), r.block_count()), (8, 3));
        let all = |s: &Stream| s.range(StreamId::MIN, StreamId::MAX, None, false);
        assert_eq!(all(&r), all(&s));
        assert_eq!(
            r.add(XaddId::Auto, &fv(&["a", "1"]), 0, &cfg),
            Ok(id(10, 2))
        );
        assert_eq!(r.block_count(), 3);
    }

    #[test]
    fn memory_is_compact() {
        let mut s = Stream::new();
        let fields = fv(&["symbol", "BTC", "price", "42000.5", "volume", "3"]);
        for i in 0..10_000u64 {
            s.add(XaddId::Auto, &fields, 1_700_000_000_000 + i, &CFG)
                .unwrap();
        }
        let per_entry = s.memory_usage() as f64 / s.len() as f64;
        assert!(per_entry < 11.0 + 20.0, "{per_entry} bytes/entry");
    }

    #[test]
    fn add_pairs_is_add() {
        // The same entries as pairs and as flat lists: the same blocks,
        // metadata and errors; values and names read back alike.
        let cfg = StreamConfig {
            node_max_entries: 3,
            ..StreamConfig::default()
        };
        let mut flat = Stream::new();
        let mut pairs = Stream::new();
        for i in 0..20u64 {
            let mut p = vec![(b("f"), b(&i.to_string())), (b("g"), b("x"))];
            if i % 4 == 3 {
                p[1].0 = b("h");
            }
            let f: Vec<Bytes> = p.iter().flat_map(|(f, v)| [f.clone(), v.clone()]).collect();
            let a = flat.add(XaddId::Auto, &f, 1000, &cfg);
            let b = pairs.add_pairs(XaddId::Auto, &p, 1000, &cfg);
            assert_eq!(a, b);
        }
        assert_eq!(flat.meta(), pairs.meta());
        let blocks = |s: &Stream| -> Vec<(StreamId, Vec<u8>)> {
            s.blocks()
                .map(|b| (b.master_id(), b.encoded().to_vec()))
                .collect()
        };
        assert_eq!(blocks(&flat), blocks(&pairs));
        let none: [(Bytes, Bytes); 0] = [];
        assert_eq!(
            pairs.add_pairs(XaddId::Auto, &none, 1000, &cfg),
            Err(AddError::BadFieldCount)
        );
        let mut prev: Option<EntryRef<'_>> = None;
        let mut shared = 0;
        for e in pairs.iter_range(StreamId::MIN, StreamId::MAX, false) {
            let values: Vec<&[u8]> = e.pairs().map(|(_, v)| v).collect();
            assert_eq!(e.values().collect::<Vec<_>>(), values);
            if let Some(p) = prev {
                if e.same_names_as(&p) {
                    shared += 1;
                    let names =
                        |e: &EntryRef<'_>| e.pairs().map(|(f, _)| f.to_vec()).collect::<Vec<_>>();
                    assert_eq!(names(&e), names(&p));
                }
            }
            prev = Some(e);
        }
        assert!(shared > 5, "{shared}");
    }
}
