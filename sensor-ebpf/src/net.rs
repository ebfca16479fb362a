//! Network: connect, bind, listen and accept on IP sockets with their results, and DNS messages
//! to or from port 53 (queries at send, responses at receive).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{Counter, DNS_DATA, DNS_QUERY, DNS_RESPONSE, DnsEvent, EventKind, SocketEvent};

use crate::{
    kernel::{
        arg, count, current_task, file_of_fd, fill_header, is_self, off, read, read_ptr,
        seen_before,
    },
    maps::{EVENTS, PENDING_DNS_READS, PENDING_SOCKETS},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const DNS_PORT: u16 = 53;

/// An IP endpoint as the records carry it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Endpoint {
    family: u16,
    port: u16,
    sock_type: u16,
    _pad: u16,
    addr: [u8; 16],
}

/// What a socket syscall was asked, kept from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSocket {
    kind: u32,
    _pad: u32,
    endpoint: Endpoint,
}

/// A DNS response buffer to copy at exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingDnsRead {
    buf: u64,
    server: Endpoint,
}

/// The `struct sock *` behind a socket fd of the current task.
#[inline(always)]
fn sock_of_fd(fd: u64) -> Option<*const u8> {
    let file = file_of_fd(current_task(), fd as u32)?;
    let socket = read_ptr(file, off!(file_private_data))?;
    read_ptr(socket, off!(socket_sk))
}

#[inline(always)]
fn sock_type(fd: u64) -> u16 {
    file_of_fd(current_task(), fd as u32)
        .and_then(|file| read_ptr(file, off!(file_private_data)))
        .and_then(|socket| read::<u16>(socket, off!(socket_type)))
        .unwrap_or(0)
}

/// An endpoint from a user `struct sockaddr`; `None` for families other than IPv4/IPv6.
#[inline(always)]
fn user_sockaddr(uaddr: u64) -> Option<Endpoint> {
    let uaddr = uaddr as *const u8;
    // SAFETY: user reads are checked by the helper.
    let family = unsafe { bpf_probe_read_user(uaddr as *const u16) }.ok()?;
    // SAFETY: as above. sockaddr_in and sockaddr_in6 both keep the port at offset 2.
    let port = unsafe { bpf_probe_read_user(uaddr.wrapping_add(2) as *const u16) }.unwrap_or(0);
    let mut ep = Endpoint {
        family,
        port: u16::from_be(port),
        sock_type: 0,
        _pad: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            // SAFETY: as above.
            let a = unsafe { bpf_probe_read_user(uaddr.wrapping_add(4) as *const [u8; 4]) }.ok()?;
            ep.addr[..4].copy_from_slice(&a);
        }
        // SAFETY: as above.
        AF_INET6 => {
            ep.addr =
                unsafe { bpf_probe_read_user(uaddr.wrapping_add(8) as *const [u8; 16]) }.ok()?
        }
        _ => return None,
    }
    Some(ep)
}

/// The remote (`peer`) or local endpoint of a kernel socket.
#[inline(always)]
fn sock_endpoint(sk: *const u8, peer: bool) -> Option<Endpoint> {
    let common = sk.wrapping_add(off!(sock_sk_common));
    let family = read::<u16>(common, off!(sock_common_skc_family))?;
    let port = if peer {
        u16::from_be(read::<u16>(common, off!(sock_common_skc_dport))?)
    } else {
        read::<u16>(common, off!(sock_common_skc_num))?
    };
    let mut ep = Endpoint {
        family,
        port,
        sock_type: 0,
        _pad: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            let field = if peer {
                off!(sock_common_skc_daddr)
            } else {
                off!(sock_common_skc_rcv_saddr)
            };
            ep.addr[..4].copy_from_slice(&read::<[u8; 4]>(common, field)?);
        }
        AF_INET6 => {
            let field = if peer {
                off!(sock_common_skc_v6_daddr)
            } else {
                off!(sock_common_skc_v6_rcv_saddr)
            };
            ep.addr = read::<[u8; 16]>(common, field)?;
        }
        _ => return None,
    }
    Some(ep)
}

#[inline(always)]
fn remember(kind: EventKind, endpoint: Endpoint) -> u32 {
    let pending = PendingSocket {
        kind: kind as u32,
        _pad: 0,
        endpoint,
    };
    let _ = PENDING_SOCKETS.insert(&bpf_get_current_pid_tgid(), &pending, 0);
    0
}

