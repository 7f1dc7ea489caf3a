//! The set type. Sets of integers only (at most `set-max-intset-entries`)
//! are a sorted vector of i64 (Redis's intset: SMEMBERS returns them in
//! ascending order); others a hash set.

use bytes::Bytes;
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub enum Set {
    Intset(Vec<i64>),
    Table(HashSet<Bytes>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Intset(Vec::new())
    }
}
