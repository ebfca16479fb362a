//! `cargo xtask portability`: boots Debian's own kernels (bookworm's 6.1 and 6.12 "cloud"
//! builds) in qemu with a tiny initramfs that runs `loadcheck` (tests/src/bin/loadcheck.rs),
//! which loads and attaches every program, and reports per kernel what attached, what was
//! skipped and why, and the loader's error. Downloads are cached under `target/portability/`;
//! the system's apt configuration is never changed (kernel packages come through a private
//! sources list under that directory). See docs/portability.md.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Kernel series to boot, as Debian packages them for bookworm (repeatable).
    #[arg(long = "kernel", default_values_t = ["6.1".to_string(), "6.12".to_string()])]
    kernels: Vec<String>,
    /// The loadcheck binary to boot with; built with cargo when not given.
    #[arg(long)]
    loadcheck: Option<PathBuf>,
    /// When a load fails, also run the `sensor` binary in the guest with debug logging to
    /// capture the whole verifier log (builds it with cargo unless --sensor is given).
    #[arg(long)]
    verifier_log: bool,
    /// The sensor binary for --verifier-log (implies it).
    #[arg(long)]
    sensor: Option<PathBuf>,
    /// auto: KVM when it can boot the kernel, else TCG (software emulation).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Seconds one boot may take before it is abandoned.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Resolve and download the kernel packages again even when cached.
    #[arg(long)]
    refresh: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// How long a KVM boot may take to reach /init before auto mode falls back to TCG.
const KVM_INIT_DEADLINE: Duration = Duration::from_secs(30);
const MARK: &str = "@@PORTABILITY";
/// The guests' kernel command line. `lsm=` names the BPF LSM last, after Debian's usual
/// modules, so that loadcheck's forced BPF LSM load runs its programs (Debian's own default
/// list has `bpf` too; naming it keeps the check independent of that default).
const CMDLINE: &str =
    "console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,apparmor,bpf";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What happened with one kernel.
enum Outcome {
    /// Every required program attached (`loadcheck` exited 0).
    Loaded,
    /// The sensor refused to load; the loader's message.
    LoadError(String),
    /// The kernel booted (or should have) but produced no result.
    BootFailure(String),
    /// The kernel or qemu could not be obtained, or only a too-slow emulator was left.
    Unavailable(String),
}

struct Report {
    label: String,
    package: Option<String>,
    release: Option<String>,
    accel: Option<&'static str>,
    notes: Vec<String>,
    boot_seconds: Option<f64>,
    btf: Option<bool>,
    /// The active LSMs the guest reported (after the sensor mounted securityfs).
    lsm: Option<String>,
    outcome: Outcome,
    loadcheck: Option<Value>,
    verifier_error: Option<String>,
    verifier_log: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let dir = target_dir(&root).join("portability");
    fs::create_dir_all(&dir)?;
    let mut reports = Vec::new();
    let setup = ensure_tools().and_then(|()| {
        let loadcheck = match &args.loadcheck {
            Some(p) => p.clone(),
            None => build_bin(&root, "tests", "loadcheck").map_err(|e| format!("{e:#}"))?,
        };
        let sensor = match (&args.sensor, args.verifier_log) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => {
                Some(build_bin(&root, "sensor-user", "sensor").map_err(|e| format!("{e:#}"))?)
            }
            (None, false) => None,
        };
        build_initramfs(&dir, &loadcheck, sensor.as_deref()).map_err(|e| format!("{e:#}"))
    });
    // A KVM that failed once is not tried again for the next kernel.
    let mut kvm_failure: Option<String> = None;
    for label in &args.kernels {
        let report = match &setup {
            Err(reason) => Report::new(label, Outcome::Unavailable(reason.clone())),
            Ok(initrd) => check_kernel(&dir, label, initrd, args, &mut kvm_failure),
        };
        print_report(&report);
        reports.push(report);
    }
    let json = Value::Array(reports.iter().map(Report::to_json).collect());
    if let Some(path) = &args.json {
        fs::write(path, format!("{json:#}\n")).with_context(|| format!("{}", path.display()))?;
    }
    fs::write(dir.join("report.json"), format!("{json:#}\n"))?;
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::LoadError(_) | Outcome::BootFailure(_)))
        .map(|r| r.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("the sensor did not load on: {}", failed.join(", "));
    }
    Ok(())
}

