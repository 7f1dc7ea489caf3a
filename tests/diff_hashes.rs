//! Differential tests for the hash commands (scripts in tests/diff/hashes/).
mod common;

diff_tests! {
    basic => "hashes/basic.txt",
    errors => "hashes/errors.txt",
    incr => "hashes/incr.txt",
    randfield => "hashes/randfield.txt",
    scan => "hashes/scan.txt",
    large => "hashes/large.txt",
    resp3 => "hashes/resp3.txt",
    watch => "hashes/watch.txt",
}
