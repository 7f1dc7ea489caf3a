//! `INSERT INTO sink SELECT ... FROM source [WHERE ...]` → operator chain.

use crate::entry::SlotTable;
use crate::error::PlanError;
use crate::expr::{ArrayEval, Compiler, Ty, MAX_LIST};
use crate::funcs;
use crate::ops::{Filter, OutCol, Project};
use crate::plan::{OutputField, Schema};
use bytes::Bytes;
use sqlparser::ast::{Expr, Query, SelectItem, SetExpr, Statement, TableFactor, TableObject};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Longest statement accepted, in bytes. Bounds the parser's work and the
/// depth of left-deep operator chains (`1+1+...`) that it builds without
/// recursing.
pub const MAX_SQL_LEN: usize = 16 * 1024;

/// `INSERT INTO HASH prefix [TTL d]`: each result is written to the hash
/// `prefix:<key>` (the GROUP BY key values joined by `:`), replacing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSink {
    /// The key prefix.
    pub prefix: String,
    /// TTL: each written hash expires this long after its last result, ms.
    pub ttl_ms: Option<u64>,
}

/// Takes `HASH prefix [TTL d]` out of `INSERT INTO HASH prefix [TTL d]
/// SELECT ...`, which is not SQL, and gives back the statement with the
/// prefix as an ordinary (quoted) target. `INSERT INTO hash SELECT ...`
/// (a stream named hash) is left alone.
pub(crate) fn split_hash_sink(sql: &str) -> Result<(Option<HashSink>, String), PlanError> {
    fn word(s: &str) -> (&str, &str) {
        let s = s.trim_start();
        let end = s
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(s.len());
        (&s[..end], &s[end..])
    }
    let (insert, rest) = word(sql);
    let (into, rest) = word(rest);
    let (hash, rest) = word(rest);
    if !insert.eq_ignore_ascii_case("INSERT")
        || !into.eq_ignore_ascii_case("INTO")
        || !hash.eq_ignore_ascii_case("HASH")
    {
        return Ok((None, sql.to_string()));
    }
    let after = rest.trim_start();
    let (next, _) = word(after);
    if next.is_empty()
        || next.eq_ignore_ascii_case("SELECT")
        || next.eq_ignore_ascii_case("WITH")
        || after.starts_with('(')
    {
        return Ok((None, sql.to_string()));
    }
    // The prefix: a "quoted" name ("" escapes a quote) or a bare word.
    let (prefix, mut rest) = if let Some(q) = after.strip_prefix('"') {
        let mut name = String::new();
        let mut it = q.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = it.next() {
            if c == '"' {
                if matches!(it.peek(), Some((_, '"'))) {
                    it.next();
                    name.push('"');
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                name.push(c);
            }
        }
        let end =
            end.ok_or_else(|| PlanError::Syntax("unterminated \"quoted\" HASH prefix".into()))?;
        (name, &q[end..])
    } else {
        let (w, r) = word(after);
        (w.to_string(), r)
    };
    if prefix.is_empty() {
        return Err(PlanError::Syntax(
            "INSERT INTO HASH needs a key prefix".into(),
        ));
    }
    let mut ttl_ms = None;
    let (t, r) = word(rest);
    if t.eq_ignore_ascii_case("TTL") {
        let (d, r) = word(r);
        let ms = crate::window::compile::parse_duration(d)
            .filter(|&ms| ms > 0)
            .ok_or_else(|| {
                PlanError::Syntax(format!(
                    "TTL {d}: a positive duration (milliseconds, or a number with ms, s, m, h or d)"
                ))
            })?;
        ttl_ms = Some(ms as u64);
        rest = r;
    }
    let quoted = prefix.replace('"', "\"\"");
    Ok((
        Some(HashSink { prefix, ttl_ms }),
        format!("INSERT INTO \"{quoted}\" {rest}"),
    ))
}

/// What the statement compiles to, before the plan is assembled.
pub(crate) struct Compiled {
    pub source: String,
    pub sink: String,
    /// `INSERT INTO HASH prefix`: `sink` is the prefix.
    pub hash: Option<HashSink>,
    pub slots: SlotTable,
    pub filter: Option<Filter>,
    pub project: Option<Project>,
    pub window: Option<crate::window::WindowOp>,
    pub schema: Schema,
}

fn agg_err() -> PlanError {
    PlanError::WindowsAndAggregates
}

fn parse(sql: &str) -> Result<Statement, PlanError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(PlanError::TooLarge(format!(
            "statement longer than {MAX_SQL_LEN} bytes"
        )));
    }
    let dialect = PostgreSqlDialect {};
    // NOTE: sqlparser is not expected to panic, but a plan is compiled from
    // untrusted input inside the database: a parser bug must not take the
    // server down.
    let parsed = std::panic::catch_unwind(|| {
        Parser::new(&dialect)
            .with_recursion_limit(64)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements())
    })
    .map_err(|_| PlanError::Syntax("the SQL parser failed on this statement".into()))?;
    let mut stmts = parsed.map_err(|e| PlanError::Syntax(e.to_string()))?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        0 => Err(PlanError::Syntax("empty statement".into())),
        _ => Err(PlanError::Syntax("expected a single statement".into())),
    }
}

