//! The set type. Sets of integers only (at most [`MAX_INTSET_ENTRIES`])
//! are a sorted vector of i64 (Redis's intset: SMEMBERS returns them in
//! ascending order); others a table. Redis 7.0 has no listpack sets:
//! `OBJECT ENCODING` says `intset` or `hashtable`.
//!
//! Conversion follows Redis 7.0's `setTypeAdd`: a set is created as an
//! intset if its first member is an integer (`string2ll`'s strict form),
//! becomes a table as soon as a non-integer member is added or it grows past
//! [`MAX_INTSET_ENTRIES`], and never converts back.
//!
//! The table keeps members in slots that never move while the member
//! exists ([`Slots`], also used by sorted sets), so an SSCAN cursor (a slot
//! index) returns every member present for the whole scan.
//!
//! Snapshot form (checkpoint tag 4), written by [`Set::encode`]: one byte
//! for the encoding (0 intset, 1 table), the member count as a LEB128
//! varint, then each member as length (varint) and bytes. [`Set::decode`]
//! checks every length against the bytes left, refuses duplicates and
//! re-applies the conversion rule (an intset snapshot holding a non-integer
//! or too many members becomes a table).

use super::codec::{get_varint, put_varint, take};
use crate::args::parse_i64;
use bytes::Bytes;
use std::collections::HashMap;

/// Redis's `set-max-intset-entries` default.
pub const MAX_INTSET_ENTRIES: usize = 512;

/// Values keyed by member in slots that stay put while the member exists.
#[derive(Debug, Clone)]
pub struct Slots<V> {
    index: HashMap<Bytes, usize>,
    slots: Vec<Option<(Bytes, V)>>,
    free: Vec<usize>,
}

