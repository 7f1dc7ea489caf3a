//! The engine's persisted state: effects in commit-log records and its
//! checkpoint section (subsystem "pipeline").
//!
//! Effects, one tag byte then the body (encodings in [`super::def`]):
//! - `D` definition: a pipeline created or replaced (its consumer group is
//!   created by the XGROUP CREATE logged before it, in the same record);
//! - `X` name: dropped;
//! - `P` name, u8: paused (1) or running (0);
//! - `E` name, counters: an epoch committed (the sink XADDs and the
//!   group's XGROUP SETID are in the same record);
//! - `R` name: RESET (counters and window state cleared);
//! - `W` name, bytes: the window state changes of an epoch (after its `E`,
//!   in the same record), in `WindowOp::epoch_delta`'s encoding;
//! - `S` name, bytes: the whole state (`Plan::snapshot`), after the `D` of
//!   a REPLACE that keeps a grouped pipeline's position and state (written
//!   before 2026-12-06; still read);
//! - `K` definition: a REPLACE that keeps a grouped pipeline's position and
//!   state (the same statement and time options): as `D`, the pipeline
//!   keeping its plan and the plan's state.
//!
//! The checkpoint section: `u8 version (2)`, `u32 count`, then per pipeline
//! its definition, `u8 paused`, its counters, and (version 2) `u32 len` and
//! its plan's state (`Plan::snapshot`: the state as of the last committed
//! epoch; encoded off the store lock, see [`Durable::snapshot`]). Version
//! 1 sections (no state) are still read. Builder pipelines
//! (defined in Rust) are not in it: their program defines them again at
//! start-up.

use super::def::{put_str, Cursor, Definition};
use super::{Counters, Engine, Status};
use ferrite_db::persist::Section;
use ferrite_db::store::Store;
use std::sync::Arc;

const SECTION_V1: u8 = 1;
const SECTION_V2: u8 = 2;

pub(crate) struct Durable(pub Arc<Engine>);

pub(crate) fn effect_define(def: &Definition) -> Vec<u8> {
    let mut v = vec![b'D'];
    def.encode(&mut v);
    v
}

pub(crate) fn effect_define_keeping(def: &Definition) -> Vec<u8> {
    let mut v = vec![b'K'];
    def.encode(&mut v);
    v
}

pub(crate) fn effect_drop(name: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    put_str(&mut v, name);
    v
}

pub(crate) fn effect_paused(name: &str, paused: bool) -> Vec<u8> {
    let mut v = vec![b'P'];
    put_str(&mut v, name);
    v.push(paused as u8);
    v
}

pub(crate) fn effect_epoch(name: &str, c: &Counters) -> Vec<u8> {
    let mut v = vec![b'E'];
    put_str(&mut v, name);
    c.encode(&mut v);
    v
}

pub(crate) fn effect_state(name: &str, delta: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(delta.len() + name.len() + 9);
    v.push(b'W');
    put_str(&mut v, name);
    v.extend_from_slice(&(delta.len() as u32).to_le_bytes());
    v.extend_from_slice(delta);
    v
}

#[cfg(test)]
pub(crate) fn effect_restore(name: &str, state: &[u8]) -> Vec<u8> {
    let mut v = effect_state(name, state);
    v[0] = b'S';
    v
}

pub(crate) fn effect_reset(name: &str) -> Vec<u8> {
    let mut v = vec![b'R'];
    put_str(&mut v, name);
    v
}

fn done(r: &Cursor<'_>) -> Result<(), String> {
    if r.is_empty() {
        Ok(())
    } else {
        Err("trailing bytes".into())
    }
}

