//! `cargo xtask package`: Debian packages for the sensor and the collector, built with
//! `dpkg-deb` from the binaries, the units and the default configurations in packaging/.
//!
//! Each package holds its binary in /usr/bin, its unit in /lib/systemd/system, its default
//! configuration in /etc/sensor (a conffile, mode 0640, group `sensor`), and maintainer scripts
//! that create the `sensor` system group, enable and (re)start the service where systemd runs,
//! stop it before removal or upgrade, and keep the state (baselines, spool, database) on upgrade
//! and removal; only `purge` deletes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the .deb files, relative to the workspace root.
    #[arg(long, default_value = "target/debian")]
    out: PathBuf,
    /// Take the `sensor` and `collector` binaries from this directory instead of building them
    /// (`cargo build --release`), e.g. target/debug for a quick check of the packaging.
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// Store the files uncompressed (fast; for checking the packaging with debug binaries).
    #[arg(long)]
    uncompressed: bool,
}

/// One package: its binary, unit, configuration and state.
struct Package {
    name: &'static str,
    description: &'static str,
    /// The unit as packaged (ExecStart on /usr/bin).
    unit: String,
    /// File name of the default configuration in packaging/ and /etc/sensor.
    config: &'static str,
    /// What `purge` deletes besides the configuration.
    state: &'static [&'static str],
}

const MAINTAINER: &str = "sensor maintainers <sensor@localhost>";

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let bins = match &args.binaries {
        Some(dir) => root.join(dir),
        None => {
            build_release(&root)?;
            root.join("target/release")
        }
    };
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let version = workspace_version(&root)?;
    let arch = architecture()?;
    for package in packages(&root, &bins)? {
        let compression = if args.uncompressed { "-Znone" } else { "-Zxz" };
        let deb = build(&package, &root, &bins, &out, &version, &arch, compression)?;
        println!("{}", deb.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn build_release(root: &Path) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--bins",
            "-p",
            "sensor-user",
            "-p",
            "collector",
        ])
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(())
}

/// `version` of `[workspace.package]`.
fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| {
            let value = l.trim().strip_prefix("version")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .context("no version in [workspace.package]")
}

fn architecture() -> anyhow::Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("run dpkg --print-architecture (is this a Debian system?)")?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn packages(root: &Path, bins: &Path) -> anyhow::Result<Vec<Package>> {
    // The sensor's unit is the one `sensor install` writes, moved to the packaged binary.
    let sensor_unit = sensor_unit_from_install(bins)?;
    let collector_unit = std::fs::read_to_string(root.join("packaging/collector.service"))?;
    Ok(vec![
        Package {
            name: "sensor",
            description: "eBPF behaviour sensor: learns what each workload (CI job, service, \
                          container) does and reports what is new",
            unit: packaged_unit(&sensor_unit, "sensor", None),
            config: "sensor.toml",
            state: &["/var/lib/sensor"],
        },
        Package {
            name: "collector",
            description: "collector for the eBPF behaviour sensor: stores and serves the \
                          deviations its agents report",
            // The dynamic user reads its configuration through the `sensor` group.
            unit: packaged_unit(
                &collector_unit,
                "collector",
                Some("SupplementaryGroups=sensor"),
            ),
            config: "collector.toml",
            state: &[
                "/var/lib/sensor-collector",
                "/var/lib/private/sensor-collector",
            ],
        },
    ])
}

/// The unit `sensor install --root` writes (the same code the installed service runs with).
fn sensor_unit_from_install(bins: &Path) -> anyhow::Result<String> {
    let tmp = tempfile::tempdir()?;
    let status = Command::new(bins.join("sensor"))
        .args(["install", "--root"])
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .status()
        .context("run sensor install --root")?;
    if !status.success() {
        bail!("sensor install --root failed");
    }
    Ok(std::fs::read_to_string(
        tmp.path().join("etc/systemd/system/sensor.service"),
    )?)
}

