//! Consumer group commands: XGROUP (CREATE, SETID, DESTROY, CREATECONSUMER,
//! DELCONSUMER, HELP), XACK, XPENDING, XCLAIM, XAUTOCLAIM. XREADGROUP lives
//! with XREAD in `read`, XINFO GROUPS / CONSUMERS in `info`.
//!
//! Argument checks and their order follow Redis 7.0's t_stream.c; the group
//! data structures are `ferrite_streams::group`'s.
//!
//! Propagation (what the commit log replays): every change to a PEL entry is
//! logged as `XCLAIM key group consumer 0 id TIME t RETRYCOUNT n FORCE JUSTID
//! LASTID last` (which recreates every field of the entry), a PEL entry
//! dropped because its stream entry was deleted as `XACK key group id`, a
//! moved `last-delivered-id` / `entries-read` as `XGROUP SETID key group id
//! ENTRIESREAD n`, and `XGROUP CREATE` with the resolved ID and its
//! ENTRIESREAD. Commands that changed nothing log nothing.

use super::conn::help;
use super::stream::{entry_reply, id_reply, stream_ref};
use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::{sanitize_arg, CmdError};
use crate::pubsub::NOTIFY_STREAM;
use crate::reply::Reply;
use bytes::Bytes;
use ferrite_streams::group::{
    ClaimOptions, ClaimOutcome, Group, PendingEntry, ENTRIES_READ_INVALID,
};
use ferrite_streams::id::{parse_id, parse_interval_id, parse_strict_id};
use ferrite_streams::StreamId;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("xgroup|create", xgroup),
    ("xgroup|setid", xgroup),
    ("xgroup|destroy", xgroup),
    ("xgroup|createconsumer", xgroup),
    ("xgroup|delconsumer", xgroup),
    ("xgroup|help", xgroup_help),
    ("xack", xack),
    ("xpending", xpending),
    ("xclaim", xclaim),
    ("xautoclaim", xautoclaim),
];

// ---- error helpers ----------------------------------------------------------

/// What C's `%s` prints of an argument: everything before the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// An error reply assembled from byte pieces (names are client bytes).
fn raw_error(parts: &[&[u8]]) -> CmdError {
    CmdError::Raw(Bytes::from(parts.concat()))
}

/// `-NOGROUP No such key '<key>' or consumer group '<group>'` (XPENDING,
/// XCLAIM, XAUTOCLAIM).
pub fn no_key_or_group(key: &[u8], group: &[u8]) -> CmdError {
    raw_error(&[
        b"NOGROUP No such key '",
        cstr(key),
        b"' or consumer group '",
        cstr(group),
        b"'",
    ])
}

/// `-NOGROUP No such consumer group '<group>' for key name '<key>'` (XGROUP,
/// XINFO CONSUMERS).
pub fn no_group_for_key(group: &[u8], key: &[u8]) -> CmdError {
    raw_error(&[
        b"NOGROUP No such consumer group '",
        cstr(group),
        b"' for key name '",
        cstr(key),
        b"'",
    ])
}

/// Redis's `addReplySubcommandSyntaxError` for XGROUP, naming the
/// subcommand as typed.
fn xgroup_syntax(sub: &[u8]) -> CmdError {
    CmdError::err(format!(
        "unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
        sanitize_arg(sub)
    ))
}

fn invalid_id() -> CmdError {
    CmdError::InvalidStreamId
}

/// `getLongLongFromObjectOrReply` with a custom message.
fn parse_ll_or(b: &[u8], msg: &str) -> Result<i64, CmdError> {
    parse_i64(b).ok_or_else(|| CmdError::err(msg))
}

// ---- propagation helpers ----------------------------------------------------

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn id_bytes(id: StreamId) -> Bytes {
    Bytes::from(id.to_string())
}

