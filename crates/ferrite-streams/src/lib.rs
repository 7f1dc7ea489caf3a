//! # ferrite-streams
//!
//! The stream data type with Redis 7.0 semantics, and nothing else: no I/O,
//! no tokio, no RESP. The server crate parses commands and calls into this
//! crate while holding the keyspace lock; every call here is synchronous and
//! bounded by the work it is asked to do.
//!
//! Where to start reading:
//! - [`id`]: `StreamId` and Redis's ID parsing rules.
//! - [`stream`]: [`Stream`], a sequence of blocks keyed by their master ID.
//!
//! CONTRACT (skeleton): the public signatures in this crate are what the
//! server and the consumer-group code are written against.

pub mod id;
pub mod stream;

pub use id::StreamId;
pub use stream::{Entry, Stream, StreamConfig};
