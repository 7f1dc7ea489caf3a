//! String values: SET (EX PX EXAT PXAT NX XX KEEPTTL GET), SETEX, PSETEX,
//! SETNX, GET, GETEX, GETDEL, GETSET, MGET, MSET, MSETNX, INCR, DECR,
//! INCRBY, DECRBY, INCRBYFLOAT, APPEND, STRLEN, GETRANGE, SUBSTR, SETRANGE.
//!
//! A string is `Value::String(Bytes)`; Redis's encodings (int, embstr, raw)
//! are only reported ([`string_encoding`]), never stored. Replay is
//! deterministic because relative times and float results are logged as
//! Redis propagates them: SET with a time becomes `SET key value PXAT ms`,
//! GETEX becomes `PEXPIREAT`/`DEL`/`PERSIST`, INCRBYFLOAT becomes
//! `SET key result KEEPTTL`. INCRBYFLOAT computes in the x87 80-bit long
//! double Redis uses on x86-64 ([`longdouble`]), so results print the same.

mod longdouble;

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_STRING};
use crate::reply::Reply;
use crate::store::Value;
use bytes::{Bytes, BytesMut};

pub const COMMANDS: &[(&str, Handler)] = &[
    ("set", set),
    ("setex", setex),
    ("psetex", psetex),
    ("setnx", setnx),
    ("get", get),
    ("getex", getex),
    ("getdel", getdel),
    ("getset", getset),
    ("mget", mget),
    ("mset", mset),
    ("msetnx", msetnx),
    ("incr", incr),
    ("decr", decr),
    ("incrby", incrby),
    ("decrby", decrby),
    ("incrbyfloat", incrbyfloat),
    ("append", append),
    ("strlen", strlen),
    ("getrange", getrange),
    ("substr", getrange),
    ("setrange", setrange),
    ("lcs", lcs),
];

