//! The C `long double` that Redis's INCRBYFLOAT computes in, emulated
//! exactly: `strtold` (as Redis's `string2ld` accepts it), one addition,
//! and `printf("%.17Lf")` with trailing zeros removed (`ld2string`'s human
//! mode). On x86-64 that type is the x87 80-bit extended format: a 64-bit
//! significand, subnormals down to 2^-16445, values below 2^16384. Every
//! operation is exact on big integers and then rounded once, to nearest
//! with ties to even, as the hardware and glibc do. So `INCRBYFLOAT k 0.1`
//! on `10.5` answers `10.6` (a 53-bit double would print
//! `10.59999999999999964`), and `0.1 + 0.2` answers `0.3`, as in Redis.
//!
//! Inputs are bounded (Redis refuses strings of 5 KiB or more), so the big
//! integers stay below about 35,000 bits.

use std::cmp::Ordering;

/// Significand bits and the exponent of the smallest subnormal.
/// NOTE: other platforms' `long double` differ (binary128 on Linux
/// aarch64); those get binary128, the x87 format is used on x86.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const PREC: i64 = 64;
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const EMIN: i64 = -16445;
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
const PREC: i64 = 113;
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
const EMIN: i64 = -16494;
/// Every finite value is below 2^EXP_LIMIT.
const EXP_LIMIT: i64 = 16384;
/// Redis's MAX_LONG_DOUBLE_CHARS: longer inputs are not numbers to it.
const MAX_CHARS: usize = 5 * 1024;

/// An unsigned big integer: little-endian 32-bit limbs, no zero limb on top.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn zero() -> Big {
        Big(Vec::new())
    }
    fn from_u128(v: u128) -> Big {
        let mut b = Big((0..4).map(|i| (v >> (32 * i)) as u32).collect());
        b.trim();
        b
    }
    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn bits(&self) -> i64 {
        match self.0.last() {
            None => 0,
            Some(&top) => (self.0.len() as i64 - 1) * 32 + (32 - top.leading_zeros()) as i64,
        }
    }
    fn bit(&self, i: i64) -> bool {
        let w = (i / 32) as usize;
        self.0.get(w).is_some_and(|&x| (x >> (i % 32)) & 1 == 1)
    }
    /// Whether any bit below bit `i` is set.
    fn any_below(&self, i: i64) -> bool {
        let w = (i / 32) as usize;
        let full = w.min(self.0.len());
        if self.0[..full].iter().any(|&x| x != 0) {
            return true;
        }
        match self.0.get(w) {
            Some(&x) if i % 32 != 0 => x & ((1u32 << (i % 32)) - 1) != 0,
            _ => false,
        }
    }
    /// `self = self * m + add`.
    fn mul_small_add(&mut self, m: u32, add: u32) {
        let mut carry = add as u64;
        for l in self.0.iter_mut() {
            let v = *l as u64 * m as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }
    /// `self /= d`; the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / d as u64) as u32;
            rem = cur % d as u64;
        }
        self.trim();
        rem as u32
    }
    fn shl(&self, n: i64) -> Big {
        if self.is_zero() {
            return Big::zero();
        }
        let (words, bits) = ((n / 32) as usize, (n % 32) as u32);
        let mut out = vec![0u32; words];
        if bits == 0 {
            out.extend_from_slice(&self.0);
        } else {
            let mut carry = 0u32;
            for &l in &self.0 {
                out.push((l << bits) | carry);
                carry = l >> (32 - bits);
            }
            out.push(carry);
        }
        let mut b = Big(out);
        b.trim();
        b
    }
    fn shr(&self, n: i64) -> Big {
        let (words, bits) = ((n / 32) as usize, (n % 32) as u32);
        let Some(src) = self.0.get(words..) else {
            return Big::zero();
        };
        let out = (0..src.len())
            .map(|i| {
                if bits == 0 {
                    src[i]
                } else {
                    let hi = src.get(i + 1).copied().unwrap_or(0);
                    (src[i] >> bits) | (hi << (32 - bits))
                }
            })
            .collect();
        let mut b = Big(out);
        b.trim();
        b
    }
    /// The low 128 bits.
    fn low_u128(&self) -> u128 {
        self.0
            .iter()
            .take(4)
            .enumerate()
            .fold(0, |acc, (i, &l)| acc | (l as u128) << (32 * i))
    }
    fn add(&self, o: &Big) -> Big {
        let n = self.0.len().max(o.0.len());
        let mut out = Vec::with_capacity(n + 1);
        let mut carry = 0u64;
        for i in 0..n {
            let v = *self.0.get(i).unwrap_or(&0) as u64 + *o.0.get(i).unwrap_or(&0) as u64 + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        out.push(carry as u32);
        let mut b = Big(out);
        b.trim();
        b
    }
    /// `self - o`, for `self >= o`.
    fn sub(&self, o: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v = self.0[i] as i64 - *o.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = 0;
            if v < 0 {
                v += 1 << 32;
                borrow = 1;
            }
            out.push(v as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }
    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }
    fn to_decimal(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.is_zero() {
            chunks.push(n.div_small(1_000_000_000));
        }
        let mut s = String::new();
        for (i, c) in chunks.iter().rev().enumerate() {
            if i == 0 {
                s.push_str(&c.to_string());
            } else {
                s.push_str(&format!("{c:09}"));
            }
        }
        s
    }
}

