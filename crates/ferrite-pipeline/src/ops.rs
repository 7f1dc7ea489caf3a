//! Operators and the batch they pass along.
//!
//! A plan is a chain `Source → Filter* → Map|FlatMap → ... → Sink`. Each
//! operator processes a whole [`Batch`] at a time. Until the first map the
//! batch is the caller's borrowed entries plus a selection vector of the
//! live ones (filters only shrink it; nothing is copied); a map turns the
//! live entries into owned [`Record`]s, which later operators consume.
//!
//! Operator state is bytes: [`Operator::snapshot`] and
//! [`Operator::restore`]. Every operator here is stateless (empty state);
//! the window operator (`crate::window`) checkpoints its state through the
//! same calls.

use crate::entry::{Entry, EntryId, Record, Row, SlotTable};
use crate::error::{EvalError, PlanError};
use crate::expr::{ArrayEval, BoolSrc, Eval};
use crate::value::Num;
use bytes::{Bytes, BytesMut};

/// Counts of one batch (or, summed, of a pipeline's life).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Entries read from the source.
    pub input: u64,
    /// Records written to the sink.
    pub output: u64,
    /// Events dropped by a filter.
    pub filtered: u64,
    /// Events dropped because an expression failed on them.
    pub failed: u64,
    /// The first failure of the batch, for diagnostics.
    pub first_error: Option<(EntryId, EvalError)>,
}

impl BatchStats {
    /// Adds another batch's counts (keeps the first error seen).
    pub fn add(&mut self, o: &BatchStats) {
        self.input += o.input;
        self.output += o.output;
        self.filtered += o.filtered;
        self.failed += o.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// A borrowed view of one event for the closures of a
/// [`crate::PipelineBuilder`] plan: a source entry, or a record produced by
/// an earlier map.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A source entry.
    Entry(Entry<'a>),
    /// A record made by an earlier map.
    Record(&'a Record),
}

impl<'a> Event<'a> {
    /// The source entry's ID.
    pub fn id(&self) -> EntryId {
        match self {
            Event::Entry(e) => e.id,
            Event::Record(r) => r.source_id,
        }
    }

    /// The first value of field `name`.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        match self {
            Event::Entry(e) => e.get(name),
            Event::Record(r) => r.get(name),
        }
    }

    /// The value of field `name` parsed as a number (NULL → `None`).
    pub fn num(&self, name: &[u8]) -> Option<Num> {
        match self.get(name).map(crate::value::parse_num) {
            Some(Num::Null) | None => None,
            n => n,
        }
    }

    /// All field/value pairs, in order.
    pub fn fields(&self) -> Vec<(&'a [u8], &'a [u8])> {
        match self {
            Event::Entry(e) => (0..e.fields.len())
                .map(|i| (e.fields.name(i), e.fields.value(i)))
                .collect(),
            Event::Record(r) => r
                .fields
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
                .collect(),
        }
    }
}

/// The unit of work of [`Operator::process`].
pub struct Batch<'a> {
    pub(crate) entries: &'a [Entry<'a>],
    /// Slots per entry, and the slot matrix (`entries.len() × width`).
    pub(crate) width: usize,
    pub(crate) slot_idx: Vec<u32>,
    pub(crate) slot_num: Vec<Num>,
    /// Indices of the live entries, while no map has run.
    pub(crate) sel: Vec<u32>,
    /// Records, once a map has run.
    pub(crate) records: Vec<Record>,
    pub(crate) mapped: bool,
    pub(crate) stats: BatchStats,
}

