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
    use std::fmt::Write as _;
    match v {
        Value::Null => return false,
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_float(*f, out),
        Value::Text(t) => out.extend_from_slice(t),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
    }
    true
}

fn write_float(f: f64, out: &mut bytes::BytesMut) {
    use std::fmt::Write as _;
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let a = f.abs();
        let _ = if a == 0.0 || (1e-5..1e16).contains(&a) {
            write!(out, "{f}")
        } else {
            write!(out, "{f:e}")
        };
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
