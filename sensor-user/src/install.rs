//! `sensor install` / `sensor uninstall`: the files that make the sensor a systemd service.
//!
//! Nothing here talks to systemd: the caller prints the `systemctl` command to run next, so the
//! same code serves a live host, an image being built (`--root`) and tests.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

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

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct InstallError {
    action: &'static str,
    path: String,
    source: std::io::Error,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.display().to_string();
    move |source| InstallError {
        action,
        path,
        source,
    }
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

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
    let mut done = Vec::new();

    let target = under(root, BINARY);
    create_parent(&target)?;
    let same = match (binary.canonicalize(), target.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        done.push(format!(
            "kept {} (it is the running binary)",
            target.display()
        ));
    } else {
        // Copy beside, then rename: replacing a running binary in place fails (ETXTBSY).
        let tmp = target.with_extension("new");
        std::fs::copy(binary, &tmp).map_err(io("cannot copy the binary to", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot set the mode of", &tmp))?;
        std::fs::rename(&tmp, &target).map_err(io("cannot write", &target))?;
        done.push(format!("wrote {}", target.display()));
    }

    let unit_path = under(root, UNIT);
    create_parent(&unit_path)?;
    std::fs::write(&unit_path, unit()).map_err(io("cannot write", &unit_path))?;
    std::fs::set_permissions(&unit_path, std::fs::Permissions::from_mode(0o644))
        .map_err(io("cannot set the mode of", &unit_path))?;
    done.push(format!("wrote {}", unit_path.display()));

    let config = under(root, CONFIG);
    create_parent(&config)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
    {
        Ok(mut file) => {
            use std::io::Write as _;
            file.write_all(crate::config::EXAMPLE.as_bytes())
                .map_err(io("cannot write", &config))?;
            done.push(format!(
                "wrote {} (every setting at its default)",
                config.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            done.push(format!("kept {} (exists)", config.display()));
        }
        Err(e) => return Err(io("cannot write", &config)(e)),
    }

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
    let mut done = Vec::new();
    let mut paths = vec![WANTS_LINK, UNIT, BINARY];
    if purge {
        paths.push(CONFIG);
    }
    for path in paths {
        let path = under(root, path);
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path)(e)),
        }
    }
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

fn create_parent(path: &Path) -> Result<(), InstallError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(io("cannot create", dir)),
        None => Ok(()),
    }
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
