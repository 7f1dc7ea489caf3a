//! The queue between appenders and the writer thread: records encoded
//! into one frames buffer, their completions, and the mapped window that
//! appenders copy records into while the queue is empty (§3.6).

use super::*;

/// One queued record; its encoded frame is in `Queue::frames`.
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) frame_len: usize,
    pub(super) done: Option<Completion>,
}

impl Pending {
    pub(super) fn complete(mut self, r: Result<u64>) {
        if let Some(done) = self.done.take() {
            call(done, r);
        }
    }
}

impl Drop for Pending {
    /// A record dropped without completing (only if the writer thread died)
    /// still completes, with [`StorageError::Closed`], so nobody waits
    /// forever.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            call(done, Err(StorageError::Closed));
        }
    }
}

pub(super) fn call(done: Completion, r: Result<u64>) {
    // A panicking callback must not kill the writer thread.
    let _ = catch_unwind(AssertUnwindSafe(move || done(r)));
}

pub(super) struct Queue {
    pub(super) pending: Vec<Pending>,
    /// The encoded frames of `pending`, in order. Appends encode here (the
    /// payload's allocation is freed on the appending thread) and the
    /// writer writes it as is.
    pub(super) frames: Vec<u8>,
    /// Barrier requests from `sync()` / checkpoints.
    pub(super) syncs: Vec<Completion>,
    pub(super) next_seq: u64,
    pub(super) closing: bool,
    /// Set once, by the first failed write/fsync: the Poisoned error.
    pub(super) failed: Option<StorageError>,
    /// The window the writer lent (see the module doc): only while
    /// `pending` is empty do appenders copy into it.
    pub(super) window: Option<Window>,
}

/// A writable mapping of the active segment from its last record on: the
/// preallocated zeros that the next records overwrite.
pub(super) struct Window {
    pub(super) map: Box<dyn FileMap>,
    /// File offset of the map's first byte.
    pub(super) base: u64,
    /// File offset of the end of the last record (where the next goes).
    pub(super) tail: u64,
    /// The last record in the file (copied in, or written before the
    /// window was lent).
    pub(super) last_seq: u64,
    /// Once `tail` passes this offset, the appender asks the writer to
    /// extend the window (`wants_more`), so that appends need not fall
    /// back to the queue while it preallocates and maps.
    pub(super) low_at: u64,
    /// Asked, and not yet taken up by the writer.
    pub(super) wants_more: bool,
    /// What `stats.records` and `stats.bytes_written` count already.
    pub(super) counted_seq: u64,
    pub(super) counted_tail: u64,
}

/// What [`Window::put`] did.
#[derive(PartialEq, Eq)]
pub(super) enum Put {
    /// The frame does not fit: queue it.
    Full,
    Copied,
    /// Copied, and the window runs low: wake the writer to extend it.
    CopiedLow,
}

impl Window {
    pub(super) fn end(&self) -> u64 {
        self.base + self.map.len() as u64
    }

    /// Copy `frame` (record `seq`) in if it fits.
    pub(super) fn put(&mut self, seq: u64, frame: &[u8]) -> Put {
        let n = frame.len() as u64;
        if self.tail + n > self.end() {
            return Put::Full;
        }
        let at = (self.tail - self.base) as usize;
        self.map.write(at, frame);
        self.tail += n;
        self.last_seq = seq;
        if self.tail >= self.low_at {
            self.low_at = u64::MAX;
            self.wants_more = true;
            return Put::CopiedLow;
        }
        Put::Copied
    }

    /// Where a window over `base..end` asks for more: half its size, at
    /// most `chunk / 2`, before its end.
    pub(super) fn low_mark(base: u64, end: u64, chunk: u64) -> u64 {
        end - ((end - base) / 2).min(chunk / 2)
    }
}

/// Queue one record (under the queue lock; `admit` said yes): assign its
/// sequence number and encode its frame. Returns the sequence number.
pub(super) fn push_record(q: &mut Queue, payload: &[u8], done: Option<Completion>) -> u64 {
    let seq = q.next_seq;
    q.next_seq += 1;
    let before = q.frames.len();
    encode_log_record(seq, payload, &mut q.frames);
    push_pending(q, seq, before, done);
    seq
}

/// Queue the record whose frame `q.frames[before..]` is.
pub(super) fn push_pending(q: &mut Queue, seq: u64, before: usize, done: Option<Completion>) {
    q.pending.push(Pending {
        seq,
        frame_len: q.frames.len() - before,
        done,
    });
}
