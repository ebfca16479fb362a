//! `cargo xtask systemd-check`: installs the `sensor` and `collector` packages on a real systemd
//! host and checks what an operator meets first. A minimal Debian bookworm rootfs with systemd is
//! built with debootstrap (cached under `target/systemd-check/rootfs`), the two .debs and a check
//! script are written into it, and it boots as an ext4 image on an NVMe disk (built into Debian's
//! cloud kernels, so no initramfs is needed) under qemu with a kernel the portability check uses.
//! A unit in the guest runs the script, which prints `SYSTEMD-CHECK` lines on the serial console;
//! the host reads them with a deadline and judges them. Too slow for CI under TCG (see
//! docs/systemd-check.md).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::portability::{fetch_kernel, target_dir, workspace_root};

const MARK: &str = "SYSTEMD-CHECK";

#[derive(clap::Args)]
pub struct Args {
    /// Kernel to boot, as the portability check names it ("6.1" or "6.12").
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Directory holding the `sensor` and `collector` binaries to package (default: build them
    /// with `cargo xtask package`, release).
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// Learning period of the sensor in the guest (short, so the check can see judging).
    #[arg(long, default_value = "60s")]
    learning_period: String,
    /// Give up after this many seconds of guest time (TCG is slow).
    #[arg(long, default_value_t = 2400)]
    timeout: u64,
    /// Build the rootfs again even when cached.
    #[arg(long)]
    refresh: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let dir = target_dir(&root).join("systemd-check");
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();

    let debs = build_packages(&root, &dir, args.binaries.as_deref())?;
    let packaged = started.elapsed();
    let kernel = fetch_kernel(&target_dir(&root).join("portability"), &args.kernel, false)
        .map_err(|e| anyhow::anyhow!("kernel {}: {e}", args.kernel))?;
    let rootfs = ensure_rootfs(&dir, args.refresh)?;
    let prepared = started.elapsed();
    stage_guest(&rootfs, &debs, &args.learning_period)?;
    let image = dir.join("root.img");
    make_image(&rootfs, &image)?;
    let imaged = started.elapsed();

    eprintln!(
        "[systemd-check] booting {} under TCG (deadline {}s)",
        kernel.package, args.timeout
    );
    let boot = boot(&kernel.vmlinuz, &image, Duration::from_secs(args.timeout));
    // The image is scratch: the rootfs it came from stays cached.
    let _ = std::fs::remove_file(&image);
    let boot = boot?;
    std::fs::write(dir.join("console.log"), &boot.console)?;

    let verdict = judge(&boot.lines);
    println!("systemd-check {}", now_utc());
    println!("kernel: {}", kernel.package);
    println!(
        "host: packages {:.0}s, rootfs+kernel {:.0}s, image {:.0}s, guest {:.0}s{}",
        packaged.as_secs_f64(),
        (prepared - packaged).as_secs_f64(),
        (imaged - prepared).as_secs_f64(),
        boot.seconds,
        if boot.timed_out { " (timed out)" } else { "" }
    );
    for line in &boot.lines {
        if line.starts_with("STEP ") || line.starts_with("BOOTED ") {
            println!("guest: {line}");
        }
    }
    for (check, outcome) in &verdict {
        match outcome {
            Ok(detail) => println!("PASS {check}: {detail}"),
            Err(why) => println!("FAIL {check}: {why}"),
        }
    }
    println!("console: {}", dir.join("console.log").display());
    if verdict.iter().any(|(_, o)| o.is_err()) || verdict.is_empty() {
        bail!("systemd-check failed");
    }
    Ok(())
}

/// The two .debs, from `cargo xtask package` (itself, not a second copy of its logic).
fn build_packages(
    root: &Path,
    dir: &Path,
    binaries: Option<&Path>,
) -> anyhow::Result<[PathBuf; 2]> {
    let out = dir.join("debs");
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "package".to_string(),
        "--out".into(),
        out.strip_prefix(root).unwrap_or(&out).display().to_string(),
    ];
    if let Some(b) = binaries {
        args.push("--binaries".into());
        args.push(b.display().to_string());
    }
    let status = Command::new(std::env::current_exe()?)
        .args(&args)
        .current_dir(root)
        .status()
        .context("run xtask package")?;
    if !status.success() {
        bail!("xtask package failed");
    }
    let find = |name: &str| -> anyhow::Result<PathBuf> {
        std::fs::read_dir(&out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}_")))
            })
            .with_context(|| format!("no {name}_*.deb in {}", out.display()))
    };
    Ok([find("collector")?, find("sensor")?])
}

