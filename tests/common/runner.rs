//! The differential runner: plays a script against redis-server and Ferrite
//! and compares every reply byte for byte (after the masks the script asks for).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::conn::{Reply, RespConn};
use super::resp::{encode_command, escape, escape_short, Node};
use super::script::{parse, Action, Mask, Modifiers, Step, Word};
use super::server::{redis_server_path, self_test_mode, Pair, Server};

/// Bound on every reply read (and on waiting for blocked clients).
pub fn read_timeout() -> Duration {
    let ms = std::env::var("FERRITE_DIFF_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Name of the connection a script starts on.
pub const DEFAULT_CONN: &str = "main";

/// Directory holding the scripts.
pub fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("diff")
}

/// Entry point for one `#[test]`: runs `tests/diff/<name>` differentially.
pub fn run_script(name: &str) {
    run_script_with(name, &[], &[]);
}

/// [`run_script`] with extra command-line arguments for Ferrite and for both.
pub fn run_script_with(name: &str, ferrite_extra: &[&str], both: &[&str]) {
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    let path = scripts_dir().join(name);
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read script {}: {e}", path.display()));
    let steps = parse(&src).unwrap_or_else(|e| panic!("script {name}: parse error at {e}"));
    let pair =
        Pair::start_with(ferrite_extra, both).unwrap_or_else(|e| panic!("script {name}: {e}"));
    let mut runner = Runner::new(name, pair);
    let result = runner.run(&steps);
    if result.is_ok() && !ferrite_extra.is_empty() && !self_test_mode() {
        let field = |f: &str| runner.ferrite_info("persistence", f).unwrap_or_default();
        eprintln!(
            "{name} with {ferrite_extra:?}: checkpoints_written={} block_cache_loads={} \
             block_cache_evicted_bytes={}",
            field("checkpoints_written"),
            field("block_cache_loads"),
            field("block_cache_evicted_bytes")
        );
    }
    if let Err(msg) = result {
        let mut full = msg;
        let _ = write!(
            full,
            "\n--- ferrite side output (last 15 lines){} ---\n{}\n",
            if self_test_mode() {
                ", self-test mode: a second redis-server"
            } else {
                ""
            },
            runner.ferrite_log_tail(15)
        );
        panic!("{full}");
    }
}

struct Side {
    server: Server,
    conns: HashMap<String, RespConn>,
    /// Connections whose blocked command has not been read yet, with send time.
    pending: HashMap<String, Instant>,
    vars: Vec<(String, Vec<u8>)>,
    admin: Option<RespConn>,
}

impl Side {
    fn new(server: Server) -> Side {
        Side {
            server,
            conns: HashMap::new(),
            pending: HashMap::new(),
            vars: Vec::new(),
            admin: None,
        }
    }

    fn conn(&mut self, name: &str) -> Result<&mut RespConn, String> {
        if !self.conns.contains_key(name) {
            let c = self.server.connect()?;
            self.conns.insert(name.to_string(), c);
        }
        self.conns
            .get_mut(name)
            .ok_or_else(|| "connection vanished".to_string())
    }

    /// `${name}` references replaced by this side's captured values.
    fn subst(&self, w: &Word) -> Result<Vec<u8>, String> {
        if !w.windows(2).any(|p| p == b"${") {
            return Ok(w.clone());
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < w.len() {
            if w[i..].starts_with(b"${") {
                if let Some(end) = w[i..].iter().position(|&c| c == b'}') {
                    let name = String::from_utf8_lossy(&w[i + 2..i + end]).into_owned();
                    let val = self
                        .vars
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| format!("variable ${{{name}}} was never captured"))?;
                    out.extend_from_slice(&val);
                    i += end + 1;
                    continue;
                }
            }
            out.push(w[i]);
            i += 1;
        }
        Ok(out)
    }

    fn args(&self, words: &[Word]) -> Result<Vec<Vec<u8>>, String> {
        words.iter().map(|w| self.subst(w)).collect()
    }

    /// `blocked_clients:` from `INFO clients`, on a connection of its own.
    fn blocked_clients(&mut self, t: Duration) -> Result<usize, String> {
        if self.admin.is_none() {
            self.admin = Some(self.server.connect()?);
        }
        let admin = self.admin.as_mut().ok_or("no admin connection")?;
        admin
            .send_command(&[b"INFO".to_vec(), b"clients".to_vec()])
            .map_err(|e| format!("INFO clients: {e}"))?;
        let r = admin.read_reply(t);
        let text = r
            .node()
            .and_then(|n| n.text())
            .map(|t| String::from_utf8_lossy(t).into_owned());
        let Some(text) = text else {
            return Err(format!("INFO clients gave no text reply:\n{}", r.render()));
        };
        text.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("INFO clients has no blocked_clients field:\n{text}"))
    }
}

