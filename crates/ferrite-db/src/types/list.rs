//! The list type: a deque of byte strings kept as Redis's quicklist keeps
//! it, a deque of chunks ([`Chunk`]), each one flat byte buffer of entries
//! of at most [`CHUNK_BYTES`] (Redis's `list-max-listpack-size -2`: 8 KiB
//! per listpack; an element bigger than that gets a chunk of its own).
//! Redis 7.0 says `quicklist` for every list in `OBJECT ENCODING`, whatever
//! its size (checked against redis-server 7.0.15; `listpack` lists came in
//! 7.2), and so does [`List::encoding`].
//!
//! An entry is a header, the data and a back-length, as a listpack entry:
//! header `0x00..=0x7f` is a string of that many bytes, `0x80..=0xbf` with
//! the next byte a string of up to 16383 bytes (14-bit length), `0xc0` and
//! a u64 LE length a longer string, `0xf1..=0xf8` an integer of that many
//! (1 to 8) little-endian two's-complement bytes: an element that is an
//! integer in Redis's strict form (`string2ll`: what [`parse_i64`] accepts,
//! so it prints back to the same bytes) is stored as one. The back-length
//! is the size of header plus data as a LEB128 varint stored backwards, so
//! a chunk can be walked from either end. A string of up to 127 bytes costs
//! 2 bytes over its data; a small integer 3 bytes in all.
//!
//! Pushes and pops at either end touch one end chunk (a push at the head
//! moves the bytes of that chunk, at most 8 KiB); LINDEX, LSET, LINSERT
//! walk the chunks from the nearer end, then the entries of one chunk.
//! Invariants: no chunk is empty; `len` is the sum of the chunks' counts; a
//! chunk holding more than one entry holds at most [`CHUNK_BYTES`] bytes.
//! Lists are never empty in the keyspace: the commands delete a list they
//! empty, and [`List::decode`] refuses an empty one.
//!
//! Snapshot form (checkpoint tag 3), written by [`List::encode`] and the
//! same bytes as before chunking: the number of elements as a LEB128
//! varint, then each element, head first, as its length (varint) and its
//! bytes. [`List::decode`] checks every length against the bytes left and
//! never allocates more than they can hold.

use super::codec::{get_varint, put_varint, take};
use crate::args::parse_i64;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// A chunk's size limit (Redis's `list-max-listpack-size -2`).
pub const CHUNK_BYTES: usize = 8 * 1024;

/// Which end of a list (Redis's `LIST_HEAD` / `LIST_TAIL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

impl End {
    /// `LEFT` / `RIGHT`, case-insensitively.
    pub fn parse(b: &[u8]) -> Option<End> {
        if b.eq_ignore_ascii_case(b"left") {
            Some(End::Left)
        } else if b.eq_ignore_ascii_case(b"right") {
            Some(End::Right)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            End::Left => "LEFT",
            End::Right => "RIGHT",
        }
    }
}

/// One element as stored: read it without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem<'a> {
    Int(i64),
    Str(&'a [u8]),
}

impl Elem<'_> {
    /// The element's bytes, owned.
    pub fn to_bytes(self) -> Bytes {
        match self {
            Elem::Int(n) => Bytes::from(n.to_string()),
            Elem::Str(s) => Bytes::copy_from_slice(s),
        }
    }

    /// Whether the element is `probe`'s bytes.
    pub fn matches(self, probe: &Probe<'_>) -> bool {
        match self {
            Elem::Int(n) => probe.int == Some(n),
            Elem::Str(s) => s == probe.bytes,
        }
    }
}

/// A value to compare elements against (LREM, LPOS, LINSERT), read once.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    bytes: &'a [u8],
    int: Option<i64>,
}

impl<'a> Probe<'a> {
    pub fn new(bytes: &'a [u8]) -> Probe<'a> {
        Probe {
            bytes,
            int: parse_i64(bytes),
        }
    }
}

// ---- entries ----

const HDR_STR14: u8 = 0x80;
const HDR_STR64: u8 = 0xc0;
const HDR_INT: u8 = 0xf0;

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The bytes of the smallest two's complement form of `n` (1 to 8).
fn int_width(n: i64) -> usize {
    (1..8)
        .find(|&w| {
            let bits = 8 * w as u32;
            let min = -(1i64 << (bits - 1));
            let max = (1i64 << (bits - 1)) - 1;
            (min..=max).contains(&n)
        })
        .unwrap_or(8)
}

/// Header and data of `v` as stored, with the back-length: appended to `out`.
fn put_entry(out: &mut Vec<u8>, v: &[u8]) {
    let start = out.len();
    if let Some(n) = parse_i64(v) {
        let w = int_width(n);
        out.push(HDR_INT + w as u8);
        out.extend_from_slice(&n.to_le_bytes()[..w]);
    } else if v.len() < 0x80 {
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    } else if v.len() < 1 << 14 {
        out.push(HDR_STR14 | (v.len() >> 8) as u8);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    } else {
        out.push(HDR_STR64);
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v);
    }
    // The back-length: a varint whose first byte is the last one stored.
    let mut l = out.len() - start;
    let mut rev = [0u8; 10];
    let mut k = 0;
    loop {
        let more = l >= 0x80;
        rev[k] = (l as u8 & 0x7f) | if more { 0x80 } else { 0 };
        k += 1;
        l >>= 7;
        if !more {
            break;
        }
    }
    out.extend(rev[..k].iter().rev());
}

