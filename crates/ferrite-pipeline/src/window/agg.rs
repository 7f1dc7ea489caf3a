//! Mergeable aggregates over flat state: each aggregate owns a fixed number
//! of `u64` words in its window's (or pane's) row, updated in place per
//! event and merged pane by pane (HOP) or session by session.
//!
//! `count(DISTINCT x)`, `percentile_cont`/`median` and `twap` need more
//! than fixed words: their state is an [`Ext`] kept beside the row (see
//! [`Agg::ext_update`]), merged the same way and counted in state bytes.
//!
//! NULL handling follows PostgreSQL: `count(x)` skips NULLs, the others
//! ignore NULL inputs and give NULL when no non-NULL input was seen.
//! Numeric aggregates read their argument as a number (an unparsable
//! field is NULL), so `min/max/first/last` give numbers.

use crate::value::{cmp_num, Num, Value};
use std::cmp::Ordering;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// `count(*)`: rows.
    CountStar,
    /// `count(x)`: rows where `x` is not NULL.
    Count,
    /// `sum(x)`: an integer while every input is one and the sum fits, else a double.
    Sum,
    /// `avg(x)`: a double.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `first(x)`: the value of the earliest row by event time (ties: the
    /// smaller entry ID), NULLs skipped.
    First,
    /// `last(x)`: the latest row by event time (ties: the larger entry ID).
    Last,
    /// `vwap(price, volume)`: `sum(price*volume) / sum(volume)`; NULL when
    /// the volume sums to zero.
    Vwap,
    /// `stddev_samp(x)` (`stddev`).
    StddevSamp,
    /// `stddev_pop(x)`.
    StddevPop,
    /// `var_samp(x)` (`variance`).
    VarSamp,
    /// `var_pop(x)`.
    VarPop,
    /// `count(DISTINCT x)`: distinct non-NULL values, compared as their
    /// bytes (a field has no type: `1` and `1.0` are two values). Exact:
    /// every distinct value is kept (and counted in state bytes).
    CountDistinct,
    /// `percentile_cont(p) WITHIN GROUP (ORDER BY x)` (and `median(x)` =
    /// p 0.5; also spelled `percentile(x, p)`): PostgreSQL's linear
    /// interpolation between the values at ranks `floor` and `ceil` of
    /// `p * (n - 1)`. Exact up to [`EXACT_MAX`] values per window; beyond,
    /// a log-bucket sketch (DDSketch) whose answer is within
    /// [`SKETCH_ALPHA`] relative error of the exact one when the two
    /// interpolated values have the same sign. NULL, NaN and infinities are
    /// skipped.
    Percentile,
    /// `twap(price)`: the time-weighted average price over `[window_start,
    /// window_end)`: each price holds from its event time until the next
    /// event's (equal times: the later entry ID holds); the last price holds
    /// until `window_end`. When the key had a price before the window (the
    /// latest one, from earlier events still or no longer in a window), it
    /// holds from `window_start` to the first event; without one the
    /// average starts at the first event. One price gives that price; no
    /// price (and none carried in) gives NULL. NULL prices are skipped.
    Twap,
}

/// Values kept exactly per window by `percentile_cont` before it switches
/// to the sketch.
pub const EXACT_MAX: usize = 1024;
/// The sketch's relative accuracy.
pub const SKETCH_ALPHA: f64 = 0.01;
/// Buckets per sign before the sketch collapses its smallest-magnitude
/// buckets into one: the guarantee holds for values within a factor
/// `gamma^MAX_BUCKETS` (about 6e17) of the largest magnitude seen.
pub const MAX_BUCKETS: usize = 2048;

