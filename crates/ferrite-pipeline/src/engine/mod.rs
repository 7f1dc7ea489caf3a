//! The pipeline engine inside a Ferrite database: PIPELINE.* commands,
//! the runner thread, and exactly-once epochs (docs/pipelines.md,
//! "Running inside the server").
//!
//! It stands on ferrite-db's seams, not on its internals:
//! - commands are [`ExtCommand`]s ([`commands`]);
//! - a pipeline's position is a consumer group named after it on the
//!   source stream (XINFO GROUPS shows entries-read and lag), created and
//!   moved with XGROUP commands, so it is part of the keyspace, its log
//!   and its checkpoints;
//! - definitions, pause state and counters are this subsystem's own
//!   effects (`persist::Subsystem` "pipeline", [`durable`]) and checkpoint
//!   section;
//! - an epoch (the sink XADDs, the group's SETID, the counters and, for a
//!   grouped statement, its window state changes and LATE entries) is one
//!   `Session::atomically` unit: one hold of the store lock and one
//!   commit-log record ([`runner`]); checkpoints hold each plan's state as
//!   of its last committed epoch;
//! - a source's writes wake the runner through a `KeyObserver`.
//!
//! Lock order: the store lock, then the engine's state lock, then a plan's
//! lock, never the reverse. The runner evaluates holding only the plan's
//! lock (released before it takes the store lock to commit); commands and
//! replay take a plan's lock last, briefly. A checkpoint takes no plan's
//! lock under the store lock: it pins the stateful plans (`Pin`) and
//! encodes their state later, on its own thread, taking each plan's lock
//! alone (`durable`). Nobody waits for a pin while holding a plan's lock.

pub mod commands;
pub mod def;
mod durable;
mod runner;

use crate::plan::Plan;
use def::Definition;
use ferrite_db::shared::Shared;
use ferrite_db::store::{KeyObserver, ObserverId, Store};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use runner::Runner;

/// The subsystem name of the engine's effects and checkpoint section.
pub const SUBSYSTEM: &str = "pipeline";

/// A pipeline's run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Epochs run as entries arrive.
    Running,
    /// PIPELINE.PAUSE: nothing runs; the source keeps its entries.
    Paused,
    /// Stopped by an error (source deleted, sink of another type...);
    /// PIPELINE.RESUME or RESET retries.
    Failed(String),
}

impl Status {
    /// The word PIPELINE.INFO and INFO print.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Failed(_) => "failed",
        }
    }
}

/// Counters of a pipeline, kept across restarts (each epoch logs them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Epochs committed.
    pub epoch: u64,
    /// Source entries read.
    pub entries_in: u64,
    /// Records written to the sink.
    pub entries_out: u64,
    /// Entries the WHERE clause dropped.
    pub entries_filtered: u64,
    /// Entries whose evaluation failed (skipped).
    pub entries_failed: u64,
    /// Source entries trimmed or deleted before the pipeline read them.
    pub entries_lost: u64,
    /// Wall-clock time of the last commit (ms).
    pub last_commit_ms: u64,
    /// Time spent evaluating and committing, for ns per event.
    pub busy_ns: u64,
}

impl Counters {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.epoch,
            self.entries_in,
            self.entries_out,
            self.entries_filtered,
            self.entries_failed,
            self.entries_lost,
            self.last_commit_ms,
            self.busy_ns,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    pub(crate) fn decode(r: &mut def::Cursor<'_>) -> Result<Counters, String> {
        Ok(Counters {
            epoch: r.u64()?,
            entries_in: r.u64()?,
            entries_out: r.u64()?,
            entries_filtered: r.u64()?,
            entries_failed: r.u64()?,
            entries_lost: r.u64()?,
            last_commit_ms: r.u64()?,
            busy_ns: r.u64()?,
        })
    }
}

