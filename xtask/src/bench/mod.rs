//! `cargo xtask bench`: the sensor's cost, as ratios against the same work without it, measured
//! in one run with every configuration interleaved round by round (a noisy neighbour hits every
//! configuration alike). Five parts, one module each:
//!
//! - `ci_build`: a realistic CI job, a real project from crates.io built from clean;
//! - `server`: nginx under wrk on loopback, requests/s and p99 latency;
//! - `loss`: the event rate at which the first loss occurs with full userspace processing, and the
//!   agent's CPU per 100k events/s;
//! - `micro`: syscall-heavy loops (open, fork+exec, connect, and `read`/`getppid`, which the
//!   sensor ignores) against auditd, bpftrace and the floor (one empty program on a syscall
//!   tracepoint nobody calls), with the added cost per operation in nanoseconds;
//! - `program_cost`: the nanoseconds each of the sensor's kernel programs adds per request or
//!   loop operation, from the kernel's BPF run-time statistics (not from timing).
//!
//! The report goes between `<!-- bench:start -->` and `<!-- bench:end -->` in BENCHMARKS.md, so
//! the other sections of that file (ingest, memory) are left as they are.

mod ci_build;
mod loss;
mod micro;
mod monitor;
mod program_cost;
mod server;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::peers;
use monitor::{Config, median, unless_peer_failed, watched};

#[derive(clap::Args)]
pub struct Args {
    /// Small operation counts and one round: checks the harness, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Rounds per configuration for the micro workloads (the median is reported).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Rounds per configuration for the CI build and the server (the median is reported).
    #[arg(long, default_value_t = 3)]
    job_rounds: usize,
    /// Seconds of wrk load per server run.
    #[arg(long, default_value_t = 10)]
    server_seconds: u64,
    /// Parts to run, comma-separated: ci-build, server, loss, micro, program-cost.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ci-build,server,loss,micro,program-cost"
    )]
    only: Vec<String>,
    /// Skip the peers (auditd, bpftrace), which are otherwise installed with apt if missing.
    #[arg(long)]
    no_peers: bool,
    /// Where the markdown report goes (its section is replaced, the rest of the file kept).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

/// One row of the realistic-workload table.
struct Row {
    workload: &'static str,
    config: Config,
    /// ops/s (builds/s or requests/s), its ratio (without / with), p99 latency and its ratio.
    ops: f64,
    ratio: f64,
    p99_ms: Option<f64>,
    p99_ratio: Option<f64>,
    lost: u64,
    cpu: f64,
    rss_kib: u64,
}

/// One measured run: (ops/s, p99 ms, monitor CPU, monitor RSS KiB, lost).
type Sample = (f64, Option<f64>, f64, u64, u64);

/// Runs `measure` for every config over `rounds` interleaved rounds; returns per config the
/// samples (ops, p99, cpu, rss, lost).
fn interleaved(
    bin: &Path,
    what: &str,
    configs: &[Config],
    rounds: usize,
    mut measure: impl FnMut() -> anyhow::Result<(f64, Option<f64>)>,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let mut samples: Vec<Vec<_>> = configs.iter().map(|_| Vec::new()).collect();
    let mut broken: Vec<Config> = Vec::new();
    for round in 0..rounds {
        for (i, config) in configs.iter().enumerate() {
            if broken.contains(config) {
                continue;
            }
            eprintln!(
                "[bench] {what}: {} (round {}/{rounds})",
                config.name(),
                round + 1
            );
            let Some(w) = unless_peer_failed(*config, watched(bin, *config, &mut measure))? else {
                // A peer that hung or failed once is not tried again in this run.
                broken.push(*config);
                continue;
            };
            samples[i].push((
                w.value.0,
                w.value.1,
                w.monitor_cpu,
                w.monitor_rss_kib,
                w.lost,
            ));
        }
    }
    Ok(samples)
}

