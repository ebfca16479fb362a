//! What each workload normally does, learnt per workload, and judging events against it.
//!
//! Per workload the [`Engine`] learns [`Behaviour`]s: executables run, parent → child executable
//! edges, files opened (path and intent) and network destinations tried. CI jobs (events with a
//! run id) learn during their first `learning_runs` distinct runs and are judged from the start of
//! the next run on; other workloads learn for `learning_period` of event time after their first
//! event. Once judged, a behaviour that is not in the baseline becomes a deviation, reported once
//! (its id is remembered, also across restarts) and not added to the baseline: accepting
//! deviations into a baseline is an operator's decision, not the agent's.
//!
//! Paths are generalised first ([`generalize_path`]: pids, temporary names, hashes, UUIDs and
//! long numbers become placeholders), so identical runs learn identical behaviours. Each
//! dimension of a baseline is bounded by [`MAX_BEHAVIOURS_PER_DIMENSION`], for what is learnt and
//! for what is reported: the first behaviour past the bound, learning or judged, is reported once
//! as a `DEVIATION_KIND_CARDINALITY_EXPLODED` deviation instead, and that dimension stops growing.
//!
//! Baselines live in `<state_dir>/baselines/`, one JSON file per workload (see `store`).

mod behaviour;
mod bounded;
mod generalize;
mod judge;
mod learned;
mod live;
mod profile;
mod rates;
mod sequence;
mod stability;
mod store;
// Operator actions, versions and exports (`sensor baseline ...`).
#[cfg(test)]
mod crash_tests;
pub mod export;
mod novelties;
pub mod ops;
pub mod requests;
pub mod version;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use proto::v1::Severity;

use crate::attribute::Attributed;
use crate::deviation::report::{self, cardinality_id, deviation_id, unix_nanos};
use crate::deviation::{SecretPaths, findings};
use crate::event::{EventKind, FileOperation};

pub use behaviour::{Behaviour, Dimension};
pub use bounded::MAX_BEHAVIOURS_PER_DIMENSION;
pub use generalize::generalize_path;
pub use rates::{
    ENUMERATION_THRESHOLD, Enumerated, RateDim, Spike, WINDOW_SECONDS as RATE_WINDOW_SECONDS,
};
pub use stability::DimensionState;
pub use store::BaselineError;

use bounded::Learn;
use learned::{Phase, Report, WorkloadBaseline, from_unix_nanos};
use live::Live;

/// How long a kind of deviation must be quiet before its aggregate goes out.
pub const AGGREGATE_QUIET: Duration = Duration::from_secs(10);

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// How long workloads learn before they are judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearningConfig {
    /// Distinct runs a CI job learns from (`--learning-runs`).
    pub learning_runs: u32,
    /// How long, in event time from its first event, a non-CI workload learns.
    pub learning_period: Duration,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            learning_runs: 5,
            learning_period: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Where a workload is in its life, for logs and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearningStatus {
    /// A CI job learning from its first runs; judged from the run after the `needed`th.
    LearningRuns { seen: u32, needed: u32 },
    /// A workload learning for a period; `left` is measured from the newest event time the
    /// engine saw (or now, before any event).
    LearningTime { left: Duration },
    /// Events are judged against the baseline.
    Detecting,
}

/// A workload's learning status and baseline sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadSummary {
    pub workload: String,
    pub status: LearningStatus,
    pub executables: usize,
    pub exec_edges: usize,
    pub file_accesses: usize,
    pub destinations: usize,
    /// Privileges, DNS names, listeners and file operations.
    pub other: usize,
    /// Deviations reported so far.
    pub reported: usize,
    /// Exec sequences (tool chains), hosts and active hours of the week learnt.
    pub sequences: usize,
    pub hosts: usize,
    pub active_hours: usize,
    /// Learning state of each dimension, in `Dimension::ALL` order.
    pub dimensions: Vec<(Dimension, DimensionState)>,
    /// Learning windows (CI runs, or loss notices for time-learnt workloads) during which the
    /// kernel lost records: the baseline may lack what was lost.
    pub learning_losses: u64,
}

