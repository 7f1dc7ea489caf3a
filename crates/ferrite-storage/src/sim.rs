//! A simulated, in-memory [`Backend`] for tests: fault injection and power
//! loss.
//!
//! The model, per file (an "inode" that directory entries point to):
//! - `current`: what reads see (the page cache);
//! - `durable`: what survives a power loss;
//! - `dirty`: byte ranges written since the last `sync_data`.
//!
//! `sync_data` copies the dirty ranges and the length to `durable`.
//! Each directory likewise has `current` and `durable` entry maps, and
//! `sync_dir` copies `current` to `durable`. [`SimBackend::power_loss`]
//! throws away everything that was not synced: every file's contents go
//! back to its `durable` bytes, every directory to its `durable` entries
//! (so a file whose creation was never followed by a directory fsync
//! vanishes, and a removal or rename that was never followed by one is
//! undone). This is the most pessimistic behaviour POSIX allows, which is
//! what the durability tests want.
//!
//! A failed `sync_data` behaves like Linux after an fsync error: the dirty
//! pages are marked clean *without* reaching the disk, so a later `sync_data`
//! succeeds but the data written before the failure is still not durable.
//! (That is why the log never retries a failed fsync; see
//! `retrying_a_failed_fsync_would_lie` in the tests.)
//!
//! Faults: [`SimBackend::fail_nth`] makes the n-th future call of one
//! operation fail once, [`SimBackend::fail_from`] makes it and every later
//! call fail (a disk that stays full). A failing write with
//! [`FaultKind::NoSpace`] first writes half of its bytes, like a short
//! `write(2)` followed by `ENOSPC`.
//!
//! Timing and processes: [`SimBackend::hold_syncs`] /
//! [`SimBackend::release_syncs`] hold every `sync_data` (deterministic
//! group-commit tests), [`SimBackend::set_sync_latency`] emulates a slow
//! disk, and [`SimBackend::process_crash_copy`] gives the disk as a
//! restarted process would find it (page cache included).
//!
//! Mappings: off by default (`map_writable` answers `None`, so the log
//! writes with `write_at`); [`SimBackend::enable_mapping`] turns them on.
//! A write through a simulated map is a write to `current` that never
//! fails and is not counted as [`SimOp::Write`] (like a store to a real
//! mapping: no system call), and it panics past the end of the file (where
//! a real one would raise SIGBUS).
//!
//! Simplifications (documented so nobody relies on them): directories
//! themselves (`create_dir_all`, `remove_dir_all`) are durable at once;
//! only entries of files inside directories follow the current/durable
//! model. Handles opened before a power loss fail every call afterwards.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, BackendFile, DirEntry, FileMap, FsSync, OpenMode};

/// The operations [`SimBackend`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    /// [`BackendFile::read_at`] and [`BackendFile::len`].
    Read,
    /// [`BackendFile::write_at`].
    Write,
    /// [`BackendFile::set_len`].
    SetLen,
    /// [`BackendFile::sync_data`].
    SyncData,
    /// [`Backend::sync_dir`].
    SyncDir,
    /// [`Backend::open_file`].
    Open,
    /// [`Backend::remove_file`] and [`Backend::remove_dir_all`].
    Remove,
    /// [`Backend::rename`].
    Rename,
}

/// What an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A generic I/O error (`EIO`).
    Io,
    /// Device full (`ENOSPC`); a failing write first writes half its bytes.
    NoSpace,
}

#[derive(Debug, Clone)]
struct Fault {
    op: SimOp,
    /// Fail when the op's counter reaches this value.
    at: u64,
    kind: FaultKind,
    persistent: bool,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    dirty: Vec<(usize, usize)>,
    /// Smallest length since the last sync (a truncation must reach the
    /// durable copy even if the file grew again afterwards).
    min_len_since_sync: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct SimDir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone)]
struct SimState {
    files: HashMap<u64, SimFile>,
    next_file: u64,
    dirs: BTreeMap<PathBuf, SimDir>,
    boot: u64,
    counts: HashMap<SimOp, u64>,
    faults: Vec<Fault>,
    /// `map_writable` gives maps (see [`SimBackend::enable_mapping`]).
    mapping: bool,
}

