//! Property test: random sequences of XADD (explicit, `*`, `ms-*`), XDEL,
//! exact trims (MAXLEN / MINID), approximate trims (with and without LIMIT),
//! config changes and range reads agree with a plain `Vec` model. Approximate
//! trims are checked for their invariants (a prefix of whole blocks, never
//! below the MAXLEN target, never past LIMIT, only IDs below MINID), then the
//! model follows what was removed.
//!
//! The stream under test is linked to an in-memory [`BlockSource`]; `Seal`,
//! `Demote`, `Evict` and `Reopen` ops store its full blocks (most with a
//! packed copy kept in memory; unread ones then keep only that), drop their
//! decoded bytes, drop both tiers, and rebuild it from its checkpoint bytes
//! (the real snapshot codec), while a twin stream without storage gets the
//! same commands: both must keep identical blocks.

use bytes::Bytes;
use ferrite_streams::snapshot::{assemble, publish_runs, Reader, SnapshotState};
use ferrite_streams::{
    AddError, BlockCache, BlockLoc, BlockSource, Fetched, Storage, Stream, StreamConfig, StreamId,
    Trim, TrimSpec, XaddId,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
enum Op {
    /// Explicit ID `last.ms + gap` - `seq`.
    AddExplicit {
        gap: u64,
        seq: u64,
        fields: usize,
    },
    /// `*` with the clock at `last.ms + skew` (saturating at 0).
    AddAuto {
        skew: i64,
        fields: usize,
    },
    /// `ms-*` with `ms = last.ms + delta`.
    AddAutoSeq {
        delta: i64,
        fields: usize,
    },
    /// Deletes: each pick is an index into the live entries, or (if past the
    /// end) a probably missing ID.
    Delete(Vec<usize>),
    TrimMaxLen {
        n: u64,
        approx: bool,
        limit: Option<u64>,
    },
    /// MINID at a live entry's ID (by index), or past everything.
    TrimMinId {
        pick: usize,
        plus: bool,
        approx: bool,
        limit: Option<u64>,
    },
    Range {
        a: usize,
        b: usize,
        count: Option<usize>,
        rev: bool,
    },
    Config(StreamConfig),
    /// Store every full block (a checkpoint's seal step).
    Seal,
    /// Drop the decoded copy of every stored block (those without a packed
    /// copy are then absent).
    Demote,
    /// Drop the bytes of every stored block, both tiers.
    Evict,
    /// Seal, then rebuild the stream from the resulting index.
    Reopen,
}

/// Blocks "on disk": a map from location to bytes.
#[derive(Default)]
struct MemSource {
    blocks: Mutex<HashMap<u64, (StreamId, Vec<u8>)>>,
}

impl MemSource {
    fn put(&self, master: StreamId, bytes: Vec<u8>) -> BlockLoc {
        let mut m = self.blocks.lock().expect("lock");
        let n = m.len() as u64;
        m.insert(n, (master, bytes));
        BlockLoc {
            segment: n,
            offset: 0,
            len: 0,
        }
    }
}

impl BlockSource for MemSource {
    fn read(&self, stream: u64, master: StreamId, loc: BlockLoc) -> Result<Fetched, String> {
        assert_eq!(stream, 7);
        let m = self.blocks.lock().expect("lock");
        match m.get(&loc.segment) {
            // Some reads come with a packed form, as the server's do for
            // blocks stored compressed.
            Some((mm, b)) if *mm == master => Ok(Fetched {
                bytes: b.clone(),
                packed: loc.segment.is_multiple_of(2).then(|| pack(b)),
            }),
            _ => Err(format!("no block {master} at {loc:?}")),
        }
    }

    fn unpack(&self, packed: &[u8]) -> Result<Vec<u8>, String> {
        unpack(packed)
    }
}

/// The packed form of a block in this test: its bytes reversed, after a
/// marker (opaque to the crate; the server packs with LZ4).
fn pack(bytes: &[u8]) -> Box<[u8]> {
    std::iter::once(0xA5)
        .chain(bytes.iter().rev().copied())
        .collect()
}

fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    match packed.split_first() {
        Some((0xA5, rest)) => Ok(rest.iter().rev().copied().collect()),
        _ => Err("not a packed block".into()),
    }
}

