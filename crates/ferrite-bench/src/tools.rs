//! Harness helpers: readiness and recovery probes, free ports, an fsync
//! latency probe, key cleanup. All bounded in time.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::bail;
use crate::closed::Target;
use crate::error::{Error, Result};
use crate::resp::{self, expect_int, Frame};
use crate::stats::{ResultLine, Samples};

#[derive(Args, Debug)]
pub struct ReadyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// The server's process id: fail at once if it exits.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Instead of PING, poll `XLEN KEY` ...
    #[arg(long)]
    pub key: Option<String>,
    /// ... until it equals this (data fully recovered).
    #[arg(long)]
    pub expect_len: Option<u64>,
    /// Report `ready_ms` from this wall-clock instant (ns since the Unix
    /// epoch, e.g. `date +%s%N` just before the server was started).
    #[arg(long)]
    pub since_epoch_ns: Option<u128>,
    /// Milliseconds between polls.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
}

/// Whether `pid` is a live (not zombie) process.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(s[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
    }
}

async fn probe_once(a: &ReadyArgs) -> Result<()> {
    let mut t = a.target.clone();
    t.reply_timeout = t.reply_timeout.min(2.0);
    let mut c = t.connect().await?;
    match &a.key {
        None => {
            let f = c.call(&[b"PING"]).await?;
            match f {
                Frame::SimpleString(s) if s.as_ref() == b"PONG" => Ok(()),
                other => bail!("PING: expected +PONG, got {}", resp::describe(&other)),
            }
        }
        Some(key) => {
            let f = c.call(&[b"XLEN", key.as_bytes()]).await?;
            let n = expect_int(&f, "XLEN")?;
            match a.expect_len {
                Some(want) if n != want as i64 => bail!("XLEN {key} is {n}, waiting for {want}"),
                _ => Ok(()),
            }
        }
    }
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Polls until the server answers (PING, or XLEN == expected), the process
/// dies, or the timeout passes.
pub async fn ready(a: ReadyArgs) -> Result<ResultLine> {
    let started = Instant::now();
    let limit = Duration::from_secs_f64(a.timeout.max(0.0));
    let mut polls = 0u64;
    let mut last_err = String::from("no attempt yet");
    loop {
        if let Some(pid) = a.pid {
            if !process_alive(pid) {
                bail!(
                    "server process {pid} exited before it was ready (last probe: {last_err}); see its log"
                );
            }
        }
        polls += 1;
        match probe_once(&a).await {
            Ok(()) => break,
            Err(e) => last_err = e.to_string(),
        }
        if started.elapsed() >= limit {
            bail!(
                "{} not ready within {limit:?} after {polls} polls; last probe: {last_err}",
                a.target.addr
            );
        }
        tokio::time::sleep(Duration::from_millis(a.poll_ms.max(1))).await;
    }
    let mut r = ResultLine::new();
    if let Some(since) = a.since_epoch_ns {
        let ms = epoch_ns().saturating_sub(since) as f64 / 1e6;
        r.num("ready_ms", ms);
    }
    r.num("waited_ms", started.elapsed().as_secs_f64() * 1e3)
        .int("polls", polls);
    Ok(r)
}

#[derive(Args, Debug)]
pub struct FreePortArgs {
    /// How many distinct ports to print (all bound at once, then released).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
}

pub fn free_ports(a: FreePortArgs) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let l = TcpListener::bind("127.0.0.1:0")?;
        held.push(l);
    }
    held.iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<Result<Vec<u16>>>()
}

#[derive(Args, Debug)]
pub struct FsyncProbeArgs {
    /// Directory on the disk the servers write to.
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of append + fdatasync rounds.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Bytes appended before each fdatasync.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
}

/// Appends `size` bytes and calls fdatasync (what Redis's appendfsync does),
/// `count` times; reports the latency of each append+fdatasync.
pub fn fsync_probe(a: FsyncProbeArgs) -> Result<ResultLine> {
    let path = a.dir.join(format!(".fsync-probe-{}", std::process::id()));
    let run = || -> Result<Samples> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::msg(format!("open {}: {e}", path.display())))?;
        let buf = vec![0x5au8; a.size];
        let mut s = Samples::with_cap(a.count);
        for _ in 0..a.count {
            let t = Instant::now();
            f.write_all(&buf)?;
            f.sync_data()?;
            s.push(t.elapsed().as_nanos() as u64);
        }
        Ok(s)
    };
    let res = run();
    let _ = std::fs::remove_file(&path);
    let p = match res?.percentiles() {
        Some(p) => p,
        None => bail!("fsync probe: --count must be at least 1"),
    };
    let mut r = ResultLine::new();
    r.int("size", a.size as u64).latency(Some(p));
    Ok(r)
}

#[derive(Args, Debug)]
pub struct DelArgs {
    #[command(flatten)]
    pub target: Target,
    /// Key to delete ...
    #[arg(long)]
    pub key: String,
    /// ... or, with this, keys `KEY:0` .. `KEY:<N-1>`.
    #[arg(long)]
    pub numbered: Option<u64>,
}

/// Deletes benchmark keys (pipelined 100 at a time).
pub async fn del(a: DelArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    c.timeout = c.timeout.max(Duration::from_secs(60));
    let keys: Vec<String> = match a.numbered {
        None => vec![a.key.clone()],
        Some(n) => (0..n).map(|i| format!("{}:{i}", a.key)).collect(),
    };
    let mut deleted = 0i64;
    for chunk in keys.chunks(100) {
        for k in chunk {
            c.push(&[b"DEL", k.as_bytes()]);
        }
        c.flush().await?;
        for _ in chunk {
            let f = resp::check_not_error(c.read().await?, "DEL")?;
            deleted += expect_int(&f, "DEL")?;
        }
    }
    let mut r = ResultLine::new();
    r.int("deleted", deleted.max(0) as u64);
    Ok(r)
}
