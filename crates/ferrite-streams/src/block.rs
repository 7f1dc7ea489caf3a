//! Blocks: Ferrite's equivalent of Redis's stream macro nodes.
//!
//! A block holds the entries of one Redis listpack node in a single compact
//! byte buffer (format: `docs/stream-blocks.md`): a master section with the
//! field names of the block's first entry, then entries whose IDs are deltas
//! against the block's master ID, with a SAMEFIELDS flag that omits field
//! names equal to the master's, a DELETED flag, and a trailing reverse-varint
//! length so the block can be walked backwards.
//!
//! Besides the bytes, a block tracks what Redis reads from the listpack
//! header: live and deleted counts, and the exact `lpBytes()` the Redis node
//! would have ([`Block::listpack_bytes`]), kept incrementally: the per-entry
//! listpack sizes never change after an append (flag flips 0->1 and 2->3 keep
//! the 1-byte encoding), so only the two counters are re-measured.
//!
//! Invariants:
//! - `buf[..entries_start]` is a valid master section with `master_fields`
//!   names, and `buf[entries_start..]` is a sequence of whole entries;
//! - a block always has at least one entry, `last_off` is the offset of the
//!   last one and `last_id` its ID (deleted or not);
//! - `live + deleted` is the number of entries in the buffer.

use crate::id::StreamId;
use crate::listpack;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Entry flag: deleted (tombstone kept until the whole block goes away).
pub const FLAG_DELETED: u8 = 1;
/// Entry flag: the entry's field names are the master's; only values stored.
pub const FLAG_SAMEFIELDS: u8 = 2;

// ---------------------------------------------------------------------------
// Varints
// ---------------------------------------------------------------------------

/// Appends `v` as LEB128: 7 bits per byte, least significant group first,
/// high bit set on every byte except the last.
#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Bytes `put_varint(v)` writes.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a LEB128 varint at `*pos`, advancing it. `None` if truncated or
/// longer than 10 bytes / 64 bits.
#[inline]
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // One byte (below 128): lengths, deltas and counts nearly always are.
    let b = *buf.get(*pos)?;
    if b < 0x80 {
        *pos += 1;
        return Some(u64::from(b));
    }
    get_varint_long(buf, pos)
}

fn get_varint_long(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        let group = u64::from(b & 0x7f);
        if shift == 63 && group > 1 {
            return None; // would overflow 64 bits
        }
        v |= group << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Appends `v` as a reverse varint: most significant 7-bit group first
/// without the high bit, every following byte with the high bit set. Read
/// backwards from its last byte, a set high bit means "more bytes to the left".
pub(crate) fn put_backlen(buf: &mut Vec<u8>, v: u64) {
    let n = varint_len(v);
    for i in (0..n).rev() {
        let group = ((v >> (7 * i)) & 0x7f) as u8;
        buf.push(if i == n - 1 { group } else { group | 0x80 });
    }
}

/// Reads the reverse varint that ends just before `end`. Returns the value
/// and the offset of its first byte.
#[inline]
pub(crate) fn get_backlen(buf: &[u8], end: usize) -> Option<(u64, usize)> {
    // One byte: an entry shorter than 128 bytes.
    let last = end.checked_sub(1)?;
    let b = *buf.get(last)?;
    if b < 0x80 {
        return Some((u64::from(b), last));
    }
    get_backlen_long(buf, end)
}

fn get_backlen_long(buf: &[u8], end: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    let mut pos = end;
    loop {
        pos = pos.checked_sub(1)?;
        let b = *buf.get(pos)?;
        let group = u64::from(b & 0x7f);
        if shift > 63 || (shift == 63 && group > 1) {
            return None;
        }
        v |= group << shift;
        if b & 0x80 == 0 {
            return Some((v, pos));
        }
        shift += 7;
    }
}

const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Reads a length-prefixed byte string at `*pos`.
#[inline]
fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(get_varint(buf, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(s)
}

#[inline]
fn put_bytes(buf: &mut Vec<u8>, s: &[u8]) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Block
// ---------------------------------------------------------------------------

/// One macro node: entries sharing a master ID and master field list.
///
/// Read-only outside this crate; [`Block::from_parts`] rebuilds one from the
/// bytes a storage engine persisted ([`Block::master_id`] + [`Block::encoded`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    master: StreamId,
    buf: Buf,
    /// Offset of the first entry (end of the master section).
    entries_start: usize,
    /// Number of master field names.
    master_fields: usize,
    /// Entries not flagged deleted (Redis's master `count`).
    live: u64,
    /// Entries flagged deleted (Redis's master `deleted`).
    deleted: u64,
    /// Listpack bytes of everything but the header, end byte, and the
    /// `count` / `deleted` elements (whose sizes depend on their values).
    lp_fixed: u64,
    /// Offset of the last entry's flags byte.
    last_off: usize,
    /// ID of the last entry (possibly deleted): MINID trimming reads it.
    last_id: StreamId,
}

/// Why [`Block::from_parts`] rejected a buffer.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum BlockError {
    /// The master section is truncated or malformed.
    BadMaster,
    /// An entry at this byte offset is truncated, has unknown flags, or its
    /// trailing length does not match.
    BadEntry(usize),
    /// The buffer holds no entry (Redis never keeps an empty node).
    Empty,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::BadMaster => f.write_str("malformed block master section"),
            BlockError::BadEntry(off) => write!(f, "malformed block entry at offset {off}"),
            BlockError::Empty => f.write_str("block has no entries"),
        }
    }
}

