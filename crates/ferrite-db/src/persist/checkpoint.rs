//! Checkpoints: the snapshot taken under the store lock, then stored
//! blocks, the file (read back and verified, two slots) and the garbage
//! collection of stream segment files, on the checkpoint thread.

use super::*;

impl Persistence {
    pub fn checkpoint_running(&self) -> bool {
        self.checkpoint_running.load(Ordering::Relaxed)
    }

    /// Snapshot the store now (call with it locked), all at once: returns
    /// what to write and the last sequence number the snapshot covers, or
    /// `None` if a checkpoint is already running.
    ///
    /// `cfg` is the configuration in force (read under the same store lock):
    /// its block limits go first in the rebuild commands, so the records
    /// replayed after this checkpoint build their blocks with the limits
    /// they were written under, not the limits of the next start's command
    /// line (those are put back after replay).
    pub fn begin_checkpoint(
        &self,
        shared: &Shared,
        store: &mut Store,
        cfg: &crate::config::Config,
    ) -> Option<(u64, Snapshot)> {
        let t0 = std::time::Instant::now();
        let cut = self.cut(shared, store, cfg)?;
        let taken = walk_whole(store, cut);
        self.note_holds(t0.elapsed(), 1);
        Some(taken)
    }

    /// The cut of a checkpoint (store locked; see [`begin_cut`]), or `None`
    /// if one is running.
    pub(crate) fn cut(
        &self,
        shared: &Shared,
        store: &mut Store,
        cfg: &crate::config::Config,
    ) -> Option<Cut> {
        // IMPORTANT: effects of the running command or transaction not in
        // the log yet would be in the snapshot but not under `covered`, so
        // replay would apply them twice. Callers cut between commands
        // (BGSAVE inside a transaction waits for its record:
        // `start_checkpoint`).
        if store.pending_cmds > 0 {
            tracing::error!(
                "a checkpoint was asked for between a command's effects and its record"
            );
            return None;
        }
        if self.checkpoint_running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let covered = self.log.next_seq().saturating_sub(1);
        let rebuild = vec![(0, data_config_command(cfg))];
        let sections = shared.subsystem_snapshots(store);
        let cut = begin_cut(store, covered, rebuild, sections);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
        self.checkpoint_stats.lock().started = Some(std::time::Instant::now());
        Some(cut)
    }

    /// Record a checkpoint's longest hold of the store lock.
    pub(crate) fn note_holds(&self, longest: std::time::Duration, holds: u64) {
        let held = longest.as_micros() as u64;
        let mut st = self.checkpoint_stats.lock();
        st.lock_us_last = held;
        st.lock_us_max = st.lock_us_max.max(held);
        st.cut_holds_last = holds;
    }

    /// Write a snapshot taken by [`Persistence::begin_checkpoint`]. Blocking
    /// file I/O: call from a blocking thread, without the store lock.
    ///
    /// IMPORTANT, the order that keeps every checkpoint loadable: (1) append
    /// the sealed blocks to their segment files and fsync them (and their
    /// directories); (2) write the checkpoint (temp, fsync, rename, dir
    /// fsync), which references them; (3) only then let their nodes drop
    /// their bytes, and delete the segment files this checkpoint does not
    /// reference (no later start can need them:
    /// it loads this checkpoint or a newer one).
    pub fn finish_checkpoint(
        &self,
        covered: u64,
        snap: Snapshot,
        cache: Option<&BlockCache>,
    ) -> Result<(), StorageError> {
        self.finish_checkpoint_keeping(covered, snap, cache, None)
    }

