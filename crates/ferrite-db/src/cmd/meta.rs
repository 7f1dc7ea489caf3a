//! Redis 7.0's own command metadata (COMMAND INFO and COMMAND DOCS replies,
//! captured from redis-server by `scripts/gen-command-table.py`), parsed once.
//!
//! Ferrite takes arity, flags and subcommand lists from it, so that arity
//! errors, `COMMAND INFO` and the hints redis-cli builds from `COMMAND DOCS`
//! are Redis's own. Only the commands Ferrite implements are listed, and
//! container commands keep only the subcommands Ferrite implements.

use crate::reply::Reply;
use bytes::Bytes;
use std::collections::HashMap;

const RAW: &[u8] = include_bytes!("redis_commands.resp3");

/// Metadata of one command or subcommand (`config|get`).
#[derive(Debug, Clone)]
pub struct Meta {
    /// Lowercase full name, `xadd` or `config|get`.
    pub name: String,
    pub arity: i64,
    pub flags: Vec<String>,
    /// The COMMAND INFO entry (with subcommands filtered to implemented ones).
    pub info: Reply,
    /// The COMMAND DOCS value (map), filtered likewise.
    pub docs: Reply,
    /// Subcommand names (lowercase, without the container prefix).
    pub subcommands: Vec<String>,
    /// Where its keys are (from COMMAND INFO's key specs).
    pub key_specs: Vec<super::keyspec::KeySpec>,
}

