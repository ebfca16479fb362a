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
const CGROUP: &str = "/sys/fs/cgroup";
const CGROUP_UNIFIED: &str = "/sys/fs/cgroup/unified";

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
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if cgroup2_mount_point(&mounts).is_none() {
        // A v1 layout (a tmpfs at /sys/fs/cgroup) keeps its place: v2 goes beside it, as
        // hybrid hosts do. Otherwise (nothing mounted there) v2 is the hierarchy.
        let at = if is_mount_of(CGROUP, "tmpfs") {
            let _ = std::fs::create_dir(CGROUP_UNIFIED);
            CGROUP_UNIFIED
        } else {
            CGROUP
        };
        mount_fs("cgroup2", at)?;
        mounted.push(at);
    }
    Ok(mounted)
}

const SECURITYFS: &str = "/sys/kernel/security";

/// The active LSMs in the kernel's order (`/sys/kernel/security/lsm`), mounting securityfs
/// where it is missing (a fresh machine or a bare initramfs may not have it).
pub fn active_lsms() -> Result<Vec<String>, MountError> {
    let list = Path::new(SECURITYFS).join("lsm");
    if !list.exists() {
        mount_fs("securityfs", SECURITYFS)?;
    }
    let text = std::fs::read_to_string(&list).map_err(|e| MountError {
        fs: "securityfs",
        path: SECURITYFS,
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(nix::Error::ENOENT as i32)),
    })?;
    Ok(parse_lsm_list(&text))
}

/// `"lockdown,capability,bpf\n"` → its names.
fn parse_lsm_list(text: &str) -> Vec<String> {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where the cgroup v2 hierarchy is mounted, opened for attaching cgroup programs to its root:
/// `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Result<std::fs::File, MountError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = cgroup2_mount_point(&mounts).ok_or(MountError {
        fs: "cgroup2",
        path: "/sys/fs/cgroup/unified",
        source: nix::Error::ENOENT,
    })?;
    std::fs::File::open(&path).map_err(|e| MountError {
        fs: "cgroup2",
        path: "/sys/fs/cgroup/unified",
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(nix::Error::ENOENT as i32)),
    })
}

/// The first `cgroup2` mount point in a mounts table.
fn cgroup2_mount_point(mounts: &str) -> Option<String> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, path, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| path.to_owned())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_found_on_hybrid_and_unified_hosts() {
        let hybrid =
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_point(hybrid).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_mount_point(unified).as_deref(),
            Some("/sys/fs/cgroup")
        );
        assert_eq!(cgroup2_mount_point("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn lsm_list_is_split_on_commas() {
        assert_eq!(
            parse_lsm_list("lockdown,capability,landlock,bpf\n"),
            ["lockdown", "capability", "landlock", "bpf"]
        );
        assert!(parse_lsm_list("\n").is_empty());
    }
}
