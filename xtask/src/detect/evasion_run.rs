//! Running the variants of `evasion` against the real sensor, and judging each run from what the
//! collector stored for it (queried by time window, so a flood in one run cannot push another
//! run's deviations out of the answer).

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::Value;

use super::attacks::Listener;
use super::evasion::{EVASIONS, Evasion, Scope};
use super::jobs::{JobRunner, wait_until};
use super::service::{Service, cgroup2_root};
use super::store::{self, Run};
use super::workloads::Workload;
use super::{Plan, listeners};

/// The io_uring helper the io_uring variants run.
const URING_PY: &str = include_str!("uring.py");

/// The family whose runs also record the main sensor's kernel losses.
const LOSS_FAMILY: &str = "kernel loss";
/// Floods record them too (over their prime and their run): a flood that overruns the ring can
/// lose the next run's action with it.
const FLOOD_FAMILY: &str = "flood";

/// What every variant needs besides its target.
pub(super) struct Suite {
    /// Where `uring.py` was written.
    pub(super) uring: PathBuf,
    /// The main sensor's state directory (its `status.json` counts kernel losses).
    pub(super) main_state: PathBuf,
    /// The `collector` binary, the collector's URL, and the host name of the judged sensor.
    pub(super) collector: PathBuf,
    pub(super) server: String,
    pub(super) host: String,
}

impl Suite {
    /// Writes the io_uring helper under `root`.
    pub(super) fn new(
        root: &Path,
        main_state: PathBuf,
        collector: PathBuf,
        server: String,
        host: String,
    ) -> anyhow::Result<Suite> {
        // Not named after io_uring: its own path must not match the io_uring needles.
        let uring = root.join("ring-helper.py");
        std::fs::create_dir_all(root)?;
        std::fs::write(&uring, URING_PY)?;
        Ok(Suite {
            uring,
            main_state,
            collector,
            server,
            host,
        })
    }
}

/// One variant that ran, waiting to be judged.
pub(super) struct EvasionRun {
    pub(super) workload: Workload,
    pub(super) workload_id: String,
    pub(super) evasion: &'static Evasion,
    pub(super) run: Run,
    pub(super) prime: Option<Run>,
    pub(super) needles: Vec<String>,
    pub(super) lost: Option<u64>,
    /// What a service window's label counts from (the service's start).
    pub(super) origin_ns: i128,
}

#[derive(Debug)]
pub struct EvasionResult {
    pub family: &'static str,
    pub name: &'static str,
    pub workload: Workload,
    /// The run id, or the service window's start.
    pub run: String,
    /// The strongest deviation of the run naming the action ("severity kind: summary").
    pub evidence: Option<String>,
    pub detected: bool,
    /// Why evidence at the required severity still does not count (too late, flood unbounded).
    pub shortfall: Option<String>,
    pub latency_ms: Option<f64>,
    /// Deviations stored for the prime run, for floods (the query returns at most 10000).
    pub prime_stored: Option<usize>,
    /// Kernel records the main sensor lost during the run (kernel-loss variants).
    pub lost: Option<u64>,
}

/// The variants to run in `scope`: all of them, or the first of each family (of the plan's
/// families, when it names some).
pub(super) fn chosen(plan: &Plan, scope: impl Fn(Scope) -> bool) -> Vec<(usize, &'static Evasion)> {
    let mut families = BTreeSet::new();
    let wanted = |e: &Evasion| {
        plan.evasion_families.is_empty() || plan.evasion_families.iter().any(|f| f == e.family)
    };
    EVASIONS
        .iter()
        .enumerate()
        .filter(|(_, e)| wanted(e))
        .filter(|(_, e)| !plan.one_per_family || families.insert(e.family))
        .filter(|(_, e)| scope(e.scope))
        .collect()
}

/// Unique per variant and workload: names its files, secret and cgroup.
fn tag(index: usize, w: Workload) -> String {
    format!("ev{index:02}w{}", w as u8)
}

