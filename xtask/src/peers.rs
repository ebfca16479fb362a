//! The peers the sensor is measured against, doing the equivalent capture: auditd with rules
//! for execve, connect and the open family, and bpftrace printing the same syscalls with their
//! arguments. Both come from Debian's packages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Auditd,
    Bpftrace,
    /// One empty bpftrace program on a syscall tracepoint nobody calls (`getpriority`): what
    /// merely enabling syscall tracepoints costs here (every syscall of every task then takes
    /// the kernel's slow path), the floor for any sensor that uses one.
    HookFloor,
}

/// The syscalls the sensor's exec/open/connect capture corresponds to.
const SYSCALLS: &[&str] = &[
    "execve", "execveat", "open", "openat", "openat2", "creat", "connect",
];

const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_execve { printf("exec %d %s %s\n", pid, comm, str(args->filename)); }
tracepoint:syscalls:sys_enter_openat { printf("open %d %s %s %d\n", pid, comm, str(args->filename), args->flags); }
tracepoint:syscalls:sys_enter_open { printf("open %d %s %s %d\n", pid, comm, str(args->filename), args->flags); }
tracepoint:syscalls:sys_enter_connect { printf("connect %d %s %d\n", pid, comm, args->fd); }
"#;

const HOOK_FLOOR_SCRIPT: &str = "tracepoint:syscalls:sys_enter_getpriority { }";

/// Installs the peers from Debian's packages when they are missing.
pub fn install() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("auditctl", "auditd"), ("bpftrace", "bpftrace")]
        .into_iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("[bench] installing peers: {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!(
            "apt-get install {} failed (run `apt-get update` first?)",
            missing.join(" ")
        );
    }
    Ok(())
}

/// A running peer.
pub struct Peer {
    kind: Kind,
    child: Child,
}

impl Peer {
    pub fn start(kind: Kind) -> anyhow::Result<Peer> {
        match kind {
            Kind::Auditd => {
                let _ = Command::new("auditctl")
                    .arg("-D")
                    .stdout(Stdio::null())
                    .status();
                let child = Command::new("auditd")
                    .arg("-n")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting auditd")?;
                let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
                for s in SYSCALLS {
                    rule.extend(["-S", s]);
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                // auditd takes the audit socket a moment after it starts.
                while !Command::new("auditctl")
                    .args(&rule)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success()
                {
                    if Instant::now() > deadline {
                        bail!("auditctl could not add the rules");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(Peer { kind, child })
            }
            Kind::Bpftrace | Kind::HookFloor => {
                let script = if kind == Kind::Bpftrace {
                    BPFTRACE_SCRIPT
                } else {
                    HOOK_FLOOR_SCRIPT
                };
                let mut child = Command::new("bpftrace")
                    .args(["-e", script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting bpftrace")?;
                let mut out = BufReader::new(child.stdout.take().context("bpftrace stdout")?);
                let mut line = String::new();
                // bpftrace says "Attaching N probes..." once its probes are in place.
                while out.read_line(&mut line)? > 0 && !line.contains("Attaching") {
                    line.clear();
                }
                // Read (and drop) its output like a consumer would.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                        sink.clear();
                    }
                });
                Ok(Peer { kind, child })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        if self.kind == Kind::Auditd {
            let _ = Command::new("auditctl")
                .arg("-D")
                .stdout(Stdio::null())
                .status();
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}
