//! Ring buffer records.

use core::mem::size_of;

/// Bytes of path components a [`PathRecord`] holds.
pub const PATH_DATA: usize = 4096;
/// Longest single component the kernel reads (NAME_MAX + NUL); also the slack after `PATH_DATA` so
/// a masked write offset never leaves the buffer.
pub const PATH_COMPONENT_MAX: usize = 256;
/// Deepest directory nesting walked before a path is marked truncated.
pub const PATH_MAX_DEPTH: u32 = 48;
/// Bytes of the NUL-separated argv block kept per exec.
pub const ARGV_DATA: usize = 1024;
/// Bytes of the NUL-separated environment block kept per exec (CI job detection reads it).
pub const ENV_DATA: usize = 8192;
/// Bytes kept of a single string argument (a file name as a syscall was given it).
pub const NAME_DATA: usize = 256;

/// Event kinds, grouped by family with gaps; numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Open = 100,
    FileOp = 101,
    Connect = 200,
    Bind = 201,
    Listen = 202,
    Accept = 203,
    Dns = 210,
    /// A datagram sent to an explicit address (`sendto`/`sendmsg` on an unconnected UDP socket);
    /// laid out as a [`SocketEvent`].
    Send = 204,
    Privilege = 300,
    /// A process set up an io_uring, or submitted a request kind to one ([`IoUringEvent`]).
    IoUring = 400,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            100 => Self::Open,
            101 => Self::FileOp,
            200 => Self::Connect,
            201 => Self::Bind,
            202 => Self::Listen,
            203 => Self::Accept,
            204 => Self::Send,
            210 => Self::Dns,
            300 => Self::Privilege,
            400 => Self::IoUring,
            other => return Err(other),
        })
    }
}

/// `EventHeader::flags` bit: argv was longer than [`ARGV_DATA`].
pub const FLAG_ARGV_TRUNCATED: u32 = 1 << 0;
/// `EventHeader::flags` bit: environment was longer than [`ENV_DATA`].
pub const FLAG_ENV_TRUNCATED: u32 = 1 << 1;

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub ktime_ns: u64,
    /// Thread id.
    pub tid: u32,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    // No `comm`: the task's name is whatever the process set (`prctl(PR_SET_NAME)`), nothing
    // reads it, and filling it cost a helper call per record.
}
const _: () = assert!(size_of::<EventHeader>() == 48);

/// `PathRecord::flags` bit: the walk stopped before reaching the root (too deep or too long).
pub const PATH_TRUNCATED: u32 = 1 << 0;
/// `PathRecord::flags` bit: the dentry is unlinked (deleted file, memfd, anonymous inode).
pub const PATH_UNLINKED: u32 = 1 << 1;

/// A path as the kernel's dentry walk produced it: components from the leaf up to the root, each
/// NUL-terminated, in `data[..len]`. The user side reverses and joins them. Reading the dentry
/// chain (rather than the string a syscall was given) gives the absolute, symlink-free path.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRecord {
    pub len: u32,
    /// `PATH_*` bits.
    pub flags: u32,
    pub data: [u8; PATH_DATA + PATH_COMPONENT_MAX],
}
const _: () = assert!(size_of::<PathRecord>() == 8 + PATH_DATA + PATH_COMPONENT_MAX);

/// A successful execve/execveat: the new image is in place.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Bytes used in `argv` (NUL-separated arguments).
    pub argv_len: u32,
    /// Bytes used in `env` (NUL-separated `KEY=VALUE` strings).
    pub env_len: u32,
    /// Inode number and device of the executable file.
    pub ino: u64,
    pub dev: u32,
    /// Link count of the executable: 0 for a deleted file or a memfd.
    pub nlink: u32,
    /// The file actually mapped: for a `#!` script, its interpreter.
    pub executable: PathRecord,
    /// Working directory at exec.
    pub cwd: PathRecord,
    /// `bprm->filename`: the path as given to execve (a script's own path).
    pub filename: [u8; NAME_DATA],
    /// `bprm->interp`: differs from `filename` when a `#!` interpreter (or binfmt_misc) ran.
    pub interp: [u8; NAME_DATA],
    pub argv: [u8; ARGV_DATA],
    pub env: [u8; ENV_DATA],
}
const _: () = assert!(size_of::<ExecEvent>().is_multiple_of(8));

/// A new process (not a thread) was created.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// The header describes the parent.
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ForkEvent>() == size_of::<EventHeader>() + 8);