pub struct Runner {
    script: String,
    redis: Side,
    ferrite: Side,
    current: String,
    timeout: Duration,
}

/// Failure message pieces.
fn side_report(label: &str, r: &Reply, shown: Option<&Node>) -> String {
    let mut s = format!("{label} replied:\n{}", indent(&r.render()));
    if let Some(n) = shown {
        if matches!(r, Reply::Frame { node, .. } if !node.same(n) || node.to_bytes() != n.to_bytes())
        {
            let _ = write!(s, "{label} after masks:\n{}", indent(&n.render()));
        }
    }
    let _ = writeln!(s, "{label} raw: \"{}\"", escape_short(r.raw(), 600));
    s
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn is_hello(args: &[Vec<u8>]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"HELLO"))
}

/// After a HELLO reply: a map means RESP3, an array RESP2.
fn track_protocol(conn: &mut RespConn, args: &[Vec<u8>], reply: &Reply) {
    if is_hello(args) {
        if let Reply::Frame { raw, .. } = reply {
            match raw.first() {
                Some(b'%') => conn.resp3 = true,
                Some(b'*') => conn.resp3 = false,
                _ => {}
            }
        }
    }
}

/// For raw (inline) HELLO: a reply map with `proto` 3 switches to RESP3,
/// an array with `proto` 2 back to RESP2.
fn track_hello_reply(conn: &mut RespConn, reply: &Reply) {
    if let Some(Node::Agg { kind, items }) = reply.node() {
        if (*kind == b'%' || *kind == b'*') && items.len() % 2 == 0 {
            for pair in items.chunks(2) {
                if pair[0].text() == Some(b"proto".as_slice()) {
                    match pair[1].as_int() {
                        Some(3) => conn.resp3 = true,
                        Some(2) => conn.resp3 = false,
                        _ => {}
                    }
                }
            }
        }
    }
}

// ----- masks -------------------------------------------------------------

fn walk(node: &mut Node, f: &mut dyn FnMut(&mut Node) -> bool) {
    if f(node) {
        return;
    }
    if let Node::Agg { items, .. } = node {
        for i in items {
            walk(i, f);
        }
    }
}

/// Calls `f(value)` for every field NAME of a map or of a flat key/value array.
fn for_field(node: &mut Node, name: &[u8], f: &mut dyn FnMut(&mut Node)) {
    if let Node::Agg { kind, items } = node {
        if (*kind == b'%' || *kind == b'*') && items.len() % 2 == 0 {
            for i in (0..items.len()).step_by(2) {
                if items[i]
                    .text()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
                {
                    f(&mut items[i + 1]);
                }
            }
        }
        for i in items.iter_mut() {
            for_field(i, name, f);
        }
    }
}

fn is_auto_id(t: &[u8]) -> bool {
    let Some(dash) = t.iter().position(|&c| c == b'-') else {
        return false;
    };
    let (ms, seq) = (&t[..dash], &t[dash + 1..]);
    ms.len() >= 13
        && ms.iter().all(u8::is_ascii_digit)
        && !seq.is_empty()
        && seq.iter().all(u8::is_ascii_digit)
}

/// CLIENT INFO / CLIENT LIST fields whose values must match.
const STABLE_CLIENT_FIELDS: &[&str] = &[
    "name", "db", "sub", "psub", "ssub", "multi", "flags", "cmd", "user", "redir", "resp",
];

