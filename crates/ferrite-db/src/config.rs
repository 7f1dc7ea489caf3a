//! Configuration: one table of parameters, filled from built-in defaults,
//! then `ferrite.toml` (`--config`), then the command line, then `CONFIG SET`.
//!
//! Every parameter has Redis's name. The same table drives the command-line
//! flags (`--port 7777`), the TOML keys, `CONFIG GET` and `CONFIG SET`, so they
//! cannot drift apart.

use std::collections::BTreeMap;

/// How a parameter's value is parsed and checked.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    /// A byte count that accepts Redis memory units (`1gb`, `512mb`, `4k`).
    Mem {
        min: i64,
        max: i64,
    },
    Str,
    Enum(&'static [&'static str]),
    /// Parsed by a function of (current value, new value) that returns the
    /// value as CONFIG GET prints it back, or CONFIG SET's reason.
    Special(fn(&str, &str) -> Result<String, String>),
}

struct Param {
    name: &'static str,
    default: &'static str,
    kind: Kind,
    /// Settable with CONFIG SET (otherwise "can't set immutable config").
    mutable: bool,
    doc: &'static str,
}

const PARAMS: &[Param] = &[
    Param {
        name: "port",
        default: "6379",
        kind: Kind::Int { min: 0, max: 65535 },
        mutable: false,
        doc: "TCP port (0: pick a free one and log it)",
    },
    Param {
        name: "bind",
        default: "127.0.0.1",
        kind: Kind::Str,
        mutable: false,
        doc: "address to listen on",
    },
    Param {
        name: "dir",
        default: "./data",
        kind: Kind::Str,
        mutable: false,
        doc: "data directory",
    },
    Param {
        name: "databases",
        default: "16",
        kind: Kind::Int { min: 1, max: 1024 },
        mutable: false,
        doc: "number of databases (SELECT 0..n-1)",
    },
    Param {
        name: "io-threads",
        default: "1",
        kind: Kind::Int { min: 1, max: 128 },
        mutable: false,
        doc: "threads serving clients (network I/O and parsing; commands run one at a time under the store's lock whatever this is); 1, Redis's default, is fastest unless the network work outgrows a core",
    },
    Param {
        name: "requirepass",
        default: "",
        kind: Kind::Str,
        mutable: true,
        doc: "password for AUTH (empty: none)",
    },
    Param {
        name: "maxclients",
        default: "10000",
        kind: Kind::Int {
            min: 1,
            max: 4294967295,
        },
        mutable: true,
        doc: "maximum simultaneous clients",
    },
    Param {
        name: "proto-max-bulk-len",
        default: "536870912",
        kind: Kind::Mem {
            min: 1048576,
            max: i64::MAX,
        },
        mutable: true,
        doc: "largest bulk string a client may send",
    },
    Param {
        name: "client-query-buffer-limit",
        default: "1073741824",
        kind: Kind::Mem {
            min: 1048576,
            max: i64::MAX,
        },
        mutable: true,
        doc: "largest unprocessed input per client",
    },
    Param {
        name: "stream-node-max-entries",
        default: "100",
        kind: Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        mutable: true,
        doc: "entries per stream block (macro node)",
    },
    Param {
        name: "stream-node-max-bytes",
        default: "4096",
        kind: Kind::Mem {
            min: 0,
            max: i64::MAX,
        },
        mutable: true,
        doc: "bytes per stream block (macro node)",
    },
    Param {
        name: "appendonly",
        default: "yes",
        kind: Kind::Enum(&["yes", "no"]),
        mutable: false,
        doc: "keep a commit log in <dir>/log and recover from it at start-up",
    },
    Param {
        name: "appendfsync",
        default: "everysec",
        kind: Kind::Enum(&["always", "everysec", "no"]),
        mutable: true,
        doc: "when the commit log is fsynced: always (before each reply), everysec, no",
    },
    Param {
        name: "auto-checkpoint-min-size",
        default: "67108864",
        kind: Kind::Mem {
            min: 1,
            max: i64::MAX,
        },
        mutable: true,
        doc: "write a checkpoint once this many bytes were logged since the last one",
    },
    Param {
        name: "checkpoint-cut-step-keys",
        default: "256",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        mutable: true,
        doc: "keys a background checkpoint's snapshot writes per hold of the store lock",
    },
    Param {
        name: "block-cache-size",
        default: "268435456",
        kind: Kind::Mem {
            min: 0,
            max: i64::MAX,
        },
        mutable: true,
        doc: "bytes of stored (sealed) stream blocks kept in memory; least recently used ones beyond it are evicted and read back from disk on demand (0 = no limit)",
    },
    Param {
        name: "pipeline-max-state",
        default: "268435456",
        kind: Kind::Mem {
            min: 1024,
            max: i64::MAX,
        },
        mutable: true,
        doc: "bytes of window state one grouped pipeline may hold (STATE_LIMIT can lower it for one pipeline); past it the pipeline fails with an error instead of exhausting memory",
    },
    Param {
        name: "max-reply-size",
        default: "1073741824",
        kind: Kind::Mem {
            min: 1048576,
            max: i64::MAX,
        },
        mutable: true,
        doc: "largest reply a stream read builds: XRANGE/XREVRANGE past it reply an error (read the range in parts with COUNT); XREAD and XREADGROUP return a shorter batch (read on from its last ID)",
    },
    Param {
        name: "slowlog-log-slower-than",
        default: "10000",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        mutable: true,
        doc: "SLOWLOG records commands that ran at least this many microseconds (0: every command; -1: none)",
    },
    Param {
        name: "slowlog-max-len",
        default: "128",
        kind: Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        mutable: true,
        doc: "most entries SLOWLOG keeps (the oldest go first)",
    },
    Param {
        name: "enable-debug-command",
        default: "no",
        kind: Kind::Enum(&["no", "yes", "local"]),
        mutable: false,
        doc: "DEBUG is refused (no, Redis's default), allowed (yes), or allowed from loopback connections only (local)",
    },
    Param {
        name: "replay-errors",
        default: "stop",
        kind: Kind::Enum(&["stop", "skip"]),
        mutable: false,
        doc: "a command in the commit log that fails on replay at start-up: stop (refuse to start, saying which record; Redis's behaviour) or skip (an operator decision: count it, log it, go on)",
    },
    Param {
        name: "log-repair",
        default: "no",
        kind: Kind::Enum(&["yes", "no"]),
        mutable: false,
        doc: "at start-up, drop the commit log from a corrupt record on instead of refusing to start (an operator decision: valid records after it are lost)",
    },
    Param {
        name: "notify-keyspace-events",
        default: "",
        kind: Kind::Special(notify_events),
        mutable: true,
        doc: "keyspace notifications to publish, as Redis's class letters (K E g $ l s h z x e t m d n A; empty: none)",
    },
    Param {
        name: "client-output-buffer-limit",
        default: "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        kind: Kind::Special(output_buffer_limit),
        mutable: true,
        doc: "per client class: hard limit, soft limit, soft seconds; a pub/sub client whose unsent messages pass the hard limit, or stay over the soft one for longer than the seconds, is disconnected (only the pubsub class is enforced)",
    },
    Param {
        name: "loglevel",
        default: "notice",
        kind: Kind::Enum(&["debug", "verbose", "notice", "warning", "nothing"]),
        mutable: true,
        doc: "log verbosity",
    },
];

