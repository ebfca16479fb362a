//! Budgets (`detect::budget`) as the collector sees them: past a kind's budget, one aggregated
//! deviation with the count and samples.

use std::sync::Arc;

use proto::v1::{DeviationKind, Severity, novelty::What};

use super::*;
use crate::detect::{BUDGET, Finding, SAMPLES, Verdict};
use crate::report::deviation;

fn finding(i: u32, severity: Severity) -> Finding {
    let w = Workload {
        id: "w".into(),
        kind: WorkloadKind::Cgroup,
        run_id: None,
    };
    let event = ev(
        &w,
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::from(i)),
        100,
        "/bin/cat",
        "/bin/sh",
        open(&format!("file {i}"), false),
    );
    Finding::Novel {
        behaviour: crate::baseline::Behaviour::File {
            path: format!("file {i}"),
            intent: "read".parse().expect("intent"),
        },
        verdict: Verdict {
            id: format!("id-{i}"),
            event: Arc::new(event),
            severity,
            score: 25,
            signals: Vec::new(),
            related: Vec::new(),
            incident_id: String::new(),
            tags: Vec::new(),
            loaded: None,
        },
    }
}

#[test]
fn past_the_budget_counts_and_keeps_the_severe() {
    let mut b = crate::detect::Budget::default();
    for i in 0..BUDGET {
        assert!(b.admit(finding(i, Severity::Low)).is_some());
    }
    for i in 100..110 {
        assert!(b.admit(finding(i, Severity::Medium)).is_none());
    }
    assert!(
        b.admit(finding(200, Severity::High)).is_some(),
        "high always goes"
    );
    let mut dns = finding(300, Severity::Low);
    if let Finding::Novel { behaviour, .. } = &mut dns {
        *behaviour = crate::baseline::Behaviour::DnsName("a.test".into());
    }
    assert!(b.admit(dns).is_some(), "each kind has its own budget");
    assert_eq!(b.held(), 10);
    // Still busy at t=109: nothing quiet since 105.
    assert_eq!(b.flush("h", "run-1", Some(105)), []);
    let out = b.flush("h", "run-1", Some(109));
    assert_eq!(out.len(), 1);
    let a = deviation("h", &out[0]);
    assert_eq!(a.kind(), DeviationKind::Aggregated);
    assert_eq!((a.count, a.severity()), (10, Severity::Medium));
    let samples: Vec<String> = (100..105)
        .map(|i| format!("new file access file {i} (read) by /bin/cat in w"))
        .collect();
    assert_eq!(a.samples, samples);
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
    b.admit(finding(400, Severity::Low));
    let again = b.reset("h", "run-1");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].verdict().id, a.id);
    assert!(
        b.admit(finding(500, Severity::Low)).is_some(),
        "new window, new budget"
    );
}
