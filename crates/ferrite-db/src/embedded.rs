//! Running commands in-process, without a socket: the fuzz targets and the
//! pipeline engine use this. A [`Session`] behaves like one connected client,
//! except that blocking commands never block (they reply as they would
//! inside MULTI).

use crate::cmd::{self, ClientState};
use crate::config::Config;
use crate::reply::Reply;
use crate::shared::{now_ms, Shared};
use crate::store::ClientInfo;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Session {
    shared: Arc<Shared>,
    client: ClientState,
}

impl Session {
    /// A session on a fresh server state with `config`.
    /// Effects are collected in `store.pending_log` (tests read them with
    /// `Store::take_effects`).
    pub fn with_config(config: Config) -> Session {
        let shared = Shared::new(config);
        shared.store.lock().logging = true;
        Session::attach(shared)
    }

    /// A new client on an existing server state.
    pub fn attach(shared: Arc<Shared>) -> Session {
        let authenticated = shared.config.read().requirepass.is_empty();
        Session::new(shared, authenticated)
    }

    /// A client of the server itself (commit-log replay, pipelines): it
    /// needs no AUTH.
    /// Like Redis's fake clients it takes no client ID from the connection
    /// sequence and does not show in CLIENT LIST.
    pub fn internal(shared: Arc<Shared>) -> Session {
        static NEXT_INTERNAL: std::sync::atomic::AtomicU64 =
            std::sync::atomic::AtomicU64::new(1 << 63);
        let id = NEXT_INTERNAL.fetch_add(1, Ordering::Relaxed);
        Session {
            shared,
            client: ClientState::new(id, true),
        }
    }

