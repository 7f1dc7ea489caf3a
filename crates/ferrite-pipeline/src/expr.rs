//! The expression compiler: a sqlparser `Expr` becomes a tree of typed
//! closures once, at CREATE time; events never see the AST.
//!
//! Typing is static and PostgreSQL-like. A stream field (and a string
//! literal) has the *unknown* type until its context decides: next to a
//! number it is read as a number (the slot is then parsed once per entry),
//! next to text as text, as a condition as a boolean; two unknowns compare
//! as text. Anything else that does not fit (`lower(1)`, `'a' + 1` where
//! 'a' is no number, `NOT price * 2`) is refused at compile time.
//!
//! Leaves that are fields or constants are read inline by the operators
//! ([`NumSrc`], [`TextSrc`]), so `volume > 10` is one closure that compares a
//! pre-parsed slot with a constant.

use crate::entry::{Row, SlotTable};
use crate::error::{EvalError, PlanError};
use crate::funcs::{self, Arith, LikePattern};
use crate::value::{cmp_num, parse_bool, parse_num, Num, Value};
use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, DataType, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, Ident, InTarget, TrimWhereField, UnaryOperator,
    Value as SqlValue,
};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// A compiled expression.
pub type Eval = Box<dyn for<'a> Fn(&Row<'a>) -> Result<Value<'a>, EvalError> + Send + Sync>;

/// A compiled array expression (only as the argument of `unnest`).
pub type ArrayEval =
    Box<dyn for<'a> Fn(&Row<'a>) -> Result<Option<Vec<Option<Vec<u8>>>>, EvalError> + Send + Sync>;

/// Deepest expression nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most expression nodes accepted in one statement.
pub const MAX_NODES: usize = 4096;
/// Most distinct fields an expression may reference.
pub const MAX_FIELDS: usize = 256;
/// Most elements of an IN list, CASE arms or function arguments.
pub const MAX_LIST: usize = 1024;

/// Static type of a compiled expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Boolean.
    Bool,
    /// Integer or double, decided per event (a field parses as either).
    Num,
    /// Text.
    Text,
    /// A field or string literal whose type comes from its context.
    Unknown,
    /// The NULL literal.
    Null,
}

impl Ty {
    /// Name used in errors and in the output schema.
    pub fn name(self) -> &'static str {
        match self {
            Ty::Bool => "boolean",
            Ty::Num => "number",
            Ty::Text => "text",
            Ty::Unknown => "field",
            Ty::Null => "null",
        }
    }
}

#[derive(Clone)]
enum Kind {
    Other,
    Field(usize),
    Const(Value<'static>),
}

/// A compiled expression with its static type.
pub(crate) struct C {
    /// Its type.
    pub ty: Ty,
    /// The closure.
    pub f: Eval,
    kind: Kind,
}

impl C {
    /// The field slot, when the expression is a bare field.
    pub(crate) fn field_slot(&self) -> Option<usize> {
        match self.kind {
            Kind::Field(s) => Some(s),
            _ => None,
        }
    }
}

fn konst(v: Value<'static>) -> C {
    let ty = match &v {
        Value::Null => Ty::Null,
        Value::Int(_) | Value::Float(_) => Ty::Num,
        Value::Text(_) => Ty::Unknown,
        Value::Bool(_) => Ty::Bool,
    };
    let v2 = v.clone();
    C {
        ty,
        f: Box::new(move |_| Ok(v2.clone())),
        kind: Kind::Const(v),
    }
}

fn other(ty: Ty, f: Eval) -> C {
    C {
        ty,
        f,
        kind: Kind::Other,
    }
}

// ---- leaf sources -------------------------------------------------------

/// A number operand: a pre-parsed slot, a constant or a sub-expression.
pub(crate) enum NumSrc {
    Slot(usize),
    Const(Num),
    Expr(Eval),
}

impl NumSrc {
    #[inline]
    pub(crate) fn get(&self, r: &Row<'_>) -> Result<Num, EvalError> {
        match self {
            NumSrc::Slot(s) => Ok(r.num(*s)),
            NumSrc::Const(n) => Ok(*n),
            NumSrc::Expr(f) => Ok(match f(r)? {
                Value::Int(i) => Num::Int(i),
                Value::Float(x) => Num::Float(x),
                Value::Text(t) => parse_num(&t),
                _ => Num::Null,
            }),
        }
    }
}

/// A text operand: a slot's raw bytes, a constant or a sub-expression.
pub(crate) enum TextSrc {
    Slot(usize),
    Const(Option<Vec<u8>>),
    Expr(Eval),
}

impl TextSrc {
    #[inline]
    pub(crate) fn get<'x>(&'x self, r: &Row<'x>) -> Result<Option<Cow<'x, [u8]>>, EvalError> {
        match self {
            TextSrc::Slot(s) => Ok(r.text(*s).map(Cow::Borrowed)),
            TextSrc::Const(c) => Ok(c.as_deref().map(Cow::Borrowed)),
            TextSrc::Expr(f) => Ok(match f(r)? {
                Value::Null => None,
                Value::Text(t) => Some(t),
                v => v.to_bytes().map(Cow::Owned),
            }),
        }
    }
}

/// A boolean operand.
pub(crate) enum BoolSrc {
    Slot(usize),
    Const(Option<bool>),
    Expr(Eval),
}

impl BoolSrc {
    #[inline]
    pub(crate) fn get(&self, r: &Row<'_>) -> Result<Option<bool>, EvalError> {
        match self {
            BoolSrc::Slot(s) => Ok(r.boolean(*s)),
            BoolSrc::Const(b) => Ok(*b),
            BoolSrc::Expr(f) => Ok(match f(r)? {
                Value::Bool(b) => Some(b),
                Value::Text(t) => parse_bool(&t),
                _ => None,
            }),
        }
    }
}

fn bool_val(b: Option<bool>) -> Value<'static> {
    b.map_or(Value::Null, Value::Bool)
}

fn num_val(n: Num) -> Value<'static> {
    n.value()
}

fn text_val(t: Option<Cow<'_, [u8]>>) -> Value<'_> {
    t.map_or(Value::Null, Value::Text)
}

// ---- the compiler -------------------------------------------------------

/// Compiles expressions of one statement, sharing its field slots and
/// node budget.
pub(crate) struct Compiler<'s> {
    pub(crate) slots: &'s mut SlotTable,
    /// Table name (and alias) that qualified column names may use.
    pub(crate) qualifiers: Vec<String>,
    nodes: usize,
}

fn type_err(what: &str, want: &str, got: Ty) -> PlanError {
    PlanError::Type(format!("{what} expects {want}, got {}", got.name()))
}

fn cmp_op(op: &BinaryOperator) -> Option<fn(Ordering) -> bool> {
    Some(match op {
        BinaryOperator::Eq => Ordering::is_eq,
        BinaryOperator::NotEq => Ordering::is_ne,
        BinaryOperator::Lt => Ordering::is_lt,
        BinaryOperator::LtEq => Ordering::is_le,
        BinaryOperator::Gt => Ordering::is_gt,
        BinaryOperator::GtEq => Ordering::is_ge,
        _ => return None,
    })
}

