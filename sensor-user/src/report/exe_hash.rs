//! Content hashes of executables for deviations: SHA-256, cached by file identity, and never
//! able to stall the agent on a file a watched process controls.
//!
//! What is read: the live process's `/proc/<pid>/exe` when it still names the executable (it
//! reaches memfd and deleted files, and cannot be swapped for another file), else the path, but
//! only with the file identity (device, inode) the kernel captured at exec, and only when the
//! file there is still that one. The path is opened `O_NONBLOCK | O_NOFOLLOW` (a FIFO opens at
//! once, a symlink not at all), only regular files are read, at most [`MAX_SIZE`] bytes, within
//! [`TIMEOUT`]. Opening and reading happen on a short-lived thread the caller waits for at most
//! [`TIMEOUT`], so even a file system that never answers (FUSE, a hung NFS) costs one thread,
//! and at most [`MAX_STUCK`] of them. Every give-up has a reason ([`HashGaveUp`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::detect::{Finding, HashGaveUp};
use crate::event::{EventKind, FileIdentity};

/// Larger executables are not hashed.
pub const MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Longest wait for one executable's hash.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Hashing threads still blocked past their timeout before new ones are refused.
pub const MAX_STUCK: usize = 4;
/// Cached hashes before the cache starts over.
const MAX_CACHED: usize = 4096;

/// (device, inode, size, mtime): a file's content changes only with one of them.
type FileKey = (u64, u64, u64, i64);

/// The executable to hash for a deviation: its process, path, and the identity captured at its
/// exec when the deviation is about that exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub path: String,
    pub identity: Option<FileIdentity>,
}

impl Target {
    /// The executable of `finding`'s process.
    pub fn of(finding: &Finding) -> Target {
        let event = &finding.verdict().event;
        let identity = match &event.event.kind {
            EventKind::Exec {
                executable, file, ..
            } if *executable == event.process.executable => Some(*file),
            _ => None,
        };
        Target {
            pid: event.process.pid,
            path: event.process.executable.clone(),
            identity,
        }
    }
}

/// Hashes with a cache shared by the hashing threads.
#[derive(Debug, Default)]
pub struct ExecutableHashes {
    cache: Arc<Mutex<HashMap<FileKey, String>>>,
    stuck: Arc<AtomicUsize>,
}

impl ExecutableHashes {
    /// The hash of `target`'s executable, or why there is none. Waits at most [`TIMEOUT`].
    pub fn of(&self, target: &Target) -> Result<String, HashGaveUp> {
        if self.stuck.load(Ordering::Relaxed) >= MAX_STUCK {
            return Err(HashGaveUp::Busy);
        }
        let (tx, rx) = mpsc::channel();
        let (target, cache, stuck) = (target.clone(), self.cache.clone(), self.stuck.clone());
        stuck.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("exe-hash".into())
            .spawn(move || {
                let hashed = hash(&target, &cache, Instant::now() + TIMEOUT);
                // Before the answer: a caller that got it in time and asks again at once must
                // not find this thread still counted as stuck.
                stuck.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(hashed);
            });
        if spawned.is_err() {
            self.stuck.fetch_sub(1, Ordering::Relaxed);
            return Err(HashGaveUp::Busy);
        }
        rx.recv_timeout(TIMEOUT).unwrap_or(Err(HashGaveUp::Timeout))
    }
}

fn hash(
    target: &Target,
    cache: &Mutex<HashMap<FileKey, String>>,
    deadline: Instant,
) -> Result<String, HashGaveUp> {
    let file = open(target)?;
    let meta = file.metadata().map_err(|_| HashGaveUp::Unreadable)?;
    if !meta.is_file() {
        return Err(HashGaveUp::NotRegular);
    }
    if meta.len() > MAX_SIZE {
        return Err(HashGaveUp::TooLarge);
    }
    let key = (meta.dev(), meta.ino(), meta.len(), meta.mtime());
    if let Some(hash) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(hash);
    }
    let hash = sha256(file, deadline)?;
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, hash.clone());
    }
    Ok(hash)
}

