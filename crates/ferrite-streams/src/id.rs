//! Stream IDs (`<ms>-<seq>`, two u64s ordered lexicographically) and the
//! Redis 7.0 rules for parsing them from command arguments.
//!
//! Every parser here mirrors a specific Redis function so the server can keep
//! Redis's exact acceptance set:
//!
//! | function                | Redis                                              | used by |
//! |-------------------------|----------------------------------------------------|---------|
//! | [`parse_strict_id`]     | `streamParseStrictIDOrReply`                       | XDEL, XSETID, XGROUP, XCLAIM, XREAD, MINID |
//! | [`parse_id`]            | `streamParseIDOrReply` (accepts `-` / `+`)         | plain range bounds |
//! | [`parse_xadd_id`]       | XADD's `*` fast path + strict parse with `seq_given` | XADD |
//! | [`parse_interval_id`]   | `streamParseIntervalIDOrReply` (`(` exclusive)     | XRANGE, XREVRANGE, XPENDING, XAUTOCLAIM |
//! | [`parse_range_start`] / [`parse_range_end`] | the interval parse plus `streamIncrID` / `streamDecrID` | XRANGE, XREVRANGE, XPENDING |
//! | [`string2ull`]          | `string2ull` (util.c), including the `strtoull` fallback | all of the above |
//!
//! Quirks reproduced on purpose (all checked against redis-server 7.0.15):
//! - Arguments longer than 127 bytes are invalid, even `000…0`.
//! - Parsing is C-string based: an embedded NUL ends the ID (`"7\0abc"` is `7-0`),
//!   but the 127-byte limit counts the whole argument.
//! - Numbers go through `string2ll` first, then `strtoull`, so leading whitespace,
//!   a leading `+`, leading zeros and 21+ digit zero-padded numbers are accepted
//!   (`" 5"`, `"+5"`, `"05"`), trailing junk is not (`"5 "`), negative numbers are
//!   rejected by `string2ll` but `strtoull` wraps them when it is reached
//!   (`"5- -1"` is `5-18446744073709551615`; `"5--0"` is `5-0`).
//! - The first `-` splits ms from seq, so a negative ms is never accepted.

use std::fmt;

/// A stream entry ID. Ordering is (ms, seq), as in Redis.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: never a valid entry ID (XADD rejects it), used as "none".
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// `18446744073709551615-18446744073709551615`: the last possible ID.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// True for `0-0`.
    pub const fn is_zero(&self) -> bool {
        self.ms == 0 && self.seq == 0
    }

    /// The next ID (`streamIncrID`): seq+1, rolling over into ms+1.
    /// `None` for [`StreamId::MAX`].
    pub const fn incr(self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            if self.ms == u64::MAX {
                None
            } else {
                Some(StreamId::new(self.ms + 1, 0))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous ID (`streamDecrID`): seq-1, borrowing from ms.
    /// `None` for [`StreamId::MIN`].
    pub const fn decr(self) -> Option<StreamId> {
        if self.seq == 0 {
            if self.ms == 0 {
                None
            } else {
                Some(StreamId::new(self.ms - 1, u64::MAX))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Longest text of an ID: `<u64>-<u64>`.
pub const ID_TEXT_MAX: usize = 41;

impl StreamId {
    /// The ID's text (`<ms>-<seq>`, as Display) written at the start of
    /// `buf`; returns its length. Digits are written directly: XADD
    /// formats an ID per call, and `fmt`'s machinery cost more than the
    /// digits.
    pub fn write_text(&self, buf: &mut [u8; ID_TEXT_MAX]) -> usize {
        let mut n = push_u64(buf, 0, self.ms);
        buf[n] = b'-';
        n += 1;
        push_u64(buf, n, self.seq)
    }
}

/// Decimal digits of `v` at `buf[at..]`; returns the end.
fn push_u64(buf: &mut [u8; ID_TEXT_MAX], at: usize, v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let digits = u64_digits(v, &mut tmp);
    buf[at..at + digits.len()].copy_from_slice(digits);
    at + digits.len()
}

/// Decimal digits of `v`, written at the end of `buf` without allocating
/// (IDs and reply headers are on the hot path).
pub fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    // Two digits per division (a millisecond ID has 13): "00" to "99".
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while v >= 100 {
        let p = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    }
    if v >= 10 {
        let p = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    &buf[i..]
}

/// The ID argument of XADD.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum XaddId {
    /// `*`: time-based ID from the caller's clock (`streamNextID`).
    Auto,
    /// `<ms>-*`: explicit ms, sequence chosen by the stream.
    AutoSeq(u64),
    /// `<ms>-<seq>` or `<ms>` (seq 0).
    Explicit(StreamId),
}

/// An ID argument that Redis rejects with
/// `ERR Invalid stream ID specified as stream command argument`.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ParseIdError {
    Invalid,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid stream ID")
    }
}

impl std::error::Error for ParseIdError {}

/// Errors of range bounds (XRANGE / XREVRANGE / XPENDING / XAUTOCLAIM).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum RangeIdError {
    /// Unparsable bound: `ERR Invalid stream ID specified as stream command argument`.
    Invalid,
    /// Exclusive start `(MAX` cannot be incremented:
    /// `ERR invalid start ID for the interval`.
    InvalidStart,
    /// Exclusive end `(0-0` cannot be decremented:
    /// `ERR invalid end ID for the interval`.
    InvalidEnd,
}

impl fmt::Display for RangeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RangeIdError::Invalid => "invalid stream ID",
            RangeIdError::InvalidStart => "invalid start ID for the interval",
            RangeIdError::InvalidEnd => "invalid end ID for the interval",
        })
    }
}

