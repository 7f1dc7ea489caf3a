//! Key expiry: the keys of a database that have a time to live, expired
//! lazily before a command touches them ([`expire_if_needed`], called for
//! every key of every command in `cmd::run`) and actively in the
//! background ([`active_cycle`]), as Redis does.
//!
//! Deterministic replay (docs/storage.md §13.2): expiry times are absolute
//! milliseconds in the commit log and in checkpoints; an expired key's
//! deletion is logged as `DEL key` before the effects of the command that
//! noticed it; and nothing expires while the log is replayed
//! (`Store::loading`), as in Redis while it loads its AOF. So replay sees
//! every key exactly as the original commands saw it, and a key that
//! expired while the server was down is deleted right after recovery.

use crate::store::Store;
use bytes::Bytes;
use std::collections::HashMap;

/// The keys of one database that have an expiry, indexed so that a random
/// one can be sampled in O(1) (a vector plus each key's place in it).
#[derive(Debug, Default)]
pub struct Expires {
    keys: Vec<Bytes>,
    /// key -> (place in `keys`, expiry in ms since the epoch).
    at: HashMap<Bytes, (usize, u64)>,
}

impl Expires {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// When `key` expires (absolute ms), if it has an expiry.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.at.get(key).map(|e| e.1)
    }
    pub fn set(&mut self, key: Bytes, when: u64) {
        if let Some(e) = self.at.get_mut(&key) {
            e.1 = when;
            return;
        }
        self.at.insert(key.clone(), (self.keys.len(), when));
        self.keys.push(key);
    }
    /// Remove `key`'s expiry; whether it had one.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let Some((i, _)) = self.at.remove(key) else {
            return false;
        };
        self.keys.swap_remove(i);
        if let Some(moved) = self.keys.get(i) {
            if let Some(e) = self.at.get_mut(moved) {
                e.0 = i;
            }
        }
        true
    }
    /// The key at `seed` modulo the count (for sampling).
    pub fn nth(&self, seed: u64) -> Option<(&Bytes, u64)> {
        if self.keys.is_empty() {
            return None;
        }
        let k = &self.keys[(seed % self.keys.len() as u64) as usize];
        self.at.get(k).map(|e| (k, e.1))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, u64)> {
        self.keys
            .iter()
            .filter_map(|k| self.at.get(k).map(|e| (k, e.1)))
    }
}

/// Whether a key expiring at `when` is expired at `now` (Redis: `now > when`).
pub fn is_expired(when: u64, now: u64) -> bool {
    now > when
}

/// Delete `key` from `db` if its time has passed: it is logged as `DEL key`
/// (before the effects of the command that noticed it), WATCHes on it are
/// broken and its observers told. Nothing expires while the log is
/// replayed. Returns whether the key was deleted.
pub fn expire_if_needed(store: &mut Store, db: usize, key: &[u8], now: u64) -> bool {
    if store.loading {
        return false;
    }
    let Some(d) = store.dbs.get(db) else {
        return false;
    };
    match d.expiry(key) {
        Some(when) if is_expired(when, now) => {}
        _ => return false,
    }
    delete_expired(store, db, key);
    true
}

fn delete_expired(store: &mut Store, db: usize, key: &[u8]) {
    store.dbs[db].remove(key);
    store.touch(db, key);
    store.log_effect_parts::<&[u8]>(db, &[b"DEL", key], &[]);
    store.stats.expired_keys += 1;
    store.notify(crate::pubsub::NOTIFY_EXPIRED, "expired", key, db);
}

/// Keys sampled per database per round of the active cycle (Redis's
/// ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP).
const SAMPLE: usize = 20;

/// One run of the background expiry (Redis's `activeExpireCycle`, slow
/// mode): in each database, sample keys that have an expiry and delete the
/// expired ones; repeat while more than a quarter of a sample was expired
/// and `budget` is not used up. The caller holds the store lock (the
/// budget bounds that hold) and commits the logged deletions as one
/// record. Returns how many keys it deleted.
pub fn active_cycle(store: &mut Store, now: u64, budget: std::time::Duration) -> usize {
    if store.loading || !store.active_expire {
        return 0;
    }
    let started = std::time::Instant::now();
    let mut deleted = 0;
    for db in 0..store.dbs.len() {
        loop {
            let n = store.dbs[db].expires().len();
            if n == 0 {
                break;
            }
            let mut expired = Vec::new();
            for _ in 0..SAMPLE.min(n) {
                let seed = store.next_random();
                if let Some((k, when)) = store.dbs[db].expires().nth(seed) {
                    if is_expired(when, now) && !expired.contains(k) {
                        expired.push(k.clone());
                    }
                }
            }
            for k in &expired {
                delete_expired(store, db, k);
            }
            deleted += expired.len();
            if expired.len() * 4 <= SAMPLE.min(n) || started.elapsed() >= budget {
                break;
            }
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    deleted
}

/// Run [`active_cycle`] on `shared`'s store for at most `budget` of lock
/// hold and commit the deletions as one commit-log record (the server calls
/// this ten times a second, Redis's `hz`).
pub fn run_active(
    shared: &std::sync::Arc<crate::shared::Shared>,
    budget: std::time::Duration,
) -> usize {
    let now = crate::shared::now_ms();
    let mut store = shared.store.lock();
    if store.dbs.iter().all(|d| d.expires().is_empty()) {
        return 0;
    }
    let ran = crate::cmd::guarded(shared, &mut store, |store| active_cycle(store, now, budget));
    drop(store);
    crate::persist::kick(shared);
    ran.map_or(0, |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_swap_removals() {
        let mut e = Expires::default();
        for i in 0..10u64 {
            e.set(Bytes::from(format!("k{i}")), i);
        }
        assert!(e.remove(b"k3"));
        assert!(!e.remove(b"k3"));
        assert_eq!(e.len(), 9);
        for i in 0..10u64 {
            let want = (i != 3).then_some(i);
            assert_eq!(e.get(format!("k{i}").as_bytes()), want);
        }
        let mut seen: Vec<u64> = (0..9).filter_map(|s| e.nth(s).map(|x| x.1)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        e.set(Bytes::from("k0"), 100);
        assert_eq!(e.get(b"k0"), Some(100));
        assert_eq!(e.len(), 9);
    }
}
