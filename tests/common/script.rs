//! The differential script format (see docs/testing.md).
//!
//! One command per line, split like redis-cli does (`sdssplitargs`): words
//! separated by blanks, `"..."` with `\n \r \t \b \a \\ \" \xHH` escapes,
//! `'...'` with `\'`. Lines starting with `#` are comments. `@name` switches
//! the current connection; `@name CMD ...` runs one line on `name` without
//! switching. Lines starting with `!` are directives.

use std::fmt;

/// A word of a command, possibly holding `${var}` references.
pub type Word = Vec<u8>;

/// Commands of a `!pipeline` block, each with its line number.
pub type PipelineCmds = Vec<(usize, Vec<Word>)>;

#[derive(Clone, Debug)]
pub enum Mask {
    /// `!mask field NAME...`: values of map/flat-array fields NAME.
    Field(Vec<Vec<u8>>),
    /// `!mask ids`: auto-generated stream IDs (millisecond part >= 10^12).
    Ids,
    /// `!mask shape`: only types and aggregate sizes are compared.
    Shape,
    /// `!mask sort`: top-level aggregate compared as a multiset.
    Sort,
    /// `!mask sortpairs`: top-level flat key/value array (or map) compared as
    /// a set of pairs (CONFIG GET with a glob).
    SortPairs,
    /// `!mask clientinfo`: CLIENT INFO/LIST text compared by field names and
    /// the values of stable fields only.
    ClientInfo,
    /// `!mask debugobject`: DEBUG OBJECT's line compared by field names and
    /// the values of `refcount` and `encoding`.
    DebugObject,
    /// `!mask approx NAME TOL`: integer field NAME within ±TOL.
    Approx(Vec<u8>, i64),
    /// `!mask int TOL`: an integer reply within ±TOL (TTLs).
    Int(i64),
    /// `!mask nth N TOL`: the integer at position N of every array in the
    /// reply, at any depth, within ±TOL (XPENDING's idle times).
    Nth(usize, i64),
    /// `!mask all`: only the first type byte is compared.
    All,
}

#[derive(Clone, Debug)]
pub enum Action {
    /// Send a command (RESP multibulk) and read one reply.
    Command(Vec<Word>),
    /// `!blocked [N]`: send the command, wait until the server reports N
    /// blocked clients, check no reply came; the reply is read by `!await`.
    Blocked {
        expect: Option<usize>,
        cmd: Vec<Word>,
    },
    /// `!await`: read the reply of the blocked command on this connection.
    Await,
    /// `!pending`: the blocked command on this connection has no reply yet.
    Pending,
    /// `!wait-blocked N`: wait until the server reports N blocked clients.
    WaitBlocked(usize),
    /// `!send "bytes"`: write raw bytes, read nothing.
    Send(Vec<u8>),
    /// `!noreply [MS]`: nothing arrives on this connection within MS ms
    /// (default 100): an absence check, never used for synchronisation.
    NoReply(u64),
    /// `!read [N]`: read and compare N replies.
    Read(usize),
    /// `!closed`: the server closes this connection, sending nothing more.
    Closed,
    /// `!reconnect`: replace this connection by a new one (RESP2, db 0).
    Reconnect,
    /// `!disconnect`: the client closes this connection (a blocked command on
    /// it is abandoned).
    Disconnect,
    /// `!pipeline` ... `!end`: the commands are written in one write, then
    /// their replies read and compared one by one.
    Pipeline(PipelineCmds),
    /// `!scan ARGS...`: full SCAN iteration (cursor 0 until 0 again) with the
    /// given options; the sets of keys gathered are compared.
    Scan(Vec<Word>),
}

#[derive(Clone, Debug, Default)]
pub struct Modifiers {
    pub masks: Vec<Mask>,
    /// `!capture NAME`: remember the reply (string or integer) as `${NAME}`.
    pub capture: Option<String>,
    /// `!expect "bytes"`: the reference (redis) reply must be exactly these bytes.
    pub expect: Option<Vec<u8>>,
    /// `!min-ms N`: the reply takes at least N ms to arrive on both sides.
    pub min_ms: Option<u64>,
    /// `!replies N`: the next command answers N frames (SUBSCRIBE a b c),
    /// each read and compared.
    pub replies: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub line: usize,
    /// The script line as written (for messages).
    pub text: String,
    /// Connection to use; `None` = the current one.
    pub conn: Option<String>,
    /// `@name` alone: switch the current connection.
    pub switch: bool,
    pub action: Option<Action>,
    pub mods: Modifiers,
}