/// A thread-group leader exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task_struct::exit_code`: `(status << 8) | signal`.
    pub exit_code: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExitEvent>() == size_of::<EventHeader>() + 8);

/// Open intent bits, as requested by the caller.
pub const OPEN_READ: u32 = 1 << 0;
pub const OPEN_WRITE: u32 = 1 << 1;
pub const OPEN_CREATE: u32 = 1 << 2;
pub const OPEN_TRUNCATE: u32 = 1 << 3;

/// A successful open/openat/openat2/creat.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// The raw `O_*` flags given to the syscall.
    pub open_flags: u32,
    /// The returned file descriptor.
    pub fd: i32,
    /// The opened file's identity (`i_ino`, `i_sb->s_dev`, `i_nlink`): a credential store read
    /// through a hard link, a moved copy or another name is still the same inode. 0 when the
    /// kernel's inode could not be read.
    pub ino: u64,
    pub dev: u32,
    pub nlink: u32,
    pub path: PathRecord,
}
const _: () = assert!(size_of::<OpenEvent>().is_multiple_of(8));

/// `sock_type` value for a stream (TCP) socket, as in `SOCK_STREAM`.
pub const SOCK_STREAM: u16 = 1;
/// `sock_type` value for a datagram (UDP) socket, as in `SOCK_DGRAM`.
pub const SOCK_DGRAM: u16 = 2;

/// A socket operation on an AF_INET or AF_INET6 socket (the header's kind says which: connect,
/// bind, listen, accept), with its result.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    pub header: EventHeader,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// The address's port, host byte order: remote for connect and accept, local for bind and
    /// listen.
    pub port: u16,
    /// `SOCK_STREAM` or `SOCK_DGRAM` (`socket::type`).
    pub sock_type: u16,
    /// Local port for accept (which listener took the connection); 0 otherwise.
    pub local_port: u16,
    /// The outcome: 0 on success, or a negative errno (a TCP connect's error from the
    /// handshake; `-EINPROGRESS` when it ended without one, e.g. closed while connecting).
    pub ret: i32,
    /// The address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub addr: [u8; 16],
    pub _pad: u32,
}
const _: () = assert!(size_of::<SocketEvent>() == size_of::<EventHeader>() + 32);

/// Bytes of a DNS message kept (the classic UDP limit; the question is at its start).
pub const DNS_DATA: usize = 512;

/// `DnsEvent::direction`: a query the process sent.
pub const DNS_QUERY: u16 = 0;
/// `DnsEvent::direction`: a response the process received.
pub const DNS_RESPONSE: u16 = 1;

/// A DNS message to or from port 53, as the process sent or received it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: EventHeader,
    pub family: u16,
    /// Server port (53).
    pub port: u16,
    pub sock_type: u16,
    /// `DNS_QUERY` or `DNS_RESPONSE`.
    pub direction: u16,
    /// Server address, as in [`SocketEvent::addr`].
    pub addr: [u8; 16],
    /// Bytes used in `payload`.
    pub len: u32,
    pub _pad: u32,
    pub payload: [u8; DNS_DATA],
}
const _: () = assert!(size_of::<DnsEvent>().is_multiple_of(8));

/// `IoUringEvent::what`: the process created an io_uring (`io_uring_setup`).
pub const IO_URING_SETUP: u32 = 1;
/// `IoUringEvent::what`: a request was submitted (`opcode` says which).
pub const IO_URING_SUBMIT: u32 = 2;

/// `IORING_OP_OPENAT`, `IORING_OP_CONNECT` and `IORING_OP_OPENAT2`: the request kinds whose
/// object (`name`, `addr`) the record carries. Numbers are the kernel's ABI.
pub const IORING_OP_OPENAT: u8 = 18;
pub const IORING_OP_CONNECT: u8 = 16;
pub const IORING_OP_OPENAT2: u8 = 28;

/// io_uring use: requests submitted to a ring run in the kernel without the syscalls the other
/// programs watch, so each process's setup and each request kind it submits are reported
/// (repeats of the same kind and object by the same process image are filtered in the kernel).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoUringEvent {
    pub header: EventHeader,
    /// `IO_URING_SETUP` or `IO_URING_SUBMIT`.
    pub what: u32,
    /// `IORING_OP_*` of a submitted request; for a setup, the ring's `IORING_SETUP_*` flags.
    pub opcode: u32,
    /// For `IORING_OP_CONNECT`: the address, as in [`SocketEvent`] (family 0 otherwise).
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
    /// For `IORING_OP_OPENAT(2)`: the file name as submitted (NUL-terminated, not resolved);
    /// for a setup, nothing.
    pub name: [u8; NAME_DATA],
}
const _: () =
    assert!(size_of::<IoUringEvent>() == size_of::<EventHeader>() + 8 + 8 + 16 + NAME_DATA);

