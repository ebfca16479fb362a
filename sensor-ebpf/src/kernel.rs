//! Reading kernel structures through BTF-derived offsets, and the parts every record shares.

use core::ffi::c_void;

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, bpf_probe_read_kernel, generated,
};
use sensor_common::{
    CgroupCounts, Counter, EventHeader, PATH_COMPONENT_MAX, PATH_DATA, PATH_MAX_DEPTH,
    PATH_TRUNCATED, PATH_UNLINKED, PathRecord, SeenKey,
};

use crate::maps::{
    CGROUP_COUNTS, COUNTERS, EVENTS, FILTER_REPEATS, SEEN, SEEN_FRONT, SEEN_FRONT_BITS, SELF_PID,
};

/// One member offset from the `OFFSETS` global. Volatile so the compiler cannot fold the
/// all-zero initial value into the code: the loader rewrites it before the program loads.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a plain u64 of a static.
        unsafe { core::ptr::read_volatile(&crate::maps::OFFSETS.$field) } as usize
    };
}
pub(crate) use off;

/// Syscall argument `i` of a classic syscall tracepoint (`syscalls:sys_enter_*`); at
/// `sys_exit_*`, argument 0 is the return value.
#[inline(always)]
pub fn arg(ctx: &aya_ebpf::programs::TracePointContext, i: usize) -> u64 {
    // SAFETY: every syscall tracepoint record has its 8-byte slots from offset 16.
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
}

/// Reads a `T` at `base + offset` in kernel memory; `None` (and a counted error) on fault.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(Counter::ReadError);
            None
        }
    }
}

/// The u64s at `base + first` and `base + second`: one read of the 32 bytes from `first` when
/// `second` is among them (each read is a helper call, the cost of the hot paths), else two.
/// For members of one structure that has 32 bytes from `first`.
#[inline(always)]
pub fn read_two(base: *const u8, first: usize, second: usize) -> Option<(u64, u64)> {
    let gap = second.wrapping_sub(first);
    if gap < 32 && gap % 8 == 0 {
        let words = read::<[u64; 4]>(base, first)?;
        Some((words[0], words[(gap / 8) & 3]))
    } else {
        Some((read::<u64>(base, first)?, read::<u64>(base, second)?))
    }
}

/// Reads a kernel pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: usize) -> Option<*const u8> {
    read::<*const u8>(base, offset).filter(|p| !p.is_null())
}

pub fn count(counter: Counter) {
    count_global(counter);
    if !matches!(counter, Counter::ReadError) {
        count_for_cgroup(!counter.is_loss());
    }
}

/// Counts in `COUNTERS` only: for packet programs, where no task (and so no cgroup) is current.
#[inline(always)]
pub fn count_global(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; programs on one CPU do not preempt each other.
        unsafe { *slot += 1 };
    }
}

/// Charges one lost (or suppressed) record to the current cgroup.
#[inline(always)]
fn count_for_cgroup(suppressed: bool) {
    // SAFETY: helper without arguments.
    count_for_cgroup_id(unsafe { bpf_get_current_cgroup_id() }, suppressed);
}

/// Charges one lost (or suppressed) record to `cgroup`.
#[inline(always)]
pub fn count_for_cgroup_id(cgroup: u64, suppressed: bool) {
    // One lookup when the cgroup has its entry already (every repeat a filter suppresses).
    let counts = CGROUP_COUNTS.get_ptr_mut(&cgroup).or_else(|| {
        let _ = CGROUP_COUNTS.insert(&cgroup, &CgroupCounts::default(), 0);
        CGROUP_COUNTS.get_ptr_mut(&cgroup)
    });
    if let Some(counts) = counts {
        // SAFETY: this CPU's copy of the value; programs on one CPU do not preempt each other.
        unsafe {
            if suppressed {
                (*counts).suppressed += 1;
            } else {
                (*counts).lost += 1;
            }
        }
    }
}

