//! Checkpoint files: a snapshot body (opaque bytes from the caller) plus
//! the commit-log sequence number it covers, written atomically with
//! temp file + fsync + rename + directory fsync.
//!
//! File name: `checkpoint-<covered_seq, 20 digits>.ckpt`, in the commit-log
//! directory; while being written: the same name + `.tmp`. Layout (all
//! integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic        b"FERRCKPT"
//! 8       1     format       checkpoint file format version, 1
//! 9       1     body_version the caller's version byte for the body
//! 10      8     covered_seq  u64: every commit-log record <= this is in the body
//! 18      8     body_len     u64
//! 26      4     crc          CRC32 of bytes [0, 26) followed by the body
//! 30      body_len body      opaque
//! ```
//!
//! The file length must be exactly `30 + body_len`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, OpenMode};
use crate::error::{Result, StorageError};
use crate::segment::parse_20_digits;
use crate::writer::{CommitLog, SegmentInfo};

/// Magic bytes at the start of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"FERRCKPT";
/// Checkpoint file format version written by this crate.
pub const CHECKPOINT_FORMAT_V1: u8 = 1;
/// Size of the checkpoint header (everything before the body).
pub const CHECKPOINT_HEADER_LEN: usize = 30;

/// A checkpoint as loaded at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every commit-log record with `seq <= covered_seq` is reflected in
    /// `body`; replay starts at `covered_seq + 1`.
    pub covered_seq: u64,
    /// The caller's version byte, stored next to the body.
    pub body_version: u8,
    /// The caller's snapshot bytes.
    pub body: Vec<u8>,
    /// The file it was read from.
    pub file: PathBuf,
}

/// File name of the checkpoint covering `seq`.
pub fn checkpoint_file_name(seq: u64) -> String {
    format!("checkpoint-{seq:020}.ckpt")
}

/// Parse a checkpoint file name; `None` for any other name.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    parse_20_digits(digits)
}

/// True for the name of a temporary file left by an interrupted
/// checkpoint (or any other `*.tmp` in the log directory).
pub fn is_temp_name(name: &str) -> bool {
    name.ends_with(".tmp")
}

/// Encode a whole checkpoint file.
pub fn encode_checkpoint(covered_seq: u64, body_version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN + body.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.push(CHECKPOINT_FORMAT_V1);
    out.push(body_version);
    out.extend_from_slice(&covered_seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..26]);
    h.update(body);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode and verify a checkpoint file's bytes. Errors are
/// [`StorageError::Corrupt`] naming `file`.
pub fn decode_checkpoint(file: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason,
    };
    let Some(header) = bytes.get(..CHECKPOINT_HEADER_LEN) else {
        return Err(corrupt(
            0,
            format!("checkpoint file too short ({} bytes)", bytes.len()),
        ));
    };
    if header[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(0, "bad checkpoint magic".into()));
    }
    if header[8] != CHECKPOINT_FORMAT_V1 {
        return Err(corrupt(
            8,
            format!("unknown checkpoint format version {}", header[8]),
        ));
    }
    let body_version = header[9];
    let mut u = [0u8; 8];
    u.copy_from_slice(&header[10..18]);
    let covered_seq = u64::from_le_bytes(u);
    u.copy_from_slice(&header[18..26]);
    let body_len = u64::from_le_bytes(u);
    let mut c = [0u8; 4];
    c.copy_from_slice(&header[26..30]);
    let stored = u32::from_le_bytes(c);
    let body = &bytes[CHECKPOINT_HEADER_LEN..];
    if body.len() as u64 != body_len {
        return Err(corrupt(
            18,
            format!(
                "checkpoint body length {body_len} does not match the file ({} bytes of body)",
                body.len()
            ),
        ));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..26]);
    h.update(body);
    let computed = h.finalize();
    if computed != stored {
        return Err(corrupt(
            26,
            format!(
                "checkpoint checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"
            ),
        ));
    }
    Ok(Checkpoint {
        covered_seq,
        body_version,
        body: body.to_vec(),
        file: file.to_path_buf(),
    })
}

/// Read and verify the checkpoint file at `path`.
pub(crate) fn read_checkpoint(backend: &Arc<dyn Backend>, path: &Path) -> Result<Checkpoint> {
    let f = backend
        .open_file(path, OpenMode::Existing)
        .map_err(|e| StorageError::io("open", path, e))?;
    let len = f.len().map_err(|e| StorageError::io("stat", path, e))?;
    let len = usize::try_from(len).map_err(|_| StorageError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason: "checkpoint file too large".into(),
    })?;
    let mut bytes = vec![0u8; len];
    f.read_at(0, &mut bytes)
        .map_err(|e| StorageError::io("read", path, e))?;
    let cp = decode_checkpoint(path, &bytes)?;
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_checkpoint_name);
    if named != Some(cp.covered_seq) {
        return Err(StorageError::Corrupt {
            file: path.to_path_buf(),
            offset: 10,
            reason: format!(
                "checkpoint covers seq {} but its file name says {named:?}",
                cp.covered_seq
            ),
        });
    }
    Ok(cp)
}

