//! Network, off the syscall path: the cgroup `sock_addr` hooks (connect, UDP sends with an
//! address, bind), `cgroup_sock` post-bind, and the `inet_sock_set_state` BTF tracepoint (TCP
//! connect outcomes, listen, accept). None of them runs on a syscall the sensor ignores, and no
//! program here runs per byte of traffic. DNS messages are read in `dns.rs`.
//!
//! Audit only: every cgroup program returns [`ALLOW`] on every path, whatever fails inside (a
//! full ring, a failed read). The entry points call an infallible body and then return the
//! constant, so no early return can deny a connect.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, generated},
    macros::{btf_tracepoint, cgroup_sock, cgroup_sock_addr},
    programs::{BtfTracePointContext, SockAddrContext, SockContext},
};
use sensor_common::{Counter, EventHeader, EventKind, SOCK_STREAM, SocketEvent};

use crate::{
    kernel::{
        count_for_cgroup_id, count_global, current_task, fill_header, is_self, off, read,
        seen_before,
    },
    maps::{DNS_SOCKETS, EVENTS, LISTENERS, PENDING_BINDS, PENDING_CONNECTS},
};

/// What a cgroup program returns: let the operation proceed. The only value any of them returns.
pub const ALLOW: i32 = 1;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
pub const DNS_PORT: u16 = 53;
const EINPROGRESS: i32 = 115;

/// TCP states (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

/// An IP endpoint as the records carry it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub family: u16,
    pub port: u16,
    pub sock_type: u16,
    pub _pad: u16,
    pub addr: [u8; 16],
}

/// A TCP connect between the `connect4/6` hook (in the caller's context, where the header is
/// filled) and the handshake's outcome (`inet_sock_set_state`, often in softirq context).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    pub header: EventHeader,
    pub endpoint: Endpoint,
}

/// A socket that talks to port 53: whose it is and which server it named.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsSocket {
    pub header: EventHeader,
    pub server: Endpoint,
}

/// A listening socket: its network namespace and port.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenerKey {
    pub net: u64,
    pub port: u16,
    pub _pad: [u16; 3],
}

/// The destination (or requested local address) of a `sock_addr` hook.
#[inline(always)]
fn user_endpoint(ctx: &SockAddrContext, family: u16) -> Endpoint {
    let sa = ctx.sock_addr;
    // SAFETY: fields of the context every sock_addr program may read, each with a 4-byte load
    // (the verifier rejects other sizes for some of them).
    let (port, sock_type) = unsafe {
        (
            core::ptr::read_volatile(&(*sa).user_port),
            core::ptr::read_volatile(&(*sa).type_),
        )
    };
    let mut ep = Endpoint {
        family,
        // The low 16 bits, in network order.
        port: u16::from_be(port as u16),
        sock_type: sock_type as u16,
        _pad: 0,
        addr: [0; 16],
    };
    if family == AF_INET6 {
        for i in 0..4 {
            // SAFETY: as above.
            let word = unsafe { core::ptr::read_volatile(&(*sa).user_ip6[i]) };
            ep.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    } else {
        // SAFETY: as above.
        let word = unsafe { core::ptr::read_volatile(&(*sa).user_ip4) };
        ep.addr[..4].copy_from_slice(&word.to_ne_bytes());
    }
    ep
}

/// The socket's cookie: the key that ties the hooks of one socket together.
#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the sock_addr context is what the helper takes.
    unsafe { generated::bpf_get_socket_cookie(ctx.sock_addr as *mut _) }
}

