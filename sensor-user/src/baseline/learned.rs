//! One workload's baseline: what it was seen doing, whether it is still learning, and which
//! deviations were already reported. This is exactly what its baseline file holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::LearningConfig;
use super::bounded::Learned;
use super::shapes::Shapes;
use crate::behaviour::{Behaviour, Dimension};

/// Whether an event is learnt from or judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Learning,
    Detecting,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkloadBaseline {
    /// Event time of the workload's first event, ns since the epoch.
    pub first_seen_unix_nanos: Option<i64>,
    /// Event time of its first judged event, ns since the epoch.
    #[serde(default)]
    pub detecting_since_unix_nanos: Option<i64>,
    /// The distinct CI runs learnt from, in the order they started (at most `learning_runs`).
    #[serde(default)]
    pub learning_runs: Vec<String>,
    /// Everything learnt (at most `MAX_BEHAVIOURS_PER_DIMENSION` per dimension).
    #[serde(default)]
    pub learned: Learned,
    /// Ids of the deviations already reported (never reported again). Bounded through
    /// `reported_per_dimension`, plus one cardinality deviation per dimension.
    #[serde(default)]
    pub reported: BTreeSet<String>,
    /// New-behaviour deviations reported, per dimension (files written before this field
    /// existed start counting from 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported_per_dimension: BTreeMap<Dimension, usize>,
    /// Per reported deviation id (a key of `reported`): the later runs (or hours) it was
    /// reported again in, because it recurred and was not accepted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recurrences: BTreeMap<String, u32>,
    /// Rate envelope, dimension growth and outputs (see `profile`).
    #[serde(default, skip_serializing_if = "is_empty_profile")]
    pub profile: super::profile::Profile,
    /// Frozen by an operator (`sensor baseline freeze`): learns nothing, every event is judged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen: bool,
    /// Learning windows that overlapped a kernel loss (see [`LearningLosses`]).
    #[serde(default, skip_serializing_if = "LearningLosses::is_empty")]
    pub learning_losses: LearningLosses,
    /// Shapes of the random names among the learnt files (see `shapes`), learnt when judging
    /// starts.
    #[serde(default, skip_serializing_if = "Shapes::is_empty")]
    pub shapes: Shapes,
    /// Learnt by a sensor that did not yet record moves: who moves content onto a path
    /// (`replace` file operations) and processes leaving the workload (identity handoffs:
    /// jobs started, moves out of a plain cgroup). True for every baseline file written before
    /// the field existed. Such a baseline judges neither, since its own moves were never learnt
    /// and each would be reported after an upgrade (a build's moves onto its outputs as
    /// tampering, a runner's next job as an identity handoff); resetting it (or learning anew)
    /// clears it.
    #[serde(default = "learnt_before_the_field", skip_serializing_if = "is_true")]
    pub learnt_before_moves: bool,
}

/// The value of a field a baseline file lacks because an older sensor wrote it (this one
/// writes it whenever it is false).
fn learnt_before_the_field() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// Where the workload learnt while the kernel was losing records: what was lost was not learnt,
/// so a later deviation may be behaviour the baseline should have held. Shown to the operator
/// (`sensor status`, `sensor baseline show`) so such a baseline can be reset or re-learnt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LearningLosses {
    /// CI runs learnt from during which records were lost.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub runs: BTreeSet<String>,
    /// Time-learnt workloads: kernel losses noticed while the workload was active and learning.
    #[serde(default)]
    pub windows: u64,
    /// When the last one was noticed, ns since the epoch.
    #[serde(default)]
    pub last_unix_nanos: Option<i64>,
}

impl LearningLosses {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.windows == 0
    }

    /// Learning windows (runs or loss notices) marked.
    pub fn count(&self) -> u64 {
        self.runs.len() as u64 + self.windows
    }

    /// Marks the window of a workload that learnt at `now`: its latest learning run for a CI
    /// job (`runs` in learning order), one more window otherwise.
    pub fn mark(&mut self, learning_runs: &[String], now: i64) {
        match learning_runs.last() {
            Some(run) => {
                self.runs.insert(run.clone());
            }
            None => self.windows += 1,
        }
        self.last_unix_nanos = Some(now);
    }
}

/// The result of [`WorkloadBaseline::report`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// Reported before: say nothing.
    Already,
    /// Recorded as reported: report it now.
    New,
    /// Its dimension already reported `limit` deviations: not recorded, not reported.
    Full,
}

