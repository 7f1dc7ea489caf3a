//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Queued commands run in EXEC under the same store lock as EXEC itself, so a
//! transaction is atomic; blocked readers woken by it are served once, after
//! EXEC returns (the caller serves ready keys after the whole command).

use super::{Ctx, Dispatch, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("multi", multi),
    ("exec", exec),
    ("discard", discard),
    ("watch", watch),
    ("unwatch", unwatch),
];

fn set_multi_flag(ctx: &mut Ctx, n: i64) {
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.multi = n;
    }
}

fn multi(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_error = false;
    set_multi_flag(ctx, 0);
    Ok(Reply::ok())
}

fn end_transaction(ctx: &mut Ctx) {
    ctx.client.multi = None;
    ctx.client.multi_error = false;
    let watched = std::mem::take(&mut ctx.client.watched);
    ctx.store.unwatch_all(ctx.client.id, &watched);
    set_multi_flag(ctx, -1);
}

fn exec(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let Some(queue) = ctx.client.multi.take() else {
        return Err(CmdError::err("EXEC without MULTI"));
    };
    if ctx.client.multi_error {
        end_transaction(ctx);
        return Err(CmdError::Other(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    if ctx.store.is_dirty(ctx.client.id) {
        end_transaction(ctx);
        return Ok(Reply::NullArray);
    }
    // WATCHes end when EXEC starts: the transaction's own writes don't abort it.
    end_transaction(ctx);
    let mut replies = Vec::with_capacity(queue.len());
    ctx.in_exec = true;
    for argv in queue {
        let reply = match super::lookup(ctx.shared, &argv) {
            Ok(cmd) => match super::run(ctx, cmd, argv) {
                Dispatch::Reply(r) | Dispatch::Block(_, r) => r,
            },
            Err(e) => e.to_reply(),
        };
        replies.push(reply);
    }
    ctx.in_exec = false;
    Ok(Reply::Array(replies))
}

fn discard(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    if ctx.client.multi.is_none() {
        return Err(CmdError::err("DISCARD without MULTI"));
    }
    end_transaction(ctx);
    Ok(Reply::ok())
}

fn watch(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    if ctx.client.multi.is_some() {
        return Err(CmdError::err("WATCH inside MULTI is not allowed"));
    }
    let db = ctx.client.db;
    for k in a.rest().to_vec() {
        if !ctx.client.watched.iter().any(|(d, w)| *d == db && *w == k) {
            ctx.store.watch(ctx.client.id, db, k.clone());
            ctx.client.watched.push((db, k));
        }
    }
    Ok(Reply::ok())
}

fn unwatch(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let watched = std::mem::take(&mut ctx.client.watched);
    ctx.store.unwatch_all(ctx.client.id, &watched);
    Ok(Reply::ok())
}
