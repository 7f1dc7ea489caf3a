//! Crash loop of the pipeline engine: writers pipeline XADDs into `src`
//! while three pipelines run (a filter and projection, a flat map, and a
//! second stage that reads the first one's sink, and a keyed tumbling
//! window with count and sum), and the server is
//! SIGKILLed after a seeded random number of acknowledged XADDs, restarted
//! on the same directory, and checked. After every restart, with the
//! pipelines paused (PAUSE commits nothing after its reply), each sink must
//! equal the pipeline's function of its source up to the pipeline's
//! position (its consumer group's last-delivered-id): no duplicate, no gap,
//! no result beyond the position. Every acknowledged XADD is in `src`.
//!
//! Settings change from start to start: `appendfsync always` or
//! `everysec`, the checkpoint threshold (1 KiB: checkpoints all the time;
//! 64 KiB; 64 MiB), the block cache (one byte: every stored block is read
//! back from its segment file), each pipeline's COMMIT_INTERVAL.
//!
//! Environment: `FERRITE_CRASH_ITERATIONS` (default 30), `FERRITE_CRASH_SEED`
//! (default: from the clock; printed). `make crashtest` runs hundreds.
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::conn::RespConn;
use common::server::{Launch, Server, TempDir};
use common::state::{call_str, field, items, loaded_line, pipeline, text, xrange_all, Entry, Id};

const WRITERS: usize = 2;
const MAX_ACKS_BEFORE_KILL: u64 = 1500;
const MAX_OPS_PER_WRITER: u64 = 20_000;
const BATCH: usize = 25;
const WAIT: Duration = Duration::from_secs(60);

const P1: &str = "INSERT INTO out1 SELECT n, n * 2 AS twice FROM src WHERE n % 3 <> 0";
const P2: &str = "INSERT INTO out2 SELECT n, unnest(string_to_array(tags, ',')) AS tag FROM src";
const P3: &str = "INSERT INTO out3 SELECT twice FROM out1 WHERE twice % 4 = 0";
/// Windowed: 20-ms tumbling windows per key over the entry IDs' time. Its
/// state (open windows) is in its epochs and checkpoints, so each window's
/// result appears once.
const P4: &str = "INSERT INTO out4 SELECT k, window_start, count(*) AS c, sum(n) AS s \
                  FROM src GROUP BY k, TUMBLE(_ms, 20)";
const P4_SIZE: u64 = 20;

fn seed() -> u64 {
    std::env::var("FERRITE_CRASH_SEED")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("FERRITE_CRASH_SEED={v:?} is not a number"))
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn iterations() -> usize {
    match std::env::var("FERRITE_CRASH_ITERATIONS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("FERRITE_CRASH_ITERATIONS={v:?} is not a number")),
        Err(_) => 30,
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get<'a>(e: &'a Entry, k: &str) -> Option<&'a [u8]> {
    e.1.iter()
        .find(|(n, _)| n == k.as_bytes())
        .map(|(_, v)| v.as_slice())
}

type Rows = Vec<Vec<(String, String)>>;

fn p1(src: &[Entry]) -> Rows {
    src.iter()
        .filter_map(|e| {
            let n: i64 = s(get(e, "n")?).parse().ok()?;
            (n % 3 != 0).then(|| {
                vec![
                    ("n".into(), n.to_string()),
                    ("twice".into(), (n * 2).to_string()),
                ]
            })
        })
        .collect()
}

fn p2(src: &[Entry]) -> Rows {
    let mut out = Vec::new();
    for e in src {
        let (Some(n), Some(tags)) = (get(e, "n"), get(e, "tags")) else {
            continue;
        };
        let tags = s(tags);
        if tags.is_empty() {
            continue;
        }
        for t in tags.split(',') {
            out.push(vec![("n".into(), s(n)), ("tag".into(), t.to_string())]);
        }
    }
    out
}

fn p3(out1: &[Entry]) -> Rows {
    out1.iter()
        .filter_map(|e| {
            let t: i64 = s(get(e, "twice")?).parse().ok()?;
            (t % 4 == 0).then(|| vec![("twice".into(), t.to_string())])
        })
        .collect()
}

/// Every window closed by the entries up to the position (the watermark is
/// the last entry's time), per key: count and sum, in a canonical order.
fn p4(src: &[Entry]) -> Rows {
    let last = src.last().map_or(0, |e| e.0 .0);
    let mut m: std::collections::BTreeMap<(String, u64), (u64, i64)> = Default::default();
    for e in src {
        let (Some(k), Some(n)) = (get(e, "k"), get(e, "n")) else {
            continue;
        };
        let start = e.0 .0 / P4_SIZE * P4_SIZE;
        if start + P4_SIZE > last {
            continue;
        }
        let n: i64 = s(n).parse().unwrap_or(0);
        let w = m.entry((s(k), start)).or_default();
        w.0 += 1;
        w.1 += n;
    }
    m.into_iter()
        .map(|((k, start), (c, sum))| {
            vec![
                ("k".into(), k),
                ("window_start".into(), start.to_string()),
                ("c".into(), c.to_string()),
                ("s".into(), sum.to_string()),
            ]
        })
        .collect()
}