/// Ring buffer data waiting before a record forces a wakeup. Below it, records are submitted
/// without waking the reader, which drains on a short timer instead: a wakeup per event costs
/// about a microsecond.
const WAKEUP_THRESHOLD: u64 = 512 * 1024;

/// Flags for `submit`: no wakeup unless the reader has fallen behind.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Sends the first `used` bytes of `record` (built in scratch space), rounded up to 8 and
/// bounded by the record's size; a full ring counts as `lost`.
#[inline(always)]
pub fn output_prefix<T>(record: &T, used: usize, lost: Counter) {
    let size = (used + 7) & !7;
    // The explicit bound is what lets the verifier accept a variable length.
    if size > size_of::<T>() {
        count(lost);
        return;
    }
    // SAFETY: `size` bytes of `record` are in bounds (checked above).
    let bytes = unsafe { core::slice::from_raw_parts(record as *const T as *const u8, size) };
    if EVENTS.output::<[u8]>(bytes, submit_flags()).is_err() {
        count(lost);
    }
}

/// True when the current process image already reported this object: the caller then sends
/// nothing and the repeat is counted as suppressed. The first occurrence is remembered.
#[inline(always)]
pub fn seen_before(task: *const u8, kind: u64, a: u64, b: u64, suppressed: Counter) -> bool {
    // SAFETY: reading a u32 static the loader set.
    if unsafe { core::ptr::read_volatile(&FILTER_REPEATS) } == 0 {
        return false;
    }
    let Some(mm) = read_ptr(task, off!(task_struct_mm)) else {
        return false;
    };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = SeenKey {
        mm: mm as u64,
        pid,
        _pad: 0,
        kind,
        a,
        b,
    };
    let front = SEEN_FRONT.get_ptr_mut(front_slot(&key));
    if let Some(slot) = front {
        // SAFETY: this CPU's slot; programs on one CPU do not preempt each other.
        if unsafe { *slot } == key {
            count(suppressed);
            return true;
        }
    }
    // SAFETY: only the presence of the entry is used.
    let seen = unsafe { SEEN.get(&key) }.is_some();
    if seen {
        count(suppressed);
    } else if SEEN.insert(&key, &0, 0).is_err() {
        return false;
    }
    if let Some(slot) = front {
        // SAFETY: as above.
        unsafe { *slot = key };
    }
    seen
}

/// The [`SEEN_FRONT`] slot of `key`: a multiplicative hash of its fields.
#[inline(always)]
fn front_slot(key: &SeenKey) -> u32 {
    let mixed = (key.mm >> 6)
        ^ u64::from(key.pid)
        ^ key.kind.rotate_left(13)
        ^ key.a.rotate_left(29)
        ^ key.b;
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SEEN_FRONT_BITS)) as u32
}

/// The current task, as a raw kernel pointer.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: helper without arguments, always valid in tracing programs.
    unsafe { generated::bpf_get_current_task() as *const u8 }
}

/// True when the current process is the agent itself.
#[inline(always)]
pub fn is_self() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: reading a u32 static the loader set.
    tgid == unsafe { core::ptr::read_volatile(&SELF_PID) }
}

/// Fills the common header for the current task.
#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: u32, task: *const u8) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind;
    h.flags = 0;
    // SAFETY: helper without arguments.
    h.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tid = pid_tgid as u32;
    h.pid = (pid_tgid >> 32) as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.ppid = read_ptr(task, off!(task_struct_real_parent))
        .and_then(|parent| read::<u32>(parent, off!(task_struct_tgid)))
        .unwrap_or(0);
    h.euid = read_ptr(task, off!(task_struct_real_cred))
        .and_then(|cred| read::<u32>(cred, off!(cred_euid)))
        .unwrap_or(h.uid);
    // SAFETY: helper without arguments.
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
}

