//! A raw RESP connection: writes exact bytes, reads exactly one reply frame
//! at a time, every read bounded by a deadline; a closed connection is a result.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::resp::{frame_len, parse_frame, Node};

/// What one read produced.
#[derive(Clone, Debug)]
pub enum Reply {
    /// One complete frame: its exact bytes and the parsed tree.
    Frame { raw: Vec<u8>, node: Node },
    /// The server closed the connection (EOF or reset) before a full frame;
    /// `partial` holds any bytes of an unfinished frame.
    Closed { partial: Vec<u8> },
    /// Nothing (complete) arrived before the deadline.
    Timeout { partial: Vec<u8> },
    /// Bytes that are not valid RESP.
    Invalid { raw: Vec<u8>, error: String },
}

impl Reply {
    pub fn node(&self) -> Option<&Node> {
        match self {
            Reply::Frame { node, .. } => Some(node),
            _ => None,
        }
    }

    pub fn raw(&self) -> &[u8] {
        match self {
            Reply::Frame { raw, .. } | Reply::Invalid { raw, .. } => raw,
            Reply::Closed { partial } | Reply::Timeout { partial } => partial,
        }
    }

    /// Readable form for failure messages.
    pub fn render(&self) -> String {
        match self {
            Reply::Frame { node, .. } => node.render(),
            Reply::Closed { partial } if partial.is_empty() => {
                "<connection closed by server>\n".into()
            }
            Reply::Closed { partial } => format!(
                "<connection closed by server after a partial frame: \"{}\">\n",
                super::resp::escape_short(partial, 300)
            ),
            Reply::Timeout { partial } if partial.is_empty() => {
                "<no reply before the deadline>\n".into()
            }
            Reply::Timeout { partial } => format!(
                "<no complete reply before the deadline; partial: \"{}\">\n",
                super::resp::escape_short(partial, 300)
            ),
            Reply::Invalid { raw, error } => {
                format!(
                    "<invalid RESP: {error}: \"{}\">\n",
                    super::resp::escape_short(raw, 300)
                )
            }
        }
    }
}

pub struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Decode replies as RESP3 (set after a successful `HELLO 3`).
    pub resp3: bool,
    eof: bool,
}

impl RespConn {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<RespConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RespConn {
            stream,
            buf: Vec::new(),
            resp3: false,
            eof: false,
        })
    }

    /// Writes `bytes` exactly, in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn send_command(&mut self, args: &[Vec<u8>]) -> std::io::Result<()> {
        self.send(&super::resp::encode_command(args))
    }

    /// Takes one complete frame out of the buffer if there is one.
    fn take_frame(&mut self) -> Option<Reply> {
        match frame_len(&self.buf, self.resp3) {
            Ok(Some(n)) => {
                let raw: Vec<u8> = self.buf.drain(..n).collect();
                Some(match parse_frame(&raw) {
                    Ok(node) => Reply::Frame { raw, node },
                    Err(error) => Reply::Invalid { raw, error },
                })
            }
            Ok(None) => None,
            Err(error) => Some(Reply::Invalid {
                raw: std::mem::take(&mut self.buf),
                error,
            }),
        }
    }

    /// Reads more bytes, waiting at most until `deadline`. Returns false on
    /// timeout; sets `eof` on EOF or connection reset.
    fn fill(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        if self.stream.set_read_timeout(Some(wait)).is_err() {
            self.eof = true;
            return true;
        }
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                true
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                // ECONNRESET, EPIPE, ...: the server is gone for us.
                self.eof = true;
                true
            }
        }
    }

    /// Reads exactly one reply frame, waiting at most `timeout`.
    pub fn read_reply(&mut self, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.take_frame() {
                return r;
            }
            if self.eof {
                return Reply::Closed {
                    partial: std::mem::take(&mut self.buf),
                };
            }
            if !self.fill(deadline) {
                return Reply::Timeout {
                    partial: self.buf.clone(),
                };
            }
        }
    }

    /// True if any reply byte (or EOF) is available right now, without waiting
    /// more than a few milliseconds.
    pub fn has_data(&mut self) -> bool {
        if !self.buf.is_empty() || self.eof {
            return true;
        }
        self.fill(Instant::now() + Duration::from_millis(5));
        !self.buf.is_empty() || self.eof
    }

    /// True if any reply byte (or EOF) arrives within `wait`.
    pub fn has_data_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.buf.is_empty() && !self.eof {
            if !self.fill(deadline) {
                break;
            }
        }
        !self.buf.is_empty() || self.eof
    }

    /// Expects the server to close the connection without sending anything
    /// else. Returns the extra bytes received (if any) and whether the
    /// connection was closed before the deadline.
    pub fn expect_closed(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if !self.fill(deadline) {
                return (std::mem::take(&mut self.buf), false);
            }
        }
        (std::mem::take(&mut self.buf), true)
    }

    /// Bytes received but not yet returned as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }
}
