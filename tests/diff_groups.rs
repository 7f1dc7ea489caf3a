//! Differential tests for consumer groups.
//!
//! - `tests/diff/groups/*.txt`: ordinary differential scripts (see
//!   docs/testing.md), one `#[test]` each.
//! - `tests/diff/groups/timed/*.txt`: scripts whose replies carry delivery
//!   times (XPENDING's idle, XINFO STREAM FULL's delivery and seen times):
//!   played by [`run_timed`], which compares every reply byte for byte
//!   except those times, compared within [`TOL_MS`]. These scripts hold
//!   only commands, comments and `@conn` prefixes / switches.
mod common;

use common::conn::{Reply, RespConn};
use common::resp::Node;
use common::script::split_args;
use common::server::{redis_server_path, Pair};
use std::collections::HashMap;
use std::time::Duration;

diff_tests! {
    xgroup => "groups/xgroup.txt",
    xreadgroup => "groups/xreadgroup.txt",
    xreadgroup_block => "groups/xreadgroup_block.txt",
    xreadgroup_unblock => "groups/xreadgroup_unblock.txt",
    watch_multi => "groups/watch_multi.txt",
    xack => "groups/xack.txt",
    seen_time => "groups/seen_time.txt",
}

/// Tolerance for times: the two servers run the same command a few
/// milliseconds apart, and a loaded CI machine may stretch that.
const TOL_MS: i64 = 1000;

fn is_id(n: &Node) -> bool {
    n.text().is_some_and(|t| {
        let mut parts = t.splitn(2, |&c| c == b'-');
        let (a, b) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
        !a.is_empty() && !b.is_empty() && a.iter().chain(b).all(u8::is_ascii_digit)
    })
}

fn is_bulk(n: &Node) -> bool {
    matches!(n, Node::Blob { kind: b'$', .. })
}

fn approx(n: &mut Node) {
    if let Some(value) = n.as_int() {
        *n = Node::Approx { value, tol: TOL_MS };
    }
}

/// Replaces delivery times and idle times by tolerance placeholders:
/// `[id, consumer, time, count]` (XPENDING, FULL's group PEL), `[id, time,
/// count]` (FULL's consumer PEL), and the values of `idle` / `seen-time`;
/// masks `radix-tree-nodes` (rax internals).
fn mask_times(n: &mut Node) {
    let Node::Agg { kind, items } = n else {
        return;
    };
    let k = *kind;
    if items.len() == 4
        && is_id(&items[0])
        && is_bulk(&items[1])
        && items[2].as_int().is_some()
        && items[3].as_int().is_some()
    {
        approx(&mut items[2]);
        return;
    }
    if items.len() == 3
        && is_id(&items[0])
        && items[1].as_int().is_some()
        && items[2].as_int().is_some()
    {
        approx(&mut items[1]);
        return;
    }
    if (k == b'%' || k == b'*') && items.len() % 2 == 0 {
        for i in (0..items.len()).step_by(2) {
            match items[i].text() {
                Some(b"idle" | b"seen-time") => approx(&mut items[i + 1]),
                // rax internals (see streams/xinfo.txt)
                Some(b"radix-tree-nodes") => items[i + 1] = Node::Masked("radix-tree-nodes".into()),
                _ => {}
            }
        }
    }
    for i in items.iter_mut() {
        mask_times(i);
    }
}

struct Side {
    pair_server: &'static str,
    conns: HashMap<String, RespConn>,
}

