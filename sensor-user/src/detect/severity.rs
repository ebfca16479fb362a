//! Base severity of a new behaviour: what it means alone. `super::score` turns it into a score
//! and adjusts it with the deviation's context (rarity, incident chain, privilege, breadth).
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
//! | new privilege use      | HIGH for ptrace, other processes' memory, bpf and module loads,   |
//! |                        | unshare and setns (new namespaces), mount; MEDIUM otherwise       |
//! |                        | (uid/gid changes, capset, umount)                                 |
//! | new DNS name           | LOW; HIGH for tunnelling-shaped names (a label over 40 characters |
//! |                        | or a name over 100)                                               |
//! | new listener           | MEDIUM                                                            |
//! | new file operation     | LOW; HIGH for chmod adding setuid/setgid and for credential paths;|
//! |                        | MEDIUM for content moved by name onto a file the workload knows   |
//! |                        | by a new hand (rename/link by another tool or from elsewhere)     |
//! | new exec sequence      | LOW (the chain's context raises it, see `score`)                  |
//! | new host, unusual time | LOW                                                               |
//! | cardinality exploded   | HIGH: the dimension stops growing (and a flood may be meant to    |
//! |                        | blind it); novelties past it are aggregated per run, never unsaid |
//! | blind spot             | HIGH: the kernel lost records while the workload was active       |
//!
//! Context raises an executable to CRITICAL when it was written by the same workload before it
//! ran (drop and execute) or has no file (memfd, deleted): fileless or freshly dropped tools are
//! what intruders run and builds rarely do.
//!
//! Credential stores ([`SecretPaths`]): by default anything under a `.ssh/`, `.gnupg/`,
//! `.azure/` or `.config/gcloud/` directory, `.aws/credentials`, `.git-credentials`, `.netrc`,
//! `.npmrc`, `.pypirc`, `.docker/config.json`, `.kube/config`, cargo and terraform credentials,
//! the GitHub CLI's `hosts.yml`, `.vault-token`, kubernetes secrets (`/var/run/secrets/`, also as
//! `/run/secrets/` since event paths have symlinks resolved), `/etc/shadow` and `/etc/gshadow`,
//! git's XDG store (`.config/git/credentials`), a self-hosted runner's `.credentials`,
//! `.credentials_rsaparams` and `.runner`, Maven, Gradle, RubyGems, Composer, NuGet and Yarn
//! settings with repository tokens, the AWS SSO/CLI, kubelogin, OCI, doctl and glab token caches,
//! `.terraformrc` and `.pgpass`; operators add their own (`secret_paths` in the config,
//! `--secret-path`).

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use proto::v1::Severity;

use crate::attribute::Context;
use crate::behaviour::{Behaviour, FileChange};

/// Directories whose executables are suspicious: world-writable scratch space and home dirs.
const SCRATCH_OR_HOME: &[&str] = &[
    "/tmp/",
    "/var/tmp/",
    "/dev/shm/",
    "/home/",
    "/root/",
    "memfd:",
];
/// Built-in credential store patterns (see [`SecretPaths`]).
const DEFAULT_SECRET_PATHS: &[&str] = &[
    "/.ssh/",
    "/.gnupg/",
    "/.azure/",
    "/.config/gcloud/",
    "/var/run/secrets/",
    "/run/secrets/",
    "/.aws/credentials",
    "/.git-credentials",
    "/.netrc",
    "/.npmrc",
    "/.pypirc",
    "/.docker/config.json",
    "/.kube/config",
    "/.cargo/credentials",
    "/.cargo/credentials.toml",
    "/.terraform.d/credentials.tfrc.json",
    "/.config/gh/hosts.yml",
    "/.vault-token",
    "/etc/shadow",
    "/etc/gshadow",
    // git's XDG credential store (`credential.helper store` without ~/.git-credentials).
    "/.config/git/credentials",
    // A self-hosted GitHub Actions runner's registration and its signing key.
    "/.credentials",
    "/.credentials_rsaparams",
    "/.runner",
    // Build tools' repository credentials.
    "/.m2/settings.xml",
    "/.m2/settings-security.xml",
    "/.gradle/gradle.properties",
    "/.gem/credentials",
    "/.config/composer/auth.json",
    "/.nuget/NuGet/NuGet.Config",
    "/.yarnrc.yml",
    // Cloud CLIs' token caches (gcloud and azure are whole directories above).
    "/.aws/sso/cache/",
    "/.aws/cli/cache/",
    "/.kube/cache/oidc-login/",
    "/.oci/config",
    "/.config/doctl/config.yaml",
    "/.config/glab-cli/config.yml",
    "/.terraformrc",
    "/.pgpass",
];

