//! Per-event kernels of the built-in functions and operators, shared by the
//! compiler's closures. Semantics follow PostgreSQL; docs/pipelines.md lists
//! the deliberate differences.

use crate::error::EvalError;
use crate::value::Num;

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

const BIGINT: EvalError = EvalError::OutOfRange("bigint");
const DOUBLE: EvalError = EvalError::OutOfRange("double precision");

/// `a op b` with PostgreSQL semantics: checked integer arithmetic,
/// truncating integer division, an error on division by zero (ints and
/// doubles alike) and on a finite double overflowing.
#[inline]
pub(crate) fn arith(op: Arith, a: Num, b: Num) -> Result<Num, EvalError> {
    match (a, b) {
        (Num::Null, _) | (_, Num::Null) => Ok(Num::Null),
        (Num::Int(x), Num::Int(y)) => {
            let r = match op {
                Arith::Add => x.checked_add(y),
                Arith::Sub => x.checked_sub(y),
                Arith::Mul => x.checked_mul(y),
                Arith::Div => {
                    if y == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x.checked_div(y)
                }
                Arith::Mod => {
                    if y == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    // NOTE: i64::MIN % -1 is 0 in PostgreSQL, not an overflow.
                    Some(x.checked_rem(y).unwrap_or(0))
                }
            };
            r.map(Num::Int).ok_or(BIGINT)
        }
        (x, y) => {
            let (x, y) = (as_f64(x), as_f64(y));
            let r = match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => {
                    if y == 0.0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x / y
                }
                Arith::Mod => {
                    if y == 0.0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    x % y
                }
            };
            check_f64(r, x.is_infinite() || y.is_infinite())
        }
    }
}

#[inline]
pub(crate) fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
        Num::Null => f64::NAN,
    }
}

/// A double result, refusing an overflow to infinity from finite inputs.
#[inline]
pub(crate) fn check_f64(r: f64, inf_input: bool) -> Result<Num, EvalError> {
    if r.is_infinite() && !inf_input {
        Err(DOUBLE)
    } else {
        Ok(Num::Float(r))
    }
}

pub(crate) fn neg(a: Num) -> Result<Num, EvalError> {
    match a {
        Num::Int(i) => i.checked_neg().map(Num::Int).ok_or(BIGINT),
        Num::Float(f) => Ok(Num::Float(-f)),
        Num::Null => Ok(Num::Null),
    }
}

pub(crate) fn abs(a: Num) -> Result<Num, EvalError> {
    match a {
        Num::Int(i) => i.checked_abs().map(Num::Int).ok_or(BIGINT),
        Num::Float(f) => Ok(Num::Float(f.abs())),
        Num::Null => Ok(Num::Null),
    }
}

/// Rounds half away from zero (PostgreSQL's `numeric` rounding; decimal
/// literals are `numeric` there) to `digits` decimal places.
pub(crate) fn round(a: Num, digits: i64) -> Result<Num, EvalError> {
    match a {
        Num::Null => Ok(Num::Null),
        Num::Int(i) => {
            if digits >= 0 {
                return Ok(Num::Int(i));
            }
            if digits < -18 {
                return Ok(Num::Int(0));
            }
            let p = 10i64.pow(digits.unsigned_abs() as u32);
            let q = i / p;
            let r = i % p;
            let q = if r.unsigned_abs() * 2 >= p.unsigned_abs() {
                q + i.signum()
            } else {
                q
            };
            q.checked_mul(p).map(Num::Int).ok_or(BIGINT)
        }
        Num::Float(f) => {
            if digits == 0 {
                return Ok(Num::Float(f.round()));
            }
            let d = digits.clamp(-308, 308) as i32;
            let p = 10f64.powi(d);
            let r = (f * p).round() / p;
            Ok(Num::Float(if r.is_finite() { r } else { f }))
        }
    }
}

pub(crate) fn floor(a: Num) -> Num {
    match a {
        Num::Float(f) => Num::Float(f.floor()),
        n => n,
    }
}

