//! Per-stream segment files for sealed stream blocks: [`StreamStore`].
//!
//! A sealed block (opaque bytes from the stream layer, with the IDs of its
//! first and last entries) is appended to the current segment file of its
//! stream and located afterwards by a [`BlockLocation`] (segment number,
//! byte offset, frame length). The server keeps those locations in its
//! in-memory index and in its checkpoint; this module does not index
//! blocks itself.
//!
//! Layout: one flat directory, the store's root:
//!
//! ```text
//! <root>/<stream id, 16 lowercase hex digits>-<segment number, 20 digits>.blocks
//! <root>/spare-<number, 20 digits>        an empty file kept for a new segment
//! ```
//!
//! Flat, not a directory per stream: a stream's first stored block then
//! creates one inode, not two, and the store lists every stream's segments
//! with one read of the root when it opens (then keeps the list in memory:
//! only this process changes the directory). Creating inodes is
//! the expensive part of a first checkpoint over many streams (docs/storage.md
//! §8.2). Directories of the older layout (`<root>/<id>/<number>.blocks`)
//! are moved into the flat one at that listing, before any block is read.
//!
//! Streams are named by a numeric [`StreamKeyId`] that the server assigns to
//! each key (and records in its checkpoint), not by the key bytes: Redis keys
//! are binary and can be far longer than a file name. Each `.blocks` file is
//! a plain sequence of frames (see [`crate::frame`]), no file header. Blocks
//! are written as `KIND_STREAM_BLOCK_V2` frames: `first.ms, first.seq,
//! last.ms, last.seq` (u64 LE each), a codec byte, then the block bytes
//! LZ4-compressed (`raw_len: u32 LE` + LZ4 block data) or, when that is not
//! smaller, raw. Every byte is specified in [`crate::block_codec`]. Files
//! written before compression hold `KIND_STREAM_BLOCK_V1` frames (IDs, then
//! the raw bytes); they are still read, and a file may mix both kinds.
//! Compression is invisible to callers: [`StreamStore::read_block`] returns
//! the bytes given to [`StreamStore::append_block`], and a
//! [`BlockLocation`]'s `len` is the frame as stored.
//!
//! Rules:
//! - Blocks of one stream are appended in any ID order (a block changed by
//!   XDEL after it was stored is stored again, after newer blocks); the
//!   server's checkpoint is the index. Trimming frees disk by deleting whole
//!   segment files that no block of the last checkpoint lives in.
//! - A segment file is only ever appended to by the process that created
//!   it: after a restart the first append to a stream starts a new segment
//!   (number = highest existing + 1). So a torn tail left by a crash is
//!   never written behind; it is dead space, and `read_block` verifies the
//!   CRC of what it reads anyway.
//! - Appends are not durable until [`StreamStore::sync`] returns. The server
//!   must call it before writing a checkpoint that references new block
//!   locations (and so lets the commit log drop the records those blocks
//!   were built from).
//! - A failed write or fsync poisons the store like the commit log.
//! - Segment numbers are never reused by one process, even after the
//!   highest segment was deleted, so a location (or a cache entry keyed by
//!   one) can never name another block than the one it was returned for.
//!   A new process continues after the highest number on disk.
//!
//! Spare files: a deleted segment file is emptied and renamed
//! `spare-<n>` (up to [`StreamStoreOptions::spare_files`] of them), and a
//! new segment is a spare renamed to its name when there is one. Creating
//! an inode can cost a scan of the inode table that deleting many files a
//! few seconds before makes long (ext4 without a journal: 130-290 ms of CPU
//! for 1,000 new segments two seconds after 1,000 were deleted, 30-40 ms
//! with spares; docs/storage.md §8.3). A spare is referenced by nothing: it
//! is made only of a segment no checkpoint may load (what the callers of
//! the delete calls promise for unlinking too), and a new segment's number
//! is fresh. Its emptying is not made durable, so a spare found non-empty
//! (after a power loss) is emptied again when it is taken.
//!
//! Garbage collection after a checkpoint (the server's job, with these
//! calls): list the candidates — [`StreamStore::list_streams`], then
//! [`StreamStore::segments`] per stream — minus what the snapshot
//! references, **at the time the snapshot is taken** (under the same lock),
//! so no segment created later is a candidate. Once the checkpoint is
//! durable, delete them: [`StreamStore::delete_segments`] per stream,
//! [`StreamStore::delete_stream`] for a stream the snapshot does not
//! reference at all, then [`StreamStore::sync`]. The one candidate that can
//! change between listing and deleting is a stream's active segment (the
//! one this process appends to); `delete_segments` skips it, see there.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{Backend, BackendFile, FsSync, OpenMode};
use crate::block_codec::{decode_block_body, encode_block_frame, packed_part, MAX_BLOCK_PAYLOAD};
use crate::error::{Result, StorageError};
use crate::frame::{decode_frame_kinds, read_header, BLOCK_KINDS, FRAME_HEADER_LEN, MAX_BODY_LEN};
use crate::segment::{parse_20_digits, FrameReader};