/// Plays a timed script (see the module docs) on redis-server and Ferrite.
fn run_timed(name: &str) {
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    let path = common::runner::scripts_dir().join(name);
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read script {}: {e}", path.display()));
    let pair = Pair::start().unwrap_or_else(|e| panic!("{name}: {e}"));
    let timeout = common::runner::read_timeout();
    let trace = std::env::var("FERRITE_DIFF_TRACE").is_ok_and(|v| v == "1");
    let mut sides = [
        Side {
            pair_server: "redis",
            conns: HashMap::new(),
        },
        Side {
            pair_server: "ferrite",
            conns: HashMap::new(),
        },
    ];
    let mut current = "main".to_string();
    for (lineno, line) in src.lines().enumerate() {
        let lineno = lineno + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut words = split_args(t).unwrap_or_else(|e| panic!("{name}:{lineno}: {e}"));
        // `!repeat N CMD...`: N commands, `${i}` = 1..=N; nothing else.
        let mut repeat = None;
        if words.first().is_some_and(|w| w.starts_with(b"!")) {
            let n = (words[0] == b"!repeat")
                .then(|| words.get(1))
                .flatten()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            let Some(n) = n.filter(|_| words.len() > 2) else {
                panic!("{name}:{lineno}: timed scripts only know `!repeat N CMD...`");
            };
            repeat = Some(n);
            words.drain(..2);
        }
        let mut conn = current.clone();
        if let Some(first) = words.first() {
            if let Some(c) = first.strip_prefix(b"@") {
                let c = String::from_utf8_lossy(c).into_owned();
                words.remove(0);
                if words.is_empty() {
                    current = c;
                    continue;
                }
                conn = c;
            }
        }
        let runs: Vec<Vec<Vec<u8>>> = match repeat {
            None => vec![words],
            Some(n) => (1..=n)
                .map(|i| {
                    words
                        .iter()
                        .map(|w| {
                            String::from_utf8_lossy(w)
                                .replace("${i}", &i.to_string())
                                .into_bytes()
                        })
                        .collect()
                })
                .collect(),
        };
        for words in runs {
            run_timed_command(
                name, lineno, t, &conn, &words, &pair, &mut sides, timeout, trace,
            );
        }
    }
    // Both servers must still be alive.
    for server in [&pair.redis, &pair.ferrite] {
        let mut c = server.connect().unwrap_or_else(|e| panic!("{name}: {e}"));
        c.send_command(&[b"PING".to_vec()])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(c.read_reply(Duration::from_secs(10)), Reply::Frame { .. }),
            "{name}: a server stopped answering"
        );
    }
}

