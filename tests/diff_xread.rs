//! Differential tests for XREAD, blocking included (scripts in tests/diff/xread/).
mod common;

diff_tests! {
    xread_basic => "xread/xread_basic.txt",
    xread_block => "xread/xread_block.txt",
    xread_fifo => "xread/xread_fifo.txt",
    xread_multi => "xread/xread_multi.txt",
    xread_key_changes => "xread/xread_key_changes.txt",
    xread_disconnect => "xread/xread_disconnect.txt",
    xread_wakeups => "xread/xread_wakeups.txt",
}

// Blocking and wake-ups again with several tokio workers (the default is
// one, `io-threads`): waiters registered and served from different threads.
diff_tests! {
    with &["--io-threads", "4"];
    xread_block_io_threads => "xread/xread_block.txt",
    xread_fifo_io_threads => "xread/xread_fifo.txt",
    xread_multi_io_threads => "xread/xread_multi.txt",
    xread_disconnect_io_threads => "xread/xread_disconnect.txt",
    xread_wakeups_io_threads => "xread/xread_wakeups.txt",
}