impl ferrite_db::persist::Subsystem for Durable {
    fn replay(&self, store: &mut Store, effect: &[u8]) -> Result<(), String> {
        let (&tag, body) = effect
            .split_first()
            .ok_or_else(|| "empty pipeline effect".to_string())?;
        let mut r = Cursor::new(body);
        let e = &self.0;
        match tag {
            tag @ (b'D' | b'K') => {
                let def = Definition::decode(&mut r)?;
                done(&r)?;
                let status = if def.paused {
                    Status::Paused
                } else {
                    Status::Running
                };
                if tag == b'K' {
                    e.insert_keeping_plan(store, def, status, Counters::default());
                } else {
                    e.insert(store, def, status, Counters::default(), None);
                }
            }
            b'X' => {
                let name = r.string()?;
                done(&r)?;
                e.remove(store, &name)
                    .ok_or_else(|| format!("drop of unknown pipeline '{name}'"))?;
            }
            b'P' => {
                let name = r.string()?;
                let paused = r.u8()? == 1;
                done(&r)?;
                let mut st = e.state.lock();
                let p = st
                    .pipes
                    .get_mut(&name)
                    .ok_or_else(|| format!("pause of unknown pipeline '{name}'"))?;
                p.status = if paused {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
            b'E' => {
                let name = r.string()?;
                let c = Counters::decode(&mut r)?;
                done(&r)?;
                let mut st = e.state.lock();
                let p = st
                    .pipes
                    .get_mut(&name)
                    .ok_or_else(|| format!("epoch of unknown pipeline '{name}'"))?;
                p.counters = c;
            }
            b'R' => {
                let name = r.string()?;
                done(&r)?;
                let mut st = e.state.lock();
                let p = st
                    .pipes
                    .get_mut(&name)
                    .ok_or_else(|| format!("reset of unknown pipeline '{name}'"))?;
                p.counters = Counters::default();
                if let Some(plan) = &p.plan {
                    let mut plan = plan.lock();
                    plan.clear_state();
                    p.window_stats = plan.window_stats();
                }
                if !matches!(p.status, Status::Paused) && p.plan.is_some() {
                    p.status = Status::Running;
                }
            }
            tag @ (b'W' | b'S') => {
                let name = r.string()?;
                let delta = r.bytes()?;
                done(&r)?;
                let plan = {
                    let st = e.state.lock();
                    let p = st
                        .pipes
                        .get(&name)
                        .ok_or_else(|| format!("window state of unknown pipeline '{name}'"))?;
                    p.plan.clone()
                };
                // NOTE: a pipeline whose statement no longer compiles has no
                // plan to hold the state; it is failed and says why.
                if let Some(plan) = plan {
                    let w = {
                        let mut plan = plan.lock();
                        let r = if tag == b'W' {
                            plan.apply_delta(delta)
                        } else {
                            plan.restore(delta)
                        };
                        r.map_err(|err| format!("pipeline '{name}': {err}"))?;
                        plan.window_stats()
                    };
                    e.set_window_stats(&name, w);
                }
            }
            t => return Err(format!("unknown pipeline effect tag {t}")),
        }
        Ok(())
    }

    /// Under the store lock only the definitions, pause flags and counters
    /// are encoded, and each stateful plan is pinned ([`super::Pin`]); the
    /// plans' states are encoded by the returned function, off the lock
    /// (docs/pipelines.md, "Checkpoints").
    fn snapshot(&self, _store: &Store) -> Section {
        let st = self.0.state.lock();
        let kept: Vec<_> = st.pipes.values().filter(|p| !p.ephemeral).collect();
        let mut head = vec![SECTION_V2];
        head.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        let mut pipes = Vec::with_capacity(kept.len());
        for p in kept {
            let mut v = Vec::new();
            p.def.encode(&mut v);
            v.push(matches!(p.status, Status::Paused) as u8);
            p.counters.encode(&mut v);
            let plan = match &p.plan {
                Some(plan) if p.stateful => Some((plan.clone(), p.pin.hold())),
                _ => None,
            };
            pipes.push((v, plan));
        }
        drop(st);
        Section::Deferred(Box::new(move |out: &mut Vec<u8>| {
            out.extend_from_slice(&head);
            for (v, plan) in pipes {
                out.extend_from_slice(&v);
                let Some((plan, hold)) = plan else {
                    out.extend_from_slice(&0u32.to_le_bytes());
                    continue;
                };
                // The state as of the last committed epoch, even while the
                // runner evaluates the next one (Plan::snapshot); pinned, no
                // epoch committed since the capture.
                let state = plan.lock().snapshot();
                drop(hold);
                out.extend_from_slice(&(state.len() as u32).to_le_bytes());
                out.extend_from_slice(&state);
            }
        }))
    }

    fn restore(&self, store: &mut Store, state: &[u8]) -> Result<(), String> {
        let mut r = Cursor::new(state);
        let v = r.u8()?;
        if v != SECTION_V1 && v != SECTION_V2 {
            return Err(format!(
                "unknown pipeline section version {v} (this build reads 1 and 2)"
            ));
        }
        let n = r.u32()?;
        for _ in 0..n {
            let def = Definition::decode(&mut r)?;
            let status = match r.u8()? {
                0 => Status::Running,
                1 => Status::Paused,
                b => return Err(format!("bad paused flag {b}")),
            };
            let counters = Counters::decode(&mut r)?;
            let state = if v >= SECTION_V2 { r.bytes()? } else { &[] };
            let name = def.name.clone();
            self.0.insert(store, def, status, counters, None);
            if !state.is_empty() {
                let plan = self
                    .0
                    .state
                    .lock()
                    .pipes
                    .get(&name)
                    .and_then(|p| p.plan.clone());
                if let Some(plan) = plan {
                    let w = {
                        let mut plan = plan.lock();
                        plan.restore(state)
                            .map_err(|err| format!("pipeline '{name}': {err}"))?;
                        plan.window_stats()
                    };
                    self.0.set_window_stats(&name, w);
                }
            }
        }
        done(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_db::persist::Subsystem;

    #[test]
    fn effects_replay_and_section_round_trip() {
        let shared = ferrite_db::shared::Shared::new(ferrite_db::config::Config::default());
        let engine = Arc::new(Engine::new());
        let d = Durable(engine.clone());
        let mut store = shared.store.lock();
        let def = Definition {
            name: "p".into(),
            sql: "INSERT INTO b SELECT * FROM a".into(),
            db: 0,
            commit_interval_ms: 10,
            sink_maxlen: None,
            paused: false,
            created_ms: 1,
            window: Default::default(),
        };
        d.replay(&mut store, &effect_define(&def)).unwrap();
        let c = Counters {
            epoch: 3,
            entries_in: 10,
            ..Counters::default()
        };
        d.replay(&mut store, &effect_epoch("p", &c)).unwrap();
        d.replay(&mut store, &effect_paused("p", true)).unwrap();
        let snap = d.snapshot(&store).into_bytes();
        let engine2 = Arc::new(Engine::new());
        let d2 = Durable(engine2.clone());
        d2.restore(&mut store, &snap).unwrap();
        assert_eq!(engine2.counters("p"), Some(c));
        assert_eq!(engine2.status("p"), Some(Status::Paused));
        d.replay(&mut store, &effect_drop("p")).unwrap();
        assert!(engine.names().is_empty());
        // Unknown pipelines, tags and truncations are errors, not skips.
        assert!(d.replay(&mut store, &effect_drop("p")).is_err());
        assert!(d.replay(&mut store, b"Z").is_err());
        assert!(d.replay(&mut store, &[]).is_err());
        for cut in 0..snap.len() {
            assert!(d2.restore(&mut store, &snap[..cut]).is_err());
        }
    }
}