impl fmt::Display for WorkloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.workload)?;
        match &self.status {
            LearningStatus::LearningRuns { seen, needed } if seen >= needed => write!(
                f,
                "learning ({seen}/{needed} runs, detecting from the next run)"
            )?,
            LearningStatus::LearningRuns { seen, needed } => {
                write!(f, "learning ({seen}/{needed} runs)")?
            }
            LearningStatus::LearningTime { left } => {
                let left = Duration::from_secs(left.as_secs());
                write!(f, "learning ({} left)", humantime::format_duration(left))?
            }
            LearningStatus::Detecting => f.write_str("detecting")?,
        }
        write!(
            f,
            "; {} executables, {} exec edges, {} file accesses, {} destinations, {} other, {} reported",
            self.executables,
            self.exec_edges,
            self.file_accesses,
            self.destinations,
            self.other,
            self.reported
        )?;
        if self.learning_losses > 0 {
            write!(
                f,
                "; learnt through {} window(s) with kernel losses",
                self.learning_losses
            )?;
        }
        // Learning workloads: every dimension learns, the line stays short.
        if self.status != LearningStatus::Detecting {
            return Ok(());
        }
        write!(
            f,
            "; {} sequences, {} hosts, {} active hours",
            self.sequences, self.hosts, self.active_hours
        )?;
        for state in [
            DimensionState::Stable,
            DimensionState::Unstable,
            DimensionState::Learning,
        ] {
            let names: Vec<&str> = self
                .dimensions
                .iter()
                .filter(|(_, s)| *s == state)
                .map(|(d, _)| d.as_str())
                .collect();
            if !names.is_empty() {
                write!(f, "; {state}: {}", names.join(" "))?;
            }
        }
        Ok(())
    }
}

/// Learns baselines and reports deviations from them; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    dir: PathBuf,
    config: LearningConfig,
    host: String,
    workloads: HashMap<String, Tracked>,
    newest_event: Option<SystemTime>,
    secrets: SecretPaths,
    /// In-memory state of each workload's current runs (see `live`).
    live: HashMap<String, Live>,
    /// The last children of each parent process, for tool-chain sequences.
    siblings: sequence::Siblings,
    /// Reported deviations' behaviours, for `sensor baseline accept <id>`.
    novelties: novelties::Novelties,
    /// What was shared with the collector (`wire.rs`).
    shared: wire::Shared,
}

#[derive(Debug)]
struct Tracked {
    file_name: String,
    baseline: WorkloadBaseline,
    /// Changed since it was last written.
    dirty: bool,
    /// Event time of its latest event learnt from, ns since the epoch (not saved).
    learnt_at: Option<i64>,
}

impl Engine {
    /// Loads the baselines in `state_dir/baselines` (creating the directory). `host` goes into
    /// every deviation and its id.
    pub fn open(
        state_dir: &Path,
        config: LearningConfig,
        host: String,
    ) -> Result<Engine, BaselineError> {
        let dir = state_dir.join("baselines");
        let workloads = store::load_all(&dir)?
            .into_iter()
            .map(|(id, (file_name, baseline))| {
                let tracked = Tracked {
                    file_name,
                    baseline,
                    dirty: false,
                    learnt_at: None,
                };
                (id, tracked)
            })
            .collect::<HashMap<_, _>>();
        tracing::info!(dir = %dir.display(), workloads = workloads.len(), "baselines loaded");
        Ok(Engine {
            dir,
            config,
            host,
            workloads,
            newest_event: None,
            secrets: SecretPaths::default(),
            live: HashMap::new(),
            siblings: sequence::Siblings::default(),
            novelties: novelties::Novelties::default(),
            shared: wire::Shared::default(),
        })
    }

    /// Uses `secrets` (instead of the built-in list) to tell which paths are credential stores.
    pub fn with_secret_paths(mut self, secrets: SecretPaths) -> Self {
        self.secrets = secrets;
        self
    }