/// Files that make code run later (shell startup, schedulers, service units, git hooks,
/// preloads): writing one is how an intruder stays. A pattern ending in `/` is a directory.
const PERSISTENCE_PATHS: &[&str] = &[
    "/.bashrc",
    "/.bash_profile",
    "/.bash_login",
    "/.profile",
    "/.zshrc",
    "/.zprofile",
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/profile.d/",
    "/etc/crontab",
    "/etc/cron.d/",
    "/etc/cron.hourly/",
    "/etc/cron.daily/",
    "/var/spool/cron/",
    "/etc/systemd/system/",
    "/.config/systemd/user/",
    "/.config/autostart/",
    "/.git/hooks/",
    "/etc/ld.so.preload",
    "/etc/sudoers",
    "/etc/sudoers.d/",
];

fn matches_any(patterns: &[&str], path: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, path))
}

/// A write that can make code run later.
pub fn is_persistence(path: &str) -> bool {
    matches_any(PERSISTENCE_PATHS, path)
}

/// A chmod (`detail`: the new mode, octal) that adds setuid or setgid: a way to keep privilege.
pub(crate) fn is_setid_chmod(operation: FileChange, detail: &str) -> bool {
    operation == FileChange::Chmod
        && u32::from_str_radix(detail, 8).is_ok_and(|mode| mode & 0o6000 != 0)
}

/// Another process's environment or memory through procfs (paths are generalised, so a pid
/// reads `<pid>`).
fn is_other_process_memory(path: &str) -> bool {
    path.starts_with("/proc/<pid>/") && (path.ends_with("/environ") || path.ends_with("/mem"))
}

/// Which paths are credential stores. A pattern ending in `/` is a directory: every path with
/// it inside matches. Any other pattern is a file: paths ending in it match. Patterns start with
/// `/`, so they only match whole path components.
///
/// Every open is checked (to learn the stores' identities, see `secret_files`), so a path is
/// never tried against each pattern in turn (that scan was ~15 % of the agent's CPU at 100k
/// opens/s): a file pattern can only end a path whose last component is the pattern's, so the
/// file patterns are found by that name (one hash lookup), and the directory patterns are
/// searched in one pass (an Aho-Corasick automaton built once, stopping at the first match;
/// reporting every overlapping match of all patterns instead took ~8 %).
#[derive(Clone, Debug)]
pub struct SecretPaths {
    patterns: Vec<String>,
    /// Indexes of the file patterns in `patterns`, by their last component.
    files: HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
    /// The directory patterns at once; `None` only if the automaton could not be built (far
    /// more patterns than any configuration has), then each is tried in turn.
    directories: Option<AhoCorasick>,
}

impl PartialEq for SecretPaths {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for SecretPaths {}

impl Default for SecretPaths {
    fn default() -> Self {
        SecretPaths::new(
            DEFAULT_SECRET_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        )
    }
}

impl SecretPaths {
    fn new(patterns: Vec<String>) -> Self {
        let mut files = HashMap::<_, Vec<usize>, _>::default();
        for (index, pattern) in patterns.iter().enumerate() {
            if !is_directory(pattern) {
                files
                    .entry(last_component(pattern).to_owned())
                    .or_default()
                    .push(index);
            }
        }
        let directories = AhoCorasick::new(patterns.iter().filter(|p| is_directory(p)));
        if let Err(e) = &directories {
            tracing::warn!(error = %e, "credential store patterns: no automaton, trying each in turn");
        }
        SecretPaths {
            files,
            directories: directories.ok(),
            patterns,
        }
    }

