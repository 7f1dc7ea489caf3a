//! Differential tests for the string commands (scripts in tests/diff/strings/).
mod common;

diff_tests! {
    set => "strings/set.txt",
    get_family => "strings/get.txt",
    multi_key => "strings/mset.txt",
    counters => "strings/incr.txt",
    floats => "strings/incrbyfloat.txt",
    ranges => "strings/range.txt",
    bits => "strings/bits.txt",
    lcs => "strings/lcs.txt",
}