pub(crate) fn compile(
    sql: &str,
    opts: Option<&crate::window::WindowOptions>,
) -> Result<Compiled, PlanError> {
    let (hash, sql) = split_hash_sink(sql)?;
    let stmt = parse(&sql)?;
    let Statement::Insert(ins) = stmt else {
        return Err(PlanError::Unsupported(
            "a pipeline is `INSERT INTO sink SELECT ... FROM source [WHERE ...]`".into(),
        ));
    };
    let TableObject::TableName(sink) = &ins.table else {
        return Err(PlanError::Unsupported(
            "INSERT INTO a table function".into(),
        ));
    };
    let sink = object_name(sink)?;
    if !ins.columns.is_empty()
        || ins.on.is_some()
        || ins.returning.is_some()
        || !ins.assignments.is_empty()
        || ins.partitioned.is_some()
        || ins.overwrite
    {
        return Err(PlanError::Unsupported(
            "INSERT options: write `INSERT INTO sink SELECT ...` and name fields with AS".into(),
        ));
    }
    let Some(query) = &ins.source else {
        return Err(PlanError::Unsupported("INSERT without SELECT".into()));
    };
    let mut c = compile_query(query, sink, opts, hash.is_some())?;
    if let Some(h) = &hash {
        let keyed = c.window.as_ref().is_some_and(|w| !w.keys.is_empty());
        if !keyed {
            return Err(PlanError::Invalid(format!(
                "INSERT INTO HASH {} writes one hash per GROUP BY key ({}:<key>): the statement needs GROUP BY with at least one key",
                h.prefix, h.prefix
            )));
        }
    }
    c.hash = hash;
    Ok(c)
}

fn object_name(n: &sqlparser::ast::ObjectName) -> Result<String, PlanError> {
    let parts: Vec<_> = n.0.iter().filter_map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [one] if n.0.len() == 1 => Ok(one.value.clone()),
        _ => Err(PlanError::Unsupported(format!(
            "stream name {n}: use a single (optionally \"quoted\") name"
        ))),
    }
}

