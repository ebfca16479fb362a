//! DETECTION.md: detection per family and workload, false alarms, the learning curve, latency,
//! and every attack with the deviation that caught (or failed to catch) it.

use super::store::percentile;
use super::{AttackResult, BenignResult, EvasionResult, Report, Workload};

/// What each workload is, for the report.
fn about(w: Workload) -> &'static str {
    match w {
        Workload::C => "make + gcc, run the binary",
        Workload::Rust => {
            "cargo build + test of a crate using anyhow, fastrand, itoa, memchr (crates.io)"
        }
        Workload::Node => "`npm ci` of ms + semver (npm registry), `npm test` (node --test)",
        Workload::Python => {
            "venv, `pip install` of pytest + packaging (PyPI wheelhouse), pytest, run a script"
        }
        Workload::Git => "git init/add/commit of the checkout, tar of it, a shell script using git",
        Workload::Service => {
            "nginx in its own cgroup under 50 req/s, log rotation + reload every window"
        }
    }
}

/// How to read the tables: what the suite does and does not show. Written by hand; keep in step
/// with the attacks and the workloads.
const NOTES: &str = "
## Reading the results

- A miss is listed in the per-attack table with the strongest deviation of the run that named
  the action: MEDIUM means the sensor saw it but did not rank it as an attack; `none` means no
  stored deviation of the run named it (for the service, a MEDIUM may also have been counted into
  an aggregated deviation once 20 of its kind were sent in the hour: only HIGH and CRITICAL are
  never held back).
- The service's *modify a build output* appends to the page nginx serves, a file the operator put
  there, not one the workload wrote; for CI jobs it is a file the job itself produced (the linked
  binary, an installed dependency, the venv), which is what the output-tampering rule looks at.
- Attacks on the service run as new processes placed in the service's cgroup (what a remote code
  execution would start); nginx itself does not spawn them, so there is no nginx → shell edge.
- Every network target is on loopback, including the DNS resolver the tunnelling queries go to.
- Every injected behaviour is new for its workload (a new file, tool, destination or privileged
  call). An attack that only repeats what the job already does (its own tools, its known
  endpoint, its own output paths with the same writer) is outside what a behaviour baseline can
  see, and this suite does not measure it; 100% here means: every novel behaviour of these
  families was ranked HIGH, not: every attack is caught.
- The learning-curve table runs sensors with 1, 2 and 3 learning runs (5, 10, 20 s for the
  service) beside the main one on the same runs; the examples under it show what a sensor that
  learned too little still reports.
- *kernel records lost* is each sensor's final count: a lost record is an event nobody judged, so
  a run with losses is not a clean measurement.
";

fn rate(runs: &[&AttackResult]) -> String {
    let hit = runs.iter().filter(|a| a.detected).count();
    format!(
        "{hit}/{} ({:.0}%)",
        runs.len(),
        100.0 * hit as f64 / runs.len().max(1) as f64
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} ms"))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Stored deviations per clean run (after learning), by severity, per job: the noise an operator
/// reads (issue 14's budget: at most 3 per clean run on average, none medium or higher).
pub fn noise_table(report: &Report) -> String {
    let mut s = String::from(
        "\n## Noise per clean run\n\n| job | clean runs | stored per run | info | low | medium+ | what was stored |\n|---|---|---|---|---|---|---|\n",
    );
    let mut jobs: Vec<Workload> = report.benign.iter().map(|b| b.workload).collect();
    jobs.dedup();
    for w in jobs {
        let runs: Vec<&BenignResult> = report.benign.iter().filter(|b| b.workload == w).collect();
        let n = runs.len().max(1) as f64;
        let sum = |range: std::ops::Range<usize>| -> f64 {
            runs.iter()
                .map(|b| b.stored[range.clone()].iter().sum::<usize>())
                .sum::<usize>() as f64
                / n
        };
        let total = runs.iter().map(|b| b.total()).sum::<usize>() as f64 / n;
        let mut what: Vec<String> = runs.iter().flat_map(|b| b.noise.iter().cloned()).collect();
        what.sort();
        what.dedup();
        s += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
            w.job(),
            runs.len(),
            total,
            sum(0..1),
            sum(1..2),
            sum(2..5),
            if what.is_empty() {
                "nothing".to_owned()
            } else {
                cell(&what.into_iter().take(6).collect::<Vec<_>>().join("<br>"))
            }
        );
    }
    s
}

