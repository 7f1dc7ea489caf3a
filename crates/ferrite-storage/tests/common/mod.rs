//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferrite_storage::sim::SimBackend;
use ferrite_storage::{Backend, Checkpoint, CommitLog, LogOptions, RecoveryReport, StorageError};

/// The log directory used on simulated disks.
pub const LOG_DIR: &str = "/data/log";

pub fn log_dir() -> PathBuf {
    PathBuf::from(LOG_DIR)
}

/// The stream id the `StreamStore` tests use.
pub const KEY: ferrite_storage::StreamKeyId = ferrite_storage::StreamKeyId(0x2a);

/// The stream-segment root used on simulated disks.
pub fn root() -> PathBuf {
    PathBuf::from("/data/streams")
}

/// A `StreamStore` with small segments (a few blocks each) on `disk`.
pub fn store(disk: &SimBackend) -> ferrite_storage::StreamStore {
    store_with_spares(
        disk,
        ferrite_storage::StreamStoreOptions::default().spare_files,
    )
}

/// [`store`], keeping at most `spare_files` deleted segment files as spares.
pub fn store_with_spares(disk: &SimBackend, spare_files: usize) -> ferrite_storage::StreamStore {
    ferrite_storage::StreamStore::open(
        disk.shared(),
        root(),
        ferrite_storage::StreamStoreOptions {
            segment_max_bytes: 300,
            spare_files,
        },
    )
    .unwrap()
}

/// Everything an open returned.
#[derive(Debug)]
pub struct Opened {
    pub log: CommitLog,
    pub report: RecoveryReport,
    pub checkpoint: Option<Checkpoint>,
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Open `dir` on `backend`, collecting the checkpoint and replayed records.
pub fn open_at(
    backend: std::sync::Arc<dyn Backend>,
    dir: &Path,
    opts: LogOptions,
) -> Result<Opened, StorageError> {
    let mut checkpoint = None;
    let mut records = Vec::new();
    let (log, report) = CommitLog::open(
        backend,
        dir,
        opts,
        |cp| {
            checkpoint = Some(cp.clone());
            Ok(())
        },
        |seq, payload| {
            records.push((seq, payload.to_vec()));
            Ok(())
        },
    )?;
    Ok(Opened {
        log,
        report,
        checkpoint,
        records,
    })
}

/// Open the standard log directory on a simulated disk.
pub fn open_sim(disk: &SimBackend, opts: LogOptions) -> Result<Opened, StorageError> {
    open_at(disk.shared(), &log_dir(), opts)
}

/// Deterministic payload for record number `i`, of varying length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7 % 23) as usize;
    let mut v = format!("rec{i}:").into_bytes();
    v.extend((0..len).map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8)));
    v
}

/// A small deterministic PRNG (xorshift64*), so no test depends on `rand`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A unique temporary directory under `std::env::temp_dir()`, removed on
/// drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "ferrite-storage-test-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names of the `*.log` segment files in the simulated log dir.
pub fn sim_segments(disk: &SimBackend) -> Vec<String> {
    disk.list_files(&log_dir())
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect()
}

/// A test's checkpoint body: a version byte, then the state hand-encoded
/// (u32 count; per item its fields, byte strings as u32 length + bytes).
pub trait Body: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(b: &mut &[u8]) -> Option<Self>;
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn get_u32(b: &mut &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
}

fn get_bytes(b: &mut &[u8]) -> Option<Vec<u8>> {
    let n = get_u32(b)?;
    Some(take(b, n)?.to_vec())
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

impl Body for Vec<(u64, Vec<u8>)> {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for (seq, p) in self {
            out.extend_from_slice(&seq.to_le_bytes());
            put_bytes(out, p);
        }
    }
    fn get(b: &mut &[u8]) -> Option<Self> {
        let n = get_u32(b)?;
        let mut v = Vec::new();
        for _ in 0..n {
            let seq = u64::from_le_bytes(take(b, 8)?.try_into().ok()?);
            v.push((seq, get_bytes(b)?));
        }
        Some(v)
    }
}

impl Body for Vec<Vec<u8>> {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        for p in self {
            put_bytes(out, p);
        }
    }
    fn get(b: &mut &[u8]) -> Option<Self> {
        let n = get_u32(b)?;
        (0..n).map(|_| get_bytes(b)).collect()
    }
}

/// `[version] ++ body` of `value`.
pub fn encode_versioned<T: Body>(version: u8, value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![version];
    value.put(&mut out);
    Ok(out)
}

/// The value of a body made by [`encode_versioned`], its version checked.
pub fn decode_versioned<T: Body>(version: u8, bytes: &[u8]) -> Result<T, String> {
    let Some((&v, mut rest)) = bytes.split_first() else {
        return Err("empty body".into());
    };
    if v != version {
        return Err(format!("body version {v}, expected {version}"));
    }
    let value = T::get(&mut rest).ok_or("truncated body")?;
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(value)
}
