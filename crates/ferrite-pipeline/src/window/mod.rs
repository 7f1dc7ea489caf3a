//! Keyed windows and aggregates: `GROUP BY keys,
//! TUMBLE|HOP|SESSION|COUNT_WINDOW(...)` (or keys alone: a running
//! aggregate per key), event time, watermark, lateness, EMIT UPDATES, IDLE
//! (docs/pipelines.md, "Windows and time").
//!
//! The [`WindowOp`] operator runs after the source and the filter. Per
//! event it reads the event time, the key (hashed once into the key
//! dictionary) and the aggregate arguments (numbers parsed once by the
//! source), and updates one row of `u64` words in place:
//! - TUMBLE and HOP keep one row per pane (`gcd(size, slide)` wide): an event
//!   updates one pane whatever the window's size and slide, and a window's
//!   result merges its panes when it fires;
//! - SESSION keeps one row per session; an event that bridges sessions
//!   merges them;
//! - COUNT_WINDOW(n, slide) keeps one row per pane of `gcd(n, slide)`
//!   entries of the key in arrival order (`[pane number, entries, rev]`,
//!   the aggregates, then the least event time and the greatest plus one);
//!   a window is emitted when its last pane fills, and the panes no later
//!   window needs go. No watermark is involved;
//! - without a window, one row per key, emitted after each batch that
//!   touched it.
//!
//! Time: the watermark is the largest event time seen minus WATERMARK. A
//! window `[start, end)` fires once the watermark reaches `end` (its result
//! is emitted once); its row stays until the watermark reaches `end +
//! LATENESS`, and an event arriving in between updates it and emits the
//! result again with `_rev` = 1, 2, .... An event later than that is
//! dropped and counted, or written to the LATE stream with a `_reason`.
//!
//! EMIT UPDATES [EVERY ms] follows Flink's early firing: a row changed by
//! an event is marked dirty (a bit of its rev word); when the wall clock
//! says a flush is due (`now >= last flush + EVERY`, one flush time for
//! the whole operator), every open window holding a dirty row writes its
//! current result. When the watermark passes a window's end its final
//! result is written once, unless no row of it changed since the flush
//! that last wrote it (the consumer already has that value); revisions
//! within LATENESS as with EMIT FINAL. "Changed" means an entry entered
//! the window: a late entry before a window changes its twap's carried-in
//! price without making it changed. A flush that writes nothing (its rows'
//! windows had all closed) does not start a new interval. Running
//! aggregates write their dirty rows per batch (EMIT FINAL, the default)
//! or at most once per EVERY.
//!
//! IDLE: once no event arrived for `idle_ms` of wall-clock time, the
//! watermark is `max event time - WATERMARK + (now - last arrival)` (it
//! jumps by `idle_ms` when idleness starts, then follows the clock, and
//! never goes back when events come again), so the last windows close
//! without new events. The wall clock is only what the runner passes to
//! [`WindowOp::set_clock`]: results depend on the inputs and those times.
//! [`WindowOp::tick`] emits what the clock made due between batches;
//! [`WindowOp::next_tick_ms`] says when that is.
//!
//! State is flat: per key its rows `[start, end, rev, aggregate
//! words...]` sorted by start, and, for `count(DISTINCT)`, percentiles
//! and twap, an [`Ext`] per row and aggregate (plus one carried slot per
//! aggregate: twap's last price of dropped rows); each key has one fixed
//! slot holding a short key and its row when it has one, in chunks
//! ([`Slots`], window/slots.rs); timers are keys grouped by time
//! for TUMBLE/HOP (window ends: many keys share one) and ordered sets of
//! `(time, key)` for SESSION, set again lazily when due ([`Timers`]). [`WindowOp::snapshot`] encodes it (versioned); restore
//! checks every length and rebuilds the timers.

pub mod agg;
pub(crate) mod compile;
mod slots;

use crate::entry::{EntryId, FlatRecords, Record, Row, SlotTable, MISSING};
use crate::error::PlanError;
use crate::expr::{BoolSrc, NumSrc, TextSrc};
use crate::ops::{Batch, Operator, Project};
use crate::value::{write_value, Num};
use agg::{Agg, Ext, Order, Point};
use bytes::{Bytes, BytesMut};
use slots::{KeyRef, Slots};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::BuildHasher;

/// Most state bytes of one windowed pipeline unless STATE_LIMIT says.
pub const DEFAULT_STATE_LIMIT: u64 = 256 << 20;

/// When results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Once per window, when the watermark passes its end (and again, with
    /// `_rev`, per late update within LATENESS). A running aggregate (no
    /// window) writes its changed rows after each batch.
    #[default]
    Final,
    /// EMIT UPDATES [EVERY ms] (Flink's early firing): while a window is
    /// open its changed result is written at most once per `every_ms` of
    /// wall-clock time ([`WindowOp::set_clock`]; 0: after each batch that
    /// changed it); when the watermark passes its end the final result is
    /// written once, unless it is the same as the last update; revisions
    /// within LATENESS as with `Final`. A running aggregate writes its
    /// changed rows at most once per `every_ms`.
    Updates {
        /// The least wall-clock time between two flushes, ms.
        every_ms: u64,
    },
}

/// PIPELINE.CREATE's time options of a grouped statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOptions {
    /// WATERMARK: how far behind the largest event time seen the watermark
    /// runs (the out-of-orderness tolerated without lateness), ms.
    pub watermark_ms: u64,
    /// LATENESS: how long after it fired a window still takes late entries, ms.
    pub lateness_ms: u64,
    /// LATE: the stream that receives entries too late for their window.
    pub late_stream: Option<String>,
    /// EMIT.
    pub emit: Emit,
    /// STATE_LIMIT: the pipeline fails when its state grows beyond this.
    pub state_limit: u64,
    /// IDLE: after this much wall-clock time without an event (0: never)
    /// the watermark advances with the clock, so the last windows close
    /// without new events (see [`WindowOp::tick`]).
    pub idle_ms: u64,
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions {
            watermark_ms: 0,
            lateness_ms: 0,
            late_stream: None,
            emit: Emit::Final,
            state_limit: DEFAULT_STATE_LIMIT,
            idle_ms: 0,
        }
    }
}

/// The window of a GROUP BY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// No window: a running aggregate per key.
    Running,
    /// TUMBLE (slide = size) or HOP; `pane` = gcd(size, slide).
    Hop {
        /// Window length, ms.
        size: i64,
        /// Distance between window starts, ms.
        slide: i64,
        /// Pane length, ms.
        pane: i64,
    },
    /// SESSION(time, gap).
    Session {
        /// Inactivity that closes a session, ms.
        gap: i64,
    },
    /// COUNT_WINDOW(n[, slide]): every `n` entries of a key in arrival
    /// order, a window starting every `slide` entries (default `n`).
    Count {
        /// Entries per window.
        n: i64,
        /// Entries between window starts (1..=n).
        slide: i64,
        /// Entries per pane: gcd(n, slide).
        pane: i64,
    },
}

/// Largest event time accepted (ms): far beyond any date, and far enough
/// from `i64::MAX` that window arithmetic cannot overflow.
pub const MAX_EVENT_TIME: i64 = 1 << 52;

/// Bytes counted per key beyond its slot ([`Slots::heap_bytes`]): its
/// index entry and its timers.
const KEY_OVERHEAD: u64 = 24;
/// Words of a SESSION or COUNT_WINDOW row before the aggregates: start
/// (or pane number), end (or entries), rev (with [`DIRTY`]). A TUMBLE/HOP
/// row has one word, its start with [`DIRTY`] (a pane's end is its start
/// plus the pane; its revisions are counted per window, in `revs`); a
/// running aggregate's row has one word, [`DIRTY`].
const HDR: usize = 3;
/// In a row's rev word: the row changed since the last EMIT UPDATES flush
/// (or, for a running aggregate, since its last result).
const DIRTY: u64 = 1 << 63;
/// In a TUMBLE/HOP row's header word, during an epoch: the row's state
/// before the epoch is saved in [`Undo`] (cleared when the epoch ends; it
/// is never encoded).
const SAVED: u64 = 1 << 62;
/// Largest watermark: beyond every window's end and lateness.
const MAX_WATERMARK: i64 = 3 * MAX_EVENT_TIME;

/// Counters and sizes for PIPELINE.INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Keys with state.
    pub keys: u64,
    /// Open rows: panes (TUMBLE/HOP), sessions, or running keys.
    pub open_windows: u64,
    /// Approximate bytes of state.
    pub state_bytes: u64,
    /// The watermark (`None` before the first event).
    pub watermark: Option<i64>,
    /// Entries dropped as too late (without a LATE stream).
    pub late_dropped: u64,
    /// Entries written to the LATE stream.
    pub late_written: u64,
}

#[derive(Clone)]
struct KeyState {
    key: Box<[u8]>,
    rows: Vec<u64>,
    /// With `nvar` aggregates keeping an [`Ext`]: first one carried slot
    /// per such aggregate (twap: the key's last price from rows already
    /// dropped), then `nvar` per row, in row order. Empty otherwise.
    ext: ExtSlots,
}

/// A key's [`Ext`] slots: no allocation (and 8 bytes in the key's slot)
/// unless the plan has aggregates that keep one.
// NOTE: boxed on purpose: 8 bytes in each key's slot instead of a Vec's
// 24; most plans have no such aggregate and never allocate it.
#[allow(clippy::box_collection)]
#[derive(Clone, Default)]
struct ExtSlots(Option<Box<Vec<Ext>>>);

impl std::ops::Deref for ExtSlots {
    type Target = [Ext];
    fn deref(&self) -> &[Ext] {
        self.0.as_deref().map_or(&[], |v| v)
    }
}

impl std::ops::DerefMut for ExtSlots {
    fn deref_mut(&mut self) -> &mut [Ext] {
        match &mut self.0 {
            Some(v) => v,
            None => &mut [],
        }
    }
}

impl ExtSlots {
    fn from_vec(v: Vec<Ext>) -> ExtSlots {
        ExtSlots((!v.is_empty()).then(|| Box::new(v)))
    }

    fn into_vec(self) -> Vec<Ext> {
        self.0.map_or_else(Vec::new, |b| *b)
    }

    /// Replaces `r` with `with` (nothing to do allocates nothing).
    fn splice(&mut self, r: std::ops::Range<usize>, with: impl IntoIterator<Item = Ext>) {
        let mut with = with.into_iter().peekable();
        if r.is_empty() && with.peek().is_none() {
            return;
        }
        self.0.get_or_insert_with(Default::default).splice(r, with);
    }

    fn drain(&mut self, r: std::ops::Range<usize>) {
        if let Some(v) = &mut self.0 {
            v.drain(r);
        }
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// Bytes counted for Ext slots.
fn ext_bytes(ext: &[Ext]) -> u64 {
    ext.iter().map(|e| e.bytes() + EXT_OVERHEAD).sum()
}

/// Bytes counted per [`Ext`] slot beyond its contents.
const EXT_OVERHEAD: u64 = 32;

/// Event time and wall-clock time: the watermark's sources, and when
/// EMIT UPDATES last flushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Clock {
    /// The largest event time accepted.
    max_ts: Option<i64>,
    /// The watermark reached by IDLE advances (it never goes back).
    idle_wm: Option<i64>,
    /// Wall-clock time of the last batch with events (IDLE).
    last_arrival: Option<i64>,
    /// Wall-clock time of the last EMIT UPDATES flush.
    last_flush: Option<i64>,
}

/// The operator's state: everything that snapshot encodes.
struct State {
    /// Key ids, hashed by the key bytes their [`KeyState`] holds (the key
    /// is stored once).
    index: hashbrown::HashTable<u32>,
    /// foldhash, randomly seeded (hashbrown's default): keys are client
    /// data, and SipHash cost several times as much per event.
    hasher: foldhash::fast::RandomState,
    keys: Slots,
    free: Vec<u32>,
    clock: Clock,
    /// Timers: windows to fire, rows to drop.
    fire: Timers,
    clean: Timers,
    /// TUMBLE/HOP windows emitted again: (key, window start) → revisions.
    revs: HashMap<(u32, i64), u32>,
    /// Bytes of the Ext slots' contents ([`ext_bytes`]); the keys' and
    /// rows' are the slots' ([`State::bytes`]).
    bytes: u64,
    rows: u64,
    late_dropped: u64,
    late_written: u64,
    /// Keys with a [`DIRTY`] row (derived from the rows).
    dirty: BTreeSet<u32>,
}

impl State {
    /// An empty state for rows of `stride` words.
    fn new(kind: WindowKind, stride: usize, nvar: usize) -> State {
        State {
            index: Default::default(),
            hasher: Default::default(),
            keys: Slots::new(stride, nvar > 0),
            free: Vec::new(),
            clock: Clock::default(),
            fire: Timers::for_kind(kind),
            clean: Timers::for_kind(kind),
            revs: HashMap::new(),
            bytes: 0,
            rows: 0,
            late_dropped: 0,
            late_written: 0,
            dirty: BTreeSet::new(),
        }
    }

    /// Approximate heap bytes: the slots, the index and timers, the Ext
    /// slots' contents.
    fn bytes(&self) -> u64 {
        self.keys.heap_bytes() + self.index.len() as u64 * KEY_OVERHEAD + self.bytes
    }

    /// The id of `key`.
    fn find(&self, key: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        let keys = &self.keys;
        let p = Slots::probe(key);
        self.index.find(h, |&id| keys.is(id, &p)).copied()
    }

    /// Indexes key `id` (already in `keys`).
    fn index_insert(&mut self, id: u32) {
        let (keys, hasher) = (&self.keys, &self.hasher);
        let h = hasher.hash_one(&*keys.key(id));
        self.index
            .insert_unique(h, id, |&i| hasher.hash_one(&*keys.key(i)));
    }

