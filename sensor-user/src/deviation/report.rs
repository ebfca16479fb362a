//! Building `sensor.v1` deviations: the one place where domain types become proto types.

use std::net::SocketAddr;
use std::time::SystemTime;

use proto::v1::{self, DeviationKind, novelty::What};
use sha2::{Digest, Sha256};

use super::{SecretPaths, severity};
use crate::attribute::{Attributed, ProcessInfo, Workload, WorkloadKind};
use crate::baseline::{Behaviour, Dimension};
use crate::event::EventKind;
use crate::kernel::dns;

/// Domain separation for deviation ids (bump when the id recipe changes).
const ID_DOMAIN: &[u8] = b"sensor.v1.Deviation/1";

/// The report for `behaviour`, new in `event`'s workload, with the id from [`deviation_id`].
pub fn build(
    host: &str,
    event: &Attributed,
    behaviour: &Behaviour,
    id: String,
    secrets: &SecretPaths,
) -> v1::Deviation {
    v1::Deviation {
        id,
        time_unix_nanos: unix_nanos(event.event.time),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(&event.workload)),
        kind: deviation_kind(behaviour).into(),
        severity: severity(behaviour, &event.context, secrets).into(),
        summary: summary(event, behaviour),
        process: Some(v1::Process::from(&event.process)),
        novelty: Some(v1::Novelty {
            what: Some(novelty(event, behaviour)),
        }),
        signals: signals(event, behaviour, secrets),
        ..single()
    }
}

/// The fields scoring and correlation fill in (`crate::deviation::score`), for one finding.
pub(crate) fn single() -> v1::Deviation {
    v1::Deviation {
        count: 1,
        ..v1::Deviation::default()
    }
}

/// The report that `event`'s workload went past `limit` behaviours of `dimension`, while
/// `learning` or when judged, with the id from [`cardinality_id`]. Severity HIGH
/// ([`severity::CARDINALITY`]).
pub fn cardinality(
    host: &str,
    event: &Attributed,
    dimension: Dimension,
    limit: usize,
    learning: bool,
    id: String,
) -> v1::Deviation {
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
    v1::Deviation {
        id,
        time_unix_nanos: unix_nanos(event.event.time),
        host: host.to_owned(),
        workload: Some(v1::Workload::from(&event.workload)),
        kind: DeviationKind::CardinalityExploded.into(),
        severity: severity::CARDINALITY.into(),
        summary,
        process: Some(v1::Process::from(&event.process)),
        novelty: Some(v1::Novelty {
            what: Some(What::Cardinality(v1::Cardinality {
                dimension: dimension.as_str().to_owned(),
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
            })),
        }),
        signals: Vec::new(),
        ..single()
    }
}

/// Context worth saying next to the novelty (see `Deviation.signals` in the proto).
fn signals(event: &Attributed, behaviour: &Behaviour, secrets: &SecretPaths) -> Vec<String> {
    let mut out = Vec::new();
    if let Behaviour::Executable(_) = behaviour {
        if event.context.dropped_then_executed {
            out.push("dropped-then-executed".to_owned());
        }
        if event.context.fileless {
            out.push("fileless".to_owned());
        }
    }
    if super::severity::is_credential_access(behaviour, secrets) {
        out.push("credential".to_owned());
    }
    if let Behaviour::File { path, intent } = behaviour
        && intent != "read"
        && super::severity::is_persistence(path)
    {
        out.push("persistence".to_owned());
    }
    // Evidence: the container behind a workload named by image (`attribute::container`).
    if let Some(id) = &event.context.container_id {
        out.push(format!("container-id:{id}"));
    }
    out
}

/// Stable id of "`behaviour` is new in `workload_id` on `host`": lowercase hex SHA-256 of the
/// length-prefixed host, workload id, kind name and the behaviour's fields. Independent of time,
/// process and run, so the same novelty always gets the same id.
pub fn deviation_id(host: &str, workload_id: &str, behaviour: &Behaviour) -> String {
    let kind = deviation_kind(behaviour).as_str_name();
    let mut fields: Vec<String> = vec![host.into(), workload_id.into(), kind.into()];
    match behaviour {
        Behaviour::Executable(path) => fields.push(path.clone()),
        Behaviour::ExecEdge { parent, child } => fields.extend([parent.clone(), child.clone()]),
        Behaviour::File { path, intent } => fields.extend([path.clone(), intent.clone()]),
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => fields.extend([address.to_string(), port.to_string(), protocol.clone()]),
        Behaviour::Privilege { operation, detail } => {
            fields.extend([operation.clone(), detail.clone()])
        }
        Behaviour::DnsName(name) => fields.push(name.clone()),
        Behaviour::Listener {
            address,
            port,
            protocol,
        } => fields.extend([address.to_string(), port.to_string(), protocol.clone()]),
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => fields.extend([operation.clone(), path.clone(), detail.clone()]),
        Behaviour::Sequence { parent, steps } => {
            fields.push(parent.clone());
            fields.extend(steps.iter().cloned());
        }
        Behaviour::Host(name) => fields.push(name.clone()),
        Behaviour::ActiveTime { weekday, hour } => {
            fields.extend([weekday.to_string(), hour.to_string()])
        }
    }
    hash_fields(&fields)
}

