//! The hash type: field → value. Small hashes are a flat vector in
//! insertion order (Redis's listpack: `OBJECT ENCODING` says `listpack`,
//! and HGETALL returns insertion order); larger ones a hash table.

use bytes::Bytes;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub enum Hash {
    /// At most `hash-max-listpack-entries` fields, each field and value at
    /// most `hash-max-listpack-value` bytes.
    Listpack(Vec<(Bytes, Bytes)>),
    Table(HashMap<Bytes, Bytes>),
}

impl Default for Hash {
    fn default() -> Self {
        Hash::Listpack(Vec::new())
    }
}
