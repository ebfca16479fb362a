//! `cargo xtask bench-ingest`: how many deviations per second the collector stores, per core.
//!
//! The real collector binary (release build, a fresh SQLite database per configuration) serves on
//! loopback; real gRPC clients (tonic, the same stack as the agent's) stream pre-built batches of
//! realistic deviations, a few batches in flight each, and wait for every acknowledgement (an ack
//! means the batch is committed). Throughput is deviations acknowledged per wall second; per core
//! divides by the collector's CPU seconds (utime + stime from `/proc/<pid>/stat`) over the same
//! interval, so it does not depend on how many cores the clients left to it. The clients share
//! the machine: on 2 cores they take CPU the collector could have used, which lowers the wall
//! rate but not the per-core one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use proto::v1::{
    Ancestor, DeviationBatch, DeviationKind, FileAccess, Novelty, Process, Severity, Workload,
    WorkloadKind, ingest_client::IngestClient, novelty::What,
};
use tokio::sync::Semaphore;

#[derive(clap::Args)]
pub struct Args {
    /// Small counts: checks the harness, not the numbers (and does not touch BENCHMARKS.md).
    #[arg(long)]
    quick: bool,
    /// Deviations streamed per configuration.
    #[arg(long, default_value_t = 200_000)]
    deviations: usize,
    /// Concurrent agents (gRPC streams).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Batches each agent keeps in flight (sent, not yet acknowledged).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Where the results go (their own section, replaced on each run).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Also measure this collector binary (e.g. a release build of an earlier commit), each
    /// batch size right before this tree's, so the two are compared under the same load.
    #[arg(long, value_name = "BIN")]
    compare: Option<PathBuf>,
    /// Store into this PostgreSQL database (a `postgres://` URL, no TLS) instead of a fresh
    /// SQLite file per configuration; each configuration gets a fresh schema in it
    /// (`ingest_bench`, dropped and created again).
    #[arg(long, value_name = "URL")]
    db: Option<String>,
    /// Deviations of a workload without runs (a systemd unit): no run id, and ids led by their
    /// hour as the agent makes them (`detect::ids::hour_first`), each batch in an hour of its
    /// own, as from an agent that reported over that many hours. Results go to their own
    /// sections.
    #[arg(long)]
    without_runs: bool,
}

/// Batch sizes measured: the agent's default (256) and a large one.
const BATCH_SIZES: &[usize] = &[256, 1000];
/// The section of each backend and workload shape (a PostgreSQL run does not replace the SQLite
/// figures, nor a run without runs the one with).
const SECTIONS: [Section; 4] = [
    Section {
        start: "<!-- ingest-bench:start -->",
        end: "<!-- ingest-bench:end -->",
        title: "Collector ingest",
    },
    Section {
        start: "<!-- ingest-bench-postgres:start -->",
        end: "<!-- ingest-bench-postgres:end -->",
        title: "Collector ingest on PostgreSQL",
    },
    Section {
        start: "<!-- ingest-bench-runless:start -->",
        end: "<!-- ingest-bench-runless:end -->",
        title: "Collector ingest, a workload without runs",
    },
    Section {
        start: "<!-- ingest-bench-runless-postgres:start -->",
        end: "<!-- ingest-bench-runless-postgres:end -->",
        title: "Collector ingest on PostgreSQL, a workload without runs",
    },
];

struct Section {
    start: &'static str,
    end: &'static str,
    title: &'static str,
}

impl Args {
    fn section(&self) -> &'static Section {
        &SECTIONS[usize::from(self.db.is_some()) + 2 * usize::from(self.without_runs)]
    }
}

struct Sample {
    /// Which collector: "this tree" or the `--compare` binary's name.
    label: String,
    batch: usize,
    deviations: usize,
    wall: Duration,
    collector_cpu: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
}