impl std::error::Error for BlockError {}

/// A block's bytes: owned while it grows; shared once a checkpoint took
/// them ([`Block::share`]), so taking them copies nothing under the store
/// lock. A change to shared bytes copies them first (copy on write), so
/// what the checkpoint holds never changes.
#[derive(Clone)]
enum Buf {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Buf {
    fn as_slice(&self) -> &[u8] {
        match self {
            Buf::Owned(v) => v,
            Buf::Shared(a) => a,
        }
    }

    /// The bytes to change, owned again (copied if a snapshot still holds
    /// them), so later appends touch no reference count.
    fn to_mut(&mut self) -> &mut Vec<u8> {
        if let Buf::Shared(a) = self {
            let v = match Arc::get_mut(a) {
                Some(v) => std::mem::take(v),
                // With the room it had: a shared open tail block
                // (the snapshot's) grows on after this copy.
                None => {
                    let mut v = Vec::with_capacity(a.capacity());
                    v.extend_from_slice(a);
                    v
                }
            };
            *self = Buf::Owned(v);
        }
        match self {
            Buf::Owned(v) => v,
            // Not reached (owned just above); copy on write all the same.
            Buf::Shared(a) => Arc::make_mut(a),
        }
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Buf) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Buf {}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("master", &self.master)
            .field("live", &self.live)
            .field("deleted", &self.deleted)
            .field("bytes", &self.buf.len())
            .field("listpack_bytes", &self.listpack_bytes())
            .field("last_id", &self.last_id)
            .finish()
    }
}

/// The listpack bytes of an entry's flags, ID deltas and (without
/// SAMEFIELDS) field count, and the entry's element count (the last
/// element, its `lp-count`, is not in the size).
#[inline]
fn lp_entry_head(same: bool, ms_delta: u64, seq_delta: u64, pairs: u64) -> (u64, u64) {
    // flags is 0 or 2 here, and later 1 or 3: always a 7-bit uint.
    let mut size = listpack::int_element_size(0)
        + listpack::int_element_size(ms_delta as i64)
        + listpack::int_element_size(seq_delta as i64);
    let mut lp_count = pairs.saturating_add(3);
    if !same {
        size += listpack::int_element_size(as_i64(pairs));
        lp_count = lp_count.saturating_add(pairs.saturating_add(1));
    }
    (size, lp_count)
}

/// Listpack bytes of one entry as Redis's `streamAppendItem` writes it.
fn lp_entry_size<L: FieldList + ?Sized>(
    same: bool,
    ms_delta: u64,
    seq_delta: u64,
    fields: &L,
) -> u64 {
    // As `lp_entry_size_of`, without an iterator of the stored strings
    // (every append measures its entry).
    let (mut size, lp_count) = lp_entry_head(same, ms_delta, seq_delta, fields.pair_count() as u64);
    for i in 0..fields.pair_count() {
        if !same {
            size += listpack::element_size(fields.name(i));
        }
        size += listpack::element_size(fields.value(i));
    }
    size + listpack::int_element_size(as_i64(lp_count))
}

/// [`lp_entry_size`] from the strings the entry stores: its values
/// (SAMEFIELDS), or all its fields and values.
fn lp_entry_size_of<'a>(
    same: bool,
    ms_delta: u64,
    seq_delta: u64,
    pairs: u64,
    stored: impl Iterator<Item = &'a [u8]>,
) -> u64 {
    let (mut size, lp_count) = lp_entry_head(same, ms_delta, seq_delta, pairs);
    for f in stored {
        size += listpack::element_size(f);
    }
    size + listpack::int_element_size(as_i64(lp_count))
}

/// An entry's field/value pairs as the block encoder reads them: a flat
/// `[f1, v1, f2, v2, ...]` list ([`Flat`], what XADD's arguments are) or
/// a list of `(field, value)` pairs ([`PairList`], what a subsystem's
/// results are), so neither has to be copied into the other's shape.
pub trait FieldList {
    /// Number of pairs.
    fn pair_count(&self) -> usize;
    /// The `i`th field name (`i < pair_count()`).
    fn name(&self, i: usize) -> &[u8];
    /// The `i`th value (`i < pair_count()`).
    fn value(&self, i: usize) -> &[u8];
}

/// A flat `[f1, v1, ...]` list (even length: checked by the callers).
pub struct Flat<'a, F>(pub &'a [F]);

impl<F: AsRef<[u8]>> FieldList for Flat<'_, F> {
    #[inline]
    fn pair_count(&self) -> usize {
        self.0.len() / 2
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.0[2 * i].as_ref()
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.0[2 * i + 1].as_ref()
    }
}

