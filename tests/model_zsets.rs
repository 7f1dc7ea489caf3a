//! Model-based property test of the sorted-set commands through an
//! in-process `Session`: random ZADD (every flag: NX XX GT LT CH INCR, and
//! their refused combinations), ZINCRBY, ZREM, ZRANGE (by rank, BYSCORE,
//! BYLEX, REV, LIMIT, WITHSCORES), ZRANGEBYSCORE/ZREVRANGE, ZRANK,
//! ZREVRANK, ZSCORE, ZMSCORE, ZCOUNT, ZLEXCOUNT, ZREMRANGEBYSCORE/RANK/LEX,
//! ZPOPMIN/ZPOPMAX (with and without a count), ZRANDMEMBER, ZSCAN, DEL and
//! plain SETs (WRONGTYPE) on a few keys, checked after every step against a
//! `BTreeMap` model ordered by (score, member). The model knows Redis 7.0's
//! encodings: `listpack` while there are at most `zset-max-listpack-entries`
//! (128) members none longer than `zset-max-listpack-value` (64 bytes),
//! `skiplist` for good once an insert crosses either. Lex ranges are only
//! defined when all scores are equal, so they run on `z3`, whose scores
//! stay 0, and are skipped on a key whose scores differ. At the end the
//! logged effects are replayed into a fresh session, which must hold the
//! same sorted sets with the same encodings.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;
use ferrite_db::store::Value;
use proptest::prelude::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// `z1`, `z2` hold any scores; `z3` only 0 (lex ranges); `str` may be a string.
const KEYS: [&str; 4] = ["z1", "z2", "z3", "str"];
const LEX_KEY: usize = 2;
const LISTPACK_ENTRIES: usize = 128;
const LISTPACK_VALUE: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    /// Flags as bits: NX XX GT LT CH INCR.
    Add(usize, u8, Vec<(i8, u16)>),
    AddRange(usize, u16, u8),
    IncrBy(usize, i8, u16),
    Rem(usize, Vec<u16>),
    RangeRank(usize, i8, i8, bool, bool),
    RangeScore(usize, Bound, Bound, bool, Option<(i8, i8)>, bool),
    RangeLex(usize, u16, u16, u8, bool, Option<(i8, i8)>),
    /// ZRANGE with options Redis refuses (LIMIT by rank, WITHSCORES BYLEX).
    RangeBad(usize, bool),
    Rank(usize, u16),
    Scores(usize, Vec<u16>),
    Count(usize, Bound, Bound),
    RemScore(usize, Bound, Bound),
    RemRank(usize, i8, i8),
    RemLex(usize, u16, u16, u8),
    Pop(usize, bool, Option<i8>),
    /// BZPOPMIN/BZPOPMAX (a session never blocks: as inside MULTI).
    BPop(Vec<usize>, bool),
    RandMember(usize, i16, bool),
    Scan(usize, u8),
    DelKey(usize),
    SetString(usize),
    /// PEXPIRE: which writes keep a TTL and which drop it.
    Expire(usize),
}

/// A score bound: value (quarters; ±127/128 = ±inf) and exclusive.
#[derive(Debug, Clone, Copy)]
struct Bound(i8, bool);

fn score(v: i8) -> f64 {
    match v {
        127 => f64::INFINITY,
        -128 => f64::NEG_INFINITY,
        v => f64::from(v) / 4.0,
    }
}

fn score_text(v: f64) -> String {
    if v == f64::INFINITY {
        "+inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{v}")
    }
}

impl Bound {
    fn text(self) -> String {
        let s = score_text(score(self.0));
        if self.1 {
            format!("({s}")
        } else {
            s
        }
    }
    fn below(self, x: f64) -> bool {
        let b = score(self.0);
        if self.1 {
            b < x
        } else {
            b <= x
        }
    }
    fn above(self, x: f64) -> bool {
        let b = score(self.0);
        if self.1 {
            b > x
        } else {
            b >= x
        }
    }
}

/// Members: short names, a few long ones (skiplist material).
fn member(m: u16) -> Vec<u8> {
    if m % 53 == 52 {
        format!("long-member-{m:0>70}").into_bytes()
    } else {
        format!("m{m}").into_bytes()
    }
}

/// A lex bound: 0 `-`, 1 `+`, 2 `[m`, 3 `(m`.
fn lex_bound(m: &[u8], kind: u8) -> Vec<u8> {
    match kind {
        0 => b"-".to_vec(),
        1 => b"+".to_vec(),
        2 => [b"[".as_slice(), m].concat(),
        _ => [b"(".as_slice(), m].concat(),
    }
}

/// Lex bounds from two members, the smaller (bytewise) first; each nibble
/// of `kinds` picks a bound's form: mostly `[m` or `(m`, now and then `-`
/// or `+`.
fn lex_bounds(x: u16, y: u16, kinds: u8) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (member(x), member(y));
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    let kind = |n: u8| match n {
        0 | 1 => n,
        2..=8 => 2,
        _ => 3,
    };
    (
        lex_bound(&a, kind(kinds % 16)),
        lex_bound(&b, kind(kinds / 16)),
    )
}