fn num(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

/// The XCLAIM that recreates `p` exactly on replay (`last_id`: its LASTID,
/// the group's last ID at that point).
pub fn xclaim_effect(
    key: &Bytes,
    group: &Bytes,
    g: &Group,
    p: &PendingEntry,
    last_id: StreamId,
) -> Vec<Bytes> {
    vec![
        b("XCLAIM"),
        key.clone(),
        group.clone(),
        g.consumer_name(p.consumer).clone(),
        b("0"),
        id_bytes(p.id),
        b("TIME"),
        num(p.delivery_time),
        b("RETRYCOUNT"),
        num(p.delivery_count),
        b("FORCE"),
        b("JUSTID"),
        b("LASTID"),
        id_bytes(last_id),
    ]
}

/// IDs per logged XCLAIM when deliveries are logged in batches.
const XCLAIM_BATCH: usize = 1024;

/// The deliveries `pending` (in order) as XCLAIMs of up to 1,024 IDs each,
/// one per run of entries with the same consumer, delivery time and count:
/// replayed, they build the same PEL as one XCLAIM per entry (Redis's
/// propagation), in a record about 20 bytes per delivered entry instead of
/// about 120. `last_id`: each XCLAIM's LASTID (`None`: its last ID).
pub fn xclaim_batch_effects(
    key: &Bytes,
    group: &Bytes,
    g: &Group,
    pending: &[PendingEntry],
    last_id: Option<StreamId>,
) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pending.len() {
        let p0 = &pending[i];
        let mut j = i + 1;
        while j < pending.len()
            && j - i < XCLAIM_BATCH
            && pending[j].consumer == p0.consumer
            && pending[j].delivery_time == p0.delivery_time
            && pending[j].delivery_count == p0.delivery_count
        {
            j += 1;
        }
        let run = &pending[i..j];
        let mut argv = vec![
            b("XCLAIM"),
            key.clone(),
            group.clone(),
            g.consumer_name(p0.consumer).clone(),
            b("0"),
        ];
        argv.extend(run.iter().map(|p| id_bytes(p.id)));
        let last = last_id.unwrap_or(run[run.len() - 1].id);
        argv.extend([
            b("TIME"),
            num(p0.delivery_time),
            b("RETRYCOUNT"),
            num(p0.delivery_count),
            b("FORCE"),
            b("JUSTID"),
            b("LASTID"),
            id_bytes(last),
        ]);
        out.push(argv);
        i = j;
    }
    out
}

/// `XGROUP SETID key group <last-id> ENTRIESREAD <n>`.
pub fn setid_effect(key: &Bytes, group: &Bytes, g: &Group) -> Vec<Bytes> {
    vec![
        b("XGROUP"),
        b("SETID"),
        key.clone(),
        group.clone(),
        id_bytes(g.last_id()),
        b("ENTRIESREAD"),
        num(g.entries_read_raw()),
    ]
}

/// `XGROUP CREATECONSUMER key group consumer`.
pub fn createconsumer_effect(key: &Bytes, group: &Bytes, consumer: &Bytes) -> Vec<Bytes> {
    vec![
        b("XGROUP"),
        b("CREATECONSUMER"),
        key.clone(),
        group.clone(),
        consumer.clone(),
    ]
}

fn xack_effect(key: &Bytes, group: &[u8], id: StreamId) -> Vec<Bytes> {
    vec![
        b("XACK"),
        key.clone(),
        Bytes::copy_from_slice(group),
        id_bytes(id),
    ]
}

// ---- XGROUP -----------------------------------------------------------------

/// `ENTRIESREAD n`: an integer, `>= 0` or exactly -1.
fn parse_entries_read(v: &[u8]) -> Result<i64, CmdError> {
    let n = parse_i64(v).ok_or(CmdError::NotInteger)?;
    if n < 0 && n != ENTRIES_READ_INVALID {
        return Err(CmdError::err(
            "value for ENTRIESREAD must be positive or -1",
        ));
    }
    Ok(n)
}