/// A list of `(field, value)` pairs.
pub struct PairList<'a, A, B>(pub &'a [(A, B)]);

impl<A: AsRef<[u8]>, B: AsRef<[u8]>> FieldList for PairList<'_, A, B> {
    #[inline]
    fn pair_count(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.0[i].0.as_ref()
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.0[i].1.as_ref()
    }
}

impl Block {
    /// A new block whose master entry takes `fields`' names, holding one
    /// entry `id` (always flagged SAMEFIELDS, as in Redis). `fields` is the
    /// flat `[f1, v1, f2, v2, ...]` list (even length, checked by the caller).
    #[cfg(test)]
    pub(crate) fn new<F: AsRef<[u8]>>(id: StreamId, fields: &[F]) -> Block {
        Block::new_list(id, &Flat(fields))
    }

    /// [`Block::new`] from any [`FieldList`] (at least one pair).
    pub(crate) fn new_list<L: FieldList + ?Sized>(id: StreamId, fields: &L) -> Block {
        let pairs = fields.pair_count();
        let mut buf = Vec::new();
        put_varint(&mut buf, pairs as u64);
        let mut lp_fixed = listpack::int_element_size(as_i64(pairs as u64)) // num-fields
            + listpack::int_element_size(0); // master terminator
        for i in 0..pairs {
            let f = fields.name(i);
            put_bytes(&mut buf, f);
            lp_fixed += listpack::element_size(f);
        }
        let entries_start = buf.len();
        let mut block = Block {
            master: id,
            buf: Buf::Owned(buf),
            entries_start,
            master_fields: pairs,
            live: 0,
            deleted: 0,
            lp_fixed,
            last_off: entries_start,
            last_id: id,
        };
        block.push_entry(id, fields, true);
        block
    }

    /// Appends an entry (the caller decided this block is not full).
    /// Returns whether it was stored with SAMEFIELDS.
    #[cfg(test)]
    pub(crate) fn append<F: AsRef<[u8]>>(&mut self, id: StreamId, fields: &[F]) -> bool {
        self.append_list(id, &Flat(fields))
    }

    /// [`Block::append`] from any [`FieldList`].
    pub(crate) fn append_list<L: FieldList + ?Sized>(&mut self, id: StreamId, fields: &L) -> bool {
        let same = self.fields_match_master(fields);
        self.push_entry(id, fields, same);
        same
    }

    fn push_entry<L: FieldList + ?Sized>(&mut self, id: StreamId, fields: &L, same: bool) {
        // Deltas wrap exactly like Redis's unsigned subtraction; they are
        // non-negative unless XSETID moved the last ID below this master.
        let ms_delta = id.ms.wrapping_sub(self.master.ms);
        let seq_delta = id.seq.wrapping_sub(self.master.seq);
        let pairs = fields.pair_count();
        let buf = self.buf.to_mut();
        let start = buf.len();
        buf.push(if same { FLAG_SAMEFIELDS } else { 0 });
        put_varint(buf, ms_delta);
        put_varint(buf, zigzag(seq_delta as i64));
        if same {
            for i in 0..pairs {
                put_bytes(buf, fields.value(i));
            }
        } else {
            put_varint(buf, pairs as u64);
            for i in 0..pairs {
                put_bytes(buf, fields.name(i));
                put_bytes(buf, fields.value(i));
            }
        }
        let body_len = (buf.len() - start) as u64;
        put_backlen(buf, body_len);
        self.lp_fixed += lp_entry_size(same, ms_delta, seq_delta, fields);
        self.live += 1;
        self.last_off = start;
        self.last_id = id;
    }

    fn fields_match_master<L: FieldList + ?Sized>(&self, fields: &L) -> bool {
        if fields.pair_count() != self.master_fields {
            return false;
        }
        // The master section is `varint(count)` then `varint(len) name`
        // per field; a name shorter than 128 bytes has a one-byte length,
        // compared as a byte (every XADD asks this of its stream's tail).
        let sec = &self.buf.as_slice()[..self.entries_start];
        let mut pos = 0;
        if get_varint(sec, &mut pos).is_none() {
            return false;
        }
        (0..self.master_fields).all(|i| {
            let f = fields.name(i);
            if f.len() < 0x80 {
                if sec.get(pos) != Some(&(f.len() as u8)) {
                    return false;
                }
                pos += 1;
            } else if get_varint(sec, &mut pos) != Some(f.len() as u64) {
                return false;
            }
            let same = sec.get(pos..pos + f.len()) == Some(f);
            pos += f.len();
            same
        })
    }

