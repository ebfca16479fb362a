//! The things a workload does that its baseline records, extracted from attributed events.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::attribute::Attributed;
use crate::event::EventKind;

/// One learnable behaviour of a workload. Paths are generalised with [`generalize_path`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// An executable was run (Exec).
    Executable(String),
    /// `parent` (the executable of the exec'ing process's parent) started `child` (Exec).
    ExecEdge { parent: String, child: String },
    /// A file was opened with this intent (`read|write|…`, as `OpenIntent` displays it).
    File { path: String, intent: String },
    /// An outbound connect was attempted, whatever its result.
    Destination {
        address: IpAddr,
        port: u16,
        /// `tcp` or `udp`.
        protocol: String,
    },
}

impl Behaviour {
    /// The behaviours `event` shows, in report order (executable before its edge).
    pub fn of(event: &Attributed) -> Vec<Behaviour> {
        match &event.event.kind {
            EventKind::Exec { executable, .. } => {
                let child = generalize_path(executable);
                let edge =
                    event
                        .process
                        .parent_executable
                        .as_deref()
                        .map(|parent| Behaviour::ExecEdge {
                            parent: generalize_path(parent),
                            child: child.clone(),
                        });
                std::iter::once(Behaviour::Executable(child))
                    .chain(edge)
                    .collect()
            }
            EventKind::Open { path, intent } => vec![Behaviour::File {
                path: generalize_path(path),
                intent: intent.to_string(),
            }],
            EventKind::Connect {
                address,
                port,
                protocol,
                ..
            } => vec![Behaviour::Destination {
                address: *address,
                port: *port,
                protocol: protocol.as_str().to_owned(),
            }],
            // Not (yet) baseline dimensions.
            _ => Vec::new(),
        }
    }
}

/// The minimal generalisation that makes identical runs identical: per-process procfs paths
/// name the pid, so `/proc/<digits>` becomes `/proc/<pid>` and `/proc/<pid>/task/<digits>`
/// becomes `/proc/<pid>/task/<tid>`. `/proc/self`, `/proc/thread-self` and everything else stay
/// as they are. (Temporary file names, versioned paths etc. are a later issue.)
pub fn generalize_path(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return path.to_owned();
    };
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = rest.splitn(4, '/');
    let first = parts.next().unwrap_or_default();
    if !is_number(first) {
        return path.to_owned();
    }
    let mut out = String::from("/proc/<pid>");
    let second = parts.next();
    let third = parts.next();
    match (second, third) {
        (Some("task"), Some(tid)) if is_number(tid) => {
            out.push_str("/task/<tid>");
        }
        _ => {
            for part in [second, third].into_iter().flatten() {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if let Some(tail) = parts.next() {
        out.push('/');
        out.push_str(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalises_pids_only() {
        let cases = [
            ("/proc/1234/status", "/proc/<pid>/status"),
            ("/proc/1234", "/proc/<pid>"),
            ("/proc/1/task/77/comm", "/proc/<pid>/task/<tid>/comm"),
            ("/proc/1/task/77", "/proc/<pid>/task/<tid>"),
            ("/proc/1/task", "/proc/<pid>/task"),
            ("/proc/1/fd/3", "/proc/<pid>/fd/3"),
            ("/proc/1/a/b/c/d", "/proc/<pid>/a/b/c/d"),
            ("/proc/self/status", "/proc/self/status"),
            ("/proc/meminfo", "/proc/meminfo"),
            ("/proc/12ab/x", "/proc/12ab/x"),
            ("/home/u/proc/1/x", "/home/u/proc/1/x"),
            ("/proc/", "/proc/"),
        ];
        for (path, want) in cases {
            assert_eq!(generalize_path(path), want, "{path}");
        }
    }
}