/// The stored size of `v` (what [`put_entry`] appends).
fn entry_size(v: &[u8]) -> usize {
    let body = match parse_i64(v) {
        Some(n) => 1 + int_width(n),
        None if v.len() < 0x80 => 1 + v.len(),
        None if v.len() < 1 << 14 => 2 + v.len(),
        None => 9 + v.len(),
    };
    body + varint_len(body)
}

/// The entry starting at `at` of a well-formed chunk buffer, and where the
/// next one starts. Chunks only ever hold what [`put_entry`] wrote.
fn entry_at(b: &[u8], at: usize) -> (Elem<'_>, usize) {
    let h = b[at];
    let (elem, body_end) = if h < HDR_STR14 {
        let s = at + 1;
        (Elem::Str(&b[s..s + h as usize]), s + h as usize)
    } else if h < HDR_STR64 {
        let len = (usize::from(h & 0x3f) << 8) | usize::from(b[at + 1]);
        let s = at + 2;
        (Elem::Str(&b[s..s + len]), s + len)
    } else if h == HDR_STR64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[at + 1..at + 9]);
        let len = u64::from_le_bytes(n) as usize;
        let s = at + 9;
        (Elem::Str(&b[s..s + len]), s + len)
    } else {
        let w = usize::from(h - HDR_INT);
        let mut n = [0u8; 8];
        n[..w].copy_from_slice(&b[at + 1..at + 1 + w]);
        // Sign-extend from the top stored byte.
        let shift = 64 - 8 * w as u32;
        let v = (i64::from_le_bytes(n) << shift) >> shift;
        (Elem::Int(v), at + 1 + w)
    };
    (elem, body_end + varint_len(body_end - at))
}

/// Where the entry ending at `end` starts (reads its back-length).
fn entry_before(b: &[u8], end: usize) -> usize {
    let mut l = 0usize;
    let mut p = end;
    let mut shift = 0;
    loop {
        p -= 1;
        let byte = b[p];
        l |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    p - l
}

// ---- chunks ----

/// A run of entries in one buffer (a quicklist node's listpack).
#[derive(Debug, Clone, Default)]
struct Chunk {
    buf: Vec<u8>,
    count: usize,
}

impl Chunk {
    fn iter(&self) -> impl Iterator<Item = (usize, Elem<'_>, usize)> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.buf.len() {
                return None;
            }
            let (e, next) = entry_at(&self.buf, at);
            let start = at;
            at = next;
            Some((start, e, next))
        })
    }

    /// The `[start, end)` of entry `i` (< count), walked from the nearer end.
    fn span(&self, i: usize) -> (usize, usize) {
        if i < self.count / 2 {
            let mut at = 0;
            for _ in 0..i {
                at = entry_at(&self.buf, at).1;
            }
            (at, entry_at(&self.buf, at).1)
        } else {
            let mut end = self.buf.len();
            for _ in i + 1..self.count {
                end = entry_before(&self.buf, end);
            }
            (entry_before(&self.buf, end), end)
        }
    }

    /// Room for `extra` more bytes. A listpack grows by exactly what it
    /// needs; a small chunk grows to the allocator's next 16-byte step
    /// (nothing wasted), a larger one by an eighth, so pushes stay
    /// amortised O(1) with at most 1/8 slack in the two end chunks.
    fn reserve(&mut self, extra: usize) {
        let need = self.buf.len() + extra;
        if need > self.buf.capacity() {
            let want = if need < 1024 {
                need.next_multiple_of(16)
            } else {
                (need + need / 8).min(CHUNK_BYTES.max(need))
            };
            self.buf.reserve_exact(want - self.buf.len());
        }
    }

    fn push_back(&mut self, v: &[u8]) {
        self.reserve(entry_size(v));
        put_entry(&mut self.buf, v);
        self.count += 1;
    }

    fn insert_at(&mut self, at: usize, v: &[u8]) {
        let mut e = Vec::with_capacity(entry_size(v));
        put_entry(&mut e, v);
        self.reserve(e.len());
        self.buf.splice(at..at, e);
        self.count += 1;
    }

    /// Remove the entry `[start, end)`, returning its bytes.
    fn take(&mut self, start: usize, end: usize) -> Bytes {
        let v = entry_at(&self.buf, start).0.to_bytes();
        self.buf.drain(start..end);
        self.count -= 1;
        v
    }

    fn fits(&self, extra: usize) -> bool {
        self.buf.len() + extra <= CHUNK_BYTES
    }

    fn bytes(&self) -> usize {
        self.buf.capacity() + MALLOC_OVERHEAD
    }
}

/// A list's chunks. At most one is held inline (a small list pays for no
/// sharing: [`List::share`] encodes it in place). More are shared copy on
/// write at two levels with a checkpoint that is encoding them: the chunk
/// list and each chunk are behind an `Arc`, and every write goes through
/// `Arc::make_mut` ([`Chunks::get_mut`], [`Chunks::deque`]). A write while
/// a snapshot holds the list copies the chunk list (one pointer per chunk)
/// and only the chunks it changes (at most 8 KiB each), not the whole list.
#[derive(Debug, Clone, Default)]
enum Chunks {
    #[default]
    Empty,
    One(Chunk),
    Many(Arc<VecDeque<Arc<Chunk>>>),
}