/// Seen-set key parts of a destination: `(kind bits, address high, address low)`.
#[inline(always)]
fn destination_key(kind: EventKind, ep: &Endpoint) -> (u64, u64, u64) {
    let a = &ep.addr;
    (
        (kind as u64) << 32 | (ep.family as u64) << 16 | ep.port as u64,
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// True when this process image already reported this destination.
#[inline(always)]
fn seen_destination(kind: EventKind, ep: &Endpoint) -> bool {
    let (k, a, b) = destination_key(kind, ep);
    seen_before(current_task(), k, a, b, Counter::SuppressedConnect)
}

/// A header for the current task.
#[inline(always)]
fn header_now(kind: EventKind) -> EventHeader {
    // SAFETY: plain integers; every field is written by fill_header.
    let mut h: EventHeader = unsafe { core::mem::zeroed() };
    fill_header(&mut h, kind as u32, current_task());
    h
}

/// Sends a socket record with `header` (taken where the process was current) stamped now.
#[inline(always)]
fn emit_socket(header: &EventHeader, kind: EventKind, ep: &Endpoint, local_port: u16, ret: i32) {
    let Some(mut entry) = EVENTS.reserve::<SocketEvent>(0) else {
        count_lost(kind, header.cgroup_id);
        return;
    };
    // SAFETY: the reservation is sized for SocketEvent and every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = *header;
    ev.header.kind = kind as u32;
    // SAFETY: helper without arguments.
    ev.header.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.family = ep.family;
    ev.port = ep.port;
    ev.sock_type = ep.sock_type;
    ev.local_port = local_port;
    ev.ret = ret;
    ev.addr = ep.addr;
    ev._pad = 0;
    entry.submit(crate::kernel::submit_flags());
}

/// Charged to the process's cgroup from its header: these programs may run where another task
/// (or none) is current.
#[inline(always)]
fn count_lost(kind: EventKind, cgroup_id: u64) {
    let counter = match kind {
        EventKind::Connect | EventKind::Send => Counter::LostConnect,
        _ => Counter::LostSocket,
    };
    count_global(counter);
    count_for_cgroup_id(cgroup_id, false);
}

/// Remembers a socket that names port 53, so `dns.rs` can attribute its packets.
#[inline(always)]
fn remember_dns_socket(cookie: u64, server: &Endpoint) {
    let entry = DnsSocket {
        header: header_now(EventKind::Dns),
        server: *server,
    };
    let _ = DNS_SOCKETS.insert(&cookie, &entry, 0);
}

/// A connect (also a TCP Fast Open `sendmsg(MSG_FASTOPEN)`, which connects through the same
/// hook). UDP: reported at once (a UDP connect only sets the peer). TCP: kept until the
/// handshake ends, to report its outcome; a connect that fails before sending a SYN (no route
/// to the network) never gets one and is not reported.
#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) {
    if is_self() {
        return;
    }
    let ep = user_endpoint(ctx, family);
    let cookie = cookie(ctx);
    if ep.port == DNS_PORT {
        remember_dns_socket(cookie, &ep);
    }
    if seen_destination(EventKind::Connect, &ep) {
        return;
    }
    let header = header_now(EventKind::Connect);
    if ep.sock_type == SOCK_STREAM {
        let pending = PendingConnect {
            header,
            endpoint: ep,
        };
        if PENDING_CONNECTS.insert(&cookie, &pending, 0).is_err() {
            // Full (see the map): report the attempt now rather than not at all.
            emit_socket(&header, EventKind::Connect, &ep, 0, -EINPROGRESS);
        }
    } else {
        emit_socket(&header, EventKind::Connect, &ep, 0, 0);
    }
}

#[cgroup_sock_addr(connect4)]
pub fn net_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn net_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET6);
    ALLOW
}

/// A UDP datagram sent with an explicit address (`sendto`, `sendmsg` with `msg_name`), the way
/// a process reaches any host without connect: a destination like a connect.
#[inline(always)]
fn on_send(ctx: &SockAddrContext, family: u16) {
    if is_self() {
        return;
    }
    let ep = user_endpoint(ctx, family);
    if ep.port == DNS_PORT {
        remember_dns_socket(cookie(ctx), &ep);
    }
    if seen_destination(EventKind::Send, &ep) {
        return;
    }
    emit_socket(&header_now(EventKind::Send), EventKind::Send, &ep, 0, 0);
}

#[cgroup_sock_addr(sendmsg4)]
pub fn net_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_send(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn net_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_send(&ctx, AF_INET6);
    ALLOW
}

/// A bind: the requested address, with the caller's header, is kept by socket cookie until
/// `post_bind` says it succeeded (post_bind programs may not call the `current` helpers on
/// every kernel, so everything they report is taken here).
#[inline(always)]
fn on_bind(ctx: &SockAddrContext, family: u16) {
    if is_self() {
        return;
    }
    let pending = PendingConnect {
        header: header_now(EventKind::Bind),
        endpoint: user_endpoint(ctx, family),
    };
    let _ = PENDING_BINDS.insert(&cookie(ctx), &pending, 0);
}

