//! Key slots: each key's state in one fixed run of `u64` words, so that a
//! key with one open row (the usual TUMBLE case) costs no allocation of
//! its own.
//!
//! A slot is [`KEY_WORDS`] words of key, then `stride` words of row area,
//! in chunks of [`SLOT_CHUNK`] slots (growing never copies them). The key
//! words hold a meta byte (the low byte of the first word: [`LIVE`], the
//! row mode, [`LONG`], the key's length) and, for keys of at most
//! [`KEY_INLINE`] bytes, the key itself; a longer key lives in `long` and
//! the second key word holds its index. The row area holds the key's row
//! when it has exactly one ([`ONE`]); with several ([`SPILL`]) they live in
//! `spills` and the area's first word holds their index. Rows are moved
//! back into the slot when a key is down to one. Ext slots (aggregates that
//! keep an [`Ext`]) sit in a parallel vector, only for plans that have
//! such aggregates.
//!
//! [`Slots::heap_bytes`] is what all this holds on the heap (the slots,
//! the spilled rows by capacity, the long keys), for PIPELINE.INFO's
//! `state_bytes` and STATE_LIMIT.

use super::agg::Ext;
use super::{ExtSlots, KeyState};

/// Slots per chunk.
pub(super) const SLOT_CHUNK: usize = 256;
/// Words of key per slot (the meta byte and up to [`KEY_INLINE`] bytes).
const KEY_WORDS: usize = 2;
/// The longest key kept in its slot.
const KEY_INLINE: usize = KEY_WORDS * 8 - 1;

/// Meta byte: the slot holds a key.
const LIVE: u64 = 0x80;
/// Meta byte: the row area holds the key's one row.
const ONE: u64 = 0x40;
/// Meta byte: the key's rows are in `spills` (index in the area's first word).
const SPILL: u64 = 0x20;
/// Meta byte: the key's bytes are in `long` (index in the second key word).
const LONG: u64 = 0x10;
/// Meta byte: the key's length when inline.
const LEN: u64 = 0x0f;
/// The row mode bits.
const MODE: u64 = ONE | SPILL;

/// A key's bytes: copied out of its slot, or borrowed from `long`.
#[derive(Clone, Copy)]
pub(super) enum KeyBytes<'a> {
    Inline([u8; KEY_WORDS * 8]),
    Long(&'a [u8]),
}

impl std::ops::Deref for KeyBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(b) => &b[1..1 + (b[0] as u64 & LEN) as usize],
            KeyBytes::Long(b) => b,
        }
    }
}

/// A key as it sits in its slot.
pub(super) struct KeyRef<'a> {
    pub key: KeyBytes<'a>,
    pub rows: &'a [u64],
    pub ext: &'a [Ext],
}

impl KeyRef<'_> {
    pub fn ext_bytes(&self) -> u64 {
        super::ext_bytes(self.ext)
    }

    pub fn to_owned(&self) -> KeyState {
        KeyState {
            key: (*self.key).into(),
            rows: self.rows.to_vec(),
            ext: ExtSlots::from_vec(self.ext.to_vec()),
        }
    }
}

impl KeyState {
    pub(super) fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            key: KeyBytes::Long(&self.key),
            rows: &self.rows,
            ext: &self.ext,
        }
    }
}

/// A key's rows and Ext slots, to change in place.
pub(super) struct KeyMut<'a> {
    pub rows: RowsMut<'a>,
    pub ext: &'a mut ExtSlots,
}

impl KeyMut<'_> {
    pub fn ext_bytes(&self) -> u64 {
        super::ext_bytes(&self.ext[..])
    }
}

/// The spilled rows of all keys, and their heap by capacity.
#[derive(Default)]
struct Spills {
    rows: Vec<Vec<u64>>,
    free: Vec<u32>,
    /// Capacity of the live spilled vectors, words.
    words: usize,
}

impl Spills {
    fn put(&mut self, v: Vec<u64>) -> u64 {
        self.words += v.capacity();
        match self.free.pop() {
            Some(i) => {
                self.rows[i as usize] = v;
                i as u64
            }
            None => {
                self.rows.push(v);
                (self.rows.len() - 1) as u64
            }
        }
    }