pub(crate) fn ceil(a: Num) -> Num {
    match a {
        Num::Float(f) => Num::Float(f.ceil()),
        n => n,
    }
}

pub(crate) fn sqrt(a: Num) -> Result<Num, EvalError> {
    let x = match a {
        Num::Null => return Ok(Num::Null),
        n => as_f64(n),
    };
    if x < 0.0 {
        return Err(EvalError::InvalidArgument(
            "cannot take square root of a negative number".into(),
        ));
    }
    Ok(Num::Float(x.sqrt()))
}

pub(crate) fn ln(a: Num) -> Result<Num, EvalError> {
    let x = match a {
        Num::Null => return Ok(Num::Null),
        n => as_f64(n),
    };
    if x == 0.0 {
        return Err(EvalError::InvalidArgument(
            "cannot take logarithm of zero".into(),
        ));
    }
    if x < 0.0 {
        return Err(EvalError::InvalidArgument(
            "cannot take logarithm of a negative number".into(),
        ));
    }
    Ok(Num::Float(x.ln()))
}

pub(crate) fn log(base: Num, a: Num) -> Result<Num, EvalError> {
    if base == Num::Null || a == Num::Null {
        return Ok(Num::Null);
    }
    let (Num::Float(b), Num::Float(x)) = (ln(base)?, ln(a)?) else {
        return Ok(Num::Null);
    };
    if b == 0.0 {
        return Err(EvalError::DivisionByZero);
    }
    Ok(Num::Float(x / b))
}

pub(crate) fn exp(a: Num) -> Result<Num, EvalError> {
    match a {
        Num::Null => Ok(Num::Null),
        n => {
            let x = as_f64(n);
            check_f64(x.exp(), x.is_infinite())
        }
    }
}

pub(crate) fn power(a: Num, b: Num) -> Result<Num, EvalError> {
    if a == Num::Null || b == Num::Null {
        return Ok(Num::Null);
    }
    let (x, y) = (as_f64(a), as_f64(b));
    if x == 0.0 && y < 0.0 {
        return Err(EvalError::InvalidArgument(
            "zero raised to a negative power is undefined".into(),
        ));
    }
    if x < 0.0 && y.fract() != 0.0 && y.is_finite() {
        return Err(EvalError::InvalidArgument(
            "a negative number raised to a non-integer power yields a complex result".into(),
        ));
    }
    check_f64(x.powf(y), x.is_infinite() || y.is_infinite())
}

/// Float → integer with round-half-to-even, as PostgreSQL's float8 → int8.
pub(crate) fn f64_to_i64(f: f64) -> Result<i64, EvalError> {
    let r = f.round_ties_even();
    if r.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
        return Err(BIGINT);
    }
    Ok(r as i64)
}

// ---- text ---------------------------------------------------------------

/// Character boundaries: UTF-8 characters when the bytes are valid UTF-8,
/// else one character per byte. Returns byte offsets of each char start plus
/// the total length at the end.
pub(crate) fn char_offsets(b: &[u8]) -> Vec<usize> {
    match std::str::from_utf8(b) {
        Ok(s) => s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(b.len()))
            .collect(),
        Err(_) => (0..=b.len()).collect(),
    }
}

pub(crate) fn char_len(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(s) => s.chars().count(),
        Err(_) => b.len(),
    }
}

/// Slice by 1-based character positions `[from, from+count)`, clamped, as
/// PostgreSQL's `substr` (a negative count is an error there).
pub(crate) fn substr(b: &[u8], from: i64, count: Option<i64>) -> Result<&[u8], EvalError> {
    let offs = char_offsets(b);
    let n = (offs.len() - 1) as i64;
    let end = match count {
        Some(c) if c < 0 => {
            return Err(EvalError::InvalidArgument(
                "negative substring length not allowed".into(),
            ))
        }
        Some(c) => from.saturating_add(c),
        None => i64::MAX,
    };
    let s = from.clamp(1, n + 1);
    let e = end.clamp(1, n + 1);
    if e <= s {
        return Ok(&[]);
    }
    Ok(&b[offs[(s - 1) as usize]..offs[(e - 1) as usize]])
}