/// debootstrap's minimal bookworm with systemd, cached: a finished tree is renamed into place,
/// so an interrupted build is never mistaken for one.
fn ensure_rootfs(dir: &Path, refresh: bool) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    if rootfs.join("usr/lib/systemd/systemd").exists() && !refresh {
        return Ok(rootfs);
    }
    if !have("debootstrap") {
        run_ok(Command::new("apt-get").args([
            "install",
            "-y",
            "--no-install-recommends",
            "debootstrap",
        ]))?;
    }
    let tmp = dir.join("rootfs.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "[systemd-check] debootstrap bookworm into {}",
        tmp.display()
    );
    run_ok(
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=systemd,systemd-sysv,dbus,iproute2,ca-certificates",
                "bookworm",
            ])
            .arg(&tmp)
            .arg("http://deb.debian.org/debian"),
    )?;
    // Downloaded .debs are not needed in the guest and would only grow every image.
    let _ = std::fs::remove_dir_all(tmp.join("var/cache/apt/archives"));
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::rename(&tmp, &rootfs)?;
    Ok(rootfs)
}

/// Writes the packages, the check script and its unit into the rootfs (the guest's changes live
/// in the scratch image only).
fn stage_guest(rootfs: &Path, debs: &[PathBuf; 2], learning_period: &str) -> anyhow::Result<()> {
    let opt = rootfs.join("opt/systemd-check");
    let _ = std::fs::remove_dir_all(&opt);
    std::fs::create_dir_all(&opt)?;
    std::fs::copy(&debs[0], opt.join("collector.deb"))?;
    std::fs::copy(&debs[1], opt.join("sensor.deb"))?;
    write_mode(&opt.join("run"), &guest_script(learning_period), 0o755)?;
    let system = rootfs.join("etc/systemd/system");
    std::fs::write(system.join("systemd-check.service"), CHECK_UNIT)?;
    std::fs::write(system.join("sc-loop.service"), LOOP_UNIT)?;
    let wants = system.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join("systemd-check.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/systemd-check.service", &link)?;
    std::fs::write(rootfs.join("etc/hostname"), "systemd-check\n")?;
    // No login prompt fighting the script for the serial console.
    let getty = system.join("serial-getty@ttyS0.service");
    let _ = std::fs::remove_file(&getty);
    std::os::unix::fs::symlink("/dev/null", &getty)?;
    Ok(())
}

fn write_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// An ext4 image of the rootfs with room for the installed packages and state.
fn make_image(rootfs: &Path, image: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(image);
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(rootfs)
            .arg(image)
            .arg("1536M"),
    )?;
    Ok(())
}

struct Boot {
    console: String,
    /// The `SYSTEMD-CHECK` lines, marker removed.
    lines: Vec<String>,
    seconds: f64,
    timed_out: bool,
}