fn arith_op(op: &BinaryOperator) -> Option<Arith> {
    Some(match op {
        BinaryOperator::Plus => Arith::Add,
        BinaryOperator::Minus => Arith::Sub,
        BinaryOperator::Multiply => Arith::Mul,
        BinaryOperator::Divide => Arith::Div,
        BinaryOperator::Modulo => Arith::Mod,
        _ => return None,
    })
}

/// The common type of operands that must agree (comparison, CASE arms,
/// COALESCE, IN): a number wins over unknowns, then text, then boolean;
/// unknowns alone are text.
fn unify(what: &str, tys: &[Ty]) -> Result<Ty, PlanError> {
    let mut t: Option<Ty> = None;
    for &x in tys {
        match x {
            Ty::Unknown | Ty::Null => {}
            x => match t {
                None => t = Some(x),
                Some(y) if y == x => {}
                Some(y) => {
                    return Err(PlanError::Type(format!(
                        "{what}: cannot mix {} and {}",
                        y.name(),
                        x.name()
                    )))
                }
            },
        }
    }
    Ok(t.unwrap_or(Ty::Text))
}

fn ident_name(i: &Ident) -> String {
    i.value.clone()
}

impl<'s> Compiler<'s> {
    /// A compiler over a statement's slot table.
    pub(crate) fn new(slots: &'s mut SlotTable, qualifiers: Vec<String>) -> Self {
        Compiler {
            slots,
            qualifiers,
            nodes: 0,
        }
    }

    fn enter(&mut self, depth: usize) -> Result<(), PlanError> {
        self.nodes += 1;
        if depth > MAX_DEPTH {
            return Err(PlanError::TooLarge(format!(
                "expression nested deeper than {MAX_DEPTH} levels"
            )));
        }
        if self.nodes > MAX_NODES {
            return Err(PlanError::TooLarge(format!(
                "more than {MAX_NODES} expression nodes"
            )));
        }
        Ok(())
    }

    fn field(&mut self, name: &str) -> Result<C, PlanError> {
        match name {
            "_id" => {
                return Ok(other(
                    Ty::Text,
                    Box::new(|r| Ok(Value::Text(Cow::Owned(r.id().to_string().into_bytes())))),
                ))
            }
            "_ms" => {
                return Ok(other(
                    Ty::Num,
                    Box::new(|r| Ok(i64::try_from(r.id().ms).map_or(Value::Null, Value::Int))),
                ))
            }
            _ => {}
        }
        let before = self.slots.len();
        let s = self.slots.slot(name.as_bytes());
        if self.slots.len() > before && self.slots.len() > MAX_FIELDS {
            return Err(PlanError::TooLarge(format!(
                "more than {MAX_FIELDS} distinct fields referenced"
            )));
        }
        Ok(C {
            ty: Ty::Unknown,
            f: Box::new(move |r| Ok(text_val(r.text(s).map(Cow::Borrowed)))),
            kind: Kind::Field(s),
        })
    }

    // ---- coercions ------------------------------------------------------

    pub(crate) fn num_src(&mut self, c: C, what: &str) -> Result<NumSrc, PlanError> {
        match (c.ty, c.kind) {
            (Ty::Null, _) => Ok(NumSrc::Const(Num::Null)),
            (Ty::Num, Kind::Const(v)) => Ok(NumSrc::Const(match v {
                Value::Int(i) => Num::Int(i),
                Value::Float(f) => Num::Float(f),
                _ => Num::Null,
            })),
            (Ty::Num, _) => Ok(NumSrc::Expr(c.f)),
            (Ty::Unknown, Kind::Field(s)) => {
                self.slots.numeric[s] = true;
                Ok(NumSrc::Slot(s))
            }
            (Ty::Unknown, Kind::Const(Value::Text(t))) => match parse_num(&t) {
                Num::Null => Err(PlanError::Type(format!(
                    "invalid number {:?} for {what}",
                    String::from_utf8_lossy(&t)
                ))),
                n => Ok(NumSrc::Const(n)),
            },
            // A dynamic unknown (`->>`): parsed per use, NULL if no number.
            (Ty::Unknown, _) => Ok(NumSrc::Expr(c.f)),
            (t, _) => Err(type_err(what, "a number", t)),
        }
    }

    pub(crate) fn num(&mut self, c: C, what: &str) -> Result<C, PlanError> {
        if c.ty == Ty::Num {
            return Ok(c);
        }
        let src = self.num_src(c, what)?;
        Ok(match src {
            NumSrc::Const(n) => konst(n.value()),
            src => other(Ty::Num, Box::new(move |r| Ok(num_val(src.get(r)?)))),
        })
    }

    pub(crate) fn text_src(&mut self, c: C, what: &str, any: bool) -> Result<TextSrc, PlanError> {
        match (c.ty, c.kind) {
            (Ty::Null, _) => Ok(TextSrc::Const(None)),
            (Ty::Unknown, Kind::Field(s)) => Ok(TextSrc::Slot(s)),
            (Ty::Unknown | Ty::Text, Kind::Const(v)) => Ok(TextSrc::Const(v.to_bytes())),
            (Ty::Unknown | Ty::Text, _) => Ok(TextSrc::Expr(c.f)),
            (_, Kind::Const(v)) if any => Ok(TextSrc::Const(v.to_bytes())),
            (_, _) if any => Ok(TextSrc::Expr(c.f)),
            (t, _) => Err(type_err(what, "text", t)),
        }
    }

    fn text(&mut self, c: C, what: &str) -> Result<C, PlanError> {
        if c.ty == Ty::Text {
            return Ok(c);
        }
        let src = self.text_src(c, what, false)?;
        Ok(match src {
            TextSrc::Const(t) => match t {
                None => konst(Value::Null),
                Some(t) => {
                    let mut k = konst(Value::Text(Cow::Owned(t)));
                    k.ty = Ty::Text;
                    k
                }
            },
            src => other(
                Ty::Text,
                Box::new(move |r| Ok(text_val(src.get(r)?.map(|c| Cow::Owned(c.into_owned()))))),
            ),
        })
    }

    pub(crate) fn bool_src(&mut self, c: C, what: &str) -> Result<BoolSrc, PlanError> {
        match (c.ty, c.kind) {
            (Ty::Null, _) => Ok(BoolSrc::Const(None)),
            (Ty::Bool, Kind::Const(Value::Bool(b))) => Ok(BoolSrc::Const(Some(b))),
            (Ty::Bool, _) => Ok(BoolSrc::Expr(c.f)),
            (Ty::Unknown, Kind::Field(s)) => Ok(BoolSrc::Slot(s)),
            (Ty::Unknown, Kind::Const(Value::Text(t))) => match parse_bool(&t) {
                None => Err(PlanError::Type(format!(
                    "invalid boolean {:?} for {what}",
                    String::from_utf8_lossy(&t)
                ))),
                b => Ok(BoolSrc::Const(b)),
            },
            (Ty::Unknown, _) => Ok(BoolSrc::Expr(c.f)),
            (t, _) => Err(type_err(what, "a boolean", t)),
        }
    }