impl std::error::Error for RangeIdError {}

impl From<ParseIdError> for RangeIdError {
    fn from(_: ParseIdError) -> Self {
        RangeIdError::Invalid
    }
}

/// Longest accepted ID argument: Redis copies it into a `char[128]`.
pub const MAX_ID_ARG_LEN: usize = 127;

/// `LONG_STR_SIZE` in Redis: strings this long or longer never pass `string2ll`.
const LONG_STR_SIZE: usize = 21;

/// The bytes a C function would see: everything before the first NUL.
fn c_str(arg: &[u8]) -> &[u8] {
    match arg.iter().position(|&b| b == 0) {
        Some(nul) => &arg[..nul],
        None => arg,
    }
}

/// Redis's `string2ll`: the canonical decimal form of an i64 only
/// (no sign other than a leading `-`, no leading zeros, no `-0`, no spaces,
/// at most 20 bytes). Listpack's `lpStringToInt64` follows the same rules.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    // First digit 1-9 (so no leading zeros and no bare "-").
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    if digits.len() <= 19 {
        // 19 digits are below 2^64: no overflow check per digit.
        for &c in digits {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u64::from(d);
        }
    } else {
        for &c in digits {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        }
    }
    if negative {
        // Magnitude up to 2^63 is representable as i64::MIN.
        if v > (i64::MAX as u64) + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// glibc `isspace` in the C locale.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtoull(s, &end, 10)` accepted only if it consumed the whole (non-empty)
/// string without ERANGE, as Redis checks it. A `-` sign negates modulo 2^64.
fn strtoull_full(s: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let digits = &s[i..];
    // No digits: strtoull leaves `end` at the start, which Redis rejects.
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            // Trailing junk: `*endptr != '\0'`.
            return None;
        }
        // Overflow of the magnitude is ERANGE, whatever the sign.
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if negative { v.wrapping_neg() } else { v })
}

/// Redis's `string2ull` (util.c) on a C string: `string2ll` first (negative
/// results rejected), then the `strtoull` fallback, which is what accepts
/// values above `i64::MAX` and the lenient forms listed in the module docs.
pub fn string2ull(s: &[u8]) -> Option<u64> {
    let s = c_str(s);
    if let Some(v) = string2ll(s) {
        return u64::try_from(v).ok();
    }
    strtoull_full(s)
}

