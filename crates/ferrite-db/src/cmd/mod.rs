//! Commands: one file per family behind [`Handler`]s; each command parses
//! its arguments with the [`Args`] cursor (into a typed value, such as
//! `expire::Expire` or `stream::XRangeArgs`, where it has options or where
//! other code must understand it before it runs: [`parsed`]) and then
//! applies it. This module owns the table and the rules every command shares
//! (arity, authentication, MULTI queueing, expiry of its keys, statistics,
//! the panic guard).
//!
//! Families: [`conn`] (PING, HELLO, AUTH, SELECT, CLIENT...), [`keyspace`]
//! (DEL, TYPE, SCAN...), [`txn`] (MULTI/EXEC/WATCH), [`admin`] (CONFIG, INFO,
//! COMMAND, TIME, SHUTDOWN); streams live in `stream`, `read`, `info` and `group`.

pub mod admin;
pub mod bits;
pub mod conn;
pub mod expire;
pub mod generic;
pub mod group;
pub mod hash;
pub mod info;
pub mod keyspace;
pub mod keyspec;
pub mod list;
pub mod meta;
pub mod parsed;
pub mod pubsub;
pub mod read;
pub mod server;
pub mod server_info;
pub mod set;
pub mod stream;
pub mod string;
pub mod txn;
pub mod zset;

