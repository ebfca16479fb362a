//! The evasion suite's CI subset (`cargo xtask detect` runs every variant on every workload and
//! writes the evasion table of DETECTION.md): the C job learnt in 5 runs, then the first variant
//! of each evasion family (issue 12), each in its own otherwise identical run (after its priming
//! run where it has one), against the real sensor, collector and actor, judged from what the
//! collector stored.

#[path = "../../xtask/src/detect/mod.rs"]
#[expect(
    dead_code,
    reason = "the markdown report is only written by `cargo xtask detect`"
)]
mod detect;

use detect::{Plan, Workload};
use tests::workspace_bin;

/// Families the sensor does not catch yet, with the reason. Their runs are still executed and
/// printed; DETECTION.md reports them. Remove a family once its support is merged: the test then
/// requires it.
const KNOWN_MISSES: &[(&str, &str)] = &[
    (
        "secret via link",
        "secrets are recognised by name only, not by device+inode (item 3)",
    ),
    (
        "unconnected send",
        "no destination for sendto/sendmsg without connect, nor MSG_FASTOPEN (branch kernel)",
    ),
    ("io_uring", "no io_uring hook (branch kernel)"),
    (
        "identity switch",
        "a process's environment still chooses its workload (item 2, branch hosts)",
    ),
    (
        "kernel loss",
        "blind-spot deviations are raised at the agent's 5 s housekeeping; not yet seen by this \
         suite on a busy machine (the loss run's status is often not rewritten in time)",
    ),
    (
        "flood",
        "the flood run is bounded now (22 stored in one run), but judging 20,001 novelties keeps \
         the (debug) agent busy for minutes, so the next run's past-cap aggregate and the later \
         families are often not stored within the suite's wait",
    ),
    (
        "frozen agent",
        "the agent hashes executables on its event loop, opening what a process planted (item 1, \
         branch pipeline)",
    ),
];

/// Every family of the suite: the subset runs the first variant of each.
const FAMILIES: usize = 10;

#[test]
fn evasion_variants_are_detected() {
    let bin_dir = workspace_bin("sensor").parent().unwrap().to_owned();
    workspace_bin("actor");
    let mut plan = Plan::new(bin_dir, true);
    plan.jobs = vec![Workload::C];
    plan.benign_runs = 0;
    plan.attacks = false;
    let report = detect::measure(&plan).expect("suite runs");
    for r in &report.evasion {
        eprintln!(
            "{:<18} {:<70} detected={} latency={:?} shortfall={:?} flood-run-stored={:?} lost={:?} evidence={:?}",
            r.family,
            r.name,
            r.detected,
            r.latency_ms,
            r.shortfall,
            r.prime_stored,
            r.lost,
            r.evidence
        );
    }
    eprintln!("suite took {:?}", report.elapsed);

    assert_eq!(
        report.evasion.len(),
        FAMILIES,
        "one variant per evasion family"
    );
    for r in &report.evasion {
        if let Some((_, why)) = KNOWN_MISSES.iter().find(|(f, _)| *f == r.family) {
            if r.detected {
                eprintln!(
                    "{} is detected now: remove it from KNOWN_MISSES ({why})",
                    r.family
                );
            } else {
                eprintln!("known miss, {}: {why}", r.family);
            }
            continue;
        }
        assert!(
            r.detected,
            "{} / {} (run {}) is not detected; strongest: {:?}, shortfall: {:?}",
            r.family, r.name, r.run, r.evidence, r.shortfall
        );
    }
}
