//! Credential stores by file identity (device + inode), not only by name: a secret read through a
//! hard link (planted in an earlier run or just now), after being moved aside, or under any other
//! name is the same inode as the store it came from (issue 12).
//!
//! The agent learns the identity of every credential store it sees opened by its name (by any
//! process: the owner's own tools, the runner that wrote it), and judges a later open of that
//! identity under another name as the store itself. It also remembers the names a store was
//! hard-linked or renamed to (the kernel's link/rename hooks), for a store whose identity it has
//! not seen (never opened by name since the agent started, or that open was lost). Symlinked
//! directories need nothing here: the kernel resolves the opened path, so it already names the
//! store.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::behaviour::io_uring_open;
use crate::event::{EventKind, FileIdentity, FileOperation};

use super::SecretPaths;

/// Identities (and names) kept: a host has few credential stores; past this the oldest are
/// forgotten (an attacker opening many of them by name only makes the agent forget ones it saw
/// long ago).
const MAX_SECRET_FILES: usize = 4096;

/// Known credential stores by identity and by the names they were linked or moved to, with the
/// store's name.
#[derive(Debug, Default)]
pub struct SecretFiles {
    by_identity: Bounded<(u32, u64)>,
    /// Names a store was hard-linked or renamed to (seen by the kernel's link/rename hooks): the
    /// identity of a store nobody opened by name yet (or whose open was lost) is not known, its
    /// new name is.
    by_name: Bounded<String>,
}

impl SecretFiles {
    /// Learns from an open of a credential store by its name and from links and renames of
    /// one; for an open of a known store under another name, returns the store's name.
    pub fn observe(&mut self, kind: &EventKind, secrets: &SecretPaths) -> Option<String> {
        match kind {
            EventKind::Open { path, file, .. } => {
                if secrets.matches(path) {
                    if let Some(key) = key(file) {
                        self.by_identity.insert(key, path);
                    }
                    return None;
                }
                key(file)
                    .and_then(|k| self.by_identity.get(&k))
                    .or_else(|| self.by_name.get(path))
                    .cloned()
            }
            // An io_uring open is known by its name only (its file's identity is not captured).
            EventKind::IoUring(use_) => {
                io_uring_open(use_).and_then(|name| self.by_name.get(&name.to_owned()).cloned())
            }
            EventKind::FileOp(
                FileOperation::Link {
                    existing: from,
                    new: to,
                }
                | FileOperation::Rename { from, to },
            ) => {
                let store = if secrets.matches(from) {
                    Some(from.clone())
                } else {
                    // A link of a link (or a move of a moved store) is still the store.
                    self.by_name.get(from).cloned()
                };
                if let Some(store) = store
                    && !secrets.matches(to)
                {
                    self.by_name.insert(to.clone(), &store);
                }
                None
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_identity.map.len()
    }
}

/// A map that forgets its oldest entries past [`MAX_SECRET_FILES`].
#[derive(Debug)]
struct Bounded<K> {
    map: HashMap<K, String>,
    /// Insertion order, to forget the oldest first.
    order: VecDeque<K>,
}

impl<K> Default for Bounded<K> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    fn get(&self, key: &K) -> Option<&String> {
        // Empty nearly always: no hashing of every opened path then.
        if self.map.is_empty() {
            return None;
        }
        self.map.get(key)
    }

    fn insert(&mut self, key: K, store: &str) {
        if let Some(known) = self.map.get_mut(&key) {
            if known != store {
                store.clone_into(known);
            }
            return;
        }
        if self.order.len() >= MAX_SECRET_FILES
            && let Some(oldest) = self.order.pop_front()
        {
            self.map.remove(&oldest);
        }
        self.map.insert(key.clone(), store.to_owned());
        self.order.push_back(key);
    }
}

/// The identity to key on; none when the kernel could not read the inode.
fn key(file: &FileIdentity) -> Option<(u32, u64)> {
    (file.ino != 0).then_some((file.dev, file.ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::OpenIntent;

    fn open(path: &str, dev: u32, ino: u64) -> EventKind {
        EventKind::Open {
            path: path.into(),
            intent: OpenIntent::READ_ONLY,
            file: FileIdentity { dev, ino, links: 2 },
        }
    }

    #[test]
    fn a_store_seen_by_name_is_known_under_any_other_name() {
        let (mut files, secrets) = (SecretFiles::default(), SecretPaths::default());
        assert_eq!(files.observe(&open("/w/.k", 8, 7), &secrets), None);
        assert_eq!(
            files.observe(&open("/home/u/.ssh/id_x", 8, 7), &secrets),
            None
        );
        assert_eq!(
            files.observe(&open("/w/.k", 8, 7), &secrets).as_deref(),
            Some("/home/u/.ssh/id_x")
        );
        // Another device, same inode number: another file.
        assert_eq!(files.observe(&open("/w/.k", 9, 7), &secrets), None);
        // An unreadable inode is nobody's.
        files.observe(&open("/home/u/.ssh/id_y", 0, 0), &secrets);
        assert_eq!(files.observe(&open("/w/.z", 0, 0), &secrets), None);
    }

    #[test]
    fn bounded_forgetting_the_oldest() {
        let (mut files, secrets) = (SecretFiles::default(), SecretPaths::default());
        for ino in 1..=(MAX_SECRET_FILES as u64 + 10) {
            files.observe(&open(&format!("/r/.ssh/k{ino}"), 1, ino), &secrets);
        }
        assert_eq!(files.len(), MAX_SECRET_FILES);
        assert_eq!(files.observe(&open("/w/a", 1, 1), &secrets), None);
        assert!(files.observe(&open("/w/b", 1, 20), &secrets).is_some());
    }

    #[test]
    fn a_store_linked_or_moved_is_known_by_its_new_name() {
        let (mut files, secrets) = (SecretFiles::default(), SecretPaths::default());
        let link = |existing: &str, new: &str| {
            EventKind::FileOp(FileOperation::Link {
                existing: existing.into(),
                new: new.into(),
            })
        };
        let moved = |from: &str, to: &str| {
            EventKind::FileOp(FileOperation::Rename {
                from: from.into(),
                to: to.into(),
            })
        };
        // Never opened by name (its identity unknown): the link's name is enough.
        files.observe(&link("/h/.ssh/id_a", "/w/.k"), &secrets);
        assert_eq!(
            files.observe(&open("/w/.k", 8, 70), &secrets).as_deref(),
            Some("/h/.ssh/id_a")
        );
        // A link of the link, and a moved store.
        files.observe(&link("/w/.k", "/w/.k2"), &secrets);
        files.observe(&moved("/h/.ssh/id_b", "/w/.m"), &secrets);
        assert_eq!(
            files.observe(&open("/w/.k2", 8, 70), &secrets).as_deref(),
            Some("/h/.ssh/id_a")
        );
        assert_eq!(
            files.observe(&open("/w/.m", 8, 71), &secrets).as_deref(),
            Some("/h/.ssh/id_b")
        );
        // Links between ordinary files make nothing a store.
        files.observe(&link("/w/a", "/w/b"), &secrets);
        assert_eq!(files.observe(&open("/w/b", 8, 72), &secrets), None);
    }
}
