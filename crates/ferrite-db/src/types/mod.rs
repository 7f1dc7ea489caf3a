//! The value types beside streams, each in its own file with its in-memory
//! encodings (compact ones for small values, as Redis's listpacks and
//! intsets) and its persisted form (checkpoint snapshot bytes). Streams
//! live in `ferrite-streams`.

use crate::store::Value;
use bytes::Bytes;
use ferrite_streams::snapshot::{put_bytes, Insert, Reader, SnapshotState};
use ferrite_streams::{BlockCache, Stream};
use std::sync::Arc;

mod codec;
pub mod cow;
pub mod hash;
pub mod list;
pub mod set;
pub mod slots;
pub mod zset;

/// A value's type tag in a checkpoint body. A new type adds its tag here
/// and its own encode/decode in its file; nothing else in the checkpoint
/// format changes.
mod tag {
    pub const STRING: u8 = 0;
    pub const STREAM: u8 = 1;
    pub const HASH: u8 = 2;
    pub const SET: u8 = 4;
    pub const ZSET: u8 = 5;
    pub const LIST: u8 = 3;
}

impl Value {
    /// Append `u8 tag` and the value's own persisted form to a checkpoint
    /// body (`st` collects what streams store beside it).
    pub fn write_snapshot(&mut self, out: &mut Vec<u8>, st: &mut SnapshotState) {
        match self {
            Value::String(s) => {
                out.push(tag::STRING);
                put_bytes(out, s);
            }
            Value::Stream(s) => {
                out.push(tag::STREAM);
                s.write_snapshot(out, st);
            }
            Value::Hash(h) => {
                out.push(tag::HASH);
                match h.share_cold() {
                    Some(shared) => st.insert(
                        out.len(),
                        Insert::Encode(Box::new(move |o| shared.encode(o))),
                    ),
                    None => h.encode(out),
                }
            }
            // Large sets, sorted sets and lists as large hashes: shared
            // copy on write, encoded by `Snapshot::assemble` off the lock
            // (hashes, sets and sorted sets unless written often since the
            // last snapshot: `cow::CowBody::take_hot`).
            Value::Set(v) => {
                out.push(tag::SET);
                match v.share_cold() {
                    Some(shared) => st.insert(
                        out.len(),
                        Insert::Encode(Box::new(move |o| shared.encode(o))),
                    ),
                    None => v.encode(out),
                }
            }
            Value::ZSet(z) => {
                out.push(tag::ZSET);
                match z.share_cold() {
                    Some(shared) => st.insert(
                        out.len(),
                        Insert::Encode(Box::new(move |o| shared.encode(o))),
                    ),
                    None => z.encode(out),
                }
            }
            Value::List(l) => {
                out.push(tag::LIST);
                match l.share() {
                    Some(shared) => st.insert(
                        out.len(),
                        Insert::Encode(Box::new(move |o| shared.encode(o))),
                    ),
                    None => l.encode(out),
                }
            }
        }
    }

    /// Read what [`Value::write_snapshot`] wrote (checkpoint body `version`;
    /// `key` names it in errors). An unknown tag is an error, never a skip.
    pub fn read_snapshot(
        r: &mut Reader<'_>,
        version: u8,
        key: &[u8],
        cache: Option<&Arc<BlockCache>>,
        next_storage_id: u64,
    ) -> Result<Value, String> {
        Ok(match r.u8()? {
            tag::STRING => Value::String(Bytes::copy_from_slice(r.bytes()?)),
            tag::STREAM => Value::Stream(Box::new(Stream::read_snapshot(
                r,
                version,
                key,
                cache,
                next_storage_id,
            )?)),
            tag::HASH => Value::Hash(Box::new(r.with_rest(hash::Hash::decode)?)),
            tag::SET => Value::Set(Box::new(r.with_rest(set::Set::decode)?)),
            tag::ZSET => Value::ZSet(Box::new(r.with_rest(zset::ZSet::decode)?)),
            tag::LIST => Value::List(Box::new(r.with_rest(list::List::decode)?)),
            k => return Err(format!("unknown value kind {k} for key {key:?}")),
        })
    }
}
