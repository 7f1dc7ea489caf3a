//! Segment files: naming, a buffered frame reader over a
//! [`BackendFile`], and the "is there any valid record after this point?"
//! scan that recovery uses to tell a torn tail from mid-log corruption.
//!
//! Commit-log segment files are named by the sequence number of their first
//! record, zero-padded to 20 digits (the width of `u64::MAX`) so that a
//! lexical sort is a numeric sort: `00000000000000000001.log`. A segment
//! holds consecutive records; the next segment starts at the sequence number
//! after the previous segment's last record. There is no file header: every
//! frame carries its own kind/version byte and sequence number.

use std::io;
use std::sync::Arc;

use crate::backend::BackendFile;
use crate::frame::{
    self, check_header_kinds, decode_frame_kinds, read_header, FrameError, FRAME_HEADER_LEN,
    KIND_LOG_RECORD_V1, LOG_BODY_MIN,
};

/// Extension of commit-log segment files.
pub const SEGMENT_EXT: &str = "log";

/// File name of the commit-log segment whose first record is `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXT}")
}

/// Parse a segment file name (`20 digits + ".log"`); `None` for any other
/// name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    parse_20_digits(digits)
}

/// Parse exactly 20 ASCII digits as a u64 (`None` on overflow).
pub(crate) fn parse_20_digits(digits: &str) -> Option<u64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A decoded commit-log record borrowed from a reader's buffer:
/// `(frame_len, seq, payload)`.
pub type LogRecordRef<'a> = (u64, u64, &'a [u8]);

/// A verified frame borrowed from a reader's buffer: `(frame_len, kind, body)`.
pub type FrameRef<'a> = (u64, u8, &'a [u8]);

/// How much a [`FrameReader`] reads at a time.
const READ_CHUNK: u64 = 1024 * 1024;

/// Reads frames from a file through a buffer (one `read_at` per ~1 MiB
/// rather than two per record). Never allocates more than the file holds.
#[derive(Debug)]
pub struct FrameReader {
    file: Arc<dyn BackendFile>,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl FrameReader {
    /// A reader over `file`; reads its length once.
    pub fn new(file: Arc<dyn BackendFile>) -> io::Result<Self> {
        let len = file.len()?;
        Ok(FrameReader {
            file,
            len,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// The file length seen when the reader was created.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the file was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `want` bytes starting at `offset` (fewer at end of file).
    fn window(&mut self, offset: u64, want: u64) -> io::Result<&[u8]> {
        let avail = self.len.saturating_sub(offset);
        let n = want.min(avail);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || offset + n > buf_end {
            let read = n.max(READ_CHUNK).min(avail);
            let read_usize = usize::try_from(read)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "read too large"))?;
            self.buf.clear();
            self.buf.resize(read_usize, 0);
            self.file.read_at(offset, &mut self.buf)?;
            self.buf_start = offset;
        }
        let start = (offset - self.buf_start) as usize;
        Ok(&self.buf[start..start + n as usize])
    }

    /// Decode the frame at `offset`: `Ok(Ok((frame_len, body)))` for a
    /// valid frame, `Ok(Err(_))` for a bad one, `Err(_)` for an I/O error.
    pub fn frame_at(
        &mut self,
        offset: u64,
        kind: u8,
        min_body: usize,
    ) -> io::Result<Result<(u64, &[u8]), FrameError>> {
        Ok(self
            .frame_at_kinds(offset, &[(kind, min_body)])?
            .map(|(len, _, body)| (len, body)))
    }

    /// Like [`FrameReader::frame_at`], accepting any of `kinds`
    /// (see [`frame::check_header_kinds`]): `(frame_len, kind, body)`.
    pub fn frame_at_kinds(
        &mut self,
        offset: u64,
        kinds: &[(u8, usize)],
    ) -> io::Result<Result<FrameRef<'_>, FrameError>> {
        let avail = self.len.saturating_sub(offset);
        let header = {
            let w = self.window(offset, FRAME_HEADER_LEN as u64)?;
            match read_header(w) {
                Some(h) => h,
                None => {
                    return Ok(Err(FrameError::Incomplete {
                        available: avail,
                        needed: FRAME_HEADER_LEN as u64,
                    }))
                }
            }
        };
        if let Err(e) = check_header_kinds(&header, kinds) {
            return Ok(Err(e));
        }
        let total = header.frame_len();
        if total > avail {
            // Checked before reading, so a garbage length never makes us
            // allocate more than the file holds.
            return Ok(Err(FrameError::Incomplete {
                available: avail,
                needed: total,
            }));
        }
        let w = self.window(offset, total)?;
        Ok(decode_frame_kinds(w, kinds))
    }

    /// Decode the commit-log record at `offset`:
    /// `(frame_len, seq, payload)`.
    pub fn log_record_at(
        &mut self,
        offset: u64,
    ) -> io::Result<Result<LogRecordRef<'_>, FrameError>> {
        Ok(
            match self.frame_at(offset, KIND_LOG_RECORD_V1, LOG_BODY_MIN)? {
                Ok((len, body)) => match frame::split_log_body(body) {
                    Some((seq, payload)) => Ok((len, seq, payload)),
                    None => Err(FrameError::BadLength {
                        len: body.len() as u32,
                        min: LOG_BODY_MIN,
                    }),
                },
                Err(e) => Err(e),
            },
        )
    }

