//! The body of a sealed stream-block frame: IDs, codec byte, block bytes
//! stored raw or LZ4-compressed. Pure (byte slices in, byte slices out);
//! [`crate::stream_segments`] does the I/O.
//!
//! A block frame is a [`crate::frame`] frame of kind
//! [`KIND_STREAM_BLOCK_V2`] (`0x03`, written today) or
//! [`KIND_STREAM_BLOCK_V1`] (`0x02`, read only). All integers are
//! little-endian.
//!
//! Version 2 body (`len >= 33`):
//!
//! ```text
//! offset  size         field
//! 0       8            first.ms   ID of the block's first entry
//! 8       8            first.seq
//! 16      8            last.ms    ID of the block's last entry
//! 24      8            last.seq
//! 32      1            codec      0x00 = raw, 0x01 = LZ4; anything else is corrupt
//! codec 0x00 (raw):
//! 33      len - 33     the block bytes, as given to append_block
//! codec 0x01 (LZ4):
//! 33      4            raw_len    u32: length of the block bytes once decompressed
//! 37      len - 37     the block bytes compressed in the LZ4 *block* format
//!                      (no LZ4 frame header, no checksum: the frame's CRC covers it)
//! ```
//!
//! Version 1 body (`len >= 32`): the same 32 bytes of IDs, then the block
//! bytes raw (`len - 32` bytes).
//!
//! The writer compresses every block and keeps the result only if it is
//! smaller: LZ4 when `4 + compressed < raw`, raw otherwise. So a block that
//! does not compress (random values) costs exactly one byte more than a
//! version-1 frame, never more.
//!
//! Decoding trusts nothing: an unknown codec, a body too short for its
//! codec, a `raw_len` above [`MAX_BLOCK_PAYLOAD`] or above
//! [`LZ4_MAX_RATIO`] times the compressed length (more than LZ4 can
//! produce, so the output buffer, allocated before decompression, is never
//! more than 255 times the bytes read from the file), LZ4 data that does
//! not decode, or decodes to another length than `raw_len`: each is an
//! error, never a panic. The decoder is `lz4_flex`'s safe one (no `unsafe`),
//! writing into a fresh zeroed buffer of exactly `raw_len` bytes.

use crate::frame::{
    encode_frame, BLOCK_BODY_MIN, BLOCK_V2_BODY_MIN, FRAME_HEADER_LEN, KIND_STREAM_BLOCK_V1,
    KIND_STREAM_BLOCK_V2, MAX_BODY_LEN,
};
use crate::stream_segments::{EntryId, StoredBlock};

/// Codec byte: the block bytes follow as they are.
pub const CODEC_RAW: u8 = 0x00;
/// Codec byte: `raw_len` (u32) then the block bytes in LZ4 block format.
pub const CODEC_LZ4: u8 = 0x01;
/// LZ4 produces at most this many output bytes per input byte (a match
/// length grows by at most 255 per extension byte), so a larger `raw_len`
/// is corrupt.
pub const LZ4_MAX_RATIO: usize = 255;
/// The largest block [`crate::StreamStore::append_block`] accepts: what a
/// raw version-2 body can hold.
pub const MAX_BLOCK_PAYLOAD: usize = MAX_BODY_LEN - BLOCK_V2_BODY_MIN;

/// Length of a compressed body's fixed part (IDs, codec, `raw_len`).
const LZ4_BODY_MIN: usize = BLOCK_V2_BODY_MIN + 4;

fn encode_ids(first: EntryId, last: EntryId) -> [u8; 32] {
    let mut ids = [0u8; 32];
    ids[0..8].copy_from_slice(&first.ms.to_le_bytes());
    ids[8..16].copy_from_slice(&first.seq.to_le_bytes());
    ids[16..24].copy_from_slice(&last.ms.to_le_bytes());
    ids[24..32].copy_from_slice(&last.seq.to_le_bytes());
    ids
}

fn decode_ids(ids: &[u8; 32]) -> (EntryId, EntryId) {
    let u = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&ids[i..i + 8]);
        u64::from_le_bytes(b)
    };
    (EntryId::new(u(0), u(8)), EntryId::new(u(16), u(24)))
}