use crate::args::{ArgList, Args, Argv};
use crate::error::{sanitize_arg, CmdError};
use crate::reply::Reply;
use crate::shared::Shared;
use crate::store::{BlockedCommand, Store};
use bytes::Bytes;
use meta::Meta;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Runs one command with the store locked. Must not block or await.
pub type Handler = fn(&mut Ctx, &mut Args<'_>) -> Result<Reply, CmdError>;

/// Every command this server implements, by Redis full name.
fn registry() -> Vec<(&'static str, Handler)> {
    let mut v: Vec<(&'static str, Handler)> = Vec::new();
    v.extend_from_slice(conn::COMMANDS);
    v.extend_from_slice(keyspace::COMMANDS);
    v.extend_from_slice(expire::COMMANDS);
    v.extend_from_slice(txn::COMMANDS);
    v.extend_from_slice(admin::COMMANDS);
    v.extend_from_slice(server_info::COMMANDS);
    v.extend_from_slice(stream::COMMANDS);
    v.extend_from_slice(read::COMMANDS);
    v.extend_from_slice(info::COMMANDS);
    v.extend_from_slice(group::COMMANDS);
    v.extend_from_slice(string::COMMANDS);
    v.extend_from_slice(bits::COMMANDS);
    v.extend_from_slice(hash::COMMANDS);
    v.extend_from_slice(list::COMMANDS);
    v.extend_from_slice(set::COMMANDS);
    v.extend_from_slice(zset::COMMANDS);
    v.extend_from_slice(pubsub::COMMANDS);
    v.extend_from_slice(server::COMMANDS);
    v.extend_from_slice(generic::COMMANDS);
    v
}

/// A command ready to dispatch: its metadata and handler.
pub struct Command {
    pub meta: Meta,
    pub handler: Option<Handler>,
    /// Whether running it counts as an access to its keys (OBJECT
    /// IDLETIME). False for the commands Redis looks keys up in with
    /// `LOOKUP_NOTOUCH` or not at all: TYPE, EXISTS, TTL and friends,
    /// OBJECT, MEMORY USAGE, DEBUG.
    pub touches: bool,
    /// Whether its keys count as keyspace hits and misses: read-only
    /// commands (Redis counts `lookupKeyRead`), except MEMORY USAGE.
    pub reads_keys: bool,
    /// The metadata flags every command checks, looked up once here
    /// instead of by name per call.
    pub hot: HotFlags,
}

/// Flags of [`Meta`] that dispatch checks for every command.
#[derive(Debug, Clone, Copy)]
pub struct HotFlags {
    pub write: bool,
    pub no_auth: bool,
    /// Fed to MONITOR: neither `admin` nor `skip_monitor`.
    pub monitored: bool,
    /// A subcommand (`config|get`): its handler starts after two words.
    pub sub: bool,
}

impl HotFlags {
    fn of(meta: &Meta) -> HotFlags {
        HotFlags {
            write: meta.has_flag("write"),
            no_auth: meta.has_flag("no_auth"),
            monitored: !meta.has_flag("admin") && !meta.has_flag("skip_monitor"),
            sub: meta.name.contains('|'),
        }
    }
}

/// Subcommands newer than Redis 7.0 (whose table `redis_commands.resp3`
/// is) that client libraries send at connect time: redis-py and go-redis
/// send CLIENT SETINFO. Their metadata as Redis 7.2 gives it.
struct LaterSubcommand {
    name: &'static str,
    arity: i64,
    summary: &'static str,
    since: &'static str,
}

const LATER_SUBCOMMANDS: &[LaterSubcommand] = &[
    LaterSubcommand {
        name: "client|setinfo",
        arity: 4,
        summary: "Sets information specific to the client or connection.",
        since: "7.2.0",
    },
    LaterSubcommand {
        name: "client|no-touch",
        arity: 3,
        summary:
            "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        since: "7.2.0",
    },
];

impl LaterSubcommand {
    /// Add the subcommand's entry, and list it under its container (COMMAND
    /// INFO's subcommand array, COMMAND DOCS).
    fn add_to(&self, metas: &mut HashMap<String, Meta>) {
        let Some((parent, sub)) = self.name.split_once('|') else {
            return;
        };
        let flags = ["noscript", "loading", "stale"];
        let info = Reply::Array(vec![
            Reply::bulk_str(self.name),
            Reply::Int(self.arity),
            Reply::Set(flags.iter().map(|f| Reply::simple(f)).collect()),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Set(vec![Reply::simple("@slow"), Reply::simple("@connection")]),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
            Reply::Array(Vec::new()),
        ]);
        let docs = Reply::Map(vec![
            (Reply::bulk_str("summary"), Reply::bulk_str(self.summary)),
            (Reply::bulk_str("since"), Reply::bulk_str(self.since)),
            (Reply::bulk_str("group"), Reply::bulk_str("connection")),
            (Reply::bulk_str("complexity"), Reply::bulk_str("O(1)")),
        ]);
        if let Some(p) = metas.get_mut(parent) {
            if !p.subcommands.iter().any(|s| s == sub) {
                p.subcommands.push(sub.to_string());
                if let Reply::Array(fields) = &mut p.info {
                    if let Some(Reply::Array(subs)) = fields.get_mut(9) {
                        subs.push(info.clone());
                    }
                }
                if let Reply::Map(pairs) = &mut p.docs {
                    for (k, v) in pairs.iter_mut() {
                        if matches!(k, Reply::Bulk(b) if &b[..] == b"subcommands") {
                            if let Reply::Map(subdocs) = v {
                                subdocs.push((Reply::bulk_str(self.name), docs.clone()));
                            }
                        }
                    }
                }
            }
        }
        metas.insert(
            self.name.to_string(),
            Meta {
                name: self.name.to_string(),
                arity: self.arity,
                flags: flags.iter().map(|f| f.to_string()).collect(),
                info,
                docs,
                subcommands: Vec::new(),
                key_specs: Vec::new(),
            },
        );
    }
}

/// Commands that read their keys without counting as an access.
const NO_TOUCH: &[&str] = &[
    "type",
    "exists",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "object|encoding",
    "object|refcount",
    "object|idletime",
    "object|freq",
    "memory|usage",
    "debug",
];

pub struct Table {
    /// By lowercase full name. FNV: looked up for every command with a
    /// client's bytes, but never grown by them (nothing to flood).
    pub commands: HashMap<String, Command, std::hash::BuildHasherDefault<crate::store::NameHasher>>,
}

impl Table {
    fn build() -> Table {
        let handlers: HashMap<&str, Handler> = registry().into_iter().collect();
        let implemented = |n: &str| {
            handlers.contains_key(n) || handlers.keys().any(|k| k.starts_with(&format!("{n}|")))
        };
        let mut metas = meta::load(&implemented);
        for later in LATER_SUBCOMMANDS {
            if handlers.contains_key(later.name) {
                later.add_to(&mut metas);
            }
        }
        let commands = metas
            .into_iter()
            .map(|(name, meta)| {
                let handler = handlers.get(name.as_str()).copied();
                let touches = !NO_TOUCH.contains(&name.as_str());
                let reads_keys = meta.has_flag("readonly") && name != "memory|usage";
                let hot = HotFlags::of(&meta);
                (
                    name,
                    Command {
                        meta,
                        handler,
                        touches,
                        reads_keys,
                        hot,
                    },
                )
            })
            .collect();
        Table { commands }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Command> {
        // Lowercased on the stack: this runs for every command.
        let mut buf = [0u8; 64];
        let dst = buf.get_mut(..name.len())?;
        for (d, s) in dst.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        // Command names are ASCII; anything else cannot match.
        self.commands.get(std::str::from_utf8(dst).ok()?)
    }

    /// Top-level commands (no `|`), for COMMAND COUNT/LIST/INFO.
    pub fn top_level(&self) -> impl Iterator<Item = &Command> {
        self.commands
            .values()
            .filter(|c| !c.meta.name.contains('|'))
    }
}

pub fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(Table::build)
}

/// A command added by a subsystem above the database (the pipeline
/// engine's `PIPELINE.*`), in Redis module style: registered on a
/// [`Shared`] at start-up with [`Shared::register_command`], dispatched like
/// the built-in ones (arity, AUTH, MULTI, write refusal, logging of its
/// effects), listed by COMMAND.
pub struct ExtCommand {
    /// Full name, lowercase, e.g. `pipeline.create`.
    pub name: &'static str,
    /// Redis arity: `n` exactly, `-n` at least.
    pub arity: i64,
    /// Redis command flags (`write`, `readonly`, `admin`, ...).
    pub flags: &'static [&'static str],
    /// One line for COMMAND DOCS.
    pub summary: &'static str,
    pub handler: Handler,
}

impl ExtCommand {
    /// The dispatchable form; leaked once per registration (start-up only).
    pub(crate) fn into_command(self) -> &'static Command {
        let flags: Vec<String> = self.flags.iter().map(|f| f.to_string()).collect();
        let info = Reply::Array(vec![
            Reply::bulk_str(self.name),
            Reply::Int(self.arity),
            Reply::Set(self.flags.iter().map(|f| Reply::simple(f)).collect()),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Set(Vec::new()),
            Reply::Set(Vec::new()),
            Reply::Set(Vec::new()),
            Reply::Array(Vec::new()),
        ]);
        let docs = Reply::Map(vec![
            (Reply::bulk_str("summary"), Reply::bulk_str(self.summary)),
            (Reply::bulk_str("since"), Reply::bulk_str("0.1.0")),
            (Reply::bulk_str("group"), Reply::bulk_str("module")),
            (Reply::bulk_str("module"), Reply::bulk_str("ferrite")),
        ]);
        let meta = Meta {
            name: self.name.to_string(),
            arity: self.arity,
            flags,
            info,
            docs,
            subcommands: Vec::new(),
            key_specs: Vec::new(),
        };
        let hot = HotFlags::of(&meta);
        Box::leak(Box::new(Command {
            meta,
            handler: Some(self.handler),
            touches: true,
            reads_keys: false,
            hot,
        }))
    }
}

