//! Redis's `long double` arithmetic, in software: HINCRBYFLOAT (like
//! INCRBYFLOAT) parses with `strtold`, adds in x87 80-bit extended
//! precision (64-bit mantissa, exponents down to subnormal 2^-16445) and
//! prints with `%.17Lf` minus trailing zeros. Doing the same in f64 would
//! print other digits (`0.1 + 0.2` is `0.3` in Redis, and `12345.678`
//! shows its 18th significant digit), so every step here is exact and
//! rounds to nearest, ties to even, as the x87 unit and glibc do.

use std::cmp::Ordering;

/// Redis's `MAX_LONG_DOUBLE_CHARS`: longer inputs are refused.
const MAX_CHARS: usize = 5 * 1024;
/// Smallest exponent of the last mantissa bit (subnormals).
const E_MIN: i64 = -16445;
/// Largest exponent of the last mantissa bit of a finite value.
const E_MAX: i64 = 16320;

/// An x87 extended value. A finite one is `m * 2^e` (`m == 0` is zero).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ld {
    Finite { neg: bool, m: u64, e: i64 },
    Inf { neg: bool },
    Nan,
}

impl Ld {
    pub fn is_finite(&self) -> bool {
        matches!(self, Ld::Finite { .. })
    }

    pub fn from_i64(v: i64) -> Ld {
        round(v < 0, u128::from(v.unsigned_abs()), 0, false)
    }

    /// Redis's `string2ld`: `strtold` over the whole string (cut at a NUL
    /// byte, as C sees it), no leading space, NaN refused, and overflow or
    /// underflow to zero refused. `None`: not a valid float.
    pub fn parse(s: &[u8]) -> Option<Ld> {
        if s.is_empty() || s.len() >= MAX_CHARS {
            return None;
        }
        let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
        if s.first()
            .is_some_and(|&c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        {
            return None;
        }
        if s.is_empty() {
            // strtold("") converts nothing and returns 0 at the end of the string.
            return Some(Ld::Finite {
                neg: false,
                m: 0,
                e: 0,
            });
        }
        strtold(s)
    }
}

impl std::ops::Add for Ld {
    type Output = Ld;