/// Append a version-2 block frame to `out`: LZ4 if that is smaller, raw
/// otherwise. The caller has checked `payload.len() <= MAX_BLOCK_PAYLOAD`.
pub fn encode_block_frame(first: EntryId, last: EntryId, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_BLOCK_PAYLOAD);
    let ids = encode_ids(first, last);
    let compressed = lz4_flex::block::compress(payload);
    match u32::try_from(payload.len()) {
        Ok(raw_len) if compressed.len() + 4 < payload.len() => encode_frame(
            KIND_STREAM_BLOCK_V2,
            &[&ids, &[CODEC_LZ4], &raw_len.to_le_bytes(), &compressed],
            out,
        ),
        _ => encode_frame(KIND_STREAM_BLOCK_V2, &[&ids, &[CODEC_RAW], payload], out),
    }
}

/// The part of a version-2 block frame `encode_block_frame` wrote into
/// `frame` that a caller may keep in memory instead of the block bytes
/// (the *packed* form, read back with [`unpack_block`]): the body after
/// the IDs, when the block was stored LZ4-compressed. `None` for a raw
/// block (keeping it would save nothing) or anything else.
pub fn packed_part(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.get(FRAME_HEADER_LEN + BLOCK_BODY_MIN..)?;
    (frame.get(8) == Some(&KIND_STREAM_BLOCK_V2) && rest.first() == Some(&CODEC_LZ4))
        .then_some(rest)
}

/// The block bytes of a packed form ([`packed_part`]): the codec byte,
/// then `raw_len` and the LZ4 data (or, codec raw, the bytes themselves),
/// checked exactly as a stored body is.
pub fn unpack_block(packed: &[u8]) -> Result<Vec<u8>, String> {
    match packed.split_first() {
        None => Err("packed block has no codec byte".into()),
        Some((&CODEC_RAW, raw)) => Ok(raw.to_vec()),
        Some((&CODEC_LZ4, rest)) => decompress_lz4(rest),
        Some((codec, _)) => Err(format!("unknown block codec 0x{codec:02x}")),
    }
}

/// The IDs and codec of a verified block body, without decompressing.
/// `Err` names what is wrong (the caller adds file and offset).
pub fn decode_block_header(kind: u8, body: &[u8]) -> Result<(EntryId, EntryId), String> {
    let Some((ids, _)) = body.split_first_chunk::<32>() else {
        return Err(format!(
            "block body is {} bytes, shorter than its {BLOCK_BODY_MIN} bytes of IDs",
            body.len()
        ));
    };
    if kind != KIND_STREAM_BLOCK_V1 && kind != KIND_STREAM_BLOCK_V2 {
        return Err(format!("0x{kind:02x} is not a block frame kind"));
    }
    Ok(decode_ids(ids))
}

/// Decode a verified block body (`kind` = the frame's kind byte) back into
/// the block as it was appended, decompressing if needed.
pub fn decode_block_body(kind: u8, body: &[u8]) -> Result<StoredBlock, String> {
    let (first, last) = decode_block_header(kind, body)?;
    let rest = &body[BLOCK_BODY_MIN..];
    let payload = if kind == KIND_STREAM_BLOCK_V1 {
        rest.to_vec()
    } else if rest.is_empty() {
        return Err("version-2 block body has no codec byte".into());
    } else {
        unpack_block(rest)?
    };
    Ok(StoredBlock {
        first,
        last,
        payload,
    })
}

