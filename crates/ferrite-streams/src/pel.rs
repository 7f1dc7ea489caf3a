//! The containers behind a group's pending entries: [`ChunkMap`], an
//! ordered map from stream ID to a small value stored as sorted chunks
//! (the group PEL), and [`IdSet`], the same chunks holding IDs relative to
//! the chunk's key (each consumer's PEL). Layout and costs are argued in
//! the `group` module's doc.

use crate::id::StreamId;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Entries per chunk of a [`ChunkMap`].
pub const CHUNK: usize = 64;

// ---------------------------------------------------------------------------
// ChunkMap
// ---------------------------------------------------------------------------

/// An ordered map from [`StreamId`] to a small `Copy` value, stored as sorted
/// chunks in a `BTreeMap`.
///
/// Each chunk is keyed by a lower bound of its IDs: for consecutive chunks
/// `a`, `b`: `key(a) <= first(a)` and `last(a) < key(b)`. Keys are only
/// changed when an ID below every key is inserted; removals never re-key, so
/// acknowledging the oldest entry (the common case) is one descent and one
/// shift inside a chunk. No chunk is empty.
#[derive(Clone, Debug)]
pub struct ChunkMap<V> {
    chunks: BTreeMap<StreamId, Vec<(StreamId, V)>>,
    len: usize,
}

impl<V> Default for ChunkMap<V> {
    fn default() -> Self {
        ChunkMap {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<V: Copy> ChunkMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: StreamId) -> Option<&V> {
        let (_, c) = self.chunks.range(..=id).next_back()?;
        let i = c.binary_search_by_key(&id, |e| e.0).ok()?;
        Some(&c[i].1)
    }

    pub fn get_mut(&mut self, id: StreamId) -> Option<&mut V> {
        let (_, c) = self.chunks.range_mut(..=id).next_back()?;
        let i = c.binary_search_by_key(&id, |e| e.0).ok()?;
        Some(&mut c[i].1)
    }

    pub fn contains(&self, id: StreamId) -> bool {
        self.get(id).is_some()
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, id: StreamId, v: V) -> Option<V> {
        let key = match self.chunks.range(..=id).next_back() {
            Some((&k, _)) => k,
            None => match self.chunks.keys().next() {
                Some(&k) => k,
                None => {
                    let mut c = Vec::with_capacity(CHUNK);
                    c.push((id, v));
                    self.chunks.insert(id, c);
                    self.len = 1;
                    return None;
                }
            },
        };
        let is_last = self.chunks.keys().next_back() == Some(&key);
        let c = self.chunks.get_mut(&key)?;
        let i = match c.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => return Some(std::mem::replace(&mut c[i].1, v)),
            Err(i) => i,
        };
        self.len += 1;
        if c.len() >= CHUNK {
            if is_last && i == c.len() {
                // Appending past a full tail chunk: start a new one, so
                // in-order inserts leave full chunks behind.
                let mut n = Vec::with_capacity(CHUNK);
                n.push((id, v));
                self.chunks.insert(id, n);
                return None;
            }
            let mut right = c.split_off(c.len() / 2);
            if i <= c.len() {
                c.insert(i, (id, v));
            } else {
                right.insert(i - c.len(), (id, v));
            }
            // `right` never got a new first element, so its first ID is
            // above everything left in `c`.
            let right_key = right[0].0;
            self.chunks.insert(right_key, right);
        } else {
            c.insert(i, (id, v));
        }
        if i == 0 && id < key {
            // Below every key: this was the first chunk; re-key it.
            if let Some(c) = self.chunks.remove(&key) {
                self.chunks.insert(id, c);
            }
        }
        None
    }

    pub fn remove(&mut self, id: StreamId) -> Option<V> {
        let (&key, c) = self.chunks.range_mut(..=id).next_back()?;
        let i = c.binary_search_by_key(&id, |e| e.0).ok()?;
        let (_, v) = c.remove(i);
        self.len -= 1;
        let left = c.len();
        if left == 0 {
            self.chunks.remove(&key);
        } else if left < CHUNK / 4 {
            self.merge_thin(key, left);
        }
        Some(v)
    }

