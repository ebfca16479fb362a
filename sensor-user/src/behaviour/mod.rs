//! What a workload did, as typed behaviours: the vocabulary shared by baselines (what is
//! learnt), detection (what is new) and reports (what is said). Extracted from attributed events
//! ([`Behaviour::of`]) with paths generalised ([`generalize_path`]) so identical runs show
//! identical behaviours.
//!
//! A leaf of the pipeline: it reads events and their attribution, and imports nothing
//! downstream (baseline, detect, report).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::attribute::Attributed;
use crate::event::{
    EventKind, FileOperation, IoUringUse, OpenIntent, PrivilegeOp, Protocol, io_uring_opcode_name,
};

mod describe;
mod generalize;
mod kinds;
pub mod shape;

pub use describe::{object_name, summary};
pub use generalize::generalize_path;
pub use kinds::{FileChange, PrivilegeOperation};

/// One learnable behaviour of a workload. Paths (executables, edges, files, file operations,
/// mount targets) are generalised with [`generalize_path`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// An executable was run (Exec).
    Executable(String),
    /// `parent` (the executable of the exec'ing process's parent) started `child` (Exec).
    ExecEdge { parent: String, child: String },
    /// A file was opened with this intent (`read|write|…` in JSON).
    File { path: String, intent: OpenIntent },
    /// An outbound connect was attempted, whatever its result.
    Destination {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    /// A privileged operation: `operation` as in the proto's `PrivilegeUse`, `detail` its
    /// learnable target (requested ids, fs type, namespace flags...). Refused attempts count.
    Privilege {
        operation: PrivilegeOperation,
        detail: String,
    },
    /// A DNS name was queried.
    DnsName(String),
    /// A socket listened on this address and port (ephemeral ports, >= 32768, are all `0`:
    /// test servers pick a new one every run).
    Listener {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    /// A security-relevant file change: chmod, chown, link, symlink, replace (`detail`: the new
    /// mode, owner, link or target, or for a rename or link onto `path` where the content came
    /// from and what moved it; paths generalised too). Unlinks and mkdirs of build trees are not
    /// baselined (yet).
    FileOperation {
        operation: FileChange,
        path: String,
        detail: String,
    },
    /// `parent` started children running `steps` in this order (the last one just now): the
    /// tool chain, as an n-gram of sibling execs (see `sequence`).
    Sequence { parent: String, steps: Vec<String> },
    /// The workload ran on this host (agent host name).
    Host(String),
    /// The workload was active in this hour of the week, UTC (`weekday` 0 = Monday).
    ActiveTime { weekday: u8, hour: u8 },
}

/// First port of Linux's default ephemeral range.
const EPHEMERAL_PORTS: u16 = 32768;

impl Behaviour {
    /// The behaviours `event` shows, in report order (executable before its edge). An event
    /// attributed to the workload its process just left shows that handoff as well.
    pub fn of(event: &Attributed) -> Vec<Behaviour> {
        let mut out = Self::of_kind(event);
        if let Some(handoff) = &event.context.handoff
            && handoff.from.id == event.workload.id
        {
            out.push(Behaviour::Privilege {
                operation: PrivilegeOperation::IdentityHandoff,
                detail: handoff.detail(),
            });
        }
        out
    }

    fn of_kind(event: &Attributed) -> Vec<Behaviour> {
        match &event.event.kind {
            EventKind::Exec {
                executable, script, ..
            } => {
                // A `#!` script is what ran, not its (learnt) interpreter: the kernel's
                // `filename` names it, whatever the process's argv or environment say.
                let child = generalize_path(script.as_deref().unwrap_or(executable));
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
            EventKind::Open { path, intent, .. } => vec![Behaviour::File {
                path: generalize_path(path),
                intent: *intent,
            }],
            EventKind::Connect {
                address,
                port,
                protocol,
                ..
            } => vec![Behaviour::Destination {
                address: *address,
                port: *port,
                protocol: *protocol,
            }],
            EventKind::Privilege { op, .. } => privilege_key(op)
                .map(|(operation, detail)| Behaviour::Privilege { operation, detail })
                .into_iter()
                .collect(),
            EventKind::Dns {
                response: false,
                message: Some(m),
                ..
            } => vec![Behaviour::DnsName(m.question.name.clone())],
            EventKind::Listen {
                address,
                port,
                protocol,
                ..
            } => vec![Behaviour::Listener {
                address: *address,
                port: if *port >= EPHEMERAL_PORTS { 0 } else { *port },
                protocol: *protocol,
            }],
            EventKind::FileOp(op) => file_operation(op)
                .into_iter()
                .chain(written_by_name(op))
                .chain(replaced(op, &event.process.executable))
                .collect(),
            // io_uring bypasses the syscall hooks: its use and each request kind are learnt,
            // and a file it opens by an absolute name is a file access like an open(2) of it.
            EventKind::IoUring(use_) => std::iter::once(Behaviour::Privilege {
                operation: PrivilegeOperation::IoUring,
                detail: match use_ {
                    IoUringUse::Setup { .. } => "setup".into(),
                    IoUringUse::Submit { opcode, .. } => io_uring_opcode_name(*opcode).into(),
                },
            })
            .chain(io_uring_open(use_).map(|path| Behaviour::File {
                path: generalize_path(path),
                // The request's flags are not captured: the intent is unknown.
                intent: OpenIntent::default(),
            }))
            .collect(),
            // Not baseline dimensions (yet): fork, exit, bind, accept, DNS responses.
            _ => Vec::new(),
        }
    }
}

/// The absolute name an io_uring open request (`IORING_OP_OPENAT`, `IORING_OP_OPENAT2`)
/// submitted; a relative one is relative to a directory fd the agent does not know.
pub fn io_uring_open(use_: &IoUringUse) -> Option<&str> {
    match use_ {
        IoUringUse::Submit {
            opcode: IORING_OP_OPENAT | IORING_OP_OPENAT2,
            name: Some(name),
            ..
        } if name.starts_with('/') => Some(name),
        _ => None,
    }
}

/// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2` (include/uapi/linux/io_uring.h).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

/// `(operation, detail)` of a privileged operation; the detail leaves out what changes every
/// time (target pids, results). `None` only for a set-id syscall the decoder does not name
/// (it names all eight).
fn privilege_key(op: &PrivilegeOp) -> Option<(PrivilegeOperation, String)> {
    use PrivilegeOperation as P;
    Some(match op {
        PrivilegeOp::SetIds { syscall, ids } => (
            syscall.parse().ok()?,
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
        ),
        PrivilegeOp::Capset {
            effective,
            permitted,
        } => (
            P::Capset,
            format!("effective={effective:#x},permitted={permitted:#x}"),
        ),
        PrivilegeOp::PtraceAttach { .. } => (P::PtraceAttach, String::new()),
        PrivilegeOp::ReadProcessMemory { .. } => (P::ReadProcessMemory, String::new()),
        PrivilegeOp::WriteProcessMemory { .. } => (P::WriteProcessMemory, String::new()),
        PrivilegeOp::BpfProgramLoad { program_type } => {
            (P::BpfProgramLoad, format!("type={program_type}"))
        }
        PrivilegeOp::KernelModuleLoad { name } => {
            (P::KernelModuleLoad, name.clone().unwrap_or_default())
        }
        PrivilegeOp::Mount { fstype, target, .. } => {
            (P::Mount, format!("{fstype} on {}", generalize_path(target)))
        }
        PrivilegeOp::Umount { target } => (P::Umount, generalize_path(target)),
        PrivilegeOp::Unshare { flags } => (P::Unshare, format!("{flags:#x}")),
        PrivilegeOp::Setns { nstype } => (P::Setns, format!("{nstype:#x}")),
    })
}

/// Rename and link onto a path replace its content without opening it: they are writes of
/// that path (so output tampering and persistence see them), as `write|create|truncate` (the
/// whole content is new), which an append (`write|create`) learnt by the same path is not.
fn written_by_name(op: &FileOperation) -> Option<Behaviour> {
    let path = match op {
        FileOperation::Rename { to, .. } => to,
        FileOperation::Link { new, .. } => new,
        _ => return None,
    };
    Some(Behaviour::File {
        path: generalize_path(path),
        intent: OpenIntent {
            write: true,
            create: true,
            truncate: true,
            ..OpenIntent::default()
        },
    })
}

/// Who moved new content onto a path by name, and from where: the destination, and as detail
/// `from <source directory> by <executable>` (both generalised). A build moves its outputs into
/// place the same way every run; content swapped in by another tool or from another directory
/// is tampering with the output (see `detect::judge`), though the path itself is learnt.
fn replaced(op: &FileOperation, executable: &str) -> Option<Behaviour> {
    let (from, to) = match op {
        FileOperation::Rename { from, to } => (from, to),
        FileOperation::Link { existing, new } => (existing, new),
        _ => return None,
    };
    let dir = from.rsplit_once('/').map_or("", |(dir, _)| dir);
    Some(Behaviour::FileOperation {
        operation: FileChange::Replace,
        path: generalize_path(to),
        detail: format!(
            "from {} by {}",
            generalize_path(if dir.is_empty() { "/" } else { dir }),
            generalize_path(executable)
        ),
    })
}

fn file_operation(op: &FileOperation) -> Option<Behaviour> {
    let (operation, path, detail) = match op {
        FileOperation::Chmod { path, mode } => (FileChange::Chmod, path, format!("{mode:o}")),
        FileOperation::Chown { path, uid, gid } => {
            let id = |v: &Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
            (FileChange::Chown, path, format!("{}:{}", id(uid), id(gid)))
        }
        FileOperation::Link { existing, new } => (FileChange::Link, existing, generalize_path(new)),
        FileOperation::Symlink { target, link } => {
            (FileChange::Symlink, link, generalize_path(target))
        }
        _ => return None,
    };
    Some(Behaviour::FileOperation {
        operation,
        path: generalize_path(path),
        detail,
    })
}

/// The dimensions of a baseline: one per kind of behaviour, and per kind of new-behaviour
/// deviation. Each is bounded separately (see `MAX_BEHAVIOURS_PER_DIMENSION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dimension {
    Executable,
    ExecEdge,
    FileAccess,
    NetworkDestination,
    PrivilegeUse,
    DnsName,
    Listener,
    FileOperation,
    Sequence,
    Host,
    ActiveTime,
}

impl Dimension {
    /// Number of dimensions.
    pub const COUNT: usize = 11;

    /// Every dimension, in index order.
    pub const ALL: [Dimension; Dimension::COUNT] = [
        Dimension::Executable,
        Dimension::ExecEdge,
        Dimension::FileAccess,
        Dimension::NetworkDestination,
        Dimension::PrivilegeUse,
        Dimension::DnsName,
        Dimension::Listener,
        Dimension::FileOperation,
        Dimension::Sequence,
        Dimension::Host,
        Dimension::ActiveTime,
    ];

    /// Short name, as in the proto's `Cardinality.dimension`: `file-access`...
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Executable => "executable",
            Dimension::ExecEdge => "exec-edge",
            Dimension::FileAccess => "file-access",
            Dimension::NetworkDestination => "network-destination",
            Dimension::PrivilegeUse => "privilege-use",
            Dimension::DnsName => "dns-name",
            Dimension::Listener => "listener",
            Dimension::FileOperation => "file-operation",
            Dimension::Sequence => "sequence",
            Dimension::Host => "host",
            Dimension::ActiveTime => "active-time",
        }
    }

    /// Plural for people: `file accesses`...
    pub fn plural(self) -> &'static str {
        match self {
            Dimension::Executable => "executables",
            Dimension::ExecEdge => "exec edges",
            Dimension::FileAccess => "file accesses",
            Dimension::NetworkDestination => "network destinations",
            Dimension::PrivilegeUse => "privilege uses",
            Dimension::DnsName => "DNS names",
            Dimension::Listener => "listeners",
            Dimension::FileOperation => "file operations",
            Dimension::Sequence => "exec sequences",
            Dimension::Host => "hosts",
            Dimension::ActiveTime => "active hours",
        }
    }

    /// Position in `0..COUNT`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl Behaviour {
    /// The baseline dimension this behaviour belongs to.
    pub fn dimension(&self) -> Dimension {
        match self {
            Behaviour::Executable(_) => Dimension::Executable,
            Behaviour::ExecEdge { .. } => Dimension::ExecEdge,
            Behaviour::File { .. } => Dimension::FileAccess,
            Behaviour::Destination { .. } => Dimension::NetworkDestination,
            Behaviour::Privilege { .. } => Dimension::PrivilegeUse,
            Behaviour::DnsName(_) => Dimension::DnsName,
            Behaviour::Listener { .. } => Dimension::Listener,
            Behaviour::FileOperation { .. } => Dimension::FileOperation,
            Behaviour::Sequence { .. } => Dimension::Sequence,
            Behaviour::Host(_) => Dimension::Host,
            Behaviour::ActiveTime { .. } => Dimension::ActiveTime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Baselines, exports and shared baselines hold behaviours as JSON written when these
    /// fields were strings: the typed fields read and write the same text.
    #[test]
    fn json_is_what_the_string_fields_wrote() {
        let texts = [
            r#"{"file":{"path":"/etc/hosts","intent":"read|write"}}"#,
            r#"{"file":{"path":"/etc/hosts","intent":""}}"#,
            r#"{"destination":{"address":"10.0.0.1","port":443,"protocol":"tcp"}}"#,
            r#"{"listener":{"address":"0.0.0.0","port":0,"protocol":"udp"}}"#,
            r#"{"privilege":{"operation":"setresuid","detail":"0,0,0"}}"#,
            r#"{"privilege":{"operation":"ptrace-attach","detail":""}}"#,
            r#"{"file_operation":{"operation":"chmod","path":"/tmp/x","detail":"4755"}}"#,
        ];
        for text in texts {
            let b: Behaviour = serde_json::from_str(text).expect(text);
            assert_eq!(serde_json::to_string(&b).expect("serialises"), text);
        }
        let unknown = r#"{"file":{"path":"/x","intent":"read|exec"}}"#;
        assert!(serde_json::from_str::<Behaviour>(unknown).is_err());
    }
}