impl AggKind {
    /// The aggregate named `name` (lower case) taking `nargs` arguments.
    pub fn by_name(name: &str, star: bool) -> Option<AggKind> {
        Some(match name {
            "count" if star => AggKind::CountStar,
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "avg" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "first" | "first_value" => AggKind::First,
            "last" | "last_value" => AggKind::Last,
            "vwap" => AggKind::Vwap,
            "stddev" | "stddev_samp" => AggKind::StddevSamp,
            "stddev_pop" => AggKind::StddevPop,
            "variance" | "var_samp" => AggKind::VarSamp,
            "var_pop" => AggKind::VarPop,
            "median" | "percentile_cont" | "percentile" => AggKind::Percentile,
            "twap" => AggKind::Twap,
            _ => return None,
        })
    }

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            AggKind::CountStar | AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Avg => "avg",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::First => "first",
            AggKind::Last => "last",
            AggKind::Vwap => "vwap",
            AggKind::StddevSamp => "stddev_samp",
            AggKind::StddevPop => "stddev_pop",
            AggKind::VarSamp => "var_samp",
            AggKind::VarPop => "var_pop",
            AggKind::CountDistinct => "count",
            AggKind::Percentile => "percentile_cont",
            AggKind::Twap => "twap",
        }
    }

    /// How many arguments it takes.
    pub fn arity(self) -> usize {
        match self {
            AggKind::CountStar => 0,
            AggKind::Vwap => 2,
            _ => 1,
        }
    }

    /// Words of state.
    pub fn width(self) -> usize {
        match self {
            AggKind::CountStar | AggKind::Count => 1,
            AggKind::Sum | AggKind::Avg | AggKind::Min | AggKind::Max | AggKind::Vwap => 2,
            AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop => 3,
            AggKind::First | AggKind::Last => 5,
            AggKind::CountDistinct | AggKind::Percentile | AggKind::Twap => 0,
        }
    }

    /// Whether its state is an [`Ext`] beside the row.
    pub fn has_ext(self) -> bool {
        matches!(
            self,
            AggKind::CountDistinct | AggKind::Percentile | AggKind::Twap
        )
    }
}

/// One price of `twap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Where the event sits.
    pub at: Order,
    /// Its price.
    pub price: f64,
}

/// Variable-size state of one aggregate in one row.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Ext {
    /// Nothing yet (also a key's unused carry slot).
    #[default]
    None,
    /// `count(DISTINCT x)`: the values.
    Distinct(std::collections::BTreeSet<Box<[u8]>>),
    /// `percentile_cont`: values, exactly or sketched.
    Quant(Quant),
    /// `twap`: the prices in event-time order.
    Points(Vec<Point>),
}

/// Values for a percentile: exact (`vals`) until [`EXACT_MAX`], then a
/// DDSketch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quant {
    vals: Vec<f64>,
    sketch: Option<Sketch>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Sketch {
    zero: u64,
    pos: std::collections::BTreeMap<i32, u64>,
    neg: std::collections::BTreeMap<i32, u64>,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_ALPHA) / (1.0 - SKETCH_ALPHA)
}

impl Sketch {
    fn add(&mut self, x: f64, n: u64) {
        let m = x.abs();
        if m < f64::MIN_POSITIVE {
            self.zero += n;
            return;
        }
        let i = (m.ln() / gamma().ln()).ceil() as i32;
        let side = if x > 0.0 {
            &mut self.pos
        } else {
            &mut self.neg
        };
        *side.entry(i).or_insert(0) += n;
        if side.len() > MAX_BUCKETS {
            // Collapse the two smallest magnitudes.
            if let (Some((_, a)), Some((&b, _))) = (side.pop_first(), side.first_key_value()) {
                *side.entry(b).or_insert(0) += a;
            }
        }
    }

    fn merge(&mut self, o: &Sketch) {
        self.zero += o.zero;
        for (&i, &n) in &o.pos {
            self.add_bucket(true, i, n);
        }
        for (&i, &n) in &o.neg {
            self.add_bucket(false, i, n);
        }
    }

    fn add_bucket(&mut self, pos: bool, i: i32, n: u64) {
        let side = if pos { &mut self.pos } else { &mut self.neg };
        *side.entry(i).or_insert(0) += n;
        while side.len() > MAX_BUCKETS {
            if let (Some((_, a)), Some((&b, _))) = (side.pop_first(), side.first_key_value()) {
                *side.entry(b).or_insert(0) += a;
            }
        }
    }

    fn count(&self) -> u64 {
        self.zero + self.pos.values().sum::<u64>() + self.neg.values().sum::<u64>()
    }

    /// The value at 0-based rank `r` (ascending).
    fn at_rank(&self, mut r: u64) -> f64 {
        let g = gamma();
        let value = |i: i32| 2.0 * g.powi(i) / (g + 1.0);
        for (&i, &n) in self.neg.iter().rev() {
            if r < n {
                return -value(i);
            }
            r -= n;
        }
        if r < self.zero {
            return 0.0;
        }
        r -= self.zero;
        for (&i, &n) in &self.pos {
            if r < n {
                return value(i);
            }
            r -= n;
        }
        self.pos.keys().next_back().map_or(0.0, |&i| value(i))
    }
}

impl Quant {
    fn add(&mut self, x: f64) {
        match &mut self.sketch {
            Some(s) => s.add(x, 1),
            None => {
                self.vals.push(x);
                if self.vals.len() > EXACT_MAX {
                    self.switch_to_sketch();
                }
            }
        }
    }

