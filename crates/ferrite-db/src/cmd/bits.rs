//! Bit operations on strings: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP,
//! BITFIELD and BITFIELD_RO, as Redis 7.0's `bitops.c` (bit 0 is the most
//! significant bit of the first byte; a missing key is an empty string,
//! zero-padded on the right). Every write is deterministic and logged as
//! typed. Offsets are bounded by `proto-max-bulk-len`, as in Redis, so a
//! string grows at most to that size.

use super::{Ctx, Handler};
use crate::args::{parse_i64, Args};
use crate::error::CmdError;
use crate::pubsub::{NOTIFY_GENERIC, NOTIFY_STRING};
use crate::reply::Reply;
use crate::store::Value;
use bytes::{Bytes, BytesMut};

pub const COMMANDS: &[(&str, Handler)] = &[
    ("setbit", setbit),
    ("getbit", getbit),
    ("bitcount", bitcount),
    ("bitpos", bitpos),
    ("bitop", bitop),
    ("bitfield", bitfield),
    ("bitfield_ro", bitfield_ro),
];

const OFFSET_ERR: &str = "bit offset is not an integer or out of range";

/// A bit offset argument (Redis's `getBitOffsetFromArgument`): with `bits`
/// (BITFIELD), `#n` means `n * bits`.
fn bit_offset(ctx: &Ctx, arg: &[u8], bits: Option<u32>) -> Result<u64, CmdError> {
    let (hash, digits) = match (arg.first(), bits) {
        (Some(b'#'), Some(_)) => (true, &arg[1..]),
        _ => (false, arg),
    };
    let mut n = parse_i64(digits).ok_or_else(|| CmdError::err(OFFSET_ERR))?;
    if hash {
        n = n
            .checked_mul(i64::from(bits.unwrap_or(1)))
            .ok_or_else(|| CmdError::err(OFFSET_ERR))?;
    }
    let max = ctx.shared.config.read().proto_max_bulk_len;
    if n < 0 || (!ctx.store.loading && (n as u64 >> 3) >= max) {
        return Err(CmdError::err(OFFSET_ERR));
    }
    Ok(n as u64)
}

/// The string at `key` for reading: `None` if missing, WRONGTYPE otherwise.
fn read_string(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Bytes>, CmdError> {
    match ctx.db().get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CmdError::WrongType),
    }
}

/// The string at `key` to modify, created or zero-padded to hold bit
/// `max_bit` (Redis's `lookupStringForBitCommand`); taken out of the
/// keyspace without a copy when not shared, put back by [`put_back`].
fn string_for_bits(ctx: &mut Ctx, key: &Bytes, max_bit: u64) -> Result<BytesMut, CmdError> {
    let need = (max_bit >> 3) as usize + 1;
    let mut buf = match ctx.db().get_mut(key) {
        None => BytesMut::new(),
        Some(Value::String(s)) => {
            let b = std::mem::take(s);
            b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]))
        }
        Some(_) => return Err(CmdError::WrongType),
    };
    if buf.len() < need {
        buf.resize(need, 0);
    }
    Ok(buf)
}

/// Store a string modified in place (its time to live is kept: the key
/// is the same key).
fn put_back(ctx: &mut Ctx, key: &Bytes, buf: BytesMut) {
    ctx.db().insert(key.clone(), Value::String(buf.freeze()));
}

fn setbit(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let offset = bit_offset(ctx, &a.next_bytes()?, None)?;
    const BIT_ERR: &str = "bit is not an integer or out of range";
    let on = match parse_i64(&a.next_bytes()?) {
        Some(v @ (0 | 1)) => v == 1,
        _ => return Err(CmdError::err(BIT_ERR)),
    };
    let mut buf = string_for_bits(ctx, &key, offset)?;
    let byte = (offset >> 3) as usize;
    let mask = 1u8 << (7 - (offset & 7));
    let old = buf[byte] & mask != 0;
    if on {
        buf[byte] |= mask;
    } else {
        buf[byte] &= !mask;
    }
    put_back(ctx, &key, buf);
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "setbit", &key);
    Ok(Reply::Int(i64::from(old)))
}

