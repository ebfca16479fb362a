//! Detection: what in an event is new to its workload's baseline, and how much it matters.
//!
//! [`Engine::observe`] takes each attributed event through two steps. **Learn**: while the
//! workload learns (see `baseline`), its behaviours go into the baseline. **Judge**: once it is
//! judged, a behaviour the baseline lacks becomes a [`Finding`], scored in its context (`score`:
//! dimension stability, the incident's chain of credential access, new tools, archives,
//! tampering), with [`Signal`]s, related evidence, an incident (`incident`: one per CI run or
//! process tree) and framework tags (`tags`). Per-run state (`live`) holds rate and novelty
//! windows (`rates`: spikes, enumerations) and budgets (`budget`: past a kind's budget findings
//! are aggregated, never dropped). A behaviour past its dimension's bound is reported as the
//! dimension's cardinality finding instead (once per workload and dimension), neither learnt
//! nor reported itself.
//!
//! Findings carry decisions only; `report` puts them into words and `sensor.v1` deviations.

mod blind;
mod budget;
mod finding;
mod identity;
mod ids;
mod incident;
mod judge;
mod live;
mod loading;
mod rates;
mod score;
mod secret_files;
mod sequence;
pub(crate) mod severity;
mod tags;
mod windows;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1::{DeviationKind, Severity};

use crate::attribute::{Attributed, IdentityClaim};
use crate::baseline::{
    BaselineError, Baselines, DimensionState, Entered, Learn, LearningConfig,
    MAX_BEHAVIOURS_PER_DIMENSION, Report, stability,
};
use crate::behaviour::{Behaviour, Dimension, generalize_path, object_name};
use crate::event::{EventKind, FileOperation, unix_nanos};

pub use budget::{BUDGET, Budget, SAMPLES};
pub use finding::{Evidence, Finding, HashGaveUp, Signal, Verdict};
pub use ids::{cardinality_id, deviation_id, deviation_kind, hash_fields};
pub use loading::{HOLD_NANOS, Loaded};
pub use rates::{ENUMERATION_THRESHOLD, Enumerated, Spike};
pub use severity::{SecretPaths, is_credential_access, severity};

use live::{Live, RunState};

/// How long a kind of finding must be quiet before its aggregate goes out.
pub const AGGREGATE_QUIET: Duration = Duration::from_secs(10);

/// Learns baselines and judges events against them; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    baselines: Baselines,
    /// The agent's host identity: in every id.
    host: String,
    secrets: SecretPaths,
    /// In-memory state of each workload's current runs (see `live`).
    /// Looked up by workload id on every event: foldhash (randomly seeded) instead of SipHash.
    live: HashMap<String, Live, foldhash::fast::RandomState>,
    /// The last children of each parent process, for tool-chain sequences.
    siblings: sequence::Siblings,
    /// Credential stores by device + inode, to know them under another name.
    secret_files: secret_files::SecretFiles,
    /// Recent kernel losses, for windows whose events are decoded after the loss was noticed.
    losses: blind::Losses,
}

impl Engine {
    /// Loads the baselines in `state_dir/baselines` (creating the directory). `host` goes into
    /// every finding's id.
    pub fn open(
        state_dir: &Path,
        config: LearningConfig,
        host: String,
    ) -> Result<Engine, BaselineError> {
        Ok(Engine {
            baselines: Baselines::open(state_dir, config)?,
            host,
            secrets: SecretPaths::default(),
            live: HashMap::default(),
            siblings: sequence::Siblings::default(),
            secret_files: secret_files::SecretFiles::default(),
            losses: blind::Losses::default(),
        })
    }

