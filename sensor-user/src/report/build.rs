//! Building `sensor.v1` deviations from findings: the one place where domain types become proto
//! types. Everything was decided by `detect`; this only says it.

use proto::v1::{self, DeviationKind, novelty::What};

use crate::attribute::{Attributed, IdentityClaim, ProcessInfo, Workload, WorkloadKind};
use crate::baseline::{Dimension, WINDOW_SECONDS as RATE_WINDOW_SECONDS};
use crate::behaviour::{Behaviour, summary};
use crate::detect::{BUDGET, ENUMERATION_THRESHOLD, Enumerated, Evidence, Finding, Spike};
use crate::event::EventKind;

/// The deviation that reports `finding`, seen by the agent of `host`.
pub fn deviation(host: &str, finding: &Finding) -> v1::Deviation {
    let verdict = finding.verdict();
    let event = &verdict.event;
    let (summary, what, count, samples) = match finding {
        Finding::Novel { behaviour, .. } => (
            summary(event, behaviour),
            novelty(event, behaviour),
            1,
            Vec::new(),
        ),
        Finding::Cardinality {
            dimension,
            limit,
            learning,
            ..
        } => cardinality(event, *dimension, *limit, *learning),
        Finding::RateSpike { spike, .. } => rate_spike(event, spike),
        Finding::Enumeration { enumerated, .. } => enumeration(event, enumerated),
        Finding::BlindSpot { lost, .. } => blind_spot(event, *lost),
        Finding::Aggregate {
            kind,
            count,
            samples,
            ..
        } => aggregate(*kind, *count, samples),
        Finding::IdentitySwitch { claim, .. } => identity_switch(event, claim),
    };
    v1::Deviation {
        id: verdict.id.clone(),
        time_unix_nanos: finding.time_unix_nanos(),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(&*event.workload)),
        kind: finding.kind().into(),
        severity: verdict.severity.into(),
        summary,
        process: Some(v1::Process::from(event.process.as_ref())),
        novelty: Some(v1::Novelty { what: Some(what) }),
        signals: signals(finding),
        incident_id: verdict.incident_id.clone(),
        tags: verdict.tags.iter().map(|t| (*t).to_owned()).collect(),
        score: verdict.score,
        count,
        related: verdict.related.iter().map(v1::Evidence::from).collect(),
        samples,
        loaded: verdict.loaded.as_ref().map(|l| v1::LoadingEvidence {
            paths: l.paths.clone(),
            total: l.total,
        }),
    }
}

/// Summary, novelty, count and samples of a deviation.
type Said = (String, What, u64, Vec<String>);

/// The verdict's signals, and for a new behaviour the container behind a workload named by
/// image (`container-id:<id>`, see `attribute::container`) as evidence.
fn signals(finding: &Finding) -> Vec<String> {
    let verdict = finding.verdict();
    let mut out: Vec<String> = verdict.signals.iter().map(ToString::to_string).collect();
    if let Finding::Novel { .. } = finding
        && let Some(id) = &verdict.event.context.container_id
    {
        out.push(format!("container-id:{id}"));
    }
    out
}

fn identity_switch(event: &Attributed, claim: &IdentityClaim) -> Said {
    let p = &event.process;
    let summary = format!(
        "identity switch: pid {} ({}) in {} claimed {} ({}); kept in its workload",
        p.pid,
        p.executable,
        named(&event.workload),
        named(&claim.claimed),
        claim.source.as_str(),
    );
    let what = What::Identity(v1::Workload::from(&claim.claimed));
    (summary, what, 1, Vec::new())
}

/// `id` or `id run <run>`.
fn named(w: &Workload) -> String {
    match &w.run_id {
        Some(run) => format!("{} run {run}", w.id),
        None => w.id.clone(),
    }
}

fn cardinality(event: &Attributed, dimension: Dimension, limit: usize, learning: bool) -> Said {
    let workload = &event.workload.id;
    let plural = dimension.plural();
    let summary = if learning {
        format!(
            "cardinality exploded: workload {workload} tried to learn more than {limit} {plural}"
        )
    } else {
        format!(
            "cardinality exploded: workload {workload} showed more than {limit} new {plural}; \
             no more are reported"
        )
    };
    let what = What::Cardinality(v1::Cardinality {
        dimension: dimension.as_str().to_owned(),
        limit: u64::try_from(limit).unwrap_or(u64::MAX),
    });
    (summary, what, 1, Vec::new())
}

