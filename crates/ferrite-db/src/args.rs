//! A command's arguments ([`Argv`]) and a cursor over them ([`Args`]), so
//! each command parses in a few lines and trailing garbage is rejected in
//! one place ([`Args::finish`]).

use crate::error::CmdError;
use bytes::Bytes;
use std::cell::OnceCell;
use std::ops::Range;

/// A command's arguments, `argv[0]` its name.
///
/// From the network they are one buffer (the request's bytes, one
/// reference count) and where each argument lies in it: a `Bytes` per
/// argument would cost an atomic reference-count increment and decrement
/// per argument and command, a tenth of XADD's time. Commands read them as
/// slices; a `Bytes` of one argument ([`Argv::bytes`]), or of all of them
/// ([`Argv::as_bytes`], made once and kept), is cut only when asked for.
pub struct Argv {
    repr: Repr,
    list: OnceCell<Vec<Bytes>>,
}

enum Repr {
    Frame {
        frame: Bytes,
        spans: Vec<Range<usize>>,
    },
    List(Vec<Bytes>),
}

impl Argv {
    /// Arguments at `spans` of `frame` (each within it).
    pub fn from_frame(frame: Bytes, spans: Vec<Range<usize>>) -> Argv {
        debug_assert!(spans
            .iter()
            .all(|r| r.start <= r.end && r.end <= frame.len()));
        Argv {
            repr: Repr::Frame { frame, spans },
            list: OnceCell::new(),
        }
    }
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Frame { spans, .. } => spans.len(),
            Repr::List(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        match &self.repr {
            Repr::Frame { frame, spans } => spans.get(i).map(|r| &frame[r.clone()]),
            Repr::List(v) => v.get(i).map(|b| &b[..]),
        }
    }
    pub fn first(&self) -> Option<&[u8]> {
        self.get(0)
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
    /// Argument `i` as a `Bytes` sharing the request's buffer.
    pub fn bytes(&self, i: usize) -> Option<Bytes> {
        match &self.repr {
            Repr::Frame { frame, spans } => spans.get(i).map(|r| frame.slice(r.clone())),
            Repr::List(v) => v.get(i).cloned(),
        }
    }
    /// Every argument as a `Bytes` (cut once, then kept).
    pub fn as_bytes(&self) -> &[Bytes] {
        match &self.repr {
            Repr::List(v) => v,
            Repr::Frame { frame, spans } => self
                .list
                .get_or_init(|| spans.iter().map(|r| frame.slice(r.clone())).collect()),
        }
    }
    pub fn into_vec(self) -> Vec<Bytes> {
        match self.repr {
            Repr::List(v) => v,
            Repr::Frame { frame, spans } => match self.list.into_inner() {
                Some(v) => v,
                None => spans.into_iter().map(|r| frame.slice(r)).collect(),
            },
        }
    }
}

impl From<Vec<Bytes>> for Argv {
    fn from(v: Vec<Bytes>) -> Argv {
        Argv {
            repr: Repr::List(v),
            list: OnceCell::new(),
        }
    }
}

impl std::ops::Index<usize> for Argv {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        match &self.repr {
            Repr::Frame { frame, spans } => &frame[spans[i].clone()],
            Repr::List(v) => &v[i],
        }
    }
}

/// Equal when the arguments are, however they are held.
impl PartialEq for Argv {
    fn eq(&self, other: &Argv) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Argv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|a| String::from_utf8_lossy(a)))
            .finish()
    }
}

/// Read access to a command's arguments however they are held (an
/// [`Argv`], or a list of `Bytes` such as EXEC's queue). `arg(i)` wants
/// `i < argc()`, as slice indexing does.
pub trait ArgList {
    fn argc(&self) -> usize;
    fn arg(&self, i: usize) -> &[u8];
}

impl ArgList for [Bytes] {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        &self[i]
    }
}

impl ArgList for Vec<Bytes> {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        &self[i]
    }
}

impl ArgList for Argv {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        &self[i]
    }
}

pub struct Args<'a> {
    src: Src<'a>,
    pos: usize,
}

enum Src<'a> {
    Owned(Argv),
    Borrowed(&'a [Bytes]),
}

impl Args<'static> {
    /// `argv[0]` is the command name; the cursor starts after it (or after
    /// the subcommand, see [`Args::skip`]).
    pub fn new(argv: impl Into<Argv>) -> Args<'static> {
        Args {
            src: Src::Owned(argv.into()),
            pos: 1,
        }
    }
}

impl<'a> Args<'a> {
    /// A cursor over arguments the caller keeps (parsing ahead of running,
    /// without copying them: `cmd::parsed`).
    pub fn borrowed(argv: &'a [Bytes]) -> Args<'a> {
        Args {
            src: Src::Borrowed(argv),
            pos: 1,
        }
    }
    fn argc(&self) -> usize {
        match &self.src {
            Src::Owned(a) => a.len(),
            Src::Borrowed(s) => s.len(),
        }
    }
    /// Argument `i` (counting the name) as a slice.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        match &self.src {
            Src::Owned(a) => a.get(i),
            Src::Borrowed(s) => s.get(i).map(|b| &b[..]),
        }
    }
    /// Every argument as a `Bytes` (network arguments are cut into them
    /// on the first call: the hot commands read [`Args::arg`] instead).
    pub fn all(&self) -> &[Bytes] {
        match &self.src {
            Src::Owned(a) => a.as_bytes(),
            Src::Borrowed(s) => s,
        }
    }
    pub fn into_vec(self) -> Vec<Bytes> {
        match self.src {
            Src::Owned(a) => a.into_vec(),
            Src::Borrowed(s) => s.to_vec(),
        }
    }
    pub fn remaining(&self) -> usize {
        self.argc().saturating_sub(self.pos)
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn skip(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.argc());
    }
    pub fn peek(&self) -> Option<&Bytes> {
        self.all().get(self.pos)
    }
    /// The next argument as a slice, without consuming it.
    pub fn peek_slice(&self) -> Option<&[u8]> {
        self.arg(self.pos)
    }
    /// True (and consumes it) if the next argument is `kw`, case-insensitively.
    pub fn eat(&mut self, kw: &str) -> bool {
        match self.peek_slice() {
            Some(a) if a.eq_ignore_ascii_case(kw.as_bytes()) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
    pub fn next_bytes(&mut self) -> Result<Bytes, CmdError> {
        let a = match &self.src {
            Src::Owned(a) => a.bytes(self.pos),
            Src::Borrowed(s) => s.get(self.pos).cloned(),
        };
        let a = a.ok_or(CmdError::Syntax)?;
        self.pos += 1;
        Ok(a)
    }
    /// The next argument as an i64 with Redis's strict rules (see [`parse_i64`]).
    pub fn next_i64(&mut self) -> Result<i64, CmdError> {
        let a = self.peek_slice().ok_or(CmdError::Syntax)?;
        let n = parse_i64(a).ok_or(CmdError::NotInteger);
        self.pos += 1;
        n
    }
    /// The rest of the arguments.
    pub fn rest(&mut self) -> &[Bytes] {
        let p = self.pos;
        self.pos = self.argc();
        &self.all()[p..]
    }
    /// Fails with `ERR syntax error` if anything is left.
    pub fn finish(&self) -> Result<(), CmdError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(CmdError::Syntax)
        }
    }
}

/// Redis's `string2ll`: optional `-`, digits, no leading zeros (but "0"), no
/// `+`, no spaces, at most 20 characters, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1a"] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }
}
