//! cgroup v2 id → path → workload.
//!
//! The kernel reports a task's cgroup as `cgroup_id`, which on cgroup v2 is the inode number of the
//! cgroup's directory under the cgroup2 mount. [`CgroupResolver`] finds the directory by walking the
//! mount and caches the answer; [`workload_for_cgroup_path`] names the workload from the path.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workload::{Workload, WorkloadKind};

/// Container runtimes' scope names under the systemd cgroup driver: `<prefix><id>.scope`.
const CONTAINER_SCOPE_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];
/// Shortest string accepted as a container id (docker's short ids); real cgroup names use 64.
const MIN_CONTAINER_ID_LEN: usize = 12;
/// Deepest directory level walked under the cgroup root.
const MAX_DEPTH: usize = 64;
/// cgroups remembered between two rescans (a rescan replaces the cache).
const MAX_CACHED: usize = 65_536;

/// The workload of a cgroup v2 path relative to the cgroup root (`/` for the root, as in
/// `/proc/<pid>/cgroup`).
///
/// From the deepest component up, the first container found wins: `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope` (or the same without
/// `.scope`, as the cgroupfs driver names them), `<id>` under a `docker`
/// directory or under a kubernetes `pod…` directory, or any 64-hex-digit component
/// (`container:<id>`). Otherwise the deepest `*.service` or `*.scope` component
/// (`unit:<name>`). Otherwise the path itself (`cgroup:<path>`).
pub fn workload_for_cgroup_path(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(id) = container_id(part, parent, &parts[..i]) {
            return Workload::new(WorkloadKind::Container, format!("container:{id}"));
        }
    }
    if let Some(unit) = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
    {
        return Workload::new(WorkloadKind::SystemdUnit, format!("unit:{unit}"));
    }
    let path = if parts.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}", parts.join("/"))
    };
    Workload::new(WorkloadKind::Cgroup, format!("cgroup:{path}"))
}

fn container_id<'a>(part: &'a str, parent: Option<&str>, above: &[&str]) -> Option<&'a str> {
    let is_id =
        |s: &str| s.len() >= MIN_CONTAINER_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit());
    // `<prefix><id>.scope` (systemd cgroup driver) or `<prefix><id>` (cgroupfs driver, e.g.
    // podman's `/libpod_parent/libpod-<id>`).
    let name = part.strip_suffix(".scope").unwrap_or(part);
    if let Some(id) = CONTAINER_SCOPE_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .filter(|id| is_id(id))
    {
        return Some(id);
    }
    if part.ends_with(".scope") {
        return None;
    }
    let in_docker = parent == Some("docker");
    let in_pod = parent.is_some_and(|p| p.starts_with("pod"))
        && above.iter().any(|p| p.starts_with("kubepods"));
    let full_id = part.len() == 64 && is_id(part);
    (((in_docker || in_pod) && is_id(part)) || full_id).then_some(part)
}

/// Resolves cgroup ids to workloads by walking the cgroup2 mount, with a cache.
///
/// A miss triggers a full rescan, at most once per `rescan_interval`; ids still unknown after that
/// get the workload `cgroup:#<id>`, and are retried on the next permitted rescan.
#[derive(Debug)]
pub(crate) struct CgroupResolver {
    root: PathBuf,
    /// Looked up on every event: foldhash instead of SipHash (cgroup ids are kernel-assigned).
    cache: HashMap<u64, Arc<Workload>, foldhash::fast::RandomState>,
    last_scan: Option<Instant>,
    rescan_interval: Duration,
}

impl CgroupResolver {
    pub(crate) fn new(root: PathBuf) -> Self {
        CgroupResolver {
            root,
            cache: HashMap::default(),
            last_scan: None,
            rescan_interval: Duration::from_secs(1),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval;
        self
    }

    #[cfg(test)]
    pub(crate) fn workload(&mut self, cgroup_id: u64) -> Arc<Workload> {
        self.resolve(cgroup_id)
            .unwrap_or_else(|| Arc::new(unresolved_workload(cgroup_id)))
    }

    /// The workload of `cgroup_id`, or `None` when the tree does not (yet) hold it.
    ///
    /// A miss asks the kernel for that one cgroup first ([`path_by_handle`]): a container's
    /// processes often live less than the rescan interval, and must not all miss.
    pub(crate) fn resolve(&mut self, cgroup_id: u64) -> Option<Arc<Workload>> {
        if let Some(w) = self.cache.get(&cgroup_id) {
            return Some(w.clone());
        }
        if let Some(path) = path_by_handle(&self.root, cgroup_id) {
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            let w = Arc::new(workload_for_cgroup_path(&path));
            self.cache.insert(cgroup_id, w.clone());
            return Some(w);
        }
        let may_rescan = self
            .last_scan
            .is_none_or(|last| last.elapsed() >= self.rescan_interval);
        if may_rescan {
            self.rescan();
            return self.cache.get(&cgroup_id).cloned();
        }
        None
    }

    /// Rebuilds the cache from the cgroup tree (dropping ids of removed cgroups).
    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        match scan(&self.root) {
            Ok(paths) => {
                self.cache = paths
                    .into_iter()
                    .map(|(id, path)| (id, Arc::new(workload_for_cgroup_path(&path))))
                    .collect();
            }
            Err(error) => {
                tracing::warn!(root = %self.root.display(), %error, "cannot scan the cgroup v2 tree");
            }
        }
    }
}