    /// Merges the chunk at `key` (holding `len` entries) into a neighbour
    /// when both fit in one chunk.
    fn merge_thin(&mut self, key: StreamId, len: usize) {
        let next = self
            .chunks
            .range((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .map(|(&k, c)| (k, c.len()));
        if let Some((nk, nlen)) = next {
            if len + nlen <= CHUNK {
                if let Some(n) = self.chunks.remove(&nk) {
                    if let Some(c) = self.chunks.get_mut(&key) {
                        c.extend(n);
                    }
                }
                return;
            }
        }
        let prev = self
            .chunks
            .range(..key)
            .next_back()
            .map(|(&k, c)| (k, c.len()));
        if let Some((pk, plen)) = prev {
            if len + plen <= CHUNK {
                if let Some(c) = self.chunks.remove(&key) {
                    if let Some(p) = self.chunks.get_mut(&pk) {
                        p.extend(c);
                    }
                }
            }
        }
    }

    pub fn first(&self) -> Option<(StreamId, &V)> {
        let (_, c) = self.chunks.iter().next()?;
        c.first().map(|e| (e.0, &e.1))
    }

    pub fn last(&self) -> Option<(StreamId, &V)> {
        let (_, c) = self.chunks.iter().next_back()?;
        c.last().map(|e| (e.0, &e.1))
    }

    /// Entries with `start <= id <= end`, ascending.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = (StreamId, &V)> + '_ {
        let chunks = match self.chunks.range(..=start).next_back() {
            Some((&k, _)) => self.chunks.range(k..),
            None => self.chunks.range(..),
        };
        chunks
            .flat_map(|(_, c)| c.iter())
            .skip_while(move |e| e.0 < start)
            .take_while(move |e| e.0 <= end)
            .map(|e| (e.0, &e.1))
    }

    /// The first entry with `id >= start`.
    pub fn next_from(&self, start: StreamId) -> Option<(StreamId, &V)> {
        self.range(start, StreamId::MAX).next()
    }

    pub fn iter(&self) -> impl Iterator<Item = (StreamId, &V)> + '_ {
        self.range(StreamId::MIN, StreamId::MAX)
    }

    /// Heap bytes (chunk capacities, chunk headers and B-tree nodes
    /// estimated at 11/6 of a key/value pair each, i.e. nodes half full).
    pub fn heap_bytes(&self) -> usize {
        let per_chunk =
            (std::mem::size_of::<StreamId>() + std::mem::size_of::<Vec<(StreamId, V)>>()) * 11 / 6;
        self.chunks
            .values()
            .map(|c| per_chunk + c.capacity() * std::mem::size_of::<(StreamId, V)>())
            .sum()
    }

