//! The sorted set type: members ordered by (score, member). Small ones are
//! a sorted vector (Redis's listpack); larger ones a member → score table
//! ([`Slots`], whose stable slots make ZSCAN cursors) plus an ordered index
//! (Redis's skiplist). `OBJECT ENCODING` says `listpack` or `skiplist`.
//!
//! Conversion follows Redis 7.0: a sorted set is created as a skiplist if
//! its first member is longer than [`MAX_LISTPACK_VALUE`] bytes, becomes
//! one before a new member would make it hold more than
//! [`MAX_LISTPACK_ENTRIES`] or a longer member is added, and never converts
//! back. A listpack stores scores as text (`d2string`), which turns -0 into
//! 0; a skiplist keeps -0.
//!
//! Scores are never NaN (commands refuse it), so they have a total order;
//! -0 and 0 are equal, as in Redis's comparisons.
//!
//! Snapshot form (checkpoint tag 5), written by [`ZSet::encode`]: one byte
//! for the encoding (0 listpack, 1 skiplist), the member count as a LEB128
//! varint, then each member as its score (8 bytes, IEEE 754 little-endian:
//! bit-exact), length (varint) and bytes. [`ZSet::decode`] checks every
//! length, refuses NaN scores and duplicates, and re-applies the
//! conversion rule.

use super::codec::{get_varint, put_varint, take};
use super::cow::CowBody;
use super::set::Slots;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Redis's `zset-max-listpack-entries` default.
pub const MAX_LISTPACK_ENTRIES: usize = 128;
/// Redis's `zset-max-listpack-value` default.
pub const MAX_LISTPACK_VALUE: usize = 64;

/// A score with a total order (scores are never NaN: commands refuse it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

#[derive(Debug, Clone)]
pub enum ZSet {
    /// Sorted by (score, member); at most `zset-max-listpack-entries`
    /// members of at most `zset-max-listpack-value` bytes.
    Listpack(Listpack),
    /// Shared copy on write with a checkpoint that is encoding it
    /// ([`ZSet::share`]): every write goes through `CowBody::make_mut`,
    /// which copies both halves first while a snapshot holds them.
    Skiplist(CowBody<Skiplist>),
}

/// A large sorted set: member → score, and the (score, member) order.
/// Both hold exactly the same members.
#[derive(Debug, Clone, Default)]
pub struct Skiplist {
    scores: Slots<Score>,
    order: BTreeSet<(Score, Bytes)>,
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Listpack(Listpack::default())
    }
}

/// A small sorted set's entries in (score, member) order in one buffer,
/// each `score (8 bytes LE) | len | member | len` (members are at most
/// [`MAX_LISTPACK_VALUE`] bytes, so a byte holds the length; the trailing
/// copy lets the buffer be walked backwards, as Redis's listpack `backlen`).
#[derive(Debug, Clone, Default)]
pub struct Listpack {
    buf: Vec<u8>,
    len: usize,
}

/// Walks a [`Listpack`] from both ends.
pub struct LpIter<'a> {
    buf: &'a [u8],
    front: usize,
    back: usize,
}

impl<'a> Iterator for LpIter<'a> {
    type Item = (f64, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let p = self.front;
        let mut bits = [0u8; 8];
        bits.copy_from_slice(self.buf.get(p..p + 8)?);
        let n = *self.buf.get(p + 8)? as usize;
        let m = self.buf.get(p + 9..p + 9 + n)?;
        self.front = p + 10 + n;
        Some((f64::from_bits(u64::from_le_bytes(bits)), m))
    }
}

impl DoubleEndedIterator for LpIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.back <= self.front {
            return None;
        }
        let e = self.back;
        let n = *self.buf.get(e.checked_sub(1)?)? as usize;
        let p = e.checked_sub(10 + n)?;
        let mut bits = [0u8; 8];
        bits.copy_from_slice(self.buf.get(p..p + 8)?);
        let m = self.buf.get(p + 9..p + 9 + n)?;
        self.back = p;
        Some((f64::from_bits(u64::from_le_bytes(bits)), m))
    }
}