fn normalize_client_info(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let mut out = String::new();
    for line in s.split('\n').filter(|l| !l.is_empty()) {
        let fields: Vec<String> = line
            .trim_end()
            .split(' ')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if STABLE_CLIENT_FIELDS.contains(&k) => format!("{k}={v}"),
                Some((k, _)) => format!("{k}=*"),
                None => kv.to_string(),
            })
            .collect();
        out.push_str(&fields.join(" "));
        out.push('\n');
    }
    out.into_bytes()
}

/// DEBUG OBJECT's status line: field names in order, the values of
/// `refcount` and `encoding` only (addresses, serialized lengths and LRU
/// clocks differ between the servers).
fn normalize_debug_object(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let fields: Vec<String> = s
        .trim_end()
        .split(' ')
        .map(|kv| match kv.split_once(':') {
            Some((k, v)) if k == "refcount" || k == "encoding" => format!("{k}:{v}"),
            Some((k, _)) => format!("{k}:*"),
            None => kv.to_string(),
        })
        .collect();
    fields.join(" ").into_bytes()
}

fn apply_masks(node: &mut Node, mods: &Modifiers, vars: &[(String, Vec<u8>)]) {
    // Captured values come back as ${name}.
    if !vars.is_empty() {
        walk(node, &mut |n| {
            let hit = match n {
                Node::Line { kind: b'+', head } => Some(head.clone()),
                Node::Blob { kind: b'$', data } => Some(data.clone()),
                _ => None,
            };
            if let Some(v) = hit {
                if let Some((name, _)) = vars
                    .iter()
                    .rev()
                    .find(|(_, val)| val.len() >= 3 && *val == v)
                {
                    *n = Node::Masked(format!("${{{name}}}"));
                    return true;
                }
            }
            false
        });
    }
    for m in &mods.masks {
        match m {
            Mask::Ids => walk(node, &mut |n| {
                if matches!(
                    n,
                    Node::Line { kind: b'+', .. } | Node::Blob { kind: b'$', .. }
                ) && n.text().is_some_and(is_auto_id)
                {
                    *n = Node::Masked("auto-id".into());
                    return true;
                }
                false
            }),
            Mask::Field(names) => {
                for name in names {
                    let label = format!("masked {}", String::from_utf8_lossy(name));
                    for_field(node, name, &mut |v| *v = Node::Masked(label.clone()));
                }
            }
            Mask::Int(tol) => {
                if let Some(value) = node.as_int() {
                    *node = Node::Approx { value, tol: *tol };
                }
            }
            Mask::Nth(at, tol) => walk(node, &mut |n| {
                if let Node::Agg { items, .. } = n {
                    if let Some(v) = items.get_mut(*at) {
                        if let Some(value) = v.as_int() {
                            *v = Node::Approx { value, tol: *tol };
                        }
                    }
                }
                false
            }),
            Mask::Approx(name, tol) => for_field(node, name, &mut |v| {
                if let Some(value) = v.as_int() {
                    *v = Node::Approx { value, tol: *tol };
                }
            }),
            Mask::ClientInfo => {
                if let Node::Blob { kind, data } = node {
                    if *kind == b'=' && data.len() >= 4 {
                        let mut d = data[..4].to_vec();
                        d.extend(normalize_client_info(&data[4..]));
                        *data = d;
                    } else {
                        *data = normalize_client_info(data);
                    }
                }
            }
            Mask::DebugObject => {
                if let Node::Line { kind: b'+', head } = node {
                    *head = normalize_debug_object(head);
                }
            }
            Mask::Shape => walk(node, &mut |n| match n {
                Node::Line { kind, head }
                    if !(head == b"-1" && (*kind == b'$' || *kind == b'*')) =>
                {
                    *n = Node::Masked(format!("any {}", *kind as char));
                    true
                }
                Node::Blob { kind, .. } => {
                    *n = Node::Masked(format!("any {}", *kind as char));
                    true
                }
                _ => false,
            }),
            Mask::All => {
                let k = node.to_bytes().first().copied().unwrap_or(b'?');
                *node = Node::Masked(format!("any reply of type {}", k as char));
            }
            Mask::Sort | Mask::SortPairs => {}
        }
    }
    let pairs = mods.masks.iter().any(|m| matches!(m, Mask::SortPairs));
    if pairs || mods.masks.iter().any(|m| matches!(m, Mask::Sort)) {
        if let Node::Agg { kind, items } = node {
            if *kind == b'%' || (pairs && items.len() % 2 == 0) {
                let mut pairs: Vec<(Node, Node)> = Vec::new();
                let mut it = std::mem::take(items).into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs.sort_by_key(|(k, v)| (k.to_bytes(), v.to_bytes()));
                *items = pairs.into_iter().flat_map(|(k, v)| [k, v]).collect();
            } else {
                items.sort_by_key(|n| n.to_bytes());
            }
        }
    }
}

