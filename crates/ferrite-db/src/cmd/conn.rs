//! Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, RESET.

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::reply::Reply;
use crate::store::ClientInfo;
use bytes::Bytes;

pub const COMMANDS: &[(&str, Handler)] = &[
    ("ping", ping),
    ("echo", echo),
    ("hello", hello),
    ("auth", auth),
    ("select", select),
    ("quit", quit),
    ("reset", reset),
    ("client|id", client_id),
    ("client|setname", client_setname),
    ("client|getname", client_getname),
    ("client|info", client_info),
    ("client|list", client_list),
    ("client|kill", client_kill),
    ("client|help", client_help),
    ("client|reply", client_reply),
    ("client|pause", client_pause),
    ("client|unpause", client_unpause),
    ("client|setinfo", client_setinfo),
    ("client|unblock", client_unblock),
    ("client|no-touch", client_no_touch),
    ("monitor", monitor),
];

/// `CLIENT REPLY ON|OFF|SKIP` (the connection leaves out the replies).
fn client_reply(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let v = a.next_bytes()?;
    if v.eq_ignore_ascii_case(b"on") {
        ctx.client.reply_off = false;
        ctx.client.reply_skip = false;
        ctx.client.reply_skip_next = false;
    } else if v.eq_ignore_ascii_case(b"off") {
        ctx.client.reply_off = true;
    } else if v.eq_ignore_ascii_case(b"skip") {
        // Its own reply is not sent either (Redis adds none).
        ctx.client.reply_skip = true;
        if !ctx.client.reply_off {
            ctx.client.reply_skip_next = true;
        }
    } else {
        return Err(CmdError::Syntax);
    }
    Ok(Reply::ok())
}

/// `CLIENT PAUSE timeout [WRITE|ALL]`: connections hold their commands
/// (all of them, or those that write) until the timeout or CLIENT UNPAUSE;
/// a pause in force is only extended or made stricter, as Redis does.
fn client_pause(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let ms = crate::args::parse_i64(&a.next_bytes()?).ok_or(CmdError::TimeoutNotInteger)?;
    if ms < 0 {
        return Err(CmdError::TimeoutNegative);
    }
    let all = match a.remaining() {
        0 => true,
        _ => {
            let m = a.next_bytes()?;
            if m.eq_ignore_ascii_case(b"all") {
                true
            } else if m.eq_ignore_ascii_case(b"write") {
                false
            } else {
                return Err(CmdError::err("CLIENT PAUSE mode must be WRITE or ALL"));
            }
        }
    };
    a.finish()?;
    use std::sync::atomic::Ordering;
    let until = ctx.now_ms.saturating_add(ms as u64);
    let sh = ctx.shared;
    let active = sh.paused(ctx.now_ms);
    if active.is_none() {
        sh.pause_all.store(all, Ordering::Release);
    } else if all {
        sh.pause_all.store(true, Ordering::Release);
    }
    sh.pause_until.fetch_max(until, Ordering::AcqRel);
    Ok(Reply::ok())
}

fn client_unpause(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    ctx.shared
        .pause_until
        .store(0, std::sync::atomic::Ordering::Release);
    ctx.shared.unpause.notify_waiters();
    Ok(Reply::ok())
}

/// `MONITOR`: from now on the connection receives every command the
/// server runs (but admin commands and AUTH-like ones, as Redis).
fn monitor(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    if ctx.in_exec {
        // Inside EXEC a client expects one reply per command.
        return Err(CmdError::err(
            "MONITOR isn't allowed for DENY BLOCKING client",
        ));
    }
    let id = ctx.client.id;
    if ctx.store.monitors.iter().any(|(c, _)| *c == id) {
        // Redis ignores a second MONITOR without a reply.
        ctx.client.reply_skip = true;
        return Ok(Reply::ok());
    }
    let Some(outbox) = ctx.store.clients.get(&id).and_then(|c| c.outbox.clone()) else {
        return Err(CmdError::err("MONITOR needs a network connection"));
    };
    ctx.store.monitors.push((id, outbox));
    Ok(Reply::ok())
}