    /// Uses `secrets` (instead of the built-in list) to tell which paths are credential stores.
    pub fn with_secret_paths(mut self, secrets: SecretPaths) -> Self {
        self.secrets = secrets;
        self
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    pub fn baselines_mut(&mut self) -> &mut Baselines {
        &mut self.baselines
    }

    /// Learns from `event`, or judges it, and returns what it shows that was never reported
    /// before. An Exec of a new executable reports the executable, not also the edge. An event
    /// at which its process left another workload (a job started, a move out of a plain
    /// cgroup) is also that workload's: the handoff is its behaviour (see `attribute::lineage`).
    pub fn observe(&mut self, event: &Attributed) -> Vec<Finding> {
        let mut out = match &event.context.handoff {
            Some(handoff) if handoff.from.id != event.workload.id => {
                let mut left = event.clone();
                left.workload = Arc::new(handoff.from.clone());
                left.context.identity_claim = None;
                self.observe_in_workload(&left)
            }
            _ => Vec::new(),
        };
        out.extend(self.observe_in_workload(event));
        out
    }

    /// [`Engine::observe`] in the event's own workload.
    fn observe_in_workload(&mut self, event: &Attributed) -> Vec<Finding> {
        let now = unix_nanos(event.event.time);
        let workload = &event.workload.id;
        let mut out = Vec::new();
        // Before any workload's state: the store may have been opened by name by anyone.
        let secret_alias = self.secret_files.observe(&event.event.kind, &self.secrets);
        if !self.live.contains_key(workload) {
            self.live.insert(workload.clone(), Live::default());
        }
        let Some(live) = self.live.get_mut(workload) else {
            return out;
        };
        let baseline = self.baselines.enter(event, now);
        let profile = &baseline.tracked.baseline.profile;
        let run_id = event.workload.run_id.as_deref();
        let peak = |r| profile.peak(r);
        let run = live.run(&self.host, workload, run_id, now, &peak, &mut out);
        // New executables whose loading evidence is complete go out before what follows.
        out.extend(run.loading.due(Some(now)));
        if matches!(event.event.kind, EventKind::Exit { .. }) {
            out.extend(run.loading.exited(event.event.pid));
        }
        let mut step = Step {
            host: &self.host,
            secrets: &self.secrets,
            event,
            secret_alias,
            shared: None,
            baseline,
            run,
            now,
            secs: now.div_euclid(1_000_000_000),
            out,
        };
        step.count_judged_run();
        step.remember_window();
        if !self.losses.is_empty() {
            step.lost_meanwhile(&mut self.losses);
        }
        let spike = step.count_rates();
        step.identity_claim();
        let behaviours = step.behaviours(&mut self.siblings);
        if let Some(spike) = spike {
            step.spike(spike);
        }
        for behaviour in behaviours {
            step.behaviour(behaviour);
        }
        step.out
    }

    /// The kernel lost `lost` records just now (`now`): a HIGH blind spot for each run (or
    /// hour) of a workload active within `window` before, once per run (or hour), now or when
    /// an event of that interval is decoded later (see `blind`). What was lost may be exactly
    /// what an attacker flooded the ring to hide.
    pub fn blind_spots(&mut self, lost: u64, now: SystemTime, window: Duration) -> Vec<Finding> {
        let now = unix_nanos(now);
        let since = now.saturating_sub(i64::try_from(window.as_nanos()).unwrap_or(i64::MAX));
        self.losses.note(since, now, lost);
        let host = &self.host;
        let mut out = Vec::new();
        for (workload, live) in &mut self.live {
            for state in live.blind_windows(since) {
                let Some(first) = state.first.clone() else {
                    continue;
                };
                // Told at the time it was noticed: the window's first event, moved to now.
                let mut event = (*first).clone();
                event.event.time =
                    std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(now).unwrap_or(0));
                let event = Arc::new(event);
                out.push(blind::blind_spot(host, workload, state, event, now, lost));
            }
        }
        out
    }