fn xgroup(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let argv = a.all().to_vec();
    let argc = argv.len();
    let sub = argv[1].to_ascii_uppercase();
    let sub = sub.as_slice();
    let key = argv[2].clone();
    let gname = argv.get(3).cloned().unwrap_or_default();
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_INVALID;
    // Options are parsed before the key is looked up.
    match sub {
        b"CREATE" => {
            let mut i = 5;
            while i < argc {
                if argv[i].eq_ignore_ascii_case(b"MKSTREAM") {
                    mkstream = true;
                    i += 1;
                } else if argv[i].eq_ignore_ascii_case(b"ENTRIESREAD") && i + 1 < argc {
                    entries_read = parse_entries_read(&argv[i + 1])?;
                    i += 2;
                } else {
                    return Err(xgroup_syntax(&argv[1]));
                }
            }
        }
        b"SETID" => {
            if argc == 7 {
                if argv[5].eq_ignore_ascii_case(b"ENTRIESREAD") {
                    entries_read = parse_entries_read(&argv[6])?;
                } else {
                    return Err(xgroup_syntax(&argv[1]));
                }
            } else if argc != 5 {
                return Err(xgroup_syntax(&argv[1]));
            }
        }
        _ => {}
    }
    let exists = stream_ref(ctx, &key)?.is_some();
    if !mkstream {
        let Some(s) = stream_ref(ctx, &key)? else {
            return Err(CmdError::err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
            ));
        };
        let needs_group = matches!(sub, b"SETID" | b"CREATECONSUMER" | b"DELCONSUMER");
        if needs_group && s.group(&gname).is_none() {
            return Err(no_group_for_key(&gname, &key));
        }
    }
    let now = ctx.now_ms;
    match sub {
        b"CREATE" if (5..=8).contains(&argc) => {
            let id_arg = &argv[4];
            let id = if id_arg.as_ref() == b"$" {
                stream_ref(ctx, &key)?.map_or(StreamId::MIN, |s| s.last_id())
            } else {
                parse_strict_id(id_arg, 0).map_err(|_| invalid_id())?
            };
            if !exists {
                let stream = super::stream::new_stream(ctx.store.block_cache.is_some());
                ctx.db().insert(key.clone(), stream);
                ctx.touch(&key);
            }
            let Some(s) = stream_ref(ctx, &key)? else {
                return Err(CmdError::WrongType);
            };
            let created =
                s.with_groups(|_, groups| groups.create(&gname, Group::new(id, entries_read)));
            if !created {
                // A stream MKSTREAM just created has no groups, so the key
                // existed: nothing changed.
                ctx.propagate_nothing();
                return Err(CmdError::Other(
                    "BUSYGROUP Consumer Group name already exists".into(),
                ));
            }
            let mut log = vec![
                b("XGROUP"),
                b("CREATE"),
                key.clone(),
                gname.clone(),
                id_bytes(id),
                b("ENTRIESREAD"),
                num(entries_read),
            ];
            if !exists {
                log.push(b("MKSTREAM"));
            }
            ctx.propagate(log);
            ctx.store.dirty += 1;
            ctx.notify(NOTIFY_STREAM, "xgroup-create", &key);
            Ok(Reply::ok())
        }
        b"SETID" if argc == 5 || argc == 7 => {
            let Some(s) = stream_ref(ctx, &key)? else {
                return Err(CmdError::NoSuchKey);
            };
            let id_arg = &argv[4];
            let id = if id_arg.as_ref() == b"$" {
                s.last_id()
            } else {
                parse_id(id_arg, 0).map_err(|_| invalid_id())?
            };
            let log = s.with_groups(|_, groups| {
                groups.get_mut(&gname).map(|g| {
                    g.set_last_id(id, entries_read);
                    setid_effect(&key, &gname, g)
                })
            });
            let Some(log) = log else {
                return Err(no_group_for_key(&gname, &key));
            };
            ctx.propagate(log);
            ctx.store.dirty += 1;
            ctx.notify(NOTIFY_STREAM, "xgroup-setid", &key);
            Ok(Reply::ok())
        }
        b"DESTROY" if argc == 4 => {
            let Some(s) = stream_ref(ctx, &key)? else {
                return Err(CmdError::NoSuchKey);
            };
            let removed = s.with_groups(|_, groups| groups.remove(&gname));
            if !removed {
                ctx.propagate_nothing();
                return Ok(Reply::Int(0));
            }
            ctx.store.dirty += 1;
            // Blocked XREADGROUP clients get -NOGROUP; WATCH is not touched.
            let db = ctx.client.db;
            ctx.store.signal_ready(db, &key);
            ctx.notify(NOTIFY_STREAM, "xgroup-destroy", &key);
            Ok(Reply::Int(1))
        }
        b"CREATECONSUMER" if argc == 5 => {
            let cname = argv[4].clone();
            let Some(s) = stream_ref(ctx, &key)? else {
                return Err(CmdError::NoSuchKey);
            };
            let created = s.with_groups(|_, groups| {
                groups
                    .get_mut(&gname)
                    .map(|g| g.create_consumer(&cname, now).1)
            });
            match created {
                Some(true) => {
                    ctx.store.dirty += 1;
                    ctx.notify(NOTIFY_STREAM, "xgroup-createconsumer", &key);
                    Ok(Reply::Int(1))
                }
                Some(false) => {
                    ctx.propagate_nothing();
                    Ok(Reply::Int(0))
                }
                None => Err(no_group_for_key(&gname, &key)),
            }
        }
        b"DELCONSUMER" if argc == 5 => {
            let cname = argv[4].clone();
            let Some(s) = stream_ref(ctx, &key)? else {
                return Err(CmdError::NoSuchKey);
            };
            let deleted = s
                .with_groups(|_, groups| groups.get_mut(&gname).map(|g| g.delete_consumer(&cname)));
            match deleted {
                Some(Some(n)) => {
                    ctx.store.dirty += 1;
                    ctx.notify(NOTIFY_STREAM, "xgroup-delconsumer", &key);
                    Ok(Reply::Int(n as i64))
                }
                Some(None) => {
                    ctx.propagate_nothing();
                    Ok(Reply::Int(0))
                }
                None => Err(no_group_for_key(&gname, &key)),
            }
        }
        _ => Err(xgroup_syntax(&argv[1])),
    }
}

