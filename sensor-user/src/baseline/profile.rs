//! What a baseline learns besides its behaviours: the burst envelope (peak events per minute of
//! each rate), how each dimension grew while learning (its stability), and the files the workload
//! produces by link or rename (its outputs, with the files it writes).
//!
//! All of it is small (a few numbers per dimension, outputs bounded like a dimension) and lives in
//! the baseline file under `profile`; files written before it existed load with an empty profile.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::bounded::MAX_BEHAVIOURS_PER_DIMENSION;
use super::rates::RateDim;
use crate::behaviour::Dimension;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// Most events of each rate in one window while learning.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peaks: BTreeMap<RateDim, u32>,
    /// Per dimension: in how many learning epochs it grew, and the last one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub growth: BTreeMap<Dimension, Growth>,
    /// Per dimension: in how many judged runs (or hours) it showed new behaviour.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub novel_runs: BTreeMap<Dimension, NovelRuns>,
    /// Generalised paths the workload created by link or rename while learning (build outputs
    /// moved into place, like cargo's uplifted binaries).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub outputs: BTreeSet<String>,
    /// Judged runs (or hours) seen, and a hash of the last one, so each counts once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub judged_runs: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub last_judged: u64,
    /// [`PROFILE_VERSION`] once the engine saw this baseline; 0 in files written before the
    /// profile existed.
    #[serde(default)]
    pub version: u32,
    /// For a baseline that was already judged when it got its profile (an upgrade): when the
    /// dimensions it never learnt ([`LATE_DIMENSIONS`]) started learning, ns since the epoch.
    /// They learn for the learning period from then on instead of reporting everything as new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_since: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Version of the profile written by this build. 2: run hashes are [`stable_hash`]es (version 1
/// wrote the std hasher's, which change between Rust releases, so they are forgotten on upgrade:
/// at worst the run in progress at the upgrade counts twice).
pub(crate) const PROFILE_VERSION: u32 = 2;

/// Domain separation of [`stable_hash`].
const HASH_DOMAIN: &[u8] = b"sensor.baseline.run/1";

/// A 64-bit hash of `key` that every build computes the same (the first 8 bytes of a SHA-256),
/// for anything persisted.
pub fn stable_hash(key: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(HASH_DOMAIN)
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Dimensions that baselines written before the profile did not learn.
pub(crate) const LATE_DIMENSIONS: [Dimension; 3] =
    [Dimension::Sequence, Dimension::Host, Dimension::ActiveTime];

/// Growth of one dimension while learning. An epoch is one learning run for CI jobs, one fifth of
/// the learning period for other workloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Growth {
    pub epochs: u32,
    pub last_epoch: u32,
}

/// Judged runs (or hours) with new behaviour in one dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NovelRuns {
    pub runs: u32,
    /// Hash of the last such run's key, so each run counts once.
    pub last: u64,
}

impl Profile {
    /// Upgrades a profile seen for the first time at `now`; `judged`: the baseline was already
    /// judged (so its late dimensions start learning now). True when it changed.
    pub(crate) fn upgrade(&mut self, judged: bool, now: i64) -> bool {
        if self.version >= PROFILE_VERSION {
            return false;
        }
        if self.version == 0 && judged {
            self.late_since = Some(now);
        }
        if self.version < 2 {
            // Unstable hashes cannot be compared with stable ones: forget them.
            self.last_judged = 0;
            for n in self.novel_runs.values_mut() {
                n.last = 0;
            }
        }
        self.version = PROFILE_VERSION;
        true
    }

    /// Whether `dimension` is still learning at `now` because the baseline got it late.
    pub(crate) fn learning_late(&self, dimension: Dimension, now: i64, period: i64) -> bool {
        self.late_since
            .is_some_and(|t| now < t.saturating_add(period) && LATE_DIMENSIONS.contains(&dimension))
    }

    pub(crate) fn peak(&self, rate: RateDim) -> u32 {
        self.peaks.get(&rate).copied().unwrap_or(0)
    }

    /// Records that `dimension` learnt something new in `epoch`.
    pub(crate) fn grew(&mut self, dimension: Dimension, epoch: u32) {
        let g = self.growth.entry(dimension).or_default();
        if g.last_epoch != epoch {
            g.epochs += 1;
            g.last_epoch = epoch;
        }
    }

    /// Records new behaviour of `dimension` in the judged run (or hour) `run`; true when that run
    /// had none before (the profile changed).
    pub(crate) fn novel_in(&mut self, dimension: Dimension, run: u64) -> bool {
        let n = self.novel_runs.entry(dimension).or_default();
        if n.runs > 0 && n.last == run {
            return false;
        }
        n.runs += 1;
        n.last = run;
        true
    }

    /// Counts the judged run (or hour) `run`; true when it is new.
    pub(crate) fn judged(&mut self, run: u64) -> bool {
        if self.judged_runs > 0 && self.last_judged == run {
            return false;
        }
        self.judged_runs = self.judged_runs.saturating_add(1);
        self.last_judged = run;
        true
    }

    /// Learns `path` as an output; false when known or the bound is reached.
    pub(crate) fn add_output(&mut self, path: &str) -> bool {
        if self.outputs.len() >= MAX_BEHAVIOURS_PER_DIMENSION || self.outputs.contains(path) {
            return false;
        }
        self.outputs.insert(path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_hashes_are_stable_and_old_ones_are_forgotten() {
        // Fixed forever: a change here breaks every saved baseline's run counting.
        assert_eq!(stable_hash("run-7"), stable_hash("run-7"));
        assert_ne!(stable_hash("run-7"), stable_hash("run-8"));
        assert_eq!(stable_hash("run-7"), 0xa08d01f51ee64a14);
        let mut old = Profile {
            version: 1,
            judged_runs: 3,
            last_judged: 0xdead_beef,
            ..Profile::default()
        };
        old.novel_runs.insert(
            Dimension::FileAccess,
            NovelRuns {
                runs: 2,
                last: 0xfeed,
            },
        );
        assert!(old.upgrade(true, 5));
        assert_eq!(old.version, PROFILE_VERSION);
        assert_eq!(old.late_since, None, "only version 0 profiles learn late");
        assert_eq!(old.last_judged, 0);
        assert_eq!(old.novel_runs[&Dimension::FileAccess].last, 0);
        assert_eq!(old.judged_runs, 3, "counts are kept");
        assert!(old.judged(stable_hash("run-9")));
        assert!(!old.judged(stable_hash("run-9")));
        assert!(!old.upgrade(true, 6));
    }
}