/// `/proc/<pid>/exe` while it is the file the process executed (same identity, whatever its
/// name now: renaming the executable does not hide it), else the path if it still holds that
/// file.
fn open(target: &Target) -> Result<File, HashGaveUp> {
    if let Some(file) = open_live(target) {
        return Ok(file);
    }
    let Some(identity) = target.identity.filter(|i| i.ino != 0) else {
        return Err(HashGaveUp::ProcessGone);
    };
    let file =
        open_nonblocking(&target.path, libc::O_NOFOLLOW).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => HashGaveUp::Symlink,
            // Moved or removed since the exec: the path no longer holds the executed file.
            Some(libc::ENOENT) => HashGaveUp::Replaced,
            _ => HashGaveUp::Unreadable,
        })?;
    let meta = file.metadata().map_err(|_| HashGaveUp::Unreadable)?;
    if !meta.is_file() {
        return Err(HashGaveUp::NotRegular);
    }
    if !is_executed(&meta, identity) {
        return Err(HashGaveUp::Replaced);
    }
    Ok(file)
}

/// The live process's executable through `/proc/<pid>/exe`: with the identity captured at
/// exec, when it is still that file (a later exec of the same pid is another file); without
/// one, when its name is still the path.
fn open_live(target: &Target) -> Option<File> {
    let proc_exe = format!("/proc/{}/exe", target.pid);
    match target.identity.filter(|i| i.ino != 0) {
        Some(identity) => {
            let file = open_nonblocking(&proc_exe, 0).ok()?;
            let meta = file.metadata().ok()?;
            is_executed(&meta, identity).then_some(file)
        }
        None => {
            let link = std::fs::read_link(&proc_exe).ok()?;
            let link = link.to_string_lossy();
            let link = link.trim_end_matches(" (deleted)");
            let named = link == target.path || link.trim_start_matches('/') == target.path;
            named.then(|| open_nonblocking(&proc_exe, 0).ok()).flatten()
        }
    }
}

/// Whether `meta` is the file with the identity captured at exec.
fn is_executed(meta: &std::fs::Metadata, identity: FileIdentity) -> bool {
    (meta.dev(), meta.ino()) == (user_dev(identity.dev), identity.ino)
}

/// Opens for reading without waiting (a FIFO with no writer opens at once) and without taking
/// a controlling terminal.
fn open_nonblocking(path: &str, flags: i32) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | flags)
        .open(path)
}

