use super::*;
use crate::config::Config;
use crate::embedded::Session;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("ferrite-persist-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// A server state on `dir` with its commit log open (recovered).
fn open(dir: &std::path::Path, node_entries: &str) -> Arc<Shared> {
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    cfg.set_startup("stream-node-max-entries", node_entries)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let shared = Shared::new(cfg);
    let (p, _) = Persistence::open(&shared, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(install(&shared, p));
    shared
}

fn call(s: &mut Session, parts: &[&str]) -> Reply {
    let r = s.call(
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect(),
    );
    assert!(!r.is_error(), "{parts:?}: {r:?}");
    r
}

fn blocks(shared: &Shared, key: &[u8]) -> (usize, u64) {
    match shared.store.lock().dbs[0].get(key) {
        Some(Value::Stream(s)) => (s.block_count(), s.len()),
        _ => panic!("no stream {key:?}"),
    }
}

/// A deferred section (encoded in `assemble`) gives the very bytes the same
/// state encoded under the lock does, between keys with shared values and
/// an eager section after it; dropped unassembled, its encoder is dropped.
#[test]
fn deferred_sections_encode_the_same_bytes() {
    let dir = temp_dir("deferred-section");
    let shared = open(&dir, "3");
    let mut s = Session::internal(shared.clone());
    for i in 1..=10 {
        call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
    }
    let mut args = vec!["HSET".to_string(), "h".to_string()];
    for i in 0..1000 {
        args.push(format!("f{i}"));
        args.push(format!("v{i}"));
    }
    let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    call(&mut s, &refs);
    let state: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let rebuild = [(0, data_config_command(&Config::default()))];
    let encode = |deferred: bool| {
        let first = if deferred {
            let st = state.clone();
            Section::Deferred(Box::new(move |o: &mut Vec<u8>| o.extend_from_slice(&st)))
        } else {
            Section::Bytes(state.clone())
        };
        let sections = vec![
            ("a".to_string(), first),
            ("b".to_string(), Section::Bytes(b"after".to_vec())),
        ];
        let mut store = shared.store.lock();
        encode_snapshot(&mut store, &rebuild, sections)
    };
    let eager = encode(false).assembled();
    let deferred = encode(true);
    assert!(!deferred.inserts.is_empty());
    let deferred = deferred.assembled();
    assert_eq!(deferred.body, eager.body);
    let mut st = Store::new(16, 0);
    st.block_cache = shared.store.lock().block_cache.clone();
    let d = decode_snapshot(SNAPSHOT_VERSION, &deferred.body, &mut st)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.sections.len(), 2);
    assert_eq!(&d.sections[0].1[..], &state[..]);
    assert_eq!(&d.sections[1].1[..], b"after");
    // Dropped without assembling: the encoder (and what it holds) goes.
    let held = Arc::new(());
    let h2 = held.clone();
    let sections = vec![(
        "a".to_string(),
        Section::Deferred(Box::new(move |_o: &mut Vec<u8>| drop(h2))),
    )];
    drop(encode_snapshot(
        &mut shared.store.lock(),
        &rebuild,
        sections,
    ));
    assert_eq!(Arc::strong_count(&held), 1);
    drop(s);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A damaged checkpoint body (the file's CRC would catch it first; this
/// is defence in depth) is an error or a state, never a panic: every
/// truncation and every single-byte change of a v3 body with stored
/// blocks, inline blocks, strings and consumer groups.
#[test]
fn damaged_v3_bodies_are_refused_or_read_faithfully() {
    let dir = temp_dir("damaged-body");
    let shared = open(&dir, "3");
    let mut s = Session::internal(shared.clone());
    for i in 1..=10 {
        call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
    }
    call(&mut s, &["XGROUP", "CREATE", "s", "g", "0"]);
    call(
        &mut s,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "4",
            "STREAMS",
            "s",
            ">",
        ],
    );
    call(&mut s, &["SET", "k", "v"]);
    call(&mut s, &["SET", "t", "v"]);
    call(&mut s, &["PEXPIREAT", "t", "99999999999999"]);
    let sections = vec![("pipelines".to_string(), Section::Bytes(b"state".to_vec()))];
    let mut snap = {
        let mut store = shared.store.lock();
        encode_snapshot(
            &mut store,
            &[(0, data_config_command(&Config::default()))],
            sections,
        )
        .assembled()
    };
    assert_eq!(snap.jobs.len(), 3, "three full blocks to store");
    // Give the stored blocks made-up locations (nothing reads them here).
    for (n, job) in snap.jobs.iter().enumerate() {
        job.patch(
            &mut snap.body,
            BlockLoc {
                segment: 1,
                offset: n as u64 * 100,
                len: 100,
            },
        );
    }
    let cache = shared.store.lock().block_cache.clone();
    let fresh = || {
        let mut st = Store::new(16, 0);
        st.block_cache = cache.clone();
        st
    };
    // What a decoded body holds, encoded again: decoding is faithful
    // if this gives back the very bytes it read.
    let reencode = |b: &[u8]| -> Option<Vec<u8>> {
        let mut st = fresh();
        let d = decode_snapshot(SNAPSHOT_VERSION, b, &mut st).ok()?;
        let sections: Vec<(String, Section)> = d
            .sections
            .iter()
            .map(|(n, b)| (n.clone(), Section::Bytes(b.to_vec())))
            .collect();
        let mut snap = encode_snapshot(&mut st, &d.rebuild, sections).assembled();
        Some(std::mem::take(&mut snap.body))
    };
    assert_eq!(reencode(&snap.body).as_deref(), Some(&snap.body[..]));
    for cut in 0..snap.body.len() {
        assert!(decode_snapshot(SNAPSHOT_VERSION, &snap.body[..cut], &mut fresh()).is_err());
    }
    // A changed byte is refused, or read as exactly what it says:
    // never a state that differs from the bytes (something dropped,
    // defaulted or invented).
    let (mut refused, mut read) = (0, 0);
    for i in 0..snap.body.len() {
        for v in [0x01, 0x7f, 0xff] {
            let mut b = snap.body.clone();
            b[i] ^= v;
            match reencode(&b) {
                None => refused += 1,
                Some(again) => {
                    read += 1;
                    let at = again.iter().zip(&b).position(|(x, y)| x != y);
                    // Keys are written in the order the cut wrote them: a
                    // key moved to another database by the change comes
                    // back after that database's other keys.
                    let (again, b) = (key_order_aside(&again, &cache), key_order_aside(&b, &cache));
                    assert_eq!(
                        again, b,
                        "byte {i} ^ {v:#x} decoded to another state (first difference at {at:?}: {:?} vs {:?})",
                        &again[i.saturating_sub(20)..(i + 20).min(again.len())],
                        &b[i.saturating_sub(20)..(i + 20).min(b.len())]
                    );
                }
            }
        }
    }
    assert!(refused > 0 && read > 0, "refused {refused}, read {read}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v5 body with its key records sorted: two bodies that hold the same
/// state in another key order compare equal.
fn key_order_aside(body: &[u8], cache: &Option<Arc<BlockCache>>) -> Vec<u8> {
    let mut r = Reader::new(body);
    let mut records: Vec<&[u8]> = Vec::new();
    let mut read = || -> Result<(), String> {
        let next_storage_id = r.u64()?;
        let n = r.u64()?;
        for _ in 0..n {
            let at = r.position();
            r.u32()?;
            let key = r.bytes()?.to_vec();
            r.u64()?;
            Value::read_snapshot(
                &mut r,
                SNAPSHOT_VERSION,
                &key,
                cache.as_ref(),
                next_storage_id,
            )?;
            records.push(&body[at..r.position()]);
        }
        Ok(())
    };
    if read().is_err() {
        return body.to_vec();
    }
    let rest = r.position();
    records.sort();
    let mut out = body[..16].to_vec();
    for rec in records {
        out.extend_from_slice(rec);
    }
    out.extend_from_slice(&body[rest..]);
    out
}

/// Regression: records replayed after a checkpoint used the block limits
/// of the new start's command line instead of those in force when they
/// were written, so a stream came back with other blocks (XINFO
/// radix-tree-keys) after a crash.
#[test]
fn replay_after_a_checkpoint_uses_the_block_limits_of_its_time() {
    let dir = temp_dir("ckpt-cfg");
    let shared = open(&dir, "100");
    let mut s = Session::attach(shared.clone());
    call(&mut s, &["CONFIG", "SET", "stream-node-max-entries", "3"]);
    for i in 1..=5 {
        call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
    }
    let p = shared
        .persist
        .get()
        .cloned()
        .unwrap_or_else(|| panic!("no log"));
    let snap = {
        let mut store = shared.store.lock();
        let cfg = shared.config.read();
        p.begin_checkpoint(&shared, &mut store, &cfg)
    };
    let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
    p.finish_checkpoint(covered, body, None)
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 6..=10 {
        call(&mut s, &["XADD", "s", &format!("{i}-1"), "f", "v"]);
    }
    let before = blocks(&shared, b"s");
    assert_eq!(before, (4, 10));
    // A crash: everything written is in the log, no final checkpoint.
    let again = crash_and_reopen(&dir, (shared, s, p), "100");
    assert_eq!(blocks(&again, b"s"), before);
    // The command line's limit is in force afterwards.
    assert_eq!(again.config.read().stream_node_max_entries, 100);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: a clean shutdown while a background checkpoint was
/// running wrote no checkpoint of its own (and the background one could
/// fail on the closed log), so the next start replayed the log.
#[test]
fn shutdown_waits_for_a_running_checkpoint_then_writes_its_own() {
    let dir = temp_dir("ckpt-shutdown");
    let shared = open(&dir, "100");
    let mut s = Session::attach(shared.clone());
    call(&mut s, &["XADD", "s", "1-1", "f", "v"]);
    let p = shared
        .persist
        .get()
        .cloned()
        .unwrap_or_else(|| panic!("no log"));
    let snap = {
        let mut store = shared.store.lock();
        let cfg = shared.config.read();
        p.begin_checkpoint(&shared, &mut store, &cfg)
    };
    let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
    call(&mut s, &["XADD", "s", "2-1", "f", "v"]);
    let sh = shared.clone();
    let stopper = std::thread::spawn(move || shutdown(&sh));
    // The background checkpoint finishes while shutdown waits for it.
    p.finish_checkpoint(covered, body, None)
        .unwrap_or_else(|e| panic!("{e}"));
    stopper
        .join()
        .unwrap_or_else(|_| panic!("shutdown panicked"));
    drop(s);
    drop(p);
    drop(shared);
    let mut cfg = Config::default();
    cfg.set_startup("dir", &dir.to_string_lossy())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let again = Shared::new(cfg);
    let (_p, rec) = Persistence::open(&again, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.records, 0, "{rec:?}");
    assert_eq!(blocks(&again, b"s"), (1, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint snapshot shares what did not change (streams' stored
/// blocks, large values) instead of copying it under the lock; writes
/// after the snapshot instant (HSET on the shared hash, XADD, XDEL in a
/// stored block, a trim, DEL, a new value under a deleted key's name) must
/// not reach it. The body assembled after them is byte for byte the body
/// of a second snapshot assembled at that instant, and the checkpoint
/// written from it holds the instant's state.
#[test]
fn a_snapshot_is_its_instant_whatever_is_written_after() {
    let (dir, shared, mut s, p) = manual_checkpoints("snap-instant", "4");
    let mut args = vec!["HSET".to_string(), "h".to_string()];
    for i in 0..1000 {
        args.push(format!("f{i}"));
        args.push(format!("v{i}"));
    }
    let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    call(&mut s, &refs);
    let checkpoint = |p: &Persistence| {
        let mut store = shared.store.lock();
        let cfg = shared.config.read();
        let snap = p.begin_checkpoint(&shared, &mut store, &cfg);
        snap.unwrap_or_else(|| panic!("checkpoint running"))
    };
    // Two checkpoints, so the streams keep runs of stored blocks.
    for round in 0..2 {
        for i in 1..=40 {
            for k in ["s", "t"] {
                call(
                    &mut s,
                    &["XADD", k, &format!("{}-1", round * 100 + i), "f", "v"],
                );
            }
        }
        let (covered, body) = checkpoint(&p);
        p.finish_checkpoint(covered, body, None)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    call(&mut s, &["XADD", "s", "500-1", "f", "v"]);
    let (_, mut taken, reference) = {
        let mut store = shared.store.lock();
        let cfg = shared.config.read().clone();
        let taken = p.begin_checkpoint(&shared, &mut store, &cfg);
        let (covered, taken) = taken.unwrap_or_else(|| panic!("checkpoint running"));
        // The same instant, assembled at once (it hands out the same
        // blocks to store again, with the same placeholder locations).
        let sections = shared.subsystem_snapshots(&store);
        let rebuild = [(0, data_config_command(&cfg))];
        let reference = encode_snapshot(&mut store, &rebuild, sections).assembled();
        (covered, taken, reference)
    };
    assert!(!taken.inserts.is_empty(), "nothing was shared");
    call(&mut s, &["HSET", "h", "f1", "changed", "new", "field"]);
    call(&mut s, &["HDEL", "h", "f2"]);
    call(&mut s, &["XADD", "s", "501-1", "f", "v"]);
    call(&mut s, &["XDEL", "s", "2-1", "103-1"]);
    call(&mut s, &["XTRIM", "s", "MAXLEN", "=", "50"]);
    call(&mut s, &["DEL", "t"]);
    call(&mut s, &["SET", "t", "now a string"]);
    taken.assemble();
    assert_eq!(
        taken.body, reference.body,
        "a later write reached the snapshot"
    );
    // Stored and read back: the instant's state.
    taken
        .store_blocks(&p.streams)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut back = Store::new(16, 0);
    back.block_cache = shared.store.lock().block_cache.clone();
    decode_snapshot(SNAPSHOT_VERSION, &taken.body, &mut back).unwrap_or_else(|e| panic!("{e}"));
    match back.dbs[0].get(b"h") {
        Some(Value::Hash(h)) => {
            assert_eq!(h.len(), 1000);
            assert_eq!(h.get(b"f1"), Some(&b"v1"[..]));
            assert_eq!(h.get(b"f2"), Some(&b"v2"[..]));
        }
        other => panic!("h: {other:?}"),
    }
    for (key, len) in [(&b"s"[..], 81), (&b"t"[..], 80)] {
        match back.dbs[0].get(key) {
            Some(Value::Stream(st)) => {
                assert_eq!(st.len(), len);
                assert!(st.contains(StreamId::new(2, 1)));
                assert!(st.contains(StreamId::new(103, 1)));
                st.check_invariants().unwrap_or_else(|e| panic!("{e}"));
            }
            other => panic!("{key:?}: {other:?}"),
        }
    }
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each value of db 0 as plain data (members sorted for sets), to compare
/// a store with another one independently of how either shares it.
fn plain_values(store: &Store) -> Vec<(Bytes, Vec<Vec<u8>>)> {
    let mut out: Vec<(Bytes, Vec<Vec<u8>>)> = store.dbs[0]
        .iter()
        .map(|(k, v)| {
            let items = match v {
                Value::String(s) => vec![s.to_vec()],
                Value::Set(set) => {
                    let mut m: Vec<Vec<u8>> = set.members().map(|m| m.to_vec()).collect();
                    m.sort();
                    m
                }
                Value::ZSet(z) => z
                    .iter()
                    .map(|(sc, m)| [&sc.to_bits().to_le_bytes()[..], m].concat())
                    .collect(),
                Value::List(l) => l.iter().map(|e| e.to_bytes().to_vec()).collect(),
                Value::Hash(h) => {
                    let mut m: Vec<Vec<u8>> = h.iter().map(|(f, v)| [f, v].concat()).collect();
                    m.sort();
                    m
                }
                Value::Stream(_) => vec![b"stream".to_vec()],
            };
            (k.clone(), items)
        })
        .collect();
    out.sort();
    out
}

/// Large sets, sorted sets and lists are encoded off the lock from a
/// shared reference: whatever commands write to them between the snapshot
/// and its assembly (every kind of write the types have, and the commands
/// that replace, move or copy whole values) must not reach it. The body is
/// byte for byte the one assembled at the instant, and loads back to the
/// instant's values.
#[test]
fn a_snapshot_of_large_sets_zsets_and_lists_is_its_instant() {
    let (dir, shared, mut s, p) = manual_checkpoints("snap-instant-types", "100");
    let many = |cmd: &str, key: &str, item: &dyn Fn(usize) -> Vec<String>| {
        let mut args = vec![cmd.to_string(), key.to_string()];
        for i in 0..2000 {
            args.extend(item(i));
        }
        args
    };
    let big: Vec<Vec<String>> = vec![
        many("SADD", "set", &|i| vec![format!("m{i}")]),
        many("SADD", "ints", &|i| vec![format!("{i}")]),
        many("SADD", "set2", &|i| vec![format!("n{i}")]),
        many("ZADD", "z", &|i| {
            vec![format!("{}", i % 97), format!("m{i}")]
        }),
        many("ZADD", "z2", &|i| vec![format!("{i}.5"), format!("n{i}")]),
        many("RPUSH", "l", &|i| vec![format!("element-{i}")]),
        many("RPUSH", "l2", &|i| {
            vec![format!("{i}"), format!("{}", i + 2000)]
        }),
        many("RPUSH", "l3", &|i| vec![format!("x{i}")]),
    ];
    for args in &big {
        let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        call(&mut s, &refs);
    }
    // Small forms, encoded in place.
    call(&mut s, &["SADD", "small-set", "a", "b", "1"]);
    call(&mut s, &["SADD", "small-ints", "1", "2"]);
    call(&mut s, &["ZADD", "small-z", "1", "a", "2", "b"]);
    call(&mut s, &["RPUSH", "small-l", "a", "b", "c"]);
    // The number of values a snapshot shares now (and the heat counts
    // start again: `types::cow`).
    let inserts = |shared: &Shared| {
        let mut store = shared.store.lock();
        let cfg = shared.config.read().clone();
        let rebuild = [(0, data_config_command(&cfg))];
        encode_snapshot(&mut store, &rebuild, Vec::new())
            .inserts
            .len()
    };
    // Just built, the 5 large sets and sorted sets were written often:
    // encoded in place. From the next snapshot on they are shared.
    let built = inserts(&shared);
    let (mut taken, reference, instant) = {
        let mut store = shared.store.lock();
        let cfg = shared.config.read().clone();
        let taken = p.begin_checkpoint(&shared, &mut store, &cfg);
        let (_, taken) = taken.unwrap_or_else(|| panic!("checkpoint running"));
        let sections = shared.subsystem_snapshots(&store);
        let rebuild = [(0, data_config_command(&cfg))];
        let reference = encode_snapshot(&mut store, &rebuild, sections).assembled();
        (taken, reference, plain_values(&store))
    };
    assert!(
        taken.inserts.len() >= 8,
        "the large values are shared: {} inserts",
        taken.inserts.len()
    );
    assert_eq!(built + 5, taken.inserts.len(), "hot ones in place");
    let writes: &[&[&str]] = &[
        &["SADD", "set", "new", "m5"],
        &["SREM", "set", "m1", "m2", "absent"],
        &["SPOP", "set2"],
        &["SREM", "ints", "7"],
        &["SADD", "ints", "-5"],
        &["SMOVE", "set", "ints", "m3"],
        &["SINTERSTORE", "set2", "set", "ints"],
        &["ZADD", "z", "5", "new", "1000", "m1"],
        &["ZREM", "z", "m2", "absent"],
        &["ZINCRBY", "z", "2.5", "m3"],
        &["ZPOPMIN", "z"],
        &["ZPOPMAX", "z", "3"],
        &["ZREMRANGEBYRANK", "z", "0", "10"],
        &["ZUNIONSTORE", "z2", "2", "z", "set"],
        &["LPUSH", "l", "head"],
        &["RPOP", "l"],
        &[
            "LSET",
            "l",
            "500",
            "a much longer element than the others are",
        ],
        &["LINSERT", "l", "BEFORE", "element-900", "inserted"],
        &["LREM", "l", "0", "element-1000"],
        &["LTRIM", "l", "3", "-4"],
        &["LMOVE", "l", "l3", "LEFT", "RIGHT"],
        &["RPOPLPUSH", "l3", "l"],
        &["BLPOP", "l2", "0"],
        &["BLMOVE", "l2", "l2", "RIGHT", "LEFT", "0"],
        &["ZRANGESTORE", "z", "z2", "0", "99"],
        &["SDIFFSTORE", "ints", "ints", "set"],
        &["RENAME", "l3", "renamed"],
        &["COPY", "set", "copied"],
        &["SADD", "copied", "only-in-the-copy"],
        &["DEL", "small-l"],
        &["SET", "small-l", "now a string"],
        &["SADD", "small-set", "c"],
        &["ZADD", "small-z", "3", "c"],
    ];
    for w in writes {
        call(&mut s, w);
    }
    taken.assemble();
    assert_eq!(
        taken.body, reference.body,
        "a later write reached the snapshot"
    );
    let mut back = Store::new(16, 0);
    decode_snapshot(SNAPSHOT_VERSION, &taken.body, &mut back).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain_values(&back), instant, "loads back to the instant");
    // And the keyspace has every write (nothing was lost to the sharing).
    let now = plain_values(&shared.store.lock());
    assert_ne!(now, instant);
    let mut s2 = Session::attach(shared.clone());
    let card = |s: &mut Session, args: &[&str]| match call(s, args) {
        Reply::Int(n) => n,
        other => panic!("{args:?}: {other:?}"),
    };
    assert_eq!(
        card(&mut s2, &["SCARD", "copied"]),
        card(&mut s2, &["SCARD", "set"]) + 1
    );
    assert_eq!(card(&mut s2, &["SISMEMBER", "ints", "m3"]), 1);
    assert_eq!(card(&mut s2, &["EXISTS", "l3"]), 0);
    // A set written often since the last snapshot is encoded in place,
    // once; then it is shared again.
    let _ = inserts(&shared);
    let cold = inserts(&shared);
    for i in 0..crate::types::cow::HOT_WRITES {
        call(&mut s2, &["SADD", "set", &format!("hot{i}")]);
    }
    assert_eq!(inserts(&shared), cold - 1, "a hot set is encoded in place");
    assert_eq!(inserts(&shared), cold, "and shared once cold");
    drop(s);
    drop(s2);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bytes of each tier of `key`'s stored blocks in memory.
fn tiers(shared: &Shared, key: &[u8]) -> Vec<ferrite_streams::TierBytes> {
    let mut out = Vec::new();
    match shared.store.lock().dbs[0].get(key) {
        Some(Value::Stream(s)) => s.evictable(|_, b| out.push(b)),
        _ => panic!("no stream {key:?}"),
    }
    out
}

/// Blocks a checkpoint stored keep their LZ4 bytes in memory (the packed
/// tier) and, unread, nothing else; reads decode them without a load; the
/// cache demotes decoded blocks to packed ones past its decoded share, and
/// drops blocks whole only past the whole budget.
#[test]
fn stored_blocks_stay_packed_and_the_cache_demotes_before_it_drops() {
    let dir = temp_dir("packed");
    let shared = open(&dir, "10");
    let mut s = Session::attach(shared.clone());
    call(
        &mut s,
        &["CONFIG", "SET", "auto-checkpoint-min-size", "100gb"],
    );
    for i in 1..=200 {
        let price = format!("{}.5", 42000 + i % 7);
        call(
            &mut s,
            &[
                "XADD",
                "s",
                &format!("{i}-1"),
                "symbol",
                "BTC",
                "price",
                &price,
                "volume",
                "3",
            ],
        );
    }
    let all = |s: &mut Session| call(s, &["XRANGE", "s", "-", "+"]);
    let before = all(&mut s);
    let p = shared
        .persist
        .get()
        .cloned()
        .unwrap_or_else(|| panic!("no log"));
    let cache = shared
        .store
        .lock()
        .block_cache
        .clone()
        .unwrap_or_else(|| panic!("no cache"));
    let snap = {
        let mut store = shared.store.lock();
        let cfg = shared.config.read();
        p.begin_checkpoint(&shared, &mut store, &cfg)
    };
    let (covered, body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
    p.finish_checkpoint(covered, body, Some(&cache))
        .unwrap_or_else(|e| panic!("{e}"));
    shared.store.lock().maybe_evict();
    let t = tiers(&shared, b"s");
    assert_eq!(t.len(), 19, "every full block is stored");
    for b in &t {
        // ~10 entries of ~22 bytes each, compressed.
        assert!(b.decoded == 0 && b.packed > 0 && b.packed < 200, "{b:?}");
    }
    assert!(!cache.may_have_absent());
    assert_eq!(all(&mut s), before);
    assert_eq!((cache.loads(), cache.unpacks()), (0, 19));
    let t = tiers(&shared, b"s");
    let decoded: usize = t.iter().map(|b| b.decoded).sum();
    let packed: usize = t.iter().map(|b| b.packed).sum();
    assert!(t.iter().all(|b| b.decoded > 0 && b.packed > 0));
    // Past the decoded share, within the budget: demoted, none dropped.
    {
        let mut store = shared.store.lock();
        store.cache_budget = 4 * decoded as u64;
        store.maybe_evict();
    }
    let t = tiers(&shared, b"s");
    assert_eq!(t.len(), 19);
    assert!(t.iter().all(|b| b.packed > 0));
    let left: usize = t.iter().map(|b| b.decoded).sum();
    assert!(
        left * 8 <= decoded * 3,
        "{left} of {decoded} decoded bytes left"
    );
    assert!(!cache.may_have_absent());
    // Past the whole budget: the least recently used dropped whole.
    {
        let mut store = shared.store.lock();
        store.cache_budget = (packed / 2) as u64;
        store.maybe_evict();
    }
    let t = tiers(&shared, b"s");
    assert!(t.len() < 19 && t.iter().map(|b| b.total()).sum::<usize>() * 4 <= packed / 2 * 3);
    assert!(cache.may_have_absent());
    shared.store.lock().cache_budget = 0;
    assert_eq!(all(&mut s), before);
    assert!(cache.loads() > 0);
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batch_round_trip_and_garbage() {
    let cmds = vec![(
        3usize,
        vec![Bytes::from("XADD"), Bytes::from("k"), Bytes::new()],
    )];
    let enc = encode_batch(&cmds);
    assert_eq!(decode_batch(&enc), Ok(cmds));
    for cut in 0..enc.len() {
        assert!(decode_batch(&enc[..cut]).is_err());
    }
    let mut huge = vec![KIND_BATCH];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_batch(&huge).is_err());
}

/// This thread's time on a CPU so far, in ns (Linux's schedstat; 0 where
/// there is none): the lock hold without the time a loaded machine kept
/// the thread waiting for a core.
fn on_cpu_ns() -> u64 {
    // A yield brings the kernel's count up to date.
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A crash of the server state `open` (or [`manual_checkpoints`]) made on
/// `dir`: everything appended is in the log, nothing more is written; then
/// a start on the same directory (the last checkpoint and the log after
/// it).
fn crash_and_reopen(
    dir: &std::path::Path,
    (shared, s, p): (Arc<Shared>, Session, Arc<Persistence>),
    node_entries: &str,
) -> Arc<Shared> {
    p.sync().unwrap_or_else(|e| panic!("{e}"));
    p.close().unwrap_or_else(|e| panic!("{e}"));
    drop(s);
    drop(p);
    drop(shared);
    open(dir, node_entries)
}

/// A store with its log and automatic checkpoints off (the tests take
/// checkpoints themselves).
fn manual_checkpoints(
    name: &str,
    node_entries: &str,
) -> (std::path::PathBuf, Arc<Shared>, Session, Arc<Persistence>) {
    let dir = temp_dir(name);
    let shared = open(&dir, node_entries);
    let mut s = Session::attach(shared.clone());
    call(
        &mut s,
        &["CONFIG", "SET", "auto-checkpoint-min-size", "100gb"],
    );
    let p = shared
        .persist
        .get()
        .cloned()
        .unwrap_or_else(|| panic!("no log"));
    (dir, shared, s, p)
}

/// A checkpoint taken as a background one is (`start_checkpoint`), on this
/// thread: the cut and its first step in one hold of the store lock, the
/// rest of the walk a step per hold. INFO's (and `checkpoint_stats`')
/// `lock_us_last` is its longest hold.
fn stepped_checkpoint(shared: &Arc<Shared>, p: &Persistence) -> (u64, Snapshot) {
    let t0 = std::time::Instant::now();
    let mut store = shared.store.lock();
    let cfg = shared.config.read().clone();
    let cut = p
        .cut(shared, &mut store, &cfg)
        .unwrap_or_else(|| panic!("checkpoint running"));
    let step = cfg.checkpoint_cut_step_keys;
    if cut_step(&mut store, step) {
        let taken = end_cut(&mut store, cut);
        p.note_holds(t0.elapsed(), 1);
        return taken;
    }
    let first = t0.elapsed();
    drop(store);
    p.walk(cut, step, first)
        .unwrap_or_else(|| panic!("the database is gone"))
}

/// Measurement, not a check (`cargo test --release -p ferrite-db --lib
/// snapshot_lock_hold -- --ignored --nocapture`): how long a checkpoint's
/// snapshot holds the store lock as the index of stored blocks grows.
/// 1,000 streams of 10-entry blocks; each round adds 6 blocks per stream
/// (about what 64 MB of XADD log seals in the benchmark) and takes one
/// checkpoint. docs/storage.md §15.5 has the figures.
#[test]
#[ignore]
fn snapshot_lock_hold_with_a_large_index() {
    let (dir, shared, mut s, p) = manual_checkpoints("lock-hold", "10");
    let mut next = 1u64;
    for round in 0..16 {
        let per_stream = if round == 0 { 600 } else { 60 };
        for _ in 0..per_stream {
            for k in 0..1000 {
                call(
                    &mut s,
                    &["XADD", &format!("s{k}"), &format!("{next}-1"), "f", "v"],
                );
            }
            next += 1;
        }
        let cpu0 = on_cpu_ns();
        let (covered, mut body) = stepped_checkpoint(&shared, &p);
        let cpu = on_cpu_ns().saturating_sub(cpu0) / 1000;
        body.assemble();
        let len = body.body.len();
        let sealed = body.jobs.len();
        let cs = p.checkpoint_stats();
        p.finish_checkpoint(covered, body, None)
            .unwrap_or_else(|e| panic!("{e}"));
        println!(
            "round {round}: body {len} bytes, {sealed} blocks sealed, lock held {} us at most in {} holds ({cpu} us on CPU in all)",
            cs.lock_us_last, cs.cut_holds_last
        );
    }
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Measurement, not a check (`cargo test --release -p ferrite-db --lib
/// snapshot_lock_hold -- --ignored --nocapture`): the benchmark's XADD
/// load on one stream, 100-entry blocks (the default), 500,000 entries
/// (5,000 sealed blocks, about what 64 MB of XADD log holds) per
/// checkpoint, as the stream grows.
#[test]
#[ignore]
fn snapshot_lock_hold_with_one_fast_stream() {
    let (dir, shared, mut s, p) = manual_checkpoints("lock-hold-one", "100");
    let mut next = 1u64;
    for round in 0..8 {
        for _ in 0..500_000 {
            call(
                &mut s,
                &[
                    "XADD",
                    "s",
                    &format!("{next}-1"),
                    "symbol",
                    "BTC",
                    "price",
                    "42000.5",
                    "volume",
                    "3",
                ],
            );
            next += 1;
        }
        let cpu0 = on_cpu_ns();
        let snap = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&shared, &mut store, &cfg)
        };
        let cpu = on_cpu_ns().saturating_sub(cpu0) / 1000;
        let (covered, mut body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        body.assemble();
        let sealed = body.jobs.len();
        let cache = shared.store.lock().block_cache.clone();
        p.finish_checkpoint(covered, body, cache.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        let cs = p.checkpoint_stats();
        // What the checkpoint thread does next, under the lock as well.
        let (mut steps, mut longest) = (0, 0);
        loop {
            let t = std::time::Instant::now();
            let more = shared.store.lock().evict_step();
            longest = longest.max(t.elapsed().as_micros());
            steps += 1;
            if !more {
                break;
            }
        }
        println!(
            "round {round}: {sealed} blocks sealed, lock held {} us ({cpu} us on CPU), then settled in {steps} steps of at most {longest} us",
            cs.lock_us_last
        );
    }
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Measurement, not a check (`-- --ignored --nocapture`): the lock hold of
/// a checkpoint whose keyspace holds one hash of 1M fields.
#[test]
#[ignore]
fn snapshot_lock_hold_with_a_large_hash() {
    lock_hold_with_one_value(
        "lock-hold-hash",
        "1M-field hash",
        &|s, batch| {
            fill_batch(s, "HSET", "k", |i| {
                vec![format!("field:{batch}:{i}"), format!("value:{i}")]
            })
        },
        &|n| vec!["HSET".into(), "k".into(), format!("new {n}"), "v".into()],
    );
}

/// The lock hold of three checkpoints of a keyspace that `fill` made (one
/// large value), printed with the body's size and the time `assemble`
/// takes (off the lock); each round `write` changes the value once before
/// the body is assembled (paying the copy on write) and once after.
fn lock_hold_with_one_value(
    tag: &str,
    what: &str,
    fill: &dyn Fn(&mut Session, usize),
    write: &dyn Fn(usize) -> Vec<String>,
) {
    let (dir, shared, mut s, p) = manual_checkpoints(tag, "100");
    for batch in 0..1000 {
        fill(&mut s, batch);
    }
    for round in 0..3 {
        let cpu0 = on_cpu_ns();
        let snap = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&shared, &mut store, &cfg)
        };
        let cpu = on_cpu_ns().saturating_sub(cpu0) / 1000;
        let (covered, mut body) = snap.unwrap_or_else(|| panic!("checkpoint running"));
        let w = write(2 * round);
        let w: Vec<&str> = w.iter().map(|a| a.as_str()).collect();
        let t = std::time::Instant::now();
        call(&mut s, &w);
        let first_write = t.elapsed().as_micros();
        let t = std::time::Instant::now();
        body.assemble();
        let assembled = t.elapsed().as_micros();
        let len = body.body.len();
        p.finish_checkpoint(covered, body, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let w2 = write(2 * round + 1);
        let w2: Vec<&str> = w2.iter().map(|a| a.as_str()).collect();
        let t = std::time::Instant::now();
        call(&mut s, &w2);
        let next_write = t.elapsed().as_micros();
        println!(
            "round {round}: {what}, body {len} bytes, lock held {} us ({cpu} us on CPU), assembled in {assembled} us; {w:?} while the snapshot holds it {first_write} us, {w2:?} after {next_write} us",
            p.checkpoint_stats().lock_us_last
        );
    }
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fill_batch(s: &mut Session, cmd: &str, key: &str, item: impl Fn(usize) -> Vec<String>) {
    let mut args = vec![cmd.to_string(), key.to_string()];
    for i in 0..1000 {
        args.extend(item(i));
    }
    let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    call(s, &refs);
}

/// Measurement, not a check (`-- --ignored --nocapture`): one set of 1M
/// members.
#[test]
#[ignore]
fn snapshot_lock_hold_with_a_large_set() {
    lock_hold_with_one_value(
        "lock-hold-set",
        "1M-member set",
        &|s, batch| fill_batch(s, "SADD", "k", |i| vec![format!("member:{batch}:{i}")]),
        &|n| vec!["SADD".into(), "k".into(), format!("new {n}")],
    );
}

/// Measurement, not a check (`-- --ignored --nocapture`): one sorted set
/// of 1M members.
#[test]
#[ignore]
fn snapshot_lock_hold_with_a_large_zset() {
    lock_hold_with_one_value(
        "lock-hold-zset",
        "1M-member sorted set",
        &|s, batch| {
            fill_batch(s, "ZADD", "k", |i| {
                vec![
                    format!("{}", (batch * 1000 + i) % 9973),
                    format!("member:{batch}:{i}"),
                ]
            })
        },
        &|n| {
            vec![
                "ZINCRBY".into(),
                "k".into(),
                "1".into(),
                format!("member:0:{n}"),
            ]
        },
    );
}

/// Measurement, not a check (`-- --ignored --nocapture`): one list of 1M
/// elements.
#[test]
#[ignore]
fn snapshot_lock_hold_with_a_large_list() {
    lock_hold_with_one_value(
        "lock-hold-list",
        "1M-element list",
        &|s, batch| fill_batch(s, "RPUSH", "k", |i| vec![format!("element:{batch}:{i}")]),
        &|n| vec!["RPUSH".into(), "k".into(), format!("new {n}")],
    );
}

/// Each stream of db 0: its entries and metadata, to compare a store with
/// the one a checkpoint of it loads to.
type PlainStream = (Bytes, Vec<ferrite_streams::Entry>, [StreamId; 3], u64);

fn plain_streams(shared: &Shared) -> Vec<PlainStream> {
    let store = shared.store.lock();
    let mut out: Vec<PlainStream> = store.dbs[0]
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Stream(st) => Some((
                k.clone(),
                st.range(StreamId::MIN, StreamId::MAX, None, false),
                [st.last_id(), st.first_id(), st.max_deleted_id()],
                st.entries_added(),
            )),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Streams whose blocks sealed since the last checkpoint come from their
/// sealed lists (handed out without walking the tree or touching the
/// nodes): whatever changed between the seal and the snapshot (XDEL and
/// exact trims in sealed blocks, approximate trims dropping whole blocks,
/// XSETID back over deleted entries and XADDs below the tail, DEL and a
/// new stream under the name, RENAME there and back, FLUSHALL, DEBUG
/// RELOAD itself), the checkpoint loads back to the stream as it was
/// (DEBUG RELOAD every third round), and the streams left alone keep their
/// lists and are written from them.
#[test]
fn sealed_lists_checkpoint_the_instant_whatever_changed_since_the_seal() {
    let (dir, shared, mut s, p) = manual_checkpoints("sealed-lists", "4");
    let cache = shared.store.lock().block_cache.clone();
    // Six of them changed each round, the rest left alone.
    let names: Vec<String> = (0..16).map(|k| format!("s{k}")).collect();
    let next = std::cell::Cell::new(1u64);
    let xadd = |s: &mut Session, key: &str, n: u64| {
        for _ in 0..n {
            let i = next.get();
            call(s, &["XADD", key, &format!("{i}-1"), "f", &format!("v{i}")]);
            next.set(i + 1);
        }
    };
    // DEBUG RELOAD's own path (the command is off in this configuration).
    let reload = |p: &Persistence| {
        let mut store = shared.store.lock();
        p.reload(&shared, &mut store)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    let (mut listed, mut reloads) = (0, 0);
    for round in 0..12u64 {
        for key in &names {
            xadd(&mut s, key, 10);
        }
        // Between the seal and the snapshot, one stream per kind of change,
        // at the stream's newest entries (in blocks sealed this round).
        let k = |i: u64| names[((round * 3 + i) % 16) as usize].as_str();
        let last_of = |key: &str| match shared.store.lock().dbs[0].get(key.as_bytes()) {
            Some(Value::Stream(st)) => st.last_valid_id().ms,
            _ => 0,
        };
        let last = last_of(k(0));
        call(&mut s, &["XDEL", k(0), &format!("{}-1", last - 6)]);
        let last = last_of(k(1));
        call(
            &mut s,
            &["XTRIM", k(1), "MINID", "=", &format!("{}-1", last - 5)],
        );
        call(&mut s, &["XTRIM", k(2), "MAXLEN", "~", "8"]);
        // XSETID back over the deleted top entries, then XADDs below them.
        let last = last_of(k(3));
        let dels: Vec<String> = (0..3).map(|i| format!("{}-1", last - i)).collect();
        let mut xdel = vec!["XDEL", k(3)];
        xdel.extend(dels.iter().map(|d| d.as_str()));
        call(&mut s, &xdel);
        let below = last_of(k(3));
        call(&mut s, &["XSETID", k(3), &format!("{below}-1")]);
        for seq in 2..4 {
            call(
                &mut s,
                &["XADD", k(3), &format!("{below}-{seq}"), "f", "low"],
            );
        }
        call(&mut s, &["DEL", k(4)]);
        xadd(&mut s, k(4), 5);
        call(&mut s, &["RENAME", k(5), "elsewhere"]);
        call(&mut s, &["RENAME", "elsewhere", k(5)]);
        if round == 7 {
            call(&mut s, &["FLUSHALL"]);
            for key in &names {
                xadd(&mut s, key, 9);
            }
        }
        if round % 3 == 2 {
            // The checkpoint DEBUG RELOAD writes is loaded back in place.
            let before = plain_streams(&shared);
            reload(&p);
            assert_eq!(plain_streams(&shared), before, "round {round}");
            reloads += 1;
            continue;
        }
        let kept = names
            .iter()
            .filter(|n| match shared.store.lock().dbs[0].get(n.as_bytes()) {
                Some(Value::Stream(st)) => st.keeps_sealed_list(),
                _ => false,
            })
            .count();
        let (covered, snap) = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.begin_checkpoint(&shared, &mut store, &cfg)
                .unwrap_or_else(|| panic!("checkpoint running"))
        };
        // A list is used only if the last snapshot's blocks came back.
        assert!(
            snap.listed <= kept,
            "round {round}: {} > {kept}",
            snap.listed
        );
        // New streams list their blocks from the first one: those made
        // after FLUSHALL are all listed, and the first round's but the
        // four changed since their seal (walked, as any changed stream).
        if round == 0 {
            assert!(snap.listed >= names.len() - 4, "{} listed", snap.listed);
        }
        if round == 7 {
            assert_eq!(snap.listed, names.len(), "after FLUSHALL");
        }
        // Loaded streams (the round before reloaded the checkpoint) have
        // their stored blocks as their run and list what is sealed after
        // it: the first checkpoint after a load walks only those changed.
        if round % 3 == 0 && round > 0 {
            assert!(
                snap.listed >= names.len() - 4,
                "{} listed after a load",
                snap.listed
            );
        }
        listed += snap.listed;
        p.finish_checkpoint(covered, snap, cache.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        // Settled as the checkpoint thread does: listed blocks resolved
        // from their filled tickets.
        while shared.store.lock().evict_step() {}
    }
    assert!(
        reloads == 4 && listed > 20,
        "{listed} streams written from lists"
    );
    // The last state, checkpointed and loaded back.
    let before = plain_streams(&shared);
    reload(&p);
    assert_eq!(plain_streams(&shared), before);
    drop(s);
    drop(p);
    drop(shared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every key of databases 0-2 as the commands read it: type, absolute
/// expiry and contents (streams with XINFO STREAM FULL and XRANGE), sorted
/// by database and key. Leaves the session in database 0.
fn dump(s: &mut Session) -> Vec<String> {
    let q = |s: &mut Session, parts: &[&[u8]]| -> Reply {
        s.call(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect())
    };
    let mut out = Vec::new();
    for db in 0..3 {
        q(s, &[b"SELECT", db.to_string().as_bytes()]);
        let Reply::Array(keys) = q(s, &[b"KEYS", b"*"]) else {
            panic!("KEYS");
        };
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter_map(|k| match k {
                Reply::Bulk(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect();
        keys.sort();
        for k in keys {
            let t = q(s, &[b"TYPE", &k]);
            let when = q(s, &[b"PEXPIRETIME", &k]);
            let mut items = match &t {
                Reply::Simple(t) if &t[..] == b"string" => vec![q(s, &[b"GET", &k])],
                Reply::Simple(t) if &t[..] == b"hash" => vec![q(s, &[b"HGETALL", &k])],
                Reply::Simple(t) if &t[..] == b"set" => vec![q(s, &[b"SMEMBERS", &k])],
                Reply::Simple(t) if &t[..] == b"zset" => {
                    vec![q(s, &[b"ZRANGE", &k, b"0", b"-1", b"WITHSCORES"])]
                }
                Reply::Simple(t) if &t[..] == b"list" => {
                    vec![q(s, &[b"LRANGE", &k, b"0", b"-1"])]
                }
                _ => vec![
                    q(s, &[b"XINFO", b"STREAM", &k, b"FULL"]),
                    q(s, &[b"XRANGE", &k, b"-", b"+"]),
                ],
            };
            // Hash fields and set members in a stable order (a hash or
            // set loaded from a checkpoint may iterate in another).
            for it in &mut items {
                match it {
                    Reply::Map(m) => m.sort_by_key(|p| format!("{p:?}")),
                    Reply::Set(a) => a.sort_by_key(|m| format!("{m:?}")),
                    Reply::Array(a) if matches!(&t, Reply::Simple(t) if &t[..] == b"set") => {
                        a.sort_by_key(|m| format!("{m:?}"))
                    }
                    _ => {}
                }
            }
            out.push(format!(
                "{db} {:?} {t:?} {when:?} {items:?}",
                String::from_utf8_lossy(&k)
            ));
        }
    }
    q(s, &[b"SELECT", b"0"]);
    out
}

/// A background checkpoint's cut is walked a key per hold of the store
/// lock, with commands between the holds that change, replace, delete,
/// move and add keys of every type (SWAPDB and FLUSHDB too): the checkpoint
/// read back from its file is the keyspace as it was at the cut, and a
/// restart (the checkpoint, then the log after it) is the keyspace at the
/// end.
#[test]
fn a_cut_walked_a_key_at_a_time_is_its_instant() {
    let (dir, shared, mut s, p) = manual_checkpoints("cut-steps", "4");
    let cache = shared.store.lock().block_cache.clone();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut id = 1u64;
    let q = |s: &mut Session, parts: &[String]| {
        s.call(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    };
    let strs = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    // One random change (or addition) to one of ~40 keys per database.
    let change = |s: &mut Session, next: &mut dyn FnMut(u64) -> u64, id: &mut u64| {
        let db = next(3).to_string();
        q(s, &strs(&["SELECT", &db]));
        let k = |kind: &str, n: u64| format!("{kind}{n}");
        let n = next(8);
        *id += 1;
        let i = id.to_string();
        let cmd: Vec<String> = match next(24) {
            0..=5 => strs(&["XADD", &k("s", n), &format!("{i}-1"), "f", &i]),
            6 => strs(&["XDEL", &k("s", n), &format!("{}-1", next(*id) + 1)]),
            7 => strs(&[
                "XTRIM",
                &k("s", n),
                "MAXLEN",
                if next(2) == 0 { "~" } else { "=" },
                "6",
            ]),
            8 => strs(&[
                "XGROUP",
                "CREATE",
                &k("s", n),
                &k("g", next(2)),
                "0",
                "MKSTREAM",
            ]),
            9 => strs(&[
                "XREADGROUP",
                "GROUP",
                &k("g", next(2)),
                "c",
                "COUNT",
                "3",
                "STREAMS",
                &k("s", n),
                ">",
            ]),
            // Half of them large (put into the body off the lock).
            10 => {
                let v = if next(2) == 0 {
                    i.repeat(1 + 2000 / i.len())
                } else {
                    i.clone()
                };
                strs(&["SET", &k("k", n), &v, "PX", "1000000000"])
            }
            11 => strs(&["PEXPIRE", &k("k", n), "2000000000"]),
            12 => strs(&["PERSIST", &k("k", n)]),
            13 => strs(&["APPEND", &k("k", n), "x"]),
            14 => strs(&["HSET", &k("h", n), &k("f", next(30)), &i]),
            15 => strs(&["HDEL", &k("h", n), &k("f", next(30))]),
            16 => strs(&["SADD", &k("t", n), &k("m", next(30))]),
            17 => strs(&["ZADD", &k("z", n), &i, &k("m", next(30))]),
            18 => strs(&["RPUSH", &k("l", n), &i]),
            19 => strs(&["LPOP", &k("l", n)]),
            20 => strs(&[
                "DEL",
                &k(["s", "k", "h", "t", "z", "l"][next(6) as usize], n),
            ]),
            21 => strs(&["RENAME", &k("s", n), &k("s", next(8))]),
            22 => strs(&[
                "MOVE",
                &k(["s", "k", "h"][next(3) as usize], n),
                &next(3).to_string(),
            ]),
            _ => match next(8) {
                0 => strs(&["SWAPDB", "0", &(1 + next(2)).to_string()]),
                1 => strs(&["FLUSHDB"]),
                _ => strs(&["COPY", &k("h", n), &k("h", next(8)), "REPLACE"]),
            },
        };
        q(s, &cmd);
    };
    let (mut holds, mut walked) = (0usize, 0usize);
    for round in 0..6 {
        for _ in 0..400 {
            change(&mut s, &mut next, &mut id);
        }
        q(&mut s, &strs(&["SELECT", "0"]));
        if round < 2 {
            // Runs of stored blocks and sealed lists to take from.
            let (covered, snap) = {
                let mut store = shared.store.lock();
                let cfg = shared.config.read();
                p.begin_checkpoint(&shared, &mut store, &cfg)
                    .unwrap_or_else(|| panic!("checkpoint running"))
            };
            p.finish_checkpoint(covered, snap, cache.as_deref())
                .unwrap_or_else(|e| panic!("{e}"));
            while shared.store.lock().evict_step() {}
            continue;
        }
        let at_cut = dump(&mut s);
        let cut = {
            let mut store = shared.store.lock();
            let cfg = shared.config.read();
            p.cut(&shared, &mut store, &cfg)
                .unwrap_or_else(|| panic!("checkpoint running"))
        };
        let mut cut = Some(cut);
        let (covered, snap) = loop {
            let taken = {
                let mut store = shared.store.lock();
                holds += 1;
                if cut_step(&mut store, 1) {
                    cut.take().map(|c| end_cut(&mut store, c))
                } else {
                    None
                }
            };
            if let Some(t) = taken {
                break t;
            }
            walked += 1;
            for _ in 0..next(4) {
                change(&mut s, &mut next, &mut id);
            }
        };
        let slot = parking_lot::Mutex::new(None);
        let live = cache.clone().unwrap_or_else(|| panic!("no cache"));
        p.finish_checkpoint_keeping(covered, snap, Some(&live), Some((&slot, live.clone())))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        while shared.store.lock().evict_step() {}
        let Some(loaded) = slot.into_inner() else {
            panic!("not read back");
        };
        // The checkpoint's keyspace, read with the same commands.
        let other = Shared::new(Config::default());
        {
            let mut st = other.store.lock();
            st.block_cache = Some(live.clone());
            for (i, db) in loaded.dbs.into_iter().enumerate() {
                st.dbs[i] = db;
            }
        }
        let mut o = Session::internal(other.clone());
        assert_eq!(dump(&mut o), at_cut, "round {round}");
    }
    // The stepped walks did interleave with commands.
    assert!(walked > 100 && holds > walked, "{walked} steps");
    q(&mut s, &strs(&["SELECT", "0"]));
    let at_end = dump(&mut s);
    // A crash: the last checkpoint, then the log after it.
    let again = crash_and_reopen(&dir, (shared, s, p), "4");
    let mut s = Session::internal(again.clone());
    // A consumer's seen-time moves on reads that find nothing, which
    // are not logged (nor propagated by Redis): the log does not restore
    // it, the checkpoint does (compared above).
    let unseen = |d: Vec<String>| -> Vec<String> {
        d.into_iter()
            .map(|l| {
                let mut out = String::new();
                let mut rest = &l[..];
                while let Some(at) = rest.find("seen-time\"), Int(") {
                    let (head, tail) = rest.split_at(at);
                    out.push_str(head);
                    out.push_str("seen-time");
                    let int = tail.find("Int(").map_or(tail.len(), |i| i + 4);
                    rest = tail[int..].find(')').map_or("", |e| &tail[int + e..]);
                }
                out.push_str(rest);
                out
            })
            .collect()
    };
    let (back, at_end) = (unseen(dump(&mut s)), unseen(at_end));
    let differ: Vec<_> = back
        .iter()
        .zip(&at_end)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        back == at_end,
        "after a restart: {} keys, {} before; {differ:#?}",
        back.len(),
        at_end.len()
    );
    drop(s);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: BGSAVE inside a transaction after one of its writes cut the
/// keyspace with the write in it but before the transaction's record was
/// in the log, so the checkpoint covered less of the log than it held and
/// a restart applied the write twice (x came back 12). The checkpoint now
/// starts right after the record.
#[test]
fn bgsave_inside_a_transaction_covers_its_writes_once() {
    let (dir, shared, mut s, p) = manual_checkpoints("bgsave-multi", "100");
    call(&mut s, &["SET", "x", "10"]);
    let before = p.checkpoints_done.load(Ordering::Relaxed);
    call(&mut s, &["MULTI"]);
    call(&mut s, &["INCR", "x"]);
    call(&mut s, &["BGSAVE"]);
    call(&mut s, &["INCR", "y"]);
    let r = call(&mut s, &["EXEC"]);
    assert!(
        matches!(&r, Reply::Array(a) if a.len() == 3
            && matches!(a[0], Reply::Int(11))
            && matches!(&a[1], Reply::Simple(m) if &m[..] == b"Background saving started")),
        "{r:?}"
    );
    assert!(p.wait_checkpoint_idle(std::time::Duration::from_secs(60)));
    assert_eq!(p.checkpoints_done.load(Ordering::Relaxed), before + 1);
    // A crash: the checkpoint, then the log after it.
    let again = crash_and_reopen(&dir, (shared, s, p), "100");
    let mut s = Session::internal(again.clone());
    let x = call(&mut s, &["GET", "x"]);
    assert!(matches!(&x, Reply::Bulk(b) if &b[..] == b"11"), "{x:?}");
    let y = call(&mut s, &["GET", "y"]);
    assert!(matches!(&y, Reply::Bulk(b) if &b[..] == b"1"), "{y:?}");
    drop(s);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
