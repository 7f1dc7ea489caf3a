//! Mergeable aggregates over flat state: each aggregate owns a fixed number
//! of `u64` words in its window's (or pane's) row, updated in place per
//! event and merged pane by pane (HOP) or session by session.
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
}

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
        }
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
}

impl Agg {
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
        }
    }
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
        let a = Agg { kind, off: 0 };
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
            let a = Agg { kind, off: 0 };
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
}