/// The path (`/`-rooted, relative to the cgroup2 mount `root`) of the cgroup `id`, asked of the
/// kernel directly: a cgroup id is the kernfs file handle of its directory, so
/// `open_by_handle_at` opens it without a walk (as systemd and bpftool do). `None` when the id
/// is gone, the filesystem is not cgroup2 (tests' temporary trees) or the agent lacks
/// `CAP_DAC_READ_SEARCH`: the caller falls back to a scan.
fn path_by_handle(root: &Path, id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `struct file_handle` with the 8 bytes of a kernfs id.
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: [u8; 8],
    }
    /// `FILEID_KERNFS` in include/linux/exportfs.h.
    const FILEID_KERNFS: i32 = 0xfe;
    let mount = std::fs::File::open(root).ok()?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: id.to_ne_bytes(),
    };
    // SAFETY: `handle` is a `file_handle` header followed by its `handle_bytes` bytes, alive for
    // the call; the returned descriptor is owned right below.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let full = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    let relative = full.strip_prefix(root).ok()?;
    Some(format!("/{}", relative.display()))
}

/// Whether `w` is the cgroup v2 root, which tells nothing on a host where the processes of
/// interest are not placed in v2 cgroups (see [`workload_for_v1_lines`]).
pub(crate) fn is_shared_root(w: &Workload) -> bool {
    w.kind == WorkloadKind::Cgroup && w.id == "cgroup:/"
}

/// The workload of a process from its v1 hierarchies (`/proc/<pid>/cgroup` lines
/// `N:controllers:path`; the v2 line `0::path` is skipped): the first container found in any
/// of them, else the first unit, else `cgroup:/`.
pub(crate) fn workload_for_v1_lines(text: &str) -> Workload {
    let workloads: Vec<Workload> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?;
            let _controllers = parts.next()?;
            let path = parts.next()?;
            (hierarchy != "0").then(|| workload_for_cgroup_path(path))
        })
        .collect();
    let first = |kind| workloads.iter().find(|w| w.kind == kind).cloned();
    first(WorkloadKind::Container)
        .or_else(|| first(WorkloadKind::SystemdUnit))
        .unwrap_or_else(|| Workload::new(WorkloadKind::Cgroup, "cgroup:/".into()))
}

/// The workload of a cgroup id no scan found: `cgroup:#<id>`.
pub(crate) fn unresolved_workload(cgroup_id: u64) -> Workload {
    Workload::new(WorkloadKind::Cgroup, format!("cgroup:#{cgroup_id}"))
}