/// Boots the image and reads the console until the guest powers off, says DONE, or the deadline.
fn boot(vmlinuz: &Path, image: &Path, timeout: Duration) -> anyhow::Result<Boot> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(vmlinuz)
        .args([
            "-append",
            "console=ttyS0 root=/dev/nvme0n1 rw panic=-1 systemd.show_status=0",
            "-drive",
        ])
        .arg(format!(
            "file={},if=none,id=root,format=raw",
            image.display()
        ))
        .args(["-device", "nvme,drive=root,serial=systemd-check"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
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
    let start = Instant::now();
    let mut boot = Boot {
        console: String::new(),
        lines: Vec::new(),
        seconds: 0.0,
        timed_out: false,
    };
    loop {
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            boot.timed_out = true;
            break;
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(i) = line.find(MARK) {
                    let ours = line[i + MARK.len()..].trim().to_owned();
                    eprintln!("[guest {:>5.0}s] {ours}", start.elapsed().as_secs_f64());
                    let done = ours == "DONE";
                    boot.lines.push(ours);
                    if done {
                        break;
                    }
                }
                boot.console.push_str(&line);
                boot.console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    boot.seconds = start.elapsed().as_secs_f64();
    Ok(boot)
}

/// What each check concluded from the guest's lines.
fn judge(lines: &[String]) -> Vec<(&'static str, Result<String, String>)> {
    let value = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let json = |key: &str| value(key).and_then(|v| serde_json::from_str::<Value>(&v).ok());
    let mut out = Vec::new();
    let failed = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .collect::<Vec<_>>();

    out.push((
        "both services active",
        match value("ACTIVE ") {
            Some(v) if v == "collector=active sensor=active" => Ok(v),
            Some(v) => Err(v),
            None => Err(missing(&failed)),
        },
    ));
    out.push((
        "test unit attributed to unit:sc-loop.service",
        match json("STATUS-LEARNING ") {
            Some(s)
                if workloads(&s)
                    .iter()
                    .any(|w| w.starts_with("unit:sc-loop.service")) =>
            {
                Ok("in `sensor status` workloads".into())
            }
            Some(s) => Err(format!("workloads: {:?}", workloads(&s))),
            None => Err(missing(&failed)),
        },
    ));
    out.push((
        "judged after its learning period",
        match (json("BASELINE-BEFORE "), value("DEVIATION ")) {
            (Some(b), Some(d)) if b["state"] == "detecting" && d.contains("/id") => Ok(format!(
                "baseline {}, then the new command reported: {d}",
                b["state"]
            )),
            (b, d) => Err(format!(
                "baseline {b:?}, deviation {d:?}; {}",
                missing(&failed)
            )),
        },
    ));
    out.push((
        "reinstall keeps the baseline",
        match (json("BASELINE-BEFORE "), json("BASELINE-AFTER ")) {
            (Some(b), Some(a))
                if a["state"] == "detecting"
                    && a["first_seen_unix_nanos"] == b["first_seen_unix_nanos"]
                    && a["behaviours"].as_u64() >= b["behaviours"].as_u64() =>
            {
                Ok(format!(
                    "state {}, first seen {}, behaviours {} -> {}",
                    a["state"], a["first_seen_unix_nanos"], b["behaviours"], a["behaviours"]
                ))
            }
            (b, a) => Err(format!("before {b:?}, after {a:?}; {}", missing(&failed))),
        },
    ));
    out.push((
        "sensor status healthy",
        match json("STATUS-FINAL ") {
            Some(s) => healthy(&s),
            None => Err(missing(&failed)),
        },
    ));
    out
}

fn workloads(status: &Value) -> Vec<String> {
    status["workloads"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Healthy: the agent runs, its programs are attached, it is connected to the collector and has
/// dropped nothing.
fn healthy(s: &Value) -> Result<String, String> {
    let attached = s["attached"].as_array().map_or(0, Vec::len);
    let detail = format!(
        "running={} attached={attached} skipped={} connected={} dropped={} lost={} events={}",
        s["running"],
        s["skipped"].as_array().map_or(0, Vec::len),
        s["delivery"]["connected"],
        s["delivery"]["dropped"],
        s["lost"],
        s["events"]
    );
    if s["running"] == true
        && attached > 0
        && s["delivery"]["connected"] == true
        && s["delivery"]["dropped"].as_u64() == Some(0)
    {
        Ok(detail)
    } else {
        Err(detail)
    }
}

fn missing(failed: &[&str]) -> String {
    if failed.is_empty() {
        "the guest never reported it".into()
    } else {
        format!("guest failed: {}", failed.join("; "))
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Runs the check script once the system is up; its output goes to the serial console.
const CHECK_UNIT: &str = "[Unit]
Description=sensor systemd-check (xtask)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/opt/systemd-check/run
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
";

/// The test workload: a loop of a few commands. Once /run/sc-loop-new exists it also runs `id`,
/// which its baseline has never seen.
const LOOP_UNIT: &str = "[Unit]
Description=systemd-check test workload
[Service]
ExecStart=/bin/sh -c 'while true; do cat /etc/hostname >/dev/null; ls /etc >/dev/null; date >/dev/null; if [ -e /run/sc-loop-new ]; then id >/dev/null; fi; sleep 2; done'
";

fn guest_script(learning_period: &str) -> String {
    format!(
        r#"#!/bin/sh
# Run in the guest by systemd-check.service. Every result is a "{MARK} ..." line on ttyS0.
M={MARK}
T0=$(date +%s)
say() {{ echo "$M $*" > /dev/ttyS0; }}
step() {{ say STEP "$(( $(date +%s) - T0 ))s $*"; }}
fail() {{ say FAIL "$*"; say DONE; systemctl poweroff; exit 1; }}
# wait_for SECONDS COMMAND...: polls once a second until COMMAND succeeds.
wait_for() {{ n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n-1)); done; return 1; }}
loop_baseline() {{ sensor baseline list --json 2>/dev/null | grep '"workload":"unit:sc-loop.service"'; }}
detecting() {{ loop_baseline | grep -q '"state":"detecting"'; }}
deviation() {{ collector deviations --workload unit:sc-loop.service 2>/dev/null | grep -m1 '/id'; }}
export DEBIAN_FRONTEND=noninteractive

say BOOTED "$(uname -r) $(systemctl --version | head -1) up $(cut -d' ' -f1 /proc/uptime)s"
dpkg -i /opt/systemd-check/collector.deb /opt/systemd-check/sensor.deb > /tmp/dpkg.log 2>&1 \
  || {{ sed "s/^/$M DPKG /" /tmp/dpkg.log > /dev/ttyS0; fail "dpkg -i"; }}
step "installed both packages"
sed -i 's/^#learning_period = .*/learning_period = "{learning_period}"/' /etc/sensor/sensor.toml
systemctl restart sensor
wait_for 300 systemctl is-active --quiet collector || fail "collector: $(systemctl is-active collector)"
wait_for 300 systemctl is-active --quiet sensor || fail "sensor: $(systemctl is-active sensor)"
wait_for 600 sh -c 'sensor status --json | grep -q "\"attached\":\["' \
  || fail "no status: $(journalctl -u sensor --no-pager | tail -5)"
say ACTIVE "collector=$(systemctl is-active collector) sensor=$(systemctl is-active sensor)"
step "services active"

systemctl start sc-loop.service
wait_for 300 sh -c 'sensor status --json | grep -q "unit:sc-loop.service"' \
  || fail "unit:sc-loop.service never in sensor status: $(sensor status --json)"
say STATUS-LEARNING "$(sensor status --json)"
step "sc-loop attributed"
wait_for 900 detecting || fail "sc-loop still learning: $(loop_baseline)"
step "sc-loop detecting"
touch /run/sc-loop-new
wait_for 300 deviation || fail "no deviation for the new command: $(collector deviations 2>&1 | head -5)"
say DEVIATION "$(deviation)"
step "new command reported"
say BASELINE-BEFORE "$(loop_baseline)"

dpkg -i --force-confold /opt/systemd-check/sensor.deb > /tmp/dpkg2.log 2>&1 \
  || {{ sed "s/^/$M DPKG /" /tmp/dpkg2.log > /dev/ttyS0; fail "reinstall"; }}
wait_for 300 systemctl is-active --quiet sensor || fail "sensor after reinstall: $(systemctl is-active sensor)"
wait_for 300 sh -c 'sensor status --json | grep -q "\"running\":true"' || true
wait_for 300 sh -c 'sensor status --json | grep -q "\"connected\":true"' || true
say BASELINE-AFTER "$(loop_baseline)"
step "reinstalled"
say STATUS-FINAL "$(sensor status --json)"
sensor status > /tmp/status.txt 2>&1; sed "s/^/$M TEXT /" /tmp/status.txt > /dev/ttyS0
say DONE
systemctl poweroff
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_status_is_refused() {
        let ok: Value = serde_json::json!({"running": true, "attached": ["a"], "skipped": [],
            "delivery": {"connected": true, "dropped": 0}, "lost": 0, "events": 5});
        assert!(healthy(&ok).is_ok());
        let mut down = ok.clone();
        down["delivery"]["connected"] = Value::Bool(false);
        assert!(healthy(&down).is_err());
    }

    #[test]
    fn missing_lines_fail_every_check() {
        let verdict = judge(&["FAIL dpkg -i".to_string()]);
        assert!(verdict.iter().all(|(_, o)| o.is_err()));
    }
}