    fn new(shared: Arc<Shared>, authenticated: bool) -> Session {
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        shared.store.lock().clients.insert(
            id,
            ClientInfo::new(
                id,
                "embedded:0".into(),
                "embedded:0".into(),
                now,
                Arc::new(tokio::sync::Notify::new()),
            ),
        );
        Session {
            shared,
            client: ClientState::new(id, authenticated),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The protocol version replies should be encoded with (HELLO changes it).
    pub fn resp(&self) -> u8 {
        self.client.resp
    }

    /// Run the following commands in database `db` (SELECT).
    pub fn select(&mut self, db: usize) {
        self.client.db = db;
    }

    /// Run one command line in database `db`.
    pub fn call_in_db(&mut self, db: usize, argv: Vec<Bytes>) -> Reply {
        self.client.db = db;
        self.call(argv)
    }

    /// Run one command line and return its reply.
    /// NOTE: the reply does not wait for the command's commit-log record;
    /// the writer is woken so it is written soon. Callers that must know
    /// when the effects are durable use [`Session::call_tracked`].
    pub fn call(&mut self, argv: Vec<Bytes>) -> Reply {
        self.call_tracked(argv).0
    }

    /// Run one command line; its reply, and the commit-log record that
    /// holds its effects (`None`: it had none, or persistence is off). The
    /// effects are durable, as `appendfsync` promises, once
    /// [`crate::persist::Persistence::wait_blocking`] (or `wait`) says `Ok`
    /// for that record.
    pub fn call_tracked(&mut self, argv: Vec<Bytes>) -> (Reply, Option<u64>) {
        if argv.is_empty() {
            return (Reply::Null, None);
        }
        let shared = self.shared.clone();
        let mut store = shared.store.lock();
        let (done, commit) = cmd::execute(
            &shared,
            &mut store,
            &mut self.client,
            argv,
            None,
            now_ms(),
            false,
        );
        drop(store);
        crate::persist::kick(&shared);
        let seq = match commit {
            crate::persist::Commit::Failed(msg) => return (Reply::error(msg), None),
            crate::persist::Commit::Wait(seq) => Some(seq),
            crate::persist::Commit::Done => None,
        };
        match done {
            cmd::Executed::Reply(r) => (r, seq),
            // Not reached: may_block is false.
            cmd::Executed::Blocked(..) => (Reply::NullArray, seq),
        }
    }
}

/// Commands run by [`Session::atomically`]: one lock hold, one commit-log
/// record, no other client's command in between.
pub struct Atomic<'a> {
    shared: &'a Arc<Shared>,
    store: &'a mut crate::store::Store,
    client: &'a mut ClientState,
    now_ms: u64,
}

impl Atomic<'_> {
    /// A command context on the locked store, as a command of this
    /// session's client would see it.
    fn ctx(&mut self) -> cmd::Ctx<'_> {
        cmd::Ctx {
            store: &mut *self.store,
            client: &mut *self.client,
            shared: self.shared,
            now_ms: self.now_ms,
            in_exec: false,
            block: None,
            propagate: None,
            parsed: None,
        }
    }

    /// Run one command line (blocking commands reply as inside MULTI).
    pub fn call(&mut self, argv: Vec<Bytes>) -> Reply {
        if argv.is_empty() {
            return Reply::Null;
        }
        let mut ctx = self.ctx();
        let reply = match cmd::dispatch(&mut ctx, argv) {
            cmd::Dispatch::Reply(r) | cmd::Dispatch::Block(_, r) => r,
        };
        self.store.serve_ready(self.now_ms);
        reply
    }

    /// Append an entry to the stream `key` in the selected database as
    /// `XADD key [MAXLEN [~|=] n] * f1 v1 ...` would, without the command
    /// path (no parsing, no reply, no command statistics): `fields` is
    /// `[f1, v1, ...]`. The new ID's text, or the error XADD would reply
    /// (WRONGTYPE, an odd or empty field list, an exhausted stream).
    pub fn xadd(
        &mut self,
        key: &Bytes,
        fields: &[Bytes],
        maxlen: Option<(bool, u64)>,
    ) -> Result<Bytes, Reply> {
        if fields.len() < 2 || fields.len() % 2 == 1 {
            return Err(crate::error::CmdError::WrongArity("xadd".into()).to_reply());
        }
        let trim = maxlen.map(|(approx, n)| ferrite_streams::stream::TrimSpec {
            strategy: ferrite_streams::stream::Trim::MaxLen(n),
            approx,
            limit: None,
        });
        let mut ctx = self.ctx();
        let r = cmd::stream::append(
            &mut ctx,
            key,
            ferrite_streams::XaddId::Auto,
            fields,
            trim.as_ref(),
        )
        .map_err(|e| e.to_reply());
        self.store.serve_ready(self.now_ms);
        r
    }

    /// [`Atomic::xadd`] of each of `entries` (each `[(f1, v1), ...]`), in
    /// order, with one key lookup and one wake of blocked readers
    /// ([`cmd::stream::append_batch`]): the stream and the log are those
    /// of that many XADDs. How many were appended, or how many were
    /// appended before the error XADD would have replied.
    pub fn xadd_batch<'e, A, B, I>(
        &mut self,
        key: &[u8],
        entries: I,
        maxlen: Option<(bool, u64)>,
    ) -> Result<u64, (u64, Reply)>
    where
        A: AsRef<[u8]> + 'e,
        B: AsRef<[u8]> + 'e,
        I: IntoIterator<Item = &'e [(A, B)]>,
    {
        let trim = maxlen.map(|(approx, n)| ferrite_streams::stream::TrimSpec {
            strategy: ferrite_streams::stream::Trim::MaxLen(n),
            approx,
            limit: None,
        });
        let mut ctx = self.ctx();
        let r = cmd::stream::append_batch(&mut ctx, key, entries, trim.as_ref())
            .map_err(|(n, e)| (n, e.to_reply()));
        self.store.serve_ready(self.now_ms);
        r
    }

    /// Log a subsystem's effect in the same record as these commands
    /// ([`crate::store::Store::log_subsystem`]).
    pub fn log_subsystem(&mut self, name: &str, effect: &[u8]) {
        self.store.log_subsystem(name, effect);
    }

    /// Run the following commands in database `db` (SELECT).
    pub fn select(&mut self, db: usize) {
        self.client.db = db;
    }

    /// The locked store, for reads (and a subsystem's own bookkeeping).
    pub fn store(&mut self) -> &mut crate::store::Store {
        self.store
    }
}

