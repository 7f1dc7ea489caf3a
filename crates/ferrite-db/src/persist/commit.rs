//! The commit path: after every command, its effects go to the log as one
//! record under the store lock; replies wait per the policy; the tokio
//! park hook; a clean shutdown's final checkpoint.

use super::*;

/// Redis's wording for a failed AOF write, which clients and tools know.
pub fn misconf_message(e: &StorageError) -> String {
    format!("MISCONF Errors writing to the AOF file: {e}")
}

/// `CONFIG SET` of the parameters that shape stored data (block limits):
/// logged at start-up and whenever they change, so replay rebuilds the same
/// blocks.
pub fn data_config_command(cfg: &crate::config::Config) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"CONFIG"),
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"stream-node-max-entries"),
        Bytes::from(cfg.stream_node_max_entries.to_string()),
        Bytes::from_static(b"stream-node-max-bytes"),
        Bytes::from(cfg.stream_node_max_bytes.to_string()),
    ]
}

/// Make `p` the server's commit log: from now on every command's effects
/// are collected and appended.
pub fn install(shared: &Arc<Shared>, p: Arc<Persistence>) -> bool {
    let _ = PARKING.set(Arc::downgrade(&p));
    let fresh = shared.persist.set(p).is_ok();
    shared.store.lock().logging = true;
    fresh
}

/// The log the tokio workers look at before they park (the first server
/// of the process; not kept alive by this).
pub(crate) static PARKING: std::sync::OnceLock<std::sync::Weak<Persistence>> =
    std::sync::OnceLock::new();

/// At most this long a worker about to park waits for the log writer.
pub(crate) const PARK_SPIN_MAX: std::time::Duration = std::time::Duration::from_micros(50);

/// Called by a tokio worker about to park (`on_thread_park`): under
/// `everysec`/`no`, if records were appended that the writer has not
/// written yet, yield the CPU (for at most 50 µs) until it has. Without
/// pipelining every connection then waits for that one `pwrite`; the
/// writer's wake-ups arrive while the worker is still running and it does
/// not sleep, which on a VM costs about 10 µs of CPU per sleep and wake-up
/// (docs/storage.md §15.3). Not under `always`: an fsync takes longer. Only
/// a hint: nothing depends on it for correctness (tokio re-checks its
/// queues after this hook, before it parks).
pub fn before_park() {
    crate::store::trim_if_due();
    if let Some(p) = PARKING.get().and_then(std::sync::Weak::upgrade) {
        p.spin_for_acks();
    }
}

impl Persistence {
    fn spin_for_acks(&self) {
        if self.log.fsync_policy() == AppendFsync::Always {
            return;
        }
        let target = self.appended.load(Ordering::Acquire);
        let done = || self.log.acked_seq() >= target || self.log.failure().is_some();
        if done() {
            return;
        }
        let start = std::time::Instant::now();
        while start.elapsed() < PARK_SPIN_MAX {
            std::thread::yield_now();
            if done() {
                return;
            }
        }
    }
}

/// What the caller must do after a command's effects were handed to the log.
pub enum Commit {
    /// Nothing to wait for (no effects, or persistence off).
    Done,
    /// Reply only once this record's outcome is `Ok`: it is written
    /// (`everysec`, `no`) or fsynced (`always`).
    Wait(u64),
    /// The log refused the record: the reply must be this error.
    Failed(String),
}

/// [`Persistence::barrier`] if persistence is on (call with the store locked).
pub fn barrier(shared: &Shared) -> Option<u64> {
    shared.persist.get()?.barrier()
}

/// [`Persistence::kick`] if persistence is on.
pub fn kick(shared: &Shared) {
    if let Some(p) = shared.persist.get() {
        p.kick();
    }
}