/// One registered pipeline.
pub(crate) struct Pipe {
    pub def: Definition,
    pub source: String,
    /// The sink stream, or the key prefix of a HASH sink.
    pub sink: String,
    /// `INSERT INTO HASH prefix [TTL d]`.
    pub hash: Option<crate::sql::HashSink>,
    /// Bumped by CREATE/REPLACE/RESET: an epoch read under an older
    /// generation is discarded at commit.
    pub gen: u64,
    /// `None`: the SQL no longer compiles (the pipeline is failed).
    pub plan: Option<Arc<Mutex<Plan>>>,
    pub status: Status,
    pub counters: Counters,
    /// The last evaluation error (the pipeline goes on).
    pub last_error: Option<String>,
    /// Set by the source's observer, cleared by the runner before it reads.
    pub dirty: Arc<AtomicBool>,
    pub observer: Option<ObserverId>,
    /// The sink existed at the last epoch (a later absence means another
    /// client deleted it).
    pub sink_seen: bool,
    /// Defined from Rust ([`Engine::create_with_plan`]): not persisted.
    pub ephemeral: bool,
    /// The plan keeps state (`Plan::is_stateful`, fixed at compile time).
    pub stateful: bool,
    /// Held while a checkpoint has yet to encode the plan's state.
    pub pin: Arc<Pin>,
    /// `Plan::explain`, made once with the plan.
    pub explain: Option<Arc<str>>,
    /// The window state's figures as of the last committed epoch, set
    /// with the epoch's counters (under the store lock) and wherever the
    /// state is replaced. PIPELINE.INFO and EXPLAIN read here: they run
    /// under the store lock and must not wait for the plan's lock, which
    /// the runner holds while it evaluates a batch and a checkpoint while
    /// it encodes the state (every client would wait with them).
    pub window_stats: Option<crate::window::WindowStats>,
}

/// Held by a checkpoint from the instant it captured the engine (under the
/// store lock, with the keyspace) until it has encoded the plan's state,
/// off the store lock ([`durable`]). IMPORTANT: while it is held, the
/// plan's committed state must not change: the runner's commit does not
/// end an epoch (it waits, without the store lock, and commits again) and
/// PIPELINE.RESET waits. So the state encoded is the one that goes with
/// the positions in the keyspace snapshot. Evaluation (begin, batches,
/// rollback) may go on: the encoding takes the committed state.
#[derive(Default)]
pub(crate) struct Pin {
    holds: Mutex<u32>,
    cv: parking_lot::Condvar,
    /// Threads in [`Pin::wait_free`] (tests wait for the runner to get there).
    waiters: Mutex<u32>,
}

/// One hold of a [`Pin`], released when dropped (the encoder ran, or the
/// snapshot was dropped unassembled).
pub(crate) struct PinHold(Arc<Pin>);

impl Drop for PinHold {
    fn drop(&mut self) {
        let mut n = self.0.holds.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.cv.notify_all();
        }
    }
}

impl Pin {
    pub fn hold(self: &Arc<Self>) -> PinHold {
        *self.holds.lock() += 1;
        PinHold(self.clone())
    }

    pub fn held(&self) -> bool {
        *self.holds.lock() > 0
    }

    /// Waits until nothing holds it, for at most `timeout`; true if free.
    pub fn wait_free(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut n = self.holds.lock();
        if *n == 0 {
            return true;
        }
        *self.waiters.lock() += 1;
        self.cv.notify_all();
        while *n > 0 {
            if self.cv.wait_until(&mut n, deadline).timed_out() {
                break;
            }
        }
        *self.waiters.lock() -= 1;
        *n == 0
    }

    /// Waits until a thread waits in [`Pin::wait_free`] while it is held,
    /// for at most `timeout` (tests).
    #[cfg(test)]
    pub fn wait_for_waiter(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut n = self.holds.lock();
        while *self.waiters.lock() == 0 {
            if self.cv.wait_until(&mut n, deadline).timed_out() {
                return *self.waiters.lock() > 0;
            }
        }
        true
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub pipes: BTreeMap<String, Pipe>,
    pub next_gen: u64,
}

/// Wakes the runner: a flag and a condition variable.
#[derive(Default)]
pub(crate) struct Wake {
    flag: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Wake {
    pub fn notify(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = true;
        }
        self.cv.notify_one();
    }
    /// Waits until notified or `timeout`; clears the flag.
    pub fn wait(&self, timeout: std::time::Duration) {
        let Ok(mut f) = self.flag.lock() else { return };
        if !*f {
            f = match self.cv.wait_timeout(f, timeout) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
        *f = false;
    }
}

/// Marks its pipeline dirty and wakes the runner (called under the store
/// lock: it only takes note).
struct SourceObserver {
    dirty: Arc<AtomicBool>,
    wake: Arc<Wake>,
}

impl KeyObserver for SourceObserver {
    fn changed(&self, _db: usize, _key: &[u8]) {
        // Only the first write after the runner's read wakes it: a busy
        // source must not cost a futex wake per XADD.
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.wake.notify();
        }
    }
}

/// The engine: every pipeline of one database server.
pub struct Engine {
    pub(crate) state: Mutex<State>,
    pub(crate) wake: Arc<Wake>,
    pub(crate) stop: AtomicBool,
}

impl Engine {
    fn new() -> Engine {
        Engine {
            state: Mutex::new(State::default()),
            wake: Arc::new(Wake::default()),
            stop: AtomicBool::new(false),
        }
    }

