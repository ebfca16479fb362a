//! What a new executable does as it loads: the dynamic loader opens `ld.so.cache` and the shared
//! libraries, libc the locale and `nsswitch.conf`, the tool its configuration. For a new
//! executable each of those is new too, and reporting each as its own deviation buries the one
//! that matters (issue 14: 20 rows of `lib….so` under one new `curl`). They are part of that
//! one novelty: read-only opens of non-credential system files ([`SYSTEM_DIRS`]) by the process,
//! within [`LOAD_WINDOW_NANOS`] of its exec, are learnt (so later runs know them) and named as
//! evidence on its `new-executable` deviation ([`Loaded`]).
//!
//! The deviation waits for its evidence at most [`HOLD_NANOS`] of event time: it is released
//! when the process exits, when anything of its run is judged (deviations go out in the order
//! of their events, so the story of an incident stays causal), when a later event of its run
//! is past the hold, or by the agent's clock ([`Loading::due`] on a timer), whichever comes
//! first. The process cannot keep it back: nothing it does extends the hold. Reads folded after
//! the release are learnt and counted in [`Loading::folded`] only.
//!
//! Bounded by time (a tool that reads a file after its first moments is judged as usual), by
//! kind (reads only of system files: a write, a credential store, the workspace or a home
//! directory, an exec or a connect is judged as usual), by count ([`MAX_FOLDED`] reads per
//! process, [`MAX_LOADED_PATHS`] of them named) and in memory ([`MAX_LOADING`] processes per
//! run, oldest forgotten first, its held deviation released).

use std::collections::VecDeque;

use proto::contract::MAX_LOADED_PATHS;

use crate::behaviour::Behaviour;
use crate::event::OpenIntent;

use super::finding::Finding;
use super::severity::{SecretPaths, is_sensitive};

/// How long after its exec a new executable's reads are part of its loading.
pub const LOAD_WINDOW_NANOS: i64 = 2_000_000_000;
/// How long (event time) a new executable's deviation waits for its loading evidence. With
/// the agent's one-second timer it goes out at most about two seconds after the exec.
pub const HOLD_NANOS: i64 = 1_000_000_000;
/// New executables followed at once per run.
pub const MAX_LOADING: usize = 64;
/// Reads folded per process: a tool that reads more than a loader does is judged on the rest.
pub const MAX_FOLDED: u32 = 256;
/// Where what a program loads lives: libraries, `ld.so.cache`, locale, system configuration,
/// procfs and sysfs. Not home directories, workspaces or temporary directories.
pub const SYSTEM_DIRS: &[&str] = &[
    "/etc/", "/usr/", "/lib/", "/lib64/", "/lib32/", "/opt/", "/proc/", "/sys/", "/dev/",
];

/// What a new executable read as it loaded, as evidence on its deviation: the first
/// [`MAX_LOADED_PATHS`] distinct paths in the order read, and how many reads in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub paths: Vec<String>,
    pub total: u64,
}

impl Loaded {
    fn add(&mut self, path: &str) {
        self.total += 1;
        if self.paths.len() < MAX_LOADED_PATHS && !self.paths.iter().any(|p| p == path) {
            self.paths.push(path.to_owned());
        }
    }
}

/// One new executable's process in its first moments.
#[derive(Debug)]
struct Process {
    pid: u32,
    /// Exec time, ns since the epoch.
    exec: i64,
    /// Reads folded so far.
    folded: u32,
    loaded: Loaded,
    /// Its new-executable deviation, until its evidence is attached.
    held: Option<Finding>,
}

impl Process {
    /// Its held deviation, with the evidence gathered so far.
    fn release(&mut self) -> Option<Finding> {
        let mut finding = self.held.take()?;
        if self.loaded.total > 0 {
            finding.verdict_mut().loaded = Some(self.loaded.clone());
        }
        Some(finding)
    }
}

/// New executables of one run still in their loading window.
#[derive(Debug, Default)]
pub(crate) struct Loading {
    /// Oldest first.
    started: VecDeque<Process>,
    /// Reads folded into their executable's novelty so far.
    pub folded: u64,
}

impl Loading {
    /// Process `pid` exec'd an executable the baseline does not know, at `now`. A deviation
    /// still held for a process forgotten here is returned, to be sent.
    pub fn started(&mut self, pid: u32, now: i64) -> Vec<Finding> {
        let mut out = self.forget(|p| p.pid == pid);
        if self.started.len() >= MAX_LOADING
            && let Some(mut oldest) = self.started.pop_front()
        {
            out.extend(oldest.release());
        }
        self.started.push_back(Process {
            pid,
            exec: now,
            folded: 0,
            loaded: Loaded::default(),
            held: None,
        });
        out
    }

    /// Whether the new `behaviour` of process `pid` at `now` is part of its executable's
    /// loading (see the module documentation); counts it, and names it as evidence while the
    /// deviation is held, when it is.
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
            // A credential store, another process's environ or mem under /proc: judged as usual.
            && !is_sensitive(behaviour, secrets);
        if !kind {
            return false;
        }
        let Some(p) = self.started.iter_mut().find(|p| {
            p.pid == pid
                && (0..=LOAD_WINDOW_NANOS).contains(&(now - p.exec))
                && p.folded < MAX_FOLDED
        }) else {
            return false;
        };
        p.folded += 1;
        if p.held.is_some() {
            p.loaded.add(path);
        }
        self.folded += 1;
        true
    }

    /// Keeps `finding` back for its loading evidence when it is the new-executable deviation
    /// of a process just started; otherwise hands it back.
    pub fn hold(&mut self, finding: Finding) -> Option<Finding> {
        let Finding::Novel {
            behaviour: Behaviour::Executable(_),
            verdict,
        } = &finding
        else {
            return Some(finding);
        };
        let pid = verdict.event.event.pid;
        match self.started.iter_mut().find(|p| p.pid == pid) {
            Some(p) if p.held.is_none() => {
                p.held = Some(finding);
                None
            }
            _ => Some(finding),
        }
    }

    /// Every held deviation: something else of the run is judged, and deviations go out in
    /// the order of their events.
    pub fn release_all(&mut self) -> Vec<Finding> {
        self.started
            .iter_mut()
            .filter_map(Process::release)
            .collect()
    }

    /// Process `pid` exited: its loading is over; its held deviation is returned.
    pub fn exited(&mut self, pid: u32) -> Vec<Finding> {
        self.forget(|p| p.pid == pid)
    }

    /// Held deviations whose hold ended at `now` (ns since the epoch), or all of them when
    /// `now` is `None`; processes past their loading window are forgotten.
    pub fn due(&mut self, now: Option<i64>) -> Vec<Finding> {
        let mut out = Vec::new();
        for p in &mut self.started {
            if now.is_none_or(|now| now - p.exec >= HOLD_NANOS) {
                out.extend(p.release());
            }
        }
        if let Some(now) = now {
            out.extend(self.forget(|p| now - p.exec > LOAD_WINDOW_NANOS));
        }
        out
    }

    /// Forgets the processes `which` selects; their held deviations are returned.
    fn forget(&mut self, which: impl Fn(&Process) -> bool) -> Vec<Finding> {
        let mut out = Vec::new();
        self.started.retain_mut(|p| {
            if which(p) {
                out.extend(p.release());
                false
            } else {
                true
            }
        });
        out
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