    /// Compiles a condition (WHERE, CASE WHEN, AND/OR operands).
    pub(crate) fn condition(&mut self, e: &Expr, depth: usize) -> Result<BoolSrc, PlanError> {
        let c = self.expr(e, depth)?;
        self.bool_src(c, "a condition")
    }

    fn boolean(&mut self, c: C, what: &str) -> Result<C, PlanError> {
        if c.ty == Ty::Bool {
            return Ok(c);
        }
        let src = self.bool_src(c, what)?;
        Ok(match src {
            BoolSrc::Const(b) => konst(bool_val(b)),
            src => other(Ty::Bool, Box::new(move |r| Ok(bool_val(src.get(r)?)))),
        })
    }

    /// Coerces to `ty` (the result of [`unify`]).
    fn coerce_to(&mut self, c: C, ty: Ty, what: &str) -> Result<C, PlanError> {
        match ty {
            Ty::Num => self.num(c, what),
            Ty::Bool => self.boolean(c, what),
            _ => self.text(c, what),
        }
    }

    /// Compiles an expression.
    pub(crate) fn expr(&mut self, e: &Expr, depth: usize) -> Result<C, PlanError> {
        self.enter(depth)?;
        let d = depth + 1;
        let c = match e {
            Expr::Identifier(i) => self.field(&ident_name(i))?,
            Expr::CompoundIdentifier(parts) => {
                let [q, name] = parts.as_slice() else {
                    return Err(PlanError::Unsupported(format!("column reference {e}")));
                };
                if !self.qualifiers.contains(&q.value) {
                    return Err(PlanError::Invalid(format!(
                        "{e} refers to {}, which is not the source stream",
                        q.value
                    )));
                }
                self.field(&ident_name(name))?
            }
            Expr::Value(v) => konst(literal(&v.value)?),
            Expr::Nested(inner) => return self.expr(inner, d),
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                let want = matches!(e, Expr::IsNotNull(_));
                let c = self.expr(x, d)?;
                let f = c.f;
                other(
                    Ty::Bool,
                    Box::new(move |r| Ok(Value::Bool(f(r)?.is_null() != want))),
                )
            }
            Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x) => {
                let (target, neg) = match e {
                    Expr::IsTrue(_) => (Some(true), false),
                    Expr::IsNotTrue(_) => (Some(true), true),
                    Expr::IsFalse(_) => (Some(false), false),
                    Expr::IsNotFalse(_) => (Some(false), true),
                    Expr::IsUnknown(_) => (None, false),
                    _ => (None, true),
                };
                let src = self.condition(x, d)?;
                other(
                    Ty::Bool,
                    Box::new(move |r| Ok(Value::Bool((src.get(r)? == target) != neg))),
                )
            }
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                let neg = matches!(e, Expr::IsNotDistinctFrom(..));
                let (ty, a, b) = self.pair(a, b, d, "IS DISTINCT FROM")?;
                let (fa, fb) = (a.f, b.f);
                other(
                    Ty::Bool,
                    Box::new(move |r| {
                        let (x, y) = (fa(r)?, fb(r)?);
                        let distinct = match (x.is_null(), y.is_null()) {
                            (true, true) => false,
                            (true, false) | (false, true) => true,
                            _ => compare(ty, &x, &y) != Some(Ordering::Equal),
                        };
                        Ok(Value::Bool(distinct != neg))
                    }),
                )
            }
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => {
                    let src = self.condition(expr, d)?;
                    other(
                        Ty::Bool,
                        Box::new(move |r| Ok(bool_val(src.get(r)?.map(|b| !b)))),
                    )
                }
                UnaryOperator::Minus => {
                    let c = self.expr(expr, d)?;
                    // `-5` is a constant, so comparisons with it stay inline.
                    match &c.kind {
                        Kind::Const(Value::Int(i)) if *i != i64::MIN => {
                            return Ok(konst(Value::Int(-i)))
                        }
                        Kind::Const(Value::Float(f)) => return Ok(konst(Value::Float(-f))),
                        _ => {}
                    }
                    let src = self.num_src(c, "unary -")?;
                    other(
                        Ty::Num,
                        Box::new(move |r| Ok(num_val(funcs::neg(src.get(r)?)?))),
                    )
                }
                UnaryOperator::Plus => {
                    let c = self.expr(expr, d)?;
                    self.num(c, "unary +")?
                }
                _ => return Err(PlanError::Unsupported(format!("operator {op}"))),
            },
            Expr::BinaryOp { left, op, right } => self.binary(left, op, right, d)?,
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.expr(expr, d)?;
                let lo = self.expr(low, d)?;
                let hi = self.expr(high, d)?;
                let ty = unify("BETWEEN", &[x.ty, lo.ty, hi.ty])?;
                let x = self.coerce_to(x, ty, "BETWEEN")?.f;
                let lo = self.coerce_to(lo, ty, "BETWEEN")?.f;
                let hi = self.coerce_to(hi, ty, "BETWEEN")?.f;
                let neg = *negated;
                other(
                    Ty::Bool,
                    Box::new(move |r| {
                        let v = x(r)?;
                        let a = compare(ty, &v, &lo(r)?).map(|o| o.is_ge());
                        let b = compare(ty, &v, &hi(r)?).map(|o| o.is_le());
                        Ok(bool_val(and3(a, b).map(|x| x != neg)))
                    }),
                )
            }
            Expr::In {
                expr,
                target,
                negated,
                ..
            } => {
                let InTarget::List(list) = target else {
                    return Err(PlanError::Unsupported(
                        "subqueries and IN UNNEST: only IN (list) is supported".into(),
                    ));
                };
                self.in_list(expr, list, *negated, d)?
            }
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | Expr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(PlanError::Unsupported("LIKE ANY".into()));
                }
                let fold = matches!(e, Expr::ILike { .. });
                self.like(expr, pattern, escape_char.as_deref(), *negated, fold, d)?
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref(), d)?,
            Expr::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if format.is_some() || matches!(kind, CastKind::TryCast | CastKind::SafeCast) {
                    return Err(PlanError::Unsupported(format!("{e}")));
                }
                self.cast(expr, data_type, d)?
            }
            Expr::Function(f) => self.function(f, d)?,
            Expr::Ceil { expr, field } | Expr::Floor { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(sqlparser::ast::DateTimeField::NoDateTime)
                ) {
                    return Err(PlanError::Unsupported(format!("{e}")));
                }
                let name = if matches!(e, Expr::Ceil { .. }) {
                    "ceil"
                } else {
                    "floor"
                };
                let c = self.expr(expr, d)?;
                self.num_fn1(name, c)?
            }
            Expr::Position { expr, r#in } => {
                let needle = self.expr(expr, d)?;
                let hay = self.expr(r#in, d)?;
                self.strpos(hay, needle)?
            }
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let s = self.expr(expr, d)?;
                let from = match substring_from {
                    Some(f) => self.expr(f, d)?,
                    None => konst(Value::Int(1)),
                };
                let count = match substring_for {
                    Some(f) => Some(self.expr(f, d)?),
                    None => None,
                };
                self.substr(s, from, count)?
            }
            Expr::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                if trim_characters.is_some() {
                    return Err(PlanError::Unsupported(format!("{e}")));
                }
                let (lead, trail) = match trim_where {
                    None | Some(TrimWhereField::Both) => (true, true),
                    Some(TrimWhereField::Leading) => (true, false),
                    Some(TrimWhereField::Trailing) => (false, true),
                };
                let s = self.expr(expr, d)?;
                let set = match trim_what {
                    Some(w) => Some(self.expr(w, d)?),
                    None => None,
                };
                self.trim(s, set, lead, trail)?
            }
            Expr::JsonAccess { .. } => {
                return Err(PlanError::Unsupported(format!(
                    "{e}: use payload->'key' and payload->>'key'"
                )))
            }
            Expr::Subquery(_) | Expr::Exists { .. } => {
                return Err(PlanError::Unsupported("subqueries".into()))
            }
            _ => return Err(PlanError::Unsupported(format!("expression {e}"))),
        };
        Ok(c)
    }

    fn pair(&mut self, a: &Expr, b: &Expr, d: usize, what: &str) -> Result<(Ty, C, C), PlanError> {
        let a = self.expr(a, d)?;
        let b = self.expr(b, d)?;
        let ty = unify(what, &[a.ty, b.ty])?;
        let a = self.coerce_to(a, ty, what)?;
        let b = self.coerce_to(b, ty, what)?;
        Ok((ty, a, b))
    }

    fn binary(
        &mut self,
        l: &Expr,
        op: &BinaryOperator,
        r: &Expr,
        d: usize,
    ) -> Result<C, PlanError> {
        if let Some(test) = cmp_op(op) {
            let a = self.expr(l, d)?;
            let b = self.expr(r, d)?;
            let what = format!("operator {op}");
            let ty = unify(&what, &[a.ty, b.ty])?;
            return Ok(match ty {
                Ty::Num => {
                    let a = self.num_src(a, &what)?;
                    let b = self.num_src(b, &what)?;
                    other(
                        Ty::Bool,
                        Box::new(move |row| {
                            let x = a.get(row)?;
                            let y = b.get(row)?;
                            Ok(bool_val(cmp_num(x, y).map(test)))
                        }),
                    )
                }
                Ty::Bool => {
                    let a = self.bool_src(a, &what)?;
                    let b = self.bool_src(b, &what)?;
                    other(
                        Ty::Bool,
                        Box::new(move |row| {
                            let x = a.get(row)?;
                            let y = b.get(row)?;
                            Ok(bool_val(x.zip(y).map(|(x, y)| test(x.cmp(&y)))))
                        }),
                    )
                }
                _ => {
                    let a = self.text_src(a, &what, false)?;
                    let b = self.text_src(b, &what, false)?;
                    other(
                        Ty::Bool,
                        Box::new(move |row| {
                            let x = a.get(row)?;
                            let y = b.get(row)?;
                            Ok(bool_val(
                                x.zip(y).map(|(x, y)| test(x.as_ref().cmp(y.as_ref()))),
                            ))
                        }),
                    )
                }
            });
        }
        if let Some(aop) = arith_op(op) {
            let what = format!("operator {op}");
            let a = self.expr(l, d)?;
            let b = self.expr(r, d)?;
            let a = self.num_src(a, &what)?;
            let b = self.num_src(b, &what)?;
            return Ok(other(
                Ty::Num,
                Box::new(move |row| {
                    let x = a.get(row)?;
                    if x == Num::Null {
                        return Ok(Value::Null);
                    }
                    Ok(num_val(funcs::arith(aop, x, b.get(row)?)?))
                }),
            ));
        }
        match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let is_and = *op == BinaryOperator::And;
                let a = self.condition(l, d)?;
                let b = self.condition(r, d)?;
                Ok(other(
                    Ty::Bool,
                    Box::new(move |row| {
                        let x = a.get(row)?;
                        // Short-circuit: false AND _ / true OR _.
                        if x == Some(!is_and) {
                            return Ok(Value::Bool(!is_and));
                        }
                        let y = b.get(row)?;
                        Ok(bool_val(if is_and { and3(x, y) } else { or3(x, y) }))
                    }),
                ))
            }
            BinaryOperator::StringConcat => {
                let a = self.expr(l, d)?;
                let b = self.expr(r, d)?;
                let a = self.text_src(a, "operator ||", true)?;
                let b = self.text_src(b, "operator ||", true)?;
                Ok(other(
                    Ty::Text,
                    Box::new(move |row| {
                        let (Some(x), Some(y)) = (a.get(row)?, b.get(row)?) else {
                            return Ok(Value::Null);
                        };
                        let mut v = Vec::with_capacity(x.len() + y.len());
                        v.extend_from_slice(&x);
                        v.extend_from_slice(&y);
                        Ok(Value::Text(Cow::Owned(v)))
                    }),
                ))
            }
            BinaryOperator::Arrow | BinaryOperator::LongArrow => self.json(l, op, r, d),
            _ => Err(PlanError::Unsupported(format!("operator {op}"))),
        }
    }

    fn json(&mut self, l: &Expr, op: &BinaryOperator, r: &Expr, d: usize) -> Result<C, PlanError> {
        // Flatten a->'x'->'y'->>'z' into one path, parsed once per event.
        let mut path = vec![json_step(r)?];
        let mut base = l;
        while let Expr::BinaryOp {
            left,
            op: BinaryOperator::Arrow,
            right,
        } = base
        {
            self.enter(d)?;
            path.push(json_step(right)?);
            base = left;
        }
        while let Expr::Nested(inner) = base {
            base = inner;
        }
        path.reverse();
        let as_text = *op == BinaryOperator::LongArrow;
        let b = self.expr(base, d)?;
        let src = self.text_src(b, "operator ->", false)?;
        Ok(other(
            // `->>` gives text that adapts to its context like a field does.
            if as_text { Ty::Unknown } else { Ty::Text },
            Box::new(move |row| {
                let Some(doc) = src.get(row)? else {
                    return Ok(Value::Null);
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&doc) else {
                    return Ok(Value::Null);
                };
                let mut cur = &v;
                for step in &path {
                    let next = match (step, cur) {
                        (JsonStep::Key(k), serde_json::Value::Object(m)) => m.get(k),
                        (JsonStep::Index(i), serde_json::Value::Array(a)) => {
                            let i = if *i < 0 { a.len() as i64 + *i } else { *i };
                            usize::try_from(i).ok().and_then(|i| a.get(i))
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => cur = n,
                        None => return Ok(Value::Null),
                    }
                }
                Ok(match cur {
                    serde_json::Value::Null if as_text => Value::Null,
                    serde_json::Value::String(s) if as_text => {
                        Value::Text(Cow::Owned(s.clone().into_bytes()))
                    }
                    other => Value::Text(Cow::Owned(other.to_string().into_bytes())),
                })
            }),
        ))
    }

    fn in_list(&mut self, x: &Expr, list: &[Expr], neg: bool, d: usize) -> Result<C, PlanError> {
        if list.len() > MAX_LIST {
            return Err(PlanError::TooLarge(format!(
                "IN list longer than {MAX_LIST}"
            )));
        }
        let x = self.expr(x, d)?;
        let mut items = Vec::with_capacity(list.len());
        for e in list {
            items.push(self.expr(e, d)?);
        }
        let mut tys = vec![x.ty];
        tys.extend(items.iter().map(|c| c.ty));
        let ty = unify("IN", &tys)?;
        let all_const = items.iter().all(|c| matches!(c.kind, Kind::Const(_)));
        // Fast path: a text operand against constants.
        if ty == Ty::Text && all_const {
            let xs = self.text_src(x, "IN", false)?;
            let mut consts = Vec::new();
            let mut has_null = false;
            for c in items {
                match self.text_src(c, "IN", false)? {
                    TextSrc::Const(Some(t)) => consts.push(t),
                    _ => has_null = true,
                }
            }
            return Ok(other(
                Ty::Bool,
                Box::new(move |row| {
                    let Some(v) = xs.get(row)? else {
                        return Ok(Value::Null);
                    };
                    let hit = consts.iter().any(|c| c.as_slice() == v.as_ref());
                    Ok(if hit {
                        Value::Bool(!neg)
                    } else if has_null {
                        Value::Null
                    } else {
                        Value::Bool(neg)
                    })
                }),
            ));
        }
        let x = self.coerce_to(x, ty, "IN")?.f;
        let mut fs = Vec::with_capacity(items.len());
        for c in items {
            fs.push(self.coerce_to(c, ty, "IN")?.f);
        }
        Ok(other(
            Ty::Bool,
            Box::new(move |row| {
                let v = x(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut unknown = false;
                for f in &fs {
                    match compare(ty, &v, &f(row)?) {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!neg)),
                        None => unknown = true,
                        _ => {}
                    }
                }
                Ok(if unknown {
                    Value::Null
                } else {
                    Value::Bool(neg)
                })
            }),
        ))
    }

    fn like(
        &mut self,
        x: &Expr,
        pattern: &Expr,
        escape: Option<&Expr>,
        neg: bool,
        fold: bool,
        d: usize,
    ) -> Result<C, PlanError> {
        let what = if fold { "ILIKE" } else { "LIKE" };
        let esc: Option<u8> = match escape {
            None => Some(b'\\'),
            Some(Expr::Value(v)) => match &v.value {
                SqlValue::SingleQuotedString(s) if s.is_empty() => None,
                SqlValue::SingleQuotedString(s) if s.len() == 1 => s.bytes().next(),
                _ => {
                    return Err(PlanError::Invalid(
                        "ESCAPE takes a single ASCII character".into(),
                    ))
                }
            },
            Some(_) => return Err(PlanError::Invalid("ESCAPE takes a constant string".into())),
        };
        let x = self.expr(x, d)?;
        let xs = self.text_src(x, what, false)?;
        let p = self.expr(pattern, d)?;
        let ps = self.text_src(p, what, false)?;
        if let TextSrc::Const(pc) = ps {
            let Some(pc) = pc else {
                return Ok(konst(Value::Null));
            };
            let pat = Arc::new(LikePattern::new(&pc, esc, fold).map_err(PlanError::Invalid)?);
            return Ok(other(
                Ty::Bool,
                Box::new(move |row| Ok(bool_val(xs.get(row)?.map(|s| pat.matches(&s) != neg)))),
            ));
        }
        Ok(other(
            Ty::Bool,
            Box::new(move |row| {
                let (Some(s), Some(p)) = (xs.get(row)?, ps.get(row)?) else {
                    return Ok(Value::Null);
                };
                let pat = LikePattern::new(&p, esc, fold).map_err(EvalError::InvalidArgument)?;
                Ok(Value::Bool(pat.matches(&s) != neg))
            }),
        ))
    }

    fn case(
        &mut self,
        operand: Option<&Expr>,
        whens: &[sqlparser::ast::CaseWhen],
        els: Option<&Expr>,
        d: usize,
    ) -> Result<C, PlanError> {
        if whens.len() > MAX_LIST {
            return Err(PlanError::TooLarge(format!(
                "CASE with more than {MAX_LIST} arms"
            )));
        }
        let mut conds: Vec<BoolSrc> = Vec::with_capacity(whens.len());
        match operand {
            None => {
                for w in whens {
                    conds.push(self.condition(&w.condition, d)?);
                }
            }
            Some(op) => {
                // CASE x WHEN v THEN ... is CASE WHEN x = v THEN ...
                for w in whens {
                    let eq = Expr::BinaryOp {
                        left: Box::new(op.clone()),
                        op: BinaryOperator::Eq,
                        right: Box::new(w.condition.clone()),
                    };
                    conds.push(self.condition(&eq, d)?);
                }
            }
        }
        let mut results = Vec::with_capacity(whens.len() + 1);
        for w in whens {
            results.push(self.expr(&w.result, d)?);
        }
        if let Some(e) = els {
            results.push(self.expr(e, d)?);
        }
        let tys: Vec<Ty> = results.iter().map(|c| c.ty).collect();
        let ty = result_ty(unify("CASE", &tys)?, &tys);
        let mut fs = Vec::with_capacity(results.len());
        for c in results {
            fs.push(self.result_arm(c, ty)?);
        }
        let else_f = if els.is_some() { fs.pop() } else { None };
        let arms: Vec<(BoolSrc, Eval)> = conds.into_iter().zip(fs).collect();
        Ok(other(
            ty,
            Box::new(move |row| {
                for (c, f) in &arms {
                    if c.get(row)? == Some(true) {
                        return f(row);
                    }
                }
                match &else_f {
                    Some(f) => f(row),
                    None => Ok(Value::Null),
                }
            }),
        ))
    }

    /// Coerces a result arm (CASE/COALESCE/...) to the unified type; an
    /// all-unknown set stays as passthrough text.
    fn result_arm(&mut self, c: C, ty: Ty) -> Result<Eval, PlanError> {
        if c.ty == ty || c.ty == Ty::Null {
            return Ok(c.f);
        }
        Ok(self.coerce_to(c, ty, "result")?.f)
    }

    fn cast(&mut self, x: &Expr, dt: &DataType, d: usize) -> Result<C, PlanError> {
        let name = dt.to_string().to_ascii_uppercase();
        let base = name.split('(').next().unwrap_or("").trim().to_string();
        let c = self.expr(x, d)?;
        let target = match base.as_str() {
            "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "INT2" | "INT4" | "INT8" | "INT64" => "int",
            "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT4" | "FLOAT8" | "FLOAT64" | "REAL"
            | "NUMERIC" | "DECIMAL" => "float",
            "TEXT" | "VARCHAR" | "CHAR" | "CHARACTER" | "CHARACTER VARYING" | "STRING" => "text",
            "BOOLEAN" | "BOOL" => "bool",
            _ => return Err(PlanError::Unsupported(format!("CAST to {dt}"))),
        };
        let f = c.f;
        let strict_num = |v: &Value<'_>, ty: &'static str| -> Result<Num, EvalError> {
            match v {
                Value::Null => Ok(Num::Null),
                Value::Int(i) => Ok(Num::Int(*i)),
                Value::Float(x) => Ok(Num::Float(*x)),
                Value::Bool(b) => Ok(Num::Int(*b as i64)),
                Value::Text(t) => match parse_num(t) {
                    Num::Null => Err(EvalError::InvalidArgument(format!(
                        "invalid input syntax for type {ty}: {:?}",
                        String::from_utf8_lossy(t)
                    ))),
                    n => Ok(n),
                },
            }
        };
        Ok(match target {
            "int" => other(
                Ty::Num,
                Box::new(move |r| {
                    let v = f(r)?;
                    if let Value::Text(t) = &v {
                        // Text to bigint accepts only integers, as PostgreSQL.
                        if let Ok(i) = std::str::from_utf8(t.trim_ascii())
                            .unwrap_or("x")
                            .parse::<i64>()
                        {
                            return Ok(Value::Int(i));
                        }
                        return Err(EvalError::InvalidArgument(format!(
                            "invalid input syntax for type bigint: {:?}",
                            String::from_utf8_lossy(t)
                        )));
                    }
                    Ok(match strict_num(&v, "bigint")? {
                        Num::Null => Value::Null,
                        Num::Int(i) => Value::Int(i),
                        Num::Float(x) => Value::Int(funcs::f64_to_i64(x)?),
                    })
                }),
            ),
            "float" => other(
                Ty::Num,
                Box::new(move |r| {
                    Ok(match strict_num(&f(r)?, "double precision")? {
                        Num::Null => Value::Null,
                        n => Value::Float(funcs::as_f64(n)),
                    })
                }),
            ),
            "text" => other(
                Ty::Text,
                Box::new(move |r| {
                    Ok(match f(r)? {
                        Value::Text(t) => Value::Text(t),
                        v => v
                            .to_bytes()
                            .map_or(Value::Null, |b| Value::Text(Cow::Owned(b))),
                    })
                }),
            ),
            _ => other(
                Ty::Bool,
                Box::new(move |r| {
                    Ok(match f(r)? {
                        Value::Null => Value::Null,
                        Value::Bool(b) => Value::Bool(b),
                        Value::Int(i) => Value::Bool(i != 0),
                        Value::Float(_) => {
                            return Err(EvalError::InvalidArgument(
                                "cannot cast double precision to boolean".into(),
                            ))
                        }
                        Value::Text(t) => match parse_bool(&t) {
                            Some(b) => Value::Bool(b),
                            None => {
                                return Err(EvalError::InvalidArgument(format!(
                                    "invalid input syntax for type boolean: {:?}",
                                    String::from_utf8_lossy(&t)
                                )))
                            }
                        },
                    })
                }),
            ),
        })
    }

    fn args<'e>(&self, f: &'e Function) -> Result<Vec<&'e Expr>, PlanError> {
        function_args(f)
    }

    fn function(&mut self, f: &Function, d: usize) -> Result<C, PlanError> {
        // `user` and friends parse as niladic functions; here they are fields.
        if matches!(f.args, FunctionArguments::None) && f.over.is_none() {
            if let [part] = f.name.0.as_slice() {
                if let Some(i) = part.as_ident() {
                    return self.field(&i.value);
                }
            }
        }
        let name = f.name.to_string().to_ascii_lowercase();
        if AGGREGATES.contains(&name.as_str()) {
            return Err(PlanError::WindowsAndAggregates);
        }
        let args = self.args(f)?;
        let n = args.len();
        let arity = |expected: &'static str, ok: bool| -> Result<(), PlanError> {
            if ok {
                Ok(())
            } else {
                Err(PlanError::WrongArity {
                    function: name.clone(),
                    expected,
                    got: n,
                })
            }
        };
        match name.as_str() {
            "unnest" | "string_to_array" => {
                return Err(PlanError::Unsupported(format!(
                    "{name} outside the select list: use `SELECT unnest(string_to_array(x, ',')) AS name, ...`"
                )))
            }
            "abs" | "floor" | "ceil" | "ceiling" | "sqrt" | "ln" | "exp" | "sign" => arity("1", n == 1)?,
            "round" | "log" => arity("1 or 2", n == 1 || n == 2)?,
            "power" | "pow" | "mod" => arity("2", n == 2)?,
            "greatest" | "least" | "coalesce" | "concat" => arity("at least 1", n >= 1)?,
            "nullif" | "strpos" | "starts_with" | "left" | "right" => arity("2", n == 2)?,
            "lower" | "upper" | "length" | "char_length" | "character_length" => arity("1", n == 1)?,
            "substr" | "substring" => arity("2 or 3", n == 2 || n == 3)?,
            "trim" | "btrim" | "ltrim" | "rtrim" => arity("1 or 2", n == 1 || n == 2)?,
            "replace" | "split_part" => arity("3", n == 3)?,
            _ => return Err(PlanError::UnknownFunction(name)),
        }
        let mut cs = Vec::with_capacity(n);
        for a in &args {
            cs.push(self.expr(a, d)?);
        }
        let mut it = cs.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| PlanError::Invalid("missing argument".into()))
        };
        Ok(match name.as_str() {
            "abs" | "floor" | "ceil" | "ceiling" | "sqrt" | "ln" | "exp" | "sign" => {
                self.num_fn1(&name, next()?)?
            }
            "log" if n == 1 => self.num_fn1("log10", next()?)?,
            "log" | "power" | "pow" | "mod" => {
                let a = next()?;
                let b = next()?;
                let a = self.num_src(a, &name)?;
                let b = self.num_src(b, &name)?;
                let op: fn(Num, Num) -> Result<Num, EvalError> = match name.as_str() {
                    "log" => funcs::log,
                    "mod" => |a, b| funcs::arith(Arith::Mod, a, b),
                    _ => funcs::power,
                };
                other(
                    Ty::Num,
                    Box::new(move |r| Ok(num_val(op(a.get(r)?, b.get(r)?)?))),
                )
            }
            "round" => {
                let a = next()?;
                let a = self.num_src(a, "round")?;
                let digits = if n == 2 {
                    let b = next()?;
                    Some(self.num_src(b, "round")?)
                } else {
                    None
                };
                other(
                    Ty::Num,
                    Box::new(move |r| {
                        let x = a.get(r)?;
                        let k = match &digits {
                            None => 0,
                            Some(s) => match s.get(r)? {
                                Num::Int(k) => k,
                                Num::Float(k) => funcs::f64_to_i64(k)?,
                                Num::Null => return Ok(Value::Null),
                            },
                        };
                        Ok(num_val(funcs::round(x, k)?))
                    }),
                )
            }
            "greatest" | "least" | "coalesce" => {
                let cs: Vec<C> = std::iter::from_fn(|| next().ok()).collect();
                let tys: Vec<Ty> = cs.iter().map(|c| c.ty).collect();
                let ty = result_ty(unify(&name, &tys)?, &tys);
                let mut fs = Vec::with_capacity(cs.len());
                for c in cs {
                    fs.push(self.result_arm(c, ty)?);
                }
                if name == "coalesce" {
                    other(
                        ty,
                        Box::new(move |r| {
                            for f in &fs {
                                let v = f(r)?;
                                if !v.is_null() {
                                    return Ok(v);
                                }
                            }
                            Ok(Value::Null)
                        }),
                    )
                } else {
                    let want = if name == "greatest" {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    };
                    other(
                        ty,
                        Box::new(move |r| {
                            let mut best = Value::Null;
                            for f in &fs {
                                let v = f(r)?;
                                if v.is_null() {
                                    continue;
                                }
                                if best.is_null() || compare(ty, &v, &best) == Some(want) {
                                    best = v;
                                }
                            }
                            Ok(best)
                        }),
                    )
                }
            }
            "nullif" => {
                let a = next()?;
                let b = next()?;
                let ty = unify("nullif", &[a.ty, b.ty])?;
                let keep_ty = result_ty(ty, &[a.ty]);
                let a = self.result_arm(a, keep_ty)?;
                let b = self.coerce_to(b, ty, "nullif")?.f;
                other(
                    keep_ty,
                    Box::new(move |r| {
                        let x = a(r)?;
                        let y = b(r)?;
                        Ok(if compare(ty, &x, &y) == Some(Ordering::Equal) {
                            Value::Null
                        } else {
                            x
                        })
                    }),
                )
            }
            "concat" => {
                let mut srcs = Vec::new();
                while let Ok(c) = next() {
                    srcs.push(self.text_src(c, "concat", true)?);
                }
                other(
                    Ty::Text,
                    Box::new(move |r| {
                        let mut out = Vec::new();
                        for s in &srcs {
                            if let Some(t) = s.get(r)? {
                                out.extend_from_slice(&t);
                            }
                        }
                        Ok(Value::Text(Cow::Owned(out)))
                    }),
                )
            }
            "lower" | "upper" => {
                let s = next()?;
                let s = self.text_src(s, &name, false)?;
                let up = name == "upper";
                other(
                    Ty::Text,
                    Box::new(move |r| {
                        Ok(text_val(s.get(r)?.map(|t| {
                            Cow::Owned(if up {
                                funcs::upper(&t)
                            } else {
                                funcs::lower(&t)
                            })
                        })))
                    }),
                )
            }
            "length" | "char_length" | "character_length" => {
                let s = next()?;
                let s = self.text_src(s, &name, false)?;
                other(
                    Ty::Num,
                    Box::new(move |r| {
                        Ok(s.get(r)?
                            .map_or(Value::Null, |t| Value::Int(funcs::char_len(&t) as i64)))
                    }),
                )
            }
            "substr" | "substring" => {
                let s = next()?;
                let from = next()?;
                let count = if n == 3 { Some(next()?) } else { None };
                self.substr(s, from, count)?
            }
            "trim" | "btrim" | "ltrim" | "rtrim" => {
                let s = next()?;
                let set = if n == 2 { Some(next()?) } else { None };
                self.trim(s, set, name != "rtrim", name != "ltrim")?
            }
            "strpos" => {
                let hay = next()?;
                let needle = next()?;
                self.strpos(hay, needle)?
            }
            "starts_with" => {
                let s = next()?;
                let p = next()?;
                let s = self.text_src(s, &name, false)?;
                let p = self.text_src(p, &name, false)?;
                other(
                    Ty::Bool,
                    Box::new(move |r| {
                        let (Some(s), Some(p)) = (s.get(r)?, p.get(r)?) else {
                            return Ok(Value::Null);
                        };
                        Ok(Value::Bool(s.starts_with(&p)))
                    }),
                )
            }
            "left" | "right" => {
                let s = next()?;
                let k = next()?;
                let s = self.text_src(s, &name, false)?;
                let k = self.num_src(k, &name)?;
                let is_left = name == "left";
                other(
                    Ty::Text,
                    Box::new(move |r| {
                        let Some(t) = s.get(r)? else {
                            return Ok(Value::Null);
                        };
                        let k = match k.get(r)? {
                            Num::Int(k) => k,
                            Num::Float(x) => funcs::f64_to_i64(x)?,
                            Num::Null => return Ok(Value::Null),
                        };
                        let part = if is_left {
                            funcs::left(&t, k)
                        } else {
                            funcs::right(&t, k)
                        };
                        Ok(Value::Text(Cow::Owned(part.to_vec())))
                    }),
                )
            }
            "replace" => {
                let s = next()?;
                let a = next()?;
                let b = next()?;
                let s = self.text_src(s, &name, false)?;
                let a = self.text_src(a, &name, false)?;
                let b = self.text_src(b, &name, false)?;
                other(
                    Ty::Text,
                    Box::new(move |r| {
                        let (Some(s), Some(a), Some(b)) = (s.get(r)?, a.get(r)?, b.get(r)?) else {
                            return Ok(Value::Null);
                        };
                        Ok(Value::Text(Cow::Owned(funcs::replace(&s, &a, &b))))
                    }),
                )
            }
            "split_part" => {
                let s = next()?;
                let dl = next()?;
                let k = next()?;
                let s = self.text_src(s, &name, false)?;
                let dl = self.text_src(dl, &name, false)?;
                let k = self.num_src(k, &name)?;
                other(
                    Ty::Text,
                    Box::new(move |r| {
                        let (Some(s), Some(dl)) = (s.get(r)?, dl.get(r)?) else {
                            return Ok(Value::Null);
                        };
                        let k = match k.get(r)? {
                            Num::Int(k) => k,
                            Num::Float(x) => funcs::f64_to_i64(x)?,
                            Num::Null => return Ok(Value::Null),
                        };
                        Ok(Value::Text(Cow::Owned(
                            funcs::split_part(&s, &dl, k)?.to_vec(),
                        )))
                    }),
                )
            }
            _ => return Err(PlanError::UnknownFunction(name)),
        })
    }

    fn num_fn1(&mut self, name: &str, c: C) -> Result<C, PlanError> {
        let s = self.num_src(c, name)?;
        let op: fn(Num) -> Result<Num, EvalError> = match name {
            "abs" => funcs::abs,
            "floor" => |n| Ok(funcs::floor(n)),
            "ceil" | "ceiling" => |n| Ok(funcs::ceil(n)),
            "sqrt" => funcs::sqrt,
            "ln" => funcs::ln,
            "log10" => |n| funcs::log(Num::Int(10), n),
            "exp" => funcs::exp,
            "sign" => |n| {
                Ok(match n {
                    Num::Int(i) => Num::Int(i.signum()),
                    Num::Float(f) if f == 0.0 || f.is_nan() => Num::Float(f),
                    Num::Float(f) => Num::Float(f.signum()),
                    Num::Null => Num::Null,
                })
            },
            _ => return Err(PlanError::UnknownFunction(name.into())),
        };
        Ok(other(
            Ty::Num,
            Box::new(move |r| Ok(num_val(op(s.get(r)?)?))),
        ))
    }

    fn substr(&mut self, s: C, from: C, count: Option<C>) -> Result<C, PlanError> {
        let s = self.text_src(s, "substr", false)?;
        let from = self.num_src(from, "substr")?;
        let count = match count {
            Some(c) => Some(self.num_src(c, "substr")?),
            None => None,
        };
        let int = |n: Num| -> Result<Option<i64>, EvalError> {
            match n {
                Num::Int(i) => Ok(Some(i)),
                Num::Float(x) => funcs::f64_to_i64(x).map(Some),
                Num::Null => Ok(None),
            }
        };
        Ok(other(
            Ty::Text,
            Box::new(move |r| {
                let Some(t) = s.get(r)? else {
                    return Ok(Value::Null);
                };
                let Some(f) = int(from.get(r)?)? else {
                    return Ok(Value::Null);
                };
                let c = match &count {
                    None => None,
                    Some(c) => match int(c.get(r)?)? {
                        None => return Ok(Value::Null),
                        k => k,
                    },
                };
                Ok(Value::Text(Cow::Owned(funcs::substr(&t, f, c)?.to_vec())))
            }),
        ))
    }

    fn trim(&mut self, s: C, set: Option<C>, lead: bool, trail: bool) -> Result<C, PlanError> {
        let s = self.text_src(s, "trim", false)?;
        let set = match set {
            Some(c) => Some(self.text_src(c, "trim", false)?),
            None => None,
        };
        Ok(other(
            Ty::Text,
            Box::new(move |r| {
                let Some(t) = s.get(r)? else {
                    return Ok(Value::Null);
                };
                let chars = match &set {
                    None => None,
                    Some(c) => match c.get(r)? {
                        None => return Ok(Value::Null),
                        Some(c) => Some(c),
                    },
                };
                Ok(Value::Text(Cow::Owned(
                    funcs::trim(&t, chars.as_deref(), lead, trail).to_vec(),
                )))
            }),
        ))
    }

    fn strpos(&mut self, hay: C, needle: C) -> Result<C, PlanError> {
        let h = self.text_src(hay, "strpos", false)?;
        let n = self.text_src(needle, "strpos", false)?;
        Ok(other(
            Ty::Num,
            Box::new(move |r| {
                let (Some(h), Some(n)) = (h.get(r)?, n.get(r)?) else {
                    return Ok(Value::Null);
                };
                Ok(Value::Int(funcs::strpos(&h, &n)))
            }),
        ))
    }
}

