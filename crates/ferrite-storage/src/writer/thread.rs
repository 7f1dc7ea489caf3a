//! The writer thread (one per log): takes everything queued, writes it,
//! fsyncs per the policy, acknowledges, lends the mapped window; and the
//! `everysec` fsync thread beside it.

use super::*;

/// State owned by the writer thread.
pub(super) struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    /// The last record in the active segment (or before it), including
    /// those appenders copied into the window as far as the writer has
    /// taken them in (`Writer::absorb`).
    written_seq: u64,
    /// Every record up to this one has completed, `Ok` or not.
    decided: u64,
    /// The mapping to lend, while not lent.
    map: Option<WriterMap>,
    /// The map is in `Queue::window`: the writer must not touch the
    /// active segment's file but to fsync it.
    lent: bool,
    /// Mapped writes are off, or the backend cannot map files.
    no_map: bool,
    /// Empty buffers swapped with the queue's, so their capacity is reused.
    spare_pending: Vec<Pending>,
    spare_frames: Vec<u8>,
    /// `Writer::ack`'s buffer of waiters to wake, kept for its capacity.
    ready: Vec<(u64, Waiter)>,
    /// The fsync thread; stopped and joined when the writer exits.
    syncer: Option<JoinHandle<()>>,
}

/// A mapping of the active segment from `base` on (see [`Window`]).
struct WriterMap {
    map: Box<dyn FileMap>,
    base: u64,
}

/// The writer remaps when the window has less room than this left.
const MAP_MIN_ROOM: u64 = 64 * 1024;
/// No window is lent with less room than this (the segment is nearly full:
/// the next records go through the queue, which rolls it).
const MAP_MIN_LEND: u64 = 512;

/// Before sleeping, an idle writer yields the CPU up to this many times (and
/// for at most `SPIN_MAX`), watching for a `kick`.
const SPIN_YIELDS: u32 = 50;
const SPIN_MAX: Duration = Duration::from_micros(100);

/// A busy server's next records usually come right after the writer went
/// idle (under `everysec`/`no` a batch takes microseconds; under `always`
/// the replies to the last batch just went out, and their clients' next
/// commands follow): noticing the `kick` that announces them while yielding
/// (not the first deferred append: the kick comes once the appender's round
/// is done, so the batch is as large) saves both the writer's sleep and the
/// futex wake-up the `kick` would pay (the most expensive part of a batch on
/// a VM, where a wake-up is an inter-processor interrupt).
fn spin_for_records(shared: &Shared) {
    let start = Instant::now();
    for _ in 0..SPIN_YIELDS {
        std::thread::yield_now();
        // Read-only until it is set: the appenders' cache line stays shared.
        if (shared.kicked.load(Ordering::Relaxed) && shared.kicked.swap(false, Ordering::AcqRel))
            || start.elapsed() >= SPIN_MAX
        {
            return;
        }
    }
}

/// A frames buffer above this capacity is dropped after use rather than
/// kept for the next batch (one huge record must not pin its memory).
const KEEP_FRAMES_CAPACITY: usize = 4 << 20;

