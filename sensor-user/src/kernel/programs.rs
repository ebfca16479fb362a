//! The set of kernel programs, as data: the loader walks this table.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A BTF-typed raw tracepoint (`tp_btf/<name>`).
    BtfTracepoint(&'static str),
    /// Classic tracepoints (`<category>/<name>`); one program may serve several.
    Tracepoints(&'static [(&'static str, &'static str)]),
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
}

const fn tp(name: &'static str, tps: &'static [(&'static str, &'static str)], required: bool) -> Program {
    Program { name, hook: Hook::Tracepoints(tps), required }
}

pub const PROGRAMS: &[Program] = &[
    Program { name: "process_exec", hook: Hook::BtfTracepoint("sched_process_exec"), required: true },
    Program { name: "process_fork", hook: Hook::BtfTracepoint("sched_process_fork"), required: true },
    Program { name: "process_exit", hook: Hook::BtfTracepoint("sched_process_exit"), required: true },
    tp("file_openat", &[("syscalls", "sys_enter_openat")], true),
    tp("file_openat2", &[("syscalls", "sys_enter_openat2")], false),
    // open(2) and creat(2) exist on x86_64 but not on arm64.
    tp("file_open", &[("syscalls", "sys_enter_open")], false),
    tp("file_creat", &[("syscalls", "sys_enter_creat")], false),
    tp(
        "file_open_exit",
        &[
            ("syscalls", "sys_exit_openat"),
            ("syscalls", "sys_exit_openat2"),
            ("syscalls", "sys_exit_open"),
            ("syscalls", "sys_exit_creat"),
        ],
        true,
    ),
    tp("net_connect", &[("syscalls", "sys_enter_connect")], true),
    tp("net_connect_exit", &[("syscalls", "sys_exit_connect")], true),
];
