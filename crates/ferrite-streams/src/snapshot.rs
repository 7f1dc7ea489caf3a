//! A stream's persisted form in a checkpoint: its metadata, its blocks
//! (inline bytes for the open tail, a summary and a segment-file location
//! for stored ones, and full blocks to store now), and its consumer groups
//! with every pending entry. The keyspace around it (key names, types,
//! databases) is framed by the database crate; this module owns the bytes
//! from the stream's metadata to its last pending entry.
//!
//! Layout (little-endian; IDs are two u64s), version 3 and later:
//! `id last, id first, id max_deleted, u64 entries_added, u8 disordered,
//! u64 storage_id (0: none), u64 nblocks`, per block `u8 tag` then
//! tag 0 (inline): `id master, u32 len, bytes`; tag 1 (stored): `id master,
//! u64 live, u64 deleted, u64 listpack_bytes, id last, u64 segment,
//! u64 offset, u64 len`; then `u32 ngroups`, per group `u32 len, name,
//! id last_delivered, i64 entries_read, u32 nconsumers` (per consumer
//! `u32 len, name, u64 seen_time`), `u64 npending` (per entry `id, u32
//! consumer index, u64 delivery_time, u64 delivery_count`).
//! Version 2 (still read) has no `disordered`, no `storage_id` and no block
//! tags: every block is `id master, u32 len, bytes`.
//!
//! Decoding checks every length against the bytes present and every block
//! with [`Block::from_parts`]; what it does not understand is an error that
//! says what and where, never a panic or a guess.

use crate::block::Block;
use crate::group::Group;
use crate::sealed::{BlockCache, BlockLoc, SealTicket, Storage, Stored, Summary};
use crate::stream::{RestoredBlock, Stream, StreamMeta};
use crate::StreamId;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A bounds-checked cursor over checkpoint bytes (from disk: every read is
/// checked, every error says at which byte).
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<usize, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A `u32` length and that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()?;
        self.take(n)
    }
    pub fn id(&mut self) -> Result<StreamId, String> {
        Ok(StreamId::new(self.u64()?, self.u64()?))
    }
    /// Run a decoder that reads from a byte slice (advancing it) on the
    /// bytes not read yet, and move past what it consumed.
    pub fn with_rest<T>(
        &mut self,
        f: impl FnOnce(&mut &'a [u8]) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut rest = &self.b[self.pos..];
        let out = f(&mut rest)?;
        self.pos = self.b.len() - rest.len();
        Ok(out)
    }
    /// The bytes from `from` to `to` (empty if out of range).
    pub fn span(&self, from: usize, to: usize) -> &'a [u8] {
        self.b.get(from..to).unwrap_or(&[])
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

fn put_stored(out: &mut Vec<u8>, master: StreamId, s: &Summary) {
    out.push(1);
    put_id(out, master);
    out.extend_from_slice(&s.live.to_le_bytes());
    out.extend_from_slice(&s.deleted.to_le_bytes());
    out.extend_from_slice(&s.listpack_bytes.to_le_bytes());
    put_id(out, s.last_id);
}

const LOC_LEN: usize = 24;

/// Bytes of one stored block in the body: `u8 tag, id master, u64 live,
/// u64 deleted, u64 listpack_bytes, id last, u64 segment, u64 offset, u64
/// len`.
pub(crate) const STORED_LEN: usize = 1 + 16 + 3 * 8 + 16 + LOC_LEN;

/// A stream's stored blocks as the last checkpoint encoded them, kept for
/// the next one (docs/storage.md, "The snapshot's lock hold").
///
/// Invariant: entries `start..end` of `bytes` (each [`STORED_LEN`] bytes)
/// are exactly the stored form of the stream's first `end - start` blocks,
/// in key order, each stored at the location it names; `last` is the
/// master of entry `end - 1`. Every change to one of those blocks goes
/// through [`StoredRun::changed`] or [`StoredRun::removed`] (which only
/// move `start` and `end`), so the bytes a snapshot shares are never
/// written again: they grow in place only while no snapshot holds them
/// ([`Arc::get_mut`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct StoredRun {
    bytes: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    last: StreamId,
    /// The blocks right after the run that the last snapshot handed out to
    /// store: their entries come back from the checkpoint thread once they
    /// are durable ([`publish_runs`]), so the next snapshot appends them
    /// without visiting the blocks. Dropped by any change at or below its
    /// last master.
    pending: Option<PendingRun>,
    /// The blocks sealed since the last snapshot, kept by the append that
    /// sealed them, so that the next snapshot hands them out without
    /// descending the tree or touching their nodes.
    sealed: SealedList,
}

/// A stream's blocks sealed since the last snapshot, as the appends that
/// sealed them left them ([`StoredRun::sealed_one`]).
///
/// Invariant while `valid`: the stream's blocks with a master above
/// `after`, except its last block (master `tail`, the open tail), are
/// exactly `entries`, in key order, each a [`Stored::Sealed`] node whose
/// bytes, ticket and summary are the entry's. So a snapshot whose run
/// ends at `after` writes the run, then `entries`, then the tail: the
/// whole stream. Kept by [`StoredRun::changed`] and
/// [`StoredRun::removed`], which every change to a block goes through:
/// any change but to the tail's own bytes (an XADD into it, an XDEL or
/// trim in it) drops the list, and any removal above `after`; the next
/// snapshot then walks the tree as before and starts a new list. Made
/// valid only by a snapshot that left the stream as its run, the blocks
/// it handed out right after the run, and the tail, or by a new stream
/// whose blocks a checkpoint will store, or by a load that found the
/// stream to be its run and its tail ([`StoredRun::list_from`]).
/// `after` is the minimum ID only while the run is empty and nothing was
/// handed out (every block but the tail is listed). At most one entry
/// per block of the stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct SealedList {
    valid: bool,
    after: StreamId,
    tail: StreamId,
    entries: Vec<Listed>,
}

/// A block in a [`SealedList`]: what its job needs, without the node.
#[derive(Clone, Debug)]
struct Listed {
    master: StreamId,
    sum: Summary,
    bytes: Arc<Vec<u8>>,
    ticket: Arc<SealTicket>,
}

impl SealedList {
    fn drop_all(&mut self) {
        self.valid = false;
        self.entries.clear();
    }
}

/// Where the entries of the blocks a snapshot handed out come back: slot
/// `index` of that snapshot's [`HandBack`] (`snapshot` is its id).
#[derive(Clone, Debug)]
struct PendingRun {
    snapshot: u64,
    index: usize,
    last: StreamId,
    count: usize,
}

/// Snapshot ids ([`SnapshotState::id`]): unique in the process, never 0.
static SNAPSHOT_IDS: AtomicU64 = AtomicU64::new(1);

/// What one checkpoint gives back to the runs of the streams it handed
/// blocks out for ([`publish_runs`]): one slot per [`RunFill`], by its
/// index, so a snapshot costs one vector, not an allocation per stream.
/// The next snapshot takes it ([`SnapshotState::handed_back`]); a stream
/// uses its slot only if `snapshot` is the id its [`PendingRun`] names
/// (a checkpoint that failed, or whose hand-back the next snapshot did
/// not get, gives nothing: the blocks are visited again).
#[derive(Debug, Default)]
pub struct HandBack {
    snapshot: u64,
    entries: Vec<Option<HandedBack>>,
    bytes: Vec<u8>,
}

/// What the checkpoint thread gives back to a stream's run
/// ([`publish_runs`]).
#[derive(Debug)]
enum HandedBack {
    /// The stored form of the blocks handed out, to append in place: this
    /// range of [`HandBack`]'s `bytes` (all streams' entries in one
    /// buffer, in the order the next snapshot reads them).
    Entries(std::ops::Range<usize>),
    /// The run as the snapshot shared it (buffer `base`, bytes
    /// `from..shared_end`) followed by those entries, in a new buffer
    /// with room to grow: built off the lock when appending in place would
    /// have copied the whole run under it (the buffer was full, or half of
    /// it dead head entries), or when there was no run (`base` 0,
    /// `shared_end` 0: the buffer is the entries alone). A stream's run is
    /// its whole index: one stream of 10M entries has a run of 8 MB.
    Whole {
        bytes: Vec<u8>,
        base: usize,
        from: usize,
        shared_end: usize,
    },
}

impl StoredRun {
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether the sealed list is kept (see [`SealedList`]).
    pub(crate) fn keeps_sealed_list(&self) -> bool {
        self.sealed.valid
    }