fn xgroup_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "XGROUP",
        &[
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
        ],
    ))
}

// ---- XACK -------------------------------------------------------------------

fn xack(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let gname = a.next_bytes()?;
    let Some(s) = stream_ref(ctx, &key)? else {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    };
    if s.group(&gname).is_none() {
        ctx.propagate_nothing();
        return Ok(Reply::Int(0));
    }
    let ids = a
        .rest()
        .iter()
        .map(|x| parse_strict_id(x, 0).map_err(|_| invalid_id()))
        .collect::<Result<Vec<_>, _>>()?;
    let acked = s.with_groups(|_, groups| {
        groups
            .get_mut(&gname)
            .map_or(0, |g| ids.iter().filter(|&&id| g.ack(id)).count())
    });
    if acked == 0 {
        ctx.propagate_nothing();
    } else {
        ctx.store.dirty += acked as u64;
    }
    Ok(Reply::Int(acked as i64))
}

// ---- XPENDING ---------------------------------------------------------------

pub(crate) fn range_start(arg: &[u8]) -> Result<StreamId, CmdError> {
    let (id, exclusive) = parse_interval_id(arg, 0).map_err(|_| invalid_id())?;
    if exclusive {
        id.incr()
            .ok_or_else(|| CmdError::err("invalid start ID for the interval"))
    } else {
        Ok(id)
    }
}

fn range_end(arg: &[u8]) -> Result<StreamId, CmdError> {
    let (id, exclusive) = parse_interval_id(arg, u64::MAX).map_err(|_| invalid_id())?;
    if exclusive {
        id.decr()
            .ok_or_else(|| CmdError::err("invalid end ID for the interval"))
    } else {
        Ok(id)
    }
}

fn xpending(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let argv = a.all().to_vec();
    let argc = argv.len();
    let key = &argv[1];
    let gname = &argv[2];
    let justinfo = argc == 3;
    if argc != 3 && !(6..=9).contains(&argc) {
        return Err(CmdError::Syntax);
    }
    let mut start = StreamId::MIN;
    let mut end = StreamId::MAX;
    let mut count: i64 = 0;
    let mut min_idle: i64 = 0;
    let mut consumer_name: Option<&Bytes> = None;
    if argc >= 6 {
        let mut at = 3;
        if argv[3].eq_ignore_ascii_case(b"IDLE") {
            min_idle = parse_i64(&argv[4]).ok_or(CmdError::NotInteger)?;
            if argc < 8 {
                return Err(CmdError::Syntax);
            }
            at += 2;
        }
        count = parse_i64(&argv[at + 2]).ok_or(CmdError::NotInteger)?.max(0);
        start = range_start(&argv[at])?;
        end = range_end(&argv[at + 1])?;
        consumer_name = argv.get(at + 3);
    }
    let now = ctx.now_ms as i64;
    let Some(s) = stream_ref(ctx, key)? else {
        return Err(no_key_or_group(key, gname));
    };
    let Some(g) = s.group(gname) else {
        return Err(no_key_or_group(key, gname));
    };
    if justinfo {
        let n = g.pending_count();
        let (Some(first), Some(last)) = (g.first_pending(), g.last_pending()) else {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Null,
                Reply::Null,
                Reply::NullArray,
            ]));
        };
        let consumers = g
            .consumers()
            .filter(|c| c.pending_count() > 0)
            .map(|c| {
                Reply::Array(vec![
                    Reply::Bulk(c.name().clone()),
                    Reply::Bulk(num(c.pending_count())),
                ])
            })
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(n as i64),
            id_reply(first),
            id_reply(last),
            Reply::Array(consumers),
        ]));
    }
    let consumer = match consumer_name {
        Some(name) => match g.consumer_id(name) {
            Some(c) => Some(c),
            None => return Ok(Reply::Array(vec![])),
        },
        None => None,
    };
    let iter: Box<dyn Iterator<Item = PendingEntry> + '_> = match consumer {
        Some(c) => Box::new(g.consumer_pending_range(c, start, end)),
        None => Box::new(g.pending_range(start, end)),
    };
    let mut out = Vec::new();
    for p in iter {
        if count == 0 {
            break;
        }
        let idle = now.wrapping_sub(p.delivery_time as i64);
        if min_idle != 0 && idle < min_idle {
            continue;
        }
        count -= 1;
        out.push(Reply::Array(vec![
            id_reply(p.id),
            Reply::Bulk(g.consumer_name(p.consumer).clone()),
            Reply::Int(idle.max(0)),
            Reply::Int(p.delivery_count as i64),
        ]));
    }
    Ok(Reply::Array(out))
}

