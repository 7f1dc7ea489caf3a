//! The list type: a deque of byte strings (`OBJECT ENCODING` says
//! `quicklist`, as Redis 7.0 does for every list).

use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug, Clone, Default)]
pub struct List {
    pub items: VecDeque<Bytes>,
}
