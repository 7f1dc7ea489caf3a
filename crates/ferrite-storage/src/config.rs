//! Durability policy ([`AppendFsync`]), commit-log options
//! ([`LogOptions`]) and the injectable clock ([`Clock`], [`SystemClock`],
//! [`ManualClock`]) that drives the `everysec` policy.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::frame::{LOG_BODY_MIN, MAX_BODY_LEN};

/// When the commit log calls `fdatasync`, with Redis's `appendfsync` names
/// and meaning. "Acknowledged" below means: the append's completion fired
/// with `Ok(seq)` (the server replies to the client only after that).
///
/// Every policy survives a **process crash** (kill -9, panic, OOM kill) for
/// every acknowledged record: a record is acknowledged only after its bytes
/// were handed to the kernel with `pwrite`, and the page cache outlives the
/// process. The policies differ on **power loss / kernel crash**.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AppendFsync {
    /// `appendfsync always`: a record is acknowledged only after an
    /// `fdatasync` that covers it returned successfully. Survives power
    /// loss: nothing acknowledged is ever lost. Concurrent producers share
    /// one fsync (group commit), so the cost is one fsync per batch, not per
    /// record.
    Always,
    /// `appendfsync everysec` (the default, as in Redis): a record is
    /// acknowledged once written to the kernel; a separate fsync thread
    /// fsyncs about once per interval (1 s by default), so neither appends
    /// nor completions wait for it. On power loss, the records
    /// acknowledged in roughly the last one to two intervals may be lost
    /// (never a record before that, and what survives is always a prefix).
    #[default]
    EverySec,
    /// `appendfsync no`: a record is acknowledged once written to the
    /// kernel, and the log never fsyncs on its own account; the kernel
    /// writes pages back when it likes (Linux: typically within ~30 s, with
    /// no guarantee). On power loss, anything written after the last fsync
    /// may be lost. The log still fsyncs when it seals a segment (so
    /// everything in a sealed segment is durable), on `sync()`, before a
    /// checkpoint and on a clean `close()`.
    No,
}

impl AppendFsync {
    /// The Redis config spelling: `always`, `everysec` or `no`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::EverySec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

impl fmt::Display for AppendFsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AppendFsync {
    type Err = StorageError;

    /// Parse `always`, `everysec` or `no`, ASCII case-insensitively (Redis
    /// accepts `CONFIG SET appendfsync EVERYSEC`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("always") {
            Ok(AppendFsync::Always)
        } else if s.eq_ignore_ascii_case("everysec") {
            Ok(AppendFsync::EverySec)
        } else if s.eq_ignore_ascii_case("no") {
            Ok(AppendFsync::No)
        } else {
            Err(StorageError::InvalidArgument(format!(
                "appendfsync must be one of always|everysec|no, got {s:?}"
            )))
        }
    }
}

/// A monotonic clock. The log reads it to decide when an `everysec` fsync
/// is due; tests inject a [`ManualClock`] so the policy is deterministic.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since an arbitrary fixed origin; never decreases.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`std::time::Instant`).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is "now".
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to. Share it with `Arc` between the
/// test and [`LogOptions::clock`].
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(n, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// Default segment size at which the log rolls to a new file: 64 MiB.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default [`LogOptions::preallocate_bytes`]: 1 MiB.
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 1024 * 1024;
/// Default largest payload accepted by `append`: 512 MiB (Redis's
/// `proto-max-bulk-len`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 512 * 1024 * 1024;

/// Options for opening a [`crate::CommitLog`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// When to fsync (default [`AppendFsync::EverySec`]).
    pub fsync: AppendFsync,
    /// Roll to a new segment file when the current one would exceed this
    /// many bytes (a record bigger than this gets a segment of its own).
    pub segment_max_bytes: u64,
    /// Largest payload accepted; larger ones fail with
    /// [`StorageError::RecordTooLarge`] without poisoning the log.
    pub max_record_bytes: usize,
    /// The `everysec` interval (default 1 s).
    pub everysec_interval: Duration,
    /// Open even if corruption is followed by valid records, truncating at
    /// the first bad byte and reporting what was dropped. Off by default:
    /// an operator decision, like `redis-check-aof --fix`.
    pub repair: bool,
    /// The clock the `everysec` policy reads.
    pub clock: Arc<dyn Clock>,
    /// Write this many zero bytes ahead of the active segment's last record
    /// whenever the records reach the end of the file (default 1 MiB, `0`
    /// turns it off): records then overwrite zeros instead of growing the
    /// file, so their `fdatasync` need not write the inode
    /// (docs/storage.md §3.5).
    pub preallocate_bytes: u64,
    /// Let [`crate::CommitLog::append_deferred_with`] copy its record
    /// straight into a writable mapping of those preallocated zeros, when
    /// the backend maps files (default on): no hand-off to the writer
    /// thread, and under `everysec`/`no` the record is acknowledged as soon
    /// as it is copied (docs/storage.md §3.6). Needs `preallocate_bytes`.
    pub mapped_writes: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: AppendFsync::default(),
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            everysec_interval: Duration::from_secs(1),
            repair: false,
            clock: Arc::new(SystemClock::new()),
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
            mapped_writes: true,
        }
    }
}

impl LogOptions {
    /// Defaults with the given fsync policy.
    pub fn new(fsync: AppendFsync) -> Self {
        LogOptions {
            fsync,
            ..Self::default()
        }
    }

    /// Check the options; called by `Recovery::open`.
    pub(crate) fn validate(&self) -> Result<(), StorageError> {
        if self.segment_max_bytes == 0 {
            return Err(StorageError::InvalidArgument(
                "segment_max_bytes must be > 0".into(),
            ));
        }
        if self.max_record_bytes > MAX_BODY_LEN - LOG_BODY_MIN {
            return Err(StorageError::InvalidArgument(format!(
                "max_record_bytes must be <= {}",
                MAX_BODY_LEN - LOG_BODY_MIN
            )));
        }
        if self.everysec_interval.is_zero() {
            return Err(StorageError::InvalidArgument(
                "everysec_interval must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appendfsync_round_trips_redis_names() {
        for p in [AppendFsync::Always, AppendFsync::EverySec, AppendFsync::No] {
            assert_eq!(p.to_string().parse::<AppendFsync>().unwrap(), p);
        }
        assert_eq!(
            "EVERYSEC".parse::<AppendFsync>().unwrap(),
            AppendFsync::EverySec
        );
        assert!("sometimes".parse::<AppendFsync>().is_err());
        assert_eq!(AppendFsync::default(), AppendFsync::EverySec);
    }
}
