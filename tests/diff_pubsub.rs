//! Differential tests for pub/sub and keyspace notifications
//! (scripts in tests/diff/pubsub/).
mod common;

diff_tests! {
    basic => "pubsub/basic.txt",
    patterns => "pubsub/patterns.txt",
    subscribed_mode => "pubsub/subscribed_mode.txt",
    resp3 => "pubsub/resp3.txt",
    multi => "pubsub/multi.txt",
    client => "pubsub/client.txt",
    config => "pubsub/config.txt",
}
