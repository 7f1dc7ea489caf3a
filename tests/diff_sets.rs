//! Differential tests for the set commands (scripts in tests/diff/sets/).
mod common;

diff_tests! {
    basic => "sets/basic.txt",
    errors => "sets/errors.txt",
    ops => "sets/ops.txt",
    random => "sets/random.txt",
    scan => "sets/scan.txt",
    encoding => "sets/encoding.txt",
    resp3 => "sets/resp3.txt",
    watch => "sets/watch.txt",
    compact => "sets/compact.txt",
}