/// The version Ferrite reports where clients check Redis's version.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

fn ping(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    // Redis: a subscribed RESP2 client gets ["pong", message-or-""].
    if ctx.client.resp == 2 && a.remaining() <= 1 && ctx.store.pubsub.count(ctx.client.id) > 0 {
        let msg = match a.remaining() {
            0 => Bytes::new(),
            _ => a.next_bytes()?,
        };
        return Ok(Reply::Array(vec![
            Reply::bulk_str("pong"),
            Reply::Bulk(msg),
        ]));
    }
    match a.remaining() {
        0 => Ok(Reply::simple("PONG")),
        1 => Ok(Reply::Bulk(a.next_bytes()?)),
        _ => Err(CmdError::WrongArity("ping".into())),
    }
}

fn echo(_ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Bulk(a.next_bytes()?))
}

/// Client names: printable ASCII without spaces (Redis's validateClientName).
fn valid_name(n: &[u8]) -> Result<(), CmdError> {
    if n.iter().all(|&c| (b'!'..=b'~').contains(&c)) {
        Ok(())
    } else {
        Err(CmdError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

/// Check a password for `user` against `requirepass` (only the default user exists).
fn check_auth(ctx: &Ctx, user: &[u8], pass: &[u8]) -> bool {
    let cfg = ctx.shared.config.read();
    user == b"default" && (cfg.requirepass.is_empty() || cfg.requirepass.as_bytes() == pass)
}

fn hello(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut ver = None;
    if a.remaining() >= 1 {
        let v = parse_i64(&a.next_bytes()?)
            .ok_or_else(|| CmdError::err("Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&v) {
            return Err(CmdError::Other(
                "NOPROTO unsupported protocol version".into(),
            ));
        }
        ver = Some(v as u8);
    }
    let mut creds = None;
    let mut setname = None;
    while let Some(opt) = a.peek().cloned() {
        a.skip(1);
        if opt.eq_ignore_ascii_case(b"AUTH") && a.remaining() >= 2 {
            creds = Some((a.next_bytes()?, a.next_bytes()?));
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && a.remaining() >= 1 {
            let n = a.next_bytes()?;
            valid_name(&n)?;
            setname = Some(n);
        } else {
            return Err(CmdError::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&opt)
            )));
        }
    }
    if let Some((user, pass)) = creds {
        if !check_auth(ctx, &user, &pass) {
            return Err(CmdError::WrongPass);
        }
        ctx.client.authenticated = true;
    }
    if !ctx.client.authenticated {
        return Err(CmdError::Other(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        ));
    }
    if let Some(n) = setname {
        set_name(ctx, n);
    }
    if let Some(v) = ver {
        ctx.client.resp = v;
        if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
            c.resp = v;
        }
    }
    let kv = |k: &str, v: Reply| (Reply::bulk_str(k), v);
    Ok(Reply::Map(vec![
        kv("server", Reply::bulk_str("redis")),
        kv("version", Reply::bulk_str(REDIS_COMPAT_VERSION)),
        kv("proto", Reply::Int(ctx.client.resp as i64)),
        kv("id", Reply::Int(ctx.client.id as i64)),
        kv("mode", Reply::bulk_str("standalone")),
        kv("role", Reply::bulk_str("master")),
        kv("modules", Reply::Array(vec![])),
    ]))
}

fn auth(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let (user, pass) = match a.remaining() {
        1 => {
            if ctx.shared.config.read().requirepass.is_empty() {
                return Err(CmdError::err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
            }
            (Bytes::from_static(b"default"), a.next_bytes()?)
        }
        2 => (a.next_bytes()?, a.next_bytes()?),
        _ => return Err(CmdError::Syntax),
    };
    if check_auth(ctx, &user, &pass) {
        ctx.client.authenticated = true;
        Ok(Reply::ok())
    } else {
        Err(CmdError::WrongPass)
    }
}

fn select(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let id = a.next_i64()?;
    if id < i32::MIN as i64 || id > i32::MAX as i64 {
        return Err(CmdError::NotInteger);
    }
    if id < 0 || id as usize >= ctx.store.dbs.len() {
        return Err(CmdError::DbIndexOutOfRange);
    }
    ctx.client.db = id as usize;
    Ok(Reply::ok())
}

fn quit(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    ctx.client.close_after_reply = true;
    Ok(Reply::ok())
}

fn reset(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let watched = std::mem::take(&mut ctx.client.watched);
    ctx.store.unwatch_all(ctx.client.id, &watched);
    ctx.client.multi = None;
    ctx.client.multi_error = false;
    ctx.store.pubsub.remove_client(ctx.client.id);
    let id = ctx.client.id;
    ctx.store.monitors.retain(|(c, _)| *c != id);
    ctx.client.reply_off = false;
    ctx.client.reply_skip_next = false;
    ctx.client.no_touch = false;
    ctx.client.db = 0;
    ctx.client.resp = 2;
    ctx.client.authenticated = ctx.shared.config.read().requirepass.is_empty();
    set_name(ctx, Bytes::new());
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.resp = 2;
        c.multi = -1;
        c.no_touch = false;
    }
    Ok(Reply::simple("RESET"))
}

fn set_name(ctx: &mut Ctx, name: Bytes) {
    ctx.client.name = name.clone();
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.name = name;
    }
}

