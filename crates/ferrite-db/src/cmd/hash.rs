//! Hash commands: HSET, HSETNX, HMSET, HGET, HMGET, HGETALL, HKEYS, HVALS,
//! HDEL, HLEN, HEXISTS, HSTRLEN, HINCRBY, HINCRBYFLOAT, HRANDFIELD, HSCAN.
//!
//! The value type and its encodings live in [`crate::types::hash`]. Each
//! command checks everything that can fail before it writes, so a failed
//! command never leaves an empty hash behind; a hash emptied by HDEL is
//! deleted, as Redis does.
//!
//! Logging: every write here is deterministic and logged as typed, except
//! HINCRBYFLOAT, logged as `HSET key field <result>` (Redis's propagation),
//! so replay never redoes float arithmetic. HRANDFIELD is a read: its
//! choice comes from the store's generator and nothing is logged.

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_HASH};
use crate::reply::Reply;
use crate::store::Value;
use crate::types::hash::long_double::Ld;
use crate::types::hash::Hash;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("hset", hset),
    ("hmset", hmset),
    ("hsetnx", hsetnx),
    ("hget", hget),
    ("hmget", hmget),
    ("hgetall", hgetall),
    ("hkeys", hkeys),
    ("hvals", hvals),
    ("hdel", hdel),
    ("hlen", hlen),
    ("hexists", hexists),
    ("hstrlen", hstrlen),
    ("hincrby", hincrby),
    ("hincrbyfloat", hincrbyfloat),
    ("hrandfield", hrandfield),
    ("hscan", hscan),
];

/// NOTE: Redis 7.0 has no bound on HRANDFIELD's negative count (it writes
/// `|count|` elements however many that is); Ferrite refuses to build a
/// reply of more elements than this.
const MAX_RANDOM_REPLY: u64 = 1 << 24;

/// The hash at `key`, `None` if there is no key, WRONGTYPE for another type.
fn read<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a Hash>, CmdError> {
    match ctx.db().get(key) {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The hash at `key` for writing, created empty if missing. Callers have
/// checked the type (with [`read`]) and everything else that can fail.
fn write<'a>(ctx: &'a mut Ctx, key: &Bytes) -> &'a mut Hash {
    let db = ctx.db();
    if !db.contains(key) {
        db.insert(
            Bytes::copy_from_slice(key),
            Value::Hash(Box::<Hash>::default()),
        );
    }
    match db.get_mut(key) {
        Some(Value::Hash(h)) => h,
        // The key was checked to hold a hash or inserted just above.
        _ => unreachable!("hash key checked before writing"),
    }
}

/// HSET and HMSET: field/value pairs; the count of new fields.
fn set_pairs(ctx: &mut Ctx, a: &mut Args, name: &str) -> Result<usize, CmdError> {
    // An even count: a key and an odd number of pair halves.
    if a.remaining() & 1 == 0 {
        return Err(CmdError::WrongArity(name.into()));
    }
    let key = a.next_bytes()?;
    read(ctx, &key)?;
    let pairs = a.rest().to_vec();
    let h = write(ctx, &key);
    let created = pairs
        .chunks_exact(2)
        .filter(|p| h.set(&p[0], &p[1]))
        .count();
    ctx.touch(&key);
    ctx.notify(NOTIFY_HASH, "hset", &key);
    Ok(created)
}

fn hset(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(set_pairs(ctx, a, "hset")? as i64))
}

fn hmset(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    set_pairs(ctx, a, "hmset")?;
    Ok(Reply::ok())
}

fn hsetnx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field, value) = (a.next_bytes()?, a.next_bytes()?, a.next_bytes()?);
    a.finish()?;
    if read(ctx, &key)?.is_some_and(|h| h.contains(&field)) {
        return Ok(Reply::Int(0));
    }
    write(ctx, &key).set(&field, &value);
    ctx.touch(&key);
    ctx.notify(NOTIFY_HASH, "hset", &key);
    Ok(Reply::Int(1))
}

fn hget(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field) = (a.next_bytes()?, a.next_bytes()?);
    a.finish()?;
    Ok(read(ctx, &key)?
        .and_then(|h| h.get(&field))
        .map_or(Reply::Null, |v| Reply::Bulk(Bytes::copy_from_slice(v))))
}

