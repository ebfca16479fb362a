//! File opens: the path comes from the opened `struct file` at exit, so relative paths, `..` and
//! symlinks come out resolved exactly as the kernel resolved them. The access mode is read from
//! the file too; only O_CREAT and O_TRUNC, which the kernel clears from `f_flags`, must be kept
//! from syscall entry, and only opens that carry them pay for a map entry.
//!
//! Four ways in, one emitter ([`emit_open_file`], through [`emit_open`] where the fd is known):
//! - `file_sys_exit`, a BTF raw tracepoint on `sys_exit` (preferred where the agent finds the
//!   `pt_regs` members in BTF, x86_64): one program at the exit of every syscall, which keeps
//!   only the open family by syscall number and reads the flags from the saved user registers.
//!   A raw tracepoint runs the program directly, without the per-call record that classic
//!   syscall tracepoints build, and it replaces two classic programs per open (entry and exit),
//!   so it costs an open far less; other syscalls pay one register read and a compare.
//! - `file_fexit_open` in `fentry.rs`, fexit on `do_sys_openat2` (the default where the kernel
//!   has BPF trampolines): runs only on opens and needs no syscall tracepoint.
//! - `lsm_file_open` in `lsm.rs`, BPF LSM on `file_open` (where fentry does not load but the
//!   kernel runs the BPF LSM): the opened `struct file` is its argument.
//! - Classic syscall tracepoints (the fallback): every argument is an 8-byte slot after the
//!   8-byte common header and the 8-byte syscall number, so argument `i` is at `16 + 8 * i`;
//!   the return value is at 16. On x86_64 only the exits are attached (`open_exit_regs`:
//!   the flags come from the task's saved registers); elsewhere, or with `--open-hook
//!   tracepoint-pair`, entry programs keep O_CREAT/O_TRUNC in a map for the exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sensor_common::{Counter, EventKind, OpenEvent, PathRecord};

use crate::{
    kernel::{
        current_task, file_of_fd, fill_header, is_self, off, output_prefix, read, read_ptr,
        read_two, seen_before, walk_path,
    },
    maps::{OPEN_SCRATCH, PENDING_OPENS},
};

const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;
/// `__syscall_nr` of a classic syscall tracepoint record (after the 8-byte common header).
const NR: usize = 8;
const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
pub(crate) const O_CREAT: u32 = 0o100;
pub(crate) const O_TRUNC: u32 = 0o1000;
/// x86_64 numbers of the open family (the agent enables `file_sys_exit` on x86_64 only).
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;

#[inline(always)]
fn remember(flags: u32) -> u32 {
    if flags & (O_CREAT | O_TRUNC) != 0 && !is_self() {
        let _ = PENDING_OPENS.insert(&bpf_get_current_pid_tgid(), &flags, 0);
    }
    0
}

/// `openat(int dfd, const char *filename, int flags, umode_t mode)`
#[tracepoint]
pub fn file_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: ARG2 is inside the tracepoint record.
    remember(unsafe { ctx.read_at::<u64>(ARG2) }.unwrap_or(0) as u32)
}

/// `open(const char *filename, int flags, umode_t mode)`
#[tracepoint]
pub fn file_open(ctx: TracePointContext) -> u32 {
    // SAFETY: ARG1 is inside the tracepoint record.
    remember(unsafe { ctx.read_at::<u64>(ARG1) }.unwrap_or(0) as u32)
}

/// `creat(const char *pathname, umode_t mode)`: open with O_CREAT|O_WRONLY|O_TRUNC.
#[tracepoint]
pub fn file_creat(_ctx: TracePointContext) -> u32 {
    remember(O_CREAT | O_WRONLY | O_TRUNC)
}

/// `openat2(int dfd, const char *filename, struct open_how *how, size_t usize)`; `how->flags` is
/// the first u64 of the user struct.
#[tracepoint]
pub fn file_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: ARG2 is inside the tracepoint record; the user read is checked by the helper.
    let flags = unsafe { ctx.read_at::<u64>(ARG2) }
        .ok()
        .and_then(|how| unsafe { bpf_probe_read_user(how as *const u64) }.ok())
        .unwrap_or(0);
    remember(flags as u32)
}

/// Exit of every open-like syscall (classic tracepoints): emits the record when the open
/// succeeded.
#[tracepoint]
pub fn file_open_exit(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let pending = (unsafe { PENDING_OPENS.get(&key) }).copied();
    if pending.is_some() {
        let _ = PENDING_OPENS.remove(&key);
    }
    // SAFETY: RET is inside the tracepoint record.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    emit_open(ret, pending);
    0
}

/// Exit of every open-like syscall (classic tracepoints) on x86_64, with no entry program: the
/// flags are still in the task's saved user registers, as `file_sys_exit` reads them. One
/// program per open instead of two, and no map entry to carry O_CREAT/O_TRUNC across.
#[tracepoint]
pub fn open_exit_regs(ctx: TracePointContext) -> u32 {
    // SAFETY: RET and NR are inside the tracepoint record.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if ret < 0 || is_self() {
        return 0;
    }
    // SAFETY: as above; `__syscall_nr` is an int.
    let nr = unsafe { ctx.read_at::<i32>(NR) }.unwrap_or(-1) as u64;
    // SAFETY: helpers of tracing programs; the current task is a trusted BTF pointer.
    let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) };
    if let Some(flags) = flags_in_regs(nr, regs as *const u8) {
        emit_open(ret, kept(flags));
    }
    0
}

