//! Server administration: CONFIG, INFO, COMMAND, TIME, SHUTDOWN, LASTSAVE.

use super::conn::{help, REDIS_COMPAT_VERSION};
use super::{table, Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::Value;
use bytes::Bytes;
use std::fmt::Write;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("config|get", config_get),
    ("config|set", config_set),
    ("config|resetstat", config_resetstat),
    ("config|help", config_help),
    ("info", info),
    ("command", command),
    ("command|count", command_count),
    ("command|info", command_info),
    ("command|docs", command_docs),
    ("command|list", command_list),
    ("command|help", command_help),
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

/// Resident set size of this process in bytes (0 where /proc is unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// Every INFO section Ferrite has, in Redis 7.0's order.
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "cluster",
    "keyspace",
];

/// Redis's default sections: all of them but commandstats.
fn default_sections() -> impl Iterator<Item = &'static &'static str> {
    ALL_SECTIONS.iter().filter(|s| **s != "commandstats")
}

fn info(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut wanted: Vec<&str> = Vec::new();
    let args: Vec<String> = a
        .rest()
        .iter()
        .map(|b| String::from_utf8_lossy(b).to_ascii_lowercase())
        .collect();
    if args.is_empty() {
        wanted.extend(default_sections());
    }
    for s in &args {
        match s.as_str() {
            "all" | "everything" => wanted.extend(ALL_SECTIONS),
            "default" => wanted.extend(default_sections()),
            other => {
                if let Some(x) = ALL_SECTIONS.iter().find(|x| **x == other) {
                    wanted.push(x);
                }
            }
        }
    }
    let mut out = String::new();
    for section in ALL_SECTIONS {
        if !wanted.contains(section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        info_section(ctx, section, &mut out);
    }
    // Subsystems' sections (pipelines): with the defaults and by name.
    let defaults = args.is_empty()
        || args
            .iter()
            .any(|a| matches!(a.as_str(), "all" | "everything" | "default"));
    for (name, write) in ctx.shared.info_sections() {
        if defaults || args.contains(&name) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            write(ctx.store, ctx.now_ms, &mut out);
        }
    }
    Ok(Reply::Verbatim(Bytes::from(out)))
}

