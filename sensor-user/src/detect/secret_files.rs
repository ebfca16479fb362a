//! Credential stores by file identity (device + inode), not only by name: a secret read through a
//! hard link (planted in an earlier run or just now), after being moved aside, or under any other
//! name is the same inode as the store it came from (issue 12).
//!
//! The agent learns the identity of every credential store it sees opened by its name (by any
//! process: the owner's own tools, the runner that wrote it), and judges a later open of that
//! identity under another name as the store itself. Symlinked directories need nothing here: the
//! kernel resolves the opened path, so it already names the store.

use std::collections::{HashMap, VecDeque};

use crate::event::{EventKind, FileIdentity};

use super::SecretPaths;

/// Identities kept: a host has few credential stores; past this the oldest are forgotten (an
/// attacker opening many of them by name only makes the agent forget ones it saw long ago).
const MAX_SECRET_FILES: usize = 4096;

/// Known credential stores by identity, with the name each was seen opened by.
#[derive(Debug, Default)]
pub struct SecretFiles {
    by_identity: HashMap<(u32, u64), String>,
    /// Insertion order, to forget the oldest first.
    order: VecDeque<(u32, u64)>,
}

impl SecretFiles {
    /// Learns from an open of a credential store by its name; for an open of a known store's
    /// identity under another name, returns the store's name.
    pub fn observe(&mut self, kind: &EventKind, secrets: &SecretPaths) -> Option<String> {
        let EventKind::Open { path, file, .. } = kind else {
            return None;
        };
        let key = key(file)?;
        if secrets.matches(path) {
            self.remember(key, path);
            return None;
        }
        self.by_identity.get(&key).cloned()
    }

    fn remember(&mut self, key: (u32, u64), path: &str) {
        if let Some(known) = self.by_identity.get_mut(&key) {
            if known != path {
                path.clone_into(known);
            }
            return;
        }
        if self.order.len() >= MAX_SECRET_FILES
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_identity.remove(&oldest);
        }
        self.by_identity.insert(key, path.to_owned());
        self.order.push_back(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_identity.len()
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
}