/// Stable id of "`workload_id` on `host` went past the bound of `dimension`", made like
/// [`deviation_id`] from the host, workload id, kind name and dimension name: one per workload
/// and dimension.
pub fn cardinality_id(host: &str, workload_id: &str, dimension: Dimension) -> String {
    let kind = DeviationKind::CardinalityExploded.as_str_name();
    hash_fields(&[host, workload_id, kind, dimension.as_str()])
}

/// Lowercase hex SHA-256 of [`ID_DOMAIN`] and the length-prefixed fields.
pub(crate) fn hash_fields<S: AsRef<str>>(fields: &[S]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ID_DOMAIN);
    for field in fields.iter().map(AsRef::as_ref) {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The deviation kind that reports `behaviour` as new.
pub fn deviation_kind(behaviour: &Behaviour) -> DeviationKind {
    match behaviour {
        Behaviour::Executable(_) => DeviationKind::NewExecutable,
        Behaviour::ExecEdge { .. } => DeviationKind::NewExecEdge,
        Behaviour::File { .. } => DeviationKind::NewFileAccess,
        Behaviour::Destination { .. } => DeviationKind::NewNetworkDestination,
        Behaviour::Privilege { .. } => DeviationKind::NewPrivilegeUse,
        Behaviour::DnsName(_) => DeviationKind::NewDnsName,
        Behaviour::Listener { .. } => DeviationKind::NewListener,
        Behaviour::FileOperation { .. } => DeviationKind::NewFileOperation,
        Behaviour::Sequence { .. } => DeviationKind::NewSequence,
        Behaviour::Host(_) => DeviationKind::NewHost,
        Behaviour::ActiveTime { .. } => DeviationKind::UnusualTime,
    }
}

/// `time` as ns since the Unix epoch (0 before it, saturating far after it).
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One line, e.g. `new executable /usr/bin/nc run by /bin/bash in github:acme/app/ci/build`.
pub(crate) fn summary(event: &Attributed, behaviour: &Behaviour) -> String {
    let workload = &event.workload.id;
    let exe = &event.process.executable;
    let by = if exe.is_empty() {
        String::new()
    } else {
        format!(" by {exe}")
    };
    match behaviour {
        Behaviour::Executable(path) => match &event.process.parent_executable {
            Some(parent) => format!("new executable {path} run by {parent} in {workload}"),
            None => format!("new executable {path} in {workload}"),
        },
        Behaviour::ExecEdge { parent, child } => {
            format!("new exec edge {parent} -> {child} in {workload}")
        }
        Behaviour::File { path, intent } => {
            format!("new file access {path} ({intent}){by} in {workload}")
        }
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => {
            let dest = SocketAddr::new(*address, *port);
            let name = event
                .context
                .dns_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("new network destination {dest}/{protocol}{name}{by} in {workload}")
        }
        Behaviour::Privilege { operation, detail } => {
            let result = match &event.event.kind {
                EventKind::Privilege { result, .. } if *result < 0 => " (refused)",
                _ => "",
            };
            format!("new privilege use {operation} {detail}{result}{by} in {workload}")
        }
        Behaviour::DnsName(name) => format!("new DNS name {name}{by} in {workload}"),
        Behaviour::Listener {
            address,
            port,
            protocol,
        } => {
            let port = if *port == 0 {
                "ephemeral".to_owned()
            } else {
                port.to_string()
            };
            format!("new listener {address}:{port}/{protocol}{by} in {workload}")
        }
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => {
            format!("new file operation {operation} {path} {detail}{by} in {workload}")
        }
        Behaviour::Sequence { parent, steps } => {
            format!(
                "new exec sequence {} (children of {parent}) in {workload}",
                steps.join(" -> ")
            )
        }
        Behaviour::Host(name) => format!("new host {name} for {workload}"),
        Behaviour::ActiveTime { weekday, hour } => {
            let day = WEEKDAYS.get(usize::from(*weekday)).copied().unwrap_or("?");
            format!("unusual time: {workload} active on {day} {hour:02}:00-{hour:02}:59 UTC{by}")
        }
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A short name of what `behaviour` is about (its path, address, name...), for samples.
pub(crate) fn object_name(behaviour: &Behaviour) -> String {
    match behaviour {
        Behaviour::Executable(path) | Behaviour::File { path, .. } => path.clone(),
        Behaviour::ExecEdge { parent, child } => format!("{parent} -> {child}"),
        Behaviour::Destination {
            address,
            port,
            protocol,
        }
        | Behaviour::Listener {
            address,
            port,
            protocol,
        } => format!("{}/{protocol}", SocketAddr::new(*address, *port)),
        Behaviour::Privilege { operation, detail } => format!("{operation} {detail}"),
        Behaviour::DnsName(name) | Behaviour::Host(name) => name.clone(),
        Behaviour::FileOperation {
            operation, path, ..
        } => format!("{operation} {path}"),
        Behaviour::Sequence { steps, .. } => steps.join(" -> "),
        Behaviour::ActiveTime { weekday, hour } => format!("day {weekday} hour {hour}"),
    }
}

fn novelty(event: &Attributed, behaviour: &Behaviour) -> What {
    match behaviour.clone() {
        Behaviour::Executable(path) => What::Executable(path),
        Behaviour::ExecEdge { parent, child } => What::ExecEdge(v1::ExecEdge {
            parent_executable: parent,
            child_executable: child,
        }),
        Behaviour::File { path, intent } => What::File(v1::FileAccess { path, intent }),
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => What::Destination(v1::NetworkDestination {
            address: address.to_string(),
            port: port.into(),
            protocol,
            dns_name: event.context.dns_name.clone().unwrap_or_default(),
        }),
        Behaviour::Privilege { operation, detail } => What::Privilege(v1::PrivilegeUse {
            operation,
            detail,
            result: match &event.event.kind {
                EventKind::Privilege { result, .. } => *result,
                _ => 0,
            },
        }),
        Behaviour::DnsName(name) => {
            let r#type = match &event.event.kind {
                EventKind::Dns { message, .. } => dns::parse(message).map(|m| m.question.qtype),
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
            protocol,
        }),
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => What::FileOperation(v1::FileOperation {
            operation,
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
    use crate::event::{Event, EventKind};
    use std::time::Duration;

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
                comm: "nc".into(),
                kind: EventKind::Exit { exit_code: 0 },
            },
            workload: Workload {
                id: "github:acme/app/ci/build".into(),
                kind: WorkloadKind::GithubJob,
                run_id: Some("7.1".into()),
            },
            process: ProcessInfo {
                pid: 12,
                ppid: 11,
                executable: "/usr/bin/nc".into(),
                argv: vec!["nc".into(), "-l".into()],
                argv_truncated: true,
                uid: 1000,
                euid: 0,
                ancestry: vec![(11, "/bin/bash".into()), (10, "/usr/bin/runner".into())],
                parent_executable: Some("/bin/bash".into()),
            },
            context: Default::default(),
        }
    }

    #[test]
    fn builds_every_field() {
        let a = attributed();
        let b = Behaviour::Executable("/usr/bin/nc".into());
        let d = build("host-1", &a, &b, "the-id".into(), &SecretPaths::default());
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
    fn summaries_of_each_kind() {
        let a = attributed();
        let dest = Behaviour::Destination {
            address: "2001:db8::1".parse().expect("ip"),
            port: 53,
            protocol: "udp".into(),
        };
        let file = Behaviour::File {
            path: "/etc/shadow".into(),
            intent: "read".into(),
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

    #[test]
    fn ids_are_stable_and_discriminating() {
        let exe = Behaviour::Executable("/usr/bin/nc".into());
        let id = deviation_id("h", "w", &exe);
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, deviation_id("h", "w", &exe));
        assert_ne!(id, deviation_id("h2", "w", &exe));
        assert_ne!(id, deviation_id("h", "w2", &exe));
        // Field boundaries matter: ("a", "bc") and ("ab", "c") differ.
        let e1 = Behaviour::ExecEdge {
            parent: "a".into(),
            child: "bc".into(),
        };
        let e2 = Behaviour::ExecEdge {
            parent: "ab".into(),
            child: "c".into(),
        };
        assert_ne!(deviation_id("h", "w", &e1), deviation_id("h", "w", &e2));
    }

    #[test]
    fn cardinality_ids_are_one_per_workload_and_dimension() {
        let id = cardinality_id("h", "w", Dimension::FileAccess);
        assert_eq!(id, cardinality_id("h", "w", Dimension::FileAccess));
        assert_ne!(id, cardinality_id("h", "w", Dimension::Executable));
        assert_ne!(id, cardinality_id("h", "w2", Dimension::FileAccess));
        let file = Behaviour::File {
            path: "file-access".into(),
            intent: String::new(),
        };
        assert_ne!(id, deviation_id("h", "w", &file));
    }
}