fn bound() -> impl Strategy<Value = Bound> {
    (-12i8..12, any::<bool>()).prop_map(|(v, e)| Bound(v, e))
}

fn score_v() -> impl Strategy<Value = i8> {
    prop_oneof![20 => -12i8..12, 1 => Just(127i8), 1 => Just(-128i8)]
}

/// Mostly the key whose scores stay equal.
fn lex_key() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(LEX_KEY), 1 => 0..KEYS.len()]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let m = 0u16..160;
    let limit = prop::option::of((-1i8..5, -1i8..6));
    prop_oneof![
        8 => (k.clone(), prop_oneof![3 => Just(0u8), 2 => 0u8..64], prop::collection::vec((score_v(), m.clone()), 1..8))
            .prop_map(|(k, f, p)| Op::Add(k, f, p)),
        1 => (k.clone(), 1u16..180, any::<u8>()).prop_map(|(k, n, s)| Op::AddRange(k, n, s)),
        2 => (k.clone(), score_v(), m.clone()).prop_map(|(k, i, m)| Op::IncrBy(k, i, m)),
        2 => (k.clone(), prop::collection::vec(m.clone(), 1..5)).prop_map(|(k, v)| Op::Rem(k, v)),
        2 => (k.clone(), -10i8..10, -10i8..10, any::<bool>(), any::<bool>()).prop_map(|(k, a, b, r, w)| Op::RangeRank(k, a, b, r, w)),
        2 => (k.clone(), bound(), bound(), any::<bool>(), limit.clone(), any::<bool>()).prop_map(|(k, a, b, r, l, w)| Op::RangeScore(k, a, b, r, l, w)),
        3 => (lex_key(), m.clone(), m.clone(), any::<u8>(), any::<bool>(), limit).prop_map(|(k, a, b, kinds, r, l)| Op::RangeLex(k, a, b, kinds, r, l)),
        1 => (k.clone(), any::<bool>()).prop_map(|(k, l)| Op::RangeBad(k, l)),
        1 => (k.clone(), m.clone()).prop_map(|(k, m)| Op::Rank(k, m)),
        1 => (k.clone(), prop::collection::vec(m.clone(), 1..5)).prop_map(|(k, v)| Op::Scores(k, v)),
        1 => (k.clone(), bound(), bound()).prop_map(|(k, a, b)| Op::Count(k, a, b)),
        1 => (k.clone(), bound(), bound()).prop_map(|(k, a, b)| Op::RemScore(k, a, b)),
        1 => (k.clone(), -10i8..10, -10i8..10).prop_map(|(k, a, b)| Op::RemRank(k, a, b)),
        1 => (lex_key(), m.clone(), m, any::<u8>()).prop_map(|(k, a, b, kinds)| Op::RemLex(k, a, b, kinds)),
        2 => (k.clone(), any::<bool>(), prop::option::of(-1i8..6)).prop_map(|(k, x, c)| Op::Pop(k, x, c)),
        1 => (k.clone(), -12i16..12, any::<bool>()).prop_map(|(k, n, w)| Op::RandMember(k, n, w)),
        1 => (prop::collection::vec(k.clone(), 1..3), any::<bool>()).prop_map(|(ks, x)| Op::BPop(ks, x)),
        1 => (k.clone(), 1u8..40).prop_map(|(k, c)| Op::Scan(k, c)),
        1 => k.clone().prop_map(Op::DelKey),
        1 => k.clone().prop_map(Op::Expire),
        1 => k.prop_map(Op::SetString),
    ]
}

#[derive(Clone, Debug, Default)]
struct ZModel {
    scores: BTreeMap<Vec<u8>, f64>,
    table: bool,
}

