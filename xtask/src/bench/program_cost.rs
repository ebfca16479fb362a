//! What the sensor's kernel programs cost per operation, from the kernel's own accounting rather
//! than from timing a loop: with BPF run-time statistics on (`BPF_ENABLE_STATS`, held only for
//! this part), the kernel adds up each program's runs and nanoseconds. Dividing by the
//! operations a workload did gives "this program ran N times per request, M ns each": a figure
//! that a noisy neighbour does not move the way it moves throughput ratios, and that says which
//! program to make cheaper.
//!
//! Not counted here: the slow path every syscall takes once any syscall tracepoint is attached
//! (the floor rows of the micro table), and the agent's userspace work (its CPU columns).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::micro::loadgen;
use super::monitor::{Config, SensorUnderTest};
use super::server;

/// (loadgen workload, operations in a full run, what one operation is)
const LOOPS: &[(&str, u64, &str)] = &[
    ("open", 200_000, "open+close of one file"),
    ("open-many", 50_000, "open+close of a new file"),
    ("forkexec", 3_000, "spawn /bin/true and wait"),
    ("read", 1_000_000, "read of /dev/zero"),
];

/// Run time and runs of each of the sensor's programs, by name.
type Counters = HashMap<String, (Duration, u64)>;

/// One workload's result: operations done, ns per operation without the sensor, and the
/// programs' counters over the operations with it.
struct Measured {
    /// The sensor's hooks: as deployed, or the open tracepoints as an entry+exit pair.
    hooks: &'static str,
    workload: String,
    what: String,
    ops: f64,
    base_ns: f64,
    delta: Counters,
}

/// The program ids a process holds (its fdinfo names them).
fn program_ids(pid: u32) -> HashSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    fds.filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// The counters of the programs `pid` holds.
fn counters(pid: u32) -> Counters {
    let ids = program_ids(pid);
    let mut out = Counters::new();
    for info in aya::programs::loaded_programs().flatten() {
        if !ids.contains(&info.id()) {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_owned();
        let e = out.entry(name).or_default();
        e.0 += info.run_time();
        e.1 += info.run_count();
    }
    out
}

fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(name, (t, n))| {
            let (t0, n0) = before.get(name).copied().unwrap_or_default();
            (name.clone(), (t.saturating_sub(t0), n.saturating_sub(n0)))
        })
        .filter(|(_, (_, n))| *n > 0)
        .collect()
}

/// The section: per workload, the nanoseconds the sensor's programs add to one operation.
pub fn section(bin: &Path, quick: bool, server_seconds: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let nginx = server::Nginx::start(dir.path())?;
    let secs = if quick { 2 } else { server_seconds };
    let scale = |ops: u64| if quick { (ops / 100).max(10) } else { ops };

    // Without the sensor first: the time one operation takes, for the share column.
    let (base_rps, _) = server::wrk(nginx.port, secs)?;
    let mut bases = Vec::new();
    for (workload, ops, _) in LOOPS {
        bases.push(1e9 / loadgen(bin, workload, scale(*ops))?);
    }

    // As deployed, then with the open tracepoints as the entry+exit pair (other architectures,
    // and x86_64 before the exits read the flags from the saved registers): one run, side by side.
    let mut measured = Vec::new();
    for (config, hooks) in [
        (Config::Filtered, "default"),
        (Config::TracepointPair, "open pair"),
    ] {
        let sensor_dir = tempfile::tempdir()?;
        let sensor = match config.start(bin, sensor_dir.path())? {
            Some(super::monitor::Monitor::Sensor(s)) => s,
            _ => bail!("the sensor did not start"),
        };
        let result = measure_with(bin, &sensor, nginx.port, secs, base_rps, &bases, &scale);
        sensor.stop()?;
        measured.extend(result?.into_iter().map(|m| Measured { hooks, ..m }));
    }
    // Each workload's rows together (the sort is stable: default first).
    let order = |w: &str| {
        LOOPS
            .iter()
            .position(|(l, _, _)| *l == w)
            .map_or(0, |i| i + 1)
    };
    measured.sort_by_key(|m| order(&m.workload));
    render(&measured)
}

fn measure_with(
    bin: &Path,
    sensor: &SensorUnderTest,
    port: u16,
    secs: u64,
    base_rps: f64,
    bases: &[f64],
    scale: &impl Fn(u64) -> u64,
) -> anyhow::Result<Vec<Measured>> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics (needs root)")?;
    let pid = sensor.sensor.id();
    let mut out = Vec::new();
    eprintln!("[bench] program cost: nginx+wrk");
    let before = counters(pid);
    let (rps, _) = server::wrk(port, secs)?;
    out.push(Measured {
        hooks: "default",
        workload: "nginx+wrk".into(),
        what: "one request".into(),
        ops: rps * secs as f64,
        base_ns: 1e9 / base_rps,
        delta: delta(&before, &counters(pid)),
    });
    for ((workload, ops, what), base_ns) in LOOPS.iter().zip(bases) {
        eprintln!("[bench] program cost: {workload}");
        let ops = scale(*ops);
        let before = counters(pid);
        loadgen(bin, workload, ops)?;
        out.push(Measured {
            hooks: "default",
            workload: (*workload).into(),
            what: (*what).into(),
            ops: ops as f64,
            base_ns: *base_ns,
            delta: delta(&before, &counters(pid)),
        });
    }
    Ok(out)
}

fn render(measured: &[Measured]) -> anyhow::Result<String> {
    let mut report = String::new();
    writeln!(report, "## Kernel-side cost per operation\n")?;
    writeln!(
        report,
        "The sensor (kernel filter on) with the kernel's BPF run-time statistics enabled for \
         this part only: each program's runs and nanoseconds, divided by the operations the \
         workload did (nginx+wrk: requests/s × seconds; the loops: their count). Every program \
         of the sensor counts, whoever triggered it (anything else running meanwhile adds its \
         share). *without sensor* is the time one operation took without the sensor, measured \
         just before; *share* the programs' time per operation against it. Not included: the \
         syscall slow path any attached syscall tracepoint imposes (the micro table's floor \
         rows) and the agent's userspace CPU. The statistics add a clock read to every run \
         (about 10-20 ns on this VM), so these are upper bounds. *hooks*: `default` as \
         deployed; `open pair` the open tracepoints as an entry and an exit program \
         (`--open-hook tracepoint-pair`: other architectures, and x86_64 before its exits read \
         the flags from the saved registers), measured next.\n"
    )?;
    writeln!(
        report,
        "| workload | hooks | without sensor | sensor programs per op | share | where (runs per op × ns per run) |"
    )?;
    writeln!(report, "|---|---|---:|---:|---:|---|")?;
    for m in measured {
        let mut programs: Vec<(&String, f64, f64)> = m
            .delta
            .iter()
            .map(|(name, (t, n))| {
                let per_op = t.as_nanos() as f64 / m.ops;
                (name, per_op, *n as f64 / m.ops)
            })
            .collect();
        programs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = programs.iter().map(|p| p.1).sum();
        let top = programs
            .iter()
            .filter(|p| p.1 >= 1.0)
            .take(4)
            .map(|(name, per_op, runs)| {
                format!("`{name}` {runs:.2} × {:.0} ns", per_op / runs.max(1e-9))
            })
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            report,
            "| {} ({}) | {} | {:.0} ns | {total:.0} ns | {:.1} % | {} |",
            m.workload,
            m.what,
            m.hooks,
            m.base_ns,
            100.0 * total / m.base_ns,
            if top.is_empty() { "-" } else { &top }
        )?;
    }
    writeln!(report)?;
    Ok(report)
}
