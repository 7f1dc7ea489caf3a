//! Pub/sub state: who is subscribed to which channels and patterns, and the
//! per-client outboxes that messages are delivered into.
//!
//! Invariants:
//! - [`PubSub`] lives in the [`crate::store::Store`], so (un)subscribing and
//!   publishing run under the store lock, in command order, as in Redis.
//! - Publishing never waits for a subscriber: a message is appended to the
//!   receiver's [`Outbox`] (a short lock of its own, taken after the store
//!   lock, never the other way round) and the connection is woken. The
//!   network layer writes the outbox to the socket on its own time.
//! - An outbox is bounded in bytes by `client-output-buffer-limit pubsub`
//!   (hard limit, and soft limit held for some seconds): past it the client
//!   is closed (its `kill` notify fires) and its queue is dropped, exactly
//!   as Redis frees a client "for overcoming of output buffer limits".
//!   Bytes count from the moment they are queued until the connection
//!   reports them written ([`Outbox::written`]).
//!
//! Keyspace notifications ([`crate::store::Store::notify`]) publish through
//! the same path.

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

// Redis's keyspace notification classes (server.h NOTIFY_*).
pub const NOTIFY_KEYSPACE: u32 = 1 << 0;
pub const NOTIFY_KEYEVENT: u32 = 1 << 1;
pub const NOTIFY_GENERIC: u32 = 1 << 2;
pub const NOTIFY_STRING: u32 = 1 << 3;
pub const NOTIFY_LIST: u32 = 1 << 4;
pub const NOTIFY_SET: u32 = 1 << 5;
pub const NOTIFY_HASH: u32 = 1 << 6;
pub const NOTIFY_ZSET: u32 = 1 << 7;
pub const NOTIFY_EXPIRED: u32 = 1 << 8;
pub const NOTIFY_EVICTED: u32 = 1 << 9;
pub const NOTIFY_STREAM: u32 = 1 << 10;
/// Not part of `A`, on purpose (as in Redis).
pub const NOTIFY_KEY_MISS: u32 = 1 << 11;
pub const NOTIFY_MODULE: u32 = 1 << 13;
pub const NOTIFY_NEW: u32 = 1 << 14;
pub const NOTIFY_ALL: u32 = NOTIFY_GENERIC
    | NOTIFY_STRING
    | NOTIFY_LIST
    | NOTIFY_SET
    | NOTIFY_HASH
    | NOTIFY_ZSET
    | NOTIFY_EXPIRED
    | NOTIFY_EVICTED
    | NOTIFY_STREAM
    | NOTIFY_MODULE;

/// `notify-keyspace-events` letters to flags (Redis's
/// `keyspaceEventsStringToFlags`); `None` for an unknown letter.
pub fn events_from_str(s: &str) -> Option<u32> {
    let mut flags = 0;
    for c in s.chars() {
        flags |= match c {
            'A' => NOTIFY_ALL,
            'g' => NOTIFY_GENERIC,
            '$' => NOTIFY_STRING,
            'l' => NOTIFY_LIST,
            's' => NOTIFY_SET,
            'h' => NOTIFY_HASH,
            'z' => NOTIFY_ZSET,
            'x' => NOTIFY_EXPIRED,
            'e' => NOTIFY_EVICTED,
            'K' => NOTIFY_KEYSPACE,
            'E' => NOTIFY_KEYEVENT,
            't' => NOTIFY_STREAM,
            'm' => NOTIFY_KEY_MISS,
            'd' => NOTIFY_MODULE,
            'n' => NOTIFY_NEW,
            _ => return None,
        };
    }
    Some(flags)
}

/// Flags back to letters, as CONFIG GET prints them (Redis's
/// `keyspaceEventsFlagsToString`).
pub fn events_to_string(flags: u32) -> String {
    let mut s = String::new();
    if flags & NOTIFY_ALL == NOTIFY_ALL {
        s.push('A');
    } else {
        for (f, c) in [
            (NOTIFY_GENERIC, 'g'),
            (NOTIFY_STRING, '$'),
            (NOTIFY_LIST, 'l'),
            (NOTIFY_SET, 's'),
            (NOTIFY_HASH, 'h'),
            (NOTIFY_ZSET, 'z'),
            (NOTIFY_EXPIRED, 'x'),
            (NOTIFY_EVICTED, 'e'),
            (NOTIFY_STREAM, 't'),
            (NOTIFY_MODULE, 'd'),
            (NOTIFY_NEW, 'n'),
        ] {
            if flags & f != 0 {
                s.push(c);
            }
        }
    }
    for (f, c) in [
        (NOTIFY_KEYSPACE, 'K'),
        (NOTIFY_KEYEVENT, 'E'),
        (NOTIFY_KEY_MISS, 'm'),
    ] {
        if flags & f != 0 {
            s.push(c);
        }
    }
    s
}

