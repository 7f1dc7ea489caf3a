//! Replays a workload recorded from redis-server 7.0.15 through Ferrite's
//! own command path (the command table, each command's argument parser and
//! handler, the stream type) and compares every reply and every stream state
//! snapshot, including each node's master ID and exact listpack byte size.
//! `scripts/record-redis-fixtures.py` recorded it (and records it again:
//! running it reproduces the committed file).
//!
//! Fixture format (`tests/fixtures/redis-7.0.15.txt`), one item per line:
//! - `# ...` and blank lines: comments.
//! - `reset`: the key no longer exists.
//! - `config <node-max-entries> <node-max-bytes>`: CONFIG SET for what follows.
//! - `def NAME` ... `end`: a macro of commands without replies; `run NAME` replays it.
//! - `fill A B`: `XADD <i>-1 a 1` for i in A..=B, replies not checked.
//! - `<CMD> <args...> => <reply>`: a command on the key (the key name itself is
//!   omitted). Replies: an ID or integer, `OK`, `!<ErrorVariant>`, or for
//!   XRANGE/XREVRANGE `[id,f,v,... id,f,v,...]`.
//! - `state nokey` or `state <len> <radix-tree-keys> <last-generated-id>
//!   <max-deleted-entry-id> <entries-added> <recorded-first-entry-id> | <blocks>`
//!   where blocks is `master:lpbytes ...` (up to 6 nodes), `#<count>:<sum of
//!   lpbytes>:<fnv1a-64 of the full list>` for more, or `*` (not recorded).
//! - Tokens are percent-encoded (`%20`); `@` is the empty string and
//!   `@HH*N` is byte 0xHH repeated N times.
//!
//! `*` IDs were recorded with a far-future last ID or a clock value; the
//! replay runs each command with the recorded reply's ms as the clock, which
//! reproduces Redis's choice in both cases (clock ahead: `<now>-0`; behind:
//! last+1).

use bytes::Bytes;
use ferrite_db::cmd::{self, ClientState, Executed};
use ferrite_db::config::Config;
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use ferrite_db::store::Value;
use std::collections::HashMap;
use std::sync::Arc;

const FIXTURE: &str = include_str!("fixtures/redis-7.0.15.txt");
const KEY: &[u8] = b"s";