    fn switch_to_sketch(&mut self) {
        let mut s = self.sketch.take().unwrap_or_default();
        for x in self.vals.drain(..) {
            s.add(x, 1);
        }
        self.vals = Vec::new();
        self.sketch = Some(s);
    }

    fn merge(&mut self, o: &Quant) {
        match (&mut self.sketch, &o.sketch) {
            (None, None) if self.vals.len() + o.vals.len() <= EXACT_MAX => {
                self.vals.extend_from_slice(&o.vals);
            }
            _ => {
                self.switch_to_sketch();
                if let Some(s) = &mut self.sketch {
                    for &x in &o.vals {
                        s.add(x, 1);
                    }
                    if let Some(os) = &o.sketch {
                        s.merge(os);
                    }
                }
            }
        }
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        let (n, lo_hi): (u64, Box<dyn Fn(u64) -> f64 + '_>) = match &self.sketch {
            None => {
                if self.vals.is_empty() {
                    return None;
                }
                let mut v = self.vals.clone();
                v.sort_by(f64::total_cmp);
                (v.len() as u64, Box::new(move |r| v[r as usize]))
            }
            Some(s) => {
                let n = s.count();
                if n == 0 {
                    return None;
                }
                (n, Box::new(move |r| s.at_rank(r)))
            }
        };
        let pos = p * (n - 1) as f64;
        let lo = pos.floor();
        let frac = pos - lo;
        let a = lo_hi(lo as u64);
        if frac == 0.0 {
            return Some(a);
        }
        let b = lo_hi((lo as u64 + 1).min(n - 1));
        Some(a + (b - a) * frac)
    }

    fn bytes(&self) -> u64 {
        self.vals.len() as u64 * 8
            + self
                .sketch
                .as_ref()
                .map_or(0, |s| 48 + 16 * (s.pos.len() + s.neg.len()) as u64)
    }
}

impl Ext {
    /// Approximate heap bytes.
    pub fn bytes(&self) -> u64 {
        match self {
            Ext::None => 0,
            Ext::Distinct(s) => s.iter().map(|v| v.len() as u64 + 32).sum(),
            Ext::Quant(q) => q.bytes(),
            Ext::Points(p) => p.len() as u64 * 32,
        }
    }

    /// Its last point (twap), for the key's carried price.
    pub fn last_point(&self) -> Option<Point> {
        match self {
            Ext::Points(p) => p.last().copied(),
            _ => None,
        }
    }

    /// Appends the encoding: `u8 tag` (0 none, 1 distinct, 2 exact values,
    /// 3 sketch, 4 points), then `u32 n` and the items (distinct: `u32
    /// len, bytes`; values: f64; sketch: `u64 zero`, then positive and
    /// negative buckets each `u32 n`, `n × (i32 index, u64 count)`; points:
    /// `i64 ts, u64 ms, u64 seq, f64 price`). Little-endian.
    pub fn encode(&self, v: &mut Vec<u8>) {
        let len = |v: &mut Vec<u8>, n: usize| v.extend_from_slice(&(n as u32).to_le_bytes());
        match self {
            Ext::None => v.push(0),
            Ext::Distinct(s) => {
                v.push(1);
                len(v, s.len());
                for x in s {
                    len(v, x.len());
                    v.extend_from_slice(x);
                }
            }
            Ext::Quant(q) => match &q.sketch {
                None => {
                    v.push(2);
                    len(v, q.vals.len());
                    for x in &q.vals {
                        v.extend_from_slice(&x.to_bits().to_le_bytes());
                    }
                }
                Some(s) => {
                    v.push(3);
                    v.extend_from_slice(&s.zero.to_le_bytes());
                    for side in [&s.pos, &s.neg] {
                        len(v, side.len());
                        for (&i, &n) in side {
                            v.extend_from_slice(&i.to_le_bytes());
                            v.extend_from_slice(&n.to_le_bytes());
                        }
                    }
                }
            },
            Ext::Points(p) => {
                v.push(4);
                len(v, p.len());
                for pt in p {
                    v.extend_from_slice(&pt.at.ts.to_le_bytes());
                    v.extend_from_slice(&pt.at.ms.to_le_bytes());
                    v.extend_from_slice(&pt.at.seq.to_le_bytes());
                    v.extend_from_slice(&pt.price.to_bits().to_le_bytes());
                }
            }
        }
    }

