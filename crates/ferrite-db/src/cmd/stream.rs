//! Stream write and range commands: XADD, XTRIM, XDEL, XLEN, XRANGE,
//! XREVRANGE, XSETID. Argument rules and error order follow Redis 7.0's
//! t_stream.c; the stream semantics are `ferrite_streams::Stream`'s.

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::NOTIFY_STREAM;
use crate::reply::Reply;
use crate::store::Value;
use bytes::Bytes;
use ferrite_streams::id::{
    parse_range_end, parse_range_start, parse_strict_id, parse_xadd_id, XaddId,
};
use ferrite_streams::stream::{Trim, TrimSpec};
use ferrite_streams::{Entry, Stream, StreamId};

pub const COMMANDS: &[(&str, Handler)] = &[
    ("xadd", xadd),
    ("xtrim", xtrim),
    ("xdel", xdel),
    ("xlen", xlen),
    ("xrange", xrange),
    ("xrevrange", xrevrange),
    ("xsetid", xsetid),
];

/// A stream ID as a bulk string.
pub fn id_reply(id: StreamId) -> Reply {
    Reply::Bulk(Bytes::from(id.to_string()))
}

/// One entry as Redis replies it: `[id, [field, value, ...]]`.
pub fn entry_reply(e: Entry) -> Reply {
    Reply::Array(vec![
        id_reply(e.id),
        Reply::Array(e.fields.into_iter().map(Reply::Bulk).collect()),
    ])
}

/// The stream at `key` in the current db: `Ok(None)` if the key is missing,
/// WRONGTYPE if it holds something else.
pub fn stream_ref<'a>(ctx: &'a mut Ctx, key: &[u8]) -> Result<Option<&'a mut Stream>, CmdError> {
    match ctx.db().get_mut(key) {
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => Err(CmdError::WrongType),
        None => Ok(None),
    }
}

fn invalid_id() -> CmdError {
    CmdError::InvalidStreamId
}

/// XADD/XTRIM options, parsed as Redis's `streamParseAddOrTrimArgsOrReply`.
pub struct AddTrimArgs {
    pub trim: Option<TrimSpec>,
    pub nomkstream: bool,
    /// XADD: the ID argument; `None` for XTRIM.
    pub id: Option<XaddId>,
}

