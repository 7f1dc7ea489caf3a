//! The server state that commands read and write: databases, WATCH marks,
//! blocked clients, the client list and command statistics.
//!
//! It lives behind one `parking_lot::Mutex` in [`crate::shared::Shared`].
//! A command (or a whole EXEC) runs with the lock held and never awaits, so
//! commands are atomic and ordered exactly as in single-threaded Redis, while
//! socket I/O and RESP parsing run in parallel outside it. Blocked readers are
//! served under the same lock right after the command that made their key
//! ready, in FIFO order, as Redis's `handleClientsBlockedOnKeys` does.

use crate::reply::Reply;
use crate::types::slots::Slots;
use bytes::Bytes;
use ferrite_streams::{BlockCache, Stream, TierBytes};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A value in the keyspace.
#[derive(Debug)]
pub enum Value {
    Stream(Box<Stream>),
    String(Bytes),
    Hash(Box<crate::types::hash::Hash>),
    Set(Box<crate::types::set::Set>),
    ZSet(Box<crate::types::zset::ZSet>),
    List(Box<crate::types::list::List>),
}

impl Value {
    /// The name TYPE reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Stream(_) => "stream",
            Value::String(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::List(_) => "list",
        }
    }
}

/// One database: its keys and values in a [`Slots`] table (slots never move
/// while the key exists, so a SCAN cursor, a slot number, returns every
/// key present for the whole scan; each key is stored once), each key's
/// last access, and the keys' expiry times.
#[derive(Debug, Default)]
pub struct Db {
    slots: Slots<Value>,
    /// Last access of each slot's key, in LRU clock seconds ([`lru_clock`]):
    /// OBJECT IDLETIME, DEBUG OBJECT. By slot number (4 bytes a key).
    /// Cells: a read through `get` stamps it.
    atime: Vec<std::cell::Cell<u32>>,
    /// While a command that counts as an access runs: the clock that
    /// `get`/`get_mut` stamp on the keys they find (0: none), so that an
    /// access costs no lookup of its own.
    touching: std::cell::Cell<u32>,
    /// Keys with a time to live (absolute ms); removing a key removes it.
    expires: crate::expire::Expires,
    /// While a command runs with `n` keyspace events on: the keys it added,
    /// announced as `new` before its next event (Redis fires `new` from
    /// `dbAdd`). `None` otherwise.
    pub(crate) new_keys: Option<Vec<Bytes>>,
    /// By slot number: the number of the last checkpoint cut that wrote the
    /// slot's key, or of the cut running when the key was added. A key
    /// present at a cut is due (not written yet) while this differs from
    /// `epoch` (4 bytes a key).
    captured: Vec<u32>,
    /// The running cut's number; between cuts, the last one's.
    epoch: u32,
    /// The checkpoint cut in progress over this database ([`DbCut`]).
    cut: Option<DbCut>,
}

/// A checkpoint cut over one database (docs/storage.md, "The cut"): every
/// key present at the cut is written as it was then, exactly once, either
/// by the cut's walk ([`Db::cut_step`]) or just before the first change to
/// it, whichever comes first.
///
/// Invariant: `left` is the number of due keys (present at the cut, not
/// written yet). A due key is never removed, replaced or changed before it
/// is written: every method that hands out a value mutably, removes a key,
/// replaces a value or changes an expiry writes the key first
/// ([`Db::capture`]); `get` hands out `&Value` only.
#[derive(Debug)]
struct DbCut {
    /// The database's number at the cut (SWAPDB moves the `Db`, and its
    /// keys are still written under the number they had then).
    index: usize,
    /// Slots at the cut: every due key's slot is below it.
    end: usize,
    /// Where the walk goes on.
    cursor: usize,
    left: usize,
    writer: Arc<parking_lot::Mutex<crate::persist::snapshot::CutWriter>>,
}