    /// Start an empty sealed list after block `after` (the minimum ID:
    /// the stream's start), the open tail being `tail`: by a snapshot that
    /// left the stream as its run, the blocks it handed out and the tail;
    /// for a new stream whose blocks a checkpoint will store (both the
    /// minimum ID: its first block becomes the tail); for a stream loaded
    /// as its run and its tail.
    pub(crate) fn list_from(&mut self, after: StreamId, tail: StreamId) {
        let list = &mut self.sealed;
        list.entries.clear();
        list.valid = true;
        list.after = after;
        list.tail = tail;
    }

    /// The stream, empty, gets its first block `master`: a list kept from
    /// the start (nothing stored, nothing listed) has it as its tail.
    pub(crate) fn first_block(&mut self, master: StreamId) {
        let empty = self.is_empty();
        let list = &mut self.sealed;
        if list.valid && list.after == StreamId::MIN && list.entries.is_empty() && empty {
            list.tail = master;
        }
    }

    /// The run of a stream loaded from a checkpoint: the `n` stored-form
    /// entries of its first blocks as the body held them, the last of
    /// them `last` (so the first snapshot after a start shares them
    /// instead of walking every stored block).
    pub(crate) fn loaded(bytes: Vec<u8>, n: usize, last: StreamId) -> StoredRun {
        StoredRun {
            bytes: Arc::new(bytes),
            start: 0,
            end: n,
            last,
            ..StoredRun::default()
        }
    }

    /// Blocks in the run.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// The master of the run's last block (meaningless when empty).
    pub(crate) fn last(&self) -> StreamId {
        self.last
    }

    fn master_at(&self, i: usize) -> StreamId {
        let at = i * STORED_LEN + 1;
        let mut r = Reader::new(self.bytes.get(at..at + 16).unwrap_or(&[]));
        // Entries are written by `push` only: always 16 bytes here.
        r.id().unwrap_or(StreamId::MIN)
    }

    /// Block `master` changed (its bytes, its storage, or a new block with
    /// that master): the run ends before it.
    pub(crate) fn changed(&mut self, master: StreamId) {
        // The open tail's own changes keep the sealed list.
        if self.sealed.valid && master != self.sealed.tail {
            self.sealed.drop_all();
        }
        self.changed_last(master);
    }

