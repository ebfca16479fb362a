//! What the engine keeps in memory per workload between events, and loses on restart: the state
//! of its current runs (CI jobs: one per run id, the last [`MAX_RUNS`]) or of its current hour
//! (other workloads): rate and novelty windows, budgets, and incidents (per run, or per process
//! tree for other workloads).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::attribute::Attributed;

use crate::baseline::RateDim;

use super::budget::Budget;
use super::finding::Finding;
use super::incident::Incident;
use super::loading::Loading;
use super::rates::{NoveltyWindow, RateWindow};

/// Runs of one CI job tracked at once (concurrent or recent runs).
pub const MAX_RUNS: usize = 8;
/// Process-tree incidents tracked per non-CI workload.
pub const MAX_TREES: usize = 64;
const HOUR_NANOS: i64 = 3_600_000_000_000;

#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Most recently used last.
    runs: Vec<RunState>,
}

#[derive(Debug)]
pub(crate) struct RunState {
    /// The CI run; `None` for other workloads.
    pub run: Option<String>,
    /// Other workloads: the hour (event time, hours since the epoch) of this window.
    pub hour: i64,
    /// The CI run's incident.
    pub incident: Incident,
    /// Other workloads: incidents per process-tree root, most recent last.
    trees: VecDeque<(u32, Incident)>,
    pub rates: RateWindow,
    pub novelties: NoveltyWindow,
    pub budget: Budget,
    /// The hour of the week last checked against the active-time profile.
    pub active: Option<(u8, u8)>,
    /// Whether the host was checked against the baseline's hosts.
    pub host_checked: bool,
    /// Whether this window was counted as a judged run.
    pub counted: bool,
    /// Novelty ids (see `ids::deviation_id`) reported in this window, at most
    /// [`MAX_REPORTED_PER_WINDOW`]: a recurring novelty is reported once per window.
    pub reported: HashSet<String>,
    /// The window's first event (what a blind spot of the window is told about) and the time
    /// of its latest, ns since the epoch.
    pub first: Option<Arc<Attributed>>,
    pub last_seen: i64,
    /// Whether a blind spot was reported for this window.
    pub blind: bool,
    /// New executables in their first moments (see `loading`).
    pub loading: Loading,
}

/// Novelties remembered per window; past it, recurring novelties of the window are aggregated.
pub const MAX_REPORTED_PER_WINDOW: usize = 50_000;

/// Whether novelty `id` is reported for the first time in this window, when there is room to
/// remember it (`None`: no room; count it into its kind's aggregate).
pub(crate) fn first_in_window(reported: &mut HashSet<String>, id: &str) -> Option<bool> {
    if reported.contains(id) {
        return Some(false);
    }
    if reported.len() >= MAX_REPORTED_PER_WINDOW {
        return None;
    }
    reported.insert(id.to_owned());
    Some(true)
}

impl RunState {
    fn new(
        host: &str,
        workload: &str,
        run: Option<&str>,
        hour: i64,
        peak: &dyn Fn(RateDim) -> u32,
    ) -> Self {
        RunState {
            run: run.map(str::to_owned),
            hour,
            incident: run.map_or_else(Incident::default, |r| Incident::for_run(host, workload, r)),
            trees: VecDeque::new(),
            rates: RateWindow::new(peak),
            novelties: NoveltyWindow::default(),
            budget: Budget::default(),
            active: None,
            host_checked: false,
            counted: false,
            reported: HashSet::new(),
            first: None,
            last_seen: 0,
            blind: false,
            loading: Loading::default(),
        }
    }

    /// The key of this window in ids: the run id, or `hour-<n>`.
    pub fn window(&self) -> String {
        match &self.run {
            Some(run) => run.clone(),
            None => format!("hour-{}", self.hour),
        }
    }

    /// The id of this window's report of `novelty` (a [`super::ids::deviation_id`]): a hash of
    /// both, led by the hour in a workload without runs (see [`super::ids::hour_first`]).
    pub fn report_id(&self, novelty: &str) -> String {
        let id = super::ids::hash_fields(&[novelty, &self.window()]);
        match self.run {
            Some(_) => id,
            None => super::ids::hour_first(id, self.hour),
        }
    }

    /// A hash of [`Self::window`], for counting distinct runs. Persisted in baselines, so
    /// stable across builds (see [`crate::baseline::stable_hash`]).
    pub fn window_hash(&self) -> u64 {
        crate::baseline::stable_hash(&self.window())
    }

