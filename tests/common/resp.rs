//! An exact RESP2/RESP3 reply tree.
//!
//! Frame *boundaries* are found by the `redis-protocol` crate's decoders (see
//! [`frame_len`]); the bytes of one frame are then parsed here into a [`Node`]
//! tree that keeps every byte (type byte, length header, payload), so that
//! `Node::to_bytes()` gives back exactly what the server sent. Masks (see
//! `runner.rs`) replace sub-trees by placeholders; comparison of two trees
//! without placeholders is a byte-for-byte comparison.

use std::fmt::Write as _;

/// One RESP value, byte-exact.
#[derive(Clone, Debug)]
pub enum Node {
    /// A line-only value: `+` simple string, `-` error, `:` integer, `_` null,
    /// `,` double, `#` boolean, `(` big number, and nulls `$-1` / `*-1`
    /// (kind `$`/`*` with head `-1`).
    Line { kind: u8, head: Vec<u8> },
    /// A length-prefixed blob: `$` bulk string, `!` blob error, `=` verbatim.
    Blob { kind: u8, data: Vec<u8> },
    /// An aggregate: `*` array, `%` map (2n items), `~` set, `>` push,
    /// `|` attribute (2n items followed by the value it is attached to).
    Agg { kind: u8, items: Vec<Node> },
    /// Placeholder put in by a mask: equal to another `Masked` with the same label.
    Masked(String),
    /// An integer compared within a tolerance.
    Approx { value: i64, tol: i64 },
}

/// Number of bytes of the first complete frame in `buf`, `Ok(None)` if `buf`
/// holds only part of a frame, `Err` if it cannot be a valid frame.
///
/// RESP2 replies are framed with the RESP2 decoder (it knows `$-1` / `*-1`),
/// RESP3 replies with the RESP3 decoder.
pub fn frame_len(buf: &[u8], resp3: bool) -> Result<Option<usize>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    let r2_byte = matches!(buf[0], b'+' | b'-' | b':' | b'$' | b'*');
    let res = if resp3 || !r2_byte {
        redis_protocol::resp3::decode::complete::decode_range(buf)
            .map(|o| o.map(|(_, n)| n))
            .map_err(|e| format!("RESP3 decoder: {e:?}"))
    } else {
        redis_protocol::resp2::decode::decode_range(buf)
            .map(|o| o.map(|(_, n)| n))
            .map_err(|e| format!("RESP2 decoder: {e:?}"))
    };
    match res {
        Ok(v) => Ok(v),
        // The crate rejects a few byte-valid frames (e.g. non-UTF-8 in places
        // it wants text); fall back to the strict parser below so that such a
        // reply is still shown and compared byte for byte.
        Err(e) => match parse_prefix(buf) {
            Ok(Some((_, n))) => Ok(Some(n)),
            Ok(None) => Ok(None),
            Err(e2) => Err(format!("{e}; strict parser: {e2}")),
        },
    }
}

/// Parses one complete frame (the whole of `buf`).
pub fn parse_frame(buf: &[u8]) -> Result<Node, String> {
    match parse_prefix(buf)? {
        Some((node, n)) if n == buf.len() => Ok(node),
        Some((_, n)) => Err(format!("{} trailing bytes after frame", buf.len() - n)),
        None => Err("incomplete frame".into()),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// Strict parser; returns the node and the bytes consumed, or `None` if incomplete.
pub fn parse_prefix(buf: &[u8]) -> Result<Option<(Node, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_len(head: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("bad length {:?}", escape(head)))
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Node, usize)>, String> {
    if depth > 64 {
        return Err("nesting too deep".into());
    }
    if pos >= buf.len() {
        return Ok(None);
    }
    let kind = buf[pos];
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let head = buf[pos + 1..eol].to_vec();
    let after = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            Ok(Some((Node::Line { kind, head }, after)))
        }
        b'$' | b'!' | b'=' => {
            let n = parse_len(&head)?;
            if n == -1 && kind == b'$' {
                return Ok(Some((Node::Line { kind, head }, after)));
            }
            if n < 0 {
                return Err(format!("negative blob length {n}"));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err("blob not terminated by CRLF".into());
            }
            Ok(Some((
                Node::Blob {
                    kind,
                    data: buf[after..after + n].to_vec(),
                },
                after + n + 2,
            )))
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let n = parse_len(&head)?;
            if n == -1 && kind == b'*' {
                return Ok(Some((Node::Line { kind, head }, after)));
            }
            if n < 0 {
                return Err(format!("negative aggregate length {n}"));
            }
            let mut count = n as usize;
            if kind == b'%' || kind == b'|' {
                count *= 2;
            }
            if kind == b'|' {
                count += 1; // the attributed value
            }
            let mut items = Vec::with_capacity(count.min(4096));
            let mut p = after;
            for _ in 0..count {
                match parse_at(buf, p, depth + 1)? {
                    Some((node, np)) => {
                        items.push(node);
                        p = np;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Node::Agg { kind, items }, p)))
        }
        other => Err(format!("unknown type byte {:?}", other as char)),
    }
}