impl Db {
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    pub fn contains(&self, key: &[u8]) -> bool {
        self.slots.contains(key)
    }
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        let i = self.slots.find(key)?;
        self.stamp(i);
        self.slots.at(i).map(|(_, v)| v)
    }
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Value> {
        let i = self.slots.find(key)?;
        self.stamp(i);
        if self.cut.is_some() {
            self.capture(i);
        }
        self.slots.at_mut(i)
    }

    /// Start a checkpoint cut over this database (a no-op when it is
    /// empty): every key present now is due, written by `writer` under
    /// database number `index`. O(1): no key is visited.
    pub(crate) fn begin_cut(
        &mut self,
        index: usize,
        writer: &Arc<parking_lot::Mutex<crate::persist::snapshot::CutWriter>>,
    ) {
        debug_assert!(self.cut.is_none(), "a cut is already running");
        if self.is_empty() {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Once in 2^32 cuts: no slot may keep a number the next cuts
            // will use.
            self.captured.iter_mut().for_each(|c| *c = 0);
            self.epoch = 1;
        }
        self.cut = Some(DbCut {
            index,
            end: self.slots.capacity(),
            cursor: 0,
            left: self.len(),
            writer: writer.clone(),
        });
    }

    /// Whether a cut over this database is still writing keys.
    pub(crate) fn cutting(&self) -> bool {
        self.cut.is_some()
    }

    /// Write slot `i`'s key for the running cut if it is due (see
    /// [`DbCut`]); the cut ends when its last due key is written.
    fn capture(&mut self, i: usize) {
        let Some(cut) = &mut self.cut else {
            return;
        };
        if i >= cut.end || self.captured.get(i).is_none_or(|&e| e == self.epoch) {
            return;
        }
        let Some((k, v)) = self.slots.at_entry_mut(i) else {
            return;
        };
        self.captured[i] = self.epoch;
        let when = if self.expires.is_empty() {
            0
        } else {
            self.expires.get(k).unwrap_or(0)
        };
        cut.writer.lock().write_key(cut.index, i, k, when, v);
        cut.left -= 1;
        if cut.left == 0 {
            self.cut = None;
        }
    }

    /// The cut's walk: write due keys from where it stopped, at most
    /// `*budget` of them (counted down) and at most 64 slots scanned per
    /// unit of budget. Ends the cut when no key is left.
    pub(crate) fn cut_step(&mut self, budget: &mut usize) {
        let mut scanned = 0usize;
        while *budget > 0 {
            let Some(cut) = &mut self.cut else {
                return;
            };
            if cut.cursor >= cut.end {
                // Every slot scanned with keys still counted due: the
                // invariant broke. The body then holds fewer keys than it
                // says, and the checkpoint's read-back refuses it.
                tracing::error!(
                    "checkpoint cut of db {}: {} keys not found",
                    cut.index,
                    cut.left
                );
                self.cut = None;
                return;
            }
            let i = cut.cursor;
            cut.cursor += 1;
            let due = self.captured.get(i).is_some_and(|&e| e != self.epoch)
                && self.slots.at(i).is_some();
            if due {
                self.capture(i);
                *budget -= 1;
            } else {
                scanned += 1;
                if scanned == 64 {
                    scanned = 0;
                    *budget -= 1;
                }
            }
        }
    }

    /// Write every key still due (before a change to all of them).
    fn capture_all(&mut self) {
        // Without a budget the walk runs to the cut's end.
        let mut all = usize::MAX;
        self.cut_step(&mut all);
    }
    fn stamp(&self, i: usize) {
        let c = self.touching.get();
        if c != 0 {
            if let Some(a) = self.atime.get(i) {
                a.set(c);
            }
        }
    }
    /// From now on (until `touching(0)`), keys found by `get`/`get_mut`
    /// count as accessed at `clock`.
    pub fn touching(&self, clock: u32) {
        self.touching.set(clock);
    }
    /// The value at `key`, `make()` inserted first if there is none: one
    /// lookup when the key exists (XADD to an existing stream).
    pub fn get_or_insert_with(
        &mut self,
        key: &[u8],
        make: impl FnOnce() -> Value,
    ) -> Option<&mut Value> {
        let i = match self.slots.find(key) {
            Some(i) => {
                self.stamp(i);
                if self.cut.is_some() {
                    self.capture(i);
                }
                i
            }
            None => {
                self.insert(Bytes::copy_from_slice(key), make());
                self.slots.find(key)?
            }
        };
        self.slots.at_mut(i)
    }
    /// Insert or replace; returns the previous value.
    pub fn insert(&mut self, key: Bytes, value: Value) -> Option<Value> {
        let now = lru_clock();
        if let Some(i) = self.slots.find(&key) {
            self.atime[i].set(now);
            if self.cut.is_some() {
                self.capture(i);
            }
            return self.slots.insert_slot(key, value).1;
        }
        // IMPORTANT: a key from a command's arguments is a slice of the
        // connection's read buffer; stored as is, it would keep that whole
        // buffer alive. A new key gets its own allocation.
        let key = Bytes::copy_from_slice(&key);
        if let Some(v) = &mut self.new_keys {
            v.push(key.clone());
        }
        let (i, _) = self.slots.insert_slot(key, value);
        if self.atime.len() <= i {
            self.atime.resize(i + 1, std::cell::Cell::new(0));
        }
        self.atime[i].set(now);
        // Not due: a key added during a cut is not in it.
        if self.captured.len() <= i {
            self.captured.resize(i + 1, 0);
        }
        self.captured[i] = self.epoch;
        None
    }
    pub fn remove(&mut self, key: &[u8]) -> Option<Value> {
        if self.cut.is_some() {
            let i = self.slots.find(key)?;
            self.capture(i);
        }
        let (_, v) = self.slots.remove_slot(key)?;
        if !self.expires.is_empty() {
            self.expires.remove(key);
        }
        if self.slots.capacity() == 0 {
            self.atime = Vec::new();
            self.captured = Vec::new();
        }
        Some(v)
    }
    /// Record an access to `key` now (Redis's `lookupKey` updating the
    /// object's LRU field). Whether there is such a key.
    pub fn touch_access(&mut self, key: &[u8], clock: u32) -> bool {
        match self.slots.find(key) {
            Some(i) => {
                self.atime[i].set(clock);
                true
            }
            None => false,
        }
    }
    /// Seconds since `key` was last accessed (OBJECT IDLETIME).
    pub fn idle_secs(&self, key: &[u8]) -> Option<u64> {
        let i = self.slots.find(key)?;
        Some(u64::from(lru_clock().saturating_sub(self.atime[i].get())))
    }
    /// The LRU clock value stored for `key` (DEBUG OBJECT's `lru`).
    pub fn access_clock(&self, key: &[u8]) -> Option<u32> {
        let i = self.slots.find(key)?;
        Some(self.atime[i].get())
    }
    /// When `key` expires (absolute ms), if it exists and has an expiry.
    pub fn expiry(&self, key: &[u8]) -> Option<u64> {
        if self.expires.is_empty() {
            return None;
        }
        self.expires.get(key)
    }
    /// Give an existing key an expiry; false if there is no such key.
    pub fn set_expiry(&mut self, key: &[u8], when: u64) -> bool {
        let Some(i) = self.slots.find(key) else {
            return false;
        };
        if self.cut.is_some() {
            self.capture(i);
        }
        match self.slots.at(i) {
            Some((k, _)) => {
                self.expires.set(k.clone(), when);
                true
            }
            None => false,
        }
    }
    /// Remove `key`'s expiry (PERSIST, SET without KEEPTTL); whether it had one.
    pub fn persist(&mut self, key: &[u8]) -> bool {
        if self.expires.is_empty() {
            return false;
        }
        if self.cut.is_some() {
            if let Some(i) = self.slots.find(key) {
                self.capture(i);
            }
        }
        self.expires.remove(key)
    }
    /// Whether `key` exists but its time has passed (not yet deleted).
    pub fn is_expired(&self, key: &[u8], now_ms: u64) -> bool {
        self.expiry(key)
            .is_some_and(|when| crate::expire::is_expired(when, now_ms))
    }
    /// The keys with an expiry.
    pub fn expires(&self) -> &crate::expire::Expires {
        &self.expires
    }
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.slots.keys()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Bytes, &mut Value)> {
        self.capture_all();
        self.slots.iter_mut()
    }
    /// The value in slot `i` (a cut's slot number), for the server's own
    /// upkeep: not an access (OBJECT IDLETIME does not move).
    fn at_mut_unstamped(&mut self, i: usize) -> Option<&mut Value> {
        self.capture(i);
        self.slots.at_mut(i)
    }
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.capture_all();
        self.slots.iter_mut().map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Value)> {
        self.slots.iter()
    }
    /// Visit up to `count` slots from `cursor`; returns the next cursor (0 = done).
    pub fn scan(&self, cursor: u64, count: usize, f: impl FnMut(&Bytes, &Value)) -> u64 {
        self.slots.scan(cursor, count, f)
    }
    /// A key chosen at random (RANDOMKEY) by `seed`.
    pub fn random_key(&self, seed: u64) -> Option<&Bytes> {
        self.slots.random(seed).map(|(k, _)| k)
    }
    pub fn clear(&mut self) {
        self.capture_all();
        let tracking = self.new_keys.is_some();
        let epoch = self.epoch;
        *self = Db::default();
        self.epoch = epoch;
        if tracking {
            self.new_keys = Some(Vec::new());
        }
    }
}

