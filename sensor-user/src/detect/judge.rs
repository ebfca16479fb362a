//! Judging a new behaviour in its context: the facts scoring needs (dimension state, incident,
//! DNS name, build outputs, privilege), and its verdict (severity, score, signals, evidence,
//! incident, tags).

use std::sync::Arc;

use crate::attribute::Attributed;
use crate::baseline::{LearningConfig, WorkloadBaseline, stability};
use crate::behaviour::{Behaviour, FileChange, PrivilegeOperation, generalize_path};
use crate::event::OpenIntent;

use super::finding::{Evidence, Signal, Verdict};
use super::ids::deviation_kind;
use super::incident::Incident;
use super::score::{self, Facts, Scored};
use super::severity::{self, SecretPaths};
use super::tags;

/// The hour of the week of `nanos` (since the epoch), UTC: (weekday, 0 = Monday; hour).
pub(crate) fn active_time(nanos: i64) -> (u8, u8) {
    let secs = nanos.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    // 1970-01-01 was a Thursday.
    let weekday = u8::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
    let hour = u8::try_from(secs.rem_euclid(86_400) / 3_600).unwrap_or(0);
    (weekday, hour)
}

/// Whether `behaviour` is new to `baseline`. An hour of the week is new only when the hours
/// around it are new too (a job that runs at 09:50 may run at 10:05). A credential store is
/// known only by its exact path: a learnt shape never folds it.
pub(crate) fn is_novel(
    baseline: &WorkloadBaseline,
    behaviour: &Behaviour,
    secrets: &SecretPaths,
) -> bool {
    if severity::is_credential_access(behaviour, secrets) {
        return !baseline.knows(behaviour);
    }
    match behaviour {
        // Who moved content onto a path matters only on files the workload knows (its product,
        // what it reads); elsewhere the write of the path (`Behaviour::File`) already says
        // what is new.
        Behaviour::FileOperation {
            operation: FileChange::Replace,
            path,
            ..
        } => {
            if baseline.learnt_before_moves {
                return false;
            }
            let (product, read) = replaced(baseline, path);
            (product || read) && baseline.is_novel(behaviour)
        }
        // A baseline learnt before handoffs were recorded never saw its own (a runner's jobs).
        Behaviour::Privilege {
            operation: PrivilegeOperation::IdentityHandoff,
            ..
        } if baseline.learnt_before_moves => false,
        _ => is_novel_plain(baseline, behaviour),
    }
}

fn is_novel_plain(baseline: &WorkloadBaseline, behaviour: &Behaviour) -> bool {
    match *behaviour {
        Behaviour::ActiveTime { weekday, hour } => {
            let at = i32::from(weekday) * 24 + i32::from(hour);
            [-1, 0, 1].iter().all(|d| {
                let h = (at + d).rem_euclid(7 * 24);
                let known = Behaviour::ActiveTime {
                    weekday: u8::try_from(h / 24).unwrap_or(0),
                    hour: u8::try_from(h % 24).unwrap_or(0),
                };
                !baseline.knows(&known)
            })
        }
        _ => baseline.is_novel(behaviour),
    }
}

/// The root of `event`'s process tree: its topmost known ancestor below init, or itself.
pub(crate) fn tree_root(event: &Attributed) -> u32 {
    event
        .process
        .ancestry
        .iter()
        .rev()
        .find(|(pid, _)| *pid > 1)
        .map_or(event.event.pid, |(pid, _)| *pid)
}

/// What content moved onto `path` (generalised) replaces: `(product, input)`: the workload's
/// own product (a file it wrote or moved into place while learning, or an executable it ran),
/// or a file it only ever read.
fn replaced(baseline: &WorkloadBaseline, path: &str) -> (bool, bool) {
    let mut read = false;
    for intent in baseline.learned.intents(path) {
        if intent.modifies() {
            return (true, false);
        }
        read = true;
    }
    let product = baseline.profile.outputs.contains(path)
        || baseline.knows(&Behaviour::Executable(path.to_owned()));
    (product, read && !product)
}

