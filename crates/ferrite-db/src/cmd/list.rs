//! List commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LLEN, LRANGE,
//! LINDEX, LSET, LREM, LTRIM, LINSERT, LPOS, LMOVE, RPOPLPUSH, LMPOP, and
//! the blocking BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP.
//!
//! The value type lives in [`crate::types::list`]. Each command parses and
//! checks in Redis 7.0's order (`t_list.c`: some parse their numbers before
//! looking up the key, some after), and deletes a list it empties.
//!
//! Blocking: a blocking pop that finds every key missing or empty leaves a
//! [`ListWaiter`] in [`Ctx::block`] (XREAD's machinery: FIFO per key, served
//! right after the command or EXEC that pushed). Inside MULTI it does not
//! block and replies null at once. As in Redis 7.0, a waiter whose key is
//! deleted or takes another type stays blocked; it is served by the next
//! push that makes the key a non-empty list.
//!
//! Logging: the non-blocking writes are deterministic and logged as typed,
//! except that a write that changed nothing logs nothing. A blocking pop
//! logs what it did, as Redis propagates it: BLPOP/BRPOP as LPOP/RPOP,
//! BLMPOP and LMPOP as `LPOP|RPOP key n`, BLMOVE as LMOVE, BRPOPLPUSH as
//! RPOPLPUSH, whether served at once or later by a waiter.

use super::{BlockRequest, Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_LIST};
use crate::reply::Reply;
use crate::store::{BlockedCommand, Db, Value};
use crate::types::hash::long_double::Ld;
use crate::types::list::{Elem, End, List, Probe};
use bytes::Bytes;
use std::time::Duration;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("lpush", lpush),
    ("rpush", rpush),
    ("lpushx", lpushx),
    ("rpushx", rpushx),
    ("lpop", lpop),
    ("rpop", rpop),
    ("llen", llen),
    ("lrange", lrange),
    ("lindex", lindex),
    ("lset", lset),
    ("lrem", lrem),
    ("ltrim", ltrim),
    ("linsert", linsert),
    ("lpos", lpos),
    ("lmove", lmove),
    ("rpoplpush", rpoplpush),
    ("lmpop", lmpop),
    ("blpop", blpop),
    ("brpop", brpop),
    ("blmove", blmove),
    ("brpoplpush", brpoplpush),
    ("blmpop", blmpop),
];

/// The list at `key`, `None` if there is no key, WRONGTYPE for another type.
fn read<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a List>, CmdError> {
    match db.get(key) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The list at `key` for writing, `None` if there is no key.
fn read_mut<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut List>, CmdError> {
    match db.get_mut(key) {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The list at `key`, created empty if missing. The caller checked the type.
/// The key is copied: a slice of the command's arguments would keep the
/// connection's whole read buffer alive as long as the key exists.
fn create<'a>(db: &'a mut Db, key: &Bytes) -> Result<&'a mut List, CmdError> {
    if !db.contains(key) {
        db.insert(Bytes::copy_from_slice(key), Value::List(Box::default()));
    }
    read_mut(db, key)?.ok_or(CmdError::WrongType)
}

/// Delete `key` if it holds an empty list (Redis never keeps one).
fn drop_if_empty(db: &mut Db, key: &[u8]) {
    if matches!(db.get(key), Some(Value::List(l)) if l.is_empty()) {
        db.remove(key);
    }
}

fn end_arg(a: &mut Args) -> Result<End, CmdError> {
    End::parse(&a.next_bytes()?).ok_or(CmdError::Syntax)
}

fn pop_name(end: End) -> Bytes {
    Bytes::from_static(match end {
        End::Left => b"LPOP",
        End::Right => b"RPOP",
    })
}

fn bulks(items: Vec<Bytes>) -> Reply {
    Reply::Array(items.into_iter().map(Reply::Bulk).collect())
}

/// Redis's `getLongFromObjectOrReply`.
fn next_long(a: &mut Args) -> Result<i64, CmdError> {
    a.next_i64()
}

/// Redis's `getRangeLongFromObjectOrReply(.., min, LONG_MAX, msg)`: the
/// same message for a non-number and for one out of range.
fn next_at_least(a: &mut Args, min: i64, msg: &str) -> Result<i64, CmdError> {
    match crate::args::parse_i64(&a.next_bytes()?) {
        Some(n) if n >= min => Ok(n),
        _ => Err(CmdError::err(msg)),
    }
}

// ---- pushes ----

fn push(ctx: &mut Ctx, a: &mut Args, end: End, only_existing: bool) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let values = a.rest().to_vec();
    let db = ctx.db();
    let exists = read(db, &key)?.is_some();
    if only_existing && !exists {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    }
    let l = create(db, &key)?;
    for v in &values {
        l.push(end, v);
    }
    let len = l.len();
    ctx.touch(&key);
    ctx.notify(NOTIFY_LIST, push_event(end), &key);
    Ok(Reply::Int(len as i64))
}

