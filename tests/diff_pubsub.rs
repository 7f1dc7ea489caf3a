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
    notify_generic => "pubsub/notify_generic.txt",
    notify_expired => "pubsub/notify_expired.txt",
    notify_string => "pubsub/notify_string.txt",
    notify_hash => "pubsub/notify_hash.txt",
    notify_list => "pubsub/notify_list.txt",
    notify_zset => "pubsub/notify_zset.txt",
    notify_set => "pubsub/notify_set.txt",
    notify_copy_move => "pubsub/notify_copy_move.txt",
    notify_stream => "pubsub/notify_stream.txt",
    notify_resp3 => "pubsub/notify_resp3.txt",
    notify_new_miss => "pubsub/notify_new_miss.txt",
}