fn client_id(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(Reply::Int(ctx.client.id as i64))
}

fn client_setname(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let n = a.next_bytes()?;
    valid_name(&n)?;
    set_name(ctx, n);
    Ok(Reply::ok())
}

fn client_getname(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    if ctx.client.name.is_empty() {
        Ok(Reply::Null)
    } else {
        Ok(Reply::Bulk(ctx.client.name.clone()))
    }
}

/// One CLIENT LIST line in Redis 7.0's field order.
fn describe(c: &ClientInfo, now_ms: u64, in_multi: bool, subs: (usize, usize)) -> String {
    let mut flags = String::new();
    if subs.0 + subs.1 > 0 {
        flags.push('P');
    }
    if c.blocked {
        flags.push('b');
    }
    if in_multi {
        flags.push('x');
    }
    if c.no_touch {
        flags.push('T');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd=8 name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={}",
        c.id,
        c.addr,
        c.laddr,
        String::from_utf8_lossy(&c.name),
        now_ms.saturating_sub(c.created_ms) / 1000,
        now_ms.saturating_sub(c.last_cmd_ms) / 1000,
        flags,
        c.db,
        subs.0,
        subs.1,
        c.multi,
        c.last_cmd,
        c.resp,
    ) + &lib_fields(c)
}

/// Redis 7.2's `lib-name=... lib-ver=...`, once a client set either with
/// CLIENT SETINFO (before that, the line is Redis 7.0's).
fn lib_fields(c: &ClientInfo) -> String {
    if c.lib_name.is_empty() && c.lib_ver.is_empty() {
        return String::new();
    }
    format!(
        " lib-name={} lib-ver={}",
        String::from_utf8_lossy(&c.lib_name),
        String::from_utf8_lossy(&c.lib_ver)
    )
}

