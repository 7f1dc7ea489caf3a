//! Server commands that client libraries and test harnesses send at
//! start-up, answered as a standalone Redis 7.0 master without scripting
//! or cluster support answers them: ROLE, CLUSTER (every subcommand:
//! "cluster support disabled"), FUNCTION LIST and FUNCTION FLUSH (no
//! functions can exist: there is no scripting), OBJECT ENCODING, REFCOUNT
//! FREQ and IDLETIME, SAVE, BGSAVE and
//! BGREWRITEAOF (a checkpoint, which also compacts the commit log). INFO's `# Modules`,
//! `# Cluster` and replication fields are in `admin.rs`.

use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::Value;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("role", role),
    ("save", save),
    ("bgsave", bgsave),
    ("bgrewriteaof", bgrewriteaof),
    ("object|encoding", object_encoding),
    ("object|refcount", object_refcount),
    ("object|freq", object_freq),
    ("object|idletime", object_idletime),
    ("object|help", object_help),
    ("function|list", function_list),
    ("function|flush", function_flush),
    ("cluster|addslots", cluster),
    ("cluster|addslotsrange", cluster),
    ("cluster|bumpepoch", cluster),
    ("cluster|count-failure-reports", cluster),
    ("cluster|countkeysinslot", cluster),
    ("cluster|delslots", cluster),
    ("cluster|delslotsrange", cluster),
    ("cluster|failover", cluster),
    ("cluster|flushslots", cluster),
    ("cluster|forget", cluster),
    ("cluster|getkeysinslot", cluster),
    ("cluster|help", cluster),
    ("cluster|info", cluster),
    ("cluster|keyslot", cluster),
    ("cluster|links", cluster),
    ("cluster|meet", cluster),
    ("cluster|myid", cluster),
    ("cluster|nodes", cluster),
    ("cluster|replicas", cluster),
    ("cluster|replicate", cluster),
    ("cluster|reset", cluster),
    ("cluster|saveconfig", cluster),
    ("cluster|set-config-epoch", cluster),
    ("cluster|setslot", cluster),
    ("cluster|shards", cluster),
    ("cluster|slaves", cluster),
    ("cluster|slots", cluster),
];

/// A master with no replicas: `["master", <offset 0>, []]`.
fn role(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Array(vec![
        Reply::bulk_str("master"),
        Reply::Int(0),
        Reply::Array(Vec::new()),
    ]))
}

/// The commit log, or Redis's kind of refusal when persistence is off.
fn persistence(ctx: &Ctx) -> Result<std::sync::Arc<crate::persist::Persistence>, CmdError> {
    ctx.shared.persist.get().cloned().ok_or_else(|| {
        CmdError::err("persistence is off (appendonly no): there is nothing to save to")
    })
}

/// SAVE: a checkpoint written now, before the reply. Like Redis's SAVE it
/// holds up every other client until it is done (the store stays locked);
/// BGSAVE is the one to use.
fn save(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let p = persistence(ctx)?;
    let cfg = ctx.shared.config.read().clone();
    let Some((covered, body)) = p.begin_checkpoint(ctx.shared, ctx.store, &cfg) else {
        return Err(CmdError::err("Background save already in progress"));
    };
    let cache = ctx.store.block_cache.clone();
    p.finish_checkpoint(covered, body, cache.as_deref())
        .map_err(|e| CmdError::err(format!("checkpoint failed: {e}")))?;
    ctx.propagate_nothing();
    Ok(Reply::ok())
}

/// BGSAVE: a checkpoint on its own thread. (SCHEDULE is accepted but
/// schedules nothing: while one runs, the reply is the error, as without it.)
fn bgsave(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    match a.rest() {
        [] => {}
        [s] if s.eq_ignore_ascii_case(b"schedule") => {}
        _ => return Err(CmdError::Syntax),
    }
    let p = persistence(ctx)?;
    ctx.propagate_nothing();
    if p.start_checkpoint(ctx.shared, ctx.store) {
        return Ok(Reply::simple("Background saving started"));
    }
    Err(CmdError::err("Background save already in progress"))
}