impl Runner {
    pub fn new(script: &str, pair: Pair) -> Runner {
        Runner {
            script: script.to_string(),
            redis: Side::new(pair.redis),
            ferrite: Side::new(pair.ferrite),
            current: DEFAULT_CONN.to_string(),
            timeout: read_timeout(),
        }
    }

    /// Bound on each read (default: [`read_timeout`]).
    pub fn with_timeout(mut self, t: Duration) -> Runner {
        self.timeout = t;
        self
    }

    /// Parses and runs script source text; `Err` holds the failure report.
    pub fn run_source(&mut self, src: &str) -> Result<(), String> {
        let steps =
            parse(src).map_err(|e| format!("script {}: parse error at {e}", self.script))?;
        self.run(&steps)
    }

    /// The last lines the Ferrite side printed.
    pub fn ferrite_log_tail(&self, n: usize) -> String {
        self.ferrite.server.log_tail(n)
    }

    /// A field of Ferrite's `INFO <section>` (on a fresh connection).
    pub fn ferrite_info(&self, section: &str, field: &str) -> Option<String> {
        let mut c = self.ferrite.server.connect().ok()?;
        crate::common::state::info_field(&mut c, section, field)
    }

    fn where_(&self, step: &Step, conn: &str) -> String {
        format!(
            "script {} line {} (connection @{conn}):\n    {}\n",
            self.script, step.line, step.text
        )
    }