    /// The built-in patterns plus `extra` (each given a leading `/` if it lacks one).
    pub fn with_extra(extra: impl IntoIterator<Item = String>) -> Self {
        let mut patterns: Vec<String> = DEFAULT_SECRET_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        for p in extra {
            patterns.push(if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            });
        }
        SecretPaths::new(patterns)
    }

    pub fn matches(&self, path: &str) -> bool {
        let file = self
            .files
            .get(last_component(path))
            .is_some_and(|candidates| {
                candidates
                    .iter()
                    .any(|&index| path.ends_with(&self.patterns[index]))
            });
        file || match &self.directories {
            Some(automaton) => automaton.is_match(path),
            None => self
                .patterns
                .iter()
                .any(|p| is_directory(p) && pattern_matches(p, path)),
        }
    }
}

/// A pattern ending in `/` names a directory (see [`SecretPaths`]).
fn is_directory(pattern: &str) -> bool {
    pattern.ends_with('/')
}

/// What follows the last `/` (all of `path` when it has none).
fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One pattern against `path` (see [`SecretPaths`]).
fn pattern_matches(pattern: &str, path: &str) -> bool {
    if is_directory(pattern) {
        path.contains(pattern)
    } else {
        path.ends_with(pattern)
    }
}

/// Severity of a blind spot: records of an active workload were lost.
pub const BLIND_SPOT: Severity = Severity::High;

/// Severity of a cardinality-exploded deviation (see the module table).
pub const CARDINALITY: Severity = Severity::High;

/// The severity of reporting `behaviour` as new in `context` (see the module table).
pub fn severity(behaviour: &Behaviour, context: &Context, secrets: &SecretPaths) -> Severity {
    if matches!(behaviour, Behaviour::Executable(_))
        && (context.dropped_then_executed || context.fileless)
    {
        return Severity::Critical;
    }
    base_severity(behaviour, secrets)
}

/// True when `behaviour` touches a credential store.
pub fn is_credential_access(behaviour: &Behaviour, secrets: &SecretPaths) -> bool {
    match behaviour {
        Behaviour::File { path, .. } | Behaviour::FileOperation { path, .. } => {
            secrets.matches(path)
        }
        _ => false,
    }
}

/// Whether `behaviour` ranks medium or higher on its own, whatever its context (a credential
/// store, another process's memory through procfs, a persistence path...): never folded into
/// another novelty.
pub(crate) fn is_sensitive(behaviour: &Behaviour, secrets: &SecretPaths) -> bool {
    base_severity(behaviour, secrets) >= Severity::Medium
}

