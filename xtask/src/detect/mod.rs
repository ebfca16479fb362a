//! `cargo xtask detect`: detection quality, measured with the real binaries.
//!
//! Benign workloads built with real tools run as GitHub-Actions-like jobs, each run with a new
//! `GITHUB_RUN_ID` (`workloads`, `jobs`): a C project with make + gcc, a Rust crate with
//! dependencies from crates.io, a Node project installed from npm and tested, a Python package set
//! installed from PyPI into a venv and tested. Plus a long-running service, nginx under load
//! (`service`), learnt by time. The sensor learns from the first runs (or the first period); then
//! benign runs count false alarms (medium or higher) and attack runs, one injected behaviour per
//! run in an otherwise identical job (`attacks`), count detections: a HIGH or CRITICAL deviation
//! of that run naming the action, as stored by the real collector (`store`).
//!
//! Extra sensors with fewer learning runs (and shorter periods) watch the same runs side by side,
//! under other host names, to show how much learning it takes before false alarms reach zero.
//!
//! This module uses only std, anyhow, serde_json, tempfile and libc so that the privileged test
//! `tests/tests/detection.rs` can include it and run the quick subset in CI.

mod attacks;
mod cache;
mod evasion;
mod evasion_run;
mod jobs;
mod judge;
mod listeners;
mod report;
mod service;
mod store;
mod workloads;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub use attacks::{ATTACKS, Attack, Listener};
pub use evasion_run::EvasionResult;
pub use jobs::{Guard, JobRunner, tool_env, wait_until, workload_id};
use judge::{Runs, attack_run, chosen_attacks, collect};
pub use report::markdown;
pub use store::Run;
pub use workloads::Workload;

/// How much to run.
pub struct Plan {
    /// Directory holding the `sensor`, `collector` and `actor` binaries.
    pub bin_dir: PathBuf,
    /// Where the registry caches live (filled by a real fetch on first use).
    pub cache_dir: PathBuf,
    /// CI-job workloads to run.
    pub jobs: Vec<Workload>,
    /// Whether to run the nginx service workload.
    pub service: bool,
    pub learning_runs: u32,
    pub benign_runs: u32,
    /// The main sensor's learning period, for the service.
    pub learning_period: Duration,
    /// The service's time windows: each starts with a log rotation and reload.
    pub window: Duration,
    /// Benign windows of the service after the main sensor's learning period.
    pub benign_windows: u32,
    /// Only the first variant of each family.
    pub one_per_family: bool,
    /// Only the evasion variants of these families (all when empty).
    pub evasion_families: Vec<String>,
    /// Run the attack families of `attacks`.
    pub attacks: bool,
    /// Run the evasion families of `evasion`.
    pub evasion: bool,
    /// Extra sensors for the learning curve: (learning runs, learning period).
    pub curve: Vec<(u32, Duration)>,
}

impl Plan {
    /// The noise measurement (issue 14): every CI job, 5 learning runs then `clean` clean runs,
    /// one attack per family; no service, no learning curve.
    pub fn noise(bin_dir: PathBuf, clean: u32) -> Plan {
        Plan {
            // The git job first: its names are the noise this measures.
            jobs: [
                Workload::Git,
                Workload::C,
                Workload::Node,
                Workload::Python,
                Workload::Rust,
            ]
            .to_vec(),
            service: false,
            // The evasion families have their own section (and take long): not noise.
            evasion: false,
            benign_runs: clean,
            one_per_family: true,
            evasion_families: Vec::new(),
            curve: Vec::new(),
            ..Plan::new(bin_dir, false)
        }
    }