/// Sends one command to both servers on connection `conn` and compares the
/// replies after [`mask_times`].
#[allow(clippy::too_many_arguments)]
fn run_timed_command(
    name: &str,
    lineno: usize,
    t: &str,
    conn: &str,
    words: &[Vec<u8>],
    pair: &Pair,
    sides: &mut [Side; 2],
    timeout: Duration,
    trace: bool,
) {
    {
        let mut replies: Vec<Reply> = Vec::new();
        for side in sides.iter_mut() {
            let server = if side.pair_server == "redis" {
                &pair.redis
            } else {
                &pair.ferrite
            };
            if !side.conns.contains_key(conn) {
                let c = server
                    .connect()
                    .unwrap_or_else(|e| panic!("{name}:{lineno}: connect: {e}"));
                side.conns.insert(conn.to_string(), c);
            }
            let Some(c) = side.conns.get_mut(conn) else {
                panic!("{name}:{lineno}: connection vanished");
            };
            c.send_command(words)
                .unwrap_or_else(|e| panic!("{name}:{lineno}: send: {e}"));
            let r = c.read_reply(timeout);
            if words[0].eq_ignore_ascii_case(b"HELLO") {
                match r.raw().first() {
                    Some(b'%') => c.resp3 = true,
                    Some(b'*') => c.resp3 = false,
                    _ => {}
                }
            }
            replies.push(r);
        }
        let shown: Vec<Option<Node>> = replies
            .iter()
            .map(|r| {
                r.node().cloned().map(|mut n| {
                    mask_times(&mut n);
                    n
                })
            })
            .collect();
        if trace {
            eprintln!(
                "[{name}:{lineno} @{conn}] {t}\n  -> {}",
                replies[0].render()
            );
        }
        let same = match (&shown[0], &shown[1]) {
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        if !same {
            panic!(
                "{name} line {lineno} (@{conn}): {t}\nredis replied:\n{}ferrite replied:\n{}redis raw: {:?}\nferrite raw: {:?}\n--- ferrite log ---\n{}",
                replies[0].render(),
                replies[1].render(),
                String::from_utf8_lossy(replies[0].raw()),
                String::from_utf8_lossy(replies[1].raw()),
                pair.ferrite.log_tail(15)
            );
        }
    }
}

macro_rules! timed_tests {
    ($($name:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $name() {
                run_timed($file);
            }
        )*
    };
}

timed_tests! {
    xpending => "groups/timed/xpending.txt",
    xclaim => "groups/timed/xclaim.txt",
    xautoclaim => "groups/timed/xautoclaim.txt",
    xinfo_full => "groups/timed/xinfo_full.txt",
}

// ---- INFO commandstats / errorstats -------------------------------------------

/// One connection per server, used in lock step.
struct Both {
    pair: Pair,
    conns: HashMap<String, [RespConn; 2]>,
    timeout: Duration,
}

impl Both {
    fn start() -> Both {
        Both {
            pair: Pair::start().unwrap_or_else(|e| panic!("{e}")),
            conns: HashMap::new(),
            timeout: common::runner::read_timeout(),
        }
    }

    fn conn(&mut self, name: &str) -> &mut [RespConn; 2] {
        if !self.conns.contains_key(name) {
            let a = self.pair.redis.connect().unwrap_or_else(|e| panic!("{e}"));
            let b = self
                .pair
                .ferrite
                .connect()
                .unwrap_or_else(|e| panic!("{e}"));
            self.conns.insert(name.to_string(), [a, b]);
        }
        self.conns
            .get_mut(name)
            .unwrap_or_else(|| panic!("connection {name} vanished"))
    }

    fn send(&mut self, conn: &str, cmd: &str) {
        let words = split_args(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        for c in self.conn(conn).iter_mut() {
            c.send_command(&words)
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        }
    }

    /// Reads one reply on each side; both must be frames.
    fn read(&mut self, conn: &str) -> [Node; 2] {
        let t = self.timeout;
        let [a, b] = self.conn(conn);
        let (ra, rb) = (a.read_reply(t), b.read_reply(t));
        match (ra, rb) {
            (Reply::Frame { node: x, .. }, Reply::Frame { node: y, .. }) => [x, y],
            (x, y) => panic!(
                "no reply on @{conn}:\nredis: {}ferrite: {}",
                x.render(),
                y.render()
            ),
        }
    }

    /// Runs `cmd` on both and checks the replies are identical, up to
    /// [`mask_times`] (the two servers' clocks are read a millisecond or
    /// more apart: seen-time, delivery times and idle times may differ).
    fn same(&mut self, conn: &str, cmd: &str) -> Node {
        self.send(conn, cmd);
        let [mut a, mut b] = self.read(conn);
        mask_times(&mut a);
        mask_times(&mut b);
        assert!(
            a.same(&b),
            "{cmd}:\nredis:\n{}ferrite:\n{}",
            a.render(),
            b.render()
        );
        a
    }

    /// Waits (bounded) until both servers report `n` blocked clients.
    fn wait_blocked(&mut self, n: usize) {
        let deadline = std::time::Instant::now() + self.timeout;
        for side in 0..2 {
            loop {
                let [a, b] = self.conn("admin");
                let c = if side == 0 { a } else { b };
                c.send_command(&[b"INFO".to_vec(), b"clients".to_vec()])
                    .unwrap_or_else(|e| panic!("{e}"));
                let r = c.read_reply(Duration::from_secs(10));
                let text = r
                    .node()
                    .and_then(|n| n.text())
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .unwrap_or_default();
                let got = text
                    .lines()
                    .find_map(|l| l.strip_prefix("blocked_clients:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if got == Some(n) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "side {side}: blocked_clients never reached {n} (last {got:?})"
                );
                std::thread::yield_now();
            }
        }
    }

    /// `INFO <section>` on each side, as text.
    fn info(&mut self, section: &str) -> [String; 2] {
        self.send("admin", &format!("INFO {section}"));
        let [a, b] = self.read("admin");
        let t = |n: &Node| String::from_utf8_lossy(n.text().unwrap_or_default()).into_owned();
        [t(&a), t(&b)]
    }
}

/// `cmdstat_<name>:calls=..,usec=..,usec_per_call=..,rejected_calls=..,
/// failed_calls=..` without the times, sorted.
fn command_counts(info: &str) -> Vec<String> {
    let mut out: Vec<String> = info
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .map(|l| {
            let (name, fields) = l.split_once(':').unwrap_or((l, ""));
            let kept: Vec<&str> = fields
                .trim()
                .split(',')
                .filter(|f| !f.starts_with("usec"))
                .collect();
            format!("{name}:{}", kept.join(","))
        })
        .collect();
    out.sort();
    out
}

fn field_lines(info: &str, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = info
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.trim().to_string())
        .collect();
    out.sort();
    out
}

#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn info_stats_count_group_commands_and_errors() {
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    let mut b = Both::start();
    b.same("main", "CONFIG RESETSTAT");
    for cmd in [
        "XADD s 1-1 a 1",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s",
        "XGROUP FOO",
        "XGROUP CREATE nokey g 0",
        "XGROUP SETID s nogroup 0",
        "XGROUP CREATECONSUMER s g c",
        "XGROUP DELCONSUMER s g c",
        "XREADGROUP GROUP g c STREAMS s >",
        "XREADGROUP GROUP nogroup c STREAMS s >",
        "XREADGROUP GROUP g c STREAMS s $",
        "XACK s g 1-1",
        "XACK s g abc",
        "XPENDING s g",
        "XPENDING s nogroup",
        "XPENDING s g - + x",
        "XCLAIM s g c 0 1-1",
        "XCLAIM s nogroup c 0 1-1",
        "XCLAIM s g c 0 1-1 FOO",
        "XAUTOCLAIM s g c 0 0",
        "XAUTOCLAIM s nogroup c 0 0",
        "XAUTOCLAIM s g c 0 0 COUNT 0",
        "XINFO GROUPS s",
        "XINFO GROUPS nokey",
        "XINFO CONSUMERS s nogroup",
        "XINFO STREAM s FULL",
        "SET str v",
        "XREADGROUP GROUP g c STREAMS str >",
        "MULTI",
        "XREADGROUP GROUP g c BLOCK 0 STREAMS s >",
        "XGROUP CREATE s g 0",
        "EXEC",
    ] {
        b.same("main", cmd);
    }
    // Blocked calls: served, timed out, ended by each error.
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.wait_blocked(1);
    b.same("main", "XADD s 2-1 b 2");
    let [x, y] = b.read("r1");
    assert!(x.same(&y));
    b.same("r1", "XREADGROUP GROUP g c BLOCK 10 STREAMS s >");
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.send("r2", "XREADGROUP GROUP g c2 BLOCK 0 STREAMS s >");
    b.wait_blocked(2);
    b.same("main", "XGROUP DESTROY s g");
    for c in ["r1", "r2"] {
        let [x, y] = b.read(c);
        assert!(x.same(&y), "{}{}", x.render(), y.render());
    }
    b.same("main", "XGROUP CREATE s g $");
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.wait_blocked(1);
    b.same("main", "DEL s");
    let [x, y] = b.read("r1");
    assert!(x.same(&y), "{}{}", x.render(), y.render());

    let [ra, fa] = b.info("commandstats");
    let (rc, fc) = (command_counts(&ra), command_counts(&fa));
    let relevant = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|l| l.starts_with('x') || l.starts_with("exec") || l.starts_with("multi"))
            .cloned()
            .collect()
    };
    eprintln!("commandstats: {:#?}", relevant(&rc));
    assert_eq!(relevant(&fc), relevant(&rc), "commandstats differ");
    let [ra, fa] = b.info("errorstats");
    assert_eq!(
        field_lines(&fa, "errorstat_"),
        field_lines(&ra, "errorstat_"),
        "errorstats differ"
    );
    assert!(
        field_lines(&ra, "errorstat_NOGROUP:").len() == 1,
        "the script must produce NOGROUP errors"
    );
    let [ra, fa] = b.info("stats");
    assert_eq!(
        field_lines(&fa, "total_error_replies:"),
        field_lines(&ra, "total_error_replies:")
    );
}

