//! PIPELINE.* commands: each parses into a typed value, checks it against
//! the keyspace and the other pipelines, then applies it (nested XGROUP
//! commands for the position, a subsystem effect for the rest).

use super::def::{self, Definition};
use super::durable;
use super::{Counters, Engine, Status};
use crate::plan::Plan;
use bytes::Bytes;
use ferrite_db::args::Args;
use ferrite_db::cmd::{Ctx, ExtCommand};
use ferrite_db::error::CmdError;
use ferrite_db::reply::Reply;
use ferrite_db::store::{Store, Value};
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::Arc;

/// The most pipelines a server runs (each costs an observer, a group and a
/// plan; a client must not be able to create them without bound).
pub const MAX_PIPELINES: usize = 1024;

/// The commands the engine registers.
pub fn commands() -> Vec<ExtCommand> {
    vec![
        ExtCommand {
            name: "pipeline.create",
            arity: -4,
            flags: &["write", "denyoom"],
            summary: "Create (or REPLACE) a continuous SQL pipeline from a source stream into a sink stream",
            handler: create,
        },
        ExtCommand {
            name: "pipeline.drop",
            arity: 2,
            flags: &["write"],
            summary: "Drop a pipeline and its consumer group on the source",
            handler: drop_cmd,
        },
        ExtCommand {
            name: "pipeline.pause",
            arity: 2,
            flags: &["write", "fast"],
            summary: "Pause a pipeline (the source keeps its entries; lag grows)",
            handler: pause,
        },
        ExtCommand {
            name: "pipeline.resume",
            arity: 2,
            flags: &["write", "fast"],
            summary: "Resume a paused or failed pipeline",
            handler: resume,
        },
        ExtCommand {
            name: "pipeline.reset",
            arity: -2,
            flags: &["write"],
            summary: "Move a pipeline's position on its source (default: the start) and clear its counters",
            handler: reset,
        },
        ExtCommand {
            name: "pipeline.list",
            arity: 1,
            flags: &["readonly", "fast"],
            summary: "The names of the pipelines",
            handler: list,
        },
        ExtCommand {
            name: "pipeline.info",
            arity: 2,
            flags: &["readonly"],
            summary: "A pipeline's definition, state, counters, position and lag",
            handler: info,
        },
        ExtCommand {
            name: "pipeline.explain",
            arity: 2,
            flags: &["readonly"],
            summary: "The plan of a statement (validated, nothing created) or of a pipeline",
            handler: explain,
        },
    ]
}

