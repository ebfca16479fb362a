//! What each workload normally does: baselines learnt per workload, their state and their
//! persistence. Deciding what is new, and how much it matters, is `detect`'s.
//!
//! Per workload a baseline holds [`Behaviour`]s: executables run, parent → child executable
//! edges, files opened (path and intent), network destinations tried and more (see
//! [`Dimension`]). CI jobs (events with a run id) learn during their first `learning_runs`
//! distinct runs and are judged from the start of the next run on; other workloads learn for
//! `learning_period` of event time after their first event. A baseline also remembers which
//! deviations were reported (their ids, also across restarts), so a novelty is reported once;
//! accepting a novelty into a baseline is an operator's decision, not the agent's.
//!
//! Each dimension of a baseline is bounded by [`MAX_BEHAVIOURS_PER_DIMENSION`], for what is learnt
//! and for what is reported.
//!
//! Baselines live in `<state_dir>/baselines/`, one JSON file per workload (see `store`).

mod bounded;
mod learned;
mod profile;
mod rates;
mod shapes;
pub(crate) mod stability;
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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::attribute::Attributed;
use crate::event::unix_nanos;

pub use crate::behaviour::{Behaviour, Dimension, generalize_path};
pub use bounded::MAX_BEHAVIOURS_PER_DIMENSION;
pub use rates::{RateDim, WINDOW_SECONDS};
pub use stability::DimensionState;
pub use store::BaselineError;

pub(crate) use bounded::Learn;
pub(crate) use learned::{Phase, Report, WorkloadBaseline, from_unix_nanos};
pub(crate) use novelties::Novelties;
pub use profile::stable_hash;
pub use shapes::MAX_SHAPES;

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

/// Every workload's baseline, loaded from and saved to the state directory; see the module
/// documentation.
#[derive(Debug)]
pub struct Baselines {
    dir: PathBuf,
    config: LearningConfig,
    /// Looked up by workload id on every event: foldhash (randomly seeded) instead of SipHash.
    workloads: HashMap<String, Tracked, foldhash::fast::RandomState>,
    newest_event: Option<SystemTime>,
    /// Reported deviations' behaviours, for `sensor baseline accept <id>`.
    novelties: novelties::Novelties,
    /// What was shared with the collector (`wire.rs`).
    shared: wire::Shared,
    /// Counts the learning phase changes (a new workload, learning run, or start of detection),
    /// so status can be rewritten when one happens.
    phase_changes: u64,
}

/// One workload's baseline and its bookkeeping.
#[derive(Debug)]
pub(crate) struct Tracked {
    file_name: String,
    pub(crate) baseline: WorkloadBaseline,
    /// Changed since it was last written.
    pub(crate) dirty: bool,
    /// Event time of its latest event learnt from, ns since the epoch (not saved).
    learnt_at: Option<i64>,
    /// Had an event since the agent started (not saved): only running workloads ask the
    /// collector for their merged baseline.
    running: bool,
}

impl Tracked {
    fn new(workload: &str) -> Tracked {
        Tracked {
            file_name: store::file_name(workload),
            baseline: WorkloadBaseline::default(),
            dirty: true,
            learnt_at: None,
            running: false,
        }
    }
}

/// An event's workload baseline, in the phase the event puts it in (see [`Baselines::enter`]).
pub(crate) struct Entered<'a> {
    pub tracked: &'a mut Tracked,
    pub novelties: &'a mut Novelties,
    pub config: &'a LearningConfig,
    /// The event is learnt from (else judged).
    pub learning: bool,
    /// Learning epoch of the event (see `stability`); 0 when judged.
    pub epoch: u32,
}

impl Baselines {
    /// Loads the baselines in `state_dir/baselines` (creating the directory).
    pub fn open(state_dir: &Path, config: LearningConfig) -> Result<Baselines, BaselineError> {
        let dir = state_dir.join("baselines");
        let workloads = store::load_all(&dir)?
            .into_iter()
            .map(|(id, (file_name, baseline))| {
                let tracked = Tracked {
                    file_name,
                    baseline,
                    dirty: false,
                    learnt_at: None,
                    running: false,
                };
                (id, tracked)
            })
            .collect::<HashMap<_, _, _>>();
        tracing::info!(dir = %dir.display(), workloads = workloads.len(), "baselines loaded");
        Ok(Baselines {
            dir,
            config,
            workloads,
            newest_event: None,
            novelties: novelties::Novelties::default(),
            shared: wire::Shared::default(),
            phase_changes: 0,
        })
    }

    /// The learning configuration.
    pub fn config(&self) -> &LearningConfig {
        &self.config
    }

    /// How many times a workload appeared, started a learning run or started being judged:
    /// when it moves, what `summary` says changed.
    pub fn phase_changes(&self) -> u64 {
        self.phase_changes
    }

    /// The baseline of `event`'s workload (created when new), in the phase the event puts it
    /// in: a new learning run, the start of detection, or an upgrade are recorded here. `now` is
    /// the event's time in ns since the epoch, as the caller already has it.
    pub(crate) fn enter(&mut self, event: &Attributed, now: i64) -> Entered<'_> {
        let time = event.event.time;
        self.newest_event = Some(self.newest_event.map_or(time, |t| t.max(time)));
        let workload = &event.workload;
        if !self.workloads.contains_key(&workload.id) {
            self.workloads
                .insert(workload.id.clone(), Tracked::new(&workload.id));
        }
        let tracked = self
            .workloads
            .get_mut(&workload.id)
            .expect("inserted just above");
        if !tracked.running {
            // New, or loaded from disk and running again: worth one fetch of the merged baseline.
            tracked.running = true;
            self.shared.started.push(workload.id.clone());
        }
        let run_id = workload.run_id.as_deref();
        let judged_before = tracked.baseline.detecting_since_unix_nanos.is_some();
        tracked.dirty |= tracked.baseline.profile.upgrade(judged_before, now);
        let (phase, changed) = tracked.baseline.phase(run_id, now, &self.config);
        tracked.dirty |= changed;
        self.phase_changes += u64::from(changed);
        let learning = phase == Phase::Learning;
        if !learning {
            // Judging starts (or an operator accepted a file): the shapes follow the files.
            let b = &mut tracked.baseline;
            tracked.dirty |= b.shapes.refresh(&b.learned);
        }
        let epoch = if learning {
            tracked.learnt_at = Some(now);
            stability::epoch(&tracked.baseline, run_id, now, &self.config)
        } else {
            0
        };
        Entered {
            tracked,
            novelties: &mut self.novelties,
            config: &self.config,
            learning,
            epoch,
        }
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
