//! Acknowledgements: who waits for which record (callbacks and async
//! tasks), woken in sequence order once records are decided.

use super::*;

/// Waiters of [`CommitLog::when_acked`].
#[derive(Default)]
pub(super) struct Acks {
    pub(super) waiting: Vec<(u64, Waiter)>,
    /// The first batch that failed: its first and last seq and the error
    /// its records completed with. Every record after it failed too.
    pub(super) failed: Option<(u64, u64, StorageError)>,
    /// The writer thread has exited: nothing more completes.
    pub(super) gone: bool,
}

/// Who waits in [`Acks::waiting`]: a callback ([`CommitLog::when_acked`])
/// or a task ([`CommitLog::poll_acked`]), which is woken and asks again.
pub(super) enum Waiter {
    Call(Completion),
    Wake(Waker),
}

impl Waiter {
    pub(super) fn done(self, r: Result<u64>) {
        match self {
            Waiter::Call(done) => call(done, r),
            Waiter::Wake(w) => w.wake(),
        }
    }
}

impl Acks {
    /// The outcome of record `seq` if it is decided (`acked` = every record
    /// up to it completed `Ok`).
    pub(super) fn outcome(&self, seq: u64, acked: u64) -> Option<Result<u64>> {
        if seq <= acked {
            return Some(Ok(seq));
        }
        match &self.failed {
            Some((first, _, _)) if seq < *first => Some(Ok(seq)),
            Some((_, last, e)) if seq <= *last => Some(Err(e.clone())),
            Some((_, _, e)) => Some(Err(e.clone().into_poisoned())),
            None if self.gone => Some(Err(StorageError::Closed)),
            None => None,
        }
    }
}
