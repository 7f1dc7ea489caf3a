//! Model-based property test of the set commands through an in-process
//! `Session`: random SADD/SREM/SPOP (with and without a count)/SMOVE, the
//! STORE forms of SINTER/SUNION/SDIFF, SINTERCARD with LIMIT, SRANDMEMBER,
//! SMISMEMBER, SSCAN, DEL and plain SETs (WRONGTYPE, and a STORE that
//! overwrites a string) on a few keys, checked after every step against a
//! `BTreeSet` model that knows Redis 7.0's encodings: `intset` while every
//! member is a canonical 64-bit integer and there are at most
//! `set-max-intset-entries` (512) of them, then `hashtable` for good (a
//! STORE result is a new set, built by adds to an empty intset). SPOP's
//! random choices are checked as "every removed member was a member,
//! none twice, as many as asked or all". At the end the logged effects are
//! replayed into a fresh session, which must hold the same sets with the
//! same encodings (SPOP is logged as SREM of what it took).

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;
use ferrite_db::store::Value;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// `s1..s3` are sets (or missing); `str` may hold a string.
const KEYS: [&str; 4] = ["s1", "s2", "s3", "str"];
const INTSET_MAX: usize = 512;

#[derive(Debug, Clone)]
enum Op {
    Add(usize, Vec<u16>),
    /// SADD of `n` consecutive integers from `start` (crosses 512).
    AddRange(usize, i32, u16),
    Rem(usize, Vec<u16>),
    Pop(usize),
    PopCount(usize, u16),
    Move(usize, usize, u16),
    Store(u8, usize, Vec<usize>),
    Read(u8, Vec<usize>),
    InterCard(Vec<usize>, u8),
    RandMember(usize, i16),
    MisMember(usize, Vec<u16>),
    Scan(usize, u8),
    DelKey(usize),
    SetString(usize),
    /// PEXPIRE: which writes keep a TTL and which drop it.
    Expire(usize),
}

/// Members: canonical integers (intset material), non-canonical numbers,
/// short strings and long strings.
fn member(m: u16) -> Vec<u8> {
    match m % 40 {
        0..=24 => (i64::from(m) - 300).to_string().into_bytes(),
        25 => format!("0{m}").into_bytes(),
        26 => b"-0".to_vec(),
        27 => b"9223372036854775808".to_vec(),
        28 => i64::MIN.to_string().into_bytes(),
        29 => format!("long-member-{m:0>80}").into_bytes(),
        _ => format!("m{m}").into_bytes(),
    }
}

fn is_int(m: &[u8]) -> bool {
    std::str::from_utf8(m)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .is_some_and(|n| n.to_string().as_bytes() == m)
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let m = 0u16..400;
    let ks = prop::collection::vec(0..KEYS.len(), 1..4);
    prop_oneof![
        8 => (k.clone(), prop::collection::vec(m.clone(), 1..12)).prop_map(|(k, v)| Op::Add(k, v)),
        1 => (k.clone(), -100i32..100, 1u16..600).prop_map(|(k, s, n)| Op::AddRange(k, s, n)),
        3 => (k.clone(), prop::collection::vec(m.clone(), 1..8)).prop_map(|(k, v)| Op::Rem(k, v)),
        1 => k.clone().prop_map(Op::Pop),
        2 => (k.clone(), 0u16..40).prop_map(|(k, n)| Op::PopCount(k, n)),
        2 => (k.clone(), k.clone(), m.clone()).prop_map(|(a, b, m)| Op::Move(a, b, m)),
        2 => (0u8..3, k.clone(), ks.clone()).prop_map(|(o, d, s)| Op::Store(o, d, s)),
        2 => (0u8..3, ks.clone()).prop_map(|(o, s)| Op::Read(o, s)),
        1 => (ks, 0u8..6).prop_map(|(s, l)| Op::InterCard(s, l)),
        1 => (k.clone(), -20i16..20).prop_map(|(k, n)| Op::RandMember(k, n)),
        1 => (k.clone(), prop::collection::vec(m, 1..5)).prop_map(|(k, v)| Op::MisMember(k, v)),
        1 => (k.clone(), 1u8..40).prop_map(|(k, c)| Op::Scan(k, c)),
        1 => k.clone().prop_map(Op::DelKey),
        1 => k.clone().prop_map(Op::Expire),
        1 => k.prop_map(Op::SetString),
    ]
}