fn engine(ctx: &Ctx) -> Result<Arc<Engine>, CmdError> {
    Engine::get(ctx.shared).ok_or_else(|| CmdError::err("pipelines are not enabled"))
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn name_arg(a: &mut Args<'_>) -> Result<String, CmdError> {
    let n = a.next_bytes()?;
    String::from_utf8(n.to_vec()).map_err(|_| CmdError::err("invalid pipeline name"))
}

fn no_such(name: &str) -> CmdError {
    CmdError::err(format!("no such pipeline '{name}'"))
}

/// PIPELINE.CREATE's arguments.
struct CreateArgs {
    name: String,
    replace: bool,
    paused: bool,
    from: Option<Bytes>,
    commit_interval_ms: u64,
    sink_maxlen: Option<(bool, u64)>,
    window: crate::window::WindowOptions,
    sql: String,
}

/// A duration option: milliseconds, or a number with `ms`, `s`, `m`, `h`
/// or `d`.
fn duration_arg(a: &mut Args<'_>, what: &str) -> Result<u64, CmdError> {
    let raw = a.next_bytes()?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(crate::window::compile::parse_duration)
        .filter(|&ms| (0..=crate::window::MAX_EVENT_TIME / 4).contains(&ms))
        .map(|ms| ms as u64)
        .ok_or_else(|| {
            CmdError::err(format!(
                "{what} must be a duration: milliseconds, or a number with ms, s, m, h or d"
            ))
        })
}

impl CreateArgs {
    fn parse(a: &mut Args<'_>) -> Result<CreateArgs, CmdError> {
        let raw = a.next_bytes()?;
        if !def::valid_name(&raw) {
            return Err(CmdError::err(format!(
                "invalid pipeline name: 1 to {} letters, digits or _-.:",
                def::MAX_NAME_LEN
            )));
        }
        let name = String::from_utf8_lossy(&raw).into_owned();
        let mut c = CreateArgs {
            name,
            replace: false,
            paused: false,
            from: None,
            commit_interval_ms: def::DEFAULT_COMMIT_INTERVAL_MS,
            sink_maxlen: None,
            window: crate::window::WindowOptions::default(),
            sql: String::new(),
        };
        loop {
            if a.eat("AS") {
                let sql = a.next_bytes()?;
                a.finish()?;
                c.sql = String::from_utf8(sql.to_vec())
                    .map_err(|_| CmdError::err("the statement is not valid UTF-8"))?;
                return Ok(c);
            } else if a.eat("REPLACE") {
                c.replace = true;
            } else if a.eat("PAUSED") {
                c.paused = true;
            } else if a.eat("FROM") {
                c.from = Some(a.next_bytes()?);
            } else if a.eat("COMMIT_INTERVAL") {
                let ms = a.next_i64()?;
                if !(1..=def::MAX_COMMIT_INTERVAL_MS as i64).contains(&ms) {
                    return Err(CmdError::err(format!(
                        "COMMIT_INTERVAL must be between 1 and {} milliseconds",
                        def::MAX_COMMIT_INTERVAL_MS
                    )));
                }
                c.commit_interval_ms = ms as u64;
            } else if a.eat("SINK_MAXLEN") {
                let approx = if a.eat("~") {
                    true
                } else {
                    a.eat("=");
                    false
                };
                let n = a.next_i64()?;
                if n < 0 {
                    return Err(CmdError::err("SINK_MAXLEN can't be negative"));
                }
                c.sink_maxlen = Some((approx, n as u64));
            } else if a.eat("WATERMARK") {
                c.window.watermark_ms = duration_arg(a, "WATERMARK")?;
            } else if a.eat("LATENESS") {
                c.window.lateness_ms = duration_arg(a, "LATENESS")?;
            } else if a.eat("LATE") {
                let l = a.next_bytes()?;
                c.window.late_stream = Some(
                    String::from_utf8(l.to_vec())
                        .map_err(|_| CmdError::err("the LATE stream name is not valid UTF-8"))?,
                );
            } else if a.eat("EMIT") {
                if a.eat("FINAL") {
                    c.window.emit = crate::window::Emit::Final;
                } else if a.eat("UPDATES") {
                    let every_ms = if a.eat("EVERY") {
                        duration_arg(a, "EVERY")?
                    } else {
                        0
                    };
                    c.window.emit = crate::window::Emit::Updates { every_ms };
                } else {
                    return Err(CmdError::err("EMIT takes FINAL or UPDATES [EVERY d]"));
                }
            } else if a.eat("IDLE") {
                let d = duration_arg(a, "IDLE")?;
                if d == 0 {
                    return Err(CmdError::err("IDLE must be a positive duration"));
                }
                c.window.idle_ms = d;
            } else if a.eat("STATE_LIMIT") {
                let n = a.next_i64()?;
                if n < 1 {
                    return Err(CmdError::err("STATE_LIMIT must be positive (bytes)"));
                }
                c.window.state_limit = n as u64;
            } else if a.remaining() == 0 {
                return Err(CmdError::err(
                    "syntax error: PIPELINE.CREATE name [REPLACE] [PAUSED] [FROM 0|$|id] [COMMIT_INTERVAL ms] [SINK_MAXLEN [~] n] [WATERMARK d] [IDLE d] [LATENESS d] [LATE stream] [EMIT FINAL|UPDATES [EVERY d]] [STATE_LIMIT bytes] AS sql",
                ));
            } else {
                return Err(CmdError::Syntax);
            }
        }
    }
}

/// What a key holds, for the checks.
pub(crate) enum Kind {
    Missing,
    Stream { has_group: bool },
    Other,
}

pub(crate) fn kind(store: &Store, db: usize, key: &str, group: &str) -> Kind {
    match store.dbs.get(db).and_then(|d| d.get(key.as_bytes())) {
        None => Kind::Missing,
        Some(Value::Stream(s)) => Kind::Stream {
            has_group: s.group(group.as_bytes()).is_some(),
        },
        Some(_) => Kind::Other,
    }
}

/// The path `from -> ... -> to` along pipelines' source -> sink edges in
/// `db`, ignoring `except`, if there is one.
pub(crate) fn path(
    e: &Engine,
    db: usize,
    from: &str,
    to: &str,
    except: &str,
) -> Option<Vec<String>> {
    let st = e.state.lock();
    let edges: Vec<(&str, &str)> = st
        .pipes
        .values()
        .filter(|p| {
            p.def.db == db && p.def.name != except && !p.source.is_empty() && p.hash.is_none()
        })
        .map(|p| (p.source.as_str(), p.sink.as_str()))
        .collect();
    // Breadth-first with parents; the graph is as small as the pipeline count.
    let mut parent: std::collections::HashMap<&str, &str> = Default::default();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = std::collections::HashSet::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut p = vec![to.to_string()];
            let mut cur = to;
            while let Some(&prev) = parent.get(cur) {
                p.push(prev.to_string());
                cur = prev;
            }
            p.reverse();
            return Some(p);
        }
        for &(s, k) in &edges {
            if s == n && seen.insert(k) {
                parent.insert(k, n);
                queue.push_back(k);
            }
        }
    }
    None
}

