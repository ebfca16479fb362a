//! What an event means beyond itself, from what came before it:
//! - the DNS name a workload resolved to the address it now connects to;
//! - whether an executable was written by the same workload before it ran ("drop and execute");
//! - whether the executable exists in no directory (memfd, deleted: "fileless").

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use crate::event::{EventKind, FileOperation};

use super::Workload;

/// Context of one event. The rare parts (a claim, a handoff) are boxed: every event moves its
/// context a few times on its way to the engine, and inline they made it 240 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// For a connect: the name the address was resolved from, when seen.
    pub dns_name: Option<String>,
    /// For an exec: the workload wrote this executable (or script) earlier.
    pub dropped_then_executed: bool,
    /// For an exec: the executable is a memfd or a deleted file.
    pub fileless: bool,
    /// The process claimed a job, run or cgroup identity its lineage does not give it (set by
    /// the attributor, once per lineage and claim; see `attribute::lineage`).
    pub identity_claim: Option<Box<super::IdentityClaim>>,
    /// The process left a workload for this one as its lineage allows (a job started, a move
    /// out of a plain cgroup): a behaviour of the workload it left (see `attribute::lineage`).
    pub handoff: Option<Box<super::Handoff>>,
    /// For an event in a container: the container's id (evidence; the workload is named by
    /// image and outlives it, see `attribute::container`).
    pub container_id: Option<String>,
}

/// Remembered names and written paths, bounded: the oldest are forgotten first.
#[derive(Debug)]
pub struct ContextTracker {
    names: Fifo<IpAddr, String>,
    written: Fifo<(String, String), ()>,
}

const MAX_NAMES: usize = 16_384;
const MAX_WRITTEN: usize = 65_536;

impl Default for ContextTracker {
    fn default() -> Self {
        ContextTracker {
            names: Fifo::new(MAX_NAMES),
            written: Fifo::new(MAX_WRITTEN),
        }
    }
}

impl ContextTracker {
    /// Learns from `kind` (in `workload`) and returns its context.
    pub fn observe(&mut self, kind: &EventKind, workload: &Workload) -> Context {
        let mut context = Context::default();
        let mut wrote = |path: &str| {
            self.written
                .insert((workload.id.clone(), path.to_owned()), ())
        };
        match kind {
            EventKind::Dns {
                response: true,
                message: Some(m),
                ..
            } => {
                for address in &m.addresses {
                    self.names.insert(*address, m.question.name.clone());
                }
            }
            EventKind::Connect { address, .. } => {
                context.dns_name = self.names.get(address).cloned();
            }
            EventKind::Open { path, intent, .. } if intent.write || intent.create => wrote(path),
            EventKind::FileOp(FileOperation::Rename { to, .. }) => wrote(to),
            EventKind::FileOp(FileOperation::Link { new, .. }) => wrote(new),
            EventKind::FileOp(FileOperation::Chmod { path, .. }) => wrote(path),
            EventKind::Exec {
                executable,
                script,
                file,
                ..
            } => {
                context.fileless = file.fileless();
                let key = |p: &str| (workload.id.clone(), p.to_owned());
                context.dropped_then_executed = self.written.contains(&key(executable))
                    || script
                        .as_deref()
                        .is_some_and(|s| self.written.contains(&key(s)));
            }
            _ => {}
        }
        context
    }
}

/// A map that forgets its oldest insertions beyond `cap` entries.
#[derive(Debug)]
struct Fifo<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Fifo<K, V> {
    fn new(cap: usize) -> Self {
        Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            if self.order.len() > self.cap
                && let Some(oldest) = self.order.pop_front()
            {
                self.map.remove(&oldest);
            }
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::WorkloadKind;
    use crate::event::{ConnectResult, FileIdentity, OpenIntent, Protocol};

    fn job() -> Workload {
        Workload::new(WorkloadKind::GithubJob, "github:a/b/c/d".into())
    }

    fn exec(path: &str, links: u32) -> EventKind {
        EventKind::Exec {
            executable: path.into(),
            argv: vec![],
            argv_truncated: false,
            env: vec![],
            env_truncated: false,
            cwd: "/".into(),
            script: None,
            file: FileIdentity {
                dev: 1,
                ino: 2,
                links,
            },
        }
    }

    #[test]
    fn drop_then_execute_in_the_same_workload_only() {
        let mut t = ContextTracker::default();
        let write = EventKind::Open {
            path: "/tmp/x".into(),
            intent: OpenIntent {
                write: true,
                create: true,
                ..Default::default()
            },
            file: Default::default(),
        };
        t.observe(&write, &job());
        assert!(t.observe(&exec("/tmp/x", 1), &job()).dropped_then_executed);
        let other = Workload::new(WorkloadKind::Cgroup, "cgroup:/other".into());
        assert!(!t.observe(&exec("/tmp/x", 1), &other).dropped_then_executed);
        assert!(
            !t.observe(&exec("/usr/bin/true", 1), &job())
                .dropped_then_executed
        );
        assert!(t.observe(&exec("memfd:x", 0), &job()).fileless);
    }

    #[test]
    fn connect_gets_the_name_a_response_gave() {
        let mut t = ContextTracker::default();
        let response = EventKind::Dns {
            server: "127.0.0.53".parse().unwrap(),
            response: true,
            message: Some(crate::event::DnsMessage {
                question: crate::event::DnsQuestion {
                    name: "exfil.test".into(),
                    qtype: "A".into(),
                },
                addresses: vec!["127.0.0.7".parse().unwrap()],
            }),
        };
        t.observe(&response, &job());
        let connect = EventKind::Connect {
            address: "127.0.0.7".parse().unwrap(),
            port: 443,
            protocol: Protocol::Tcp,
            result: ConnectResult::Connected,
        };
        assert_eq!(
            t.observe(&connect, &job()).dns_name.as_deref(),
            Some("exfil.test")
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut f = Fifo::new(3);
        for i in 0..10 {
            f.insert(i, ());
        }
        assert_eq!(f.map.len(), 3);
        assert!(f.contains(&9) && !f.contains(&0));
    }
}
