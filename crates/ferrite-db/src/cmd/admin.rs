//! Server administration: CONFIG, COMMAND, TIME, SHUTDOWN, LASTSAVE (INFO
//! is in `server_info.rs`).

use super::conn::help;
use super::{table, Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("config|get", config_get),
    ("config|set", config_set),
    ("config|resetstat", config_resetstat),
    ("config|help", config_help),
    ("command", command),
    ("command|count", command_count),
    ("command|info", command_info),
    ("command|docs", command_docs),
    ("command|list", command_list),
    ("command|help", command_help),
    ("command|getkeys", command_getkeys),
    ("command|getkeysandflags", command_getkeysandflags),
    ("time", time),
    ("shutdown", shutdown),
    ("lastsave", lastsave),
];

fn config_get(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let pats: Vec<Bytes> = a.rest().to_vec();
    let refs: Vec<&[u8]> = pats.iter().map(|p| &p[..]).collect();
    let found = ctx.shared.config.read().get_matching(&refs);
    Ok(Reply::Map(
        found
            .into_iter()
            .map(|(k, v)| (Reply::bulk(k), Reply::bulk(v)))
            .collect(),
    ))
}

fn config_set(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let rest = a.rest();
    if !rest.len().is_multiple_of(2) {
        return Err(CmdError::WrongArity("config|set".into()));
    }
    let pairs: Vec<(String, String)> = rest
        .chunks(2)
        .map(|p| {
            (
                String::from_utf8_lossy(&p[0]).into_owned(),
                String::from_utf8_lossy(&p[1]).into_owned(),
            )
        })
        .collect();
    ctx.shared
        .config
        .write()
        .set_runtime(&pairs)
        .map_err(|e| CmdError::Other(e.config_set_message()))?;
    let cfg = ctx.shared.config.read().clone();
    if let Some(p) = ctx.shared.persist.get() {
        p.set_fsync(cfg.appendfsync);
    }
    ctx.store.cache_budget = cfg.block_cache_size;
    ctx.store.slowlog.configure(&cfg);
    ctx.store.notify_flags = cfg.notify_keyspace_events;
    ctx.store.pubsub.limit = Some(cfg.pubsub_output_limit);
    if pairs
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("loglevel"))
    {
        if let Some(apply) = ctx.shared.loglevel_hook.get() {
            apply(&cfg.loglevel);
        }
    }
    // Block limits shape stored data: log them so replay rebuilds the same blocks.
    if pairs
        .iter()
        .any(|(k, _)| k.to_ascii_lowercase().starts_with("stream-node-"))
    {
        ctx.propagate(crate::persist::data_config_command(&cfg));
    }
    Ok(Reply::ok())
}

fn config_resetstat(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let s = &mut ctx.store.stats;
    s.commands.clear();
    s.errors.clear();
    s.total_commands = 0;
    s.total_connections = 0;
    s.rejected_connections = 0;
    s.total_error_replies = 0;
    s.keyspace_hits = 0;
    s.keyspace_misses = 0;
    Ok(Reply::ok())
}

fn config_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
        ],
    ))
}

fn command(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Array(
        super::top_level(ctx.shared)
            .map(|c| c.meta.info.clone())
            .collect(),
    ))
}

fn command_count(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(super::top_level(ctx.shared).count() as i64))
}

/// A built-in command by name, or one registered on this database.
fn find(ctx: &Ctx, name: &[u8]) -> Option<&'static super::Command> {
    table().get(name).or_else(|| ctx.shared.ext_command(name))
}

fn command_info(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let names = a.rest();
    if names.is_empty() {
        return command(ctx, a);
    }
    Ok(Reply::Array(
        names
            .iter()
            .map(|n| find(ctx, n).map_or(Reply::NullArray, |c| c.meta.info.clone()))
            .collect(),
    ))
}

fn command_getkeys(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    get_keys(ctx, a, false)
}

fn command_getkeysandflags(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    get_keys(ctx, a, true)
}

