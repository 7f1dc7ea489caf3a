//! Crash loop against the real binary: concurrent clients pipeline XADDs
//! (`*`, explicit `ms-seq`, `ms-*`, and two-XADD MULTI/EXEC transactions)
//! while the server is SIGKILLed at a random moment (after a random number of
//! acknowledged replies, drawn from a seeded RNG), restarted on the same data
//! directory, and checked:
//!
//! - every acknowledged XADD is present exactly once, with the ID it was
//!   given, in the stream it was sent to, with the fields it was sent with;
//! - nothing is present that was never sent, no entry twice;
//! - an entry recovered once is recovered by every later restart, same ID;
//! - both XADDs of a transaction are present or neither is;
//! - IDs acknowledged after a restart are above every recovered one, and no
//!   XADD is ever refused (a refused explicit ID would mean the recovered
//!   last ID went backwards);
//! - entries-added = length and last-generated-id = the last entry (nothing
//!   is ever deleted here), and replay reports no errors.
//!
//! Some starts are killed in the middle of their own recovery (a seeded
//! random delay after spawning), and the checkpoint threshold changes from
//! start to start (1 KiB: checkpoints all the time, so kills land inside
//! them; 64 KiB; the default 64 MiB: replay only).
//!
//! `appendfsync always` (the main test) and `everysec` / `no` (the page
//! cache survives a process kill, so nothing acknowledged may be lost there
//! either; fewer iterations).
//!
//! Environment: `FERRITE_CRASH_ITERATIONS` (default 30; `everysec`/`no` run a
//! third of it), `FERRITE_CRASH_SEED` (default: from the clock; printed).
//! `make crashtest` runs hundreds of iterations.
//!
//! A consumer-group reader runs beside the writers on stream `auto`:
//! `XREADGROUP GROUP cg r COUNT 500 BLOCK 100 STREAMS auto >` (so most reads
//! block and are served by a writer's XADD) pipelined with an XACK of every
//! other entry of its previous read. After each restart: every entry an
//! acknowledged XREADGROUP delivered is still pending unless an acknowledged
//! XACK removed it (then it is not pending), the group's last-delivered-id is
//! not below any delivered entry, and no entry is delivered twice by `>`.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::conn::RespConn;
use common::resp::Node;
use common::server::{Launch, Server, TempDir};
use common::state::{
    call_str, field, int, items, loaded_line, parse_entries, pipeline, text, xrange_all, Id,
};

const CLIENTS: usize = 4;
/// Upper bound of the random number of acknowledged XADDs before a kill.
const MAX_ACKS_BEFORE_KILL: u64 = 1500;
/// Each client stops on its own after this many commands in one iteration
/// (only reached if the kill never comes).
const MAX_OPS_PER_CLIENT: usize = 20_000;
const KILL_WAIT: Duration = Duration::from_secs(60);

/// The crash loops' default iteration count under `always`.
const DEFAULT_ITERATIONS: usize = 30;

