//! The stream, XREAD and consumer-group differential scripts again, with
//! blocks of at most 2 entries on both servers, and Ferrite checkpointing
//! after every logged command and keeping a block cache of one byte: every
//! block that is not a stream's open tail is stored and evicted after each
//! command and read back from its segment file when a command needs it
//! (docs/storage.md §13.8). Replies must still be byte-identical to
//! redis-server's. The `packed_*` tests run the same scripts with a cache
//! of 1 MiB: stored blocks keep only their packed (LZ4) bytes in memory
//! until a command reads them, which decodes them without a disk read.
//! Each checkpoint's snapshot writes one key per hold of the store lock, so
//! commands change keys between the holds.
#![allow(dead_code)]
mod common;

// A key per hold of the store lock in each checkpoint's snapshot: the
// commands run between the holds (docs/storage.md §13.4, "The cut").
const STORED: &[&str] = &[
    "--auto-checkpoint-min-size",
    "1",
    "--block-cache-size",
    "1",
    "--checkpoint-cut-step-keys",
    "1",
];
const PACKED: &[&str] = &[
    "--auto-checkpoint-min-size",
    "1",
    "--block-cache-size",
    "1mb",
    "--checkpoint-cut-step-keys",
    "1",
];
const BOTH: &[&str] = &["--stream-node-max-entries", "2"];

macro_rules! stored_tests {
    ($($name:ident, $packed:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $name() {
                common::run_script_with($file, STORED, BOTH);
            }

            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $packed() {
                common::run_script_with($file, PACKED, BOTH);
            }
        )*
    };
}

stored_tests! {
    xadd, packed_xadd => "streams/xadd.txt",
    xadd_trim, packed_xadd_trim => "streams/xadd_trim.txt",
    xrange, packed_xrange => "streams/xrange.txt",
    xlen_xdel, packed_xlen_xdel => "streams/xlen_xdel.txt",
    xtrim, packed_xtrim => "streams/xtrim.txt",
    xsetid, packed_xsetid => "streams/xsetid.txt",
    xinfo, packed_xinfo => "streams/xinfo.txt",
    blocks, packed_blocks => "streams/blocks.txt",
    resp3, packed_resp3 => "streams/resp3.txt",
    xread_basic, packed_xread_basic => "xread/xread_basic.txt",
    xread_block, packed_xread_block => "xread/xread_block.txt",
    xread_key_changes, packed_xread_key_changes => "xread/xread_key_changes.txt",
    xgroup, packed_xgroup => "groups/xgroup.txt",
    xreadgroup, packed_xreadgroup => "groups/xreadgroup.txt",
    xreadgroup_block, packed_xreadgroup_block => "groups/xreadgroup_block.txt",
    xack, packed_xack => "groups/xack.txt",
}