#[derive(Clone, Debug)]
enum Val {
    Str,
    Set {
        members: BTreeSet<Vec<u8>>,
        table: bool,
    },
}

type Model = BTreeMap<usize, Val>;

impl Val {
    /// A new set as Redis builds it: adds to an empty intset.
    fn built(members: BTreeSet<Vec<u8>>) -> Val {
        let table = members.len() > INTSET_MAX || members.iter().any(|m| !is_int(m));
        Val::Set { members, table }
    }
}

/// Adds to a set; converts as Redis does. Returns whether it was new.
fn add(members: &mut BTreeSet<Vec<u8>>, table: &mut bool, m: Vec<u8>) -> bool {
    if !is_int(&m) {
        *table = true;
    }
    let new = members.insert(m);
    if members.len() > INTSET_MAX {
        *table = true;
    }
    new
}

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

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
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

fn list(r: &Reply) -> Vec<Vec<u8>> {
    match r {
        Reply::Array(items) | Reply::Set(items) => items.iter().map(bulk).collect(),
        other => panic!("expected an array or set, got {other:?}"),
    }
}

fn wrongtype(r: &Reply) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with(b"WRONGTYPE"))
}

fn members_of(m: &Model, k: usize) -> Option<&BTreeSet<Vec<u8>>> {
    match m.get(&k) {
        Some(Val::Set { members, .. }) => Some(members),
        _ => None,
    }
}

fn is_str(m: &Model, k: usize) -> bool {
    matches!(m.get(&k), Some(Val::Str))
}

/// Drops a set the model emptied (Redis deletes empty sets).
fn drop_empty(m: &mut Model, k: usize) {
    if members_of(m, k).is_some_and(|s| s.is_empty()) {
        m.remove(&k);
    }
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
        None => assert_eq!(cmd(s, &args(&[b"EXISTS", name.as_bytes()])), Reply::Int(0)),
        Some(Val::Str) => assert_eq!(
            cmd(s, &args(&[b"TYPE", name.as_bytes()])),
            Reply::Simple(Bytes::from_static(b"string"))
        ),
        Some(Val::Set { members, table }) => {
            let got: BTreeSet<Vec<u8>> = list(&cmd(s, &args(&[b"SMEMBERS", name.as_bytes()])))
                .into_iter()
                .collect();
            assert_eq!(&got, members, "SMEMBERS {name}");
            assert_eq!(
                cmd(s, &args(&[b"SCARD", name.as_bytes()])),
                Reply::Int(members.len() as i64)
            );
            let enc = {
                let store = s.shared().store.lock();
                match store.dbs[0].get(name.as_bytes()) {
                    Some(Value::Set(v)) => v.encoding(),
                    other => panic!("{name} is not a set: {other:?}"),
                }
            };
            let want = if *table { "hashtable" } else { "intset" };
            assert_eq!(enc, want, "{name} encoding ({} members)", members.len());
            assert_eq!(
                cmd(s, &args(&[b"OBJECT", b"ENCODING", name.as_bytes()])),
                Reply::Bulk(Bytes::from_static(want.as_bytes()))
            );
        }
    }
}

