//! Outbound connects on IP sockets: the address at syscall entry, the result at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{ConnectEvent, Counter, EventKind};

use crate::{
    kernel::{count, current_task, file_of_fd, fill_header, is_self, off, read, read_ptr},
    maps::{EVENTS, PENDING_CONNECTS},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// What `connect()` was asked, kept from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    family: u16,
    port: u16,
    sock_type: u16,
    _pad: u16,
    addr: [u8; 16],
}

/// `connect(int fd, struct sockaddr *uservaddr, int addrlen)`
#[tracepoint]
pub fn net_connect(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    // SAFETY: offsets 16 and 24 are inside the tracepoint record.
    let (Ok(fd), Ok(uaddr)) = (unsafe { ctx.read_at::<u64>(16) }, unsafe {
        ctx.read_at::<u64>(24)
    }) else {
        return 0;
    };
    let uaddr = uaddr as *const u8;
    // SAFETY: user reads are checked by the helper.
    let Ok(family) = (unsafe { bpf_probe_read_user(uaddr as *const u16) }) else {
        return 0;
    };
    let mut pending = PendingConnect {
        family,
        port: 0,
        sock_type: 0,
        _pad: 0,
        addr: [0; 16],
    };
    // sockaddr_in: family, port (be16), addr[4]; sockaddr_in6: family, port, flowinfo, addr[16].
    // SAFETY: user reads are checked by the helper.
    let port = unsafe { bpf_probe_read_user(uaddr.wrapping_add(2) as *const u16) };
    pending.port = u16::from_be(port.unwrap_or(0));
    match family {
        AF_INET => {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user(uaddr.wrapping_add(4) as *const [u8; 4]) }
            {
                pending.addr[..4].copy_from_slice(&a);
            }
        }
        AF_INET6 => {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user(uaddr.wrapping_add(8) as *const [u8; 16]) }
            {
                pending.addr = a;
            }
        }
        _ => return 0,
    }
    if let Some(file) = file_of_fd(current_task(), fd as u32) {
        pending.sock_type = read_ptr(file, off!(file_private_data))
            .and_then(|sock| read::<u16>(sock, off!(socket_type)))
            .unwrap_or(0);
    }
    let _ = PENDING_CONNECTS.insert(&bpf_get_current_pid_tgid(), &pending, 0);
    0
}

#[tracepoint]
pub fn net_connect_exit(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_CONNECTS.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_CONNECTS.remove(&key);
    // SAFETY: offset 16 is inside the tracepoint record.
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count(Counter::LostConnect);
        return 0;
    };
    // SAFETY: the reservation is sized for ConnectEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Connect as u32, current_task());
    ev.family = pending.family;
    ev.port = pending.port;
    ev.sock_type = pending.sock_type;
    ev._pad = 0;
    ev.ret = ret as i32;
    ev.addr = pending.addr;
    ev._pad2 = 0;
    entry.submit(0);
    0
}
