//! File operations besides open: rename, unlink, link, symlink, chmod, chown, truncate, mkdir.
//! Reported at syscall entry with the names as given and the directory a relative name is
//! resolved against (working directory or dirfd), walked from the kernel's dentries.
//!
//! Each operation has two entry points built from one [`Args`] row: a classic syscall
//! tracepoint program (`fs_*`) and an fentry program on the syscall's own function (`fe_*`, see
//! `fentry.rs`), which the agent prefers where the kernel has trampolines.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated,
    macros::{fentry, tracepoint},
    programs::{FEntryContext, TracePointContext},
};
use sensor_common::{
    Counter, EventKind, FILEOP_DIR_IS_FILE, FILEOP_NAME2_OTHER_DIR, FileOp, FileOpEvent, NAME_DATA,
    PATH_TRUNCATED, PathRecord,
};

use crate::{
    fentry::syscall_arg,
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

/// Where one syscall keeps what [`emit`] needs: argument indexes, `None` when it has no such
/// argument. A missing directory fd means the working directory.
struct Args {
    op: FileOp,
    /// The directory fd `name` is resolved against.
    dfd: Option<usize>,
    /// The fd of the file itself (fchmod, fchown, ftruncate): no name.
    fd: Option<usize>,
    name: Option<usize>,
    name2: Option<usize>,
    /// The directory fd of `name2` when it has its own (renameat, linkat).
    name2_dfd: Option<usize>,
    /// Mode, owner ids or length.
    extra: [Option<usize>; 2],
}

/// The usual shape: `name` (and `name2`) against the working directory, no extra arguments.
const PLAIN: Args = Args {
    op: FileOp::Unlink,
    dfd: None,
    fd: None,
    name: Some(0),
    name2: None,
    name2_dfd: None,
    extra: [None, None],
};

/// Emits the record of one operation; `arg(i)` reads syscall argument `i` from wherever the
/// hook keeps it (tracepoint record or saved registers).
#[inline(always)]
fn emit_args(arg: impl Fn(usize) -> u64, a: Args) -> u32 {
    let slot = |i: Option<usize>| i.map_or(0, &arg);
    let dfd = a.dfd.map_or(AT_FDCWD, |i| arg(i) as i64);
    let base = match a.fd {
        Some(i) => Base::File(arg(i) as u32),
        None => Base::Dir(dfd),
    };
    let name2_dfd = a.name2_dfd.map_or(dfd, |i| arg(i) as i64);
    let extra = [slot(a.extra[0]), slot(a.extra[1])];
    emit(a.op, base, slot(a.name), slot(a.name2), name2_dfd, extra)
}

/// Per row, one classic-tracepoint program (`$program`, which may serve several tracepoints)
/// and one fentry program per syscall function (`[$fentry, ...]`: an fentry program attaches
/// to one function), each reading its arguments as `Args` says.
macro_rules! file_op_programs {
    ($($(#[$doc:meta])* $program:ident [$($fentry:ident),+] => $args:expr;)*) => {$(
        $(#[$doc])*
        #[tracepoint]
        pub fn $program(ctx: TracePointContext) -> u32 {
            emit_args(|i| arg(&ctx, i), $args)
        }
        $(
            #[doc = concat!("`", stringify!($program), "` through fentry (see `fentry.rs`).")]
            #[fentry]
            pub fn $fentry(ctx: FEntryContext) -> u32 {
                emit_args(|i| syscall_arg(&ctx, i), $args)
            }
        )+
    )*};
}

file_op_programs! {
    /// `rename(oldname, newname)`
    fs_rename [fe_rename] => Args { op: FileOp::Rename, name2: Some(1), ..PLAIN };
    /// renameat and renameat2: `(olddfd, oldname, newdfd, newname[, flags])`.
    fs_renameat [fe_renameat, fe_renameat2] => Args {
        op: FileOp::Rename, dfd: Some(0), name: Some(1), name2: Some(3), name2_dfd: Some(2),
        ..PLAIN
    };
    /// `unlink(pathname)`
    fs_unlink [fe_unlink] => PLAIN;
    /// `rmdir(pathname)`
    fs_rmdir [fe_rmdir] => Args { op: FileOp::Rmdir, ..PLAIN };
    /// `link(oldname, newname)`
    fs_link [fe_link] => Args { op: FileOp::Link, name2: Some(1), ..PLAIN };
    /// `linkat(olddfd, oldname, newdfd, newname, flags)`
    fs_linkat [fe_linkat] => Args {
        op: FileOp::Link, dfd: Some(0), name: Some(1), name2: Some(3), name2_dfd: Some(2),
        ..PLAIN
    };
    /// `symlink(target, linkpath)`: the target is text; the link is resolved against the cwd.
    fs_symlink [fe_symlink] => Args { op: FileOp::Symlink, name2: Some(1), ..PLAIN };
    /// `symlinkat(target, newdfd, linkpath)`
    fs_symlinkat [fe_symlinkat] => Args { op: FileOp::Symlink, dfd: Some(1), name2: Some(2), ..PLAIN };
    /// `chmod(filename, mode)`
    fs_chmod [fe_chmod] => Args { op: FileOp::Chmod, extra: [Some(1), None], ..PLAIN };
    /// fchmodat and fchmodat2: `(dfd, filename, mode[, flags])`.
    fs_fchmodat [fe_fchmodat, fe_fchmodat2] => Args {
        op: FileOp::Chmod, dfd: Some(0), name: Some(1), extra: [Some(2), None], ..PLAIN
    };
    /// `fchmod(fd, mode)`
    fs_fchmod [fe_fchmod] => Args {
        op: FileOp::Chmod, fd: Some(0), name: None, extra: [Some(1), None], ..PLAIN
    };
    /// chown and lchown: `(filename, user, group)`.
    fs_chown [fe_chown, fe_lchown] => Args { op: FileOp::Chown, extra: [Some(1), Some(2)], ..PLAIN };
    /// `fchownat(dfd, filename, user, group, flag)`
    fs_fchownat [fe_fchownat] => Args {
        op: FileOp::Chown, dfd: Some(0), name: Some(1), extra: [Some(2), Some(3)], ..PLAIN
    };
    /// `fchown(fd, user, group)`
    fs_fchown [fe_fchown] => Args {
        op: FileOp::Chown, fd: Some(0), name: None, extra: [Some(1), Some(2)], ..PLAIN
    };
    /// `truncate(path, length)`
    fs_truncate [fe_truncate] => Args { op: FileOp::Truncate, extra: [Some(1), None], ..PLAIN };
    /// `ftruncate(fd, length)`
    fs_ftruncate [fe_ftruncate] => Args {
        op: FileOp::Truncate, fd: Some(0), name: None, extra: [Some(1), None], ..PLAIN
    };
    /// `mkdir(pathname, mode)`
    fs_mkdir [fe_mkdir] => Args { op: FileOp::Mkdir, extra: [Some(1), None], ..PLAIN };
    /// `mkdirat(dfd, pathname, mode)`
    fs_mkdirat [fe_mkdirat] => Args {
        op: FileOp::Mkdir, dfd: Some(0), name: Some(1), extra: [Some(2), None], ..PLAIN
    };
}

/// `unlinkat(dfd, pathname, flag)`: AT_REMOVEDIR makes it an rmdir.
#[tracepoint]
pub fn fs_unlinkat(ctx: TracePointContext) -> u32 {
    unlinkat(|i| arg(&ctx, i))
}

/// `unlinkat` through fentry (see [`fs_unlinkat`]).
#[fentry]
pub fn fe_unlinkat(ctx: FEntryContext) -> u32 {
    unlinkat(|i| syscall_arg(&ctx, i))
}

#[inline(always)]
fn unlinkat(arg: impl Fn(usize) -> u64) -> u32 {
    let op = if arg(2) & AT_REMOVEDIR != 0 {
        FileOp::Rmdir
    } else {
        FileOp::Unlink
    };
    emit_args(
        &arg,
        Args {
            op,
            dfd: Some(0),
            name: Some(1),
            ..PLAIN
        },
    )
}
