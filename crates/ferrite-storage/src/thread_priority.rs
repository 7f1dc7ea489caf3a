//! Background threads yield the CPU to the threads that serve clients.
//!
//! A checkpoint compresses and writes blocks for hundreds of milliseconds.
//! On a machine with few cores it competes with the async worker that
//! serves every connection; at the same priority the scheduler may leave
//! the worker runnable but waiting behind it for a whole slice (measured:
//! 13 ms with an idle core beside it), and every client waits with it.
//! A niceness above the worker's makes the scheduler prefer the worker
//! whenever both are runnable, while the background thread still gets the
//! idle time (and a share under contention, so it always finishes).

/// Niceness for background work: the checkpoint thread. Not the log's
/// fsync thread: it holds the fsync gate that a segment roll, and so every
/// append, may wait for (docs/storage.md, "The fsync thread").
pub const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's priority to `nice` (Linux: niceness is per
/// thread). Best effort: a failure (a sandbox that forbids it) leaves the
/// thread as it was, which is only slower, never wrong.
#[allow(unsafe_code)] // the SAFETY comment below
pub fn lower_current_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; setpriority on our
    // own thread id changes only this thread's scheduling weight.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
