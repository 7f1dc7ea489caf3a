//! Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SPOP,
//! SRANDMEMBER, SMOVE, SINTER, SUNION, SDIFF, SINTERSTORE, SUNIONSTORE,
//! SDIFFSTORE, SINTERCARD, SSCAN.
//!
//! The value type and its encodings live in [`crate::types::set`]. Each
//! command checks everything that can fail before it writes; a set emptied
//! by SREM, SPOP or SMOVE is deleted, as Redis does.
//!
//! Logging: every write here is deterministic and logged as typed, except
//! SPOP, whose random choice is logged as what happened (Redis's
//! propagation): `SREM key <members>`, or `DEL key` when it took the whole
//! set. SRANDMEMBER is a read: its choice comes from the store's generator
//! and nothing is logged.

use super::keyspace::{parse_cursor, ScanOpts};
use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_SET};
use crate::reply::Reply;
use crate::store::{Db, Value};
use crate::types::set::Set;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("sadd", sadd),
    ("srem", srem),
    ("smembers", smembers),
    ("sismember", sismember),
    ("smismember", smismember),
    ("scard", scard),
    ("spop", spop),
    ("srandmember", srandmember),
    ("smove", smove),
    ("sinter", sinter),
    ("sunion", sunion),
    ("sdiff", sdiff),
    ("sinterstore", sinterstore),
    ("sunionstore", sunionstore),
    ("sdiffstore", sdiffstore),
    ("sintercard", sintercard),
    ("sscan", sscan),
];

/// NOTE: Redis 7.0 has no bound on SRANDMEMBER's negative count (it writes
/// `|count|` members however many that is); Ferrite refuses to build a
/// reply of more elements than this (as HRANDFIELD).
const MAX_RANDOM_REPLY: u64 = 1 << 24;

/// Members per SREM logged for one SPOP (Redis batches its propagation too).
const SPOP_LOG_BATCH: usize = 1024;

/// The set at `key`, `None` if there is no key, WRONGTYPE for another type.
fn read<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a Set>, CmdError> {
    read_db(ctx.db(), key)
}