/// The command `argv` names: a built-in one, or one registered on `shared`.
pub fn lookup(
    shared: &Shared,
    argv: &(impl ArgList + ?Sized),
) -> Result<&'static Command, CmdError> {
    match resolve(table(), argv) {
        Err(e @ CmdError::Raw(_)) => {
            let Some(cmd) = (argv.argc() > 0)
                .then(|| argv.arg(0))
                .and_then(|n| shared.ext_command(n))
            else {
                return Err(e);
            };
            if !arity_ok(cmd.meta.arity, argv.argc()) {
                return Err(CmdError::WrongArity(cmd.meta.name.clone()));
            }
            Ok(cmd)
        }
        r => r,
    }
}

/// Every top-level command, built-in and registered (COMMAND, COUNT, LIST).
pub fn top_level<'a>(shared: &'a Shared) -> impl Iterator<Item = &'static Command> + 'a {
    table().top_level().chain(shared.ext_commands())
}

/// Per-connection state that commands may change.
#[derive(Debug)]
pub struct ClientState {
    pub id: u64,
    pub db: usize,
    pub resp: u8,
    pub authenticated: bool,
    pub name: Bytes,
    /// Inside MULTI: the queued commands; `None` outside.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command was rejected: EXEC must fail with EXECABORT.
    pub multi_error: bool,
    pub watched: Vec<(usize, Bytes)>,
    /// Set by QUIT, protocol errors and CLIENT KILL of self: close after the reply.
    pub close_after_reply: bool,
    /// Set by SHUTDOWN.
    pub shutdown: bool,
    /// CLIENT REPLY OFF: no replies until CLIENT REPLY ON.
    pub reply_off: bool,
    /// CLIENT REPLY SKIP: the next command's reply is not sent.
    pub reply_skip_next: bool,
    /// The current command's reply is not sent (it follows CLIENT REPLY SKIP).
    pub reply_skip: bool,
    /// CLIENT NO-TOUCH ON: this client's commands do not count as accesses
    /// to their keys (OBJECT IDLETIME), except TOUCH.
    pub no_touch: bool,
}

impl ClientState {
    pub fn new(id: u64, authenticated: bool) -> ClientState {
        ClientState {
            id,
            db: 0,
            resp: 2,
            authenticated,
            name: Bytes::new(),
            multi: None,
            multi_error: false,
            watched: Vec::new(),
            close_after_reply: false,
            shutdown: false,
            reply_off: false,
            reply_skip_next: false,
            reply_skip: false,
            no_touch: false,
        }
    }
}

/// A request to block, left in [`Ctx::block`] by a blocking command.
pub struct BlockRequest {
    pub keys: Vec<Bytes>,
    /// `None`: block forever (BLOCK 0).
    pub timeout: Option<Duration>,
    pub cmd: Box<dyn BlockedCommand>,
}

/// What a command sees while it runs.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub client: &'a mut ClientState,
    pub shared: &'a Shared,
    /// Wall-clock milliseconds, sampled once per command (Redis's `commandTimeSnapshot`).
    pub now_ms: u64,
    /// True while EXEC runs the queue: blocking commands must not block.
    pub in_exec: bool,
    /// A blocking command that found nothing sets this and returns the reply to
    /// use if it cannot block (inside MULTI): Redis's null reply.
    pub block: Option<BlockRequest>,
    /// What this command contributes to the commit log, as commands whose
    /// replay is deterministic (Redis's AOF propagation). `None`: a write
    /// command that succeeded is logged as typed; `Some(list)`: exactly these
    /// (empty: nothing), e.g. XADD with `*` rewritten to the generated ID.
    pub propagate: Option<Vec<Vec<Bytes>>>,
    /// The command parsed ahead of running (`parsed::Parsed`, for the
    /// read-ahead plan): its handler takes it instead of parsing again.
    pub parsed: Option<parsed::Parsed>,
}