/// What a new modifying access does to a file the workload knows: `(output, input)`: it
/// modifies a file the workload produces (written while learning, or moved into place by link or
/// rename), or one it only ever read (a served page, a checked-out source). Content moved onto
/// either by a new hand (another tool, another directory) tampers with it too.
fn tampers(baseline: &WorkloadBaseline, behaviour: &Behaviour) -> (bool, bool) {
    if let Behaviour::FileOperation {
        operation: FileChange::Replace,
        path,
        ..
    } = behaviour
    {
        return replaced(baseline, path);
    }
    let Behaviour::File { path, intent } = behaviour else {
        return (false, false);
    };
    if !intent.modifies() {
        return (false, false);
    }
    if baseline.profile.outputs.contains(path) {
        return (true, false);
    }
    let mut known = false;
    for intent in baseline.learned.intents(path) {
        if intent.modifies() {
            return (true, false);
        }
        known = true;
    }
    (false, known)
}

/// Scores the new `behaviour` of `event` in `incident`.
pub(crate) fn score(
    baseline: &WorkloadBaseline,
    config: &LearningConfig,
    behaviour: &Behaviour,
    event: &Attributed,
    incident: &Incident,
    now: i64,
    secrets: &SecretPaths,
) -> Scored {
    let dimension = behaviour.dimension();
    let executable = generalize_path(&event.process.executable);
    let dns_known = match behaviour {
        Behaviour::Destination { .. } => event
            .context
            .dns_name
            .as_ref()
            .map(|name| baseline.knows(&Behaviour::DnsName(name.clone()))),
        _ => Some(false),
    };
    let (output, input) = tampers(baseline, behaviour);
    let facts = Facts {
        state: stability::state(baseline, dimension, config, now),
        incident,
        executable: &executable,
        dns_known,
        output,
        input,
        privileged: event.event.euid == 0 && event.event.uid != 0,
        breadth: incident.breadth_with(dimension),
    };
    score::score(
        severity::severity(behaviour, &event.context, secrets),
        behaviour,
        &facts,
    )
}

/// Context worth saying next to the novelty, before scoring adds its own (see
/// `Deviation.signals` in the proto).
fn base_signals(event: &Attributed, behaviour: &Behaviour, secrets: &SecretPaths) -> Vec<Signal> {
    let mut out = Vec::new();
    if let Behaviour::Executable(_) = behaviour {
        if event.context.dropped_then_executed {
            out.push(Signal::DroppedThenExecuted);
        }
        if event.context.fileless {
            out.push(Signal::Fileless);
        }
    }
    if severity::is_credential_access(behaviour, secrets) {
        out.push(Signal::Credential);
    }
    if let Behaviour::File { path, intent } = behaviour
        && *intent != OpenIntent::READ_ONLY
        && severity::is_persistence(path)
    {
        out.push(Signal::Persistence);
    }
    out
}

/// The verdict on the new `behaviour` of `event` (deviation `id`, in `incident`), scored as
/// `scored`; `escalated` when reported again for this incident's chain.
pub(crate) fn verdict(
    id: String,
    event: Arc<Attributed>,
    behaviour: &Behaviour,
    scored: Scored,
    incident: &str,
    escalated: bool,
    secrets: &SecretPaths,
) -> Verdict {
    let mut signals = base_signals(&event, behaviour, secrets);
    if escalated {
        signals.push(Signal::Escalated);
    }
    signals.extend(scored.signals);
    let tags = tags::tags(
        deviation_kind(behaviour),
        Some(behaviour),
        &signals,
        secrets,
    );
    Verdict {
        id,
        event,
        severity: scored.severity,
        score: scored.score,
        signals,
        related: scored.related,
        incident_id: incident.to_owned(),
        tags,
        loaded: None,
    }
}

