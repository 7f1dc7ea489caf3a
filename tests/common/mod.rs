//! Shared test support: servers, raw RESP connections, the differential
//! script runner. See docs/testing.md.
#![allow(dead_code)]

pub mod conn;
pub mod pipes;
pub mod resp;
pub mod runner;
pub mod script;
pub mod server;
pub mod state;

#[allow(unused_imports)]
pub use runner::{run_script, run_script_with};

/// Declares one `#[test]` per script: `diff_tests! { name => "dir/file.txt", ... }`.
#[macro_export]
macro_rules! diff_tests {
    ($($name:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $name() {
                common::run_script($file);
            }
        )*
    };
    // The same scripts against Ferrite started with these extra arguments.
    (with $args:expr; $($name:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
            fn $name() {
                common::run_script_with($file, $args, &[]);
            }
        )*
    };
}
