//! Differential tests for the list commands (scripts in tests/diff/lists/).
mod common;

diff_tests! {
    basic => "lists/basic.txt",
    lpos => "lists/lpos.txt",
    moves => "lists/moves.txt",
    errors => "lists/errors.txt",
    resp3 => "lists/resp3.txt",
    blocking => "lists/blocking.txt",
    fifo => "lists/fifo.txt",
    multi => "lists/multi.txt",
    key_changes => "lists/key_changes.txt",
    chunks => "lists/chunks.txt",
}
