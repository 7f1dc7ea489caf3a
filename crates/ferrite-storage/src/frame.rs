//! The frame codec shared by commit-log segments and stream segment files.
//!
//! Every record on disk is one frame (all integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       4     crc    CRC32 (IEEE, crc32fast) of bytes [4, 9 + len):
//!                      the length, the kind byte and the body
//! 4       4     len    u32, length of the body in bytes
//! 8       1     kind   record type + format version (see KIND_* below)
//! 9       len   body   kind-specific
//! ```
//!
//! Body of a commit-log record (`KIND_LOG_RECORD_V1`, len >= 8):
//! `seq: u64 LE` then the opaque payload (`len - 8` bytes).
//!
//! Body of a sealed stream block, version 1 (`KIND_STREAM_BLOCK_V1`,
//! len >= 32; read, no longer written): `first_ms, first_seq, last_ms,
//! last_seq: u64 LE` then the opaque block bytes (`len - 32` bytes).
//!
//! Body of a sealed stream block, version 2 (`KIND_STREAM_BLOCK_V2`,
//! len >= 33): the same 32 bytes of IDs, a codec byte, then the block bytes
//! stored raw or LZ4-compressed; every byte is specified in
//! [`crate::block_codec`].
//!
//! Because the CRC covers the length, a corrupted length is detected like
//! any other corrupted byte. Kind `0x00` is never valid, so a zero-filled
//! region (crc = 0, len = 0, kind = 0) is always rejected, even before the
//! checksum is looked at. A frame cut short (a torn write) is reported as
//! [`FrameError::Incomplete`].
//!
//! This module is pure: it encodes into and decodes from byte slices. The
//! buffered reader over a [`crate::backend::BackendFile`] is in
//! [`crate::segment`].

use std::fmt;

/// Size of the frame header (crc + len + kind).
pub const FRAME_HEADER_LEN: usize = 9;
/// Kind byte of a commit-log record, format version 1.
pub const KIND_LOG_RECORD_V1: u8 = 0x01;
/// Kind byte of a sealed stream block, format version 1 (uncompressed).
/// Still read; no longer written.
pub const KIND_STREAM_BLOCK_V1: u8 = 0x02;
/// Kind byte of a sealed stream block, format version 2 (codec byte, block
/// bytes raw or LZ4-compressed; see [`crate::block_codec`]).
pub const KIND_STREAM_BLOCK_V2: u8 = 0x03;
/// Minimum body length of a commit-log record (the sequence number).
pub const LOG_BODY_MIN: usize = 8;
/// Minimum body length of a version-1 stream block (first and last entry
/// IDs).
pub const BLOCK_BODY_MIN: usize = 32;
/// Minimum body length of a version-2 stream block (IDs + codec byte).
pub const BLOCK_V2_BODY_MIN: usize = 33;
/// The stream-block frame kinds a reader accepts, with their minimum body
/// lengths; the kind written today comes first.
pub const BLOCK_KINDS: &[(u8, usize)] = &[
    (KIND_STREAM_BLOCK_V2, BLOCK_V2_BODY_MIN),
    (KIND_STREAM_BLOCK_V1, BLOCK_BODY_MIN),
];
/// Largest body a frame can carry (the length field is a u32).
pub const MAX_BODY_LEN: usize = u32::MAX as usize;

/// Why a frame failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the header or the declared length needs:
    /// the typical torn write at the end of a file.
    Incomplete {
        /// Bytes available from the frame start to the end of the file.
        available: u64,
        /// Bytes the frame needs (9 if even the header is cut).
        needed: u64,
    },
    /// The kind byte is not the one expected here (0 = zero-filled).
    BadKind {
        /// The byte found.
        found: u8,
        /// The byte expected.
        expected: u8,
    },
    /// The declared body length is below the kind's minimum.
    BadLength {
        /// Declared body length.
        len: u32,
        /// Minimum for this kind.
        min: usize,
    },
    /// The CRC does not match the bytes.
    BadChecksum {
        /// CRC stored in the frame.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A valid frame with the wrong sequence number (commit log only).
    BadSequence {
        /// The sequence number that had to come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Incomplete { available, needed } => write!(
                f,
                "incomplete frame: {available} bytes left in the file, frame needs {needed}"
            ),
            FrameError::BadKind { found, expected } => {
                write!(f, "bad kind byte 0x{found:02x} (expected 0x{expected:02x})")
            }
            FrameError::BadLength { len, min } => {
                write!(f, "bad body length {len} (minimum {min})")
            }
            FrameError::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})"
            ),
            FrameError::BadSequence { expected, found } => write!(
                f,
                "unexpected sequence number {found} (expected {expected})"
            ),
        }
    }
}