#[inline(always)]
fn emit_socket(kind: u32, ep: &Endpoint, local_port: u16, ret: i64) {
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        count(if kind == EventKind::Connect as u32 {
            Counter::LostConnect
        } else {
            Counter::LostSocket
        });
        return;
    };
    // SAFETY: the reservation is sized for SocketEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, kind, current_task());
    ev.family = ep.family;
    ev.port = ep.port;
    ev.sock_type = ep.sock_type;
    ev.local_port = local_port;
    ev.ret = ret as i32;
    ev.addr = ep.addr;
    ev._pad = 0;
    entry.submit(crate::kernel::submit_flags());
}

/// Keeps the `(fd, struct sockaddr *, len)` arguments of connect or bind until exit.
#[inline(always)]
fn remember_sockaddr(ctx: &TracePointContext, kind: EventKind) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(ctx, 0);
    let Some(mut ep) = user_sockaddr(arg(ctx, 1)) else {
        return 0;
    };
    ep.sock_type = sock_type(fd);
    remember(kind, ep)
}

/// `connect(int fd, struct sockaddr *uservaddr, int addrlen)`
#[tracepoint]
pub fn net_connect(ctx: TracePointContext) -> u32 {
    remember_sockaddr(&ctx, EventKind::Connect)
}

/// `bind(int fd, struct sockaddr *umyaddr, int addrlen)`
#[tracepoint]
pub fn net_bind(ctx: TracePointContext) -> u32 {
    remember_sockaddr(&ctx, EventKind::Bind)
}

/// `listen(int fd, int backlog)`: the socket's bound address.
#[tracepoint]
pub fn net_listen(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(&ctx, 0);
    let Some(mut ep) = sock_of_fd(fd).and_then(|sk| sock_endpoint(sk, false)) else {
        return 0;
    };
    ep.sock_type = sock_type(fd);
    remember(EventKind::Listen, ep)
}

/// Exit of connect, bind and listen: the record with the result.
#[tracepoint]
pub fn net_socket_exit(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_SOCKETS.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_SOCKETS.remove(&key);
    let ep = &pending.endpoint;
    if pending.kind == EventKind::Connect as u32 {
        let kind = (EventKind::Connect as u64) << 32 | (ep.family as u64) << 16 | ep.port as u64;
        let a = u64::from_ne_bytes([
            ep.addr[0], ep.addr[1], ep.addr[2], ep.addr[3], ep.addr[4], ep.addr[5], ep.addr[6],
            ep.addr[7],
        ]);
        let b = u64::from_ne_bytes([
            ep.addr[8],
            ep.addr[9],
            ep.addr[10],
            ep.addr[11],
            ep.addr[12],
            ep.addr[13],
            ep.addr[14],
            ep.addr[15],
        ]);
        if seen_before(current_task(), kind, a, b, Counter::SuppressedConnect) {
            return 0;
        }
    }
    emit_socket(pending.kind, ep, 0, arg(&ctx, 0) as i64);
    0
}

/// Exit of accept and accept4: the new connection's peer, and the local port it came in on.
#[tracepoint]
pub fn net_accept_exit(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(&ctx, 0) as i64;
    if fd < 0 {
        return 0;
    }
    let Some(sk) = sock_of_fd(fd as u64) else {
        return 0;
    };
    let Some(mut peer) = sock_endpoint(sk, true) else {
        return 0;
    };
    let Some(local) = sock_endpoint(sk, false) else {
        return 0;
    };
    peer.sock_type = sock_type(fd as u64);
    emit_socket(EventKind::Accept as u32, &peer, local.port, fd);
    0
}

/// The DNS server a send goes to: the explicit address, or the connected peer.
#[inline(always)]
fn dns_server(fd: u64, uaddr: u64) -> Option<Endpoint> {
    let ep = if uaddr != 0 {
        user_sockaddr(uaddr)?
    } else {
        sock_endpoint(sock_of_fd(fd)?, true)?
    };
    (ep.port == DNS_PORT).then_some(ep)
}