    pub fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        for step in steps {
            if step.switch {
                self.current = step.conn.clone().unwrap_or_else(|| DEFAULT_CONN.into());
                continue;
            }
            let conn = step.conn.clone().unwrap_or_else(|| self.current.clone());
            if let Some(action) = &step.action {
                self.step(step, &conn, action)?;
            }
        }
        self.finish()
    }

    /// Both servers still answer, and no blocked command was left unread.
    fn finish(&mut self) -> Result<(), String> {
        for side in [&mut self.redis, &mut self.ferrite] {
            if let Some(c) = side.pending.keys().next() {
                return Err(format!(
                    "script {}: the blocked command on @{c} was never read with !await",
                    self.script
                ));
            }
            if !side.server.alive() {
                return Err(format!(
                    "script {}: {} died during the script",
                    self.script, side.server.label
                ));
            }
            let mut c = side.server.connect()?;
            let _ = c.send(&encode_command(&[b"PING".to_vec()]));
            let r = c.read_reply(self.timeout);
            if r.node().is_none() {
                return Err(format!(
                    "script {}: {} is not healthy after the script: PING got\n{}",
                    self.script,
                    side.server.label,
                    r.render()
                ));
            }
        }
        Ok(())
    }

    fn sides(&mut self) -> [&mut Side; 2] {
        [&mut self.redis, &mut self.ferrite]
    }

    fn step(&mut self, step: &Step, conn: &str, action: &Action) -> Result<(), String> {
        let t = self.timeout;
        match action {
            Action::Command(words) => {
                let mut started = Vec::new();
                let mut all_args = Vec::new();
                for side in self.sides() {
                    let args = side.args(words)?;
                    let c = side.conn(conn)?;
                    let _ = c.send_command(&args);
                    started.push(Instant::now());
                    all_args.push(args);
                }
                let frames = step.mods.replies.unwrap_or(1);
                let mut extra = Vec::new();
                for k in 0..frames {
                    let mut replies = Vec::new();
                    for (i, side) in self.sides().into_iter().enumerate() {
                        let c = side.conn(conn)?;
                        let r = c.read_reply(t);
                        track_protocol(c, &all_args[i], &r);
                        replies.push((r, started[i].elapsed()));
                        let left = c.buffered().to_vec();
                        if k + 1 == frames && !left.is_empty() {
                            extra.push((side.server.label.clone(), left));
                        }
                    }
                    self.compare(step, conn, &step.mods, replies)?;
                }
                // One command, one reply: more bytes already received are a bug
                // (or a script that left replies unread).
                if let Some((label, bytes)) = extra.first() {
                    return Err(format!(
                        "{}{label}: unexpected bytes after the reply: \"{}\"",
                        self.where_(step, conn),
                        escape_short(bytes, 600)
                    ));
                }
                Ok(())
            }
            Action::Pipeline(cmds) => {
                let mut all = Vec::new();
                for side in self.sides() {
                    let mut bytes = Vec::new();
                    let mut args_list = Vec::new();
                    for (_, words) in cmds {
                        let args = side.args(words)?;
                        bytes.extend(encode_command(&args));
                        args_list.push(args);
                    }
                    let _ = side.conn(conn)?.send(&bytes);
                    all.push(args_list);
                }
                for (k, (line, words)) in cmds.iter().enumerate() {
                    let mut replies = Vec::new();
                    for (i, side) in self.sides().into_iter().enumerate() {
                        let c = side.conn(conn)?;
                        let start = Instant::now();
                        let r = c.read_reply(t);
                        track_protocol(c, &all[i][k], &r);
                        replies.push((r, start.elapsed()));
                    }
                    let sub = Step {
                        line: *line,
                        text: format!(
                            "{} (reply {} of the pipeline)",
                            words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
                            k + 1
                        ),
                        conn: None,
                        switch: false,
                        action: None,
                        mods: Modifiers::default(),
                    };
                    self.compare(&sub, conn, &step.mods, replies)?;
                }
                Ok(())
            }
            Action::Blocked { expect, cmd } => {
                for side in self.sides() {
                    let args = side.args(cmd)?;
                    side.conn(conn)?
                        .send_command(&args)
                        .map_err(|e| format!("send: {e}"))?;
                    side.pending.insert(conn.to_string(), Instant::now());
                }
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    let want = expect.unwrap_or(side.pending.len());
                    wait_blocked(side, want, Some(conn), t).map_err(|e| format!("{where_}{e}"))?;
                }
                Ok(())
            }
            Action::WaitBlocked(n) => {
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    wait_blocked(side, *n, None, t).map_err(|e| format!("{where_}{e}"))?;
                }
                Ok(())
            }
            Action::Pending => {
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    if !side.pending.contains_key(conn) {
                        return Err(format!(
                            "{where_}!pending: no blocked command on this connection"
                        ));
                    }
                    let c = side.conn(conn)?;
                    if c.has_data() {
                        let r = c.read_reply(t);
                        return Err(format!(
                            "{where_}{}: the blocked command was answered too early:\n{}",
                            side.server.label,
                            indent(&r.render())
                        ));
                    }
                }
                Ok(())
            }
            Action::Await => {
                let mut replies = Vec::new();
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    let Some(start) = side.pending.remove(conn) else {
                        return Err(format!(
                            "{where_}!await: no blocked command on this connection"
                        ));
                    };
                    let r = side.conn(conn)?.read_reply(t);
                    replies.push((r, start.elapsed()));
                }
                self.compare(step, conn, &step.mods, replies)
            }
            Action::Send(bytes) => {
                for side in self.sides() {
                    let _ = side.conn(conn)?.send(bytes);
                }
                Ok(())
            }
            Action::NoReply(ms) => {
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    let label = side.server.label.clone();
                    let c = side.conn(conn)?;
                    if c.has_data_within(Duration::from_millis(*ms)) {
                        let r = c.read_reply(Duration::from_millis(200));
                        return Err(format!(
                            "{where_}{label}: expected no reply, got:\n{}",
                            indent(&r.render())
                        ));
                    }
                }
                Ok(())
            }
            Action::Read(n) => {
                for _ in 0..*n {
                    let mut replies = Vec::new();
                    for side in self.sides() {
                        let start = Instant::now();
                        let c = side.conn(conn)?;
                        let r = c.read_reply(t);
                        track_hello_reply(c, &r);
                        replies.push((r, start.elapsed()));
                    }
                    self.compare(step, conn, &step.mods, replies)?;
                }
                Ok(())
            }
            Action::Closed => {
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    let label = side.server.label.clone();
                    let (extra, closed) = side.conn(conn)?.expect_closed(t);
                    if !extra.is_empty() {
                        return Err(format!(
                            "{where_}{label}: expected the connection to be closed, got more bytes: \"{}\"",
                            escape_short(&extra, 600)
                        ));
                    }
                    if !closed {
                        return Err(format!(
                            "{where_}{label}: connection still open after {t:?}"
                        ));
                    }
                    side.conns.remove(conn);
                    side.pending.remove(conn);
                }
                Ok(())
            }
            Action::Disconnect => {
                for side in self.sides() {
                    side.conns.remove(conn);
                    side.pending.remove(conn);
                }
                Ok(())
            }
            Action::Reconnect => {
                for side in self.sides() {
                    side.conns.remove(conn);
                    side.pending.remove(conn);
                    side.conn(conn)?;
                }
                Ok(())
            }
            Action::Scan(opts) => {
                let mut sets = Vec::new();
                let where_ = self.where_(step, conn);
                for side in self.sides() {
                    let label = side.server.label.clone();
                    let opts = side.args(opts)?;
                    let c = side.conn(conn)?;
                    sets.push(full_scan(c, &opts, t).map_err(|e| format!("{where_}{label}: {e}"))?);
                }
                if sets[0] != sets[1] {
                    let only = |a: &BTreeSet<Vec<u8>>, b: &BTreeSet<Vec<u8>>| {
                        a.difference(b)
                            .map(|k| format!("\"{}\"", escape(k)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(format!(
                        "{where_}SCAN gathered different keys\n  only redis:   {}\n  only ferrite: {}\n",
                        only(&sets[0], &sets[1]),
                        only(&sets[1], &sets[0])
                    ));
                }
                Ok(())
            }
        }
    }

    fn compare(
        &mut self,
        step: &Step,
        conn: &str,
        mods: &Modifiers,
        replies: Vec<(Reply, Duration)>,
    ) -> Result<(), String> {
        let [(r0, e0), (r1, e1)]: [(Reply, Duration); 2] = replies
            .try_into()
            .map_err(|_| "internal: need two replies".to_string())?;
        let where_ = self.where_(step, conn);
        let masked = |r: &Reply, vars: &[(String, Vec<u8>)]| {
            r.node().map(|n| {
                let mut n = n.clone();
                apply_masks(&mut n, mods, vars);
                n
            })
        };
        if let Some(name) = &mods.capture {
            for (side, r) in [(&mut self.redis, &r0), (&mut self.ferrite, &r1)] {
                let v = r.node().and_then(|n| n.text()).map(|t| t.to_vec());
                let Some(v) = v else {
                    return Err(format!(
                        "{where_}!capture {name}: reply is not a string or integer:\n{}",
                        indent(&r.render())
                    ));
                };
                side.vars.push((name.clone(), v));
            }
        }
        if std::env::var("FERRITE_DIFF_TRACE").is_ok_and(|v| v == "1") {
            eprintln!(
                "[{}:{} @{conn}] {}\n  -> {}",
                self.script,
                step.line,
                step.text,
                escape_short(r0.raw(), 400)
            );
        }
        let m0 = masked(&r0, &self.redis.vars);
        let m1 = masked(&r1, &self.ferrite.vars);
        let report = |why: &str| {
            format!(
                "differential mismatch: {why}\n{where_}{}{}",
                side_report("redis", &r0, m0.as_ref()),
                side_report("ferrite", &r1, m1.as_ref())
            )
        };
        if let Some(exp) = &mods.expect {
            if r0.raw() != exp.as_slice() || !matches!(r0, Reply::Frame { .. }) {
                return Err(report(&format!(
                    "the script's !expect does not hold for redis-server (expected \"{}\")",
                    escape(exp)
                )));
            }
        }
        let ok = match (&r0, &r1, &m0, &m1) {
            (Reply::Frame { .. }, Reply::Frame { .. }, Some(a), Some(b)) => a.same(b),
            (Reply::Closed { partial: a }, Reply::Closed { partial: b }, _, _) => {
                a.is_empty() && b.is_empty()
            }
            _ => false,
        };
        if !ok {
            return Err(report("replies differ"));
        }
        if let Some(min) = mods.min_ms {
            // NOTE: Redis times a block from its cached event-loop clock
            // (`server.mstime`), which can be a few ms older than the
            // moment it read the command: it may reply that much early.
            const CLOCK_SLACK_MS: u64 = 25;
            for (label, e) in [("redis", e0), ("ferrite", e1)] {
                if e < Duration::from_millis(min.saturating_sub(CLOCK_SLACK_MS)) {
                    return Err(report(&format!(
                        "{label} replied after {e:?}, expected at least {min} ms"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn quote(w: &[u8]) -> String {
    let e = escape(w);
    if e.is_empty() || e.contains(' ') || e.contains('\\') || e.contains('"') {
        format!("\"{e}\"")
    } else {
        e
    }
}

/// Polls `INFO clients` until `blocked_clients` equals `want` (bounded); if
/// `conn` has a blocked command, its reply arriving early is an error.
fn wait_blocked(
    side: &mut Side,
    want: usize,
    conn: Option<&str>,
    t: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + t;
    let label = side.server.label.clone();
    loop {
        if let Some(name) = conn {
            let c = side.conn(name)?;
            if c.has_data() {
                let r = c.read_reply(t);
                return Err(format!(
                    "{label}: the command was expected to block, but it was answered:\n{}",
                    indent(&r.render())
                ));
            }
        }
        let n = side.blocked_clients(t)?;
        if n == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{label}: INFO clients reports blocked_clients:{n}, expected {want} within {t:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SCAN from cursor 0 until 0 again; returns the set of keys seen.
fn full_scan(c: &mut RespConn, opts: &[Vec<u8>], t: Duration) -> Result<BTreeSet<Vec<u8>>, String> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..100_000 {
        let mut args = vec![b"SCAN".to_vec(), cursor.clone()];
        args.extend(opts.iter().cloned());
        c.send_command(&args)
            .map_err(|e| format!("send SCAN: {e}"))?;
        let r = c.read_reply(t);
        let items = match r.node() {
            Some(Node::Agg { kind: b'*', items }) if items.len() == 2 => items.clone(),
            _ => return Err(format!("SCAN reply is not [cursor, keys]:\n{}", r.render())),
        };
        let next = items[0]
            .text()
            .map(|t| t.to_vec())
            .ok_or_else(|| format!("bad SCAN cursor:\n{}", r.render()))?;
        match &items[1] {
            Node::Agg {
                kind: b'*',
                items: ks,
            } => {
                for k in ks {
                    keys.insert(
                        k.text()
                            .map(|t| t.to_vec())
                            .ok_or_else(|| format!("bad key in SCAN:\n{}", r.render()))?,
                    );
                }
            }
            _ => return Err(format!("SCAN keys are not an array:\n{}", r.render())),
        }
        if next == b"0" {
            return Ok(keys);
        }
        cursor = next;
    }
    Err("SCAN did not finish within 100000 calls".into())
}