/// The three header fields, as read (not yet verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Stored CRC.
    pub crc: u32,
    /// Declared body length.
    pub len: u32,
    /// Kind byte.
    pub kind: u8,
}

impl FrameHeader {
    /// Total frame length (header + body).
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Read the header fields from the first 9 bytes of `bytes`.
/// `None` if fewer than 9 bytes are given.
pub fn read_header(bytes: &[u8]) -> Option<FrameHeader> {
    let h: &[u8; FRAME_HEADER_LEN] = bytes.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    Some(FrameHeader {
        crc: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        len: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        kind: h[8],
    })
}

/// Check the header's kind and minimum length (cheap, before the body is
/// read).
pub fn check_header(h: &FrameHeader, kind: u8, min_body: usize) -> Result<(), FrameError> {
    check_header_kinds(h, &[(kind, min_body)])
}

/// Like [`check_header`], for a place where several kinds are valid
/// (`kinds`: `(kind, minimum body length)`, non-empty). A kind outside the
/// list is reported as [`FrameError::BadKind`] expecting the first one.
pub fn check_header_kinds(h: &FrameHeader, kinds: &[(u8, usize)]) -> Result<(), FrameError> {
    let Some(&(_, min_body)) = kinds.iter().find(|(k, _)| *k == h.kind) else {
        return Err(FrameError::BadKind {
            found: h.kind,
            expected: kinds.first().map_or(0, |(k, _)| *k),
        });
    };
    if (h.len as usize) < min_body {
        return Err(FrameError::BadLength {
            len: h.len,
            min: min_body,
        });
    }
    Ok(())
}

/// CRC32 of `len`, `kind` and the body given in parts.
fn checksum(len: u32, kind: u8, body: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&[kind]);
    for part in body {
        h.update(part);
    }
    h.finalize()
}

/// Decode one frame at the start of `bytes` (which runs to the end of the
/// file or at least to the end of the frame). Returns the frame length and
/// the verified body.
pub fn decode_frame(bytes: &[u8], kind: u8, min_body: usize) -> Result<(u64, &[u8]), FrameError> {
    decode_frame_kinds(bytes, &[(kind, min_body)]).map(|(len, _, body)| (len, body))
}

/// Like [`decode_frame`], accepting any of `kinds` (see
/// [`check_header_kinds`]): `(frame_len, kind, body)`.
pub fn decode_frame_kinds<'a>(
    bytes: &'a [u8],
    kinds: &[(u8, usize)],
) -> Result<(u64, u8, &'a [u8]), FrameError> {
    let available = bytes.len() as u64;
    let Some(h) = read_header(bytes) else {
        return Err(FrameError::Incomplete {
            available,
            needed: FRAME_HEADER_LEN as u64,
        });
    };
    check_header_kinds(&h, kinds)?;
    let total = h.frame_len();
    if available < total {
        return Err(FrameError::Incomplete {
            available,
            needed: total,
        });
    }
    // `total <= available == bytes.len()`, so this cannot be out of range.
    let body = &bytes[FRAME_HEADER_LEN..total as usize];
    let computed = checksum(h.len, h.kind, &[body]);
    if computed != h.crc {
        return Err(FrameError::BadChecksum {
            stored: h.crc,
            computed,
        });
    }
    Ok((total, h.kind, body))
}

/// Append one frame with the given kind and body parts to `out`.
/// The caller guarantees the total body length fits in a u32
/// ([`MAX_BODY_LEN`]); longer bodies are rejected before encoding.
pub fn encode_frame(kind: u8, body: &[&[u8]], out: &mut Vec<u8>) {
    let len: usize = body.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_BODY_LEN);
    let len = len as u32;
    let crc = checksum(len, kind, body);
    out.reserve(FRAME_HEADER_LEN + len as usize);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    for part in body {
        out.extend_from_slice(part);
    }
}