fn read_db<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a Set>, CmdError> {
    match db.get(key) {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The set at `key` for writing; `None` if missing, WRONGTYPE for another type.
fn read_mut<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a mut Set>, CmdError> {
    match ctx.db().get_mut(key) {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn bulk_members(s: &Set) -> Vec<Reply> {
    s.members().map(Reply::Bulk).collect()
}

fn sadd(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let members = a.rest().to_vec();
    read(ctx, &key)?;
    let db = ctx.db();
    if !db.contains(&key) {
        let first = members.first().map_or(&b""[..], |m| &m[..]);
        db.insert(
            Bytes::copy_from_slice(&key),
            Value::Set(Box::new(Set::new_for(first))),
        );
    }
    let Some(Value::Set(s)) = db.get_mut(&key) else {
        return Err(CmdError::WrongType);
    };
    let added = members.iter().filter(|m| s.add(m)).count();
    if added > 0 {
        ctx.touch(&key);
        ctx.notify(NOTIFY_SET, "sadd", &key);
    }
    Ok(Reply::Int(added as i64))
}

fn srem(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let members = a.rest().to_vec();
    let Some(s) = read_mut(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let mut removed = 0;
    for m in &members {
        if s.remove(m) {
            removed += 1;
            if s.is_empty() {
                break;
            }
        }
    }
    let empty = s.is_empty();
    if empty {
        ctx.db().remove(&key);
    }
    if removed > 0 {
        ctx.touch(&key);
        ctx.notify(NOTIFY_SET, "srem", &key);
        if empty {
            ctx.notify(NOTIFY_GENERIC, "del", &key);
        }
    }
    Ok(Reply::Int(removed))
}

fn smembers(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(Reply::Set(
        read(ctx, &key)?.map_or_else(Vec::new, bulk_members),
    ))
}

fn sismember(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, m) = (a.next_bytes()?, a.next_bytes()?);
    let found = read(ctx, &key)?.is_some_and(|s| s.contains(&m));
    Ok(Reply::Int(i64::from(found)))
}

fn smismember(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let members = a.rest().to_vec();
    let s = read(ctx, &key)?;
    Ok(Reply::Array(
        members
            .iter()
            .map(|m| Reply::Int(i64::from(s.is_some_and(|s| s.contains(m)))))
            .collect(),
    ))
}

fn scard(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(Reply::Int(read(ctx, &key)?.map_or(0, |s| s.len() as i64)))
}

/// SPOP's count: anything but a non-negative integer is
/// `value is out of range, must be positive` (Redis 7.0).
fn positive_count(b: &[u8]) -> Result<u64, CmdError> {
    match parse_i64(b) {
        Some(n) if n >= 0 => Ok(n as u64),
        _ => Err(CmdError::NotPositive),
    }
}

/// Log the members SPOP took as SREMs of at most [`SPOP_LOG_BATCH`].
fn log_srem(ctx: &mut Ctx, key: &Bytes, popped: &[Bytes]) {
    if !ctx.logging() {
        ctx.propagate_nothing();
        return;
    }
    ctx.propagate_nothing();
    for chunk in popped.chunks(SPOP_LOG_BATCH) {
        let mut argv = Vec::with_capacity(chunk.len() + 2);
        argv.push(Bytes::from_static(b"SREM"));
        argv.push(key.clone());
        argv.extend(chunk.iter().cloned());
        ctx.propagate(argv);
    }
}

/// SPOP key [count].
fn spop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    match a.remaining() {
        0 => {}
        1 => return spop_count(ctx, key, &a.next_bytes()?),
        _ => return Err(CmdError::Syntax),
    }
    let r = ctx.store.next_random();
    let Some(s) = read_mut(ctx, &key)? else {
        return Ok(Reply::Null);
    };
    let Some(m) = s.random_member(r) else {
        return Ok(Reply::Null);
    };
    s.remove(&m);
    let empty = s.is_empty();
    if empty {
        ctx.db().remove(&key);
    }
    ctx.touch(&key);
    ctx.notify(NOTIFY_SET, "spop", &key);
    if empty {
        ctx.notify(NOTIFY_GENERIC, "del", &key);
    }
    log_srem(ctx, &key, std::slice::from_ref(&m));
    Ok(Reply::Bulk(m))
}

fn spop_count(ctx: &mut Ctx, key: Bytes, count: &[u8]) -> Result<Reply, CmdError> {
    let count = positive_count(count)?;
    let Some(len) = read(ctx, &key)?.map(|s| s.len() as u64) else {
        ctx.propagate_nothing();
        return Ok(Reply::Set(Vec::new()));
    };
    ctx.propagate_nothing();
    if count == 0 {
        return Ok(Reply::Set(Vec::new()));
    }
    if count >= len {
        // The whole set: Redis replies it and propagates a DEL.
        let out = read(ctx, &key)?.map_or_else(Vec::new, bulk_members);
        ctx.db().remove(&key);
        ctx.touch(&key);
        ctx.notify(NOTIFY_SET, "spop", &key);
        ctx.notify(NOTIFY_GENERIC, "del", &key);
        if ctx.logging() {
            ctx.propagate(vec![Bytes::from_static(b"DEL"), key]);
        }
        return Ok(Reply::Set(out));
    }
    let draws: Vec<u64> = (0..count).map(|_| ctx.store.next_random()).collect();
    let Some(s) = read_mut(ctx, &key)? else {
        return Ok(Reply::Set(Vec::new()));
    };
    let mut popped = Vec::with_capacity(draws.len());
    for r in draws {
        if let Some(m) = s.random_member(r) {
            s.remove(&m);
            popped.push(m);
        }
    }
    ctx.touch(&key);
    ctx.notify(NOTIFY_SET, "spop", &key);
    log_srem(ctx, &key, &popped);
    Ok(Reply::Set(popped.into_iter().map(Reply::Bulk).collect()))
}

/// SRANDMEMBER key [count].
fn srandmember(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    match a.remaining() {
        0 => {
            let r = ctx.store.next_random();
            return Ok(read(ctx, &key)?
                .and_then(|s| s.random_member(r))
                .map_or(Reply::Null, Reply::Bulk));
        }
        1 => {}
        _ => return Err(CmdError::Syntax),
    }
    let count = match parse_i64(&a.next_bytes()?) {
        Some(n) if n != i64::MIN => n,
        Some(_) => {
            return Err(CmdError::err(format!(
                "value is out of range, value must between {} and {}",
                -i64::MAX,
                i64::MAX
            )))
        }
        None => return Err(CmdError::NotInteger),
    };
    let Some(len) = read(ctx, &key)?.map(|s| s.len() as u64) else {
        return Ok(Reply::Array(Vec::new()));
    };
    let n = count.unsigned_abs();
    if n == 0 {
        return Ok(Reply::Array(Vec::new()));
    }
    if count < 0 {
        if n > MAX_RANDOM_REPLY {
            return Err(CmdError::err("value is out of range"));
        }
        let draws: Vec<u64> = (0..n).map(|_| ctx.store.next_random()).collect();
        let Some(s) = read(ctx, &key)? else {
            return Ok(Reply::Array(Vec::new()));
        };
        return Ok(Reply::Array(
            draws
                .into_iter()
                .filter_map(|r| s.random_member(r))
                .map(Reply::Bulk)
                .collect(),
        ));
    }
    let mut all: Vec<Bytes> = read(ctx, &key)?.map_or_else(Vec::new, |s| s.members().collect());
    if n < len {
        // A random subset of n distinct members: shuffle the first n places.
        for i in 0..n as usize {
            let j = i + (ctx.store.next_random() % (len - i as u64)) as usize;
            all.swap(i, j);
        }
        all.truncate(n as usize);
    }
    Ok(Reply::Array(all.into_iter().map(Reply::Bulk).collect()))
}

fn smove(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (src, dst, m) = (a.next_bytes()?, a.next_bytes()?, a.next_bytes()?);
    let db = ctx.db();
    let Some(src_v) = db.get(&src) else {
        return Ok(Reply::Int(0));
    };
    let Value::Set(src_set) = src_v else {
        return Err(CmdError::WrongType);
    };
    read_db(db, &dst)?;
    if src == dst {
        return Ok(Reply::Int(i64::from(src_set.contains(&m))));
    }
    let Some(Value::Set(s)) = db.get_mut(&src) else {
        return Ok(Reply::Int(0));
    };
    if !s.remove(&m) {
        return Ok(Reply::Int(0));
    }
    let src_gone = s.is_empty();
    if src_gone {
        db.remove(&src);
    }
    if !db.contains(&dst) {
        db.insert(
            Bytes::copy_from_slice(&dst),
            Value::Set(Box::new(Set::new_for(&m))),
        );
    }
    let added = match db.get_mut(&dst) {
        Some(Value::Set(d)) => d.add(&m),
        _ => false,
    };
    ctx.touch(&src);
    ctx.touch(&dst);
    // Redis: srem (and del) on the source, then sadd if the member was new there.
    ctx.notify(NOTIFY_SET, "srem", &src);
    if src_gone {
        ctx.notify(NOTIFY_GENERIC, "del", &src);
    }
    if added {
        ctx.notify(NOTIFY_SET, "sadd", &dst);
    }
    Ok(Reply::Int(1))
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// The sets at `keys` (all type-checked first, as Redis does); missing
/// keys are `None`.
fn lookup_all<'a>(db: &'a Db, keys: &[Bytes]) -> Result<Vec<Option<&'a Set>>, CmdError> {
    keys.iter().map(|k| read_db(db, k)).collect()
}

/// The result of `op` over `keys`, built by adds to an empty intset as
/// Redis builds its result set (so a stored result has Redis's encoding).
/// `limit` (INTER only, 0 = none) stops counting at that many members.
fn combine(db: &Db, keys: &[Bytes], op: Op, limit: usize) -> Result<Set, CmdError> {
    let sets = lookup_all(db, keys)?;
    let mut out = Set::default();
    match op {
        Op::Inter => {
            let Some(mut present) = sets.iter().copied().collect::<Option<Vec<&Set>>>() else {
                return Ok(out);
            };
            present.sort_by_key(|s| s.len());
            let Some((first, rest)) = present.split_first() else {
                return Ok(out);
            };
            for m in first.members() {
                if rest.iter().all(|s| s.contains(&m)) {
                    out.add(&m);
                    if limit != 0 && out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Op::Union => {
            for s in sets.iter().flatten() {
                for m in s.members() {
                    out.add(&m);
                }
            }
        }
        Op::Diff => {
            let Some(Some(first)) = sets.first() else {
                return Ok(out);
            };
            for m in first.members() {
                if !sets[1..].iter().flatten().any(|s| s.contains(&m)) {
                    out.add(&m);
                }
            }
        }
    }
    Ok(out)
}

fn set_op(ctx: &mut Ctx, a: &mut Args, op: Op) -> Result<Reply, CmdError> {
    let keys = a.rest().to_vec();
    let out = combine(ctx.db(), &keys, op, 0)?;
    Ok(Reply::Set(bulk_members(&out)))
}

fn set_op_store(ctx: &mut Ctx, a: &mut Args, op: Op) -> Result<Reply, CmdError> {
    let dst = a.next_bytes()?;
    let keys = a.rest().to_vec();
    let out = combine(ctx.db(), &keys, op, 0)?;
    let n = out.len();
    let db = ctx.db();
    let existed = db.remove(&dst).is_some();
    if n > 0 {
        db.insert(Bytes::copy_from_slice(&dst), Value::Set(Box::new(out)));
    }
    if n > 0 || existed {
        ctx.touch(&dst);
    }
    if n > 0 {
        let ev = match op {
            Op::Inter => "sinterstore",
            Op::Union => "sunionstore",
            Op::Diff => "sdiffstore",
        };
        ctx.notify(NOTIFY_SET, ev, &dst);
    } else if existed {
        ctx.notify(NOTIFY_GENERIC, "del", &dst);
    }
    Ok(Reply::Int(n as i64))
}

fn sinter(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op(ctx, a, Op::Inter)
}
fn sunion(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op(ctx, a, Op::Union)
}
fn sdiff(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op(ctx, a, Op::Diff)
}
fn sinterstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op_store(ctx, a, Op::Inter)
}
fn sunionstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op_store(ctx, a, Op::Union)
}
fn sdiffstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_op_store(ctx, a, Op::Diff)
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit].
fn sintercard(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let numkeys = match parse_i64(&a.next_bytes()?) {
        Some(n) if n >= 1 => n as u64,
        _ => return Err(CmdError::err("numkeys should be greater than 0")),
    };
    if numkeys > a.remaining() as u64 {
        return Err(CmdError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let keys: Vec<Bytes> = (0..numkeys)
        .map(|_| a.next_bytes())
        .collect::<Result<_, _>>()?;
    let mut limit = 0usize;
    while a.remaining() > 0 {
        if a.remaining() >= 2 && a.eat("LIMIT") {
            limit = match parse_i64(&a.next_bytes()?) {
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(CmdError::err("LIMIT can't be negative")),
            };
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let out = combine(ctx.db(), &keys, Op::Inter, limit)?;
    Ok(Reply::Int(out.len() as i64))
}

/// SSCAN key cursor [MATCH pattern] [COUNT count].
fn sscan(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let cursor = parse_cursor(&a.next_bytes()?)?;
    let empty = || Reply::Array(vec![Reply::bulk_str("0"), Reply::Array(Vec::new())]);
    if read(ctx, &key)?.is_none() {
        return Ok(empty());
    }
    let opts = ScanOpts::parse(a, false)?;
    let Some(s) = read(ctx, &key)? else {
        return Ok(empty());
    };
    let mut found = Vec::new();
    let next = s.scan(cursor, opts.count, |m| {
        if opts.matches(&m) {
            found.push(Reply::Bulk(m));
        }
    });
    Ok(Reply::Array(vec![
        Reply::bulk_str(&next.to_string()),
        Reply::Array(found),
    ]))
}
