//! An epoch's window state delta (the `W` effect of the commit log): a
//! TUMBLE/HOP epoch logs only the panes it changed, and replaying the
//! deltas of committed epochs (with epochs taken back in between) rebuilds
//! the same state as the plan that ran them (TUMBLE, HOP and SESSION).

use ferrite_pipeline::{Entry, EntryId, Plan, Record, WindowOptions};
use std::collections::BTreeMap;

const HOP: &str = "INSERT INTO o SELECT k, window_start, count(*) AS n, sum(v) AS s FROM t \
                   GROUP BY k, HOP(_ms, INTERVAL '1' MINUTE, INTERVAL '1' HOUR)";

/// The window operator's frame of a plan snapshot, and the frame's place.
fn window_frame(snap: &[u8]) -> (usize, usize) {
    let n = u32::from_le_bytes([snap[1], snap[2], snap[3], snap[4]]) as usize;
    let mut at = 5;
    for _ in 0..n {
        let len = u32::from_le_bytes([snap[at], snap[at + 1], snap[at + 2], snap[at + 3]]) as usize;
        if len > 0 {
            return (at + 4, len);
        }
        at += 4 + len;
    }
    panic!("no window state");
}

/// A window state (version 3, no Ext aggregates) in a form that does not
/// depend on key slot order: globals, rows by key, revisions by key.
type Canon = (
    Vec<u8>,
    BTreeMap<Vec<u8>, Vec<u8>>,
    Vec<(Vec<u8>, i64, u32)>,
);

fn canon(plan: &Plan) -> Canon {
    let snap = plan.snapshot();
    let (at, len) = window_frame(&snap);
    let w = &snap[at..at + len];
    assert_eq!(w[0], 3, "state version");
    let u32_at = |a: usize| u32::from_le_bytes([w[a], w[a + 1], w[a + 2], w[a + 3]]);
    let stride = u32_at(1) as usize;
    // ver, stride, globals: max_ts (9), two counters (16), three clocks (27).
    let mut a = 5 + 52;
    let globals = w[5..a].to_vec();
    let nkeys = u32_at(a) as usize;
    a += 4;
    let mut keys = Vec::new();
    let mut rows = BTreeMap::new();
    for _ in 0..nkeys {
        let l = u32_at(a) as usize;
        let key = w[a + 4..a + 4 + l].to_vec();
        a += 4 + l;
        let n = u32_at(a) as usize;
        let bytes = w[a + 4..a + 4 + n * stride * 8].to_vec();
        a += 4 + n * stride * 8;
        keys.push(key.clone());
        assert!(rows.insert(key, bytes).is_none(), "a key twice");
    }
    let nrevs = u32_at(a) as usize;
    a += 4;
    let mut revs = Vec::new();
    for _ in 0..nrevs {
        let p = u32_at(a) as usize;
        let mut s = [0u8; 8];
        s.copy_from_slice(&w[a + 4..a + 12]);
        revs.push((keys[p].clone(), i64::from_le_bytes(s), u32_at(a + 12)));
        a += 16;
    }
    assert_eq!(a, w.len(), "whole state read");
    revs.sort();
    (globals, rows, revs)
}