/// `streamGenericParseIDOrReply`. `seq_star` enables the `<ms>-*` form and
/// reports it as `Ok((id, false))`; otherwise the bool is `true` (seq given or
/// filled from `missing_seq`).
fn generic_parse(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    seq_star: bool,
) -> Result<(StreamId, bool), ParseIdError> {
    if arg.len() > MAX_ID_ARG_LEN {
        return Err(ParseIdError::Invalid);
    }
    let buf = c_str(arg);
    match buf {
        b"-" | b"+" if strict => return Err(ParseIdError::Invalid),
        b"-" => return Ok((StreamId::MIN, true)),
        b"+" => return Ok((StreamId::MAX, true)),
        _ => {}
    }
    match buf.iter().position(|&b| b == b'-') {
        None => {
            let ms = string2ull(buf).ok_or(ParseIdError::Invalid)?;
            Ok((StreamId::new(ms, missing_seq), true))
        }
        Some(dash) => {
            let ms = string2ull(&buf[..dash]).ok_or(ParseIdError::Invalid)?;
            let seq_part = &buf[dash + 1..];
            if seq_star && seq_part == b"*" {
                return Ok((StreamId::new(ms, 0), false));
            }
            let seq = string2ull(seq_part).ok_or(ParseIdError::Invalid)?;
            Ok((StreamId::new(ms, seq), true))
        }
    }
}

/// `streamParseStrictIDOrReply` without `seq_given`: `<ms>[-<seq>]`, a missing
/// seq becomes `missing_seq`; `-`, `+` and `<ms>-*` are invalid.
pub fn parse_strict_id(arg: &[u8], missing_seq: u64) -> Result<StreamId, ParseIdError> {
    generic_parse(arg, missing_seq, true, false).map(|(id, _)| id)
}

/// `streamParseIDOrReply`: like [`parse_strict_id`] but `-` is `0-0` and `+`
/// is [`StreamId::MAX`].
pub fn parse_id(arg: &[u8], missing_seq: u64) -> Result<StreamId, ParseIdError> {
    generic_parse(arg, missing_seq, false, false).map(|(id, _)| id)
}

/// XADD's ID argument: `*` (C-string compare, so `"*\0x"` counts), `<ms>-*`,
/// or a strict `<ms>[-<seq>]` (missing seq = 0). `0-0` parses fine here;
/// rejecting it is [`crate::stream::Stream::add`]'s job (`AddError::IdZero`).
pub fn parse_xadd_id(arg: &[u8]) -> Result<XaddId, ParseIdError> {
    if c_str(arg) == b"*" {
        return Ok(XaddId::Auto);
    }
    let (id, seq_given) = generic_parse(arg, 0, true, true)?;
    Ok(if seq_given {
        XaddId::Explicit(id)
    } else {
        XaddId::AutoSeq(id.ms)
    })
}

/// `streamParseIntervalIDOrReply`: returns the ID and whether it was
/// exclusive. An argument longer than one byte starting with `(` is exclusive
/// and its remainder is parsed strictly (so `(-` and `(+` are invalid); any
/// other argument is parsed non-strictly (`-`, `+` allowed; `(` alone is invalid).
pub fn parse_interval_id(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), ParseIdError> {
    if arg.len() > 1 && arg[0] == b'(' {
        parse_strict_id(&arg[1..], missing_seq).map(|id| (id, true))
    } else {
        parse_id(arg, missing_seq).map(|id| (id, false))
    }
}

/// Lower bound of an interval (XRANGE's start, XREVRANGE's last argument,
/// XPENDING/XAUTOCLAIM start): missing seq = 0; an exclusive bound is
/// incremented, failing with [`RangeIdError::InvalidStart`] at MAX.
/// Redis parses and checks the start completely before the end.
pub fn parse_range_start(arg: &[u8]) -> Result<StreamId, RangeIdError> {
    let (id, exclusive) = parse_interval_id(arg, 0)?;
    if exclusive {
        id.incr().ok_or(RangeIdError::InvalidStart)
    } else {
        Ok(id)
    }
}

