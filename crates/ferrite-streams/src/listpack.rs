//! Exact byte sizes of Redis listpacks, without building one.
//!
//! Redis decides when a stream macro node is full from `lpBytes()` of the
//! node's listpack, so Ferrite must know that number to the byte even though
//! it stores entries in its own format (see `docs/stream-blocks.md`). These
//! functions reproduce listpack.c's encoding choices:
//!
//! - an element is `encoding + data` followed by a backlen of 1..=5 bytes;
//! - strings that `lpStringToInt64` accepts (canonical i64 text, the same
//!   rules as [`crate::id::string2ll`]) are stored as integers: 7-bit uint
//!   (1 byte), 13-bit (2), 16-bit (3), 24-bit (4), 32-bit (5) or 64-bit (9);
//! - other strings use a 6-bit (len < 64, 1 header byte), 12-bit
//!   (len < 4096, 2 bytes) or 32-bit (5 bytes) length header;
//! - a listpack has a 6-byte header (total bytes + element count) and a
//!   1-byte end marker.

use crate::id::string2ll;

/// Listpack header (u32 total bytes + u16 element count) plus the 0xFF end byte.
pub const LP_OVERHEAD: u64 = 6 + 1;

/// Bytes of the backlen that follows an element whose encoding+data is `l`
/// bytes (`lpEncodeBacklen`; note the asymmetric `<= 127` / `< 16383` bounds).
pub const fn backlen_size(l: u64) -> u64 {
    if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2_097_151 {
        3
    } else if l < 268_435_455 {
        4
    } else {
        5
    }
}

/// Encoding+data bytes of an integer element (`lpEncodeIntegerGetType`).
pub const fn int_encoded_size(v: i64) -> u64 {
    if v >= 0 && v <= 127 {
        1
    } else if v >= -4096 && v <= 4095 {
        2
    } else if v >= -32768 && v <= 32767 {
        3
    } else if v >= -8_388_608 && v <= 8_388_607 {
        4
    } else if v >= -2_147_483_648 && v <= 2_147_483_647 {
        5
    } else {
        9
    }
}

/// Total bytes (encoding, data, backlen) of an integer element.
pub const fn int_element_size(v: i64) -> u64 {
    let l = int_encoded_size(v);
    l + backlen_size(l)
}

/// Total bytes of the element `lpAppend(s)` would write: integer encoding if
/// the string is a canonical i64, else a string encoding.
#[inline]
pub fn element_size(s: &[u8]) -> u64 {
    if let Some(v) = string2ll(s) {
        return int_element_size(v);
    }
    let len = s.len() as u64;
    let l = if len < 64 {
        1 + len
    } else if len < 4096 {
        2 + len
    } else {
        5 + len
    };
    l + backlen_size(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlen_bounds() {
        assert_eq!(backlen_size(0), 1);
        assert_eq!(backlen_size(127), 1);
        assert_eq!(backlen_size(128), 2);
        assert_eq!(backlen_size(16382), 2);
        assert_eq!(backlen_size(16383), 3);
        assert_eq!(backlen_size(2_097_150), 3);
        assert_eq!(backlen_size(2_097_151), 4);
        assert_eq!(backlen_size(268_435_454), 4);
        assert_eq!(backlen_size(268_435_455), 5);
    }

    #[test]
    fn integer_elements() {
        let cases: &[(i64, u64)] = &[
            (0, 2),
            (127, 2),
            (128, 3),
            (-1, 3),
            (4095, 3),
            (-4096, 3),
            (4096, 4),
            (-4097, 4),
            (32767, 4),
            (-32768, 4),
            (32768, 5),
            (8_388_607, 5),
            (-8_388_608, 5),
            (8_388_608, 6),
            (2_147_483_647, 6),
            (-2_147_483_648, 6),
            (2_147_483_648, 10),
            (i64::MAX, 10),
            (i64::MIN, 10),
        ];
        for &(v, size) in cases {
            assert_eq!(int_element_size(v), size, "{v}");
            assert_eq!(element_size(v.to_string().as_bytes()), size, "{v}");
        }
    }

    #[test]
    fn string_elements() {
        // Non-canonical integers are strings.
        assert_eq!(element_size(b"01"), 1 + 2 + 1);
        assert_eq!(element_size(b"-0"), 1 + 2 + 1);
        assert_eq!(element_size(b"+1"), 1 + 2 + 1);
        assert_eq!(element_size(b"9223372036854775808"), 1 + 19 + 1);
        assert_eq!(element_size(b"42000.5"), 1 + 7 + 1);
        assert_eq!(element_size(b""), 1 + 1);
        assert_eq!(element_size(&[b'a'; 63]), 1 + 63 + 1);
        assert_eq!(element_size(&[b'a'; 64]), 2 + 64 + 1);
        assert_eq!(element_size(&[b'a'; 125]), 2 + 125 + 1); // l = 127
        assert_eq!(element_size(&[b'a'; 126]), 2 + 126 + 2); // l = 128
        assert_eq!(element_size(&[b'a'; 4095]), 2 + 4095 + 2);
        assert_eq!(element_size(&[b'a'; 4096]), 5 + 4096 + 2);
        assert_eq!(element_size(&[b'a'; 16377]), 5 + 16377 + 2); // l = 16382
        assert_eq!(element_size(&[b'a'; 16378]), 5 + 16378 + 3); // l = 16383
    }
}
