//! The real product for a test: the collector binary (SQLite) and the sensor binary (real kernel
//! programs) on a real loopback socket, both stopped with SIGTERM when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, wait_for, workspace_bin};

/// A child stopped with SIGTERM on drop (the sensor flushes on the way out), killed after 15 s.
pub struct Stopped(pub Child);

impl Stopped {
    /// Sends SIGTERM and waits up to 15 s for the exit; `None` when it had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Stopped {
    /// Stops the process (SIGSTOP) until the guard drops (SIGCONT). For the sensor: what
    /// happens meanwhile waits in the kernel's ring and is read afterwards, once the processes
    /// that did it are gone (a deterministic "the agent looked late").
    pub fn pause(&self) -> Paused {
        let pid = self.0.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Paused(pid)
    }
}

/// A stopped child, continued when dropped.
pub struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

/// A collector and a sensor reporting to it; files under `dir`.
pub struct Stack {
    // Dropped in declaration order: the sensor before the collector.
    pub sensor: Stopped,
    pub collector: Stopped,
    pub server: String,
    pub state: PathBuf,
    /// The sensor's log (stderr), for assertions on logged reasons.
    pub sensor_log: PathBuf,
}

impl Stack {
    /// Starts both and waits until the sensor has attached; `sensor_args` are added to
    /// `sensor run`.
    pub fn start(dir: &Path, sensor_args: &[&str]) -> Stack {
        let port = free_port();
        let server = format!("http://127.0.0.1:{port}");
        let collector = Stopped(
            Command::new(workspace_bin("collector"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--metrics-listen", "", "--db"])
                .arg(dir.join("collector.db"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the collector"),
        );
        wait_for("collector to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let state = dir.join("state");
        let sensor_log = dir.join("sensor.log");
        let sensor = Stopped(
            Command::new(workspace_bin("sensor"))
                .args(["run", "--collector", &server, "--metrics-listen", ""])
                .args(["--host", "test-host", "--state-dir"])
                .arg(&state)
                .args(sensor_args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&sensor_log).expect("sensor log"))
                .spawn()
                .expect("start the sensor"),
        );
        wait_for("sensor to attach", Duration::from_secs(60), || {
            std::fs::read_to_string(state.join("status.json")).ok()
        });
        Stack {
            sensor,
            collector,
            server,
            state,
            sensor_log,
        }
    }

    /// Every deviation the collector stored for `workload` (`collector deviations --json`).
    pub fn deviations(&self, workload: &str) -> Vec<Value> {
        deviations(&self.server, workload)
    }

    /// Every baseline the sensor has on disk (`sensor baseline list --json`).
    pub fn baselines(&self) -> Vec<Value> {
        let out = Command::new(workspace_bin("sensor"))
            .args(["baseline", "list", "--json", "--state-dir"])
            .arg(&self.state)
            .output()
            .expect("sensor baseline list");
        assert!(
            out.status.success(),
            "sensor baseline list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops the sensor, then the collector, with SIGTERM; their exit statuses (`None`: killed
    /// after 15 s).
    pub fn stop(mut self) -> (Option<ExitStatus>, Option<ExitStatus>) {
        (self.sensor.terminate(), self.collector.terminate())
    }

    /// The sensor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.sensor_log).unwrap_or_default()
    }
}

impl Stack {
    /// One workload's baseline (`sensor baseline show --json`), when it is on disk.
    pub fn baseline(&self, workload: &str) -> Option<Value> {
        let out = Command::new(workspace_bin("sensor"))
            .args(["baseline", "show", workload, "--json", "--state-dir"])
            .arg(&self.state)
            .output()
            .expect("sensor baseline show");
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// Every deviation the collector at `server` stored for `workload` (`collector deviations
/// --json`).
pub fn deviations(server: &str, workload: &str) -> Vec<Value> {
    let out = Command::new(workspace_bin("collector"))
        .args(["deviations", "--server", server, "--json"])
        .args(["--workload", workload])
        .output()
        .expect("collector deviations");
    assert!(
        out.status.success(),
        "collector deviations failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}