/// One class of `client-output-buffer-limit` (bytes; 0 = no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_seconds: u64,
}

impl OutputLimit {
    /// Redis's default for pub/sub clients: `pubsub 32mb 8mb 60`.
    pub const PUBSUB_DEFAULT: OutputLimit = OutputLimit {
        hard: 32 << 20,
        soft: 8 << 20,
        soft_seconds: 60,
    };
}

/// Messages waiting to be written to one client, bounded in bytes.
pub struct Outbox {
    state: Mutex<OutState>,
    /// Woken when a message is queued.
    pub wake: tokio::sync::Notify,
    /// The connection's kill signal: fired when the client passes its limit.
    kill: Arc<tokio::sync::Notify>,
    /// The protocol messages are encoded for (HELLO may change it).
    resp: AtomicU8,
    /// Whether `state.queue` may hold messages: checked before taking the
    /// lock, which the connection would otherwise take after every command.
    queued: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("used", &self.used())
            .field("resp", &self.resp())
            .finish()
    }
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<Bytes>,
    /// Queued bytes plus bytes taken but not yet written.
    used: u64,
    /// Since when `used` has been at or over the soft limit.
    soft_since: Option<Instant>,
    /// Passed a limit: the client is being closed; nothing more is queued.
    closed: bool,
}