impl Node {
    /// The bytes this node was parsed from (placeholders render as text).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_bytes(&mut out);
        out
    }

    fn write_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Node::Line { kind, head } => {
                out.push(*kind);
                out.extend_from_slice(head);
                out.extend_from_slice(b"\r\n");
            }
            Node::Blob { kind, data } => {
                out.push(*kind);
                out.extend_from_slice(data.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Node::Agg { kind, items } => {
                out.push(*kind);
                let n = match kind {
                    b'%' => items.len() / 2,
                    b'|' => items.len().saturating_sub(1) / 2,
                    _ => items.len(),
                };
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for i in items {
                    i.write_bytes(out);
                }
            }
            Node::Masked(label) => out.extend_from_slice(format!("<{label}>").as_bytes()),
            Node::Approx { value, tol } => {
                out.extend_from_slice(format!("<{value}~{tol}>").as_bytes())
            }
        }
    }

    /// The text of a string-like scalar (simple string, bulk, verbatim without
    /// its `txt:` prefix, error), if this is one.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Node::Line {
                kind: b'+' | b'-' | b':',
                head,
            } => Some(head),
            Node::Blob {
                kind: b'$' | b'!',
                data,
            } => Some(data),
            Node::Blob { kind: b'=', data } if data.len() >= 4 => Some(&data[4..]),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Node::Line { kind: b'-', .. } | Node::Blob { kind: b'!', .. }
        )
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Node::Line { kind: b':', head } => std::str::from_utf8(head).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// Structural equality; byte-exact where no placeholder is involved.
    pub fn same(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Line { kind: a, head: h }, Node::Line { kind: b, head: g }) => a == b && h == g,
            (Node::Blob { kind: a, data: d }, Node::Blob { kind: b, data: e }) => a == b && d == e,
            (Node::Agg { kind: a, items: x }, Node::Agg { kind: b, items: y }) => {
                a == b && x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.same(q))
            }
            (Node::Masked(a), Node::Masked(b)) => a == b,
            (Node::Approx { value: a, tol: t }, Node::Approx { value: b, .. }) => {
                (a - b).abs() <= *t
            }
            _ => false,
        }
    }

    /// Readable multi-line rendering, unambiguous about types (unlike redis-cli,
    /// `$-1` and `*-1` are told apart).
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_into(&mut s, 0);
        s
    }

    fn render_into(&self, s: &mut String, indent: usize) {
        let pad = "   ".repeat(indent);
        match self {
            Node::Line { kind, head } => {
                let h = String::from_utf8_lossy(head);
                let t = match kind {
                    b'+' => format!("(simple) {h}"),
                    b'-' => format!("(error) {h}"),
                    b':' => format!("(integer) {h}"),
                    b'_' => "(null)".to_string(),
                    b',' => format!("(double) {h}"),
                    b'#' => format!("(boolean) {h}"),
                    b'(' => format!("(big number) {h}"),
                    b'$' => "(nil bulk $-1)".to_string(),
                    b'*' => "(nil array *-1)".to_string(),
                    k => format!("({}) {h}", *k as char),
                };
                let _ = writeln!(s, "{t}");
            }
            Node::Blob { kind, data } => {
                let t = match kind {
                    b'$' => format!("\"{}\"", escape(data)),
                    b'!' => format!("(blob error) \"{}\"", escape(data)),
                    _ => format!("(verbatim) \"{}\"", escape(data)),
                };
                let _ = writeln!(s, "{t}");
            }
            Node::Agg { kind, items } => {
                let name = match kind {
                    b'*' => "array",
                    b'%' => "map",
                    b'~' => "set",
                    b'>' => "push",
                    _ => "attribute",
                };
                if items.is_empty() {
                    let _ = writeln!(s, "({name}, empty)");
                    return;
                }
                let shown = if *kind == b'%' {
                    items.len() / 2
                } else {
                    items.len()
                };
                let _ = writeln!(s, "({name} of {shown})");
                let limit = 200;
                for (i, item) in items.iter().enumerate() {
                    if i >= limit {
                        let _ = writeln!(s, "{pad}   ... {} more", items.len() - limit);
                        break;
                    }
                    let label = if *kind == b'%' {
                        if i % 2 == 0 {
                            format!("{}) key: ", i / 2 + 1)
                        } else {
                            format!("{}) val: ", i / 2 + 1)
                        }
                    } else {
                        format!("{}) ", i + 1)
                    };
                    let _ = write!(s, "{pad}   {label}");
                    item.render_into(s, indent + 1);
                }
            }
            Node::Masked(label) => {
                let _ = writeln!(s, "<{label}>");
            }
            Node::Approx { value, tol } => {
                let _ = writeln!(s, "(integer) {value} (±{tol})");
            }
        }
    }
}

/// Printable form of bytes: printable ASCII as is, the rest as `\r`, `\n`,
/// `\t`, `\"`, `\\` or `\xHH`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

/// Escaped, truncated raw bytes for failure messages.
pub fn escape_short(b: &[u8], max: usize) -> String {
    if b.len() <= max {
        escape(b)
    } else {
        format!("{}... ({} bytes in all)", escape(&b[..max]), b.len())
    }
}

/// Encodes a command as a RESP multibulk array.
pub fn encode_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}