/// A `long double`: `m * 2^e` (`m` below 2^PREC), or an infinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LongDouble {
    Finite { neg: bool, m: u128, e: i64 },
    Inf { neg: bool },
}

impl LongDouble {
    pub const ZERO: LongDouble = LongDouble::Finite {
        neg: false,
        m: 0,
        e: 0,
    };

    /// The value nearest to `(mag + f) * 2^e`, where `0 <= f < 1` and
    /// `f > 0` iff `sticky`. With `sticky`, `mag` must have more than PREC
    /// bits, so that the rounding position lies inside `mag`.
    fn round(neg: bool, mag: &Big, e: i64, sticky: bool) -> LongDouble {
        if mag.is_zero() {
            return LongDouble::Finite { neg, m: 0, e: 0 };
        }
        let b = mag.bits();
        let te = (e + b - PREC).max(EMIN);
        let shift = te - e;
        let (m, te) = if shift <= 0 {
            debug_assert!(!sticky);
            (mag.low_u128(), e)
        } else {
            let mut q = mag.shr(shift).low_u128();
            let half = mag.bit(shift - 1);
            let rest = sticky || mag.any_below(shift - 1);
            let mut te = te;
            if half && (rest || q & 1 == 1) {
                q += 1;
                if q >> PREC != 0 {
                    q >>= 1;
                    te += 1;
                }
            }
            (q, te)
        };
        if m == 0 {
            return LongDouble::Finite { neg, m: 0, e: 0 };
        }
        let bits = 128 - m.leading_zeros() as i64;
        if bits + te > EXP_LIMIT {
            return LongDouble::Inf { neg };
        }
        LongDouble::Finite { neg, m, e: te }
    }

    /// Redis's `string2ld`: the whole input must be a number `strtold`
    /// reads (decimal, hexadecimal `0x1.8p3`, `inf`, `infinity`), with no
    /// leading space; NaN, and finite numbers that overflow or underflow
    /// to zero, are refused.
    pub fn parse(s: &[u8]) -> Option<LongDouble> {
        if s.is_empty() || s.len() >= MAX_CHARS {
            return None;
        }
        if matches!(s[0], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            return None;
        }
        let (neg, body) = match s[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Some(LongDouble::Inf { neg });
        }
        let hex = body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x';
        let (v, zero_literal) = if hex {
            parse_hex(neg, &body[2..])?
        } else {
            parse_decimal(neg, body)?
        };
        match v {
            LongDouble::Inf { .. } => None,
            LongDouble::Finite { m: 0, .. } if !zero_literal => None,
            v => Some(v),
        }
    }

