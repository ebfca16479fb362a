//! The overhead benchmark: each workload runs without the sensor and with it (kernel filter on,
//! and off so every event reaches userspace), interleaved over several rounds so that a noisy
//! neighbour hits every configuration alike. Results are ratios measured in one run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::peers;

#[derive(clap::Args)]
pub struct Args {
    /// Small operation counts and one round: checks the harness, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Rounds per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Skip the peers (auditd, bpftrace), which are otherwise installed with apt if missing.
    #[arg(long)]
    no_peers: bool,
    /// Where the markdown report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

/// (workload, operations in a full run, what it shows)
const WORKLOADS: &[(&str, u64, &str)] = &[
    (
        "open",
        200_000,
        "open+close of one file (repeats: the kernel filter's case)",
    ),
    (
        "open-many",
        50_000,
        "open+close of distinct files (every open is new)",
    ),
    ("forkexec", 3_000, "spawn /bin/true and wait"),
    ("connect", 20_000, "TCP connect to loopback and close"),
];

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Without,
    Filtered,
    Unfiltered,
    Peer(peers::Kind),
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Without => "without sensor",
            Config::Filtered => "sensor (kernel filter on)",
            Config::Unfiltered => "sensor (every event to userspace)",
            Config::Peer(peers::Kind::Auditd) => "peer: auditd (execve, open*, connect rules)",
            Config::Peer(peers::Kind::Bpftrace) => {
                "peer: bpftrace (execve, open*, connect printed)"
            }
            Config::Peer(peers::Kind::HookFloor) => {
                "floor: empty programs on the openat/connect tracepoints"
            }
        }
    }
}

/// What watches the workload in one run.
enum Monitor {
    Sensor(SensorUnderTest),
    Peer(peers::Peer),
}

impl Monitor {
    fn pid(&self) -> u32 {
        match self {
            Monitor::Sensor(s) => s.sensor.id(),
            Monitor::Peer(p) => p.pid(),
        }
    }

    /// Stops it; returns the records it reported lost (0 for peers: not comparable).
    fn stop(self) -> anyhow::Result<u64> {
        match self {
            Monitor::Sensor(s) => s.stop(),
            Monitor::Peer(p) => p.stop().map(|()| 0),
        }
    }
}

/// One measured run.
struct Sample {
    ops_per_sec: f64,
    /// Sensor CPU seconds per wall second of the workload.
    sensor_cpu: f64,
    sensor_rss_kib: u64,
    lost: u64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "--workspace",
            "--bin",
            "sensor",
            "--bin",
            "collector",
            "--bin",
            "loadgen",
        ])
        .status()?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    let bin = root.join("target/release");
    let mut configs = vec![Config::Without, Config::Filtered, Config::Unfiltered];
    if !args.no_peers {
        peers::install()?;
        configs.extend([
            Config::Peer(peers::Kind::Auditd),
            Config::Peer(peers::Kind::Bpftrace),
            Config::Peer(peers::Kind::HookFloor),
        ]);
    }
    let mut summary = String::new();
    let rounds = if args.quick { 1 } else { args.rounds };
    let mut report = String::new();
    writeln!(report, "# Benchmarks\n")?;
    writeln!(
        report,
        "Produced by `cargo xtask bench{}` on {}.\n",
        if args.quick { " --quick" } else { "" },
        machine()
    )?;
    writeln!(
        report,
        "Each workload runs without the sensor and with it, interleaved over {rounds} round(s); the median is shown. *ratio* is ops/s without the sensor divided by ops/s with it (1.00 = no cost). *monitor CPU* is the agent's (or the peer's) CPU time per wall second of the load generator's run (setup included, plus 0.3 s to catch up); *RSS* its peak resident memory; *lost* the records the kernel could not deliver.\n"
    )?;
    writeln!(
        report,
        "| workload | config | ops/s | ratio | monitor CPU | monitor RSS | lost |"
    )?;
    writeln!(report, "|---|---|---:|---:|---:|---:|---:|")?;
    for (workload, full_ops, what) in WORKLOADS {
        let ops = if args.quick {
            (full_ops / 100).max(10)
        } else {
            *full_ops
        };
        let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, config) in configs.iter().enumerate() {
                eprintln!(
                    "[bench] {workload} x{ops}: {} (round {}/{rounds})",
                    config.name(),
                    round + 1
                );
                samples[i].push(measure(&bin, workload, ops, *config)?);
            }
        }
        let base = median(samples[0].iter().map(|s| s.ops_per_sec));
        for (i, config) in configs.iter().enumerate() {
            let s = &samples[i];
            let ops_s = median(s.iter().map(|s| s.ops_per_sec));
            let (cpu, rss, lost) = if *config == Config::Without {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            } else {
                (
                    format!("{:.3} core", median(s.iter().map(|s| s.sensor_cpu))),
                    format!(
                        "{} MiB",
                        s.iter().map(|s| s.sensor_rss_kib).max().unwrap_or(0) / 1024
                    ),
                    s.iter().map(|s| s.lost).sum::<u64>().to_string(),
                )
            };
            writeln!(
                report,
                "| {workload} ({what}) | {} | {ops_s:.0} | {:.3} | {cpu} | {rss} | {lost} |",
                config.name(),
                base / ops_s
            )?;
        }
        // Added overhead (ratio - 1) of the sensor against auditd's, the "10x less".
        let ratio = |c: Config| {
            configs
                .iter()
                .position(|x| *x == c)
                .map(|i| base / median(samples[i].iter().map(|s| s.ops_per_sec)))
        };
        if let (Some(ours), Some(audit)) = (
            ratio(Config::Filtered),
            ratio(Config::Peer(peers::Kind::Auditd)),
        ) {
            writeln!(
                summary,
                "| {workload} | {:+.1}% | {:+.1}% | {} |",
                (ours - 1.0) * 100.0,
                (audit - 1.0) * 100.0,
                if ours > 1.0 && audit > 1.0 {
                    format!("{:.1}x", (audit - 1.0) / (ours - 1.0))
                } else {
                    "n/a (within noise)".to_owned()
                }
            )?;
        }
    }
    if !summary.is_empty() {
        writeln!(
            report,
            "\n## Added overhead: sensor (filter on) vs auditd\n\n| workload | sensor | auditd | auditd / sensor |\n|---|---:|---:|---:|\n{summary}"
        )?;
    }
    writeln!(
        report,
        "\nReproduce: `sudo cargo xtask bench` (about 15 minutes; `--quick` for a smoke run). Needs root: the sensor loads eBPF programs."
    )?;
    std::fs::write(root.join(&args.out), &report)?;
    eprintln!("[bench] wrote {}", args.out.display());
    print!("{report}");
    Ok(())
}

