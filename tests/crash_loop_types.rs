//! Crash loop for the data types beside streams, against the real binary.
//! Concurrent clients (half of them in database 1) pipeline acknowledged
//! writes on their own keys:
//!
//! - strings: `SET`, `APPEND`, `INCRBY`, and `INCRBYFLOAT` (logged as
//!   `SET key value KEEPTTL`; its key sometimes has an expiry to keep);
//! - expiry as absolute time: `SET k v PX ms` (short ones that expire while
//!   the server is down, and hour-long ones) and `PEXPIREAT` (in the past:
//!   the key is gone; in the future), also on the container keys;
//! - hashes `HSET/HDEL/HINCRBY/HINCRBYFLOAT`, lists `RPUSH/LPOP/LMOVE`,
//!   sets `SADD/SREM/SMOVE` and `SPOP` (random: logged as the SREM or DEL
//!   of what it took; checked against its reply, or, when the reply never
//!   came, against what the server holds), sorted sets
//!   `ZADD/ZINCRBY/ZREM/ZPOPMIN`, with members
//!   that cross the compact encodings (intset beyond 512 members, long hash
//!   values, zsets beyond 128 members or with 65-byte members);
//! - some of them grouped in MULTI/EXEC.
//!
//! Each client keeps a model of its keys and checks every reply against it.
//! The server is SIGKILLed after a seeded random number of acknowledged
//! writes, sometimes after a `SAVE` or `BGSAVE` (so the next start decodes
//! a checkpoint and replays the log after it), with a checkpoint threshold
//! that changes from start to start (1 KiB: checkpoints all the time, so
//! kills land inside them; the default: replay only), and some starts are
//! killed during their own recovery. After each restart, per client:
//!
//! - `appendfsync always`: the client's keys equal its model after all its
//!   acknowledged commands plus some of those it had sent but whose replies
//!   never came (its pipeline in flight), in order;
//! - `everysec` / `no`: they equal the model after some prefix of its sent
//!   commands: nothing invented, no holes, no reordering;
//! - in both, a MULTI/EXEC is applied whole or not at all; a key whose
//!   absolute expiry passed (also while the server was down) is gone, one
//!   whose expiry is ahead is there with exactly that expiry (`PEXPIRETIME`
//!   within the send/acknowledge window: `PX` is logged as absolute time);
//!   no key exists that no client wrote (in that database); OBJECT
//!   ENCODING is a compact one only while the value fits it; replay
//!   reports no errors.
//!
//! The next iteration's clients start from what was recovered.
//!
//! Environment: `FERRITE_CRASH_ITERATIONS` (default 30: two thirds under
//! `always`, one third under `everysec`/`no`), `FERRITE_CRASH_SEED`
//! (default: from the clock; printed with the command that replays it).
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::conn::RespConn;
use common::resp::Node;
use common::server::{Launch, Server, TempDir};
use common::state::{call, int, items, loaded_line, pipeline, show_argv};

const CLIENTS: usize = 4;
/// Client `c` works in database `c % DATABASES` (checkpoints and log
/// records carry the database).
const DATABASES: usize = 2;
/// Expiring string keys per client.
const EX_KEYS: usize = 5;
/// Upper bound of the random number of acknowledged commands before a kill.
const MAX_ACKS_BEFORE_KILL: u64 = 6000;
/// A client stops on its own after this many commands in one iteration.
const MAX_OPS_PER_CLIENT: usize = 20_000;
const KILL_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_ITERATIONS: usize = 30;
/// Clock slack (ms) between the test's and the server's view of an expiry.
const SLACK_MS: u64 = 50;
/// An hour: expiries that never pass during a test.
const LONG_MS: u64 = 3_600_000;
/// Upper bound (ms) of the seeded random time the server stays down after a
/// kill, so short expiries pass while it is down.
const MAX_DOWNTIME_MS: u64 = 400;