impl Report {
    fn new(label: &str, outcome: Outcome) -> Report {
        Report {
            label: label.to_owned(),
            package: None,
            release: None,
            accel: None,
            notes: Vec::new(),
            boot_seconds: None,
            btf: None,
            lsm: None,
            outcome,
            loadcheck: None,
            verifier_error: None,
            verifier_log: None,
        }
    }

    fn to_json(&self) -> Value {
        let (outcome, reason) = match &self.outcome {
            Outcome::Loaded => ("loaded", None),
            Outcome::LoadError(r) => ("load-error", Some(r)),
            Outcome::BootFailure(r) => ("boot-failure", Some(r)),
            Outcome::Unavailable(r) => ("unavailable", Some(r)),
        };
        json!({
            "label": self.label,
            "package": self.package,
            "release": self.release,
            "accel": self.accel,
            "notes": self.notes,
            "boot_seconds": self.boot_seconds,
            "btf": self.btf,
            "lsm": self.lsm,
            "outcome": outcome,
            "reason": reason,
            "loadcheck": self.loadcheck,
            "verifier_error": self.verifier_error,
            "verifier_log": self.verifier_log,
        })
    }
}

fn print_report(r: &Report) {
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
    println!(
        "== Debian {}: {} ({}), {}, {}, BTF {}",
        r.label,
        opt(&r.package),
        opt(&r.release),
        r.accel.unwrap_or("no boot"),
        r.boot_seconds
            .map_or("-".into(), |s| format!("{s:.1} s from boot to power-off")),
        r.btf.map_or("?", |b| if b { "yes" } else { "NO" }),
    );
    for note in &r.notes {
        println!("   note: {note}");
    }
    match &r.outcome {
        Outcome::Loaded => println!("   loaded"),
        Outcome::LoadError(e) => println!("   LOAD FAILED: {e}"),
        Outcome::BootFailure(e) => println!("   BOOT FAILED: {e}"),
        Outcome::Unavailable(e) => println!("   skipped: {e}"),
    }
    if let Some(v) = &r.verifier_error {
        println!("   verifier: {v}");
    }
    if let Some(p) = &r.verifier_log {
        println!("   full verifier log: {}", p.display());
    } else if matches!(r.outcome, Outcome::LoadError(_)) {
        println!(
            "   (the loader shows only the log's last lines: add --verifier-log for the error)"
        );
    }
    if let Some(lc) = &r.loadcheck {
        let attached = lc["attached"].as_array().map_or(0, Vec::len);
        println!(
            "   attached: {attached}; default hooks: {}",
            lc["hooks_default"]
        );
        for load in ["default", "tracepoint"] {
            println!(
                "   events seen with the {load} hooks: {}",
                lc["events"][load]
            );
        }
        println!(
            "   active LSMs: {}; forced BPF LSM load: {}",
            r.lsm.as_deref().unwrap_or("?"),
            lc["lsm"]
        );
        for s in lc["skipped"].as_array().into_iter().flatten() {
            println!("   skipped {}: {}", s[0], s[1]);
        }
    }
}

