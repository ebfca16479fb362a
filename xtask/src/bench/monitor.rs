//! What watches a workload during one measured run (nothing, the sensor, or a peer), and how its
//! CPU time and memory are read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{bounded, peers};

/// How long the sensor or the collector may take to exit once told to.
const STOP_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Config {
    Without,
    Filtered,
    Unfiltered,
    /// The sensor with `--open-hook raw-sys-exit` (a program at the exit of every syscall), the
    /// default before issue 13: shows what the per-syscall tracepoints save.
    RawSysExit,
    /// The sensor with `--open-hook tracepoint-pair` (an entry and an exit program per open, as
    /// before the exits read the flags from the saved registers; other architectures).
    TracepointPair,
    Peer(peers::Kind),
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Without => "without sensor",
            Config::Filtered => "sensor (kernel filter on)",
            Config::Unfiltered => "sensor (every event to userspace)",
            Config::RawSysExit => "sensor, raw sys_exit open hook (the old default)",
            Config::TracepointPair => "sensor, open tracepoints as entry+exit pair (before)",
            Config::Peer(peers::Kind::Auditd) => {
                "peer: auditd (rules for the sensor's exec, open, file, privilege, network syscalls)"
            }
            Config::Peer(peers::Kind::Bpftrace) => "peer: bpftrace (the same syscalls printed)",
            Config::Peer(peers::Kind::HookFloor) => {
                "floor: empty program on one never-called syscall tracepoint"
            }
        }
    }

    /// Starts what this configuration runs beside the workload (nothing for `Without`).
    pub fn start(self, bin: &Path, dir: &Path) -> anyhow::Result<Option<Monitor>> {
        Ok(match self {
            Config::Without => None,
            Config::Filtered | Config::Unfiltered | Config::RawSysExit | Config::TracepointPair => {
                let mut extra = Vec::new();
                if self == Config::Unfiltered {
                    extra.push("--no-kernel-filter");
                }
                if self == Config::RawSysExit {
                    extra.extend(["--open-hook", "raw-sys-exit"]);
                }
                if self == Config::TracepointPair {
                    extra.extend(["--open-hook", "tracepoint-pair"]);
                }
                Some(Monitor::Sensor(SensorUnderTest::start_with(
                    bin, dir, &extra, None,
                )?))
            }
            Config::Peer(kind) => Some(Monitor::Peer(peers::Peer::start(kind)?)),
        })
    }
}

/// What watches the workload in one run.
pub enum Monitor {
    Sensor(SensorUnderTest),
    Peer(peers::Peer),
}

impl Monitor {
    pub fn pid(&self) -> u32 {
        match self {
            Monitor::Sensor(s) => s.sensor.id(),
            Monitor::Peer(p) => p.pid(),
        }
    }

    /// Stops it; returns the records it reported lost (0 for peers: not comparable).
    pub fn stop(self) -> anyhow::Result<u64> {
        match self {
            Monitor::Sensor(s) => s.stop(),
            Monitor::Peer(p) => p.stop().map(|()| 0),
        }
    }
}

/// A collector and a sensor streaming to it, in a temporary directory.
pub struct SensorUnderTest {
    collector: Child,
    pub sensor: Child,
    state: PathBuf,
}

impl SensorUnderTest {
    /// Starts both; with `metrics`, the sensor serves Prometheus metrics on that loopback port.
    pub fn start(
        bin: &Path,
        dir: &Path,
        unfiltered: bool,
        metrics: Option<u16>,
    ) -> anyhow::Result<Self> {
        let extra: &[&str] = if unfiltered {
            &["--no-kernel-filter"]
        } else {
            &[]
        };
        Self::start_with(bin, dir, extra, metrics)
    }

    /// As [`SensorUnderTest::start`], with extra `sensor run` arguments.
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        extra: &[&str],
        metrics: Option<u16>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let collector = Command::new(bin.join("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.join("collector.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let state = dir.join("state");
        let mut cmd = Command::new(bin.join("sensor"));
        cmd.args([
            "run",
            "--collector",
            &format!("http://127.0.0.1:{port}"),
            "--state-dir",
        ])
        .arg(&state)
        .args(extra);
        // A port of its own: the default one is fixed and may be taken by another sensor.
        let metrics = match metrics {
            Some(m) => m,
            None => free_port()?,
        };
        cmd.args(["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
        let sensor = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !state.join("status.json").exists() {
            if Instant::now() > deadline {
                bail!("the sensor did not start within 30s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SensorUnderTest {
            collector,
            sensor,
            state,
        })
    }

    /// Stops both; returns the records the kernel lost, from the sensor's final status.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        // The sensor drains what it has and delivers its spool before it exits.
        bounded::terminate(&mut self.sensor, "the sensor", STOP_LIMIT)?;
        bounded::terminate(&mut self.collector, "the collector", STOP_LIMIT)?;
        let status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.state.join("status.json"))?)?;
        Ok(status["lost"].as_u64().unwrap_or(0))
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are the 14th and 15th overall.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / (1024 * 1024));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem_gib} GiB, Linux {}",
        kernel.trim()
    )
}

/// A measurement's result, where a peer's failure (a hang, a tool that would not attach) is the
/// peer's: it is logged and the sample left out, so the table shows the peer missing. The
/// sensor's own failures (and the bare workload's) stop the bench.
pub fn unless_peer_failed<T>(
    config: Config,
    result: anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match (config, result) {
        (_, Ok(value)) => Ok(Some(value)),
        (Config::Peer(_), Err(e)) => {
            eprintln!("[bench] {} failed, left out: {e:#}", config.name());
            Ok(None)
        }
        (_, Err(e)) => Err(e),
    }
}

/// Measures `f` under `config`: the monitor's CPU seconds per wall second of `f`, its peak RSS
/// and the records it lost, next to what `f` returns.
pub struct Watched<T> {
    pub value: T,
    pub monitor_cpu: f64,
    pub monitor_rss_kib: u64,
    pub lost: u64,
}

pub fn watched<T>(
    bin: &Path,
    config: Config,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<Watched<T>> {
    let dir = tempfile::tempdir()?;
    let monitor = config.start(bin, dir.path())?;
    let cpu_before = monitor.as_ref().map_or(0.0, |m| cpu_seconds(m.pid()));
    let started = Instant::now();
    let value = f()?;
    let wall = started.elapsed().as_secs_f64();
    let mut out = Watched {
        value,
        monitor_cpu: 0.0,
        monitor_rss_kib: 0,
        lost: 0,
    };
    if let Some(m) = monitor {
        // Let the agent finish what the workload produced before reading its CPU time.
        std::thread::sleep(Duration::from_millis(300));
        out.monitor_cpu = (cpu_seconds(m.pid()) - cpu_before) / wall;
        out.monitor_rss_kib = peak_rss_kib(m.pid());
        out.lost = m.stop()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_peer_failure_is_left_out() {
        let failed = || Err::<(), _>(anyhow::anyhow!("hung"));
        let peer = Config::Peer(peers::Kind::Bpftrace);
        assert!(unless_peer_failed(peer, failed()).unwrap().is_none());
        assert_eq!(unless_peer_failed(peer, Ok(3)).unwrap(), Some(3));
        assert!(unless_peer_failed(Config::Filtered, failed()).is_err());
        assert!(unless_peer_failed(Config::Without, failed()).is_err());
    }
}
