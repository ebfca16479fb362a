//! Findings about a window rather than one behaviour: rate spikes and enumerations.

use std::sync::Arc;

use proto::v1::{DeviationKind, Severity};

use super::finding::{Finding, Verdict};
use super::ids::hash_fields;
use super::rates::{Enumerated, Spike};
use super::score::base_score;
use super::tags::tags;
use crate::attribute::Attributed;
use crate::baseline::Dimension;

/// Stable id of a window finding: one per workload, run (or hour), kind and dimension.
fn id(host: &str, event: &Attributed, kind: DeviationKind, what: &str, window: &str) -> String {
    hash_fields(&[
        host,
        event.workload.id.as_str(),
        kind.as_str_name(),
        what,
        window,
    ])
}

/// The verdict of a finding that is not about one behaviour (cardinality, rate spike,
/// enumeration): its base severity is its score, and it belongs to `incident`.
pub(crate) fn plain_verdict(
    id: String,
    event: Arc<Attributed>,
    kind: DeviationKind,
    severity: Severity,
    incident: &str,
) -> Verdict {
    Verdict {
        id,
        event,
        severity,
        score: base_score(severity),
        signals: Vec::new(),
        related: Vec::new(),
        incident_id: incident.to_owned(),
        tags: tags(kind, None, &[], &Default::default()),
        loaded: None,
    }
}

/// `spike` of `event`'s workload in `window` (its run id, or hour for other workloads).
/// Outbound volume (connects, DNS queries) is MEDIUM, local activity LOW.
pub(crate) fn rate_spike(
    host: &str,
    event: Arc<Attributed>,
    spike: Spike,
    window: &str,
    incident: &str,
) -> Finding {
    let kind = DeviationKind::RateSpike;
    let severity = if spike.rate.outbound() {
        Severity::Medium
    } else {
        Severity::Low
    };
    let id = id(host, &event, kind, spike.rate.as_str(), window);
    Finding::RateSpike {
        spike,
        verdict: plain_verdict(id, event, kind, severity, incident),
    }
}

/// Enumeration `e` of `event`'s workload in `window`. MEDIUM for files, destinations and DNS
/// names (discovery, scanning); LOW for other dimensions.
pub(crate) fn enumeration(
    host: &str,
    event: Arc<Attributed>,
    e: Enumerated,
    window: &str,
    incident: &str,
) -> Finding {
    let kind = DeviationKind::Enumeration;
    let severity = match e.dimension {
        Dimension::FileAccess | Dimension::NetworkDestination | Dimension::DnsName => {
            Severity::Medium
        }
        _ => Severity::Low,
    };
    let id = id(host, &event, kind, e.dimension.as_str(), window);
    Finding::Enumeration {
        enumerated: e,
        verdict: plain_verdict(id, event, kind, severity, incident),
    }
}