/// A device number as the kernel keeps it (`major << 20 | minor`, what the exec record
/// carries) in the encoding `stat` returns.
fn user_dev(kernel_dev: u32) -> u64 {
    libc::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

/// SHA-256 of at most [`MAX_SIZE`] bytes of `reader`, unless `deadline` passes first.
fn sha256(mut reader: impl Read, deadline: Instant) -> Result<String, HashGaveUp> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        if Instant::now() >= deadline {
            return Err(HashGaveUp::Timeout);
        }
        let n = reader.read(&mut buf).map_err(|_| HashGaveUp::Unreadable)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_SIZE {
            return Err(HashGaveUp::TooLarge);
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

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// The identity the kernel would have captured for `path`.
    fn identity(path: &std::path::Path) -> FileIdentity {
        let m = std::fs::metadata(path).unwrap();
        let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
        FileIdentity {
            dev: (major << 20) | minor,
            ino: m.ino(),
            links: 1,
        }
    }

    fn target(path: &std::path::Path, identity: Option<FileIdentity>) -> Target {
        // pid 0 has no /proc entry: the path is what is read.
        Target {
            pid: 0,
            path: path.to_str().unwrap().to_owned(),
            identity,
        }
    }

    #[test]
    fn hashes_the_executed_file_and_caches_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "abc").unwrap();
        let hashes = ExecutableHashes::default();
        let t = target(&path, Some(identity(&path)));
        assert_eq!(hashes.of(&t).as_deref(), Ok(ABC));
        assert_eq!(hashes.cache.lock().unwrap().len(), 1);
        std::fs::write(&path, "abcd").unwrap();
        assert_ne!(hashes.of(&t).as_deref(), Ok(ABC), "new content, new hash");
        assert_eq!(
            hashes.of(&target(&path, None)),
            Err(HashGaveUp::ProcessGone),
            "no identity, no live process: the path is not trusted"
        );
    }

    #[test]
    fn what_replaces_the_executable_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "abc").unwrap();
        let executed = identity(&path);
        let hashes = ExecutableHashes::default();
        let moved = dir.path().join("tool.old");
        std::fs::rename(&path, &moved).unwrap();

        // A FIFO: opening it for reading would wait for a writer forever.
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let started = Instant::now();
        let t = target(&path, Some(executed));
        assert_eq!(hashes.of(&t), Err(HashGaveUp::NotRegular));
        assert!(started.elapsed() < Duration::from_secs(1));
        std::fs::remove_file(&path).unwrap();

        // A symlink to a device that never ends.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert_eq!(hashes.of(&t), Err(HashGaveUp::Symlink));
        std::fs::remove_file(&path).unwrap();

        // Another regular file (say, huge): not the one that ran.
        std::fs::write(&path, "xyz").unwrap();
        assert_eq!(hashes.of(&t), Err(HashGaveUp::Replaced));
        std::fs::remove_file(&path).unwrap();

        // The file itself, grown past the bound.
        std::fs::rename(&moved, &path).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(MAX_SIZE + 1).unwrap();
        assert_eq!(hashes.of(&t), Err(HashGaveUp::TooLarge));
    }

    #[test]
    fn a_slow_read_gives_up_at_the_deadline() {
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                buf[0] = 1;
                Ok(1)
            }
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        assert_eq!(sha256(Slow, deadline), Err(HashGaveUp::Timeout));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(sha256(&b"abc"[..], deadline + TIMEOUT).as_deref(), Ok(ABC));
    }

    #[test]
    fn quick_answers_in_a_row_are_never_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "abc").unwrap();
        let t = target(&path, Some(identity(&path)));
        let hashes = ExecutableHashes::default();
        for i in 0..200 {
            assert_eq!(hashes.of(&t).as_deref(), Ok(ABC), "call {i}");
            // The thread that answered no longer counts: the next call may not be refused.
            assert_eq!(hashes.stuck.load(Ordering::Relaxed), 0, "call {i}");
        }
    }

    #[test]
    fn live_process_is_read_through_proc() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        let hashes = ExecutableHashes::default();
        let t = Target {
            pid: child.id(),
            path: exe.to_str().unwrap().to_owned(),
            identity: None,
        };
        let hash = hashes.of(&t);
        let _ = child.kill();
        let _ = child.wait();
        assert!(hash.as_ref().is_ok_and(|h| h.len() == 64), "{hash:?}");
    }

    #[test]
    fn a_renamed_executable_of_a_live_process_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::copy("/bin/sleep", &path).unwrap();
        let executed = identity(&path);
        let mut child = std::process::Command::new(&path).arg("30").spawn().unwrap();
        std::fs::rename(&path, dir.path().join("tool.old")).unwrap();
        std::fs::write(&path, "abc").unwrap();
        let hashes = ExecutableHashes::default();
        let renamed = Target {
            pid: child.id(),
            path: path.to_str().unwrap().to_owned(),
            identity: Some(executed),
        };
        let hash = hashes.of(&renamed);
        // Another identity (a later exec of the same pid): /proc/<pid>/exe is not that file,
        // and what is at the path is not it either.
        let other = Target {
            identity: Some(identity(&path)),
            ..renamed.clone()
        };
        let other_hash = hashes.of(&other);
        let _ = child.kill();
        let _ = child.wait();
        let sleep = sha256(File::open("/bin/sleep").unwrap(), Instant::now() + TIMEOUT);
        assert_eq!(hash, sleep, "the executed file, read through /proc");
        assert_eq!(
            other_hash.as_deref(),
            Ok(ABC),
            "the path's own file, when it is the one"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            hashes.of(&renamed),
            Err(HashGaveUp::Replaced),
            "gone, process too"
        );
    }
}