// ---- XCLAIM -----------------------------------------------------------------

/// The delivery time XCLAIM/XAUTOCLAIM sets: `now` unless a valid
/// IDLE/TIME moved it (Redis resets bogus values to now).
fn clamp_time(t: Option<i64>, now: i64) -> u64 {
    match t {
        Some(t) if (0..=now).contains(&t) => t as u64,
        _ => now.max(0) as u64,
    }
}

fn xclaim(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let argv = a.all().to_vec();
    let argc = argv.len();
    let key = argv[1].clone();
    let gname = argv[2].clone();
    let cname = argv[3].clone();
    {
        let Some(s) = stream_ref(ctx, &key)? else {
            return Err(no_key_or_group(&key, &gname));
        };
        if s.group(&gname).is_none() {
            return Err(no_key_or_group(&key, &gname));
        }
    }
    let min_idle = parse_ll_or(&argv[4], "Invalid min-idle-time argument for XCLAIM")?.max(0);
    let now = ctx.now_ms as i64;
    // IDs first: they end at the first argument that does not parse.
    let mut j = 5;
    let mut ids = Vec::new();
    while j < argc {
        match parse_strict_id(&argv[j], 0) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let mut force = false;
    let mut justid = false;
    let mut time: Option<i64> = None;
    let mut retry: i64 = -1;
    let mut last_id = StreamId::MIN;
    while j < argc {
        let more = argc - 1 - j;
        let opt = &argv[j];
        if opt.eq_ignore_ascii_case(b"FORCE") {
            force = true;
        } else if opt.eq_ignore_ascii_case(b"JUSTID") {
            justid = true;
        } else if opt.eq_ignore_ascii_case(b"IDLE") && more > 0 {
            j += 1;
            let idle = parse_ll_or(&argv[j], "Invalid IDLE option argument for XCLAIM")?;
            time = Some(now.wrapping_sub(idle));
        } else if opt.eq_ignore_ascii_case(b"TIME") && more > 0 {
            j += 1;
            time = Some(parse_ll_or(
                &argv[j],
                "Invalid TIME option argument for XCLAIM",
            )?);
        } else if opt.eq_ignore_ascii_case(b"RETRYCOUNT") && more > 0 {
            j += 1;
            retry = parse_ll_or(&argv[j], "Invalid RETRYCOUNT option argument for XCLAIM")?;
        } else if opt.eq_ignore_ascii_case(b"LASTID") && more > 0 {
            j += 1;
            last_id = parse_strict_id(&argv[j], 0).map_err(|_| invalid_id())?;
        } else {
            return Err(raw_error(&[
                b"ERR Unrecognized XCLAIM option '",
                cstr(opt),
                b"'",
            ]));
        }
        j += 1;
    }
    let opts = ClaimOptions {
        min_idle,
        delivery_time: clamp_time(time, now),
        retry_count: u64::try_from(retry).ok(),
        force,
        justid,
    };
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(no_key_or_group(&key, &gname));
    };
    let (reply, effects) = s.with_groups(|s, groups| {
        let Some(g) = groups.get_mut(&gname) else {
            return (Err(no_key_or_group(&key, &gname)), Vec::new());
        };
        let moved = g.advance_last_id(last_id);
        let mut effects = Vec::new();
        let mut claimed_any = false;
        let mut consumer = None;
        let mut out = Vec::new();
        for &id in &ids {
            match g.claim(s, id, &cname, &mut consumer, &opts, now as u64) {
                ClaimOutcome::Claimed(p) => {
                    out.push(if justid {
                        id_reply(id)
                    } else {
                        s.get(id).map_or(Reply::Null, entry_reply)
                    });
                    effects.push(xclaim_effect(&key, &gname, g, &p, g.last_id()));
                    claimed_any = true;
                }
                ClaimOutcome::Deleted => effects.push(xack_effect(&key, &gname, id)),
                ClaimOutcome::Skipped => {}
            }
        }
        if moved && !claimed_any {
            effects.push(setid_effect(&key, &gname, g));
        }
        (Ok(Reply::Array(out)), effects)
    });
    ctx.store.dirty += effects.len() as u64;
    ctx.propagate_nothing();
    for e in effects {
        ctx.propagate(e);
    }
    reply
}

