//! Privilege events from the real kernel programs, each with its result and the credentials
//! around it.

use std::process::{Child, Command};

use sensor_user::event::{EventKind, PrivilegeOp};
use tests::{KernelHarness, run};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

fn privilege(
    k: &KernelHarness,
    pid: u32,
    what: &str,
    pred: impl Fn(&PrivilegeOp) -> bool,
) -> (PrivilegeOp, i64) {
    let e = k.expect(what, |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Privilege { op, .. } if pred(op))
    });
    match e.kind {
        EventKind::Privilege { op, result, .. } => (op, result),
        _ => unreachable!(),
    }
}

/// A sleeping process to be the target of cross-process operations.
struct Target(Child);
impl Target {
    fn start() -> Target {
        Target(Command::new("/bin/sleep").arg("30").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}
impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn uid_transitions_with_before_and_after() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).args(["seteuid-and-back", "65534"]));
    let e = k.expect("setresuid to nobody", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Privilege { op: PrivilegeOp::SetIds { ids, .. }, .. } if ids.get(1) == Some(&65534))
    });
    assert_eq!(
        e.euid, 65534,
        "the header carries the credentials after the call"
    );
    assert!(
        matches!(
            e.kind,
            EventKind::Privilege {
                result: 0,
                euid_before: 0,
                op: PrivilegeOp::SetIds {
                    syscall: "setresuid",
                    ..
                },
                ..
            }
        ),
        "{e:?}"
    );
    let back = k.expect("setresuid back", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Privilege { op: PrivilegeOp::SetIds { ids, .. }, .. } if ids.get(1) == Some(&0))
    });
    assert_eq!(back.euid, 0);
}

#[test]
fn capset() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).arg("capset"));
    let (_, result) = privilege(&k, pid, "capset", |op| {
        matches!(op, PrivilegeOp::Capset { .. })
    });
    assert_eq!(result, 0);
}

#[test]
fn ptrace_attach_names_the_target() {
    let k = KernelHarness::shared();
    let target = Target::start();
    let pid = run(Command::new(ACTOR).args(["ptrace", &target.pid().to_string()]));
    let (op, result) = privilege(&k, pid, "ptrace attach", |op| {
        matches!(op, PrivilegeOp::PtraceAttach { .. })
    });
    assert_eq!(
        op,
        PrivilegeOp::PtraceAttach {
            target_pid: target.pid()
        }
    );
    assert_eq!(result, 0);
}

#[test]
fn process_vm_readv_names_the_target() {
    let k = KernelHarness::shared();
    let target = Target::start();
    let pid = run(Command::new(ACTOR).args(["vm-read", &target.pid().to_string()]));
    let (op, result) = privilege(&k, pid, "process_vm_readv", |op| {
        matches!(op, PrivilegeOp::ReadProcessMemory { .. })
    });
    assert_eq!(
        op,
        PrivilegeOp::ReadProcessMemory {
            target_pid: target.pid()
        }
    );
    assert_eq!(result, 8, "bytes read");
}

#[test]
fn reading_another_process_environ_is_an_open_of_its_proc_file() {
    let k = KernelHarness::shared();
    let target = Target::start();
    let environ = format!("/proc/{}/environ", target.pid());
    let pid = run(Command::new(ACTOR).args(["read", &environ]));
    k.expect("open of environ", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if *path == environ)
    });
}

#[test]
fn bpf_program_load() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).arg("bpf-load"));
    let (op, result) = privilege(&k, pid, "bpf prog load", |op| {
        matches!(op, PrivilegeOp::BpfProgramLoad { .. })
    });
    assert_eq!(op, PrivilegeOp::BpfProgramLoad { program_type: 1 });
    assert!(result >= 0, "an fd: {result}");
}

#[test]
fn mount_and_umount() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    let pid = run(Command::new(ACTOR).args(["mount-tmpfs", &target]));
    let (op, result) = privilege(&k, pid, "mount", |op| {
        matches!(op, PrivilegeOp::Mount { .. })
    });
    assert_eq!(
        op,
        PrivilegeOp::Mount {
            source: "sensor-test".into(),
            target: target.clone(),
            fstype: "tmpfs".into(),
            flags: 0
        }
    );
    assert_eq!(result, 0);
    let (op, _) = privilege(&k, pid, "umount", |op| {
        matches!(op, PrivilegeOp::Umount { .. })
    });
    assert_eq!(op, PrivilegeOp::Umount { target });
}

#[test]
fn namespace_changes() {
    let k = KernelHarness::shared();
    let pid = run(Command::new(ACTOR).arg("unshare-uts"));
    let (op, result) = privilege(&k, pid, "unshare", |op| {
        matches!(op, PrivilegeOp::Unshare { .. })
    });
    assert_eq!(
        op,
        PrivilegeOp::Unshare {
            flags: libc::CLONE_NEWUTS as u64
        }
    );
    assert_eq!(result, 0);
    let pid = run(Command::new(ACTOR).arg("setns-own-uts"));
    let (op, _) = privilege(&k, pid, "setns", |op| {
        matches!(op, PrivilegeOp::Setns { .. })
    });
    assert_eq!(
        op,
        PrivilegeOp::Setns {
            nstype: libc::CLONE_NEWUTS as u64
        }
    );
}

#[test]
fn setuid_binary_exec_shows_euid_change() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    // A copy of `id` owned by nobody with the setuid bit: run as root, it gets euid 65534.
    let bin = dir.path().join("suid-id");
    std::fs::copy("/usr/bin/id", &bin).unwrap();
    std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let pid = run(Command::new(&bin).stdout(std::process::Stdio::null()));
    let e = k.expect("exec of the setuid copy", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Exec { .. })
    });
    assert_eq!((e.uid, e.euid), (0, 65534));
}