/// Fetches one kernel, boots it and reads what loadcheck printed.
fn check_kernel(
    dir: &Path,
    label: &str,
    initrd: &Path,
    args: &Args,
    kvm_failure: &mut Option<String>,
) -> Report {
    let kernel = match fetch_kernel(dir, label, args.refresh) {
        Ok(k) => k,
        Err(reason) => return Report::new(label, Outcome::Unavailable(reason)),
    };
    let mut report = Report::new(label, Outcome::BootFailure(String::new()));
    report.package = Some(kernel.package.clone());
    let timeout = Duration::from_secs(args.timeout);
    let out_dir = dir.join(label);
    let _ = fs::create_dir_all(&out_dir);

    let try_kvm = match args.accel {
        Accel::Tcg => false,
        Accel::Kvm => true,
        Accel::Auto => match kvm_failure.clone().map_or_else(kvm_usable, Err) {
            Ok(()) => true,
            Err(why) => {
                report.notes.push(format!("not using KVM: {why}"));
                false
            }
        },
    };
    let mut boot = None;
    if try_kvm {
        let deadline = (args.accel == Accel::Auto).then_some(KVM_INIT_DEADLINE);
        match run_qemu(&kernel.vmlinuz, initrd, true, timeout, deadline) {
            Ok(b) if args.accel == Accel::Auto && !b.reached_init => {
                let why = format!(
                    "KVM did not reach /init ({}); falling back to TCG",
                    b.ending()
                );
                report.notes.push(why.clone());
                *kvm_failure = Some(why);
            }
            Ok(b) => boot = Some(b),
            Err(e) => {
                report.outcome = Outcome::Unavailable(format!("cannot run qemu: {e:#}"));
                return report;
            }
        }
    }
    let boot = match boot {
        Some(b) => b,
        None => match run_qemu(&kernel.vmlinuz, initrd, false, timeout, None) {
            Ok(b) => b,
            Err(e) => {
                report.outcome = Outcome::Unavailable(format!("cannot run qemu: {e:#}"));
                return report;
            }
        },
    };
    let _ = fs::write(out_dir.join("console.log"), &boot.console);
    report.accel = Some(if boot.kvm { "kvm" } else { "tcg" });
    let result = parse_console(&boot.console);
    report.release = result.release;
    report.btf = result.btf;
    report.lsm = result.lsm;
    report.boot_seconds = Some(boot.seconds);
    if let Some(log) = result.verifier_log {
        let path = out_dir.join("verifier.log");
        report.verifier_error = verifier_error(&log);
        if fs::write(&path, log).is_ok() {
            report.verifier_log = Some(path);
        }
    }
    report.outcome = match result.loadcheck {
        Some(lc) => {
            let outcome = match lc["error"].as_str() {
                None => Outcome::Loaded,
                Some(e) => Outcome::LoadError(e.to_owned()),
            };
            report.loadcheck = Some(lc);
            outcome
        }
        None if boot.timed_out && !boot.kvm => Outcome::Unavailable(format!(
            "no result within {}s under TCG (no usable KVM): too slow here",
            args.timeout
        )),
        None => Outcome::BootFailure(format!(
            "no loadcheck result ({}{}); console in {}",
            boot.ending(),
            result
                .stderr
                .map(|s| format!("; loadcheck stderr: {}", s.trim()))
                .unwrap_or_default(),
            out_dir.join("console.log").display()
        )),
    };
    report
}

// ---- kernels -----------------------------------------------------------------------------

pub(crate) struct Kernel {
    pub(crate) package: String,
    pub(crate) vmlinuz: PathBuf,
}

