//! The detect-side answers to the evasions of issue 12 (the suite that tries them on the real
//! sensor is `cargo xtask detect`, CI subset `tests/tests/evasion.rs`): a `#!` script is the
//! executable, renames and links onto a path are writes of it, a novelty is reported again in
//! each run where it recurs, and floods (high ones too, and past a dimension's cap) are
//! aggregated, never silent.

use proto::v1::{DeviationKind, Severity};

use super::*;
use crate::behaviour::{Behaviour, FileChange};
use crate::detect::{BUDGET, SecretPaths, is_credential_access};
use crate::event::FileOperation;

fn script_exec(interpreter: &str, script: &str) -> EventKind {
    let EventKind::Exec {
        executable,
        argv,
        argv_truncated,
        env,
        env_truncated,
        cwd,
        file,
        ..
    } = exec(interpreter)
    else {
        unreachable!("exec() builds an Exec");
    };
    EventKind::Exec {
        executable,
        argv: [argv, vec![script.to_owned()]].concat(),
        argv_truncated,
        env,
        env_truncated,
        cwd,
        script: Some(script.to_owned()),
        file,
    }
}

#[test]
fn a_script_is_the_executable_not_its_interpreter() {
    let e = ev(
        &job("1"),
        at(0),
        10,
        "/bin/bash",
        "/bin/bash",
        script_exec("/bin/bash", "/dev/shm/.upd"),
    );
    assert_eq!(
        Behaviour::of(&e)[0],
        Behaviour::Executable("/dev/shm/.upd".into())
    );
    // Judged: a script run from /dev/shm is high, though bash is learnt.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let mut run = normal_run(&job("6"), at(6 * 3600), 6000);
    run.push(ev(
        &job("6"),
        at(6 * 3600),
        6999,
        "/bin/bash",
        "/bin/bash",
        script_exec("/bin/bash", "/dev/shm/.upd"),
    ));
    let d = feed(&mut engine, &run);
    assert!(
        d.iter().any(|d| d.kind() == DeviationKind::NewExecutable
            && d.severity() >= Severity::High
            && d.summary.contains("/dev/shm/.upd")),
        "{d:#?}"
    );
}

#[test]
fn rename_and_link_onto_a_path_are_writes_of_it() {
    let write = |op| {
        let e = ev(
            &job("1"),
            at(0),
            10,
            "/bin/mv",
            "/bin/bash",
            EventKind::FileOp(op),
        );
        Behaviour::of(&e)
    };
    let written = Behaviour::File {
        path: "/w/out/app".into(),
        intent: "write|create|truncate".parse().expect("intent"),
    };
    let moved = Behaviour::FileOperation {
        operation: FileChange::Replace,
        path: "/w/out/app".into(),
        detail: "from /w by /bin/mv".into(),
    };
    let renamed = write(FileOperation::Rename {
        from: "/w/.new".into(),
        to: "/w/out/app".into(),
    });
    assert_eq!(renamed, [written.clone(), moved.clone()]);
    let linked = write(FileOperation::Link {
        existing: "/w/.new".into(),
        new: "/w/out/app".into(),
    });
    assert!(
        linked.contains(&written) && linked.contains(&moved),
        "{linked:?}"
    );
}

const PRODUCT: &str = "/w/target/debug/app";
const ARCHIVE: &str = "/w/dist/app.tgz";

/// A build run: cargo links its fresh binary (a new hash every run) into place, tar writes the
/// archive, and the binary runs.
fn build_run(run: u32) -> Vec<Attributed> {
    let w = job(&run.to_string());
    let t = at(u64::from(run) * 3600);
    let base = 1000 * run;
    let mut events = normal_run(&w, t, base);
    let (cargo, tar, app) = (base + 10, base + 11, base + 12);
    let hash = format!(
        "{:016x}",
        0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::from(run))
    );
    events.extend([
        ev(
            &w,
            t,
            cargo,
            "/usr/bin/cargo",
            "/bin/bash",
            exec("/usr/bin/cargo"),
        ),
        ev(
            &w,
            t,
            cargo,
            "/usr/bin/cargo",
            "/bin/bash",
            EventKind::FileOp(FileOperation::Link {
                existing: format!("/w/target/debug/deps/app-{hash}"),
                new: PRODUCT.into(),
            }),
        ),
        ev(
            &w,
            t,
            tar,
            "/usr/bin/tar",
            "/bin/bash",
            exec("/usr/bin/tar"),
        ),
        ev(&w, t, tar, "/usr/bin/tar", "/bin/bash", open(ARCHIVE, true)),
        ev(&w, t, app, PRODUCT, "/bin/bash", exec(PRODUCT)),
    ]);
    events
}