/// A fresh fake credential for the variant: `home/.ssh/id_<tag>`.
fn plant_secret(home: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let path = home.join(".ssh").join(format!("id_{tag}"));
    std::fs::create_dir_all(path.parent().context("secret dir")?)?;
    std::fs::write(&path, "token=not-a-real-secret\n")?;
    Ok(path)
}

fn needles(e: &Evasion, w: Workload, tag: &str, port: u16) -> Vec<String> {
    e.needles
        .iter()
        .map(|n| {
            n.replace("{port}", &port.to_string())
                .replace("{artifact}", w.artifact())
                .replace("{secret}", &format!("id_{tag}"))
                .replace("{tag}", tag)
        })
        .collect()
}

fn env(suite: &Suite, tag: &str, secret: &Path, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("TAG", tag.to_owned()),
        ("SECRET", secret.display().to_string()),
        ("EXFIL_PORT", port.to_string()),
        ("URING", suite.uring.display().to_string()),
        ("CGROUP2", cgroup2_root().display().to_string()),
    ]
}

/// Runs `f`, returning its result and, for the kernel-loss and flood families, the records the
/// main sensor lost meanwhile (its status file is rewritten every few seconds: wait for one written after).
fn counting_losses<T>(
    suite: &Suite,
    e: &Evasion,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Option<u64>)> {
    if e.family != LOSS_FAMILY && e.family != FLOOD_FAMILY {
        return Ok((f()?, None));
    }
    let before = status_lost(&suite.main_state).map_or(0, |(_, lost)| lost);
    let out = f()?;
    let ended = SystemTime::now();
    // A sensor busy with the flood's backlog writes its status late: unknown then, not an error.
    let after = wait_until(
        "the sensor's status after the run",
        Duration::from_secs(60),
        || status_lost(&suite.main_state).filter(|(written, _)| *written > ended),
    )
    .ok();
    Ok((out, after.map(|(_, lost)| lost.saturating_sub(before))))
}

/// When the sensor's status file was written, and its kernel-loss count.
fn status_lost(state: &Path) -> Option<(SystemTime, u64)> {
    let path = state.join("status.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    let status: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some((written, status["lost"].as_u64()?))
}

/// Waits until the agent has judged and delivered everything that happened before now (it may
/// still be draining an earlier flood's backlog): a marker run of job `w` reads a fresh fake
/// credential (`id_<tag>-ready`, a HIGH novelty) and the collector must have its deviation.
fn caught_up(runner: &mut JobRunner, w: Workload, suite: &Suite, tag: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let marker = plant_secret(&runner.job_dir(w).join("home"), &format!("{tag}-ready"))?;
    let vars = [("MARKER", marker.display().to_string())];
    let run = runner.run_env(w, "cat \"$MARKER\" > /dev/null", &vars)?;
    let name = format!("id_{tag}-ready");
    let workload = super::workload_id(w);
    wait_until(
        "the agent to catch up (the marker run's deviation stored)",
        Duration::from_secs(600),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let stored = store::deviations_between(
                &suite.collector,
                &suite.server,
                &workload,
                &suite.host,
                run.start_ns - 2_000_000_000,
                store::now_ns() + 2_000_000_000,
            )
            .ok()?;
            stored
                .iter()
                .any(|d| run.contains(d) && names(d, std::slice::from_ref(&name)))
                .then_some(())
        },
    )?;
    eprintln!(
        "[detect] the agent caught up in {:.1?} before a timed variant",
        started.elapsed()
    );
    Ok(())
}

/// The cgroup an identity-switch variant may have made, removed once its process has left.
fn remove_cgroup(tag: &str) {
    let cg = cgroup2_root().join(format!("evade-{tag}"));
    if cg.exists() {
        let _ = wait_until(
            "the evasion cgroup to empty",
            Duration::from_secs(5),
            || std::fs::remove_dir(&cg).ok(),
        );
    }
}