#[inline(always)]
fn emit_dns(direction: u16, server: &Endpoint, sock_type: u16, buf: u64, len: u64) {
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count(Counter::LostDns);
        return;
    };
    // SAFETY: the reservation is sized for DnsEvent; the reader trusts `payload[..len]` only.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut ev.header, EventKind::Dns as u32, current_task());
    ev.family = server.family;
    ev.port = server.port;
    ev.sock_type = sock_type;
    ev.direction = direction;
    ev.addr = server.addr;
    ev._pad = 0;
    let n = if len as usize > DNS_DATA {
        DNS_DATA
    } else {
        len as usize
    };
    ev.len = 0;
    if n > 0 {
        // The verifier needs a provable bound: 1..=DNS_DATA.
        let n = ((n - 1) & (DNS_DATA - 1)) + 1;
        // SAFETY: payload has DNS_DATA bytes and n <= DNS_DATA; the helper checks `buf`.
        let ret = unsafe {
            generated::bpf_probe_read_user(
                ev.payload.as_mut_ptr() as *mut c_void,
                n as u32,
                buf as *const c_void,
            )
        };
        if ret == 0 {
            ev.len = n as u32;
        } else {
            count(Counter::ReadError);
        }
    }
    entry.submit(crate::kernel::submit_flags());
}

/// `sendto(fd, buff, len, flags, addr, addr_len)` (also `send`).
#[tracepoint]
pub fn dns_sendto(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(&ctx, 0);
    if let Some(server) = dns_server(fd, arg(&ctx, 4)) {
        emit_dns(
            DNS_QUERY,
            &server,
            sock_type(fd),
            arg(&ctx, 1),
            arg(&ctx, 2),
        );
    }
    0
}

/// The first buffer of a `struct msghdr`: `(msg_name, iov[0].iov_base, iov[0].iov_len)`.
#[inline(always)]
fn msghdr_first(msg: u64) -> Option<(u64, u64, u64)> {
    let msg = msg as *const u64;
    // SAFETY: user reads are checked by the helper. msghdr: name, namelen, iov, iovlen, ...
    let name = unsafe { bpf_probe_read_user(msg) }.ok()?;
    // SAFETY: as above.
    let iov = unsafe { bpf_probe_read_user(msg.wrapping_add(2)) }.ok()? as *const u64;
    // SAFETY: as above. iovec: base, len.
    let base = unsafe { bpf_probe_read_user(iov) }.ok()?;
    // SAFETY: as above.
    let len = unsafe { bpf_probe_read_user(iov.wrapping_add(1)) }.ok()?;
    Some((name, base, len))
}

/// `sendmsg(fd, msg, flags)` and `sendmmsg(fd, mmsg, vlen, flags)`: an `mmsghdr` starts with
/// its `msghdr`, so the first message is read the same way; glibc's resolver sends the A and
/// AAAA questions for the same name together, so the first carries the name.
#[tracepoint]
pub fn dns_sendmsg(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(&ctx, 0);
    let Some((name, base, len)) = msghdr_first(arg(&ctx, 1)) else {
        return 0;
    };
    if let Some(server) = dns_server(fd, name) {
        emit_dns(DNS_QUERY, &server, sock_type(fd), base, len);
    }
    0
}

/// `recvfrom(fd, ubuf, size, flags, addr, addr_len)` on a socket connected to port 53: the
/// buffer is kept for the exit, where the response is in it.
#[tracepoint]
pub fn dns_recvfrom(ctx: TracePointContext) -> u32 {
    if is_self() {
        return 0;
    }
    let fd = arg(&ctx, 0);
    let Some(mut server) = sock_of_fd(fd).and_then(|sk| sock_endpoint(sk, true)) else {
        return 0;
    };
    if server.port != DNS_PORT {
        return 0;
    }
    server.sock_type = sock_type(fd);
    let pending = PendingDnsRead {
        buf: arg(&ctx, 1),
        server,
    };
    let _ = PENDING_DNS_READS.insert(&bpf_get_current_pid_tgid(), &pending, 0);
    0
}

#[tracepoint]
pub fn dns_recvfrom_exit(ctx: TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_DNS_READS.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_DNS_READS.remove(&key);
    let ret = arg(&ctx, 0) as i64;
    if ret > 0 {
        emit_dns(
            DNS_RESPONSE,
            &pending.server,
            pending.server.sock_type,
            pending.buf,
            ret as u64,
        );
    }
    0
}