fn compile_query(
    q: &Query,
    sink: String,
    opts: Option<&crate::window::WindowOptions>,
    hash_sink: bool,
) -> Result<Compiled, PlanError> {
    if q.with.is_some() {
        return Err(PlanError::Unsupported(
            "WITH (common table expressions)".into(),
        ));
    }
    if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Err(PlanError::Unsupported(
            "ORDER BY / LIMIT / FETCH on an unbounded stream".into(),
        ));
    }
    if !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err(PlanError::Unsupported(
            "query clauses beyond SELECT ... FROM ... WHERE".into(),
        ));
    }
    let sel = match q.body.as_ref() {
        SetExpr::Select(s) => s,
        SetExpr::Query(_) => return Err(PlanError::Unsupported("subqueries".into())),
        SetExpr::SetOperation { .. } => {
            return Err(PlanError::Unsupported("UNION / INTERSECT / EXCEPT".into()))
        }
        _ => {
            return Err(PlanError::Unsupported(
                "only SELECT can feed a pipeline".into(),
            ))
        }
    };
    let grouped = crate::window::compile::is_grouped(sel);
    if !sel.named_window.is_empty() || sel.qualify.is_some() {
        return Err(agg_err());
    }
    if !grouped && opts.is_some_and(|o| *o != crate::window::WindowOptions::default()) {
        return Err(PlanError::Invalid(
            "WATERMARK, LATENESS, LATE and STATE_LIMIT apply to grouped statements (GROUP BY, aggregates)".into(),
        ));
    }
    if sel.distinct.is_some() {
        return Err(PlanError::Unsupported(
            "SELECT DISTINCT on an unbounded stream: group with GROUP BY".into(),
        ));
    }
    if sel.top.is_some()
        || sel.into.is_some()
        || !sel.lateral_views.is_empty()
        || sel.prewhere.is_some()
        || !sel.connect_by.is_empty()
        || !sel.cluster_by.is_empty()
        || !sel.distribute_by.is_empty()
        || !sel.sort_by.is_empty()
        || sel.value_table_mode.is_some()
        || sel.exclude.is_some()
    {
        return Err(PlanError::Unsupported(
            "SELECT clauses beyond SELECT ... FROM ... WHERE".into(),
        ));
    }
    let [from] = sel.from.as_slice() else {
        return Err(if sel.from.is_empty() {
            PlanError::Invalid("a pipeline needs FROM source_stream".into())
        } else {
            PlanError::Unsupported("joins (FROM with several streams)".into())
        });
    };
    if !from.joins.is_empty() {
        return Err(PlanError::Unsupported("joins".into()));
    }
    let (source, alias) = match &from.relation {
        TableFactor::Table {
            name, alias, args, ..
        } => {
            if args.is_some() {
                return Err(PlanError::Unsupported("table functions in FROM".into()));
            }
            let a = match alias {
                Some(a) if a.columns.is_empty() => Some(a.name.value.clone()),
                Some(_) => return Err(PlanError::Unsupported("column aliases in FROM".into())),
                None => None,
            };
            (object_name(name)?, a)
        }
        TableFactor::Derived { .. } => return Err(PlanError::Unsupported("subqueries".into())),
        _ => {
            return Err(PlanError::Unsupported(
                "FROM must name one source stream".into(),
            ))
        }
    };
    if source == sink && !hash_sink {
        return Err(PlanError::SinkIsSource(source));
    }
    let mut qualifiers = vec![source.clone()];
    qualifiers.extend(alias);

    let mut slots = SlotTable::default();
    let mut comp = Compiler::new(&mut slots, qualifiers);

    let filter = match &sel.selection {
        None => None,
        Some(w) => {
            let pred = comp.condition(w, 0)?;
            Some(Filter {
                text: w.to_string(),
                pred,
            })
        }
    };

    if grouped {
        let g =
            crate::window::compile::compile(sel, &mut comp, &opts.cloned().unwrap_or_default())?;
        drop(comp);
        return Ok(Compiled {
            source,
            sink,
            hash: None,
            slots,
            filter,
            project: None,
            window: Some(g.op),
            schema: Schema { fields: g.schema },
        });
    }
    if sel.projection.len() > MAX_LIST {
        return Err(PlanError::TooLarge(format!(
            "more than {MAX_LIST} output columns"
        )));
    }
    let mut cols = Vec::with_capacity(sel.projection.len());
    let mut schema = Vec::with_capacity(sel.projection.len());
    let mut unnest: Option<ArrayEval> = None;
    let mut identity = true;
    for item in &sel.projection {
        let (expr, alias) = match item {
            SelectItem::Wildcard(opts) => {
                if opts.opt_ilike.is_some()
                    || opts.opt_exclude.is_some()
                    || opts.opt_except.is_some()
                    || opts.opt_replace.is_some()
                    || opts.opt_rename.is_some()
                    || opts.opt_alias.is_some()
                {
                    return Err(PlanError::Unsupported("options of *".into()));
                }
                cols.push(OutCol::Star);
                schema.push(OutputField {
                    name: "*".into(),
                    ty: "fields",
                });
                continue;
            }
            SelectItem::QualifiedWildcard(..) => {
                return Err(PlanError::Unsupported("qualified wildcard: write *".into()))
            }
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::ExprWithAliases { .. } => {
                return Err(PlanError::Unsupported(
                    "several aliases for one expression".into(),
                ))
            }
        };
        identity = false;
        let inner = strip_nested(expr);
        if let Some(arg) = unnest_arg(inner)? {
            if unnest.is_some() {
                return Err(PlanError::Unsupported(
                    "more than one unnest(...) in a SELECT".into(),
                ));
            }
            let name = alias.unwrap_or_else(|| "unnest".into());
            unnest = Some(array_expr(&mut comp, arg)?);
            schema.push(OutputField {
                name: name.clone(),
                ty: "text",
            });
            cols.push(OutCol::Unnest {
                name: Bytes::from(name),
            });
            continue;
        }
        let c = comp.expr(expr, 0)?;
        let name = match (alias, inner) {
            (Some(a), _) => a,
            (None, Expr::Identifier(i)) => i.value.clone(),
            (None, Expr::CompoundIdentifier(p)) => {
                p.last().map(|i| i.value.clone()).unwrap_or_default()
            }
            (None, Expr::Function(f)) => f.name.to_string().to_ascii_lowercase(),
            (None, e) => return Err(PlanError::NeedsAlias(e.to_string())),
        };
        if name.is_empty() {
            return Err(PlanError::Invalid("empty output field name".into()));
        }
        schema.push(OutputField {
            name: name.clone(),
            ty: if c.ty == Ty::Unknown {
                "field"
            } else {
                c.ty.name()
            },
        });
        let name = Bytes::from(name);
        cols.push(match c.field_slot() {
            Some(slot) => OutCol::Field { name, slot },
            None => OutCol::Expr { name, eval: c.f },
        });
    }
    for (i, a) in schema.iter().enumerate() {
        if a.name != "*" && schema[..i].iter().any(|b| b.name == a.name) {
            return Err(PlanError::Invalid(format!(
                "output field {} appears twice; rename one with AS",
                a.name
            )));
        }
    }
    drop(comp);
    let text = sel
        .projection
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // `SELECT *` alone is the identity: no map, the sink copies entries.
    let project = if identity && unnest.is_none() {
        None
    } else {
        Some(Project {
            width: cols.len().max(1),
            text,
            cols,
            unnest,
            arena: bytes::BytesMut::new(),
        })
    };
    Ok(Compiled {
        source,
        sink,
        hash: None,
        slots,
        filter,
        project,
        window: None,
        schema: Schema { fields: schema },
    })
}

