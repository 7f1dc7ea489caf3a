//! XREADGROUP without COUNT delivering many entries logs its PEL changes
//! compactly (one XCLAIM per run of up to 1024 IDs sharing consumer, time
//! and count, `cmd::group::xclaim_batch_effects`): the commit-log record grows by
//! a few dozen bytes per delivered entry, not one full XCLAIM (~150 bytes)
//! each. Replay after a SIGKILL gives back the same groups, PELs and
//! delivery times. Small reads (COUNT 10, history reads) are unaffected.
mod common;

use common::server::{Launch, TempDir};
use common::state::{
    argv, assert_same_dump, call_str, dump, info_field, int, items, pipeline, text,
};

const ENTRIES: usize = 20_000;

fn log_bytes(c: &mut common::conn::RespConn) -> i64 {
    info_field(c, "persistence", "commit_log_bytes_since_checkpoint")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no commit_log_bytes_since_checkpoint in INFO"))
}

#[test]
fn large_delivery_is_logged_compactly_and_replays_exactly() {
    let dir = TempDir::new("xreadgroup-log").unwrap_or_else(|e| panic!("{e}"));
    // No checkpoint during the test: the log holds everything to replay.
    let launch = Launch::ferrite("ferrite")
        .dir(dir.path())
        .args(&["--auto-checkpoint-min-size", "1gb"]);
    let mut server = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = server.connect().unwrap_or_else(|e| panic!("{e}"));

    let cmds: Vec<Vec<Vec<u8>>> = (0..ENTRIES)
        .map(|i| argv(&["XADD", "s", &format!("{}-1", i + 1), "f", "v"]))
        .collect();
    let (replies, err) = pipeline(&mut c, &cmds);
    assert!(err.is_none(), "loading: {err:?}");
    assert!(replies.iter().all(|r| !r.is_error()));
    assert_eq!(
        text(&call_str(&mut c, &["XGROUP", "CREATE", "s", "g", "0"])),
        "OK"
    );

    // A normal-sized read first: unchanged.
    let r = call_str(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "a",
            "COUNT",
            "10",
            "STREAMS",
            "s",
            ">",
        ],
    );
    assert_eq!(items(&items(&items(&r)[0])[1]).len(), 10);

    // Everything else, without COUNT, by another consumer.
    let before = log_bytes(&mut c);
    let r = call_str(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "b", "STREAMS", "s", ">"],
    );
    let delivered = items(&items(&items(&r)[0])[1]).len();
    assert_eq!(delivered, ENTRIES - 10);
    let logged = log_bytes(&mut c) - before;
    let per_entry = logged as f64 / delivered as f64;
    // One ID (length-prefixed, ~12 bytes here) per entry, plus a few
    // hundred bytes per batch of 1024: well under one XCLAIM per entry.
    assert!(
        per_entry < 40.0,
        "XREADGROUP logged {logged} bytes for {delivered} entries ({per_entry:.1} per entry)"
    );

    // A history read updates counts and times of consumer a's entries.
    let r = call_str(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "a", "STREAMS", "s", "0"],
    );
    assert_eq!(items(&items(&items(&r)[0])[1]).len(), 10);
    assert_eq!(
        int(&items(&call_str(&mut c, &["XPENDING", "s", "g"]))[0]),
        ENTRIES as i64
    );

    let before_dump = dump(&server, 1);
    server.kill9().unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    let server = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let after_dump = dump(&server, 1);
    assert_same_dump("after SIGKILL and replay", &before_dump, &after_dump);

    // The replayed group goes on as before.
    let mut c = server.connect().unwrap_or_else(|e| panic!("{e}"));
    let r = call_str(&mut c, &["XADD", "s", "*", "f", "v"]);
    assert!(!r.is_error());
    let r = call_str(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "a", "STREAMS", "s", ">"],
    );
    assert_eq!(items(&items(&items(&r)[0])[1]).len(), 1);
}