    /// The aggregates (see `budget`) whose kind has been quiet for [`AGGREGATE_QUIET`] at
    /// `now`, or all of them when `now` is `None` (at shutdown).
    pub fn flush_aggregates(&mut self, now: Option<SystemTime>) -> Vec<Finding> {
        let quiet = i64::try_from(AGGREGATE_QUIET.as_nanos()).unwrap_or(i64::MAX);
        let quiet_since = now.map(|t| unix_nanos(t).saturating_sub(quiet));
        let mut out = self.flush_loading(now);
        let host = &self.host;
        out.extend(
            self.live
                .values_mut()
                .flat_map(|l| l.flush(host, quiet_since)),
        );
        out.sort_by_key(Finding::time_unix_nanos);
        out
    }

    /// New-executable deviations whose wait for loading evidence ended at `now` (the agent's
    /// clock, on a timer: a quiet process cannot keep one back), or all of them when `now` is
    /// `None` (at shutdown); see `loading`.
    pub fn flush_loading(&mut self, now: Option<SystemTime>) -> Vec<Finding> {
        let now = now.map(unix_nanos);
        let mut out: Vec<Finding> = self
            .live
            .values_mut()
            .flat_map(|l| l.loading_due(now))
            .collect();
        out.sort_by_key(Finding::time_unix_nanos);
        out
    }
}

/// One event on its way through the engine: its baseline, its run's state, and what it found.
struct Step<'a> {
    host: &'a str,
    secrets: &'a SecretPaths,
    event: &'a Attributed,
    /// The credential store this open reached under another name (same device + inode).
    secret_alias: Option<String>,
    /// The event, shared by its findings (copied once, for the first).
    shared: Option<Arc<Attributed>>,
    baseline: Entered<'a>,
    run: &'a mut RunState,
    /// Event time, ns and s since the epoch.
    now: i64,
    secs: i64,
    out: Vec<Finding>,
}

