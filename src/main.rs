//! The `ferrite` binary: everything lives in `ferrite-server`, except the
//! choice of allocator.

/// jemalloc, as Redis uses: freed memory goes back to the system by decay
/// on jemalloc's background threads, so no thread serving clients stops in
/// `malloc_trim` (docs/storage.md §13.8).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation: its background
/// threads purge freed pages (not the threads serving clients), and a
/// freed page goes back to the system within about a second (the default
/// is ten), so that RSS follows an eviction as it did with glibc's trims.
#[allow(unsafe_code)] // SAFETY: a NUL-terminated string jemalloc only reads.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

fn main() -> std::process::ExitCode {
    ferrite_db::store::allocator_returns_memory("jemalloc-5.3.0");
    ferrite_server::main_cli()
}
