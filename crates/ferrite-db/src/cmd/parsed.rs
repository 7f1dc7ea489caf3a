//! Commands that code outside their handler must understand before they
//! run, in parsed form: the read-ahead planner today (which evicted blocks
//! will XRANGE, XREVRANGE, XREAD, XREADGROUP, XDEL, XCLAIM, XAUTOCLAIM,
//! XINFO STREAM and exact trims (XTRIM, XADD) read?),
//! pipelines tomorrow.
//! Each is parsed once, by the same function its handler uses; the plan
//! works on the typed value, and the value is handed to the handler
//! (`Ctx::parsed`), which then does not parse again.

use super::read::ReadArgs;
use super::stream::XRangeArgs;
use super::Prefetch;
use crate::args::Args;
use crate::store::Db;
use crate::store::Value;
use bytes::Bytes;
use ferrite_streams::id::parse_strict_id;
use ferrite_streams::StreamId;

#[derive(Debug, Clone)]
pub enum Parsed {
    XRange(XRangeArgs),
    XRead(ReadArgs),
    /// XDEL and XCLAIM: the entries named by ID, each read (to delete it,
    /// or to see that it still exists and reply it). Only planned: their
    /// handlers parse their arguments themselves.
    Ids {
        key: Bytes,
        ids: Vec<StreamId>,
    },
    /// XAUTOCLAIM: the group's pending entries from `start`, as many as it
    /// may examine (COUNT × 10 attempts), each read to see that it exists.
    AutoClaim {
        key: Bytes,
        group: Bytes,
        start: StreamId,
        attempts: usize,
    },
    /// XTRIM, and XADD with a trim: an exact trim reads the first block it
    /// does not remove whole (XADD's after appending one entry).
    Trim {
        key: Bytes,
        spec: ferrite_streams::TrimSpec,
        added: u64,
    },
    /// XINFO STREAM: the first live entry (and the last without FULL), or
    /// with FULL the first COUNT entries (`None`: all of them).
    XInfoStream {
        key: Bytes,
        full: Option<Option<usize>>,
    },
}

impl Parsed {
    /// `argv` parsed, if it is one of these commands with valid arguments
    /// (bad ones are left to the handler, which replies Redis's error).
    /// The arguments are borrowed, not copied.
    pub fn parse(argv: &[Bytes]) -> Option<Parsed> {
        let name = argv.first()?;
        let a = &mut Args::borrowed(argv);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"xrange") || is(b"xrevrange") {
            XRangeArgs::parse(a, is(b"xrevrange"))
                .ok()
                .map(Parsed::XRange)
        } else if is(b"xread") || is(b"xreadgroup") {
            ReadArgs::parse(a, is(b"xreadgroup"))
                .ok()
                .map(Parsed::XRead)
        } else if is(b"xdel") && argv.len() >= 3 {
            // Any bad ID fails the whole command: nothing to plan.
            let ids = argv[2..]
                .iter()
                .map(|b| parse_strict_id(b, 0).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(Parsed::Ids {
                key: argv[1].clone(),
                ids,
            })
        } else if is(b"xclaim") && argv.len() >= 6 {
            // The IDs end at the first argument that is not one.
            let ids = argv[5..]
                .iter()
                .map_while(|b| parse_strict_id(b, 0).ok())
                .collect();
            Some(Parsed::Ids {
                key: argv[1].clone(),
                ids,
            })
        } else if (is(b"xtrim") || is(b"xadd")) && argv.len() >= 4 {
            let xadd = is(b"xadd");
            // Positioned after the key (a cursor starts past its first item).
            let a = &mut Args::borrowed(&argv[1..]);
            let spec = super::stream::parse_add_trim(a, xadd).ok()?.trim?;
            if spec.approx {
                return None;
            }
            Some(Parsed::Trim {
                key: argv[1].clone(),
                spec,
                added: xadd as u64,
            })
        } else if is(b"xautoclaim") && argv.len() >= 6 {
            let start = super::group::range_start(&argv[5]).ok()?;
            let mut count = 100usize;
            if let [c, n, ..] = &argv[6..] {
                if c.eq_ignore_ascii_case(b"count") {
                    count = usize::try_from(crate::args::parse_i64(n)?).ok()?;
                }
            }
            Some(Parsed::AutoClaim {
                key: argv[1].clone(),
                group: argv[2].clone(),
                start,
                attempts: count.saturating_mul(10),
            })
        } else if is(b"xinfo") && argv.len() >= 3 && argv[1].eq_ignore_ascii_case(b"stream") {
            let key = argv[2].clone();
            let full = match &argv[3..] {
                [] => None,
                [f] if f.eq_ignore_ascii_case(b"full") => Some(Some(10)),
                [f, c, n]
                    if f.eq_ignore_ascii_case(b"full") && c.eq_ignore_ascii_case(b"count") =>
                {
                    let n = crate::args::parse_i64(n)?;
                    Some((n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX)))
                }
                _ => return None,
            };
            Some(Parsed::XInfoStream { key, full })
        } else {
            None
        }
    }

    /// The evicted blocks it will read in `db`, from the index alone.
    pub fn prefetch(&self, db: &Db) -> Prefetch {
        match self {
            Parsed::XRange(r) => r.prefetch(db),
            Parsed::XRead(r) => r.prefetch(db),
            Parsed::Ids { key, ids } => ids_prefetch(db, key, ids),
            Parsed::XInfoStream { key, full } => xinfo_prefetch(db, key, *full),
            Parsed::AutoClaim {
                key,
                group,
                start,
                attempts,
            } => autoclaim_prefetch(db, key, group, *start, *attempts),
            Parsed::Trim { key, spec, added } => match db.get(key) {
                Some(Value::Stream(s)) => s.trim_reads(spec, *added).into_iter().collect(),
                _ => Vec::new(),
            },
        }
    }
}

