//! Tool chains: the executables a parent process starts, in order.
//!
//! A CI step or a script is a parent (a shell, make, cargo) starting children one after the
//! other; an attack on a known toolset shows as a new order ("curl, then tar, then curl to a new
//! host") even when every tool is known. Each exec makes the n-gram (n = [`N`]) of the parent's
//! last children's executables, prefixed by the parent's executable, a [`Behaviour::Sequence`]
//! that is learnt and judged like any other behaviour. Bigrams of siblings keep the parallel
//! children of `make -j` or cargo from producing new orders every run (their children are mostly
//! the same tool), while still seeing every new transition.
//!
//! Kept per parent pid, bounded: the oldest parents are forgotten first.

use std::collections::{HashMap, VecDeque};

use crate::behaviour::Behaviour;

/// Length of the n-grams of sibling executables.
pub const N: usize = 2;
/// Parents remembered.
const MAX_PARENTS: usize = 16_384;

#[derive(Debug, Default)]
pub(crate) struct Siblings {
    last: HashMap<u32, VecDeque<String>>,
    order: VecDeque<u32>,
}

impl Siblings {
    /// Records that the process `parent` (running `parent_exe`) started a child running `child`
    /// (generalised). The sequence it completes, once the parent has started [`N`] children.
    pub(crate) fn exec(&mut self, parent: u32, parent_exe: &str, child: &str) -> Option<Behaviour> {
        if !self.last.contains_key(&parent) {
            if self.order.len() >= MAX_PARENTS
                && let Some(old) = self.order.pop_front()
            {
                self.last.remove(&old);
            }
            self.order.push_back(parent);
        }
        let steps = self.last.entry(parent).or_default();
        if steps.len() == N {
            steps.pop_front();
        }
        steps.push_back(child.to_owned());
        (steps.len() == N).then(|| Behaviour::Sequence {
            parent: parent_exe.to_owned(),
            steps: steps.iter().cloned().collect(),
        })
    }

    /// Forgets `pid` as a parent (it exited; its pid may be reused).
    pub(crate) fn exit(&mut self, pid: u32) {
        if self.last.remove(&pid).is_some() {
            self.order.retain(|p| *p != pid);
        }
    }

    #[cfg(test)]
    pub(crate) fn parents(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(steps: &[&str]) -> Option<Behaviour> {
        Some(Behaviour::Sequence {
            parent: "/bin/sh".into(),
            steps: steps.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    #[test]
    fn bigrams_of_siblings_per_parent() {
        let mut s = Siblings::default();
        assert_eq!(s.exec(10, "/bin/sh", "/usr/bin/curl"), None);
        // Another parent's children do not interleave.
        assert_eq!(s.exec(20, "/bin/sh", "/usr/bin/make"), None);
        assert_eq!(
            s.exec(10, "/bin/sh", "/usr/bin/tar"),
            seq(&["/usr/bin/curl", "/usr/bin/tar"])
        );
        assert_eq!(
            s.exec(10, "/bin/sh", "/usr/bin/curl"),
            seq(&["/usr/bin/tar", "/usr/bin/curl"])
        );
        s.exit(10);
        assert_eq!(s.exec(10, "/bin/sh", "/usr/bin/tar"), None, "pid reused");
        assert_eq!(s.parents(), 2);
    }

    #[test]
    fn parents_are_bounded() {
        let mut s = Siblings::default();
        for pid in 0..(MAX_PARENTS as u32 + 10) {
            s.exec(pid, "/bin/sh", "/bin/true");
        }
        assert_eq!(s.parents(), MAX_PARENTS);
    }
}
