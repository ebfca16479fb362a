//! Judging the suite's runs from what the collector stored: which attacks were detected, the
//! false alarms of benign runs per sensor, and the latencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use super::store::{self, Run};
use super::{
    ATTACKS, Attack, AttackResult, BenignResult, CurvePoint, MAIN_HOST, Plan, Report, Workload,
    curve_host, workload_id,
};

/// An attack run waiting to be judged.
pub(super) struct AttackRun {
    pub(super) workload: Workload,
    pub(super) attack: &'static Attack,
    pub(super) run: Run,
    pub(super) needles: Vec<String>,
}

/// Everything the suite ran, to be judged from what the collector stored.
#[derive(Default)]
pub(super) struct Runs {
    /// Per workload: the learning and benign runs (or windows), in order.
    pub(super) benign: BTreeMap<Workload, Vec<Run>>,
    pub(super) attacks: Vec<AttackRun>,
    pub(super) evasion: Vec<super::evasion_run::EvasionRun>,
    pub(super) service_id: Option<String>,
    pub(super) service_start_ns: i128,
}

pub(super) fn chosen_attacks(plan: &Plan) -> Vec<&'static Attack> {
    let mut families = BTreeSet::new();
    ATTACKS
        .iter()
        .filter(|_| plan.attacks)
        .filter(|a| !plan.one_per_family || families.insert(a.family))
        .collect()
}

pub(super) fn attack_run(w: Workload, attack: &'static Attack, run: Run, exfil: u16) -> AttackRun {
    let needles = attack
        .needles
        .iter()
        .map(|n| {
            n.replace("{port}", &exfil.to_string())
                .replace("{artifact}", w.artifact())
        })
        .collect();
    AttackRun {
        workload: w,
        attack,
        run,
        needles,
    }
}

fn id_of(runs: &Runs, w: Workload) -> String {
    match w {
        Workload::Service => runs.service_id.clone().unwrap_or_default(),
        _ => workload_id(w),
    }
}

/// Deviations per (workload, host), once every attack run is detected by the main sensor or
/// nothing new has arrived for 10 s.
pub(super) fn collect(
    plan: &Plan,
    collector: &Path,
    server: &str,
    runs: &Runs,
) -> anyhow::Result<BTreeMap<(Workload, String), Vec<Value>>> {
    let mut hosts = vec![MAIN_HOST.to_owned()];
    hosts.extend(plan.curve.iter().map(|(r, _)| curve_host(*r)));
    let mut stored = BTreeMap::new();
    let mut last_change = Instant::now();
    let mut last_count = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut count = 0;
        for &w in runs.benign.keys() {
            for host in &hosts {
                let all = store::deviations(collector, server, &id_of(runs, w), host)?;
                count += all.len();
                stored.insert((w, host.clone()), all);
            }
        }
        let undetected = runs.attacks.iter().any(|a| {
            store::best_match(
                &stored[&(a.workload, MAIN_HOST.to_owned())],
                &a.run,
                &a.needles,
            )
            .is_none_or(|d| store::severity(d) < 3)
        });
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if !undetected || last_change.elapsed() > Duration::from_secs(10) {
            return Ok(stored);
        }
        if Instant::now() > deadline {
            bail!("the collector's store was still changing after 90 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn alarms(stored: &[Value], run: &Run) -> Vec<String> {
    stored
        .iter()
        .filter(|d| run.contains(d) && store::severity(d) >= 2)
        .map(store::describe)
        .collect()
}

pub(super) fn judge(
    plan: &Plan,
    runs: &Runs,
    stored: &BTreeMap<(Workload, String), Vec<Value>>,
) -> Report {
    let main = |w: Workload| stored[&(w, MAIN_HOST.to_owned())].as_slice();
    let mut report = Report {
        learning_runs: plan.learning_runs,
        learning_period: plan.learning_period,
        window: plan.window,
        ..Report::default()
    };
    // Which benign runs a sensor with (runs, period) judges: CI runs past its learning runs;
    // service windows starting a second after its learning period.
    let judged = |w: Workload, learn_runs: u32, period: Duration| -> Vec<&Run> {
        let all = &runs.benign[&w];
        match w {
            Workload::Service => all
                .iter()
                .filter(|r| {
                    r.start_ns >= runs.service_start_ns + period.as_nanos() as i128 + 1_000_000_000
                })
                .collect(),
            _ => all.iter().skip(learn_runs as usize).collect(),
        }
    };
    for &w in runs.benign.keys() {
        for run in judged(w, plan.learning_runs, plan.learning_period) {
            let of_run: Vec<&Value> = main(w).iter().filter(|d| run.contains(d)).collect();
            let mut by_severity = [0; 5];
            for d in &of_run {
                by_severity[usize::from(store::severity(d))] += 1;
            }
            report.benign.push(BenignResult {
                workload: w,
                run: run.label(runs.service_start_ns),
                alarms: alarms(main(w), run),
                stored: by_severity,
                noise: of_run.into_iter().map(store::describe).collect(),
            });
        }
        let sensors = plan
            .curve
            .iter()
            .map(|&(r, p)| (r, p, curve_host(r)))
            .chain([(
                plan.learning_runs,
                plan.learning_period,
                MAIN_HOST.to_owned(),
            )]);
        for (learn_runs, period, host) in sensors {
            let judged = judged(w, learn_runs, period);
            let all: Vec<String> = judged
                .iter()
                .flat_map(|r| alarms(&stored[&(w, host.clone())], r))
                .collect();
            report.curve.push(CurvePoint {
                workload: w,
                learning_runs: learn_runs,
                learning_period: period,
                judged: judged.len(),
                alarms: all.len(),
                examples: all.into_iter().take(3).collect(),
            });
        }
    }
    for a in &runs.attacks {
        let best = store::best_match(main(a.workload), &a.run, &a.needles);
        let detected = best.is_some_and(|d| store::severity(d) >= 3);
        report.attacks.push(AttackResult {
            family: a.attack.family,
            name: a.attack.name,
            workload: a.workload,
            run: a.run.label(runs.service_start_ns),
            evidence: best.map(store::describe),
            detected,
            latency_ms: best.filter(|_| detected).and_then(store::latency_ms),
        });
    }
    report.all_latencies_ms = runs
        .benign
        .keys()
        .flat_map(|&w| main(w))
        .filter_map(store::latency_ms)
        .collect();
    report
}