/// The `struct file *` behind descriptor `fd` of `task`.
#[inline(always)]
pub fn file_of_fd(task: *const u8, fd: u32) -> Option<*const u8> {
    let files = read_ptr(task, off!(task_struct_files))?;
    let fdt = read_ptr(files, off!(files_struct_fdt))?;
    // `max_fds` and the `fd` array pointer are next to each other in every kernel we know: one
    // read then fetches both.
    let (max_fds, fd_array) = if off!(fdtable_fd) == off!(fdtable_max_fds) + 8 {
        let [max_fds, fd_array] = read::<[u64; 2]>(fdt, off!(fdtable_max_fds))?;
        (max_fds as u32, fd_array as *const u8)
    } else {
        let max_fds = read::<u32>(fdt, off!(fdtable_max_fds))?;
        (max_fds, read_ptr(fdt, off!(fdtable_fd))?)
    };
    if fd >= max_fds || fd_array.is_null() {
        return None;
    }
    read_ptr(fd_array, fd as usize * core::mem::size_of::<usize>())
}

/// Writes the absolute path of `path` (a `struct path *`) into `out` by walking dentries up to
/// the root and crossing mount points, like the kernel's `d_path` (which tracepoint programs may
/// not call). Components go leaf first, each NUL-terminated.
#[inline(always)]
pub fn walk_path(path: *const u8, out: &mut PathRecord) {
    out.len = 0;
    out.flags = PATH_TRUNCATED;
    let Some(mut vfsmnt) = read_ptr(path, off!(path_mnt)) else {
        return;
    };
    let Some(mut dentry) = read_ptr(path, off!(path_dentry)) else {
        return;
    };
    let mount_mnt = off!(mount_mnt);
    let mut mount = vfsmnt.wrapping_sub(mount_mnt);
    // Read once per mount crossed, not once per component.
    let Some(mut mnt_root) = read_ptr(vfsmnt, off!(vfsmount_mnt_root)) else {
        return;
    };
    // The running length lives in the record, not in a register: the verifier then sees an
    // unknown (masked) value at every iteration and can prune equivalent states instead of
    // walking every combination of component lengths.
    for _ in 0..PATH_MAX_DEPTH {
        if dentry == mnt_root {
            let Some(mount_parent) = read_ptr(mount, off!(mount_mnt_parent)) else {
                break;
            };
            if mount_parent == mount {
                out.flags = 0;
                break;
            }
            let Some(mountpoint) = read_ptr(mount, off!(mount_mnt_mountpoint)) else {
                break;
            };
            dentry = mountpoint;
            mount = mount_parent;
            vfsmnt = mount.wrapping_add(mount_mnt);
            let Some(root) = read_ptr(vfsmnt, off!(vfsmount_mnt_root)) else {
                break;
            };
            mnt_root = root;
            continue;
        }
        let Some(parent) = read_ptr(dentry, off!(dentry_d_parent)) else {
            break;
        };
        let Some(name) = read_ptr(dentry, off!(dentry_d_name) + off!(qstr_name)) else {
            break;
        };
        // SAFETY: volatile read of our own record field.
        let len = unsafe { core::ptr::read_volatile(&out.len) } as usize;
        if len >= PATH_DATA {
            break;
        }
        let dst = out.data.as_mut_ptr().wrapping_add(len & (PATH_DATA - 1));
        // SAFETY: dst + PATH_COMPONENT_MAX stays inside `data` (PATH_DATA + PATH_COMPONENT_MAX
        // bytes) because the offset is masked below PATH_DATA; the helper checks `name`.
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                dst as *mut c_void,
                PATH_COMPONENT_MAX as u32,
                name as *const c_void,
            )
        };
        if n <= 0 {
            count(Counter::ReadError);
            break;
        }
        // SAFETY: volatile write of our own record field.
        unsafe { core::ptr::write_volatile(&mut out.len, (len + n as usize) as u32) };
        if dentry == parent {
            // A dentry that is its own parent but not a mount root: an object of an internal
            // filesystem (memfd, pipe, anonymous inode), not reachable from any root.
            out.flags = PATH_UNLINKED;
            break;
        }
        dentry = parent;
    }
    if out.len as usize > PATH_DATA {
        out.len = PATH_DATA as u32;
    }
}