/// Seconds since the Unix epoch as of the last command (set by
/// [`set_lru_clock`] once per command): keys' access times are stamped
/// with it without reading the system clock per key.
static LRU_CLOCK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The access clock, in seconds (Redis's LRU clock at its default
/// 1-second resolution).
pub fn lru_clock() -> u32 {
    let c = LRU_CLOCK.load(std::sync::atomic::Ordering::Relaxed);
    if c != 0 {
        return c;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    set_lru_clock(now);
    LRU_CLOCK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Advance the access clock to `now_ms` (called per command with its time).
pub fn set_lru_clock(now_ms: u64) {
    let secs = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX).max(1);
    LRU_CLOCK.store(secs, std::sync::atomic::Ordering::Relaxed);
}

/// Something a blocked client is waiting to do once one of its keys changes.
pub trait BlockedCommand: Send {
    /// Try to complete now that `key` in `db` was signalled ready (written,
    /// deleted, type changed, group destroyed...). `Some(reply)` unblocks.
    fn try_serve(&mut self, db: &mut Db, key: &Bytes, now_ms: u64) -> Option<Reply>;
    /// The reply when the timeout expires.
    fn timeout_reply(&self) -> Reply;
    /// The command name for statistics (`xread`, `xreadgroup`).
    fn name(&self) -> &'static str;
    /// After a successful `try_serve`: the effects serving had, for the
    /// commit log (as [`Store::log_effect`] argv lists, in the waiter's db).
    fn take_effects(&mut self) -> Vec<Vec<Bytes>> {
        Vec::new()
    }
    /// After a successful `try_serve`: the keys serving wrote (a blocked
    /// pop's source, BLMOVE's destination), touched and signalled ready as
    /// the command's own writes would be.
    fn take_touched(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// After a successful `try_serve`: the keyspace events serving fired,
    /// `(class, event, key)` in order (a served BLPOP's `lpop`, and `del`
    /// if it emptied the list), as the non-blocking command would fire them.
    fn take_events(&mut self) -> Vec<(u32, &'static str, Bytes)> {
        Vec::new()
    }
}

pub type WaiterId = u64;

/// Follows writes to one key from outside the keyspace: the pipeline engine
/// follows its source streams this way. Unlike a blocked client it stays
/// registered until removed, and it hears of every write to the key,
/// its deletion, and a FLUSHDB/FLUSHALL of its database.
pub trait KeyObserver: Send + Sync {
    /// Called under the store lock right after the command that wrote
    /// `key` in `db`: it must only take note (set a flag, wake a thread),
    /// never run work or take the store lock.
    fn changed(&self, db: usize, key: &[u8]);
}

pub type ObserverId = u64;

/// A registered observer: its database, id and callback.
type Observer = (usize, ObserverId, Arc<dyn KeyObserver>);

struct Waiter {
    client_id: u64,
    db: usize,
    keys: Vec<Bytes>,
    cmd: Box<dyn BlockedCommand>,
    tx: oneshot::Sender<Reply>,
}

/// Per-command counters as INFO commandstats reports them.
#[derive(Debug, Default, Clone)]
pub struct CommandStats {
    pub calls: u64,
    pub usec: u64,
    /// INFO latencystats.
    pub latency: crate::metrics::LatencyHistogram,
    pub rejected_calls: u64,
    pub failed_calls: u64,
}

/// FNV-1a, for maps keyed by command names: the names come from the
/// command table, never from a client, and are a few bytes long, where
/// SipHash's setup (or a BTreeMap's string compares) cost more than the
/// hash. Each command's counters are found through this per call.
#[derive(Default)]
pub struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type NameMap<V> = HashMap<&'static str, V, std::hash::BuildHasherDefault<NameHasher>>;

#[derive(Debug, Default)]
pub struct Stats {
    /// By Redis full name (`xadd`, `config|get`): names live in the static
    /// table. Unordered: INFO sorts them.
    pub commands: NameMap<CommandStats>,
    pub errors: BTreeMap<String, u64>,
    pub total_commands: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub total_error_replies: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Keys deleted because their time to live passed (INFO expired_keys).
    pub expired_keys: u64,
}

impl Stats {
    pub fn count_error(&mut self, reply: &Reply) {
        if let Some(code) = reply.error_code() {
            self.total_error_replies += 1;
            *self
                .errors
                .entry(String::from_utf8_lossy(code).into_owned())
                .or_default() += 1;
        }
    }
}

/// What CLIENT LIST / CLIENT INFO show about a connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub name: Bytes,
    pub db: usize,
    pub created_ms: u64,
    pub last_cmd_ms: u64,
    pub last_cmd: &'static str,
    pub resp: u8,
    pub multi: i64,
    pub blocked: bool,
    pub kill: std::sync::Arc<tokio::sync::Notify>,
    /// Where published messages for this client go (set by the network
    /// layer; `None`: messages to it are counted but dropped).
    pub outbox: Option<Arc<crate::pubsub::Outbox>>,
    /// CLIENT SETINFO LIB-NAME / LIB-VER (empty: not set).
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    /// CLIENT NO-TOUCH ON (the `T` flag).
    pub no_touch: bool,
}

impl ClientInfo {
    /// A freshly connected client: db 0, RESP2, no name, no command yet.
    pub fn new(
        id: u64,
        addr: String,
        laddr: String,
        now_ms: u64,
        kill: std::sync::Arc<tokio::sync::Notify>,
    ) -> ClientInfo {
        ClientInfo {
            id,
            addr,
            laddr,
            name: Bytes::new(),
            db: 0,
            created_ms: now_ms,
            last_cmd_ms: now_ms,
            last_cmd: "NULL",
            resp: 2,
            multi: -1,
            blocked: false,
            kill,
            outbox: None,
            lib_name: Bytes::new(),
            lib_ver: Bytes::new(),
            no_touch: false,
        }
    }
}

pub struct Store {
    pub dbs: Vec<Db>,
    pub stats: Stats,
    pub clients: BTreeMap<u64, ClientInfo>,
    watched: HashMap<(usize, Bytes), Vec<u64>>,
    dirty_clients: HashSet<u64>,
    next_waiter: WaiterId,
    waiters: HashMap<WaiterId, Waiter>,
    blocked_on: HashMap<(usize, Bytes), VecDeque<WaiterId>>,
    ready: Vec<(usize, Bytes)>,
    /// Per key: who follows its writes ([`Store::observe`]), in every db.
    observers: HashMap<Bytes, Vec<Observer>>,
    next_observer: ObserverId,
    pub start_ms: u64,
    /// Writes since start (INFO's rdb_changes_since_last_save).
    pub dirty: u64,
    /// Effects of the command (or EXEC) being run, in order, already
    /// encoded as the commands of a commit-log record (`persist::put_cmd`):
    /// no argv list is built or dropped per write. Taken by whoever
    /// persists them after the command (`persist::commit`), or decoded with
    /// [`Store::take_effects`].
    pub pending_log: Vec<u8>,
    /// How many commands `pending_log` holds.
    pub pending_cmds: usize,
    /// Whether effects are collected at all (off with `appendonly no`, so the
    /// hot path builds no log records nobody will write).
    pub logging: bool,
    /// Reads evicted stream blocks back (set when persistence is on).
    pub block_cache: Option<Arc<BlockCache>>,
    /// Next numeric id for a stream's segment directory (checkpointed).
    pub next_stream_id: u64,
    /// Bytes the last checkpoint snapshot wrote under the lock, and the
    /// blocks it handed out to store: the next one reserves that much at
    /// once instead of growing its buffers.
    pub snapshot_hint: (usize, usize),
    /// The last snapshot's buffers, given back emptied by the checkpoint
    /// thread for the next one to reuse.
    pub snapshot_buffers: Arc<parking_lot::Mutex<crate::persist::snapshot::SnapshotBuffers>>,
    /// The streams (db, slot number) the last snapshot handed blocks out
    /// for: the ones settling visits (not the whole keyspace, per step).
    /// A slot, not the key: no key clone per stream under the snapshot's
    /// lock. A slot whose key was deleted since may hold another value or
    /// none; settling another stream is harmless (it settles only blocks
    /// whose tickets are filled, and one not settling returns at once).
    pub settle_keys: Vec<(usize, usize)>,
    /// `block-cache-size` (kept here so the check after every command takes
    /// no config lock; CONFIG SET updates it).
    pub cache_budget: u64,
    /// Bytes in memory (both tiers) of stored blocks as counted by the
    /// last eviction sweep.
    pub cache_counted: u64,
    /// Of `cache_counted`, the decoded tier.
    pub cache_decoded: u64,
    /// Stored blocks evicted so far (INFO).
    pub cache_evicted_bytes: u64,
    /// True while the commit log is replayed at start-up: nothing expires
    /// then (see `crate::expire`).
    pub loading: bool,
    /// The background expiry cycle runs (DEBUG SET-ACTIVE-EXPIRE).
    pub active_expire: bool,
    /// State of the generator behind sampling (active expiry, RANDOMKEY).
    rng: u64,
    /// SLOWLOG's entries and settings.
    pub slowlog: crate::cmd::generic::SlowLog,
    /// Channel and pattern subscriptions (`crate::pubsub`).
    pub pubsub: crate::pubsub::PubSub,
    /// `notify-keyspace-events` as `crate::pubsub::NOTIFY_*` flags (kept
    /// here so a write checks it without the config lock; CONFIG SET
    /// updates it).
    pub notify_flags: u32,
    /// MONITOR clients and their outboxes.
    pub monitors: Vec<(u64, std::sync::Arc<crate::pubsub::Outbox>)>,
}

/// Decoded stored blocks are kept within `block-cache-size / DECODED_SHARE`
/// (the rest of the budget holds packed ones: a read of a packed block
/// decodes it in memory, at a few GB/s, so only blocks being read need
/// their decoded form). 1/8 of the default 256 MiB holds 16k blocks of 100
/// entries of the benchmark's trades, 1.6M entries.
pub const DECODED_SHARE: u64 = 8;

/// Stored blocks settled per [`Store::evict_step`] (a few hundred
/// microseconds of store lock).
const SETTLE_BATCH: usize = 256;

impl Store {
    pub fn new(databases: usize, now_ms: u64) -> Store {
        Store {
            dbs: (0..databases).map(|_| Db::default()).collect(),
            stats: Stats::default(),
            clients: BTreeMap::new(),
            watched: HashMap::new(),
            dirty_clients: HashSet::new(),
            next_waiter: 1,
            waiters: HashMap::new(),
            blocked_on: HashMap::new(),
            ready: Vec::new(),
            observers: HashMap::new(),
            next_observer: 1,
            start_ms: now_ms,
            dirty: 0,
            pending_log: Vec::new(),
            pending_cmds: 0,
            logging: false,
            block_cache: None,
            next_stream_id: 1,
            snapshot_hint: (0, 0),
            snapshot_buffers: Default::default(),
            settle_keys: Vec::new(),
            cache_budget: 0,
            slowlog: Default::default(),
            monitors: Vec::new(),
            cache_counted: 0,
            cache_decoded: 0,
            cache_evicted_bytes: 0,
            loading: false,
            active_expire: true,
            rng: now_ms | 1,
            pubsub: crate::pubsub::PubSub::default(),
            notify_flags: 0,
        }
    }

    /// Redis's `notifyKeyspaceEvent`: publish `event` on `key` in `db` to
    /// `__keyspace@<db>__:<key>` and `key` to `__keyevent@<db>__:<event>`,
    /// if `notify-keyspace-events` enables `class` (a `NOTIFY_*` flag).
    /// Costs one test when notifications are off.
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8], db: usize) {
        if self.notify_flags & crate::pubsub::NOTIFY_NEW != 0 {
            self.announce_new_keys();
        }
        self.publish_event(class, event, key, db);
    }

    /// Start (`on`) or stop collecting the keys commands add, for `new`
    /// events; stopping announces the ones not announced yet.
    pub(crate) fn track_new_keys(&mut self, on: bool) {
        if on {
            for db in &mut self.dbs {
                db.new_keys = Some(Vec::new());
            }
        } else {
            self.announce_new_keys();
            for db in &mut self.dbs {
                db.new_keys = None;
            }
        }
    }

    /// `new` events for the keys added since the last announcement.
    fn announce_new_keys(&mut self) {
        for db in 0..self.dbs.len() {
            let added = match &mut self.dbs[db].new_keys {
                Some(v) if !v.is_empty() => std::mem::take(v),
                _ => continue,
            };
            for key in added {
                // Added and deleted again by the same command: no event.
                if self.dbs[db].contains(&key) {
                    self.publish_event(crate::pubsub::NOTIFY_NEW, "new", &key, db);
                }
            }
        }
    }

    fn publish_event(&mut self, class: u32, event: &str, key: &[u8], db: usize) {
        use crate::pubsub::{NOTIFY_KEYEVENT, NOTIFY_KEYSPACE};
        let flags = self.notify_flags;
        if flags & class == 0 || self.pubsub.is_empty() {
            return;
        }
        if flags & NOTIFY_KEYSPACE != 0 {
            let mut chan = format!("__keyspace@{db}__:").into_bytes();
            chan.extend_from_slice(key);
            self.pubsub.publish(&chan, event.as_bytes());
        }
        if flags & NOTIFY_KEYEVENT != 0 {
            let chan = format!("__keyevent@{db}__:{event}");
            self.pubsub.publish(chan.as_bytes(), key);
        }
    }

    /// A pseudo-random number (xorshift64*): sampling only, never for
    /// anything a client could exploit or that must replay identically.
    pub fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Keep the bytes of stored stream blocks in memory within
    /// `block-cache-size` (0 = no limit), in two tiers (docs/storage.md
    /// §13.8): decoded blocks within [`DECODED_SHARE`] of it, least
    /// recently used ones demoted to their packed bytes (or dropped, if
    /// they have none) down to 3/4 of that; then decoded and packed bytes
    /// together within the whole of it, least recently used blocks dropped
    /// down to 3/4 of it. Walks every stream, so it runs only after a
    /// checkpoint stored blocks (they are settled first:
    /// `Stream::settle_stored`) or once what was decoded or loaded since
    /// the last sweep may break a limit.
    pub fn maybe_evict(&mut self) {
        let _ = self.evict_step();
    }

    /// [`Store::maybe_evict`], settling at most `SETTLE_BATCH` blocks:
    /// true if settling is not finished (call again, the lock released in
    /// between). Commands go on settling a batch each after it.
    pub fn evict_step(&mut self) -> bool {
        let budget = self.cache_budget;
        let Some(cache) = &self.block_cache else {
            return false;
        };
        let decoded_budget = budget / DECODED_SHARE;
        let mut more = false;
        if cache.take_settle() {
            // Each stream visits only the blocks handed out since it last
            // settled (`Stream::settle_stored`), a batch at a time: 5,000
            // blocks stored by one checkpoint held the lock 5-20 ms when
            // all were settled at once (and a count of every stored block
            // followed). The blocks just stored came into the count
            // through `grown` (their decoded bytes); settling gives them
            // their packed bytes and drops the decoded copy of the unread
            // ones, and the counts move by that.
            // A stream renamed or replaced since its snapshot is not found
            // here: its blocks settle after the next snapshot, or go in an
            // eviction pass.
            let (mut freed, mut packed) = (0u64, 0u64);
            let mut left = SETTLE_BATCH;
            while let Some((db, slot)) = self.settle_keys.pop() {
                let Some(Value::Stream(s)) =
                    self.dbs.get_mut(db).and_then(|d| d.at_mut_unstamped(slot))
                else {
                    continue;
                };
                let moved = s.settle_stored_bytes(&mut left);
                freed += moved.decoded as u64;
                packed += moved.packed as u64;
                if left == 0 {
                    if s.settling() {
                        self.settle_keys.push((db, slot));
                    }
                    more = !self.settle_keys.is_empty();
                    break;
                }
            }
            if more {
                cache.rearm_settle();
            }
            let grown = cache.grown();
            cache.reset_grown();
            self.cache_counted = (self.cache_counted + grown + packed).saturating_sub(freed);
            self.cache_decoded = (self.cache_decoded + grown).saturating_sub(freed);
            note_freed(freed);
        }
        // No eviction pass while a checkpoint cut runs: the pass visits
        // every stream, which would write every key still due at once. It
        // runs at the next command after the cut.
        if self.dbs.iter().any(|d| d.cutting()) {
            return more;
        }
        let grown = cache.grown();
        let over = budget != 0
            && (self.cache_counted.saturating_add(grown) > budget
                || self.cache_decoded.saturating_add(grown) > decoded_budget);
        if !over {
            return more;
        }
        // NOTE: over budget: a full count and an eviction pass over every
        // stored block in memory, under the store lock (proportional to
        // them; it runs once per quarter of the budget grown).
        let mut freed = 0u64;
        cache.reset_grown();
        let mut items: Vec<(u64, TierBytes)> = Vec::new();
        for db in &mut self.dbs {
            for v in db.values_mut() {
                if let Value::Stream(s) = v {
                    s.evictable(|tick, bytes| items.push((tick, bytes)));
                }
            }
        }
        let decoded: u64 = items.iter().map(|i| i.1.decoded as u64).sum();
        let total: u64 = items.iter().map(|i| i.1.total() as u64).sum();
        (self.cache_counted, self.cache_decoded) = (total, decoded);
        if budget != 0 && (total > budget || decoded > decoded_budget) {
            items.sort_unstable_by_key(|i| i.0);
            // Demote (decoded tier) the oldest down to 3/4 of its share...
            let (mut d_left, mut demote) = (decoded, 0);
            let mut left = total;
            for &(tick, b) in &items {
                if d_left <= decoded_budget / 4 * 3 {
                    break;
                }
                d_left = d_left.saturating_sub(b.decoded as u64);
                left = left.saturating_sub(b.decoded as u64);
                demote = tick + 1;
            }
            // ...then drop the oldest whole down to 3/4 of the budget
            // (a block demoted above only has its packed bytes left).
            let mut drop = 0;
            for &(tick, b) in &items {
                if left <= budget / 4 * 3 {
                    break;
                }
                let rest = if tick < demote { 0 } else { b.decoded };
                left = left.saturating_sub((rest + b.packed) as u64);
                drop = tick + 1;
            }
            let mut gone = TierBytes::default();
            for db in &mut self.dbs {
                for v in db.values_mut() {
                    if let Value::Stream(s) = v {
                        let f = s.evict_before(demote, drop);
                        gone.decoded += f.decoded;
                        gone.packed += f.packed;
                    }
                }
            }
            self.cache_counted = total.saturating_sub(gone.total() as u64);
            self.cache_decoded = decoded.saturating_sub(gone.decoded as u64);
            self.cache_evicted_bytes += gone.total() as u64;
            freed += gone.total() as u64;
        }
        note_freed(freed);
        more
    }

    /// Record a deterministic effect of the running command for the commit log.
    pub fn log_effect(&mut self, db: usize, argv: &[Bytes]) {
        self.log_effect_parts(db, &[], argv);
    }

    /// [`Store::log_effect`] of the command `head ++ tail`, without
    /// building it (XADD: its name, key and generated ID, then the fields).
    pub fn log_effect_parts<F: AsRef<[u8]>>(&mut self, db: usize, head: &[&[u8]], tail: &[F]) {
        if self.logging {
            crate::persist::put_cmd_parts(&mut self.pending_log, db, head, tail);
            self.pending_cmds += 1;
        }
    }

    /// Record an effect of a subsystem (the pipeline engine: a cursor's
    /// advance) in the running command's commit-log record, so that it and
    /// the command effects beside it are durable, or lost, together. On
    /// replay it goes back to the subsystem registered under `name`
    /// ([`crate::persist::Subsystem::replay`]), in log order.
    pub fn log_subsystem(&mut self, name: &str, effect: &[u8]) {
        if self.logging {
            crate::persist::put_cmd_parts::<&[u8]>(
                &mut self.pending_log,
                crate::persist::SUBSYSTEM_DB,
                &[name.as_bytes(), effect],
                &[],
            );
            self.pending_cmds += 1;
        }
    }

    /// Forget the effects collected so far (keeping the buffer's capacity).
    pub fn clear_effects(&mut self) {
        self.pending_log.clear();
        self.pending_cmds = 0;
    }

    /// The effects collected so far as `(db, argv)`, removed (for tests
    /// and tools; the server appends the encoded bytes as they are).
    pub fn take_effects(&mut self) -> Vec<(usize, Vec<Bytes>)> {
        let out = crate::persist::decode_cmds(&self.pending_log, self.pending_cmds);
        self.clear_effects();
        out
    }

    // ---- WATCH ----

    pub fn watch(&mut self, client: u64, db: usize, key: Bytes) {
        let list = self.watched.entry((db, key)).or_default();
        if !list.contains(&client) {
            list.push(client);
        }
    }
    /// Forget every WATCH of `client` (after EXEC/DISCARD/UNWATCH/disconnect).
    pub fn unwatch_all(&mut self, client: u64, keys: &[(usize, Bytes)]) {
        for k in keys {
            if let Some(list) = self.watched.get_mut(k) {
                list.retain(|&c| c != client);
                if list.is_empty() {
                    self.watched.remove(k);
                }
            }
        }
        self.dirty_clients.remove(&client);
    }
    pub fn is_dirty(&self, client: u64) -> bool {
        self.dirty_clients.contains(&client)
    }
    /// Mark `client` dirty directly (Redis flags a transaction whose WATCHed key expired or
    /// was touched before EXEC); also used when a watch is set on a changed key.
    pub fn mark_dirty(&mut self, client: u64) {
        self.dirty_clients.insert(client);
    }

    // ---- observers ----

    /// Follow every write to `key` in `db` until [`Store::unobserve`].
    pub fn observe(&mut self, db: usize, key: Bytes, observer: Arc<dyn KeyObserver>) -> ObserverId {
        let id = self.next_observer;
        self.next_observer += 1;
        self.observers
            .entry(key)
            .or_default()
            .push((db, id, observer));
        id
    }

    /// Stop an observer; false if it was not registered.
    pub fn unobserve(&mut self, id: ObserverId) -> bool {
        let mut found = false;
        self.observers.retain(|_, list| {
            list.retain(|(_, i, _)| {
                found |= *i == id;
                *i != id
            });
            !list.is_empty()
        });
        found
    }

    fn notify_observers(&self, db: usize, key: &[u8]) {
        if let Some(list) = self.observers.get(key) {
            for (d, _, o) in list {
                if *d == db {
                    o.changed(db, key);
                }
            }
        }
    }

    /// Every write to a key calls this: it breaks WATCHes on the key and
    /// tells the key's observers.
    pub fn touch(&mut self, db: usize, key: &[u8]) {
        if !self.observers.is_empty() {
            self.notify_observers(db, key);
        }
        if self.watched.is_empty() {
            return;
        }
        if let Some(list) = self.watched.get(&(db, Bytes::copy_from_slice(key))) {
            self.dirty_clients.extend(list.iter().copied());
        }
    }
    /// FLUSHDB/FLUSHALL: touch watched keys that existed in the flushed dbs.
    pub fn touch_all_in(&mut self, db: Option<usize>) {
        for (key, list) in &self.observers {
            for (d, _, o) in list {
                if db.is_none_or(|x| x == *d) {
                    o.changed(*d, key);
                }
            }
        }
        let hit: Vec<u64> = self
            .watched
            .iter()
            .filter(|((d, k), _)| db.is_none_or(|x| x == *d) && self.dbs[*d].contains(k))
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        self.dirty_clients.extend(hit);
    }

    // ---- blocking ----

    /// Register a blocked command; its reply arrives on the returned receiver.
    pub fn block(
        &mut self,
        client_id: u64,
        db: usize,
        keys: Vec<Bytes>,
        cmd: Box<dyn BlockedCommand>,
    ) -> (WaiterId, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        for k in &keys {
            self.blocked_on
                .entry((db, k.clone()))
                .or_default()
                .push_back(id);
        }
        if let Some(c) = self.clients.get_mut(&client_id) {
            c.blocked = true;
        }
        self.waiters.insert(
            id,
            Waiter {
                client_id,
                db,
                keys,
                cmd,
                tx,
            },
        );
        (id, rx)
    }

    /// Remove a waiter (timeout, disconnect). Returns its timeout reply if it
    /// was still waiting, `None` if it had already been served.
    pub fn unblock(&mut self, id: WaiterId) -> Option<Reply> {
        let w = self.waiters.remove(&id)?;
        self.forget_waiter(id, &w);
        Some(w.cmd.timeout_reply())
    }

    fn forget_waiter(&mut self, id: WaiterId, w: &Waiter) {
        for k in &w.keys {
            let key = (w.db, k.clone());
            if let Some(q) = self.blocked_on.get_mut(&key) {
                q.retain(|&x| x != id);
                if q.is_empty() {
                    self.blocked_on.remove(&key);
                }
            }
        }
        if let Some(c) = self.clients.get_mut(&w.client_id) {
            c.blocked = false;
        }
    }

    /// CLIENT UNBLOCK: answer `client_id`'s blocked command now, with its
    /// timeout reply or (`error`) Redis's UNBLOCKED error. False if that
    /// client is not blocked.
    pub fn unblock_client(&mut self, client_id: u64, error: bool) -> bool {
        let Some(id) = self
            .waiters
            .iter()
            .find(|(_, w)| w.client_id == client_id)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let Some(w) = self.waiters.remove(&id) else {
            return false;
        };
        self.forget_waiter(id, &w);
        let reply = if error {
            Reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK")
        } else {
            w.cmd.timeout_reply()
        };
        // The connection may be gone already: then nobody waits for it.
        let _ = w.tx.send(reply);
        true
    }

    pub fn blocked_clients(&self) -> usize {
        self.waiters.len()
    }

    /// A key changed: if anyone is blocked on it, serve them after this command.
    pub fn signal_ready(&mut self, db: usize, key: &[u8]) {
        if self.blocked_on.is_empty() {
            return;
        }
        let k = (db, Bytes::copy_from_slice(key));
        if self.blocked_on.contains_key(&k) && !self.ready.contains(&k) {
            self.ready.push(k);
        }
    }
    /// Signal every key with blocked clients in `db` (or all dbs): FLUSHDB/FLUSHALL.
    pub fn signal_all_blocked(&mut self, db: Option<usize>) {
        let keys: Vec<(usize, Bytes)> = self
            .blocked_on
            .keys()
            .filter(|(d, _)| db.is_none_or(|x| x == *d))
            .cloned()
            .collect();
        for k in keys {
            if !self.ready.contains(&k) {
                self.ready.push(k);
            }
        }
    }

    /// Serve blocked clients whose keys became ready, FIFO per key, until no
    /// key is ready (serving can make more keys ready).
    pub fn serve_ready(&mut self, now_ms: u64) {
        while !self.ready.is_empty() {
            let ready = std::mem::take(&mut self.ready);
            for (db, key) in ready {
                let queue: Vec<WaiterId> = match self.blocked_on.get(&(db, key.clone())) {
                    Some(q) => q.iter().copied().collect(),
                    None => continue,
                };
                for id in queue {
                    let Some(w) = self.waiters.get_mut(&id) else {
                        continue;
                    };
                    let Some(reply) = w.cmd.try_serve(&mut self.dbs[db], &key, now_ms) else {
                        continue;
                    };
                    if let Some(mut w) = self.waiters.remove(&id) {
                        self.forget_waiter(id, &w);
                        for argv in w.cmd.take_effects() {
                            self.log_effect(db, &argv);
                        }
                        for k in w.cmd.take_touched() {
                            self.touch(db, &k);
                            self.dirty += 1;
                            self.signal_ready(db, &k);
                        }
                        for (class, event, k) in w.cmd.take_events() {
                            self.notify(class, event, &k, db);
                        }
                        // An error ends the blocked call as a failed one
                        // (Redis's updateStatsOnUnblock).
                        if reply.is_error() {
                            self.stats.count_error(&reply);
                            self.stats
                                .commands
                                .entry(w.cmd.name())
                                .or_default()
                                .failed_calls += 1;
                        }
                        // The receiver may be gone (client vanished): nothing to do then.
                        let _ = w.tx.send(reply);
                    }
                }
            }
        }
    }
}

