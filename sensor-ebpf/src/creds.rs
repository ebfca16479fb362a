//! Privilege use: uid/gid changes, capabilities, ptrace, cross-process memory access, bpf
//! program loads, kernel modules, mounts and namespaces. Arguments are kept at syscall entry and
//! the record is sent at exit with the result, so a refused attempt and a success differ.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{
    Counter, EventKind, MOUNT_FSTYPE, MOUNT_SOURCE, MOUNT_TARGET, NAME_DATA, PrivOp, PrivilegeEvent,
};

use crate::{
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

macro_rules! simple {
    ($name:ident, $op:expr, $n:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let mut args = [0u64; 4];
            for (i, a) in args.iter_mut().take($n).enumerate() {
                *a = arg(&ctx, i);
            }
            match begin($op, args) {
                Some(p) => commit(p),
                None => 0,
            }
        }
    };
}

simple!(priv_setuid, PrivOp::Setuid, 1);
simple!(priv_setreuid, PrivOp::Setreuid, 2);
simple!(priv_setresuid, PrivOp::Setresuid, 3);
simple!(priv_setgid, PrivOp::Setgid, 1);
simple!(priv_setregid, PrivOp::Setregid, 2);
simple!(priv_setresgid, PrivOp::Setresgid, 3);
simple!(priv_setfsuid, PrivOp::Setfsuid, 1);
simple!(priv_setfsgid, PrivOp::Setfsgid, 1);
simple!(priv_vm_readv, PrivOp::ProcessVmReadv, 1);
simple!(priv_vm_writev, PrivOp::ProcessVmWritev, 1);
simple!(priv_unshare, PrivOp::Unshare, 1);
simple!(priv_setns, PrivOp::Setns, 2);
simple!(priv_init_mod, PrivOp::InitModule, 0);

/// `capset(cap_user_header_t, const cap_user_data_t data)`: the first data element's
/// effective and permitted sets.
#[tracepoint]
pub fn priv_capset(ctx: TracePointContext) -> u32 {
    let data = arg(&ctx, 1) as *const u32;
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
#[tracepoint]
pub fn priv_ptrace(ctx: TracePointContext) -> u32 {
    const PTRACE_ATTACH: u64 = 16;
    const PTRACE_SEIZE: u64 = 0x4206;
    let request = arg(&ctx, 0);
    if request != PTRACE_ATTACH && request != PTRACE_SEIZE {
        return 0;
    }
    match begin(PrivOp::PtraceAttach, [request, arg(&ctx, 1), 0, 0]) {
        Some(p) => commit(p),
        None => 0,
    }
}

/// `bpf(cmd, attr, size)`: only program loads are reported, with the program type.
#[tracepoint]
pub fn priv_bpf(ctx: TracePointContext) -> u32 {
    const BPF_PROG_LOAD: u64 = 5;
    let cmd = arg(&ctx, 0);
    if cmd != BPF_PROG_LOAD {
        return 0;
    }
    // SAFETY: user read checked by the helper; `prog_type` is the first u32 of the attr union.
    let prog_type = unsafe { bpf_probe_read_user(arg(&ctx, 1) as *const u32) }.unwrap_or(0);
    match begin(PrivOp::BpfProgLoad, [cmd, prog_type as u64, 0, 0]) {
        Some(p) => commit(p),
        None => 0,
    }
}

/// `finit_module(fd, uargs, flags)`: the module file's name.
#[tracepoint]
pub fn priv_finit_mod(ctx: TracePointContext) -> u32 {
    let fd = arg(&ctx, 0);
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
#[tracepoint]
pub fn priv_mount(ctx: TracePointContext) -> u32 {
    let Some(p) = begin(PrivOp::Mount, [arg(&ctx, 3), 0, 0, 0]) else {
        return 0;
    };
    user_str(p, MOUNT_TARGET, arg(&ctx, 1));
    user_str(p, MOUNT_FSTYPE, arg(&ctx, 2));
    user_str(p, MOUNT_SOURCE, arg(&ctx, 0));
    commit(p)
}

/// `umount2(name, flags)` (the tracepoint is called `umount`).
#[tracepoint]
pub fn priv_umount(ctx: TracePointContext) -> u32 {
    let Some(p) = begin(PrivOp::Umount, [arg(&ctx, 1), 0, 0, 0]) else {
        return 0;
    };
    user_str(p, (0, NAME_DATA), arg(&ctx, 0));
    commit(p)
}

/// Exit of every syscall above: sends the record with the result and the new credentials.
#[tracepoint]
pub fn priv_exit(ctx: TracePointContext) -> u32 {
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
    ev.ret = arg(&ctx, 0) as i64 as i32;
    ev.args = pending.args;
    ev.before_uid = pending.before_uid;
    ev.before_euid = pending.before_euid;
    ev.text = pending.text;
    entry.submit(crate::kernel::submit_flags());
    let _ = PENDING_PRIVS.remove(&key);
    0
}
