//! Bounded baselines: a flood of unique behaviours stops at `MAX_BEHAVIOURS_PER_DIMENSION` with
//! one cardinality deviation per workload and dimension, also across a restart.

use super::*;

/// A distinct name for `i` that generalisation keeps distinct (letters past `f`: no numbers,
/// no hex).
fn name(mut i: usize) -> String {
    let mut s = String::new();
    for _ in 0..5 {
        s.push(char::from(b'g' + (i % 20) as u8));
        i /= 20;
    }
    s
}

fn read(w: &Workload, time: SystemTime, i: usize) -> Attributed {
    let path = format!("/srv/data/file-{}", name(i));
    ev(w, time, 77, "/usr/bin/cp", "/bin/bash", open(&path, false))
}

fn cardinality(d: &v1::Deviation) -> Option<v1::Cardinality> {
    match d.novelty.clone().and_then(|n| n.what) {
        Some(What::Cardinality(c)) => Some(c),
        _ => None,
    }
}

#[test]
fn a_learning_flood_stops_at_the_bound_with_one_deviation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    let w = job("1");
    let flood: Vec<Attributed> = (0..MAX_BEHAVIOURS_PER_DIMENSION + 500)
        .map(|i| read(&w, at(0), i))
        .collect();
    let deviations = feed(&mut engine, &flood);
    assert_eq!(deviations.len(), 1, "{:?}", deviations.first());
    let d = &deviations[0];
    assert_eq!(d.kind(), DeviationKind::CardinalityExploded);
    assert_eq!(d.severity(), Severity::High);
    assert_eq!(
        d.summary,
        format!(
            "cardinality exploded: workload {JOB} tried to learn more than 20000 file accesses"
        )
    );
    assert_eq!(
        cardinality(d),
        Some(v1::Cardinality {
            dimension: "file-access".into(),
            limit: 20_000,
        })
    );
    assert_eq!(
        d.process.as_ref().map(|p| p.executable.as_str()),
        Some("/usr/bin/cp")
    );
    let s = only(engine.summary());
    assert_eq!(
        (s.file_accesses, s.reported),
        (MAX_BEHAVIOURS_PER_DIMENSION, 1)
    );

    // More of the flood, in this or the next learning run: nothing more, nothing learnt.
    let more: Vec<Attributed> = (30_000..30_100)
        .map(|i| read(&job("2"), at(3600), i))
        .collect();
    assert_eq!(feed(&mut engine, &more), []);
    // Other dimensions still learn.
    learn_runs(&mut engine, 2..3);
    let s = only(engine.summary());
    assert_eq!(
        (s.file_accesses, s.executables, s.reported),
        (MAX_BEHAVIOURS_PER_DIMENSION, 2, 1)
    );

    // After a restart the bound and the dedup hold.
    engine.persist().expect("persist");
    drop(engine);
    let mut engine = self::engine(dir.path());
    let s = only(engine.summary());
    assert_eq!(
        (s.file_accesses, s.reported),
        (MAX_BEHAVIOURS_PER_DIMENSION, 1)
    );
    assert_eq!(feed(&mut engine, &[read(&job("3"), at(7200), 40_000)]), []);
    assert_eq!(
        only(engine.summary()).file_accesses,
        MAX_BEHAVIOURS_PER_DIMENSION
    );
}

#[test]
fn a_judged_flood_reports_up_to_the_bound_then_once_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let flood: Vec<Attributed> = (0..MAX_BEHAVIOURS_PER_DIMENSION + 10)
        .map(|i| read(&w, at(6 * 3600), i))
        .collect();
    let mut deviations = feed(&mut engine, &flood);
    // Past the budget, the new file accesses are counted into one aggregate; with them come a
    // rate spike and an enumeration (thousands of new files within a minute).
    deviations.extend(engine.flush_aggregates(None));
    let of = |kind| {
        deviations
            .iter()
            .filter(|d| d.kind() == kind)
            .collect::<Vec<_>>()
    };
    let singles = of(DeviationKind::NewFileAccess);
    let aggregates = of(DeviationKind::Aggregated);
    assert_eq!(singles.len(), crate::detect::BUDGET as usize);
    assert_eq!(aggregates.len(), 1);
    // The 10 past the cap are in the aggregate too.
    assert_eq!(
        singles.len() as u64 + aggregates[0].count,
        MAX_BEHAVIOURS_PER_DIMENSION as u64 + 10,
        "none dropped silently"
    );
    assert_eq!(of(DeviationKind::RateSpike).len(), 1);
    assert_eq!(of(DeviationKind::Enumeration).len(), 1);
    let cardinality = of(DeviationKind::CardinalityExploded);
    assert_eq!(cardinality.len(), 1);
    let last = cardinality[0];
    assert_eq!(
        last.summary,
        format!(
            "cardinality exploded: workload {JOB} showed more than 20000 new file accesses; \
             no more are reported"
        )
    );
    assert_eq!(
        last.id,
        crate::detect::cardinality_id(HOST, JOB, Dimension::FileAccess)
    );
    let s = only(engine.summary());
    assert_eq!(
        (s.file_accesses, s.reported),
        (3, MAX_BEHAVIOURS_PER_DIMENSION + 1)
    );

    // The bound survives a restart; other dimensions are still judged.
    engine.persist().expect("persist");
    drop(engine);
    let mut engine = self::engine(dir.path());
    let more: Vec<Attributed> = (30_000..30_010)
        .map(|i| read(&job("7"), at(7 * 3600), i))
        .collect();
    // Past the cap in a later run: not one by one, but never unsaid: one aggregate of the run
    // with their count, naming the first of them.
    assert_eq!(feed(&mut engine, &more), []);
    let past_cap = engine.flush_aggregates(None);
    assert_eq!(past_cap.len(), 1, "{past_cap:#?}");
    assert_eq!(past_cap[0].kind(), DeviationKind::Aggregated);
    assert_eq!(past_cap[0].count, 10);
    assert_eq!(
        past_cap[0].workload.as_ref().map(|w| w.run_id.as_str()),
        Some("7")
    );
    let first = format!("/srv/data/file-{}", name(30_000));
    assert!(
        past_cap[0].samples.iter().any(|x| x.contains(&first)),
        "{:?}",
        past_cap[0].samples
    );
    let wget = ev(
        &job("7"),
        at(7 * 3600),
        90,
        "/usr/bin/wget",
        "/bin/bash",
        exec("/usr/bin/wget"),
    );
    let d = feed(&mut engine, &[wget]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind(), DeviationKind::NewExecutable);
    assert_eq!(
        only(engine.summary()).reported,
        MAX_BEHAVIOURS_PER_DIMENSION + 2
    );
}
