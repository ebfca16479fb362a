//! A process that does one thing the sensor must see, so tests can trigger events from a pid
//! they know (the sensor ignores its own process, which in the kernel tests is the test itself).
//!
//! actor open-create PATH    open(PATH, O_WRONLY|O_CREAT) and close it
//! actor read PATH           open(PATH, O_RDONLY) and close it
//! actor connect ADDR:PORT   TCP connect (IPv4 or IPv6), then close
//! actor connect-udp ADDR:PORT   UDP connect, then close
//! actor exec PATH ARGS...   execve PATH with ARGS (argv[0] = PATH)

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().expect("usage: actor COMMAND ARGS");
    match cmd.as_str() {
        "open-create" => {
            let path = CString::new(std::path::Path::new(&rest[0]).as_os_str().as_bytes()).unwrap();
            // SAFETY: valid C string; the fd is closed right after.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644) };
            assert!(fd >= 0, "open failed: {}", std::io::Error::last_os_error());
            // SAFETY: closing the fd we own.
            unsafe { libc::close(fd) };
        }
        "read" => {
            std::fs::File::open(&rest[0]).expect("open for read");
        }
        "connect" => {
            let _ = std::net::TcpStream::connect(&rest[0]);
        }
        "connect-udp" => {
            let addr: std::net::SocketAddr = rest[0].parse().expect("address");
            let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = std::net::UdpSocket::bind(bind).expect("bind");
            sock.connect(addr).expect("udp connect");
        }
        "exec" => {
            let err = exec(&rest[0], rest);
            panic!("exec failed: {err}");
        }
        other => panic!("unknown actor command {other}"),
    }
}

fn exec(path: &str, argv: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(path).arg0(path).args(&argv[1..]).exec()
}
