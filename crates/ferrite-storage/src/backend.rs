//! The storage backend trait ([`Backend`], [`BackendFile`]) and the real
//! `std::fs` implementation, [`FsBackend`].
//!
//! Modelled on redb's `StorageBackend`: a file is `len / read_at / write_at /
//! set_len / sync_data`, and the directory operations the log needs (list,
//! open/create, remove, rename, fsync a directory) are on [`Backend`].
//! Everything above this module (log, recovery, checkpoints, stream
//! segments) only talks to these traits, so the simulated backend in
//! [`crate::sim`] can inject failures and power loss underneath it.
//!
//! Rules every implementation must follow:
//! - `write_at` either writes all of `data` or returns an error (a short
//!   write may have left a prefix behind: callers treat the file as torn).
//! - `sync_data` is `fdatasync`: after it returns `Ok`, every byte written
//!   to *this file* before the call, and the file's length, survive power
//!   loss. It does **not** make the file's directory entry durable.
//! - `sync_dir` is `fsync` on a directory: it makes creations, removals and
//!   renames of entries in that directory durable.
//! - Bytes copied into a [`FileMap`] are the file's bytes at once, for every
//!   reader and for `sync_data` (a `MAP_SHARED` mapping: page cache, so they
//!   survive the process but not a power loss until `sync_data`).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How [`Backend::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing; error if missing.
    Existing,
    /// Create the file; error (`AlreadyExists`) if it exists.
    CreateNew,
    /// Create the file, or open and truncate it to 0 bytes if it exists.
    CreateTruncate,
}

/// One entry returned by [`Backend::list_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name (entries whose names are not UTF-8 are skipped).
    pub name: String,
    /// True for a subdirectory.
    pub is_dir: bool,
}

/// An open file. Positional I/O only; implementations are shared between
/// threads (`&self` methods).
pub trait BackendFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fill `buf` from `offset`; `UnexpectedEof` if the file is too short.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncate or extend (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: make data and length durable (not the directory entry).
    fn sync_data(&self) -> io::Result<()>;
    /// Map `offset..offset + len`, which must lie inside the file, for
    /// writing; `Ok(None)` if this backend does not map files. The caller
    /// must not shrink the file below the end of the range while the map
    /// lives (a real mapping would fault with SIGBUS).
    fn map_writable(&self, offset: u64, len: usize) -> io::Result<Option<Box<dyn FileMap>>> {
        let _ = (offset, len);
        Ok(None)
    }
    /// Start writing `offset..offset + len` back to the disk without
    /// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a
    /// later `sync_data` finds little left to write. Best effort and never
    /// a durability step: only `sync_data` makes anything durable, and an
    /// I/O error of this write-back surfaces there. `len` 0: to the end of
    /// the file.
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// A writable shared mapping of a range of a file (see
/// [`BackendFile::map_writable`]). Writing through it is a memory copy: no
/// system call, and it cannot fail (errors surface at the next
/// `sync_data`).
pub trait FileMap: Send + Debug {
    /// Length of the mapped range.
    fn len(&self) -> usize;
    /// True if the range is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy `data` to `at`, relative to the start of the range. The caller
    /// keeps `at + data.len() <= len()`; implementations may panic if not.
    fn write(&mut self, at: usize, data: &[u8]);
}

/// A file system: directory operations plus [`BackendFile`] factories.
pub trait Backend: Send + Sync + Debug {
    /// `mkdir -p`. Implementations may treat new directories as durable
    /// (see [`crate::sim::SimBackend`]); callers fsync the parent anyway.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Entries of `dir` (files and subdirectories), in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Open or create a file, see [`OpenMode`].
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>>;
    /// Unlink a file (durable only after [`Backend::sync_dir`] of its parent).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Remove a directory and everything in it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Atomically rename `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `fsync` a directory: make entry creations/removals/renames durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True if `path` names an existing file or directory.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// True if files in `dir` may be mapped for writing
    /// ([`BackendFile::map_writable`]) safely: a store into a mapping of
    /// bytes already written must not need new disk space, or a full disk
    /// would kill the process with SIGBUS instead of failing a write.
    fn maps_files(&self, dir: &Path) -> bool {
        let _ = dir;
        false
    }
    /// A handle that makes every file of the file system holding `dir`
    /// durable at once ([`FsSync`]), or `Ok(None)` if this backend has none.
    fn fs_syncer(&self, dir: &Path) -> io::Result<Option<Box<dyn FsSync>>> {
        let _ = dir;
        Ok(None)
    }
}

/// `syncfs`: one call that makes every file of a file system durable, data
/// and lengths (not directory entries), like an `fdatasync` of each. It
/// must report any write-back error of that file system since the handle
/// was opened (Linux does since 5.8: the error is recorded on the super
/// block and sampled per open file; [`FsBackend`] gives no syncer on older
/// kernels, whose `syncfs` returns success regardless).
pub trait FsSync: Send + Sync + Debug {
    /// Sync the whole file system.
    fn sync(&self) -> io::Result<()>;
}

/// The real backend: `std::fs` with `pread`/`pwrite`/`fdatasync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsBackend;

impl FsBackend {
    /// A new real-file-system backend (stateless).
    pub fn new() -> Self {
        FsBackend
    }

    /// Convenience: `Arc::new(FsBackend)` as a trait object.
    pub fn shared() -> Arc<dyn Backend> {
        Arc::new(FsBackend)
    }
}

/// A real file.
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

#[cfg(unix)]
impl BackendFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[allow(unsafe_code)] // the SAFETY comments below
    fn map_writable(&self, offset: u64, len: usize) -> io::Result<Option<Box<dyn FileMap>>> {
        // SAFETY: the mapping is of a file this process created and owns
        // (a commit-log segment); the log never shrinks it below the mapped
        // range while the map lives. Another process truncating it would
        // crash this one with SIGBUS, as with any mapped file.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map_mut(&self.file)?
        };
        // Fault the pages in writable now, on the caller's thread (the log
        // writer), rather than on the first write of each: best effort
        // (Linux >= 5.14).
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::PopulateWrite);
        Ok(Some(Box::new(FsMap { map })))
    }

    #[allow(unsafe_code)] // the SAFETY comment below
    fn start_writeback(&self, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(off), Ok(n)) = (
                libc::off64_t::try_from(offset),
                libc::off64_t::try_from(len),
            ) else {
                return;
            };
            // SAFETY: a plain system call on a descriptor this file owns
            // (open for the whole call); it takes no pointers.
            let _ = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }
}