impl Meta {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Parse a RESP3 frame into a [`Reply`], keeping map order. Only for the
/// embedded, trusted metadata; malformed data yields `None`, never a panic.
fn parse(buf: &[u8], pos: &mut usize) -> Option<Reply> {
    let start = *pos;
    let rel = buf.get(start..)?.iter().position(|&b| b == b'\r')?;
    let line = &buf[start + 1..start + rel];
    let tag = *buf.get(start)?;
    *pos = start + rel + 2;
    let text = std::str::from_utf8(line).ok()?;
    let num = || text.parse::<i64>().ok();
    let items = |pos: &mut usize, n: i64| -> Option<Vec<Reply>> {
        (0..n).map(|_| parse(buf, pos)).collect()
    };
    Some(match tag {
        b'+' => Reply::Simple(Bytes::copy_from_slice(line)),
        b'-' => Reply::Error(Bytes::copy_from_slice(line)),
        b':' => Reply::Int(num()?),
        b'_' => Reply::Null,
        b'#' => Reply::Bool(line == b"t"),
        b'$' => {
            let n = usize::try_from(num()?).ok()?;
            let data = buf.get(*pos..*pos + n)?;
            *pos += n + 2;
            Reply::Bulk(Bytes::copy_from_slice(data))
        }
        b'*' => Reply::Array(items(pos, num()?)?),
        b'~' => Reply::Set(items(pos, num()?)?),
        b'%' => {
            let flat = items(pos, num()? * 2)?;
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Reply::Map(pairs)
        }
        _ => return None,
    })
}

fn text(r: &Reply) -> Option<String> {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Keep only implemented subcommands in a COMMAND INFO entry (element 10).
fn filter_info(info: &mut Reply, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut names = Vec::new();
    if let Reply::Array(fields) = info {
        if let Some(Reply::Array(subs)) = fields.get_mut(9) {
            subs.retain(|s| match s {
                Reply::Array(f) => f.first().and_then(text).is_some_and(|n| keep(&n)),
                _ => false,
            });
            for s in subs.iter() {
                if let Reply::Array(f) = s {
                    if let Some(n) = f.first().and_then(text) {
                        names.push(n);
                    }
                }
            }
        }
    }
    names
}

/// Keep only implemented subcommands in a COMMAND DOCS value.
fn filter_docs(docs: &mut Reply, keep: &dyn Fn(&str) -> bool) {
    if let Reply::Map(pairs) = docs {
        for (k, v) in pairs.iter_mut() {
            if text(k).as_deref() == Some("subcommands") {
                if let Reply::Map(subs) = v {
                    subs.retain(|(n, _)| text(n).is_some_and(|n| keep(&n)));
                }
            }
        }
    }
}

fn info_fields(info: &Reply) -> Option<(String, i64, Vec<String>)> {
    let Reply::Array(f) = info else { return None };
    let name = text(f.first()?)?;
    let arity = match f.get(1)? {
        Reply::Int(n) => *n,
        _ => return None,
    };
    let flags = match f.get(2)? {
        Reply::Set(s) | Reply::Array(s) => s.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    Some((name, arity, flags))
}

/// Build the table for `implemented` full names (`xadd`, `config|get`, ...).
pub fn load(implemented: &dyn Fn(&str) -> bool) -> HashMap<String, Meta> {
    let mut pos = 0;
    let infos = parse(RAW, &mut pos);
    let docs = parse(RAW, &mut pos);
    let (Some(Reply::Array(infos)), Some(Reply::Map(docs))) = (infos, docs) else {
        // The file is generated and committed; a test guards its shape.
        return HashMap::new();
    };
    let mut docs: HashMap<String, Reply> = docs
        .into_iter()
        .filter_map(|(k, v)| Some((text(&k)?, v)))
        .collect();
    let mut out = HashMap::new();
    for mut info in infos {
        let Some((name, arity, flags)) = info_fields(&info) else {
            continue;
        };
        if !implemented(&name) && !implemented(&format!("{name}|")) {
            continue;
        }
        let keep = |sub: &str| implemented(sub);
        let subs = filter_info(&mut info, &keep);
        let mut doc = docs.remove(&name).unwrap_or(Reply::Map(Vec::new()));
        filter_docs(&mut doc, &keep);
        // Subcommands get their own entries so dispatch can check their arity.
        if let Reply::Array(fields) = &info {
            if let Some(Reply::Array(sub_infos)) = fields.get(9) {
                let sub_docs = match &doc {
                    Reply::Map(p) => p
                        .iter()
                        .find(|(k, _)| text(k).as_deref() == Some("subcommands"))
                        .map(|(_, v)| v.clone()),
                    _ => None,
                };
                for si in sub_infos {
                    let Some((sname, sarity, sflags)) = info_fields(si) else {
                        continue;
                    };
                    let sdoc = match &sub_docs {
                        Some(Reply::Map(p)) => p
                            .iter()
                            .find(|(k, _)| text(k).as_deref() == Some(sname.as_str()))
                            .map(|(_, v)| v.clone()),
                        _ => None,
                    };
                    out.insert(
                        sname.clone(),
                        Meta {
                            name: sname,
                            arity: sarity,
                            flags: sflags,
                            info: si.clone(),
                            docs: sdoc.unwrap_or(Reply::Map(Vec::new())),
                            subcommands: Vec::new(),
                            key_specs: super::keyspec::parse(si),
                        },
                    );
                }
            }
        }
        let subcommands = subs
            .iter()
            .filter_map(|s| s.split_once('|').map(|(_, b)| b.to_string()))
            .collect();
        out.insert(
            name.clone(),
            Meta {
                name,
                arity,
                flags,
                key_specs: super::keyspec::parse(&info),
                info,
                docs: doc,
                subcommands,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_metadata_parses() {
        let all = load(&|_| true);
        let xadd = &all["xadd"];
        assert_eq!(xadd.arity, -5);
        assert!(xadd.has_flag("write"));
        assert_eq!(all["config|get"].arity, -3);
        assert!(all["config"].subcommands.iter().any(|s| s == "get"));
    }

    #[test]
    fn filtering_drops_unimplemented_subcommands() {
        let t = load(&|n| n == "config" || n == "config|get" || n == "config|");
        assert_eq!(t["config"].subcommands, vec!["get".to_string()]);
        assert!(!t.contains_key("config|set"));
    }
}