    /// Reads [`Ext::encode`]'s bytes for an aggregate of `kind`; every
    /// count is checked against what is left.
    pub fn decode(
        r: &mut crate::engine::def::Cursor<'_>,
        kind: Option<AggKind>,
    ) -> Result<Ext, String> {
        let tag = r.u8()?;
        let want = match tag {
            0 => None,
            1 => Some(AggKind::CountDistinct),
            2 | 3 => Some(AggKind::Percentile),
            4 => Some(AggKind::Twap),
            t => return Err(format!("bad aggregate state tag {t}")),
        };
        if want.is_some() && want != kind {
            return Err("aggregate state of another kind".into());
        }
        let count = |r: &mut crate::engine::def::Cursor<'_>, each: usize| {
            let n = r.u32()? as usize;
            if n.saturating_mul(each) > r.remaining() {
                return Err("truncated aggregate state".to_string());
            }
            Ok(n)
        };
        Ok(match tag {
            0 => Ext::None,
            1 => {
                let n = count(r, 4)?;
                let mut s = std::collections::BTreeSet::new();
                for _ in 0..n {
                    s.insert(Box::<[u8]>::from(r.bytes()?));
                }
                Ext::Distinct(s)
            }
            2 => {
                let n = count(r, 8)?;
                if n > EXACT_MAX {
                    return Err("too many exact percentile values".into());
                }
                let mut vals = Vec::with_capacity(n);
                for _ in 0..n {
                    vals.push(f64::from_bits(r.u64()?));
                }
                Ext::Quant(Quant { vals, sketch: None })
            }
            3 => {
                let mut s = Sketch {
                    zero: r.u64()?,
                    ..Sketch::default()
                };
                for pos in [true, false] {
                    let n = count(r, 12)?;
                    if n > MAX_BUCKETS {
                        return Err("too many sketch buckets".into());
                    }
                    for _ in 0..n {
                        let i = r.u32()? as i32;
                        let c = r.u64()?;
                        let side = if pos { &mut s.pos } else { &mut s.neg };
                        *side.entry(i).or_insert(0) += c;
                    }
                }
                Ext::Quant(Quant {
                    vals: Vec::new(),
                    sketch: Some(s),
                })
            }
            _ => {
                let n = count(r, 32)?;
                let mut p = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = Order {
                        ts: r.u64()? as i64,
                        ms: r.u64()?,
                        seq: r.u64()?,
                    };
                    p.push(Point {
                        at,
                        price: f64::from_bits(r.u64()?),
                    });
                }
                p.sort_by_key(|a| a.at);
                Ext::Points(p)
            }
        })
    }
}

/// Where an event sits in event-time order, for first/last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    /// Event time.
    pub ts: i64,
    /// Entry ID.
    pub ms: u64,
    /// Entry ID sequence.
    pub seq: u64,
}

const FLOAT: u64 = 1 << 63;
const TAG_NONE: u64 = 0;
const TAG_INT: u64 = 1;
const TAG_FLOAT: u64 = 2;

fn f(w: u64) -> f64 {
    f64::from_bits(w)
}

fn fw(x: f64) -> u64 {
    x.to_bits()
}

fn num_words(n: Num) -> (u64, u64) {
    match n {
        Num::Null => (TAG_NONE, 0),
        Num::Int(i) => (TAG_INT, i as u64),
        Num::Float(x) => (TAG_FLOAT, fw(x)),
    }
}

fn words_num(tag: u64, bits: u64) -> Num {
    match tag {
        TAG_INT => Num::Int(bits as i64),
        TAG_FLOAT => Num::Float(f(bits)),
        _ => Num::Null,
    }
}

fn as_f64(n: Num) -> Option<f64> {
    match n {
        Num::Null => None,
        Num::Int(i) => Some(i as f64),
        Num::Float(x) => Some(x),
    }
}

fn sum_value(w: &[u64]) -> Option<Num> {
    let cnt = w[0] & !FLOAT;
    if cnt == 0 {
        return None;
    }
    Some(if w[0] & FLOAT != 0 {
        Num::Float(f(w[1]))
    } else {
        Num::Int(w[1] as i64)
    })
}

/// One aggregate of a plan: its kind and its offset in a row of words.
#[derive(Debug, Clone, Copy)]
pub struct Agg {
    /// What it computes.
    pub kind: AggKind,
    /// First word in the row.
    pub off: usize,
    /// Its index among the aggregates with an [`Ext`].
    pub ext: usize,
    /// `percentile_cont`'s fraction.
    pub p: f64,
}

impl Agg {
    /// An aggregate at word `off`.
    pub fn new(kind: AggKind, off: usize) -> Agg {
        Agg {
            kind,
            off,
            ext: 0,
            p: 0.5,
        }
    }