/// Upper bound of an interval: missing seq = `u64::MAX`; an exclusive bound
/// is decremented, failing with [`RangeIdError::InvalidEnd`] at `0-0`.
pub fn parse_range_end(arg: &[u8]) -> Result<StreamId, RangeIdError> {
    let (id, exclusive) = parse_interval_id(arg, u64::MAX)?;
    if exclusive {
        id.decr().ok_or(RangeIdError::InvalidEnd)
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAXU: u64 = u64::MAX;

    #[test]
    fn u64_digits_match_display() {
        let mut vals = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, MAXU, MAXU - 1];
        let mut p = 1u64;
        while let Some(n) = p.checked_mul(10) {
            vals.extend([p - 1, p, p + 1, n - 1]);
            p = n;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push(x >> (x % 64));
        }
        for v in vals {
            let mut buf = [0u8; 20];
            assert_eq!(u64_digits(v, &mut buf), v.to_string().as_bytes(), "{v}");
        }
    }

    #[test]
    fn write_text_matches_display() {
        for id in [
            StreamId::new(0, 0),
            StreamId::new(9, 10),
            StreamId::new(1_733_420_000_123, 7),
            StreamId::new(MAXU, MAXU),
            StreamId::new(10, MAXU - 1),
        ] {
            let mut buf = [0u8; ID_TEXT_MAX];
            let n = id.write_text(&mut buf);
            assert_eq!(&buf[..n], id.to_string().as_bytes());
        }
    }

    fn strict(s: &str) -> Option<StreamId> {
        parse_strict_id(s.as_bytes(), 0).ok()
    }

    fn id(ms: u64, seq: u64) -> Option<StreamId> {
        Some(StreamId::new(ms, seq))
    }

    #[test]
    fn display_and_order() {
        assert_eq!(StreamId::new(5, 7).to_string(), "5-7");
        assert_eq!(
            StreamId::MAX.to_string(),
            "18446744073709551615-18446744073709551615"
        );
        assert!(StreamId::new(1, MAXU) < StreamId::new(2, 0));
        assert!(StreamId::MIN < StreamId::new(0, 1));
        assert!(StreamId::MIN.is_zero());
    }

    #[test]
    fn incr_decr() {
        assert_eq!(StreamId::new(1, 1).incr(), id(1, 2));
        assert_eq!(StreamId::new(1, MAXU).incr(), id(2, 0));
        assert_eq!(StreamId::MAX.incr(), None);
        assert_eq!(StreamId::new(1, 1).decr(), id(1, 0));
        assert_eq!(StreamId::new(2, 0).decr(), id(1, MAXU));
        assert_eq!(StreamId::MIN.decr(), None);
        assert_eq!(StreamId::new(MAXU, 0).decr(), id(MAXU - 1, MAXU));
    }

    #[test]
    fn string2ll_rules() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(string2ll(b"9223372036854775808"), None);
        assert_eq!(string2ll(b"-9223372036854775809"), None);
        for bad in ["", "-", "-0", "00", "01", "+1", " 1", "1 ", "1a", "0x1"] {
            assert_eq!(string2ll(bad.as_bytes()), None, "{bad:?}");
        }
        // 21 bytes is never an integer, even a valid-looking one.
        assert_eq!(string2ll(b"-00000000000000000001"), None);
    }

    #[test]
    fn string2ull_fallback() {
        assert_eq!(string2ull(b"18446744073709551615"), Some(MAXU));
        assert_eq!(string2ull(b"18446744073709551616"), None);
        assert_eq!(string2ull(b"9223372036854775808"), Some(1 << 63));
        assert_eq!(string2ull(b"-1"), None); // string2ll succeeds, negative rejected
        assert_eq!(string2ull(b" -1"), Some(MAXU)); // strtoull wraps
        assert_eq!(string2ull(b"-0"), Some(0));
        assert_eq!(string2ull(b"-18446744073709551615"), Some(1));
        assert_eq!(string2ull(b"-18446744073709551616"), None);
        assert_eq!(string2ull(b"+5"), Some(5));
        assert_eq!(string2ull(b"\t\n\x0b\x0c\r 5"), Some(5));
        assert_eq!(string2ull(b"000000000000000000000000001"), Some(1));
        assert_eq!(string2ull(b"5 "), None);
        assert_eq!(string2ull(b""), None);
        assert_eq!(string2ull(b" "), None);
        assert_eq!(string2ull(b"+"), None);
        assert_eq!(string2ull(b"+-1"), None);
        assert_eq!(string2ull(b"7\0abc"), Some(7));
    }

    #[test]
    fn strict_parse_matches_redis_7_0_15() {
        // Every case below was run through XDEL / XSETID on redis-server 7.0.15.
        assert_eq!(strict("5"), id(5, 0));
        assert_eq!(strict(" 5"), id(5, 0));
        assert_eq!(strict("+5"), id(5, 0));
        assert_eq!(strict("05"), id(5, 0));
        assert_eq!(strict("00"), id(0, 0));
        assert_eq!(strict("\t7"), id(7, 0));
        assert_eq!(strict("\x0b7"), id(7, 0));
        assert_eq!(strict("7\0abc"), id(7, 0));
        assert_eq!(strict("5--0"), id(5, 0));
        assert_eq!(strict("5- -1"), id(5, MAXU));
        assert_eq!(strict("18446744073709551615"), id(MAXU, 0));
        assert_eq!(strict("9223372036854775808-1"), id(1 << 63, 1));
        assert_eq!(strict("000000000000000000001"), id(1, 0));
        for bad in [
            "5 ",
            "-5",
            "-0",
            "5--1",
            " -1",
            "-",
            "+",
            "(",
            "(-",
            "(+",
            "(5",
            "5-*",
            "*",
            "18446744073709551616",
            "-18446744073709551615",
            "-9223372036854775809",
            "0x10",
            "1e3",
            "",
            "-1-5",
            "5-",
            "-5-",
            "5-0-1",
        ] {
            assert_eq!(strict(bad), None, "{bad:?}");
        }
        assert_eq!(parse_strict_id(b"7", 42), Ok(StreamId::new(7, 42)));
    }

    #[test]
    fn length_limit_counts_whole_argument() {
        let zeros127 = vec![b'0'; 127];
        let zeros128 = vec![b'0'; 128];
        assert_eq!(parse_strict_id(&zeros127, 0), Ok(StreamId::MIN));
        assert_eq!(parse_strict_id(&zeros128, 0), Err(ParseIdError::Invalid));
        let mut nul127 = vec![b'0'; 125];
        nul127.extend_from_slice(b"\0x");
        assert_eq!(parse_strict_id(&nul127, 0), Ok(StreamId::MIN));
        let mut nul128 = vec![b'1'];
        nul128.extend_from_slice(&[0u8; 127]);
        assert_eq!(parse_strict_id(&nul128, 0), Err(ParseIdError::Invalid));
        assert_eq!(parse_strict_id(&[b'1'; 127], 0), Err(ParseIdError::Invalid)); // overflow
        let mut long_seq = b"1-".to_vec();
        long_seq.extend_from_slice(&[b'0'; 125]);
        assert_eq!(parse_strict_id(&long_seq, 9), Ok(StreamId::new(1, 0)));
        long_seq.push(b'0');
        assert_eq!(parse_strict_id(&long_seq, 9), Err(ParseIdError::Invalid));
    }

    #[test]
    fn non_strict_parse() {
        assert_eq!(parse_id(b"-", 7), Ok(StreamId::MIN));
        assert_eq!(parse_id(b"+", 7), Ok(StreamId::MAX));
        assert_eq!(parse_id(b"+\0x", 7), Ok(StreamId::MAX));
        assert_eq!(parse_id(b"5", 7), Ok(StreamId::new(5, 7)));
        assert_eq!(parse_id(b"(", 0), Err(ParseIdError::Invalid));
        assert_eq!(parse_id(b"--", 0), Err(ParseIdError::Invalid));
    }

    #[test]
    fn xadd_ids() {
        let p = |s: &str| parse_xadd_id(s.as_bytes());
        assert_eq!(p("*"), Ok(XaddId::Auto));
        assert_eq!(p("*\0x"), Ok(XaddId::Auto));
        assert_eq!(p("5-*"), Ok(XaddId::AutoSeq(5)));
        assert_eq!(p(" 7-*"), Ok(XaddId::AutoSeq(7)));
        assert_eq!(p("8-*\0x"), Ok(XaddId::AutoSeq(8)));
        assert_eq!(p("0-*"), Ok(XaddId::AutoSeq(0)));
        assert_eq!(p("5"), Ok(XaddId::Explicit(StreamId::new(5, 0))));
        assert_eq!(p("0-0"), Ok(XaddId::Explicit(StreamId::MIN)));
        assert_eq!(p("5-3"), Ok(XaddId::Explicit(StreamId::new(5, 3))));
        for bad in ["+", "-", "*-*", "7-* ", "**", "5-**", "", "(5"] {
            assert_eq!(p(bad), Err(ParseIdError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn interval_bounds() {
        let s = |x: &str| parse_range_start(x.as_bytes());
        let e = |x: &str| parse_range_end(x.as_bytes());
        assert_eq!(s("-"), Ok(StreamId::MIN));
        assert_eq!(s("+"), Ok(StreamId::MAX));
        assert_eq!(e("-"), Ok(StreamId::MIN));
        assert_eq!(e("+"), Ok(StreamId::MAX));
        assert_eq!(s("5"), Ok(StreamId::new(5, 0)));
        assert_eq!(e("5"), Ok(StreamId::new(5, MAXU)));
        assert_eq!(s("(5"), Ok(StreamId::new(5, 1)));
        assert_eq!(e("(5"), Ok(StreamId::new(5, MAXU - 1)));
        assert_eq!(s("(5-3"), Ok(StreamId::new(5, 4)));
        assert_eq!(e("(5-0"), Ok(StreamId::new(4, MAXU)));
        assert_eq!(s("(18446744073709551615"), Ok(StreamId::new(MAXU, 1)));
        assert_eq!(e("(0"), Ok(StreamId::new(0, MAXU - 1)));
        assert_eq!(
            s("(18446744073709551615-18446744073709551615"),
            Err(RangeIdError::InvalidStart)
        );
        assert_eq!(e("(0-0"), Err(RangeIdError::InvalidEnd));
        // Exclusive start at MAX fails only on the start side.
        assert_eq!(
            e("(18446744073709551615-18446744073709551615"),
            Ok(StreamId::new(MAXU, MAXU - 1))
        );
        assert_eq!(s("(0-0"), Ok(StreamId::new(0, 1)));
        for bad in ["(", "(-", "(+", "((5", "( 5x", "x", ""] {
            assert_eq!(s(bad), Err(RangeIdError::Invalid), "{bad:?}");
            assert_eq!(e(bad), Err(RangeIdError::Invalid), "{bad:?}");
        }
        assert_eq!(s("( 5"), Ok(StreamId::new(5, 1)));
        // The 127-byte limit applies to the part after '(' for exclusive bounds.
        let mut excl = b"(".to_vec();
        excl.extend_from_slice(&[b'0'; 127]);
        assert_eq!(parse_range_start(&excl), Ok(StreamId::new(0, 1)));
        excl.push(b'0');
        assert_eq!(parse_range_start(&excl), Err(RangeIdError::Invalid));
        assert_eq!(parse_interval_id(b"(7", 3), Ok((StreamId::new(7, 3), true)));
        assert_eq!(parse_interval_id(b"7", 3), Ok((StreamId::new(7, 3), false)));
    }
}