/// Encoded size of a commit-log record with a payload of `payload_len`.
pub fn log_record_len(payload_len: usize) -> u64 {
    (FRAME_HEADER_LEN + LOG_BODY_MIN + payload_len) as u64
}

/// Append a commit-log record frame (`seq` + payload) to `out`.
pub fn encode_log_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    encode_frame(KIND_LOG_RECORD_V1, &[&seq.to_le_bytes(), payload], out);
}

/// Append a commit-log record frame whose payload `encode` writes straight
/// into `out` (no buffer of its own; the header is filled in after it).
/// Returns the payload's length; the caller checks it against its limit
/// (and truncates `out` back if it refuses the record). Same bytes as
/// [`encode_log_record`] with that payload.
pub fn encode_log_record_with(
    seq: u64,
    out: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    out.extend_from_slice(&seq.to_le_bytes());
    encode(out);
    let body_len = out.len() - start - FRAME_HEADER_LEN;
    // A body past MAX_BODY_LEN is the caller's to refuse (its record limit
    // is lower); the length field just must not wrap meanwhile.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8] = KIND_LOG_RECORD_V1;
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    body_len - LOG_BODY_MIN
}

/// Split a verified commit-log body into `(seq, payload)`.
pub fn split_log_body(body: &[u8]) -> Option<(u64, &[u8])> {
    let (seq, payload) = body.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*seq), payload))
}

/// Decode one commit-log record at the start of `bytes`:
/// `(frame_len, seq, payload)`.
pub fn decode_log_record(bytes: &[u8]) -> Result<(u64, u64, &[u8]), FrameError> {
    let (len, body) = decode_frame(bytes, KIND_LOG_RECORD_V1, LOG_BODY_MIN)?;
    // decode_frame enforced len >= LOG_BODY_MIN, so the split succeeds.
    let (seq, payload) = split_log_body(body).ok_or(FrameError::BadLength {
        len: body.len() as u32,
        min: LOG_BODY_MIN,
    })?;
    Ok((len, seq, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_in_place_gives_the_same_frame() {
        for payload in [&b""[..], b"hi", &[7u8; 1000]] {
            let mut a = b"prefix".to_vec();
            let mut b = a.clone();
            encode_log_record(42, payload, &mut a);
            let n = encode_log_record_with(42, &mut b, |out| out.extend_from_slice(payload));
            assert_eq!(n, payload.len());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn layout_is_little_endian_and_documented() {
        let mut out = Vec::new();
        encode_log_record(0x0102030405060708, b"hi", &mut out);
        assert_eq!(out.len(), 9 + 8 + 2);
        assert_eq!(&out[4..8], &10u32.to_le_bytes());
        assert_eq!(out[8], KIND_LOG_RECORD_V1);
        assert_eq!(&out[9..17], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&out[17..], b"hi");
        let mut h = crc32fast::Hasher::new();
        h.update(&out[4..]);
        assert_eq!(&out[0..4], &h.finalize().to_le_bytes());
        let (len, seq, payload) = decode_log_record(&out).unwrap();
        assert_eq!((len, seq, payload), (19, 0x0102030405060708, &b"hi"[..]));
    }

    #[test]
    fn zero_filled_is_rejected() {
        let zeros = [0u8; 64];
        assert!(matches!(
            decode_log_record(&zeros),
            Err(FrameError::BadKind { found: 0, .. })
        ));
    }

    #[test]
    fn every_bit_flip_in_one_frame_is_detected() {
        let mut frame = Vec::new();
        encode_log_record(42, b"some payload bytes", &mut frame);
        for bit in 0..frame.len() * 8 {
            let mut f = frame.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_log_record(&f).is_err(), "bit {bit} not detected");
        }
    }

    #[test]
    fn every_cut_is_incomplete() {
        let mut frame = Vec::new();
        encode_log_record(7, b"abcdef", &mut frame);
        for cut in 0..frame.len() {
            assert!(matches!(
                decode_log_record(&frame[..cut]),
                Err(FrameError::Incomplete { .. })
            ));
        }
    }
}
