//! [`Plan`]: a compiled pipeline, and [`PipelineBuilder`] for plans made of
//! Rust closures.

use crate::entry::{Entry, EntryId, Fields, FlatRecords, Record, SlotTable};
use crate::error::{EvalError, PlanError};
use crate::ops::{Batch, BatchStats, ClosureOp, Event, FnOp, Operator, Sink, Source};
use crate::value::Num;
use crate::window::{WindowOp, WindowOptions, WindowStats};
use bytes::Bytes;
use std::fmt::Write as _;

/// One output field of a plan's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputField {
    /// Field name; `*` for "every field of the source entry".
    pub name: String,
    /// Static type: `number`, `text`, `boolean`, `field` (the source
    /// bytes as they are), `null`, or `fields` for `*`.
    pub ty: &'static str,
}

/// The output schema: fields in SELECT order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// The fields.
    pub fields: Vec<OutputField>,
}

/// A compiled pipeline: a chain of operators from a source stream to a sink
/// stream. Compile once with [`Plan::compile`] (or build with
/// [`PipelineBuilder`]), then feed entries with [`Plan::process_batch`].
pub struct Plan {
    source: String,
    sink: String,
    schema: Schema,
    sql: Option<String>,
    ops: Vec<Box<dyn Operator>>,
    // Reused between batches.
    scratch_idx: Vec<u32>,
    scratch_num: Vec<Num>,
    scratch_sel: Vec<u32>,
    /// The index of the window operator in `ops`, if the plan is grouped.
    window: Option<usize>,
    late_stream: Option<String>,
    hash_sink: Option<crate::sql::HashSink>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Version byte of [`Plan::snapshot`]'s encoding.
const SNAPSHOT_V1: u8 = 1;

impl Plan {
    /// Compiles `INSERT INTO sink SELECT ... FROM source [WHERE ...]`.
    pub fn compile(sql: &str) -> Result<Plan, PlanError> {
        Plan::compile_inner(sql, None)
    }

    /// Compiles a statement with the time options of PIPELINE.CREATE
    /// (WATERMARK, LATENESS, LATE, STATE_LIMIT); they apply to grouped
    /// statements only (an error otherwise, unless they are the defaults).
    pub fn compile_with(sql: &str, opts: &WindowOptions) -> Result<Plan, PlanError> {
        Plan::compile_inner(sql, Some(opts))
    }