impl SimState {
    /// Count one call of `op`; return the fault to inject, if any.
    fn tick(&mut self, op: SimOp) -> Option<FaultKind> {
        let n = {
            let c = self.counts.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let idx = self
            .faults
            .iter()
            .position(|f| f.op == op && (n == f.at || (f.persistent && n >= f.at)))?;
        let kind = self.faults[idx].kind;
        if !self.faults[idx].persistent {
            self.faults.remove(idx);
        }
        Some(kind)
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut SimDir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| not_found(dir, "no such directory"))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(dir)
            .and_then(|d| d.current.get(name).copied())
            .ok_or_else(|| not_found(path, "no such file"))
    }
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad file name"))?;
    Ok((dir, name))
}

fn not_found(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what}: {}", path.display()),
    )
}

fn injected(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Io => io::Error::other("simulated I/O error (EIO)"),
        FaultKind::NoSpace => io::Error::new(
            io::ErrorKind::StorageFull,
            "simulated: no space left on device (ENOSPC)",
        ),
    }
}

fn stale() -> io::Error {
    io::Error::other("simulated power loss: file handle from before the crash")
}

/// Controls for `sync_data` timing: a gate that holds every `sync_data`
/// call until opened, and an artificial latency.
#[derive(Debug, Default)]
struct SyncGate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    /// Calls currently waiting at the gate.
    waiting: u64,
    delay: Duration,
}

impl SyncGate {
    /// Block while the gate is held, then apply the configured latency.
    fn pass(&self) {
        let mut g = self.state.lock();
        g.waiting += 1;
        self.cv.notify_all();
        while g.held {
            self.cv.wait(&mut g);
        }
        g.waiting -= 1;
        let delay = g.delay;
        drop(g);
        if !delay.is_zero() {
            // Emulated disk latency, not synchronisation.
            std::thread::sleep(delay);
        }
    }
}

/// In-memory backend with fault injection and power-loss simulation.
/// Cloning gives another handle on the same simulated disk.
#[derive(Debug, Clone, Default)]
pub struct SimBackend {
    state: Arc<Mutex<SimState>>,
    gate: Arc<SyncGate>,
}

impl SimBackend {
    /// An empty simulated disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// This backend as the trait object the rest of the crate takes.
    pub fn shared(&self) -> Arc<dyn Backend> {
        Arc::new(self.clone())
    }

    /// The `n`-th future call (1 = the next one) of `op` fails once.
    pub fn fail_nth(&self, op: SimOp, n: u64, kind: FaultKind) {
        let mut st = self.state.lock();
        let at = st.counts.get(&op).copied().unwrap_or(0) + n.max(1);
        st.faults.push(Fault {
            op,
            at,
            kind,
            persistent: false,
        });
    }

    /// The `n`-th future call of `op` and every one after it fail.
    pub fn fail_from(&self, op: SimOp, n: u64, kind: FaultKind) {
        let mut st = self.state.lock();
        let at = st.counts.get(&op).copied().unwrap_or(0) + n.max(1);
        st.faults.push(Fault {
            op,
            at,
            kind,
            persistent: true,
        });
    }

    /// Hold every `sync_data` call (on any file) until
    /// [`SimBackend::release_syncs`]. For deterministic group-commit tests.
    pub fn hold_syncs(&self) {
        self.gate.state.lock().held = true;
    }

    /// Let held `sync_data` calls (and later ones) proceed.
    pub fn release_syncs(&self) {
        self.gate.state.lock().held = false;
        self.gate.cv.notify_all();
    }

    /// Block until at least `n` `sync_data` calls are waiting at the held
    /// gate, or `timeout` passes; returns whether they are.
    pub fn wait_for_held_syncs(&self, n: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.gate.state.lock();
        while g.waiting < n {
            if self.gate.cv.wait_until(&mut g, deadline).timed_out() {
                return g.waiting >= n;
            }
        }
        true
    }