/// COMMAND GETKEYS / GETKEYSANDFLAGS command [arg...]: the keys the command
/// would touch, found from its key specs as Redis 7.0 does
/// (`getKeysSubcommandImpl`); SET and BITFIELD, whose keys' flags depend on
/// their options, get them as Redis's `setGetKeys`/`bitfieldGetKeys` say.
fn get_keys(ctx: &mut Ctx, a: &mut Args, with_flags: bool) -> Result<Reply, CmdError> {
    let argv: Vec<Bytes> = a.rest().to_vec();
    let Some(base) = argv.first().and_then(|n| find(ctx, n)) else {
        return Err(CmdError::err("Invalid command specified"));
    };
    // A container with a subcommand is the subcommand (Redis's lookupCommand).
    let cmd = if base.meta.subcommands.is_empty() || argv.len() < 2 {
        base
    } else {
        let full = format!(
            "{}|{}",
            base.meta.name,
            String::from_utf8_lossy(&argv[1]).to_ascii_lowercase()
        );
        table()
            .commands
            .get(&full)
            .ok_or_else(|| CmdError::err("Invalid command specified"))?
    };
    let specs = &cmd.meta.key_specs;
    if !specs
        .iter()
        .any(|s| !s.flags.iter().any(|f| f == "not_key"))
    {
        return Err(CmdError::err("The command has no key arguments"));
    }
    let argc = argv.len() as i64;
    let arity = cmd.meta.arity;
    if (arity > 0 && arity != argc) || argc < -arity {
        return Err(CmdError::err(
            "Invalid number of arguments specified for command",
        ));
    }
    let Some(keys) = super::keyspec::get_keys(specs, &argv) else {
        if cmd.meta.has_flag("no_mandatory_keys") {
            return Ok(Reply::Array(Vec::new()));
        }
        return Err(CmdError::err("Invalid arguments specified for command"));
    };
    let variable = |spec: usize| -> Option<&'static [&'static str]> {
        let flagged = specs[spec].flags.iter().any(|f| f == "variable_flags");
        match cmd.meta.name.as_str() {
            "set" if flagged => Some(
                if argv[3.min(argv.len())..]
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(b"get"))
                {
                    &["RW", "access", "update"]
                } else {
                    &["OW", "update"]
                },
            ),
            "bitfield" if flagged => Some(if bitfield_read_only(&argv) {
                &["RO", "access"]
            } else {
                &["RW", "access", "update"]
            }),
            _ => None,
        }
    };
    Ok(Reply::Array(
        keys.into_iter()
            .map(|(pos, spec)| {
                let key = Reply::Bulk(argv[pos].clone());
                if !with_flags {
                    return key;
                }
                let flags: Vec<Reply> = match variable(spec) {
                    Some(f) => f.iter().map(|x| Reply::simple(x)).collect(),
                    None => specs[spec]
                        .flags
                        .iter()
                        .map(|x| Reply::Simple(Bytes::from(x.clone())))
                        .collect(),
                };
                Reply::Array(vec![key, Reply::Set(flags)])
            })
            .collect(),
    ))
}

/// Redis's `bitfieldGetKeys`: whether a BITFIELD only reads.
fn bitfield_read_only(argv: &[Bytes]) -> bool {
    let mut i = 2;
    while i < argv.len() {
        let rem = argv.len() - i - 1;
        let arg = &argv[i];
        if arg.eq_ignore_ascii_case(b"get") && rem >= 2 {
            i += 2;
        } else if (arg.eq_ignore_ascii_case(b"set") || arg.eq_ignore_ascii_case(b"incrby"))
            && rem >= 3
        {
            return false;
        } else if arg.eq_ignore_ascii_case(b"overflow") && rem >= 1 {
            i += 1;
        } else {
            return false;
        }
        i += 1;
    }
    true
}

fn command_docs(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let names = a.rest().to_vec();
    let pairs: Vec<(Reply, Reply)> = if names.is_empty() {
        super::top_level(ctx.shared)
            .map(|c| (Reply::bulk_str(&c.meta.name), c.meta.docs.clone()))
            .collect()
    } else {
        names
            .iter()
            .filter_map(|n| {
                find(ctx, n).map(|c| (Reply::bulk_str(&c.meta.name), c.meta.docs.clone()))
            })
            .collect()
    };
    Ok(Reply::Map(pairs))
}

fn command_list(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let t = table();
    let mut filter: Option<(String, Bytes)> = None;
    if a.remaining() > 0 {
        if !a.eat("FILTERBY") || a.remaining() != 2 {
            return Err(CmdError::Syntax);
        }
        let kind = String::from_utf8_lossy(&a.next_bytes()?).to_ascii_lowercase();
        if !matches!(kind.as_str(), "module" | "aclcat" | "pattern") {
            return Err(CmdError::Syntax);
        }
        filter = Some((kind, a.next_bytes()?));
    }
    let names = t
        .commands
        .values()
        .filter(|c| match &filter {
            None => true,
            Some((k, v)) if k == "pattern" => {
                crate::glob::glob_match(v, c.meta.name.as_bytes(), true)
            }
            Some((k, v)) if k == "aclcat" => {
                let cat = format!("@{}", String::from_utf8_lossy(v).to_ascii_lowercase());
                match &c.meta.info {
                    Reply::Array(f) => match f.get(6) {
                        Some(Reply::Set(cats)) | Some(Reply::Array(cats)) => cats.iter().any(|x| {
                            matches!(x, Reply::Simple(s) | Reply::Bulk(s) if s.as_ref() == cat.as_bytes())
                        }),
                        _ => false,
                    },
                    _ => false,
                }
            }
            _ => false,
        })
        .map(|c| Reply::bulk_str(&c.meta.name))
        .collect();
    Ok(Reply::Array(names))
}

fn command_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
        ],
    ))
}

fn time(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let _ = ctx;
    Ok(Reply::Array(vec![
        Reply::bulk_str(&now.as_secs().to_string()),
        Reply::bulk_str(&now.subsec_micros().to_string()),
    ]))
}

fn shutdown(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut abort = false;
    while a.remaining() > 0 {
        if a.eat("NOSAVE") || a.eat("SAVE") || a.eat("NOW") || a.eat("FORCE") {
            continue;
        }
        if a.eat("ABORT") {
            abort = true;
            continue;
        }
        return Err(CmdError::Syntax);
    }
    if abort {
        return Err(CmdError::err("No shutdown in progress."));
    }
    tracing::info!("User requested shutdown...");
    ctx.client.shutdown = true;
    Ok(Reply::ok())
}

/// LASTSAVE: the end of the last checkpoint that succeeded, or the start.
fn lastsave(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(super::server_info::last_save_unix(ctx) as i64))
}