    /// Unindexes key `id`, whose bytes are `key` (its slot may be empty).
    fn index_remove(&mut self, key: &[u8], id: u32) {
        let h = self.hasher.hash_one(key);
        if let Ok(e) = self.index.find_entry(h, |&i| i == id) {
            e.remove();
        }
    }
}

/// Timers: keys due at event times, taken in `(time, key)` order, each
/// `(time, key)` once.
enum Timers {
    /// SESSION's times are any millisecond: a min-heap of `(time, key)`
    /// (repeats are dropped when a time is taken). Most new timers are
    /// later than all others, which a heap takes in one comparison where a
    /// B-tree walks its nodes.
    Heap(BinaryHeap<Reverse<(i64, u32)>>),
    /// TUMBLE/HOP's times are window ends (multiples of the slide, plus
    /// LATENESS): many keys share one, so keys are grouped by time, 4
    /// bytes each (repeats are dropped when a time is taken). Taken
    /// lists are kept (a few) for the next times: no allocation per time.
    /// The earliest time is kept apart too: most events ask for it (via
    /// `pop_due`) and find nothing due.
    Grouped(
        std::collections::BTreeMap<i64, Vec<u32>>,
        Vec<Vec<u32>>,
        Option<i64>,
    ),
}

impl Default for Timers {
    fn default() -> Self {
        Timers::Heap(BinaryHeap::new())
    }
}

impl Timers {
    fn for_kind(kind: WindowKind) -> Timers {
        match kind {
            WindowKind::Hop { .. } => Timers::Grouped(Default::default(), Vec::new(), None),
            _ => Timers::Heap(BinaryHeap::new()),
        }
    }

    fn insert(&mut self, t: i64, k: u32) {
        match self {
            Timers::Heap(h) => h.push(Reverse((t, k))),
            Timers::Grouped(m, spare, first) => {
                if first.is_none_or(|f| t < f) {
                    *first = Some(t);
                }
                let v = m
                    .entry(t)
                    .or_insert_with(|| spare.pop().unwrap_or_default());
                if v.last() != Some(&k) {
                    v.push(k);
                }
            }
        }
    }

    /// The earliest time.
    #[inline]
    fn first(&self) -> Option<i64> {
        match self {
            Timers::Heap(h) => h.peek().map(|&Reverse((t, _))| t),
            Timers::Grouped(_, _, first) => *first,
        }
    }

    /// Takes the earliest time's keys, in key order, each once, if that
    /// time is at most `upto`.
    #[inline]
    fn pop_due(&mut self, upto: i64, keys: &mut Vec<u32>) -> Option<i64> {
        keys.clear();
        let t = self.first().filter(|&t| t <= upto)?;
        self.take_first(t, keys);
        Some(t)
    }

    /// Takes the keys of time `t`, the earliest.
    fn take_first(&mut self, t: i64, keys: &mut Vec<u32>) {
        match self {
            Timers::Heap(h) => {
                // Taken in key order: a repeat follows its first.
                while let Some(&Reverse((t2, k))) = h.peek() {
                    if t2 != t {
                        break;
                    }
                    h.pop();
                    if keys.last() != Some(&k) {
                        keys.push(k);
                    }
                }
            }
            Timers::Grouped(m, spare, first) => {
                let taken = m.pop_first();
                *first = m.first_key_value().map(|(&t, _)| t);
                if let Some((_, mut v)) = taken {
                    v.sort_unstable();
                    v.dedup();
                    std::mem::swap(keys, &mut v);
                    if spare.len() < 4 {
                        v.clear();
                        spare.push(v);
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Timers::Heap(h) => h.clear(),
            Timers::Grouped(m, _, first) => {
                m.clear();
                *first = None;
            }
        }
    }

    /// Takes the timers at or before `upto`: their keys.
    fn take_upto(&mut self, upto: i64) -> Vec<u32> {
        let Some(after) = upto.checked_add(1) else {
            let mut all = Vec::new();
            let mut keys = Vec::new();
            while self.pop_due(i64::MAX, &mut keys).is_some() {
                all.append(&mut keys);
            }
            return all;
        };
        match self {
            Timers::Heap(h) => {
                let mut keys = Vec::new();
                while let Some(&Reverse((t, k))) = h.peek() {
                    if t >= after {
                        break;
                    }
                    h.pop();
                    keys.push(k);
                }
                keys
            }
            Timers::Grouped(m, _, first) => {
                let later = m.split_off(&after);
                *first = later.first_key_value().map(|(&t, _)| t);
                std::mem::replace(m, later)
                    .into_values()
                    .flatten()
                    .collect()
            }
        }
    }
}

/// A key's state before an epoch touched it.
enum PreImage {
    /// The key did not exist.
    Absent,
    /// Its whole state (SESSION, COUNT_WINDOW, running aggregates: a few
    /// rows per key).
    Whole(KeyState),
    /// TUMBLE/HOP: the key existed; its rows are saved one by one as the
    /// epoch changes them ([`Undo::rows`]); here its carried [`Ext`] slots.
    Rows(Vec<Ext>),
}

/// A TUMBLE/HOP row the current epoch changed: key, start, and where its
/// state before the epoch is ([`NEW_ROW`]: the epoch inserted it).
#[derive(Clone, Copy)]
struct RowUndo {
    k: u32,
    start: i64,
    pre: u32,
}

/// [`RowUndo::pre`] of a row the epoch inserted.
const NEW_ROW: u32 = u32::MAX;

/// Pre-images of what the current epoch changed, to take it back (an
/// epoch that does not commit), to describe it ([`WindowOp::epoch_delta`])
/// or to checkpoint the committed state while an epoch is being evaluated.
/// TUMBLE/HOP keys keep many panes of which an epoch changes a few: their
/// changed rows are saved one by one (a word log), so an epoch's cost and
/// its delta follow the rows it changed, not the keys' sizes.
#[derive(Default)]
struct Undo {
    active: bool,
    /// Stamp of the current epoch; `stamp[k] == epoch` marks key `k` saved.
    epoch: u32,
    stamp: Vec<u32>,
    /// Keys in first-touch order with their state before the epoch.
    keys: Vec<(u32, PreImage)>,
    /// `ord[k]`: key `k`'s index in `keys` (when `stamp[k] == epoch`).
    ord: Vec<u32>,
    /// TUMBLE/HOP rows changed, in the order they were first changed
    /// (each once: its header word carries [`SAVED`] until the epoch ends).
    rows: Vec<RowUndo>,
    /// Their pre-images: `stride` words and `nvar` [`Ext`] slots each.
    words: Vec<u64>,
    exts: Vec<Ext>,
    /// TUMBLE/HOP keys dropped during the epoch: their slots are retired
    /// ([`Slots::retire`], keeping their bytes) until it ends
    /// (no rows; their key bytes and carried slots).
    dropped: Vec<u32>,
    clock: Clock,
    late_dropped: u64,
    late_written: u64,
    revs: Option<HashMap<(u32, i64), u32>>,
    /// Key slots freed during the epoch: reusable once it commits.
    freed: Vec<u32>,
    /// Whole pre-images of committed epochs, kept to be overwritten by the
    /// next ones ([`Undo::copy_of`]): a SESSION epoch saves most keys it
    /// touches, and allocating each copy (and freeing it at the commit)
    /// cost more than the events themselves.
    spare: Vec<KeyState>,
}

/// Most [`Undo::spare`] pre-images kept, and the most row words each may
/// hold: a bound on what the pool keeps beyond the state.
const SPARE_KEYS: usize = 16_384;
const SPARE_WORDS: usize = 64;

impl Undo {
    /// Saves TUMBLE/HOP `row` of key `k` (its `stride` words) and its
    /// `ext` slots, not saved yet this epoch, and marks it [`SAVED`].
    #[inline]
    fn save_row(&mut self, k: u32, kind: WindowKind, row: &mut [u64], ext: &[Ext]) {
        let pre = (self.words.len() / row.len().max(1)) as u32;
        self.words.extend_from_slice(row);
        self.exts.extend_from_slice(ext);
        self.rows.push(RowUndo {
            k,
            start: start_of(kind, row),
            pre,
        });
        row[0] |= SAVED;
    }

    /// A copy of `ks`, in a spare pre-image's memory when there is one.
    fn copy_of(&mut self, ks: &KeyRef<'_>) -> KeyState {
        match self.spare.pop() {
            Some(mut c) => {
                if c.key.len() == ks.key.len() {
                    c.key.copy_from_slice(&ks.key);
                } else {
                    c.key = (*ks.key).into();
                }
                c.rows.clear();
                c.rows.extend_from_slice(ks.rows);
                match &mut c.ext.0 {
                    Some(v) if !ks.ext.is_empty() => {
                        v.clear();
                        v.extend_from_slice(ks.ext);
                    }
                    _ => c.ext = ExtSlots::from_vec(ks.ext.to_vec()),
                }
                c
            }
            None => ks.to_owned(),
        }
    }

    /// Forgets the epoch's key pre-images, keeping small whole ones as
    /// spares.
    fn recycle_keys(&mut self) {
        for (_, pre) in self.keys.drain(..) {
            if let PreImage::Whole(ks) = pre {
                if self.spare.len() < SPARE_KEYS && ks.rows.capacity() <= SPARE_WORDS {
                    self.spare.push(ks);
                }
            }
        }
    }
}

/// The output stage: each result is first an internal record (`__k<i>`
/// keys, `window_start`, `window_end`, `__a<j>` aggregates), then HAVING
/// and the SELECT list, compiled by the expression compiler against it.
pub(crate) struct Output {
    pub slots: SlotTable,
    pub having: Option<BoolSrc>,
    pub project: Project,
    /// Without HAVING, when every SELECT column is a bare key, aggregate,
    /// `window_start` or `window_end` (the usual case): each column's name
    /// and source, resolved at compile time, so a result is written
    /// straight into its record instead of through the internal record
    /// and the projection. The same fields and bytes either way.
    pub direct: Option<Vec<(Bytes, OutSrc)>>,
}

/// Where a direct output column's value comes from ([`Output::direct`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutSrc {
    /// GROUP BY key `i` (`__k<i>`; absent when NULL).
    Key(usize),
    /// Aggregate `j` (`__a<j>`; absent when NULL).
    Agg(usize),
    /// `window_start`.
    Start,
    /// `window_end`.
    End,
}

impl OutSrc {
    /// The source of internal record field `name`, if it is one.
    pub(crate) fn of(name: &[u8]) -> Option<OutSrc> {
        let num = |d: &[u8]| -> Option<usize> {
            // As key_col/agg_col write them: decimal, no leading zero.
            if d.is_empty() || (d.len() > 1 && d[0] == b'0') || d.len() > 9 {
                return None;
            }
            std::str::from_utf8(d).ok()?.parse().ok()
        };
        match name {
            b"window_start" => Some(OutSrc::Start),
            b"window_end" => Some(OutSrc::End),
            _ => {
                if let Some(d) = name.strip_prefix(b"__k") {
                    num(d).map(OutSrc::Key)
                } else if let Some(d) = name.strip_prefix(b"__a") {
                    num(d).map(OutSrc::Agg)
                } else {
                    None
                }
            }
        }
    }
}

/// Per-aggregate argument readers.
pub(crate) struct AggArgs {
    pub a: Option<NumSrc>,
    pub b: Option<NumSrc>,
    /// `count(x)`: whether `x` is not NULL.
    pub present: Option<TextSrc>,
}

/// GROUP BY with windows and aggregates.
pub struct WindowOp {
    pub(crate) kind: WindowKind,
    pub(crate) opts: WindowOptions,
    /// `None`: the entry ID's milliseconds (`_ms`).
    pub(crate) time: Option<NumSrc>,
    pub(crate) keys: Vec<TextSrc>,
    pub(crate) aggs: Vec<Agg>,
    pub(crate) args: Vec<AggArgs>,
    /// Words of all aggregates.
    pub(crate) width: usize,
    /// Aggregates that keep an [`Ext`].
    nvar: usize,
    pub(crate) out: Output,
    pub(crate) text: String,
    st: State,
    undo: Undo,
    // Scratch, reused.
    key_buf: Vec<u8>,
    nums: Vec<(Num, Num, bool)>,
    /// count(DISTINCT x)'s value bytes per aggregate, for the event.
    texts: Vec<Option<Vec<u8>>>,
    merged_ext: Vec<Ext>,
    merged: Vec<u64>,
    idx: Vec<u32>,
    num: Vec<Num>,
    arena: BytesMut,
    /// Entries too late for the LATE stream, from the current batch.
    pub(crate) late_out: Vec<Record>,
    /// Set when the state exceeds its limit: the pipeline must fail.
    pub(crate) fatal: Option<String>,
    /// Wall-clock time, ms, as the runner last set it (never read from the
    /// system: results depend only on the inputs and this).
    now: i64,
    /// Results computed (before HAVING), to see whether a flush wrote any.
    results: u64,
    /// Keys of the timers being taken (scratch).
    due: Vec<u32>,
    /// A result's internal record, its joined key, a value (scratch), and
    /// the record's column names (`__k<i>` then `__a<j>`), made once.
    fields: Vec<(Bytes, Bytes)>,
    joined: Vec<u8>,
    tmp: BytesMut,
    cols: Vec<Bytes>,
    /// Where each key's value is in `joined` (direct output; scratch).
    kpos: Vec<Option<(usize, usize)>>,
    /// Direct output's results ([`Output::direct`]), taken by the plan
    /// after each batch or tick (empty in between).
    pub(crate) flat: FlatRecords,
}

/// Why an event could not be placed.
enum Placed {
    Ok,
    TooLate,
}

impl WindowOp {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kind: WindowKind,
        opts: WindowOptions,
        time: Option<NumSrc>,
        keys: Vec<TextSrc>,
        aggs: Vec<Agg>,
        args: Vec<AggArgs>,
        width: usize,
        out: Output,
        text: String,
    ) -> WindowOp {
        let nvar = aggs.iter().filter(|a| a.kind.has_ext()).count();
        WindowOp {
            nvar,
            texts: Vec::new(),
            merged_ext: Vec::new(),
            kind,
            opts,
            time,
            keys,
            aggs,
            args,
            width,
            out,
            text,
            st: State::new(kind, hdr_of(kind) + width, nvar),
            undo: Undo::default(),
            key_buf: Vec::new(),
            nums: Vec::new(),
            merged: Vec::new(),
            idx: Vec::new(),
            num: Vec::new(),
            arena: BytesMut::new(),
            late_out: Vec::new(),
            fatal: None,
            now: 0,
            results: 0,
            due: Vec::new(),
            fields: Vec::new(),
            joined: Vec::new(),
            tmp: BytesMut::new(),
            cols: Vec::new(),
            kpos: Vec::new(),
            flat: FlatRecords::default(),
        }
    }

    fn stride(&self) -> usize {
        self.hdr() + self.width
    }

    /// An empty state for this plan.
    fn new_state(&self) -> State {
        State::new(self.kind, self.stride(), self.nvar)
    }

    /// The row width that state version `ver` wrote for this plan.
    fn stride_of(&self, ver: u8) -> usize {
        if ver < STATE_V3 {
            HDR + self.width
        } else {
            self.stride()
        }
    }

    /// Words before the aggregates in a row.
    fn hdr(&self) -> usize {
        hdr_of(self.kind)
    }

    /// The word of a row holding [`DIRTY`].
    fn rw(&self) -> usize {
        match self.kind {
            WindowKind::Hop { .. } | WindowKind::Running => 0,
            _ => 2,
        }
    }

    /// A row's start (a pane's, a session's; a count pane's number).
    fn start_of(&self, row: &[u64]) -> i64 {
        start_of(self.kind, row)
    }

    /// The watermark (`i64::MIN` before the first event): the largest
    /// event time minus WATERMARK, or what IDLE advanced it to.
    fn wm(&self) -> i64 {
        match self.st.clock.max_ts {
            Some(t) => {
                let w = t - self.opts.watermark_ms.min(MAX_EVENT_TIME as u64) as i64;
                self.st.clock.idle_wm.map_or(w, |i| i.max(w))
            }
            None => i64::MIN,
        }
    }

    /// Whether rows carry [`DIRTY`]: EMIT UPDATES, and running aggregates.
    fn tracks_dirty(&self) -> bool {
        self.kind == WindowKind::Running || matches!(self.opts.emit, Emit::Updates { .. })
    }

    fn lateness(&self) -> i64 {
        self.opts.lateness_ms.min(MAX_EVENT_TIME as u64) as i64
    }

    /// Sizes and counters.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.st.index.len() as u64,
            open_windows: self.st.rows,
            state_bytes: self.st.bytes(),
            watermark: self.st.clock.max_ts.map(|_| self.wm()),
            late_dropped: self.st.late_dropped,
            late_written: self.st.late_written,
        }
    }