    /// The full suite, or with `quick` the C and Rust jobs, one benign run and one variant per
    /// family, without the service and the learning curve.
    pub fn new(bin_dir: PathBuf, quick: bool) -> Plan {
        Plan {
            cache_dir: cache::default_dir(&bin_dir),
            bin_dir,
            jobs: if quick {
                vec![Workload::C, Workload::Rust]
            } else {
                Workload::JOBS.to_vec()
            },
            service: !quick,
            learning_runs: 5,
            benign_runs: if quick { 1 } else { 5 },
            learning_period: Duration::from_secs(30),
            window: Duration::from_secs(5),
            benign_windows: 4,
            one_per_family: quick,
            evasion_families: Vec::new(),
            attacks: true,
            evasion: true,
            curve: if quick {
                Vec::new()
            } else {
                vec![
                    (1, Duration::from_secs(5)),
                    (2, Duration::from_secs(10)),
                    (3, Duration::from_secs(20)),
                ]
            },
        }
    }
}

#[derive(Debug)]
pub struct AttackResult {
    pub family: &'static str,
    pub name: &'static str,
    pub workload: Workload,
    /// The run id, or the service window's offset from the service's start.
    pub run: String,
    /// The strongest deviation of the run naming the action ("severity kind: summary").
    pub evidence: Option<String>,
    pub detected: bool,
    /// Collector `received` minus deviation `time` for the detecting deviation, in ms.
    pub latency_ms: Option<f64>,
}

#[derive(Debug)]
pub struct BenignResult {
    pub workload: Workload,
    pub run: String,
    /// Medium-or-higher deviations of the run ("severity kind: summary").
    pub alarms: Vec<String>,
    /// Every deviation stored for the run, by severity: info, low, medium, high, critical.
    pub stored: [usize; 5],
    /// Every deviation stored for the run ("severity kind: summary").
    pub noise: Vec<String>,
}

impl BenignResult {
    /// Deviations of any severity stored for the run.
    pub fn total(&self) -> usize {
        self.stored.iter().sum()
    }
}

/// False alarms of one sensor configuration on one workload, over the runs it judged.
#[derive(Debug)]
pub struct CurvePoint {
    pub workload: Workload,
    pub learning_runs: u32,
    pub learning_period: Duration,
    /// Benign runs (or service windows) after this sensor's learning.
    pub judged: usize,
    pub alarms: usize,
    /// A few of the alarms ("severity kind: summary").
    pub examples: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub attacks: Vec<AttackResult>,
    pub evasion: Vec<EvasionResult>,
    pub benign: Vec<BenignResult>,
    pub curve: Vec<CurvePoint>,
    /// Every deviation the main sensor stored for the suite's workloads: received minus time, ms.
    pub all_latencies_ms: Vec<f64>,
    pub learning_runs: u32,
    pub learning_period: Duration,
    pub window: Duration,
    /// Requests the service answered during the suite.
    pub service_requests: u64,
    /// Per sensor (host name): events decoded and kernel records lost, from its status file.
    pub sensors: Vec<(String, u64, u64)>,
    pub elapsed: Duration,
}

const MAIN_HOST: &str = "detect-main";

fn curve_host(runs: u32) -> String {
    format!("detect-learn-{runs}")
}

fn start_sensor(
    bin_dir: &Path,
    server: &str,
    state: &Path,
    host: &str,
    runs: u32,
    period: Duration,
) -> anyhow::Result<Guard> {
    let sensor = Guard(
        Command::new(bin_dir.join("sensor"))
            .args(["run", "--collector", server, "--host", host])
            // Its own metrics port: several sensors run side by side (the default is fixed).
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--learning-runs", &runs.to_string()])
            .args(["--learning-period", &format!("{}s", period.as_secs())])
            .arg("--state-dir")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(log_file(state)?)
            .spawn()
            .context("starting the sensor")?,
    );
    wait_until("the sensor to attach", Duration::from_secs(60), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    })
    .with_context(|| log_tail(state))?;
    Ok(sensor)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The sensor's log, beside its state directory.
fn log_file(state: &Path) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::File::create(state.with_extension("log"))?)
}

/// The end of the sensor's log, for an error message.
fn log_tail(state: &Path) -> String {
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "sensor log:\n{}",
        lines[lines.len().saturating_sub(10)..].join("\n")
    )
}

