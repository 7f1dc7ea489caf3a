//! Generic key and server commands beside the type families: COPY, MOVE,
//! SWAPDB, TOUCH, MEMORY USAGE, WAIT, SLOWLOG, DEBUG (SLEEP and
//! SET-ACTIVE-EXPIRE, behind `enable-debug-command` as in Redis 7.0) and
//! CLIENT NO-EVICT, with Redis 7.0's replies and errors.

use super::{BlockRequest, Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::{Db, Value};
use bytes::Bytes;
use std::collections::VecDeque;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("copy", copy),
    ("move", move_),
    ("swapdb", swapdb),
    ("touch", touch),
    ("memory|usage", memory_usage),
    ("wait", wait),
    ("slowlog|get", slowlog_get),
    ("slowlog|len", slowlog_len),
    ("slowlog|reset", slowlog_reset),
    ("slowlog|help", slowlog_help),
    ("debug", debug),
    ("client|no-evict", client_no_evict),
];

/// Redis's `getIntFromObjectOrReply` for a DB index.
fn db_index(b: &[u8], msg: Option<&str>) -> Result<i64, CmdError> {
    parse_i64(b)
        .filter(|v| i32::try_from(*v).is_ok())
        .ok_or_else(|| match msg {
            Some(m) => CmdError::err(m),
            None => CmdError::NotInteger,
        })
}

fn check_db(ctx: &Ctx, id: i64) -> Result<usize, CmdError> {
    if id < 0 || id as usize >= ctx.store.dbs.len() {
        return Err(CmdError::DbIndexOutOfRange);
    }
    Ok(id as usize)
}

/// A copy of a value for COPY: strings and streams copied whole; large
/// hashes, sets, sorted sets and lists shared copy on write (the first
/// write to either key copies what it changes), small forms copied.
fn copy_value(cfg: &ferrite_streams::stream::StreamConfig, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(Bytes::copy_from_slice(s)),
        Value::Hash(h) => Value::Hash(h.clone()),
        Value::Set(s) => Value::Set(s.clone()),
        Value::ZSet(z) => Value::ZSet(z.clone()),
        Value::List(l) => Value::List(l.clone()),
        Value::Stream(s) => Value::Stream(Box::new(s.deep_copy(cfg))),
    }
}

/// Breaks WATCHes on `key` in `db`, wakes its blocked clients, tells its
/// observers (a write to another database than the client's).
fn touch_in(ctx: &mut Ctx, db: usize, key: &[u8]) {
    ctx.store.touch(db, key);
    ctx.store.dirty += 1;
    ctx.store.signal_ready(db, key);
}