/// A stream entry ID (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// `ms-seq`.
    pub fn new(ms: u64, seq: u64) -> Self {
        EntryId { ms, seq }
    }
}

/// The server's numeric id for one stream key: names the key's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKeyId(pub u64);

/// Where a block is stored: enough to read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockLocation {
    /// Segment number within the stream's directory.
    pub segment: u64,
    /// Byte offset of the block's frame in the segment file.
    pub offset: u64,
    /// Length of the whole frame as stored (header + body; the block bytes
    /// in it may be compressed).
    pub len: u64,
}

/// A block read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    /// ID of the block's first entry.
    pub first: EntryId,
    /// ID of the block's last entry.
    pub last: EntryId,
    /// The opaque block bytes, exactly as appended (decompressed).
    pub payload: Vec<u8>,
}

/// One block found by [`StreamStore::scan_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBlock {
    /// Where it is.
    pub location: BlockLocation,
    /// Its first entry ID.
    pub first: EntryId,
    /// Its last entry ID.
    pub last: EntryId,
}

/// Result of [`StreamStore::scan_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Valid blocks from the start of the file, in order.
    pub blocks: Vec<ScannedBlock>,
    /// Bytes covered by those blocks.
    pub valid_bytes: u64,
    /// File length.
    pub file_len: u64,
    /// Why scanning stopped before the end of the file (a torn tail after a
    /// crash, or corruption), if it did.
    pub stopped: Option<String>,
}

/// One stream segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSegment {
    /// Its number.
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
}

/// Options for a [`StreamStore`].
#[derive(Debug, Clone)]
pub struct StreamStoreOptions {
    /// Start a new segment file when the current one would exceed this many
    /// bytes (default 8 MiB). Smaller files let trimming free disk sooner.
    pub segment_max_bytes: u64,
    /// Keep up to this many deleted segment files as empty spares for new
    /// segments instead of unlinking them (default 4,096; 0: unlink every
    /// one). See the module doc, "Spare files".
    pub spare_files: usize,
}

impl Default for StreamStoreOptions {
    fn default() -> Self {
        StreamStoreOptions {
            segment_max_bytes: 8 * 1024 * 1024,
            spare_files: 4096,
        }
    }
}

/// Extension of stream segment files.
pub const STREAM_SEGMENT_EXT: &str = "blocks";

/// File name of segment `number` of stream `id` (in the store's root).
pub fn stream_segment_file_name(id: StreamKeyId, number: u64) -> String {
    format!("{}-{number:020}.{STREAM_SEGMENT_EXT}", stream_dir_name(id))
}

/// `<id>-<number>.blocks` → `(id, number)`.
fn parse_stream_segment_file_name(name: &str) -> Option<(StreamKeyId, u64)> {
    let (id, rest) = name.split_at_checked(16)?;
    Some((
        parse_stream_dir_name(id)?,
        parse_stream_segment_name(rest.strip_prefix('-')?)?,
    ))
}

/// Name of spare file `n` (in the store's root): no `.blocks` extension,
/// so nothing that looks for segments ever reads one.
fn spare_file_name(n: u64) -> String {
    format!("{SPARE_PREFIX}{n:020}")
}

const SPARE_PREFIX: &str = "spare-";

/// `spare-<number>` → `number`.
fn parse_spare_file_name(name: &str) -> Option<u64> {
    parse_20_digits(name.strip_prefix(SPARE_PREFIX)?)
}