/// Names refused with the "windows and aggregates" message.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "variance",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "tumble",
    "hop",
    "session",
];

/// The type of a CASE/COALESCE result: unknown stays unknown (raw text that
/// adapts to the context) when every arm is unknown or NULL.
fn result_ty(unified: Ty, tys: &[Ty]) -> Ty {
    if tys.iter().all(|t| matches!(t, Ty::Unknown | Ty::Null)) {
        if tys.iter().all(|t| *t == Ty::Null) {
            Ty::Null
        } else {
            Ty::Unknown
        }
    } else {
        unified
    }
}

enum JsonStep {
    Key(String),
    Index(i64),
}

fn json_step(e: &Expr) -> Result<JsonStep, PlanError> {
    let e = match e {
        Expr::Nested(inner) => inner,
        e => e,
    };
    if let Expr::Value(v) = e {
        match &v.value {
            SqlValue::SingleQuotedString(s) => return Ok(JsonStep::Key(s.clone())),
            SqlValue::Number(n, _) => {
                if let Ok(i) = n.parse::<i64>() {
                    return Ok(JsonStep::Index(i));
                }
            }
            _ => {}
        }
    }
    Err(PlanError::Unsupported(format!(
        "JSON key {e}: keys must be string or integer constants"
    )))
}

/// Compares two values of the unified type `ty`; `None` when either is NULL.
pub(crate) fn compare(ty: Ty, a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    let n = |v: &Value<'_>| match v {
        Value::Int(i) => Num::Int(*i),
        Value::Float(f) => Num::Float(*f),
        Value::Text(t) if ty == Ty::Num => parse_num(t),
        _ => Num::Null,
    };
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) if ty != Ty::Num => Some(x.as_ref().cmp(y.as_ref())),
        _ if ty == Ty::Num => cmp_num(n(a), n(b)),
        (x, y) => {
            let x = x.to_bytes()?;
            let y = y.to_bytes()?;
            Some(x.cmp(&y))
        }
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn literal(v: &SqlValue) -> Result<Value<'static>, PlanError> {
    Ok(match v {
        SqlValue::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                Value::Int(i)
            } else {
                match n.parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Float(f),
                    _ => return Err(PlanError::Type(format!("number out of range: {n}"))),
                }
            }
        }
        SqlValue::SingleQuotedString(s)
        | SqlValue::EscapedStringLiteral(s)
        | SqlValue::DoubleQuotedString(s) => Value::Text(Cow::Owned(s.clone().into_bytes())),
        SqlValue::Boolean(b) => Value::Bool(*b),
        SqlValue::Null => Value::Null,
        other => return Err(PlanError::Unsupported(format!("literal {other}"))),
    })
}

/// Positional argument expressions of a function call.
pub(crate) fn function_args(f: &Function) -> Result<Vec<&Expr>, PlanError> {
    let name = f.name.to_string();
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return Err(PlanError::WindowsAndAggregates);
    }
    if !matches!(f.parameters, FunctionArguments::None) {
        return Err(PlanError::Unsupported(format!("parameters of {name}")));
    }
    let list = match &f.args {
        FunctionArguments::None => return Ok(Vec::new()),
        FunctionArguments::Subquery(_) => return Err(PlanError::Unsupported("subqueries".into())),
        FunctionArguments::List(l) => l,
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(PlanError::Unsupported(format!("{f}")));
    }
    if list.args.len() > MAX_LIST {
        return Err(PlanError::TooLarge(format!(
            "more than {MAX_LIST} arguments"
        )));
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(PlanError::Unsupported(format!("argument {a} of {name}"))),
        })
        .collect()
}