    /// The engine installed in `shared`.
    pub fn get(shared: &Shared) -> Option<Arc<Engine>> {
        shared.extension::<Engine>()
    }

    /// Registers (or replaces) a pipeline in the state and follows its
    /// source. Called with the store locked (commands, replay, restore).
    pub(crate) fn insert(
        &self,
        store: &mut Store,
        def: Definition,
        status: Status,
        counters: Counters,
        ephemeral_plan: Option<Plan>,
    ) {
        self.insert_as(store, def, status, counters, ephemeral_plan, false)
    }

    /// [`Engine::insert`] for a REPLACE that keeps the position of a
    /// grouped pipeline with the same statement and time options: the new
    /// definition keeps the old plan (the same compiled form), its state,
    /// its published figures and its pin (a checkpoint that captured the
    /// plan still holds back the next commit until it has encoded it).
    /// Takes no plan lock. Without a plan to keep (a statement that no
    /// longer compiles) it is [`Engine::insert`]: the pipeline is failed.
    pub(crate) fn insert_keeping_plan(
        &self,
        store: &mut Store,
        def: Definition,
        status: Status,
        counters: Counters,
    ) {
        self.insert_as(store, def, status, counters, None, true)
    }

    fn insert_as(
        &self,
        store: &mut Store,
        def: Definition,
        status: Status,
        counters: Counters,
        ephemeral_plan: Option<Plan>,
        keep_plan: bool,
    ) {
        let (plan, status) = match ephemeral_plan {
            Some(p) => (Ok(p), status),
            None => (
                Plan::compile_with(&def.sql, &def.window).map_err(|e| e.to_string()),
                status,
            ),
        };
        let stateful = plan.as_ref().is_ok_and(|p| p.is_stateful());
        let (explain, window_stats) = match &plan {
            Ok(p) => (Some(Arc::from(p.explain())), p.window_stats()),
            Err(_) => (None, None),
        };
        let (source, sink, hash, plan, status) = match plan {
            Ok(p) => (
                p.source().to_string(),
                p.sink().to_string(),
                p.hash_sink().cloned(),
                Some(Arc::new(Mutex::new(p))),
                status,
            ),
            // A definition that compiled when it was created but not now
            // (a newer version refusing it): kept, failed, visible.
            Err(e) => (
                String::new(),
                String::new(),
                None,
                None,
                Status::Failed(format!("the statement no longer compiles: {e}")),
            ),
        };
        let (mut plan, mut window_stats) = (plan, window_stats);
        let mut pin = Arc::new(Pin::default());
        let ephemeral = def.sql.is_empty();
        let mut st = self.state.lock();
        if let Some(old) = st.pipes.remove(&def.name) {
            if let Some(id) = old.observer {
                store.unobserve(id);
            }
            // Swapped in under this same hold of the state lock: the runner
            // must never see the new generation with the new, empty plan.
            if let (true, Some(kept), Some(_)) = (keep_plan, old.plan, &plan) {
                plan = Some(kept);
                pin = old.pin;
                window_stats = old.window_stats;
            }
        }
        let dirty = Arc::new(AtomicBool::new(true));
        let observer = (!source.is_empty()).then(|| {
            store.observe(
                def.db,
                bytes::Bytes::copy_from_slice(source.as_bytes()),
                Arc::new(SourceObserver {
                    dirty: dirty.clone(),
                    wake: self.wake.clone(),
                }),
            )
        });
        st.next_gen += 1;
        let gen = st.next_gen;
        st.pipes.insert(
            def.name.clone(),
            Pipe {
                def,
                source,
                sink,
                hash,
                gen,
                plan,
                status,
                counters,
                last_error: None,
                dirty,
                observer,
                sink_seen: false,
                ephemeral,
                stateful,
                pin,
                explain,
                window_stats,
            },
        );
        drop(st);
        self.wake.notify();
    }

    /// Sets a pipeline's published window figures after its state was
    /// replaced outside an epoch (reset, restore, replay, carry-over).
    pub(crate) fn set_window_stats(&self, name: &str, w: Option<crate::window::WindowStats>) {
        if let Some(p) = self.state.lock().pipes.get_mut(name) {
            p.window_stats = w;
        }
    }

    /// Removes a pipeline from the state (its group is the caller's).
    pub(crate) fn remove(&self, store: &mut Store, name: &str) -> Option<Definition> {
        let old = self.state.lock().pipes.remove(name)?;
        if let Some(id) = old.observer {
            store.unobserve(id);
        }
        Some(old.def)
    }

    /// Names of the pipelines, sorted.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().pipes.keys().cloned().collect()
    }

    /// A pipeline's state word and error, if it exists.
    pub fn status(&self, name: &str) -> Option<Status> {
        self.state.lock().pipes.get(name).map(|p| p.status.clone())
    }