impl WorkloadBaseline {
    /// Decides the phase of an event at `time` of run `run_id`, recording a new learning run or
    /// the start of detection. Returns the phase and whether the baseline changed.
    ///
    /// CI runs (`run_id` set): the first `learning_runs` distinct runs learn (also their late
    /// events), every later run is judged. Otherwise: events within `learning_period` of the
    /// first event learn, later ones are judged.
    pub(crate) fn phase(
        &mut self,
        run_id: Option<&str>,
        time: i64,
        config: &LearningConfig,
    ) -> (Phase, bool) {
        let mut changed = false;
        let first = *self.first_seen_unix_nanos.get_or_insert_with(|| {
            changed = true;
            time
        });
        let phase = match run_id {
            _ if self.frozen => Phase::Detecting,
            Some(run) if self.learning_runs.iter().any(|r| r == run) => Phase::Learning,
            Some(run) if self.learning_runs.len() < config.learning_runs as usize => {
                self.learning_runs.push(run.to_owned());
                changed = true;
                Phase::Learning
            }
            Some(_) => Phase::Detecting,
            None if time < first.saturating_add(nanos(config.learning_period)) => Phase::Learning,
            None => Phase::Detecting,
        };
        if phase == Phase::Detecting && self.detecting_since_unix_nanos.is_none() {
            self.detecting_since_unix_nanos = Some(time);
            changed = true;
        }
        (phase, changed)
    }

    /// Whether `behaviour` is part of the baseline.
    pub(crate) fn knows(&self, behaviour: &Behaviour) -> bool {
        self.learned.contains(behaviour)
    }

    /// Whether `behaviour` is a file access or file operation of a learnt shape (a random name
    /// like the ones learnt; never a credential store, which the judge matches exactly).
    pub(crate) fn has_shape(&self, behaviour: &Behaviour) -> bool {
        match behaviour {
            Behaviour::File { path, intent } => self.shapes.matches(path, *intent),
            Behaviour::FileOperation {
                operation,
                path,
                detail,
            } => self.shapes.matches_operation(*operation, path, detail),
            _ => false,
        }
    }

    /// Records the new-behaviour deviation `id` of `dimension` as reported, unless it was
    /// already or its dimension already reported `limit` deviations.
    pub(crate) fn report(&mut self, id: &str, dimension: Dimension, limit: usize) -> Report {
        if self.reported.contains(id) {
            return Report::Already;
        }
        let count = self.reported_per_dimension.entry(dimension).or_default();
        if *count >= limit {
            return Report::Full;
        }
        *count += 1;
        self.reported.insert(id.to_owned());
        Report::New
    }

    /// Counts one more run in which the reported deviation `id` recurred; returns the runs it
    /// was reported in before this one.
    pub(crate) fn recurred(&mut self, id: &str) -> u32 {
        let later = self.recurrences.entry(id.to_owned()).or_default();
        *later += 1;
        *later
    }

    /// Whether `behaviour` should be reported: unknown, not of a learnt shape, and not an edge
    /// into an executable that is itself unknown (the new-executable deviation covers every edge
    /// into it).
    pub(crate) fn is_novel(&self, behaviour: &Behaviour) -> bool {
        if self.knows(behaviour) || self.has_shape(behaviour) {
            return false;
        }
        match behaviour {
            Behaviour::ExecEdge { child, .. } => self.knows(&Behaviour::Executable(child.clone())),
            // Likewise a sequence through a new executable.
            Behaviour::Sequence { steps, .. } => steps
                .iter()
                .all(|s| self.knows(&Behaviour::Executable(s.clone()))),
            _ => true,
        }
    }

    /// Counts of learnt behaviours: executables, edges, file accesses, destinations, and the
    /// rest (privileges, DNS names, listeners, file operations).
    pub(crate) fn sizes(&self) -> [usize; 5] {
        let count = |d| self.learned.count(d);
        let [executables, edges, files, destinations] = [
            Dimension::Executable,
            Dimension::ExecEdge,
            Dimension::FileAccess,
            Dimension::NetworkDestination,
        ]
        .map(count);
        let window_dimensions = [Dimension::Sequence, Dimension::Host, Dimension::ActiveTime]
            .map(count)
            .iter()
            .sum::<usize>();
        let other =
            self.learned.len() - executables - edges - files - destinations - window_dimensions;
        [executables, edges, files, destinations, other]
    }
}

fn is_empty_profile(p: &super::profile::Profile) -> bool {
    *p == super::profile::Profile::default()
}

/// The inverse of `crate::event::unix_nanos` for non-negative values.
pub(crate) fn from_unix_nanos(nanos: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