fn rows(workload: &'static str, configs: &[Config], samples: &[Vec<Sample>]) -> Vec<Row> {
    let ops = |i: usize| median(samples[i].iter().map(|s| s.0));
    let p99 = |i: usize| {
        let v: Vec<f64> = samples[i].iter().filter_map(|s| s.1).collect();
        (!v.is_empty()).then(|| median(v.into_iter()))
    };
    configs
        .iter()
        .enumerate()
        .filter(|(i, _)| !samples[*i].is_empty())
        .map(|(i, &config)| Row {
            workload,
            config,
            ops: ops(i),
            ratio: ops(0) / ops(i),
            p99_ms: p99(i),
            p99_ratio: p99(i).zip(p99(0)).map(|(p, base)| p / base),
            lost: samples[i].iter().map(|s| s.4).sum(),
            cpu: median(samples[i].iter().map(|s| s.2)),
            rss_kib: samples[i].iter().map(|s| s.3).max().unwrap_or(0),
        })
        .collect()
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | config | ops/s | ratio | p99 latency | p99 ratio | lost | monitor CPU | monitor RSS |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let without = r.config == Config::Without;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {} |",
            r.workload,
            r.config.name(),
            if r.ops < 1.0 {
                format!("{:.4} ({:.1} s per build)", r.ops, 1.0 / r.ops)
            } else {
                format!("{:.0}", r.ops)
            },
            r.ratio,
            r.p99_ms.map_or("-".to_owned(), |p| format!("{p:.2} ms")),
            r.p99_ratio.map_or("-".to_owned(), |p| format!("{p:.3}")),
            if without {
                "-".to_owned()
            } else {
                r.lost.to_string()
            },
            if without {
                "-".to_owned()
            } else {
                format!("{:.3} core", r.cpu)
            },
            if without {
                "-".to_owned()
            } else {
                format!("{} MiB", r.rss_kib / 1024)
            },
        );
    }
    s
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
    let cache = root.join("target/bench-cache");
    let part = |p: &str| args.only.iter().any(|o| o == p);
    let mut peer_configs = Vec::new();
    if !args.no_peers {
        peers::install()?;
        peer_configs.extend([
            Config::Peer(peers::Kind::Auditd),
            Config::Peer(peers::Kind::Bpftrace),
        ]);
    }
    // Realistic workloads: the sensor as deployed (filter on) and the peers; quick: the build
    // without peers (a build each), the server with them (seconds each).
    let mut job_configs = vec![Config::Without, Config::Filtered];
    let mut server_configs = job_configs.clone();
    server_configs.extend(peer_configs.iter().copied());
    if !args.quick {
        job_configs.extend(peer_configs.iter().copied());
    }
    // The server also beside the floor, the old raw open hook and the open tracepoint pair: a
    // server's syscalls are what the sensor must stay off.
    if !args.quick {
        server_configs.push(Config::RawSysExit);
        server_configs.push(Config::TracepointPair);
        if !args.no_peers {
            server_configs.push(Config::Peer(peers::Kind::HookFloor));
        }
    }
    let job_rounds = if args.quick { 1 } else { args.job_rounds };

    let mut report = String::new();
    writeln!(report, "{START}")?;
    writeln!(report, "# Benchmarks\n")?;
    writeln!(
        report,
        "Produced by `cargo xtask bench{}` on {} (release binaries).\n",
        if args.quick { " --quick" } else { "" },
        monitor::machine()
    )?;

    let mut realistic = Vec::new();
    if part("ci-build") {
        ci_build::prepare(&cache)?;
        let samples = interleaved(&bin, "ci-build", &job_configs, job_rounds, || {
            Ok((1.0 / ci_build::build(&cache)?, None))
        })?;
        realistic.extend(rows("ci-build", &job_configs, &samples));
    }
    if part("server") {
        let dir = tempfile::tempdir()?;
        let nginx = server::Nginx::start(dir.path())?;
        let secs = if args.quick { 2 } else { args.server_seconds };
        let samples = interleaved(&bin, "nginx+wrk", &server_configs, job_rounds, || {
            let (rps, p99) = server::wrk(nginx.port, secs)?;
            Ok((rps, Some(p99)))
        })?;
        realistic.extend(rows("nginx+wrk", &server_configs, &samples));
    }
    if !realistic.is_empty() {
        writeln!(report, "## Realistic workloads\n")?;
        writeln!(
            report,
            "*ci-build*: `cargo install --locked --debug --offline {}` into a fresh target \
             directory (a real project and its dependencies, fetched once from crates.io into \
             `target/bench-cache`), ops/s = builds per second. *nginx+wrk*: nginx (one worker, \
             access log on) serving a 600-byte page on loopback, `wrk -t1 -c32 -d{}s --latency` \
             with keep-alive; p99 is wrk's. Configurations interleaved over {job_rounds} round(s), \
             median shown; *ratio* = ops/s without ÷ ops/s with (target ≤ 1.02), *p99 ratio* = p99 \
             with ÷ p99 without (target ≤ 1.02). *monitor CPU* is the agent's (or peer's) CPU \
             seconds per wall second of the workload, *RSS* its peak resident memory, *lost* the \
             records the kernel could not deliver.\n",
            ci_build::PROJECT,
            if args.quick { 2 } else { args.server_seconds }
        )?;
        writeln!(report, "{}", table(&realistic))?;
        report += &added_vs_peers(&realistic);
    }
    if part("loss") {
        report += &loss::section(&bin, args.quick)?;
    }
    if part("micro") {
        let mut configs = vec![
            Config::Without,
            Config::Filtered,
            Config::Unfiltered,
            Config::RawSysExit,
            Config::TracepointPair,
        ];
        if !args.no_peers {
            configs.extend(peer_configs.iter().copied());
            configs.push(Config::Peer(peers::Kind::HookFloor));
        }
        let rounds = if args.quick { 1 } else { args.rounds };
        report += &micro::section(&bin, &configs, rounds, args.quick)?;
    }
    if part("program-cost") {
        report += &program_cost::section(&bin, args.quick, args.server_seconds)?;
    }
    writeln!(
        report,
        "\nReproduce: `sudo cargo xtask bench` (about 20 minutes; `--quick` for a smoke run, \
         `--only ci-build,server,loss,micro,program-cost` for some parts). Needs root: the sensor loads eBPF \
         programs.\n{END}"
    )?;
    let path = root.join(&args.out);
    write_section(&path, &report)?;
    eprintln!("[bench] wrote {}", args.out.display());
    print!("{report}");
    Ok(())
}

