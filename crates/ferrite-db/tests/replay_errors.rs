//! A command in the commit log that fails on replay stops the start-up,
//! naming the record, unless `replay-errors skip` says otherwise (then it is
//! counted and logged).

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::persist::{self, Persistence};
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use std::sync::Arc;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-db-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn config(dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    for (k, v) in extra {
        cfg.set_startup(k, v).unwrap_or_else(|e| panic!("{e:?}"));
    }
    cfg
}

fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

/// A data directory whose log holds `SET k v`, then a record with a command
/// this build does not know, then `SET k2 v2`.
fn dir_with_a_failing_record(tag: &str) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    let shared = Shared::new(config(&dir, &[]));
    let (p, _) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(persist::install(&shared, p.clone()));
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["SET", "k", "v"])), Reply::ok());
    let mut cmds = Vec::new();
    persist::put_cmd_parts::<&[u8]>(&mut cmds, 0, &[b"NOSUCHCOMMAND", b"x"], &[]);
    p.append_encoded(&cmds, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.call(argv(&["SET", "k2", "v2"])), Reply::ok());
    drop(s);
    p.kick();
    p.sync().unwrap_or_else(|e| panic!("{e}"));
    p.close().unwrap_or_else(|e| panic!("{e}"));
    dir
}

#[test]
fn a_failing_command_on_replay_stops_the_start_and_names_the_record() {
    let dir = dir_with_a_failing_record("replay-stop");
    let shared = Shared::new(config(&dir, &[]));
    let err = match Persistence::open(&shared, false) {
        Ok(_) => panic!("started although a logged command fails on replay"),
        Err(e) => e,
    };
    assert!(
        err.contains("commit log record 3, command 0 (NOSUCHCOMMAND)"),
        "the refusal must name the record and the command: {err}"
    );
    assert!(err.contains("replay-errors skip"), "no hint: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_errors_skip_counts_the_failure_and_keeps_everything_else() {
    let dir = dir_with_a_failing_record("replay-skip");
    let shared: Arc<Shared> = Shared::new(config(&dir, &[("replay-errors", "skip")]));
    let (p, rec) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.replay_errors, 1);
    assert!(persist::install(&shared, p));
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["GET", "k"])), Reply::Bulk(Bytes::from("v")));
    assert_eq!(s.call(argv(&["GET", "k2"])), Reply::Bulk(Bytes::from("v2")));
    let _ = std::fs::remove_dir_all(&dir);
}
