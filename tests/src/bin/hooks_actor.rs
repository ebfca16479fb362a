//! Triggers for the network and io_uring hooks (the kernel tests filter on this process's pid):
//! `hooks_actor COMMAND ARGS...`. Exits non-zero when the action fails.
//!
//! - `sendto ADDR COUNT`: COUNT UDP datagrams to ADDR from an unconnected socket.
//! - `tfo ADDR`: a TCP Fast Open connect (`sendto` with `MSG_FASTOPEN`, no `connect`).
//! - `connect ADDR`: a blocking TCP connect that must succeed.
//! - `connect-udp ADDR`: a UDP connect that must succeed.
//! - `uring-open PATH`: opens PATH read-only through an io_uring `IORING_OP_OPENAT`.
//! - `uring-connect ADDR`: a TCP connect through an io_uring `IORING_OP_CONNECT`.

use std::ffi::CString;
use std::net::{SocketAddr, TcpStream, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().expect("usage: hooks_actor COMMAND ARGS");
    let addr = || -> SocketAddr { rest[0].parse().expect("address") };
    match cmd.as_str() {
        "sendto" => {
            let to = addr();
            let count: u64 = rest[1].parse().expect("count");
            let sock =
                UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
            for _ in 0..count {
                sock.send_to(b"datagram", to).expect("sendto");
            }
        }
        "tfo" => tfo(addr()),
        "connect" => {
            TcpStream::connect(addr()).expect("tcp connect");
        }
        "connect-udp" => {
            let to = addr();
            let sock =
                UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
            sock.connect(to).expect("udp connect");
        }
        "uring-open" => {
            let path = CString::new(rest[0].as_str()).expect("path");
            let mut ring = uring::Ring::new();
            let fd = ring.submit_one(|sqe| {
                sqe.opcode = uring::IORING_OP_OPENAT;
                sqe.fd = libc::AT_FDCWD;
                sqe.addr = path.as_ptr() as u64;
                sqe.op_flags = libc::O_RDONLY as u32;
            });
            assert!(fd >= 0, "io_uring openat failed: {fd}");
        }
        "uring-connect" => {
            let to = addr();
            let SocketAddr::V4(v4) = to else {
                panic!("uring-connect takes an IPv4 address")
            };
            // SAFETY: plain socket(2) call, result checked.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0, "socket failed");
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let mut ring = uring::Ring::new();
            let res = ring.submit_one(|sqe| {
                sqe.opcode = uring::IORING_OP_CONNECT;
                sqe.fd = fd;
                sqe.addr = &sin as *const _ as u64;
                sqe.off = size_of::<libc::sockaddr_in>() as u64;
            });
            assert_eq!(res, 0, "io_uring connect failed");
        }
        other => panic!("unknown command {other}"),
    }
}

/// `sendto(MSG_FASTOPEN)` on a fresh TCP socket: connects and sends in one call.
fn tfo(to: SocketAddr) {
    let SocketAddr::V4(v4) = to else {
        panic!("tfo takes an IPv4 address")
    };
    // SAFETY: plain socket(2)/sendto(2) calls with a valid sockaddr_in; results checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket failed");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let data = b"hello";
        let n = libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            &sin as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as u32,
        );
        assert!(
            n >= 0,
            "sendto(MSG_FASTOPEN) failed: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}

/// The smallest io_uring: one submission, wait for its completion. Raw syscalls, so the test
/// needs no io_uring library.
mod uring {
    use std::ptr;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub const IORING_OP_CONNECT: u8 = 16;
    pub const IORING_OP_OPENAT: u8 = 18;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;
    const IORING_ENTER_GETEVENTS: u32 = 1;

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    /// `struct io_uring_params`.
    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }
    const _: () = assert!(size_of::<Params>() == 120);

    /// `struct io_uring_sqe` (64 bytes), the members these requests use.
    #[repr(C)]
    pub struct Sqe {
        pub opcode: u8,
        pub flags: u8,
        pub ioprio: u16,
        pub fd: i32,
        pub off: u64,
        pub addr: u64,
        pub len: u32,
        pub op_flags: u32,
        pub user_data: u64,
        pub rest: [u64; 3],
    }
    const _: () = assert!(size_of::<Sqe>() == 64);

    pub struct Ring {
        fd: i32,
        sq: *mut u8,
        cq: *mut u8,
        sqes: *mut Sqe,
        p: Params,
    }

    fn map(fd: i32, len: usize, offset: i64) -> *mut u8 {
        // SAFETY: a shared mapping of the ring fd, at the offsets the kernel defines.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap io_uring");
        p.cast()
    }

    impl Ring {
        pub fn new() -> Ring {
            let mut p = Params::default();
            // SAFETY: io_uring_setup(entries, params), result checked.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, &mut p) } as i32;
            assert!(
                fd >= 0,
                "io_uring_setup: {}",
                std::io::Error::last_os_error()
            );
            let sq = map(
                fd,
                (p.sq_off.array + p.sq_entries * 4) as usize,
                IORING_OFF_SQ_RING,
            );
            let cq = map(
                fd,
                (p.cq_off.cqes + p.cq_entries * 16) as usize,
                IORING_OFF_CQ_RING,
            );
            let sqes = map(fd, p.sq_entries as usize * 64, IORING_OFF_SQES).cast();
            Ring {
                fd,
                sq,
                cq,
                sqes,
                p,
            }
        }

        fn at(base: *mut u8, offset: u32) -> &'static AtomicU32 {
            // SAFETY: ring fields are u32s shared with the kernel, inside the mapping.
            unsafe { AtomicU32::from_ptr(base.add(offset as usize).cast()) }
        }

        /// Submits one request built by `fill` and returns its completion's result.
        pub fn submit_one(&mut self, fill: impl FnOnce(&mut Sqe)) -> i32 {
            let tail = Self::at(self.sq, self.p.sq_off.tail).load(Ordering::Acquire);
            let mask = Self::at(self.sq, self.p.sq_off.ring_mask).load(Ordering::Relaxed);
            let index = tail & mask;
            // SAFETY: index < sq_entries; the slot is ours until the tail moves past it.
            let sqe = unsafe { &mut *self.sqes.add(index as usize) };
            // SAFETY: zeroing a plain struct.
            *sqe = unsafe { std::mem::zeroed() };
            fill(sqe);
            Self::at(self.sq, self.p.sq_off.array + index * 4).store(index, Ordering::Relaxed);
            Self::at(self.sq, self.p.sq_off.tail).store(tail.wrapping_add(1), Ordering::Release);
            // SAFETY: io_uring_enter(fd, to_submit, min_complete, flags, NULL, 0).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd,
                    1,
                    1,
                    IORING_ENTER_GETEVENTS,
                    ptr::null::<u8>(),
                    0,
                )
            };
            assert!(
                n >= 0,
                "io_uring_enter: {}",
                std::io::Error::last_os_error()
            );
            let head = Self::at(self.cq, self.p.cq_off.head).load(Ordering::Acquire);
            let cq_mask = Self::at(self.cq, self.p.cq_off.ring_mask).load(Ordering::Relaxed);
            let cqe = self.p.cq_off.cqes + (head & cq_mask) * 16;
            // `struct io_uring_cqe`: user_data u64, res i32, flags u32.
            let res = Self::at(self.cq, cqe + 8).load(Ordering::Relaxed) as i32;
            Self::at(self.cq, self.p.cq_off.head).store(head.wrapping_add(1), Ordering::Release);
            res
        }
    }
}