    fn key_id(&mut self) -> u32 {
        if let Some(id) = self.st.find(&self.key_buf) {
            self.touch(id);
            return id;
        }
        let ext = ExtSlots::from_vec(vec![Ext::None; self.nvar]);
        self.st.bytes += self.nvar as u64 * EXT_OVERHEAD;
        // Slots freed by committed epochs are reused, during an epoch too
        // (a rollback frees the slot again: the key's pre-image is
        // Absent); those the current epoch freed wait in `undo.freed`
        // until it commits, as a rollback puts their keys back.
        let reuse = self.st.free.pop();
        let id = self.st.keys.put(reuse, &self.key_buf, Vec::new(), ext);
        self.st.index_insert(id);
        if self.undo.active {
            self.mark(id, PreImage::Absent);
        }
        id
    }

    /// Whether the epoch saves rows one by one (TUMBLE/HOP) rather than
    /// whole keys.
    fn row_undo(&self) -> bool {
        matches!(self.kind, WindowKind::Hop { .. })
    }

    /// Saves key `k`'s state before the epoch changes it (once per epoch).
    #[inline]
    fn touch(&mut self, k: u32) {
        if !self.undo.active || self.undo.stamp.get(k as usize) == Some(&self.undo.epoch) {
            return;
        }
        let row_undo = self.row_undo();
        if row_undo && self.nvar == 0 {
            // No carried Ext slots to save: only whether the key exists.
            let pre = if self.st.keys.has(k) {
                PreImage::Rows(Vec::new())
            } else {
                PreImage::Absent
            };
            self.mark(k, pre);
            return;
        }
        let pre = match self.st.keys.get(k) {
            None => PreImage::Absent,
            Some(ks) if row_undo => PreImage::Rows(ks.ext[..self.nvar].to_vec()),
            Some(ks) => PreImage::Whole(self.undo.copy_of(&ks)),
        };
        self.mark(k, pre);
    }

    /// Saves row `r` of key `k` (TUMBLE/HOP, touched) before the epoch
    /// changes it, once per epoch.
    #[inline]
    /// Saves (for undo) each of key `k`'s rows for which `pick` holds.
    fn save_rows_where(&mut self, k: u32, pick: impl Fn(&[u64]) -> bool) {
        let s = self.stride();
        let n = self.st.keys.get(k).map_or(0, |ks| ks.rows.len() / s);
        for r in 0..n {
            let hit = self
                .st
                .keys
                .get(k)
                .is_some_and(|ks| pick(&ks.rows[r * s..(r + 1) * s]));
            if hit {
                self.save_row(k, r);
            }
        }
    }

    fn save_row(&mut self, k: u32, r: usize) {
        if !self.undo.active || !self.row_undo() {
            return;
        }
        let (s, nv) = (self.stride(), self.nvar);
        let Some(mut ks) = self.st.keys.get_mut(k) else {
            return;
        };
        if ks.rows[r * s] & SAVED != 0 {
            return;
        }
        self.undo.save_row(
            k,
            self.kind,
            &mut ks.rows[r * s..(r + 1) * s],
            &ks.ext[nv + r * nv..nv + (r + 1) * nv],
        );
    }

    fn mark(&mut self, k: u32, pre: PreImage) {
        debug_assert!(self.undo.active);
        let i = k as usize;
        if self.undo.stamp.len() <= i {
            self.undo.stamp.resize(i + 1, 0);
        }
        self.undo.stamp[i] = self.undo.epoch;
        if self.undo.ord.len() <= i {
            self.undo.ord.resize(i + 1, 0);
        }
        self.undo.ord[i] = self.undo.keys.len() as u32;
        self.undo.keys.push((k, pre));
    }

    fn touch_revs(&mut self) {
        if self.undo.active && self.undo.revs.is_none() {
            self.undo.revs = Some(self.st.revs.clone());
        }
    }

    fn drop_key_if_empty(&mut self, k: u32) {
        // A key keeps its carried twap prices.
        let empty = matches!(self.st.keys.get(k), Some(ks) if ks.rows.is_empty() && ks.ext.iter().all(|e| *e == Ext::None));
        if empty {
            if let Some(ks) = self.st.keys.get(k) {
                let (key, bytes) = (ks.key, ks.ext_bytes());
                let h = self.st.hasher.hash_one(&*key);
                self.st.bytes = self.st.bytes.saturating_sub(bytes);
                if let Ok(e) = self.st.index.find_entry(h, |&i| i == k) {
                    e.remove();
                }
            }
            self.st.dirty.remove(&k);
            if self.undo.active {
                self.undo.freed.push(k);
                if self.row_undo() {
                    // Its rows are saved; rollback rebuilds it from its
                    // retired slot (not reused before the epoch ends).
                    self.st.keys.retire(k);
                    self.undo.dropped.push(k);
                    return;
                }
            } else {
                self.st.free.push(k);
            }
            self.st.keys.remove(k);
        }
    }

    /// The row index of `start` in key `k`, inserting an empty row.
    fn row_at(&mut self, k: u32, start: i64, end: i64) -> (usize, bool) {
        let s = self.stride();
        let aggs = &self.aggs;
        let Some(mut ks) = self.st.keys.get_mut(k) else {
            return (0, false);
        };
        let n = ks.rows.len() / s;
        // Rows are sorted by start; the newest is usually last.
        let mut lo = 0;
        let mut hi = n;
        let kind = self.kind;
        if n > 0 && start_of(kind, &ks.rows[(n - 1) * s..]) <= start {
            lo = n - 1;
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            let v = start_of(kind, &ks.rows[mid * s..]);
            if v == start {
                return (mid, false);
            }
            if v < start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let at = lo * s;
        ks.rows.insert_zeroed(at, s);
        let nv = self.nvar;
        if nv > 0 {
            let e = nv + lo * nv;
            ks.ext.splice(e..e, std::iter::repeat_n(Ext::None, nv));
            self.st.bytes += nv as u64 * EXT_OVERHEAD;
        }
        let hdr = hdr_of(kind);
        match kind {
            WindowKind::Running => {}
            WindowKind::Hop { .. } => ks.rows[at] = start as u64,
            _ => {
                ks.rows[at] = start as u64;
                ks.rows[at + 1] = end as u64;
            }
        }
        for a in aggs {
            a.init(&mut ks.rows[at + hdr..at + s]);
        }
        if self.undo.active && matches!(kind, WindowKind::Hop { .. }) {
            ks.rows[at] |= SAVED;
            self.undo.rows.push(RowUndo {
                k,
                start,
                pre: NEW_ROW,
            });
        }
        self.st.rows += 1;
        (lo, true)
    }

    fn check_limit(&mut self) {
        let bytes = self.st.bytes();
        if bytes > self.opts.state_limit && self.fatal.is_none() {
            self.fatal = Some(format!(
                "window state exceeds STATE_LIMIT ({} bytes > {}; {} keys, {} open windows): raise STATE_LIMIT, shorten the windows or lower the key cardinality",
                bytes,
                self.opts.state_limit,
                self.st.index.len(),
                self.st.rows
            ));
        }
    }

    /// Reads the event's arguments into `nums`.
    fn read_args(&mut self, row: &Row<'_>) -> Result<(), crate::error::EvalError> {
        self.nums.clear();
        if self.nvar > 0 {
            self.texts.clear();
            for (ag, a) in self.aggs.iter().zip(&self.args) {
                let t = match (&a.present, ag.kind) {
                    (Some(s), agg::AggKind::CountDistinct) => s.get(row)?.map(|c| c.into_owned()),
                    _ => None,
                };
                self.texts.push(t);
            }
        }
        for a in &self.args {
            let x = match &a.a {
                Some(s) => s.get(row)?,
                None => Num::Null,
            };
            let y = match &a.b {
                Some(s) => s.get(row)?,
                None => Num::Null,
            };
            let p = match &a.present {
                Some(s) => s.get(row)?.is_some(),
                None => false,
            };
            self.nums.push((x, y, p));
        }
        Ok(())
    }

    fn key_of(&mut self, row: &Row<'_>) -> Result<(), crate::error::EvalError> {
        self.key_buf.clear();
        for k in &self.keys {
            match k.get(row)? {
                None => self.key_buf.push(0),
                Some(v) => {
                    self.key_buf.push(1);
                    self.key_buf
                        .extend_from_slice(&(v.len() as u32).to_le_bytes());
                    self.key_buf.extend_from_slice(&v);
                }
            }
        }
        Ok(())
    }

    fn update_row(&mut self, k: u32, r: usize, at: Order) {
        let s = self.stride();
        let dirty = self.tracks_dirty();
        let (hdr, rw) = (self.hdr(), self.rw());
        let (kind, nv) = (self.kind, self.nvar);
        let save = self.undo.active && self.row_undo();
        let Some(mut ks) = self.st.keys.get_mut(k) else {
            return;
        };
        if save && ks.rows[r * s] & SAVED == 0 {
            // save_row's work, on the slot already at hand.
            self.undo.save_row(
                k,
                kind,
                &mut ks.rows[r * s..(r + 1) * s],
                &ks.ext[nv + r * nv..nv + (r + 1) * nv],
            );
        }
        if dirty {
            ks.rows[r * s + rw] |= DIRTY;
            self.st.dirty.insert(k);
        }
        let row = &mut ks.rows[r * s + hdr..(r + 1) * s];
        for (j, (a, &(x, y, p))) in self.aggs.iter().zip(&self.nums).enumerate() {
            if a.kind.has_ext() {
                let e = &mut ks.ext[nv + r * nv + a.ext];
                let t = self.texts.get(j).and_then(|t| t.as_deref());
                self.st.bytes += a.ext_update(e, x, t, at);
            } else {
                a.update(row, x, y, p, at);
            }
        }
    }

    // ---- TUMBLE / HOP ---------------------------------------------------

    fn place_hop(
        &mut self,
        k: u32,
        t: i64,
        at: Order,
        id: EntryId,
        out: &mut Vec<Record>,
    ) -> Placed {
        let WindowKind::Hop { size, slide, pane } = self.kind else {
            return Placed::Ok;
        };
        let wm = self.wm();
        let l = self.lateness();
        let ps = t.div_euclid(pane) * pane;
        let s_last = t.div_euclid(slide) * slide;
        let e_last = s_last + size;
        if e_last + l <= wm {
            return Placed::TooLate;
        }
        let (r, new) = self.row_at(k, ps, ps + pane);
        if new {
            // The first covering window that has not fired yet.
            let s_first = (t - size).div_euclid(slide) * slide + slide;
            let s_unfired = if wm == i64::MIN {
                s_first
            } else {
                s_first.max((wm - size).div_euclid(slide) * slide + slide)
            };
            if s_unfired <= s_last {
                self.st.fire.insert(s_unfired + size, k);
            }
            self.st.clean.insert(e_last + l, k);
        }
        self.update_row(k, r, at);
        // Windows that already fired and are within lateness: again.
        if wm != i64::MIN && (t - size).div_euclid(slide) * slide + slide + size <= wm {
            let mut s = (t - size).div_euclid(slide) * slide + slide;
            while s <= s_last && s + size <= wm {
                if s + size + l > wm {
                    self.touch_revs();
                    let rev = self.st.revs.entry((k, s)).or_insert(0);
                    *rev += 1;
                    let rev = *rev;
                    self.emit_hop(k, s, s + size, Some(rev), false, id, out);
                }
                s += slide;
            }
        }
        Placed::Ok
    }

    /// Merges the panes of `[s, e)` of key `k` and emits the result. With
    /// `fire` under EMIT UPDATES, only when a pane changed since the last
    /// flush (which wrote this window's result, as it was open then).
    #[allow(clippy::too_many_arguments)]
    fn emit_hop(
        &mut self,
        k: u32,
        s: i64,
        e: i64,
        rev: Option<u32>,
        fire: bool,
        id: EntryId,
        out: &mut Vec<Record>,
    ) {
        let st = self.stride();
        if fire && matches!(self.opts.emit, Emit::Updates { .. }) {
            let changed = self.st.keys.get(k).is_some_and(|ks| {
                ks.rows.chunks_exact(st).any(|row| {
                    let p = start_of(self.kind, row);
                    p >= s && p < e && row[0] & DIRTY != 0
                })
            });
            if !changed {
                return;
            }
        }
        let mut merged = std::mem::take(&mut self.merged);
        merged.clear();
        merged.resize(self.width, 0);
        for a in &self.aggs {
            a.init(&mut merged);
        }
        let mut mext = std::mem::take(&mut self.merged_ext);
        mext.clear();
        mext.resize(self.nvar, Ext::None);
        let nv = self.nvar;
        let mut any = false;
        if let Some(ks) = self.st.keys.get(k) {
            let hdr = self.hdr();
            for (r, row) in ks.rows.chunks_exact(st).enumerate() {
                let start = self.start_of(row);
                if start >= s && start < e {
                    any = true;
                    for a in &self.aggs {
                        if a.kind.has_ext() {
                            a.ext_merge(&mut mext[a.ext], &ks.ext[nv + r * nv + a.ext]);
                        } else {
                            a.merge(&mut merged, &row[hdr..]);
                        }
                    }
                }
            }
        }
        if any {
            self.result(k, Some((s, e)), rev, &merged, &mext, id, out);
        }
        self.merged = merged;
        self.merged_ext = mext;
    }

    // ---- SESSION --------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn place_session(
        &mut self,
        k: u32,
        t: i64,
        at: Order,
        id: EntryId,
        gap: i64,
        out: &mut Vec<Record>,
    ) -> Placed {
        let wm = self.wm();
        let l = self.lateness();
        let s = self.stride();
        let Some(ks) = self.st.keys.get(k) else {
            return Placed::Ok;
        };
        let (mut start, mut end) = (t, t + gap);
        // Rows overlapping or touching [t, t+gap) are contiguous.
        let n = ks.rows.len() / s;
        let mut first = n;
        let mut last = n;
        for i in 0..n {
            let (rs, re) = (ks.rows[i * s] as i64, ks.rows[i * s + 1] as i64);
            if rs <= t + gap && re >= t {
                if first == n {
                    first = i;
                }
                last = i;
                start = start.min(rs);
                end = end.max(re);
            }
        }
        if end + l <= wm {
            return Placed::TooLate;
        }
        // Timers are lazy (see `advance`): a session has a fire timer at or
        // before its end while the watermark is below it, and a clean timer
        // at or before its end plus LATENESS. Growing a session keeps both
        // true; only a new session, or one that a late entry reopens, needs
        // one.
        let mut arm = true;
        let r = if first == n {
            let (r, _) = self.row_at(k, start, end);
            self.st.clean.insert(end + l, k);
            r
        } else {
            // The merged rows' greatest end is the last one's.
            arm = ks.rows[last * s + 1] as i64 <= wm;
            // Merge rows first..=last into `first`.
            let aggs = &self.aggs;
            let Some(mut ks) = self.st.keys.get_mut(k) else {
                return Placed::Ok;
            };
            let mut rev = ks.rows[first * s + 2] & !DIRTY;
            let mut dirty = ks.rows[first * s + 2] & DIRTY;
            let nv = self.nvar;
            let before = ks.ext_bytes();
            for j in first + 1..=last {
                rev = rev.max(ks.rows[j * s + 2] & !DIRTY);
                dirty |= ks.rows[j * s + 2] & DIRTY;
                let (a, b) = ks.rows.split_at_mut(j * s);
                let (ea, eb) = ks.ext.split_at_mut(nv + j * nv);
                for ag in aggs {
                    if ag.kind.has_ext() {
                        ag.ext_merge(&mut ea[nv + first * nv + ag.ext], &eb[ag.ext]);
                    } else {
                        ag.merge(&mut a[first * s + HDR..(first + 1) * s], &b[HDR..s]);
                    }
                }
            }
            ks.rows.drain((first + 1) * s..(last + 1) * s);
            if nv > 0 {
                ks.ext.drain(nv + (first + 1) * nv..nv + (last + 1) * nv);
                let after = ks.ext_bytes();
                self.st.bytes = (self.st.bytes + after).saturating_sub(before);
            }
            ks.rows[first * s] = start as u64;
            ks.rows[first * s + 1] = end as u64;
            ks.rows[first * s + 2] = rev | dirty;
            self.st.rows -= (last - first) as u64;
            first
        };
        self.update_row(k, r, at);
        if end <= wm {
            // A late entry within lateness: the session's result again.
            self.emit_session(k, r, false, id, out);
        } else if arm {
            self.st.fire.insert(end, k);
        }
        Placed::Ok
    }

