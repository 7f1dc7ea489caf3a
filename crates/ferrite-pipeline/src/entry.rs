//! What flows through a plan: entry IDs, input entries, output records, and
//! the per-event row that compiled expressions read.

use crate::value::{parse_bool, Num};
use bytes::Bytes;
use std::fmt;

/// A stream entry ID: milliseconds and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// An ID from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EntryId { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An entry's field/value pairs, in order. Implemented for slices and
/// vectors of pairs of anything that is bytes (`&[u8]`, `Vec<u8>`, `Bytes`).
pub trait Fields {
    /// Number of pairs.
    fn len(&self) -> usize;
    /// Whether there are no pairs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `i`th field name; `i < len()`.
    fn name(&self, i: usize) -> &[u8];
    /// The `i`th value; `i < len()`.
    fn value(&self, i: usize) -> &[u8];
    /// An identifier of the field names: entries with the same `Some` have
    /// the same names in the same order (taken from [`next_layout`]), so a
    /// reader may resolve them once. `None`: not known.
    fn layout(&self) -> Option<u64> {
        None
    }
}

/// A new [`Fields::layout`] identifier, never given before in this process.
pub fn next_layout() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<A: AsRef<[u8]>, B: AsRef<[u8]>> Fields for [(A, B)] {
    #[inline]
    fn len(&self) -> usize {
        <[(A, B)]>::len(self)
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.get(i).map_or(&[][..], |p| p.0.as_ref())
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.get(i).map_or(&[][..], |p| p.1.as_ref())
    }
}

impl<A: AsRef<[u8]>, B: AsRef<[u8]>, const N: usize> Fields for [(A, B); N] {
    #[inline]
    fn len(&self) -> usize {
        N
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.as_slice().name(i)
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.as_slice().value(i)
    }
}

impl<A: AsRef<[u8]>, B: AsRef<[u8]>> Fields for Vec<(A, B)> {
    #[inline]
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.as_slice().name(i)
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.as_slice().value(i)
    }
}

impl<T: Fields + ?Sized> Fields for &T {
    #[inline]
    fn len(&self) -> usize {
        (**self).len()
    }
    #[inline]
    fn layout(&self) -> Option<u64> {
        (**self).layout()
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        (**self).name(i)
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        (**self).value(i)
    }
}

/// One input entry, borrowed from the caller.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    /// The entry's ID in the source stream.
    pub id: EntryId,
    /// Its fields.
    pub fields: &'a dyn Fields,
}

impl<'a> Entry<'a> {
    /// An entry from its ID and fields.
    pub fn new(id: EntryId, fields: &'a dyn Fields) -> Self {
        Entry { id, fields }
    }

    /// The value of the first field named `name` (XADD allows repeats).
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        (0..self.fields.len())
            .find(|&i| self.fields.name(i) == name)
            .map(|i| self.fields.value(i))
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_map();
        for i in 0..self.fields.len() {
            l.entry(
                &String::from_utf8_lossy(self.fields.name(i)),
                &String::from_utf8_lossy(self.fields.value(i)),
            );
        }
        l.finish()
    }
}

/// An output record for the sink: the source entry's ID (the sink's XADD
/// assigns its own) and the fields in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// ID of the source entry this record came from.
    pub source_id: EntryId,
    /// Field/value pairs in SELECT order, NULLs left out.
    pub fields: Vec<(Bytes, Bytes)>,
    /// A grouped statement's result: its GROUP BY key values joined by
    /// `:` (a HASH sink writes `prefix:<key>`).
    pub key: Option<Bytes>,
}