/// The live configuration.
#[derive(Clone, Debug)]
pub struct Config {
    values: BTreeMap<&'static str, String>,
    /// Cached typed values for the hot path.
    pub port: u16,
    pub bind: String,
    pub dir: String,
    pub databases: usize,
    pub io_threads: usize,
    pub requirepass: String,
    pub maxclients: u64,
    pub proto_max_bulk_len: u64,
    pub client_query_buffer_limit: u64,
    pub stream_node_max_entries: u64,
    pub stream_node_max_bytes: u64,
    pub loglevel: String,
    /// `max-reply-size`: the byte bound of a stream read's reply.
    pub max_reply_size: u64,
    /// `slowlog-log-slower-than` in microseconds (-1: off).
    pub slowlog_slower_than: i64,
    /// `slowlog-max-len`.
    pub slowlog_max_len: u64,
    /// `enable-debug-command`: no, yes or local.
    pub enable_debug_command: String,
    /// `replay-errors skip`: a failed command on replay is counted, not fatal.
    pub replay_skip_errors: bool,
    /// `log-repair yes`: drop a corrupt commit-log tail at start-up.
    pub log_repair: bool,
    pub appendonly: bool,
    pub appendfsync: ferrite_storage::AppendFsync,
    pub auto_checkpoint_min_size: u64,
    /// `checkpoint-cut-step-keys` (docs/storage.md §13.4, "The cut").
    pub checkpoint_cut_step_keys: usize,
    pub block_cache_size: u64,
    /// `pipeline-max-state`: the most window state bytes of one pipeline.
    pub pipeline_max_state: u64,
    /// `notify-keyspace-events` as `crate::pubsub::NOTIFY_*` flags.
    pub notify_keyspace_events: u32,
    /// The `pubsub` class of `client-output-buffer-limit`.
    pub pubsub_output_limit: crate::pubsub::OutputLimit,
    /// Path of the config file, if one was given.
    pub config_file: Option<String>,
}

