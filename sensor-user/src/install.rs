//! `sensor install` / `sensor uninstall`: the files that make the sensor a systemd service.
//!
//! Nothing here talks to systemd: the caller prints the `systemctl` command to run next, so the
//! same code serves a live host, an image being built (`--root`) and tests.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Where the installed binary lives (also the unit's `ExecStart`).
pub const BINARY: &str = "/usr/local/bin/sensor";
/// The systemd unit.
pub const UNIT: &str = "/etc/systemd/system/sensor.service";
/// The configuration file the unit runs with.
pub const CONFIG: &str = crate::config::DEFAULT_PATH;
/// The state directory (baselines, spool, status), readable by root only.
pub const STATE_DIR: &str = "/var/lib/sensor";
/// The link `systemctl enable` makes; removed on uninstall so nothing points at a missing unit.
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/sensor.service";

/// What to run after installing.
pub const NEXT_INSTALL: &str = "systemctl daemon-reload && systemctl enable --now sensor";
/// What to run after uninstalling.
pub const NEXT_UNINSTALL: &str = "systemctl stop sensor; systemctl daemon-reload";

pub use ops::install::InstallError;
use ops::install::{io, under};

/// The systemd unit: runs the installed binary with the installed config, as root, restarted
/// whatever the exit.
pub fn unit() -> String {
    format!(
        "\
# Written by `sensor install`; `sensor uninstall` removes it.
[Unit]
Description=sensor: eBPF behavior baselines for non-human identities (audit only)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={BINARY} run --config {CONFIG}
Restart=always
RestartSec=5
# Loading eBPF programs, reading kernel memory through them and every process's /proc entries
# and mounting tracefs/bpffs need root with these capabilities. No ProtectSystem=, PrivateTmp=
# or similar: they give the service its own mount namespace, and the sensor must see (and mount
# in) the host's.
User=root
CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_RESOURCE CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE
LimitMEMLOCK=infinity
NoNewPrivileges=yes
# Time to drain the kernel, save baselines and spool what is undelivered.
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"
    )
}

/// Writes the unit, the binary (a copy of `binary`), the config (only if absent) and the state
/// directory under `root`. Returns one line per thing done.
pub fn install(root: &Path, binary: &Path) -> Result<Vec<String>, InstallError> {
    let mut done = vec![
        ops::install::install_binary(binary, &under(root, BINARY))?,
        ops::install::write_file(&under(root, UNIT), &unit(), 0o644)?,
        // It names files, holds no secret, and `sensor status` run by anyone reads it.
        ops::install::write_config_once(&under(root, CONFIG), crate::config::EXAMPLE, 0o644)?,
    ];

    let state = under(root, STATE_DIR);
    std::fs::create_dir_all(&state).map_err(io("cannot create", &state))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
        .map_err(io("cannot set the mode of", &state))?;
    done.push(format!("created {} (mode 0700)", state.display()));
    Ok(done)
}

/// Removes what [`install`] wrote under `root`; with `purge`, the config and state directory
/// too. Returns one line per thing removed; missing files are not an error.
pub fn uninstall(root: &Path, purge: bool) -> Result<Vec<String>, InstallError> {
    let mut paths = vec![WANTS_LINK, UNIT, BINARY];
    if purge {
        paths.push(CONFIG);
    }
    let mut done = ops::install::remove_files(root, &paths)?;
    if purge {
        // The config directory goes only when nothing else is left in it.
        let config_dir = under(root, CONFIG);
        if let Some(dir) = config_dir.parent()
            && std::fs::remove_dir(dir).is_ok()
        {
            done.push(format!("removed {}", dir.display()));
        }
        let state = under(root, STATE_DIR);
        match std::fs::remove_dir_all(&state) {
            Ok(()) => done.push(format!("removed {}", state.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &state)(e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_then_uninstall() {
        let root = tempfile::tempdir().unwrap();
        let binary = root.path().join("built-sensor");
        std::fs::write(&binary, b"\x7fELF").unwrap();
        let done = install(root.path(), &binary).unwrap();
        assert_eq!(done.len(), 4, "{done:?}");
        let installed = under(root.path(), BINARY);
        assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&installed), 0o755);
        assert_eq!(mode(&under(root.path(), STATE_DIR)), 0o700);
        let unit = std::fs::read_to_string(under(root.path(), UNIT)).unwrap();
        assert!(
            unit.contains(
                "\nExecStart=/usr/local/bin/sensor run --config /etc/sensor/sensor.toml\n"
            )
        );
        assert!(unit.contains("\nRestart=always\n"));

        // A changed config survives a second install.
        let config = under(root.path(), CONFIG);
        std::fs::write(&config, "learning_runs = 2\n").unwrap();
        let again = install(root.path(), &binary).unwrap();
        assert!(again.iter().any(|l| l.starts_with("kept")), "{again:?}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "learning_runs = 2\n"
        );

        let removed = uninstall(root.path(), false).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(config.exists() && under(root.path(), STATE_DIR).exists());
        let purged = uninstall(root.path(), true).unwrap();
        assert_eq!(purged.len(), 3, "{purged:?}");
        assert!(!config.exists() && !under(root.path(), STATE_DIR).exists());
        assert!(uninstall(root.path(), true).unwrap().is_empty());
    }
}
