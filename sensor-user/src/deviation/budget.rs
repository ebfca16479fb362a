//! Budgets: per workload, window (a CI run, or an hour for other workloads) and kind, the first
//! [`BUDGET`] deviations go out one by one; the ones after are counted into one
//! `DEVIATION_KIND_AGGREGATED` deviation (count, the first [`SAMPLES`] summaries and ids) that goes
//! out once its kind has been quiet for a while, when the window ends, or when the agent stops.
//! Nothing is dropped silently, and high or critical deviations are never held back.

use proto::v1::{self, DeviationKind, Severity, novelty::What};

use super::report::hash_fields;

/// Deviations of one kind sent one by one per window.
pub const BUDGET: u32 = 20;
/// Samples kept per aggregate.
pub const SAMPLES: usize = 5;
/// Slots for kinds (the proto's `DeviationKind` values).
const KINDS: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Budget {
    sent: [u32; KINDS],
    pending: Vec<Pending>,
    /// Aggregates emitted in this window (part of their ids).
    emitted: u32,
}

#[derive(Debug)]
struct Pending {
    aggregate: v1::Deviation,
    kind: DeviationKind,
    /// Event time of the last deviation counted.
    last: i64,
}

/// Lowercase name of `kind`, as the collector's command line spells it (`new-file-access`).
pub fn kind_name(kind: DeviationKind) -> String {
    kind.as_str_name()
        .trim_start_matches("DEVIATION_KIND_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

impl Budget {
    /// `d` when it may go out now; `None` when it was counted into its kind's aggregate.
    pub(crate) fn admit(&mut self, d: v1::Deviation) -> Option<v1::Deviation> {
        let kind = d.kind();
        if d.severity() >= Severity::High
            || matches!(
                kind,
                DeviationKind::Aggregated | DeviationKind::CardinalityExploded
            )
        {
            return Some(d);
        }
        let slot = usize::try_from(d.kind).unwrap_or(0).min(KINDS - 1);
        if self.sent[slot] < BUDGET {
            self.sent[slot] += 1;
            return Some(d);
        }
        let time = d.time_unix_nanos;
        match self.pending.iter_mut().find(|p| p.kind == kind) {
            Some(p) => {
                let a = &mut p.aggregate;
                a.count += 1;
                a.severity = a.severity.max(d.severity);
                a.score = a.score.max(d.score);
                if a.samples.len() < SAMPLES {
                    a.samples.push(d.summary);
                    if let Some(What::Aggregate(g)) =
                        a.novelty.as_mut().and_then(|n| n.what.as_mut())
                    {
                        g.sample_ids.push(d.id);
                    }
                }
                p.last = time;
            }
            None => self.pending.push(Pending {
                aggregate: start(d),
                kind,
                last: time,
            }),
        }
        None
    }

    /// The aggregates whose kind has been quiet since `quiet_since` (event time), or all of them
    /// when `None`; `window` (the run id or hour) goes into their ids.
    pub(crate) fn flush(&mut self, window: &str, quiet_since: Option<i64>) -> Vec<v1::Deviation> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if quiet_since.is_some_and(|t| self.pending[i].last > t) {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.emitted += 1;
            out.push(finish(p, window, self.emitted));
        }
        out.sort_by_key(|d| d.time_unix_nanos);
        out
    }

    /// Ends the window: every aggregate goes out and the budgets start again.
    pub(crate) fn reset(&mut self, window: &str) -> Vec<v1::Deviation> {
        let out = self.flush(window, None);
        *self = Budget::default();
        out
    }

    /// Deviations counted into aggregates not yet out.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.pending.iter().map(|p| p.aggregate.count).sum()
    }
}

fn start(d: v1::Deviation) -> v1::Deviation {
    let kind = d.kind();
    let mut tags = vec!["nist-csf:DE.CM-01".to_owned()];
    for t in &d.tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    v1::Deviation {
        id: String::new(),
        time_unix_nanos: d.time_unix_nanos,
        host: d.host,
        workload: d.workload,
        kind: DeviationKind::Aggregated.into(),
        severity: d.severity,
        summary: String::new(),
        process: d.process,
        novelty: Some(v1::Novelty {
            what: Some(What::Aggregate(v1::Aggregate {
                kind: kind.into(),
                budget: BUDGET,
                sample_ids: vec![d.id],
            })),
        }),
        signals: Vec::new(),
        incident_id: d.incident_id,
        tags,
        score: d.score,
        count: 1,
        related: Vec::new(),
        samples: vec![d.summary],
    }
}

fn finish(p: Pending, window: &str, seq: u32) -> v1::Deviation {
    let mut a = p.aggregate;
    let workload = a.workload.as_ref().map_or("", |w| w.id.as_str()).to_owned();
    let kind = kind_name(p.kind);
    a.id = hash_fields(&[
        a.host.as_str(),
        &workload,
        "aggregate",
        &kind,
        window,
        &seq.to_string(),
    ]);
    let first = a.samples.first().cloned().unwrap_or_default();
    a.summary = format!(
        "{} more {kind} deviations in {workload} past the budget of {BUDGET} per run or hour, \
         first: {first}",
        a.count
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(i: u32, severity: Severity) -> v1::Deviation {
        v1::Deviation {
            id: format!("id-{i}"),
            time_unix_nanos: i64::from(i),
            host: "h".into(),
            workload: Some(v1::Workload {
                id: "w".into(),
                ..v1::Workload::default()
            }),
            kind: DeviationKind::NewFileAccess.into(),
            severity: severity.into(),
            summary: format!("file {i}"),
            count: 1,
            ..v1::Deviation::default()
        }
    }

    #[test]
    fn past_the_budget_counts_and_keeps_the_severe() {
        let mut b = Budget::default();
        for i in 0..BUDGET {
            assert!(b.admit(dev(i, Severity::Low)).is_some());
        }
        for i in 100..110 {
            assert!(b.admit(dev(i, Severity::Medium)).is_none());
        }
        assert!(
            b.admit(dev(200, Severity::High)).is_some(),
            "high always goes"
        );
        let mut other = dev(300, Severity::Low);
        other.kind = DeviationKind::NewDnsName.into();
        assert!(b.admit(other).is_some(), "each kind has its own budget");
        assert_eq!(b.held(), 10);
        // Still busy at t=109: nothing quiet since 105.
        assert_eq!(b.flush("run-1", Some(105)), []);
        let out = b.flush("run-1", Some(109));
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!(a.kind(), DeviationKind::Aggregated);
        assert_eq!((a.count, a.severity()), (10, Severity::Medium));
        assert_eq!(
            a.samples,
            ["file 100", "file 101", "file 102", "file 103", "file 104"]
        );
        let Some(What::Aggregate(g)) = a.novelty.clone().and_then(|n| n.what) else {
            panic!("aggregate novelty: {a:?}");
        };
        assert_eq!(g.kind(), DeviationKind::NewFileAccess);
        assert_eq!(g.sample_ids.len(), SAMPLES);
        assert!(
            a.summary
                .starts_with("10 more new-file-access deviations in w"),
            "{}",
            a.summary
        );
        // A later aggregate of the same window gets another id.
        b.admit(dev(400, Severity::Low));
        let again = b.reset("run-1");
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].id, a.id);
        assert!(
            b.admit(dev(500, Severity::Low)).is_some(),
            "new window, new budget"
        );
    }
}