    /// The incident of an event of process `root`'s tree (other workloads) or of the run.
    pub fn incident(&mut self, host: &str, workload: &str, root: u32, time: i64) -> &mut Incident {
        if self.run.is_some() {
            return &mut self.incident;
        }
        let index = match self.trees.iter().position(|(r, _)| *r == root) {
            Some(i) => i,
            None => {
                if self.trees.len() >= MAX_TREES {
                    self.trees.pop_front();
                }
                self.trees
                    .push_back((root, Incident::for_tree(host, workload, root, time)));
                self.trees.len() - 1
            }
        };
        &mut self.trees[index].1
    }
}

impl Live {
    /// The state of run `run` (or of the workload's current hour) at event time `time`, created
    /// when new. Aggregates of windows that end here (an evicted run, a past hour) go to `out`.
    pub(crate) fn run(
        &mut self,
        host: &str,
        workload: &str,
        run: Option<&str>,
        time: i64,
        peak: &dyn Fn(RateDim) -> u32,
        out: &mut Vec<Finding>,
    ) -> &mut RunState {
        let hour = time.div_euclid(HOUR_NANOS);
        let found = self.runs.iter().position(|r| r.run.as_deref() == run);
        let index = match found {
            Some(i) => {
                let state = &mut self.runs[i];
                if run.is_none() && hour > state.hour {
                    // A new hour for a workload without runs: new window, same incidents.
                    out.extend(state.budget.reset(host, &state.window()));
                    state.hour = hour;
                    state.rates = RateWindow::new(peak);
                    state.novelties = NoveltyWindow::default();
                    state.active = None;
                    state.counted = false;
                    state.reported.clear();
                    state.first = None;
                    state.blind = false;
                }
                i
            }
            None => {
                if self.runs.len() >= MAX_RUNS {
                    let mut old = self.runs.remove(0);
                    out.extend(old.loading.due(None));
                    out.extend(old.budget.reset(host, &old.window()));
                }
                self.runs
                    .push(RunState::new(host, workload, run, hour, peak));
                self.runs.len() - 1
            }
        };
        // Most recently used last, so eviction takes the least recent.
        let last = self.runs.len() - 1;
        if index != last {
            let state = self.runs.remove(index);
            self.runs.push(state);
        }
        &mut self.runs[last]
    }

    /// Held new-executable deviations due at `now` (see `loading`), or all of them.
    pub(crate) fn loading_due(&mut self, now: Option<i64>) -> Vec<Finding> {
        self.runs
            .iter_mut()
            .flat_map(|state| state.loading.due(now))
            .collect()
    }

    /// Aggregates quiet since `quiet_since` (event time), or all of them.
    pub(crate) fn flush(&mut self, host: &str, quiet_since: Option<i64>) -> Vec<Finding> {
        let mut out = Vec::new();
        for state in &mut self.runs {
            let window = state.window();
            out.extend(state.budget.flush(host, &window, quiet_since));
        }
        out
    }

    /// The windows active since `since` (event time, ns) that have not had their blind spot
    /// yet, marked as having had it now.
    pub(crate) fn blind_windows(&mut self, since: i64) -> Vec<&mut RunState> {
        let mut out = Vec::new();
        for s in &mut self.runs {
            if !s.blind && s.first.is_some() && s.last_seen >= since {
                s.blind = true;
                out.push(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_bounded_and_hours_roll() {
        let mut live = Live::default();
        let mut out = Vec::new();
        for i in 0..(MAX_RUNS + 2) {
            live.run("h", "w", Some(&i.to_string()), 0, &|_| 0, &mut out);
        }
        assert_eq!(live.runs.len(), MAX_RUNS);
        assert_eq!(live.runs[0].run.as_deref(), Some("2"));
        let id = live
            .run("h", "w", Some("5"), 0, &|_| 0, &mut out)
            .incident
            .id
            .clone();
        assert_eq!(id, Incident::for_run("h", "w", "5").id);
        assert_eq!(
            live.runs[MAX_RUNS - 1].run.as_deref(),
            Some("5"),
            "most recent last"
        );

        let s = live.run("h", "svc", None, HOUR_NANOS + 5, &|_| 0, &mut out);
        assert_eq!(s.window(), "hour-1");
        let tree = s.incident("h", "svc", 42, HOUR_NANOS + 5).id.clone();
        let s = live.run("h", "svc", None, 3 * HOUR_NANOS, &|_| 0, &mut out);
        assert_eq!(s.window(), "hour-3");
        assert_eq!(
            s.incident("h", "svc", 42, 0).id,
            tree,
            "incidents outlive the hour"
        );
        assert_ne!(s.incident("h", "svc", 43, 0).id, tree);
    }
}