    /// Count the valid commit-log records at or after `from` whose sequence
    /// number lies in `seq_range` (inclusive), resynchronising byte by byte
    /// after garbage. Returns `(count, offset of the first one)`.
    ///
    /// The cheap filters (kind byte, length within the file, sequence number
    /// in range) run on every byte offset; the CRC only on the rare
    /// candidates that pass them, so garbage is scanned in linear time.
    pub fn count_valid_log_records(
        &mut self,
        from: u64,
        seq_range: (u64, u64),
    ) -> io::Result<(u64, Option<u64>)> {
        const PROBE: usize = FRAME_HEADER_LEN + LOG_BODY_MIN;
        let (lo, hi) = seq_range;
        let mut count = 0;
        let mut first = None;
        let mut pos = from;
        while pos + PROBE as u64 <= self.len {
            let file_len = self.len;
            let candidate = {
                let w = self.window(pos, READ_CHUNK)?;
                if w.len() < PROBE {
                    break;
                }
                let mut found = None;
                for i in 0..=(w.len() - PROBE) {
                    let p = &w[i..i + PROBE];
                    if p[8] != KIND_LOG_RECORD_V1 {
                        continue;
                    }
                    let len = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as u64;
                    let at = pos + i as u64;
                    if (len as usize) < LOG_BODY_MIN || at + 9 + len > file_len {
                        continue;
                    }
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&p[9..17]);
                    let seq = u64::from_le_bytes(seq);
                    if seq < lo || seq > hi {
                        continue;
                    }
                    found = Some(at);
                    break;
                }
                match found {
                    Some(at) => Ok(at),
                    None => Err((w.len() - PROBE + 1) as u64),
                }
            };
            match candidate {
                Ok(at) => match self.log_record_at(at)? {
                    Ok((len, _, _)) => {
                        count += 1;
                        first.get_or_insert(at);
                        pos = at + len;
                    }
                    Err(_) => pos = at + 1,
                },
                Err(step) => pos += step,
            }
        }
        Ok((count, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_numerically() {
        assert_eq!(segment_file_name(1), "00000000000000000001.log");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("0000000000000000042.log"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.log.tmp"), None);
        let mut names: Vec<String> = [10u64, 9, 100, 1]
            .iter()
            .map(|&b| segment_file_name(b))
            .collect();
        names.sort();
        let bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        assert_eq!(bases, vec![1, 9, 10, 100]);
    }
}
