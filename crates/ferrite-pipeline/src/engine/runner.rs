//! The runner: one thread that runs every pipeline's epochs, off the
//! threads that serve connections.
//!
//! An epoch of one pipeline:
//! 1. with the store lock: find the position (the last-delivered ID of the
//!    pipeline's group on the source) and copy up to [`BATCH`] entries
//!    after it (at most [`BATCH_BYTES`]) into an arena; evicted blocks are
//!    read ahead first, without the lock;
//! 2. without any lock: evaluate the plan on the batch;
//! 3. with the store lock, as one `Session::atomically` unit (one lock
//!    hold, one commit-log record): check that nothing moved (same
//!    pipeline generation, same position, source and sink still streams),
//!    XADD the results to the sink, move the group with `XGROUP SETID ...
//!    ENTRIESREAD n` (what XREADGROUP would have made it), log the
//!    counters;
//! 4. under `appendfsync always`, wait until the record is durable before
//!    the next epoch of any pipeline.
//!
//! Exactly once: the results of the entries up to the position and the
//! position itself are applied and logged together, so a crash recovers
//! both or neither, and the next epoch starts where the recovered position
//! says. Stateless plans are deterministic functions of the entry, and a
//! grouped plan's state changes commit in the same record (`W`), so an
//! epoch lost in a crash is recomputed from the recovered state to the
//! same results (what the wall clock decides, IDLE and EMIT UPDATES EVERY,
//! by the clock of the new evaluation).

use super::{Engine, Status};
use crate::entry::{Entry, EntryId, Fields, FlatRecords, Record};
use crate::plan::Plan;
use bytes::Bytes;
use ferrite_db::embedded::Session;
use ferrite_db::shared::{now_ms, Shared};
use ferrite_db::store::{Store, Value};
use ferrite_streams::StreamId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most entries read per epoch.
pub const BATCH: usize = 4096;
/// Most bytes of entries copied per epoch (one entry may exceed it alone).
pub const BATCH_BYTES: usize = 8 << 20;
/// Most bytes of results committed per epoch: the record stays far below
/// the commit log's limit, and the lock hold short. The results past it
/// are computed again by the next epoch (plans are deterministic).
pub const EPOCH_OUT_BYTES: usize = 4 << 20;
/// How long the runner sleeps when nothing wakes it (a safety net: the
/// sources' observers wake it).
const IDLE: Duration = Duration::from_millis(250);

/// The runner thread of an engine; stops (and joins) when dropped.
pub struct Runner {
    engine: Arc<Engine>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    /// Starts running the pipelines of the engine installed in `shared`
    /// (after recovery). `None` if no engine is installed.
    pub fn start(shared: &Arc<Shared>) -> Option<Runner> {
        let engine = Engine::get(shared)?;
        engine.stop.store(false, Ordering::Release);
        let (e2, s2) = (engine.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("pipelines".into())
            .spawn(move || run(e2, s2))
            .ok()?;
        Some(Runner {
            engine,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its current epoch.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.engine.stop.store(true, Ordering::Release);
        self.engine.wake.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One pipeline's work, copied out of the engine's state.
struct Job {
    name: String,
    gen: u64,
    db: usize,
    source: Bytes,
    sink: Bytes,
    interval: Duration,
    sink_maxlen: Option<(bool, u64)>,
    late: Option<Bytes>,
    hash: Option<crate::sql::HashSink>,
    plan: Arc<Mutex<Plan>>,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    pin: Arc<super::Pin>,
}

enum Outcome {
    /// Nothing to read.
    Idle,
    /// Committed a full batch: more may be waiting.
    More,
    /// Committed (or discarded) a partial batch.
    Done,
}

fn run(engine: Arc<Engine>, shared: Arc<Shared>) {
    let mut session = Session::internal(shared.clone());
    let mut last_epoch: HashMap<String, Instant> = HashMap::new();
    let mut behind: std::collections::HashSet<String> = Default::default();
    let mut scratch = Scratch::default();
    while !engine.stop.load(Ordering::Acquire) {
        let jobs = jobs(&engine);
        let mut wait = IDLE;
        let mut more = false;
        let now = Instant::now();
        for job in jobs {
            if engine.stop.load(Ordering::Acquire) {
                break;
            }
            let mut tick = false;
            if !job.dirty.load(Ordering::Acquire) {
                // Nothing new to read; a grouped plan may still have
                // something due by the clock (IDLE, EMIT UPDATES EVERY).
                let Some(due) = job.plan.lock().next_tick_ms() else {
                    continue;
                };
                let now_wall = now_ms() as i64;
                if due > now_wall {
                    let ms = (due - now_wall).min(IDLE.as_millis() as i64) as u64;
                    wait = wait.min(Duration::from_millis(ms));
                    continue;
                }
                tick = true;
            }
            // A pipeline that is caught up runs at most one epoch per
            // COMMIT_INTERVAL: entries arriving sooner wait and go into the
            // next, larger epoch. One that is behind (its last batch was
            // full) runs again at once.
            if let Some(t) = last_epoch.get(&job.name) {
                let due = *t + job.interval;
                if due > now && !behind.contains(&job.name) {
                    wait = wait.min(due - now);
                    continue;
                }
            }
            // A panic in an operator (a bug) fails its pipeline, not the
            // runner: the others go on. Its epoch was not committed (a panic
            // inside the commit is caught by `cmd::guarded`, which stops
            // writes, as for any command).
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if tick {
                    tick_epoch(&engine, &shared, &mut session, &job, &mut scratch)
                } else {
                    epoch(&engine, &shared, &mut session, &job, &mut scratch)
                }
            }));
            let outcome = match ran {
                Ok(o) => o,
                Err(p) => {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    fail(&engine, &job, format!("internal error (a panic: {what})"));
                    job.plan.lock().rollback_epoch();
                    scratch = Scratch::default();
                    Outcome::Idle
                }
            };
            match outcome {
                Outcome::Idle => {
                    behind.remove(&job.name);
                }
                Outcome::Done => {
                    behind.remove(&job.name);
                    last_epoch.insert(job.name.clone(), Instant::now());
                }
                Outcome::More => {
                    behind.insert(job.name.clone());
                    last_epoch.insert(job.name.clone(), Instant::now());
                    job.dirty.store(true, Ordering::Release);
                    more = true;
                }
            }
        }
        {
            let st = engine.state.lock();
            last_epoch.retain(|n, _| st.pipes.contains_key(n));
            behind.retain(|n| st.pipes.contains_key(n));
        }
        if !more {
            engine.wake.wait(wait);
        }
    }
}

fn jobs(engine: &Engine) -> Vec<Job> {
    let st = engine.state.lock();
    st.pipes
        .values()
        .filter(|p| p.status == Status::Running)
        .filter_map(|p| {
            Some(Job {
                name: p.def.name.clone(),
                gen: p.gen,
                db: p.def.db,
                source: Bytes::copy_from_slice(p.source.as_bytes()),
                sink: Bytes::copy_from_slice(p.sink.as_bytes()),
                interval: Duration::from_millis(p.def.commit_interval_ms),
                sink_maxlen: p.def.sink_maxlen,
                late: p
                    .def
                    .window
                    .late_stream
                    .as_deref()
                    .map(|l| Bytes::copy_from_slice(l.as_bytes())),
                hash: p.hash.clone(),
                plan: p.plan.clone()?,
                dirty: p.dirty.clone(),
                pin: p.pin.clone(),
            })
        })
        .collect()
}

/// Entries copied out of the store: one byte arena, a span per field name
/// and value.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
    /// Per entry: its ID, first span, pair count, and its names' layout
    /// ([`Fields::layout`]).
    entries: Vec<(StreamId, usize, usize, u64)>,
    out: Vec<Record>,
    /// A grouped plan's direct results ([`Plan::process_batch_flat`]),
    /// after `out`'s.
    flat: FlatRecords,
    /// A stateful plan's epoch: entries for the LATE stream and the state
    /// change to log.
    late: Vec<Record>,
    delta: Option<Vec<u8>>,
    /// The window figures after the epoch, published when it commits.
    window: Option<crate::window::WindowStats>,
}

/// What a stateful plan's epoch commits besides its results.
#[derive(Clone, Copy)]
struct EpochState<'a> {
    delta: &'a [u8],
    late: &'a [Record],
    window: Option<&'a crate::window::WindowStats>,
}

