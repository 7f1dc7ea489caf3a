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

/// Strings of at least this many bytes are put into a checkpoint body off
/// the lock ([`Value::write_snapshot`]).
const SHARED_STRING: usize = 1024;

/// Appends `v` in its persisted form, or, given `shared` (a copy on write
/// of it), leaves a place that `Snapshot::assemble` fills off the lock.
fn encode_or_defer<T: Send + 'static>(
    out: &mut Vec<u8>,
    st: &mut SnapshotState,
    v: &T,
    shared: Option<T>,
    encode: fn(&T, &mut Vec<u8>),
) {
    match shared {
        Some(shared) => st.insert(
            out.len(),
            Insert::Encode(Box::new(move |o| encode(&shared, o))),
        ),
        None => encode(v, out),
    }
}

impl Value {
    /// Append `u8 tag` and the value's own persisted form to a checkpoint
    /// body (`st` collects what streams store beside it).
    pub fn write_snapshot(&mut self, out: &mut Vec<u8>, st: &mut SnapshotState) {
        match self {
            Value::String(s) => {
                out.push(tag::STRING);
                // A large string is taken by reference (its bytes never
                // change: a write makes new ones) and copied into the body
                // by `Snapshot::assemble`, off the lock: a checkpoint's
                // buffers then stay the size of its small values.
                let shared = (s.len() >= SHARED_STRING).then(|| s.clone());
                encode_or_defer(out, st, s, shared, |s, o| put_bytes(o, s));
            }
            Value::Stream(s) => {
                out.push(tag::STREAM);
                s.write_snapshot(out, st);
            }
            // Large hashes, sets, sorted sets and lists: shared copy on
            // write, encoded by `Snapshot::assemble` off the lock (hashes,
            // sets and sorted sets unless written often since the last
            // snapshot: `cow::CowBody::take_hot`).
            Value::Hash(h) => {
                out.push(tag::HASH);
                let shared = h.share_cold();
                encode_or_defer(out, st, &**h, shared, hash::Hash::encode);
            }
            Value::Set(v) => {
                out.push(tag::SET);
                let shared = v.share_cold();
                encode_or_defer(out, st, &**v, shared, set::Set::encode);
            }
            Value::ZSet(z) => {
                out.push(tag::ZSET);
                let shared = z.share_cold();
                encode_or_defer(out, st, &**z, shared, zset::ZSet::encode);
            }
            Value::List(l) => {
                out.push(tag::LIST);
                let shared = l.share();
                encode_or_defer(out, st, &**l, shared, list::List::encode);
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
