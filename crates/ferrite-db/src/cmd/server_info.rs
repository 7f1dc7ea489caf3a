//! INFO: every section Redis 7.0 prints by default, with its fields in
//! Redis's order, answered as a standalone master without scripting,
//! replication or an allocator of its own; then Ferrite's own fields
//! (commit log, stream blocks) and the subsystems' sections (pipelines).
//! Fields for what Ferrite does not have (forks, defragmentation, Lua,
//! replicas) are zero, as Redis prints them when those are idle.

use super::conn::REDIS_COMPAT_VERSION;
use super::{Ctx, Handler};
use crate::args::Args;
use crate::error::CmdError;
use crate::metrics::Rate;
use crate::reply::Reply;
use crate::store::Value;
use bytes::Bytes;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub const COMMANDS: &[(&str, Handler)] = &[("info", info)];

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
    "latencystats",
    "cluster",
    "keyspace",
];

/// Redis's default sections: all of them but commandstats and latencystats.
fn default_sections() -> impl Iterator<Item = &'static &'static str> {
    ALL_SECTIONS
        .iter()
        .filter(|s| !matches!(**s, "commandstats" | "latencystats"))
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
    let persist = ctx.shared.persist.get().cloned();
    let metrics = &ctx.shared.metrics;
    let st = &ctx.store;
    match section {
        "server" => {
            out.push_str("# Server\r\n");
            kv(out, "redis_version", &REDIS_COMPAT_VERSION);
            kv(out, "redis_git_sha1", &"00000000");
            kv(out, "redis_git_dirty", &0);
            kv(out, "redis_build_id", &build_id());
            kv(out, "redis_mode", &"standalone");
            kv(out, "os", &os_name());
            kv(out, "arch_bits", &(usize::BITS));
            kv(out, "monotonic_clock", &"POSIX clock_gettime");
            kv(out, "multiplexing_api", &"epoll");
            kv(out, "atomicvar_api", &"c11-builtin");
            // Not built by gcc: Redis prints 0.0.0 then.
            kv(out, "gcc_version", &"0.0.0");
            kv(out, "process_id", &std::process::id());
            kv(out, "process_supervised", &"no");
            kv(out, "run_id", &ctx.shared.run_id);
            kv(
                out,
                "tcp_port",
                &ctx.shared.tcp_port.load(Ordering::Relaxed),
            );
            kv(out, "server_time_usec", &(ctx.now_ms * 1000));
            kv(out, "uptime_in_seconds", &uptime);
            kv(out, "uptime_in_days", &(uptime / 86400));
            kv(out, "hz", &10);
            kv(out, "configured_hz", &10);
            kv(out, "lru_clock", &(crate::store::lru_clock() & 0xFF_FFFF));
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
            kv(out, "io_threads_active", &0);
            kv(out, "ferrite_version", &env!("CARGO_PKG_VERSION"));
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
            let dataset: usize = st
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
            // The keyspace's own tables: per key its index entry and slot,
            // per expiry its entry (estimates of the same kind as the
            // values' own).
            let keys: usize = st.dbs.iter().map(|d| d.len()).sum();
            let expires: usize = st.dbs.iter().map(|d| d.expires().len()).sum();
            let overhead = keys * KEY_OVERHEAD + expires * EXPIRY_OVERHEAD;
            let used = (dataset + overhead) as u64;
            let peak = metrics.peak(used);
            let rss = rss_bytes();
            let total = total_system_memory();
            out.push_str("# Memory\r\n");
            kv(out, "used_memory", &used);
            kv(out, "used_memory_human", &human(used));
            kv(out, "used_memory_rss", &rss);
            kv(out, "used_memory_rss_human", &human(rss));
            kv(out, "used_memory_peak", &peak);
            kv(out, "used_memory_peak_human", &human(peak));
            kv(out, "used_memory_peak_perc", &perc(used, peak));
            kv(out, "used_memory_overhead", &overhead);
            kv(out, "used_memory_startup", &0);
            kv(out, "used_memory_dataset", &dataset);
            kv(out, "used_memory_dataset_perc", &perc(dataset as u64, used));
            // The system allocator (Redis prints zeros for these without
            // jemalloc).
            kv(out, "allocator_allocated", &0);
            kv(out, "allocator_active", &0);
            kv(out, "allocator_resident", &0);
            kv(out, "total_system_memory", &total);
            kv(out, "total_system_memory_human", &human(total));
            // No scripting and no functions: nothing is allocated for them.
            for (k, v) in [
                ("used_memory_lua", "0"),
                ("used_memory_vm_eval", "0"),
                ("used_memory_lua_human", "0B"),
                ("used_memory_scripts_eval", "0"),
                ("number_of_cached_scripts", "0"),
                ("number_of_functions", "0"),
                ("number_of_libraries", "0"),
                ("used_memory_vm_functions", "0"),
                ("used_memory_vm_total", "0"),
                ("used_memory_vm_total_human", "0B"),
                ("used_memory_functions", "0"),
                ("used_memory_scripts", "0"),
                ("used_memory_scripts_human", "0B"),
            ] {
                kv(out, k, &v);
            }
            kv(out, "maxmemory", &0);
            kv(out, "maxmemory_human", &"0B");
            kv(out, "maxmemory_policy", &"noeviction");
            kv(out, "allocator_frag_ratio", &"1.00");
            kv(out, "allocator_frag_bytes", &0);
            kv(out, "allocator_rss_ratio", &"1.00");
            kv(out, "allocator_rss_bytes", &0);
            kv(out, "rss_overhead_ratio", &"1.00");
            kv(out, "rss_overhead_bytes", &0);
            kv(
                out,
                "mem_fragmentation_ratio",
                &format!("{:.2}", rss as f64 / used.max(1) as f64),
            );
            kv(out, "mem_fragmentation_bytes", &(rss as i64 - used as i64));
            kv(out, "mem_not_counted_for_evict", &0);
            kv(out, "mem_replication_backlog", &0);
            kv(out, "mem_total_replication_buffers", &0);
            kv(out, "mem_clients_slaves", &0);
            // Messages queued for subscribers, not yet written.
            let queued: u64 = st
                .clients
                .values()
                .filter_map(|c| c.outbox.as_ref())
                .map(|o| o.used())
                .sum();
            kv(out, "mem_clients_normal", &queued);
            kv(out, "mem_cluster_links", &0);
            kv(out, "mem_aof_buffer", &0);
            kv(out, "mem_allocator", &crate::store::allocator_name());
            // Freed memory given back to the system (`malloc_trim`).
            let (trims, trim_last, trim_max) = crate::store::trim_stats();
            kv(out, "mem_trims", &trims);
            kv(out, "mem_trim_usec_last", &trim_last);
            kv(out, "mem_trim_usec_max", &trim_max);
            kv(out, "active_defrag_running", &0);
            kv(out, "lazyfree_pending_objects", &0);
            kv(out, "lazyfreed_objects", &0);
        }
        "persistence" => {
            out.push_str("# Persistence\r\n");
            let cs = persist
                .as_ref()
                .map(|p| p.checkpoint_stats())
                .unwrap_or_default();
            let running = persist.as_ref().is_some_and(|p| p.checkpoint_running());
            let current = cs.started.map_or(-1, |t| t.elapsed().as_secs() as i64);
            let last_secs = cs.last_secs.map_or(-1, |s| s as i64);
            let status = if cs.last_failed { "err" } else { "ok" };
            let saves = persist
                .as_ref()
                .map_or(0, |p| p.checkpoints_done.load(Ordering::Relaxed));
            kv(out, "loading", &0);
            kv(out, "async_loading", &0);
            kv(out, "current_cow_peak", &0);
            kv(out, "current_cow_size", &0);
            kv(out, "current_cow_size_age", &0);
            kv(out, "current_fork_perc", &"0.00");
            kv(out, "current_save_keys_processed", &0);
            kv(out, "current_save_keys_total", &0);
            kv(out, "rdb_changes_since_last_save", &st.dirty);
            // A checkpoint is both Ferrite's BGSAVE and its BGREWRITEAOF:
            // harnesses waiting for either see it.
            kv(out, "rdb_bgsave_in_progress", &u8::from(running));
            kv(out, "rdb_last_save_time", &last_save_unix(ctx));
            kv(out, "rdb_last_bgsave_status", &status);
            kv(out, "rdb_last_bgsave_time_sec", &last_secs);
            kv(out, "rdb_current_bgsave_time_sec", &current);
            kv(out, "rdb_saves", &saves);
            kv(out, "rdb_last_cow_size", &0);
            kv(out, "rdb_last_load_keys_expired", &0);
            kv(out, "rdb_last_load_keys_loaded", &0);
            kv(out, "aof_enabled", &u8::from(persist.is_some()));
            kv(out, "aof_rewrite_in_progress", &u8::from(running));
            kv(out, "aof_rewrite_scheduled", &0);
            kv(out, "aof_last_rewrite_time_sec", &last_secs);
            kv(out, "aof_current_rewrite_time_sec", &current);
            kv(out, "aof_last_bgrewrite_status", &status);
            kv(out, "aof_rewrites", &saves);
            kv(
                out,
                "aof_rewrites_consecutive_failures",
                &cs.consecutive_failures,
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
            kv(out, "aof_last_cow_size", &0);
            kv(out, "module_fork_in_progress", &0);
            kv(out, "module_fork_last_cow_size", &0);
            if let Some(p) = &persist {
                kv(out, "aof_current_size", &p.log_bytes());
                kv(out, "aof_base_size", &0);
                kv(out, "aof_pending_rewrite", &0);
                kv(out, "aof_buffer_length", &0);
                kv(out, "aof_pending_bio_fsync", &0);
                kv(out, "aof_delayed_fsync", &0);
            }
            kv(out, "appendfsync", &cfg.appendfsync.as_str());
            kv(
                out,
                "commit_log_bytes_since_checkpoint",
                &persist.as_ref().map_or(0, |p| p.log_bytes()),
            );
            if let Some(ls) = persist.as_ref().map(|p| p.log_stats()) {
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
            kv(out, "checkpoints_written", &saves);
            // How long the last and the longest checkpoint snapshot held
            // the store lock (every command waits that long).
            kv(out, "checkpoint_lock_usec_last", &cs.lock_us_last);
            kv(out, "checkpoint_lock_usec_max", &cs.lock_us_max);
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
            let kbps = |r: Rate| format!("{:.2}", metrics.instantaneous(r) / 1024.0);
            kv(
                out,
                "total_connections_received",
                &st.stats.total_connections,
            );
            kv(out, "total_commands_processed", &st.stats.total_commands);
            kv(
                out,
                "instantaneous_ops_per_sec",
                &(metrics.instantaneous(Rate::Ops).round() as u64),
            );
            kv(
                out,
                "total_net_input_bytes",
                &metrics.net_input_bytes.load(Ordering::Relaxed),
            );
            kv(
                out,
                "total_net_output_bytes",
                &metrics.net_output_bytes.load(Ordering::Relaxed),
            );
            kv(out, "total_net_repl_input_bytes", &0);
            kv(out, "total_net_repl_output_bytes", &0);
            kv(out, "instantaneous_input_kbps", &kbps(Rate::Input));
            kv(out, "instantaneous_output_kbps", &kbps(Rate::Output));
            kv(out, "instantaneous_input_repl_kbps", &"0.00");
            kv(out, "instantaneous_output_repl_kbps", &"0.00");
            kv(out, "rejected_connections", &st.stats.rejected_connections);
            kv(out, "sync_full", &0);
            kv(out, "sync_partial_ok", &0);
            kv(out, "sync_partial_err", &0);
            kv(out, "expired_keys", &st.stats.expired_keys);
            kv(out, "expired_stale_perc", &"0.00");
            kv(out, "expired_time_cap_reached_count", &0);
            kv(out, "expire_cycle_cpu_milliseconds", &0);
            kv(out, "evicted_keys", &0);
            kv(out, "evicted_clients", &0);
            kv(out, "total_eviction_exceeded_time", &0);
            kv(out, "current_eviction_exceeded_time", &0);
            kv(out, "keyspace_hits", &st.stats.keyspace_hits);
            kv(out, "keyspace_misses", &st.stats.keyspace_misses);
            kv(out, "pubsub_channels", &st.pubsub.numchannels());
            kv(out, "pubsub_patterns", &st.pubsub.numpat());
            kv(out, "pubsubshard_channels", &0);
            kv(out, "latest_fork_usec", &0);
            kv(out, "total_forks", &0);
            kv(out, "migrate_cached_sockets", &0);
            kv(out, "slave_expires_tracked_keys", &0);
            kv(out, "active_defrag_hits", &0);
            kv(out, "active_defrag_misses", &0);
            kv(out, "active_defrag_key_hits", &0);
            kv(out, "active_defrag_key_misses", &0);
            kv(out, "total_active_defrag_time", &0);
            kv(out, "current_active_defrag_time", &0);
            kv(out, "tracking_total_keys", &0);
            kv(out, "tracking_total_items", &0);
            kv(out, "tracking_total_prefixes", &0);
            kv(out, "unexpected_error_replies", &0);
            kv(out, "total_error_replies", &st.stats.total_error_replies);
            kv(out, "dump_payload_sanitizations", &0);
            kv(
                out,
                "total_reads_processed",
                &metrics.reads.load(Ordering::Relaxed),
            );
            kv(
                out,
                "total_writes_processed",
                &metrics.writes.load(Ordering::Relaxed),
            );
            kv(out, "io_threaded_reads_processed", &0);
            kv(out, "io_threaded_writes_processed", &0);
            kv(out, "reply_buffer_shrinks", &0);
            kv(out, "reply_buffer_expands", &0);
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
            let (u, s) = cpu_times("/proc/self/stat");
            // The thread running this command (commands run one at a time).
            let (tu, ts) = cpu_times("/proc/thread-self/stat");
            kv(out, "used_cpu_sys", &format!("{s:.6}"));
            kv(out, "used_cpu_user", &format!("{u:.6}"));
            kv(out, "used_cpu_sys_children", &"0.000000");
            kv(out, "used_cpu_user_children", &"0.000000");
            kv(out, "used_cpu_sys_main_thread", &format!("{ts:.6}"));
            kv(out, "used_cpu_user_main_thread", &format!("{tu:.6}"));
        }
        "commandstats" => {
            out.push_str("# Commandstats\r\n");
            for (name, c) in sorted_stats(&st.stats.commands) {
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
        // Redis's `latency-tracking-info-percentiles` default: 50 99 99.9.
        "latencystats" => {
            out.push_str("# Latencystats\r\n");
            for (name, c) in sorted_stats(&st.stats.commands) {
                if c.latency.is_empty() {
                    continue;
                }
                let _ = write!(out, "latency_percentiles_usec_{name}:");
                for (i, (label, p)) in [("50", 50.0), ("99", 99.0), ("99.9", 99.9)]
                    .into_iter()
                    .enumerate()
                {
                    let sep = if i == 0 { "" } else { "," };
                    let usec = c.latency.percentile(p) as f64 / 1000.0;
                    let _ = write!(out, "{sep}p{label}={usec:.3}");
                }
                out.push_str("\r\n");
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

/// Estimated bytes of the keyspace's tables per key (index entry and slot)
/// and per expiry entry.
const KEY_OVERHEAD: usize = 64;
const EXPIRY_OVERHEAD: usize = 40;

/// `part` as a percentage of `whole`, as Redis prints it (`99.51%`).
fn perc(part: u64, whole: u64) -> String {
    format!("{:.2}%", part as f64 * 100.0 / whole.max(1) as f64)
}

/// LASTSAVE and `rdb_last_save_time`: the end of the last checkpoint that
/// succeeded, or the start of the server.
pub fn last_save_unix(ctx: &Ctx) -> u64 {
    ctx.shared
        .persist
        .get()
        .and_then(|p| p.checkpoint_stats().last_success_unix)
        .unwrap_or(ctx.store.start_ms / 1000)
}

/// A build id as Redis prints it (16 hex digits), from the version.
fn build_id() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in concat!("ferrite-", env!("CARGO_PKG_VERSION")).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `uname -s -r -m`, as Redis's `os` field (from /proc; the OS name alone
/// where it is not there).
fn os_name() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Some(t), Some(r)) => format!("{t} {r} {}", std::env::consts::ARCH),
        _ => std::env::consts::OS.to_string(),
    }
}

/// Bytes of physical memory (MemTotal in /proc/meminfo; 0 if unknown).
fn total_system_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
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

/// User and system CPU seconds from a /proc `stat` file (the process's or
/// a thread's).
fn cpu_times(path: &str) -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string(path) else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may contain spaces) start after ')'.
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
}

/// Per-command counters by name, as INFO lists them.
fn sorted_stats(
    m: &crate::store::NameMap<crate::store::CommandStats>,
) -> Vec<(&'static str, &crate::store::CommandStats)> {
    let mut v: Vec<_> = m.iter().map(|(n, c)| (*n, c)).collect();
    v.sort_unstable_by_key(|(n, _)| *n);
    v
}
