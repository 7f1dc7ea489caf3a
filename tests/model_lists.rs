//! Model-based property test of the list commands through an in-process
//! `Session`: random pushes, pops (with counts), LSET, LREM, LTRIM,
//! LINSERT, LMOVE, RPOPLPUSH, LMPOP and the blocking pops (which never
//! block in a session: they reply as inside MULTI) on a few keys, checked
//! after every step against a `VecDeque` model (LRANGE, LLEN, LINDEX,
//! LPOS). At the end the logged effects are replayed into a fresh session,
//! which must hold exactly the same lists.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

const KEYS: [&str; 3] = ["l1", "l2", "l3"];

#[derive(Debug, Clone)]
enum Op {
    Push(usize, bool, Vec<u8>),
    PushX(usize, bool, u8),
    Pop(usize, bool, Option<u8>),
    Set(usize, i8, u8),
    Rem(usize, i8, u8),
    Trim(usize, i8, i8),
    Insert(usize, bool, u8, u8),
    Move(usize, usize, bool, bool),
    MPop(Vec<usize>, bool, u8),
    BPop(Vec<usize>, bool),
    BMove(usize, usize, bool, bool),
    DelKey(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let v = 0u8..6;
    prop_oneof![
        6 => (k.clone(), any::<bool>(), prop::collection::vec(v.clone(), 1..6)).prop_map(|(k, l, v)| Op::Push(k, l, v)),
        1 => (k.clone(), any::<bool>(), v.clone()).prop_map(|(k, l, v)| Op::PushX(k, l, v)),
        3 => (k.clone(), any::<bool>(), prop::option::of(0u8..5)).prop_map(|(k, l, c)| Op::Pop(k, l, c)),
        1 => (k.clone(), -8i8..8, v.clone()).prop_map(|(k, i, v)| Op::Set(k, i, v)),
        1 => (k.clone(), -3i8..3, v.clone()).prop_map(|(k, c, v)| Op::Rem(k, c, v)),
        1 => (k.clone(), -8i8..8, -8i8..8).prop_map(|(k, a, b)| Op::Trim(k, a, b)),
        1 => (k.clone(), any::<bool>(), v.clone(), v).prop_map(|(k, a, p, v)| Op::Insert(k, a, p, v)),
        2 => (k.clone(), k.clone(), any::<bool>(), any::<bool>()).prop_map(|(s, d, f, t)| Op::Move(s, d, f, t)),
        1 => (prop::collection::vec(k.clone(), 1..4), any::<bool>(), 1u8..4).prop_map(|(ks, l, c)| Op::MPop(ks, l, c)),
        1 => (prop::collection::vec(k.clone(), 1..4), any::<bool>()).prop_map(|(ks, l)| Op::BPop(ks, l)),
        1 => (k.clone(), k.clone(), any::<bool>(), any::<bool>()).prop_map(|(s, d, f, t)| Op::BMove(s, d, f, t)),
        1 => k.prop_map(Op::DelKey),
    ]
}

type Model = HashMap<usize, VecDeque<Vec<u8>>>;
type Effects = Vec<(usize, Vec<Bytes>)>;

thread_local! {
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

fn val(v: u8) -> Vec<u8> {
    format!("v{v}").into_bytes()
}

fn side(left: bool) -> &'static [u8] {
    if left {
        b"LEFT"
    } else {
        b"RIGHT"
    }
}

fn bulk(b: &[u8]) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(b))
}

fn bulks(items: &[Vec<u8>]) -> Reply {
    Reply::Array(items.iter().map(|b| bulk(b)).collect())
}

fn pop(m: &mut Model, k: usize, left: bool) -> Option<Vec<u8>> {
    let l = m.get_mut(&k)?;
    let v = if left { l.pop_front() } else { l.pop_back() };
    if l.is_empty() {
        m.remove(&k);
    }
    v
}

fn push(m: &mut Model, k: usize, left: bool, v: Vec<u8>) {
    let l = m.entry(k).or_default();
    if left {
        l.push_front(v)
    } else {
        l.push_back(v)
    }
}

/// Redis's index clamping for LRANGE/LTRIM.
fn clamp(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { len + stop } else { stop };
    if start > stop || start >= len {
        return None;
    }
    Some((start as usize, stop.min(len - 1) as usize))
}

