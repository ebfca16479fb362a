//! The behaviours behind recently reported deviations, by deviation id, so that an operator can
//! accept a deviation into its baseline by id (`sensor baseline accept <id>`).
//!
//! The engine buffers each new-behaviour deviation it reports and appends them to
//! `<state>/baseline-ops/novelties.jsonl` whenever it persists. The file keeps the newest
//! [`KEEP`] entries (it is rewritten, crash-safely, when it holds twice that): older deviations
//! are accepted by workload and behaviour instead.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::behaviour::Behaviour;

/// Deviations remembered by id.
const KEEP: usize = 10_000;
const FILE: &str = "novelties.jsonl";

/// One reported deviation's behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Novelty {
    pub id: String,
    pub workload: String,
    pub behaviour: Behaviour,
    /// The other behaviours of the same event (a new executable's exec edge), accepted with it:
    /// once the executable is accepted its edge would be new in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Behaviour>,
}

/// Novelties not yet written, and how many lines the file holds.
#[derive(Debug, Default)]
pub(crate) struct Novelties {
    pending: Vec<Novelty>,
    /// Lines in the file, when known (counted on first write).
    lines: Option<usize>,
}

impl Novelties {
    /// Remembers deviation `id` of `workload`, showing `behaviour` in `event`. Only called
    /// for reported deviations, so recomputing the event's behaviours here costs nothing on the
    /// hot path.
    pub(crate) fn record(
        &mut self,
        id: &str,
        workload: &str,
        behaviour: &Behaviour,
        event: &crate::attribute::Attributed,
    ) {
        let also = Behaviour::of(event)
            .into_iter()
            .filter(|b| b != behaviour)
            .collect();
        self.pending.push(Novelty {
            id: id.to_owned(),
            workload: workload.to_owned(),
            behaviour: behaviour.clone(),
            also,
        });
    }

    #[cfg(test)]
    fn record_plain(&mut self, id: &str, workload: &str, behaviour: &Behaviour) {
        self.pending.push(Novelty {
            id: id.to_owned(),
            workload: workload.to_owned(),
            behaviour: behaviour.clone(),
            also: Vec::new(),
        });
    }

    /// The novelty of deviation `id`, written or pending.
    pub(crate) fn find(&self, dir: &Path, id: &str) -> Option<Novelty> {
        self.pending
            .iter()
            .rev()
            .find(|n| n.id == id)
            .cloned()
            .or_else(|| find(dir, id))
    }

    /// Appends the pending novelties to the file in `dir`.
    pub(crate) fn flush(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = path(dir);
        let lines = match self.lines {
            Some(n) => n,
            None => read_all(dir).len(),
        };
        let mut text = Vec::new();
        for n in &self.pending {
            serde_json::to_writer(&mut text, n).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(&text)?;
        let mut total = lines + self.pending.len();
        self.pending.clear();
        if total > 2 * KEEP {
            let all = read_all(dir);
            let keep = &all[all.len().saturating_sub(KEEP)..];
            let tmp = path.with_extension("jsonl.tmp");
            let mut out = std::fs::File::create(&tmp)?;
            for n in keep {
                serde_json::to_writer(&mut out, n).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            total = keep.len();
        }
        self.lines = Some(total);
        Ok(())
    }
}

fn path(dir: &Path) -> PathBuf {
    super::ops::side_dir(dir).join(FILE)
}

/// Every novelty in the file of `dir`, oldest first (unreadable lines skipped).
pub(crate) fn read_all(dir: &Path) -> Vec<Novelty> {
    let Ok(file) = std::fs::File::open(path(dir)) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The newest novelty of deviation `id` in the file of `dir`.
pub(crate) fn find(dir: &Path, id: &str) -> Option<Novelty> {
    read_all(dir).into_iter().rev().find(|n| n.id == id)
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

    #[test]
    fn finds_pending_and_written_novelties_and_stays_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Baselines(tmp.path().join("baselines"));
        let mut n = Novelties::default();
        let exe = Behaviour::Executable("/usr/bin/id".into());
        n.record_plain("d1", "w", &exe);
        assert_eq!(n.find(dir.path(), "d1").unwrap().behaviour, exe);
        n.flush(dir.path()).unwrap();
        assert_eq!(find(dir.path(), "d1").unwrap().workload, "w");
        for i in 0..(2 * KEEP + 5) {
            n.record_plain(&format!("x{i}"), "w", &exe);
        }
        n.flush(dir.path()).unwrap();
        let all = read_all(dir.path());
        assert_eq!(all.len(), KEEP);
        assert!(find(dir.path(), "d1").is_none());
        assert!(find(dir.path(), &format!("x{}", 2 * KEEP + 4)).is_some());
    }
}
