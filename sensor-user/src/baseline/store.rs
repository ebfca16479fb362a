//! Baseline files: `<state_dir>/baselines/<safe name>.json`, one per workload, written
//! crash-safely (temporary file, fsync, rename, fsync of the directory).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::learned::WorkloadBaseline;

/// Version of the file format written by this build.
const FORMAT_VERSION: u32 = 1;
/// Longest readable part of a file name (the hash suffix keeps names unique).
const MAX_NAME_PREFIX: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot create the baseline directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the baseline directory {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read baseline file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "baseline file {} is corrupt ({source}); move it out of the baselines directory to start \
         learning that workload afresh, then restart the agent",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "baseline file {} has format version {version}, this agent reads version {FORMAT_VERSION}; \
         upgrade the agent, or move the file away to relearn that workload",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "baseline files {} and {} are both for workload {workload}; move one of them away",
        path.display(),
        other.display()
    )]
    Duplicate {
        path: PathBuf,
        other: PathBuf,
        workload: String,
    },
    #[error("cannot write baseline file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "baselines in {} are in use by another sensor (it holds {}); one agent per state directory",
        dir.display(),
        lock.display()
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The on-disk form of one workload's baseline.
#[derive(Serialize, Deserialize)]
pub(crate) struct BaselineFile {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    pub workload: String,
    /// Version of the baseline itself, see `version.rs` (0 in files written before it existed).
    #[serde(default)]
    pub baseline_version: u64,
    #[serde(flatten)]
    pub baseline: WorkloadBaseline,
}

/// Reads and checks one baseline file.
pub(crate) fn read_file(path: &Path) -> Result<BaselineFile, BaselineError> {
    let text = std::fs::read(path).map_err(|source| BaselineError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: BaselineFile =
        serde_json::from_slice(&text).map_err(|source| BaselineError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
    if file.version != FORMAT_VERSION {
        return Err(BaselineError::UnsupportedVersion {
            path: path.to_owned(),
            version: file.version,
        });
    }
    Ok(file)
}

/// The file name of `workload`'s baseline: its id with every character other than
/// `[A-Za-z0-9._-]` replaced by `_`, cut to 80 bytes, then `-` and 16 hex digits of its SHA-256 so
/// ids that sanitise alike stay apart.
pub(crate) fn file_name(workload: &str) -> String {
    let mut name: String = workload
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_PREFIX)
        .collect();
    let digest = Sha256::digest(workload.as_bytes());
    name.push('-');
    for b in &digest[..8] {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(".json");
    name
}

/// Creates `dir` if needed and loads every `*.json` in it: workload id → (file name, baseline).
pub(crate) fn load_all(
    dir: &Path,
) -> Result<HashMap<String, (String, WorkloadBaseline)>, BaselineError> {
    std::fs::create_dir_all(dir).map_err(|source| BaselineError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let read_dir_err = |source| BaselineError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut loaded: HashMap<String, (String, WorkloadBaseline)> = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Leftover temporary files of an interrupted write are not baselines.
        if !name.ends_with(".json") || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let text = std::fs::read(&path).map_err(|source| BaselineError::Read {
            path: path.clone(),
            source,
        })?;
        let file: BaselineFile =
            serde_json::from_slice(&text).map_err(|source| BaselineError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if file.version != FORMAT_VERSION {
            return Err(BaselineError::UnsupportedVersion {
                path,
                version: file.version,
            });
        }
        if let Some((other, _)) = loaded.get(&file.workload) {
            return Err(BaselineError::Duplicate {
                other: dir.join(other),
                path,
                workload: file.workload,
            });
        }
        loaded.insert(file.workload, (name, file.baseline));
    }
    Ok(loaded)
}

/// Writes `baseline` to `dir/name` crash-safely: a reader (or a restart after a crash) sees the
/// old file or the new one, never a mix.
pub(crate) fn save(
    dir: &Path,
    name: &str,
    workload: &str,
    baseline: &WorkloadBaseline,
) -> Result<(), BaselineError> {
    save_versioned(dir, name, workload, baseline, "learned").map(|_| ())
}

/// As [`save`], and returns the baseline's version: the file's previous version, plus one when
/// the behaviours or the frozen flag changed (that change is logged with `reason`, see
/// `version.rs`).
pub(crate) fn save_versioned(
    dir: &Path,
    name: &str,
    workload: &str,
    baseline: &WorkloadBaseline,
    reason: &str,
) -> Result<u64, BaselineError> {
    let path = dir.join(name);
    let previous = read_file(&path).ok();
    let empty = std::collections::BTreeSet::new();
    let (old_version, old_set, old_frozen) = previous.as_ref().map_or((0, &empty, false), |f| {
        (
            f.baseline_version,
            f.baseline.learned.behaviours(),
            f.baseline.frozen,
        )
    });
    let (added, removed) = super::version::changes(old_set, baseline.learned.behaviours());
    let changed = !added.is_empty() || !removed.is_empty() || old_frozen != baseline.frozen;
    let baseline_version = old_version + u64::from(changed);
    if changed {
        let change = super::version::Change {
            version: baseline_version,
            unix_nanos: crate::event::unix_nanos(std::time::SystemTime::now()),
            reason: reason.to_owned(),
            added,
            removed,
            frozen: (old_frozen != baseline.frozen).then_some(baseline.frozen),
        };
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        // The log only serves diffs: a baseline that cannot log is still saved.
        if let Err(error) = super::version::append(dir, name, &change, size) {
            tracing::warn!(workload, %error, "cannot append to the baseline change log");
        }
    }
    write_file(&path, workload, baseline_version, baseline)?;
    Ok(baseline_version)
}

fn write_file(
    path: &Path,
    workload: &str,
    baseline_version: u64,
    baseline: &WorkloadBaseline,
) -> Result<(), BaselineError> {
    let path = path.to_owned();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("baseline.json");
    let tmp = dir.join(format!("{name}.tmp"));
    let write_err = |source| BaselineError::Write {
        path: path.clone(),
        source,
    };
    let file = BaselineFile {
        version: FORMAT_VERSION,
        workload: workload.to_owned(),
        baseline_version,
        baseline: baseline.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| write_err(e.into()))?;
    let mut out = std::fs::File::create(&tmp).map_err(write_err)?;
    out.write_all(&json).map_err(write_err)?;
    out.sync_all().map_err(write_err)?;
    drop(out);
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        let a = file_name("github:acme/app/ci/build");
        assert!(a.starts_with("github_acme_app_ci_build-"), "{a}");
        assert!(a.ends_with(".json"));
        assert_ne!(a, file_name("github:acme/app/ci_build"));
        let long = file_name(&"x/".repeat(500));
        assert!(long.len() <= MAX_NAME_PREFIX + 1 + 16 + 5);
        assert!(!file_name("cgroup:/../..").contains('/'));
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = WorkloadBaseline::default();
        b.learning_runs.push("1".into());
        b.reported.insert("abc".into());
        let name = file_name("unit:a.service");
        save(dir.path(), &name, "unit:a.service", &b).expect("save");
        std::fs::write(dir.path().join("junk.json.tmp"), "{").expect("write");
        let loaded = load_all(dir.path()).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["unit:a.service"], (name, b));
    }
}
