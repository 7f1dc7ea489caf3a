//! XINFO STREAM [FULL [COUNT n]] and XINFO HELP.

use super::conn::help;
use super::stream::{entries_reply, entry_reply, id_reply, stream_ref};
use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use ferrite_streams::{Stream, StreamId};

pub const COMMANDS: &[(&str, Handler)] =
    &[("xinfo|stream", xinfo_stream), ("xinfo|help", xinfo_help)];

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
            entries_reply(s.range(StreamId::MIN, StreamId::MAX, limit, false)),
        ));
        out.push(kv("groups", Reply::Array(vec![])));
    } else {
        out.push(kv("groups", Reply::Int(0)));
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