fn out_bytes(out: &[Record], flat: &FlatRecords) -> usize {
    let records: usize = out
        .iter()
        .map(|r| {
            r.fields
                .iter()
                .map(|(f, v)| f.len() + v.len() + 8)
                .sum::<usize>()
        })
        .sum();
    records + flat.size()
}

struct ArenaFields<'a> {
    bytes: &'a [u8],
    spans: &'a [(u32, u32)],
    layout: u64,
}

impl Fields for ArenaFields<'_> {
    #[inline]
    fn layout(&self) -> Option<u64> {
        Some(self.layout)
    }
    #[inline]
    fn len(&self) -> usize {
        self.spans.len() / 2
    }
    #[inline]
    fn name(&self, i: usize) -> &[u8] {
        self.span(2 * i)
    }
    #[inline]
    fn value(&self, i: usize) -> &[u8] {
        self.span(2 * i + 1)
    }
}

impl ArenaFields<'_> {
    #[inline]
    fn span(&self, i: usize) -> &[u8] {
        self.spans
            .get(i)
            .and_then(|&(s, e)| self.bytes.get(s as usize..e as usize))
            .unwrap_or(&[])
    }
}

/// What the read step found.
enum Read {
    /// Entries after `cursor` are in the scratch arena; `full`: the batch
    /// limit stopped the read.
    Batch { cursor: StreamId, full: bool },
    /// The pipeline cannot go on: why.
    Fail(String),
}

fn source_stream<'s>(
    store: &'s Store,
    db: usize,
    source: &[u8],
    name: &str,
) -> Result<&'s ferrite_streams::Stream, String> {
    let src = String::from_utf8_lossy(source);
    match store.dbs.get(db).and_then(|d| d.get(source)) {
        Some(Value::Stream(s)) if s.group(name.as_bytes()).is_some() => Ok(s),
        Some(Value::Stream(_)) => Err(format!(
            "the consumer group '{name}' on '{src}' that holds this pipeline's position is gone (destroyed, or the source was deleted and created again); PIPELINE.RESET {name} starts it again"
        )),
        Some(v) => Err(format!(
            "the source '{src}' now holds a {}, not a stream",
            v.type_name()
        )),
        None => Err(format!("the source stream '{src}' was deleted")),
    }
}

fn read(shared: &Shared, job: &Job, sc: &mut Scratch) -> Read {
    sc.bytes.clear();
    sc.spans.clear();
    sc.entries.clear();
    // Blocks evicted from memory are read ahead without the lock.
    let ahead = {
        let store = shared.store.lock();
        let s = match source_stream(&store, job.db, &job.source, &job.name) {
            Ok(s) => s,
            Err(m) => return Read::Fail(m),
        };
        let after = s
            .group(job.name.as_bytes())
            .map_or(StreamId::MAX, |g| g.last_id());
        match (after.incr(), &store.block_cache) {
            (Some(start), Some(cache)) => {
                let blocks = s.evicted_in_range(start, StreamId::MAX, false, Some(BATCH), 64);
                (!blocks.is_empty()).then(|| (cache.clone(), blocks))
            }
            _ => None,
        }
    };
    if let Some((cache, blocks)) = &ahead {
        cache.stage(cache.read_ahead(blocks));
    }
    let store = shared.store.lock();
    let result = (|| {
        let s = source_stream(&store, job.db, &job.source, &job.name)?;
        let cursor = s
            .group(job.name.as_bytes())
            .map_or(StreamId::MAX, |g| g.last_id());
        let Some(start) = cursor.incr() else {
            return Ok(Read::Batch {
                cursor,
                full: false,
            });
        };
        let mut full = false;
        // The entries' bytes (counted as if every name were copied) and
        // the previous entry's first span, pair count and layout: an entry
        // whose names are the previous one's shares its name spans and
        // layout (most entries of a stream have the same names).
        let mut read_bytes = 0usize;
        let mut prev: Option<(usize, usize, u64)> = None;
        let mut prev_entry: Option<ferrite_streams::EntryRef<'_>> = None;
        for e in s.iter_range(start, StreamId::MAX, false) {
            if sc.entries.len() >= BATCH || read_bytes >= BATCH_BYTES {
                full = true;
                break;
            }
            let first = sc.spans.len();
            let mut n = 0;
            match prev {
                // Names known to be the previous entry's (the master
                // entry's of its block, or of a block with the same ones):
                // only the values are read.
                Some((pf, pn, layout)) if prev_entry.is_some_and(|p| e.same_names_as(&p)) => {
                    for v in e.values() {
                        let Some(&name) = sc.spans.get(pf + 2 * n) else {
                            break;
                        };
                        read_bytes += (name.1 - name.0) as usize + v.len();
                        sc.spans.push(name);
                        let s0 = sc.bytes.len();
                        sc.bytes.extend_from_slice(v);
                        sc.spans.push((s0 as u32, sc.bytes.len() as u32));
                        n += 1;
                    }
                    let layout = if n == pn {
                        layout
                    } else {
                        crate::entry::next_layout()
                    };
                    sc.entries.push((e.id(), first, n, layout));
                    prev = Some((first, n, layout));
                    prev_entry = Some(e);
                    continue;
                }
                _ => {}
            }
            let mut same = prev.is_some();
            for (f, v) in e.pairs() {
                read_bytes += f.len() + v.len();
                let shared = match prev {
                    Some((pf, pn, _)) if same && n < pn => sc
                        .spans
                        .get(pf + 2 * n)
                        .copied()
                        .filter(|&(a, b)| sc.bytes.get(a as usize..b as usize) == Some(f)),
                    _ => None,
                };
                match shared {
                    Some(span) => sc.spans.push(span),
                    None => {
                        same = false;
                        let s0 = sc.bytes.len();
                        sc.bytes.extend_from_slice(f);
                        sc.spans.push((s0 as u32, sc.bytes.len() as u32));
                    }
                }
                let s0 = sc.bytes.len();
                sc.bytes.extend_from_slice(v);
                sc.spans.push((s0 as u32, sc.bytes.len() as u32));
                n += 1;
            }
            let layout = match prev {
                Some((_, pn, l)) if same && n == pn => l,
                _ => crate::entry::next_layout(),
            };
            sc.entries.push((e.id(), first, n, layout));
            prev = Some((first, n, layout));
            prev_entry = Some(e);
        }
        Ok(Read::Batch { cursor, full })
    })();
    drop(store);
    if let Some((cache, blocks)) = &ahead {
        cache.unstage(blocks);
    }
    result.unwrap_or_else(Read::Fail)
}