/// Bytes freed by settling and eviction since memory was last given back
/// to the system.
static TRIM_DUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// When memory was last given back (ms, `shared::now_ms`).
static TRIM_LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How often and how long memory was given back (INFO memory).
static TRIM_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TRIM_USEC_LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TRIM_USEC_MAX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// (times memory was given back, µs the last took, µs the longest took).
pub fn trim_stats() -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (
        TRIM_COUNT.load(Relaxed),
        TRIM_USEC_LAST.load(Relaxed),
        TRIM_USEC_MAX.load(Relaxed),
    )
}

/// The allocator a binary declared ([`allocator_returns_memory`]): its
/// name for INFO's `mem_allocator`. Unset: glibc's, trimmed by
/// [`trim_if_due`].
static SELF_RELEASING_ALLOCATOR: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Declare that the process's global allocator (named `name`, e.g.
/// `jemalloc-5.3.0`) gives freed memory back to the system on its own, as
/// the `ferrite` binary's jemalloc does by decay on its background
/// threads: then [`trim_if_due`] does nothing, and no thread ever stops
/// in `malloc_trim`. Called once, before the server starts.
pub fn allocator_returns_memory(name: &'static str) {
    let _ = SELF_RELEASING_ALLOCATOR.set(name);
}

/// The allocator's name for INFO (`mem_allocator`).
pub fn allocator_name() -> &'static str {
    SELF_RELEASING_ALLOCATOR.get().copied().unwrap_or("libc")
}