    fn take(&mut self, i: u64) -> Vec<u64> {
        let v = std::mem::take(&mut self.rows[i as usize]);
        self.words -= v.capacity();
        self.free.push(i as u32);
        v
    }
}

/// A key's rows (`stride` words each, sorted by start) wherever they are;
/// derefs to them as one slice.
pub(super) struct RowsMut<'a> {
    meta: &'a mut u64,
    area: &'a mut [u64],
    spills: &'a mut Spills,
}

impl std::ops::Deref for RowsMut<'_> {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match *self.meta & MODE {
            ONE => self.area,
            SPILL => &self.spills.rows[self.area[0] as usize],
            _ => &[],
        }
    }
}

impl std::ops::DerefMut for RowsMut<'_> {
    fn deref_mut(&mut self) -> &mut [u64] {
        match *self.meta & MODE {
            ONE => self.area,
            SPILL => &mut self.spills.rows[self.area[0] as usize],
            _ => &mut [],
        }
    }
}

impl RowsMut<'_> {
    /// Replaces all rows with `v` (a whole number of rows).
    pub fn set(&mut self, v: Vec<u64>) {
        if *self.meta & SPILL != 0 {
            self.spills.take(self.area[0]);
        }
        *self.meta &= !MODE;
        let s = self.area.len();
        if v.is_empty() {
        } else if v.len() == s {
            self.area.copy_from_slice(&v);
            *self.meta |= ONE;
        } else {
            self.area[0] = self.spills.put(v);
            *self.meta |= SPILL;
        }
    }

    /// Inserts `n` zero words at word `at`.
    pub fn insert_zeroed(&mut self, at: usize, n: usize) {
        match *self.meta & MODE {
            0 if n == self.area.len() => {
                self.area.fill(0);
                *self.meta |= ONE;
            }
            SPILL => {
                let i = self.area[0] as usize;
                let v = &mut self.spills.rows[i];
                let cap = v.capacity();
                v.splice(at..at, std::iter::repeat_n(0, n));
                self.spills.words += v.capacity() - cap;
            }
            _ => {
                let mut v = Vec::with_capacity(self.len() + n.max(self.area.len()));
                v.extend_from_slice(self);
                v.splice(at..at, std::iter::repeat_n(0, n));
                self.set(v);
            }
        }
    }

    /// Removes the words in `r`.
    pub fn drain(&mut self, r: std::ops::Range<usize>) {
        if r.is_empty() {
            return;
        }
        match *self.meta & MODE {
            ONE if r.len() == self.area.len() => *self.meta &= !MODE,
            SPILL => {
                let i = self.area[0] as usize;
                let v = &mut self.spills.rows[i];
                v.drain(r);
                if v.len() <= self.area.len() {
                    let v = self.spills.take(i as u64);
                    *self.meta &= !MODE;
                    self.set(v);
                }
            }
            _ => {
                let mut v = self.to_vec();
                v.drain(r);
                self.set(v);
            }
        }
    }

    /// Keeps the first `n` words.
    pub fn truncate(&mut self, n: usize) {
        let len = self.len();
        if n < len {
            self.drain(n..len);
        }
    }

    pub fn clear(&mut self) {
        self.set(Vec::new());
    }
}

/// How [`Slots::find`] compares a key: its inline words, or its bytes.
pub(super) struct Probe<'k> {
    key: &'k [u8],
    words: Option<[u64; KEY_WORDS]>,
}

/// Key slots by id (see the module doc).
pub(super) struct Slots {
    /// Words per slot: [`KEY_WORDS`] + `stride`.
    words: usize,
    /// Whether keys have Ext slots (`ext` is kept parallel to the slots).
    has_ext: bool,
    chunks: Vec<Box<[u64]>>,
    len: usize,
    long: Vec<Box<[u8]>>,
    long_free: Vec<u32>,
    long_bytes: usize,
    spills: Spills,
    ext: Vec<ExtSlots>,
    /// Handed out as a key's Ext slots when the plan has none.
    no_ext: ExtSlots,
}

