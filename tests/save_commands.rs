//! SAVE, BGSAVE and BGREWRITEAOF write a checkpoint (which also compacts
//! the commit log), with Redis's replies; without persistence they refuse.
mod common;

use std::time::{Duration, Instant};

use common::server::Launch;
use common::state::{call_str, info_field, text};

fn written(c: &mut common::conn::RespConn) -> u64 {
    info_field(c, "persistence", "checkpoints_written")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoints_written"))
}

/// Wait (bounded) until `checkpoints_written` reaches `n`.
fn wait_written(c: &mut common::conn::RespConn, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while written(c) < n {
        assert!(Instant::now() < deadline, "no checkpoint within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn save_bgsave_and_bgrewriteaof_write_checkpoints() {
    let s = Launch::ferrite("save")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = s.connect().unwrap_or_else(|e| panic!("{e}"));
    call_str(&mut c, &["SET", "k", "v"]);
    let n0 = written(&mut c);
    assert_eq!(text(&call_str(&mut c, &["SAVE"])), "OK");
    assert_eq!(
        written(&mut c),
        n0 + 1,
        "SAVE replies once its checkpoint is written"
    );
    assert_eq!(
        text(&call_str(&mut c, &["BGSAVE"])),
        "Background saving started"
    );
    wait_written(&mut c, n0 + 2);
    assert_eq!(
        text(&call_str(&mut c, &["BGREWRITEAOF"])),
        "Background append only file rewriting started"
    );
    wait_written(&mut c, n0 + 3);
    assert!(call_str(&mut c, &["BGSAVE", "nonsense"]).is_error());
}

#[test]
fn without_persistence_they_refuse() {
    let s = Launch::ferrite("nosave")
        .args(&["--appendonly", "no"])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = s.connect().unwrap_or_else(|e| panic!("{e}"));
    for cmd in ["SAVE", "BGSAVE", "BGREWRITEAOF"] {
        assert!(call_str(&mut c, &[cmd]).is_error(), "{cmd}");
    }
}
