//! Attributor scenarios driven by synthetic events (no root, no real /proc or cgroupfs).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use super::*;
use crate::event::{EventKind, OpenIntent};

const GITHUB: &[&str] = &[
    "GITHUB_REPOSITORY=acme/app",
    "GITHUB_WORKFLOW=ci",
    "GITHUB_JOB=build",
    "GITHUB_RUN_ID=42",
    "GITHUB_RUN_ATTEMPT=2",
];

struct Fixture {
    _root: tempfile::TempDir,
    attributor: Attributor,
    /// cgroup id of `/system.slice/runner.service`.
    runner_cgroup: u64,
    clock: u64,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let unit = root.path().join("system.slice/runner.service");
        std::fs::create_dir_all(&unit).expect("mkdir");
        let runner_cgroup = std::fs::metadata(&unit).expect("stat").ino();
        Fixture {
            attributor: Attributor::new(root.path()),
            _root: root,
            runner_cgroup,
            clock: 0,
        }
    }

    fn event(&mut self, pid: u32, ppid: u32, kind: EventKind) -> Attributed {
        self.clock += 1;
        self.attributor.attribute(Event {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + self.clock),
            pid,
            tid: pid,
            ppid,
            uid: 1000,
            euid: 1000,
            cgroup_id: self.runner_cgroup,
            kind,
        })
    }

    fn fork(&mut self, parent: u32, child: u32) -> Attributed {
        let grandparent = self.attributor.processes.get(parent).map_or(1, |e| e.ppid);
        self.event(parent, grandparent, EventKind::Fork { child_pid: child })
    }

    fn exec(&mut self, pid: u32, ppid: u32, exe: &str, env: &[&str]) -> Attributed {
        self.event(pid, ppid, exec(exe, env))
    }

    fn open(&mut self, pid: u32, ppid: u32) -> Attributed {
        let kind = EventKind::Open {
            path: "/etc/hosts".into(),
            intent: OpenIntent {
                read: true,
                ..Default::default()
            },
            file: Default::default(),
        };
        self.event(pid, ppid, kind)
    }
}

fn exec(exe: &str, env: &[&str]) -> EventKind {
    EventKind::Exec {
        executable: exe.into(),
        argv: vec![exe.into(), "-x".into()],
        argv_truncated: false,
        env: env.iter().map(|s| s.to_string()).collect(),
        env_truncated: false,
        cwd: "/".into(),
        script: None,
        file: Default::default(),
    }
}

#[test]
fn plain_process_gets_its_cgroup_workload() {
    let mut f = Fixture::new();
    let a = f.exec(10, 1, "/usr/bin/runner", &["PATH=/bin"]);
    assert_eq!(a.workload.id, "unit:runner.service");
    assert_eq!(a.workload.kind, WorkloadKind::SystemdUnit);
    assert_eq!(a.process.executable, "/usr/bin/runner");
    assert_eq!(a.process.argv, ["/usr/bin/runner", "-x"]);
    assert_eq!(a.process.uid, 1000);
}

#[test]
fn github_job_root_and_descendants_even_after_clearing_env() {
    let mut f = Fixture::new();
    f.exec(10, 1, "/usr/bin/runner", &[]);
    f.fork(10, 11);
    let root = f.exec(11, 10, "/bin/bash", GITHUB);
    assert_eq!(root.workload.id, "github:acme/app/ci/build");
    assert_eq!(root.workload.kind, WorkloadKind::GithubJob);
    assert_eq!(root.workload.run_id.as_deref(), Some("42.2"));
    assert_eq!(
        root.process.parent_executable.as_deref(),
        Some("/usr/bin/runner")
    );

    // The runner itself stays in its unit.
    assert_eq!(f.open(10, 1).workload.id, "unit:runner.service");

    // A grandchild that clears its environment (env -i) stays in the job.
    f.fork(11, 12);
    let child = f.exec(12, 11, "/usr/bin/env", &[]);
    assert_eq!(child.workload.id, "github:acme/app/ci/build");
    assert_eq!(child.workload.run_id.as_deref(), Some("42.2"));
    f.fork(12, 13);
    let grandchild = f.exec(13, 12, "/usr/bin/curl", &["GITHUB_JOB=other"]);
    assert_eq!(grandchild.workload.id, "github:acme/app/ci/build");
    assert_eq!(
        grandchild.process.ancestry,
        [
            (12, "/usr/bin/env".to_owned()),
            (11, "/bin/bash".to_owned()),
            (10, "/usr/bin/runner".to_owned()),
        ]
    );
    // Non-exec events of a descendant too.
    assert_eq!(f.open(13, 12).workload.id, "github:acme/app/ci/build");
}

