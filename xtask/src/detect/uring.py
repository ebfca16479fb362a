"""io_uring from Python through ctypes, for the evasion suite: what an attacker uses to open, read
and connect without the open/connect system calls (the kernel does them for the ring).

    uring.py nop              one no-op request (a first use of io_uring)
    uring.py read PATH        IORING_OP_OPENAT, IORING_OP_READ, IORING_OP_CLOSE of PATH
    uring.py connect PORT     IORING_OP_CONNECT of a TCP socket to 127.0.0.1:PORT, then a send

Layouts: include/uapi/linux/io_uring.h (struct io_uring_params, io_uring_sqe, io_uring_cqe).
"""
import ctypes
import mmap
import os
import socket
import struct
import sys

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
IORING_OFF_SQES = 0x10000000
IORING_ENTER_GETEVENTS = 1
OP_NOP, OP_CONNECT, OP_OPENAT, OP_CLOSE, OP_READ, OP_SEND = 0, 16, 18, 19, 22, 26
AT_FDCWD = -100

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(result, what):
    if result < 0:
        err = ctypes.get_errno() if result == -1 else -result
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return result


class Ring:
    def __init__(self, entries=4):
        params = ctypes.create_string_buffer(120)
        self.fd = check(
            libc.syscall(ctypes.c_long(SYS_IO_URING_SETUP), ctypes.c_long(entries), params),
            "io_uring_setup",
        )
        sq_entries, cq_entries = struct.unpack_from("<II", params.raw, 0)
        # sq_off: head tail ring_mask ring_entries flags dropped array resv1 user_addr
        self.sq = struct.unpack_from("<8IQ", params.raw, 40)
        # cq_off: head tail ring_mask ring_entries overflow cqes flags resv1 user_addr
        self.cq = struct.unpack_from("<8IQ", params.raw, 80)
        size = max(self.sq[6] + sq_entries * 4, self.cq[5] + cq_entries * 16)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self.ring = mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot, offset=0)
        self.sqes = mmap.mmap(self.fd, sq_entries * 64, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQES)

    def u32(self, off):
        return struct.unpack_from("<I", self.ring, off)[0]

    def run(self, op, fd=0, addr=0, length=0, off=0, op_flags=0):
        """Submits one request and waits for its completion; returns its result."""
        tail, mask = self.u32(self.sq[1]), self.u32(self.sq[2])
        idx = tail & mask
        sqe = struct.pack("<BBHiQQIIQHHiQQ", op, 0, 0, fd, off, addr, length, op_flags, 7, 0, 0, 0, 0, 0)
        self.sqes[idx * 64:(idx + 1) * 64] = sqe
        struct.pack_into("<I", self.ring, self.sq[6] + idx * 4, idx)
        struct.pack_into("<I", self.ring, self.sq[1], tail + 1)
        check(
            libc.syscall(
                ctypes.c_long(SYS_IO_URING_ENTER), ctypes.c_long(self.fd), ctypes.c_long(1),
                ctypes.c_long(1), ctypes.c_long(IORING_ENTER_GETEVENTS), None, ctypes.c_long(0),
            ),
            "io_uring_enter",
        )
        head, cmask = self.u32(self.cq[0]), self.u32(self.cq[2])
        _, res, _ = struct.unpack_from("<QiI", self.ring, self.cq[5] + (head & cmask) * 16)
        struct.pack_into("<I", self.ring, self.cq[0], head + 1)
        return res


def main():
    ring = Ring()
    cmd = sys.argv[1]
    if cmd == "nop":
        check(ring.run(OP_NOP), "nop")
    elif cmd == "read":
        path = ctypes.create_string_buffer(sys.argv[2].encode())
        fd = check(ring.run(OP_OPENAT, fd=AT_FDCWD, addr=ctypes.addressof(path), op_flags=os.O_RDONLY), "openat")
        buf = ctypes.create_string_buffer(4096)
        check(ring.run(OP_READ, fd=fd, addr=ctypes.addressof(buf), length=4096), "read")
        check(ring.run(OP_CLOSE, fd=fd), "close")
    elif cmd == "connect":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sa = ctypes.create_string_buffer(
            struct.pack("<H", socket.AF_INET) + struct.pack(">H", int(sys.argv[2])) + socket.inet_aton("127.0.0.1") + bytes(8), 16
        )
        check(ring.run(OP_CONNECT, fd=s.fileno(), addr=ctypes.addressof(sa), off=16), "connect")
        data = ctypes.create_string_buffer(b"stolen\n")
        check(ring.run(OP_SEND, fd=s.fileno(), addr=ctypes.addressof(data), length=7), "send")
        s.close()
    else:
        sys.exit("usage: uring.py nop | read PATH | connect PORT")


main()