    /// [`StoredRun::changed`] for the stream's last block (XADD's path:
    /// the sealed list is not looked at, as its tail is that block by the
    /// list's invariant, which `Stream::write_listed` checks before it
    /// uses the list).
    pub(crate) fn changed_last(&mut self, master: StreamId) {
        if self.pending.as_ref().is_some_and(|p| master <= p.last) {
            self.pending = None;
        }
        if self.is_empty() || master > self.last {
            return;
        }
        let (mut lo, mut hi) = (self.start, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.master_at(mid) < master {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.end = lo;
        if !self.is_empty() {
            self.last = self.master_at(self.end - 1);
        }
    }

    /// Block `master` was removed: a head block (trimming) moves the start,
    /// any other ends the run before it.
    pub(crate) fn removed(&mut self, master: StreamId) {
        // A listed block or the tail gone: the list no longer ends the
        // stream (head blocks at or below `after` leave it as it is).
        if self.sealed.valid && master > self.sealed.after {
            self.sealed.drop_all();
        }
        if !self.is_empty() && self.master_at(self.start) == master {
            self.start += 1;
        } else {
            self.changed(master);
        }
    }

    /// The tail block `master` filled up and was sealed (`stored`, from
    /// [`Node::preseal`](crate::sealed::Node)); the next block, the new
    /// tail, is `next`. Listed if the list is kept and the block has its
    /// ticket; otherwise the list is dropped. Called with the node in
    /// cache: a few words copied and two reference counts.
    pub(crate) fn sealed_one(
        &mut self,
        master: StreamId,
        sum: &Summary,
        stored: &Stored,
        next: StreamId,
    ) {
        if !self.sealed.valid {
            return;
        }
        match stored {
            Stored::Sealed(p) if master == self.sealed.tail && next > master => {
                if let Some((t, _)) = &p.tickets {
                    self.sealed.entries.push(Listed {
                        master,
                        sum: *sum,
                        bytes: Arc::clone(&p.bytes),
                        ticket: Arc::clone(t),
                    });
                    self.sealed.tail = next;
                    return;
                }
                self.sealed.drop_all();
            }
            _ => self.sealed.drop_all(),
        }
    }

    /// Append the next block (stored at `loc`): in place if no snapshot
    /// holds the bytes, else into a copy of the live entries. Dead head
    /// entries are dropped once they are half the buffer.
    pub(crate) fn push(&mut self, master: StreamId, sum: &Summary, loc: BlockLoc) {
        self.make_room();
        let v = Arc::make_mut(&mut self.bytes);
        v.truncate(self.end * STORED_LEN);
        put_stored(v, master, sum);
        put_loc(v, loc);
        self.end += 1;
        self.last = master;
    }

    /// Append the blocks the last snapshot handed out, if their entries came
    /// back in `back` (else they are visited and handed out again).
    /// Entries are read in place (freed with `back`, off the lock); a
    /// rebuilt run is moved out of its slot.
    fn take_pending(&mut self, back: &mut HandBack, garbage: &mut Garbage) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if p.snapshot != back.snapshot || p.count == 0 {
            return;
        }
        let Some(slot) = back.entries.get_mut(p.index) else {
            return;
        };
        match slot {
            None => {}
            Some(HandedBack::Entries(range)) => {
                let Some(entries) = back.bytes.get(range.clone()) else {
                    return;
                };
                if entries.len() != p.count * STORED_LEN {
                    return;
                }
                self.make_room();
                let v = Arc::make_mut(&mut self.bytes);
                v.truncate(self.end * STORED_LEN);
                v.extend_from_slice(entries);
                self.end += p.count;
                self.last = p.last;
            }
            Some(HandedBack::Whole {
                bytes,
                base,
                from,
                shared_end,
            }) => {
                // Only onto the buffer and end the snapshot shared (its
                // start may have moved on: whole head blocks trimmed), or,
                // a first run (`base` 0: never a buffer's address), onto a
                // run still empty.
                let (from, shared_end) = (*from, *shared_end);
                let first = *base == 0 && shared_end == 0 && self.is_empty();
                let start = if first { 0 } else { self.start * STORED_LEN };
                let onto_shared = Arc::as_ptr(&self.bytes) as usize == *base
                    && self.end * STORED_LEN == shared_end
                    && start >= from;
                if !(first || onto_shared)
                    || bytes.len() != shared_end - from + p.count * STORED_LEN
                {
                    return;
                }
                // Moved here without a copy (the slot is this stream's
                // alone: a copied stream's run finds it empty).
                let bytes = std::mem::take(bytes);
                *slot = None;
                let old = std::mem::replace(&mut self.bytes, Arc::new(bytes));
                garbage.2.push(old);
                self.start = (start - from) / STORED_LEN;
                self.end = (shared_end - from) / STORED_LEN + p.count;
                self.last = p.last;
            }
        }
    }

    /// Make the bytes this stream's own (copying the live entries if a
    /// snapshot holds them, or if dead head entries are half the buffer).
    fn make_room(&mut self) {
        let dead = self.start * STORED_LEN;
        if Arc::get_mut(&mut self.bytes).is_none() || (dead > 0 && dead >= self.bytes.len() / 2) {
            let live = &self.bytes[dead..self.end * STORED_LEN];
            let mut fresh = Vec::with_capacity(live.len() * 2 + STORED_LEN);
            fresh.extend_from_slice(live);
            self.bytes = Arc::new(fresh);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The live entries' bytes, shared (for one snapshot).
    pub(crate) fn share(&self) -> (Arc<Vec<u8>>, std::ops::Range<usize>) {
        (
            Arc::clone(&self.bytes),
            self.start * STORED_LEN..self.end * STORED_LEN,
        )
    }
}

fn put_loc(out: &mut Vec<u8>, loc: BlockLoc) {
    out.extend_from_slice(&loc.segment.to_le_bytes());
    out.extend_from_slice(&loc.offset.to_le_bytes());
    out.extend_from_slice(&loc.len.to_le_bytes());
}

/// An open tail block of at least this many bytes is shared with the
/// snapshot instead of copied under the store lock: below it, copying its
/// few cache lines costs less than the `Arc` and the copy the next XADD
/// into it may make.
const SHARE_TAIL_FROM: usize = 256;

/// A full block that the checkpoint must store in its stream's segment
/// file before the body is written; its location in the body is a
/// placeholder until [`SealJob::patch`].
#[derive(Debug)]
pub struct SealJob {
    /// The stream's storage id (its segment files).
    pub stream: u64,
    pub master: StreamId,
    pub last: StreamId,
    pub bytes: Arc<Vec<u8>>,
    ticket: Arc<SealTicket>,
    /// Where its location sits in the body.
    patch_at: usize,
}

impl SealJob {
    /// Write the location the block was stored at into `body`.
    pub fn patch(&self, body: &mut [u8], loc: BlockLoc) {
        let mut enc = Vec::with_capacity(LOC_LEN);
        put_loc(&mut enc, loc);
        if let Some(dst) = body.get_mut(self.patch_at..self.patch_at + LOC_LEN) {
            dst.copy_from_slice(&enc);
        }
    }

    /// Keep `packed`, the compressed bytes stored for this block, in
    /// memory for its node once [`SealJob::publish`] runs (see
    /// [`crate::sealed`]; [`crate::BlockSource::unpack`] decodes them).
    pub fn keep_packed(&self, packed: Box<[u8]>) {
        self.ticket.keep_packed(packed);
    }

    /// Once the checkpoint is durable: the block may drop its bytes (they
    /// can be read back from where `body` says). Returns the bytes made
    /// evictable (0 if the location was never patched in).
    pub fn publish(&self, body: &[u8]) -> u64 {
        let Some(loc) = body.get(self.patch_at..self.patch_at + LOC_LEN) else {
            return 0;
        };
        let mut r = Reader::new(loc);
        match (r.u64(), r.u64(), r.u64()) {
            (Ok(segment), Ok(offset), Ok(len)) => {
                self.ticket.fill(BlockLoc {
                    segment,
                    offset,
                    len,
                });
                self.bytes.len() as u64
            }
            _ => 0,
        }
    }
}

/// What writing streams into one checkpoint body collects.
#[derive(Default)]
pub struct SnapshotState {
    /// The block cache of stored blocks (persistence on); without one every
    /// block is written inline.
    pub cache: Option<Arc<BlockCache>>,
    /// The next storage id to give a stream that stores its first block.
    pub next_storage_id: u64,
    /// Full blocks to store before the body is written.
    pub jobs: Vec<SealJob>,
    /// Segment files (by storage id) that the body's stored blocks live in
    /// (those of shared runs are added by [`assemble`]).
    pub referenced: HashMap<u64, BTreeSet<u64>>,
    /// What goes into the body between the bytes written so far, by
    /// position in them, in order: see [`Insert`].
    pub inserts: Vec<(usize, Insert)>,
    /// What the snapshot let go of, to free off the store lock.
    pub garbage: Garbage,
    /// Streams' runs waiting for the entries of blocks in `jobs`
    /// ([`publish_runs`]).
    pub fills: Vec<RunFill>,
    /// What the last durable checkpoint gave back to the runs (its
    /// [`publish_runs`]); moved to `garbage` by [`SnapshotState::done`].
    pub handed_back: HandBack,
    /// This snapshot's id, named by the runs it hands blocks out for (0:
    /// none yet; taken when the first stream does).
    pub id: u64,
    /// Streams written from their sealed list, without walking their
    /// blocks ([`SealedList`]).
    pub listed: usize,
    /// Blocks of those lists: jobs [`assemble`] makes (between those in
    /// `jobs`, in body order), counted in the fills' job ranges.
    pub deferred_jobs: usize,
    /// Empty lists to swap into the streams whose lists are taken.
    pub lists: ListPool,
}

/// The entries of a stream's blocks handed out in `jobs[jobs]`, to give
/// back to its run once they are durable (in the slot of [`HandBack`] at
/// this fill's index, for snapshot `snapshot`).
pub struct RunFill {
    snapshot: u64,
    jobs: std::ops::Range<usize>,
    /// The stream's run as this snapshot shared it, if it had one (taken
    /// by [`publish_runs`], so that nothing holds it once the checkpoint
    /// is done: the next snapshot appends in place).
    base: std::sync::Mutex<Option<SharedRun>>,
}

/// A run's buffer and the bytes of it a snapshot shares.
type SharedRun = (Arc<Vec<u8>>, std::ops::Range<usize>);

/// Once the checkpoint is durable (after [`SealJob::publish`]): the stored
/// form of the blocks each stream handed out, as `body` has them
/// (locations patched in), for the next snapshot to append to its run
/// without visiting them (pass it as [`SnapshotState::handed_back`]). Off
/// the store lock. Not calling it only costs that visit.
pub fn publish_runs(fills: &[RunFill], jobs: &[SealJob], body: &[u8]) -> HandBack {
    let total = fills.iter().map(|f| f.jobs.len()).sum::<usize>();
    let mut back = HandBack {
        snapshot: fills.first().map_or(0, |f| f.snapshot),
        entries: Vec::with_capacity(fills.len()),
        bytes: Vec::with_capacity(total * STORED_LEN),
    };
    for f in fills {
        back.entries.push(None);
        let Some(js) = jobs.get(f.jobs.clone()) else {
            continue;
        };
        let at = back.bytes.len();
        for j in js {
            let end = j.patch_at + LOC_LEN;
            match end
                .checked_sub(STORED_LEN)
                .and_then(|from| body.get(from..end))
            {
                Some(e) => back.bytes.extend_from_slice(e),
                None => break,
            }
        }
        if back.bytes.len() - at != js.len() * STORED_LEN {
            back.bytes.truncate(at);
            continue;
        }
        let entries = &back.bytes[at..];
        let base = f.base.lock().ok().and_then(|mut b| b.take());
        // Rebuilt here when appending in place would copy under the lock:
        // the buffer has no room, or its dead head is half of it
        // (`StoredRun::make_room`); or when there is no run yet (the
        // stream's first stored blocks: base 0, nothing live).
        let rebuild = base.as_ref().is_none_or(|(run, range)| {
            run.capacity() < range.end + entries.len()
                || (range.start > 0 && range.start >= run.len() / 2)
        });
        let handed = if rebuild {
            let (live, base, range) = match &base {
                Some((run, range)) => (
                    run.get(range.clone()).unwrap_or(&[]),
                    Arc::as_ptr(run) as usize,
                    range.clone(),
                ),
                None => (&[][..], 0, 0..0),
            };
            let mut bytes = Vec::with_capacity((live.len() + entries.len()) * 2);
            bytes.extend_from_slice(live);
            bytes.extend_from_slice(entries);
            back.bytes.truncate(at);
            HandedBack::Whole {
                bytes,
                base,
                from: range.start,
                shared_end: range.end,
            }
        } else {
            HandedBack::Entries(at..back.bytes.len())
        };
        if let Some(slot) = back.entries.last_mut() {
            *slot = Some(handed);
        }
    }
    back
}

/// Memory a snapshot let go of (filled seal tickets, entries handed back
/// to runs, runs' old buffers), freed when it is dropped: on the
/// checkpoint thread, not under the store lock.
#[derive(Default)]
pub struct Garbage(Vec<Arc<SealTicket>>, HandBack, Vec<Arc<Vec<u8>>>);

impl Garbage {
    /// Free what it holds, keeping the lists' room (for the next snapshot).
    pub fn clear(&mut self) {
        self.0.clear();
        self.1 = HandBack::default();
        self.2.clear();
    }
}

/// A full block handed out to store: its stored form with a placeholder
/// location (patched by [`SealJob::patch`]) and its job.
fn hand_out(
    out: &mut Vec<u8>,
    jobs: &mut Vec<SealJob>,
    sid: u64,
    master: StreamId,
    sum: &Summary,
    bytes: Arc<Vec<u8>>,
    ticket: Arc<SealTicket>,
) {
    put_stored(out, master, sum);
    jobs.push(SealJob {
        stream: sid,
        master,
        last: sum.last_id,
        bytes,
        ticket,
        patch_at: out.len(),
    });
    put_loc(
        out,
        BlockLoc {
            segment: 0,
            offset: 0,
            len: 0,
        },
    );
}

/// The open tail block (still growing), kept in the body: its bytes
/// copied, or shared if it is large enough (returned with where they go:
/// the next XADD into it copies it if the snapshot still holds it,
/// `Block::share`, off the store lock).
fn write_tail(
    out: &mut Vec<u8>,
    master: StreamId,
    block: &mut Block,
) -> Option<(usize, Arc<Vec<u8>>)> {
    out.push(0);
    put_id(out, master);
    if block.encoded().len() < SHARE_TAIL_FROM {
        put_bytes(out, block.encoded());
        return None;
    }
    let bytes = block.share();
    put_u32(out, bytes.len());
    Some((out.len(), bytes))
}

/// Bytes of a body taken by reference under the store lock and copied or
/// encoded into it later, by [`assemble`] on the checkpoint thread.
pub enum Insert {
    /// A stream's stored blocks as encoded at an earlier checkpoint
    /// (`range` of `bytes`, whole [`STORED_LEN`] entries); `stream` is its
    /// storage id.
    Run {
        stream: u64,
        bytes: Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
    },
    /// Bytes shared copy on write with the keyspace, copied whole: an open
    /// tail block's (after its `u32` length, written under the lock).
    Bytes(Arc<Vec<u8>>),
    /// A value shared copy on write with the keyspace (a later write to it
    /// copies it first), encoded by this function.
    Encode(Encoder),
    /// A stream's sealed list, taken whole: each block's stored form (a
    /// placeholder location) and its [`SealJob`] are made by [`assemble`],
    /// so the lock pays one swap per stream, not a job per block.
    Listed(ListedBlocks),
}

/// The blocks of a stream's sealed list handed out by one snapshot
/// ([`Insert::Listed`]): `stream` is its storage id.
pub struct ListedBlocks {
    stream: u64,
    entries: Vec<Listed>,
}

/// Emptied sealed lists, swapped into the streams whose lists a snapshot
/// takes, so the XADDs that seal the next blocks do not allocate (kept
/// between snapshots by the caller, as its other buffers).
#[derive(Default)]
pub struct ListPool(Vec<Vec<Listed>>);

/// Lists kept in a [`ListPool`]: above it, the streams' next lists start
/// empty (a few allocations as they grow, on the XADDs that seal).
const POOL_LISTS: usize = 4096;

impl ListPool {
    /// Keep `list` (emptied here, off the lock) for a later snapshot.
    fn give(&mut self, mut list: Vec<Listed>) {
        if self.0.len() < POOL_LISTS && list.capacity() > 0 {
            list.clear();
            self.0.push(list);
        }
    }
}

/// Appends a value's form to a body (see [`Insert::Encode`]).
pub type Encoder = Box<dyn FnOnce(&mut Vec<u8>) + Send>;

impl std::fmt::Debug for Insert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Insert::Run { stream, range, .. } => write!(f, "Run({stream}, {range:?})"),
            Insert::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Insert::Encode(_) => write!(f, "Encode"),
            Insert::Listed(l) => write!(f, "Listed({}, {})", l.stream, l.entries.len()),
        }
    }
}