/// `XGROUP CREATE source name from MKSTREAM`, with the group's read
/// counter given where it is known (`0` and `$`), so that its lag is known
/// from the start (Redis leaves it unknown for `$` on a stream with
/// entries, and XINFO shows a nil lag until a read fixes it).
pub(crate) fn group_create(
    store: &Store,
    db: usize,
    source: &str,
    name: &str,
    from: Bytes,
) -> Vec<Bytes> {
    let mut v = vec![
        b("XGROUP"),
        b("CREATE"),
        b(source),
        b(name),
        from.clone(),
        b("MKSTREAM"),
    ];
    let added = match store.dbs.get(db).and_then(|d| d.get(source.as_bytes())) {
        Some(Value::Stream(s)) => s.entries_added(),
        _ => 0,
    };
    match &from[..] {
        b"0" => v.extend([b("ENTRIESREAD"), b("0")]),
        b"$" => v.extend([b("ENTRIESREAD"), b(&added.to_string())]),
        _ => {}
    }
    v
}

fn create(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let c = CreateArgs::parse(a)?;
    let plan =
        Plan::compile_with(&c.sql, &c.window).map_err(|err| CmdError::err(format!("{err}")))?;
    let db = ctx.client.db;
    if let Some(l) = plan.late_stream() {
        if let Kind::Other = kind(ctx.store, db, l, &c.name) {
            return Err(CmdError::WrongType);
        }
    }
    let (source, sink) = (plan.source().to_string(), plan.sink().to_string());
    let hash_sink = plan.hash_sink().is_some();
    if hash_sink && c.sink_maxlen.is_some() {
        return Err(CmdError::err(
            "SINK_MAXLEN trims a sink stream: INSERT INTO HASH writes hashes",
        ));
    }
    let old = {
        let st = e.state.lock();
        st.pipes
            .get(&c.name)
            .map(|p| (p.def.db, p.source.clone(), p.ephemeral))
    };
    let old_def = {
        let st = e.state.lock();
        st.pipes
            .get(&c.name)
            .map(|p| (p.def.sql.clone(), p.def.window.clone(), p.plan.clone()))
    };
    if old.is_none() && e.state.lock().pipes.len() >= MAX_PIPELINES {
        return Err(CmdError::err(format!(
            "too many pipelines (at most {MAX_PIPELINES})"
        )));
    }
    if old.is_some() && !c.replace {
        return Err(CmdError::err(format!(
            "pipeline '{}' already exists (PIPELINE.CREATE ... REPLACE replaces it)",
            c.name
        )));
    }
    // The compiler refuses sink == source; a cycle through other pipelines
    // is refused here: it would feed its own output back forever.
    if let Some(p) = (!hash_sink)
        .then(|| path(&e, db, &sink, &source, &c.name))
        .flatten()
    {
        return Err(CmdError::err(format!(
            "pipeline '{}' would close a cycle: {} -> {}",
            c.name,
            source,
            p.join(" -> ")
        )));
    }
    // The same group is kept only when REPLACE keeps the source and no FROM.
    let keep_group =
        matches!(&old, Some((odb, osrc, _)) if *odb == db && *osrc == source) && c.from.is_none();
    // A grouped statement's state goes with its position: REPLACE keeping
    // the position keeps the state, which only the same statement and time
    // options can read.
    let carry = match &old_def {
        Some((osql, owin, oplan)) if keep_group && plan.is_stateful() => {
            if *osql != c.sql || *owin != c.window {
                return Err(CmdError::err(format!(
                    "REPLACE keeps pipeline '{}''s position, and its window state cannot carry over to a different statement or time options: give FROM (0, $ or an ID) to start again",
                    c.name
                )));
            }
            oplan.clone()
        }
        _ => None,
    };
    match kind(ctx.store, db, &source, &c.name) {
        Kind::Other => return Err(CmdError::WrongType),
        Kind::Stream { has_group: true } if !keep_group && old.is_none() => {
            return Err(CmdError::err(format!(
                "consumer group '{}' already exists on '{source}': a pipeline keeps its position in a consumer group named after it",
                c.name
            )))
        }
        _ => {}
    }
    if !hash_sink {
        if let Kind::Other = kind(ctx.store, db, &sink, &c.name) {
            return Err(CmdError::WrongType);
        }
    }
    // Checks done: apply. The old group goes unless it is kept.
    if let Some((odb, osrc, _)) = &old {
        if !keep_group {
            let saved = ctx.client.db;
            ctx.client.db = *odb;
            if let Kind::Stream { has_group: true } = kind(ctx.store, *odb, osrc, &c.name) {
                let r = ctx.call(vec![b("XGROUP"), b("DESTROY"), b(osrc), b(&c.name)]);
                if r.is_error() {
                    ctx.client.db = saved;
                    return Ok(r);
                }
            }
            ctx.client.db = saved;
        }
    }
    let has_group = matches!(
        kind(ctx.store, db, &source, &c.name),
        Kind::Stream { has_group: true }
    );
    if !has_group {
        let from = c.from.clone().unwrap_or_else(|| b("$"));
        let r = ctx.call(group_create(ctx.store, db, &source, &c.name, from));
        if r.is_error() {
            return Ok(r);
        }
    }
    let def = Definition {
        name: c.name.clone(),
        sql: c.sql,
        db,
        commit_interval_ms: c.commit_interval_ms,
        sink_maxlen: c.sink_maxlen,
        paused: c.paused,
        created_ms: ctx.now_ms,
        window: c.window,
    };
    let status = if c.paused {
        Status::Paused
    } else {
        Status::Running
    };
    if carry.is_some() {
        // The same statement and time options compile to the same plan:
        // the pipeline keeps its plan, state and pin, so this waits neither
        // for a batch being evaluated nor for a checkpoint's encoding (an
        // epoch of the old generation is refused at its commit and rolled
        // back, leaving the committed state).
        ctx.store
            .log_subsystem(super::SUBSYSTEM, &durable::effect_define_keeping(&def));
        ctx.propagate_nothing();
        e.insert_keeping_plan(ctx.store, def, status, Counters::default());
    } else {
        ctx.store
            .log_subsystem(super::SUBSYSTEM, &durable::effect_define(&def));
        ctx.propagate_nothing();
        e.insert(ctx.store, def, status, Counters::default(), None);
    }
    Ok(Reply::ok())
}

