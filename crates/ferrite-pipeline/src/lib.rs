//! Ferrite's embedded pipeline engine: continuous `INSERT INTO sink SELECT
//! ... FROM source WHERE ...` over stream entries, compiled once into a
//! synchronous chain of operators.
//!
//! This crate knows nothing of RESP, tokio or storage. The database
//! (ferrite-db) feeds it batches of source entries and XADDs the records it
//! returns to the sink, committing them with the source cursor in one
//! commit-log record.
//!
//! Where to start reading:
//! - [`plan`]: the [`Plan`] (`compile`, `process_batch`, `explain`, `snapshot`)
//!   and [`PipelineBuilder`], the same plan from Rust closures.
//! - [`sql`]: the statement shape and what is refused.
//! - [`expr`]: the expression compiler (types, coercions, closures);
//!   [`funcs`](crate::funcs) has the per-event kernels.
//! - [`ops`]: the [`Operator`] trait, the [`Batch`] and the operators
//!   (Source, Filter, Project/FlatMap, Sink, closures).
//! - [`value`] and [`entry`]: values, parsing and the output format; entries,
//!   records and the slot-resolved [`Row`].
//!
//! Invariants:
//! - Nothing in a statement or an entry can panic the engine: bad SQL is a
//!   [`PlanError`] at compile time, a bad event is an [`EvalError`] that
//!   counts it as failed ([`BatchStats::failed`]) and skips it.
//! - Events never see the SQL AST: field names are resolved to slots at
//!   compile time, each entry's referenced fields are located (and, where
//!   used as numbers, parsed) once per entry, then closures run.
//! - Statements are bounded: [`sql::MAX_SQL_LEN`] bytes, [`expr::MAX_DEPTH`]
//!   nesting, [`expr::MAX_NODES`] nodes.
//! - Output fields come in SELECT order; a NULL leaves its field out.
//!
//! The language is described in `docs/pipelines.md`.
//!
//! ```
//! use ferrite_pipeline::{Plan, EntryId};
//! let mut plan = Plan::compile(
//!     "INSERT INTO big SELECT symbol, price * volume AS notional FROM trades WHERE volume > 10",
//! ).unwrap();
//! let fields: &[(&[u8], &[u8])] = &[(b"symbol", b"BTC"), (b"price", b"2.5"), (b"volume", b"20")];
//! let mut out = Vec::new();
//! let stats = plan.process(EntryId::new(1, 0), &fields, &mut |r| out.push(r));
//! assert_eq!(stats.output, 1);
//! assert_eq!(out[0].get(b"notional"), Some(&b"50"[..]));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod entry;
pub mod error;
pub mod expr;
mod funcs;
pub mod ops;
pub mod plan;
pub mod sql;
pub mod value;
pub mod window;

pub use entry::{Entry, EntryId, Fields, FlatRecord, FlatRecords, Record, Row};
pub use error::{EvalError, PlanError};
pub use ops::{Batch, BatchStats, Event, Operator};
pub use plan::{OutputField, PipelineBuilder, Plan, Schema};
pub use value::{Num, Value};
pub use window::{Emit, WindowOptions, WindowStats};
