//! The byte-level pieces every value type's checkpoint form is made of:
//! LEB128 varints and bounds-checked takes. Decoding never panics: a short
//! or malformed input is an error naming what was missing.

/// The next `n` bytes of `r`, advancing it.
pub(crate) fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if r.len() < n {
        return Err(format!("truncated: need {n} bytes, {} left", r.len()));
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint; more than 64 bits is an error.
pub(crate) fn get_varint(r: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take(r, 1)?[0];
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err("varint overflows 64 bits".into());
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = &b[..];
            assert_eq!(get_varint(&mut r), Ok(v));
            assert!(r.is_empty());
            assert!(get_varint(&mut &b[..b.len() - 1]).is_err());
        }
        assert!(get_varint(&mut &[0xff; 9][..]).is_err());
        assert!(
            get_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..])
                .is_err()
        );
        assert!(take(&mut &b"ab"[..], 3).is_err());
    }
}