/// The encoding OBJECT ENCODING reports for a string, as Redis 7.0's
/// `tryObjectEncoding` picks it: `int` for a strict 64-bit integer of at
/// most 20 characters, `embstr` up to 44 bytes, `raw` beyond.
/// NOTE: Redis also reports `raw` for a short string that APPEND or
/// SETRANGE modified in place; Ferrite does not remember that history.
pub fn string_encoding(value: &Bytes) -> &'static str {
    if value.len() <= 20 && parse_i64(value).is_some() {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// The string at `key`: `None` if there is no key, WRONGTYPE if it holds
/// another type.
fn get_string(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Bytes>, CmdError> {
    match ctx.db().get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn bulk_or_null(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Null, Reply::Bulk)
}

/// Store `val` at `key` as Redis's `setKey` does: any previous value (of
/// any type) is replaced and its time to live dropped unless `keep_ttl`.
pub(super) fn set_key(ctx: &mut Ctx, key: &Bytes, val: Bytes, keep_ttl: bool) {
    // Its own allocation: not a slice pinning the connection's read buffer.
    ctx.db()
        .insert(key.clone(), Value::String(Bytes::copy_from_slice(&val)));
    if !keep_ttl {
        ctx.db().persist(key);
    }
    ctx.touch(key);
    ctx.notify(NOTIFY_STRING, "set", key);
}

/// How an expiry option states its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeUnit {
    /// EX: seconds from now.
    Ex,
    /// PX: milliseconds from now.
    Px,
    /// EXAT: a Unix time in seconds.
    ExAt,
    /// PXAT: a Unix time in milliseconds.
    PxAt,
}

/// SET's and GETEX's options (Redis's `parseExtendedStringArgumentsOrReply`).
#[derive(Default)]
struct Options {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    expire: Option<(TimeUnit, Bytes)>,
}

impl Options {
    /// Parse the options after the fixed arguments. Conflicting options are
    /// a plain `ERR syntax error`, as in Redis 7.0; an option repeated
    /// (`EX 1 EX 2`) is allowed and the last one wins.
    fn parse(a: &mut Args, for_set: bool) -> Result<Options, CmdError> {
        let mut o = Options::default();
        while a.remaining() > 0 {
            let opt = a.next_bytes()?;
            let has_next = a.remaining() > 0;
            let is = |kw: &[u8]| opt.eq_ignore_ascii_case(kw);
            let timed = |o: &Options, unit: TimeUnit| {
                !o.keep_ttl && !o.persist && o.expire.as_ref().is_none_or(|(u, _)| *u == unit)
            };
            if for_set && is(b"NX") && !o.xx {
                o.nx = true;
            } else if for_set && is(b"XX") && !o.nx {
                o.xx = true;
            } else if for_set && is(b"GET") {
                o.get = true;
            } else if for_set && is(b"KEEPTTL") && o.expire.is_none() {
                o.keep_ttl = true;
            } else if !for_set && is(b"PERSIST") && o.expire.is_none() {
                o.persist = true;
            } else if let Some(unit) = [
                (&b"EX"[..], TimeUnit::Ex),
                (b"PX", TimeUnit::Px),
                (b"EXAT", TimeUnit::ExAt),
                (b"PXAT", TimeUnit::PxAt),
            ]
            .iter()
            .find(|(kw, _)| is(kw))
            .map(|&(_, u)| u)
            .filter(|&u| has_next && timed(&o, u))
            {
                o.expire = Some((unit, a.next_bytes()?));
            } else {
                return Err(CmdError::Syntax);
            }
        }
        Ok(o)
    }
}

/// The absolute expiry in ms for an option's argument (Redis's
/// `getExpireMillisecondsOrReply`): positive, and no overflow once
/// converted to ms and added to the time now.
fn expire_at_ms(ctx: &Ctx, unit: TimeUnit, raw: &[u8], cmd: &str) -> Result<u64, CmdError> {
    let invalid = || CmdError::Other(format!("ERR invalid expire time in '{cmd}' command"));
    let mut ms = parse_i64(raw).ok_or(CmdError::NotInteger)?;
    let seconds = matches!(unit, TimeUnit::Ex | TimeUnit::ExAt);
    if ms <= 0 || (seconds && ms > i64::MAX / 1000) {
        return Err(invalid());
    }
    if seconds {
        ms *= 1000;
    }
    if matches!(unit, TimeUnit::Ex | TimeUnit::Px) {
        ms = ms.checked_add(ctx.now_ms as i64).ok_or_else(invalid)?;
    }
    Ok(ms as u64)
}

/// SET and its fixed-option forms. `ok`/`abort`: the replies for "set" and
/// "not set because of NX/XX" (SETNX answers 1 and 0).
fn set_generic(
    ctx: &mut Ctx,
    cmd: &str,
    key: Bytes,
    val: Bytes,
    o: Options,
    ok: Reply,
    abort: Reply,
) -> Result<Reply, CmdError> {
    let when = match &o.expire {
        Some((unit, raw)) => Some(expire_at_ms(ctx, *unit, raw, cmd)?),
        None => None,
    };
    let old = if o.get { get_string(ctx, &key)? } else { None };
    let found = ctx.db().contains(&key);
    if (o.nx && found) || (o.xx && !found) {
        ctx.propagate_nothing();
        return Ok(if o.get { bulk_or_null(old) } else { abort });
    }
    set_key(ctx, &key, val.clone(), o.keep_ttl);
    let mut logged = vec![Bytes::from_static(b"SET"), key.clone(), val];
    if let Some(when) = when {
        // NOTE: a time already past is stored as it is, as Redis 7.0 does:
        // the next command to touch the key deletes it (logged as DEL).
        ctx.db().set_expiry(&key, when);
        ctx.notify(NOTIFY_GENERIC, "expire", &key);
        logged.push(Bytes::from_static(b"PXAT"));
        logged.push(Bytes::from(when.to_string()));
    } else if o.keep_ttl {
        logged.push(Bytes::from_static(b"KEEPTTL"));
    }
    ctx.propagate(logged);
    Ok(if o.get { bulk_or_null(old) } else { ok })
}

fn set(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let val = a.next_bytes()?;
    let o = Options::parse(a, true)?;
    set_generic(ctx, "set", key, val, o, Reply::ok(), Reply::Null)
}

fn setex_generic(
    ctx: &mut Ctx,
    a: &mut Args,
    cmd: &str,
    unit: TimeUnit,
) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let time = a.next_bytes()?;
    let val = a.next_bytes()?;
    a.finish()?;
    let o = Options {
        expire: Some((unit, time)),
        ..Options::default()
    };
    set_generic(ctx, cmd, key, val, o, Reply::ok(), Reply::Null)
}

fn setex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setex_generic(ctx, a, "setex", TimeUnit::Ex)
}