/// Why a value was refused, in `CONFIG SET`'s words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Unknown(String),
    Immutable(String),
    Invalid { name: String, why: String },
}

impl ConfigError {
    /// The full Redis error line for CONFIG SET.
    pub fn config_set_message(&self) -> String {
        match self {
            ConfigError::Unknown(n) => {
                format!("ERR Unknown option or number of arguments for CONFIG SET - '{n}'")
            }
            ConfigError::Immutable(n) => format!(
                "ERR CONFIG SET failed (possibly related to argument '{n}') - can't set immutable config"
            ),
            ConfigError::Invalid { name, why } => {
                format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")
            }
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Unknown(n) => write!(f, "unknown option '{n}'"),
            ConfigError::Immutable(n) => write!(f, "'{n}' cannot be changed at run time"),
            ConfigError::Invalid { name, why } => write!(f, "'{name}': {why}"),
        }
    }
}

fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Parse a Redis memory value (`memtoull`): digits with an optional unit
/// b, k, kb, m, mb, g, gb (case-insensitive; k = 1000, kb = 1024).
pub fn parse_memory(s: &str) -> Option<i64> {
    let lower = s.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mul: i64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    let n: i64 = num.parse().ok()?;
    n.checked_mul(mul)
}

/// `notify-keyspace-events`: Redis's letters, normalised. Kept with every
/// class (`AKEn` stays `AKEn`); CONFIG GET prints it as Redis does, which
/// leaves `n` out beside `A` while still firing `new` events.
fn notify_events(_current: &str, raw: &str) -> Result<String, String> {
    let flags = crate::pubsub::events_from_str(raw)
        .ok_or_else(|| "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".to_string())?;
    let mut s = crate::pubsub::events_to_string(flags);
    if flags & crate::pubsub::NOTIFY_ALL == crate::pubsub::NOTIFY_ALL
        && flags & crate::pubsub::NOTIFY_NEW != 0
    {
        s.push('n');
    }
    Ok(s)
}

const CLIENT_CLASSES: [&str; 3] = ["normal", "slave", "pubsub"];