fn fail(engine: &Engine, job: &Job, msg: String) {
    let mut st = engine.state.lock();
    if let Some(p) = st.pipes.get_mut(&job.name) {
        if p.gen == job.gen {
            tracing::warn!(pipeline = %job.name, "pipeline failed: {msg}");
            p.status = Status::Failed(msg);
        }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn epoch(
    engine: &Engine,
    shared: &Arc<Shared>,
    session: &mut Session,
    job: &Job,
    sc: &mut Scratch,
) -> Outcome {
    job.dirty.store(false, Ordering::Release);
    let started = Instant::now();
    let (cursor, full) = match read(shared, job, sc) {
        Read::Fail(m) => {
            fail(engine, job, m);
            return Outcome::Idle;
        }
        Read::Batch { cursor, full } => (cursor, full),
    };
    if sc.entries.is_empty() {
        return Outcome::Idle;
    }
    // Evaluate, without any lock.
    let fields: Vec<ArenaFields<'_>> = sc
        .entries
        .iter()
        .map(|&(_, first, n, layout)| ArenaFields {
            bytes: &sc.bytes,
            spans: sc.spans.get(first..first + 2 * n).unwrap_or(&[]),
            layout,
        })
        .collect();
    let entries: Vec<Entry<'_>> = sc
        .entries
        .iter()
        .zip(&fields)
        .map(|(&(id, _, _, _), f)| Entry::new(EntryId::new(id.ms, id.seq), f))
        .collect();
    sc.out.clear();
    sc.flat.clear();
    let mut plan = job.plan.lock();
    let stateful = plan.is_stateful();
    if stateful {
        plan.begin_epoch();
        plan.set_clock(now_ms() as i64);
    }
    let mut stats = plan.process_batch_flat(&entries, &mut sc.out, &mut sc.flat);
    let mut taken = entries.len();
    let mut too_big = false;
    if stateful {
        // A stateful plan cannot skip an entry's results, nor evaluate an
        // entry twice on the same state: the epoch is evaluated again on
        // half the entries (state taken back) until its results fit. One
        // entry whose results alone exceed the bound (a watermark jump that
        // closes many windows) is taken whole.
        while taken > 1 && out_bytes(&sc.out, &sc.flat) > EPOCH_OUT_BYTES {
            plan.rollback_epoch();
            taken /= 2;
            plan.begin_epoch();
            plan.set_clock(now_ms() as i64);
            sc.out.clear();
            sc.flat.clear();
            stats = plan.process_batch_flat(&entries[..taken], &mut sc.out, &mut sc.flat);
        }
        if let Some(msg) = plan
            .fatal()
            .map(str::to_string)
            .or_else(|| over_server_limit(shared, &plan))
        {
            plan.rollback_epoch();
            drop(plan);
            fail(engine, job, msg);
            return Outcome::Idle;
        }
        sc.late = plan.take_late();
        sc.delta = plan.epoch_delta();
        sc.window = plan.window_stats();
    } else if let Some(cut) = cut_point(&sc.out, &entries) {
        // (A stateless plan has no window operator: `sc.flat` is empty.)
        // The epoch takes the entries whose results fit in EPOCH_OUT_BYTES;
        // the rest are evaluated again by the next epoch. A first entry
        // whose results alone exceed it is skipped and counted as failed.
        sc.out.clear();
        if cut == 0 {
            taken = 1;
            too_big = true;
            stats = crate::ops::BatchStats {
                input: 1,
                failed: 1,
                ..Default::default()
            };
        } else {
            taken = cut;
            stats = plan.process_batch_flat(&entries[..cut], &mut sc.out, &mut sc.flat);
        }
    }
    drop(plan);
    drop(entries);
    drop(fields);
    if job.hash.is_some() {
        // The HASH sink writes records (not the hot path).
        sc.flat.drain_into(&mut sc.out);
    }
    let ids: Vec<StreamId> = sc.entries[..taken]
        .iter()
        .map(|&(id, _, _, _)| id)
        .collect();
    let Some(&last) = ids.last() else {
        if stateful {
            job.plan.lock().rollback_epoch();
        }
        return Outcome::Idle;
    };
    let eval_ns = started.elapsed().as_nanos() as u64;
    session.select(job.db);
    let out = &sc.out;
    let flat = &sc.flat;
    let state = stateful.then_some(EpochState {
        delta: sc.delta.as_deref().unwrap_or_default(),
        late: &sc.late,
        window: sc.window.as_ref(),
    });
    let committed = commit_unpinned(engine, session, job, |a| {
        commit(
            engine, a, job, cursor, &ids, last, out, flat, &stats, too_big, eval_ns, state,
        )
    });
    if stateful && !matches!(committed, Ok((Ok(()), _))) {
        // Not committed: the state goes back with the position.
        job.plan.lock().rollback_epoch();
    }
    match settle(engine, shared, job, committed) {
        Some(true) if full || taken < sc.entries.len() => Outcome::More,
        Some(true) => Outcome::Done,
        Some(false) => {
            job.dirty.store(true, Ordering::Release);
            Outcome::Done
        }
        None => Outcome::Idle,
    }
}

enum Skip {
    /// Something moved between the read and the commit (RESET, a new
    /// definition, PAUSE, the group's position): the batch is dropped
    /// unapplied and read again.
    Stale,
    /// A checkpoint pins the plan's committed state (`Pin`): nothing was
    /// applied; [`commit_unpinned`] commits again once it is encoded.
    Busy,
    /// The pipeline cannot go on.
    Fail(String),
}

/// The server-wide cap on one pipeline's window state
/// (`pipeline-max-state`; STATE_LIMIT, checked by the plan, may be lower).
fn over_server_limit(shared: &Shared, plan: &Plan) -> Option<String> {
    let cap = shared.config.read().pipeline_max_state;
    let w = plan.window_stats()?;
    (cap > 0 && w.state_bytes > cap).then(|| {
        format!(
            "window state exceeds pipeline-max-state ({} bytes > {cap}; {} keys, {} open windows): raise pipeline-max-state, shorten the windows or lower the key cardinality",
            w.state_bytes, w.keys, w.open_windows
        )
    })
}

/// An epoch without entries: what a grouped plan's clock made due (IDLE
/// closing windows, EMIT UPDATES flushes), committed like an epoch's
/// results with its state change, the position unmoved.
fn tick_epoch(
    engine: &Engine,
    shared: &Arc<Shared>,
    session: &mut Session,
    job: &Job,
    sc: &mut Scratch,
) -> Outcome {
    let started = Instant::now();
    sc.out.clear();
    sc.flat.clear();
    let mut plan = job.plan.lock();
    plan.begin_epoch();
    plan.set_clock(now_ms() as i64);
    plan.tick_flat(&mut sc.out, &mut sc.flat);
    if let Some(msg) = plan
        .fatal()
        .map(str::to_string)
        .or_else(|| over_server_limit(shared, &plan))
    {
        plan.rollback_epoch();
        drop(plan);
        fail(engine, job, msg);
        return Outcome::Idle;
    }
    sc.late = plan.take_late();
    sc.delta = plan.epoch_delta();
    sc.window = plan.window_stats();
    drop(plan);
    if job.hash.is_some() {
        sc.flat.drain_into(&mut sc.out);
    }
    let eval_ns = started.elapsed().as_nanos() as u64;
    session.select(job.db);
    let out = &sc.out;
    let flat = &sc.flat;
    let state = Some(EpochState {
        delta: sc.delta.as_deref().unwrap_or_default(),
        late: &sc.late,
        window: sc.window.as_ref(),
    });
    let stats = crate::ops::BatchStats::default();
    let committed = commit_unpinned(engine, session, job, |a| {
        commit(
            engine,
            a,
            job,
            StreamId::MAX,
            &[],
            StreamId::MAX,
            out,
            flat,
            &stats,
            false,
            eval_ns,
            state,
        )
    });
    if !matches!(committed, Ok((Ok(()), _))) {
        job.plan.lock().rollback_epoch();
    }
    match settle(engine, shared, job, committed) {
        Some(_) => Outcome::Done,
        None => Outcome::Idle,
    }
}

/// Runs an epoch's commit unit; while a checkpoint pins the plan (the
/// unit returned [`Skip::Busy`], applying nothing), waits for the
/// checkpoint to encode the state, holding no lock (its encoder takes the
/// plan's lock), then runs it again: it checks everything again, the
/// evaluated epoch still open. Gives up (`Busy`) only when the runner stops.
fn commit_unpinned(
    engine: &Engine,
    session: &mut Session,
    job: &Job,
    mut unit: impl FnMut(&mut ferrite_db::embedded::Atomic<'_>) -> Result<(), Skip>,
) -> Result<(Result<(), Skip>, Option<u64>), ferrite_db::reply::Reply> {
    loop {
        let r = session.atomically(&mut unit);
        if !matches!(r, Ok((Err(Skip::Busy), _))) {
            return r;
        }
        while !job.pin.wait_free(Duration::from_millis(100)) {
            if engine.stop.load(Ordering::Acquire) {
                return r;
            }
        }
    }
}

/// After an epoch's commit: under `appendfsync always`, wait until its
/// record is durable. `Some(true)` committed, `Some(false)` stale (dropped
/// unapplied), `None` failed (the pipeline is marked failed).
fn settle(
    engine: &Engine,
    shared: &Shared,
    job: &Job,
    committed: Result<(Result<(), Skip>, Option<u64>), ferrite_db::reply::Reply>,
) -> Option<bool> {
    match committed {
        Ok((Ok(()), seq)) => {
            if let (Some(seq), Some(p)) = (seq, shared.persist.get()) {
                if p.fsync_policy() == ferrite_storage::AppendFsync::Always {
                    let _ = p.wait_blocking(seq, Duration::from_secs(30));
                }
            }
            Some(true)
        }
        Ok((Err(Skip::Stale | Skip::Busy), _)) => Some(false),
        Ok((Err(Skip::Fail(m)), _)) => {
            fail(engine, job, m);
            None
        }
        Err(reply) => {
            let m = match reply {
                ferrite_db::reply::Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
                r => format!("{r:?}"),
            };
            fail(engine, job, format!("the epoch could not commit: {m}"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn commit(
    engine: &Engine,
    a: &mut ferrite_db::embedded::Atomic<'_>,
    job: &Job,
    cursor: StreamId,
    ids: &[StreamId],
    last: StreamId,
    out: &[Record],
    flat: &FlatRecords,
    stats: &crate::ops::BatchStats,
    too_big: bool,
    eval_ns: u64,
    state: Option<EpochState<'_>>,
) -> Result<(), Skip> {
    let t0 = Instant::now();
    let sink_seen = {
        let st = engine.state.lock();
        match st.pipes.get(&job.name) {
            Some(p) if p.gen == job.gen && p.status == Status::Running => p.sink_seen,
            _ => return Err(Skip::Stale),
        }
    };
    // IMPORTANT: a checkpoint captured the keyspace with the plan's state
    // as of its last epoch and has not encoded that state yet: ending an
    // epoch now would reach it with the position of the keyspace before.
    // Checked under the store lock, which a checkpoint's capture needs: no
    // pin can appear before this unit's `end_epoch`.
    if state.is_some() && job.pin.held() {
        return Err(Skip::Busy);
    }
    // A tick (no entries) does not move the position.
    let tick = ids.is_empty();
    // Nothing moved since the read?
    let (entries_read, lost) = if tick {
        (0, 0)
    } else {
        let store = a.store();
        let s = source_stream(store, job.db, &job.source, &job.name).map_err(Skip::Fail)?;
        let g = s.group(job.name.as_bytes()).ok_or(Skip::Stale)?;
        if g.last_id() != cursor {
            return Err(Skip::Stale);
        }
        progress(s, g, ids)
    };
    let sink = String::from_utf8_lossy(&job.sink).into_owned();
    match a.store().dbs.get(job.db).and_then(|d| d.get(&job.sink)) {
        _ if job.hash.is_some() => {}
        Some(Value::Stream(_)) => {}
        Some(v) => {
            return Err(Skip::Fail(format!(
                "the sink '{sink}' holds a {}, not a stream",
                v.type_name()
            )))
        }
        None if sink_seen => {
            return Err(Skip::Fail(format!(
                "the sink stream '{sink}' was deleted by another client"
            )))
        }
        None => {}
    }
    let late_stream = job.late.as_ref();
    if let Some(l) = late_stream {
        if let Some(v) = a.store().dbs.get(job.db).and_then(|d| d.get(l)) {
            if !matches!(v, Value::Stream(_)) {
                return Err(Skip::Fail(format!(
                    "the LATE stream '{}' holds a {}, not a stream",
                    String::from_utf8_lossy(l),
                    v.type_name()
                )));
            }
        }
    }
    let mut failed = stats.failed;
    let mut written = 0u64;
    let mut first_error = stats
        .first_error
        .as_ref()
        .map(|(id, e)| format!("entry {id}: {e}"));
    if too_big {
        first_error = Some(format!(
            "one entry's results exceed {EPOCH_OUT_BYTES} bytes: skipped"
        ));
    }
    if let Some(h) = &job.hash {
        let (w, f) = write_hashes(a, job, h, out).map_err(Skip::Fail)?;
        written += w;
        failed += f;
        if f > 0 {
            first_error
                .get_or_insert_with(|| "a result has no fields (every value was NULL)".into());
        }
    }
    if job.hash.is_none() {
        // Every value was NULL: XADD cannot write an entry with no fields.
        let empty =
            out.iter().filter(|r| r.fields.is_empty()).count() as u64 + flat.empty_results() as u64;
        if empty > 0 {
            failed += empty;
            first_error
                .get_or_insert_with(|| "a result has no fields (every value was NULL)".into());
        }
        let results = out
            .iter()
            .filter(|r| !r.fields.is_empty())
            .map(|r| r.fields.as_slice());
        // The flat results' fields as slices of their buffer, one vector
        // for the epoch (they follow `out`'s; a plan fills one or the
        // other).
        let pairs = flat.pairs();
        let flat_results = flat.non_empty(&pairs);
        let appended = a
            .xadd_batch(&job.sink, results, job.sink_maxlen)
            .and_then(|n| {
                if flat.is_empty() {
                    return Ok(n);
                }
                a.xadd_batch(&job.sink, flat_results, job.sink_maxlen)
                    .map(|m| n + m)
                    .map_err(|(m, e)| (n + m, e))
            });
        match appended {
            Ok(n) => written += n,
            // Checked above, so only a sink whose IDs are exhausted gets
            // here; the writes so far stay with the position not moved.
            Err((_, reply)) => {
                let e = match reply {
                    ferrite_db::reply::Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
                    r => format!("{r:?}"),
                };
                return Err(Skip::Fail(format!("XADD to the sink '{sink}' failed: {e}")));
            }
        }
    }
    if let (Some(st), Some(l)) = (&state, late_stream) {
        let late = st.late.iter().map(|r| r.fields.as_slice());
        if let Err((_, reply)) = a.xadd_batch(l, late, None) {
            let e = match reply {
                ferrite_db::reply::Reply::Error(e) => String::from_utf8_lossy(&e).into_owned(),
                r => format!("{r:?}"),
            };
            return Err(Skip::Fail(format!(
                "XADD to the LATE stream '{}' failed: {e}",
                String::from_utf8_lossy(l)
            )));
        }
    }
    let reply = if tick {
        ferrite_db::reply::Reply::ok()
    } else {
        a.call(vec![
            b("XGROUP"),
            b("SETID"),
            job.source.clone(),
            b(&job.name),
            b(&last.to_string()),
            b("ENTRIESREAD"),
            b(&entries_read.to_string()),
        ])
    };
    if let ferrite_db::reply::Reply::Error(e) = reply {
        return Err(Skip::Fail(format!(
            "moving the position failed: {}",
            String::from_utf8_lossy(&e)
        )));
    }
    let sink_exists = matches!(
        a.store().dbs.get(job.db).and_then(|d| d.get(&job.sink)),
        Some(Value::Stream(_))
    );
    let counters = {
        let mut st = engine.state.lock();
        let Some(p) = st.pipes.get_mut(&job.name) else {
            return Err(Skip::Stale);
        };
        let c = &mut p.counters;
        c.epoch += 1;
        c.entries_in += ids.len() as u64;
        c.entries_out += written;
        c.entries_filtered += stats.filtered;
        c.entries_failed += failed;
        c.entries_lost += lost;
        c.last_commit_ms = now_ms();
        c.busy_ns += eval_ns + t0.elapsed().as_nanos() as u64;
        if first_error.is_some() {
            p.last_error = first_error;
        }
        p.sink_seen |= sink_exists;
        if let Some(st) = &state {
            p.window_stats = st.window.cloned();
        }
        p.counters.clone()
    };
    a.log_subsystem(
        super::SUBSYSTEM,
        &super::durable::effect_epoch(&job.name, &counters),
    );
    if let Some(st) = state {
        a.log_subsystem(
            super::SUBSYSTEM,
            &super::durable::effect_state(&job.name, st.delta),
        );
        // IMPORTANT: under the store lock, in the record's unit: a
        // checkpoint never sees the position moved without the state.
        job.plan.lock().end_epoch();
    }
    Ok(())
}

/// Writes each result to the hash `prefix:<key>`, replacing what was there
/// (the hash is the key's latest result: a field a result leaves NULL must
/// not keep an older value), then PEXPIRE with the TTL. A key holding
/// another type fails the pipeline, as a sink of another type does.
/// Gives (written, failed).
fn write_hashes(
    a: &mut ferrite_db::embedded::Atomic<'_>,
    job: &Job,
    h: &crate::sql::HashSink,
    out: &[Record],
) -> Result<(u64, u64), String> {
    let (mut written, mut failed) = (0u64, 0u64);
    let mut key = Vec::with_capacity(h.prefix.len() + 32);
    for r in out {
        if r.fields.is_empty() {
            failed += 1;
            continue;
        }
        key.clear();
        key.extend_from_slice(h.prefix.as_bytes());
        key.push(b':');
        key.extend_from_slice(r.key.as_deref().unwrap_or_default());
        if let Some(v) = a.store().dbs.get(job.db).and_then(|d| d.get(&key)) {
            if !matches!(v, Value::Hash(_)) {
                return Err(format!(
                    "the HASH sink key '{}' holds a {}, not a hash",
                    String::from_utf8_lossy(&key),
                    v.type_name()
                ));
            }
        }
        let k = Bytes::copy_from_slice(&key);
        let mut run = |argv: Vec<Bytes>| match a.call(argv) {
            ferrite_db::reply::Reply::Error(e) => Err(format!(
                "writing the HASH sink key '{}' failed: {}",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(&e)
            )),
            _ => Ok(()),
        };
        run(vec![b("DEL"), k.clone()])?;
        let mut argv = Vec::with_capacity(2 + 2 * r.fields.len());
        argv.push(b("HSET"));
        argv.push(k.clone());
        for (f, v) in &r.fields {
            argv.push(f.clone());
            argv.push(v.clone());
        }
        run(argv)?;
        if let Some(ttl) = h.ttl_ms {
            run(vec![b("PEXPIRE"), k, b(&ttl.to_string())])?;
        }
        written += 1;
    }
    Ok((written, failed))
}

/// The index of the first entry whose results do not fit in
/// [`EPOCH_OUT_BYTES`] (results come in input order), if one does not.
fn cut_point(out: &[Record], entries: &[Entry<'_>]) -> Option<usize> {
    let mut bytes = 0usize;
    for r in out {
        bytes += r
            .fields
            .iter()
            .map(|(f, v)| f.len() + v.len() + 8)
            .sum::<usize>();
        if bytes > EPOCH_OUT_BYTES {
            return Some(
                entries
                    .iter()
                    .position(|e| e.id == r.source_id)
                    .unwrap_or(0),
            );
        }
    }
    None
}

/// The group's `entries_read` once `ids` are consumed, and how many
/// entries between the position and the first of them were trimmed before
/// the pipeline read them.
///
/// Redis's own bookkeeping (XREADGROUP's, [`Group::entries_read_after`])
/// counts one per delivered entry, so after an XTRIM of unread entries its
/// counter stays behind `entries-added` for good and the group shows a lag
/// that never goes away. When the first entry's logical number is known
/// (no XDEL tombstones from it on: the stream's first entry, or an
/// untouched stream) it is used instead, which counts the trimmed entries
/// as read and lost.
fn progress(
    s: &ferrite_streams::Stream,
    g: &ferrite_streams::Group,
    ids: &[StreamId],
) -> (i64, u64) {
    use ferrite_streams::group::{estimate_distance_from_first_ever_entry, range_has_tombstones};
    let (Some(&first), Some(before)) = (ids.first(), g.entries_read()) else {
        return (g.entries_read_after(s, ids.iter().copied()), 0);
    };
    let at_first = estimate_distance_from_first_ever_entry(s, first);
    if at_first < 1 || range_has_tombstones(s, Some(first), None) {
        return (g.entries_read_after(s, ids.iter().copied()), 0);
    }
    let lost = (at_first - 1 - before).max(0) as u64;
    (at_first - 1 + ids.len() as i64, lost)
}

#[cfg(test)]
mod tests {
    use super::super::durable::Durable;
    use super::*;
    use ferrite_db::persist::{Persistence, Subsystem};
    use ferrite_db::reply::Reply;

    const VIEWS: &str = "INSERT INTO views SELECT page, window_start, count(*) AS n \
                         FROM clicks GROUP BY page, HOP(_ms, INTERVAL '1' MINUTE, INTERVAL '1' HOUR)";

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("ferrite-runner-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    /// A server state on `dir` with the engine installed and the commit
    /// log open (recovered); no runner (tests run epochs themselves).
    fn open(dir: &std::path::Path) -> (Arc<Shared>, Arc<Engine>) {
        let mut cfg = ferrite_db::config::Config::default();
        cfg.set_startup("dir", &dir.to_string_lossy())
            .unwrap_or_else(|e| panic!("{e:?}"));
        cfg.set_startup("auto-checkpoint-min-size", "100gb")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let shared = Shared::new(cfg);
        let engine = crate::engine::install(&shared);
        let (p, _) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(ferrite_db::persist::install(&shared, p));
        (shared, engine)
    }

    fn call(s: &mut Session, parts: &[&str]) -> Reply {
        let r = s.call(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        );
        assert!(!r.is_error(), "{parts:?}: {r:?}");
        r
    }

    fn the_job(engine: &Engine) -> Job {
        jobs(engine)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no pipeline"))
    }

    fn section(engine: &Arc<Engine>, shared: &Shared) -> Vec<u8> {
        Durable(engine.clone())
            .snapshot(&shared.store.lock())
            .into_bytes()
    }

    /// `clicks` (4 entries over 3 pages) and the `views` pipeline after
    /// its first epoch, run by `rs` with `sc`.
    struct Views {
        dir: std::path::PathBuf,
        shared: Arc<Shared>,
        engine: Arc<Engine>,
        s: Session,
        rs: Session,
        sc: Scratch,
        job: Job,
    }

    fn views_after_one_epoch(tag: &str) -> Views {
        let dir = temp_dir(tag);
        let (shared, engine) = open(&dir);
        let mut s = Session::internal(shared.clone());
        for (i, page) in ["a", "b", "a", "c"].iter().enumerate() {
            call(
                &mut s,
                &["XADD", "clicks", &format!("{}-1", 1000 + i), "page", page],
            );
        }
        call(
            &mut s,
            &["PIPELINE.CREATE", "views", "FROM", "0", "AS", VIEWS],
        );
        let mut rs = Session::internal(shared.clone());
        let mut sc = Scratch::default();
        let job = the_job(&engine);
        assert!(matches!(
            epoch(&engine, &shared, &mut rs, &job, &mut sc),
            Outcome::Done
        ));
        Views {
            dir,
            shared,
            engine,
            s,
            rs,
            sc,
            job,
        }
    }

    /// PIPELINE.INFO and EXPLAIN run under the store lock: they answer
    /// while the plan's lock is held (as the runner holds it through a
    /// batch, and a checkpoint while it encodes the state), and INFO's
    /// window figures are those of the last committed epoch.
    #[test]
    fn info_and_explain_do_not_wait_for_the_plan() {
        let Views {
            dir,
            shared,
            engine,
            job,
            ..
        } = views_after_one_epoch("info");
        let live = job.plan.lock().window_stats();
        assert_eq!(live.as_ref().map(|w| w.keys), Some(3));
        let held = job.plan.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let asker = std::thread::spawn(move || {
            let mut s = Session::internal(sh);
            let info = call(&mut s, &["PIPELINE.INFO", "views"]);
            let explain = call(&mut s, &["PIPELINE.EXPLAIN", "views"]);
            let _ = tx.send((info, explain));
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        drop(held);
        asker.join().unwrap_or_else(|_| panic!("asker panicked"));
        let (info, explain) =
            got.unwrap_or_else(|_| panic!("PIPELINE.INFO or EXPLAIN waited for the plan's lock"));
        let Reply::Map(fields) = info else {
            panic!("PIPELINE.INFO: {info:?}")
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| matches!(k, Reply::Bulk(b) if &b[..] == name.as_bytes()))
                .map(|(_, v)| v.clone())
        };
        let live = live.unwrap_or_else(|| panic!("no window"));
        assert!(matches!(field("keys"), Some(Reply::Int(3))));
        assert!(
            matches!(field("open_windows"), Some(Reply::Int(n)) if n as u64 == live.open_windows)
        );
        assert!(
            matches!(field("state_bytes"), Some(Reply::Int(n)) if n as u64 == live.state_bytes)
        );
        assert!(
            matches!(&explain, Reply::Verbatim(b) if b.starts_with(b"Pipeline clicks -> views")),
            "{explain:?}"
        );
        drop((job, engine, shared));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs `cmd` on another session while a checkpoint's capture pins the
    /// plan and this thread holds the plan's lock (as the runner does
    /// through a batch): the reply, or a panic if it waited for either.
    /// Returns the capture's section encoded at its instant (for
    /// reference), the checkpoint, and the session that ran `cmd`.
    fn while_the_plan_is_busy(
        v: &Views,
        cmd: &'static [&'static str],
    ) -> (
        Reply,
        Vec<u8>,
        (u64, ferrite_db::persist::Snapshot),
        Session,
    ) {
        let p = v
            .shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        let (reference, taken) = {
            let mut store = v.shared.store.lock();
            let reference = Durable(v.engine.clone()).snapshot(&store).into_bytes();
            let cfg = v.shared.config.read().clone();
            let taken = p.begin_checkpoint(&v.shared, &mut store, &cfg);
            (
                reference,
                taken.unwrap_or_else(|| panic!("checkpoint running")),
            )
        };
        assert!(v.job.pin.held(), "the stateful plan is not pinned");
        let held = v.job.plan.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = v.shared.clone();
        let asker = std::thread::spawn(move || {
            let mut s = Session::internal(sh);
            let r = call(&mut s, cmd);
            let _ = tx.send(r);
            s
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        drop(held);
        let s = asker.join().unwrap_or_else(|_| panic!("{cmd:?} panicked"));
        let r = got.unwrap_or_else(|_| panic!("{cmd:?} waited for the plan or the pin"));
        assert!(matches!(&r, Reply::Simple(ok) if &ok[..] == b"OK"), "{r:?}");
        (r, reference, taken, s)
    }

    /// `snap`, assembled, holds `reference` as the pipeline's section.
    fn assemble_holds(snap: &mut ferrite_db::persist::Snapshot, reference: &[u8]) {
        snap.assemble();
        let mut tail = (reference.len() as u32).to_le_bytes().to_vec();
        tail.extend_from_slice(reference);
        assert!(
            snap.body.ends_with(&tail),
            "the section is not the state of the capture"
        );
    }

    /// The window keys PIPELINE.INFO shows for `views` (published, not the
    /// plan's own).
    fn published_keys(engine: &Engine) -> Option<u64> {
        engine
            .state
            .lock()
            .pipes
            .get("views")
            .and_then(|p| p.window_stats.as_ref())
            .map(|w| w.keys)
    }

    fn log_of(shared: &Shared) -> Arc<Persistence> {
        shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"))
    }

    /// Closes the log (after `rest`, the sessions and handles, are gone)
    /// and opens `dir` again: the pipeline section recovered there.
    fn section_after_restart(
        dir: &std::path::Path,
        p: Arc<Persistence>,
        rest: impl Sized,
    ) -> Vec<u8> {
        p.sync().unwrap_or_else(|e| panic!("{e}"));
        p.close().unwrap_or_else(|e| panic!("{e}"));
        drop((p, rest));
        let (shared, engine) = open(dir);
        let got = section(&engine, &shared);
        drop((engine, shared));
        got
    }

    /// PIPELINE.RESET runs under the store lock: it waits neither for the
    /// plan's lock (held by the runner through a batch) nor for a
    /// checkpoint that captured the plan and has yet to encode its state.
    /// That checkpoint still encodes the state of its capture; the old
    /// generation's epoch is refused; a restart replays the reset.
    #[test]
    fn reset_waits_neither_for_the_plan_nor_for_a_checkpoint() {
        let v = views_after_one_epoch("reset");
        let (_, reference, (covered, mut snap), mut s) =
            while_the_plan_is_busy(&v, &["PIPELINE.RESET", "views"]);
        let Views {
            dir,
            shared,
            engine,
            mut rs,
            mut sc,
            job,
            ..
        } = v;
        assert_eq!(published_keys(&engine), Some(0));
        // The checkpoint encodes the state it captured, not the reset one.
        assemble_holds(&mut snap, &reference);
        // The old generation's epoch (new entries, the old plan) is refused.
        call(&mut s, &["XADD", "clicks", "90000-1", "page", "z"]);
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(0));
        assert!(matches!(
            epoch(&engine, &shared, &mut rs, &job, &mut sc),
            Outcome::Done
        ));
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(0));
        let p = log_of(&shared);
        let cache = shared.store.lock().block_cache.clone();
        p.finish_checkpoint(covered, snap, cache.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        let fresh = the_job(&engine);
        assert!(
            !Arc::ptr_eq(&fresh.plan, &job.plan),
            "the plan was not replaced"
        );
        assert!(matches!(
            epoch(&engine, &shared, &mut rs, &fresh, &mut sc),
            Outcome::Done
        ));
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(1));
        let now = section(&engine, &shared);
        // Replayed from the checkpoint: the reset, then the new epoch.
        let rest = (s, rs, job, fresh, engine, shared);
        assert_eq!(section_after_restart(&dir, p, rest), now);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A REPLACE that keeps the position and the state (the same statement,
    /// another commit interval) keeps the plan itself: it waits neither for
    /// the plan's lock nor for a checkpoint's encoding. The checkpoint
    /// encodes its capture's state; the old generation's open epoch is
    /// rolled back at its refused commit, and the new generation goes on
    /// from the committed state; a restart replays the `K` effect.
    #[test]
    fn replace_keeping_the_state_waits_neither_for_the_plan_nor_for_a_checkpoint() {
        let v = views_after_one_epoch("replace");
        const CMD: &[&str] = &[
            "PIPELINE.CREATE",
            "views",
            "REPLACE",
            "COMMIT_INTERVAL",
            "7",
            "AS",
            VIEWS,
        ];
        let (_, reference, (covered, mut snap), mut s) = while_the_plan_is_busy(&v, CMD);
        let Views {
            dir,
            shared,
            engine,
            mut rs,
            mut sc,
            job,
            ..
        } = v;
        let kept = the_job(&engine);
        assert!(Arc::ptr_eq(&kept.plan, &job.plan), "the plan was not kept");
        assert!(Arc::ptr_eq(&kept.pin, &job.pin), "the pin was not kept");
        assert_eq!(published_keys(&engine), Some(3));
        assemble_holds(&mut snap, &reference);
        call(&mut s, &["XADD", "clicks", "90000-1", "page", "z"]);
        // The old generation's epoch is refused and its changes rolled back.
        assert!(matches!(
            epoch(&engine, &shared, &mut rs, &job, &mut sc),
            Outcome::Done
        ));
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(0));
        assert_eq!(
            job.plan.lock().window_stats().map(|w| w.keys),
            Some(3),
            "the refused epoch's key stayed"
        );
        let p = log_of(&shared);
        let cache = shared.store.lock().block_cache.clone();
        p.finish_checkpoint(covered, snap, cache.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            epoch(&engine, &shared, &mut rs, &kept, &mut sc),
            Outcome::Done
        ));
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(1));
        assert_eq!(kept.plan.lock().window_stats().map(|w| w.keys), Some(4));
        let now = section(&engine, &shared);
        // Replayed from the checkpoint: the REPLACE (`K`), then the epoch.
        let rest = (s, rs, job, kept, engine, shared);
        assert_eq!(section_after_restart(&dir, p, rest), now);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Logs written before the `K` effect carried a REPLACE's state as `D`
    /// then `S` (the whole state): they still replay to the same pipeline.
    #[test]
    fn a_replace_logged_as_define_and_state_still_replays() {
        let v = views_after_one_epoch("replace-ds");
        let want = section(&v.engine, &v.shared);
        let (def, state) = {
            let st = v.engine.state.lock();
            let p = st.pipes.get("views").unwrap_or_else(|| panic!("no pipe"));
            let plan = p.plan.clone().unwrap_or_else(|| panic!("no plan"));
            let state = plan.lock().snapshot();
            (p.def.clone(), state)
        };
        let dir2 = temp_dir("replace-ds2");
        let (shared2, engine2) = open(&dir2);
        let mut s2 = Session::internal(shared2.clone());
        for (i, page) in ["a", "b", "a", "c"].iter().enumerate() {
            call(
                &mut s2,
                &["XADD", "clicks", &format!("{}-1", 1000 + i), "page", page],
            );
        }
        {
            let d = Durable(engine2.clone());
            let mut store = shared2.store.lock();
            for effect in [
                super::super::durable::effect_define(&def),
                super::super::durable::effect_define(&def),
                super::super::durable::effect_restore("views", &state),
                super::super::durable::effect_epoch(
                    "views",
                    &v.engine.counters("views").unwrap_or_default(),
                ),
            ] {
                ferrite_db::persist::Subsystem::replay(&d, &mut store, &effect)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert_eq!(section(&engine2, &shared2), want);
        drop((s2, engine2, shared2));
        let _ = std::fs::remove_dir_all(&dir2);
        let Views {
            dir,
            engine,
            shared,
            ..
        } = v;
        drop((engine, shared));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 15: the plan state is encoded after the capture, off the store
    /// lock, and is still the state of the capture's instant (the one that
    /// goes with the positions in the keyspace snapshot), although the
    /// runner evaluated an epoch in between: its commit waits for the
    /// encoding, then lands in the log after the checkpoint. A restart
    /// from that checkpoint and the log gives the state of the end (an
    /// epoch counted twice or lost would differ).
    #[test]
    fn a_checkpoint_encodes_the_state_of_its_capture_while_the_runner_waits() {
        let Views {
            dir,
            shared,
            engine,
            mut s,
            mut rs,
            mut sc,
            job,
        } = views_after_one_epoch("pin");
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(1));
        let p = shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        // The capture; the same instant's section encoded at once, for
        // reference (nothing can change in between: the store is locked).
        let (reference, (covered, mut snap)) = {
            let mut store = shared.store.lock();
            let reference = Durable(engine.clone()).snapshot(&store).into_bytes();
            let cfg = shared.config.read().clone();
            let taken = p.begin_checkpoint(&shared, &mut store, &cfg);
            (
                reference,
                taken.unwrap_or_else(|| panic!("checkpoint running")),
            )
        };
        assert!(job.pin.held(), "the stateful plan is not pinned");
        for (i, page) in ["a", "d", "b"].iter().enumerate() {
            call(
                &mut s,
                &["XADD", "clicks", &format!("{}-1", 70_000 + i), "page", page],
            );
        }
        let pin = job.pin.clone();
        let runner = {
            let (engine, shared) = (engine.clone(), shared.clone());
            std::thread::spawn(move || {
                let o = epoch(&engine, &shared, &mut rs, &job, &mut sc);
                matches!(o, Outcome::Done)
            })
        };
        // The runner evaluated the epoch and waits for the checkpoint,
        // holding no lock: the store serves commands meanwhile.
        assert!(pin.wait_for_waiter(Duration::from_secs(60)));
        call(&mut s, &["SET", "during", "the wait"]);
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(1));
        snap.assemble();
        let mut tail = (reference.len() as u32).to_le_bytes().to_vec();
        tail.extend_from_slice(&reference);
        assert!(
            snap.body.ends_with(&tail),
            "the section is not the state of the capture"
        );
        assert!(runner.join().unwrap_or_else(|_| panic!("runner panicked")));
        assert!(!pin.held());
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(2));
        let now = section(&engine, &shared);
        assert_ne!(now, reference, "the second epoch changed nothing");
        let cache = shared.store.lock().block_cache.clone();
        p.finish_checkpoint(covered, snap, cache.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        // A crash: the epoch after the checkpoint is in the log only.
        p.sync().unwrap_or_else(|e| panic!("{e}"));
        p.close().unwrap_or_else(|e| panic!("{e}"));
        drop((s, p, engine, shared));
        let (shared, engine) = open(&dir);
        assert_eq!(engine.counters("views").map(|c| c.epoch), Some(2));
        assert_eq!(section(&engine, &shared), now);
        drop((engine, shared));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint dropped before it was assembled (its thread could not
    /// start) releases its pins; and a pipeline without state is not
    /// pinned.
    #[test]
    fn dropping_an_unassembled_checkpoint_unpins() {
        let dir = temp_dir("unpin");
        let (shared, engine) = open(&dir);
        let mut s = Session::internal(shared.clone());
        call(&mut s, &["XADD", "clicks", "1-1", "page", "a"]);
        call(
            &mut s,
            &["PIPELINE.CREATE", "views", "FROM", "0", "AS", VIEWS],
        );
        call(
            &mut s,
            &[
                "PIPELINE.CREATE",
                "copy",
                "FROM",
                "0",
                "AS",
                "INSERT INTO copied SELECT * FROM clicks",
            ],
        );
        let pins: Vec<(bool, Arc<super::super::Pin>)> = {
            let st = engine.state.lock();
            st.pipes
                .values()
                .map(|p| (p.stateful, p.pin.clone()))
                .collect()
        };
        assert_eq!(pins.len(), 2);
        let p = shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        let taken = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read().clone();
            p.begin_checkpoint(&shared, &mut store, &cfg)
        };
        for (stateful, pin) in &pins {
            assert_eq!(pin.held(), *stateful);
        }
        drop(taken);
        assert!(pins.iter().all(|(_, pin)| !pin.held()));
        drop((s, p, engine, shared));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Measurement, not a check (`cargo test --release -p ferrite-pipeline
    /// --lib plan_state_lock_hold -- --ignored --nocapture`): the store
    /// lock hold of `begin_checkpoint` with 10,000 keys x 60 HOP panes of
    /// window state, and what encoding that state costs (under the lock
    /// before issue 15, in `assemble` now).
    #[test]
    #[ignore]
    fn plan_state_lock_hold_with_10000_keys_and_60_panes() {
        let dir = temp_dir("plan-lock-hold");
        let (shared, engine) = open(&dir);
        let mut s = Session::internal(shared.clone());
        call(
            &mut s,
            &["PIPELINE.CREATE", "views", "FROM", "0", "AS", VIEWS],
        );
        let mut rs = Session::internal(shared.clone());
        let mut sc = Scratch::default();
        let job = the_job(&engine);
        for minute in 0..60u64 {
            for k in 0..10_000u64 {
                let ms = minute * 60_000 + k * 5;
                call(
                    &mut s,
                    &[
                        "XADD",
                        "clicks",
                        &format!("{ms}-1"),
                        "page",
                        &format!("p{k}"),
                    ],
                );
            }
            while matches!(
                epoch(&engine, &shared, &mut rs, &job, &mut sc),
                Outcome::More
            ) {}
        }
        let w = job.plan.lock().window_stats();
        let p = shared
            .persist
            .get()
            .cloned()
            .unwrap_or_else(|| panic!("no log"));
        for round in 0..3 {
            let t = Instant::now();
            let eager = section(&engine, &shared).len();
            let eager_us = t.elapsed().as_micros();
            let snap = {
                let mut store = shared.store.lock();
                let cfg = shared.config.read().clone();
                p.begin_checkpoint(&shared, &mut store, &cfg)
            };
            let (covered, mut snap) = snap.unwrap_or_else(|| panic!("checkpoint running"));
            let t = Instant::now();
            snap.assemble();
            let assemble_us = t.elapsed().as_micros();
            let len = snap.body.len();
            p.finish_checkpoint(covered, snap, None)
                .unwrap_or_else(|e| panic!("{e}"));
            println!(
                "round {round}: {w:?}; section {eager} bytes, encoded in {eager_us} us; \
                 begin_checkpoint held the store lock {} us; assemble {assemble_us} us (body {len} bytes)",
                p.checkpoint_stats().lock_us_last
            );
        }
        drop((s, rs, p, engine, shared));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