#[cgroup_sock_addr(bind4)]
pub fn net_bind4(ctx: SockAddrContext) -> i32 {
    on_bind(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(bind6)]
pub fn net_bind6(ctx: SockAddrContext) -> i32 {
    on_bind(&ctx, AF_INET6);
    ALLOW
}

/// The bind succeeded: reported with the address as requested (port 0 stays 0: which port the
/// kernel picked changes every run and says nothing about the program).
#[inline(always)]
fn on_post_bind(ctx: &SockContext) {
    // SAFETY: the sock context is what the helper takes.
    let key = unsafe { generated::bpf_get_socket_cookie(ctx.sock as *mut _) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_BINDS.get(&key) }).copied() else {
        return;
    };
    let _ = PENDING_BINDS.remove(&key);
    emit_socket(&pending.header, EventKind::Bind, &pending.endpoint, 0, 0);
}

#[cgroup_sock(post_bind4)]
pub fn net_post_bind4(ctx: SockContext) -> i32 {
    on_post_bind(&ctx);
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn net_post_bind6(ctx: SockContext) -> i32 {
    on_post_bind(&ctx);
    ALLOW
}

/// The remote (`peer`) or local endpoint of a kernel socket.
#[inline(always)]
pub fn sock_endpoint(sk: *const u8, peer: bool) -> Option<Endpoint> {
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
        sock_type: SOCK_STREAM,
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

/// Namespace and local port of a TCP socket: a listener and the connections it accepts share
/// them.
#[inline(always)]
fn listener_key(sk: *const u8) -> Option<ListenerKey> {
    let common = sk.wrapping_add(off!(sock_sk_common));
    Some(ListenerKey {
        net: read::<u64>(common, off!(sock_common_skc_net))?,
        port: read::<u16>(common, off!(sock_common_skc_num))?,
        _pad: [0; 3],
    })
}

/// `listen()` moved the socket to LISTEN (in the caller's context).
#[inline(always)]
fn on_listen(sk: *const u8) {
    if is_self() {
        return;
    }
    let (Some(ep), Some(key)) = (sock_endpoint(sk, false), listener_key(sk)) else {
        return;
    };
    let header = header_now(EventKind::Listen);
    let _ = LISTENERS.insert(&key, &header, 0);
    emit_socket(&header, EventKind::Listen, &ep, 0, 0);
}

/// A connection completed its handshake on a listener: reported for the process that listened
/// (the handshake ends in softirq context, before any `accept()`).
#[inline(always)]
fn on_accept(sk: *const u8) {
    let Some(key) = listener_key(sk) else {
        return;
    };
    // SAFETY: the value is copied out.
    let Some(header) = (unsafe { LISTENERS.get(&key) }).copied() else {
        return;
    };
    let Some(peer) = sock_endpoint(sk, true) else {
        return;
    };
    emit_socket(&header, EventKind::Accept, &peer, key.port, 0);
}

/// A TCP connect's handshake ended: established, or closed with the socket's error.
#[inline(always)]
fn on_connect_outcome(sk: *const u8, new_state: i32) {
    if new_state != TCP_ESTABLISHED && new_state != TCP_CLOSE {
        return;
    }
    // SAFETY: `sk` is the tracepoint's `struct sock *` argument, which the helper accepts.
    let cookie = unsafe { generated::bpf_get_socket_cookie(sk as *mut _) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_CONNECTS.get(&cookie) }).copied() else {
        return;
    };
    let _ = PENDING_CONNECTS.remove(&cookie);
    let ret = if new_state == TCP_ESTABLISHED {
        0
    } else {
        match read::<i32>(sk, off!(sock_sk_err)) {
            Some(err) if err > 0 => -err,
            // Closed before any answer (the caller gave up): the outcome is unknown.
            _ => -EINPROGRESS,
        }
    };
    emit_socket(
        &pending.header,
        EventKind::Connect,
        &pending.endpoint,
        0,
        ret,
    );
}

/// `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`: runs on TCP state
/// changes only, a few per connection, never on other syscalls.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn net_sock_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if new == TCP_LISTEN {
        on_listen(sk);
    } else if old == TCP_LISTEN && new == TCP_CLOSE {
        // Only LISTEN -> CLOSE ends a listener: a new connection's socket is a clone of its
        // listener and shows up as LISTEN -> SYN_RECV.
        if let Some(key) = listener_key(sk) {
            let _ = LISTENERS.remove(&key);
        }
    } else if old == TCP_SYN_SENT {
        on_connect_outcome(sk, new);
    } else if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        on_accept(sk);
    }
    0
}