impl ZModel {
    /// Inserts or updates; an insert converts as Redis does.
    fn set(&mut self, m: Vec<u8>, s: f64) {
        if !self.scores.contains_key(&m)
            && (m.len() > LISTPACK_VALUE || self.scores.len() + 1 > LISTPACK_ENTRIES)
        {
            self.table = true;
        }
        self.scores.insert(m, s);
    }
    /// Ordered by (score, member).
    fn sorted(&self) -> Vec<(f64, Vec<u8>)> {
        let mut v: Vec<(f64, Vec<u8>)> = self.scores.iter().map(|(m, s)| (*s, m.clone())).collect();
        v.sort_by(|a, b| {
            a.0.partial_cmp(&b.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
        v
    }
    fn same_scores(&self) -> bool {
        let mut it = self.scores.values();
        let first = it.next().copied();
        it.all(|s| Some(*s) == first)
    }
}

#[derive(Clone, Debug)]
enum Val {
    Str,
    Z(ZModel),
}

type Model = BTreeMap<usize, Val>;

type Effects = Vec<(usize, Vec<Bytes>)>;

thread_local! {
    /// Keys of the model that have a TTL.
    static TTL: std::cell::RefCell<BTreeSet<usize>> = const { std::cell::RefCell::new(BTreeSet::new()) };
    static LOG: std::cell::RefCell<Effects> = const { std::cell::RefCell::new(Vec::new()) };
}

fn cmd(s: &mut Session, parts: &[Vec<u8>]) -> Reply {
    let argv: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let ran = s.atomically(|a| {
        let r = a.call(argv);
        let effects = a.store().take_effects();
        LOG.with(|l| l.borrow_mut().extend(effects));
        r
    });
    ran.map_or_else(|e| e, |(r, _)| r)
}

fn a(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn key(k: usize) -> Vec<u8> {
    KEYS[k].as_bytes().to_vec()
}

fn bulk(r: &Reply) -> Vec<u8> {
    match r {
        Reply::Bulk(b) => b.to_vec(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn num(r: &Reply) -> f64 {
    match r {
        Reply::Double(d) => *d,
        Reply::Bulk(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a score: {b:?}")),
        other => panic!("expected a score, got {other:?}"),
    }
}

fn arr(r: &Reply) -> &[Reply] {
    match r {
        Reply::Array(items) | Reply::Set(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// Members of a reply, with scores when `withscores` (flat or nested pairs).
fn pairs(r: &Reply, withscores: bool) -> Vec<(Vec<u8>, Option<f64>)> {
    let items = arr(r);
    if !withscores {
        return items.iter().map(|m| (bulk(m), None)).collect();
    }
    if items.first().is_some_and(|x| matches!(x, Reply::Array(_))) {
        return items
            .iter()
            .map(|p| {
                let p = arr(p);
                (bulk(&p[0]), Some(num(&p[1])))
            })
            .collect();
    }
    items
        .chunks(2)
        .map(|p| (bulk(&p[0]), Some(num(&p[1]))))
        .collect()
}

fn want_pairs(v: &[(f64, Vec<u8>)], withscores: bool) -> Vec<(Vec<u8>, Option<f64>)> {
    v.iter()
        .map(|(s, m)| (m.clone(), withscores.then_some(*s)))
        .collect()
}

fn is_err(r: &Reply, prefix: &str) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with(prefix.as_bytes()))
}

fn zm(m: &Model, k: usize) -> Option<&ZModel> {
    match m.get(&k) {
        Some(Val::Z(z)) => Some(z),
        _ => None,
    }
}

fn is_str(m: &Model, k: usize) -> bool {
    matches!(m.get(&k), Some(Val::Str))
}

fn drop_empty(m: &mut Model, k: usize) {
    if zm(m, k).is_some_and(|z| z.scores.is_empty()) {
        m.remove(&k);
    }
}

/// Redis's rank normalisation: inclusive `(start, end)` or `None`.
fn rank_bounds(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let end = if end < 0 { end + len } else { end };
    if start > end || start >= len {
        return None;
    }
    Some((start as usize, end.min(len - 1) as usize))
}

/// LIMIT offset count on an ordered result (negative offset: nothing,
/// negative count: all).
fn apply_limit<T: Clone>(v: Vec<T>, limit: Option<(i8, i8)>) -> Vec<T> {
    match limit {
        None => v,
        Some((o, _)) if o < 0 => Vec::new(),
        Some((o, c)) => {
            let it = v.into_iter().skip(o as usize);
            if c < 0 {
                it.collect()
            } else {
                it.take(c as usize).collect()
            }
        }
    }
}

/// Whether `x` is within the lex range given as raw bounds.
fn in_lex(x: &[u8], min: &[u8], max: &[u8]) -> bool {
    let lo = match min[0] {
        b'-' => true,
        b'+' => false,
        b'[' => x >= &min[1..],
        _ => x > &min[1..],
    };
    let hi = match max[0] {
        b'+' => true,
        b'-' => false,
        b'[' => x <= &max[1..],
        _ => x < &max[1..],
    };
    lo && hi
}

/// The key has a TTL exactly when the model says so.
fn check_ttl(s: &mut Session, k: usize, m: &Model) {
    let r = cmd(s, &[b"PTTL".to_vec(), key(k)]);
    let want = TTL.with(|t| t.borrow().contains(&k));
    match r {
        Reply::Int(-2) => assert!(!m.contains_key(&k), "{} is gone", KEYS[k]),
        Reply::Int(-1) => assert!(!want, "{} lost its TTL", KEYS[k]),
        Reply::Int(n) if n > 0 => assert!(want, "{} has a TTL it should not have", KEYS[k]),
        other => panic!("PTTL {}: {other:?}", KEYS[k]),
    }
}

fn check_key(s: &mut Session, k: usize, m: &Model) {
    let name = KEYS[k];
    match m.get(&k) {
        None => assert_eq!(cmd(s, &a(&[b"EXISTS", name.as_bytes()])), Reply::Int(0)),
        Some(Val::Str) => assert_eq!(
            cmd(s, &a(&[b"TYPE", name.as_bytes()])),
            Reply::Simple(Bytes::from_static(b"string"))
        ),
        Some(Val::Z(z)) => {
            let r = cmd(
                s,
                &a(&[b"ZRANGE", name.as_bytes(), b"0", b"-1", b"WITHSCORES"]),
            );
            assert_eq!(pairs(&r, true), want_pairs(&z.sorted(), true), "{name}");
            assert_eq!(
                cmd(s, &a(&[b"ZCARD", name.as_bytes()])),
                Reply::Int(z.scores.len() as i64)
            );
            let enc = {
                let store = s.shared().store.lock();
                match store.dbs[0].get(name.as_bytes()) {
                    Some(Value::ZSet(v)) => v.encoding(),
                    other => panic!("{name} is not a zset: {other:?}"),
                }
            };
            let want = if z.table { "skiplist" } else { "listpack" };
            assert_eq!(enc, want, "{name} encoding ({} members)", z.scores.len());
            assert_eq!(
                cmd(s, &a(&[b"OBJECT", b"ENCODING", name.as_bytes()])),
                Reply::Bulk(Bytes::from_static(want.as_bytes()))
            );
        }
    }
}

const FLAGS: [&[u8]; 6] = [b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"];

fn step(s: &mut Session, m: &mut Model, op: Op) {
    match op {
        Op::Add(k, flags, mut ps) => {
            if k == LEX_KEY {
                for p in ps.iter_mut() {
                    p.0 = 0;
                }
            }
            let has = |i: usize| flags & (1 << i) != 0;
            let (nx, xx, gt, lt, ch, incr) = (has(0), has(1), has(2), has(3), has(4), has(5));
            let mut argv = vec![b"ZADD".to_vec(), key(k)];
            argv.extend((0..6).filter(|i| has(*i)).map(|i| FLAGS[i].to_vec()));
            for (sc, mb) in &ps {
                argv.push(score_text(score(*sc)).into_bytes());
                argv.push(member(*mb));
            }
            let r = cmd(s, &argv);
            if nx && xx {
                assert!(is_err(&r, "ERR XX and NX"), "{argv:?}: {r:?}");
                return;
            }
            if (nx && (gt || lt)) || (gt && lt) {
                assert!(is_err(&r, "ERR GT, LT, and/or NX"), "{argv:?}: {r:?}");
                return;
            }
            if incr && ps.len() > 1 {
                assert!(is_err(&r, "ERR INCR option supports"), "{argv:?}: {r:?}");
                return;
            }
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"), "{r:?}");
                return;
            }
            if !m.contains_key(&k) && xx {
                assert_eq!(r, if incr { Reply::Null } else { Reply::Int(0) });
                return;
            }
            let mut z = zm(m, k).cloned().unwrap_or_default();
            let (mut added, mut changed, mut last) = (0i64, 0i64, None);
            for (sc, mb) in &ps {
                let mb = member(*mb);
                let mut new = score(*sc);
                match z.scores.get(&mb).copied() {
                    Some(cur) => {
                        if nx {
                            continue;
                        }
                        if incr {
                            new += cur;
                            if new.is_nan() {
                                assert!(is_err(&r, "ERR resulting score is not a number"), "{r:?}");
                                return;
                            }
                        }
                        if (gt && new <= cur) || (lt && new >= cur) {
                            continue;
                        }
                        if new != cur {
                            changed += 1;
                            z.set(mb, new);
                        }
                        last = Some(new);
                    }
                    None if !xx => {
                        added += 1;
                        z.set(mb, new);
                        last = Some(new);
                    }
                    None => {}
                }
            }
            if incr {
                match last {
                    Some(v) => assert_eq!(num(&r), v, "{argv:?}"),
                    None => assert_eq!(r, Reply::Null, "{argv:?}"),
                }
            } else {
                assert_eq!(
                    r,
                    Reply::Int(if ch { added + changed } else { added }),
                    "{argv:?}"
                );
            }
            if !z.scores.is_empty() {
                m.insert(k, Val::Z(z));
            }
        }
        Op::AddRange(k, n, base) => {
            let mut argv = vec![b"ZADD".to_vec(), key(k)];
            let mut want = Vec::new();
            for i in 0..n {
                let sc = if k == LEX_KEY { 0.0 } else { f64::from(i % 17) };
                let mb = format!("r{base}-{i}").into_bytes();
                argv.push(score_text(sc).into_bytes());
                argv.push(mb.clone());
                want.push((sc, mb));
            }
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"), "{r:?}");
                return;
            }
            let mut z = zm(m, k).cloned().unwrap_or_default();
            let mut added = 0;
            for (sc, mb) in want {
                added += i64::from(!z.scores.contains_key(&mb));
                z.set(mb, sc);
            }
            assert_eq!(r, Reply::Int(added));
            m.insert(k, Val::Z(z));
        }
        Op::IncrBy(k, i, mb) => {
            let i = if k == LEX_KEY { 0 } else { i };
            let mb = member(mb);
            let r = cmd(
                s,
                &[
                    b"ZINCRBY".to_vec(),
                    key(k),
                    score_text(score(i)).into_bytes(),
                    mb.clone(),
                ],
            );
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"), "{r:?}");
                return;
            }
            let mut z = zm(m, k).cloned().unwrap_or_default();
            let new = z.scores.get(&mb).copied().unwrap_or(0.0) + score(i);
            if new.is_nan() {
                assert!(is_err(&r, "ERR resulting score is not a number"), "{r:?}");
                return;
            }
            assert_eq!(num(&r), new);
            z.set(mb, new);
            m.insert(k, Val::Z(z));
        }
        Op::Rem(k, ms) => {
            let mut argv = vec![b"ZREM".to_vec(), key(k)];
            argv.extend(ms.iter().map(|x| member(*x)));
            let r = cmd(s, &argv);
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(is_err(&r, "WRONGTYPE"), "{r:?}"),
                None => assert_eq!(r, Reply::Int(0)),
                Some(Val::Z(z)) => {
                    let n = ms
                        .iter()
                        .filter(|x| z.scores.remove(&member(**x)).is_some())
                        .count();
                    assert_eq!(r, Reply::Int(n as i64));
                    drop_empty(m, k);
                }
            }
        }
        Op::RangeRank(k, start, stop, rev, with) => {
            let mut argv = a(&[b"ZRANGE", KEYS[k].as_bytes()]);
            argv.push(start.to_string().into_bytes());
            argv.push(stop.to_string().into_bytes());
            if rev {
                argv.push(b"REV".to_vec());
            }
            if with {
                argv.push(b"WITHSCORES".to_vec());
            }
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"), "{r:?}");
                return;
            }
            let mut all = zm(m, k).map(|z| z.sorted()).unwrap_or_default();
            if rev {
                all.reverse();
            }
            let want = match rank_bounds(start.into(), stop.into(), all.len()) {
                Some((a, b)) => all[a..=b].to_vec(),
                None => Vec::new(),
            };
            assert_eq!(pairs(&r, with), want_pairs(&want, with), "{argv:?}");
            // The old form says the same.
            if rev {
                argv[0] = b"ZREVRANGE".to_vec();
                argv.retain(|x| x != b"REV");
                assert_eq!(
                    pairs(&cmd(s, &argv), with),
                    want_pairs(&want, with),
                    "{argv:?}"
                );
            }
        }
        Op::RangeScore(k, lo, hi, rev, limit, with) => {
            let mut argv = a(&[b"ZRANGE", KEYS[k].as_bytes()]);
            let (first, second) = if rev { (hi, lo) } else { (lo, hi) };
            argv.push(first.text().into_bytes());
            argv.push(second.text().into_bytes());
            argv.push(b"BYSCORE".to_vec());
            if rev {
                argv.push(b"REV".to_vec());
            }
            if let Some((o, c)) = limit {
                argv.extend([
                    b"LIMIT".to_vec(),
                    o.to_string().into_bytes(),
                    c.to_string().into_bytes(),
                ]);
            }
            if with {
                argv.push(b"WITHSCORES".to_vec());
            }
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"), "{r:?}");
                return;
            }
            let mut all: Vec<(f64, Vec<u8>)> = zm(m, k)
                .map(|z| z.sorted())
                .unwrap_or_default()
                .into_iter()
                .filter(|(sc, _)| lo.below(*sc) && hi.above(*sc))
                .collect();
            if rev {
                all.reverse();
            }
            let want = apply_limit(all, limit);
            assert_eq!(pairs(&r, with), want_pairs(&want, with), "{argv:?}");
            // ZRANGEBYSCORE / ZREVRANGEBYSCORE: the same.
            argv[0] = if rev {
                b"ZREVRANGEBYSCORE".to_vec()
            } else {
                b"ZRANGEBYSCORE".to_vec()
            };
            argv.retain(|x| x != b"BYSCORE" && x != b"REV");
            assert_eq!(
                pairs(&cmd(s, &argv), with),
                want_pairs(&want, with),
                "{argv:?}"
            );
        }
        Op::RangeLex(k, x, y, kinds, rev, limit) => {
            let (min, max) = lex_bounds(x, y, kinds);
            let mut argv = a(&[b"ZRANGE", KEYS[k].as_bytes()]);
            let (first, second) = if rev { (&max, &min) } else { (&min, &max) };
            argv.push(first.clone());
            argv.push(second.clone());
            argv.push(b"BYLEX".to_vec());
            if rev {
                argv.push(b"REV".to_vec());
            }
            if let Some((o, c)) = limit {
                argv.extend([
                    b"LIMIT".to_vec(),
                    o.to_string().into_bytes(),
                    c.to_string().into_bytes(),
                ]);
            }
            if is_str(m, k) {
                assert!(is_err(&cmd(s, &argv), "WRONGTYPE"));
                return;
            }
            if !zm(m, k).is_none_or(|z| z.same_scores()) {
                return;
            }
            let r = cmd(s, &argv);
            let mut all: Vec<(f64, Vec<u8>)> = zm(m, k)
                .map(|z| z.sorted())
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, mb)| in_lex(mb, &min, &max))
                .collect();
            if rev {
                all.reverse();
            }
            let count = all.len();
            let want = apply_limit(all, limit);
            assert_eq!(pairs(&r, false), want_pairs(&want, false), "{argv:?}");
            // ZRANGEBYLEX / ZREVRANGEBYLEX: the same.
            argv[0] = if rev {
                b"ZREVRANGEBYLEX".to_vec()
            } else {
                b"ZRANGEBYLEX".to_vec()
            };
            argv.retain(|x| x != b"BYLEX" && x != b"REV");
            let old = cmd(s, &argv);
            assert_eq!(pairs(&old, false), want_pairs(&want, false), "{argv:?}");
            let n = cmd(s, &[b"ZLEXCOUNT".to_vec(), key(k), min, max]);
            assert_eq!(n, Reply::Int(count as i64));
        }
        Op::RangeBad(k, lim) => {
            let argv = if lim {
                a(&[
                    b"ZRANGE",
                    KEYS[k].as_bytes(),
                    b"0",
                    b"-1",
                    b"LIMIT",
                    b"0",
                    b"1",
                ])
            } else {
                a(&[
                    b"ZRANGE",
                    KEYS[k].as_bytes(),
                    b"-",
                    b"+",
                    b"BYLEX",
                    b"WITHSCORES",
                ])
            };
            let r = cmd(s, &argv);
            assert!(is_err(&r, "ERR syntax error"), "{argv:?}: {r:?}");
        }
        Op::Rank(k, mb) => {
            let mb = member(mb);
            let r = cmd(s, &[b"ZRANK".to_vec(), key(k), mb.clone()]);
            let rr = cmd(s, &[b"ZREVRANK".to_vec(), key(k), mb.clone()]);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE") && is_err(&rr, "WRONGTYPE"));
                return;
            }
            let sorted = zm(m, k).map(|z| z.sorted()).unwrap_or_default();
            match sorted.iter().position(|(_, x)| *x == mb) {
                Some(i) => {
                    assert_eq!(r, Reply::Int(i as i64));
                    assert_eq!(rr, Reply::Int((sorted.len() - 1 - i) as i64));
                }
                None => {
                    assert_eq!(r, Reply::Null);
                    assert_eq!(rr, Reply::Null);
                }
            }
        }
        Op::Scores(k, ms) => {
            let mut argv = vec![b"ZMSCORE".to_vec(), key(k)];
            argv.extend(ms.iter().map(|x| member(*x)));
            let r = cmd(s, &argv);
            let one = cmd(s, &[b"ZSCORE".to_vec(), key(k), member(ms[0])]);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE") && is_err(&one, "WRONGTYPE"));
                return;
            }
            let get = |x: u16| zm(m, k).and_then(|z| z.scores.get(&member(x)).copied());
            let got = arr(&r);
            assert_eq!(got.len(), ms.len());
            for (g, x) in got.iter().zip(&ms) {
                match get(*x) {
                    Some(v) => assert_eq!(num(g), v),
                    None => assert_eq!(*g, Reply::Null),
                }
            }
            match get(ms[0]) {
                Some(v) => assert_eq!(num(&one), v),
                None => assert_eq!(one, Reply::Null),
            }
        }
        Op::Count(k, lo, hi) => {
            let r = cmd(
                s,
                &[
                    b"ZCOUNT".to_vec(),
                    key(k),
                    lo.text().into_bytes(),
                    hi.text().into_bytes(),
                ],
            );
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"));
                return;
            }
            let n = zm(m, k).map_or(0, |z| {
                z.scores
                    .values()
                    .filter(|v| lo.below(**v) && hi.above(**v))
                    .count()
            });
            assert_eq!(r, Reply::Int(n as i64));
        }
        Op::RemScore(k, lo, hi) => {
            let r = cmd(
                s,
                &[
                    b"ZREMRANGEBYSCORE".to_vec(),
                    key(k),
                    lo.text().into_bytes(),
                    hi.text().into_bytes(),
                ],
            );
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(is_err(&r, "WRONGTYPE")),
                None => assert_eq!(r, Reply::Int(0)),
                Some(Val::Z(z)) => {
                    let before = z.scores.len();
                    z.scores.retain(|_, v| !(lo.below(*v) && hi.above(*v)));
                    assert_eq!(r, Reply::Int((before - z.scores.len()) as i64));
                    drop_empty(m, k);
                }
            }
        }
        Op::RemRank(k, start, stop) => {
            let r = cmd(
                s,
                &[
                    b"ZREMRANGEBYRANK".to_vec(),
                    key(k),
                    start.to_string().into_bytes(),
                    stop.to_string().into_bytes(),
                ],
            );
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(is_err(&r, "WRONGTYPE")),
                None => assert_eq!(r, Reply::Int(0)),
                Some(Val::Z(z)) => {
                    let sorted = z.sorted();
                    let gone = match rank_bounds(start.into(), stop.into(), sorted.len()) {
                        Some((a, b)) => sorted[a..=b].to_vec(),
                        None => Vec::new(),
                    };
                    for (_, mb) in &gone {
                        z.scores.remove(mb);
                    }
                    assert_eq!(r, Reply::Int(gone.len() as i64));
                    drop_empty(m, k);
                }
            }
        }
        Op::RemLex(k, x, y, kinds) => {
            let (min, max) = lex_bounds(x, y, kinds);
            let argv = vec![b"ZREMRANGEBYLEX".to_vec(), key(k), min.clone(), max.clone()];
            if is_str(m, k) {
                assert!(is_err(&cmd(s, &argv), "WRONGTYPE"));
                return;
            }
            if !zm(m, k).is_none_or(|z| z.same_scores()) {
                return;
            }
            let r = cmd(s, &argv);
            match m.get_mut(&k) {
                Some(Val::Z(z)) => {
                    let before = z.scores.len();
                    z.scores.retain(|mb, _| !in_lex(mb, &min, &max));
                    assert_eq!(r, Reply::Int((before - z.scores.len()) as i64), "{argv:?}");
                    drop_empty(m, k);
                }
                _ => assert_eq!(r, Reply::Int(0)),
            }
        }
        Op::Pop(k, max, count) => {
            let mut argv = vec![
                if max {
                    b"ZPOPMAX".to_vec()
                } else {
                    b"ZPOPMIN".to_vec()
                },
                key(k),
            ];
            if let Some(c) = count {
                argv.push(c.to_string().into_bytes());
            }
            let r = cmd(s, &argv);
            if count.is_some_and(|c| c < 0) {
                assert!(is_err(&r, "ERR value is out of range"), "{r:?}");
                return;
            }
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(is_err(&r, "WRONGTYPE")),
                None => assert_eq!(r, Reply::Array(Vec::new())),
                Some(Val::Z(z)) => {
                    let mut sorted = z.sorted();
                    if max {
                        sorted.reverse();
                    }
                    let n = count.map_or(1, |c| c as usize).min(sorted.len());
                    let want = sorted[..n].to_vec();
                    assert_eq!(pairs(&r, true), want_pairs(&want, true), "{argv:?}");
                    for (_, mb) in &want {
                        z.scores.remove(mb);
                    }
                    drop_empty(m, k);
                }
            }
        }
        Op::BPop(ks, max) => {
            let mut argv = vec![if max {
                b"BZPOPMAX".to_vec()
            } else {
                b"BZPOPMIN".to_vec()
            }];
            argv.extend(ks.iter().map(|k| key(*k)));
            argv.push(b"0".to_vec());
            let r = cmd(s, &argv);
            // Redis serves the first key that is a non-empty zset; a
            // string before it is WRONGTYPE.
            for &k in &ks {
                match m.get_mut(&k) {
                    None => continue,
                    Some(Val::Str) => {
                        assert!(is_err(&r, "WRONGTYPE"), "{argv:?}: {r:?}");
                        return;
                    }
                    Some(Val::Z(z)) => {
                        let mut sorted = z.sorted();
                        if max {
                            sorted.reverse();
                        }
                        let (sc, mb) = sorted[0].clone();
                        let got = arr(&r);
                        assert_eq!(got.len(), 3, "{argv:?}: {r:?}");
                        assert_eq!(bulk(&got[0]), key(k));
                        assert_eq!((bulk(&got[1]), num(&got[2])), (mb.clone(), sc));
                        z.scores.remove(&mb);
                        drop_empty(m, k);
                        return;
                    }
                }
            }
            assert!(
                matches!(r, Reply::NullArray | Reply::Null),
                "{argv:?}: {r:?}"
            );
        }
        Op::RandMember(k, n, with) => {
            let mut argv = vec![b"ZRANDMEMBER".to_vec(), key(k), n.to_string().into_bytes()];
            if with {
                argv.push(b"WITHSCORES".to_vec());
            }
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(is_err(&r, "WRONGTYPE"));
                return;
            }
            let z = zm(m, k).cloned().unwrap_or_default();
            let got = pairs(&r, with);
            let want = if z.scores.is_empty() {
                0
            } else if n >= 0 {
                (n as usize).min(z.scores.len())
            } else {
                n.unsigned_abs() as usize
            };
            assert_eq!(got.len(), want, "{argv:?}");
            let mut seen = BTreeSet::new();
            for (mb, sc) in got {
                let v = z
                    .scores
                    .get(&mb)
                    .unwrap_or_else(|| panic!("ZRANDMEMBER gave a non-member"));
                if let Some(sc) = sc {
                    assert_eq!(sc, *v);
                }
                assert!(seen.insert(mb) || n < 0, "positive count repeated a member");
            }
        }
        Op::Scan(k, count) => {
            let mut cursor = b"0".to_vec();
            let mut seen = BTreeMap::new();
            for _ in 0..10_000 {
                let r = cmd(
                    s,
                    &[
                        b"ZSCAN".to_vec(),
                        key(k),
                        cursor.clone(),
                        b"COUNT".to_vec(),
                        count.to_string().into_bytes(),
                    ],
                );
                if is_str(m, k) {
                    assert!(is_err(&r, "WRONGTYPE"));
                    return;
                }
                let parts = arr(&r);
                cursor = bulk(&parts[0]);
                for (mb, sc) in pairs(&parts[1], true) {
                    seen.insert(mb, sc.unwrap_or(f64::NAN));
                }
                if cursor == b"0" {
                    break;
                }
            }
            assert_eq!(cursor, b"0");
            let want = zm(m, k).map(|z| z.scores.clone()).unwrap_or_default();
            assert_eq!(seen, want, "full ZSCAN of {}", KEYS[k]);
        }
        Op::DelKey(k) => {
            let existed = m.remove(&k).is_some();
            assert_eq!(
                cmd(s, &[b"DEL".to_vec(), key(k)]),
                Reply::Int(i64::from(existed))
            );
        }
        Op::Expire(k) => {
            let r = cmd(s, &[b"PEXPIRE".to_vec(), key(k), b"1000000".to_vec()]);
            assert_eq!(r, Reply::Int(i64::from(m.contains_key(&k))));
            if m.contains_key(&k) {
                TTL.with(|t| t.borrow_mut().insert(k));
            }
        }
        Op::SetString(k) => {
            // SET without KEEPTTL drops the TTL.
            TTL.with(|t| t.borrow_mut().remove(&k));
            assert_eq!(cmd(s, &a(&[b"SET", KEYS[k].as_bytes(), b"x"])), Reply::ok());
            m.insert(k, Val::Str);
        }
    }
}