    /// Rebuilds a block from persisted parts, validating every byte and
    /// recomputing counts, listpack size and the last entry.
    pub fn from_parts(master: StreamId, buf: Vec<u8>) -> Result<Block, BlockError> {
        let mut pos = 0;
        let n = get_varint(&buf, &mut pos).ok_or(BlockError::BadMaster)?;
        let master_fields = usize::try_from(n).map_err(|_| BlockError::BadMaster)?;
        let mut lp_fixed = listpack::int_element_size(as_i64(n)) + listpack::int_element_size(0);
        for _ in 0..master_fields {
            let f = get_bytes(&buf, &mut pos).ok_or(BlockError::BadMaster)?;
            lp_fixed += listpack::element_size(f);
        }
        let mut block = Block {
            master,
            entries_start: pos,
            master_fields,
            live: 0,
            deleted: 0,
            lp_fixed,
            last_off: pos,
            last_id: master,
            buf: Buf::Owned(Vec::new()),
        };
        while pos < buf.len() {
            let start = pos;
            let bad = BlockError::BadEntry(start);
            let (id, flags, body, next) =
                parse_entry(&buf, pos, master, master_fields).ok_or(bad)?;
            if flags & !(FLAG_DELETED | FLAG_SAMEFIELDS) != 0 {
                return Err(bad);
            }
            let same = flags & FLAG_SAMEFIELDS != 0;
            // The strings parse_entry checked, again (without copying) to
            // recompute the listpack size.
            let pairs = if same {
                master_fields as u64
            } else {
                // The pair count, just before `body`.
                let mut q = start + 1;
                get_varint(&buf, &mut q).ok_or(bad)?;
                get_varint(&buf, &mut q).ok_or(bad)?;
                get_varint(&buf, &mut q).ok_or(bad)?
            };
            let strings = if same { pairs } else { pairs.saturating_mul(2) };
            let mut p = body;
            let stored = (0..strings).map_while(|_| get_bytes(&buf, &mut p));
            let ms_delta = id.ms.wrapping_sub(master.ms);
            let seq_delta = id.seq.wrapping_sub(master.seq);
            block.lp_fixed += lp_entry_size_of(same, ms_delta, seq_delta, pairs, stored);
            if flags & FLAG_DELETED != 0 {
                block.deleted += 1;
            } else {
                block.live += 1;
            }
            block.last_off = start;
            block.last_id = id;
            pos = next;
        }
        if block.live + block.deleted == 0 {
            return Err(BlockError::Empty);
        }
        block.buf = Buf::Owned(buf);
        Ok(block)
    }

    /// Rebuilds a block whose counts are known (`live`, `deleted`,
    /// `listpack_bytes` and `last_id` of the block these bytes were taken
    /// from): O(master fields), not O(entries). Checks the master section
    /// and the last entry (it must end the buffer and carry `last_id`), not
    /// every entry: for bytes this process encoded itself (a block's packed
    /// copy), never for bytes read from disk ([`Block::from_parts`]).
    pub(crate) fn from_known_parts(
        master: StreamId,
        buf: Vec<u8>,
        live: u64,
        deleted: u64,
        listpack_bytes: u64,
        last_id: StreamId,
    ) -> Result<Block, BlockError> {
        let mut pos = 0;
        let n = get_varint(&buf, &mut pos).ok_or(BlockError::BadMaster)?;
        let master_fields = usize::try_from(n).map_err(|_| BlockError::BadMaster)?;
        for _ in 0..master_fields {
            get_bytes(&buf, &mut pos).ok_or(BlockError::BadMaster)?;
        }
        let entries_start = pos;
        if entries_start >= buf.len() || live.saturating_add(deleted) == 0 {
            return Err(BlockError::Empty);
        }
        let (len, backlen_at) = get_backlen(&buf, buf.len()).ok_or(BlockError::Empty)?;
        let bad = BlockError::BadEntry(backlen_at);
        let last_off = usize::try_from(len)
            .ok()
            .and_then(|l| backlen_at.checked_sub(l))
            .filter(|&o| o >= entries_start)
            .ok_or(bad)?;
        match parse_entry(&buf, last_off, master, master_fields) {
            Some((id, _, _, next)) if id == last_id && next == buf.len() => {}
            _ => return Err(bad),
        }
        let lp_fixed = listpack_bytes
            .checked_sub(
                listpack::LP_OVERHEAD
                    + listpack::int_element_size(as_i64(live))
                    + listpack::int_element_size(as_i64(deleted)),
            )
            .ok_or(bad)?;
        Ok(Block {
            master,
            buf: Buf::Owned(buf),
            entries_start,
            master_fields,
            live,
            deleted,
            lp_fixed,
            last_off,
            last_id,
        })
    }

    /// The block's key: the ID of its first entry when it was created.
    pub fn master_id(&self) -> StreamId {
        self.master
    }

