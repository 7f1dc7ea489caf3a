//! Stream reads are bounded: XRANGE refuses a reply past `max-reply-size`,
//! XREAD and XREADGROUP return a shorter batch (the reader goes on from
//! its last ID), and XREADGROUP's deliveries are logged as XCLAIMs of up
//! to 1,024 IDs, which replay to the same pending entries.

use bytes::Bytes;
use ferrite_db::config::Config;
use ferrite_db::embedded::Session;
use ferrite_db::reply::Reply;

fn argv(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

/// The reply's RESP2 size in bytes.
fn size(r: &Reply) -> usize {
    let mut out = bytes::BytesMut::new();
    r.encode(2, &mut out);
    out.len()
}

/// Entries pending in group `g` of `s`.
fn pending(s: &mut Session) -> i64 {
    match s.call(argv(&["XPENDING", "s", "g"])) {
        Reply::Array(v) => match v.first() {
            Some(Reply::Int(n)) => *n,
            _ => panic!("{v:?}"),
        },
        r => panic!("{r:?}"),
    }
}

fn fill(s: &mut Session, n: usize) {
    let v = "x".repeat(100);
    for i in 1..=n {
        let id = format!("{i}-1");
        assert!(!s.call(argv(&["XADD", "s", &id, "f", &v])).is_error());
    }
}

#[test]
fn xrange_past_max_reply_size_is_refused_with_a_clear_error() {
    let mut s = Session::with_config(Config::default());
    assert_eq!(
        s.call(argv(&["CONFIG", "SET", "max-reply-size", "1mb"])),
        Reply::ok()
    );
    fill(&mut s, 20_000);
    match s.call(argv(&["XRANGE", "s", "-", "+"])) {
        Reply::Error(e) => assert!(
            e.starts_with(b"ERR the reply would be larger than max-reply-size (1048576 bytes)"),
            "{e:?}"
        ),
        r => panic!(
            "an unbounded range was built: {:?}",
            std::mem::discriminant(&r)
        ),
    }
    assert!(!s
        .call(argv(&["XREVRANGE", "s", "+", "-", "COUNT", "100"]))
        .is_error());
    assert!(!s
        .call(argv(&["XRANGE", "s", "-", "+", "COUNT", "5000"]))
        .is_error());
}

#[test]
fn xread_and_xreadgroup_return_shorter_batches_that_add_up() {
    let mut s = Session::with_config(Config::default());
    s.call(argv(&["CONFIG", "SET", "max-reply-size", "1mb"]));
    fill(&mut s, 20_000);
    // 20,000 entries of about 130 reply bytes: 2.6 MB, more than the bound.
    let r = s.call(argv(&["XREAD", "STREAMS", "s", "0"]));
    let n = size(&r);
    assert!(n > 512 << 10 && n < 1100 << 10, "XREAD reply of {n} bytes");

    assert_eq!(
        s.call(argv(&["XGROUP", "CREATE", "s", "g", "0"])),
        Reply::ok()
    );
    let mut calls = 0;
    while pending(&mut s) < 20_000 {
        let r = s.call(argv(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "s",
            ">",
        ]));
        assert!(size(&r) < 1100 << 10, "one batch of {} bytes", size(&r));
        calls += 1;
        assert!(calls < 100, "deliveries stalled at {}", pending(&mut s));
    }
    assert!(calls >= 3, "{calls} calls");
    // Nothing more, nothing twice.
    assert_eq!(pending(&mut s), 20_000);
    let r = s.call(argv(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "STREAMS",
        "s",
        ">",
    ]));
    assert_eq!(r, Reply::NullArray);
}

#[test]
fn deliveries_are_logged_in_batches_that_replay_to_the_same_pel() {
    let mut s = Session::with_config(Config::default());
    let shared = s.shared().clone();
    fill(&mut s, 5000);
    s.call(argv(&["XGROUP", "CREATE", "s", "g", "0"]));
    let mut log = Vec::new();
    // Run it as the server does, but keep the effects it logs.
    let effects = {
        let mut store = shared.store.lock();
        let mut client = ferrite_db::cmd::ClientState::new(1 << 40, true);
        let mut ctx = ferrite_db::cmd::Ctx {
            store: &mut store,
            client: &mut client,
            shared: &shared,
            now_ms: ferrite_db::shared::now_ms(),
            in_exec: false,
            block: None,
            propagate: None,
            parsed: None,
        };
        let a = argv(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "5000",
            "STREAMS",
            "s",
            ">",
        ]);
        let _ = ferrite_db::cmd::dispatch(&mut ctx, a);
        store.take_effects()
    };
    assert_eq!(pending(&mut s), 5000);
    let xclaims = effects
        .iter()
        .filter(|(_, a)| a[0].eq_ignore_ascii_case(b"XCLAIM"))
        .count();
    assert_eq!(xclaims, 5, "5000 deliveries in XCLAIMs of 1,024 IDs");
    log.extend(effects);

    // The logged commands, replayed on a fresh database, give the same PEL.
    let mut twin = Session::with_config(Config::default());
    fill(&mut twin, 5000);
    twin.call(argv(&["XGROUP", "CREATE", "s", "g", "0"]));
    for (db, a) in log {
        let r = twin.call_in_db(db, a);
        assert!(!r.is_error(), "{r:?}");
    }
    let full = |s: &mut Session| s.call(argv(&["XPENDING", "s", "g", "-", "+", "10000"]));
    let a = full(&mut s);
    // Idle times differ by the time between the calls: compare IDs, owners, counts.
    let strip = |r: Reply| -> Vec<(Reply, Reply, Reply)> {
        match r {
            Reply::Array(v) => v
                .into_iter()
                .map(|e| match e {
                    Reply::Array(f) => (f[0].clone(), f[1].clone(), f[3].clone()),
                    o => panic!("{o:?}"),
                })
                .collect(),
            o => panic!("{o:?}"),
        }
    };
    assert_eq!(strip(a).len(), 5000);
    assert_eq!(strip(full(&mut s)), strip(full(&mut twin)));
    let info = |s: &mut Session| s.call(argv(&["XINFO", "GROUPS", "s"]));
    assert_eq!(info(&mut s), info(&mut twin));
}
