//! Learning windows that overlapped a kernel loss are marked on the baseline, saved, and shown.

use std::time::Duration;

use super::*;

const WINDOW: Duration = Duration::from_secs(60);

#[test]
fn loss_during_a_learning_run_marks_that_run_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..3);
    assert_eq!(engine.note_kernel_loss(WINDOW), 1);
    // A second loss notice in the same run marks nothing new.
    engine.note_kernel_loss(WINDOW);
    let s = only(engine.summary());
    assert_eq!(s.learning_losses, 1, "run 2 only");
    assert!(
        s.to_string().contains("1 window(s) with kernel losses"),
        "{s}"
    );
    engine.persist().expect("persist");

    let mut engine = super::engine(dir.path());
    assert_eq!(
        only(engine.summary()).learning_losses,
        1,
        "saved with the baseline"
    );
    learn_runs(&mut engine, 3..4);
    engine.note_kernel_loss(WINDOW);
    assert_eq!(only(engine.summary()).learning_losses, 2, "runs 2 and 3");
}

#[test]
fn loss_long_after_learning_or_while_detecting_marks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    // Run 6 is judged: its events are not learnt, so a loss now does not mark the baseline
    // (the newest event is an hour after run 5's, far outside the window).
    let run6 = normal_run(&job("6"), at(6 * 3600), 6000);
    assert_eq!(feed(&mut engine, &run6), []);
    assert_eq!(engine.note_kernel_loss(WINDOW), 0);
    assert_eq!(only(engine.summary()).learning_losses, 0);
}

#[test]
fn time_learnt_workload_counts_loss_notices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    let events = normal_run(&unit(), at(3600), 100);
    assert_eq!(feed(&mut engine, &events), []);
    engine.note_kernel_loss(WINDOW);
    engine.note_kernel_loss(WINDOW);
    assert_eq!(only(engine.summary()).learning_losses, 2);
}