    /// A pipeline's counters, if it exists.
    pub fn counters(&self, name: &str) -> Option<Counters> {
        self.state
            .lock()
            .pipes
            .get(name)
            .map(|p| p.counters.clone())
    }
}

/// How a pipeline defined in Rust runs ([`Engine::create_with_plan`]).
#[derive(Debug, Clone)]
pub struct BuilderOptions {
    /// Where a new pipeline starts: `0`, `$` (default) or an ID. A
    /// pipeline whose group already exists continues from it.
    pub from: String,
    /// At most one epoch per this many milliseconds (default 10).
    pub commit_interval_ms: u64,
    /// Trim the sink like `XADD MAXLEN [~] n`: `(approximate, n)`.
    pub sink_maxlen: Option<(bool, u64)>,
    /// The database of the source and the sink.
    pub db: usize,
}

impl Default for BuilderOptions {
    fn default() -> Self {
        BuilderOptions {
            from: "$".into(),
            commit_interval_ms: def::DEFAULT_COMMIT_INTERVAL_MS,
            sink_maxlen: None,
            db: 0,
        }
    }
}

impl Engine {
    /// Runs a plan built in Rust ([`crate::PipelineBuilder`]) with the same
    /// epochs as a SQL pipeline. Its definition is not persisted (closures
    /// are code): define it again at start-up under the same name and it
    /// continues from its consumer group's position, exactly once. A
    /// pipeline of that name is replaced.
    pub fn create_with_plan(
        &self,
        session: &mut ferrite_db::embedded::Session,
        name: &str,
        plan: Plan,
        opts: &BuilderOptions,
    ) -> Result<(), String> {
        if !def::valid_name(name.as_bytes()) {
            return Err(format!("invalid pipeline name '{name}'"));
        }
        if !(1..=def::MAX_COMMIT_INTERVAL_MS).contains(&opts.commit_interval_ms) {
            return Err("commit interval out of range".into());
        }
        let (source, sink) = (plan.source().to_string(), plan.sink().to_string());
        if source == sink {
            return Err(format!(
                "the sink stream must differ from the source stream ({source})"
            ));
        }
        if let Some(p) = commands::path(self, opts.db, &sink, &source, name) {
            return Err(format!(
                "pipeline '{name}' would close a cycle: {source} -> {}",
                p.join(" -> ")
            ));
        }
        session.select(opts.db);
        let out = session.atomically(|a| -> Result<(), String> {
            let store = a.store();
            for key in [&source, &sink] {
                if let commands::Kind::Other = commands::kind(store, opts.db, key, name) {
                    return Err(format!("WRONGTYPE '{key}' holds another type"));
                }
            }
            if !matches!(
                commands::kind(a.store(), opts.db, &source, name),
                commands::Kind::Stream { has_group: true }
            ) {
                let argv = commands::group_create(
                    a.store(),
                    opts.db,
                    &source,
                    name,
                    bytes::Bytes::copy_from_slice(opts.from.as_bytes()),
                );
                if let ferrite_db::reply::Reply::Error(e) = a.call(argv) {
                    return Err(String::from_utf8_lossy(&e).into_owned());
                }
            }
            let def = Definition {
                name: name.to_string(),
                sql: String::new(),
                db: opts.db,
                commit_interval_ms: opts.commit_interval_ms,
                sink_maxlen: opts.sink_maxlen,
                paused: false,
                created_ms: ferrite_db::shared::now_ms(),
                window: Default::default(),
            };
            self.insert(
                a.store(),
                def,
                Status::Running,
                Counters::default(),
                Some(plan),
            );
            Ok(())
        });
        match out {
            Ok((r, _)) => r,
            Err(ferrite_db::reply::Reply::Error(e)) => {
                Err(String::from_utf8_lossy(&e).into_owned())
            }
            Err(r) => Err(format!("{r:?}")),
        }
    }
}

/// Installs the engine in a database before recovery: its commands, its
/// subsystem (effects and checkpoint section), its INFO section. Start the
/// runner with [`Runner::start`] once recovery is done.
pub fn install(shared: &Arc<Shared>) -> Arc<Engine> {
    if let Some(e) = Engine::get(shared) {
        return e;
    }
    let engine = Arc::new(Engine::new());
    shared.set_extension(engine.clone());
    shared.register_subsystem(SUBSYSTEM, Arc::new(durable::Durable(engine.clone())));
    for c in commands::commands() {
        shared.register_command(c);
    }
    let e2 = engine.clone();
    shared.register_info_section(
        "pipelines",
        Box::new(move |store, now, out| commands::info_section(&e2, store, now, out)),
    );
    engine
}
