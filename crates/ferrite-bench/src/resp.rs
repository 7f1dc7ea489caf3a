//! A lean RESP2 client: one TCP connection, an explicit write buffer for
//! pipelining, and a read buffer decoded with `redis-protocol`.
//!
//! Commands are encoded by hand (so hot loops can pre-encode constant
//! commands once); replies are decoded zero-copy into [`Frame`]s. Every read
//! and write has a timeout, and every error says which command and server it
//! came from: a bad or missing reply is an error, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
pub use redis_protocol::resp2::types::BytesFrame as Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Parses `addr` and refuses anything that is not a loopback address: this
/// tool only ever sends load to servers on the same machine.
pub fn loopback_addr(addr: &str) -> Result<SocketAddr> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| Error::msg(format!("bad address {addr:?}: {e} (expected IP:PORT)")))?;
    if !sa.ip().is_loopback() {
        return Err(Error::msg(format!(
            "refusing to send load to {sa}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
        )));
    }
    Ok(sa)
}

pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    addr: SocketAddr,
    /// Longest wait for one reply (or one write) before giving up.
    pub timeout: Duration,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(Error::msg(format!(
                    "connect to {addr}: no answer within {timeout:?}"
                )))
            }
            Ok(Err(e)) => return Err(Error::msg(format!("connect to {addr}: {e}"))),
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(16 * 1024),
            addr,
            timeout,
        })
    }

    /// Queues one command (not sent until [`Conn::flush`]).
    pub fn push(&mut self, args: &[&[u8]]) {
        encode_cmd(&mut self.wbuf, args);
    }

    /// Queues bytes that are already a RESP-encoded command.
    pub fn push_raw(&mut self, encoded: &[u8]) {
        self.wbuf.put_slice(encoded);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout, self.stream.write_all(&self.wbuf)).await {
            Err(_) => Err(Error::msg(format!(
                "write to {}: blocked for {:?} (server not reading?)",
                self.addr, self.timeout
            ))),
            Ok(Err(e)) => Err(Error::msg(format!("write to {}: {e}", self.addr))),
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
        }
    }

    /// Reads the next reply, waiting at most `self.timeout` for more bytes.
    pub async fn read(&mut self) -> Result<Frame> {
        loop {
            match decode_bytes_mut(&mut self.rbuf) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::msg(format!(
                        "malformed RESP from {}: {e:?}",
                        self.addr
                    )))
                }
            }
            self.fill().await?;
        }
    }

    /// Reads the next reply without building frames (no allocation): only
    /// its kind and, for an array, its length. For hot loops whose replies
    /// are large (XRANGE) so that parsing does not make the client the
    /// bottleneck.
    pub async fn read_shape(&mut self) -> Result<Shape> {
        loop {
            match scan(&self.rbuf, 0) {
                Ok(Some(end)) => {
                    let shape = shape_of(&self.rbuf[..end]);
                    let _ = self.rbuf.split_to(end);
                    return Ok(shape);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::msg(format!(
                        "malformed RESP from {}: {e}",
                        self.addr
                    )))
                }
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf)).await
        {
            Err(_) => {
                return Err(Error::msg(format!(
                    "no reply from {} within {:?}",
                    self.addr, self.timeout
                )))
            }
            Ok(Err(e)) => return Err(Error::msg(format!("read from {}: {e}", self.addr))),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(Error::msg(format!(
                "{} closed the connection (server died or dropped the client?)",
                self.addr
            )));
        }
        Ok(())
    }

    /// Sends one command and reads its reply; an error reply becomes `Err`.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Frame> {
        self.push(args);
        self.flush().await?;
        let f = self.read().await?;
        let name = String::from_utf8_lossy(args.first().copied().unwrap_or(b"?")).into_owned();
        check_not_error(f, &name)
    }
}

/// What [`Conn::read_shape`] reports about a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    Array(i64),
    Error(String),
    /// Anything else, by its RESP type byte.
    Other(u8),
}