    /// The encoded bytes (format in `docs/stream-blocks.md`). Together with
    /// [`Block::master_id`] this is everything needed to rebuild the block.
    pub fn encoded(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded bytes, shared with the block without copying them (a
    /// later change to the block copies them first). For snapshots.
    pub fn share(&mut self) -> Arc<Vec<u8>> {
        match &mut self.buf {
            Buf::Shared(a) => Arc::clone(a),
            Buf::Owned(v) => {
                let a = Arc::new(std::mem::take(v));
                self.buf = Buf::Shared(Arc::clone(&a));
                a
            }
        }
    }

    /// Entries not flagged deleted.
    pub fn live_count(&self) -> u64 {
        self.live
    }

    /// Entries flagged deleted but still stored.
    pub fn deleted_count(&self) -> u64 {
        self.deleted
    }

    /// All stored entries, deleted or not (what `stream-node-max-entries` counts).
    pub fn entry_count(&self) -> u64 {
        self.live + self.deleted
    }

    /// `lpBytes()` of the equivalent Redis listpack node.
    pub fn listpack_bytes(&self) -> u64 {
        listpack::LP_OVERHEAD
            + listpack::int_element_size(as_i64(self.live))
            + listpack::int_element_size(as_i64(self.deleted))
            + self.lp_fixed
    }

    /// ID of the last stored entry, deleted or not.
    pub fn last_id(&self) -> StreamId {
        self.last_id
    }

    /// Heap bytes held by the buffer (its capacity).
    pub fn heap_bytes(&self) -> usize {
        match &self.buf {
            Buf::Owned(v) => v.capacity(),
            Buf::Shared(a) => a.capacity(),
        }
    }

    /// The master field names, in order.
    pub fn master_field_names(&self) -> MasterFields<'_> {
        let mut pos = 0;
        let remaining = get_varint(&self.buf, &mut pos).unwrap_or(0);
        MasterFields {
            buf: &self.buf[..self.entries_start],
            pos,
            remaining,
        }
    }

    /// Every stored entry in storage order, including deleted ones.
    pub fn entries(&self) -> BlockEntries<'_> {
        BlockEntries {
            block: self,
            pos: self.entries_start,
            end: self.buf.len(),
        }
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        // Shared bytes are left as they are: shrinking would copy them.
        if let Buf::Owned(v) = &mut self.buf {
            v.shrink_to_fit();
        }
    }

    /// Offset of the first entry.
    pub(crate) fn first_pos(&self) -> usize {
        self.entries_start
    }

    /// Offset just past the last entry.
    pub(crate) fn end_pos(&self) -> usize {
        self.buf.len()
    }

    /// The entry starting at `pos`, if any.
    pub(crate) fn entry_at(&self, pos: usize) -> Option<EntryRef<'_>> {
        if pos >= self.buf.len() {
            return None;
        }
        let (id, flags, body, next) = parse_entry(&self.buf, pos, self.master, self.master_fields)?;
        Some(EntryRef {
            block: self,
            id,
            flags,
            start: pos,
            body,
            next,
        })
    }

    /// The entry that ends at `end` (walking backwards), if any.
    pub(crate) fn entry_before(&self, end: usize) -> Option<EntryRef<'_>> {
        if end <= self.entries_start {
            return None;
        }
        let (len, backlen_start) = get_backlen(&self.buf, end)?;
        let start = backlen_start.checked_sub(usize::try_from(len).ok()?)?;
        if start < self.entries_start {
            return None;
        }
        self.entry_at(start)
    }

    /// Flags the entry at `pos` deleted and updates the counters. Returns
    /// false (and changes nothing) if it was already deleted.
    pub(crate) fn mark_deleted(&mut self, pos: usize) -> bool {
        // Checked before `to_mut`, which may copy shared bytes.
        if self.buf.get(pos).is_none_or(|f| f & FLAG_DELETED != 0) {
            return false;
        }
        match self.buf.to_mut().get_mut(pos) {
            Some(flags) if *flags & FLAG_DELETED == 0 => {
                *flags |= FLAG_DELETED;
                self.live -= 1;
                self.deleted += 1;
                true
            }
            _ => false,
        }
    }
}

/// Decodes the entry header at `pos`: (id, flags, offset of the first
/// field/value, offset of the next entry). Validates the trailing length.
fn parse_entry(
    buf: &[u8],
    pos: usize,
    master: StreamId,
    master_fields: usize,
) -> Option<(StreamId, u8, usize, usize)> {
    let mut p = pos;
    let flags = *buf.get(p)?;
    p += 1;
    let ms_delta = get_varint(buf, &mut p)?;
    let seq_delta = unzigzag(get_varint(buf, &mut p)?) as u64;
    let id = StreamId::new(
        master.ms.wrapping_add(ms_delta),
        master.seq.wrapping_add(seq_delta),
    );
    let strings = if flags & FLAG_SAMEFIELDS != 0 {
        master_fields
    } else {
        usize::try_from(get_varint(buf, &mut p)?)
            .ok()?
            .checked_mul(2)?
    };
    let body = p;
    for _ in 0..strings {
        get_bytes(buf, &mut p)?;
    }
    // The trailing reverse varint must encode exactly this entry's length.
    let len = (p - pos) as u64;
    let next = p.checked_add(varint_len(len))?;
    if next > buf.len() || get_backlen(buf, next) != Some((len, p)) {
        return None;
    }
    Some((id, flags, body, next))
}

/// Iterator over a block's master field names.
#[derive(Clone)]
pub struct MasterFields<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u64,
}

impl<'a> Iterator for MasterFields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        get_bytes(self.buf, &mut self.pos)
    }
}

