//! Privilege use: uid/gid changes, capabilities, ptrace, cross-process memory access, bpf
//! program loads, kernel modules, mounts and namespaces. Arguments are kept at syscall entry and
//! the record is sent at exit with the result, so a refused attempt and a success differ.
//!
//! Each syscall has two entry points with one body: a classic tracepoint program (`priv_*`,
//! exit `priv_exit`) and, where the kernel has trampolines, fentry/fexit programs on the
//! syscall's own function (`pe_*` at entry, `px_*` at exit; see `fentry.rs`).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, generated},
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext},
};
use sensor_common::{
    Counter, EventKind, MOUNT_FSTYPE, MOUNT_SOURCE, MOUNT_TARGET, NAME_DATA, PrivOp, PrivilegeEvent,
};

use crate::{
    fentry::syscall_arg,
    kernel::{arg, count, current_task, file_of_fd, fill_header, is_self, off, read, read_ptr},
    maps::{PENDING_PRIVS, PRIV_SCRATCH},
};

/// Arguments kept from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingPriv {
    op: u32,
    _pad: u32,
    args: [u64; 4],
    before_uid: u32,
    before_euid: u32,
    text: [u8; NAME_DATA],
}

/// Starts a pending record in per-CPU scratch (it is too large for the BPF stack).
#[inline(always)]
fn begin(op: PrivOp, args: [u64; 4]) -> Option<&'static mut PendingPriv> {
    if is_self() {
        return None;
    }
    // SAFETY: per-CPU slot, used only until `commit` in this same program run.
    let p = unsafe { &mut *PRIV_SCRATCH.get_ptr_mut(0)? };
    p.op = op as u32;
    p._pad = 0;
    p.args = args;
    p.before_uid = bpf_get_current_uid_gid() as u32;
    p.before_euid = read_ptr(current_task(), off!(task_struct_real_cred))
        .and_then(|cred| read::<u32>(cred, off!(cred_euid)))
        .unwrap_or(p.before_uid);
    p.text[0] = 0;
    Some(p)
}

#[inline(always)]
fn commit(p: &PendingPriv) -> u32 {
    let _ = PENDING_PRIVS.insert(&bpf_get_current_pid_tgid(), p, 0);
    0
}

/// Copies a user string into `text[at.0 .. at.0 + at.1]`.
#[inline(always)]
fn user_str(p: &mut PendingPriv, at: (usize, usize), src: u64) {
    if src == 0 {
        return;
    }
    // SAFETY: the destination range is inside `text` (checked by the const layout); the helper
    // checks the user address and NUL-terminates.
    unsafe {
        generated::bpf_probe_read_user_str(
            p.text.as_mut_ptr().add(at.0) as *mut c_void,
            at.1 as u32,
            src as *const c_void,
        )
    };
}

/// The entry programs of one syscall: a classic tracepoint program and an fentry program,
/// both running `$body($extra..., arg)` with their own way of reading syscall arguments.
macro_rules! entry {
    ($tracepoint:ident, $fentry:ident, $body:path $(, $extra:expr)*) => {
        #[tracepoint]
        pub fn $tracepoint(ctx: TracePointContext) -> u32 {
            $body($($extra,)* |i| arg(&ctx, i))
        }
        #[doc = concat!("`", stringify!($tracepoint), "` through fentry (see `fentry.rs`).")]
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            $body($($extra,)* |i| syscall_arg(&ctx, i))
        }
    };
}

/// Keeps the first `n` arguments as they are.
#[inline(always)]
fn keep_args(op: PrivOp, n: usize, arg: impl Fn(usize) -> u64) -> u32 {
    let mut args = [0u64; 4];
    for (i, a) in args.iter_mut().take(n).enumerate() {
        *a = arg(i);
    }
    match begin(op, args) {
        Some(p) => commit(p),
        None => 0,
    }
}

macro_rules! simple {
    ($name:ident, $fentry:ident, $op:expr, $n:expr) => {
        entry!($name, $fentry, keep_args, $op, $n);
    };
}

simple!(priv_setuid, pe_setuid, PrivOp::Setuid, 1);
simple!(priv_setreuid, pe_setreuid, PrivOp::Setreuid, 2);
simple!(priv_setresuid, pe_setresuid, PrivOp::Setresuid, 3);
simple!(priv_setgid, pe_setgid, PrivOp::Setgid, 1);
simple!(priv_setregid, pe_setregid, PrivOp::Setregid, 2);
simple!(priv_setresgid, pe_setresgid, PrivOp::Setresgid, 3);
simple!(priv_setfsuid, pe_setfsuid, PrivOp::Setfsuid, 1);
simple!(priv_setfsgid, pe_setfsgid, PrivOp::Setfsgid, 1);
simple!(priv_vm_readv, pe_vm_readv, PrivOp::ProcessVmReadv, 1);
simple!(priv_vm_writev, pe_vm_writev, PrivOp::ProcessVmWritev, 1);
simple!(priv_unshare, pe_unshare, PrivOp::Unshare, 1);
simple!(priv_setns, pe_setns, PrivOp::Setns, 2);
simple!(priv_init_mod, pe_init_mod, PrivOp::InitModule, 0);
entry!(priv_capset, pe_capset, capset);
entry!(priv_ptrace, pe_ptrace, ptrace);
entry!(priv_bpf, pe_bpf, bpf);
entry!(priv_finit_mod, pe_finit_mod, finit_module);
entry!(priv_mount, pe_mount, mount);
entry!(priv_umount, pe_umount, umount);

