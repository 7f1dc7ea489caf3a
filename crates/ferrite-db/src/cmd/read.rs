//! XREAD and XREADGROUP, including BLOCK: a reader that finds nothing
//! registers a [`StreamWaiter`] / [`GroupWaiter`] with the store; writers
//! signal the key, and the store serves waiters in FIFO order right after
//! the writing command (or EXEC).
//!
//! XREADGROUP logs what it changed as commands that replay exactly (see
//! `group`): `XGROUP CREATECONSUMER` for a consumer it created, XCLAIMs
//! of up to 1,024 IDs for the PEL entries it created or updated
//! (`xclaim_batch_effects`), and `XGROUP SETID ... ENTRIESREAD`
//! when the group's last ID moved. A blocked XREADGROUP logs the same when
//! it is served.

use super::group::{createconsumer_effect, setid_effect, xclaim_batch_effects};
use super::stream::{entry_reply, id_reply, stream_ref};
use super::{BlockRequest, Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::{BlockedCommand, Db, Value};
use bytes::Bytes;
use ferrite_streams::group::HistoryEntry;
use ferrite_streams::id::parse_strict_id;
use ferrite_streams::{Stream, StreamId};
use std::time::Duration;

pub const COMMANDS: &[(&str, Handler)] = &[("xread", xread), ("xreadgroup", xreadgroup)];

/// Redis's XREAD_BLOCKED_DEFAULT_COUNT: a woken reader without COUNT gets at most this many.
const BLOCKED_DEFAULT_COUNT: usize = 1000;

/// Redis's `getTimeoutFromObjectOrReply` in milliseconds: `None` is BLOCK 0 (forever).
pub fn parse_block_timeout(b: &[u8]) -> Result<Option<Duration>, CmdError> {
    let ms = parse_i64(b).ok_or(CmdError::TimeoutNotInteger)?;
    if ms < 0 {
        return Err(CmdError::TimeoutNegative);
    }
    Ok(if ms == 0 {
        None
    } else {
        Some(Duration::from_millis(ms as u64))
    })
}

/// XREAD / XREADGROUP's reply for several streams: RESP2 an array of
/// `[key, entries]` pairs, RESP3 a map.
pub fn keyed_reply(pairs: Vec<(Bytes, Reply)>) -> Reply {
    Reply::KeyedArray(
        pairs
            .into_iter()
            .map(|(k, v)| (Reply::Bulk(k), v))
            .collect(),
    )
}

/// A parsed XREAD or XREADGROUP, as Redis's `xreadCommand` reads it.
#[derive(Debug, Clone)]
pub struct ReadArgs {
    /// XREADGROUP (else XREAD).
    pub readgroup: bool,
    /// BLOCK: `Some(None)` = forever.
    pub timeout: Option<Option<Duration>>,
    /// COUNT (0 = no limit).
    pub count: usize,
    pub noack: bool,
    /// GROUP `<group> <consumer>`.
    pub group: Option<(Bytes, Bytes)>,
    pub keys: Vec<Bytes>,
    pub ids: Vec<Bytes>,
}

impl ReadArgs {
    pub fn parse(a: &mut Args, readgroup: bool) -> Result<ReadArgs, CmdError> {
        parse_read(a, readgroup)
    }

    /// The evicted blocks it will read in `db` (see `cmd::parsed`).
    pub fn prefetch(&self, db: &Db) -> super::Prefetch {
        read_prefetch(db, self)
    }
}

/// The handler's arguments: the planner's parse if it made one.
fn take_parsed(ctx: &mut Ctx, a: &mut Args, readgroup: bool) -> Result<ReadArgs, CmdError> {
    match ctx.parsed.take() {
        Some(super::parsed::Parsed::XRead(r)) if r.readgroup == readgroup => Ok(r),
        _ => parse_read(a, readgroup),
    }
}

fn parse_read(a: &mut Args, readgroup: bool) -> Result<ReadArgs, CmdError> {
    let mut r = ReadArgs {
        readgroup,
        timeout: None,
        count: 0,
        noack: false,
        group: None,
        keys: Vec::new(),
        ids: Vec::new(),
    };
    let mut streams_at = None;
    while let Some(opt) = a.peek().cloned() {
        let more = a.remaining() > 1;
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"BLOCK") && more {
            r.timeout = Some(parse_block_timeout(&a.next_bytes()?)?);
        } else if opt.eq_ignore_ascii_case(b"COUNT") && more {
            let n = a.next_i64()?;
            r.count = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        } else if opt.eq_ignore_ascii_case(b"STREAMS") && more {
            streams_at = Some(a.position());
            break;
        } else if opt.eq_ignore_ascii_case(b"GROUP") && a.remaining() >= 2 {
            if !readgroup {
                return Err(CmdError::err(
                    "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            let g = a.next_bytes()?;
            let c = a.next_bytes()?;
            r.group = Some((g, c));
        } else if opt.eq_ignore_ascii_case(b"NOACK") {
            if !readgroup {
                return Err(CmdError::err(
                    "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            r.noack = true;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if streams_at.is_none() {
        return Err(CmdError::Syntax);
    }
    let rest = a.rest().to_vec();
    if !rest.len().is_multiple_of(2) {
        return Err(CmdError::err(
            "Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    if readgroup && r.group.is_none() {
        return Err(CmdError::err("Missing GROUP option for XREADGROUP"));
    }
    let n = rest.len() / 2;
    r.ids = rest[n..].to_vec();
    r.keys = rest[..n].to_vec();
    Ok(r)
}

/// The evicted blocks an XREAD or XREADGROUP will read in `db`.
/// Per stream: XREAD with an ID, and XREADGROUP with `>`, read the last
/// entry (is there anything new?) and then the entries after the ID (or
/// the group's last ID), up to COUNT; XREADGROUP with an ID reads the
/// consumer's pending entries after it, up to COUNT. Only the plan looks
/// at the group here: the command runs (and logs) exactly as without it.
fn read_prefetch(db: &Db, r: &ReadArgs) -> super::Prefetch {
    /// Pending entries looked at at most, per stream (the plan runs under
    /// the store lock).
    const MAX_PENDING: usize = 65_536;
    let group = r.readgroup;
    let count = if r.count == 0 { None } else { Some(r.count) };
    let mut out = super::PlanBuilder::default();
    for (key, arg) in r.keys.iter().zip(&r.ids) {
        if out.full() {
            break;
        }
        let Some(Value::Stream(s)) = db.get(key) else {
            continue;
        };
        // `$` (XREAD) reads only entries added later: nothing stored.
        let id = match arg.as_ref() {
            b">" => None,
            _ => match parse_strict_id(arg, 0) {
                // XREADGROUP reads the maximal ID as `>`.
                Ok(id) => (!group || id != StreamId::MAX).then_some(id),
                Err(_) => continue,
            },
        };
        match (&r.group, id) {
            (None, Some(after)) => push_new_entries(&mut out, s, after, count),
            (None, None) => {}
            (Some((g, _)), None) => {
                if let Some(g) = s.group(g) {
                    push_new_entries(&mut out, s, g.last_id(), count);
                }
            }
            (Some((g, consumer)), Some(after)) => {
                let Some(g) = s.group(g) else {
                    continue;
                };
                let Some(cid) = g.consumer_id(consumer) else {
                    continue;
                };
                let start = after.incr().unwrap_or(StreamId::MIN);
                let pending = g
                    .consumer_pending_range(cid, start, StreamId::MAX)
                    .take(count.unwrap_or(usize::MAX).min(MAX_PENDING));
                for p in pending {
                    if out.full() {
                        break;
                    }
                    out.extend(s.evicted_in_range(p.id, p.id, false, Some(1), 1));
                }
            }
        }
    }
    out.finish()
}

/// The blocks a read of the entries after `after` takes: the stream's last
/// entry (checked first), then the range, up to `count` entries.
fn push_new_entries(
    out: &mut super::PlanBuilder,
    s: &Stream,
    after: StreamId,
    count: Option<usize>,
) {
    let Some(start) = after.incr() else {
        return;
    };
    let room = out.room();
    out.extend(s.evicted_in_range(StreamId::MIN, StreamId::MAX, true, Some(1), room));
    let room = out.room();
    out.extend(s.evicted_in_range(start, StreamId::MAX, false, count, room));
}

fn xread(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let r = take_parsed(ctx, a, false)?;
    let (keys, id_args) = (&r.keys, &r.ids);
    let mut ids = Vec::with_capacity(keys.len());
    for (key, arg) in keys.iter().zip(id_args) {
        let current = stream_ref(ctx, key)?.map(|s| s.last_id());
        let id = if arg.as_ref() == b"$" {
            current.unwrap_or(StreamId::MIN)
        } else if arg.as_ref() == b">" {
            return Err(CmdError::err(
                "The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
            ));
        } else {
            parse_strict_id(arg, 0).map_err(|_| CmdError::InvalidStreamId)?
        };
        ids.push(id);
    }
    let limit = if r.count == 0 { None } else { Some(r.count) };
    let max_bytes = ctx.shared.config.read().max_reply_size;
    let mut out = Vec::new();
    for (key, &after) in keys.iter().zip(&ids) {
        if let Some(r) = read_after(ctx.db(), key, after, limit, max_bytes) {
            out.push((key.clone(), r));
        }
    }
    if !out.is_empty() {
        return Ok(keyed_reply(out));
    }
    if let Some(t) = r.timeout {
        ctx.block = Some(BlockRequest {
            keys: keys.to_vec(),
            timeout: t,
            cmd: Box::new(StreamWaiter {
                keys: keys.to_vec(),
                after: ids,
                count: limit.unwrap_or(BLOCKED_DEFAULT_COUNT),
                max_bytes,
            }),
        });
    }
    Ok(Reply::NullArray)
}

/// `-NOGROUP` of XREADGROUP.
fn no_readgroup(key: &[u8], group: &[u8]) -> CmdError {
    let c = |b: &[u8]| -> Vec<u8> {
        let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
        b[..end].to_vec()
    };
    CmdError::Raw(Bytes::from(
        [
            &b"NOGROUP No such key '"[..],
            &c(key),
            b"' or consumer group '",
            &c(group),
            b"' in XREADGROUP with GROUP option",
        ]
        .concat(),
    ))
}

/// A history entry as XREADGROUP replies it: deleted entries are `[id, nil]`.
fn history_reply(h: HistoryEntry) -> Reply {
    match h.entry {
        Some(e) => entry_reply(e),
        None => Reply::Array(vec![id_reply(h.id), Reply::NullArray]),
    }
}

/// Who reads: the group, the consumer and the read options.
struct Reader<'a> {
    group: &'a Bytes,
    consumer: &'a Bytes,
    count: Option<usize>,
    noack: bool,
    /// `max-reply-size`.
    max_bytes: u64,
}

/// Serves `>` for one stream: the new entries for the consumer (created if
/// needed), with the effects to log. The caller checked that the group exists.
fn serve_new(
    s: &mut Stream,
    key: &Bytes,
    rd: &Reader,
    now: u64,
    effects: &mut Vec<Vec<Bytes>>,
) -> Reply {
    let (group, consumer, count, noack) = (rd.group, rd.consumer, rd.count, rd.noack);
    s.with_groups(|s, groups| {
        let Some(g) = groups.get_mut(group) else {
            return Reply::Array(vec![]);
        };
        let (cid, created) = g.lookup_or_create_consumer(consumer, now);
        if created {
            effects.push(createconsumer_effect(key, group, consumer));
        }
        let before = (g.last_id(), g.entries_read_raw());
        // Bounded by `max-reply-size` as well as COUNT: what would pass it
        // is left for the next call (a shorter batch, never an error after
        // entries were delivered).
        let count = match (count, g.last_id().incr()) {
            (Some(n), _) if n <= 1000 => Some(n),
            (_, None) => count,
            (_, Some(start)) => {
                let it = s
                    .iter_range(start, StreamId::MAX, false)
                    .take(count.unwrap_or(usize::MAX));
                Some(crate::reply::entries_up_to(it, rd.max_bytes).len().max(1))
            }
        };
        let delivered = g.deliver_new(s, cid, count, noack, now);
        let mut out = Vec::with_capacity(delivered.len());
        let mut pending = Vec::with_capacity(if noack { 0 } else { delivered.len() });
        for d in delivered {
            if let Some(p) = d.pending {
                pending.push(p);
            }
            out.push(entry_reply(d.entry));
        }
        // LASTID: the group's last ID right after each batch.
        effects.extend(xclaim_batch_effects(key, group, g, &pending, None));
        if (g.last_id(), g.entries_read_raw()) != before {
            effects.push(setid_effect(key, group, g));
        }
        Reply::Array(out)
    })
}

fn xreadgroup(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let r = take_parsed(ctx, a, true)?;
    let Some((group, consumer)) = r.group.clone() else {
        return Err(CmdError::err("Missing GROUP option for XREADGROUP"));
    };
    // Per key, in order: type, group, then the ID.
    let mut ids: Vec<Option<StreamId>> = Vec::with_capacity(r.keys.len());
    for (key, arg) in r.keys.iter().zip(&r.ids) {
        let has_group = stream_ref(ctx, key)?.is_some_and(|s| s.group(&group).is_some());
        if !has_group {
            return Err(no_readgroup(key, &group));
        }
        let id = match arg.as_ref() {
            b"$" => {
                return Err(CmdError::err(
                    "The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
                ))
            }
            b">" => None,
            _ => {
                let id = parse_strict_id(arg, 0).map_err(|_| CmdError::InvalidStreamId)?;
                // NOTE: Redis encodes `>` as the maximal ID, so that ID
                // given explicitly reads new entries too.
                (id != StreamId::MAX).then_some(id)
            }
        };
        ids.push(id);
    }
    let limit = if r.count == 0 { None } else { Some(r.count) };
    let now = ctx.now_ms;
    let max_bytes = ctx.shared.config.read().max_reply_size;
    let mut effects = Vec::new();
    let mut out = Vec::new();
    for (key, id) in r.keys.iter().zip(&ids) {
        let Some(s) = stream_ref(ctx, key)? else {
            continue;
        };
        let reply = match id {
            Some(after) => s.with_groups(|s, groups| {
                let Some(g) = groups.get_mut(&group) else {
                    return Reply::Array(vec![]);
                };
                let (cid, created) = g.lookup_or_create_consumer(&consumer, now);
                if created {
                    effects.push(createconsumer_effect(key, &group, &consumer));
                }
                let start = after.incr().unwrap_or(StreamId::MIN);
                let hist = g.read_history(s, cid, start, limit, now);
                let pending: Vec<ferrite_streams::PendingEntry> =
                    hist.iter().filter_map(|h| h.pending).collect();
                effects.extend(xclaim_batch_effects(
                    key,
                    &group,
                    g,
                    &pending,
                    Some(g.last_id()),
                ));
                Reply::Array(hist.into_iter().map(history_reply).collect())
            }),
            None => {
                let ready = s
                    .group(&group)
                    .is_some_and(|g| !s.is_empty() && s.last_valid_id() > g.last_id());
                if !ready {
                    continue;
                }
                let rd = Reader {
                    group: &group,
                    consumer: &consumer,
                    count: limit,
                    noack: r.noack,
                    max_bytes,
                };
                serve_new(s, key, &rd, now, &mut effects)
            }
        };
        out.push((key.clone(), reply));
    }
    ctx.store.dirty += effects.len() as u64;
    ctx.propagate_nothing();
    for e in effects {
        ctx.propagate(e);
    }
    if !out.is_empty() {
        return Ok(keyed_reply(out));
    }
    if let Some(t) = r.timeout {
        ctx.block = Some(BlockRequest {
            keys: r.keys.clone(),
            timeout: t,
            cmd: Box::new(GroupWaiter {
                keys: r.keys,
                group,
                consumer,
                noack: r.noack,
                count: limit.unwrap_or(BLOCKED_DEFAULT_COUNT),
                max_bytes,
                effects: Vec::new(),
            }),
        });
    }
    Ok(Reply::NullArray)
}

/// Entries of `key` after `after`, if the stream has any (Redis serves a
/// stream when its last valid entry is greater than `after`).
fn read_after(
    db: &mut Db,
    key: &[u8],
    after: StreamId,
    count: Option<usize>,
    max_bytes: u64,
) -> Option<Reply> {
    let Some(Value::Stream(s)) = db.get(key) else {
        return None;
    };
    if s.is_empty() || s.last_entry().is_none_or(|e| e.id <= after) {
        return None;
    }
    let start = after.incr()?;
    let it = s
        .iter_range(start, StreamId::MAX, false)
        .take(count.unwrap_or(usize::MAX));
    let entries = crate::reply::entries_up_to(it, max_bytes);
    Some(crate::reply::encode_entries(entries))
}

/// A blocked XREAD.
struct StreamWaiter {
    keys: Vec<Bytes>,
    after: Vec<StreamId>,
    count: usize,
    /// `max-reply-size` when it blocked.
    max_bytes: u64,
}

impl BlockedCommand for StreamWaiter {
    fn try_serve(&mut self, db: &mut Db, key: &Bytes, _now_ms: u64) -> Option<Reply> {
        let i = self.keys.iter().position(|k| k == key)?;
        let after = self.after[i];
        // Redis wakes a reader when the stream's last ID passed its ID, and
        // replies with that one stream only.
        let Some(Value::Stream(s)) = db.get(key) else {
            return None;
        };
        if s.last_id() <= after {
            return None;
        }
        let start = after.incr()?;
        let it = s.iter_range(start, StreamId::MAX, false).take(self.count);
        let entries = crate::reply::encode_entries(crate::reply::entries_up_to(it, self.max_bytes));
        Some(keyed_reply(vec![(key.clone(), entries)]))
    }
    fn timeout_reply(&self) -> Reply {
        Reply::NullArray
    }
    fn name(&self) -> &'static str {
        "xread"
    }
}

/// A blocked XREADGROUP (always for `>` on every key).
struct GroupWaiter {
    keys: Vec<Bytes>,
    group: Bytes,
    consumer: Bytes,
    noack: bool,
    count: usize,
    /// `max-reply-size` when it blocked.
    max_bytes: u64,
    /// What serving changed, for the commit log.
    effects: Vec<Vec<Bytes>>,
}

impl BlockedCommand for GroupWaiter {
    fn try_serve(&mut self, db: &mut Db, key: &Bytes, now_ms: u64) -> Option<Reply> {
        if !self.keys.contains(key) {
            return None;
        }
        let Some(Value::Stream(s)) = db.get_mut(key) else {
            // Deleted, flushed, renamed away or replaced by another type.
            return Some(Reply::error("UNBLOCKED the stream key no longer exists"));
        };
        let Some(g) = s.group(&self.group) else {
            return Some(Reply::error(
                "NOGROUP the consumer group this client was blocked on no longer exists",
            ));
        };
        // Redis serves when the stream's last ID passed the group's (XDEL
        // and XTRIM do not signal; see `Ctx::touch`).
        if s.last_id() <= g.last_id() {
            return None;
        }
        let rd = Reader {
            group: &self.group,
            consumer: &self.consumer,
            count: Some(self.count),
            noack: self.noack,
            max_bytes: self.max_bytes,
        };
        let entries = serve_new(s, key, &rd, now_ms, &mut self.effects);
        Some(keyed_reply(vec![(key.clone(), entries)]))
    }
    fn timeout_reply(&self) -> Reply {
        Reply::NullArray
    }
    fn name(&self) -> &'static str {
        "xreadgroup"
    }
    fn take_effects(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.effects)
    }
}
