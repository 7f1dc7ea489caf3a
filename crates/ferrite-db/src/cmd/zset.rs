//! Sorted set commands: ZADD, ZINCRBY, ZREM, ZSCORE, ZMSCORE, ZCARD, ZCOUNT,
//! ZLEXCOUNT, ZRANK, ZREVRANK, ZRANGE and its older forms (ZREVRANGE,
//! ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX),
//! ZREMRANGEBYSCORE/RANK/LEX, ZPOPMIN, ZPOPMAX, ZRANDMEMBER, ZSCAN, the
//! blocking BZPOPMIN and BZPOPMAX, ZRANGESTORE, and the set operations
//! ZUNION/ZINTER/ZDIFF (sets read as scores of 1), their STORE forms and
//! ZINTERCARD.
//!
//! The value type, its encodings and Redis's score parsing live in
//! [`crate::types::zset`]; scores are replied with Redis 7.0's `%.17g`
//! ([`crate::reply::format_double`]), as RESP3 doubles where Redis sends them.
//!
//! Logging: the writes are deterministic (float additions are IEEE 754 and
//! replay in the same order, so ZINCRBY and ZADD INCR replay to bit-identical
//! scores) and logged as typed. A BZPOPMIN/BZPOPMAX that pops, at once or
//! when served later, is logged as the `ZPOPMIN key`/`ZPOPMAX key` it did,
//! as Redis propagates it.

use super::keyspace::{parse_cursor, ScanOpts};
use super::{BlockRequest, Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_ZSET};
use crate::reply::{format_double, Reply};
use crate::store::{BlockedCommand, Db, Value};
use crate::types::zset::{
    parse_lex_bound, parse_score, parse_score_bound, strtod, LexRange, ScoreRange, ZSet,
};
use bytes::Bytes;
use std::time::Duration;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("zadd", zadd),
    ("zincrby", zincrby),
    ("zrem", zrem),
    ("zscore", zscore),
    ("zmscore", zmscore),
    ("zcard", zcard),
    ("zcount", zcount),
    ("zlexcount", zlexcount),
    ("zrank", zrank),
    ("zrevrank", zrevrank),
    ("zrange", zrange),
    ("zrevrange", zrevrange),
    ("zrangebyscore", zrangebyscore),
    ("zrevrangebyscore", zrevrangebyscore),
    ("zrangebylex", zrangebylex),
    ("zrevrangebylex", zrevrangebylex),
    ("zremrangebyscore", zremrangebyscore),
    ("zremrangebyrank", zremrangebyrank),
    ("zremrangebylex", zremrangebylex),
    ("zpopmin", zpopmin),
    ("zpopmax", zpopmax),
    ("zrandmember", zrandmember),
    ("zscan", zscan),
    ("bzpopmin", bzpopmin),
    ("bzpopmax", bzpopmax),
    ("zunion", zunion),
    ("zinter", zinter),
    ("zdiff", zdiff),
    ("zunionstore", zunionstore),
    ("zinterstore", zinterstore),
    ("zdiffstore", zdiffstore),
    ("zintercard", zintercard),
    ("zrangestore", zrangestore),
];

/// NOTE: as HRANDFIELD: Redis 7.0 has no bound on ZRANDMEMBER's negative
/// count; Ferrite refuses to build a reply of more elements than this.
const MAX_RANDOM_REPLY: u64 = 1 << 24;

const NOT_FLOAT: &str = "value is not a valid float";
const NAN_ERR: &str = "resulting score is not a number (NaN)";
const RANGE_NOT_FLOAT: &str = "min or max is not a float";
const LEX_ERR: &str = "min or max not valid string range item";

fn read_db<'a>(db: &'a Db, key: &[u8]) -> Result<Option<&'a ZSet>, CmdError> {
    match db.get(key) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn read<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a ZSet>, CmdError> {
    read_db(ctx.db(), key)
}

