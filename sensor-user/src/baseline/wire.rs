//! Baselines shared through the collector (`sensor.v1.Baselines`): the conversion of a workload's
//! baseline to and from the wire `Baseline`, and what the engine reports and adopts.
//!
//! On the wire each behaviour is its compact serde JSON (`{"executable":"/usr/bin/make"}`), the
//! same form as in exports, grouped by dimension. The collector compares them as strings, so a
//! collector never needs to know the behaviour kinds of the agents it serves; an agent skips
//! behaviours it cannot parse (reported by a newer agent).
//!
//! The engine reports a workload's baseline when what it learnt (behaviours or runs) grew since
//! its last report, and asks for the merged baseline of each workload it sees start while still
//! learning (once per workload and agent life). Adopting a *mature* merged baseline replaces what
//! the workload learnt locally (the current run's first moments included: they are not trusted
//! into the baseline) and makes it judged from then on; an immature one is merged in and learning
//! goes on, so ephemeral runners accumulate runs at the collector until it is mature.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use proto::v1::{Baseline, BaselineDimension};

use super::bounded::Learned;
use super::learned::WorkloadBaseline;
use super::{Baselines, LearningConfig, Tracked};
use crate::behaviour::Behaviour;

/// What was shared with the collector, per workload.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Workload → (behaviours, runs) at its last report.
    reported: HashMap<String, (usize, usize)>,
    /// Workloads whose merged baseline was asked for already.
    asked: HashSet<String>,
    /// Workloads that had their first event of this agent's life since the last
    /// [`Baselines::baselines_to_fetch`].
    pub(crate) started: Vec<String>,
}

/// The wire form of `b`.
pub(crate) fn to_wire(workload: &str, b: &WorkloadBaseline, mature: bool) -> Baseline {
    let mut dimensions: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for behaviour in b.learned.behaviours() {
        if let Ok(json) = serde_json::to_string(behaviour) {
            dimensions
                .entry(behaviour.dimension().as_str())
                .or_default()
                .push(json);
        }
    }
    Baseline {
        workload_id: workload.to_owned(),
        runs: b.learning_runs.clone(),
        mature,
        dimensions: dimensions
            .into_iter()
            .map(|(name, behaviours)| BaselineDimension {
                name: name.to_owned(),
                behaviours,
            })
            .collect(),
        version: 0,
        agents: 0,
        next_page_token: String::new(),
    }
}

/// The behaviours of a wire baseline, and how many were skipped as unknown to this agent.
pub(crate) fn behaviours(wire: &Baseline) -> (BTreeSet<Behaviour>, usize) {
    let mut set = BTreeSet::new();
    let mut skipped = 0;
    for text in wire.dimensions.iter().flat_map(|d| &d.behaviours) {
        match serde_json::from_str::<Behaviour>(text) {
            Ok(b) => {
                set.insert(b);
            }
            Err(_) => skipped += 1,
        }
    }
    (set, skipped)
}

/// Whether a workload's baseline is complete: judged already, or its CI runs are all learnt, or
/// its learning period is over (from `now`).
fn mature(b: &WorkloadBaseline, config: &LearningConfig, now: i64) -> bool {
    if b.detecting_since_unix_nanos.is_some() {
        return true;
    }
    if !b.learning_runs.is_empty() {
        return b.learning_runs.len() >= config.learning_runs as usize;
    }
    let period = i64::try_from(config.learning_period.as_nanos()).unwrap_or(i64::MAX);
    b.first_seen_unix_nanos
        .is_some_and(|first| now.saturating_sub(first) >= period)
}

impl Baselines {
    /// The baselines that learnt something since they were last reported, in wire form; they
    /// count as reported (reports are idempotent at the collector, so the caller retries a
    /// failed one as it likes).
    pub fn baselines_to_report(&mut self) -> Vec<Baseline> {
        let now = crate::event::unix_nanos(SystemTime::now());
        let mut out = Vec::new();
        for (id, t) in &self.workloads {
            let sizes = (t.baseline.learned.len(), t.baseline.learning_runs.len());
            if sizes.0 == 0 || self.shared.reported.get(id) == Some(&sizes) {
                continue;
            }
            self.shared.reported.insert(id.clone(), sizes);
            out.push(to_wire(
                id,
                &t.baseline,
                mature(&t.baseline, &self.config, now),
            ));
        }
        out
    }

    /// Workloads still learning whose merged baseline was not asked for yet: the ones that
    /// started running on this agent since the last call (new ones and ones loaded from disk
    /// alike; a workload that does not run here is never asked for). Each is returned once per
    /// engine. Cheap enough to call after every batch of events.
    pub fn baselines_to_fetch(&mut self) -> Vec<String> {
        let now = crate::event::unix_nanos(SystemTime::now());
        let candidates = std::mem::take(&mut self.shared.started);
        let mut out = Vec::new();
        for id in candidates {
            let Some(t) = self.workloads.get(&id) else {
                continue;
            };
            if !mature(&t.baseline, &self.config, now) && self.shared.asked.insert(id.clone()) {
                out.push(id);
            }
        }
        out
    }

