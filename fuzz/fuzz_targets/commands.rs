//! Command sequences through one embedded server; every reply must decode
//! back (with `redis-protocol`) from its RESP2 and RESP3 encodings. See
//! `ferrite_server::fuzzing::commands` for the input layout.
#![no_main]

#[path = "../../crates/ferrite-server/tests/support/resp_check.rs"]
mod resp_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrite_server::fuzzing::commands::run(data, &mut |argv, reply| {
        resp_check::check_reply(argv, reply)
    });
});
