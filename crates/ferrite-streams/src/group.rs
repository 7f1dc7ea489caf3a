//! Consumer groups with Redis 7.0 semantics: the group PEL (pending entries
//! list), consumers with their own PELs, `last-delivered-id`, `entries-read`
//! and the lag rules of `streamReplyWithCGLag` /
//! `streamEstimateDistanceFromFirstEverEntry` / `streamRangeHasTombstones`.
//!
//! Layout, chosen for memory (one million pending entries is a normal load):
//!
//! - the group PEL is a [`ChunkMap`] (`pel.rs`, with [`IdSet`]): a `BTreeMap` of sorted chunks of up to
//!   [`CHUNK`] `(StreamId, Pending)` pairs, 32 bytes each (ID, delivery time,
//!   a `u32` delivery count and a `u32` consumer index). Appends (the
//!   XREADGROUP case: IDs arrive in order) fill chunks completely; inserts
//!   in the middle split a chunk in two; removals merge thin neighbours.
//!   Delivery counts that do not fit in `u32` (only `XCLAIM RETRYCOUNT`
//!   makes them) live in a side map;
//! - each consumer's PEL is an [`IdSet`]: the same chunks, holding IDs
//!   relative to the chunk's key (8 bytes per ID) while they fit;
//! - consumers live in a slab indexed by `u32` (what the PEL stores), with a
//!   `BTreeMap` from name to index for Redis's name order.
//!
//! Every operation touching one pending entry is O(log n) (two B-tree
//! descents plus a bounded move inside a chunk).
//!
//! Invariants (checked by [`Group::check_invariants`]): every group PEL entry
//! names a live consumer whose PEL has the ID, every consumer PEL ID is in
//! the group PEL with that consumer, and the counts agree.
//!
//! Nothing here formats replies or knows command syntax; the server maps
//! these operations onto XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM and XINFO.

use crate::id::StreamId;
pub use crate::pel::{ChunkMap, IdSet, CHUNK};
use crate::stream::{Entry, Stream};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Redis's `SCG_INVALID_ENTRIES_READ`: the group's read counter is unknown.
pub const ENTRIES_READ_INVALID: i64 = -1;

// ---------------------------------------------------------------------------
// Consumers and pending entries
// ---------------------------------------------------------------------------

/// Index of a consumer inside its group (stable while the consumer exists).
pub type ConsumerId = u32;

/// The compact PEL value: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// Last delivery, Unix ms.
    time: u64,
    /// Delivery count; [`BIG_COUNT`] means "see `Group::big_counts`".
    count: u32,
    consumer: ConsumerId,
}

const BIG_COUNT: u32 = u32::MAX;

/// One pending entry as the commands see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub consumer: ConsumerId,
    /// Last delivery time, Unix ms (XINFO FULL shows it; XPENDING shows
    /// `now - delivery_time`).
    pub delivery_time: u64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug)]
pub struct Consumer {
    name: Bytes,
    seen_time: u64,
    pel: IdSet,
}

impl Consumer {
    pub fn name(&self) -> &Bytes {
        &self.name
    }
    /// Last time the consumer read or claimed (Redis's `seen_time`), Unix ms.
    pub fn seen_time(&self) -> u64 {
        self.seen_time
    }
    pub fn pending_count(&self) -> usize {
        self.pel.len()
    }
    /// The consumer's pending IDs in `[start, end]`, ascending.
    pub fn pending_ids(
        &self,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = StreamId> + '_ {
        self.pel.range(start, end)
    }
}

/// What [`Group::claim`] did with one ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The entry is now owned by the claiming consumer, with these fields.
    Claimed(PendingEntry),
    /// The entry was pending but no longer exists in the stream: it was
    /// removed from the PEL (Redis 7.0 propagates this as an acknowledgement).
    Deleted,
    /// Not pending (and not forced), or not idle enough: nothing changed.
    Skipped,
}

/// Options of one XCLAIM call, resolved.
#[derive(Clone, Copy, Debug)]
pub struct ClaimOptions {
    /// Minimum idle time in ms (0 = any). Ignored for entries created by `force`.
    pub min_idle: i64,
    /// The delivery time to set (already clamped to `[0, now]`).
    pub delivery_time: u64,
    /// RETRYCOUNT: set the delivery count; `None` increments it (unless `justid`).
    pub retry_count: Option<u64>,
    /// FORCE: create the PEL entry if the stream entry exists but is not pending.
    pub force: bool,
    /// JUSTID: do not increment the delivery count.
    pub justid: bool,
}

