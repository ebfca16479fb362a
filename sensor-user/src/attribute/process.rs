//! The process table: what the agent knows about each live (or recently exited) process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::workload::Workload;

/// Ancestors kept in [`ProcessInfo::ancestry`].
pub const MAX_ANCESTRY: usize = 16;
/// Default bound of the process table.
pub const DEFAULT_MAX_PROCESSES: usize = 65_536;
/// How long (in event time) an exited process stays in the table, so late events still attribute.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How often (in event time) exited processes past their grace are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The process an event belongs to, as the agent knows it at that event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Absolute path of the executable; empty when the agent never learnt it.
    pub executable: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub uid: u32,
    pub euid: u32,
    /// Known ancestors `(pid, executable)`, parent first, at most [`MAX_ANCESTRY`].
    pub ancestry: Vec<(u32, String)>,
    /// Executable of the parent process, when the agent knows it.
    pub parent_executable: Option<String>,
}

/// One row of the table.
///
/// What a [`ProcessInfo`] shows (`ppid`, `executable`, `argv`, `argv_truncated`, `uid`, `euid`)
/// changes only through [`ProcessTable::insert`], [`ProcessTable::set_ids`] and
/// [`ProcessTable::set_image`], which invalidate the shared infos; the other fields may be
/// changed through [`ProcessTable::get_mut`].
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub ppid: u32,
    pub executable: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub uid: u32,
    pub euid: u32,
    /// The CI job this process belongs to (its own, or inherited from its ancestors).
    pub job: Option<Arc<Workload>>,
    /// The cgroup workload its lineage gives it (see `lineage`); `None` until its first event.
    pub cgroup: Option<Arc<Workload>>,
    /// The last identity claimed in its lineage (see `lineage`), so descendants that inherit
    /// the claim do not repeat it.
    pub claim: Option<Workload>,
    /// Event time of its exit, while it waits out [`EXIT_GRACE`].
    pub exited_at: Option<SystemTime>,
    /// Event time of its newest event (for eviction when the table is full).
    pub last_seen: SystemTime,
    /// Its info as last built, with the table's generation then: shared by every event of the
    /// process until something it shows changes (see [`ProcessTable::info`]).
    pub shared: Option<(u64, Arc<ProcessInfo>)>,
}

#[derive(Debug)]
pub(crate) struct ProcessTable {
    /// Looked up several times per event: foldhash instead of SipHash (pids are small integers
    /// the kernel hands out, not keys a process can choose in bulk).
    entries: HashMap<u32, Entry, foldhash::fast::RandomState>,
    max: usize,
    /// Event time of the next sweep (none yet: the first event sweeps).
    next_sweep: Option<SystemTime>,
    /// Bumped by every change that may alter some process's info: its own fields, or an
    /// ancestor's (executable, parent, presence). A shared info built at an older generation
    /// is rebuilt.
    generation: u64,
}

