//! The set of kernel programs, as data: the loader walks this table.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A BTF-typed raw tracepoint (`tp_btf/<name>`).
    BtfTracepoint(&'static str),
    /// Classic tracepoints (`<category>/<name>`); one program may serve several.
    Tracepoints(&'static [(&'static str, &'static str)]),
    /// A cgroup `sock_addr` hook (connect4/6, sendmsg4/6, bind4/6: the object's section names
    /// which), attached to the cgroup v2 root.
    CgroupSockAddr,
    /// A cgroup `sock` hook (post_bind4/6), attached to the cgroup v2 root.
    CgroupSock,
    /// A cgroup packet program, attached to the cgroup v2 root.
    CgroupSkb(SkbDirection),
    /// fentry on a kernel function (BPF trampolines: not on every kernel).
    FEntry(&'static str),
    /// fexit on a kernel function (BPF trampolines: not on every kernel).
    FExit(&'static str),
    /// A BPF LSM hook (`lsm/<name>`): runs only where the kernel runs the BPF LSM.
    Lsm(&'static str),
}

/// Which packets a [`Hook::CgroupSkb`] program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbDirection {
    Ingress,
    Egress,
}

/// Which way of watching syscall events (opens, file and privilege operations) a program
/// belongs to (see `sensor-ebpf/src/{file,fileops,creds,fentry,lsm}.rs`): fentry/fexit where
/// the kernel has trampolines, else the BPF LSM open program where the kernel runs the BPF LSM
/// (file and privilege operations then stay on their tracepoints), else the classic
/// per-syscall tracepoints; the raw `sys_exit` open program (which runs on every syscall) only
/// when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenPath {
    /// Neither an open nor a file-operation program: always attached.
    Any,
    /// The raw `sys_exit` open program.
    Raw,
    /// An fentry/fexit program (opens, file and privilege operations).
    Fentry,
    /// A BPF LSM program (opens).
    Lsm,
    /// The classic `sys_enter_open*`/`sys_exit_open*` pair: replaced by `ClassicExit`, `Raw`,
    /// `Fentry` or `Lsm`.
    Classic,
    /// The classic `sys_exit_open*` tracepoints alone, flags from the saved registers (x86_64).
    ClassicExit,
    /// Another classic syscall tracepoint program (file and privilege operations): replaced by
    /// `Fentry`.
    ClassicSyscall,
}

/// The set of syscall-event programs the loader chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// The classic open tracepoints as an entry and exit pair (no x86_64 `pt_regs` in BTF, or
    /// `--open-hook tracepoint-pair`).
    Tracepoints,
    /// The classic open tracepoints, exits only (x86_64: flags from the saved registers).
    TracepointExits,
    RawSysExit,
    Fentry,
    /// The BPF LSM open program, file and privilege operations on their tracepoints.
    Lsm,
}

impl OpenPath {
    /// Whether a program of this path is attached when `chosen` is.
    pub fn wanted(self, chosen: Chosen) -> bool {
        match self {
            OpenPath::Any => true,
            OpenPath::Raw => chosen == Chosen::RawSysExit,
            OpenPath::Fentry => chosen == Chosen::Fentry,
            OpenPath::Lsm => chosen == Chosen::Lsm,
            OpenPath::Classic => chosen == Chosen::Tracepoints,
            OpenPath::ClassicExit => chosen == Chosen::TracepointExits,
            OpenPath::ClassicSyscall => chosen != Chosen::Fentry,
        }
    }
}

/// One program of the embedded object.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// Function name in `sensor-ebpf` (the kernel keeps 15 characters of it).
    pub name: &'static str,
    pub hook: Hook,
    /// A required program that fails to load or attach stops the sensor; an optional one is
    /// logged and skipped (its syscall may not exist on this architecture or kernel).
    pub required: bool,
    pub open_path: OpenPath,
}

const fn tp(
    name: &'static str,
    tps: &'static [(&'static str, &'static str)],
    required: bool,
) -> Program {
    Program {
        name,
        hook: Hook::Tracepoints(tps),
        required,
        open_path: OpenPath::Any,
    }
}

const fn btf(name: &'static str, tracepoint: &'static str) -> Program {
    Program {
        name,
        hook: Hook::BtfTracepoint(tracepoint),
        required: true,
        open_path: OpenPath::Any,
    }
}

/// A cgroup program (always required: the network is watched only through them).
const fn cgroup(name: &'static str, hook: Hook) -> Program {
    Program {
        name,
        hook,
        required: true,
        open_path: OpenPath::Any,
    }
}

