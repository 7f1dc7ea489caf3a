//! Request parsing: RESP multibulk and inline commands, as Redis reads them.
//!
//! Hand-written rather than a general RESP decoder because requests must be
//! checked against Redis's limits *before* anything is allocated
//! (`proto-max-bulk-len`, the 64 KiB inline/count-line limit, the
//! unauthenticated-client limits), and errors must carry Redis's exact
//! wording. The parser is incremental: a half-received command keeps its
//! state, so a large bulk is never rescanned. An incomplete command is
//! `Ok(None)`, not an error.

use bytes::{Buf, Bytes, BytesMut};
use ferrite_db::args::Argv;
use std::ops::Range;

/// Redis's PROTO_INLINE_MAX_SIZE: longest inline request or count line.
pub const INLINE_MAX: usize = 64 * 1024;

/// Most bytes reserved for a bulk argument on the word of its `$n` header:
/// the rest is reserved as its data arrives ([`RequestParser::read_hint`]),
/// so an idle connection that sent `$536870912` holds 64 KiB, not 512 MB.
pub const BULK_RESERVE_AHEAD: usize = 64 * 1024;

/// What one parsed argument costs beyond its bytes (its span), for the
/// query-buffer accounting.
const ARG_OVERHEAD: usize = std::mem::size_of::<Range<usize>>();

/// A protocol violation; the connection replies `-ERR Protocol error: <msg>` and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Parses requests out of a connection's input buffer.
///
/// A multibulk request stays in the buffer until all of it has arrived,
/// its arguments recorded as spans of it; then it is cut off as one
/// buffer ([`Argv::from_frame`]): one reference count per command instead
/// of one per argument. Nothing is cut from a half-read request, so none
/// of it pins a read buffer, and the buffer's length counts all of it.
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Remaining arguments of the multibulk being read (0: between commands).
    multibulk_left: usize,
    /// Length of the bulk being read, once its `$n` line was read.
    bulk_len: Option<usize>,
    /// Where the arguments read so far lie in the buffer.
    spans: Vec<Range<usize>>,
    /// Where reading goes on in the buffer: the request's bytes before it
    /// are read (they are still in the buffer, at the same place).
    scan: usize,
}

