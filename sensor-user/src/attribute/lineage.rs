//! Identity by lineage: which identities a process may take on, and which it only claims.
//!
//! What a process says about itself (its environment, the cgroup it writes its pid into) is
//! input it controls; what the kernel saw (fork and exec parents, the cgroup a runtime or init
//! placed it in) is not. So:
//!
//! - **Jobs.** Only a process outside every job can start one (the runner starting a step).
//!   Inside a job, a process and all its descendants stay in that job and run whatever their
//!   environment says; an exec whose CI variables name another job or run is an
//!   [`IdentityClaim`] on that event, not a new identity.
//! - **cgroups.** A process keeps the cgroup workload it was born in (inherited at fork) when it
//!   moves to another cgroup, unless the move is one the host's own machinery makes: init
//!   placing its children in their units, a runtime placing a process into a container, logind
//!   placing a login into its session scope, or moves between plain cgroups (no unit, no
//!   container: nothing to escape from). A process inside a container never leaves it; a process
//!   of a unit leaves it only through those movers. Any other move is an [`IdentityClaim`].
//!
//! A claim is flagged once per lineage: descendants that inherit the claiming environment (or
//! cgroup) do not repeat it; a different claim is flagged again.
//!
//! What lineage allows is still something the workload left did: a [`Handoff`] (a job started,
//! a move out of a plain cgroup by anyone but init) is a behaviour of that workload, learnt while
//! it learns and new afterwards. A runner's unit learns that it starts jobs; a service that never
//! did cannot start one, or hop into a fresh cgroup, unnoticed.

use super::workload::{Workload, WorkloadKind};

/// How a process claimed an identity its lineage does not give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimSource {
    /// CI variables in the environment of an exec (`GITHUB_*`, `CI_*`).
    CiEnvironment,
    /// A move into another cgroup.
    CgroupMove,
}

impl ClaimSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimSource::CiEnvironment => "ci-environment",
            ClaimSource::CgroupMove => "cgroup-move",
        }
    }
}

/// An identity a process claimed while its lineage keeps it in another workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityClaim {
    /// The workload (and run) the process claimed to be.
    pub claimed: Workload,
    pub source: ClaimSource,
}

/// A process left workload `from` for workload `to`, as its lineage allows (a job
/// started by a process outside every job, a move out of a plain cgroup). Set on the event at
/// which it happened; detection judges it in `from`'s baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub from: Workload,
    pub to: Workload,
    pub source: ClaimSource,
}

impl Handoff {
    /// The handoff of a process whose cgroup workload is `from` to `to`, when `from` is one
    /// whose baseline should know it. The shared root holds whatever nothing placed (hosts
    /// without systemd, test harnesses, kernel threads): it has no behaviour of its own.
    pub(crate) fn from_workload(
        from: Option<&Workload>,
        to: &Workload,
        source: ClaimSource,
    ) -> Option<Handoff> {
        let from = from.filter(|w| {
            matches!(w.kind, WorkloadKind::Cgroup | WorkloadKind::SystemdUnit)
                && !super::cgroup::is_shared_root(w)
        })?;
        Some(Handoff {
            from: from.clone(),
            to: to.clone(),
            source,
        })
    }

    /// What the workload left learns: how it handed off, and to what kind (`ci-environment:
    /// github_job`, `cgroup-move:cgroup`).
    pub fn detail(&self) -> String {
        let to = match self.to.kind {
            WorkloadKind::Cgroup => "cgroup",
            WorkloadKind::SystemdUnit => "systemd_unit",
            WorkloadKind::Container => "container",
            WorkloadKind::GithubJob => "github_job",
            WorkloadKind::GitlabJob => "gitlab_job",
        };
        format!("{}:{to}", self.source.as_str())
    }
}

/// What the CI variables of an exec do to a process's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobChange {
    /// Nothing: no (complete) CI variables, or the same job and run as its own.
    Keep,
    /// A process outside every job becomes the root of this job.
    Start(Workload),
    /// A process inside a job names another job or run: it stays, the claim is flagged.
    Claim(Workload),
}

/// The job change of an exec by a process in `current` (its job, if any) with the job its
/// environment names (`named`).
pub(crate) fn job_on_exec(current: Option<&Workload>, named: Option<Workload>) -> JobChange {
    match (current, named) {
        (_, None) => JobChange::Keep,
        (None, Some(named)) => JobChange::Start(named),
        (Some(job), Some(named)) if same_identity(job, &named) => JobChange::Keep,
        (Some(_), Some(named)) => JobChange::Claim(named),
    }
}

/// What a change of cgroup does to a process's cgroup workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CgroupChange {
    /// Same workload (or a cgroup not resolved yet): nothing to decide.
    Stay,
    /// A legitimate move: the process now belongs to the new workload.
    Move,
    /// A move the process chose: it stays in its old workload, the claim is flagged.
    Claim,
}

/// Who moved the process, as far as the move rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mover {
    /// Its parent is an init (pid 1, or a systemd manager such as `systemd --user`).
    Init,
    /// Anyone else.
    Other,
}

