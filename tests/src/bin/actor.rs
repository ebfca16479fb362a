//! A process that does one thing the sensor must see, so tests can trigger events from a pid
//! they know (the sensor ignores its own process, which in the kernel tests is the test itself).
//! `actor COMMAND ARGS...`; see `main` for the commands. Exits non-zero when the action fails.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in argument")
}

/// Panics with the OS error when a libc call returned -1.
fn check(ret: i64, what: &str) -> i64 {
    assert!(
        ret >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
    ret
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().expect("usage: actor COMMAND ARGS");
    let a = |i: usize| rest[i].as_str();
    // SAFETY (for every libc call below): arguments are valid C strings or plain integers, and
    // results are checked.
    unsafe {
        match cmd.as_str() {
            "open-create" => {
                let fd = check(
                    libc::open(c(a(0)).as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644) as i64,
                    "open",
                );
                libc::close(fd as i32);
            }
            "creat" => {
                libc::close(check(libc::creat(c(a(0)).as_ptr(), 0o644) as i64, "creat") as i32);
            }
            "openat2-create" => {
                // struct open_how { u64 flags, mode, resolve } (libc's is non-exhaustive).
                let how: [u64; 3] = [
                    (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64,
                    0o644,
                    0,
                ];
                let fd = check(
                    libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        c(a(0)).as_ptr(),
                        how.as_ptr(),
                        std::mem::size_of_val(&how),
                    ),
                    "openat2",
                );
                libc::close(fd as i32);
            }
            "read" => {
                for path in rest {
                    std::fs::read(path).expect("read");
                }
            }
            "connect" => {
                let _ = std::net::TcpStream::connect(a(0));
            }
            "connect-udp" => {
                let addr: std::net::SocketAddr = a(0).parse().expect("address");
                let sock = std::net::UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })
                .unwrap();
                sock.connect(addr).expect("udp connect");
            }
            "listen" => {
                let l = std::net::TcpListener::bind(a(0)).expect("bind+listen");
                println!("{}", l.local_addr().unwrap().port());
            }
            "accept-one" => {
                // Listen, tell the port on stdout, accept one connection.
                let l = std::net::TcpListener::bind(a(0)).expect("bind+listen");
                println!("{}", l.local_addr().unwrap().port());
                use std::io::Write;
                std::io::stdout().flush().unwrap();
                l.accept().expect("accept");
            }
            "dns" => {
                // A DNS query for a(1) (type A) to the server a(0), and its response.
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(a(0)).unwrap();
                sock.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                    .unwrap();
                sock.send(&dns_query(a(1))).expect("send");
                let mut buf = [0u8; 512];
                sock.recv(&mut buf).expect("dns response");
            }
            "rename" => {
                check(
                    libc::rename(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64,
                    "rename",
                );
            }
            "unlink" => {
                check(libc::unlink(c(a(0)).as_ptr()) as i64, "unlink");
            }
            "link" => {
                check(
                    libc::link(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64,
                    "link",
                );
            }
            "symlink" => {
                check(
                    libc::symlink(c(a(0)).as_ptr(), c(a(1)).as_ptr()) as i64,
                    "symlink",
                );
            }
            "chmod" => {
                check(
                    libc::chmod(c(a(0)).as_ptr(), u32::from_str_radix(a(1), 8).unwrap()) as i64,
                    "chmod",
                );
            }
            "chown" => {
                check(
                    libc::chown(
                        c(a(0)).as_ptr(),
                        a(1).parse::<i32>().unwrap() as u32,
                        a(2).parse::<i32>().unwrap() as u32,
                    ) as i64,
                    "chown",
                );
            }
            "truncate" => {
                check(
                    libc::truncate(c(a(0)).as_ptr(), a(1).parse().unwrap()) as i64,
                    "truncate",
                );
            }
            "mkdir" => {
                check(libc::mkdir(c(a(0)).as_ptr(), 0o755) as i64, "mkdir");
            }
            "seteuid-and-back" => {
                // As root: become `a(0)` effectively, then root again (the saved uid allows it).
                let uid: u32 = a(0).parse().unwrap();
                check(libc::setresuid(u32::MAX, uid, u32::MAX) as i64, "setresuid");
                check(
                    libc::setresuid(u32::MAX, 0, u32::MAX) as i64,
                    "setresuid back",
                );
            }
            "capset" => {
                let mut header = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
                let mut data = [0u32; 6];
                check(
                    libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()),
                    "capget",
                );
                check(
                    libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()),
                    "capset",
                );
            }
            "ptrace" => {
                let pid: i32 = a(0).parse().unwrap();
                check(
                    libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0),
                    "ptrace attach",
                );
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
            }
            "vm-read" => {
                // Read 8 bytes of another process's memory at the start of its first mapping.
                let pid: i32 = a(0).parse().unwrap();
                let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
                let start = usize::from_str_radix(maps.split('-').next().unwrap(), 16).unwrap();
                let mut buf = [0u8; 8];
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                let remote = libc::iovec {
                    iov_base: start as *mut _,
                    iov_len: 8,
                };
                check(
                    libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) as i64,
                    "process_vm_readv",
                );
            }
            "bpf-load" => {
                // The smallest socket filter: r0 = 0; exit.
                let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
                let license = c("GPL");
                let mut attr = [0u8; 128];
                let put = |attr: &mut [u8; 128], at: usize, v: &[u8]| {
                    attr[at..at + v.len()].copy_from_slice(v)
                };
                put(&mut attr, 0, &1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
                put(&mut attr, 4, &2u32.to_ne_bytes()); // insn_cnt
                put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
                put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
                let fd = check(
                    libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()),
                    "bpf(BPF_PROG_LOAD)",
                );
                libc::close(fd as i32);
            }
            "mount-tmpfs" => {
                check(
                    libc::mount(
                        c("sensor-test").as_ptr(),
                        c(a(0)).as_ptr(),
                        c("tmpfs").as_ptr(),
                        0,
                        std::ptr::null(),
                    ) as i64,
                    "mount",
                );
                check(libc::umount2(c(a(0)).as_ptr(), 0) as i64, "umount");
            }
            "unshare-uts" => {
                check(libc::unshare(libc::CLONE_NEWUTS) as i64, "unshare");
            }
            "setns-own-uts" => {
                let f = std::fs::File::open("/proc/self/ns/uts").unwrap();
                check(
                    libc::setns(f.as_raw_fd(), libc::CLONE_NEWUTS) as i64,
                    "setns",
                );
            }
            "memfd-exec" => {
                // Copy an executable into a memfd and run it from there: fileless execution.
                let bytes = std::fs::read(a(0)).unwrap();
                let fd = check(
                    libc::memfd_create(c("payload").as_ptr(), 0) as i64,
                    "memfd_create",
                ) as i32;
                check(
                    libc::write(fd, bytes.as_ptr().cast(), bytes.len()) as isize as i64,
                    "write",
                );
                let name = c("payload");
                let argv = [name.as_ptr(), std::ptr::null()];
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c("").as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                panic!("execveat failed: {}", std::io::Error::last_os_error());
            }
            "exec" => {
                let err = std::process::Command::new(a(0))
                    .arg0(a(0))
                    .args(&rest[1..])
                    .exec();
                panic!("exec failed: {err}");
            }
            "exec-clean-env" => {
                let err = std::process::Command::new(a(0))
                    .env_clear()
                    .args(&rest[1..])
                    .exec();
                panic!("exec failed: {err}");
            }
            other => panic!("unknown actor command {other}"),
        }
    }
}

/// A DNS query for `name`, type A, id 0x5353.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x53, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
