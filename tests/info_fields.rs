//! INFO has every field Redis 7.0 prints, in Redis's order, section by
//! section (checked against a live redis-server: client libraries and
//! monitoring tools index these fields by name), and the counters behind
//! them move: network bytes, instantaneous rates, checkpoints (rdb_saves,
//! LASTSAVE), pub/sub channels.
mod common;

use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::server::{Kind, Server};
use common::state::{call_str, info_field, int, text};

fn connect(s: &Server) -> RespConn {
    s.connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)))
}

/// `(section, field names in order)` of an INFO reply.
fn fields(c: &mut RespConn, arg: &str) -> Vec<(String, Vec<String>)> {
    let body = text(&call_str(c, &["INFO", arg]));
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(h) = line.strip_prefix("# ") {
            out.push((h.to_string(), Vec::new()));
        } else if let Some((k, _)) = line.split_once(':') {
            if let Some(last) = out.last_mut() {
                last.1.push(k.to_string());
            }
        }
    }
    out
}

#[test]
fn every_redis_field_in_redis_order() {
    let redis = Server::start(Kind::Redis, "info-redis").unwrap_or_else(|e| panic!("{e}"));
    let ferrite = Server::start(Kind::Ferrite, "info-ferrite").unwrap_or_else(|e| panic!("{e}"));
    let mut r = connect(&redis);
    let mut f = connect(&ferrite);
    for arg in ["default", "everything"] {
        // A key, so that Keyspace has a line on both.
        call_str(&mut r, &["SET", "k", "v"]);
        call_str(&mut f, &["SET", "k", "v"]);
        let want = fields(&mut r, arg);
        let got = fields(&mut f, arg);
        for (section, names) in &want {
            let Some((_, have)) = got.iter().find(|(s, _)| s == section) else {
                panic!("INFO {arg}: no section {section}");
            };
            // Redis's fields are a subsequence of Ferrite's: same order,
            // Ferrite's own fields may follow or sit between them.
            let mut it = have.iter();
            for name in names {
                if name.starts_with("cmdstat_") || name.starts_with("errorstat_") {
                    continue;
                }
                assert!(
                    it.any(|h| h == name),
                    "INFO {arg} section {section}: field {name} missing or out of order; Ferrite has {have:?}"
                );
            }
        }
        let sections: Vec<&String> = want.iter().map(|(s, _)| s).collect();
        let ours: Vec<&String> = got
            .iter()
            .map(|(s, _)| s)
            .filter(|s| sections.contains(s))
            .collect();
        assert_eq!(sections, ours, "INFO {arg}: section order");
    }
}