fn lpush(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    push(ctx, a, End::Left, false)
}

fn rpush(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    push(ctx, a, End::Right, false)
}

fn lpushx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    push(ctx, a, End::Left, true)
}

fn rpushx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    push(ctx, a, End::Right, true)
}

/// The pop event of `end` and, if the pop emptied the key (it is gone),
/// `del` (Redis's order).
fn notify_pop(ctx: &mut Ctx, end: End, key: &Bytes) {
    let ev = match end {
        End::Left => "lpop",
        End::Right => "rpop",
    };
    ctx.notify(NOTIFY_LIST, ev, key);
    if !ctx.db().contains(key) {
        ctx.notify(NOTIFY_GENERIC, "del", key);
    }
}

fn push_event(end: End) -> &'static str {
    match end {
        End::Left => "lpush",
        End::Right => "rpush",
    }
}

// ---- pops ----

/// LPOP / RPOP key [count].
fn pop(ctx: &mut Ctx, a: &mut Args, end: End, name: &str) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if a.remaining() > 1 {
        return Err(CmdError::WrongArity(name.into()));
    }
    let count = match a.remaining() {
        0 => None,
        _ => Some(next_at_least(
            a,
            0,
            "value is out of range, must be positive",
        )?),
    };
    let db = ctx.db();
    let Some(l) = read_mut(db, &key)? else {
        ctx.propagate_nothing();
        return Ok(if count.is_some() {
            Reply::NullArray
        } else {
            Reply::Null
        });
    };
    let reply = match count {
        Some(0) => {
            ctx.propagate_nothing();
            return Ok(Reply::Array(Vec::new()));
        }
        None => l.pop(end).map_or(Reply::Null, Reply::Bulk),
        Some(n) => bulks(l.pop_many(end, usize::try_from(n).unwrap_or(usize::MAX))),
    };
    drop_if_empty(db, &key);
    ctx.touch(&key);
    notify_pop(ctx, end, &key);
    Ok(reply)
}

fn lpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    pop(ctx, a, End::Left, "lpop")
}

fn rpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    pop(ctx, a, End::Right, "rpop")
}

// ---- reads ----

fn llen(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    a.finish()?;
    Ok(Reply::Int(
        read(ctx.db(), &key)?.map_or(0, |l| l.len() as i64),
    ))
}

fn lrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let (start, stop) = (next_long(a)?, next_long(a)?);
    a.finish()?;
    let Some(l) = read(ctx.db(), &key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    Ok(match l.clamp_range(start, stop) {
        None => Reply::Array(Vec::new()),
        Some((s, e)) => Reply::Array(
            l.iter_from(s)
                .take(e - s + 1)
                .map(|v| Reply::Bulk(v.to_bytes()))
                .collect(),
        ),
    })
}

fn lindex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    // NOTE: Redis looks the key up before parsing the index: a missing key
    // is a null even with a malformed index.
    let Some(l) = read(ctx.db(), &key)? else {
        return Ok(Reply::Null);
    };
    let index = next_long(a)?;
    Ok(l.get(index).map_or(Reply::Null, Reply::Bulk))
}