/// Per-cgroup counts of records lost (ring buffer full) and suppressed (kernel-side repeat
/// filter), so losses can be charged to the workloads they hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupCounts {
    pub lost: u64,
    pub suppressed: u64,
}

/// Key of the kernel's seen-set: one image of one process (`pid` and `mm`, which changes at
/// exec; the pair, because a freed `mm` is soon reused by another process) and the object it
/// touched. The first occurrence always reaches userspace; exact repeats do not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenKey {
    pub mm: u64,
    pub pid: u32,
    pub _pad: u32,
    /// The event kind, and kind-specific bits (open intent, socket family and port).
    pub kind: u64,
    pub a: u64,
    pub b: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is repr(C), Copy, has no padding the compiler adds (checked by the size
    // asserts), and every bit pattern is valid.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ForkEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SeenKey {}
}

/// Privilege-relevant operations, reported with their result. Numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivOp {
    /// `args`: the requested ids, in syscall order.
    Setuid = 1,
    Setreuid = 2,
    Setresuid = 3,
    Setgid = 4,
    Setregid = 5,
    Setresgid = 6,
    Setfsuid = 7,
    Setfsgid = 8,
    /// `args[0]`: effective set (low 32 bits), `args[1]`: permitted set (low 32 bits).
    Capset = 10,
    /// `args[0]`: request (PTRACE_ATTACH or PTRACE_SEIZE), `args[1]`: target pid.
    PtraceAttach = 20,
    /// `args[0]`: target pid.
    ProcessVmReadv = 21,
    ProcessVmWritev = 22,
    /// `args[0]`: bpf command (only BPF_PROG_LOAD is reported), `args[1]`: program type.
    BpfProgLoad = 30,
    /// `text`: nothing (module image from memory).
    InitModule = 31,
    /// `text`: file name of the module.
    FinitModule = 32,
    /// `args[0]`: mount flags; `text`: target, fs type and source (see `MOUNT_*` offsets).
    Mount = 40,
    /// `args[0]`: flags; `text`: target.
    Umount = 41,
    /// `args[0]`: CLONE_NEW* flags.
    Unshare = 50,
    /// `args[0]`: fd, `args[1]`: nstype.
    Setns = 51,
}

impl TryFrom<u32> for PrivOp {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        use PrivOp::*;
        Ok(match v {
            1 => Setuid,
            2 => Setreuid,
            3 => Setresuid,
            4 => Setgid,
            5 => Setregid,
            6 => Setresgid,
            7 => Setfsuid,
            8 => Setfsgid,
            10 => Capset,
            20 => PtraceAttach,
            21 => ProcessVmReadv,
            22 => ProcessVmWritev,
            30 => BpfProgLoad,
            31 => InitModule,
            32 => FinitModule,
            40 => Mount,
            41 => Umount,
            50 => Unshare,
            51 => Setns,
            other => return Err(other),
        })
    }
}

/// Where `PrivilegeEvent::text` keeps the parts of a mount: target, fs type, source.
pub const MOUNT_TARGET: (usize, usize) = (0, 128);
pub const MOUNT_FSTYPE: (usize, usize) = (128, 64);
pub const MOUNT_SOURCE: (usize, usize) = (192, 64);

/// A privilege-relevant operation and its result. The header carries the credentials after
/// it; `before_*` the ones before.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PrivilegeEvent {
    pub header: EventHeader,
    /// A [`PrivOp`] value.
    pub op: u32,
    /// The syscall's return value (0 or a negative errno for most).
    pub ret: i32,
    pub args: [u64; 4],
    pub before_uid: u32,
    pub before_euid: u32,
    /// NUL-terminated string arguments, laid out per op.
    pub text: [u8; NAME_DATA],
}
const _: () =
    assert!(size_of::<PrivilegeEvent>() == size_of::<EventHeader>() + 8 + 32 + 8 + NAME_DATA);

