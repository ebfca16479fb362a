//! Real kernel programs, triggered by real processes: each test spawns a process that does one
//! thing and waits for the event with that process's pid and the expected fields.

use std::net::{Ipv6Addr, TcpListener};
use std::process::Command;

use sensor_user::event::{ConnectResult, EventKind, OpenIntent, Protocol};
use tests::KernelHarness;

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
    pid
}

#[test]
fn exec_has_pid_ppid_path_and_argv() {
    let k = KernelHarness::start();
    let pid = run(Command::new("/bin/echo").args(["hello", "sensor"]));
    let e = k.expect("exec of echo", |e| e.pid == pid && matches!(e.kind, EventKind::Exec { .. }));
    assert_eq!(e.ppid, std::process::id());
    let EventKind::Exec { executable, argv, argv_truncated, .. } = e.kind else { unreachable!() };
    // /bin is a symlink to /usr/bin on Debian: the kernel's path is the resolved one.
    let expected = std::fs::canonicalize("/bin/echo").unwrap();
    assert_eq!(executable, expected.to_str().unwrap());
    assert_eq!(argv, ["/bin/echo", "hello", "sensor"]);
    assert!(!argv_truncated);
}

#[test]
fn long_argv_is_cut_and_marked() {
    let k = KernelHarness::start();
    let long = "x".repeat(3000);
    let pid = run(Command::new("/bin/true").arg(&long));
    let e = k.expect("exec of true", |e| e.pid == pid && matches!(e.kind, EventKind::Exec { .. }));
    let EventKind::Exec { argv, argv_truncated, .. } = e.kind else { unreachable!() };
    assert!(argv_truncated);
    assert_eq!(argv[0], "/bin/true");
    assert!(argv[1].len() < 3000 && argv[1].chars().all(|c| c == 'x'));
}

#[test]
fn fork_and_exit_code() {
    let k = KernelHarness::start();
    let mut child = Command::new("/bin/sh").args(["-c", "exit 7"]).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    let fork = k.expect("fork of the shell", |e| matches!(e.kind, EventKind::Fork { child_pid } if child_pid == pid));
    assert_eq!(fork.pid, std::process::id());
    let exit = k.expect("exit of the shell", |e| e.pid == pid && matches!(e.kind, EventKind::Exit { .. }));
    assert!(matches!(exit.kind, EventKind::Exit { exit_code } if exit_code >> 8 == 7), "{exit:?}");
}

#[test]
fn open_create_gives_absolute_path_and_intent() {
    let k = KernelHarness::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // A relative path with `..`, resolved by the kernel against the child's working directory.
    let pid = run(Command::new(ACTOR).args(["open-create", "sub/../created.txt"]).current_dir(&dir));
    let e = k.expect("open of created.txt", |e| e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with("created.txt")));
    let expected = std::fs::canonicalize(dir.path()).unwrap().join("created.txt");
    assert_eq!(
        e.kind,
        EventKind::Open {
            path: expected.to_str().unwrap().to_owned(),
            intent: OpenIntent { write: true, create: true, ..Default::default() }
        }
    );
}

#[test]
fn open_through_symlink_reports_target() {
    let k = KernelHarness::start();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.txt");
    std::fs::write(&target, "x").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link.txt")).unwrap();
    let pid = run(Command::new(ACTOR).args(["read", "link.txt"]).current_dir(&dir));
    let e = k.expect("open through the link", |e| e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with(".txt")));
    let expected = std::fs::canonicalize(&target).unwrap();
    assert!(matches!(&e.kind, EventKind::Open { path, intent } if path == expected.to_str().unwrap() && intent.read && !intent.write), "{e:?}");
}

#[test]
fn tcp_connect_v4_has_address_port_and_result() {
    let k = KernelHarness::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pid = run(Command::new(ACTOR).args(["connect", &format!("127.0.0.1:{port}")]));
    let e = k.expect("connect", |e| e.pid == pid && matches!(e.kind, EventKind::Connect { .. }));
    assert_eq!(
        e.kind,
        EventKind::Connect {
            address: "127.0.0.1".parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            result: ConnectResult::Connected
        }
    );
    drop(listener);
}

#[test]
fn refused_tcp_connect_v6_is_reported_as_failed() {
    let k = KernelHarness::start();
    // Bind then drop to get a port nobody listens on.
    let port = TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap().port();
    let pid = run(Command::new(ACTOR).args(["connect", &format!("[::1]:{port}")]));
    let e = k.expect("connect", |e| e.pid == pid && matches!(e.kind, EventKind::Connect { .. }));
    assert_eq!(
        e.kind,
        EventKind::Connect {
            address: Ipv6Addr::LOCALHOST.into(),
            port,
            protocol: Protocol::Tcp,
            result: ConnectResult::Failed(libc::ECONNREFUSED)
        }
    );
}

#[test]
fn udp_connect_is_udp() {
    let k = KernelHarness::start();
    let pid = run(Command::new(ACTOR).args(["connect-udp", "127.0.0.1:5353"]));
    let e = k.expect("udp connect", |e| e.pid == pid && matches!(e.kind, EventKind::Connect { .. }));
    assert!(matches!(e.kind, EventKind::Connect { protocol: Protocol::Udp, port: 5353, result: ConnectResult::Connected, .. }), "{e:?}");
}

#[test]
fn exec_in_a_new_cgroup_carries_its_id() {
    let k = KernelHarness::start();
    let root = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if root.join("cgroup.procs").exists() { root } else { std::path::Path::new("/sys/fs/cgroup") };
    let cg = root.join(format!("sensor-test-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
    // The child moves itself into the cgroup, then execs.
    let script = format!("echo $$ > {}/cgroup.procs && exec /bin/true in-cgroup", cg.display());
    let pid = run(Command::new("/bin/sh").args(["-c", &script]));
    let e = k.expect("exec in cgroup", |e| e.pid == pid && matches!(&e.kind, EventKind::Exec { argv, .. } if argv.len() == 2));
    assert_eq!(e.cgroup_id, id);
    let _ = std::fs::remove_dir(&cg);
}
