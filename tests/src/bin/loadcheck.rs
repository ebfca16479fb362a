//! Loads and attaches every kernel program, then prints one JSON line and exits:
//! `{"kernel": "<uname -r>", "attached": [...], "skipped": [[name, reason], ...], "error": null}`.
//! It loads four times, with the default hooks (fentry/fexit where the kernel has them), the
//! classic tracepoints (on x86_64 the open exits alone), the open tracepoints as an entry+exit
//! pair and the raw `sys_exit` open hook, so that every program of the table is tried; `attached` and `skipped` cover all loads, `attached_default` and `hooks_default` are
//! what the default load attached and chose. With the default and the tracepoint hooks, a child
//! (`loadcheck workload DIR`) opens and operates on files and `events` lists, per load, which
//! kinds the sensor reported for that child (file events and two privilege operations): every
//! moved event kind is seen on both paths. A fifth load forces the BPF LSM open hook
//! (`lsm`: its hooks, kinds seen and whether the workload's operations all succeeded, or why
//! it did not load: most kernels do not run the BPF LSM unless booted with `lsm=...,bpf`).
//! Exit status 0 when the sensor loaded, 1 when it did not (`error` then holds the loader's
//! message, verifier lines included). `cargo xtask portability` runs it inside other kernels.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sensor_user::event::{Event, EventKind, FileOperation, PrivilegeOp};
use sensor_user::kernel::{BootClock, LoadOptions, OpenHook, Sensor, decode};
use serde_json::{Value, json};
// Every kind the workload triggers, as named in the report (shared with the portability test).
use tests::LOADCHECK_KINDS as KINDS;

/// How long a load waits for the workload's events.
const EVENTS_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, cmd, dir] = args.as_slice()
        && cmd == "workload"
    {
        workload(Path::new(dir));
        return;
    }
    let kernel = uname_release();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    // Sensor::load registers the ring buffer with the runtime, so it runs inside it; the sensor
    // is dropped (programs detached) before the runtime.
    let load = |open_hook, with_events: bool| {
        rt.block_on(async {
            let options = LoadOptions {
                open_hook,
                ..LoadOptions::default()
            };
            let mut sensor = Sensor::load(&options)?;
            let (events, workload_ok) = if with_events {
                seen_kinds(&mut sensor, open_hook).await
            } else {
                (Vec::new(), false)
            };
            Ok::<_, sensor_user::kernel::KernelError>((
                sensor.attached.clone(),
                sensor.skipped.clone(),
                format!("{:?}", sensor.hooks),
                events,
                workload_ok,
            ))
        })
    };
    let result = load(OpenHook::Auto, true).and_then(|(default, skipped, hooks, events, _)| {
        let (tp, tp_skipped, _, tp_events, _) = load(OpenHook::Tracepoint, true)?;
        let (raw, raw_skipped, _, _, _) = load(OpenHook::RawSysExit, false)?;
        // The entry+exit pair other architectures use: it must load too.
        let (pair, pair_skipped, _, _, _) = load(OpenHook::TracepointPair, false)?;
        // Not fatal: where the kernel does not run the BPF LSM this load fails by design.
        let (lsm, lsm_attached) = match load(OpenHook::Lsm, true) {
            Ok((attached, _, hooks, events, workload_ok)) => (
                json!({
                    "hooks": hooks,
                    "attached": attached,
                    "events": events,
                    "workload_ok": workload_ok,
                }),
                attached,
            ),
            Err(e) => (json!({ "error": e.to_string() }), Vec::new()),
        };
        let mut attached = default.clone();
        for p in tp.into_iter().chain(raw).chain(pair).chain(lsm_attached) {
            if !attached.contains(&p) {
                attached.push(p);
            }
        }
        // A program skipped by one load but attached by another was not skipped; one reason
        // per program.
        let mut skipped: Vec<_> = skipped
            .into_iter()
            .chain(tp_skipped)
            .chain(raw_skipped)
            .chain(pair_skipped)
            .filter(|(name, _)| !attached.contains(name))
            .collect();
        let mut named = BTreeSet::new();
        skipped.retain(|(name, _)| named.insert(*name));
        let events = json!({ "default": events, "tracepoint": tp_events });
        Ok((default, hooks, attached, skipped, events, lsm))
    });
    let (report, code) = match result {
        Ok((default, hooks, attached, skipped, events, lsm)) => (
            json!({
                "kernel": kernel,
                "attached_default": default,
                "hooks_default": hooks,
                "attached": attached,
                "skipped": skipped,
                "events": events,
                "lsm": lsm,
                "error": Value::Null,
            }),
            0,
        ),
        Err(e) => (
            json!({
                "kernel": kernel,
                "attached": [],
                "skipped": [],
                "error": e.to_string(),
            }),
            1,
        ),
    };
    println!("{report}");
    std::process::exit(code);
}