/// A real shared mapping.
#[derive(Debug)]
struct FsMap {
    map: memmap2::MmapMut,
}

impl FileMap for FsMap {
    fn len(&self) -> usize {
        self.map.len()
    }

    fn write(&mut self, at: usize, data: &[u8]) {
        self.map[at..at + data.len()].copy_from_slice(data);
    }
}

impl Backend for FsBackend {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type()?.is_dir();
            out.push(DirEntry { name, is_dir });
        }
        Ok(out)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateNew => {
                opts.create_new(true);
            }
            OpenMode::CreateTruncate => {
                opts.create(true).truncate(true);
            }
        }
        let file = opts.open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Opening a directory read-only and calling fsync on it is the
        // POSIX way to persist its entries (Linux accepts fsync on an
        // O_RDONLY directory descriptor).
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    /// Only on file systems that overwrite written blocks in place (ext4,
    /// XFS, tmpfs): copy-on-write ones (btrfs, ZFS, overlays of unknown
    /// file systems) allocate on every overwrite, so a store into the map
    /// could fault with SIGBUS on a full disk (docs/storage.md §3.6).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)] // the SAFETY comments below
    fn maps_files(&self, dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        const EXT4: i64 = 0xEF53;
        const XFS: i64 = 0x5846_5342;
        const TMPFS: i64 = 0x0102_1994;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `statfs` reads the NUL-terminated path and fills the
        // zeroed struct it is given; both outlive the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            return false;
        }
        // NOTE: `f_type`'s integer type differs between targets.
        #[allow(clippy::useless_conversion)]
        let kind = i64::from(st.f_type);
        matches!(kind, EXT4 | XFS | TMPFS)
    }

    #[cfg(target_os = "linux")]
    fn fs_syncer(&self, dir: &Path) -> io::Result<Option<Box<dyn FsSync>>> {
        if !kernel_at_least(5, 8) {
            return Ok(None);
        }
        Ok(Some(Box::new(FsSyncer {
            dir: File::open(dir)?,
        })))
    }
}

/// A directory kept open for `syncfs` (its write-back error cursor dates
/// from this open).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct FsSyncer {
    dir: File,
}

#[cfg(target_os = "linux")]
impl FsSync for FsSyncer {
    #[allow(unsafe_code)] // the SAFETY comments below
    fn sync(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: `syncfs` takes a file descriptor, which `self.dir` keeps
        // open for the duration of the call.
        if unsafe { libc::syncfs(self.dir.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// True if the running Linux kernel is at least `major.minor`.
#[cfg(target_os = "linux")]
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