    /// SESSION's lazy fire timer `(e, k)` is due: emits key `k`'s session
    /// ending at `e` (if one does; sessions grow after their timer is set)
    /// and sets the timer again at the next end, which every later
    /// session's end is at or after (sessions are disjoint, sorted by start
    /// and so by end). A session that grew is thus re-armed once per timer
    /// that comes due, not once per entry, as Flink's and Arroyo's are.
    fn fire_session(&mut self, k: u32, e: i64, id: EntryId, out: &mut Vec<Record>) {
        let s = self.stride();
        let Some(ks) = self.st.keys.get(k) else {
            return;
        };
        let mut due = None;
        let mut next = None;
        for (r, row) in ks.rows.chunks_exact(s).enumerate() {
            let end = row[1] as i64;
            if end == e {
                due = Some(r);
            } else if end > e {
                next = Some(end);
                break;
            }
        }
        if let Some(n) = next {
            self.st.fire.insert(n, k);
        }
        if let Some(r) = due {
            self.touch(k);
            self.emit_session(k, r, true, id, out);
        }
    }

    /// SESSION's lazy clean timer of key `k` is due at watermark `wm`:
    /// drops the sessions beyond lateness (touching the key only then) and
    /// sets the timer again at the first remaining session's end plus
    /// LATENESS.
    fn clean_session(&mut self, k: u32, wm: i64) {
        let l = self.lateness();
        let Some(ks) = self.st.keys.get(k) else {
            return;
        };
        // Sessions are sorted by end: the first one expires first.
        let first_end = ks.rows.get(1).map(|&e| e as i64);
        if first_end.is_none_or(|e| e + l <= wm) {
            self.touch(k);
            self.retain_rows(k, |row| row[1] as i64 + l > wm);
            self.drop_key_if_empty(k);
        }
        let next = self
            .st
            .keys
            .get(k)
            .and_then(|ks| ks.rows.get(1).copied())
            .map(|e| e as i64 + l);
        if let Some(t) = next {
            self.st.clean.insert(t, k);
        }
    }

    /// Emits session `r` of key `k` (its final result when `fire`, else a
    /// revision) and counts the emission. Under EMIT UPDATES a final result
    /// equal to the last update is not written again.
    fn emit_session(&mut self, k: u32, r: usize, fire: bool, id: EntryId, out: &mut Vec<Record>) {
        let s = self.stride();
        let updates = matches!(self.opts.emit, Emit::Updates { .. });
        let mut merged = std::mem::take(&mut self.merged);
        let nv = self.nvar;
        let (start, end, rev, write, ext) = {
            let Some(mut ks) = self.st.keys.get_mut(k) else {
                return;
            };
            let ext = ks.ext[nv + r * nv..nv + (r + 1) * nv].to_vec();
            let row = &mut ks.rows[r * s..(r + 1) * s];
            merged.clear();
            merged.extend_from_slice(&row[HDR..]);
            let rev = row[2] & !DIRTY;
            let write = !(fire && updates && row[2] & DIRTY == 0);
            row[2] = (rev + 1) & !DIRTY;
            (row[0] as i64, row[1] as i64, rev, write, ext)
        };
        if write {
            let rev = (rev > 0).then_some(rev.min(u32::MAX as u64) as u32);
            self.result(k, Some((start, end)), rev, &merged, &ext, id, out);
        }
        self.merged = merged;
    }

    // ---- COUNT_WINDOW ---------------------------------------------------

    /// Adds an entry to key `k`'s last pane (a row `[pane number, entries,
    /// rev]` with the trailer words `[min time, max time + 1]` after the
    /// aggregates); when the pane fills and a window ends there, emits the
    /// window and drops the panes no later window needs.
    fn place_count(
        &mut self,
        k: u32,
        t: i64,
        at: Order,
        (n, slide, pane): (i64, i64, i64),
        id: EntryId,
        out: &mut Vec<Record>,
    ) -> Placed {
        let s = self.stride();
        let tr = s - 2;
        let last = self.st.keys.get(k).and_then(|ks| {
            let m = ks.rows.len() / s;
            (m > 0).then(|| (ks.rows[(m - 1) * s] as i64, ks.rows[(m - 1) * s + 1] as i64))
        });
        let p = match last {
            Some((p, c)) if c < pane => p,
            Some((p, _)) => p + 1,
            None => 0,
        };
        let (r, new) = self.row_at(k, p, 0);
        self.update_row(k, r, at);
        let Some(mut ks) = self.st.keys.get_mut(k) else {
            return Placed::Ok;
        };
        let row = &mut ks.rows[r * s..(r + 1) * s];
        row[1] += 1;
        if new {
            row[tr] = t as u64;
            row[tr + 1] = (t + 1) as u64;
        } else {
            row[tr] = (row[tr] as i64).min(t) as u64;
            row[tr + 1] = (row[tr + 1] as i64).max(t + 1) as u64;
        }
        if row[1] as i64 == pane {
            let total = (p + 1) * pane;
            if total >= n && (total - n) % slide == 0 {
                self.emit_count(k, (total - n) / pane, p, id, out);
                let keep_from = (total - n + slide) / pane;
                self.retain_rows(k, |row| row[0] as i64 >= keep_from);
            }
        }
        Placed::Ok
    }

    /// Merges key `k`'s panes `lo..=hi` and emits the window.
    fn emit_count(&mut self, k: u32, lo: i64, hi: i64, id: EntryId, out: &mut Vec<Record>) {
        let st = self.stride();
        let tr = st - 2;
        let nv = self.nvar;
        let mut merged = std::mem::take(&mut self.merged);
        merged.clear();
        merged.resize(self.width, 0);
        let mut mext = std::mem::take(&mut self.merged_ext);
        mext.clear();
        mext.resize(nv, Ext::None);
        let (mut ws, mut we) = (i64::MAX, i64::MIN);
        if let Some(ks) = self.st.keys.get(k) {
            for (r, row) in ks.rows.chunks_exact(st).enumerate() {
                let p = row[0] as i64;
                if p < lo || p > hi {
                    continue;
                }
                ws = ws.min(row[tr] as i64);
                we = we.max(row[tr + 1] as i64);
                for a in &self.aggs {
                    if a.kind.has_ext() {
                        a.ext_merge(&mut mext[a.ext], &ks.ext[nv + r * nv + a.ext]);
                    } else {
                        a.merge(&mut merged, &row[HDR..]);
                    }
                }
            }
        }
        if ws <= we {
            self.result(k, Some((ws, we)), None, &merged[..tr - HDR], &mext, id, out);
        }
        self.merged = merged;
        self.merged_ext = mext;
    }

    // ---- time -----------------------------------------------------------

    /// Fires the windows whose end the watermark reached, then drops the
    /// rows beyond lateness.
    fn advance(&mut self, id: EntryId, out: &mut Vec<Record>) {
        let wm = self.wm();
        let mut due = std::mem::take(&mut self.due);
        while let Some(e) = self.st.fire.pop_due(wm, &mut due) {
            for &k in &due {
                match self.kind {
                    WindowKind::Hop { size, slide, .. } => {
                        self.emit_hop(k, e - size, e, None, true, id, out);
                        // The key's next window that holds a pane.
                        let s = self.stride();
                        let next_start = e - size + slide;
                        if let Some(ks) = self.st.keys.get(k) {
                            let p = ks
                                .rows
                                .chunks_exact(s)
                                .map(|r| {
                                    start_of(
                                        WindowKind::Hop {
                                            size,
                                            slide,
                                            pane: 1,
                                        },
                                        r,
                                    )
                                })
                                .find(|&p| p >= next_start);
                            if let Some(p) = p {
                                let s_first = (p - size).div_euclid(slide) * slide + slide;
                                self.st.fire.insert(s_first.max(next_start) + size, k);
                            }
                        }
                    }
                    WindowKind::Session { .. } => self.fire_session(k, e, id, out),
                    WindowKind::Running | WindowKind::Count { .. } => {}
                }
            }
        }
        let l = self.lateness();
        while self.st.clean.pop_due(wm, &mut due).is_some() {
            for &k in &due {
                if let WindowKind::Session { .. } = self.kind {
                    self.clean_session(k, wm);
                    continue;
                }
                self.touch(k);
                // The time after which a row may go.
                let kind = self.kind;
                let expiry = move |row: &[u64]| -> i64 {
                    match kind {
                        WindowKind::Hop { size, slide, .. } => {
                            start_of(kind, row).div_euclid(slide) * slide + size + l
                        }
                        _ => row[1] as i64 + l,
                    }
                };
                self.retain_rows(k, |row| expiry(row) > wm);
                if let WindowKind::Hop { size, .. } = self.kind {
                    if self
                        .st
                        .revs
                        .keys()
                        .any(|&(kk, s0)| kk == k && s0 + size + l <= wm)
                    {
                        self.touch_revs();
                        self.st
                            .revs
                            .retain(|&(kk, s0), _| kk != k || s0 + size + l > wm);
                    }
                }
                self.drop_key_if_empty(k);
            }
        }
        self.due = due;
    }

