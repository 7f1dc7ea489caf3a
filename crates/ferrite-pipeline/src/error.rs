//! Errors: [`PlanError`] at compile (CREATE) time, [`EvalError`] per event.

use std::fmt;

/// Why a pipeline could not be compiled (or its state restored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The SQL does not parse.
    Syntax(String),
    /// Valid SQL that pipelines do not support (yet).
    Unsupported(String),
    /// Window functions (OVER), QUALIFY, named windows, or an aggregate
    /// where none can be (WHERE, GROUP BY, inside another aggregate).
    WindowsAndAggregates,
    /// A function name that is not in the function table.
    UnknownFunction(String),
    /// A known function called with the wrong number of arguments.
    WrongArity {
        /// The function.
        function: String,
        /// What it takes, e.g. "1 or 2".
        expected: &'static str,
        /// What it was given.
        got: usize,
    },
    /// Operand or argument types that do not fit (e.g. `lower(1)`), or a
    /// literal that does not parse as the type its context needs.
    Type(String),
    /// An output expression without a name.
    NeedsAlias(String),
    /// The statement exceeds a size or depth bound.
    TooLarge(String),
    /// The sink stream is the source stream.
    SinkIsSource(String),
    /// Anything else wrong with the statement (duplicate output names, ...).
    Invalid(String),
    /// A state snapshot that does not belong to this plan.
    State(String),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Syntax(m) => write!(f, "syntax error: {m}"),
            PlanError::Unsupported(m) => write!(f, "not supported: {m}"),
            PlanError::WindowsAndAggregates => f.write_str(
                "not supported: window functions (OVER) and aggregates outside SELECT and HAVING; group with GROUP BY keys[, TUMBLE|HOP|SESSION(time, ...)]",
            ),
            PlanError::UnknownFunction(n) => write!(f, "unknown function: {n}"),
            PlanError::WrongArity {
                function,
                expected,
                got,
            } => write!(
                f,
                "function {function} takes {expected} argument(s), got {got}"
            ),
            PlanError::Type(m) => write!(f, "type error: {m}"),
            PlanError::NeedsAlias(e) => {
                write!(f, "output expression needs a name: write `{e} AS name`")
            }
            PlanError::TooLarge(m) => write!(f, "statement too large: {m}"),
            PlanError::SinkIsSource(s) => write!(
                f,
                "the sink stream must differ from the source stream ({s})"
            ),
            PlanError::Invalid(m) => write!(f, "invalid pipeline: {m}"),
            PlanError::State(m) => write!(f, "invalid pipeline state: {m}"),
        }
    }
}

impl std::error::Error for PlanError {}

/// Why one event failed; the event is counted as failed and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// `/` or `%` by zero.
    DivisionByZero,
    /// A result outside its type's range (`bigint out of range`, ...).
    OutOfRange(&'static str),
    /// An argument outside a function's domain (`sqrt(-1)`, a bad CAST).
    InvalidArgument(String),
    /// An error raised by a Rust closure of a [`crate::PipelineBuilder`] plan.
    User(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::DivisionByZero => f.write_str("division by zero"),
            EvalError::OutOfRange(t) => write!(f, "{t} out of range"),
            EvalError::InvalidArgument(m) | EvalError::User(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EvalError {}
