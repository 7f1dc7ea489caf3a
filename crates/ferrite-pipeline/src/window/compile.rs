//! A grouped `SELECT` (GROUP BY, aggregates, HAVING) → [`WindowOp`].
//!
//! The SELECT list and HAVING are rewritten over the window's internal
//! result record: each aggregate call becomes the field `__a<j>`, each
//! GROUP BY expression `__k<i>`; `window_start` and `window_end` stay.
//! The rewritten expressions are then compiled by the ordinary expression
//! compiler, so any expression over aggregates and keys works
//! (`sum(v) / count(*) AS mean`, `HAVING count(*) > 2`).

use super::agg::{Agg, AggKind};
use super::{AggArgs, OutSrc, Output, WindowKind, WindowOp, WindowOptions};
use crate::entry::SlotTable;
use crate::error::PlanError;
use crate::expr::{Compiler, Ty, MAX_LIST};
use crate::ops::{OutCol, Project};
use crate::plan::OutputField;
use bytes::Bytes;
use sqlparser::ast::{
    DateTimeField, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, Select, SelectItem, Value as SqlValue,
};

/// Whether a SELECT needs the window operator: GROUP BY, HAVING or an
/// aggregate call anywhere in the SELECT list.
pub(crate) fn is_grouped(sel: &Select) -> bool {
    let grouped = match &sel.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
    };
    grouped
        || sel.having.is_some()
        || sel.projection.iter().any(|p| match p {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                mentions_aggregate(e)
            }
            _ => false,
        })
}

fn mentions_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = rewrite(e, 0, &mut |x| {
        if let Expr::Function(f) = x {
            if agg_name(f).is_some() {
                found = true;
            }
        }
        Ok(None)
    });
    found
}

fn fn_name(f: &Function) -> String {
    f.name.to_string().to_ascii_lowercase()
}

fn agg_name(f: &Function) -> Option<String> {
    let n = fn_name(f);
    AggKind::by_name(&n, false).map(|_| n)
}

fn is_window_fn(f: &Function) -> bool {
    matches!(
        fn_name(f).as_str(),
        "tumble" | "hop" | "session" | "count_window"
    )
}

/// Copies `e`, replacing the nodes for which `f` returns a replacement;
/// refuses node kinds it does not know (it could not see what they hold).
fn rewrite(
    e: &Expr,
    depth: usize,
    f: &mut dyn FnMut(&Expr) -> Result<Option<Expr>, PlanError>,
) -> Result<Expr, PlanError> {
    if depth > crate::expr::MAX_DEPTH {
        return Err(PlanError::TooLarge("expression nested too deeply".into()));
    }
    if let Some(r) = f(e)? {
        return Ok(r);
    }
    let d = depth + 1;
    let mut go = |x: &Expr| rewrite(x, d, f).map(Box::new);
    Ok(match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => e.clone(),
        Expr::Nested(x) => Expr::Nested(go(x)?),
        Expr::UnaryOp { op, expr } => Expr::UnaryOp {
            op: *op,
            expr: go(expr)?,
        },
        Expr::BinaryOp { left, op, right } => Expr::BinaryOp {
            left: go(left)?,
            op: op.clone(),
            right: go(right)?,
        },
        Expr::IsNull(x) => Expr::IsNull(go(x)?),
        Expr::IsNotNull(x) => Expr::IsNotNull(go(x)?),
        Expr::IsTrue(x) => Expr::IsTrue(go(x)?),
        Expr::IsFalse(x) => Expr::IsFalse(go(x)?),
        Expr::IsNotTrue(x) => Expr::IsNotTrue(go(x)?),
        Expr::IsNotFalse(x) => Expr::IsNotFalse(go(x)?),
        Expr::Cast {
            kind,
            expr,
            data_type,
            format,
        } => Expr::Cast {
            kind: kind.clone(),
            expr: go(expr)?,
            data_type: data_type.clone(),
            format: format.clone(),
        },
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => Expr::Between {
            expr: go(expr)?,
            negated: *negated,
            low: go(low)?,
            high: go(high)?,
        },
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::List(list),
            negated,
            global,
        } => {
            let mut l = Vec::with_capacity(list.len());
            for x in list {
                l.push(*go(x)?);
            }
            Expr::In {
                expr: go(expr)?,
                target: sqlparser::ast::InTarget::List(l),
                negated: *negated,
                global: *global,
            }
        }
        Expr::Case {
            case_token,
            end_token,
            operand,
            conditions,
            else_result,
        } => {
            let mut cs = Vec::with_capacity(conditions.len());
            for c in conditions {
                cs.push(sqlparser::ast::CaseWhen {
                    condition: *go(&c.condition)?,
                    result: *go(&c.result)?,
                });
            }
            Expr::Case {
                case_token: case_token.clone(),
                end_token: end_token.clone(),
                operand: match operand {
                    Some(o) => Some(go(o)?),
                    None => None,
                },
                conditions: cs,
                else_result: match else_result {
                    Some(o) => Some(go(o)?),
                    None => None,
                },
            }
        }
        Expr::Function(func) => {
            let mut func = func.clone();
            if let FunctionArguments::List(l) = &mut func.args {
                for a in &mut l.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                        *x = *go(x)?;
                    }
                }
            }
            Expr::Function(func)
        }
        other => {
            return Err(PlanError::Unsupported(format!(
                "{other} in a grouped SELECT or HAVING (use arithmetic, CASE, CAST, comparisons and functions over keys and aggregates)"
            )))
        }
    })
}

