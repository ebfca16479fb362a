//! Loopback listeners the jobs talk to: the known endpoint every run reports to, and the fresh
//! per-attack ones (HTTP server handing out an executable, the far end of a reverse shell).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::attacks::Listener;

/// Starts a listener of `kind` on a fresh loopback port, served on its own thread for as long as
/// the process lives; returns the port.
pub fn start(kind: Listener) -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    // A real executable to download; any small ELF will do.
    let body = std::fs::read("/bin/true").unwrap_or_default();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            match kind {
                Listener::Http => {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body);
                }
                Listener::Shell => {
                    let _ = s.write_all(b"id\nuname -a\nexit\n");
                    // Read what the shell sends back until it hangs up.
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
            }
        }
    });
    Ok(port)
}
