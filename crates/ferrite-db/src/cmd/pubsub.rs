//! Pub/sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE,
//! PUBLISH, PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB/HELP.
//!
//! The state is `crate::pubsub::PubSub` in the store; delivery goes through
//! each client's `Outbox`, which the network layer drains. Subscribing
//! replies one frame per channel (a push in RESP3), so a command naming
//! several channels answers several frames, encoded here back to back.

use super::conn::help;
use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use bytes::{Bytes, BytesMut};

pub const COMMANDS: &[(&str, Handler)] = &[
    ("subscribe", subscribe),
    ("unsubscribe", unsubscribe),
    ("psubscribe", psubscribe),
    ("punsubscribe", punsubscribe),
    ("publish", publish),
    ("pubsub|channels", pubsub_channels),
    ("pubsub|numsub", pubsub_numsub),
    ("pubsub|numpat", pubsub_numpat),
    ("pubsub|shardchannels", pubsub_shardchannels),
    ("pubsub|shardnumsub", pubsub_shardnumsub),
    ("pubsub|help", pubsub_help),
];

/// `[kind, name, count]` (Redis's `addReplyPubsub(Un)Subscribed`); a null
/// name for an UNSUBSCRIBE of nothing.
fn frame(kind: &'static str, name: Option<Bytes>, count: usize) -> Reply {
    Reply::Push(vec![
        Reply::bulk_str(kind),
        name.map_or(Reply::Null, Reply::Bulk),
        Reply::Int(count as i64),
    ])
}

/// Several frames as one reply: one frame stays typed; more are encoded for
/// the client's protocol, back to back (also inside EXEC, as in Redis).
fn frames(ctx: &Ctx, list: Vec<Reply>) -> Reply {
    if list.len() == 1 {
        if let Some(r) = list.into_iter().next() {
            return r;
        }
        return Reply::Raw(Bytes::new());
    }
    let mut out = BytesMut::new();
    for r in &list {
        r.encode(ctx.client.resp, &mut out);
    }
    Reply::Raw(out.freeze())
}

fn outbox(ctx: &Ctx) -> Option<std::sync::Arc<crate::pubsub::Outbox>> {
    ctx.store
        .clients
        .get(&ctx.client.id)
        .and_then(|c| c.outbox.clone())
}

fn subscribe(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let ob = outbox(ctx);
    let id = ctx.client.id;
    let list = a
        .rest()
        .iter()
        .map(|ch| {
            let n = ctx.store.pubsub.subscribe(id, ob.clone(), ch.clone());
            frame("subscribe", Some(ch.clone()), n)
        })
        .collect();
    Ok(frames(ctx, list))
}

fn psubscribe(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let ob = outbox(ctx);
    let id = ctx.client.id;
    let list = a
        .rest()
        .iter()
        .map(|p| {
            let n = ctx.store.pubsub.psubscribe(id, ob.clone(), p.clone());
            frame("psubscribe", Some(p.clone()), n)
        })
        .collect();
    Ok(frames(ctx, list))
}

fn unsubscribe(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let id = ctx.client.id;
    let mut names = a.rest().to_vec();
    if names.is_empty() {
        names = ctx.store.pubsub.channels_of(id);
        if names.is_empty() {
            let n = ctx.store.pubsub.count(id);
            return Ok(frame("unsubscribe", None, n));
        }
    }
    let list = names
        .into_iter()
        .map(|ch| {
            let n = ctx.store.pubsub.unsubscribe(id, &ch);
            frame("unsubscribe", Some(ch), n)
        })
        .collect();
    Ok(frames(ctx, list))
}

fn punsubscribe(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let id = ctx.client.id;
    let mut names = a.rest().to_vec();
    if names.is_empty() {
        names = ctx.store.pubsub.patterns_of(id);
        if names.is_empty() {
            let n = ctx.store.pubsub.count(id);
            return Ok(frame("punsubscribe", None, n));
        }
    }
    let list = names
        .into_iter()
        .map(|p| {
            let n = ctx.store.pubsub.punsubscribe(id, &p);
            frame("punsubscribe", Some(p), n)
        })
        .collect();
    Ok(frames(ctx, list))
}

fn publish(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let channel = a.next_bytes()?;
    let msg = a.next_bytes()?;
    let n = ctx.store.pubsub.publish(&channel, &msg);
    Ok(Reply::Int(n as i64))
}

fn pubsub_channels(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let pat = match a.remaining() {
        0 => None,
        1 => Some(a.next_bytes()?),
        _ => return Err(syntax_error(a)),
    };
    let list = ctx.store.pubsub.active_channels(pat.as_deref());
    Ok(Reply::Array(list.into_iter().map(Reply::Bulk).collect()))
}

/// Redis's `addReplySubcommandSyntaxError`, naming the subcommand as typed.
fn syntax_error(a: &Args) -> CmdError {
    let sub = a.all().get(1).cloned().unwrap_or_default();
    CmdError::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
        crate::error::sanitize_arg(&sub)
    ))
}

fn pubsub_numsub(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut out = Vec::new();
    for ch in a.rest() {
        out.push(Reply::Bulk(ch.clone()));
        out.push(Reply::Int(ctx.store.pubsub.numsub(ch) as i64));
    }
    Ok(Reply::Array(out))
}

fn pubsub_numpat(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(ctx.store.pubsub.numpat() as i64))
}

/// Sharded pub/sub (SSUBSCRIBE) is not implemented: no shard channel is
/// ever active.
fn pubsub_shardchannels(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    if a.remaining() > 1 {
        return Err(syntax_error(a));
    }
    Ok(Reply::Array(Vec::new()))
}

fn pubsub_shardnumsub(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut out = Vec::new();
    for ch in a.rest() {
        out.push(Reply::Bulk(ch.clone()));
        out.push(Reply::Int(0));
    }
    Ok(Reply::Array(out))
}

fn pubsub_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
        ],
    ))
}