/// `capset(cap_user_header_t, const cap_user_data_t data)`: the first data element's
/// effective and permitted sets.
#[inline(always)]
fn capset(arg: impl Fn(usize) -> u64) -> u32 {
    let data = arg(1) as *const u32;
    // SAFETY: user reads are checked by the helper.
    let effective = unsafe { bpf_probe_read_user(data) }.unwrap_or(0);
    // SAFETY: as above.
    let permitted = unsafe { bpf_probe_read_user(data.wrapping_add(1)) }.unwrap_or(0);
    match begin(PrivOp::Capset, [effective as u64, permitted as u64, 0, 0]) {
        Some(p) => commit(p),
        None => 0,
    }
}

/// `ptrace(request, pid, ...)`: only attaching to another process is reported.
#[inline(always)]
fn ptrace(arg: impl Fn(usize) -> u64) -> u32 {
    const PTRACE_ATTACH: u64 = 16;
    const PTRACE_SEIZE: u64 = 0x4206;
    let request = arg(0);
    if request != PTRACE_ATTACH && request != PTRACE_SEIZE {
        return 0;
    }
    match begin(PrivOp::PtraceAttach, [request, arg(1), 0, 0]) {
        Some(p) => commit(p),
        None => 0,
    }
}

/// `bpf(cmd, attr, size)`: only program loads are reported, with the program type.
#[inline(always)]
fn bpf(arg: impl Fn(usize) -> u64) -> u32 {
    const BPF_PROG_LOAD: u64 = 5;
    let cmd = arg(0);
    if cmd != BPF_PROG_LOAD {
        return 0;
    }
    // SAFETY: user read checked by the helper; `prog_type` is the first u32 of the attr union.
    let prog_type = unsafe { bpf_probe_read_user(arg(1) as *const u32) }.unwrap_or(0);
    match begin(PrivOp::BpfProgLoad, [cmd, prog_type as u64, 0, 0]) {
        Some(p) => commit(p),
        None => 0,
    }
}

/// `finit_module(fd, uargs, flags)`: the module file's name.
#[inline(always)]
fn finit_module(arg: impl Fn(usize) -> u64) -> u32 {
    let fd = arg(0);
    let Some(p) = begin(PrivOp::FinitModule, [fd, 0, 0, 0]) else {
        return 0;
    };
    if let Some(name) = file_of_fd(current_task(), fd as u32)
        .and_then(|file| read_ptr(file, off!(file_f_path) + off!(path_dentry)))
        .and_then(|dentry| read_ptr(dentry, off!(dentry_d_name) + off!(qstr_name)))
    {
        // SAFETY: `text` is NAME_DATA bytes; the helper checks `name` and NUL-terminates.
        unsafe {
            generated::bpf_probe_read_kernel_str(
                p.text.as_mut_ptr() as *mut c_void,
                NAME_DATA as u32,
                name as *const c_void,
            )
        };
    }
    commit(p)
}

/// `mount(dev_name, dir_name, type, flags, data)`
#[inline(always)]
fn mount(arg: impl Fn(usize) -> u64) -> u32 {
    let Some(p) = begin(PrivOp::Mount, [arg(3), 0, 0, 0]) else {
        return 0;
    };
    user_str(p, MOUNT_TARGET, arg(1));
    user_str(p, MOUNT_FSTYPE, arg(2));
    user_str(p, MOUNT_SOURCE, arg(0));
    commit(p)
}

/// `umount2(name, flags)` (the tracepoint is called `umount`).
#[inline(always)]
fn umount(arg: impl Fn(usize) -> u64) -> u32 {
    let Some(p) = begin(PrivOp::Umount, [arg(1), 0, 0, 0]) else {
        return 0;
    };
    user_str(p, (0, NAME_DATA), arg(0));
    commit(p)
}

/// Exit of every syscall above: sends the record with the result and the new credentials.
#[tracepoint]
pub fn priv_exit(ctx: TracePointContext) -> u32 {
    exit(arg(&ctx, 0) as i64)
}

/// The fexit twins of `priv_exit`, one per syscall function (an fexit program attaches to one
/// function); the return value follows the function's one argument.
macro_rules! exits {
    ($($name:ident),*) => {$(
        #[doc = concat!("`priv_exit` through fexit (see `fentry.rs`).")]
        #[fexit]
        pub fn $name(ctx: FExitContext) -> u32 {
            exit(ctx.arg(1))
        }
    )*};
}

exits!(
    px_setuid,
    px_setreuid,
    px_setresuid,
    px_setgid,
    px_setregid,
    px_setresgid,
    px_setfsuid,
    px_setfsgid,
    px_capset,
    px_ptrace,
    px_vm_readv,
    px_vm_writev,
    px_bpf,
    px_init_mod,
    px_finit_mod,
    px_mount,
    px_umount,
    px_unshare,
    px_setns
);

#[inline(always)]
fn exit(ret: i64) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_PRIVS.get_ptr(&key) else {
        return 0;
    };
    // SAFETY: the map value stays valid until removed below; we copy out of it first.
    let pending = unsafe { &*pending };
    let Some(mut entry) = crate::maps::EVENTS.reserve::<PrivilegeEvent>(0) else {
        count(Counter::LostPrivilege);
        let _ = PENDING_PRIVS.remove(&key);
        return 0;
    };
    // SAFETY: the reservation is sized for PrivilegeEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Privilege as u32, current_task());
    ev.op = pending.op;
    ev.ret = ret as i32;
    ev.args = pending.args;
    ev.before_uid = pending.before_uid;
    ev.before_euid = pending.before_euid;
    ev.text = pending.text;
    entry.submit(crate::kernel::submit_flags());
    let _ = PENDING_PRIVS.remove(&key);
    0
}