impl Ctx<'_> {
    /// Run another command from inside a handler, as Redis modules'
    /// `RM_Call` does: same client, same lock hold, no MULTI queueing, no
    /// blocking. The nested command logs its own effects as it runs, in
    /// order; a handler whose whole effect is its nested calls says
    /// [`Ctx::propagate_nothing`] so that its own line is not logged too.
    pub fn call(&mut self, argv: Vec<Bytes>) -> Reply {
        let saved_multi = self.client.multi.take();
        let reply = {
            let mut sub = Ctx {
                store: &mut *self.store,
                client: &mut *self.client,
                shared: self.shared,
                now_ms: self.now_ms,
                in_exec: true,
                block: None,
                propagate: None,
                parsed: None,
            };
            match dispatch(&mut sub, argv) {
                Dispatch::Reply(r) | Dispatch::Block(_, r) => r,
            }
        };
        self.client.multi = saved_multi;
        reply
    }

    /// Log `argv` (instead of the command as typed) when this command's
    /// effect is not deterministic on replay. Call once per logged command.
    /// Whether effects are being collected; handlers skip building them if not.
    pub fn logging(&self) -> bool {
        self.store.logging
    }

    pub fn propagate(&mut self, argv: Vec<Bytes>) {
        self.propagate.get_or_insert_with(Vec::new).push(argv);
    }
    /// Log nothing for this command (a write that changed nothing).
    pub fn propagate_nothing(&mut self) {
        self.propagate.get_or_insert_with(Vec::new);
    }
    pub fn db(&mut self) -> &mut crate::store::Db {
        &mut self.store.dbs[self.client.db]
    }
    /// A write to `key` in the current db: breaks WATCHes and wakes blocked readers.
    pub fn touch(&mut self, key: &[u8]) {
        self.touch_watch_only(key);
        self.store.signal_ready(self.client.db, key);
    }

    /// A write that breaks WATCHes but wakes nobody. Redis's XDEL and XTRIM
    /// only call `signalModifiedKey`, never `signalKeyAsReady`: a blocked
    /// XREADGROUP whose group is behind the stream's last ID (its newest
    /// entries deleted) must not be served by them.
    pub fn touch_watch_only(&mut self, key: &[u8]) {
        self.store.touch(self.client.db, key);
        self.store.dirty += 1;
    }

    /// A keyspace notification for `key` in the current db: `class` is a
    /// `crate::pubsub::NOTIFY_*` flag, `event` Redis's event name (`set`,
    /// `hdel`, `xadd`...). See [`Store::notify`].
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8]) {
        self.store.notify(class, event, key, self.client.db);
    }
}

/// Outcome of dispatching one command line.
pub enum Dispatch {
    Reply(Reply),
    Block(BlockRequest, Reply),
}

/// What [`execute`] did.
pub enum Executed {
    Reply(Reply),
    /// The command blocked: its waiter is registered; the reply comes later.
    Blocked(
        crate::store::WaiterId,
        tokio::sync::oneshot::Receiver<Reply>,
        Option<Duration>,
    ),
}

/// Stored blocks a command will read that are not in memory: `(stream
/// storage id, master, location)`, see `Stream::evicted_in_range`.
pub type Prefetch = Vec<(u64, ferrite_streams::StreamId, ferrite_streams::BlockLoc)>;

/// At most this many blocks, and [`PREFETCH_MAX_BYTES`] of them, are read
/// ahead for one command (what is read is held until the command ran); a
/// longer read (`XRANGE key - +` over a stream far larger than RAM) reads
/// the rest itself, on the worker, as before (docs/storage.md §13.8).
pub const PREFETCH_MAX_BLOCKS: usize = 8192;
/// At most this many stored bytes (frame lengths) are read ahead for one
/// command.
pub const PREFETCH_MAX_BYTES: u64 = 32 << 20;

/// A read-ahead plan being built: blocks in reading order, each once,
/// within [`PREFETCH_MAX_BLOCKS`] and [`PREFETCH_MAX_BYTES`].
#[derive(Default)]
pub struct PlanBuilder {
    out: Prefetch,
    seen: std::collections::HashSet<(u64, ferrite_streams::BlockLoc)>,
    bytes: u64,
}

impl PlanBuilder {
    /// Whether the plan takes no more blocks.
    pub fn full(&self) -> bool {
        self.out.len() >= PREFETCH_MAX_BLOCKS || self.bytes >= PREFETCH_MAX_BYTES
    }

    /// How many more blocks it may take.
    pub fn room(&self) -> usize {
        if self.full() {
            0
        } else {
            PREFETCH_MAX_BLOCKS - self.out.len()
        }
    }

    /// Adds the blocks of `more` it does not hold yet, while it has room.
    pub fn extend(&mut self, more: Prefetch) {
        for b in more {
            if self.full() {
                return;
            }
            if self.seen.insert((b.0, b.2)) {
                self.bytes += b.2.len;
                self.out.push(b);
            }
        }
    }

    pub fn finish(self) -> Prefetch {
        self.out
    }
}

