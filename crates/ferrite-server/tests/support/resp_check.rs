//! Checks that a [`Reply`]'s RESP2 and RESP3 encodings are each exactly one
//! well-formed frame with the reply's shape and contents:
//!
//! - decoded by the `redis-protocol` crate (an independent decoder), which
//!   must consume every byte; for RESP2 its frame is compared with the reply;
//! - decoded by the strict, order-preserving decoder below (`redis-protocol`
//!   puts RESP3 maps and sets in hash containers), compared exactly.
//!
//! Shared by `tests/fuzz_replay.rs` and the fuzz target
//! `fuzz/fuzz_targets/commands.rs` (which includes this file with `#[path]`),
//! so it only uses `ferrite_db`, `bytes` and `redis_protocol`.

use bytes::{Bytes, BytesMut};
use ferrite_db::reply::{format_double, Reply};
use redis_protocol::resp2::types::RangeFrame as F2;

/// Check `reply` (the answer to `argv`) in both protocol versions.
pub fn check_reply(argv: &[Bytes], reply: &Reply) {
    for resp in [2u8, 3] {
        let mut out = BytesMut::new();
        reply.encode(resp, &mut out);
        let fail = |what: String| -> ! {
            panic!(
                "{what}\nin the RESP{resp} encoding of the reply to {:?}:\n{:?}\nreply: {reply:?}",
                argv.iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&out)
            )
        };
        // The strict decoder: exactly one frame, equal to the reply.
        let mut pos = 0;
        match frame(&out, &mut pos, resp) {
            Ok(t) if pos == out.len() => {
                if let Err(e) = same(reply, &t, resp) {
                    fail(e);
                }
            }
            Ok(_) => fail(format!("{} trailing bytes", out.len() - pos)),
            Err(e) => fail(format!("malformed at byte {pos}: {e}")),
        }
        // redis-protocol: one frame, every byte.
        if resp == 2 {
            match redis_protocol::resp2::decode::decode_range(&out) {
                Ok(Some((f, used))) if used == out.len() => {
                    if let Err(e) = same2(reply, &f, &out) {
                        fail(format!("redis-protocol: {e}"));
                    }
                }
                other => fail(format!("redis-protocol: not one frame: {other:?}")),
            }
        } else {
            match redis_protocol::resp3::decode::complete::decode_range(&out) {
                Ok(Some((_, used))) if used == out.len() => {}
                // redis-protocol keeps sets and maps in hash containers, so it
                // refuses aggregate set members and map keys, which RESP3 allows
                // and Redis sends (COMMAND's key specs are a set of maps).
                Err(e)
                    if (e.details().contains("hash key") || e.details().contains("map key"))
                        && has_aggregate_member(reply) => {}
                other => fail(format!("redis-protocol: not one frame: {other:?}")),
            }
        }
    }
}

fn is_aggregate(r: &Reply) -> bool {
    matches!(
        r,
        Reply::Array(_) | Reply::Map(_) | Reply::KeyedArray(_) | Reply::Set(_) | Reply::Push(_)
    )
}

/// A set member or map key that is itself an aggregate, at any depth.
fn has_aggregate_member(r: &Reply) -> bool {
    match r {
        Reply::Set(v) => v.iter().any(|x| is_aggregate(x) || has_aggregate_member(x)),
        Reply::Array(v) | Reply::Push(v) => v.iter().any(has_aggregate_member),
        Reply::Map(m) | Reply::KeyedArray(m) => m
            .iter()
            .any(|(k, v)| is_aggregate(k) || has_aggregate_member(k) || has_aggregate_member(v)),
        _ => false,
    }
}

/// A decoded frame, in wire order.
#[derive(Debug)]
enum T {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    /// RESP2 `$-1`.
    NullBulk,
    /// RESP2 `*-1`.
    NullArray,
    /// RESP3 `_`.
    Null,
    Double(f64),
    Bool(bool),
    Verbatim(Vec<u8>, Vec<u8>),
    Array(Vec<T>),
    Map(Vec<(T, T)>),
    Set(Vec<T>),
    Push(Vec<T>),
}

/// A line up to CRLF; neither CR nor LF may appear inside it.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let rest = &buf[*pos..];
    let end = rest
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .ok_or("unterminated line")?;
    if rest.get(end..end + 2) != Some(b"\r\n") {
        return Err("line not ended by CRLF".into());
    }
    *pos += end + 2;
    Ok(&rest[..end])
}

