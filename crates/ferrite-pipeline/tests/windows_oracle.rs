//! Windows against a reference written here: random out-of-order inputs
//! with several keys and late entries, fed in random batch sizes; the
//! reference keeps every accepted event and computes each result from
//! scratch (collect, bucket, aggregate), the operator keeps flat state.
//! Their outputs must be the same multiset, including revisions (`_rev`)
//! and the LATE stream.

use ferrite_pipeline::{Emit, Entry, EntryId, Plan, Record, WindowOptions};
use std::collections::{BTreeMap, HashMap};

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
}

#[derive(Clone, Debug)]
struct Ev {
    id: EntryId,
    sym: String,
    ts: i64,
    price: Option<i64>,
    vol: Option<i64>,
}

fn gen(seed: u64, n: usize) -> Vec<Ev> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let syms = ["A", "B", "C", "D"];
    (0..n)
        .map(|i| {
            let mut ts = 10_000 + i as i64 * 10 + r.below(300) as i64 - 150;
            if r.below(20) == 0 {
                ts -= 200 + r.below(1500) as i64; // late, maybe too late
            }
            Ev {
                id: EntryId::new(1_000 + i as u64, r.below(2)),
                sym: syms[r.below(syms.len() as u64) as usize].to_string(),
                ts,
                price: (r.below(10) != 0).then(|| 90 + r.below(20) as i64),
                vol: (r.below(12) != 0).then(|| r.below(5) as i64),
            }
        })
        .collect()
}

const AGGS: &str = "count(*) AS n, count(price) AS np, sum(price) AS s, min(price) AS lo, \
    max(price) AS hi, first(price) AS open, last(price) AS close, avg(price) AS mean, \
    vwap(price, vol) AS vwap, count(DISTINCT price) AS d, median(price) AS med, \
    percentile_cont(0.9) WITHIN GROUP (ORDER BY vol) AS p9, twap(price) AS tw";

/// A price of the key before a window: event time, entry ID, price.
type Carry = Option<(i64, EntryId, i64)>;

