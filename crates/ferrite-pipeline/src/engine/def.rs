//! A pipeline's definition: what PIPELINE.CREATE said, and its persisted
//! form.
//!
//! Encoding (little-endian, in subsystem effects and checkpoint sections):
//! `u8 version (1)`, `str name`, `str sql`, `u32 db`, `u64 commit_interval_ms`,
//! `u8 maxlen_kind (0 none, 1 exact, 2 approximate)`, `u64 maxlen`,
//! `u8 paused`, `u64 created_ms`; version 2 adds the time options of
//! grouped statements: `u64 watermark_ms`, `u64 lateness_ms`, `u8 has_late`
//! (then `str late_stream`), `u8 emit` (0 final; 1 updates, then `u64
//! every_ms`), `u64 state_limit`, `u64 idle_ms`. `str` is a `u32` length
//! and the bytes.
//! Decoding checks every length against what is left and refuses unknown
//! versions: a definition it does not understand stops recovery (the
//! caller says where).

/// The longest pipeline name.
pub const MAX_NAME_LEN: usize = 128;
/// COMMIT_INTERVAL bounds, in milliseconds.
pub const MAX_COMMIT_INTERVAL_MS: u64 = 60_000;
/// COMMIT_INTERVAL's default.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 10;

const DEF_V1: u8 = 1;
const DEF_V2: u8 = 2;

/// What PIPELINE.CREATE defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The pipeline's name, also the name of its consumer group on the source.
    pub name: String,
    /// The statement (`INSERT INTO sink SELECT ... FROM source ...`).
    pub sql: String,
    /// The database its source and sink live in (the creating client's).
    pub db: usize,
    /// At most one epoch per this many milliseconds.
    pub commit_interval_ms: u64,
    /// SINK_MAXLEN: `(approximate, n)`.
    pub sink_maxlen: Option<(bool, u64)>,
    /// Created PAUSED (PAUSE/RESUME change the state, not this).
    pub paused: bool,
    /// Wall-clock creation time.
    pub created_ms: u64,
    /// WATERMARK, LATENESS, LATE, EMIT, STATE_LIMIT (grouped statements).
    pub window: crate::window::WindowOptions,
}

impl Definition {
    /// The persisted form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(DEF_V2);
        put_str(out, &self.name);
        put_str(out, &self.sql);
        out.extend_from_slice(&(self.db as u32).to_le_bytes());
        out.extend_from_slice(&self.commit_interval_ms.to_le_bytes());
        let (kind, n) = match self.sink_maxlen {
            None => (0u8, 0u64),
            Some((false, n)) => (1, n),
            Some((true, n)) => (2, n),
        };
        out.push(kind);
        out.extend_from_slice(&n.to_le_bytes());
        out.push(self.paused as u8);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        let w = &self.window;
        out.extend_from_slice(&w.watermark_ms.to_le_bytes());
        out.extend_from_slice(&w.lateness_ms.to_le_bytes());
        match &w.late_stream {
            None => out.push(0),
            Some(l) => {
                out.push(1);
                put_str(out, l);
            }
        }
        match w.emit {
            crate::window::Emit::Final => out.push(0),
            crate::window::Emit::Updates { every_ms } => {
                out.push(1);
                out.extend_from_slice(&every_ms.to_le_bytes());
            }
        }
        out.extend_from_slice(&w.state_limit.to_le_bytes());
        out.extend_from_slice(&w.idle_ms.to_le_bytes());
    }

    /// Reads what [`Definition::encode`] wrote from the front of `r`.
    pub fn decode(r: &mut Cursor<'_>) -> Result<Definition, String> {
        let v = r.u8()?;
        if v != DEF_V1 && v != DEF_V2 {
            return Err(format!(
                "unknown pipeline definition version {v} (this build reads 1 and 2)"
            ));
        }
        let name = r.string()?;
        let sql = r.string()?;
        let db = r.u32()? as usize;
        let commit_interval_ms = r.u64()?;
        let kind = r.u8()?;
        let n = r.u64()?;
        let sink_maxlen = match kind {
            0 => None,
            1 => Some((false, n)),
            2 => Some((true, n)),
            k => return Err(format!("unknown SINK_MAXLEN kind {k}")),
        };
        let paused = match r.u8()? {
            0 => false,
            1 => true,
            b => return Err(format!("bad paused flag {b}")),
        };
        let created_ms = r.u64()?;
        let mut window = crate::window::WindowOptions::default();
        if v >= DEF_V2 {
            window.watermark_ms = r.u64()?;
            window.lateness_ms = r.u64()?;
            window.late_stream = match r.u8()? {
                0 => None,
                1 => Some(r.string()?),
                b => return Err(format!("bad LATE flag {b}")),
            };
            window.emit = match r.u8()? {
                0 => crate::window::Emit::Final,
                1 => crate::window::Emit::Updates { every_ms: r.u64()? },
                b => return Err(format!("unknown EMIT policy {b}")),
            };
            window.state_limit = r.u64()?;
            window.idle_ms = r.u64()?;
        }
        Ok(Definition {
            name,
            sql,
            db,
            commit_interval_ms,
            sink_maxlen,
            paused,
            created_ms,
            window,
        })
    }
}

/// Whether `name` may name a pipeline: 1 to [`MAX_NAME_LEN`] bytes of
/// letters, digits and `_ - . :` (it also names a consumer group and shows
/// in INFO lines, so no spaces, commas or `=`).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked reader over persisted bytes.
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reads from the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { rest: b }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (h, t) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| format!("truncated: {n} bytes wanted, {} left", self.rest.len()))?;
        self.rest = t;
        Ok(h)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let d = Definition {
            name: "p".into(),
            sql: "INSERT INTO b SELECT * FROM a".into(),
            db: 3,
            commit_interval_ms: 10,
            sink_maxlen: Some((true, 1000)),
            paused: true,
            created_ms: 1_700_000_000_000,
            window: crate::window::WindowOptions {
                watermark_ms: 2000,
                lateness_ms: 5000,
                late_stream: Some("late".into()),
                emit: crate::window::Emit::Updates { every_ms: 250 },
                idle_ms: 3000,
                ..Default::default()
            },
        };
        let mut v = Vec::new();
        d.encode(&mut v);
        let mut c = Cursor::new(&v);
        assert_eq!(Definition::decode(&mut c), Ok(d.clone()));
        assert!(c.is_empty());
        for cut in 0..v.len() {
            assert!(Definition::decode(&mut Cursor::new(&v[..cut])).is_err());
        }
        let mut bad = v.clone();
        bad[0] = 9;
        assert!(Definition::decode(&mut Cursor::new(&bad)).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name(b"big_trades-1.v2:x"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"a b"));
        assert!(!valid_name(b"a,b"));
        assert!(!valid_name(&[b'a'; MAX_NAME_LEN + 1]));
    }
}