fn decode(tok: &str) -> Vec<u8> {
    if tok == "@" {
        return Vec::new();
    }
    if let Some(rest) = tok.strip_prefix('@') {
        let (hex, n) = rest.split_once('*').expect("bad @ token");
        let b = u8::from_str_radix(hex, 16).expect("bad @ byte");
        return vec![b; n.parse().expect("bad @ count")];
    }
    let bytes = tok.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("bad escape");
            out.push(u8::from_str_radix(hex, 16).expect("bad escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn encode(tok: &[u8]) -> String {
    if tok.is_empty() {
        return "@".into();
    }
    if tok.len() >= 16 && tok.iter().all(|&c| c == tok[0]) {
        return format!("@{:02x}*{}", tok[0], tok.len());
    }
    let safe = |c: u8| c.is_ascii_alphanumeric() || b".+-_*()".contains(&c);
    tok.iter()
        .map(|&c| {
            if safe(c) {
                (c as char).to_string()
            } else {
                format!("%{c:02x}")
            }
        })
        .collect()
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &c in data {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Redis's error text (without `ERR `) -> the fixture's variant name.
fn variant(msg: &str) -> String {
    let v = match msg {
        "The ID specified in XADD must be greater than 0-0" => "IdZero",
        "The ID specified in XADD is equal or smaller than the target stream top item" => {
            "IdTooSmall"
        }
        "The stream has exhausted the last possible ID, unable to add more items" => "Exhausted",
        "Invalid stream ID specified as stream command argument" => "Invalid",
        "invalid start ID for the interval" => "InvalidStart",
        "invalid end ID for the interval" => "InvalidEnd",
        "The ID specified in XSETID is smaller than the target stream top item" => {
            "IdSmallerThanTop"
        }
        "The ID specified in XSETID is smaller than the provided max_deleted_entry_id" => {
            "MaxDeletedGreaterThanId"
        }
        "The entries_added specified in XSETID is smaller than the target stream length" => {
            "EntriesAddedSmallerThanLength"
        }
        other => return format!("!Unknown({other})"),
    };
    format!("!{v}")
}

/// A minimal RESP2 reader for the range replies (arrays of bulk strings).
enum Resp {
    Bulk(Vec<u8>),
    Array(Vec<Resp>),
}

fn read_resp(b: &[u8], pos: &mut usize) -> Resp {
    let end = *pos
        + b[*pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("line");
    let line = std::str::from_utf8(&b[*pos + 1..end]).expect("utf8 header");
    let tag = b[*pos];
    *pos = end + 2;
    let n: usize = line.parse().expect("length");
    match tag {
        b'$' => {
            let v = b[*pos..*pos + n].to_vec();
            *pos += n + 2;
            Resp::Bulk(v)
        }
        b'*' => Resp::Array((0..n).map(|_| read_resp(b, pos)).collect()),
        t => panic!("unexpected RESP type {}", t as char),
    }
}

fn range_text(r: &Reply) -> String {
    let mut buf = bytes::BytesMut::new();
    r.encode(2, &mut buf);
    let Resp::Array(entries) = read_resp(&buf, &mut 0) else {
        panic!("a range reply that is not an array");
    };
    let parts: Vec<String> = entries
        .iter()
        .map(|e| {
            let Resp::Array(e) = e else { panic!("entry") };
            let (Resp::Bulk(id), Resp::Array(fields)) = (&e[0], &e[1]) else {
                panic!("entry shape")
            };
            let mut p = vec![String::from_utf8_lossy(id).into_owned()];
            p.extend(fields.iter().map(|f| match f {
                Resp::Bulk(f) => encode(f),
                Resp::Array(_) => panic!("field"),
            }));
            p.join(",")
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

struct Replayer {
    shared: Arc<Shared>,
    client: ClientState,
}

impl Replayer {
    /// Run `name key args...` through the command table, at clock `now_ms`.
    fn call(&mut self, name: &str, args: &[Vec<u8>], now_ms: u64) -> Reply {
        let mut argv = vec![Bytes::copy_from_slice(name.as_bytes())];
        if !name.eq_ignore_ascii_case("config") {
            argv.push(Bytes::from_static(KEY));
        }
        argv.extend(args.iter().map(|a| Bytes::copy_from_slice(a)));
        let mut store = self.shared.store.lock();
        let (done, _) = cmd::execute(
            &self.shared,
            &mut store,
            &mut self.client,
            argv,
            None,
            now_ms,
            false,
        );
        match done {
            Executed::Reply(r) => r,
            Executed::Blocked(..) => panic!("blocked"),
        }
    }

    fn exec(&mut self, name: &str, args: &[Vec<u8>], expected: &str) -> String {
        let now_ms = expected
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        let r = self.call(name, args, now_ms);
        match &r {
            Reply::Error(e) => {
                let e = String::from_utf8_lossy(e);
                variant(e.strip_prefix("ERR ").unwrap_or(&e))
            }
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(n) => n.to_string(),
            Reply::Simple(s) => String::from_utf8_lossy(s).into_owned(),
            _ if name == "XRANGE" || name == "XREVRANGE" => range_text(&r),
            other => format!("{other:?}"),
        }
    }

    fn state(&self, with_blocks: bool) -> String {
        let store = self.shared.store.lock();
        let Some(Value::Stream(s)) = store.dbs[0].get(KEY) else {
            return "state nokey".into();
        };
        if let Err(e) = s.check_invariants() {
            panic!("invariants broken: {e}");
        }
        let blocks: Vec<String> = s
            .blocks()
            .map(|b| format!("{}:{}", b.master_id(), b.listpack_bytes()))
            .collect();
        let blocks_str = if !with_blocks {
            "*".to_string()
        } else if blocks.len() <= 6 {
            blocks.join(" ")
        } else {
            let total: u64 = s.blocks().map(|b| b.listpack_bytes()).sum();
            format!(
                "#{}:{}:{:016x}",
                blocks.len(),
                total,
                fnv64(blocks.join(" ").as_bytes())
            )
        };
        format!(
            "state {} {} {} {} {} {} | {}",
            s.len(),
            s.block_count(),
            s.last_id(),
            s.max_deleted_id(),
            s.entries_added(),
            s.first_id(),
            blocks_str
        )
    }
}

#[test]
fn replay_redis_7_0_15_fixtures_through_the_command_path() {
    let mut r = Replayer {
        shared: Shared::new(Config::default()),
        client: ClientState::new(1 << 40, true),
    };
    let mut macros: HashMap<String, Vec<String>> = HashMap::new();
    let mut defining: Option<(String, Vec<String>)> = None;
    let mut failures = Vec::new();
    let (mut commands, mut states) = (0usize, 0usize);
    for (n, line) in FIXTURE.lines().enumerate() {
        let lineno = n + 1;
        if let Some((name, body)) = defining.as_mut() {
            if line == "end" {
                let (name, body) = (name.clone(), std::mem::take(body));
                macros.insert(name, body);
                defining = None;
            } else {
                body.push(line.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        match words[0] {
            "reset" => {
                r.call("DEL", &[], 0);
            }
            "config" => {
                let args: Vec<Vec<u8>> = [
                    "SET",
                    "stream-node-max-entries",
                    words[1],
                    "stream-node-max-bytes",
                    words[2],
                ]
                .iter()
                .map(|w| w.as_bytes().to_vec())
                .collect();
                assert_eq!(r.call("CONFIG", &args, 0), Reply::ok(), "line {lineno}");
            }
            "def" => defining = Some((words[1].to_string(), Vec::new())),
            "run" => {
                for m in &macros[words[1]] {
                    let toks: Vec<&str> = m.split(' ').collect();
                    let args: Vec<Vec<u8>> = toks[1..].iter().map(|t| decode(t)).collect();
                    let rep = r.exec(toks[0], &args, "");
                    assert!(
                        !rep.starts_with('!'),
                        "line {lineno}: macro command {m} failed: {rep}"
                    );
                }
            }
            "fill" => {
                let (a, b): (u64, u64) = (
                    words[1].parse().expect("fill from"),
                    words[2].parse().expect("fill to"),
                );
                for i in a..=b {
                    let args = vec![format!("{i}-1").into_bytes(), b"a".to_vec(), b"1".to_vec()];
                    r.exec("XADD", &args, "");
                }
            }
            "state" => {
                states += 1;
                let with_blocks = !line.ends_with("| *");
                let got = r.state(with_blocks);
                if got.trim_end() != line.trim_end() {
                    failures.push(format!("line {lineno}:\n  redis: {line}\n  ours:  {got}"));
                }
            }
            _ => {
                commands += 1;
                let (cmd_part, expected) = line.split_once(" => ").expect("command without reply");
                let toks: Vec<&str> = cmd_part.split(' ').filter(|t| !t.is_empty()).collect();
                let args: Vec<Vec<u8>> = toks[1..].iter().map(|t| decode(t)).collect();
                let got = r.exec(toks[0], &args, expected);
                if got != expected {
                    failures.push(format!(
                        "line {lineno}: {cmd_part}\n  redis: {expected}\n  ours:  {got}"
                    ));
                }
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        commands > 4000 && states > 5000,
        "fixture too small: {commands} commands, {states} states"
    );
}
