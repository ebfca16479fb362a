//! Detection quality, quick subset (`cargo xtask detect --quick` measures the same and writes
//! DETECTION.md; the full suite is `cargo xtask detect`): a C project built with make + gcc and a
//! Rust crate with dependencies from crates.io (fetched once into `target/detect-cache`, then built
//! offline from clean each run), as GitHub-Actions-like jobs: 5 learning runs, 1 benign run, then
//! one attack per family, each in its own otherwise identical run. Real binaries: collector,
//! sensor, and the actor helper.

#[path = "../../xtask/src/detect/mod.rs"]
#[expect(
    dead_code,
    reason = "the markdown report is only written by `cargo xtask detect`"
)]
mod detect;

use tests::workspace_bin;

/// Families whose quick-subset variant is not detected at HIGH or above, with the reason. Their
/// runs are still executed and printed; DETECTION.md reports them. Remove a family from here once
/// the sensor catches it (exfiltration was here until scoring linked new destinations to their
/// context).
const KNOWN_MISSES: &[(&str, &str)] = &[];

/// Stored deviations of any severity a clean run may leave (issue 14: at most 3 per clean run on
/// average; the CI subset has one clean run per job, so each must hold it).
const CLEAN_RUN_BUDGET: usize = 3;

#[test]
fn attacks_are_detected_and_benign_runs_stay_quiet() {
    let bin_dir = workspace_bin("sensor").parent().unwrap().to_owned();
    workspace_bin("actor");
    let mut plan = detect::Plan::new(bin_dir, true);
    // The evasion families have their own test (tests/tests/evasion.rs).
    plan.evasion = false;
    let report = detect::measure(&plan).expect("suite runs");
    for a in &report.attacks {
        eprintln!(
            "{:<10} {:<24} {:<32} detected={} latency={:?} evidence={:?}",
            a.workload.job(),
            a.family,
            a.name,
            a.detected,
            a.latency_ms,
            a.evidence
        );
    }
    for b in &report.benign {
        eprintln!("clean {} run {}: {:?}", b.workload.job(), b.run, b.noise);
    }
    eprintln!("suite took {:?}", report.elapsed);

    assert_eq!(report.benign.len(), 2, "one benign run per job");
    // Quiet by default (issue 14): after learning, a clean run stores no medium+ deviation and
    // at most CLEAN_RUN_BUDGET of any severity.
    for b in &report.benign {
        assert!(
            b.alarms.is_empty(),
            "clean {} run {} after learning raised {} medium+ deviations: {:#?}",
            b.workload.job(),
            b.run,
            b.alarms.len(),
            b.alarms
        );
        assert!(
            b.total() <= CLEAN_RUN_BUDGET,
            "clean {} run {} stored {} deviations (budget {CLEAN_RUN_BUDGET}): {:#?}",
            b.workload.job(),
            b.run,
            b.total(),
            b.noise
        );
    }
    assert_eq!(report.attacks.len(), 14, "one attack per family, per job");
    for a in &report.attacks {
        if let Some((_, why)) = KNOWN_MISSES.iter().find(|(f, _)| *f == a.family) {
            // Not detected at HIGH (see KNOWN_MISSES); still guard that it is seen at all.
            eprintln!("known miss, {}: {why}", a.family);
            assert!(
                a.evidence
                    .as_deref()
                    .is_some_and(|e| e.starts_with("medium ")
                        || e.starts_with("high ")
                        || e.starts_with("critical ")),
                "{} / {} is not even reported at medium: {:?}",
                a.family,
                a.name,
                a.evidence
            );
            continue;
        }
        assert!(
            a.detected,
            "{} / {} / {} (run {}) has no HIGH or CRITICAL deviation naming it; strongest: {:?}",
            a.workload.job(),
            a.family,
            a.name,
            a.run,
            a.evidence
        );
        assert!(a.latency_ms.is_some_and(|l| l >= 0.0), "{a:?}");
    }
}