/// `rest` = `raw_len` (u32 LE) + LZ4 block bytes.
fn decompress_lz4(rest: &[u8]) -> Result<Vec<u8>, String> {
    let Some((raw_len, data)) = rest.split_first_chunk::<4>() else {
        return Err(format!(
            "compressed block body is {} bytes, shorter than {LZ4_BODY_MIN}",
            BLOCK_V2_BODY_MIN + rest.len()
        ));
    };
    let raw_len = u32::from_le_bytes(*raw_len) as usize;
    if raw_len > MAX_BLOCK_PAYLOAD || raw_len > data.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(format!(
            "compressed block claims {raw_len} bytes from {} compressed bytes",
            data.len()
        ));
    }
    let mut out = vec![0u8; raw_len];
    match lz4_flex::block::decompress_into(data, &mut out) {
        Ok(n) if n == raw_len => Ok(out),
        Ok(n) => Err(format!(
            "compressed block decodes to {n} bytes, its header says {raw_len}"
        )),
        Err(e) => Err(format!("compressed block does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame_kinds, BLOCK_KINDS, FRAME_HEADER_LEN};

    const FIRST: EntryId = EntryId { ms: 5, seq: 3 };
    const LAST: EntryId = EntryId {
        ms: 0x0102_0304_0506_0708,
        seq: 9,
    };

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_block_frame(FIRST, LAST, payload, &mut out);
        out
    }

    fn decode(frame: &[u8]) -> Result<StoredBlock, String> {
        let (len, kind, body) =
            decode_frame_kinds(frame, BLOCK_KINDS).map_err(|e| e.to_string())?;
        assert_eq!(len as usize, frame.len());
        decode_block_body(kind, body)
    }

    /// A frame with a valid CRC around an arbitrary version-2 body tail.
    fn v2_frame(tail: &[&[u8]]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![&[0u8; 32]];
        parts.extend_from_slice(tail);
        let mut out = Vec::new();
        encode_frame(KIND_STREAM_BLOCK_V2, &parts, &mut out);
        out
    }

    fn lcg(x: &mut u64) -> u64 {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *x >> 33
    }

    #[test]
    fn compressible_block_is_lz4_and_every_byte_is_where_the_doc_says() {
        let payload = b"\x02\x00\x00\x03BTC\x0742000.5\x013\x0e".repeat(100);
        let f = frame(&payload);
        assert!(f.len() < payload.len() / 2, "{} bytes", f.len());
        assert_eq!(f[8], KIND_STREAM_BLOCK_V2);
        let body = &f[FRAME_HEADER_LEN..];
        assert_eq!(&body[0..8], &5u64.to_le_bytes());
        assert_eq!(&body[8..16], &3u64.to_le_bytes());
        assert_eq!(&body[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&body[24..32], &9u64.to_le_bytes());
        assert_eq!(body[32], CODEC_LZ4);
        assert_eq!(&body[33..37], &(payload.len() as u32).to_le_bytes());
        assert_eq!(
            lz4_flex::block::decompress(&body[37..], payload.len()).unwrap(),
            payload
        );
        let b = decode(&f).unwrap();
        assert_eq!((b.first, b.last, b.payload), (FIRST, LAST, payload));
    }

    #[test]
    fn the_packed_part_of_a_compressed_frame_unpacks_to_the_block() {
        let payload = b"\x02\x00\x00\x03BTC\x0742000.5\x013\x0e".repeat(100);
        let f = frame(&payload);
        let packed = packed_part(&f).unwrap();
        assert_eq!(packed, &f[FRAME_HEADER_LEN + 32..]);
        assert_eq!(unpack_block(packed).unwrap(), payload);
        // Checked like a stored body: no codec, an unknown one, a
        // truncated length or LZ4 data that does not decode to `raw_len`.
        assert!(unpack_block(b"").is_err());
        assert!(unpack_block(&[0x07, 1, 2]).is_err());
        assert!(unpack_block(&packed[..3]).is_err());
        assert!(unpack_block(&packed[..packed.len() - 1]).is_err());
        let mut longer = packed.to_vec();
        longer[1] = longer[1].wrapping_add(1);
        assert!(unpack_block(&longer).is_err());
        // A raw block has no packed form worth keeping.
        let mut x = 7;
        let noise: Vec<u8> = (0..3000).map(|_| lcg(&mut x) as u8).collect();
        assert_eq!(packed_part(&frame(&noise)), None);
        assert_eq!(packed_part(&[]), None);
    }

    #[test]
    fn incompressible_block_is_raw_and_one_byte_bigger_than_v1() {
        let mut x = 7;
        let payload: Vec<u8> = (0..3000).map(|_| lcg(&mut x) as u8).collect();
        let f = frame(&payload);
        assert_eq!(f.len(), FRAME_HEADER_LEN + 32 + 1 + payload.len());
        assert_eq!(f[FRAME_HEADER_LEN + 32], CODEC_RAW);
        assert_eq!(&f[FRAME_HEADER_LEN + 33..], &payload[..]);
        assert_eq!(decode(&f).unwrap().payload, payload);
        for tiny in [&b""[..], b"x", b"abcd", b"abcdabcd"] {
            let f = frame(tiny);
            assert_eq!(f.len(), FRAME_HEADER_LEN + 33 + tiny.len());
            assert_eq!(decode(&f).unwrap().payload, tiny);
        }
    }

    #[test]
    fn v1_bodies_still_decode() {
        let mut f = Vec::new();
        let ids = encode_ids(FIRST, LAST);
        encode_frame(KIND_STREAM_BLOCK_V1, &[&ids, b"old block"], &mut f);
        let b = decode(&f).unwrap();
        assert_eq!(
            (b.first, b.last, &b.payload[..]),
            (FIRST, LAST, &b"old block"[..])
        );
    }

    #[test]
    fn highly_compressible_blocks_stay_within_the_ratio_bound() {
        for n in [1usize << 10, 1 << 20, 3 << 20] {
            let payload = vec![0u8; n];
            let f = frame(&payload);
            assert_eq!(f[FRAME_HEADER_LEN + 32], CODEC_LZ4);
            assert!(n <= (f.len() - FRAME_HEADER_LEN - 37) * LZ4_MAX_RATIO);
            assert_eq!(decode(&f).unwrap().payload, payload);
        }
    }

    #[test]
    fn bad_bodies_with_a_valid_crc_are_errors_not_panics() {
        let payload = b"symbol BTC price 42000.5 volume 3;".repeat(40);
        let good = frame(&payload);
        let data = &good[FRAME_HEADER_LEN + 37..];
        let len = |n: u32| n.to_le_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (v2_frame(&[]), "minimum 33"),
            (v2_frame(&[&[0x02], b"xyz"]), "unknown block codec 0x02"),
            (v2_frame(&[&[0xff]]), "unknown block codec 0xff"),
            (v2_frame(&[&[CODEC_LZ4], &[1, 2]]), "shorter than 37"),
            (v2_frame(&[&[CODEC_LZ4], &len(u32::MAX), data]), "claims"),
            (
                v2_frame(&[&[CODEC_LZ4], &len(data.len() as u32 * 255 + 1), data]),
                "claims",
            ),
            (
                v2_frame(&[&[CODEC_LZ4], &len(payload.len() as u32 + 1), data]),
                "decodes to",
            ),
            (
                v2_frame(&[&[CODEC_LZ4], &len(payload.len() as u32 - 1), data]),
                "does not decode",
            ),
            (
                v2_frame(&[
                    &[CODEC_LZ4],
                    &len(payload.len() as u32),
                    &data[..data.len() - 3],
                ]),
                "does not decode",
            ),
            (v2_frame(&[&[CODEC_LZ4], &len(0), &[]]), "does not decode"),
        ];
        for (f, want) in cases {
            let err = decode(&f).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let no_codec = decode_block_body(KIND_STREAM_BLOCK_V2, &[0; 32]).unwrap_err();
        assert!(no_codec.contains("no codec byte"), "{no_codec}");
        assert!(decode_block_body(KIND_STREAM_BLOCK_V1, &[0; 31]).is_err());
        assert!(decode_block_body(0x01, &[0; 40]).is_err());
    }

    #[test]
    fn random_lz4_data_never_panics_or_over_allocates() {
        let mut x = 99;
        let payload = b"\x02\x01\x05\x03BTC\x0742000.5\x013\x0e".repeat(100);
        let good = frame(&payload);
        for round in 0..20_000 {
            let mut data = good[FRAME_HEADER_LEN + 37..].to_vec();
            // Damage a few bytes, or replace everything with noise.
            if round % 4 == 0 {
                let n = (lcg(&mut x) % 200) as usize;
                data = (0..n).map(|_| lcg(&mut x) as u8).collect();
            } else {
                for _ in 0..1 + lcg(&mut x) % 4 {
                    let i = lcg(&mut x) as usize % data.len();
                    data[i] = lcg(&mut x) as u8;
                }
            }
            let raw_len = (lcg(&mut x) % 4000) as u32;
            let f = v2_frame(&[&[CODEC_LZ4], &raw_len.to_le_bytes(), &data]);
            if let Ok(b) = decode(&f) {
                assert_eq!(b.payload.len(), raw_len as usize);
            }
        }
    }
}