fn base_severity(behaviour: &Behaviour, secrets: &SecretPaths) -> Severity {
    match behaviour {
        Behaviour::Executable(path) if SCRATCH_OR_HOME.iter().any(|d| path.starts_with(d)) => {
            Severity::High
        }
        Behaviour::Executable(_) => Severity::Medium,
        Behaviour::ExecEdge { .. } => Severity::Low,
        Behaviour::File { path, .. } if secrets.matches(path) => Severity::High,
        Behaviour::File { path, .. } if is_other_process_memory(path) => Severity::High,
        Behaviour::File { path, intent } if intent.modifies() && is_persistence(path) => {
            Severity::High
        }
        Behaviour::File { intent, .. } if intent.modifies() => Severity::Medium,
        Behaviour::File { .. } => Severity::Low,
        Behaviour::Destination { .. } => Severity::Medium,
        Behaviour::Privilege { operation, .. } if operation.intrusive() => Severity::High,
        Behaviour::Privilege { .. } => Severity::Medium,
        Behaviour::DnsName(name)
            if name.len() > 100 || name.split('.').any(|label| label.len() > 40) =>
        {
            Severity::High
        }
        Behaviour::DnsName(_) => Severity::Low,
        Behaviour::Listener { .. } => Severity::Medium,
        Behaviour::FileOperation { path, .. } if secrets.matches(path) => Severity::High,
        Behaviour::FileOperation {
            operation, detail, ..
        } if is_setid_chmod(*operation, detail) => Severity::High,
        // A write by name: judged only on files the workload knows (see `judge`).
        Behaviour::FileOperation {
            operation: FileChange::Replace,
            ..
        } => Severity::Medium,
        Behaviour::FileOperation { .. } => Severity::Low,
        Behaviour::Sequence { .. } => Severity::Low,
        Behaviour::Host(_) => Severity::Low,
        Behaviour::ActiveTime { .. } => Severity::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, intent: &str) -> Behaviour {
        Behaviour::File {
            path: path.into(),
            intent: intent.parse().expect("intent"),
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
            (exe("memfd:payload (deleted)"), Severity::High),
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
                    protocol: crate::event::Protocol::Tcp,
                },
                Severity::Medium,
            ),
        ];
        for (behaviour, want) in cases {
            assert_eq!(
                severity(&behaviour, &Context::default(), &SecretPaths::default()),
                want,
                "{behaviour:?}"
            );
        }
    }

    #[test]
    fn generalised_credential_paths_stay_credentials() {
        let paths = [
            "/home/u1700000000/.ssh/id_ed25519",
            "/tmp/tmp.Xa3kQ9zB1m/.ssh/id_rsa",
            "/home/runner/work/_temp/3f2a9c1e-7b4d-4e0a-9f6b-2c8d1e5a7b90/.aws/credentials",
            "/tmp/.tmpAbC123/.git-credentials",
            "/home/runner/work/_temp/1234567890/.docker/config.json",
            "/tmp/pip-build-env-a1b2_c3d/.pypirc",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/etc/shadow",
        ];
        for path in paths {
            let generalised = crate::behaviour::generalize_path(path);
            let b = file(&generalised, "read");
            assert!(
                is_credential_access(&b, &SecretPaths::default()),
                "{path} -> {generalised}"
            );
            assert_eq!(
                severity(&b, &Context::default(), &SecretPaths::default()),
                Severity::High,
                "{generalised}"
            );
        }
    }

    #[test]
    fn new_dimensions_and_context() {
        let ctx = Context::default();
        let privilege = |op: &str| Behaviour::Privilege {
            operation: op.parse().expect("operation"),
            detail: String::new(),
        };
        assert_eq!(
            severity(&privilege("ptrace-attach"), &ctx, &SecretPaths::default()),
            Severity::High
        );
        assert_eq!(
            severity(&privilege("setresuid"), &ctx, &SecretPaths::default()),
            Severity::Medium
        );
        assert_eq!(
            severity(
                &Behaviour::DnsName("pypi.org".into()),
                &ctx,
                &SecretPaths::default()
            ),
            Severity::Low
        );
        let tunnel = format!("{}.exfil.test", "a".repeat(50));
        assert_eq!(
            severity(&Behaviour::DnsName(tunnel), &ctx, &SecretPaths::default()),
            Severity::High
        );
        let chmod = |mode: &str| Behaviour::FileOperation {
            operation: "chmod".parse().expect("operation"),
            path: "/tmp/x".into(),
            detail: mode.into(),
        };
        assert_eq!(
            severity(&chmod("755"), &ctx, &SecretPaths::default()),
            Severity::Low
        );
        assert_eq!(
            severity(&chmod("4755"), &ctx, &SecretPaths::default()),
            Severity::High
        );
        let dropped = Context {
            dropped_then_executed: true,
            ..Context::default()
        };
        assert_eq!(
            severity(
                &Behaviour::Executable("/tmp/x".into()),
                &dropped,
                &SecretPaths::default()
            ),
            Severity::Critical
        );
        assert_eq!(
            severity(
                &Behaviour::DnsName("a.b".into()),
                &dropped,
                &SecretPaths::default()
            ),
            Severity::Low
        );
    }

    /// The one-pass automaton answers what trying each pattern in turn answers, on paths
    /// built to sit on every edge: each pattern alone, inside a path, at its end, cut short by
    /// one byte, with one byte more, glued to a neighbouring component, and overlapping
    /// patterns (`/.credentials` inside `/.credentials_rsaparams`, `/.cargo/credentials` in
    /// `/.cargo/credentials.toml`).
    #[test]
    fn one_pass_matches_what_each_pattern_matches() {
        let secrets =
            SecretPaths::with_extra(["opt/ci/secrets/".to_owned(), "/.vault/token".to_owned()]);
        assert!(secrets.directories.is_some());
        let mut paths = vec![
            String::new(),
            "/".to_owned(),
            "/.credentials_rsaparams".to_owned(),
            "/x/.credentials_rsaparamsX".to_owned(),
            "/x/.cargo/credentials.tomlX/y".to_owned(),
            "/home/u/.ssh".to_owned(),
            "/etc/shadow-".to_owned(),
            "/etc/gshadow".to_owned(),
            "/proc/<pid>/environ".to_owned(),
        ];
        for p in &secrets.patterns {
            let cut = &p[..p.len() - 1];
            paths.extend([
                p.clone(),
                format!("/home/u{p}"),
                format!("/home/u{p}x"),
                format!("/home/u{p}/x"),
                format!("/home/u{cut}"),
                format!("/home/u{cut}/x"),
                format!("/a{}", p.trim_start_matches('/')),
                format!("{p}{p}"),
            ]);
        }
        let (mut matched, mut unmatched) = (0, 0);
        for path in &paths {
            let each = secrets.patterns.iter().any(|p| pattern_matches(p, path));
            assert_eq!(secrets.matches(path), each, "{path:?}");
            if each {
                matched += 1;
            } else {
                unmatched += 1;
            }
        }
        // Both answers were exercised, many times.
        assert!(matched > 100 && unmatched > 50, "{matched} {unmatched}");
    }

    #[test]
    fn operators_add_secret_paths() {
        let secrets =
            SecretPaths::with_extra(["opt/ci/secrets/".to_owned(), "/.vault/token".to_owned()]);
        assert!(secrets.matches("/opt/ci/secrets/deploy.key"));
        assert!(secrets.matches("/home/u/.vault/token"));
        assert!(secrets.matches("/home/u/.ssh/id_rsa"), "built-ins stay");
        assert!(!SecretPaths::default().matches("/opt/ci/secrets/deploy.key"));
        assert!(!secrets.matches("/home/u/my.npmrc.bak"));
    }

    #[test]
    fn persistence_and_other_process_memory_are_high() {
        let ctx = Context::default();
        let secrets = SecretPaths::default();
        let sev = |path: &str, intent: &str| severity(&file(path, intent), &ctx, &secrets);
        assert_eq!(sev("/home/u/.bashrc", "write|create"), Severity::High);
        assert_eq!(sev("/home/u/.bashrc", "read"), Severity::Low);
        assert_eq!(
            sev("/w/app/.git/hooks/pre-commit", "write|create|truncate"),
            Severity::High
        );
        assert_eq!(sev("/etc/cron.d/job", "write|create"), Severity::High);
        assert_eq!(sev("/proc/<pid>/environ", "read"), Severity::High);
        assert_eq!(sev("/proc/self/environ", "read"), Severity::Low);
        assert_eq!(sev("/w/app/target/out.o", "write|create"), Severity::Medium);
    }
}
