//! The file shapes a baseline learnt (see `behaviour::shape`): patterns such as
//! `/w/.git/objects/{hex2}/tmp_obj_{alnum6}` folding the random names a workload's tools
//! generate, per kind of access. They are derived from the learnt file accesses (every
//! distinct path is there), relearnt whenever those change, and stored beside them so
//! `sensor baseline show` shows what judging matches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bounded::Learned;
use crate::behaviour::shape::{PathShape, learn_shapes};
use crate::behaviour::{Behaviour, Dimension};
use crate::event::OpenIntent;

/// The most shapes one baseline holds (they are matched one by one against unknown paths).
pub const MAX_SHAPES: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Shapes {
    /// The shapes, with the intent of the accesses they were learnt from.
    #[serde(default)]
    pub files: Vec<FileShape>,
    /// How many file accesses the baseline held when they were learnt.
    #[serde(default)]
    pub from: usize,
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
        if !self.stale(learned.count(Dimension::FileAccess)) {
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
            from: learned.count(Dimension::FileAccess),
        }
    }

    /// Whether opening `path` with `intent` has a learnt shape.
    pub fn matches(&self, path: &str, intent: OpenIntent) -> bool {
        self.files
            .iter()
            .any(|s| s.intent == intent && s.path.matches(path))
    }
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
        learned.learn(file("/w/.git/HEAD", "read"), 100);
        assert!(shapes.refresh(&learned));
        assert_eq!(shapes.from, 5);
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
