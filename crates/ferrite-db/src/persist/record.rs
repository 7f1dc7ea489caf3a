//! The commit-log record: a batch of commands (and subsystem effects),
//! hand-encoded (docs/storage.md §13.1), and the size bound checked before
//! a command runs.

use super::*;

pub(crate) fn put_cmd(out: &mut Vec<u8>, db: usize, argv: &[Bytes]) {
    put_cmd_parts(out, db, &[], argv);
}

/// [`put_cmd`] of the command `head ++ tail`.
pub fn put_cmd_parts<F: AsRef<[u8]>>(out: &mut Vec<u8>, db: usize, head: &[&[u8]], tail: &[F]) {
    let len = 8
        + head.iter().map(|x| 4 + x.len()).sum::<usize>()
        + tail.iter().map(|x| 4 + x.as_ref().len()).sum::<usize>();
    out.reserve(len);
    put_u32(out, db);
    put_u32(out, head.len() + tail.len());
    for a in head {
        put_bytes(out, a);
    }
    for a in tail {
        put_bytes(out, a.as_ref());
    }
}

/// [`put_cmd_parts`] of `head` then the flattened `(field, value)` pairs
/// (`XADD key id f1 v1 ...` from a subsystem's results), without a flat
/// list built first.
pub fn put_cmd_pairs<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    db: usize,
    head: &[&[u8]],
    pairs: &[(A, B)],
) {
    let len = 8
        + head.iter().map(|x| 4 + x.len()).sum::<usize>()
        + pairs
            .iter()
            .map(|(f, v)| 8 + f.as_ref().len() + v.as_ref().len())
            .sum::<usize>();
    out.reserve(len);
    put_u32(out, db);
    put_u32(out, head.len() + 2 * pairs.len());
    for a in head {
        put_bytes(out, a);
    }
    for (f, v) in pairs {
        put_bytes(out, f.as_ref());
        put_bytes(out, v.as_ref());
    }
}

/// `n` commands encoded by [`put_cmd`], back as `(db, argv)` (what
/// `Store::take_effects` returns). Encoded by this process: a malformed
/// buffer would be a bug, and yields what decodes before it.
pub fn decode_cmds(b: &[u8], n: usize) -> Vec<(usize, Vec<Bytes>)> {
    let mut r = Reader::new(b);
    (0..n)
        .map_while(|_| read_cmd(&mut r, b.len()).ok())
        .collect()
}

/// The largest record the commit log takes: the frame format's limit
/// (~4 GiB), not the storage crate's 512 MiB default, so that no command a
/// client can send is refused by the log after it was applied in memory
/// (`cmd::dispatch` refuses larger ones before they run).
pub const LOG_RECORD_MAX: usize = ferrite_storage::MAX_RECORD_LEN;

/// An upper bound of the record that logging `cmds` (as given by clients)
/// takes, for commands whose logged effects are their arguments (XADD's
/// `*` becomes an ID, a trim becomes an exact XTRIM: `SLACK` covers them).
pub fn record_size_bound<'a, A: crate::args::ArgList + ?Sized + 'a>(
    cmds: impl IntoIterator<Item = &'a A>,
) -> usize {
    const SLACK: usize = 256;
    let len = |a: &A| 8 + (0..a.argc()).map(|i| 4 + a.arg(i).len()).sum::<usize>();
    5 + cmds.into_iter().map(|a| len(a) + SLACK).sum::<usize>()
}

/// Encode one command batch record (the server's own records are built in
/// place instead: `Store::pending_log`, [`Persistence::append_encoded`]).
pub fn encode_batch(cmds: &[(usize, Vec<Bytes>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + cmds.iter().map(|(_, a)| cmd_len(a)).sum::<usize>());
    out.push(KIND_BATCH);
    put_u32(&mut out, cmds.len());
    for (db, argv) in cmds {
        put_cmd(&mut out, *db, argv);
    }
    out
}

/// The encoded length of one command of a batch (`put_cmd`).
pub(crate) fn cmd_len(argv: &[Bytes]) -> usize {
    8 + argv.iter().map(|x| 4 + x.len()).sum::<usize>()
}

/// One command of a batch (`put_cmd`), read with the bounds-checked
/// cursor the checkpoint codecs share.
pub(crate) fn read_cmd(r: &mut Reader<'_>, total: usize) -> Result<(usize, Vec<Bytes>), String> {
    let db = r.u32()?;
    let argc = r.u32()?;
    // NOTE: capacity bounded by what the payload can hold, not by the count.
    let mut argv = Vec::with_capacity(argc.min(total / 4 + 1));
    for _ in 0..argc {
        argv.push(Bytes::copy_from_slice(r.bytes()?));
    }
    Ok((db, argv))
}

pub fn decode_batch(payload: &[u8]) -> Result<Vec<(usize, Vec<Bytes>)>, String> {
    let mut r = Reader::new(payload);
    let kind = r.u8()?;
    if kind != KIND_BATCH {
        return Err(format!("unknown record kind {kind}"));
    }
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(payload.len() / 8 + 1));
    for _ in 0..n {
        out.push(read_cmd(&mut r, payload.len())?);
    }
    if !r.done() {
        return Err("trailing bytes in record".into());
    }
    Ok(out)
}
