//! The sorted set type: members ordered by (score, member). Small ones
//! are a sorted vector (Redis's listpack); larger ones a member → score
//! map plus an ordered index (Redis's skiplist).

use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};

/// A score with a total order (scores are never NaN: commands refuse it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone)]
pub enum ZSet {
    /// Sorted by (score, member); at most `zset-max-listpack-entries`
    /// members of at most `zset-max-listpack-value` bytes.
    Listpack(Vec<(Score, Bytes)>),
    Skiplist {
        scores: HashMap<Bytes, Score>,
        order: BTreeSet<(Score, Bytes)>,
    },
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Listpack(Vec::new())
    }
}