/// A checkpoint of `s` through the stream's real snapshot codec: the body
/// is written, its full blocks stored in `src` and their locations patched
/// in, then published (the blocks may drop their bytes). Returns the body.
fn seal(s: &mut Stream, src: &MemSource, cache: &Arc<BlockCache>) -> Vec<u8> {
    let mut st = SnapshotState {
        cache: Some(cache.clone()),
        next_storage_id: 8,
        ..SnapshotState::default()
    };
    let mut body = Vec::new();
    s.write_snapshot(&mut body, &mut st);
    // What was taken by reference (the stream's kept run) goes in now.
    let mut body = assemble(
        body,
        st.inserts,
        &mut st.jobs,
        &mut st.referenced,
        &mut st.lists,
    );
    for (n, job) in st.jobs.iter().enumerate() {
        let loc = src.put(job.master, job.bytes.to_vec());
        job.patch(&mut body, loc);
        // Some blocks keep a packed copy in memory (the server keeps one
        // for every block stored compressed).
        if n % 3 != 2 {
            job.keep_packed(pack(&job.bytes));
        }
    }
    let bytes = st.jobs.iter().map(|job| job.publish(&body)).sum();
    cache.stored(bytes);
    publish_runs(&st.fills, &st.jobs, &body);
    body
}

const FIELD_SETS: &[&[&str]] = &[
    &["symbol", "BTC", "price", "42000.5", "volume", "3"],
    &["symbol", "ETH", "price", "-17", "volume", "127"],
    &["a", "1"],
    &["a", "", "b", "01"],
    &[
        "x",
        "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
    ],
    &["1", "9223372036854775807", "2", "-4096"],
];

fn fields(i: usize) -> Vec<Bytes> {
    FIELD_SETS[i % FIELD_SETS.len()]
        .iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn limit_strategy() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), (1u64..30).prop_map(Some)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![8 => Just(0u64), 8 => Just(1), 4 => Just(2), 2 => Just(1000), 1 => Just(u64::MAX / 8)], 0u64..4, 0usize..6)
            .prop_map(|(gap, seq, fields)| Op::AddExplicit { gap, seq, fields }),
        4 => (-2i64..3, 0usize..6).prop_map(|(skew, fields)| Op::AddAuto { skew, fields }),
        2 => (-1i64..3, 0usize..6).prop_map(|(delta, fields)| Op::AddAutoSeq { delta, fields }),
        2 => prop::collection::vec(0usize..40, 1..4).prop_map(Op::Delete),
        2 => (0u64..30, any::<bool>(), limit_strategy())
            .prop_map(|(n, approx, limit)| Op::TrimMaxLen { n, approx, limit }),
        2 => (0usize..40, any::<bool>(), any::<bool>(), limit_strategy())
            .prop_map(|(pick, plus, approx, limit)| Op::TrimMinId { pick, plus, approx, limit }),
        3 => (0usize..45, 0usize..45, prop_oneof![Just(None), (0usize..5).prop_map(Some)], any::<bool>())
            .prop_map(|(a, b, count, rev)| Op::Range { a, b, count, rev }),
        1 => (prop_oneof![Just(0u64), 1..6u64, Just(100)], prop_oneof![Just(0u64), 30..400u64, Just(4096)])
            .prop_map(|(e, b)| Op::Config(StreamConfig { node_max_entries: e, node_max_bytes: b })),
        2 => Just(Op::Seal),
        2 => Just(Op::Demote),
        2 => Just(Op::Evict),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    entries: Vec<(StreamId, Vec<Bytes>)>,
    last_id: StreamId,
    max_deleted: StreamId,
    entries_added: u64,
}