/// The "at least 10x less added overhead than the peers" for the realistic workloads:
/// added overhead (ratio − 1) of the sensor beside auditd's and bpftrace's, on throughput and on
/// p99 latency, and how many times more each peer adds. Empty when no peer ran.
fn added_vs_peers(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    for workload in workloads {
        let of = |c: Config| {
            rows.iter()
                .find(|r| r.workload == workload && r.config == c)
        };
        let Some(ours) = of(Config::Filtered) else {
            continue;
        };
        let auditd = of(Config::Peer(peers::Kind::Auditd));
        let bpftrace = of(Config::Peer(peers::Kind::Bpftrace));
        if auditd.is_none() && bpftrace.is_none() {
            continue;
        }
        for (metric, pick) in [
            (
                "throughput",
                (|r: &Row| Some(r.ratio)) as fn(&Row) -> Option<f64>,
            ),
            ("p99 latency", |r: &Row| r.p99_ratio),
        ] {
            let Some(sensor) = pick(ours) else { continue };
            let _ = writeln!(
                out,
                "| {workload} | {metric} | {} | {} | {} | {} | {} |",
                added_pct(Some(sensor)),
                added_pct(auditd.and_then(pick)),
                added_pct(bpftrace.and_then(pick)),
                times_more(sensor, auditd.and_then(pick)),
                times_more(sensor, bpftrace.and_then(pick)),
            );
        }
    }
    if out.is_empty() {
        return out;
    }
    format!(
        "### Added overhead against the peers (target: each peer adds ≥ 10x more)\n\n\
         *added* = ratio − 1 (throughput: ops/s without ÷ with; p99: with ÷ without); *peer / \
         sensor* = the peer's added overhead divided by the sensor's.\n\n\
         | workload | metric | sensor | auditd | bpftrace | auditd / sensor | bpftrace / sensor |\n\
         |---|---|---:|---:|---:|---:|---:|\n{out}\n"
    )
}

/// `+12.3%` for a ratio of 1.123; `-` when not measured.
pub(crate) fn added_pct(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_owned(), |r| format!("{:+.1}%", (r - 1.0) * 100.0))
}

/// How many times the sensor's added overhead the peer's is; "n/a (within noise)" when either
/// adds nothing measurable.
pub(crate) fn times_more(sensor: f64, peer: Option<f64>) -> String {
    match peer {
        Some(p) if sensor > 1.0 && p > 1.0 => format!("{:.1}x", (p - 1.0) / (sensor - 1.0)),
        Some(_) => "n/a (within noise)".to_owned(),
        None => "-".to_owned(),
    }
}

/// Replaces the text between the markers in `path` (or, without markers, puts the section first
/// and keeps the rest of the file after it).
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{}{}",
                &old[..a],
                section.trim_end(),
                &old[b + END.len()..]
            )
        }
        _ => format!("{}\n\n{}", section.trim_end(), old.trim_start()),
    };
    std::fs::write(path, new.trim_end().to_owned() + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: Config, ratio: f64, p99_ratio: Option<f64>) -> Row {
        Row {
            workload: "nginx+wrk",
            config,
            ops: 1000.0 / ratio,
            ratio,
            p99_ms: p99_ratio,
            p99_ratio,
            lost: 0,
            cpu: 0.0,
            rss_kib: 0,
        }
    }

    #[test]
    fn added_overhead_against_each_peer_for_throughput_and_p99() {
        let rows = [
            row(Config::Without, 1.0, Some(1.0)),
            row(Config::Filtered, 1.05, Some(1.10)),
            row(Config::Peer(peers::Kind::Auditd), 2.0, Some(3.0)),
            row(Config::Peer(peers::Kind::Bpftrace), 1.5, Some(0.99)),
        ];
        let table = added_vs_peers(&rows);
        assert!(
            table.contains("| nginx+wrk | throughput | +5.0% | +100.0% | +50.0% | 20.0x | 10.0x |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| nginx+wrk | p99 latency | +10.0% | +200.0% | -1.0% | 20.0x | n/a (within noise) |"
            ),
            "{table}"
        );
        // Without peers there is nothing to compare.
        assert_eq!(added_vs_peers(&rows[..2]), "");
    }

    #[test]
    fn section_is_replaced_between_markers_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("B.md");
        std::fs::write(
            &p,
            format!("{START}\nold\n{END}\n\n<!-- other:start -->\nkeep\n<!-- other:end -->\n"),
        )
        .unwrap();
        write_section(&p, &format!("{START}\nnew\n{END}")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("new") && !text.contains("old") && text.contains("keep"),
            "{text}"
        );
        let fresh = dir.path().join("C.md");
        write_section(&fresh, &format!("{START}\nx\n{END}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            format!("{START}\nx\n{END}\n")
        );
    }
}