/// The newest bookworm `linux-image-<label>.*-cloud-amd64-unsigned`, cached by label.
pub(crate) fn fetch_kernel(dir: &Path, label: &str, refresh: bool) -> Result<Kernel, String> {
    let cache = dir.join("kernels").join(label);
    let vmlinuz = cache.join("vmlinuz");
    if !refresh
        && vmlinuz.exists()
        && let Ok(package) = fs::read_to_string(cache.join("package"))
    {
        return Ok(Kernel {
            package: package.trim().to_owned(),
            vmlinuz,
        });
    }
    let apt = PrivateApt::new(&dir.join("apt")).map_err(|e| format!("{e:#}"))?;
    apt.update(refresh)?;
    let pattern = format!(
        "^linux-image-{}\\..*-cloud-amd64-unsigned$",
        label.replace('.', "\\.")
    );
    let found = apt.cache(&["search", "--names-only", &pattern])?;
    let package = found
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .filter(|n| !n.contains("dbg"))
        .max_by_key(|n| natural_key(n))
        .ok_or_else(|| {
            format!("no Debian package matches {pattern} in bookworm, bookworm-security or bookworm-backports")
        })?
        .to_owned();
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
    let deb = match find_deb(&debs, &package) {
        Some(d) => d,
        None => {
            if apt.download(&debs, &package).is_err() {
                // The private lists may be older than the mirror: refresh once.
                apt.update(true)?;
                apt.download(&debs, &package)?;
            }
            find_deb(&debs, &package).ok_or("apt-get download left no .deb")?
        }
    };
    let tmp = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()))?;
    let boot = tmp.path().join("boot");
    let entries: Vec<PathBuf> = fs::read_dir(&boot)
        .map_err(|e| format!("{}: {e}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let find = |prefix: &str| {
        entries
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .cloned()
    };
    let image = find("vmlinuz-").ok_or("the package has no boot/vmlinuz-*")?;
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    fs::copy(&image, &vmlinuz).map_err(|e| e.to_string())?;
    if let Some(config) = find("config-") {
        let _ = fs::copy(config, cache.join("config"));
    }
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    fs::write(cache.join("package"), format!("{name}\n")).map_err(|e| e.to_string())?;
    Ok(Kernel {
        package: name.into_owned(),
        vmlinuz,
    })
}

fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .max()
}

/// apt with its own sources (bookworm, -updates, -backports, -security from the mirrors the
/// system already uses), lists and cache, all under `target/portability/apt`.
struct PrivateApt {
    dir: PathBuf,
    options: Vec<String>,
}

impl PrivateApt {
    fn new(dir: &Path) -> anyhow::Result<PrivateApt> {
        for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let (debian, security) = system_mirrors();
        let signed = if Path::new(KEYRING).exists() {
            format!("Signed-By: {KEYRING}\n")
        } else {
            String::new()
        };
        let sources = format!(
            "Types: deb\nURIs: {debian}\nSuites: bookworm bookworm-updates bookworm-backports\n\
             Components: main\n{signed}\nTypes: deb\nURIs: {security}\nSuites: bookworm-security\n\
             Components: main\n{signed}"
        );
        fs::write(dir.join("sources.list.d/bookworm.sources"), sources)?;
        fs::write(dir.join("sources.list"), "")?;
        let options = [
            ("Dir::Etc::SourceList", "sources.list"),
            ("Dir::Etc::SourceParts", "sources.list.d"),
            ("Dir::State::Lists", "lists"),
            ("Dir::Cache", "cache"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", dir.join(v).display()))
        .chain([
            "APT::Sandbox::User=root".into(),
            "Acquire::Languages=none".into(),
        ])
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        Ok(PrivateApt {
            dir: dir.to_owned(),
            options,
        })
    }

    /// `apt-get update` into the private lists, when they are empty or `force`.
    fn update(&self, force: bool) -> Result<(), String> {
        let have_lists = || {
            fs::read_dir(self.dir.join("lists")).is_ok_and(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
        };
        if have_lists() && !force {
            return Ok(());
        }
        eprintln!(
            "[portability] apt-get update (private lists under {})",
            self.dir.display()
        );
        // apt-get update exits 0 even when every fetch failed; the lists tell.
        let out = Command::new("apt-get")
            .args(&self.options)
            .args(["-q", "update"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !out.status.success() || !have_lists() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "cannot fetch package lists from Debian's mirror: {}",
                err.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no lists")
            ));
        }
        Ok(())
    }

    fn cache(&self, args: &[&str]) -> Result<String, String> {
        run_ok(Command::new("apt-cache").args(&self.options).args(args))
    }

    fn download(&self, into: &Path, package: &str) -> Result<(), String> {
        eprintln!("[portability] apt-get download {package}");
        run_ok(
            Command::new("apt-get")
                .current_dir(into)
                .args(&self.options)
                .args(["-q", "download", package]),
        )
        .map(drop)
    }
}

/// The Debian and Debian security mirrors from the system's apt sources (deb822 `URIs:` lines
/// and one-line `deb` entries), defaulting to deb.debian.org.
fn system_mirrors() -> (String, String) {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    let uris: Vec<String> = texts
        .iter()
        .flat_map(|t| t.lines())
        .flat_map(|l| {
            let l = l.trim();
            let words: Vec<&str> = if let Some(rest) = l.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if l.starts_with("deb ") {
                l.split_whitespace().filter(|w| w.contains("://")).collect()
            } else {
                Vec::new()
            };
            words
                .into_iter()
                .map(|w| w.trim_end_matches('/').to_owned())
        })
        .collect();
    let pick = |suffix: &str, default: &str| {
        uris.iter()
            .find(|u| u.ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    (
        pick("/debian", "http://deb.debian.org/debian"),
        pick("/debian-security", "http://deb.debian.org/debian-security"),
    )
}

/// Orders `6.12.9` before `6.12.117`: digit runs compare as numbers.
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            key.push((0, rest[..text].to_owned()));
            rest = &rest[text..];
        }
    }
    key
}

// ---- tools and binaries ------------------------------------------------------------------

/// qemu and a static busybox, installed from Debian's packages when missing.
fn ensure_tools() -> Result<(), String> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "gzip", "ldd"] {
        if !have(tool) {
            return Err(format!(
                "`{tool}` is not installed (this check needs a Debian host)"
            ));
        }
    }
    let mut missing = Vec::new();
    if !have("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if !static_busybox() {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{} not installed, and installing needs root",
            missing.join(" ")
        ));
    }
    eprintln!("[portability] apt-get install {}", missing.join(" "));
    let install = || {
        run_ok(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_ok(Command::new("apt-get").args(["-q", "update"]))?;
        install().map_err(|e| format!("cannot install {}: {e}", missing.join(" ")))?;
    }
    Ok(())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn static_busybox() -> bool {
    Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.contains("not a dynamic executable") || text.contains("statically linked")
        })
}