fn drop_cmd(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let name = name_arg(a)?;
    let (db, source) = {
        let st = e.state.lock();
        let p = st.pipes.get(&name).ok_or_else(|| no_such(&name))?;
        (p.def.db, p.source.clone())
    };
    if let Kind::Stream { has_group: true } = kind(ctx.store, db, &source, &name) {
        let saved = ctx.client.db;
        ctx.client.db = db;
        let r = ctx.call(vec![b("XGROUP"), b("DESTROY"), b(&source), b(&name)]);
        ctx.client.db = saved;
        if r.is_error() {
            return Ok(r);
        }
    }
    ctx.store
        .log_subsystem(super::SUBSYSTEM, &durable::effect_drop(&name));
    ctx.propagate_nothing();
    e.remove(ctx.store, &name);
    Ok(Reply::ok())
}

fn set_paused(ctx: &mut Ctx, a: &mut Args<'_>, paused: bool) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let name = name_arg(a)?;
    {
        let mut st = e.state.lock();
        let p = st.pipes.get_mut(&name).ok_or_else(|| no_such(&name))?;
        if p.plan.is_none() {
            if let Status::Failed(msg) = &p.status {
                return Err(CmdError::err(format!(
                    "pipeline '{name}' cannot run: {msg}"
                )));
            }
        }
        p.status = if paused {
            Status::Paused
        } else {
            Status::Running
        };
        if !paused {
            // RESUME after a failure accepts the sink as it is now (a
            // deleted sink is created again by the next result).
            p.sink_seen = false;
        }
        p.dirty.store(true, std::sync::atomic::Ordering::Release);
    }
    ctx.store
        .log_subsystem(super::SUBSYSTEM, &durable::effect_paused(&name, paused));
    ctx.propagate_nothing();
    e.wake.notify();
    Ok(Reply::ok())
}

