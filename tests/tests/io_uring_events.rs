//! Issue 12: io_uring is visible. A real program opens a file and connects through a ring (no
//! `openat` or `connect` syscall); the sensor reports the ring's setup, each request kind with
//! its file name or address, and the connect itself (the cgroup connect hook sees it too).

use std::net::TcpListener;
use std::process::Command;

use sensor_user::event::{ConnectResult, EventKind, IoUringUse, Protocol};
use tests::{KernelHarness, run};

const HOOKS_ACTOR: &str = env!("CARGO_BIN_EXE_hooks_actor");

fn attached_or_skip(k: &KernelHarness) -> bool {
    let ok = k.attached.contains(&"io_uring_submit");
    if !ok {
        eprintln!("skipped: this kernel has no io_uring_submit_req BTF tracepoint");
    }
    ok
}

#[test]
fn open_through_io_uring_is_reported_with_its_file_name() {
    let k = KernelHarness::shared();
    if !attached_or_skip(&k) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring-opened");
    std::fs::write(&path, b"x").unwrap();
    let path = path.to_str().unwrap().to_owned();
    let pid = run(Command::new(HOOKS_ACTOR).args(["uring-open", &path]));
    k.expect("io_uring setup", |e| {
        e.pid == pid && matches!(e.kind, EventKind::IoUring(IoUringUse::Setup { .. }))
    });
    let open = k.expect("io_uring openat", |e| {
        e.pid == pid
            && matches!(
                e.kind,
                EventKind::IoUring(IoUringUse::Submit { opcode: 18, .. })
            )
    });
    assert_eq!(
        open.kind,
        EventKind::IoUring(IoUringUse::Submit {
            opcode: 18,
            name: Some(path),
            destination: None
        })
    );
}

#[test]
fn connect_through_io_uring_is_reported_with_its_address() {
    let k = KernelHarness::shared();
    if !attached_or_skip(&k) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pid = run(Command::new(HOOKS_ACTOR).args(["uring-connect", &addr.to_string()]));
    let submit = k.expect("io_uring connect", |e| {
        e.pid == pid
            && matches!(
                e.kind,
                EventKind::IoUring(IoUringUse::Submit { opcode: 16, .. })
            )
    });
    assert_eq!(
        submit.kind,
        EventKind::IoUring(IoUringUse::Submit {
            opcode: 16,
            name: None,
            destination: Some((addr.ip(), addr.port()))
        })
    );
    let connect = k.expect("the connect itself", |e| {
        e.pid == pid && matches!(e.kind, EventKind::Connect { .. })
    });
    assert_eq!(
        connect.kind,
        EventKind::Connect {
            address: addr.ip(),
            port: addr.port(),
            protocol: Protocol::Tcp,
            result: ConnectResult::Connected
        }
    );
}