impl<V> Default for Slots<V> {
    fn default() -> Self {
        Slots {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<V> Slots<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn get(&self, member: &[u8]) -> Option<&V> {
        let &i = self.index.get(member)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }
    /// Insert or replace; the previous value.
    pub fn insert(&mut self, member: Bytes, value: V) -> Option<V> {
        if let Some(&i) = self.index.get(&member) {
            return self.slots[i]
                .as_mut()
                .map(|(_, v)| std::mem::replace(v, value));
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[i] = Some((member.clone(), value));
        self.index.insert(member, i);
        None
    }
    pub fn remove(&mut self, member: &[u8]) -> Option<V> {
        let i = self.index.remove(member)?;
        let v = self.slots[i].take().map(|(_, v)| v);
        self.free.push(i);
        if self.index.is_empty() {
            self.slots.clear();
            self.free.clear();
        }
        v
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &V)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }
    /// One member chosen by `random` (any u64), uniformly; `None` if empty.
    pub fn random(&self, random: u64) -> Option<(&Bytes, &V)> {
        if self.index.is_empty() {
            return None;
        }
        // Slots are at least as many as members; with few free slots a
        // probe hits at once. After many deletions, fall back to the n-th.
        let n = self.slots.len() as u64;
        let mut r = random;
        for _ in 0..8 {
            if let Some((k, v)) = &self.slots[(r % n) as usize] {
                return Some((k, v));
            }
            r = r.rotate_right(17).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        self.iter().nth((random % self.index.len() as u64) as usize)
    }
    /// From `cursor`, visit up to `count` slots; the next cursor (0 = done).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&Bytes, &V)) -> u64 {
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        if start >= self.slots.len() {
            return 0;
        }
        let end = start.saturating_add(count.max(1)).min(self.slots.len());
        for (k, v) in self.slots[start..end].iter().flatten() {
            f(k, v);
        }
        if end >= self.slots.len() {
            0
        } else {
            end as u64
        }
    }
    /// Slots allocated (memory estimates).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[derive(Debug, Clone)]
pub enum Set {
    /// Ascending, at most [`MAX_INTSET_ENTRIES`].
    Intset(Vec<i64>),
    Table(Slots<()>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Intset(Vec::new())
    }
}

/// A copy that owns its bytes (an argument must not pin the read buffer).
fn own(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl Set {
    /// An empty set with the encoding Redis's `setTypeCreate` picks for a
    /// set whose first member is `first`.
    pub fn new_for(first: &[u8]) -> Set {
        if parse_i64(first).is_some() {
            Set::Intset(Vec::new())
        } else {
            Set::Table(Slots::default())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Set::Intset(v) => v.len(),
            Set::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match self {
            Set::Intset(_) => "intset",
            Set::Table(_) => "hashtable",
        }
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        match self {
            Set::Intset(v) => parse_i64(member).is_some_and(|n| v.binary_search(&n).is_ok()),
            Set::Table(t) => t.get(member).is_some(),
        }
    }

    /// Add `member`; true if it is new. Converts as `setTypeAdd` does.
    pub fn add(&mut self, member: &[u8]) -> bool {
        if let Set::Intset(v) = self {
            if let Some(n) = parse_i64(member) {
                let Err(at) = v.binary_search(&n) else {
                    return false;
                };
                v.insert(at, n);
                if v.len() > MAX_INTSET_ENTRIES {
                    self.convert();
                }
                return true;
            }
            self.convert();
        }
        match self {
            Set::Table(t) => {
                if t.get(member).is_some() {
                    return false;
                }
                t.insert(own(member), ());
                true
            }
            // Converted just above.
            Set::Intset(_) => false,
        }
    }

    /// Remove `member`; whether it was there. A table stays a table.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            Set::Intset(v) => match parse_i64(member).map(|n| v.binary_search(&n)) {
                Some(Ok(i)) => {
                    v.remove(i);
                    true
                }
                _ => false,
            },
            Set::Table(t) => t.remove(member).is_some(),
        }
    }

    fn convert(&mut self) {
        if let Set::Intset(v) = self {
            let mut t = Slots::default();
            for n in v.iter() {
                t.insert(Bytes::from(n.to_string()), ());
            }
            *self = Set::Table(t);
        }
    }

    /// Every member: ascending for an intset, slot order for a table.
    pub fn members(&self) -> Box<dyn Iterator<Item = Bytes> + '_> {
        match self {
            Set::Intset(v) => Box::new(v.iter().map(|n| Bytes::from(n.to_string()))),
            Set::Table(t) => Box::new(t.iter().map(|(k, _)| k.clone())),
        }
    }

    /// One member chosen by `random` (any u64), uniformly.
    pub fn random_member(&self, random: u64) -> Option<Bytes> {
        match self {
            Set::Intset(v) if v.is_empty() => None,
            Set::Intset(v) => Some(Bytes::from(
                v[(random % v.len() as u64) as usize].to_string(),
            )),
            Set::Table(t) => t.random(random).map(|(k, _)| k.clone()),
        }
    }

    /// SSCAN: an intset is visited whole and the cursor is 0 (as Redis).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(Bytes)) -> u64 {
        match self {
            Set::Intset(v) => {
                for n in v {
                    f(Bytes::from(n.to_string()));
                }
                0
            }
            Set::Table(t) => t.scan(cursor, count, |k, _| f(k.clone())),
        }
    }

    /// An estimate of the bytes this set occupies (INFO memory).
    pub fn memory_usage(&self) -> usize {
        match self {
            Set::Intset(v) => 16 + v.len() * 8,
            Set::Table(t) => {
                let data: usize = t.iter().map(|(k, _)| k.len()).sum();
                64 + data + t.capacity() * 40 + t.len() * 48
            }
        }
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            Set::Intset(_) => 0,
            Set::Table(_) => 1,
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
            0 => Set::Intset(Vec::new()),
            1 => Set::Table(Slots::default()),
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
        assert_eq!(s.len(), MAX_INTSET_ENTRIES + 1);
        let mut s = Set::new_for(b"1");
        s.add(b"2");
        s.add(b"1");
        assert_eq!(s.members().collect::<Vec<_>>(), vec!["1", "2"]);
        s.add(b"01");
        assert_eq!(s.encoding(), "hashtable");
        assert!(s.contains(b"1") && s.contains(b"01") && !s.contains(b"3"));
        assert_eq!(Set::new_for(b"-0").encoding(), "hashtable");
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        for members in [vec!["3", "1", "2"], vec!["a", "b"], vec![]] {
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
        let mut r: &[u8] = &[1, 2, 1, b'a', 1, b'a'];
        assert!(Set::decode(&mut r).is_err(), "duplicate");
        let mut r: &[u8] = &[7, 0];
        assert!(Set::decode(&mut r).is_err(), "unknown encoding");
    }
}