/// Which step of [`write_checkpoint_file`] failed: a failure before the
/// rename leaves the previous checkpoint in force; a failed directory
/// fsync leaves it unknown which one survives a power loss.
#[derive(Debug)]
pub(crate) enum CheckpointWriteError {
    /// Failed before the rename; the temp file was removed (best effort).
    BeforeRename(StorageError),
    /// The rename or the directory fsync failed.
    Directory(StorageError),
}

/// Write a checkpoint atomically; returns the final path.
///
/// 1. write `checkpoint-N.ckpt.tmp` (created or truncated);
/// 2. `fdatasync` it — the bytes are durable before any name points at them;
/// 3. rename it to `checkpoint-N.ckpt` — atomic: a reader sees the old state
///    or the complete new file, never a partial one;
/// 4. fsync the directory — the rename itself is durable.
///
/// A crash before 3 leaves a `.tmp` that open deletes; a crash between 3 and
/// 4 leaves either the old or the new checkpoint, both complete and both
/// consistent with the log (the log was fsynced through N first).
pub(crate) fn write_checkpoint_file(
    backend: &Arc<dyn Backend>,
    dir: &Path,
    covered_seq: u64,
    body_version: u8,
    body: &[u8],
) -> std::result::Result<PathBuf, CheckpointWriteError> {
    let name = checkpoint_file_name(covered_seq);
    let final_path = dir.join(&name);
    let tmp_path = dir.join(format!("{name}.tmp"));
    let bytes = encode_checkpoint(covered_seq, body_version, body);
    let write_tmp = || -> Result<()> {
        let f = backend
            .open_file(&tmp_path, OpenMode::CreateTruncate)
            .map_err(|e| StorageError::io("create", &tmp_path, e))?;
        f.write_at(0, &bytes)
            .map_err(|e| StorageError::io("write", &tmp_path, e))?;
        // IMPORTANT: the temp file's data must be durable before the rename
        // makes it reachable under the final name.
        f.sync_data()
            .map_err(|e| StorageError::io("fsync", &tmp_path, e))?;
        Ok(())
    };
    if let Err(e) = write_tmp() {
        let _ = backend.remove_file(&tmp_path);
        return Err(CheckpointWriteError::BeforeRename(e));
    }
    backend
        .rename(&tmp_path, &final_path)
        .map_err(|e| CheckpointWriteError::Directory(StorageError::io("rename", &tmp_path, e)))?;
    // IMPORTANT: fsync the directory so the rename survives power loss;
    // only after this may older checkpoints and log segments be deleted.
    backend
        .sync_dir(dir)
        .map_err(|e| CheckpointWriteError::Directory(StorageError::io("fsync dir", dir, e)))?;
    Ok(final_path)
}

/// What [`CommitLog::checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The sequence number the new checkpoint covers.
    pub covered_seq: u64,
    /// The new checkpoint file.
    pub file: PathBuf,
    /// Commit-log segments deleted because every record in them is covered.
    pub removed_segments: Vec<PathBuf>,
    /// Older checkpoint files deleted.
    pub removed_checkpoints: Vec<PathBuf>,
}

impl CommitLog {
    /// Write a checkpoint: `body` (the caller's snapshot, opaque here,
    /// tagged with `body_version`) reflects every record with
    /// `seq <= covered_seq`. Then delete older checkpoints and every segment
    /// whose records are all `<= covered_seq` (never the active one), so
    /// trimming the log frees disk.
    ///
    /// Steps: (1) `sync()` the log, so the log is durable through
    /// `covered_seq` before any checkpoint claims it; (2) write the file
    /// atomically (temp + fdatasync + rename + directory fsync); (3) delete
    /// the old files and fsync the directory. Blocks the calling thread for
    /// all of it: call it from a background thread, not an async task.
    /// Appends continue concurrently.
    ///
    /// Errors: [`StorageError::InvalidArgument`] if `covered_seq` was never
    /// appended or is below the previous checkpoint. A failure while writing
    /// the temp file returns the error and leaves the previous checkpoint in
    /// force (the log is not poisoned). A failed rename or directory fsync
    /// poisons the log (the directory's state is then unknown). If deleting
    /// old files fails, the new checkpoint is still in force and the next
    /// open finishes the cleanup.
    pub fn checkpoint(
        &self,
        covered_seq: u64,
        body_version: u8,
        body: &[u8],
    ) -> Result<CheckpointReport> {
        self.checkpoint_verified(covered_seq, body_version, body, &|_| Ok(()))
    }