// ---- replay equivalence of the propagated effects ------------------------------

/// Runs commands in-process like a connection does (blocking included), and
/// collects what the store logged for the commit log after every command.
mod replay {
    use bytes::Bytes;
    use ferrite_db::cmd::{self, ClientState, Ctx, Dispatch};
    use ferrite_db::config::Config;
    use ferrite_db::reply::Reply;
    use ferrite_db::shared::{now_ms, Shared};
    use ferrite_db::store::ClientInfo;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tokio::sync::oneshot;

    pub struct Node {
        shared: Arc<Shared>,
        main: ClientState,
        /// Blocked readers: their client state and reply channel.
        blocked: Vec<(ClientState, u64, oneshot::Receiver<Reply>)>,
        /// Every logged effect, in order (all in db 0).
        pub log: Vec<Vec<Bytes>>,
    }

    fn client(shared: &Arc<Shared>) -> ClientState {
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        shared.store.lock().clients.insert(
            id,
            ClientInfo::new(
                id,
                "test:0".into(),
                "test:0".into(),
                now,
                Arc::new(tokio::sync::Notify::new()),
            ),
        );
        ClientState::new(id, true)
    }

    impl Node {
        pub fn new() -> Node {
            let shared = Shared::new(Config::default());
            // Collect effects as a server with persistence on does.
            shared.store.lock().logging = true;
            let main = client(&shared);
            Node {
                shared,
                main,
                blocked: Vec::new(),
                log: Vec::new(),
            }
        }

        pub fn blocked_count(&self) -> usize {
            self.blocked.len()
        }