/// `<number>.blocks` (inside a stream directory of the older layout).
fn parse_stream_segment_name(name: &str) -> Option<u64> {
    parse_20_digits(name.strip_suffix(".blocks")?)
}

fn stream_dir_name(id: StreamKeyId) -> String {
    format!("{:016x}", id.0)
}

fn parse_stream_dir_name(name: &str) -> Option<StreamKeyId> {
    if name.len() != 16 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(StreamKeyId)
}

fn stream_entry(
    streams: &mut HashMap<StreamKeyId, StreamFiles>,
    id: StreamKeyId,
) -> &mut StreamFiles {
    streams.entry(id).or_insert_with(|| StreamFiles {
        next_number: 1,
        ..StreamFiles::default()
    })
}

struct ActiveFile {
    number: u64,
    path: PathBuf,
    file: Arc<dyn BackendFile>,
    len: u64,
}

#[derive(Default)]
struct StreamFiles {
    /// Segment numbers on disk (including the active one).
    segments: BTreeSet<u64>,
    /// Number of the next segment to create: above every number seen on
    /// disk or created by this process, deleted ones included.
    next_number: u64,
    active: Option<ActiveFile>,
}

#[derive(Default)]
struct Inner {
    /// Every segment file in the root (listed once, at open; this process
    /// is the only one that changes the root).
    streams: HashMap<StreamKeyId, StreamFiles>,
    /// Files written since the last sync.
    dirty_files: HashMap<PathBuf, Arc<dyn BackendFile>>,
    /// Whether the root's entries changed since the last sync.
    root_dirty: bool,
    /// Numbers of the spare files in the root (empty files kept for new
    /// segments), at most `spare_files` of them, ascending: a new spare is
    /// numbered after the last, and a new segment takes the last.
    spares: Vec<u64>,
    failed: Option<StorageError>,
}

/// Append-only segment files of sealed blocks, in one directory.
/// Thread-safe (`&self` methods behind one mutex; reads take no lock).
pub struct StreamStore {
    backend: Arc<dyn Backend>,
    root: PathBuf,
    options: StreamStoreOptions,
    inner: Mutex<Inner>,
    /// `syncfs` of the root's file system, opened with the store (so it
    /// reports every write-back error since), if the backend has one.
    fs_sync: Option<Box<dyn FsSync>>,
}

/// From this many files to sync on, [`StreamStore::sync`] makes one
/// `syncfs` instead of an `fdatasync` per file: a checkpoint over 1,000
/// streams then issues one cache flush instead of 1,000 (docs/storage.md
/// §8.2).
const SYNCFS_MIN_FILES: usize = 32;