    /// [`CommitLog::checkpoint`], with the new file read back from disk and
    /// handed to `verify` (the caller decodes the body) before anything
    /// older is deleted. If reading or `verify` fails, the new file is
    /// removed, nothing else is touched, and the error says why: the
    /// previous checkpoint stays in force.
    ///
    /// Two slots (redb's idea): after a verified checkpoint, the one before
    /// it is kept too, with every log segment after it, so that recovery
    /// can fall back to it if the newest one later proves unreadable
    /// ([`crate::Recovery::fall_back`]). What only older checkpoints needed
    /// is deleted.
    pub fn checkpoint_verified(
        &self,
        covered_seq: u64,
        body_version: u8,
        body: &[u8],
        verify: &dyn Fn(&Checkpoint) -> std::result::Result<(), String>,
    ) -> Result<CheckpointReport> {
        let shared = &self.shared;
        let mut last = shared.checkpoint.lock();
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let next = self.next_seq();
        if covered_seq >= next {
            return Err(StorageError::InvalidArgument(format!(
                "checkpoint covers seq {covered_seq} but the last appended seq is {}",
                next - 1
            )));
        }
        if covered_seq < *last {
            return Err(StorageError::InvalidArgument(format!(
                "checkpoint covers seq {covered_seq}, below the previous checkpoint ({})",
                *last
            )));
        }
        // IMPORTANT: the log must be durable through covered_seq before a
        // checkpoint claiming it exists; otherwise a power loss could leave
        // the checkpoint ahead of the log, and records appended after the
        // restart would leave a hole in the sequence.
        self.sync()?;
        let backend = &shared.backend;
        let file =
            match write_checkpoint_file(backend, &shared.dir, covered_seq, body_version, body) {
                Ok(p) => p,
                Err(CheckpointWriteError::BeforeRename(e)) => return Err(e),
                Err(CheckpointWriteError::Directory(e)) => return Err(shared.poison(e)),
            };
        // IMPORTANT: read the file back and let the caller decode it before
        // anything older goes: an encoder/decoder mismatch must cost this
        // checkpoint, never the data.
        let checked = read_checkpoint(backend, &file)
            .map_err(|e| e.to_string())
            .and_then(|cp| verify(&cp));
        if let Err(why) = checked {
            let _ = backend.remove_file(&file);
            backend
                .sync_dir(&shared.dir)
                .map_err(|e| shared.poison(StorageError::io("fsync dir", &shared.dir, e)))?;
            return Err(StorageError::Corrupt {
                file,
                offset: 0,
                reason: format!(
                    "the checkpoint did not read back ({why}); it was removed and the previous one stays in force"
                ),
            });
        }
        *last = covered_seq;

        // Clean up: keep this checkpoint and the one before it (and the log
        // after that one); delete the rest. Both are durable, so a crash
        // from here on only leaves files that the next open deletes.
        let mut removed_checkpoints = Vec::new();
        let entries = backend
            .list_dir(&shared.dir)
            .map_err(|e| StorageError::io("list dir", &shared.dir, e))?;
        let mut older: Vec<u64> = entries
            .iter()
            .filter_map(|e| parse_checkpoint_name(&e.name))
            .filter(|&seq| seq < covered_seq)
            .collect();
        older.sort_unstable();
        let previous = older.pop();
        for seq in older {
            let p = shared.dir.join(checkpoint_file_name(seq));
            backend
                .remove_file(&p)
                .map_err(|e| StorageError::io("remove", &p, e))?;
            removed_checkpoints.push(p);
        }
        let keep_after = previous.unwrap_or(covered_seq);
        let victims: Vec<SegmentInfo> = {
            let mut segs = shared.segments.lock();
            let mut n = 0;
            // Segment n is wholly covered if the next one starts at or
            // before keep_after + 1. The last (active) one always stays.
            while n + 1 < segs.len() && segs[n + 1].base <= keep_after.saturating_add(1) {
                n += 1;
            }
            segs.drain(..n).collect()
        };
        let mut removed_segments = Vec::new();
        for s in victims {
            backend
                .remove_file(&s.path)
                .map_err(|e| StorageError::io("remove", &s.path, e))?;
            removed_segments.push(s.path);
        }
        if !removed_segments.is_empty() || !removed_checkpoints.is_empty() {
            // IMPORTANT: fsync the directory so the deletions are durable
            // (not needed for correctness, since open deletes them again,
            // but a failure here means the directory is in doubt: poison).
            backend
                .sync_dir(&shared.dir)
                .map_err(|e| shared.poison(StorageError::io("fsync dir", &shared.dir, e)))?;
        }
        Ok(CheckpointReport {
            covered_seq,
            file,
            removed_segments,
            removed_checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let p = Path::new("checkpoint-00000000000000000007.ckpt");
        let bytes = encode_checkpoint(7, 3, b"body");
        let cp = decode_checkpoint(p, &bytes).unwrap();
        assert_eq!(
            (cp.covered_seq, cp.body_version, &cp.body[..]),
            (7, 3, &b"body"[..])
        );
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_checkpoint(p, &b).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_checkpoint(p, &bytes[..cut]).is_err());
        }
        assert_eq!(
            parse_checkpoint_name("checkpoint-00000000000000000007.ckpt"),
            Some(7)
        );
        assert!(is_temp_name("checkpoint-00000000000000000007.ckpt.tmp"));
    }
}