/// `sys_exit(struct pt_regs *regs, long ret)`, raw: the exit of every syscall. The open family
/// is picked by `orig_ax` (the syscall number); its arguments are still in the saved registers.
#[btf_tracepoint(function = "sys_exit")]
pub fn file_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let Some(nr) = read::<u64>(regs, off!(pt_regs_orig_ax)) else {
        return 0;
    };
    let Some(flags) = flags_in_regs(nr, regs) else {
        return 0;
    };
    if is_self() {
        return 0;
    }
    emit_open(ret, kept(flags));
    0
}

/// The open flags of syscall `nr` from its saved user registers (x86_64), or `None` when `nr`
/// is not of the open family.
#[inline(always)]
fn flags_in_regs(nr: u64, regs: *const u8) -> Option<u32> {
    Some(match nr {
        NR_OPENAT => read::<u64>(regs, off!(pt_regs_dx)).unwrap_or(0) as u32,
        NR_OPEN => read::<u64>(regs, off!(pt_regs_si)).unwrap_or(0) as u32,
        NR_CREAT => O_CREAT | O_WRONLY | O_TRUNC,
        NR_OPENAT2 => read::<u64>(regs, off!(pt_regs_dx))
            // SAFETY: the user read is checked by the helper.
            .and_then(|how| unsafe { bpf_probe_read_user(how as *const u64) }.ok())
            .unwrap_or(0) as u32,
        _ => return None,
    })
}

/// As at the classic entry: only O_CREAT and O_TRUNC are not recoverable from the file.
#[inline(always)]
fn kept(flags: u32) -> Option<u32> {
    (flags & (O_CREAT | O_TRUNC) != 0).then_some(flags)
}

/// Emits the record of a successful open returning `fd`, unless the same process image already
/// opened the same file with the same intent. `pending` holds the flags kept from the call when
/// they carry O_CREAT or O_TRUNC; otherwise they are read from the opened file.
#[inline(always)]
pub(crate) fn emit_open(fd: i64, pending: Option<u32>) {
    if fd < 0 {
        return;
    }
    let task = current_task();
    let Some(file) = file_of_fd(task, fd as u32) else {
        return;
    };
    let flags = match pending {
        Some(flags) => flags,
        None => read::<u32>(file, off!(file_f_flags)).unwrap_or(0),
    };
    emit_open_file(task, file, fd as i32, flags);
}

/// Emits the record of the open of `file` by `task` with `flags` (as given to the call), unless
/// the same process image already opened the same file with the same intent. `fd` is the
/// descriptor, or -1 where it is not installed yet (the LSM hook in `lsm.rs`).
#[inline(always)]
pub(crate) fn emit_open_file(task: *const u8, file: *const u8, fd: i32, flags: u32) {
    // Repeats of the same (process image, file, intent) stop here, before the path walk. The
    // file is named by its superblock and inode number: as unique as (s_dev, ino) while the
    // filesystem is mounted, and one read less on the path every repeat takes (`s_dev` is read
    // for the record only). Neither names it across a remount: an anonymous `s_dev` is given
    // out again just as a freed superblock's memory is.
    let (ino, dev, nlink) = match read_ptr(file, off!(file_f_inode)) {
        Some(inode) => {
            let (sb, ino) = read_two(inode, off!(inode_i_sb), off!(inode_i_ino)).unwrap_or((0, 0));
            let intent = (flags & (O_ACCMODE | O_CREAT | O_TRUNC)) as u64;
            let kind = (EventKind::Open as u64) << 32 | intent;
            if sb != 0 && seen_before(task, kind, sb, ino, Counter::SuppressedOpen) {
                return;
            }
            let dev = read::<u32>(sb as *const u8, off!(super_block_s_dev)).unwrap_or(0);
            let nlink = read::<u32>(inode, off!(inode_i_nlink)).unwrap_or(0);
            (ino, dev, nlink)
        }
        None => (0, 0, 0),
    };
    // Built in per-CPU scratch and sent with only the path bytes used: most paths take a few
    // dozen bytes of the 4 KiB a record can hold, so the ring holds ~20x more opens.
    let Some(ev) = OPEN_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot; programs on one CPU do not preempt each other.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, EventKind::Open as u32, task);
    ev.open_flags = flags;
    ev.fd = fd;
    ev.ino = ino;
    ev.dev = dev;
    ev.nlink = nlink;
    walk_path(file.wrapping_add(off!(file_f_path)), &mut ev.path);
    let used = PATH_IN_OPEN + ev.path.len as usize;
    output_prefix(ev, used, Counter::LostOpen);
}

/// Where the path's bytes start in an [`OpenEvent`].
const PATH_IN_OPEN: usize =
    core::mem::offset_of!(OpenEvent, path) + core::mem::offset_of!(PathRecord, data);