/// The result of an INTER (0), UNION (1) or DIFF (2) in the model; `None`
/// when a key holds a string (WRONGTYPE).
fn combine(m: &Model, o: u8, keys: &[usize]) -> Option<BTreeSet<Vec<u8>>> {
    if keys.iter().any(|k| is_str(m, *k)) {
        return None;
    }
    let empty = BTreeSet::new();
    let sets: Vec<&BTreeSet<Vec<u8>>> = keys
        .iter()
        .map(|k| members_of(m, *k).unwrap_or(&empty))
        .collect();
    Some(match o {
        0 => sets[0]
            .iter()
            .filter(|x| sets[1..].iter().all(|s| s.contains(*x)))
            .cloned()
            .collect(),
        1 => sets.iter().flat_map(|s| s.iter().cloned()).collect(),
        _ => sets[0]
            .iter()
            .filter(|x| !sets[1..].iter().any(|s| s.contains(*x)))
            .cloned()
            .collect(),
    })
}

fn step(s: &mut Session, m: &mut Model, op: Op) {
    match op {
        Op::Add(k, ms) => {
            let mut argv = vec![b"SADD".to_vec(), key(k)];
            argv.extend(ms.iter().map(|x| member(*x)));
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(wrongtype(&r), "{r:?}");
                return;
            }
            let first = member(ms[0]);
            let v = m.entry(k).or_insert_with(|| Val::Set {
                members: BTreeSet::new(),
                table: !is_int(&first),
            });
            let Val::Set { members, table } = v else {
                unreachable!()
            };
            let added = ms
                .iter()
                .filter(|x| add(members, table, member(**x)))
                .count();
            assert_eq!(r, Reply::Int(added as i64));
        }
        Op::AddRange(k, start, n) => {
            let ms: Vec<Vec<u8>> = (0..i64::from(n))
                .map(|i| (i64::from(start) * 7 + i).to_string().into_bytes())
                .collect();
            let mut argv = vec![b"SADD".to_vec(), key(k)];
            argv.extend(ms.iter().cloned());
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(wrongtype(&r), "{r:?}");
                return;
            }
            let v = m.entry(k).or_insert_with(|| Val::Set {
                members: BTreeSet::new(),
                table: false,
            });
            let Val::Set { members, table } = v else {
                unreachable!()
            };
            let added = ms
                .into_iter()
                .filter(|x| add(members, table, x.clone()))
                .count();
            assert_eq!(r, Reply::Int(added as i64));
        }
        Op::Rem(k, ms) => {
            let mut argv = vec![b"SREM".to_vec(), key(k)];
            argv.extend(ms.iter().map(|x| member(*x)));
            let r = cmd(s, &argv);
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(wrongtype(&r), "{r:?}"),
                None => assert_eq!(r, Reply::Int(0)),
                Some(Val::Set { members, .. }) => {
                    let n = ms.iter().filter(|x| members.remove(&member(**x))).count();
                    assert_eq!(r, Reply::Int(n as i64));
                    drop_empty(m, k);
                }
            }
        }
        Op::Pop(k) => {
            let r = cmd(s, &args(&[b"SPOP", KEYS[k].as_bytes()]));
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(wrongtype(&r), "{r:?}"),
                None => assert_eq!(r, Reply::Null),
                Some(Val::Set { members, .. }) => {
                    let got = bulk(&r);
                    assert!(members.remove(&got), "SPOP {} gave a non-member", KEYS[k]);
                    drop_empty(m, k);
                }
            }
        }
        Op::PopCount(k, n) => {
            let r = cmd(
                s,
                &args(&[b"SPOP", KEYS[k].as_bytes(), n.to_string().as_bytes()]),
            );
            match m.get_mut(&k) {
                Some(Val::Str) => assert!(wrongtype(&r), "{r:?}"),
                None => assert!(list(&r).is_empty()),
                Some(Val::Set { members, .. }) => {
                    let got = list(&r);
                    assert_eq!(got.len(), usize::from(n).min(members.len()), "SPOP count");
                    for x in got {
                        assert!(
                            members.remove(&x),
                            "SPOP {} {n} gave a non-member or one twice: {x:?}",
                            KEYS[k]
                        );
                    }
                    drop_empty(m, k);
                }
            }
        }
        Op::Move(a, b, x) => {
            let x = member(x);
            let r = cmd(s, &[b"SMOVE".to_vec(), key(a), key(b), x.clone()]);
            if !m.contains_key(&a) {
                assert_eq!(r, Reply::Int(0));
                return;
            }
            if is_str(m, a) || is_str(m, b) {
                assert!(wrongtype(&r), "{r:?}");
                return;
            }
            let present = members_of(m, a).is_some_and(|s| s.contains(&x));
            assert_eq!(r, Reply::Int(i64::from(present)));
            if !present || a == b {
                return;
            }
            if let Some(Val::Set { members, .. }) = m.get_mut(&a) {
                members.remove(&x);
            }
            drop_empty(m, a);
            let v = m.entry(b).or_insert_with(|| Val::Set {
                members: BTreeSet::new(),
                table: !is_int(&x),
            });
            if let Val::Set { members, table } = v {
                add(members, table, x);
            }
        }
        Op::Store(o, d, ks) => {
            let name: &[u8] =
                [b"SINTERSTORE".as_slice(), b"SUNIONSTORE", b"SDIFFSTORE"][o as usize];
            let mut argv = vec![name.to_vec(), key(d)];
            argv.extend(ks.iter().map(|k| key(*k)));
            let r = cmd(s, &argv);
            match combine(m, o, &ks) {
                None => assert!(wrongtype(&r), "{r:?}"),
                Some(out) => {
                    assert_eq!(r, Reply::Int(out.len() as i64));
                    // The destination is a new key: no TTL.
                    TTL.with(|t| t.borrow_mut().remove(&d));
                    if out.is_empty() {
                        m.remove(&d);
                    } else {
                        m.insert(d, Val::built(out));
                    }
                }
            }
        }
        Op::Read(o, ks) => {
            let name: &[u8] = [b"SINTER".as_slice(), b"SUNION", b"SDIFF"][o as usize];
            let mut argv = vec![name.to_vec()];
            argv.extend(ks.iter().map(|k| key(*k)));
            let r = cmd(s, &argv);
            match combine(m, o, &ks) {
                None => assert!(wrongtype(&r), "{r:?}"),
                Some(out) => {
                    let got: Vec<Vec<u8>> = list(&r);
                    assert_eq!(got.len(), out.len(), "duplicates in {r:?}");
                    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), out);
                }
            }
        }
        Op::InterCard(ks, limit) => {
            let mut argv = vec![b"SINTERCARD".to_vec(), ks.len().to_string().into_bytes()];
            argv.extend(ks.iter().map(|k| key(*k)));
            if limit > 0 {
                argv.push(b"LIMIT".to_vec());
                argv.push((limit - 1).to_string().into_bytes());
            }
            let r = cmd(s, &argv);
            match combine(m, 0, &ks) {
                None => assert!(wrongtype(&r), "{r:?}"),
                Some(out) => {
                    let n = out.len();
                    let want = match limit {
                        0 | 1 => n,
                        l => n.min(usize::from(l - 1)),
                    };
                    assert_eq!(r, Reply::Int(want as i64), "{argv:?}");
                }
            }
        }
        Op::RandMember(k, n) => {
            let r = cmd(
                s,
                &args(&[b"SRANDMEMBER", KEYS[k].as_bytes(), n.to_string().as_bytes()]),
            );
            if is_str(m, k) {
                assert!(wrongtype(&r), "{r:?}");
                return;
            }
            let empty = BTreeSet::new();
            let members = members_of(m, k).unwrap_or(&empty);
            let got = list(&r);
            let want = if members.is_empty() {
                0
            } else if n >= 0 {
                (n as usize).min(members.len())
            } else {
                n.unsigned_abs() as usize
            };
            assert_eq!(got.len(), want, "SRANDMEMBER {n}");
            let mut seen = BTreeSet::new();
            for x in got {
                assert!(members.contains(&x), "SRANDMEMBER gave a non-member");
                assert!(seen.insert(x) || n < 0, "positive count repeated a member");
            }
        }
        Op::MisMember(k, ms) => {
            let mut argv = vec![b"SMISMEMBER".to_vec(), key(k)];
            argv.extend(ms.iter().map(|x| member(*x)));
            let r = cmd(s, &argv);
            if is_str(m, k) {
                assert!(wrongtype(&r), "{r:?}");
                return;
            }
            let want: Vec<Reply> = ms
                .iter()
                .map(|x| {
                    Reply::Int(i64::from(
                        members_of(m, k).is_some_and(|s| s.contains(&member(*x))),
                    ))
                })
                .collect();
            assert_eq!(r, Reply::Array(want));
            let one = cmd(s, &[b"SISMEMBER".to_vec(), key(k), member(ms[0])]);
            let want = members_of(m, k).is_some_and(|s| s.contains(&member(ms[0])));
            assert_eq!(one, Reply::Int(i64::from(want)));
        }
        Op::Scan(k, count) => {
            let mut cursor = b"0".to_vec();
            let mut seen = BTreeSet::new();
            for _ in 0..10_000 {
                let r = cmd(
                    s,
                    &[
                        b"SSCAN".to_vec(),
                        key(k),
                        cursor.clone(),
                        b"COUNT".to_vec(),
                        count.to_string().into_bytes(),
                    ],
                );
                if is_str(m, k) {
                    assert!(wrongtype(&r), "{r:?}");
                    return;
                }
                let Reply::Array(parts) = r else {
                    panic!("SSCAN reply {r:?}")
                };
                cursor = bulk(&parts[0]);
                seen.extend(list(&parts[1]));
                if cursor == b"0" {
                    break;
                }
            }
            assert_eq!(cursor, b"0");
            let want = members_of(m, k).cloned().unwrap_or_default();
            assert_eq!(seen, want, "full SSCAN of {}", KEYS[k]);
        }
        Op::DelKey(k) => {
            let existed = m.remove(&k).is_some();
            assert_eq!(
                cmd(s, &args(&[b"DEL", KEYS[k].as_bytes()])),
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
            assert_eq!(
                cmd(s, &args(&[b"SET", KEYS[k].as_bytes(), b"x"])),
                Reply::ok()
            );
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
    // The logged effects rebuild the same sets, encodings included.
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
    fn sets_follow_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run(ops);
    }
}