#[test]
fn gitlab_job() {
    let mut f = Fixture::new();
    let env = [
        "CI_PROJECT_PATH=grp/proj",
        "CI_JOB_NAME=test",
        "CI_JOB_ID=77",
    ];
    let a = f.exec(20, 1, "/bin/sh", &env);
    assert_eq!(a.workload.id, "gitlab:grp/proj/test");
    assert_eq!(a.workload.kind, WorkloadKind::GitlabJob);
    assert_eq!(a.workload.run_id.as_deref(), Some("77"));
}

#[test]
fn a_job_inside_a_job_is_a_claim_not_a_new_job() {
    let mut f = Fixture::new();
    f.exec(30, 1, "/bin/bash", GITHUB);
    f.fork(30, 31);
    let nested_env = [
        "GITHUB_REPOSITORY=acme/inner",
        "GITHUB_WORKFLOW=w",
        "GITHUB_JOB=j",
        "GITHUB_RUN_ID=9",
    ];
    let nested = f.exec(31, 30, "/usr/bin/act", &nested_env);
    assert_eq!(nested.workload.id, "github:acme/app/ci/build");
    assert_eq!(nested.workload.run_id.as_deref(), Some("42.2"));
    let claim = nested.context.identity_claim.expect("claim flagged");
    assert_eq!(claim.claimed.id, "github:acme/inner/w/j");
    assert_eq!(claim.claimed.run_id.as_deref(), Some("9"));
    assert_eq!(claim.source, ClaimSource::CiEnvironment);
    // Its descendants inherit the claiming environment: same job, the claim is not repeated.
    f.fork(31, 32);
    let child = f.exec(32, 31, "/bin/true", &nested_env);
    assert_eq!(child.workload.id, "github:acme/app/ci/build");
    assert_eq!(child.context.identity_claim, None);
    // Re-exec with the same set as the inherited job keeps it, unflagged.
    f.fork(30, 33);
    let same = f.exec(33, 30, "/bin/ls", GITHUB);
    assert_eq!(same.workload.id, "github:acme/app/ci/build");
    assert_eq!(same.context.identity_claim, None);
}

#[test]
fn another_run_id_or_job_name_inside_a_job_is_flagged_once_per_claim() {
    let mut f = Fixture::new();
    f.exec(80, 1, "/bin/bash", GITHUB);
    f.fork(80, 81);
    let mut other_run: Vec<&str> = GITHUB.to_vec();
    other_run[3] = "GITHUB_RUN_ID=7";
    let a = f.exec(81, 80, "/usr/bin/python3", &other_run);
    assert_eq!(
        a.workload.run_id.as_deref(),
        Some("42.2"),
        "stays in its run"
    );
    let claim = a.context.identity_claim.expect("run claim");
    assert_eq!(claim.claimed.id, "github:acme/app/ci/build");
    assert_eq!(claim.claimed.run_id.as_deref(), Some("7.2"));
    // Later events of the claimer are plain job events.
    assert_eq!(f.open(81, 80).context.identity_claim, None);
    // A different claim further down is flagged again.
    f.fork(81, 82);
    let mut other_job = other_run.clone();
    other_job[2] = "GITHUB_JOB=x";
    let b = f.exec(82, 81, "/usr/bin/curl", &other_job);
    assert_eq!(b.workload.id, "github:acme/app/ci/build");
    assert_eq!(
        b.context.identity_claim.map(|c| c.claimed.id),
        Some("github:acme/app/ci/x".to_owned())
    );
}

