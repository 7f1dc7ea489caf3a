//! Differential tests for the sorted set commands (scripts in tests/diff/zsets/).
mod common;

diff_tests! {
    basic => "zsets/basic.txt",
    errors => "zsets/errors.txt",
    ranges => "zsets/ranges.txt",
    pop => "zsets/pop.txt",
    encoding => "zsets/encoding.txt",
    resp3 => "zsets/resp3.txt",
    blocking => "zsets/blocking.txt",
    watch => "zsets/watch.txt",
    setops => "zsets/setops.txt",
}
