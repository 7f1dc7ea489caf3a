//! The set type, in three encodings with Redis's conversion rules:
//!
//! - [`IntSet`]: integers only (at most [`MAX_INTSET_ENTRIES`]), a sorted
//!   array of the narrowest width that holds them all (2, 4 or 8 bytes, as
//!   Redis's intset: widened when a member needs it, never narrowed), so
//!   SMEMBERS returns them in ascending order. `OBJECT ENCODING`: `intset`.
//! - [`Listpack`]: up to [`MAX_LISTPACK_ENTRIES`] members of at most
//!   [`MAX_LISTPACK_VALUE`] bytes each, one flat buffer in insertion order
//!   (Redis 7.2's listpack sets). Redis 7.0 keeps such sets in a hash
//!   table, so `OBJECT ENCODING` says `hashtable` for this form too: the
//!   difference is invisible but for memory, and SSCAN returning the whole
//!   set with cursor 0 (which the SCAN contract allows).
//! - a table ([`Slots`], also used by sorted sets), whose slots never move
//!   while the member exists, so an SSCAN cursor (a slot index) returns
//!   every member present for the whole scan. `OBJECT ENCODING`:
//!   `hashtable`.
//!
//! Conversion follows Redis 7.0's `setTypeCreate`/`setTypeAdd`: a set is
//! created as an intset if its first member is an integer (`string2ll`'s
//! strict form), otherwise as a listpack (a table if that member is longer
//! than [`MAX_LISTPACK_VALUE`]). An intset that gains a non-integer member
//! becomes a listpack if the result fits one, else a table; an intset that
//! grows past [`MAX_INTSET_ENTRIES`] and a listpack that grows past its
//! limits become tables. Nothing converts back.
//!
//! Snapshot form (checkpoint tag 4), written by [`Set::encode`], unchanged
//! by the compact forms: one byte for the encoding (0 intset, 1 table: a
//! listpack is written as 1, what Redis 7.0 calls it), the member count as
//! a LEB128 varint, then each member as length (varint) and bytes.
//! [`Set::decode`] checks every length against the bytes left, refuses
//! duplicates and re-applies the conversion rule (1 starts as a listpack;
//! an intset snapshot holding a non-integer or too many members converts).

use super::codec::{get_varint, put_varint, take};
use super::cow::CowBody;
use crate::args::parse_i64;
use bytes::Bytes;

/// Redis's `set-max-intset-entries` default.
pub const MAX_INTSET_ENTRIES: usize = 512;
/// Redis 7.2's `set-max-listpack-entries` default.
pub const MAX_LISTPACK_ENTRIES: usize = 128;
/// Redis 7.2's `set-max-listpack-value` default.
pub const MAX_LISTPACK_VALUE: usize = 64;

pub use super::slots::Slots;

/// What the allocator spends per allocation beyond the bytes asked for.
const MALLOC_OVERHEAD: usize = 16;

/// Redis's intset: ascending integers in the narrowest width that holds
/// every member. Arrays grow by exactly one element (as Redis reallocates
/// an intset per insert; at most [`MAX_INTSET_ENTRIES`] elements).
#[derive(Debug, Clone)]
pub enum IntSet {
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Default for IntSet {
    fn default() -> Self {
        IntSet::I16(Vec::new())
    }
}

/// Insert `x` in the sorted `v`; false if present.
fn sorted_insert<T: Ord + Copy>(v: &mut Vec<T>, x: T) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(at) => {
            v.reserve_exact(1);
            v.insert(at, x);
            true
        }
    }
}

/// Remove `x` from the sorted `v`; false if absent.
fn sorted_remove<T: Ord + Copy>(v: &mut Vec<T>, x: T) -> bool {
    match v.binary_search(&x) {
        Ok(at) => {
            v.remove(at);
            true
        }
        Err(_) => false,
    }
}