/// `unit` with its binary in /usr/bin, its header about manual installs replaced, and `extra`
/// added to [Service].
fn packaged_unit(unit: &str, name: &str, extra: Option<&str>) -> String {
    let mut out = format!(
        "# Installed by the {name} package; the configuration is /etc/sensor/{name}.toml.\n"
    );
    // The source's header speaks of manual installs: everything before the first section goes.
    for line in unit.lines().skip_while(|l| !l.starts_with('[')) {
        out.push_str(&line.replace("/usr/local/bin/", "/usr/bin/"));
        out.push('\n');
        if line == "[Service]"
            && let Some(extra) = extra
        {
            out.push_str(extra);
            out.push('\n');
        }
    }
    out
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn build(
    p: &Package,
    root: &Path,
    bins: &Path,
    out: &Path,
    version: &str,
    arch: &str,
    compression: &str,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let stage = tempfile::tempdir()?;
    let s = stage.path();
    let name = p.name;

    let binary = s.join("usr/bin").join(name);
    std::fs::create_dir_all(binary.parent().unwrap())?;
    std::fs::copy(bins.join(name), &binary)
        .with_context(|| format!("copy {}", bins.join(name).display()))?;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    write(
        &s.join(format!("lib/systemd/system/{name}.service")),
        &p.unit,
        0o644,
    )?;
    let config = std::fs::read_to_string(root.join("packaging").join(p.config))?;
    write(&s.join("etc/sensor").join(p.config), &config, 0o640)?;

    let debian = s.join("DEBIAN");
    let size_kib = dir_size(s)? / 1024 + 1;
    write(
        &debian.join("control"),
        &format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
             Installed-Size: {size_kib}\nDepends: libc6, passwd, init-system-helpers\n\
             Section: admin\nPriority: optional\nDescription: {}\n",
            p.description
        ),
        0o644,
    )?;
    write(
        &debian.join("conffiles"),
        &format!("/etc/sensor/{}\n", p.config),
        0o644,
    )?;
    write(&debian.join("postinst"), &postinst(p), 0o755)?;
    write(&debian.join("prerm"), &prerm(p), 0o755)?;
    write(&debian.join("postrm"), &postrm(p), 0o755)?;

    let deb = out.join(format!("{name}_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", compression, "--build"])
        .arg(s)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()
        .context("run dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb --build {name} failed");
    }
    Ok(deb)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Group, config ownership, then the service enabled and (re)started where systemd runs (an
/// upgrade restarts it on the new binary; the state directory is never touched).
fn postinst(p: &Package) -> String {
    let name = p.name;
    let config = p.config;
    format!(
        r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent group sensor >/dev/null || groupadd --system sensor
  chgrp sensor /etc/sensor/{config} && chmod 0640 /etc/sensor/{config}
  deb-systemd-helper unmask {name}.service >/dev/null || true
  deb-systemd-helper enable {name}.service >/dev/null || true
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    deb-systemd-invoke restart {name}.service >/dev/null || true
  fi
fi
exit 0
"#
    )
}

/// Stops the service before removal and upgrade (the new postinst restarts it).
fn prerm(p: &Package) -> String {
    let name = p.name;
    format!(
        r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove -o "$1" = upgrade ]; then
  deb-systemd-invoke stop {name}.service >/dev/null || true
fi
exit 0
"#
    )
}

/// Removal keeps the configuration and state; purge deletes both.
fn postrm(p: &Package) -> String {
    let name = p.name;
    let state = p.state.join(" ");
    format!(
        r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ]; then
  deb-systemd-helper mask {name}.service >/dev/null || true
fi
if [ "$1" = purge ]; then
  deb-systemd-helper purge {name}.service >/dev/null || true
  deb-systemd-helper unmask {name}.service >/dev/null || true
  rm -rf {state}
  rmdir /etc/sensor 2>/dev/null || true
fi
exit 0
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_run_the_packaged_binary() {
        let unit = "# Written by `sensor install`\n[Unit]\nDescription=x\n\n[Service]\n\
                    ExecStart=/usr/local/bin/collector serve --config /etc/sensor/collector.toml\n";
        let packaged = packaged_unit(unit, "collector", Some("SupplementaryGroups=sensor"));
        assert!(packaged.contains("ExecStart=/usr/bin/collector serve"));
        assert!(packaged.contains("[Service]\nSupplementaryGroups=sensor\n"));
        assert!(!packaged.contains("Written by"));
    }

    #[test]
    fn purge_alone_deletes_state() {
        let p = Package {
            name: "sensor",
            description: "",
            unit: String::new(),
            config: "sensor.toml",
            state: &["/var/lib/sensor"],
        };
        let script = postrm(&p);
        let purge = script.find("\"$1\" = purge").unwrap();
        let rm = script.find("rm -rf /var/lib/sensor").unwrap();
        assert!(rm > purge, "state is deleted only under purge");
        assert!(!prerm(&p).contains("rm "), "prerm never deletes");
        assert!(
            !postinst(&p).contains("/var/lib/sensor"),
            "postinst keeps state"
        );
    }
}