/// The markdown report.
pub fn markdown(report: &Report, quick: bool) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    s += "# Detection quality\n\n";
    s += &format!(
        "Produced by `cargo xtask detect{}` on Linux {} ({cores} cores) in {:.0} s. Each attack is \
         one run of an otherwise identical CI job after {} learning runs (for the service: a \
         process in the service's cgroup after a {} s learning period); detected = a HIGH or \
         CRITICAL deviation of that run, as stored by the collector, naming the action. False \
         alarms = deviations of medium or higher severity in a benign run after learning.\n\n",
        if quick { " --quick" } else { "" },
        kernel.trim(),
        report.elapsed.as_secs_f64(),
        report.learning_runs,
        report.learning_period.as_secs(),
    );
    let mut workloads: Vec<Workload> = report.attacks.iter().map(|a| a.workload).collect();
    workloads.sort();
    workloads.dedup();

    s += "## Workloads\n\n| workload | what runs | learning |\n|---|---|---|\n";
    for w in &workloads {
        let learning = if *w == Workload::Service {
            format!(
                "{} s of time; benign windows of {} s",
                report.learning_period.as_secs(),
                report.window.as_secs()
            )
        } else {
            format!(
                "{} runs, each with a new GITHUB_RUN_ID",
                report.learning_runs
            )
        };
        s += &format!("| {} | {} | {learning} |\n", w.job(), about(*w));
    }
    if report.service_requests > 0 {
        s += &format!(
            "\nThe service answered {} requests during the suite.\n",
            report.service_requests
        );
    }
    s += "\n";

    s += "## Detection per family\n\n| family |";
    for w in &workloads {
        s += &format!(" {} |", w.job());
    }
    s += " all |\n|---|";
    s += &"---|".repeat(workloads.len() + 1);
    s += "\n";
    let mut families: Vec<&str> = Vec::new();
    for a in &report.attacks {
        if !families.contains(&a.family) {
            families.push(a.family);
        }
    }
    for f in families.iter().map(Some).chain([None]) {
        let in_family = |a: &&AttackResult| f.is_none_or(|f| a.family == *f);
        s += &format!("| {} |", f.map_or("**overall**", |f| f));
        for w in &workloads {
            let runs: Vec<&AttackResult> = report
                .attacks
                .iter()
                .filter(|a| a.workload == *w)
                .filter(in_family)
                .collect();
            s += &format!(" {} |", rate(&runs));
        }
        let runs: Vec<&AttackResult> = report.attacks.iter().filter(in_family).collect();
        s += &format!(" **{}** |\n", rate(&runs));
    }
    s += "\n";

    let alarms: usize = report.benign.iter().map(|b| b.alarms.len()).sum();
    let det: Vec<f64> = report.attacks.iter().filter_map(|a| a.latency_ms).collect();
    s += "## False alarms and latency\n\n| measure | value |\n|---|---|\n";
    s += &format!(
        "| false alarms (medium+) per benign run after learning | {:.2} ({alarms} in {} runs/windows) |\n",
        alarms as f64 / report.benign.len().max(1) as f64,
        report.benign.len()
    );
    s += &format!(
        "| action → stored deviation, detecting deviations, p50 | {} |\n",
        ms(percentile(&det, 50.0))
    );
    s += &format!(
        "| action → stored deviation, detecting deviations, p99 | {} |\n",
        ms(percentile(&det, 99.0))
    );
    s += &format!(
        "| action → stored deviation, all {} deviations, p50 | {} |\n",
        report.all_latencies_ms.len(),
        ms(percentile(&report.all_latencies_ms, 50.0))
    );
    s += &format!(
        "| action → stored deviation, all deviations, p99 | {} |\n\n",
        ms(percentile(&report.all_latencies_ms, 99.0))
    );
    s += "Latency is the collector's `received` minus the deviation's `time` (the kernel event time).\n\n";
    if !report.sensors.is_empty() {
        s += "| sensor (host name) | events decoded | kernel records lost |\n|---|---:|---:|\n";
        for (host, events, lost) in &report.sensors {
            s += &format!("| {host} | {events} | {lost} |\n");
        }
        s += "\n";
    }

    if report
        .curve
        .iter()
        .any(|c| c.learning_runs != report.learning_runs)
    {
        s += "## How much learning before false alarms reach zero\n\n";
        s += "Sensors with less learning watched the same runs side by side (same kernel, same \
              collector, another host name). Each cell: medium+ deviations per benign run judged \
              by that sensor (CI jobs: every non-attack run after its learning runs; service: \
              every window starting 1 s after its learning period), and how many it judged.\n\n";
        s += "| learning (CI runs / service time) |";
        for w in &workloads {
            s += &format!(" {} |", w.job());
        }
        s += "\n|---|";
        s += &"---|".repeat(workloads.len());
        s += "\n";
        let mut configs: Vec<(u32, u64)> = report
            .curve
            .iter()
            .map(|c| (c.learning_runs, c.learning_period.as_secs()))
            .collect();
        configs.sort();
        configs.dedup();
        for (runs, secs) in configs {
            s += &format!("| {runs} runs / {secs} s |");
            for w in &workloads {
                match report.curve.iter().find(|c| {
                    c.workload == *w
                        && c.learning_runs == runs
                        && c.learning_period.as_secs() == secs
                }) {
                    Some(c) => {
                        s += &format!(
                            " {:.2} ({} runs) |",
                            c.alarms as f64 / c.judged.max(1) as f64,
                            c.judged
                        )
                    }
                    None => s += " – |",
                }
            }
            s += "\n";
        }
        s += "\n";
        let examples: Vec<String> = report
            .curve
            .iter()
            .filter(|c| c.learning_runs != report.learning_runs)
            .flat_map(|c| {
                c.examples.iter().map(move |e| {
                    format!(
                        "- {} after {} run(s): {e}",
                        c.workload.job(),
                        c.learning_runs
                    )
                })
            })
            .collect();
        if !examples.is_empty() {
            s += "Examples of those false alarms (up to 3 per cell):\n\n";
            s += &examples.join("\n");
            s += "\n\n";
        }
    }

    if !report.evasion.is_empty() {
        s += &evasion(&report.evasion);
    }
    if report.attacks.is_empty() {
        return s;
    }
    s += "## Per attack\n\n| family | attack | workload | run | detected | strongest deviation naming it |\n|---|---|---|---|---|---|\n";
    for a in &report.attacks {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            a.family,
            cell(a.name),
            a.workload.job(),
            a.run,
            if a.detected { "yes" } else { "**no**" },
            cell(a.evidence.as_deref().unwrap_or("none"))
        );
    }
    s += "\n## False alarms per benign run\n\n| workload | benign runs | medium+ per run | examples |\n|---|---|---|---|\n";
    for w in &workloads {
        let runs: Vec<&BenignResult> = report.benign.iter().filter(|b| b.workload == *w).collect();
        let total: usize = runs.iter().map(|b| b.alarms.len()).sum();
        let examples: Vec<String> = runs
            .iter()
            .flat_map(|b| b.alarms.iter().map(|a| format!("run {}: {a}", b.run)))
            .take(3)
            .collect();
        s += &format!(
            "| {} | {} | {:.2} | {} |\n",
            w.job(),
            runs.len(),
            total as f64 / runs.len().max(1) as f64,
            if examples.is_empty() {
                "none".to_owned()
            } else {
                cell(&examples.join("<br>"))
            }
        );
    }
    s += &noise_table(report);
    s += NOTES;
    s += "\nReproduce: `sudo cargo xtask detect` (about 10 minutes; the first run fetches the \
          registry dependencies into `target/detect-cache`). `--quick`: the C and Rust jobs, one \
          benign run, one attack per family, as the CI test `tests/tests/detection.rs` runs. \
          Needs root: the sensor loads eBPF programs; the service needs nginx (scripts/setup).\n";
    s
}