/// A blind window: the novelty is the count of lost records as a `Rate` of `kernel-lost`.
fn blind_spot(event: &Attributed, lost: u64) -> Said {
    let workload = &event.workload;
    let window = workload
        .run_id
        .as_deref()
        .map_or("its current hour".to_owned(), |run| format!("run {run}"));
    let summary = format!(
        "blind spot: the kernel lost {lost} records while {} was active ({window}); what it did \
         then may not have been seen",
        workload.id
    );
    let what = What::Rate(v1::Rate {
        dimension: "kernel-lost".to_owned(),
        count: lost,
        ..v1::Rate::default()
    });
    (summary, what, 1, Vec::new())
}

fn rate_spike(event: &Attributed, spike: &Spike) -> Said {
    let rate = spike.rate.as_str();
    let summary = format!(
        "rate spike: {} {rate} events in {RATE_WINDOW_SECONDS} s in {} (learnt peak {}, \
         tolerance {})",
        spike.count, event.workload.id, spike.peak, spike.threshold
    );
    let what = What::Rate(v1::Rate {
        dimension: rate.to_owned(),
        count: spike.count.into(),
        window_seconds: RATE_WINDOW_SECONDS,
        learned_peak: spike.peak.into(),
        threshold: spike.threshold.into(),
    });
    (summary, what, 1, Vec::new())
}

fn enumeration(event: &Attributed, e: &Enumerated) -> Said {
    let summary = format!(
        "enumeration: {} new {} within {RATE_WINDOW_SECONDS} s in {}, e.g. {}",
        e.distinct,
        e.dimension.plural(),
        event.workload.id,
        e.samples.join(", ")
    );
    let what = What::Enumeration(v1::Enumeration {
        dimension: e.dimension.as_str().to_owned(),
        distinct: u64::try_from(e.distinct).unwrap_or(u64::MAX),
        window_seconds: RATE_WINDOW_SECONDS,
        threshold: u64::try_from(ENUMERATION_THRESHOLD).unwrap_or(u64::MAX),
        samples: e.samples.clone(),
    });
    (summary, what, 1, Vec::new())
}

fn aggregate(kind: DeviationKind, count: u64, samples: &[Finding]) -> Said {
    let said: Vec<v1::Deviation> = samples.iter().map(|s| deviation("", s)).collect();
    let workload = said
        .first()
        .and_then(|d| d.workload.as_ref())
        .map_or("", |w| w.id.as_str());
    let first = said.first().map_or("", |d| d.summary.as_str());
    let summary = format!(
        "{count} more {} deviations in {workload} past the budget of {BUDGET} per run or hour, \
         first: {first}",
        proto::kind_name(kind)
    );
    let what = What::Aggregate(v1::Aggregate {
        kind: kind.into(),
        budget: BUDGET,
        sample_ids: said.iter().map(|d| d.id.clone()).collect(),
    });
    (
        summary,
        what,
        count,
        said.into_iter().map(|d| d.summary).collect(),
    )
}

impl From<&Evidence> for v1::Evidence {
    fn from(e: &Evidence) -> Self {
        v1::Evidence {
            deviation_id: e.deviation_id.clone(),
            kind: e.kind.into(),
            summary: e.summary.clone(),
            time_unix_nanos: e.time_unix_nanos,
        }
    }
}

fn novelty(event: &Attributed, behaviour: &Behaviour) -> What {
    match behaviour.clone() {
        Behaviour::Executable(path) => What::Executable(path),
        Behaviour::ExecEdge { parent, child } => What::ExecEdge(v1::ExecEdge {
            parent_executable: parent,
            child_executable: child,
        }),
        Behaviour::File { path, intent } => What::File(v1::FileAccess {
            path,
            intent: intent.to_string(),
        }),
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => What::Destination(v1::NetworkDestination {
            address: address.to_string(),
            port: port.into(),
            protocol: protocol.to_string(),
            dns_name: event.context.dns_name.clone().unwrap_or_default(),
        }),
        Behaviour::Privilege { operation, detail } => What::Privilege(v1::PrivilegeUse {
            operation: operation.to_string(),
            detail,
            result: match &event.event.kind {
                EventKind::Privilege { result, .. } => *result,
                _ => 0,
            },
        }),
        Behaviour::DnsName(name) => {
            let r#type = match &event.event.kind {
                EventKind::Dns {
                    message: Some(m), ..
                } => Some(m.question.qtype.clone()),
                _ => None,
            };
            What::Dns(v1::DnsQuery {
                name,
                r#type: r#type.unwrap_or_default(),
            })
        }
        Behaviour::Listener {
            address,
            port,
            protocol,
        } => What::Listener(v1::Listener {
            address: address.to_string(),
            port: port.into(),
            protocol: protocol.to_string(),
        }),
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => What::FileOperation(v1::FileOperation {
            operation: operation.to_string(),
            path,
            detail,
        }),
        Behaviour::Sequence { parent, steps } => What::Sequence(v1::Sequence {
            parent_executable: parent,
            steps,
        }),
        Behaviour::Host(name) => What::Host(name),
        Behaviour::ActiveTime { weekday, hour } => What::Time(v1::ActiveTime {
            weekday: weekday.into(),
            hour: hour.into(),
        }),
    }
}

