//! The stream, XREAD and consumer-group differential scripts again, with
//! blocks of at most 2 entries on both servers, and Ferrite checkpointing
//! after every logged command and keeping a block cache of one byte: every
//! block that is not a stream's open tail is stored and evicted after each
//! command and read back from its segment file when a command needs it
//! (docs/storage.md §13.8). Replies must still be byte-identical to
//! redis-server's.
#![allow(dead_code)]
mod common;

const STORED: &[&str] = &["--auto-checkpoint-min-size", "1", "--block-cache-size", "1"];
const BOTH: &[&str] = &["--stream-node-max-entries", "2"];

macro_rules! stored_tests {
    ($($name:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $name() {
                common::run_script_with($file, STORED, BOTH);
            }
        )*
    };
}

stored_tests! {
    xadd => "streams/xadd.txt",
    xadd_trim => "streams/xadd_trim.txt",
    xrange => "streams/xrange.txt",
    xlen_xdel => "streams/xlen_xdel.txt",
    xtrim => "streams/xtrim.txt",
    xsetid => "streams/xsetid.txt",
    xinfo => "streams/xinfo.txt",
    blocks => "streams/blocks.txt",
    resp3 => "streams/resp3.txt",
    xread_basic => "xread/xread_basic.txt",
    xread_block => "xread/xread_block.txt",
    xread_key_changes => "xread/xread_key_changes.txt",
    xgroup => "groups/xgroup.txt",
    xreadgroup => "groups/xreadgroup.txt",
    xreadgroup_block => "groups/xreadgroup_block.txt",
    xack => "groups/xack.txt",
}
