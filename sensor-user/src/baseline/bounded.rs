//! Bounds on what a baseline holds, so a workload that generates unique names faster than
//! generalisation folds them (or floods on purpose) cannot grow the agent's memory without end.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::behaviour::{Behaviour, Dimension};
use crate::event::OpenIntent;

/// The most distinct behaviours of one [`Dimension`] a workload's baseline learns, and the most
/// new behaviours of one dimension reported for a workload once it is judged.
///
/// A workload that goes past it gets one `DEVIATION_KIND_CARDINALITY_EXPLODED` deviation for
/// that dimension; the dimension then stops growing (nothing more is learnt, and nothing more is
/// reported, for it). So one workload's baseline holds at most `8 × 20,000` behaviours and
/// `8 × (20,000 + 1)` reported ids. Generalised paths keep ordinary CI jobs far below this: a
/// large Rust or C++ build touches a few thousand distinct files.
pub const MAX_BEHAVIOURS_PER_DIMENSION: usize = 20_000;

/// The result of [`Learned::learn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learn {
    /// Already known.
    Known,
    /// Newly learnt.
    Added,
    /// Unknown, and its dimension is full: not learnt.
    Full,
}

/// The learnt behaviours with their count per dimension. On disk just the set (the counts are
/// recomputed when it is read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Learned {
    set: BTreeSet<Behaviour>,
    counts: [usize; Dimension::COUNT],
}

impl Learned {
    /// Learns `behaviour` unless its dimension already holds `limit` behaviours.
    pub(crate) fn learn(&mut self, behaviour: Behaviour, limit: usize) -> Learn {
        if self.set.contains(&behaviour) {
            return Learn::Known;
        }
        let count = &mut self.counts[behaviour.dimension().index()];
        if *count >= limit {
            return Learn::Full;
        }
        *count += 1;
        self.set.insert(behaviour);
        Learn::Added
    }

    pub(crate) fn contains(&self, behaviour: &Behaviour) -> bool {
        self.set.contains(behaviour)
    }

    /// The intents `path` was learnt opened with (a range of the ordered set: no scan).
    pub(crate) fn intents<'a>(&'a self, path: &'a str) -> impl Iterator<Item = OpenIntent> + 'a {
        let start = Behaviour::File {
            path: path.to_owned(),
            intent: OpenIntent::default(),
        };
        self.set.range(start..).map_while(move |b| match b {
            Behaviour::File { path: p, intent } if p == path => Some(*intent),
            _ => None,
        })
    }

    /// How many behaviours of `dimension` are learnt.
    pub(crate) fn count(&self, dimension: Dimension) -> usize {
        self.counts[dimension.index()]
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Every learnt behaviour, in order (for versions, diffs and exports).
    pub(crate) fn behaviours(&self) -> &BTreeSet<Behaviour> {
        &self.set
    }
}

impl From<BTreeSet<Behaviour>> for Learned {
    fn from(set: BTreeSet<Behaviour>) -> Self {
        let mut counts = [0; Dimension::COUNT];
        for b in &set {
            counts[b.dimension().index()] += 1;
        }
        Learned { set, counts }
    }
}

impl Serialize for Learned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.set.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Learned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeSet::deserialize(deserializer).map(Learned::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: usize) -> Behaviour {
        Behaviour::File {
            path: format!("/f{i}"),
            intent: "read".parse().expect("intent"),
        }
    }

    #[test]
    fn learns_up_to_the_limit_per_dimension() {
        let mut l = Learned::default();
        assert_eq!(l.learn(file(1), 2), Learn::Added);
        assert_eq!(l.learn(file(1), 2), Learn::Known);
        assert_eq!(l.learn(file(2), 2), Learn::Added);
        assert_eq!(l.learn(file(3), 2), Learn::Full);
        assert_eq!(l.learn(file(2), 2), Learn::Known);
        // Other dimensions have their own room.
        let exe = Behaviour::Executable("/bin/sh".into());
        assert_eq!(l.learn(exe, 2), Learn::Added);
        assert_eq!(
            (
                l.count(Dimension::FileAccess),
                l.count(Dimension::Executable)
            ),
            (2, 1)
        );
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn serialises_as_the_set_and_recounts() {
        let mut l = Learned::default();
        l.learn(file(1), 10);
        l.learn(Behaviour::DnsName("a.test".into()), 10);
        let json = serde_json::to_string(&l).expect("serialise");
        assert!(json.starts_with('['), "{json}");
        let back: Learned = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, l);
        assert_eq!(back.count(Dimension::DnsName), 1);
    }
}
