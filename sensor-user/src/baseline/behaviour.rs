//! The things a workload does that its baseline records, extracted from attributed events.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::attribute::Attributed;
use crate::event::{EventKind, FileOperation, IoUringUse, PrivilegeOp, io_uring_opcode_name};
use crate::kernel::dns;

use super::generalize::generalize_path;

/// One learnable behaviour of a workload. Paths (executables, edges, files, file operations,
/// mount targets) are generalised with [`generalize_path`].
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
    /// A privileged operation: `operation` as in the proto's `PrivilegeUse`, `detail` its
    /// learnable target (requested ids, fs type, namespace flags...). Refused attempts count.
    Privilege { operation: String, detail: String },
    /// A DNS name was queried.
    DnsName(String),
    /// A socket listened on this address and port (ephemeral ports, >= 32768, are all `0`:
    /// test servers pick a new one every run).
    Listener {
        address: IpAddr,
        port: u16,
        protocol: String,
    },
    /// A security-relevant file change: chmod, chown, link, symlink (`detail`: the new mode,
    /// owner, link or target; links and targets generalised too). Renames, unlinks and mkdirs of
    /// build trees are not baselined (yet).
    FileOperation {
        operation: String,
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
            EventKind::Privilege { op, .. } => {
                let (operation, detail) = privilege_key(op);
                vec![Behaviour::Privilege {
                    operation: operation.into(),
                    detail,
                }]
            }
            EventKind::Dns {
                response: false,
                message,
                ..
            } => dns::parse(message)
                .map(|m| vec![Behaviour::DnsName(m.question.name)])
                .unwrap_or_default(),
            EventKind::Listen {
                address,
                port,
                protocol,
                ..
            } => vec![Behaviour::Listener {
                address: *address,
                port: if *port >= EPHEMERAL_PORTS { 0 } else { *port },
                protocol: protocol.as_str().to_owned(),
            }],
            EventKind::FileOp(op) => file_operation(op).into_iter().collect(),
            // io_uring bypasses the syscall hooks: its use and each request kind are learnt.
            EventKind::IoUring(use_) => vec![Behaviour::Privilege {
                operation: "io-uring".into(),
                detail: match use_ {
                    IoUringUse::Setup { .. } => "setup".into(),
                    IoUringUse::Submit { opcode, .. } => io_uring_opcode_name(*opcode).into(),
                },
            }],
            // Not baseline dimensions (yet): fork, exit, bind, accept, DNS responses.
            _ => Vec::new(),
        }
    }
}

/// `(operation, detail)` of a privileged operation; the detail leaves out what changes every
/// time (target pids, results).
fn privilege_key(op: &PrivilegeOp) -> (&'static str, String) {
    match op {
        PrivilegeOp::SetIds { syscall, ids } => (
            syscall,
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
        ),
        PrivilegeOp::Capset {
            effective,
            permitted,
        } => (
            "capset",
            format!("effective={effective:#x},permitted={permitted:#x}"),
        ),
        PrivilegeOp::PtraceAttach { .. } => ("ptrace-attach", String::new()),
        PrivilegeOp::ReadProcessMemory { .. } => ("read-process-memory", String::new()),
        PrivilegeOp::WriteProcessMemory { .. } => ("write-process-memory", String::new()),
        PrivilegeOp::BpfProgramLoad { program_type } => {
            ("bpf-program-load", format!("type={program_type}"))
        }
        PrivilegeOp::KernelModuleLoad { name } => {
            ("kernel-module-load", name.clone().unwrap_or_default())
        }
        PrivilegeOp::Mount { fstype, target, .. } => {
            ("mount", format!("{fstype} on {}", generalize_path(target)))
        }
        PrivilegeOp::Umount { target } => ("umount", generalize_path(target)),
        PrivilegeOp::Unshare { flags } => ("unshare", format!("{flags:#x}")),
        PrivilegeOp::Setns { nstype } => ("setns", format!("{nstype:#x}")),
    }
}

fn file_operation(op: &FileOperation) -> Option<Behaviour> {
    let (operation, path, detail) = match op {
        FileOperation::Chmod { path, mode } => ("chmod", path, format!("{mode:o}")),
        FileOperation::Chown { path, uid, gid } => {
            let id = |v: &Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
            ("chown", path, format!("{}:{}", id(uid), id(gid)))
        }
        FileOperation::Link { existing, new } => ("link", existing, generalize_path(new)),
        FileOperation::Symlink { target, link } => ("symlink", link, generalize_path(target)),
        _ => return None,
    };
    Some(Behaviour::FileOperation {
        operation: operation.into(),
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