impl Listpack {
    fn iter(&self) -> LpIter<'_> {
        LpIter {
            buf: &self.buf,
            front: 0,
            back: self.buf.len(),
        }
    }

    /// Entries with their offsets, in order.
    fn offsets(&self) -> impl Iterator<Item = (usize, f64, &[u8])> + '_ {
        let mut at = 0usize;
        let mut it = self.iter();
        std::iter::from_fn(move || {
            let (s, m) = it.next()?;
            let start = at;
            at += 10 + m.len();
            Some((start, s, m))
        })
    }

    fn find(&self, member: &[u8]) -> Option<(usize, usize, f64)> {
        self.offsets()
            .enumerate()
            .find(|(_, (_, _, m))| *m == member)
            .map(|(i, (at, s, _))| (i, at, s))
    }

    fn remove_at(&mut self, at: usize, mlen: usize) {
        self.buf.drain(at..at + 10 + mlen);
        self.len -= 1;
        if self.len == 0 {
            self.buf = Vec::new();
        }
    }

    /// Inserts in (score, member) order (the member is not present).
    fn insert(&mut self, score: f64, member: &[u8]) {
        let at = self
            .offsets()
            .find(|(_, s, m)| (Score(*s), *m) >= (Score(score), member))
            .map_or(self.buf.len(), |(at, _, _)| at);
        let mut e = Vec::with_capacity(10 + member.len());
        e.extend_from_slice(&score.to_bits().to_le_bytes());
        e.push(member.len() as u8);
        e.extend_from_slice(member);
        e.push(member.len() as u8);
        self.buf.splice(at..at, e);
        self.len += 1;
    }
}

/// One end of a score range (`zslParseRange`).
#[derive(Debug, Clone, Copy)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

/// One end of a lex range (`zslParseLexRangeItem`).
#[derive(Debug, Clone)]
pub enum LexBound {
    /// `-`
    Min,
    /// `+`
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

impl ScoreBound {
    fn above_min(&self, s: f64) -> bool {
        if self.exclusive {
            s > self.value
        } else {
            s >= self.value
        }
    }
    fn below_max(&self, s: f64) -> bool {
        if self.exclusive {
            s < self.value
        } else {
            s <= self.value
        }
    }
}

impl LexBound {
    fn above_min(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Min => true,
            LexBound::Max => false,
            LexBound::Incl(b) => m >= &b[..],
            LexBound::Excl(b) => m > &b[..],
        }
    }
    fn below_max(&self, m: &[u8]) -> bool {
        match self {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Incl(b) => m <= &b[..],
            LexBound::Excl(b) => m < &b[..],
        }
    }
}

/// A score range: `min`..`max`.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRange {
    pub min: ScoreBound,
    pub max: ScoreBound,
}

impl ScoreRange {
    pub fn contains(&self, s: f64) -> bool {
        self.min.above_min(s) && self.max.below_max(s)
    }
    /// Redis's `zslIsInRange`: false when no score can be in it.
    fn possible(&self) -> bool {
        !(self.min.value > self.max.value
            || (self.min.value == self.max.value && (self.min.exclusive || self.max.exclusive)))
    }
}

#[derive(Debug, Clone)]
pub struct LexRange {
    pub min: LexBound,
    pub max: LexBound,
}

impl LexRange {
    pub fn contains(&self, m: &[u8]) -> bool {
        self.min.above_min(m) && self.max.below_max(m)
    }
}

