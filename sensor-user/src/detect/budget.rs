//! Budgets: per workload, window (a CI run, or an hour for other workloads) and kind, the first
//! [`BUDGET`] deviations go out one by one; the ones after are counted into one
//! `DEVIATION_KIND_AGGREGATED` deviation (count, the first [`SAMPLES`] summaries and ids) that goes
//! out once its kind has been quiet for a while, when the window ends, or when the agent stops.
//! Nothing is dropped silently. High and critical deviations have a budget of their own (a flood of
//! them is aggregated too, with its count and samples); novelties past their dimension's cap are
//! always aggregated ([`Budget::hold`]).

use proto::v1::{DeviationKind, Severity};

use super::finding::{Finding, Verdict};
use super::ids::hash_fields;

/// Deviations of one kind sent one by one per window.
pub const BUDGET: u32 = 20;
/// Samples kept per aggregate.
pub const SAMPLES: usize = 5;
/// Slots for kinds (the proto's `DeviationKind` values).
const KINDS: usize = 32;

#[derive(Debug, Default)]
pub struct Budget {
    sent: [u32; KINDS],
    /// High and critical ones sent one by one: they have a budget of their own, so a flood of
    /// them cannot bury the collector, and a medium flood cannot use it up.
    severe: [u32; KINDS],
    pending: Vec<Pending>,
    /// Aggregates emitted in this window (part of their ids).
    emitted: u32,
}

#[derive(Debug)]
struct Pending {
    kind: DeviationKind,
    count: u64,
    severity: Severity,
    score: u32,
    samples: Vec<Finding>,
    /// Event time of the last finding counted.
    last: i64,
}

impl Budget {
    /// `f` when it may go out now; `None` when it was counted into its kind's aggregate.
    pub fn admit(&mut self, f: Finding) -> Option<Finding> {
        let kind = f.kind();
        if matches!(
            kind,
            DeviationKind::Aggregated
                | DeviationKind::CardinalityExploded
                | DeviationKind::BlindSpot
        ) {
            return Some(f);
        }
        let slot = usize::try_from(i32::from(kind)).unwrap_or(0).min(KINDS - 1);
        let sent = if f.verdict().severity >= Severity::High {
            &mut self.severe[slot]
        } else {
            &mut self.sent[slot]
        };
        if *sent < BUDGET {
            *sent += 1;
            return Some(f);
        }
        self.hold(f);
        None
    }

    /// Counts `f` into its kind's aggregate, whatever its severity: a novelty past its
    /// dimension's cap is not reported alone, but never goes unsaid.
    pub fn hold(&mut self, f: Finding) {
        let kind = f.kind();
        let verdict = f.verdict();
        let time = f.time_unix_nanos();
        match self.pending.iter_mut().find(|p| p.kind == kind) {
            Some(p) => {
                p.count += 1;
                p.severity = p.severity.max(verdict.severity);
                p.score = p.score.max(verdict.score);
                if p.samples.len() < SAMPLES {
                    p.samples.push(f);
                }
                p.last = time;
            }
            None => self.pending.push(Pending {
                kind,
                count: 1,
                severity: verdict.severity,
                score: verdict.score,
                samples: vec![f],
                last: time,
            }),
        }
    }

    /// The aggregates of `host`'s workload whose kind has been quiet since `quiet_since` (event
    /// time), or all of them when `None`; `window` (the run id or hour) goes into their ids.
    pub fn flush(&mut self, host: &str, window: &str, quiet_since: Option<i64>) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if quiet_since.is_some_and(|t| self.pending[i].last > t) {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.emitted += 1;
            out.extend(finish(p, host, window, self.emitted));
        }
        out.sort_by_key(Finding::time_unix_nanos);
        out
    }

    /// Ends the window: every aggregate goes out and the budgets start again.
    pub fn reset(&mut self, host: &str, window: &str) -> Vec<Finding> {
        let out = self.flush(host, window, None);
        *self = Budget::default();
        out
    }

    /// Findings counted into aggregates not yet out.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.pending.iter().map(|p| p.count).sum()
    }
}

/// The aggregate of `p`: the first sample's event, workload and incident, the worst severity
/// and score, and the first sample's tags after the monitoring one.
fn finish(p: Pending, host: &str, window: &str, seq: u32) -> Option<Finding> {
    let first = p.samples.first()?.verdict();
    let mut tags = vec!["nist-csf:DE.CM-01"];
    for t in &first.tags {
        if !tags.contains(t) {
            tags.push(t);
        }
    }
    let workload = first.event.workload.id.as_str();
    let id = hash_fields(&[
        host,
        workload,
        "aggregate",
        proto::kind_name(p.kind),
        window,
        &seq.to_string(),
    ]);
    let verdict = Verdict {
        id,
        event: first.event.clone(),
        severity: p.severity,
        score: p.score,
        signals: Vec::new(),
        related: Vec::new(),
        incident_id: first.incident_id.clone(),
        tags,
        loaded: None,
    };
    Some(Finding::Aggregate {
        kind: p.kind,
        count: p.count,
        samples: p.samples,
        verdict,
    })
}
