//! Writing and removing a service's files under a root directory (`/` on a live host, an image
//! being built, a test directory). Every function answers one line saying what it did.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct InstallError {
    action: &'static str,
    path: String,
    source: std::io::Error,
}

/// Makes an [`InstallError`] of an I/O error: `io("cannot write", path)(e)`.
pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.display().to_string();
    move |source| InstallError {
        action,
        path,
        source,
    }
}

/// `path` (absolute) under `root`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Creates the directory `path` is in.
pub fn create_parent(path: &Path) -> Result<(), InstallError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(io("cannot create", dir)),
        None => Ok(()),
    }
}

/// Copies `binary` to `target` (mode 0755), beside then renamed: replacing a running binary in
/// place fails (ETXTBSY). Keeps `target` when it is `binary` itself.
pub fn install_binary(binary: &Path, target: &Path) -> Result<String, InstallError> {
    create_parent(target)?;
    let same = match (binary.canonicalize(), target.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(format!(
            "kept {} (it is the running binary)",
            target.display()
        ));
    }
    let tmp = target.with_extension("new");
    std::fs::copy(binary, &tmp).map_err(io("cannot copy the binary to", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io("cannot set the mode of", &tmp))?;
    std::fs::rename(&tmp, target).map_err(io("cannot write", target))?;
    Ok(format!("wrote {}", target.display()))
}

/// Writes `contents` to `path` with `mode`, replacing it.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<String, InstallError> {
    create_parent(path)?;
    std::fs::write(path, contents).map_err(io("cannot write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set the mode of", path))?;
    Ok(format!("wrote {}", path.display()))
}

/// Writes `example` to the config file `path` with `mode` only when there is none; an existing
/// one is kept, with any permission beyond `mode` taken away.
pub fn write_config_once(path: &Path, example: &str, mode: u32) -> Result<String, InstallError> {
    create_parent(path)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            use std::io::Write as _;
            // Restricted before anything is written into it.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io("cannot set the mode of", path))?;
            file.write_all(example.as_bytes())
                .map_err(io("cannot write", path))?;
            Ok(format!(
                "wrote {} (every setting at its default, mode {mode:o})",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path, mode),
        Err(e) => Err(io("cannot write", path)(e)),
    }
}

/// Keeps an existing file or directory, taking away any permission beyond `mode` (an earlier
/// install, or an operator, may have left it readable by everyone).
pub fn restrict(path: &Path, mode: u32) -> Result<String, InstallError> {
    let meta = std::fs::metadata(path).map_err(io("cannot read", path))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode == 0 {
        return Ok(format!("kept {} (exists)", path.display()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))
        .map_err(io("cannot set the mode of", path))?;
    Ok(format!(
        "kept {} (exists; mode {current:o} restricted to {:o})",
        path.display(),
        current & mode
    ))
}

/// Removes each of `paths` under `root` that exists (a missing one is not an error); one line
/// per file removed.
pub fn remove_files(root: &Path, paths: &[&str]) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    for path in paths {
        let path = under(root, path);
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path)(e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn configs_are_written_once_and_restricted() {
        let root = tempfile::tempdir().unwrap();
        let config = under(root.path(), "/etc/x/x.toml");
        let line = write_config_once(&config, "# example\n", 0o640).unwrap();
        assert!(line.starts_with("wrote"), "{line}");
        assert_eq!(mode(&config), 0o640);
        std::fs::write(&config, "mine\n").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
        let line = write_config_once(&config, "# example\n", 0o640).unwrap();
        assert!(line.contains("restricted to 640"), "{line}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "mine\n");
        assert_eq!(
            remove_files(root.path(), &["/etc/x/x.toml", "/etc/x/none"]).unwrap(),
            [format!("removed {}", config.display())]
        );
    }
}