    /// `a + b` rounded to extended precision.
    fn add(self, other: Ld) -> Ld {
        let (a, b) = match (self, other) {
            (Ld::Nan, _) | (_, Ld::Nan) => return Ld::Nan,
            (Ld::Inf { neg: x }, Ld::Inf { neg: y }) => {
                return if x == y { self } else { Ld::Nan };
            }
            (Ld::Inf { .. }, _) => return self,
            (_, Ld::Inf { .. }) => return other,
            (
                Ld::Finite { neg, m, e },
                Ld::Finite {
                    neg: n2,
                    m: m2,
                    e: e2,
                },
            ) => ((neg, m, e), (n2, m2, e2)),
        };
        if a.1 == 0 && b.1 == 0 {
            return Ld::Finite {
                neg: a.0 && b.0,
                m: 0,
                e: 0,
            };
        }
        if a.1 == 0 {
            return other;
        }
        if b.1 == 0 {
            return self;
        }
        let (a, b) = if a.2 >= b.2 { (a, b) } else { (b, a) };
        // Align both on a's exponent with 62 guard bits; b's lost bits are
        // jammed into its lowest bit, which keeps the rounding exact.
        let big = u128::from(a.1) << 62;
        let d = a.2 - b.2;
        let bv = u128::from(b.1) << 62;
        let small = if d >= 128 {
            1
        } else {
            let lost = bv & ((1u128 << d) - 1);
            (bv >> d) | u128::from(lost != 0)
        };
        let exp = a.2 - 62;
        if a.0 == b.0 {
            round(a.0, big + small, exp, false)
        } else {
            match big.cmp(&small) {
                Ordering::Greater => round(a.0, big - small, exp, false),
                Ordering::Less => round(b.0, small - big, exp, false),
                Ordering::Equal => Ld::Finite {
                    neg: false,
                    m: 0,
                    e: 0,
                },
            }
        }
    }
}

impl Ld {
    /// Redis's `ld2string(.., LD_STR_HUMAN)`: `%.17Lf` without trailing
    /// zeros (nor a trailing point), `-0` as `0`, infinities as `inf`/`-inf`.
    pub fn to_human(&self) -> String {
        let (neg, m, e) = match *self {
            Ld::Finite { neg, m, e } => (neg, m, e),
            Ld::Inf { neg } => return if neg { "-inf".into() } else { "inf".into() },
            Ld::Nan => return "nan".into(),
        };
        let mut x = Big::from_u64(m);
        x.mul_small(100_000_000_000_000_000); // 10^17
        let int = if e >= 0 {
            x.shl(e as u64);
            x
        } else {
            let sh = e.unsigned_abs();
            let half = x.bit(sh - 1);
            let rest = sh >= 2 && x.any_below(sh - 1);
            x.shr(sh);
            if half && (rest || x.bit(0)) {
                x.add_small(1);
            }
            x
        };
        let mut digits = int.to_decimal();
        while digits.len() < 18 {
            digits.insert(0, b'0');
        }
        let point = digits.len() - 17;
        let mut s = String::with_capacity(digits.len() + 2);
        if neg {
            s.push('-');
        }
        s.push_str(std::str::from_utf8(&digits[..point]).unwrap_or("0"));
        let frac = std::str::from_utf8(&digits[point..]).unwrap_or("");
        let frac = frac.trim_end_matches('0');
        if !frac.is_empty() {
            s.push('.');
            s.push_str(frac);
        }
        if s == "-0" {
            s = "0".into();
        }
        s
    }
}

/// Round `mag * 2^exp` (plus something below bit 0 if `sticky`) to a 64-bit
/// mantissa, ties to even, with gradual underflow and overflow to infinity.
fn round(neg: bool, mag: u128, exp: i64, sticky: bool) -> Ld {
    if mag == 0 {
        return Ld::Finite { neg, m: 0, e: 0 };
    }
    let nbits = 128 - i64::from(mag.leading_zeros());
    let mut shift = nbits - 64;
    if exp + shift < E_MIN {
        shift = E_MIN - exp;
    }
    let (mut m, mut e) = if shift <= 0 {
        ((mag << (-shift) as u32) as u64 as u128, exp + shift)
    } else {
        let drop = shift as u64;
        let kept = if drop >= 128 { 0 } else { mag >> drop };
        let half = drop <= 128 && (mag >> (drop - 1)) & 1 == 1;
        let rest = sticky
            || (drop >= 2
                && if drop > 128 {
                    mag != 0
                } else {
                    mag & ((1u128 << (drop - 1)) - 1) != 0
                });
        let up = half && (rest || kept & 1 == 1);
        (kept + u128::from(up), exp + shift)
    };
    if m == 1u128 << 64 {
        m >>= 1;
        e += 1;
    }
    if m == 0 {
        return Ld::Finite { neg, m: 0, e: 0 };
    }
    if e > E_MAX {
        return Ld::Inf { neg };
    }
    Ld::Finite {
        neg,
        m: m as u64,
        e,
    }
}

/// glibc's `strtold` on a string that must be consumed whole; `None` if it
/// is not, or if `string2ld` would refuse the value (NaN, ERANGE).
fn strtold(s: &[u8]) -> Option<Ld> {
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if s.eq_ignore_ascii_case(b"inf") || s.eq_ignore_ascii_case(b"infinity") {
        return Some(Ld::Inf { neg });
    }
    let hex = s.len() > 2
        && s[0] == b'0'
        && (s[1] | 0x20) == b'x'
        && s.get(2)
            .is_some_and(|c| c.is_ascii_hexdigit() || *c == b'.');
    let (radix, body, exp_char) = if hex {
        (16u64, &s[2..], b'p')
    } else {
        (10u64, s, b'e')
    };
    // Mantissa digits, with an optional point.
    let mut i = 0;
    let mut digits: Vec<u8> = Vec::new();
    let mut frac_digits: i64 = 0;
    let mut seen_point = false;
    let mut any = false;
    while i < body.len() {
        let c = body[i];
        if c == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = (c as char).to_digit(radix as u32) {
            any = true;
            if !(digits.is_empty() && d == 0) {
                digits.push(d as u8);
            }
            if seen_point {
                frac_digits += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    if !any {
        return None;
    }
    let mut exp: i64 = 0;
    if i < body.len() {
        if (body[i] | 0x20) != exp_char {
            return None;
        }
        i += 1;
        let eneg = match body.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        if i >= body.len() {
            return None;
        }
        for &c in &body[i..] {
            if !c.is_ascii_digit() {
                return None;
            }
            exp = (exp * 10 + i64::from(c - b'0')).min(1_000_000);
        }
        if eneg {
            exp = -exp;
        }
    }
    while digits.last() == Some(&0) && frac_digits > 0 {
        digits.pop();
        frac_digits -= 1;
    }
    if digits.is_empty() {
        return Some(Ld::Finite { neg, m: 0, e: 0 });
    }
    let v = if hex {
        let mut n = Big::zero();
        for &d in &digits {
            n.mul_small(16);
            n.add_small(u64::from(d));
        }
        let (top, sh, sticky) = n.top128();
        round(neg, top, exp - 4 * frac_digits + sh, sticky)
    } else {
        let q = exp - frac_digits;
        let magnitude = q + digits.len() as i64;
        if magnitude > 4934 {
            return None;
        }
        if magnitude < -4952 {
            return None;
        }
        let mut d = Big::zero();
        for chunk in digits.chunks(18) {
            let mut v: u64 = 0;
            for &c in chunk {
                v = v * 10 + u64::from(c);
            }
            d.mul_small(10u64.pow(chunk.len() as u32));
            d.add_small(v);
        }
        if q >= 0 {
            d.mul_pow10(q as u64);
            let (top, sh, sticky) = d.top128();
            round(neg, top, sh, sticky)
        } else {
            let mut b = Big::from_u64(1);
            b.mul_pow10(q.unsigned_abs());
            let s = (b.bits() + 66).saturating_sub(d.bits());
            d.shl(s);
            let (quot, rem_nonzero) = d.div_small_quotient(&b);
            round(neg, quot, -(s as i64), rem_nonzero)
        }
    };
    match v {
        Ld::Finite { m: 0, .. } | Ld::Inf { .. } | Ld::Nan => None,
        v => Some(v),
    }
}

/// A little-endian unsigned big integer, just what the conversions need.
#[derive(Clone, Debug)]
struct Big(Vec<u64>);

impl Big {
    fn zero() -> Big {
        Big(Vec::new())
    }
    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v]);
        b.trim();
        b
    }
    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
    fn bits(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(&top) => self.0.len() as u64 * 64 - u64::from(top.leading_zeros()),
        }
    }
    fn bit(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }
    /// Any bit set below bit `i`.
    fn any_below(&self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.iter().take(w).any(|&x| x != 0)
            || (b > 0 && self.0.get(w).is_some_and(|&x| x & ((1u64 << b) - 1) != 0))
    }
    fn mul_small(&mut self, k: u64) {
        let mut carry: u128 = 0;
        for w in self.0.iter_mut() {
            let v = u128::from(*w) * u128::from(k) + carry;
            *w = v as u64;
            carry = v >> 64;
        }
        if carry != 0 {
            self.0.push(carry as u64);
        }
        self.trim();
    }
    fn add_small(&mut self, k: u64) {
        let mut carry = k;
        for w in self.0.iter_mut() {
            let (v, o) = w.overflowing_add(carry);
            *w = v;
            carry = u64::from(o);
            if carry == 0 {
                break;
            }
        }
        if carry != 0 {
            self.0.push(carry);
        }
        self.trim();
    }
    fn mul_pow10(&mut self, mut n: u64) {
        while n >= 19 {
            self.mul_small(10_000_000_000_000_000_000);
            n -= 19;
        }
        self.mul_small(10u64.pow(n as u32));
    }
    fn shl(&mut self, n: u64) {
        if self.0.is_empty() {
            return;
        }
        let (words, b) = ((n / 64) as usize, (n % 64) as u32);
        let mut out = vec![0u64; words];
        let mut carry = 0u64;
        for &w in &self.0 {
            out.push((w << b) | carry);
            carry = if b == 0 { 0 } else { w >> (64 - b) };
        }
        out.push(carry);
        self.0 = out;
        self.trim();
    }
    fn shr(&mut self, n: u64) {
        let (words, b) = ((n / 64) as usize, (n % 64) as u32);
        if words >= self.0.len() {
            self.0.clear();
            return;
        }
        let src = &self.0[words..];
        let mut out = Vec::with_capacity(src.len());
        for i in 0..src.len() {
            let hi = if b == 0 {
                0
            } else {
                src.get(i + 1).map_or(0, |&x| x << (64 - b))
            };
            out.push((src[i] >> b) | hi);
        }
        self.0 = out;
        self.trim();
    }
    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }
    /// `self -= o`, requires `self >= o`.
    fn sub(&mut self, o: &Big) {
        let mut borrow = false;
        for i in 0..self.0.len() {
            let x = o.0.get(i).copied().unwrap_or(0);
            let (v, b1) = self.0[i].overflowing_sub(x);
            let (v, b2) = v.overflowing_sub(u64::from(borrow));
            self.0[i] = v;
            borrow = b1 || b2;
        }
        self.trim();
    }
    /// `self / d` when the quotient is below 2^70, and whether a remainder
    /// is left.
    fn div_small_quotient(mut self, d: &Big) -> (u128, bool) {
        let mut q: u128 = 0;
        for i in (0..70).rev() {
            let mut t = d.clone();
            t.shl(i);
            if self.cmp(&t) != Ordering::Less {
                self.sub(&t);
                q |= 1u128 << i;
            }
        }
        (q, !self.0.is_empty())
    }
    /// The top (up to) 128 bits, the power of two they are scaled by, and
    /// whether any bit below them is set.
    fn top128(&self) -> (u128, i64, bool) {
        let bits = self.bits();
        if bits <= 128 {
            let lo = u128::from(self.0.first().copied().unwrap_or(0));
            let hi = u128::from(self.0.get(1).copied().unwrap_or(0));
            return ((hi << 64) | lo, 0, false);
        }
        let sh = bits - 128;
        let sticky = self.any_below(sh);
        let mut t = self.clone();
        t.shr(sh);
        let lo = u128::from(t.0.first().copied().unwrap_or(0));
        let hi = u128::from(t.0.get(1).copied().unwrap_or(0));
        ((hi << 64) | lo, sh as i64, sticky)
    }
    fn to_decimal(&self) -> Vec<u8> {
        const CHUNK: u64 = 1_000_000_000_000_000_000; // 10^18
        let mut n = self.0.clone();
        let mut parts: Vec<u64> = Vec::new();
        while !n.is_empty() {
            let mut rem: u128 = 0;
            for w in n.iter_mut().rev() {
                let cur = (rem << 64) | u128::from(*w);
                *w = (cur / u128::from(CHUNK)) as u64;
                rem = cur % u128::from(CHUNK);
            }
            parts.push(rem as u64);
            while n.last() == Some(&0) {
                n.pop();
            }
        }
        let mut s = match parts.pop() {
            None => "0".to_string(),
            Some(top) => top.to_string(),
        };
        for p in parts.iter().rev() {
            s.push_str(&format!("{p:018}"));
        }
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> String {
        let (a, b) = (
            Ld::parse(a.as_bytes()).unwrap(),
            Ld::parse(b.as_bytes()).unwrap(),
        );
        (a + b).to_human()
    }

    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(incr("0.1", "0.2"), "0.3");
        assert_eq!(incr("10.5", "0.1"), "10.6");
        assert_eq!(incr("5.0e3", "2.0e2"), "5200");
        assert_eq!(incr("0", "-5"), "-5");
        assert_eq!(incr("1", "-1"), "0");
        assert_eq!(incr("0", "0x10"), "16");
        assert_eq!(incr("0", "1e20"), "100000000000000000000");
        assert_eq!(incr("0", "-0"), "0");
        assert_eq!(Ld::from_i64(i64::MIN).to_human(), "-9223372036854775808");
    }

    #[test]
    fn parse_follows_string2ld() {
        for bad in [
            "", " 1", "1 ", "abc", "nan", "1e", "1e+", "0x", "1e99999", "1e-99999", "--1",
        ] {
            assert!(Ld::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        for good in [
            "1",
            "+1",
            "-1.5",
            ".5",
            "5.",
            "1E3",
            "inf",
            "-Infinity",
            "0e-99999",
            "1e4000",
        ] {
            assert!(Ld::parse(good.as_bytes()).is_some(), "{good:?}");
        }
        assert!(!Ld::parse(b"inf").unwrap().is_finite());
        assert_eq!(Ld::parse(b"1\0xyz").unwrap().to_human(), "1");
    }
}
