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
}

/// Which packets a [`Hook::CgroupSkb`] program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkbDirection {
    Ingress,
    Egress,
}

/// Which way of watching opens a program belongs to: the classic per-syscall tracepoints by
/// default, the raw `sys_exit` program (which runs on every syscall) only when asked for (see
/// `sensor-ebpf/src/file.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenPath {
    /// Not an open program: always attached.
    Any,
    /// The raw `sys_exit` program.
    Raw,
    /// The classic `sys_enter_open*`/`sys_exit_open*` programs.
    Classic,
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

pub const PROGRAMS: &[Program] = &[
    btf("process_exec", "sched_process_exec"),
    btf("process_fork", "sched_process_fork"),
    btf("process_exit", "sched_process_exit"),
    Program {
        open_path: OpenPath::Raw,
        ..btf("file_sys_exit", "sys_exit")
    },
    open_tp("file_openat", &[("syscalls", "sys_enter_openat")], true),
    open_tp("file_openat2", &[("syscalls", "sys_enter_openat2")], false),
    // open(2) and creat(2) exist on x86_64 but not on arm64.
    open_tp("file_open", &[("syscalls", "sys_enter_open")], false),
    open_tp("file_creat", &[("syscalls", "sys_enter_creat")], false),
    open_tp(
        "file_open_exit",
        &[
            ("syscalls", "sys_exit_openat"),
            ("syscalls", "sys_exit_openat2"),
            ("syscalls", "sys_exit_open"),
            ("syscalls", "sys_exit_creat"),
        ],
        true,
    ),
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
    tp("priv_setuid", &[("syscalls", "sys_enter_setuid")], true),
    tp("priv_setreuid", &[("syscalls", "sys_enter_setreuid")], true),
    tp(
        "priv_setresuid",
        &[("syscalls", "sys_enter_setresuid")],
        true,
    ),
    tp("priv_setgid", &[("syscalls", "sys_enter_setgid")], true),
    tp("priv_setregid", &[("syscalls", "sys_enter_setregid")], true),
    tp(
        "priv_setresgid",
        &[("syscalls", "sys_enter_setresgid")],
        true,
    ),
    tp(
        "priv_setfsuid",
        &[("syscalls", "sys_enter_setfsuid")],
        false,
    ),
    tp(
        "priv_setfsgid",
        &[("syscalls", "sys_enter_setfsgid")],
        false,
    ),
    tp("priv_capset", &[("syscalls", "sys_enter_capset")], true),
    tp("priv_ptrace", &[("syscalls", "sys_enter_ptrace")], true),
    tp(
        "priv_vm_readv",
        &[("syscalls", "sys_enter_process_vm_readv")],
        true,
    ),
    tp(
        "priv_vm_writev",
        &[("syscalls", "sys_enter_process_vm_writev")],
        true,
    ),
    tp("priv_bpf", &[("syscalls", "sys_enter_bpf")], true),
    // Kernels built without module support have no module syscalls.
    tp(
        "priv_init_mod",
        &[("syscalls", "sys_enter_init_module")],
        false,
    ),
    tp(
        "priv_finit_mod",
        &[("syscalls", "sys_enter_finit_module")],
        false,
    ),
    tp("priv_mount", &[("syscalls", "sys_enter_mount")], true),
    tp("priv_umount", &[("syscalls", "sys_enter_umount")], false),
    tp("priv_unshare", &[("syscalls", "sys_enter_unshare")], true),
    tp("priv_setns", &[("syscalls", "sys_enter_setns")], true),
    tp(
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
    tp("fs_rename", &[("syscalls", "sys_enter_rename")], false),
    tp(
        "fs_renameat",
        &[
            ("syscalls", "sys_enter_renameat"),
            ("syscalls", "sys_enter_renameat2"),
        ],
        true,
    ),
    tp("fs_unlink", &[("syscalls", "sys_enter_unlink")], false),
    tp("fs_unlinkat", &[("syscalls", "sys_enter_unlinkat")], true),
    tp("fs_rmdir", &[("syscalls", "sys_enter_rmdir")], false),
    tp("fs_link", &[("syscalls", "sys_enter_link")], false),
    tp("fs_linkat", &[("syscalls", "sys_enter_linkat")], true),
    tp("fs_symlink", &[("syscalls", "sys_enter_symlink")], false),
    tp("fs_symlinkat", &[("syscalls", "sys_enter_symlinkat")], true),
    tp("fs_chmod", &[("syscalls", "sys_enter_chmod")], false),
    tp(
        "fs_fchmodat",
        &[
            ("syscalls", "sys_enter_fchmodat"),
            ("syscalls", "sys_enter_fchmodat2"),
        ],
        true,
    ),
    tp("fs_fchmod", &[("syscalls", "sys_enter_fchmod")], true),
    tp(
        "fs_chown",
        &[
            ("syscalls", "sys_enter_chown"),
            ("syscalls", "sys_enter_lchown"),
        ],
        false,
    ),
    tp("fs_fchownat", &[("syscalls", "sys_enter_fchownat")], true),
    tp("fs_fchown", &[("syscalls", "sys_enter_fchown")], true),
    tp("fs_truncate", &[("syscalls", "sys_enter_truncate")], true),
    tp("fs_ftruncate", &[("syscalls", "sys_enter_ftruncate")], true),
    tp("fs_mkdir", &[("syscalls", "sys_enter_mkdir")], false),
    tp("fs_mkdirat", &[("syscalls", "sys_enter_mkdirat")], true),
];