    /// Its empty [`Ext`].
    pub fn ext_init(&self) -> Ext {
        match self.kind {
            AggKind::CountDistinct => Ext::Distinct(Default::default()),
            AggKind::Percentile => Ext::Quant(Quant::default()),
            AggKind::Twap => Ext::Points(Vec::new()),
            _ => Ext::None,
        }
    }

    /// Adds one row to `e`: `a` the number (percentile, twap), `text` the
    /// value's bytes (count DISTINCT). Returns the bytes it added.
    pub fn ext_update(&self, e: &mut Ext, a: Num, text: Option<&[u8]>, at: Order) -> u64 {
        if *e == Ext::None {
            *e = self.ext_init();
        }
        match e {
            Ext::Distinct(s) => match text {
                Some(t) if !s.contains(t) => {
                    s.insert(t.into());
                    t.len() as u64 + 32
                }
                _ => 0,
            },
            Ext::Quant(q) => match as_f64(a) {
                Some(x) if x.is_finite() => {
                    let before = q.bytes();
                    q.add(x);
                    q.bytes().saturating_sub(before)
                }
                _ => 0,
            },
            Ext::Points(p) => match as_f64(a) {
                Some(price) => {
                    let i = p.partition_point(|q| q.at <= at);
                    p.insert(i, Point { at, price });
                    32
                }
                None => 0,
            },
            Ext::None => 0,
        }
    }

    /// Merges `src` into `dst`.
    pub fn ext_merge(&self, dst: &mut Ext, src: &Ext) {
        if *src == Ext::None {
            return;
        }
        if *dst == Ext::None {
            *dst = self.ext_init();
        }
        match (dst, src) {
            (Ext::Distinct(d), Ext::Distinct(s)) => d.extend(s.iter().cloned()),
            (Ext::Quant(d), Ext::Quant(s)) => d.merge(s),
            (Ext::Points(d), Ext::Points(s)) => {
                d.extend_from_slice(s);
                d.sort_by_key(|a| a.at);
            }
            _ => {}
        }
    }