/// The evicted blocks holding the entries `ids` of the stream at `key`: one
/// block per ID at most (the one whose range covers it), each once, up to
/// `PREFETCH_MAX_BLOCKS`.
fn ids_prefetch(db: &Db, key: &Bytes, ids: &[StreamId]) -> Prefetch {
    let Some(Value::Stream(s)) = db.get(key) else {
        return Vec::new();
    };
    let mut out = super::PlanBuilder::default();
    for &id in ids {
        if out.full() {
            break;
        }
        out.extend(s.evicted_in_range(id, id, false, Some(1), 1));
    }
    out.finish()
}

/// The evicted blocks holding the pending entries XAUTOCLAIM may examine:
/// the group's, from `start`, at most `attempts` of them (it may stop
/// sooner: what it does not read is dropped after it).
fn autoclaim_prefetch(
    db: &Db,
    key: &Bytes,
    group: &[u8],
    start: StreamId,
    attempts: usize,
) -> Prefetch {
    let Some(Value::Stream(s)) = db.get(key) else {
        return Vec::new();
    };
    let Some(g) = s.group(group) else {
        return Vec::new();
    };
    let ids: Vec<StreamId> = g
        .pending_range(start, StreamId::MAX)
        .take(attempts.min(65_536))
        .map(|p| p.id)
        .collect();
    ids_prefetch(db, key, &ids)
}

/// The evicted blocks XINFO STREAM reads: the first entry's, then the last
/// entry's (without FULL) or the first `count` entries' (FULL).
fn xinfo_prefetch(db: &Db, key: &Bytes, full: Option<Option<usize>>) -> Prefetch {
    let Some(Value::Stream(s)) = db.get(key) else {
        return Vec::new();
    };
    let mut out = super::PlanBuilder::default();
    out.extend(s.evicted_in_range(StreamId::MIN, StreamId::MAX, false, Some(1), 1));
    let room = out.room();
    out.extend(match full {
        None => s.evicted_in_range(StreamId::MIN, StreamId::MAX, true, Some(1), 1),
        Some(count) => s.evicted_in_range(StreamId::MIN, StreamId::MAX, false, count, room),
    });
    out.finish()
}
