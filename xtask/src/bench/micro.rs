//! Syscall-heavy micro workloads (`loadgen`): each runs without the sensor and with it (kernel
//! filter on, and off so every event reaches userspace), and beside the peers, interleaved over
//! several rounds so that a noisy neighbour hits every configuration alike.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::monitor::{Config, median, unless_peer_failed, watched};
use super::{added_pct, times_more};
use crate::bounded;
use crate::peers;

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
    (
        "connect",
        20_000,
        "TCP connect to loopback, accept and close",
    ),
    (
        "read",
        1_000_000,
        "read of 64 B from /dev/zero (a syscall the sensor ignores)",
    ),
    (
        "getppid",
        2_000_000,
        "getppid (the cheapest syscall the sensor ignores)",
    ),
];

/// One measured run.
struct Sample {
    ops_per_sec: f64,
    /// Sensor CPU seconds per wall second of the workload.
    cpu: f64,
    rss_kib: u64,
    lost: u64,
}

/// The longest a load generator run may take (a full run takes seconds, under auditd tens of
/// seconds; one stalled behind a monitor must fail its measurement, not hang the bench).
const LOADGEN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `loadgen <workload> <ops>`; its operations per second.
pub(super) fn loadgen(bin: &Path, workload: &str, ops: u64) -> anyhow::Result<f64> {
    // Its output is one line of JSON (and a line of error at most): the pipes cannot fill.
    let mut child = Command::new(bin.join("loadgen"))
        .args([workload, &ops.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = bounded::wait(&mut child, &format!("loadgen {workload}"), LOADGEN_LIMIT)?;
    let (mut stdout, mut stderr) = (Vec::new(), String::new());
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut stdout)?;
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    if !status.success() {
        bail!("loadgen {workload} failed: {stderr}");
    }
    let result: serde_json::Value = serde_json::from_slice(&stdout)?;
    result["ops_per_sec"].as_f64().context("ops/s")
}

fn measure(bin: &Path, workload: &str, ops: u64, config: Config) -> anyhow::Result<Sample> {
    let w = watched(bin, config, || loadgen(bin, workload, ops))?;
    Ok(Sample {
        ops_per_sec: w.value,
        cpu: w.monitor_cpu,
        rss_kib: w.monitor_rss_kib,
        lost: w.lost,
    })
}

/// The micro-benchmark section: the table and the added overhead against auditd.
pub fn section(
    bin: &Path,
    configs: &[Config],
    rounds: usize,
    quick: bool,
) -> anyhow::Result<String> {
    let mut report = String::new();
    let mut summary = String::new();
    writeln!(report, "## Syscall-heavy micro workloads\n")?;
    writeln!(
        report,
        "Each workload runs without the sensor and with it, interleaved over {rounds} round(s); the median is shown. *ratio* is ops/s without the sensor divided by ops/s with it (1.00 = no cost); *added per op* the same difference in nanoseconds per operation (1/ops with − 1/ops without). The *floor* is one empty program on a syscall tracepoint nobody calls: attaching any syscall tracepoint sends every syscall of every task through the kernel's slow path, so no tracepoint-based sensor can go below it. *monitor CPU* is the agent's (or the peer's) CPU time per wall second of the load generator's run (setup included, plus 0.3 s to catch up); *RSS* its peak resident memory; *lost* the records the kernel could not deliver.\n"
    )?;
    writeln!(
        report,
        "| workload | config | ops/s | ratio | added per op | monitor CPU | monitor RSS | lost |"
    )?;
    writeln!(report, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    let mut broken: Vec<Config> = Vec::new();
    for (workload, full_ops, what) in WORKLOADS {
        let ops = if quick {
            (full_ops / 100).max(10)
        } else {
            *full_ops
        };
        let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, config) in configs.iter().enumerate() {
                if broken.contains(config) {
                    continue;
                }
                eprintln!(
                    "[bench] {workload} x{ops}: {} (round {}/{rounds})",
                    config.name(),
                    round + 1
                );
                let sample = measure(bin, workload, ops, *config);
                match unless_peer_failed(*config, sample)? {
                    Some(sample) => samples[i].push(sample),
                    // A peer that hung or failed once is not tried again in this run.
                    None => broken.push(*config),
                }
            }
        }
        let base = median(samples[0].iter().map(|s| s.ops_per_sec));
        for (i, config) in configs.iter().enumerate() {
            let s = &samples[i];
            if s.is_empty() {
                continue;
            }
            let ops_s = median(s.iter().map(|s| s.ops_per_sec));
            let (cpu, rss, lost) = if *config == Config::Without {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            } else {
                (
                    format!("{:.3} core", median(s.iter().map(|s| s.cpu))),
                    format!(
                        "{} MiB",
                        s.iter().map(|s| s.rss_kib).max().unwrap_or(0) / 1024
                    ),
                    s.iter().map(|s| s.lost).sum::<u64>().to_string(),
                )
            };
            let added = if *config == Config::Without {
                "-".to_owned()
            } else {
                format!("{:+.0} ns", 1e9 / ops_s - 1e9 / base)
            };
            writeln!(
                report,
                "| {workload} ({what}) | {} | {ops_s:.0} | {:.3} | {added} | {cpu} | {rss} | {lost} |",
                config.name(),
                base / ops_s
            )?;
        }
        // Added overhead (ratio - 1) of the sensor against the peers', the "10x less".
        let ratio = |c: Config| {
            configs
                .iter()
                .position(|x| *x == c)
                .filter(|&i| !samples[i].is_empty())
                .map(|i| base / median(samples[i].iter().map(|s| s.ops_per_sec)))
        };
        if let Some(ours) = ratio(Config::Filtered) {
            let pct = added_pct;
            let times = |peer: Option<f64>| times_more(ours, peer);
            let audit = ratio(Config::Peer(peers::Kind::Auditd));
            let bpftrace = ratio(Config::Peer(peers::Kind::Bpftrace));
            writeln!(
                summary,
                "| {workload} | {} | {} | {} | {} | {} | {} | {} |",
                pct(ratio(Config::Peer(peers::Kind::HookFloor))),
                pct(Some(ours)),
                pct(ratio(Config::RawSysExit)),
                pct(audit),
                pct(bpftrace),
                times(audit),
                times(bpftrace),
            )?;
        }
    }
    if !summary.is_empty() {
        writeln!(
            report,
            "\n### Added overhead: floor, sensor (filter on), the old raw open hook, and the peers\n\n| workload | floor | sensor | sensor, raw sys_exit hook | auditd | bpftrace | auditd / sensor | bpftrace / sensor |\n|---|---:|---:|---:|---:|---:|---:|---:|\n{summary}"
        )?;
    }
    Ok(report)
}
