//! The decoded, owned form of a kernel record: what every stage after `decode` works with.

use std::net::IpAddr;
use std::time::SystemTime;

/// `time` as ns since the Unix epoch (0 before it, saturating far after it): how every stage
/// stores and compares event times.
pub fn unix_nanos(time: SystemTime) -> i64 {
    // Seconds and nanoseconds apart: `as_nanos` goes through u128 arithmetic, and this runs a
    // few times per event.
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs())
            .ok()
            .and_then(|secs| secs.checked_mul(1_000_000_000))
            .and_then(|nanos| nanos.checked_add(i64::from(d.subsec_nanos())))
            .unwrap_or(i64::MAX)
    })
}

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
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A new program image: absolute executable path, argv, environment (`KEY=VALUE`).
    Exec {
        /// The file mapped: for a `#!` script, its interpreter. A memfd keeps its kernel name
        /// (`memfd:...`).
        executable: String,
        argv: Vec<String>,
        argv_truncated: bool,
        env: Vec<String>,
        env_truncated: bool,
        /// Working directory at exec.
        cwd: String,
        /// The script's absolute path when a `#!` interpreter ran it.
        script: Option<String>,
        file: FileIdentity,
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
        /// The opened inode (all 0 when the kernel could not read it).
        file: FileIdentity,
    },
    /// A file operation other than open.
    FileOp(FileOperation),
    /// A privilege-relevant operation; `result` is 0 (or a positive return) on success, a
    /// negative errno on failure.
    Privilege {
        op: PrivilegeOp,
        result: i64,
        /// Real and effective uid before the operation (the event's own are after it).
        uid_before: u32,
        euid_before: u32,
    },
    /// An outbound connect on an IP socket.
    Connect {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
        result: ConnectResult,
    },
    /// A bind to a local address; `result` 0 or a negative errno.
    Bind {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
        result: i32,
    },
    /// A socket starts listening on its bound address.
    Listen {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
        result: i32,
    },
    /// An inbound connection was accepted on `local_port`.
    Accept {
        peer: IpAddr,
        peer_port: u16,
        local_port: u16,
        protocol: Protocol,
    },
    /// io_uring use, which the syscall tracepoints do not see: a ring set up, or a request kind
    /// submitted to one (first time per process image and object).
    IoUring(IoUringUse),
    /// A DNS message the process sent to (or received from) `server`, read once at decode
    /// ([`crate::kernel::dns`]); `None` when the captured bytes are not a well-formed DNS
    /// message with a question.
    Dns {
        server: IpAddr,
        response: bool,
        message: Option<DnsMessage>,
    },
}

/// The first question of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuestion {
    /// Lower-case, without the trailing dot.
    pub name: String,
    /// Record type as text: `A`, `AAAA`, `TXT`, ...
    pub qtype: String,
}

/// What a DNS message says: its question and, for a response, the addresses it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub question: DnsQuestion,
    pub addresses: Vec<IpAddr>,
}

/// Which file an exec mapped or an open opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u32,
    pub ino: u64,
    /// Hard links: 0 for a deleted file or a memfd.
    pub links: u32,
}

impl FileIdentity {
    /// The executable exists in no directory: memfd or deleted after start (fileless).
    pub fn fileless(&self) -> bool {
        self.links == 0
    }
}

/// File operations besides open. Paths are absolute when the kernel gave enough to resolve them
/// (a relative name is joined to the directory it was relative to and `.`/`..` folded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOperation {
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Link {
        existing: String,
        new: String,
    },
    /// `target` is the link's text, never resolved.
    Symlink {
        target: String,
        link: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    /// `None`: left unchanged.
    Chown {
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Truncate {
        path: String,
        length: u64,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
}

/// Privilege-relevant operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivilegeOp {
    /// setuid/setreuid/setresuid/setgid/... with the requested ids (`-1`: unchanged).
    SetIds {
        syscall: &'static str,
        ids: Vec<i64>,
    },
    Capset {
        effective: u32,
        permitted: u32,
    },
    PtraceAttach {
        target_pid: u32,
    },
    ReadProcessMemory {
        target_pid: u32,
    },
    WriteProcessMemory {
        target_pid: u32,
    },
    BpfProgramLoad {
        program_type: u32,
    },
    /// `name`: the module file's name when loaded from a file.
    KernelModuleLoad {
        name: Option<String>,
    },
    Mount {
        source: String,
        target: String,
        fstype: String,
        flags: u64,
    },
    Umount {
        target: String,
    },
    /// CLONE_NEW* flags.
    Unshare {
        flags: u64,
    },
    Setns {
        nstype: u64,
    },
}

/// What an open asked to do with the file. Written (in baselines, JSON and summaries) as its
/// [`Display`](std::fmt::Display): `read|write|create|truncate`, the set parts only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpenIntent {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
}