/// Runs the job's variants of `scope` (`Every` and `Jobs`, or `Last`), each after its prime run.
pub(super) fn on_job(
    runner: &mut JobRunner,
    w: Workload,
    learning_run: &str,
    plan: &Plan,
    suite: &Suite,
    last: bool,
    out: &mut Vec<EvasionRun>,
) -> anyhow::Result<()> {
    for (index, e) in chosen(plan, |s| (s == Scope::Last) == last) {
        if e.max_latency_ms.is_some() {
            // Timed from a standing start: what is timed is how the agent copes with what the
            // variant plants, not the backlog an earlier flood left it.
            caught_up(runner, w, suite, &tag(index, w))?;
        }
        let tag = tag(index, w);
        let secret = plant_secret(&runner.job_dir(w).join("home"), &tag)?;
        let port = listeners::start(Listener::Http)?;
        let mut vars = env(suite, &tag, &secret, port);
        vars.push(("LEARNING_RUN_ID", learning_run.to_owned()));
        let ((prime, run), lost) = counting_losses(suite, e, || {
            let prime = e.prime.map(|p| runner.run_env(w, p, &vars)).transpose()?;
            Ok((prime, runner.run_env(w, e.script, &vars)?))
        })?;
        remove_cgroup(&tag);
        out.push(EvasionRun {
            workload: w,
            workload_id: super::workload_id(w),
            evasion: e,
            run,
            prime,
            needles: needles(e, w, &tag, port),
            lost,
            origin_ns: 0,
        });
        if last {
            unfreeze(out.last().expect("just pushed"), runner, suite)?;
        }
    }
    Ok(())
}

/// Runs the variants that apply to a service (`Scope::Every`) in the service's cgroup.
pub(super) fn on_service(
    svc: &Service,
    origin_ns: i128,
    actor: &Path,
    plan: &Plan,
    suite: &Suite,
    out: &mut Vec<EvasionRun>,
) -> anyhow::Result<()> {
    for (index, e) in chosen(plan, |s| s == Scope::Every) {
        let tag = tag(index, Workload::Service);
        let secret = plant_secret(&svc.home(), &tag)?;
        let port = listeners::start(Listener::Http)?;
        let mut vars = env(suite, &tag, &secret, port);
        vars.push(("ACTOR", actor.display().to_string()));
        let ((prime, run), lost) = counting_losses(suite, e, || {
            let prime = e.prime.map(|p| svc.exec_in(p, &vars)).transpose()?;
            Ok((prime, svc.exec_in(e.script, &vars)?))
        })?;
        remove_cgroup(&tag);
        out.push(EvasionRun {
            workload: Workload::Service,
            workload_id: svc.workload_id(),
            evasion: e,
            run,
            prime,
            needles: needles(e, Workload::Service, &tag, port),
            lost,
            origin_ns,
        });
    }
    Ok(())
}

/// After a variant that may freeze the agent: give the agent its seconds to report the
/// follow-up, then replace any FIFO left in the workspace by a regular file, so that a stuck
/// agent gets an end of file and its later looks find a file: later variants are measured on a
/// live agent.
fn unfreeze(r: &EvasionRun, runner: &JobRunner, suite: &Suite) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !judge_one(r, suite)?.0.detected {
        std::thread::sleep(Duration::from_millis(500));
    }
    let ws = runner.job_dir(r.workload).join("ws");
    for entry in std::fs::read_dir(&ws)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_fifo()) {
            release_fifo(&entry.path())?;
        }
    }
    Ok(())
}

/// Opens `fifo` for writing (a reader blocked in open(2) gets it, then an end of file when the
/// writer closes), and meanwhile renames a regular file over its path.
fn release_fifo(fifo: &Path) -> anyhow::Result<()> {
    // No reader: ENXIO, nothing blocked.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .ok();
    let plain = fifo.with_extension("released");
    std::fs::write(&plain, "")?;
    std::fs::rename(&plain, fifo)?;
    drop(writer);
    Ok(())
}

