//! The decoded, owned form of a kernel record: what every stage after `decode` works with.

use std::net::IpAddr;
use std::time::SystemTime;

/// One thing a process did, as the kernel saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Wall-clock time of the event (kernel boot time converted at decode).
    pub time: SystemTime,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent process id.
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// `task_struct::comm`, lossily decoded.
    pub comm: String,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A new program image: absolute executable path, argv, environment (`KEY=VALUE`).
    Exec {
        executable: String,
        argv: Vec<String>,
        argv_truncated: bool,
        env: Vec<String>,
        env_truncated: bool,
    },
    /// The process `pid` created the process `child_pid`.
    Fork { child_pid: u32 },
    /// The process exited with this wait status (`(status << 8) | signal`).
    Exit { exit_code: u32 },
    /// A file was opened successfully.
    Open {
        /// Absolute path, symlinks resolved.
        path: String,
        intent: OpenIntent,
    },
    /// An outbound connect on an IP socket.
    Connect {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
        result: ConnectResult,
    },
}

/// What an open asked to do with the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpenIntent {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
}

impl std::fmt::Display for OpenIntent {
    /// `read|write|create|truncate`, the set parts only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.read, "read"),
            (self.write, "write"),
            (self.create, "create"),
            (self.truncate, "truncate"),
        ];
        let mut first = true;
        for (set, name) in parts {
            if set {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectResult {
    Connected,
    /// Non-blocking connect started (`EINPROGRESS`); the outcome is not known yet.
    InProgress,
    /// Failed with this errno.
    Failed(i32),
}