    fn compile_inner(sql: &str, opts: Option<&WindowOptions>) -> Result<Plan, PlanError> {
        let c = crate::sql::compile(sql, opts)?;
        let late_stream = c.window.as_ref().and_then(|w| w.opts.late_stream.clone());
        if let Some(l) = &late_stream {
            if *l == c.source || *l == c.sink {
                return Err(PlanError::Invalid(format!(
                    "the LATE stream {l} must differ from the source and the sink"
                )));
            }
        }
        let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Source {
            stream: c.source.clone(),
            slots: c.slots,
            last: None,
        })];
        if let Some(f) = c.filter {
            ops.push(Box::new(f));
        }
        let mut window = None;
        if let Some(w) = c.window {
            window = Some(ops.len());
            ops.push(Box::new(w));
        }
        if let Some(p) = c.project {
            ops.push(Box::new(p));
        }
        ops.push(Box::new(Sink {
            stream: c.sink.clone(),
        }));
        let mut plan = Plan::from_ops(c.source, c.sink, c.schema, Some(sql.to_string()), ops);
        plan.window = window;
        plan.late_stream = late_stream;
        plan.hash_sink = c.hash;
        Ok(plan)
    }

    fn from_ops(
        source: String,
        sink: String,
        schema: Schema,
        sql: Option<String>,
        ops: Vec<Box<dyn Operator>>,
    ) -> Plan {
        Plan {
            source,
            sink,
            schema,
            sql,
            ops,
            scratch_idx: Vec::new(),
            scratch_num: Vec::new(),
            scratch_sel: Vec::new(),
            window: None,
            late_stream: None,
            hash_sink: None,
        }
    }

    /// Whether the plan keeps state (windows, aggregates): its results
    /// depend on what it saw before, so its state must be saved with its
    /// epochs.
    pub fn is_stateful(&self) -> bool {
        self.window.is_some()
    }

    /// The LATE stream of a windowed plan.
    pub fn late_stream(&self) -> Option<&str> {
        self.late_stream.as_deref()
    }

    fn window_op(&self) -> Option<&WindowOp> {
        let i = self.window?;
        self.window_ops_ref(i)
    }

    fn window_ops_ref(&self, i: usize) -> Option<&WindowOp> {
        let op: &dyn Operator = self.ops.get(i)?.as_ref();
        op.as_window()
    }

    fn window_op_mut(&mut self) -> Option<&mut WindowOp> {
        let i = self.window?;
        self.ops.get_mut(i)?.as_window_mut()
    }

    /// Keys, open windows, state bytes and late counts of a grouped plan.
    pub fn window_stats(&self) -> Option<WindowStats> {
        self.window_op().map(|w| w.stats())
    }

    /// Takes the entries that the last batches found too late for their
    /// window, for the LATE stream (each with a `_reason` field).
    pub fn take_late(&mut self) -> Vec<Record> {
        self.window_op_mut()
            .map(|w| std::mem::take(&mut w.late_out))
            .unwrap_or_default()
    }

    /// Starts an epoch of a stateful plan: the state changes of the
    /// batches that follow can be taken back ([`Plan::rollback_epoch`]) and
    /// are described by [`Plan::epoch_delta`]. [`Plan::snapshot`] gives the
    /// state before the epoch until [`Plan::end_epoch`].
    pub fn begin_epoch(&mut self) {
        if let Some(w) = self.window_op_mut() {
            w.begin_epoch();
        }
    }

    /// The epoch committed: its state changes stay.
    pub fn end_epoch(&mut self) {
        if let Some(w) = self.window_op_mut() {
            w.end_epoch();
        }
    }

    /// The epoch did not commit: the state goes back to its start.
    pub fn rollback_epoch(&mut self) {
        if let Some(w) = self.window_op_mut() {
            w.rollback_epoch();
        }
    }

    /// The state changes of the current epoch, to log with its results
    /// (`None` for a stateless plan or outside an epoch).
    pub fn epoch_delta(&self) -> Option<Vec<u8>> {
        self.window_op().and_then(|w| w.epoch_delta())
    }

    /// Applies an epoch's [`Plan::epoch_delta`] (recovery).
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<(), PlanError> {
        match self.window_op_mut() {
            Some(w) => w.apply_delta(delta).map_err(PlanError::State),
            None => Err(PlanError::State(
                "a state change for a plan without state".into(),
            )),
        }
    }

    /// Sets the wall-clock time (ms since the epoch) for IDLE and EMIT
    /// UPDATES EVERY; the runner calls it before each
    /// [`Plan::process_batch`] and each [`Plan::tick`]. No-op for a
    /// stateless plan.
    pub fn set_clock(&mut self, now_ms: i64) {
        if let Some(w) = self.window_op_mut() {
            w.set_clock(now_ms);
        }
    }

    /// Emits what the clock made due without new entries (windows closed
    /// by IDLE, EMIT UPDATES flushes) into `out`. Call it inside an epoch
    /// (between [`Plan::begin_epoch`] and [`Plan::end_epoch`]): its state
    /// changes are part of [`Plan::epoch_delta`]. Its records' `source_id`
    /// is `0-0`. No-op for a stateless plan.
    pub fn tick(&mut self, out: &mut Vec<Record>) {
        if let Some(w) = self.window_op_mut() {
            w.tick(out);
            w.flat.drain_into(out);
        }
    }

    /// [`Plan::tick`], a grouped plan's direct results going to `flat`
    /// ([`Plan::process_batch_flat`]).
    pub fn tick_flat(&mut self, out: &mut Vec<Record>, flat: &mut FlatRecords) {
        if let Some(w) = self.window_op_mut() {
            w.tick(out);
            flat.append(&mut w.flat);
        }
    }

    /// The wall-clock time at which [`Plan::tick`] would next produce
    /// something, or `None` (nothing pending, or a stateless plan): the
    /// runner may sleep until then.
    pub fn next_tick_ms(&self) -> Option<i64> {
        self.window_op().and_then(|w| w.next_tick_ms())
    }

    /// Forgets the state (PIPELINE.RESET).
    pub fn clear_state(&mut self) {
        if let Some(w) = self.window_op_mut() {
            w.clear_state();
        }
    }

    /// Set when the plan cannot go on (its state exceeds STATE_LIMIT).
    pub fn fatal(&self) -> Option<&str> {
        self.window_op().and_then(|w| w.fatal.as_deref())
    }

    /// The source stream's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `INSERT INTO HASH prefix [TTL d]`: results go to hashes
    /// `prefix:<key>` ([`Plan::sink`] is the prefix), not to a stream.
    pub fn hash_sink(&self) -> Option<&crate::sql::HashSink> {
        self.hash_sink.as_ref()
    }

    /// The sink stream's name (the key prefix of a HASH sink).
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// The output schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The SQL the plan was compiled from (`None` for builder plans).
    pub fn sql(&self) -> Option<&str> {
        self.sql.as_deref()
    }

    /// The operators, source first.
    pub fn operators(&self) -> impl Iterator<Item = &dyn Operator> {
        self.ops.iter().map(|o| o.as_ref())
    }

    /// A human-readable plan for PIPELINE.EXPLAIN: one operator a line.
    pub fn explain(&self) -> String {
        let mut s = format!("Pipeline {} -> {}\n", self.source, self.sink);
        for op in &self.ops {
            let _ = writeln!(s, "  {}", op.describe());
        }
        let cols: Vec<String> = self
            .schema
            .fields
            .iter()
            .map(|f| format!("{} {}", f.name, f.ty))
            .collect();
        let _ = write!(s, "  Output ({})", cols.join(", "));
        s
    }

    /// Runs a batch of entries through the chain, appending the sink's
    /// records to `out` in input order. Never fails as a whole: an event
    /// whose expression fails is counted in `failed` and skipped.
    pub fn process_batch(&mut self, entries: &[Entry<'_>], out: &mut Vec<Record>) -> BatchStats {
        let stats = self.run_batch(entries, out);
        if let Some(w) = self.window_op_mut() {
            w.flat.drain_into(out);
        }
        stats
    }

    /// [`Plan::process_batch`], except that a grouped plan's direct results
    /// (every SELECT column a key, an aggregate or a window bound, no
    /// HAVING) go to `flat`, after those already there, instead of a
    /// [`Record`] each; other records still go to `out`. The same results.
    pub fn process_batch_flat(
        &mut self,
        entries: &[Entry<'_>],
        out: &mut Vec<Record>,
        flat: &mut FlatRecords,
    ) -> BatchStats {
        let stats = self.run_batch(entries, out);
        if let Some(w) = self.window_op_mut() {
            flat.append(&mut w.flat);
        }
        stats
    }

    fn run_batch(&mut self, entries: &[Entry<'_>], out: &mut Vec<Record>) -> BatchStats {
        let flat_before = self.window_op().map_or(0, |w| w.flat.len());
        let mut b = Batch {
            entries,
            width: 0,
            slot_idx: std::mem::take(&mut self.scratch_idx),
            slot_num: std::mem::take(&mut self.scratch_num),
            sel: std::mem::take(&mut self.scratch_sel),
            records: std::mem::take(out),
            mapped: false,
            stats: BatchStats::default(),
        };
        // Records already in `out` stay first.
        let keep = std::mem::take(&mut b.records);
        for op in &mut self.ops {
            op.process(&mut b);
        }
        let mut records = keep;
        records.append(&mut b.records);
        *out = records;
        self.scratch_idx = b.slot_idx;
        self.scratch_num = b.slot_num;
        self.scratch_sel = b.sel;
        // The sink counted the records; the flat results are output too.
        let flat_after = self.window_op().map_or(0, |w| w.flat.len());
        b.stats.output += flat_after.saturating_sub(flat_before) as u64;
        b.stats
    }

    /// Runs one entry; each output record goes to `out`.
    pub fn process<F: Fields>(
        &mut self,
        id: EntryId,
        fields: &F,
        out: &mut impl FnMut(Record),
    ) -> BatchStats {
        let mut recs = Vec::new();
        let stats = self.process_batch(&[Entry::new(id, fields)], &mut recs);
        recs.into_iter().for_each(out);
        stats
    }

    /// Every operator's state, framed: a version byte, then per operator a
    /// little-endian u32 length and the bytes. Stateless operators write
    /// empty frames.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = vec![SNAPSHOT_V1];
        v.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            let s = op.snapshot();
            v.extend_from_slice(&(s.len() as u32).to_le_bytes());
            v.extend_from_slice(&s);
        }
        v
    }

    /// Restores what [`Plan::snapshot`] wrote, for the same plan.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), PlanError> {
        let bad = |m: &str| PlanError::State(m.to_string());
        let (&ver, mut rest) = state.split_first().ok_or_else(|| bad("empty snapshot"))?;
        if ver != SNAPSHOT_V1 {
            return Err(bad(&format!("unknown snapshot version {ver}")));
        }
        let u32_at = |rest: &mut &[u8]| -> Result<usize, PlanError> {
            let (h, t) = rest
                .split_at_checked(4)
                .ok_or_else(|| bad("truncated snapshot"))?;
            *rest = t;
            let mut b = [0u8; 4];
            b.copy_from_slice(h);
            Ok(u32::from_le_bytes(b) as usize)
        };
        let n = u32_at(&mut rest)?;
        if n != self.ops.len() {
            return Err(bad(&format!(
                "snapshot has {n} operators, plan has {}",
                self.ops.len()
            )));
        }
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            let len = u32_at(&mut rest)?;
            let (f, t) = rest
                .split_at_checked(len)
                .ok_or_else(|| bad("truncated snapshot"))?;
            frames.push(f);
            rest = t;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes after snapshot"));
        }
        for (op, f) in self.ops.iter_mut().zip(frames) {
            op.restore(f)?;
        }
        Ok(())
    }
}