/// A classic open program.
const fn open_tp(
    name: &'static str,
    tps: &'static [(&'static str, &'static str)],
    required: bool,
) -> Program {
    Program {
        open_path: OpenPath::Classic,
        ..tp(name, tps, required)
    }
}

/// A classic syscall tracepoint program that the fentry set replaces.
const fn sys_tp(
    name: &'static str,
    tps: &'static [(&'static str, &'static str)],
    required: bool,
) -> Program {
    Program {
        open_path: OpenPath::ClassicSyscall,
        ..tp(name, tps, required)
    }
}

/// An fentry program on an x86_64 syscall function.
const fn fe(name: &'static str, function: &'static str, required: bool) -> Program {
    Program {
        name,
        hook: Hook::FEntry(function),
        required,
        open_path: OpenPath::Fentry,
    }
}

/// An fexit program on an x86_64 syscall function.
const fn fx(name: &'static str, function: &'static str, required: bool) -> Program {
    Program {
        hook: Hook::FExit(function),
        ..fe(name, function, required)
    }
}

/// The exits of the open family (open(2) and creat(2) exist on x86_64 but not on arm64).
const OPEN_EXITS: &[(&str, &str)] = &[
    ("syscalls", "sys_exit_openat"),
    ("syscalls", "sys_exit_openat2"),
    ("syscalls", "sys_exit_open"),
    ("syscalls", "sys_exit_creat"),
];