impl Record {
    /// The value of the first field named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Output records written into one buffer instead of a [`Record`] each
/// (a grouped plan's direct results, [`crate::Plan::process_batch_flat`]):
/// no allocation or refcount per result or field. Each result is its
/// source ID, its key and its fields as spans of one byte buffer (spans may
/// overlap: a key column's value is a slice of the joined key).
#[derive(Debug, Default)]
pub struct FlatRecords {
    bytes: bytes::BytesMut,
    /// Per field: its name's and its value's span in `bytes`.
    fields: Vec<(Span, Span)>,
    /// Per result: source ID, key span, end of its fields in `fields`.
    results: Vec<(EntryId, Span, usize)>,
    /// Sum over the fields of name, value and 8 bytes (as the runner
    /// bounds an epoch's records), and the results without fields.
    size: usize,
    empty: usize,
}

/// The largest buffers [`FlatRecords::clear`] keeps (twice the runner's
/// 4 MiB bound on an epoch's results).
pub const FLAT_KEEP_BYTES: usize = 8 << 20;

/// `start..end` of [`FlatRecords`]' buffer.
type Span = (usize, usize);

impl FlatRecords {
    /// Results held.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether it holds no result.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Forgets every result, keeping the buffers unless they grew past
    /// [`FLAT_KEEP_BYTES`] (one entry's results may exceed an epoch's
    /// bound: a rare burst does not stay allocated).
    pub fn clear(&mut self) {
        if self.bytes.capacity() > FLAT_KEEP_BYTES
            || self.fields.capacity() * std::mem::size_of::<(Span, Span)>() > FLAT_KEEP_BYTES
            || self.results.capacity() * std::mem::size_of::<(EntryId, Span, usize)>()
                > FLAT_KEEP_BYTES
        {
            *self = FlatRecords::default();
            return;
        }
        self.bytes.clear();
        self.fields.clear();
        self.results.clear();
        self.size = 0;
        self.empty = 0;
    }

    /// The results' size as the runner bounds it: per field, its name's
    /// and value's lengths plus 8.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Results without fields (every value was NULL).
    pub fn empty_results(&self) -> usize {
        self.empty
    }

    /// Every field's name and value, in order, for
    /// [`FlatRecords::non_empty`]: one vector for all the results.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        let b: &[u8] = &self.bytes;
        let at = |s: usize, e: usize| b.get(s..e).unwrap_or(&[]);
        // A mapped slice iterator: one allocation of the exact size.
        self.fields
            .iter()
            .map(|&((ns, ne), (vs, ve))| (at(ns, ne), at(vs, ve)))
            .collect()
    }

    /// Each result with fields, as its slice of `pairs` (what
    /// [`FlatRecords::pairs`] gave).
    pub fn non_empty<'p, T>(&'p self, pairs: &'p [T]) -> impl Iterator<Item = &'p [T]> + 'p {
        let mut start = 0;
        self.results.iter().filter_map(move |&(_, _, end)| {
            let p = pairs.get(start..end).unwrap_or(&[]);
            start = end;
            (!p.is_empty()).then_some(p)
        })
    }

    /// Result `i`.
    pub fn get(&self, i: usize) -> Option<FlatRecord<'_>> {
        let &(source_id, key, end) = self.results.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.results.get(i - 1).map_or(0, |r| r.2),
        };
        Some(FlatRecord {
            source_id,
            key: self.span(key),
            bytes: &self.bytes,
            fields: self.fields.get(start..end).unwrap_or(&[]),
        })
    }

    /// The results in order.
    pub fn iter(&self) -> impl Iterator<Item = FlatRecord<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Moves `other`'s results after these.
    pub fn append(&mut self, other: &mut FlatRecords) {
        if self.is_empty() && self.bytes.is_empty() {
            std::mem::swap(self, other);
            other.clear();
            return;
        }
        let (base, fbase) = (self.bytes.len(), self.fields.len());
        self.size += other.size;
        self.empty += other.empty;
        self.bytes.extend_from_slice(&other.bytes);
        let sh = |(s, e): Span| (s + base, e + base);
        self.fields
            .extend(other.fields.iter().map(|&(n, v)| (sh(n), sh(v))));
        self.results.extend(
            other
                .results
                .iter()
                .map(|&(id, k, end)| (id, sh(k), end + fbase)),
        );
        other.clear();
    }

    /// Moves the results out as [`Record`]s (the generic path's shape;
    /// the same fields and bytes).
    pub fn drain_into(&mut self, out: &mut Vec<Record>) {
        out.reserve(self.len());
        for r in self.iter() {
            out.push(Record {
                source_id: r.source_id,
                fields: (0..r.len())
                    .map(|i| {
                        (
                            Bytes::copy_from_slice(r.name(i)),
                            Bytes::copy_from_slice(r.value(i)),
                        )
                    })
                    .collect(),
                key: Some(Bytes::copy_from_slice(r.key)),
            });
        }
        self.clear();
    }

    /// Starts a result: writes its key and gives its span (for
    /// [`FlatRecords::field_span`] of key columns).
    pub(crate) fn begin(&mut self, key: &[u8]) -> Span {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(key);
        (at, self.bytes.len())
    }

    /// The buffer, to write a value at its end ([`FlatRecords::field`]
    /// then takes it).
    pub(crate) fn buf(&mut self) -> &mut bytes::BytesMut {
        &mut self.bytes
    }

    /// Adds a field of the current result: `name` copied, the value the
    /// bytes written since `value_at`.
    pub(crate) fn field(&mut self, name: &[u8], value_at: usize) {
        let v = (value_at, self.bytes.len());
        self.field_span(name, v);
    }

    /// Adds a field of the current result whose value is `v`, a span
    /// already in the buffer.
    pub(crate) fn field_span(&mut self, name: &[u8], v: Span) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.fields.push(((at, self.bytes.len()), v));
        self.size += name.len() + (v.1 - v.0) + 8;
    }

    /// Ends the current result (its fields are those added since the last).
    pub(crate) fn end(&mut self, source_id: EntryId, key: Span) {
        let first = self.results.last().map_or(0, |r| r.2);
        if first == self.fields.len() {
            self.empty += 1;
        }
        self.results.push((source_id, key, self.fields.len()));
    }

    fn span(&self, (s, e): Span) -> &[u8] {
        self.bytes.get(s..e).unwrap_or(&[])
    }
}