impl From<WorkloadKind> for v1::WorkloadKind {
    fn from(kind: WorkloadKind) -> Self {
        match kind {
            WorkloadKind::Cgroup => v1::WorkloadKind::Cgroup,
            WorkloadKind::SystemdUnit => v1::WorkloadKind::SystemdUnit,
            WorkloadKind::Container => v1::WorkloadKind::Container,
            WorkloadKind::GithubJob => v1::WorkloadKind::GithubJob,
            WorkloadKind::GitlabJob => v1::WorkloadKind::GitlabJob,
        }
    }
}

impl From<&Workload> for v1::Workload {
    fn from(w: &Workload) -> Self {
        v1::Workload {
            id: w.id.clone(),
            kind: v1::WorkloadKind::from(w.kind).into(),
            run_id: w.run_id.clone().unwrap_or_default(),
        }
    }
}

impl From<&ProcessInfo> for v1::Process {
    fn from(p: &ProcessInfo) -> Self {
        v1::Process {
            pid: p.pid,
            ppid: p.ppid,
            executable: p.executable.clone(),
            argv: p.argv.clone(),
            argv_truncated: p.argv_truncated,
            uid: p.uid,
            euid: p.euid,
            ancestry: p
                .ancestry
                .iter()
                .map(|(pid, executable)| v1::Ancestor {
                    pid: *pid,
                    executable: executable.clone(),
                })
                .collect(),
            // Filled by the agent (`crate::exe_hash`), which may do file I/O; this may not.
            executable_sha256: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Signal, Verdict};
    use crate::event::{Event, EventKind};
    use proto::v1::Severity;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn attributed() -> Attributed {
        Attributed {
            event: Event {
                time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_500),
                pid: 12,
                tid: 12,
                ppid: 11,
                uid: 1000,
                euid: 0,
                cgroup_id: 1,
                kind: EventKind::Exit { exit_code: 0 },
            },
            workload: Arc::new(Workload {
                id: "github:acme/app/ci/build".into(),
                kind: WorkloadKind::GithubJob,
                run_id: Some("7.1".into()),
            }),
            process: Arc::new(ProcessInfo {
                pid: 12,
                ppid: 11,
                executable: "/usr/bin/nc".into(),
                argv: vec!["nc".into(), "-l".into()],
                argv_truncated: true,
                uid: 1000,
                euid: 0,
                ancestry: vec![(11, "/bin/bash".into()), (10, "/usr/bin/runner".into())],
                parent_executable: Some("/bin/bash".into()),
            }),
            context: Default::default(),
        }
    }

    #[test]
    fn builds_every_field() {
        let a = attributed();
        let b = Behaviour::Executable("/usr/bin/nc".into());
        let f = Finding::Novel {
            behaviour: b,
            verdict: Verdict {
                id: "the-id".into(),
                event: Arc::new(a),
                severity: Severity::Medium,
                score: 50,
                signals: vec![Signal::Breadth(3), Signal::OverlappedLoss],
                related: Vec::new(),
                incident_id: "inc".into(),
                tags: vec!["mitre:T1059"],
                loaded: Some(crate::detect::Loaded {
                    paths: vec!["/usr/lib/libnc.so.1".into()],
                    total: 3,
                }),
            },
        };
        let d = deviation("host-1", &f);
        assert_eq!(d.signals, ["breadth:3", "overlapped-loss"]);
        assert_eq!((d.score, d.incident_id.as_str(), d.count), (50, "inc", 1));
        assert_eq!(d.tags, ["mitre:T1059"]);
        let loaded = d.loaded.clone().expect("loading evidence");
        assert_eq!(
            (loaded.paths, loaded.total),
            (vec!["/usr/lib/libnc.so.1".into()], 3)
        );
        assert_eq!(d.id, "the-id");
        assert_eq!(d.time_unix_nanos, 1_500);
        assert_eq!(d.host, "host-1");
        let w = d.workload.clone().expect("workload");
        assert_eq!(
            (w.id.as_str(), w.run_id.as_str()),
            ("github:acme/app/ci/build", "7.1")
        );
        assert_eq!(w.kind(), v1::WorkloadKind::GithubJob);
        assert_eq!(d.kind(), DeviationKind::NewExecutable);
        assert_eq!(d.severity(), v1::Severity::Medium);
        assert_eq!(
            d.summary,
            "new executable /usr/bin/nc run by /bin/bash in github:acme/app/ci/build"
        );
        let p = d.process.clone().expect("process");
        assert_eq!((p.pid, p.ppid, p.uid, p.euid), (12, 11, 1000, 0));
        assert!(p.argv_truncated);
        assert_eq!(p.argv, ["nc", "-l"]);
        assert_eq!(p.ancestry[1].executable, "/usr/bin/runner");
        assert_eq!(
            d.novelty.expect("novelty").what,
            Some(What::Executable("/usr/bin/nc".into()))
        );
    }

