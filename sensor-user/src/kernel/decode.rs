//! Turning ring buffer records into owned [`Event`]s. Pure: unit-tested without root.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use sensor_common::{
    DNS_RESPONSE, DnsEvent, EventHeader, EventKind as Kind, ExecEvent, ExitEvent,
    FILEOP_DIR_IS_FILE, FLAG_ARGV_TRUNCATED, FLAG_ENV_TRUNCATED, FileOp, FileOpEvent, ForkEvent,
    IO_URING_SETUP, IoUringEvent, MOUNT_FSTYPE, MOUNT_SOURCE, MOUNT_TARGET, NAME_DATA, OPEN_CREATE,
    OPEN_READ, OPEN_TRUNCATE, OPEN_WRITE, OpenEvent, PATH_DATA, PATH_TRUNCATED, PATH_UNLINKED,
    PathRecord, PrivOp, PrivilegeEvent, SOCK_DGRAM, SocketEvent,
};

use crate::event::{
    ConnectResult, Event, EventKind, FileIdentity, FileOperation, IoUringUse, OpenIntent,
    PrivilegeOp, Protocol,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than its kind needs ({need})")]
    Short { got: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown operation {0} in a {1} record")]
    UnknownOp(u32, &'static str),
}

/// Converts the kernel's boot-time clock to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl BootClock {
    /// Reads both clocks now.
    pub fn now() -> BootClock {
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(Duration::from)
            .unwrap_or_default();
        BootClock {
            boot: SystemTime::now() - since_boot,
        }
    }

    /// A clock whose boot was at `boot` (for tests).
    pub fn at(boot: SystemTime) -> BootClock {
        BootClock { boot }
    }

    pub fn to_system(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }
}

/// Decodes one record.
pub fn decode(bytes: &[u8], clock: &BootClock) -> Result<Event, DecodeError> {
    let h: EventHeader = read(bytes, 0)?;
    let kind = match Kind::try_from(h.kind).map_err(DecodeError::UnknownKind)? {
        Kind::Exec => {
            need(bytes, size_of::<ExecEvent>())?;
            let argv_len = read::<u32>(bytes, offset_of!(ExecEvent, argv_len))? as usize;
            let env_len = read::<u32>(bytes, offset_of!(ExecEvent, env_len))? as usize;
            let argv =
                &bytes[offset_of!(ExecEvent, argv)..][..argv_len.min(sensor_common::ARGV_DATA)];
            let env = &bytes[offset_of!(ExecEvent, env)..][..env_len.min(sensor_common::ENV_DATA)];
            let cwd = path(bytes, offset_of!(ExecEvent, cwd))?;
            let filename = name(bytes, offset_of!(ExecEvent, filename));
            let interp = name(bytes, offset_of!(ExecEvent, interp));
            // binfmt_script replaces `interp` with the interpreter; `filename` stays the script.
            let script =
                (!filename.is_empty() && filename != interp).then(|| resolve(&cwd, &filename));
            EventKind::Exec {
                executable: path(bytes, offset_of!(ExecEvent, executable))?,
                argv: strings(argv),
                argv_truncated: h.flags & FLAG_ARGV_TRUNCATED != 0,
                env: strings(env),
                env_truncated: h.flags & FLAG_ENV_TRUNCATED != 0,
                cwd,
                script,
                file: FileIdentity {
                    dev: read(bytes, offset_of!(ExecEvent, dev))?,
                    ino: read(bytes, offset_of!(ExecEvent, ino))?,
                    links: read(bytes, offset_of!(ExecEvent, nlink))?,
                },
            }
        }
        Kind::Fork => EventKind::Fork {
            child_pid: read::<ForkEvent>(bytes, 0)?.child_pid,
        },
        Kind::Exit => EventKind::Exit {
            exit_code: read::<ExitEvent>(bytes, 0)?.exit_code,
        },
        Kind::Open => {
            // Sent without the unused tail of the path (see `output_prefix` in sensor-ebpf).
            need(
                bytes,
                offset_of!(OpenEvent, path) + offset_of!(PathRecord, data),
            )?;
            let flags = read::<u32>(bytes, offset_of!(OpenEvent, open_flags))?;
            EventKind::Open {
                path: path(bytes, offset_of!(OpenEvent, path))?,
                intent: intent(flags),
                file: FileIdentity {
                    dev: read(bytes, offset_of!(OpenEvent, dev))?,
                    ino: read(bytes, offset_of!(OpenEvent, ino))?,
                    links: read(bytes, offset_of!(OpenEvent, nlink))?,
                },
            }
        }
        Kind::FileOp => file_op(bytes)?,
        Kind::Privilege => privilege(bytes)?,
        Kind::Connect => {
            let (endpoint, s) = socket(bytes)?;
            EventKind::Connect {
                address: endpoint.0,
                port: endpoint.1,
                protocol: endpoint.2,
                result: match s.ret {
                    0 => ConnectResult::Connected,
                    -115 => ConnectResult::InProgress,
                    e => ConnectResult::Failed(-e),
                },
            }
        }
        Kind::Send => {
            let ((address, port, protocol), _) = socket(bytes)?;
            EventKind::Connect {
                address,
                port,
                protocol,
                result: ConnectResult::Sent,
            }
        }
        Kind::IoUring => io_uring(bytes)?,
        Kind::Bind => {
            let ((address, port, protocol), s) = socket(bytes)?;
            EventKind::Bind {
                address,
                port,
                protocol,
                result: s.ret,
            }
        }
        Kind::Listen => {
            let ((address, port, protocol), s) = socket(bytes)?;
            EventKind::Listen {
                address,
                port,
                protocol,
                result: s.ret,
            }
        }
        Kind::Accept => {
            let ((peer, peer_port, protocol), s) = socket(bytes)?;
            EventKind::Accept {
                peer,
                peer_port,
                local_port: s.local_port,
                protocol,
            }
        }
        Kind::Dns => {
            need(bytes, size_of::<DnsEvent>())?;
            let d: DnsEvent = read(bytes, 0)?;
            let payload = &d.payload[..(d.len as usize).min(sensor_common::DNS_DATA)];
            EventKind::Dns {
                server: ip(d.family, d.addr),
                response: d.direction == DNS_RESPONSE,
                message: super::dns::parse(payload),
            }
        }
    };
    Ok(Event {
        time: clock.to_system(h.ktime_ns),
        pid: h.pid,
        tid: h.tid,
        ppid: h.ppid,
        uid: h.uid,
        euid: h.euid,
        cgroup_id: h.cgroup_id,
        kind,
    })
}

/// `(address, port, protocol)` of a socket record, and the record.
fn socket(bytes: &[u8]) -> Result<((IpAddr, u16, Protocol), SocketEvent), DecodeError> {
    let s: SocketEvent = read(bytes, 0)?;
    let protocol = if s.sock_type == SOCK_DGRAM {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    Ok(((ip(s.family, s.addr), s.port, protocol), s))
}

fn io_uring(bytes: &[u8]) -> Result<EventKind, DecodeError> {
    let u: IoUringEvent = read(bytes, 0)?;
    if u.what == IO_URING_SETUP {
        return Ok(EventKind::IoUring(IoUringUse::Setup { flags: u.opcode }));
    }
    let name = cstr(&u.name);
    Ok(EventKind::IoUring(IoUringUse::Submit {
        opcode: u.opcode as u8,
        name: (!name.is_empty()).then_some(name),
        destination: (u.family == 2 || u.family == 10).then(|| (ip(u.family, u.addr), u.port)),
    }))
}

fn ip(family: u16, addr: [u8; 16]) -> IpAddr {
    if family == 10 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    }
}

fn file_op(bytes: &[u8]) -> Result<EventKind, DecodeError> {
    // Sent without the unused tail of `dir` (see `output_prefix` in sensor-ebpf).
    need(
        bytes,
        offset_of!(FileOpEvent, dir) + offset_of!(PathRecord, data),
    )?;
    let op = read::<u32>(bytes, offset_of!(FileOpEvent, op))?;
    let op = FileOp::try_from(op).map_err(|op| DecodeError::UnknownOp(op, "file"))?;
    let flags = read::<u32>(bytes, offset_of!(FileOpEvent, flags))?;
    let args: [u64; 2] = read(bytes, offset_of!(FileOpEvent, args))?;
    let dir = path(bytes, offset_of!(FileOpEvent, dir))?;
    let name1 = name(bytes, offset_of!(FileOpEvent, name));
    let name2 = name(bytes, offset_of!(FileOpEvent, name2));
    // fd-based operations (fchmod...) carry the file itself in `dir`.
    let first = if flags & FILEOP_DIR_IS_FILE != 0 {
        dir.clone()
    } else {
        resolve(&dir, &name1)
    };
    let second = resolve(&dir, &name2);
    let id = |v: u64| (v as u32 != u32::MAX).then_some(v as u32);
    Ok(EventKind::FileOp(match op {
        FileOp::Rename => FileOperation::Rename {
            from: first,
            to: second,
        },
        FileOp::Unlink => FileOperation::Unlink { path: first },
        FileOp::Rmdir => FileOperation::Rmdir { path: first },
        FileOp::Link => FileOperation::Link {
            existing: first,
            new: second,
        },
        FileOp::Symlink => FileOperation::Symlink {
            target: name1,
            link: second,
        },
        FileOp::Chmod => FileOperation::Chmod {
            path: first,
            mode: args[0] as u32 & 0o7777,
        },
        FileOp::Chown => FileOperation::Chown {
            path: first,
            uid: id(args[0]),
            gid: id(args[1]),
        },
        FileOp::Truncate => FileOperation::Truncate {
            path: first,
            length: args[0],
        },
        FileOp::Mkdir => FileOperation::Mkdir {
            path: first,
            mode: args[0] as u32 & 0o7777,
        },
    }))
}

fn privilege(bytes: &[u8]) -> Result<EventKind, DecodeError> {
    let p: PrivilegeEvent = read(bytes, 0)?;
    let op = PrivOp::try_from(p.op).map_err(|op| DecodeError::UnknownOp(op, "privilege"))?;
    let a = p.args;
    // Ids travel as the syscall's 32-bit argument: u32::MAX means "unchanged" (-1).
    let ids = |n: usize| a[..n].iter().map(|v| *v as u32 as i32 as i64).collect();
    let text = |(at, len): (usize, usize)| cstr(&p.text[at..at + len]);
    let op = match op {
        PrivOp::Setuid => PrivilegeOp::SetIds {
            syscall: "setuid",
            ids: ids(1),
        },
        PrivOp::Setreuid => PrivilegeOp::SetIds {
            syscall: "setreuid",
            ids: ids(2),
        },
        PrivOp::Setresuid => PrivilegeOp::SetIds {
            syscall: "setresuid",
            ids: ids(3),
        },
        PrivOp::Setgid => PrivilegeOp::SetIds {
            syscall: "setgid",
            ids: ids(1),
        },
        PrivOp::Setregid => PrivilegeOp::SetIds {
            syscall: "setregid",
            ids: ids(2),
        },
        PrivOp::Setresgid => PrivilegeOp::SetIds {
            syscall: "setresgid",
            ids: ids(3),
        },
        PrivOp::Setfsuid => PrivilegeOp::SetIds {
            syscall: "setfsuid",
            ids: ids(1),
        },
        PrivOp::Setfsgid => PrivilegeOp::SetIds {
            syscall: "setfsgid",
            ids: ids(1),
        },
        PrivOp::Capset => PrivilegeOp::Capset {
            effective: a[0] as u32,
            permitted: a[1] as u32,
        },
        PrivOp::PtraceAttach => PrivilegeOp::PtraceAttach {
            target_pid: a[1] as u32,
        },
        PrivOp::ProcessVmReadv => PrivilegeOp::ReadProcessMemory {
            target_pid: a[0] as u32,
        },
        PrivOp::ProcessVmWritev => PrivilegeOp::WriteProcessMemory {
            target_pid: a[0] as u32,
        },
        PrivOp::BpfProgLoad => PrivilegeOp::BpfProgramLoad {
            program_type: a[1] as u32,
        },
        PrivOp::InitModule => PrivilegeOp::KernelModuleLoad { name: None },
        PrivOp::FinitModule => PrivilegeOp::KernelModuleLoad {
            name: Some(text((0, NAME_DATA))),
        },
        PrivOp::Mount => PrivilegeOp::Mount {
            source: text(MOUNT_SOURCE),
            target: text(MOUNT_TARGET),
            fstype: text(MOUNT_FSTYPE),
            flags: a[0],
        },
        PrivOp::Umount => PrivilegeOp::Umount {
            target: text((0, NAME_DATA)),
        },
        PrivOp::Unshare => PrivilegeOp::Unshare { flags: a[0] },
        PrivOp::Setns => PrivilegeOp::Setns { nstype: a[1] },
    };
    Ok(EventKind::Privilege {
        op,
        result: i64::from(p.ret),
        uid_before: p.before_uid,
        euid_before: p.before_euid,
    })
}

/// A NUL-terminated name field of `NAME_DATA` bytes at `offset` (already bounds-checked).
fn name(bytes: &[u8], offset: usize) -> String {
    cstr(&bytes[offset..offset + NAME_DATA])
}

/// `name` made absolute against `dir`, with `.` and `..` folded. Folding is lexical: `dir` is
/// already symlink-free (it comes from the kernel's dentries); a symlink inside `name` is not
/// followed.
pub fn resolve(dir: &str, name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let joined = if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn need(bytes: &[u8], need: usize) -> Result<(), DecodeError> {
    if bytes.len() < need {
        return Err(DecodeError::Short {
            got: bytes.len(),
            need,
        });
    }
    Ok(())
}

/// A `Copy` value at `offset`, bounds-checked.
fn read<T: Copy>(bytes: &[u8], offset: usize) -> Result<T, DecodeError> {
    need(bytes, offset + size_of::<T>())?;
    // SAFETY: in bounds (checked above); read_unaligned has no alignment requirement; the types
    // read here are plain integers and repr(C) records of integers, valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(offset).cast::<T>()) })
}

/// A [`PathRecord`] at `offset`, as an absolute path. Unreachable objects (memfd, pipes) keep
/// their kernel name; a walk that was cut short starts with `...`.
fn path(bytes: &[u8], offset: usize) -> Result<String, DecodeError> {
    let len = read::<u32>(bytes, offset + offset_of!(PathRecord, len))? as usize;
    let flags = read::<u32>(bytes, offset + offset_of!(PathRecord, flags))?;
    let start = offset + offset_of!(PathRecord, data);
    let data = bytes
        .get(start..start + len.min(PATH_DATA))
        .ok_or(DecodeError::Short {
            got: bytes.len(),
            need: start + len.min(PATH_DATA),
        })?;
    // One UTF-8 pass over the whole record (NUL is ASCII, so an invalid sequence never swallows
    // a separator): borrowed unless the name has invalid bytes.
    let text = String::from_utf8_lossy(data.strip_suffix(&[0]).unwrap_or(data));
    if flags & PATH_UNLINKED != 0 {
        return Ok(text
            .split('\0')
            .find(|c| !c.is_empty())
            .unwrap_or_default()
            .to_owned());
    }
    // Sized once: the joined path is at most the record's data plus its first `/` (and the
    // `...` of a truncated one), where growing from empty reallocated a few times per open.
    let mut out = String::with_capacity(data.len() + 4);
    if flags & PATH_TRUNCATED != 0 {
        out.push_str("...");
    }
    for c in root_first(&text) {
        if c == "/" {
            continue;
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The non-empty components of a path record's text (stored leaf first), root first, borrowed
/// from it. A plain backwards scan: components are short, and a `split('\0').rev()` with its
/// searcher and filter took ~8 % of the agent's CPU at 100k opens/s, for three components.
fn root_first(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut end = Some(bytes.len());
    std::iter::from_fn(move || {
        loop {
            let stop = end?;
            let start = bytes[..stop]
                .iter()
                .rposition(|&b| b == 0)
                .map_or(0, |nul| nul + 1);
            end = start.checked_sub(1);
            // NUL is ASCII: `start..stop` lies on character boundaries.
            if start < stop {
                return Some(&text[start..stop]);
            }
        }
    })
}

/// NUL-separated strings, lossily decoded; a trailing NUL does not add an empty string.
fn strings(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Intent from raw `O_*` flags.
pub fn intent(flags: u32) -> OpenIntent {
    const O_ACCMODE: u32 = 0o3;
    const O_CREAT: u32 = 0o100;
    const O_TRUNC: u32 = 0o1000;
    let acc = flags & O_ACCMODE;
    let bits = match acc {
        0 => OPEN_READ,
        1 => OPEN_WRITE,
        _ => OPEN_READ | OPEN_WRITE,
    } | if flags & O_CREAT != 0 { OPEN_CREATE } else { 0 }
        | if flags & O_TRUNC != 0 {
            OPEN_TRUNCATE
        } else {
            0
        };
    OpenIntent {
        read: bits & OPEN_READ != 0,
        write: bits & OPEN_WRITE != 0,
        create: bits & OPEN_CREATE != 0,
        truncate: bits & OPEN_TRUNCATE != 0,
    }
}

/// Kernel records built by hand, as the probes write them: for the decoder's tests and the
/// pipeline's measurements.
#[cfg(test)]
pub(crate) mod records {
    use super::*;

    pub(crate) fn header(kind: Kind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            flags: 0,
            ktime_ns: 1_000_000_000,
            tid: 11,
            pid: 10,
            ppid: 1,
            uid: 1000,
            euid: 0,
            gid: 1000,
            cgroup_id: 42,
        }
    }

    pub(crate) fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub(crate) fn path_record(components_leaf_first: &[&str], flags: u32) -> PathRecord {
        let mut r = PathRecord {
            len: 0,
            flags,
            data: [0; PATH_DATA + sensor_common::PATH_COMPONENT_MAX],
        };
        let mut off = 0;
        for c in components_leaf_first {
            r.data[off..off + c.len()].copy_from_slice(c.as_bytes());
            off += c.len() + 1;
        }
        r.len = off as u32;
        r
    }

    /// An open record of `path` (components leaf first) by `pid`, child of `ppid`, in cgroup
    /// `cgroup_id`, with the call's `flags`.
    pub(crate) fn open(
        path: &[&str],
        flags: u32,
        (pid, ppid, cgroup_id): (u32, u32, u64),
    ) -> Vec<u8> {
        // Boxed: the record is larger than a test thread likes on its stack.
        // SAFETY: a plain repr(C) record; all zeroes is a valid value of every field.
        let mut ev: Box<OpenEvent> = Box::new(unsafe { std::mem::zeroed() });
        ev.header = header(Kind::Open);
        (ev.header.pid, ev.header.tid, ev.header.ppid) = (pid, pid, ppid);
        ev.header.cgroup_id = cgroup_id;
        ev.open_flags = flags;
        ev.dev = 0x801;
        ev.ino = 4242;
        ev.nlink = 1;
        ev.path = path_record(path, 0);
        // As the probe sends it: without the unused tail of the path (`output_prefix`).
        let used =
            offset_of!(OpenEvent, path) + offset_of!(PathRecord, data) + ev.path.len as usize;
        let mut bytes = bytes_of(&*ev);
        bytes.truncate((used + 7) & !7);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::records::*;

    fn clock() -> BootClock {
        BootClock::at(SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn exec_record() {
        // Boxed: the record is larger than a test thread likes on its stack.
        let mut ev: Box<ExecEvent> = Box::new(unsafe { std::mem::zeroed() });
        ev.header = header(Kind::Exec);
        ev.header.flags = FLAG_ARGV_TRUNCATED;
        ev.executable = path_record(&["bash", "bin", "usr"], 0);
        ev.cwd = path_record(&["w"], 0);
        ev.filename[..9].copy_from_slice(b"./run.sh\0");
        ev.interp[..10].copy_from_slice(b"/bin/bash\0");
        ev.ino = 77;
        ev.dev = 8;
        ev.nlink = 1;
        let argv = b"ls\0-la\0/tmp\0";
        ev.argv[..argv.len()].copy_from_slice(argv);
        ev.argv_len = argv.len() as u32;
        let env = b"A=1\0GITHUB_JOB=build\0";
        ev.env[..env.len()].copy_from_slice(env);
        ev.env_len = env.len() as u32;
        let e = decode(&bytes_of(&*ev), &clock()).unwrap();
        assert_eq!(
            (e.pid, e.tid, e.ppid, e.uid, e.euid, e.cgroup_id),
            (10, 11, 1, 1000, 0, 42)
        );
        assert_eq!(e.time, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(
            e.kind,
            EventKind::Exec {
                executable: "/usr/bin/bash".into(),
                argv: vec!["ls".into(), "-la".into(), "/tmp".into()],
                argv_truncated: true,
                env: vec!["A=1".into(), "GITHUB_JOB=build".into()],
                env_truncated: false,
                cwd: "/w".into(),
                script: Some("/w/run.sh".into()),
                file: FileIdentity {
                    dev: 8,
                    ino: 77,
                    links: 1
                },
            }
        );
    }

    /// A name with bytes that are not UTF-8 (any byte but NUL and `/` is valid in a Linux
    /// name) keeps its other components and separators; only the bad bytes are replaced.
    #[test]
    fn a_path_with_invalid_utf8_keeps_its_components() {
        let mut r = PathRecord {
            len: 0,
            flags: 0,
            data: [0; PATH_DATA + sensor_common::PATH_COMPONENT_MAX],
        };
        let raw: &[u8] = b"a\xff\xfeb\0\xc3\0tmp\0";
        r.data[..raw.len()].copy_from_slice(raw);
        r.len = raw.len() as u32;
        let mut ev: Box<OpenEvent> = Box::new(unsafe { std::mem::zeroed() });
        ev.header = header(Kind::Open);
        ev.path = r;
        let EventKind::Open { path, .. } = decode(&bytes_of(&*ev), &clock()).unwrap().kind else {
            panic!("an open");
        };
        assert_eq!(path, "/tmp/\u{FFFD}/a\u{FFFD}\u{FFFD}b");
    }

    #[test]
    fn paths_root_truncated_unlinked() {
        let mk = |r: PathRecord| {
            let mut ev: Box<OpenEvent> = Box::new(unsafe { std::mem::zeroed() });
            ev.header = header(Kind::Open);
            ev.open_flags = 0o1 | 0o100;
            ev.ino = 4242;
            ev.dev = 0x801;
            ev.nlink = 2;
            ev.path = r;
            decode(&bytes_of(&*ev), &clock()).unwrap().kind
        };
        assert_eq!(
            mk(path_record(&["x", "tmp"], 0)),
            EventKind::Open {
                path: "/tmp/x".into(),
                intent: OpenIntent {
                    write: true,
                    create: true,
                    ..Default::default()
                },
                file: FileIdentity {
                    dev: 0x801,
                    ino: 4242,
                    links: 2
                },
            }
        );
        assert!(matches!(mk(path_record(&[], 0)), EventKind::Open { path, .. } if path == "/"));
        assert!(
            matches!(mk(path_record(&["b", "a"], PATH_TRUNCATED)), EventKind::Open { path, .. } if path == ".../a/b")
        );
        assert!(
            matches!(mk(path_record(&["memfd:x"], PATH_UNLINKED)), EventKind::Open { path, .. } if path == "memfd:x")
        );
    }

    /// The kernel sends open records without the unused tail of the path.
    #[test]
    fn open_record_cut_after_its_path() {
        let mut ev: Box<OpenEvent> = Box::new(unsafe { std::mem::zeroed() });
        ev.header = header(Kind::Open);
        ev.path = path_record(&["x", "tmp"], 0);
        let full = bytes_of(&*ev);
        let used =
            offset_of!(OpenEvent, path) + offset_of!(PathRecord, data) + ev.path.len as usize;
        let kind = decode(&full[..used.next_multiple_of(8)], &clock())
            .unwrap()
            .kind;
        assert!(matches!(kind, EventKind::Open { path, .. } if path == "/tmp/x"));
        // A record cut inside its path is an error, not a panic or a shorter path.
        assert!(matches!(
            decode(&full[..used - 1], &clock()),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn connect_v4_v6_and_results() {
        let mut c = SocketEvent {
            header: header(Kind::Connect),
            family: 2,
            port: 8080,
            sock_type: 1,
            local_port: 0,
            ret: -115,
            addr: [0; 16],
            _pad: 0,
        };
        c.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let e = decode(&bytes_of(&c), &clock()).unwrap();
        assert_eq!(
            e.kind,
            EventKind::Connect {
                address: "127.0.0.1".parse().unwrap(),
                port: 8080,
                protocol: Protocol::Tcp,
                result: ConnectResult::InProgress
            }
        );
        c.family = 10;
        c.sock_type = SOCK_DGRAM;
        c.ret = -111;
        c.addr = Ipv6Addr::LOCALHOST.octets();
        let e = decode(&bytes_of(&c), &clock()).unwrap();
        assert!(
            matches!(e.kind, EventKind::Connect { address: IpAddr::V6(a), protocol: Protocol::Udp, result: ConnectResult::Failed(111), .. } if a == Ipv6Addr::LOCALHOST)
        );
    }

    /// Issue 12: an unconnected UDP send is a destination, decoded as a connect that `Sent`.
    #[test]
    fn udp_send_is_a_connect_with_sent_result() {
        let mut c = SocketEvent {
            header: header(Kind::Send),
            family: 2,
            port: 4444,
            sock_type: SOCK_DGRAM,
            local_port: 0,
            ret: 0,
            addr: [0; 16],
            _pad: 0,
        };
        c.addr[..4].copy_from_slice(&[203, 0, 113, 9]);
        assert_eq!(
            decode(&bytes_of(&c), &clock()).unwrap().kind,
            EventKind::Connect {
                address: "203.0.113.9".parse().unwrap(),
                port: 4444,
                protocol: Protocol::Udp,
                result: ConnectResult::Sent
            }
        );
    }

    #[test]
    fn io_uring_setup_and_requests() {
        let mut u: IoUringEvent = unsafe { std::mem::zeroed() };
        u.header = header(Kind::IoUring);
        u.what = IO_URING_SETUP;
        u.opcode = 0x40;
        assert_eq!(
            decode(&bytes_of(&u), &clock()).unwrap().kind,
            EventKind::IoUring(IoUringUse::Setup { flags: 0x40 })
        );
        u.what = sensor_common::IO_URING_SUBMIT;
        u.opcode = sensor_common::IORING_OP_OPENAT as u32;
        u.name[..8].copy_from_slice(b"/etc/x\0\0");
        assert_eq!(
            decode(&bytes_of(&u), &clock()).unwrap().kind,
            EventKind::IoUring(IoUringUse::Submit {
                opcode: 18,
                name: Some("/etc/x".into()),
                destination: None
            })
        );
        u.opcode = sensor_common::IORING_OP_CONNECT as u32;
        u.name = [0; NAME_DATA];
        u.family = 10;
        u.port = 443;
        u.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(
            decode(&bytes_of(&u), &clock()).unwrap().kind,
            EventKind::IoUring(IoUringUse::Submit {
                opcode: 16,
                name: None,
                destination: Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 443))
            })
        );
        // Cut short: an error, not a panic.
        assert!(decode(&bytes_of(&u)[..100], &clock()).is_err());
        assert_eq!(crate::event::io_uring_opcode_name(18), "openat");
        assert_eq!(crate::event::io_uring_opcode_name(250), "unknown");
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert!(matches!(
            decode(&[0u8; 10], &clock()),
            Err(DecodeError::Short { .. })
        ));
        let mut h = header(Kind::Exec);
        h.kind = 9999;
        assert_eq!(
            decode(&bytes_of(&h), &clock()),
            Err(DecodeError::UnknownKind(9999))
        );
        let h = header(Kind::Exec);
        assert!(matches!(
            decode(&bytes_of(&h), &clock()),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn resolve_folds_dots_against_the_directory() {
        assert_eq!(resolve("/work/a", "b/../c/./d"), "/work/a/c/d");
        assert_eq!(resolve("/work", "/etc/../etc/passwd"), "/etc/passwd");
        assert_eq!(resolve("/", "../../x"), "/x");
        assert_eq!(resolve("/w", ""), "");
    }

    #[test]
    fn file_op_record_resolves_relative_names() {
        let mut ev: Box<FileOpEvent> = Box::new(unsafe { std::mem::zeroed() });
        ev.header = header(Kind::FileOp);
        ev.op = FileOp::Rename as u32;
        ev.dir = path_record(&["w", "tmp"], 0);
        ev.name[..5].copy_from_slice(b"a.txt");
        ev.name2[..10].copy_from_slice(b"../b/c.txt");
        let e = decode(&bytes_of(&*ev), &clock()).unwrap();
        assert_eq!(
            e.kind,
            EventKind::FileOp(FileOperation::Rename {
                from: "/tmp/w/a.txt".into(),
                to: "/tmp/b/c.txt".into()
            })
        );
        ev.op = 77;
        assert_eq!(
            decode(&bytes_of(&*ev), &clock()),
            Err(DecodeError::UnknownOp(77, "file"))
        );
    }

    #[test]
    fn privilege_record() {
        let mut ev: PrivilegeEvent = unsafe { std::mem::zeroed() };
        ev.header = header(Kind::Privilege);
        ev.op = PrivOp::Setresuid as u32;
        ev.args = [0, u32::MAX as u64, 1000, 0];
        ev.ret = -1;
        ev.before_uid = 1000;
        ev.before_euid = 1000;
        let e = decode(&bytes_of(&ev), &clock()).unwrap();
        assert_eq!(
            e.kind,
            EventKind::Privilege {
                op: PrivilegeOp::SetIds {
                    syscall: "setresuid",
                    ids: vec![0, -1, 1000]
                },
                result: -1,
                uid_before: 1000,
                euid_before: 1000
            }
        );
        ev.op = PrivOp::Mount as u32;
        ev.text[..4].copy_from_slice(b"/mnt");
        ev.text[MOUNT_FSTYPE.0..MOUNT_FSTYPE.0 + 5].copy_from_slice(b"tmpfs");
        let e = decode(&bytes_of(&ev), &clock()).unwrap();
        assert!(
            matches!(e.kind, EventKind::Privilege { op: PrivilegeOp::Mount { target, fstype, .. }, .. } if target == "/mnt" && fstype == "tmpfs")
        );
    }

    #[test]
    fn intents() {
        assert_eq!(
            intent(0),
            OpenIntent {
                read: true,
                ..Default::default()
            }
        );
        assert_eq!(
            intent(0o2 | 0o1000),
            OpenIntent {
                read: true,
                write: true,
                truncate: true,
                ..Default::default()
            }
        );
    }
}