    /// Keeps key `k`'s rows for which `keep` holds (the key must be
    /// touched); twap's last price of a dropped row carries on in the key.
    fn retain_rows(&mut self, k: u32, keep: impl Fn(&[u64]) -> bool) {
        let s = self.stride();
        if self.undo.active && self.row_undo() {
            self.save_rows_where(k, |row| !keep(row));
        }
        {
            let Some(mut ks) = self.st.keys.get_mut(k) else {
                return;
            };
            let before = ks.rows.len() / s;
            let nv = self.nvar;
            if nv == 0 {
                // In place: no Ext slots move with the rows.
                let mut w = 0;
                for r in 0..before {
                    if keep(&ks.rows[r * s..(r + 1) * s]) {
                        if w != r {
                            ks.rows.copy_within(r * s..(r + 1) * s, w * s);
                        }
                        w += 1;
                    }
                }
                ks.rows.truncate(w * s);
                self.st.rows -= (before - w) as u64;
                return;
            }
            let bytes_before = ks.ext_bytes();
            let mut kept = Vec::with_capacity(ks.rows.len());
            let mut ext = std::mem::take(&mut *ks.ext).into_vec().into_iter();
            let mut kept_ext = Vec::with_capacity(ext.len());
            kept_ext.extend(ext.by_ref().take(nv));
            for row in ks.rows.chunks_exact(s) {
                let row_ext: Vec<Ext> = ext.by_ref().take(nv).collect();
                if keep(row) {
                    kept.extend_from_slice(row);
                    kept_ext.extend(row_ext);
                } else {
                    // twap: the key's last price carries on.
                    for (v, e) in row_ext.iter().enumerate() {
                        if let Some(p) = e.last_point() {
                            let newer = kept_ext[v].last_point().is_none_or(|c| c.at < p.at);
                            if newer {
                                kept_ext[v] = Ext::Points(vec![p]);
                            }
                        }
                    }
                }
            }
            let gone = (before - kept.len() / s) as u64;
            ks.rows.set(kept);
            *ks.ext = ExtSlots::from_vec(kept_ext);
            if nv > 0 {
                let after = ks.ext_bytes();
                self.st.bytes = (self.st.bytes + after).saturating_sub(bytes_before);
            }
            self.st.rows -= gone;
        }
    }

    // ---- wall clock -----------------------------------------------------

    /// Sets the wall-clock time (ms) that IDLE and EMIT UPDATES EVERY go
    /// by; the runner calls it before each batch and each tick. The
    /// operator never reads the system clock.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.now = now_ms;
    }

    /// Emits what the clock made due without new entries: windows closed
    /// by the IDLE watermark advance, then the EMIT UPDATES flush. Call it
    /// inside an epoch ([`WindowOp::begin_epoch`]) like a batch: its state
    /// changes go into the epoch's delta. Its records have no source
    /// entry: their `source_id` is `0-0`.
    pub fn tick(&mut self, out: &mut Vec<Record>) {
        let id = EntryId::default();
        self.idle_advance(id, out);
        self.maybe_flush(id, out);
    }

    /// The wall-clock time at which [`WindowOp::tick`] would next produce
    /// something (a flush of changed rows, or a window or row that the IDLE
    /// watermark reaches), or `None`.
    pub fn next_tick_ms(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        if let Emit::Updates { every_ms } = self.opts.emit {
            if !self.st.dirty.is_empty() {
                let every = every_ms.min(i64::MAX as u64) as i64;
                next = Some(
                    self.st
                        .clock
                        .last_flush
                        .map_or(self.now, |l| l.saturating_add(every)),
                );
            }
        }
        if let Some(t) = self.idle_due() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    fn idle_ms(&self) -> Option<i64> {
        match self.kind {
            WindowKind::Hop { .. } | WindowKind::Session { .. } if self.opts.idle_ms > 0 => {
                Some(self.opts.idle_ms.min(MAX_EVENT_TIME as u64) as i64)
            }
            _ => None,
        }
    }

    /// When the IDLE watermark reaches the next timer.
    fn idle_due(&self) -> Option<i64> {
        let idle = self.idle_ms()?;
        let c = &self.st.clock;
        let (max_ts, last) = (c.max_ts?, c.last_arrival?);
        let timer = match (self.st.fire.first(), self.st.clean.first()) {
            (Some(f), Some(c)) => f.min(c),
            (Some(f), None) => f,
            (None, Some(c)) => c,
            (None, None) => return None,
        };
        // The IDLE watermark at wall-clock time T >= last + idle is
        // max_ts - WATERMARK + (T - last).
        let base = max_ts - self.opts.watermark_ms.min(MAX_EVENT_TIME as u64) as i64;
        let reach = last.saturating_add(timer.saturating_sub(base));
        Some(reach.max(last.saturating_add(idle)))
    }

    /// IDLE: once no event arrived for `idle_ms` of wall-clock time, the
    /// watermark is `max_ts - WATERMARK + (now - last arrival)` (it never
    /// goes back), and the windows it passes close.
    fn idle_advance(&mut self, id: EntryId, out: &mut Vec<Record>) {
        let Some(idle) = self.idle_ms() else {
            return;
        };
        let c = self.st.clock;
        let (Some(max_ts), Some(last)) = (c.max_ts, c.last_arrival) else {
            return;
        };
        let quiet = self.now.saturating_sub(last);
        if quiet < idle {
            return;
        }
        let base = max_ts - self.opts.watermark_ms.min(MAX_EVENT_TIME as u64) as i64;
        let w = base.saturating_add(quiet).min(MAX_WATERMARK);
        if w > self.wm() {
            self.st.clock.idle_wm = Some(w);
            self.advance(id, out);
        }
    }

    /// Writes the changed rows when due: a running aggregate's after each
    /// batch (EMIT FINAL) or at most once per EVERY (EMIT UPDATES); open
    /// windows' results at most once per EVERY.
    fn maybe_flush(&mut self, id: EntryId, out: &mut Vec<Record>) {
        if self.st.dirty.is_empty() {
            return;
        }
        let due = match self.opts.emit {
            Emit::Final => self.kind == WindowKind::Running,
            Emit::Updates { every_ms } => {
                let every = every_ms.min(i64::MAX as u64) as i64;
                self.st
                    .clock
                    .last_flush
                    .is_none_or(|l| self.now >= l.saturating_add(every))
            }
        };
        if !due {
            return;
        }
        let dirty = std::mem::take(&mut self.st.dirty);
        let wm = self.wm();
        let s = self.stride();
        let results = self.results;
        let mut starts = BTreeSet::new();
        for &k in &dirty {
            self.touch(k);
            if self.undo.active && self.row_undo() {
                // Clearing DIRTY changes the rows: save them first.
                self.save_rows_where(k, |row| row[0] & DIRTY != 0);
            }
            starts.clear();
            let mut sessions = Vec::new();
            let mut running = None;
            let nv = self.nvar;
            let (hdr, rw, kind) = (self.hdr(), self.rw(), self.kind);
            let Some(mut ks) = self.st.keys.get_mut(k) else {
                continue;
            };
            for (r, row) in ks.rows.chunks_exact_mut(s).enumerate() {
                if row[rw] & DIRTY == 0 {
                    continue;
                }
                row[rw] &= !DIRTY;
                let start = start_of(kind, row);
                let end = if hdr == HDR { row[1] as i64 } else { 0 };
                match self.kind {
                    WindowKind::Running => {
                        running = Some((row[hdr..].to_vec(), ks.ext[nv..nv + nv].to_vec()))
                    }
                    WindowKind::Hop { size, slide, .. } => {
                        // The open windows that hold this pane.
                        let mut w = (start - size).div_euclid(slide) * slide + slide;
                        while w <= start {
                            if w + size > wm {
                                starts.insert(w);
                            }
                            w += slide;
                        }
                    }
                    WindowKind::Session { .. } => {
                        if end > wm {
                            sessions.push(r);
                        }
                    }
                    // EMIT UPDATES is refused for count windows.
                    WindowKind::Count { .. } => {}
                }
            }
            if let Some((words, ext)) = running {
                self.result(k, None, None, &words, &ext, id, out);
            }
            if let WindowKind::Hop { size, .. } = self.kind {
                let ws: Vec<i64> = starts.iter().copied().collect();
                for w in ws {
                    self.emit_hop(k, w, w + size, None, false, id, out);
                }
            }
            for r in sessions {
                let (words, ext) = match self.st.keys.get(k) {
                    Some(ks) => (
                        ks.rows[r * s..(r + 1) * s].to_vec(),
                        ks.ext[nv + r * nv..nv + (r + 1) * nv].to_vec(),
                    ),
                    None => continue,
                };
                let rev = words[2] & !DIRTY;
                let rev = (rev > 0).then_some(rev.min(u32::MAX as u64) as u32);
                self.result(
                    k,
                    Some((words[0] as i64, words[1] as i64)),
                    rev,
                    &words[HDR..],
                    &ext,
                    id,
                    out,
                );
            }
        }
        // The interval starts at a flush that wrote something (rows whose
        // windows had all closed write nothing).
        if matches!(self.opts.emit, Emit::Updates { .. }) && self.results != results {
            self.st.clock.last_flush = Some(self.now);
        }
    }

    /// Rebuilds the set of keys with a [`DIRTY`] row.
    fn rebuild_dirty(&mut self) {
        let (s, rw) = (self.stride(), self.rw());
        self.st.dirty.clear();
        for (k, ks) in self.st.keys.iter().enumerate() {
            if let Some(ks) = ks {
                if ks.rows.chunks_exact(s).any(|r| r[rw] & DIRTY != 0) {
                    self.st.dirty.insert(k as u32);
                }
            }
        }
    }

    fn refresh_dirty(&mut self, k: u32) {
        let (s, rw) = (self.stride(), self.rw());
        let d = self
            .st
            .keys
            .get(k)
            .is_some_and(|ks| ks.rows.chunks_exact(s).any(|r| r[rw] & DIRTY != 0));
        if d {
            self.st.dirty.insert(k);
        } else {
            self.st.dirty.remove(&k);
        }
    }

    // ---- results --------------------------------------------------------

    /// Builds the internal record of one result, applies HAVING and the
    /// SELECT list, and appends the output (plus `_rev`) to `out`.
    #[allow(clippy::too_many_arguments)]
    fn result(
        &mut self,
        k: u32,
        window: Option<(i64, i64)>,
        rev: Option<u32>,
        words: &[u64],
        ext: &[Ext],
        id: EntryId,
        out: &mut Vec<Record>,
    ) {
        let Some(ks) = self.st.keys.get(k) else {
            return;
        };
        self.results += 1;
        if let Some(direct) = &self.out.direct {
            // Written into the flat output (no record, no `Bytes` per
            // field); the same fields and bytes as the generic path.
            let flat = &mut self.flat;
            // The key values joined by `:` (a NULL key is empty), and where
            // each non-NULL one is in it: its field is a span of the key.
            let mut joined = std::mem::take(&mut self.joined);
            joined.clear();
            let kpos = &mut self.kpos;
            kpos.clear();
            join_key(&ks.key, self.keys.len(), &mut joined, |i, v, at| {
                kpos.resize(i, None);
                kpos.push(Some((at, at + v.len())));
            });
            kpos.resize(self.keys.len(), None);
            let key = flat.begin(&joined);
            self.joined = joined;
            let mut digits = [0u8; 20];
            for (name, src) in direct {
                match *src {
                    OutSrc::Key(i) => match kpos.get(i).copied().flatten() {
                        Some((a, b)) => flat.field_span(name, (key.0 + a, key.0 + b)),
                        None => continue,
                    },
                    OutSrc::Start | OutSrc::End => match window {
                        Some((s, e)) => {
                            let t = if *src == OutSrc::Start { s } else { e };
                            let at = flat.buf().len();
                            flat.buf()
                                .extend_from_slice(crate::value::int_digits(t, &mut digits));
                            flat.field(name, at);
                        }
                        None => continue,
                    },
                    OutSrc::Agg(j) => {
                        let Some(a) = self.aggs.get(j) else {
                            continue;
                        };
                        let v = if a.kind.has_ext() {
                            let carry = match (a.kind, window) {
                                (agg::AggKind::Twap, Some((ws, _))) => {
                                    carry_in(ks.ext, self.nvar, a.ext, ws)
                                }
                                _ => None,
                            };
                            a.ext_result(&ext[a.ext], window, carry)
                        } else {
                            a.result(words)
                        };
                        let at = flat.buf().len();
                        // NULL writes nothing and leaves the column out.
                        if write_value(&v, flat.buf()) {
                            flat.field(name, at);
                        }
                    }
                }
            }
            if let Some(r) = rev {
                let at = flat.buf().len();
                flat.buf()
                    .extend_from_slice(crate::value::int_digits(r.into(), &mut digits));
                flat.field(b"_rev", at);
            }
            flat.end(id, key);
            return;
        }
        if self.cols.is_empty() {
            self.cols = (0..self.keys.len())
                .map(key_col)
                .chain((0..self.aggs.len()).map(agg_col))
                .collect();
        }
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        let mut arena = std::mem::take(&mut self.arena);
        // The key values joined by `:` (a NULL key is empty).
        let mut joined = std::mem::take(&mut self.joined);
        joined.clear();
        let cols = &self.cols;
        join_key(&ks.key, self.keys.len(), &mut joined, |i, v, _| {
            fields.push((cols[i].clone(), arena_put(&mut arena, v)));
        });
        let key = arena_put(&mut arena, &joined);
        self.joined = joined;
        let mut digits = [0u8; 20];
        if let Some((s, e)) = window {
            fields.push((
                Bytes::from_static(b"window_start"),
                arena_put(&mut arena, crate::value::int_digits(s, &mut digits)),
            ));
            fields.push((
                Bytes::from_static(b"window_end"),
                arena_put(&mut arena, crate::value::int_digits(e, &mut digits)),
            ));
        }
        let mut tmp = std::mem::take(&mut self.tmp);
        for (j, a) in self.aggs.iter().enumerate() {
            tmp.clear();
            let v = if a.kind.has_ext() {
                let carry = match (a.kind, window) {
                    (agg::AggKind::Twap, Some((ws, _))) => carry_in(ks.ext, self.nvar, a.ext, ws),
                    _ => None,
                };
                a.ext_result(&ext[a.ext], window, carry)
            } else {
                a.result(words)
            };
            if write_value(&v, &mut tmp) {
                let col = self.cols[self.keys.len() + j].clone();
                fields.push((col, arena_put(&mut arena, &tmp)));
            }
        }
        self.tmp = tmp;
        let w = self.out.slots.len();
        self.idx.clear();
        self.idx.resize(w, MISSING);
        self.num.clear();
        self.num.resize(w, Num::Null);
        self.out
            .slots
            .resolve(&fields, &mut self.idx, &mut self.num);
        let row = Row {
            id,
            fields: &fields,
            slot_idx: &self.idx,
            slot_num: &self.num,
        };
        let keep = match &self.out.having {
            None => true,
            Some(h) => matches!(h.get(&row), Ok(Some(true))),
        };
        if keep {
            let mut outf = Vec::with_capacity(self.out.project.cols.len() + 1);
            if self
                .out
                .project
                .one(&row, None, &mut arena, &mut outf)
                .is_ok()
            {
                push_result(out, id, outf, key, rev, &mut arena);
            }
        }
        self.arena = arena;
        fields.clear();
        self.fields = fields;
    }

    fn late(&mut self, e: &crate::entry::Entry<'_>, reason: String) {
        if self.opts.late_stream.is_none() {
            self.st.late_dropped += 1;
            return;
        }
        self.st.late_written += 1;
        let mut fields = Vec::with_capacity(e.fields.len() + 1);
        for i in 0..e.fields.len() {
            fields.push((
                Bytes::copy_from_slice(e.fields.name(i)),
                Bytes::copy_from_slice(e.fields.value(i)),
            ));
        }
        fields.push((Bytes::from_static(b"_reason"), Bytes::from(reason)));
        self.late_out.push(Record {
            source_id: e.id,
            fields,
            key: None,
        });
    }
}