fn psetex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    setex_generic(ctx, a, "psetex", TimeUnit::Px)
}

fn setnx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let val = a.next_bytes()?;
    a.finish()?;
    let o = Options {
        nx: true,
        ..Options::default()
    };
    set_generic(ctx, "setnx", key, val, o, Reply::Int(1), Reply::Int(0))
}

fn get(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(bulk_or_null(get_string(ctx, &key)?))
}

fn getex(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let o = Options::parse(a, false)?;
    ctx.propagate_nothing();
    let Some(val) = get_string(ctx, &key)? else {
        return Ok(Reply::Null);
    };
    let when = match &o.expire {
        Some((unit, raw)) => Some((*unit, expire_at_ms(ctx, *unit, raw, "getex")?)),
        None => None,
    };
    match when {
        Some((TimeUnit::ExAt | TimeUnit::PxAt, when))
            if when <= ctx.now_ms && !ctx.store.loading =>
        {
            ctx.db().remove(&key);
            ctx.touch(&key);
            ctx.notify(NOTIFY_GENERIC, "del", &key);
            ctx.propagate(vec![Bytes::from_static(b"DEL"), key]);
        }
        Some((_, when)) => {
            ctx.db().set_expiry(&key, when);
            ctx.touch(&key);
            ctx.notify(NOTIFY_GENERIC, "expire", &key);
            ctx.propagate(vec![
                Bytes::from_static(b"PEXPIREAT"),
                key,
                Bytes::from(when.to_string()),
            ]);
        }
        None if o.persist && ctx.db().persist(&key) => {
            ctx.touch(&key);
            ctx.notify(NOTIFY_GENERIC, "persist", &key);
            ctx.propagate(vec![Bytes::from_static(b"PERSIST"), key]);
        }
        None => {}
    }
    Ok(Reply::Bulk(val))
}

fn getdel(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let Some(val) = get_string(ctx, &key)? else {
        ctx.propagate_nothing();
        return Ok(Reply::Null);
    };
    ctx.db().remove(&key);
    ctx.touch(&key);
    ctx.notify(NOTIFY_GENERIC, "del", &key);
    ctx.propagate(vec![Bytes::from_static(b"DEL"), key]);
    Ok(Reply::Bulk(val))
}

fn getset(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let val = a.next_bytes()?;
    let old = get_string(ctx, &key)?;
    set_key(ctx, &key, val.clone(), false);
    ctx.propagate(vec![Bytes::from_static(b"SET"), key, val]);
    Ok(bulk_or_null(old))
}

fn mget(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let db = ctx.db();
    let out = a
        .rest()
        .iter()
        .map(|k| match db.get(k) {
            Some(Value::String(s)) => Reply::Bulk(s.clone()),
            _ => Reply::Null,
        })
        .collect();
    Ok(Reply::Array(out))
}

fn mset_generic(ctx: &mut Ctx, a: &mut Args, nx: bool) -> Result<Reply, CmdError> {
    let pairs = a.rest().to_vec();
    if !pairs.chunks_exact(2).remainder().is_empty() {
        let name = if nx { "msetnx" } else { "mset" };
        return Err(CmdError::WrongArity(name.into()));
    }
    if nx && pairs.chunks(2).any(|kv| ctx.db().contains(&kv[0])) {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    }
    for kv in pairs.chunks(2) {
        set_key(ctx, &kv[0], kv[1].clone(), false);
    }
    Ok(if nx { Reply::Int(1) } else { Reply::ok() })
}

fn mset(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    mset_generic(ctx, a, false)
}

fn msetnx(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    mset_generic(ctx, a, true)
}

/// INCR, DECR, INCRBY, DECRBY: the key's time to live is kept.
fn incr_by(ctx: &mut Ctx, key: Bytes, by: i64) -> Result<Reply, CmdError> {
    let cur = match get_string(ctx, &key)? {
        None => 0,
        Some(s) => parse_i64(&s).ok_or(CmdError::NotInteger)?,
    };
    let n = cur
        .checked_add(by)
        .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
    ctx.db()
        .insert(key.clone(), Value::String(Bytes::from(n.to_string())));
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "incrby", &key);
    Ok(Reply::Int(n))
}

fn incr(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    incr_by(ctx, key, 1)
}

fn decr(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    incr_by(ctx, key, -1)
}

fn incrby(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let by = a.next_i64()?;
    incr_by(ctx, key, by)
}