impl Outbox {
    pub fn new(kill: Arc<tokio::sync::Notify>) -> Outbox {
        Outbox {
            state: Mutex::new(OutState::default()),
            wake: tokio::sync::Notify::new(),
            kill,
            resp: AtomicU8::new(2),
            queued: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn set_resp(&self, resp: u8) {
        self.resp.store(resp, Ordering::Relaxed);
    }

    pub fn resp(&self) -> u8 {
        self.resp.load(Ordering::Relaxed)
    }

    /// Queue `msg`, unless that takes the client past `limit` (Redis's
    /// `checkClientOutputBufferLimits`): then the client is closed and its
    /// queue freed. Returns false if the client is (now) closed.
    pub fn push(&self, msg: Bytes, limit: &OutputLimit) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        st.used += msg.len() as u64;
        st.queue.push_back(msg);
        self.queued.store(true, Ordering::Release);
        let hard = limit.hard > 0 && st.used >= limit.hard;
        let mut soft = limit.soft > 0 && st.used >= limit.soft;
        if soft {
            let since = *st.soft_since.get_or_insert_with(Instant::now);
            soft = since.elapsed().as_secs() > limit.soft_seconds;
        } else {
            st.soft_since = None;
        }
        if hard || soft {
            st.closed = true;
            st.queue = VecDeque::new();
            st.used = 0;
            drop(st);
            tracing::warn!(
                "Client scheduled to be closed ASAP for overcoming of output buffer limits."
            );
            self.kill.notify_one();
            return false;
        }
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Move every queued message to `out`; returns how many bytes (still
    /// counted until [`Outbox::written`]).
    pub fn drain_into(&self, out: &mut BytesMut) -> u64 {
        if !self.queued.load(Ordering::Acquire) {
            return 0;
        }
        let mut st = self.state.lock();
        self.queued.store(false, Ordering::Release);
        let mut n = 0u64;
        while let Some(m) = st.queue.pop_front() {
            n += m.len() as u64;
            out.put_slice(&m);
        }
        n
    }

    /// `n` drained bytes reached the socket.
    pub fn written(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut st = self.state.lock();
        st.used = st.used.saturating_sub(n);
    }

    /// Bytes counted against the limit (queued or not yet written).
    pub fn used(&self) -> u64 {
        self.state.lock().used
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

/// One client's subscriptions.
struct Client {
    /// In subscription order (UNSUBSCRIBE without arguments replies in it).
    channels: Vec<Bytes>,
    channel_set: HashSet<Bytes>,
    /// In subscription order, as Redis 7.0's per-client pattern list.
    patterns: Vec<Bytes>,
    outbox: Option<Arc<Outbox>>,
}

impl Client {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// Every subscription on the server.
#[derive(Default)]
pub struct PubSub {
    channels: HashMap<Bytes, Vec<u64>>,
    patterns: HashMap<Bytes, Vec<u64>>,
    clients: HashMap<u64, Client>,
    /// `client-output-buffer-limit pubsub`.
    pub limit: Option<OutputLimit>,
}

/// A message encoded once per protocol, on first need.
struct Encoded<'a> {
    kind: &'static [u8],
    pattern: Option<&'a [u8]>,
    channel: &'a [u8],
    msg: &'a [u8],
    cached: [Option<Bytes>; 2],
}

impl Encoded<'_> {
    fn get(&mut self, resp: u8) -> Bytes {
        let i = usize::from(resp >= 3);
        if let Some(b) = &self.cached[i] {
            return b.clone();
        }
        let mut out = BytesMut::with_capacity(
            48 + self.channel.len() + self.msg.len() + self.pattern.map_or(0, |p| p.len()),
        );
        let n = 3 + usize::from(self.pattern.is_some());
        out.put_slice(if i == 1 { b">" } else { b"*" });
        out.put_slice(n.to_string().as_bytes());
        out.put_slice(b"\r\n");
        bulk(&mut out, self.kind);
        if let Some(p) = self.pattern {
            bulk(&mut out, p);
        }
        bulk(&mut out, self.channel);
        bulk(&mut out, self.msg);
        let b = out.freeze();
        self.cached[i] = Some(b.clone());
        b
    }
}

fn bulk(out: &mut BytesMut, b: &[u8]) {
    out.put_u8(b'$');
    out.put_slice(b.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

impl PubSub {
    /// No subscription at all: publishing reaches nobody.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }

    /// Channels + patterns `client` is subscribed to (Redis's
    /// `clientSubscriptionsCount`).
    pub fn count(&self, client: u64) -> usize {
        self.clients.get(&client).map_or(0, Client::count)
    }

    /// `(channels, patterns)` of `client` (CLIENT LIST sub=/psub=).
    pub fn counts(&self, client: u64) -> (usize, usize) {
        self.clients
            .get(&client)
            .map_or((0, 0), |c| (c.channels.len(), c.patterns.len()))
    }

    fn client(&mut self, id: u64, outbox: Option<Arc<Outbox>>) -> &mut Client {
        self.clients.entry(id).or_insert_with(|| Client {
            channels: Vec::new(),
            channel_set: HashSet::new(),
            patterns: Vec::new(),
            outbox,
        })
    }

    fn drop_if_idle(&mut self, id: u64) {
        if self.clients.get(&id).is_some_and(|c| c.count() == 0) {
            self.clients.remove(&id);
        }
    }

    /// Subscribe `id` to `channel`; returns its subscription count.
    pub fn subscribe(&mut self, id: u64, outbox: Option<Arc<Outbox>>, channel: Bytes) -> usize {
        let c = self.client(id, outbox);
        if c.channel_set.insert(channel.clone()) {
            c.channels.push(channel.clone());
            self.channels.entry(channel).or_default().push(id);
        }
        self.count(id)
    }

    pub fn psubscribe(&mut self, id: u64, outbox: Option<Arc<Outbox>>, pattern: Bytes) -> usize {
        let c = self.client(id, outbox);
        if !c.patterns.contains(&pattern) {
            c.patterns.push(pattern.clone());
            self.patterns.entry(pattern).or_default().push(id);
        }
        self.count(id)
    }

    /// Unsubscribe `id` from `channel` (subscribed or not); returns its
    /// subscription count.
    pub fn unsubscribe(&mut self, id: u64, channel: &[u8]) -> usize {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.channel_set.remove(channel) {
                c.channels.retain(|x| &x[..] != channel);
                remove_from(&mut self.channels, channel, id);
            }
        }
        let n = self.count(id);
        self.drop_if_idle(id);
        n
    }

    pub fn punsubscribe(&mut self, id: u64, pattern: &[u8]) -> usize {
        if let Some(c) = self.clients.get_mut(&id) {
            if let Some(i) = c.patterns.iter().position(|p| &p[..] == pattern) {
                c.patterns.remove(i);
                remove_from(&mut self.patterns, pattern, id);
            }
        }
        let n = self.count(id);
        self.drop_if_idle(id);
        n
    }

    /// `id`'s channels, in subscription order.
    pub fn channels_of(&self, id: u64) -> Vec<Bytes> {
        self.clients
            .get(&id)
            .map(|c| c.channels.clone())
            .unwrap_or_default()
    }

    pub fn patterns_of(&self, id: u64) -> Vec<Bytes> {
        self.clients
            .get(&id)
            .map(|c| c.patterns.clone())
            .unwrap_or_default()
    }

    /// Forget every subscription of `id` (RESET, disconnect).
    pub fn remove_client(&mut self, id: u64) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        for ch in &c.channels {
            remove_from(&mut self.channels, ch, id);
        }
        for p in &c.patterns {
            remove_from(&mut self.patterns, p, id);
        }
    }

    /// Active channels matching `pattern` (PUBSUB CHANNELS).
    pub fn active_channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::glob::glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, Vec::len)
    }

    /// Channels with at least one subscriber (INFO `pubsub_channels`).
    pub fn numchannels(&self) -> usize {
        self.channels.len()
    }

    /// Distinct patterns subscribed to (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        self.patterns.len()
    }

    /// Deliver `msg` on `channel`; returns the number of receivers (a client
    /// counts once per matching subscription, as in Redis).
    pub fn publish(&self, channel: &[u8], msg: &[u8]) -> usize {
        let limit = self.limit.unwrap_or(OutputLimit::PUBSUB_DEFAULT);
        let mut receivers = 0;
        let deliver = |id: &u64, enc: &mut Encoded| {
            if let Some(ob) = self.clients.get(id).and_then(|c| c.outbox.as_ref()) {
                let bytes = enc.get(ob.resp());
                ob.push(bytes, &limit);
            }
        };
        if let Some(ids) = self.channels.get(channel) {
            let mut enc = Encoded {
                kind: b"message",
                pattern: None,
                channel,
                msg,
                cached: [None, None],
            };
            for id in ids {
                deliver(id, &mut enc);
                receivers += 1;
            }
        }
        for (pat, ids) in &self.patterns {
            if !crate::glob::glob_match(pat, channel, false) {
                continue;
            }
            let mut enc = Encoded {
                kind: b"pmessage",
                pattern: Some(pat),
                channel,
                msg,
                cached: [None, None],
            };
            for id in ids {
                deliver(id, &mut enc);
                receivers += 1;
            }
        }
        receivers
    }
}

fn remove_from(map: &mut HashMap<Bytes, Vec<u64>>, key: &[u8], id: u64) {
    if let Some(list) = map.get_mut(key) {
        list.retain(|&x| x != id);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_like_redis() {
        let f = |s: &str| events_to_string(events_from_str(s).unwrap_or(0));
        assert_eq!(f("KEA"), "AKE");
        assert_eq!(f("Ex"), "xE");
        assert_eq!(f("g$lshzxetd"), "A");
        assert_eq!(f("Km"), "Km");
        assert_eq!(f("nK"), "nK");
        assert_eq!(f(""), "");
        assert_eq!(events_from_str("Kq"), None);
    }

    #[test]
    fn a_full_outbox_closes_the_client_and_frees_its_queue() {
        let kill = Arc::new(tokio::sync::Notify::new());
        let ob = Outbox::new(kill);
        let limit = OutputLimit {
            hard: 100,
            soft: 0,
            soft_seconds: 0,
        };
        assert!(ob.push(Bytes::from(vec![0u8; 60]), &limit));
        assert_eq!(ob.used(), 60);
        assert!(!ob.push(Bytes::from(vec![0u8; 60]), &limit));
        assert!(ob.is_closed());
        assert_eq!(ob.used(), 0);
        assert!(!ob.push(Bytes::from_static(b"x"), &limit));
    }

    #[test]
    fn written_bytes_stop_counting() {
        let ob = Outbox::new(Arc::new(tokio::sync::Notify::new()));
        let limit = OutputLimit::PUBSUB_DEFAULT;
        ob.push(Bytes::from_static(b"abc"), &limit);
        let mut out = BytesMut::new();
        assert_eq!(ob.drain_into(&mut out), 3);
        assert_eq!(ob.used(), 3);
        ob.written(3);
        assert_eq!(ob.used(), 0);
    }
}