/// Iterator over all entries stored in a block (deleted included).
#[derive(Clone)]
pub struct BlockEntries<'a> {
    block: &'a Block,
    pos: usize,
    end: usize,
}

impl<'a> Iterator for BlockEntries<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let e = self.block.entry_at(self.pos)?;
        self.pos = e.next;
        Some(e)
    }
}

impl DoubleEndedIterator for BlockEntries<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let e = self.block.entry_before(self.end)?;
        self.end = e.start;
        Some(e)
    }
}

/// A borrowed view of one stored entry: no allocation until
/// [`EntryRef::to_entry`].
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    block: &'a Block,
    id: StreamId,
    flags: u8,
    /// Offset of the flags byte.
    start: usize,
    /// Offset of the first field/value string.
    body: usize,
    /// Offset of the next entry.
    next: usize,
}

impl<'a> EntryRef<'a> {
    pub fn id(&self) -> StreamId {
        self.id
    }

    pub fn is_deleted(&self) -> bool {
        self.flags & FLAG_DELETED != 0
    }

    /// Whether the field names are shared with the block's master entry.
    pub fn same_fields(&self) -> bool {
        self.flags & FLAG_SAMEFIELDS != 0
    }

    /// Number of field/value pairs.
    pub fn pair_count(&self) -> usize {
        if self.same_fields() {
            self.block.master_fields
        } else {
            // Read back the count that precedes the body.
            let mut p = self.start + 1;
            let _ = get_varint(&self.block.buf, &mut p);
            let _ = get_varint(&self.block.buf, &mut p);
            get_varint(&self.block.buf, &mut p)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
        }
    }

    /// The (field, value) pairs in insertion order.
    pub fn pairs(&self) -> Pairs<'a> {
        Pairs {
            buf: &self.block.buf,
            pos: self.body,
            names: if self.same_fields() {
                Some(self.block.master_field_names())
            } else {
                None
            },
            remaining: self.pair_count(),
        }
    }

    /// The values alone, in insertion order (no field name is decoded).
    pub fn values(&self) -> Values<'a> {
        Values {
            buf: &self.block.buf,
            pos: self.body,
            names: !self.same_fields(),
            remaining: self.pair_count(),
        }
    }

    /// Whether this entry's field names are `other`'s, known without
    /// reading them: both take their names from the master entry of one
    /// block, or of blocks whose master sections are the same bytes.
    pub fn same_names_as(&self, other: &EntryRef<'_>) -> bool {
        self.same_fields()
            && other.same_fields()
            && (std::ptr::eq(self.block, other.block)
                || self.block.buf[..self.block.entries_start]
                    == other.block.buf[..other.block.entries_start])
    }

    /// Copies the entry out as an owned [`crate::Entry`]. All fields and
    /// values share one allocation (each `Bytes` is a slice of it).
    pub fn to_entry(&self) -> crate::Entry {
        let pairs = self.pairs();
        let n = pairs.remaining * 2;
        let total: usize = pairs.clone().map(|(f, v)| f.len() + v.len()).sum();
        let mut data = Vec::with_capacity(total);
        for (f, v) in pairs.clone() {
            data.extend_from_slice(f);
            data.extend_from_slice(v);
        }
        let data = Bytes::from(data);
        let mut fields = Vec::with_capacity(n);
        let mut at = 0;
        for (f, v) in pairs {
            for len in [f.len(), v.len()] {
                fields.push(data.slice(at..at + len));
                at += len;
            }
        }
        crate::Entry {
            id: self.id,
            fields,
        }
    }

    /// Offset of this entry's flags byte in [`Block::encoded`].
    pub fn offset(&self) -> usize {
        self.start
    }

    pub(crate) fn next_pos(&self) -> usize {
        self.next
    }
}

impl fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryRef")
            .field("id", &self.id)
            .field("deleted", &self.is_deleted())
            .field("same_fields", &self.same_fields())
            .finish()
    }
}