fn has_signal(d: &proto::v1::Deviation, signal: &str) -> bool {
    d.signals.iter().any(|s| s == signal)
}

fn moved_onto(run: &str, exe: &str, op: FileOperation) -> Attributed {
    ev(
        &job(run),
        at(7 * 3600),
        7999,
        exe,
        "/bin/bash",
        EventKind::FileOp(op),
    )
}

/// The product's path is learnt (the build moves it into place every run), so what replaces
/// it by name is judged by who moves it and from where: a new hand on a learnt output or
/// executable is high output tampering; the build's own moves, and renames onto paths that are
/// not the workload's product, are not.
#[test]
fn content_moved_onto_a_learnt_output_by_a_new_hand_is_high() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    for run in 1..6 {
        assert_eq!(feed(&mut engine, &build_run(run)), [], "learning run {run}");
    }
    assert_eq!(
        feed(&mut engine, &build_run(6)),
        [],
        "the build's own moves"
    );
    let d = feed(
        &mut engine,
        &[
            // mv of a dropped file over the binary the build links into place.
            moved_onto(
                "7",
                "/usr/bin/mv",
                FileOperation::Rename {
                    from: "/w/.o-x".into(),
                    to: PRODUCT.into(),
                },
            ),
            // cargo itself, but from /dev/shm, onto the archive tar writes.
            moved_onto(
                "7",
                "/usr/bin/cargo",
                FileOperation::Link {
                    existing: "/dev/shm/.a".into(),
                    new: ARCHIVE.into(),
                },
            ),
        ],
    );
    for product in [PRODUCT, ARCHIVE] {
        let found = d
            .iter()
            .find(|d| {
                d.kind() == DeviationKind::NewFileOperation
                    && d.summary.contains(&format!("replace {product} "))
            })
            .unwrap_or_else(|| panic!("{product} replaced: {d:#?}"));
        assert_eq!(found.severity(), Severity::High, "{found:#?}");
        assert!(has_signal(found, "output-tampering"), "{found:#?}");
        assert!(found.tags.contains(&"mitre:T1565.001".to_owned()));
    }
    // A served page or a config the workload only reads, swapped by name: input tampering,
    // high too, each hand on its own (the write of the path is one novelty, reported once).
    for (exe, from) in [("/usr/bin/mv", "/w/.h"), ("/usr/bin/ln", "/tmp/.h")] {
        let d = feed(
            &mut engine,
            &[moved_onto(
                "7",
                exe,
                FileOperation::Rename {
                    from: from.into(),
                    to: "/etc/hosts".into(),
                },
            )],
        );
        let found = d
            .iter()
            .find(|d| d.summary.contains("replace /etc/hosts "))
            .unwrap_or_else(|| panic!("/etc/hosts replaced by {exe}: {d:#?}"));
        assert_eq!(found.severity(), Severity::High, "{found:#?}");
        assert!(has_signal(found, "input-tampering"), "{found:#?}");
    }
    // A rename onto a path the workload does not know: only its write is new.
    let d = feed(
        &mut engine,
        &[moved_onto(
            "7",
            "/usr/bin/mv",
            FileOperation::Rename {
                from: "/w/.o-y".into(),
                to: "/w/notes.txt".into(),
            },
        )],
    );
    assert_eq!(
        d.iter()
            .map(|d| (d.kind(), d.severity()))
            .collect::<Vec<_>>(),
        [(DeviationKind::NewFileAccess, Severity::Medium)],
        "{d:#?}"
    );
}

#[test]
fn high_floods_are_aggregated_past_their_own_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    // 200 reads of distinct secrets: each high.
    let flood: Vec<Attributed> = (0..200)
        .map(|i| {
            let path = format!("/home/runner/.ssh/key-{i}");
            ev(
                &w,
                at(6 * 3600),
                77,
                "/usr/bin/cat",
                "/bin/bash",
                open(&path, false),
            )
        })
        .collect();
    let mut d = feed(&mut engine, &flood);
    d.extend(engine.flush_aggregates(None));
    let singles = d
        .iter()
        .filter(|d| d.kind() == DeviationKind::NewFileAccess)
        .count();
    let aggregates: Vec<_> = d
        .iter()
        .filter(|d| d.kind() == DeviationKind::Aggregated)
        .collect();
    assert_eq!(singles, BUDGET as usize, "{d:#?}");
    assert_eq!(aggregates.len(), 1);
    assert_eq!(aggregates[0].count, 200 - u64::from(BUDGET));
    assert_eq!(aggregates[0].severity(), Severity::High);
}

