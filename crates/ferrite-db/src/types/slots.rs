//! The one slot table behind the keyspace (`store::Db`), hash tables, set
//! tables and sorted sets' member index: values keyed by byte strings, in
//! slots that never move while their key exists, so that a SCAN cursor (a
//! slot number) returns every key present for the whole scan, and a
//! random pick is a probe into the slot array.
//!
//! Each key is stored once, in its slot: the index is a
//! `hashbrown::HashTable` of slot numbers hashed by the slot's key
//! (SipHash with a random key: keys come from clients), 8 bytes of index a
//! key instead of a second copy of it.

use bytes::Bytes;
use std::hash::BuildHasher;

/// Values keyed by byte strings in slots that stay put while the key exists.
#[derive(Debug, Clone)]
pub struct Slots<V> {
    index: hashbrown::HashTable<usize>,
    hasher: std::hash::RandomState,
    slots: Vec<Option<(Bytes, V)>>,
    free: Vec<usize>,
}

impl<V> Default for Slots<V> {
    fn default() -> Self {
        Slots {
            index: hashbrown::HashTable::new(),
            hasher: std::hash::RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<V> Slots<V> {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot number of `key`.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hash(key), |&i| {
                slots[i].as_ref().is_some_and(|(k, _)| k[..] == *key)
            })
            .copied()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let i = self.find(key)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = self.find(key)?;
        self.slots[i].as_mut().map(|(_, v)| v)
    }

    /// The key and value in slot `i`, if it holds one.
    pub fn at(&self, i: usize) -> Option<(&Bytes, &V)> {
        self.slots.get(i)?.as_ref().map(|(k, v)| (k, v))
    }

    /// The value in slot `i`, if it holds one.
    pub fn at_mut(&mut self, i: usize) -> Option<&mut V> {
        self.slots.get_mut(i)?.as_mut().map(|(_, v)| v)
    }

    /// The key and value in slot `i`, the value mutable.
    pub fn at_entry_mut(&mut self, i: usize) -> Option<(&Bytes, &mut V)> {
        self.slots.get_mut(i)?.as_mut().map(|(k, v)| (&*k, v))
    }

    /// Insert or replace; the previous value.
    pub fn insert(&mut self, key: Bytes, value: V) -> Option<V> {
        self.insert_slot(key, value).1
    }

    /// Insert or replace: the slot number, and the previous value.
    pub fn insert_slot(&mut self, key: Bytes, value: V) -> (usize, Option<V>) {
        if let Some(i) = self.find(&key) {
            let old = self.slots[i]
                .as_mut()
                .map(|(_, v)| std::mem::replace(v, value));
            return (i, old);
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let h = self.hash(&key);
        self.slots[i] = Some((key, value));
        let Slots {
            index,
            slots,
            hasher,
            ..
        } = self;
        index.insert_unique(h, i, |&j| match &slots[j] {
            Some((k, _)) => hasher.hash_one(&k[..]),
            None => 0,
        });
        (i, None)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.remove_slot(key).map(|(_, v)| v)
    }

    /// Remove `key`: its slot number and value. The last key removed
    /// releases the slot array (`capacity` drops to 0).
    pub fn remove_slot(&mut self, key: &[u8]) -> Option<(usize, V)> {
        let h = self.hash(key);
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(h, |&i| {
                slots[i].as_ref().is_some_and(|(k, _)| k[..] == *key)
            })
            .ok()?;
        let (i, _) = entry.remove();
        let v = self.slots[i].take().map(|(_, v)| v);
        self.free.push(i);
        if self.index.is_empty() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        v.map(|v| (i, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &V)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Bytes, &mut V)> {
        self.slots.iter_mut().flatten().map(|(k, v)| (&*k, v))
    }

    /// [`Slots::iter_mut`] with each key's slot number.
    pub fn iter_mut_slots(&mut self) -> impl Iterator<Item = (usize, &Bytes, &mut V)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|(k, v)| (i, &*k, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.iter().map(|(k, _)| k)
    }

    /// One key chosen by `random` (any u64), uniformly; `None` if empty.
    pub fn random(&self, random: u64) -> Option<(&Bytes, &V)> {
        if self.index.is_empty() {
            return None;
        }
        // Slots are at least as many as keys; with few free slots a probe
        // hits at once. After many deletions, fall back to the n-th.
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

    /// Slots allocated: slot numbers are below this (memory estimates).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_a_map() {
        let mut s: Slots<u64> = Slots::default();
        let mut model = std::collections::HashMap::new();
        let mut x: u64 = 7;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = Bytes::from(format!("k{}", (x >> 33) % 500));
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(s.remove(&key), model.remove(&key));
            } else {
                assert_eq!(s.insert(key.clone(), step), model.insert(key, step));
            }
            assert_eq!(s.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(s.get(k), Some(v));
            let i = s.find(k).expect("present");
            assert_eq!(s.at(i), Some((k, v)));
        }
        let mut seen = 0;
        let mut cursor = 0;
        loop {
            cursor = s.scan(cursor, 7, |_, _| seen += 1);
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen, model.len());
        let keys: Vec<Bytes> = model.keys().cloned().collect();
        for k in keys {
            s.remove(&k);
        }
        assert!(s.is_empty());
        assert_eq!(s.capacity(), 0);
        assert!(s.random(3).is_none());
    }
}