    #[test]
    fn identity_switch_names_the_claimed_workload() {
        use crate::attribute::ClaimSource;
        let a = attributed();
        let claimed = Workload {
            run_id: Some("7".into()),
            ..Workload::clone(&a.workload)
        };
        let claim = IdentityClaim {
            claimed,
            source: ClaimSource::CiEnvironment,
        };
        let f = Finding::IdentitySwitch {
            claim,
            verdict: Verdict {
                id: "the-id".into(),
                event: Arc::new(a),
                severity: Severity::High,
                score: 80,
                signals: vec![Signal::ClaimedBy(ClaimSource::CiEnvironment)],
                related: Vec::new(),
                incident_id: "inc".into(),
                tags: Vec::new(),
                loaded: None,
            },
        };
        let d = deviation("h", &f);
        assert_eq!(d.kind(), DeviationKind::IdentitySwitch);
        assert_eq!(d.severity(), v1::Severity::High);
        assert_eq!(d.workload.as_ref().expect("workload").run_id, "7.1");
        assert_eq!(d.signals, ["claimed-by-ci-environment"]);
        let Some(What::Identity(w)) = d.novelty.and_then(|n| n.what) else {
            panic!("novelty is the claimed workload");
        };
        assert_eq!(
            (w.id.as_str(), w.run_id.as_str()),
            ("github:acme/app/ci/build", "7")
        );
        assert_eq!(
            d.summary,
            "identity switch: pid 12 (/usr/bin/nc) in github:acme/app/ci/build run 7.1 claimed \
             github:acme/app/ci/build run 7 (ci-environment); kept in its workload"
        );
    }

    #[test]
    fn container_id_is_evidence_of_new_behaviours() {
        let mut a = attributed();
        a.context.container_id = Some("abc123".into());
        let f = Finding::Novel {
            behaviour: Behaviour::Executable("/usr/bin/nc".into()),
            verdict: Verdict {
                id: "the-id".into(),
                event: Arc::new(a),
                severity: Severity::Medium,
                score: 50,
                signals: vec![Signal::Fileless],
                related: Vec::new(),
                incident_id: "inc".into(),
                tags: Vec::new(),
                loaded: None,
            },
        };
        assert_eq!(
            deviation("h", &f).signals,
            ["fileless", "container-id:abc123"]
        );
    }

    #[test]
    fn summaries_of_each_kind() {
        let a = attributed();
        let dest = Behaviour::Destination {
            address: "2001:db8::1".parse().expect("ip"),
            port: 53,
            protocol: crate::event::Protocol::Udp,
        };
        let file = Behaviour::File {
            path: "/etc/shadow".into(),
            intent: "read".parse().expect("intent"),
        };
        let edge = Behaviour::ExecEdge {
            parent: "/bin/bash".into(),
            child: "/usr/bin/nc".into(),
        };
        let wl = "github:acme/app/ci/build";
        assert_eq!(
            summary(&a, &dest),
            format!("new network destination [2001:db8::1]:53/udp by /usr/bin/nc in {wl}")
        );
        assert_eq!(
            summary(&a, &file),
            format!("new file access /etc/shadow (read) by /usr/bin/nc in {wl}")
        );
        assert_eq!(
            summary(&a, &edge),
            format!("new exec edge /bin/bash -> /usr/bin/nc in {wl}")
        );
    }
}
