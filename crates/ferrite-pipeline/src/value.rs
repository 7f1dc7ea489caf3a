//! Runtime values, the byte-string ↔ value conversions and the output format.
//!
//! Stream fields are bytes. A field is parsed as a number (or a boolean) only
//! where an expression uses it as one, once per entry; a missing or
//! unparsable value is NULL. Output follows PostgreSQL's text output: integers
//! in decimal, floats in their shortest round-trip form (`1` for 1.0,
//! exponent form outside `1e-5 ≤ |x| < 1e16`), `true`/`false`, and NULL
//! leaves its field out.

use std::borrow::Cow;
use std::cmp::Ordering;

/// A value during evaluation. Text borrows from the entry where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (`INT`/`BIGINT`).
    Int(i64),
    /// A double (`DOUBLE`/`FLOAT`).
    Float(f64),
    /// A byte string (`TEXT`); not required to be UTF-8.
    Text(Cow<'a, [u8]>),
    /// A boolean.
    Bool(bool),
}

impl Value<'_> {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An owned copy, free of the entry's lifetime.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Bool(b) => Value::Bool(b),
        }
    }

    /// The value's text output, or `None` for NULL (its field is left out).
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Null => None,
            Value::Int(i) => Some(i.to_string().into_bytes()),
            Value::Float(f) => Some(format_float(*f).into_bytes()),
            Value::Text(t) => Some(t.to_vec()),
            Value::Bool(b) => Some(if *b {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            }),
        }
    }
}

/// A field read as a number: parsed once per entry for the fields that
/// expressions use numerically.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Num {
    /// Missing or unparsable.
    #[default]
    Null,
    /// Parsed as a 64-bit integer.
    Int(i64),
    /// Not an integer but a valid double.
    Float(f64),
}

impl Num {
    /// The number as a [`Value`].
    #[inline]
    pub fn value(self) -> Value<'static> {
        match self {
            Num::Null => Value::Null,
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => Value::Float(f),
        }
    }
}

/// Parses a field as a number: an integer if it is one (surrounding ASCII
/// whitespace allowed, as PostgreSQL's `int8in`), else a double
/// (`1.5`, `-2e3`, `Infinity`, `NaN`), else NULL.
pub fn parse_num(b: &[u8]) -> Num {
    let b = b.trim_ascii();
    if b.is_empty() || b.len() > 400 {
        return Num::Null;
    }
    if let Some(n) = parse_plain(b) {
        return n;
    }
    let Ok(s) = std::str::from_utf8(b) else {
        return Num::Null;
    };
    if let Ok(i) = s.parse::<i64>() {
        return Num::Int(i);
    }
    // Rust's float grammar accepts "inf"/"infinity"/"nan" in any case, as
    // PostgreSQL's float8in does; it refuses hex and underscores.
    match s.parse::<f64>() {
        Ok(f) => Num::Float(f),
        Err(_) => Num::Null,
    }
}

/// Exact powers of ten as doubles (10^22 is the largest).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The common spellings, without the general parsers: `[+-]digits` that
/// fits an i64, and `[+-]digits.digits` with at most 15 digits in all
/// (so the digits are an integer below 2^53 and the scale an exact power
/// of ten: one correctly rounded division gives the double `str::parse`
/// gives). `None`: anything else, for [`parse_num`]'s general path.
#[inline]
fn parse_plain(b: &[u8]) -> Option<Num> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut m: u64 = 0;
    let mut frac: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => m = m * 10 + u64::from(c - b'0'),
            b'.' if frac.is_none() && i > 0 && i + 1 < digits.len() => {
                frac = Some(digits.len() - i - 1)
            }
            _ => return None,
        }
    }
    // At most 18 digits: m < 10^18, no overflow.
    match frac {
        None => {
            let m = m as i64;
            Some(Num::Int(if neg { -m } else { m }))
        }
        Some(f) if digits.len() - 1 <= 15 => {
            let x = m as f64 / POW10[f];
            Some(Num::Float(if neg { -x } else { x }))
        }
        Some(_) => None,
    }
}

/// Parses a field as a boolean with PostgreSQL's `boolin` spellings
/// (`t`, `true`, `yes`, `on`, `1` and their negatives, any case), else NULL.
pub fn parse_bool(b: &[u8]) -> Option<bool> {
    let b = b.trim_ascii();
    if b.is_empty() || b.len() > 5 {
        return None;
    }
    let mut lower = [0u8; 5];
    let lower = &mut lower[..b.len()];
    lower.copy_from_slice(b);
    lower.make_ascii_lowercase();
    match &*lower {
        b"t" | b"tr" | b"tru" | b"true" | b"y" | b"ye" | b"yes" | b"on" | b"1" => Some(true),
        b"f" | b"fa" | b"fal" | b"fals" | b"false" | b"n" | b"no" | b"of" | b"off" | b"0" => {
            Some(false)
        }
        _ => None,
    }
}

