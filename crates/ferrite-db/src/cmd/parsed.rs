//! Commands that code outside their handler must understand before they
//! run, in parsed form: the read-ahead planner today (which evicted blocks
//! will XRANGE, XREVRANGE, XREAD or XREADGROUP read?), pipelines tomorrow.
//! Each is parsed once, by the same function its handler uses; the plan
//! works on the typed value, and the value is handed to the handler
//! (`Ctx::parsed`), which then does not parse again.

use super::read::ReadArgs;
use super::stream::XRangeArgs;
use super::Prefetch;
use crate::args::Args;
use crate::store::Db;
use bytes::Bytes;

#[derive(Debug, Clone)]
pub enum Parsed {
    XRange(XRangeArgs),
    XRead(ReadArgs),
}

impl Parsed {
    /// `argv` parsed, if it is one of these commands with valid arguments
    /// (bad ones are left to the handler, which replies Redis's error).
    /// The arguments are borrowed, not copied.
    pub fn parse(argv: &[Bytes]) -> Option<Parsed> {
        let name = argv.first()?;
        let a = &mut Args::borrowed(argv);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"xrange") || is(b"xrevrange") {
            XRangeArgs::parse(a, is(b"xrevrange"))
                .ok()
                .map(Parsed::XRange)
        } else if is(b"xread") || is(b"xreadgroup") {
            ReadArgs::parse(a, is(b"xreadgroup"))
                .ok()
                .map(Parsed::XRead)
        } else {
            None
        }
    }

    /// The evicted blocks it will read in `db`, from the index alone.
    pub fn prefetch(&self, db: &Db) -> Prefetch {
        match self {
            Parsed::XRange(r) => r.prefetch(db),
            Parsed::XRead(r) => r.prefetch(db),
        }
    }
}