#[test]
fn counters_move() {
    let s = Server::start(Kind::Ferrite, "info-counters").unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect(&s);
    let num = |c: &mut RespConn, sec: &str, name: &str| -> f64 {
        info_field(c, sec, name)
            .and_then(|v| v.trim_end_matches('%').parse().ok())
            .unwrap_or_else(|| panic!("INFO {sec} {name}"))
    };
    let input = num(&mut c, "stats", "total_net_input_bytes");
    assert!(input > 0.0);
    assert!(num(&mut c, "stats", "total_net_output_bytes") > 0.0);
    assert!(num(&mut c, "stats", "total_reads_processed") > 0.0);
    // The rates are sampled ten times a second: busy for a while, they rise.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for _ in 0..200 {
            call_str(&mut c, &["PING"]);
        }
        if num(&mut c, "stats", "instantaneous_ops_per_sec") > 0.0
            && num(&mut c, "stats", "instantaneous_input_kbps") > 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "instantaneous rates stayed at 0");
    }
    assert!(num(&mut c, "stats", "total_net_input_bytes") > input);
    // Latency percentiles per command (INFO latencystats, not a default section).
    let lat = text(&call_str(&mut c, &["INFO", "latencystats"]));
    assert!(lat.contains("latency_percentiles_usec_ping:p50="), "{lat}");
    assert!(lat.contains(",p99.9="), "{lat}");
    assert!(!text(&call_str(&mut c, &["INFO"])).contains("# Latencystats"));
    // Checkpoints: SAVE counts, LASTSAVE and rdb_last_save_time follow it.
    let saves = num(&mut c, "persistence", "rdb_saves");
    assert_eq!(text(&call_str(&mut c, &["SAVE"])), "OK");
    assert_eq!(num(&mut c, "persistence", "rdb_saves"), saves + 1.0);
    assert!(num(&mut c, "persistence", "rdb_last_bgsave_time_sec") >= 0.0);
    let lastsave = int(&call_str(&mut c, &["LASTSAVE"]));
    assert_eq!(
        lastsave as f64,
        num(&mut c, "persistence", "rdb_last_save_time")
    );
    // Read commands count keyspace hits and misses; writes do not.
    let hits = num(&mut c, "stats", "keyspace_hits");
    let misses = num(&mut c, "stats", "keyspace_misses");
    call_str(&mut c, &["SET", "hit", "1"]);
    call_str(&mut c, &["MGET", "hit", "nosuch", "hit"]);
    assert_eq!(num(&mut c, "stats", "keyspace_hits"), hits + 2.0);
    assert_eq!(num(&mut c, "stats", "keyspace_misses"), misses + 1.0);
    // Pub/sub counts are the real ones.
    let mut sub = connect(&s);
    call_str(&mut sub, &["SUBSCRIBE", "a"]);
    let mut psub = connect(&s);
    call_str(&mut psub, &["PSUBSCRIBE", "p*"]);
    assert_eq!(num(&mut c, "stats", "pubsub_channels"), 1.0);
    assert_eq!(num(&mut c, "stats", "pubsub_patterns"), 1.0);
    // Memory: the peak is at least what is used.
    let used = num(&mut c, "memory", "used_memory");
    assert!(num(&mut c, "memory", "used_memory_peak") >= used);
    assert_eq!(
        info_field(&mut c, "cluster", "cluster_enabled").as_deref(),
        Some("0")
    );
}

/// The binary's allocator is jemalloc (INFO `mem_allocator`, as Redis's),
/// it never stops a thread in `malloc_trim` (`mem_trims` stays 0), and
/// memory a command frees goes back to the system on jemalloc's own
/// background threads: RSS falls after FLUSHALL without any further
/// command that allocates or frees.
#[test]
fn freed_memory_goes_back_to_the_system() {
    let s = Server::start(Kind::Ferrite, "info-alloc").unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect(&s);
    let rss = |c: &mut RespConn| -> i64 {
        info_field(c, "memory", "used_memory_rss")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("INFO memory used_memory_rss"))
    };
    assert_eq!(
        info_field(&mut c, "memory", "mem_allocator").as_deref(),
        Some("jemalloc-5.3.0")
    );
    let before = rss(&mut c);
    // 64 MiB in 4 KiB strings (small allocations spread over many pages,
    // the kind glibc kept without a trim), in pipelined batches.
    let value = vec![b'x'; 4096];
    for batch in 0..64 {
        let cmds: Vec<Vec<Vec<u8>>> = (0..256)
            .map(|i| {
                vec![
                    b"SET".to_vec(),
                    format!("k{batch}:{i}").into_bytes(),
                    value.clone(),
                ]
            })
            .collect();
        let (replies, err) = common::state::pipeline(&mut c, &cmds);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(replies.len(), cmds.len());
    }
    let full = rss(&mut c);
    assert!(
        full - before > 48 << 20,
        "RSS grew by only {} bytes for 64 MiB of values",
        full - before
    );
    assert_eq!(text(&call_str(&mut c, &["FLUSHALL"])), "OK");
    // Decay returns dirty pages within about a second; bounded wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rss(&mut c);
        if full - now > 32 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stayed at {now} after FLUSHALL (full: {full}, empty: {before})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        info_field(&mut c, "memory", "mem_trims").as_deref(),
        Some("0")
    );
}