fn build_bin(root: &Path, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .status()?;
    if !status.success() {
        bail!("`cargo build -p {package} --bin {bin}` failed");
    }
    Ok(target_dir(root).join("debug").join(bin))
}

/// Runs a command; its stdout, or one line saying what failed.
fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---- the initramfs -----------------------------------------------------------------------

/// /init: mount what the sensor needs, run loadcheck, print its line between markers, power off.
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
dmesg -n 1
echo "{MARK} INIT $(uname -r)"
if [ -e /sys/kernel/btf/vmlinux ]; then echo "{MARK} BTF yes"; else echo "{MARK} BTF no"; fi
/loadcheck > /tmp/loadcheck.json 2> /tmp/loadcheck.err
rc=$?
echo "{MARK} BEGIN"
cat /tmp/loadcheck.json
echo "{MARK} END rc=$rc"
echo "{MARK} LSM $(cat /sys/kernel/security/lsm 2>/dev/null)"
echo "{MARK} STDERR BEGIN"
cat /tmp/loadcheck.err
echo "{MARK} STDERR END"
if [ $rc -ne 0 ] && [ -x /sensor ]; then
  echo "{MARK} VERIFIER BEGIN"
  NO_COLOR=1 RUST_LOG=sensor_user::kernel=debug SENSOR_STATE_DIR=/tmp/sensor \
    timeout 120 /sensor run 2>&1
  echo "{MARK} VERIFIER END"
fi
poweroff -f
"#
    )
}