    /// Learns from `event`, or judges it, and returns the deviations it shows that were never
    /// reported before. An Exec of a new executable reports the executable, not also the edge.
    /// A behaviour past its dimension's bound is reported as the dimension's cardinality
    /// deviation (once per workload and dimension), neither learnt nor reported itself.
    pub fn observe(&mut self, event: &Attributed) -> Vec<proto::v1::Deviation> {
        let time = event.event.time;
        self.newest_event = Some(self.newest_event.map_or(time, |t| t.max(time)));
        let workload = &event.workload;
        if !self.workloads.contains_key(&workload.id) {
            let tracked = Tracked {
                file_name: store::file_name(&workload.id),
                baseline: WorkloadBaseline::default(),
                dirty: true,
                learnt_at: None,
            };
            self.workloads.insert(workload.id.clone(), tracked);
            self.shared.started.push(workload.id.clone());
        }
        let Some(tracked) = self.workloads.get_mut(&workload.id) else {
            return Vec::new();
        };
        let now = unix_nanos(time);
        let run_id = workload.run_id.as_deref();
        let judged_before = tracked.baseline.detecting_since_unix_nanos.is_some();
        tracked.dirty |= tracked.baseline.profile.upgrade(judged_before, now);
        let (phase, changed) = tracked.baseline.phase(run_id, now, &self.config);
        tracked.dirty |= changed;
        let learning = phase == Phase::Learning;
        if learning {
            tracked.learnt_at = Some(now);
        }
        let epoch = if learning {
            stability::epoch(&tracked.baseline, run_id, now, &self.config)
        } else {
            0
        };

        let limit = MAX_BEHAVIOURS_PER_DIMENSION;
        let mut deviations = Vec::new();
        if !self.live.contains_key(&workload.id) {
            self.live.insert(workload.id.clone(), Live::default());
        }
        let Some(live) = self.live.get_mut(&workload.id) else {
            return deviations;
        };
        let profile = &tracked.baseline.profile;
        let run = live.run(
            &self.host,
            &workload.id,
            run_id,
            now,
            &|r| profile.peak(r),
            &mut deviations,
        );

        if !learning && !run.counted {
            run.counted = true;
            tracked.dirty |= tracked.baseline.profile.judged(run.window_hash());
        }
        // Windows: rates, the host and the hour of the week, tool chains, outputs.
        let secs = now.div_euclid(1_000_000_000);
        let (raised, spike) = run.rates.count(&event.event.kind, secs, learning);
        for (rate, peak) in raised {
            tracked.baseline.profile.peaks.insert(rate, peak);
            tracked.dirty = true;
        }
        // A claimed identity is reported whatever the baseline holds (see `attribute::lineage`).
        if let Some(claim) = &event.context.identity_claim {
            let mut d = crate::deviation::identity::identity_switch(&self.host, event, claim);
            let incident = run.incident(&self.host, &workload.id, judge::tree_root(event), now);
            judge::finish_finding(&mut d, &incident.id.clone(), &self.secrets);
            deviations.push(d);
        }
        let mut behaviours = Behaviour::of(event);
        match &event.event.kind {
            EventKind::Exit { .. } => self.siblings.exit(event.event.pid),
            EventKind::FileOp(
                FileOperation::Link { new: path, .. } | FileOperation::Rename { to: path, .. },
            ) if learning => {
                tracked.dirty |= tracked.baseline.profile.add_output(&generalize_path(path));
            }
            _ => {}
        }
        if let [
            Behaviour::Executable(child),
            Behaviour::ExecEdge { parent, .. },
        ] = behaviours.as_slice()
            && let Some(sequence) = self.siblings.exec(event.event.ppid, parent, child)
        {
            behaviours.push(sequence);
        }
        if !run.host_checked {
            run.host_checked = true;
            behaviours.push(Behaviour::Host(self.host.clone()));
        }
        let (weekday, hour) = judge::active_time(now);
        if run.active != Some((weekday, hour)) {
            run.active = Some((weekday, hour));
            behaviours.push(Behaviour::ActiveTime { weekday, hour });
        }
        if let Some(spike) = spike {
            let mut d = findings::rate_spike(&self.host, event, &spike, &run.window());
            let root = judge::tree_root(event);
            let incident = run.incident(&self.host, &workload.id, root, now).id.clone();
            judge::finish_finding(&mut d, &incident, &self.secrets);
            deviations.extend(run.budget.admit(d));
        }

        for behaviour in behaviours {
            let dimension = behaviour.dimension();
            // Hours of the week learn on until the workload has been seen for a week, and
            // dimensions an upgraded baseline never had learn for a learning period.
            let judged = !learning
                && (!matches!(
                    dimension,
                    Dimension::ActiveTime | Dimension::Sequence | Dimension::Host
                ) || stability::state(&tracked.baseline, dimension, &self.config, now)
                    != DimensionState::Learning);
            let full = if !judged && tracked.baseline.frozen {
                // Frozen baselines learn nothing, not even the dimensions still learning.
                false
            } else if !judged {
                match tracked.baseline.learned.learn(behaviour, limit) {
                    Learn::Known => false,
                    Learn::Added => {
                        tracked.dirty = true;
                        if learning {
                            tracked.baseline.profile.grew(dimension, epoch);
                        }
                        false
                    }
                    Learn::Full => true,
                }
            } else if judge::is_novel(&tracked.baseline, &behaviour) {
                let id = deviation_id(&self.host, &workload.id, &behaviour);
                let name = || report::object_name(&behaviour);
                if let Some(e) = run.novelties.count(&behaviour, name, secs) {
                    let mut d = findings::enumeration(&self.host, event, &e, &run.window());
                    let root = judge::tree_root(event);
                    let incident = run.incident(&self.host, &workload.id, root, now).id.clone();
                    judge::finish_finding(&mut d, &incident, &self.secrets);
                    deviations.extend(run.budget.admit(d));
                }
                tracked.dirty |= tracked
                    .baseline
                    .profile
                    .novel_in(dimension, run.window_hash());
                let root = judge::tree_root(event);
                let incident = run.incident(&self.host, &workload.id, root, now);
                let scored = judge::score(
                    &tracked.baseline,
                    &self.config,
                    &behaviour,
                    event,
                    incident,
                    now,
                    &self.secrets,
                );
                let credential = crate::deviation::is_credential_access(&behaviour, &self.secrets);
                incident.record(&behaviour, credential, || {
                    judge::evidence(&id, &behaviour, event, now)
                });
                let reported = tracked.baseline.report(&id, dimension, limit);
                if reported == Report::New {
                    incident.reported(&id);
                }
                let escalate = reported == Report::Already
                    && scored.chained
                    && scored.severity >= Severity::High
                    && !incident.is_fresh(&id)
                    && incident.has_fresh(&scored.related);
                let incident = incident.id.clone();
                match reported {
                    // Reported before, maybe at a lower severity, but this incident's new chain
                    // makes it severe: report it again, once per incident, under its own id.
                    Report::Already if escalate => {
                        let id = report::hash_fields(&[id.as_str(), &incident, "escalated"]);
                        if tracked.baseline.report(&id, dimension, limit) == Report::New {
                            tracked.dirty = true;
                            self.novelties.record(&id, &workload.id, &behaviour, event);
                            let mut d =
                                report::build(&self.host, event, &behaviour, id, &self.secrets);
                            d.signals.push("escalated".to_owned());
                            judge::finish(&mut d, scored, &incident, &behaviour, &self.secrets);
                            deviations.push(d);
                        }
                        false
                    }
                    Report::Already => false,
                    Report::New => {
                        tracked.dirty = true;
                        self.novelties.record(&id, &workload.id, &behaviour, event);
                        let mut d = report::build(&self.host, event, &behaviour, id, &self.secrets);
                        judge::finish(&mut d, scored, &incident, &behaviour, &self.secrets);
                        deviations.extend(run.budget.admit(d));
                        false
                    }
                    Report::Full => true,
                }
            } else {
                false
            };
            if full {
                let id = cardinality_id(&self.host, &workload.id, dimension);
                if tracked.baseline.reported.insert(id.clone()) {
                    tracked.dirty = true;
                    tracing::warn!(
                        workload = %workload.id,
                        dimension = dimension.as_str(),
                        limit,
                        learning,
                        "baseline dimension full"
                    );
                    let mut d =
                        report::cardinality(&self.host, event, dimension, limit, learning, id);
                    let root = judge::tree_root(event);
                    let incident = run.incident(&self.host, &workload.id, root, now).id.clone();
                    judge::finish_finding(&mut d, &incident, &self.secrets);
                    deviations.push(d);
                }
            }
        }
        deviations
    }