fn shape_of(frame: &[u8]) -> Shape {
    match frame.first() {
        Some(b'*') => Shape::Array(
            line_end(frame, 1)
                .and_then(|e| parse_int(&frame[1..e]))
                .unwrap_or(-1),
        ),
        Some(b'-') => {
            Shape::Error(String::from_utf8_lossy(frame[1..].trim_ascii_end()).into_owned())
        }
        Some(b) => Shape::Other(*b),
        None => Shape::Other(0),
    }
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some(from + rel)
}

fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Finds the end of the RESP2 frame starting at `pos`: `Ok(None)` if more
/// bytes are needed, `Err` if the bytes are not RESP2.
pub fn scan(buf: &[u8], pos: usize) -> std::result::Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(le) = line_end(buf, pos + 1) else {
        return Ok(None);
    };
    let after = le + 2;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after)),
        b'$' => {
            let n = parse_int(&buf[pos + 1..le]).ok_or("bad bulk length")?;
            if n < 0 {
                return Ok(Some(after));
            }
            let end = after + n as usize + 2;
            if buf.len() < end {
                Ok(None)
            } else if &buf[end - 2..end] != b"\r\n" {
                Err("bulk string not terminated by CRLF".into())
            } else {
                Ok(Some(end))
            }
        }
        b'*' => {
            let n = parse_int(&buf[pos + 1..le]).ok_or("bad array length")?;
            let mut at = after;
            for _ in 0..n.max(0) {
                match scan(buf, at)? {
                    Some(e) => at = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(format!("unexpected RESP type byte {other:#04x}")),
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_cmd(buf: &mut BytesMut, args: &[&[u8]]) {
    buf.put_u8(b'*');
    buf.put_slice(U64Str::new(args.len() as u64).as_bytes());
    buf.put_slice(b"\r\n");
    for a in args {
        buf.put_u8(b'$');
        buf.put_slice(U64Str::new(a.len() as u64).as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(a);
        buf.put_slice(b"\r\n");
    }
}

/// Encodes one command into its own buffer (for pre-encoded templates).
pub fn encoded(args: &[&[u8]]) -> Bytes {
    let mut b = BytesMut::new();
    encode_cmd(&mut b, args);
    b.freeze()
}

/// Decimal formatting of a `u64` on the stack (no allocation in hot loops).
pub struct U64Str {
    buf: [u8; 20],
    start: usize,
}

impl U64Str {
    pub fn new(mut n: u64) -> U64Str {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        U64Str { buf, start: i }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Short human description of a reply, for error messages.
pub fn describe(f: &Frame) -> String {
    match f {
        Frame::SimpleString(s) => format!("+{}", String::from_utf8_lossy(s)),
        Frame::Error(e) => format!("-{}", &**e),
        Frame::Integer(i) => format!(":{i}"),
        Frame::BulkString(b) => {
            let s: String = String::from_utf8_lossy(b).chars().take(60).collect();
            format!("bulk({} bytes) {s:?}", b.len())
        }
        Frame::Array(a) => format!("array of {}", a.len()),
        Frame::Null => "null".to_string(),
    }
}

pub fn check_not_error(f: Frame, cmd: &str) -> Result<Frame> {
    match f {
        Frame::Error(e) => Err(Error::msg(format!("{cmd}: server replied error: {}", &*e))),
        other => Ok(other),
    }
}

/// XADD must answer with the new entry ID (a bulk string).
pub fn expect_id(f: &Frame, cmd: &str) -> Result<()> {
    match f {
        Frame::BulkString(_) => Ok(()),
        other => Err(Error::msg(format!(
            "{cmd}: expected an entry ID (bulk string), got {}",
            describe(other)
        ))),
    }
}

pub fn expect_int(f: &Frame, cmd: &str) -> Result<i64> {
    match f {
        Frame::Integer(i) => Ok(*i),
        other => Err(Error::msg(format!(
            "{cmd}: expected an integer, got {}",
            describe(other)
        ))),
    }
}

/// One stream entry as found in an XRANGE/XREAD/XREADGROUP reply.
pub struct Entry<'a> {
    pub id: &'a Bytes,
    pub fields: &'a [Frame],
}

impl Entry<'_> {
    /// The value of `name` parsed as a decimal u64, if present.
    pub fn field_u64(&self, name: &[u8]) -> Option<u64> {
        let mut it = self.fields.chunks_exact(2);
        it.find_map(|kv| match (&kv[0], &kv[1]) {
            (Frame::BulkString(k), Frame::BulkString(v)) if k.as_ref() == name => {
                std::str::from_utf8(v).ok()?.parse().ok()
            }
            _ => None,
        })
    }
}

/// Entries of an XRANGE reply (`[[id, [f, v, ...]], ...]`).
pub fn range_entries<'a>(f: &'a Frame, cmd: &str) -> Result<Vec<Entry<'a>>> {
    let items = match f {
        Frame::Array(a) => a,
        other => {
            return Err(Error::msg(format!(
                "{cmd}: expected an array of entries, got {}",
                describe(other)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        match it {
            Frame::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                (Frame::BulkString(id), Frame::Array(fields)) => out.push(Entry { id, fields }),
                (a, b) => {
                    return Err(Error::msg(format!(
                        "{cmd}: malformed entry: id {}, fields {}",
                        describe(a),
                        describe(b)
                    )))
                }
            },
            other => {
                return Err(Error::msg(format!(
                    "{cmd}: malformed entry: {}",
                    describe(other)
                )))
            }
        }
    }
    Ok(out)
}

/// Entries of an XREAD/XREADGROUP reply for a single stream
/// (`[[key, [[id, [f, v, ...]], ...]]]`); a null reply (BLOCK timed out) is
/// an empty list.
pub fn read_entries<'a>(f: &'a Frame, cmd: &str) -> Result<Vec<Entry<'a>>> {
    match f {
        Frame::Null => Ok(Vec::new()),
        Frame::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                match s {
                    Frame::Array(kv) if kv.len() == 2 => {
                        out.extend(range_entries(&kv[1], cmd)?);
                    }
                    other => {
                        return Err(Error::msg(format!(
                            "{cmd}: malformed stream block: {}",
                            describe(other)
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => Err(Error::msg(format!(
            "{cmd}: expected an array or null, got {}",
            describe(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut b = BytesMut::new();
        encode_cmd(&mut b, &[b"XADD", b"s", b"*"]);
        assert_eq!(&b[..], b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n");
    }

    #[test]
    fn formats_u64() {
        assert_eq!(U64Str::new(0).as_bytes(), b"0");
        assert_eq!(U64Str::new(1234567890).as_bytes(), b"1234567890");
        assert_eq!(
            U64Str::new(u64::MAX).as_bytes(),
            u64::MAX.to_string().as_bytes()
        );
    }

    #[test]
    fn rejects_non_loopback() {
        assert!(loopback_addr("127.0.0.1:6379").is_ok());
        assert!(loopback_addr("[::1]:6379").is_ok());
        assert!(loopback_addr("10.0.0.1:6379").is_err());
        assert!(loopback_addr("localhost").is_err());
    }

    #[test]
    fn scans_frames_without_parsing() {
        let raw = b"*2\r\n*2\r\n$3\r\n1-0\r\n*0\r\n$-1\r\n-ERR x\r\n";
        assert_eq!(scan(raw, 0), Ok(Some(26)));
        assert_eq!(shape_of(&raw[..26]), Shape::Array(2));
        assert_eq!(scan(raw, 26), Ok(Some(34)));
        assert_eq!(shape_of(&raw[26..]), Shape::Error("ERR x".into()));
        for cut in 0..26 {
            assert_eq!(scan(&raw[..cut], 0), Ok(None), "cut at {cut}");
        }
        assert!(scan(b"?x\r\n", 0).is_err());
    }

    #[test]
    fn parses_xread_reply() {
        let raw = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$2\r\nts\r\n$2\r\n42\r\n$1\r\na\r\n$1\r\nb\r\n";
        let mut buf = BytesMut::from(&raw[..]);
        let (f, _, _) = decode_bytes_mut(&mut buf).unwrap().unwrap();
        let e = read_entries(&f, "XREAD").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id.as_ref(), b"1-0");
        assert_eq!(e[0].field_u64(b"ts"), Some(42));
        assert_eq!(e[0].field_u64(b"a"), None);
        assert!(read_entries(&Frame::Integer(3), "XREAD").is_err());
        assert!(read_entries(&Frame::Null, "XREAD").unwrap().is_empty());
    }
}