/// `COPY source destination [DB destination-db] [REPLACE]`
fn copy(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let src = a.next_bytes()?;
    let dst = a.next_bytes()?;
    let mut dst_db = ctx.client.db;
    let mut replace = false;
    while a.remaining() > 0 {
        if a.eat("REPLACE") {
            replace = true;
        } else if a.remaining() > 1 && a.eat("DB") {
            let id = db_index(&a.next_bytes()?, None)?;
            dst_db = check_db(ctx, id)?;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if dst_db == ctx.client.db && src == dst {
        return Err(CmdError::err("source and destination objects are the same"));
    }
    let cfg = ctx.shared.config.read().stream_config();
    let Some(v) = ctx.db().get(&src) else {
        return Ok(Reply::Int(0));
    };
    let v = copy_value(&cfg, v);
    let ttl = ctx.db().expiry(&src);
    let now = ctx.now_ms;
    crate::expire::expire_if_needed(ctx.store, dst_db, &dst, now);
    let target: &mut Db = &mut ctx.store.dbs[dst_db];
    if target.contains(&dst) {
        if !replace {
            return Ok(Reply::Int(0));
        }
        target.remove(&dst);
    }
    target.insert(dst.clone(), v);
    if let Some(when) = ttl {
        target.set_expiry(&dst, when);
    }
    touch_in(ctx, dst_db, &dst);
    ctx.store
        .notify(crate::pubsub::NOTIFY_GENERIC, "copy_to", &dst, dst_db);
    Ok(Reply::Int(1))
}

/// `MOVE key db`
fn move_(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let id = db_index(&a.next_bytes()?, None)?;
    let dst_db = check_db(ctx, id)?;
    if dst_db == ctx.client.db {
        return Err(CmdError::err("source and destination objects are the same"));
    }
    if !ctx.db().contains(&key) {
        return Ok(Reply::Int(0));
    }
    let now = ctx.now_ms;
    crate::expire::expire_if_needed(ctx.store, dst_db, &key, now);
    if ctx.store.dbs[dst_db].contains(&key) {
        return Ok(Reply::Int(0));
    }
    let ttl = ctx.db().expiry(&key);
    let Some(v) = ctx.db().remove(&key) else {
        return Ok(Reply::Int(0));
    };
    let target = &mut ctx.store.dbs[dst_db];
    target.insert(key.clone(), v);
    if let Some(when) = ttl {
        target.set_expiry(&key, when);
    }
    ctx.touch(&key);
    touch_in(ctx, dst_db, &key);
    let src_db = ctx.client.db;
    ctx.store
        .notify(crate::pubsub::NOTIFY_GENERIC, "move_from", &key, src_db);
    ctx.store
        .notify(crate::pubsub::NOTIFY_GENERIC, "move_to", &key, dst_db);
    Ok(Reply::Int(1))
}

/// `SWAPDB index1 index2`
fn swapdb(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let x = db_index(&a.next_bytes()?, Some("invalid first DB index"))?;
    let y = db_index(&a.next_bytes()?, Some("invalid second DB index"))?;
    let n = ctx.store.dbs.len() as i64;
    if x < 0 || x >= n || y < 0 || y >= n {
        return Err(CmdError::DbIndexOutOfRange);
    }
    let (x, y) = (x as usize, y as usize);
    if x != y {
        // WATCHes on keys that existed in either database break, and
        // clients blocked on keys that now exist are served (Redis's
        // touchAllWatchedKeysInDb and scanDatabaseForReadyKeys).
        ctx.store.touch_all_in(Some(x));
        ctx.store.touch_all_in(Some(y));
        ctx.store.dbs.swap(x, y);
        ctx.store.touch_all_in(Some(x));
        ctx.store.touch_all_in(Some(y));
        ctx.store.signal_all_blocked(Some(x));
        ctx.store.signal_all_blocked(Some(y));
        ctx.store.dirty += 1;
    }
    Ok(Reply::ok())
}

/// `TOUCH key [key ...]`: how many exist (there is no access time to
/// update: Ferrite keeps no LRU clock).
fn touch(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let keys = a.rest().to_vec();
    let db = ctx.db();
    Ok(Reply::Int(
        keys.iter().filter(|k| db.contains(k)).count() as i64
    ))
}

/// Bytes a key and its value take: the estimate INFO memory sums, plus the
/// key and the table slot (Redis counts its dictEntry and robj the same way).
fn memory_usage(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    while a.remaining() > 0 {
        if a.remaining() > 1 && a.eat("SAMPLES") {
            let n = a.next_i64()?;
            if n < 0 {
                return Err(CmdError::Syntax);
            }
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(v) = ctx.db().get(&key) else {
        return Ok(Reply::Null);
    };
    let value = match v {
        Value::String(s) => s.len(),
        Value::Stream(s) => s.memory_usage() + s.groups().map_or(0, |g| g.memory_usage()),
        Value::Hash(h) => h.memory_usage(),
        Value::Set(s) => s.memory_usage(),
        Value::ZSet(z) => z.memory_usage(),
        Value::List(l) => l.memory_usage(),
    };
    // dictEntry (24) + robj (16) + the key's sds header and bytes.
    Ok(Reply::Int((value + key.len() + 24 + 16 + 3) as i64))
}

/// `WAIT numreplicas timeout`: there are no replicas, so 0 acknowledge.
/// Asked for none, or inside MULTI, it answers at once; otherwise it waits
/// for its timeout (0: until the client goes), as Redis does.
fn wait(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let n = a.next_i64()?;
    let timeout = super::read::parse_block_timeout(&a.next_bytes()?)?;
    if n <= 0 || ctx.in_exec {
        return Ok(Reply::Int(0));
    }
    ctx.block = Some(BlockRequest {
        keys: Vec::new(),
        timeout,
        cmd: Box::new(WaitReplicas),
    });
    Ok(Reply::Int(0))
}

struct WaitReplicas;

impl crate::store::BlockedCommand for WaitReplicas {
    fn try_serve(&mut self, _db: &mut Db, _key: &Bytes, _now_ms: u64) -> Option<Reply> {
        None
    }
    fn timeout_reply(&self) -> Reply {
        Reply::Int(0)
    }
    fn name(&self) -> &'static str {
        "wait"
    }
}

// ---- SLOWLOG ----

/// One command that ran at least `slowlog-log-slower-than` µs.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    id: u64,
    time_s: u64,
    usec: u64,
    args: Vec<Bytes>,
    peer: String,
    name: Bytes,
}

/// SLOWLOG's entries (newest first) and settings.
#[derive(Debug, Default)]
pub struct SlowLog {
    entries: VecDeque<SlowEntry>,
    next_id: u64,
    /// -1: off.
    slower_than: i64,
    max_len: usize,
}

/// Redis's SLOWLOG_ENTRY_MAX_ARGC and SLOWLOG_ENTRY_MAX_STRING.
const MAX_ARGC: usize = 32;
const MAX_STRING: usize = 128;

impl SlowLog {
    /// Takes `slowlog-log-slower-than` and `slowlog-max-len` (start-up and
    /// CONFIG SET); a shorter limit drops the oldest entries.
    pub fn configure(&mut self, cfg: &crate::config::Config) {
        self.slower_than = cfg.slowlog_slower_than;
        self.max_len = usize::try_from(cfg.slowlog_max_len).unwrap_or(usize::MAX);
        self.entries.truncate(self.max_len);
    }

    /// Whether a command that ran `usec` is recorded.
    #[inline]
    pub fn wants(&self, usec: u64) -> bool {
        self.slower_than >= 0 && usec >= self.slower_than as u64
    }

    /// Records a command (Redis's `slowlogPushEntryIfNeeded`): at most 32
    /// arguments (the last says how many more there were), each at most 128
    /// bytes (with how many more there were).
    pub fn push(&mut self, argv: &[Bytes], usec: u64, now_ms: u64, peer: String, name: Bytes) {
        let mut args = Vec::with_capacity(argv.len().min(MAX_ARGC));
        for (i, a) in argv.iter().enumerate() {
            if i == MAX_ARGC - 1 && argv.len() > MAX_ARGC {
                let more = argv.len() - MAX_ARGC + 1;
                args.push(Bytes::from(format!("... ({more} more arguments)")));
                break;
            }
            if a.len() > MAX_STRING {
                let mut s = a[..MAX_STRING].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_STRING).as_bytes(),
                );
                args.push(Bytes::from(s));
            } else {
                args.push(a.clone());
            }
        }
        self.entries.push_front(SlowEntry {
            id: self.next_id,
            time_s: now_ms / 1000,
            usec,
            args,
            peer,
            name,
        });
        self.next_id += 1;
        self.entries.truncate(self.max_len);
    }
}

