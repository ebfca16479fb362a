//! Reading the processes that already run when the agent starts from `/proc`.
//!
//! Every file is optional: kernel threads have no `exe`, and without `CAP_SYS_PTRACE` the
//! `environ` and `exe` of other users' processes are unreadable. A process that exits during the
//! read is skipped when its `stat` is gone.

use std::path::Path;

use super::workload::{Workload, ci_job_from_env};

/// What `/proc/<pid>` tells about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcProcess {
    pub pid: u32,
    pub ppid: u32,
    pub executable: String,
    pub argv: Vec<String>,
    pub uid: u32,
    pub euid: u32,
    /// The CI job its own environment names (not yet the inherited one).
    pub ci_job: Option<Workload>,
}

/// All processes under `proc_root` (normally `/proc`), in no particular order.
pub(crate) fn read_processes(proc_root: &Path) -> Vec<ProcProcess> {
    let entries = match std::fs::read_dir(proc_root) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(root = %proc_root.display(), %error, "cannot list processes");
            return Vec::new();
        }
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            read_process(&e.path(), pid)
        })
        .collect()
}

fn read_process(dir: &Path, pid: u32) -> Option<ProcProcess> {
    let ppid = parse_stat_ppid(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let (uid, euid) = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| parse_status_uids(&s))
        .unwrap_or_default();
    let executable = std::fs::read_link(dir.join("exe"))
        .map(|p| {
            let p = p.to_string_lossy();
            p.strip_suffix(" (deleted)").unwrap_or(&p).to_owned()
        })
        .unwrap_or_default();
    let argv = std::fs::read(dir.join("cmdline"))
        .map(|b| split_nul(&b))
        .unwrap_or_default();
    let env = std::fs::read(dir.join("environ"))
        .map(|b| split_nul(&b))
        .unwrap_or_default();
    Some(ProcProcess {
        pid,
        ppid,
        executable,
        argv,
        uid,
        euid,
        ci_job: ci_job_from_env(&env),
    })
}

/// Most bytes read by [`read_small`].
const SMALL: u64 = 16 * 1024;

/// A small procfs file (`/proc/<pid>/cgroup`), at most [`SMALL`] bytes; `None` when the
/// process is gone.
pub(crate) fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(SMALL)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The ppid from `/proc/<pid>/stat` (`pid (comm) state ppid …`; comm may hold spaces and `)`).
pub(crate) fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Real and effective uid from `/proc/<pid>/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub(crate) fn parse_status_uids(status: &str) -> Option<(u32, u32)> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_ascii_whitespace().map(str::parse::<u32>);
    Some((ids.next()?.ok()?, ids.next()?.ok()?))
}

/// NUL-separated strings (`cmdline`, `environ`), lossily decoded, without the trailing empty one.
fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ppid_with_tricky_comm() {
        assert_eq!(parse_stat_ppid("42 (bash) S 7 42 42 0"), Some(7));
        assert_eq!(parse_stat_ppid("42 (a) b (c) R 9 1 1"), Some(9));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn status_uids() {
        let status = "Name:\tbash\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_status_uids(status), Some((1000, 0)));
        assert_eq!(parse_status_uids("Name:\tx\n"), None);
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("100");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("stat"), "100 (sh) S 1 100 100 0").expect("write");
        std::fs::write(dir.join("status"), "Uid:\t5\t6\t6\t6\n").expect("write");
        std::fs::write(dir.join("cmdline"), b"sh\0-c\0true\0").expect("write");
        std::fs::write(
            dir.join("environ"),
            b"GITLAB_CI=1\0CI_PROJECT_PATH=g/p\0CI_JOB_NAME=t\0",
        )
        .expect("write");
        std::os::unix::fs::symlink("/usr/bin/dash (deleted)", dir.join("exe")).expect("symlink");
        std::fs::create_dir(root.path().join("self")).expect("mkdir");

        let procs = read_processes(root.path());
        assert_eq!(procs.len(), 1);
        let p = &procs[0];
        assert_eq!((p.pid, p.ppid, p.uid, p.euid), (100, 1, 5, 6));
        assert_eq!(p.executable, "/usr/bin/dash");
        assert_eq!(p.argv, ["sh", "-c", "true"]);
        assert_eq!(
            p.ci_job.as_ref().map(|j| j.id.as_str()),
            Some("gitlab:g/p/t")
        );
    }
}
