//! The built `collector` binary as a server (`collector serve` on ephemeral ports, its web page
//! on a free port) and as a client (`collector incidents`, `report`...), for tests that go
//! through the real command line, real sockets and a real database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_collector");

/// A `collector serve` child, killed if the test ends without stopping it.
pub struct Serve {
    child: Child,
    /// The gRPC URL.
    pub url: String,
    /// The web page's address (`host:port`).
    pub web: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl Serve {
    /// `collector serve` over `db` (a SQLite path or a PostgreSQL URL); returns once it logged
    /// that it serves (its JSON log names the gRPC address it bound).
    pub fn start(db: &str) -> Serve {
        let web = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .args(["--config", "/dev/null", "--log-format", "json", "serve"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                &web,
                "--db",
                db,
            ])
            // The test's one agent stands for a fleet: its shared baseline is served without
            // waiting for the default quorum of three agents.
            .env("COLLECTOR_BASELINE_QUORUM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn collector serve");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            url: String::new(),
            web,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(remaining)
                .expect("collector did not log that it serves");
            let log: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if log["fields"]["message"] == "collector serving" {
                let listen = log["fields"]["listen"].as_str().expect("listen field");
                serve.url = format!("http://{listen}");
                return serve;
            }
        }
    }

    /// `GET path` on the web endpoint; the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.web).expect("connect to the web endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.web
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        (status, body.to_owned())
    }
}

/// Runs the binary with `args` to completion (with a deadline); panics when it fails.
pub fn collector(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "collector {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs the binary with `args` to completion (with a deadline).
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["--config", "/dev/null"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector");
    // Read both pipes while waiting, so a long output never blocks the child.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("collector {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
