//! The Redis 7.2 CLIENT subcommands that client libraries send (redis-py
//! and go-redis send CLIENT SETINFO on connect), which the Redis 7.0
//! differential tests cannot cover: CLIENT SETINFO and CLIENT NO-TOUCH,
//! with OBJECT IDLETIME as the access clock they act on.
mod common;

use common::conn::RespConn;
use common::server::{Launch, Server, TempDir};
use common::state::{call_str, int, text};

fn connect(s: &Server) -> RespConn {
    s.connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)))
}

fn err(c: &mut RespConn, cmd: &[&str]) -> String {
    let r = call_str(c, cmd);
    match r {
        common::resp::Node::Line { kind: b'-', head } => {
            String::from_utf8_lossy(&head).into_owned()
        }
        other => panic!("{cmd:?} should fail: {}", other.render()),
    }
}

#[test]
fn client_setinfo_shows_in_client_list() {
    let dir = TempDir::new("setinfo").expect("tempdir");
    let s = Launch::ferrite("setinfo")
        .dir(dir.path())
        .start()
        .unwrap_or_else(|e| panic!("start: {e}"));
    let mut c = connect(&s);
    // Before SETINFO, the line is Redis 7.0's (no lib fields).
    let line = text(&call_str(&mut c, &["CLIENT", "INFO"]));
    assert!(!line.contains("lib-name="), "{line}");
    assert_eq!(
        text(&call_str(
            &mut c,
            &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]
        )),
        "OK"
    );
    assert_eq!(
        text(&call_str(
            &mut c,
            &["client", "setinfo", "lib-ver", "5.2.1"]
        )),
        "OK"
    );
    let line = text(&call_str(&mut c, &["CLIENT", "INFO"]));
    assert!(
        line.trim_end().ends_with("lib-name=redis-py lib-ver=5.2.1"),
        "{line}"
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "1 2"]),
        "ERR LIB-VER cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETINFO", "color", "red"]),
        "ERR Unrecognized option 'color'"
    );
    assert!(err(&mut c, &["CLIENT", "SETINFO", "LIB-NAME"]).starts_with("ERR wrong number"));
    // COMMAND knows them (redis-cli hints, client libraries' command tables).
    let info = call_str(&mut c, &["COMMAND", "INFO", "client|setinfo"]).render();
    assert!(info.contains("client|setinfo"), "{info}");
}

#[test]
fn no_touch_keeps_idle_time_until_touch() {
    let dir = TempDir::new("notouch").expect("tempdir");
    let s = Launch::ferrite("notouch")
        .dir(dir.path())
        .args(&["--enable-debug-command", "yes"])
        .start()
        .unwrap_or_else(|e| panic!("start: {e}"));
    let mut c = connect(&s);
    assert_eq!(text(&call_str(&mut c, &["SET", "k", "v"])), "OK");
    // The server's clock moves on while it sleeps (seconds resolution).
    assert_eq!(text(&call_str(&mut c, &["DEBUG", "SLEEP", "2.1"])), "OK");
    let idle = int(&call_str(&mut c, &["OBJECT", "IDLETIME", "k"]));
    assert!(idle >= 2, "idle {idle}");
    assert_eq!(text(&call_str(&mut c, &["CLIENT", "NO-TOUCH", "ON"])), "OK");
    let line = text(&call_str(&mut c, &["CLIENT", "INFO"]));
    assert!(line.contains("flags=T"), "{line}");
    assert_eq!(text(&call_str(&mut c, &["GET", "k"])), "v");
    assert!(int(&call_str(&mut c, &["OBJECT", "IDLETIME", "k"])) >= 2);
    // TOUCH counts even under NO-TOUCH.
    assert_eq!(int(&call_str(&mut c, &["TOUCH", "k"])), 1);
    assert!(int(&call_str(&mut c, &["OBJECT", "IDLETIME", "k"])) <= 1);
    assert_eq!(text(&call_str(&mut c, &["DEBUG", "SLEEP", "2.1"])), "OK");
    assert_eq!(
        text(&call_str(&mut c, &["CLIENT", "NO-TOUCH", "OFF"])),
        "OK"
    );
    assert_eq!(text(&call_str(&mut c, &["GET", "k"])), "v");
    assert!(int(&call_str(&mut c, &["OBJECT", "IDLETIME", "k"])) <= 1);
    assert!(err(&mut c, &["CLIENT", "NO-TOUCH", "maybe"]).starts_with("ERR syntax error"));
}
