//! The stream: entries in blocks (Redis's listpack macro nodes).

use crate::id::StreamId;
use bytes::Bytes;

/// Block limits, read from the live config on every call (CONFIG SET changes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// `stream-node-max-entries` (Redis default 100; 0 = no limit).
    pub node_max_entries: u64,
    /// `stream-node-max-bytes` (Redis default 4096; 0 = no limit).
    pub node_max_bytes: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            node_max_entries: 100,
            node_max_bytes: 4096,
        }
    }
}

/// One entry as returned by reads: its ID and the flat field/value list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: StreamId,
    /// `[field1, value1, field2, value2, ...]`
    pub fields: Vec<Bytes>,
}

/// A stream value (skeleton: replaced by the real implementation).
#[derive(Debug, Default)]
pub struct Stream {
    len: u64,
}

impl Stream {
    pub fn new() -> Self {
        Stream::default()
    }
    /// Number of live entries (XLEN).
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Approximate heap bytes (skeleton).
    pub fn memory_usage(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}