// ---- XAUTOCLAIM -------------------------------------------------------------

fn xautoclaim(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let argv = a.all().to_vec();
    let argc = argv.len();
    let key = argv[1].clone();
    let gname = argv[2].clone();
    let cname = argv[3].clone();
    let min_idle = parse_ll_or(&argv[4], "Invalid min-idle-time argument for XAUTOCLAIM")?.max(0);
    let start = range_start(&argv[5])?;
    let mut count: i64 = 100;
    let mut justid = false;
    // LONG_MAX / max(sizeof(streamID), attempts factor 10).
    const MAX_COUNT: i64 = i64::MAX / 16;
    let mut j = 6;
    while j < argc {
        let more = argc - 1 - j;
        if argv[j].eq_ignore_ascii_case(b"COUNT") && more > 0 {
            count = match parse_i64(&argv[j + 1]) {
                Some(n) if (1..=MAX_COUNT).contains(&n) => n,
                _ => return Err(CmdError::err("COUNT must be > 0")),
            };
            j += 1;
        } else if argv[j].eq_ignore_ascii_case(b"JUSTID") {
            justid = true;
        } else {
            return Err(CmdError::Syntax);
        }
        j += 1;
    }
    let now = ctx.now_ms;
    let Some(s) = stream_ref(ctx, &key)? else {
        return Err(no_key_or_group(&key, &gname));
    };
    if s.group(&gname).is_none() {
        return Err(no_key_or_group(&key, &gname));
    }
    // Redis allocates COUNT stream IDs (16 bytes each) up front and fails
    // when the allocation does; with a 47-bit address space that happens
    // from 2^47 bytes on. Ferrite allocates nothing per COUNT, but answers
    // alike so that clients see the same limit.
    if (count as u128) * 16 >= 1u128 << 47 {
        return Err(CmdError::err(
            "Insufficient memory, failed allocating transient memory, COUNT too high.",
        ));
    }
    let (reply, effects) = s.with_groups(|s, groups| {
        let Some(g) = groups.get_mut(&gname) else {
            return (Err(no_key_or_group(&key, &gname)), Vec::new());
        };
        let opts = ClaimOptions {
            min_idle,
            delivery_time: now,
            retry_count: None,
            force: false,
            justid,
        };
        let r = g.autoclaim(s, &cname, start, count as u64, &opts, now);
        let mut effects = Vec::new();
        let mut claimed = Vec::with_capacity(r.claimed.len());
        for p in &r.claimed {
            claimed.push(if justid {
                id_reply(p.id)
            } else {
                s.get(p.id).map_or(Reply::Null, entry_reply)
            });
            effects.push(xclaim_effect(&key, &gname, g, p, g.last_id()));
        }
        for &id in &r.deleted {
            effects.push(xack_effect(&key, &gname, id));
        }
        let reply = Reply::Array(vec![
            id_reply(r.next),
            Reply::Array(claimed),
            Reply::Array(r.deleted.iter().map(|&id| id_reply(id)).collect()),
        ]);
        (Ok(reply), effects)
    });
    ctx.store.dirty += effects.len() as u64;
    ctx.propagate_nothing();
    for e in effects {
        ctx.propagate(e);
    }
    reply
}