fn pause(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    set_paused(ctx, a, true)
}

fn resume(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    set_paused(ctx, a, false)
}

fn reset(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let name = name_arg(a)?;
    let from = if a.eat("FROM") {
        a.next_bytes()?
    } else {
        b("0")
    };
    a.finish()?;
    let (db, source, can_run, pin, ephemeral, sql, window) = {
        let st = e.state.lock();
        let p = st.pipes.get(&name).ok_or_else(|| no_such(&name))?;
        (
            p.def.db,
            p.source.clone(),
            p.plan.is_some(),
            p.pin.clone(),
            p.ephemeral,
            p.def.sql.clone(),
            p.def.window.clone(),
        )
    };
    if !can_run {
        return Err(CmdError::err(format!(
            "pipeline '{name}' cannot run: its statement no longer compiles"
        )));
    }
    // The state is not cleared in place: the pipeline gets a plan compiled
    // again, with empty state, and a pin of its own. So neither a batch the
    // runner is evaluating (it holds the old plan's lock; its epoch is of
    // the old generation and will be refused) nor a checkpoint that captured
    // the old plan and has yet to encode its state (it encodes the old plan,
    // which nothing changes any more) keeps this command, and every client
    // waiting on the store lock behind it, waiting. Replay clears in place:
    // the same empty state. A plan defined from Rust has no statement to
    // compile: it is cleared in place, after the checkpoint's encoding.
    let fresh = if ephemeral {
        if !pin.wait_free(std::time::Duration::from_secs(30)) {
            return Err(CmdError::err(format!(
                "pipeline '{name}': a checkpoint is still encoding its state; try again"
            )));
        }
        None
    } else {
        let plan = Plan::compile_with(&sql, &window).map_err(|err| {
            CmdError::err(format!(
                "pipeline '{name}' cannot run: its statement no longer compiles: {err}"
            ))
        })?;
        Some(plan)
    };
    let saved = ctx.client.db;
    ctx.client.db = db;
    // The group is moved, or created again when the source was recreated.
    let argv = match kind(ctx.store, db, &source, &name) {
        Kind::Other => {
            ctx.client.db = saved;
            return Err(CmdError::WrongType);
        }
        Kind::Stream { has_group: true } => {
            let mut v = vec![b("XGROUP"), b("SETID"), b(&source), b(&name), from.clone()];
            if &from[..] == b"0" {
                v.extend([b("ENTRIESREAD"), b("0")]);
            }
            v
        }
        _ => group_create(ctx.store, db, &source, &name, from),
    };
    let r = ctx.call(argv);
    ctx.client.db = saved;
    if r.is_error() {
        return Ok(r);
    }
    ctx.store
        .log_subsystem(super::SUBSYSTEM, &durable::effect_reset(&name));
    ctx.propagate_nothing();
    {
        let mut st = e.state.lock();
        st.next_gen += 1;
        let gen = st.next_gen;
        if let Some(p) = st.pipes.get_mut(&name) {
            p.gen = gen;
            if let Some(plan) = fresh {
                p.window_stats = plan.window_stats();
                p.plan = Some(Arc::new(Mutex::new(plan)));
                p.pin = Arc::new(super::Pin::default());
            } else if let Some(plan) = &p.plan {
                let mut plan = plan.lock();
                plan.clear_state();
                p.window_stats = plan.window_stats();
            }
            p.counters = Counters::default();
            p.last_error = None;
            p.sink_seen = false;
            if !matches!(p.status, Status::Paused) {
                p.status = Status::Running;
            }
            p.dirty.store(true, std::sync::atomic::Ordering::Release);
        }
    }
    e.wake.notify();
    Ok(Reply::ok())
}