fn read_mut<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a mut ZSet>, CmdError> {
    match ctx.db().get_mut(key) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn float_arg(b: &[u8]) -> Result<f64, CmdError> {
    parse_score(b).ok_or_else(|| CmdError::err(NOT_FLOAT))
}

fn score_range(min: &[u8], max: &[u8]) -> Result<ScoreRange, CmdError> {
    match (parse_score_bound(min), parse_score_bound(max)) {
        (Some(min), Some(max)) => Ok(ScoreRange { min, max }),
        _ => Err(CmdError::err(RANGE_NOT_FLOAT)),
    }
}

fn lex_range(min: &[u8], max: &[u8]) -> Result<LexRange, CmdError> {
    match (parse_lex_bound(min), parse_lex_bound(max)) {
        (Some(min), Some(max)) => Ok(LexRange { min, max }),
        _ => Err(CmdError::err(LEX_ERR)),
    }
}

/// Members (with scores if `withscores`): RESP2 flat, RESP3 `[member, score]` pairs.
fn members_reply<'a>(
    it: impl Iterator<Item = (f64, &'a [u8])>,
    withscores: bool,
    resp3: bool,
) -> Reply {
    let mut out = Vec::new();
    for (s, m) in it {
        let m = Reply::Bulk(Bytes::copy_from_slice(m));
        match (withscores, resp3) {
            (false, _) => out.push(m),
            (true, false) => out.extend([m, Reply::Double(s)]),
            (true, true) => out.push(Reply::Array(vec![m, Reply::Double(s)])),
        }
    }
    Reply::Array(out)
}

#[derive(Default, Clone, Copy)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// ZADD and ZINCRBY (Redis's `zaddGenericCommand`).
fn zadd_generic(
    ctx: &mut Ctx,
    key: Bytes,
    f: AddFlags,
    pairs: &[Bytes],
) -> Result<Reply, CmdError> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(CmdError::Syntax);
    }
    if f.nx && f.xx {
        return Err(CmdError::err(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        return Err(CmdError::err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if f.incr && pairs.len() > 2 {
        return Err(CmdError::err(
            "INCR option supports a single increment-element pair",
        ));
    }
    let scores: Vec<f64> = pairs
        .chunks_exact(2)
        .map(|p| float_arg(&p[0]))
        .collect::<Result<_, _>>()?;
    let exists = read(ctx, &key)?.is_some();
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0i64);
    let mut last = 0.0;
    if exists || !f.xx {
        let db = ctx.db();
        if !exists {
            db.insert(
                Bytes::copy_from_slice(&key),
                Value::ZSet(Box::new(ZSet::new_for(&pairs[1]))),
            );
        }
        let Some(Value::ZSet(z)) = db.get_mut(&key) else {
            return Err(CmdError::WrongType);
        };
        for (p, &score) in pairs.chunks_exact(2).zip(&scores) {
            let m = &p[1];
            let mut score = score;
            match z.score(m) {
                Some(cur) => {
                    if f.nx {
                        continue;
                    }
                    if f.incr {
                        score += cur;
                        if score.is_nan() {
                            if added + updated > 0 {
                                ctx.touch(&key);
                                ctx.notify(NOTIFY_ZSET, "zincr", &key);
                            }
                            return Err(CmdError::err(NAN_ERR));
                        }
                    }
                    if (f.lt && score >= cur) || (f.gt && score <= cur) {
                        continue;
                    }
                    if score != cur {
                        z.set(m, score);
                        updated += 1;
                    }
                    // What a listpack stores (-0 reads back as 0).
                    last = z.score(m).unwrap_or(score);
                    processed += 1;
                }
                None if !f.xx => {
                    z.set(m, score);
                    last = z.score(m).unwrap_or(score);
                    added += 1;
                    processed += 1;
                }
                None => {}
            }
        }
        if added + updated > 0 {
            ctx.touch(&key);
            ctx.notify(NOTIFY_ZSET, if f.incr { "zincr" } else { "zadd" }, &key);
        }
    }
    Ok(if f.incr {
        if processed > 0 {
            Reply::Double(last)
        } else {
            Reply::Null
        }
    } else {
        Reply::Int(if f.ch { added + updated } else { added })
    })
}

fn zadd(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let mut f = AddFlags::default();
    loop {
        if a.eat("NX") {
            f.nx = true;
        } else if a.eat("XX") {
            f.xx = true;
        } else if a.eat("CH") {
            f.ch = true;
        } else if a.eat("INCR") {
            f.incr = true;
        } else if a.eat("GT") {
            f.gt = true;
        } else if a.eat("LT") {
            f.lt = true;
        } else {
            break;
        }
    }
    let pairs = a.rest().to_vec();
    zadd_generic(ctx, key, f, &pairs)
}

fn zincrby(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let pairs = a.rest().to_vec();
    let f = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    zadd_generic(ctx, key, f, &pairs)
}

fn zrem(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let members = a.rest().to_vec();
    let Some(z) = read_mut(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let mut removed = 0;
    for m in &members {
        if z.remove(m) {
            removed += 1;
            if z.is_empty() {
                break;
            }
        }
    }
    let emptied = z.is_empty();
    if emptied {
        ctx.db().remove(&key);
    }
    if removed > 0 {
        ctx.touch(&key);
        ctx.notify(NOTIFY_ZSET, "zrem", &key);
        if emptied {
            ctx.notify(NOTIFY_GENERIC, "del", &key);
        }
    }
    Ok(Reply::Int(removed))
}

fn zscore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (key, m) = (a.next_bytes()?, a.next_bytes()?);
    Ok(read(ctx, &key)?
        .and_then(|z| z.score(&m))
        .map_or(Reply::Null, Reply::Double))
}

fn zmscore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let members = a.rest().to_vec();
    let z = read(ctx, &key)?;
    Ok(Reply::Array(
        members
            .iter()
            .map(|m| {
                z.and_then(|z| z.score(m))
                    .map_or(Reply::Null, Reply::Double)
            })
            .collect(),
    ))
}

fn zcard(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(Reply::Int(read(ctx, &key)?.map_or(0, |z| z.len() as i64)))
}

fn zcount(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let r = score_range(&a.next_bytes()?, &a.next_bytes()?)?;
    let n = read(ctx, &key)?.map_or(0, |z| z.range_by_score(&r, false).count());
    Ok(Reply::Int(n as i64))
}

fn zlexcount(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let r = lex_range(&a.next_bytes()?, &a.next_bytes()?)?;
    let n = read(ctx, &key)?.map_or(0, |z| z.range_by_lex(&r, false).count());
    Ok(Reply::Int(n as i64))
}

fn rank_generic(ctx: &mut Ctx, a: &mut Args, rev: bool) -> Result<Reply, CmdError> {
    let (key, m) = (a.next_bytes()?, a.next_bytes()?);
    let Some(z) = read(ctx, &key)? else {
        return Ok(Reply::Null);
    };
    Ok(match z.rank(&m) {
        Some(r) if rev => Reply::Int((z.len() - 1 - r) as i64),
        Some(r) => Reply::Int(r as i64),
        None => Reply::Null,
    })
}

fn zrank(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    rank_generic(ctx, a, false)
}

fn zrevrank(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    rank_generic(ctx, a, true)
}

#[derive(Clone, Copy, PartialEq)]
enum RangeType {
    Auto,
    Rank,
    Score,
    Lex,
}

/// Redis's rank normalisation: `None` for an empty range, else inclusive
/// `(start, end)` within `0..len`.
fn rank_bounds(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let (mut start, mut end) = (start, end);
    if start < 0 {
        start = start.saturating_add(len);
    }
    if end < 0 {
        end = end.saturating_add(len);
    }
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return None;
    }
    if end >= len {
        end = len - 1;
    }
    Some((start as usize, end as usize))
}