/// A window size: `INTERVAL '1' MINUTE`, `INTERVAL '30 seconds'`, or a
/// plain number of milliseconds.
fn duration(e: &Expr, what: &str) -> Result<i64, PlanError> {
    let bad = || {
        PlanError::Invalid(format!(
            "{what} must be a positive INTERVAL (e.g. INTERVAL '1' MINUTE) or milliseconds, got {e}"
        ))
    };
    let ms = match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.parse::<i64>().map_err(|_| bad())?,
            SqlValue::SingleQuotedString(s) => parse_duration(s).ok_or_else(bad)?,
            _ => return Err(bad()),
        },
        Expr::Interval(iv) => {
            if iv.last_field.is_some() || iv.fractional_seconds_precision.is_some() {
                return Err(bad());
            }
            let text = match iv.value.as_ref() {
                Expr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) => s.clone(),
                    SqlValue::Number(n, _) => n.clone(),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            };
            match &iv.leading_field {
                None => parse_duration(&text).ok_or_else(bad)?,
                Some(f) => {
                    let unit = match f {
                        DateTimeField::Millisecond | DateTimeField::Milliseconds => 1,
                        DateTimeField::Second | DateTimeField::Seconds => 1000,
                        DateTimeField::Minute | DateTimeField::Minutes => 60_000,
                        DateTimeField::Hour | DateTimeField::Hours => 3_600_000,
                        DateTimeField::Day | DateTimeField::Days => 86_400_000,
                        _ => return Err(bad()),
                    };
                    let n: i64 = text.trim().parse().map_err(|_| bad())?;
                    n.checked_mul(unit).ok_or_else(bad)?
                }
            }
        }
        _ => return Err(bad()),
    };
    if ms <= 0 || ms > super::MAX_EVENT_TIME / 4 {
        return Err(bad());
    }
    Ok(ms)
}

/// A number of entries: a positive integer up to 1,000,000.
fn entries(e: &Expr, what: &str) -> Result<i64, PlanError> {
    let n = match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    match n {
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(PlanError::Invalid(format!(
            "{what} must be a number of entries from 1 to 1000000, got {e}"
        ))),
    }
}

/// `500`, `500ms`, `2s`, `1m`, `1h`, `1d`, `30 seconds`, `1 minute`, ...:
/// milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult = match unit.as_str() {
        "" | "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "second" | "seconds" => 1000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// What the grouped compile gives back to the statement compiler.
pub(crate) struct Grouped {
    pub op: WindowOp,
    pub schema: Vec<OutputField>,
}

