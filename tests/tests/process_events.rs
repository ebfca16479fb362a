//! Process events from the real kernel programs: exec (path, argv, cwd, script, fileless), fork,
//! exit. Each test spawns a process that does one thing and waits for its event by pid.

use std::process::Command;

use sensor_user::event::EventKind;
use tests::{KernelHarness, run};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");
#[test]
fn exec_has_pid_ppid_path_and_argv() {
    let k = KernelHarness::shared();
    let pid = run(Command::new("/bin/echo").args(["hello", "sensor"]));
    let e = k.expect("exec of echo", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Exec { .. })
    });
    assert_eq!(e.ppid, std::process::id());
    let EventKind::Exec {
        executable,
        argv,
        argv_truncated,
        ..
    } = e.kind
    else {
        unreachable!()
    };
    // /bin is a symlink to /usr/bin on Debian: the kernel's path is the resolved one.
    let expected = std::fs::canonicalize("/bin/echo").unwrap();
    assert_eq!(executable, expected.to_str().unwrap());
    assert_eq!(argv, ["/bin/echo", "hello", "sensor"]);
    assert!(!argv_truncated);
}

#[test]
fn long_argv_is_cut_and_marked() {
    let k = KernelHarness::shared();
    let long = "x".repeat(3000);
    let pid = run(Command::new("/bin/true").arg(&long));
    let e = k.expect("exec of true", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Exec { .. })
    });
    let EventKind::Exec {
        argv,
        argv_truncated,
        ..
    } = e.kind
    else {
        unreachable!()
    };
    assert!(argv_truncated);
    assert_eq!(argv[0], "/bin/true");
    assert!(argv[1].len() < 3000 && argv[1].chars().all(|c| c == 'x'));
}

#[test]
fn fork_and_exit_code() {
    let k = KernelHarness::shared();
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let fork = k.expect(
        "fork of the shell",
        |e| matches!(e.kind, EventKind::Fork { child_pid } if child_pid == pid),
    );
    assert_eq!(fork.pid, std::process::id());
    let exit = k.expect("exit of the shell", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Exit { .. })
    });
    assert!(
        matches!(exit.kind, EventKind::Exit { exit_code } if exit_code >> 8 == 7),
        "{exit:?}"
    );
}

#[test]
fn exec_in_a_new_cgroup_carries_its_id() {
    let k = KernelHarness::shared();
    let root = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if root.join("cgroup.procs").exists() {
        root
    } else {
        std::path::Path::new("/sys/fs/cgroup")
    };
    let cg = root.join(format!("sensor-test-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
    // The child moves itself into the cgroup, then execs.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true in-cgroup",
        cg.display()
    );
    let pid = run(Command::new("/bin/sh").args(["-c", &script]));
    let e = k.expect("exec in cgroup", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Exec { argv, .. } if argv.len() == 2)
    });
    assert_eq!(e.cgroup_id, id);
    let _ = std::fs::remove_dir(&cg);
}

#[test]
fn exec_records_cwd_and_script_behind_interpreter() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pid = run(Command::new("./job.sh").current_dir(&dir));
    let e = k.expect("exec of the script", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Exec { .. })
    });
    let EventKind::Exec {
        executable,
        cwd,
        script: seen,
        file,
        ..
    } = e.kind
    else {
        unreachable!()
    };
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(cwd, dir.to_str().unwrap());
    assert_eq!(seen.as_deref(), Some(dir.join("job.sh").to_str().unwrap()));
    // The mapped file is the interpreter.
    assert_eq!(
        executable,
        std::fs::canonicalize("/bin/sh").unwrap().to_str().unwrap()
    );
    let meta = std::fs::metadata(&executable).unwrap();
    assert_eq!(file.ino, std::os::unix::fs::MetadataExt::ino(&meta));
    assert!(!file.fileless());
}

#[test]
fn memfd_exec_is_fileless() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).args(["memfd-exec", "/bin/true"]));
    // The actor's own exec comes first; then it re-executes itself from the memfd.
    let e = k.expect("exec from memfd", |e| e.pid == pid && matches!(&e.kind, EventKind::Exec { argv, .. } if argv.first().is_some_and(|a| a == "payload")));
    let EventKind::Exec {
        executable, file, ..
    } = e.kind
    else {
        unreachable!()
    };
    assert!(executable.starts_with("memfd:payload"), "{executable}");
    assert!(file.fileless());
}

#[test]
fn renamed_argv0_and_comm_do_not_hide_the_executable() {
    let k = KernelHarness::shared();
    let pid = run(Command::new("/bin/bash").args(["-c", "exec -a sshd /bin/sleep 0"]));
    let e = k.expect("exec of sleep", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Exec { argv, .. } if argv[0] == "sshd")
    });
    let EventKind::Exec { executable, .. } = e.kind else {
        unreachable!()
    };
    assert_eq!(
        executable,
        std::fs::canonicalize("/bin/sleep")
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[test]
fn cleared_environment_is_seen_as_empty() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR)
        .args(["exec-clean-env", "/bin/true"])
        .env("GITHUB_JOB", "x"));
    let e = k.expect("exec with no env", |e| e.pid == pid && matches!(&e.kind, EventKind::Exec { executable, .. } if executable.ends_with("/true")));
    assert!(matches!(e.kind, EventKind::Exec { env, .. } if env.is_empty()));
}