impl OpenIntent {
    /// Reading only.
    pub const READ_ONLY: OpenIntent = OpenIntent {
        read: true,
        write: false,
        create: false,
        truncate: false,
    };

    /// Whether it changes the file: writes, creates or truncates it.
    pub fn modifies(self) -> bool {
        self.write || self.create || self.truncate
    }
}

impl std::str::FromStr for OpenIntent {
    type Err = String;

    /// The [`Display`](std::fmt::Display) form back; `""` is no part set.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut intent = OpenIntent::default();
        for part in text.split('|').filter(|p| !p.is_empty()) {
            match part {
                "read" => intent.read = true,
                "write" => intent.write = true,
                "create" => intent.create = true,
                "truncate" => intent.truncate = true,
                other => return Err(format!("unknown open intent {other:?}")),
            }
        }
        Ok(intent)
    }
}

impl serde::Serialize for OpenIntent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OpenIntent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
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

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// No connect: a datagram was sent to the address (`sendto`/`sendmsg` with an address on an
    /// unconnected UDP socket), which reaches the host all the same.
    Sent,
}

/// What a process did with io_uring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoUringUse {
    /// `io_uring_setup` with these `IORING_SETUP_*` flags.
    Setup { flags: u32 },
    /// A request was submitted.
    Submit {
        /// `IORING_OP_*` (the kernel's numbering; see [`io_uring_opcode_name`]).
        opcode: u8,
        /// For opens: the file name as submitted, not resolved (a relative name is relative to
        /// the request's directory fd).
        name: Option<String>,
        /// For connects: the address and port.
        destination: Option<(IpAddr, u16)>,
    },
}

/// The name of an `IORING_OP_*` value, lower case as in the kernel's enum (`openat`,
/// `connect`...); `unknown` for values newer than this table.
pub fn io_uring_opcode_name(opcode: u8) -> &'static str {
    const NAMES: [&str; 58] = [
        "nop",
        "readv",
        "writev",
        "fsync",
        "read_fixed",
        "write_fixed",
        "poll_add",
        "poll_remove",
        "sync_file_range",
        "sendmsg",
        "recvmsg",
        "timeout",
        "timeout_remove",
        "accept",
        "async_cancel",
        "link_timeout",
        "connect",
        "fallocate",
        "openat",
        "close",
        "files_update",
        "statx",
        "read",
        "write",
        "fadvise",
        "madvise",
        "send",
        "recv",
        "openat2",
        "epoll_ctl",
        "splice",
        "provide_buffers",
        "remove_buffers",
        "tee",
        "shutdown",
        "renameat",
        "unlinkat",
        "mkdirat",
        "symlinkat",
        "linkat",
        "msg_ring",
        "fsetxattr",
        "setxattr",
        "fgetxattr",
        "getxattr",
        "socket",
        "uring_cmd",
        "send_zc",
        "sendmsg_zc",
        "read_multishot",
        "waitid",
        "futex_wait",
        "futex_wake",
        "futex_waitv",
        "fixed_fd_install",
        "ftruncate",
        "bind",
        "listen",
    ];
    NAMES.get(opcode as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::unix_nanos;

    #[test]
    fn unix_nanos_is_exact_and_saturates() {
        let at = |secs, nanos| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(
            unix_nanos(at(1_700_000_000, 123)),
            1_700_000_000_000_000_123
        );
        assert_eq!(unix_nanos(at(0, 0)), 0);
        assert_eq!(
            unix_nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            0
        );
        // i64::MAX ns is in 2262.
        assert_eq!(unix_nanos(at(9_300_000_000, 0)), i64::MAX);
        assert_eq!(unix_nanos(at(9_223_372_036, 854_775_807)), i64::MAX);
        assert_eq!(unix_nanos(at(9_223_372_036, 854_775_808)), i64::MAX);
        assert_eq!(unix_nanos(at(9_223_372_036, 854_775_806)), i64::MAX - 1);
    }
}
