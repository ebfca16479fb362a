//! File events from the real kernel programs: opens (absolute, resolved paths and intent) and the
//! other file operations, including the adversarial path cases.

use std::process::Command;

use sensor_user::event::{EventKind, FileIdentity, FileOperation, OpenIntent};
use sensor_user::kernel::LoadOptions;
use tests::{KernelHarness, run};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

#[test]
fn open_create_gives_absolute_path_and_intent() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // A relative path with `..`, resolved by the kernel against the child's working directory.
    let pid = run(Command::new(ACTOR)
        .args(["open-create", "sub/../created.txt"])
        .current_dir(&dir));
    let e = k.expect("open of created.txt", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with("created.txt"))
    });
    let expected = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("created.txt");
    assert_eq!(
        e.kind,
        EventKind::Open {
            path: expected.to_str().unwrap().to_owned(),
            intent: OpenIntent {
                write: true,
                create: true,
                ..Default::default()
            },
            file: identity(&expected),
        }
    );
}

/// The file's identity as the kernel keeps it (`s_dev` is `major << 20 | minor`).
fn identity(path: &std::path::Path) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    FileIdentity {
        dev: (libc::major(m.dev()) << 20) | libc::minor(m.dev()),
        ino: m.ino(),
        links: m.nlink() as u32,
    }
}

/// A file read through a hard link made elsewhere carries the original's device and inode, so
/// the agent can tell a credential store read under another name (issue 12).
#[test]
fn open_through_hard_link_carries_device_and_inode() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("secret.key");
    std::fs::write(&original, "x").unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let link = dir.path().join("elsewhere/innocent.txt");
    std::fs::hard_link(&original, &link).unwrap();
    let pid = run(Command::new(ACTOR)
        .args(["read", "elsewhere/innocent.txt"])
        .current_dir(&dir));
    let e = k.expect("open through the hard link", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with("innocent.txt"))
    });
    let EventKind::Open { file, .. } = e.kind else {
        unreachable!()
    };
    assert_eq!(file, identity(&original), "the original's identity");
    assert_eq!(file.links, 2);
    assert_ne!(file.ino, 0);
}

#[test]
fn open_through_symlink_reports_target() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.txt");
    std::fs::write(&target, "x").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link.txt")).unwrap();
    let pid = run(Command::new(ACTOR)
        .args(["read", "link.txt"])
        .current_dir(&dir));
    let e = k.expect("open through the link", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with(".txt"))
    });
    let expected = std::fs::canonicalize(&target).unwrap();
    assert!(
        matches!(&e.kind, EventKind::Open { path, intent, .. } if path == expected.to_str().unwrap() && intent.read && !intent.write),
        "{e:?}"
    );
}

#[test]
fn proc_self_fd_path_is_the_real_file() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("via-fd.txt");
    std::fs::write(&target, "x").unwrap();
    let script = format!("exec 3<{}; exec /bin/cat /proc/self/fd/3", target.display());
    let pid = run(Command::new("/bin/bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null()));
    let expected = std::fs::canonicalize(&target).unwrap();
    // Bash opened the same file as fd 3 before it exec'd cat: cat's open is the one after the
    // exec (events of one process arrive in order).
    k.expect("bash exec'ing cat", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Exec { executable, .. } if executable.ends_with("/cat"))
    });
    k.expect("cat's open through /proc/self/fd", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path, .. } if path == expected.to_str().unwrap())
    });
}

/// Unmounts the tmpfs at its path when dropped, so a failing test leaves no mount behind.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", at.display());
        Self(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn path_crosses_mount_points() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    // Two mounts stacked below the test's directory: the walk climbs out of each through its
    // mount point.
    let outer = Tmpfs::mount(dir.path().join("outer"));
    let inner = Tmpfs::mount(outer.0.join("a/inner"));
    std::fs::create_dir_all(inner.0.join("b")).unwrap();
    let pid = run(Command::new(ACTOR)
        .args(["open-create", "b/in-mount.txt"])
        .current_dir(&inner.0));
    let expected = std::fs::canonicalize(inner.0.join("b/in-mount.txt")).unwrap();
    k.expect("open of in-mount.txt", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path, .. } if path == expected.to_str().unwrap())
    });
    drop(inner);
}

#[test]
fn very_deep_path_is_marked_cut() {
    let k = KernelHarness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    for i in 0..60 {
        deep.push(format!("d{i:02}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let pid = run(Command::new(ACTOR)
        .args(["open-create", "leaf.txt"])
        .current_dir(&deep));
    let e = k.expect("open of leaf.txt", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path, .. } if path.ends_with("leaf.txt"))
    });
    let EventKind::Open { path, .. } = e.kind else {
        unreachable!()
    };
    assert!(path.starts_with("..."), "cut paths are marked: {path}");
    assert!(path.ends_with("/d59/leaf.txt"));
}

fn file_op(k: &KernelHarness, args: &[&str], dir: &std::path::Path) -> FileOperation {
    let pid = run(Command::new(ACTOR).args(args).current_dir(dir));
    match k
        .expect(args[0], |e| {
            e.pid == pid && matches!(e.kind, EventKind::FileOp(_))
        })
        .kind
    {
        EventKind::FileOp(op) => op,
        _ => unreachable!(),
    }
}