fn decrby(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let by = a.next_i64()?;
    if by == i64::MIN {
        return Err(CmdError::err("decrement would overflow"));
    }
    incr_by(ctx, key, -by)
}

fn incrbyfloat(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let incr = a.next_bytes()?;
    let not_float = || CmdError::err("value is not a valid float");
    let cur = match get_string(ctx, &key)? {
        None => longdouble::LongDouble::ZERO,
        Some(s) => longdouble::LongDouble::parse(&s).ok_or_else(not_float)?,
    };
    let incr = longdouble::LongDouble::parse(&incr).ok_or_else(not_float)?;
    let sum = cur
        .add(&incr)
        .ok_or_else(|| CmdError::err("increment would produce NaN or Infinity"))?;
    let val = Bytes::from(sum.to_human_string());
    ctx.db().insert(key.clone(), Value::String(val.clone()));
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "incrbyfloat", &key);
    ctx.propagate(vec![
        Bytes::from_static(b"SET"),
        key,
        val.clone(),
        Bytes::from_static(b"KEEPTTL"),
    ]);
    Ok(Reply::Bulk(val))
}

/// Redis's `checkStringLength`: a string may not grow past
/// `proto-max-bulk-len` (not checked while the log is replayed: what was
/// accepted once is accepted again).
fn check_length(ctx: &Ctx, size: u64, append: u64) -> Result<(), CmdError> {
    if ctx.store.loading {
        return Ok(());
    }
    let max = ctx.shared.config.read().proto_max_bulk_len;
    match size.checked_add(append) {
        Some(total) if total <= max => Ok(()),
        _ => Err(CmdError::err(
            "string exceeds maximum allowed size (proto-max-bulk-len)",
        )),
    }
}

/// The string at `key` as a buffer to modify in place (no copy when the
/// stored bytes are not shared), or `None` if there is no key.
fn take_mut(ctx: &mut Ctx, key: &[u8]) -> Option<BytesMut> {
    match ctx.db().get_mut(key) {
        Some(Value::String(s)) => {
            let b = std::mem::take(s);
            Some(b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..])))
        }
        _ => None,
    }
}

fn append(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let tail = a.next_bytes()?;
    let Some(cur) = get_string(ctx, &key)? else {
        let len = tail.len();
        ctx.db()
            .insert(key.clone(), Value::String(Bytes::copy_from_slice(&tail)));
        ctx.touch(&key);
        ctx.notify(NOTIFY_STRING, "append", &key);
        return Ok(Reply::Int(len as i64));
    };
    check_length(ctx, cur.len() as u64, tail.len() as u64)?;
    drop(cur);
    let mut buf = take_mut(ctx, &key).unwrap_or_default();
    buf.extend_from_slice(&tail);
    let len = buf.len();
    ctx.db().insert(key.clone(), Value::String(buf.freeze()));
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "append", &key);
    Ok(Reply::Int(len as i64))
}

fn strlen(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let n = match ctx.db().get(&key) {
        None => 0,
        Some(Value::String(s)) => s.len(),
        Some(_) => return Err(CmdError::WrongType),
    };
    Ok(Reply::Int(n as i64))
}

fn getrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let mut start = a.next_i64()?;
    let mut end = a.next_i64()?;
    let Some(s) = get_string(ctx, &key)? else {
        return Ok(Reply::Bulk(Bytes::new()));
    };
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    if start < 0 {
        start = start.saturating_add(len);
    }
    if end < 0 {
        end = end.saturating_add(len);
    }
    let start = start.max(0);
    let end = end.max(0).min(len - 1);
    if start > end || len == 0 {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    Ok(Reply::Bulk(s.slice(start as usize..=end as usize)))
}