/// The evicted blocks the parsed command will read in `db`, from the
/// index alone, with the cache to read them into. The caller reads them
/// off the store lock and off the async workers (`BlockCache::read_ahead`
/// on a blocking thread), then runs the command (handing it the parsed
/// value), which finds them read; a block the plan missed (or evicted
/// meanwhile) the command reads itself. The plan only reads ahead: the
/// command runs, and logs its effects, exactly as without it. Planned:
/// XRANGE, XREVRANGE, XREAD, XREADGROUP, XDEL, XCLAIM, XAUTOCLAIM, XINFO
/// STREAM, exact trims (XTRIM, XADD MAXLEN/MINID), and those queued in
/// MULTI ([`prefetch_plan_exec`]). Past [`PREFETCH_MAX_BLOCKS`] a command
/// reads the rest itself (docs/storage.md §13.7).
pub fn prefetch_plan(
    store: &Store,
    db: usize,
    parsed: &parsed::Parsed,
) -> Option<(std::sync::Arc<ferrite_streams::BlockCache>, Prefetch)> {
    let cache = store.block_cache.as_ref()?;
    // The byte bound (the planners bound the count).
    let mut plan = PlanBuilder::default();
    plan.extend(parsed.prefetch(store.dbs.get(db)?));
    let plan = plan.finish();
    (!plan.is_empty()).then(|| (cache.clone(), plan))
}

/// [`prefetch_plan`] for an EXEC: the blocks its queued commands will read,
/// each planned in the database it will run in (SELECT followed), joined
/// and capped at [`PREFETCH_MAX_BLOCKS`]. Commands after one that changes
/// the planned ranges (a write in the same transaction) may find a block
/// the plan did not foresee: they read it themselves, as without a plan.
pub fn prefetch_plan_exec(
    store: &Store,
    mut db: usize,
    queued: &[Vec<Bytes>],
) -> Option<(std::sync::Arc<ferrite_streams::BlockCache>, Prefetch)> {
    let cache = store.block_cache.as_ref()?;
    let mut plan = PlanBuilder::default();
    for argv in queued {
        if plan.full() {
            break;
        }
        let Some(name) = argv.first() else { continue };
        if name.eq_ignore_ascii_case(b"select") {
            match argv.get(1).and_then(|a| crate::args::parse_i64(a)) {
                Some(n) if n >= 0 && (n as usize) < store.dbs.len() => db = n as usize,
                _ => {}
            }
            continue;
        }
        let (Some(p), Some(d)) = (parsed::Parsed::parse(argv), store.dbs.get(db)) else {
            continue;
        };
        plan.extend(p.prefetch(d));
    }
    let plan = plan.finish();
    (!plan.is_empty()).then(|| (cache.clone(), plan))
}

/// One command line for `client`, start to end, with the store locked:
/// dispatch, register a blocking waiter (only if `may_block`), serve the
/// blocked readers the command made ready, and hand its effects to the log.
/// IMPORTANT: the log append happens here, under the lock, so the log's
/// order is the order in which commands took effect.
pub fn execute(
    shared: &std::sync::Arc<Shared>,
    store: &mut Store,
    client: &mut ClientState,
    argv: impl Into<Argv>,
    parsed: Option<parsed::Parsed>,
    now_ms: u64,
    may_block: bool,
) -> (Executed, crate::persist::Commit) {
    let ran = guarded(shared, store, |store| {
        let mut ctx = Ctx {
            store,
            client,
            shared,
            now_ms,
            in_exec: false,
            block: None,
            propagate: None,
            parsed,
        };
        let done = match dispatch(&mut ctx, argv.into()) {
            Dispatch::Block(req, _) if may_block => {
                let (id, rx) = ctx
                    .store
                    .block(ctx.client.id, ctx.client.db, req.keys, req.cmd);
                Executed::Blocked(id, rx, req.timeout)
            }
            Dispatch::Reply(r) | Dispatch::Block(_, r) => Executed::Reply(r),
        };
        ctx.store.serve_ready(now_ms);
        done
    });
    match ran {
        Ok(r) => r,
        Err(reply) => (Executed::Reply(reply), crate::persist::Commit::Done),
    }
}

/// Run `f` (a command and the blocked clients it serves) on the locked
/// store, then commit its effects. If `f` panics, its effects may be half
/// applied in memory: they are dropped, not logged (they would otherwise
/// ride in the next command's record), and the database refuses every write
/// from then on (`Shared::write_error`), so the log never holds a state
/// that depends on them. Reads go on; a restart recovers the last state
/// that was logged.
/// `Err` holds the error reply for the panicking call.
pub fn guarded<T>(
    shared: &std::sync::Arc<Shared>,
    store: &mut Store,
    f: impl FnOnce(&mut Store) -> T,
) -> Result<(T, crate::persist::Commit), Reply> {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *store)));
    match ran {
        Ok(done) => {
            let commit = crate::persist::commit(shared, store);
            Ok((done, commit))
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            store.clear_effects();
            tracing::error!(
                "a command panicked ({what}): its effects are dropped and writes are refused until a restart"
            );
            shared.set_fatal(what.clone());
            Err(Reply::error(format!(
                "ERR internal error while running the command ({what}); writes are refused until a restart"
            )))
        }
    }
}

