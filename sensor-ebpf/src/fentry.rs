//! Hooks off the syscall path, for kernels with BPF trampolines (fentry/fexit): the programs
//! run only when the hooked kernel function runs, and they need no syscall tracepoint, whose
//! mere presence puts every syscall of every task on the slow path (PLATFORM.md). The agent
//! loads them first and falls back to the classic tracepoints where the kernel refuses them.
//!
//! - Opens: [`file_fexit_open`], fexit on `do_sys_openat2`, which open, openat, creat and
//!   openat2 all go through; the record is built by the same [`emit_open`] as the tracepoints.
//! - File operations: fentry on each syscall's own function (`__x64_sys_*`), generated with
//!   the tracepoint programs from one table in `fileops.rs`; their one argument is the saved
//!   user registers, from which [`syscall_arg`] reads the syscall arguments.
//! - Privilege operations: fentry (arguments, credentials before) and fexit (result) on each
//!   syscall's function, generated with the tracepoint programs in `creds.rs`.
//!
//! x86_64 only (`__x64_sys_*` names, System V registers); elsewhere the tracepoints are used.

use aya_ebpf::{
    macros::fexit,
    programs::{FEntryContext, FExitContext},
};

use crate::{
    file::{O_CREAT, O_TRUNC, emit_open},
    kernel::{is_self, off, read},
};

/// Syscall argument `i` (0-3) of an x86_64 syscall function `__x64_sys_*(const struct pt_regs
/// *regs)`: the System V syscall convention passes them in di, si, dx, r10.
#[inline(always)]
pub fn syscall_arg(ctx: &FEntryContext, i: usize) -> u64 {
    let regs: *const u8 = ctx.arg(0);
    let offset = match i {
        0 => off!(pt_regs_di),
        1 => off!(pt_regs_si),
        2 => off!(pt_regs_dx),
        3 => off!(pt_regs_r10),
        _ => return 0,
    };
    read::<u64>(regs, offset).unwrap_or(0)
}

/// `long do_sys_openat2(int dfd, const char __user *filename, struct open_how *how)`, at its
/// return: the fd is installed by then, so the opened file is read from the fd table as at the
/// tracepoints' exit. `how` is kernel memory (the callers' copy); `flags` is its first u64.
/// An fexit program reads the return value as the argument after the last one.
#[fexit]
pub fn file_fexit_open(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.arg(3);
    if ret < 0 || is_self() {
        return 0;
    }
    let how: *const u8 = ctx.arg(2);
    let flags = read::<u64>(how, 0).unwrap_or(0) as u32;
    // As at the classic entry: only O_CREAT and O_TRUNC are not recoverable from the file.
    let pending = (flags & (O_CREAT | O_TRUNC) != 0).then_some(flags);
    emit_open(ret, pending);
    0
}