/// Writes the value's text output (as [`Value::to_bytes`]) at the end of
/// `out`; false for NULL (nothing written).
pub fn write_value(v: &Value<'_>, out: &mut bytes::BytesMut) -> bool {
    match v {
        Value::Null => return false,
        Value::Int(i) => out.extend_from_slice(int_digits(*i, &mut [0; 20])),
        Value::Float(f) => write_float(*f, out),
        Value::Text(t) => out.extend_from_slice(t),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
    }
    true
}

/// `x` in decimal (as `{x}` formats it) in the end of `buf`, without the
/// formatting machinery: results write several integers each. The digits
/// are the stream IDs' writer's ([`ferrite_streams::id::u64_digits`]).
pub(crate) fn int_digits(x: i64, buf: &mut [u8; 20]) -> &[u8] {
    // 20 bytes hold i64::MIN's 19 digits and its sign.
    let at = buf.len() - ferrite_streams::id::u64_digits(x.unsigned_abs(), buf).len();
    if x < 0 {
        buf[at - 1] = b'-';
        return &buf[at - 1..];
    }
    &buf[at..]
}

/// Whether the shortest digits of `a` (positive, normal, below 2^49) might
/// be a tie or sit on a rounding bound, where ryu and Display may choose
/// differently: two shortest candidates (16 or 17 digits) are equally
/// near only when the exact value has 17 or 18 significant digits, and a
/// candidate is a bound (halfway to the next double) only when that bound
/// has at most 17. A value with a full mantissa of fraction bits (most
/// computed results) has far more; integers have at most 15 and their
/// bounds a full mantissa of fraction bits.
fn ryu_may_differ(a: f64) -> bool {
    let bits = a.to_bits();
    let m = (bits & ((1 << 52) - 1)) | (1 << 52);
    let e = ((bits >> 52) & 0x7ff) as i32 - 1075;
    // Significant decimal digits of n * 2^-k, when at most 18 (None: more).
    let digits = |n: u64, k: i32| -> Option<u32> {
        if n == 0 {
            return Some(1);
        }
        let tz = n.trailing_zeros() as i32;
        let (n, k) = (n >> tz, k - tz);
        if k <= 0 {
            // An integer below 2^51: at most 16 digits.
            return Some((n << -k).checked_ilog10().map_or(1, |d| d + 1));
        }
        // 5^27 > 10^18: n * 5^k then has at least 19 digits.
        if k > 26 {
            return None;
        }
        let x = u128::from(n) * 5u128.pow(k as u32);
        let d = x.checked_ilog10().map_or(1, |d| d + 1);
        (d <= 18).then_some(d)
    };
    if matches!(digits(m, -e), Some(d) if d >= 17) {
        return true;
    }
    // The bounds halfway to the neighbours (the lower one nearer when `a`
    // is a power of two).
    let near = |n: u64, k: i32| matches!(digits(n, k), Some(d) if d <= 17);
    near(2 * m + 1, 1 - e) || near(2 * m - 1, 1 - e) || (m == 1 << 52 && near(4 * m - 1, 2 - e))
}

/// 2^49: below it [`write_float`] takes ryu's digits.
const RYU_BELOW: f64 = 562_949_953_421_312.0;

fn write_float(f: f64, out: &mut bytes::BytesMut) {
    use std::fmt::Write as _;
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let a = f.abs();
        if a == 0.0 || ((1e-5..RYU_BELOW).contains(&a) && !ryu_may_differ(a)) {
            // ryu's digits are Display's here: both write the shortest
            // digits that read back, the closest to the value when several
            // do (ties and bounds, where the two differ, are left to
            // Display by ryu_may_differ). In this range ryu writes no
            // exponent, and an integral value as "3.0" where Display
            // writes "3".
            let mut b = ryu::Buffer::new();
            let t = b.format_finite(f).as_bytes();
            if t.contains(&b'e') {
                let _ = write!(out, "{f}");
            } else {
                out.extend_from_slice(t.strip_suffix(b".0").unwrap_or(t));
            }
        } else if (1e-5..1e16).contains(&a) {
            let _ = write!(out, "{f}");
        } else {
            let _ = write!(out, "{f:e}");
        }
    }
}

/// Shortest round-trip text of a double; PostgreSQL spellings for the
/// non-finite values.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = f.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        // NOTE: Display never uses an exponent and prints 1.0 as "1".
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

/// Total order used by comparisons of two numbers (PostgreSQL orders NaN
/// above every other value and equal to itself).
#[inline]
pub fn cmp_f64(a: f64, b: f64) -> Ordering {
    match a.partial_cmp(&b) {
        Some(o) => o,
        None => match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            _ => Ordering::Less,
        },
    }
}

