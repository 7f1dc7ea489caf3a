//! Starting and stopping redis-server / ferrite for tests.
//!
//! Each server gets a fresh temp dir (its `--dir`, also holding its log), a
//! free port picked at run time, and is waited for with PING (bounded); the
//! child is killed and the dir removed on drop, also when a test panics.
//!
//! Restart tests use [`Launch`] instead: it starts the binary on a data dir
//! the test owns (so the next process sees the same files), with extra flags,
//! environment variables or a shell prefix (`ulimit`), and [`Server`] then
//! offers SIGKILL ([`Server::kill9`]), SIGTERM ([`Server::terminate`]) and a
//! bounded wait for the exit ([`Server::wait_exit`]).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::{Reply, RespConn};

/// How long a server may take to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Ferrite,
}

/// Extra redis-server options that make replies deterministic and equal to
/// what a fresh Ferrite reports (defaults spelled out so a changed packaged
/// redis.conf cannot move them).
pub const REDIS_DETERMINISTIC_ARGS: &[&str] = &[
    "--daemonize",
    "no",
    "--protected-mode",
    "no",
    "--appendonly",
    "no",
    "--save",
    "",
    "--databases",
    "16",
    "--hz",
    "10",
    "--io-threads",
    "1",
    "--timeout",
    "0",
    "--activedefrag",
    "no",
    "--latency-tracking",
    "no",
    "--lazyfree-lazy-user-del",
    "no",
    "--lazyfree-lazy-user-flush",
    "no",
    "--stream-node-max-entries",
    "100",
    "--stream-node-max-bytes",
    "4096",
    "--proto-max-bulk-len",
    "512mb",
    "--client-query-buffer-limit",
    "1gb",
    "--requirepass",
    "",
    "--always-show-logo",
    "no",
    "--loglevel",
    "notice",
    "--logfile",
    "",
];

/// Whether the Ferrite side is a second redis-server (`FERRITE_DIFF_SELF=1`).
pub fn self_test_mode() -> bool {
    std::env::var("FERRITE_DIFF_SELF")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// The reference redis-server (REDIS_SERVER, else the first in PATH),
/// checked to be Redis 7.0: the differential tests compare against 7.0's
/// replies, and another version (Ubuntu 22.04 ships 6.0) would fail them
/// for its own differences, or pass where 7.0 would not.
pub fn redis_server_path() -> Result<PathBuf, String> {
    static CHECKED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let p = find_redis_server()?;
            let out = std::process::Command::new(&p)
                .arg("--version")
                .output()
                .map_err(|e| format!("cannot run {} --version: {e}", p.display()))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let version = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("unknown");
            if !version.starts_with("7.0.") {
                return Err(format!(
                    "{} is Redis {version}; the differential tests compare against Redis 7.0 \
                     (./scripts/setup.sh installs Debian bookworm's 7.0.15; or point REDIS_SERVER \
                     at a 7.0 binary, or build with FERRITE_SKIP_DIFF=1 to mark them ignored)",
                    p.display()
                ));
            }
            Ok(p)
        })
        .clone()
}

fn find_redis_server() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("REDIS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!(
            "REDIS_SERVER={} is not a file (differential tests need redis-server 7.0; \
             build with FERRITE_SKIP_DIFF=1 to mark them ignored)",
            p.display()
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("redis-server");
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(
        "redis-server was not found in PATH (differential tests need it). Install it with \
         `apt-get install redis-server redis-tools` (CI installs it the same way), point \
         REDIS_SERVER at a binary, or run with FERRITE_SKIP_DIFF=1 to mark the differential \
         tests ignored."
            .to_string(),
    )
}

pub fn ferrite_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferrite"))
}

/// Ports handed out by this process, so two tests never race for the same one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn pick_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        drop(l);
        let mut g = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no fresh free port found"))
}

