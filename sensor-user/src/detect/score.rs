//! Scoring a deviation in its context. The base severity (`severity`: what the novelty means
//! alone) becomes a score, context moves it, and the score gives the severity:
//!
//! | context                                   | score                 | signal                    |
//! |-------------------------------------------|-----------------------|---------------------------|
//! | base: info, low, medium, high, critical   | 10, 25, 50, 70, 90    |                           |
//! | dimension stable (converged while learning)| +5                   | `stable-dimension`        |
//! | dimension unstable (kept changing), base below high | −15         | `unstable-dimension`      |
//! | new destination / DNS name after a new credential access in the incident | +30, at least 70 | `after-credential-access` |
//! | new destination / DNS name by an executable new in the incident | +25 | `new-tool-to-new-host` |
//! | new destination / DNS name after a new archiver run in the incident | +25 | `after-archive`     |
//! | destination not from a name the workload resolved | +10           | `no-dns`                  |
//! | destination from a DNS name the baseline knows (address rotation) | −15 | `known-name`        |
//! | new kind of write to a file the workload produces | +25, at least 70 | `output-tampering`     |
//! | content moved onto it by a new hand (rename/link by another tool or from another directory) | +25, at least 70 | `output-tampering` |
//! | write to a file the workload only ever read | +15                 | `input-tampering`         |
//! | process has euid 0 and a non-zero uid     | +10                   | `privileged`              |
//! | base medium or more, and the incident deviated in 3 or more dimensions | +5 | `breadth:<n>` |
//!
//! The score is capped to 0-100; severity: >= 90 critical, >= 65 high, >= 40 medium, >= 15 low,
//! else info. So a single odd event in a dimension that keeps changing is low, while a chain of
//! new behaviour touching secrets and then the network is high.

use proto::v1::Severity;

use crate::baseline::DimensionState;
use crate::behaviour::Behaviour;

use super::finding::{Evidence, Signal};
use super::incident::Incident;

/// What scoring needs to know besides the behaviour.
#[derive(Debug)]
pub struct Facts<'a> {
    pub state: DimensionState,
    pub incident: &'a Incident,
    /// Generalised executable of the process that did it.
    pub executable: &'a str,
    /// For a destination: `None` without a resolved name, else whether the baseline knows it.
    pub dns_known: Option<bool>,
    /// A modifying access to a file the workload produces (writes or links into place).
    pub output: bool,
    /// A modifying access to a file the workload only ever read.
    pub input: bool,
    /// euid 0 with a non-zero uid.
    pub privileged: bool,
    /// Dimensions of the incident with new behaviour, this one included.
    pub breadth: u32,
}

/// A score and what made it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scored {
    pub score: u32,
    pub severity: Severity,
    pub signals: Vec<Signal>,
    pub related: Vec<Evidence>,
    /// The incident's chain (credential, tool, archive, output) raised it.
    pub chained: bool,
}

pub fn base_score(severity: Severity) -> u32 {
    match severity {
        Severity::Unspecified | Severity::Info => 10,
        Severity::Low => 25,
        Severity::Medium => 50,
        Severity::High => 70,
        Severity::Critical => 90,
    }
}

pub fn severity_of(score: u32) -> Severity {
    match score {
        90.. => Severity::Critical,
        65.. => Severity::High,
        40.. => Severity::Medium,
        15.. => Severity::Low,
        _ => Severity::Info,
    }
}

