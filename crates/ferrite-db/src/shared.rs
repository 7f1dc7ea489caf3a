//! The state shared by every client of one database: the keyspace (behind
//! one mutex), the configuration, the commit log, and the shutdown signal.

use crate::config::Config;
use crate::store::Store;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Applies a Redis `loglevel` to the process's logger.
pub type LoglevelHook = Box<dyn Fn(&str) + Send + Sync>;

/// Writes an INFO section registered by a subsystem
/// ([`Shared::register_info_section`]): its `# Title` line and its
/// `field:value\r\n` lines, with the store locked.
pub type InfoSection = Box<dyn Fn(&crate::store::Store, u64, &mut String) + Send + Sync>;

/// State shared by every connection.
pub struct Shared {
    /// The keyspace and everything commands touch. Held for one command at a
    /// time (or one EXEC), never across an `.await`.
    pub store: Mutex<Store>,
    /// Read on every command batch (limits), written by CONFIG SET.
    pub config: RwLock<Config>,
    pub next_client_id: AtomicU64,
    pub connected: AtomicUsize,
    /// Flips to true once: every connection and the listener stop.
    pub shutdown_tx: watch::Sender<bool>,
    pub run_id: String,
    pub tcp_port: AtomicU64,
    pub started: std::time::Instant,
    /// The commit log, once recovery has finished (absent with `appendonly no`).
    pub persist: std::sync::OnceLock<Arc<crate::persist::Persistence>>,
    /// Set once a command panicked under the store lock (`cmd::guarded`):
    /// its effects were half applied and not logged, so writes stop.
    fatal: std::sync::OnceLock<String>,
    /// Applies `loglevel` to the process's logger when CONFIG SET changes
    /// it (the logger belongs to whoever embeds the database).
    pub loglevel_hook: std::sync::OnceLock<LoglevelHook>,
    /// Commands registered by subsystems above the database, by lowercase name.
    ext_commands: RwLock<std::collections::HashMap<String, &'static crate::cmd::Command>>,
    /// State of subsystems above the database, one value per type
    /// ([`Shared::set_extension`]): how their command handlers find it.
    extensions: RwLock<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    /// State outside the keyspace that logs its changes beside commands.
    subsystems: RwLock<Vec<(String, Arc<dyn crate::persist::Subsystem>)>>,
    /// INFO sections of subsystems, by lowercase name, printed after
    /// Redis's own ones.
    info_sections: RwLock<Vec<(String, Arc<InfoSection>)>>,
    /// Whether the cron deletes expired keys in the background (DEBUG
    /// SET-ACTIVE-EXPIRE; lazy expiry on access always runs).
    pub active_expire: std::sync::atomic::AtomicBool,
    /// CLIENT PAUSE: until when (ms; 0: not paused) and whether every
    /// command waits (ALL) or only writes (WRITE).
    pub pause_until: AtomicU64,
    pub pause_all: std::sync::atomic::AtomicBool,
    /// Wakes paused connections (CLIENT UNPAUSE).
    pub unpause: tokio::sync::Notify,
    /// Network counters and instantaneous rates (INFO stats).
    pub metrics: crate::metrics::Metrics,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let (shutdown_tx, _) = watch::channel(false);
        let seed = now_ms() ^ (std::process::id() as u64) << 20;
        let run_id: String = (0..40)
            .map(|i| {
                let x = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add((i as u64).wrapping_mul(1442695040888963407));
                let d = ((x >> 33) ^ (x >> 17)) % 16;
                char::from_digit(d as u32, 16).unwrap_or('0')
            })
            .collect();
        let mut store = Store::new(config.databases, now_ms());
        store.notify_flags = config.notify_keyspace_events;
        store.pubsub.limit = Some(config.pubsub_output_limit);
        store.slowlog.configure(&config);
        Arc::new(Shared {
            store: Mutex::new(store),
            active_expire: std::sync::atomic::AtomicBool::new(true),
            pause_until: AtomicU64::new(0),
            pause_all: std::sync::atomic::AtomicBool::new(false),
            unpause: tokio::sync::Notify::new(),
            metrics: crate::metrics::Metrics::default(),
            config: RwLock::new(config),
            // NOTE: Redis 7.0 gives IDs 1 and 2 to internal clients (scripting),
            // so the first connection is client 3 there; tools that print IDs match.
            next_client_id: AtomicU64::new(3),
            connected: AtomicUsize::new(0),
            shutdown_tx,
            run_id,
            tcp_port: AtomicU64::new(0),
            started: std::time::Instant::now(),
            persist: std::sync::OnceLock::new(),
            fatal: std::sync::OnceLock::new(),
            loglevel_hook: std::sync::OnceLock::new(),
            ext_commands: RwLock::new(std::collections::HashMap::new()),
            extensions: RwLock::new(Vec::new()),
            subsystems: RwLock::new(Vec::new()),
            info_sections: RwLock::new(Vec::new()),
        })
    }

    /// Redis's MISCONF text if the commit log has failed: writes are refused.
    pub fn write_error(&self) -> Option<String> {
        if let Some(what) = self.fatal.get() {
            return Some(format!(
                "MISCONF A command failed inside the server ({what}): writes are refused until a restart"
            ));
        }
        let p = self.persist.get()?;
        if let Some(e) = p.read_failure() {
            return Some(format!(
                "MISCONF Errors reading stored stream data ({e}): writes are refused until a restart"
            ));
        }
        let e = p.failure()?;
        Some(crate::persist::misconf_message(&e))
    }

    /// Register `sub` under `name` (before recovery, so that replay can
    /// hand it its logged effects). A second registration of a name
    /// replaces the first.
    pub fn register_subsystem(&self, name: &str, sub: Arc<dyn crate::persist::Subsystem>) {
        let mut list = self.subsystems.write();
        list.retain(|(n, _)| n != name);
        list.push((name.to_string(), sub));
    }

    /// Add a section to INFO (printed by `INFO`, `INFO all`, `INFO
    /// everything` and `INFO <name>`, after Redis's sections). A second
    /// registration of a name replaces the first.
    pub fn register_info_section(&self, name: &str, f: InfoSection) {
        let name = name.to_ascii_lowercase();
        let mut list = self.info_sections.write();
        list.retain(|(n, _)| *n != name);
        list.push((name, Arc::new(f)));
    }

    /// The registered INFO sections, in registration order.
    pub fn info_sections(&self) -> Vec<(String, Arc<InfoSection>)> {
        self.info_sections.read().clone()
    }

    /// CLIENT PAUSE in force at `now` (ms): `Some(all)` until it ends.
    /// [`Shared::paused`] now, reading the clock only if a pause was set.
    pub fn paused_now(&self) -> Option<bool> {
        use std::sync::atomic::Ordering;
        let until = self.pause_until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = now_ms();
        if until <= now {
            // Over: back to the fast path (unless a new pause came in).
            let _ =
                self.pause_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        self.paused(now)
    }

    pub fn paused(&self, now: u64) -> Option<bool> {
        use std::sync::atomic::Ordering;
        let until = self.pause_until.load(Ordering::Acquire);
        (until > now).then(|| self.pause_all.load(Ordering::Acquire))
    }

    /// The subsystem registered under `name`.
    pub fn subsystem(&self, name: &str) -> Option<Arc<dyn crate::persist::Subsystem>> {
        let list = self.subsystems.read();
        list.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone())
    }

    /// Add a command (before clients are served). Built-in names win.
    pub fn register_command(&self, cmd: crate::cmd::ExtCommand) {
        let name = cmd.name.to_ascii_lowercase();
        let cmd = cmd.into_command();
        self.ext_commands.write().insert(name, cmd);
    }

    /// The registered command `name` (any case).
    pub fn ext_command(&self, name: &[u8]) -> Option<&'static crate::cmd::Command> {
        let map = self.ext_commands.read();
        if map.is_empty() {
            return None;
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        map.get(&name).copied()
    }

    /// Every registered command.
    pub fn ext_commands(&self) -> impl Iterator<Item = &'static crate::cmd::Command> {
        let list: Vec<_> = self.ext_commands.read().values().copied().collect();
        list.into_iter()
    }

    /// Keep `value` as this database's extension state of its type
    /// (replacing an earlier one of the same type).
    pub fn set_extension<T: std::any::Any + Send + Sync>(&self, value: Arc<T>) {
        let mut list = self.extensions.write();
        list.retain(|e| !e.is::<T>());
        list.push(value);
    }

    /// The extension state of type `T`, if one was set.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let list = self.extensions.read();
        list.iter().find_map(|e| e.clone().downcast::<T>().ok())
    }

    /// Every subsystem's checkpoint state, by name (call with the store
    /// locked, at the instant the keyspace is snapshotted).
    pub fn subsystem_snapshots(
        &self,
        store: &crate::store::Store,
    ) -> Vec<(String, crate::persist::Section)> {
        let list: Vec<_> = self.subsystems.read().clone();
        list.into_iter()
            .map(|(name, sub)| {
                let state = sub.snapshot(store);
                (name, state)
            })
            .collect()
    }

    /// Stop accepting writes for good (the first reason is kept).
    pub fn set_fatal(&self, what: String) {
        let _ = self.fatal.set(what);
    }

    pub fn request_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }
}