/// How long after a run's end its deviations may be timed: kernel events are timed when they
/// happen, inside the run; a blind spot when the agent notices the loss, at a housekeeping tick
/// after the flood's backlog (minutes for a debug build on a busy machine).
fn slack(e: &Evasion) -> Duration {
    if e.family == LOSS_FAMILY {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(3)
    }
}

/// The stored deviations of `run` (a variant's run or its prime).
fn stored(r: &EvasionRun, run: &Run, suite: &Suite) -> anyhow::Result<Vec<Value>> {
    let all = store::deviations_between(
        &suite.collector,
        &suite.server,
        &r.workload_id,
        &suite.host,
        run.start_ns - 2_000_000_000,
        run.end_ns + slack(r.evasion).as_nanos() as i128,
    )?;
    Ok(all.into_iter().filter(|d| run.contains(d)).collect())
}

/// Whether deviation `d` names the action: one of `needles` in its kind, novelty, summary or
/// (for an aggregate) its samples' summaries.
fn names(d: &Value, needles: &[String]) -> bool {
    let text = format!(
        "{} {} {} {}",
        d["kind"], d["novelty"], d["summary"], d["samples"]
    );
    needles.iter().any(|n| text.contains(n.as_str()))
}

/// The judgement of one run from what is stored now, and how many deviations its run has.
fn judge_one(r: &EvasionRun, suite: &Suite) -> anyhow::Result<(EvasionResult, usize)> {
    let e = r.evasion;
    let run = stored(r, &r.run, suite)?;
    // The most severe; of those, the first stored after its action.
    let best = run.iter().filter(|d| names(d, &r.needles)).max_by(|a, b| {
        store::severity(a).cmp(&store::severity(b)).then_with(|| {
            let late = |d: &Value| store::latency_ms(d).unwrap_or(f64::MAX);
            late(b).total_cmp(&late(a))
        })
    });
    let latency_ms = best.and_then(store::latency_ms);
    let prime_stored = match (&r.prime, e.prime_bound) {
        (Some(prime), Some(_)) => Some(stored(r, prime, suite)?.len()),
        _ => None,
    };
    let strong = best.is_some_and(|d| store::severity(d) >= e.min_severity);
    let shortfall = shortfall(e, best.is_some(), latency_ms, prime_stored);
    let result = EvasionResult {
        family: e.family,
        name: e.name,
        workload: r.workload,
        run: r.run.label(r.origin_ns),
        evidence: best.map(store::describe),
        detected: strong && shortfall.is_none(),
        shortfall,
        latency_ms,
        prime_stored,
        lost: r.lost,
    };
    Ok((result, run.len()))
}

/// Why a run still does not count as detected beyond its evidence: a follow-up stored too late
/// (a stalled agent), or a flood that stored more than its bound.
fn shortfall(
    e: &Evasion,
    evidence: bool,
    latency_ms: Option<f64>,
    prime_stored: Option<usize>,
) -> Option<String> {
    if let (Some(max), true) = (e.max_latency_ms, evidence) {
        let late = latency_ms.is_none_or(|l| l > max);
        if late {
            return Some(format!(
                "stored {:.0} ms after the action (more than {max:.0} ms)",
                latency_ms.unwrap_or(f64::NAN)
            ));
        }
    }
    match (e.prime_bound, prime_stored) {
        (Some(bound), Some(n)) if n > bound => Some(format!(
            "the flood run stored {n} deviations (more than {bound}; the query returns at most 10000)"
        )),
        _ => None,
    }
}

/// Judges every run once every variant is detected or nothing new has been stored for 10 s.
pub(super) fn judge(runs: &[EvasionRun], suite: &Suite) -> anyhow::Result<Vec<EvasionResult>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let judged = runs
            .iter()
            .map(|r| judge_one(r, suite))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stored: usize = judged.iter().map(|(_, n)| n).sum();
        if stored != last.0 {
            last = (stored, Instant::now());
        }
        let all = judged.iter().all(|(r, _)| r.detected);
        if all || last.1.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            return Ok(judged.into_iter().map(|(r, _)| r).collect());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