fn own(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl ZSet {
    /// An empty sorted set with the encoding Redis 7.0's ZADD picks for a
    /// set whose first member is `first`.
    pub fn new_for(first: &[u8]) -> ZSet {
        if first.len() > MAX_LISTPACK_VALUE {
            ZSet::Skiplist(CowBody::default())
        } else {
            ZSet::Listpack(Listpack::default())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ZSet::Listpack(v) => v.len,
            ZSet::Skiplist(z) => z.scores.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match self {
            ZSet::Listpack(_) => "listpack",
            ZSet::Skiplist(_) => "skiplist",
        }
    }

    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            ZSet::Listpack(v) => v.find(member).map(|(_, _, s)| s),
            ZSet::Skiplist(z) => z.scores.get(member).map(|s| s.0),
        }
    }

    /// Set `member`'s score (adding it if new); true if it is new.
    /// Converts to a skiplist as Redis's `zsetAdd` does.
    pub fn set(&mut self, member: &[u8], score: f64) -> bool {
        if let ZSet::Listpack(v) = self {
            // A listpack keeps the score's text: -0 reads back as 0.
            let score = score + 0.0;
            if let Some((_, at, _)) = v.find(member) {
                v.remove_at(at, member.len());
                v.insert(score, member);
                return false;
            }
            if v.len < MAX_LISTPACK_ENTRIES && member.len() <= MAX_LISTPACK_VALUE {
                v.insert(score, member);
                return true;
            }
            self.convert();
        }
        match self {
            // The same score, bit for bit, changes nothing: no copy.
            ZSet::Skiplist(z)
                if z.scores
                    .get(member)
                    .is_some_and(|s| s.0.to_bits() == score.to_bits()) =>
            {
                false
            }
            ZSet::Skiplist(z) => {
                let Skiplist { scores, order } = z.make_mut();
                let m = own(member);
                match scores.insert(m.clone(), Score(score)) {
                    Some(old) => {
                        if let Some((_, key)) = order.take(&(old, m.clone())) {
                            order.insert((Score(score), key));
                        }
                        false
                    }
                    None => {
                        order.insert((Score(score), m));
                        true
                    }
                }
            }
            ZSet::Listpack(_) => false,
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            ZSet::Listpack(v) => match v.find(member) {
                Some((_, at, _)) => {
                    v.remove_at(at, member.len());
                    true
                }
                None => false,
            },
            // A miss does not copy a shared set.
            ZSet::Skiplist(z) if !z.scores.contains(member) => false,
            ZSet::Skiplist(z) => {
                let Skiplist { scores, order } = z.make_mut();
                match scores.remove(member) {
                    Some(s) => {
                        order.remove(&(s, own(member)));
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn convert(&mut self) {
        if let ZSet::Listpack(v) = self {
            let mut scores = Slots::default();
            let mut order = BTreeSet::new();
            for (s, m) in v.iter() {
                let m = own(m);
                scores.insert(m.clone(), Score(s));
                order.insert((Score(s), m));
            }
            *self = ZSet::Skiplist(CowBody::new(Skiplist { scores, order }));
        }
    }

    /// Members in (score, member) order; `.rev()` for descending.
    pub fn iter(&self) -> Box<dyn DoubleEndedIterator<Item = (f64, &[u8])> + '_> {
        match self {
            ZSet::Listpack(v) => Box::new(v.iter()),
            ZSet::Skiplist(z) => Box::new(z.order.iter().map(|(s, m)| (s.0, m.as_ref()))),
        }
    }

    /// `member`'s 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        match self {
            ZSet::Listpack(v) => v.find(member).map(|(i, _, _)| i),
            ZSet::Skiplist(z) => {
                let s = *z.scores.get(member)?;
                Some(z.order.range(..(s, own(member))).count())
            }
        }
    }

    /// The members with a score in `r`, ascending (or descending if `rev`).
    pub fn range_by_score<'a>(
        &'a self,
        r: &ScoreRange,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (f64, &'a [u8])> + 'a> {
        if !r.possible() {
            return Box::new(std::iter::empty());
        }
        let r = *r;
        if rev {
            Box::new(
                self.iter()
                    .rev()
                    .skip_while(move |(s, _)| !r.max.below_max(*s))
                    .take_while(move |(s, _)| r.min.above_min(*s)),
            )
        } else {
            Box::new(
                self.iter()
                    .skip_while(move |(s, _)| !r.min.above_min(*s))
                    .take_while(move |(s, _)| r.max.below_max(*s)),
            )
        }
    }

    /// The members in lex range `r` (Redis assumes equal scores), ascending
    /// (or descending if `rev`): from the first member past the start bound
    /// while members stay within the other one, as Redis walks them.
    pub fn range_by_lex<'a>(
        &'a self,
        r: &'a LexRange,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (f64, &'a [u8])> + 'a> {
        if rev {
            Box::new(
                self.iter()
                    .rev()
                    .skip_while(move |(_, m)| !r.max.below_max(m))
                    .take_while(move |(_, m)| r.min.above_min(m)),
            )
        } else {
            Box::new(
                self.iter()
                    .skip_while(move |(_, m)| !r.min.above_min(m))
                    .take_while(move |(_, m)| r.max.below_max(m)),
            )
        }
    }

    /// Remove and return the lowest (or highest, `max`) member.
    pub fn pop(&mut self, max: bool) -> Option<(f64, Bytes)> {
        match self {
            ZSet::Listpack(v) => {
                let (s, m) = if max {
                    v.iter().next_back()?
                } else {
                    v.iter().next()?
                };
                let (s, m) = (s, Bytes::copy_from_slice(m));
                let at = if max { v.buf.len() - 10 - m.len() } else { 0 };
                v.remove_at(at, m.len());
                Some((s, m))
            }
            // An empty set does not copy a shared one.
            ZSet::Skiplist(z) if z.order.is_empty() => None,
            ZSet::Skiplist(z) => {
                let Skiplist { scores, order } = z.make_mut();
                let (s, m) = if max {
                    order.pop_last()?
                } else {
                    order.pop_first()?
                };
                scores.remove(&m);
                Some((s.0, m))
            }
        }
    }

    /// One member chosen by `random` (any u64), uniformly.
    pub fn random(&self, random: u64) -> Option<(f64, &[u8])> {
        match self {
            ZSet::Listpack(v) if v.len == 0 => None,
            ZSet::Listpack(v) => v.iter().nth((random % v.len as u64) as usize),
            ZSet::Skiplist(z) => z.scores.random(random).map(|(m, s)| (s.0, m.as_ref())),
        }
    }

    /// ZSCAN: a listpack is visited whole and the cursor is 0 (as Redis).
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], f64)) -> u64 {
        match self {
            ZSet::Listpack(v) => {
                for (s, m) in v.iter() {
                    f(m, s);
                }
                0
            }
            ZSet::Skiplist(z) => z.scores.scan(cursor, count, |m, s| f(m, s.0)),
        }
    }

    /// An estimate of the bytes this sorted set occupies (INFO memory).
    pub fn memory_usage(&self) -> usize {
        if let ZSet::Listpack(v) = self {
            return 32 + v.buf.capacity();
        }
        let data: usize = self.iter().map(|(_, m)| m.len()).sum();
        match self {
            ZSet::Listpack(_) => 0,
            // The Arc's counts live beside the two halves.
            ZSet::Skiplist(z) => 112 + data + z.scores.capacity() * 48 + self.len() * 96,
        }
    }

    /// For a checkpoint: a skiplist shared with this sorted set (no copy; a
    /// later write to this set copies it first), to [`ZSet::encode`] off
    /// the store lock. `None` for a listpack (small: encode it in place).
    pub fn share(&self) -> Option<ZSet> {
        match self {
            ZSet::Listpack(_) => None,
            ZSet::Skiplist(z) => Some(ZSet::Skiplist(z.clone())),
        }
    }

    /// [`ZSet::share`] for a snapshot, unless the skiplist was written
    /// often since the last one ([`CowBody::take_hot`]): then `None`, and
    /// it is encoded in place.
    pub fn share_cold(&mut self) -> Option<ZSet> {
        if let ZSet::Skiplist(z) = self {
            if z.take_hot() {
                return None;
            }
        }
        self.share()
    }

    /// Append the snapshot form (see the module doc).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            ZSet::Listpack(_) => 0,
            ZSet::Skiplist(_) => 1,
        });
        put_varint(out, self.len() as u64);
        for (s, m) in self.iter() {
            out.extend_from_slice(&s.to_bits().to_le_bytes());
            put_varint(out, m.len() as u64);
            out.extend_from_slice(m);
        }
    }

    /// Read a snapshot form from the front of `r`, advancing it.
    pub fn decode(r: &mut &[u8]) -> Result<ZSet, String> {
        let kind = take(r, 1)?[0];
        let n = get_varint(r)?;
        let mut z = match kind {
            0 => ZSet::Listpack(Listpack::default()),
            1 => ZSet::new_for(&[0u8; MAX_LISTPACK_VALUE + 1]),
            k => return Err(format!("unknown sorted set encoding {k}")),
        };
        for _ in 0..n {
            let mut bits = [0u8; 8];
            bits.copy_from_slice(take(r, 8)?);
            let score = f64::from_bits(u64::from_le_bytes(bits));
            if score.is_nan() {
                return Err("NaN score in sorted set".into());
            }
            let len = usize::try_from(get_varint(r)?).map_err(|_| "member too long")?;
            if !z.set(take(r, len)?, score) {
                return Err("duplicate member in sorted set".into());
            }
        }
        Ok(z)
    }
}