/// Look up, check and run one command (or queue it inside MULTI).
/// The store must be locked by the caller; ready keys are served by the caller.
pub fn dispatch(ctx: &mut Ctx, argv: impl Into<Argv>) -> Dispatch {
    let argv: Argv = argv.into();
    let t = table();
    let Some(first) = argv.first() else {
        return Dispatch::Reply(Reply::Null);
    };
    let cmd = match lookup(ctx.shared, &argv) {
        Ok(c) => c,
        Err(e) => return reject(ctx, first, rejected_name(t, &argv), e.to_reply()),
    };
    let name: &'static str = cmd.meta.name.as_str();
    if !ctx.client.authenticated && !cmd.hot.no_auth {
        return reject(ctx, first, Some(name), CmdError::NoAuth.to_reply());
    }
    if cmd.hot.write || name == "ping" {
        // Redis refuses writes (and PING) once the AOF could not be written.
        if let Some(msg) = ctx.shared.write_error() {
            return reject(ctx, first, Some(name), Reply::error(msg));
        }
    }
    if ctx.logging() && (cmd.hot.write || name == "exec") {
        // A command too large for one commit-log record is refused before
        // it runs: applied but not logged, it would vanish at a restart.
        let size = match (&ctx.client.multi, name) {
            (Some(queue), "exec") => crate::persist::record_size_bound(queue),
            _ => crate::persist::record_size_bound([&argv]),
        };
        if size > crate::persist::LOG_RECORD_MAX {
            let msg = format!(
                "ERR command too large for the commit log ({size} bytes; the limit is {})",
                crate::persist::LOG_RECORD_MAX
            );
            return reject(ctx, first, Some(name), Reply::error(msg));
        }
    }
    // Redis 7.0: a RESP2 client with subscriptions may only (un)subscribe,
    // PING, QUIT and RESET; RESP3 clients get pushes and may run anything.
    if ctx.client.resp == 2
        && !matches!(
            name,
            "ping"
                | "subscribe"
                | "ssubscribe"
                | "unsubscribe"
                | "sunsubscribe"
                | "psubscribe"
                | "punsubscribe"
                | "quit"
                | "reset"
        )
        && ctx.store.pubsub.count(ctx.client.id) > 0
    {
        let msg = format!("ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context");
        return reject(ctx, first, Some(name), Reply::error(msg));
    }
    if let Some(queue) = ctx.client.multi.as_mut() {
        let top = first.to_ascii_lowercase();
        if !matches!(
            &top[..],
            b"exec" | b"discard" | b"multi" | b"watch" | b"quit" | b"reset"
        ) {
            queue.push(argv.into_vec());
            return Dispatch::Reply(Reply::simple("QUEUED"));
        }
    }
    run(ctx, cmd, argv)
}

/// Redis's `rejectCommand`: the error is counted (errorstats, and the
/// command's rejected_calls), a transaction in progress is flagged to fail at
/// EXEC, and a rejected EXEC itself becomes EXECABORT.
fn reject(ctx: &mut Ctx, first: &[u8], name: Option<&'static str>, r: Reply) -> Dispatch {
    if ctx.client.multi.is_some() {
        ctx.client.multi_error = true;
    }
    let r = exec_abort_if_exec(ctx, first, r);
    ctx.store.stats.count_error(&r);
    if let Some(name) = name {
        ctx.store
            .stats
            .commands
            .entry(name)
            .or_default()
            .rejected_calls += 1;
    }
    Dispatch::Reply(r)
}

/// Redis's `rejectCommand`: a rejected EXEC (wrong arity, NOAUTH...) aborts
/// the transaction and says why, even outside MULTI.
fn exec_abort_if_exec(ctx: &mut Ctx, name: &[u8], r: Reply) -> Reply {
    if !name.eq_ignore_ascii_case(b"exec") {
        return r;
    }
    ctx.client.multi = None;
    ctx.client.multi_error = false;
    let watched = std::mem::take(&mut ctx.client.watched);
    ctx.store.unwatch_all(ctx.client.id, &watched);
    let Reply::Error(e) = &r else { return r };
    // "ERR wrong number..." -> "wrong number...": the code is dropped.
    let text = match e.strip_prefix(b"ERR ") {
        Some(rest) => rest,
        None => &e[..],
    };
    let mut msg = b"EXECABORT Transaction discarded because of: ".to_vec();
    msg.extend_from_slice(text);
    Reply::Error(Bytes::from(msg))
}

