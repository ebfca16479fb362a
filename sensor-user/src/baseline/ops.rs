//! Operator actions on baselines: accept a deviation (or any behaviour) into a workload's
//! baseline, reset it, freeze or unfreeze it, import an export; and the read side used by
//! `sensor baseline list | show | export | diff`.
//!
//! Every change goes through [`Operation`] and one function, [`change`], whether a running agent
//! applies it to its in-memory baseline ([`Baselines::apply`], reached through the request mailbox
//! in `requests.rs`) or `sensor baseline` applies it to the file itself when no agent holds the
//! state directory ([`apply_offline`]). Each applied change is saved at once and versioned
//! (`version.rs`). Reads need no coordination: baseline files are only ever replaced by rename.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::export::Export;
use super::learned::WorkloadBaseline;
use super::store::{self, BaselineError};
use super::version::{self, VersionError};
use super::{Baselines, MAX_BEHAVIOURS_PER_DIMENSION, Tracked, novelties};
use crate::behaviour::Behaviour;

/// A change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Adds behaviours to a workload's baseline (creating it if needed).
    Accept {
        workload: String,
        behaviours: Vec<Behaviour>,
    },
    /// Adds the behaviour of a recently reported deviation to its workload's baseline.
    AcceptDeviation {
        id: String,
    },
    /// Forgets everything about a workload: it learns afresh.
    Reset {
        workload: String,
    },
    /// Stops learning: every event is judged, nothing is added.
    Freeze {
        workload: String,
    },
    Unfreeze {
        workload: String,
    },
    /// Replaces a workload's learnt state with an export (creating it if needed).
    Import {
        export: Export,
    },
}

/// What an applied operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub workload: String,
    /// The baseline's version after the change.
    pub version: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no baseline for workload {0:?} (see `sensor baseline list`)")]
    UnknownWorkload(String),
    #[error(
        "no deviation {0:?} among the recently reported ones; accept its behaviour by workload \
         instead (`sensor baseline accept --workload W --behaviour JSON`)"
    )]
    UnknownDeviation(String),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("{workload}: {source}")]
    Version {
        workload: String,
        source: VersionError,
    },
    #[error("{0}")]
    Request(String),
}

impl Operation {
    /// The workload it changes (`None` until an `AcceptDeviation` is resolved).
    pub fn workload(&self) -> Option<&str> {
        match self {
            Operation::Accept { workload, .. }
            | Operation::Reset { workload }
            | Operation::Freeze { workload }
            | Operation::Unfreeze { workload } => Some(workload),
            Operation::Import { export } => Some(&export.workload),
            Operation::AcceptDeviation { .. } => None,
        }
    }

    /// The reason written to the change log.
    fn reason(&self) -> &'static str {
        match self {
            Operation::Accept { .. } | Operation::AcceptDeviation { .. } => "accept",
            Operation::Reset { .. } => "reset",
            Operation::Freeze { .. } => "freeze",
            Operation::Unfreeze { .. } => "unfreeze",
            Operation::Import { .. } => "import",
        }
    }

    /// Whether it may create a baseline that does not exist yet.
    fn creates(&self) -> bool {
        matches!(self, Operation::Accept { .. } | Operation::Import { .. })
    }

    /// Turns an `AcceptDeviation` into the `Accept` of its behaviour, found by `lookup`.
    fn resolve(
        self,
        lookup: impl FnOnce(&str) -> Option<novelties::Novelty>,
    ) -> Result<Operation, OpsError> {
        match self {
            Operation::AcceptDeviation { id } => match lookup(&id) {
                Some(n) => Ok(Operation::Accept {
                    workload: n.workload,
                    behaviours: std::iter::once(n.behaviour).chain(n.also).collect(),
                }),
                None => Err(OpsError::UnknownDeviation(id)),
            },
            other => Ok(other),
        }
    }
}