    /// [`Persistence::finish_checkpoint`]; with `keep`, the store decoded
    /// from the file read back is kept there (DEBUG RELOAD), its streams
    /// on `keep`'s block cache.
    pub(crate) fn finish_checkpoint_keeping(
        &self,
        covered: u64,
        mut snap: Snapshot,
        cache: Option<&BlockCache>,
        keep: Option<(&parking_lot::Mutex<Option<Store>>, Arc<BlockCache>)>,
    ) -> Result<(), StorageError> {
        // The file is read back and decoded (into a scratch store with its
        // own block cache, which reads nothing) before the checkpoint
        // before it, and what only that one needed, may go.
        let verify = |cp: &ferrite_storage::Checkpoint| -> Result<(), String> {
            let mut scratch = Store::new(self.databases, 0);
            scratch.block_cache = Some(match &keep {
                Some((_, live)) => live.clone(),
                None => BlockCache::new(Arc::new(SegmentSource(self.streams.clone()))),
            });
            decode_snapshot(cp.body_version, &cp.body, &mut scratch)?;
            if let Some((slot, _)) = &keep {
                *slot.lock() = Some(scratch);
            }
            Ok(())
        };
        snap.assemble();
        let r = snap
            .store_blocks(&self.streams)
            .and_then(|_| self.streams.sync())
            .and_then(|_| {
                self.log
                    .checkpoint_verified(covered, SNAPSHOT_VERSION, &snap.body, &verify)
            });
        if r.is_ok() {
            self.checkpoints_done.fetch_add(1, Ordering::Relaxed);
            let bytes = snap.publish();
            if let Some(c) = cache {
                c.stored(bytes);
            }
            // Two slots: keep what this checkpoint and the previous one use.
            let previous = std::mem::replace(
                &mut *self.previous_referenced.lock(),
                snap.referenced.clone(),
            );
            let mut keep = snap.referenced.clone();
            for (sid, segs) in previous {
                keep.entry(sid).or_default().extend(segs);
            }
            if let Err(e) = self.collect_garbage(&keep) {
                tracing::warn!("deleting unreferenced stream segments failed: {e}");
            }
        }
        {
            let mut st = self.checkpoint_stats.lock();
            st.last_secs = st.started.take().map(|t| t.elapsed().as_secs());
            st.last_failed = r.is_err();
            if r.is_ok() {
                st.last_success_unix = Some(crate::shared::now_ms() / 1000);
                st.consecutive_failures = 0;
            } else {
                st.consecutive_failures += 1;
            }
        }
        self.checkpoint_running.store(false, Ordering::Release);
        let _g = self.idle_lock.lock();
        self.idle.notify_all();
        r.map(|_| ())
    }

    /// DEBUG RELOAD: a checkpoint written now, as SAVE writes it (the
    /// caller holds the store lock), then every database replaced by what
    /// that file, read back from disk, decodes to. The state after is the
    /// state a restart from this checkpoint would load; the subsystems'
    /// sections are not reloaded (they were just written from the same
    /// memory). Watched keys are touched, as FLUSHALL would.
    pub fn reload(&self, shared: &Shared, store: &mut Store) -> Result<(), String> {
        let cfg = shared.config.read().clone();
        let Some(live) = store.block_cache.clone() else {
            return Err("no block cache: persistence is not open".into());
        };
        if store.pending_cmds > 0 {
            return Err(
                "DEBUG RELOAD after writes in the same transaction: their record is not in the log yet"
                    .into(),
            );
        }
        let Some((covered, snap)) = self.begin_checkpoint(shared, store, &cfg) else {
            return Err("Background save already in progress".into());
        };
        let slot = parking_lot::Mutex::new(None);
        self.finish_checkpoint_keeping(covered, snap, Some(&live), Some((&slot, live.clone())))
            .map_err(|e| format!("checkpoint failed: {e}"))?;
        let Some(loaded) = slot.into_inner() else {
            return Err("the checkpoint was written but not read back".into());
        };
        if loaded.dbs.len() != store.dbs.len() {
            return Err("the checkpoint read back has another number of databases".into());
        }
        for (db, fresh) in loaded.dbs.into_iter().enumerate() {
            store.dbs[db] = fresh;
        }
        store.touch_all_in(None);
        Ok(())
    }

    /// Delete the stream segment files that neither the checkpoint just
    /// written nor the one before it references (trimmed or rewritten
    /// blocks, deleted streams, blocks of a checkpoint that failed
    /// half-way).
    fn collect_garbage(
        &self,
        referenced: &HashMap<u64, BTreeSet<u64>>,
    ) -> Result<(), StorageError> {
        for sid in self.streams.list_streams()? {
            let Some(keep) = referenced.get(&sid.0) else {
                self.streams.delete_stream(sid)?;
                continue;
            };
            let dead: Vec<u64> = self
                .streams
                .segments(sid)?
                .iter()
                .map(|s| s.number)
                .filter(|n| !keep.contains(n))
                .collect();
            if !dead.is_empty() {
                self.streams.delete_segments(sid, &dead)?;
            }
        }
        self.streams.sync()
    }