#[test]
fn file_operations_resolve_relative_names() {
    let k = KernelHarness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(tmp.path()).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    std::fs::write(d.join("a"), "x").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();

    assert_eq!(
        file_op(&k, &["rename", "a", "sub/../b"], &d),
        FileOperation::Rename {
            from: p("a"),
            to: p("b")
        }
    );
    assert_eq!(
        file_op(&k, &["link", "b", "c"], &d),
        FileOperation::Link {
            existing: p("b"),
            new: p("c")
        }
    );
    assert_eq!(
        file_op(&k, &["symlink", "../elsewhere", "s"], &d),
        FileOperation::Symlink {
            target: "../elsewhere".into(),
            link: p("s")
        }
    );
    assert_eq!(
        file_op(&k, &["chmod", "b", "4755"], &d),
        FileOperation::Chmod {
            path: p("b"),
            mode: 0o4755
        }
    );
    assert_eq!(
        file_op(&k, &["chown", "b", "65534", "-1"], &d),
        FileOperation::Chown {
            path: p("b"),
            uid: Some(65534),
            gid: None
        }
    );
    assert_eq!(
        file_op(&k, &["truncate", "b", "0"], &d),
        FileOperation::Truncate {
            path: p("b"),
            length: 0
        }
    );
    assert_eq!(
        file_op(&k, &["mkdir", "newdir"], &d),
        FileOperation::Mkdir {
            path: p("newdir"),
            mode: 0o755
        }
    );
    assert_eq!(
        file_op(&k, &["unlink", "c"], &d),
        FileOperation::Unlink { path: p("c") }
    );
}

/// Opens `x` three times then `sentinel` once from one process; returns how many opens of `x`
/// reached userspace (events of one process arrive in order, so the sentinel closes the count).
fn opens_of_repeated_file(k: &KernelHarness) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(d.join("x"), "x").unwrap();
    std::fs::write(d.join("sentinel"), "s").unwrap();
    let pid = run(Command::new(ACTOR)
        .args(["read", "x", "x", "x", "sentinel"])
        .current_dir(&d));
    let sentinel = d.join("sentinel");
    let x = d.join("x");
    let events = k.collect_until("open of the sentinel", |e| {
        e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if std::path::Path::new(path) == sentinel)
    });
    events
        .iter()
        .filter(|e| e.pid == pid && matches!(&e.kind, EventKind::Open { path, .. } if std::path::Path::new(path) == x))
        .count()
}

#[test]
fn repeats_are_filtered_in_the_kernel() {
    let k = KernelHarness::shared();
    assert_eq!(
        opens_of_repeated_file(&k),
        1,
        "only the first open of a file per process image"
    );
}

#[test]
fn without_the_filter_every_open_arrives() {
    let k = KernelHarness::start_with(LoadOptions {
        filter_repeats: false,
        ..LoadOptions::default()
    });
    assert_eq!(opens_of_repeated_file(&k), 3);
}

/// Runs each open-family syscall with creation flags and checks path and intent: the flags
/// travel from the call (O_CREAT/O_TRUNC are gone from the opened file by then).
fn every_open_syscall_reports_create_intent(k: &KernelHarness) {
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    for (how, name, truncate) in [
        ("open-create", "by-open", false),
        ("creat", "by-creat", true),
        ("openat2-create", "by-openat2", true),
    ] {
        let pid = run(Command::new(ACTOR).args([how, name]).current_dir(&d));
        let path = d.join(name);
        let e = k.expect(how, |e| {
            e.pid == pid && matches!(&e.kind, EventKind::Open { path: p, .. } if std::path::Path::new(p) == path)
        });
        let EventKind::Open { intent, .. } = e.kind else {
            unreachable!()
        };
        assert!(intent.write && intent.create, "{how}: {intent:?}");
        assert_eq!(intent.truncate, truncate, "{how}: {intent:?}");
    }
    // And a plain read still reports read intent (flags read back from the opened file).
    let pid = run(Command::new(ACTOR)
        .args(["read", "by-open"])
        .current_dir(&d));
    let path = d.join("by-open");
    let e = k.expect("read", |e| {
        e.pid == pid
            && matches!(&e.kind, EventKind::Open { path: p, .. } if std::path::Path::new(p) == path)
    });
    assert!(
        matches!(e.kind, EventKind::Open { intent, .. } if intent.read && !intent.write && !intent.create)
    );
}

/// Issue 13: by default no program runs on every syscall; opens use their own tracepoints, on
/// x86_64 their exits alone (the flags come from the saved registers).
#[test]
fn open_tracepoints_are_the_default_and_see_every_open_syscall() {
    let k = KernelHarness::shared();
    assert!(k.attached.contains(&"open_exit_regs"), "{:?}", k.attached);
    assert!(!k.attached.contains(&"file_openat"), "{:?}", k.attached);
    assert!(!k.attached.contains(&"file_sys_exit"), "{:?}", k.attached);
    every_open_syscall_reports_create_intent(&k);
}

/// The entry and exit pair other architectures use, forced here: the same opens, same intents.
#[test]
fn open_tracepoint_pair_when_asked_for_sees_every_open_syscall() {
    let k = KernelHarness::start_with(LoadOptions {
        open_hook: sensor_user::kernel::OpenHook::TracepointPair,
        ..LoadOptions::default()
    });
    assert!(k.attached.contains(&"file_openat"), "{:?}", k.attached);
    assert!(k.attached.contains(&"file_open_exit"), "{:?}", k.attached);
    assert!(!k.attached.contains(&"open_exit_regs"), "{:?}", k.attached);
    every_open_syscall_reports_create_intent(&k);
}

#[test]
fn raw_sys_exit_hook_when_asked_for_sees_every_open_syscall() {
    let k = KernelHarness::start_with(LoadOptions {
        open_hook: sensor_user::kernel::OpenHook::RawSysExit,
        ..LoadOptions::default()
    });
    assert!(k.attached.contains(&"file_sys_exit"), "{:?}", k.attached);
    assert!(!k.attached.contains(&"file_openat"), "{:?}", k.attached);
    every_open_syscall_reports_create_intent(&k);
}