/// Compares two numbers; integers exactly, mixed pairs as doubles.
#[inline]
pub fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Int(x), Num::Float(y)) => Some(cmp_f64(x as f64, y)),
        (Num::Float(x), Num::Int(y)) => Some(cmp_f64(x, y as f64)),
        (Num::Float(x), Num::Float(y)) => Some(cmp_f64(x, y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_digits_format_as_display() {
        for x in [
            0,
            1,
            -1,
            9,
            10,
            -10,
            12345,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            assert_eq!(int_digits(x, &mut [0; 20]), x.to_string().as_bytes());
        }
    }

    /// `parse_plain` agrees bit for bit with the general parsers wherever
    /// it answers.
    #[test]
    fn plain_numbers_parse_as_the_general_path() {
        let general = |s: &str| match s.parse::<i64>() {
            Ok(i) => Num::Int(i),
            Err(_) => s.parse::<f64>().map_or(Num::Null, Num::Float),
        };
        let same = |a: Num, b: Num| match (a, b) {
            (Num::Float(x), Num::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        };
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "+0",
            "0.0",
            "-0.0",
            "+1.5",
            "1.",
            ".5",
            "-",
            "+",
            "1.2.3",
            "00.5",
            "123456789012345678",
            "999999999999999999",
            "1234567890123.45",
            "123456789012.3456",
            "0.000000000000001",
            "9007199254740993",
            "0.1",
            "0.3",
            "2.675",
            "1e5",
            "12a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A deterministic spread of prices and sizes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int = x % 10u64.pow((x >> 60) as u32 % 16);
            let f = (x >> 40) % 12;
            let s = format!("{int}");
            let s = if f == 0 || s.len() as u64 <= f {
                s
            } else {
                format!(
                    "{}.{}",
                    &s[..s.len() - f as usize],
                    &s[s.len() - f as usize..]
                )
            };
            cases.push(if x & 1 == 0 {
                s.clone()
            } else {
                format!("-{s}")
            });
        }
        let mut answered = 0;
        for c in &cases {
            if let Some(n) = parse_plain(c.as_bytes()) {
                answered += 1;
                assert!(same(n, general(c)), "{c}: {n:?} vs {:?}", general(c));
            }
            assert!(same(parse_num(c.as_bytes()), general(c)), "{c}");
        }
        assert!(answered > 10_000);
    }

    #[test]
    fn numbers_parse_once_as_int_or_float() {
        assert_eq!(parse_num(b"42"), Num::Int(42));
        assert_eq!(parse_num(b" -7 "), Num::Int(-7));
        assert_eq!(parse_num(b"1.5"), Num::Float(1.5));
        assert_eq!(parse_num(b"1e3"), Num::Float(1000.0));
        assert_eq!(parse_num(b"abc"), Num::Null);
        assert_eq!(parse_num(b""), Num::Null);
        assert_eq!(parse_num(b"\xff\xfe"), Num::Null);
        assert_eq!(parse_num(b"99999999999999999999"), Num::Float(1e20));
    }

    #[test]
    fn booleans_use_postgres_spellings() {
        assert_eq!(parse_bool(b"TRUE"), Some(true));
        assert_eq!(parse_bool(b"off"), Some(false));
        assert_eq!(parse_bool(b"o"), None);
        assert_eq!(parse_bool(b"maybe"), None);
    }

    #[test]
    fn written_floats_are_format_float() {
        // write_float (ryu) against format_float (Display) on edges, on
        // integral values, on decimals like prices, and on random bits.
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            3.0,
            0.1,
            0.5,
            1e-5,
            -1e-5,
            9.99999e-6,
            1e15,
            1e16,
            9999999999999998.0,
            123456789.125,
            2f64.powi(52),
            2f64.powi(53) + 2.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324,
            1e-4,
            0.3,
            2.0 / 3.0,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let r = next();
            xs.push(f64::from_bits(r));
            xs.push((r % 10_000_000) as f64 / 100.0);
            xs.push((r % 1_000_000_000_000) as f64 * 0.001);
            xs.push((r >> 11) as f64 / (1u64 << 53) as f64 * 1e6);
            xs.push((r % 100_000) as f64);
            xs.push((r % (1 << 60)) as f64 / 64.0);
            xs.push(RYU_BELOW - (r % 100_000) as f64 / 8.0);
            // Few fraction bits: exact values of 17 or 18 digits (ties).
            let k = (r % 30) as i32;
            xs.push((r >> 14) as f64 * 2f64.powi(-k));
            xs.push((r >> 30) as f64 * 2f64.powi(-k));
            xs.push(1.0 + 2f64.powi(-k));
        }
        for f in xs {
            let mut out = bytes::BytesMut::new();
            write_value(&Value::Float(f), &mut out);
            assert_eq!(&out[..], format_float(f).as_bytes(), "{f:?}");
        }
    }

    #[test]
    fn floats_print_shortest_round_trip() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_float(1e20), "1e20");
        assert_eq!(format_float(1.5e-7), "1.5e-7");
        assert_eq!(format_float(-0.0), "-0");
        assert_eq!(format_float(f64::INFINITY), "Infinity");
        assert_eq!(format_float(f64::NAN), "NaN");
        for x in [123.456, 1e15 + 0.5, 3.0e-5, 6.02214076e23] {
            assert_eq!(format_float(x).parse::<f64>().ok(), Some(x));
        }
    }
}