impl<'a> Batch<'a> {
    /// The row of entry `i` (slots resolved by the source).
    #[inline]
    pub(crate) fn row(&self, i: usize) -> Row<'_> {
        let e = &self.entries[i];
        let w = self.width;
        Row {
            id: e.id,
            fields: e.fields,
            slot_idx: &self.slot_idx[i * w..(i + 1) * w],
            slot_num: &self.slot_num[i * w..(i + 1) * w],
        }
    }

    pub(crate) fn fail(&mut self, id: EntryId, e: EvalError) {
        self.stats.failed += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some((id, e));
        }
    }

    /// Records of the batch (after a map).
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// One stage of a plan.
pub trait Operator: Send {
    /// Short kind name: `Source`, `Filter`, `Project`, `FlatMap`, `Sink`, ...
    fn kind(&self) -> &'static str;
    /// One line for EXPLAIN.
    fn describe(&self) -> String;
    /// Processes a batch in place.
    fn process(&mut self, batch: &mut Batch<'_>);
    /// The operator's state as bytes (empty when stateless).
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    /// The window operator, when this is one.
    fn as_window(&self) -> Option<&crate::window::WindowOp> {
        None
    }
    /// The window operator, when this is one.
    fn as_window_mut(&mut self) -> Option<&mut crate::window::WindowOp> {
        None
    }
    /// Restores state written by [`Operator::snapshot`].
    fn restore(&mut self, state: &[u8]) -> Result<(), PlanError> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(PlanError::State(format!(
                "{} is stateless but got {} bytes of state",
                self.kind(),
                state.len()
            )))
        }
    }
}

// ---- Source ------------------------------------------------------------

/// Reads the source stream: resolves each entry's referenced fields to slots
/// (and parses the numeric ones) once.
pub struct Source {
    pub(crate) stream: String,
    pub(crate) slots: SlotTable,
    /// The field layout resolved last and its field positions.
    pub(crate) last: Option<(u64, Vec<u32>)>,
}

impl Operator for Source {
    fn kind(&self) -> &'static str {
        "Source"
    }
    fn describe(&self) -> String {
        let names = |numeric: bool| {
            self.slots
                .names
                .iter()
                .zip(&self.slots.numeric)
                .filter(|(_, &n)| !numeric || n)
                .map(|(s, _)| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "Source {} (fields: [{}], parsed as numbers: [{}])",
            self.stream,
            names(false),
            names(true)
        )
    }
    fn process(&mut self, b: &mut Batch<'_>) {
        let n = b.entries.len();
        let w = self.slots.len();
        b.width = w;
        b.stats.input += n as u64;
        b.slot_idx.clear();
        b.slot_idx.resize(n * w, crate::entry::MISSING);
        b.slot_num.clear();
        b.slot_num.resize(n * w, Num::Null);
        if w > 0 {
            for (i, e) in b.entries.iter().enumerate() {
                self.slots.resolve_cached(
                    e.fields,
                    &mut b.slot_idx[i * w..(i + 1) * w],
                    &mut b.slot_num[i * w..(i + 1) * w],
                    &mut self.last,
                );
            }
        }
        b.sel.clear();
        b.sel.extend(0..n as u32);
        b.records.clear();
        b.mapped = false;
    }
}

// ---- Filter ------------------------------------------------------------

/// Keeps the events whose condition is true (not false, not NULL).
pub struct Filter {
    pub(crate) text: String,
    pub(crate) pred: BoolSrc,
}

impl Operator for Filter {
    fn kind(&self) -> &'static str {
        "Filter"
    }
    fn describe(&self) -> String {
        format!("Filter {}", self.text)
    }
    fn process(&mut self, b: &mut Batch<'_>) {
        debug_assert!(!b.mapped, "a SQL filter runs before the map");
        let mut sel = std::mem::take(&mut b.sel);
        let mut failed = Vec::new();
        let before = sel.len();
        sel.retain(|&i| {
            let row = b.row(i as usize);
            match self.pred.get(&row) {
                Ok(Some(true)) => true,
                Ok(_) => false,
                Err(e) => {
                    failed.push((row.id, e));
                    false
                }
            }
        });
        b.stats.filtered += (before - sel.len() - failed.len()) as u64;
        for (id, e) in failed {
            b.fail(id, e);
        }
        b.sel = sel;
    }
}

// ---- Project / FlatMap -------------------------------------------------

/// One output column of a projection.
pub(crate) enum OutCol {
    /// `*`: every field of the entry, in order.
    Star,
    /// A bare field: its bytes are copied as they are.
    Field { name: Bytes, slot: usize },
    /// A computed value; NULL leaves the field out.
    Expr { name: Bytes, eval: Eval },
    /// The `unnest(...)` column of a flat map.
    Unnest { name: Bytes },
}

