//! One client connection: read, parse, dispatch, reply, and blocking waits.
//!
//! Replies to pipelined commands are gathered and written together; while a
//! client is blocked its further input stays buffered, unprocessed, as in
//! Redis, but a disconnect is noticed at once and unregisters the waiter.
//!
//! Durability: a reply whose command was logged is held until its commit-log
//! record is written (`appendfsync everysec|no`: it survives a kill -9) or
//! fsynced (`always`); replies after it wait behind it. The wait happens
//! when the replies are flushed, so a whole pipeline (and every connection
//! writing at the same time) shares one write and one fsync: records are
//! appended without waking the log writer, and a connection that has to
//! wait yields once (so the other connections ready on this worker run
//! their commands and append too), then wakes the writer for all of them
//! and waits once, for its last record: much as Redis writes its AOF buffer
//! once per event-loop turn and then sends the replies.
//!
//! Pub/sub: messages for this client wait in its `Outbox` (filled by other
//! clients' commands, bounded by `client-output-buffer-limit pubsub`); they
//! are taken when the outbox wakes an idle connection and after each of its
//! own commands, under the store lock, so they precede that command's reply.

use crate::protocol::{Limits, RequestParser};
use bytes::BytesMut;
use ferrite_db::args::Argv;
use ferrite_db::cmd::{self, ClientState, Executed};
use ferrite_db::persist;
use ferrite_db::pubsub::Outbox;
use ferrite_db::reply::Reply;
use ferrite_db::shared::{now_ms, Shared};
use ferrite_db::store::ClientInfo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flush replies once this much is pending, so a huge pipeline cannot grow
/// the output buffer without bound.
const FLUSH_AT: usize = 64 * 1024;

/// Flush (and so wait for the commit log) once this many replies are held.
const HELD_MAX: usize = 1024;

/// A reply that may not leave before its commit-log record is written
/// (`appendfsync everysec|no`) or fsynced (`always`), or that comes after
/// such a reply in the same connection. It is encoded at once, into
/// `Conn::output` from `start` (to the next one's start, or the end): only
/// if its record fails is it replaced, by the MISCONF error.
struct Held {
    /// The commit-log record (sequence number) the reply waits for.
    commit: Option<u64>,
    /// `commit` is another command's record (a read's barrier): if it
    /// fails, this reply stands (reads keep working after a log failure).
    others: bool,
    /// Where its encoding starts in `Conn::output`.
    start: usize,
    /// The protocol in force when the reply was made (HELLO may change it).
    resp: u8,
}

/// `Signals::fired` bits: CLIENT KILL (or the pub/sub output limit).
const KILL: u8 = 1;
/// The server is shutting down.
const SHUTDOWN: u8 = 2;
/// The outbox was woken: messages may be queued.
const MESSAGES: u8 = 4;

/// The connection's outside wake-ups (kill, shutdown, queued messages) as
/// one word. Each source's waiter is registered once, with a waker that
/// sets its bit here and wakes the connection's task, and is re-armed only
/// after it fired: a read then checks this word and keeps the task's waker,
/// instead of registering and unregistering three `Notify` waiters (with
/// `try_write` for replies: 1,900 fewer instructions per XADD at pipeline
/// 1, docs/benchmarks.md).
#[derive(Default)]
struct Signals {
    fired: AtomicU8,
    /// The connection task's waker, from its last wait on these signals.
    task: Mutex<Option<Waker>>,
}