fn batch(plan: &mut Plan, evs: &[(u64, String, i64)], seq0: u64, out: &mut Vec<Record>) {
    let fields: Vec<Vec<(String, String)>> = evs
        .iter()
        .map(|(_, k, v)| {
            vec![
                ("k".to_string(), k.clone()),
                ("v".to_string(), v.to_string()),
            ]
        })
        .collect();
    let refs: Vec<Vec<(&str, &str)>> = fields
        .iter()
        .map(|f| f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
        .collect();
    let entries: Vec<Entry<'_>> = evs
        .iter()
        .zip(&refs)
        .enumerate()
        .map(|(i, ((ms, _, _), f))| Entry::new(EntryId::new(*ms, seq0 + i as u64), f))
        .collect();
    let st = plan.process_batch(&entries, out);
    assert_eq!(st.failed, 0, "{:?}", st.first_error);
}

#[test]
fn hop_delta_of_one_pane_is_small() {
    let mut plan = Plan::compile_with(HOP, &WindowOptions::default()).expect("compiles");
    let mut out = Vec::new();
    // One key with an entry in each of 60 minutes: 60 panes.
    let evs: Vec<(u64, String, i64)> = (0..60u64)
        .map(|m| (m * 60_000 + 5, "AAPL".to_string(), 1))
        .collect();
    plan.begin_epoch();
    batch(&mut plan, &evs, 0, &mut out);
    plan.end_epoch();
    let stats = plan.window_stats().expect("windowed");
    assert_eq!(stats.open_windows, 60);
    let (at, len) = window_frame(&plan.snapshot());
    assert!(at > 0 && len > 60 * 3 * 8, "whole state {len} bytes");
    // An epoch touching the last pane only.
    plan.begin_epoch();
    batch(
        &mut plan,
        &[(59 * 60_000 + 7, "AAPL".to_string(), 2)],
        100,
        &mut out,
    );
    let delta = plan.epoch_delta().expect("in an epoch");
    plan.end_epoch();
    assert_eq!(delta[0], 4, "delta version");
    // Header and globals (66 bytes), the key (9), one row of 4 words.
    assert!(
        delta.len() <= 128 && delta.len() * 10 < len,
        "an epoch touching one of 60 panes ({len} bytes of state) logs {} bytes",
        delta.len()
    );
    // A new pane (and the pane it expires) stays small too.
    plan.begin_epoch();
    batch(
        &mut plan,
        &[(60 * 60_000 + 7, "AAPL".to_string(), 3)],
        200,
        &mut out,
    );
    let delta = plan.epoch_delta().expect("in an epoch");
    plan.end_epoch();
    assert!(delta.len() <= 180, "{} bytes", delta.len());
}

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn replay_rebuilds(sql: &str, opts: &WindowOptions, seed: u64) {
    let mut plan = Plan::compile_with(sql, opts).expect("compiles");
    let mut replica = Plan::compile_with(sql, opts).expect("compiles");
    let mut rng = Rng(seed);
    let mut ms = 1_000_000u64;
    let mut now = 5_000_000i64;
    let mut seq = 0;
    let mut results = 0;
    for epoch in 0..400 {
        // Mostly in order, some out of order (late and within lateness).
        let evs: Vec<(u64, String, i64)> = (0..1 + rng.below(30))
            .map(|_| {
                ms += rng.below(9_000);
                let t = ms.saturating_sub(rng.below(8) * rng.below(40_000));
                (t, format!("K{}", rng.below(12)), rng.below(100) as i64 - 20)
            })
            .collect();
        now += rng.below(300) as i64;
        plan.set_clock(now);
        let before = canon(&plan);
        let snap = plan.snapshot();
        plan.begin_epoch();
        let mut out = Vec::new();
        batch(&mut plan, &evs, seq, &mut out);
        assert!(
            plan.snapshot() == snap,
            "a checkpoint during an epoch holds the state before it (epoch {epoch})"
        );
        if rng.below(4) == 0 {
            plan.rollback_epoch();
            let _ = plan.take_late();
            assert!(canon(&plan) == before, "rollback restores (epoch {epoch})");
            assert!(plan.snapshot() == snap);
            out.clear();
            plan.begin_epoch();
            batch(&mut plan, &evs, seq, &mut out);
        }
        seq += evs.len() as u64;
        results += out.len();
        let delta = plan.epoch_delta().expect("in an epoch");
        plan.end_epoch();
        let _ = plan.take_late();
        replica.apply_delta(&delta).expect("applies");
        assert!(
            canon(&replica) == canon(&plan),
            "replayed deltas rebuild the state (seed {seed}, epoch {epoch})"
        );
        if rng.below(10) == 0 {
            // Recovery from a checkpoint, then deltas again.
            let snap = plan.snapshot();
            replica = Plan::compile_with(sql, opts).expect("compiles");
            replica.restore(&snap).expect("restores");
        }
        if rng.below(15) == 0 {
            // Go on from the replayed state.
            std::mem::swap(&mut plan, &mut replica);
        }
    }
    assert!(results > 50, "too few results ({results}) to mean anything");
}

#[test]
fn replayed_hop_deltas_rebuild_the_state() {
    let opts = WindowOptions {
        watermark_ms: 20_000,
        lateness_ms: 120_000,
        ..Default::default()
    };
    for seed in [1, 7, 42] {
        replay_rebuilds(HOP, &opts, seed);
    }
}

#[test]
fn replayed_tumble_updates_deltas_rebuild_the_state() {
    let sql = "INSERT INTO o SELECT k, window_start, count(*) AS n, vwap(v, v) AS w FROM t \
               GROUP BY k, TUMBLE(_ms, INTERVAL '1' MINUTE)";
    let opts = WindowOptions {
        watermark_ms: 5_000,
        lateness_ms: 60_000,
        emit: ferrite_pipeline::Emit::Updates { every_ms: 500 },
        ..Default::default()
    };
    for seed in [3, 11] {
        replay_rebuilds(sql, &opts, seed);
    }
}

#[test]
fn replayed_session_deltas_rebuild_the_state() {
    // Sessions grow, merge when an entry bridges them, reopen late within
    // LATENESS and expire; their timers are lazy (set again when due), so
    // the replayed state must match whatever timers each side holds.
    let sql = "INSERT INTO o SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
               FROM t GROUP BY k, SESSION(_ms, INTERVAL '20' SECOND)";
    let opts = WindowOptions {
        watermark_ms: 15_000,
        lateness_ms: 60_000,
        ..Default::default()
    };
    for seed in [5, 13, 99] {
        replay_rebuilds(sql, &opts, seed);
    }
    let updates = WindowOptions {
        watermark_ms: 5_000,
        lateness_ms: 30_000,
        emit: ferrite_pipeline::Emit::Updates { every_ms: 400 },
        ..Default::default()
    };
    for seed in [2, 21] {
        replay_rebuilds(sql, &updates, seed);
    }
}

#[test]
fn version_3_deltas_still_apply_and_row_changes_need_version_4() {
    let mut plan = Plan::compile_with(HOP, &WindowOptions::default()).expect("compiles");
    let mut replica = Plan::compile_with(HOP, &WindowOptions::default()).expect("compiles");
    let mut out = Vec::new();
    // A new key: its whole state (change 1), as version 3 wrote it.
    plan.begin_epoch();
    batch(&mut plan, &[(1_000, "A".to_string(), 1)], 0, &mut out);
    let mut delta = plan.epoch_delta().expect("epoch");
    plan.end_epoch();
    assert_eq!(delta[0], 4);
    delta[0] = 3;
    replica
        .apply_delta(&delta)
        .expect("a version 3 delta applies");
    assert!(canon(&replica) == canon(&plan));
    // A row change (change 2) under version 3 is refused, naming the flag.
    plan.begin_epoch();
    batch(&mut plan, &[(2_000, "A".to_string(), 1)], 1, &mut out);
    let mut delta = plan.epoch_delta().expect("epoch");
    plan.end_epoch();
    delta[0] = 3;
    let err = replica.apply_delta(&delta).expect_err("refused");
    assert!(err.to_string().contains("bad flag 2"), "{err}");
    delta[0] = 9;
    let err = replica.apply_delta(&delta).expect_err("refused");
    assert!(err.to_string().contains("version 9"), "{err}");
    delta[0] = 4;
    replica.apply_delta(&delta).expect("applies");
    assert!(canon(&replica) == canon(&plan));
}