/// Redis's `zrangeGenericCommand`: `rangetype`/`rev` fixed by the command
/// (ZRANGE leaves both to its options).
fn zrange_generic(
    ctx: &mut Ctx,
    a: &mut Args,
    rangetype: RangeType,
    rev: Option<bool>,
) -> Result<Reply, CmdError> {
    zrange_into(ctx, a, rangetype, rev, None)
}

/// ZRANGE's work, replying the range, or (ZRANGESTORE, `dst`) storing it
/// in `dst` and replying its size.
fn zrange_into(
    ctx: &mut Ctx,
    a: &mut Args,
    mut rangetype: RangeType,
    rev: Option<bool>,
    dst: Option<Bytes>,
) -> Result<Reply, CmdError> {
    let store = dst.is_some();
    let key = a.next_bytes()?;
    let (arg_min, arg_max) = (a.next_bytes()?, a.next_bytes()?);
    let mut withscores = false;
    let (mut offset, mut limit): (i64, i64) = (0, -1);
    let mut reverse = rev;
    while a.remaining() > 0 {
        if !store && a.eat("WITHSCORES") {
            withscores = true;
        } else if a.remaining() >= 3 && a.eat("LIMIT") {
            offset = a.next_i64()?;
            limit = a.next_i64()?;
        } else if reverse.is_none() && a.eat("REV") {
            reverse = Some(true);
        } else if rangetype == RangeType::Auto && a.eat("BYLEX") {
            rangetype = RangeType::Lex;
        } else if rangetype == RangeType::Auto && a.eat("BYSCORE") {
            rangetype = RangeType::Score;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let reverse = reverse.unwrap_or(false);
    if rangetype == RangeType::Auto {
        rangetype = RangeType::Rank;
    }
    if limit != -1 && rangetype == RangeType::Rank {
        return Err(CmdError::err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && rangetype == RangeType::Lex {
        return Err(CmdError::err(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (min, max) = if reverse && rangetype != RangeType::Rank {
        (arg_max, arg_min)
    } else {
        (arg_min, arg_max)
    };
    let resp3 = ctx.client.resp >= 3;
    let parsed = match rangetype {
        RangeType::Score => Parsed::Score(score_range(&min, &max)?),
        RangeType::Lex => Parsed::Lex(lex_range(&min, &max)?),
        _ => Parsed::Rank(
            parse_i64(&min).ok_or(CmdError::NotInteger)?,
            parse_i64(&max).ok_or(CmdError::NotInteger)?,
        ),
    };
    if let Some(dst) = dst {
        let mut picked: Vec<(f64, Bytes)> = Vec::new();
        if let Some(z) = read(ctx, &key)? {
            pick_range(z, &parsed, reverse, offset, limit, |s, m| {
                picked.push((s, Bytes::copy_from_slice(m)))
            });
        }
        return Ok(store_result(ctx, dst, picked, "zrangestore"));
    }
    let Some(z) = read(ctx, &key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let mut picked: Vec<(f64, &[u8])> = Vec::new();
    pick_range(z, &parsed, reverse, offset, limit, |s, m| {
        picked.push((s, m))
    });
    let withscores = withscores && !matches!(parsed, Parsed::Lex(_));
    Ok(members_reply(picked.into_iter(), withscores, resp3))
}

enum Parsed {
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// The members a ZRANGE picks, in reply order. LIMIT: a negative offset
/// picks nothing, a negative count everything.
fn pick_range<'a>(
    z: &'a ZSet,
    parsed: &'a Parsed,
    reverse: bool,
    offset: i64,
    limit: i64,
    mut f: impl FnMut(f64, &'a [u8]),
) {
    let skip = if offset < 0 {
        usize::MAX
    } else {
        usize::try_from(offset).unwrap_or(usize::MAX)
    };
    let take = if limit < 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    match parsed {
        Parsed::Rank(start, end) => {
            let Some((s, e)) = rank_bounds(*start, *end, z.len()) else {
                return;
            };
            if reverse {
                z.iter()
                    .rev()
                    .skip(s)
                    .take(e - s + 1)
                    .for_each(|(sc, m)| f(sc, m));
            } else {
                z.iter()
                    .skip(s)
                    .take(e - s + 1)
                    .for_each(|(sc, m)| f(sc, m));
            }
        }
        Parsed::Score(r) => z
            .range_by_score(r, reverse)
            .skip(skip)
            .take(take)
            .for_each(|(sc, m)| f(sc, m)),
        Parsed::Lex(r) => z
            .range_by_lex(r, reverse)
            .skip(skip)
            .take(take)
            .for_each(|(sc, m)| f(sc, m)),
    }
}

/// Stores a computed sorted set in `dst` (ZRANGESTORE and the STORE set
/// operations): replaced, or deleted when empty; replies its size.
fn store_result(ctx: &mut Ctx, dst: Bytes, items: Vec<(f64, Bytes)>, event: &str) -> Reply {
    // Converted to a skiplist past the listpack limits as it grows, which
    // is the encoding Redis gives a stored result.
    let mut out = ZSet::default();
    for (sc, m) in &items {
        out.set(m, *sc);
    }
    let n = out.len();
    let db = ctx.db();
    if n > 0 {
        db.remove(&dst);
        db.insert(dst.clone(), Value::ZSet(Box::new(out)));
        ctx.touch(&dst);
        ctx.notify(NOTIFY_ZSET, event, &dst);
    } else if db.remove(&dst).is_some() {
        ctx.touch(&dst);
        ctx.notify(NOTIFY_GENERIC, "del", &dst);
    }
    Reply::Int(n as i64)
}

fn zrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Auto, None)
}
/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count].
fn zrangestore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let dst = a.next_bytes()?;
    zrange_into(ctx, a, RangeType::Auto, None, Some(dst))
}
fn zrevrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Rank, Some(true))
}
fn zrangebyscore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Score, Some(false))
}
fn zrevrangebyscore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Score, Some(true))
}
fn zrangebylex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Lex, Some(false))
}
fn zrevrangebylex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zrange_generic(ctx, a, RangeType::Lex, Some(true))
}