/// `left(s, n)`: the first n characters; a negative n drops the last |n|.
pub(crate) fn left(b: &[u8], n: i64) -> &[u8] {
    let offs = char_offsets(b);
    let len = (offs.len() - 1) as i64;
    let k = if n >= 0 { n.min(len) } else { (len + n).max(0) };
    &b[..offs[k as usize]]
}

/// `right(s, n)`: the last n characters; a negative n drops the first |n|.
pub(crate) fn right(b: &[u8], n: i64) -> &[u8] {
    let offs = char_offsets(b);
    let len = (offs.len() - 1) as i64;
    let k = if n >= 0 { n.min(len) } else { (len + n).max(0) };
    &b[offs[(len - k) as usize]..]
}

pub(crate) fn lower(b: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_lowercase().into_bytes(),
        Err(_) => b.to_ascii_lowercase(),
    }
}

pub(crate) fn upper(b: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_uppercase().into_bytes(),
        Err(_) => b.to_ascii_uppercase(),
    }
}

/// Trims any of the characters in `set` (default: space) from the chosen ends.
pub(crate) fn trim<'b>(b: &'b [u8], set: Option<&[u8]>, lead: bool, trail: bool) -> &'b [u8] {
    let set = set.unwrap_or(b" ");
    let offs = char_offsets(b);
    let set_offs = char_offsets(set);
    let in_set = |c: &[u8]| set_offs.windows(2).any(|w| &set[w[0]..w[1]] == c);
    let n = offs.len() - 1;
    let mut s = 0;
    let mut e = n;
    if lead {
        while s < e && in_set(&b[offs[s]..offs[s + 1]]) {
            s += 1;
        }
    }
    if trail {
        while e > s && in_set(&b[offs[e - 1]..offs[e]]) {
            e -= 1;
        }
    }
    &b[offs[s]..offs[e]]
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// 1-based character position of `needle` in `hay`, 0 when absent.
pub(crate) fn strpos(hay: &[u8], needle: &[u8]) -> i64 {
    match find(hay, needle) {
        None => 0,
        Some(byte) => char_len(&hay[..byte]) as i64 + 1,
    }
}

pub(crate) fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// `split_part(s, delim, n)`; negative n counts from the end (PostgreSQL 14).
pub(crate) fn split_part<'b>(s: &'b [u8], delim: &[u8], n: i64) -> Result<&'b [u8], EvalError> {
    if n == 0 {
        return Err(EvalError::InvalidArgument(
            "field position must not be zero".into(),
        ));
    }
    let parts: Vec<&[u8]> = if delim.is_empty() {
        if s.is_empty() {
            Vec::new()
        } else {
            vec![s]
        }
    } else {
        split(s, delim)
    };
    let k = if n > 0 { n - 1 } else { parts.len() as i64 + n };
    Ok(usize::try_from(k)
        .ok()
        .and_then(|k| parts.get(k).copied())
        .unwrap_or(&[]))
}

pub(crate) fn split<'b>(s: &'b [u8], delim: &[u8]) -> Vec<&'b [u8]> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(i) = find(rest, delim) {
        parts.push(&rest[..i]);
        rest = &rest[i + delim.len()..];
    }
    parts.push(rest);
    parts
}

/// `string_to_array(s, delim[, null_string])`: PostgreSQL's rules: an empty
/// string gives no elements, a NULL delimiter splits into characters, an
/// empty delimiter gives the whole string, elements equal to `null_string`
/// become NULL.
pub(crate) fn string_to_array(
    s: &[u8],
    delim: Option<&[u8]>,
    null_str: Option<&[u8]>,
) -> Vec<Option<Vec<u8>>> {
    if s.is_empty() {
        return Vec::new();
    }
    let parts: Vec<&[u8]> = match delim {
        None => {
            let offs = char_offsets(s);
            offs.windows(2).map(|w| &s[w[0]..w[1]]).collect()
        }
        Some([]) => vec![s],
        Some(d) => split(s, d),
    };
    parts
        .into_iter()
        .map(|p| match null_str {
            Some(n) if n == p => None,
            _ => Some(p.to_vec()),
        })
        .collect()
}