#[test]
fn ci_and_build_tool_credential_stores_are_secrets() {
    let secrets = SecretPaths::default();
    for path in [
        "/home/runner/.config/git/credentials",
        "/opt/actions-runner/.credentials",
        "/opt/actions-runner/.credentials_rsaparams",
        "/opt/actions-runner/.runner",
        "/home/runner/.m2/settings.xml",
        "/home/runner/.gradle/gradle.properties",
        "/home/runner/.aws/sso/cache/abc.json",
        "/home/runner/.config/gcloud/credentials.db",
    ] {
        let b = Behaviour::File {
            path: path.into(),
            intent: "read".parse().expect("intent"),
        };
        assert!(is_credential_access(&b, &secrets), "{path}");
    }
    let plain = Behaviour::File {
        path: "/home/runner/x.runner".into(),
        intent: "read".parse().expect("intent"),
    };
    assert!(!is_credential_access(&plain, &secrets));
}

#[test]
fn kernel_losses_are_a_blind_spot_of_each_active_run_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    feed(&mut engine, &normal_run(&job("6"), at(6 * 3600), 6000));
    let window = std::time::Duration::from_secs(35);
    // Long after the run: nothing active, nothing to say.
    let late = at(6 * 3600 + 3600);
    assert_eq!(engine.detect.blind_spots(500, late, window), []);
    let noticed = at(6 * 3600 + 5);
    let found = engine.detect.blind_spots(500, noticed, window);
    assert_eq!(found.len(), 1, "{found:#?}");
    let d = crate::report::deviation(HOST, &found[0]);
    assert_eq!(
        (d.kind(), d.severity()),
        (DeviationKind::BlindSpot, Severity::High)
    );
    assert_eq!(d.workload.as_ref().map(|w| w.run_id.as_str()), Some("6"));
    assert!(d.summary.contains("lost 500 records"), "{}", d.summary);
    assert_eq!(d.time_unix_nanos, crate::event::unix_nanos(noticed));
    assert_eq!(
        engine.detect.blind_spots(7, noticed, window),
        [],
        "once per run"
    );
}

#[test]
fn a_loss_noticed_before_its_run_is_decoded_is_told_when_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    // The agent is behind: the loss is noticed before run 6's events are decoded.
    let window = std::time::Duration::from_secs(35);
    let noticed = at(6 * 3600 + 5);
    assert_eq!(engine.detect.blind_spots(500, noticed, window), []);
    let d = feed(&mut engine, &normal_run(&job("6"), at(6 * 3600), 6000));
    let blind: Vec<_> = d
        .iter()
        .filter(|d| d.kind() == DeviationKind::BlindSpot)
        .collect();
    assert_eq!(blind.len(), 1, "once per run: {d:#?}");
    assert_eq!(blind[0].severity(), Severity::High);
    assert_eq!(
        blind[0].workload.as_ref().map(|w| w.run_id.as_str()),
        Some("6")
    );
    // A later run, after the interval, has none.
    let d = feed(&mut engine, &normal_run(&job("7"), at(7 * 3600), 7000));
    assert!(
        d.iter().all(|d| d.kind() != DeviationKind::BlindSpot),
        "{d:#?}"
    );
}

fn open_identity(path: &str, dev: u32, ino: u64) -> EventKind {
    let EventKind::Open { path, intent, .. } = open(path, false) else {
        unreachable!("open() builds an Open");
    };
    EventKind::Open {
        path,
        intent,
        file: crate::event::FileIdentity { dev, ino, links: 2 },
    }
}