const EVASION_NOTES: &str = "
An evasion variant is detected when a deviation of its run (not of its earlier, priming run)
naming the action is HIGH or CRITICAL (MEDIUM for network-only variants), stored within 5 s of
the action for the frozen-agent variants, and, for floods, when the flood run itself stored at
most 100 deviations. Variants that need an earlier *run* (repeat novelty, flood, a learning run's
id) run on CI jobs only: a service's novelty is reported per hour. The frozen-agent variants run
once, on the first job, after everything else: a stuck agent would blind every later
measurement; each starts once the agent has caught up with what came before (a marker run's
fresh credential read must be stored first: the kernel-loss family leaves it a backlog), and
after each, a FIFO left in the workspace is opened for writing so that a stuck agent gets an
end of file. The trace_pipe variant, which nothing can release, runs last.
";

/// The evasion section: per family, then per variant.
fn evasion(results: &[EvasionResult]) -> String {
    let mut s = "## Evasion (issue 12)\n".to_owned();
    s += EVASION_NOTES;
    let mut families: Vec<&str> = Vec::new();
    for r in results {
        if !families.contains(&r.family) {
            families.push(r.family);
        }
    }
    s += "\n| family | detected |\n|---|---|\n";
    for f in families.iter().map(Some).chain([None]) {
        let runs: Vec<&EvasionResult> = results
            .iter()
            .filter(|r| f.is_none_or(|f| r.family == *f))
            .collect();
        let hit = runs.iter().filter(|r| r.detected).count();
        s += &format!(
            "| {} | {hit}/{} ({:.0}%) |\n",
            f.map_or("**all evasion**", |f| f),
            runs.len(),
            100.0 * hit as f64 / runs.len().max(1) as f64
        );
    }
    s += "\n| family | variant | workload | run | detected | severity | latency | notes | strongest deviation naming it |\n|---|---|---|---|---|---|---|---|---|\n";
    for r in results {
        let severity = r
            .evidence
            .as_deref()
            .and_then(|e| e.split_whitespace().next())
            .unwrap_or("none");
        let mut notes = Vec::new();
        if let Some(why) = &r.shortfall {
            notes.push(why.clone());
        }
        if let Some(n) = r.prime_stored {
            notes.push(format!("flood run stored {n}"));
        }
        if let Some(n) = r.lost {
            notes.push(format!("{n} records lost"));
        }
        s += &format!(
            "| {} | {} | {} | {} | {} | {severity} | {} | {} | {} |\n",
            r.family,
            cell(r.name),
            r.workload.job(),
            r.run,
            if r.detected { "yes" } else { "**no**" },
            ms(r.latency_ms),
            cell(&notes.join("; ")),
            cell(r.evidence.as_deref().unwrap_or("none"))
        );
    }
    s + "\n"
}