impl Session {
    /// Run `f`'s commands and subsystem effects as one unit: under one
    /// hold of the store lock and in one commit-log record, so that after
    /// a crash either all of them were recovered or none. Returns `f`'s
    /// result and the record to wait for (`None`: no effects, or
    /// persistence off), or the error that stopped it (a panic, or the log
    /// refusing the record: then nothing of it is durable).
    pub fn atomically<T>(
        &mut self,
        f: impl FnOnce(&mut Atomic<'_>) -> T,
    ) -> Result<(T, Option<u64>), Reply> {
        let shared = self.shared.clone();
        let now = now_ms();
        let client = &mut self.client;
        let ran = {
            let mut store = shared.store.lock();
            cmd::guarded(&shared, &mut store, |store| {
                f(&mut Atomic {
                    shared: &shared,
                    store,
                    client,
                    now_ms: now,
                })
            })
        };
        crate::persist::kick(&shared);
        let (out, commit) = ran?;
        match commit {
            crate::persist::Commit::Failed(msg) => Err(Reply::error(msg)),
            crate::persist::Commit::Wait(seq) => Ok((out, Some(seq))),
            crate::persist::Commit::Done => Ok((out, None)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut store = self.shared.store.lock();
        let watched = std::mem::take(&mut self.client.watched);
        store.unwatch_all(self.client.id, &watched);
        store.clients.remove(&self.client.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn multi_exec_and_watch() {
        let mut a = Session::with_config(Config::default());
        let mut b = Session::attach(a.shared().clone());
        assert_eq!(a.call(argv(&["WATCH", "k"])), Reply::ok());
        assert_eq!(a.call(argv(&["MULTI"])), Reply::ok());
        assert_eq!(a.call(argv(&["PING"])), Reply::simple("QUEUED"));
        assert_eq!(
            a.call(argv(&["EXEC"])),
            Reply::Array(vec![Reply::simple("PONG")])
        );
        // A touched WATCHed key aborts EXEC with a null array.
        a.call(argv(&["WATCH", "k"]));
        a.call(argv(&["MULTI"]));
        b.call(argv(&["DEL", "k"])); // no-op delete does not touch
        b.call(argv(&["FLUSHALL"]));
        assert_eq!(a.call(argv(&["EXEC"])), Reply::Array(vec![]));
        // Queue-time errors abort the transaction.
        a.call(argv(&["MULTI"]));
        assert!(a.call(argv(&["NOSUCH"])).is_error());
        assert_eq!(
            a.call(argv(&["EXEC"])),
            Reply::error("EXECABORT Transaction discarded because of previous errors.")
        );
    }

    #[test]
    fn select_and_auth() {
        let mut cfg = Config::default();
        cfg.set_startup("requirepass", "pw").ok();
        let mut s = Session::with_config(cfg);
        assert_eq!(
            s.call(argv(&["PING"])),
            Reply::error("NOAUTH Authentication required.")
        );
        assert!(s.call(argv(&["AUTH", "bad"])).is_error());
        assert_eq!(s.call(argv(&["AUTH", "pw"])), Reply::ok());
        assert_eq!(s.call(argv(&["SELECT", "15"])), Reply::ok());
        assert_eq!(
            s.call(argv(&["SELECT", "16"])),
            Reply::error("ERR DB index is out of range")
        );
    }

    /// The stream `key` in db 0: its blocks' bytes and its metadata.
    fn stream_state(a: &mut Atomic<'_>, key: &[u8]) -> (Vec<(String, Vec<u8>)>, String, u64) {
        match a.store().dbs[0].get(key) {
            Some(crate::store::Value::Stream(s)) => (
                s.blocks()
                    .map(|b| (b.master_id().to_string(), b.encoded().to_vec()))
                    .collect(),
                format!("{:?}", s.meta()),
                s.len(),
            ),
            _ => panic!("no stream at the key"),
        }
    }

    fn results(n: usize) -> Vec<Vec<(Bytes, Bytes)>> {
        (0..n)
            .map(|i| {
                let mut r = vec![
                    (Bytes::from("symbol"), Bytes::from(format!("S{:05}", i % 7))),
                    (Bytes::from("n"), Bytes::from(i.to_string())),
                ];
                // Every fifth has other names (no SAMEFIELDS); every
                // seventh a long value.
                if i % 5 == 4 {
                    r.push((Bytes::from("extra"), Bytes::from("1.5")));
                }
                if i % 7 == 6 {
                    r[1].1 = Bytes::from(vec![b'x'; 300]);
                }
                r
            })
            .collect()
    }

    #[test]
    fn xadd_batch_is_n_xadds() {
        for maxlen in [None, Some((false, 7)), Some((true, 5))] {
            let mut cfg = Config::default();
            cfg.set_startup("stream-node-max-entries", "4").ok();
            let entries = results(40);
            // IDs far ahead of the clock: `*` then increments the sequence,
            // the same in both sessions.
            let setup = argv(&["XADD", "s", "99999999999999-0", "a", "b"]);
            let mut one = Session::with_config(cfg.clone());
            let mut batch = Session::with_config(cfg.clone());
            one.call(setup.clone());
            batch.call(setup);
            one.shared().store.lock().clear_effects();
            batch.shared().store.lock().clear_effects();
            let ((single, single_log), _) = one
                .atomically(|a| {
                    for e in &entries {
                        let flat: Vec<Bytes> =
                            e.iter().flat_map(|(f, v)| [f.clone(), v.clone()]).collect();
                        a.xadd(&Bytes::from("s"), &flat, maxlen).unwrap();
                    }
                    (stream_state(a, b"s"), a.store().take_effects())
                })
                .unwrap();
            let ((batched, batch_log), _) = batch
                .atomically(|a| {
                    let n = a
                        .xadd_batch(b"s", entries.iter().map(|e| e.as_slice()), maxlen)
                        .unwrap();
                    assert_eq!(n, 40);
                    (stream_state(a, b"s"), a.store().take_effects())
                })
                .unwrap();
            assert_eq!(single, batched, "maxlen {maxlen:?}");
            assert_eq!(single_log, batch_log, "maxlen {maxlen:?}");
            assert!(batched.0.len() > 1, "several blocks");
            if maxlen.is_some() {
                assert!(batch_log.iter().any(|(_, c)| c[0] == "XTRIM"));
            }
            // Replayed, the log gives the same stream.
            let mut replay = Session::with_config(cfg);
            replay.call(argv(&["XADD", "s", "99999999999999-0", "a", "b"]));
            for (db, cmd) in batch_log {
                assert!(!replay.call_in_db(db, cmd).is_error());
            }
            let (replayed, _) = replay.atomically(|a| stream_state(a, b"s")).unwrap();
            assert_eq!(replayed, batched, "maxlen {maxlen:?}");
        }
    }

    #[test]
    fn xadd_batch_errors() {
        let mut s = Session::with_config(Config::default());
        s.call(argv(&["SET", "str", "v"]));
        let entries = results(3);
        let (r, _) = s
            .atomically(|a| a.xadd_batch(b"str", entries.iter().map(|e| e.as_slice()), None))
            .unwrap();
        assert_eq!(
            r,
            Err((
                0,
                Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value")
            ))
        );
        // An entry with no pairs stops the batch; the ones before it stay.
        let mut with_empty = results(3);
        with_empty.insert(2, Vec::new());
        let (r, _) = s
            .atomically(|a| a.xadd_batch(b"k", with_empty.iter().map(|e| e.as_slice()), None))
            .unwrap();
        assert_eq!(
            r,
            Err((
                2,
                Reply::error("ERR wrong number of arguments for 'xadd' command")
            ))
        );
        assert_eq!(s.call(argv(&["XLEN", "k"])), Reply::Int(2));
        // Nothing to add, or a first entry with no pairs: no stream.
        let none: Vec<Vec<(Bytes, Bytes)>> = vec![Vec::new()];
        let (r, _) = s
            .atomically(|a| a.xadd_batch(b"e", none.iter().map(|e| e.as_slice()), None))
            .unwrap();
        assert!(matches!(r, Err((0, _))));
        let (r, _) = s
            .atomically(|a| a.xadd_batch(b"e", none[..0].iter().map(|e| e.as_slice()), None))
            .unwrap();
        assert_eq!(r, Ok(0));
        assert_eq!(s.call(argv(&["EXISTS", "e"])), Reply::Int(0));
        // An exhausted stream refuses, as XADD does.
        s.call(argv(&[
            "XADD",
            "max",
            "18446744073709551615-18446744073709551615",
            "a",
            "b",
        ]));
        let (r, _) = s
            .atomically(|a| a.xadd_batch(b"max", entries.iter().map(|e| e.as_slice()), None))
            .unwrap();
        let want = s.call(argv(&["XADD", "max", "*", "a", "b"]));
        assert_eq!(r, Err((0, want)));
    }

    #[test]
    fn put_cmd_pairs_is_put_cmd_parts() {
        let pairs = [
            (Bytes::from("f"), Bytes::from("v")),
            (Bytes::from(""), Bytes::from(vec![7u8; 200])),
        ];
        let mut ours = vec![9u8];
        crate::persist::put_cmd_pairs(&mut ours, 3, &[b"XADD", b"key", b"5-1"], &pairs);
        let mut theirs = vec![9u8];
        let flat: Vec<&[u8]> = pairs.iter().flat_map(|(f, v)| [&f[..], &v[..]]).collect();
        crate::persist::put_cmd_parts(&mut theirs, 3, &[b"XADD", b"key", b"5-1"], &flat);
        assert_eq!(ours, theirs);
    }
}