        fn run(&mut self, c: Option<&mut ClientState>, argv: Vec<Bytes>) -> Dispatch {
            let shared = self.shared.clone();
            let now = now_ms();
            let mut store = shared.store.lock();
            let client = match c {
                Some(c) => c,
                None => &mut self.main,
            };
            let mut ctx = Ctx {
                store: &mut store,
                client,
                shared: &shared,
                now_ms: now,
                in_exec: false,
                block: None,
                propagate: None,
                parsed: None,
            };
            let d = cmd::dispatch(&mut ctx, argv);
            store.serve_ready(now);
            for (db, argv) in store.take_effects() {
                assert_eq!(db, 0, "effects logged in db {db}");
                self.log.push(argv);
            }
            d
        }

        /// Runs a command on the main client.
        pub fn call(&mut self, argv: Vec<Bytes>) -> Reply {
            let r = match self.run(None, argv) {
                Dispatch::Reply(r) | Dispatch::Block(_, r) => r,
            };
            self.reap();
            r
        }

        /// Runs a (possibly blocking) command on a client of its own.
        pub fn call_blocking(&mut self, argv: Vec<Bytes>) {
            let mut c = client(&self.shared);
            if let Dispatch::Block(req, _) = self.run(Some(&mut c), argv) {
                let (id, rx) = self
                    .shared
                    .store
                    .lock()
                    .block(c.id, c.db, req.keys, req.cmd);
                self.blocked.push((c, id, rx));
            }
        }

        /// Forgets readers that were served.
        fn reap(&mut self) {
            self.blocked.retain_mut(|(_, _, rx)| rx.try_recv().is_err());
        }

        /// Ends every blocked reader as by a timeout.
        pub fn unblock_all(&mut self) {
            let mut store = self.shared.store.lock();
            for (_, id, _) in self.blocked.drain(..) {
                store.unblock(id);
            }
        }
    }
}