impl Model {
    fn next_id(&self, id: XaddId, now_ms: u64) -> Result<StreamId, AddError> {
        if id == XaddId::Explicit(StreamId::MIN) {
            return Err(AddError::IdZero);
        }
        if self.last_id == StreamId::MAX {
            return Err(AddError::Exhausted);
        }
        let new = match id {
            XaddId::Auto if now_ms > self.last_id.ms => StreamId::new(now_ms, 0),
            XaddId::Auto => self.last_id.incr().ok_or(AddError::Exhausted)?,
            XaddId::AutoSeq(ms) if ms == self.last_id.ms => {
                if self.last_id.seq == u64::MAX {
                    return Err(AddError::IdTooSmall);
                }
                StreamId::new(ms, self.last_id.seq + 1)
            }
            XaddId::AutoSeq(ms) => StreamId::new(ms, 0),
            XaddId::Explicit(id) => id,
        };
        if new <= self.last_id {
            return Err(AddError::IdTooSmall);
        }
        Ok(new)
    }

    /// An ID for picks: a live entry's ID, or something beyond / between.
    fn pick_id(&self, pick: usize) -> StreamId {
        match self.entries.get(pick) {
            Some((id, _)) => *id,
            None => StreamId::new(
                self.last_id.ms.saturating_add((pick % 3) as u64),
                pick as u64 % 5,
            ),
        }
    }

    fn first_id(&self) -> StreamId {
        self.entries.first().map_or(StreamId::MIN, |e| e.0)
    }
}

fn check_same(s: &Stream, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.len(), m.entries.len() as u64);
    prop_assert_eq!(s.last_id(), m.last_id);
    prop_assert_eq!(s.max_deleted_id(), m.max_deleted);
    prop_assert_eq!(s.entries_added(), m.entries_added);
    prop_assert_eq!(s.first_id(), m.first_id());
    if let Err(e) = s.check_invariants() {
        return Err(TestCaseError::fail(e));
    }
    Ok(())
}

