//! Keyspace commands: DEL, UNLINK, EXISTS, TYPE, RENAME, RENAMENX, KEYS, SCAN,
//! DBSIZE, FLUSHDB, FLUSHALL, RANDOMKEY.

use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::glob::glob_match;
use crate::pubsub::NOTIFY_GENERIC;
use crate::reply::Reply;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("del", del),
    ("unlink", del),
    ("exists", exists),
    ("type", type_),
    ("rename", rename),
    ("renamenx", renamenx),
    ("keys", keys),
    ("scan", scan),
    ("dbsize", dbsize),
    ("flushdb", flushdb),
    ("flushall", flushall),
    ("randomkey", randomkey),
];

fn del(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut n = 0;
    for k in a.rest().to_vec() {
        if ctx.db().remove(&k).is_some() {
            ctx.touch(&k);
            ctx.notify(NOTIFY_GENERIC, "del", &k);
            n += 1;
        }
    }
    Ok(Reply::Int(n))
}

fn exists(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let keys = a.rest().to_vec();
    let db = ctx.db();
    Ok(Reply::Int(
        keys.iter().filter(|k| db.contains(k)).count() as i64
    ))
}

fn type_(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let k = a.next_bytes()?;
    Ok(Reply::simple(
        ctx.db().get(&k).map_or("none", |v| v.type_name()),
    ))
}

fn rename_generic(ctx: &mut Ctx, a: &mut Args, nx: bool) -> Result<Reply, CmdError> {
    let src = a.next_bytes()?;
    let dst = a.next_bytes()?;
    if !ctx.db().contains(&src) {
        return Err(CmdError::NoSuchKey);
    }
    if src == dst {
        return Ok(if nx { Reply::Int(0) } else { Reply::ok() });
    }
    if nx && ctx.db().contains(&dst) {
        return Ok(Reply::Int(0));
    }
    // The value keeps its time to live; whatever `dst` held goes, with its own.
    let ttl = ctx.db().expiry(&src);
    let Some(v) = ctx.db().remove(&src) else {
        return Err(CmdError::NoSuchKey);
    };
    ctx.db().remove(&dst);
    ctx.db().insert(dst.clone(), v);
    if let Some(when) = ttl {
        ctx.db().set_expiry(&dst, when);
    }
    ctx.touch(&src);
    ctx.touch(&dst);
    ctx.notify(NOTIFY_GENERIC, "rename_from", &src);
    ctx.notify(NOTIFY_GENERIC, "rename_to", &dst);
    Ok(if nx { Reply::Int(1) } else { Reply::ok() })
}

fn rename(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    rename_generic(ctx, a, false)
}

fn renamenx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    rename_generic(ctx, a, true)
}

fn keys(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let pat = a.next_bytes()?;
    let all = pat.as_ref() == b"*";
    let now = ctx.now_ms;
    let db = ctx.db();
    // Keys whose time has passed are not listed (Redis 7.0's KEYS).
    let out = db
        .keys()
        .filter(|k| (all || glob_match(&pat, k, false)) && !db.is_expired(k, now))
        .map(|k| Reply::Bulk(k.clone()))
        .collect();
    Ok(Reply::Array(out))
}

/// SCAN's cursor as Redis reads it (`strtoul`): optional sign, decimal
/// digits, no leading space, no overflow; `-1` wraps to u64::MAX.
pub(crate) fn parse_cursor(b: &[u8]) -> Result<u64, CmdError> {
    let bad = || CmdError::err("invalid cursor");
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || !digits.iter().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((c - b'0') as u64))
            .ok_or_else(bad)?;
    }
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// The options of SCAN, HSCAN, SSCAN and ZSCAN, read as Redis's
/// `scanGenericCommand` reads them: `COUNT n` (an integer, at least 1),
/// `MATCH pattern` (`*` matches everything), `TYPE name` (SCAN only; a
/// syntax error for the others), each followed by its value, in any order,
/// the last one winning.
pub(crate) struct ScanOpts {
    pub count: usize,
    pub pattern: Option<Bytes>,
    pub typ: Option<Bytes>,
}

impl ScanOpts {
    pub(crate) fn parse(a: &mut Args, allow_type: bool) -> Result<ScanOpts, CmdError> {
        let mut o = ScanOpts {
            count: 10,
            pattern: None,
            typ: None,
        };
        while a.remaining() > 0 {
            if a.remaining() < 2 {
                return Err(CmdError::Syntax);
            }
            if a.eat("COUNT") {
                let n = a.next_i64()?;
                if n < 1 {
                    return Err(CmdError::Syntax);
                }
                o.count = usize::try_from(n).unwrap_or(usize::MAX);
            } else if a.eat("MATCH") {
                o.pattern = Some(a.next_bytes()?).filter(|p| p.as_ref() != b"*");
            } else if allow_type && a.eat("TYPE") {
                o.typ = Some(a.next_bytes()?);
            } else {
                return Err(CmdError::Syntax);
            }
        }
        Ok(o)
    }

    /// Whether `item` passes MATCH.
    pub(crate) fn matches(&self, item: &[u8]) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| glob_match(p, item, false))
    }
}

fn scan(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let cursor = parse_cursor(&a.next_bytes()?)?;
    let opts = ScanOpts::parse(a, true)?;
    let (count, typ) = (opts.count, opts.typ.clone());
    let mut seen = Vec::new();
    let next = ctx.db().scan(cursor, count, |k, v| {
        if !opts.matches(k) {
            return;
        }
        if typ
            .as_ref()
            .is_some_and(|t| !t.eq_ignore_ascii_case(v.type_name().as_bytes()))
        {
            return;
        }
        seen.push(k.clone());
    });
    // Redis deletes the expired keys it comes across (expireIfNeeded).
    let (db, now) = (ctx.client.db, ctx.now_ms);
    let found = seen
        .into_iter()
        .filter(|k| !crate::expire::expire_if_needed(ctx.store, db, k, now))
        .map(Reply::Bulk)
        .collect();
    Ok(Reply::Array(vec![
        Reply::bulk_str(&next.to_string()),
        Reply::Array(found),
    ]))
}

fn dbsize(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(ctx.db().len() as i64))
}

/// FLUSHDB/FLUSHALL take an optional ASYNC or SYNC.
fn flush_mode(a: &mut Args) -> Result<(), CmdError> {
    if a.remaining() > 1 {
        return Err(CmdError::Syntax);
    }
    if a.remaining() == 1 && !a.eat("ASYNC") && !a.eat("SYNC") {
        return Err(CmdError::Syntax);
    }
    Ok(())
}

fn flushdb(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    flush_mode(a)?;
    let db = ctx.client.db;
    ctx.store.touch_all_in(Some(db));
    ctx.store.signal_all_blocked(Some(db));
    ctx.store.dbs[db].clear();
    ctx.store.dirty += 1;
    Ok(Reply::ok())
}

fn flushall(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    flush_mode(a)?;
    ctx.store.touch_all_in(None);
    ctx.store.signal_all_blocked(None);
    for db in ctx.store.dbs.iter_mut() {
        db.clear();
    }
    ctx.store.dirty += 1;
    Ok(Reply::ok())
}

fn randomkey(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let seed = ctx.now_ms.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ctx.store.stats.total_commands;
    Ok(match ctx.db().random_key(seed) {
        Some(k) => Reply::Bulk(k.clone()),
        None => Reply::Null,
    })
}