/// Builds a record (or, with an unnest column, 0..N records) per event.
pub struct Project {
    pub(crate) text: String,
    pub(crate) cols: Vec<OutCol>,
    pub(crate) unnest: Option<ArrayEval>,
    /// Where output values are written (see [`Project::one`]).
    pub(crate) arena: BytesMut,
    /// Fields per record last seen (`SELECT *` makes it vary): the next
    /// record's field list is allocated once at this size.
    pub(crate) width: usize,
}

impl Project {
    /// One output record's fields. Values are written into `arena` and
    /// split off it: one allocation per many values instead of one each.
    pub(crate) fn one(
        &self,
        row: &Row<'_>,
        elem: Option<&[u8]>,
        arena: &mut BytesMut,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Result<(), EvalError> {
        fn put(arena: &mut BytesMut, v: &[u8]) -> Bytes {
            reserve(arena, v.len());
            arena.extend_from_slice(v);
            arena.split().freeze()
        }
        for c in &self.cols {
            match c {
                OutCol::Star => {
                    for i in 0..row.fields.len() {
                        let n = put(arena, row.fields.name(i));
                        let v = put(arena, row.fields.value(i));
                        out.push((n, v));
                    }
                }
                OutCol::Field { name, slot } => {
                    if let Some(v) = row.text(*slot) {
                        out.push((name.clone(), put(arena, v)));
                    }
                }
                OutCol::Expr { name, eval } => {
                    let v = eval(row)?;
                    reserve(arena, 32);
                    if !crate::value::write_value(&v, arena) {
                        continue;
                    }
                    out.push((name.clone(), arena.split().freeze()));
                }
                OutCol::Unnest { name } => {
                    if let Some(e) = elem {
                        out.push((name.clone(), put(arena, e)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Makes room for `n` more bytes, starting a new chunk of at least
/// [`ARENA_CHUNK`] when the current one is full (the values split off the
/// old chunk keep it alive until they are dropped).
#[inline]
fn reserve(arena: &mut BytesMut, n: usize) {
    if arena.capacity() - arena.len() < n {
        *arena = BytesMut::with_capacity(n.max(ARENA_CHUNK));
    }
}

const ARENA_CHUNK: usize = 64 << 10;

impl Operator for Project {
    fn kind(&self) -> &'static str {
        if self.unnest.is_some() {
            "FlatMap"
        } else {
            "Project"
        }
    }
    fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.text)
    }
    fn process(&mut self, b: &mut Batch<'_>) {
        let sel = std::mem::take(&mut b.sel);
        let mut records = std::mem::take(&mut b.records);
        let mut failed = Vec::new();
        let mut arena = std::mem::take(&mut self.arena);
        let mut width = self.width;
        for &i in &sel {
            let row = b.row(i as usize);
            let res = (|| -> Result<(), EvalError> {
                match &self.unnest {
                    None => {
                        let mut fields = Vec::with_capacity(width);
                        self.one(&row, None, &mut arena, &mut fields)?;
                        width = fields.len().max(1);
                        records.push(Record {
                            source_id: row.id,
                            fields,
                            key: None,
                        });
                    }
                    Some(arr) => {
                        // All of an event's records, or none if one fails.
                        let mut made = Vec::new();
                        for elem in arr(&row)?.unwrap_or_default() {
                            let mut fields = Vec::with_capacity(width);
                            self.one(&row, elem.as_deref(), &mut arena, &mut fields)?;
                            width = fields.len().max(1);
                            made.push(Record {
                                source_id: row.id,
                                fields,
                                key: None,
                            });
                        }
                        records.extend(made);
                    }
                }
                Ok(())
            })();
            if let Err(e) = res {
                failed.push((row.id, e));
            }
        }
        self.arena = arena;
        self.width = width;
        for (id, e) in failed {
            b.fail(id, e);
        }
        b.sel = sel;
        b.sel.clear();
        b.records = records;
        b.mapped = true;
    }
}

// ---- Rust closures (PipelineBuilder) ------------------------------------

/// A filter closure.
pub type FilterFn = Box<dyn Fn(&Event<'_>) -> bool + Send + Sync>;
/// A map closure: one event to one record's fields, or an error (the
/// event counts as failed).
pub type MapFn = Box<dyn Fn(&Event<'_>) -> Result<Vec<(Bytes, Bytes)>, EvalError> + Send + Sync>;
/// A flat-map closure: one event to 0..N records' fields.
pub type FlatMapFn =
    Box<dyn Fn(&Event<'_>) -> Result<Vec<Vec<(Bytes, Bytes)>>, EvalError> + Send + Sync>;

pub(crate) enum FnOp {
    Filter(FilterFn),
    Map(MapFn),
    FlatMap(FlatMapFn),
}

/// An operator made of a Rust closure.
pub struct ClosureOp {
    pub(crate) label: String,
    pub(crate) f: FnOp,
}

impl Operator for ClosureOp {
    fn kind(&self) -> &'static str {
        match self.f {
            FnOp::Filter(_) => "Filter",
            FnOp::Map(_) => "Map",
            FnOp::FlatMap(_) => "FlatMap",
        }
    }
    fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.label)
    }
    fn process(&mut self, b: &mut Batch<'_>) {
        // Gather the live events as views, then apply.
        let events: Vec<(EntryId, usize)> = if b.mapped {
            b.records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.source_id, i))
                .collect()
        } else {
            b.sel
                .iter()
                .map(|&i| (b.entries[i as usize].id, i as usize))
                .collect()
        };
        fn view<'b>(b: &'b Batch<'_>, i: usize) -> Event<'b> {
            if b.mapped {
                Event::Record(&b.records[i])
            } else {
                Event::Entry(b.entries[i])
            }
        }
        match &self.f {
            FnOp::Filter(f) => {
                let keep: Vec<bool> = events.iter().map(|&(_, i)| f(&view(b, i))).collect();
                let dropped = keep.iter().filter(|k| !**k).count();
                b.stats.filtered += dropped as u64;
                let mut k = keep.iter();
                if b.mapped {
                    b.records.retain(|_| k.next().copied().unwrap_or(false));
                } else {
                    b.sel.retain(|_| k.next().copied().unwrap_or(false));
                }
            }
            FnOp::Map(_) | FnOp::FlatMap(_) => {
                let mut out = Vec::with_capacity(events.len());
                let mut failed = Vec::new();
                for &(id, i) in &events {
                    let ev = view(b, i);
                    let res = match &self.f {
                        FnOp::Map(m) => m(&ev).map(|f| vec![f]),
                        FnOp::FlatMap(m) => m(&ev),
                        FnOp::Filter(_) => Ok(Vec::new()),
                    };
                    match res {
                        Ok(recs) => out.extend(recs.into_iter().map(|fields| Record {
                            source_id: id,
                            fields,
                            key: None,
                        })),
                        Err(e) => failed.push((id, e)),
                    }
                }
                for (id, e) in failed {
                    b.fail(id, e);
                }
                b.records = out;
                b.sel.clear();
                b.mapped = true;
            }
        }
    }
}

// ---- Sink --------------------------------------------------------------

/// Hands the records to the sink stream (the caller XADDs them).
pub struct Sink {
    pub(crate) stream: String,
}

impl Operator for Sink {
    fn kind(&self) -> &'static str {
        "Sink"
    }
    fn describe(&self) -> String {
        format!("Sink {}", self.stream)
    }
    fn process(&mut self, b: &mut Batch<'_>) {
        if !b.mapped {
            // No map: the entries pass through unchanged.
            let sel = std::mem::take(&mut b.sel);
            for &i in &sel {
                let e = &b.entries[i as usize];
                let fields = (0..e.fields.len())
                    .map(|j| {
                        (
                            Bytes::copy_from_slice(e.fields.name(j)),
                            Bytes::copy_from_slice(e.fields.value(j)),
                        )
                    })
                    .collect();
                b.records.push(Record {
                    source_id: e.id,
                    fields,
                    key: None,
                });
            }
            b.sel = sel;
            b.sel.clear();
            b.mapped = true;
        }
        b.stats.output += b.records.len() as u64;
    }
}
