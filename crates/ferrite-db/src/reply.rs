//! Replies and their RESP2/RESP3 encodings.
//!
//! Commands build a [`Reply`] tree; the connection encodes it for the client's
//! protocol version. RESP3-only types degrade the way Redis degrades them for
//! RESP2 clients (maps flatten to arrays, doubles become bulk strings, every
//! null becomes `$-1` or, for [`Reply::NullArray`], `*-1`).

use bytes::{BufMut, Bytes, BytesMut};

/// A reply to a client, independent of the protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(Bytes),
    /// A full error line without the leading `-`, e.g. `ERR syntax error`.
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Null,
    /// RESP2 `*-1`, RESP3 `_`.
    NullArray,
    Array(Vec<Reply>),
    /// RESP3 map; RESP2 flat array of key, value, key, value...
    Map(Vec<(Reply, Reply)>),
    /// RESP3 map; RESP2 array of `[key, value]` pairs (XREAD's shape).
    KeyedArray(Vec<(Reply, Reply)>),
    /// RESP3 set; RESP2 array.
    Set(Vec<Reply>),
    /// RESP3 double; RESP2 bulk string.
    Double(f64),
    /// RESP3 boolean; RESP2 integer 1/0.
    Bool(bool),
    /// RESP3 verbatim string (`txt`); RESP2 bulk string.
    Verbatim(Bytes),
    /// RESP3 push; RESP2 array.
    Push(Vec<Reply>),
    /// Frames already encoded, valid in RESP2 and RESP3 alike (arrays of
    /// bulk strings, such as stream entries), written as they are.
    Raw(Bytes),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple(Bytes::from_static(b"OK"))
    }
    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Bytes::from_static(s.as_bytes()))
    }
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }
    pub fn bulk_str(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }
    /// An error reply from a full message such as `ERR syntax error`.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(Bytes::from(msg.into()))
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
    /// The error code (`ERR`, `WRONGTYPE`, ...), as INFO errorstats counts it.
    pub fn error_code(&self) -> Option<&[u8]> {
        match self {
            Reply::Error(e) => Some(e.split(|&b| b == b' ').next().unwrap_or(e)),
            _ => None,
        }
    }

    /// Append the encoding of this reply for protocol `resp` (2 or 3) to `out`.
    pub fn encode(&self, resp: u8, out: &mut BytesMut) {
        let v3 = resp >= 3;
        match self {
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Error(e) => line(out, b'-', e),
            Reply::Int(n) => header(out, b':', *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null => out.put_slice(if v3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::NullArray => out.put_slice(if v3 { b"_\r\n" } else { b"*-1\r\n" }),
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                for r in items {
                    r.encode(resp, out);
                }
            }
            Reply::Map(pairs) => {
                if v3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(resp, out);
                    v.encode(resp, out);
                }
            }
            Reply::KeyedArray(pairs) => {
                if v3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', pairs.len() as i64);
                }
                for (k, v) in pairs {
                    if !v3 {
                        out.put_slice(b"*2\r\n");
                    }
                    k.encode(resp, out);
                    v.encode(resp, out);
                }
            }
            Reply::Set(items) | Reply::Push(items) => {
                let tag = match (v3, self) {
                    (false, _) => b'*',
                    (true, Reply::Set(_)) => b'~',
                    (true, _) => b'>',
                };
                header(out, tag, items.len() as i64);
                for r in items {
                    r.encode(resp, out);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if v3 {
                    line(out, b',', s.as_bytes());
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Bool(b) => {
                if v3 {
                    out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
                } else {
                    out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" });
                }
            }
            Reply::Raw(b) => out.put_slice(b),
            Reply::Verbatim(b) => {
                if v3 {
                    header(out, b'=', b.len() as i64 + 4);
                    out.put_slice(b"txt:");
                    out.put_slice(b);
                    out.put_slice(b"\r\n");
                } else {
                    bulk(out, b);
                }
            }
        }
    }
}

fn line(out: &mut BytesMut, tag: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(tag);
    // NOTE: a status or error line may not contain CR/LF; Redis replaces them
    // with spaces, and so do we, so a reply can never break the framing.
    for &b in s {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// Encode `entries` (`[id, [field, value, ...]]` each) as one array, straight
/// from the blocks: no per-entry allocation. The same bytes serve RESP2 and RESP3.
/// About how many bytes an entry takes in a reply (ID, field and value
/// headers and bytes): what `max-reply-size` counts.
pub fn entry_reply_size(e: &ferrite_streams::block::EntryRef<'_>) -> usize {
    48 + e
        .pairs()
        .map(|(f, v)| f.len() + v.len() + 16)
        .sum::<usize>()
}

/// The entries of `it` while their reply stays within `max_bytes`: `Err`
/// with the size reached if one more would pass it.
pub fn entries_within<'a, I>(
    it: I,
    max_bytes: u64,
) -> Result<Vec<ferrite_streams::block::EntryRef<'a>>, u64>
where
    I: IntoIterator<Item = ferrite_streams::block::EntryRef<'a>>,
{
    let mut out = Vec::new();
    let mut size = 0u64;
    for e in it {
        size += entry_reply_size(&e) as u64;
        if size > max_bytes {
            return Err(size);
        }
        out.push(e);
    }
    Ok(out)
}

/// The entries of `it` while their reply stays within `max_bytes` (at
/// least one): a shorter batch instead of an error, for readers that read
/// on from the last ID they got (XREAD, XREADGROUP).
pub fn entries_up_to<'a, I>(it: I, max_bytes: u64) -> Vec<ferrite_streams::block::EntryRef<'a>>
where
    I: IntoIterator<Item = ferrite_streams::block::EntryRef<'a>>,
{
    let mut size = 0u64;
    it.into_iter()
        .take_while(|e| {
            let first = size == 0;
            size += entry_reply_size(e) as u64;
            first || size <= max_bytes
        })
        .collect()
}

pub fn encode_entries<'a>(
    entries: impl IntoIterator<Item = ferrite_streams::block::EntryRef<'a>>,
) -> Reply {
    let entries: Vec<_> = entries.into_iter().collect();
    let mut out = BytesMut::with_capacity(16 + entries.len() * 80);
    header(&mut out, b'*', entries.len() as i64);
    for e in &entries {
        out.put_slice(b"*2\r\n");
        let id = e.id();
        let mut idbuf = [0u8; 41];
        let n = write_id(&mut idbuf, id.ms, id.seq);
        bulk(&mut out, &idbuf[..n]);
        let pairs = e.pair_count();
        header(&mut out, b'*', 2 * pairs as i64);
        for (f, v) in e.pairs() {
            bulk(&mut out, f);
            bulk(&mut out, v);
        }
    }
    Reply::Raw(out.freeze())
}

/// `<ms>-<seq>` into `buf` (41 bytes fit two u64s and the dash); returns the length.
fn write_id(buf: &mut [u8; 41], ms: u64, seq: u64) -> usize {
    fn digits(mut v: u64, tmp: &mut [u8; 20]) -> usize {
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                return i;
            }
        }
    }
    let mut tmp = [0u8; 20];
    let a = digits(ms, &mut tmp);
    let la = 20 - a;
    buf[..la].copy_from_slice(&tmp[a..]);
    buf[la] = b'-';
    let b = digits(seq, &mut tmp);
    let lb = 20 - b;
    buf[la + 1..la + 1 + lb].copy_from_slice(&tmp[b..]);
    la + 1 + lb
}

