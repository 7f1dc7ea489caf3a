//! Replay at start-up: a record's commands through an internal session,
//! its subsystem effects to their subsystems; a failure stops the start-up
//! unless `replay-errors skip`.

use super::*;

/// What start-up recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct Recovered {
    pub checkpoint_seq: u64,
    pub records: u64,
    pub commands: u64,
    pub replay_errors: u64,
    pub millis: u128,
}

/// Replay one record's commands (or a checkpoint's rebuild commands, `seq`
/// 0). A command that fails is fatal unless `replay-errors skip` says
/// otherwise: Redis refuses to load an AOF whose commands fail, and a
/// skipped effect is a silent divergence from what clients were told.
pub(crate) fn replay(
    session: &mut Session,
    cmds: Vec<(usize, Vec<Bytes>)>,
    seq: u64,
    skip_errors: bool,
    out: &mut Recovered,
) -> Result<(), String> {
    let result = replay_cmds(session, cmds, seq, skip_errors, out);
    session.shared().store.lock().clear_effects();
    result
}

pub(crate) fn replay_cmds(
    session: &mut Session,
    cmds: Vec<(usize, Vec<Bytes>)>,
    seq: u64,
    skip_errors: bool,
    out: &mut Recovered,
) -> Result<(), String> {
    for (i, (db, argv)) in cmds.into_iter().enumerate() {
        let place = || match seq {
            0 => format!("checkpoint rebuild command {i}"),
            _ => format!("commit log record {seq}, command {i}"),
        };
        out.commands += 1;
        let what = if db == SUBSYSTEM_DB {
            match replay_subsystem(session.shared(), &argv) {
                Ok(()) => continue,
                Err(e) => format!("{} (a subsystem's effect) failed on replay: {e}", place()),
            }
        } else {
            let name = argv
                .first()
                .map(|n| String::from_utf8_lossy(n).into_owned());
            let reply = session.call_in_db(db, argv);
            let Reply::Error(e) = &reply else { continue };
            format!(
                "{} ({}) failed on replay: {}",
                place(),
                name.as_deref().unwrap_or("?"),
                String::from_utf8_lossy(e)
            )
        };
        if !skip_errors {
            return Err(format!(
                "{what}. Refusing to start; `replay-errors skip` starts anyway, \
                 skipping such commands (an operator decision)"
            ));
        }
        out.replay_errors += 1;
        tracing::warn!("{what} (skipped: replay-errors skip)");
    }
    Ok(())
}

/// Hand a logged subsystem effect (`[name, effect]`) to its subsystem.
pub(crate) fn replay_subsystem(shared: &Arc<Shared>, item: &[Bytes]) -> Result<(), String> {
    let [name, effect] = item else {
        return Err(format!(
            "{} parts instead of a name and an effect",
            item.len()
        ));
    };
    let name = String::from_utf8_lossy(name);
    let sub = shared
        .subsystem(&name)
        .ok_or_else(|| format!("no subsystem '{name}' in this build"))?;
    let mut store = shared.store.lock();
    sub.replay(&mut store, effect)
        .map_err(|e| format!("subsystem '{name}': {e}"))
}
