//! XREAD, including BLOCK: a reader that finds nothing registers a
//! [`StreamWaiter`] with the store; writers signal the key, and the store
//! serves waiters in FIFO order right after the writing command (or EXEC).

use super::stream::{entries_reply, stream_ref};
use super::{BlockRequest, Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::{BlockedCommand, Db, Value};
use bytes::Bytes;
use ferrite_streams::id::parse_strict_id;
use ferrite_streams::StreamId;
use std::time::Duration;

pub const COMMANDS: &[(&str, Handler)] = &[("xread", xread)];

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

fn xread(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut timeout: Option<Option<Duration>> = None;
    let mut count: usize = 0;
    let mut streams_at = None;
    while let Some(opt) = a.peek().cloned() {
        let more = a.remaining() > 1;
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"BLOCK") && more {
            timeout = Some(parse_block_timeout(&a.next_bytes()?)?);
        } else if opt.eq_ignore_ascii_case(b"COUNT") && more {
            let n = a.next_i64()?;
            count = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        } else if opt.eq_ignore_ascii_case(b"STREAMS") && more {
            streams_at = Some(a.position());
            break;
        } else if opt.eq_ignore_ascii_case(b"GROUP") && a.remaining() >= 2 {
            return Err(CmdError::err(
                "The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
            ));
        } else if opt.eq_ignore_ascii_case(b"NOACK") {
            return Err(CmdError::err(
                "The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
            ));
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
    let n = rest.len() / 2;
    let (keys, id_args) = rest.split_at(n);
    let mut ids = Vec::with_capacity(n);
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
    let limit = if count == 0 { None } else { Some(count) };
    let mut out = Vec::new();
    for (key, &after) in keys.iter().zip(&ids) {
        if let Some(r) = read_after(ctx.db(), key, after, limit) {
            out.push((key.clone(), r));
        }
    }
    if !out.is_empty() {
        return Ok(keyed_reply(out));
    }
    if let Some(t) = timeout {
        ctx.block = Some(BlockRequest {
            keys: keys.to_vec(),
            timeout: t,
            cmd: Box::new(StreamWaiter {
                keys: keys.to_vec(),
                after: ids,
                count: limit.unwrap_or(BLOCKED_DEFAULT_COUNT),
            }),
        });
    }
    Ok(Reply::NullArray)
}

/// Entries of `key` after `after`, if the stream has any (Redis serves a
/// stream when its last valid entry is greater than `after`).
fn read_after(db: &mut Db, key: &[u8], after: StreamId, count: Option<usize>) -> Option<Reply> {
    let Some(Value::Stream(s)) = db.get(key) else {
        return None;
    };
    if s.is_empty() || s.last_entry().is_none_or(|e| e.id <= after) {
        return None;
    }
    let start = after.incr()?;
    Some(entries_reply(s.range(start, StreamId::MAX, count, false)))
}

/// A blocked XREAD.
struct StreamWaiter {
    keys: Vec<Bytes>,
    after: Vec<StreamId>,
    count: usize,
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
        let entries = entries_reply(s.range(start, StreamId::MAX, Some(self.count), false));
        Some(keyed_reply(vec![(key.clone(), entries)]))
    }
    fn timeout_reply(&self) -> Reply {
        Reply::NullArray
    }
    fn name(&self) -> &'static str {
        "xread"
    }
}