fn list(ctx: &mut Ctx, _a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    Ok(Reply::Array(
        e.names().into_iter().map(|n| Reply::bulk_str(&n)).collect(),
    ))
}

/// Position and lag of a pipeline, read from its group on the source.
struct Position {
    cursor: Option<String>,
    lag_entries: Option<i64>,
    lag_ms: u64,
}

fn position(store: &Store, db: usize, source: &str, name: &str) -> Position {
    let none = Position {
        cursor: None,
        lag_entries: None,
        lag_ms: 0,
    };
    let Some(Value::Stream(s)) = store.dbs.get(db).and_then(|d| d.get(source.as_bytes())) else {
        return none;
    };
    let Some(g) = s.group(name.as_bytes()) else {
        return none;
    };
    let last = s.last_id();
    Position {
        cursor: Some(g.last_id().to_string()),
        lag_entries: g.lag(s),
        lag_ms: if last > g.last_id() {
            last.ms.saturating_sub(g.last_id().ms)
        } else {
            0
        },
    }
}

fn ns_per_event(c: &Counters) -> u64 {
    c.busy_ns.checked_div(c.entries_in).unwrap_or(0)
}

fn info(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let name = name_arg(a)?;
    let st = e.state.lock();
    let p = st.pipes.get(&name).ok_or_else(|| no_such(&name))?;
    let pos = position(ctx.store, p.def.db, &p.source, &name);
    let c = &p.counters;
    let s = |v: &str| Reply::bulk_str(v);
    let i = |v: u64| Reply::Int(v.min(i64::MAX as u64) as i64);
    let opt = |v: Option<String>| v.map_or(Reply::Null, |v| Reply::bulk_str(&v));
    let error = match &p.status {
        Status::Failed(m) => Some(m.clone()),
        _ => None,
    };
    let fields: Vec<(&str, Reply)> = vec![
        ("name", s(&p.def.name)),
        ("state", s(p.status.word())),
        ("error", opt(error)),
        ("source", s(&p.source)),
        (
            "sink",
            match &p.hash {
                None => s(&p.sink),
                Some(h) => s(&match h.ttl_ms {
                    None => format!("HASH {}", h.prefix),
                    Some(t) => format!("HASH {} TTL {t}", h.prefix),
                }),
            },
        ),
        ("db", i(p.def.db as u64)),
        (
            "sql",
            if p.ephemeral {
                Reply::Null
            } else {
                s(&p.def.sql)
            },
        ),
        ("commit_interval_ms", i(p.def.commit_interval_ms)),
        (
            "sink_maxlen",
            match p.def.sink_maxlen {
                None => Reply::Null,
                Some((true, n)) => s(&format!("~ {n}")),
                Some((false, n)) => s(&n.to_string()),
            },
        ),
        ("created_ms", i(p.def.created_ms)),
        ("cursor", opt(pos.cursor)),
        ("entries_in", i(c.entries_in)),
        ("entries_out", i(c.entries_out)),
        ("entries_filtered", i(c.entries_filtered)),
        ("entries_failed", i(c.entries_failed)),
        ("entries_lost", i(c.entries_lost)),
        (
            "lag_entries",
            pos.lag_entries.map_or(Reply::Null, Reply::Int),
        ),
        ("lag_ms", i(pos.lag_ms)),
        ("epoch", i(c.epoch)),
        ("last_commit_ms", i(c.last_commit_ms)),
        ("ns_per_event", i(ns_per_event(c))),
        ("last_error", opt(p.last_error.clone())),
    ];
    let mut fields = fields;
    if let Some(w) = p.window_stats.clone() {
        fields.extend([
            ("watermark_ms", i(p.def.window.watermark_ms)),
            ("lateness_ms", i(p.def.window.lateness_ms)),
            ("late_stream", opt(p.def.window.late_stream.clone())),
            (
                "emit",
                match p.def.window.emit {
                    crate::window::Emit::Final => s("final"),
                    crate::window::Emit::Updates { every_ms } => {
                        s(&format!("updates every {every_ms}"))
                    }
                },
            ),
            ("idle_ms", i(p.def.window.idle_ms)),
            ("state_limit", i(p.def.window.state_limit)),
            ("keys", i(w.keys)),
            ("open_windows", i(w.open_windows)),
            ("state_bytes", i(w.state_bytes)),
            ("watermark", w.watermark.map_or(Reply::Null, Reply::Int)),
            ("late_dropped", i(w.late_dropped)),
            ("late_written", i(w.late_written)),
        ]);
    }
    Ok(Reply::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Reply::bulk_str(k), v))
            .collect(),
    ))
}

