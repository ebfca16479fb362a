//! Learning state per dimension: learning → stable, or unstable when it keeps changing.
//!
//! A dimension is *learning* while its workload learns. After that it is *stable* when it stopped
//! growing before the last learning epoch (one run for CI jobs, a fifth of the learning period for
//! other workloads), and *unstable* when it still grew in the last epoch or, once judged, showed
//! new behaviour in [`UNSTABLE_RUNS`] or more runs (hours, for other workloads) that are more than
//! half of its judged runs: new behaviour there is less surprising, and scoring lowers it. (A few
//! runs with novelties are what attacks look like; they do not make a dimension unstable.) The time dimension learns on until the workload has
//! been seen for [`TIME_SPAN`], since hours of the week need a week to mean anything.

use std::fmt;
use std::time::Duration;

use super::LearningConfig;
use super::learned::WorkloadBaseline;
use crate::behaviour::Dimension;

/// Learning epochs of a workload that learns for a period.
pub const PERIOD_EPOCHS: u32 = 5;
/// Judged runs with new behaviour in a dimension that make it unstable.
pub const UNSTABLE_RUNS: u32 = 5;
/// How long a workload must have been seen before its active hours are judged.
pub const TIME_SPAN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Where one dimension of one workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DimensionState {
    Learning,
    Stable,
    Unstable,
}

impl DimensionState {
    pub fn as_str(self) -> &'static str {
        match self {
            DimensionState::Learning => "learning",
            DimensionState::Stable => "stable",
            DimensionState::Unstable => "unstable",
        }
    }
}

impl fmt::Display for DimensionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The learning epoch (1-based) of an event at `time` of run `run_id`.
pub(crate) fn epoch(
    baseline: &WorkloadBaseline,
    run_id: Option<&str>,
    time: i64,
    config: &LearningConfig,
) -> u32 {
    match run_id {
        Some(run) => baseline
            .learning_runs
            .iter()
            .position(|r| r == run)
            .map_or(u32::MAX, |i| u32::try_from(i + 1).unwrap_or(u32::MAX)),
        None => {
            let first = baseline.first_seen_unix_nanos.unwrap_or(time);
            let period = i128::try_from(config.learning_period.as_nanos())
                .unwrap_or(i128::MAX)
                .max(1);
            let elapsed = i128::from(time.saturating_sub(first)).max(0);
            let e = elapsed * i128::from(PERIOD_EPOCHS) / period + 1;
            u32::try_from(e.min(i128::from(PERIOD_EPOCHS))).unwrap_or(PERIOD_EPOCHS)
        }
    }
}

/// The state of `dimension` of `baseline`, judged at event time `now` (ns since the epoch).
pub(crate) fn state(
    baseline: &WorkloadBaseline,
    dimension: Dimension,
    config: &LearningConfig,
    now: i64,
) -> DimensionState {
    let period = i64::try_from(config.learning_period.as_nanos()).unwrap_or(i64::MAX);
    if baseline.detecting_since_unix_nanos.is_none()
        || baseline.profile.learning_late(dimension, now, period)
    {
        return DimensionState::Learning;
    }
    if dimension == Dimension::ActiveTime {
        let span = i64::try_from(TIME_SPAN.as_nanos()).unwrap_or(i64::MAX);
        let first = baseline
            .first_seen_unix_nanos
            .unwrap_or(now)
            .max(baseline.profile.late_since.unwrap_or(i64::MIN));
        return if now.saturating_sub(first) >= span {
            DimensionState::Stable
        } else {
            DimensionState::Learning
        };
    }
    let last = if baseline.learning_runs.is_empty() {
        PERIOD_EPOCHS
    } else {
        config.learning_runs
    };
    let profile = &baseline.profile;
    let still_growing = profile
        .growth
        .get(&dimension)
        .is_some_and(|g| last > 1 && g.last_epoch >= last);
    // New behaviour in most judged runs, not just in a few: a few runs with novelties are what
    // attacks look like, and must not teach the engine to expect them.
    let keeps_changing = profile.novel_runs.get(&dimension).is_some_and(|n| {
        n.runs >= UNSTABLE_RUNS && u64::from(n.runs) * 2 > u64::from(profile.judged_runs)
    });
    if still_growing || keeps_changing {
        DimensionState::Unstable
    } else {
        DimensionState::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn epochs_by_run_and_by_time() {
        let config = LearningConfig {
            learning_runs: 3,
            learning_period: Duration::from_secs(10 * 3600),
        };
        let mut b = WorkloadBaseline {
            learning_runs: vec!["a".into(), "b".into()],
            first_seen_unix_nanos: Some(0),
            ..WorkloadBaseline::default()
        };
        assert_eq!(epoch(&b, Some("b"), 0, &config), 2);
        assert_eq!(epoch(&b, Some("zz"), 0, &config), u32::MAX);
        b.learning_runs.clear();
        assert_eq!(epoch(&b, None, 0, &config), 1);
        assert_eq!(epoch(&b, None, 2 * HOUR - 1, &config), 1);
        assert_eq!(epoch(&b, None, 2 * HOUR, &config), 2);
        assert_eq!(epoch(&b, None, 9 * HOUR, &config), 5);
        assert_eq!(epoch(&b, None, 900 * HOUR, &config), 5);
    }

    #[test]
    fn stable_unstable_and_time() {
        let config = LearningConfig {
            learning_runs: 3,
            ..LearningConfig::default()
        };
        let mut b = WorkloadBaseline {
            learning_runs: vec!["a".into(), "b".into(), "c".into()],
            first_seen_unix_nanos: Some(0),
            ..WorkloadBaseline::default()
        };
        let st = |b: &WorkloadBaseline, d| state(b, d, &config, HOUR);
        assert_eq!(st(&b, Dimension::FileAccess), DimensionState::Learning);
        b.detecting_since_unix_nanos = Some(HOUR);
        b.profile.grew(Dimension::FileAccess, 1);
        b.profile.grew(Dimension::FileAccess, 2);
        b.profile.grew(Dimension::DnsName, 1);
        b.profile.grew(Dimension::DnsName, 3);
        assert_eq!(st(&b, Dimension::FileAccess), DimensionState::Stable);
        assert_eq!(st(&b, Dimension::DnsName), DimensionState::Unstable);
        assert_eq!(st(&b, Dimension::Executable), DimensionState::Stable);
        for run in [7, 7, 8, 9, 10] {
            b.profile.judged(run);
            b.profile.novel_in(Dimension::FileAccess, run);
        }
        assert_eq!(
            st(&b, Dimension::FileAccess),
            DimensionState::Stable,
            "4 runs"
        );
        b.profile.judged(11);
        b.profile.novel_in(Dimension::FileAccess, 11);
        assert_eq!(st(&b, Dimension::FileAccess), DimensionState::Unstable);
        // Five runs with novelties among many quiet ones: stable again.
        for run in 12..20 {
            b.profile.judged(run);
        }
        assert_eq!(st(&b, Dimension::FileAccess), DimensionState::Stable);
        assert_eq!(st(&b, Dimension::ActiveTime), DimensionState::Learning);
        assert_eq!(
            state(&b, Dimension::ActiveTime, &config, 7 * 24 * HOUR),
            DimensionState::Stable
        );
    }
}