fn measure(bin: &Path, workload: &str, ops: u64, config: Config) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir()?;
    let monitor = match config {
        Config::Without => None,
        Config::Filtered | Config::Unfiltered => Some(Monitor::Sensor(SensorUnderTest::start(
            bin,
            dir.path(),
            config == Config::Unfiltered,
        )?)),
        Config::Peer(kind) => Some(Monitor::Peer(peers::Peer::start(kind)?)),
    };
    let cpu_before = monitor
        .as_ref()
        .map(|m| cpu_seconds(m.pid()))
        .unwrap_or(0.0);
    let started = Instant::now();
    let out = Command::new(bin.join("loadgen"))
        .args([workload, &ops.to_string()])
        .output()?;
    // The whole load generator run (setup included): the agent works on what setup does too.
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "loadgen {workload} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut sample = Sample {
        ops_per_sec: result["ops_per_sec"].as_f64().context("ops/s")?,
        sensor_cpu: 0.0,
        sensor_rss_kib: 0,
        lost: 0,
    };
    if let Some(s) = monitor {
        // Let the agent finish what the workload produced before reading its CPU time.
        std::thread::sleep(Duration::from_millis(300));
        sample.sensor_cpu = (cpu_seconds(s.pid()) - cpu_before) / wall;
        sample.sensor_rss_kib = peak_rss_kib(s.pid());
        sample.lost = s.stop()?;
    }
    Ok(sample)
}

/// A collector and a sensor streaming to it, in a temporary directory.
struct SensorUnderTest {
    collector: Child,
    sensor: Child,
    state: PathBuf,
}

impl SensorUnderTest {
    fn start(bin: &Path, dir: &Path, unfiltered: bool) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
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
        .arg(&state);
        if unfiltered {
            cmd.arg("--no-kernel-filter");
        }
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
    fn stop(mut self) -> anyhow::Result<u64> {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(self.sensor.id() as i32, libc::SIGTERM) };
        self.sensor.wait()?;
        // SAFETY: as above.
        unsafe { libc::kill(self.collector.id() as i32, libc::SIGTERM) };
        self.collector.wait()?;
        let status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.state.join("status.json"))?)?;
        Ok(status["lost"].as_u64().unwrap_or(0))
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are the 14th and 15th overall.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn machine() -> String {
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf())
}