#[test]
fn a_secret_read_under_another_name_is_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    // Someone (the runner that wrote it, another workload) opened the store by its name.
    let store = "/home/runner/.ssh/id_deploy";
    feed(
        &mut engine,
        &[ev(
            &unit(),
            at(6 * 3600),
            50,
            "/usr/bin/runner",
            "/sbin/init",
            open_identity(store, 8, 4242),
        )],
    );
    // The job reads it through a hard link with an innocent name.
    let mut run = normal_run(&job("6"), at(6 * 3600), 6000);
    run.push(ev(
        &job("6"),
        at(6 * 3600),
        6999,
        "/usr/bin/cat",
        "/bin/bash",
        open_identity("/home/runner/work/.cache/k", 8, 4242),
    ));
    let d = feed(&mut engine, &run);
    let found = d
        .iter()
        .find(|d| d.kind() == DeviationKind::NewFileAccess && d.summary.contains(store))
        .unwrap_or_else(|| panic!("the store, by identity: {d:#?}"));
    assert!(found.severity() >= Severity::High, "{found:#?}");
    assert!(found.signals.iter().any(|s| s == "via-link"), "{found:#?}");
    // Another file of the same name shape is not the store.
    let d = feed(
        &mut engine,
        &[ev(
            &job("6"),
            at(6 * 3600),
            6999,
            "/usr/bin/cat",
            "/bin/bash",
            open_identity("/home/runner/work/.cache/j", 8, 4243),
        )],
    );
    assert!(d.iter().all(|d| d.severity() < Severity::High), "{d:#?}");
}

/// 20,001 distinct destinations in one run, then a new one in the next: bounded output, and
/// the cost per novelty does not grow with the flood (printed per 5,000; no timed assertion).
#[test]
fn a_flood_of_destinations_is_bounded_and_the_next_run_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let flood: Vec<Attributed> = (0..20_001u32)
        .map(|i| {
            let address = format!("127.{}.{}.{}", 1 + (i >> 16), (i >> 8) & 255, i & 255);
            ev(
                &w,
                at(6 * 3600 + u64::from(i / 1000)),
                6001,
                "/usr/bin/python3",
                "/bin/bash",
                connect(&address, 9, ConnectResult::InProgress),
            )
        })
        .collect();
    let mut stored = Vec::new();
    for chunk in flood.chunks(5_000) {
        let start = std::time::Instant::now();
        stored.extend(feed(&mut engine, chunk));
        eprintln!("{} novelties judged in {:?}", chunk.len(), start.elapsed());
    }
    let start = std::time::Instant::now();
    engine.persist().expect("persist");
    eprintln!("persisted in {:?}", start.elapsed());
    stored.extend(engine.flush_aggregates(None));
    assert!(stored.len() <= 100, "{} stored", stored.len());
    let counted: u64 = stored.iter().map(|d| d.count.max(1)).sum();
    assert!(counted >= 20_001, "every novelty counted: {counted}");
    let next = ev(
        &job("7"),
        at(7 * 3600),
        7001,
        "/usr/bin/python3",
        "/bin/bash",
        connect("127.0.0.1", 4444, ConnectResult::InProgress),
    );
    let mut d = feed(&mut engine, &[next]);
    d.extend(engine.flush_aggregates(None));
    assert!(
        d.iter().any(|d| format!("{d:?}").contains("4444")),
        "the next run's destination: {d:#?}"
    );
}

/// A flood that fills the file dimension cannot bury a later credential read in an aggregate's
/// count: past the cap, a severe novelty is still reported on its own.
#[test]
fn past_the_cap_a_secret_read_is_still_reported_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let flood: Vec<Attributed> = (0..MAX_BEHAVIOURS_PER_DIMENSION as u64 + 1)
        .map(|i| {
            ev(
                &w,
                at(6 * 3600 + i / 1000),
                6001,
                "/usr/bin/python3",
                "/bin/bash",
                open(&format!("/w/.flood/q{i}z"), true),
            )
        })
        .collect();
    feed(&mut engine, &flood);
    engine.flush_aggregates(None);
    let d = feed(
        &mut engine,
        &[ev(
            &job("7"),
            at(7 * 3600),
            7001,
            "/usr/bin/cat",
            "/bin/bash",
            open("/home/runner/.ssh/id_rsa", false),
        )],
    );
    assert!(
        d.iter().any(|d| d.kind() == DeviationKind::NewFileAccess
            && d.severity() >= Severity::High
            && d.summary.contains("/home/runner/.ssh/id_rsa")),
        "{d:#?}"
    );
}

fn uring_open(name: &str) -> EventKind {
    EventKind::IoUring(crate::event::IoUringUse::Submit {
        opcode: 18,
        name: Some(name.into()),
        destination: None,
    })
}

