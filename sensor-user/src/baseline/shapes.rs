//! The file shapes a baseline learnt (see `behaviour::shape`): patterns such as
//! `/w/.git/objects/{hex2}/tmp_obj_{alnum6}` folding the random names a workload's tools
//! generate, per kind of access. They are derived from the learnt file accesses (every
//! distinct path is there), relearnt whenever those change, and stored beside them so
//! `sensor baseline show` shows what judging matches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bounded::Learned;
use crate::behaviour::shape::{PathShape, learn_shapes};
use crate::behaviour::{Behaviour, Dimension, FileChange};
use crate::event::OpenIntent;

/// The most shapes one baseline holds (they are matched one by one against unknown paths).
pub const MAX_SHAPES: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Shapes {
    /// The shapes, with the intent of the accesses they were learnt from.
    #[serde(default)]
    pub files: Vec<FileShape>,
    /// File operations (git links each `tmp_obj_*` to its object) through shaped paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationShape>,
    /// How many file accesses and file operations the baseline held when they were learnt.
    #[serde(default)]
    pub from: usize,
}

/// A file operation was learnt on paths of these shapes (`detail` is the operation's detail: a
/// mode, an owner, or a path that may be shaped too).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct OperationShape {
    pub operation: FileChange,
    pub path: PathShape,
    pub detail: PathShape,
}

/// Files opened with `intent` at paths of this shape were learnt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileShape {
    pub path: PathShape,
    pub intent: OpenIntent,
}

impl Shapes {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.from == 0
    }

    /// Relearns the shapes when `learned`'s file accesses changed enough since (see
    /// [`Shapes::stale`]); true when it did.
    pub fn refresh(&mut self, learned: &Learned) -> bool {
        if !self.stale(counted(learned)) {
            return false;
        }
        *self = Shapes::learn(learned);
        true
    }

    /// Whether shapes learnt from `from` file accesses are out of date with `files`: any change
    /// of a small baseline, a tenth more (or any fewer) of a large one. A judged workload still
    /// learns a few files (a new executable's loading, an accepted novelty); relearning every
    /// time would cost a pass over every file per event.
    fn stale(&self, files: usize) -> bool {
        files < self.from || files >= self.from + (self.from / 10).max(1)
    }

    /// The shapes of `learned`'s file accesses, per intent.
    pub fn learn(learned: &Learned) -> Shapes {
        let mut by_intent: BTreeMap<OpenIntent, Vec<&str>> = BTreeMap::new();
        for b in learned.behaviours() {
            if let Behaviour::File { path, intent } = b {
                by_intent.entry(*intent).or_default().push(path);
            }
        }
        let mut files: Vec<FileShape> = by_intent
            .into_iter()
            .flat_map(|(intent, paths)| {
                learn_shapes(paths)
                    .into_iter()
                    .map(move |path| FileShape { path, intent })
            })
            .collect();
        files.truncate(MAX_SHAPES);
        Shapes {
            files,
            operations: operation_shapes(learned),
            from: counted(learned),
        }
    }

    /// Whether file operation `operation` on `path` with `detail` has a learnt shape.
    pub fn matches_operation(&self, operation: FileChange, path: &str, detail: &str) -> bool {
        self.operations
            .iter()
            .any(|s| s.operation == operation && s.path.matches(path) && s.detail.matches(detail))
    }

    /// Whether opening `path` with `intent` has a learnt shape.
    pub fn matches(&self, path: &str, intent: OpenIntent) -> bool {
        self.files
            .iter()
            .any(|s| s.intent == intent && s.path.matches(path))
    }
}

/// What the shapes are learnt from: file accesses and file operations.
fn counted(learned: &Learned) -> usize {
    learned.count(Dimension::FileAccess) + learned.count(Dimension::FileOperation)
}

