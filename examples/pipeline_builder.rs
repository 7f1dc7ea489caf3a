//! A pipeline built from Rust closures, running on an embedded Ferrite
//! database (no socket) with the same exactly-once epochs as a SQL one.
//!
//! `cargo run --release --example pipeline_builder`
//!
//! It opens a database with its commit log in a temporary directory, keeps
//! the clicks of humans (not bots) from `clicks` in `humans` with the
//! path's first segment added, then closes the database, opens it again and
//! defines the pipeline again: it continues from its position, so nothing
//! is written twice.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use ferrite_pipeline::engine::{self, BuilderOptions, Runner};
use ferrite_pipeline::{Event, PipelineBuilder, Plan};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn plan() -> Plan {
    PipelineBuilder::new()
        .source("clicks")
        .filter(|e: &Event<'_>| e.get(b"agent") != Some(&b"bot"[..]))
        .map(|e: &Event<'_>| {
            let path = e.get(b"path").unwrap_or_default();
            let section = path
                .split(|&c| c == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or_default();
            Ok(vec![
                (
                    Bytes::from_static(b"user"),
                    Bytes::copy_from_slice(e.get(b"user").unwrap_or_default()),
                ),
                (
                    Bytes::from_static(b"section"),
                    Bytes::copy_from_slice(section),
                ),
            ])
        })
        .sink("humans")
        .build()
        .expect("a source and a sink are set")
}

/// A database with its commit log in `dir`, the engine installed before
/// recovery, and its runner started after.
fn open(dir: &str) -> Result<(Arc<Shared>, Runner), String> {
    let mut config = Config::default();
    config.dir = dir.to_string();
    let shared = Shared::new(config);
    engine::install(&shared);
    let (p, _recovered) = ferrite_db::persist::Persistence::open(&shared, false)?;
    ferrite_db::persist::install(&shared, p);
    let runner = Runner::start(&shared).ok_or("no pipeline engine")?;
    Ok((shared, runner))
}

fn call(s: &mut Session, args: &[&str]) -> Reply {
    s.call(
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect(),
    )
}

fn xlen(s: &mut Session, key: &str) -> i64 {
    match call(s, &["XLEN", key]) {
        Reply::Int(n) => n,
        r => panic!("XLEN: {r:?}"),
    }
}

/// Waits (at most 10 s) until the pipeline has read all of `clicks`.
fn caught_up(s: &mut Session) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Reply::Map(fields) = call(s, &["PIPELINE.INFO", "humans"]) {
            let lag = fields
                .iter()
                .find(|(k, _)| *k == Reply::bulk_str("lag_entries"));
            if matches!(lag, Some((_, Reply::Int(0)))) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the pipeline did not catch up");
}

fn main() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("ferrite-example-{}", std::process::id()));
    let dir = dir.to_string_lossy().into_owned();

    let (shared, runner) = open(&dir)?;
    let mut s = Session::attach(shared.clone());
    let engine = engine::Engine::get(&shared).ok_or("no engine")?;
    let opts = BuilderOptions {
        from: "0".into(),
        ..BuilderOptions::default()
    };
    engine.create_with_plan(&mut s, "humans", plan(), &opts)?;
    for (user, agent, path) in [
        ("ann", "firefox", "/docs/intro"),
        ("bot7", "bot", "/"),
        ("bob", "curl", "/blog/x"),
    ] {
        call(
            &mut s,
            &[
                "XADD", "clicks", "*", "user", user, "agent", agent, "path", path,
            ],
        );
    }
    caught_up(&mut s);
    println!("humans after the first run: {}", xlen(&mut s, "humans"));
    drop(s);
    runner.stop();
    ferrite_db::persist::shutdown(&shared);
    drop(shared);

    // Again: the definition comes from the program, the position from the log.
    let (shared, runner) = open(&dir)?;
    let mut s = Session::attach(shared.clone());
    let engine = engine::Engine::get(&shared).ok_or("no engine")?;
    engine.create_with_plan(&mut s, "humans", plan(), &opts)?;
    call(
        &mut s,
        &[
            "XADD",
            "clicks",
            "*",
            "user",
            "cy",
            "agent",
            "safari",
            "path",
            "/docs/api",
        ],
    );
    caught_up(&mut s);
    let n = xlen(&mut s, "humans");
    println!("humans after the second run: {n} (3 human clicks, none written twice)");
    assert_eq!(n, 3);
    drop(s);
    runner.stop();
    ferrite_db::persist::shutdown(&shared);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