fn argv(s: &str) -> Vec<bytes::Bytes> {
    s.split_whitespace()
        .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

/// Replaces the consumers' `seen-time` / `idle` (which replay cannot
/// reproduce: they are the time of the replayed command) by 0.
fn mask_seen(r: &mut ferrite_db::reply::Reply) {
    use ferrite_db::reply::Reply as R;
    match r {
        R::Map(pairs) | R::KeyedArray(pairs) => {
            for (k, v) in pairs.iter_mut() {
                if matches!(k, R::Bulk(b) if &b[..] == b"seen-time" || &b[..] == b"idle") {
                    *v = R::Int(0);
                } else {
                    mask_seen(v);
                }
            }
        }
        R::Array(items) | R::Set(items) | R::Push(items) => items.iter_mut().for_each(mask_seen),
        _ => {}
    }
}

/// What must survive a replay: every key's stream, groups, PELs (delivery
/// times and counts included) and consumers, and each group's XPENDING summary.
fn state(n: &mut replay::Node) -> Vec<ferrite_db::reply::Reply> {
    let mut out = Vec::new();
    for key in ["s", "t"] {
        let mut full = n.call(argv(&format!("XINFO STREAM {key} FULL COUNT 0")));
        mask_seen(&mut full);
        out.push(full);
        out.push(n.call(argv(&format!("XINFO GROUPS {key}"))));
        for g in ["g1", "g2"] {
            out.push(n.call(argv(&format!("XPENDING {key} {g}"))));
        }
    }
    out
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One random consumer group command (plus the stream writes around them).
/// Returns the command and whether to run it on a client of its own (a
/// blocking read).
fn random_command(r: &mut Rng, next_ms: &mut u64) -> (String, bool) {
    let key = r.pick(&["s", "s", "s", "t"]);
    let g = r.pick(&["g1", "g1", "g2"]);
    let c = r.pick(&["alice", "bob", "carol", "dave"]);
    let id = |r: &mut Rng| format!("{}-{}", 1 + r.below(*next_ms + 1), r.below(3));
    let cmd = match r.below(100) {
        0..=24 => {
            *next_ms += 1;
            match r.below(4) {
                0 => format!("XADD {key} {}-* f v", *next_ms),
                1 => format!("XADD {key} MAXLEN ~ {} {}-1 f v", 5 + r.below(20), *next_ms),
                2 => format!("XADD {key} MAXLEN {} {}-1 f v", 5 + r.below(20), *next_ms),
                _ => format!("XADD {key} {}-1 f v", *next_ms),
            }
        }
        25..=49 => {
            let count = match r.below(3) {
                0 => String::new(),
                _ => format!("COUNT {} ", 1 + r.below(4)),
            };
            let noack = if r.below(6) == 0 { "NOACK " } else { "" };
            let at = match r.below(5) {
                0 => "0".to_string(),
                1 => id(r),
                _ => ">".to_string(),
            };
            if r.below(5) == 0 && at == ">" {
                return (
                    format!("XREADGROUP GROUP {g} {c} {count}{noack}BLOCK 0 STREAMS {key} >"),
                    true,
                );
            }
            format!("XREADGROUP GROUP {g} {c} {count}{noack}STREAMS {key} {at}")
        }
        50..=64 => {
            let mut cmd = format!(
                "XCLAIM {key} {g} {c} {} {} {}",
                r.pick(&["0", "0", "100000"]),
                id(r),
                id(r)
            );
            for _ in 0..r.below(3) {
                cmd.push(' ');
                cmd.push_str(&match r.below(7) {
                    0 => format!("IDLE {}", r.below(1_000_000)),
                    1 => format!("TIME {}", r.below(2_000_000_000_000)),
                    2 => format!("RETRYCOUNT {}", r.below(9)),
                    3 => "FORCE".to_string(),
                    4 => "JUSTID".to_string(),
                    5 => format!("LASTID {}", id(r)),
                    _ => "JUSTID".to_string(),
                });
            }
            cmd
        }
        65..=72 => {
            let mut cmd = format!(
                "XAUTOCLAIM {key} {g} {c} {} {} COUNT {}",
                r.pick(&["0", "0", "100000"]),
                r.pick(&["0", "0", "(3-0", "5"]),
                1 + r.below(4)
            );
            if r.below(2) == 0 {
                cmd.push_str(" JUSTID");
            }
            cmd
        }
        73..=82 => format!("XACK {key} {g} {} {}", id(r), id(r)),
        83..=85 => {
            let start = r.pick(&["$", "0", "3-0"]);
            let er = match r.below(3) {
                0 => format!(" ENTRIESREAD {}", r.below(20)),
                _ => String::new(),
            };
            format!("XGROUP CREATE {key} {g} {start} MKSTREAM{er}")
        }
        86 | 87 => {
            let er = match r.below(2) {
                0 => format!(" ENTRIESREAD {}", r.below(20)),
                _ => String::new(),
            };
            format!("XGROUP SETID {key} {g} {}{er}", r.pick(&["$", "0", "5"]))
        }
        88 => format!("XGROUP DESTROY {key} {g}"),
        89 => format!("XGROUP CREATECONSUMER {key} {g} {c}"),
        90 => format!("XGROUP DELCONSUMER {key} {g} {c}"),
        91..=94 => format!("XDEL {key} {} {}", id(r), id(r)),
        95 => format!("XTRIM {key} MAXLEN {}", 3 + r.below(12)),
        96 => format!("XSETID {key} {}-9", *next_ms),
        97 if r.below(4) == 0 => format!("RENAME {} {}", key, if key == "s" { "t" } else { "s" }),
        98 if r.below(4) == 0 => format!("DEL {key}"),
        _ => format!("XPENDING {key} {g}"),
    };
    (cmd, false)
}

/// Random command sequences through an in-process server; the effects it
/// logged, replayed into a fresh server, rebuild the same groups, PELs
/// (delivery times and counts), last-delivered-ids, entries-read and lags.
#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn propagated_effects_replay_to_the_same_state() {
    let mut cases = 0;
    for seed in 1..=120u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut a = replay::Node::new();
        let mut next_ms = 1;
        let mut script = Vec::new();
        for k in ["s", "t"] {
            for g in ["g1", "g2"] {
                a.call(argv(&format!("XGROUP CREATE {k} {g} 0 MKSTREAM")));
            }
        }
        for _ in 0..250 {
            let (cmd, blocking) = random_command(&mut r, &mut next_ms);
            script.push(cmd.clone());
            if blocking {
                a.call_blocking(argv(&cmd));
            } else {
                a.call(argv(&cmd));
            }
            // Occasionally in a transaction.
            if r.below(30) == 0 {
                let (c1, _) = random_command(&mut r, &mut next_ms);
                let (c2, _) = random_command(&mut r, &mut next_ms);
                script.push(format!("MULTI / {c1} / {c2} / EXEC"));
                a.call(argv("MULTI"));
                a.call(argv(&c1));
                a.call(argv(&c2));
                a.call(argv("EXEC"));
            }
        }
        let served_or_left = a.blocked_count();
        a.unblock_all();
        let log = std::mem::take(&mut a.log);
        let mut b = replay::Node::new();
        for e in &log {
            let reply = b.call(e.clone());
            assert!(
                !reply.is_error(),
                "seed {seed}: replaying {:?} failed: {reply:?}\nscript:\n{}",
                e.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>(),
                script.join("\n")
            );
        }
        let (sa, sb) = (state(&mut a), state(&mut b));
        if sa != sb {
            let log_text: Vec<String> = log
                .iter()
                .map(|e| {
                    e.iter()
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            for (x, y) in sa.iter().zip(&sb) {
                if x != y {
                    panic!(
                        "seed {seed}: replay differs\noriginal: {x:?}\nreplayed: {y:?}\nscript:\n{}\nlog:\n{}",
                        script.join("\n"),
                        log_text.join("\n")
                    );
                }
            }
        }
        let _ = served_or_left;
        if std::env::var("REPLAY_DEBUG").is_ok() {
            let mut kinds = std::collections::BTreeMap::new();
            for e in &log {
                let k = String::from_utf8_lossy(&e[0]).into_owned()
                    + if e.len() > 1 && e[0].eq_ignore_ascii_case(b"XGROUP") {
                        "|"
                    } else {
                        ""
                    }
                    + &if e[0].eq_ignore_ascii_case(b"XGROUP") {
                        String::from_utf8_lossy(&e[1]).into_owned()
                    } else {
                        String::new()
                    };
                *kinds.entry(k).or_insert(0) += 1;
            }
            eprintln!(
                "seed {seed}: blocked left {served_or_left}; {kinds:?}; state {:?}",
                &sa[2..4]
            );
        }
        cases += 1;
    }
    assert_eq!(cases, 120);
}

/// A blocked XREADGROUP served later logs its effects (consumer creation,
/// one XCLAIM per entry, the group's new last ID) like a direct call.
#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn served_blocked_reader_logs_its_effects() {
    let mut a = replay::Node::new();
    a.call(argv("XGROUP CREATE s g $ MKSTREAM"));
    a.call_blocking(argv(
        "XREADGROUP GROUP g waiter COUNT 5 BLOCK 0 STREAMS s >",
    ));
    a.call_blocking(argv("XREADGROUP GROUP g other NOACK BLOCK 0 STREAMS s >"));
    assert_eq!(a.blocked_count(), 2);
    a.log.clear();
    a.call(argv("XADD s 1-1 f v"));
    a.call(argv("XADD s 2-1 f v"));
    assert_eq!(a.blocked_count(), 0);
    let text: Vec<String> = a
        .log
        .iter()
        .map(|e| {
            e.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(text[0], "XADD s 1-1 f v");
    assert_eq!(text[1], "XGROUP CREATECONSUMER s g waiter");
    assert!(
        text[2].starts_with("XCLAIM s g waiter 0 1-1 TIME ")
            && text[2].ends_with(" RETRYCOUNT 1 FORCE JUSTID LASTID 1-1"),
        "{}",
        text[2]
    );
    assert_eq!(text[3], "XGROUP SETID s g 1-1 ENTRIESREAD 1");
    assert_eq!(text[4], "XADD s 2-1 f v");
    assert_eq!(text[5], "XGROUP CREATECONSUMER s g other");
    assert_eq!(text[6], "XGROUP SETID s g 2-1 ENTRIESREAD 2");
    assert_eq!(text.len(), 7, "{text:#?}");
    let mut b = replay::Node::new();
    b.call(argv("XGROUP CREATE s g $ MKSTREAM"));
    for e in a.log.clone() {
        assert!(!b.call(e).is_error());
    }
    assert!(state(&mut a) == state(&mut b));
}

// ---- scale: the same workload on redis-server and Ferrite --------------------

/// Sends `cmds` in pipelined batches of `batch` and reads every reply;
/// returns the elapsed seconds. Error replies are counted and reported.
fn pipelined(c: &mut RespConn, cmds: &[Vec<Vec<u8>>], batch: usize) -> f64 {
    let t = std::time::Instant::now();
    let mut errors = 0;
    for chunk in cmds.chunks(batch) {
        let mut buf = Vec::new();
        for cmd in chunk {
            buf.extend(common::resp::encode_command(cmd));
        }
        c.send(&buf).unwrap_or_else(|e| panic!("send: {e}"));
        for _ in chunk {
            match c.read_reply(Duration::from_secs(60)) {
                Reply::Frame { node, .. } if node.is_error() => errors += 1,
                Reply::Frame { .. } => {}
                other => panic!("no reply: {}", other.render()),
            }
        }
    }
    assert_eq!(errors, 0, "error replies in the workload");
    t.elapsed().as_secs_f64()
}

fn info_field(c: &mut RespConn, section: &str, field: &str) -> i64 {
    c.send_command(&[b"INFO".to_vec(), section.as_bytes().to_vec()])
        .unwrap_or_else(|e| panic!("{e}"));
    let r = c.read_reply(Duration::from_secs(10));
    let text = r
        .node()
        .and_then(|n| n.text())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn words(s: &str) -> Vec<Vec<u8>> {
    s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

/// 1,000,000 pending entries over 1,000 consumers on both servers, then
/// XACK / XCLAIM / XPENDING / XREADGROUP throughput over one pipelined
/// connection, and memory per pending entry. Measures; asserts no time.
///
/// `cargo test --release --test diff_groups scale -- --ignored --nocapture`
#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
#[ignore = "measurement: run with --ignored --nocapture (release)"]
fn scale_vs_redis() {
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    const N: u64 = 1_000_000;
    const CONSUMERS: u64 = 1000;
    let pair = Pair::start().unwrap_or_else(|e| panic!("{e}"));
    let adds: Vec<Vec<Vec<u8>>> = (1..=N)
        .map(|i| words(&format!("XADD s {i}-1 f v")))
        .collect();
    let reads: Vec<Vec<Vec<u8>>> = (0..CONSUMERS)
        .map(|c| words(&format!("XREADGROUP GROUP g c{c} COUNT 1000 STREAMS s >")))
        .collect();
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    let rand_id = |r: &mut Rng| format!("{}-1", 1 + r.below(N));
    let pending: Vec<Vec<Vec<u8>>> = (0..20_000)
        .map(|_| words(&format!("XPENDING s g {} + 10", rand_id(&mut r))))
        .collect();
    let pending_c: Vec<Vec<Vec<u8>>> = (0..20_000)
        .map(|_| {
            let c = r.below(CONSUMERS);
            words(&format!("XPENDING s g {} + 10 c{c}", rand_id(&mut r)))
        })
        .collect();
    let claims: Vec<Vec<Vec<u8>>> = (0..100_000)
        .map(|_| {
            let c = r.below(CONSUMERS);
            words(&format!("XCLAIM s g c{c} 0 {} JUSTID", rand_id(&mut r)))
        })
        .collect();
    let acks: Vec<Vec<Vec<u8>>> = (0..100_000)
        .map(|_| words(&format!("XACK s g {}", rand_id(&mut r))))
        .collect();
    for (label, server) in [("redis-server", &pair.redis), ("ferrite", &pair.ferrite)] {
        let mut c = server.connect().unwrap_or_else(|e| panic!("{e}"));
        let t_add = pipelined(&mut c, &adds, 10_000);
        pipelined(&mut c, &[words("XGROUP CREATE s g 0")], 1);
        let (m0, rss0) = (
            info_field(&mut c, "memory", "used_memory"),
            info_field(&mut c, "memory", "used_memory_rss"),
        );
        let t_read = pipelined(&mut c, &reads, 100);
        let (m1, rss1) = (
            info_field(&mut c, "memory", "used_memory"),
            info_field(&mut c, "memory", "used_memory_rss"),
        );
        let t_pend = pipelined(&mut c, &pending, 1000);
        let t_pend_c = pipelined(&mut c, &pending_c, 1000);
        let t_claim = pipelined(&mut c, &claims, 1000);
        let t_ack = pipelined(&mut c, &acks, 1000);
        println!("{label}:");
        println!("  XADD 1M entries: {:.0} ops/s", N as f64 / t_add);
        println!(
            "  XREADGROUP > COUNT 1000 x 1000 consumers: {:.0} entries/s ({:.0} calls/s)",
            N as f64 / t_read,
            CONSUMERS as f64 / t_read
        );
        println!(
            "  used_memory per pending entry: {:.1} bytes; RSS per pending entry: {:.1} bytes",
            (m1 - m0) as f64 / N as f64,
            (rss1 - rss0) as f64 / N as f64
        );
        println!(
            "  XPENDING s g <id> + 10: {:.0} ops/s",
            pending.len() as f64 / t_pend
        );
        println!(
            "  XPENDING s g <id> + 10 <consumer>: {:.0} ops/s",
            pending_c.len() as f64 / t_pend_c
        );
        println!(
            "  XCLAIM one entry JUSTID: {:.0} ops/s",
            claims.len() as f64 / t_claim
        );
        println!("  XACK one entry: {:.0} ops/s", acks.len() as f64 / t_ack);
        let left = {
            c.send_command(&words("XPENDING s g"))
                .unwrap_or_else(|e| panic!("{e}"));
            c.read_reply(Duration::from_secs(10))
                .node()
                .and_then(|n| match n {
                    Node::Agg { items, .. } => items.first().and_then(Node::as_int),
                    _ => None,
                })
        };
        println!("  pending after the workload: {left:?}");
    }
}