/// The shapes of the learnt file operations: their paths and path details are shaped together
/// (a link's source and target are siblings in the same random directories).
fn operation_shapes(learned: &Learned) -> Vec<OperationShape> {
    let operations: Vec<(FileChange, &str, &str)> = learned
        .behaviours()
        .iter()
        .filter_map(|b| match b {
            Behaviour::FileOperation {
                operation,
                path,
                detail,
            } => Some((*operation, path.as_str(), detail.as_str())),
            _ => None,
        })
        .collect();
    let paths = operations
        .iter()
        .flat_map(|(_, path, detail)| [*path, *detail])
        .filter(|p| p.starts_with('/'));
    let shapes = learn_shapes(paths);
    let shape_of = |p: &str| -> Option<PathShape> { shapes.iter().find(|s| s.matches(p)).cloned() };
    let literal = |p: &str| -> PathShape { p.parse().unwrap_or_else(|never| match never {}) };
    let mut out: Vec<OperationShape> = operations
        .iter()
        .filter_map(|&(operation, path, detail)| {
            let (sp, sd) = (shape_of(path), shape_of(detail));
            (sp.is_some() || sd.is_some()).then(|| OperationShape {
                operation,
                path: sp.unwrap_or_else(|| literal(path)),
                detail: sd.unwrap_or_else(|| literal(detail)),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_SHAPES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, intent: &str) -> Behaviour {
        Behaviour::File {
            path: path.to_owned(),
            intent: intent.parse().expect("intent"),
        }
    }

    #[test]
    fn learnt_per_intent_and_refreshed_when_files_change() {
        let mut learned = Learned::default();
        for dir in ["3a", "f1", "0b", "9c"] {
            learned.learn(file(&format!("/w/.git/objects/{dir}"), "read"), 100);
        }
        let mut shapes = Shapes::default();
        assert!(shapes.refresh(&learned));
        assert!(!shapes.refresh(&learned), "unchanged");
        let read = "read".parse().expect("intent");
        let write = "write|create".parse().expect("intent");
        assert!(shapes.matches("/w/.git/objects/77", read));
        assert!(!shapes.matches("/w/.git/objects/77", write));
        let json = serde_json::to_string(&shapes).expect("serialises");
        assert_eq!(
            json,
            r#"{"files":[{"path":"/w/.git/objects/{hex2}","intent":"read"}],"from":4}"#
        );
        // git links each temporary object to its name: both paths in random directories.
        for (dir, tmp) in [
            ("3a", "Xb2c9Q"),
            ("f1", "k9LmZ0"),
            ("0b", "7hQw2e"),
            ("9c", "P0oIu8"),
        ] {
            learned.learn(
                Behaviour::FileOperation {
                    operation: FileChange::Link,
                    path: format!("/w/.git/objects/{dir}/tmp_obj_{tmp}"),
                    detail: format!("/w/.git/objects/{dir}/<hash>"),
                },
                100,
            );
        }
        assert!(shapes.refresh(&learned));
        let link =
            |path: &str, detail: &str| shapes.matches_operation(FileChange::Link, path, detail);
        assert!(link(
            "/w/.git/objects/77/tmp_obj_Aa1Bb2",
            "/w/.git/objects/77/<hash>"
        ));
        assert!(!link(
            "/w/.git/objects/77/tmp_obj_Aa1Bb2",
            "/w/.git/hooks/pre-commit"
        ));
        assert!(!shapes.matches_operation(
            FileChange::Symlink,
            "/w/.git/objects/77/tmp_obj_Aa1Bb2",
            "/w/.git/objects/77/<hash>"
        ));
        learned.learn(file("/w/.git/HEAD", "read"), 100);
        assert!(shapes.refresh(&learned));
        assert_eq!(shapes.from, 9);
        // A large baseline relearns once it grew by a tenth.
        let large = Shapes {
            from: 1000,
            ..Shapes::default()
        };
        assert!(!large.stale(1000));
        assert!(!large.stale(1099));
        assert!(large.stale(1100));
        assert!(large.stale(999), "files were removed");
    }
}