/// `client-output-buffer-limit`: groups of `<class> <hard> <soft>
/// <seconds>` change those classes; the value printed back lists all three
/// in bytes (Redis's `setConfigClientOutputBufferLimitOption`).
fn output_buffer_limit(current: &str, raw: &str) -> Result<String, String> {
    let words: Vec<&str> = raw.split_ascii_whitespace().collect();
    if !words.len().is_multiple_of(4) {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    let mut classes: Vec<(&str, u64, u64, i64)> = CLIENT_CLASSES
        .iter()
        .map(|c| {
            let l = class_limit(current, c).unwrap_or(crate::pubsub::OutputLimit {
                hard: 0,
                soft: 0,
                soft_seconds: 0,
            });
            (*c, l.hard, l.soft, l.soft_seconds as i64)
        })
        .collect();
    let mut staged = Vec::new();
    for g in words.chunks(4) {
        let class = match g[0].to_ascii_lowercase().as_str() {
            "normal" => "normal",
            "slave" | "replica" => "slave",
            "pubsub" => "pubsub",
            _ => {
                return Err("Invalid client class specified in buffer limit configuration.".into())
            }
        };
        let bad = || "Error in hard, soft or soft_seconds setting in buffer limit configuration.";
        let hard = parse_memory(g[1]).filter(|v| *v >= 0).ok_or_else(bad)?;
        let soft = parse_memory(g[2]).filter(|v| *v >= 0).ok_or_else(bad)?;
        let secs = crate::args::parse_i64(g[3].as_bytes())
            .filter(|v| *v >= 0)
            .ok_or_else(bad)?;
        staged.push((class, hard as u64, soft as u64, secs));
    }
    for (class, h, s, secs) in staged {
        if let Some(c) = classes.iter_mut().find(|c| c.0 == class) {
            *c = (class, h, s, secs);
        }
    }
    Ok(classes
        .iter()
        .map(|(c, h, s, secs)| format!("{c} {h} {s} {secs}"))
        .collect::<Vec<_>>()
        .join(" "))
}

/// One class of a normalised `client-output-buffer-limit` value.
fn class_limit(value: &str, class: &str) -> Option<crate::pubsub::OutputLimit> {
    let words: Vec<&str> = value.split_ascii_whitespace().collect();
    let g = words.chunks(4).find(|g| g.len() == 4 && g[0] == class)?;
    Some(crate::pubsub::OutputLimit {
        hard: g[1].parse().ok()?,
        soft: g[2].parse().ok()?,
        soft_seconds: g[3].parse().ok()?,
    })
}

fn check(p: &Param, raw: &str, current: &str) -> Result<String, String> {
    match p.kind {
        Kind::Special(f) => f(current, raw),
        Kind::Int { min, max } | Kind::Mem { min, max } => {
            let v = match p.kind {
                Kind::Mem { .. } => parse_memory(raw).ok_or("argument must be a memory value")?,
                _ => crate::args::parse_i64(raw.as_bytes())
                    .ok_or("argument couldn't be parsed into an integer")?,
            };
            if v < min || v > max {
                return Err(format!(
                    "argument must be between {min} and {max} inclusive"
                ));
            }
            Ok(v.to_string())
        }
        Kind::Str => Ok(raw.to_string()),
        Kind::Enum(opts) => {
            let l = raw.to_ascii_lowercase();
            if opts.contains(&l.as_str()) {
                Ok(l)
            } else {
                Err("argument(s) must be one of the following: ".to_string() + &opts.join(", "))
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut c = Config {
            values: PARAMS
                .iter()
                .map(|p| (p.name, p.default.to_string()))
                .collect(),
            port: 0,
            bind: String::new(),
            dir: String::new(),
            databases: 0,
            io_threads: 1,
            requirepass: String::new(),
            maxclients: 0,
            proto_max_bulk_len: 0,
            client_query_buffer_limit: 0,
            stream_node_max_entries: 0,
            stream_node_max_bytes: 0,
            loglevel: String::new(),
            max_reply_size: 0,
            slowlog_slower_than: 0,
            slowlog_max_len: 0,
            enable_debug_command: String::new(),
            replay_skip_errors: false,
            log_repair: false,
            appendonly: true,
            appendfsync: ferrite_storage::AppendFsync::EverySec,
            auto_checkpoint_min_size: 0,
            checkpoint_cut_step_keys: 256,
            block_cache_size: 0,
            pipeline_max_state: 0,
            notify_keyspace_events: 0,
            pubsub_output_limit: crate::pubsub::OutputLimit::PUBSUB_DEFAULT,
            config_file: None,
        };
        c.refresh();
        c
    }
}

impl Config {
    fn num(&self, name: &str) -> i64 {
        self.values
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Re-derive the typed fields from the value table (after any change).
    fn refresh(&mut self) {
        self.port = self.num("port") as u16;
        self.bind = self.values["bind"].clone();
        self.dir = self.values["dir"].clone();
        self.databases = self.num("databases") as usize;
        self.io_threads = self.num("io-threads").max(1) as usize;
        self.requirepass = self.values["requirepass"].clone();
        self.maxclients = self.num("maxclients") as u64;
        self.proto_max_bulk_len = self.num("proto-max-bulk-len") as u64;
        self.client_query_buffer_limit = self.num("client-query-buffer-limit") as u64;
        self.stream_node_max_entries = self.num("stream-node-max-entries") as u64;
        self.stream_node_max_bytes = self.num("stream-node-max-bytes") as u64;
        self.loglevel = self.values["loglevel"].clone();
        self.max_reply_size = self.num("max-reply-size") as u64;
        self.slowlog_slower_than = self.num("slowlog-log-slower-than");
        self.slowlog_max_len = self.num("slowlog-max-len") as u64;
        self.enable_debug_command = self.values["enable-debug-command"].clone();
        self.replay_skip_errors = self.values["replay-errors"] == "skip";
        self.log_repair = self.values["log-repair"] == "yes";
        self.appendonly = self.values["appendonly"] == "yes";
        self.appendfsync = match self.values["appendfsync"].as_str() {
            "always" => ferrite_storage::AppendFsync::Always,
            "no" => ferrite_storage::AppendFsync::No,
            _ => ferrite_storage::AppendFsync::EverySec,
        };
        self.auto_checkpoint_min_size = self.num("auto-checkpoint-min-size") as u64;
        self.checkpoint_cut_step_keys = self.num("checkpoint-cut-step-keys").max(1) as usize;
        self.block_cache_size = self.num("block-cache-size") as u64;
        self.pipeline_max_state = self.num("pipeline-max-state") as u64;
        self.notify_keyspace_events =
            crate::pubsub::events_from_str(&self.values["notify-keyspace-events"]).unwrap_or(0);
        self.pubsub_output_limit =
            class_limit(&self.values["client-output-buffer-limit"], "pubsub")
                .unwrap_or(crate::pubsub::OutputLimit::PUBSUB_DEFAULT);
    }

    /// Put back the block-shaping parameters of `other` (after replay).
    pub fn restore_data_params(&mut self, other: &Config) {
        for name in ["stream-node-max-entries", "stream-node-max-bytes"] {
            self.values.insert(name, other.values[name].clone());
        }
        self.refresh();
    }

    /// Set at start-up (file or command line): immutable parameters allowed.
    pub fn set_startup(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let p = find(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        let v = check(p, raw, &self.values[p.name]).map_err(|why| ConfigError::Invalid {
            name: p.name.into(),
            why,
        })?;
        self.values.insert(p.name, v);
        self.refresh();
        Ok(())
    }

    /// `CONFIG SET k v [k v ...]`: all or nothing, as in Redis 7.
    pub fn set_runtime(&mut self, pairs: &[(String, String)]) -> Result<(), ConfigError> {
        let mut staged = Vec::with_capacity(pairs.len());
        let mut seen = Vec::new();
        for (name, raw) in pairs {
            let p = find(name).ok_or_else(|| ConfigError::Unknown(name.clone()))?;
            if seen.contains(&p.name) {
                return Err(ConfigError::Invalid {
                    name: p.name.into(),
                    why: "duplicate parameter".into(),
                });
            }
            seen.push(p.name);
            if !p.mutable {
                return Err(ConfigError::Immutable(p.name.into()));
            }
            let v = check(p, raw, &self.values[p.name]).map_err(|why| ConfigError::Invalid {
                name: p.name.into(),
                why,
            })?;
            staged.push((p.name, v));
        }
        for (n, v) in staged {
            self.values.insert(n, v);
        }
        self.refresh();
        Ok(())
    }

    /// `CONFIG GET pattern...`: (name, value) pairs, no duplicates. Like
    /// Redis 7, a pattern without glob characters echoes the name as given.
    pub fn get_matching(&self, patterns: &[&[u8]]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in PARAMS {
            let hit = patterns
                .iter()
                .find(|pat| crate::glob::glob_match(pat, p.name.as_bytes(), true));
            if let Some(pat) = hit {
                let literal = !pat.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'));
                let shown = if literal {
                    String::from_utf8_lossy(pat).into_owned()
                } else {
                    p.name.to_string()
                };
                let value = if p.name == "notify-keyspace-events" {
                    crate::pubsub::events_from_str(&self.values[p.name])
                        .map(crate::pubsub::events_to_string)
                        .unwrap_or_default()
                } else {
                    self.values[p.name].clone()
                };
                out.push((shown, value));
            }
        }
        out
    }

    /// Read a `ferrite.toml`: flat `name = value` pairs with Redis's names.
    pub fn load_toml(&mut self, path: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e| format!("{path}: {e}"))?;
        for (k, v) in table {
            let raw = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => if b { "yes" } else { "no" }.to_string(),
                other => return Err(format!("{path}: '{k}' has an unsupported value {other}")),
            };
            self.set_startup(&k, &raw)
                .map_err(|e| format!("{path}: {e}"))?;
        }
        self.config_file = Some(path.to_string());
        Ok(())
    }

    /// Parameter names and docs, for `--help` and ferrite.toml.example.
    pub fn params() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
        PARAMS.iter().map(|p| (p.name, p.default, p.doc))
    }

    pub fn stream_config(&self) -> ferrite_streams::StreamConfig {
        ferrite_streams::StreamConfig {
            node_max_entries: self.stream_node_max_entries,
            node_max_bytes: self.stream_node_max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512mb"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1KB"), Some(1024));
        assert_eq!(parse_memory("10xb"), None);
    }

    #[test]
    fn runtime_set_is_atomic_and_checked() {
        let mut c = Config::default();
        let pairs = vec![
            ("stream-node-max-entries".to_string(), "5".to_string()),
            ("port".to_string(), "1".to_string()),
        ];
        assert!(matches!(
            c.set_runtime(&pairs),
            Err(ConfigError::Immutable(_))
        ));
        assert_eq!(c.stream_node_max_entries, 100);
        let e = c
            .set_runtime(&[("proto-max-bulk-len".into(), "1k".into())])
            .unwrap_err();
        assert_eq!(
            e.config_set_message(),
            "ERR CONFIG SET failed (possibly related to argument 'proto-max-bulk-len') - argument must be between 1048576 and 9223372036854775807 inclusive"
        );
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// ferrite.toml.example must list every parameter and load cleanly.
    #[test]
    fn example_config_is_complete_and_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ferrite.toml.example");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (name, _, _) in Config::params() {
            assert!(
                text.contains(&format!("\n{name} = ")),
                "{name} missing from ferrite.toml.example"
            );
        }
        let mut c = Config::default();
        assert_eq!(c.load_toml(path), Ok(()));
        assert_eq!(c.proto_max_bulk_len, 512 * 1024 * 1024);
    }
}
