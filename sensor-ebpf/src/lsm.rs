//! BPF LSM hooks, for kernels that run the BPF LSM (`bpf` in `/sys/kernel/security/lsm`, which
//! takes `lsm=...,bpf` on the command line of most distribution kernels) where the fentry set
//! does not load. Like fentry programs they run only when their hook runs and need no syscall
//! tracepoint; unlike the fentry set they name no architecture's syscall functions, so they
//! also serve kernels other than x86_64.
//!
//! AUDIT ONLY: every program here returns 0 ("allow") on every path, errors included. An LSM
//! program's return value is a verdict on the operation; the sensor watches, it never decides.
//!
//! - Opens: [`lsm_file_open`] on `file_open`, which every open of a file by path reaches
//!   (`do_dentry_open`) once the other LSMs allowed it; the record is built by the same
//!   [`emit_open_file`] as the fexit and tracepoint paths.

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    file::emit_open_file,
    kernel::{current_task, is_self, off, read},
};

/// The verdict of every program here: allow.
const ALLOW: i32 = 0;

/// `__FMODE_EXEC`, set in `f_flags` by `open_exec` (execve, script interpreters, uselib): the
/// exec itself is reported by `process_exec`, and the syscall paths see no open either.
const FMODE_EXEC: u32 = 0x20;

/// `int security_file_open(struct file *file)`, in `do_dentry_open` before the fd is installed
/// (the record says fd -1). `f_flags` still holds O_CREAT and O_TRUNC here: the kernel clears
/// them only after the open succeeded, so the intent comes from the file itself.
#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    if is_self() {
        return ALLOW;
    }
    let Some(flags) = read::<u32>(file, off!(file_f_flags)) else {
        return ALLOW;
    };
    if flags & FMODE_EXEC == 0 {
        emit_open_file(current_task(), file, -1, flags);
    }
    ALLOW
}