/// Applies a resolved operation to `b`; returns what it did, for the operator.
fn change(op: &Operation, b: &mut WorkloadBaseline) -> String {
    match op {
        Operation::Accept { behaviours, .. } => {
            let (mut added, mut known, mut full) = (0, 0, 0);
            for behaviour in behaviours {
                match b
                    .learned
                    .learn(behaviour.clone(), MAX_BEHAVIOURS_PER_DIMENSION)
                {
                    super::bounded::Learn::Added => added += 1,
                    super::bounded::Learn::Known => known += 1,
                    super::bounded::Learn::Full => full += 1,
                }
            }
            let mut text = format!("accepted {added} behaviour(s)");
            if known > 0 {
                text.push_str(&format!(", {known} already known"));
            }
            if full > 0 {
                text.push_str(&format!(
                    ", {full} not added: their dimension holds {MAX_BEHAVIOURS_PER_DIMENSION} already"
                ));
            }
            text
        }
        Operation::Reset { .. } => {
            *b = WorkloadBaseline::default();
            "reset: the workload learns afresh from its next event".to_owned()
        }
        Operation::Freeze { .. } => {
            b.frozen = true;
            "frozen: learns nothing, every event is judged".to_owned()
        }
        Operation::Unfreeze { .. } => {
            b.frozen = false;
            "unfrozen".to_owned()
        }
        Operation::Import { export } => {
            export.apply_to(b);
            format!(
                "imported {} behaviours (exported at version {})",
                export.behaviours.len(),
                export.version
            )
        }
        Operation::AcceptDeviation { .. } => "nothing to do".to_owned(),
    }
}

impl Baselines {
    /// Applies an operator's change to the live baseline and saves it at once.
    pub fn apply(&mut self, op: Operation) -> Result<Applied, OpsError> {
        let op = op.resolve(|id| self.novelties.find(&self.dir, id))?;
        let workload = op.workload().unwrap_or_default().to_owned();
        if !self.workloads.contains_key(&workload) {
            if !op.creates() {
                return Err(OpsError::UnknownWorkload(workload));
            }
            let tracked = Tracked::new(&workload);
            self.workloads.insert(workload.clone(), tracked);
        }
        let Some(tracked) = self.workloads.get_mut(&workload) else {
            return Err(OpsError::UnknownWorkload(workload));
        };
        let message = change(&op, &mut tracked.baseline);
        let version = store::save_versioned(
            &self.dir,
            &tracked.file_name,
            &workload,
            &tracked.baseline,
            op.reason(),
        )?;
        tracked.dirty = false;
        tracing::info!(%workload, version, %message, "baseline changed by an operator");
        Ok(Applied {
            workload,
            version,
            message,
        })
    }
}

/// Applies `op` to the files under `state_dir` directly. Only while holding the agent lock
/// (see `requests::perform`), so that no agent overwrites the change.
pub(crate) fn apply_offline(state_dir: &Path, op: Operation) -> Result<Applied, OpsError> {
    let dir = baselines_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|source| BaselineError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let op = op.resolve(|id| novelties::find(&dir, id))?;
    let workload = op.workload().unwrap_or_default().to_owned();
    let name = store::file_name(&workload);
    let path = dir.join(&name);
    let mut baseline = if path.exists() {
        store::read_file(&path)?.baseline
    } else if op.creates() {
        WorkloadBaseline::default()
    } else {
        return Err(OpsError::UnknownWorkload(workload));
    };
    let message = change(&op, &mut baseline);
    let version = store::save_versioned(&dir, &name, &workload, &baseline, op.reason())?;
    Ok(Applied {
        workload,
        version,
        message,
    })
}

/// Where the change logs, recent novelties, request mailbox and lock of the baselines in
/// `baselines` live: beside that directory, which holds baseline files only.
pub(crate) fn side_dir(baselines: &Path) -> PathBuf {
    baselines
        .parent()
        .unwrap_or(Path::new("."))
        .join("baseline-ops")
}

/// Where the baselines of the agent using `state_dir` live.
pub fn baselines_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("baselines")
}

/// One stored baseline, as `sensor baseline list | show | export` see it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub workload: String,
    pub path: PathBuf,
    /// Size of its file.
    pub bytes: u64,
    pub version: u64,
    pub(crate) baseline: WorkloadBaseline,
}

impl Stored {
    pub fn frozen(&self) -> bool {
        self.baseline.frozen
    }

    /// Distinct CI runs learnt from.
    pub fn runs(&self) -> usize {
        self.baseline.learning_runs.len()
    }

    /// `frozen`, `detecting` or `learning`.
    pub fn state(&self) -> &'static str {
        if self.baseline.frozen {
            "frozen"
        } else if self.baseline.detecting_since_unix_nanos.is_some() {
            "detecting"
        } else {
            "learning"
        }
    }

    pub fn first_seen_unix_nanos(&self) -> Option<i64> {
        self.baseline.first_seen_unix_nanos
    }

    pub fn behaviours(&self) -> &BTreeSet<Behaviour> {
        self.baseline.learned.behaviours()
    }

    pub fn export(&self) -> Export {
        Export::of(&self.workload, self.version, &self.baseline)
    }

    /// The behaviours of `version` (rebuilt from the change log), or the current ones.
    pub fn behaviours_at(&self, version: Option<u64>) -> Result<BTreeSet<Behaviour>, OpsError> {
        let Some(wanted) = version.filter(|v| *v != self.version) else {
            return Ok(self.behaviours().clone());
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let log = version::read(dir, name, self.version);
        version::at_version(self.behaviours(), self.version, wanted, &log).map_err(|source| {
            OpsError::Version {
                workload: self.workload.clone(),
                source,
            }
        })
    }

    /// The change log, oldest first.
    pub fn changes(&self) -> Vec<version::Change> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        version::read(dir, name, self.version)
    }
}