#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits a line like redis-cli's `sdssplitargs`.
pub fn split_args(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let mut inq = false; // "..."
        let mut insq = false; // '...'
        loop {
            if inq {
                if i >= b.len() {
                    return Err("unbalanced double quote".into());
                }
                if b[i] == b'\\'
                    && i + 3 < b.len()
                    && b[i + 1] == b'x'
                    && hex(b[i + 2]).is_some()
                    && hex(b[i + 3]).is_some()
                {
                    cur.push(hex(b[i + 2]).unwrap_or(0) * 16 + hex(b[i + 3]).unwrap_or(0));
                    i += 3;
                } else if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    cur.push(match b[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if b[i] == b'"' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else if insq {
                if i >= b.len() {
                    return Err("unbalanced single quote".into());
                }
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if b[i] == b'\'' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else {
                if i >= b.len() || b[i].is_ascii_whitespace() {
                    break;
                }
                match b[i] {
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

fn word_str(w: &[u8]) -> String {
    String::from_utf8_lossy(w).into_owned()
}

/// Replaces `${i}` in each word by `i`.
fn subst_i(words: &[Word], i: usize) -> Vec<Word> {
    let pat = b"${i}";
    let rep = i.to_string();
    words
        .iter()
        .map(|w| {
            let mut out = Vec::with_capacity(w.len());
            let mut k = 0;
            while k < w.len() {
                if w[k..].starts_with(pat) {
                    out.extend_from_slice(rep.as_bytes());
                    k += pat.len();
                } else {
                    out.push(w[k]);
                    k += 1;
                }
            }
            out
        })
        .collect()
}

/// Expands `!repeat N CMD...` into N commands (`${i}` = 1..=N).
fn expand_repeat(words: &[Word], line: usize) -> Result<Vec<Vec<Word>>, ParseError> {
    let n: usize = words
        .first()
        .and_then(|w| word_str(w).parse().ok())
        .ok_or_else(|| ParseError {
            line,
            msg: "!repeat needs a count".into(),
        })?;
    if words.len() < 2 {
        return Err(ParseError {
            line,
            msg: "!repeat needs a command".into(),
        });
    }
    Ok((1..=n).map(|i| subst_i(&words[1..], i)).collect())
}

pub fn parse(src: &str) -> Result<Vec<Step>, ParseError> {
    let mut steps = Vec::new();
    let mut mods = Modifiers::default();
    let mut pipeline: Option<(usize, PipelineCmds)> = None;
    for (idx, raw_line) in src.lines().enumerate() {
        let line = idx + 1;
        let text = raw_line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut words = split_args(text).map_err(|msg| ParseError { line, msg })?;
        let mut conn = None;
        if words[0].first() == Some(&b'@') {
            let name = word_str(&words[0][1..]);
            if name.is_empty() {
                return Err(ParseError {
                    line,
                    msg: "empty connection name".into(),
                });
            }
            words.remove(0);
            if words.is_empty() {
                if pipeline.is_some() {
                    return Err(ParseError {
                        line,
                        msg: "no connection switch inside !pipeline".into(),
                    });
                }
                steps.push(Step {
                    line,
                    text: text.to_string(),
                    conn: Some(name),
                    switch: true,
                    action: None,
                    mods: Modifiers::default(),
                });
                continue;
            }
            conn = Some(name);
        }
        let head = word_str(&words[0]);
        let err = |msg: &str| ParseError {
            line,
            msg: format!("{head}: {msg}"),
        };
        let one_bytes = |words: &Vec<Word>| -> Result<Vec<u8>, ParseError> {
            if words.len() != 2 {
                return Err(ParseError {
                    line,
                    msg: format!("{head} takes one quoted argument"),
                });
            }
            Ok(words[1].clone())
        };
        if let Some((_, cmds)) = pipeline.as_mut() {
            match head.as_str() {
                "!end" => {
                    let (start, cmds) = pipeline.take().unwrap_or_default();
                    steps.push(Step {
                        line: start,
                        text: format!("!pipeline (lines {start}-{line})"),
                        conn,
                        switch: false,
                        action: Some(Action::Pipeline(cmds)),
                        mods: std::mem::take(&mut mods),
                    });
                }
                "!repeat" => cmds.extend(
                    expand_repeat(&words[1..], line)?
                        .into_iter()
                        .map(|c| (line, c)),
                ),
                h if h.starts_with('!') => {
                    return Err(err("only commands and !repeat inside !pipeline"))
                }
                _ => {
                    if conn.is_some() {
                        return Err(err("no @conn prefix inside !pipeline"));
                    }
                    cmds.push((line, words));
                }
            }
            continue;
        }
        let action;
        match head.as_str() {
            "!mask" => {
                let kind = words
                    .get(1)
                    .map(|w| word_str(w).to_ascii_lowercase())
                    .unwrap_or_default();
                let m = match kind.as_str() {
                    "field" if words.len() > 2 => Mask::Field(words[2..].to_vec()),
                    "ids" => Mask::Ids,
                    "shape" => Mask::Shape,
                    "sort" => Mask::Sort,
                    "sortpairs" => Mask::SortPairs,
                    "clientinfo" => Mask::ClientInfo,
                    "debugobject" => Mask::DebugObject,
                    "all" => Mask::All,
                    "int" if words.len() == 3 => {
                        let tol = word_str(&words[2]).parse().map_err(|_| err("bad tolerance"))?;
                        Mask::Int(tol)
                    }
                    "nth" if words.len() == 4 => {
                        let n = word_str(&words[2]).parse().map_err(|_| err("bad position"))?;
                        let tol = word_str(&words[3]).parse().map_err(|_| err("bad tolerance"))?;
                        Mask::Nth(n, tol)
                    }
                    "approx" if words.len() == 4 => {
                        let tol = word_str(&words[3]).parse().map_err(|_| err("bad tolerance"))?;
                        Mask::Approx(words[2].clone(), tol)
                    }
                    _ => return Err(err("unknown mask (field NAME.., ids, shape, sort, sortpairs, clientinfo, debugobject, approx NAME TOL, int TOL, nth N TOL, all)")),
                };
                mods.masks.push(m);
                continue;
            }
            "!capture" => {
                if words.len() != 2 {
                    return Err(err("!capture NAME"));
                }
                mods.capture = Some(word_str(&words[1]));
                continue;
            }
            "!expect" => {
                mods.expect = Some(one_bytes(&words)?);
                continue;
            }
            "!min-ms" => {
                let n = words
                    .get(1)
                    .and_then(|w| word_str(w).parse().ok())
                    .ok_or_else(|| err("!min-ms N"))?;
                mods.min_ms = Some(n);
                continue;
            }
            "!replies" => {
                let n = words
                    .get(1)
                    .and_then(|w| word_str(w).parse().ok())
                    .ok_or_else(|| err("!replies N"))?;
                mods.replies = Some(n);
                continue;
            }
            "!pipeline" => {
                if conn.is_some() {
                    return Err(err("use @conn on its own line before !pipeline"));
                }
                pipeline = Some((line, Vec::new()));
                continue;
            }
            "!end" => return Err(err("!end without !pipeline")),
            "!blocked" => {
                let mut rest = &words[1..];
                let mut expect = None;
                if let Some(n) = rest.first().and_then(|w| word_str(w).parse::<usize>().ok()) {
                    expect = Some(n);
                    rest = &rest[1..];
                }
                if rest.is_empty() {
                    return Err(err("!blocked [N] CMD ..."));
                }
                action = Some(Action::Blocked {
                    expect,
                    cmd: rest.to_vec(),
                });
            }
            "!await" => action = Some(Action::Await),
            "!pending" => action = Some(Action::Pending),
            "!wait-blocked" => {
                let n = words
                    .get(1)
                    .and_then(|w| word_str(w).parse().ok())
                    .ok_or_else(|| err("!wait-blocked N"))?;
                action = Some(Action::WaitBlocked(n));
            }
            "!send" => action = Some(Action::Send(one_bytes(&words)?)),
            "!sendn" => {
                // !sendn N "bytes": the bytes repeated N times, in one write.
                let n: usize = words
                    .get(1)
                    .and_then(|w| word_str(w).parse().ok())
                    .ok_or_else(|| err("!sendn N \"bytes\""))?;
                if words.len() != 3 {
                    return Err(err("!sendn N \"bytes\""));
                }
                action = Some(Action::Send(words[2].repeat(n)));
            }
            "!noreply" => {
                let ms = match words.get(1) {
                    Some(w) => word_str(w).parse().map_err(|_| err("!noreply [MS]"))?,
                    None => 100,
                };
                action = Some(Action::NoReply(ms));
            }
            "!raw" => {
                // !raw = !send + !read 1; modifiers apply to the read.
                let bytes = one_bytes(&words)?;
                steps.push(Step {
                    line,
                    text: text.to_string(),
                    conn: conn.clone(),
                    switch: false,
                    action: Some(Action::Send(bytes)),
                    mods: Modifiers::default(),
                });
                action = Some(Action::Read(1));
            }
            "!read" => {
                let n = match words.get(1) {
                    Some(w) => word_str(w).parse().map_err(|_| err("!read [N]"))?,
                    None => 1,
                };
                action = Some(Action::Read(n));
            }
            "!closed" => action = Some(Action::Closed),
            "!reconnect" => action = Some(Action::Reconnect),
            "!disconnect" => action = Some(Action::Disconnect),
            "!scan" => action = Some(Action::Scan(words[1..].to_vec())),
            "!repeat" => {
                for c in expand_repeat(&words[1..], line)? {
                    let shown: Vec<String> =
                        c.iter().map(|w| crate::common::resp::escape(w)).collect();
                    steps.push(Step {
                        line,
                        text: format!("{} (from: {text})", shown.join(" ")),
                        conn: conn.clone(),
                        switch: false,
                        action: Some(Action::Command(c)),
                        mods: mods.clone(),
                    });
                }
                mods = Modifiers::default();
                continue;
            }
            h if h.starts_with('!') => return Err(err("unknown directive")),
            _ => action = Some(Action::Command(words)),
        }
        steps.push(Step {
            line,
            text: text.to_string(),
            conn,
            switch: false,
            action,
            mods: std::mem::take(&mut mods),
        });
    }
    if let Some((start, _)) = pipeline {
        return Err(ParseError {
            line: start,
            msg: "!pipeline without !end".into(),
        });
    }
    if mods.masks.len() + mods.capture.iter().count() + mods.expect.iter().count() > 0 {
        return Err(ParseError {
            line: src.lines().count(),
            msg: "modifier directive at end of script".into(),
        });
    }
    Ok(steps)
}
