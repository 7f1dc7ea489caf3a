//! Differential test: random well-typed expressions over random entries,
//! evaluated by the pipeline compiler and by SQLite (bundled), on the
//! subset where SQLite and PostgreSQL agree: small-integer arithmetic
//! (no overflow, no division by zero), comparisons, three-valued logic,
//! CASE, COALESCE, IN, BETWEEN, case-sensitive LIKE on ASCII, ||, lower,
//! upper, length, abs.
//!
//! Seeded and deterministic; a mismatch prints the seed, the expression,
//! the row and both results. FERRITE_DIFF_SEED overrides the seed.

use ferrite_pipeline::{EntryId, Plan};
use rusqlite::types::Value as Sql;

/// xorshift64*: enough randomness, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const TEXTS: &[&str] = &["a", "b", "ab", "ba", "", "abc", "B", "aab"];

#[derive(Clone, Copy, PartialEq)]
enum T {
    Int,
    Num,
    Text,
    Bool,
}

struct Gen<'r> {
    r: &'r mut Rng,
}

impl Gen<'_> {
    fn int(&mut self, d: u32) -> String {
        let leaf = d == 0 || self.r.below(3) == 0;
        if leaf {
            return match self.r.below(4) {
                0 => "i1".into(),
                1 => "i2".into(),
                2 => format!("{}", self.r.below(21) as i64 - 10),
                _ => "NULL".into(),
            };
        }
        let d = d - 1;
        match self.r.below(10) {
            0 => format!("({} + {})", self.int(d), self.int(d)),
            1 => format!("({} - {})", self.int(d), self.int(d)),
            2 => format!("({} * {})", self.int(d), self.int(d)),
            3 => format!("({} / {})", self.int(d), self.r.below(9) as i64 + 1),
            4 => format!("({} % {})", self.int(d), -(self.r.below(9) as i64 + 1)),
            5 => format!("abs({})", self.int(d)),
            6 => format!("(-({}))", self.int(d)),
            7 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.boolean(d),
                self.int(d),
                self.int(d)
            ),
            8 => format!("COALESCE({}, {})", self.int(d), self.int(d)),
            _ => format!("length({})", self.text(d)),
        }
    }

    fn num(&mut self, d: u32) -> String {
        if d == 0 || self.r.below(2) == 0 {
            return match self.r.below(3) {
                0 => "f1".into(),
                1 => format!("{}", (self.r.below(41) as f64 - 20.0) / 4.0),
                _ => self.int(d),
            };
        }
        let d = d - 1;
        match self.r.below(4) {
            0 => format!("({} + {})", self.num(d), self.num(d)),
            1 => format!("({} * {})", self.num(d), self.int(d)),
            2 => format!("({} - {})", self.int(d), self.num(d)),
            _ => format!("({} / 4.0)", self.num(d)),
        }
    }

    fn text(&mut self, d: u32) -> String {
        if d == 0 || self.r.below(2) == 0 {
            return match self.r.below(4) {
                0 => "t1".into(),
                1 => "t2".into(),
                2 => format!("'{}'", self.r.pick(TEXTS)),
                _ => "NULL".into(),
            };
        }
        let d = d - 1;
        match self.r.below(5) {
            0 => format!("({} || {})", self.text(d), self.text(d)),
            1 => format!("lower({})", self.text(d)),
            2 => format!("upper({})", self.text(d)),
            3 => format!("COALESCE({}, {})", self.text(d), self.text(d)),
            _ => format!("CASE WHEN {} THEN {} END", self.boolean(d), self.text(d)),
        }
    }

    /// A numeric operand that is never a bare field: two bare fields
    /// compare as text (PostgreSQL's unknown-vs-unknown rule).
    fn num_operand(&mut self, d: u32) -> String {
        let e = self.num(d);
        if e == "i1" || e == "i2" || e == "f1" || e == "NULL" {
            format!("({e} + 0)")
        } else {
            e
        }
    }

    fn boolean(&mut self, d: u32) -> String {
        if d == 0 {
            return format!("({} > {})", self.num_operand(0), self.num(0));
        }
        let d = d - 1;
        let ops = ["=", "<>", "<", "<=", ">", ">="];
        match self.r.below(11) {
            0 | 1 => {
                let op = self.r.pick(&ops);
                format!("({} {op} {})", self.num_operand(d), self.num(d))
            }
            2 => {
                let op = self.r.pick(&ops);
                format!("({} {op} {})", self.text(d), self.text(d))
            }
            3 => format!("({} AND {})", self.boolean(d), self.boolean(d)),
            4 => format!("({} OR {})", self.boolean(d), self.boolean(d)),
            5 => format!("(NOT {})", self.boolean(d)),
            6 => {
                let not = if self.r.below(2) == 0 { "NOT " } else { "" };
                let e = match self.r.below(3) {
                    0 => self.int(d),
                    1 => self.text(d),
                    _ => self.boolean(d),
                };
                format!("(({e}) IS {not}NULL)")
            }
            7 => {
                let not = if self.r.below(2) == 0 { "NOT " } else { "" };
                format!(
                    "({} {not}IN ({}, {}, {}))",
                    self.num_operand(d),
                    self.int(d),
                    self.num(d),
                    self.int(d)
                )
            }
            8 => {
                let not = if self.r.below(2) == 0 { "NOT " } else { "" };
                format!(
                    "({} {not}BETWEEN {} AND {})",
                    self.num_operand(d),
                    self.num(d),
                    self.int(d)
                )
            }
            9 => {
                let not = if self.r.below(2) == 0 { "NOT " } else { "" };
                let pat: String = (0..self.r.below(4) + 1)
                    .map(|_| self.r.pick(&["a", "b", "%", "_"]))
                    .collect();
                format!("({} {not}LIKE '{pat}')", self.text(d))
            }
            _ => {
                let not = if self.r.below(2) == 0 { "NOT " } else { "" };
                format!(
                    "({} {not}IN ('{}', {}))",
                    self.text(d),
                    self.r.pick(TEXTS),
                    self.text(d)
                )
            }
        }
    }
}

