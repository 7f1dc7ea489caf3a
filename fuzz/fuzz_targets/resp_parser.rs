//! RESP request parser: arbitrary bytes, parsed whole and in arbitrary
//! chunks; see `ferrite_server::fuzzing::parser` for the input layout and
//! the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrite_server::fuzzing::parser::run(data);
});