/// The key words of `key` (at most [`KEY_INLINE`] bytes) with [`LIVE`].
fn pack(key: &[u8]) -> [u64; KEY_WORDS] {
    let mut b = [0u8; KEY_WORDS * 8];
    b[0] = (LIVE | key.len() as u64) as u8;
    b[1..1 + key.len()].copy_from_slice(key);
    let mut w = [0u64; KEY_WORDS];
    for (i, w) in w.iter_mut().enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(x);
    }
    w
}

impl Slots {
    pub fn new(stride: usize, has_ext: bool) -> Slots {
        Slots {
            words: KEY_WORDS + stride.max(1),
            has_ext,
            chunks: Vec::new(),
            len: 0,
            long: Vec::new(),
            long_free: Vec::new(),
            long_bytes: 0,
            spills: Spills::default(),
            ext: Vec::new(),
            no_ext: ExtSlots::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, k: u32) -> Option<&[u64]> {
        let k = k as usize;
        if k >= self.len {
            return None;
        }
        let at = (k % SLOT_CHUNK) * self.words;
        let w = &self.chunks[k / SLOT_CHUNK][at..at + self.words];
        (w[0] & LIVE != 0).then_some(w)
    }

    fn key_of<'a>(&'a self, w: &[u64]) -> KeyBytes<'a> {
        if w[0] & LONG != 0 {
            KeyBytes::Long(&self.long[w[1] as usize])
        } else {
            let mut b = [0u8; KEY_WORDS * 8];
            for (i, x) in w[..KEY_WORDS].iter().enumerate() {
                b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
            }
            KeyBytes::Inline(b)
        }
    }

    /// Key `k`'s bytes (empty when the slot is free).
    pub fn key(&self, k: u32) -> KeyBytes<'_> {
        match self.slot(k) {
            Some(w) => self.key_of(w),
            None => KeyBytes::Long(&[]),
        }
    }

    pub fn probe<'k>(key: &'k [u8]) -> Probe<'k> {
        Probe {
            key,
            words: (key.len() <= KEY_INLINE).then(|| pack(key)),
        }
    }

    /// Whether key `k` is `p`'s key.
    #[inline]
    pub fn is(&self, k: u32, p: &Probe<'_>) -> bool {
        let Some(w) = self.slot(k) else {
            return false;
        };
        match p.words {
            Some(pw) => w[0] & !MODE == pw[0] && w[1..KEY_WORDS] == pw[1..],
            None => w[0] & LONG != 0 && *self.long[w[1] as usize] == *p.key,
        }
    }

    /// Whether slot `k` holds a key.
    #[inline]
    pub fn has(&self, k: u32) -> bool {
        self.slot(k).is_some()
    }

    pub fn get(&self, k: u32) -> Option<KeyRef<'_>> {
        let w = self.slot(k)?;
        let area = &w[KEY_WORDS..];
        let rows = match w[0] & MODE {
            ONE => area,
            SPILL => &self.spills.rows[area[0] as usize][..],
            _ => &[],
        };
        let ext = if self.has_ext {
            &self.ext[k as usize][..]
        } else {
            &[]
        };
        Some(KeyRef {
            key: self.key_of(w),
            rows,
            ext,
        })
    }

    pub fn get_mut(&mut self, k: u32) -> Option<KeyMut<'_>> {
        self.slot(k)?;
        let at = (k as usize % SLOT_CHUNK) * self.words;
        let w = &mut self.chunks[k as usize / SLOT_CHUNK][at..at + self.words];
        let (key, area) = w.split_at_mut(KEY_WORDS);
        let ext = if self.has_ext {
            &mut self.ext[k as usize]
        } else {
            &mut self.no_ext
        };
        Some(KeyMut {
            rows: RowsMut {
                meta: &mut key[0],
                area,
                spills: &mut self.spills,
            },
            ext,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<KeyRef<'_>>> {
        (0..self.len as u32).map(|k| self.get(k))
    }

    /// Puts a key with `rows` and `ext` in slot `k` (freed first), or in a
    /// new slot at the end when `k` is `None`; returns its id.
    pub fn put(&mut self, k: Option<u32>, key: &[u8], rows: Vec<u64>, ext: ExtSlots) -> u32 {
        let k = match k {
            Some(k) if (k as usize) < self.len => {
                self.remove(k);
                k
            }
            _ => {
                if self.len == self.chunks.len() * SLOT_CHUNK {
                    self.chunks
                        .push(vec![0u64; SLOT_CHUNK * self.words].into_boxed_slice());
                }
                if self.has_ext {
                    self.ext.push(ExtSlots::default());
                }
                self.len += 1;
                (self.len - 1) as u32
            }
        };
        let kw = if key.len() <= KEY_INLINE {
            pack(key)
        } else {
            self.long_bytes += key.len();
            let i = match self.long_free.pop() {
                Some(i) => {
                    self.long[i as usize] = key.into();
                    i
                }
                None => {
                    self.long.push(key.into());
                    (self.long.len() - 1) as u32
                }
            };
            [LIVE | LONG, i as u64]
        };
        let at = (k as usize % SLOT_CHUNK) * self.words;
        let w = &mut self.chunks[k as usize / SLOT_CHUNK][at..at + self.words];
        w[..KEY_WORDS].copy_from_slice(&kw);
        if self.has_ext {
            self.ext[k as usize] = ext;
        }
        if let Some(mut m) = self.get_mut(k) {
            m.rows.set(rows);
        }
        k
    }

    /// Frees slot `k` (live or retired).
    pub fn remove(&mut self, k: u32) {
        if k as usize >= self.len {
            return;
        }
        if let Some(mut m) = self.get_mut(k) {
            m.rows.clear();
            *m.ext = ExtSlots::default();
        }
        let at = (k as usize % SLOT_CHUNK) * self.words;
        let w = &mut self.chunks[k as usize / SLOT_CHUNK][at..at + self.words];
        if w[0] & LONG != 0 {
            let i = w[1] as usize;
            self.long_bytes -= self.long[i].len();
            self.long[i] = Box::default();
            self.long_free.push(i as u32);
        }
        w.fill(0);
    }

    /// Retires live key `k`: it has no rows and no Ext contents, and
    /// is no longer live, but its slot keeps its bytes
    /// ([`Slots::retired`]) until [`Slots::remove`] frees it (an epoch
    /// that drops a key needs its bytes until it ends).
    pub fn retire(&mut self, k: u32) {
        if let Some(mut m) = self.get_mut(k) {
            m.rows.clear();
            *m.ext = ExtSlots::default();
            *m.rows.meta &= !LIVE;
        }
    }

    /// Retired key `k`'s bytes.
    pub fn retired_key(&self, k: u32) -> Option<KeyBytes<'_>> {
        let k = k as usize;
        if k >= self.len {
            return None;
        }
        let at = (k % SLOT_CHUNK) * self.words;
        let w = &self.chunks[k / SLOT_CHUNK][at..at + self.words];
        (w[0] & LIVE == 0 && w[0] != 0).then(|| self.key_of(w))
    }

    /// Retired key `k` as an owned state: its bytes, no rows, `nvar` empty
    /// Ext slots.
    pub fn retired(&self, k: u32, nvar: usize) -> Option<KeyState> {
        let k = k as usize;
        if k >= self.len {
            return None;
        }
        let at = (k % SLOT_CHUNK) * self.words;
        let w = &self.chunks[k / SLOT_CHUNK][at..at + self.words];
        (w[0] & LIVE == 0 && w[0] != 0).then(|| KeyState {
            key: (*self.key_of(w)).into(),
            rows: Vec::new(),
            ext: ExtSlots::from_vec(vec![Ext::None; nvar]),
        })
    }

    /// Takes key `k` out as an owned state, freeing its slot.
    pub fn take(&mut self, k: u32) -> Option<KeyState> {
        let ks = self.get(k)?.to_owned();
        self.remove(k);
        Some(ks)
    }

    /// Heap held by the slots, spilled rows, long keys and Ext slot vectors
    /// (not the Ext contents), bytes.
    pub fn heap_bytes(&self) -> u64 {
        let slots = self.chunks.len() * SLOT_CHUNK * self.words * 8;
        let spills = self.spills.words * 8 + self.spills.rows.capacity() * 24;
        let long = self.long_bytes + self.long.capacity() * 16;
        let ext = self.ext.capacity() * std::mem::size_of::<ExtSlots>();
        (slots + spills + long + ext) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ks: &Slots, k: u32) -> Vec<u64> {
        ks.get(k).map(|r| r.rows.to_vec()).unwrap_or_default()
    }

    #[test]
    fn rows_move_between_slot_and_spill() {
        let mut s = Slots::new(2, false);
        let k = s.put(None, b"abc", Vec::new(), ExtSlots::default());
        assert!(rows(&s, k).is_empty());
        let mut m = s.get_mut(k).expect("live");
        m.rows.insert_zeroed(0, 2);
        m.rows[0] = 10;
        m.rows.insert_zeroed(0, 2);
        m.rows[0] = 5;
        m.rows.insert_zeroed(4, 2);
        m.rows[4] = 20;
        assert_eq!(rows(&s, k), vec![5, 0, 10, 0, 20, 0]);
        assert!(
            s.heap_bytes() > (SLOT_CHUNK * 4 * 8) as u64,
            "spilled rows counted"
        );
        let mut m = s.get_mut(k).expect("live");
        m.rows.drain(0..2);
        assert_eq!(rows(&s, k), vec![10, 0, 20, 0]);
        let mut m = s.get_mut(k).expect("live");
        m.rows.truncate(2);
        assert_eq!(rows(&s, k), vec![10, 0]);
        assert_eq!(s.spills.words, 0, "one row is back in its slot");
        assert_eq!(
            s.heap_bytes(),
            (SLOT_CHUNK * 4 * 8 + s.spills.rows.capacity() * 24) as u64
        );
        let mut m = s.get_mut(k).expect("live");
        m.rows.set(vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(rows(&s, k), vec![1, 2, 3, 4, 5, 6]);
        let ks = s.take(k).expect("live");
        assert_eq!((&ks.key[..], ks.rows.len()), (&b"abc"[..], 6));
        assert!(s.get(k).is_none());
        assert_eq!(s.spills.words, 0);
    }

    #[test]
    fn short_and_long_keys_are_found() {
        let mut s = Slots::new(1, true);
        let short = b"0123456789abcde".to_vec();
        let long = b"0123456789abcdef".to_vec();
        let a = s.put(None, &short, vec![7], ExtSlots::from_vec(vec![Ext::None]));
        let b = s.put(None, &long, vec![8, 9], ExtSlots::default());
        assert!(s.is(a, &Slots::probe(&short)) && !s.is(a, &Slots::probe(&long)));
        assert!(s.is(b, &Slots::probe(&long)) && !s.is(b, &Slots::probe(&short)));
        assert!(!s.is(a, &Slots::probe(b"0123456789abcd")));
        assert_eq!(&*s.key(a), &short[..]);
        assert_eq!(&*s.key(b), &long[..]);
        assert_eq!((rows(&s, a), rows(&s, b)), (vec![7], vec![8, 9]));
        assert_eq!(s.get(a).map(|r| r.ext.len()), Some(1));
        // A row change does not change the key.
        if let Some(mut m) = s.get_mut(a) {
            m.rows.clear();
        }
        assert!(s.is(a, &Slots::probe(&short)));
        s.remove(b);
        assert_eq!((s.long_bytes, s.key(b).len()), (0, 0));
        let c = s.put(Some(b), b"x", Vec::new(), ExtSlots::default());
        assert_eq!((c, &*s.key(c)), (b, &b"x"[..]));
        // A retired key keeps its bytes, long or short, until removed.
        let d = s.put(None, &long, vec![1], ExtSlots::default());
        s.retire(d);
        s.retire(a);
        assert!(s.get(d).is_none() && s.get(a).is_none());
        assert!(!s.is(d, &Slots::probe(&long)));
        let ks = s.retired(d, 1).expect("retired");
        assert_eq!(
            (&ks.key[..], ks.rows.len(), ks.ext.len()),
            (&long[..], 0, 1)
        );
        assert_eq!(s.retired(a, 0).map(|ks| ks.key), Some(short.clone().into()));
        assert!(s.retired(c, 0).is_none(), "live");
        s.remove(d);
        assert!(s.retired(d, 0).is_none());
        assert_eq!(s.long_bytes, 0);
    }
}