fn explain(ctx: &mut Ctx, a: &mut Args<'_>) -> Result<Reply, CmdError> {
    let e = engine(ctx)?;
    let arg = a.next_bytes()?;
    let text = String::from_utf8_lossy(&arg).into_owned();
    let named = {
        let st = e.state.lock();
        st.pipes
            .get(&text)
            .map(|p| (p.explain.clone(), p.status.clone()))
    };
    let out = match named {
        Some((Some(text), _)) => text.to_string(),
        Some((None, status)) => {
            return Err(CmdError::err(match status {
                Status::Failed(m) => m,
                _ => "no plan".to_string(),
            }))
        }
        None => Plan::compile(&text)
            .map_err(|err| CmdError::err(format!("{err}")))?
            .explain(),
    };
    Ok(Reply::Verbatim(Bytes::from(out)))
}

/// INFO's `# Pipelines` section.
pub(crate) fn info_section(e: &Engine, store: &Store, _now: u64, out: &mut String) {
    let st = e.state.lock();
    let count = |w: &str| st.pipes.values().filter(|p| p.status.word() == w).count();
    out.push_str("# Pipelines\r\n");
    let _ = write!(
        out,
        "pipelines:{}\r\npipelines_running:{}\r\npipelines_paused:{}\r\npipelines_failed:{}\r\n",
        st.pipes.len(),
        count("running"),
        count("paused"),
        count("failed")
    );
    let sum = |f: fn(&Counters) -> u64| st.pipes.values().map(|p| f(&p.counters)).sum::<u64>();
    let _ = write!(
        out,
        "pipeline_entries_in:{}\r\npipeline_entries_out:{}\r\npipeline_entries_failed:{}\r\n",
        sum(|c| c.entries_in),
        sum(|c| c.entries_out),
        sum(|c| c.entries_failed)
    );
    for (name, p) in &st.pipes {
        let pos = position(store, p.def.db, &p.source, name);
        let _ = write!(
            out,
            "pipeline_{name}:state={},source={},sink={},in={},out={},filtered={},failed={},lost={},lag={},lag_ms={},epoch={},ns_per_event={}\r\n",
            p.status.word(),
            p.source,
            p.sink,
            p.counters.entries_in,
            p.counters.entries_out,
            p.counters.entries_filtered,
            p.counters.entries_failed,
            p.counters.entries_lost,
            pos.lag_entries.map_or("unknown".to_string(), |l| l.to_string()),
            pos.lag_ms,
            p.counters.epoch,
            ns_per_event(&p.counters),
        );
    }
}
