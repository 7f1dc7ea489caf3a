//! Server commands that client libraries and test harnesses send at
//! start-up, answered as a standalone Redis 7.0 master without scripting
//! or cluster support answers them: ROLE, CLUSTER (every subcommand:
//! "cluster support disabled"), FUNCTION LIST and FUNCTION FLUSH (no
//! functions can exist: there is no scripting). INFO's `# Modules`,
//! `# Cluster` and replication fields are in `admin.rs`.

use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("role", role),
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