    /// The result of an [`Ext`] aggregate: `window` its bounds (twap),
    /// `carry` the key's last price before the window (twap).
    pub fn ext_result(
        &self,
        e: &Ext,
        window: Option<(i64, i64)>,
        carry: Option<Point>,
    ) -> Value<'static> {
        match (self.kind, e) {
            (AggKind::CountDistinct, Ext::Distinct(s)) => Value::Int(s.len() as i64),
            (AggKind::CountDistinct, _) => Value::Int(0),
            (AggKind::Percentile, Ext::Quant(q)) => {
                q.percentile(self.p).map_or(Value::Null, Value::Float)
            }
            (AggKind::Twap, e) => {
                let pts: &[Point] = match e {
                    Ext::Points(p) => p,
                    _ => &[],
                };
                let Some((ws, we)) = window else {
                    return Value::Null;
                };
                twap(pts, ws, we, carry).map_or(Value::Null, Value::Float)
            }
            _ => Value::Null,
        }
    }
    /// Initial (empty) state.
    pub fn init(&self, w: &mut [u64]) {
        let w = &mut w[self.off..self.off + self.kind.width()];
        w.fill(0);
    }

    /// Adds one row: `a`, `b` are the arguments read as numbers (`b` for
    /// vwap's volume); `present` whether `count(x)`'s argument is not NULL.
    #[inline]
    pub fn update(&self, row: &mut [u64], a: Num, b: Num, present: bool, at: Order) {
        let w = &mut row[self.off..self.off + self.kind.width()];
        match self.kind {
            AggKind::CountStar => w[0] += 1,
            AggKind::Count => w[0] += present as u64,
            AggKind::Sum | AggKind::Avg => add_sum(w, a),
            AggKind::Min | AggKind::Max => {
                if a == Num::Null {
                    return;
                }
                let cur = words_num(w[0], w[1]);
                let better = match cmp_num(a, cur) {
                    None => true,
                    Some(o) => {
                        (o == Ordering::Less) == (self.kind == AggKind::Min) && o != Ordering::Equal
                    }
                };
                if better {
                    (w[0], w[1]) = num_words(a);
                }
            }
            AggKind::First | AggKind::Last => {
                if a == Num::Null {
                    return;
                }
                set_first_last(w, self.kind == AggKind::First, a, at);
            }
            AggKind::Vwap => {
                if let (Some(p), Some(v)) = (as_f64(a), as_f64(b)) {
                    w[0] = fw(f(w[0]) + p * v);
                    w[1] = fw(f(w[1]) + v);
                }
            }
            AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop => {
                if let Some(x) = as_f64(a) {
                    // Welford.
                    let n = w[0] + 1;
                    let mean = f(w[1]);
                    let d = x - mean;
                    let mean2 = mean + d / n as f64;
                    w[0] = n;
                    w[1] = fw(mean2);
                    w[2] = fw(f(w[2]) + d * (x - mean2));
                }
            }
            AggKind::CountDistinct | AggKind::Percentile | AggKind::Twap => {}
        }
    }

    /// Merges `src`'s state into `dst`'s (the same layout).
    pub fn merge(&self, dst: &mut [u64], src: &[u64]) {
        let r = self.off..self.off + self.kind.width();
        let (d, s) = (&mut dst[r.clone()], &src[r]);
        match self.kind {
            AggKind::CountStar | AggKind::Count => d[0] += s[0],
            AggKind::Sum | AggKind::Avg => merge_sum(d, s),
            AggKind::Min | AggKind::Max => {
                let a = words_num(s[0], s[1]);
                if a == Num::Null {
                    return;
                }
                let cur = words_num(d[0], d[1]);
                let better = match cmp_num(a, cur) {
                    None => true,
                    Some(o) => {
                        o != Ordering::Equal && (o == Ordering::Less) == (self.kind == AggKind::Min)
                    }
                };
                if better {
                    d[0] = s[0];
                    d[1] = s[1];
                }
            }
            AggKind::First | AggKind::Last => {
                if s[0] == TAG_NONE {
                    return;
                }
                let at = Order {
                    ts: s[2] as i64,
                    ms: s[3],
                    seq: s[4],
                };
                set_first_last(d, self.kind == AggKind::First, words_num(s[0], s[1]), at);
            }
            AggKind::Vwap => {
                d[0] = fw(f(d[0]) + f(s[0]));
                d[1] = fw(f(d[1]) + f(s[1]));
            }
            AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop => {
                // Chan et al.'s parallel combination.
                let (na, nb) = (d[0], s[0]);
                if nb == 0 {
                    return;
                }
                if na == 0 {
                    d.copy_from_slice(s);
                    return;
                }
                let n = na + nb;
                let (ma, mb) = (f(d[1]), f(s[1]));
                let delta = mb - ma;
                let mean = ma + delta * nb as f64 / n as f64;
                let m2 = f(d[2]) + f(s[2]) + delta * delta * na as f64 * nb as f64 / n as f64;
                d[0] = n;
                d[1] = fw(mean);
                d[2] = fw(m2);
            }
            AggKind::CountDistinct | AggKind::Percentile | AggKind::Twap => {}
        }
    }

    /// The result (NULL when no input counted).
    pub fn result(&self, row: &[u64]) -> Value<'static> {
        let w = &row[self.off..self.off + self.kind.width()];
        match self.kind {
            AggKind::CountStar | AggKind::Count => Value::Int(w[0] as i64),
            AggKind::Sum => sum_value(w).map_or(Value::Null, Num::value),
            AggKind::Avg => {
                let cnt = w[0] & !FLOAT;
                match sum_value(w).and_then(as_f64) {
                    Some(s) if cnt > 0 => Value::Float(s / cnt as f64),
                    _ => Value::Null,
                }
            }
            AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last => {
                words_num(w[0], w[1]).value()
            }
            AggKind::Vwap => {
                let v = f(w[1]);
                if v == 0.0 {
                    Value::Null
                } else {
                    Value::Float(f(w[0]) / v)
                }
            }
            AggKind::StddevSamp | AggKind::VarSamp => {
                let n = w[0];
                if n < 2 {
                    return Value::Null;
                }
                let var = (f(w[2]) / (n - 1) as f64).max(0.0);
                Value::Float(if self.kind == AggKind::VarSamp {
                    var
                } else {
                    var.sqrt()
                })
            }
            AggKind::StddevPop | AggKind::VarPop => {
                let n = w[0];
                if n < 1 {
                    return Value::Null;
                }
                let var = (f(w[2]) / n as f64).max(0.0);
                Value::Float(if self.kind == AggKind::VarPop {
                    var
                } else {
                    var.sqrt()
                })
            }
            // Their state is an Ext: see `ext_result`.
            AggKind::CountDistinct | AggKind::Percentile | AggKind::Twap => Value::Null,
        }
    }
}

