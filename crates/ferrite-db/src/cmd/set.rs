//! set commands (being written: see the data-types issue).

use super::Handler;

pub const COMMANDS: &[(&str, Handler)] = &[];