/// The sink's rows in [`p4`]'s order (windows are written as they close,
/// keys in any order within a close).
fn sorted_by_window(mut r: Rows) -> Rows {
    let key = |row: &Vec<(String, String)>| {
        let f = |n: &str| {
            row.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        (f("k"), f("window_start").parse::<u64>().unwrap_or(u64::MAX))
    };
    r.sort_by_key(key);
    r
}

fn rows(entries: &[Entry]) -> Rows {
    entries
        .iter()
        .map(|(_, f)| f.iter().map(|(k, v)| (s(k), s(v))).collect())
        .collect()
}

fn up_to(entries: &[Entry], pos: Id) -> &[Entry] {
    let n = entries.iter().take_while(|e| e.0 <= pos).count();
    &entries[..n]
}

/// The position of pipeline `name` on `source`.
fn position(c: &mut RespConn, source: &str, name: &str) -> Id {
    let groups = call_str(c, &["XINFO", "GROUPS", source]);
    for g in items(&groups) {
        if text(field(g, "name")) == name {
            return Id::parse(&text(field(g, "last-delivered-id")));
        }
    }
    panic!("no group {name} on {source}: {}", groups.render())
}

/// The first difference of two row lists, for the failure message.
fn first_diff(got: &Rows, want: &Rows) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "{} rows, want {}; first difference at {i}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        got.get(i),
        want.get(i)
    )
}

/// Checks every sink against its pipeline's function of its source up to
/// its position; with `complete`, also that every position is at the end.
fn verify(c: &mut RespConn, acked: &HashSet<String>, ctx: &str, complete: bool) {
    let src = xrange_all(c, "src");
    let present: HashSet<String> = src.iter().filter_map(|e| get(e, "n").map(s)).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|n| !present.contains(*n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{ctx}: acknowledged XADDs lost: {missing:?}"
    );
    let out1 = xrange_all(c, "out1");
    for (name, source, sink, want) in [
        ("p1", "src", "out1", &p1 as &dyn Fn(&[Entry]) -> Rows),
        ("p2", "src", "out2", &p2),
        ("p3", "out1", "out3", &p3),
        ("p4", "src", "out4", &p4),
    ] {
        if call_str(c, &["EXISTS", source]).as_int() == Some(0) {
            continue;
        }
        let pos = position(c, source, name);
        let input = if source == "src" { &src } else { &out1 };
        let mut got = rows(&xrange_all(c, sink));
        if name == "p4" {
            // Exactly once: sorting keeps duplicates, which the comparison
            // then finds.
            got = sorted_by_window(got);
        }
        let expected = want(up_to(input, pos));
        assert!(
            got == expected,
            "{ctx}: {name} ({sink} up to {pos}): {}",
            first_diff(&got, &expected)
        );
        if complete {
            let last = input.last().map_or(Id(0, 0), |e| e.0);
            assert_eq!(pos, last, "{ctx}: {name} did not reach the end of {source}");
        }
    }
}

fn ok(c: &mut RespConn, parts: &[&str], ctx: &str) {
    let r = call_str(c, parts);
    assert!(
        r.text() == Some(b"OK"),
        "{ctx}: {parts:?} -> {}",
        r.render()
    );
}

fn writer(
    mut c: RespConn,
    w: usize,
    iter: usize,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut done = Vec::new();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) && k < MAX_OPS_PER_WRITER {
        let mut cmds = Vec::with_capacity(BATCH);
        let mut ns = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            // Unique across writers and iterations.
            let n = ((iter as u64) * 10 + w as u64) * 1_000_000 + k;
            let tags = match k % 4 {
                0 => String::new(),
                1 => format!("a{}", k % 7),
                _ => format!("a{},b{},c", k % 7, k % 5),
            };
            cmds.push(common::state::argv(&[
                "XADD",
                "src",
                "*",
                "n",
                &n.to_string(),
                "tags",
                &tags,
                "k",
                &format!("k{}", n % 5),
            ]));
            ns.push(n.to_string());
            k += 1;
        }
        let (replies, failure) = pipeline(&mut c, &cmds);
        for (r, n) in replies.iter().zip(ns) {
            assert!(!r.is_error(), "XADD refused: {}", r.render());
            done.push(n);
            acked.fetch_add(1, Ordering::Relaxed);
        }
        if failure.is_some() {
            break;
        }
    }
    done
}

