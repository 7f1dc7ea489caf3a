//! Helpers for the durability tests (`tests/recovery_restart.rs`,
//! `tests/crash_loop.rs`, `tests/restart_time.rs`): commands over a raw
//! connection, pipelines, a dump of the whole observable state, and the
//! start-up log line.

use std::time::Duration;

use super::conn::{Reply, RespConn};
use super::resp::{escape_short, Node};
use super::server::Server;

/// Bound on every reply read in these tests.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// `["XADD", "s", "*"]` -> argv bytes.
pub fn argv(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// Sends one command and reads its reply (bounded); panics on a transport
/// problem (closed, timeout, invalid), naming the command.
pub fn call(c: &mut RespConn, args: &[Vec<u8>]) -> Node {
    if let Err(e) = c.send_command(args) {
        panic!("send {}: {e}", show_argv(args));
    }
    match c.read_reply(REPLY_TIMEOUT) {
        Reply::Frame { node, .. } => node,
        other => panic!("{} -> {}", show_argv(args), other.render()),
    }
}

/// [`call`] with string arguments.
pub fn call_str(c: &mut RespConn, parts: &[&str]) -> Node {
    call(c, &argv(parts))
}

/// Writes all commands in one write, then reads one reply per command.
/// Stops at the first transport problem and returns the replies read so far
/// plus that problem (so crash tests can tell acknowledged from unknown).
pub fn pipeline(c: &mut RespConn, cmds: &[Vec<Vec<u8>>]) -> (Vec<Node>, Option<Reply>) {
    let mut bytes = Vec::new();
    for cmd in cmds {
        bytes.extend_from_slice(&super::resp::encode_command(cmd));
    }
    if c.send(&bytes).is_err() {
        // Some of them may still have been read and run by the server.
        return (
            Vec::new(),
            Some(Reply::Closed {
                partial: Vec::new(),
            }),
        );
    }
    let mut out = Vec::with_capacity(cmds.len());
    for _ in cmds {
        match c.read_reply(REPLY_TIMEOUT) {
            Reply::Frame { node, .. } => out.push(node),
            other => return (out, Some(other)),
        }
    }
    (out, None)
}

pub fn show_argv(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| escape_short(a, 60))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text of a bulk/simple string reply (panics otherwise).
pub fn text(n: &Node) -> String {
    match n.text() {
        Some(t) if !n.is_error() => String::from_utf8_lossy(t).into_owned(),
        _ => panic!("expected a string reply, got {}", n.render()),
    }
}

pub fn int(n: &Node) -> i64 {
    n.as_int()
        .unwrap_or_else(|| panic!("expected an integer reply, got {}", n.render()))
}

/// Items of an array reply (panics otherwise).
pub fn items(n: &Node) -> &[Node] {
    match n {
        Node::Agg { kind: b'*', items } => items,
        _ => panic!("expected an array reply, got {}", n.render()),
    }
}

/// A stream ID `ms-seq`, ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub u64, pub u64);

impl Id {
    pub fn parse(s: &str) -> Id {
        let (a, b) = s
            .split_once('-')
            .unwrap_or_else(|| panic!("not a stream ID: {s:?}"));
        Id(
            a.parse()
                .unwrap_or_else(|_| panic!("not a stream ID: {s:?}")),
            b.parse()
                .unwrap_or_else(|_| panic!("not a stream ID: {s:?}")),
        )
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One entry of an XRANGE reply: ID and field/value pairs.
pub type Entry = (Id, Vec<(Vec<u8>, Vec<u8>)>);

pub fn parse_entries(n: &Node) -> Vec<Entry> {
    items(n)
        .iter()
        .map(|e| {
            let parts = items(e);
            assert!(
                parts.len() == 2,
                "entry is not [id, fields]: {}",
                e.render()
            );
            let id = Id::parse(&text(&parts[0]));
            let fv = items(&parts[1]);
            let pairs = fv
                .chunks(2)
                .map(|p| {
                    let k = p[0].text().map(|t| t.to_vec()).unwrap_or_default();
                    let v = p.get(1).and_then(|v| v.text()).map(|t| t.to_vec());
                    (k, v.unwrap_or_default())
                })
                .collect();
            (id, pairs)
        })
        .collect()
}

/// Every entry of a stream, read in pages of `XRANGE key (last + COUNT n`
/// (one huge reply would make the frame reader re-scan its buffer on every
/// read).
pub fn xrange_all(c: &mut RespConn, key: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    loop {
        let start = match out.last() {
            Some((id, _)) => format!("({id}"),
            None => "-".to_string(),
        };
        let page = parse_entries(&call_str(c, &["XRANGE", key, &start, "+", "COUNT", "2000"]));
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A field of a flat key/value reply (XINFO STREAM, RESP2).
pub fn field<'a>(n: &'a Node, name: &str) -> &'a Node {
    let it = items(n);
    let mut i = 0;
    while i + 1 < it.len() {
        if it[i].text() == Some(name.as_bytes()) {
            return &it[i + 1];
        }
        i += 2;
    }
    panic!("no field {name:?} in {}", n.render())
}

/// A state dump: (what was asked, the raw reply) per line.
pub type Dump = Vec<(String, Vec<u8>)>;

/// The whole observable state of a server, one labelled raw reply per line:
/// per non-empty database DBSIZE and the sorted KEYS, and per key TYPE, then
/// GET for strings; for lists, hashes, sets and sorted sets OBJECT
/// ENCODING, the elements (hashes and sets sorted) and whether a TTL is set;
/// or XRANGE - +, XINFO STREAM, XINFO STREAM FULL COUNT 0
/// (groups with their PELs and consumers) and XINFO GROUPS for streams, and
/// per group XINFO CONSUMERS, the XPENDING summary and XPENDING - + (every
/// pending entry). Equal dumps = byte-identical replies to all of these,
/// except the time fields [`same_line`] masks.
pub fn dump(server: &Server, databases: usize) -> Dump {
    let mut c = server
        .connect()
        .unwrap_or_else(|e| panic!("dump: {e}\n{}", server.log_tail(20)));
    let mut out: Dump = Vec::new();
    let raw = |out: &mut Dump, c: &mut RespConn, label: String, args: Vec<Vec<u8>>| -> Node {
        if let Err(e) = c.send_command(&args) {
            panic!("dump: send {}: {e}", show_argv(&args));
        }
        match c.read_reply(REPLY_TIMEOUT) {
            Reply::Frame { raw, node } => {
                out.push((label, raw));
                node
            }
            other => panic!("dump: {} -> {}", show_argv(&args), other.render()),
        }
    };
    for db in 0..databases {
        let sel = call(&mut c, &argv(&["SELECT", &db.to_string()]));
        assert!(!sel.is_error(), "SELECT {db}: {}", sel.render());
        let n = raw(
            &mut out,
            &mut c,
            format!("db{db} DBSIZE"),
            argv(&["DBSIZE"]),
        );
        if int(&n) == 0 {
            continue;
        }
        let keys = call(&mut c, &argv(&["KEYS", "*"]));
        let mut keys: Vec<Vec<u8>> = items(&keys)
            .iter()
            .map(|k| k.text().map(|t| t.to_vec()).unwrap_or_default())
            .collect();
        keys.sort();
        out.push((format!("db{db} KEYS (sorted)"), keys.join(&b'\n')));
        for k in keys {
            let name = String::from_utf8_lossy(&k).into_owned();
            let t = raw(
                &mut out,
                &mut c,
                format!("db{db} TYPE {name}"),
                vec![b"TYPE".to_vec(), k.clone()],
            );
            match t.text() {
                Some(b"string") => {
                    raw(
                        &mut out,
                        &mut c,
                        format!("db{db} GET {name}"),
                        vec![b"GET".to_vec(), k.clone()],
                    );
                }
                Some(b"stream") => {
                    for (label, args) in [
                        ("XRANGE - +", vec!["XRANGE", "-", "+"]),
                        ("XINFO STREAM", vec!["XINFO", "STREAM"]),
                        (
                            "XINFO STREAM FULL",
                            vec!["XINFO", "STREAM", "FULL", "COUNT", "0"],
                        ),
                    ] {
                        let mut a = vec![args[0].as_bytes().to_vec()];
                        if args[0] == "XINFO" {
                            a.push(args[1].as_bytes().to_vec());
                            a.push(k.clone());
                            a.extend(args[2..].iter().map(|s| s.as_bytes().to_vec()));
                        } else {
                            a.push(k.clone());
                            a.extend(args[1..].iter().map(|s| s.as_bytes().to_vec()));
                        }
                        raw(&mut out, &mut c, format!("db{db} {label} {name}"), a);
                    }
                    let groups = raw(
                        &mut out,
                        &mut c,
                        format!("db{db} XINFO GROUPS {name}"),
                        vec![b"XINFO".to_vec(), b"GROUPS".to_vec(), k.clone()],
                    );
                    for g in items(&groups) {
                        let gname = field(g, "name")
                            .text()
                            .map(|t| t.to_vec())
                            .unwrap_or_default();
                        let gshow = String::from_utf8_lossy(&gname).into_owned();
                        for (label, args) in [
                            ("XINFO CONSUMERS", vec!["XINFO", "CONSUMERS"]),
                            ("XPENDING", vec!["XPENDING"]),
                            ("XPENDING ext", vec!["XPENDING"]),
                        ] {
                            let mut a: Vec<Vec<u8>> =
                                args.iter().map(|s| s.as_bytes().to_vec()).collect();
                            a.push(k.clone());
                            a.push(gname.clone());
                            if label == "XPENDING ext" {
                                a.extend(argv(&["-", "+", "1000000000"]));
                            }
                            raw(
                                &mut out,
                                &mut c,
                                format!("db{db} {label} {name} {gshow}"),
                                a,
                            );
                        }
                    }
                }
                Some(t @ (b"list" | b"hash" | b"set" | b"zset")) => {
                    let t = t.to_vec();
                    raw(
                        &mut out,
                        &mut c,
                        format!("db{db} OBJECT ENCODING {name}"),
                        vec![b"OBJECT".to_vec(), b"ENCODING".to_vec(), k.clone()],
                    );
                    let read: &[&str] = match &t[..] {
                        b"list" => &["LRANGE", "0", "-1"],
                        b"hash" => &["HGETALL"],
                        b"set" => &["SMEMBERS"],
                        _ => &["ZRANGE", "0", "-1", "WITHSCORES"],
                    };
                    let mut a = vec![read[0].as_bytes().to_vec(), k.clone()];
                    a.extend(read[1..].iter().map(|s| s.as_bytes().to_vec()));
                    let label = format!("db{db} {} {name}", read[0]);
                    let n = call(&mut c, &a);
                    // Hash and set iteration order is the table's: compared
                    // as sorted pairs / members.
                    let mut parts: Vec<Vec<u8>> = match &t[..] {
                        b"hash" => items(&n)
                            .chunks(2)
                            .map(|p| {
                                let mut v = p[0].text().unwrap_or_default().to_vec();
                                v.push(b'=');
                                v.extend_from_slice(
                                    p.get(1).and_then(|x| x.text()).unwrap_or_default(),
                                );
                                v
                            })
                            .collect(),
                        _ => items(&n)
                            .iter()
                            .map(|x| x.text().unwrap_or_default().to_vec())
                            .collect(),
                    };
                    if matches!(&t[..], b"hash" | b"set") {
                        parts.sort();
                    }
                    out.push((label, parts.join(&b'\n')));
                    let ttl = call(&mut c, &[b"PTTL".to_vec(), k.clone()]);
                    out.push((
                        format!("db{db} has a TTL {name}"),
                        vec![u8::from(int(&ttl) > 0)],
                    ));
                }
                other => panic!("dump: key {name} has unexpected type {other:?}"),
            }
        }
    }
    out
}

/// Which time fields two dumps may differ in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// The same server before and after a restart: idle times (they grow)
    /// and consumers' seen-time (replay sets it to the replay's clock) are
    /// masked; delivery times (absolute, logged exactly) must be equal.
    Restart,
    /// Two servers fed the same commands a few milliseconds apart: delivery
    /// times are masked too.
    Twin,
}

/// Masks the time fields of a dump line (see [`Times`]).
pub fn mask_times(label: &str, n: &Node, times: Times) -> Node {
    fn walk(n: &Node, times: Times, xpending_ext: bool) -> Node {
        let Node::Agg { kind, items } = n else {
            return n.clone();
        };
        let mut items: Vec<Node> = items.iter().map(|i| walk(i, times, false)).collect();
        // [id, consumer, idle, count] of XPENDING - +.
        if xpending_ext {
            for e in items.iter_mut() {
                if let Node::Agg { items: f, .. } = e {
                    if f.len() == 4 {
                        f[2] = Node::Masked("idle".into());
                    }
                }
            }
        }
        // Flat key/value arrays (RESP2 maps).
        if items.len().is_multiple_of(2) {
            for i in (0..items.len()).step_by(2) {
                let key = items[i].text().map(|t| t.to_vec());
                match key.as_deref() {
                    Some(b"seen-time") | Some(b"idle") => {
                        items[i + 1] = Node::Masked("time".into());
                    }
                    // FULL's PELs: group [id, consumer, delivery-time, count],
                    // consumer [id, delivery-time, count].
                    Some(b"pending") if times == Times::Twin => {
                        if let Node::Agg { items: pel, .. } = &mut items[i + 1] {
                            for e in pel.iter_mut() {
                                if let Node::Agg { items: f, .. } = e {
                                    match f.len() {
                                        4 => f[2] = Node::Masked("delivery-time".into()),
                                        3 => f[1] = Node::Masked("delivery-time".into()),
                                        _ => {}
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Node::Agg { kind: *kind, items }
    }
    walk(n, times, label.contains("XPENDING ext"))
}

/// Whether two dump lines agree, time fields masked as `times` says.
pub fn same_line(label: &str, a: &[u8], b: &[u8], times: Times) -> bool {
    if a == b {
        return true;
    }
    match (super::resp::parse_frame(a), super::resp::parse_frame(b)) {
        (Ok(x), Ok(y)) => mask_times(label, &x, times).same(&mask_times(label, &y, times)),
        _ => false,
    }
}

/// Panics with the first difference between two dumps, rendered (times
/// masked as for a restart).
pub fn assert_same_dump(what: &str, a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) {
    assert_same_dump_times(what, a, b, Times::Restart)
}

/// [`assert_same_dump`] with a choice of masked time fields.
pub fn assert_same_dump_times(
    what: &str,
    a: &[(String, Vec<u8>)],
    b: &[(String, Vec<u8>)],
    times: Times,
) {
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x.0 != y.0 || !same_line(&x.0, &x.1, &y.1, times) {
            let show = |raw: &[u8]| match super::resp::parse_frame(raw) {
                Ok(n) => mask_times(&x.0, &n, times).render(),
                Err(_) => escape_short(raw, 2000),
            };
            let (ex, got) = (show(&x.1), show(&y.1));
            // The first differing line of the renderings, with context.
            let el: Vec<&str> = ex.lines().collect();
            let gl: Vec<&str> = got.lines().collect();
            let k = el
                .iter()
                .zip(gl.iter())
                .position(|(p, q)| p != q)
                .unwrap_or(el.len().min(gl.len()));
            let ctx = |v: &[&str]| v[k.saturating_sub(8)..(k + 4).min(v.len())].join("\n");
            panic!(
                "{what}: dumps differ at line {i} ({} / {}), rendered line {k}:\n  \
                 expected:\n{}\n  got:\n{}",
                x.0,
                y.0,
                ctx(&el),
                ctx(&gl)
            );
        }
    }
    assert!(
        a.len() == b.len(),
        "{what}: dumps differ in length ({} vs {} lines); first extra: {:?}",
        a.len(),
        b.len(),
        a.get(b.len()).or(b.get(a.len())).map(|x| &x.0)
    );
}

/// The numbers of the `DB loaded from the commit log` start-up line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub checkpoint_seq: u64,
    pub records: u64,
    pub commands: u64,
    pub replay_errors: u64,
    pub millis: u64,
    pub keys: u64,
}

/// Parses the last `DB loaded from the commit log` line of a server's output.
pub fn loaded_line(log: &str) -> Option<Loaded> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("DB loaded from the commit log"))?;
    let num = |name: &str| -> u64 {
        let pat = format!("{name}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&pat))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
    };
    Some(Loaded {
        checkpoint_seq: num("checkpoint_seq"),
        records: num("records"),
        commands: num("commands"),
        replay_errors: num("replay_errors"),
        millis: num("millis"),
        keys: num("keys"),
    })
}

/// A field of `INFO <section>` as text.
pub fn info_field(c: &mut RespConn, section: &str, name: &str) -> Option<String> {
    let n = call_str(c, &["INFO", section]);
    let body = String::from_utf8_lossy(n.text()?).into_owned();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}
