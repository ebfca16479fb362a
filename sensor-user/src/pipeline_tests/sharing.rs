//! Which merged baselines an agent asks the collector for: only those of workloads that run on
//! it, whether new or loaded from disk, never every workload it ever saw.

use super::*;

/// A CI job still learning after one run (learnt by runs, so the test's clock does not matter).
fn ci(name: &str) -> Workload {
    Workload {
        id: format!("github:acme/{name}/ci/build"),
        ..job("1")
    }
}

#[test]
fn only_workloads_running_on_this_agent_are_fetched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (ci("a"), ci("b"));
    {
        let mut engine = engine(dir.path());
        feed(
            &mut engine,
            &[ev(
                &a,
                at(0),
                10,
                "/usr/bin/cat",
                "/bin/sh",
                open("/srv/a", false),
            )],
        );
        feed(
            &mut engine,
            &[ev(
                &b,
                at(0),
                11,
                "/usr/bin/cat",
                "/bin/sh",
                open("/srv/b", false),
            )],
        );
        let asked = engine.detect.baselines_mut().baselines_to_fetch();
        assert_eq!(asked.len(), 2, "both are new and learning: {asked:?}");
        engine.detect.baselines_mut().persist().expect("persist");
    }

    // A restarted agent: both are on disk, still learning, neither has run yet.
    let mut engine = engine(dir.path());
    assert!(
        engine
            .detect
            .baselines_mut()
            .baselines_to_fetch()
            .is_empty()
    );
    feed(
        &mut engine,
        &[ev(
            &a,
            at(60),
            12,
            "/usr/bin/cat",
            "/bin/sh",
            open("/srv/a", false),
        )],
    );
    assert_eq!(
        engine.detect.baselines_mut().baselines_to_fetch(),
        vec![a.id.clone()]
    );
    // Once per agent life.
    feed(
        &mut engine,
        &[ev(
            &a,
            at(61),
            12,
            "/usr/bin/cat",
            "/bin/sh",
            open("/srv/a2", false),
        )],
    );
    assert!(
        engine
            .detect
            .baselines_mut()
            .baselines_to_fetch()
            .is_empty()
    );
}