/// Makes room for `n` more bytes in a result arena, starting a new chunk
/// when the current one is full (the values split off the old chunk keep
/// it alive until they are dropped).
#[inline]
fn arena_reserve(arena: &mut BytesMut, n: usize) {
    if arena.capacity() - arena.len() < n {
        *arena = BytesMut::with_capacity(n.max(64 << 10));
    }
}

/// Appends a result's record, with `_rev` when it is a revision.
fn push_result(
    out: &mut Vec<Record>,
    id: EntryId,
    mut fields: Vec<(Bytes, Bytes)>,
    key: Bytes,
    rev: Option<u32>,
    arena: &mut BytesMut,
) {
    if let Some(r) = rev {
        let mut digits = [0u8; 20];
        fields.push((
            Bytes::from_static(b"_rev"),
            arena_put(arena, crate::value::int_digits(r.into(), &mut digits)),
        ));
    }
    out.push(Record {
        source_id: id,
        fields,
        key: Some(key),
    });
}

/// `v` copied into the arena, as its own `Bytes`.
#[inline]
fn arena_put(arena: &mut BytesMut, v: &[u8]) -> Bytes {
    arena_reserve(arena, v.len());
    arena.extend_from_slice(v);
    arena.split().freeze()
}

/// twap's carried price for a window starting at `ws`: the key's latest
/// price before `ws`, from its rows and its carried slot.
fn carry_in(ext: &[Ext], nvar: usize, v: usize, ws: i64) -> Option<Point> {
    let mut best: Option<Point> = None;
    let mut consider = |e: &Ext| {
        if let Ext::Points(ps) = e {
            let i = ps.partition_point(|p| p.at.ts < ws);
            if let Some(p) = i.checked_sub(1).map(|i| ps[i]) {
                if best.is_none_or(|b| b.at < p.at) {
                    best = Some(p);
                }
            }
        }
    };
    for (i, e) in ext.iter().enumerate() {
        if i < nvar {
            if i == v {
                consider(e);
            }
        } else if (i - nvar) % nvar == v {
            consider(e);
        }
    }
    best
}

pub(crate) fn key_col(i: usize) -> Bytes {
    Bytes::from(format!("__k{i}"))
}

pub(crate) fn agg_col(j: usize) -> Bytes {
    Bytes::from(format!("__a{j}"))
}

/// Joins a key's values (each `u8 tag` then, for tag 1, `u32 len` and the
/// bytes; any other tag is a NULL, joined empty) by `:` into `joined`,
/// calling `each(i, value, at)` for each non-NULL one before it is
/// appended (`at`: where it starts in `joined`).
fn join_key(key: &[u8], n: usize, joined: &mut Vec<u8>, mut each: impl FnMut(usize, &[u8], usize)) {
    let mut kb = key;
    for i in 0..n {
        if i > 0 {
            joined.push(b':');
        }
        let Some((&tag, rest)) = kb.split_first() else {
            break;
        };
        kb = rest;
        if tag == 1 && kb.len() >= 4 {
            let len = u32::from_le_bytes([kb[0], kb[1], kb[2], kb[3]]) as usize;
            let v = &kb[4..4 + len.min(kb.len() - 4)];
            kb = &kb[4 + v.len()..];
            each(i, v, joined.len());
            joined.extend_from_slice(v);
        }
    }
}

impl Operator for WindowOp {
    fn kind(&self) -> &'static str {
        "Window"
    }

    fn describe(&self) -> String {
        self.text.clone()
    }

    fn as_window(&self) -> Option<&WindowOp> {
        Some(self)
    }

    fn as_window_mut(&mut self) -> Option<&mut WindowOp> {
        Some(self)
    }

    fn process(&mut self, b: &mut Batch<'_>) {
        let sel = std::mem::take(&mut b.sel);
        let mut records = std::mem::take(&mut b.records);
        records.clear();
        let mut failed = Vec::new();
        // A batch after a long pause first closes what IDLE made due.
        let first_id = sel
            .first()
            .map_or(EntryId::default(), |&i| b.entries[i as usize].id);
        self.idle_advance(first_id, &mut records);
        if !sel.is_empty() {
            self.st.clock.last_arrival = Some(self.now);
        }
        for &i in &sel {
            if self.fatal.is_some() {
                break;
            }
            let row = b.row(i as usize);
            let id = row.id;
            let t = match &self.time {
                None => i64::try_from(id.ms).unwrap_or(i64::MAX),
                Some(src) => match src.get(&row) {
                    Ok(Num::Int(t)) => t,
                    Ok(Num::Float(x)) if x.fract() == 0.0 && x.abs() < MAX_EVENT_TIME as f64 => {
                        x as i64
                    }
                    Ok(_) => {
                        failed.push((
                            id,
                            crate::error::EvalError::InvalidArgument(
                                "event time is NULL or not an integer (epoch milliseconds)".into(),
                            ),
                        ));
                        continue;
                    }
                    Err(e) => {
                        failed.push((id, e));
                        continue;
                    }
                },
            };
            if !(0..=MAX_EVENT_TIME).contains(&t) {
                failed.push((id, crate::error::EvalError::OutOfRange("event time")));
                continue;
            }
            if let Err(e) = self.key_of(&row).and_then(|_| self.read_args(&row)) {
                failed.push((id, e));
                continue;
            }
            let at = Order {
                ts: t,
                ms: id.ms,
                seq: id.seq,
            };
            let k = self.key_id();
            let placed = match self.kind {
                WindowKind::Running => {
                    let (r, _) = self.row_at(k, 0, 0);
                    self.update_row(k, r, at);
                    Placed::Ok
                }
                WindowKind::Hop { .. } => self.place_hop(k, t, at, id, &mut records),
                WindowKind::Session { gap } => self.place_session(k, t, at, id, gap, &mut records),
                WindowKind::Count { n, slide, pane } => {
                    self.place_count(k, t, at, (n, slide, pane), id, &mut records)
                }
            };
            if let Placed::TooLate = placed {
                self.drop_key_if_empty(k);
                let entry = b.entries[i as usize];
                self.late(
                    &entry,
                    format!(
                        "late: event time {t} is behind watermark {} beyond LATENESS {}",
                        self.wm(),
                        self.opts.lateness_ms
                    ),
                );
                continue;
            }
            let timed = matches!(
                self.kind,
                WindowKind::Hop { .. } | WindowKind::Session { .. }
            );
            if timed && self.st.clock.max_ts.is_none_or(|m| t > m) {
                self.st.clock.max_ts = Some(t);
                self.advance(id, &mut records);
            }
            self.check_limit();
        }
        let last_id = sel
            .last()
            .map_or(EntryId::default(), |&i| b.entries[i as usize].id);
        self.maybe_flush(last_id, &mut records);
        for (id, e) in failed {
            b.fail(id, e);
        }
        b.sel = sel;
        b.sel.clear();
        b.records = records;
        b.mapped = true;
    }

    fn snapshot(&self) -> Vec<u8> {
        self.encode_state()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PlanError> {
        self.decode_state(state).map_err(PlanError::State)
    }
}

// ---- persisted state ----------------------------------------------------

/// Version bytes of the window state encoding: 1 (before the clock), 2
/// (the clock's fields in the globals, Ext slots), 3 (one header word in
/// TUMBLE/HOP and running rows), 4 (deltas only: a TUMBLE/HOP key's
/// change may list just the rows the epoch changed); this build writes 3
/// (states) and 4 (deltas) and reads all.
const STATE_V1: u8 = 1;
const STATE_V2: u8 = 2;
const STATE_V3: u8 = 3;
const STATE_V4: u8 = 4;

/// One key's change in an epoch's delta.
enum KeyChange {
    /// The key is gone.
    Gone,
    /// Its whole state: rows and Ext slots.
    Whole(Vec<u64>, Vec<Ext>),
    /// TUMBLE/HOP (version 4): its carried Ext slots, and the rows that
    /// changed by start (`None`: the row is gone).
    Rows(Vec<Ext>, Vec<RowChange>),
}

/// A changed row by start: its words and Ext slots (`None`: it is gone).
type RowChange = (i64, Option<(Vec<u64>, Vec<Ext>)>);

impl WindowOp {
    /// The state: `u8 version (2)`, `u32 stride`, the globals
    /// (`put_globals`: event time, late counters, then the clock), `u32
    /// keys`, per key `u32 len, bytes, u32 rows, rows × stride × u64`, then
    /// its [`Ext`] slots when the plan has such aggregates (`put_rows`),
    /// `u32 revs`, per revision `u32 key index (in the order above), i64
    /// start, u32 rev`. Little-endian throughout. Version 1 (no clock, no
    /// Ext) is still read.
    ///
    /// While an epoch is being evaluated this is the state before it (the
    /// committed one): a checkpoint taken then must not hold changes whose
    /// entries the position has not passed.
    pub fn encode_state(&self) -> Vec<u8> {
        let u = &self.undo;
        // TUMBLE/HOP keys the epoch touched, as they were before it.
        let mut rebuilt: HashMap<u32, KeyState> = HashMap::new();
        if u.active && self.row_undo() {
            let nv = self.nvar;
            let dropped: std::collections::HashSet<u32> = u.dropped.iter().copied().collect();
            for (k, pre) in &u.keys {
                if let PreImage::Rows(carried) = pre {
                    let now = match self.st.keys.get(*k) {
                        Some(ks) => Some(ks.to_owned()),
                        None if dropped.contains(k) => self.st.keys.retired(*k, nv),
                        None => None,
                    };
                    if let Some(mut ks) = now {
                        ks.ext.splice(0..nv, carried.iter().cloned());
                        rebuilt.insert(*k, ks);
                    }
                }
            }
            undo_rows(u, self.kind, self.stride(), nv, &mut rebuilt);
        }
        let saved: HashMap<u32, Option<&KeyState>> = if u.active {
            u.keys
                .iter()
                .map(|(k, p)| {
                    let ks = match p {
                        PreImage::Absent => None,
                        PreImage::Whole(ks) => Some(ks),
                        PreImage::Rows(_) => rebuilt.get(k),
                    };
                    (*k, ks)
                })
                .collect()
        } else {
            HashMap::new()
        };
        let (clock, dropped, written, revs) = if u.active {
            (
                u.clock,
                u.late_dropped,
                u.late_written,
                u.revs.as_ref().unwrap_or(&self.st.revs),
            )
        } else {
            (
                self.st.clock,
                self.st.late_dropped,
                self.st.late_written,
                &self.st.revs,
            )
        };
        let mut live: Vec<(u32, KeyRef<'_>)> = Vec::with_capacity(self.st.index.len());
        for (i, k) in self.st.keys.iter().enumerate() {
            let id = i as u32;
            match saved.get(&id) {
                Some(Some(ks)) => live.push((id, ks.as_ref())),
                Some(None) => {}
                None => {
                    if let Some(ks) = k {
                        live.push((id, ks));
                    }
                }
            }
        }
        let mut v = vec![STATE_V3];
        v.extend_from_slice(&(self.stride() as u32).to_le_bytes());
        put_globals(&mut v, &clock, dropped, written);
        v.extend_from_slice(&(live.len() as u32).to_le_bytes());
        let mut pos = HashMap::new();
        for (n, (id, ks)) in live.iter().enumerate() {
            pos.insert(*id, n as u32);
            v.extend_from_slice(&(ks.key.len() as u32).to_le_bytes());
            v.extend_from_slice(&ks.key);
            put_rows(&mut v, ks.rows, ks.ext, self.kind, self.stride());
        }
        let mut revs: Vec<_> = revs
            .iter()
            .filter_map(|(&(k, s), &r)| pos.get(&k).map(|&p| (p, s, r)))
            .collect();
        revs.sort_unstable();
        v.extend_from_slice(&(revs.len() as u32).to_le_bytes());
        for (p, s, r) in revs {
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&r.to_le_bytes());
        }
        v
    }

    /// Starts an epoch: changes from here on can be taken back
    /// ([`WindowOp::rollback_epoch`]) or described ([`WindowOp::epoch_delta`]).
    pub fn begin_epoch(&mut self) {
        if self.undo.active {
            self.rollback_epoch();
        }
        let u = &mut self.undo;
        u.epoch = u.epoch.wrapping_add(1);
        if u.epoch == 0 {
            u.epoch = 1;
            u.stamp.fill(0);
        }
        u.active = true;
        u.keys.clear();
        u.rows.clear();
        u.words.clear();
        u.exts.clear();
        u.dropped.clear();
        u.freed.clear();
        u.revs = None;
        u.clock = self.st.clock;
        u.late_dropped = self.st.late_dropped;
        u.late_written = self.st.late_written;
    }

