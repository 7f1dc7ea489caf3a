//! # ferrite-storage
//!
//! Durable storage for Ferrite: one commit log for every mutation, with
//! group commit and Redis's `appendfsync` policies; atomic checkpoints;
//! crash recovery; and per-stream segment files for sealed stream blocks.
//! Synchronous std I/O only (no tokio, no RESP). The on-disk format, the
//! crash-safety argument and what is *not* done here are in
//! `docs/storage.md`.
//!
//! Where to start reading:
//! - [`Recovery`] / [`CommitLog::open`]: open a log directory, replay it.
//! - [`CommitLog`]: `append_with` (callback), `append` (blocking handle),
//!   `append_batch`, `append_deferred` + `kick` + `when_acked` (a server's
//!   cheap path: one wake-up and one wait per group of records), `sync`,
//!   `checkpoint`, `close`.
//! - [`AppendFsync`]: `always | everysec | no`, and what each survives.
//! - [`StreamStore`]: append sealed stream blocks (LZ4-compressed,
//!   transparently), read them back, delete whole segment files when
//!   trimmed or no longer referenced by a checkpoint.
//! - [`Backend`]: the file-system trait; [`FsBackend`] is the real one,
//!   [`sim::SimBackend`] injects I/O errors, ENOSPC and power loss.
//!
//! Modules by job: [`frame`] (record codec), [`block_codec`] (the body of
//! a stream-block frame: IDs, codec, LZ4), [`segment`] (segment naming and
//! reading), [`writer`] (writer thread, group commit, `everysec` fsync
//! thread), [`recovery`],
//! [`checkpoint`], [`stream_segments`], [`backend`], [`sim`], [`config`],
//! [`error`].
//!
//! A minimal session:
//!
//! ```
//! use ferrite_storage::{sim::SimBackend, AppendFsync, CommitLog, LogOptions};
//!
//! let disk = SimBackend::new();
//! let opts = LogOptions::new(AppendFsync::Always);
//! let (log, _report) = CommitLog::open(disk.shared(), "/data/log", opts.clone(), |_| Ok(()), |_, _| Ok(()))?;
//! let seq = log.append(b"XADD s * f v".to_vec())?.wait()?; // durable when this returns
//! log.close()?;
//!
//! let mut replayed = Vec::new();
//! let (_log, report) = CommitLog::open(disk.shared(), "/data/log", opts, |_| Ok(()), |s, p| {
//!     replayed.push((s, p.to_vec()));
//!     Ok(())
//! })?;
//! assert_eq!(replayed, vec![(seq, b"XADD s * f v".to_vec())]);
//! assert_eq!(report.last_seq, seq);
//! # Ok::<(), ferrite_storage::StorageError>(())
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod block_codec;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod frame;
pub mod recovery;
pub mod segment;
pub mod sim;
pub mod stream_segments;
pub mod thread_priority;
pub mod writer;

pub use backend::{Backend, BackendFile, DirEntry, FileMap, FsBackend, FsSync, OpenMode};
pub use checkpoint::{Checkpoint, CheckpointReport};
pub use config::{AppendFsync, Clock, LogOptions, ManualClock, SystemClock};
pub use error::StorageError;
pub use recovery::{Record, Recovery, RecoveryReport, Truncation, TruncationKind};
pub use stream_segments::{
    BlockLocation, EntryId, ScannedBlock, SegmentScan, StoredBlock, StreamKeyId, StreamSegment,
    StreamStore, StreamStoreOptions,
};
pub use writer::{AppendHandle, CommitLog, Completion, LogStats, MAX_RECORD_LEN};