fn check(s: &mut Session, m: &Model) {
    for (i, key) in KEYS.iter().enumerate() {
        let k = key.as_bytes();
        let want: Vec<Vec<u8>> = m
            .get(&i)
            .map_or_else(Vec::new, |l| l.iter().cloned().collect());
        assert_eq!(cmd(s, &[b"LRANGE", k, b"0", b"-1"]), bulks(&want), "{key}");
        assert_eq!(cmd(s, &[b"LLEN", k]), Reply::Int(want.len() as i64));
        assert_eq!(
            cmd(s, &[b"EXISTS", k]),
            Reply::Int(i64::from(!want.is_empty()))
        );
        let last = want.last().map_or(Reply::Null, |b| bulk(b));
        assert_eq!(cmd(s, &[b"LINDEX", k, b"-1"]), last);
        let pos = want
            .iter()
            .position(|x| x == &val(1))
            .map_or(Reply::Null, |p| Reply::Int(p as i64));
        assert_eq!(cmd(s, &[b"LPOS", k, &val(1)]), pos);
    }
}

fn run(ops: Vec<Op>) {
    LOG.with(|l| l.borrow_mut().clear());
    let mut s = Session::with_config(Config::default());
    let mut m: Model = HashMap::new();
    for op in ops {
        match op {
            Op::Push(k, left, vals) => {
                let mut argv: Vec<Vec<u8>> = vec![
                    if left {
                        b"LPUSH".to_vec()
                    } else {
                        b"RPUSH".to_vec()
                    },
                    KEYS[k].as_bytes().to_vec(),
                ];
                for v in vals {
                    argv.push(val(v));
                    push(&mut m, k, left, val(v));
                }
                let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
                let len = m.get(&k).map_or(0, |l| l.len());
                assert_eq!(cmd(&mut s, &refs), Reply::Int(len as i64));
            }
            Op::PushX(k, left, v) => {
                let name: &[u8] = if left { b"LPUSHX" } else { b"RPUSHX" };
                let r = cmd(&mut s, &[name, KEYS[k].as_bytes(), &val(v)]);
                if m.contains_key(&k) {
                    push(&mut m, k, left, val(v));
                }
                let len = m.get(&k).map_or(0, |l| l.len());
                assert_eq!(r, Reply::Int(len as i64));
            }
            Op::Pop(k, left, count) => {
                let name: &[u8] = if left { b"LPOP" } else { b"RPOP" };
                let key = KEYS[k].as_bytes();
                match count {
                    None => {
                        let want = pop(&mut m, k, left).map_or(Reply::Null, |v| bulk(&v));
                        assert_eq!(cmd(&mut s, &[name, key]), want);
                    }
                    Some(c) => {
                        let want = if !m.contains_key(&k) {
                            Reply::NullArray
                        } else {
                            let got: Vec<Vec<u8>> =
                                (0..c).filter_map(|_| pop(&mut m, k, left)).collect();
                            bulks(&got)
                        };
                        let r = cmd(&mut s, &[name, key, c.to_string().as_bytes()]);
                        assert_eq!(r, want);
                    }
                }
            }
            Op::Set(k, i, v) => {
                let r = cmd(
                    &mut s,
                    &[
                        b"LSET",
                        KEYS[k].as_bytes(),
                        i.to_string().as_bytes(),
                        &val(v),
                    ],
                );
                match m.get_mut(&k) {
                    None => assert!(r.is_error(), "{r:?}"),
                    Some(l) => {
                        let len = l.len() as i64;
                        let idx = if i < 0 { len + i as i64 } else { i as i64 };
                        if (0..len).contains(&idx) {
                            l[idx as usize] = val(v);
                            assert_eq!(r, Reply::Simple(Bytes::from_static(b"OK")));
                        } else {
                            assert!(r.is_error(), "{r:?}");
                        }
                    }
                }
            }
            Op::Rem(k, c, v) => {
                let mut removed = 0;
                if let Some(l) = m.get_mut(&k) {
                    let limit = if c == 0 {
                        usize::MAX
                    } else {
                        c.unsigned_abs() as usize
                    };
                    let target = val(v);
                    let mut items: Vec<Vec<u8>> = l.iter().cloned().collect();
                    if c < 0 {
                        items.reverse();
                    }
                    items.retain(|x| {
                        if removed < limit && *x == target {
                            removed += 1;
                            false
                        } else {
                            true
                        }
                    });
                    if c < 0 {
                        items.reverse();
                    }
                    *l = items.into();
                    if l.is_empty() {
                        m.remove(&k);
                    }
                }
                let r = cmd(
                    &mut s,
                    &[
                        b"LREM",
                        KEYS[k].as_bytes(),
                        c.to_string().as_bytes(),
                        &val(v),
                    ],
                );
                assert_eq!(r, Reply::Int(removed as i64));
            }
            Op::Trim(k, a, b) => {
                if let Some(l) = m.get_mut(&k) {
                    match clamp(l.len(), a as i64, b as i64) {
                        None => l.clear(),
                        Some((x, y)) => {
                            l.truncate(y + 1);
                            l.drain(..x);
                        }
                    }
                    if l.is_empty() {
                        m.remove(&k);
                    }
                }
                let r = cmd(
                    &mut s,
                    &[
                        b"LTRIM",
                        KEYS[k].as_bytes(),
                        a.to_string().as_bytes(),
                        b.to_string().as_bytes(),
                    ],
                );
                assert_eq!(r, Reply::Simple(Bytes::from_static(b"OK")));
            }
            Op::Insert(k, after, p, v) => {
                let want = match m.get_mut(&k) {
                    None => 0,
                    Some(l) => match l.iter().position(|x| *x == val(p)) {
                        None => -1,
                        Some(i) => {
                            l.insert(if after { i + 1 } else { i }, val(v));
                            l.len() as i64
                        }
                    },
                };
                let wh: &[u8] = if after { b"AFTER" } else { b"BEFORE" };
                let r = cmd(
                    &mut s,
                    &[b"LINSERT", KEYS[k].as_bytes(), wh, &val(p), &val(v)],
                );
                assert_eq!(r, Reply::Int(want));
            }
            Op::Move(src, dst, from, to) | Op::BMove(src, dst, from, to) => {
                let blocking = matches!(op, Op::BMove(..));
                let want = match pop(&mut m, src, from) {
                    // A session never blocks: BLMOVE replies a null bulk, as in MULTI.
                    None => Reply::Null,
                    Some(v) => {
                        push(&mut m, dst, to, v.clone());
                        bulk(&v)
                    }
                };
                let (s_key, d_key) = (KEYS[src].as_bytes(), KEYS[dst].as_bytes());
                let r = if blocking {
                    cmd(
                        &mut s,
                        &[b"BLMOVE", s_key, d_key, side(from), side(to), b"0"],
                    )
                } else if !from && to {
                    cmd(&mut s, &[b"RPOPLPUSH", s_key, d_key])
                } else {
                    cmd(&mut s, &[b"LMOVE", s_key, d_key, side(from), side(to)])
                };
                assert_eq!(r, want);
            }
            Op::MPop(keys, left, count) => {
                let first = keys.iter().copied().find(|k| m.contains_key(k));
                let want = match first {
                    None => Reply::NullArray,
                    Some(k) => {
                        let got: Vec<Vec<u8>> =
                            (0..count).filter_map(|_| pop(&mut m, k, left)).collect();
                        Reply::Array(vec![bulk(KEYS[k].as_bytes()), bulks(&got)])
                    }
                };
                let n = keys.len().to_string();
                let c = count.to_string();
                let mut argv: Vec<&[u8]> = vec![b"LMPOP", n.as_bytes()];
                argv.extend(keys.iter().map(|k| KEYS[*k].as_bytes()));
                argv.extend([side(left), b"COUNT", c.as_bytes()]);
                assert_eq!(cmd(&mut s, &argv), want);
            }
            Op::BPop(keys, left) => {
                let first = keys.iter().copied().find(|k| m.contains_key(k));
                let want = match first {
                    None => Reply::NullArray,
                    Some(k) => {
                        let v = pop(&mut m, k, left).unwrap_or_default();
                        Reply::Array(vec![bulk(KEYS[k].as_bytes()), bulk(&v)])
                    }
                };
                let name: &[u8] = if left { b"BLPOP" } else { b"BRPOP" };
                let mut argv: Vec<&[u8]> = vec![name];
                argv.extend(keys.iter().map(|k| KEYS[*k].as_bytes()));
                argv.push(b"0");
                assert_eq!(cmd(&mut s, &argv), want);
            }
            Op::DelKey(k) => {
                let existed = m.remove(&k).is_some();
                assert_eq!(
                    cmd(&mut s, &[b"DEL", KEYS[k].as_bytes()]),
                    Reply::Int(i64::from(existed))
                );
            }
        }
        check(&mut s, &m);
    }

    // The logged effects rebuild the same lists; no blocking command is
    // ever logged as such.
    let effects = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let mut replay = Session::with_config(Config::default());
    for (db, argv) in effects {
        let name = argv[0].to_ascii_uppercase();
        assert!(
            !matches!(
                &name[..],
                b"BLPOP" | b"BRPOP" | b"BLMOVE" | b"BRPOPLPUSH" | b"BLMPOP"
            ),
            "a blocking command was logged: {argv:?}"
        );
        let r = replay.call_in_db(db, argv.clone());
        assert!(!r.is_error(), "replaying {argv:?}: {r:?}");
    }
    check(&mut replay, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn lists_follow_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run(ops);
    }
}
