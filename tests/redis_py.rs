//! PIPELINE.* through redis-py (tests/clients/pipelines.py), RESP2 and
//! RESP3: a Python application's view. redis-py comes with
//! `scripts/setup.sh` (`make test` runs it first).
mod common;

use std::process::Command;

use common::server::{Launch, TempDir};

#[test]
#[cfg_attr(
    skip_diff,
    ignore = "FERRITE_SKIP_DIFF=1: needs ./scripts/setup.sh (redis-py)"
)]
fn pipelines_work_through_redis_py() {
    let dir = TempDir::new("redis-py").unwrap_or_else(|e| panic!("{e}"));
    let s = Launch::ferrite("redis-py")
        .dir(dir.path())
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pipelines.py");
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("python3")
        .arg(&script)
        .arg(s.addr().port().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e} (run ./scripts/setup.sh)"));
    let _ = child.stdin.take();
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named 'redis'"),
        "redis-py is not installed: run ./scripts/setup.sh\n{text}"
    );
    assert!(out.status.success(), "{text}\n{}", s.log_tail(20));
    assert!(text.contains("redis-py 5.2.1 ok"), "{text}");
}