/// A decimal integer as Redis writes them: optional `-`, no `+`, no
/// leading zeros.
fn int(s: &[u8]) -> Result<i64, String> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && s != b"-0";
    let v = std::str::from_utf8(s).ok().and_then(|t| t.parse().ok());
    match v {
        Some(v) if canonical => Ok(v),
        _ => Err(format!("bad integer {:?}", String::from_utf8_lossy(s))),
    }
}

fn blob(buf: &[u8], pos: &mut usize, n: i64) -> Result<Vec<u8>, String> {
    let n = usize::try_from(n).map_err(|_| "negative length")?;
    let data = buf
        .get(*pos..*pos + n)
        .ok_or("blob shorter than its length")?
        .to_vec();
    *pos += n;
    if buf.get(*pos..*pos + 2) != Some(b"\r\n") {
        return Err("blob not followed by CRLF".into());
    }
    *pos += 2;
    Ok(data)
}

fn frames(buf: &[u8], pos: &mut usize, n: i64, resp: u8) -> Result<Vec<T>, String> {
    let n = usize::try_from(n).map_err(|_| "negative length")?;
    if n > buf.len() {
        return Err("more elements than bytes".into());
    }
    (0..n).map(|_| frame(buf, pos, resp)).collect()
}

/// Decode one frame of protocol `resp`, rejecting the other version's types.
fn frame(buf: &[u8], pos: &mut usize, resp: u8) -> Result<T, String> {
    let tag = *buf.get(*pos).ok_or("missing frame")?;
    *pos += 1;
    let l = line(buf, pos)?;
    let v3 = resp == 3;
    Ok(match tag {
        b'+' => T::Simple(l.to_vec()),
        b'-' => T::Error(l.to_vec()),
        b':' => T::Int(int(l)?),
        b'$' if l == b"-1" && !v3 => T::NullBulk,
        b'$' => T::Bulk(blob(buf, pos, int(l)?)?),
        b'*' if l == b"-1" && !v3 => T::NullArray,
        b'*' => T::Array(frames(buf, pos, int(l)?, resp)?),
        b'_' if v3 && l.is_empty() => T::Null,
        b',' if v3 => {
            let s = std::str::from_utf8(l).map_err(|_| "double not UTF-8")?;
            T::Double(s.parse().map_err(|_| format!("bad double {s:?}"))?)
        }
        b'#' if v3 && l == b"t" => T::Bool(true),
        b'#' if v3 && l == b"f" => T::Bool(false),
        b'=' if v3 => {
            let data = blob(buf, pos, int(l)?)?;
            if data.len() < 4 || data[3] != b':' {
                return Err("verbatim string without a format".into());
            }
            T::Verbatim(data[..3].to_vec(), data[4..].to_vec())
        }
        b'%' if v3 => {
            let n = int(l)?;
            let flat = frames(buf, pos, n.checked_mul(2).ok_or("map too long")?, resp)?;
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            T::Map(pairs)
        }
        b'~' if v3 => T::Set(frames(buf, pos, int(l)?, resp)?),
        b'>' if v3 => T::Push(frames(buf, pos, int(l)?, resp)?),
        other => return Err(format!("type byte {:?} in RESP{resp}", other as char)),
    })
}

/// Status and error lines have CR and LF replaced by spaces on the wire.
fn line_bytes(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
        .collect()
}

fn eq_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: decoded {:?}, expected {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        ))
    }
}

fn all(v: &[Reply], t: &[T], resp: u8) -> Result<(), String> {
    v.iter().zip(t).try_for_each(|(r, t)| same(r, t, resp))
}

