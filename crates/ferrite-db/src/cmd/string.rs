//! Plain string values: SET, GET, INCR.
//!
//! Ferrite is a stream database; strings exist so that the small values
//! applications keep beside their streams (offsets, flags, counters) work,
//! and so WRONGTYPE behaves as in Redis. Key expiry is not implemented, so
//! SET's EX/PX/EXAT/PXAT/KEEPTTL options are refused with an explicit error.

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::Value;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[("set", set), ("get", get), ("incr", incr)];

fn set(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let val = a.next_bytes()?;
    let (mut nx, mut xx, mut get) = (false, false, false);
    while let Some(opt) = a.peek().cloned() {
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"NX") && !xx {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"XX") && !nx {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"GET") {
            get = true;
        } else if [&b"EX"[..], b"PX", b"EXAT", b"PXAT", b"KEEPTTL"]
            .iter()
            .any(|o| opt.eq_ignore_ascii_case(o))
        {
            return Err(CmdError::err("Ferrite does not support key expiry"));
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let old = match ctx.db().get(&key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) if get => return Err(CmdError::WrongType),
        Some(_) => Some(Bytes::new()),
    };
    let exists = ctx.db().contains(&key);
    let reply_old = |old: Option<Bytes>| old.map_or(Reply::Null, Reply::Bulk);
    if (nx && exists) || (xx && !exists) {
        return Ok(if get { reply_old(old) } else { Reply::Null });
    }
    ctx.db().insert(key.clone(), Value::String(val));
    ctx.db().persist(&key);
    ctx.touch(&key);
    Ok(if get { reply_old(old) } else { Reply::ok() })
}

fn get(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    match ctx.db().get(&key) {
        None => Ok(Reply::Null),
        Some(Value::String(s)) => Ok(Reply::Bulk(s.clone())),
        Some(_) => Err(CmdError::WrongType),
    }
}

fn incr(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let cur = match ctx.db().get(&key) {
        None => 0,
        Some(Value::String(s)) => parse_i64(s).ok_or(CmdError::NotInteger)?,
        Some(_) => return Err(CmdError::WrongType),
    };
    let n = cur
        .checked_add(1)
        .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
    ctx.db()
        .insert(key.clone(), Value::String(Bytes::from(n.to_string())));
    ctx.touch(&key);
    Ok(Reply::Int(n))
}
