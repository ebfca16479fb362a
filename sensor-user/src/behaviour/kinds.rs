//! The closed sets a behaviour's fields are drawn from. Each is written (baselines, JSON, the
//! proto's strings, summaries) as its [`as_str`](PrivilegeOperation::as_str) name, the same
//! text the fields held when they were strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A privileged operation, as the proto's `PrivilegeUse.operation` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PrivilegeOperation {
    #[serde(rename = "setuid")]
    SetUid,
    #[serde(rename = "setreuid")]
    SetReuid,
    #[serde(rename = "setresuid")]
    SetResuid,
    #[serde(rename = "setgid")]
    SetGid,
    #[serde(rename = "setregid")]
    SetRegid,
    #[serde(rename = "setresgid")]
    SetResgid,
    #[serde(rename = "setfsuid")]
    SetFsuid,
    #[serde(rename = "setfsgid")]
    SetFsgid,
    #[serde(rename = "capset")]
    Capset,
    #[serde(rename = "ptrace-attach")]
    PtraceAttach,
    #[serde(rename = "read-process-memory")]
    ReadProcessMemory,
    #[serde(rename = "write-process-memory")]
    WriteProcessMemory,
    #[serde(rename = "bpf-program-load")]
    BpfProgramLoad,
    #[serde(rename = "kernel-module-load")]
    KernelModuleLoad,
    #[serde(rename = "mount")]
    Mount,
    #[serde(rename = "umount")]
    Umount,
    #[serde(rename = "unshare")]
    Unshare,
    #[serde(rename = "setns")]
    Setns,
    /// Use of io_uring (its setup, or a request opcode as `detail`): requests submitted through
    /// the ring bypass every syscall hook, so the use itself is what a baseline learns.
    #[serde(rename = "io-uring")]
    IoUring,
    /// A process left the workload for another as its lineage allows (`detail`: how, and the
    /// kind of workload: `ci-environment:github_job`, `cgroup-move:cgroup`): a runner starting
    /// jobs learns it, a service that never did is escaping its baseline.
    #[serde(rename = "identity-handoff")]
    IdentityHandoff,
}

impl PrivilegeOperation {
    pub const ALL: [PrivilegeOperation; 20] = [
        PrivilegeOperation::SetUid,
        PrivilegeOperation::SetReuid,
        PrivilegeOperation::SetResuid,
        PrivilegeOperation::SetGid,
        PrivilegeOperation::SetRegid,
        PrivilegeOperation::SetResgid,
        PrivilegeOperation::SetFsuid,
        PrivilegeOperation::SetFsgid,
        PrivilegeOperation::Capset,
        PrivilegeOperation::PtraceAttach,
        PrivilegeOperation::ReadProcessMemory,
        PrivilegeOperation::WriteProcessMemory,
        PrivilegeOperation::BpfProgramLoad,
        PrivilegeOperation::KernelModuleLoad,
        PrivilegeOperation::Mount,
        PrivilegeOperation::Umount,
        PrivilegeOperation::Unshare,
        PrivilegeOperation::Setns,
        PrivilegeOperation::IoUring,
        PrivilegeOperation::IdentityHandoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegeOperation::SetUid => "setuid",
            PrivilegeOperation::SetReuid => "setreuid",
            PrivilegeOperation::SetResuid => "setresuid",
            PrivilegeOperation::SetGid => "setgid",
            PrivilegeOperation::SetRegid => "setregid",
            PrivilegeOperation::SetResgid => "setresgid",
            PrivilegeOperation::SetFsuid => "setfsuid",
            PrivilegeOperation::SetFsgid => "setfsgid",
            PrivilegeOperation::Capset => "capset",
            PrivilegeOperation::PtraceAttach => "ptrace-attach",
            PrivilegeOperation::ReadProcessMemory => "read-process-memory",
            PrivilegeOperation::WriteProcessMemory => "write-process-memory",
            PrivilegeOperation::BpfProgramLoad => "bpf-program-load",
            PrivilegeOperation::KernelModuleLoad => "kernel-module-load",
            PrivilegeOperation::Mount => "mount",
            PrivilegeOperation::Umount => "umount",
            PrivilegeOperation::Unshare => "unshare",
            PrivilegeOperation::Setns => "setns",
            PrivilegeOperation::IoUring => "io-uring",
            PrivilegeOperation::IdentityHandoff => "identity-handoff",
        }
    }

    /// Reaches into other processes or the kernel, or makes new namespaces or mounts: what
    /// sandbox escapes and container breakouts start with.
    pub fn intrusive(self) -> bool {
        matches!(
            self,
            PrivilegeOperation::PtraceAttach
                | PrivilegeOperation::ReadProcessMemory
                | PrivilegeOperation::WriteProcessMemory
                | PrivilegeOperation::BpfProgramLoad
                | PrivilegeOperation::KernelModuleLoad
                | PrivilegeOperation::Unshare
                | PrivilegeOperation::Setns
                | PrivilegeOperation::Mount
                | PrivilegeOperation::IoUring
                | PrivilegeOperation::IdentityHandoff
        )
    }
}

/// A security-relevant file change that baselines learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileChange {
    Chmod,
    Chown,
    Link,
    Symlink,
    /// New content moved onto a path by name (rename or link onto it), with where it came from
    /// and what moved it: how a build moves its outputs into place, and how an attacker swaps
    /// one without writing it.
    Replace,
}

impl FileChange {
    pub const ALL: [FileChange; 5] = [
        FileChange::Chmod,
        FileChange::Chown,
        FileChange::Link,
        FileChange::Symlink,
        FileChange::Replace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileChange::Chmod => "chmod",
            FileChange::Chown => "chown",
            FileChange::Link => "link",
            FileChange::Symlink => "symlink",
            FileChange::Replace => "replace",
        }
    }
}

macro_rules! named {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                <$t>::ALL
                    .into_iter()
                    .find(|k| k.as_str() == text)
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), text))
            }
        }
    };
}

named!(PrivilegeOperation, "privileged operation");
named!(FileChange, "file change");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for op in PrivilegeOperation::ALL {
            assert_eq!(op.as_str().parse::<PrivilegeOperation>(), Ok(op));
            let json = serde_json::to_string(&op).expect("serialises");
            assert_eq!(json, format!("\"{op}\""));
        }
        for change in FileChange::ALL {
            assert_eq!(change.as_str().parse::<FileChange>(), Ok(change));
            let json = serde_json::to_string(&change).expect("serialises");
            assert_eq!(json, format!("\"{change}\""));
        }
        assert!("chmodx".parse::<FileChange>().is_err());
    }
}