/// Iterator over an entry's (field, value) pairs.
#[derive(Clone)]
pub struct Pairs<'a> {
    buf: &'a [u8],
    pos: usize,
    names: Option<MasterFields<'a>>,
    remaining: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let field = match &mut self.names {
            Some(names) => names.next()?,
            None => get_bytes(self.buf, &mut self.pos)?,
        };
        let value = get_bytes(self.buf, &mut self.pos)?;
        Some((field, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Iterator over an entry's values ([`EntryRef::values`]).
#[derive(Clone)]
pub struct Values<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Whether each value follows its name (an entry without SAMEFIELDS).
    names: bool,
    remaining: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if self.names {
            get_bytes(self.buf, &mut self.pos)?;
        }
        get_bytes(self.buf, &mut self.pos)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
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

    /// Bytes shared with a snapshot never change: a deletion or an append
    /// after `share` copies them first, and the block reads its own copy.
    #[test]
    fn shared_bytes_are_copied_on_write() {
        let id = |ms| StreamId::new(ms, 0);
        let mut blk = Block::new(id(1), &fv(&["a", "1"]));
        blk.append(id(2), &fv(&["a", "2"]));
        let before = blk.encoded().to_vec();
        let shared = blk.share();
        assert_eq!(*shared, before);
        // Sharing again hands out the same bytes, still without a copy.
        assert!(Arc::ptr_eq(&shared, &blk.share()));

        let pos = blk.first_pos();
        assert!(blk.mark_deleted(pos));
        assert_eq!(*shared, before, "the snapshot's bytes changed");
        assert_ne!(blk.encoded(), &before[..]);
        assert!(!blk.mark_deleted(pos), "deleted twice");
        assert_eq!((blk.live_count(), blk.deleted_count()), (1, 1));

        let shared = blk.share();
        let deleted = blk.encoded().to_vec();
        blk.append(id(3), &fv(&["a", "3"]));
        assert_eq!(*shared, deleted);
        assert_eq!(blk.entry_count(), 3);
        let rebuilt = Block::from_parts(id(1), blk.encoded().to_vec());
        assert_eq!(rebuilt.as_ref(), Ok(&blk));
    }

    #[test]
    fn varints_roundtrip() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            1 << 35,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());

            let mut rb = vec![0xAA];
            put_backlen(&mut rb, v);
            assert_eq!(rb.len(), 1 + varint_len(v));
            assert_eq!(get_backlen(&rb, rb.len()), Some((v, 1)));
        }
        assert_eq!(get_varint(&[0x80], &mut 0), None);
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
        assert_eq!(
            get_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
        assert_eq!(get_backlen(&[0x80], 1), None);
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        // The examples in docs/stream-blocks.md.
        let enc = |v: u64, f: fn(&mut Vec<u8>, u64)| {
            let mut b = Vec::new();
            f(&mut b, v);
            b
        };
        assert_eq!(enc(0, put_varint), [0x00]);
        assert_eq!(enc(127, put_varint), [0x7f]);
        assert_eq!(enc(128, put_varint), [0x80, 0x01]);
        assert_eq!(enc(300, put_varint), [0xac, 0x02]);
        assert_eq!(enc(5, put_backlen), [0x05]);
        assert_eq!(enc(200, put_backlen), [0x01, 0xc8]);
        assert_eq!(enc(16384, put_backlen), [0x01, 0x80, 0x80]);
        assert_eq!(enc(u64::MAX, put_varint).len(), 10);
    }

    #[test]
    fn encoding_bytes_are_as_documented() {
        // master 5-3 with fields [a]; entry 5-3 {a: x}; entry 6-0 {b: 1}.
        let mut blk = Block::new(StreamId::new(5, 3), &fv(&["a", "x"]));
        assert!(!blk.append(StreamId::new(6, 0), &fv(&["b", "1"])));
        let expected: Vec<u8> = vec![
            1,
            1,
            b'a', // master: 1 field, "a"
            FLAG_SAMEFIELDS,
            0,
            0,
            1,
            b'x',
            5, // entry 1: body 5 bytes, backlen 5
            0,
            1,
            5,
            1,
            1,
            b'b',
            1,
            b'1',
            8, // entry 2: ms+1, seq -3 (zigzag 5)
        ];
        assert_eq!(blk.encoded(), expected.as_slice());
        let ids: Vec<_> = blk.entries().map(|e| e.id()).collect();
        assert_eq!(ids, vec![StreamId::new(5, 3), StreamId::new(6, 0)]);
        let rev: Vec<_> = blk.entries().rev().map(|e| e.id()).collect();
        assert_eq!(rev, vec![StreamId::new(6, 0), StreamId::new(5, 3)]);
    }

    #[test]
    fn listpack_size_of_small_nodes() {
        // Hand-computed from listpack.c rules.
        // master: count(1)=2, deleted(0)=2, nfields(1)=2, "a"=3, term=2 -> 11
        // entry: flags 2, ms 2, seq 2, value "1" (int) 2, lp-count(4) 2 -> 10
        let mut blk = Block::new(StreamId::new(1, 1), &fv(&["a", "1"]));
        assert_eq!(blk.listpack_bytes(), 7 + 11 + 10);
        // Different fields: flags 2, ms 2, seq 2, nfields 2, "b" 3, "hello" 7, lp-count(6) 2.
        blk.append(StreamId::new(1, 2), &fv(&["b", "hello"]));
        assert_eq!(blk.listpack_bytes(), 7 + 11 + 10 + 20);
        // Same fields, ms delta 200 (13-bit: 3 bytes), seq delta -1 (3 bytes).
        blk.append(StreamId::new(201, 0), &fv(&["a", "x"]));
        assert_eq!(blk.listpack_bytes(), 7 + 11 + 10 + 20 + (2 + 3 + 3 + 3 + 2));
    }

    #[test]
    fn counters_change_listpack_size() {
        let mut blk = Block::new(StreamId::new(1, 0), &fv(&["f", "v"]));
        let per_entry = {
            let before = blk.listpack_bytes();
            blk.append(StreamId::new(1, 1), &fv(&["f", "v"]));
            blk.listpack_bytes() - before
        };
        for seq in 2..127 {
            blk.append(StreamId::new(1, seq), &fv(&["f", "v"]));
        }
        assert_eq!(blk.live_count(), 127);
        let at127 = blk.listpack_bytes();
        blk.append(StreamId::new(1, 127), &fv(&["f", "v"]));
        // seq delta 127 still 1 byte; the count element grows from 2 to 3 bytes.
        assert_eq!(blk.listpack_bytes(), at127 + per_entry + 1);
        let at128 = blk.listpack_bytes();
        // Deleting one: count 127 (2 bytes again), deleted 1 (still 2 bytes).
        let pos = blk.entries().next().map(|e| e.offset()).unwrap_or(0);
        assert!(blk.mark_deleted(pos));
        assert!(!blk.mark_deleted(pos));
        assert_eq!(blk.listpack_bytes(), at128 - 1);
        assert_eq!((blk.live_count(), blk.deleted_count()), (127, 1));
    }

    #[test]
    fn from_parts_roundtrip_and_rejects_garbage() {
        let mut blk = Block::new(StreamId::new(10, 5), &fv(&["symbol", "BTC", "price", "1"]));
        blk.append(
            StreamId::new(11, 0),
            &fv(&["symbol", "ETH", "price", "-77"]),
        );
        blk.append(StreamId::new(11, 1), &fv(&["other", "x"]));
        blk.append(
            StreamId::new(4000, 9),
            &fv(&["symbol", "y", "price", &"z".repeat(300)]),
        );
        let pos = blk.entries().nth(1).map(|e| e.offset()).unwrap_or(0);
        blk.mark_deleted(pos);
        let rebuilt = Block::from_parts(blk.master_id(), blk.encoded().to_vec());
        assert_eq!(rebuilt.as_ref(), Ok(&blk));

        assert_eq!(
            Block::from_parts(StreamId::MIN, vec![]),
            Err(BlockError::BadMaster)
        );
        assert_eq!(
            Block::from_parts(StreamId::MIN, vec![0]),
            Err(BlockError::Empty)
        );
        let mut bad = blk.encoded().to_vec();
        bad.pop();
        assert!(matches!(
            Block::from_parts(blk.master_id(), bad),
            Err(BlockError::BadEntry(_))
        ));
        let mut bad_flags = blk.encoded().to_vec();
        let first = blk.first_pos();
        bad_flags[first] |= 0x10;
        assert_eq!(
            Block::from_parts(blk.master_id(), bad_flags),
            Err(BlockError::BadEntry(first))
        );
    }

    #[test]
    fn from_known_parts_rebuilds_the_same_block_and_checks_its_ends() {
        let mut blk = Block::new(StreamId::new(10, 5), &fv(&["symbol", "BTC", "price", "1"]));
        blk.append(StreamId::new(11, 0), &fv(&["other", "x"]));
        blk.append(
            StreamId::new(4000, 9),
            &fv(&["symbol", "y", "price", &"z".repeat(300)]),
        );
        let pos = blk.entries().nth(1).map(|e| e.offset()).unwrap_or(0);
        blk.mark_deleted(pos);
        let known = |bytes: Vec<u8>, last: StreamId| {
            Block::from_known_parts(
                blk.master_id(),
                bytes,
                blk.live_count(),
                blk.deleted_count(),
                blk.listpack_bytes(),
                last,
            )
        };
        let bytes = blk.encoded().to_vec();
        assert_eq!(known(bytes.clone(), blk.last_id()).as_ref(), Ok(&blk));
        // Rebuilt from the counts, equal in every field (offsets, listpack
        // size) to a block that checked every entry.
        assert_eq!(
            known(bytes.clone(), blk.last_id()),
            Block::from_parts(blk.master_id(), bytes.clone())
        );
        assert!(known(bytes.clone(), StreamId::new(4000, 8)).is_err());
        let mut short = bytes.clone();
        short.pop();
        assert!(known(short, blk.last_id()).is_err());
        assert!(known(bytes[..blk.first_pos()].to_vec(), blk.last_id()).is_err());
        assert!(known(Vec::new(), blk.last_id()).is_err());
        assert!(Block::from_known_parts(blk.master_id(), bytes, 1, 0, 3, blk.last_id()).is_err());
    }

    #[test]
    fn pairs_view() {
        let mut blk = Block::new(StreamId::new(1, 0), &fv(&["a", "1", "b", "2"]));
        blk.append(StreamId::new(1, 1), &fv(&["a", "3", "c", "4"]));
        let all: Vec<Vec<(Vec<u8>, Vec<u8>)>> = blk
            .entries()
            .map(|e| e.pairs().map(|(f, v)| (f.to_vec(), v.to_vec())).collect())
            .collect();
        let p = |f: &str, v: &str| (f.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(
            all,
            vec![
                vec![p("a", "1"), p("b", "2")],
                vec![p("a", "3"), p("c", "4")]
            ]
        );
        let e = blk.entries().nth(1).map(|e| e.to_entry());
        assert_eq!(e.map(|e| e.fields), Some(fv(&["a", "3", "c", "4"])));
    }
}