impl IntSet {
    pub fn len(&self) -> usize {
        match self {
            IntSet::I16(v) => v.len(),
            IntSet::I32(v) => v.len(),
            IntSet::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per member (Redis's intset `encoding`).
    pub fn width(&self) -> usize {
        match self {
            IntSet::I16(_) => 2,
            IntSet::I32(_) => 4,
            IntSet::I64(_) => 8,
        }
    }

    pub fn contains(&self, n: i64) -> bool {
        match self {
            IntSet::I16(v) => i16::try_from(n).is_ok_and(|n| v.binary_search(&n).is_ok()),
            IntSet::I32(v) => i32::try_from(n).is_ok_and(|n| v.binary_search(&n).is_ok()),
            IntSet::I64(v) => v.binary_search(&n).is_ok(),
        }
    }

    /// Add `n`, widening every member first if `n` needs it; true if new.
    pub fn insert(&mut self, n: i64) -> bool {
        if let IntSet::I16(v) = self {
            if let Ok(x) = i16::try_from(n) {
                return sorted_insert(v, x);
            }
            let mut wide: Vec<i32> = Vec::with_capacity(v.len() + 1);
            wide.extend(v.iter().map(|&x| i32::from(x)));
            *self = IntSet::I32(wide);
        }
        if let IntSet::I32(v) = self {
            if let Ok(x) = i32::try_from(n) {
                return sorted_insert(v, x);
            }
            let mut wide: Vec<i64> = Vec::with_capacity(v.len() + 1);
            wide.extend(v.iter().map(|&x| i64::from(x)));
            *self = IntSet::I64(wide);
        }
        match self {
            IntSet::I64(v) => sorted_insert(v, n),
            // Widened just above.
            IntSet::I16(_) | IntSet::I32(_) => false,
        }
    }

    /// Remove `n`; whether it was there. The width stays (as Redis).
    pub fn remove(&mut self, n: i64) -> bool {
        match self {
            IntSet::I16(v) => i16::try_from(n).is_ok_and(|n| sorted_remove(v, n)),
            IntSet::I32(v) => i32::try_from(n).is_ok_and(|n| sorted_remove(v, n)),
            IntSet::I64(v) => sorted_remove(v, n),
        }
    }

    /// The `i`-th smallest member (< len).
    pub fn get(&self, i: usize) -> Option<i64> {
        match self {
            IntSet::I16(v) => v.get(i).map(|&x| i64::from(x)),
            IntSet::I32(v) => v.get(i).map(|&x| i64::from(x)),
            IntSet::I64(v) => v.get(i).copied(),
        }
    }

    /// Every member, ascending.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn bytes(&self) -> usize {
        let cap = match self {
            IntSet::I16(v) => v.capacity(),
            IntSet::I32(v) => v.capacity(),
            IntSet::I64(v) => v.capacity(),
        };
        if cap == 0 {
            0
        } else {
            cap * self.width() + MALLOC_OVERHEAD
        }
    }
}

/// A small set's members in one buffer, in insertion order: per member a
/// length byte and the bytes (each at most [`MAX_LISTPACK_VALUE`]).
#[derive(Debug, Clone, Default)]
pub struct Listpack {
    buf: Vec<u8>,
    len: usize,
}

impl Listpack {
    /// The members with each one's offset.
    fn entries(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let b = &self.buf;
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let start = at;
            let len = usize::from(*b.get(at)?);
            let m = b.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            Some((start, m))
        })
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries().map(|(_, m)| m)
    }

    fn find(&self, member: &[u8]) -> Option<usize> {
        self.entries().find(|(_, m)| *m == member).map(|(at, _)| at)
    }

    /// Append a member known to be absent and at most
    /// [`MAX_LISTPACK_VALUE`] bytes (the buffer grows by what it needs).
    fn push(&mut self, member: &[u8]) {
        self.buf.reserve_exact(1 + member.len());
        self.buf.push(member.len() as u8);
        self.buf.extend_from_slice(member);
        self.len += 1;
    }