fn slowlog_get(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let count = match a.remaining() {
        0 => 10,
        1 => {
            let n = parse_i64(&a.next_bytes()?)
                .filter(|n| *n >= -1)
                .ok_or_else(|| CmdError::err("count should be greater than or equal to -1"))?;
            if n == -1 {
                usize::MAX
            } else {
                n as usize
            }
        }
        _ => {
            return Err(CmdError::err(
                "unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.",
            ))
        }
    };
    let out = ctx
        .store
        .slowlog
        .entries
        .iter()
        .take(count)
        .map(|e| {
            Reply::Array(vec![
                Reply::Int(e.id as i64),
                Reply::Int(e.time_s as i64),
                Reply::Int(e.usec as i64),
                Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                Reply::bulk_str(&e.peer),
                Reply::Bulk(e.name.clone()),
            ])
        })
        .collect();
    Ok(Reply::Array(out))
}

fn slowlog_len(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(ctx.store.slowlog.entries.len() as i64))
}

fn slowlog_reset(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    ctx.store.slowlog.entries.clear();
    Ok(Reply::ok())
}

fn slowlog_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let lines = [
        "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET [<count>]",
        "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
        "    Entries are made of:",
        "    id, timestamp, time in microseconds, arguments array, client IP and port,",
        "    client name",
        "LEN",
        "    Return the length of the slowlog.",
        "RESET",
        "    Reset the slowlog.",
        "HELP",
        "    Prints this help.",
    ];
    Ok(Reply::Array(
        lines.iter().map(|l| Reply::simple(l)).collect(),
    ))
}

