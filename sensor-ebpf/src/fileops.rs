//! File operations besides open: rename, unlink, link, symlink, chmod, chown, truncate, mkdir.
//! Reported at syscall entry with the names as given and the directory a relative name is
//! resolved against (working directory or dirfd), walked from the kernel's dentries.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::tracepoint, programs::TracePointContext};
use sensor_common::{
    Counter, EventKind, FILEOP_DIR_IS_FILE, FILEOP_NAME2_OTHER_DIR, FileOp, FileOpEvent, NAME_DATA,
    PATH_TRUNCATED, PathRecord,
};

use crate::{
    kernel::{
        arg, current_task, file_of_fd, fill_header, is_self, off, output_prefix, read_ptr,
        walk_path,
    },
    maps::FILEOP_SCRATCH,
};

const AT_FDCWD: i64 = -100;
const AT_REMOVEDIR: u64 = 0x200;

/// Where the directory part comes from.
#[derive(Clone, Copy)]
enum Base {
    /// A directory fd, or AT_FDCWD for the working directory.
    Dir(i64),
    /// The file an fd refers to (fchmod, fchown, ftruncate): no name.
    File(u32),
}

#[inline(always)]
fn user_str(dst: &mut [u8; NAME_DATA], src: u64) {
    dst[0] = 0;
    if src != 0 {
        // SAFETY: dst is NAME_DATA bytes; the helper checks the user address, NUL-terminates.
        unsafe {
            generated::bpf_probe_read_user_str(
                dst.as_mut_ptr() as *mut c_void,
                NAME_DATA as u32,
                src as *const c_void,
            )
        };
    }
}

#[inline(always)]
fn emit(op: FileOp, base: Base, name: u64, name2: u64, name2_dfd: i64, args: [u64; 2]) -> u32 {
    if is_self() {
        return 0;
    }
    // Built in per-CPU scratch, sent without the unused tail of `dir` (as opens are).
    let Some(ev) = FILEOP_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot; programs on one CPU do not preempt each other.
    let ev = unsafe { &mut *ev };
    let task = current_task();
    fill_header(&mut ev.header, EventKind::FileOp as u32, task);
    ev.op = op as u32;
    ev.flags = 0;
    ev.args = args;
    user_str(&mut ev.name, name);
    user_str(&mut ev.name2, name2);
    ev.dir.len = 0;
    ev.dir.flags = 0;
    match base {
        Base::File(fd) => {
            ev.flags |= FILEOP_DIR_IS_FILE;
            match file_of_fd(task, fd) {
                Some(file) => walk_path(file.wrapping_add(off!(file_f_path)), &mut ev.dir),
                None => ev.dir.flags = PATH_TRUNCATED,
            }
        }
        Base::Dir(dfd) => {
            if dfd != name2_dfd {
                ev.flags |= FILEOP_NAME2_OTHER_DIR;
            }
            // An absolute name needs no directory (a symlink's target text is never resolved).
            let absolute = ev.name[0] == b'/' && (op as u32 != FileOp::Symlink as u32);
            if !absolute || (name2 != 0 && ev.name2[0] != b'/') {
                let path = if dfd == AT_FDCWD {
                    read_ptr(task, off!(task_struct_fs))
                        .map(|fs| fs.wrapping_add(off!(fs_struct_pwd)))
                } else {
                    file_of_fd(task, dfd as u32).map(|f| f.wrapping_add(off!(file_f_path)))
                };
                match path {
                    Some(path) => walk_path(path, &mut ev.dir),
                    None => ev.dir.flags = PATH_TRUNCATED,
                }
            }
        }
    }
    let used = DIR_IN_FILEOP + ev.dir.len as usize;
    output_prefix(ev, used, Counter::LostFileOp);
    0
}

/// Where the directory path's bytes start in a [`FileOpEvent`].
const DIR_IN_FILEOP: usize =
    core::mem::offset_of!(FileOpEvent, dir) + core::mem::offset_of!(PathRecord, data);

const CWD: Base = Base::Dir(AT_FDCWD);

#[tracepoint]
pub fn fs_rename(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Rename,
        CWD,
        arg(&ctx, 0),
        arg(&ctx, 1),
        AT_FDCWD,
        [0; 2],
    )
}

/// renameat and renameat2: `(olddfd, oldname, newdfd, newname[, flags])`.
#[tracepoint]
pub fn fs_renameat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    emit(
        FileOp::Rename,
        Base::Dir(dfd),
        arg(&ctx, 1),
        arg(&ctx, 3),
        arg(&ctx, 2) as i64,
        [0; 2],
    )
}

#[tracepoint]
pub fn fs_unlink(ctx: TracePointContext) -> u32 {
    emit(FileOp::Unlink, CWD, arg(&ctx, 0), 0, AT_FDCWD, [0; 2])
}

