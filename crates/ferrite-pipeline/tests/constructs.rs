//! One test per language construct, plus compile-time refusals and
//! hostile input.

use ferrite_pipeline::{EntryId, PipelineBuilder, Plan, PlanError};

type Out = Vec<Vec<(String, String)>>;

fn run(sql: &str, fields: &[(&str, &str)]) -> (Out, u64) {
    let mut p = Plan::compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let f: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(a, b)| (a.as_bytes(), b.as_bytes()))
        .collect();
    let mut out = Vec::new();
    let st = p.process(EntryId::new(1700000000000, 3), &f, &mut |r| out.push(r));
    let out = out
        .into_iter()
        .map(|r| {
            r.fields
                .iter()
                .map(|(a, b)| {
                    (
                        String::from_utf8_lossy(a).into(),
                        String::from_utf8_lossy(b).into(),
                    )
                })
                .collect()
        })
        .collect();
    (out, st.failed)
}

/// The value of `SELECT <expr> AS r` on a fixed entry; None for NULL.
fn val(expr: &str) -> Option<String> {
    let fields = [
        ("s", "Hello"),
        ("n", "7"),
        ("x", "2.5"),
        ("neg", "-3"),
        ("bad", "abc"),
        ("flag", "yes"),
        (
            "payload",
            r#"{"a":{"b":[1,2,{"c":"deep"}]},"s":"str","n":null}"#,
        ),
    ];
    let (out, failed) = run(
        &format!("INSERT INTO o SELECT {expr} AS r FROM src"),
        &fields,
    );
    assert_eq!(failed, 0, "{expr} failed");
    out.first()
        .and_then(|r| r.iter().find(|(k, _)| k == "r").map(|(_, v)| v.clone()))
}

fn fails(expr: &str) -> bool {
    let (_, failed) = run(
        &format!("INSERT INTO o SELECT {expr} AS r FROM src"),
        &[("n", "7"), ("z", "0")],
    );
    failed == 1
}

fn compile_err(sql: &str) -> PlanError {
    match Plan::compile(sql) {
        Ok(_) => panic!("{sql} should not compile"),
        Err(e) => e,
    }
}