    /// The epoch committed: its changes stay.
    pub fn end_epoch(&mut self) {
        let (kind, s) = (self.kind, self.stride());
        let u = &mut self.undo;
        u.active = false;
        self.st.free.append(&mut u.freed);
        for ru in &u.rows {
            if let Some(mut ks) = self.st.keys.get_mut(ru.k) {
                if let Ok(i) = find_row(kind, &ks.rows, s, ru.start) {
                    ks.rows[i * s] &= !SAVED;
                }
            }
        }
        for &k in &u.dropped {
            self.st.keys.remove(k);
        }
        u.recycle_keys();
        u.rows.clear();
        u.words.clear();
        u.exts.clear();
        u.dropped.clear();
        u.revs = None;
    }

    /// The epoch did not commit: the state goes back to where it began.
    pub fn rollback_epoch(&mut self) {
        if !self.undo.active {
            return;
        }
        let keys = std::mem::take(&mut self.undo.keys);
        let rows = self.row_undo();
        // First out with every touched key as it is now (a key dropped and
        // created again in the epoch has two slots), then back as it was.
        let mut held: HashMap<u32, KeyState> = HashMap::new();
        // Slots of keys the epoch created go back to the free list, each
        // once: those still live and those it freed again. (A key touched
        // while its slot was free is Absent too, and its slot is still in
        // the list.)
        let mut refree: std::collections::HashSet<u32> = self.undo.freed.iter().copied().collect();
        for (k, _) in &keys {
            if let Some(ks) = self.st.keys.take(*k) {
                self.st.index_remove(&ks.key, *k);
                refree.insert(*k);
                if rows {
                    held.insert(*k, ks);
                }
            }
        }
        for k in std::mem::take(&mut self.undo.dropped) {
            if let Some(ks) = self.st.keys.retired(k, self.nvar) {
                held.insert(k, ks);
            }
        }
        if rows {
            undo_rows(&self.undo, self.kind, self.stride(), self.nvar, &mut held);
        }
        for (k, pre) in keys {
            let ks = match pre {
                PreImage::Absent => {
                    if refree.remove(&k) {
                        self.st.free.push(k);
                    }
                    continue;
                }
                PreImage::Whole(ks) => ks,
                PreImage::Rows(carried) => {
                    let Some(mut ks) = held.remove(&k) else {
                        continue;
                    };
                    ks.ext.splice(0..self.nvar, carried);
                    ks
                }
            };
            self.st.keys.put(Some(k), &ks.key, ks.rows, ks.ext);
            self.st.index_insert(k);
        }
        let u = &mut self.undo;
        u.active = false;
        u.rows.clear();
        u.words.clear();
        u.exts.clear();
        u.freed.clear();
        self.st.clock = u.clock;
        self.st.late_dropped = u.late_dropped;
        self.st.late_written = u.late_written;
        if let Some(r) = u.revs.take() {
            self.st.revs = r;
        }
        self.late_out.clear();
        self.fatal = None;
        self.recount();
        self.rebuild_timers();
        self.rebuild_dirty();
    }

    fn recount(&mut self) {
        let s = self.stride();
        let (mut bytes, mut rows) = (0u64, 0u64);
        for ks in self.st.keys.iter().flatten() {
            bytes += ks.ext_bytes();
            rows += (ks.rows.len() / s) as u64;
        }
        self.st.bytes = bytes;
        self.st.rows = rows;
    }

    /// What the current epoch changed, to log with its results: the
    /// watermark's source and the late counters, the revisions when they
    /// changed, and per key it touched its change: for TUMBLE/HOP only the
    /// rows (panes) the epoch changed, for the other kinds the key's whole
    /// state (a few rows).
    ///
    /// `u8 version (4)`, `u32 stride`, globals as in the state, `u8
    /// revs_changed` (then `u32 n`, per revision `u32 len, key, i64 start,
    /// u32 rev`), `u32 keys`, per key `u32 len, key, u8 change`: 0 the key
    /// is gone; 1 its whole state (`u32 rows`, the words and the Ext slots,
    /// as in the state); 2 (TUMBLE/HOP, the key exists) its carried Ext
    /// slots, `u32 n`, per changed row `i64 start, u8 present` (then the
    /// row's words and its Ext slots). Versions 1 to 3 had changes 0 and 1
    /// only, and are still read.
    pub fn epoch_delta(&self) -> Option<Vec<u8>> {
        let u = &self.undo;
        if !u.active {
            return None;
        }
        let (kind, s, nv) = (self.kind, self.stride(), self.nvar);
        // Sized up front: keys with their bytes, changed rows with their words.
        let mut v = Vec::with_capacity(80 + u.keys.len() * 32 + u.rows.len() * (9 + 8 * s));
        v.push(STATE_V4);
        v.extend_from_slice(&(s as u32).to_le_bytes());
        put_globals(
            &mut v,
            &self.st.clock,
            self.st.late_dropped,
            self.st.late_written,
        );
        match &u.revs {
            None => v.push(0),
            Some(_) => {
                v.push(1);
                let revs: Vec<_> = self
                    .st
                    .revs
                    .iter()
                    .filter_map(|(&(k, s), &r)| self.st.keys.get(k).map(|ks| (ks.key, s, r)))
                    .collect();
                v.extend_from_slice(&(revs.len() as u32).to_le_bytes());
                for (key, s, r) in revs {
                    v.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    v.extend_from_slice(&key);
                    v.extend_from_slice(&s.to_le_bytes());
                    v.extend_from_slice(&r.to_le_bytes());
                }
            }
        }
        // The changed rows' starts grouped by key in `u.keys` order (a
        // counting sort on each key's index there), those of key number
        // `n` at `changed[first[n]..first[n + 1]]`, sorted below.
        let ord_of = |k: u32| -> Option<usize> {
            let i = k as usize;
            (u.stamp.get(i) == Some(&u.epoch))
                .then(|| u.ord.get(i).map(|&o| o as usize))
                .flatten()
                .filter(|&o| o < u.keys.len())
        };
        let mut first = vec![0usize; u.keys.len() + 1];
        for r in &u.rows {
            if let Some(o) = ord_of(r.k) {
                first[o + 1] += 1;
            }
        }
        for n in 1..first.len() {
            first[n] += first[n - 1];
        }
        let mut changed = vec![0i64; first[u.keys.len()]];
        {
            let mut at = first.clone();
            for r in &u.rows {
                if let Some(o) = ord_of(r.k) {
                    changed[at[o]] = r.start;
                    at[o] += 1;
                }
            }
        }
        // Which of `u.keys` were dropped during the epoch, by index there.
        let mut dropped = vec![false; u.keys.len()];
        for &k in &u.dropped {
            if let Some(o) = ord_of(k) {
                dropped[o] = true;
            }
        }
        let put_key = |v: &mut Vec<u8>, key: &[u8], change: u8| {
            v.extend_from_slice(&(key.len() as u32).to_le_bytes());
            v.extend_from_slice(key);
            v.push(change);
        };
        let n_at = v.len();
        v.extend_from_slice(&0u32.to_le_bytes());
        let mut n = 0u32;
        for (kn, (k, pre)) in u.keys.iter().enumerate() {
            match (self.st.keys.get(*k), pre) {
                (Some(ks), PreImage::Rows(carried)) => {
                    let (lo, hi) = (first[kn], first[kn + 1]);
                    if lo == hi && carried[..] == ks.ext[..nv] {
                        continue;
                    }
                    // Its starts in order, each once (a few per key).
                    let starts = &mut changed[lo..hi];
                    starts.sort_unstable();
                    let mut m = 0;
                    for i in 0..starts.len() {
                        if i == 0 || starts[i] != starts[m - 1] {
                            starts[m] = starts[i];
                            m += 1;
                        }
                    }
                    put_key(&mut v, &ks.key, 2);
                    for e in &ks.ext[..nv] {
                        e.encode(&mut v);
                    }
                    v.extend_from_slice(&(m as u32).to_le_bytes());
                    for &start in &changed[lo..lo + m] {
                        v.extend_from_slice(&start.to_le_bytes());
                        match find_row(kind, ks.rows, s, start) {
                            Ok(i) => {
                                v.push(1);
                                put_row(&mut v, &ks.rows[i * s..(i + 1) * s], kind);
                                for e in &ks.ext[nv + i * nv..nv + (i + 1) * nv] {
                                    e.encode(&mut v);
                                }
                            }
                            Err(_) => v.push(0),
                        }
                    }
                }
                (Some(ks), _) => {
                    put_key(&mut v, &ks.key, 1);
                    put_rows(&mut v, ks.rows, ks.ext, kind, s);
                }
                (None, PreImage::Whole(ks)) => put_key(&mut v, &ks.key, 0),
                (None, PreImage::Rows(_)) => match self.st.keys.retired_key(*k) {
                    Some(key) if dropped[kn] => put_key(&mut v, &key, 0),
                    _ => continue,
                },
                (None, PreImage::Absent) => continue,
            }
            n += 1;
        }
        v[n_at..n_at + 4].copy_from_slice(&n.to_le_bytes());
        Some(v)
    }

    /// Applies what [`WindowOp::epoch_delta`] wrote (recovery replays the
    /// epochs after the checkpoint). Checked like the state; a failure
    /// leaves the state as it was.
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<(), String> {
        let mut r = crate::engine::def::Cursor::new(delta);
        let ver = r.u8()?;
        if !(STATE_V1..=STATE_V4).contains(&ver) {
            return Err(format!(
                "unknown window state change version {ver} (this build reads versions {STATE_V1} to {STATE_V4})"
            ));
        }
        let stride = r.u32()? as usize;
        if stride != self.stride_of(ver) {
            return Err(format!(
                "window state rows are {stride} words, this plan's are {}",
                self.stride_of(ver)
            ));
        }
        let (clock, dropped, written) = get_globals(&mut r, ver)?;
        let revs = match r.u8()? {
            0 => None,
            1 => {
                let n = r.u32()? as usize;
                let mut v = Vec::with_capacity(n.min(r.remaining() / 16));
                for _ in 0..n {
                    let key = r.bytes()?;
                    let s = r.u64()? as i64;
                    let rev = r.u32()?;
                    v.push((key, s, rev));
                }
                Some(v)
            }
            b => return Err(format!("bad flag {b}")),
        };
        let n = r.u32()? as usize;
        let mut keys = Vec::with_capacity(n.min(r.remaining() / 5));
        for _ in 0..n {
            let key = r.bytes()?;
            let change = match r.u8()? {
                0 => KeyChange::Gone,
                1 => {
                    let (rows, ext) = self.get_rows_ext(&mut r, ver)?;
                    KeyChange::Whole(rows, ext)
                }
                2 if ver >= STATE_V4 && self.row_undo() => {
                    if self.st.find(key).is_none() {
                        return Err(
                            "a window state change updates rows of a key the state does not hold"
                                .into(),
                        );
                    }
                    self.get_row_changes(&mut r)?
                }
                b => return Err(format!("bad flag {b}")),
            };
            keys.push((key, change));
        }
        if !r.is_empty() {
            return Err("trailing bytes after a window state change".into());
        }
        // Checked: apply.
        if self.undo.active {
            self.rollback_epoch();
        }
        self.st.clock = clock;
        self.st.late_dropped = dropped;
        self.st.late_written = written;
        let (kind, s, nv) = (self.kind, self.stride(), self.nvar);
        let mut touched = Vec::with_capacity(keys.len());
        for (key, change) in keys {
            let id = self.st.find(key);
            match (id, change) {
                (id, KeyChange::Whole(rows, ext)) => {
                    let k = match id {
                        Some(k) => k,
                        None => {
                            self.key_buf.clear();
                            self.key_buf.extend_from_slice(key);
                            self.key_id()
                        }
                    };
                    if let Some(mut ks) = self.st.keys.get_mut(k) {
                        ks.rows.set(rows);
                        *ks.ext = ExtSlots::from_vec(ext);
                    }
                    touched.push(k);
                }
                (Some(k), KeyChange::Rows(carried, rows)) => {
                    if let Some(mut ks) = self.st.keys.take(k) {
                        ks.ext.splice(0..nv, carried);
                        for (start, row) in &rows {
                            let row = row.as_ref().map(|(w, e)| (&w[..], &e[..]));
                            set_row(kind, s, nv, &mut ks, *start, row);
                        }
                        self.st.keys.put(Some(k), &ks.key, ks.rows, ks.ext);
                    }
                    touched.push(k);
                }
                (Some(k), KeyChange::Gone) => {
                    if let Some(mut ks) = self.st.keys.get_mut(k) {
                        ks.rows.clear();
                        ks.ext.clear();
                    }
                    self.drop_key_if_empty(k);
                }
                (None, _) => {}
            }
        }
        if let Some(revs) = revs {
            self.st.revs.clear();
            for (key, s, rev) in revs {
                if let Some(k) = self.st.find(key) {
                    self.st.revs.insert((k, s), rev);
                }
            }
        }
        self.recount();
        let wm = self.wm();
        for k in touched {
            self.timers_of(k);
            self.refresh_dirty(k);
        }
        // Windows whose end the watermark passed fired in the epochs
        // replayed: their timers must not fire them again.
        // Their keys' next windows are found again from the rows (firing
        // a window does not change a key, so it is not in the change).
        if wm != i64::MIN {
            for k in self.st.fire.take_upto(wm) {
                self.timers_of(k);
            }
        }
        Ok(())
    }

    /// Forgets everything (PIPELINE.RESET).
    pub fn clear_state(&mut self) {
        self.st = self.new_state();
        self.undo = Undo::default();
        self.late_out.clear();
        self.fatal = None;
    }

