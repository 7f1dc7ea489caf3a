//! Two checkpoint slots, end to end: a newest checkpoint whose body this
//! build cannot decode (its checksum is fine: an encoder/decoder mismatch)
//! does not lose data: recovery sets it aside and rebuilds everything from
//! the checkpoint before it and the longer log after that one.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::persist::{self, Persistence};
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use ferrite_storage::checkpoint::{decode_checkpoint, encode_checkpoint};
use std::sync::Arc;

fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

fn open(dir: &std::path::Path) -> Result<Arc<Shared>, String> {
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    cfg.set_startup("stream-node-max-entries", "5")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let shared = Shared::new(cfg);
    let (p, _) = Persistence::open(&shared, false)?;
    assert!(persist::install(&shared, p));
    Ok(shared)
}

fn checkpoints(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    v.sort();
    v
}

#[test]
fn an_undecodable_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = std::env::temp_dir().join(format!("ferrite-db-two-slots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));

    // Two clean shutdowns, each writing a checkpoint; writes in between.
    let shared = open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Session::attach(shared.clone());
    for i in 1..=40 {
        s.call(argv(&["XADD", "s", &format!("{i}-1"), "f", "v"]));
    }
    s.call(argv(&["SET", "a", "1"]));
    drop(s);
    persist::shutdown(&shared);
    drop(shared);
    let shared = open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Session::attach(shared.clone());
    for i in 41..=60 {
        s.call(argv(&["XADD", "s", &format!("{i}-1"), "f", "v"]));
    }
    s.call(argv(&["SET", "b", "2"]));
    drop(s);
    persist::shutdown(&shared);
    drop(shared);
    let cps = checkpoints(&dir);
    assert_eq!(cps.len(), 2, "two slots: {cps:?}");

    // The newest one's body is damaged behind a valid checksum.
    let newest = cps[1].clone();
    let bytes = std::fs::read(&newest).unwrap_or_else(|e| panic!("{e}"));
    let cp = decode_checkpoint(&newest, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let mut body = cp.body.clone();
    body.truncate(body.len() / 2);
    std::fs::write(
        &newest,
        encode_checkpoint(cp.covered_seq, cp.body_version, &body),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let shared = open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["XLEN", "s"])), Reply::Int(60));
    assert_eq!(s.call(argv(&["GET", "a"])), Reply::Bulk(Bytes::from("1")));
    assert_eq!(s.call(argv(&["GET", "b"])), Reply::Bulk(Bytes::from("2")));
    let mut bad = newest.into_os_string();
    bad.push(".bad");
    assert!(
        std::path::Path::new(&bad).exists(),
        "set aside, not deleted"
    );
    drop(s);
    persist::shutdown(&shared);
    let _ = std::fs::remove_dir_all(&dir);
}
