//! Which workload and which process each event belongs to.
//!
//! The [`Attributor`] keeps a process table fed by the events themselves (they arrive in causal
//! order from one ring buffer: a fork before the child's events) and seeded from `/proc` at start.
//! A process belongs to a CI job when it, or an ancestor, exec'd with a complete set of CI
//! variables ([`ci_job_from_env`]) while outside every job; otherwise to the workload of its
//! cgroup ([`workload_for_cgroup_path`]) as its lineage allows. Identities a process claims but
//! its lineage does not give it are flagged on the event ([`Context::identity_claim`], see
//! `lineage`).

mod cgroup;
mod container;
mod container_runtime;
mod context;
mod lineage;
mod process;
mod procfs;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::{Event, EventKind};

pub use cgroup::workload_for_cgroup_path;
pub use container::{ContainerConfig, ContainerNaming};
pub use container_runtime::{ContainerInfo, Source as ContainerSource};
pub use context::Context;
pub use lineage::{ClaimSource, Handoff, IdentityClaim};
pub use process::{DEFAULT_MAX_PROCESSES, EXIT_GRACE, MAX_ANCESTRY, ProcessInfo};
pub use workload::{Workload, WorkloadKind, ci_job_from_env};

use cgroup::{CgroupResolver, unresolved_workload};
use container::ContainerIdentities;
use lineage::{CgroupChange, JobChange, Mover};
use process::{Entry, ProcessTable};

/// An event with the workload and process it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributed {
    pub event: Event,
    /// Shared with the attributor's caches and the process table: an event takes a reference,
    /// not a copy of the workload's id and run.
    pub workload: Arc<Workload>,
    /// Shared by the events of one process while what it shows stays the same (an event keeps
    /// the info as it was at that event).
    pub process: Arc<ProcessInfo>,
    /// What the event means given what came before it (names, drop-and-execute, fileless).
    pub context: Context,
}

/// Attributes events to workloads and processes; see the module documentation.
#[derive(Debug)]
pub struct Attributor {
    cgroups: CgroupResolver,
    containers: ContainerIdentities,
    processes: ProcessTable,
    context: context::ContextTracker,
    /// Where `/proc/<pid>/cgroup` is read for the v1 fallback (`/proc`; a fake tree in tests).
    proc_root: PathBuf,
}