/// Scores the new `behaviour` of base severity `base` (see the module table).
pub fn score(base: Severity, behaviour: &Behaviour, facts: &Facts<'_>) -> Scored {
    let mut s = Scored::default();
    let mut score = i64::from(base_score(base));
    let mut floor = 0;
    match facts.state {
        DimensionState::Stable => {
            score += 5;
            s.signals.push(Signal::StableDimension);
        }
        DimensionState::Unstable if base < Severity::High => {
            score -= 15;
            s.signals.push(Signal::UnstableDimension);
        }
        _ => {}
    }
    let network = matches!(
        behaviour,
        Behaviour::Destination { .. } | Behaviour::DnsName(_)
    );
    let incident = facts.incident;
    if network {
        if let Some(e) = &incident.credential {
            score += 30;
            floor = 70;
            s.signals.push(Signal::AfterCredentialAccess);
            s.related.push(e.clone());
            s.chained = true;
        }
        if let Some(e) = incident.new_tool(facts.executable) {
            score += 25;
            s.signals.push(Signal::NewToolToNewHost);
            s.related.push(e.clone());
            s.chained = true;
        }
        if let Some(e) = &incident.archive {
            score += 25;
            s.signals.push(Signal::AfterArchive);
            if !s.related.contains(e) {
                s.related.push(e.clone());
            }
            s.chained = true;
        }
    }
    if let Behaviour::Destination { .. } = behaviour {
        match facts.dns_known {
            None => {
                score += 10;
                s.signals.push(Signal::NoDns);
            }
            Some(true) => {
                score -= 15;
                s.signals.push(Signal::KnownName);
            }
            Some(false) => {}
        }
    }
    if facts.output {
        score += 25;
        floor = floor.max(70);
        s.signals.push(Signal::OutputTampering);
        s.chained = true;
    }
    if facts.input {
        score += 15;
        s.signals.push(Signal::InputTampering);
    }
    if facts.privileged {
        score += 10;
        s.signals.push(Signal::Privileged);
    }
    if facts.breadth >= 3 && base >= Severity::Medium {
        score += 5;
        s.signals.push(Signal::Breadth(facts.breadth));
    }
    s.related.sort_by_key(|e| e.time_unix_nanos);
    s.score = u32::try_from(score.max(floor).clamp(0, 100)).unwrap_or(0);
    s.severity = severity_of(s.score);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::incident::evidence;
    use proto::v1::DeviationKind;

    fn dest() -> Behaviour {
        Behaviour::Destination {
            address: "203.0.113.7".parse().expect("ip"),
            port: 443,
            protocol: crate::event::Protocol::Tcp,
        }
    }

    fn facts(incident: &Incident, state: DimensionState) -> Facts<'_> {
        Facts {
            state,
            incident,
            executable: "/usr/bin/curl",
            dns_known: Some(false),
            output: false,
            input: false,
            privileged: false,
            breadth: 1,
        }
    }

    #[test]
    fn thresholds() {
        let cases = [
            (0, "INFO"),
            (15, "LOW"),
            (40, "MEDIUM"),
            (65, "HIGH"),
            (90, "CRITICAL"),
        ];
        for (score, name) in cases {
            assert_eq!(severity_of(score).as_str_name(), format!("SEVERITY_{name}"));
            assert!(severity_of(score.saturating_sub(1)) < severity_of(score) || score == 0);
        }
    }

    #[test]
    fn rarity_moves_medium_and_low_but_not_high() {
        let i = Incident::default();
        let f = facts(&i, DimensionState::Unstable);
        assert_eq!(score(Severity::Medium, &dest(), &f).severity, Severity::Low);
        assert_eq!(score(Severity::High, &dest(), &f).severity, Severity::High);
        let f = facts(&i, DimensionState::Stable);
        let s = score(Severity::Medium, &dest(), &f);
        assert_eq!((s.score, s.severity), (55, Severity::Medium));
        assert!(!s.chained);
    }

    #[test]
    fn credential_then_network_is_high_with_evidence() {
        let mut i = Incident::for_run("h", "w", "1");
        let ssh = Behaviour::File {
            path: "/root/.ssh/id_rsa".into(),
            intent: "read".parse().expect("intent"),
        };
        i.record(&ssh, true, || {
            evidence("cred", DeviationKind::NewFileAccess, "ssh key".into(), 5)
        });
        // Even in an unstable dimension, from a name the baseline knows.
        let mut f = facts(&i, DimensionState::Unstable);
        f.dns_known = Some(true);
        let s = score(Severity::Medium, &dest(), &f);
        assert_eq!(s.severity, Severity::High, "{s:?}");
        assert!(s.chained);
        assert!(s.signals.contains(&Signal::AfterCredentialAccess));
        assert_eq!(s.related.len(), 1);
        assert_eq!(s.related[0].deviation_id, "cred");
        // Not for local behaviour.
        let file = Behaviour::File {
            path: "/etc/x".into(),
            intent: "read".parse().expect("intent"),
        };
        assert_eq!(score(Severity::Low, &file, &f).severity, Severity::Info);
    }

    #[test]
    fn new_tool_archive_and_output_chains() {
        let mut i = Incident::default();
        for exe in ["/usr/bin/tar", "/usr/bin/curl"] {
            i.record(&Behaviour::Executable(exe.into()), false, || {
                evidence(exe, DeviationKind::NewExecutable, exe.into(), 1)
            });
        }
        let f = facts(&i, DimensionState::Stable);
        let s = score(Severity::Medium, &dest(), &f);
        assert_eq!(s.score, 100, "capped");
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.related.len(), 2, "tar and curl once each: {s:?}");
        let empty = Incident::default();
        let mut f = facts(&empty, DimensionState::Unstable);
        f.output = true;
        let write = Behaviour::File {
            path: "/w/out/app".into(),
            intent: "write|create".parse().expect("intent"),
        };
        let s = score(Severity::Medium, &write, &f);
        assert_eq!((s.score, s.severity), (70, Severity::High));
        f.dns_known = None;
        f.output = false;
        f.state = DimensionState::Stable;
        let s = score(Severity::Medium, &dest(), &f);
        assert_eq!(
            s.severity,
            Severity::High,
            "stable network, raw address: {s:?}"
        );
    }
}