fn v(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn arithmetic() {
    assert_eq!(val("n + 1"), v("8"));
    assert_eq!(val("n / 2"), v("3"));
    assert_eq!(val("neg / 2"), v("-1"));
    assert_eq!(val("n % 4"), v("3"));
    assert_eq!(val("x * 2"), v("5"));
    assert_eq!(val("x / 2"), v("1.25"));
    assert_eq!(val("n * x"), v("17.5"));
    assert_eq!(val("-n"), v("-7"));
    assert_eq!(val("bad + 1"), None, "unparsable field is NULL");
    assert_eq!(val("missing + 1"), None);
    assert!(fails("n / z"), "division by zero fails the event");
    assert!(fails("n % 0"));
    assert!(fails("n * 9223372036854775807"));
}

#[test]
fn comparisons_and_logic() {
    assert_eq!(val("n > 5"), v("true"));
    assert_eq!(val("n = 7.0"), v("true"));
    assert_eq!(val("s = 'Hello'"), v("true"));
    assert_eq!(val("s < 'Z'"), v("true"));
    assert_eq!(
        val("n > '5'"),
        v("true"),
        "a string literal takes its context's type"
    );
    assert_eq!(val("missing > 1"), None);
    assert_eq!(val("missing > 1 AND false"), v("false"));
    assert_eq!(val("missing > 1 OR true"), v("true"));
    assert_eq!(val("NOT (missing > 1)"), None);
    assert_eq!(val("n BETWEEN 1 AND 7"), v("true"));
    assert_eq!(val("n NOT BETWEEN 1 AND 7"), v("false"));
    assert_eq!(val("s IN ('a', 'Hello')"), v("true"));
    assert_eq!(val("s IN ('a', NULL)"), None);
    assert_eq!(val("n NOT IN (1, 2)"), v("true"));
    assert_eq!(val("missing IS NULL"), v("true"));
    assert_eq!(val("s IS NOT NULL"), v("true"));
    assert_eq!(val("flag"), v("yes"));
    assert_eq!(
        val("flag AND true"),
        v("true"),
        "booleans parse with boolin spellings"
    );
    assert_eq!(val("missing IS DISTINCT FROM NULL"), v("false"));
}

#[test]
fn like() {
    assert_eq!(val("s LIKE 'He%'"), v("true"));
    assert_eq!(val("s LIKE 'he%'"), v("false"));
    assert_eq!(val("s ILIKE 'he%'"), v("true"));
    assert_eq!(val("s LIKE 'H_llo'"), v("true"));
    assert_eq!(val("s NOT LIKE '%z%'"), v("true"));
    assert_eq!(val("'a%' LIKE 'a\\%'"), v("true"));
    assert_eq!(val("'a%' LIKE 'a!%' ESCAPE '!'"), v("true"));
}

#[test]
fn conditionals() {
    assert_eq!(val("CASE WHEN n > 5 THEN 'big' ELSE 'small' END"), v("big"));
    assert_eq!(val("CASE n WHEN 7 THEN 'seven' END"), v("seven"));
    assert_eq!(val("CASE WHEN n > 50 THEN 1 END"), None);
    assert_eq!(val("COALESCE(missing, n, 0)"), v("7"));
    assert_eq!(val("NULLIF(n, 7)"), None);
    assert_eq!(val("NULLIF(n, 8)"), v("7"));
    assert_eq!(val("greatest(n, x, 3)"), v("7"));
    assert_eq!(val("least(n, x, missing)"), v("2.5"));
}

#[test]
fn casts() {
    assert_eq!(
        val("CAST(CAST(x AS DOUBLE) AS INT)"),
        v("2"),
        "float to int rounds half to even"
    );
    assert!(
        fails("CAST('2.5' AS INT)"),
        "text to int takes integers only, as PostgreSQL"
    );
    assert_eq!(val("CAST('3.5' AS DOUBLE) :: BIGINT"), v("4"));
    assert_eq!(val("CAST(n AS TEXT) || '!'"), v("7!"));
    assert_eq!(val("CAST(n AS VARCHAR(3))"), v("7"));
    assert_eq!(val("CAST(flag AS BOOLEAN)"), v("true"));
    assert_eq!(val("CAST(n AS FLOAT) / 2"), v("3.5"));
    assert!(fails("CAST('abc' AS INT)"));
    assert!(fails("CAST('1.5' AS INT)"));
}

#[test]
fn numeric_functions() {
    assert_eq!(val("abs(neg)"), v("3"));
    assert_eq!(val("round(x)"), v("3"));
    assert_eq!(val("round(3.14159, 2)"), v("3.14"));
    assert_eq!(val("floor(x)"), v("2"));
    assert_eq!(val("ceil(x)"), v("3"));
    assert_eq!(val("sqrt(16)"), v("4"));
    assert_eq!(val("power(2, 10)"), v("1024"));
    assert_eq!(val("ln(1)"), v("0"));
    assert_eq!(val("log(100)"), v("2"));
    assert_eq!(val("log(2, 8)"), v("3"));
    assert_eq!(val("exp(0)"), v("1"));
    assert_eq!(val("1.0 / 3"), v("0.3333333333333333"));
    assert!(fails("sqrt(-1)"));
    assert!(fails("ln(0)"));
}

#[test]
fn string_functions() {
    assert_eq!(val("lower(s)"), v("hello"));
    assert_eq!(val("upper(s)"), v("HELLO"));
    assert_eq!(val("length(s)"), v("5"));
    assert_eq!(val("char_length('héllo')"), v("5"));
    assert_eq!(val("substr(s, 2, 3)"), v("ell"));
    assert_eq!(val("substring(s from 2)"), v("ello"));
    assert_eq!(val("trim('  a  ')"), v("a"));
    assert_eq!(val("ltrim('xxa', 'x')"), v("a"));
    assert_eq!(val("rtrim('a  ')"), v("a"));
    assert_eq!(val("concat(s, missing, n)"), v("Hello7"));
    assert_eq!(val("s || missing"), None);
    assert_eq!(val("replace(s, 'l', 'L')"), v("HeLLo"));
    assert_eq!(val("position('llo' in s)"), v("3"));
    assert_eq!(val("strpos(s, 'z')"), v("0"));
    assert_eq!(val("split_part('a,b,c', ',', 2)"), v("b"));
    assert_eq!(val("starts_with(s, 'He')"), v("true"));
    assert_eq!(val("left(s, 2)"), v("He"));
    assert_eq!(val("right(s, 2)"), v("lo"));
}

#[test]
fn json_and_pseudo_columns() {
    assert_eq!(val("payload->>'s'"), v("str"));
    assert_eq!(val("payload->'s'"), v("\"str\""));
    assert_eq!(val("payload->'a'->'b'->2->>'c'"), v("deep"));
    assert_eq!(val("payload->'a'->'b'->>0"), v("1"));
    assert_eq!(val("payload->>'n'"), None);
    assert_eq!(val("payload->>'zz'"), None);
    assert_eq!(val("(payload->'a'->'b'->>1) + 1"), v("3"));
    assert_eq!(val("s->>'a'"), None, "not JSON: NULL");
    assert_eq!(val("_id"), v("1700000000000-3"));
    assert_eq!(val("_ms / 1000"), v("1700000000"));
}

#[test]
fn projection_shapes() {
    let f = [
        ("symbol", "BTC"),
        ("price", "2"),
        ("volume", "30"),
        ("extra", "e"),
    ];
    let sql = "INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')";
    let (out, _) = run(sql, &f);
    assert_eq!(
        out,
        vec![vec![
            ("symbol".into(), "BTC".into()),
            ("price".into(), "2".into()),
            ("volume".into(), "30".into()),
            ("notional".into(), "60".into())
        ]]
    );
    let (out, _) = run(sql, &[("symbol", "DOGE"), ("volume", "30")]);
    assert!(out.is_empty());
    let (out, _) = run("INSERT INTO o SELECT *, price * 2 AS p2 FROM t", &f);
    assert_eq!(out[0].len(), 5);
    assert_eq!(out[0][4], ("p2".into(), "4".into()));
    let (out, _) = run("INSERT INTO o SELECT * FROM t WHERE price = 2", &f);
    assert_eq!(out[0].len(), 4);
    let (out, _) = run("INSERT INTO o SELECT missing, symbol FROM t", &f);
    assert_eq!(
        out[0],
        vec![("symbol".into(), "BTC".into())],
        "NULL leaves its field out"
    );
    let (out, _) = run(
        "INSERT INTO o SELECT t.symbol AS s, lower(symbol) FROM t",
        &f,
    );
    assert_eq!(
        out[0],
        vec![("s".into(), "BTC".into()), ("lower".into(), "btc".into())]
    );
}

#[test]
fn flat_map() {
    let sql = "INSERT INTO o SELECT unnest(string_to_array(tags, ',')) AS tag, user FROM clicks";
    let (out, _) = run(sql, &[("user", "u1"), ("tags", "a,b")]);
    assert_eq!(
        out,
        vec![
            vec![("tag".into(), "a".into()), ("user".into(), "u1".into())],
            vec![("tag".into(), "b".into()), ("user".into(), "u1".into())]
        ]
    );
    assert!(run(sql, &[("user", "u1"), ("tags", "")]).0.is_empty());
    assert!(run(sql, &[("user", "u1")]).0.is_empty());
    let (out, _) = run(
        "INSERT INTO o SELECT unnest(ARRAY['x', user]) AS v FROM c",
        &[("user", "u")],
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn compile_time_refusals() {
    use PlanError::*;
    assert!(matches!(
        compile_err("INSERT INTO o SELECT nope(x) AS y FROM s"),
        UnknownFunction(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT abs(x, 1) AS y FROM s"),
        WrongArity { .. }
    ));
    assert!(matches!(
        compile_err("INSERT INTO s SELECT * FROM s"),
        SinkIsSource(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT sum(x) OVER () AS c FROM s"),
        WindowsAndAggregates
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT * FROM a JOIN b ON a.x = b.x"),
        Unsupported(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT * FROM a, b"),
        Unsupported(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT * FROM (SELECT * FROM a) q"),
        Unsupported(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT * FROM a WHERE x IN (SELECT y FROM b)"),
        Unsupported(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT x + 1 FROM s"),
        NeedsAlias(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT lower(1) AS y FROM s"),
        Type(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT 'abc' + 1 AS y FROM s"),
        Type(_)
    ));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT x AS a, y AS a FROM s"),
        Invalid(_)
    ));
    assert!(matches!(compile_err("SELECT * FROM s"), Unsupported(_)));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT FROM"),
        Syntax(_)
    ));
    let deep = format!(
        "INSERT INTO o SELECT {}1{} AS y FROM s",
        "(".repeat(200),
        ")".repeat(200)
    );
    assert!(matches!(compile_err(&deep), Syntax(_) | TooLarge(_)));
    let long = format!(
        "INSERT INTO o SELECT {} AS y FROM s",
        vec!["x"; 3000].join(" + ")
    );
    assert!(matches!(compile_err(&long), TooLarge(_)));
    assert!(matches!(
        compile_err("INSERT INTO o SELECT x, y FROM s GROUP BY x"),
        Invalid(_)
    ));
}

#[test]
fn hostile_sql_never_panics() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    let alphabet: Vec<char> =
        "()'\",.*+-/%<>=!|:;[]{}$@# \n\tINSERTOSELCFRWHAND0123456789abxyz->>\\"
            .chars()
            .collect();
    let base = "INSERT INTO o SELECT a->>'k' AS z, CASE WHEN x > 1 THEN 'y' END AS c FROM s WHERE x IN (1,2) AND y LIKE 'a%'";
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut s: Vec<char> = base.chars().collect();
        for k in 0..(seed % 6) {
            let pos = ((seed >> (k * 8)) as usize) % (s.len() + 1);
            let c = alphabet[((seed >> (k * 5 + 3)) as usize) % alphabet.len()];
            if (seed >> k) & 1 == 0 && pos < s.len() {
                s[pos] = c;
            } else {
                s.insert(pos, c);
            }
        }
        let sql: String = s.into_iter().collect();
        if let Ok(mut p) = Plan::compile(&sql) {
            let f: &[(&[u8], &[u8])] = &[(b"x", b"\xff\xfe"), (b"a", b"{\"k\":"), (b"y", b"")];
            p.process(EntryId::new(0, 0), &f, &mut |_| {});
        }
    }
}

#[test]
fn builder_plans_run_the_same_chain() {
    use bytes::Bytes;
    let mut p = PipelineBuilder::new()
        .source("clicks")
        .filter(|e| e.get(b"user").is_some())
        .flat_map(|e| {
            let user = Bytes::copy_from_slice(e.get(b"user").unwrap_or_default());
            Ok(e.get(b"tags")
                .unwrap_or_default()
                .split(|b| *b == b',')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    vec![
                        (Bytes::from_static(b"tag"), Bytes::copy_from_slice(t)),
                        (Bytes::from_static(b"user"), user.clone()),
                    ]
                })
                .collect())
        })
        .filter(|e| e.get(b"tag") != Some(b"skip"))
        .sink("tags")
        .build()
        .expect("plan");
    let f: &[(&[u8], &[u8])] = &[(b"user", b"u"), (b"tags", b"a,skip,b")];
    let mut out = Vec::new();
    let st = p.process(EntryId::new(1, 0), &f, &mut |r| out.push(r));
    assert_eq!(out.len(), 2);
    assert_eq!(st.filtered, 1);
    assert!(p.explain().contains("FlatMap"));
    assert!(PipelineBuilder::new()
        .source("a")
        .sink("a")
        .build()
        .is_err());
}

#[test]
fn snapshot_round_trips_and_checks_shape() {
    let mut p = Plan::compile("INSERT INTO o SELECT * FROM s WHERE x > 1").expect("plan");
    let snap = p.snapshot();
    assert!(p.restore(&snap).is_ok());
    assert!(p.restore(&snap[..snap.len() - 1]).is_err());
    assert!(p.restore(&[]).is_err());
    let mut other = Plan::compile("INSERT INTO o SELECT x AS y FROM s WHERE x > 1").expect("plan");
    assert!(other.restore(&snap).is_err());
}

#[test]
fn batch_counts() {
    let mut p =
        Plan::compile("INSERT INTO o SELECT 10 / d AS q FROM s WHERE d IS NOT NULL").expect("plan");
    let a: &[(&[u8], &[u8])] = &[(b"d", b"2")];
    let b: &[(&[u8], &[u8])] = &[(b"d", b"0")];
    let c: &[(&[u8], &[u8])] = &[(b"e", b"1")];
    let entries = [
        ferrite_pipeline::Entry::new(EntryId::new(1, 0), &a),
        ferrite_pipeline::Entry::new(EntryId::new(2, 0), &b),
        ferrite_pipeline::Entry::new(EntryId::new(3, 0), &c),
    ];
    let mut out = Vec::new();
    let st = p.process_batch(&entries, &mut out);
    assert_eq!((st.input, st.output, st.filtered, st.failed), (3, 1, 1, 1));
    assert_eq!(
        st.first_error.map(|(id, e)| (id, e.to_string())),
        Some((EntryId::new(2, 0), "division by zero".into()))
    );
}
