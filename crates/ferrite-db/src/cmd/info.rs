//! XINFO STREAM [FULL [COUNT n]], XINFO GROUPS, XINFO CONSUMERS and XINFO HELP.

use super::conn::help;
use super::stream::{entry_reply, id_reply, stream_ref};
use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use ferrite_streams::{Group, Stream, StreamId};

pub const COMMANDS: &[(&str, Handler)] = &[
    ("xinfo|stream", xinfo_stream),
    ("xinfo|groups", xinfo_groups),
    ("xinfo|consumers", xinfo_consumers),
    ("xinfo|help", xinfo_help),
];

fn kv(k: &str, v: Reply) -> (Reply, Reply) {
    (Reply::bulk_str(k), v)
}

/// `radix-tree-nodes`: Redis reports its rax's internal node count, which
/// depends on rax internals; Ferrite reports the nodes a radix tree over the
/// blocks' 16-byte keys needs at least (one per block plus the root).
fn tree_nodes(s: &Stream) -> i64 {
    s.block_count() as i64 + 1
}

fn header(s: &Stream) -> Vec<(Reply, Reply)> {
    vec![
        kv("length", Reply::Int(s.len() as i64)),
        kv("radix-tree-keys", Reply::Int(s.block_count() as i64)),
        kv("radix-tree-nodes", Reply::Int(tree_nodes(s))),
        kv("last-generated-id", id_reply(s.last_id())),
        kv("max-deleted-entry-id", id_reply(s.max_deleted_id())),
        kv("entries-added", Reply::Int(s.entries_added() as i64)),
        kv("recorded-first-entry-id", id_reply(s.first_id())),
    ]
}

fn xinfo_stream(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let sub = a.all().get(1).cloned().unwrap_or_default();
    let key = a.next_bytes()?;
    let mut full = false;
    let mut count: usize = 10;
    // Redis's addReplySubcommandSyntaxError, naming the subcommand as typed.
    let syntax = || {
        CmdError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
            crate::error::sanitize_arg(&sub)
        ))
    };
    if a.remaining() > 0 {
        if !(a.remaining() == 1 || a.remaining() == 3) || !a.eat("FULL") {
            return Err(syntax());
        }
        full = true;
        if a.remaining() > 0 {
            if !a.eat("COUNT") {
                return Err(syntax());
            }
            let n = a.next_i64()?;
            count = if n <= 0 {
                0
            } else {
                usize::try_from(n).unwrap_or(usize::MAX)
            };
        }
    }
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    let mut out = header(s);
    if full {
        let limit = if count == 0 { None } else { Some(count) };
        out.push(kv(
            "entries",
            crate::reply::encode_entries(
                s.iter_range(StreamId::MIN, StreamId::MAX, false)
                    .take(limit.unwrap_or(usize::MAX)),
            ),
        ));
        out.push(kv("groups", full_groups(s, limit)));
    } else {
        out.push(kv("groups", Reply::Int(s.group_count() as i64)));
        out.push(kv(
            "first-entry",
            s.first_entry().map_or(Reply::Null, entry_reply),
        ));
        out.push(kv(
            "last-entry",
            s.last_entry().map_or(Reply::Null, entry_reply),
        ));
    }
    Ok(Reply::Map(out))
}

/// `entries-read`: a nil when unknown.
fn entries_read_reply(g: &Group) -> Reply {
    g.entries_read().map_or(Reply::Null, Reply::Int)
}

/// `lag`: a nil when it cannot be known.
fn lag_reply(s: &Stream, g: &Group) -> Reply {
    g.lag(s).map_or(Reply::Null, Reply::Int)
}

/// The `groups` section of XINFO STREAM FULL: each group with its PEL and
/// consumers, PELs cut to `limit` entries (`None` = all).
fn full_groups(s: &Stream, limit: Option<usize>) -> Reply {
    let limit = limit.unwrap_or(usize::MAX);
    let Some(groups) = s.groups() else {
        return Reply::Array(vec![]);
    };
    let out = groups
        .iter()
        .map(|(name, g)| {
            let pel = g
                .pending_range(StreamId::MIN, StreamId::MAX)
                .take(limit)
                .map(|p| {
                    Reply::Array(vec![
                        id_reply(p.id),
                        Reply::Bulk(g.consumer_name(p.consumer).clone()),
                        Reply::Int(p.delivery_time as i64),
                        Reply::Int(p.delivery_count as i64),
                    ])
                })
                .collect();
            let consumers = g
                .consumers()
                .filter_map(|c| {
                    let cid = g.consumer_id(c.name())?;
                    let pel = g
                        .consumer_pending_range(cid, StreamId::MIN, StreamId::MAX)
                        .take(limit)
                        .map(|p| {
                            Reply::Array(vec![
                                id_reply(p.id),
                                Reply::Int(p.delivery_time as i64),
                                Reply::Int(p.delivery_count as i64),
                            ])
                        })
                        .collect();
                    Some(Reply::Map(vec![
                        kv("name", Reply::Bulk(c.name().clone())),
                        kv("seen-time", Reply::Int(c.seen_time() as i64)),
                        kv("pel-count", Reply::Int(c.pending_count() as i64)),
                        kv("pending", Reply::Array(pel)),
                    ]))
                })
                .collect();
            Reply::Map(vec![
                kv("name", Reply::Bulk(name.clone())),
                kv("last-delivered-id", id_reply(g.last_id())),
                kv("entries-read", entries_read_reply(g)),
                kv("lag", lag_reply(s, g)),
                kv("pel-count", Reply::Int(g.pending_count() as i64)),
                kv("pending", Reply::Array(pel)),
                kv("consumers", Reply::Array(consumers)),
            ])
        })
        .collect();
    Reply::Array(out)
}

fn xinfo_groups(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    let Some(groups) = s.groups() else {
        return Ok(Reply::Array(vec![]));
    };
    let out = groups
        .iter()
        .map(|(name, g)| {
            Reply::Map(vec![
                kv("name", Reply::Bulk(name.clone())),
                kv("consumers", Reply::Int(g.consumer_count() as i64)),
                kv("pending", Reply::Int(g.pending_count() as i64)),
                kv("last-delivered-id", id_reply(g.last_id())),
                kv("entries-read", entries_read_reply(g)),
                kv("lag", lag_reply(s, g)),
            ])
        })
        .collect();
    Ok(Reply::Array(out))
}

fn xinfo_consumers(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let gname = a.next_bytes()?;
    let now = ctx.now_ms as i64;
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    let Some(g) = s.group(&gname) else {
        return Err(super::group::no_group_for_key(&gname, &key));
    };
    let out = g
        .consumers()
        .map(|c| {
            Reply::Map(vec![
                kv("name", Reply::Bulk(c.name().clone())),
                kv("pending", Reply::Int(c.pending_count() as i64)),
                kv(
                    "idle",
                    Reply::Int(now.wrapping_sub(c.seen_time() as i64).max(0)),
                ),
            ])
        })
        .collect();
    Ok(Reply::Array(out))
}

fn xinfo_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
    ))
}
