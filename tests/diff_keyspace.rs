//! Differential tests for connection and keyspace commands
//! (scripts in tests/diff/keyspace/).
mod common;

diff_tests! {
    connection => "keyspace/connection.txt",
    auth => "keyspace/auth.txt",
    client => "keyspace/client.txt",
    select => "keyspace/select.txt",
    keys => "keyspace/keys.txt",
    scan => "keyspace/scan.txt",
    multi => "keyspace/multi.txt",
    watch => "keyspace/watch.txt",
    config => "keyspace/config.txt",
    errors => "keyspace/errors.txt",
    expire => "keyspace/expire.txt",
    server => "keyspace/server.txt",
    object => "keyspace/object.txt",
    generic => "keyspace/generic.txt",
    client_reply => "keyspace/client_reply.txt",
    getkeys => "keyspace/getkeys.txt",
    client_unblock => "keyspace/client_unblock.txt",
}

/// DEBUG where it is allowed (both servers started with it enabled).
#[test]
fn debug_enabled() {
    common::runner::run_script_with(
        "keyspace/debug.txt",
        &[],
        &["--enable-debug-command", "yes"],
    );
}