fn setrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let offset = a.next_i64()?;
    let val = a.next_bytes()?;
    if offset < 0 {
        return Err(CmdError::err("offset is out of range"));
    }
    let offset = offset as u64;
    let cur = get_string(ctx, &key)?;
    if val.is_empty() {
        // Nothing to write: no change, no key created.
        ctx.propagate_nothing();
        return Ok(Reply::Int(cur.map_or(0, |c| c.len() as i64)));
    }
    check_length(ctx, offset, val.len() as u64)?;
    drop(cur);
    // Bounded by the check above (proto-max-bulk-len).
    let offset = offset as usize;
    let mut buf = take_mut(ctx, &key).unwrap_or_default();
    if buf.len() < offset + val.len() {
        buf.resize(offset + val.len(), 0);
    }
    buf[offset..offset + val.len()].copy_from_slice(&val);
    let len = buf.len();
    ctx.db().insert(key.clone(), Value::String(buf.freeze()));
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "setrange", &key);
    Ok(Reply::Int(len as i64))
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest
/// common subsequence by Redis's dynamic programme (a table of
/// `(len1+1)*(len2+1)` u32s, refused past `proto-max-bulk-len` bytes as in
/// Redis), and its ranges walked back from the end exactly as Redis walks
/// them.
fn lcs(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let k1 = a.next_bytes()?;
    let k2 = a.next_bytes()?;
    let not_string = || CmdError::err("The specified keys must contain string values");
    let x = match ctx.db().get(&k1) {
        None => Bytes::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(not_string()),
    };
    let y = match ctx.db().get(&k2) {
        None => Bytes::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(not_string()),
    };
    let (mut get_idx, mut get_len, mut with_len) = (false, false, false);
    let mut min_len: i64 = 0;
    while let Some(opt) = a.peek().cloned() {
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"IDX") {
            get_idx = true;
        } else if opt.eq_ignore_ascii_case(b"LEN") {
            get_len = true;
        } else if opt.eq_ignore_ascii_case(b"WITHMATCHLEN") {
            with_len = true;
        } else if opt.eq_ignore_ascii_case(b"MINMATCHLEN") && a.remaining() > 0 {
            min_len = a.next_i64()?.max(0);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if get_len && get_idx {
        return Err(CmdError::err(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    if x.len() >= u32::MAX as usize - 1 || y.len() >= u32::MAX as usize - 1 {
        return Err(CmdError::err("String too long for LCS"));
    }
    let (alen, blen) = (x.len(), y.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    let max = ctx.shared.config.read().proto_max_bulk_len;
    if cells.saturating_mul(4) > max {
        return Err(CmdError::err(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let mut dp: Vec<u32> = Vec::new();
    if dp.try_reserve_exact(cells as usize).is_err() {
        return Err(CmdError::err(
            "Insufficient memory, failed allocating transient memory for LCS",
        ));
    }
    dp.resize(cells as usize, 0);
    let w = blen + 1;
    for i in 1..=alen {
        for j in 1..=blen {
            dp[i * w + j] = if x[i - 1] == y[j - 1] {
                dp[(i - 1) * w + j - 1] + 1
            } else {
                dp[(i - 1) * w + j].max(dp[i * w + j - 1])
            };
        }
    }
    let total = dp[alen * w + blen];
    if get_len {
        return Ok(Reply::Int(i64::from(total)));
    }
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    let mut ranges: Vec<Reply> = Vec::new();
    // `a_start == alen`: no range is open.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0usize, 0usize, 0usize);
    let (mut i, mut j) = (alen, blen);
    while i > 0 && j > 0 {
        let mut emit = false;
        if x[i - 1] == y[j - 1] {
            result[idx - 1] = x[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if dp[(i - 1) * w + j] > dp[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            let match_len = a_end - a_start + 1;
            if get_idx && (min_len == 0 || match_len as i64 >= min_len) {
                let mut item = vec![
                    Reply::Array(vec![Reply::Int(a_start as i64), Reply::Int(a_end as i64)]),
                    Reply::Array(vec![Reply::Int(b_start as i64), Reply::Int(b_end as i64)]),
                ];
                if with_len {
                    item.push(Reply::Int(match_len as i64));
                }
                ranges.push(Reply::Array(item));
            }
            a_start = alen;
        }
    }
    if get_idx {
        return Ok(Reply::Map(vec![
            (Reply::bulk_str("matches"), Reply::Array(ranges)),
            (Reply::bulk_str("len"), Reply::Int(i64::from(total))),
        ]));
    }
    Ok(Reply::Bulk(Bytes::from(result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_redis_thresholds() {
        let enc = |s: &str| string_encoding(&Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(enc("12345"), "int");
        assert_eq!(enc("-9223372036854775808"), "int");
        assert_eq!(enc("9223372036854775808"), "embstr");
        assert_eq!(enc("012"), "embstr");
        assert_eq!(enc(""), "embstr");
        assert_eq!(enc(&"x".repeat(44)), "embstr");
        assert_eq!(enc(&"x".repeat(45)), "raw");
    }
}
