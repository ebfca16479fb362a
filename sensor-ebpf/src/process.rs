//! Process lifecycle: exec, fork, exit (BTF tracepoints on the scheduler's events).

use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::{
    ARGV_DATA, Counter, ENV_DATA, EventKind, ExecEvent, ExitEvent, FLAG_ARGV_TRUNCATED,
    FLAG_ENV_TRUNCATED, ForkEvent, NAME_DATA,
};

use crate::{
    kernel::{count, fill_header, is_self, off, read, read_ptr, walk_path},
    maps::EVENTS,
};

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`:
/// fires after the new image is installed, so `current->mm` holds the new argv and environment.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::LostExec);
        return 0;
    };
    // SAFETY: the reservation is sized for ExecEvent; every field the reader trusts is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Exec as u32, task);
    ev.ino = 0;
    ev.dev = 0;
    ev.nlink = 1;
    match read_ptr(bprm, off!(linux_binprm_file)) {
        Some(file) => {
            walk_path(file.wrapping_add(off!(file_f_path)), &mut ev.executable);
            if let Some(inode) = read_ptr(file, off!(file_f_inode)) {
                ev.ino = read::<u64>(inode, off!(inode_i_ino)).unwrap_or(0);
                ev.nlink = read::<u32>(inode, off!(inode_i_nlink)).unwrap_or(1);
                ev.dev = read_ptr(inode, off!(inode_i_sb))
                    .and_then(|sb| read::<u32>(sb, off!(super_block_s_dev)))
                    .unwrap_or(0);
            }
        }
        None => {
            ev.executable.len = 0;
            ev.executable.flags = sensor_common::PATH_TRUNCATED;
        }
    }
    match read_ptr(task, off!(task_struct_fs)) {
        Some(fs) => walk_path(fs.wrapping_add(off!(fs_struct_pwd)), &mut ev.cwd),
        None => {
            ev.cwd.len = 0;
            ev.cwd.flags = sensor_common::PATH_TRUNCATED;
        }
    }
    read_kernel_str(
        read_ptr(bprm, off!(linux_binprm_filename)),
        &mut ev.filename,
    );
    read_kernel_str(read_ptr(bprm, off!(linux_binprm_interp)), &mut ev.interp);
    ev.argv_len = 0;
    ev.env_len = 0;
    if let Some(mm) = read_ptr(task, off!(task_struct_mm)) {
        let (len, cut) = copy_user_block(
            mm,
            off!(mm_struct_arg_start),
            off!(mm_struct_arg_end),
            ev.argv.as_mut_ptr(),
            ARGV_DATA,
        );
        ev.argv_len = len;
        if cut {
            ev.header.flags |= FLAG_ARGV_TRUNCATED;
        }
        let (len, cut) = copy_user_block(
            mm,
            off!(mm_struct_env_start),
            off!(mm_struct_env_end),
            ev.env.as_mut_ptr(),
            ENV_DATA,
        );
        ev.env_len = len;
        if cut {
            ev.header.flags |= FLAG_ENV_TRUNCATED;
        }
    }
    entry.submit(crate::kernel::submit_flags());
    0
}

/// Copies a NUL-terminated kernel string into `dst` (empty when `src` is missing or unreadable).
#[inline(always)]
fn read_kernel_str(src: Option<*const u8>, dst: &mut [u8; NAME_DATA]) {
    dst[0] = 0;
    if let Some(src) = src {
        // SAFETY: dst is NAME_DATA bytes; the helper checks `src` and always NUL-terminates.
        unsafe {
            generated::bpf_probe_read_kernel_str(
                dst.as_mut_ptr() as *mut c_void,
                NAME_DATA as u32,
                src as *const c_void,
            )
        };
    }
}

/// Copies the user memory between the `unsigned long`s at `mm + start_off` and `mm + end_off`
/// into `dst` (capacity `cap`, a power of two). Returns the bytes copied and whether it was cut.
#[inline(always)]
fn copy_user_block(
    mm: *const u8,
    start_off: usize,
    end_off: usize,
    dst: *mut u8,
    cap: usize,
) -> (u32, bool) {
    // Each read is checked before the next: verifiers before 6.x cannot follow a pair checked
    // together and reject the program (seen on Debian's 6.1).
    let Some(start) = read::<u64>(mm, start_off) else {
        return (0, false);
    };
    let Some(end) = read::<u64>(mm, end_off) else {
        return (0, false);
    };
    let total = end.saturating_sub(start) as usize;
    let cut = total > cap;
    let n = if cut { cap } else { total };
    if n == 0 {
        return (0, cut);
    }
    // The verifier needs a provable bound on the size.
    let n = ((n - 1) & (cap - 1)) + 1;
    // SAFETY: dst has `cap` bytes and n <= cap; the helper checks the user address.
    let ret = unsafe {
        generated::bpf_probe_read_user(dst as *mut c_void, n as u32, start as *const c_void)
    };
    if ret < 0 {
        count(Counter::ReadError);
        return (0, cut);
    }
    (n as u32, cut)
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: runs before the
/// child is first scheduled, so this record precedes everything the child does.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let Some(pid) = read::<u32>(child, off!(task_struct_pid)) else {
        return 0;
    };
    let Some(tgid) = read::<u32>(child, off!(task_struct_tgid)) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a new thread, not a new process
    }
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(Counter::LostFork);
        return 0;
    };
    // SAFETY: the reservation is sized for ForkEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Fork as u32, parent);
    ev.child_pid = tgid;
    ev._pad = 0;
    entry.submit(crate::kernel::submit_flags());
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`: the exit code is already set.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    if is_self() {
        return 0;
    }
    let Some(pid) = read::<u32>(task, off!(task_struct_pid)) else {
        return 0;
    };
    let Some(tgid) = read::<u32>(task, off!(task_struct_tgid)) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a thread, not the process
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count(Counter::LostExit);
        return 0;
    };
    // SAFETY: the reservation is sized for ExitEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Exit as u32, task);
    ev.exit_code = read::<u32>(task, off!(task_struct_exit_code)).unwrap_or(0);
    ev._pad = 0;
    entry.submit(crate::kernel::submit_flags());
    0
}
