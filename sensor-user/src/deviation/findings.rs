//! Deviations about a window rather than one behaviour: rate spikes and enumerations.

use proto::v1::{self, DeviationKind, Severity, novelty::What};

use super::report::{hash_fields, single, unix_nanos};
use crate::attribute::Attributed;
use crate::baseline::{Dimension, Enumerated, RATE_WINDOW_SECONDS, Spike};

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

/// `spike` of `event`'s workload in `window` (its run id, or hour for other workloads).
/// Outbound volume (connects, DNS queries) is MEDIUM, local activity LOW.
pub fn rate_spike(host: &str, event: &Attributed, spike: &Spike, window: &str) -> v1::Deviation {
    let kind = DeviationKind::RateSpike;
    let rate = spike.rate.as_str();
    let severity = if spike.rate.outbound() {
        Severity::Medium
    } else {
        Severity::Low
    };
    v1::Deviation {
        id: id(host, event, kind, rate, window),
        time_unix_nanos: unix_nanos(event.event.time),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(&event.workload)),
        kind: kind.into(),
        severity: severity.into(),
        summary: format!(
            "rate spike: {} {rate} events in {RATE_WINDOW_SECONDS} s in {} (learnt peak {}, \
             tolerance {})",
            spike.count, event.workload.id, spike.peak, spike.threshold
        ),
        process: Some(v1::Process::from(&event.process)),
        novelty: Some(v1::Novelty {
            what: Some(What::Rate(v1::Rate {
                dimension: rate.to_owned(),
                count: spike.count.into(),
                window_seconds: RATE_WINDOW_SECONDS,
                learned_peak: spike.peak.into(),
                threshold: spike.threshold.into(),
            })),
        }),
        ..single()
    }
}

/// Enumeration `e` of `event`'s workload in `window`. MEDIUM for files, destinations and DNS
/// names (discovery, scanning); LOW for other dimensions.
pub fn enumeration(host: &str, event: &Attributed, e: &Enumerated, window: &str) -> v1::Deviation {
    let kind = DeviationKind::Enumeration;
    let dimension = e.dimension.as_str();
    let severity = match e.dimension {
        Dimension::FileAccess | Dimension::NetworkDestination | Dimension::DnsName => {
            Severity::Medium
        }
        _ => Severity::Low,
    };
    v1::Deviation {
        id: id(host, event, kind, dimension, window),
        time_unix_nanos: unix_nanos(event.event.time),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(&event.workload)),
        kind: kind.into(),
        severity: severity.into(),
        summary: format!(
            "enumeration: {} new {} within {RATE_WINDOW_SECONDS} s in {}, e.g. {}",
            e.distinct,
            e.dimension.plural(),
            event.workload.id,
            e.samples.join(", ")
        ),
        process: Some(v1::Process::from(&event.process)),
        novelty: Some(v1::Novelty {
            what: Some(What::Enumeration(v1::Enumeration {
                dimension: dimension.to_owned(),
                distinct: u64::try_from(e.distinct).unwrap_or(u64::MAX),
                window_seconds: RATE_WINDOW_SECONDS,
                threshold: u64::try_from(crate::baseline::ENUMERATION_THRESHOLD)
                    .unwrap_or(u64::MAX),
                samples: e.samples.clone(),
            })),
        }),
        ..single()
    }
}
