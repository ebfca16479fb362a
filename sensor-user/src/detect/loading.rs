//! What a new executable does as it loads: the dynamic loader opens `ld.so.cache` and the shared
//! libraries, libc the locale and `nsswitch.conf`, the tool its configuration. For a new
//! executable each of those is new too, and reporting each as its own deviation buries the one
//! that matters (issue 14: 20 rows of `lib….so` under one new `curl`). They are part of that
//! one novelty: read-only opens of non-credential system files ([`SYSTEM_DIRS`]) by the process,
//! within [`LOAD_WINDOW_NANOS`] of its exec, are learnt (so later runs know them) and not
//! reported.
//!
//! Bounded by time (a tool that reads a file after its first moments is judged as usual), by
//! kind (reads only of system files: a write, a credential store, the workspace or a home
//! directory, an exec or a connect is judged as usual), by count ([`MAX_FOLDED`] reads per
//! process) and in memory ([`MAX_LOADING`] processes per run, oldest forgotten first).

use std::collections::VecDeque;

use crate::behaviour::Behaviour;
use crate::event::OpenIntent;

use super::severity::{SecretPaths, is_credential_access};

/// How long after its exec a new executable's reads are part of its loading.
pub const LOAD_WINDOW_NANOS: i64 = 2_000_000_000;
/// New executables followed at once per run.
pub const MAX_LOADING: usize = 64;
/// Reads folded per process: a tool that reads more than a loader does is judged on the rest.
pub const MAX_FOLDED: u32 = 256;
/// Where what a program loads lives: libraries, `ld.so.cache`, locale, system configuration,
/// procfs and sysfs. Not home directories, workspaces or temporary directories.
pub const SYSTEM_DIRS: &[&str] = &[
    "/etc/", "/usr/", "/lib/", "/lib64/", "/lib32/", "/opt/", "/proc/", "/sys/", "/dev/",
];

/// New executables of one run still in their loading window.
#[derive(Debug, Default)]
pub(crate) struct Loading {
    /// `(pid, exec time in ns, reads folded)`, oldest first.
    started: VecDeque<(u32, i64, u32)>,
    /// Reads folded into their executable's novelty so far.
    pub folded: u64,
}

impl Loading {
    /// Process `pid` exec'd an executable the baseline does not know, at `now`.
    pub fn started(&mut self, pid: u32, now: i64) {
        self.started.retain(|(p, _, _)| *p != pid);
        if self.started.len() >= MAX_LOADING {
            self.started.pop_front();
        }
        self.started.push_back((pid, now, 0));
    }

    /// Whether the new `behaviour` of process `pid` at `now` is part of its executable's
    /// loading (see the module documentation); counts it when it is.
    pub fn folds(
        &mut self,
        pid: u32,
        now: i64,
        behaviour: &Behaviour,
        secrets: &SecretPaths,
    ) -> bool {
        let Behaviour::File { path, intent } = behaviour else {
            return false;
        };
        let kind = *intent == OpenIntent::READ_ONLY
            && SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
            && !is_credential_access(behaviour, secrets);
        if !kind {
            return false;
        }
        let Some((_, _, folded)) = self.started.iter_mut().find(|(p, t, folded)| {
            *p == pid && (0..=LOAD_WINDOW_NANOS).contains(&(now - t)) && *folded < MAX_FOLDED
        }) else {
            return false;
        };
        *folded += 1;
        self.folded += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, intent: &str) -> Behaviour {
        Behaviour::File {
            path: path.to_owned(),
            intent: intent.parse().expect("intent"),
        }
    }

    #[test]
    fn reads_of_a_loading_executable_fold_until_the_window_ends() {
        let secrets = SecretPaths::default();
        let mut l = Loading::default();
        let lib = file("/usr/lib/x86_64-linux-gnu/libcurl.so.4", "read");
        assert!(!l.folds(7, 0, &lib, &secrets), "not a new executable");
        l.started(7, 1_000);
        assert!(l.folds(7, 1_000, &lib, &secrets));
        assert!(l.folds(7, 1_000 + LOAD_WINDOW_NANOS, &lib, &secrets));
        assert!(
            !l.folds(7, 1_001 + LOAD_WINDOW_NANOS, &lib, &secrets),
            "too late"
        );
        assert!(!l.folds(8, 1_000, &lib, &secrets), "another process");
        assert_eq!(l.folded, 2);
    }

    #[test]
    fn writes_secrets_and_other_kinds_are_never_folded() {
        let secrets = SecretPaths::default();
        let mut l = Loading::default();
        l.started(7, 0);
        for b in [
            file("/home/u/.ssh/id_rsa", "read"),
            file("/home/u/.aws/credentials", "read"),
            file("/etc/ld.so.preload", "read|write"),
            file("/tmp/out", "write|create|truncate"),
            file("/home/runner/work/app/src/main.rs", "read"),
            file("/tmp/payload.bin", "read"),
            file("/etc/shadow", "read"),
            Behaviour::Executable("/usr/bin/curl".into()),
            Behaviour::DnsName("example.com".into()),
        ] {
            assert!(!l.folds(7, 1, &b, &secrets), "{b:?}");
        }
    }

    #[test]
    fn bounded() {
        let mut l = Loading::default();
        for pid in 0..(MAX_LOADING as u32 + 10) {
            l.started(pid, 0);
        }
        assert_eq!(l.started.len(), MAX_LOADING);
        let lib = file("/lib/libc.so.6", "read");
        assert!(!l.folds(0, 1, &lib, &SecretPaths::default()), "forgotten");
        let last = MAX_LOADING as u32 + 9;
        for _ in 0..MAX_FOLDED {
            assert!(l.folds(last, 1, &lib, &SecretPaths::default()));
        }
        assert!(
            !l.folds(last, 1, &lib, &SecretPaths::default()),
            "past MAX_FOLDED"
        );
    }
}
