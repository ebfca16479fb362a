//! Framework tags on deviations, each `scheme:id`, so exports (OCSF, SIEM rules) can map them:
//!
//! - `mitre:<technique>`: the MITRE ATT&CK (Enterprise) technique the behaviour is evidence of;
//! - `owasp-nhi:NHI<n>`: the OWASP Non-Human Identities Top 10 (2025) risk it shows for the
//!   workload's identity: NHI2 secret leakage, NHI5 overprivileged NHI, NHI8 environment
//!   isolation, NHI10 human use of an NHI;
//! - `nist-csf:DE.CM-01`: every deviation is a behavioural anomaly of a non-human identity found
//!   by continuous monitoring (NIST CSF 2.0 DE.CM-01); host-side ones (processes, files,
//!   privileges) also `nist-csf:DE.CM-09` (computing environments monitored).
//!
//! Only techniques the behaviour itself shows are named; none is guessed from severity alone.

use proto::v1::DeviationKind;

use crate::behaviour::{Behaviour, PrivilegeOperation};
use crate::event::OpenIntent;

use super::finding::Signal;
use super::severity::{SecretPaths, is_persistence, is_setid_chmod};

/// Tags of a deviation of `kind` about `behaviour` (when it is one) with `signals`.
pub fn tags(
    kind: DeviationKind,
    behaviour: Option<&Behaviour>,
    signals: &[Signal],
    secrets: &SecretPaths,
) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let has = |s: Signal| signals.contains(&s);
    match behaviour {
        Some(Behaviour::Executable(path)) => executable_tags(path, &has, &mut out),
        Some(Behaviour::ExecEdge { .. } | Behaviour::Sequence { .. }) => out.push("mitre:T1059"),
        Some(Behaviour::File { path, intent }) => file_tags(path, *intent, &has, secrets, &mut out),
        Some(Behaviour::Destination { .. }) => out.push("mitre:T1071"),
        Some(Behaviour::DnsName(_)) => out.push("mitre:T1071.004"),
        Some(Behaviour::Listener { .. }) => out.push("mitre:T1571"),
        Some(Behaviour::Privilege { operation, .. }) => privilege_tags(*operation, &mut out),
        Some(Behaviour::FileOperation {
            operation,
            detail,
            path,
        }) => {
            if is_setid_chmod(*operation, detail) {
                out.extend(["mitre:T1548.001", "owasp-nhi:NHI5"]);
            } else if has(Signal::OutputTampering) {
                // Content moved onto the workload's product by name (see `judge`).
                out.extend(["mitre:T1565.001", "mitre:T1195.002"]);
            } else if has(Signal::InputTampering) {
                out.push("mitre:T1565.001");
            } else if secrets.matches(path) {
                out.extend(["mitre:T1552.001", "owasp-nhi:NHI2"]);
            } else {
                out.push("mitre:T1222.002");
            }
        }
        Some(Behaviour::Host(_)) => {}
        Some(Behaviour::ActiveTime { .. }) => out.extend(["mitre:T1078", "owasp-nhi:NHI10"]),
        None => {}
    }
    if has(Signal::AfterCredentialAccess) {
        out.extend(["mitre:T1041", "owasp-nhi:NHI2"]);
    }
    if has(Signal::AfterArchive) {
        out.extend(["mitre:T1560.001", "mitre:T1041"]);
    }
    if has(Signal::NewToolToNewHost) {
        out.push("mitre:T1105");
    }
    match kind {
        DeviationKind::Enumeration => out.push("mitre:T1083"),
        DeviationKind::RateSpike => out.push("mitre:T1030"),
        DeviationKind::CardinalityExploded => out.push("mitre:T1562"),
        _ => {}
    }
    out.push("nist-csf:DE.CM-01");
    let network = matches!(
        kind,
        DeviationKind::NewNetworkDestination
            | DeviationKind::NewDnsName
            | DeviationKind::NewListener
    );
    if !network {
        out.push("nist-csf:DE.CM-09");
    }
    let mut tags: Vec<&'static str> = Vec::with_capacity(out.len());
    for t in out {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// Tags of a new executable.
fn executable_tags(path: &str, has: &dyn Fn(Signal) -> bool, out: &mut Vec<&'static str>) {
    out.push("mitre:T1059");
    if has(Signal::DroppedThenExecuted) {
        out.push("mitre:T1105");
    }
    if has(Signal::Fileless) || path.starts_with("memfd:") {
        out.push("mitre:T1620");
    }
    if path.starts_with("/dev/shm/") || path.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
    {
        out.push("mitre:T1036");
    }
}

/// Tags of a new file access.
fn file_tags(
    path: &str,
    intent: OpenIntent,
    has: &dyn Fn(Signal) -> bool,
    secrets: &SecretPaths,
    out: &mut Vec<&'static str>,
) {
    if path.ends_with("/etc/shadow") || path.ends_with("/etc/gshadow") {
        out.extend(["mitre:T1003.008", "owasp-nhi:NHI2"]);
    } else if secrets.matches(path) {
        out.extend(["mitre:T1552.001", "owasp-nhi:NHI2"]);
    } else if path.starts_with("/proc/<pid>/") {
        out.extend(["mitre:T1003.007", "owasp-nhi:NHI8"]);
    }
    if intent != OpenIntent::READ_ONLY && is_persistence(path) {
        out.push(persistence_technique(path));
    }
    if has(Signal::OutputTampering) {
        out.extend(["mitre:T1565.001", "mitre:T1195.002"]);
    }
    if has(Signal::InputTampering) {
        out.push("mitre:T1565.001");
    }
    if path.contains("/.git/hooks/") {
        out.push("mitre:T1195.002");
    }
}

/// Tags of a new privileged operation: the technique, and the identity risk it shows.
fn privilege_tags(operation: PrivilegeOperation, out: &mut Vec<&'static str>) {
    use PrivilegeOperation as P;
    out.push(match operation {
        P::PtraceAttach => "mitre:T1055.008",
        P::ReadProcessMemory | P::WriteProcessMemory => "mitre:T1055",
        P::BpfProgramLoad => "mitre:T1014",
        P::KernelModuleLoad => "mitre:T1547.006",
        P::Unshare | P::Setns | P::Mount | P::Umount => "mitre:T1611",
        _ => "mitre:T1548",
    });
    out.push(match operation {
        P::Unshare
        | P::Setns
        | P::Mount
        | P::Umount
        | P::PtraceAttach
        | P::ReadProcessMemory
        | P::WriteProcessMemory => "owasp-nhi:NHI8",
        _ => "owasp-nhi:NHI5",
    });
}

/// The persistence technique of a write to `path` (one of `severity`'s persistence points).
fn persistence_technique(path: &str) -> &'static str {
    if path.contains("cron") {
        "mitre:T1053.003"
    } else if path.contains("/systemd/") {
        "mitre:T1543.002"
    } else if path.ends_with("/etc/ld.so.preload") {
        "mitre:T1574.006"
    } else if path.contains("sudoers") {
        "mitre:T1548.003"
    } else if path.contains("/autostart/") {
        "mitre:T1547.013"
    } else if path.contains("/.git/hooks/") {
        "mitre:T1546"
    } else {
        "mitre:T1546.004"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: DeviationKind, b: &Behaviour, signals: &[Signal]) -> Vec<&'static str> {
        tags(kind, Some(b), signals, &SecretPaths::default())
    }

    #[test]
    fn credential_exfiltration_and_persistence() {
        let ssh = Behaviour::File {
            path: "/home/u/.ssh/id_rsa".into(),
            intent: "read".parse().expect("intent"),
        };
        assert_eq!(
            t(DeviationKind::NewFileAccess, &ssh, &[Signal::Credential]),
            [
                "mitre:T1552.001",
                "owasp-nhi:NHI2",
                "nist-csf:DE.CM-01",
                "nist-csf:DE.CM-09"
            ]
        );
        let dest = Behaviour::Destination {
            address: "127.0.0.1".parse().expect("ip"),
            port: 9,
            protocol: crate::event::Protocol::Tcp,
        };
        assert_eq!(
            t(
                DeviationKind::NewNetworkDestination,
                &dest,
                &[Signal::AfterCredentialAccess, Signal::AfterArchive]
            ),
            [
                "mitre:T1071",
                "mitre:T1041",
                "owasp-nhi:NHI2",
                "mitre:T1560.001",
                "nist-csf:DE.CM-01"
            ]
        );
        let bashrc = Behaviour::File {
            path: "/home/u/.bashrc".into(),
            intent: "write|create".parse().expect("intent"),
        };
        assert!(t(DeviationKind::NewFileAccess, &bashrc, &[]).contains(&"mitre:T1546.004"));
        let unshare = Behaviour::Privilege {
            operation: "unshare".parse().expect("operation"),
            detail: "0x4000000".into(),
        };
        let tags = t(DeviationKind::NewPrivilegeUse, &unshare, &[]);
        assert!(tags.contains(&"mitre:T1611") && tags.contains(&"owasp-nhi:NHI8"));
        // Every tag is scheme:id.
        for tag in tags {
            let (scheme, id) = tag.split_once(':').expect("scheme:id");
            assert!(!scheme.is_empty() && !id.is_empty());
        }
    }
}
