//! The peers the sensor is measured against, doing the equivalent capture: auditd with rules
//! for the syscalls the sensor reports (exec, open, file changes, privilege operations, connect,
//! bind, listen, accept), and bpftrace printing the same syscalls. Both come from Debian's packages.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bounded;

/// How long a peer may take to put its probes in place, and to exit once told to.
const ATTACH_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(30);

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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Auditd => "auditd",
            Kind::Bpftrace => "bpftrace",
            Kind::HookFloor => "bpftrace (floor)",
        }
    }
}

/// The syscalls whose capture corresponds to the sensor's (exec, open, file changes, privilege
/// operations, network), by their tracepoint names; the peers must pay for the same coverage.
/// Left out: `init_module`/`finit_module` (no tracepoint on a kernel without modules), and what
/// the sensor takes off the syscall path (UDP sends, DNS answers), which neither peer can
/// capture without tracing every send and receive.
const SYSCALLS: &[&str] = &[
    // exec and open
    "execve",
    "execveat",
    "open",
    "openat",
    "openat2",
    "creat",
    // file changes
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmodat",
    "fchmod",
    "chown",
    "lchown",
    "fchownat",
    "fchown",
    "truncate",
    "ftruncate",
    "mkdir",
    "mkdirat",
    // privilege
    "setuid",
    "setreuid",
    "setresuid",
    "setgid",
    "setregid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "capset",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "mount",
    "umount",
    "unshare",
    "setns",
    // network
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
];

/// auditd's name of a syscall (its x86_64 table says `umount2` where the tracepoint says
/// `umount`).
fn audit_name(syscall: &str) -> &str {
    if syscall == "umount" {
        "umount2"
    } else {
        syscall
    }
}

/// bpftrace printing each captured syscall with its process, and the file name where there is
/// one (exec, open), as a consumer of the events would.
fn bpftrace_script() -> String {
    // `creat` names its argument `pathname`, so it prints like the others.
    let with_file = ["execve", "execveat", "open", "openat", "openat2"];
    let probes = |names: &mut dyn Iterator<Item = &&str>| {
        names
            .map(|s| format!("tracepoint:syscalls:sys_enter_{s}"))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    format!(
        "{} {{ printf(\"%s %d %s %s\\n\", probe, pid, comm, str(args->filename)); }}\n\
         {} {{ printf(\"%s %d %s\\n\", probe, pid, comm); }}\n",
        probes(&mut with_file.iter()),
        probes(&mut SYSCALLS.iter().filter(|s| !with_file.contains(s))),
    )
}

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
                // No rules left from an earlier run, and the backlog Debian's shipped rules set
                // (the kernel's default of 64 makes every audited process wait for auditd as
                // soon as it falls behind).
                for args in [&["-D"][..], &["-b", "8192"]] {
                    let _ = Command::new("auditctl")
                        .args(args)
                        .stdout(Stdio::null())
                        .status();
                }
                let mut child = Command::new("auditd")
                    .arg("-n")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting auditd")?;
                let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
                for s in SYSCALLS {
                    rule.extend(["-S", audit_name(s)]);
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
                        // No auditd left running into the next measurements.
                        let _ = bounded::terminate(&mut child, "auditd", STOP_LIMIT);
                        bail!("auditctl could not add the rules within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(Peer { kind, child })
            }
            Kind::Bpftrace | Kind::HookFloor => {
                let script = if kind == Kind::Bpftrace {
                    bpftrace_script()
                } else {
                    HOOK_FLOOR_SCRIPT.to_owned()
                };
                let mut child = Command::new("bpftrace")
                    .args(["-e", &script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting bpftrace")?;
                let out = BufReader::new(child.stdout.take().context("bpftrace stdout")?);
                // bpftrace says "Attaching N probes..." once its probes are in place; its output
                // is read (and dropped) on a thread, like a consumer would, so a bpftrace that
                // never attaches fails this run instead of blocking it.
                let (attached, wait_attached) = mpsc::channel();
                std::thread::spawn(move || drain(out, attached));
                if wait_attached.recv_timeout(ATTACH_LIMIT).is_err() {
                    let _ = bounded::terminate(&mut child, "bpftrace", STOP_LIMIT);
                    bail!("bpftrace did not attach its probes within {ATTACH_LIMIT:?}");
                }
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
        bounded::terminate(&mut self.child, self.kind.name(), STOP_LIMIT)?;
        Ok(())
    }
}

/// Reads bpftrace's output to its end, saying once when the probes are attached.
fn drain(mut out: BufReader<ChildStdout>, attached: mpsc::Sender<()>) {
    let mut line = String::new();
    let mut told = false;
    while out.read_line(&mut line).is_ok_and(|n| n > 0) {
        if !told && line.contains("Attaching") {
            told = attached.send(()).is_ok();
        }
        line.clear();
    }
}