impl Sample {
    fn per_sec(&self) -> f64 {
        self.deviations as f64 / self.wall.as_secs_f64()
    }
    fn per_core_sec(&self) -> f64 {
        self.deviations as f64 / self.collector_cpu.max(0.01)
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "--bin", "collector"])
        .status()?;
    ensure!(status.success(), "building the release collector failed");
    let collector = root.join("target/release/collector");
    let total = if args.quick { 5_000 } else { args.deviations };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut binaries = Vec::new();
    if let Some(earlier) = &args.compare {
        binaries.push((format!("`{}`", earlier.display()), earlier.clone()));
    }
    binaries.push(("this tree".to_owned(), collector));
    let mut samples = Vec::new();
    for &batch in BATCH_SIZES {
        for (label, binary) in &binaries {
            let db = args.db.as_deref().map(fresh_schema).transpose()?;
            let mut sample =
                runtime.block_on(measure(binary, db.as_deref(), batch, total, args))?;
            sample.label.clone_from(label);
            eprintln!(
                "{label}, batch {batch}: {:.0} deviations/s, {:.0} per collector core-second, \
                 ack p50 {:.1} ms",
                sample.per_sec(),
                sample.per_core_sec(),
                sample.ack_p50_ms
            );
            samples.push(sample);
        }
    }
    let section = markdown(&samples, args);
    print!("{section}");
    if !args.quick {
        let path = root.join(&args.out);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, replace_section(&old, args.section(), &section))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Kills the collector on drop.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One configuration: `collector` storing into `db` (a PostgreSQL URL) or a fresh SQLite file.
async fn measure(
    collector: &Path,
    db: Option<&str>,
    batch: usize,
    total: usize,
    args: &Args,
) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = Guard(
        Command::new(collector)
            .args(["serve", "--metrics-listen", "", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(match db {
                Some(url) => std::ffi::OsString::from(url),
                None => dir.path().join("collector.db").into_os_string(),
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?,
    );
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut clients = Vec::new();
    for agent in 0..args.agents {
        loop {
            match IngestClient::connect(url.clone()).await {
                Ok(c) => break clients.push(c),
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("agent {agent} cannot connect to the collector: {e}"),
            }
        }
    }
    // Built before the clock starts: encoding is the agent's cost, not the collector's.
    let per_agent = total.div_ceil(args.agents * batch);
    let work: Vec<Vec<DeviationBatch>> = (0..args.agents)
        .map(|a| {
            (1..=per_agent)
                .map(|s| make_batch(a, s, batch, args.without_runs))
                .collect()
        })
        .collect();
    let deviations: usize = work.iter().flatten().map(|b| b.deviations.len()).sum();

    let pid = server.0.id();
    let cpu_before = cpu_seconds(pid);
    let clock = Instant::now();
    let mut tasks = Vec::new();
    for (client, batches) in clients.into_iter().zip(work) {
        tasks.push(tokio::spawn(stream(client, batches, args.window)));
    }
    let mut stored = 0;
    let mut ack_ms = Vec::new();
    for task in tasks {
        let (n, latencies) = task.await??;
        stored += n;
        ack_ms.extend(latencies);
    }
    let wall = clock.elapsed();
    let collector_cpu = cpu_seconds(pid) - cpu_before;
    ensure!(
        stored == deviations,
        "the collector acknowledged {stored} stored deviations of {deviations} sent"
    );
    ack_ms.sort_by(f64::total_cmp);
    Ok(Sample {
        label: String::new(),
        batch,
        deviations,
        wall,
        collector_cpu,
        ack_p50_ms: percentile(&ack_ms, 50.0),
        ack_p99_ms: percentile(&ack_ms, 99.0),
    })
}

/// Drops and creates the bench's schema in the database at `url`; returns the URL that puts
/// the collector's tables there. A fresh schema per configuration: rows left by the previous one
/// would make every later configuration's indexes larger (and an older collector refuses a
/// schema a newer one migrated).
fn fresh_schema(url: &str) -> anyhow::Result<String> {
    const SCHEMA: &str = "ingest_bench";
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .with_context(|| format!("connecting to {url}"))?;
    client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};"
    ))?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-csearch_path%3D{SCHEMA}"))
}