#[tracepoint]
pub fn fs_rmdir(ctx: TracePointContext) -> u32 {
    emit(FileOp::Rmdir, CWD, arg(&ctx, 0), 0, AT_FDCWD, [0; 2])
}

/// `unlinkat(dfd, pathname, flag)`: AT_REMOVEDIR makes it an rmdir.
#[tracepoint]
pub fn fs_unlinkat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    let op = if arg(&ctx, 2) & AT_REMOVEDIR != 0 {
        FileOp::Rmdir
    } else {
        FileOp::Unlink
    };
    emit(op, Base::Dir(dfd), arg(&ctx, 1), 0, dfd, [0; 2])
}

#[tracepoint]
pub fn fs_link(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Link,
        CWD,
        arg(&ctx, 0),
        arg(&ctx, 1),
        AT_FDCWD,
        [0; 2],
    )
}

/// `linkat(olddfd, oldname, newdfd, newname, flags)`
#[tracepoint]
pub fn fs_linkat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    emit(
        FileOp::Link,
        Base::Dir(dfd),
        arg(&ctx, 1),
        arg(&ctx, 3),
        arg(&ctx, 2) as i64,
        [0; 2],
    )
}

/// `symlink(target, linkpath)`: the target is text; the link is resolved against the cwd.
#[tracepoint]
pub fn fs_symlink(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Symlink,
        CWD,
        arg(&ctx, 0),
        arg(&ctx, 1),
        AT_FDCWD,
        [0; 2],
    )
}

/// `symlinkat(target, newdfd, linkpath)`
#[tracepoint]
pub fn fs_symlinkat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 1) as i64;
    emit(
        FileOp::Symlink,
        Base::Dir(dfd),
        arg(&ctx, 0),
        arg(&ctx, 2),
        dfd,
        [0; 2],
    )
}

#[tracepoint]
pub fn fs_chmod(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Chmod,
        CWD,
        arg(&ctx, 0),
        0,
        AT_FDCWD,
        [arg(&ctx, 1), 0],
    )
}

/// fchmodat and fchmodat2: `(dfd, filename, mode[, flags])`.
#[tracepoint]
pub fn fs_fchmodat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    emit(
        FileOp::Chmod,
        Base::Dir(dfd),
        arg(&ctx, 1),
        0,
        dfd,
        [arg(&ctx, 2), 0],
    )
}

#[tracepoint]
pub fn fs_fchmod(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Chmod,
        Base::File(arg(&ctx, 0) as u32),
        0,
        0,
        AT_FDCWD,
        [arg(&ctx, 1), 0],
    )
}

/// chown and lchown: `(filename, user, group)`.
#[tracepoint]
pub fn fs_chown(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Chown,
        CWD,
        arg(&ctx, 0),
        0,
        AT_FDCWD,
        [arg(&ctx, 1), arg(&ctx, 2)],
    )
}

/// `fchownat(dfd, filename, user, group, flag)`
#[tracepoint]
pub fn fs_fchownat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    emit(
        FileOp::Chown,
        Base::Dir(dfd),
        arg(&ctx, 1),
        0,
        dfd,
        [arg(&ctx, 2), arg(&ctx, 3)],
    )
}

#[tracepoint]
pub fn fs_fchown(ctx: TracePointContext) -> u32 {
    let fd = Base::File(arg(&ctx, 0) as u32);
    emit(
        FileOp::Chown,
        fd,
        0,
        0,
        AT_FDCWD,
        [arg(&ctx, 1), arg(&ctx, 2)],
    )
}

#[tracepoint]
pub fn fs_truncate(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Truncate,
        CWD,
        arg(&ctx, 0),
        0,
        AT_FDCWD,
        [arg(&ctx, 1), 0],
    )
}

#[tracepoint]
pub fn fs_ftruncate(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Truncate,
        Base::File(arg(&ctx, 0) as u32),
        0,
        0,
        AT_FDCWD,
        [arg(&ctx, 1), 0],
    )
}

#[tracepoint]
pub fn fs_mkdir(ctx: TracePointContext) -> u32 {
    emit(
        FileOp::Mkdir,
        CWD,
        arg(&ctx, 0),
        0,
        AT_FDCWD,
        [arg(&ctx, 1), 0],
    )
}

/// `mkdirat(dfd, pathname, mode)`
#[tracepoint]
pub fn fs_mkdirat(ctx: TracePointContext) -> u32 {
    let dfd = arg(&ctx, 0) as i64;
    emit(
        FileOp::Mkdir,
        Base::Dir(dfd),
        arg(&ctx, 1),
        0,
        dfd,
        [arg(&ctx, 2), 0],
    )
}