/// ZREMRANGEBY*: the members to remove are collected, then removed.
fn zremrange(ctx: &mut Ctx, key: Bytes, event: &str, pick: impl Fn(&ZSet) -> Vec<Bytes>) -> Reply {
    let Ok(Some(z)) = read_mut(ctx, &key) else {
        return Reply::Int(0);
    };
    let gone = pick(z);
    for m in &gone {
        z.remove(m);
    }
    let emptied = z.is_empty();
    if emptied {
        ctx.db().remove(&key);
    }
    if !gone.is_empty() {
        ctx.touch(&key);
        ctx.notify(NOTIFY_ZSET, event, &key);
        if emptied {
            ctx.notify(NOTIFY_GENERIC, "del", &key);
        }
    }
    Reply::Int(gone.len() as i64)
}

fn zremrangebyscore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let r = score_range(&a.next_bytes()?, &a.next_bytes()?)?;
    read(ctx, &key)?;
    Ok(zremrange(ctx, key, "zremrangebyscore", |z| {
        z.range_by_score(&r, false)
            .map(|(_, m)| Bytes::copy_from_slice(m))
            .collect()
    }))
}

fn zremrangebylex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let r = lex_range(&a.next_bytes()?, &a.next_bytes()?)?;
    read(ctx, &key)?;
    Ok(zremrange(ctx, key, "zremrangebylex", |z| {
        z.range_by_lex(&r, false)
            .map(|(_, m)| Bytes::copy_from_slice(m))
            .collect()
    }))
}