/// A job whose tools use io_uring to open files (so io_uring and its `openat` are learnt): a
/// file opened through the ring is judged like an open(2) of it, by its name and, for a
/// credential store moved or linked elsewhere, as the store.
#[test]
fn a_file_opened_through_io_uring_is_judged_like_an_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    let uring_run = |run: u32| {
        let w = job(&run.to_string());
        let t = at(u64::from(run) * 3600);
        let mut events = normal_run(&w, t, 1000 * run);
        events.push(ev(
            &w,
            t,
            1000 * run + 9,
            "/usr/bin/curl",
            "/bin/bash",
            uring_open("/etc/hosts"),
        ));
        events
    };
    for run in 1..6 {
        assert_eq!(feed(&mut engine, &uring_run(run)), [], "learning run {run}");
    }
    assert_eq!(
        feed(&mut engine, &uring_run(6)),
        [],
        "learnt io_uring opens"
    );
    let store = "/home/runner/.ssh/id_deploy";
    let alias = "/home/runner/work/.cache/k";
    let w = job("7");
    let d = feed(
        &mut engine,
        &[
            ev(
                &w,
                at(7 * 3600),
                7001,
                "/usr/bin/curl",
                "/bin/bash",
                uring_open(store),
            ),
            ev(
                &w,
                at(7 * 3600),
                7002,
                "/usr/bin/ln",
                "/bin/bash",
                EventKind::FileOp(FileOperation::Link {
                    existing: store.into(),
                    new: alias.into(),
                }),
            ),
            ev(
                &job("8"),
                at(8 * 3600),
                8001,
                "/usr/bin/curl",
                "/bin/bash",
                uring_open(alias),
            ),
        ],
    );
    let reads: Vec<_> = d
        .iter()
        .filter(|d| d.kind() == DeviationKind::NewFileAccess && d.summary.contains(store))
        .collect();
    assert_eq!(reads.len(), 2, "by name, then through the link: {d:#?}");
    assert!(
        reads.iter().all(|d| d.severity() >= Severity::High),
        "{d:#?}"
    );
    assert!(has_signal(reads[1], "via-link"), "{:#?}", reads[1]);
    assert!(
        d.iter().all(|d| d.kind() != DeviationKind::NewPrivilegeUse),
        "io_uring's openat is learnt: {d:#?}"
    );
}

/// An exec at which a process of `from` started job `to` (the attributor's handoff).
fn job_started_from(from: &Workload, to: &Workload, time: SystemTime, pid: u32) -> Attributed {
    let mut e = ev(to, time, pid, "/bin/bash", "/usr/bin/x", exec("/bin/bash"));
    e.context.handoff = Some(Box::new(crate::attribute::Handoff {
        from: from.clone(),
        to: to.clone(),
        source: crate::attribute::ClaimSource::CiEnvironment,
    }));
    e
}

#[test]
fn a_workload_that_never_started_jobs_starting_one_is_high() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LearningConfig {
        learning_runs: 5,
        learning_period: Duration::from_secs(3600),
    };
    let mut engine = Engine::open(dir.path(), config, HOST.into()).expect("open");
    let runner = Workload::new(WorkloadKind::SystemdUnit, "unit:runner.service".into());
    let service = unit();
    // Both learn for an hour; only the runner starts a job meanwhile.
    feed(&mut engine, &normal_run(&runner, at(0), 100));
    feed(&mut engine, &normal_run(&service, at(0), 200));
    feed(
        &mut engine,
        &[job_started_from(&runner, &job("1"), at(10), 300)],
    );
    feed(&mut engine, &normal_run(&runner, at(3600), 400));
    feed(&mut engine, &normal_run(&service, at(3600), 500));

    // The runner's next job is what it always did.
    let next = feed(
        &mut engine,
        &[job_started_from(&runner, &job("2"), at(3700), 600)],
    );
    assert!(
        next.iter()
            .all(|d| d.workload.as_ref().unwrap().id != "unit:runner.service"),
        "{next:#?}"
    );

    // The service starting one is a HIGH identity handoff, in the service.
    let d = feed(
        &mut engine,
        &[job_started_from(&service, &job("3"), at(3800), 700)],
    );
    let handoff = d
        .iter()
        .find(|d| d.kind() == DeviationKind::IdentitySwitch)
        .unwrap_or_else(|| panic!("the service's handoff: {d:#?}"));
    assert_eq!(handoff.workload.as_ref().unwrap().id, "unit:app.service");
    assert!(handoff.severity() >= Severity::High, "{handoff:#?}");
    assert!(
        handoff.summary.contains("ci-environment:github_job"),
        "{}",
        handoff.summary
    );
    assert!(
        handoff
            .summary
            .contains("for github:acme/app/ci/build run 3"),
        "{}",
        handoff.summary
    );
}
