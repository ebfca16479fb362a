//! Severity of a new behaviour, first version.
//!
//! | deviation              | severity                                                          |
//! |------------------------|-------------------------------------------------------------------|
//! | new executable         | MEDIUM; HIGH when it lives in a temporary or home directory       |
//! |                        | (`/tmp/`, `/var/tmp/`, `/dev/shm/`, `/home/`, `/root/`) or is a   |
//! |                        | memfd (`/memfd:…`, fileless execution)                            |
//! | new exec edge          | LOW                                                               |
//! | new file access        | LOW for reads; MEDIUM when it writes, creates or truncates; HIGH  |
//! |                        | for any access to a credential-looking path (see below)           |
//! | new network destination| MEDIUM                                                            |
//!
//! Credential-looking paths: anything under a `.ssh/` directory, `.aws/credentials`,
//! `.git-credentials`, `.npmrc`, `.pypirc`, `.docker/config.json`, kubernetes secrets
//! (`/var/run/secrets/`, also as `/run/secrets/` since event paths have symlinks resolved),
//! `/etc/shadow` and `/etc/gshadow`.

use proto::v1::Severity;

use crate::baseline::Behaviour;

/// Directories whose executables are suspicious: world-writable scratch space and home dirs.
const SCRATCH_OR_HOME: &[&str] = &[
    "/tmp/",
    "/var/tmp/",
    "/dev/shm/",
    "/home/",
    "/root/",
    "/memfd:",
];
/// Path suffixes (after a `/`) of credential files.
const CREDENTIAL_FILES: &[&str] = &[
    "/.aws/credentials",
    "/.git-credentials",
    "/.npmrc",
    "/.pypirc",
    "/.docker/config.json",
];
const CREDENTIAL_DIRS: &[&str] = &["/var/run/secrets/", "/run/secrets/"];
/// Open intents that change a file.
const MODIFYING: &[&str] = &["write", "create", "truncate"];
const CREDENTIAL_EXACT: &[&str] = &["/etc/shadow", "/etc/gshadow"];

/// The severity of reporting `behaviour` as new (see the module table).
pub fn severity(behaviour: &Behaviour) -> Severity {
    match behaviour {
        Behaviour::Executable(path) if SCRATCH_OR_HOME.iter().any(|d| path.starts_with(d)) => {
            Severity::High
        }
        Behaviour::Executable(_) => Severity::Medium,
        Behaviour::ExecEdge { .. } => Severity::Low,
        Behaviour::File { path, .. } if is_credential(path) => Severity::High,
        Behaviour::File { intent, .. }
            if intent.split('|').any(|part| MODIFYING.contains(&part)) =>
        {
            Severity::Medium
        }
        Behaviour::File { .. } => Severity::Low,
        Behaviour::Destination { .. } => Severity::Medium,
    }
}

fn is_credential(path: &str) -> bool {
    path.contains("/.ssh/")
        || CREDENTIAL_FILES.iter().any(|f| path.ends_with(f))
        || CREDENTIAL_DIRS.iter().any(|d| path.starts_with(d))
        || CREDENTIAL_EXACT.contains(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, intent: &str) -> Behaviour {
        Behaviour::File {
            path: path.into(),
            intent: intent.into(),
        }
    }

    #[test]
    fn severity_table() {
        let exe = |p: &str| Behaviour::Executable(p.into());
        let cases = [
            (exe("/usr/bin/nc"), Severity::Medium),
            (exe("/tmp/x"), Severity::High),
            (exe("/dev/shm/.hidden/x"), Severity::High),
            (exe("/var/tmp/x"), Severity::High),
            (exe("/home/runner/work/app/bin/tool"), Severity::High),
            (exe("/root/go/bin/x"), Severity::High),
            (exe("/memfd:payload (deleted)"), Severity::High),
            (exe("/tmpfoo/x"), Severity::Medium),
            (
                Behaviour::ExecEdge {
                    parent: "/bin/sh".into(),
                    child: "/bin/ls".into(),
                },
                Severity::Low,
            ),
            (file("/etc/hosts", "read"), Severity::Low),
            (file("/etc/hosts", ""), Severity::Low),
            (file("/var/log/x", "write"), Severity::Medium),
            (file("/var/log/x", "read|create"), Severity::Medium),
            (file("/tmp/y", "write|truncate"), Severity::Medium),
            (file("/home/u/.ssh/id_ed25519", "read"), Severity::High),
            (file("/root/.aws/credentials", "read"), Severity::High),
            (file("/home/u/.git-credentials", "read"), Severity::High),
            (file("/home/u/.npmrc", "write|create"), Severity::High),
            (file("/home/u/.pypirc", "read"), Severity::High),
            (file("/home/u/.docker/config.json", "read"), Severity::High),
            (
                file(
                    "/var/run/secrets/kubernetes.io/serviceaccount/token",
                    "read",
                ),
                Severity::High,
            ),
            (
                file("/run/secrets/kubernetes.io/serviceaccount/token", "read"),
                Severity::High,
            ),
            (file("/etc/shadow", "read"), Severity::High),
            (file("/etc/shadowy", "read"), Severity::Low),
            (
                Behaviour::Destination {
                    address: "10.0.0.1".parse().expect("ip"),
                    port: 443,
                    protocol: "tcp".into(),
                },
                Severity::Medium,
            ),
        ];
        for (behaviour, want) in cases {
            assert_eq!(severity(&behaviour), want, "{behaviour:?}");
        }
    }
}