/// Runs the workload in a child and drains the sensor until every kind of [`KINDS`] was seen
/// for that child, or the deadline passed; the kinds seen, and whether every operation of the
/// workload succeeded.
async fn seen_kinds(sensor: &mut Sensor, hook: OpenHook) -> (Vec<&'static str>, bool) {
    let dir = std::env::temp_dir().join(format!("loadcheck-{hook:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("workload directory");
    let dir = std::fs::canonicalize(&dir).expect("canonical workload directory");
    let child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("workload")
        .arg(&dir)
        .spawn();
    let (pid, child_ok) = match child {
        Ok(mut c) => (c.id(), c.wait().is_ok_and(|s| s.success())),
        Err(_) => (0, false),
    };
    let clock = BootClock::now();
    let prefix = dir.to_string_lossy().into_owned();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + EVENTS_DEADLINE;
    while child_ok && seen.len() < KINDS.len() && Instant::now() < deadline {
        if sensor.ready().await.is_err() {
            break;
        }
        sensor.drain(|record| {
            if let Ok(event) = decode(record, &clock)
                && let Some(kind) = kind_of(&event, &prefix, pid)
            {
                seen.insert(kind);
            }
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    (seen.into_iter().collect(), child_ok)
}

/// The report name of an event about a path under `prefix` (only the workload works there), or
/// of a privilege operation by the workload's process `pid`.
fn kind_of(e: &Event, prefix: &str, pid: u32) -> Option<&'static str> {
    let under = |p: &str| p.starts_with(prefix);
    Some(match &e.kind {
        EventKind::Open { path, intent, .. } if under(path) => match intent {
            i if i.create => "open-create",
            i if i.write => "open-write",
            _ => "open-read",
        },
        EventKind::FileOp(op) => match op {
            FileOperation::Rename { from, .. } if under(from) => "rename",
            FileOperation::Unlink { path } if under(path) => "unlink",
            FileOperation::Rmdir { path } if under(path) => "rmdir",
            FileOperation::Mkdir { path, .. } if under(path) => "mkdir",
            FileOperation::Chmod { path, .. } if under(path) => "chmod",
            FileOperation::Chown { path, .. } if under(path) => "chown",
            FileOperation::Symlink { link, .. } if under(link) => "symlink",
            FileOperation::Link { new, .. } if under(new) => "link",
            FileOperation::Truncate { path, .. } if under(path) => "truncate",
            _ => return None,
        },
        EventKind::Privilege { op, result: 0, .. } if e.pid == pid => match op {
            PrivilegeOp::SetIds { syscall, .. } if *syscall == "setuid" => "setuid",
            PrivilegeOp::Unshare { .. } => "unshare",
            _ => return None,
        },
        _ => return None,
    })
}

/// The workload: one of each kind in [`KINDS`], in `dir`, through the C library's usual calls.
fn workload(dir: &Path) {
    let f = dir.join("a.txt");
    let step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            eprintln!("workload: {what}: {e}");
            std::process::exit(1);
        }
    };
    step("create", std::fs::write(&f, b"x"));
    step(
        "open for writing",
        std::fs::OpenOptions::new().append(true).open(&f).map(drop),
    );
    step("read", std::fs::read(&f).map(drop));
    step(
        "chmod",
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)),
    );
    step("chown", std::os::unix::fs::chown(&f, Some(0), Some(0)));
    step(
        "ftruncate",
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .and_then(|file| file.set_len(0)),
    );
    step("link", std::fs::hard_link(&f, dir.join("b.txt")));
    step("symlink", std::os::unix::fs::symlink(&f, dir.join("c.txt")));
    step("rename", std::fs::rename(&f, dir.join("d.txt")));
    step("unlink", std::fs::remove_file(dir.join("b.txt")));
    step("mkdir", std::fs::create_dir(dir.join("e")));
    step("rmdir", std::fs::remove_dir(dir.join("e")));
    // SAFETY: plain syscalls on this process's own credentials and namespaces (run as root:
    // setuid(0) keeps it root; a new UTS namespace affects only this process).
    let (setuid, unshare) = unsafe { (libc::setuid(0), libc::unshare(libc::CLONE_NEWUTS)) };
    step(
        "setuid",
        (setuid == 0)
            .then_some(())
            .ok_or_else(std::io::Error::last_os_error),
    );
    step(
        "unshare",
        (unshare == 0)
            .then_some(())
            .ok_or_else(std::io::Error::last_os_error),
    );
}

/// `uname -r`.
fn uname_release() -> String {
    // SAFETY: `utsname` is plain bytes, so all-zero is a valid value; uname(2) fills it and
    // NUL-terminates each field, and its result is checked before the field is read.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}
