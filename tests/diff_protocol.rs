//! Differential tests for the wire protocol (scripts in tests/diff/protocol/).
mod common;

diff_tests! {
    inline => "protocol/inline.txt",
    pipeline => "protocol/pipeline.txt",
    malformed => "protocol/malformed.txt",
    limits => "protocol/limits.txt",
    nullbytes => "protocol/nullbytes.txt",
}

// ----- self-checks of the harness --------------------------------------------
// Two redis-servers that are made to differ on purpose: the runner must
// report the difference (these run in every mode; they need only redis-server).

mod harness {
    use super::common::resp::{frame_len, parse_frame, Node};
    use super::common::runner::Runner;
    use super::common::script::{parse, split_args};
    use super::common::server::{redis_server_path, Kind, Pair, Server};
    use std::time::Duration;

    /// A pair of redis-servers, the second started with `extra` arguments.
    fn odd_pair(extra: &[&str]) -> Option<Pair> {
        if let Err(e) = redis_server_path() {
            panic!("{e}");
        }
        let redis = Server::start(Kind::Redis, "redis").unwrap_or_else(|e| panic!("{e}"));
        let ferrite =
            Server::start_with(Kind::Redis, "ferrite", extra).unwrap_or_else(|e| panic!("{e}"));
        Some(Pair { redis, ferrite })
    }

    fn run(extra: &[&str], src: &str) -> Option<Result<(), String>> {
        let pair = odd_pair(extra)?;
        Some(
            Runner::new("harness-check", pair)
                .with_timeout(Duration::from_millis(500))
                .run_source(src),
        )
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_reports_a_differing_reply_with_line_and_both_replies() {
        let Some(res) = run(
            &["--stream-node-max-entries", "5"],
            "# comment\n!repeat 12 XADD s ${i}-1 f v\nXINFO STREAM s\n",
        ) else {
            return;
        };
        let msg = res.expect_err("different node sizes must be reported");
        assert!(msg.contains("line 3"), "no line number in:\n{msg}");
        assert!(msg.contains("XINFO STREAM s"), "no command in:\n{msg}");
        assert!(
            msg.contains("radix-tree-keys"),
            "no decoded reply in:\n{msg}"
        );
        assert!(
            msg.contains("redis replied") && msg.contains("ferrite replied"),
            "missing a side in:\n{msg}"
        );
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_masks_make_the_difference_disappear() {
        let Some(res) = run(
            &["--stream-node-max-entries", "5"],
            "!repeat 12 XADD s ${i}-1 f v\n!mask field radix-tree-keys radix-tree-nodes\nXINFO STREAM s\n!mask shape\nXINFO STREAM s FULL\n",
        ) else {
            return;
        };
        assert!(
            matches!(res, Ok(())),
            "masked replies must compare equal: {res:?}"
        );
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_approx_mask_tolerates_only_its_tolerance() {
        // 12 entries: 3 nodes of 5 vs 1 node of 100.
        let script = |tol: u32| {
            format!(
                "!repeat 12 XADD s ${{i}}-1 f v\n!mask field radix-tree-nodes\n!mask approx radix-tree-keys {tol}\nXINFO STREAM s\n"
            )
        };
        let Some(res) = run(&["--stream-node-max-entries", "5"], &script(2)) else {
            return;
        };
        assert!(matches!(res, Ok(())), "3 vs 1 is within 2: {res:?}");
        let Some(res) = run(&["--stream-node-max-entries", "5"], &script(1)) else {
            return;
        };
        let msg = res.expect_err("3 vs 1 is not within 1");
        assert!(msg.contains("(±1)"), "{msg}");
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_reports_error_string_differences() {
        let Some(res) = run(&["--requirepass", "pw"], "PING\n") else {
            return;
        };
        let msg = res.expect_err("NOAUTH vs PONG must be reported");
        assert!(msg.contains("NOAUTH") && msg.contains("PONG"), "{msg}");
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_reports_a_command_that_does_not_block() {
        let Some(res) = run(
            &[],
            "XADD s 1-1 f v\n@r\n!blocked XREAD BLOCK 0 STREAMS s 0\n!await\n",
        ) else {
            return;
        };
        let msg = res.expect_err("a non-blocking command under !blocked must be reported");
        assert!(msg.contains("expected to block"), "{msg}");
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_reports_an_open_connection_and_an_expect_mismatch() {
        let Some(res) = run(&[], "!raw \"PING\\r\\n\"\n!closed\n") else {
            return;
        };
        let msg = res.expect_err("an open connection under !closed must be reported");
        assert!(msg.contains("still open"), "{msg}");
        let Some(res) = run(&[], "!expect \"+PONG\\r\\n\"\nECHO x\n") else {
            return;
        };
        let msg = res.expect_err("a wrong !expect must be reported");
        assert!(msg.contains("!expect does not hold"), "{msg}");
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_reports_a_missing_reply_as_timeout() {
        // One side gets a partial command and never answers.
        let Some(res) = run(
            &["--proto-max-bulk-len", "1mb"],
            "!raw \"*1\\r\\n$1048577\\r\\n\"\n",
        ) else {
            return;
        };
        let msg = res.expect_err("error vs no reply must be reported");
        assert!(msg.contains("no reply before the deadline"), "{msg}");
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_captures_auto_ids() {
        let Some(res) = run(
            &[],
            "!capture a\nXADD s * f 1\n!capture b\nXADD s * f 2\nXRANGE s - +\nXDEL s ${a}\nXRANGE s ${b} ${b}\n!mask field radix-tree-nodes\nXINFO STREAM s\n",
        ) else {
            return;
        };
        assert!(
            matches!(res, Ok(())),
            "captured IDs must compare equal: {res:?}"
        );
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_script_syntax() {
        let w = split_args(r#"SET "a b" 'c\'d' "\x00\xff\r\n" plain"#).unwrap_or_default();
        assert_eq!(
            w,
            vec![
                b"SET".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"\x00\xff\r\n".to_vec(),
                b"plain".to_vec()
            ]
        );
        assert!(split_args("ECHO \"open").is_err());
        assert!(split_args("ECHO \"a\"b").is_err());
        assert!(parse("!nosuchdirective\n").is_err());
        assert!(parse("!pipeline\nPING\n").is_err());
        assert!(parse("!mask field\n").is_err());
        assert!(matches!(
            parse("# c\n@c2\nPING\n!repeat 3 ECHO ${i}\n").map(|s| s.len()),
            Ok(5)
        ));
    }

    #[test]
    #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
    fn harness_resp_framing_is_exact() {
        // *-1 and $-1 are different replies.
        let a = parse_frame(b"*-1\r\n").unwrap_or_else(|e| panic!("{e}"));
        let b = parse_frame(b"$-1\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(!a.same(&b), "*-1 and $-1 must differ");
        // RESP3 map, frame boundaries, partial frames.
        let map = b"%1\r\n$1\r\nk\r\n*2\r\n:1\r\n_\r\n+next\r\n";
        assert_eq!(frame_len(map, true), Ok(Some(map.len() - 7)));
        assert_eq!(frame_len(&map[..10], true), Ok(None));
        assert_eq!(frame_len(b"$5\r\nab", false), Ok(None));
        assert!(frame_len(b"?x\r\n", false).is_err());
        let n = parse_frame(&map[..map.len() - 7]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.to_bytes(),
            map[..map.len() - 7].to_vec(),
            "round trip must be byte-exact"
        );
        assert!(matches!(n, Node::Agg { kind: b'%', ref items } if items.len() == 2));
    }
}