impl SnapshotState {
    /// After the last value is written: the hand-back the streams took
    /// from goes to `garbage` (freed off the lock).
    pub fn done(&mut self) {
        self.garbage.1 = std::mem::take(&mut self.handed_back);
    }

    /// Put `insert` into the body at `at` (the length written so far).
    pub fn insert(&mut self, at: usize, insert: Insert) {
        self.inserts.push((at, insert));
    }

    /// The jobs so far, those [`assemble`] will make included: the index
    /// the next job will have once it has.
    pub fn job_count(&self) -> usize {
        self.jobs.len() + self.deferred_jobs
    }
}

/// The whole body: `written` (what was encoded under the lock) with each
/// of `inserts` put in at its position, each job's location moved to
/// where it lands, and the jobs of the sealed lists taken whole
/// ([`Insert::Listed`]) made, all in body order (the order the fills'
/// job ranges count them in). Segments of the runs' stored blocks are
/// added to `referenced`; emptied lists go to `lists`. Runs off the
/// store lock.
pub fn assemble(
    written: Vec<u8>,
    mut inserts: Vec<(usize, Insert)>,
    jobs: &mut Vec<SealJob>,
    referenced: &mut HashMap<u64, BTreeSet<u64>>,
    lists: &mut ListPool,
) -> Vec<u8> {
    if inserts.is_empty() {
        return written;
    }
    assemble_from(&written, &mut inserts, jobs, referenced, lists)
}

/// [`assemble`] into a new buffer, leaving `written` as it was and
/// `inserts` empty (both keep their capacity, for the next snapshot to
/// reuse: `ferrite_db`'s `SnapshotBuffers`).
pub fn assemble_from(
    written: &[u8],
    inserts: &mut Vec<(usize, Insert)>,
    jobs: &mut Vec<SealJob>,
    referenced: &mut HashMap<u64, BTreeSet<u64>>,
    lists: &mut ListPool,
) -> Vec<u8> {
    let (mut more, mut listed) = (0, 0);
    for (_, i) in inserts.iter() {
        match i {
            Insert::Run { range, .. } => more += range.len(),
            Insert::Bytes(b) => more += b.len(),
            Insert::Encode(_) => {}
            Insert::Listed(l) => listed += l.entries.len(),
        }
    }
    let mut body = Vec::with_capacity(written.len() + more + listed * STORED_LEN);
    // The jobs written under the lock are moved into a new vector, their
    // positions shifted, between those of the lists (in body order).
    let mut locked = std::mem::replace(jobs, Vec::with_capacity(jobs.len() + listed))
        .into_iter()
        .peekable();
    let (mut from, mut shift) = (0, 0);
    for (at, insert) in inserts.drain(..) {
        let at = at.min(written.len()).max(from);
        while let Some(mut job) = locked.next_if(|job| job.patch_at < at) {
            job.patch_at += shift;
            jobs.push(job);
        }
        body.extend_from_slice(&written[from..at]);
        let before = body.len();
        match insert {
            Insert::Run {
                stream,
                bytes,
                range,
            } => {
                let run = bytes.get(range).unwrap_or(&[]);
                body.extend_from_slice(run);
                let set = referenced.entry(stream).or_default();
                let mut last = None;
                for e in run.chunks_exact(STORED_LEN) {
                    let mut r = Reader::new(&e[STORED_LEN - LOC_LEN..]);
                    if let Ok(seg) = r.u64() {
                        if last != Some(seg) {
                            set.insert(seg);
                            last = Some(seg);
                        }
                    }
                }
            }
            Insert::Bytes(b) => body.extend_from_slice(&b),
            Insert::Encode(f) => f(&mut body),
            Insert::Listed(ListedBlocks {
                stream,
                mut entries,
            }) => {
                for e in entries.drain(..) {
                    hand_out(&mut body, jobs, stream, e.master, &e.sum, e.bytes, e.ticket);
                }
                lists.give(entries);
            }
        }
        shift += body.len() - before;
        from = at;
    }
    body.extend_from_slice(&written[from..]);
    for mut job in locked {
        job.patch_at += shift;
        jobs.push(job);
    }
    body
}

