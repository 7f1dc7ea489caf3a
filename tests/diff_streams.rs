//! Differential tests for stream commands (scripts in tests/diff/streams/).
mod common;

diff_tests! {
    xadd => "streams/xadd.txt",
    xadd_trim => "streams/xadd_trim.txt",
    xrange => "streams/xrange.txt",
    xlen_xdel => "streams/xlen_xdel.txt",
    xtrim => "streams/xtrim.txt",
    xsetid => "streams/xsetid.txt",
    xinfo => "streams/xinfo.txt",
    blocks => "streams/blocks.txt",
    resp3 => "streams/resp3.txt",
}
