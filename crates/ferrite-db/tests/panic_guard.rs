//! A command that panics under the store lock leaves nothing in the commit
//! log (its half-applied effects are dropped, not carried by the next
//! record) and the database refuses writes from then on; reads go on, and a
//! restart recovers the last logged state.

use bytes::Bytes;
use ferrite_db::cmd::{self, Executed};
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::persist::{self, Commit, Persistence};
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use ferrite_db::store::Value;
use std::sync::Arc;

fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

fn open(dir: &std::path::Path) -> Arc<Shared> {
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let shared = Shared::new(cfg);
    let (p, _) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(persist::install(&shared, p));
    shared
}

#[test]
fn a_panicking_command_is_not_logged_and_stops_writes() {
    let dir = std::env::temp_dir().join(format!("ferrite-db-panic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shared = open(&dir);
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["SET", "a", "1"])), Reply::ok());

    let (done, commit) = {
        let mut store = shared.store.lock();
        let ran = cmd::guarded(&shared, &mut store, |store| {
            // Half of a write: applied in memory and logged, then a bug.
            store.dbs[0].insert(Bytes::from("half"), Value::String(Bytes::from("x")));
            store.log_effect(0, &argv(&["SET", "half", "x"]));
            panic!("a bug in a handler");
        });
        match ran {
            Ok(_) => panic!("the panic was not caught"),
            Err(reply) => (Executed::Reply(reply), Commit::Done),
        }
    };
    match done {
        Executed::Reply(Reply::Error(e)) => {
            let e = String::from_utf8_lossy(&e).into_owned();
            assert!(e.contains("a bug in a handler"), "{e}");
        }
        _ => panic!("a panicking command must reply an error"),
    }
    assert!(matches!(commit, Commit::Done));
    assert_eq!(shared.store.lock().pending_cmds, 0);

    // Writes are refused, reads go on.
    match s.call(argv(&["SET", "b", "2"])) {
        Reply::Error(e) => assert!(e.starts_with(b"MISCONF"), "{e:?}"),
        r => panic!("a write after a panic was accepted: {r:?}"),
    }
    assert_eq!(s.call(argv(&["GET", "a"])), Reply::Bulk(Bytes::from("1")));

    // A restart recovers exactly what was logged: `a`, not the half write.
    drop(s);
    if let Some(p) = shared.persist.get() {
        p.kick();
        p.sync().unwrap_or_else(|e| panic!("{e}"));
        p.close().unwrap_or_else(|e| panic!("{e}"));
    }
    drop(shared);
    let shared = open(&dir);
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["GET", "a"])), Reply::Bulk(Bytes::from("1")));
    assert_eq!(s.call(argv(&["GET", "half"])), Reply::Null);
    assert_eq!(s.call(argv(&["SET", "b", "2"])), Reply::ok());
    let _ = std::fs::remove_dir_all(&dir);
}
