//! Where a command's keys are in its arguments, from Redis 7.0's own key
//! specs (COMMAND INFO's 9th field), interpreted as Redis's
//! `getKeysUsingKeySpecs` does. The database uses it to expire a command's
//! keys before the command runs (`cmd::run`), so no handler has to think
//! about expiry, and for COMMAND GETKEYS.

use crate::args::ArgList;
use crate::reply::Reply;

/// Where the search for keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// At this argument index.
    Index(usize),
    /// After this keyword, searched from `startfrom` (negative: from the
    /// end, backwards).
    Keyword { keyword: String, startfrom: i64 },
}

/// How far the keys go once found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Find {
    Range {
        lastkey: i64,
        step: i64,
        limit: i64,
    },
    KeyNum {
        keynumidx: i64,
        firstkey: i64,
        step: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: Begin,
    pub find: Find,
    /// Redis's key-spec flags (`RW`, `access`, `not_key`...), as listed.
    pub flags: Vec<String>,
}

fn field<'a>(map: &'a Reply, name: &str) -> Option<&'a Reply> {
    let Reply::Map(pairs) = map else { return None };
    pairs.iter().find_map(|(k, v)| match k {
        Reply::Bulk(b) | Reply::Simple(b) if b.as_ref() == name.as_bytes() => Some(v),
        _ => None,
    })
}

fn int(r: Option<&Reply>) -> Option<i64> {
    match r? {
        Reply::Int(n) => Some(*n),
        _ => None,
    }
}