/// Compiles GROUP BY, the aggregates, HAVING and the SELECT list.
pub(crate) fn compile(
    sel: &Select,
    comp: &mut Compiler<'_>,
    opts: &WindowOptions,
) -> Result<Grouped, PlanError> {
    let exprs: Vec<&Expr> = match &sel.group_by {
        GroupByExpr::All(_) => {
            return Err(PlanError::Unsupported("GROUP BY ALL: name the keys".into()))
        }
        GroupByExpr::Expressions(e, m) => {
            if !m.is_empty() {
                return Err(PlanError::Unsupported(
                    "GROUP BY modifiers (ROLLUP, CUBE, GROUPING SETS)".into(),
                ));
            }
            e.iter().collect()
        }
    };
    if exprs.len() > 64 {
        return Err(PlanError::TooLarge("more than 64 GROUP BY keys".into()));
    }
    let mut kind = WindowKind::Running;
    let mut time_expr: Option<&Expr> = None;
    let mut window_text = String::from("running aggregate per key");
    let mut key_exprs: Vec<&Expr> = Vec::new();
    for e in exprs {
        let f = match e {
            Expr::Function(f) if is_window_fn(f) => f,
            other => {
                key_exprs.push(other);
                continue;
            }
        };
        if kind != WindowKind::Running {
            return Err(PlanError::Unsupported(
                "more than one window in GROUP BY".into(),
            ));
        }
        let args = crate::expr::function_args(f)?;
        let name = fn_name(f);
        if name == "count_window" {
            if args.is_empty() || args.len() > 2 {
                return Err(PlanError::WrongArity {
                    function: name,
                    expected: "1 or 2",
                    got: args.len(),
                });
            }
            let n = entries(args[0], "COUNT_WINDOW's size")?;
            let slide = match args.get(1) {
                Some(a) => entries(a, "COUNT_WINDOW's slide")?,
                None => n,
            };
            if slide > n {
                return Err(PlanError::Invalid(format!(
                    "COUNT_WINDOW({n}, {slide}): the slide must not exceed the size"
                )));
            }
            let pane = gcd(n, slide);
            if n / pane > 100_000 {
                return Err(PlanError::Invalid(format!(
                    "COUNT_WINDOW({n}, {slide}) needs {} panes per window (at most 100000): choose a size that is a multiple of the slide",
                    n / pane
                )));
            }
            window_text = format!("COUNT_WINDOW(size {n} entries, slide {slide}, panes of {pane})");
            kind = WindowKind::Count { n, slide, pane };
            continue;
        }
        let want = if name == "hop" { 3 } else { 2 };
        if args.len() != want {
            return Err(PlanError::WrongArity {
                function: name,
                expected: if want == 3 { "3" } else { "2" },
                got: args.len(),
            });
        }
        time_expr = Some(args[0]);
        kind = match name.as_str() {
            "tumble" => {
                let size = duration(args[1], "TUMBLE's size")?;
                window_text = format!("TUMBLE(size {size} ms)");
                WindowKind::Hop {
                    size,
                    slide: size,
                    pane: size,
                }
            }
            "hop" => {
                let slide = duration(args[1], "HOP's slide")?;
                let size = duration(args[2], "HOP's size")?;
                let pane = gcd(size, slide);
                if size / pane > 100_000 {
                    return Err(PlanError::Invalid(format!(
                        "HOP(slide {slide} ms, size {size} ms) needs {} panes per window (at most 100000): choose a size that is a multiple of the slide",
                        size / pane
                    )));
                }
                window_text = format!("HOP(slide {slide} ms, size {size} ms, panes of {pane} ms)");
                WindowKind::Hop { size, slide, pane }
            }
            _ => {
                let gap = duration(args[1], "SESSION's gap")?;
                window_text = format!("SESSION(gap {gap} ms)");
                WindowKind::Session { gap }
            }
        };
    }
    let windowed = kind != WindowKind::Running;
    let counted = matches!(kind, WindowKind::Count { .. });
    if counted
        && (opts.lateness_ms > 0
            || opts.watermark_ms > 0
            || opts.late_stream.is_some()
            || opts.idle_ms > 0
            || opts.emit != super::Emit::Final)
    {
        return Err(PlanError::Invalid(
            "WATERMARK, LATENESS, LATE, IDLE and EMIT UPDATES do not apply to COUNT_WINDOW (a window closes when it is full)".into(),
        ));
    }
    if !windowed
        && (opts.lateness_ms > 0
            || opts.watermark_ms > 0
            || opts.late_stream.is_some()
            || opts.idle_ms > 0)
    {
        return Err(PlanError::Invalid(
            "WATERMARK, LATENESS, LATE and IDLE apply to windows: GROUP BY ..., TUMBLE|HOP|SESSION(time, ...)".into(),
        ));
    }
    // Event time.
    let (time, time_text) = match time_expr {
        None => (None, "_ms".to_string()),
        Some(Expr::Identifier(i)) if i.value == "_ms" => (None, "_ms".to_string()),
        Some(e) => {
            let c = comp.expr(e, 0)?;
            (Some(comp.num_src(c, "the event time")?), e.to_string())
        }
    };
    // Keys.
    let mut keys = Vec::with_capacity(key_exprs.len());
    let key_text: Vec<String> = key_exprs.iter().map(|e| e.to_string()).collect();
    for e in &key_exprs {
        let c = comp.expr(e, 0)?;
        keys.push(comp.text_src(c, "a GROUP BY key", true)?);
    }
    // The SELECT list and HAVING over the result record.
    let mut aggs: Vec<(AggKind, String, Vec<Expr>, f64)> = Vec::new();
    let mut replace = |x: &Expr| -> Result<Option<Expr>, PlanError> {
        let t = x.to_string();
        if let Some(i) = key_text.iter().position(|k| *k == t) {
            return Ok(Some(Expr::Identifier(Ident::new(format!("__k{i}")))));
        }
        match x {
            Expr::Function(f) if is_window_fn(f) => Err(PlanError::Unsupported(format!(
                "{x} outside GROUP BY: select window_start and window_end"
            ))),
            Expr::Function(f) if agg_name(f).is_some() => {
                let (kind, args, p) = agg_call(f)?;
                if kind == AggKind::Twap && !windowed {
                    return Err(PlanError::Invalid(
                        "twap needs a window: GROUP BY ..., TUMBLE|HOP|SESSION(time, ...)".into(),
                    ));
                }
                let j = match aggs.iter().position(|(_, text, _, _)| *text == t) {
                    Some(j) => j,
                    None => {
                        if aggs.len() >= MAX_LIST {
                            return Err(PlanError::TooLarge("too many aggregates".into()));
                        }
                        aggs.push((kind, t, args, p));
                        aggs.len() - 1
                    }
                };
                Ok(Some(Expr::Identifier(Ident::new(format!("__a{j}")))))
            }
            Expr::Identifier(i)
                if windowed && (i.value == "window_start" || i.value == "window_end") =>
            {
                Ok(None)
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Err(PlanError::Invalid(format!(
                "field {x} must appear in GROUP BY or be used in an aggregate{}",
                if windowed {
                    ""
                } else {
                    " (window_start and window_end need a window)"
                }
            ))),
            _ => Ok(None),
        }
    };
    let mut items = Vec::with_capacity(sel.projection.len());
    for item in &sel.projection {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => {
                return Err(PlanError::Unsupported(
                    "* in a grouped SELECT: name the keys and aggregates".into(),
                ))
            }
        };
        let name = match (alias, e) {
            (Some(a), _) => a,
            (None, Expr::Identifier(i)) => i.value.clone(),
            (None, Expr::Function(f)) => fn_name(f),
            (None, e) => return Err(PlanError::NeedsAlias(e.to_string())),
        };
        items.push((name, rewrite(e, 0, &mut replace)?, e.to_string()));
    }
    let having = match &sel.having {
        Some(h) => Some(rewrite(h, 0, &mut replace)?),
        None => None,
    };
    if aggs.is_empty() && key_exprs.is_empty() {
        return Err(PlanError::Invalid(
            "a grouped SELECT needs keys or aggregates".into(),
        ));
    }
    // Aggregates and their arguments, over the input row.
    let mut width = 0;
    let mut ops = Vec::with_capacity(aggs.len());
    let mut args = Vec::with_capacity(aggs.len());
    let mut nvar = 0;
    for (kind, _, a, p) in &aggs {
        let mut agg = Agg::new(*kind, width);
        agg.p = *p;
        if kind.has_ext() {
            agg.ext = nvar;
            nvar += 1;
        }
        ops.push(agg);
        width += kind.width();
        let mut aa = AggArgs {
            a: None,
            b: None,
            present: None,
        };
        match kind {
            AggKind::CountStar => {}
            AggKind::Count | AggKind::CountDistinct => {
                let c = comp.expr(&a[0], 0)?;
                aa.present = Some(comp.text_src(c, "count", true)?);
            }
            _ => {
                let c = comp.expr(&a[0], 0)?;
                aa.a = Some(comp.num_src(c, kind.name())?);
                if let Some(b) = a.get(1) {
                    let c = comp.expr(b, 0)?;
                    aa.b = Some(comp.num_src(c, kind.name())?);
                }
            }
        }
        args.push(aa);
    }
    // The output over the result record.
    let mut out_slots = SlotTable::default();
    let mut oc = Compiler::new(&mut out_slots, Vec::new());
    let having = match having {
        Some(h) => Some(oc.condition(&h, 0)?),
        None => None,
    };
    let mut cols = Vec::with_capacity(items.len());
    let mut schema = Vec::with_capacity(items.len());
    let mut texts = Vec::with_capacity(items.len());
    for (name, e, text) in items {
        let c = oc.expr(&e, 0)?;
        let is_agg_or_time = matches!(&e, Expr::Identifier(i) if i.value.starts_with("__a") || i.value.starts_with("window_"));
        schema.push(OutputField {
            name: name.clone(),
            ty: if is_agg_or_time {
                "number"
            } else if c.ty == Ty::Unknown {
                "field"
            } else {
                c.ty.name()
            },
        });
        if name.is_empty() {
            return Err(PlanError::Invalid("empty output field name".into()));
        }
        let nb = Bytes::from(name);
        cols.push(match c.field_slot() {
            Some(slot) => OutCol::Field { name: nb, slot },
            None => OutCol::Expr {
                name: nb,
                eval: c.f,
            },
        });
        texts.push(text);
    }
    for (i, a) in schema.iter().enumerate() {
        if a.name == "_rev" || schema[..i].iter().any(|b| b.name == a.name) {
            return Err(PlanError::Invalid(format!(
                "output field {} appears twice (or is _rev, which revisions add); rename it with AS",
                a.name
            )));
        }
    }
    drop(oc);
    // Each column a bare field of the internal record: the output layout is
    // fixed here (Output::direct).
    let direct = if having.is_none() {
        cols.iter()
            .map(|c| match c {
                OutCol::Field { name, slot } => out_slots
                    .names
                    .get(*slot)
                    .and_then(|n| OutSrc::of(n))
                    .filter(|src| match *src {
                        OutSrc::Key(i) => i < key_exprs.len(),
                        OutSrc::Agg(j) => j < aggs.len(),
                        OutSrc::Start | OutSrc::End => true,
                    })
                    .map(|src| (name.clone(), src)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
    } else {
        None
    };
    let project = Project {
        width: cols.len().max(1),
        text: texts.join(", "),
        cols,
        unnest: None,
        arena: bytes::BytesMut::new(),
    };
    let mut text = format!(
        "Window {window_text} time {time_text} keys [{}] aggregates [{}]",
        key_text.join(", "),
        aggs.iter()
            .map(|(_, t, _, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(h) = &sel.having {
        text.push_str(&format!(" having {h}"));
    }
    if counted {
        // The window's first and last event times.
        width += 2;
    }
    let emit = match opts.emit {
        super::Emit::Final if windowed => "emit final".to_string(),
        super::Emit::Final => "emit updates per batch".to_string(),
        super::Emit::Updates { every_ms: 0 } => "emit updates per batch".to_string(),
        super::Emit::Updates { every_ms } => format!("emit updates every {every_ms} ms"),
    };
    if counted {
        text.push_str(" emit when full");
    } else if windowed {
        text.push_str(&format!(
            " watermark {} ms lateness {} ms {emit}{}",
            opts.watermark_ms,
            opts.lateness_ms,
            match &opts.late_stream {
                Some(s) => format!(" late -> {s}"),
                None => " late: dropped and counted".into(),
            }
        ));
        if opts.idle_ms > 0 {
            text.push_str(&format!(" idle {} ms", opts.idle_ms));
        }
    } else {
        text.push_str(&format!(" {emit}"));
    }
    text.push_str(&format!(
        " state {} bytes per row, limit {} bytes",
        (super::hdr_of(kind) + width) * 8,
        opts.state_limit
    ));
    let op = WindowOp::new(
        kind,
        opts.clone(),
        time,
        keys,
        ops,
        args,
        width,
        Output {
            slots: out_slots,
            having,
            project,
            direct,
        },
        text,
    );
    Ok(Grouped { op, schema })
}

/// A percentile's fraction: a constant in [0, 1].
fn fraction(e: &Expr, f: &Function) -> Result<f64, PlanError> {
    let bad = || {
        PlanError::Invalid(format!(
            "{f}: the percentile must be a constant between 0 and 1"
        ))
    };
    let text = match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.clone(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let p: f64 = text.parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&p) {
        return Err(bad());
    }
    Ok(p)
}

/// An aggregate call: its kind, its arguments over the input row, and a
/// percentile's fraction.
fn agg_call(f: &Function) -> Result<(AggKind, Vec<Expr>, f64), PlanError> {
    let name = fn_name(f);
    if f.over.is_some() {
        return Err(PlanError::WindowsAndAggregates);
    }
    if f.filter.is_some() {
        return Err(PlanError::Unsupported(format!("{f}: FILTER on aggregates")));
    }
    let FunctionArguments::List(l) = &f.args else {
        return Err(PlanError::Unsupported(format!("{f}")));
    };
    if name == "percentile_cont" {
        // percentile_cont(p) WITHIN GROUP (ORDER BY x), as PostgreSQL.
        let ([FunctionArg::Unnamed(FunctionArgExpr::Expr(p))], [o]) =
            (l.args.as_slice(), f.within_group.as_slice())
        else {
            return Err(PlanError::Invalid(format!(
                "{f}: write percentile_cont(p) WITHIN GROUP (ORDER BY x)"
            )));
        };
        if !matches!(
            o.options.sort,
            None | Some(sqlparser::ast::OrderBySort::Asc)
        ) || l.duplicate_treatment.is_some()
            || !l.clauses.is_empty()
        {
            return Err(PlanError::Unsupported(format!(
                "{f}: DESC, DISTINCT or clauses in a percentile"
            )));
        }
        if mentions_aggregate(&o.expr) {
            return Err(PlanError::Invalid(format!(
                "aggregate calls cannot be nested: {f}"
            )));
        }
        return Ok((AggKind::Percentile, vec![o.expr.clone()], fraction(p, f)?));
    }
    if !f.within_group.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "{f}: WITHIN GROUP belongs to percentile_cont"
        )));
    }
    if matches!(l.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
        if name != "count" {
            return Err(PlanError::Unsupported(format!(
                "{name}(DISTINCT ...): only count(DISTINCT x)"
            )));
        }
        match l.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] if l.clauses.is_empty() => {
                if mentions_aggregate(e) {
                    return Err(PlanError::Invalid(format!(
                        "aggregate calls cannot be nested: {f}"
                    )));
                }
                return Ok((AggKind::CountDistinct, vec![e.clone()], 0.5));
            }
            _ => {
                return Err(PlanError::WrongArity {
                    function: "count(DISTINCT ...)".into(),
                    expected: "1",
                    got: l.args.len(),
                })
            }
        }
    }
    if !l.clauses.is_empty() {
        return Err(PlanError::Unsupported(format!("{f}")));
    }
    let star = matches!(
        l.args.as_slice(),
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
    );
    let kind =
        AggKind::by_name(&name, star).ok_or_else(|| PlanError::UnknownFunction(name.clone()))?;
    if star && kind != AggKind::CountStar {
        return Err(PlanError::Unsupported(format!("{name}(*)")));
    }
    let mut args = Vec::new();
    if !star {
        for a in &l.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                    if mentions_aggregate(e) {
                        return Err(PlanError::Invalid(format!(
                            "aggregate calls cannot be nested: {f}"
                        )));
                    }
                    args.push(e.clone())
                }
                _ => return Err(PlanError::Unsupported(format!("argument {a} of {name}"))),
            }
        }
    }
    let mut p = 0.5;
    if name == "percentile" {
        // percentile(x, p).
        if args.len() != 2 {
            return Err(PlanError::WrongArity {
                function: name,
                expected: "2",
                got: args.len(),
            });
        }
        p = fraction(&args[1], f)?;
        args.truncate(1);
    }
    if args.len() != kind.arity() {
        return Err(PlanError::WrongArity {
            function: name,
            expected: match kind.arity() {
                0 => "0 (*)",
                1 => "1",
                _ => "2",
            },
            got: args.len(),
        });
    }
    Ok((kind, args, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500"), Some(500));
        assert_eq!(parse_duration("2s"), Some(2000));
        assert_eq!(parse_duration("1 minute"), Some(60_000));
        assert_eq!(parse_duration("3h"), Some(10_800_000));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
