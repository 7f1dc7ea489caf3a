//! The list type: a deque of byte strings. Redis 7.0 stores every list as
//! a quicklist (a linked list of listpacks), so `OBJECT ENCODING` always
//! says `quicklist`, whatever the size; one `VecDeque` gives the same
//! behaviour (O(1) at both ends, O(n) in the middle).
//!
//! Lists are never empty in the keyspace: the commands delete a list they
//! empty, and [`List::decode`] refuses an empty one.
//!
//! Snapshot form (checkpoint tag 3), written by [`List::encode`]: the number
//! of elements as a LEB128 varint, then each element, head first, as its
//! length (varint) and its bytes. [`List::decode`] checks every length
//! against the bytes left and never allocates more than they can hold.

use super::codec::{get_varint, put_varint, take};
use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug, Clone, Default)]
pub struct List {
    pub items: VecDeque<Bytes>,
}

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

impl List {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn encoding(&self) -> &'static str {
        "quicklist"
    }

    pub fn push(&mut self, end: End, v: Bytes) {
        match end {
            End::Left => self.items.push_front(v),
            End::Right => self.items.push_back(v),
        }
    }

    pub fn pop(&mut self, end: End) -> Option<Bytes> {
        match end {
            End::Left => self.items.pop_front(),
            End::Right => self.items.pop_back(),
        }
    }

    /// Up to `n` elements from `end`, in the order they are popped.
    pub fn pop_many(&mut self, end: End, n: usize) -> Vec<Bytes> {
        let n = n.min(self.items.len());
        match end {
            End::Left => self.items.drain(..n).collect(),
            End::Right => {
                let at = self.items.len() - n;
                let mut v: Vec<Bytes> = self.items.drain(at..).collect();
                v.reverse();
                v
            }
        }
    }

    /// Redis's index rule: negative counts from the tail (-1 is the last).
    pub fn resolve(&self, index: i64) -> Option<usize> {
        let len = self.items.len() as i64;
        let i = if index < 0 {
            len.checked_add(index)?
        } else {
            index
        };
        (0..len).contains(&i).then_some(i as usize)
    }

    pub fn get(&self, index: i64) -> Option<&Bytes> {
        self.items.get(self.resolve(index)?)
    }

    /// The inclusive range `[start, stop]` after Redis's clamping
    /// (`addListRangeReply`, LTRIM): `None` when empty.
    pub fn clamp_range(&self, start: i64, stop: i64) -> Option<(usize, usize)> {
        let len = self.items.len() as i64;
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

    /// Keep only `[start, stop]` (indices from [`List::clamp_range`]), or
    /// nothing; returns how many elements were removed.
    pub fn trim(&mut self, keep: Option<(usize, usize)>) -> usize {
        let before = self.items.len();
        match keep {
            None => self.items.clear(),
            Some((start, stop)) => {
                self.items.truncate(stop + 1);
                self.items.drain(..start);
            }
        }
        before - self.items.len()
    }

    /// LREM: remove up to `count` elements equal to `v` (from the head if
    /// `count > 0`, from the tail if `< 0`, all if 0); how many were removed.
    pub fn remove(&mut self, v: &[u8], count: i64) -> usize {
        let limit = if count == 0 {
            usize::MAX
        } else {
            usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX)
        };
        let mut removed = 0;
        if count >= 0 {
            let mut i = 0;
            while i < self.items.len() && removed < limit {
                if self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        } else {
            let mut i = self.items.len();
            while i > 0 && removed < limit {
                i -= 1;
                if self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// LINSERT: insert `v` before or after the first `pivot`; false if absent.
    pub fn insert(&mut self, pivot: &[u8], v: Bytes, after: bool) -> bool {
        let Some(i) = self.items.iter().position(|x| x == pivot) else {
            return false;
        };
        self.items.insert(if after { i + 1 } else { i }, v);
        true
    }

    /// A rough count of the bytes the list holds (INFO memory).
    pub fn memory_usage(&self) -> usize {
        let data: usize = self.items.iter().map(|b| b.len()).sum();
        // A quicklist node per ~8 KiB, plus a listpack header per element.
        64 + data + self.items.len() * 11
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.items.len() as u64);
        for v in &self.items {
            put_varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }

    /// Read a snapshot form from the front of `r`, advancing it.
    pub fn decode(r: &mut &[u8]) -> Result<List, String> {
        let n = get_varint(r)?;
        if n == 0 {
            return Err("empty list in snapshot".into());
        }
        // Each element takes at least one byte: never reserve more.
        let n = usize::try_from(n).map_err(|_| "list too long")?;
        if n > r.len() {
            return Err(format!("list truncated: {n} elements in {} bytes", r.len()));
        }
        let mut items = VecDeque::with_capacity(n);
        for _ in 0..n {
            let len = usize::try_from(get_varint(r)?).map_err(|_| "list element too long")?;
            items.push_back(Bytes::copy_from_slice(take(r, len)?));
        }
        Ok(List { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> List {
        List {
            items: items.iter().map(|s| Bytes::from(s.to_string())).collect(),
        }
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        let l = list(&["a", "", "ccc\0\r\n"]);
        let mut out = Vec::new();
        l.encode(&mut out);
        let mut r = &out[..];
        let back = List::decode(&mut r).map(|l| l.items);
        assert_eq!(back, Ok(l.items.clone()));
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
    fn ranges_follow_redis() {
        let l = list(&["a", "b", "c", "d"]);
        assert_eq!(l.clamp_range(0, -1), Some((0, 3)));
        assert_eq!(l.clamp_range(-100, 1), Some((0, 1)));
        assert_eq!(l.clamp_range(2, 100), Some((2, 3)));
        assert_eq!(l.clamp_range(3, 2), None);
        assert_eq!(l.clamp_range(4, 10), None);
        assert_eq!(l.clamp_range(i64::MIN, i64::MAX), Some((0, 3)));
        assert_eq!(l.get(-1).map(|b| &b[..]), Some(&b"d"[..]));
        assert_eq!(l.get(i64::MIN), None);
        let mut m = l.clone();
        assert_eq!(m.remove(b"b", -5), 1);
        assert_eq!(m.pop_many(End::Right, 10).len(), 3);
    }
}