/// Limits in force for the next parse; read from config per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: u64,
    /// The client must authenticate first: Redis then refuses long requests.
    pub unauthenticated: bool,
}

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no command is half-read.
    pub fn is_idle(&self) -> bool {
        self.multibulk_left == 0 && self.spans.is_empty()
    }

    /// Memory held for the half-read command beyond the input buffer (its
    /// spans; its bytes are in the buffer), counted with it against
    /// `client-query-buffer-limit`, as Redis counts `argv_len_sum`.
    pub fn parsed_bytes(&self) -> usize {
        self.spans.len() * ARG_OVERHEAD
    }

    /// Bytes at the start of the buffer that belong to the half-read
    /// command's complete parts (count line, finished arguments).
    pub fn read_up_to(&self) -> usize {
        self.scan
    }

    /// How much to reserve in `buf` before the next read: while a bulk is
    /// being received, what it still needs, but at most as much as is
    /// already buffered (so the buffer grows with the data received,
    /// doubling, never on a header's word alone), and at least `min`.
    pub fn read_hint(&self, buf: &BytesMut, min: usize) -> usize {
        match self.bulk_len {
            Some(l) => {
                let received = buf.len().saturating_sub(self.scan);
                (l + 2)
                    .saturating_sub(received)
                    .min(received.max(BULK_RESERVE_AHEAD))
                    .max(min)
            }
            None => min,
        }
    }

    /// Parse the next command from `buf`, consuming what it uses.
    /// `Ok(Some(argv))` may be an empty argv (an empty line or `*0`): skip it.
    /// Between calls the caller only appends to `buf`.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
    ) -> Result<Option<Argv>, ProtocolError> {
        if self.multibulk_left == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != b'*' {
                return Ok(parse_inline(buf)?.map(Argv::from));
            }
            // The count line: `*<n>\r\n`.
            let Some(cr) = memchr(b'\r', buf) else {
                if buf.len() > INLINE_MAX {
                    return Err(perr("too big mbulk count string"));
                }
                return Ok(None);
            };
            if cr + 2 > buf.len() {
                return Ok(None);
            }
            let n = header_number(&buf[1..cr]);
            let n = match n {
                Some(n) if n <= i32::MAX as i64 => n,
                _ => return Err(perr("invalid multibulk length")),
            };
            if n > 10 && limits.unauthenticated {
                return Err(perr("unauthenticated multibulk length"));
            }
            if n <= 0 {
                buf.advance(cr + 2);
                return Ok(Some(Argv::from(Vec::new())));
            }
            self.scan = cr + 2;
            self.multibulk_left = n as usize;
            // NOTE: capacity is capped: the count is client-controlled.
            self.spans = Vec::with_capacity(self.multibulk_left.min(1024));
        }
        while self.multibulk_left > 0 {
            let len = match self.bulk_len {
                Some(l) => l,
                None => {
                    let rest = &buf[self.scan..];
                    let Some(cr) = memchr(b'\r', rest) else {
                        if rest.len() > INLINE_MAX {
                            return Err(perr("too big bulk count string"));
                        }
                        return Ok(None);
                    };
                    if cr + 2 > rest.len() {
                        return Ok(None);
                    }
                    if rest[0] != b'$' {
                        let got = rest[0] as char;
                        return Err(ProtocolError(format!("expected '$', got '{got}'")));
                    }
                    let l = match header_number(&rest[1..cr]) {
                        Some(l) if l >= 0 && (l as u64) <= limits.max_bulk_len => l as usize,
                        _ => return Err(perr("invalid bulk length")),
                    };
                    if l > 16384 && limits.unauthenticated {
                        return Err(perr("unauthenticated bulk length"));
                    }
                    self.scan += cr + 2;
                    self.bulk_len = Some(l);
                    // IMPORTANT: never reserve the announced length on the
                    // word of a header: 40 idle clients announcing 512 MB
                    // each took 21 GB of address space. The rest of a large
                    // bulk is reserved as it arrives (`read_hint`).
                    let ahead = (l + 2).min(BULK_RESERVE_AHEAD);
                    if buf.capacity() - buf.len() < ahead {
                        buf.reserve(ahead);
                    }
                    l
                }
            };
            if buf.len() - self.scan < len + 2 {
                return Ok(None);
            }
            // NOTE: like Redis, the two bytes after the data are skipped, not checked.
            self.spans.push(self.scan..self.scan + len);
            self.scan += len + 2;
            self.bulk_len = None;
            self.multibulk_left -= 1;
        }
        let frame = buf.split_to(std::mem::take(&mut self.scan)).freeze();
        Ok(Some(Argv::from_frame(
            frame,
            std::mem::take(&mut self.spans),
        )))
    }
}