/// A temp directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "ferrite-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server process.
pub struct Server {
    pub kind: Kind,
    /// "redis" or "ferrite" (the role), for messages.
    pub label: String,
    pub port: u16,
    child: Child,
    log: PathBuf,
    /// The `--dir` the server runs in.
    data_dir: PathBuf,
    /// Set once the process has been reaped (kill9, wait_exit).
    exited: Option<ExitStatus>,
    // Declared last: removed after the child is gone. `None` when the dir
    // belongs to the test (see [`Launch::dir`]).
    _owned_dir: Option<TempDir>,
}

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How to start a server on a data directory the test owns, so that the next
/// process can be started on the same files (restart and crash tests).
#[derive(Clone, Debug)]
pub struct Launch {
    kind: Kind,
    label: String,
    dir: Option<PathBuf>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    shell_prefix: Option<String>,
    wait_ready: bool,
}

impl Launch {
    pub fn new(kind: Kind, label: &str) -> Launch {
        Launch {
            kind,
            label: label.to_string(),
            dir: None,
            extra: Vec::new(),
            env: Vec::new(),
            shell_prefix: None,
            wait_ready: true,
        }
    }

    pub fn ferrite(label: &str) -> Launch {
        Launch::new(Kind::Ferrite, label)
    }

    /// Run in `dir` (not removed on drop; the test owns it). Each process's
    /// output goes to its own `server-<n>.log` there.
    pub fn dir(mut self, dir: &Path) -> Launch {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Extra command-line arguments (after `--port --bind --dir`).
    pub fn args(mut self, extra: &[&str]) -> Launch {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Start through `/bin/sh -c '<prefix> exec <binary> <args>'`, e.g.
    /// `trap '' XFSZ; ulimit -f 64;`. The shell `exec`s the server, so the
    /// pid (and SIGKILL) is the server's.
    pub fn shell_prefix(mut self, prefix: &str) -> Launch {
        self.shell_prefix = Some(prefix.to_string());
        self
    }

    /// Return as soon as the process is spawned, without waiting for
    /// readiness (to kill a server in the middle of its recovery).
    pub fn no_wait(mut self) -> Launch {
        self.wait_ready = false;
        self
    }

    /// Start the server and wait (bounded) until it is ready, retrying on
    /// another port if the chosen one was taken.
    pub fn start(&self) -> Result<Server, String> {
        let mut errors = Vec::new();
        for attempt in 0..5 {
            match try_start(self) {
                Ok(s) => return Ok(s),
                Err((msg, retry)) => {
                    errors.push(format!("attempt {}: {msg}", attempt + 1));
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(format!(
            "could not start {} ({:?}):\n{}",
            self.label,
            self.kind,
            errors.join("\n")
        ))
    }

    /// Start the server expecting it to **exit** by itself (e.g. refusing a
    /// corrupt log) within `timeout`. Returns the exit status and everything
    /// it printed; an error if it became ready or did not exit in time (the
    /// process is killed then).
    pub fn run_to_exit(&self, timeout: Duration) -> Result<(ExitStatus, String), String> {
        let mut spec = self.clone();
        spec.wait_ready = false;
        let mut s = try_start(&spec).map_err(|(m, _)| m)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                s.exited = Some(status);
                return Ok((status, s.log_text()));
            }
            if s.log_text().contains("Ready to accept connections") {
                return Err(format!(
                    "{} became ready instead of exiting:\n{}",
                    s.label,
                    s.log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not exit within {timeout:?}:\n{}",
                    s.label,
                    s.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn try_start(spec: &Launch) -> Result<Server, (String, bool)> {
    let (owned, data_dir, log) = match &spec.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| (format!("dir {}: {e}", d.display()), false))?;
            let n = LOG_COUNTER.fetch_add(1, Ordering::SeqCst);
            (None, d.clone(), d.join(format!("server-{n}.log")))
        }
        None => {
            let t = TempDir::new(&spec.label).map_err(|e| (format!("temp dir: {e}"), false))?;
            let p = t.path().to_path_buf();
            let log = p.join("server.log");
            (Some(t), p, log)
        }
    };
    let port = pick_port().map_err(|e| (format!("pick port: {e}"), true))?;
    let logf = std::fs::File::create(&log).map_err(|e| (format!("log file: {e}"), false))?;
    let logf2 = logf
        .try_clone()
        .map_err(|e| (format!("log file: {e}"), false))?;
    let port_s = port.to_string();
    let dir_s = data_dir.to_string_lossy().to_string();
    let (program, mut args): (PathBuf, Vec<String>) = match spec.kind {
        Kind::Redis => {
            let mut a: Vec<String> = ["--port", &port_s, "--bind", "127.0.0.1", "--dir", &dir_s]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(REDIS_DETERMINISTIC_ARGS.iter().map(|s| s.to_string()));
            (redis_server_path().map_err(|e| (e, false))?, a)
        }
        Kind::Ferrite => (
            ferrite_path(),
            ["--port", &port_s, "--bind", "127.0.0.1", "--dir", &dir_s]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    };
    args.extend(spec.extra.iter().cloned());
    let mut cmd = match &spec.shell_prefix {
        None => {
            let mut c = Command::new(&program);
            c.args(&args);
            c
        }
        Some(prefix) => {
            let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
            let mut line = format!("{prefix} exec {}", quote(&program.to_string_lossy()));
            for a in &args {
                line.push(' ');
                line.push_str(&quote(a));
            }
            let mut c = Command::new("/bin/sh");
            c.args(["-c", &line]);
            c
        }
    };
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(logf))
        .stderr(Stdio::from(logf2));
    let child = cmd
        .spawn()
        .map_err(|e| (format!("spawn {:?}: {e}", cmd.get_program()), false))?;
    let mut server = Server {
        kind: spec.kind,
        label: spec.label.clone(),
        port,
        child,
        log,
        data_dir,
        exited: None,
        _owned_dir: owned,
    };
    if !spec.wait_ready {
        return Ok(server);
    }
    match server.wait_ready() {
        Ok(()) => Ok(server),
        Err((msg, retry)) => Err((
            format!("{msg}\n--- server output ---\n{}", server.log_tail(30)),
            retry,
        )),
    }
}

impl Server {
    /// Starts a server of `kind`, retrying on another port if it fails to bind.
    pub fn start(kind: Kind, label: &str) -> Result<Server, String> {
        Self::start_with(kind, label, &[])
    }

    /// Like [`Server::start`], with extra command-line arguments.
    pub fn start_with(kind: Kind, label: &str, extra: &[&str]) -> Result<Server, String> {
        let mut errors = Vec::new();
        for attempt in 0..5 {
            match Self::try_start(kind, label, extra) {
                Ok(s) => return Ok(s),
                Err((msg, retry)) => {
                    errors.push(format!("attempt {}: {msg}", attempt + 1));
                    if !retry {
                        break;
                    }
                }
            }
        }
        let hint = match kind {
            Kind::Ferrite => format!(
                "\n(binary: {}; FERRITE_DIFF_SELF=1 runs the tests against a second redis-server \
                 to check the harness and the scripts)",
                ferrite_path().display()
            ),
            Kind::Redis => String::new(),
        };
        Err(format!(
            "could not start {label} ({kind:?}):\n{}{hint}",
            errors.join("\n")
        ))
    }

    fn try_start(kind: Kind, label: &str, extra: &[&str]) -> Result<Server, (String, bool)> {
        try_start(&Launch::new(kind, label).args(extra))
    }

    /// Waits (bounded) for the "Ready to accept connections" line and a PONG.
    fn wait_ready(&mut self) -> Result<(), (String, bool)> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut logged_ready = false;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_text();
                let bind_problem =
                    log.contains("in use") || log.contains("bind") || log.contains("Address");
                return Err((
                    format!("server exited before it was ready ({status})"),
                    bind_problem,
                ));
            }
            if !logged_ready {
                logged_ready = self.log_text().contains("Ready to accept connections");
            }
            if logged_ready {
                if let Ok(mut c) = RespConn::connect(self.addr(), Duration::from_millis(500)) {
                    if c.send(b"*1\r\n$4\r\nPING\r\n").is_ok() {
                        match c.read_reply(Duration::from_millis(1000)) {
                            // +PONG, or an error such as -NOAUTH: the server answers.
                            Reply::Frame { raw, .. }
                                if raw == b"+PONG\r\n" || raw.starts_with(b"-") =>
                            {
                                // A server that failed to bind may still have
                                // answered for another process: check we are alive.
                                if let Ok(Some(status)) = self.child.try_wait() {
                                    return Err((format!("server exited ({status})"), true));
                                }
                                return Ok(());
                            }
                            _ => {}
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err((
                    format!(
                        "not ready within {:?} (ready line seen: {logged_ready}, no PONG on port {})",
                        STARTUP_TIMEOUT, self.port
                    ),
                    false,
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id (the server's, also when started through a shell).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) -> Result<ExitStatus, String> {
        if let Some(st) = self.exited {
            return Ok(st);
        }
        let _ = self.child.kill();
        let st = self
            .child
            .wait()
            .map_err(|e| format!("wait for {} after SIGKILL: {e}", self.label))?;
        self.exited = Some(st);
        Ok(st)
    }

    /// Send SIGTERM (the shell's built-in `kill`: no libc dependency, and no
    /// need for procps in a minimal image).
    pub fn terminate(&mut self) -> Result<(), String> {
        let st = Command::new("/bin/sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .map_err(|e| format!("run kill -TERM: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("kill -TERM {} failed: {st}", self.child.id()))
        }
    }

    /// Wait (bounded) for the process to exit by itself; on timeout it is
    /// killed and an error returned.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(st) = self.exited {
            return Ok(st);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.exited = Some(st);
                    return Ok(st);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("wait for {}: {e}", self.label)),
            }
            if Instant::now() >= deadline {
                let _ = self.kill9();
                return Err(format!(
                    "{} did not exit within {timeout:?}; killed. Output:\n{}",
                    self.label,
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The file holding this process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn connect(&self) -> Result<RespConn, String> {
        RespConn::connect(self.addr(), Duration::from_secs(5))
            .map_err(|e| format!("connect to {} at {}: {e}", self.label, self.addr()))
    }

    /// Everything the server printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines the server printed.
    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The two servers of a differential test: the reference redis-server and
/// Ferrite (a second redis-server in self-test mode).
pub struct Pair {
    pub redis: Server,
    pub ferrite: Server,
}

impl Pair {
    pub fn start() -> Result<Pair, String> {
        Pair::start_with(&[], &[])
    }

    /// Like [`Pair::start`], with extra command-line arguments for Ferrite
    /// (not given to the second redis-server in self-test mode) and for both.
    pub fn start_with(ferrite_extra: &[&str], both: &[&str]) -> Result<Pair, String> {
        let (ferrite_kind, mut extra): (Kind, Vec<String>) = if self_test_mode() {
            (Kind::Redis, Vec::new())
        } else {
            (
                Kind::Ferrite,
                ferrite_extra.iter().map(|s| s.to_string()).collect(),
            )
        };
        extra.extend(both.iter().map(|s| s.to_string()));
        // Start both at once: startup is most of a short test's time.
        let f = std::thread::spawn(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            Server::start_with(ferrite_kind, "ferrite", &extra)
        });
        let redis = Server::start_with(Kind::Redis, "redis", both);
        let ferrite = f
            .join()
            .map_err(|_| "ferrite start thread panicked".to_string())?;
        Ok(Pair {
            redis: redis?,
            ferrite: ferrite?,
        })
    }
}

/// Starts the server under test alone (for plain client tests): Ferrite, or
/// redis-server in self-test mode.
pub fn start_ferrite() -> Result<Server, String> {
    if self_test_mode() {
        Server::start(Kind::Redis, "ferrite")
    } else {
        Server::start(Kind::Ferrite, "ferrite")
    }
}