    /// Number of chunks (for tests of the fill behaviour).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut prev_last: Option<StreamId> = None;
        let mut n = 0;
        for (&k, c) in &self.chunks {
            let (Some(first), Some(last)) = (c.first(), c.last()) else {
                return Err(format!("empty chunk at {k}"));
            };
            if k > first.0 {
                return Err(format!("chunk key {k} above its first ID {}", first.0));
            }
            if prev_last.is_some_and(|p| p >= k) {
                return Err(format!("chunk key {k} not above the previous chunk"));
            }
            if c.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(format!("chunk {k} not strictly sorted"));
            }
            prev_last = Some(last.0);
            n += c.len();
        }
        if n != self.len {
            return Err(format!("len {} != {n} stored", self.len));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// IdSet
// ---------------------------------------------------------------------------

/// The IDs of one chunk of an [`IdSet`]: relative to the chunk's key when
/// every ID fits (`ms - key.ms` and `seq` below 2^32: 8 bytes per ID),
/// absolute otherwise (16 bytes).
#[derive(Clone, Debug)]
enum Ids {
    Narrow(Vec<(u32, u32)>),
    Wide(Vec<StreamId>),
}

impl Ids {
    fn len(&self) -> usize {
        match self {
            Ids::Narrow(v) => v.len(),
            Ids::Wide(v) => v.len(),
        }
    }

    fn get(&self, key: StreamId, i: usize) -> StreamId {
        match self {
            Ids::Narrow(v) => {
                let (d, seq) = v[i];
                StreamId::new(key.ms + u64::from(d), u64::from(seq))
            }
            Ids::Wide(v) => v[i],
        }
    }

    /// `Ok(i)` if `id` is at `i`, `Err(i)` where it would be inserted.
    fn search(&self, key: StreamId, id: StreamId) -> Result<usize, usize> {
        match self {
            Ids::Wide(v) => v.binary_search(&id),
            Ids::Narrow(v) => match narrow(key, id) {
                Some(n) => v.binary_search(&n),
                // Not encodable (but never below the key): compare decoded.
                None => v.binary_search_by(|&(d, seq)| {
                    StreamId::new(key.ms + u64::from(d), u64::from(seq)).cmp(&id)
                }),
            },
        }
    }

    fn widen(&mut self, key: StreamId) {
        if let Ids::Narrow(v) = self {
            let mut w = Vec::with_capacity(v.capacity());
            w.extend(
                v.iter()
                    .map(|&(d, seq)| StreamId::new(key.ms + u64::from(d), u64::from(seq))),
            );
            *self = Ids::Wide(w);
        }
    }

    /// Inserts at `i`, widening first if `id` does not fit.
    fn insert(&mut self, key: StreamId, i: usize, id: StreamId) {
        if let Ids::Narrow(v) = self {
            if let Some(n) = narrow(key, id) {
                v.insert(i, n);
                return;
            }
        }
        self.widen(key);
        if let Ids::Wide(v) = self {
            v.insert(i, id);
        }
    }

    fn remove(&mut self, i: usize) {
        match self {
            Ids::Narrow(v) => {
                v.remove(i);
            }
            Ids::Wide(v) => {
                v.remove(i);
            }
        }
    }

    /// All IDs, absolute (for splits, merges and re-keying).
    fn to_vec(&self, key: StreamId) -> Vec<StreamId> {
        (0..self.len()).map(|i| self.get(key, i)).collect()
    }

    /// Encodes sorted `ids` relative to `key`, narrow when all fit.
    fn from_ids(key: StreamId, ids: &[StreamId], capacity: usize) -> Ids {
        let cap = capacity.max(ids.len());
        let narrowed: Option<Vec<(u32, u32)>> = ids.iter().map(|&id| narrow(key, id)).collect();
        match narrowed {
            Some(n) => {
                let mut v = Vec::with_capacity(cap);
                v.extend(n);
                Ids::Narrow(v)
            }
            None => {
                let mut v = Vec::with_capacity(cap);
                v.extend_from_slice(ids);
                Ids::Wide(v)
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Ids::Narrow(v) => v.capacity() * 8,
            Ids::Wide(v) => v.capacity() * 16,
        }
    }
}

/// `id` relative to `key`, if it fits in 32 + 32 bits.
fn narrow(key: StreamId, id: StreamId) -> Option<(u32, u32)> {
    let d = id.ms.checked_sub(key.ms)?;
    Some((u32::try_from(d).ok()?, u32::try_from(id.seq).ok()?))
}

/// An ordered set of [`StreamId`]s (a consumer's PEL): sorted chunks of up
/// to [`CHUNK`] IDs in a `BTreeMap`, with the same key rules as
/// [`ChunkMap`]; a chunk stores its IDs relative to its key (8 bytes each)
/// while they fit, which they do for IDs delivered within ~49 days of each
/// other with sequence numbers below 2^32.
#[derive(Clone, Debug, Default)]
pub struct IdSet {
    chunks: BTreeMap<StreamId, Ids>,
    len: usize,
}

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: StreamId) -> bool {
        self.chunks
            .range(..=id)
            .next_back()
            .is_some_and(|(&k, c)| c.search(k, id).is_ok())
    }

    /// Adds `id`; `false` if it was there.
    pub fn insert(&mut self, id: StreamId) -> bool {
        let key = match self.chunks.range(..=id).next_back() {
            Some((&k, _)) => k,
            None => match self.chunks.keys().next() {
                Some(&k) => {
                    // Below every key: re-key the first chunk at `id`.
                    let Some(c) = self.chunks.remove(&k) else {
                        return false;
                    };
                    let mut ids = c.to_vec(k);
                    ids.insert(0, id);
                    self.len += 1;
                    if ids.len() > CHUNK {
                        let right = ids.split_off(ids.len() / 2);
                        self.chunks
                            .insert(right[0], Ids::from_ids(right[0], &right, CHUNK));
                    }
                    self.chunks.insert(id, Ids::from_ids(id, &ids, CHUNK));
                    return true;
                }
                None => {
                    self.chunks.insert(id, Ids::from_ids(id, &[id], CHUNK));
                    self.len = 1;
                    return true;
                }
            },
        };
        let is_last = self.chunks.keys().next_back() == Some(&key);
        let Some(c) = self.chunks.get_mut(&key) else {
            return false;
        };
        let i = match c.search(key, id) {
            Ok(_) => return false,
            Err(i) => i,
        };
        self.len += 1;
        if c.len() < CHUNK {
            c.insert(key, i, id);
            return true;
        }
        if is_last && i == c.len() {
            self.chunks.insert(id, Ids::from_ids(id, &[id], CHUNK));
            return true;
        }
        let mut ids = c.to_vec(key);
        ids.insert(i, id);
        let right = ids.split_off(ids.len() / 2);
        *c = Ids::from_ids(key, &ids, CHUNK);
        self.chunks
            .insert(right[0], Ids::from_ids(right[0], &right, CHUNK));
        true
    }

    /// Removes `id`; `false` if it was not there.
    pub fn remove(&mut self, id: StreamId) -> bool {
        let Some((&key, c)) = self.chunks.range_mut(..=id).next_back() else {
            return false;
        };
        let Ok(i) = c.search(key, id) else {
            return false;
        };
        c.remove(i);
        self.len -= 1;
        let left = c.len();
        if left == 0 {
            self.chunks.remove(&key);
        } else if left < CHUNK / 4 {
            self.merge_thin(key, left);
        }
        true
    }

    fn merge_thin(&mut self, key: StreamId, len: usize) {
        let next = self
            .chunks
            .range((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .map(|(&k, c)| (k, c.len()));
        let (lo, hi) = match next {
            Some((nk, nlen)) if len + nlen <= CHUNK => (key, nk),
            _ => {
                let prev = self
                    .chunks
                    .range(..key)
                    .next_back()
                    .map(|(&k, c)| (k, c.len()));
                match prev {
                    Some((pk, plen)) if len + plen <= CHUNK => (pk, key),
                    _ => return,
                }
            }
        };
        let (Some(a), Some(b)) = (self.chunks.remove(&lo), self.chunks.remove(&hi)) else {
            return;
        };
        let mut ids = a.to_vec(lo);
        ids.extend(b.to_vec(hi));
        self.chunks.insert(lo, Ids::from_ids(lo, &ids, CHUNK));
    }

    /// IDs with `start <= id <= end`, ascending.
    pub fn range(&self, start: StreamId, end: StreamId) -> impl Iterator<Item = StreamId> + '_ {
        let chunks = match self.chunks.range(..=start).next_back() {
            Some((&k, _)) => self.chunks.range(k..),
            None => self.chunks.range(..),
        };
        chunks
            .flat_map(|(&k, c)| (0..c.len()).map(move |i| c.get(k, i)))
            .skip_while(move |&id| id < start)
            .take_while(move |&id| id <= end)
    }

    pub fn iter(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.range(StreamId::MIN, StreamId::MAX)
    }

    /// Heap bytes, estimated like [`ChunkMap::heap_bytes`].
    pub fn heap_bytes(&self) -> usize {
        let per_chunk = (std::mem::size_of::<StreamId>() + std::mem::size_of::<Ids>()) * 11 / 6;
        self.chunks
            .values()
            .map(|c| per_chunk + c.heap_bytes())
            .sum()
    }

    /// Number of chunks stored narrow / wide.
    pub fn chunk_kinds(&self) -> (usize, usize) {
        let narrow = self
            .chunks
            .values()
            .filter(|c| matches!(c, Ids::Narrow(_)))
            .count();
        (narrow, self.chunks.len() - narrow)
    }

    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut prev_last: Option<StreamId> = None;
        let mut n = 0;
        for (&k, c) in &self.chunks {
            if c.len() == 0 {
                return Err(format!("empty id chunk at {k}"));
            }
            let ids = c.to_vec(k);
            if k > ids[0] {
                return Err(format!("id chunk key {k} above its first ID {}", ids[0]));
            }
            if prev_last.is_some_and(|p| p >= k) {
                return Err(format!("id chunk key {k} not above the previous chunk"));
            }
            if ids.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("id chunk {k} not strictly sorted"));
            }
            prev_last = ids.last().copied();
            n += ids.len();
        }
        if n != self.len {
            return Err(format!("id set len {} != {n} stored", self.len));
        }
        Ok(())
    }
}
