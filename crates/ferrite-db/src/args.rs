//! A cursor over a command's arguments, so each command parses in a few lines
//! and trailing garbage is rejected in one place ([`Args::finish`]).

use crate::error::CmdError;
use bytes::Bytes;
use std::borrow::Cow;

pub struct Args<'a> {
    argv: Cow<'a, [Bytes]>,
    pos: usize,
}

impl Args<'static> {
    /// `argv[0]` is the command name; the cursor starts after it (or after
    /// the subcommand, see [`Args::skip`]).
    pub fn new(argv: Vec<Bytes>) -> Args<'static> {
        Args {
            argv: Cow::Owned(argv),
            pos: 1,
        }
    }
}

impl<'a> Args<'a> {
    /// A cursor over arguments the caller keeps (parsing ahead of running,
    /// without copying them: `cmd::parsed`).
    pub fn borrowed(argv: &'a [Bytes]) -> Args<'a> {
        Args {
            argv: Cow::Borrowed(argv),
            pos: 1,
        }
    }
    pub fn all(&self) -> &[Bytes] {
        &self.argv
    }
    pub fn into_vec(self) -> Vec<Bytes> {
        self.argv.into_owned()
    }
    pub fn remaining(&self) -> usize {
        self.argv.len().saturating_sub(self.pos)
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn skip(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.argv.len());
    }
    pub fn peek(&self) -> Option<&Bytes> {
        self.argv.get(self.pos)
    }
    /// True (and consumes it) if the next argument is `kw`, case-insensitively.
    pub fn eat(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(a) if a.eq_ignore_ascii_case(kw.as_bytes()) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
    pub fn next_bytes(&mut self) -> Result<Bytes, CmdError> {
        let a = self.argv.get(self.pos).cloned().ok_or(CmdError::Syntax)?;
        self.pos += 1;
        Ok(a)
    }
    /// The next argument as an i64 with Redis's strict rules (see [`parse_i64`]).
    pub fn next_i64(&mut self) -> Result<i64, CmdError> {
        let a = self.next_bytes()?;
        parse_i64(&a).ok_or(CmdError::NotInteger)
    }
    /// The rest of the arguments.
    pub fn rest(&mut self) -> &[Bytes] {
        let p = self.pos;
        self.pos = self.argv.len();
        &self.argv[p..]
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