/// CLIENT SETINFO LIB-NAME name | LIB-VER version (Redis 7.2; redis-py
/// and go-redis send it on connect).
fn client_setinfo(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let attr = a.next_bytes()?;
    let val = a.next_bytes()?;
    let lib_name = attr.eq_ignore_ascii_case(b"lib-name");
    if !lib_name && !attr.eq_ignore_ascii_case(b"lib-ver") {
        return Err(CmdError::err(format!(
            "Unrecognized option '{}'",
            String::from_utf8_lossy(&attr)
        )));
    }
    if !val.iter().all(|&c| (b'!'..=b'~').contains(&c)) {
        return Err(CmdError::err(format!(
            "{} cannot contain spaces, newlines or special characters.",
            String::from_utf8_lossy(&attr)
        )));
    }
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        if lib_name {
            c.lib_name = val;
        } else {
            c.lib_ver = val;
        }
    }
    Ok(Reply::ok())
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: a client blocked in BLPOP, XREAD
/// BLOCK, ... gets its timeout reply (or the UNBLOCKED error) now.
fn client_unblock(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let id_arg = a.next_bytes()?;
    // Redis checks the reason before the id.
    let error = match a.rest() {
        [] => false,
        [r] if r.eq_ignore_ascii_case(b"timeout") => false,
        [r] if r.eq_ignore_ascii_case(b"error") => true,
        [_] => {
            return Err(CmdError::err(
                "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ))
        }
        _ => {
            let sub = a.all().get(1).cloned().unwrap_or_default();
            return Err(CmdError::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                crate::error::sanitize_arg(&sub)
            )));
        }
    };
    let id = crate::args::parse_i64(&id_arg).ok_or(CmdError::NotInteger)?;
    let done = u64::try_from(id).is_ok_and(|id| ctx.store.unblock_client(id, error));
    Ok(Reply::Int(i64::from(done)))
}

/// CLIENT NO-TOUCH ON|OFF (Redis 7.2): whether this client's commands
/// count as accesses to their keys (OBJECT IDLETIME); TOUCH always does.
fn client_no_touch(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let v = a.next_bytes()?;
    let on = if v.eq_ignore_ascii_case(b"on") {
        true
    } else if v.eq_ignore_ascii_case(b"off") {
        false
    } else {
        return Err(CmdError::Syntax);
    };
    ctx.client.no_touch = on;
    if let Some(c) = ctx.store.clients.get_mut(&ctx.client.id) {
        c.no_touch = on;
    }
    Ok(Reply::ok())
}

fn client_info(ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    let in_multi = ctx.client.multi.is_some();
    let line = match ctx.store.clients.get(&ctx.client.id) {
        Some(c) => describe(
            c,
            ctx.now_ms,
            in_multi,
            ctx.store.pubsub.counts(ctx.client.id),
        ),
        None => String::new(),
    };
    Ok(Reply::Verbatim(Bytes::from(line + "\n")))
}

fn client_list(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let mut only: Option<Vec<u64>> = None;
    while a.remaining() > 0 {
        if a.eat("TYPE") {
            let t = a.next_bytes()?;
            if !t.eq_ignore_ascii_case(b"normal") {
                if [&b"master"[..], b"replica", b"slave", b"pubsub"]
                    .iter()
                    .any(|x| t.eq_ignore_ascii_case(x))
                {
                    only = Some(Vec::new());
                } else {
                    return Err(CmdError::err(format!(
                        "Unknown client type '{}'",
                        String::from_utf8_lossy(&t)
                    )));
                }
            }
        } else if a.eat("ID") {
            let mut ids = only.take().unwrap_or_default();
            if a.remaining() == 0 {
                return Err(CmdError::Syntax);
            }
            while a.remaining() > 0 {
                let id = a.next_i64()?;
                if id <= 0 {
                    return Err(CmdError::err("Invalid client ID"));
                }
                ids.push(id as u64);
            }
            only = Some(ids);
        } else {
            return Err(CmdError::Syntax);
        }
    }
    let mut out = String::new();
    for c in ctx.store.clients.values() {
        if only.as_ref().is_some_and(|ids| !ids.contains(&c.id)) {
            continue;
        }
        let in_multi = c.id == ctx.client.id && ctx.client.multi.is_some();
        out.push_str(&describe(
            c,
            ctx.now_ms,
            in_multi,
            ctx.store.pubsub.counts(c.id),
        ));
        out.push('\n');
    }
    Ok(Reply::Verbatim(Bytes::from(out)))
}