fn info_section(ctx: &mut Ctx, section: &str, out: &mut String) {
    let cfg = ctx.shared.config.read().clone();
    let uptime = ctx.shared.started.elapsed().as_secs();
    let st = &ctx.store;
    match section {
        "server" => {
            out.push_str("# Server\r\n");
            kv(out, "redis_version", &REDIS_COMPAT_VERSION);
            kv(out, "ferrite_version", &env!("CARGO_PKG_VERSION"));
            kv(out, "redis_mode", &"standalone");
            kv(out, "os", &std::env::consts::OS);
            kv(out, "arch_bits", &64);
            kv(out, "process_id", &std::process::id());
            kv(out, "run_id", &ctx.shared.run_id);
            kv(
                out,
                "tcp_port",
                &ctx.shared
                    .tcp_port
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            kv(out, "server_time_usec", &(ctx.now_ms * 1000));
            kv(out, "uptime_in_seconds", &uptime);
            kv(out, "uptime_in_days", &(uptime / 86400));
            kv(
                out,
                "executable",
                &std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            kv(
                out,
                "config_file",
                &cfg.config_file.clone().unwrap_or_default(),
            );
        }
        "clients" => {
            out.push_str("# Clients\r\n");
            kv(out, "connected_clients", &st.clients.len());
            kv(out, "cluster_connections", &0);
            kv(out, "maxclients", &cfg.maxclients);
            kv(out, "client_recent_max_input_buffer", &0);
            kv(out, "client_recent_max_output_buffer", &0);
            kv(out, "blocked_clients", &st.blocked_clients());
            kv(out, "tracking_clients", &0);
            kv(out, "clients_in_timeout_table", &st.blocked_clients());
        }
        "memory" => {
            let used: usize = st
                .dbs
                .iter()
                .flat_map(|d| d.iter())
                .map(|(k, v)| {
                    k.len()
                        + match v {
                            Value::Stream(s) => {
                                s.memory_usage() + s.groups().map_or(0, |g| g.memory_usage())
                            }
                            Value::String(b) => b.len(),
                            Value::Hash(h) => h.memory_usage(),
                            Value::Set(v) => v.memory_usage(),
                            Value::ZSet(z) => z.memory_usage(),
                            Value::List(l) => l.memory_usage(),
                        }
                })
                .sum();
            let rss = rss_bytes();
            out.push_str("# Memory\r\n");
            kv(out, "used_memory", &used);
            kv(out, "used_memory_human", &human(used as u64));
            kv(out, "used_memory_rss", &rss);
            kv(out, "used_memory_rss_human", &human(rss));
            kv(out, "maxmemory", &0);
            kv(out, "maxmemory_human", &"0B");
            kv(out, "maxmemory_policy", &"noeviction");
            kv(out, "mem_allocator", &"libc");
        }
        "persistence" => {
            out.push_str("# Persistence\r\n");
            kv(out, "loading", &0);
            kv(out, "async_loading", &0);
            kv(out, "rdb_changes_since_last_save", &st.dirty);
            kv(out, "rdb_bgsave_in_progress", &0);
            kv(out, "rdb_last_bgsave_status", &"ok");
            let p = ctx.shared.persist.get();
            kv(out, "aof_enabled", &(p.is_some() as u8));
            kv(
                out,
                "aof_rewrite_in_progress",
                &p.map_or(0, |p| p.checkpoint_running() as u8),
            );
            kv(
                out,
                "aof_last_write_status",
                &if ctx.shared.write_error().is_some() {
                    "err"
                } else {
                    "ok"
                },
            );
            kv(out, "appendfsync", &cfg.appendfsync.as_str());
            kv(
                out,
                "commit_log_bytes_since_checkpoint",
                &p.map_or(0, |p| p.log_bytes()),
            );
            if let Some(ls) = p.map(|p| p.log_stats()) {
                // How well group commit works: records per write and per fsync.
                kv(out, "commit_log_records", &ls.records);
                kv(out, "commit_log_writes", &ls.batches);
                kv(out, "commit_log_mapped_records", &ls.mapped_records);
                kv(out, "commit_log_fsyncs", &ls.fsyncs);
                kv(
                    out,
                    "commit_log_fsync_usec_total",
                    &(ls.fsync_nanos_total / 1000),
                );
                kv(
                    out,
                    "commit_log_fsync_usec_max",
                    &(ls.fsync_nanos_max / 1000),
                );
            }
            kv(
                out,
                "checkpoints_written",
                &p.map_or(0, |p| {
                    p.checkpoints_done
                        .load(std::sync::atomic::Ordering::Relaxed)
                }),
            );
            // Stream blocks: all, resident (open, not yet stored, or cached),
            // and the cache of stored blocks (see docs/storage.md).
            let (mut blocks, mut resident, mut resident_bytes) = (0usize, 0usize, 0usize);
            for db in &st.dbs {
                for (_, v) in db.iter() {
                    if let Value::Stream(s) = v {
                        blocks += s.block_count();
                        let (n, b) = s.resident();
                        resident += n;
                        resident_bytes += b;
                    }
                }
            }
            kv(out, "stream_blocks", &blocks);
            kv(out, "stream_blocks_resident", &resident);
            kv(out, "stream_blocks_resident_bytes", &resident_bytes);
            kv(out, "block_cache_size", &cfg.block_cache_size);
            kv(out, "block_cache_stored_resident_bytes", &st.cache_counted);
            kv(
                out,
                "block_cache_loads",
                &st.block_cache.as_ref().map_or(0, |c| c.loads()),
            );
            kv(
                out,
                "block_cache_prefetched_loads",
                &st.block_cache.as_ref().map_or(0, |c| c.prefetched()),
            );
            kv(out, "block_cache_evicted_bytes", &st.cache_evicted_bytes);
        }
        "stats" => {
            out.push_str("# Stats\r\n");
            kv(
                out,
                "total_connections_received",
                &st.stats.total_connections,
            );
            kv(out, "total_commands_processed", &st.stats.total_commands);
            kv(out, "instantaneous_ops_per_sec", &0);
            kv(out, "rejected_connections", &st.stats.rejected_connections);
            kv(out, "expired_keys", &st.stats.expired_keys);
            kv(out, "evicted_keys", &0);
            kv(out, "keyspace_hits", &st.stats.keyspace_hits);
            kv(out, "keyspace_misses", &st.stats.keyspace_misses);
            kv(out, "pubsub_channels", &0);
            kv(out, "pubsub_patterns", &0);
            kv(out, "total_error_replies", &st.stats.total_error_replies);
            kv(out, "total_blocking_keys", &st.blocked_clients());
        }
        "replication" => {
            out.push_str("# Replication\r\n");
            kv(out, "role", &"master");
            kv(out, "connected_slaves", &0);
            kv(out, "master_failover_state", &"no-failover");
            kv(out, "master_replid", &ctx.shared.run_id);
            kv(out, "master_replid2", &"0".repeat(40));
            kv(out, "master_repl_offset", &0);
            kv(out, "second_repl_offset", &-1);
            kv(out, "repl_backlog_active", &0);
            kv(out, "repl_backlog_size", &1048576);
            kv(out, "repl_backlog_first_byte_offset", &0);
            kv(out, "repl_backlog_histlen", &0);
        }
        // No modules can be loaded; client libraries look for the section.
        "modules" => out.push_str("# Modules\r\n"),
        // Client libraries and harnesses read `cluster_enabled` at start-up.
        "cluster" => {
            out.push_str("# Cluster\r\n");
            kv(out, "cluster_enabled", &0);
        }
        "cpu" => {
            out.push_str("# CPU\r\n");
            let (u, s) = cpu_times();
            kv(out, "used_cpu_sys", &format!("{s:.6}"));
            kv(out, "used_cpu_user", &format!("{u:.6}"));
        }
        "commandstats" => {
            out.push_str("# Commandstats\r\n");
            for (name, c) in &st.stats.commands {
                let per = if c.calls > 0 {
                    c.usec as f64 / c.calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "cmdstat_{name}:calls={},usec={},usec_per_call={per:.2},rejected_calls={},failed_calls={}\r\n",
                    c.calls, c.usec, c.rejected_calls, c.failed_calls
                );
            }
        }
        "errorstats" => {
            out.push_str("# Errorstats\r\n");
            for (code, n) in &st.stats.errors {
                let _ = write!(out, "errorstat_{code}:count={n}\r\n");
            }
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            for (i, db) in st.dbs.iter().enumerate() {
                if !db.is_empty() {
                    let _ = write!(
                        out,
                        "db{i}:keys={},expires={},avg_ttl={}\r\n",
                        db.len(),
                        db.expires().len(),
                        avg_ttl(db, ctx.now_ms)
                    );
                }
            }
        }
        _ => {}
    }
}

/// The mean time to live of the keys that have one, in ms: an estimate
/// from at most 1,024 of them, as Redis keeps one from its expiry samples
/// (INFO runs under the store lock: no walk over millions of keys).
fn avg_ttl(db: &crate::store::Db, now_ms: u64) -> u64 {
    let ttls: Vec<u128> = db
        .expires()
        .iter()
        .take(1024)
        .map(|(_, when)| when.saturating_sub(now_ms) as u128)
        .collect();
    match ttls.len() {
        0 => 0,
        n => (ttls.iter().sum::<u128>() / n as u128) as u64,
    }
}

fn kv(out: &mut String, k: &str, v: &dyn std::fmt::Display) {
    let _ = write!(out, "{k}:{v}\r\n");
}

/// User and system CPU seconds of this process, from /proc/self/stat.
fn cpu_times() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may contain spaces) start after ')'.
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
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

fn lastsave(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int((ctx.store.start_ms / 1000) as i64))
}
