//! The hash type: field → value. Small hashes are one flat byte buffer in
//! insertion order, `[len][field][len][value]...` with one length byte each
//! (fields and values of a listpack are at most 64 bytes), as Redis's
//! listpack (`OBJECT ENCODING` says `listpack`, and HGETALL returns
//! insertion order); larger ones a table.
//!
//! Conversion follows Redis 7.0: a hash becomes a table as soon as it holds
//! more than [`MAX_LISTPACK_ENTRIES`] fields or a field or value longer than
//! [`MAX_LISTPACK_VALUE`] bytes is written, and never converts back.
//!
//! The table keeps its pairs in slots that never move while the field
//! exists (as [`crate::store::Db`] keeps keys), so an HSCAN cursor (a slot
//! index) returns every field present for the whole scan.
//!
//! Snapshot form (checkpoint tag 2), written by [`Hash::encode`]: one byte
//! for the encoding (0 listpack, 1 table), the number of pairs as a LEB128
//! varint, then each pair as field length (varint), field bytes, value
//! length (varint), value bytes. A listpack's pairs are in insertion order.
//! [`Hash::decode`] checks every length against the bytes left, refuses
//! duplicate fields and re-applies the conversion rule, so a snapshot can
//! never produce a listpack Redis would not have.

pub mod long_double;

use super::codec::{get_varint, put_varint, take};
use super::cow::CowBody;
use super::slots::Slots;
use bytes::Bytes;

/// Redis's `hash-max-listpack-entries` default.
pub const MAX_LISTPACK_ENTRIES: usize = 128;
/// Redis's `hash-max-listpack-value` default.
pub const MAX_LISTPACK_VALUE: usize = 64;

#[derive(Debug, Clone)]
pub enum Hash {
    /// At most `hash-max-listpack-entries` fields, each field and value at
    /// most `hash-max-listpack-value` bytes, in insertion order.
    Listpack(Listpack),
    Table(Table),
}

impl Default for Hash {
    fn default() -> Self {
        Hash::Listpack(Listpack::default())
    }
}

/// A small hash's pairs in one buffer: per pair a length byte, the field, a
/// length byte, the value (each at most [`MAX_LISTPACK_VALUE`] bytes, so a
/// byte holds the length). About 2 bytes of overhead per pair, against two
/// allocations and 64 bytes of handles for a pair of `Bytes`.
#[derive(Debug, Clone, Default)]
pub struct Listpack {
    buf: Vec<u8>,
    len: usize,
}

impl Listpack {
    /// The pairs, in insertion order, with each pair's offset.
    fn entries(&self) -> impl Iterator<Item = (usize, &[u8], &[u8])> + '_ {
        let b = &self.buf;
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let start = at;
            let flen = *b.get(at)? as usize;
            let f = b.get(at + 1..at + 1 + flen)?;
            let vlen = *b.get(at + 1 + flen)? as usize;
            let v0 = at + 2 + flen;
            let v = b.get(v0..v0 + vlen)?;
            at = v0 + vlen;
            Some((start, f, v))
        })
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries().map(|(_, f, v)| (f, v))
    }

    fn find(&self, field: &[u8]) -> Option<(usize, &[u8])> {
        self.entries()
            .find(|(_, f, _)| *f == field)
            .map(|(at, _, v)| (at, v))
    }

    fn push(&mut self, field: &[u8], value: &[u8]) {
        self.buf.push(field.len() as u8);
        self.buf.extend_from_slice(field);
        self.buf.push(value.len() as u8);
        self.buf.extend_from_slice(value);
        self.len += 1;
    }

    /// Insert or replace (in place); true if the field is new. Both are at
    /// most [`MAX_LISTPACK_VALUE`] bytes (the caller converts first).
    fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self.find(field) {
            Some((at, old)) => {
                let v0 = at + 2 + field.len();
                let v1 = v0 + old.len();
                self.buf[v0 - 1] = value.len() as u8;
                self.buf.splice(v0..v1, value.iter().copied());
                false
            }
            None => {
                self.push(field, value);
                true
            }
        }
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        let Some((at, v)) = self.find(field) else {
            return false;
        };
        let end = at + 2 + field.len() + v.len();
        self.buf.drain(at..end);
        self.len -= 1;
        if self.len == 0 {
            self.buf = Vec::new();
        }
        true
    }
}

/// A hash table whose pairs stay in their slot while they exist
/// ([`Slots`]: each field stored once). Shared copy on write with a
/// checkpoint that is encoding it ([`Hash::share`]): a write while one
/// holds it copies the table first.
#[derive(Debug, Clone, Default)]
pub struct Table(CowBody<Slots<Bytes>>);

impl Table {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.0.get(field).map(|v| v.as_ref())
    }

    /// Insert or replace; true if the field is new.
    fn set(&mut self, field: Bytes, value: Bytes) -> bool {
        self.0.make_mut().insert(field, value).is_none()
    }

    fn remove(&mut self, field: &[u8]) -> bool {
        // A miss does not copy a shared table.
        if !self.0.contains(field) {
            return false;
        }
        self.0.make_mut().remove(field).is_some()
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(f, v)| (f.as_ref(), v.as_ref()))
    }
}