/// TWAP over `[ws, we)` of `pts` (sorted, all within the window).
pub fn twap(pts: &[Point], ws: i64, we: i64, carry: Option<Point>) -> Option<f64> {
    let (start, mut t, mut price) = match (carry, pts.first()) {
        (Some(c), _) => (ws, ws, c.price),
        (None, Some(f)) => (f.at.ts, f.at.ts, f.price),
        (None, None) => return None,
    };
    if we <= start {
        return Some(pts.last().map_or(price, |p| p.price));
    }
    // Weights first, so that huge prices do not overflow the area.
    let total = (we - start) as f64;
    let mut avg = 0.0;
    for p in pts {
        avg += price * ((p.at.ts - t) as f64 / total);
        t = p.at.ts;
        price = p.price;
    }
    avg += price * ((we - t) as f64 / total);
    Some(avg)
}

/// `[count | FLOAT, bits]` plus one number.
#[inline]
fn add_sum(w: &mut [u64], n: Num) {
    let (cnt, float) = (w[0] & !FLOAT, w[0] & FLOAT != 0);
    let (bits, float) = match (n, float) {
        (Num::Null, _) => return,
        (Num::Int(i), false) => match (w[1] as i64).checked_add(i) {
            Some(s) => (s as u64, false),
            // Overflow: the sum goes on as a double (PostgreSQL's numeric
            // does not overflow; a double keeps the magnitude).
            None => (fw(w[1] as i64 as f64 + i as f64), true),
        },
        (Num::Int(i), true) => (fw(f(w[1]) + i as f64), true),
        (Num::Float(x), false) => (fw(w[1] as i64 as f64 + x), true),
        (Num::Float(x), true) => (fw(f(w[1]) + x), true),
    };
    w[1] = bits;
    w[0] = (cnt + 1) | if float { FLOAT } else { 0 };
}

fn merge_sum(d: &mut [u64], s: &[u64]) {
    let scnt = s[0] & !FLOAT;
    if scnt == 0 {
        return;
    }
    let dcnt = d[0] & !FLOAT;
    let n = if s[0] & FLOAT != 0 {
        Num::Float(f(s[1]))
    } else {
        Num::Int(s[1] as i64)
    };
    add_sum(d, n);
    d[0] = (d[0] & FLOAT) | (dcnt + scnt);
}