fn blocks_of(s: &Stream) -> Vec<(StreamId, u64)> {
    s.blocks()
        .map(|b| (b.master_id(), b.live_count()))
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let src = Arc::new(MemSource::default());
    let cache = BlockCache::new(src.clone());
    let storage = Storage {
        id: 7,
        cache: cache.clone(),
    };
    let mut s = Stream::new();
    s.set_storage(storage.clone());
    // The same commands without storage: blocks must stay identical.
    let mut twin = Stream::new();
    let mut m = Model::default();
    let mut cfg = StreamConfig {
        node_max_entries: 3,
        node_max_bytes: 200,
    };
    for op in ops {
        match op {
            Op::AddExplicit {
                gap,
                seq,
                fields: f,
            } => {
                let id = XaddId::Explicit(StreamId::new(m.last_id.ms.saturating_add(gap), seq));
                let _ = twin.add(id, &fields(f), 0, &cfg);
                add(&mut s, &mut m, id, 0, f, &cfg)?;
            }
            Op::AddAuto { skew, fields: f } => {
                let now = m.last_id.ms.saturating_add_signed(skew);
                let _ = twin.add(XaddId::Auto, &fields(f), now, &cfg);
                add(&mut s, &mut m, XaddId::Auto, now, f, &cfg)?;
            }
            Op::AddAutoSeq { delta, fields: f } => {
                let ms = m.last_id.ms.saturating_add_signed(delta);
                let _ = twin.add(XaddId::AutoSeq(ms), &fields(f), 0, &cfg);
                add(&mut s, &mut m, XaddId::AutoSeq(ms), 0, f, &cfg)?;
            }
            Op::Delete(picks) => {
                let ids: Vec<StreamId> = picks.iter().map(|&p| m.pick_id(p)).collect();
                let mut expected = 0;
                for id in &ids {
                    if let Some(pos) = m.entries.iter().position(|e| e.0 == *id) {
                        m.entries.remove(pos);
                        m.max_deleted = m.max_deleted.max(*id);
                        expected += 1;
                    }
                }
                prop_assert_eq!(s.delete(&ids), expected);
                twin.delete(&ids);
            }
            Op::TrimMaxLen { n, approx, limit } => {
                let spec = TrimSpec {
                    strategy: Trim::MaxLen(n),
                    approx,
                    limit: if approx { limit } else { None },
                };
                twin.trim(&spec, &cfg);
                trim(&mut s, &mut m, &spec, &cfg)?;
            }
            Op::TrimMinId {
                pick,
                plus,
                approx,
                limit,
            } => {
                let mut min = m.pick_id(pick);
                if plus {
                    min = min.incr().unwrap_or(min);
                }
                let spec = TrimSpec {
                    strategy: Trim::MinId(min),
                    approx,
                    limit: if approx { limit } else { None },
                };
                twin.trim(&spec, &cfg);
                trim(&mut s, &mut m, &spec, &cfg)?;
            }
            Op::Range { a, b, count, rev } => {
                let (start, end) = (m.pick_id(a), m.pick_id(b));
                let mut want: Vec<_> = m
                    .entries
                    .iter()
                    .filter(|e| e.0 >= start && e.0 <= end)
                    .map(|e| (e.0, e.1.clone()))
                    .collect();
                if rev {
                    want.reverse();
                }
                want.truncate(count.unwrap_or(usize::MAX));
                let got: Vec<_> = s
                    .range(start, end, count, rev)
                    .into_iter()
                    .map(|e| (e.id, e.fields))
                    .collect();
                prop_assert_eq!(got, want);
                // XREAD-style reads agree too.
                let after: Vec<_> = s
                    .entries_after(start, count)
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                let mut want_after: Vec<_> = m
                    .entries
                    .iter()
                    .filter(|e| e.0 > start)
                    .map(|e| e.0)
                    .collect();
                want_after.truncate(count.unwrap_or(usize::MAX));
                prop_assert_eq!(after, want_after);
            }
            Op::Config(c) => cfg = c,
            Op::Seal => {
                seal(&mut s, &src, &cache);
                if cache.take_settle() {
                    s.settle_stored();
                }
            }
            Op::Demote => {
                s.evict_before(u64::MAX, 0);
            }
            Op::Evict => {
                s.evict_before(u64::MAX, u64::MAX);
            }
            Op::Reopen => {
                let body = seal(&mut s, &src, &cache);
                let mut r = Reader::new(&body);
                s = Stream::read_snapshot(&mut r, 3, b"s", Some(&cache), 8)
                    .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
                prop_assert!(r.done(), "bytes left after the stream");
            }
        }
        check_same(&s, &m)?;
        prop_assert_eq!(s.meta(), twin.meta());
        prop_assert_eq!(s.len(), twin.len());
        prop_assert_eq!(blocks_of(&s), blocks_of(&twin));
        let all = |x: &Stream| x.range(StreamId::MIN, StreamId::MAX, None, false);
        prop_assert_eq!(all(&s), all(&twin));
        prop_assert_eq!(
            s.blocks().map(|b| b.listpack_bytes()).collect::<Vec<_>>(),
            twin.blocks()
                .map(|b| b.listpack_bytes())
                .collect::<Vec<_>>()
        );
        if let Some(e) = cache.take_error() {
            return Err(TestCaseError::fail(e));
        }
    }
    Ok(())
}

fn add(
    s: &mut Stream,
    m: &mut Model,
    id: XaddId,
    now: u64,
    f: usize,
    cfg: &StreamConfig,
) -> Result<(), TestCaseError> {
    let fv = fields(f);
    let want = m.next_id(id, now);
    let got = s.add(id, &fv, now, cfg);
    prop_assert_eq!(got, want);
    if let Ok(new) = want {
        m.entries.push((new, fv));
        m.last_id = new;
        m.entries_added += 1;
    }
    Ok(())
}