/// Is `t` exactly what `r` encodes to in protocol `resp`?
fn same(r: &Reply, t: &T, resp: u8) -> Result<(), String> {
    let v3 = resp == 3;
    match (r, t) {
        // Pre-encoded entries: the decoders already proved them one whole frame.
        (Reply::Raw(_), _) => Ok(()),
        (Reply::Simple(s), T::Simple(g)) => eq_bytes("status", g, &line_bytes(s)),
        (Reply::Error(s), T::Error(g)) => eq_bytes("error", g, &line_bytes(s)),
        (Reply::Int(n), T::Int(g)) if n == g => Ok(()),
        (Reply::Bulk(b), T::Bulk(g)) => eq_bytes("bulk", g, b),
        (Reply::Null, T::NullBulk) | (Reply::NullArray, T::NullArray) if !v3 => Ok(()),
        (Reply::Null | Reply::NullArray, T::Null) if v3 => Ok(()),
        (Reply::Double(d), T::Bulk(g)) if !v3 => {
            eq_bytes("double", g, format_double(*d).as_bytes())
        }
        (Reply::Double(d), T::Double(g)) if v3 && (d == g || (d.is_nan() && g.is_nan())) => Ok(()),
        (Reply::Bool(b), T::Int(g)) if !v3 && *g == *b as i64 => Ok(()),
        (Reply::Bool(b), T::Bool(g)) if v3 && b == g => Ok(()),
        (Reply::Verbatim(b), T::Bulk(g)) if !v3 => eq_bytes("verbatim", g, b),
        (Reply::Verbatim(b), T::Verbatim(f, g)) if v3 && f == b"txt" => eq_bytes("verbatim", g, b),
        (Reply::Array(v), T::Array(g)) if v.len() == g.len() => all(v, g, resp),
        (Reply::Set(v) | Reply::Push(v), T::Array(g)) if !v3 && v.len() == g.len() => {
            all(v, g, resp)
        }
        (Reply::Set(v), T::Set(g)) | (Reply::Push(v), T::Push(g)) if v.len() == g.len() => {
            all(v, g, resp)
        }
        (Reply::Map(m), T::Array(g)) if !v3 && 2 * m.len() == g.len() => {
            m.iter().zip(g.chunks(2)).try_for_each(|((k, v), f)| {
                same(k, &f[0], resp)?;
                same(v, &f[1], resp)
            })
        }
        // XREAD's shape: RESP2 `[key, value]` pairs, RESP3 a map.
        (Reply::KeyedArray(m), T::Array(g)) if !v3 && m.len() == g.len() => {
            m.iter().zip(g).try_for_each(|((k, v), pair)| match pair {
                T::Array(kv) if kv.len() == 2 => {
                    same(k, &kv[0], resp)?;
                    same(v, &kv[1], resp)
                }
                other => Err(format!("decoded {other:?}, expected a [key, value] pair")),
            })
        }
        (Reply::Map(m) | Reply::KeyedArray(m), T::Map(g)) if v3 && m.len() == g.len() => {
            m.iter().zip(g).try_for_each(|((k, v), (gk, gv))| {
                same(k, gk, resp)?;
                same(v, gv, resp)
            })
        }
        _ => Err(format!("decoded {t:?}, expected {r:?}")),
    }
}

/// The `redis-protocol` RESP2 frame against the reply.
fn same2(r: &Reply, f: &F2, buf: &[u8]) -> Result<(), String> {
    let at = |(s, e): &(usize, usize)| &buf[*s..*e];
    match (r, f) {
        (Reply::Raw(_), _) => Ok(()),
        (Reply::Simple(s), F2::SimpleString(g)) => eq_bytes("status", at(g), &line_bytes(s)),
        (Reply::Error(s), F2::Error(g)) => eq_bytes("error", at(g), &line_bytes(s)),
        (Reply::Int(n), F2::Integer(g)) if n == g => Ok(()),
        (Reply::Bool(b), F2::Integer(g)) if *g == *b as i64 => Ok(()),
        (Reply::Bulk(b) | Reply::Verbatim(b), F2::BulkString(g)) => eq_bytes("bulk", at(g), b),
        (Reply::Double(d), F2::BulkString(g)) => {
            eq_bytes("double", at(g), format_double(*d).as_bytes())
        }
        (Reply::Null | Reply::NullArray, F2::Null) => Ok(()),
        (Reply::Array(v) | Reply::Set(v) | Reply::Push(v), F2::Array(g)) if v.len() == g.len() => {
            v.iter().zip(g).try_for_each(|(r, f)| same2(r, f, buf))
        }
        (Reply::KeyedArray(m), F2::Array(g)) if m.len() == g.len() => {
            m.iter().zip(g).try_for_each(|((k, v), pair)| match pair {
                F2::Array(kv) if kv.len() == 2 => {
                    same2(k, &kv[0], buf)?;
                    same2(v, &kv[1], buf)
                }
                other => Err(format!("RESP2 frame {other:?} is not a [key, value] pair")),
            })
        }
        (Reply::Map(m), F2::Array(g)) if 2 * m.len() == g.len() => {
            m.iter().zip(g.chunks(2)).try_for_each(|((k, v), f)| {
                same2(k, &f[0], buf)?;
                same2(v, &f[1], buf)
            })
        }
        _ => Err(format!("RESP2 frame {f:?} does not match {r:?}")),
    }
}