fn start(dir: &TempDir, extra: &[String], ctx: &str) -> (Server, RespConn) {
    let args: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    let server = Launch::ferrite("crash-pipelines")
        .dir(dir.path())
        .args(&args)
        .start()
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let loaded = loaded_line(&server.log_text())
        .unwrap_or_else(|| panic!("{ctx}: no 'DB loaded' line:\n{}", server.log_tail(20)));
    assert!(
        loaded.replay_errors == 0,
        "{ctx}: replay errors {loaded:?}\n{}",
        server.log_tail(40)
    );
    let c = server
        .connect()
        .unwrap_or_else(|e| panic!("{ctx}: {e}\n{}", server.log_tail(20)));
    (server, c)
}

#[test]
fn kill9_leaves_every_sink_equal_to_its_function_of_the_source_up_to_the_position() {
    let seed = seed();
    let iterations = iterations();
    println!(
        "pipelines crash loop: FERRITE_CRASH_SEED={seed} iterations={iterations} (to replay: \
         FERRITE_CRASH_SEED={seed} FERRITE_CRASH_ITERATIONS={iterations} cargo test --release \
         --test crash_loop_pipelines -- --nocapture)"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new("crash-pipelines").unwrap_or_else(|e| panic!("{e}"));
    let mut acked: HashSet<String> = HashSet::new();
    let names = ["p1", "p2", "p3", "p4"];
    for iter in 0..=iterations {
        let ctx = format!("iteration {iter} (FERRITE_CRASH_SEED={seed})");
        let policy = ["always", "everysec"][rng.gen_range(0..2)];
        let ckpt = ["1024", "65536", "64mb"][rng.gen_range(0..3)];
        let cache = ["1", "64kb", "256mb"][rng.gen_range(0..3)];
        let extra = vec![
            "--appendfsync".to_string(),
            policy.to_string(),
            "--auto-checkpoint-min-size".to_string(),
            ckpt.to_string(),
            "--block-cache-size".to_string(),
            cache.to_string(),
        ];
        let (mut server, mut c) = start(&dir, &extra, &ctx);
        if iter == 0 {
            for (name, sql) in names.iter().zip([P1, P2, P3, P4]) {
                let ci = rng.gen_range(1..=20).to_string();
                ok(
                    &mut c,
                    &[
                        "PIPELINE.CREATE",
                        name,
                        "FROM",
                        "0",
                        "COMMIT_INTERVAL",
                        &ci,
                        "AS",
                        sql,
                    ],
                    &ctx,
                );
            }
        } else {
            // Frozen: after PAUSE's reply no epoch commits.
            for name in names {
                ok(&mut c, &["PIPELINE.PAUSE", name], &ctx);
            }
            verify(&mut c, &acked, &ctx, false);
            for name in names {
                let ci = rng.gen_range(1..=20).to_string();
                let st = call_str(&mut c, &["PIPELINE.INFO", name]);
                assert_eq!(
                    text(field(&st, "state")),
                    "paused",
                    "{ctx}: {}",
                    st.render()
                );
                let sql = text(field(&st, "sql"));
                // REPLACE keeps the position (same source, no FROM).
                ok(
                    &mut c,
                    &[
                        "PIPELINE.CREATE",
                        name,
                        "REPLACE",
                        "COMMIT_INTERVAL",
                        &ci,
                        "AS",
                        &sql,
                    ],
                    &ctx,
                );
            }
        }
        if iter == iterations {
            // The last start: no kill; everything must be read in the end.
            for name in names {
                let deadline = Instant::now() + WAIT;
                loop {
                    let st = call_str(&mut c, &["PIPELINE.INFO", name]);
                    assert_ne!(
                        text(field(&st, "state")),
                        "failed",
                        "{ctx}: {}",
                        st.render()
                    );
                    if field(&st, "lag_entries").as_int() == Some(0) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{ctx}: {name} never caught up: {}",
                        st.render()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            // p3 reads p1's sink: wait for p1 first (done above), then p3 again.
            for name in names {
                ok(&mut c, &["PIPELINE.PAUSE", name], &ctx);
            }
            verify(&mut c, &acked, &ctx, true);
            break;
        }
        let target = rng.gen_range(1..=MAX_ACKS_BEFORE_KILL);
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let conn = server.connect().unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let (n, st) = (count.clone(), stop.clone());
                std::thread::spawn(move || writer(conn, w, iter, n, st))
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        while count.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            if handles.iter().all(|h| h.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        server.kill9().unwrap_or_else(|e| panic!("{ctx}: {e}"));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let done = h
                .join()
                .unwrap_or_else(|_| panic!("{ctx}: a writer panicked"));
            acked.extend(done);
        }
        drop(c);
    }
    println!(
        "pipelines crash loop: {iterations} kills, {} acknowledged XADDs, {:.1}s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
}
