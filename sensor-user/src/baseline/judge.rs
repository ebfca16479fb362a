//! Judging a new behaviour in its context: the facts scoring needs (dimension state, incident,
//! DNS name, build outputs, privilege), and the finishing of deviations (score, signals,
//! evidence, incident, tags).

use proto::v1;

use crate::attribute::Attributed;
use crate::deviation::incident::Incident;
use crate::deviation::score::{self, Facts, Scored};
use crate::deviation::{SecretPaths, severity, tags};

use super::LearningConfig;
use super::behaviour::Behaviour;
use super::generalize::generalize_path;
use super::learned::WorkloadBaseline;
use super::stability;

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
/// around it are new too (a job that runs at 09:50 may run at 10:05).
pub(crate) fn is_novel(baseline: &WorkloadBaseline, behaviour: &Behaviour) -> bool {
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

/// What a new modifying access does to a file the workload knows: `(output, input)`: it
/// modifies a file the workload produces (written while learning, or moved into place by link or
/// rename), or one it only ever read (a served page, a checked-out source).
fn tampers(baseline: &WorkloadBaseline, behaviour: &Behaviour) -> (bool, bool) {
    let Behaviour::File { path, intent } = behaviour else {
        return (false, false);
    };
    if !severity::modifies(intent) {
        return (false, false);
    }
    if baseline.profile.outputs.contains(path) {
        return (true, false);
    }
    let mut known = false;
    for intent in baseline.learned.intents(path) {
        if severity::modifies(intent) {
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

/// Puts `scored`, the incident and the tags into the deviation `d` reporting `behaviour`.
pub(crate) fn finish(
    d: &mut v1::Deviation,
    scored: Scored,
    incident: &str,
    behaviour: &Behaviour,
    secrets: &SecretPaths,
) {
    d.severity = scored.severity.into();
    d.score = scored.score;
    d.signals.extend(scored.signals);
    d.related = scored.related;
    d.incident_id = incident.to_owned();
    d.tags = tags::tags(d.kind(), Some(behaviour), &d.signals, secrets);
}

/// Scores and tags a deviation that is not about one behaviour (cardinality, rate spike,
/// enumeration) from its base severity, and puts it in `incident`.
pub(crate) fn finish_finding(d: &mut v1::Deviation, incident: &str, secrets: &SecretPaths) {
    d.score = score::base_score(d.severity());
    d.incident_id = incident.to_owned();
    d.tags = tags::tags(d.kind(), None, &d.signals, secrets);
}

/// Evidence of the new `behaviour` (deviation `id`) of `event`, for later deviations.
pub(crate) fn evidence(
    id: &str,
    behaviour: &Behaviour,
    event: &Attributed,
    now: i64,
) -> v1::Evidence {
    crate::deviation::incident::evidence(
        id,
        crate::deviation::deviation_kind(behaviour),
        crate::deviation::report::summary(event, behaviour),
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
        assert!(!is_novel(&b, &at(6, 22)));
        assert!(!is_novel(&b, &at(0, 0)), "wraps to Monday");
        assert!(is_novel(&b, &at(0, 1)));
        assert!(is_novel(&b, &at(3, 23)));
    }
}