// ---- LIKE ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LikeTok {
    Lit(Vec<u8>),
    One,
    Many,
}

/// A compiled LIKE pattern.
#[derive(Debug, Clone)]
pub(crate) struct LikePattern {
    toks: Vec<LikeTok>,
    fold: bool,
}

impl LikePattern {
    /// Compiles `pattern` with `escape` (PostgreSQL's default is `\`; `None`
    /// disables escaping). `fold` makes it ILIKE.
    pub(crate) fn new(pattern: &[u8], escape: Option<u8>, fold: bool) -> Result<Self, String> {
        let folded;
        let pattern = if fold {
            folded = lower(pattern);
            &folded[..]
        } else {
            pattern
        };
        let mut toks: Vec<LikeTok> = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let c = pattern[i];
            if Some(c) == escape {
                let Some(&n) = pattern.get(i + 1) else {
                    return Err("LIKE pattern must not end with escape character".into());
                };
                lit.push(n);
                i += 2;
                continue;
            }
            match c {
                b'%' | b'_' => {
                    if !lit.is_empty() {
                        toks.push(LikeTok::Lit(std::mem::take(&mut lit)));
                    }
                    let t = if c == b'%' {
                        LikeTok::Many
                    } else {
                        LikeTok::One
                    };
                    // Consecutive % collapse: keeps matching linear per star.
                    if !(t == LikeTok::Many && toks.last() == Some(&LikeTok::Many)) {
                        toks.push(t);
                    }
                }
                _ => lit.push(c),
            }
            i += 1;
        }
        if !lit.is_empty() {
            toks.push(LikeTok::Lit(lit));
        }
        Ok(LikePattern { toks, fold })
    }

    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        if self.fold {
            let l = lower(s);
            like_match(&self.toks, &l)
        } else {
            like_match(&self.toks, s)
        }
    }
}

fn char_width(s: &[u8], i: usize) -> usize {
    let b = s[i];
    let w = if b < 0x80 {
        1
    } else if b >= 0xF0 {
        4
    } else if b >= 0xE0 {
        3
    } else if b >= 0xC0 {
        2
    } else {
        1
    };
    if i + w <= s.len() && std::str::from_utf8(&s[i..i + w]).is_ok() {
        w
    } else {
        1
    }
}