fn header(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    put_i64(out, n);
    out.put_slice(b"\r\n");
}

/// Decimal digits of `n` without allocating (headers are on the hot path).
fn put_i64(out: &mut BytesMut, n: i64) {
    let mut buf = [0u8; 20];
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(ferrite_streams::id::u64_digits(n.unsigned_abs(), &mut buf));
}

fn bulk(out: &mut BytesMut, b: &[u8]) {
    header(out, b'$', b.len() as i64);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Format a double the way Redis 7.0 does for replies: C's `%.17g`
/// (17 significant digits, fixed or scientific by the exponent, trailing
/// zeros trimmed), `inf`/`-inf`, `-0` for negative zero.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{d:.16e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let x: i32 = exp.parse().unwrap_or(0);
    if (-4..17).contains(&x) {
        let prec = usize::try_from(16 - x).unwrap_or(0);
        trim_fraction(format!("{d:.prec$}"))
    } else {
        let sign = if x < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim_fraction(mant.to_string()), x.abs())
    }
}

/// `%g`'s trimming: no trailing zeros after a decimal point, no bare point.
fn trim_fraction(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// Redis's `sdscatrepr`: `"..."` with `\\`, `\"`, `\n`, `\r`, `\t`,
/// `\a`, `\b` escaped and other non-printable bytes as `\xHH`.
pub fn repr(b: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            c if c.is_ascii_graphic() || c == b' ' => out.push(c),
            c => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, v: u8) -> Vec<u8> {
        let mut b = BytesMut::new();
        r.encode(v, &mut b);
        b.to_vec()
    }

    #[test]
    fn doubles_print_as_percent_17g() {
        for (d, want) in [
            (0.1, "0.10000000000000001"),
            (1e20, "1e+20"),
            (1e17, "1e+17"),
            (1e16, "10000000000000000"),
            (-1.5e-7, "-1.4999999999999999e-07"),
            (4.9e-324, "4.9406564584124654e-324"),
            (1e-5, "1.0000000000000001e-05"),
            (1e-4, "0.0001"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (3.0, "3"),
            (-2.5, "-2.5"),
            (-0.0, "-0"),
            (4.4, "4.4000000000000004"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_double(d), want, "{d:e}");
        }
    }

    #[test]
    fn nulls_differ_by_protocol() {
        assert_eq!(enc(&Reply::Null, 2), b"$-1\r\n");
        assert_eq!(enc(&Reply::NullArray, 2), b"*-1\r\n");
        assert_eq!(enc(&Reply::NullArray, 3), b"_\r\n");
    }

    #[test]
    fn map_flattens_in_resp2() {
        let m = Reply::Map(vec![(Reply::bulk_str("a"), Reply::Int(1))]);
        assert_eq!(enc(&m, 2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&m, 3), b"%1\r\n$1\r\na\r\n:1\r\n");
    }

    #[test]
    fn keyed_array_is_pairs_in_resp2_and_map_in_resp3() {
        let r = Reply::KeyedArray(vec![(Reply::bulk_str("k"), Reply::Array(vec![]))]);
        assert_eq!(enc(&r, 2), b"*1\r\n*2\r\n$1\r\nk\r\n*0\r\n");
        assert_eq!(enc(&r, 3), b"%1\r\n$1\r\nk\r\n*0\r\n");
    }

    #[test]
    fn ids_format_like_display() {
        for (ms, seq) in [(0, 0), (1, 2), (u64::MAX, u64::MAX), (1795512610106, 0)] {
            let mut buf = [0u8; 41];
            let n = write_id(&mut buf, ms, seq);
            assert_eq!(&buf[..n], format!("{ms}-{seq}").as_bytes());
        }
    }

    #[test]
    fn error_lines_cannot_break_framing() {
        assert_eq!(enc(&Reply::error("ERR a\r\nb"), 2), b"-ERR a  b\r\n");
    }
}