fn set_first_last(w: &mut [u64], first: bool, v: Num, at: Order) {
    if w[0] != TAG_NONE {
        let cur = Order {
            ts: w[2] as i64,
            ms: w[3],
            seq: w[4],
        };
        let keep = if first { cur <= at } else { cur >= at };
        if keep {
            return;
        }
    }
    (w[0], w[1]) = num_words(v);
    w[2] = at.ts as u64;
    w[3] = at.ms;
    w[4] = at.seq;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: AggKind, xs: &[Num]) -> Value<'static> {
        let a = Agg::new(kind, 0);
        let mut w = vec![0u64; kind.width()];
        a.init(&mut w);
        for (i, &x) in xs.iter().enumerate() {
            let at = Order {
                ts: i as i64,
                ms: i as u64,
                seq: 0,
            };
            a.update(&mut w, x, Num::Int(1), x != Num::Null, at);
        }
        a.result(&w)
    }

    #[test]
    fn nulls_and_empty_follow_postgres() {
        let none: &[Num] = &[Num::Null, Num::Null];
        assert_eq!(run(AggKind::Count, none), Value::Int(0));
        assert_eq!(run(AggKind::CountStar, none), Value::Int(2));
        for k in [
            AggKind::Sum,
            AggKind::Avg,
            AggKind::Min,
            AggKind::Max,
            AggKind::First,
        ] {
            assert_eq!(run(k, none), Value::Null, "{k:?}");
        }
        assert_eq!(run(AggKind::StddevSamp, &[Num::Int(3)]), Value::Null);
        assert_eq!(run(AggKind::StddevPop, &[Num::Int(3)]), Value::Float(0.0));
    }

    #[test]
    fn sum_stays_integer_until_a_double_or_overflow() {
        assert_eq!(
            run(AggKind::Sum, &[Num::Int(2), Num::Int(3)]),
            Value::Int(5)
        );
        assert_eq!(
            run(AggKind::Sum, &[Num::Int(2), Num::Float(0.5)]),
            Value::Float(2.5)
        );
        assert!(matches!(
            run(AggKind::Sum, &[Num::Int(i64::MAX), Num::Int(1)]),
            Value::Float(_)
        ));
        assert_eq!(
            run(AggKind::Avg, &[Num::Int(1), Num::Int(2)]),
            Value::Float(1.5)
        );
    }

    #[test]
    fn merge_equals_sequential() {
        let xs: Vec<Num> = (0..20).map(|i| Num::Int((i * 7) % 11 - 3)).collect();
        for kind in [
            AggKind::Count,
            AggKind::Sum,
            AggKind::Min,
            AggKind::Max,
            AggKind::First,
            AggKind::Last,
            AggKind::VarPop,
        ] {
            let a = Agg::new(kind, 0);
            let mut whole = vec![0u64; kind.width()];
            let mut left = vec![0u64; kind.width()];
            let mut right = vec![0u64; kind.width()];
            for (i, &x) in xs.iter().enumerate() {
                let at = Order {
                    ts: i as i64,
                    ms: 0,
                    seq: i as u64,
                };
                a.update(&mut whole, x, Num::Null, true, at);
                let part = if i % 3 == 0 { &mut left } else { &mut right };
                a.update(part, x, Num::Null, true, at);
            }
            a.merge(&mut left, &right);
            match (a.result(&whole), a.result(&left)) {
                (Value::Float(x), Value::Float(y)) => assert!((x - y).abs() < 1e-9, "{kind:?}"),
                (x, y) => assert_eq!(x, y, "{kind:?}"),
            }
        }
    }

    fn quant(xs: &[f64]) -> Quant {
        let mut q = Quant::default();
        for &x in xs {
            q.add(x);
        }
        q
    }

    fn exact(xs: &[f64], p: f64) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let pos = p * (v.len() - 1) as f64;
        let lo = pos.floor();
        let a = v[lo as usize];
        let b = v[(lo as usize + 1).min(v.len() - 1)];
        a + (b - a) * (pos - lo)
    }

    #[test]
    fn sketch_is_within_one_percent_and_merges() {
        // Log-uniform over nine decades, one sign, then both signs.
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            (r >> 11) as f64 / (1u64 << 53) as f64
        };
        let xs: Vec<f64> = (0..20_000)
            .map(|_| 10f64.powf(next() * 9.0 - 3.0))
            .collect();
        let whole = quant(&xs);
        assert!(whole.sketch.is_some());
        // Merged from parts, some still exact.
        let mut merged = quant(&xs[..500]);
        merged.merge(&quant(&xs[500..9000]));
        merged.merge(&quant(&xs[9000..]));
        for p in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0] {
            let want = exact(&xs, p);
            for q in [&whole, &merged] {
                let got = q.percentile(p).expect("values");
                assert!(
                    (got - want).abs() <= SKETCH_ALPHA * want.abs() * 1.000_001,
                    "p {p}: {got} vs {want}"
                );
            }
        }
        let neg: Vec<f64> = xs.iter().map(|x| -x).collect();
        let q = quant(&neg);
        let want = exact(&neg, 0.3);
        let got = q.percentile(0.3).expect("values");
        assert!((got - want).abs() <= SKETCH_ALPHA * want.abs() * 1.000_001);
        // Up to the bound it is exact.
        let small = &xs[..EXACT_MAX];
        assert_eq!(quant(small).percentile(0.5), Some(exact(small, 0.5)));
        // Zeros and the encoding round trip.
        let mut with_zero = xs[..3000].to_vec();
        with_zero.extend(std::iter::repeat_n(0.0, 3000));
        let q = Ext::Quant(quant(&with_zero));
        let mut v = Vec::new();
        q.encode(&mut v);
        let mut c = crate::engine::def::Cursor::new(&v);
        let back = Ext::decode(&mut c, Some(AggKind::Percentile)).expect("decodes");
        assert!(c.is_empty());
        assert_eq!(back, q);
        if let Ext::Quant(b) = &back {
            assert_eq!(b.percentile(0.25), Some(0.0));
        }
    }

    #[test]
    fn ext_merge_equals_sequential() {
        let at = |i: i64| Order {
            ts: i * 10,
            ms: i as u64,
            seq: 0,
        };
        for kind in [AggKind::CountDistinct, AggKind::Percentile, AggKind::Twap] {
            let a = Agg::new(kind, 0);
            let (mut whole, mut left, mut right) = (Ext::None, Ext::None, Ext::None);
            for i in 0..50i64 {
                let x = Num::Int((i * 7) % 13);
                let t = ((i * 7) % 13).to_string();
                a.ext_update(&mut whole, x, Some(t.as_bytes()), at(i));
                let part = if i < 20 { &mut left } else { &mut right };
                a.ext_update(part, x, Some(t.as_bytes()), at(i));
            }
            a.ext_merge(&mut left, &right);
            assert_eq!(
                a.ext_result(&whole, Some((0, 1000)), None),
                a.ext_result(&left, Some((0, 1000)), None),
                "{kind:?}"
            );
        }
    }
}