fn note_freed(bytes: u64) {
    if bytes > 0 {
        TRIM_DUE.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Give freed memory back to the system (`malloc_trim`) once 4 MiB were
/// freed, at most once a second. Called by the checkpoint thread after its
/// eviction steps (what a checkpoint frees, most of it) and by an async
/// worker about to park (nothing ready to run, no lock held), for the
/// rest: `malloc_trim` walks the heap with the allocator's locks held for
/// milliseconds, which under the store lock after every checkpoint was a
/// stall for every client, and on a worker one for that worker's clients
/// (docs/storage.md §13.8).
pub fn trim_if_due() {
    use std::sync::atomic::Ordering::Relaxed;
    if SELF_RELEASING_ALLOCATOR.get().is_some() || TRIM_DUE.load(Relaxed) < 4 << 20 {
        return;
    }
    let now = crate::shared::now_ms();
    let last = TRIM_LAST_MS.load(Relaxed);
    if now.saturating_sub(last) < 1000
        || TRIM_LAST_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
    {
        return;
    }
    TRIM_DUE.store(0, Relaxed);
    let t = std::time::Instant::now();
    release_free_memory();
    let us = t.elapsed().as_micros() as u64;
    TRIM_COUNT.fetch_add(1, Relaxed);
    TRIM_USEC_LAST.store(us, Relaxed);
    TRIM_USEC_MAX.fetch_max(us, Relaxed);
}

/// Hand freed heap pages back to the OS. Evicted blocks are a few KiB each,
/// freed all over the heap: glibc keeps such holes (only the top of the heap
/// is trimmed on its own), so without this the process's RSS would not
/// shrink after an eviction sweep.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one FFI call, SAFETY below
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointers and may be called at
    // any time from any thread; it only madvises free pages away.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Value {
        Value::Stream(Box::new(Stream::new()))
    }

    #[test]
    fn scan_sees_stable_keys_despite_churn() {
        let mut db = Db::default();
        for i in 0..100 {
            db.insert(Bytes::from(format!("k{i}")), stream());
        }
        let mut seen = HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            cursor = db.scan(cursor, 10, |k, _| {
                seen.insert(k.clone());
            });
            // Churn: delete and add other keys between calls.
            db.remove(format!("k{}", 90 + round).as_bytes());
            db.insert(Bytes::from(format!("new{round}")), stream());
            round += 1;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..90 {
            assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
        }
    }

    #[test]
    fn removing_everything_resets_slots() {
        let mut db = Db::default();
        db.insert(Bytes::from_static(b"a"), stream());
        assert!(db.remove(b"a").is_some());
        assert_eq!(db.scan(0, 10, |_, _| {}), 0);
        assert!(db.random_key(7).is_none());
    }
}
