//! The value types beside streams, each in its own file with its in-memory
//! encodings (compact ones for small values, as Redis's listpacks and
//! intsets) and its persisted form (checkpoint snapshot bytes). Streams
//! live in `ferrite-streams`.

pub mod hash;
pub mod list;
pub mod set;
pub mod zset;