fn hmget(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let fields = a.rest().to_vec();
    let h = read(ctx, &key)?;
    Ok(Reply::Array(
        fields
            .iter()
            .map(|f| {
                h.and_then(|h| h.get(f))
                    .map_or(Reply::Null, |v| Reply::Bulk(Bytes::copy_from_slice(v)))
            })
            .collect(),
    ))
}

fn hgetall(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    a.finish()?;
    let pairs = read(ctx, &key)?.map_or_else(Vec::new, |h| {
        h.iter()
            .map(|(f, v)| {
                (
                    Reply::Bulk(Bytes::copy_from_slice(f)),
                    Reply::Bulk(Bytes::copy_from_slice(v)),
                )
            })
            .collect()
    });
    Ok(Reply::Map(pairs))
}

fn hkeys(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    a.finish()?;
    Ok(Reply::Array(read(ctx, &key)?.map_or_else(Vec::new, |h| {
        h.iter()
            .map(|(f, _)| Reply::Bulk(Bytes::copy_from_slice(f)))
            .collect()
    })))
}

fn hvals(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    a.finish()?;
    Ok(Reply::Array(read(ctx, &key)?.map_or_else(Vec::new, |h| {
        h.iter()
            .map(|(_, v)| Reply::Bulk(Bytes::copy_from_slice(v)))
            .collect()
    })))
}

fn hdel(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let fields = a.rest().to_vec();
    let db = ctx.db();
    let h = match db.get_mut(&key) {
        None => return Ok(Reply::Int(0)),
        Some(Value::Hash(h)) => h,
        Some(_) => return Err(CmdError::WrongType),
    };
    let mut deleted = 0;
    let mut emptied = false;
    for f in &fields {
        if h.remove(f) {
            deleted += 1;
            if h.is_empty() {
                // Redis stops at the emptied hash and deletes the key.
                db.remove(&key);
                emptied = true;
                break;
            }
        }
    }
    if deleted > 0 {
        ctx.touch(&key);
        ctx.notify(NOTIFY_HASH, "hdel", &key);
        if emptied {
            ctx.notify(NOTIFY_GENERIC, "del", &key);
        }
    }
    Ok(Reply::Int(deleted))
}

fn hlen(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    a.finish()?;
    Ok(Reply::Int(read(ctx, &key)?.map_or(0, |h| h.len() as i64)))
}

fn hexists(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field) = (a.next_bytes()?, a.next_bytes()?);
    a.finish()?;
    let found = read(ctx, &key)?.is_some_and(|h| h.contains(&field));
    Ok(Reply::Int(i64::from(found)))
}

fn hstrlen(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field) = (a.next_bytes()?, a.next_bytes()?);
    a.finish()?;
    let len = read(ctx, &key)?
        .and_then(|h| h.get(&field))
        .map_or(0, |v| v.len());
    Ok(Reply::Int(len as i64))
}

fn hincrby(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field) = (a.next_bytes()?, a.next_bytes()?);
    let incr = a.next_i64()?;
    a.finish()?;
    let old = match read(ctx, &key)?.and_then(|h| h.get(&field)) {
        None => 0,
        Some(v) => parse_i64(v).ok_or_else(|| CmdError::err("hash value is not an integer"))?,
    };
    let new = old
        .checked_add(incr)
        .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
    write(ctx, &key).set(&field, &Bytes::from(new.to_string()));
    ctx.touch(&key);
    ctx.notify(NOTIFY_HASH, "hincrby", &key);
    Ok(Reply::Int(new))
}

fn hincrbyfloat(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, field) = (a.next_bytes()?, a.next_bytes()?);
    let incr =
        Ld::parse(&a.next_bytes()?).ok_or_else(|| CmdError::err("value is not a valid float"))?;
    a.finish()?;
    if !incr.is_finite() {
        return Err(CmdError::err("value is NaN or Infinity"));
    }
    let old = match read(ctx, &key)?.and_then(|h| h.get(&field)) {
        None => Ld::from_i64(0),
        Some(v) => Ld::parse(v).ok_or_else(|| CmdError::err("hash value is not a float"))?,
    };
    let sum = old + incr;
    if !sum.is_finite() {
        return Err(CmdError::err("increment would produce NaN or Infinity"));
    }
    let new = Bytes::from(sum.to_human());
    write(ctx, &key).set(&field, &new);
    ctx.touch(&key);
    ctx.notify(NOTIFY_HASH, "hincrbyfloat", &key);
    if ctx.logging() {
        ctx.propagate(vec![Bytes::from_static(b"HSET"), key, field, new.clone()]);
    }
    Ok(Reply::Bulk(new))
}