/// A copy that owns its bytes: a field or value taken from a command's
/// arguments must not keep the connection's whole read buffer alive.
fn own(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl Hash {
    pub fn len(&self) -> usize {
        match self {
            Hash::Listpack(v) => v.len,
            Hash::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match self {
            Hash::Listpack(_) => "listpack",
            Hash::Table(_) => "hashtable",
        }
    }

    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            Hash::Listpack(v) => v.find(field).map(|(_, v)| v),
            Hash::Table(t) => t.get(field),
        }
    }

    pub fn contains(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Set `field` to `value` (a listpack keeps an existing field in its
    /// place); true if the field is new. Converts to a table as Redis's
    /// `hashTypeSet` does: before writing a long field or value, after
    /// growing past the entry limit.
    pub fn set(&mut self, field: &Bytes, value: &Bytes) -> bool {
        if field.len() > MAX_LISTPACK_VALUE || value.len() > MAX_LISTPACK_VALUE {
            self.convert();
        }
        match self {
            Hash::Listpack(v) => {
                if !v.set(field, value) {
                    return false;
                }
                if v.len > MAX_LISTPACK_ENTRIES {
                    self.convert();
                }
                true
            }
            Hash::Table(t) => t.set(own(field), own(value)),
        }
    }

    /// Remove `field`; whether it was there. A table stays a table.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            Hash::Listpack(v) => v.remove(field),
            Hash::Table(t) => t.remove(field),
        }
    }

    /// Make this hash a table (no-op if it is one).
    fn convert(&mut self) {
        if let Hash::Listpack(v) = self {
            let mut t = Table::default();
            for (f, val) in v.iter() {
                t.set(Bytes::copy_from_slice(f), Bytes::copy_from_slice(val));
            }
            *self = Hash::Table(t);
        }
    }

    /// Every pair: insertion order for a listpack, slot order for a table.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match self {
            Hash::Listpack(v) => Box::new(v.iter()),
            Hash::Table(t) => Box::new(t.iter()),
        }
    }

    /// One pair chosen by `random` (any u64): uniform over the pairs.
    /// `None` only for an empty hash.
    pub fn random_pair(&self, random: u64) -> Option<(&[u8], &[u8])> {
        match self {
            Hash::Listpack(v) => {
                if v.len == 0 {
                    return None;
                }
                v.iter().nth((random % v.len as u64) as usize)
            }
            Hash::Table(t) => t.0.random(random).map(|(f, v)| (f.as_ref(), v.as_ref())),
        }
    }

    /// HSCAN: from `cursor`, visit up to `count` slots of a table and return
    /// the next cursor (0 = done). A listpack is visited whole and the
    /// cursor is 0, whatever `cursor` was (as Redis does).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
        match self {
            Hash::Listpack(v) => {
                for (k, val) in v.iter() {
                    f(k, val);
                }
                0
            }
            Hash::Table(t) => t.0.scan(cursor, count, |k, v| f(k, v)),
        }
    }

    /// An estimate of the bytes this hash occupies (INFO memory).
    pub fn memory_usage(&self) -> usize {
        let data: usize = self.iter().map(|(f, v)| f.len() + v.len()).sum();
        match self {
            // A length byte per field and value, and the buffer's slack.
            Hash::Listpack(v) => 32 + v.buf.capacity(),
            // Two Bytes handles per slot plus the index's entry.
            // A slot (two `Bytes`) per slot; per pair its index entry and
            // the two allocations' overhead.
            Hash::Table(t) => 64 + data + t.0.capacity() * 64 + t.len() * 42,
        }
    }

    /// For a checkpoint: a table shared with this hash (no copy; a later
    /// write to this hash copies it first), to [`Hash::encode`] off the
    /// store lock. `None` for a listpack (small: encode it in place).
    pub fn share(&self) -> Option<Hash> {
        match self {
            Hash::Listpack(_) => None,
            Hash::Table(t) => Some(Hash::Table(t.clone())),
        }
    }

    /// [`Hash::share`] for a snapshot, unless the table was written often
    /// since the last one ([`CowBody::take_hot`]): then `None`, and it is
    /// encoded in place.
    pub fn share_cold(&mut self) -> Option<Hash> {
        if let Hash::Table(t) = self {
            if t.0.take_hot() {
                return None;
            }
        }
        self.share()
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            Hash::Listpack(_) => 0,
            Hash::Table(_) => 1,
        });
        put_varint(out, self.len() as u64);
        for (f, v) in self.iter() {
            put_varint(out, f.len() as u64);
            out.extend_from_slice(f);
            put_varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }

    /// Read a snapshot form from the front of `r`, advancing it.
    pub fn decode(r: &mut &[u8]) -> Result<Hash, String> {
        let kind = take(r, 1)?[0];
        let n = get_varint(r)?;
        let mut h = match kind {
            0 => Hash::Listpack(Listpack::default()),
            1 => Hash::Table(Table::default()),
            k => return Err(format!("unknown hash encoding {k}")),
        };
        for _ in 0..n {
            let flen = usize::try_from(get_varint(r)?).map_err(|_| "hash field too long")?;
            let field = Bytes::copy_from_slice(take(r, flen)?);
            let vlen = usize::try_from(get_varint(r)?).map_err(|_| "hash value too long")?;
            let value = Bytes::copy_from_slice(take(r, vlen)?);
            if !h.set(&field, &value) {
                return Err("duplicate field in hash".into());
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn listpack_keeps_insertion_order_and_converts_at_the_limits() {
        let mut h = Hash::default();
        assert!(h.set(&b("b"), &b("1")));
        assert!(h.set(&b("a"), &b("2")));
        assert!(!h.set(&b("b"), &b("3")));
        let pairs: Vec<_> = h
            .iter()
            .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
            .collect();
        assert_eq!(pairs, vec![(b("b"), b("3")), (b("a"), b("2"))]);
        assert_eq!(h.encoding(), "listpack");

        let mut h = Hash::default();
        for i in 0..MAX_LISTPACK_ENTRIES {
            h.set(&b(&i.to_string()), &b("v"));
        }
        assert_eq!(h.encoding(), "listpack");
        h.set(&b("one more"), &b("v"));
        assert_eq!(h.encoding(), "hashtable");
        for i in 0..MAX_LISTPACK_ENTRIES {
            assert!(h.remove(i.to_string().as_bytes()));
        }
        assert_eq!(h.encoding(), "hashtable", "never converts back");
        assert_eq!(h.len(), 1);

        let mut h = Hash::default();
        h.set(&b("f"), &Bytes::from(vec![b'x'; MAX_LISTPACK_VALUE]));
        assert_eq!(h.encoding(), "listpack");
        h.set(&b("f"), &Bytes::from(vec![b'x'; MAX_LISTPACK_VALUE + 1]));
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        for n in [0usize, 3, 200] {
            let mut h = Hash::default();
            for i in 0..n {
                h.set(&b(&format!("f{i}")), &b(&format!("v{i}")));
            }
            let mut out = Vec::new();
            h.encode(&mut out);
            out.push(9);
            let mut r = &out[..];
            let d = Hash::decode(&mut r).unwrap();
            assert_eq!(r, &[9], "decode stops at its end");
            assert_eq!(d.encoding(), h.encoding());
            let a: Vec<_> = h.iter().collect();
            let c: Vec<_> = d.iter().collect();
            assert_eq!(a, c);
            // Every truncation fails cleanly.
            for cut in 0..out.len() - 1 {
                let mut r = &out[..cut];
                assert!(Hash::decode(&mut r).is_err(), "cut at {cut}");
            }
        }
        let mut r: &[u8] = &[0, 2, 1, b'a', 0, 1, b'a', 0];
        assert!(Hash::decode(&mut r).is_err(), "duplicate field");
        let mut r: &[u8] = &[
            0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(Hash::decode(&mut r).is_err(), "huge count, no bytes");
        let mut r: &[u8] = &[7, 0];
        assert!(Hash::decode(&mut r).is_err(), "unknown encoding");
    }

    #[test]
    fn table_scan_visits_every_slot() {
        let mut h = Hash::default();
        for i in 0..300 {
            h.set(&b(&format!("f{i}")), &b("v"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = h.scan(cursor, 7, |f, _| {
                seen.insert(f.to_vec());
            });
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 300);
        for r in 0..50u64 {
            assert!(h
                .random_pair(r.wrapping_mul(0x1234_5678_9abc_def1))
                .is_some());
        }
    }

    #[test]
    fn flat_listpack_replaces_and_removes_in_place() {
        let mut h = Hash::default();
        for (f, v) in [("a", "1"), ("bb", "22"), ("c", "333")] {
            assert!(h.set(&b(f), &b(v)));
        }
        // A longer and a shorter value, and an empty one, keep their place.
        assert!(!h.set(&b("bb"), &b("a much longer value")));
        assert!(!h.set(&b("a"), &b("")));
        assert_eq!(h.get(b"bb"), Some(&b"a much longer value"[..]));
        assert_eq!(h.get(b"a"), Some(&b""[..]));
        assert!(h.remove(b"bb"));
        assert!(!h.remove(b"bb"));
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
        assert_eq!(
            pairs,
            vec![(b"a".to_vec(), vec![]), (b"c".to_vec(), b"333".to_vec())]
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h.random_pair(1), Some((&b"c"[..], &b"333"[..])));
        // A 64-byte value stays in the listpack; 65 converts.
        assert!(h.set(&b("x"), &Bytes::from(vec![b'v'; 64])));
        assert_eq!(h.encoding(), "listpack");
        assert!(h.set(&b("y"), &Bytes::from(vec![b'v'; 65])));
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.get(b"c"), Some(&b"333"[..]));
        assert_eq!(h.len(), 4);
    }
}