impl std::fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl StreamStore {
    /// Open (creating the root directory if needed) and list the root once,
    /// moving the stream directories of the older layout in first: a block
    /// is read by its flat name, so they must be moved before any read.
    pub fn open(
        backend: Arc<dyn Backend>,
        root: impl Into<PathBuf>,
        options: StreamStoreOptions,
    ) -> Result<StreamStore> {
        if options.segment_max_bytes == 0 {
            return Err(StorageError::InvalidArgument(
                "segment_max_bytes must be > 0".into(),
            ));
        }
        let root = root.into();
        backend
            .create_dir_all(&root)
            .map_err(|e| StorageError::io("create dir", &root, e))?;
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // IMPORTANT: fsync the parent so a newly created root survives power
        // loss.
        backend
            .sync_dir(&parent)
            .map_err(|e| StorageError::io("fsync dir", &parent, e))?;
        let fs_sync = backend
            .fs_syncer(&root)
            .map_err(|e| StorageError::io("open", &root, e))?;
        let store = StreamStore {
            backend,
            root,
            options,
            inner: Mutex::new(Inner::default()),
            fs_sync,
        };
        store.list_root(&mut store.inner.lock())?;
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn segment_path(&self, id: StreamKeyId, number: u64) -> PathBuf {
        self.root.join(stream_segment_file_name(id, number))
    }

    /// Fill `inner.streams` from one listing of the root (at open); stream
    /// directories of the older layout are moved in
    /// first ([`StreamStore::migrate_stream_dirs`]).
    fn list_root(&self, inner: &mut Inner) -> Result<()> {
        let list = |root: &Path| {
            self.backend
                .list_dir(root)
                .map_err(|e| StorageError::io("list dir", root, e))
        };
        let mut entries = list(&self.root)?;
        let old: Vec<(StreamKeyId, PathBuf)> = entries
            .iter()
            .filter(|e| e.is_dir)
            .filter_map(|e| Some((parse_stream_dir_name(&e.name)?, self.root.join(&e.name))))
            .collect();
        if !old.is_empty() {
            self.migrate_stream_dirs(&old)?;
            entries = list(&self.root)?;
        }
        for (id, number) in entries
            .iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| parse_stream_segment_file_name(&e.name))
        {
            let s = inner.streams.entry(id).or_default();
            s.segments.insert(number);
            s.next_number = s.next_number.max(number + 1);
        }
        let mut spares: Vec<u64> = entries
            .iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| parse_spare_file_name(&e.name))
            .collect();
        spares.sort_unstable();
        // Spares past the limit (it was lowered) are unlinked.
        for n in spares.split_off(spares.len().min(self.options.spare_files)) {
            let path = self.root.join(spare_file_name(n));
            self.backend
                .remove_file(&path)
                .map_err(|e| StorageError::io("remove", &path, e))?;
            inner.root_dirty = true;
        }
        inner.spares = spares;
        Ok(())
    }

    /// The file for a new segment at `path`: a spare renamed to it and
    /// emptied, or else a new file. A spare is emptied when it is made
    /// one, but that truncation may not have reached the disk before a
    /// crash, so it is emptied again here if it is not empty.
    fn new_segment_file(&self, inner: &mut Inner, path: &Path) -> Result<Arc<dyn BackendFile>> {
        if let Some(n) = inner.spares.pop() {
            let spare = self.root.join(spare_file_name(n));
            match self.backend.rename(&spare, path) {
                Ok(()) => {
                    let emptied = || -> std::io::Result<Arc<dyn BackendFile>> {
                        let file = self.backend.open_file(path, OpenMode::Existing)?;
                        if file.len()? > 0 {
                            file.set_len(0)?;
                        }
                        Ok(file)
                    };
                    return emptied().map_err(|e| {
                        // Not left behind as a segment nothing tracks (the
                        // next open would find it, unreferenced, anyway).
                        let _ = self.backend.remove_file(path);
                        StorageError::io("open segment", path, e)
                    });
                }
                // Gone behind our back: create one instead.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("rename", &spare, e)),
            }
        }
        self.backend
            .open_file(path, OpenMode::CreateNew)
            .map_err(|e| StorageError::io("create segment", path, e))
    }

    /// Remove the segment file at `path`: empty it and keep it as a spare
    /// while there are fewer than `spare_files`, unlink it otherwise.
    fn remove_segment_file(&self, inner: &mut Inner, path: &Path) -> std::io::Result<()> {
        if inner.spares.len() >= self.options.spare_files {
            return self.backend.remove_file(path);
        }
        self.backend
            .open_file(path, OpenMode::Existing)?
            .set_len(0)?;
        let n = inner.spares.last().map_or(1, |n| n + 1);
        self.backend
            .rename(path, &self.root.join(spare_file_name(n)))?;
        inner.spares.push(n);
        Ok(())
    }

    /// Move the segment files of older-layout stream directories
    /// (`<root>/<id>/<number>.blocks`) to their flat names, then remove the
    /// directories. Crash-safe: (1) rename every file; (2) fsync the root,
    /// so the new names are durable before (3) the old directories are
    /// removed. A crash before (2) leaves each file under one of its two
    /// names, and the next open moves what is left.
    fn migrate_stream_dirs(&self, dirs: &[(StreamKeyId, PathBuf)]) -> Result<()> {
        for (id, dir) in dirs {
            let entries = self
                .backend
                .list_dir(dir)
                .map_err(|e| StorageError::io("list dir", dir, e))?;
            for (name, number) in entries
                .iter()
                .filter(|e| !e.is_dir)
                .filter_map(|e| Some((&e.name, parse_stream_segment_name(&e.name)?)))
            {
                let from = dir.join(name);
                let to = self.segment_path(*id, number);
                self.backend
                    .rename(&from, &to)
                    .map_err(|e| StorageError::io("rename", &from, e))?;
            }
        }
        self.backend
            .sync_dir(&self.root)
            .map_err(|e| StorageError::io("fsync dir", &self.root, e))?;
        for (_, dir) in dirs {
            self.backend
                .remove_dir_all(dir)
                .map_err(|e| StorageError::io("remove dir", dir, e))?;
        }
        self.backend
            .sync_dir(&self.root)
            .map_err(|e| StorageError::io("fsync dir", &self.root, e))?;
        Ok(())
    }

    /// Streams with at least one segment file (for finding orphans after a
    /// `DEL` whose deletion was not yet synced), in id order.
    pub fn list_streams(&self) -> Result<Vec<StreamKeyId>> {
        let mut out: Vec<StreamKeyId> = self
            .inner
            .lock()
            .streams
            .iter()
            .filter(|(_, s)| !s.segments.is_empty())
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Append a sealed block (`first <= last`), LZ4-compressed when that
    /// makes it smaller. Blocks may come in any ID order: a block changed
    /// after it was stored (XDEL) is stored again, after newer ones. Not
    /// durable until [`StreamStore::sync`].
    pub fn append_block(
        &self,
        id: StreamKeyId,
        first: EntryId,
        last: EntryId,
        payload: &[u8],
    ) -> Result<BlockLocation> {
        self.append_block_frame(id, first, last, payload)
            .map(|(loc, _)| loc)
    }

    /// [`StreamStore::append_block`], also returning the block's packed
    /// form ([`crate::block_codec::packed_part`]: the compressed bytes just
    /// written, to keep in memory instead of the block) when it was stored
    /// compressed.
    pub fn append_block_packed(
        &self,
        id: StreamKeyId,
        first: EntryId,
        last: EntryId,
        payload: &[u8],
    ) -> Result<(BlockLocation, Option<Box<[u8]>>)> {
        let (loc, frame) = self.append_block_frame(id, first, last, payload)?;
        Ok((loc, packed_part(&frame).map(Box::from)))
    }

    fn append_block_frame(
        &self,
        id: StreamKeyId,
        first: EntryId,
        last: EntryId,
        payload: &[u8],
    ) -> Result<(BlockLocation, Vec<u8>)> {
        if first > last {
            return Err(StorageError::InvalidArgument(format!(
                "block first id {}-{} is after its last id {}-{}",
                first.ms, first.seq, last.ms, last.seq
            )));
        }
        if payload.len() > MAX_BLOCK_PAYLOAD {
            return Err(StorageError::RecordTooLarge {
                len: payload.len(),
                max: MAX_BLOCK_PAYLOAD,
            });
        }
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        let mut frame = Vec::new();
        encode_block_frame(first, last, payload, &mut frame);
        let flen = frame.len() as u64;

        let stream = stream_entry(&mut inner.streams, id);
        let need_new = match &stream.active {
            None => true,
            Some(a) => a.len > 0 && a.len + flen > self.options.segment_max_bytes,
        };
        if need_new {
            // NOTE: not `segments.last() + 1`: the highest segment may have
            // been deleted, and its number must not come back (see the
            // module doc). Used from here on, even if no file is made.
            let number = stream.next_number.max(1);
            stream.next_number = number + 1;
            let path = self.segment_path(id, number);
            // The new entry becomes durable at the next sync() (directory
            // fsync); see the IMPORTANT note there.
            inner.root_dirty = true;
            let file = self.new_segment_file(inner, &path)?;
            let stream = stream_entry(&mut inner.streams, id);
            stream.segments.insert(number);
            stream.active = Some(ActiveFile {
                number,
                path,
                file,
                len: 0,
            });
        }
        let stream = stream_entry(&mut inner.streams, id);
        let Some(active) = stream.active.as_mut() else {
            return Err(StorageError::Closed);
        };
        let offset = active.len;
        if let Err(e) = active.file.write_at(offset, &frame) {
            let err = StorageError::io("write", &active.path, e);
            inner.failed = Some(err.clone().into_poisoned());
            return Err(err);
        }
        active.len += flen;
        inner
            .dirty_files
            .insert(active.path.clone(), Arc::clone(&active.file));
        let loc = BlockLocation {
            segment: active.number,
            offset,
            len: flen,
        };
        Ok((loc, frame))
    }

    /// Make every block appended so far, and every segment creation and
    /// deletion, durable: fdatasync the written files, then fsync the
    /// changed directories. A failure poisons the store (never retried).
    pub fn sync(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        let files = std::mem::take(&mut inner.dirty_files);
        match &self.fs_sync {
            Some(fs) if files.len() >= SYNCFS_MIN_FILES => {
                // Start each file's write-back on this thread first:
                // `syncfs` hands the dirty pages to the kernel's flusher
                // thread, which then competes with the server's workers
                // at their priority (docs/storage.md §8.2). Not a
                // durability step: the `syncfs` below is.
                for f in files.values() {
                    f.start_writeback(0, 0);
                }
                if let Err(e) = fs.sync() {
                    let err = StorageError::io("syncfs", &self.root, e);
                    inner.failed = Some(err.clone().into_poisoned());
                    return Err(err);
                }
            }
            _ => {
                for (path, f) in files {
                    if let Err(e) = f.sync_data() {
                        let err = StorageError::io("fsync", &path, e);
                        inner.failed = Some(err.clone().into_poisoned());
                        return Err(err);
                    }
                }
            }
        }
        // IMPORTANT: directory fsync after creating or deleting segment
        // files: without it a power loss can drop a new file's entry even
        // though its data was fdatasync'd. (Kept after a `syncfs` too,
        // which covers it on Linux: one fsync, not worth an exception.)
        if std::mem::take(&mut inner.root_dirty) {
            if let Err(e) = self.backend.sync_dir(&self.root) {
                let err = StorageError::io("fsync dir", &self.root, e);
                inner.failed = Some(err.clone().into_poisoned());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Read a block back: the bytes given to `append_block`, decompressed.
    /// Reads exactly the frame (one `pread` of `location.len` bytes), verifies
    /// its CRC, that its length matches the location and that it
    /// decompresses to the length it records; [`StorageError::Corrupt`] names
    /// the file and offset otherwise. Reads V1 (uncompressed) frames too.
    pub fn read_block(&self, id: StreamKeyId, loc: BlockLocation) -> Result<StoredBlock> {
        self.read_block_frame(id, loc).map(|(b, _)| b)
    }

    /// [`StreamStore::read_block`], also returning the block's packed form
    /// ([`crate::block_codec::packed_part`] of the frame read) when it is
    /// stored compressed.
    pub fn read_block_packed(
        &self,
        id: StreamKeyId,
        loc: BlockLocation,
    ) -> Result<(StoredBlock, Option<Box<[u8]>>)> {
        let (b, frame) = self.read_block_frame(id, loc)?;
        Ok((b, packed_part(&frame).map(Box::from)))
    }

    fn read_block_frame(
        &self,
        id: StreamKeyId,
        loc: BlockLocation,
    ) -> Result<(StoredBlock, Vec<u8>)> {
        let path = self.segment_path(id, loc.segment);
        let corrupt = |reason: String| StorageError::Corrupt {
            file: path.clone(),
            offset: loc.offset,
            reason,
        };
        if loc.len < FRAME_HEADER_LEN as u64 || loc.len > (FRAME_HEADER_LEN + MAX_BODY_LEN) as u64 {
            return Err(corrupt(format!("{} is not a frame length", loc.len)));
        }
        let f = self
            .backend
            .open_file(&path, OpenMode::Existing)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let file_len = f.len().map_err(|e| StorageError::io("stat", &path, e))?;
        // Checked before allocating: a bad location never makes us allocate
        // more than the file holds.
        if loc
            .offset
            .checked_add(loc.len)
            .is_none_or(|end| end > file_len)
        {
            return Err(corrupt(format!(
                "a {}-byte frame at this offset runs past the end of the file ({file_len} bytes)",
                loc.len
            )));
        }
        let mut buf = vec![0u8; loc.len as usize];
        f.read_at(loc.offset, &mut buf)
            .map_err(|e| StorageError::io("read", &path, e))?;
        if let Some(h) = read_header(&buf) {
            if h.frame_len() != loc.len && BLOCK_KINDS.iter().any(|(k, _)| *k == h.kind) {
                return Err(corrupt(format!(
                    "block frame is {} bytes, the location says {}",
                    h.frame_len(),
                    loc.len
                )));
            }
        }
        let (_, kind, body) =
            decode_frame_kinds(&buf, BLOCK_KINDS).map_err(|e| corrupt(e.to_string()))?;
        let block = decode_block_body(kind, body).map_err(corrupt)?;
        Ok((block, buf))
    }

    /// Scan a segment file from the start and list its valid blocks
    /// (stopping at the first bad frame; a compressed block must also
    /// decompress). For tools, tests, and rebuilding an index.
    pub fn scan_segment(&self, id: StreamKeyId, number: u64) -> Result<SegmentScan> {
        let path = self.segment_path(id, number);
        let f = self
            .backend
            .open_file(&path, OpenMode::Existing)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let mut r = FrameReader::new(f).map_err(|e| StorageError::io("stat", &path, e))?;
        let mut blocks = Vec::new();
        let mut offset = 0;
        let mut stopped = None;
        while offset < r.len() {
            match r
                .frame_at_kinds(offset, BLOCK_KINDS)
                .map_err(|e| StorageError::io("read", &path, e))?
            {
                Ok((len, kind, body)) => {
                    let (first, last) = match decode_block_body(kind, body) {
                        Ok(b) => (b.first, b.last),
                        Err(e) => {
                            stopped = Some(format!("offset {offset}: {e}"));
                            break;
                        }
                    };
                    blocks.push(ScannedBlock {
                        location: BlockLocation {
                            segment: number,
                            offset,
                            len,
                        },
                        first,
                        last,
                    });
                    offset += len;
                }
                Err(e) => {
                    stopped = Some(format!("offset {offset}: {e}"));
                    break;
                }
            }
        }
        Ok(SegmentScan {
            blocks,
            valid_bytes: offset,
            file_len: r.len(),
            stopped,
        })
    }

    /// The segment files of a stream, in order.
    pub fn segments(&self, id: StreamKeyId) -> Result<Vec<StreamSegment>> {
        let numbers: Vec<u64> = self
            .inner
            .lock()
            .streams
            .get(&id)
            .map(|s| s.segments.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for number in numbers {
            let path = self.segment_path(id, number);
            let f = self
                .backend
                .open_file(&path, OpenMode::Existing)
                .map_err(|e| StorageError::io("open", &path, e))?;
            let bytes = f.len().map_err(|e| StorageError::io("stat", &path, e))?;
            out.push(StreamSegment {
                number,
                path,
                bytes,
            });
        }
        Ok(out)
    }

    /// Delete every segment file of the stream numbered below `number`:
    /// call it when the first live block is in segment `number` (blocks are
    /// in ID order, so everything before it is trimmed). Returns the deleted
    /// paths; their disk space is freed now, the deletion is durable after
    /// the next [`StreamStore::sync`]. Unlike [`StreamStore::delete_segments`]
    /// this also deletes the active segment if it is below `number` (the
    /// caller says everything there is dead); the next append then starts a
    /// new segment.
    pub fn delete_segments_before(&self, id: StreamKeyId, number: u64) -> Result<Vec<PathBuf>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        let stream = stream_entry(&mut inner.streams, id);
        let doomed: Vec<u64> = stream.segments.range(..number).copied().collect();
        self.remove_segments(inner, id, &doomed, true)
    }

    /// Delete exactly the segment files `numbers` of a stream (in any
    /// order; duplicates and numbers with no file are ignored, so a repeated
    /// call is harmless). For the checkpoint-driven garbage collector: pass
    /// the segments the checkpoint just written does not reference. Returns
    /// the paths deleted by this call; their disk space is freed now, the
    /// deletion is durable after the next [`StreamStore::sync`] (a crash
    /// before it may bring some back: they are still unreferenced, delete
    /// them again).
    ///
    /// The stream's **active segment** (the one this process is appending
    /// to) is never deleted: it is skipped and not in the returned list. It
    /// is the only segment that can receive blocks after the caller listed
    /// its candidates, and those blocks are referenced by no checkpoint yet,
    /// so deleting it could lose them. It becomes deletable once it is no
    /// longer active: when the stream rolls to a new segment, or after a
    /// restart (a new process never appends to an existing file). To free
    /// a dead active segment now, use [`StreamStore::delete_segments_before`]
    /// (the caller then asserts nothing in it is live) or
    /// [`StreamStore::delete_stream`].
    ///
    /// Segment numbers are never reused by this process after a deletion,
    /// even when no file of the stream is left.
    pub fn delete_segments(&self, id: StreamKeyId, numbers: &[u64]) -> Result<Vec<PathBuf>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        let stream = stream_entry(&mut inner.streams, id);
        let doomed: BTreeSet<u64> = numbers
            .iter()
            .copied()
            .filter(|n| stream.segments.contains(n))
            .collect();
        let doomed: Vec<u64> = doomed.into_iter().collect();
        self.remove_segments(inner, id, &doomed, false)
    }

    /// Remove the files `numbers` (all in the stream's `segments`) and
    /// mark the root dirty. `include_active`: close and delete
    /// the active segment too, otherwise skip it.
    fn remove_segments(
        &self,
        inner: &mut Inner,
        id: StreamKeyId,
        numbers: &[u64],
        include_active: bool,
    ) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let mut result = Ok(());
        for &n in numbers {
            let Some(stream) = inner.streams.get_mut(&id) else {
                break;
            };
            if stream.active.as_ref().is_some_and(|a| a.number == n) {
                if !include_active {
                    continue;
                }
                stream.active = None;
            }
            let path = self.segment_path(id, n);
            // Off the dirty list first: a spare is not fsynced as if it
            // were this segment.
            inner.dirty_files.remove(&path);
            match self.remove_segment_file(inner, &path) {
                Ok(()) => removed.push(path.clone()),
                // Gone already (deleted behind our back): nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(StorageError::io("remove", &path, e));
                    break;
                }
            }
            if let Some(stream) = inner.streams.get_mut(&id) {
                stream.segments.remove(&n);
            }
        }
        if !removed.is_empty() {
            // The unlinks and renames become durable at the next sync()
            // (directory fsync); see the IMPORTANT note there.
            inner.root_dirty = true;
        }
        result.map(|()| removed)
    }

    /// Delete every segment file of a stream, active segment included (after
    /// `DEL key`, or for a stream no checkpoint references).
    /// Durable after the next [`StreamStore::sync`]. Forgets the stream: a
    /// later append to the same id starts again at segment 1 with no ID
    /// order to respect, so the caller must drop every location (and cached
    /// block) of the id first, or better never reuse a deleted id.
    pub fn delete_stream(&self, id: StreamKeyId) -> Result<()> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(e) = &inner.failed {
            return Err(e.clone());
        }
        let Some(stream) = inner.streams.get(&id) else {
            return Ok(());
        };
        let all: Vec<u64> = stream.segments.iter().copied().collect();
        let result = self.remove_segments(inner, id, &all, true);
        // Forgotten even if a removal failed: what is left is unreferenced
        // and found again by the next process's listing.
        inner.streams.remove(&id);
        result.map(|_| ())
    }

    /// The poison error, if a write or fsync has failed.
    pub fn failure(&self) -> Option<StorageError> {
        self.inner.lock().failed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip() {
        for id in [0u64, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(
                parse_stream_dir_name(&stream_dir_name(StreamKeyId(id))),
                Some(StreamKeyId(id))
            );
        }
        assert_eq!(parse_stream_dir_name("00000000000000AB"), None);
        assert_eq!(
            parse_stream_segment_name("00000000000000000003.blocks"),
            Some(3)
        );
        let name = stream_segment_file_name(StreamKeyId(0x2a), 3);
        assert_eq!(name, "000000000000002a-00000000000000000003.blocks");
        assert_eq!(
            parse_stream_segment_file_name(&name),
            Some((StreamKeyId(0x2a), 3))
        );
        for bad in [
            "000000000000002a_00000000000000000003.blocks",
            "000000000000002a-0000000000000000003.blocks",
            "000000000000002A-00000000000000000003.blocks",
            "000000000000002a-00000000000000000003.blocks.tmp",
            "é00000000000002a-00000000000000000003.blocks",
        ] {
            assert_eq!(parse_stream_segment_file_name(bad), None, "{bad}");
        }
    }
}
