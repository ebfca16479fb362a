//! `collector install` / `collector uninstall`: the files that make the collector a systemd
//! service.
//!
//! The same shape as `sensor install` (sensor-user's `install.rs`), and the same file handling,
//! shared in the `ops` crate: nothing here talks to systemd, the caller prints the `systemctl`
//! command to run next, so one code path serves a live host, an image being built (`--root`) and
//! tests. What differs stays here: the sensor runs as root with BPF capabilities and needs its
//! state directory created, while the collector runs as a systemd `DynamicUser` whose state
//! directory (`StateDirectory=sensor-collector`, the database) systemd creates and owns; creating
//! it here as root would leave the service unable to write its database.
//!
//! Secrets stay root's on disk: the config (it may hold the PostgreSQL password) is 0640 and the
//! directory [`SECRETS_DIR`] (TLS key, query tokens) 0700, both owned by root. The unit hands them
//! to the dynamic user as systemd credentials (`LoadCredential=`), readable by the service and no
//! one else, and [`credential_path`] finds a secret's credential copy when the collector runs
//! under them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Where the installed binary lives (also the unit's `ExecStart`).
pub const BINARY: &str = "/usr/local/bin/collector";
/// The systemd unit.
pub const UNIT: &str = "/etc/systemd/system/collector.service";
/// The configuration file the unit runs with.
pub const CONFIG: &str = crate::config::DEFAULT_PATH;
/// Where the collector's secrets go (TLS key and certificates, query tokens): root's, 0700.
pub const SECRETS_DIR: &str = "/etc/sensor/collector";
/// The credential id the unit loads [`SECRETS_DIR`] under; systemd names each file's credential
/// `<id>_<file name>`.
const SECRETS_CREDENTIAL: &str = "secrets";
/// Mode of the installed config: root reads and writes it, its group reads it, others nothing.
pub const CONFIG_MODE: u32 = 0o640;
/// Mode of [`SECRETS_DIR`].
pub const SECRETS_DIR_MODE: u32 = 0o700;
/// The state directory (the database), created by systemd for the dynamic user.
pub const STATE_DIR: &str = "/var/lib/sensor-collector";
/// Where systemd really keeps a `DynamicUser` service's state (`STATE_DIR` links to it).
const PRIVATE_STATE_DIR: &str = "/var/lib/private/sensor-collector";
/// The link `systemctl enable` makes; removed on uninstall so nothing points at a missing unit.
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/collector.service";
/// The unit, as shipped in `packaging/`.
pub const UNIT_TEXT: &str = include_str!("../../packaging/collector.service");

/// What to run after installing.
pub const NEXT_INSTALL: &str = "systemctl daemon-reload && systemctl enable --now collector";
/// What to run after uninstalling.
pub const NEXT_UNINSTALL: &str = "systemctl stop collector; systemctl daemon-reload";

pub use ops::install::InstallError;
use ops::install::{io, restrict, under};

