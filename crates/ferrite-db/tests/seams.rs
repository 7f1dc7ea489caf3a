//! The seams other subsystems (the pipeline engine) stand on: key
//! observers, durability of an embedded call, and subsystem effects logged
//! in the same record as commands and handed back on replay.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::persist::{self, Persistence, Section, Subsystem};
use ferrite_db::reply::Reply;
use ferrite_db::shared::Shared;
use ferrite_db::store::{KeyObserver, Store};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-db-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    cfg
}

#[derive(Default)]
struct Count(AtomicUsize);

impl KeyObserver for Count {
    fn changed(&self, _db: usize, _key: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn an_observer_hears_every_write_to_its_key_until_removed() {
    let mut s = Session::with_config(Config::default());
    let shared = s.shared().clone();
    let seen = Arc::new(Count::default());
    let id = shared
        .store
        .lock()
        .observe(0, Bytes::from("src"), seen.clone());
    let n = || seen.0.load(Ordering::SeqCst);

    s.call(argv(&["XADD", "src", "*", "f", "1"]));
    s.call(argv(&["XADD", "src", "*", "f", "2"]));
    assert_eq!(n(), 2, "each write is heard, not only the first");
    s.call(argv(&["XADD", "other", "*", "f", "1"]));
    s.call_in_db(1, argv(&["XADD", "src", "*", "f", "1"]));
    assert_eq!(n(), 2, "other keys and other databases are not heard");
    s.call_in_db(0, argv(&["DEL", "src"]));
    assert_eq!(n(), 3, "a deletion is heard");
    s.call(argv(&["FLUSHALL"]));
    assert_eq!(n(), 4, "a flush of its database is heard");
    assert!(shared.store.lock().unobserve(id));
    s.call(argv(&["XADD", "src", "*", "f", "1"]));
    assert_eq!(n(), 4);
    assert!(!shared.store.lock().unobserve(id));
}

/// Records every effect it is handed back on replay.
#[derive(Default)]
struct Cursor(Mutex<Vec<Vec<u8>>>);

impl Subsystem for Cursor {
    fn replay(&self, _store: &mut Store, effect: &[u8]) -> Result<(), String> {
        if effect == b"bad" {
            return Err("cannot apply".into());
        }
        self.0.lock().push(effect.to_vec());
        Ok(())
    }

    fn snapshot(&self, _store: &Store) -> Section {
        Section::Bytes(self.0.lock().join(&b'\n'))
    }

    fn restore(&self, _store: &mut Store, state: &[u8]) -> Result<(), String> {
        if state == b"bad" {
            return Err("cannot restore".into());
        }
        *self.0.lock() = state.split(|&c| c == b'\n').map(|l| l.to_vec()).collect();
        Ok(())
    }
}

fn open(dir: &std::path::Path, sub: Option<Arc<Cursor>>) -> Result<Arc<Shared>, String> {
    let shared = Shared::new(config(dir));
    if let Some(sub) = sub {
        shared.register_subsystem("cursor", sub);
    }
    let (p, _) = Persistence::open(&shared, false)?;
    assert!(persist::install(&shared, p));
    Ok(shared)
}

fn close(shared: &Shared) {
    if let Some(p) = shared.persist.get() {
        p.sync().unwrap_or_else(|e| panic!("{e}"));
        p.close().unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn commands_and_a_subsystem_effect_commit_in_one_record_and_replay_together() {
    let dir = temp_dir("seams-atomic");
    let shared = open(&dir, Some(Arc::new(Cursor::default()))).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Session::attach(shared.clone());
    let before = shared.persist.get().map(|p| p.log_stats().next_seq);
    let (replies, seq) = s
        .atomically(|a| {
            let r1 = a.call(argv(&["XADD", "out", "1-1", "v", "a"]));
            let r2 = a.call(argv(&["XADD", "out", "2-1", "v", "b"]));
            a.log_subsystem("cursor", b"up to 7-0");
            vec![r1, r2]
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        replies,
        vec![
            Reply::Bulk(Bytes::from("1-1")),
            Reply::Bulk(Bytes::from("2-1"))
        ]
    );
    let seq = seq.unwrap_or_else(|| panic!("effects but no record"));
    let p = shared.persist.get().unwrap_or_else(|| panic!("no log"));
    let after = p.log_stats().next_seq;
    assert_eq!(after, before.map(|b| b + 1).unwrap_or(0), "one record");
    assert!(matches!(
        p.wait_blocking(seq, Duration::from_secs(30)),
        Some(Ok(_))
    ));
    // A plain call says which record holds it too.
    let (r, seq2) = s.call_tracked(argv(&["SET", "k", "v"]));
    assert_eq!(r, Reply::ok());
    assert!(seq2.is_some_and(|x| x > seq));
    let (_, none) = s.call_tracked(argv(&["GET", "k"]));
    assert_eq!(none, None, "a read has no record");
    drop(s);
    close(&shared);
    drop(shared);

    // Replay hands the effect back, beside the commands of its record.
    let cursor = Arc::new(Cursor::default());
    let shared = open(&dir, Some(cursor.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(*cursor.0.lock(), vec![b"up to 7-0".to_vec()]);
    let mut s = Session::attach(shared.clone());
    assert_eq!(s.call(argv(&["XLEN", "out"])), Reply::Int(2));
    drop(s);
    close(&shared);
    drop(shared);

    // A build without that subsystem refuses to start, and says why.
    let err = match open(&dir, None) {
        Ok(_) => panic!("started without the subsystem its log needs"),
        Err(e) => e,
    };
    assert!(err.contains("no subsystem 'cursor'"), "{err}");

    // A checkpoint holds the subsystem's state in its own section: after a
    // clean shutdown (which writes one) the state comes back from it.
    let live = Arc::new(Cursor::default());
    let shared = open(&dir, Some(live.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(*live.0.lock(), vec![b"up to 7-0".to_vec()]);
    let mut s = Session::attach(shared.clone());
    // A live change: the subsystem changes its state and logs the effect
    // in the same unit.
    s.atomically(|a| {
        live.0.lock().push(b"up to 9-0".to_vec());
        a.log_subsystem("cursor", b"up to 9-0")
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
    drop(s);
    persist::shutdown(&shared);
    drop(shared);
    let restored = Arc::new(Cursor::default());
    let shared = open(&dir, Some(restored.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        *restored.0.lock(),
        vec![b"up to 7-0".to_vec(), b"up to 9-0".to_vec()]
    );
    close(&shared);
    drop(shared);
    // Its section without the subsystem: the start-up stops and says why.
    let err = match open(&dir, None) {
        Ok(_) => panic!("started without the subsystem its checkpoint needs"),
        Err(e) => e,
    };
    assert!(err.contains("subsystem 'cursor'"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn ext_echo(
    ctx: &mut ferrite_db::cmd::Ctx,
    a: &mut ferrite_db::args::Args,
) -> Result<Reply, ferrite_db::error::CmdError> {
    let state = ctx
        .shared
        .extension::<Count>()
        .ok_or_else(|| ferrite_db::error::CmdError::err("no state"))?;
    state.0.fetch_add(1, Ordering::SeqCst);
    Ok(Reply::Bulk(a.next_bytes()?))
}

#[test]
fn a_registered_command_dispatches_like_a_built_in_one() {
    let mut s = Session::with_config(Config::default());
    let shared = s.shared().clone();
    shared.register_command(ferrite_db::cmd::ExtCommand {
        name: "test.echo",
        arity: 2,
        flags: &["readonly", "fast"],
        summary: "Echo, through a registered command",
        handler: ext_echo,
    });
    let calls = Arc::new(Count::default());
    shared.set_extension(calls.clone());
    assert_eq!(
        s.call(argv(&["TEST.ECHO", "hi"])),
        Reply::Bulk(Bytes::from("hi"))
    );
    assert_eq!(calls.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.call(argv(&["test.echo"])),
        Reply::error("ERR wrong number of arguments for 'test.echo' command")
    );
    assert!(matches!(
        s.call(argv(&["test.nosuch"])),
        Reply::Error(e) if e.starts_with(b"ERR unknown command 'test.nosuch'")
    ));
    // MULTI queues it and EXEC runs it.
    s.call(argv(&["MULTI"]));
    assert_eq!(s.call(argv(&["test.echo", "x"])), Reply::simple("QUEUED"));
    assert_eq!(
        s.call(argv(&["EXEC"])),
        Reply::Array(vec![Reply::Bulk(Bytes::from("x"))])
    );
    // COMMAND knows it.
    match s.call(argv(&["COMMAND", "INFO", "test.echo"])) {
        Reply::Array(v) => assert!(
            matches!(&v[..], [Reply::Array(f)] if f.first() == Some(&Reply::Bulk(Bytes::from("test.echo"))))
        ),
        r => panic!("{r:?}"),
    }
    let count = |s: &mut Session| match s.call(argv(&["COMMAND", "COUNT"])) {
        Reply::Int(n) => n,
        r => panic!("{r:?}"),
    };
    let mut plain = Session::with_config(Config::default());
    assert_eq!(count(&mut s), count(&mut plain) + 1);
}