fn getbit(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let offset = bit_offset(ctx, &a.next_bytes()?, None)?;
    let Some(s) = read_string(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let byte = (offset >> 3) as usize;
    let bit = s
        .get(byte)
        .is_some_and(|b| b & (1 << (7 - (offset & 7))) != 0);
    Ok(Reply::Int(i64::from(bit)))
}

/// A `start end [BYTE|BIT]` range resolved as Redis does: byte indexes
/// `start..=end` and the masks of the bits outside it in the edge bytes
/// (BIT ranges). `None`: the range is empty.
struct Range {
    start: usize,
    end: usize,
    first_mask: u8,
    last_mask: u8,
}

fn resolve(len: usize, mut start: i64, mut end: i64, bit: bool) -> Option<Range> {
    let mut total = len as i64;
    if bit {
        total <<= 3;
    }
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_mask, mut last_mask) = (0u8, 0u8);
    if bit && start <= end {
        first_mask = !((1u16 << (8 - (start & 7))) - 1) as u8;
        last_mask = ((1u16 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    if start > end {
        return None;
    }
    Some(Range {
        start: start as usize,
        end: end as usize,
        first_mask,
        last_mask,
    })
}

fn unit(arg: &[u8]) -> Result<bool, CmdError> {
    if arg.eq_ignore_ascii_case(b"bit") {
        Ok(true)
    } else if arg.eq_ignore_ascii_case(b"byte") {
        Ok(false)
    } else {
        Err(CmdError::Syntax)
    }
}

fn bitcount(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    // A missing key is 0 before the arguments are looked at (Redis).
    let Some(s) = read_string(ctx, &key)? else {
        return Ok(Reply::Int(0));
    };
    let rest = a.rest().to_vec();
    let range = match rest.len() {
        0 => {
            if s.is_empty() {
                return Ok(Reply::Int(0));
            }
            Range {
                start: 0,
                end: s.len() - 1,
                first_mask: 0,
                last_mask: 0,
            }
        }
        2 | 3 => {
            let start = parse_i64(&rest[0]).ok_or(CmdError::NotInteger)?;
            let end = parse_i64(&rest[1]).ok_or(CmdError::NotInteger)?;
            let bit = match rest.get(2) {
                Some(u) => unit(u)?,
                None => false,
            };
            if start < 0 && end < 0 && start > end {
                return Ok(Reply::Int(0));
            }
            match resolve(s.len(), start, end, bit) {
                Some(r) => r,
                None => return Ok(Reply::Int(0)),
            }
        }
        _ => return Err(CmdError::Syntax),
    };
    let bytes = &s[range.start..=range.end];
    let mut count: i64 = bytes.iter().map(|b| i64::from(b.count_ones())).sum();
    if range.first_mask != 0 {
        count -= i64::from((s[range.start] & range.first_mask).count_ones());
    }
    if range.last_mask != 0 {
        count -= i64::from((s[range.end] & range.last_mask).count_ones());
    }
    Ok(Reply::Int(count))
}

/// The first bit equal to `bit` in `bytes`, Redis's `redisBitpos`: none
/// found is -1 when looking for 1, and the bit just past the end when
/// looking for 0 (the string is zero-padded on the right).
fn first_bit(bytes: &[u8], bit: bool) -> i64 {
    for (i, &b) in bytes.iter().enumerate() {
        let b = if bit { b } else { !b };
        if b != 0 {
            return (i as i64) * 8 + i64::from(b.leading_zeros());
        }
    }
    if bit {
        -1
    } else {
        bytes.len() as i64 * 8
    }
}

fn bitpos(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let bit = match a.next_i64()? {
        0 => false,
        1 => true,
        _ => return Err(CmdError::err("The bit argument must be 1 or 0.")),
    };
    let Some(s) = read_string(ctx, &key)? else {
        return Ok(Reply::Int(if bit { -1 } else { 0 }));
    };
    let rest = a.rest().to_vec();
    let mut end_given = false;
    let range = match rest.len() {
        0 => {
            if s.is_empty() {
                return Ok(Reply::Int(-1));
            }
            Range {
                start: 0,
                end: s.len() - 1,
                first_mask: 0,
                last_mask: 0,
            }
        }
        1..=3 => {
            let start = parse_i64(&rest[0]).ok_or(CmdError::NotInteger)?;
            let is_bit = match rest.get(2) {
                Some(u) => unit(u)?,
                None => false,
            };
            let end = match rest.get(1) {
                Some(e) => {
                    end_given = true;
                    parse_i64(e).ok_or(CmdError::NotInteger)?
                }
                None => s.len() as i64 - 1,
            };
            match resolve(s.len(), start, end, is_bit) {
                Some(r) => r,
                None => return Ok(Reply::Int(-1)),
            }
        }
        _ => return Err(CmdError::Syntax),
    };
    // Redis's walk: the masked first byte, the whole bytes, the masked last.
    let (mut start, end) = (range.start, range.end);
    let mut bytes = end - start + 1;
    let masked = |b: u8, mask: u8| if bit { b & !mask } else { b | mask };
    let pos: i64 = 'found: {
        if range.first_mask != 0 {
            let mut c = masked(s[start], range.first_mask);
            if range.last_mask != 0 && bytes == 1 {
                c = masked(c, range.last_mask);
            }
            let pos = first_bit(&[c], bit);
            if bytes == 1 || (pos != -1 && pos != 8) {
                break 'found pos;
            }
            start += 1;
            bytes -= 1;
        }
        let whole = bytes - usize::from(range.last_mask != 0);
        if whole > 0 {
            let pos = first_bit(&s[start..start + whole], bit);
            if bytes == whole || (pos != -1 && pos != (whole as i64) << 3) {
                break 'found pos;
            }
            start += whole;
            bytes -= whole;
        }
        first_bit(&[masked(s[end], range.last_mask)], bit)
    };
    if end_given && !bit && pos == (bytes as i64) << 3 {
        return Ok(Reply::Int(-1));
    }
    Ok(Reply::Int(if pos != -1 {
        pos + ((start as i64) << 3)
    } else {
        pos
    }))
}

fn bitop(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    #[derive(PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let name = a.next_bytes()?;
    let op = match name.to_ascii_lowercase().as_slice() {
        b"and" => Op::And,
        b"or" => Op::Or,
        b"xor" => Op::Xor,
        b"not" => Op::Not,
        _ => return Err(CmdError::Syntax),
    };
    let dest = a.next_bytes()?;
    let srcs = a.rest().to_vec();
    if op == Op::Not && srcs.len() != 1 {
        return Err(CmdError::err(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    let mut inputs: Vec<Bytes> = Vec::with_capacity(srcs.len());
    for k in &srcs {
        inputs.push(read_string(ctx, k)?.unwrap_or_default());
    }
    let max = inputs.iter().map(Bytes::len).max().unwrap_or(0);
    if max == 0 {
        if ctx.db().remove(&dest).is_some() {
            ctx.touch(&dest);
            ctx.notify(NOTIFY_GENERIC, "del", &dest);
        }
        return Ok(Reply::Int(0));
    }
    let byte = |s: &Bytes, i: usize| s.get(i).copied().unwrap_or(0);
    let mut out = vec![0u8; max];
    for (i, o) in out.iter_mut().enumerate() {
        let mut v = byte(&inputs[0], i);
        if op == Op::Not {
            v = !v;
        }
        for s in &inputs[1..] {
            let b = byte(s, i);
            match op {
                Op::And => v &= b,
                Op::Or => v |= b,
                Op::Xor => v ^= b,
                Op::Not => {}
            }
        }
        *o = v;
    }
    super::string::set_key(ctx, &dest, Bytes::from(out), false);
    Ok(Reply::Int(max as i64))
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set,
    IncrBy,
}

struct Field {
    op: FieldOp,
    offset: u64,
    value: i64,
    signed: bool,
    bits: u32,
    overflow: Overflow,
}

const TYPE_ERR: &str =
    "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

/// `i1`..`i64`, `u1`..`u63`.
fn field_type(arg: &[u8]) -> Result<(bool, u32), CmdError> {
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(CmdError::err(TYPE_ERR)),
    };
    match parse_i64(&arg[1..]) {
        Some(n) if n >= 1 && (n <= 63 || (signed && n == 64)) => Ok((signed, n as u32)),
        _ => Err(CmdError::err(TYPE_ERR)),
    }
}

fn get_unsigned(p: &[u8], mut offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for _ in 0..bits {
        let byte = p.get((offset >> 3) as usize).copied().unwrap_or(0);
        let b = (byte >> (7 - (offset & 7))) & 1;
        v = (v << 1) | u64::from(b);
        offset += 1;
    }
    v
}

fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let mut v = get_unsigned(p, offset, bits);
    if bits < 64 && v & (1u64 << (bits - 1)) != 0 {
        v |= u64::MAX << bits;
    }
    v as i64
}

fn set_bits(p: &mut [u8], mut offset: u64, bits: u32, value: u64) {
    for j in 0..bits {
        let on = value & (1u64 << (bits - 1 - j)) != 0;
        let i = (offset >> 3) as usize;
        let mask = 1u8 << (7 - (offset & 7));
        if let Some(b) = p.get_mut(i) {
            if on {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
        offset += 1;
    }
}

/// Redis's `checkSignedBitfieldOverflow`: whether `value + incr` leaves
/// the `bits`-wide signed range, and the value WRAP or SAT makes of it.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> (bool, i64) {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        return (true, if ow == Overflow::Wrap { wrap() } else { max });
    }
    if value < min || (bits != 64 && incr < minincr) || (value < 0 && incr < 0 && incr < minincr) {
        return (true, if ow == Overflow::Wrap { wrap() } else { min });
    }
    (false, 0)
}

/// Redis's `checkUnsignedBitfieldOverflow`.
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> (bool, u64) {
    let max: u64 = (1u64 << bits) - 1;
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX << bits);
    if value > max || (incr > 0 && incr > maxincr) {
        return (true, if ow == Overflow::Wrap { wrap() } else { max });
    }
    if incr < 0 && incr < minincr {
        return (true, if ow == Overflow::Wrap { wrap() } else { 0 });
    }
    (false, 0)
}

fn bitfield(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bitfield_generic(ctx, a, false)
}

fn bitfield_ro(ctx: &mut Ctx, a: &mut Args) -> Result<Reply, CmdError> {
    bitfield_generic(ctx, a, true)
}

fn bitfield_generic(ctx: &mut Ctx, a: &mut Args, ro: bool) -> Result<Reply, CmdError> {
    let key = a.next_bytes()?;
    let args = a.rest().to_vec();
    let mut ops: Vec<Field> = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut highest: u64 = 0;
    let mut writes = false;
    let mut j = 0;
    while j < args.len() {
        let rem = args.len() - j - 1;
        let sub = args[j].to_ascii_lowercase();
        let op = match sub.as_slice() {
            b"get" if rem >= 2 => FieldOp::Get,
            b"set" if rem >= 3 => FieldOp::Set,
            b"incrby" if rem >= 3 => FieldOp::IncrBy,
            b"overflow" if rem >= 1 => {
                overflow = match args[j + 1].to_ascii_lowercase().as_slice() {
                    b"wrap" => Overflow::Wrap,
                    b"sat" => Overflow::Sat,
                    b"fail" => Overflow::Fail,
                    _ => return Err(CmdError::err("Invalid OVERFLOW type specified")),
                };
                j += 2;
                continue;
            }
            _ => return Err(CmdError::Syntax),
        };
        let (signed, bits) = field_type(&args[j + 1])?;
        let offset = bit_offset(ctx, &args[j + 2], Some(bits))?;
        let mut value = 0;
        if op != FieldOp::Get {
            writes = true;
            highest = highest.max(offset + u64::from(bits) - 1);
            value = parse_i64(&args[j + 3]).ok_or(CmdError::NotInteger)?;
        }
        ops.push(Field {
            op,
            offset,
            value,
            signed,
            bits,
            overflow,
        });
        j += if op == FieldOp::Get { 3 } else { 4 };
    }
    if !writes {
        let s = read_string(ctx, &key)?.unwrap_or_default();
        let out = ops
            .iter()
            .map(|f| {
                if f.signed {
                    Reply::Int(get_signed(&s, f.offset, f.bits))
                } else {
                    Reply::Int(get_unsigned(&s, f.offset, f.bits) as i64)
                }
            })
            .collect();
        return Ok(Reply::Array(out));
    }
    if ro {
        return Err(CmdError::err(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    let mut buf = string_for_bits(ctx, &key, highest)?;
    let mut out = Vec::with_capacity(ops.len());
    for f in &ops {
        if f.op == FieldOp::Get {
            out.push(Reply::Int(if f.signed {
                get_signed(&buf, f.offset, f.bits)
            } else {
                get_unsigned(&buf, f.offset, f.bits) as i64
            }));
            continue;
        }
        let (overflowed, new, ret) = if f.signed {
            let old = get_signed(&buf, f.offset, f.bits);
            if f.op == FieldOp::IncrBy {
                let (o, w) = signed_overflow(old, f.value, f.bits, f.overflow);
                let new = if o { w } else { old.wrapping_add(f.value) };
                (o, new as u64, new)
            } else {
                let (o, w) = signed_overflow(f.value, 0, f.bits, f.overflow);
                (o, if o { w } else { f.value } as u64, old)
            }
        } else {
            let old = get_unsigned(&buf, f.offset, f.bits);
            if f.op == FieldOp::IncrBy {
                let (o, w) = unsigned_overflow(old, f.value, f.bits, f.overflow);
                let new = if o {
                    w
                } else {
                    old.wrapping_add(f.value as u64)
                };
                (o, new, new as i64)
            } else {
                let v = f.value as u64;
                let (o, w) = unsigned_overflow(v, 0, f.bits, f.overflow);
                (o, if o { w } else { v }, old as i64)
            }
        };
        if overflowed && f.overflow == Overflow::Fail {
            out.push(Reply::Null);
        } else {
            out.push(Reply::Int(ret));
            set_bits(&mut buf, f.offset, f.bits, new);
        }
    }
    put_back(ctx, &key, buf);
    ctx.touch(&key);
    ctx.notify(NOTIFY_STRING, "setbit", &key);
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfield_overflow_matches_redis() {
        // u2 at 3 + 1 wraps to 0; saturates at 3; i8 127 + 1 wraps to -128.
        assert_eq!(unsigned_overflow(3, 1, 2, Overflow::Wrap), (true, 0));
        assert_eq!(unsigned_overflow(3, 1, 2, Overflow::Sat), (true, 3));
        assert_eq!(unsigned_overflow(0, -1, 2, Overflow::Sat), (true, 0));
        assert_eq!(unsigned_overflow(1, 1, 2, Overflow::Wrap), (false, 0));
        assert_eq!(signed_overflow(127, 1, 8, Overflow::Wrap), (true, -128));
        assert_eq!(signed_overflow(-128, -1, 8, Overflow::Sat), (true, -128));
        assert_eq!(
            signed_overflow(i64::MAX, 1, 64, Overflow::Wrap),
            (true, i64::MIN)
        );
        assert_eq!(signed_overflow(5, 0, 64, Overflow::Wrap), (false, 0));
    }

    #[test]
    fn bits_round_trip() {
        let mut p = vec![0u8; 3];
        set_bits(&mut p, 5, 10, 0b10_1100_1101);
        assert_eq!(get_unsigned(&p, 5, 10), 0b10_1100_1101);
        assert_eq!(get_signed(&p, 5, 10), 0b10_1100_1101 - 1024);
        assert_eq!(first_bit(&[0, 0b0010_0000], true), 10);
        assert_eq!(first_bit(&[0xff], false), 8);
        assert_eq!(first_bit(&[0], true), -1);
    }
}