impl ProcessTable {
    pub(crate) fn new(max: usize) -> Self {
        ProcessTable {
            entries: HashMap::default(),
            max: max.max(1),
            next_sweep: None,
            generation: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, pid: u32) -> Option<&Entry> {
        self.entries.get(&pid)
    }

    /// The entry of `pid`, for the fields no info shows (see [`Entry`]).
    pub(crate) fn get_mut(&mut self, pid: u32) -> Option<&mut Entry> {
        self.entries.get_mut(&pid)
    }

    /// Inserts or replaces `pid`, making room first when the table is full. `keep` is never evicted
    /// (the process whose event is being handled).
    pub(crate) fn insert(&mut self, pid: u32, mut entry: Entry, keep: u32) {
        if !self.entries.contains_key(&pid) && self.entries.len() >= self.max {
            self.make_room(keep);
        }
        entry.shared = None;
        self.entries.insert(pid, entry);
        self.generation += 1;
    }

    /// Sets the parent and ids of `pid` as its newest event says.
    pub(crate) fn set_ids(&mut self, pid: u32, ppid: u32, uid: u32, euid: u32) {
        let Some(e) = self.entries.get_mut(&pid) else {
            return;
        };
        if (e.ppid, e.uid, e.euid) != (ppid, uid, euid) {
            (e.ppid, e.uid, e.euid) = (ppid, uid, euid);
            self.generation += 1;
        }
    }

    /// Sets the image `pid` now runs (at its exec).
    pub(crate) fn set_image(
        &mut self,
        pid: u32,
        executable: &str,
        argv: &[String],
        truncated: bool,
    ) {
        let Some(e) = self.entries.get_mut(&pid) else {
            return;
        };
        e.executable.clear();
        e.executable.push_str(executable);
        e.argv.clear();
        e.argv.extend_from_slice(argv);
        e.argv_truncated = truncated;
        self.generation += 1;
    }

    /// Frees space: all exited processes first; if that is not enough, the least recently seen
    /// sixteenth of the table (a batch, so a table full of live processes is not rescanned on
    /// every insert).
    fn make_room(&mut self, keep: u32) {
        self.generation += 1;
        self.entries.retain(|_, e| e.exited_at.is_none());
        if self.entries.len() < self.max {
            return;
        }
        let batch = (self.max / 16).max(1);
        let mut by_age: Vec<(SystemTime, u32)> = self
            .entries
            .iter()
            .filter(|(pid, _)| **pid != keep)
            .map(|(pid, e)| (e.last_seen, *pid))
            .collect();
        let batch = batch.min(by_age.len());
        if batch == 0 {
            return;
        }
        by_age.select_nth_unstable(batch - 1);
        for (_, pid) in &by_age[..batch] {
            self.entries.remove(pid);
        }
        tracing::debug!(
            evicted = batch,
            max = self.max,
            "process table full, evicted live processes"
        );
    }

    /// Drops exited processes whose grace has passed at event time `now` (at most once per second
    /// of event time).
    pub(crate) fn sweep(&mut self, now: SystemTime) {
        // A comparison per event, not a subtraction (`duration_since` was ~2 % of the agent).
        if self.next_sweep.is_some_and(|next| now < next) {
            return;
        }
        self.next_sweep = now.checked_add(SWEEP_EVERY);
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.exited_at
                .is_none_or(|exit| !now.duration_since(exit).is_ok_and(|d| d >= EXIT_GRACE))
        });
        if self.entries.len() != before {
            self.generation += 1;
        }
    }

    /// The process `pid` with its ancestry; only `pid` is set when the table does not know it.
    /// Shared: every event of a process gets the same info until something it shows changes,
    /// instead of a copy of its executable, argv and ancestry per event.
    pub(crate) fn info(&mut self, pid: u32) -> Arc<ProcessInfo> {
        let generation = self.generation;
        match self.entries.get(&pid).map(|e| &e.shared) {
            None => {
                return Arc::new(ProcessInfo {
                    pid,
                    ..ProcessInfo::default()
                });
            }
            Some(Some((built, info))) if *built == generation => return Arc::clone(info),
            Some(_) => {}
        }
        let info = Arc::new(self.build_info(pid));
        if let Some(e) = self.entries.get_mut(&pid) {
            e.shared = Some((generation, Arc::clone(&info)));
        }
        info
    }

    /// A fresh info of `pid`, which the table knows.
    fn build_info(&self, pid: u32) -> ProcessInfo {
        let Some(entry) = self.entries.get(&pid) else {
            return ProcessInfo {
                pid,
                ..ProcessInfo::default()
            };
        };
        let mut ancestry = Vec::new();
        let mut cur = entry.ppid;
        while ancestry.len() < MAX_ANCESTRY && cur != 0 {
            let Some(ancestor) = self.entries.get(&cur) else {
                break;
            };
            ancestry.push((cur, ancestor.executable.clone()));
            if ancestor.ppid == cur {
                break;
            }
            cur = ancestor.ppid;
        }
        let parent_executable = ancestry
            .first()
            .map(|(_, exe)| exe.clone())
            .filter(|exe| !exe.is_empty());
        ProcessInfo {
            pid,
            ppid: entry.ppid,
            executable: entry.executable.clone(),
            argv: entry.argv.clone(),
            argv_truncated: entry.argv_truncated,
            uid: entry.uid,
            euid: entry.euid,
            ancestry,
            parent_executable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ppid: u32, exe: &str, secs: u64) -> Entry {
        Entry {
            ppid,
            executable: exe.to_owned(),
            argv: vec![exe.to_owned()],
            argv_truncated: false,
            uid: 0,
            euid: 0,
            job: None,
            cgroup: None,
            claim: None,
            exited_at: None,
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            shared: None,
        }
    }

    #[test]
    fn ancestry_parent_first_and_bounded() {
        let mut table = ProcessTable::new(100);
        for pid in 1..=30u32 {
            table.insert(pid, entry(pid - 1, &format!("/bin/p{pid}"), 0), 0);
        }
        let info = table.info(30);
        assert_eq!(info.ppid, 29);
        assert_eq!(info.ancestry.len(), MAX_ANCESTRY);
        assert_eq!(info.ancestry[0], (29, "/bin/p29".to_owned()));
        assert_eq!(info.parent_executable.as_deref(), Some("/bin/p29"));
        let root = table.info(1);
        assert!(root.ancestry.is_empty());
        assert_eq!(root.parent_executable, None);
        assert_eq!(
            *table.info(999),
            ProcessInfo {
                pid: 999,
                ..Default::default()
            }
        );
    }

    #[test]
    fn info_is_shared_until_what_it_shows_changes() {
        let mut table = ProcessTable::new(100);
        table.insert(1, entry(0, "/sbin/init", 0), 0);
        table.insert(2, entry(1, "/bin/bash", 0), 0);
        table.insert(3, entry(2, "/usr/bin/make", 0), 0);
        let first = table.info(3);
        assert!(Arc::ptr_eq(&first, &table.info(3)), "same info, no copy");
        // Fields no info shows leave it shared.
        table.get_mut(3).unwrap().last_seen = SystemTime::UNIX_EPOCH;
        table.set_ids(3, 2, 0, 0);
        assert!(Arc::ptr_eq(&first, &table.info(3)));

        // An ancestor's exec shows in the ancestry.
        table.set_image(2, "/usr/bin/python3", &["python3".to_owned()], false);
        let after_exec = table.info(3);
        assert_eq!(
            after_exec.parent_executable.as_deref(),
            Some("/usr/bin/python3")
        );
        assert_eq!(after_exec.ancestry[1], (1, "/sbin/init".to_owned()));
        // Its own ids and image.
        table.set_ids(3, 2, 1000, 0);
        assert_eq!((table.info(3).uid, table.info(3).euid), (1000, 0));
        table.set_image(3, "/usr/bin/cc", &["cc".to_owned(), "-c".to_owned()], true);
        let own = table.info(3);
        assert_eq!(own.executable, "/usr/bin/cc");
        assert_eq!(own.argv, ["cc", "-c"]);
        assert!(own.argv_truncated);
        // A new parent (reparenting) and an ancestor leaving the table.
        table.set_ids(3, 1, 1000, 0);
        assert_eq!(
            table.info(3).parent_executable.as_deref(),
            Some("/sbin/init")
        );
        table.get_mut(1).unwrap().exited_at = Some(SystemTime::UNIX_EPOCH);
        table.sweep(SystemTime::UNIX_EPOCH + EXIT_GRACE);
        let orphaned = table.info(3);
        assert!(orphaned.ancestry.is_empty(), "{orphaned:?}");
        // The info an event already holds keeps what was true at that event.
        assert_eq!(first.executable, "/usr/bin/make");
        assert_eq!(first.parent_executable.as_deref(), Some("/bin/bash"));
    }

    #[test]
    fn full_table_evicts_exited_first_then_oldest() {
        let mut table = ProcessTable::new(3);
        table.insert(1, entry(0, "/a", 1), 0);
        table.insert(2, entry(1, "/b", 2), 0);
        table.insert(3, entry(1, "/c", 3), 0);
        table.get_mut(3).unwrap().exited_at = Some(SystemTime::UNIX_EPOCH);
        table.insert(4, entry(1, "/d", 4), 0);
        assert!(table.get(3).is_none(), "exited process evicted first");
        assert!(table.get(1).is_some() && table.get(2).is_some());
        table.insert(5, entry(1, "/e", 5), 1);
        assert_eq!(table.len(), 3);
        assert!(table.get(1).is_some(), "kept process survives");
        assert!(table.get(2).is_none(), "oldest live process evicted");
    }

    #[test]
    fn exited_processes_leave_after_the_grace() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut table = ProcessTable::new(10);
        table.insert(7, entry(1, "/x", 100), 0);
        table.get_mut(7).unwrap().exited_at = Some(t0);
        table.sweep(t0 + Duration::from_secs(2));
        assert!(table.get(7).is_some(), "still in its grace");
        table.sweep(t0 + EXIT_GRACE);
        assert!(table.get(7).is_none());
    }
}
