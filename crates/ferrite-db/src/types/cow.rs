//! A large value's body, shared copy on write with a checkpoint's snapshot
//! (docs/storage.md, "Non-stream values").
//!
//! A snapshot takes a reference to the body and encodes it off the store
//! lock; a write while it holds one copies the body first
//! ([`CowBody::make_mut`]). For a hash, a set or a sorted set that copy is
//! the whole value, as long as the encoding or longer (1M members: 30-260
//! ms under the lock). So a body written often since the last snapshot,
//! which is likely to be written again while the next one encodes it, is
//! encoded under the lock as before ([`CowBody::take_hot`]): its worst
//! case stays the old one, and every other value costs the lock nothing.

use std::sync::Arc;

/// Writes between two snapshots from which a body counts as hot. At one
/// checkpoint every few seconds, fewer writes than this make a write
/// during the tens of milliseconds of encoding unlikely.
pub const HOT_WRITES: u32 = 64;

#[derive(Debug, Default)]
pub struct CowBody<T> {
    body: Arc<T>,
    /// Writes since the last snapshot (saturating).
    writes: u32,
}

impl<T> CowBody<T> {
    pub fn new(body: T) -> Self {
        CowBody {
            body: Arc::new(body),
            writes: 0,
        }
    }

    /// Written [`HOT_WRITES`] times or more since the last call (a
    /// snapshot's); the count starts again.
    pub fn take_hot(&mut self) -> bool {
        std::mem::take(&mut self.writes) >= HOT_WRITES
    }

    /// The body's address (tests: shared or copied).
    #[cfg(test)]
    pub fn as_ptr(&self) -> *const T {
        Arc::as_ptr(&self.body)
    }
}

impl<T: Clone> CowBody<T> {
    /// The body, to change: copied first if a snapshot holds it.
    pub fn make_mut(&mut self) -> &mut T {
        self.writes = self.writes.saturating_add(1);
        Arc::make_mut(&mut self.body)
    }
}

/// Shares the body (COPY, a snapshot): no copy until one side writes.
impl<T> Clone for CowBody<T> {
    fn clone(&self) -> Self {
        CowBody {
            body: Arc::clone(&self.body),
            writes: 0,
        }
    }
}

impl<T> std::ops::Deref for CowBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_counts_writes_between_snapshots() {
        let mut b = CowBody::new(vec![1u8]);
        for _ in 0..HOT_WRITES - 1 {
            b.make_mut().push(2);
        }
        assert!(!b.take_hot());
        for _ in 0..HOT_WRITES {
            b.make_mut().push(3);
        }
        assert!(b.take_hot());
        assert!(!b.take_hot(), "the count starts again");
        let shared = b.clone();
        b.make_mut().push(4);
        assert_ne!(b.as_ptr(), shared.as_ptr(), "a write copies a shared body");
        assert_eq!(shared.len() + 1, b.len());
    }
}