#[derive(Debug, Clone)]
struct RowVals {
    i1: Option<i64>,
    i2: Option<i64>,
    f1: Option<f64>,
    t1: Option<String>,
    t2: Option<String>,
}

fn random_row(r: &mut Rng) -> RowVals {
    let int = |r: &mut Rng| (r.below(5) != 0).then(|| r.below(41) as i64 - 20);
    RowVals {
        i1: int(r),
        i2: int(r),
        f1: (r.below(5) != 0).then(|| (r.below(81) as f64 - 40.0) / 8.0),
        t1: (r.below(5) != 0).then(|| r.pick(TEXTS).to_string()),
        t2: (r.below(5) != 0).then(|| r.pick(TEXTS).to_string()),
    }
}

fn fields(row: &RowVals) -> Vec<(String, String)> {
    // A field order that is not the SQL column order, as in real streams.
    let f: Vec<(String, Option<String>)> = vec![
        ("t2".into(), row.t2.clone()),
        ("i1".into(), row.i1.map(|v| v.to_string())),
        ("f1".into(), row.f1.map(|v| v.to_string())),
        ("t1".into(), row.t1.clone()),
        ("i2".into(), row.i2.map(|v| v.to_string())),
    ];
    f.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Our output (field absent = NULL) against SQLite's value.
fn agree(ty: T, ours: Option<&[u8]>, theirs: &Sql) -> bool {
    match (ours, theirs) {
        (None, Sql::Null) => true,
        (None, _) | (Some(_), Sql::Null) => false,
        (Some(o), t) => {
            let o = String::from_utf8_lossy(o);
            match (ty, t) {
                (T::Bool, Sql::Integer(i)) => {
                    (o == "true") == (*i != 0) && (o == "true" || o == "false")
                }
                (T::Text, Sql::Text(s)) => o == *s,
                (T::Int | T::Num, Sql::Integer(i)) => o.parse::<f64>().ok() == Some(*i as f64),
                (T::Int | T::Num, Sql::Real(x)) => o.parse::<f64>().ok() == Some(*x),
                _ => false,
            }
        }
    }
}

#[test]
fn compiled_expressions_agree_with_sqlite() {
    let seed: u64 = std::env::var("FERRITE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F3A7);
    println!("seed {seed} (set FERRITE_DIFF_SEED to replay)");
    let mut rng = Rng(seed | 1);
    let db = rusqlite::Connection::open_in_memory().expect("sqlite");
    db.execute_batch(
        "PRAGMA case_sensitive_like = ON;
         CREATE TABLE t (i1 INTEGER, i2 INTEGER, f1 REAL, t1 TEXT, t2 TEXT);",
    )
    .expect("schema");
    let rows: Vec<RowVals> = (0..12).map(|_| random_row(&mut rng)).collect();
    for r in &rows {
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![r.i1, r.i2, r.f1, r.t1, r.t2],
        )
        .expect("insert");
    }
    let entries: Vec<Vec<(String, String)>> = rows.iter().map(fields).collect();
    let mut cases = 0;
    for n in 0..400 {
        let ty = [T::Int, T::Num, T::Text, T::Bool][n % 4];
        let mut g = Gen { r: &mut rng };
        let depth = 1 + (n as u32 % 3);
        let e = match ty {
            T::Int => g.int(depth),
            T::Num => g.num(depth),
            T::Text => g.text(depth),
            T::Bool => g.boolean(depth),
        };
        let sql = format!("INSERT INTO o SELECT {e} AS r FROM s");
        let mut plan = Plan::compile(&sql)
            .unwrap_or_else(|err| panic!("seed {seed}: {sql} does not compile: {err}"));
        let mut stmt = db
            .prepare(&format!("SELECT {e} FROM t ORDER BY rowid"))
            .unwrap_or_else(|err| panic!("sqlite rejects {e}: {err}"));
        let theirs: Vec<Sql> = stmt
            .query_map([], |r| r.get::<_, Sql>(0))
            .and_then(|it| it.collect())
            .unwrap_or_else(|err| panic!("sqlite fails on {e}: {err}"));
        for (i, f) in entries.iter().enumerate() {
            let mut out = Vec::new();
            let st = plan.process(EntryId::new(i as u64, 0), f, &mut |r| out.push(r));
            assert_eq!(
                st.failed, 0,
                "seed {seed}: {e} failed on {:?}: {:?}",
                rows[i], st.first_error
            );
            assert_eq!(out.len(), 1);
            let ours = out[0].get(b"r");
            assert!(
                agree(ty, ours, &theirs[i]),
                "seed {seed}: mismatch\n  expr: {e}\n  row:  {:?}\n  ours: {:?}\n  sqlite: {:?}",
                rows[i],
                ours.map(String::from_utf8_lossy),
                theirs[i]
            );
            cases += 1;
        }
    }
    println!("{cases} cases agree");
}
