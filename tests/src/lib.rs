//! Helpers shared by the privileged integration tests (they need root and a BPF-capable kernel).
//!
//! Tests here trigger real behaviour in real processes and wait, with a deadline, for the events
//! or deviations to show up; they never sleep a fixed time and hope.

pub mod stack;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sensor_user::event::Event;
use sensor_user::kernel::{BootClock, LoadOptions, Sensor, decode};

/// The kernel programs loaded in this process, with their decoded events on a channel.
pub struct KernelHarness {
    events: mpsc::Receiver<Event>,
    stop: tokio_util::sync::CancellationToken,
    thread: Option<thread::JoinHandle<()>>,
    /// The programs the loader attached.
    pub attached: Vec<&'static str>,
}

impl KernelHarness {
    /// Loads and attaches every program; panics with the loader's message when it cannot.
    pub fn start() -> KernelHarness {
        Self::start_with(LoadOptions::default())
    }

    /// One harness for the whole test binary, started on first use. Loading and detaching all
    /// programs takes seconds (detaching waits for RCU grace periods), so tests share it; they
    /// tell their events apart by the pids they spawn.
    pub fn shared() -> std::sync::MutexGuard<'static, KernelHarness> {
        static SHARED: std::sync::OnceLock<std::sync::Mutex<KernelHarness>> =
            std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| std::sync::Mutex::new(KernelHarness::start()))
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// As [`KernelHarness::start`], with load options.
    pub fn start_with(options: LoadOptions) -> KernelHarness {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut sensor = match Sensor::load(&options) {
                    Ok(s) => s,
                    Err(e) => {
                        ready_tx.send(Err(e.to_string())).unwrap();
                        return;
                    }
                };
                ready_tx.send(Ok(sensor.attached.clone())).unwrap();
                let clock = BootClock::now();
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        ready = sensor.ready() => {
                            ready.unwrap();
                            sensor.drain(|record| {
                                let event = decode(record, &clock).expect("every kernel record decodes");
                                let _ = tx.send(event);
                            });
                        }
                    }
                }
            });
        });
        let attached = match ready_rx.recv().expect("sensor thread died") {
            Ok(attached) => attached,
            Err(e) => panic!("loading the sensor failed: {e}"),
        };
        KernelHarness {
            events: rx,
            stop,
            thread: Some(thread),
            attached,
        }
    }

    /// Every event until (and including) the first that matches `last`, within 5 seconds.
    pub fn collect_until(&self, what: &str, last: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    let done = last(&e);
                    seen.push(e);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no event for {what} within 5s"),
            }
        }
    }

    /// The first event matching `pred` within 5 seconds; panics with `what` otherwise.
    pub fn expect(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(_) => panic!("no event for {what} within 5s"),
            }
        }
    }
}

impl Drop for KernelHarness {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of this workspace (`sensor`, `collector`) next to the running test's build output.
/// `cargo build --workspace` must have built it (scripts/test does).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// Polls `check` until it returns `Some` or `timeout` passes; panics with `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` to completion and returns its pid; panics when it fails.
pub fn run(cmd: &mut std::process::Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
    pid
}

/// A bash command run as step of a GitHub Actions job `<repo>/ci/build` (workload
/// `github:<repo>/ci/build`), run `run`: a clean environment with only `PATH` and the job's
/// variables. Callers add their own variables and the script (`.arg(file)` or `.args(["-c", s])`).
pub fn github_job(repo: &str, run: impl std::fmt::Display) -> std::process::Command {
    let mut cmd = std::process::Command::new("/bin/bash");
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_REPOSITORY", repo)
        .env("GITHUB_WORKFLOW", "ci")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_RUN_ID", run.to_string());
    cmd
}

/// Every event kind loadcheck's workload triggers, as its report names them (the portability
/// test checks each was seen on every hook set).
pub const LOADCHECK_KINDS: &[&str] = &[
    "open-read",
    "open-write",
    "open-create",
    "rename",
    "unlink",
    "rmdir",
    "mkdir",
    "chmod",
    "chown",
    "symlink",
    "link",
    "truncate",
    "setuid",
    "unshare",
];