impl Stream {
    /// Append this stream's persisted form to `out` (the layout in the
    /// module doc). Full blocks not stored yet become [`SealJob`]s in
    /// `st`; a stream that stores its first block gets a storage id. The
    /// stored blocks kept from the last checkpoint are not copied: they
    /// are an [`Insert`] in `st`, so the body is whole only after
    /// [`assemble`]. Visits only the blocks after that run.
    pub fn write_snapshot(&mut self, out: &mut Vec<u8>, st: &mut SnapshotState) {
        let m = self.meta();
        for id in [m.last_id, m.first_id, m.max_deleted_id] {
            put_id(out, id);
        }
        out.extend_from_slice(&m.entries_added.to_le_bytes());
        out.push(u8::from(self.is_disordered()));
        // Only with persistence on (a cache) are blocks stored.
        let Some(cache) = &st.cache else {
            out.extend_from_slice(&self.storage().map_or(0, |s| s.id).to_le_bytes());
            let count_at = out.len();
            out.extend_from_slice(&0u64.to_le_bytes());
            let mut n = 0u64;
            for b in self.blocks() {
                out.push(0);
                put_id(out, b.master_id());
                put_bytes(out, b.encoded());
                n += 1;
            }
            out[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
            self.write_groups(out);
            return;
        };
        // Every block but an unstored tail is written as stored.
        let needs_storage = self.blocks.len() > 1
            || self
                .blocks
                .values()
                .next()
                .is_some_and(|n| n.location().is_some());
        if needs_storage && self.storage.is_none() {
            self.storage = Some(Storage {
                id: st.next_storage_id,
                cache: cache.clone(),
            });
            st.next_storage_id += 1;
        }
        let sid = self.storage.as_ref().map_or(0, |s| s.id);
        out.extend_from_slice(&sid.to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        // The stored blocks at the head are the run kept from the last
        // checkpoint, extended by the blocks stored since; only the blocks
        // after it are visited.
        self.run.take_pending(&mut st.handed_back, &mut st.garbage);
        let mut written = 0u64;
        // The open tail's shared bytes and where they go in the body.
        let mut tail = None;
        // The blocks handed out right after the run: (first job, last
        // master, count), while no other block came between.
        let mut handed: Option<(usize, StreamId, usize)> = None;
        // The last block's master, once visited.
        let mut last_block = None;
        // Whether every block but the tail is now in the run or in
        // `handed` (so that a sealed list can start after them).
        let mut whole_run = true;
        // The sealed list taken whole, and where it goes in the body.
        let mut list = None;
        if let Some(tail_master) =
            self.write_listed(out, st, sid, &mut handed, &mut list, &mut tail)
        {
            written = handed.map_or(0, |h| h.2 as u64) + 1;
            last_block = Some(tail_master);
            st.listed += 1;
        } else {
            // The range runs to the map's end: its last block is the tail
            // (one descent of the tree, not two).
            let mut rest = if self.run.is_empty() {
                self.blocks.range_mut(..)
            } else {
                let after = (Bound::Excluded(self.run.last()), Bound::Unbounded);
                self.blocks.range_mut(after)
            }
            .peekable();
            let mut extending = true;
            let mut contiguous = true;
            while let Some((&master, node)) = rest.next() {
                let is_tail = rest.peek().is_none();
                if is_tail {
                    last_block = Some(master);
                }
                if let Stored::Pending(t) = &node.stored {
                    if let Some(loc) = t.get() {
                        // The ticket is freed on the checkpoint thread.
                        let old = std::mem::replace(&mut node.stored, Stored::At(loc));
                        if let Stored::Pending(t) = old {
                            st.garbage.0.push(t);
                        }
                    }
                }
                if let Some(loc) = node.location() {
                    if extending {
                        self.run.push(master, &node.sum, loc);
                    } else {
                        contiguous = false;
                        whole_run = false;
                        put_stored(out, master, &node.sum);
                        put_loc(out, loc);
                        st.referenced.entry(sid).or_default().insert(loc.segment);
                        written += 1;
                    }
                    continue;
                }
                // The run stays a prefix: it ends at the first unstored block.
                extending = false;
                // A full block not stored yet: the checkpoint stores it and
                // fills the ticket once durable. Its bytes are shared, not
                // copied (a change to the block copies them first). Sealed
                // when it filled up, it is handed out from the node alone.
                let (bytes, ticket) = match std::mem::replace(&mut node.stored, Stored::No) {
                    Stored::Sealed(p) if !is_tail => {
                        written += 1;
                        let (ticket, job_ticket) = p.tickets.unwrap_or_else(SealTicket::pair);
                        node.stored = Stored::Pending(ticket);
                        (p.bytes, job_ticket)
                    }
                    other => {
                        node.stored = other;
                        // Invariant: a node without a location is resident.
                        let Some(block) = node.resident_block_mut() else {
                            continue;
                        };
                        written += 1;
                        if is_tail {
                            contiguous = false;
                            tail = write_tail(out, master, block);
                            continue;
                        }
                        let bytes = block.share();
                        let (ticket, job_ticket) = SealTicket::pair();
                        node.stored = Stored::Pending(ticket);
                        (bytes, job_ticket)
                    }
                };
                if self.settle_from.is_none_or(|f| master < f) {
                    self.settle_from = Some(master);
                }
                // From now on a read stamps it: unread when its ticket is
                // filled, it keeps only its packed bytes (settle_stored).
                node.unstamp();
                if contiguous {
                    let (first, _, n) = handed.unwrap_or((st.job_count(), master, 0));
                    handed = Some((first, master, n + 1));
                } else {
                    whole_run = false;
                }
                hand_out(out, &mut st.jobs, sid, master, &node.sum, bytes, ticket);
            }
        }
        // The next snapshot's sealed list: it starts where the run will
        // end once this snapshot's blocks come back, if nothing else is
        // between the run and the tail.
        let through = match handed {
            Some((_, last, _)) => Some(last),
            None if !self.run.is_empty() => Some(self.run.last()),
            // Nothing stored, nothing handed out: if `whole_run`, at most
            // the tail, so the list starts at the stream's beginning.
            None => Some(StreamId::MIN),
        };
        let last_block = last_block.or(through);
        match (whole_run, through, last_block) {
            (true, Some(after), Some(tail)) => self.run.list_from(after, tail),
            _ => self.run.sealed.drop_all(),
        }
        if let Some((first, last, count)) = handed {
            if st.id == 0 {
                st.id = SNAPSHOT_IDS.fetch_add(1, Ordering::Relaxed);
            }
            let base = (!self.run.is_empty()).then(|| self.run.share());
            self.run.pending = Some(PendingRun {
                snapshot: st.id,
                index: st.fills.len(),
                last,
                count,
            });
            st.fills.push(RunFill {
                snapshot: st.id,
                jobs: first..first + count,
                base: std::sync::Mutex::new(base),
            });
        }
        let total = written + self.run.len() as u64;
        out[count_at..count_at + 8].copy_from_slice(&total.to_le_bytes());
        if !self.run.is_empty() {
            let (bytes, range) = self.run.share();
            st.insert(
                count_at + 8,
                Insert::Run {
                    stream: sid,
                    bytes,
                    range,
                },
            );
        }
        // After the run's insert (at the same place: the list's blocks
        // follow the run's) and before the tail's: inserts go in body
        // order.
        if let Some((at, blocks)) = list {
            st.insert(at, Insert::Listed(blocks));
        }
        if let Some((at, bytes)) = tail {
            st.insert(at, Insert::Bytes(bytes));
        }
        self.write_groups(out);
    }

    /// The blocks after the run from the sealed list (no tree descent to
    /// find them, no node touched) and the tail (found from the map's
    /// end), if the list holds them all: it is kept and the run ends where
    /// it starts (the last snapshot's blocks came back). The list is taken
    /// whole into `taken` (its place in the body: [`Insert::Listed`], for
    /// [`assemble`] to write the blocks and make their jobs, off the
    /// lock). Returns the tail's master, or `None` having written nothing:
    /// the caller walks the tree instead.
    fn write_listed(
        &mut self,
        out: &mut Vec<u8>,
        st: &mut SnapshotState,
        sid: u64,
        handed: &mut Option<(usize, StreamId, usize)>,
        taken: &mut Option<(usize, ListedBlocks)>,
        tail: &mut Option<(usize, Arc<Vec<u8>>)>,
    ) -> Option<StreamId> {
        // The list starts where the run ends (at the stream's start if
        // nothing is stored).
        let from = if self.run.is_empty() {
            StreamId::MIN
        } else {
            self.run.last
        };
        if from != self.run.sealed.after {
            return None;
        }
        let list = &mut self.run.sealed;
        if !list.valid {
            return None;
        }
        let mut last = self.blocks.last_entry()?;
        let master = *last.key();
        let node = last.get_mut();
        // By the list's invariant; checked, as it is cheap.
        let first_ok = list.entries.first().is_none_or(|e| e.master > list.after);
        let last_ok = list.entries.last().is_none_or(|e| e.master < master);
        if master != list.tail || !first_ok || !last_ok || node.location().is_some() {
            return None;
        }
        // Invariant: a node without a location is resident.
        let block = node.resident_block_mut()?;
        if let Some(first) = list.entries.first() {
            if self.settle_from.is_none_or(|f| first.master < f) {
                self.settle_from = Some(first.master);
            }
            let count = list.entries.len();
            *handed = Some((
                st.job_count(),
                list.entries.last().map_or(first.master, |e| e.master),
                count,
            ));
            // The nodes stay `Sealed`: their tickets are these (filled once
            // durable; `Node::location`, `Node::resolve`), and reads do not
            // stamp them until then (`Node::preseal` unstamped them). The
            // entries are the instant's: they are moved out, and what is
            // sealed from now on goes into the emptied list swapped in.
            let empty = st.lists.0.pop().unwrap_or_default();
            let entries = std::mem::replace(&mut list.entries, empty);
            st.deferred_jobs += count;
            *taken = Some((
                out.len(),
                ListedBlocks {
                    stream: sid,
                    entries,
                },
            ));
        }
        *tail = write_tail(out, master, block);
        Some(master)
    }

    /// A stream's consumer groups, exactly: every pending entry with its
    /// owner, delivery time and count, including entries whose stream entry
    /// was deleted (which no replayable command could recreate).
    fn write_groups(&self, out: &mut Vec<u8>) {
        let Some(groups) = self.groups() else {
            put_u32(out, 0);
            return;
        };
        put_u32(out, groups.len());
        for (name, g) in groups.iter() {
            put_bytes(out, name);
            put_id(out, g.last_id());
            out.extend_from_slice(&g.entries_read_raw().to_le_bytes());
            let mut index = HashMap::new();
            put_u32(out, g.consumer_count());
            for (i, c) in g.consumers().enumerate() {
                if let Some(id) = g.consumer_id(c.name()) {
                    index.insert(id, i as u32);
                }
                put_bytes(out, c.name());
                out.extend_from_slice(&c.seen_time().to_le_bytes());
            }
            out.extend_from_slice(&(g.pending_count() as u64).to_le_bytes());
            for p in g.pending_range(StreamId::MIN, StreamId::MAX) {
                put_id(out, p.id);
                let ci = index.get(&p.consumer).copied().unwrap_or(u32::MAX);
                out.extend_from_slice(&ci.to_le_bytes());
                out.extend_from_slice(&p.delivery_time.to_le_bytes());
                out.extend_from_slice(&p.delivery_count.to_le_bytes());
            }
        }
    }

    /// Read a stream written by [`Stream::write_snapshot`] (`version` 3 or
    /// later) or by version 2. `key` names it in errors; stored blocks are
    /// read back through `cache`; the stream's storage id must be below
    /// `next_storage_id` (the checkpoint's next id).
    pub fn read_snapshot(
        r: &mut Reader<'_>,
        version: u8,
        key: &[u8],
        cache: Option<&Arc<BlockCache>>,
        next_storage_id: u64,
    ) -> Result<Stream, String> {
        let meta = StreamMeta {
            last_id: r.id()?,
            first_id: r.id()?,
            max_deleted_id: r.id()?,
            entries_added: r.u64()?,
        };
        let mut s = if version >= 3 {
            read_blocks_v3(r, meta, key, cache, next_storage_id)?
        } else {
            let nblocks = r.u64()?;
            let mut blocks = Vec::new();
            for _ in 0..nblocks {
                let master = r.id()?;
                let buf = r.bytes()?;
                let b = Block::from_parts(master, buf.to_vec())
                    .map_err(|e| format!("bad block {master} of key {key:?}: {e:?}"))?;
                blocks.push(b);
            }
            Stream::restore(meta, blocks)
        };
        read_groups(r, &mut s)?;
        Ok(s)
    }
}

/// A v3 stream's blocks: inline ones are rebuilt (and checked) from their
/// bytes, stored ones keep only their summary and location until read.
fn read_blocks_v3(
    r: &mut Reader<'_>,
    meta: StreamMeta,
    key: &[u8],
    cache: Option<&Arc<BlockCache>>,
    next_storage_id: u64,
) -> Result<Stream, String> {
    let disordered = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(format!("bad disordered flag {b} in key {key:?}")),
    };
    let sid = r.u64()?;
    let nblocks = r.u64()?;
    let mut blocks = Vec::new();
    // The leading stored blocks' entries are the run the next snapshot
    // shares (their stored form in the body is the run's, byte for byte):
    // where they start and end, and their masters.
    let run_from = r.position();
    let (mut run_to, mut masters) = (run_from, Vec::new());
    for _ in 0..nblocks {
        let at = r.position();
        let tag = r.u8()?;
        let master = r.id()?;
        blocks.push(match tag {
            0 => {
                let buf = r.bytes()?;
                let b = Block::from_parts(master, buf.to_vec())
                    .map_err(|e| format!("bad block {master} of key {key:?}: {e:?}"))?;
                RestoredBlock::Resident(b)
            }
            1 => {
                let summary = Summary {
                    live: r.u64()?,
                    deleted: r.u64()?,
                    listpack_bytes: r.u64()?,
                    last_id: r.id()?,
                };
                let loc = BlockLoc {
                    segment: r.u64()?,
                    offset: r.u64()?,
                    len: r.u64()?,
                };
                if summary.entry_count() == 0 || summary.last_id < master && !disordered {
                    return Err(format!("bad stored block {master} of key {key:?}"));
                }
                if run_to == at {
                    run_to = r.position();
                    masters.push(master);
                }
                RestoredBlock::Stored {
                    master,
                    summary,
                    loc,
                }
            }
            t => return Err(format!("unknown block tag {t} in key {key:?}")),
        });
    }
    let storage = if sid == 0 {
        None
    } else {
        let cache = cache.ok_or("checkpoint has stored blocks but no block store is open")?;
        // Ids are handed out below the header's next id: one at or above
        // it means a damaged body, not an id to adopt.
        if sid >= next_storage_id {
            return Err(format!(
                "key {key:?} has storage id {sid}, not below the checkpoint's next id {next_storage_id}"
            ));
        }
        Some(Storage {
            id: sid,
            cache: cache.clone(),
        })
    };
    if storage.is_none()
        && blocks
            .iter()
            .any(|b| matches!(b, RestoredBlock::Stored { .. }))
    {
        return Err(format!("stored blocks without a storage id in key {key:?}"));
    }
    let mut s = Stream::restore_nodes(meta, disordered, storage, blocks);
    // The run's invariant, checked against the tree: those entries are
    // its first blocks, in key order, each stored (a body that breaks it,
    // which a checkpoint never writes, gets no run: its blocks are walked).
    let is_run = run_to - run_from == masters.len() * STORED_LEN
        && s.blocks.len() >= masters.len()
        && s.blocks
            .iter()
            .zip(&masters)
            .all(|((m, n), want)| m == want && n.location().is_some());
    if !is_run {
        return Ok(s);
    }
    if let Some(&last) = masters.last() {
        s.run = StoredRun::loaded(r.span(run_from, run_to).to_vec(), masters.len(), last);
    }
    // The run and an open tail (its last block, not stored) are the whole
    // stream: the blocks sealed from now on are listed for the next
    // snapshot, as after one (with persistence only: `cache`).
    if cache.is_some() && s.blocks.len() == masters.len() + 1 {
        let tail = s.blocks.last_key_value();
        if let Some((&tail, _)) = tail.filter(|(_, n)| n.location().is_none()) {
            let after = masters.last().copied().unwrap_or(StreamId::MIN);
            s.run.list_from(after, tail);
        }
    }
    Ok(s)
}

fn read_groups(r: &mut Reader<'_>, s: &mut Stream) -> Result<(), String> {
    let ngroups = r.u32()?;
    for _ in 0..ngroups {
        let name = r.bytes()?;
        let last = r.id()?;
        let entries_read = r.u64()? as i64;
        let mut g = Group::new(last, entries_read);
        let nconsumers = r.u32()?;
        let mut ids = Vec::with_capacity(nconsumers.min(1 << 16));
        for _ in 0..nconsumers {
            let cname = r.bytes()?;
            let seen = r.u64()?;
            ids.push(g.create_consumer(cname, seen).0);
        }
        let npending = r.u64()?;
        let mut prev: Option<StreamId> = None;
        for _ in 0..npending {
            let id = r.id()?;
            // The PEL is written in ID order: anything else is damage (a
            // later duplicate would silently replace an entry).
            if prev.is_some_and(|p| p >= id) {
                return Err(format!("pending entry {id} out of order"));
            }
            prev = Some(id);
            let ci = r.u32()?;
            let time = r.u64()?;
            let count = r.u64()?;
            let owner = *ids
                .get(ci)
                .ok_or_else(|| format!("pending entry {id}: no consumer {ci}"))?;
            g.set_pending(id, owner, time, count);
        }
        let created = s.with_groups(|_, groups| groups.create(name, g));
        if !created {
            return Err(format!(
                "duplicate consumer group {:?} in checkpoint",
                String::from_utf8_lossy(name)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::{BlockSource, Fetched, Node};
    use crate::stream::{Entry, StreamConfig, Trim, TrimSpec};
    use crate::XaddId;
    use bytes::Bytes;
    use std::sync::Mutex;

    /// Stored blocks in memory, by stream and location.
    #[derive(Default)]
    struct Mem(Mutex<HashMap<(u64, BlockLoc), Vec<u8>>>);

    impl BlockSource for Mem {
        fn read(&self, stream: u64, _: StreamId, loc: BlockLoc) -> Result<Fetched, String> {
            let m = self.0.lock().map_err(|e| e.to_string())?;
            let bytes = m
                .get(&(stream, loc))
                .cloned()
                .ok_or_else(|| String::from("absent"))?;
            Ok(Fetched {
                bytes,
                packed: None,
            })
        }
        fn unpack(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("no packed copies here".into())
        }
    }

    /// The stream's form as the whole encoding (before runs were kept)
    /// writes it: every block visited, a stored one with its location, an
    /// unstored tail inline, any other with the placeholder location.
    /// Reads only.
    fn whole(s: &Stream) -> Vec<u8> {
        let mut out = Vec::new();
        let m = s.meta();
        for id in [m.last_id, m.first_id, m.max_deleted_id] {
            put_id(&mut out, id);
        }
        out.extend_from_slice(&m.entries_added.to_le_bytes());
        out.push(u8::from(s.is_disordered()));
        out.extend_from_slice(&s.storage().map_or(0, |st| st.id).to_le_bytes());
        out.extend_from_slice(&(s.blocks.len() as u64).to_le_bytes());
        let tail = s.blocks.keys().next_back().copied();
        for (&master, node) in &s.blocks {
            let loc = node.location();
            if loc.is_none() && Some(master) == tail {
                out.push(0);
                put_id(&mut out, master);
                let b = node
                    .resident_block()
                    .unwrap_or_else(|| panic!("tail absent"));
                put_bytes(&mut out, b.encoded());
                continue;
            }
            put_stored(&mut out, master, &node.sum);
            put_loc(
                &mut out,
                loc.unwrap_or(BlockLoc {
                    segment: 0,
                    offset: 0,
                    len: 0,
                }),
            );
        }
        s.write_groups(&mut out);
        out
    }

    /// A checkpoint of one stream taken (under the lock, as it were):
    /// what it wrote, and the whole encoding at that instant.
    struct Taken {
        written: Vec<u8>,
        inserts: Vec<(usize, Insert)>,
        fills: Vec<RunFill>,
        jobs: Vec<SealJob>,
        reference: Vec<u8>,
        entries: Vec<Entry>,
        /// Whether the blocks came from the sealed list (no walk).
        listed: bool,
        /// Jobs `assemble` makes (from the sealed list).
        deferred: usize,
    }

    impl Taken {
        /// Whether `ticket` is a job's (made now or by `assemble`).
        fn hands_out(&self, ticket: &Arc<SealTicket>) -> bool {
            let listed = self.inserts.iter().any(|(_, i)| match i {
                Insert::Listed(l) => l.entries.iter().any(|e| Arc::ptr_eq(&e.ticket, ticket)),
                _ => false,
            });
            listed || self.jobs.iter().any(|j| Arc::ptr_eq(&j.ticket, ticket))
        }
    }

    /// The jobs once assembled: `count` of them (those written under the
    /// lock and those made from lists), in body order, each at the stored
    /// form of its block (master, last id, placeholder location), and
    /// each fill's range naming its stream's jobs.
    fn check_jobs(jobs: &[SealJob], body: &[u8], count: usize, fills: &[RunFill]) {
        assert_eq!(jobs.len(), count, "jobs lost or made twice");
        for (i, job) in jobs.iter().enumerate() {
            if let Some(prev) = i.checked_sub(1).map(|p| &jobs[p]) {
                assert!(prev.patch_at < job.patch_at, "jobs out of body order");
            }
            let from = job.patch_at + LOC_LEN - STORED_LEN;
            let mut r = Reader::new(&body[from..job.patch_at + LOC_LEN]);
            assert_eq!(r.u8(), Ok(1));
            assert_eq!(r.id(), Ok(job.master));
            for _ in 0..3 {
                assert!(r.u64().is_ok());
            }
            assert_eq!(r.id(), Ok(job.last));
            assert_eq!(&body[job.patch_at..job.patch_at + LOC_LEN], &[0; LOC_LEN]);
        }
        for f in fills {
            let js = &jobs[f.jobs.clone()];
            assert!(js.windows(2).all(|w| w[0].stream == w[1].stream));
        }
    }

    fn take(s: &mut Stream, cache: &Arc<BlockCache>, handed_back: HandBack) -> Taken {
        let mut st = SnapshotState {
            cache: Some(cache.clone()),
            next_storage_id: 7,
            handed_back,
            ..SnapshotState::default()
        };
        let mut written = Vec::new();
        s.write_snapshot(&mut written, &mut st);
        st.done();
        Taken {
            written,
            inserts: st.inserts,
            fills: st.fills,
            jobs: st.jobs,
            reference: whole(s),
            entries: s.range(StreamId::MIN, StreamId::MAX, None, false),
            listed: st.listed == 1,
            deferred: st.deferred_jobs,
        }
    }

    /// The checkpoint thread's part: assemble (checked against the whole
    /// encoding of the snapshot instant), store the blocks at made-up
    /// locations in segment `seg`, publish; the body read back must hold
    /// the entries of that instant. Returns what goes back to the runs.
    fn finish(t: Taken, seg: u64, mem: &Mem, cache: &Arc<BlockCache>) -> HandBack {
        finish_or_fail(t, seg, mem, cache, false)
    }

    /// [`finish`], or with `fail` a checkpoint that stored the blocks and
    /// failed before it was durable: no ticket filled, nothing handed back.
    fn finish_or_fail(
        t: Taken,
        seg: u64,
        mem: &Mem,
        cache: &Arc<BlockCache>,
        fail: bool,
    ) -> HandBack {
        let count = t.jobs.len() + t.deferred;
        let mut jobs = t.jobs;
        let mut referenced = HashMap::new();
        let mut lists = ListPool::default();
        let mut body = assemble(t.written, t.inserts, &mut jobs, &mut referenced, &mut lists);
        assert_eq!(body, t.reference, "the body is not the snapshot instant's");
        check_jobs(&jobs, &body, count, &t.fills);
        assert_eq!(
            lists.0.len(),
            usize::from(t.deferred > 0),
            "the list given back"
        );
        for (i, job) in jobs.iter().enumerate() {
            let loc = BlockLoc {
                segment: seg,
                offset: i as u64,
                len: job.bytes.len() as u64,
            };
            if let Ok(mut m) = mem.0.lock() {
                m.insert((job.stream, loc), job.bytes.to_vec());
            }
            job.patch(&mut body, loc);
        }
        let back = if fail {
            HandBack::default()
        } else {
            for job in &jobs {
                job.publish(&body);
            }
            publish_runs(&t.fills, &jobs, &body)
        };
        let mut r = Reader::new(&body);
        let read = Stream::read_snapshot(&mut r, 4, b"k", Some(cache), 8)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.done());
        assert_eq!(
            read.range(StreamId::MIN, StreamId::MAX, None, false),
            t.entries
        );
        read.check_invariants().unwrap_or_else(|e| panic!("{e}"));
        back
    }

    fn fv(i: u64) -> Vec<Bytes> {
        // Two entries in three long: a tail of them is shared, not copied
        // (`SHARE_TAIL_FROM`).
        let v = if !i.is_multiple_of(3) {
            format!("v{i}{}", "x".repeat(300))
        } else {
            format!("v{i}")
        };
        vec![Bytes::from_static(b"f"), Bytes::from(v)]
    }

    /// A snapshot taken, then the stream changed (XADD, XDEL in a stored
    /// block and of a block's last entry, exact and whole-block trims,
    /// eviction): the body assembled afterwards is byte for byte the whole
    /// encoding of the snapshot instant, round after round, as the kept
    /// run is extended, cut and moved. Some snapshots get no hand-back
    /// (taken before the last checkpoint published it) or an older one
    /// (another snapshot's: its slots must not be used).
    #[test]
    fn a_snapshot_holds_its_instant_whatever_changes_after() {
        snapshots_hold_their_instant(Stream::new());
    }

    /// The same with a stream that lists its sealed blocks from the first
    /// one (created with persistence on): its first snapshot hands them
    /// out from the list, and so does one after it was emptied.
    #[test]
    fn a_stream_listing_from_the_start_holds_its_instant() {
        let mut s = Stream::new_stored();
        assert!(s.keeps_sealed_list());
        let cfg = StreamConfig {
            node_max_entries: 4,
            node_max_bytes: 0,
        };
        for i in 1..=20u64 {
            let id = XaddId::Explicit(StreamId::new(i, 0));
            assert!(s.add(id, &fv(i), 0, &cfg).is_ok());
        }
        let mem = Arc::new(Mem::default());
        let cache = BlockCache::new(mem.clone());
        // Four sealed blocks and the tail: all from the list, no walk.
        let t = take(&mut s, &cache, HandBack::default());
        assert!(t.listed, "the first snapshot walked the blocks");
        assert_eq!(t.deferred, 4);
        finish(t, 1, &mem, &cache);
        snapshots_hold_their_instant(Stream::new_stored());
    }

    fn snapshots_hold_their_instant(mut s: Stream) {
        let mem = Arc::new(Mem::default());
        let cache = BlockCache::new(mem.clone());
        let cfg = StreamConfig {
            node_max_entries: 4,
            node_max_bytes: 0,
        };
        let (mut next, mut shared, mut filled, mut presealed) = (1u64, 0, 0, 0);
        let (mut wholes, mut tails, mut missed, mut stale) = (0, 0, 0, 0);
        let (mut listed, mut resets, mut failed) = (0, 0, 0);
        // Snapshots from the list with nothing stored yet (a new or
        // emptied stream: the list starts at its beginning).
        let mut from_start = 0;
        // The last checkpoint's hand-back, and the one before.
        let (mut back, mut older) = (HandBack::default(), HandBack::default());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..240u64 {
            for _ in 0..rand(30) {
                let id = XaddId::Explicit(StreamId::new(next, 0));
                assert!(s.add(id, &fv(next), 0, &cfg).is_ok());
                next += 1;
            }
            // A change to a block sealed since the last snapshot (its bytes
            // and ticket were made when it filled up, and it is in the
            // sealed list): it must be handed out as it is now. Or a trim
            // (exact: flags entries in a listed block; approximate: drops
            // whole head blocks, the run's or listed ones), or XSETID back
            // over the deleted top entries and an XADD below the tail's
            // master (a block created below the tail, or an entry appended
            // below its master).
            match rand(8) {
                0 | 1 => {
                    let id = StreamId::new(next.saturating_sub(1 + rand(8)).max(1), 0);
                    s.delete(&[id]);
                }
                // Now and then every entry goes: the stream starts again
                // from no block.
                2 if rand(6) == 0 => {
                    let spec = TrimSpec {
                        strategy: Trim::MaxLen(0),
                        approx: false,
                        limit: Some(0),
                    };
                    s.trim(&spec, &cfg);
                }
                2 => {
                    let keep = s.len().saturating_sub(1 + rand(12));
                    let spec = TrimSpec {
                        strategy: Trim::MaxLen(keep),
                        approx: rand(2) == 0,
                        limit: Some(0),
                    };
                    s.trim(&spec, &cfg);
                }
                3 if next > 12 => {
                    let top: Vec<StreamId> = (next - 1 - rand(6)..next)
                        .map(|ms| StreamId::new(ms, 0))
                        .collect();
                    s.delete(&top);
                    let below = s.last_valid_id();
                    if s.set_id(below, None, None).is_ok() {
                        resets += 1;
                        for k in 1..=rand(6) {
                            let id = StreamId::new(below.ms, k);
                            assert!(s.add(XaddId::Explicit(id), &fv(next), 0, &cfg).is_ok());
                        }
                    }
                }
                _ => {}
            }
            presealed += s
                .blocks
                .values()
                .filter(|n| matches!(n.stored, Stored::Sealed(_)))
                .count();
            // Entries handed back by the last checkpoint, appended unvisited
            // (when this snapshot gets them).
            let given = match rand(6) {
                0 => {
                    missed += 1;
                    HandBack::default()
                }
                1 => {
                    stale += usize::from(!older.entries.is_empty());
                    std::mem::take(&mut older)
                }
                _ => std::mem::take(&mut back),
            };
            let handed_back = s
                .run
                .pending
                .as_ref()
                .filter(|p| p.snapshot == given.snapshot)
                .and_then(|p| given.entries.get(p.index))
                .and_then(Option::as_ref);
            filled += usize::from(handed_back.is_some());
            wholes += usize::from(matches!(handed_back, Some(HandedBack::Whole { .. })));
            let run_empty = s.run.is_empty();
            let t = take(&mut s, &cache, given);
            listed += usize::from(t.listed);
            from_start += usize::from(t.listed && run_empty);
            // Every sealed block was handed out, but one that is the last
            // block now (the blocks after it emptied): the tail is written
            // whole. One handed out from the sealed list stays `Sealed`
            // (its node untouched): its ticket is a job's, or filled (an
            // earlier checkpoint stored it).
            let tail = s.blocks.keys().next_back().copied();
            let handed_out = |n: &Node| match &n.stored {
                Stored::Sealed(p) => p
                    .tickets
                    .as_ref()
                    .is_some_and(|(nt, _)| nt.get().is_some() || t.hands_out(nt)),
                _ => true,
            };
            assert!(
                s.blocks
                    .iter()
                    .all(|(m, n)| handed_out(n) || Some(*m) == tail),
                "a sealed block was not handed out"
            );
            shared += usize::from(
                t.inserts
                    .iter()
                    .any(|(_, i)| matches!(i, Insert::Run { .. })),
            );
            // An open tail shared with the snapshot: the changes below
            // (XADD into it, XDEL in it, trims) must copy it first.
            tails += usize::from(t.inserts.iter().any(|(_, i)| matches!(i, Insert::Bytes(_))));
            // Changes after the snapshot instant: often an XADD into the
            // tail the snapshot may share first.
            if rand(2) == 0 {
                let id = XaddId::Explicit(StreamId::new(next, 0));
                assert!(s.add(id, &fv(next), 0, &cfg).is_ok());
                next += 1;
            }
            for _ in 0..rand(6) {
                match rand(6) {
                    0 => {
                        let id = XaddId::Explicit(StreamId::new(next, 0));
                        assert!(s.add(id, &fv(next), 0, &cfg).is_ok());
                        next += 1;
                    }
                    1 | 2 => {
                        let id = StreamId::new(1 + rand(next), 0);
                        s.delete(&[id]);
                    }
                    3 => {
                        let keep = s.len().saturating_sub(rand(10));
                        let spec = TrimSpec {
                            strategy: Trim::MaxLen(keep),
                            approx: rand(2) == 0,
                            limit: Some(0),
                        };
                        s.trim(&spec, &cfg);
                    }
                    4 => {
                        s.evict_before(u64::MAX, u64::MAX);
                    }
                    _ => {
                        let min = StreamId::new(1 + rand(next), 0);
                        let spec = TrimSpec {
                            strategy: Trim::MinId(min),
                            approx: false,
                            limit: Some(0),
                        };
                        s.trim(&spec, &cfg);
                    }
                }
            }
            // Now and then the checkpoint fails: its blocks (from the
            // sealed list, nodes untouched, or from the walk) are handed
            // out again by the next snapshot, with the same tickets.
            let fail = rand(10) == 0;
            failed += usize::from(fail && t.jobs.len() + t.deferred > 0);
            let given_back = finish_or_fail(t, round + 1, &mem, &cache, fail);
            older = std::mem::replace(&mut back, given_back);
            s.check_invariants().unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(shared > 30, "only {shared} snapshots shared a run");
        assert!(presealed > 60, "only {presealed} blocks were sealed ahead");
        assert!(wholes > 0, "no run was rebuilt off the lock");
        assert!(tails > 10, "only {tails} snapshots shared the open tail");
        assert!(
            filled > 10,
            "only {filled} snapshots had entries handed back"
        );
        assert!(missed > 5 && stale > 2, "{missed} missed, {stale} stale");
        assert!(
            listed > 20 && resets > 3 && failed > 5,
            "only {listed} snapshots from the sealed list, {resets} XSETIDs, {failed} failed"
        );
        assert!(
            from_start > 2,
            "only {from_start} snapshots listed from the start"
        );
        // The last state, taken with nothing changing after.
        let t = take(&mut s, &cache, back);
        finish(t, 1000, &mem, &cache);
    }

    /// A run shared with a snapshot is never written again: appending to
    /// it then copies the live entries; a run no snapshot holds grows in
    /// place, and drops its dead head once it is half the buffer.
    #[test]
    fn a_shared_run_is_copied_before_it_grows() {
        let sum = Summary {
            live: 1,
            deleted: 0,
            listpack_bytes: 10,
            last_id: StreamId::new(1, 0),
        };
        let loc = |i| BlockLoc {
            segment: 1,
            offset: i,
            len: 1,
        };
        let mut run = StoredRun::default();
        for i in 1..=4 {
            run.push(StreamId::new(i, 0), &sum, loc(i));
        }
        let (held, range) = run.share();
        let before = held[range.clone()].to_vec();
        run.removed(StreamId::new(1, 0));
        run.changed(StreamId::new(3, 0));
        assert_eq!(run.len(), 1);
        run.push(StreamId::new(5, 0), &sum, loc(5));
        assert_eq!(held[range].to_vec(), before, "shared bytes changed");
        assert!(!Arc::ptr_eq(&held, &run.share().0));
        drop(held);
        let (again, r) = run.share();
        assert_eq!(r.len(), 2 * STORED_LEN);
        drop(again);
        let p = Arc::as_ptr(&run.bytes);
        run.push(StreamId::new(6, 0), &sum, loc(6));
        assert_eq!(Arc::as_ptr(&run.bytes), p, "grew in place");
        assert_eq!(run.master_at(run.start), StreamId::new(2, 0));
        assert_eq!(run.last(), StreamId::new(6, 0));
    }
}