    /// `self + o`, or `None` if the sum is infinite or NaN.
    pub fn add(&self, o: &LongDouble) -> Option<LongDouble> {
        let (
            &LongDouble::Finite {
                neg: an,
                m: am,
                e: ae,
            },
            &LongDouble::Finite {
                neg: bn,
                m: bm,
                e: be,
            },
        ) = (self, o)
        else {
            return None;
        };
        if am == 0 && bm == 0 {
            return Some(LongDouble::Finite {
                neg: an && bn,
                m: 0,
                e: 0,
            });
        }
        if am == 0 {
            return Some(o.clone());
        }
        if bm == 0 {
            return Some(self.clone());
        }
        let e = ae.min(be);
        let a = Big::from_u128(am).shl(ae - e);
        let b = Big::from_u128(bm).shl(be - e);
        let (neg, mag) = if an == bn {
            (an, a.add(&b))
        } else {
            match a.cmp(&b) {
                Ordering::Greater => (an, a.sub(&b)),
                Ordering::Less => (bn, b.sub(&a)),
                Ordering::Equal => return Some(LongDouble::ZERO),
            }
        };
        match LongDouble::round(neg, &mag, e, false) {
            LongDouble::Inf { .. } => None,
            v => Some(v),
        }
    }

    /// `printf("%.17Lf")` without trailing zeros (and `-0` as `0`): Redis's
    /// `ld2string(.., LD_STR_HUMAN)`.
    pub fn to_human_string(&self) -> String {
        let LongDouble::Finite { neg, m, e } = *self else {
            return if matches!(self, LongDouble::Inf { neg: true }) {
                "-inf".into()
            } else {
                "inf".into()
            };
        };
        let mut x = Big::from_u128(m);
        x.mul_small_add(1_000_000_000, 0);
        x.mul_small_add(100_000_000, 0);
        let n = if e >= 0 {
            x.shl(e)
        } else {
            let s = -e;
            let mut q = x.shr(s);
            if x.bit(s - 1) && (x.any_below(s - 1) || q.bit(0)) {
                q = q.add(&Big::from_u128(1));
            }
            q
        };
        let mut digits = n.to_decimal();
        if digits.len() < 18 {
            digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
        }
        let (int, frac) = digits.split_at(digits.len() - 17);
        let frac = frac.trim_end_matches('0');
        let mut out = String::with_capacity(digits.len() + 2);
        if neg {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        if out == "-0" {
            out = "0".into();
        }
        out
    }
}

/// Digits with an optional point; `(mantissa, digits after the point,
/// whether there was a digit, bytes read)`.
fn digits(s: &[u8], radix: u32) -> (Big, i64, bool, usize) {
    let mut n = Big::zero();
    let (mut frac, mut any, mut point, mut i) = (0i64, false, false, 0);
    while i < s.len() {
        let c = s[i];
        if c == b'.' && !point {
            point = true;
        } else if let Some(d) = (c as char).to_digit(radix) {
            any = true;
            n.mul_small_add(radix, d);
            if point {
                frac += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    (n, frac, any, i)
}

/// An exponent (`e12`, `p-3`): the value, saturated far beyond any
/// representable range, and whether the rest of `s` is exactly that.
fn exponent(s: &[u8], marker: u8) -> Option<i64> {
    if s.is_empty() {
        return Some(0);
    }
    if s[0] | 0x20 != marker {
        return None;
    }
    let (neg, ds) = match s.get(1) {
        Some(b'-') => (true, &s[2..]),
        Some(b'+') => (false, &s[2..]),
        _ => (false, &s[1..]),
    };
    if ds.is_empty() || !ds.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = ds
        .iter()
        .fold(0i64, |acc, &d| (acc * 10 + (d - b'0') as i64).min(1 << 40));
    Some(if neg { -v } else { v })
}

/// `(value, whether the digits were all zero)`.
fn parse_decimal(neg: bool, s: &[u8]) -> Option<(LongDouble, bool)> {
    let (n, frac, any, used) = digits(s, 10);
    if !any {
        return None;
    }
    let exp = exponent(&s[used..], b'e')? - frac;
    if n.is_zero() {
        return Some((LongDouble::Finite { neg, m: 0, e: 0 }, true));
    }
    // Decimal digits of the integer (an upper bound is enough for the checks).
    let nd = n.bits() * 30103 / 100000 + 1;
    if exp + nd - 2 > 4933 {
        return Some((LongDouble::Inf { neg }, false));
    }
    if exp + nd < -4970 {
        return Some((LongDouble::ZERO, false));
    }
    if exp >= 0 {
        let mut v = n;
        for _ in 0..exp {
            v.mul_small_add(10, 0);
        }
        return Some((LongDouble::round(neg, &v, 0, false), false));
    }
    // n / 10^k = (n << s) / 5^k * 2^(-k-s), with s chosen so that the
    // quotient has more than PREC + 2 bits.
    let k = -exp;
    let pow5_bits = k * 233 / 100 + 2;
    let s = (pow5_bits + PREC + 3 - n.bits()).max(0);
    let mut q = n.shl(s);
    let mut sticky = false;
    let mut left = k;
    while left > 0 {
        let step = left.min(13);
        sticky |= q.div_small(5u32.pow(step as u32)) != 0;
        left -= step;
    }
    Some((LongDouble::round(neg, &q, -k - s, sticky), false))
}

/// After `0x`: hexadecimal digits, an optional point, an optional `p`
/// binary exponent.
fn parse_hex(neg: bool, s: &[u8]) -> Option<(LongDouble, bool)> {
    let (n, frac, any, used) = digits(s, 16);
    if !any {
        return None;
    }
    let exp = exponent(&s[used..], b'p')? - 4 * frac;
    if n.is_zero() {
        return Some((LongDouble::Finite { neg, m: 0, e: 0 }, true));
    }
    if n.bits() + exp > EXP_LIMIT + 1 {
        return Some((LongDouble::Inf { neg }, false));
    }
    if n.bits() + exp < EMIN - 2 {
        return Some((LongDouble::ZERO, false));
    }
    Some((LongDouble::round(neg, &n, exp, false), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(a: &str, b: &str) -> Option<String> {
        let a = LongDouble::parse(a.as_bytes())?;
        let b = LongDouble::parse(b.as_bytes())?;
        Some(a.add(&b)?.to_human_string())
    }

    #[test]
    fn redis_results() {
        // Values from redis-server 7.0 on x86-64.
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(sum("10.5", "0.1").as_deref(), Some("10.6"));
            assert_eq!(sum("0.1", "0.2").as_deref(), Some("0.3"));
            assert_eq!(sum("0", "5.0e3").as_deref(), Some("5000"));
            assert_eq!(sum("0", "1.5").as_deref(), Some("1.5"));
            assert_eq!(sum("3.0e3", "2.0e2").as_deref(), Some("3200"));
            assert_eq!(sum("0", "-0").as_deref(), Some("0"));
            assert_eq!(sum("0x10", "0x1p-1").as_deref(), Some("16.5"));
            assert_eq!(sum("1", "1e-20").as_deref(), Some("1"));
        }
        assert_eq!(sum("inf", "1"), None);
        assert_eq!(LongDouble::parse(b"1e5000"), None);
        assert_eq!(LongDouble::parse(b"1e-5000"), None);
        assert_eq!(LongDouble::parse(b"nan"), None);
        assert_eq!(LongDouble::parse(b" 1"), None);
        assert_eq!(LongDouble::parse(b"1e"), None);
        assert_eq!(LongDouble::parse(b"."), None);
        assert!(LongDouble::parse(b".5").is_some());
        assert!(LongDouble::parse(b"5.").is_some());
        assert!(LongDouble::parse(b"0e99999999999999999999").is_some());
    }

    #[test]
    fn large_and_tiny_values_do_not_panic() {
        for s in [
            "1e4932",
            "1.1e4932",
            "1e-4950",
            "3e-4951",
            "1e-4951",
            "0x1p16383",
            "0x1p-16445",
        ] {
            if let Some(v) = LongDouble::parse(s.as_bytes()) {
                let _ = v.add(&v).map(|r| r.to_human_string());
                let _ = v.to_human_string();
            }
        }
    }
}