fn lpos(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let element = a.next_bytes()?;
    let (mut rank, mut count, mut maxlen) = (1i64, None::<i64>, 0i64);
    while a.remaining() > 0 {
        let more = a.remaining() > 1;
        if more && a.eat("RANK") {
            rank = next_long(a)?;
            if rank == 0 {
                return Err(CmdError::err(
                    "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                ));
            }
        } else if more && a.eat("COUNT") {
            count = Some(next_at_least(a, 0, "COUNT can't be negative")?);
        } else if more && a.eat("MAXLEN") {
            maxlen = next_at_least(a, 0, "MAXLEN can't be negative")?;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(l) = read(ctx.db(), &key)? else {
        return Ok(if count.is_some() {
            Reply::Array(Vec::new())
        } else {
            Reply::Null
        });
    };
    // NOTE: Redis negates a negative rank in a C long: i64::MIN stays
    // negative, so every match from the tail counts.
    let from_tail = rank < 0;
    if from_tail {
        rank = rank.wrapping_neg();
    }
    let len = l.len();
    let order: Box<dyn Iterator<Item = (usize, Elem<'_>)>> = if from_tail {
        Box::new(l.iter_rev().enumerate().map(move |(k, v)| (len - 1 - k, v)))
    } else {
        Box::new(l.iter().enumerate())
    };
    let probe = Probe::new(&element);
    let scan = if maxlen == 0 {
        len
    } else {
        usize::try_from(maxlen).unwrap_or(usize::MAX)
    };
    let mut matches: i64 = 0;
    let mut found = Vec::new();
    for (i, v) in order.take(scan) {
        if !v.matches(&probe) {
            continue;
        }
        matches += 1;
        if matches < rank {
            continue;
        }
        found.push(Reply::Int(i as i64));
        match count {
            None => break,
            Some(c) if c != 0 && matches.wrapping_sub(rank).wrapping_add(1) >= c => break,
            Some(_) => {}
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found),
        None => found.pop().unwrap_or(Reply::Null),
    })
}

// ---- in-place writes ----

fn lset(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    // NOTE: Redis 7.0 looks the key up (and checks its type) before it
    // parses the index.
    let Some(l) = read_mut(ctx.db(), &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    let index = next_long(a)?;
    let value = a.next_bytes()?;
    let i = l
        .resolve(index)
        .ok_or_else(|| CmdError::err("index out of range"))?;
    l.set(i, &value);
    ctx.touch(&key);
    ctx.notify(NOTIFY_LIST, "lset", &key);
    Ok(Reply::ok())
}

fn lrem(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let count = next_long(a)?;
    let value = a.next_bytes()?;
    let db = ctx.db();
    let Some(l) = read_mut(db, &key)? else {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    };
    let removed = l.remove(&value, count);
    if removed == 0 {
        ctx.propagate_nothing();
    } else {
        drop_if_empty(db, &key);
        ctx.touch(&key);
        ctx.notify(NOTIFY_LIST, "lrem", &key);
        if !ctx.db().contains(&key) {
            ctx.notify(NOTIFY_GENERIC, "del", &key);
        }
    }
    Ok(Reply::Int(removed as i64))
}

fn ltrim(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let (start, stop) = (next_long(a)?, next_long(a)?);
    let db = ctx.db();
    let Some(l) = read_mut(db, &key)? else {
        ctx.propagate_nothing();
        return Ok(Reply::ok());
    };
    let keep = l.clamp_range(start, stop);
    l.trim(keep);
    drop_if_empty(db, &key);
    // Redis signals the key even when nothing was removed.
    ctx.touch(&key);
    ctx.notify(NOTIFY_LIST, "ltrim", &key);
    if !ctx.db().contains(&key) {
        ctx.notify(NOTIFY_GENERIC, "del", &key);
    }
    Ok(Reply::ok())
}

fn linsert(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let where_ = a.next_bytes()?;
    let after = if where_.eq_ignore_ascii_case(b"after") {
        true
    } else if where_.eq_ignore_ascii_case(b"before") {
        false
    } else {
        return Err(CmdError::Syntax);
    };
    let (pivot, value) = (a.next_bytes()?, a.next_bytes()?);
    let Some(l) = read_mut(ctx.db(), &key)? else {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    };
    if !l.insert(&pivot, &value, after) {
        ctx.propagate_nothing();
        return Ok(Reply::Int(-1));
    }
    let len = l.len();
    ctx.touch(&key);
    ctx.notify(NOTIFY_LIST, "linsert", &key);
    Ok(Reply::Int(len as i64))
}

// ---- moves ----

/// Pop from `src` and push onto `dst` (Redis's `lmoveGenericCommand`
/// after its argument checks): `None` if `src` is missing.
fn move_one(
    db: &mut Db,
    src: &Bytes,
    dst: &Bytes,
    from: End,
    to: End,
) -> Result<Option<Bytes>, CmdError> {
    let Some(l) = read(db, src)? else {
        return Ok(None);
    };
    if l.is_empty() {
        return Ok(None);
    }
    read(db, dst)?;
    let Some(v) = read_mut(db, src)?.and_then(|l| l.pop(from)) else {
        return Ok(None);
    };
    create(db, dst)?.push(to, &v);
    drop_if_empty(db, src);
    Ok(Some(v))
}

/// The command a move is logged as.
fn move_effect(src: &Bytes, dst: &Bytes, from: End, to: End, rpoplpush: bool) -> Vec<Bytes> {
    if rpoplpush {
        vec![Bytes::from_static(b"RPOPLPUSH"), src.clone(), dst.clone()]
    } else {
        vec![
            Bytes::from_static(b"LMOVE"),
            src.clone(),
            dst.clone(),
            Bytes::from_static(from.name().as_bytes()),
            Bytes::from_static(to.name().as_bytes()),
        ]
    }
}

fn do_move(ctx: &mut Ctx, src: Bytes, dst: Bytes, from: End, to: End) -> Result<Reply, CmdError> {
    match move_one(ctx.db(), &src, &dst, from, to)? {
        None => {
            ctx.propagate_nothing();
            Ok(Reply::Null)
        }
        Some(v) => {
            ctx.touch(&src);
            ctx.touch(&dst);
            // Redis: the push on the destination, then the pop (and a
            // `del` if it emptied the source).
            ctx.notify(NOTIFY_LIST, push_event(to), &dst);
            notify_pop(ctx, from, &src);
            Ok(Reply::Bulk(v))
        }
    }
}

fn lmove(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (src, dst) = (a.next_bytes()?, a.next_bytes()?);
    let (from, to) = (end_arg(a)?, end_arg(a)?);
    do_move(ctx, src, dst, from, to)
}

fn rpoplpush(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (src, dst) = (a.next_bytes()?, a.next_bytes()?);
    do_move(ctx, src, dst, End::Right, End::Left)
}

/// LMPOP / BLMPOP's `numkeys key... LEFT|RIGHT [COUNT count]`.
fn parse_mpop(a: &mut Args) -> Result<(Vec<Bytes>, End, usize), CmdError> {
    let numkeys = next_at_least(a, 1, "numkeys should be greater than 0")?;
    let numkeys = usize::try_from(numkeys).unwrap_or(usize::MAX);
    if numkeys >= a.remaining() {
        return Err(CmdError::Syntax);
    }
    let keys: Vec<Bytes> = (0..numkeys)
        .map(|_| a.next_bytes())
        .collect::<Result<_, _>>()?;
    let end = end_arg(a)?;
    let mut count = None;
    while a.remaining() > 0 {
        if count.is_none() && a.remaining() > 1 && a.eat("COUNT") {
            count = Some(next_at_least(a, 1, "count should be greater than 0")?);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let count = usize::try_from(count.unwrap_or(1)).unwrap_or(usize::MAX);
    Ok((keys, end, count))
}

/// The first non-empty list among `keys`, checking types in order up to it.
fn first_ready(db: &Db, keys: &[Bytes]) -> Result<Option<Bytes>, CmdError> {
    for k in keys {
        if read(db, k)?.is_some_and(|l| !l.is_empty()) {
            return Ok(Some(k.clone()));
        }
    }
    Ok(None)
}

/// Pop up to `count` from `key` as LMPOP replies: `[key, [elements]]`,
/// with the `LPOP|RPOP key n` it is logged as.
fn mpop_from(db: &mut Db, key: &Bytes, end: End, count: usize) -> (Reply, Vec<Bytes>) {
    let items = match read_mut(db, key) {
        Ok(Some(l)) => l.pop_many(end, count),
        _ => Vec::new(),
    };
    drop_if_empty(db, key);
    let effect = vec![
        pop_name(end),
        key.clone(),
        Bytes::from(items.len().to_string()),
    ];
    (
        Reply::Array(vec![Reply::Bulk(key.clone()), bulks(items)]),
        effect,
    )
}

fn lmpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (keys, end, count) = parse_mpop(a)?;
    let Some(key) = first_ready(ctx.db(), &keys)? else {
        ctx.propagate_nothing();
        return Ok(Reply::NullArray);
    };
    let (reply, effect) = mpop_from(ctx.db(), &key, end, count);
    ctx.touch(&key);
    notify_pop(ctx, end, &key);
    ctx.propagate(effect);
    Ok(reply)
}

// ---- blocking ----

/// Redis 7.0's `getTimeoutFromObjectOrReply(.., UNIT_SECONDS)`: a float
/// number of seconds (`strtold`), times 1000 and truncated to a C long
/// long, where a value beyond it becomes `LLONG_MIN` (x86's conversion,
/// so `inf` and `1e30` are "negative"). `None` is 0: forever.
pub fn parse_timeout(b: &[u8]) -> Result<Option<Duration>, CmdError> {
    let ld = Ld::parse(b).ok_or_else(|| CmdError::err("timeout is not a float or out of range"))?;
    let ms: i64 = match ld {
        Ld::Finite { neg, m, e } => {
            let p = u128::from(m) * 1000;
            let mag = if e >= 0 {
                let e = e as u32;
                (e < 64 && p.leading_zeros() >= e).then(|| p << e)
            } else if e <= -128 {
                Some(0)
            } else {
                Some(p >> e.unsigned_abs())
            };
            match mag.and_then(|v| i64::try_from(v).ok()) {
                Some(v) if neg => -v,
                Some(v) => v,
                None => i64::MIN,
            }
        }
        _ => i64::MIN,
    };
    if ms < 0 {
        return Err(CmdError::TimeoutNegative);
    }
    Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
}

/// What a blocked list command does when served.
#[derive(Debug, Clone)]
enum Op {
    /// BLPOP / BRPOP: `[key, element]`.
    Pop(End),
    /// BLMPOP: `[key, [elements]]`.
    MPop(End, usize),
    /// BLMOVE / BRPOPLPUSH: the element.
    Move {
        dst: Bytes,
        from: End,
        to: End,
        rpoplpush: bool,
    },
}

/// A blocked BLPOP, BRPOP, BLMPOP, BLMOVE or BRPOPLPUSH.
struct ListWaiter {
    keys: Vec<Bytes>,
    op: Op,
    name: &'static str,
    effects: Vec<Vec<Bytes>>,
    touched: Vec<Bytes>,
    /// Keyspace events of the serving, fired by `Store::serve_ready`.
    events: Vec<(u32, &'static str, Bytes)>,
}

impl BlockedCommand for ListWaiter {
    fn try_serve(&mut self, db: &mut Db, key: &Bytes, _now_ms: u64) -> Option<Reply> {
        if !self.keys.contains(key) {
            return None;
        }
        // Redis 7.0 serves list waiters only from a non-empty list; a key
        // deleted or of another type leaves them blocked.
        let Some(Value::List(l)) = db.get(key) else {
            return None;
        };
        if l.is_empty() {
            return None;
        }
        let reply = match &self.op {
            Op::Pop(end) => {
                let v = read_mut(db, key).ok().flatten()?.pop(*end)?;
                drop_if_empty(db, key);
                self.effects.push(vec![pop_name(*end), key.clone()]);
                Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Bulk(v)])
            }
            Op::MPop(end, count) => {
                let (reply, effect) = mpop_from(db, key, *end, *count);
                self.effects.push(effect);
                reply
            }
            Op::Move {
                dst,
                from,
                to,
                rpoplpush,
            } => {
                // The destination's type is checked when served: the
                // waiter gets WRONGTYPE and the element stays.
                let v = match move_one(db, key, dst, *from, *to) {
                    Err(e) => return Some(e.to_reply()),
                    Ok(None) => return None,
                    Ok(Some(v)) => v,
                };
                self.effects
                    .push(move_effect(key, dst, *from, *to, *rpoplpush));
                self.touched.push(dst.clone());
                Reply::Bulk(v)
            }
        };
        self.touched.insert(0, key.clone());
        // The events the immediate command fires (see `notify_pop` and
        // `do_move`): a move's push first, then the pop, then `del`.
        if let Op::Move { dst, to, .. } = &self.op {
            self.events
                .push((NOTIFY_LIST, push_event(*to), dst.clone()));
        }
        let end = match &self.op {
            Op::Pop(e) | Op::MPop(e, _) => *e,
            Op::Move { from, .. } => *from,
        };
        let ev = match end {
            End::Left => "lpop",
            End::Right => "rpop",
        };
        self.events.push((NOTIFY_LIST, ev, key.clone()));
        if !db.contains(key) {
            self.events.push((NOTIFY_GENERIC, "del", key.clone()));
        }
        Some(reply)
    }

    fn timeout_reply(&self) -> Reply {
        Reply::NullArray
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn take_effects(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.effects)
    }

    fn take_touched(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.touched)
    }

    fn take_events(&mut self) -> Vec<(u32, &'static str, Bytes)> {
        std::mem::take(&mut self.events)
    }
}

/// Block on `keys` (nothing to log), or reply `null` at once inside MULTI.
fn block(
    ctx: &mut Ctx,
    keys: Vec<Bytes>,
    timeout: Option<Duration>,
    op: Op,
    name: &'static str,
    null: Reply,
) -> Result<Reply, CmdError> {
    ctx.propagate_nothing();
    ctx.block = Some(BlockRequest {
        keys: keys.clone(),
        timeout,
        cmd: Box::new(ListWaiter {
            keys,
            op,
            name,
            effects: Vec::new(),
            touched: Vec::new(),
            events: Vec::new(),
        }),
    });
    Ok(null)
}

/// BLPOP / BRPOP key [key ...] timeout.
fn bpop(ctx: &mut Ctx, a: &mut Args, end: End, name: &'static str) -> Result<Reply, CmdError> {
    let all = a.rest().to_vec();
    let Some((timeout, keys)) = all.split_last() else {
        return Err(CmdError::WrongArity(name.into()));
    };
    let timeout = parse_timeout(timeout)?;
    let Some(key) = first_ready(ctx.db(), keys)? else {
        return block(
            ctx,
            keys.to_vec(),
            timeout,
            Op::Pop(end),
            name,
            Reply::NullArray,
        );
    };
    let v = read_mut(ctx.db(), &key)?.and_then(|l| l.pop(end));
    let Some(v) = v else {
        return Ok(Reply::NullArray);
    };
    drop_if_empty(ctx.db(), &key);
    ctx.touch(&key);
    notify_pop(ctx, end, &key);
    ctx.propagate(vec![pop_name(end), key.clone()]);
    Ok(Reply::Array(vec![Reply::Bulk(key), Reply::Bulk(v)]))
}

fn blpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bpop(ctx, a, End::Left, "blpop")
}

fn brpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bpop(ctx, a, End::Right, "brpop")
}

/// BLMOVE / BRPOPLPUSH after their arguments are parsed.
fn bmove(
    ctx: &mut Ctx,
    src: Bytes,
    dst: Bytes,
    (from, to): (End, End),
    timeout: Option<Duration>,
    rpoplpush: bool,
) -> Result<Reply, CmdError> {
    if read(ctx.db(), &src)?.is_none() {
        let op = Op::Move {
            dst,
            from,
            to,
            rpoplpush,
        };
        let name = if rpoplpush { "brpoplpush" } else { "blmove" };
        // NOTE: inside MULTI Redis answers a null bulk here, but a null
        // array when a blocked BLMOVE times out.
        return block(ctx, vec![src], timeout, op, name, Reply::Null);
    }
    let r = do_move(ctx, src.clone(), dst.clone(), from, to)?;
    if !r.is_error() && r != Reply::Null {
        ctx.propagate(move_effect(&src, &dst, from, to, rpoplpush));
    }
    Ok(r)
}

fn blmove(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (src, dst) = (a.next_bytes()?, a.next_bytes()?);
    let (from, to) = (end_arg(a)?, end_arg(a)?);
    let timeout = parse_timeout(&a.next_bytes()?)?;
    bmove(ctx, src, dst, (from, to), timeout, false)
}

fn brpoplpush(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (src, dst) = (a.next_bytes()?, a.next_bytes()?);
    let timeout = parse_timeout(&a.next_bytes()?)?;
    bmove(ctx, src, dst, (End::Right, End::Left), timeout, true)
}

/// BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count].
fn blmpop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let timeout_arg = a.next_bytes()?;
    let (keys, end, count) = parse_mpop(a)?;
    let timeout = parse_timeout(&timeout_arg)?;
    let Some(key) = first_ready(ctx.db(), &keys)? else {
        let op = Op::MPop(end, count);
        return block(ctx, keys, timeout, op, "blmpop", Reply::NullArray);
    };
    let (reply, effect) = mpop_from(ctx.db(), &key, end, count);
    ctx.touch(&key);
    notify_pop(ctx, end, &key);
    ctx.propagate(effect);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_redis_7_0() {
        let ms = |s: &str| parse_timeout(s.as_bytes()).map(|d| d.map(|d| d.as_millis()));
        assert_eq!(ms("0"), Ok(None));
        assert_eq!(ms("1"), Ok(Some(1000)));
        assert_eq!(ms("0.5"), Ok(Some(500)));
        assert_eq!(ms("0.0001"), Ok(None));
        assert_eq!(ms("-0.0001"), Ok(None));
        assert_eq!(ms("0x10"), Ok(Some(16000)));
        assert_eq!(ms("-1"), Err(CmdError::TimeoutNegative));
        assert_eq!(ms("inf"), Err(CmdError::TimeoutNegative));
        assert_eq!(ms("1e30"), Err(CmdError::TimeoutNegative));
        assert_eq!(ms("9300000000000000"), Err(CmdError::TimeoutNegative));
        assert!(ms("abc").is_err() && ms("nan").is_err() && ms(" 1").is_err());
    }
}