fn strip_nested(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(i) => strip_nested(i),
        e => e,
    }
}

/// The argument of a top-level `unnest(...)`.
fn unnest_arg(e: &Expr) -> Result<Option<&Expr>, PlanError> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    if !f.name.to_string().eq_ignore_ascii_case("unnest") {
        return Ok(None);
    }
    let comp_args = crate::expr::function_args(f)?;
    match comp_args.as_slice() {
        [a] => Ok(Some(a)),
        _ => Err(PlanError::WrongArity {
            function: "unnest".into(),
            expected: "1",
            got: comp_args.len(),
        }),
    }
}

/// `string_to_array(s, delim[, null_string])` or `ARRAY['a', x, ...]`.
fn array_expr(comp: &mut Compiler<'_>, e: &Expr) -> Result<ArrayEval, PlanError> {
    match strip_nested(e) {
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("string_to_array") => {
            let args = crate::expr::function_args(f)?;
            if !(args.len() == 2 || args.len() == 3) {
                return Err(PlanError::WrongArity {
                    function: "string_to_array".into(),
                    expected: "2 or 3",
                    got: args.len(),
                });
            }
            let s = comp.expr(args[0], 1)?;
            let s = comp.text_src(s, "string_to_array", false)?;
            let d = comp.expr(args[1], 1)?;
            let d = comp.text_src(d, "string_to_array", false)?;
            let n = match args.get(2) {
                Some(a) => {
                    let c = comp.expr(a, 1)?;
                    Some(comp.text_src(c, "string_to_array", false)?)
                }
                None => None,
            };
            Ok(Box::new(move |r| {
                let Some(s) = s.get(r)? else {
                    return Ok(None);
                };
                let d = d.get(r)?;
                let n = match &n {
                    Some(n) => n.get(r)?,
                    None => None,
                };
                Ok(Some(funcs::string_to_array(&s, d.as_deref(), n.as_deref())))
            }))
        }
        Expr::Array(a) => {
            if a.elem.len() > MAX_LIST {
                return Err(PlanError::TooLarge(format!("ARRAY longer than {MAX_LIST}")));
            }
            let mut srcs = Vec::with_capacity(a.elem.len());
            for el in &a.elem {
                let c = comp.expr(el, 1)?;
                srcs.push(comp.text_src(c, "ARRAY", true)?);
            }
            Ok(Box::new(move |r| {
                let mut v = Vec::with_capacity(srcs.len());
                for s in &srcs {
                    v.push(s.get(r)?.map(|c| c.into_owned()));
                }
                Ok(Some(v))
            }))
        }
        other => Err(PlanError::Unsupported(format!(
            "unnest({other}): unnest takes string_to_array(text, delimiter) or ARRAY[...]"
        ))),
    }
}