/// Whether two lines of a window come from the same entries: equal but
/// for twap, which also depends on the price carried in from before the
/// window (a late entry there changes it without entering the window; the
/// operator counts a window changed when an entry entered it).
fn same_entries(a: &str, b: &str) -> bool {
    let strip = |l: &str| {
        l.split(' ')
            .filter(|f| !f.starts_with("tw="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    strip(a) == strip(b)
}

/// The key's latest accepted price before `s`.
fn carry_of(accepted: &[Ev], sym: &str, s: i64) -> Carry {
    accepted
        .iter()
        .filter(|x| x.sym == sym && x.ts < s)
        .filter_map(|x| Some((x.ts, x.id, x.price?)))
        .max()
}

/// A session's carried price, as the operator keeps it: the latest price
/// before `s` in the key's live sessions, or the last price of its dropped
/// sessions when that is before `s`.
fn session_carry(live: &[Session], dropped: Carry, s: i64) -> Carry {
    let mut best = dropped.filter(|d| d.0 < s);
    for sess in live {
        for x in &sess.3 {
            if let Some(p) = x.price {
                if x.ts < s && best.is_none_or(|b| b < (x.ts, x.id, p)) {
                    best = Some((x.ts, x.id, p));
                }
            }
        }
    }
    best
}

/// PostgreSQL's percentile_cont over `xs`.
fn percentile(xs: &[i64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let lo = pos.floor();
    let frac = pos - lo;
    let a = v[lo as usize];
    if frac == 0.0 {
        return Some(a);
    }
    let b = v[(lo as usize + 1).min(v.len() - 1)];
    Some(a + (b - a) * frac)
}

/// The time-weighted average over `[s, e)`, computed as the operator
/// documents it (weights first).
fn twap(evs: &[&Ev], s: i64, e: i64, carry: Carry) -> Option<f64> {
    let mut pts: Vec<(i64, EntryId, i64)> = evs
        .iter()
        .filter_map(|x| Some((x.ts, x.id, x.price?)))
        .collect();
    pts.sort();
    let (start, mut t, mut price) = match (carry, pts.first()) {
        (Some(c), _) => (s, s, c.2 as f64),
        (None, Some(f)) => (f.0, f.0, f.2 as f64),
        (None, None) => return None,
    };
    let total = (e - start) as f64;
    let mut avg = 0.0;
    for p in &pts {
        avg += price * ((p.0 - t) as f64 / total);
        t = p.0;
        price = p.2 as f64;
    }
    avg += price * ((e - t) as f64 / total);
    Some(avg)
}

/// The aggregates of `evs` in window `[s, e)`, as the operator prints
/// them (NULL: absent).
fn aggregate(evs: &[&Ev], (s, e): (i64, i64), carry: Carry) -> Vec<(String, Option<String>)> {
    let ps: Vec<i64> = evs.iter().filter_map(|e| e.price).collect();
    let f = |x: f64| ferrite_pipeline::value::format_float(x);
    let with_price: Vec<&Ev> = evs.iter().copied().filter(|e| e.price.is_some()).collect();
    let first = with_price
        .iter()
        .min_by_key(|e| (e.ts, e.id))
        .and_then(|e| e.price);
    let last = with_price
        .iter()
        .max_by_key(|e| (e.ts, e.id))
        .and_then(|e| e.price);
    let (pv, v) = evs
        .iter()
        .filter_map(|e| Some((e.price? as f64, e.vol? as f64)))
        .fold((0.0, 0.0), |(a, b), (p, v)| (a + p * v, b + v));
    vec![
        ("n".into(), Some(evs.len().to_string())),
        ("np".into(), Some(ps.len().to_string())),
        (
            "s".into(),
            (!ps.is_empty()).then(|| ps.iter().sum::<i64>().to_string()),
        ),
        ("lo".into(), ps.iter().min().map(|x| x.to_string())),
        ("hi".into(), ps.iter().max().map(|x| x.to_string())),
        ("open".into(), first.map(|x| x.to_string())),
        ("close".into(), last.map(|x| x.to_string())),
        (
            "mean".into(),
            (!ps.is_empty()).then(|| f(ps.iter().sum::<i64>() as f64 / ps.len() as f64)),
        ),
        ("vwap".into(), (v != 0.0).then(|| f(pv / v))),
        ("d".into(), {
            let mut d = ps.clone();
            d.sort();
            d.dedup();
            Some(d.len().to_string())
        }),
        ("med".into(), percentile(&ps, 0.5).map(f)),
        (
            "p9".into(),
            percentile(&evs.iter().filter_map(|e| e.vol).collect::<Vec<_>>(), 0.9).map(f),
        ),
        ("tw".into(), twap(evs, s, e, carry).map(f)),
    ]
}

fn line(sym: &str, s: i64, e: i64, rev: u32, aggs: Vec<(String, Option<String>)>) -> String {
    let mut l = format!("sym={sym} window_start={s} window_end={e}");
    for (k, v) in aggs {
        if let Some(v) = v {
            l.push_str(&format!(" {k}={v}"));
        }
    }
    if rev > 0 {
        l.push_str(&format!(" _rev={rev}"));
    }
    l
}

fn record_line(r: &Record) -> String {
    r.fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Hop { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// A reference session: start, end, emissions so far, its events.
type Session = (i64, i64, u32, Vec<Ev>);

/// The reference: every accepted event kept; results computed from them.
struct Reference {
    kind: Kind,
    wm_delay: i64,
    lateness: i64,
    max_ts: Option<i64>,
    accepted: Vec<Ev>,
    out: Vec<String>,
    late: Vec<EntryId>,
    /// TUMBLE/HOP: revisions per (sym, start). SESSION: sessions per key as
    /// (start, end, emissions, events).
    revs: HashMap<(String, i64), u32>,
    sessions: BTreeMap<String, Vec<Session>>,
    /// EMIT UPDATES EVERY (None: EMIT FINAL).
    every: Option<i64>,
    /// IDLE (0: off), the watermark it reached, the last batch's time.
    idle: i64,
    idle_wm: Option<i64>,
    last_arrival: Option<i64>,
    last_flush: Option<i64>,
    /// The last line written per (sym, window start), without `_rev`.
    last_line: HashMap<(String, i64), String>,
    /// SESSION: the last price of each key's dropped sessions.
    dropped: HashMap<String, Carry>,
}

impl Reference {
    fn new(kind: Kind, wm_delay: i64, lateness: i64, every: Option<i64>, idle: i64) -> Reference {
        Reference {
            kind,
            wm_delay,
            lateness,
            max_ts: None,
            accepted: vec![],
            out: vec![],
            late: vec![],
            revs: HashMap::new(),
            sessions: BTreeMap::new(),
            every,
            idle,
            idle_wm: None,
            last_arrival: None,
            last_flush: None,
            last_line: HashMap::new(),
            dropped: HashMap::new(),
        }
    }

    fn wm(&self) -> i64 {
        match self.max_ts {
            None => i64::MIN,
            Some(m) => (m - self.wm_delay).max(self.idle_wm.unwrap_or(i64::MIN)),
        }
    }

    /// A window's result when the watermark passes its end: under EMIT
    /// UPDATES only when it differs from the last line written for it
    /// (count(*) is among the aggregates, so any new event changes it).
    fn final_line(&mut self, sym: &str, s: i64, l: String) {
        let same = self
            .last_line
            .get(&(sym.to_string(), s))
            .is_some_and(|x| same_entries(x, &l));
        if self.every.is_none() || !same {
            self.out.push(l.clone());
        }
        self.last_line.insert((sym.to_string(), s), l);
    }

    /// One batch (or a tick, with no events) at wall-clock time `now`.
    fn step(&mut self, now: i64, evs: &[Ev]) {
        if let (true, Some(m), Some(last)) = (self.idle > 0, self.max_ts, self.last_arrival) {
            if now - last >= self.idle {
                let w = m - self.wm_delay + (now - last);
                let old = self.wm();
                if w > old {
                    self.idle_wm = Some(w);
                    self.fire(old, w);
                }
            }
        }
        for e in evs {
            self.push(e.clone());
        }
        if !evs.is_empty() {
            self.last_arrival = Some(now);
        }
        let Some(every) = self.every else {
            return;
        };
        if self.last_flush.is_some_and(|l| now < l + every) {
            return;
        }
        let wm = self.wm();
        let mut open: Vec<(String, i64, String)> = vec![];
        match self.kind {
            Kind::Hop { .. } => {
                let mut ws = std::collections::BTreeSet::new();
                for a in &self.accepted {
                    for (s, e) in self.windows_of(a.ts) {
                        if e > wm {
                            ws.insert((a.sym.clone(), s, e));
                        }
                    }
                }
                for (sym, s, e) in ws {
                    if let Some(r) = self.hop_result(&sym, s, e) {
                        open.push((sym.clone(), s, line(&sym, s, e, 0, r)));
                    }
                }
            }
            Kind::Session { .. } => {
                for (sym, list) in &self.sessions {
                    for sess in list.iter().filter(|x| x.1 > wm) {
                        let d = self.dropped.get(sym).copied().flatten();
                        let carry = session_carry(list, d, sess.0);
                        let r =
                            aggregate(&sess.3.iter().collect::<Vec<_>>(), (sess.0, sess.1), carry);
                        open.push((sym.clone(), sess.0, line(sym, sess.0, sess.1, sess.2, r)));
                    }
                }
            }
        }
        let mut wrote = false;
        for (sym, s, l) in open {
            if !self
                .last_line
                .get(&(sym.clone(), s))
                .is_some_and(|x| same_entries(x, &l))
            {
                self.out.push(l.clone());
                self.last_line.insert((sym, s), l);
                wrote = true;
            }
        }
        if wrote {
            self.last_flush = Some(now);
        }
    }

    fn windows_of(&self, ts: i64) -> Vec<(i64, i64)> {
        let Kind::Hop { size, slide } = self.kind else {
            return vec![];
        };
        let mut v = vec![];
        let mut s = ts.div_euclid(slide) * slide;
        while s + size > ts {
            v.push((s, s + size));
            s -= slide;
        }
        v
    }

    fn hop_result(&self, sym: &str, s: i64, e: i64) -> Option<Vec<(String, Option<String>)>> {
        let evs: Vec<&Ev> = self
            .accepted
            .iter()
            .filter(|x| x.sym == sym && x.ts >= s && x.ts < e)
            .collect();
        (!evs.is_empty()).then(|| aggregate(&evs, (s, e), self.carry(sym, s)))
    }

    fn carry(&self, sym: &str, s: i64) -> Carry {
        carry_of(&self.accepted, sym, s)
    }

    fn push(&mut self, ev: Ev) {
        let wm = self.wm();
        match self.kind {
            Kind::Hop { .. } => {
                let ws = self.windows_of(ev.ts);
                let e_max = ws.iter().map(|w| w.1).max().unwrap_or(i64::MIN);
                if wm != i64::MIN && e_max + self.lateness <= wm {
                    self.late.push(ev.id);
                    return;
                }
                self.accepted.push(ev.clone());
                let mut ws = ws;
                ws.sort();
                for (s, e) in ws {
                    if wm != i64::MIN && e <= wm && e + self.lateness > wm {
                        let rev = self.revs.entry((ev.sym.clone(), s)).or_insert(0);
                        *rev += 1;
                        let rev = *rev;
                        let r = self.hop_result(&ev.sym, s, e).unwrap_or_default();
                        self.out.push(line(&ev.sym, s, e, rev, r));
                    }
                }
            }
            Kind::Session { gap } => {
                let list = self.sessions.entry(ev.sym.clone()).or_default();
                let (mut s, mut e) = (ev.ts, ev.ts + gap);
                let mut rev = 0;
                let mut evs = vec![ev.clone()];
                let mut keep = vec![];
                let mut merged = vec![];
                for sess in list.drain(..) {
                    if sess.0 <= ev.ts + gap && sess.1 >= ev.ts {
                        merged.push(sess);
                    } else {
                        keep.push(sess);
                    }
                }
                for m in &merged {
                    s = s.min(m.0);
                    e = e.max(m.1);
                }
                if wm != i64::MIN && e + self.lateness <= wm {
                    keep.extend(merged);
                    keep.sort_by_key(|x| x.0);
                    *list = keep;
                    self.late.push(ev.id);
                    return;
                }
                for m in merged {
                    rev = rev.max(m.2);
                    evs.extend(m.3);
                }
                if wm != i64::MIN && e <= wm {
                    let d = self.dropped.get(&ev.sym).copied().flatten();
                    let carry = session_carry(&keep, d, s);
                    let r = aggregate(&evs.iter().collect::<Vec<_>>(), (s, e), carry);
                    self.out.push(line(&ev.sym, s, e, rev, r));
                    rev += 1;
                }
                keep.push((s, e, rev, evs));
                keep.sort_by_key(|x| x.0);
                *list = keep;
                self.accepted.push(ev.clone());
            }
        }
        // The watermark moves: windows whose end it passed fire.
        if self.max_ts.is_none_or(|m| ev.ts > m) {
            let old = wm;
            self.max_ts = Some(ev.ts);
            let new = self.wm();
            self.fire(old, new);
        }
    }

    fn fire(&mut self, old: i64, new: i64) {
        {
            match self.kind {
                Kind::Hop { .. } => {
                    let mut fired = std::collections::BTreeSet::new();
                    for a in &self.accepted {
                        for (s, e) in self.windows_of(a.ts) {
                            if e > old && e <= new {
                                fired.insert((a.sym.clone(), s, e));
                            }
                        }
                    }
                    for (sym, s, e) in fired {
                        if let Some(r) = self.hop_result(&sym, s, e) {
                            self.final_line(&sym, s, line(&sym, s, e, 0, r));
                        }
                    }
                }
                Kind::Session { .. } => {
                    let mut carries = HashMap::new();
                    for (sym, list) in &self.sessions {
                        for sess in list {
                            let d = self.dropped.get(sym).copied().flatten();
                            carries.insert((sym.clone(), sess.0), session_carry(list, d, sess.0));
                        }
                    }
                    let mut lines = vec![];
                    for (sym, list) in &mut self.sessions {
                        for sess in list.iter_mut() {
                            if sess.1 > old && sess.1 <= new {
                                let carry = carries.get(&(sym.clone(), sess.0)).copied().flatten();
                                let r = aggregate(
                                    &sess.3.iter().collect::<Vec<_>>(),
                                    (sess.0, sess.1),
                                    carry,
                                );
                                lines.push((
                                    sym.clone(),
                                    sess.0,
                                    line(sym, sess.0, sess.1, sess.2, r),
                                ));
                                sess.2 += 1;
                            }
                        }
                    }
                    for (sym, s, l) in lines {
                        self.final_line(&sym, s, l);
                    }
                }
            }
            // Drop what is beyond lateness (only sessions need it: the hop
            // reference recomputes from accepted events, whose windows
            // beyond lateness are never asked for again).
            if let Kind::Session { .. } = self.kind {
                let l = self.lateness;
                for (sym, list) in self.sessions.iter_mut() {
                    for sess in list.iter().filter(|s| s.1 + l <= new) {
                        for x in &sess.3 {
                            if let Some(p) = x.price {
                                let d = self.dropped.entry(sym.clone()).or_default();
                                if d.is_none_or(|b| b < (x.ts, x.id, p)) {
                                    *d = Some((x.ts, x.id, p));
                                }
                            }
                        }
                    }
                    list.retain(|s| s.1 + l > new);
                }
            }
        }
    }
}

fn run_case(seed: u64, kind: Kind, wm_delay: i64, lateness: i64, late_stream: bool) {
    run_case_with(seed, kind, wm_delay, lateness, late_stream, None, 0);
}

/// As [`run_case`], under EMIT UPDATES EVERY `every` (None: FINAL) and
/// IDLE `idle`, with a wall clock that moves between batches and ticks
/// between them.
fn run_case_with(
    seed: u64,
    kind: Kind,
    wm_delay: i64,
    lateness: i64,
    late_stream: bool,
    every: Option<u64>,
    idle: u64,
) {
    let evs = gen(seed, 600);
    let window = match kind {
        Kind::Hop { size, slide } if size == slide => format!("TUMBLE(ts, {size})"),
        Kind::Hop { size, slide } => format!("HOP(ts, {slide}, {size})"),
        Kind::Session { gap } => format!("SESSION(ts, {gap})"),
    };
    let sql = format!(
        "INSERT INTO out SELECT sym, window_start, window_end, {AGGS} FROM trades GROUP BY sym, {window}"
    );
    let opts = WindowOptions {
        watermark_ms: wm_delay as u64,
        lateness_ms: lateness as u64,
        late_stream: late_stream.then(|| "late".to_string()),
        emit: match every {
            Some(every_ms) => Emit::Updates { every_ms },
            None => Emit::Final,
        },
        idle_ms: idle,
        ..Default::default()
    };
    let mut plan = Plan::compile_with(&sql, &opts).expect("compiles");
    // Built only from the epochs' state changes, as recovery does.
    let mut replica = Plan::compile_with(&sql, &opts).expect("compiles");
    let mut reference = Reference::new(
        kind,
        wm_delay,
        lateness,
        every.map(|e| e as i64),
        idle as i64,
    );
    let rows: Vec<Vec<(String, String)>> = evs
        .iter()
        .map(|e| {
            let mut f = vec![
                ("sym".to_string(), e.sym.clone()),
                ("ts".into(), e.ts.to_string()),
            ];
            if let Some(p) = e.price {
                f.push(("price".into(), p.to_string()));
            }
            if let Some(v) = e.vol {
                f.push(("vol".into(), v.to_string()));
            }
            f
        })
        .collect();
    let mut rng = Rng(seed + 17);
    let mut got = vec![];
    let mut late = vec![];
    let mut i = 0;
    let mut now = 1_000_000i64;
    let clocked = every.is_some() || idle > 0;
    while i < evs.len() {
        let tick = clocked && rng.below(4) == 0;
        now += if tick {
            rng.below(2 * idle.max(100)) as i64
        } else if clocked {
            rng.below(40) as i64
        } else {
            0
        };
        let n = if tick {
            0
        } else {
            (1 + rng.below(40) as usize).min(evs.len() - i)
        };
        let entries: Vec<Entry<'_>> = (i..i + n)
            .map(|j| Entry::new(evs[j].id, &rows[j]))
            .collect();
        reference.step(now, &evs[i..i + n]);
        plan.set_clock(now);
        let before = plan.snapshot();
        let mut out = vec![];
        plan.begin_epoch();
        let run = |plan: &mut Plan, out: &mut Vec<Record>| {
            if tick {
                plan.tick(out);
            } else {
                let stats = plan.process_batch(&entries, out);
                assert_eq!(stats.failed, 0, "{:?}", stats.first_error);
            }
        };
        run(&mut plan, &mut out);
        // A checkpoint during the epoch holds the state before it.
        assert!(
            plan.snapshot() == before,
            "a checkpoint during an epoch must hold the state before it (batch at {i})"
        );
        if rng.below(5) == 0 {
            // The epoch does not commit: taken back, evaluated again.
            plan.rollback_epoch();
            let _ = plan.take_late();
            assert_eq!(plan.snapshot(), before);
            out.clear();
            plan.begin_epoch();
            run(&mut plan, &mut out);
        }
        let delta = plan.epoch_delta().expect("in an epoch");
        plan.end_epoch();
        replica.apply_delta(&delta).expect("applies");
        got.extend(out.iter().map(record_line));
        late.extend(plan.take_late());
        i += n;
        if rng.below(6) == 0 {
            // Go on with the state rebuilt from the changes.
            std::mem::swap(&mut plan, &mut replica);
        }
        // Now and then the plan goes through its checkpoint form.
        if rng.below(4) == 0 {
            let snap = plan.snapshot();
            plan = Plan::compile_with(&sql, &opts).expect("compiles");
            plan.restore(&snap).expect("restores");
            assert_eq!(plan.snapshot(), snap);
        }
    }
    let mut want = reference.out.clone();
    want.sort();
    got.sort();
    assert!(want.len() > 20, "too few results to mean anything");
    if got != want {
        let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
        let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
        panic!(
            "seed {seed} {kind:?}: {} results, {} expected\nunexpected: {extra:#?}\nmissing: {missing:#?}",
            got.len(),
            want.len()
        );
    }
    let revs = got.iter().filter(|l| l.contains("_rev=")).count();
    if lateness > 0 {
        assert!(revs > 0, "no revision exercised");
    }
    assert!(!reference.late.is_empty(), "no late entry exercised");
    let stats = plan.window_stats().expect("windowed");
    if late_stream {
        let ids: Vec<EntryId> = late.iter().map(|r| r.source_id).collect();
        assert_eq!(ids, reference.late, "late entries, seed {seed}");
        for r in &late {
            assert!(r.get(b"_reason").is_some());
            assert!(r.get(b"sym").is_some() && r.get(b"ts").is_some());
        }
        assert_eq!(stats.late_written, reference.late.len() as u64);
    } else {
        assert!(late.is_empty());
        assert_eq!(stats.late_dropped, reference.late.len() as u64);
    }
}

#[test]
fn tumble_matches_reference() {
    for seed in 1..6 {
        run_case(
            seed,
            Kind::Hop {
                size: 100,
                slide: 100,
            },
            50,
            300,
            seed % 2 == 0,
        );
        run_case(
            seed,
            Kind::Hop {
                size: 100,
                slide: 100,
            },
            0,
            0,
            true,
        );
    }
}

#[test]
fn hop_matches_reference() {
    for seed in 1..6 {
        run_case(
            seed,
            Kind::Hop {
                size: 150,
                slide: 50,
            },
            50,
            300,
            seed % 2 == 1,
        );
        run_case(
            seed,
            Kind::Hop {
                size: 100,
                slide: 40,
            },
            20,
            100,
            true,
        );
    }
}

#[test]
fn session_matches_reference() {
    for seed in 1..6 {
        run_case(seed, Kind::Session { gap: 25 }, 50, 300, seed % 2 == 0);
        run_case(seed, Kind::Session { gap: 60 }, 0, 0, true);
    }
}

#[test]
fn emit_updates_matches_reference() {
    for seed in 1..5 {
        let tumble = Kind::Hop {
            size: 100,
            slide: 100,
        };
        let hop = Kind::Hop {
            size: 150,
            slide: 50,
        };
        run_case_with(seed, tumble, 50, 300, true, Some(0), 0);
        run_case_with(seed, tumble, 20, 0, false, Some(30), 0);
        run_case_with(seed, hop, 50, 300, true, Some(25), 0);
        run_case_with(seed, Kind::Session { gap: 25 }, 50, 300, true, Some(30), 0);
        run_case_with(seed, Kind::Session { gap: 60 }, 0, 0, true, Some(0), 0);
    }
}

#[test]
fn idle_matches_reference() {
    for seed in 1..5 {
        let tumble = Kind::Hop {
            size: 100,
            slide: 100,
        };
        let hop = Kind::Hop {
            size: 100,
            slide: 40,
        };
        run_case_with(seed, tumble, 50, 300, true, None, 100);
        run_case_with(seed, hop, 20, 100, seed % 2 == 0, None, 60);
        run_case_with(seed, Kind::Session { gap: 25 }, 50, 300, true, None, 80);
        run_case_with(seed, tumble, 50, 200, true, Some(20), 100);
        run_case_with(seed, Kind::Session { gap: 40 }, 10, 100, true, Some(10), 50);
    }
}

/// COUNT_WINDOW(n, slide) against a reference that keeps each key's
/// entries in arrival order: random keys, event times out of order,
/// random batches, epochs taken back, state rebuilt from deltas and
/// checkpoints.
fn run_count_case(seed: u64, n: usize, slide: usize) {
    let evs = gen(seed, 500);
    let sql = format!(
        "INSERT INTO out SELECT sym, window_start, window_end, {AGGS} FROM trades GROUP BY sym, COUNT_WINDOW({n}, {slide})"
    );
    let opts = WindowOptions::default();
    let mut plan = Plan::compile_with(&sql, &opts).expect("compiles");
    let mut replica = Plan::compile_with(&sql, &opts).expect("compiles");
    // The reference: per key its entries, how many arrived, the first
    // still held, and the last price of those dropped.
    let mut keys: BTreeMap<String, (Vec<Ev>, usize, Carry)> = BTreeMap::new();
    let mut want = vec![];
    for ev in &evs {
        let (all, first, dropped) = keys.entry(ev.sym.clone()).or_default();
        all.push(ev.clone());
        let c = all.len();
        if c >= n && (c - n).is_multiple_of(slide) {
            let w: Vec<&Ev> = all[c - n..c].iter().collect();
            let ws = w.iter().map(|e| e.ts).min().unwrap_or(0);
            let we = w.iter().map(|e| e.ts).max().unwrap_or(0) + 1;
            let mut carry = dropped.filter(|d| d.0 < ws);
            for x in &all[*first..] {
                if let Some(p) = x.price {
                    if x.ts < ws && carry.is_none_or(|b| b < (x.ts, x.id, p)) {
                        carry = Some((x.ts, x.id, p));
                    }
                }
            }
            want.push(line(&ev.sym, ws, we, 0, aggregate(&w, (ws, we), carry)));
            let keep = c - n + slide;
            for x in &all[*first..keep] {
                if let Some(p) = x.price {
                    if dropped.is_none_or(|b| b < (x.ts, x.id, p)) {
                        *dropped = Some((x.ts, x.id, p));
                    }
                }
            }
            *first = keep;
        }
    }
    let rows: Vec<Vec<(String, String)>> = evs
        .iter()
        .map(|e| {
            let mut f = vec![
                ("sym".to_string(), e.sym.clone()),
                ("ts".into(), e.ts.to_string()),
            ];
            if let Some(p) = e.price {
                f.push(("price".into(), p.to_string()));
            }
            if let Some(v) = e.vol {
                f.push(("vol".into(), v.to_string()));
            }
            f
        })
        .collect();
    // COUNT_WINDOW's times are the entry IDs' milliseconds: each entry gets
    // its event time as its ID's ms (its order among equal times, as twap
    // and the carried price read it, stays the arrival order).
    let ids: Vec<EntryId> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| EntryId::new(e.ts as u64, i as u64))
        .collect();
    let mut rng = Rng(seed + 29);
    let mut got = vec![];
    let mut i = 0;
    while i < evs.len() {
        let k = (1 + rng.below(30) as usize).min(evs.len() - i);
        let entries: Vec<Entry<'_>> = (i..i + k).map(|j| Entry::new(ids[j], &rows[j])).collect();
        let before = plan.snapshot();
        let mut out = vec![];
        plan.begin_epoch();
        plan.process_batch(&entries, &mut out);
        assert!(plan.snapshot() == before);
        if rng.below(5) == 0 {
            plan.rollback_epoch();
            assert_eq!(plan.snapshot(), before);
            out.clear();
            plan.begin_epoch();
            plan.process_batch(&entries, &mut out);
        }
        let delta = plan.epoch_delta().expect("in an epoch");
        plan.end_epoch();
        replica.apply_delta(&delta).expect("applies");
        got.extend(out.iter().map(record_line));
        i += k;
        if rng.below(6) == 0 {
            std::mem::swap(&mut plan, &mut replica);
        }
        if rng.below(4) == 0 {
            let snap = plan.snapshot();
            plan = Plan::compile_with(&sql, &opts).expect("compiles");
            plan.restore(&snap).expect("restores");
            assert_eq!(plan.snapshot(), snap);
        }
    }
    assert!(want.len() > 20, "too few results");
    want.sort();
    got.sort();
    assert_eq!(got, want, "seed {seed} COUNT_WINDOW({n}, {slide})");
}

#[test]
fn count_windows_match_reference() {
    for seed in 1..5 {
        run_count_case(seed, 5, 5);
        run_count_case(seed, 6, 2);
        run_count_case(seed, 4, 3);
        run_count_case(seed, 1, 1);
    }
}
