//! Baseline versions and their change log.
//!
//! A baseline's version (in its file, `baseline_version`) goes up by one each time it is written
//! with a different set of behaviours or a different frozen flag: a learning tick that learnt
//! something, an accepted deviation, a reset, an import, a freeze. Each such change is appended to
//! `<state>/baseline-ops/history/<file stem>.jsonl` as one [`Change`] line (what was added and removed).
//! Any kept version is rebuilt by undoing the newer changes from the current set, so `sensor
//! baseline diff workload@3 workload` works without storing whole snapshots. The log is compacted
//! to its newest entries when it grows past a few times the baseline's own size; versions older
//! than what it keeps can no longer be rebuilt (the error says which are kept).
//!
//! The log is written before the baseline file. A crash between the two leaves an entry for a
//! version the file never reached; the next write reuses that version number and appends a new
//! entry, and readers take the last entry of each version.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::behaviour::{Behaviour, Dimension};

/// The log is compacted once it is larger than this many times the baseline file (and larger
/// than [`MIN_LOG_BYTES`]); compaction keeps the newest entries filling half of that.
const LOG_SIZE_FACTOR: u64 = 4;
const MIN_LOG_BYTES: u64 = 64 * 1024;

/// One version step of a baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The version this change produced.
    pub version: u64,
    /// When it was written, ns since the epoch.
    pub unix_nanos: i64,
    /// Why: `learned`, `accept`, `reset`, `import`, `freeze`, `unfreeze`, `merged`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<Behaviour>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Behaviour>,
    /// The new frozen flag, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("version {wanted} does not exist: the current version is {current}")]
    Future { wanted: u64, current: u64 },
    #[error(
        "version {wanted} is no longer kept (the change log keeps versions {oldest} to {current})"
    )]
    Forgotten {
        wanted: u64,
        oldest: u64,
        current: u64,
    },
}

/// Where the change log of the baseline file `name` in `dir` lives.
pub(crate) fn log_path(dir: &Path, name: &str) -> PathBuf {
    let stem = name.strip_suffix(".json").unwrap_or(name);
    super::ops::side_dir(dir)
        .join("history")
        .join(format!("{stem}.jsonl"))
}

/// What `new` adds to and removes from `old`.
pub(crate) fn changes(
    old: &BTreeSet<Behaviour>,
    new: &BTreeSet<Behaviour>,
) -> (Vec<Behaviour>, Vec<Behaviour>) {
    (
        new.difference(old).cloned().collect(),
        old.difference(new).cloned().collect(),
    )
}