    /// Adopts the collector's merged baseline for its workload (see the module documentation).
    /// Returns whether the workload is now judged against it.
    pub fn adopt(&mut self, wire: &Baseline) -> bool {
        let now = crate::event::unix_nanos(SystemTime::now());
        let workload = wire.workload_id.clone();
        let config = self.config.clone();
        let tracked = self
            .workloads
            .entry(workload.clone())
            .or_insert_with(|| Tracked::new(&workload));
        let b = &mut tracked.baseline;
        if b.frozen || mature(b, &config, now) {
            // Frozen by an operator, or complete locally: the local baseline wins.
            return false;
        }
        let (merged, skipped) = behaviours(wire);
        if wire.mature {
            b.learned = Learned::from(merged);
            if wire.runs.is_empty() {
                // A workload learning for a period: its period counts as over.
                let period = i64::try_from(config.learning_period.as_nanos()).unwrap_or(i64::MAX);
                b.first_seen_unix_nanos = Some(now.saturating_sub(period));
            } else {
                // The newest runs are enough to be judged: the merged list may hold hundreds.
                let keep = (config.learning_runs as usize).max(1);
                b.learning_runs = wire.runs[wire.runs.len().saturating_sub(keep)..].to_vec();
            }
        } else {
            let mut all = b.learned.behaviours().clone();
            all.extend(merged);
            b.learned = Learned::from(all);
            let mut runs = wire.runs.clone();
            for run in &b.learning_runs {
                if !runs.contains(run) {
                    runs.push(run.clone());
                }
            }
            b.learning_runs = runs;
        }
        tracked.dirty = true;
        let sizes = (b.learned.len(), b.learning_runs.len());
        let judged = mature(b, &config, now) || wire.mature;
        if wire.mature {
            // It came from the collector as it is: nothing to report back. (A merged-in
            // immature baseline holds what this agent learnt too: that is reported.)
            self.shared.reported.insert(workload.clone(), sizes);
        }
        tracing::info!(
            %workload,
            behaviours = sizes.0,
            runs = sizes.1,
            version = wire.version,
            agents = wire.agents,
            skipped,
            judged,
            "adopted the collector's merged baseline"
        );
        judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(p: &str) -> Behaviour {
        Behaviour::Executable(p.into())
    }

    #[test]
    fn wire_round_trip_groups_by_dimension() {
        let mut b = WorkloadBaseline::default();
        b.learned.learn(exe("/bin/a"), 10);
        b.learned.learn(
            Behaviour::File {
                path: "/etc/hosts".into(),
                intent: "read".parse().expect("intent"),
            },
            10,
        );
        b.learning_runs = vec!["1".into()];
        let w = to_wire("w", &b, false);
        let names: Vec<&str> = w.dimensions.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["executable", "file-access"]);
        assert_eq!(w.dimensions[0].behaviours, [r#"{"executable":"/bin/a"}"#]);
        let mut wire = w.clone();
        wire.dimensions[0]
            .behaviours
            .push(r#"{"from_the_future":1}"#.into());
        let (set, skipped) = behaviours(&wire);
        assert_eq!((set, skipped), (b.learned.behaviours().clone(), 1));
    }

    #[test]
    fn a_fresh_engine_adopts_a_mature_merged_baseline_and_judges_against_it() {
        let state = tempfile::tempdir().unwrap();
        let config = LearningConfig {
            learning_runs: 2,
            ..LearningConfig::default()
        };
        let mut engine = Baselines::open(state.path(), config).unwrap();
        let mut merged = WorkloadBaseline::default();
        merged.learned.learn(exe("/bin/a"), 10);
        merged.learning_runs = vec!["1".into(), "2".into()];
        let wire = to_wire("github:a/b/ci/c", &merged, true);
        assert!(engine.adopt(&wire));
        assert_eq!(
            engine.summary()[0].status,
            super::super::LearningStatus::LearningRuns { seen: 2, needed: 2 }
        );
        // Nothing new to report: it came from the collector.
        assert!(engine.baselines_to_report().is_empty());
        assert!(
            engine.baselines_to_fetch().is_empty(),
            "mature: nothing to ask"
        );
    }

    #[test]
    fn an_immature_merged_baseline_is_merged_in_and_the_union_reported() {
        let state = tempfile::tempdir().unwrap();
        let config = LearningConfig {
            learning_runs: 3,
            ..LearningConfig::default()
        };
        let mut engine = Baselines::open(state.path(), config).unwrap();
        let w = "github:a/b/ci/c";
        let mut local = WorkloadBaseline::default();
        local.learned.learn(exe("/bin/local"), 10);
        local.learning_runs = vec!["3".into()];
        engine.adopt(&to_wire(w, &local, false));
        let mut merged = WorkloadBaseline::default();
        merged.learned.learn(exe("/bin/a"), 10);
        merged.learning_runs = vec!["1".into(), "2".into()];
        engine.adopt(&to_wire(w, &merged, false));
        let reported = engine.baselines_to_report();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].runs, ["1", "2", "3"]);
        assert_eq!(behaviours(&reported[0]).0.len(), 2);
        assert!(reported[0].mature, "3 of 3 runs");
    }
}