/// One result of [`FlatRecords`].
#[derive(Clone, Copy, Debug)]
pub struct FlatRecord<'a> {
    /// ID of the source entry it came from.
    pub source_id: EntryId,
    /// Its GROUP BY key values joined by `:`.
    pub key: &'a [u8],
    bytes: &'a [u8],
    fields: &'a [(Span, Span)],
}

impl<'a> FlatRecord<'a> {
    /// Its fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no field (every value was NULL).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field `i`'s name.
    pub fn name(&self, i: usize) -> &'a [u8] {
        self.fields.get(i).map_or(&[], |&(n, _)| self.at(n))
    }

    /// Field `i`'s value.
    pub fn value(&self, i: usize) -> &'a [u8] {
        self.fields.get(i).map_or(&[], |&(_, v)| self.at(v))
    }

    /// Its fields as `(name, value)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let (bytes, fields) = (self.bytes, self.fields);
        fields.iter().map(move |&((ns, ne), (vs, ve))| {
            (
                bytes.get(ns..ne).unwrap_or(&[]),
                bytes.get(vs..ve).unwrap_or(&[]),
            )
        })
    }

    fn at(&self, (s, e): Span) -> &'a [u8] {
        self.bytes.get(s..e).unwrap_or(&[])
    }
}

/// Marks a slot whose field the entry does not have.
pub(crate) const MISSING: u32 = u32::MAX;

/// The row a compiled expression reads: the entry plus its referenced fields
/// resolved to slots (indices into the entry, and numbers parsed once).
#[derive(Clone, Copy)]
pub struct Row<'a> {
    pub(crate) id: EntryId,
    pub(crate) fields: &'a dyn Fields,
    pub(crate) slot_idx: &'a [u32],
    pub(crate) slot_num: &'a [Num],
}

impl<'a> Row<'a> {
    /// The entry ID.
    #[inline]
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The raw bytes of slot `s`, or `None` when the entry lacks the field.
    #[inline]
    pub(crate) fn text(&self, s: usize) -> Option<&'a [u8]> {
        match self.slot_idx.get(s) {
            Some(&i) if i != MISSING => Some(self.fields.value(i as usize)),
            _ => None,
        }
    }

    /// Slot `s` read as a number (parsed when the row was built).
    #[inline]
    pub(crate) fn num(&self, s: usize) -> Num {
        self.slot_num.get(s).copied().unwrap_or(Num::Null)
    }

    /// Slot `s` read as a boolean.
    #[inline]
    pub(crate) fn boolean(&self, s: usize) -> Option<bool> {
        self.text(s).and_then(parse_bool)
    }
}