    fn remove(&mut self, member: &[u8]) -> bool {
        let Some(at) = self.find(member) else {
            return false;
        };
        self.buf.drain(at..at + 1 + member.len());
        self.len -= 1;
        if self.len == 0 {
            self.buf = Vec::new();
        }
        true
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.iter().nth(i)
    }
}

#[derive(Debug, Clone)]
pub enum Set {
    Intset(IntSet),
    Listpack(Listpack),
    /// Shared copy on write with a checkpoint that is encoding it
    /// ([`Set::share`]): every write goes through `CowBody::make_mut`,
    /// which copies the table first while a snapshot holds it.
    Table(CowBody<Slots<()>>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Intset(IntSet::default())
    }
}

/// A copy that owns its bytes (an argument must not pin the read buffer).
fn own(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn int_bytes(n: i64) -> Bytes {
    Bytes::from(n.to_string())
}

impl Set {
    /// An empty set with the encoding Redis's `setTypeCreate` picks for a
    /// set whose first member is `first` (a listpack where Redis 7.0 makes a
    /// small hash table).
    pub fn new_for(first: &[u8]) -> Set {
        if parse_i64(first).is_some() {
            Set::Intset(IntSet::default())
        } else if first.len() <= MAX_LISTPACK_VALUE {
            Set::Listpack(Listpack::default())
        } else {
            Set::Table(CowBody::default())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Set::Intset(v) => v.len(),
            Set::Listpack(l) => l.len,
            Set::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name OBJECT ENCODING reports (Redis 7.0's: see the module doc).
    pub fn encoding(&self) -> &'static str {
        match self {
            Set::Intset(_) => "intset",
            Set::Listpack(_) | Set::Table(_) => "hashtable",
        }
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        match self {
            Set::Intset(v) => parse_i64(member).is_some_and(|n| v.contains(n)),
            Set::Listpack(l) => l.find(member).is_some(),
            Set::Table(t) => t.get(member).is_some(),
        }
    }

    /// Add `member`; true if it is new. Converts as `setTypeAdd` does.
    pub fn add(&mut self, member: &[u8]) -> bool {
        if let Set::Intset(v) = self {
            match parse_i64(member) {
                Some(n) => {
                    if !v.insert(n) {
                        return false;
                    }
                    if v.len() > MAX_INTSET_ENTRIES {
                        self.convert(false);
                    }
                    return true;
                }
                None => {
                    let small =
                        member.len() <= MAX_LISTPACK_VALUE && v.len() < MAX_LISTPACK_ENTRIES;
                    self.convert(small);
                }
            }
        }
        if let Set::Listpack(l) = self {
            if l.find(member).is_some() {
                return false;
            }
            if member.len() <= MAX_LISTPACK_VALUE && l.len < MAX_LISTPACK_ENTRIES {
                l.push(member);
                return true;
            }
            self.convert(false);
        }
        match self {
            Set::Table(t) => {
                if t.get(member).is_some() {
                    return false;
                }
                t.make_mut().insert(own(member), ());
                true
            }
            // Converted just above.
            Set::Intset(_) | Set::Listpack(_) => false,
        }
    }

    /// Remove `member`; whether it was there. No conversion.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            Set::Intset(v) => parse_i64(member).is_some_and(|n| v.remove(n)),
            Set::Listpack(l) => l.remove(member),
            // A miss does not copy a shared table.
            Set::Table(t) => t.contains(member) && t.make_mut().remove(member).is_some(),
        }
    }

    /// Re-encode as a listpack (`small`) or a table.
    fn convert(&mut self, small: bool) {
        let members: Vec<Bytes> = self.members().collect();
        *self = if small {
            let mut l = Listpack::default();
            for m in &members {
                l.push(m);
            }
            Set::Listpack(l)
        } else {
            let mut t = Slots::<()>::default();
            for m in members {
                t.insert(m, ());
            }
            Set::Table(CowBody::new(t))
        };
    }

    /// Every member: ascending for an intset, insertion order for a
    /// listpack, slot order for a table.
    pub fn members(&self) -> Box<dyn Iterator<Item = Bytes> + '_> {
        match self {
            Set::Intset(v) => Box::new(v.iter().map(int_bytes)),
            Set::Listpack(l) => Box::new(l.iter().map(own)),
            Set::Table(t) => Box::new(t.iter().map(|(k, _)| k.clone())),
        }
    }

    /// One member chosen by `random` (any u64), uniformly.
    pub fn random_member(&self, random: u64) -> Option<Bytes> {
        let n = self.len() as u64;
        if n == 0 {
            return None;
        }
        match self {
            Set::Intset(v) => v.get((random % n) as usize).map(int_bytes),
            Set::Listpack(l) => l.get((random % n) as usize).map(own),
            Set::Table(t) => t.random(random).map(|(k, _)| k.clone()),
        }
    }

    /// SSCAN: an intset or a listpack is visited whole and the cursor is 0
    /// (as Redis does for its compact encodings).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(Bytes)) -> u64 {
        match self {
            Set::Intset(_) | Set::Listpack(_) => {
                for m in self.members() {
                    f(m);
                }
                0
            }
            Set::Table(t) => t.scan(cursor, count, |k, _| f(k.clone())),
        }
    }

    /// An estimate of the bytes this set occupies, allocator overhead
    /// included (MEMORY USAGE, INFO memory).
    pub fn memory_usage(&self) -> usize {
        let own = std::mem::size_of::<Set>() + MALLOC_OVERHEAD;
        own + match self {
            Set::Intset(v) => v.bytes(),
            Set::Listpack(l) => l.buf.capacity() + MALLOC_OVERHEAD,
            Set::Table(t) => {
                let data: usize = t.iter().map(|(k, _)| k.len()).sum();
                // The Arc's counts live beside the table.
                16 + std::mem::size_of::<Slots<()>>() + data + t.capacity() * 32 + t.len() * 26
            }
        }
    }

    /// For a checkpoint: a table shared with this set (no copy; a later
    /// write to this set copies it first), to [`Set::encode`] off the store
    /// lock. `None` for an intset or a listpack (small: encode in place).
    pub fn share(&self) -> Option<Set> {
        match self {
            Set::Intset(_) | Set::Listpack(_) => None,
            Set::Table(t) => Some(Set::Table(t.clone())),
        }
    }

    /// [`Set::share`] for a snapshot, unless the table was written often
    /// since the last one ([`CowBody::take_hot`]): then `None`, and it is
    /// encoded in place.
    pub fn share_cold(&mut self) -> Option<Set> {
        if let Set::Table(t) = self {
            if t.take_hot() {
                return None;
            }
        }
        self.share()
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            Set::Intset(_) => 0,
            Set::Listpack(_) | Set::Table(_) => 1,
        });
        put_varint(out, self.len() as u64);
        for m in self.members() {
            put_varint(out, m.len() as u64);
            out.extend_from_slice(&m);
        }
    }

    /// Read a snapshot form from the front of `r`, advancing it.
    pub fn decode(r: &mut &[u8]) -> Result<Set, String> {
        let kind = take(r, 1)?[0];
        let n = get_varint(r)?;
        let mut s = match kind {
            0 => Set::Intset(IntSet::default()),
            1 => Set::Listpack(Listpack::default()),
            k => return Err(format!("unknown set encoding {k}")),
        };
        for _ in 0..n {
            let len = usize::try_from(get_varint(r)?).map_err(|_| "set member too long")?;
            if !s.add(take(r, len)?) {
                return Err("duplicate member in set".into());
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intset_converts_at_the_limits() {
        let mut s = Set::new_for(b"1");
        for i in 0..MAX_INTSET_ENTRIES {
            assert!(s.add(i.to_string().as_bytes()));
        }
        assert_eq!(s.encoding(), "intset");
        assert!(!s.add(b"5"));
        assert!(s.add(b"-1"));
        assert_eq!(s.encoding(), "hashtable");
        assert!(matches!(s, Set::Table(_)));
        assert_eq!(s.len(), MAX_INTSET_ENTRIES + 1);
        let mut s = Set::new_for(b"1");
        s.add(b"2");
        s.add(b"1");
        assert_eq!(s.members().collect::<Vec<_>>(), vec!["1", "2"]);
        s.add(b"01");
        assert_eq!(s.encoding(), "hashtable");
        assert!(matches!(s, Set::Listpack(_)));
        assert!(s.contains(b"1") && s.contains(b"01") && !s.contains(b"3"));
        assert_eq!(Set::new_for(b"-0").encoding(), "hashtable");
    }

    #[test]
    fn intset_widens_and_keeps_order() {
        let mut v = IntSet::default();
        assert_eq!(v.width(), 2);
        for n in [5, -3, i64::from(i16::MAX), i64::from(i16::MIN)] {
            assert!(v.insert(n));
        }
        assert_eq!(v.width(), 2);
        assert!(!v.insert(5));
        assert!(v.insert(i64::from(i16::MAX) + 1));
        assert_eq!(v.width(), 4);
        assert!(v.insert(i64::from(i32::MIN)));
        assert_eq!(v.width(), 4);
        assert!(v.insert(i64::MAX));
        assert_eq!(v.width(), 8);
        assert!(v.insert(i64::MIN));
        assert!(!v.insert(i64::MIN));
        let want = vec![
            i64::MIN,
            i64::from(i32::MIN),
            i64::from(i16::MIN),
            -3,
            5,
            i64::from(i16::MAX),
            i64::from(i16::MAX) + 1,
            i64::MAX,
        ];
        assert_eq!(v.iter().collect::<Vec<_>>(), want);
        for &n in &want {
            assert!(v.contains(n));
        }
        assert!(!v.contains(0) && !v.contains(i64::MAX - 1));
        // Removing the wide members keeps the width, as Redis.
        assert!(v.remove(i64::MIN) && v.remove(i64::MAX) && !v.remove(i64::MAX));
        assert_eq!(v.width(), 8);
        // A narrow set answers for values it cannot hold.
        let mut n = IntSet::default();
        n.insert(1);
        assert!(!n.contains(i64::MAX) && !n.contains(i64::MIN) && !n.remove(1 << 40));
        assert_eq!(n.bytes(), 2 + MALLOC_OVERHEAD);

        let mut s = Set::new_for(b"-9223372036854775808");
        assert!(s.add(b"-9223372036854775808"));
        assert!(s.add(b"9223372036854775807"));
        assert!(s.add(b"0"));
        assert_eq!(s.encoding(), "intset");
        assert_eq!(
            s.members().collect::<Vec<_>>(),
            vec!["-9223372036854775808", "0", "9223372036854775807"]
        );
        // One past i64 is not an integer member.
        assert!(s.add(b"9223372036854775808"));
        assert_eq!(s.encoding(), "hashtable");
        assert!(s.contains(b"9223372036854775807") && s.contains(b"9223372036854775808"));
    }

    #[test]
    fn listpack_converts_at_the_limits() {
        let mut s = Set::new_for(b"m0");
        for i in 0..MAX_LISTPACK_ENTRIES {
            assert!(s.add(format!("m{i}").as_bytes()));
        }
        assert!(matches!(s, Set::Listpack(_)));
        assert!(!s.add(b"m7"));
        assert!(s.remove(b"m7") && !s.remove(b"m7"));
        assert!(s.add(b"m7"));
        assert!(s.add(b"one more"));
        assert!(matches!(s, Set::Table(_)));
        assert_eq!(s.len(), MAX_LISTPACK_ENTRIES + 1);
        assert!(s.contains(b"m127") && s.contains(b"one more"));

        let long = [b'x'; MAX_LISTPACK_VALUE + 1];
        let mut s = Set::new_for(b"a");
        s.add(b"a");
        s.add(&long[..MAX_LISTPACK_VALUE]);
        assert!(matches!(s, Set::Listpack(_)));
        s.add(&long);
        assert!(matches!(s, Set::Table(_)));
        assert!(matches!(Set::new_for(&long), Set::Table(_)));
        // An intset too big for a listpack becomes a table on a string.
        let mut s = Set::new_for(b"1");
        for i in 0..MAX_LISTPACK_ENTRIES {
            s.add(i.to_string().as_bytes());
        }
        s.add(b"x");
        assert!(matches!(s, Set::Table(_)));
        assert_eq!(s.len(), MAX_LISTPACK_ENTRIES + 1);
        // Random members are members.
        let mut s = Set::new_for(b"a");
        for m in ["a", "b", "c"] {
            s.add(m.as_bytes());
        }
        for r in 0..10u64 {
            assert!(s.random_member(r).is_some_and(|m| s.contains(&m)));
        }
        let mut seen = Vec::new();
        assert_eq!(s.scan(0, 1, |m| seen.push(m)), 0);
        assert_eq!(seen, vec!["a", "b", "c"]);
    }

    /// A write to a set a snapshot shares leaves the shared copy as it was;
    /// a miss does not copy it.
    #[test]
    fn a_shared_table_is_copied_on_write() {
        let mut s = Set::new_for(b"a");
        for i in 0..300 {
            s.add(format!("m{i}").as_bytes());
        }
        let shared = s.share().unwrap_or_else(|| panic!("not shared"));
        let mut before = Vec::new();
        shared.encode(&mut before);
        let ptr = |s: &Set| match s {
            Set::Table(t) => t.as_ptr(),
            _ => panic!("not a table"),
        };
        assert!(!s.add(b"m1") && !s.remove(b"absent"));
        assert_eq!(ptr(&s), ptr(&shared), "a miss copies nothing");
        assert!(s.add(b"new") && s.remove(b"m2"));
        assert_ne!(ptr(&s), ptr(&shared));
        let mut after = Vec::new();
        shared.encode(&mut after);
        assert_eq!(before, after);
        assert_eq!((s.len(), shared.len()), (300, 300));
        assert!(s.contains(b"new") && !s.contains(b"m2") && shared.contains(b"m2"));
        assert!(Set::new_for(b"1").share().is_none());
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        for members in [
            vec!["3", "1", "2"],
            vec!["a", "b"],
            vec!["a", "1"],
            vec!["-9223372036854775808", "70000", "9223372036854775807"],
            vec![],
        ] {
            let mut s = Set::new_for(members.first().map_or(b"1", |m| m.as_bytes()));
            for m in &members {
                s.add(m.as_bytes());
            }
            let mut out = Vec::new();
            s.encode(&mut out);
            out.push(9);
            let mut r = &out[..];
            let d = Set::decode(&mut r).unwrap();
            assert_eq!(r, &[9]);
            assert_eq!(d.encoding(), s.encoding());
            assert_eq!(
                d.members().collect::<Vec<_>>(),
                s.members().collect::<Vec<_>>()
            );
            for cut in 0..out.len() - 1 {
                let mut r = &out[..cut];
                assert!(Set::decode(&mut r).is_err(), "cut at {cut}");
            }
        }
        // The bytes are the pre-listpack form: 1 for what Redis 7.0 calls
        // a hash table.
        let mut s = Set::new_for(b"a");
        s.add(b"a");
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(out, [1, 1, 1, b'a']);
        let mut r: &[u8] = &[1, 2, 1, b'a', 1, b'a'];
        assert!(Set::decode(&mut r).is_err(), "duplicate");
        let mut r: &[u8] = &[7, 0];
        assert!(Set::decode(&mut r).is_err(), "unknown encoding");
    }
}
