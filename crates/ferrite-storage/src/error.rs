//! The crate's error type, [`StorageError`].
//!
//! Every fallible public function returns `Result<_, StorageError>`. The
//! enum is hand-written (no `thiserror`) and `Clone`, because one failed
//! write or fsync has to be reported to every producer whose record was in
//! the failed batch; `std::io::Error` is not `Clone`, so it is kept behind an
//! `Arc`.
//!
//! Mapping for the server (its job, not this crate's):
//! - [`StorageError::Poisoned`] and [`StorageError::Io`] on an append ->
//!   a Redis `MISCONF`-style error reply (writes refused until restart).
//! - [`StorageError::NoSpace`] -> an error reply naming the full disk.
//! - [`StorageError::Corrupt`] at open -> refuse to start, print the message
//!   (it names the file and byte offset) and suggest the `repair` option.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors returned by ferrite-storage.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O call failed. `op` names the call (`"write"`, `"fsync"`, ...),
    /// `path` the file or directory it was made on.
    Io {
        /// The operation that failed, e.g. `"fsync"`.
        op: &'static str,
        /// The file or directory the operation was made on.
        path: PathBuf,
        /// The underlying error.
        source: Arc<io::Error>,
    },
    /// A write failed because the device is full (ENOSPC / EDQUOT). Records
    /// acknowledged before it are not lost; the log is poisoned like after
    /// any failed write.
    NoSpace {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying error.
        source: Arc<io::Error>,
    },
    /// A previous write or fsync failed, so the log (or stream store) is in
    /// a failed state and refuses every further mutation. The only way out is
    /// to drop it and open it again (recovery then finds out what is really
    /// on disk). `cause` is the first error.
    Poisoned {
        /// The error that poisoned the log.
        cause: Arc<StorageError>,
    },
    /// On-disk data is corrupt in a way that recovery will not fix by itself:
    /// a bad record followed by valid ones ("mid-log corruption"), a gap in
    /// the sequence numbers, an unreadable checkpoint. Opening again with
    /// `LogOptions::repair = true` truncates at `offset` instead (commit log
    /// only; a corrupt checkpoint is never repaired automatically).
    Corrupt {
        /// The file containing the bad data.
        file: PathBuf,
        /// Byte offset of the first bad byte (frame start) in `file`.
        offset: u64,
        /// Human-readable reason, e.g. "checksum mismatch".
        reason: String,
    },
    /// A payload larger than the configured maximum record size.
    RecordTooLarge {
        /// Length of the rejected payload in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The log (or store) was closed; no further operations are accepted.
    Closed,
    /// The caller passed an argument that cannot be honoured (documented on
    /// each function that returns it).
    InvalidArgument(String),
}

impl StorageError {
    /// Build an [`StorageError::Io`] or, for ENOSPC/EDQUOT,
    /// [`StorageError::NoSpace`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            StorageError::NoSpace {
                path,
                source: Arc::new(source),
            }
        } else {
            StorageError::Io {
                op,
                path,
                source: Arc::new(source),
            }
        }
    }

    /// Wrap `self` as the cause of a [`StorageError::Poisoned`] (an already
    /// poisoned error is returned unchanged).
    pub fn into_poisoned(self) -> Self {
        match self {
            StorageError::Poisoned { .. } => self,
            other => StorageError::Poisoned {
                cause: Arc::new(other),
            },
        }
    }

    /// True for [`StorageError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        matches!(self, StorageError::Poisoned { .. })
    }

    /// True for [`StorageError::NoSpace`], also when it is the cause of a
    /// [`StorageError::Poisoned`].
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::NoSpace { .. } => true,
            StorageError::Poisoned { cause } => cause.is_no_space(),
            _ => false,
        }
    }
}

/// True if `e` means "the device (or quota) is full".
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            StorageError::NoSpace { path, source } => {
                write!(
                    f,
                    "no space left on device writing {}: {source}",
                    path.display()
                )
            }
            StorageError::Poisoned { cause } => write!(
                f,
                "storage is in a failed state after an earlier I/O error ({cause}); \
                 writes are refused until the log is reopened"
            ),
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at byte offset {offset}: {reason}",
                file.display()
            ),
            StorageError::RecordTooLarge { len, max } => {
                write!(
                    f,
                    "record of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            StorageError::Closed => write!(f, "storage is closed"),
            StorageError::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } | StorageError::NoSpace { source, .. } => {
                Some(source.as_ref())
            }
            StorageError::Poisoned { cause } => Some(cause.as_ref()),
            _ => None,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