/// Moves a fixture process's events to the cgroup at `path` (created if needed).
fn cgroup(f: &Fixture, path: &str) -> u64 {
    let dir = f._root.path().join(path.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::metadata(&dir).expect("stat").ino()
}

#[test]
fn leaving_a_unit_or_container_by_oneself_is_a_claim() {
    let mut f = Fixture::new();
    let hex = "ab".repeat(32);
    let ctr = cgroup(&f, &format!("/machine.slice/libpod-{hex}.scope"));
    let evil = cgroup(&f, "/evil");
    let other = cgroup(&f, "/system.slice/other.service");
    let unit = f.runner_cgroup;

    // A unit's process moving itself into a fresh cgroup stays in the unit, flagged once.
    f.exec(90, 5, "/usr/bin/web", &[]);
    f.runner_cgroup = evil;
    let moved = f.open(90, 5);
    assert_eq!(moved.workload.id, "unit:runner.service");
    let claim = moved.context.identity_claim.expect("cgroup claim");
    assert_eq!(claim.claimed.id, "cgroup:/evil");
    assert_eq!(claim.source, ClaimSource::CgroupMove);
    assert_eq!(f.open(90, 5).context.identity_claim, None, "once");
    f.fork(90, 91);
    assert_eq!(
        f.open(91, 90).workload.id,
        "unit:runner.service",
        "child too"
    );

    // Init moving its child into another unit is a move.
    f.runner_cgroup = unit;
    assert_eq!(f.open(92, 1).workload.id, "unit:runner.service");
    f.runner_cgroup = other;
    let placed = f.open(92, 1);
    assert_eq!(placed.workload.id, "unit:other.service");
    assert_eq!(placed.context.identity_claim, None);

    // A runtime placing its child into a container is a move; the container's process cannot
    // leave it afterwards, not even into a unit.
    f.exec(93, 1, "/usr/bin/runc", &[]);
    f.fork(93, 94);
    f.runner_cgroup = ctr;
    let inside = f.exec(94, 93, "/bin/sh", &[]);
    assert_eq!(inside.workload.id, format!("container:{hex}"));
    assert_eq!(inside.context.identity_claim, None);
    f.runner_cgroup = other;
    let escaped = f.open(94, 93);
    assert_eq!(escaped.workload.id, format!("container:{hex}"));
    assert_eq!(
        escaped.context.identity_claim.map(|c| c.claimed.id),
        Some("unit:other.service".to_owned())
    );
}

#[test]
fn starting_a_job_or_leaving_a_plain_cgroup_is_a_handoff_of_the_workload_left() {
    let mut f = Fixture::new();
    let service = cgroup(&f, "/detect-svc");
    let fresh = cgroup(&f, "/detect-svc-2");
    let root = cgroup(&f, "/");

    // A unit's process starting a job: the job is its workload, the unit is left.
    f.exec(10, 1, "/usr/bin/runner", &[]);
    f.fork(10, 11);
    let job = f.exec(11, 10, "/bin/bash", GITHUB);
    assert_eq!(job.workload.id, "github:acme/app/ci/build");
    let handoff = job.context.handoff.expect("handoff from the unit");
    assert_eq!(handoff.from.id, "unit:runner.service");
    assert_eq!(handoff.to.id, "github:acme/app/ci/build");
    assert_eq!(handoff.detail(), "ci-environment:github_job");
    assert_eq!(f.open(11, 10).context.handoff, None, "only at the start");

    // A plain cgroup's process moving itself into another plain cgroup: moved, and a handoff.
    f.runner_cgroup = service;
    f.exec(20, 5, "/usr/sbin/nginx", &[]);
    f.runner_cgroup = fresh;
    let moved = f.open(20, 5);
    assert_eq!(moved.workload.id, "cgroup:/detect-svc-2");
    assert_eq!(moved.context.identity_claim, None);
    let handoff = moved
        .context
        .handoff
        .expect("handoff from the plain cgroup");
    assert_eq!(handoff.from.id, "cgroup:/detect-svc");
    assert_eq!(handoff.detail(), "cgroup-move:cgroup");
    assert_eq!(f.open(20, 5).context.handoff, None, "once");

    // Init placing its child, and anything leaving the shared root, are nobody's handoff.
    f.runner_cgroup = service;
    f.open(30, 1);
    f.runner_cgroup = fresh;
    assert_eq!(f.open(30, 1).context.handoff, None, "init's move");
    f.runner_cgroup = root;
    f.open(40, 5);
    f.runner_cgroup = service;
    assert_eq!(f.open(40, 5).context.handoff, None, "from the root");
    f.runner_cgroup = root;
    f.exec(41, 5, "/usr/bin/harness", &[]);
    assert_eq!(
        f.exec(41, 5, "/bin/bash", GITHUB).context.handoff,
        None,
        "job from the root"
    );
}

#[test]
fn missed_fork_inherits_through_ppid() {
    let mut f = Fixture::new();
    f.exec(40, 1, "/bin/bash", GITHUB);
    // No fork event for 41.
    let a = f.exec(41, 40, "/usr/bin/make", &[]);
    assert_eq!(a.workload.id, "github:acme/app/ci/build");
    assert_eq!(a.process.parent_executable.as_deref(), Some("/bin/bash"));
    // An unknown process with an unknown parent falls back to its cgroup.
    let b = f.open(50, 49);
    assert_eq!(b.workload.id, "unit:runner.service");
    assert_eq!(b.process.executable, "");
    assert!(b.process.ancestry.is_empty());
}

#[test]
fn exited_process_still_attributes_late_events_then_pid_reuse_is_new() {
    let mut f = Fixture::new();
    f.exec(60, 1, "/bin/bash", GITHUB);
    f.event(60, 1, EventKind::Exit { exit_code: 0 });
    assert_eq!(
        f.open(60, 1).workload.id,
        "github:acme/app/ci/build",
        "late event"
    );
    // The pid is reused by a process whose fork was missed: not in the old job.
    let reused = f.exec(60, 1, "/usr/sbin/cron", &[]);
    assert_eq!(reused.workload.id, "unit:runner.service");
}

#[test]
fn fork_copies_parent_image_and_table_is_bounded() {
    let mut f = Fixture::new();
    f.attributor = Attributor::new(f._root.path()).with_max_processes(8);
    f.exec(70, 1, "/bin/bash", &[]);
    let forked = f.fork(70, 71);
    assert_eq!(forked.process.pid, 70);
    let child = f.open(71, 70);
    assert_eq!(child.process.executable, "/bin/bash");
    assert_eq!(child.process.ppid, 70);
    for pid in 100..200 {
        f.fork(70, pid);
        f.event(pid, 70, EventKind::Exit { exit_code: 0 });
    }
    assert!(f.attributor.tracked_processes() <= 8);
    assert_eq!(
        f.open(70, 1).process.executable,
        "/bin/bash",
        "live parent kept"
    );
}

#[test]
fn seeding_from_a_fake_proc_inherits_jobs() {
    let proc_root = tempfile::tempdir().expect("tempdir");
    let write = |pid: u32, ppid: u32, exe: &str, env: &[u8]| {
        let dir = proc_root.path().join(pid.to_string());
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("stat"), format!("{pid} (x) S {ppid} 0 0")).expect("write");
        std::fs::write(dir.join("status"), "Uid:\t0\t0\t0\t0\n").expect("write");
        std::fs::write(dir.join("cmdline"), format!("{exe}\0")).expect("write");
        std::fs::write(dir.join("environ"), env).expect("write");
        std::os::unix::fs::symlink(exe, dir.join("exe")).expect("symlink");
    };
    write(1, 0, "/sbin/init", b"");
    write(2, 1, "/usr/bin/runner", b"");
    write(3, 2, "/bin/bash", GITHUB.join("\0").as_bytes());
    write(4, 3, "/usr/bin/env", b"");
    write(5, 4, "/usr/bin/python3", b"");

    let mut f = Fixture::new();
    f.attributor.seed_from_proc_root(proc_root.path());
    assert_eq!(f.attributor.tracked_processes(), 5);
    let a = f.open(5, 4);
    assert_eq!(a.workload.id, "github:acme/app/ci/build");
    assert_eq!(a.process.executable, "/usr/bin/python3");
    let exes: Vec<&str> = a.process.ancestry.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(
        exes,
        ["/usr/bin/env", "/bin/bash", "/usr/bin/runner", "/sbin/init"]
    );
    assert_eq!(f.open(2, 1).workload.id, "unit:runner.service");
}

#[test]
fn in_the_shared_v2_root_the_v1_path_names_the_container() {
    let proc_root = tempfile::tempdir().expect("tempdir");
    let hex = "cd".repeat(32);
    let dir = proc_root.path().join("300");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join("cgroup"),
        format!("4:memory:/docker/{hex}\n1:name=systemd:/docker/{hex}\n0::/\n"),
    )
    .expect("write");
    let mut f = Fixture::new();
    f.runner_cgroup = std::fs::metadata(f._root.path()).expect("stat").ino();
    f.attributor = Attributor::new(f._root.path()).with_proc_root(proc_root.path());
    let a = f.exec(300, 1, "/bin/sh", &[]);
    assert_eq!(a.workload.id, format!("container:{hex}"));
    assert_eq!(a.context.container_id.as_deref(), Some(hex.as_str()));
    // Later events (no /proc read) keep it; a process without v1 cgroups stays in the root.
    assert_eq!(f.open(300, 1).workload.id, format!("container:{hex}"));
    assert_eq!(f.open(301, 1).workload.id, "cgroup:/");
}