/// The number of a `*<n>` or `$<n>` line, as Redis's `string2ll` reads
/// it ([`ferrite_db::args::parse_i64`]). Nearly every header is a few
/// digits: those are read without overflow checks (18 digits cannot
/// overflow), anything else goes the general way.
fn header_number(s: &[u8]) -> Option<i64> {
    match s {
        [b'1'..=b'9', rest @ ..] if rest.len() < 18 && rest.iter().all(u8::is_ascii_digit) => {
            Some(s.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0')))
        }
        _ => ferrite_db::args::parse_i64(s),
    }
}

fn perr(s: &str) -> ProtocolError {
    ProtocolError(s.to_string())
}

/// C's `strchr` over the buffer, as Redis scans its query buffer: the first
/// `c` before any NUL byte. A NUL before the line end means "no line yet",
/// so such a line only ends in the 64 KiB limit error, as in Redis.
fn memchr(c: u8, b: &[u8]) -> Option<usize> {
    b.iter()
        .position(|&x| x == c || x == 0)
        .filter(|&i| b[i] == c)
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // NOTE: Redis finds the newline with strchr(), which stops at a NUL byte:
    // a line with a NUL before its `\n` never completes (until the limit).
    let line = memchr(b'\n', buf).filter(|&nl| memchr(0, &buf[..nl]).is_none());
    let Some(nl) = line else {
        if buf.len() > INLINE_MAX {
            return Err(perr("too big inline request"));
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let args = split_args(&buf[..line_end]);
    buf.advance(nl + 1);
    match args {
        Some(a) => Ok(Some(a.into_iter().map(Bytes::from).collect())),
        None => Err(perr("unbalanced quotes in request")),
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: whitespace-separated words, "double quotes" with
/// C escapes (`\n`, `\xHH`, ...), 'single quotes' with `\'`. A closing quote
/// must be followed by a space or the end. `None` means unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // Redis splits a C string: a NUL byte ends the input.
    let line = &line[..memchr(0, line).unwrap_or(line.len())];
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && hex_val(line[i + 2]).is_some()
                    && hex_val(line[i + 3]).is_some()
                {
                    let hi = hex_val(line[i + 2]).unwrap_or(0);
                    let lo = hex_val(line[i + 3]).unwrap_or(0);
                    cur.push(hi * 16 + lo);
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or the end.
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_numbers_read_as_string2ll_does() {
        let cases: &[&[u8]] = &[
            b"0",
            b"1",
            b"9",
            b"10",
            b"16",
            b"512",
            b"-1",
            b"-0",
            b"01",
            b"",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"123456789012345678",
            b"999999999999999999",
            b"1000000000000000000",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"99999999999999999999",
            b"123456789012345678901",
        ];
        for c in cases {
            assert_eq!(
                header_number(c),
                ferrite_db::args::parse_i64(c),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    const L: Limits = Limits {
        max_bulk_len: 512 * 1024 * 1024,
        unauthenticated: false,
    };

    fn parse_all(input: &[u8]) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(input);
        let mut cmds = Vec::new();
        loop {
            match p.parse(&mut buf, L) {
                Ok(Some(c)) => cmds.push(c.into_vec()),
                Ok(None) => return (cmds, None),
                Err(e) => return (cmds, Some(e)),
            }
        }
    }

    #[test]
    fn multibulk_and_pipelining() {
        let (c, e) = parse_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
        assert!(e.is_none());
        assert_eq!(c.len(), 2);
        assert_eq!(c[1][1], Bytes::new());
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input = b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$10\r\n0123456789\r\nPING\r\n";
        let mut p = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut cmds = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Ok(Some(c)) = p.parse(&mut buf, L) {
                cmds.push(c);
            }
        }
        assert_eq!(cmds.len(), 2);
        assert_eq!(&cmds[0][2][..], b"0123456789");
        assert_eq!(&cmds[1][0][..], b"PING");
    }

    #[test]
    fn protocol_errors_use_redis_wording() {
        assert_eq!(
            parse_all(b"*x\r\n").1,
            Some(perr("invalid multibulk length"))
        );
        assert_eq!(
            parse_all(b"*1\r\n+a\r\n").1,
            Some(ProtocolError("expected '$', got '+'".into()))
        );
        assert_eq!(
            parse_all(b"*1\r\n$-1\r\n").1,
            Some(perr("invalid bulk length"))
        );
        assert_eq!(
            parse_all(b"*1\r\n$536870913\r\n").1,
            Some(perr("invalid bulk length"))
        );
        assert_eq!(
            parse_all(b"PING \"a\r\n").1,
            Some(perr("unbalanced quotes in request"))
        );
        let big = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(parse_all(&big).1, Some(perr("too big inline request")));
    }

    #[test]
    fn inline_quoting() {
        let (c, _) = parse_all(b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\n\r\n");
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            vec![
                Bytes::from("SET"),
                Bytes::from("a b"),
                Bytes::from("c'd"),
                Bytes::from("A\n")
            ]
        );
        assert!(c[1].is_empty());
    }

    #[test]
    fn nul_bytes_in_inline_requests() {
        // Regression (found by fuzzing): a NUL ended a word without being
        // skipped, so split_args pushed empty arguments forever.
        assert_eq!(split_args(b"a\0b c"), Some(vec![b"a".to_vec()]));
        assert_eq!(split_args(b"a \0 b"), Some(vec![b"a".to_vec()]));
        assert_eq!(split_args(b"\0"), Some(vec![]));
        assert_eq!(split_args(b"\"a\0\""), None);
        // Like Redis, a NUL before the newline leaves the line incomplete
        // until it exceeds the inline limit.
        assert_eq!(parse_all(b"PING \0\r\nPING\r\n"), (vec![], None));
        let mut big = b"PING \0\r\n".to_vec();
        big.resize(INLINE_MAX + 1, b'a');
        assert_eq!(parse_all(&big).1, Some(perr("too big inline request")));
        // A NUL after the newline belongs to the next line.
        let (c, e) = parse_all(b"PING\r\n\0");
        assert_eq!((c.len(), e), (1, None));
    }

    #[test]
    fn huge_bulk_limits_do_not_reserve_the_declared_length() {
        // Regression (found by fuzzing): with proto-max-bulk-len at its
        // maximum, `$9223372036854775807` panicked with "capacity overflow"
        // (and `$1099511627776` aborted on allocation failure).
        for max_bulk_len in [i64::MAX as u64, u64::MAX] {
            let limits = Limits {
                max_bulk_len,
                unauthenticated: false,
            };
            for header in [&b"$9223372036854775807\r\n"[..], b"$1099511627776\r\n"] {
                let mut p = RequestParser::new();
                let mut buf = BytesMut::from(&b"*1\r\n"[..]);
                buf.extend_from_slice(header);
                buf.extend_from_slice(b"abc");
                assert_eq!(p.parse(&mut buf, limits), Ok(None));
                assert!(buf.capacity() <= BULK_RESERVE_AHEAD + 64);
                assert_eq!(&buf[p.read_up_to()..], b"abc");
                // The next read may grow it by what is buffered, not more.
                assert!(p.read_hint(&buf, 16) <= BULK_RESERVE_AHEAD);
            }
        }
    }

    #[test]
    fn a_bulk_buffer_grows_with_the_data_received() {
        let limits = Limits {
            max_bulk_len: 512 << 20,
            unauthenticated: false,
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$536870912\r\n"[..]);
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        assert!(
            buf.capacity() <= BULK_RESERVE_AHEAD + 64,
            "{}",
            buf.capacity()
        );
        // Nothing buffered: one read-ahead chunk.
        assert_eq!(p.read_hint(&buf, 16 * 1024), BULK_RESERVE_AHEAD);
        // 1 MiB received: at most 1 MiB more.
        buf.extend_from_slice(&vec![b'x'; 1 << 20]);
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        assert_eq!(p.read_hint(&buf, 16 * 1024), 1 << 20);
        // Near the end: what is missing.
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$100\r\n"[..]);
        buf.extend_from_slice(&[b'y'; 90]);
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        assert_eq!(p.read_hint(&buf, 0), 12);
    }

    #[test]
    fn a_waiting_command_stays_in_the_buffer_and_is_cut_once() {
        let limits = Limits {
            max_bulk_len: 512 << 20,
            unauthenticated: false,
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n");
        let held = buf.len();
        // The value has not arrived: the command waits, nothing cut from
        // the buffer (so nothing of it pins a read buffer elsewhere).
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        assert_eq!(buf.len(), held);
        assert_eq!(p.read_up_to(), held);
        buf.extend_from_slice(b"$1\r\nv\r\n*1\r\n$4\r\nPING\r\n");
        let argv = p.parse(&mut buf, limits).ok().flatten();
        let want: Argv = vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")].into();
        assert_eq!(argv, Some(want));
        // The next command is left whole, and parses on its own.
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(p.read_up_to(), 0);
        let ping: Argv = vec![Bytes::from("PING")].into();
        assert_eq!(p.parse(&mut buf, limits).ok().flatten(), Some(ping));
        assert!(buf.is_empty());
    }

    #[test]
    fn parsed_arguments_of_a_half_read_command_are_counted() {
        let limits = Limits {
            max_bulk_len: 512 << 20,
            unauthenticated: false,
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*2000000000\r\n"[..]);
        for _ in 0..1000 {
            buf.extend_from_slice(b"$1\r\nx\r\n");
        }
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        // The input stays in the buffer; each argument adds its span.
        assert_eq!(buf.len(), 13 + 1000 * 7);
        assert_eq!(p.parsed_bytes(), 1000 * ARG_OVERHEAD);
        // A complete command resets the count.
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert!(matches!(p.parse(&mut buf, limits), Ok(Some(_))));
        assert_eq!(p.parsed_bytes(), 0);
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let (c, e) = parse_all(b"*2147483647\r\n$1\r\na\r\n");
        assert!(c.is_empty() && e.is_none());
    }
}