/// HRANDFIELD key [count [WITHVALUES]].
fn hrandfield(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if a.remaining() == 0 {
        let r = ctx.store.next_random();
        return Ok(read(ctx, &key)?
            .and_then(|h| h.random_pair(r))
            .map_or(Reply::Null, |(f, _)| Reply::Bulk(Bytes::copy_from_slice(f))));
    }
    let (count, withvalues) = random_count(a, "WITHVALUES")?;
    let resp3 = ctx.client.resp >= 3;
    let Some(len) = read(ctx, &key)?.map(|h| h.len() as u64) else {
        return Ok(Reply::Array(Vec::new()));
    };
    let (n, unique) = (count.unsigned_abs(), count >= 0);
    if n == 0 {
        return Ok(Reply::Array(Vec::new()));
    }
    // Which pairs to return: indices into the hash's iteration order for
    // a unique selection, or `random_pair` draws with repetition.
    let mut draws: Vec<u64> = Vec::new();
    let mut pick: Option<Vec<usize>> = None;
    if !unique || n == 1 {
        if n.saturating_mul(1 + u64::from(withvalues)) > MAX_RANDOM_REPLY {
            return Err(CmdError::err("value is out of range"));
        }
        draws = (0..n).map(|_| ctx.store.next_random()).collect();
    } else if n < len {
        // A random subset of n distinct pairs: shuffle the first n places.
        let mut idx: Vec<usize> = (0..len as usize).collect();
        for i in 0..n as usize {
            let j = i + (ctx.store.next_random() % (len - i as u64)) as usize;
            idx.swap(i, j);
        }
        idx.truncate(n as usize);
        pick = Some(idx);
    }
    let Some(h) = read(ctx, &key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let pairs: Vec<(&[u8], &[u8])> = if !draws.is_empty() {
        draws.iter().filter_map(|&r| h.random_pair(r)).collect()
    } else {
        let all: Vec<_> = h.iter().collect();
        match pick {
            Some(idx) => idx
                .into_iter()
                .filter_map(|i| all.get(i).copied())
                .collect(),
            None => all,
        }
    };
    let mut out = Vec::with_capacity(pairs.len() * 2);
    for (f, v) in pairs {
        let (f, v) = (
            Reply::Bulk(Bytes::copy_from_slice(f)),
            Reply::Bulk(Bytes::copy_from_slice(v)),
        );
        match (withvalues, resp3) {
            (false, _) => out.push(f),
            (true, false) => out.extend([f, v]),
            (true, true) => out.push(Reply::Array(vec![f, v])),
        }
    }
    Ok(Reply::Array(out))
}

/// HSCAN key cursor [MATCH pattern] [COUNT count].
fn hscan(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let cursor = super::keyspace::parse_cursor(&a.next_bytes()?)?;
    let empty = || Reply::Array(vec![Reply::bulk_str("0"), Reply::Array(Vec::new())]);
    if read(ctx, &key)?.is_none() {
        return Ok(empty());
    }
    let opts = super::keyspace::ScanOpts::parse(a, false)?;
    let Some(h) = read(ctx, &key)? else {
        return Ok(empty());
    };
    let mut found = Vec::new();
    let next = h.scan(cursor, opts.count, |f, v| {
        if !opts.matches(f) {
            return;
        }
        found.push(Reply::Bulk(Bytes::copy_from_slice(f)));
        found.push(Reply::Bulk(Bytes::copy_from_slice(v)));
    });
    Ok(Reply::Array(vec![
        Reply::bulk_str(&next.to_string()),
        Reply::Array(found),
    ]))
}

/// HRANDFIELD's and ZRANDMEMBER's `count [WITH...]`, checked in Redis's
/// order: the count (not i64::MIN), the option, then a count that the
/// doubled reply could not hold.
pub(crate) fn random_count(a: &mut Args, with: &str) -> Result<(i64, bool), CmdError> {
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
    let with = match a.remaining() {
        0 => false,
        1 if a.eat(with) => true,
        _ => return Err(CmdError::Syntax),
    };
    if with && !(-i64::MAX / 2..=i64::MAX / 2).contains(&count) {
        return Err(CmdError::err("value is out of range"));
    }
    Ok((count, with))
}