/// Executables of systemd managers, which place their children in units.
const SYSTEMD_MANAGERS: &[&str] = &["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];

/// Whether a parent (`ppid`, running `parent_executable`) is an init that places its children
/// in cgroups. Executable paths are what the kernel reported at exec, not what a process says.
pub(crate) fn mover(ppid: u32, parent_executable: Option<&str>) -> Mover {
    if ppid <= 1 || parent_executable.is_some_and(|exe| SYSTEMD_MANAGERS.contains(&exe)) {
        Mover::Init
    } else {
        Mover::Other
    }
}

/// The change of a process whose cgroup workload is `pinned` and whose event comes from a
/// cgroup of workload `now`, moved by `mover`.
pub(crate) fn cgroup_change(pinned: &Workload, now: &Workload, mover: Mover) -> CgroupChange {
    if pinned.id == now.id {
        return CgroupChange::Stay;
    }
    let allowed = match pinned.kind {
        // Nothing to escape from: plain cgroups (test harnesses, hosts without systemd).
        WorkloadKind::Cgroup => true,
        // A container's processes never leave it (escaping its cgroup is an escape).
        WorkloadKind::Container => false,
        WorkloadKind::SystemdUnit => {
            mover == Mover::Init || now.kind == WorkloadKind::Container || is_session_scope(now)
        }
        // Jobs are never cgroup workloads; a job's processes keep their job anyway.
        WorkloadKind::GithubJob | WorkloadKind::GitlabJob => true,
    };
    if allowed {
        CgroupChange::Move
    } else {
        CgroupChange::Claim
    }
}

/// `unit:session-<n>.scope`: logind (through pam_systemd) moves logins there from sshd, cron...
fn is_session_scope(w: &Workload) -> bool {
    w.kind == WorkloadKind::SystemdUnit
        && w.id
            .strip_prefix("unit:session-")
            .is_some_and(|rest| rest.ends_with(".scope"))
}

/// Same workload and same run.
pub(crate) fn same_identity(a: &Workload, b: &Workload) -> bool {
    a.id == b.id && a.run_id == b.run_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, run: &str) -> Workload {
        Workload {
            id: id.into(),
            kind: WorkloadKind::GithubJob,
            run_id: Some(run.into()),
        }
    }

    fn w(kind: WorkloadKind, id: &str) -> Workload {
        Workload::new(kind, id.into())
    }

    #[test]
    fn only_a_process_outside_every_job_starts_one() {
        let build = job("github:a/b/c/build", "1");
        assert_eq!(
            job_on_exec(None, Some(build.clone())),
            JobChange::Start(build.clone())
        );
        assert_eq!(job_on_exec(None, None), JobChange::Keep);
        assert_eq!(job_on_exec(Some(&build), None), JobChange::Keep);
        assert_eq!(
            job_on_exec(Some(&build), Some(build.clone())),
            JobChange::Keep
        );
        let other_job = job("github:a/b/c/x", "1");
        assert_eq!(
            job_on_exec(Some(&build), Some(other_job.clone())),
            JobChange::Claim(other_job)
        );
        let other_run = job("github:a/b/c/build", "2");
        assert_eq!(
            job_on_exec(Some(&build), Some(other_run.clone())),
            JobChange::Claim(other_run)
        );
    }

    #[test]
    fn cgroup_moves_table() {
        use CgroupChange::*;
        use WorkloadKind::*;
        let web = w(SystemdUnit, "unit:web.service");
        let other_unit = w(SystemdUnit, "unit:other.service");
        let session = w(SystemdUnit, "unit:session-4.scope");
        let ctr = w(Container, "container:img");
        let ctr2 = w(Container, "container:img2");
        let plain = w(Cgroup, "cgroup:/evil");
        let plain2 = w(Cgroup, "cgroup:/");
        let cases = [
            (&web, &web, Mover::Other, Stay),
            (&web, &other_unit, Mover::Other, Claim),
            (&web, &plain, Mover::Other, Claim),
            (&web, &other_unit, Mover::Init, Move),
            (&web, &ctr, Mover::Other, Move),
            (&web, &session, Mover::Other, Move),
            (&ctr, &ctr2, Mover::Other, Claim),
            (&ctr, &plain, Mover::Init, Claim),
            (&ctr, &web, Mover::Other, Claim),
            (&plain2, &plain, Mover::Other, Move),
            (&plain, &ctr, Mover::Other, Move),
        ];
        for (pinned, now, mover, want) in cases {
            assert_eq!(
                cgroup_change(pinned, now, mover),
                want,
                "{} -> {} by {mover:?}",
                pinned.id,
                now.id
            );
        }
    }

    #[test]
    fn movers() {
        assert_eq!(mover(1, None), Mover::Init);
        assert_eq!(mover(0, None), Mover::Init);
        assert_eq!(mover(900, Some("/usr/lib/systemd/systemd")), Mover::Init);
        assert_eq!(mover(900, Some("/usr/bin/bash")), Mover::Other);
        assert_eq!(mover(900, None), Mover::Other);
        assert!(!is_session_scope(&w(
            WorkloadKind::SystemdUnit,
            "unit:x.scope"
        )));
    }
}
