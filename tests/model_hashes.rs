//! Model-based property test of the hash commands through an in-process
//! `Session`: random HSET/HSETNX/HDEL/HINCRBY/HINCRBYFLOAT/DEL sequences on
//! a few keys, checked after every step against a model that keeps
//! insertion order and knows when Redis converts a hash to a table
//! (HGETALL/HKEYS exact for listpacks, as sets for tables; HSCAN full
//! iterations; HRANDFIELD shapes). At the end the logged effects are
//! replayed into a fresh server, which must hold exactly the same hashes
//! (HINCRBYFLOAT is logged as HSET of its result).

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;
use ferrite_db::store::Value;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const KEYS: [&str; 2] = ["h1", "h2"];

#[derive(Debug, Clone)]
enum Op {
    Set(usize, Vec<(u16, u8)>),
    SetNx(usize, u16, u8),
    Del(usize, Vec<u16>),
    IncrBy(usize, u16, i64),
    IncrByFloat(usize, u16, i32),
    DelKey(usize),
    RandField(usize, i64, bool),
    Scan(usize, u64),
}

fn field(f: u16) -> Vec<u8> {
    // A few fields are long enough to force a table.
    if f % 97 == 96 {
        format!("long-field-{f:0>70}").into_bytes()
    } else {
        format!("f{f}").into_bytes()
    }
}

fn value(v: u8) -> Vec<u8> {
    if v == 255 {
        vec![b'x'; 65]
    } else {
        v.to_string().into_bytes()
    }
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let f = 0u16..200;
    prop_oneof![
        6 => (k.clone(), prop::collection::vec((f.clone(), any::<u8>()), 1..12)).prop_map(|(k, p)| Op::Set(k, p)),
        1 => (k.clone(), f.clone(), any::<u8>()).prop_map(|(k, f, v)| Op::SetNx(k, f, v)),
        2 => (k.clone(), prop::collection::vec(f.clone(), 1..6)).prop_map(|(k, f)| Op::Del(k, f)),
        1 => (k.clone(), f.clone(), -1000i64..1000).prop_map(|(k, f, n)| Op::IncrBy(k, f, n)),
        1 => (k.clone(), f.clone(), -100_000i32..100_000).prop_map(|(k, f, n)| Op::IncrByFloat(k, f, n)),
        1 => k.clone().prop_map(Op::DelKey),
        1 => (k.clone(), -30i64..30, any::<bool>()).prop_map(|(k, n, w)| Op::RandField(k, n, w)),
        1 => (k, 1u64..50).prop_map(|(k, c)| Op::Scan(k, c)),
    ]
}

/// The model: per key, pairs in insertion order and whether it is a table.
#[derive(Default, Clone, Debug)]
struct Model {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    table: bool,
}

impl Model {
    fn set(&mut self, f: Vec<u8>, v: Vec<u8>) -> bool {
        if f.len() > 64 || v.len() > 64 {
            self.table = true;
        }
        let new = match self.pairs.iter_mut().find(|(k, _)| *k == f) {
            Some((_, old)) => {
                *old = v;
                false
            }
            None => {
                self.pairs.push((f, v));
                true
            }
        };
        if self.pairs.len() > 128 {
            self.table = true;
        }
        new
    }
    fn get(&self, f: &[u8]) -> Option<&Vec<u8>> {
        self.pairs.iter().find(|(k, _)| k == f).map(|(_, v)| v)
    }
}

type Effects = Vec<(usize, Vec<Bytes>)>;

thread_local! {
    /// What the commands run so far logged (without persistence the
    /// effects are dropped after each command, so they are taken here).
    static LOG: std::cell::RefCell<Effects> = const { std::cell::RefCell::new(Vec::new()) };
}

fn cmd(s: &mut Session, parts: &[&[u8]]) -> Reply {
    let argv: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let ran = s.atomically(|a| {
        let r = a.call(argv);
        let effects = a.store().take_effects();
        LOG.with(|l| l.borrow_mut().extend(effects));
        r
    });
    ran.map_or_else(|e| e, |(r, _)| r)
}