// ---- DEBUG ----

const DEBUG_REFUSED: &str = "DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.";

/// C's `atof`: the longest prefix that parses as a number, else 0.
fn atof(b: &[u8]) -> f64 {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_start();
    (1..=s.len())
        .rev()
        .find_map(|n| s.get(..n).and_then(|p| p.parse::<f64>().ok()))
        .unwrap_or(0.0)
}

/// `DEBUG SLEEP seconds` (the whole server sleeps: it holds the store lock,
/// as Redis's single thread does) and `DEBUG SET-ACTIVE-EXPIRE 0|1`.
fn debug(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let allowed = match ctx.shared.config.read().enable_debug_command.as_str() {
        "yes" => true,
        "local" => ctx.store.clients.get(&ctx.client.id).is_none_or(|c| {
            c.addr.starts_with("127.")
                || c.addr.starts_with("[::1]")
                || c.addr.starts_with("embedded")
        }),
        _ => false,
    };
    if !allowed {
        return Err(CmdError::err(DEBUG_REFUSED));
    }
    let sub = a.next_bytes()?;
    let argc = a.remaining();
    let unknown = || {
        CmdError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
            String::from_utf8_lossy(&sub)
        ))
    };
    if sub.eq_ignore_ascii_case(b"SLEEP") && argc == 1 {
        let secs = atof(&a.next_bytes()?);
        if secs > 0.0 && secs.is_finite() {
            std::thread::sleep(std::time::Duration::from_secs_f64(secs.min(3600.0)));
        }
        Ok(Reply::ok())
    } else if sub.eq_ignore_ascii_case(b"OBJECT") && argc == 1 {
        debug_object(ctx, &a.next_bytes()?)
    } else if sub.eq_ignore_ascii_case(b"RELOAD") {
        // The options that reload without saving, or merge into the
        // current keyspace, would leave memory unlike what the commit log
        // replays to: refused rather than half done.
        if argc > 0 {
            return Err(CmdError::err(
                "DEBUG RELOAD options (MERGE, NOFLUSH, NOSAVE) are not supported: Ferrite reloads only a checkpoint it has just written",
            ));
        }
        let Some(p) = ctx.shared.persist.get().cloned() else {
            return Err(CmdError::err(
                "Error trying to save the DB: persistence is off (appendonly no)",
            ));
        };
        p.reload(ctx.shared, ctx.store)
            .map_err(|e| CmdError::err(format!("Error trying to load the checkpoint: {e}")))?;
        ctx.propagate_nothing();
        Ok(Reply::ok())
    } else if sub.eq_ignore_ascii_case(b"SET-ACTIVE-EXPIRE") && argc == 1 {
        let on = parse_i64(&a.next_bytes()?).unwrap_or(0) != 0;
        ctx.shared
            .active_expire
            .store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(Reply::ok())
    } else {
        Err(unknown())
    }
}

