//! io_uring: requests submitted to a ring run in the kernel without the syscalls the other
//! programs watch (an `IORING_OP_OPENAT` never enters `openat`). Two BTF tracepoints that run
//! only for io_uring users report each process's ring setup and each request kind it submits,
//! with the file name of opens and the address of connects. Repeats (same process image, same
//! kind and object) are filtered in the kernel.
//!
//! Connects submitted through a ring still pass the cgroup `connect4/6` hooks (`net.rs`), so
//! they are also reported as connects.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sensor_common::{
    Counter, EventKind, IO_URING_SETUP, IO_URING_SUBMIT, IORING_OP_CONNECT, IORING_OP_OPENAT,
    IORING_OP_OPENAT2, IoUringEvent, NAME_DATA,
};

use crate::{
    kernel::{current_task, fill_header, is_self, off, output_prefix, read, read_ptr, seen_before},
    maps::IO_URING_SCRATCH,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The per-CPU record, header filled for the current task.
#[inline(always)]
fn scratch(what: u32, opcode: u32) -> Option<&'static mut IoUringEvent> {
    let ev = IO_URING_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; programs on one CPU do not preempt each other.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, EventKind::IoUring as u32, current_task());
    ev.what = what;
    ev.opcode = opcode;
    ev.family = 0;
    ev.port = 0;
    ev._pad = 0;
    ev.addr = [0; 16];
    ev.name[0] = 0;
    Some(ev)
}

/// `io_uring_create(int fd, void *ctx, u32 sq_entries, u32 cq_entries, u32 flags)`.
#[btf_tracepoint(function = "io_uring_create")]
pub fn io_uring_setup(ctx: BtfTracePointContext) -> i32 {
    if is_self() {
        return 0;
    }
    let flags: u32 = ctx.arg(4);
    let kind = (EventKind::IoUring as u64) << 32 | IO_URING_SETUP as u64;
    if seen_before(current_task(), kind, 0, 0, Counter::SuppressedIoUring) {
        return 0;
    }
    if let Some(ev) = scratch(IO_URING_SETUP, flags) {
        output_prefix(ev, size_of::<IoUringEvent>(), Counter::LostIoUring);
    }
    0
}

/// FNV-1a over the name's 8-byte words up to its NUL, so the seen-set tells names apart by
/// their whole length (a prefix would let one open hide the next).
#[inline(always)]
fn name_hash(name: &[u8; NAME_DATA], len: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..NAME_DATA / 8 {
        if i * 8 >= len {
            break;
        }
        let w = u64::from_ne_bytes([
            name[i * 8],
            name[i * 8 + 1],
            name[i * 8 + 2],
            name[i * 8 + 3],
            name[i * 8 + 4],
            name[i * 8 + 5],
            name[i * 8 + 6],
            name[i * 8 + 7],
        ]);
        h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Reads an open request's file name (a kernel `struct filename`, taken at prep) into `ev`;
/// returns its hash.
#[inline(always)]
fn open_name(req: *const u8, ev: &mut IoUringEvent) -> u64 {
    let Some(name) = read_ptr(req, off!(io_open_filename))
        .and_then(|filename| read_ptr(filename, off!(filename_name)))
    else {
        return 0;
    };
    ev.name = [0; NAME_DATA];
    // SAFETY: `name` has NAME_DATA bytes; the helper checks the kernel address.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            ev.name.as_mut_ptr() as *mut c_void,
            NAME_DATA as u32,
            name as *const c_void,
        )
    };
    if n <= 0 {
        return 0;
    }
    name_hash(&ev.name, n as usize)
}

/// Reads a connect request's user address into `ev`; returns it folded for the seen-set.
#[inline(always)]
fn connect_addr(req: *const u8, ev: &mut IoUringEvent) -> u64 {
    let Some(uaddr) = read_ptr(req, off!(io_connect_addr)) else {
        return 0;
    };
    // SAFETY: user reads are checked by the helper; sockaddr_in/in6 keep the port at 2.
    let family = unsafe { bpf_probe_read_user(uaddr as *const u16) }.unwrap_or(0);
    // SAFETY: as above.
    let port = unsafe { bpf_probe_read_user(uaddr.wrapping_add(2) as *const u16) }.unwrap_or(0);
    match family {
        AF_INET => {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user(uaddr.wrapping_add(4) as *const [u8; 4]) } {
                ev.addr[..4].copy_from_slice(&a);
            }
        }
        AF_INET6 => {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user(uaddr.wrapping_add(8) as *const [u8; 16]) }
            {
                ev.addr = a;
            }
        }
        _ => return 0,
    }
    ev.family = family;
    ev.port = u16::from_be(port);
    let a = &ev.addr;
    let lo = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let hi = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    (lo ^ hi.rotate_left(17)) ^ (ev.port as u64) << 48 ^ family as u64
}

/// `io_uring_submit_req(struct io_kiocb *req)`: after the request's prep, in the submitter's
/// context (or its SQPOLL thread, which belongs to the same process).
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit(ctx: BtfTracePointContext) -> i32 {
    if is_self() {
        return 0;
    }
    let req: *const u8 = ctx.arg(0);
    let Some(opcode) = read::<u8>(req, off!(io_kiocb_opcode)) else {
        return 0;
    };
    let Some(ev) = scratch(IO_URING_SUBMIT, opcode as u32) else {
        return 0;
    };
    // Where the kernel's BTF lacks the request internals the offsets are 0: opcode only.
    let object = match opcode {
        IORING_OP_OPENAT | IORING_OP_OPENAT2 if off!(io_open_filename) != 0 => open_name(req, ev),
        IORING_OP_CONNECT if off!(io_connect_addr) != 0 => connect_addr(req, ev),
        _ => 0,
    };
    let kind = (EventKind::IoUring as u64) << 32 | (IO_URING_SUBMIT as u64) << 8 | opcode as u64;
    if seen_before(current_task(), kind, object, 0, Counter::SuppressedIoUring) {
        return 0;
    }
    output_prefix(ev, size_of::<IoUringEvent>(), Counter::LostIoUring);
    0
}
