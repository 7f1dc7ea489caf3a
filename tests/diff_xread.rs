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