/// The encoding boundaries, step by step: 512 integers stay an intset,
/// the 513th converts; a non-integer converts; removing never converts
/// back; a STORE result is built afresh.
#[test]
fn intset_boundaries() {
    let mut s = Session::with_config(Config::default());
    let mut m = Model::new();
    step(&mut s, &mut m, Op::AddRange(0, 0, 512));
    check_key(&mut s, 0, &m);
    assert!(matches!(m.get(&0), Some(Val::Set { table: false, .. })));
    step(&mut s, &mut m, Op::AddRange(0, 0, 513));
    check_key(&mut s, 0, &m);
    assert!(matches!(m.get(&0), Some(Val::Set { table: true, .. })));
    // The intersection with a small intset is a small intset again.
    step(&mut s, &mut m, Op::AddRange(1, 0, 3));
    step(&mut s, &mut m, Op::Store(0, 2, vec![0, 1]));
    check_key(&mut s, 2, &m);
    assert!(matches!(m.get(&2), Some(Val::Set { table: false, .. })));
    // A non-canonical integer converts; removing it does not convert back.
    step(&mut s, &mut m, Op::Add(1, vec![25]));
    check_key(&mut s, 1, &m);
    step(&mut s, &mut m, Op::Rem(1, vec![25]));
    check_key(&mut s, 1, &m);
    assert!(matches!(m.get(&1), Some(Val::Set { table: true, .. })));
    // SPOP with a count keeps the encoding of what is left.
    step(&mut s, &mut m, Op::PopCount(0, 30));
    check_key(&mut s, 0, &m);
}