impl Writer {
    /// The writer of a log whose last record is `last`, with its fsync
    /// thread already started.
    pub(super) fn new(
        shared: Arc<Shared>,
        active: ActiveSegment,
        last: u64,
        no_map: bool,
        syncer: JoinHandle<()>,
    ) -> Writer {
        Writer {
            shared,
            active,
            written_seq: last,
            decided: last,
            map: None,
            lent: false,
            no_map,
            spare_pending: Vec::new(),
            spare_frames: Vec::new(),
            ready: Vec::new(),
            syncer: Some(syncer),
        }
    }

    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        self.prepare_map();
        let mut q = shared.queue.lock();
        let mut spun = false;
        loop {
            if q.window.as_ref().is_some_and(|w| w.wants_more) {
                self.extend_window(&mut q);
            }
            self.absorb(&mut q);
            if q.failed.is_some() {
                // Unmapped once the log failed: nothing may be copied in.
                self.retire(&mut q);
            }
            self.lend(&mut q);
            // Records copied into the window under `always` wait for the
            // writer's fsync (under `everysec`/`no` their appenders
            // acknowledged them).
            let acked = shared.acked_seq.load(Ordering::Acquire);
            let undecided = self.written_seq > self.decided.max(acked);
            if q.pending.is_empty() && q.syncs.is_empty() && !undecided {
                if q.closing {
                    self.retire(&mut q);
                    break;
                }
                // NOTE: the periodic `everysec` fsync is the fsync thread's
                // job; an idle writer just sleeps, after a short spin.
                if !spun {
                    spun = true;
                    MutexGuard::unlocked(&mut q, || spin_for_records(&shared));
                    continue;
                }
                shared.wake.wait(&mut q);
                continue;
            }
            spun = false;
            if !q.pending.is_empty() {
                // The queued frames go after the records copied into the
                // window: take it back (and the file with it) first.
                self.retire(&mut q);
            }
            let mut batch =
                std::mem::replace(&mut q.pending, std::mem::take(&mut self.spare_pending));
            let mut frames =
                std::mem::replace(&mut q.frames, std::mem::take(&mut self.spare_frames));
            let syncs = std::mem::take(&mut q.syncs);
            let failed = q.failed.clone();
            MutexGuard::unlocked(&mut q, || {
                self.process(&mut batch, &frames, syncs, failed);
                frames.clear();
                if frames.capacity() <= KEEP_FRAMES_CAPACITY {
                    self.spare_frames = frames;
                }
                self.spare_pending = batch;
                self.prepare_map();
            });
        }
        // Closing: everything queued has been processed. Make it durable.
        let failed = q.failed.is_some();
        drop(q);
        if !failed {
            // On failure the log is poisoned (`fsync_through` did it).
            // NOTE: should the trim fail, recovery cuts the zeros instead.
            let _ = self.trim_preallocation();
        }
        stop_fsync_thread(&shared, self.syncer.take());
    }

    /// Write (and under `always` fsync) one batch, then fire its
    /// completions, its `when_acked` waiters and the `sync()` barriers.
    /// Leaves `batch` empty.
    fn process(
        &mut self,
        batch: &mut Vec<Pending>,
        frames: &[u8],
        syncs: Vec<Completion>,
        failed: Option<StorageError>,
    ) {
        // What this round decides: the records copied into the window and
        // not yet acknowledged, then the batch.
        let first = self
            .decided
            .max(self.shared.acked_seq.load(Ordering::Acquire))
            + 1;
        let r = match failed {
            Some(err) => Err(err),
            None => self.write_and_sync(batch, frames),
        };
        let last = batch.last().map_or(0, |p| p.seq).max(self.written_seq);
        let span = (first <= last).then_some((first, last));
        self.decided = self.decided.max(last);
        match r {
            Ok(()) => {
                // `acked_seq` first: whoever sees a completion also sees
                // the record acknowledged in `outcome`.
                if let Some((_, last)) = span {
                    self.shared.acked_seq.fetch_max(last, Ordering::SeqCst);
                }
                for p in batch.drain(..) {
                    let seq = p.seq;
                    p.complete(Ok(seq));
                }
                if let Some((_, last)) = span {
                    self.ack(last);
                }
                if !syncs.is_empty() {
                    let r = self
                        .fsync()
                        .map(|()| self.written_seq)
                        .map_err(|e| self.shared.poison(e));
                    for s in syncs {
                        call(s, r.clone());
                    }
                }
            }
            Err(e) => {
                // The batch's records complete with the error itself (e.g.
                // NoSpace); the barriers, like everything after, with Poisoned.
                let poisoned = self.shared.poison(e.clone());
                if let Some((first, last)) = span {
                    self.ack_failed(first, last, &e);
                }
                for p in batch.drain(..) {
                    p.complete(Err(e.clone()));
                }
                for s in syncs {
                    call(s, Err(poisoned.clone()));
                }
            }
        }
    }

    /// Write a batch and make it as durable as the policy asks. An error is
    /// what the batch's records complete with.
    fn write_and_sync(&mut self, batch: &[Pending], frames: &[u8]) -> Result<()> {
        let policy = self.shared.policy();
        if !batch.is_empty() {
            self.write_batch(batch, frames)?;
            self.publish(policy);
        }
        if policy == AppendFsync::Always {
            // Also covers the records copied into the window (a no-op if
            // everything written is durable already).
            self.fsync()?;
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            // The fsync thread failed meanwhile (`everysec`): like
            // everything queued behind a failure, this batch fails.
            return Err(self.shared.poison_error());
        }
        Ok(())
    }

    /// Every record up to `last` completed `Ok` (and `acked_seq` says so):
    /// wake `when_acked` waiters.
    fn ack(&mut self, last: u64) {
        self.shared.wake_acked(last, &mut self.ready);
    }

    /// Records `first..=last` failed with `err`: record the first failure
    /// and fail every `when_acked` waiter (all of them wait for records at
    /// or after `first`: completions come in order).
    fn ack_failed(&self, first: u64, last: u64, err: &StorageError) {
        let sh = &self.shared;
        let ready = {
            let mut acks = sh.acks.lock();
            acks.failed.get_or_insert((first, last, err.clone()));
            sh.has_ack_waiters.store(false, Ordering::SeqCst);
            let acked = sh.acked_seq.load(Ordering::SeqCst);
            std::mem::take(&mut acks.waiting)
                .into_iter()
                .map(|(seq, done)| {
                    let r = acks.outcome(seq, acked).unwrap_or(Err(err.clone()));
                    (done, r)
                })
                .collect::<Vec<_>>()
        };
        for (done, r) in ready {
            done.done(r);
        }
    }

    /// Under `everysec`, ask the fsync thread for an fsync if one is due
    /// (before the batch's completions fire, so `wait_everysec_fsync` after
    /// a completion sees the request).
    fn publish(&mut self, policy: AppendFsync) {
        if policy == AppendFsync::EverySec {
            self.shared.request_sync(&mut self.shared.bg.lock());
        }
    }

    /// Take in what appenders copied into the lent window (queue lock held).
    fn absorb(&mut self, q: &mut Queue) {
        if let Some(w) = &mut q.window {
            self.written_seq = self.written_seq.max(w.last_seq);
            self.active.len = w.tail;
            let s = &self.shared.stats;
            s.records
                .fetch_add(w.last_seq - w.counted_seq, Ordering::Relaxed);
            s.mapped_records
                .fetch_add(w.last_seq - w.counted_seq, Ordering::Relaxed);
            s.bytes_written
                .fetch_add(w.tail - w.counted_tail, Ordering::Relaxed);
            w.counted_seq = w.last_seq;
            w.counted_tail = w.tail;
        }
    }

    /// Take the window back (queue lock held): appenders queue from now on.
    fn retire(&mut self, q: &mut Queue) {
        self.absorb(q);
        if let Some(w) = q.window.take() {
            self.map = Some(WriterMap {
                map: w.map,
                base: w.base,
            });
        }
        self.lent = false;
    }

    /// Lend the map as the window if appenders may copy into it (queue lock
    /// held): nothing queued (file order is sequence order), the log open
    /// and healthy, and room past the last record.
    fn lend(&mut self, q: &mut Queue) {
        if self.lent || !q.pending.is_empty() || q.failed.is_some() || q.closing {
            return;
        }
        let Some(m) = self.map.take() else {
            return;
        };
        let end = m.base + m.map.len() as u64;
        if m.base > self.active.len || end < self.active.len + MAP_MIN_LEND {
            self.map = Some(m);
            return;
        }
        let low_at = Window::low_mark(self.active.len, end, self.shared.options.preallocate_bytes);
        q.window = Some(Window {
            map: m.map,
            base: m.base,
            tail: self.active.len,
            last_seq: self.written_seq,
            low_at,
            wants_more: false,
            counted_seq: self.written_seq,
            counted_tail: self.active.len,
        });
        self.lent = true;
    }

    /// An appender asked for a longer window (queue lock held, window
    /// lent): preallocate more zeros past its end and map from its tail on,
    /// with the lock released (appenders go on copying into the old map
    /// meanwhile; the new zeros lie beyond their reach), then swap the maps.
    /// Nothing changes if the segment cannot grow (it is nearly full: the
    /// next records go through the queue, which rolls it).
    fn extend_window(&mut self, q: &mut MutexGuard<'_, Queue>) {
        if q.failed.is_some() {
            // Taken back below, not extended.
            return;
        }
        let Some(w) = q.window.as_mut() else {
            return;
        };
        w.wants_more = false;
        let from = w.tail;
        let old_end = w.end();
        let new = MutexGuard::unlocked(q, || {
            // The records copied so far go to the disk now, a window at a
            // time, instead of all at the next fsync: the fsync that seals
            // this segment at its roll (which every append waits for, as
            // they queue meanwhile) then has little left to write. Measured:
            // that fsync held XADD for 12-26 ms every 64 MiB under
            // `everysec` with a second of records dirty (docs/storage.md
            // §3.6).
            let wb = self.active.wb_from;
            if from > wb {
                self.active.file.start_writeback(wb, from - wb);
                // The last page is partly written: it goes again next time.
                self.active.wb_from = from & !4095;
            }
            let alloc = self.active.alloc;
            // NOTE: `preallocate` starts at `alloc` (`active.len` is stale
            // while the window is lent, and below it).
            self.preallocate(alloc + 1);
            if self.active.alloc <= old_end {
                return None;
            }
            let n = usize::try_from(self.active.alloc - from).ok()?;
            match self.active.file.map_writable(from, n) {
                Ok(Some(map)) => Some(map),
                _ => None,
            }
        });
        let (Some(w), Some(map)) = (q.window.as_mut(), new) else {
            return;
        };
        // Only the writer moves the window; appenders moved `tail` on,
        // inside what both maps cover.
        let old = std::mem::replace(&mut w.map, map);
        w.base = from;
        w.low_at = Window::low_mark(w.tail, w.end(), self.shared.options.preallocate_bytes);
        MutexGuard::unlocked(q, || drop(old));
    }

    /// Keep a map ready to lend (not while lent): the active segment from
    /// its last record to the end of its preallocated zeros, preallocating
    /// more first if fewer than `MAP_MIN_ROOM` bytes are left. Best effort:
    /// without a map, appends go through the queue.
    fn prepare_map(&mut self) {
        if self.lent || self.no_map || self.shared.poisoned.load(Ordering::Acquire) {
            return;
        }
        let len = self.active.len;
        let room = |m: &WriterMap| {
            (m.base <= len).then(|| (m.base + m.map.len() as u64).saturating_sub(len))
        };
        if self
            .map
            .as_ref()
            .and_then(room)
            .is_some_and(|r| r >= MAP_MIN_ROOM)
        {
            return;
        }
        self.map = None;
        if self.active.alloc < len + MAP_MIN_ROOM {
            self.preallocate(len + MAP_MIN_ROOM);
        }
        let room = self.active.alloc.saturating_sub(len);
        let Ok(n) = usize::try_from(room) else {
            return;
        };
        if room < MAP_MIN_LEND {
            return;
        }
        match self.active.file.map_writable(len, n) {
            Ok(Some(map)) => self.map = Some(WriterMap { map, base: len }),
            Ok(None) => self.no_map = true,
            // E.g. out of address space: try again after the next batch.
            Err(_) => {}
        }
    }

    /// Write a batch's frames, rolling segments as needed.
    fn write_batch(&mut self, batch: &[Pending], frames: &[u8]) -> Result<()> {
        let max = self.shared.options.segment_max_bytes;
        let (mut start, mut end) = (0usize, 0usize);
        let mut last_seq = self.written_seq;
        for p in batch {
            let flen = p.frame_len as u64;
            let used = self.active.len + (end - start) as u64;
            if used > 0 && used + flen > max {
                self.flush(&frames[start..end], last_seq)?;
                self.roll(p.seq)?;
                start = end;
            }
            end += p.frame_len;
            last_seq = p.seq;
        }
        self.flush(&frames[start..end], last_seq)
    }

    /// Write encoded frames (records up to `last_seq`) at the end of the
    /// active segment.
    fn flush(&mut self, bytes: &[u8], last_seq: u64) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = self.active.len + bytes.len() as u64;
        if end > self.active.alloc {
            self.preallocate(end);
        }
        if let Err(e) = self.active.file.write_at(self.active.len, bytes) {
            // A short write may have left whole frames of this failing
            // batch, whose clients get the error: cut the file back to the
            // last record written before it, so that a restart does not
            // bring them back (as Redis truncates its AOF after a short
            // write). Best effort: if this fails too, they may come back
            // (the outcome of a failed write is unknown, §5.3).
            // IMPORTANT: no map may outlive a cut of what it maps (SIGBUS;
            // it is not lent while a batch is written).
            self.map = None;
            let _ = self.active.file.set_len(self.active.len);
            self.active.alloc = self.active.len;
            return Err(StorageError::io("write", &self.active.path, e));
        }
        let n = bytes.len() as u64;
        self.active.len += n;
        let records = last_seq - self.written_seq;
        self.written_seq = last_seq;
        let s = &self.shared.stats;
        s.written_seq.store(last_seq, Ordering::Release);
        s.records.fetch_add(records, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.bytes_written.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Write zeros past the end of the active segment, through at least
    /// `end` and `LogOptions::preallocate_bytes` beyond what is there (at
    /// most up to the segment size), so that the records written into them
    /// later do not change the file's size: their `fdatasync` then writes
    /// the data alone, without the inode, which on ext4 saves an I/O per
    /// fsync (docs/storage.md §3.5). The zeros reach the disk with the next
    /// fsync; recovery cuts them off like any torn tail (a zero frame is
    /// never valid).
    ///
    /// Only an optimisation: if the zeros cannot be written (a full disk, a
    /// file size limit) the segment goes on without it, and whether the
    /// records themselves fit is up to their own write. Zeros partly
    /// written stay behind `len`, where records overwrite them.
    fn preallocate(&mut self, end: u64) {
        let chunk = self.shared.options.preallocate_bytes;
        let max = self.shared.options.segment_max_bytes;
        if chunk == 0 || end > max || self.active.no_prealloc {
            return;
        }
        let from = self.active.alloc.max(self.active.len);
        let to = from.saturating_add(chunk).max(end).min(max);
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if self.active.file.write_at(at, &ZEROS[..n]).is_err() {
                self.active.no_prealloc = true;
                // `alloc` only counts what is known to be zeros.
                self.active.alloc = at;
                return;
            }
            at += n as u64;
        }
        self.active.alloc = to;
    }

    /// Cut the preallocated zeros off the active segment and make its
    /// length durable (before sealing it, and at close): only the last
    /// segment may ever end in bytes that are not records (§6).
    fn trim_preallocation(&mut self) -> Result<()> {
        // IMPORTANT: unmap before the cut (SIGBUS); the window was taken
        // back before the batch that rolls, and at close.
        debug_assert!(!self.lent);
        self.map = None;
        if self.active.alloc <= self.active.len {
            return self.fsync();
        }
        self.active
            .file
            .set_len(self.active.len)
            .map_err(|e| StorageError::io("truncate", &self.active.path, e))?;
        self.active.alloc = self.active.len;
        // IMPORTANT: forced, even if every record is durable already: the
        // new length must be.
        self.shared
            .sync_now(&self.active.file, &self.active.path, self.written_seq)
    }

    /// Seal the active segment and start a new one whose first record is
    /// `base`.
    fn roll(&mut self, base: u64) -> Result<()> {
        // IMPORTANT: seal the old segment durably *before* the next one
        // exists. Recovery relies on it: only the last segment can ever
        // have a torn tail, so a bad record in an earlier one is real
        // corruption, never a crash artifact. (Done under every policy,
        // including `no`: one fsync per segment, not per record; on this
        // thread, waiting for an `everysec` fsync in progress, and refused
        // if that one failed.) The preallocated zeros are cut off first.
        self.trim_preallocation()?;
        let path = self.shared.dir.join(segment_file_name(base));
        let file = self
            .shared
            .backend
            .open_file(&path, OpenMode::CreateNew)
            .map_err(|e| StorageError::io("create segment", &path, e))?;
        // IMPORTANT: fsync the directory so the new segment's entry is
        // durable before any record in it can be acknowledged as durable
        // (fdatasync of the file does not persist its directory entry).
        self.shared
            .backend
            .sync_dir(&self.shared.dir)
            .map_err(|e| StorageError::io("fsync dir", &self.shared.dir, e))?;
        self.shared.segments.lock().push(SegmentInfo {
            base,
            path: path.clone(),
        });
        // From now on the fsync thread syncs the new segment. Its records
        // so far (none) are durable: the old segment was sealed above.
        self.shared.bg.lock().target = SyncTarget {
            file: Arc::clone(&file),
            path: path.clone(),
        };
        self.active = ActiveSegment::new(path, file, 0);
        Ok(())
    }

    /// `fdatasync` the active segment through everything written (a no-op
    /// if that is durable already); never retried on failure.
    fn fsync(&mut self) -> Result<()> {
        self.shared
            .fsync_through(&self.active.file, &self.active.path, self.written_seq)
    }
}