impl Signals {
    /// Ready with the fired bits among `mask`; otherwise the task is woken
    /// when one fires.
    fn poll(&self, cx: &mut Context<'_>, mask: u8) -> Poll<u8> {
        let fired = self.fired.load(Ordering::Acquire) & mask;
        if fired != 0 {
            return Poll::Ready(fired);
        }
        {
            let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Checked again after registering: a bit set before the waker was
        // stored is seen here, one set after finds the waker.
        let fired = self.fired.load(Ordering::Acquire) & mask;
        if fired != 0 {
            Poll::Ready(fired)
        } else {
            Poll::Pending
        }
    }

    /// Ready if one of the bits in `mask` is set; registers nothing (for
    /// use after `poll` in the same task poll).
    fn fired_now(&self, mask: u8) -> Poll<()> {
        if self.fired.load(Ordering::Acquire) & mask != 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wait until one of the bits in `mask` is set; returns those set.
    async fn wait(&self, mask: u8) -> u8 {
        std::future::poll_fn(|cx| self.poll(cx, mask)).await
    }

    fn set(&self, bit: u8) {
        self.fired.fetch_or(bit, Ordering::AcqRel);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// The waker a source's waiter is polled with: sets its bit.
struct SignalWaker {
    signals: Arc<Signals>,
    bit: u8,
}

impl Wake for SignalWaker {
    fn wake(self: Arc<Self>) {
        self.signals.set(self.bit);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.signals.set(self.bit);
    }
}

/// One source's waiter, kept registered across reads.
struct Watch {
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    waker: Waker,
    done: bool,
}

impl Watch {
    fn new(
        signals: &Arc<Signals>,
        bit: u8,
        wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Watch {
        let mut w = Watch {
            wait,
            waker: Waker::from(Arc::new(SignalWaker {
                signals: signals.clone(),
                bit,
            })),
            done: false,
        };
        w.arm(signals, bit);
        w
    }

    /// Poll the waiter with its own waker, registering it (or, if it is
    /// ready already, setting its bit: its waker is not called then).
    fn arm(&mut self, signals: &Signals, bit: u8) {
        if self.done {
            return;
        }
        let mut cx = Context::from_waker(&self.waker);
        if self.wait.as_mut().poll(&mut cx).is_ready() {
            self.done = true;
            signals.fired.fetch_or(bit, Ordering::AcqRel);
        }
    }
}

/// The three sources' waiters: each fires once (kill, shutdown) or, for
/// messages, is re-armed by the loop after it took the messages.
struct Watches {
    signals: Arc<Signals>,
    /// Kept only to stay registered: they fire once, then the connection closes.
    _kill: Watch,
    _shutdown: Watch,
    messages: Watch,
}

impl Watches {
    fn new(kill: &Arc<tokio::sync::Notify>, outbox: &Arc<Outbox>, shared: &Shared) -> Watches {
        let signals = Arc::new(Signals::default());
        let mut shutdown = shared.shutdown_tx.subscribe();
        let outbox = outbox.clone();
        Watches {
            _kill: Watch::new(&signals, KILL, Box::pin(kill.clone().notified_owned())),
            _shutdown: Watch::new(
                &signals,
                SHUTDOWN,
                Box::pin(async move {
                    // Closed or changed: either way the connection stops.
                    let _ = shutdown.changed().await;
                }),
            ),
            // Never completes: each poll after a wake-up takes the
            // notification and waits for the next.
            messages: Watch::new(
                &signals,
                MESSAGES,
                Box::pin(async move {
                    loop {
                        outbox.wake.notified().await;
                    }
                }),
            ),
            signals,
        }
    }

    /// After `MESSAGES` fired: clear it and wait for the next wake-up.
    /// Messages queued from here on wake the connection again, so the
    /// caller takes them after this.
    fn rearm_messages(&mut self) {
        self.signals.fired.fetch_and(!MESSAGES, Ordering::AcqRel);
        self.messages.arm(&self.signals, MESSAGES);
    }
}

pub async fn reject_max_clients(mut sock: TcpStream) {
    let _ = sock
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

struct Conn {
    sock: TcpStream,
    shared: Arc<Shared>,
    client: ClientState,
    input: BytesMut,
    output: BytesMut,
    /// Replies waiting for the commit log, in order: the end of `output`
    /// from the first one's `start` on.
    held: Vec<Held>,
    parser: RequestParser,
    /// Kill, shutdown and message wake-ups.
    watches: Watches,
    /// Messages published to this client (pub/sub, keyspace events),
    /// queued by other clients' commands without waiting for this socket.
    outbox: Arc<Outbox>,
    /// Bytes of drained messages in `output`, released from the outbox's
    /// count once written.
    msg_bytes: u64,
}

pub async fn handle(sock: TcpStream, addr: SocketAddr, shared: Arc<Shared>) {
    let _ = sock.set_nodelay(true);
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(tokio::sync::Notify::new());
    let laddr = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let authenticated = shared.config.read().requirepass.is_empty();
    let outbox = Arc::new(Outbox::new(kill.clone()));
    {
        let mut store = shared.store.lock();
        store.stats.total_connections += 1;
        let now = now_ms();
        let mut info = ClientInfo::new(id, addr.to_string(), laddr, now, kill.clone());
        info.outbox = Some(outbox.clone());
        store.clients.insert(id, info);
    }
    let watches = Watches::new(&kill, &outbox, &shared);
    let mut conn = Conn {
        sock,
        shared: shared.clone(),
        client: ClientState::new(id, authenticated),
        input: BytesMut::with_capacity(16 * 1024),
        output: BytesMut::with_capacity(16 * 1024),
        held: Vec::new(),
        parser: RequestParser::new(),
        watches,
        outbox,
        msg_bytes: 0,
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(client = id, "connection closed: {e}");
    }
    let mut store = shared.store.lock();
    let watched = std::mem::take(&mut conn.client.watched);
    store.unwatch_all(id, &watched);
    store.pubsub.remove_client(id);
    store.monitors.retain(|(c, _)| *c != id);
    store.clients.remove(&id);
    drop(store);
    shared.connected.fetch_sub(1, Ordering::Relaxed);
}

enum Step {
    Continue,
    Close,
}

impl Conn {
    async fn run(&mut self) -> std::io::Result<()> {
        loop {
            if let Step::Close = self.process_input().await? {
                self.flush().await?;
                return Ok(());
            }
            self.flush().await?;
            // Unparsed input and the arguments already parsed from it both
            // count (Redis: query buffer + argv_len_sum): a `*2000000000`
            // followed by small bulks must not pile up arguments forever.
            let limit = self.shared.config.read().client_query_buffer_limit as usize;
            if self.input.len() + self.parser.parsed_bytes() >= limit {
                tracing::warn!(
                    client = self.client.id,
                    "closing client that reached max query buffer length"
                );
                return Ok(());
            }
            self.input
                .reserve(self.parser.read_hint(&self.input, 16 * 1024));
            // Kill and shutdown first (a killed client that keeps sending
            // is closed), then input, then messages (a flood of messages
            // does not starve the client's own commands). The first branch
            // registers the task for every bit: the last only looks.
            let signals = &self.watches.signals;
            tokio::select! {
                biased;
                _ = signals.wait(KILL | SHUTDOWN) => return Ok(()),
                n = self.sock.read_buf(&mut self.input) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.shared.metrics.count_input(n);
                }
                _ = std::future::poll_fn(|_| signals.fired_now(MESSAGES)) => {
                    self.watches.rearm_messages();
                    self.take_messages();
                }
            }
        }
    }

    /// Queue the published messages waiting for this client behind the
    /// replies already pending.
    fn take_messages(&mut self) {
        let start = self.output.len();
        let n = self.outbox.drain_into(&mut self.output);
        if n > 0 && !self.held.is_empty() {
            // Behind held replies: they leave together, in order.
            self.held.push(Held {
                commit: None,
                others: false,
                start,
                resp: self.client.resp,
            });
        }
        self.msg_bytes += n;
    }

    /// Write every pending reply. Held replies first wait for their
    /// commit-log records: completions fire in sequence order, so this is
    /// one wait (for the last record held) for a whole pipeline, and one
    /// group commit.
    async fn flush(&mut self) -> std::io::Result<()> {
        let last = self.held.iter().filter_map(|h| h.commit).max();
        if last.is_some() || !self.output.is_empty() {
            // Let the connections that are ready on this worker run first
            // (a yielded task runs again once the worker has nothing else
            // to run): their records share one log write or fsync (one
            // kick for all), and the replies go out together after the
            // round, as Redis sends its replies in `beforeSleep` after
            // reading from every ready client. Even without a record to
            // wait for (acknowledged already, or no persistence), replying
            // after the round wakes the clients less often: +25% XADD with
            // pipelines of 16 on two cores (docs/storage.md §15.4).
            tokio::task::yield_now().await;
        }
        if let Some(last) = last {
            if persist::outcome(&self.shared, last).is_none() {
                // IMPORTANT: wake the writer before waiting: appends leave
                // it asleep (`Persistence::append_encoded`).
                persist::kick(&self.shared);
                // The outcome of each record is read below.
                let _ = persist::wait(&self.shared, last).await;
            }
        }
        // Completions come in order: if the last record is `Ok`, all are
        // (the common case: the encoded replies go out as they are).
        let all_ok = last.is_none_or(|s| matches!(persist::outcome(&self.shared, s), Some(Ok(_))));
        if !all_ok {
            self.replace_failed_replies();
        }
        self.held.clear();
        if !self.output.is_empty() {
            // Most replies fit in the socket buffer: written at once,
            // without a wait.
            let mut sent = 0;
            while sent < self.output.len() {
                match self.sock.try_write(&self.output[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if sent < self.output.len() {
                // A client that does not read must not keep this task (and
                // its buffers) forever: CLIENT KILL, or a pub/sub client
                // passing its output buffer limit, closes it even mid-write.
                tokio::select! {
                    biased;
                    _ = self.watches.signals.wait(KILL) => {
                        return Err(std::io::Error::other("closed while writing"));
                    }
                    r = self.sock.write_all(&self.output[sent..]) => r?,
                }
            }
            self.shared.metrics.count_output(self.output.len());
            self.output.clear();
            self.outbox.written(std::mem::take(&mut self.msg_bytes));
        }
        Ok(())
    }

    /// After a commit-log failure: rebuild the held part of `output` with
    /// each reply whose own record failed replaced by the MISCONF error.
    fn replace_failed_replies(&mut self) {
        let Some(first) = self.held.first().map(|h| h.start) else {
            return;
        };
        let encoded = self.output.split_off(first);
        for (i, h) in self.held.iter().enumerate() {
            let end = self
                .held
                .get(i + 1)
                .map_or(encoded.len(), |n| n.start - first);
            let failed = match h.commit.map(|seq| persist::outcome(&self.shared, seq)) {
                None | Some(Some(Ok(_))) => None,
                Some(_) if h.others => None,
                Some(Some(Err(e))) => Some(persist::misconf_message(&e)),
                // NOTE: not reached: `wait` returned, so every held record
                // is decided.
                Some(None) => Some("MISCONF Errors writing to the AOF file: log closed".into()),
            };
            match failed {
                Some(msg) => Reply::error(msg).encode(h.resp, &mut self.output),
                None => self
                    .output
                    .extend_from_slice(&encoded[h.start - first..end]),
            }
        }
    }

    /// Run every complete command in the input buffer.
    async fn process_input(&mut self) -> std::io::Result<Step> {
        loop {
            let limits = {
                let cfg = self.shared.config.read();
                Limits {
                    max_bulk_len: cfg.proto_max_bulk_len,
                    unauthenticated: !self.client.authenticated,
                }
            };
            let argv = match self.parser.parse(&mut self.input, limits) {
                Ok(Some(argv)) => argv,
                Ok(None) => return Ok(Step::Continue),
                Err(e) => {
                    let r = Reply::error(format!("ERR Protocol error: {}", e.0));
                    self.shared.store.lock().stats.count_error(&r);
                    self.push_reply(r, None, false);
                    tracing::debug!(client = self.client.id, "protocol error: {}", e.0);
                    return Ok(Step::Close);
                }
            };
            if argv.is_empty() {
                continue;
            }
            self.execute(argv).await?;
            if self.client.shutdown {
                self.flush().await?;
                self.shared.request_shutdown();
                return Ok(Step::Close);
            }
            if self.client.close_after_reply {
                return Ok(Step::Close);
            }
            if self.output.len() >= FLUSH_AT || self.held.len() >= HELD_MAX {
                self.flush().await?;
            }
        }
    }

    async fn execute(&mut self, argv: Argv) -> std::io::Result<()> {
        let shared = self.shared.clone();
        if shared.paused_now().is_some() {
            self.wait_unpaused(argv.as_bytes()).await?;
        }
        // IMPORTANT: stored blocks a read will need that are not in memory
        // are read here, on a blocking thread and without the store lock
        // (the command then finds them read), so that neither the async
        // workers nor the other clients wait for the disk (§13.8).
        // The command is parsed ahead only then (its handler takes the
        // parsed value instead of parsing again).
        let absent = shared
            .persist
            .get()
            .is_some_and(|p| p.blocks_may_be_absent());
        let parsed = if absent && self.client.multi.is_none() {
            cmd::parsed::Parsed::parse(argv.as_bytes())
        } else {
            None
        };
        let plan = match (&parsed, &self.client.multi) {
            (Some(p), _) => cmd::prefetch_plan(&shared.store.lock(), self.client.db, p),
            // EXEC: what the queued commands will read.
            (None, Some(queued))
                if absent
                    && argv
                        .first()
                        .is_some_and(|n| n.eq_ignore_ascii_case(b"exec")) =>
            {
                cmd::prefetch_plan_exec(&shared.store.lock(), self.client.db, queued)
            }
            _ => None,
        };
        if let Some((cache, blocks)) = &plan {
            let (c, b) = (cache.clone(), blocks.clone());
            // A failed or panicked read is left to the command, which reads
            // (and reports) it itself.
            let read = tokio::task::spawn_blocking(move || c.read_ahead(&b))
                .await
                .unwrap_or_default();
            // NOTE: from here to `unstage` there is no `.await`, so a
            // cancelled connection cannot leave staged bytes behind.
            cache.stage(read);
        }
        let now = now_ms();
        let (outcome, mut commit, mut barrier) = {
            let mut store = shared.store.lock();
            let (outcome, commit) = cmd::execute(
                &shared,
                &mut store,
                &mut self.client,
                argv,
                parsed,
                now,
                true,
            );
            // IMPORTANT: a reply without a record of its own may still show
            // effects of records not yet written/fsynced (another client's
            // XADD it read): it waits for them too, as Redis sends replies
            // only after its AOF write.
            let barrier = match commit {
                persist::Commit::Done => persist::barrier(&shared),
                _ => None,
            };
            // Messages published before this command ended (by others, or
            // to itself, such as its own keyspace events) go before its
            // reply, as in Redis. Taken under the store lock, where every
            // publish happens: none can slip in between.
            self.take_messages();
            (outcome, commit, barrier)
        };
        self.outbox.set_resp(self.client.resp);
        if let Some((cache, blocks)) = &plan {
            cache.unstage(blocks);
        }
        let mut reply = match outcome {
            Executed::Reply(r) => r,
            Executed::Blocked(waiter, rx, timeout) => {
                // Replies to earlier pipelined commands go out before we wait.
                self.flush().await?;
                let r = match self.wait_blocked(waiter, rx, timeout).await? {
                    Some(r) => r,
                    None => return Ok(()),
                };
                // A blocking command logs nothing when it blocks; should one
                // ever have, its record comes before the serving one: wait
                // for it here, the barrier below covers the rest.
                if let persist::Commit::Wait(seq) = commit {
                    persist::kick(&shared);
                    commit = match persist::wait(&shared, seq).await {
                        Ok(_) => persist::Commit::Done,
                        Err(e) => persist::Commit::Failed(persist::misconf_message(&e)),
                    };
                }
                // Served by another command, whose record holds this one's
                // effects (XREADGROUP's deliveries): taking the lock waits
                // until that command has appended it.
                barrier = {
                    let _store = shared.store.lock();
                    persist::barrier(&shared)
                };
                r
            }
        };
        let (wait, others) = match commit {
            persist::Commit::Done => (barrier, true),
            persist::Commit::Failed(msg) => {
                reply = Reply::error(msg);
                (None, false)
            }
            persist::Commit::Wait(rx) => (Some(rx), false),
        };
        // NOTE: a successful SHUTDOWN closes the connection without a reply.
        if self.client.shutdown {
            return Ok(());
        }
        // CLIENT REPLY OFF / SKIP: this reply is left out; a SKIP covers
        // exactly the next command.
        let suppressed = self.client.reply_off || self.client.reply_skip;
        self.client.reply_skip = std::mem::take(&mut self.client.reply_skip_next);
        if suppressed {
            return Ok(());
        }
        self.push_reply(reply, wait, others);
        Ok(())
    }

    /// CLIENT PAUSE: hold this command while a pause that covers it is in
    /// force (every command under ALL; under WRITE, those that write or
    /// may publish, and an EXEC whose queue holds one). Replies to earlier
    /// pipelined commands go out first.
    async fn wait_unpaused(&mut self, argv: &[bytes::Bytes]) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let writes = |a: &[bytes::Bytes]| {
            cmd::lookup(&shared, a)
                .is_ok_and(|c| c.meta.has_flag("write") || c.meta.has_flag("may_replicate"))
        };
        let is_exec = argv
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"exec"));
        let a_write = if is_exec {
            self.client
                .multi
                .as_ref()
                .is_some_and(|q| q.iter().any(|c| writes(c)))
        } else {
            self.client.multi.is_none() && writes(argv)
        };
        let mut flushed = false;
        loop {
            let now = now_ms();
            let Some(all) = self.shared.paused(now) else {
                return Ok(());
            };
            if !(all || a_write) {
                return Ok(());
            }
            if !flushed {
                self.flush().await?;
                flushed = true;
            }
            let left = self
                .shared
                .pause_until
                .load(Ordering::Acquire)
                .saturating_sub(now);
            let mut shutdown = self.shared.shutdown_tx.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(left.clamp(1, 100))) => {}
                _ = self.shared.unpause.notified() => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Queue a reply behind the earlier ones. IMPORTANT: a reply with a
    /// commit-log record leaves only once that record is written (and,
    /// under `always`, fsynced): `flush` waits. Later commands of the
    /// pipeline run meanwhile; their replies queue behind it.
    fn push_reply(&mut self, reply: Reply, commit: Option<u64>, others: bool) {
        if commit.is_some() || !self.held.is_empty() {
            self.held.push(Held {
                commit,
                others,
                start: self.output.len(),
                resp: self.client.resp,
            });
        }
        reply.encode(self.client.resp, &mut self.output);
    }

    /// Wait for a blocked command's reply, its timeout, or the client leaving.
    /// `Ok(None)`: the connection is going away.
    async fn wait_blocked(
        &mut self,
        waiter: u64,
        mut rx: tokio::sync::oneshot::Receiver<Reply>,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<Option<Reply>> {
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                r = &mut rx => {
                    return Ok(r.ok());
                }
                _ = &mut sleep => {
                    let timed_out = self.shared.store.lock().unblock(waiter);
                    return Ok(Some(match timed_out {
                        Some(r) => r,
                        // Served between the timer firing and taking the lock.
                        None => rx.try_recv().unwrap_or(Reply::NullArray),
                    }));
                }
                n = self.sock.read_buf(&mut self.input) => {
                    let closed = !matches!(n, Ok(k) if k > 0);
                    if let Ok(k) = n {
                        self.shared.metrics.count_input(k);
                    }
                    let limit = self.shared.config.read().client_query_buffer_limit as usize;
                    if closed || self.input.len() >= limit {
                        self.shared.store.lock().unblock(waiter);
                        return match n { Err(e) => Err(e), Ok(_) => Ok(None) };
                    }
                    // Input while blocked stays queued until we are unblocked.
                }
                // Messages are left for after the wait (they stay flagged).
                _ = self.watches.signals.wait(KILL | SHUTDOWN) => {
                    self.shared.store.lock().unblock(waiter);
                    self.client.close_after_reply = true;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_db::config::Config;
    use std::time::Duration;

    /// Waits on `signals` for `mask`, at most 5 s.
    async fn fired(signals: &Signals, mask: u8) -> u8 {
        tokio::time::timeout(Duration::from_secs(5), signals.wait(mask))
            .await
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn each_source_sets_its_bit_and_messages_rearm() {
        let shared = Shared::new(Config::default());
        let kill = Arc::new(tokio::sync::Notify::new());
        let outbox = Arc::new(Outbox::new(kill.clone()));
        let mut w = Watches::new(&kill, &outbox, &shared);
        assert!(w.signals.fired_now(KILL | SHUTDOWN | MESSAGES).is_pending());

        // Messages: once per wake-up, again after each re-arm.
        for _ in 0..3 {
            outbox.wake.notify_one();
            assert_eq!(fired(&w.signals, MESSAGES).await, MESSAGES);
            w.rearm_messages();
            assert!(w.signals.fired_now(MESSAGES).is_pending());
        }
        // A wake-up that fired before a re-arm is taken by it (the
        // caller then takes the messages); the next one fires again.
        outbox.wake.notify_one();
        w.rearm_messages();
        outbox.wake.notify_one();
        assert_eq!(fired(&w.signals, MESSAGES).await, MESSAGES);

        shared.request_shutdown();
        assert_eq!(fired(&w.signals, KILL | SHUTDOWN).await, SHUTDOWN);
        kill.notify_one();
        assert_eq!(fired(&w.signals, KILL).await, KILL);
    }

    #[tokio::test]
    async fn a_kill_before_the_connection_waits_is_seen() {
        let shared = Shared::new(Config::default());
        let kill = Arc::new(tokio::sync::Notify::new());
        let outbox = Arc::new(Outbox::new(kill.clone()));
        // CLIENT KILL between registering the client and its first read.
        kill.notify_one();
        let w = Watches::new(&kill, &outbox, &shared);
        assert!(w.signals.fired_now(KILL).is_ready());
        assert!(w.signals.fired_now(SHUTDOWN | MESSAGES).is_pending());
    }
}