/// [`Persistence::outcome`]; `Closed` if persistence is off (a record
/// cannot exist then).
pub fn outcome(shared: &Shared, seq: u64) -> Option<Result<u64, StorageError>> {
    match shared.persist.get() {
        Some(p) => p.outcome(seq),
        None => Some(Err(StorageError::Closed)),
    }
}

/// [`Persistence::wait`]; `Closed` if persistence is off.
pub async fn wait(shared: &Shared, seq: u64) -> Result<u64, StorageError> {
    match shared.persist.get() {
        Some(p) => p.wait(seq).await,
        None => Err(StorageError::Closed),
    }
}

/// Hand the store's pending effects to the commit log (call with the store
/// locked, right after the command and the blocked clients it served), and
/// start a checkpoint when enough was logged since the last one.
pub fn commit(shared: &Arc<Shared>, store: &mut Store) -> Commit {
    // A stored block that could not be read back (I/O error, corruption)
    // made the command see less than the stream holds: it replies an error,
    // and writes are refused from now on (see `Shared::write_error`).
    let read_error = store.block_cache.as_ref().and_then(|c| c.take_error());
    if let Some(e) = &read_error {
        tracing::error!("reading a stored stream block failed: {e}");
        if let Some(p) = shared.persist.get() {
            p.set_read_failure(e.clone());
        }
    }
    let result = commit_effects(shared, store);
    store.maybe_evict();
    match read_error {
        Some(e) => Commit::Failed(format!("ERR reading stored stream data failed: {e}")),
        None => result,
    }
}

pub(crate) fn commit_effects(shared: &Arc<Shared>, store: &mut Store) -> Commit {
    if store.pending_cmds == 0 {
        return Commit::Done;
    }
    let Some(p) = shared.persist.get() else {
        store.clear_effects();
        return Commit::Done;
    };
    let result = match p.append_encoded(&store.pending_log, store.pending_cmds) {
        Ok(seq) => Commit::Wait(seq),
        Err(e) => Commit::Failed(misconf_message(&e)),
    };
    // Cleared, not taken: its capacity serves the next command.
    store.clear_effects();
    // NOTE: past the first MiB since the last checkpoint, the configuration
    // lock is taken once per MiB logged, not per command (a checkpoint then
    // starts within 1 MiB past its threshold).
    let logged = p.log_bytes();
    let mib = logged >> 20;
    let due = (mib == 0 || mib != p.threshold_checked_mib.load(Ordering::Relaxed)) && {
        p.threshold_checked_mib.store(mib, Ordering::Relaxed);
        logged >= shared.config.read().auto_checkpoint_min_size
    };
    let asked = p.checkpoint_after_commit.swap(false, Ordering::Relaxed);
    if (due || asked) && !p.checkpoint_running() {
        p.start_checkpoint(shared, store);
    }
    result
}

/// Clean shutdown: fsync the log, write a checkpoint (so the next start
/// replays nothing), close.
pub fn shutdown(shared: &Arc<Shared>) {
    let Some(p) = shared.persist.get() else {
        return;
    };
    // A background checkpoint may be running: wait for it, then write the
    // final one (it must cover everything, so the next start replays
    // nothing). Connections may still be finishing commands, which can start
    // another background checkpoint: hence the loop.
    let mut snap = None;
    let cache = shared.store.lock().block_cache.clone();
    for _ in 0..10 {
        snap = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(shared, &mut store, &cfg)
        };
        if snap.is_some() || !p.wait_checkpoint_idle(std::time::Duration::from_secs(120)) {
            break;
        }
    }
    match snap {
        Some((covered, body)) => {
            if let Err(e) = p.finish_checkpoint(covered, body, cache.as_deref()) {
                tracing::error!("checkpoint at shutdown failed: {e}");
            }
        }
        None => tracing::error!(
            "no checkpoint at shutdown: a background checkpoint did not finish; \
             the next start replays the commit log"
        ),
    }
    if let Err(e) = p.sync().and_then(|_| p.close()) {
        tracing::error!("closing the commit log failed: {e}");
    }
}