impl Step<'_> {
    fn learning(&self) -> bool {
        self.baseline.learning
    }

    fn shared(&mut self) -> Arc<Attributed> {
        let event = self.event;
        self.shared
            .get_or_insert_with(|| Arc::new(event.clone()))
            .clone()
    }

    /// The id of the event's incident: its run's, or its process tree's.
    fn incident_id(&mut self) -> String {
        let event = self.event;
        let root = judge::tree_root(event);
        let workload = &event.workload.id;
        self.run
            .incident(self.host, workload, root, self.now)
            .id
            .clone()
    }

    /// Keeps the window's first event (for a blind spot) and when it was last active.
    fn remember_window(&mut self) {
        self.run.last_seen = self.now;
        if self.run.first.is_none() {
            self.run.first = Some(self.shared());
        }
    }

    /// A blind spot for the window when the event is from a time the kernel lost records in
    /// and the window had none yet (the agent decodes late when it is behind).
    fn lost_meanwhile(&mut self, losses: &mut blind::Losses) {
        if self.run.blind {
            return;
        }
        if let Some(lost) = losses.at(self.now) {
            let event = self.shared();
            let workload = &self.event.workload.id;
            let found = blind::blind_spot(self.host, workload, self.run, event, self.now, lost);
            self.out.push(found);
        }
    }

    /// Counts the window as a judged run, once.
    fn count_judged_run(&mut self) {
        if !self.learning() && !self.run.counted {
            self.run.counted = true;
            let t = &mut self.baseline.tracked;
            t.dirty |= t.baseline.profile.judged(self.run.window_hash());
        }
    }

    /// Counts the event in its rates: raises learnt peaks, or returns a spike.
    fn count_rates(&mut self) -> Option<Spike> {
        let learning = self.learning();
        let (raised, spike) = self
            .run
            .rates
            .count(&self.event.event.kind, self.secs, learning);
        let t = &mut self.baseline.tracked;
        for (rate, peak) in raised.into_iter().flatten() {
            t.baseline.profile.peaks.insert(rate, peak);
            t.dirty = true;
        }
        spike
    }

    /// The event's behaviours, with what its context adds: the tool-chain sequence it ends,
    /// the host and the hour of the week (once per window). Learns build outputs.
    fn behaviours(&mut self, siblings: &mut sequence::Siblings) -> Vec<Behaviour> {
        let event = self.event;
        let mut behaviours = Behaviour::of(event);
        if let Some(secret) = &self.secret_alias {
            for b in &mut behaviours {
                if let Behaviour::File { path, .. } = b {
                    // Judged as the store it is, whatever name it was reached by.
                    *path = generalize_path(secret);
                }
            }
        }
        match &event.event.kind {
            EventKind::Exit { .. } => siblings.exit(event.event.pid),
            EventKind::FileOp(
                FileOperation::Link { new: path, .. } | FileOperation::Rename { to: path, .. },
            ) if self.learning() => {
                let t = &mut self.baseline.tracked;
                t.dirty |= t.baseline.profile.add_output(&generalize_path(path));
            }
            _ => {}
        }
        if let [
            Behaviour::Executable(child),
            Behaviour::ExecEdge { parent, .. },
        ] = behaviours.as_slice()
            && let Some(sequence) = siblings.exec(event.event.ppid, parent, child)
        {
            behaviours.push(sequence);
        }
        if !self.run.host_checked {
            self.run.host_checked = true;
            behaviours.push(Behaviour::Host(self.host.to_owned()));
        }
        let (weekday, hour) = judge::active_time(self.now);
        if self.run.active != Some((weekday, hour)) {
            self.run.active = Some((weekday, hour));
            behaviours.push(Behaviour::ActiveTime { weekday, hour });
        }
        behaviours
    }

    /// Reports an identity the event's process claimed, whatever the baseline holds (see
    /// `attribute::lineage`); never held back by the budget.
    fn identity_claim(&mut self) {
        let Some(claim) = &self.event.context.identity_claim else {
            return;
        };
        let incident = self.incident_id();
        let event = self.shared();
        let f = identity::identity_switch(self.host, event, IdentityClaim::clone(claim), &incident);
        self.out.push(f);
    }

    fn spike(&mut self, spike: Spike) {
        let incident = self.incident_id();
        let event = self.shared();
        let f = windows::rate_spike(self.host, event, spike, &self.run.window(), &incident);
        self.out.extend(self.run.budget.admit(f));
    }

    /// Learns or judges one behaviour; reports its dimension's cardinality when it is full.
    fn behaviour(&mut self, behaviour: Behaviour) {
        let dimension = behaviour.dimension();
        let full = if !self.judges(dimension) {
            self.learn(behaviour)
        } else if judge::is_novel(&self.baseline.tracked.baseline, &behaviour, self.secrets) {
            self.judge_or_fold(behaviour)
        } else {
            false
        };
        if full {
            self.cardinality(dimension);
        }
    }

    /// Whether `dimension` is judged. Hours of the week learn on until the workload has been
    /// seen for a week, and dimensions an upgraded baseline never had learn for a learning
    /// period.
    fn judges(&self, dimension: Dimension) -> bool {
        let late = matches!(
            dimension,
            Dimension::ActiveTime | Dimension::Sequence | Dimension::Host
        );
        !self.learning()
            && (!late
                || stability::state(
                    &self.baseline.tracked.baseline,
                    dimension,
                    self.baseline.config,
                    self.now,
                ) != DimensionState::Learning)
    }

    /// Learns `behaviour`; true when its dimension is full. Frozen baselines learn nothing,
    /// not even the dimensions still learning.
    fn learn(&mut self, behaviour: Behaviour) -> bool {
        let dimension = behaviour.dimension();
        let (learning, epoch) = (self.learning(), self.baseline.epoch);
        let t = &mut self.baseline.tracked;
        if t.baseline.frozen {
            return false;
        }
        match t
            .baseline
            .learned
            .learn(behaviour, MAX_BEHAVIOURS_PER_DIMENSION)
        {
            Learn::Known => false,
            Learn::Added => {
                t.dirty = true;
                if learning {
                    t.baseline.profile.grew(dimension, epoch);
                }
                false
            }
            Learn::Full => true,
        }
    }

    /// Judges the new `behaviour`, unless it is part of a new executable's loading (then it is
    /// learnt: see `loading`). True when its dimension is full.
    fn judge_or_fold(&mut self, behaviour: Behaviour) -> bool {
        let (pid, now) = (self.event.event.pid, self.now);
        if self.run.loading.folds(pid, now, &behaviour, self.secrets) {
            return self.learn(behaviour);
        }
        // Deviations go out in the order of their events: a held new executable first.
        self.out.extend(self.run.loading.release_all());
        if matches!(behaviour, Behaviour::Executable(_))
            && matches!(self.event.event.kind, EventKind::Exec { .. })
        {
            let forgotten = self.run.loading.started(pid, now);
            self.out.extend(forgotten);
        }
        self.judge(behaviour)
    }

    /// Judges the new `behaviour`: scores it in its incident and reports it once (or again,
    /// escalated, for a new severe chain). True when its dimension is full.
    fn judge(&mut self, behaviour: Behaviour) -> bool {
        let dimension = behaviour.dimension();
        let event = self.event;
        let workload = &event.workload.id;
        // The novelty (what the baseline remembers as reported, and accepts) and this run's
        // report of it: the run (or hour) is part of the deviation id.
        let novelty = deviation_id(self.host, workload, &behaviour);
        let id = self.run.report_id(&novelty);
        self.enumeration(&behaviour);
        let t = &mut self.baseline.tracked;
        t.dirty |= t
            .baseline
            .profile
            .novel_in(dimension, self.run.window_hash());
        let first_in_window = live::first_in_window(&mut self.run.reported, &novelty);
        let root = judge::tree_root(event);
        let incident = self.run.incident(self.host, workload, root, self.now);
        let scored = judge::score(
            &t.baseline,
            self.baseline.config,
            &behaviour,
            event,
            incident,
            self.now,
            self.secrets,
        );
        let mut scored = scored;
        if self.secret_alias.is_some() && matches!(behaviour, Behaviour::File { .. }) {
            scored.signals.push(Signal::ViaLink);
        }
        let credential = is_credential_access(&behaviour, self.secrets);
        let now = self.now;
        incident.record(&behaviour, credential, || {
            judge::evidence(&id, &behaviour, event, now)
        });
        let reported = t
            .baseline
            .report(&novelty, dimension, MAX_BEHAVIOURS_PER_DIMENSION);
        if reported == Report::New || (reported == Report::Already && first_in_window == Some(true))
        {
            incident.reported(&id);
        }
        let escalate = reported == Report::Already
            && scored.chained
            && scored.severity >= Severity::High
            && !incident.is_fresh(&id)
            && incident.has_fresh(&scored.related);
        let incident = incident.id.clone();
        match (reported, first_in_window) {
            // Reported before, maybe at a lower severity, but this incident's new chain makes
            // it severe: report it again, once per incident, under its own id.
            (Report::Already, _) if escalate => {
                self.escalate(&id, behaviour, scored, &incident);
                false
            }
            // Reported in an earlier run and never accepted: once more in each run (or hour)
            // where it recurs, so that a trigger in one run cannot make a later one silent.
            (Report::Already, Some(true)) => {
                let t = &mut self.baseline.tracked;
                let earlier = t.baseline.recurred(&novelty);
                t.dirty = true;
                scored.signals.push(Signal::Recurring(earlier));
                self.report(id, behaviour, scored, &incident, false);
                false
            }
            (Report::Already, _) => false,
            (Report::New, _) => {
                self.baseline.tracked.dirty = true;
                self.report(id, behaviour, scored, &incident, false);
                false
            }
            // Past the cap, a severe novelty still goes out on its own, once per run (the run's
            // severe budget bounds it): a flood that filled the dimension must not bury a
            // credential read in an aggregate's count.
            (Report::Full, Some(true)) if scored.severity >= Severity::High => {
                self.report(id, behaviour, scored, &incident, false);
                true
            }
            // Other novelties past the cap: never alone, never unsaid: counted into the run's
            // aggregate.
            (Report::Full, first) => {
                if first != Some(false) {
                    self.past_cap(id, behaviour, scored, &incident);
                }
                true
            }
        }
    }

    /// Counts the new `behaviour` of a full dimension into its kind's aggregate for this run.
    fn past_cap(
        &mut self,
        id: String,
        behaviour: Behaviour,
        scored: score::Scored,
        incident: &str,
    ) {
        let shared = self.shared();
        let verdict = judge::verdict(
            id,
            shared,
            &behaviour,
            scored,
            incident,
            false,
            self.secrets,
        );
        self.run.budget.hold(Finding::Novel { behaviour, verdict });
    }

    /// Reports `behaviour` (deviation `id`) again, escalated, unless `incident` already did.
    fn escalate(&mut self, id: &str, behaviour: Behaviour, scored: score::Scored, incident: &str) {
        let id = hash_fields(&[id, incident, "escalated"]);
        let t = &mut self.baseline.tracked;
        let dimension = behaviour.dimension();
        if t.baseline
            .report(&id, dimension, MAX_BEHAVIOURS_PER_DIMENSION)
            == Report::New
        {
            t.dirty = true;
            self.report(id, behaviour, scored, incident, true);
        }
    }

    /// Remembers novelty `id` (for `sensor baseline accept`) and hands it out: escalations at
    /// once, others through the run's budget.
    fn report(
        &mut self,
        id: String,
        behaviour: Behaviour,
        scored: score::Scored,
        incident: &str,
        escalated: bool,
    ) {
        let event = self.event;
        self.baseline
            .novelties
            .record(&id, &event.workload.id, &behaviour, event);
        let shared = self.shared();
        let secrets = self.secrets;
        let verdict = judge::verdict(id, shared, &behaviour, scored, incident, escalated, secrets);
        let finding = Finding::Novel { behaviour, verdict };
        if escalated {
            self.out.push(finding);
        } else {
            // A new executable waits (briefly) for its loading evidence: see `loading`.
            if let Some(admitted) = self.run.budget.admit(finding) {
                self.out.extend(self.run.loading.hold(admitted));
            }
        }
    }

    /// Counts the new `behaviour` in the run's novelty window; reports an enumeration.
    fn enumeration(&mut self, behaviour: &Behaviour) {
        let name = || object_name(behaviour);
        if let Some(e) = self.run.novelties.count(behaviour, name, self.secs) {
            let incident = self.incident_id();
            let event = self.shared();
            let f = windows::enumeration(self.host, event, e, &self.run.window(), &incident);
            self.out.extend(self.run.budget.admit(f));
        }
    }

    /// Reports that `dimension` is full, once per workload and dimension.
    fn cardinality(&mut self, dimension: Dimension) {
        let event = self.event;
        let workload = &event.workload.id;
        let id = cardinality_id(self.host, workload, dimension);
        let t = &mut self.baseline.tracked;
        if !t.baseline.reported.insert(id.clone()) {
            return;
        }
        t.dirty = true;
        let limit = MAX_BEHAVIOURS_PER_DIMENSION;
        let learning = self.learning();
        tracing::warn!(
            workload = %workload,
            dimension = dimension.as_str(),
            limit,
            learning,
            "baseline dimension full"
        );
        let incident = self.incident_id();
        let event = self.shared();
        let kind = DeviationKind::CardinalityExploded;
        let verdict = windows::plain_verdict(id, event, kind, severity::CARDINALITY, &incident);
        self.out.push(Finding::Cardinality {
            dimension,
            limit,
            learning,
            verdict,
        });
    }
}