/// BGREWRITEAOF: Ferrite's log is compacted by a checkpoint (the records it
/// covers are deleted).
fn bgrewriteaof(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let p = persistence(ctx)?;
    ctx.propagate_nothing();
    if p.start_checkpoint(ctx.shared, ctx.store) {
        Ok(Reply::simple(
            "Background append only file rewriting started",
        ))
    } else {
        Err(CmdError::err(
            "Background append only file rewriting already in progress",
        ))
    }
}

/// OBJECT ENCODING: the encoding Redis 7.0 would report for the value.
fn object_encoding(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(match ctx.db().get(&key) {
        None => Reply::Null,
        Some(Value::String(s)) => Reply::bulk_str(super::string::string_encoding(s)),
        Some(Value::Hash(h)) => Reply::bulk_str(h.encoding()),
        Some(Value::Set(v)) => Reply::bulk_str(v.encoding()),
        Some(Value::ZSet(z)) => Reply::bulk_str(z.encoding()),
        Some(Value::List(l)) => Reply::bulk_str(l.encoding()),
        Some(Value::Stream(_)) => Reply::bulk_str("stream"),
    })
}

/// OBJECT REFCOUNT: 1, except Redis's shared small integers (0 to 9999
/// stored as `int`), which report `INT_MAX`.
fn object_refcount(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(match ctx.db().get(&key) {
        None => Reply::Null,
        Some(Value::String(s)) if super::string::string_encoding(s) == "int" => {
            match crate::args::parse_i64(s) {
                Some(n) if (0..10_000).contains(&n) => Reply::Int(i32::MAX as i64),
                _ => Reply::Int(1),
            }
        }
        Some(_) => Reply::Int(1),
    })
}

fn object_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(super::conn::help(
        "OBJECT",
        &[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ],
    ))
}

/// OBJECT IDLETIME: seconds since the key was last read or written (the
/// commands that only inspect a key, like this one, do not count).
fn object_idletime(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(match ctx.db().idle_secs(&key) {
        Some(s) => Reply::Int(i64::try_from(s).unwrap_or(i64::MAX)),
        None => Reply::Null,
    })
}

/// OBJECT FREQ: only tracked under an LFU `maxmemory-policy`, which
/// Ferrite does not have: Redis's own refusal.
fn object_freq(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if !ctx.db().contains(&key) {
        return Ok(Reply::Null);
    }
    Err(CmdError::err(
        "An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
    ))
}

/// Redis 7.0 with `cluster-enabled no` refuses every CLUSTER subcommand.
fn cluster(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Err(CmdError::err("This instance has cluster support disabled"))
}

/// FUNCTION LIST [WITHCODE] [LIBRARYNAME pattern]: the options checked as
/// Redis's `functionListCommand` does; the library list is always empty.
fn function_list(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (mut with_code, mut library) = (false, false);
    while let Some(arg) = a.peek().cloned() {
        a.skip(1);
        if !with_code && arg.eq_ignore_ascii_case(b"withcode") {
            with_code = true;
        } else if !library && arg.eq_ignore_ascii_case(b"libraryname") {
            if a.remaining() == 0 {
                return Err(CmdError::err("library name argument was not given"));
            }
            a.skip(1);
            library = true;
        } else {
            return Err(CmdError::Other(format!(
                "ERR Unknown argument {}",
                crate::error::sanitize_arg(&arg)
            )));
        }
    }
    Ok(Reply::Array(Vec::new()))
}

/// FUNCTION FLUSH [ASYNC|SYNC]: there are no functions to remove.
fn function_flush(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let sub = a.all().get(1).cloned().unwrap_or_default();
    let rest = a.rest();
    let ok = match rest {
        [] => true,
        [mode] => mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync"),
        // Redis's `addReplySubcommandSyntaxError`, with the name as typed.
        _ => {
            return Err(CmdError::Other(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
                crate::error::sanitize_arg(&sub)
            )))
        }
    };
    if !ok {
        return Err(CmdError::err(
            "FUNCTION FLUSH only supports SYNC|ASYNC option",
        ));
    }
    // Nothing changed: nothing to log.
    ctx.propagate_nothing();
    Ok(Reply::ok())
}