/// Runs the plan: collector and sensors on loopback, every workload learned, benign runs, then
/// one attack per run; judged from the collector's store.
pub fn measure(plan: &Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let collector_bin = plan.bin_dir.join("collector");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Guard(
        Command::new(&collector_bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            // Its own metrics port: other collectors may run on this host (the default is fixed).
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port()?)])
            .arg("--db")
            .arg(tmp.path().join("collector.db"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("collector.log"))?)
            .spawn()
            .context("starting the collector")?,
    );
    wait_until("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })?;
    let mut runner = JobRunner {
        root: tmp.path().join("jobs"),
        actor: plan.bin_dir.join("actor"),
        known_port: listeners::start(Listener::Http)?,
        cache: cache::Cache {
            dir: plan.cache_dir.clone(),
        },
        tools: tool_env(),
        next_run: 1000,
    };
    // Fill the registry caches before any sensor watches: the first fetch is not a job run.
    for &w in &plan.jobs {
        runner.prepare(w)?;
    }
    let mut sensors = vec![start_sensor(
        &plan.bin_dir,
        &server,
        &tmp.path().join("state-main"),
        MAIN_HOST,
        plan.learning_runs,
        plan.learning_period,
    )?];
    for &(runs, period) in &plan.curve {
        sensors.push(start_sensor(
            &plan.bin_dir,
            &server,
            &tmp.path().join(format!("state-{runs}")),
            &curve_host(runs),
            runs,
            period,
        )?);
    }

    let suite = evasion_run::Suite::new(
        &tmp.path().join("evasion"),
        tmp.path().join("state-main"),
        collector_bin.clone(),
        server.clone(),
        MAIN_HOST.to_owned(),
    )?;
    let mut runs = Runs::default();
    for &w in &plan.jobs {
        let mut benign = Vec::new();
        for _ in 0..plan.learning_runs + plan.benign_runs {
            benign.push(runner.run(w, "", None)?);
        }
        let learning_run = benign[0].run_id.clone().unwrap_or_default();
        runs.benign.insert(w, benign);
        for attack in chosen_attacks(plan) {
            let exfil = listeners::start(attack.listener)?;
            let run = runner.run(w, attack.script, Some(exfil))?;
            runs.attacks.push(attack_run(w, attack, run, exfil));
        }
        if plan.evasion {
            evasion_run::on_job(
                &mut runner,
                w,
                &learning_run,
                plan,
                &suite,
                false,
                &mut runs.evasion,
            )?;
        }
        eprintln!("[detect] {} done ({:.0?})", w.job(), started.elapsed());
    }
    let mut service_requests = 0;
    if plan.service {
        let svc = service::Service::start(&runner.root)?;
        runs.service_id = Some(svc.workload_id());
        runs.service_start_ns = store::now_ns();
        let windows = plan
            .learning_period
            .as_secs()
            .div_ceil(plan.window.as_secs().max(1))
            + 1
            + u64::from(plan.benign_windows);
        let mut benign = Vec::new();
        for _ in 0..windows {
            let t = Instant::now();
            let start_ns = store::now_ns();
            svc.operate()?;
            std::thread::sleep(plan.window.saturating_sub(t.elapsed()));
            benign.push(Run {
                run_id: None,
                start_ns,
                end_ns: store::now_ns(),
            });
        }
        runs.benign.insert(Workload::Service, benign);
        for attack in chosen_attacks(plan) {
            let exfil = listeners::start(attack.listener)?;
            let env = [
                ("ACTOR", runner.actor.display().to_string()),
                ("EXFIL_PORT", exfil.to_string()),
            ];
            let run = svc.exec_in(attack.script, &env)?;
            runs.attacks
                .push(attack_run(Workload::Service, attack, run, exfil));
        }
        if plan.evasion {
            evasion_run::on_service(
                &svc,
                runs.service_start_ns,
                &runner.actor,
                plan,
                &suite,
                &mut runs.evasion,
            )?;
        }
        service_requests = svc.served.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("[detect] service done ({:.0?})", started.elapsed());
    }

    // Last: variants that may leave the agent stuck for good.
    if let Some(&w) = plan.jobs.first().filter(|_| plan.evasion) {
        let learning_run = runs.benign[&w][0].run_id.clone().unwrap_or_default();
        evasion_run::on_job(
            &mut runner,
            w,
            &learning_run,
            plan,
            &suite,
            true,
            &mut runs.evasion,
        )?;
        eprintln!("[detect] evasion done ({:.0?})", started.elapsed());
    }

    let stored = collect(plan, &collector_bin, &server, &runs)?;
    let evasion = evasion_run::judge(&runs.evasion, &suite)?;
    drop(sensors);
    // Their final status (written at exit): a lost record is an event nobody judged.
    let mut counts = Vec::new();
    let hosts = [(MAIN_HOST.to_owned(), "state-main".to_owned())]
        .into_iter()
        .chain(
            plan.curve
                .iter()
                .map(|(r, _)| (curve_host(*r), format!("state-{r}"))),
        );
    for (host, state) in hosts {
        let status: Value = std::fs::read_to_string(tmp.path().join(state).join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        counts.push((
            host,
            status["events"].as_u64().unwrap_or(0),
            status["lost"].as_u64().unwrap_or(0),
        ));
    }
    let mut report = judge::judge(plan, &runs, &stored);
    report.evasion = evasion;
    report.service_requests = service_requests;
    report.sensors = counts;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// `cargo xtask detect --noise N`: every CI job, 5 learning runs, `clean` clean runs and one
/// attack per family, with the binaries in `bin_dir`; writes the noise table and the attack
/// results to `out` (a section for DETECTION.md's noise part).
pub fn run_noise(bin_dir: &Path, clean: u32, jobs: &[String], out: &Path) -> anyhow::Result<()> {
    // Jobs run elsewhere: the attacks name the actor by this path.
    let bin_dir = bin_dir
        .canonicalize()
        .with_context(|| format!("{}", bin_dir.display()))?;
    let mut plan = Plan::noise(bin_dir, clean);
    if !jobs.is_empty() {
        plan.jobs.retain(|w| jobs.iter().any(|j| j == w.job()));
        if plan.jobs.is_empty() {
            bail!("none of the jobs {jobs:?} is a CI job of the suite");
        }
    }
    let report = measure(&plan)?;
    let mut md = report::noise_table(&report);
    let detected = report.attacks.iter().filter(|a| a.detected).count();
    md += &format!(
        "\nAttacks: {detected} of {} detected (HIGH or CRITICAL), one per family per job; suite took {:.0} s; kernel records lost: {:?}\n",
        report.attacks.len(),
        report.elapsed.as_secs_f64(),
        report.sensors
    );
    for a in report.attacks.iter().filter(|a| !a.detected) {
        md += &format!(
            "- missed: {} / {} / {}: {:?}\n",
            a.workload.job(),
            a.family,
            a.name,
            a.evidence
        );
    }
    std::fs::write(out, &md)?;
    print!("{md}");
    Ok(())
}

/// `cargo xtask detect`: builds the binaries, measures, writes `out`.
pub fn run(quick: bool, out: &Path, no_build: bool) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    if !no_build {
        build(root)?;
    }
    // Release binaries, as deployed: the suite runs several sensors side by side on busy jobs.
    let report = measure(&Plan::new(root.join("target/release"), quick))?;
    let md = markdown(&report, quick);
    std::fs::write(root.join(out), &md)?;
    print!("{md}");
    Ok(())
}

fn build(root: &Path) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
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
            "actor",
        ])
        .status()?;
    if !status.success() {
        bail!("building the release sensor, collector and actor failed");
    }
    Ok(())
}