/// Evidence of the new `behaviour` (deviation `id`) of `event`, for later deviations.
pub(crate) fn evidence(id: &str, behaviour: &Behaviour, event: &Attributed, now: i64) -> Evidence {
    super::incident::evidence(
        id,
        deviation_kind(behaviour),
        crate::behaviour::summary(event, behaviour),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_of_the_week() {
        // 2023-11-14 22:13:20 UTC, a Tuesday.
        assert_eq!(active_time(1_700_000_000_000_000_000), (1, 22));
        assert_eq!(active_time(0), (3, 0));
        assert_eq!(active_time(-1), (2, 23));
    }

    #[test]
    fn a_baseline_learnt_before_moves_were_recorded_judges_none() {
        let replace = Behaviour::FileOperation {
            operation: FileChange::Replace,
            path: "/ws/out/app".into(),
            detail: "from /tmp by /usr/bin/mv".into(),
        };
        let written = Behaviour::File {
            path: "/ws/out/app".into(),
            intent: OpenIntent {
                write: true,
                ..OpenIntent::default()
            },
        };
        // A file an older sensor wrote: no `learnt_before_moves` field.
        let mut old: WorkloadBaseline = serde_json::from_str("{}").unwrap();
        assert!(old.learnt_before_moves);
        old.learned.learn(written.clone(), 10);
        assert!(!is_novel(&old, &replace, &SecretPaths::default()));

        let mut new = WorkloadBaseline::default();
        new.learned.learn(written, 10);
        let text = serde_json::to_string(&new).unwrap();
        let new: WorkloadBaseline = serde_json::from_str(&text).unwrap();
        assert!(!new.learnt_before_moves, "written as false: {text}");
        assert!(is_novel(&new, &replace, &SecretPaths::default()));
    }

    #[test]
    fn neighbouring_hours_are_not_new() {
        let mut b = WorkloadBaseline::default();
        b.learned.learn(
            Behaviour::ActiveTime {
                weekday: 6,
                hour: 23,
            },
            10,
        );
        let at = |weekday, hour| Behaviour::ActiveTime { weekday, hour };
        assert!(!is_novel(&b, &at(6, 22), &SecretPaths::default()));
        assert!(
            !is_novel(&b, &at(0, 0), &SecretPaths::default()),
            "wraps to Monday"
        );
        assert!(is_novel(&b, &at(0, 1), &SecretPaths::default()));
        assert!(is_novel(&b, &at(3, 23), &SecretPaths::default()));
    }

    /// A shape learnt from random names in a directory folds the next one, unless the
    /// directory holds credentials: there only the exact path is known.
    #[test]
    fn shapes_fold_random_names_but_never_credential_stores() {
        let mut b = WorkloadBaseline::default();
        let read: crate::event::OpenIntent = "read".parse().expect("intent");
        for dir in ["/w/cache", "/home/u/.ssh"] {
            for name in ["a1B2c3", "Zz9Yy8", "0oO0o9", "Qw3rty"] {
                let path = format!("{dir}/{name}");
                b.learned.learn(Behaviour::File { path, intent: read }, 100);
            }
        }
        b.shapes.refresh(&b.learned);
        let file = |path: &str| Behaviour::File {
            path: path.to_owned(),
            intent: read,
        };
        let secrets = SecretPaths::default();
        assert!(!is_novel(&b, &file("/w/cache/Xx7Yy6"), &secrets));
        assert!(is_novel(&b, &file("/home/u/.ssh/Xx7Yy6"), &secrets));
        assert!(
            !is_novel(&b, &file("/home/u/.ssh/a1B2c3"), &secrets),
            "learnt exactly"
        );
        // Executables are never matched by shape.
        let exe = Behaviour::Executable("/w/cache/Xx7Yy6".to_owned());
        assert!(is_novel(&b, &exe, &secrets));
    }
}