/// Run a resolved command (also used by EXEC for queued commands).
pub fn run(ctx: &mut Ctx, cmd: &'static Command, argv: impl Into<Argv>) -> Dispatch {
    let argv: Argv = argv.into();
    let started = std::time::Instant::now();
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.last_cmd = cmd.meta.name.as_str();
        c.last_cmd_ms = ctx.now_ms;
    }
    // Keys whose time has passed are deleted (and the deletion logged)
    // before the command sees them: no handler has to know about expiry.
    // The keys that remain count as accessed (OBJECT IDLETIME), unless the
    // command only inspects them or the client asked for NO-TOUCH.
    // A read command's keys count as keyspace hits or misses (INFO), and a
    // miss is a `keymiss` event (Redis's `lookupKeyRead`).
    let db = ctx.client.db;
    crate::store::set_lru_clock(ctx.now_ms);
    if !ctx.store.loading && !cmd.meta.key_specs.is_empty() && db < ctx.store.dbs.len() {
        let expiring = !ctx.store.dbs[db].expires().is_empty();
        // Accesses are stamped by the lookups the command makes itself
        // (`Db::touching`); TOUCH, which only looks, stamps its keys here.
        let touch = cmd.meta.name == "touch";
        let stats = cmd.reads_keys;
        if expiring || touch || stats {
            let clock = crate::store::lru_clock();
            let miss_event = stats
                && !cmd.meta.name.starts_with("object|")
                && ctx.store.notify_flags & crate::pubsub::NOTIFY_KEY_MISS != 0;
            let visit = |store: &mut Store, i: usize| {
                if expiring {
                    crate::expire::expire_if_needed(store, db, &argv[i], ctx.now_ms);
                }
                let found = if touch {
                    store.dbs[db].touch_access(&argv[i], clock)
                } else {
                    store.dbs[db].contains(&argv[i])
                };
                if stats {
                    if found {
                        store.stats.keyspace_hits += 1;
                    } else {
                        store.stats.keyspace_misses += 1;
                        if miss_event {
                            store.notify(crate::pubsub::NOTIFY_KEY_MISS, "keymiss", &argv[i], db);
                        }
                    }
                }
            };
            // Most commands name one key, at a fixed index: no list.
            match keyspec::single_key_position(&cmd.meta.key_specs, argv.len()) {
                Some(i) => visit(ctx.store, i),
                None => {
                    for i in keyspec::key_positions(&cmd.meta.key_specs, &argv) {
                        visit(ctx.store, i);
                    }
                }
            }
        }
    }
    let mut args = Args::new(argv);
    if cmd.hot.sub {
        args.skip(1);
    }
    // `new` events: the keys the command adds are announced before its
    // next event, or after it.
    let track_new = ctx.store.notify_flags & crate::pubsub::NOTIFY_NEW != 0;
    if track_new {
        ctx.store.track_new_keys(true);
    }
    let touching = cmd.touches && !ctx.client.no_touch && !ctx.store.loading;
    if touching {
        if let Some(d) = ctx.store.dbs.get(db) {
            d.touching(crate::store::lru_clock());
        }
    }
    let result = match cmd.handler {
        Some(h) => h(ctx, &mut args),
        None => Err(CmdError::err("command not implemented")),
    };
    if touching {
        if let Some(d) = ctx.store.dbs.get(db) {
            d.touching(0);
        }
    }
    if track_new {
        ctx.store.track_new_keys(false);
    }
    let reply = match result {
        Ok(r) => r,
        Err(e) => e.to_reply(),
    };
    let nanos = started.elapsed().as_nanos() as u64;
    let usec = nanos / 1000;
    if ctx.store.slowlog.wants(usec) && !ctx.store.loading {
        let (peer, cname) = ctx
            .store
            .clients
            .get(&ctx.client.id)
            .map(|c| (c.addr.clone(), c.name.clone()))
            .unwrap_or_default();
        let now = ctx.now_ms;
        ctx.store.slowlog.push(args.all(), usec, now, peer, cname);
    }
    if !ctx.store.monitors.is_empty() && cmd.hot.monitored {
        feed_monitors(ctx, args.all());
    }
    let logged = match ctx.propagate.take() {
        Some(list) => list,
        None if ctx.store.logging && cmd.hot.write && !reply.is_error() => {
            vec![args.into_vec()]
        }
        None => Vec::new(),
    };
    for argv in logged {
        ctx.store.log_effect(ctx.client.db, &argv);
    }
    let stats = &mut ctx.store.stats;
    let cs = stats.commands.entry(cmd.meta.name.as_str()).or_default();
    cs.calls += 1;
    cs.usec += usec;
    cs.latency.record(nanos);
    if reply.is_error() {
        cs.failed_calls += 1;
    }
    stats.total_commands += 1;
    stats.count_error(&reply);
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.db = ctx.client.db;
    }
    match ctx.block.take() {
        Some(b) if !ctx.in_exec => Dispatch::Block(b, reply),
        _ => Dispatch::Reply(reply),
    }
}

