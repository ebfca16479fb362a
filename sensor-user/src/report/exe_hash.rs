//! Content hashes of executables for deviations: SHA-256, computed in userspace (never on the
//! event path, only for the rare deviation) and cached by file identity, so a binary is read once
//! however many deviations name it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

/// Larger executables are not hashed (reading them would stall the agent).
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Cached hashes before the cache starts over.
const MAX_CACHED: usize = 4096;

/// (device, inode, size, mtime): a file's content changes only with one of them.
type FileKey = (u64, u64, u64, i64);

#[derive(Debug, Default)]
pub struct ExecutableHashes {
    cache: HashMap<FileKey, String>,
}

impl ExecutableHashes {
    /// The hash of the executable `path` that process `pid` runs. The live process's
    /// `/proc/<pid>/exe` is preferred (it reaches memfd and deleted files) when it still names
    /// `path`; otherwise `path` itself. `None` when neither can be read.
    pub fn of(&mut self, pid: u32, path: &str) -> Option<String> {
        let proc_exe = format!("/proc/{pid}/exe");
        let live = std::fs::read_link(&proc_exe).ok().is_some_and(|target| {
            let target = target.to_string_lossy();
            let target = target.trim_end_matches(" (deleted)");
            target == path || target.trim_start_matches('/') == path
        });
        let file = if live {
            File::open(&proc_exe)
        } else {
            File::open(path)
        }
        .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_SIZE {
            return None;
        }
        let key = (meta.dev(), meta.ino(), meta.len(), meta.mtime());
        if let Some(hash) = self.cache.get(&key) {
            return Some(hash.clone());
        }
        let hash = sha256(file).ok()?;
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(key, hash.clone());
        Some(hash)
    }
}

fn sha256(mut file: File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_content_and_caches_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "abc").unwrap();
        let path = path.to_str().unwrap();
        let mut hashes = ExecutableHashes::default();
        // pid 0 has no /proc entry: the path is read.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hashes.of(0, path).as_deref(), Some(abc));
        assert_eq!(hashes.cache.len(), 1);
        assert_eq!(hashes.of(0, path).as_deref(), Some(abc));
        std::fs::write(path, "abcd").unwrap();
        assert_ne!(
            hashes.of(0, path).as_deref(),
            Some(abc),
            "new content, new hash"
        );
        assert_eq!(hashes.of(0, "/no/such/file"), None);
    }

    #[test]
    fn live_process_is_read_through_proc() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let mut hashes = ExecutableHashes::default();
        let via_proc = hashes.of(std::process::id(), me.to_str().unwrap());
        assert!(via_proc.is_some_and(|h| h.len() == 64));
    }
}
