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

/// Redis's PROTO_INLINE_MAX_SIZE: longest inline request or count line.
pub const INLINE_MAX: usize = 64 * 1024;

/// Most bytes reserved for a bulk argument on the word of its `$n` header:
/// the rest is reserved as its data arrives ([`RequestParser::read_hint`]),
/// so an idle connection that sent `$536870912` holds 64 KiB, not 512 MB.
pub const BULK_RESERVE_AHEAD: usize = 64 * 1024;

/// What one parsed argument costs beyond its bytes (the `Bytes` handle in
/// the argument vector), for the query-buffer accounting.
const ARG_OVERHEAD: usize = std::mem::size_of::<Bytes>();

/// A protocol violation; the connection replies `-ERR Protocol error: <msg>` and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

#[derive(Debug, Default)]
pub struct RequestParser {
    /// Remaining arguments of the multibulk being read (0: between commands).
    multibulk_left: usize,
    /// Length of the bulk being read, once its `$n` line was consumed.
    bulk_len: Option<usize>,
    argv: Vec<Bytes>,
    /// Memory held by the arguments parsed so far of a half-read command:
    /// the input they were cut from (their bytes share its buffers) plus a
    /// handle each. Counted with the unparsed input against
    /// `client-query-buffer-limit`, as Redis counts `argv_len_sum`.
    argv_bytes: usize,
    /// `argv[..owned]` no longer share the input's buffers (see
    /// [`RequestParser::own_small_args`]).
    owned: usize,
}

/// Arguments below this size are copied out of the input buffer when a
/// command has to wait for more data; larger ones keep sharing it (they
/// are most of their buffer anyway, and copying them would cost).
const OWN_BELOW: usize = 32 * 1024;

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
        self.multibulk_left == 0 && self.argv.is_empty()
    }

    /// While a command waits for more input, its small parsed arguments are
    /// copied out of the input buffer: each shares the whole allocation it
    /// was cut from, so a client dripping one small argument per read would
    /// otherwise pin a read buffer (16 KiB or more) per argument, far more
    /// than `parsed_bytes` counts.
    fn own_small_args(&mut self) {
        for a in &mut self.argv[self.owned..] {
            if a.len() < OWN_BELOW {
                *a = Bytes::copy_from_slice(a);
            }
        }
        self.owned = self.argv.len();
    }

    /// Bytes held by the parsed arguments of the command being read.
    pub fn parsed_bytes(&self) -> usize {
        self.argv_bytes
    }

    /// How much to reserve in `buf` before the next read: while a bulk is
    /// being received, what it still needs, but at most as much as is
    /// already buffered (so the buffer grows with the data received,
    /// doubling, never on a header's word alone), and at least `min`.
    pub fn read_hint(&self, buf: &BytesMut, min: usize) -> usize {
        match self.bulk_len {
            Some(l) => (l + 2)
                .saturating_sub(buf.len())
                .min(buf.len().max(BULK_RESERVE_AHEAD))
                .max(min),
            None => min,
        }
    }

    /// Parse the next command from `buf`, consuming what it uses.
    /// `Ok(Some(argv))` may be an empty argv (an empty line or `*0`): skip it.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if self.multibulk_left == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != b'*' {
                return parse_inline(buf);
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
            let n = ferrite_db::args::parse_i64(&buf[1..cr]);
            let n = match n {
                Some(n) if n <= i32::MAX as i64 => n,
                _ => return Err(perr("invalid multibulk length")),
            };
            if n > 10 && limits.unauthenticated {
                return Err(perr("unauthenticated multibulk length"));
            }
            buf.advance(cr + 2);
            if n <= 0 {
                return Ok(Some(Vec::new()));
            }
            self.multibulk_left = n as usize;
            // NOTE: capacity is capped: the count is client-controlled.
            self.argv = Vec::with_capacity(self.multibulk_left.min(1024));
            self.owned = 0;
            self.argv_bytes = cr + 2;
        }
        while self.multibulk_left > 0 {
            let len = match self.bulk_len {
                Some(l) => l,
                None => {
                    let Some(cr) = memchr(b'\r', buf) else {
                        if buf.len() > INLINE_MAX {
                            return Err(perr("too big bulk count string"));
                        }
                        self.own_small_args();
                        return Ok(None);
                    };
                    if cr + 2 > buf.len() {
                        self.own_small_args();
                        return Ok(None);
                    }
                    if buf[0] != b'$' {
                        let got = buf[0] as char;
                        return Err(ProtocolError(format!("expected '$', got '{got}'")));
                    }
                    let l = match ferrite_db::args::parse_i64(&buf[1..cr]) {
                        Some(l) if l >= 0 && (l as u64) <= limits.max_bulk_len => l as usize,
                        _ => return Err(perr("invalid bulk length")),
                    };
                    if l > 16384 && limits.unauthenticated {
                        return Err(perr("unauthenticated bulk length"));
                    }
                    buf.advance(cr + 2);
                    self.argv_bytes += cr + 2;
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
            if buf.len() < len + 2 {
                self.own_small_args();
                return Ok(None);
            }
            // NOTE: like Redis, the two bytes after the data are skipped, not checked.
            let arg = buf.split_to(len).freeze();
            buf.advance(2);
            self.argv.push(arg);
            self.argv_bytes += len + 2 + ARG_OVERHEAD;
            self.bulk_len = None;
            self.multibulk_left -= 1;
        }
        self.argv_bytes = 0;
        self.owned = 0;
        Ok(Some(std::mem::take(&mut self.argv)))
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
                Ok(Some(c)) => cmds.push(c),
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
                assert_eq!(&buf[..], b"abc");
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
    fn small_arguments_of_a_waiting_command_do_not_pin_the_input_buffer() {
        let limits = Limits {
            max_bulk_len: 512 << 20,
            unauthenticated: false,
        };
        let mut p = RequestParser::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n");
        let start = buf.as_ptr() as usize;
        let range = start..start + buf.capacity();
        // The value has not arrived: the command waits.
        assert_eq!(p.parse(&mut buf, limits), Ok(None));
        assert_eq!(p.argv.len(), 2);
        for a in &p.argv {
            assert!(
                !range.contains(&(a.as_ptr() as usize)),
                "a parsed argument still shares the read buffer"
            );
        }
        buf.extend_from_slice(b"$1\r\nv\r\n");
        let argv = p.parse(&mut buf, limits).ok().flatten().unwrap_or_default();
        assert_eq!(
            argv,
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")]
        );
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
        assert!(buf.is_empty());
        // 7 input bytes and one handle per argument, plus the count line.
        assert_eq!(p.parsed_bytes(), 13 + 1000 * (7 + ARG_OVERHEAD));
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
