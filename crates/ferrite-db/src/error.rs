//! The one place where failures become Redis's exact error strings.
//!
//! Command code returns `Err(CmdError::...)`; the wording lives here so that
//! every command says `WRONGTYPE ...` or `ERR syntax error` identically, and
//! INFO errorstats sees the same codes Redis reports.

use crate::reply::Reply;

/// A command failure with a Redis-defined reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    /// `ERR wrong number of arguments for '<cmd>' command` (cmd as Redis names it, e.g. `config|get`).
    WrongArity(String),
    /// `ERR unknown command '<name>', with args beginning with: '<a>' '<b>' `
    UnknownCommand {
        name: String,
        args: Vec<String>,
    },
    /// `ERR unknown subcommand '<sub>'. Try <CMD> HELP.`
    UnknownSubcommand {
        sub: String,
        cmd: String,
    },
    Syntax,
    WrongType,
    NotInteger,
    /// `ERR value is out of range, must be positive`
    NotPositive,
    InvalidStreamId,
    NoSuchKey,
    /// `ERR DB index is out of range`
    DbIndexOutOfRange,
    /// `NOAUTH Authentication required.`
    NoAuth,
    /// `WRONGPASS invalid username-password pair or user is disabled.`
    WrongPass,
    /// `ERR timeout is not an integer or out of range`
    TimeoutNotInteger,
    /// `ERR timeout is negative`
    TimeoutNegative,
    /// Any other Redis error, full text including its code (`ERR ...`, `NOGROUP ...`).
    Other(String),
    /// An error whose text holds client bytes verbatim (not necessarily UTF-8).
    Raw(bytes::Bytes),
}

impl CmdError {
    /// An `ERR <msg>` error.
    pub fn err(msg: impl AsRef<str>) -> CmdError {
        CmdError::Other(format!("ERR {}", msg.as_ref()))
    }

    pub fn message(&self) -> String {
        match self {
            CmdError::WrongArity(cmd) => {
                format!("ERR wrong number of arguments for '{cmd}' command")
            }
            CmdError::UnknownCommand { name, args } => {
                let mut s = format!("ERR unknown command '{name}', with args beginning with: ");
                for a in args {
                    s.push('\'');
                    s.push_str(a);
                    s.push_str("' ");
                }
                s
            }
            CmdError::UnknownSubcommand { sub, cmd } => {
                format!("ERR unknown subcommand '{sub}'. Try {cmd} HELP.")
            }
            CmdError::Syntax => "ERR syntax error".into(),
            CmdError::WrongType => {
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            }
            CmdError::NotInteger => "ERR value is not an integer or out of range".into(),
            CmdError::NotPositive => "ERR value is out of range, must be positive".into(),
            CmdError::InvalidStreamId => {
                "ERR Invalid stream ID specified as stream command argument".into()
            }
            CmdError::NoSuchKey => "ERR no such key".into(),
            CmdError::DbIndexOutOfRange => "ERR DB index is out of range".into(),
            CmdError::NoAuth => "NOAUTH Authentication required.".into(),
            CmdError::WrongPass => {
                "WRONGPASS invalid username-password pair or user is disabled.".into()
            }
            CmdError::TimeoutNotInteger => "ERR timeout is not an integer or out of range".into(),
            CmdError::TimeoutNegative => "ERR timeout is negative".into(),
            CmdError::Other(s) => s.clone(),
            CmdError::Raw(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }

    pub fn to_reply(&self) -> Reply {
        match self {
            CmdError::Raw(b) => Reply::Error(b.clone()),
            other => Reply::error(other.message()),
        }
    }
}

impl From<CmdError> for Reply {
    fn from(e: CmdError) -> Reply {
        e.to_reply()
    }
}

// ---- the stream type's typed errors, in Redis's words ----

impl From<ferrite_streams::stream::AddError> for CmdError {
    fn from(e: ferrite_streams::stream::AddError) -> CmdError {
        use ferrite_streams::stream::AddError;
        match e {
            AddError::IdTooSmall => CmdError::err(
                "The ID specified in XADD is equal or smaller than the target stream top item",
            ),
            AddError::IdZero => CmdError::err("The ID specified in XADD must be greater than 0-0"),
            AddError::Exhausted => CmdError::err(
                "The stream has exhausted the last possible ID, unable to add more items",
            ),
            AddError::TooLarge => CmdError::err("Elements are too large to be stored"),
            AddError::BadFieldCount => CmdError::WrongArity("xadd".into()),
        }
    }
}

impl From<ferrite_streams::id::RangeIdError> for CmdError {
    fn from(e: ferrite_streams::id::RangeIdError) -> CmdError {
        use ferrite_streams::id::RangeIdError;
        match e {
            RangeIdError::Invalid => CmdError::InvalidStreamId,
            RangeIdError::InvalidStart => CmdError::err("invalid start ID for the interval"),
            RangeIdError::InvalidEnd => CmdError::err("invalid end ID for the interval"),
        }
    }
}

impl From<ferrite_streams::stream::SetIdError> for CmdError {
    fn from(e: ferrite_streams::stream::SetIdError) -> CmdError {
        use ferrite_streams::stream::SetIdError;
        CmdError::err(match e {
            SetIdError::MaxDeletedGreaterThanId => {
                "The ID specified in XSETID is smaller than the provided max_deleted_entry_id"
            }
            SetIdError::IdSmallerThanTop => {
                "The ID specified in XSETID is smaller than the target stream top item"
            }
            SetIdError::EntriesAddedSmallerThanLength => {
                "The entries_added specified in XSETID is smaller than the target stream length"
            }
        })
    }
}

/// A client-supplied string as Redis's `%.128s` shows it in an error: at most
/// 128 bytes, cut at a NUL byte (CR/LF become spaces when the reply is encoded).
pub fn sanitize_arg(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(128);
    String::from_utf8_lossy(&b[..end]).into_owned()
}