/// DEBUG OBJECT key: Redis's status line. `serializedlength` is the
/// value's length in Ferrite's checkpoint form (for streams and values
/// over 64 MiB, the memory estimate: encoding those would copy them);
/// `lru` is the access clock in seconds, as Redis's 24-bit LRU field.
fn debug_object(ctx: &mut Ctx, key: &[u8]) -> Result<Reply, CmdError> {
    let db = ctx.db();
    let (Some(v), Some(clock), Some(idle)) = (db.get(key), db.access_clock(key), db.idle_secs(key))
    else {
        return Err(CmdError::NoSuchKey);
    };
    let estimate = match v {
        Value::String(s) => s.len(),
        Value::Stream(s) => s.memory_usage(),
        Value::Hash(h) => h.memory_usage(),
        Value::Set(s) => s.memory_usage(),
        Value::ZSet(z) => z.memory_usage(),
        Value::List(l) => l.memory_usage(),
    };
    let big = estimate > 64 << 20;
    let (encoding, serialized) = match v {
        Value::String(s) => (super::string::string_encoding(s), s.len() + 5),
        Value::Stream(_) => ("stream", estimate),
        Value::Hash(h) => (h.encoding(), encoded_len(big, estimate, |o| h.encode(o))),
        Value::Set(s) => (s.encoding(), encoded_len(big, estimate, |o| s.encode(o))),
        Value::ZSet(z) => (z.encoding(), encoded_len(big, estimate, |o| z.encode(o))),
        Value::List(l) => (l.encoding(), encoded_len(big, estimate, |o| l.encode(o))),
    };
    let line = format!(
        "Value at:0x{:x} refcount:1 encoding:{encoding} serializedlength:{serialized} lru:{} lru_seconds_idle:{idle}",
        v as *const Value as usize,
        clock & 0xFF_FFFF,
    );
    Ok(Reply::Simple(Bytes::from(line)))
}

/// The length `encode` writes, or `estimate` for a value too big to copy.
fn encoded_len(big: bool, estimate: usize, encode: impl FnOnce(&mut Vec<u8>)) -> usize {
    if big {
        return estimate;
    }
    let mut out = Vec::new();
    encode(&mut out);
    out.len()
}

/// `CLIENT NO-EVICT on|off`: there is no client eviction (no
/// `maxmemory-clients`), so the flag changes nothing; accepted as Redis does.
fn client_no_evict(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let v = a.next_bytes()?;
    if v.eq_ignore_ascii_case(b"on") || v.eq_ignore_ascii_case(b"off") {
        Ok(Reply::ok())
    } else {
        Err(CmdError::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowlog_truncates_like_redis() {
        let mut s = SlowLog {
            slower_than: 0,
            max_len: 2,
            ..Default::default()
        };
        let argv: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("a{i}"))).collect();
        s.push(&argv, 5, 1000, "x".into(), Bytes::new());
        let e = &s.entries[0];
        assert_eq!(e.args.len(), 32);
        assert_eq!(e.args[31], Bytes::from("... (9 more arguments)"));
        let long = vec![Bytes::from(vec![b'x'; 130])];
        s.push(&long, 5, 1000, "x".into(), Bytes::new());
        assert!(s.entries[0].args[0].ends_with(b"... (2 more bytes)"));
        s.push(&long, 5, 1000, "x".into(), Bytes::new());
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].id, 2);
        assert!(s.wants(0));
    }

    #[test]
    fn atof_reads_a_prefix() {
        assert_eq!(atof(b"0.5x"), 0.5);
        assert_eq!(atof(b"x"), 0.0);
        assert_eq!(atof(b" 2"), 2.0);
    }
}