    /// Restores [`WindowOp::encode_state`]'s bytes: every length is checked
    /// against what is left; an unknown version or a shape that does not
    /// match this plan is an error, never a panic.
    pub fn decode_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            self.st = self.new_state();
            return Ok(());
        }
        let mut r = crate::engine::def::Cursor::new(state);
        let ver = r.u8()?;
        if !(STATE_V1..=STATE_V3).contains(&ver) {
            return Err(format!(
                "unknown window state version {ver} (this build reads versions {STATE_V1} to {STATE_V3})"
            ));
        }
        let stride = r.u32()? as usize;
        if stride != self.stride_of(ver) {
            return Err(format!(
                "window state rows are {stride} words, this plan's are {}",
                self.stride_of(ver)
            ));
        }
        let (clock, late_dropped, late_written) = get_globals(&mut r, ver)?;
        let mut st = State {
            clock,
            late_dropped,
            late_written,
            ..self.new_state()
        };
        let nkeys = r.u32()? as usize;
        for _ in 0..nkeys {
            let key = r.bytes()?;
            let (rows, ext) = self.get_rows_ext(&mut r, ver)?;
            let nrows = rows.len() / stride;
            if st.find(key).is_some() {
                return Err("a key appears twice in the window state".into());
            }
            st.bytes += ext_bytes(&ext);
            st.rows += nrows as u64;
            let id = st.keys.put(None, key, rows, ExtSlots::from_vec(ext));
            st.index_insert(id);
        }
        let nrevs = r.u32()? as usize;
        for _ in 0..nrevs {
            let p = r.u32()?;
            let s = r.u64()? as i64;
            let rev = r.u32()?;
            if p as usize >= st.keys.len() {
                return Err("a revision names an unknown key".into());
            }
            st.revs.insert((p, s), rev);
        }
        if !r.is_empty() {
            return Err("trailing bytes after the window state".into());
        }
        self.st = st;
        self.undo = Undo::default();
        self.rebuild_timers();
        self.rebuild_dirty();
        Ok(())
    }

    fn rebuild_timers(&mut self) {
        self.st.fire.clear();
        self.st.clean.clear();
        for k in 0..self.st.keys.len() as u32 {
            self.timers_of(k);
        }
    }

    /// Sets the timers of key `k`'s rows.
    fn timers_of(&mut self, k: u32) {
        let wm = self.wm();
        let l = self.lateness();
        let s = self.stride();
        let Some(ks) = self.st.keys.get(k) else {
            return;
        };
        for row in ks.rows.chunks_exact(s) {
            let start = self.start_of(row);
            let end = if self.hdr() == HDR { row[1] as i64 } else { 0 };
            match self.kind {
                WindowKind::Hop { size, slide, .. } => {
                    let s_first = (start - size).div_euclid(slide) * slide + slide;
                    let s_last = start.div_euclid(slide) * slide;
                    let s_unfired = if wm == i64::MIN {
                        s_first
                    } else {
                        s_first.max((wm - size).div_euclid(slide) * slide + slide)
                    };
                    if s_unfired <= s_last {
                        self.st.fire.insert(s_unfired + size, k);
                    }
                    self.st.clean.insert(s_last + size + l, k);
                }
                WindowKind::Session { .. } => {
                    if end > wm {
                        self.st.fire.insert(end, k);
                    }
                    self.st.clean.insert(end + l, k);
                }
                WindowKind::Running | WindowKind::Count { .. } => {}
            }
        }
    }
}

fn put_opt(v: &mut Vec<u8>, x: Option<i64>) {
    v.push(x.is_some() as u8);
    v.extend_from_slice(&x.unwrap_or(0).to_le_bytes());
}

fn get_opt(
    r: &mut crate::engine::def::Cursor<'_>,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Result<Option<i64>, String> {
    let has = r.u8()?;
    let t = r.u64()? as i64;
    match has {
        0 => Ok(None),
        1 if range.contains(&t) => Ok(Some(t)),
        1 => Err(format!("{what} {t} out of range")),
        b => Err(format!("bad flag {b}")),
    }
}

/// Version 1: `max_ts` (u8 flag, i64), `u64 late_dropped`, `u64
/// late_written`. Version 2 adds, each as a u8 flag and an i64, the IDLE
/// watermark, the last arrival's and the last flush's wall-clock times.
fn put_globals(v: &mut Vec<u8>, c: &Clock, dropped: u64, written: u64) {
    put_opt(v, c.max_ts);
    v.extend_from_slice(&dropped.to_le_bytes());
    v.extend_from_slice(&written.to_le_bytes());
    put_opt(v, c.idle_wm);
    put_opt(v, c.last_arrival);
    put_opt(v, c.last_flush);
}

type Globals = (Clock, u64, u64);

fn get_globals(r: &mut crate::engine::def::Cursor<'_>, ver: u8) -> Result<Globals, String> {
    let max_ts = get_opt(r, 0..=MAX_EVENT_TIME, "event time")?;
    let (dropped, written) = (r.u64()?, r.u64()?);
    let mut c = Clock {
        max_ts,
        ..Clock::default()
    };
    if ver >= STATE_V2 {
        c.idle_wm = get_opt(r, -MAX_EVENT_TIME..=MAX_WATERMARK, "IDLE watermark")?;
        c.last_arrival = get_opt(r, i64::MIN..=i64::MAX, "arrival time")?;
        c.last_flush = get_opt(r, i64::MIN..=i64::MAX, "flush time")?;
    }
    Ok((c, dropped, written))
}

/// `u32 rows`, the words, then (version 2, with aggregates that keep an
/// [`Ext`]) the key's ext slots ([`agg::Ext::encode`]).
fn put_rows(v: &mut Vec<u8>, rows: &[u64], ext: &[Ext], kind: WindowKind, stride: usize) {
    v.extend_from_slice(&((rows.len() / stride) as u32).to_le_bytes());
    for row in rows.chunks_exact(stride) {
        put_row(v, row, kind);
    }
    for e in ext {
        e.encode(v);
    }
}

/// One row's words ([`SAVED`] is not part of the state).
fn put_row(v: &mut Vec<u8>, row: &[u64], kind: WindowKind) {
    for (i, w) in row.iter().enumerate() {
        let w = if i == 0 && matches!(kind, WindowKind::Hop { .. }) {
            w & !SAVED
        } else {
            *w
        };
        v.extend_from_slice(&w.to_le_bytes());
    }
}

/// The row of `ks` starting at `start` (`Err`: where it would go).
fn find_row(kind: WindowKind, rows: &[u64], s: usize, start: i64) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, rows.len() / s);
    // Rows are sorted by start and events mostly change the newest.
    if hi > 0 {
        let last = start_of(kind, &rows[(hi - 1) * s..]);
        if last == start {
            return Ok(hi - 1);
        }
        if last < start {
            return Err(hi);
        }
        hi -= 1;
        // Rows dropped by the watermark are the oldest.
        if start < start_of(kind, rows) {
            return Err(0);
        }
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        let v = start_of(kind, &rows[mid * s..]);
        if v == start {
            return Ok(mid);
        }
        if v < start {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Err(lo)
}

/// Sets the row of `ks` starting at `start` to `row` (its words and Ext
/// slots), inserting it in order, or removes it (`None`).
fn set_row(
    kind: WindowKind,
    s: usize,
    nv: usize,
    ks: &mut KeyState,
    start: i64,
    row: Option<(&[u64], &[Ext])>,
) {
    match (find_row(kind, &ks.rows, s, start), row) {
        (Ok(i), Some((w, e))) => {
            ks.rows[i * s..(i + 1) * s].copy_from_slice(w);
            ks.ext[nv + i * nv..nv + (i + 1) * nv].clone_from_slice(e);
        }
        (Ok(i), None) => {
            ks.rows.drain(i * s..(i + 1) * s);
            ks.ext.drain(nv + i * nv..nv + (i + 1) * nv);
        }
        (Err(i), Some((w, e))) => {
            ks.rows.splice(i * s..i * s, w.iter().copied());
            let at = nv + i * nv;
            ks.ext.splice(at..at, e.iter().cloned());
        }
        (Err(_), None) => {}
    }
}

/// Takes the current epoch's row changes back in `held` (TUMBLE/HOP keys'
/// states by id, as they are now), newest first, and clears [`SAVED`].
fn undo_rows(u: &Undo, kind: WindowKind, s: usize, nv: usize, held: &mut HashMap<u32, KeyState>) {
    for ru in u.rows.iter().rev() {
        let Some(ks) = held.get_mut(&ru.k) else {
            continue;
        };
        let pre = (ru.pre != NEW_ROW).then(|| {
            let p = ru.pre as usize;
            (&u.words[p * s..(p + 1) * s], &u.exts[p * nv..(p + 1) * nv])
        });
        set_row(kind, s, nv, ks, ru.start, pre);
    }
    for ks in held.values_mut() {
        for row in ks.rows.chunks_exact_mut(s) {
            row[0] &= !SAVED;
        }
    }
}

impl WindowOp {
    /// The kinds of the aggregates that keep an [`Ext`], in slot order.
    fn ext_kinds(&self) -> Vec<agg::AggKind> {
        self.aggs
            .iter()
            .filter(|a| a.kind.has_ext())
            .map(|a| a.kind)
            .collect()
    }

    /// Reads a version 4 row-level change ([`WindowOp::epoch_delta`],
    /// change 2): every row's start, order and shape checked.
    fn get_row_changes(&self, r: &mut crate::engine::def::Cursor<'_>) -> Result<KeyChange, String> {
        let (kind, s, nv) = (self.kind, self.stride(), self.nvar);
        let kinds = self.ext_kinds();
        let mut carried = Vec::with_capacity(nv);
        for kd in &kinds {
            carried.push(Ext::decode(r, Some(*kd))?);
        }
        let n = r.u32()? as usize;
        let mut rows = Vec::with_capacity(n.min(r.remaining() / 9));
        let mut prev = None;
        for _ in 0..n {
            let start = r.u64()? as i64;
            if !(-MAX_EVENT_TIME..=2 * MAX_EVENT_TIME).contains(&start)
                || prev.is_some_and(|p| p >= start)
            {
                return Err("window state change rows out of order or out of range".into());
            }
            prev = Some(start);
            let row = match r.u8()? {
                0 => None,
                1 => {
                    s.checked_mul(8)
                        .filter(|b| *b <= r.remaining())
                        .ok_or_else(|| "truncated window state change".to_string())?;
                    let mut words = Vec::with_capacity(s);
                    for _ in 0..s {
                        words.push(r.u64()?);
                    }
                    if words[0] & SAVED != 0 || start_of(kind, &words) != start {
                        return Err("a window state change row does not match its start".into());
                    }
                    let mut ext = Vec::with_capacity(nv);
                    for kd in &kinds {
                        ext.push(Ext::decode(r, Some(*kd))?);
                    }
                    Some((words, ext))
                }
                b => return Err(format!("bad flag {b}")),
            };
            rows.push((start, row));
        }
        Ok(KeyChange::Rows(carried, rows))
    }

    /// Reads [`put_rows`]'s bytes.
    fn get_rows_ext(
        &self,
        r: &mut crate::engine::def::Cursor<'_>,
        ver: u8,
    ) -> Result<(Vec<u64>, Vec<Ext>), String> {
        let rows = get_rows(r, self.kind, self.stride(), ver)?;
        let nv = self.nvar;
        let slots = nv * (1 + rows.len() / self.stride());
        let mut ext = Vec::with_capacity(slots.min(r.remaining()));
        if ver >= STATE_V2 {
            let kinds = self.ext_kinds();
            for i in 0..slots {
                ext.push(Ext::decode(r, Some(kinds[i % nv]))?);
            }
        } else {
            ext.resize(slots, Ext::None);
        }
        Ok((rows, ext))
    }
}

/// Words before the aggregates in a row of `kind`.
fn hdr_of(kind: WindowKind) -> usize {
    match kind {
        WindowKind::Hop { .. } | WindowKind::Running => 1,
        _ => HDR,
    }
}

/// A row's start (see [`HDR`]).
fn start_of(kind: WindowKind, row: &[u64]) -> i64 {
    match kind {
        WindowKind::Hop { .. } => (row[0] & !(DIRTY | SAVED)) as i64,
        WindowKind::Running => 0,
        _ => row[0] as i64,
    }
}

/// `u32 rows` then the words, sorted by start and with sane times. Rows
/// of the versions before 3 had three header words whatever the kind:
/// they are read as such and made into this build's rows.
fn get_rows(
    r: &mut crate::engine::def::Cursor<'_>,
    kind: WindowKind,
    stride: usize,
    ver: u8,
) -> Result<Vec<u64>, String> {
    let hdr = hdr_of(kind);
    let (stride_in, old) = if ver < STATE_V3 && hdr != HDR {
        (stride - hdr + HDR, true)
    } else {
        (stride, false)
    };
    let nrows = r.u32()? as usize;
    nrows
        .checked_mul(stride_in)
        .filter(|w| w.checked_mul(8).is_some_and(|b| b <= r.remaining()))
        .ok_or_else(|| "truncated window state".to_string())?;
    let mut rows = Vec::with_capacity(nrows * stride);
    for _ in 0..nrows {
        if old {
            let (h0, _, h2) = (r.u64()?, r.u64()?, r.u64()?);
            // The rev word's DIRTY bit moves to the one header word.
            rows.push(match kind {
                WindowKind::Running => h2 & DIRTY,
                _ => (h0 & !DIRTY) | (h2 & DIRTY),
            });
            for _ in HDR..stride_in {
                rows.push(r.u64()?);
            }
        } else {
            for _ in 0..stride {
                rows.push(r.u64()?);
            }
        }
    }
    let mut prev = i64::MIN;
    for row in rows.chunks_exact(stride) {
        let s = start_of(kind, row);
        let e = if hdr == HDR { row[1] as i64 } else { s };
        if !(-MAX_EVENT_TIME..=2 * MAX_EVENT_TIME).contains(&s)
            || !(-MAX_EVENT_TIME..=2 * MAX_EVENT_TIME).contains(&e)
            || s < prev
            || (kind != WindowKind::Running && hdr == 1 && row[0] & SAVED != 0)
        {
            return Err("window state rows out of order or out of range".into());
        }
        prev = s;
    }
    Ok(rows)
}
