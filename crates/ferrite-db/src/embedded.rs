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

    /// Run one command line in database `db`.
    pub fn call_in_db(&mut self, db: usize, argv: Vec<Bytes>) -> Reply {
        self.client.db = db;
        self.call(argv)
    }

    /// Run one command line and return its reply.
    pub fn call(&mut self, argv: Vec<Bytes>) -> Reply {
        if argv.is_empty() {
            return Reply::Null;
        }
        let shared = self.shared.clone();
        let mut store = shared.store.lock();
        let (done, commit) =
            cmd::execute(&shared, &mut store, &mut self.client, argv, now_ms(), false);
        drop(store);
        // NOTE: embedded sessions log their effects but do not wait for
        // them; the writer is woken so they are written soon.
        crate::persist::kick(&shared);
        match (done, commit) {
            (_, crate::persist::Commit::Failed(msg)) => Reply::error(msg),
            (cmd::Executed::Reply(r), _) => r,
            // Not reached: may_block is false.
            (cmd::Executed::Blocked(..), _) => Reply::NullArray,
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
}