/// What C's `strtod` reads from the front of `s`: the value, how many
/// bytes it consumed (0: no conversion) and whether it was out of range
/// (`ERANGE`: overflow to ±inf, or underflow of a non-zero number to 0).
pub fn strtod(s: &[u8]) -> (f64, usize, bool) {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let sign = if neg { -1.0 } else { 1.0 };
    let rest = &s[i..];
    let starts = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
    if starts(b"infinity") {
        return (sign * f64::INFINITY, i + 8, false);
    }
    if starts(b"inf") {
        return (sign * f64::INFINITY, i + 3, false);
    }
    if starts(b"nan") {
        let mut end = i + 3;
        if s.get(end) == Some(&b'(') {
            if let Some(close) = s[end..].iter().position(|&c| c == b')') {
                if s[end + 1..end + close]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    end += close + 1;
                }
            }
        }
        return (f64::NAN, end, false);
    }
    if (starts(b"0x") || starts(b"0X")) && hex_start(&rest[2..]) {
        let (v, n, erange) = hex_float(&rest[2..]);
        return (sign * v, i + 2 + n, erange);
    }
    // Decimal: digits, optional fraction, optional exponent.
    let mut j = i;
    let (mut int_digits, mut frac_digits) = (0, 0);
    while j < s.len() && s[j].is_ascii_digit() {
        j += 1;
        int_digits += 1;
    }
    let int_end = j;
    if j < s.len() && s[j] == b'.' {
        let mut k = j + 1;
        while k < s.len() && s[k].is_ascii_digit() {
            k += 1;
            frac_digits += 1;
        }
        if int_digits + frac_digits > 0 {
            j = k;
        }
    }
    if int_digits + frac_digits == 0 {
        return (0.0, 0, false);
    }
    let mantissa_end = j;
    if j < s.len() && (s[j] == b'e' || s[j] == b'E') {
        let mut k = j + 1;
        if k < s.len() && (s[k] == b'+' || s[k] == b'-') {
            k += 1;
        }
        if k < s.len() && s[k].is_ascii_digit() {
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    let int_part = &s[i..int_end];
    let frac_part = if mantissa_end > int_end {
        &s[int_end + 1..mantissa_end]
    } else {
        &b""[..]
    };
    let exp_part = &s[mantissa_end..j];
    let mut text = String::with_capacity(j - i + 4);
    text.push_str(if int_part.is_empty() {
        "0"
    } else {
        std::str::from_utf8(int_part).unwrap_or("0")
    });
    text.push('.');
    text.push_str(std::str::from_utf8(frac_part).unwrap_or(""));
    text.push('0');
    text.push_str(std::str::from_utf8(exp_part).unwrap_or(""));
    let v: f64 = text.parse().unwrap_or(0.0);
    let nonzero = int_part.iter().chain(frac_part).any(|&c| c != b'0');
    let erange = v.is_infinite() || (v == 0.0 && nonzero);
    (sign * v, j, erange)
}

fn hex_start(s: &[u8]) -> bool {
    match s.first() {
        Some(c) if c.is_ascii_hexdigit() => true,
        Some(b'.') => s.get(1).is_some_and(|c| c.is_ascii_hexdigit()),
        _ => false,
    }
}

/// A hexadecimal float after `0x`: value, bytes consumed, out of range.
fn hex_float(s: &[u8]) -> (f64, usize, bool) {
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut nonzero = false;
    let mut i = 0;
    let mut seen_dot = false;
    while i < s.len() {
        let c = s[i];
        if c == b'.' && !seen_dot {
            seen_dot = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            nonzero |= d != 0;
            if mant >> 56 == 0 {
                mant = mant * 16 + u64::from(d);
                if seen_dot {
                    exp -= 4;
                }
            } else if !seen_dot {
                exp += 4;
            }
        } else {
            break;
        }
        i += 1;
    }
    if i < s.len() && (s[i] == b'p' || s[i] == b'P') {
        let mut k = i + 1;
        let eneg = match s.get(k) {
            Some(b'-') => {
                k += 1;
                true
            }
            Some(b'+') => {
                k += 1;
                false
            }
            _ => false,
        };
        if k < s.len() && s[k].is_ascii_digit() {
            let mut e: i64 = 0;
            while k < s.len() && s[k].is_ascii_digit() {
                e = (e * 10 + i64::from(s[k] - b'0')).min(100_000);
                k += 1;
            }
            exp += if eneg { -e } else { e };
            i = k;
        }
    }
    let v = (mant as f64) * 2f64.powi(exp.clamp(-2000, 2000) as i32);
    (v, i, v.is_infinite() || (v == 0.0 && nonzero))
}

/// A score argument as Redis's `getDoubleFromObject` reads it: the whole
/// string, no leading space, not NaN, no overflow or underflow to zero.
pub fn parse_score(b: &[u8]) -> Option<f64> {
    if b.is_empty() || matches!(b[0], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        return None;
    }
    let (v, n, erange) = strtod(b);
    (n == b.len() && !erange && !v.is_nan()).then_some(v)
}

/// One end of a score range as `zslParseRange` reads it: `(` for
/// exclusive, then anything `strtod` reads up to the end (or a NUL byte).
pub fn parse_score_bound(b: &[u8]) -> Option<ScoreBound> {
    let (exclusive, rest) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    let (value, n, _) = strtod(rest);
    if (n != rest.len() && rest[n] != 0) || value.is_nan() {
        return None;
    }
    Some(ScoreBound { value, exclusive })
}

/// One end of a lex range as `zslParseLexRangeItem` reads it.
pub fn parse_lex_bound(b: &[u8]) -> Option<LexBound> {
    match b.first() {
        Some(b'+') if b.len() == 1 => Some(LexBound::Max),
        Some(b'-') if b.len() == 1 => Some(LexBound::Min),
        Some(b'(') => Some(LexBound::Excl(own(&b[1..]))),
        Some(b'[') => Some(LexBound::Incl(own(&b[1..]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write to a sorted set a snapshot shares leaves the shared copy as
    /// it was; a miss or an unchanged score does not copy it.
    #[test]
    fn a_shared_skiplist_is_copied_on_write() {
        let mut z = ZSet::default();
        for i in 0..300 {
            z.set(format!("m{i}").as_bytes(), i as f64);
        }
        let shared = z.share().unwrap_or_else(|| panic!("not shared"));
        let mut before = Vec::new();
        shared.encode(&mut before);
        let ptr = |z: &ZSet| match z {
            ZSet::Skiplist(s) => s.as_ptr(),
            ZSet::Listpack(_) => panic!("not a skiplist"),
        };
        assert!(!z.remove(b"absent") && !z.set(b"m1", 1.0));
        assert_eq!(ptr(&z), ptr(&shared), "no change copies nothing");
        // -0 is kept as such by a skiplist: a change of bits, so a write.
        assert!(!z.set(b"m0", -0.0));
        assert_ne!(ptr(&z), ptr(&shared));
        for (i, op) in [0, 1, 2, 3].into_iter().enumerate() {
            let mut z = shared.clone();
            match op {
                0 => assert!(z.set(b"new", 7.5)),
                1 => assert!(!z.set(b"m5", 1000.0)),
                2 => assert!(z.remove(b"m9")),
                _ => assert_eq!(z.pop(true), Some((299.0, Bytes::from("m299")))),
            }
            assert_ne!(ptr(&z), ptr(&shared), "op {i}");
        }
        let mut after = Vec::new();
        shared.encode(&mut after);
        assert_eq!(before, after);
        assert_eq!(z.score(b"m0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(
            shared.score(b"m0").map(f64::to_bits),
            Some(0.0f64.to_bits())
        );
        assert!(ZSet::default().share().is_none());
    }

    #[test]
    fn strtod_like_c() {
        assert_eq!(parse_score(b"1.5"), Some(1.5));
        assert_eq!(parse_score(b"0x10"), Some(16.0));
        assert_eq!(parse_score(b"-0X1.8P1"), Some(-3.0));
        assert_eq!(parse_score(b"0x.8"), Some(0.5));
        assert_eq!(parse_score(b"1."), Some(1.0));
        assert_eq!(parse_score(b".5"), Some(0.5));
        assert_eq!(parse_score(b"+Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"1e-310"), Some(1e-310));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"nan",
            b"1e400",
            b"1e-400",
            b"0x",
            b"abc",
            b"1e",
            b".",
        ] {
            assert_eq!(parse_score(bad), None, "{:?}", bad);
        }
        assert!(parse_score_bound(b"").is_some_and(|b| b.value == 0.0));
        assert!(parse_score_bound(b"( 1").is_some_and(|b| b.exclusive && b.value == 1.0));
        assert!(parse_score_bound(b" ").is_none());
        assert!(parse_score_bound(b"1e400").is_some_and(|b| b.value.is_infinite()));
    }

    #[test]
    fn listpack_converts_at_the_limits_and_orders() {
        let mut z = ZSet::new_for(b"a");
        for i in 0..MAX_LISTPACK_ENTRIES {
            assert!(z.set(format!("m{i}").as_bytes(), (i % 7) as f64));
        }
        assert_eq!(z.encoding(), "listpack");
        let before: Vec<_> = z.iter().map(|(s, m)| (s, m.to_vec())).collect();
        assert!(z.set(b"x", 1.0));
        assert_eq!(z.encoding(), "skiplist");
        assert!(z.remove(b"x"));
        let after: Vec<_> = z.iter().map(|(s, m)| (s, m.to_vec())).collect();
        assert_eq!(before, after);
        assert_eq!(z.rank(b"m0"), Some(0));
        let mut z = ZSet::new_for(b"a");
        z.set(b"a", -0.0);
        assert!(z.score(b"a").is_some_and(|s| s.is_sign_positive()));
        assert_eq!(ZSet::new_for(&[b'x'; 65]).encoding(), "skiplist");
    }

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        for n in [0usize, 3, 200] {
            let mut z = ZSet::default();
            for i in 0..n {
                z.set(format!("m{i}").as_bytes(), i as f64 * 0.1);
            }
            let mut out = Vec::new();
            z.encode(&mut out);
            out.push(9);
            let mut r = &out[..];
            let d = ZSet::decode(&mut r).unwrap();
            assert_eq!(r, &[9]);
            assert_eq!(d.encoding(), z.encoding());
            let a: Vec<_> = z.iter().map(|(s, m)| (s.to_bits(), m.to_vec())).collect();
            let b: Vec<_> = d.iter().map(|(s, m)| (s.to_bits(), m.to_vec())).collect();
            assert_eq!(a, b);
            for cut in 0..out.len() - 1 {
                let mut r = &out[..cut];
                assert!(ZSet::decode(&mut r).is_err(), "cut at {cut}");
            }
        }
        let mut nan = vec![0u8, 1];
        nan.extend_from_slice(&f64::NAN.to_bits().to_le_bytes());
        nan.extend_from_slice(&[1, b'a']);
        assert!(ZSet::decode(&mut &nan[..]).is_err());
    }

    #[test]
    fn flat_listpack_orders_walks_both_ways_and_pops() {
        let mut z = ZSet::default();
        for (m, sc) in [("b", 2.0), ("a", 2.0), ("c", 1.0), ("zz", -0.0), ("d", 3.5)] {
            assert!(z.set(m.as_bytes(), sc));
        }
        let fwd: Vec<(f64, Vec<u8>)> = z.iter().map(|(s, m)| (s, m.to_vec())).collect();
        let want: Vec<(f64, Vec<u8>)> =
            [(0.0, "zz"), (1.0, "c"), (2.0, "a"), (2.0, "b"), (3.5, "d")]
                .iter()
                .map(|(s, m)| (*s, m.as_bytes().to_vec()))
                .collect();
        assert_eq!(fwd, want);
        // -0 is stored as 0 in a listpack (Redis keeps the score's text).
        assert!(z
            .score(b"zz")
            .is_some_and(|s| s.to_bits() == 0f64.to_bits()));
        let rev: Vec<(f64, Vec<u8>)> = z.iter().rev().map(|(s, m)| (s, m.to_vec())).collect();
        assert_eq!(rev, want.iter().rev().cloned().collect::<Vec<_>>());
        // A score change moves the member; rank follows.
        assert!(!z.set(b"c", 9.0));
        assert_eq!(z.rank(b"c"), Some(4));
        assert_eq!(z.pop(true), Some((9.0, Bytes::from_static(b"c"))));
        assert_eq!(z.pop(false), Some((0.0, Bytes::from_static(b"zz"))));
        assert!(z.remove(b"a"));
        assert_eq!(z.len(), 2);
        assert_eq!(
            z.random(1).map(|(s, m)| (s, m.to_vec())),
            Some((3.5, b"d".to_vec()))
        );
        assert_eq!(z.encoding(), "listpack");
    }
}