/// Builds `initrd.gz` (cpio newc, gzip): busybox, /init, loadcheck (and the sensor binary),
/// the shared libraries they need, and the mount points.
fn build_initramfs(dir: &Path, loadcheck: &Path, sensor: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("/init".into(), init_script().into_bytes(), 0o755),
        ("/bin/busybox".into(), fs::read("/bin/busybox")?, 0o755),
    ];
    let mut libs = BTreeSet::new();
    for (name, path) in [("/loadcheck", Some(loadcheck)), ("/sensor", sensor)] {
        let Some(path) = path else { continue };
        files.push((name.into(), stripped(dir, path)?, 0o755));
        libs.extend(shared_libraries(path)?);
    }
    for lib in libs {
        let data = fs::read(&lib).with_context(|| lib.clone())?;
        files.push((lib, data, 0o755));
    }
    let mut dirs: BTreeSet<String> = ["/bin", "/dev", "/proc", "/sys", "/tmp", "/run"]
        .map(String::from)
        .into();
    for (name, _, _) in &files {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| *d != Path::new("/")) {
            dirs.insert(d.display().to_string());
            p = d.parent();
        }
    }
    let mut cpio = Cpio::default();
    for d in &dirs {
        cpio.entry(d, 0o040_755, 0, b"");
    }
    cpio.entry("/dev/console", 0o020_600, (5 << 8) | 1, b"");
    cpio.entry("/bin/sh", 0o120_777, 0, b"busybox");
    for (name, data, mode) in &files {
        cpio.entry(name, 0o100_000 | mode, 0, data);
    }
    let raw = dir.join("initrd.cpio");
    fs::write(&raw, cpio.finish())?;
    let gz = dir.join("initrd.gz");
    let out = fs::File::create(&gz)?;
    let status = Command::new("gzip")
        .args(["-n", "-1", "-c"])
        .arg(&raw)
        .stdout(out)
        .status()?;
    if !status.success() {
        bail!("gzip of the initramfs failed");
    }
    let _ = fs::remove_file(raw);
    Ok(gz)
}

/// The binary without debug info (a debug build is ~70 MB; stripped ~10 MB).
fn stripped(dir: &Path, bin: &Path) -> anyhow::Result<Vec<u8>> {
    let tmp = dir.join("stripped.tmp");
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    let data = if ok { fs::read(&tmp)? } else { fs::read(bin)? };
    let _ = fs::remove_file(tmp);
    Ok(data)
}

/// The libraries `ldd` lists, at the paths the dynamic loader will look for them.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("{}: {}", bin.display(), line.trim());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_owned());
        }
    }
    Ok(libs)
}

/// A cpio archive in the "newc" format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).expect("initramfs member under 4 GiB"),
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, b"");
        self.out
    }
}

// ---- qemu --------------------------------------------------------------------------------

/// Why KVM cannot run a stock kernel here, if it cannot.
fn kvm_usable() -> Result<(), String> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if module("kvm_pvm") && !module("kvm_intel") && !module("kvm_amd") {
        return Err(
            "/dev/kvm is kvm_pvm (pagetable-based virtualization), which runs only \
                    PVM-enabled guest kernels; Debian's kernels hang in early boot under it"
                .into(),
        );
    }
    Ok(())
}

struct Boot {
    kvm: bool,
    console: String,
    stderr: String,
    seconds: f64,
    reached_init: bool,
    timed_out: bool,
}

impl Boot {
    /// How the run ended, for messages.
    fn ending(&self) -> String {
        let err = self.stderr.lines().last().unwrap_or("").trim();
        match (self.timed_out, err.is_empty()) {
            (true, _) => format!("stopped after {:.0}s", self.seconds),
            (false, true) => "qemu exited".into(),
            (false, false) => format!("qemu: {err}"),
        }
    }
}