fn zremrangebyrank(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let (start, end) = (a.next_i64()?, a.next_i64()?);
    read(ctx, &key)?;
    Ok(zremrange(
        ctx,
        key,
        "zremrangebyrank",
        |z| match rank_bounds(start, end, z.len()) {
            Some((s, e)) => z
                .iter()
                .skip(s)
                .take(e - s + 1)
                .map(|(_, m)| Bytes::copy_from_slice(m))
                .collect(),
            None => Vec::new(),
        },
    ))
}

/// Pop up to `count` members from `key`'s sorted set; deletes it when emptied.
fn pop_n(db: &mut Db, key: &[u8], max: bool, count: u64) -> Vec<(f64, Bytes)> {
    let Some(Value::ZSet(z)) = db.get_mut(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..count.min(z.len() as u64) {
        match z.pop(max) {
            Some(p) => out.push(p),
            None => break,
        }
    }
    if z.is_empty() {
        db.remove(key);
    }
    out
}

/// The pop's event, then `del` if it emptied the key (it is gone).
fn notify_zpop(ctx: &mut Ctx, max: bool, key: &Bytes) {
    ctx.notify(NOTIFY_ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
    if !ctx.db().contains(key) {
        ctx.notify(NOTIFY_GENERIC, "del", key);
    }
}

fn zpop_generic(ctx: &mut Ctx, a: &mut Args, max: bool) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let count = match a.remaining() {
        0 => None,
        1 => match parse_i64(&a.next_bytes()?) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => return Err(CmdError::NotPositive),
        },
        _ => return Err(CmdError::Syntax),
    };
    if read(ctx, &key)?.is_none() || count == Some(0) {
        return Ok(Reply::Array(Vec::new()));
    }
    let popped = pop_n(ctx.db(), &key, max, count.unwrap_or(1));
    ctx.touch(&key);
    notify_zpop(ctx, max, &key);
    let nested = count.is_some() && ctx.client.resp >= 3;
    let mut out = Vec::new();
    for (s, m) in popped {
        let (m, s) = (Reply::Bulk(m), Reply::Double(s));
        if nested {
            out.push(Reply::Array(vec![m, s]));
        } else {
            out.extend([m, s]);
        }
    }
    Ok(Reply::Array(out))
}

fn zpopmin(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zpop_generic(ctx, a, false)
}
fn zpopmax(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    zpop_generic(ctx, a, true)
}

/// ZRANDMEMBER key [count [WITHSCORES]].
fn zrandmember(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if a.remaining() == 0 {
        let r = ctx.store.next_random();
        return Ok(read(ctx, &key)?
            .and_then(|z| z.random(r))
            .map_or(Reply::Null, |(_, m)| Reply::Bulk(Bytes::copy_from_slice(m))));
    }
    let (count, withscores) = super::hash::random_count(a, "WITHSCORES")?;
    let resp3 = ctx.client.resp >= 3;
    let Some(len) = read(ctx, &key)?.map(|z| z.len() as u64) else {
        return Ok(Reply::Array(Vec::new()));
    };
    let n = count.unsigned_abs();
    if n == 0 {
        return Ok(Reply::Array(Vec::new()));
    }
    if count < 0 {
        if n.saturating_mul(1 + u64::from(withscores)) > MAX_RANDOM_REPLY {
            return Err(CmdError::err("value is out of range"));
        }
        let draws: Vec<u64> = (0..n).map(|_| ctx.store.next_random()).collect();
        let Some(z) = read(ctx, &key)? else {
            return Ok(Reply::Array(Vec::new()));
        };
        return Ok(members_reply(
            draws.into_iter().filter_map(|r| z.random(r)),
            withscores,
            resp3,
        ));
    }
    let mut idx: Vec<usize> = (0..len as usize).collect();
    if n < len {
        for i in 0..n as usize {
            let j = i + (ctx.store.next_random() % (len - i as u64)) as usize;
            idx.swap(i, j);
        }
        idx.truncate(n as usize);
    }
    let Some(z) = read(ctx, &key)? else {
        return Ok(Reply::Array(Vec::new()));
    };
    let all: Vec<(f64, &[u8])> = z.iter().collect();
    Ok(members_reply(
        idx.into_iter().filter_map(|i| all.get(i).copied()),
        withscores,
        resp3,
    ))
}

