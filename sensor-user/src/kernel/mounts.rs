//! The pseudo filesystems the programs need: tracefs (classic tracepoints are attached by the id
//! found there) and bpffs. A fresh machine may have neither mounted; like other sensors, we mount
//! what is missing.

use std::path::Path;

use nix::mount::{MsFlags, mount};

#[derive(Debug, thiserror::Error)]
#[error(
    "{fs} is not mounted at {path} and mounting it failed ({source}); mount it by hand: `mount -t {fs} {fs} {path}`"
)]
pub struct MountError {
    fs: &'static str,
    path: &'static str,
    source: nix::Error,
}

const TRACEFS: &str = "/sys/kernel/tracing";
const BPFFS: &str = "/sys/fs/bpf";

/// Mounts tracefs and bpffs where they are missing. Returns what it mounted, for the log.
pub fn ensure() -> Result<Vec<&'static str>, MountError> {
    let mut mounted = Vec::new();
    // tracefs can also be reached through debugfs on old setups; either has `events/`.
    if !Path::new(TRACEFS).join("events").exists()
        && !Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        mount_fs("tracefs", TRACEFS)?;
        mounted.push(TRACEFS);
    }
    if !is_mount_of(BPFFS, "bpf") {
        mount_fs("bpf", BPFFS)?;
        mounted.push(BPFFS);
    }
    Ok(mounted)
}

fn mount_fs(fs: &'static str, path: &'static str) -> Result<(), MountError> {
    mount(Some(fs), path, Some(fs), MsFlags::empty(), None::<&str>).map_err(|source| MountError {
        fs,
        path,
        source,
    })
}

/// True when /proc/self/mounts lists a `fstype` mount at `path`.
fn is_mount_of(path: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.nth(1) == Some(path) && f.next() == Some(fstype)
            })
        })
        .unwrap_or(false)
}