impl Chunks {
    fn len(&self) -> usize {
        match self {
            Chunks::Empty => 0,
            Chunks::One(_) => 1,
            Chunks::Many(d) => d.len(),
        }
    }

    fn get(&self, ci: usize) -> Option<&Chunk> {
        match self {
            Chunks::Empty => None,
            Chunks::One(c) => (ci == 0).then_some(c),
            Chunks::Many(d) => d.get(ci).map(|c| &**c),
        }
    }

    fn front(&self) -> Option<&Chunk> {
        self.get(0)
    }

    fn back(&self) -> Option<&Chunk> {
        self.get(self.len().checked_sub(1)?)
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &Chunk> + ExactSizeIterator + '_ {
        (0..self.len()).map(move |ci| &self[ci])
    }

    /// Chunk `ci`, to change: copied first (and the chunk list) if shared.
    fn get_mut(&mut self, ci: usize) -> Option<&mut Chunk> {
        match self {
            Chunks::Empty => None,
            Chunks::One(c) => (ci == 0).then_some(c),
            Chunks::Many(d) => Arc::make_mut(d).get_mut(ci).map(Arc::make_mut),
        }
    }

    /// The chunk list, to change its shape: copied first if shared (its
    /// chunks stay shared until written through [`Chunks::get_mut`]). An
    /// inline chunk moves into it.
    fn deque(&mut self) -> &mut VecDeque<Arc<Chunk>> {
        if !matches!(self, Chunks::Many(_)) {
            let mut d = VecDeque::with_capacity(2);
            if let Chunks::One(c) = std::mem::take(self) {
                d.push_back(Arc::new(c));
            }
            *self = Chunks::Many(Arc::new(d));
        }
        match self {
            Chunks::Many(d) => Arc::make_mut(d),
            // Made `Many` just above.
            Chunks::Empty | Chunks::One(_) => unreachable!("chunks not a deque"),
        }
    }

    fn push(&mut self, end: End, c: Chunk) {
        if let Chunks::Empty = self {
            *self = Chunks::One(c);
            return;
        }
        let d = self.deque();
        d.reserve_exact(1);
        match end {
            End::Left => d.push_front(Arc::new(c)),
            End::Right => d.push_back(Arc::new(c)),
        }
    }

    /// Drop the chunk at `end` (not copied first).
    fn pop(&mut self, end: End) {
        if let Chunks::One(_) = self {
            *self = Chunks::Empty;
            return;
        }
        if let Chunks::Many(_) = self {
            let d = self.deque();
            match end {
                End::Left => d.pop_front(),
                End::Right => d.pop_back(),
            };
        }
    }

    /// Remove chunk `ci` and return it (a copy if a snapshot shares it).
    fn remove(&mut self, ci: usize) -> Option<Chunk> {
        match self {
            Chunks::Empty => None,
            Chunks::One(_) if ci > 0 => None,
            Chunks::One(_) => match std::mem::take(self) {
                Chunks::One(c) => Some(c),
                _ => None,
            },
            Chunks::Many(_) => self.deque().remove(ci).map(Arc::unwrap_or_clone),
        }
    }

    fn insert(&mut self, ci: usize, c: Chunk) {
        if ci == 0 && matches!(self, Chunks::Empty) {
            *self = Chunks::One(c);
        } else {
            self.deque().insert(ci, Arc::new(c));
        }
    }

    /// Drop the empty chunks (those not dropped are not copied).
    fn drop_empty(&mut self) {
        if self.iter().all(|c| c.count > 0) {
            return;
        }
        match self {
            Chunks::One(_) => *self = Chunks::Empty,
            _ => self.deque().retain(|c| c.count > 0),
        }
    }

    /// The allocations beyond the chunks' buffers: for shared chunks the
    /// chunk list's `Arc` (counts and header), its buffer and each chunk's
    /// `Arc` (counts and the chunk).
    fn overhead(&self) -> usize {
        match self {
            Chunks::Empty | Chunks::One(_) => 0,
            Chunks::Many(d) => {
                16 + std::mem::size_of::<VecDeque<Arc<Chunk>>>()
                    + MALLOC_OVERHEAD
                    + d.capacity() * std::mem::size_of::<Arc<Chunk>>()
                    + MALLOC_OVERHEAD
                    + d.len() * (16 + std::mem::size_of::<Chunk>() + MALLOC_OVERHEAD)
            }
        }
    }
}

impl std::ops::Index<usize> for Chunks {
    type Output = Chunk;

    fn index(&self, ci: usize) -> &Chunk {
        match self.get(ci) {
            Some(c) => c,
            None => panic!("chunk {ci} of {}", self.len()),
        }
    }
}

/// What the allocator spends per allocation beyond the bytes asked for.
const MALLOC_OVERHEAD: usize = 16;

/// Shared copy on write with a checkpoint that is encoding it
/// ([`List::share`]; see [`Chunks`]).
#[derive(Debug, Clone, Default)]
pub struct List {
    chunks: Chunks,
    len: usize,
}