    /// Cut the keyspace now (the caller holds the store lock) and write the
    /// checkpoint on its own thread (BGSAVE, and the automatic one after
    /// `auto-checkpoint-min-size` of log). False if one is already running.
    ///
    /// The cut's walk goes on in steps of at most `checkpoint-cut-step-keys` keys,
    /// the first one here and the rest on the checkpoint thread, the store
    /// lock taken for each and released between them; a command that
    /// changes a key not walked yet writes the key first (docs/storage.md,
    /// "The cut"). So no hold grows with the keyspace.
    ///
    /// Inside a transaction after writes (BGSAVE in MULTI), the writes'
    /// record is not in the log yet: the checkpoint starts right after it
    /// is appended, under the same hold of the lock (`commit_effects`).
    pub fn start_checkpoint(self: &Arc<Self>, shared: &Shared, store: &mut Store) -> bool {
        if store.pending_cmds > 0 {
            if self.checkpoint_running() {
                return false;
            }
            self.checkpoint_after_commit.store(true, Ordering::Relaxed);
            return true;
        }
        let t0 = std::time::Instant::now();
        let (cut, step) = {
            let cfg = shared.config.read();
            (self.cut(shared, store, &cfg), cfg.checkpoint_cut_step_keys)
        };
        let Some(cut) = cut else {
            return false;
        };
        // The cut, or what it took once its walk ended.
        let state = if cut_step(store, step) {
            Ok(end_cut(store, cut))
        } else {
            Err(cut)
        };
        let first = t0.elapsed();
        if state.is_ok() {
            self.note_holds(first, 1);
        }
        let p = self.clone();
        let cache = store.block_cache.clone();
        // Handed over once the thread exists: if it cannot start, the cut
        // is still here to end (its storage ids given out go back into
        // the store).
        let (hand, handed) = std::sync::mpsc::sync_channel::<Result<(u64, Snapshot), Cut>>(1);
        // IMPORTANT: checkpoint file I/O runs on its own thread, never on
        // a tokio worker and never under the store lock.
        let spawned = std::thread::Builder::new()
            .name("ferrite-checkpoint".into())
            .spawn(move || {
                // The walk's steps hold the store lock: at the priority of
                // the thread that cut (a step preempted by a busier thread
                // would hold every client up), lowered after.
                let taken = match handed.recv() {
                    Ok(Ok(taken)) => Some(taken),
                    Ok(Err(cut)) => p.walk(cut, step, first),
                    Err(_) => None,
                };
                let Some((covered, body)) = taken else {
                    // The database is gone (the process is stopping).
                    p.abandon_checkpoint();
                    return;
                };
                ferrite_storage::thread_priority::lower_current_thread(
                    ferrite_storage::thread_priority::BACKGROUND_NICE,
                );
                if let Err(e) = p.finish_checkpoint(covered, body, cache.as_deref()) {
                    tracing::error!("checkpoint failed: {e}");
                    return;
                }
                // The stored blocks drop their decoded copies now, not at
                // the next command (an idle server would keep them).
                // A batch at a time, the lock released in between.
                if let Some(shared) = p.shared.upgrade() {
                    while shared.store.lock().evict_step() {}
                }
                // The memory the eviction freed goes back to the system
                // here, not on the next worker to park: `malloc_trim`
                // holds the allocator's locks for milliseconds, and a
                // worker doing it made its clients wait that long.
                crate::store::trim_if_due();
            });
        let state = match spawned {
            Ok(_) => match hand.send(state) {
                Ok(()) => return true,
                // The thread is gone already (it cannot be: it waits for
                // this): ended here as below.
                Err(std::sync::mpsc::SendError(state)) => state,
            },
            Err(e) => {
                tracing::error!("cannot start the checkpoint thread: {e}");
                state
            }
        };
        // The cut must not stay half-walked in the databases, and its end
        // gives the store back the storage ids it handed out: the snapshot
        // itself is dropped.
        if let Err(cut) = state {
            drop(walk_whole(store, cut));
        }
        self.abandon_checkpoint();
        false
    }

    /// A checkpoint that will write nothing: the next one may start.
    fn abandon_checkpoint(&self) {
        self.checkpoint_stats.lock().started = None;
        self.checkpoint_running.store(false, Ordering::Release);
        let _g = self.idle_lock.lock();
        self.idle.notify_all();
    }

    /// The rest of a cut's walk, on the checkpoint thread: a step per hold
    /// of the store lock until every key is written, then its end. `None`
    /// if the database is gone.
    pub(crate) fn walk(
        &self,
        cut: Cut,
        step: usize,
        first: std::time::Duration,
    ) -> Option<(u64, Snapshot)> {
        let shared = self.shared.upgrade()?;
        let (mut longest, mut holds) = (first, 1u64);
        loop {
            let mut store = shared.store.lock();
            let t = std::time::Instant::now();
            let done = cut_step(&mut store, step);
            holds += 1;
            if done {
                let taken = end_cut(&mut store, cut);
                longest = longest.max(t.elapsed());
                drop(store);
                self.note_holds(longest, holds);
                return Some(taken);
            }
            longest = longest.max(t.elapsed());
            drop(store);
            // Let the commands waiting for the lock in before the next step.
            std::thread::yield_now();
        }
    }
}