fn trim(
    s: &mut Stream,
    m: &mut Model,
    spec: &TrimSpec,
    cfg: &StreamConfig,
) -> Result<(), TestCaseError> {
    let before = blocks_of(s);
    let removed = s.trim(spec, cfg);
    if !spec.approx {
        let keep_from = match spec.strategy {
            Trim::MaxLen(n) => m.entries.len().saturating_sub(n as usize),
            Trim::MinId(min) => m.entries.iter().take_while(|e| e.0 < min).count(),
        };
        prop_assert_eq!(removed, keep_from as u64);
        m.entries.drain(..keep_from);
        return Ok(());
    }
    // Approximate: whole blocks from the head only.
    let after = blocks_of(s);
    prop_assert!(after.len() <= before.len());
    let dropped = before.len() - after.len();
    prop_assert_eq!(&before[dropped..], after.as_slice());
    let dropped_live: u64 = before[..dropped].iter().map(|b| b.1).sum();
    prop_assert_eq!(removed, dropped_live);
    let limit = spec.limit.unwrap_or_else(|| cfg.default_approx_limit());
    if limit != 0 {
        prop_assert!(removed <= limit);
    }
    let removed_entries: Vec<_> = m.entries.drain(..removed as usize).collect();
    match spec.strategy {
        Trim::MaxLen(n) => prop_assert!(m.entries.len() as u64 >= n || removed == 0),
        Trim::MinId(min) => prop_assert!(removed_entries.iter().all(|e| e.0 < min)),
    }
    // Never more than needed: one block less would not have reached the target.
    if let (Trim::MaxLen(n), Some(first)) = (spec.strategy, after.first()) {
        if (m.entries.len() as u64) > n && (limit == 0 || removed + first.1 <= limit) {
            prop_assert!((m.entries.len() as u64) - first.1 < n);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn stream_matches_model(ops in prop::collection::vec(op_strategy(), 1..150)) {
        run(ops)?;
    }
}

/// Evicted blocks are read back on demand, and a failed read is reported,
/// never silently dropped from a count.
#[test]
fn evicted_blocks_are_read_back() {
    let src = Arc::new(MemSource::default());
    let cache = BlockCache::new(src.clone());
    let mut s = Stream::new();
    s.set_storage(Storage {
        id: 7,
        cache: cache.clone(),
    });
    let cfg = StreamConfig::default();
    for i in 1..=1000u64 {
        s.add(XaddId::Explicit(StreamId::new(i, 0)), &fields(0), 0, &cfg)
            .expect("add");
    }
    let all = s.range(StreamId::MIN, StreamId::MAX, None, false);
    seal(&mut s, &src, &cache);
    let freed = s.evict_before(u64::MAX, u64::MAX);
    assert!(freed.decoded > 0 && freed.packed > 0);
    // Only the open tail block stays resident.
    assert_eq!(s.resident().0, 1);
    assert_eq!(s.range(StreamId::MIN, StreamId::MAX, None, false), all);
    assert_eq!(cache.loads(), 9);
    assert_eq!(s.delete(&[StreamId::new(5, 0)]), 1);
    s.evict_before(u64::MAX, u64::MAX);
    // The changed block is no longer stored, so it stays resident.
    assert_eq!(s.resident().0, 2);
    assert_eq!(s.len(), 999);
    assert!(cache.take_error().is_none());
    // A block that cannot be read back is reported.
    seal(&mut s, &src, &cache);
    s.evict_before(u64::MAX, u64::MAX);
    src.blocks.lock().expect("lock").clear();
    assert_eq!(
        s.range(StreamId::MIN, StreamId::MAX, None, false).len(),
        100
    );
    assert!(matches!(cache.take_error(), Some(e) if e.contains("no block")));
}
