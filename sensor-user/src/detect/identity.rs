//! An identity a process claimed against its lineage (`DEVIATION_KIND_IDENTITY_SWITCH`; the
//! decision is `attribute::lineage`'s): a finding whatever the baseline holds.

use std::sync::Arc;

use proto::v1::{DeviationKind, Severity};

use super::finding::{Finding, Signal};
use super::ids::hash_fields;
use super::windows::plain_verdict;
use crate::attribute::{Attributed, IdentityClaim};

/// Always HIGH: a process choosing its own workload is hiding from, or poisoning, a baseline,
/// whatever that baseline holds (so it is raised while learning too).
pub const SEVERITY: Severity = Severity::High;

/// Stable id of `claim` made in `event`'s workload: one per workload, run, claimed identity and
/// source, so the same claim repeated in a run is one finding.
pub fn identity_switch_id(host: &str, event: &Attributed, claim: &IdentityClaim) -> String {
    let workload = &event.workload;
    hash_fields(&[
        host,
        workload.id.as_str(),
        workload.run_id.as_deref().unwrap_or(""),
        DeviationKind::IdentitySwitch.as_str_name(),
        claim.claimed.id.as_str(),
        claim.claimed.run_id.as_deref().unwrap_or(""),
        claim.source.as_str(),
    ])
}

/// The finding that `event`'s process claimed `claim`, in `incident`.
pub(crate) fn identity_switch(
    host: &str,
    event: Arc<Attributed>,
    claim: IdentityClaim,
    incident: &str,
) -> Finding {
    let id = identity_switch_id(host, &event, &claim);
    let kind = DeviationKind::IdentitySwitch;
    let mut verdict = plain_verdict(id, event, kind, SEVERITY, incident);
    verdict.signals.push(Signal::ClaimedBy(claim.source));
    Finding::IdentitySwitch { claim, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{ClaimSource, Context, ProcessInfo, Workload, WorkloadKind};
    use crate::event::{Event, EventKind};

    #[test]
    fn one_high_finding_per_claim_and_source() {
        let job = Workload {
            id: "github:a/b/ci/build".into(),
            kind: WorkloadKind::GithubJob,
            run_id: Some("42".into()),
        };
        let claimed = Workload {
            run_id: Some("7".into()),
            ..job.clone()
        };
        let claim = IdentityClaim {
            claimed: claimed.clone(),
            source: ClaimSource::CiEnvironment,
        };
        let event = Arc::new(Attributed {
            event: Event {
                time: std::time::SystemTime::UNIX_EPOCH,
                pid: 5,
                tid: 5,
                ppid: 4,
                uid: 0,
                euid: 0,
                cgroup_id: 1,
                kind: EventKind::Exit { exit_code: 0 },
            },
            workload: Arc::new(job),
            process: Arc::new(ProcessInfo {
                pid: 5,
                executable: "/bin/sh".into(),
                ..Default::default()
            }),
            context: Context::default(),
        });
        let f = identity_switch("h", Arc::clone(&event), claim.clone(), "inc");
        assert_eq!(f.kind(), DeviationKind::IdentitySwitch);
        let Finding::IdentitySwitch { claim: c, verdict } = &f else {
            panic!("an identity switch: {f:?}");
        };
        assert_eq!(c.claimed, claimed);
        assert_eq!(verdict.severity, Severity::High);
        assert_eq!(verdict.incident_id, "inc");
        assert_eq!(
            verdict.signals,
            [Signal::ClaimedBy(ClaimSource::CiEnvironment)]
        );
        assert_eq!(
            verdict.id,
            identity_switch_id("h", &event, &claim),
            "stable id"
        );
        let other = IdentityClaim {
            source: ClaimSource::CgroupMove,
            ..claim
        };
        assert_ne!(verdict.id, identity_switch_id("h", &event, &other));
    }
}
