//! Model-based property test of consumer groups: random sequences of
//! stream writes and group operations (deliveries with and without NOACK,
//! history reads, acknowledgements, claims with every option, autoclaims,
//! consumer deletion, SETID) run against `Group` and against a plain
//! `BTreeMap` model of the PEL. After every step:
//!
//! - the group's PEL equals the model's (owner, delivery time, count);
//! - every pending entry belongs to exactly one consumer, and each
//!   consumer's PEL is exactly the group PEL entries it owns
//!   (`Group::check_invariants`, plus a comparison per consumer);
//! - an acknowledged entry never comes back, unless it is delivered again
//!   legitimately (SETID moved `last-delivered-id` back, or XCLAIM FORCE);
//! - `last-delivered-id` never goes backwards except through SETID.

use bytes::Bytes;
use ferrite_streams::group::{ClaimOptions, ClaimOutcome, Group, ENTRIES_READ_INVALID};
use ferrite_streams::{Stream, StreamConfig, StreamId, XaddId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const CONSUMERS: [&[u8]; 4] = [b"alice", b"bob", b"carol", b"dave"];

#[derive(Clone, Debug)]
enum Op {
    Add,
    Delete(u64),
    Deliver {
        c: usize,
        count: Option<usize>,
        noack: bool,
    },
    History {
        c: usize,
        start: u64,
        count: Option<usize>,
    },
    Ack(Vec<u64>),
    Claim {
        c: usize,
        ids: Vec<u64>,
        min_idle: i64,
        idle_back: Option<u64>,
        retry: Option<u64>,
        force: bool,
        justid: bool,
    },
    AutoClaim {
        c: usize,
        start: u64,
        count: u64,
        min_idle: i64,
        justid: bool,
    },
    DeleteConsumer(usize),
    CreateConsumer(usize),
    SetId(u64),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONSUMERS.len();
    let n = 0u64..40;
    prop_oneof![
        4 => Just(Op::Add),
        1 => n.clone().prop_map(Op::Delete),
        4 => (c.clone(), prop::option::of(1usize..5), prop::bool::weighted(0.15))
            .prop_map(|(c, count, noack)| Op::Deliver { c, count, noack }),
        2 => (c.clone(), n.clone(), prop::option::of(1usize..4))
            .prop_map(|(c, start, count)| Op::History { c, start, count }),
        3 => prop::collection::vec(n.clone(), 1..4).prop_map(Op::Ack),
        3 => (
            c.clone(),
            prop::collection::vec(n.clone(), 1..4),
            prop_oneof![Just(0i64), Just(5), Just(1000)],
            prop::option::of(0u64..50),
            prop::option::of(0u64..6),
            prop::bool::weighted(0.3),
            prop::bool::ANY,
        )
            .prop_map(|(c, ids, min_idle, idle_back, retry, force, justid)| Op::Claim {
                c,
                ids,
                min_idle,
                idle_back,
                retry,
                force,
                justid,
            }),
        2 => (c.clone(), n.clone(), 1u64..5, prop_oneof![Just(0i64), Just(5)], prop::bool::ANY)
            .prop_map(|(c, start, count, min_idle, justid)| Op::AutoClaim {
                c,
                start,
                count,
                min_idle,
                justid,
            }),
        1 => c.clone().prop_map(Op::DeleteConsumer),
        1 => c.prop_map(Op::CreateConsumer),
        1 => n.prop_map(Op::SetId),
        2 => (1u64..20).prop_map(Op::Tick),
    ]
}

fn id(n: u64) -> StreamId {
    StreamId::new(n, 0)
}

/// A pending entry in the model: owner name, delivery time, count.
type ModelPel = BTreeMap<StreamId, (Bytes, u64, u64)>;

struct Model {
    pel: ModelPel,
    consumers: BTreeSet<Bytes>,
    last_id: StreamId,
    /// Acknowledged (or dropped) and not legitimately delivered since.
    acked: BTreeSet<StreamId>,
}

fn name(c: usize) -> Bytes {
    Bytes::from_static(CONSUMERS[c])
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cfg = StreamConfig {
        node_max_entries: 4,
        node_max_bytes: 0,
    };
    let fields = [Bytes::from_static(b"f"), Bytes::from_static(b"v")];
    let mut s = Stream::new();
    let mut g = Group::new(StreamId::MIN, ENTRIES_READ_INVALID);
    let mut m = Model {
        pel: BTreeMap::new(),
        consumers: BTreeSet::new(),
        last_id: StreamId::MIN,
        acked: BTreeSet::new(),
    };
    let mut now: u64 = 1_000;
    let mut next = 1u64;
    for op in ops {
        let before_last = g.last_id();
        let mut moved_back_ok = false;
        match op {
            Op::Add => {
                s.add(XaddId::Explicit(id(next)), &fields, now, &cfg)
                    .map_err(|e| TestCaseError::fail(format!("add: {e}")))?;
                next += 1;
            }
            Op::Delete(n) => {
                s.delete(&[id(n)]);
            }
            Op::Deliver { c, count, noack } => {
                let (cid, _) = g.lookup_or_create_consumer(CONSUMERS[c], now);
                m.consumers.insert(name(c));
                let got = g.deliver_new(&s, cid, count, noack, now);
                let want: Vec<StreamId> = s
                    .range(
                        m.last_id.incr().unwrap_or(StreamId::MAX),
                        StreamId::MAX,
                        count,
                        false,
                    )
                    .iter()
                    .map(|e| e.id)
                    .collect();
                let got_ids: Vec<StreamId> = got.iter().map(|d| d.entry.id).collect();
                prop_assert_eq!(&got_ids, &want);
                for &i in &want {
                    m.last_id = i;
                    if !noack {
                        m.pel.insert(i, (name(c), now, 1));
                        m.acked.remove(&i);
                    }
                }
            }
            Op::History { c, start, count } => {
                let (cid, _) = g.lookup_or_create_consumer(CONSUMERS[c], now);
                m.consumers.insert(name(c));
                let got = g.read_history(&s, cid, id(start), count, now);
                let want: Vec<StreamId> = m
                    .pel
                    .range(id(start)..)
                    .filter(|(_, v)| v.0 == name(c))
                    .map(|(k, _)| *k)
                    .take(count.unwrap_or(usize::MAX))
                    .collect();
                let got_ids: Vec<StreamId> = got.iter().map(|h| h.id).collect();
                prop_assert_eq!(&got_ids, &want);
                for h in &got {
                    prop_assert_eq!(h.entry.is_some(), s.contains(h.id));
                    if h.entry.is_some() {
                        if let Some(v) = m.pel.get_mut(&h.id) {
                            v.1 = now;
                            v.2 += 1;
                        }
                    }
                }
            }
            Op::Ack(ids) => {
                for n in ids {
                    let was = m.pel.remove(&id(n)).is_some();
                    prop_assert_eq!(g.ack(id(n)), was);
                    if was {
                        m.acked.insert(id(n));
                    }
                }
            }
            Op::Claim {
                c,
                ids,
                min_idle,
                idle_back,
                retry,
                force,
                justid,
            } => {
                let time = idle_back.map_or(now, |b| now.saturating_sub(b));
                let opts = ClaimOptions {
                    min_idle,
                    delivery_time: time,
                    retry_count: retry,
                    force,
                    justid,
                };
                let mut cache = None;
                for n in ids {
                    let i = id(n);
                    let got = g.claim(&s, i, CONSUMERS[c], &mut cache, &opts, now);
                    let want = if !s.contains(i) {
                        if m.pel.remove(&i).is_some() {
                            m.acked.insert(i);
                            "deleted"
                        } else {
                            "skipped"
                        }
                    } else {
                        match m.pel.get(&i).cloned() {
                            Some((_, t, cnt)) => {
                                let idle = now as i64 - t as i64;
                                if min_idle != 0 && idle < min_idle {
                                    "skipped"
                                } else {
                                    let cnt = retry.unwrap_or(if justid { cnt } else { cnt + 1 });
                                    m.pel.insert(i, (name(c), time, cnt));
                                    m.consumers.insert(name(c));
                                    "claimed"
                                }
                            }
                            None if force => {
                                let cnt = retry.unwrap_or(if justid { 1 } else { 2 });
                                m.pel.insert(i, (name(c), time, cnt));
                                m.consumers.insert(name(c));
                                m.acked.remove(&i);
                                "claimed"
                            }
                            None => "skipped",
                        }
                    };
                    let got = match got {
                        ClaimOutcome::Claimed(_) => "claimed",
                        ClaimOutcome::Deleted => "deleted",
                        ClaimOutcome::Skipped => "skipped",
                    };
                    prop_assert_eq!(got, want, "claim {}", i);
                }
            }
            Op::AutoClaim {
                c,
                start,
                count,
                min_idle,
                justid,
            } => {
                let opts = ClaimOptions {
                    min_idle,
                    delivery_time: now,
                    retry_count: None,
                    force: false,
                    justid,
                };
                let got = g.autoclaim(&s, CONSUMERS[c], id(start), count, &opts, now);
                // The model: Redis's loop, attempts = count * 10.
                let mut attempts = count * 10;
                let mut left = count;
                let mut claimed = Vec::new();
                let mut deleted = Vec::new();
                let mut cursor = Some(id(start));
                while attempts > 0 && left > 0 {
                    attempts -= 1;
                    let Some(from) = cursor else { break };
                    let Some(i) = m.pel.range(from..).next().map(|(k, _)| *k) else {
                        cursor = None;
                        break;
                    };
                    cursor = i.incr();
                    if !s.contains(i) {
                        m.pel.remove(&i);
                        m.acked.insert(i);
                        deleted.push(i);
                        left -= 1;
                        continue;
                    }
                    let (_, t, cnt) = m.pel[&i].clone();
                    if min_idle != 0 && (now as i64 - t as i64) < min_idle {
                        continue;
                    }
                    let cnt = if justid { cnt } else { cnt + 1 };
                    m.pel.insert(i, (name(c), now, cnt));
                    m.consumers.insert(name(c));
                    claimed.push(i);
                    left -= 1;
                }
                let next_id = cursor
                    .and_then(|c| m.pel.range(c..).next().map(|(k, _)| *k))
                    .unwrap_or(StreamId::MIN);
                let got_claimed: Vec<StreamId> = got.claimed.iter().map(|p| p.id).collect();
                prop_assert_eq!(got_claimed, claimed);
                prop_assert_eq!(got.deleted, deleted);
                prop_assert_eq!(got.next, next_id);
            }
            Op::DeleteConsumer(c) => {
                let n = name(c);
                let owned: Vec<StreamId> = m
                    .pel
                    .iter()
                    .filter(|(_, v)| v.0 == n)
                    .map(|(k, _)| *k)
                    .collect();
                let want = m.consumers.remove(&n).then_some(owned.len() as u64);
                for i in owned {
                    m.pel.remove(&i);
                    m.acked.insert(i);
                }
                prop_assert_eq!(g.delete_consumer(CONSUMERS[c]), want);
            }
            Op::CreateConsumer(c) => {
                let created = m.consumers.insert(name(c));
                prop_assert_eq!(g.create_consumer(CONSUMERS[c], now).1, created);
            }
            Op::SetId(n) => {
                g.set_last_id(id(n), ENTRIES_READ_INVALID);
                m.last_id = id(n);
                moved_back_ok = true;
            }
            Op::Tick(d) => now += d,
        }
        // Invariants.
        g.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(g.last_id(), m.last_id);
        if !moved_back_ok {
            prop_assert!(g.last_id() >= before_last, "last-delivered-id went back");
        }
        let got: Vec<(StreamId, Bytes, u64, u64)> = g
            .pending_range(StreamId::MIN, StreamId::MAX)
            .map(|p| {
                (
                    p.id,
                    g.consumer_name(p.consumer).clone(),
                    p.delivery_time,
                    p.delivery_count,
                )
            })
            .collect();
        let want: Vec<(StreamId, Bytes, u64, u64)> = m
            .pel
            .iter()
            .map(|(k, v)| (*k, v.0.clone(), v.1, v.2))
            .collect();
        prop_assert_eq!(got, want);
        for (i, _) in m.pel.iter() {
            prop_assert!(!m.acked.contains(i), "{} came back after XACK", i);
        }
        let names: Vec<Bytes> = g.consumers().map(|c| c.name().clone()).collect();
        prop_assert_eq!(names, m.consumers.iter().cloned().collect::<Vec<_>>());
        for c in g.consumers() {
            let cid = g
                .consumer_id(c.name())
                .ok_or_else(|| TestCaseError::fail("no id"))?;
            let mine: Vec<StreamId> = g
                .consumer_pending_range(cid, StreamId::MIN, StreamId::MAX)
                .map(|p| p.id)
                .collect();
            let want: Vec<StreamId> = m
                .pel
                .iter()
                .filter(|(_, v)| v.0 == c.name())
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(c.pending_count(), want.len());
            prop_assert_eq!(mine, want);
        }
        prop_assert_eq!(
            g.first_pending(),
            m.pel.keys().next().copied(),
            "first pending"
        );
        prop_assert_eq!(g.last_pending(), m.pel.keys().next_back().copied());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn group_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

/// Large PELs exercise chunk splits and merges: deliveries in order, then
/// acknowledgements and claims in a scattered order.
#[test]
fn large_pel_stays_consistent() {
    let cfg = StreamConfig::default();
    let fields = [Bytes::from_static(b"f"), Bytes::from_static(b"v")];
    let mut s = Stream::new();
    for i in 1..=5000u64 {
        s.add(XaddId::Explicit(id(i)), &fields, 0, &cfg)
            .expect("add");
    }
    let mut g = Group::new(StreamId::MIN, 0);
    let mut cids = Vec::new();
    for c in CONSUMERS {
        cids.push(g.create_consumer(c, 0).0);
    }
    for (k, &cid) in cids.iter().cycle().take(50).enumerate() {
        g.deliver_new(&s, cid, Some(100), false, k as u64);
    }
    assert_eq!(g.pending_count(), 5000);
    g.check_invariants().expect("after delivery");
    let opts = ClaimOptions {
        min_idle: 0,
        delivery_time: 7,
        retry_count: None,
        force: false,
        justid: false,
    };
    let mut x: u64 = 88172645463325252;
    for step in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = id(1 + x % 5000);
        match step % 3 {
            0 => {
                g.ack(i);
            }
            _ => {
                let mut cache = None;
                g.claim(&s, i, CONSUMERS[(x % 4) as usize], &mut cache, &opts, 9);
            }
        }
        if step % 1000 == 0 {
            g.check_invariants().expect("during churn");
        }
    }
    g.check_invariants().expect("after churn");
    let total: usize = g.consumers().map(|c| c.pending_count()).sum();
    assert_eq!(total, g.pending_count());
}