/// ZSCAN key cursor [MATCH pattern] [COUNT count].
fn zscan(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let cursor = parse_cursor(&a.next_bytes()?)?;
    let empty = || Reply::Array(vec![Reply::bulk_str("0"), Reply::Array(Vec::new())]);
    if read(ctx, &key)?.is_none() {
        return Ok(empty());
    }
    let opts = ScanOpts::parse(a, false)?;
    let Some(z) = read(ctx, &key)? else {
        return Ok(empty());
    };
    let mut found = Vec::new();
    let next = z.scan(cursor, opts.count, |m, s| {
        if opts.matches(m) {
            found.push(Reply::Bulk(Bytes::copy_from_slice(m)));
            found.push(Reply::bulk_str(&format_double(s)));
        }
    });
    Ok(Reply::Array(vec![
        Reply::bulk_str(&next.to_string()),
        Reply::Array(found),
    ]))
}

/// A blocking command's timeout in seconds as Redis 7.0's
/// `getTimeoutFromObjectOrReply` reads it: a float (as `strtold`), rounded
/// up to milliseconds; `None` = forever.
pub fn parse_timeout_secs(b: &[u8]) -> Result<Option<Duration>, CmdError> {
    let bad = || CmdError::err("timeout is not a float or out of range");
    if b.is_empty() || matches!(b[0], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        return Err(bad());
    }
    let (v, n, erange) = strtod(b);
    if n != b.len() || v.is_nan() {
        return Err(bad());
    }
    let ms = (v * 1000.0).ceil();
    // NOTE: C converts an out-of-range double to LLONG_MIN on x86: negative.
    if ms.is_nan() || ms >= 9.2e18 || ms <= -1.0 {
        return Err(CmdError::TimeoutNegative);
    }
    // `strtold` keeps what underflows a double: a tiny positive timeout
    // still waits a millisecond.
    let tiny = erange && v == 0.0 && v.is_sign_positive();
    let ms = if ms > 0.0 { ms as u64 } else { u64::from(tiny) };
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// BZPOPMIN/BZPOPMAX key [key ...] timeout.
fn bzpop_generic(ctx: &mut Ctx, a: &mut Args, max: bool) -> Result<Reply, CmdError> {
    let mut args = a.rest().to_vec();
    let Some(timeout) = args.pop() else {
        return Err(CmdError::Syntax);
    };
    let timeout = parse_timeout_secs(&timeout)?;
    for key in &args {
        if read(ctx, key)?.is_some() {
            let popped = pop_n(ctx.db(), key, max, 1);
            ctx.touch(key);
            notify_zpop(ctx, max, key);
            ctx.propagate_nothing();
            if ctx.logging() {
                ctx.propagate(vec![pop_name(max), key.clone()]);
            }
            return Ok(bzpop_reply(key, popped));
        }
    }
    ctx.propagate_nothing();
    ctx.block = Some(BlockRequest {
        keys: args.clone(),
        timeout,
        cmd: Box::new(ZPopWaiter {
            max,
            effects: Vec::new(),
            touched: Vec::new(),
            events: Vec::new(),
        }),
    });
    Ok(Reply::NullArray)
}

fn pop_name(max: bool) -> Bytes {
    Bytes::from_static(if max { b"ZPOPMAX" } else { b"ZPOPMIN" })
}

fn bzpop_reply(key: &Bytes, popped: Vec<(f64, Bytes)>) -> Reply {
    match popped.into_iter().next() {
        Some((s, m)) => Reply::Array(vec![
            Reply::Bulk(key.clone()),
            Reply::Bulk(m),
            Reply::Double(s),
        ]),
        None => Reply::NullArray,
    }
}

fn bzpopmin(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bzpop_generic(ctx, a, false)
}
fn bzpopmax(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bzpop_generic(ctx, a, true)
}

/// A blocked BZPOPMIN/BZPOPMAX: served by the first of its keys to hold a
/// sorted set (a key of another type leaves it waiting, as Redis).
struct ZPopWaiter {
    max: bool,
    effects: Vec<Vec<Bytes>>,
    touched: Vec<Bytes>,
    events: Vec<(u32, &'static str, Bytes)>,
}

impl BlockedCommand for ZPopWaiter {
    fn try_serve(&mut self, db: &mut Db, key: &Bytes, _now_ms: u64) -> Option<Reply> {
        if !matches!(db.get(key), Some(Value::ZSet(z)) if !z.is_empty()) {
            return None;
        }
        let popped = pop_n(db, key, self.max, 1);
        self.effects.push(vec![pop_name(self.max), key.clone()]);
        self.touched.push(key.clone());
        let ev = if self.max { "zpopmax" } else { "zpopmin" };
        self.events.push((NOTIFY_ZSET, ev, key.clone()));
        if !db.contains(key) {
            self.events.push((NOTIFY_GENERIC, "del", key.clone()));
        }
        Some(bzpop_reply(key, popped))
    }
    fn timeout_reply(&self) -> Reply {
        Reply::NullArray
    }
    fn name(&self) -> &'static str {
        if self.max {
            "bzpopmax"
        } else {
            "bzpopmin"
        }
    }
    fn take_effects(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.effects)
    }
    /// The popped key: touched (WATCH breaks) as the pop's own write.
    fn take_touched(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.touched)
    }
    fn take_events(&mut self) -> Vec<(u32, &'static str, Bytes)> {
        std::mem::take(&mut self.events)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggr {
    Sum,
    Min,
    Max,
}

fn aggregate(target: &mut f64, v: f64, ag: Aggr) {
    match ag {
        Aggr::Sum => {
            *target += v;
            // Redis: +inf + -inf is NaN, kept as 0.
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggr::Min => {
            if v < *target {
                *target = v
            }
        }
        Aggr::Max => {
            if v > *target {
                *target = v
            }
        }
    }
}

/// One input of ZUNION/ZINTER/ZDIFF: a sorted set, or a set (scores 1).
enum Src<'a> {
    Missing,
    Z(&'a ZSet),
    S(&'a crate::types::set::Set),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Missing => 0,
            Src::Z(z) => z.len(),
            Src::S(s) => s.len(),
        }
    }
    fn score(&self, m: &[u8]) -> Option<f64> {
        match self {
            Src::Missing => None,
            Src::Z(z) => z.score(m),
            Src::S(s) => s.contains(m).then_some(1.0),
        }
    }
    fn each(&self, mut f: impl FnMut(&[u8], f64)) {
        match self {
            Src::Missing => {}
            Src::Z(z) => z.iter().for_each(|(s, m)| f(m, s)),
            Src::S(s) => s.members().for_each(|m| f(&m, 1.0)),
        }
    }
}

struct SetOpArgs {
    keys: Vec<Bytes>,
    weights: Vec<f64>,
    aggr: Aggr,
    withscores: bool,
    limit: usize,
}

/// Redis's `zunionInterDiffGenericCommand` argument parsing; WRONGTYPE is
/// checked before the options, as Redis does.
fn parse_setop(
    ctx: &mut Ctx,
    a: &mut Args,
    name: &str,
    op: SetOp,
    store: bool,
    card: bool,
) -> Result<SetOpArgs, CmdError> {
    let n = parse_i64(&a.next_bytes()?).ok_or(CmdError::NotInteger)?;
    if n < 1 {
        return Err(CmdError::err(format!(
            "at least 1 input key is needed for '{name}' command"
        )));
    }
    if n as u64 > a.remaining() as u64 {
        return Err(CmdError::Syntax);
    }
    let keys: Vec<Bytes> = (0..n).map(|_| a.next_bytes()).collect::<Result<_, _>>()?;
    for k in &keys {
        match ctx.db().get(k) {
            None | Some(Value::ZSet(_)) | Some(Value::Set(_)) => {}
            Some(_) => return Err(CmdError::WrongType),
        }
    }
    let mut o = SetOpArgs {
        weights: vec![1.0; keys.len()],
        keys,
        aggr: Aggr::Sum,
        withscores: false,
        limit: 0,
    };
    while a.remaining() > 0 {
        let rem = a.remaining();
        if op != SetOp::Diff && !card && rem > o.keys.len() && a.eat("WEIGHTS") {
            for w in o.weights.iter_mut() {
                let b = a.next_bytes()?;
                *w = match parse_score(&b) {
                    Some(v) if !v.is_nan() => v,
                    _ => return Err(CmdError::err("weight value is not a float")),
                };
            }
        } else if op != SetOp::Diff && !card && rem >= 2 && a.eat("AGGREGATE") {
            let b = a.next_bytes()?;
            o.aggr = match b.to_ascii_lowercase().as_slice() {
                b"sum" => Aggr::Sum,
                b"min" => Aggr::Min,
                b"max" => Aggr::Max,
                _ => return Err(CmdError::Syntax),
            };
        } else if !store && !card && a.eat("WITHSCORES") {
            o.withscores = true;
        } else if card && rem >= 2 && a.eat("LIMIT") {
            o.limit = match parse_i64(&a.next_bytes()?) {
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(CmdError::err("LIMIT can't be negative")),
            };
        } else {
            return Err(CmdError::Syntax);
        }
    }
    Ok(o)
}

/// The result as a sorted set (ordered by score, then member).
fn compute_setop(db: &Db, o: &SetOpArgs, op: SetOp) -> ZSet {
    let mut srcs: Vec<(Src, f64)> = o
        .keys
        .iter()
        .zip(o.weights.iter())
        .map(|(k, w)| {
            let s = match db.get(k) {
                Some(Value::ZSet(z)) => Src::Z(z),
                Some(Value::Set(s)) => Src::S(s),
                _ => Src::Missing,
            };
            (s, *w)
        })
        .collect();
    let mut acc: Vec<(Bytes, f64)> = Vec::new();
    match op {
        SetOp::Inter => {
            srcs.sort_by_key(|(s, _)| s.len());
            if let Some(((first, w0), rest)) = srcs.split_first() {
                first.each(|m, sc| {
                    let mut score = sc * w0;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    for (s, w) in rest {
                        match s.score(m) {
                            Some(v) => {
                                let mut v = v * w;
                                if v.is_nan() {
                                    v = 0.0;
                                }
                                aggregate(&mut score, v, o.aggr);
                            }
                            None => return,
                        }
                    }
                    acc.push((Bytes::copy_from_slice(m), score));
                });
            }
        }
        SetOp::Union => {
            srcs.sort_by_key(|(s, _)| s.len());
            let mut map: std::collections::HashMap<Bytes, f64> = std::collections::HashMap::new();
            for (s, w) in &srcs {
                s.each(|m, sc| {
                    let mut v = sc * w;
                    if v.is_nan() {
                        v = 0.0;
                    }
                    match map.get_mut(m) {
                        Some(t) => aggregate(t, v, o.aggr),
                        None => {
                            map.insert(Bytes::copy_from_slice(m), v);
                        }
                    }
                });
            }
            acc.extend(map);
        }
        SetOp::Diff => {
            if let Some(((first, _), rest)) = srcs.split_first() {
                first.each(|m, sc| {
                    if !rest.iter().any(|(s, _)| s.score(m).is_some()) {
                        acc.push((Bytes::copy_from_slice(m), sc));
                    }
                });
            }
        }
    }
    let mut out = ZSet::default();
    for (m, s) in &acc {
        out.set(m, *s);
    }
    out
}

fn setop_read(ctx: &mut Ctx, a: &mut Args, name: &str, op: SetOp) -> Result<Reply, CmdError> {
    let o = parse_setop(ctx, a, name, op, false, false)?;
    let resp3 = ctx.client.resp >= 3;
    let z = compute_setop(ctx.db(), &o, op);
    Ok(members_reply(z.iter(), o.withscores, resp3))
}

fn setop_store(ctx: &mut Ctx, a: &mut Args, name: &str, op: SetOp) -> Result<Reply, CmdError> {
    let dst = a.next_bytes()?;
    let o = parse_setop(ctx, a, name, op, true, false)?;
    let z = compute_setop(ctx.db(), &o, op);
    let items = z
        .iter()
        .map(|(s, m)| (s, Bytes::copy_from_slice(m)))
        .collect();
    Ok(store_result(ctx, dst, items, name))
}

fn zunion(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_read(ctx, a, "zunion", SetOp::Union)
}
fn zinter(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_read(ctx, a, "zinter", SetOp::Inter)
}
fn zdiff(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_read(ctx, a, "zdiff", SetOp::Diff)
}
fn zunionstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_store(ctx, a, "zunionstore", SetOp::Union)
}
fn zinterstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_store(ctx, a, "zinterstore", SetOp::Inter)
}
fn zdiffstore(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setop_store(ctx, a, "zdiffstore", SetOp::Diff)
}

/// ZINTERCARD numkeys key [key ...] [LIMIT limit].
fn zintercard(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let o = parse_setop(ctx, a, "zintercard", SetOp::Inter, false, true)?;
    let z = compute_setop(ctx.db(), &o, SetOp::Inter);
    let n = if o.limit != 0 {
        z.len().min(o.limit)
    } else {
        z.len()
    };
    Ok(Reply::Int(n as i64))
}