/// File operations other than open, reported at syscall entry (the path may be gone at exit).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// `name` → `name2`.
    Rename = 1,
    Unlink = 2,
    Rmdir = 3,
    /// Hard link `name` (existing) → `name2` (new).
    Link = 4,
    /// Symlink `name2` (new) pointing to `name` (the target text, not resolved).
    Symlink = 5,
    /// `args[0]`: mode.
    Chmod = 6,
    /// `args[0]`: uid, `args[1]`: gid (`u32::MAX` for unchanged).
    Chown = 7,
    /// `args[0]`: new length.
    Truncate = 8,
    Mkdir = 9,
}

impl TryFrom<u32> for FileOp {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        use FileOp::*;
        Ok(match v {
            1 => Rename,
            2 => Unlink,
            3 => Rmdir,
            4 => Link,
            5 => Symlink,
            6 => Chmod,
            7 => Chown,
            8 => Truncate,
            9 => Mkdir,
            other => return Err(other),
        })
    }
}

/// `FileOpEvent::flags` bit: `name2` is relative to another directory than `dir` (not resolved).
pub const FILEOP_NAME2_OTHER_DIR: u32 = 1 << 0;
/// `FileOpEvent::flags` bit: `dir` is the file itself (an fd-based op such as fchmod).
pub const FILEOP_DIR_IS_FILE: u32 = 1 << 1;

/// A file operation: `name` (and `name2`) as the caller gave them, and `dir`, the directory a
/// relative `name` is resolved against (the working directory or the `dirfd`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpEvent {
    pub header: EventHeader,
    /// A [`FileOp`] value.
    pub op: u32,
    /// `FILEOP_*` bits.
    pub flags: u32,
    pub args: [u64; 2],
    pub name: [u8; NAME_DATA],
    pub name2: [u8; NAME_DATA],
    /// Last, so the record can be sent without the unused tail of the path.
    pub dir: PathRecord,
}
const _: () = assert!(size_of::<FileOpEvent>().is_multiple_of(8));

/// Indexes of the per-CPU `COUNTERS` array: everything the programs could not deliver, by reason.
/// Userspace sums them across CPUs and reports them; nothing is dropped silently.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Ring buffer full: an exec record was lost.
    LostExec = 0,
    LostFork = 1,
    LostExit = 2,
    LostOpen = 3,
    /// Ring buffer full: a connect record was lost.
    LostConnect = 4,
    /// A kernel or user memory read failed; the record was sent with what could be read.
    ReadError = 5,
    LostFileOp = 6,
    LostPrivilege = 7,
    LostSocket = 8,
    LostDns = 9,
    /// A repeat the kernel filtered on purpose: the same process opened the same file with
    /// the same intent before (see `SeenKey`).
    SuppressedOpen = 10,
    /// A repeat connect of the same process to the same destination.
    SuppressedConnect = 11,
    /// Ring buffer full: an io_uring record was lost.
    LostIoUring = 12,
    /// A repeat io_uring record (same process image, same request kind and object).
    SuppressedIoUring = 13,
}

/// Number of slots in `COUNTERS`.
pub const COUNTERS_LEN: u32 = 16;

impl Counter {
    pub const ALL: [Counter; 14] = [
        Counter::LostExec,
        Counter::LostFork,
        Counter::LostExit,
        Counter::LostOpen,
        Counter::LostConnect,
        Counter::ReadError,
        Counter::LostFileOp,
        Counter::LostPrivilege,
        Counter::LostSocket,
        Counter::LostDns,
        Counter::SuppressedOpen,
        Counter::SuppressedConnect,
        Counter::LostIoUring,
        Counter::SuppressedIoUring,
    ];

    /// Name used in logs and metrics.
    /// Whether this counter means data was lost (as opposed to filtered on purpose).
    pub const fn is_loss(self) -> bool {
        !matches!(
            self,
            Counter::SuppressedOpen | Counter::SuppressedConnect | Counter::SuppressedIoUring
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            Counter::LostExec => "lost_exec",
            Counter::LostFork => "lost_fork",
            Counter::LostExit => "lost_exit",
            Counter::LostOpen => "lost_open",
            Counter::LostConnect => "lost_connect",
            Counter::ReadError => "read_error",
            Counter::LostFileOp => "lost_file_op",
            Counter::LostPrivilege => "lost_privilege",
            Counter::LostSocket => "lost_socket",
            Counter::LostDns => "lost_dns",
            Counter::SuppressedOpen => "suppressed_open",
            Counter::SuppressedConnect => "suppressed_connect",
            Counter::LostIoUring => "lost_io_uring",
            Counter::SuppressedIoUring => "suppressed_io_uring",
        }
    }
}