/// Wildcard matching with single-star backtracking: O(len(s) · len(toks)).
fn like_match(toks: &[LikeTok], s: &[u8]) -> bool {
    let (mut t, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if t < toks.len() {
            match &toks[t] {
                LikeTok::Many => {
                    star = Some((t, i));
                    t += 1;
                    continue;
                }
                LikeTok::One if i < s.len() => {
                    i += char_width(s, i);
                    t += 1;
                    continue;
                }
                LikeTok::Lit(l) if s[i..].starts_with(l) => {
                    i += l.len();
                    t += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last % swallow one more character.
        match star {
            Some((st, si)) if si < s.len() => {
                let ni = si + char_width(s, si);
                star = Some((st, ni));
                t = st + 1;
                i = ni;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arithmetic_is_checked_and_truncates() {
        assert_eq!(
            arith(Arith::Div, Num::Int(7), Num::Int(-2)),
            Ok(Num::Int(-3))
        );
        assert_eq!(
            arith(Arith::Mod, Num::Int(-7), Num::Int(2)),
            Ok(Num::Int(-1))
        );
        assert_eq!(
            arith(Arith::Div, Num::Int(1), Num::Int(0)),
            Err(EvalError::DivisionByZero)
        );
        assert_eq!(
            arith(Arith::Div, Num::Float(1.0), Num::Int(0)),
            Err(EvalError::DivisionByZero)
        );
        assert!(arith(Arith::Add, Num::Int(i64::MAX), Num::Int(1)).is_err());
        assert!(arith(Arith::Div, Num::Int(i64::MIN), Num::Int(-1)).is_err());
        assert_eq!(
            arith(Arith::Mod, Num::Int(i64::MIN), Num::Int(-1)),
            Ok(Num::Int(0))
        );
        assert!(arith(Arith::Mul, Num::Float(1e300), Num::Float(1e300)).is_err());
        assert_eq!(
            arith(Arith::Add, Num::Int(1), Num::Float(0.5)),
            Ok(Num::Float(1.5))
        );
    }

    #[test]
    fn rounding() {
        assert_eq!(round(Num::Float(2.5), 0), Ok(Num::Float(3.0)));
        assert_eq!(round(Num::Float(-2.5), 0), Ok(Num::Float(-3.0)));
        assert_eq!(round(Num::Float(1.2345), 2), Ok(Num::Float(1.23)));
        assert_eq!(round(Num::Int(1250), -2), Ok(Num::Int(1300)));
        assert_eq!(round(Num::Int(-1249), -2), Ok(Num::Int(-1200)));
        assert_eq!(f64_to_i64(2.5), Ok(2));
        assert_eq!(f64_to_i64(3.5), Ok(4));
        assert!(f64_to_i64(1e19).is_err());
        assert!(f64_to_i64(f64::NAN).is_err());
    }

    #[test]
    fn text_functions_count_characters() {
        assert_eq!(substr(b"hello", 2, Some(3)), Ok(&b"ell"[..]));
        assert_eq!(substr(b"hello", 0, Some(3)), Ok(&b"he"[..]));
        assert_eq!(substr(b"hello", -5, Some(3)), Ok(&b""[..]));
        assert_eq!(substr("héllo".as_bytes(), 2, Some(2)), Ok("él".as_bytes()));
        assert!(substr(b"x", 1, Some(-1)).is_err());
        assert_eq!(left(b"abcde", 2), b"ab");
        assert_eq!(left(b"abcde", -2), b"abc");
        assert_eq!(right(b"abcde", 2), b"de");
        assert_eq!(right(b"abcde", -2), b"cde");
        assert_eq!(trim(b"xxaxx", Some(b"x"), true, false), b"axx");
        assert_eq!(trim(b"  a  ", None, true, true), b"a");
        assert_eq!(strpos("héllo".as_bytes(), b"llo"), 3);
        assert_eq!(strpos(b"abc", b"z"), 0);
        assert_eq!(replace(b"a.b.c", b".", b"--"), b"a--b--c".to_vec());
        assert_eq!(split_part(b"a,b,c", b",", 2), Ok(&b"b"[..]));
        assert_eq!(split_part(b"a,b,c", b",", -1), Ok(&b"c"[..]));
        assert_eq!(split_part(b"a,b,c", b",", 9), Ok(&b""[..]));
        assert!(split_part(b"a", b",", 0).is_err());
        assert_eq!(string_to_array(b"", Some(b","), None), vec![]);
        assert_eq!(
            string_to_array(b"a,,b", Some(b","), Some(b"")),
            vec![Some(b"a".to_vec()), None, Some(b"b".to_vec())]
        );
    }

    #[test]
    fn like_patterns() {
        let m = |p: &str, s: &str| {
            LikePattern::new(p.as_bytes(), Some(b'\\'), false).map(|l| l.matches(s.as_bytes()))
        };
        assert_eq!(m("a%", "abc"), Ok(true));
        assert_eq!(m("%b%", "abc"), Ok(true));
        assert_eq!(m("a_c", "abc"), Ok(true));
        assert_eq!(m("a_c", "ac"), Ok(false));
        assert_eq!(m("_", "é"), Ok(true));
        assert_eq!(m("%%%a", "bbba"), Ok(true));
        assert_eq!(m("a\\%", "a%"), Ok(true));
        assert_eq!(m("a\\%", "ab"), Ok(false));
        assert_eq!(m("%a%b%c", "xaybzc"), Ok(true));
        assert_eq!(m("%a%b%c", "xaybz"), Ok(false));
        assert!(m("a\\", "a").is_err());
        let il = LikePattern::new(b"AB%", None, true).map(|l| l.matches(b"abc"));
        assert_eq!(il, Ok(true));
    }
}