/// Builds a [`Plan`] from Rust closures:
///
/// ```
/// use ferrite_pipeline::{PipelineBuilder, Event};
/// use bytes::Bytes;
/// let plan = PipelineBuilder::new()
///     .source("clicks")
///     .filter(|e: &Event<'_>| e.get(b"user").is_some())
///     .map(|e: &Event<'_>| Ok(vec![(Bytes::from_static(b"user"), Bytes::copy_from_slice(e.get(b"user").unwrap_or_default()))]))
///     .sink("users")
///     .build()
///     .unwrap();
/// assert_eq!(plan.source(), "clicks");
/// ```
#[derive(Default)]
pub struct PipelineBuilder {
    source: Option<String>,
    sink: Option<String>,
    ops: Vec<ClosureOp>,
}

impl PipelineBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The source stream.
    pub fn source(mut self, stream: impl Into<String>) -> Self {
        self.source = Some(stream.into());
        self
    }

    /// The sink stream.
    pub fn sink(mut self, stream: impl Into<String>) -> Self {
        self.sink = Some(stream.into());
        self
    }

    /// Keeps events for which `f` is true.
    pub fn filter(mut self, f: impl Fn(&Event<'_>) -> bool + Send + Sync + 'static) -> Self {
        let n = self.ops.len();
        self.ops.push(ClosureOp {
            label: format!("<closure #{n}>"),
            f: FnOp::Filter(Box::new(f)),
        });
        self
    }

    /// Turns each event into one record; an `Err` counts the event failed.
    pub fn map(
        mut self,
        f: impl Fn(&Event<'_>) -> Result<Vec<(Bytes, Bytes)>, EvalError> + Send + Sync + 'static,
    ) -> Self {
        let n = self.ops.len();
        self.ops.push(ClosureOp {
            label: format!("<closure #{n}>"),
            f: FnOp::Map(Box::new(f)),
        });
        self
    }

    /// Turns each event into 0..N records.
    pub fn flat_map(
        mut self,
        f: impl Fn(&Event<'_>) -> Result<Vec<Vec<(Bytes, Bytes)>>, EvalError> + Send + Sync + 'static,
    ) -> Self {
        let n = self.ops.len();
        self.ops.push(ClosureOp {
            label: format!("<closure #{n}>"),
            f: FnOp::FlatMap(Box::new(f)),
        });
        self
    }

    /// The plan: `Source → your operators in order → Sink`.
    pub fn build(self) -> Result<Plan, PlanError> {
        let source = self
            .source
            .ok_or_else(|| PlanError::Invalid("the builder needs .source(stream)".into()))?;
        let sink = self
            .sink
            .ok_or_else(|| PlanError::Invalid("the builder needs .sink(stream)".into()))?;
        if source == sink {
            return Err(PlanError::SinkIsSource(source));
        }
        let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Source {
            stream: source.clone(),
            slots: SlotTable::default(),
            last: None,
        })];
        for op in self.ops {
            ops.push(Box::new(op));
        }
        ops.push(Box::new(Sink {
            stream: sink.clone(),
        }));
        let schema = Schema {
            fields: vec![OutputField {
                name: "*".into(),
                ty: "fields",
            }],
        };
        Ok(Plan::from_ops(source, sink, schema, None, ops))
    }
}