fn bulk(r: &Reply) -> Vec<u8> {
    match r {
        Reply::Bulk(b) => b.to_vec(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn flat(r: &Reply) -> Vec<Vec<u8>> {
    match r {
        Reply::Array(items) => items.iter().map(bulk).collect(),
        Reply::Map(pairs) => pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn check_key(s: &mut Session, key: &str, m: Option<&Model>) {
    let k = key.as_bytes();
    let all = flat(&cmd(s, &[b"HGETALL", k]));
    let Some(m) = m else {
        assert!(all.is_empty(), "{key} should not exist");
        assert_eq!(cmd(s, &[b"EXISTS", k]), Reply::Int(0));
        return;
    };
    let want: Vec<Vec<u8>> = m
        .pairs
        .iter()
        .flat_map(|(f, v)| [f.clone(), v.clone()])
        .collect();
    if m.table {
        let pairs = |v: &[Vec<u8>]| -> BTreeSet<(Vec<u8>, Vec<u8>)> {
            v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect()
        };
        assert_eq!(pairs(&all), pairs(&want), "{key} (table)");
    } else {
        assert_eq!(all, want, "{key} (listpack, insertion order)");
    }
    assert_eq!(cmd(s, &[b"HLEN", k]), Reply::Int(m.pairs.len() as i64));
    let enc = {
        let store = s.shared().store.lock();
        match store.dbs[0].get(k) {
            Some(Value::Hash(h)) => h.encoding(),
            other => panic!("{key} is not a hash: {other:?}"),
        }
    };
    assert_eq!(enc, if m.table { "hashtable" } else { "listpack" }, "{key}");
}

fn run(ops: Vec<Op>) {
    LOG.with(|l| l.borrow_mut().clear());
    let mut s = Session::with_config(Config::default());
    let mut models: HashMap<usize, Model> = HashMap::new();
    for op in ops {
        match op {
            Op::Set(k, pairs) => {
                let mut argv: Vec<Vec<u8>> = vec![b"HSET".to_vec(), KEYS[k].as_bytes().to_vec()];
                let m = models.entry(k).or_default();
                let mut created = 0;
                for (f, v) in pairs {
                    argv.push(field(f));
                    argv.push(value(v));
                    created += i64::from(m.set(field(f), value(v)));
                }
                let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
                assert_eq!(cmd(&mut s, &refs), Reply::Int(created));
            }
            Op::SetNx(k, f, v) => {
                let m = models.entry(k).or_default();
                let new = m.get(&field(f)).is_none();
                if new {
                    m.set(field(f), value(v));
                }
                let r = cmd(
                    &mut s,
                    &[b"HSETNX", KEYS[k].as_bytes(), &field(f), &value(v)],
                );
                assert_eq!(r, Reply::Int(i64::from(new)));
            }
            Op::Del(k, fields) => {
                let mut deleted = 0;
                let mut argv: Vec<Vec<u8>> = vec![b"HDEL".to_vec(), KEYS[k].as_bytes().to_vec()];
                if let Some(m) = models.get_mut(&k) {
                    for f in &fields {
                        if let Some(i) = m.pairs.iter().position(|(x, _)| *x == field(*f)) {
                            m.pairs.remove(i);
                            deleted += 1;
                            if m.pairs.is_empty() {
                                break;
                            }
                        }
                    }
                    if m.pairs.is_empty() {
                        models.remove(&k);
                    }
                }
                argv.extend(fields.iter().map(|f| field(*f)));
                let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
                assert_eq!(cmd(&mut s, &refs), Reply::Int(deleted));
            }
            Op::IncrBy(k, f, n) => {
                let old = models.get(&k).and_then(|m| m.get(&field(f)).cloned());
                let r = cmd(
                    &mut s,
                    &[
                        b"HINCRBY",
                        KEYS[k].as_bytes(),
                        &field(f),
                        n.to_string().as_bytes(),
                    ],
                );
                let old_n = match old {
                    None => Some(0),
                    Some(v) => std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .filter(|x| x.to_string().as_bytes() == v.as_slice()),
                };
                match old_n {
                    Some(o) => {
                        assert_eq!(r, Reply::Int(o + n));
                        models
                            .entry(k)
                            .or_default()
                            .set(field(f), (o + n).to_string().into_bytes());
                    }
                    None => assert!(r.is_error(), "{r:?}"),
                }
            }
            Op::IncrByFloat(k, f, n) => {
                let incr = format!("{}.{:02}", n / 100, (n % 100).abs());
                let incr = if n < 0 && n / 100 == 0 {
                    format!("-{incr}")
                } else {
                    incr
                };
                let old = models.get(&k).and_then(|m| m.get(&field(f)).cloned());
                let r = cmd(
                    &mut s,
                    &[
                        b"HINCRBYFLOAT",
                        KEYS[k].as_bytes(),
                        &field(f),
                        incr.as_bytes(),
                    ],
                );
                let old_f = match &old {
                    None => Some(0.0),
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<f64>().ok()),
                };
                match (old_f, &r) {
                    (Some(o), Reply::Bulk(b)) => {
                        let got: f64 = std::str::from_utf8(b).unwrap().parse().unwrap();
                        let want = o + incr.parse::<f64>().unwrap();
                        assert!(
                            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                            "{got} vs {want}"
                        );
                        models.entry(k).or_default().set(field(f), b.to_vec());
                    }
                    (_, r) => assert!(r.is_error(), "{old:?} + {incr}: {r:?}"),
                }
            }
            Op::DelKey(k) => {
                let existed = models.remove(&k).is_some();
                assert_eq!(
                    cmd(&mut s, &[b"DEL", KEYS[k].as_bytes()]),
                    Reply::Int(i64::from(existed))
                );
            }
            Op::RandField(k, n, with) => {
                let mut argv: Vec<&[u8]> = vec![b"HRANDFIELD", KEYS[k].as_bytes()];
                let count = n.to_string();
                argv.push(count.as_bytes());
                if with {
                    argv.push(b"WITHVALUES");
                }
                let got = flat(&cmd(&mut s, &argv));
                let m = models.get(&k).cloned().unwrap_or_default();
                let len = m.pairs.len() as u64;
                let expect = if m.pairs.is_empty() {
                    0
                } else if n >= 0 {
                    (n as u64).min(len)
                } else {
                    n.unsigned_abs()
                };
                let step = if with { 2 } else { 1 };
                assert_eq!(got.len() as u64, expect * step as u64);
                let mut seen = BTreeSet::new();
                for c in got.chunks(step) {
                    let v = m
                        .get(&c[0])
                        .unwrap_or_else(|| panic!("{:?} not in the hash", c[0]));
                    if with {
                        assert_eq!(&c[1], v);
                    }
                    let fresh = seen.insert(c[0].clone());
                    assert!(fresh || n < 0, "positive count repeated a field");
                }
            }
            Op::Scan(k, count) => {
                let mut cursor = b"0".to_vec();
                let mut seen = BTreeSet::new();
                for _ in 0..10_000 {
                    let r = cmd(
                        &mut s,
                        &[
                            b"HSCAN",
                            KEYS[k].as_bytes(),
                            &cursor,
                            b"COUNT",
                            count.to_string().as_bytes(),
                        ],
                    );
                    let Reply::Array(parts) = r else {
                        panic!("HSCAN reply {r:?}")
                    };
                    cursor = bulk(&parts[0]);
                    for c in flat(&parts[1]).chunks(2) {
                        seen.insert((c[0].clone(), c[1].clone()));
                    }
                    if cursor == b"0" {
                        break;
                    }
                }
                assert_eq!(cursor, b"0");
                let want: BTreeSet<_> = models
                    .get(&k)
                    .map_or_else(BTreeSet::new, |m| m.pairs.iter().cloned().collect());
                assert_eq!(seen, want, "full HSCAN of {}", KEYS[k]);
            }
        }
        for (i, key) in KEYS.iter().enumerate() {
            check_key(&mut s, key, models.get(&i));
        }
    }

    // The logged effects rebuild the same hashes, order and encoding included.
    let effects = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let mut replay = Session::with_config(Config::default());
    for (db, argv) in effects {
        let r = replay.call_in_db(db, argv.clone());
        assert!(!r.is_error(), "replaying {argv:?}: {r:?}");
    }
    for (i, key) in KEYS.iter().enumerate() {
        check_key(&mut replay, key, models.get(&i));
        let a = cmd(&mut s, &[b"HGETALL", key.as_bytes()]);
        let b = cmd(&mut replay, &[b"HGETALL", key.as_bytes()]);
        if !models.get(&i).is_some_and(|m| m.table) {
            assert_eq!(a, b, "replayed {key}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn hashes_follow_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