fn run(ops: Vec<Op>) {
    LOG.with(|l| l.borrow_mut().clear());
    TTL.with(|t| t.borrow_mut().clear());
    let mut s = Session::with_config(Config::default());
    let mut m = Model::new();
    for op in ops {
        step(&mut s, &mut m, op);
        // A deleted key (emptied, DEL, an empty STORE) loses its TTL.
        TTL.with(|t| t.borrow_mut().retain(|k| m.contains_key(k)));
        for k in 0..KEYS.len() {
            check_key(&mut s, k, &m);
            check_ttl(&mut s, k, &m);
        }
    }
    let effects = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let mut replay = Session::with_config(Config::default());
    for (db, argv) in effects {
        let r = replay.call_in_db(db, argv.clone());
        assert!(!r.is_error(), "replaying {argv:?}: {r:?}");
    }
    for k in 0..KEYS.len() {
        check_key(&mut replay, k, &m);
        check_ttl(&mut replay, k, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn zsets_follow_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run(ops);
    }
}

/// The encoding boundaries: 128 members stay a listpack, the 129th
/// converts; a 65-byte member converts; removals never convert back.
#[test]
fn listpack_boundaries() {
    let mut s = Session::with_config(Config::default());
    let mut m = Model::new();
    step(&mut s, &mut m, Op::AddRange(0, 128, 1));
    check_key(&mut s, 0, &m);
    assert!(zm(&m, 0).is_some_and(|z| !z.table));
    step(&mut s, &mut m, Op::AddRange(0, 129, 1));
    check_key(&mut s, 0, &m);
    assert!(zm(&m, 0).is_some_and(|z| z.table));
    step(&mut s, &mut m, Op::RemRank(0, 0, -3));
    check_key(&mut s, 0, &m);
    assert!(zm(&m, 0).is_some_and(|z| z.table));
    // A 64-byte member fits, a 65-byte one does not.
    let m64 = vec![b'a'; 64];
    let r = cmd(
        &mut s,
        &[b"ZADD".to_vec(), b"z2".to_vec(), b"1".to_vec(), m64],
    );
    assert_eq!(r, Reply::Int(1));
    let enc = |s: &mut Session| cmd(s, &a(&[b"OBJECT", b"ENCODING", b"z2"]));
    assert_eq!(enc(&mut s), Reply::Bulk(Bytes::from_static(b"listpack")));
    let m65 = vec![b'a'; 65];
    let r = cmd(
        &mut s,
        &[b"ZADD".to_vec(), b"z2".to_vec(), b"1".to_vec(), m65],
    );
    assert_eq!(r, Reply::Int(1));
    assert_eq!(enc(&mut s), Reply::Bulk(Bytes::from_static(b"skiplist")));
}