    /// The aggregated deviations (see `deviation::budget`) whose kind has been quiet for
    /// [`AGGREGATE_QUIET`] at `now`, or all of them when `now` is `None` (at shutdown).
    pub fn flush_aggregates(&mut self, now: Option<SystemTime>) -> Vec<proto::v1::Deviation> {
        let quiet_since = now.map(|t| unix_nanos(t).saturating_sub(nanos(AGGREGATE_QUIET)));
        let mut out: Vec<proto::v1::Deviation> = self
            .live
            .values_mut()
            .flat_map(|l| l.flush(quiet_since))
            .collect();
        out.sort_by_key(|d| d.time_unix_nanos);
        out
    }

    /// Writes every baseline changed since the last call (crash-safely). On failure the others
    /// are still written, the failed ones stay pending for the next call, and the first error is
    /// returned.
    pub fn persist(&mut self) -> Result<(), BaselineError> {
        let mut first_error = None;
        if let Err(error) = self.novelties.flush(&self.dir) {
            tracing::warn!(%error, "cannot record reported deviations for `sensor baseline accept`");
        }
        for (id, tracked) in self.workloads.iter_mut().filter(|(_, t)| t.dirty) {
            match store::save(&self.dir, &tracked.file_name, id, &tracked.baseline) {
                Ok(()) => tracked.dirty = false,
                Err(error) => {
                    tracing::warn!(workload = %id, %error, "cannot persist baseline");
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The kernel lost records just now: marks the learning window of every workload that
    /// learnt within `window` of the newest event (their baselines may lack what was lost).
    /// Returns how many were marked.
    pub fn note_kernel_loss(&mut self, window: std::time::Duration) -> usize {
        let Some(newest) = self.newest_event else {
            return 0;
        };
        let now = unix_nanos(newest);
        let since = now.saturating_sub(i64::try_from(window.as_nanos()).unwrap_or(i64::MAX));
        let mut marked = 0;
        for t in self.workloads.values_mut() {
            if t.learnt_at.is_some_and(|at| at >= since) {
                let b = &mut t.baseline;
                b.learning_losses.mark(&b.learning_runs, now);
                t.dirty = true;
                marked += 1;
            }
        }
        marked
    }

    /// Every workload's learning status and baseline sizes, by workload id.
    pub fn summary(&self) -> Vec<WorkloadSummary> {
        let reference = self.newest_event.unwrap_or_else(SystemTime::now);
        let now = unix_nanos(reference);
        let mut out: Vec<WorkloadSummary> = self
            .workloads
            .iter()
            .map(|(id, t)| {
                let [executables, exec_edges, file_accesses, destinations, other] =
                    t.baseline.sizes();
                WorkloadSummary {
                    workload: id.clone(),
                    status: self.status(&t.baseline, reference),
                    executables,
                    exec_edges,
                    file_accesses,
                    destinations,
                    other,
                    reported: t.baseline.reported.len(),
                    sequences: t.baseline.learned.count(Dimension::Sequence),
                    hosts: t.baseline.learned.count(Dimension::Host),
                    active_hours: t.baseline.learned.count(Dimension::ActiveTime),
                    learning_losses: t.baseline.learning_losses.count(),
                    dimensions: Dimension::ALL
                        .iter()
                        .map(|d| (*d, stability::state(&t.baseline, *d, &self.config, now)))
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.workload.cmp(&b.workload));
        out
    }

    fn status(&self, b: &WorkloadBaseline, reference: SystemTime) -> LearningStatus {
        if b.detecting_since_unix_nanos.is_some() {
            return LearningStatus::Detecting;
        }
        if !b.learning_runs.is_empty() {
            return LearningStatus::LearningRuns {
                seen: u32::try_from(b.learning_runs.len()).unwrap_or(u32::MAX),
                needed: self.config.learning_runs,
            };
        }
        let until = b
            .first_seen_unix_nanos
            .map_or(reference, from_unix_nanos)
            .checked_add(self.config.learning_period);
        match until.map(|u| u.duration_since(reference)) {
            Some(Ok(left)) if !left.is_zero() => LearningStatus::LearningTime { left },
            Some(_) => LearningStatus::Detecting,
            // Beyond what SystemTime can hold: learning for all practical purposes.
            None => LearningStatus::LearningTime {
                left: self.config.learning_period,
            },
        }
    }
}