impl Attributor {
    /// `cgroup_root`: the cgroup v2 mount (`/sys/fs/cgroup/unified` on hybrid hosts,
    /// `/sys/fs/cgroup` on pure-v2 hosts). Nothing is read until the first event or seeding.
    pub fn new(cgroup_root: impl Into<PathBuf>) -> Self {
        Attributor {
            cgroups: CgroupResolver::new(cgroup_root.into()),
            containers: ContainerIdentities::new(ContainerConfig::default()),
            processes: ProcessTable::new(DEFAULT_MAX_PROCESSES),
            context: context::ContextTracker::default(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Bounds the process table to `max` processes (default [`DEFAULT_MAX_PROCESSES`]).
    pub fn with_max_processes(mut self, max: usize) -> Self {
        self.processes = ProcessTable::new(max);
        self
    }

    #[cfg(test)]
    pub(crate) fn with_proc_root(mut self, proc_root: &Path) -> Self {
        self.proc_root = proc_root.to_path_buf();
        self
    }

    /// Names containers as `config` says (default: by image, from the runtimes' usual places),
    /// with the lookup worker started now.
    pub fn with_containers(mut self, config: ContainerConfig) -> Self {
        self.containers = ContainerIdentities::new(config).start();
        self
    }

    /// Number of processes in the table (for status).
    pub fn tracked_processes(&self) -> usize {
        self.processes.len()
    }

    /// Seeds the process table from `/proc` with the processes that already run (executable,
    /// argv, ppid, uids, CI job from their environment and their ancestors').
    pub fn seed_from_proc(&mut self) {
        self.seed_from_proc_root(Path::new("/proc"));
    }

    /// [`Self::seed_from_proc`] from another procfs mount (or a fake tree in tests). Processes the
    /// table already knows are left alone.
    pub fn seed_from_proc_root(&mut self, proc_root: &Path) {
        let found = procfs::read_processes(proc_root);
        let by_pid: HashMap<u32, &procfs::ProcProcess> = found.iter().map(|p| (p.pid, p)).collect();
        let mut jobs: HashMap<u32, Option<Workload>> = HashMap::new();
        let now = SystemTime::now();
        for p in &found {
            let job = seeded_job(p.pid, &by_pid, &mut jobs).map(Arc::new);
            if self.processes.get(p.pid).is_some() {
                continue;
            }
            let entry = Entry {
                ppid: p.ppid,
                executable: p.executable.clone(),
                argv: p.argv.clone(),
                argv_truncated: false,
                uid: p.uid,
                euid: p.euid,
                job,
                cgroup: None,
                claim: None,
                exited_at: None,
                last_seen: now,
                shared: None,
            };
            self.processes.insert(p.pid, entry, 0);
        }
        tracing::info!(processes = found.len(), "process table seeded from procfs");
    }

    /// Updates the process table with `event` and returns it in context.
    ///
    /// - Fork: the child gets an entry copied from the parent (executable, argv, job).
    /// - Exec: updates executable and argv; a complete set of CI variables makes a process
    ///   outside every job the root of that job. Inside a job, a set naming another job or run
    ///   changes nothing but is flagged as an identity claim; an incomplete or absent set keeps
    ///   the inherited job.
    /// - Other processes get the workload of their cgroup, as far as their lineage allows (a
    ///   move out of a container or unit by the process itself is a claim: see `lineage`).
    /// - Exit: the process stays for [`EXIT_GRACE`] of event time, so late events still attribute.
    /// - A process the table does not know is created from its parent (`ppid`): inherited job and,
    ///   as a best guess, the parent's executable. An Exec of a pid whose entry already exited is a
    ///   new process (pid reuse after a missed fork) and is treated the same way.
    pub fn attribute(&mut self, event: Event) -> Attributed {
        self.processes.sweep(event.time);
        let mut lineage = self.track(&event);
        let job = self.processes.get(event.pid).and_then(|e| e.job.clone());
        let mut container_id = None;
        let workload = match job {
            Some(job) => job,
            None => {
                let (workload, moved) = self.cgroup_workload(&event);
                // Lineage decides on cgroup workloads (container ids); the name comes after.
                let (workload, id) = self.containers.name(workload);
                container_id = id;
                lineage.claim = lineage.claim.or(moved.claim.map(|mut c| {
                    let named = self.containers.name(Arc::new(c.claimed)).0;
                    c.claimed = Arc::unwrap_or_clone(named);
                    c
                }));
                lineage.handoff = lineage.handoff.or(moved.handoff);
                workload
            }
        };
        let process = self.processes.info(event.pid);
        let mut context = self.context.observe(&event.kind, &workload);
        context.identity_claim = lineage.claim;
        context.handoff = lineage.handoff;
        context.container_id = container_id;
        Attributed {
            event,
            workload,
            process,
            context,
        }
    }

    /// The workload of the cgroup of `event`'s process, as its lineage allows, and the claim
    /// or handoff its move makes, if any. An unresolved cgroup keeps the process where it was.
    fn cgroup_workload(&mut self, event: &Event) -> (Arc<Workload>, LineageChange) {
        let now = match self.cgroups.resolve(event.cgroup_id) {
            Some(root) if cgroup::is_shared_root(&root) => {
                let pinned = self
                    .processes
                    .get(event.pid)
                    .is_some_and(|e| e.cgroup.is_some());
                // Without a v1 answer, a process new to the table starts in the root.
                self.v1_workload(event)
                    .or_else(|| (!pinned).then_some(root))
            }
            other => other,
        };
        let parent_executable = self
            .processes
            .get(event.ppid)
            .filter(|_| event.ppid != event.pid)
            .map(|p| p.executable.as_str());
        let mover = lineage::mover(event.ppid, parent_executable);
        let Some(entry) = self.processes.get_mut(event.pid) else {
            return (
                now.unwrap_or_else(|| Arc::new(unresolved_workload(event.cgroup_id))),
                LineageChange::default(),
            );
        };
        let Some(now) = now else {
            let kept = entry.cgroup.clone();
            return (
                kept.unwrap_or_else(|| Arc::new(unresolved_workload(event.cgroup_id))),
                LineageChange::default(),
            );
        };
        // Borrowed, copied only for a claim: this runs on every event of a cgroup workload.
        let Some(pinned) = &entry.cgroup else {
            entry.cgroup = Some(now.clone());
            return (now, LineageChange::default());
        };
        match lineage::cgroup_change(pinned, &now, mover) {
            CgroupChange::Stay => (now, LineageChange::default()),
            CgroupChange::Move => {
                // Init placing its children is the host's machinery; anyone else leaving a
                // plain cgroup is the workload's own doing.
                let handoff = (pinned.kind == WorkloadKind::Cgroup && mover == Mover::Other)
                    .then(|| Handoff::from_workload(Some(pinned), &now, ClaimSource::CgroupMove))
                    .flatten()
                    .map(Box::new);
                entry.cgroup = Some(now.clone());
                let change = LineageChange {
                    claim: None,
                    handoff,
                };
                (now, change)
            }
            CgroupChange::Claim => {
                let pinned = pinned.clone();
                let claim = new_claim(
                    &mut entry.claim,
                    Arc::unwrap_or_clone(now),
                    ClaimSource::CgroupMove,
                );
                let change = LineageChange {
                    claim,
                    handoff: None,
                };
                (pinned, change)
            }
        }
    }

    /// The v1 fallback, for a process in the cgroup v2 root (a v1-only host, or a hybrid host
    /// whose runtime made no v2 cgroup for its containers: the v2 id is shared by everything).
    /// Its v1 cgroup path names it, read from `/proc/<pid>/cgroup` at its exec or first event
    /// (procfs, a few hundred bytes, never blocks); `None` otherwise, which keeps the workload
    /// its lineage gave it.
    fn v1_workload(&self, event: &Event) -> Option<Arc<Workload>> {
        let known = self
            .processes
            .get(event.pid)
            .is_some_and(|e| e.cgroup.is_some());
        if known && !matches!(event.kind, EventKind::Exec { .. }) {
            return None;
        }
        let path = self.proc_root.join(event.pid.to_string()).join("cgroup");
        let text = procfs::read_small(&path)?;
        Some(Arc::new(cgroup::workload_for_v1_lines(&text)))
    }

    /// Updates the table with `event`; returns the identity its exec claims or the job it
    /// starts, if any.
    fn track(&mut self, event: &Event) -> LineageChange {
        let pid = event.pid;
        let is_exec = matches!(event.kind, EventKind::Exec { .. });
        let known = self
            .processes
            .get(pid)
            .is_some_and(|e| !(is_exec && e.exited_at.is_some()));
        if !known {
            let entry = self.orphan_entry(event);
            self.processes.insert(pid, entry, pid);
        }
        self.processes
            .set_ids(pid, event.ppid, event.uid, event.euid);
        if let EventKind::Exec {
            executable,
            argv,
            argv_truncated,
            ..
        } = &event.kind
        {
            self.processes
                .set_image(pid, executable, argv, *argv_truncated);
        }
        let Some(entry) = self.processes.get_mut(pid) else {
            return LineageChange::default();
        };
        let mut change = LineageChange::default();
        entry.last_seen = event.time;
        let mut child = None;
        match &event.kind {
            EventKind::Exec { env, .. } => {
                match lineage::job_on_exec(entry.job.as_deref(), ci_job_from_env(env)) {
                    JobChange::Keep => {}
                    JobChange::Start(job) => {
                        change.handoff = Handoff::from_workload(
                            entry.cgroup.as_deref(),
                            &job,
                            ClaimSource::CiEnvironment,
                        )
                        .map(Box::new);
                        entry.job = Some(Arc::new(job));
                    }
                    JobChange::Claim(named) => {
                        change.claim =
                            new_claim(&mut entry.claim, named, ClaimSource::CiEnvironment);
                    }
                }
            }
            EventKind::Fork { child_pid } => {
                let entry = Entry {
                    ppid: pid,
                    exited_at: None,
                    ..entry.clone()
                };
                child = Some((*child_pid, entry));
            }
            EventKind::Exit { .. } => entry.exited_at = Some(event.time),
            // Everything else leaves the process table as it is.
            _ => {}
        }
        if let Some((child_pid, entry)) = child {
            self.processes.insert(child_pid, entry, pid);
        }
        change
    }

    /// An entry for a process first seen through `event`, inheriting from its parent if known.
    fn orphan_entry(&self, event: &Event) -> Entry {
        let parent = self
            .processes
            .get(event.ppid)
            .filter(|_| event.ppid != event.pid);
        Entry {
            ppid: event.ppid,
            executable: parent.map(|p| p.executable.clone()).unwrap_or_default(),
            argv: parent.map(|p| p.argv.clone()).unwrap_or_default(),
            argv_truncated: parent.is_some_and(|p| p.argv_truncated),
            uid: event.uid,
            euid: event.euid,
            job: parent.and_then(|p| p.job.clone()),
            cgroup: parent.and_then(|p| p.cgroup.clone()),
            claim: parent.and_then(|p| p.claim.clone()),
            exited_at: None,
            last_seen: event.time,
            shared: None,
        }
    }
}

/// What an event changed in its process's lineage: an identity claimed, or a workload left.
/// Boxed as the event's context holds them: rare, and moved with every event.
#[derive(Debug, Default)]
struct LineageChange {
    claim: Option<Box<IdentityClaim>>,
    handoff: Option<Box<Handoff>>,
}

/// A claim of `claimed` by a process whose lineage last claimed `last`: flagged only when it
/// differs (descendants inheriting the claiming environment or cgroup do not repeat it).
fn new_claim(
    last: &mut Option<Workload>,
    claimed: Workload,
    source: ClaimSource,
) -> Option<Box<IdentityClaim>> {
    if last
        .as_ref()
        .is_some_and(|l| lineage::same_identity(l, &claimed))
    {
        return None;
    }
    *last = Some(claimed.clone());
    Some(Box::new(IdentityClaim { claimed, source }))
}

/// The job of seeded process `pid`: its outermost ancestor's CI job, else its own (memoised).
/// As for live processes, a job inside a job is no new job.
fn seeded_job(
    pid: u32,
    by_pid: &HashMap<u32, &procfs::ProcProcess>,
    memo: &mut HashMap<u32, Option<Workload>>,
) -> Option<Workload> {
    let mut chain = Vec::new();
    let mut inherited = None;
    let mut cur = pid;
    loop {
        if let Some(job) = memo.get(&cur) {
            inherited = job.clone();
            break;
        }
        let Some(p) = by_pid.get(&cur) else { break };
        if chain.contains(&cur) || chain.len() >= by_pid.len() {
            break;
        }
        chain.push(cur);
        if p.ppid == 0 {
            break;
        }
        cur = p.ppid;
    }
    for pid in chain.into_iter().rev() {
        if inherited.is_none() {
            inherited = by_pid.get(&pid).and_then(|p| p.ci_job.clone());
        }
        memo.insert(pid, inherited.clone());
    }
    memo.get(&pid).cloned().flatten()
}
