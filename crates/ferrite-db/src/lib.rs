//! # ferrite-db
//!
//! Ferrite's database as a library: the keyspace, every command, the commit
//! path, replay and checkpoints. It has no sockets and no async runtime
//! (only tokio's runtime-free `sync` types, with which blocked clients,
//! CLIENT KILL and SHUTDOWN signal whatever network layer sits on top), so
//! an embedded user opens a database and runs commands in-process
//! ([`embedded::Session`]), and `ferrite-server` adds RESP and TCP.
//! Stream semantics live in `ferrite-streams`, bytes on disk in
//! `ferrite-storage`.
//!
//! Where to start reading:
//! - [`shared::Shared`]: one database's state: the [`store::Store`] behind
//!   one mutex that a command holds from start to end and never across an
//!   `.await`, the [`config::Config`], the commit log.
//! - [`cmd`]: the command table and one module per command family; a
//!   command line runs through [`cmd::execute`]. [`args::Args`] is the
//!   cursor every command parses its arguments with; [`error`] is the one
//!   place where errors get Redis's exact strings; [`reply::Reply`] is what
//!   a command answers, with its RESP2/RESP3 encodings.
//! - [`persist`]: the commit path, replay at start-up, and checkpoints.
//! - [`embedded::Session`]: a client without a socket.

pub mod args;
pub mod cmd;
pub mod config;
pub mod embedded;
pub mod error;
pub mod expire;
pub mod glob;
pub mod metrics;
pub mod persist;
pub mod pubsub;
pub mod reply;
pub mod shared;
pub mod store;
pub mod types;