/// Streams `batches` on one stream, at most `window` unacknowledged; returns the deviations
/// acknowledged as stored and each batch's send→ack time in ms.
async fn stream(
    mut client: IngestClient<tonic::transport::Channel>,
    batches: Vec<DeviationBatch>,
    window: usize,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let count = batches.len();
    let permits = Arc::new(Semaphore::new(window));
    let (tx, rx) = tokio::sync::mpsc::channel(window);
    let sent_at = Arc::new(std::sync::Mutex::new(vec![None; count + 1]));
    let sender = {
        let permits = Arc::clone(&permits);
        let sent_at = Arc::clone(&sent_at);
        tokio::spawn(async move {
            for b in batches {
                let Ok(permit) = permits.acquire().await else {
                    return;
                };
                permit.forget();
                sent_at.lock().unwrap()[b.sequence as usize] = Some(Instant::now());
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut acks = client
        .stream_deviations(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut stored = 0;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let ack = acks
            .message()
            .await?
            .context("the collector closed the stream early")?;
        ensure!(ack.duplicates == 0, "fresh batch counted as duplicate");
        stored += ack.stored as usize;
        if let Some(at) = sent_at.lock().unwrap()[ack.sequence as usize] {
            latencies.push(at.elapsed().as_secs_f64() * 1e3);
        }
        permits.add_permits(1);
    }
    sender.await?;
    Ok((stored, latencies))
}

/// A batch of realistic deviations (a new file access with process, ancestry and hash): of run
/// `sequence` of a CI job, or `without_runs`, of a unit in hour `sequence`.
fn make_batch(agent: usize, sequence: usize, size: usize, without_runs: bool) -> DeviationBatch {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let workload = if without_runs {
        Workload {
            id: "unit:bench.service".to_owned(),
            kind: WorkloadKind::SystemdUnit.into(),
            run_id: String::new(),
        }
    } else {
        Workload {
            id: "github:bench/app/ci/build".to_owned(),
            kind: WorkloadKind::GithubJob.into(),
            run_id: sequence.to_string(),
        }
    };
    let deviations = (0..size)
        .map(|i| proto::v1::Deviation {
            id: {
                let id = spread_id(&format!("bench-{agent}-{sequence}-{i}-{now:x}"));
                if without_runs {
                    format!("{sequence:08x}{}", &id[8..])
                } else {
                    id
                }
            },
            time_unix_nanos: now + i as i64,
            host: format!("bench-host-{agent}"),
            workload: Some(workload.clone()),
            kind: DeviationKind::NewFileAccess.into(),
            severity: Severity::Medium.into(),
            summary: format!(
                "new file access /home/runner/work/app/src/module_{i}.rs (read) by /usr/bin/rustc"
            ),
            process: Some(Process {
                pid: 4000 + i as u32,
                ppid: 3999,
                executable: "/usr/bin/rustc".to_owned(),
                argv: vec![
                    "rustc".to_owned(),
                    "--crate-name".to_owned(),
                    "app".to_owned(),
                    "src/lib.rs".to_owned(),
                ],
                uid: 1001,
                euid: 1001,
                ancestry: vec![
                    Ancestor {
                        pid: 3999,
                        executable: "/usr/bin/cargo".to_owned(),
                    },
                    Ancestor {
                        pid: 3000,
                        executable: "/usr/bin/bash".to_owned(),
                    },
                ],
                executable_sha256:
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
                ..Process::default()
            }),
            novelty: Some(Novelty {
                what: Some(What::File(FileAccess {
                    path: format!("/home/runner/work/app/src/module_{i}.rs"),
                    intent: "read".to_owned(),
                })),
            }),
            signals: Vec::new(),
            ..proto::v1::Deviation::default()
        })
        .collect();
    DeviationBatch {
        agent_id: format!("bench-agent-{agent}"),
        sequence: sequence as u64,
        deviations,
        spool_id: format!("bench-spool-{agent}-{now:x}"),
        ..DeviationBatch::default()
    }
}

/// A deviation id shaped like the agent's (64 hex digits of a SHA-256, `detect::ids`): spread
/// uniformly, so consecutive deviations land on unrelated places of any index keyed by id.
/// Sequential ids would flatter the store: they append to that index instead.
fn spread_id(seed: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    (0..4u8)
        .map(|part| format!("{:016x}", state.hash_one((part, seed))))
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised comm; utime and stime are the 14th and 15th overall.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i]
}

fn markdown(samples: &[Sample], args: &Args) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    let section = args.section();
    let _ = writeln!(s, "{}", section.start);
    let _ = writeln!(s, "## {}\n", section.title);
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench-ingest` on {cores} cores: the release collector ({}) on \
         loopback, {} agents streaming over gRPC with {} batches in flight \
         each, every batch acknowledged (committed) before it counts. *per core* is deviations \
         stored per CPU second of the collector process (utime + stime); *collector CPU* is its \
         cores in use over the run; *ack* is one batch's send → acknowledgement time.{}\n",
        if args.db.is_some() {
            "PostgreSQL, a fresh schema per row"
        } else {
            "SQLite, a fresh database per row"
        },
        args.agents,
        args.window,
        if args.without_runs {
            " Every deviation is of one systemd unit (no run id), ids led by their hour as the \
             agent makes them, each batch in an hour of its own."
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| collector | batch size | deviations | wall | stored/s | per core (stored per CPU-s) | collector CPU | ack p50 | ack p99 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for x in samples {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} s | {:.0} | {:.0} | {:.2} core | {:.1} ms | {:.1} ms |",
            x.label,
            x.batch,
            x.deviations,
            x.wall.as_secs_f64(),
            x.per_sec(),
            x.per_core_sec(),
            x.collector_cpu / x.wall.as_secs_f64(),
            x.ack_p50_ms,
            x.ack_p99_ms
        );
    }
    let _ = writeln!(s, "\n{}", section.end);
    s
}

/// `old` with its ingest section replaced by `section` (appended when it has none).
fn replace_section(old: &str, markers: &Section, section: &str) -> String {
    match (old.find(markers.start), old.find(markers.end)) {
        (Some(start), Some(end)) if end > start => {
            let end = end + markers.end.len();
            let rest = old[end..].strip_prefix('\n').unwrap_or(&old[end..]);
            format!("{}{section}{rest}", &old[..start])
        }
        _ if old.is_empty() => section.to_owned(),
        _ => format!("{}\n\n{section}", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_of_a_run_or_of_an_hour_of_a_unit() {
        let run = make_batch(0, 17, 3, false);
        let unit = make_batch(0, 17, 3, true);
        for d in &run.deviations {
            assert_eq!(d.workload.as_ref().unwrap().run_id, "17");
            assert_eq!(d.id.len(), 64);
        }
        for d in &unit.deviations {
            assert_eq!(d.workload.as_ref().unwrap().run_id, "");
            assert!(d.id.starts_with("00000011"), "{}", d.id);
            assert_eq!(d.id.len(), 64);
        }
        let distinct: std::collections::HashSet<&str> =
            unit.deviations.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let m = &SECTIONS[0];
        let section = format!("{}\nnew\n{}\n", m.start, m.end);
        let appended = replace_section("# Benchmarks\n\ntable\n", m, &section);
        assert_eq!(appended, format!("# Benchmarks\n\ntable\n\n{section}"));
        let old = format!("# B\n\n{}\nold\n{}\n\n## After\n", m.start, m.end);
        assert_eq!(
            replace_section(&old, m, &section),
            format!("# B\n\n{section}\n## After\n")
        );
    }
}
