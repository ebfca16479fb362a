//! Syscall-heavy workloads for the benchmarks: each runs a fixed number of operations as fast as
//! it can and prints one JSON line `{"workload", "ops", "seconds", "ops_per_sec"}`.
//!
//! loadgen open N         open+close of one file, N times (the kernel filter's best case)
//! loadgen open-many N    open+close of N different files (every open is new)
//! loadgen forkexec N     spawn /bin/true and wait, N times
//! loadgen connect N      TCP connect to a loopback listener, accept and close, N times
//! loadgen read N         read 64 bytes of /dev/zero, N times (a syscall the sensor ignores)
//! loadgen getppid N      getppid, N times (the cheapest syscall the sensor ignores)
//! loadgen open-rate R S  open+close of one file at R per second (0: as fast as possible) for S
//!                        seconds, paced in 1 ms slices

use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("");
    let mut n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("usage: loadgen WORKLOAD N");
    let dir = tempfile::tempdir().expect("temp dir");
    let start;
    match workload {
        "open-rate" => {
            let secs: f64 = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .expect("usage: loadgen open-rate RATE SECONDS");
            let path = dir.path().join("f");
            std::fs::write(&path, "x").unwrap();
            n = open_paced(&path, n, secs);
            // Report the achieved rate over the requested duration.
            println!(
                "{{\"workload\":\"{workload}\",\"ops\":{n},\"seconds\":{secs:.6},\"ops_per_sec\":{:.1}}}",
                n as f64 / secs
            );
            return;
        }
        "open" => {
            let path = dir.path().join("f");
            std::fs::write(&path, "x").unwrap();
            start = Instant::now();
            for _ in 0..n {
                drop(std::fs::File::open(&path).unwrap());
            }
        }
        "open-many" => {
            let paths: Vec<_> = (0..n).map(|i| dir.path().join(format!("f{i}"))).collect();
            for p in &paths {
                std::fs::write(p, "x").unwrap();
            }
            start = Instant::now();
            for p in &paths {
                drop(std::fs::File::open(p).unwrap());
            }
        }
        "forkexec" => {
            start = Instant::now();
            for _ in 0..n {
                std::process::Command::new("/bin/true").status().unwrap();
            }
        }
        "connect" => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            start = Instant::now();
            for _ in 0..n {
                // Accepted in turn, so the listen queue never fills: a full queue drops SYNs,
                // and the connect that retries one waits a second (the stalls earlier runs of
                // this loop showed, with or without a sensor).
                let stream = TcpStream::connect(addr).unwrap();
                let (accepted, _) = listener.accept().unwrap();
                reset_on_close(&stream);
                drop(stream);
                drop(accepted);
            }
        }
        "read" => {
            use std::io::Read;
            let mut zero = std::fs::File::open("/dev/zero").unwrap();
            let mut buf = [0u8; 64];
            start = Instant::now();
            for _ in 0..n {
                // One read(2) per call: /dev/zero always fills the whole buffer.
                let got = zero.read(&mut buf).unwrap();
                std::hint::black_box(got);
            }
        }
        "getppid" => {
            start = Instant::now();
            for _ in 0..n {
                // SAFETY: getppid(2) has no arguments and cannot fail.
                std::hint::black_box(unsafe { libc::getppid() });
            }
        }
        other => panic!("unknown workload {other:?}"),
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"workload\":\"{workload}\",\"ops\":{n},\"seconds\":{secs:.6},\"ops_per_sec\":{:.1}}}",
        n as f64 / secs
    );
}

/// Opens and closes `path` at `rate` per second (0: unpaced) for `secs`; returns how many.
fn open_paced(path: &std::path::Path, rate: u64, secs: f64) -> u64 {
    let start = Instant::now();
    let slice = std::time::Duration::from_millis(1);
    let per_slice = rate.div_ceil(1000).max(1);
    let mut done = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..if rate == 0 { 1000 } else { per_slice } {
            drop(std::fs::File::open(path).unwrap());
            done += 1;
        }
        if rate > 0 {
            // Sleep until the schedule says the next slice is due.
            let due = slice * (done / per_slice) as u32;
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    done
}

/// Closes with a reset instead of a FIN: no TIME_WAIT, so tens of thousands of connects in a row
/// do not run out of ephemeral ports (which would stall on 1 s SYN retries).
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