/// Field names referenced by expressions, resolved to slots at compile time.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotTable {
    pub(crate) names: Vec<Vec<u8>>,
    /// Whether the slot is read as a number (parsed once per entry).
    pub(crate) numeric: Vec<bool>,
}

impl SlotTable {
    pub(crate) fn slot(&mut self, name: &[u8]) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_vec());
        self.numeric.push(false);
        self.names.len() - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// [`SlotTable::resolve`], the field positions taken from `last` when
    /// the entry's [`Fields::layout`] is the one resolved last (most
    /// entries of a stream share their names).
    pub(crate) fn resolve_cached(
        &self,
        fields: &dyn Fields,
        idx: &mut [u32],
        num: &mut [Num],
        last: &mut Option<(u64, Vec<u32>)>,
    ) {
        let layout = fields.layout();
        match (layout, &*last) {
            (Some(l), Some((c, pos))) if l == *c && pos.len() == idx.len() => {
                idx.copy_from_slice(pos);
                self.parse(fields, idx, num);
            }
            _ => {
                self.resolve(fields, idx, num);
                if let Some(l) = layout {
                    *last = Some((l, idx.to_vec()));
                }
            }
        }
    }

    /// Resolves one entry into `idx`/`num` (each `len()` long): the first
    /// field of each name wins, as in `Entry::get`.
    pub(crate) fn resolve(&self, fields: &dyn Fields, idx: &mut [u32], num: &mut [Num]) {
        idx.fill(MISSING);
        let mut left = self.names.len();
        for i in 0..fields.len() {
            // NOTE: slot indices are u32; an entry with 4G fields keeps
            // the rest of its fields out of reach (they read as missing).
            if left == 0 || i >= MISSING as usize {
                break;
            }
            let name = fields.name(i);
            for (s, n) in self.names.iter().enumerate() {
                if idx[s] == MISSING && n.as_slice() == name {
                    idx[s] = i as u32;
                    left -= 1;
                }
            }
        }
        self.parse(fields, idx, num);
    }

    /// Parses the numeric slots of a resolved entry.
    fn parse(&self, fields: &dyn Fields, idx: &[u32], num: &mut [Num]) {
        for s in 0..self.names.len() {
            num[s] = if self.numeric[s] && idx[s] != MISSING {
                crate::value::parse_num(fields.value(idx[s] as usize))
            } else {
                Num::Null
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(f: &mut FlatRecords, id: u64, key: &[u8], fields: &[(&[u8], &[u8])]) {
        let k = f.begin(key);
        for (n, v) in fields {
            let at = f.buf().len();
            f.buf().extend_from_slice(v);
            f.field(n, at);
        }
        f.end(EntryId::new(id, 0), k);
    }

    #[test]
    fn flat_records_append_size_and_clear() {
        let mut a = FlatRecords::default();
        result(&mut a, 1, b"k1", &[(b"x", b"10"), (b"y", b"")]);
        result(&mut a, 2, b"k2", &[]);
        let mut b = FlatRecords::default();
        // A key column's value is a span of the key.
        let k = b.begin(b"s:v");
        b.field_span(b"sym", (k.0, k.0 + 1));
        b.end(EntryId::new(3, 0), k);
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.len(), 3);
        assert_eq!(a.empty_results(), 1);
        assert_eq!(a.size(), (1 + 2 + 8) + (1 + 8) + (3 + 1 + 8));
        let pairs = a.pairs();
        let non_empty: Vec<_> = a.non_empty(&pairs).collect();
        assert_eq!(non_empty.len(), 2);
        assert_eq!(non_empty[1], &[(&b"sym"[..], &b"s"[..])][..]);
        let mut out = Vec::new();
        a.drain_into(&mut out);
        assert!(a.is_empty() && a.size() == 0 && a.empty_results() == 0);
        assert_eq!(out[0].fields[0], (Bytes::from("x"), Bytes::from("10")));
        assert_eq!(out[0].key.as_deref(), Some(&b"k1"[..]));
        assert!(out[1].fields.is_empty());
        assert_eq!(out[2].source_id, EntryId::new(3, 0));
        // A burst past the bound is not kept.
        result(&mut a, 4, &vec![b'k'; FLAT_KEEP_BYTES + 1], &[]);
        a.clear();
        assert!(a.bytes.capacity() <= FLAT_KEEP_BYTES);
    }
}