/// Parse options from the cursor (positioned after the key). For XADD the
/// cursor ends just after the ID.
pub fn parse_add_trim(a: &mut Args, xadd: bool) -> Result<AddTrimArgs, CmdError> {
    let mut strategy: Option<Trim> = None;
    let mut approx = false;
    let mut limit: Option<i64> = None;
    let mut nomkstream = false;
    let mut id = None;
    while let Some(opt) = a.peek_slice() {
        let moreargs = a.remaining() - 1;
        if xadd && opt == b"*" {
            a.skip(1);
            id = Some(XaddId::Auto);
            break;
        }
        let is_maxlen = opt.eq_ignore_ascii_case(b"MAXLEN");
        let is_minid = opt.eq_ignore_ascii_case(b"MINID");
        if (is_maxlen || is_minid) && moreargs > 0 {
            a.skip(1);
            if strategy.is_some() {
                return Err(CmdError::err(
                    "syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            approx = false;
            if moreargs >= 2 {
                match a.peek_slice() {
                    Some(b"~") => {
                        approx = true;
                        a.skip(1);
                    }
                    Some(b"=") => a.skip(1),
                    _ => {}
                }
            }
            let v = a.next_bytes()?;
            if is_maxlen {
                let n = parse_i64(&v).ok_or(CmdError::NotInteger)?;
                if n < 0 {
                    return Err(CmdError::err("The MAXLEN argument must be >= 0."));
                }
                strategy = Some(Trim::MaxLen(n as u64));
            } else {
                let min = parse_strict_id(&v, 0).map_err(|_| invalid_id())?;
                strategy = Some(Trim::MinId(min));
            }
        } else if opt.eq_ignore_ascii_case(b"LIMIT") && moreargs > 0 {
            a.skip(1);
            let n = a.next_i64()?;
            if n < 0 {
                return Err(CmdError::err("The LIMIT argument must be >= 0."));
            }
            limit = Some(n);
        } else if xadd && opt.eq_ignore_ascii_case(b"NOMKSTREAM") {
            a.skip(1);
            nomkstream = true;
        } else if xadd {
            let parsed = parse_xadd_id(opt).map_err(|_| invalid_id());
            a.skip(1);
            id = Some(parsed?);
            break;
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if limit.is_some_and(|l| l > 0) && strategy.is_none() {
        return Err(CmdError::err(
            "syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && strategy.is_none() {
        return Err(CmdError::err(
            "syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if limit.is_some() && !approx {
        return Err(CmdError::err(
            "syntax error, LIMIT cannot be used without the special ~ option",
        ));
    }
    let trim = strategy.map(|strategy| TrimSpec {
        strategy,
        approx,
        limit: limit.map(|l| l as u64),
    });
    Ok(AddTrimArgs {
        trim,
        nomkstream,
        id,
    })
}

fn xadd(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    // The key and fields are borrowed from the arguments, not cloned:
    // each `Bytes` clone and drop is an atomic reference count, which
    // this hottest command pays per argument otherwise.
    let key_at = a.position();
    if a.remaining() == 0 {
        return Err(CmdError::Syntax);
    }
    a.skip(1);
    let opts = parse_add_trim(a, true)?;
    let fields_at = a.position();
    let argc = fields_at + a.remaining();
    let key = a.arg(key_at).unwrap_or_default();
    let fields: smallvec::SmallVec<[&[u8]; 16]> =
        (fields_at..argc).filter_map(|i| a.arg(i)).collect();
    if fields.len() < 2 || fields.len() % 2 == 1 {
        return Err(CmdError::WrongArity("xadd".into()));
    }
    let Some(id_spec) = opts.id else {
        return Err(CmdError::WrongArity("xadd".into()));
    };
    if id_spec == XaddId::Explicit(StreamId::MIN) {
        return Err(CmdError::err(
            "The ID specified in XADD must be greater than 0-0",
        ));
    }
    if opts.nomkstream && !ctx.db().contains(key) {
        ctx.propagate_nothing();
        return Ok(Reply::Null);
    }
    append(ctx, key, id_spec, &fields, opts.trim.as_ref()).map(Reply::Bulk)
}

/// XADD's effect once its arguments are checked: creates the stream if
/// needed, appends `fields` (`[f1, v1, ...]`, at least one pair), trims,
/// logs the entry with its generated ID (and the trim as the exact one it
/// amounted to), touches the key. Returns the new ID's text. Subsystems
/// append through this too (`embedded::Atomic::xadd`).
pub fn append<F: AsRef<[u8]>>(
    ctx: &mut Ctx,
    key: &[u8],
    id_spec: XaddId,
    fields: &[F],
    trim: Option<&TrimSpec>,
) -> Result<Bytes, CmdError> {
    let cfg = ctx.shared.config.read().stream_config();
    let now = ctx.now_ms;
    let stored = ctx.store.block_cache.is_some();
    let s = match ctx.db().get_or_insert_with(key, || new_stream(stored)) {
        Some(Value::Stream(s)) => s,
        _ => return Err(CmdError::WrongType),
    };
    if s.last_id() == StreamId::MAX {
        return Err(CmdError::err(
            "The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    if let XaddId::AutoSeq(ms) = id_spec {
        // NOTE: Redis 7.0.15 reports a sequence overflow of `<ms>-*` with a
        // stale errno, which reads "Elements are too large to be stored".
        if s.last_id() == StreamId::new(ms, u64::MAX) {
            return Err(CmdError::err("Elements are too large to be stored"));
        }
    }
    let id = s.add(id_spec, fields, now, &cfg).map_err(add_error)?;
    let trimmed = trim.map_or(0, |t| s.trim(t, &cfg));
    let exact_trim = (trimmed > 0).then(|| exact_trim_args(s, trim));
    // The ID's text once, for the reply and the log (a clone is a refcount):
    // formatted on the stack (41 bytes hold any `<u64>-<u64>`), then one
    // allocation of its exact size (a `Bytes` of a full `Vec` needs no
    // second one for its shared header).
    let mut buf = [0u8; ferrite_streams::id::ID_TEXT_MAX];
    let n = id.write_text(&mut buf);
    let id_text = Bytes::copy_from_slice(&buf[..n]);
    if ctx.logging() {
        // Logged with the generated ID, and any trim as the exact trim it
        // amounted to; encoded straight into the record (no argv list).
        let db = ctx.client.db;
        ctx.store
            .log_effect_parts(db, &[b"XADD", key, &id_text], fields);
        if let Some(Some(t)) = exact_trim {
            ctx.store.log_effect_parts(db, &[b"XTRIM", key], &t);
        }
    }
    ctx.propagate_nothing();
    ctx.touch(key);
    ctx.notify(NOTIFY_STREAM, "xadd", key);
    if trimmed > 0 {
        ctx.notify(NOTIFY_STREAM, "xtrim", key);
    }
    Ok(id_text)
}

/// [`append`] of `*` IDs for each of `entries` (each a list of `(field,
/// value)` pairs), in order: the same stream, log records, keyspace
/// events and errors as that many `XADD key [MAXLEN ...] * ...` would give,
/// but the key is looked up once, no argument list is built per entry, and
/// the key is touched once (WATCH and blocked readers see one change,
/// served after the whole batch, as after a MULTI of XADDs). Returns how
/// many were appended; on an error (WRONGTYPE, an entry with no pairs, an
/// exhausted stream, an entry too large), how many were appended before
/// it, which stay.
pub fn append_batch<'e, A, B, I>(
    ctx: &mut Ctx,
    key: &[u8],
    entries: I,
    trim: Option<&TrimSpec>,
) -> Result<u64, (u64, CmdError)>
where
    A: AsRef<[u8]> + 'e,
    B: AsRef<[u8]> + 'e,
    I: IntoIterator<Item = &'e [(A, B)]>,
{
    let mut entries = entries.into_iter().peekable();
    // XADD checks its arity before it creates the stream.
    match entries.peek() {
        None => return Ok(0),
        Some([]) => return Err((0, CmdError::WrongArity("xadd".into()))),
        Some(_) => {}
    }
    let cfg = ctx.shared.config.read().stream_config();
    let now = ctx.now_ms;
    let db = ctx.client.db;
    let store = &mut *ctx.store;
    let stored = store.block_cache.is_some();
    let s = match store.dbs[db].get_or_insert_with(key, || new_stream(stored)) {
        Some(Value::Stream(s)) => s,
        _ => return Err((0, CmdError::WrongType)),
    };
    let mut added = 0u64;
    // Whether each appended entry trimmed (its `xtrim` event follows its
    // `xadd`); only kept with a trim.
    let mut trimmed_at: Vec<bool> = Vec::new();
    let mut failed = None;
    // The last logged ID's text, and its milliseconds.
    let mut id_buf = [0u8; ferrite_streams::id::ID_TEXT_MAX];
    let mut id_len;
    let mut ms_end = 0;
    let mut id_ms: Option<u64> = None;
    for pairs in entries {
        if pairs.is_empty() {
            failed = Some(CmdError::WrongArity("xadd".into()));
            break;
        }
        if s.last_id() == StreamId::MAX {
            failed = Some(CmdError::err(
                "The stream has exhausted the last possible ID, unable to add more items",
            ));
            break;
        }
        let id = match s.add_pairs(XaddId::Auto, pairs, now, &cfg) {
            Ok(id) => id,
            Err(e) => {
                failed = Some(add_error(e));
                break;
            }
        };
        let trimmed = trim.map_or(0, |t| s.trim(t, &cfg));
        if store.logging {
            // As `append` logs it: the generated ID, then any trim as the
            // exact trim it amounted to.
            if id_ms != Some(id.ms) {
                id_len = id.write_text(&mut id_buf);
                id_ms = Some(id.ms);
                ms_end = id_buf[..id_len]
                    .iter()
                    .position(|&c| c == b'-')
                    .map_or(0, |p| p + 1);
            } else {
                // The batch's IDs share their milliseconds (`*` within one
                // clock reading): only the sequence is written again.
                let mut digits = [0u8; 20];
                let seq = ferrite_streams::id::u64_digits(id.seq, &mut digits);
                id_buf[ms_end..ms_end + seq.len()].copy_from_slice(seq);
                id_len = ms_end + seq.len();
            }
            let head: [&[u8]; 3] = [b"XADD", key, &id_buf[..id_len]];
            crate::persist::put_cmd_pairs(&mut store.pending_log, db, &head, pairs);
            store.pending_cmds += 1;
            if trimmed > 0 {
                if let Some(t) = exact_trim_args(s, trim) {
                    crate::persist::put_cmd_parts(&mut store.pending_log, db, &[b"XTRIM", key], &t);
                    store.pending_cmds += 1;
                }
            }
        }
        if trim.is_some() {
            trimmed_at.push(trimmed > 0);
        }
        added += 1;
    }
    if added > 0 {
        ctx.propagate_nothing();
        ctx.touch(key);
        // One per XADD, as `touch` counted one.
        ctx.store.dirty += added - 1;
        for i in 0..added as usize {
            ctx.notify(NOTIFY_STREAM, "xadd", key);
            if trimmed_at.get(i) == Some(&true) {
                ctx.notify(NOTIFY_STREAM, "xtrim", key);
            }
        }
    }
    match failed {
        Some(e) => Err((added, e)),
        None => Ok(added),
    }
}

/// A trim as Redis propagates it: `MAXLEN = <len>` or `MINID = <first id>`,
/// which replays to the same blocks whatever `~` and LIMIT did.
fn exact_trim_args(s: &Stream, trim: Option<&TrimSpec>) -> Option<Vec<Bytes>> {
    let t = trim?;
    Some(match t.strategy {
        Trim::MaxLen(_) => vec![
            Bytes::from_static(b"MAXLEN"),
            Bytes::from_static(b"="),
            Bytes::from(s.len().to_string()),
        ],
        Trim::MinId(_) => vec![
            Bytes::from_static(b"MINID"),
            Bytes::from_static(b"="),
            Bytes::from(s.first_id().to_string()),
        ],
    })
}

pub fn add_error(e: ferrite_streams::stream::AddError) -> CmdError {
    CmdError::from(e)
}

fn xtrim(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let exists = ctx.db().contains(&key);
    let opts = parse_add_trim(a, false)?;
    if !exists {
        return Ok(Reply::Int(0));
    }
    let cfg = ctx.shared.config.read().stream_config();
    let Some(t) = opts.trim else {
        return Err(CmdError::Syntax);
    };
    let Some(s) = stream_ref(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let n = s.trim(&t, &cfg);
    match exact_trim_args(s, Some(&t)).filter(|_| n > 0) {
        Some(args) => {
            ctx.propagate([vec![Bytes::from_static(b"XTRIM"), key.clone()], args].concat())
        }
        None => ctx.propagate_nothing(),
    }
    if n > 0 {
        ctx.touch_watch_only(&key);
        ctx.notify(NOTIFY_STREAM, "xtrim", &key);
    }
    Ok(Reply::Int(n as i64))
}

fn xdel(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    if stream_ref(ctx, &key)?.is_none() {
        return Ok(Reply::Int(0));
    }
    let ids = a
        .rest()
        .iter()
        .map(|b| parse_strict_id(b, 0).map_err(|_| invalid_id()))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(s) = stream_ref(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let n = s.delete(&ids);
    if n > 0 {
        ctx.touch_watch_only(&key);
        ctx.notify(NOTIFY_STREAM, "xdel", &key);
    }
    Ok(Reply::Int(n as i64))
}

fn xlen(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    Ok(Reply::Int(
        stream_ref(ctx, &key)?.map_or(0, |s| s.len() as i64),
    ))
}

fn range_error(e: ferrite_streams::id::RangeIdError) -> CmdError {
    CmdError::from(e)
}

/// A parsed XRANGE or XREVRANGE.
#[derive(Debug, Clone)]
pub struct XRangeArgs {
    pub key: Bytes,
    pub start: StreamId,
    pub end: StreamId,
    /// COUNT; -1: none.
    pub count: i64,
    pub rev: bool,
}

impl XRangeArgs {
    pub fn parse(a: &mut Args, rev: bool) -> Result<XRangeArgs, CmdError> {
        let key = a.next_bytes()?;
        let first = a.next_bytes()?;
        let second = a.next_bytes()?;
        let (start_arg, end_arg) = if rev {
            (second, first)
        } else {
            (first, second)
        };
        let start = parse_range_start(&start_arg).map_err(range_error)?;
        let end = parse_range_end(&end_arg).map_err(range_error)?;
        let mut count: i64 = -1;
        while a.remaining() > 0 {
            if a.remaining() >= 2 && a.eat("COUNT") {
                count = a.next_i64()?.max(0);
            } else {
                return Err(CmdError::Syntax);
            }
        }
        Ok(XRangeArgs {
            key,
            start,
            end,
            count,
            rev,
        })
    }

    /// The evicted blocks it will read in `db` (see `cmd::parsed`).
    pub fn prefetch(&self, db: &crate::store::Db) -> super::Prefetch {
        // COUNT 0 reads nothing; no COUNT (-1) reads the whole range.
        let count = match self.count {
            0 => return Vec::new(),
            n => usize::try_from(n).ok(),
        };
        match db.get(&self.key) {
            Some(Value::Stream(s)) => s.evicted_in_range(
                self.start,
                self.end,
                self.rev,
                count,
                super::PREFETCH_MAX_BLOCKS,
            ),
            _ => Vec::new(),
        }
    }
}

fn xrange_generic(ctx: &mut Ctx, a: &mut Args, rev: bool) -> Result<Reply, CmdError> {
    // Parsed already if the read-ahead planner looked at it.
    let r = match ctx.parsed.take() {
        Some(super::parsed::Parsed::XRange(r)) if r.rev == rev => r,
        _ => XRangeArgs::parse(a, rev)?,
    };
    // Bounded: the reply is built in memory, under the store lock, and a
    // range over a stream far larger than RAM must not take the server down.
    let max = ctx.shared.config.read().max_reply_size;
    let Some(s) = stream_ref(ctx, &r.key)? else {
        return Ok(Reply::Array(vec![]));
    };
    if r.count == 0 {
        return Ok(Reply::NullArray);
    }
    let limit = if r.count < 0 {
        None
    } else {
        Some(r.count as usize)
    };
    let it = s
        .iter_range(r.start, r.end, r.rev)
        .take(limit.unwrap_or(usize::MAX));
    match crate::reply::entries_within(it, max) {
        Ok(entries) => Ok(crate::reply::encode_entries(entries)),
        Err(_) => Err(CmdError::Other(format!(
            "ERR the reply would be larger than max-reply-size ({max} bytes): read the range in parts with COUNT"
        ))),
    }
}

fn xrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    xrange_generic(ctx, a, false)
}

fn xrevrange(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    xrange_generic(ctx, a, true)
}

fn xsetid(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let id = parse_strict_id(&a.next_bytes()?, 0).map_err(|_| invalid_id())?;
    let mut entries_added: Option<u64> = None;
    let mut max_deleted: Option<StreamId> = None;
    while let Some(opt) = a.peek().cloned() {
        let more = a.remaining() > 1;
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"ENTRIESADDED") && more {
            let n = a.next_i64()?;
            if n < 0 {
                return Err(CmdError::err("entries_added must be positive"));
            }
            entries_added = Some(n as u64);
        } else if opt.eq_ignore_ascii_case(b"MAXDELETEDID") && more {
            let m = parse_strict_id(&a.next_bytes()?, 0).map_err(|_| invalid_id())?;
            if id < m {
                return Err(CmdError::err(
                    "The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                ));
            }
            max_deleted = Some(m);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(CmdError::NoSuchKey);
    };
    s.set_id(id, entries_added, max_deleted)
        .map_err(setid_error)?;
    // NOTE: Redis 7.0 neither invalidates WATCH nor wakes readers on XSETID.
    ctx.store.dirty += 1;
    ctx.notify(NOTIFY_STREAM, "xsetid", &key);
    Ok(Reply::ok())
}

fn setid_error(e: ferrite_streams::stream::SetIdError) -> CmdError {
    CmdError::from(e)
}

/// A stream created by a command: with persistence on (`stored`: the
/// store has a block cache) one that lists its sealed blocks for the
/// checkpoints from the start ([`Stream::new_stored`]).
pub(crate) fn new_stream(stored: bool) -> Value {
    Value::Stream(Box::new(if stored {
        Stream::new_stored()
    } else {
        Stream::new()
    }))
}
