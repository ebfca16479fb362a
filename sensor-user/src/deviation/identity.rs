//! The report of an identity a process claimed against its lineage
//! (`DEVIATION_KIND_IDENTITY_SWITCH`; the decision is `attribute::lineage`'s).

use proto::v1::{self, DeviationKind, Severity, novelty::What};

use super::report::{hash_fields, single, unix_nanos};
use crate::attribute::{Attributed, IdentityClaim, Workload};

/// Always HIGH: a process choosing its own workload is hiding from, or poisoning, a baseline,
/// whatever that baseline holds (so it is raised while learning too).
pub const SEVERITY: Severity = Severity::High;

/// The deviation for `claim`, made by `event`'s process in `event`'s workload. One id per
/// workload, run, claimed identity and source: the same claim repeated in a run is one finding.
pub fn identity_switch(host: &str, event: &Attributed, claim: &IdentityClaim) -> v1::Deviation {
    let workload = &event.workload;
    let source = claim.source.as_str();
    let id = hash_fields(&[
        host,
        workload.id.as_str(),
        workload.run_id.as_deref().unwrap_or(""),
        DeviationKind::IdentitySwitch.as_str_name(),
        claim.claimed.id.as_str(),
        claim.claimed.run_id.as_deref().unwrap_or(""),
        source,
    ]);
    let p = &event.process;
    v1::Deviation {
        id,
        time_unix_nanos: unix_nanos(event.event.time),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(workload)),
        kind: DeviationKind::IdentitySwitch.into(),
        severity: SEVERITY.into(),
        summary: format!(
            "identity switch: pid {} ({}) in {} claimed {} ({source}); kept in its workload",
            p.pid,
            p.executable,
            named(workload),
            named(&claim.claimed),
        ),
        process: Some(v1::Process::from(p)),
        novelty: Some(v1::Novelty {
            what: Some(What::Identity(v1::Workload::from(&claim.claimed))),
        }),
        signals: vec![format!("claimed-by-{source}")],
        ..single()
    }
}

/// `id` or `id run <run>`.
fn named(w: &Workload) -> String {
    match &w.run_id {
        Some(run) => format!("{} run {run}", w.id),
        None => w.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{ClaimSource, Context, ProcessInfo, WorkloadKind};
    use crate::event::{Event, EventKind};

    #[test]
    fn one_high_deviation_per_claim_naming_the_claimed_workload() {
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
        let event = Attributed {
            event: Event {
                time: std::time::SystemTime::UNIX_EPOCH,
                pid: 5,
                tid: 5,
                ppid: 4,
                uid: 0,
                euid: 0,
                cgroup_id: 1,
                comm: "sh".into(),
                kind: EventKind::Exit { exit_code: 0 },
            },
            workload: job.clone(),
            process: ProcessInfo {
                pid: 5,
                executable: "/bin/sh".into(),
                ..Default::default()
            },
            context: Context::default(),
        };
        let d = identity_switch("h", &event, &claim);
        assert_eq!(d.kind(), DeviationKind::IdentitySwitch);
        assert_eq!(d.severity(), Severity::High);
        assert_eq!(d.workload.as_ref().unwrap().run_id, "42");
        let Some(What::Identity(w)) = d.novelty.as_ref().and_then(|n| n.what.clone()) else {
            panic!("novelty is the claimed workload: {d:?}");
        };
        assert_eq!(
            (w.id.as_str(), w.run_id.as_str()),
            (claimed.id.as_str(), "7")
        );
        assert!(d.summary.contains("run 7"), "{}", d.summary);
        assert_eq!(d.id, identity_switch("h", &event, &claim).id, "stable id");
        let other = IdentityClaim {
            source: ClaimSource::CgroupMove,
            ..claim
        };
        assert_ne!(d.id, identity_switch("h", &event, &other).id);
    }
}