/// FERRITE_CRASH_ITERATIONS, or the default.
fn iterations_setting() -> usize {
    std::env::var("FERRITE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

fn iterations(default: usize) -> usize {
    debug_assert_eq!(default, DEFAULT_ITERATIONS);
    iterations_setting()
}

fn seed() -> u64 {
    std::env::var("FERRITE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// How the ID of a sent XADD was given.
#[derive(Clone, Copy, Debug)]
enum IdSpec {
    Auto,
    Explicit(Id),
    /// `ms-*`, with the ID the client expects (it is the only writer of
    /// its stream, so the server's last ID is its last sent one).
    AutoSeq(Id),
}

/// One XADD that was sent.
#[derive(Clone, Debug)]
struct Sent {
    key: String,
    spec: IdSpec,
    value: String,
    /// The other tag of a two-XADD transaction.
    partner: Option<String>,
    /// The ID in the acknowledged reply.
    acked: Option<Id>,
}

fn auto_key() -> String {
    "auto".to_string()
}

fn own_key(c: usize) -> String {
    format!("exp:{c}")
}

fn value_for(tag: &str, n: usize) -> String {
    // Records of varied sizes, reproducible from the tag.
    tag.repeat(n % 9)
}

/// What one client did in one iteration.
struct ClientRun {
    sent: Vec<(String, Sent)>,
    errors: Vec<String>,
}

/// Shared between the clients and the killer: acknowledged XADDs so far.
struct Progress {
    acked: Mutex<u64>,
    cv: Condvar,
}

fn add_xadd(cmds: &mut Vec<Vec<Vec<u8>>>, key: &str, id: &str, tag: &str, value: &str) {
    cmds.push(
        ["XADD", key, id, "tag", tag, "v", value]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
    );
}

/// One client: pipelines batches until the connection dies (the kill).
fn client(
    mut conn: RespConn,
    c: usize,
    iter: usize,
    seed: u64,
    mut last: Id,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> ClientRun {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = ClientRun {
        sent: Vec::new(),
        errors: Vec::new(),
    };
    let mut n = 0usize;
    let mut ops = 0usize;
    while !stop.load(Ordering::Relaxed) && ops < MAX_OPS_PER_CLIENT {
        let batch = rng.gen_range(1..=32);
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        // Per command: which sent tags its reply acknowledges.
        let mut expect: Vec<Vec<String>> = Vec::new();
        for _ in 0..batch {
            n += 1;
            let tag = format!("i{iter}c{c}n{n}");
            let value = value_for(&tag, n);
            let r: f64 = rng.gen();
            if r < 0.45 {
                add_xadd(&mut cmds, "auto", "*", &tag, &value);
                run.sent.push((
                    tag.clone(),
                    Sent {
                        key: auto_key(),
                        spec: IdSpec::Auto,
                        value,
                        partner: None,
                        acked: None,
                    },
                ));
                expect.push(vec![tag]);
            } else if r < 0.75 {
                let next = if rng.gen_bool(0.5) {
                    Id(last.0, last.1 + rng.gen_range(1..3))
                } else {
                    Id(last.0 + rng.gen_range(1..3), rng.gen_range(0..3))
                };
                last = next;
                add_xadd(&mut cmds, &own_key(c), &next.to_string(), &tag, &value);
                run.sent.push((
                    tag.clone(),
                    Sent {
                        key: own_key(c),
                        spec: IdSpec::Explicit(next),
                        value,
                        partner: None,
                        acked: None,
                    },
                ));
                expect.push(vec![tag]);
            } else if r < 0.9 {
                let ms = if last.0 == 0 { 1 } else { last.0 };
                let predicted = if ms == last.0 {
                    Id(ms, last.1 + 1)
                } else {
                    Id(ms, 0)
                };
                last = predicted;
                add_xadd(&mut cmds, &own_key(c), &format!("{ms}-*"), &tag, &value);
                run.sent.push((
                    tag.clone(),
                    Sent {
                        key: own_key(c),
                        spec: IdSpec::AutoSeq(predicted),
                        value,
                        partner: None,
                        acked: None,
                    },
                ));
                expect.push(vec![tag]);
            } else {
                // MULTI, XADD auto *, XADD own explicit, EXEC.
                n += 1;
                let tag2 = format!("i{iter}c{c}n{n}");
                let value2 = value_for(&tag2, n);
                let id2 = Id(last.0 + 1, 1);
                last = id2;
                cmds.push(vec![b"MULTI".to_vec()]);
                add_xadd(&mut cmds, "auto", "*", &tag, &value);
                add_xadd(&mut cmds, &own_key(c), &id2.to_string(), &tag2, &value2);
                cmds.push(vec![b"EXEC".to_vec()]);
                run.sent.push((
                    tag.clone(),
                    Sent {
                        key: auto_key(),
                        spec: IdSpec::Auto,
                        value,
                        partner: Some(tag2.clone()),
                        acked: None,
                    },
                ));
                run.sent.push((
                    tag2.clone(),
                    Sent {
                        key: own_key(c),
                        spec: IdSpec::Explicit(id2),
                        value: value2,
                        partner: Some(tag.clone()),
                        acked: None,
                    },
                ));
                expect.push(Vec::new());
                expect.push(Vec::new());
                expect.push(Vec::new());
                expect.push(vec![tag, tag2]);
            }
        }
        ops += cmds.len();
        let (replies, problem) = pipeline(&mut conn, &cmds);
        let mut acked_now = 0u64;
        for (i, reply) in replies.iter().enumerate() {
            let tags = &expect[i];
            if reply.is_error() {
                run.errors.push(format!(
                    "client {c}: {} -> {}",
                    common::state::show_argv(&cmds[i]),
                    reply.render()
                ));
                continue;
            }
            let ids: Vec<Id> = match (tags.len(), reply) {
                (0, _) => Vec::new(),
                (1, r) => vec![Id::parse(&text(r))],
                (_, r) => items(r).iter().map(|x| Id::parse(&text(x))).collect(),
            };
            for (tag, id) in tags.iter().zip(ids) {
                if let Some((_, s)) = run.sent.iter_mut().rev().find(|(t, _)| t == tag) {
                    s.acked = Some(id);
                    acked_now += 1;
                }
            }
        }
        if acked_now > 0 {
            let mut a = progress.acked.lock().unwrap_or_else(|e| e.into_inner());
            *a += acked_now;
            progress.cv.notify_all();
        }
        if problem.is_some() {
            break;
        }
    }
    run
}

/// What the consumer-group reader learnt about one delivered entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckState {
    /// Delivered by an acknowledged XREADGROUP, never acknowledged.
    Pending,
    /// An XACK was sent but its reply never arrived.
    Unknown,
    /// An acknowledged XACK removed it from the PEL.
    Acked,
}

/// The reader's results for one iteration.
struct ReaderRun {
    delivered: Vec<Id>,
    /// Final state of each entry it delivered or acknowledged.
    acks: Vec<(Id, AckState)>,
    errors: Vec<String>,
}

const GROUP_KEY: &str = "auto";

/// The consumer-group reader: reads new entries, acknowledges every other
/// entry of the previous read in the same pipeline.
fn reader(mut conn: RespConn, stop: Arc<AtomicBool>) -> ReaderRun {
    let mut run = ReaderRun {
        delivered: Vec::new(),
        acks: Vec::new(),
        errors: Vec::new(),
    };
    let mut to_ack: Vec<Id> = Vec::new();
    let mut reads = 0usize;
    while !stop.load(Ordering::Relaxed) && reads < MAX_OPS_PER_CLIENT {
        reads += 1;
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        let acking = std::mem::take(&mut to_ack);
        if !acking.is_empty() {
            let mut a: Vec<Vec<u8>> = ["XACK", GROUP_KEY, "cg"]
                .iter()
                .map(|x| x.as_bytes().to_vec())
                .collect();
            a.extend(acking.iter().map(|id| id.to_string().into_bytes()));
            cmds.push(a);
        }
        cmds.push(
            [
                "XREADGROUP",
                "GROUP",
                "cg",
                "r",
                "COUNT",
                "500",
                "BLOCK",
                "100",
                "STREAMS",
                GROUP_KEY,
                ">",
            ]
            .iter()
            .map(|x| x.as_bytes().to_vec())
            .collect(),
        );
        let (replies, problem) = pipeline(&mut conn, &cmds);
        let mut replies = replies.into_iter();
        if !acking.is_empty() {
            match replies.next() {
                Some(r) if r.is_error() => run.errors.push(format!("XACK -> {}", r.render())),
                Some(r) => {
                    let n = int(&r);
                    if n as usize != acking.len() {
                        run.errors.push(format!(
                            "XACK of {} pending entries acknowledged {n}",
                            acking.len()
                        ));
                    }
                    run.acks
                        .extend(acking.iter().map(|id| (*id, AckState::Acked)));
                }
                None => run
                    .acks
                    .extend(acking.iter().map(|id| (*id, AckState::Unknown))),
            }
        }
        if let Some(r) = replies.next() {
            if r.is_error() {
                run.errors.push(format!("XREADGROUP -> {}", r.render()));
            } else if let Node::Agg {
                kind: b'*',
                items: streams,
            } = &r
            {
                for st in streams {
                    let parts = items(st);
                    for (i, (id, _)) in parse_entries(&parts[1]).into_iter().enumerate() {
                        run.delivered.push(id);
                        run.acks.push((id, AckState::Pending));
                        if i % 2 == 0 {
                            to_ack.push(id);
                        }
                    }
                }
            }
        }
        if problem.is_some() {
            break;
        }
    }
    run
}

/// The group as the reader's acknowledged replies define it.
#[derive(Default)]
struct GroupModel {
    /// Every entry delivered by an acknowledged XREADGROUP `>`, and its state.
    delivered: HashMap<Id, AckState>,
}

/// Checks the recovered group against the model; returns its
/// last-delivered-id (0-0 if the group does not exist yet).
fn verify_group(server: &Server, g: &GroupModel, iter: usize, seed: u64) -> Id {
    let ctx = |msg: String| format!("iteration {iter} (FERRITE_CRASH_SEED={seed}): group: {msg}");
    let mut c = server.connect().unwrap_or_else(|e| panic!("{}", ctx(e)));
    let groups = call_str(&mut c, &["XINFO", "GROUPS", GROUP_KEY]);
    let groups = if groups.is_error() {
        Vec::new()
    } else {
        items(&groups).to_vec()
    };
    let Some(grp) = groups
        .iter()
        .find(|x| field(x, "name").text() == Some(b"cg"))
    else {
        assert!(
            g.delivered.is_empty(),
            "{}",
            ctx("the group is gone after entries were delivered".into())
        );
        return Id(0, 0);
    };
    let last = Id::parse(&text(field(grp, "last-delivered-id")));
    let pel = call_str(
        &mut c,
        &["XPENDING", GROUP_KEY, "cg", "-", "+", "1000000000"],
    );
    let pending: std::collections::HashSet<Id> = items(&pel)
        .iter()
        .map(|e| Id::parse(&text(&items(e)[0])))
        .collect();
    for (id, st) in &g.delivered {
        assert!(
            *id <= last,
            "{}",
            ctx(format!("delivered {id} but last-delivered-id is {last}"))
        );
        match st {
            AckState::Pending => assert!(
                pending.contains(id),
                "{}",
                ctx(format!("delivered {id} is no longer pending"))
            ),
            AckState::Acked => assert!(
                !pending.contains(id),
                "{}",
                ctx(format!("acknowledged {id} is pending again"))
            ),
            AckState::Unknown => {}
        }
    }
    last
}

/// The model: every XADD ever sent, by tag, and what the last restart
/// recovered.
struct Model {
    sent: HashMap<String, Sent>,
    /// Tag -> (key, ID) found after the previous restart.
    recovered: HashMap<String, (String, Id)>,
}

/// Reads every stream and checks it against the model; returns the last
/// generated ID per key.
fn verify(server: &Server, model: &mut Model, iter: usize, seed: u64) -> BTreeMap<String, Id> {
    let ctx = |msg: String| format!("iteration {iter} (FERRITE_CRASH_SEED={seed}): {msg}");
    let mut c = server.connect().unwrap_or_else(|e| panic!("{}", ctx(e)));
    let mut keys: Vec<String> = vec![auto_key()];
    keys.extend((0..CLIENTS).map(own_key));
    let mut found: HashMap<String, (String, Id)> = HashMap::new();
    let mut last_ids = BTreeMap::new();
    for key in &keys {
        let entries = xrange_all(&mut c, key);
        let exists = int(&call_str(&mut c, &["EXISTS", key])) == 1;
        if exists {
            let info = call_str(&mut c, &["XINFO", "STREAM", key]);
            let len = int(field(&info, "length"));
            let added = int(field(&info, "entries-added"));
            let last = Id::parse(&text(field(&info, "last-generated-id")));
            assert!(
                len == entries.len() as i64 && added == len,
                "{}",
                ctx(format!(
                    "{key}: length {len}, entries-added {added}, XRANGE {}",
                    entries.len()
                ))
            );
            let max = entries.last().map(|e| e.0);
            assert!(
                max == Some(last) || (max.is_none() && last == Id(0, 0)),
                "{}",
                ctx(format!(
                    "{key}: last-generated-id {last} but last entry {max:?}"
                ))
            );
            last_ids.insert(key.clone(), last);
        }
        for (id, fields) in entries {
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name.as_bytes())
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            let tag =
                get("tag").unwrap_or_else(|| panic!("{}", ctx(format!("{key} {id}: no tag"))));
            let sent = model.sent.get(&tag).unwrap_or_else(|| {
                panic!("{}", ctx(format!("{key} {id}: tag {tag} was never sent")))
            });
            assert!(
                sent.key == *key,
                "{}",
                ctx(format!("{tag} sent to {} found in {key}", sent.key))
            );
            assert!(
                fields.len() == 2 && get("v").as_deref() == Some(sent.value.as_str()),
                "{}",
                ctx(format!(
                    "{tag} at {id}: fields differ from what was sent: {fields:?}"
                ))
            );
            match sent.spec {
                IdSpec::Explicit(want) | IdSpec::AutoSeq(want) => assert!(
                    id == want,
                    "{}",
                    ctx(format!("{tag}: sent as {want}, found at {id}"))
                ),
                IdSpec::Auto => {}
            }
            if let Some(a) = sent.acked {
                assert!(
                    a == id,
                    "{}",
                    ctx(format!("{tag}: acknowledged as {a}, found at {id}"))
                );
            }
            if let Some((k, prev)) = found.insert(tag.clone(), (key.clone(), id)) {
                panic!(
                    "{}",
                    ctx(format!("{tag} present twice: {k} {prev} and {key} {id}"))
                );
            }
        }
    }
    for (tag, s) in &model.sent {
        if let Some(a) = s.acked {
            assert!(
                found.contains_key(tag),
                "{}",
                ctx(format!("acknowledged {tag} ({a} in {}) was lost", s.key))
            );
        }
        if let Some(p) = &s.partner {
            assert!(
                found.contains_key(tag) == found.contains_key(p),
                "{}",
                ctx(format!(
                    "transaction half-applied: {tag} present {}, {p} present {}",
                    found.contains_key(tag),
                    found.contains_key(p)
                ))
            );
        }
    }
    for (tag, (key, id)) in &model.recovered {
        assert!(
            found.get(tag) == Some(&(key.clone(), *id)),
            "{}",
            ctx(format!(
                "{tag} was recovered at {key} {id} by the previous restart, now {:?}",
                found.get(tag)
            ))
        );
    }
    model.recovered = found;
    last_ids
}

/// Start on `dir`, sometimes killing a first attempt in the middle of its
/// recovery.
fn start(dir: &TempDir, extra: &[String], rng: &mut StdRng, iter: usize, seed: u64) -> Server {
    let args: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    let launch = Launch::ferrite("crash").dir(dir.path()).args(&args);
    if rng.gen_bool(0.2) {
        let mut s = launch
            .clone()
            .no_wait()
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        // A seeded random delay: the kill lands before, during or after recovery.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..30_000)));
        s.kill9().unwrap_or_else(|e| panic!("{e}"));
    }
    let s = launch
        .start()
        .unwrap_or_else(|e| panic!("iteration {iter} (FERRITE_CRASH_SEED={seed}): {e}"));
    let loaded = loaded_line(&s.log_text())
        .unwrap_or_else(|| panic!("no 'DB loaded' line:\n{}", s.log_tail(20)));
    assert!(
        loaded.replay_errors == 0,
        "iteration {iter} (FERRITE_CRASH_SEED={seed}): replay errors {loaded:?}\n{}",
        s.log_tail(40)
    );
    s
}

fn crash_loop(tag: &str, test: &str, policies: &[&str], iterations: usize) {
    let seed = seed();
    // NOTE: the replay command gives FERRITE_CRASH_ITERATIONS as it was
    // set (or defaulted), not this loop's share of it: the everysec/no test
    // runs a third of it, and the same value must give the same loop.
    let requested = iterations_setting();
    println!(
        "{tag}: FERRITE_CRASH_SEED={seed} iterations={iterations} (to replay: \
         FERRITE_CRASH_SEED={seed} FERRITE_CRASH_ITERATIONS={requested} \
         cargo test --release --test crash_loop {test} -- --nocapture)"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new(tag).unwrap_or_else(|e| panic!("{e}"));
    let mut model = Model {
        sent: HashMap::new(),
        recovered: HashMap::new(),
    };
    let mut total_acked = 0u64;
    let mut group = GroupModel::default();
    let stop_reader = Arc::new(AtomicBool::new(false));
    let mut total_delivered = 0usize;
    for iter in 0..iterations {
        let policy = policies[iter % policies.len()];
        let ckpt = ["1024", "65536", "64mb"][rng.gen_range(0..3)];
        // A one-byte block cache evicts every stored block at once, so
        // verification and later writes read them back from segment files.
        let cache = ["1", "64kb", "256mb"][rng.gen_range(0..3)];
        // One worker is the default; several keep the concurrent paths
        // (appends and commit waits from different threads) under test.
        let io_threads = ["1", "2", "4"][rng.gen_range(0..3)];
        // Checkpoint snapshots walked a key per hold of the store lock, or
        // more, with commands between the holds.
        let step = ["1", "16", "256"][rng.gen_range(0..3)];
        let extra = vec![
            "--checkpoint-cut-step-keys".to_string(),
            step.to_string(),
            "--appendfsync".to_string(),
            policy.to_string(),
            "--auto-checkpoint-min-size".to_string(),
            ckpt.to_string(),
            "--block-cache-size".to_string(),
            cache.to_string(),
            "--io-threads".to_string(),
            io_threads.to_string(),
        ];
        let mut server = start(&dir, &extra, &mut rng, iter, seed);
        let last_ids = verify(&server, &mut model, iter, seed);
        let group_last = verify_group(&server, &group, iter, seed);
        if group_last == Id(0, 0) && group.delivered.is_empty() {
            let mut c = server.connect().unwrap_or_else(|e| panic!("{e}"));
            let r = call_str(
                &mut c,
                &["XGROUP", "CREATE", GROUP_KEY, "cg", "$", "MKSTREAM"],
            );
            assert!(
                !r.is_error() || r.text().is_some_and(|t| t.starts_with(b"BUSYGROUP")),
                "{}",
                r.render()
            );
        }
        let reader_handle = {
            let conn = server.connect().unwrap_or_else(|e| panic!("{e}"));
            let s = stop_reader.clone();
            s.store(false, Ordering::Relaxed);
            std::thread::spawn(move || reader(conn, s))
        };
        let target = rng.gen_range(1..=MAX_ACKS_BEFORE_KILL);
        let progress = Arc::new(Progress {
            acked: Mutex::new(0),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let last = last_ids.get(&own_key(c)).copied().unwrap_or(Id(0, 0));
                let (p, s) = (progress.clone(), stop.clone());
                // Connected before the kill can happen.
                let conn = server.connect().unwrap_or_else(|e| panic!("{e}"));
                let cseed = rng.gen();
                std::thread::spawn(move || client(conn, c, iter, cseed, last, p, s))
            })
            .collect();
        {
            // Wait (bounded) for `target` acknowledged XADDs, then kill.
            let deadline = Instant::now() + KILL_WAIT;
            let mut a = progress.acked.lock().unwrap_or_else(|e| e.into_inner());
            while *a < target && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                a = progress
                    .cv
                    .wait_timeout(a, left.min(Duration::from_millis(200)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if handles.iter().all(|h| h.is_finished()) {
                    break;
                }
            }
        }
        server.kill9().unwrap_or_else(|e| panic!("{e}"));
        stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        let mut acked_iter = 0u64;
        for h in handles {
            let run = h
                .join()
                .unwrap_or_else(|_| panic!("client thread panicked"));
            errors.extend(run.errors);
            for (t, s) in run.sent {
                if let Some(a) = s.acked {
                    acked_iter += 1;
                    // New IDs are above every recovered one.
                    if let Some(prev) = last_ids.get(&s.key) {
                        assert!(
                            a > *prev,
                            "iteration {iter} (FERRITE_CRASH_SEED={seed}): {t} acknowledged as \
                             {a} in {}, not above the recovered last ID {prev}",
                            s.key
                        );
                    }
                    if let IdSpec::Explicit(want) | IdSpec::AutoSeq(want) = s.spec {
                        assert!(
                            a == want,
                            "iteration {iter} (FERRITE_CRASH_SEED={seed}): {t} sent as {want}, \
                             acknowledged as {a}"
                        );
                    }
                }
                model.sent.insert(t, s);
            }
        }
        stop_reader.store(true, Ordering::Relaxed);
        let rr = reader_handle
            .join()
            .unwrap_or_else(|_| panic!("reader thread panicked"));
        errors.extend(rr.errors);
        for id in &rr.delivered {
            // `>` never hands out an entry twice, nor one at or below the
            // recovered last-delivered-id.
            assert!(
                !group.delivered.contains_key(id) && *id > group_last,
                "iteration {iter} (FERRITE_CRASH_SEED={seed}): {id} delivered again \
                 (recovered last-delivered-id {group_last})"
            );
            group.delivered.insert(*id, AckState::Pending);
        }
        for (id, st) in rr.acks {
            if st != AckState::Pending {
                group.delivered.insert(id, st);
            }
        }
        total_delivered += rr.delivered.len();
        assert!(
            errors.is_empty(),
            "iteration {iter} (FERRITE_CRASH_SEED={seed}): error replies:\n{}",
            errors.join("\n")
        );
        total_acked += acked_iter;
    }
    // The last kill is checked too.
    let mut server = start(
        &dir,
        &["--appendfsync".into(), policies[0].into()],
        &mut rng,
        iterations,
        seed,
    );
    verify(&server, &mut model, iterations, seed);
    verify_group(&server, &group, iterations, seed);
    let _ = server.kill9();
    println!(
        "{tag}: {iterations} kills, {total_acked} acknowledged XADDs, {} sent, {} present, \
         {total_delivered} delivered to the group, {:.1}s",
        model.sent.len(),
        model.recovered.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn kill9_loses_nothing_acknowledged_under_always() {
    crash_loop(
        "crash-always",
        "kill9_loses_nothing_acknowledged_under_always",
        &["always"],
        iterations(30),
    );
}

#[test]
fn kill9_loses_nothing_acknowledged_under_everysec_and_no() {
    crash_loop(
        "crash-everysec",
        "kill9_loses_nothing_acknowledged_under_everysec_and_no",
        &["everysec", "everysec", "no"],
        iterations(30).div_ceil(3),
    );
}
