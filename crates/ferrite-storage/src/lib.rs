//! # ferrite-storage
//!
//! Durable storage for Ferrite: append-only segment files of CRC-checked
//! records, synchronous std I/O only (no tokio, no RESP). See `docs/storage.md`.