fn client_kill(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    // Old form: CLIENT KILL addr:port -> OK or "No such client".
    if a.remaining() == 1 {
        let addr = a.next_bytes()?;
        let target = ctx
            .store
            .clients
            .values()
            .find(|c| c.addr.as_bytes() == &addr[..])
            .map(|c| (c.id, c.kill.clone()));
        return match target {
            Some((id, kill)) => {
                kill_one(ctx, id, &kill);
                Ok(Reply::ok())
            }
            None => Err(CmdError::err("No such client")),
        };
    }
    let mut id_f = None;
    let mut addr_f = None;
    let mut laddr_f = None;
    let mut skipme = true;
    let mut type_none = false;
    while a.remaining() > 0 {
        if a.remaining() < 2 {
            return Err(CmdError::Syntax);
        }
        let opt = a.next_bytes()?;
        let val = a.next_bytes()?;
        if opt.eq_ignore_ascii_case(b"ID") {
            match parse_i64(&val) {
                Some(n) if n > 0 => id_f = Some(n as u64),
                _ => return Err(CmdError::err("client-id should be greater than 0")),
            }
        } else if opt.eq_ignore_ascii_case(b"ADDR") {
            addr_f = Some(val);
        } else if opt.eq_ignore_ascii_case(b"LADDR") {
            laddr_f = Some(val);
        } else if opt.eq_ignore_ascii_case(b"TYPE") {
            if val.eq_ignore_ascii_case(b"normal") {
            } else if [&b"master"[..], b"replica", b"slave", b"pubsub"]
                .iter()
                .any(|x| val.eq_ignore_ascii_case(x))
            {
                type_none = true;
            } else {
                return Err(CmdError::err(format!(
                    "Unknown client type '{}'",
                    String::from_utf8_lossy(&val)
                )));
            }
        } else if opt.eq_ignore_ascii_case(b"USER") {
            if &val[..] != b"default" {
                return Err(CmdError::err(format!(
                    "No such user '{}'",
                    String::from_utf8_lossy(&val)
                )));
            }
        } else if opt.eq_ignore_ascii_case(b"SKIPME") {
            if val.eq_ignore_ascii_case(b"yes") {
                skipme = true;
            } else if val.eq_ignore_ascii_case(b"no") {
                skipme = false;
            } else {
                return Err(CmdError::Syntax);
            }
        } else {
            return Err(CmdError::Syntax);
        }
    }
    if type_none {
        return Ok(Reply::Int(0));
    }
    let me = ctx.client.id;
    let targets: Vec<(u64, _)> = ctx
        .store
        .clients
        .values()
        .filter(|c| id_f.is_none_or(|i| c.id == i))
        .filter(|c| addr_f.as_ref().is_none_or(|x| c.addr.as_bytes() == &x[..]))
        .filter(|c| {
            laddr_f
                .as_ref()
                .is_none_or(|x| c.laddr.as_bytes() == &x[..])
        })
        .filter(|c| !(skipme && c.id == me))
        .map(|c| (c.id, c.kill.clone()))
        .collect();
    for (id, kill) in &targets {
        kill_one(ctx, *id, kill);
    }
    Ok(Reply::Int(targets.len() as i64))
}

fn kill_one(ctx: &mut Ctx, id: u64, kill: &std::sync::Arc<tokio::sync::Notify>) {
    if id == ctx.client.id {
        ctx.client.close_after_reply = true;
    } else {
        kill.notify_one();
    }
}

fn client_help(_ctx: &mut Ctx, _a: &mut Args) -> Result<Reply, CmdError> {
    Ok(help(
        "CLIENT",
        &[
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "    * ID <client-id>",
            "      Kill connections by client id.",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
        ],
    ))
}

/// Redis's `addReplyHelp`: a header line, the lines, and the HELP line.
pub fn help(cmd: &str, lines: &[&str]) -> Reply {
    let mut out = vec![Reply::Simple(Bytes::from(format!(
        "{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )))];
    out.extend(
        lines
            .iter()
            .map(|l| Reply::Simple(Bytes::copy_from_slice(l.as_bytes()))),
    );
    out.push(Reply::simple("HELP"));
    out.push(Reply::simple("    Prints this help."));
    Reply::Array(out)
}