pub const PROGRAMS: &[Program] = &[
    btf("process_exec", "sched_process_exec"),
    btf("process_fork", "sched_process_fork"),
    btf("process_exit", "sched_process_exit"),
    Program {
        open_path: OpenPath::Raw,
        ..btf("file_sys_exit", "sys_exit")
    },
    Program {
        name: "file_fexit_open",
        hook: Hook::FExit("do_sys_openat2"),
        required: true,
        open_path: OpenPath::Fentry,
    },
    Program {
        name: "lsm_file_open",
        hook: Hook::Lsm("file_open"),
        required: true,
        open_path: OpenPath::Lsm,
    },
    open_tp("file_openat", &[("syscalls", "sys_enter_openat")], true),
    open_tp("file_openat2", &[("syscalls", "sys_enter_openat2")], false),
    // open(2) and creat(2) exist on x86_64 but not on arm64.
    open_tp("file_open", &[("syscalls", "sys_enter_open")], false),
    open_tp("file_creat", &[("syscalls", "sys_enter_creat")], false),
    open_tp("file_open_exit", OPEN_EXITS, true),
    Program {
        open_path: OpenPath::ClassicExit,
        ..tp("open_exit_regs", OPEN_EXITS, true)
    },
    // Network, off the syscall path (see `sensor-ebpf/src/net.rs` and `dns.rs`).
    cgroup("net_connect4", Hook::CgroupSockAddr),
    cgroup("net_connect6", Hook::CgroupSockAddr),
    cgroup("net_sendmsg4", Hook::CgroupSockAddr),
    cgroup("net_sendmsg6", Hook::CgroupSockAddr),
    cgroup("net_bind4", Hook::CgroupSockAddr),
    cgroup("net_bind6", Hook::CgroupSockAddr),
    cgroup("net_post_bind4", Hook::CgroupSock),
    cgroup("net_post_bind6", Hook::CgroupSock),
    btf("net_sock_state", "inet_sock_set_state"),
    cgroup("dns_egress", Hook::CgroupSkb(SkbDirection::Egress)),
    cgroup("dns_ingress", Hook::CgroupSkb(SkbDirection::Ingress)),
    // io_uring (Linux 6.0+ tracepoint signatures; older kernels go without).
    Program {
        required: false,
        ..btf("io_uring_setup", "io_uring_create")
    },
    Program {
        required: false,
        ..btf("io_uring_submit", "io_uring_submit_req")
    },
    // Privilege use: entry programs keep the arguments, `priv_exit` reports with the result.
    sys_tp("priv_setuid", &[("syscalls", "sys_enter_setuid")], true),
    sys_tp("priv_setreuid", &[("syscalls", "sys_enter_setreuid")], true),
    sys_tp(
        "priv_setresuid",
        &[("syscalls", "sys_enter_setresuid")],
        true,
    ),
    sys_tp("priv_setgid", &[("syscalls", "sys_enter_setgid")], true),
    sys_tp("priv_setregid", &[("syscalls", "sys_enter_setregid")], true),
    sys_tp(
        "priv_setresgid",
        &[("syscalls", "sys_enter_setresgid")],
        true,
    ),
    sys_tp(
        "priv_setfsuid",
        &[("syscalls", "sys_enter_setfsuid")],
        false,
    ),
    sys_tp(
        "priv_setfsgid",
        &[("syscalls", "sys_enter_setfsgid")],
        false,
    ),
    sys_tp("priv_capset", &[("syscalls", "sys_enter_capset")], true),
    sys_tp("priv_ptrace", &[("syscalls", "sys_enter_ptrace")], true),
    sys_tp(
        "priv_vm_readv",
        &[("syscalls", "sys_enter_process_vm_readv")],
        true,
    ),
    sys_tp(
        "priv_vm_writev",
        &[("syscalls", "sys_enter_process_vm_writev")],
        true,
    ),
    sys_tp("priv_bpf", &[("syscalls", "sys_enter_bpf")], true),
    // Kernels built without module support have no module syscalls.
    sys_tp(
        "priv_init_mod",
        &[("syscalls", "sys_enter_init_module")],
        false,
    ),
    sys_tp(
        "priv_finit_mod",
        &[("syscalls", "sys_enter_finit_module")],
        false,
    ),
    sys_tp("priv_mount", &[("syscalls", "sys_enter_mount")], true),
    sys_tp("priv_umount", &[("syscalls", "sys_enter_umount")], false),
    sys_tp("priv_unshare", &[("syscalls", "sys_enter_unshare")], true),
    sys_tp("priv_setns", &[("syscalls", "sys_enter_setns")], true),
    sys_tp(
        "priv_exit",
        &[
            ("syscalls", "sys_exit_setuid"),
            ("syscalls", "sys_exit_setreuid"),
            ("syscalls", "sys_exit_setresuid"),
            ("syscalls", "sys_exit_setgid"),
            ("syscalls", "sys_exit_setregid"),
            ("syscalls", "sys_exit_setresgid"),
            ("syscalls", "sys_exit_setfsuid"),
            ("syscalls", "sys_exit_setfsgid"),
            ("syscalls", "sys_exit_capset"),
            ("syscalls", "sys_exit_ptrace"),
            ("syscalls", "sys_exit_process_vm_readv"),
            ("syscalls", "sys_exit_process_vm_writev"),
            ("syscalls", "sys_exit_bpf"),
            ("syscalls", "sys_exit_init_module"),
            ("syscalls", "sys_exit_finit_module"),
            ("syscalls", "sys_exit_mount"),
            ("syscalls", "sys_exit_umount"),
            ("syscalls", "sys_exit_unshare"),
            ("syscalls", "sys_exit_setns"),
        ],
        true,
    ),
    // File operations besides open; the legacy non-`at` forms exist on x86_64 only.
    sys_tp("fs_rename", &[("syscalls", "sys_enter_rename")], false),
    sys_tp(
        "fs_renameat",
        &[
            ("syscalls", "sys_enter_renameat"),
            ("syscalls", "sys_enter_renameat2"),
        ],
        true,
    ),
    sys_tp("fs_unlink", &[("syscalls", "sys_enter_unlink")], false),
    sys_tp("fs_unlinkat", &[("syscalls", "sys_enter_unlinkat")], true),
    sys_tp("fs_rmdir", &[("syscalls", "sys_enter_rmdir")], false),
    sys_tp("fs_link", &[("syscalls", "sys_enter_link")], false),
    sys_tp("fs_linkat", &[("syscalls", "sys_enter_linkat")], true),
    sys_tp("fs_symlink", &[("syscalls", "sys_enter_symlink")], false),
    sys_tp("fs_symlinkat", &[("syscalls", "sys_enter_symlinkat")], true),
    sys_tp("fs_chmod", &[("syscalls", "sys_enter_chmod")], false),
    sys_tp(
        "fs_fchmodat",
        &[
            ("syscalls", "sys_enter_fchmodat"),
            ("syscalls", "sys_enter_fchmodat2"),
        ],
        true,
    ),
    sys_tp("fs_fchmod", &[("syscalls", "sys_enter_fchmod")], true),
    sys_tp(
        "fs_chown",
        &[
            ("syscalls", "sys_enter_chown"),
            ("syscalls", "sys_enter_lchown"),
        ],
        false,
    ),
    sys_tp("fs_fchownat", &[("syscalls", "sys_enter_fchownat")], true),
    sys_tp("fs_fchown", &[("syscalls", "sys_enter_fchown")], true),
    sys_tp("fs_truncate", &[("syscalls", "sys_enter_truncate")], true),
    sys_tp("fs_ftruncate", &[("syscalls", "sys_enter_ftruncate")], true),
    sys_tp("fs_mkdir", &[("syscalls", "sys_enter_mkdir")], false),
    sys_tp("fs_mkdirat", &[("syscalls", "sys_enter_mkdirat")], true),
    // The same operations through fentry on each syscall's function (x86_64 names), chosen
    // where the kernel has trampolines; fchmodat2 is Linux 6.6+.
    fe("fe_rename", "__x64_sys_rename", true),
    fe("fe_renameat", "__x64_sys_renameat", true),
    fe("fe_renameat2", "__x64_sys_renameat2", true),
    fe("fe_unlink", "__x64_sys_unlink", true),
    fe("fe_unlinkat", "__x64_sys_unlinkat", true),
    fe("fe_rmdir", "__x64_sys_rmdir", true),
    fe("fe_link", "__x64_sys_link", true),
    fe("fe_linkat", "__x64_sys_linkat", true),
    fe("fe_symlink", "__x64_sys_symlink", true),
    fe("fe_symlinkat", "__x64_sys_symlinkat", true),
    fe("fe_chmod", "__x64_sys_chmod", true),
    fe("fe_fchmodat", "__x64_sys_fchmodat", true),
    fe("fe_fchmodat2", "__x64_sys_fchmodat2", false),
    fe("fe_fchmod", "__x64_sys_fchmod", true),
    fe("fe_chown", "__x64_sys_chown", true),
    fe("fe_lchown", "__x64_sys_lchown", true),
    fe("fe_fchownat", "__x64_sys_fchownat", true),
    fe("fe_fchown", "__x64_sys_fchown", true),
    fe("fe_truncate", "__x64_sys_truncate", true),
    fe("fe_ftruncate", "__x64_sys_ftruncate", true),
    fe("fe_mkdir", "__x64_sys_mkdir", true),
    fe("fe_mkdirat", "__x64_sys_mkdirat", true),
    // Privilege use through fentry (arguments) and fexit (result) on each syscall's function.
    fe("pe_setuid", "__x64_sys_setuid", true),
    fx("px_setuid", "__x64_sys_setuid", true),
    fe("pe_setreuid", "__x64_sys_setreuid", true),
    fx("px_setreuid", "__x64_sys_setreuid", true),
    fe("pe_setresuid", "__x64_sys_setresuid", true),
    fx("px_setresuid", "__x64_sys_setresuid", true),
    fe("pe_setgid", "__x64_sys_setgid", true),
    fx("px_setgid", "__x64_sys_setgid", true),
    fe("pe_setregid", "__x64_sys_setregid", true),
    fx("px_setregid", "__x64_sys_setregid", true),
    fe("pe_setresgid", "__x64_sys_setresgid", true),
    fx("px_setresgid", "__x64_sys_setresgid", true),
    fe("pe_setfsuid", "__x64_sys_setfsuid", false),
    fx("px_setfsuid", "__x64_sys_setfsuid", false),
    fe("pe_setfsgid", "__x64_sys_setfsgid", false),
    fx("px_setfsgid", "__x64_sys_setfsgid", false),
    fe("pe_capset", "__x64_sys_capset", true),
    fx("px_capset", "__x64_sys_capset", true),
    fe("pe_ptrace", "__x64_sys_ptrace", true),
    fx("px_ptrace", "__x64_sys_ptrace", true),
    fe("pe_vm_readv", "__x64_sys_process_vm_readv", true),
    fx("px_vm_readv", "__x64_sys_process_vm_readv", true),
    fe("pe_vm_writev", "__x64_sys_process_vm_writev", true),
    fx("px_vm_writev", "__x64_sys_process_vm_writev", true),
    fe("pe_bpf", "__x64_sys_bpf", true),
    fx("px_bpf", "__x64_sys_bpf", true),
    fe("pe_init_mod", "__x64_sys_init_module", false),
    fx("px_init_mod", "__x64_sys_init_module", false),
    fe("pe_finit_mod", "__x64_sys_finit_module", false),
    fx("px_finit_mod", "__x64_sys_finit_module", false),
    fe("pe_mount", "__x64_sys_mount", true),
    fx("px_mount", "__x64_sys_mount", true),
    fe("pe_umount", "__x64_sys_umount", false),
    fx("px_umount", "__x64_sys_umount", false),
    fe("pe_unshare", "__x64_sys_unshare", true),
    fx("px_unshare", "__x64_sys_unshare", true),
    fe("pe_setns", "__x64_sys_setns", true),
    fx("px_setns", "__x64_sys_setns", true),
];