fn iterations_setting() -> usize {
    std::env::var("FERRITE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

fn seed() -> u64 {
    std::env::var("FERRITE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug, PartialEq)]
enum MVal {
    Str(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    List(VecDeque<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    ZSet(BTreeMap<Vec<u8>, f64>),
}

impl MVal {
    fn is_empty(&self) -> bool {
        match self {
            MVal::Str(_) => false,
            MVal::Hash(h) => h.is_empty(),
            MVal::List(l) => l.is_empty(),
            MVal::Set(s) => s.is_empty(),
            MVal::ZSet(z) => z.is_empty(),
        }
    }
}

/// A key's value and its absolute expiry, known to lie in `[lo, hi]` ms.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    val: MVal,
    exp: Option<(u64, u64)>,
}

/// One client's keys.
type State = BTreeMap<String, Entry>;

/// What a reply must be.
#[derive(Clone, Debug)]
enum Exp {
    Ok,
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Score(f64),
    Arr(Vec<Exp>),
}

fn exp_matches(n: &Node, e: &Exp) -> bool {
    match (e, n) {
        (Exp::Ok, Node::Line { kind: b'+', head }) => head == b"OK",
        (Exp::Int(i), _) => n.as_int() == Some(*i),
        (Exp::Bulk(b), Node::Blob { kind: b'$', data }) => data == b,
        (Exp::Nil, Node::Line { kind: b'$', head }) => head == b"-1",
        (Exp::Score(f), Node::Blob { kind: b'$', data }) => parse_f64(data) == Some(*f),
        (Exp::Arr(v), Node::Agg { kind: b'*', items }) => {
            v.len() == items.len() && items.iter().zip(v).all(|(n, e)| exp_matches(n, e))
        }
        _ => false,
    }
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Whether `e` is certainly expired at `t` (its latest expiry is before it).
fn dead_at(e: &Entry, t: u64) -> bool {
    e.exp.is_some_and(|(_, hi)| hi + SLACK_MS < t)
}

/// Whether `e` is certainly alive until well after `t`.
fn alive_at(e: &Entry, t: u64) -> bool {
    e.exp.is_none_or(|(lo, _)| lo > t + 30_000)
}

fn text(parts: &[Vec<u8>], i: usize) -> String {
    String::from_utf8_lossy(&parts[i]).into_owned()
}

fn num(parts: &[Vec<u8>], i: usize) -> i64 {
    text(parts, i)
        .parse()
        .unwrap_or_else(|_| panic!("model: not a number in {}", show_argv(parts)))
}

/// Applies one command to the model, as executed at some time within
/// `[lo, hi]` (its send and acknowledge times), and returns its reply.
/// The generator only sends commands whose reply does not depend on where
/// in that window they ran.
fn apply(st: &mut State, argv: &[Vec<u8>], lo: u64, hi: u64) -> Exp {
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
    // Keys whose expiry certainly passed are gone before the command runs.
    let two_keys = name == "LMOVE" || name == "SMOVE";
    for i in 1..if two_keys { 3 } else { 2 } {
        let k = text(argv, i);
        if st.get(&k).is_some_and(|e| dead_at(e, lo)) {
            st.remove(&k);
        }
    }
    let key = text(argv, 1);
    let drop_if_empty = |st: &mut State, k: &str| {
        if st.get(k).is_some_and(|e| e.val.is_empty()) {
            st.remove(k);
        }
    };
    macro_rules! container {
        ($variant:ident, $default:expr) => {{
            let e = st.entry(key.clone()).or_insert(Entry {
                val: MVal::$variant($default),
                exp: None,
            });
            match &mut e.val {
                MVal::$variant(x) => x,
                other => panic!("model: {key} is {other:?}"),
            }
        }};
    }
    match name.as_str() {
        "SET" => {
            let exp = (argv.len() == 5).then(|| {
                let ms = num(argv, 4) as u64;
                (lo + ms, hi + ms)
            });
            st.insert(
                key,
                Entry {
                    val: MVal::Str(argv[2].clone()),
                    exp,
                },
            );
            Exp::Ok
        }
        "APPEND" => {
            let s = container!(Str, Vec::new());
            s.extend_from_slice(&argv[2]);
            Exp::Int(s.len() as i64)
        }
        "INCRBY" => {
            let s = container!(Str, b"0".to_vec());
            let n: i64 = parse_f64(s).map(|f| f as i64).unwrap_or(0) + num(argv, 2);
            *s = n.to_string().into_bytes();
            Exp::Int(n)
        }
        "INCRBYFLOAT" => {
            let s = container!(Str, b"0".to_vec());
            let v = parse_f64(s).unwrap_or(0.0) + parse_f64(&argv[2]).unwrap_or(0.0);
            *s = format!("{v}").into_bytes();
            Exp::Bulk(s.clone())
        }
        "PEXPIREAT" => match st.get_mut(&key) {
            Some(e) => {
                let at = num(argv, 2) as u64;
                e.exp = Some((at, at));
                Exp::Int(1)
            }
            None => Exp::Int(0),
        },
        "HSET" => {
            let h = container!(Hash, BTreeMap::new());
            let mut new = 0;
            for p in argv[2..].chunks(2) {
                new += i64::from(h.insert(p[0].clone(), p[1].clone()).is_none());
            }
            Exp::Int(new)
        }
        "HDEL" => {
            let Some(Entry {
                val: MVal::Hash(h), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Int(0);
            };
            let n = argv[2..].iter().filter(|f| h.remove(*f).is_some()).count();
            drop_if_empty(st, &key);
            Exp::Int(n as i64)
        }
        "HINCRBY" => {
            let h = container!(Hash, BTreeMap::new());
            let old = h.get(&argv[2]).and_then(|v| parse_f64(v)).unwrap_or(0.0) as i64;
            let n = old + num(argv, 3);
            h.insert(argv[2].clone(), n.to_string().into_bytes());
            Exp::Int(n)
        }
        "HINCRBYFLOAT" => {
            let h = container!(Hash, BTreeMap::new());
            let old = h.get(&argv[2]).and_then(|v| parse_f64(v)).unwrap_or(0.0);
            let v = format!("{}", old + parse_f64(&argv[3]).unwrap_or(0.0)).into_bytes();
            h.insert(argv[2].clone(), v.clone());
            Exp::Bulk(v)
        }
        "RPUSH" => {
            let l = container!(List, VecDeque::new());
            l.extend(argv[2..].iter().cloned());
            Exp::Int(l.len() as i64)
        }
        "LPOP" => {
            let Some(Entry {
                val: MVal::List(l), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Nil;
            };
            let v = l.pop_front();
            drop_if_empty(st, &key);
            v.map_or(Exp::Nil, Exp::Bulk)
        }
        "LMOVE" => {
            let dst = text(argv, 2);
            let left = |i: usize| argv[i].eq_ignore_ascii_case(b"LEFT");
            let (from_left, to_left) = (left(3), left(4));
            let Some(Entry {
                val: MVal::List(l), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Nil;
            };
            let Some(v) = (if from_left {
                l.pop_front()
            } else {
                l.pop_back()
            }) else {
                return Exp::Nil;
            };
            if dst == key {
                if to_left {
                    l.push_front(v.clone());
                } else {
                    l.push_back(v.clone());
                }
                return Exp::Bulk(v);
            }
            drop_if_empty(st, &key);
            let e = st.entry(dst.clone()).or_insert(Entry {
                val: MVal::List(VecDeque::new()),
                exp: None,
            });
            let MVal::List(d) = &mut e.val else {
                panic!("model: {dst} is not a list")
            };
            if to_left {
                d.push_front(v.clone());
            } else {
                d.push_back(v.clone());
            }
            Exp::Bulk(v)
        }
        "SADD" => {
            let s = container!(Set, BTreeSet::new());
            let n = argv[2..].iter().filter(|m| s.insert((*m).clone())).count();
            Exp::Int(n as i64)
        }
        "SREM" => {
            let Some(Entry {
                val: MVal::Set(s), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Int(0);
            };
            let n = argv[2..].iter().filter(|m| s.remove(*m)).count();
            drop_if_empty(st, &key);
            Exp::Int(n as i64)
        }
        "SMOVE" => {
            let dst = text(argv, 2);
            let m = &argv[3];
            let Some(Entry {
                val: MVal::Set(s), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Int(0);
            };
            if dst == key {
                return Exp::Int(i64::from(s.contains(m)));
            }
            if !s.remove(m) {
                return Exp::Int(0);
            }
            drop_if_empty(st, &key);
            let e = st.entry(dst.clone()).or_insert(Entry {
                val: MVal::Set(BTreeSet::new()),
                exp: None,
            });
            let MVal::Set(d) = &mut e.val else {
                panic!("model: {dst} is not a set")
            };
            d.insert(m.clone());
            Exp::Int(1)
        }
        "ZADD" => {
            let z = container!(ZSet, BTreeMap::new());
            let mut new = 0;
            for p in argv[2..].chunks(2) {
                let s = parse_f64(&p[0]).unwrap_or(0.0);
                new += i64::from(z.insert(p[1].clone(), s).is_none());
            }
            Exp::Int(new)
        }
        "ZINCRBY" => {
            let z = container!(ZSet, BTreeMap::new());
            let d = parse_f64(&argv[2]).unwrap_or(0.0);
            let s = z.get(&argv[3]).copied().unwrap_or(0.0) + d;
            z.insert(argv[3].clone(), s);
            Exp::Score(s)
        }
        "ZREM" => {
            let Some(Entry {
                val: MVal::ZSet(z), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Int(0);
            };
            let n = argv[2..].iter().filter(|m| z.remove(*m).is_some()).count();
            drop_if_empty(st, &key);
            Exp::Int(n as i64)
        }
        "ZPOPMIN" => {
            let count = if argv.len() > 2 {
                num(argv, 2) as usize
            } else {
                1
            };
            let Some(Entry {
                val: MVal::ZSet(z), ..
            }) = st.get_mut(&key)
            else {
                return Exp::Arr(Vec::new());
            };
            let mut sorted: Vec<(f64, Vec<u8>)> = z.iter().map(|(m, s)| (*s, m.clone())).collect();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut out = Vec::new();
            for (s, m) in sorted.into_iter().take(count) {
                z.remove(&m);
                out.push(Exp::Bulk(m));
                out.push(Exp::Score(s));
            }
            drop_if_empty(st, &key);
            Exp::Arr(out)
        }
        other => panic!("model: unknown command {other}"),
    }
}

// ---------------------------------------------------------------------------
// The clients.

fn skey(c: usize) -> String {
    format!("s:{c}")
}
fn nkey(c: usize) -> String {
    format!("n:{c}")
}
fn fkey(c: usize) -> String {
    format!("f:{c}")
}
fn exkey(c: usize, j: usize) -> String {
    format!("ex:{c}:{j}")
}
fn hkey(c: usize) -> String {
    format!("h:{c}")
}
fn lkey(c: usize, two: bool) -> String {
    format!("l{}:{c}", if two { "2" } else { "" })
}
fn setkey(c: usize, two: bool) -> String {
    format!("st{}:{c}", if two { "2" } else { "" })
}
fn zkey(c: usize) -> String {
    format!("z:{c}")
}

fn all_keys(c: usize) -> Vec<String> {
    let mut v = vec![
        skey(c),
        nkey(c),
        fkey(c),
        hkey(c),
        lkey(c, false),
        lkey(c, true),
        setkey(c, false),
        setkey(c, true),
        zkey(c),
    ];
    v.extend((0..EX_KEYS).map(|j| exkey(c, j)));
    v
}

fn argv(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// A value of varied size; now and then longer than the compact limits.
fn value(rng: &mut StdRng, tag: &str) -> String {
    if rng.gen_bool(0.03) {
        format!("{tag}-{}", "v".repeat(70))
    } else {
        format!("{tag}-{}", rng.gen_range(0..1000))
    }
}

/// A ZADD score: mostly integers, also fractions that are not exact in
/// binary and infinities (never -0 nor NaN: Redis orders -0 as 0).
fn zscore(rng: &mut StdRng) -> String {
    match rng.gen_range(0..20) {
        0 => "inf".into(),
        1 => "-inf".into(),
        2..=4 => format!("{}.{}", rng.gen_range(-50i64..50), rng.gen_range(1..1000)),
        _ => rng.gen_range(-100i64..100).to_string(),
    }
}

/// A finite ZINCRBY increment (the sums are bit-exact in the model too).
fn zincr(rng: &mut StdRng) -> String {
    match rng.gen_range(0..4) {
        0 => ["0.1", "-0.3", "2.5", "1e-5", "-7.75"][rng.gen_range(0..5)].into(),
        _ => rng.gen_range(-10i64..10).to_string(),
    }
}

/// One command for client `c`, chosen against its current model `st`.
fn gen_cmd(rng: &mut StdRng, c: usize, st: &State, tag: &str, now: u64) -> Vec<Vec<u8>> {
    let len_of = |k: &str| match st.get(k).map(|e| &e.val) {
        Some(MVal::List(l)) => l.len(),
        Some(MVal::Str(s)) => s.len(),
        _ => 0,
    };
    match rng.gen_range(0..100) {
        0..=3 => {
            if len_of(&skey(c)) > 2000 || rng.gen_bool(0.3) {
                argv(&["SET", &skey(c), &value(rng, tag)])
            } else {
                argv(&["APPEND", &skey(c), &value(rng, tag)])
            }
        }
        4..=5 => {
            // INCRBYFLOAT is logged as `SET key value KEEPTTL`: the key
            // sometimes has an expiry that must survive that.
            let f = fkey(c);
            match rng.gen_range(0..10) {
                0 => argv(&["SET", &f, &rng.gen_range(-100i64..100).to_string()]),
                1 if st.contains_key(&f) => argv(&["PEXPIREAT", &f, &(now + LONG_MS).to_string()]),
                _ => argv(&[
                    "INCRBYFLOAT",
                    &f,
                    &format!("{}", f64::from(rng.gen_range(-20i32..20)) / 2.0),
                ]),
            }
        }
        6 => {
            if rng.gen_bool(0.1) {
                argv(&["SET", &nkey(c), &rng.gen_range(-1000i64..1000).to_string()])
            } else {
                argv(&["INCRBY", &nkey(c), &rng.gen_range(-50i64..100).to_string()])
            }
        }
        7..=16 => {
            let k = exkey(c, rng.gen_range(0..EX_KEYS));
            let e = st.get(&k);
            let r = rng.gen_range(0..10);
            let certain = e.is_none_or(|e| alive_at(e, now) || dead_at(e, now));
            if r < 3 && certain {
                // In the past (gone at once), soon (gone by the restart, or
                // not), or in an hour.
                let at = match rng.gen_range(0..3) {
                    0 => now.saturating_sub(rng.gen_range(1..5000)),
                    1 => now + rng.gen_range(1..3000),
                    _ => now + LONG_MS,
                };
                argv(&["PEXPIREAT", &k, &at.to_string()])
            } else if r < 8 {
                let ms = if rng.gen_bool(0.5) {
                    rng.gen_range(50..1500)
                } else {
                    LONG_MS
                };
                argv(&["SET", &k, &value(rng, tag), "PX", &ms.to_string()])
            } else {
                argv(&["SET", &k, &value(rng, tag)])
            }
        }
        17..=30 => {
            let h = hkey(c);
            match rng.gen_range(0..10) {
                0..=4 => {
                    let mut a = argv(&["HSET", &h]);
                    for _ in 0..rng.gen_range(1..4) {
                        let f = if rng.gen_bool(0.02) {
                            format!("field-{}", "x".repeat(70))
                        } else {
                            format!("f{}", rng.gen_range(0..12))
                        };
                        a.push(f.into_bytes());
                        a.push(value(rng, tag).into_bytes());
                    }
                    a
                }
                5..=7 => {
                    let mut a = argv(&["HDEL", &h]);
                    for _ in 0..rng.gen_range(1..3) {
                        a.push(format!("f{}", rng.gen_range(0..12)).into_bytes());
                    }
                    a
                }
                9 if rng.gen_bool(0.5) => argv(&[
                    "HINCRBYFLOAT",
                    &h,
                    "fl",
                    &format!("{}", f64::from(rng.gen_range(-20i32..20)) / 4.0),
                ]),
                8 if st.contains_key(&h) => argv(&["PEXPIREAT", &h, &(now + LONG_MS).to_string()]),
                _ => argv(&[
                    "HINCRBY",
                    &h,
                    &format!("i{}", rng.gen_range(0..3)),
                    &rng.gen_range(-10i64..20).to_string(),
                ]),
            }
        }
        31..=50 => {
            let (a, b) = (lkey(c, false), lkey(c, true));
            let src_two = rng.gen_bool(0.5);
            let src = if src_two { &b } else { &a };
            match rng.gen_range(0..10) {
                0..=3 if len_of(src) < 300 => {
                    let mut v = argv(&["RPUSH", src]);
                    for _ in 0..rng.gen_range(1..4) {
                        v.push(value(rng, tag).into_bytes());
                    }
                    v
                }
                0..=5 => argv(&["LPOP", src]),
                _ => {
                    let dst = if rng.gen_bool(0.8) {
                        if src_two {
                            &a
                        } else {
                            &b
                        }
                    } else {
                        src
                    };
                    let side = |l: bool| if l { "LEFT" } else { "RIGHT" };
                    argv(&[
                        "LMOVE",
                        src,
                        dst,
                        side(rng.gen_bool(0.5)),
                        side(rng.gen_bool(0.5)),
                    ])
                }
            }
        }
        51..=72 => {
            let (a, b) = (setkey(c, false), setkey(c, true));
            // `st` takes integers only (an intset until it passes 512
            // members); `st2` also strings.
            let member = |rng: &mut StdRng, ints_only: bool| -> String {
                if ints_only || rng.gen_bool(0.5) {
                    rng.gen_range(0..700).to_string()
                } else {
                    format!("m{}", rng.gen_range(0..50))
                }
            };
            let two = rng.gen_bool(0.4);
            let k = if two { &b } else { &a };
            match rng.gen_range(0..10) {
                0..=5 => {
                    let mut v = argv(&["SADD", k]);
                    for _ in 0..rng.gen_range(1..6) {
                        v.push(member(rng, !two).into_bytes());
                    }
                    v
                }
                6..=7 => {
                    let mut v = argv(&["SREM", k]);
                    for _ in 0..rng.gen_range(1..4) {
                        v.push(member(rng, !two).into_bytes());
                    }
                    v
                }
                _ => {
                    // Into `st2` anything; into `st` only integers.
                    let (src, dst, m) = if two {
                        (&b, &a, rng.gen_range(0..700).to_string())
                    } else {
                        (&a, &b, member(rng, true))
                    };
                    argv(&["SMOVE", src, dst, &m])
                }
            }
        }
        _ => {
            let z = zkey(c);
            let member = |rng: &mut StdRng| {
                if rng.gen_bool(0.01) {
                    format!("member-{}", "z".repeat(70))
                } else {
                    format!("m{}", rng.gen_range(0..160))
                }
            };
            match rng.gen_range(0..10) {
                0..=4 => {
                    let mut v = argv(&["ZADD", &z]);
                    for _ in 0..rng.gen_range(1..5) {
                        v.push(zscore(rng).into_bytes());
                        v.push(member(rng).into_bytes());
                    }
                    v
                }
                5..=6 => argv(&["ZINCRBY", &z, &zincr(rng), &member(rng)]),
                7..=8 => {
                    let mut v = argv(&["ZREM", &z]);
                    for _ in 0..rng.gen_range(1..3) {
                        v.push(member(rng).into_bytes());
                    }
                    v
                }
                _ if rng.gen_bool(0.5) => argv(&["ZPOPMIN", &z]),
                _ => argv(&["ZPOPMIN", &z, &rng.gen_range(0..4).to_string()]),
            }
        }
    }
}

/// A unit of work: one command, or a MULTI/EXEC of several. Its effects
/// are all there or none.
#[derive(Clone, Debug)]
struct Unit {
    cmds: Vec<Vec<Vec<u8>>>,
    txn: bool,
    sent_ms: u64,
    /// When its reply arrived; for an unacknowledged one, a time after the
    /// server died.
    done_ms: u64,
    acked: bool,
    /// SPOP (always alone, last in its batch): the members its
    /// acknowledged reply gave.
    popped: Option<Vec<Vec<u8>>>,
}

impl Unit {
    fn wire(&self) -> Vec<Vec<Vec<u8>>> {
        if !self.txn {
            return self.cmds.clone();
        }
        let mut v = vec![argv(&["MULTI"])];
        v.extend(self.cmds.iter().cloned());
        v.push(argv(&["EXEC"]));
        v
    }
    fn is_spop(&self) -> bool {
        self.cmds[0][0] == b"SPOP"
    }

    /// Applies the unit to `st` with its times; the reply it must get
    /// (not for SPOP). An acknowledged SPOP removes what it replied; one
    /// whose reply never came is read off `seen` (what the server has
    /// now): if the set there is the set here less as many members as it
    /// would pop, that is what it did; otherwise it did not run.
    fn apply(&self, st: &mut State, seen: Option<&State>) -> Exp {
        if self.is_spop() {
            let key = text(&self.cmds[0], 1);
            let Some(Entry {
                val: MVal::Set(pre),
                ..
            }) = st.get_mut(&key)
            else {
                return Exp::Nil;
            };
            match (&self.popped, seen) {
                (Some(popped), _) => {
                    for m in popped {
                        pre.remove(m);
                    }
                }
                (None, Some(seen)) => {
                    let count = self.cmds[0]
                        .get(2)
                        .map_or(1, |_| num(&self.cmds[0], 2) as usize);
                    let after = match seen.get(&key).map(|e| &e.val) {
                        Some(MVal::Set(x)) => x.clone(),
                        _ => BTreeSet::new(),
                    };
                    if after.is_subset(pre) && pre.len() - after.len() == count.min(pre.len()) {
                        *pre = after;
                    }
                }
                (None, None) => {}
            }
            if pre.is_empty() {
                st.remove(&key);
            }
            return Exp::Nil;
        }
        let replies: Vec<Exp> = self
            .cmds
            .iter()
            .map(|a| apply(st, a, self.sent_ms, self.done_ms))
            .collect();
        if self.txn {
            Exp::Arr(replies)
        } else {
            replies.into_iter().next().unwrap_or(Exp::Nil)
        }
    }
}

struct ClientRun {
    units: Vec<Unit>,
    errors: Vec<String>,
}

struct Progress {
    acked: Mutex<u64>,
    cv: Condvar,
}

/// One client: pipelines small batches of units until the connection dies.
fn client(
    mut conn: RespConn,
    c: usize,
    iter: usize,
    seed: u64,
    base: State,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> ClientRun {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = ClientRun {
        units: Vec::new(),
        errors: Vec::new(),
    };
    // The model as the generator sees it (expiry windows are provisional
    // until acknowledged; a generous upper bound keeps choices safe).
    let mut st = base;
    let mut n = 0usize;
    let mut ops = 0usize;
    while !stop.load(Ordering::Relaxed) && ops < MAX_OPS_PER_CLIENT {
        let now = now_ms();
        let mut batch: Vec<Unit> = Vec::new();
        let mut expected: Vec<Exp> = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let k = if rng.gen_bool(0.15) {
                rng.gen_range(2..=4)
            } else {
                1
            };
            // Each command is chosen against the model after the previous
            // one (also inside a transaction).
            let provisional = now + KILL_WAIT.as_millis() as u64;
            let (mut cmds, mut exps) = (Vec::new(), Vec::new());
            for _ in 0..k {
                n += 1;
                let tag = format!("i{iter}c{c}n{n}");
                let cmd = gen_cmd(&mut rng, c, &st, &tag, now);
                exps.push(apply(&mut st, &cmd, now, provisional));
                cmds.push(cmd);
            }
            expected.push(if k > 1 {
                Exp::Arr(exps)
            } else {
                exps.into_iter().next().unwrap_or(Exp::Nil)
            });
            batch.push(Unit {
                cmds,
                txn: k > 1,
                sent_ms: now,
                done_ms: provisional,
                acked: false,
                popped: None,
            });
        }
        // SPOP picks at random and is logged as what it took (SREM, or DEL
        // of the whole set): last in its batch, so that when its reply
        // never comes nothing of this client ran after it.
        if rng.gen_bool(0.1) {
            let count = rng.gen_range(0..=4usize);
            let mut cmd = argv(&["SPOP", &setkey(c, true)]);
            if count > 0 {
                cmd.push(count.to_string().into_bytes());
            }
            expected.push(Exp::Nil);
            batch.push(Unit {
                cmds: vec![cmd],
                txn: false,
                sent_ms: now,
                done_ms: now + KILL_WAIT.as_millis() as u64,
                acked: false,
                popped: None,
            });
        }
        let wire: Vec<Vec<Vec<u8>>> = batch.iter().flat_map(|u| u.wire()).collect();
        ops += wire.len();
        let (replies, problem) = pipeline(&mut conn, &wire);
        let done = now_ms();
        let mut at = 0usize;
        let mut acked_now = 0u64;
        for (u, e) in batch.iter_mut().zip(&expected) {
            let w = u.wire();
            let end = at + w.len();
            if replies.len() < end {
                break;
            }
            let got = &replies[end - 1];
            if u.txn {
                for (i, r) in replies[at..end - 1].iter().enumerate() {
                    let want = if i == 0 { "OK" } else { "QUEUED" };
                    if r.text() != Some(want.as_bytes()) || r.is_error() {
                        run.errors.push(format!(
                            "client {c}: {} -> {}",
                            show_argv(&w[i]),
                            r.render()
                        ));
                    }
                }
            }
            if u.is_spop() {
                // The members it took: distinct members of the set, as
                // many as asked (or all).
                let key = text(&u.cmds[0], 1);
                let pre = match st.get(&key).map(|e| &e.val) {
                    Some(MVal::Set(x)) => x.clone(),
                    _ => BTreeSet::new(),
                };
                let count = u.cmds[0].get(2).map(|_| num(&u.cmds[0], 2) as usize);
                let got_members: Vec<Vec<u8>> = match (got, count) {
                    (Node::Agg { items, .. }, Some(_)) => items
                        .iter()
                        .map(|x| x.text().unwrap_or_default().to_vec())
                        .collect(),
                    (Node::Blob { data, .. }, None) => vec![data.clone()],
                    (Node::Line { kind: b'$', .. }, None) => Vec::new(),
                    _ => vec![b"<bad reply>".to_vec()],
                };
                let distinct: BTreeSet<&Vec<u8>> = got_members.iter().collect();
                let want = count.unwrap_or(1).min(pre.len());
                if got_members.len() != want
                    || distinct.len() != want
                    || !got_members.iter().all(|m| pre.contains(m))
                {
                    run.errors.push(format!(
                        "client {c} iteration {iter}: {} -> {} from {} members {:?}",
                        show_argv(&u.cmds[0]),
                        got.render(),
                        pre.len(),
                        pre.iter()
                            .map(|m| String::from_utf8_lossy(m))
                            .collect::<Vec<_>>()
                    ));
                }
                u.popped = Some(got_members);
                u.apply(&mut st, None);
            } else if !exp_matches(got, e) {
                run.errors.push(format!(
                    "client {c} iteration {iter}: {} -> {}, the model says {e:?}",
                    u.cmds
                        .iter()
                        .map(|a| show_argv(a))
                        .collect::<Vec<_>>()
                        .join(" ; "),
                    got.render()
                ));
            }
            u.acked = true;
            u.done_ms = done;
            acked_now += u.cmds.len() as u64;
            at = end;
        }
        run.units.extend(batch);
        if acked_now > 0 {
            let mut a = progress.acked.lock().unwrap_or_else(|e| e.into_inner());
            *a += acked_now;
            progress.cv.notify_all();
        }
        if problem.is_some() || !run.errors.is_empty() {
            break;
        }
    }
    // Unacknowledged units ran (if at all) before now.
    let end = now_ms();
    for u in run.units.iter_mut().filter(|u| !u.acked) {
        u.done_ms = end;
    }
    run
}

// ---------------------------------------------------------------------------
// Verification.

/// Whether a compact encoding holds only what it may (Redis 7.0's
/// defaults: intset up to 512 integers; listpack hashes and zsets up to
/// 128 entries of at most 64 bytes) and the name is one of the type's.
fn encoding_fits(v: &MVal, enc: &str) -> bool {
    fn small<'a>(mut it: impl Iterator<Item = &'a Vec<u8>>, n: usize) -> bool {
        n <= 128 && it.all(|x| x.len() <= 64)
    }
    let is_int = |m: &Vec<u8>| {
        std::str::from_utf8(m)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|n| n.to_string().as_bytes() == m.as_slice())
    };
    match (v, enc) {
        (MVal::Str(_), "int" | "embstr" | "raw") => true,
        (MVal::Hash(_), "hashtable")
        | (MVal::Set(_), "hashtable")
        | (MVal::ZSet(_), "skiplist") => true,
        (MVal::Hash(h), "listpack") => small(h.iter().flat_map(|(f, v)| [f, v]), h.len()),
        (MVal::List(_), "listpack" | "quicklist") => true,
        (MVal::Set(s), "intset") => s.len() <= 512 && s.iter().all(is_int),
        (MVal::ZSet(z), "listpack") => small(z.keys(), z.len()),
        _ => false,
    }
}

/// Reads client `c`'s keys: value and exact expiry (as a one-point window).
fn observe(conn: &mut RespConn, c: usize) -> State {
    let mut out = State::new();
    let bytes = |n: &Node| n.text().map(|t| t.to_vec()).unwrap_or_default();
    for k in all_keys(c) {
        let t = call(conn, &argv(&["TYPE", &k]));
        let val = match t.text() {
            Some(b"none") => continue,
            Some(b"string") => {
                let v = call(conn, &argv(&["GET", &k]));
                if !matches!(v, Node::Blob { .. }) {
                    continue; // expired between TYPE and GET
                }
                MVal::Str(bytes(&v))
            }
            Some(b"hash") => {
                let v = call(conn, &argv(&["HGETALL", &k]));
                MVal::Hash(
                    items(&v)
                        .chunks(2)
                        .map(|p| (bytes(&p[0]), bytes(&p[1])))
                        .collect(),
                )
            }
            Some(b"list") => {
                let v = call(conn, &argv(&["LRANGE", &k, "0", "-1"]));
                MVal::List(items(&v).iter().map(bytes).collect())
            }
            Some(b"set") => {
                let v = call(conn, &argv(&["SMEMBERS", &k]));
                MVal::Set(items(&v).iter().map(bytes).collect())
            }
            Some(b"zset") => {
                let v = call(conn, &argv(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]));
                let pairs: Vec<(Vec<u8>, f64)> = items(&v)
                    .chunks(2)
                    .map(|p| (bytes(&p[0]), parse_f64(&bytes(&p[1])).unwrap_or(f64::NAN)))
                    .collect();
                // The order must be (score, member).
                let mut sorted = pairs.clone();
                sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                assert!(sorted == pairs, "{k}: ZRANGE out of order: {pairs:?}");
                MVal::ZSet(pairs.into_iter().collect())
            }
            other => panic!(
                "{k} has unexpected type {:?}",
                other.map(String::from_utf8_lossy)
            ),
        };
        let enc = call(conn, &argv(&["OBJECT", "ENCODING", &k]));
        if let Some(enc) = enc.text().filter(|_| !enc.is_error()) {
            assert!(
                encoding_fits(&val, &String::from_utf8_lossy(enc)),
                "{k}: OBJECT ENCODING {} for {}",
                String::from_utf8_lossy(enc),
                show(Some(&Entry {
                    val: val.clone(),
                    exp: None
                }))
            );
        }
        let e = int(&call(conn, &argv(&["PEXPIRETIME", &k])));
        let exp = match e {
            -2 => continue,
            -1 => None,
            at => Some((at as u64, at as u64)),
        };
        out.insert(k, Entry { val, exp });
    }
    out
}

/// Whether the observed key `s` (read between `t0` and `t1`) is what the
/// model holds, `m`: a key certainly expired must be gone, one certainly
/// alive present with its expiry inside the model's window, and one in
/// between either.
fn key_agrees(m: Option<&Entry>, s: Option<&Entry>, t0: u64, t1: u64) -> bool {
    let Some(m) = m else {
        return s.is_none();
    };
    let gone = m.exp.is_some_and(|(_, hi)| hi + SLACK_MS < t0);
    let here = m.exp.is_none_or(|(lo, _)| lo > t1 + SLACK_MS);
    match s {
        None => !here,
        Some(s) => {
            !gone
                && s.val == m.val
                && match (m.exp, s.exp) {
                    (None, None) => true,
                    (Some((lo, hi)), Some((at, _))) => at + SLACK_MS >= lo && at <= hi + SLACK_MS,
                    _ => false,
                }
        }
    }
}

fn agrees(model: &State, seen: &State, t0: u64, t1: u64) -> bool {
    model
        .keys()
        .chain(seen.keys())
        .all(|k| key_agrees(model.get(k), seen.get(k), t0, t1))
}

/// Readable form of a key's value and expiry window.
fn show(e: Option<&Entry>) -> String {
    let Some(e) = e else {
        return "(none)".into();
    };
    let b = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let v = match &e.val {
        MVal::Str(s) => format!("string {:?}", b(s)),
        MVal::Hash(h) => format!(
            "hash {:?}",
            h.iter().map(|(f, v)| (b(f), b(v))).collect::<Vec<_>>()
        ),
        MVal::List(l) => format!("list {:?}", l.iter().map(|x| b(x)).collect::<Vec<_>>()),
        MVal::Set(s) => format!("set {:?}", s.iter().map(|x| b(x)).collect::<Vec<_>>()),
        MVal::ZSet(z) => format!(
            "zset {:?}",
            z.iter().map(|(m, s)| (b(m), *s)).collect::<Vec<_>>()
        ),
    };
    format!("{v}, expiry {:?}", e.exp)
}

/// Per client, what it started from and what it sent in one iteration.
struct Pending {
    base: State,
    units: Vec<Unit>,
    /// `always`: every acknowledged unit must be there.
    strict: bool,
    /// When the server was killed.
    killed_ms: u64,
}

/// What one client's verification found.
struct Found {
    /// The recovered keys: the next iteration's base.
    state: State,
    /// Units recovered (the prefix length) and acknowledged.
    recovered: usize,
    acked: usize,
    /// Keys of the recovered state whose expiry passed between the kill
    /// and the verification (gone, as they must be).
    expired_while_down: usize,
}

/// Finds the prefix of `p.units` that the server recovered.
fn verify_client(
    conn: &mut RespConn,
    c: usize,
    p: &Pending,
    ctx: &dyn Fn(String) -> String,
) -> Found {
    let t0 = now_ms();
    let sel = call(conn, &argv(&["SELECT", &(c % DATABASES).to_string()]));
    assert!(!sel.is_error(), "SELECT: {}", sel.render());
    let seen = observe(conn, c);
    let t1 = now_ms();
    let acked = p.units.iter().take_while(|u| u.acked).count();
    let lowest = if p.strict { acked } else { 0 };
    let mut st = p.base.clone();
    let mut best = None;
    let mut at_acked = None;
    for i in 0..=p.units.len() {
        if i >= lowest && agrees(&st, &seen, t0, t1) {
            best = Some((i, st.clone()));
        }
        if i == acked {
            at_acked = Some(st.clone());
        }
        if i < p.units.len() {
            p.units[i].apply(&mut st, Some(&seen));
        }
    }
    let Some((recovered, model)) = best else {
        let want = at_acked.unwrap_or_default();
        let diff: Vec<String> = want
            .keys()
            .chain(seen.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| !key_agrees(want.get(*k), seen.get(*k), t0, t1))
            .map(|k| {
                format!(
                    "  {k}:\n    model {}\n    found {}",
                    show(want.get(k)),
                    show(seen.get(k))
                )
            })
            .collect();
        let tail: Vec<String> = p.units[acked.saturating_sub(3)..(acked + 5).min(p.units.len())]
            .iter()
            .map(|u| {
                format!(
                    "  {}{}",
                    if u.acked { "acked " } else { "sent  " },
                    u.cmds
                        .iter()
                        .map(|a| show_argv(a))
                        .collect::<Vec<_>>()
                        .join(" ; ")
                )
            })
            .collect();
        panic!(
            "{}",
            ctx(format!(
                "client {c}: the recovered keys are the model after no allowed prefix \
                 ({} units sent, {acked} acknowledged, strict {}); keys that differ from \
                 the acknowledged state (read at {t0}..{t1} ms, killed at {} ms):\n{}\n\
                 units around the acknowledged end:\n{}",
                p.units.len(),
                p.strict,
                p.killed_ms,
                diff.join("\n"),
                tail.join("\n")
            ))
        );
    };
    let expired_while_down = model
        .iter()
        .filter(|(k, m)| !seen.contains_key(*k) && m.exp.is_some_and(|(lo, _)| lo >= p.killed_ms))
        .count();
    Found {
        state: seen,
        recovered,
        acked,
        expired_while_down,
    }
}

/// Start on `dir`, sometimes killing a first attempt during its recovery.
fn start(
    dir: &TempDir,
    extra: &[String],
    rng: &mut StdRng,
    ctx: &dyn Fn(String) -> String,
) -> (Server, u64) {
    let args: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    let launch = Launch::ferrite("crash-types").dir(dir.path()).args(&args);
    if rng.gen_bool(0.2) {
        let mut s = launch
            .clone()
            .no_wait()
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..30_000)));
        s.kill9().unwrap_or_else(|e| panic!("{e}"));
    }
    let s = launch.start().unwrap_or_else(|e| panic!("{}", ctx(e)));
    let loaded = loaded_line(&s.log_text())
        .unwrap_or_else(|| panic!("no 'DB loaded' line:\n{}", s.log_tail(20)));
    assert!(
        loaded.replay_errors == 0,
        "{}",
        ctx(format!("replay errors {loaded:?}\n{}", s.log_tail(40)))
    );
    (s, loaded.checkpoint_seq)
}

fn crash_loop(tag: &str, test: &str, policies: &[&str], iterations: usize) {
    let seed = seed();
    let requested = iterations_setting();
    println!(
        "{tag}: FERRITE_CRASH_SEED={seed} iterations={iterations} (to replay: \
         FERRITE_CRASH_SEED={seed} FERRITE_CRASH_ITERATIONS={requested} \
         cargo test --release --test crash_loop_types {test} -- --nocapture)"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new(tag).unwrap_or_else(|e| panic!("{e}"));
    let mut pending: Vec<Pending> = (0..CLIENTS)
        .map(|_| Pending {
            base: State::new(),
            units: Vec::new(),
            strict: true,
            killed_ms: 0,
        })
        .collect();
    let (mut total_acked, mut total_units, mut total_recovered) = (0u64, 0usize, 0usize);
    let (mut saves, mut checkpoint_starts, mut lost_units) = (0usize, 0usize, 0usize);
    let (mut expired_while_down, mut inflight_recovered) = (0usize, 0usize);
    let mut saved = false;
    for iter in 0..=iterations {
        let ctx = |msg: String| format!("iteration {iter} (FERRITE_CRASH_SEED={seed}): {msg}");
        let policy = policies[iter % policies.len()];
        let ckpt = ["1024", "65536", "64mb"][rng.gen_range(0..3)];
        let io_threads = ["1", "2"][rng.gen_range(0..2)];
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
            "--io-threads".to_string(),
            io_threads.to_string(),
        ];
        let (mut server, checkpoint_seq) = start(&dir, &extra, &mut rng, &ctx);
        if saved {
            assert!(
                checkpoint_seq > 0,
                "{}",
                ctx(
                    "an acknowledged SAVE before the kill, but the start loaded no checkpoint"
                        .into()
                )
            );
        }
        if checkpoint_seq > 0 {
            checkpoint_starts += 1;
        }
        // Verify what the previous iteration's clients did.
        let mut conn = server.connect().unwrap_or_else(|e| panic!("{}", ctx(e)));
        let mut bases = Vec::new();
        for (c, p) in pending.iter().enumerate() {
            let f = verify_client(&mut conn, c, p, &ctx);
            lost_units += f.acked.saturating_sub(f.recovered);
            inflight_recovered += f.recovered.saturating_sub(f.acked);
            total_recovered += f.recovered;
            expired_while_down += f.expired_while_down;
            bases.push(f.state);
        }
        // No key that no client wrote, in any database.
        for db in 0..DATABASES {
            call(&mut conn, &argv(&["SELECT", &db.to_string()]));
            let known: BTreeSet<String> = (0..CLIENTS)
                .filter(|c| c % DATABASES == db)
                .flat_map(all_keys)
                .collect();
            for k in items(&call(&mut conn, &argv(&["KEYS", "*"]))) {
                let k = String::from_utf8_lossy(k.text().unwrap_or_default()).into_owned();
                assert!(
                    known.contains(&k),
                    "{}",
                    ctx(format!("unknown key {k:?} in db {db}"))
                );
            }
        }
        if iter == iterations {
            let _ = server.kill9();
            break;
        }

        let target = rng.gen_range(1..=MAX_ACKS_BEFORE_KILL);
        // None, SAVE or BGSAVE halfway to the kill.
        let save = [None, None, Some("SAVE"), Some("BGSAVE")][rng.gen_range(0..4)];
        let progress = Arc::new(Progress {
            acked: Mutex::new(0),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let starts = bases.clone();
        let handles: Vec<_> = bases
            .into_iter()
            .enumerate()
            .map(|(c, base)| {
                let (p, s) = (progress.clone(), stop.clone());
                let mut conn = server.connect().unwrap_or_else(|e| panic!("{e}"));
                let sel = call(&mut conn, &argv(&["SELECT", &(c % DATABASES).to_string()]));
                assert!(!sel.is_error(), "SELECT: {}", sel.render());
                let cseed = rng.gen();
                std::thread::spawn(move || client(conn, c, iter, cseed, base, p, s))
            })
            .collect();
        saved = false;
        let deadline = Instant::now() + KILL_WAIT;
        let wait_for = |n: u64| {
            let mut a = progress.acked.lock().unwrap_or_else(|e| e.into_inner());
            while *a < n && Instant::now() < deadline {
                a = progress
                    .cv
                    .wait_timeout(a, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if handles.iter().all(|h| h.is_finished()) {
                    break;
                }
            }
        };
        if let Some(cmd) = save {
            wait_for(target / 2);
            let r = call(&mut conn, &argv(&[cmd]));
            let t = String::from_utf8_lossy(r.text().unwrap_or_default()).into_owned();
            assert!(
                !r.is_error() || t.contains("in progress"),
                "{}",
                ctx(format!("{cmd} -> {}", r.render()))
            );
            // (A checkpoint of nothing covers no record: only one taken
            // after acknowledged writes must be found by the next start.)
            let acked = *progress.acked.lock().unwrap_or_else(|e| e.into_inner());
            saved = cmd == "SAVE" && !r.is_error() && acked > 0;
            saves += 1;
        }
        wait_for(target);
        server.kill9().unwrap_or_else(|e| panic!("{e}"));
        let killed_ms = now_ms();
        stop.store(true, Ordering::Relaxed);
        // NOTE: not synchronisation: the server stays down a while, so
        // that expiries pass before the restart.
        if rng.gen_bool(0.5) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..MAX_DOWNTIME_MS)));
        }
        let mut errors = Vec::new();
        for (c, h) in handles.into_iter().enumerate() {
            let run = h
                .join()
                .unwrap_or_else(|_| panic!("client thread panicked"));
            errors.extend(run.errors);
            total_acked += run
                .units
                .iter()
                .filter(|u| u.acked)
                .map(|u| u.cmds.len() as u64)
                .sum::<u64>();
            total_units += run.units.len();
            // The next verification replays these units on what this
            // iteration's client started from.
            pending[c] = Pending {
                base: starts[c].clone(),
                units: run.units,
                strict: policy == "always",
                killed_ms,
            };
        }
        assert!(
            errors.is_empty(),
            "{}",
            ctx(format!(
                "replies differ from the model:\n{}",
                errors.join("\n")
            ))
        );
    }
    println!(
        "{tag}: {iterations} kills, {total_acked} acknowledged commands in {total_units} units, \
         {total_recovered} units recovered ({inflight_recovered} of them never acknowledged; \
         {lost_units} acknowledged units lost, allowed only under everysec/no), {expired_while_down} keys expired while the server was down, \
         {saves} SAVE/BGSAVE, {checkpoint_starts} starts from a checkpoint, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn kill9_keeps_every_type_under_always() {
    let n = iterations_setting();
    crash_loop(
        "crash-types-always",
        "kill9_keeps_every_type_under_always",
        &["always"],
        n - n / 3,
    );
}

#[test]
fn kill9_keeps_a_prefix_of_every_type_under_everysec_and_no() {
    crash_loop(
        "crash-types-everysec",
        "kill9_keeps_a_prefix_of_every_type_under_everysec_and_no",
        &["everysec", "no"],
        iterations_setting() / 3,
    );
}
