//! Differential tests for stream commands (scripts in tests/diff/streams/).
mod common;

diff_tests! {
    smoke => "smoke.txt",
}