fn stored(path: PathBuf) -> Result<Stored, BaselineError> {
    let file = store::read_file(&path)?;
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(Stored {
        workload: file.workload,
        path,
        bytes,
        version: file.baseline_version,
        baseline: file.baseline,
    })
}

/// The baseline file at `path` (anywhere: a copy taken from another host, say).
pub fn open_file(path: &Path) -> Result<Stored, BaselineError> {
    stored(path.to_owned())
}

/// Every baseline under `state_dir`, by workload id.
pub fn list(state_dir: &Path) -> Result<Vec<Stored>, BaselineError> {
    let dir = baselines_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BaselineError::ReadDir { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            out.push(stored(path)?);
        }
    }
    out.sort_by(|a, b| a.workload.cmp(&b.workload));
    Ok(out)
}

/// The baseline of `workload` under `state_dir`.
pub fn load(state_dir: &Path, workload: &str) -> Result<Stored, OpsError> {
    let path = baselines_dir(state_dir).join(store::file_name(workload));
    if !path.exists() {
        return Err(OpsError::UnknownWorkload(workload.to_owned()));
    }
    Ok(stored(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::LearningConfig;

    fn exe(p: &str) -> Behaviour {
        Behaviour::Executable(p.into())
    }

    #[test]
    fn offline_operations_change_and_version_the_file() {
        let state = tempfile::tempdir().unwrap();
        let w = "github:a/b/ci/build".to_owned();
        let accept = |p: &str| Operation::Accept {
            workload: w.clone(),
            behaviours: vec![exe(p)],
        };
        let a = apply_offline(state.path(), accept("/bin/a")).unwrap();
        assert_eq!(a.version, 1);
        let a = apply_offline(state.path(), accept("/bin/a")).unwrap();
        assert_eq!(a.version, 1, "nothing changed: same version");
        assert!(a.message.contains("1 already known"), "{}", a.message);
        apply_offline(state.path(), accept("/bin/b")).unwrap();
        let f = apply_offline(
            state.path(),
            Operation::Freeze {
                workload: w.clone(),
            },
        )
        .unwrap();
        assert_eq!(f.version, 3);
        let s = load(state.path(), &w).unwrap();
        assert_eq!((s.state(), s.version), ("frozen", 3));
        assert_eq!(s.behaviours_at(Some(1)).unwrap(), [exe("/bin/a")].into());
        assert_eq!(s.changes().len(), 3);

        let r = apply_offline(
            state.path(),
            Operation::Reset {
                workload: w.clone(),
            },
        )
        .unwrap();
        assert_eq!(r.version, 4);
        let s = load(state.path(), &w).unwrap();
        assert!(s.behaviours().is_empty() && !s.frozen());
        assert_eq!(s.behaviours_at(Some(3)).unwrap().len(), 2);

        let e = apply_offline(
            state.path(),
            Operation::Freeze {
                workload: "nope".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, OpsError::UnknownWorkload(_)), "{e}");
        let e =
            apply_offline(state.path(), Operation::AcceptDeviation { id: "x".into() }).unwrap_err();
        assert!(matches!(e, OpsError::UnknownDeviation(_)), "{e}");
    }

    #[test]
    fn engine_applies_operations_to_live_baselines() {
        let state = tempfile::tempdir().unwrap();
        let mut engine = Baselines::open(state.path(), LearningConfig::default()).unwrap();
        let w = "unit:x.service".to_owned();
        engine
            .apply(Operation::Accept {
                workload: w.clone(),
                behaviours: vec![exe("/bin/x")],
            })
            .unwrap();
        engine
            .apply(Operation::Freeze {
                workload: w.clone(),
            })
            .unwrap();
        let s = load(state.path(), &w).unwrap();
        assert_eq!((s.version, s.frozen()), (2, true));
        // Persisting an unchanged engine keeps the version.
        engine.persist().unwrap();
        assert_eq!(load(state.path(), &w).unwrap().version, 2);
        let listed = list(state.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].workload, w);
    }
}
