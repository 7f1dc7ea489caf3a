//! Time to live: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (NX, XX, GT, LT), TTL,
//! PTTL, EXPIRETIME, PEXPIRETIME, PERSIST, for keys of every type.
//!
//! Each command parses into an [`Expire`] and then applies it. What is
//! logged is absolute: `PEXPIREAT key ms`, or `DEL key` when the time is
//! already past (Redis's propagation), so replay at any later time gives
//! the same keyspace (see `crate::expire`).

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::NOTIFY_GENERIC;
use crate::reply::Reply;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("expire", expire),
    ("pexpire", pexpire),
    ("expireat", expireat),
    ("pexpireat", pexpireat),
    ("ttl", ttl),
    ("pttl", pttl),
    ("expiretime", expiretime),
    ("pexpiretime", pexpiretime),
    ("persist", persist),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// A parsed EXPIRE-family command: the key, its new absolute expiry in ms,
/// and the condition.
struct Expire {
    key: Bytes,
    when: i64,
    cond: Cond,
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

impl Expire {
    /// Redis's `expireGenericCommand` parse: flags first, then the number,
    /// then the overflow checks of the unit conversion and base addition.
    fn parse(a: &mut Args, name: &str, unit: Unit, base: i64) -> Result<Expire, CmdError> {
        let key = a.next_bytes()?;
        let raw = a.next_bytes()?;
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for opt in a.rest() {
            if opt.eq_ignore_ascii_case(b"nx") {
                nx = true;
            } else if opt.eq_ignore_ascii_case(b"xx") {
                xx = true;
            } else if opt.eq_ignore_ascii_case(b"gt") {
                gt = true;
            } else if opt.eq_ignore_ascii_case(b"lt") {
                lt = true;
            } else {
                return Err(CmdError::Other(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
        if nx && (xx || gt || lt) {
            return Err(CmdError::err(
                "NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        if gt && lt {
            return Err(CmdError::err(
                "GT and LT options at the same time are not compatible",
            ));
        }
        let cond = match (nx, xx, gt, lt) {
            (true, ..) => Cond::Nx,
            (_, _, true, _) => Cond::Gt,
            (_, _, _, true) => Cond::Lt,
            (_, true, ..) => Cond::Xx,
            _ => Cond::Always,
        };
        let invalid = || CmdError::Other(format!("ERR invalid expire time in '{name}' command"));
        let mut when = parse_i64(&raw).ok_or(CmdError::NotInteger)?;
        if let Unit::Seconds = unit {
            when = when.checked_mul(1000).ok_or_else(invalid)?;
        }
        let when = when.checked_add(base).ok_or_else(invalid)?;
        Ok(Expire { key, when, cond })
    }

    fn apply(self, ctx: &mut Ctx) -> Result<Reply, CmdError> {
        let db = ctx.client.db;
        if !ctx.store.dbs[db].contains(&self.key) {
            ctx.propagate_nothing();
            return Ok(Reply::Int(0));
        }
        let current = ctx.store.dbs[db].expiry(&self.key).map(|w| w as i64);
        let refused = match (self.cond, current) {
            (Cond::Nx, Some(_)) | (Cond::Xx, None) | (Cond::Gt, None) => true,
            (Cond::Gt, Some(c)) => self.when <= c,
            (Cond::Lt, Some(c)) => self.when >= c,
            _ => false,
        };
        if refused {
            ctx.propagate_nothing();
            return Ok(Reply::Int(0));
        }
        // Already past: the key goes now, logged as a deletion (not while
        // the log is replayed: then the time is set, as Redis's loading does).
        if self.when <= ctx.now_ms as i64 && !ctx.store.loading {
            ctx.db().remove(&self.key);
            ctx.touch(&self.key);
            ctx.notify(NOTIFY_GENERIC, "del", &self.key);
            ctx.propagate(vec![Bytes::from_static(b"DEL"), self.key]);
            return Ok(Reply::Int(1));
        }
        let when = self.when.max(0) as u64;
        ctx.db().set_expiry(&self.key, when);
        ctx.touch_watch_only(&self.key);
        ctx.notify(NOTIFY_GENERIC, "expire", &self.key);
        ctx.propagate(vec![
            Bytes::from_static(b"PEXPIREAT"),
            self.key,
            Bytes::from(when.to_string()),
        ]);
        Ok(Reply::Int(1))
    }
}

fn expire(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let now = ctx.now_ms as i64;
    Expire::parse(a, "expire", Unit::Seconds, now)?.apply(ctx)
}

fn pexpire(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let now = ctx.now_ms as i64;
    Expire::parse(a, "pexpire", Unit::Millis, now)?.apply(ctx)
}

fn expireat(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Expire::parse(a, "expireat", Unit::Seconds, 0)?.apply(ctx)
}

fn pexpireat(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Expire::parse(a, "pexpireat", Unit::Millis, 0)?.apply(ctx)
}

/// What TTL and friends report: -2 no key, -1 no expiry, else the expiry.
fn expiry_of(ctx: &mut Ctx, a: &mut Args) -> Result<Result<u64, i64>, CmdError> {
    let key = a.next_bytes()?;
    let db = ctx.db();
    if !db.contains(&key) {
        return Ok(Err(-2));
    }
    Ok(db.expiry(&key).ok_or(-1))
}

fn ttl_generic(ctx: &mut Ctx, a: &mut Args, ms: bool) -> Result<Reply, CmdError> {
    let now = ctx.now_ms;
    Ok(Reply::Int(match expiry_of(ctx, a)? {
        Err(code) => code,
        Ok(when) => {
            let left = when.saturating_sub(now) as i64;
            if ms {
                left
            } else {
                (left + 500) / 1000
            }
        }
    }))
}

fn ttl(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    ttl_generic(ctx, a, false)
}

fn pttl(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    ttl_generic(ctx, a, true)
}

fn expiretime(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(match expiry_of(ctx, a)? {
        Err(code) => code,
        Ok(when) => (when / 1000) as i64,
    }))
}

fn pexpiretime(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(match expiry_of(ctx, a)? {
        Err(code) => code,
        Ok(when) => when as i64,
    }))
}

fn persist(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if ctx.db().persist(&key) {
        ctx.touch_watch_only(&key);
        ctx.notify(NOTIFY_GENERIC, "persist", &key);
        Ok(Reply::Int(1))
    } else {
        ctx.propagate_nothing();
        Ok(Reply::Int(0))
    }
}
