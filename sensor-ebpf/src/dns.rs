//! DNS messages, read from the packets of sockets that named port 53 in a connect or send
//! (`net.rs` remembers them by socket cookie, with the header of the process that did it).
//! Queries on `cgroup_skb/egress`, responses on `cgroup_skb/ingress`: both run per packet, and
//! stop after reading two header bytes, straight from the packet, for anything that is not UDP.
//!
//! Packet programs run where no process is current (softirq for ingress), so they use no
//! `bpf_get_current_*` helper: the attribution comes from the socket's entry.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, generated},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use sensor_common::{Counter, DNS_DATA, DNS_QUERY, DNS_RESPONSE, DnsEvent, SOCK_DGRAM};

use crate::{
    kernel::{count_for_cgroup_id, count_global},
    maps::{DNS_SOCKETS, EVENTS},
    net::{ALLOW, DNS_PORT},
};

const IPPROTO_UDP: u8 = 17;
const UDP_HEADER: usize = 8;

/// Where the parts of an IP packet are, for the direction's remote side.
struct Layout {
    family: u16,
    /// Offset of the UDP header.
    l4: usize,
    /// Offset and length of the remote address (source for a response, destination for a
    /// query).
    addr: usize,
    addr_len: usize,
}

/// Bytes the version and protocol checks read: the IPv4 header up to its protocol (byte 9),
/// which covers the IPv6 next header (byte 6).
const FIRST_BYTES: usize = 10;

/// The first [`FIRST_BYTES`] of the packet: straight from its linear part when that holds them
/// (no helper call, and this runs on every packet of every socket), else through the helper,
/// which also reads the paged part.
#[inline(always)]
fn first_bytes(ctx: &SkBuffContext) -> Option<[u8; FIRST_BYTES]> {
    // SAFETY: two fields of the context, which the verifier turns into packet pointers.
    let (data, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    if data + FIRST_BYTES <= end {
        // SAFETY: inside the linear part (checked above, and again by the verifier).
        Some(unsafe { core::ptr::read_unaligned(data as *const [u8; FIRST_BYTES]) })
    } else {
        ctx.load::<[u8; FIRST_BYTES]>(0).ok()
    }
}

/// The packet's layout when it is UDP over IPv4 or IPv6 (without extension headers).
#[inline(always)]
fn udp_layout(ctx: &SkBuffContext, response: bool) -> Option<Layout> {
    let head = first_bytes(ctx)?;
    let first = head[0];
    match first >> 4 {
        4 => {
            if head[9] != IPPROTO_UDP {
                return None;
            }
            Some(Layout {
                family: 2,
                l4: ((first & 0x0f) as usize) * 4,
                addr: if response { 12 } else { 16 },
                addr_len: 4,
            })
        }
        6 => {
            if head[6] != IPPROTO_UDP {
                return None;
            }
            Some(Layout {
                family: 10,
                l4: 40,
                addr: if response { 8 } else { 24 },
                addr_len: 16,
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn on_packet(ctx: &SkBuffContext, response: bool) {
    let Some(layout) = udp_layout(ctx, response) else {
        return;
    };
    // The server's port: the source of a response, the destination of a query.
    let port_at = layout.l4 + if response { 0 } else { 2 };
    let Ok(port) = ctx.load::<u16>(port_at) else {
        return;
    };
    if u16::from_be(port) != DNS_PORT {
        return;
    }
    // SAFETY: the skb context is what the helper takes.
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.skb.skb as *mut c_void) };
    // SAFETY: the value is copied out.
    let Some(socket) = (unsafe { DNS_SOCKETS.get(&cookie) }).copied() else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count_global(Counter::LostDns);
        count_for_cgroup_id(socket.header.cgroup_id, false);
        return;
    };
    // SAFETY: the reservation is sized for DnsEvent; the reader trusts `payload[..len]` only.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = socket.header;
    // SAFETY: helper without arguments.
    ev.header.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.family = layout.family;
    ev.port = DNS_PORT;
    ev.sock_type = SOCK_DGRAM;
    ev.direction = if response { DNS_RESPONSE } else { DNS_QUERY };
    ev.addr = [0; 16];
    ev._pad = 0;
    ev.len = 0;
    let addr_ok = if layout.addr_len == 4 {
        ctx.load::<[u8; 4]>(layout.addr)
            .map(|a| ev.addr[..4].copy_from_slice(&a))
            .is_ok()
    } else {
        ctx.load::<[u8; 16]>(layout.addr)
            .map(|a| ev.addr = a)
            .is_ok()
    };
    if !addr_ok {
        ev.addr = socket.server.addr;
    }
    let start = layout.l4 + UDP_HEADER;
    let total = ctx.len() as usize;
    if total > start {
        let n = total - start;
        let n = if n > DNS_DATA { DNS_DATA } else { n };
        // The verifier needs a provable bound: 1..=DNS_DATA.
        let n = ((n - 1) & (DNS_DATA - 1)) + 1;
        // SAFETY: payload has DNS_DATA bytes and n <= DNS_DATA; the helper checks the packet.
        let ret = unsafe {
            generated::bpf_skb_load_bytes(
                ctx.skb.skb as *const c_void,
                start as u32,
                ev.payload.as_mut_ptr() as *mut c_void,
                n as u32,
            )
        };
        if ret == 0 {
            ev.len = n as u32;
        } else {
            count_global(Counter::ReadError);
        }
    }
    entry.submit(crate::kernel::submit_flags());
}

#[cgroup_skb(egress)]
pub fn dns_egress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, false);
    ALLOW
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, true);
    ALLOW
}