    /// Make every `sync_data` take at least `d` (emulated disk latency; the
    /// state lock is not held meanwhile).
    pub fn set_sync_latency(&self, d: Duration) {
        self.gate.state.lock().delay = d;
    }

    /// Let files be mapped ([`BackendFile::map_writable`]), so that the
    /// commit log copies records into its mapped tail instead of writing
    /// them (off by default).
    pub fn enable_mapping(&self) {
        self.state.lock().mapping = true;
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many times `op` has been called since the backend was created.
    pub fn count(&self, op: SimOp) -> u64 {
        self.state.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// Simulate power loss: forget every write not followed by
    /// `sync_data` and every directory change not followed by `sync_dir`.
    /// Handles opened before this call fail from now on.
    pub fn power_loss(&self) {
        let mut st = self.state.lock();
        st.boot += 1;
        let mut live = std::collections::HashSet::new();
        for dir in st.dirs.values_mut() {
            dir.current = dir.durable.clone();
            live.extend(dir.current.values().copied());
        }
        st.files.retain(|id, _| live.contains(id));
        for f in st.files.values_mut() {
            f.current = f.durable.clone();
            f.dirty.clear();
            f.min_len_since_sync = None;
        }
    }

    /// Simulate a **process** crash: return a new, independent disk with
    /// the same state (page cache included: unsynced data is still there,
    /// and still not durable). Open the log again on the copy as the
    /// restarted process would; the old log keeps running on the original,
    /// unobserved. Faults are not copied.
    pub fn process_crash_copy(&self) -> SimBackend {
        let mut st = self.state.lock().clone();
        st.faults.clear();
        st.boot += 1;
        SimBackend {
            state: Arc::new(Mutex::new(st)),
            gate: Arc::new(SyncGate::default()),
        }
    }

    /// The current (page cache) contents of a file, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.lookup(path).ok()?;
        st.files.get(&id).map(|f| f.current.clone())
    }

    /// Replace a file's contents, durably (creating it and its directory
    /// entry if needed). For tests that corrupt or craft files.
    pub fn write_file_durable(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        let (dir, name) = split(path)?;
        let existing = st.lookup(path).ok();
        let id = match existing {
            Some(id) => id,
            None => {
                let id = st.next_file;
                st.next_file += 1;
                st.files.insert(id, SimFile::default());
                id
            }
        };
        let d = st.dir_mut(dir)?;
        d.current.insert(name.to_string(), id);
        d.durable.insert(name.to_string(), id);
        let f = st
            .files
            .get_mut(&id)
            .ok_or_else(|| not_found(path, "no such file"))?;
        f.current = bytes.to_vec();
        f.durable = bytes.to_vec();
        f.dirty.clear();
        f.min_len_since_sync = None;
        Ok(())
    }

    /// Names of the files (not subdirectories) currently in `dir`, sorted.
    pub fn list_files(&self, dir: &Path) -> Vec<String> {
        let st = self.state.lock();
        st.dirs
            .get(dir)
            .map(|d| d.current.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A handle on a simulated file.
#[derive(Debug)]
pub struct SimFileHandle {
    state: Arc<Mutex<SimState>>,
    gate: Arc<SyncGate>,
    id: u64,
    boot: u64,
}

/// A simulated writable mapping of `offset..offset + len` of a file.
#[derive(Debug)]
struct SimMap {
    state: Arc<Mutex<SimState>>,
    id: u64,
    boot: u64,
    offset: usize,
    len: usize,
}

impl FileMap for SimMap {
    fn len(&self) -> usize {
        self.len
    }

    fn write(&mut self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len, "write past the end of a map");
        let mut st = self.state.lock();
        if st.boot != self.boot {
            // The machine "lost power": this process is gone.
            return;
        }
        let Some(file) = st.files.get_mut(&self.id) else {
            return;
        };
        let offset = self.offset + at;
        assert!(
            offset + data.len() <= file.current.len(),
            "write through a map past the end of the file (SIGBUS)"
        );
        write_into(file, offset, data);
    }
}

impl SimFileHandle {
    fn with<T>(
        &self,
        op: SimOp,
        f: impl FnOnce(&mut SimFile, Option<FaultKind>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.state.lock();
        if st.boot != self.boot {
            return Err(stale());
        }
        let fault = st.tick(op);
        let file = st
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::other("simulated file vanished"))?;
        f(file, fault)
    }
}

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

fn write_into(file: &mut SimFile, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if file.current.len() < end {
        file.current.resize(end, 0);
    }
    file.current[offset..end].copy_from_slice(data);
    match file.dirty.last_mut() {
        Some(last) if last.1 == offset => last.1 = end,
        _ => file.dirty.push((offset, end)),
    }
}

impl BackendFile for SimFileHandle {
    fn len(&self) -> io::Result<u64> {
        self.with(SimOp::Read, |f, fault| match fault {
            Some(k) => Err(injected(k)),
            None => Ok(f.current.len() as u64),
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(SimOp::Read, |f, fault| {
            if let Some(k) = fault {
                return Err(injected(k));
            }
            let start = to_usize(offset)?;
            let end = start
                .checked_add(buf.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "overflow"))?;
            if end > f.current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past end of simulated file",
                ));
            }
            buf.copy_from_slice(&f.current[start..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(SimOp::Write, |f, fault| {
            let offset = to_usize(offset)?;
            match fault {
                None => {
                    write_into(f, offset, data);
                    Ok(())
                }
                Some(FaultKind::NoSpace) => {
                    // A short write, then ENOSPC.
                    write_into(f, offset, &data[..data.len() / 2]);
                    Err(injected(FaultKind::NoSpace))
                }
                Some(k) => Err(injected(k)),
            }
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(SimOp::SetLen, |f, fault| {
            if let Some(k) = fault {
                return Err(injected(k));
            }
            let len = to_usize(len)?;
            if len < f.current.len() {
                let m = f.min_len_since_sync.map_or(len, |m| m.min(len));
                f.min_len_since_sync = Some(m);
            }
            f.current.resize(len, 0);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        self.with(SimOp::SyncData, |f, fault| {
            if let Some(k) = fault {
                // Linux: the dirty pages are marked clean even though they
                // never reached the disk. A retry would "succeed".
                f.dirty.clear();
                return Err(injected(k));
            }
            sync_file(f);
            Ok(())
        })
    }

    fn map_writable(&self, offset: u64, len: usize) -> io::Result<Option<Box<dyn FileMap>>> {
        let st = self.state.lock();
        if st.boot != self.boot {
            return Err(stale());
        }
        if !st.mapping {
            return Ok(None);
        }
        let file = st
            .files
            .get(&self.id)
            .ok_or_else(|| io::Error::other("simulated file vanished"))?;
        let offset = to_usize(offset)?;
        if offset.saturating_add(len) > file.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "map past the end of a simulated file",
            ));
        }
        Ok(Some(Box::new(SimMap {
            state: Arc::clone(&self.state),
            id: self.id,
            boot: self.boot,
            offset,
            len,
        })))
    }
}

impl Backend for SimBackend {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let mut p = Some(dir);
        while let Some(d) = p {
            if d.as_os_str().is_empty() {
                break;
            }
            st.dirs.entry(d.to_path_buf()).or_default();
            p = d.parent();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.state.lock();
        let d = st
            .dirs
            .get(dir)
            .ok_or_else(|| not_found(dir, "no such directory"))?;
        let mut out: Vec<DirEntry> = d
            .current
            .keys()
            .map(|name| DirEntry {
                name: name.clone(),
                is_dir: false,
            })
            .collect();
        for sub in st.dirs.keys() {
            if sub.parent() == Some(dir) {
                if let Some(name) = sub.file_name().and_then(|n| n.to_str()) {
                    out.push(DirEntry {
                        name: name.to_string(),
                        is_dir: true,
                    });
                }
            }
        }
        Ok(out)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>> {
        let mut st = self.state.lock();
        if let Some(k) = st.tick(SimOp::Open) {
            return Err(injected(k));
        }
        let (dir, name) = split(path)?;
        let existing = st.dirs.get(dir).and_then(|d| d.current.get(name).copied());
        if !st.dirs.contains_key(dir) {
            return Err(not_found(dir, "no such directory"));
        }
        let id = match (mode, existing) {
            (OpenMode::Existing, None) => return Err(not_found(path, "no such file")),
            (OpenMode::Existing, Some(id)) => id,
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("file exists: {}", path.display()),
                ))
            }
            (OpenMode::CreateTruncate, Some(id)) => {
                if let Some(f) = st.files.get_mut(&id) {
                    f.current.clear();
                    f.min_len_since_sync = Some(0);
                    f.dirty.clear();
                }
                id
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                let id = st.next_file;
                st.next_file += 1;
                st.files.insert(id, SimFile::default());
                st.dir_mut(dir)?.current.insert(name.to_string(), id);
                id
            }
        };
        Ok(Arc::new(SimFileHandle {
            state: Arc::clone(&self.state),
            gate: Arc::clone(&self.gate),
            id,
            boot: st.boot,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.tick(SimOp::Remove) {
            return Err(injected(k));
        }
        let (dir, name) = split(path)?;
        st.dir_mut(dir)?
            .current
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(path, "no such file"))
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.tick(SimOp::Remove) {
            return Err(injected(k));
        }
        if !st.dirs.contains_key(dir) {
            return Err(not_found(dir, "no such directory"));
        }
        st.dirs.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.tick(SimOp::Rename) {
            return Err(injected(k));
        }
        let (fdir, fname) = split(from)?;
        let (tdir, tname) = split(to)?;
        if !st.dirs.contains_key(tdir) {
            return Err(not_found(tdir, "no such directory"));
        }
        let id = st
            .dir_mut(fdir)?
            .current
            .remove(fname)
            .ok_or_else(|| not_found(from, "no such file"))?;
        st.dir_mut(tdir)?.current.insert(tname.to_string(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(k) = st.tick(SimOp::SyncDir) {
            return Err(injected(k));
        }
        let d = st.dir_mut(dir)?;
        d.durable = d.current.clone();
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.state.lock();
        if st.dirs.contains_key(path) {
            return Ok(true);
        }
        Ok(st.lookup(path).is_ok())
    }

    fn maps_files(&self, _dir: &Path) -> bool {
        self.state.lock().mapping
    }

    fn fs_syncer(&self, _dir: &Path) -> io::Result<Option<Box<dyn FsSync>>> {
        let boot = self.state.lock().boot;
        Ok(Some(Box::new(SimFsSync {
            state: Arc::clone(&self.state),
            gate: Arc::clone(&self.gate),
            boot,
        })))
    }
}

/// `syncfs` on the simulated disk: `sync_data` of every file at once.
#[derive(Debug)]
struct SimFsSync {
    state: Arc<Mutex<SimState>>,
    gate: Arc<SyncGate>,
    boot: u64,
}

impl FsSync for SimFsSync {
    fn sync(&self) -> io::Result<()> {
        self.gate.pass();
        let mut st = self.state.lock();
        if st.boot != self.boot {
            return Err(stale());
        }
        // Counted (and failed) as one `sync_data`.
        if let Some(k) = st.tick(SimOp::SyncData) {
            for f in st.files.values_mut() {
                f.dirty.clear();
            }
            return Err(injected(k));
        }
        for f in st.files.values_mut() {
            sync_file(f);
        }
        Ok(())
    }
}

/// Make `f`'s writes and length durable (a successful `sync_data`).
fn sync_file(f: &mut SimFile) {
    if let Some(m) = f.min_len_since_sync.take() {
        f.durable.truncate(m);
    }
    f.durable.resize(f.current.len(), 0);
    for (s, e) in f.dirty.drain(..) {
        let e = e.min(f.current.len());
        if s < e {
            f.durable[s..e].copy_from_slice(&f.current[s..e]);
        }
    }
}