/// Appends `change` to the log of baseline file `name`, compacting the log when it is larger
/// than [`LOG_SIZE_FACTOR`] times `baseline_bytes`.
pub(crate) fn append(
    dir: &Path,
    name: &str,
    change: &Change,
    baseline_bytes: u64,
) -> std::io::Result<()> {
    let path = log_path(dir, name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    file.write_all(&line)?;
    file.sync_data()?;
    let len = file.metadata()?.len();
    let limit = (baseline_bytes * LOG_SIZE_FACTOR).max(MIN_LOG_BYTES);
    if len > limit {
        compact(&path, limit / 2)?;
    }
    Ok(())
}

/// Rewrites the log keeping the newest entries that fit in `keep_bytes` (at least one).
fn compact(path: &Path, keep_bytes: u64) -> std::io::Result<()> {
    let text = std::fs::read(path)?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut kept = 0u64;
    let mut start = lines.len();
    while start > 0 {
        let size = lines[start - 1].len() as u64 + 1;
        if kept + size > keep_bytes && start < lines.len() {
            break;
        }
        kept += size;
        start -= 1;
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::fs::File::create(&tmp)?;
    for line in &lines[start..] {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The change log of baseline file `name`, oldest first, one entry per version (the last
/// written wins) and none beyond `current`. Unreadable lines (a torn last write) are skipped.
pub(crate) fn read(dir: &Path, name: &str, current: u64) -> Vec<Change> {
    let Ok(file) = std::fs::File::open(log_path(dir, name)) else {
        return Vec::new();
    };
    let mut by_version = BTreeMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if let Ok(change) = serde_json::from_str::<Change>(&line)
            && change.version <= current
        {
            by_version.insert(change.version, change);
        }
    }
    by_version.into_values().collect()
}

/// The behaviours of version `wanted`, rebuilt from the `current` set (of version
/// `current_version`) by undoing the newer changes in `log`.
pub(crate) fn at_version(
    current: &BTreeSet<Behaviour>,
    current_version: u64,
    wanted: u64,
    log: &[Change],
) -> Result<BTreeSet<Behaviour>, VersionError> {
    if wanted > current_version {
        return Err(VersionError::Future {
            wanted,
            current: current_version,
        });
    }
    let mut set = current.clone();
    for version in (wanted + 1..=current_version).rev() {
        let Some(change) = log.iter().find(|c| c.version == version) else {
            // The oldest version that can be rebuilt: the one before the oldest unbroken
            // run of changes that ends at the current version.
            let mut oldest = current_version;
            while oldest > 0 && log.iter().any(|c| c.version == oldest) {
                oldest -= 1;
            }
            return Err(VersionError::Forgotten {
                wanted,
                oldest,
                current: current_version,
            });
        };
        for b in &change.added {
            set.remove(b);
        }
        set.extend(change.removed.iter().cloned());
    }
    Ok(set)
}

/// What `b` has that `a` has not (added) and the reverse (removed), per dimension; dimensions
/// without differences are left out.
pub fn diff(
    a: &BTreeSet<Behaviour>,
    b: &BTreeSet<Behaviour>,
) -> BTreeMap<Dimension, DimensionDiff> {
    let mut out: BTreeMap<Dimension, DimensionDiff> = BTreeMap::new();
    for added in b.difference(a) {
        out.entry(added.dimension())
            .or_default()
            .added
            .push(added.clone());
    }
    for removed in a.difference(b) {
        out.entry(removed.dimension())
            .or_default()
            .removed
            .push(removed.clone());
    }
    out
}

/// The differences of one dimension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DimensionDiff {
    pub added: Vec<Behaviour>,
    pub removed: Vec<Behaviour>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baselines directory inside a temporary directory (side files go beside it).
    struct Baselines(PathBuf);
    impl Baselines {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    fn exe(p: &str) -> Behaviour {
        Behaviour::Executable(p.into())
    }

    fn change(version: u64, added: &[&str], removed: &[&str]) -> Change {
        Change {
            version,
            unix_nanos: 0,
            reason: "learned".into(),
            added: added.iter().map(|p| exe(p)).collect(),
            removed: removed.iter().map(|p| exe(p)).collect(),
            frozen: None,
        }
    }

    #[test]
    fn rebuilds_old_versions_by_undoing_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Baselines(tmp.path().join("baselines"));
        for c in [
            change(1, &["/a", "/b"], &[]),
            change(2, &["/c"], &[]),
            change(3, &["/d"], &["/a"]),
        ] {
            append(dir.path(), "w.json", &c, 100).unwrap();
        }
        let log = read(dir.path(), "w.json", 3);
        let current: BTreeSet<_> = ["/b", "/c", "/d"].map(exe).into();
        let v1 = at_version(&current, 3, 1, &log).unwrap();
        assert_eq!(v1, ["/a", "/b"].map(exe).into());
        assert_eq!(at_version(&current, 3, 0, &log).unwrap(), BTreeSet::new());
        let d = diff(&v1, &current);
        let exes = &d[&Dimension::Executable];
        assert_eq!(exes.added, ["/c", "/d"].map(exe));
        assert_eq!(exes.removed, [exe("/a")]);
        assert!(matches!(
            at_version(&current, 3, 4, &log),
            Err(VersionError::Future { .. })
        ));
    }

    #[test]
    fn last_entry_of_a_version_wins_and_torn_lines_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Baselines(tmp.path().join("baselines"));
        append(dir.path(), "w.json", &change(1, &["/x"], &[]), 100).unwrap();
        // A crash after the log write: version 2 never reached the baseline file...
        append(dir.path(), "w.json", &change(2, &["/lost"], &[]), 100).unwrap();
        // ...so the next write is version 2 again.
        append(dir.path(), "w.json", &change(2, &["/y"], &[]), 100).unwrap();
        let path = log_path(dir.path(), "w.json");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"version\":3,\"unix_na").unwrap();
        let log = read(dir.path(), "w.json", 2);
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].added, [exe("/y")]);
    }

    #[test]
    fn compaction_keeps_the_newest_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Baselines(tmp.path().join("baselines"));
        let pad = "x".repeat(400);
        let big: Vec<String> = (0..200).map(|i| format!("/usr/lib/{pad}/{i:04}")).collect();
        let mut current = BTreeSet::new();
        for v in 1..=200u64 {
            let p = &big[v as usize - 1];
            current.insert(exe(p));
            append(dir.path(), "w.json", &change(v, &[p], &[]), 1).unwrap();
        }
        let len = std::fs::metadata(log_path(dir.path(), "w.json"))
            .unwrap()
            .len();
        assert!(len <= MIN_LOG_BYTES, "{len}");
        let log = read(dir.path(), "w.json", 200);
        assert_eq!(log.last().unwrap().version, 200);
        let oldest = log[0].version;
        assert!(oldest > 1);
        assert!(at_version(&current, 200, oldest - 1, &log).is_ok());
        match at_version(&current, 200, 0, &log) {
            Err(VersionError::Forgotten { oldest: o, .. }) => assert_eq!(o, oldest - 1),
            other => panic!("{other:?}"),
        }
    }
}
