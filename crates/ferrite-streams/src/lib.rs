//! # ferrite-streams
//!
//! The stream data type with Redis 7.0 semantics, and nothing else: no I/O,
//! no tokio, no RESP. The server crate parses commands and calls into this
//! crate while holding the keyspace lock; every call here is synchronous and
//! bounded by the work it is asked to do.
//!
//! Where to start reading:
//! - [`id`]: [`StreamId`] and Redis's ID parsing rules (strict IDs, XADD IDs,
//!   range bounds with `(` exclusion), with typed errors.
//! - [`stream`]: [`Stream`]: add / range / delete / trim / XSETID, following
//!   Redis's algorithms so block counts and metadata match XINFO exactly.
//! - [`block`]: [`Block`], one compact byte buffer per Redis macro node;
//!   format in `docs/stream-blocks.md`.
//! - [`listpack`]: the byte size a Redis listpack would have, which decides
//!   when a block is full.
//! - [`group`]: consumer groups: the PEL, consumers, `entries-read` and lag.
//! - [`sealed`]: blocks a storage engine stored, evicted and read back on
//!   demand through a [`BlockSource`] (streams larger than RAM).
//! - [`snapshot`]: a stream's persisted form in a checkpoint (its blocks,
//!   stored or inline, and its consumer groups), written and read here so
//!   that no other crate needs the stream's internals.
//!
//! Errors are plain enums; the server owns the Redis error wording (each
//! variant's doc quotes the Redis reply it stands for).

#![forbid(unsafe_code)]

pub mod block;
pub mod group;
pub mod id;
pub mod listpack;
mod pel;
pub mod sealed;
pub mod snapshot;
pub mod stream;

pub use block::{Block, BlockError, EntryRef};
pub use group::{ConsumerId, Group, Groups, PendingEntry};
pub use id::{ParseIdError, RangeIdError, StreamId, XaddId};
pub use sealed::{BlockCache, BlockLoc, BlockSource, Fetched, Storage, TierBytes};
pub use stream::{
    AddError, Entry, RangeIter, SetIdError, Stream, StreamConfig, StreamMeta, Trim, TrimSpec,
};