/// Result of [`Group::autoclaim`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoClaim {
    /// Claimed entries, in PEL order, with their new fields.
    pub claimed: Vec<PendingEntry>,
    /// Pending IDs found deleted from the stream and dropped from the PEL.
    pub deleted: Vec<StreamId>,
    /// Cursor for the next call (`0-0` when the scan reached the end).
    pub next: StreamId,
}

/// One entry returned by a history read (XREADGROUP with an explicit ID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: StreamId,
    /// `None`: the entry was deleted from the stream (Redis replies a nil).
    pub entry: Option<Entry>,
    /// The PEL fields after the read (`None` for deleted entries, which
    /// are left untouched).
    pub pending: Option<PendingEntry>,
}

/// One entry delivered by a `>` read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub entry: Entry,
    /// The PEL fields after delivery (`None` with NOACK).
    pub pending: Option<PendingEntry>,
}

/// A consumer group.
#[derive(Clone, Debug)]
pub struct Group {
    last_id: StreamId,
    entries_read: i64,
    pel: ChunkMap<Pending>,
    /// Delivery counts `>= u32::MAX`, for IDs whose `Pending::count` is [`BIG_COUNT`].
    big_counts: BTreeMap<StreamId, u64>,
    consumers: Vec<Option<Consumer>>,
    free: Vec<ConsumerId>,
    names: BTreeMap<Bytes, ConsumerId>,
}

impl Group {
    /// `streamCreateCG`: `entries_read` is the ENTRIESREAD argument or
    /// [`ENTRIES_READ_INVALID`].
    pub fn new(last_id: StreamId, entries_read: i64) -> Group {
        Group {
            last_id,
            entries_read,
            pel: ChunkMap::new(),
            big_counts: BTreeMap::new(),
            consumers: Vec::new(),
            free: Vec::new(),
            names: BTreeMap::new(),
        }
    }

    /// `last-delivered-id`.
    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// `entries-read`: `None` when unknown (Redis replies a nil).
    pub fn entries_read(&self) -> Option<i64> {
        (self.entries_read != ENTRIES_READ_INVALID).then_some(self.entries_read)
    }

    /// The raw counter, [`ENTRIES_READ_INVALID`] when unknown.
    pub fn entries_read_raw(&self) -> i64 {
        self.entries_read
    }

    /// XGROUP SETID, and XCLAIM's LASTID (which keeps `entries_read`).
    pub fn set_last_id(&mut self, id: StreamId, entries_read: i64) {
        self.last_id = id;
        self.entries_read = entries_read;
    }

    /// XCLAIM LASTID: moves `last_id` forward only; `entries_read` is kept.
    /// Returns whether it moved.
    pub fn advance_last_id(&mut self, id: StreamId) -> bool {
        if id > self.last_id {
            self.last_id = id;
            true
        } else {
            false
        }
    }

    // ---- consumers ----

    pub fn consumer_count(&self) -> usize {
        self.names.len()
    }

    pub fn consumer_id(&self, name: &[u8]) -> Option<ConsumerId> {
        self.names.get(name).copied()
    }

    /// The consumer with this index. Indexes come from this group; a stale
    /// one yields `None`.
    pub fn consumer(&self, id: ConsumerId) -> Option<&Consumer> {
        self.consumers.get(id as usize).and_then(Option::as_ref)
    }

    fn consumer_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer> {
        self.consumers.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Consumer name by index (empty for a stale index).
    pub fn consumer_name(&self, id: ConsumerId) -> &Bytes {
        static EMPTY: Bytes = Bytes::new();
        self.consumer(id).map_or(&EMPTY, |c| &c.name)
    }

    /// Consumers in name order (Redis's rax order: bytewise).
    pub fn consumers(&self) -> impl Iterator<Item = &Consumer> + '_ {
        self.names.values().filter_map(|&i| self.consumer(i))
    }