fn text(r: Option<&Reply>) -> Option<String> {
    match r? {
        Reply::Bulk(b) | Reply::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The key specs of a COMMAND INFO entry (unknown kinds are left out:
/// Redis 7.0 has none).
pub fn parse(info: &Reply) -> Vec<KeySpec> {
    let Reply::Array(fields) = info else {
        return Vec::new();
    };
    let (Some(Reply::Array(specs)) | Some(Reply::Set(specs))) = fields.get(8) else {
        return Vec::new();
    };
    specs.iter().filter_map(parse_one).collect()
}

fn parse_one(spec: &Reply) -> Option<KeySpec> {
    let bs = field(spec, "begin_search")?;
    let bspec = field(bs, "spec")?;
    let begin = match text(field(bs, "type"))?.as_str() {
        "index" => Begin::Index(usize::try_from(int(field(bspec, "index"))?).ok()?),
        "keyword" => Begin::Keyword {
            keyword: text(field(bspec, "keyword"))?,
            startfrom: int(field(bspec, "startfrom"))?,
        },
        _ => return None,
    };
    let fk = field(spec, "find_keys")?;
    let fspec = field(fk, "spec")?;
    let find = match text(field(fk, "type"))?.as_str() {
        "range" => Find::Range {
            lastkey: int(field(fspec, "lastkey"))?,
            step: int(field(fspec, "keystep"))?,
            limit: int(field(fspec, "limit"))?,
        },
        "keynum" => Find::KeyNum {
            keynumidx: int(field(fspec, "keynumidx"))?,
            firstkey: int(field(fspec, "firstkey"))?,
            step: int(field(fspec, "keystep"))?,
        },
        _ => return None,
    };
    let flags = match field(spec, "flags") {
        Some(Reply::Array(f)) | Some(Reply::Set(f)) => {
            f.iter().filter_map(|x| text(Some(x))).collect()
        }
        _ => Vec::new(),
    };
    Some(KeySpec { begin, find, flags })
}

/// The one key's index when `specs` name exactly one key at a fixed index
/// that `argv` (of `argc` arguments) has: the common case, answered without
/// building a list. `None`: use [`key_positions`].
pub fn single_key_position(specs: &[KeySpec], argc: usize) -> Option<usize> {
    match specs {
        [KeySpec {
            begin: Begin::Index(i),
            find: Find::Range { lastkey: 0, .. },
            ..
        }] if *i >= 1 && *i < argc => Some(*i),
        _ => None,
    }
}

/// The argument indexes that are keys of `argv` under `specs`, in spec
/// order (a key named by two specs appears twice). Arguments that do not
/// fit a spec (a bad key count) end that spec's keys: the command itself
/// will refuse them.
pub fn key_positions(specs: &[KeySpec], argv: &(impl ArgList + ?Sized)) -> Vec<usize> {
    let argc = argv.argc() as i64;
    let mut out = Vec::new();
    for spec in specs {
        let first = match &spec.begin {
            Begin::Index(i) => *i as i64,
            Begin::Keyword { keyword, startfrom } => {
                let (start, end, dir): (i64, i64, i64) = if *startfrom >= 0 {
                    (*startfrom, argc - 1, 1)
                } else {
                    (argc + startfrom, 1, -1)
                };
                let mut i = start;
                let mut found = None;
                while (dir > 0 && i <= end) || (dir < 0 && i >= end) {
                    if i >= 1
                        && i < argc
                        && argv
                            .arg(i as usize)
                            .eq_ignore_ascii_case(keyword.as_bytes())
                    {
                        found = Some(i + 1);
                        break;
                    }
                    i += dir;
                }
                match found {
                    Some(f) => f,
                    None => continue,
                }
            }
        };
        let (last, step) = match &spec.find {
            Find::Range {
                lastkey,
                step,
                limit,
            } => {
                let last = if *lastkey >= 0 {
                    first + lastkey
                } else if *limit <= 1 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (last, *step)
            }
            Find::KeyNum {
                keynumidx,
                firstkey,
                step,
            } => {
                let idx = first + keynumidx;
                let Some(n) = (idx >= 0 && idx < argc)
                    .then(|| argv.arg(idx as usize))
                    .and_then(crate::args::parse_i64)
                    .filter(|n| *n >= 0 && *n <= argc)
                else {
                    continue;
                };
                let f = first + firstkey;
                let last = f + n - 1;
                let mut i = f;
                while i <= last && i < argc && *step > 0 {
                    out.push(i as usize);
                    i += step;
                }
                continue;
            }
        };
        if step <= 0 {
            continue;
        }
        let mut i = first;
        while i <= last && i < argc && i >= 1 {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

/// COMMAND GETKEYS: the keys of `argv` (`argv[0]` the command name) and
/// the spec each comes from, exactly as Redis 7.0's
/// `getKeysUsingKeySpecs` finds them, specs marked `not_key` left out.
/// `None`: the arguments do not fit a spec ("Invalid arguments specified
/// for command").
pub fn get_keys(specs: &[KeySpec], argv: &[bytes::Bytes]) -> Option<Vec<(usize, usize)>> {
    let argc = argv.len() as i64;
    let mut out = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        if spec.flags.iter().any(|f| f == "not_key") {
            continue;
        }
        let mut first = match &spec.begin {
            Begin::Index(i) => *i as i64,
            Begin::Keyword { keyword, startfrom } => {
                let (start, end) = if *startfrom > 0 {
                    (*startfrom, argc - 1)
                } else {
                    (argc + startfrom, 1)
                };
                let mut i = start;
                let mut found = 0;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if argv[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = i + 1;
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
        };
        let (last, step) = match &spec.find {
            Find::Range {
                lastkey,
                step,
                limit,
            } => {
                let last = if *lastkey >= 0 {
                    first + lastkey
                } else if *limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (last, *step)
            }
            Find::KeyNum {
                keynumidx,
                firstkey,
                step,
            } => {
                if *keynumidx >= argc {
                    return None;
                }
                let numkeys = argv
                    .get((first + keynumidx) as usize)
                    .and_then(|a| crate::args::parse_i64(a))
                    .filter(|n| *n >= 0)?;
                first += firstkey;
                (first.saturating_add(numkeys) - 1, *step)
            }
        };
        if last >= argc || last < first || first >= argc || step <= 0 {
            return None;
        }
        let mut i = first;
        while i <= last {
            out.push((i as usize, n));
            i += step;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn argv(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn keys(name: &str, line: &str) -> Vec<String> {
        let all = crate::cmd::meta::load(&|_| true);
        let a = argv(line);
        let specs = &all[name].key_specs;
        key_positions(specs, &a)
            .into_iter()
            .map(|i| String::from_utf8_lossy(&a[i]).into_owned())
            .collect()
    }

    #[test]
    fn keys_are_found_as_redis_finds_them() {
        assert_eq!(keys("get", "GET k"), ["k"]);
        assert_eq!(keys("mset", "MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys("del", "DEL a b c"), ["a", "b", "c"]);
        assert_eq!(
            keys("xread", "XREAD COUNT 2 STREAMS s1 s2 0 0"),
            ["s1", "s2"]
        );
        assert_eq!(
            keys("xreadgroup", "XREADGROUP GROUP g c STREAMS s1 >"),
            ["s1"]
        );
        assert_eq!(
            keys("zunionstore", "ZUNIONSTORE d 2 a b WEIGHTS 1 2"),
            ["d", "a", "b"]
        );
        assert_eq!(keys("rename", "RENAME a b"), ["a", "b"]);
        assert_eq!(keys("blpop", "BLPOP a b 0"), ["a", "b"]);
        assert!(keys("ping", "PING").is_empty());
        // A bad key count finds nothing there; the command refuses it.
        assert_eq!(keys("zunionstore", "ZUNIONSTORE d x a"), ["d"]);
    }
}