/// Boots the kernel with the initramfs, console on stdio, and waits until it powers off, the
/// timeout passes, or (`init_deadline`) /init has not started in time.
fn run_qemu(
    vmlinuz: &Path,
    initrd: &Path,
    kvm: bool,
    timeout: Duration,
    init_deadline: Option<Duration>,
) -> anyhow::Result<Boot> {
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-enable-kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", CMDLINE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "[portability] booting {} under {}",
        vmlinuz.display(),
        if kvm { "KVM" } else { "TCG" }
    );
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).replace('\r', ""))
                .is_err()
            {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().context("qemu stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut boot = Boot {
        kvm,
        console: String::new(),
        stderr: String::new(),
        seconds: 0.0,
        reached_init: false,
        timed_out: false,
    };
    loop {
        let limit = match init_deadline {
            Some(d) if !boot.reached_init => d.min(timeout),
            _ => timeout,
        };
        let Some(left) = limit.checked_sub(start.elapsed()) else {
            boot.timed_out = true;
            let _ = child.kill();
            break;
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                boot.reached_init |= line.contains(&format!("{MARK} INIT"));
                boot.console.push_str(&line);
                boot.console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    boot.stderr = stderr_reader.join().unwrap_or_default();
    boot.seconds = start.elapsed().as_secs_f64();
    Ok(boot)
}

#[derive(Default)]
struct ConsoleResult {
    release: Option<String>,
    btf: Option<bool>,
    lsm: Option<String>,
    loadcheck: Option<Value>,
    stderr: Option<String>,
    verifier_log: Option<String>,
}

/// Reads the marked sections the init script printed.
fn parse_console(console: &str) -> ConsoleResult {
    let section = |begin: &str, end: &str| -> Option<String> {
        let (_, rest) = console.split_once(&format!("{MARK} {begin}\n"))?;
        let body = rest.split(&format!("{MARK} {end}")).next()?;
        Some(body.to_owned())
    };
    let line_after = |tag: &str| {
        // The marker may follow the firmware's escape sequences on the same line.
        let marker = format!("{MARK} {tag} ");
        console.lines().find_map(|l| {
            l.find(&marker)
                .map(|i| l[i + marker.len()..].trim().to_owned())
        })
    };
    ConsoleResult {
        release: line_after("INIT"),
        btf: line_after("BTF").map(|v| v == "yes"),
        lsm: line_after("LSM"),
        loadcheck: section("BEGIN", "END rc=").and_then(|body| {
            body.lines()
                .filter_map(|l| l.find('{').map(|i| &l[i..]))
                .find_map(|l| serde_json::from_str(l).ok())
        }),
        stderr: section("STDERR BEGIN", "STDERR END").filter(|s| !s.trim().is_empty()),
        verifier_log: section("VERIFIER BEGIN", "VERIFIER END").map(|s| strip_ansi(&s)),
    }
}

/// The verifier's own error: the two lines before its closing statistics.
fn verifier_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let stats = lines
        .iter()
        .rposition(|l| l.starts_with("verification time"))?;
    let from = stats.saturating_sub(2);
    Some(lines[from..stats].join(" | "))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf())
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |t| root.join(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_package_sorts_last() {
        let mut names = [
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.9+bpo-cloud-amd64-unsigned",
            "linux-image-6.12.48+deb12-cloud-amd64-unsigned",
        ];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names[2], "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
        assert!(natural_key("linux-image-6.1.0-9-x") < natural_key("linux-image-6.1.0-56-x"));
    }

    #[test]
    fn console_sections_are_parsed() {
        let console = format!(
            "junk\x1b[2J{MARK} INIT 6.1.0-56-cloud-amd64\n{MARK} BTF yes\n[ 1.0] kernel noise\n\
             {MARK} BEGIN\n{{\"attached\":[\"a\"],\"error\":null}}\n{MARK} END rc=0\n\
             {MARK} LSM lockdown,capability,bpf\n"
        );
        let r = parse_console(&console);
        assert_eq!(r.lsm.as_deref(), Some("lockdown,capability,bpf"));
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.btf, Some(true));
        assert_eq!(r.loadcheck.unwrap()["attached"][0], "a");
    }

    #[test]
    fn verifier_error_is_the_line_before_the_statistics() {
        let log = "0: (79) r8 = *(u64 *)(r1 +0)\n47: (bf) r2 = r9\nR9 !read_ok\n\
                   verification time 9872 usec\nstack depth 56+0\nprocessed 708 insns\n";
        assert_eq!(
            verifier_error(log).as_deref(),
            Some("47: (bf) r2 = r9 | R9 !read_ok")
        );
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio::default();
        c.entry("/init", 0o100_755, 0, b"abc");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
    }
}