    /// `streamCreateConsumer`: `(index, true)` if created (seen time `now`),
    /// `(index, false)` if it existed (left untouched).
    pub fn create_consumer(&mut self, name: &[u8], now: u64) -> (ConsumerId, bool) {
        if let Some(&i) = self.names.get(name) {
            return (i, false);
        }
        let c = Consumer {
            name: Bytes::copy_from_slice(name),
            seen_time: now,
            pel: IdSet::new(),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.consumers[i as usize] = Some(c);
                i
            }
            None => {
                self.consumers.push(Some(c));
                // More than u32::MAX consumers cannot be addressed; the
                // allocation would fail long before.
                (self.consumers.len() - 1) as ConsumerId
            }
        };
        self.names.insert(Bytes::copy_from_slice(name), i);
        (i, true)
    }

    /// `streamLookupConsumer` with refresh: sets the seen time.
    pub fn touch_consumer(&mut self, id: ConsumerId, now: u64) {
        if let Some(c) = self.consumer_mut(id) {
            c.seen_time = now;
        }
    }

    /// Looks the consumer up (refreshing its seen time) or creates it.
    /// Returns `(index, created)`.
    pub fn lookup_or_create_consumer(&mut self, name: &[u8], now: u64) -> (ConsumerId, bool) {
        let (i, created) = self.create_consumer(name, now);
        if !created {
            self.touch_consumer(i, now);
        }
        (i, created)
    }

    /// XGROUP DELCONSUMER: drops the consumer and its pending entries (from
    /// the group PEL too). Returns how many were pending, `None` if there is
    /// no such consumer.
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<u64> {
        let i = self.names.remove(name)?;
        let c = self.consumers.get_mut(i as usize)?.take()?;
        self.free.push(i);
        for id in c.pel.iter() {
            self.remove_group_pending(id);
        }
        Some(c.pel.len() as u64)
    }

    // ---- the PEL ----

    pub fn pending_count(&self) -> usize {
        self.pel.len()
    }

    fn view(&self, id: StreamId, p: &Pending) -> PendingEntry {
        PendingEntry {
            id,
            consumer: p.consumer,
            delivery_time: p.time,
            delivery_count: if p.count == BIG_COUNT {
                self.big_counts
                    .get(&id)
                    .copied()
                    .unwrap_or(u64::from(BIG_COUNT))
            } else {
                u64::from(p.count)
            },
        }
    }

    pub fn pending(&self, id: StreamId) -> Option<PendingEntry> {
        self.pel.get(id).map(|p| self.view(id, p))
    }

    pub fn first_pending(&self) -> Option<StreamId> {
        self.pel.first().map(|(id, _)| id)
    }

    pub fn last_pending(&self) -> Option<StreamId> {
        self.pel.last().map(|(id, _)| id)
    }

    /// Group PEL entries in `[start, end]`, ascending.
    pub fn pending_range(
        &self,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = PendingEntry> + '_ {
        self.pel.range(start, end).map(|(id, p)| self.view(id, p))
    }

    /// One consumer's pending entries in `[start, end]`, ascending.
    pub fn consumer_pending_range(
        &self,
        consumer: ConsumerId,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = PendingEntry> + '_ {
        self.consumer(consumer)
            .into_iter()
            .flat_map(move |c| c.pending_ids(start, end))
            .filter_map(|id| self.pending(id))
    }

    /// Stores the count of `id`'s entry `p` (spilling to `big_counts`).
    fn set_count(&mut self, id: StreamId, count: u64) -> u32 {
        if count >= u64::from(BIG_COUNT) {
            self.big_counts.insert(id, count);
            BIG_COUNT
        } else {
            self.big_counts.remove(&id);
            count as u32
        }
    }

    /// Removes `id` from the group PEL only; returns its owner.
    fn remove_group_pending(&mut self, id: StreamId) -> Option<ConsumerId> {
        let p = self.pel.remove(id)?;
        if p.count == BIG_COUNT {
            self.big_counts.remove(&id);
        }
        Some(p.consumer)
    }

    /// XACK of one ID: `true` if it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        let Some(owner) = self.remove_group_pending(id) else {
            return false;
        };
        if let Some(c) = self.consumer_mut(owner) {
            c.pel.remove(id);
        }
        true
    }

    /// Sets every field of `id`'s PEL entry, creating it or moving it to
    /// `consumer` as needed (both PELs stay in agreement).
    pub(crate) fn set_pending(
        &mut self,
        id: StreamId,
        consumer: ConsumerId,
        time: u64,
        count: u64,
    ) {
        let c32 = self.set_count(id, count);
        let new = Pending {
            time,
            count: c32,
            consumer,
        };
        let old = self.pel.insert(id, new);
        match old {
            Some(o) if o.consumer == consumer => {}
            Some(o) => {
                if let Some(c) = self.consumer_mut(o.consumer) {
                    c.pel.remove(id);
                }
                if let Some(c) = self.consumer_mut(consumer) {
                    c.pel.insert(id);
                }
            }
            None => {
                if let Some(c) = self.consumer_mut(consumer) {
                    c.pel.insert(id);
                }
            }
        }
    }

    // ---- lag ----

    /// XINFO's `lag` (`streamReplyWithCGLag`): entries not yet delivered to
    /// the group, `None` when it cannot be known (Redis replies a nil).
    pub fn lag(&self, s: &Stream) -> Option<i64> {
        if s.entries_added() == 0 {
            return Some(0);
        }
        let added = s.entries_added() as i64;
        if self.entries_read != ENTRIES_READ_INVALID
            && !range_has_tombstones(s, Some(self.last_id), None)
        {
            return Some(added.wrapping_sub(self.entries_read));
        }
        let read = estimate_distance_from_first_ever_entry(s, self.last_id);
        (read != ENTRIES_READ_INVALID).then(|| added.wrapping_sub(read))
    }

    /// The group's counters after delivering `id` (which is above `last_id`),
    /// as `streamReplyWithRange` updates them.
    fn advance_for_delivery(&mut self, s: &Stream, id: StreamId) {
        if self.entries_read != ENTRIES_READ_INVALID && !range_has_tombstones(s, Some(id), None) {
            self.entries_read = self.entries_read.wrapping_add(1);
        } else if s.entries_added() != 0 {
            self.entries_read = estimate_distance_from_first_ever_entry(s, id);
        }
        self.last_id = id;
    }

    /// What `entries_read` becomes once the entries `ids` (ascending, all
    /// after `last_id`) are delivered as XREADGROUP `>` delivers them
    /// (Redis's `streamReplyWithRange` bookkeeping), without delivering
    /// them: a subsystem that consumes the stream itself logs its progress
    /// as `XGROUP SETID key group <last> ENTRIESREAD <this>`, as Redis
    /// propagates XREADGROUP.
    pub fn entries_read_after(&self, s: &Stream, ids: impl IntoIterator<Item = StreamId>) -> i64 {
        let mut read = self.entries_read;
        for id in ids {
            if read != ENTRIES_READ_INVALID && !range_has_tombstones(s, Some(id), None) {
                read = read.wrapping_add(1);
            } else if s.entries_added() != 0 {
                read = estimate_distance_from_first_ever_entry(s, id);
            }
        }
        read
    }

    // ---- reads and claims ----

    /// XREADGROUP `>`: delivers up to `count` (`None` = all) entries after
    /// `last_id` to `consumer`, advancing `last_id` / `entries_read`; each
    /// delivered entry enters the PEL with delivery count 1 and time `now`
    /// (an entry already pending, possible after SETID moved `last_id` back,
    /// is reassigned and its count reset to 1), unless `noack`.
    pub fn deliver_new(
        &mut self,
        s: &Stream,
        consumer: ConsumerId,
        count: Option<usize>,
        noack: bool,
        now: u64,
    ) -> Vec<Delivered> {
        let Some(start) = self.last_id.incr() else {
            return Vec::new();
        };
        let limit = count.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for e in s.iter_range(start, StreamId::MAX, false).take(limit) {
            let id = e.id();
            if id > self.last_id {
                self.advance_for_delivery(s, id);
            }
            let pending = if noack {
                None
            } else {
                self.set_pending(id, consumer, now, 1);
                self.pending(id)
            };
            out.push(Delivered {
                entry: e.to_entry(),
                pending,
            });
        }
        out
    }

    /// XREADGROUP with an explicit ID: the consumer's own pending entries
    /// with IDs `>= start`, at most `count` (`None` = all). Entries still in
    /// the stream get delivery time `now` and their count incremented;
    /// deleted ones are returned as `entry: None` and left as they are.
    pub fn read_history(
        &mut self,
        s: &Stream,
        consumer: ConsumerId,
        start: StreamId,
        count: Option<usize>,
        now: u64,
    ) -> Vec<HistoryEntry> {
        let limit = count.unwrap_or(usize::MAX);
        let ids: Vec<StreamId> = match self.consumer(consumer) {
            Some(c) => c.pending_ids(start, StreamId::MAX).take(limit).collect(),
            None => return Vec::new(),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let entry = s.get(id);
            let pending = if entry.is_some() {
                self.pending(id).map(|p| {
                    let count = p.delivery_count.wrapping_add(1);
                    self.set_pending(id, consumer, now, count);
                    PendingEntry {
                        delivery_time: now,
                        delivery_count: count,
                        ..p
                    }
                })
            } else {
                None
            };
            out.push(HistoryEntry { id, entry, pending });
        }
        out
    }

    /// XCLAIM of one ID to the consumer `name` (created, or its seen time
    /// refreshed, the first time an entry is actually claimed; `consumer`
    /// caches the index between calls of one command).
    pub fn claim(
        &mut self,
        s: &Stream,
        id: StreamId,
        name: &[u8],
        consumer: &mut Option<ConsumerId>,
        opts: &ClaimOptions,
        now: u64,
    ) -> ClaimOutcome {
        let existing = self.pending(id);
        if !s.contains(id) {
            if existing.is_some() {
                self.ack(id);
                return ClaimOutcome::Deleted;
            }
            return ClaimOutcome::Skipped;
        }
        let base = match existing {
            Some(p) => {
                if opts.min_idle != 0 {
                    let idle = (now as i64).wrapping_sub(p.delivery_time as i64);
                    if idle < opts.min_idle {
                        return ClaimOutcome::Skipped;
                    }
                }
                p.delivery_count
            }
            // A forced entry starts like any new NACK (count 1) and has no
            // owner yet, so no idle check.
            None if opts.force => 1,
            None => return ClaimOutcome::Skipped,
        };
        let cid = match *consumer {
            Some(c) => c,
            None => {
                let (c, _) = self.lookup_or_create_consumer(name, now);
                *consumer = Some(c);
                c
            }
        };
        let count = match opts.retry_count {
            Some(n) => n,
            None if opts.justid => base,
            None => base.wrapping_add(1),
        };
        self.set_pending(id, cid, opts.delivery_time, count);
        ClaimOutcome::Claimed(PendingEntry {
            id,
            consumer: cid,
            delivery_time: opts.delivery_time,
            delivery_count: count,
        })
    }

    /// XAUTOCLAIM: scans the PEL from `start`, visiting at most
    /// `count * 10` entries, claiming up to `count` entries idle for at
    /// least `opts.min_idle` ms for `name` (delivery time
    /// `opts.delivery_time`, count incremented unless `opts.justid`;
    /// `retry_count` and `force` are ignored). Deleted entries found on the
    /// way are dropped from the PEL and count against `count`.
    pub fn autoclaim(
        &mut self,
        s: &Stream,
        name: &[u8],
        start: StreamId,
        count: u64,
        opts: &ClaimOptions,
        now: u64,
    ) -> AutoClaim {
        let mut out = AutoClaim::default();
        let mut attempts = count.saturating_mul(10);
        let mut count = count;
        let mut cursor = Some(start);
        let mut consumer: Option<ConsumerId> = None;
        let opts = ClaimOptions {
            retry_count: None,
            force: false,
            ..*opts
        };
        while attempts > 0 && count > 0 {
            attempts -= 1;
            let Some(from) = cursor else { break };
            let Some((id, _)) = self.pel.next_from(from) else {
                cursor = None;
                break;
            };
            cursor = id.incr();
            match self.claim(s, id, name, &mut consumer, &opts, now) {
                ClaimOutcome::Deleted => {
                    out.deleted.push(id);
                    count -= 1;
                }
                ClaimOutcome::Claimed(p) => {
                    out.claimed.push(p);
                    count -= 1;
                }
                ClaimOutcome::Skipped => {}
            }
        }
        out.next = cursor
            .and_then(|c| self.pel.next_from(c))
            .map_or(StreamId::MIN, |(id, _)| id);
        out
    }

    /// Approximate heap bytes of the group (both PELs and the consumers).
    pub fn memory_usage(&self) -> usize {
        let consumers: usize = self
            .consumers
            .iter()
            .flatten()
            .map(|c| c.pel.heap_bytes() + c.name.len() + 32)
            .sum();
        std::mem::size_of::<Group>()
            + self.pel.heap_bytes()
            + self.big_counts.len() * 48
            + self.consumers.capacity() * std::mem::size_of::<Option<Consumer>>()
            + consumers
    }

    /// Checks the PEL invariants. O(pending); for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pel.check_invariants()?;
        let mut total = 0;
        for (name, &i) in &self.names {
            let c = self
                .consumer(i)
                .ok_or_else(|| format!("name {name:?} points at a free slot {i}"))?;
            if c.name != name {
                return Err(format!("slot {i} holds {:?}, not {name:?}", c.name));
            }
            c.pel.check_invariants()?;
            for id in c.pel.iter() {
                match self.pel.get(id) {
                    Some(p) if p.consumer == i => {}
                    Some(p) => {
                        return Err(format!(
                            "{id} in {name:?}'s PEL but owned by {}",
                            p.consumer
                        ))
                    }
                    None => return Err(format!("{id} in {name:?}'s PEL, not in the group's")),
                }
            }
            total += c.pel.len();
        }
        if total != self.pel.len() {
            return Err(format!(
                "consumer PELs hold {total}, group PEL {}",
                self.pel.len()
            ));
        }
        for (id, p) in self.pel.iter() {
            if self.consumer(p.consumer).is_none() {
                return Err(format!("{id} owned by a missing consumer {}", p.consumer));
            }
            if (p.count == BIG_COUNT) != self.big_counts.contains_key(&id) {
                return Err(format!("{id}: big count bookkeeping"));
            }
        }
        if self.big_counts.len() > self.pel.len() {
            return Err("stale big counts".into());
        }
        let live = self.consumers.iter().filter(|c| c.is_some()).count();
        if live != self.names.len() {
            return Err(format!("{live} consumers, {} names", self.names.len()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Lag helpers (Redis 7.0 t_stream.c)
// ---------------------------------------------------------------------------

/// `streamRangeHasTombstones`: whether `[start, end]` (defaults: 0-0 and
/// MAX) may contain a deleted entry, judged from `max-deleted-entry-id`.
pub fn range_has_tombstones(s: &Stream, start: Option<StreamId>, end: Option<StreamId>) -> bool {
    let md = s.max_deleted_id();
    if s.is_empty() || md.is_zero() {
        return false;
    }
    if s.first_id() > md {
        return false;
    }
    let start = start.unwrap_or(StreamId::MIN);
    let end = end.unwrap_or(StreamId::MAX);
    start <= md && md <= end
}

/// `streamEstimateDistanceFromFirstEverEntry`: the logical read counter of
/// `id` (how many entries were added up to it), or
/// [`ENTRIES_READ_INVALID`] when it cannot be known.
pub fn estimate_distance_from_first_ever_entry(s: &Stream, id: StreamId) -> i64 {
    let added = s.entries_added() as i64;
    if added == 0 {
        return 0;
    }
    if s.is_empty() && id <= s.last_id() {
        return added;
    }
    if id == s.last_id() {
        return added;
    }
    if id > s.last_id() {
        return ENTRIES_READ_INVALID;
    }
    let md = s.max_deleted_id();
    if md.is_zero() || md < s.first_id() {
        let base = added.wrapping_sub(s.len() as i64);
        if id < s.first_id() {
            return base;
        }
        if id == s.first_id() {
            return base.wrapping_add(1);
        }
    }
    ENTRIES_READ_INVALID
}

// ---------------------------------------------------------------------------
// Groups of a stream
// ---------------------------------------------------------------------------

/// The consumer groups of one stream, by name (bytewise order, as Redis's rax).
#[derive(Clone, Debug, Default)]
pub struct Groups {
    map: BTreeMap<Bytes, Group>,
}

impl Groups {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn get(&self, name: &[u8]) -> Option<&Group> {
        self.map.get(name)
    }
    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut Group> {
        self.map.get_mut(name)
    }
    /// `false` if a group with this name exists (BUSYGROUP).
    pub fn create(&mut self, name: &[u8], group: Group) -> bool {
        if self.map.contains_key(name) {
            return false;
        }
        self.map.insert(Bytes::copy_from_slice(name), group);
        true
    }
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Group)> + '_ {
        self.map.iter()
    }
    pub fn memory_usage(&self) -> usize {
        self.map
            .iter()
            .map(|(k, g)| k.len() + g.memory_usage())
            .sum()
    }
}

impl Stream {
    /// The stream's consumer groups (`None` until the first group is created).
    pub fn groups(&self) -> Option<&Groups> {
        self.groups.as_deref()
    }

    /// The group called `name`.
    pub fn group(&self, name: &[u8]) -> Option<&Group> {
        self.groups.as_deref().and_then(|g| g.get(name))
    }

    /// Number of groups (XINFO STREAM's `groups`).
    pub fn group_count(&self) -> usize {
        self.groups.as_deref().map_or(0, Groups::len)
    }

    /// Runs `f` with the stream (read-only) and its groups (mutable), so a
    /// group operation can read entries while it updates the PEL. While `f`
    /// runs, `s.groups()` on the stream it receives is `None`.
    pub fn with_groups<R>(&mut self, f: impl FnOnce(&Stream, &mut Groups) -> R) -> R {
        let mut groups = self.groups.take().unwrap_or_default();
        let r = f(self, &mut groups);
        self.groups = Some(groups);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::XaddId;
    use crate::stream::StreamConfig;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    fn stream_with(n: u64) -> Stream {
        let mut s = Stream::new();
        let f = [Bytes::from_static(b"f"), Bytes::from_static(b"v")];
        for i in 1..=n {
            s.add(XaddId::Explicit(id(i, 0)), &f, 0, &StreamConfig::default())
                .expect("add");
        }
        s
    }

    #[test]
    fn chunk_map_matches_btreemap() {
        // Deterministic pseudo-random workload against std's BTreeMap.
        let mut m: ChunkMap<u64> = ChunkMap::new();
        let mut model: BTreeMap<StreamId, u64> = BTreeMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = id(x % 500, x % 3);
            match x % 5 {
                0 | 1 => assert_eq!(m.insert(k, step), model.insert(k, step)),
                2 => assert_eq!(m.remove(k), model.remove(&k)),
                3 => {
                    let (a, b) = (id(x % 400, 0), id(x % 400 + 60, 1));
                    let got: Vec<_> = m.range(a, b).map(|(k, v)| (k, *v)).collect();
                    let want: Vec<_> = model.range(a..=b).map(|(k, v)| (*k, *v)).collect();
                    assert_eq!(got, want);
                }
                _ => {
                    // Append past the end.
                    let k = id(1000 + step, 0);
                    assert_eq!(m.insert(k, step), model.insert(k, step));
                }
            }
            assert_eq!(m.get(k), model.get(&k));
            if step % 997 == 0 {
                m.check_invariants().expect("invariants");
            }
        }
        m.check_invariants().expect("invariants");
        assert_eq!(m.len(), model.len());
        assert_eq!(m.first().map(|e| e.0), model.keys().next().copied());
        assert_eq!(m.last().map(|e| e.0), model.keys().next_back().copied());
        // Descending inserts below everything re-key the first chunk.
        let mut d: ChunkMap<()> = ChunkMap::new();
        for i in (1..=1000).rev() {
            d.insert(id(i, 0), ());
        }
        d.check_invariants().expect("invariants");
        assert_eq!(d.iter().count(), 1000);
    }

    #[test]
    fn id_set_matches_btreeset() {
        use std::collections::BTreeSet;
        let mut m = IdSet::new();
        let mut model: BTreeSet<StreamId> = BTreeSet::new();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for step in 0..30_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly small IDs; some with huge seq or ms gaps (wide chunks).
            let k = match x % 11 {
                0 => id(x % 300, u64::from(u32::MAX) + x % 3),
                1 => id((x % 300) + (1 << 33), x % 5),
                _ => id(x % 300, x % 4),
            };
            match x % 4 {
                0 | 1 => assert_eq!(m.insert(k), model.insert(k)),
                2 => assert_eq!(m.remove(k), model.remove(&k)),
                _ => {
                    let (a, b) = (id(x % 250, 0), id(x % 250 + 40, 2));
                    let got: Vec<_> = m.range(a, b).collect();
                    let want: Vec<_> = model.range(a..=b).copied().collect();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(m.contains(k), model.contains(&k));
            if step % 1999 == 0 {
                m.check_invariants().expect("invariants");
            }
        }
        m.check_invariants().expect("invariants");
        assert_eq!(m.len(), model.len());
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            model.iter().copied().collect::<Vec<_>>()
        );
        let (narrow, wide) = m.chunk_kinds();
        assert!(narrow > 0 && wide > 0, "{narrow} narrow, {wide} wide");
        // Descending inserts below everything.
        let mut d = IdSet::new();
        for i in (1..=1000).rev() {
            d.insert(id(i, 0));
        }
        d.check_invariants().expect("invariants");
        assert_eq!(d.iter().count(), 1000);
    }

    #[test]
    fn appends_fill_chunks() {
        let mut m: ChunkMap<()> = ChunkMap::new();
        for i in 0..(CHUNK as u64 * 10) {
            m.insert(id(i, 0), ());
        }
        assert_eq!(m.chunk_count(), 10);
        // Acknowledging in order frees whole chunks.
        for i in 0..(CHUNK as u64 * 5) {
            assert_eq!(m.remove(id(i, 0)), Some(()));
        }
        assert_eq!(m.chunk_count(), 5);
        m.check_invariants().expect("invariants");
    }

    #[test]
    fn deliver_ack_claim() {
        let s = stream_with(5);
        let mut g = Group::new(StreamId::MIN, ENTRIES_READ_INVALID);
        let (a, _) = g.create_consumer(b"a", 10);
        let (b, _) = g.create_consumer(b"b", 10);
        let d = g.deliver_new(&s, a, Some(3), false, 100);
        assert_eq!(d.len(), 3);
        assert_eq!(g.last_id(), id(3, 0));
        assert_eq!(g.entries_read(), Some(3));
        assert_eq!(g.lag(&s), Some(2));
        assert!(g.ack(id(2, 0)));
        assert!(!g.ack(id(2, 0)));
        let opts = ClaimOptions {
            min_idle: 0,
            delivery_time: 200,
            retry_count: None,
            force: false,
            justid: false,
        };
        let mut cache = None;
        let r = g.claim(&s, id(1, 0), b"b", &mut cache, &opts, 200);
        assert_eq!(
            r,
            ClaimOutcome::Claimed(PendingEntry {
                id: id(1, 0),
                consumer: b,
                delivery_time: 200,
                delivery_count: 2
            })
        );
        assert_eq!(g.consumer(a).map(Consumer::pending_count), Some(1));
        assert_eq!(g.consumer(b).map(Consumer::pending_count), Some(1));
        // Huge counts spill over and come back.
        let big = ClaimOptions {
            retry_count: Some(u64::MAX - 1),
            ..opts
        };
        g.claim(&s, id(3, 0), b"b", &mut cache, &big, 300);
        assert_eq!(
            g.pending(id(3, 0)).map(|p| p.delivery_count),
            Some(u64::MAX - 1)
        );
        g.check_invariants().expect("invariants");
        assert_eq!(g.delete_consumer(b"b"), Some(2));
        assert_eq!(g.pending_count(), 0);
        g.check_invariants().expect("invariants");
    }

    #[test]
    fn lag_rules() {
        let mut s = stream_with(5);
        let g = Group::new(StreamId::MIN, ENTRIES_READ_INVALID);
        // Before the first entry, no tombstones: estimated.
        assert_eq!(g.lag(&s), Some(5));
        s.delete(&[id(3, 0)]);
        assert_eq!(g.lag(&s), None);
        let g = Group::new(id(5, 0), ENTRIES_READ_INVALID);
        assert_eq!(g.lag(&s), Some(0));
        assert_eq!(Group::new(id(3, 0), 3).lag(&s), None);
        assert_eq!(Group::new(id(4, 0), 4).lag(&s), Some(1));
    }
}