impl List {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name OBJECT ENCODING reports (Redis 7.0: always `quicklist`).
    pub fn encoding(&self) -> &'static str {
        "quicklist"
    }

    fn end(&self, end: End) -> Option<&Chunk> {
        match end {
            End::Left => self.chunks.front(),
            End::Right => self.chunks.back(),
        }
    }

    /// The chunk at `end`, to change: copied first if shared.
    fn end_mut(&mut self, end: End) -> Option<&mut Chunk> {
        let ci = match end {
            End::Left => 0,
            End::Right => self.chunks.len().checked_sub(1)?,
        };
        self.chunks.get_mut(ci)
    }

    pub fn push(&mut self, end: End, v: &[u8]) {
        let size = entry_size(v);
        self.len += 1;
        let fits = self.end(end).is_some_and(|c| c.fits(size));
        if fits {
            if let Some(c) = self.end_mut(end) {
                match end {
                    End::Right => c.push_back(v),
                    End::Left => c.insert_at(0, v),
                }
            }
            return;
        }
        // The full end chunk gives back its slack (a shared one is copied
        // for it, into a buffer of its length).
        if self
            .end(end)
            .is_some_and(|c| c.buf.capacity() > c.buf.len())
        {
            if let Some(c) = self.end_mut(end) {
                c.buf.shrink_to_fit();
            }
        }
        // The chunk (for a shared list, its `Arc`) is allocated before its
        // buffer, so the buffer, allocated last, can grow in place as the
        // end chunk fills: the other order left a hole behind each chunk
        // (measured: 18-20 bytes an element of a big list against 11).
        self.chunks.push(end, Chunk::default());
        if let Some(c) = self.end_mut(end) {
            c.buf.reserve_exact(entry_size(v));
            c.push_back(v);
        }
    }

    pub fn pop(&mut self, end: End) -> Option<Bytes> {
        let c = self.end_mut(end)?;
        let v = match end {
            End::Left => {
                let next = entry_at(&c.buf, 0).1;
                c.take(0, next)
            }
            End::Right => {
                let last = c.buf.len();
                c.take(entry_before(&c.buf, last), last)
            }
        };
        let emptied = c.count == 0;
        self.len -= 1;
        if emptied {
            self.chunks.pop(end);
        }
        Some(v)
    }

    /// Up to `n` elements from `end`, in the order they are popped.
    pub fn pop_many(&mut self, end: End, n: usize) -> Vec<Bytes> {
        let n = n.min(self.len);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.pop(end) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }

    /// Redis's index rule: negative counts from the tail (-1 is the last).
    pub fn resolve(&self, index: i64) -> Option<usize> {
        let len = self.len as i64;
        let i = if index < 0 {
            len.checked_add(index)?
        } else {
            index
        };
        (0..len).contains(&i).then_some(i as usize)
    }

    /// The chunk holding element `i` (< len) and its index in that chunk,
    /// walking the chunks from the nearer end.
    fn locate(&self, i: usize) -> (usize, usize) {
        if i < self.len / 2 {
            let mut i = i;
            for (ci, c) in self.chunks.iter().enumerate() {
                if i < c.count {
                    return (ci, i);
                }
                i -= c.count;
            }
        } else {
            let mut from_tail = self.len - 1 - i;
            for (ci, c) in self.chunks.iter().enumerate().rev() {
                if from_tail < c.count {
                    return (ci, c.count - 1 - from_tail);
                }
                from_tail -= c.count;
            }
        }
        // Unreachable while `len` is the sum of the counts.
        (self.chunks.len().saturating_sub(1), 0)
    }

    pub fn get(&self, index: i64) -> Option<Bytes> {
        let (ci, j) = self.locate(self.resolve(index)?);
        let c = &self.chunks[ci];
        Some(entry_at(&c.buf, c.span(j).0).0.to_bytes())
    }

    /// LSET: replace element `i` (< len).
    pub fn set(&mut self, i: usize, v: &[u8]) {
        if i >= self.len {
            return;
        }
        let (ci, j) = self.locate(i);
        let Some(c) = self.chunks.get_mut(ci) else {
            return;
        };
        let (start, end) = c.span(j);
        let mut e = Vec::with_capacity(entry_size(v));
        put_entry(&mut e, v);
        c.buf.splice(start..end, e);
        self.split(ci);
    }

    /// Elements from index `start` on, head to tail.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = Elem<'_>> + '_ {
        let (ci, j) = if start < self.len {
            self.locate(start)
        } else {
            (self.chunks.len(), 0)
        };
        let mut at = self.chunks.get(ci).map_or(0, |c| c.span(j).0);
        let mut ci = ci;
        std::iter::from_fn(move || {
            let mut c = self.chunks.get(ci)?;
            if at >= c.buf.len() {
                ci += 1;
                at = 0;
                c = self.chunks.get(ci)?;
            }
            let (e, next) = entry_at(&c.buf, at);
            at = next;
            Some(e)
        })
    }

    /// Every element, head to tail.
    pub fn iter(&self) -> impl Iterator<Item = Elem<'_>> + '_ {
        self.iter_from(0)
    }

    /// Every element, tail to head.
    pub fn iter_rev(&self) -> impl Iterator<Item = Elem<'_>> + '_ {
        let mut ci = self.chunks.len();
        let mut end = 0;
        std::iter::from_fn(move || {
            if end == 0 {
                ci = ci.checked_sub(1)?;
                end = self.chunks[ci].buf.len();
            }
            let b = &self.chunks[ci].buf;
            let start = entry_before(b, end);
            end = start;
            Some(entry_at(b, start).0)
        })
    }

    /// The inclusive range `[start, stop]` after Redis's clamping
    /// (`addListRangeReply`, LTRIM): `None` when empty.
    pub fn clamp_range(&self, start: i64, stop: i64) -> Option<(usize, usize)> {
        let len = self.len as i64;
        let mut start = if start < 0 { len + start } else { start };
        let mut stop = if stop < 0 { len + stop } else { stop };
        if start < 0 {
            start = 0;
        }
        if start > stop || start >= len {
            return None;
        }
        if stop >= len {
            stop = len - 1;
        }
        Some((start as usize, stop as usize))
    }

    /// Drop `n` (<= len) elements from `end`.
    fn drop_end(&mut self, end: End, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(count) = self.end(end).map(|c| c.count) else {
                return;
            };
            // A chunk dropped whole is not copied first.
            if count <= n {
                n -= count;
                self.chunks.pop(end);
                continue;
            }
            let Some(c) = self.end_mut(end) else { return };
            match end {
                End::Left => {
                    let cut = c.span(n - 1).1;
                    c.buf.drain(..cut);
                }
                End::Right => {
                    let cut = c.span(c.count - n).0;
                    c.buf.truncate(cut);
                }
            }
            c.count -= n;
            n = 0;
        }
    }

    /// Keep only `[start, stop]` (indices from [`List::clamp_range`]), or
    /// nothing; returns how many elements were removed.
    pub fn trim(&mut self, keep: Option<(usize, usize)>) -> usize {
        let before = self.len;
        match keep {
            None => {
                // Drops this list's reference: a snapshot keeps its own.
                self.chunks = Chunks::Empty;
                self.len = 0;
            }
            Some((start, stop)) => {
                let stop = stop.min(self.len.saturating_sub(1));
                self.drop_end(End::Right, self.len - 1 - stop);
                self.drop_end(End::Left, start.min(self.len));
            }
        }
        before - self.len
    }

    /// LREM: remove up to `count` elements equal to `v` (from the head if
    /// `count > 0`, from the tail if `< 0`, all if 0); how many were removed.
    pub fn remove(&mut self, v: &[u8], count: i64) -> usize {
        let probe = Probe::new(v);
        let mut left = if count == 0 {
            usize::MAX
        } else {
            usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
        };
        let mut removed = 0;
        let order: Vec<usize> = if count >= 0 {
            (0..self.chunks.len()).collect()
        } else {
            (0..self.chunks.len()).rev().collect()
        };
        for ci in order {
            if left == 0 {
                break;
            }
            // Only a chunk with a match is changed (and copied if shared).
            let mut spans: Vec<(usize, usize)> = self.chunks[ci]
                .iter()
                .filter(|(_, e, _)| e.matches(&probe))
                .map(|(s, _, e)| (s, e))
                .collect();
            if spans.is_empty() {
                continue;
            }
            if spans.len() > left {
                if count >= 0 {
                    spans.truncate(left);
                } else {
                    spans.drain(..spans.len() - left);
                }
            }
            let Some(c) = self.chunks.get_mut(ci) else {
                continue;
            };
            let mut kept = Vec::with_capacity(c.buf.len());
            let mut at = 0;
            for &(s, e) in &spans {
                kept.extend_from_slice(&c.buf[at..s]);
                at = e;
            }
            kept.extend_from_slice(&c.buf[at..]);
            kept.shrink_to_fit();
            c.buf = kept;
            c.count -= spans.len();
            left -= spans.len();
            removed += spans.len();
        }
        if removed > 0 {
            self.len -= removed;
            self.chunks.drop_empty();
            self.merge_all();
        }
        removed
    }

    /// LINSERT: insert `v` before or after the first `pivot`; false if absent.
    pub fn insert(&mut self, pivot: &[u8], v: &[u8], after: bool) -> bool {
        let probe = Probe::new(pivot);
        let found = self.chunks.iter().enumerate().find_map(|(ci, c)| {
            c.iter()
                .find(|(_, e, _)| e.matches(&probe))
                .map(|(s, _, e)| (ci, if after { e } else { s }))
        });
        let Some((ci, at)) = found else {
            return false;
        };
        let Some(c) = self.chunks.get_mut(ci) else {
            return false;
        };
        c.insert_at(at, v);
        self.len += 1;
        self.split(ci);
        true
    }

    /// Split chunk `ci` if it grew past [`CHUNK_BYTES`] with more than one
    /// entry, into pieces of about equal size.
    fn split(&mut self, ci: usize) {
        let c = &self.chunks[ci];
        if c.buf.len() <= CHUNK_BYTES || c.count < 2 {
            return;
        }
        let pieces = c.buf.len().div_ceil(CHUNK_BYTES);
        let target = c.buf.len().div_ceil(pieces);
        let mut out: Vec<Chunk> = Vec::new();
        let mut cur = Chunk::default();
        for (s, _, e) in c.iter() {
            if cur.count > 0 && cur.buf.len() + (e - s) > target {
                cur.buf.shrink_to_fit();
                out.push(std::mem::take(&mut cur));
            }
            cur.buf.extend_from_slice(&c.buf[s..e]);
            cur.count += 1;
        }
        cur.buf.shrink_to_fit();
        out.push(cur);
        self.chunks.remove(ci);
        for (k, piece) in out.into_iter().enumerate() {
            self.chunks.insert(ci + k, piece);
        }
    }

    /// Merge neighbouring chunks that fit together in one.
    fn merge_all(&mut self) {
        let mut ci = 0;
        while ci + 1 < self.chunks.len() {
            if self.chunks[ci].fits(self.chunks[ci + 1].buf.len()) {
                let next = self.chunks.remove(ci + 1);
                if let (Some(next), Some(c)) = (next, self.chunks.get_mut(ci)) {
                    c.buf.extend_from_slice(&next.buf);
                    c.buf.shrink_to_fit();
                    c.count += next.count;
                }
            } else {
                ci += 1;
            }
        }
    }

    /// The bytes the list holds, allocator overhead included (MEMORY
    /// USAGE, INFO memory).
    pub fn memory_usage(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|c| c.bytes()).sum();
        std::mem::size_of::<List>() + MALLOC_OVERHEAD + self.chunks.overhead() + chunks
    }

    /// For a checkpoint: a list sharing this one's chunks (no copy; a later
    /// write to this list copies what it changes first), to
    /// [`List::encode`] off the store lock. `None` for a list of one chunk
    /// (at most 8 KiB but for one big element: encode it in place; an
    /// inline chunk is not shared, and cloning it would copy it).
    pub fn share(&self) -> Option<List> {
        match &self.chunks {
            Chunks::Many(d) if d.len() > 1 => Some(self.clone()),
            _ => None,
        }
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len as u64);
        for e in self.iter() {
            match e {
                Elem::Str(s) => {
                    put_varint(out, s.len() as u64);
                    out.extend_from_slice(s);
                }
                Elem::Int(n) => {
                    let s = n.to_string();
                    put_varint(out, s.len() as u64);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    /// Read a snapshot form from the front of `r`, advancing it.
    pub fn decode(r: &mut &[u8]) -> Result<List, String> {
        let n = get_varint(r)?;
        if n == 0 {
            return Err("empty list in snapshot".into());
        }
        // Each element takes at least one byte: refuse a count the bytes
        // left cannot hold.
        let n = usize::try_from(n).map_err(|_| "list too long")?;
        if n > r.len() {
            return Err(format!("list truncated: {n} elements in {} bytes", r.len()));
        }
        let mut l = List::default();
        for _ in 0..n {
            let len = usize::try_from(get_varint(r)?).map_err(|_| "list element too long")?;
            l.push(End::Right, take(r, len)?);
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> List {
        let mut l = List::default();
        for s in items {
            l.push(End::Right, s.as_bytes());
        }
        l
    }

    fn items(l: &List) -> Vec<Bytes> {
        l.iter().map(Elem::to_bytes).collect()
    }

    /// Every write to a list a snapshot shares leaves the shared copy as it
    /// was, copies only the chunks it changes, and leaves the list right.
    #[test]
    fn a_shared_list_is_copied_on_write_chunk_by_chunk() {
        type Op = fn(&mut List, &mut VecDeque<Bytes>);
        let ops: Vec<(&str, Op)> = vec![
            ("push right", |l, m| {
                l.push(End::Right, b"r");
                m.push_back(Bytes::from("r"));
            }),
            ("push left", |l, m| {
                l.push(End::Left, b"-7");
                m.push_front(Bytes::from("-7"));
            }),
            ("pop", |l, m| {
                assert_eq!(l.pop(End::Left), m.pop_front());
                assert_eq!(l.pop(End::Right), m.pop_back());
            }),
            ("set", |l, m| {
                let v = Bytes::from(vec![b'v'; 3000]);
                l.set(1500, &v);
                m[1500] = v;
            }),
            ("insert", |l, m| {
                assert!(l.insert(b"e700", b"new", true));
                m.insert(701, Bytes::from("new"));
            }),
            ("remove", |l, m| {
                assert_eq!(l.remove(b"e10", 0), 1);
                m.remove(10);
            }),
            ("trim", |l, m| {
                let keep = l.clamp_range(100, -100);
                l.trim(keep);
                m.drain(..100);
                m.drain(m.len() - 99..);
            }),
            ("trim all", |l, m| {
                l.trim(None);
                m.clear();
            }),
        ];
        for (name, op) in ops {
            let mut model: VecDeque<Bytes> =
                (0..3000).map(|i| Bytes::from(format!("e{i}"))).collect();
            let mut l = List::default();
            for v in &model {
                l.push(End::Right, v);
            }
            let shared = l.share().unwrap_or_else(|| panic!("{name}: not shared"));
            let mut before = Vec::new();
            shared.encode(&mut before);
            op(&mut l, &mut model);
            let mut after = Vec::new();
            shared.encode(&mut after);
            assert!(before == after, "{name}: the write reached the shared list");
            check(&l, &model);
            check(
                &shared,
                &(0..3000).map(|i| Bytes::from(format!("e{i}"))).collect(),
            );
            // Chunks the write did not change are still shared.
            if name != "trim all" {
                let same = l
                    .chunks
                    .iter()
                    .filter(|c| shared.chunks.iter().any(|d| std::ptr::eq(*c, d)))
                    .count();
                assert!(same + 3 >= shared.chunks.len(), "{name}: {same} shared");
            }
        }
        // Not shared: writes in place (no copy of the chunk list).
        let mut l = list(&["a", "b"]);
        assert!(matches!(l.chunks, Chunks::One(_)), "one chunk: inline");
        assert!(l.share().is_none(), "one chunk: encoded in place");
        for i in 0..3000 {
            l.push(End::Right, format!("e{i}").as_bytes());
        }
        let deque = |l: &List| match &l.chunks {
            Chunks::Many(d) => Arc::as_ptr(d),
            _ => panic!("not shared chunks"),
        };
        let (at, first) = (deque(&l), &l.chunks[0] as *const Chunk);
        l.push(End::Right, b"c");
        l.set(0, b"z");
        assert_eq!(deque(&l), at);
        assert_eq!(&l.chunks[0] as *const Chunk, first);
        // Back to one chunk, and empty.
        let keep = l.clamp_range(0, 1);
        l.trim(keep);
        assert_eq!(l.len(), 2);
        assert!(l.pop(End::Left).is_some() && l.pop(End::Left).is_some());
        assert!(l.is_empty() && l.chunks.len() == 0 && l.pop(End::Right).is_none());
    }

    /// The invariants of the module doc.
    fn check(l: &List, model: &VecDeque<Bytes>) {
        assert_eq!(l.len(), model.len());
        assert_eq!(l.chunks.iter().map(|c| c.count).sum::<usize>(), l.len);
        for c in l.chunks.iter() {
            assert!(c.count > 0, "empty chunk");
            assert!(
                c.count == 1 || c.buf.len() <= CHUNK_BYTES,
                "oversized chunk"
            );
            assert_eq!(c.iter().count(), c.count);
        }
        assert_eq!(items(l), model.iter().cloned().collect::<Vec<_>>());
        let mut rev: Vec<Bytes> = l.iter_rev().map(Elem::to_bytes).collect();
        rev.reverse();
        assert_eq!(rev, model.iter().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        let l = list(&["a", "", "ccc\0\r\n", "-12", "0", "9223372036854775807"]);
        let mut out = Vec::new();
        l.encode(&mut out);
        let mut r = &out[..];
        let back = List::decode(&mut r).map(|l| items(&l));
        assert_eq!(back, Ok(items(&l)));
        assert!(r.is_empty());
        for cut in 0..out.len() {
            let mut r = &out[..cut];
            assert!(List::decode(&mut r).is_err(), "cut at {cut}");
        }
        // A huge count with few bytes is refused before allocating.
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, b'a'];
        assert!(List::decode(&mut r).is_err());
        let mut r: &[u8] = &[0];
        assert!(List::decode(&mut r).is_err());
    }

    #[test]
    fn snapshot_bytes_are_the_pre_chunking_form() {
        let l = list(&["a", "17", "-1"]);
        let mut out = Vec::new();
        l.encode(&mut out);
        assert_eq!(out, b"\x03\x01a\x0217\x02-1");
    }

    #[test]
    fn ranges_follow_redis() {
        let l = list(&["a", "b", "c", "d"]);
        assert_eq!(l.clamp_range(0, -1), Some((0, 3)));
        assert_eq!(l.clamp_range(-100, 1), Some((0, 1)));
        assert_eq!(l.clamp_range(2, 100), Some((2, 3)));
        assert_eq!(l.clamp_range(3, 2), None);
        assert_eq!(l.clamp_range(4, 10), None);
        assert_eq!(l.clamp_range(i64::MIN, i64::MAX), Some((0, 3)));
        assert_eq!(l.get(-1).as_deref(), Some(&b"d"[..]));
        assert_eq!(l.get(i64::MIN), None);
        let mut m = l.clone();
        assert_eq!(m.remove(b"b", -5), 1);
        assert_eq!(m.pop_many(End::Right, 10).len(), 3);
        assert!(m.is_empty());
    }

    #[test]
    fn integers_are_stored_compactly_and_print_back() {
        let odd = [
            "0",
            "-0",
            "01",
            "+1",
            "1 ",
            "-",
            "",
            "127",
            "-128",
            "128",
            "-129",
            "32767",
            "-32768",
            "8388607",
            "-8388608",
            "2147483648",
            "-2147483649",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "00",
        ];
        let l = list(&odd);
        let want: Vec<Bytes> = odd.iter().map(|s| Bytes::from(s.to_string())).collect();
        assert_eq!(items(&l), want);
        assert!(l.iter().any(|e| e == Elem::Int(i64::MIN)));
        assert!(l.iter().any(|e| e == Elem::Str(b"-0")));
        for s in odd {
            assert!(
                l.iter().any(|e| e.matches(&Probe::new(s.as_bytes()))),
                "{s}"
            );
        }
        // 3 bytes for a small integer, 2 over the data for a short string.
        assert_eq!(entry_size(b"5"), 3);
        assert_eq!(entry_size(b"item:1"), 8);
        assert_eq!(entry_size(&[b'x'; 200]), 204);
        assert_eq!(entry_size(&[b'x'; 20000]), 20000 + 9 + 3);
    }

    #[test]
    fn big_elements_get_their_own_chunk() {
        let big = vec![b'x'; CHUNK_BYTES * 2];
        let mut l = list(&["a", "b"]);
        l.push(End::Right, &big);
        l.push(End::Right, b"c");
        l.push(End::Left, &big);
        assert_eq!(l.chunks.len(), 4);
        let model: VecDeque<Bytes> = ["big", "a", "b", "big", "c"]
            .iter()
            .map(|s| {
                if *s == "big" {
                    Bytes::from(big.clone())
                } else {
                    Bytes::from(s.to_string())
                }
            })
            .collect();
        check(&l, &model);
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn element(r: &mut Rng) -> Bytes {
        match r.below(10) {
            0 => Bytes::from(format!("{}", r.next() as i64)),
            1 => Bytes::from(["-1", "0", "-0", "i64", "9223372036854775807"][r.below(5) as usize]),
            2 => Bytes::from(vec![b'y'; 100 + r.below(400) as usize]),
            3 if r.below(20) == 0 => Bytes::from(vec![b'z'; CHUNK_BYTES + r.below(100) as usize]),
            _ => Bytes::from(format!("e{}", r.below(30))),
        }
    }

    #[test]
    fn random_operations_match_a_deque() {
        let mut most_chunks = 0;
        for seed in 1..=12u64 {
            let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut l = List::default();
            let mut m: VecDeque<Bytes> = VecDeque::new();
            for step in 0..3000 {
                let end = if r.below(2) == 0 {
                    End::Left
                } else {
                    End::Right
                };
                match r.below(16) {
                    0..=5 => {
                        for _ in 0..=r.below(40) {
                            let v = element(&mut r);
                            l.push(end, &v);
                            match end {
                                End::Left => m.push_front(v),
                                End::Right => m.push_back(v),
                            }
                        }
                    }
                    6 => {
                        let want = match end {
                            End::Left => m.pop_front(),
                            End::Right => m.pop_back(),
                        };
                        assert_eq!(l.pop(end), want);
                    }
                    7 => {
                        let n = r.below(50) as usize;
                        let got = l.pop_many(end, n);
                        let want: Vec<Bytes> = (0..n)
                            .map_while(|_| match end {
                                End::Left => m.pop_front(),
                                End::Right => m.pop_back(),
                            })
                            .collect();
                        assert_eq!(got, want);
                    }
                    8 => {
                        let i = r.below(m.len() as u64 * 2 + 2) as i64 - m.len() as i64 - 1;
                        let want = l.resolve(i).map(|i| m[i].clone());
                        assert_eq!(l.get(i), want);
                    }
                    9 if !m.is_empty() => {
                        let i = r.below(m.len() as u64) as usize;
                        let v = element(&mut r);
                        l.set(i, &v);
                        m[i] = v;
                    }
                    10 => {
                        let pivot = element(&mut r);
                        let v = element(&mut r);
                        let after = r.below(2) == 0;
                        let want = m.iter().position(|x| *x == pivot);
                        assert_eq!(l.insert(&pivot, &v, after), want.is_some());
                        if let Some(i) = want {
                            m.insert(if after { i + 1 } else { i }, v);
                        }
                    }
                    11 => {
                        let v = element(&mut r);
                        let count = r.below(7) as i64 - 3;
                        let mut limit = if count == 0 {
                            usize::MAX
                        } else {
                            count.unsigned_abs() as usize
                        };
                        let mut idx: Vec<usize> = (0..m.len()).filter(|&i| m[i] == v).collect();
                        if count < 0 {
                            idx.reverse();
                        }
                        idx.truncate(limit);
                        idx.sort_unstable();
                        for &i in idx.iter().rev() {
                            m.remove(i);
                        }
                        limit = idx.len();
                        assert_eq!(l.remove(&v, count), limit);
                    }
                    12 if r.below(4) == 0 => {
                        let n = m.len() as i64 + 2;
                        let s = r.below(n as u64 * 2) as i64 - n;
                        let e = r.below(n as u64 * 2) as i64 - n;
                        let keep = l.clamp_range(s, e);
                        let removed = l.trim(keep);
                        let before = m.len();
                        match keep {
                            None => m.clear(),
                            Some((s, e)) => {
                                m.truncate(e + 1);
                                m.drain(..s);
                            }
                        }
                        assert_eq!(removed, before - m.len());
                    }
                    13 => {
                        let s = r.below(m.len() as u64 + 2) as usize;
                        let n = r.below(300) as usize;
                        let got: Vec<Bytes> = l.iter_from(s).take(n).map(Elem::to_bytes).collect();
                        let want: Vec<Bytes> = m.iter().skip(s).take(n).cloned().collect();
                        assert_eq!(got, want);
                    }
                    14 if r.below(10) == 0 => {
                        let mut out = Vec::new();
                        l.encode(&mut out);
                        if m.is_empty() {
                            assert!(List::decode(&mut &out[..]).is_err());
                        } else {
                            l = List::decode(&mut &out[..]).expect("decode");
                        }
                    }
                    _ => {}
                }
                most_chunks = most_chunks.max(l.chunks.len());
                if step % 50 == 0 || m.len() < 3 {
                    check(&l, &m);
                }
            }
            check(&l, &m);
            assert!(l.memory_usage() >= m.iter().map(|b| b.len()).sum::<usize>());
        }
        // The operations crossed chunk boundaries.
        assert!(most_chunks >= 8, "at most {most_chunks} chunks");
    }
}
