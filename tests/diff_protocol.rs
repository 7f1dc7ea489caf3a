//! Differential tests for the wire protocol (scripts in tests/diff/protocol/).
mod common;

diff_tests! {
    inline => "protocol/inline.txt",
    pipeline => "protocol/pipeline.txt",
    malformed => "protocol/malformed.txt",
    limits => "protocol/limits.txt",
    nullbytes => "protocol/nullbytes.txt",
}
