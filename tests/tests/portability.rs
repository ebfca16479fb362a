//! Every required program loads and attaches under Debian's own kernels, not only the kernel
//! of this machine. `cargo xtask portability` boots each kernel in qemu with an initramfs that
//! runs `loadcheck`; this test reads its JSON report. The kernel package and qemu come from
//! Debian's mirror (cached under target/portability/); when they cannot be had, or only an
//! emulator too slow to finish is left, the test prints "skipped: <reason>" and passes.
//! See docs/portability.md for the findings and how to reproduce them by hand.
//!
//! In each guest, loadcheck also runs a workload of file events under the default hooks
//! (fentry/fexit on these kernels) and under the classic tracepoints, and reports which kinds
//! the sensor saw: every moved kind must be seen on both paths. On this machine's kernel, which
//! refuses fentry, the same binary must fall back to the tracepoints.
//!
//! The guests boot with `bpf` among their LSMs, and loadcheck also loads the sensor with the
//! BPF LSM open hook forced: every kind must be seen again, and every operation of the
//! workload must succeed (the LSM program is audit only: it never denies).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use sensor_user::kernel::programs::{Hook, OpenPath, PROGRAMS};
use sensor_user::kernel::{KernelError, LoadOptions, OpenHook, Sensor};
use serde_json::Value;

const LOADCHECK: &str = env!("CARGO_BIN_EXE_loadcheck");

/// One kernel at a time: they share the download cache and two emulated guests would each get
/// half the machine's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn debian_6_12_loads_every_required_program() {
    check("6.12");
}

#[test]
fn debian_6_1_loads_every_required_program() {
    check("6.1");
}

/// Boots the Debian kernel series `label` and asserts on what loadcheck reported.
fn check(label: &str) {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let report = run_xtask(label);
    let release = report["release"].as_str().unwrap_or("?");
    if report["outcome"] == "unavailable" {
        eprintln!("skipped: Debian {label}: {}", report["reason"]);
        return;
    }
    assert_eq!(
        report["btf"], true,
        "Debian {label} ({release}) has no /sys/kernel/btf/vmlinux"
    );
    let lc = &report["loadcheck"];
    assert!(
        lc.is_object(),
        "no result from the guest running Debian {label}: {}",
        report["reason"]
    );
    assert!(
        lc["error"].is_null(),
        "the sensor did not load on Debian {label} ({release}): {}\nverifier: {}",
        lc["error"],
        report["verifier_error"]
    );
    let attached: BTreeSet<&str> = lc["attached"]
        .as_array()
        .expect("attached is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let skipped: Vec<(&str, &str)> = lc["skipped"]
        .as_array()
        .expect("skipped is a list")
        .iter()
        .map(|s| (s[0].as_str().unwrap_or(""), s[1].as_str().unwrap_or("")))
        .collect();
    // No program on every syscall by default, and no syscall tracepoint for opens and file
    // operations where the kernel has trampolines: Debian's kernels do.
    let default = names(&lc["attached_default"]);
    assert_eq!(
        lc["hooks_default"], "Fentry",
        "the default load on Debian {label} ({release}) did not choose fentry/fexit: {default:?}; skipped {}",
        lc["skipped"]
    );
    assert!(
        default.contains("file_fexit_open")
            && default.contains("fe_renameat")
            && default.contains("px_setuid"),
        "the default load on Debian {label} ({release}) attached: {default:?}"
    );
    // Not one syscall tracepoint, and so no syscall of any task on the slow path.
    let syscall_tracepoints: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| default.contains(p.name) && matches!(p.hook, Hook::Tracepoints(_)))
        .map(|p| p.name)
        .collect();
    assert!(
        syscall_tracepoints.is_empty() && !default.contains("file_sys_exit"),
        "the default load on Debian {label} ({release}) kept syscall hooks: {syscall_tracepoints:?}"
    );
    assert_all_kinds_seen(lc, &format!("Debian {label} ({release})"));
    assert_lsm_path(&report, &format!("Debian {label} ({release})"));
    for p in PROGRAMS {
        if attached.contains(p.name) {
            continue;
        }
        assert!(
            !p.required,
            "required program {} not attached on Debian {label} ({release})",
            p.name
        );
        let reason = skipped.iter().find(|(name, _)| *name == p.name);
        assert!(
            reason.is_some_and(|(_, why)| !why.is_empty()),
            "optional program {} neither attached nor skipped with a reason on {release}",
            p.name
        );
    }
    eprintln!(
        "Debian {label} ({release}, {}): {} attached, skipped {skipped:?}",
        report["accel"].as_str().unwrap_or("?"),
        attached.len()
    );
}