/// Writes the binary (a copy of `binary`), the unit and the config (only if absent) under
/// `root`. Returns one line per thing done.
pub fn install(root: &Path, binary: &Path) -> Result<Vec<String>, InstallError> {
    let mut done = vec![
        ops::install::install_binary(binary, &under(root, BINARY))?,
        ops::install::write_file(&under(root, UNIT), UNIT_TEXT, 0o644)?,
        ops::install::write_config_once(&under(root, CONFIG), crate::config::EXAMPLE, CONFIG_MODE)?,
    ];

    let secrets = under(root, SECRETS_DIR);
    match std::fs::create_dir(&secrets) {
        Ok(()) => {
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(SECRETS_DIR_MODE))
                .map_err(io("cannot set the mode of", &secrets))?;
            done.push(format!(
                "created {} (mode {SECRETS_DIR_MODE:o}: put the TLS key and query tokens here)",
                secrets.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            done.push(restrict(&secrets, SECRETS_DIR_MODE)?);
        }
        Err(e) => return Err(io("cannot create", &secrets)(e)),
    }
    Ok(done)
}

/// Where the collector reads the secret file `path` from: under systemd credentials
/// (`credentials_dir`, the `CREDENTIALS_DIRECTORY` the unit's `LoadCredential=` sets), a file of
/// [`SECRETS_DIR`] is read from its credential copy when there is one, since the dynamic user
/// cannot read root's directory; any other path is used as it is.
pub fn credential_path(path: &Path, credentials_dir: Option<&Path>) -> PathBuf {
    let (Some(dir), Some(name)) = (credentials_dir, path.file_name()) else {
        return path.to_owned();
    };
    if path.parent() != Some(Path::new(SECRETS_DIR)) {
        return path.to_owned();
    }
    let mut credential = std::ffi::OsString::from(format!("{SECRETS_CREDENTIAL}_"));
    credential.push(name);
    let candidate = dir.join(credential);
    if candidate.is_file() {
        candidate
    } else {
        path.to_owned()
    }
}

/// Removes what [`install`] wrote under `root`; with `purge`, the config and the state directory
/// (the database) too. Returns one line per thing removed; missing files are not an error.
pub fn uninstall(root: &Path, purge: bool) -> Result<Vec<String>, InstallError> {
    let mut files = vec![WANTS_LINK, UNIT, BINARY];
    if purge {
        files.push(CONFIG);
    }
    let mut done = ops::install::remove_files(root, &files)?;
    if purge {
        let secrets = under(root, SECRETS_DIR);
        match std::fs::remove_dir_all(&secrets) {
            Ok(()) => done.push(format!("removed {}", secrets.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &secrets)(e)),
        }
        // The config directory is shared with the sensor: it goes only when empty.
        if let Some(dir) = under(root, CONFIG).parent()
            && std::fs::remove_dir(dir).is_ok()
        {
            done.push(format!("removed {}", dir.display()));
        }
        for dir in [STATE_DIR, PRIVATE_STATE_DIR] {
            let dir = under(root, dir);
            // STATE_DIR is a symbolic link under DynamicUser: remove the link, not its target
            // (the target is removed on its own line).
            let removed = match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&dir),
                Ok(_) => std::fs::remove_dir_all(&dir),
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => done.push(format!("removed {}", dir.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove", &dir)(e)),
            }
        }
    }
    Ok(done)
}

/// `collector install`: copies this binary and writes the unit and config; prints what it did.
pub fn run_install(root: &Path) -> anyhow::Result<()> {
    let binary = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this binary to install it: {e}"))?;
    for line in install(root, &binary)? {
        println!("{line}");
    }
    println!("next: {NEXT_INSTALL}");
    Ok(())
}

/// `collector uninstall`: removes what `install` wrote; prints what it did.
pub fn run_uninstall(root: &Path, purge: bool) -> anyhow::Result<()> {
    let done = uninstall(root, purge)?;
    if done.is_empty() {
        println!("nothing to remove under {}", root.display());
    }
    for line in done {
        println!("{line}");
    }
    println!("next: {NEXT_UNINSTALL}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_installed_binary_with_the_installed_config() {
        let lines: Vec<&str> = UNIT_TEXT.lines().collect();
        let exec = format!("ExecStart={BINARY} serve --config ${{CREDENTIALS_DIRECTORY}}/config");
        assert!(lines.contains(&exec.as_str()), "{UNIT_TEXT}");
        for credential in [
            format!("LoadCredential=config:{CONFIG}"),
            format!("LoadCredential={SECRETS_CREDENTIAL}:{SECRETS_DIR}"),
        ] {
            assert!(lines.contains(&credential.as_str()), "{UNIT_TEXT}");
        }
        let state = format!(
            "StateDirectory={}",
            STATE_DIR.trim_start_matches("/var/lib/")
        );
        assert!(lines.contains(&state.as_str()), "{UNIT_TEXT}");
        // The default database lives in the directory systemd creates.
        assert!(crate::cli::DEFAULT_DB.starts_with(&format!("{STATE_DIR}/")));
    }

    #[test]
    fn install_then_uninstall() {
        let root = tempfile::tempdir().unwrap();
        let binary = root.path().join("built-collector");
        std::fs::write(&binary, b"\x7fELF").unwrap();
        let done = install(root.path(), &binary).unwrap();
        assert_eq!(done.len(), 4, "{done:?}");
        let installed = under(root.path(), BINARY);
        assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&installed), 0o755);
        let config = under(root.path(), CONFIG);
        assert_eq!(mode(&config), 0o640);
        assert_eq!(mode(&under(root.path(), SECRETS_DIR)), 0o700);
        assert_eq!(
            std::fs::read_to_string(under(root.path(), UNIT)).unwrap(),
            UNIT_TEXT
        );

        // A changed config survives a second install.
        std::fs::write(&config, "listen = \"0.0.0.0:50051\"\n").unwrap();
        let again = install(root.path(), &binary).unwrap();
        assert!(again.iter().any(|l| l.starts_with("kept")), "{again:?}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "listen = \"0.0.0.0:50051\"\n"
        );

        // What systemd would have made for the dynamic user.
        let private = under(root.path(), PRIVATE_STATE_DIR);
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("collector.db"), b"db").unwrap();
        std::os::unix::fs::symlink(&private, under(root.path(), STATE_DIR)).unwrap();

        let removed = uninstall(root.path(), false).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(config.exists() && private.join("collector.db").exists());
        let purged = uninstall(root.path(), true).unwrap();
        // config, the secrets, their directory, the state link and the private directory.
        assert_eq!(purged.len(), 5, "{purged:?}");
        assert!(!config.exists() && !private.exists());
        assert!(
            std::fs::symlink_metadata(under(root.path(), STATE_DIR)).is_err(),
            "{purged:?}"
        );
        assert!(uninstall(root.path(), true).unwrap().is_empty());
    }

    #[test]
    fn secrets_are_read_from_their_credential_copy_under_systemd() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("secrets_query-tokens"), "t\n").unwrap();
        let tokens = Path::new(SECRETS_DIR).join("query-tokens");
        assert_eq!(
            credential_path(&tokens, Some(creds.path())),
            creds.path().join("secrets_query-tokens")
        );
        assert_eq!(credential_path(&tokens, None), tokens, "not under systemd");
        let key = Path::new(SECRETS_DIR).join("server.key");
        assert_eq!(
            credential_path(&key, Some(creds.path())),
            key,
            "no credential copy"
        );
        let elsewhere = Path::new("/srv/query-tokens");
        assert_eq!(credential_path(elsewhere, Some(creds.path())), elsewhere);
    }

    #[test]
    fn the_config_directory_shared_with_the_sensor_stays() {
        let root = tempfile::tempdir().unwrap();
        let binary = root.path().join("built-collector");
        std::fs::write(&binary, b"\x7fELF").unwrap();
        install(root.path(), &binary).unwrap();
        let sensor_config = under(root.path(), "/etc/sensor/sensor.toml");
        std::fs::write(&sensor_config, "").unwrap();
        uninstall(root.path(), true).unwrap();
        assert!(sensor_config.exists());
    }
}