/// Find the command (or subcommand) for `argv`, checking arity.
pub fn resolve<'t>(t: &'t Table, argv: &(impl ArgList + ?Sized)) -> Result<&'t Command, CmdError> {
    let first = argv.arg(0);
    let Some(cmd) = t.get(first) else {
        return Err(unknown_command(argv));
    };
    if !arity_ok(cmd.meta.arity, argv.argc()) {
        return Err(CmdError::WrongArity(cmd.meta.name.clone()));
    }
    // Like Redis's lookupSubcommand: a container alone (bare COMMAND, arity -1)
    // is the container command itself.
    if cmd.meta.subcommands.is_empty() || argv.argc() < 2 {
        return Ok(cmd);
    }
    let sub = argv.arg(1);
    let full = format!(
        "{}|{}",
        cmd.meta.name,
        String::from_utf8_lossy(sub).to_ascii_lowercase()
    );
    match t.commands.get(&full) {
        Some(sc) if arity_ok(sc.meta.arity, argv.argc()) => Ok(sc),
        Some(sc) => Err(CmdError::WrongArity(sc.meta.name.clone())),
        None => Err(CmdError::UnknownSubcommand {
            sub: sanitize_arg(sub),
            cmd: cmd.meta.name.to_ascii_uppercase(),
        }),
    }
}

fn rejected_name(t: &'static Table, argv: &Argv) -> Option<&'static str> {
    let cmd = t.get(&argv[0])?;
    if cmd.meta.subcommands.is_empty() || argv.len() < 2 {
        return Some(cmd.meta.name.as_str());
    }
    let full = format!(
        "{}|{}",
        cmd.meta.name,
        String::from_utf8_lossy(&argv[1]).to_ascii_lowercase()
    );
    t.commands.get(&full).map(|c| c.meta.name.as_str())
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    (arity >= 0 && argc == arity) || (arity < 0 && argc >= -arity)
}

/// Redis's message: the name and the first arguments, 128 bytes of them at most.
fn unknown_command(argv: &(impl ArgList + ?Sized)) -> CmdError {
    let cstr = |b: &[u8]| -> Vec<u8> {
        // NOTE: Redis formats with %s, which stops at a NUL byte.
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        b[..end].to_vec()
    };
    let name = cstr(argv.arg(0));
    let mut args: Vec<u8> = Vec::new();
    for a in (1..argv.argc()).map(|i| argv.arg(i)) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = cstr(a);
        args.push(b'\'');
        args.extend_from_slice(&a[..a.len().min(room)]);
        args.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(&name[..name.len().min(128)]);
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&args);
    CmdError::Raw(Bytes::from(msg))
}

/// MONITOR: the command line as Redis's `replicationFeedMonitors` prints
/// it, `+<unix time with µs> [<db> <client addr>] "arg" ...`, pushed to
/// every monitoring client (their outboxes are bounded like subscribers').
fn feed_monitors(ctx: &mut Ctx, argv: &[Bytes]) {
    let addr = ctx
        .store
        .clients
        .get(&ctx.client.id)
        .map_or_else(|| "lua".to_string(), |c| c.addr.clone());
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut line = format!(
        "+{}.{:06} [{} {}]",
        micros / 1_000_000,
        micros % 1_000_000,
        ctx.client.db,
        addr
    )
    .into_bytes();
    for a in argv {
        line.push(b' ');
        crate::reply::repr(a, &mut line);
    }
    line.extend_from_slice(b"\r\n");
    let msg = Bytes::from(line);
    // Redis gives monitors the replica class: `replica 256mb 64mb 60`.
    let limit = crate::pubsub::OutputLimit {
        hard: 256 << 20,
        soft: 64 << 20,
        soft_seconds: 60,
    };
    ctx.store.monitors.retain(|(_, o)| !o.is_closed());
    for (_, o) in &ctx.store.monitors {
        o.push(msg.clone(), &limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn arity_and_subcommand_errors_match_redis() {
        let t = table();
        let e = resolve(t, &argv(&["config", "get"]))
            .err()
            .map(|e| e.message());
        assert_eq!(
            e.as_deref(),
            Some("ERR wrong number of arguments for 'config|get' command")
        );
        let e = resolve(t, &argv(&["config", "foo"]))
            .err()
            .map(|e| e.message());
        assert_eq!(
            e.as_deref(),
            Some("ERR unknown subcommand 'foo'. Try CONFIG HELP.")
        );
        let e = resolve(t, &argv(&["nosuch", "a", "b"]))
            .err()
            .map(|e| e.message());
        assert_eq!(
            e.as_deref(),
            Some("ERR unknown command 'nosuch', with args beginning with: 'a' 'b' ")
        );
        let e = resolve(t, &argv(&["ECHO"])).err().map(|e| e.message());
        assert_eq!(
            e.as_deref(),
            Some("ERR wrong number of arguments for 'echo' command")
        );
    }

    #[test]
    fn bare_container_command_resolves_to_itself() {
        // Regression (found by fuzzing): bare COMMAND indexed argv[1].
        let c = resolve(table(), &argv(&["COMMAND"]))
            .ok()
            .map(|c| &c.meta.name);
        assert_eq!(c.map(String::as_str), Some("command"));
        let e = resolve(table(), &argv(&["CONFIG"]))
            .err()
            .map(|e| e.message());
        assert_eq!(
            e.as_deref(),
            Some("ERR wrong number of arguments for 'config' command")
        );
    }

    #[test]
    fn every_handler_has_metadata() {
        let t = table();
        for (name, _) in registry() {
            assert!(
                t.commands.contains_key(name),
                "{name} has no Redis metadata"
            );
        }
    }
}