impl Drop for Writer {
    /// Whatever way the writer thread ends, `when_acked` waiters still get
    /// an answer (`Closed` for records it never decided).
    fn drop(&mut self) {
        let sh = &self.shared;
        let ready = {
            let mut acks = sh.acks.lock();
            acks.gone = true;
            let acked = sh.acked_seq.load(Ordering::SeqCst);
            std::mem::take(&mut acks.waiting)
                .into_iter()
                .map(|(seq, done)| (done, acks.outcome(seq, acked)))
                .collect::<Vec<_>>()
        };
        for (done, r) in ready {
            done.done(r.unwrap_or(Err(StorageError::Closed)));
        }
    }
}

/// The fsync thread: runs the `everysec` fsyncs the writer requests, and
/// the one due while the writer is idle with unsynced data (Redis's bio).
pub(super) fn run_fsync_thread(shared: &Shared) {
    let interval = shared.options.everysec_interval;
    let mut bg = shared.bg.lock();
    loop {
        if bg.stop {
            return;
        }
        if !bg.requested {
            let everysec = shared.policy() == AppendFsync::EverySec;
            let dirty = shared.stats.written_seq.load(Ordering::Acquire)
                > shared.stats.durable_seq.load(Ordering::Acquire)
                && !shared.poisoned.load(Ordering::Acquire);
            if !everysec || !dirty {
                bg.parked = true;
                if everysec {
                    // Appenders that copy into the window do not wake this
                    // thread (it would cost them a check per record): look
                    // again an interval later. A record copied right after
                    // this look is fsynced within two intervals.
                    shared.bg_wake.wait_for(&mut bg, interval);
                } else {
                    shared.bg_wake.wait(&mut bg);
                }
                bg.parked = false;
                continue;
            }
            let now = shared.options.clock.now();
            let due = bg.last_sync_at + interval;
            if now < due {
                shared.bg_wake.wait_for(&mut bg, (due - now).min(interval));
                continue;
            }
            bg.requested = true;
        }
        bg.requested = false;
        bg.running = true;
        let target = bg.target.clone();
        // Read under the lock: every record up to it is in `target` or in
        // a sealed segment (see `SyncTarget`).
        let seq = shared.stats.written_seq.load(Ordering::Acquire);
        // An error poisons the log inside `fsync_through`; the writer and
        // every later append see it.
        let _ = MutexGuard::unlocked(&mut bg, || {
            shared.fsync_through(&target.file, &target.path, seq)
        });
        bg.running = false;
        shared.bg_wake.notify_all();
    }
}

/// Stop the fsync thread and join it (if `handle` is given).
pub(super) fn stop_fsync_thread(shared: &Shared, handle: Option<JoinHandle<()>>) {
    {
        let mut bg = shared.bg.lock();
        bg.stop = true;
        shared.bg_wake.notify_all();
    }
    if let Some(h) = handle {
        let _ = h.join();
    }
}