/// Every workload kind was reported under the default hooks and under the tracepoints.
fn assert_all_kinds_seen(lc: &Value, on: &str) {
    for load in ["default", "tracepoint"] {
        let seen = names(&lc["events"][load]);
        let missing: Vec<_> = tests::LOADCHECK_KINDS
            .iter()
            .filter(|k| !seen.contains(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "on {on}, the {load} hooks ({}) missed {missing:?} (saw {seen:?})",
            lc["hooks_default"]
        );
    }
}

/// With `bpf` among the guest's LSMs, the forced BPF LSM load attached the LSM open program,
/// the workload's operations all succeeded under it, and every kind was reported.
fn assert_lsm_path(report: &Value, on: &str) {
    let active = report["lsm"].as_str().unwrap_or("");
    assert!(
        active.split(',').any(|l| l == "bpf"),
        "on {on}, `bpf` is not among the active LSMs: {:?}",
        report["lsm"]
    );
    let lsm = &report["loadcheck"]["lsm"];
    assert!(
        lsm["error"].is_null(),
        "on {on}, the forced BPF LSM load failed: {}",
        lsm["error"]
    );
    assert_eq!(lsm["hooks"], "Lsm", "on {on}: {lsm}");
    // Opens reach the sensor through the LSM program alone: no open tracepoint, raw hook or
    // fentry/fexit program is attached.
    let attached = names(&lsm["attached"]);
    let other_sets: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| {
            attached.contains(p.name)
                && matches!(
                    p.open_path,
                    OpenPath::Classic | OpenPath::Raw | OpenPath::Fentry
                )
        })
        .map(|p| p.name)
        .collect();
    assert!(
        attached.contains("lsm_file_open") && other_sets.is_empty(),
        "on {on}, the BPF LSM load attached {attached:?}"
    );
    // Audit only: an LSM program that denied anything would fail a step of the workload.
    assert_eq!(
        lsm["workload_ok"], true,
        "on {on}, an operation failed under the BPF LSM hooks: {lsm}"
    );
    let seen = names(&lsm["events"]);
    let missing: Vec<_> = tests::LOADCHECK_KINDS
        .iter()
        .filter(|k| !seen.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "on {on}, the BPF LSM hooks missed {missing:?} (saw {seen:?})"
    );
}

fn names(list: &Value) -> BTreeSet<&str> {
    list.as_array()
        .expect("a list of names")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// This machine's kernel refuses trampolines (PLATFORM.md): the default load must fall back to
/// the classic tracepoints, and the workload's events must still all be seen.
#[test]
fn this_kernel_falls_back_to_tracepoints() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = Command::new(LOADCHECK).output().expect("running loadcheck");
    let text = String::from_utf8_lossy(&out.stdout);
    let lc: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "loadcheck printed no report ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        lc["error"].is_null(),
        "the sensor did not load: {}",
        lc["error"]
    );
    let probe_refused = lc["skipped"]
        .as_array()
        .expect("skipped is a list")
        .iter()
        .any(|s| s[0] == "file_fexit_open");
    if lc["hooks_default"] == "Fentry" {
        eprintln!("skipped: this kernel has BPF trampolines; nothing falls back");
        return;
    }
    assert_eq!(lc["hooks_default"], "TracepointExits");
    assert!(
        probe_refused,
        "the fentry probe left no reason: {}",
        lc["skipped"]
    );
    let default = names(&lc["attached_default"]);
    assert!(
        default.contains("open_exit_regs")
            && !default.contains("file_openat")
            && default.contains("fs_renameat")
            && default.contains("priv_setuid"),
        "{default:?}"
    );
    let fentry: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| default.contains(p.name) && matches!(p.hook, Hook::FEntry(_) | Hook::FExit(_)))
        .map(|p| p.name)
        .collect();
    assert!(fentry.is_empty(), "{fentry:?}");
    assert_all_kinds_seen(&lc, "this kernel");
    // Then the BPF LSM: where it is active (it is here, PLATFORM.md) the probe tried it and
    // kept why the kernel refused it; forced, it fails loudly.
    let lsm_refused = lc["skipped"]
        .as_array()
        .expect("skipped is a list")
        .iter()
        .any(|s| s[0].as_str().is_some_and(|n| n.starts_with("lsm_")));
    assert!(
        lsm_refused,
        "the BPF LSM probe left no reason: {}",
        lc["skipped"]
    );
    assert!(
        lc["lsm"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("BPF LSM programs do not run")),
        "--open-hook lsm on a kernel refusing it: {}",
        lc["lsm"]
    );
    // Asked for by name, fentry fails loudly instead of falling back.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let options = LoadOptions {
        open_hook: OpenHook::Fentry,
        ..LoadOptions::default()
    };
    let forced = rt.block_on(async { Sensor::load(&options).map(|s| s.attached) });
    assert!(
        matches!(forced, Err(KernelError::NoFentry(_))),
        "--open-hook fentry on a kernel without trampolines: {forced:?}"
    );
}

/// Runs `cargo xtask portability` for one kernel with this build's loadcheck; its report.
fn run_xtask(label: &str) -> Value {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--bin",
            "xtask",
            "--",
        ])
        .args(["portability", "--kernel", label, "--loadcheck", LOADCHECK])
        .arg("--json")
        .arg(out.path());
    // When the agent binary of the same build is there, a failed load also yields the whole
    // verifier log (target/portability/<label>/verifier.log).
    let sensor = Path::new(LOADCHECK).with_file_name("sensor");
    if sensor.exists() {
        cmd.arg("--sensor").arg(sensor);
    }
    // Through the harness, so that the xtask's summary shows only for a failing test.
    let run = cmd.output().expect("running cargo xtask portability");
    eprint!(
        "{}{}",
        String::from_utf8_lossy(&run.stderr),
        String::from_utf8_lossy(&run.stdout)
    );
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    if text.trim().is_empty() {
        panic!("cargo xtask portability wrote no report ({})", run.status);
    }
    let reports: Value = serde_json::from_str(&text).expect("the report is JSON");
    reports[0].clone()
}