/// Every cgroup directory under `root`: inode number → path relative to `root` (`/` for root).
/// Directories that vanish or cannot be read during the walk are skipped.
fn scan(root: &Path) -> std::io::Result<HashMap<u64, String>> {
    let mut found = HashMap::new();
    found.insert(std::fs::metadata(root)?.ino(), "/".to_owned());
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // `file_type` does not follow symlinks; cgroupfs has none, other trees might.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let child_rel = format!("{rel}/{}", entry.file_name().to_string_lossy());
            found.insert(meta.ino(), child_rel.clone());
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), child_rel, depth + 1));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn path_to_workload_table() {
        let pod = "kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice";
        let cases: Vec<(String, &str)> = vec![
            ("/".into(), "cgroup:/"),
            ("".into(), "cgroup:/"),
            ("/user.slice".into(), "cgroup:/user.slice"),
            ("/custom/group/".into(), "cgroup:/custom/group"),
            ("/init.scope".into(), "unit:init.scope"),
            ("/system.slice/nginx.service".into(), "unit:nginx.service"),
            (
                "/system.slice/foo.service/sub/leaf".into(),
                "unit:foo.service",
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/bar.scope".into(),
                "unit:bar.scope",
            ),
            (
                format!("/system.slice/docker-{HEX64}.scope"),
                "container:HEX",
            ),
            (format!("/docker/{HEX64}"), "container:HEX"),
            (
                format!("/system.slice/cri-containerd-{HEX64}.scope"),
                "container:HEX",
            ),
            (
                format!("/machine.slice/crio-{HEX64}.scope"),
                "container:HEX",
            ),
            (
                format!("/machine.slice/libpod-{HEX64}.scope/container"),
                "container:HEX",
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/{pod}/cri-containerd-{HEX64}.scope"
                ),
                "container:HEX",
            ),
            (
                format!("/kubepods/besteffort/pod1234-abcd/{HEX64}"),
                "container:HEX",
            ),
            (
                "/kubepods/besteffort/pod1234-abcd/0123456789ab".into(),
                "container:0123456789ab",
            ),
            (format!("/some/where/{HEX64}"), "container:HEX"),
            (format!("/libpod_parent/libpod-{HEX64}"), "container:HEX"),
            (
                "/libpod_parent/conmon".into(),
                "cgroup:/libpod_parent/conmon",
            ),
            // Not containers: conmon scopes, runtime services, short or non-hex ids.
            (
                format!("/machine.slice/libpod-conmon-{HEX64}.scope"),
                "unit:libpod-conmon-HEX.scope",
            ),
            ("/system.slice/docker.service".into(), "unit:docker.service"),
            (
                "/system.slice/docker-abc.scope".into(),
                "unit:docker-abc.scope",
            ),
            ("/docker/not-an-id".into(), "cgroup:/docker/not-an-id"),
        ];
        for (path, want) in cases {
            let want = want.replace("HEX", HEX64);
            assert_eq!(workload_for_cgroup_path(&path).id, want, "path {path:?}");
        }
    }

    #[test]
    fn kinds_follow_the_prefix() {
        assert_eq!(workload_for_cgroup_path("/").kind, WorkloadKind::Cgroup);
        assert_eq!(
            workload_for_cgroup_path("/a.service").kind,
            WorkloadKind::SystemdUnit
        );
        let c = workload_for_cgroup_path(&format!("/docker/{HEX64}"));
        assert_eq!(c.kind, WorkloadKind::Container);
        assert_eq!(c.run_id, None);
    }

    #[test]
    fn resolver_walks_the_tree_and_rescans_on_miss() {
        let root = tempfile::tempdir().expect("tempdir");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let unit = root.path().join("system.slice/nginx.service");
        std::fs::create_dir_all(&unit).expect("mkdir");
        let mut resolver =
            CgroupResolver::new(root.path().to_path_buf()).with_rescan_interval(Duration::ZERO);
        assert_eq!(resolver.workload(ino(&unit)).id, "unit:nginx.service");
        assert_eq!(resolver.workload(ino(root.path())).id, "cgroup:/");
        assert_eq!(
            resolver.workload(ino(&root.path().join("system.slice"))).id,
            "cgroup:/system.slice"
        );

        let late = root.path().join("late");
        std::fs::create_dir(&late).expect("mkdir");
        assert_eq!(resolver.workload(ino(&late)).id, "cgroup:/late");
        assert_eq!(
            resolver.workload(u64::MAX).id,
            format!("cgroup:#{}", u64::MAX)
        );
    }

    #[test]
    fn v1_paths_name_what_the_shared_v2_root_cannot() {
        let docker = format!(
            "12:pids:/docker/{HEX64}\n5:memory:/docker/{HEX64}\n1:name=systemd:/docker/{HEX64}\n0::/\n"
        );
        assert_eq!(
            workload_for_v1_lines(&docker).id,
            format!("container:{HEX64}")
        );
        let unit = "3:pids:/system.slice/cron.service\n0::/\n";
        assert_eq!(workload_for_v1_lines(unit).id, "unit:cron.service");
        assert_eq!(workload_for_v1_lines("0::/\n").id, "cgroup:/");
        assert_eq!(workload_for_v1_lines("garbage").id, "cgroup:/");
        assert!(is_shared_root(&workload_for_cgroup_path("/")));
    }

    #[test]
    fn the_kernel_names_a_cgroup_by_its_id() {
        let root = Path::new("/sys/fs/cgroup/unified");
        let Some(child) = std::fs::read_dir(root)
            .ok()
            .and_then(|mut d| d.find(|e| e.as_ref().is_ok_and(|e| e.path().is_dir())))
            .and_then(Result::ok)
        else {
            println!("skipped: no hybrid cgroup2 mount with a child cgroup here");
            return;
        };
        let id = child.metadata().expect("stat").ino();
        match path_by_handle(root, id) {
            Some(path) => assert_eq!(path, format!("/{}", child.file_name().to_string_lossy())),
            None => println!("skipped: open_by_handle_at refused (not root?)"),
        }
        assert_eq!(path_by_handle(root, u64::MAX), None);
    }

    #[test]
    fn rescans_are_rate_limited() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut resolver = CgroupResolver::new(root.path().to_path_buf())
            .with_rescan_interval(Duration::from_secs(3600));
        assert_eq!(
            resolver.workload(u64::MAX).id,
            format!("cgroup:#{}", u64::MAX)
        );
        let late = root.path().join("late");
        std::fs::create_dir(&late).expect("mkdir");
        let id = std::fs::metadata(&late).expect("stat").ino();
        assert_eq!(
            resolver.workload(id).id,
            format!("cgroup:#{id}"),
            "no second scan yet"
        );
    }
}
