//! Scoring scenarios on synthetic event streams, one per dimension of the issue: tool-chain
//! sequences, rates and enumeration, time and hosts, incidents (credential then network, archive
//! then post, build-output tampering), budgets, and learning state per dimension. Each shows that
//! learnt behaviour (and bursts within its envelope) stays silent and that each novelty is
//! reported once, with its evidence.

use super::*;
use crate::event::FileOperation;

/// Monday 2023-11-13 00:00:00 UTC.
const MONDAY: u64 = 1_699_833_600;

fn monday(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(MONDAY + secs)
}

/// A process of a CI run started by the job's shell (`shell` is its pid).
fn child(w: &Workload, time: SystemTime, pid: u32, shell: u32, exe: &str) -> Vec<Attributed> {
    let mut e = ev(w, time, pid, "/bin/bash", "/usr/bin/runner", exec(exe));
    e.event.ppid = shell;
    let p = std::sync::Arc::make_mut(&mut e.process);
    p.ppid = shell;
    p.executable = exe.into();
    p.parent_executable = Some("/bin/bash".into());
    p.ancestry = vec![(shell, "/bin/bash".into())];
    vec![e]
}

/// An event of process `pid` (running `exe`, child of the job's shell `shell`).
fn of(
    w: &Workload,
    time: SystemTime,
    pid: u32,
    shell: u32,
    exe: &str,
    kind: EventKind,
) -> Attributed {
    let mut e = ev(w, time, pid, exe, "/bin/bash", kind);
    e.event.ppid = shell;
    let p = std::sync::Arc::make_mut(&mut e.process);
    p.ppid = shell;
    p.ancestry = vec![(shell, "/bin/bash".into())];
    e
}

const GIT: &str = "/usr/bin/git";
const MAKE: &str = "/usr/bin/make";
const TAR: &str = "/usr/bin/tar";
const CURL: &str = "/usr/bin/curl";
const LD: &str = "/usr/bin/ld";
const OUTPUT: &str = "/home/runner/work/app/build/app";
const UPLOAD: &str = "140.82.112.3";

/// A CI run: git, make (whose linker writes the output, then the output is linked into
/// `dist/`), tar the output, curl it to the known upload host.
fn ci_run(run: u32) -> Vec<Attributed> {
    let w = job(&run.to_string());
    let t = at(u64::from(run) * 3600);
    let shell = 1000 * run;
    let (git, make, ld, tar, curl) = (shell + 1, shell + 2, shell + 3, shell + 4, shell + 5);
    let mut events = vec![ev(
        &w,
        t,
        shell,
        "/bin/bash",
        "/usr/bin/runner",
        exec("/bin/bash"),
    )];
    events.extend(child(&w, t, git, shell, GIT));
    events.push(of(
        &w,
        t,
        git,
        shell,
        GIT,
        open("/home/runner/work/app/.git/HEAD", false),
    ));
    events.extend(child(&w, t, make, shell, MAKE));
    let mut link = ev(&w, t, ld, LD, MAKE, exec(LD));
    link.event.ppid = make;
    events.push(link);
    let mut write = ev(&w, t, ld, LD, MAKE, open(OUTPUT, true));
    if let EventKind::Open { intent, .. } = &mut write.event.kind {
        intent.truncate = true;
    }
    events.push(write);
    events.push(ev(
        &w,
        t,
        make,
        MAKE,
        "/bin/bash",
        EventKind::FileOp(FileOperation::Link {
            existing: OUTPUT.into(),
            new: "/home/runner/work/app/dist/app".into(),
        }),
    ));
    events.extend(child(&w, t, tar, shell, TAR));
    events.push(of(&w, t, tar, shell, TAR, open(OUTPUT, false)));
    events.extend(child(&w, t, curl, shell, CURL));
    let mut upload = of(
        &w,
        t,
        curl,
        shell,
        CURL,
        connect(UPLOAD, 443, ConnectResult::Connected),
    );
    upload.context.dns_name = Some("uploads.github.com".into());
    events.push(upload);
    for pid in [git, ld, make, tar, curl, shell] {
        events.push(ev(
            &w,
            t,
            pid,
            "/bin/bash",
            "/usr/bin/runner",
            EventKind::Exit { exit_code: 0 },
        ));
    }
    events
}

fn learned_ci(dir: &Path) -> Engine {
    let mut engine = engine(dir);
    for run in 1..6 {
        assert_eq!(feed(&mut engine, &ci_run(run)), [], "learning run {run}");
    }
    assert_eq!(
        feed(&mut engine, &ci_run(6)),
        [],
        "a clean run after learning is silent"
    );
    engine
}

fn kinds(deviations: &[v1::Deviation]) -> Vec<(DeviationKind, Severity)> {
    deviations
        .iter()
        .map(|d| (d.kind(), d.severity()))
        .collect()
}

fn has(d: &v1::Deviation, signal: &str) -> bool {
    d.signals.iter().any(|s| s == signal)
}

fn retrieve_archive_post(run: u32) -> Vec<Attributed> {
    let w = job(&run.to_string());
    let t = at(u64::from(run) * 3600);
    let shell = 1000 * run;
    let mut events = vec![ev(
        &w,
        t,
        shell,
        "/bin/bash",
        "/usr/bin/runner",
        exec("/bin/bash"),
    )];
    for (i, tool) in [GIT, MAKE, CURL, TAR, CURL].iter().enumerate() {
        events.extend(child(&w, t, shell + 1 + i as u32, shell, tool));
    }
    events.push(of(
        &w,
        t,
        shell + 5,
        shell,
        CURL,
        connect("198.51.100.7", 443, ConnectResult::Connected),
    ));
    events
}

#[test]
fn retrieve_archive_post_is_a_new_chain_of_known_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    // Run 7: git, make, then curl (retrieve), tar, curl to a host never seen. Every tool is
    // known; the order is not.
    let events = retrieve_archive_post(7);
    let d = feed(&mut engine, &events);
    assert_eq!(
        kinds(&d),
        [
            (DeviationKind::NewSequence, Severity::Low),
            (DeviationKind::NewSequence, Severity::Low),
            (DeviationKind::NewNetworkDestination, Severity::Critical),
        ],
        "{d:#?}"
    );
    let steps = |d: &v1::Deviation| match d.novelty.clone().and_then(|n| n.what) {
        Some(What::Sequence(s)) => (s.parent_executable, s.steps),
        other => panic!("not a sequence: {other:?}"),
    };
    assert_eq!(
        steps(&d[0]),
        ("/bin/bash".into(), vec![MAKE.into(), CURL.into()])
    );
    assert_eq!(
        steps(&d[1]),
        ("/bin/bash".into(), vec![CURL.into(), TAR.into()])
    );
    assert_eq!(
        d[1].summary,
        format!("new exec sequence {CURL} -> {TAR} (children of /bin/bash) in {JOB}")
    );
    // The post carries the archiving as evidence, in the run's incident.
    let post = &d[2];
    assert!(
        has(post, "after-archive") && has(post, "no-dns"),
        "{:?}",
        post.signals
    );
    assert_eq!(post.related.len(), 1);
    assert_eq!(post.related[0].deviation_id, d[1].id);
    assert!(
        post.tags.contains(&"mitre:T1560.001".to_owned()),
        "{:?}",
        post.tags
    );
    assert!(d.iter().all(|x| x.incident_id == d[0].incident_id));
    // The same chain again in a later run: reported again, once, as recurring.
    let again = feed(&mut engine, &retrieve_archive_post(8));
    assert_eq!(kinds(&again), kinds(&d));
    assert!(again.iter().all(|x| has(x, "recurring:1")));
}

#[test]
fn credential_read_then_a_new_host_is_high_and_carries_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let w = job("7");
    let t = at(7 * 3600);
    let mut events = ci_run(7);
    events.truncate(events.len() - 6);
    // After the build: curl reads a key and posts to a host reached through a name, in a
    // dimension whose behaviour alone would be medium.
    events.push(of(
        &w,
        t,
        7005,
        7000,
        CURL,
        open("/home/runner/.ssh/id_ed25519", false),
    ));
    let mut post = of(
        &w,
        t,
        7005,
        7000,
        CURL,
        connect("203.0.113.50", 443, ConnectResult::Connected),
    );
    post.context.dns_name = Some("paste.example".into());
    events.push(post);
    let d = feed(&mut engine, &events);
    assert_eq!(
        kinds(&d),
        [
            (DeviationKind::NewFileAccess, Severity::High),
            (DeviationKind::NewNetworkDestination, Severity::High),
        ],
        "{:?}",
        d.iter().map(|x| (&x.signals, x.score)).collect::<Vec<_>>()
    );
    assert_eq!(
        kinds(&d),
        [
            (DeviationKind::NewFileAccess, Severity::High),
            (DeviationKind::NewNetworkDestination, Severity::High),
        ],
        "{d:#?}"
    );
    let (read, exfil) = (&d[0], &d[1]);
    assert!(has(exfil, "after-credential-access"), "{:?}", exfil.signals);
    assert!(!has(exfil, "no-dns"));
    assert_eq!(exfil.related[0].deviation_id, read.id);
    assert_eq!(exfil.incident_id, read.incident_id);
    assert!(exfil.tags.contains(&"owasp-nhi:NHI2".to_owned()));

    // A later run reads the same key (reported already) and posts to the same host (reported
    // already): nothing new to say. Posting to yet another host after it is still high.
    let mut again = vec![of(
        &job("8"),
        at(8 * 3600),
        8005,
        8000,
        CURL,
        open("/home/runner/.ssh/id_ed25519", false),
    )];
    let mut post = of(
        &job("8"),
        at(8 * 3600),
        8005,
        8000,
        CURL,
        connect("203.0.113.50", 443, ConnectResult::Connected),
    );
    post.context.dns_name = Some("paste.example".into());
    again.push(post);
    // Both reported in run 7 and not accepted: again in run 8, as recurring.
    let recurred = feed(&mut engine, &again);
    assert_eq!(recurred.len(), 2);
    assert!(recurred.iter().all(|x| has(x, "recurring:1")));
    let other = of(
        &job("8"),
        at(8 * 3600),
        8005,
        8000,
        CURL,
        connect("203.0.113.51", 443, ConnectResult::Connected),
    );
    let d = engine.observe(&other);
    assert_eq!(d.len(), 1);
    assert!(d[0].severity() >= Severity::High && has(&d[0], "after-credential-access"));
}

#[test]
fn a_known_destination_reported_before_is_escalated_once_in_a_credential_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let c2 = |run: &str, pid| {
        let mut e = of(
            &job(run),
            at(7 * 3600),
            pid,
            7000,
            CURL,
            connect("192.0.2.9", 8443, ConnectResult::Connected),
        );
        e.context.dns_name = Some("c2.example".into());
        e
    };
    // Run 7 contacts it alone: medium, reported.
    assert_eq!(
        kinds(&engine.observe(&c2("7", 7005))),
        [(DeviationKind::NewNetworkDestination, Severity::Medium)]
    );
    // Run 8 first reads a credential, then contacts it again: reported again, high, escalated.
    let read = of(
        &job("8"),
        at(8 * 3600),
        8005,
        8000,
        CURL,
        open("/home/runner/.aws/credentials", false),
    );
    assert_eq!(
        kinds(&engine.observe(&read)),
        [(DeviationKind::NewFileAccess, Severity::High)]
    );
    let d = engine.observe(&c2("8", 8005));
    assert_eq!(
        kinds(&d),
        [(DeviationKind::NewNetworkDestination, Severity::High)]
    );
    // Reported again in this later run (recurring), raised by the incident's credential read.
    assert!(has(&d[0], "recurring:1") && has(&d[0], "after-credential-access"));
    assert_eq!(engine.observe(&c2("8", 8006)), [], "once per incident");
}

#[test]
fn tampering_with_a_build_output_is_high() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let w = job("7");
    let t = at(7 * 3600);
    // The shell appends to the linker's output, and to the copy linked into dist/.
    let append = |path: &str| of(&w, t, 7000, 7000, "/bin/bash", open(path, true));
    let d = feed(
        &mut engine,
        &[
            append(OUTPUT),
            append("/home/runner/work/app/dist/app"),
            append("/home/runner/work/app/notes.txt"),
            append("/home/runner/work/app/.git/HEAD"),
        ],
    );
    assert_eq!(
        kinds(&d),
        [
            (DeviationKind::NewFileAccess, Severity::High),
            (DeviationKind::NewFileAccess, Severity::High),
            // Not an output: an ordinary new write.
            (DeviationKind::NewFileAccess, Severity::Medium),
            // A file the build only ever read.
            (DeviationKind::NewFileAccess, Severity::High),
        ],
        "{d:#?}"
    );
    assert!(has(&d[0], "output-tampering") && has(&d[1], "output-tampering"));
    assert!(!has(&d[2], "output-tampering") && !has(&d[2], "input-tampering"));
    assert!(has(&d[3], "input-tampering"), "{:?}", d[3].signals);
    assert!(d[0].tags.contains(&"mitre:T1565.001".to_owned()));
}

#[test]
fn unshare_is_high() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let unshare = of(
        &job("7"),
        at(7 * 3600),
        7009,
        7000,
        "/usr/bin/unshare",
        EventKind::Privilege {
            op: crate::event::PrivilegeOp::Unshare { flags: 0x0400_0000 },
            result: 0,
            uid_before: 1000,
            euid_before: 1000,
        },
    );
    let d = engine.observe(&unshare);
    assert_eq!(
        kinds(&d),
        [(DeviationKind::NewPrivilegeUse, Severity::High)]
    );
    assert!(d[0].tags.contains(&"mitre:T1611".to_owned()));
}

/// A service that reads `n` files (its own, known) in the minute starting at `minute`.
fn reads(w: &Workload, minute: u64, n: usize, offset: u32) -> Vec<Attributed> {
    (0..n)
        .map(|i| {
            let path = format!("/srv/app/data/{}", i % 8);
            let time = monday(10 * 3600 + minute * 60 + (i as u64 % 60));
            ev(
                w,
                time,
                500 + offset,
                "/usr/bin/app",
                "/sbin/init",
                open(&path, false),
            )
        })
        .collect()
}

fn connects(w: &Workload, minute: u64, n: usize) -> Vec<Attributed> {
    (0..n)
        .map(|i| {
            let time = monday(10 * 3600 + minute * 60 + (i as u64 % 60));
            ev(
                w,
                time,
                501,
                "/usr/bin/app",
                "/sbin/init",
                connect("10.0.0.5", 5432, ConnectResult::Connected),
            )
        })
        .collect()
}

fn service_engine(dir: &Path) -> Engine {
    let config = LearningConfig {
        learning_runs: 5,
        learning_period: Duration::from_secs(3600),
    };
    Engine::open(dir, config, HOST.into()).expect("open engine")
}

#[test]
fn bursts_within_the_envelope_are_silent_and_spikes_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = service_engine(dir.path());
    let w = unit();
    // Learning hour: 10 reads a minute, one burst of 60; 2 connects a minute.
    for minute in 0..50 {
        let n = if minute == 20 { 60 } else { 10 };
        assert_eq!(feed(&mut engine, &reads(&w, minute, n, 0)), []);
        assert_eq!(feed(&mut engine, &connects(&w, minute, 2)), []);
    }
    // Judged: bursts like the learnt one, and up to three times it, stay silent.
    for (minute, n) in [(61, 10), (62, 60), (63, 180)] {
        assert_eq!(feed(&mut engine, &reads(&w, minute, n, 0)), [], "{n} reads");
    }
    // Past the tolerance: one spike per hour and rate, with the envelope as evidence.
    let d = feed(&mut engine, &reads(&w, 64, 400, 0));
    assert_eq!(kinds(&d), [(DeviationKind::RateSpike, Severity::Low)]);
    let Some(What::Rate(rate)) = d[0].novelty.clone().and_then(|n| n.what) else {
        panic!("rate novelty: {d:?}");
    };
    assert_eq!(
        (
            rate.dimension.as_str(),
            rate.count,
            rate.learned_peak,
            rate.threshold,
            rate.window_seconds
        ),
        ("file-open", 181, 60, 180, 60)
    );
    assert_eq!(
        feed(&mut engine, &reads(&w, 65, 400, 0)),
        [],
        "once per hour"
    );
    // Outbound volume: 2 a minute learnt, 33 in a minute is a medium spike.
    assert_eq!(feed(&mut engine, &connects(&w, 66, 32)), []);
    let d = feed(&mut engine, &connects(&w, 67, 33));
    assert_eq!(kinds(&d), [(DeviationKind::RateSpike, Severity::Medium)]);
    assert!(d[0].tags.contains(&"mitre:T1030".to_owned()));

    // The envelope survives a restart: the learnt burst is still silent, a spike is not.
    engine.persist().expect("persist");
    drop(engine);
    let mut engine = service_engine(dir.path());
    assert_eq!(feed(&mut engine, &reads(&w, 130, 150, 0)), []);
    let d = feed(&mut engine, &reads(&w, 131, 200, 0));
    assert_eq!(kinds(&d), [(DeviationKind::RateSpike, Severity::Low)]);
}

#[test]
fn enumeration_is_reported_once_with_samples_and_the_rest_aggregated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let w = job("7");
    let scan: Vec<Attributed> = (0..60)
        .map(|i| {
            of(
                &w,
                at(7 * 3600 + i / 2),
                7005,
                7000,
                "/usr/bin/find",
                open(&format!("/etc/conf.d/f{i}"), false),
            )
        })
        .collect();
    let d = feed(&mut engine, &scan);
    let of_kind = |d: &[v1::Deviation], k| d.iter().filter(|x| x.kind() == k).count();
    assert_eq!(of_kind(&d, DeviationKind::Enumeration), 1);
    assert_eq!(of_kind(&d, DeviationKind::NewFileAccess), 20, "the budget");
    let e = d
        .iter()
        .find(|x| x.kind() == DeviationKind::Enumeration)
        .expect("enumeration");
    assert_eq!(e.severity(), Severity::Medium);
    let Some(What::Enumeration(n)) = e.novelty.clone().and_then(|n| n.what) else {
        panic!("enumeration novelty: {e:?}");
    };
    assert_eq!(
        (n.dimension.as_str(), n.distinct, n.threshold),
        ("file-access", 20, 20)
    );
    assert_eq!(n.samples.len(), 5);
    assert!(e.tags.contains(&"mitre:T1083".to_owned()));
    // The 40 past the budget wait in an aggregate until their kind is quiet.
    assert_eq!(engine.flush_aggregates(Some(at(7 * 3600 + 35))), []);
    let a = engine.flush_aggregates(Some(at(7 * 3600 + 60)));
    assert_eq!(kinds(&a), [(DeviationKind::Aggregated, Severity::Low)]);
    assert_eq!((a[0].count, a[0].samples.len()), (40, 5));
    assert_eq!(a[0].incident_id, e.incident_id);
    // A high deviation past the budget still goes out at once.
    let key = of(
        &w,
        at(7 * 3600 + 40),
        7005,
        7000,
        "/usr/bin/find",
        open("/home/runner/.ssh/id_rsa", false),
    );
    assert_eq!(
        kinds(&engine.observe(&key)),
        [(DeviationKind::NewFileAccess, Severity::High)]
    );
}

#[test]
fn unusual_hours_are_judged_after_a_week_of_activity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = service_engine(dir.path());
    let w = unit();
    let at_hour = |day: u64, hour: u64| {
        ev(
            &w,
            monday(day * 86_400 + hour * 3600 + 600),
            500,
            "/usr/bin/app",
            "/sbin/init",
            open("/srv/app/data/0", false),
        )
    };
    // Active 10:00-11:59 every day for a week: learning, then judged, hours still learning.
    for day in 0..7 {
        assert_eq!(engine.observe(&at_hour(day, 10)), [], "day {day}");
        assert_eq!(engine.observe(&at_hour(day, 11)), [], "day {day}");
    }
    // Sunday 03:00 before the week is over: learnt, not judged.
    assert_eq!(engine.observe(&at_hour(6, 3)), []);
    let s = only(engine.summary());
    assert!(
        s.dimensions
            .contains(&(Dimension::ActiveTime, DimensionState::Learning)),
        "{s:?}"
    );
    // A week later: next to a known hour is fine, 03:00 on a Tuesday is not.
    assert_eq!(engine.observe(&at_hour(8, 12)), [], "next to 11:00");
    let d = engine.observe(&at_hour(8, 3));
    assert_eq!(kinds(&d), [(DeviationKind::UnusualTime, Severity::Low)]);
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Time(v1::ActiveTime {
            weekday: 1,
            hour: 3
        }))
    );
    assert_eq!(
        d[0].summary,
        "unusual time: unit:app.service active on Tue 03:00-03:59 UTC by /usr/bin/app"
    );
    // Another week: once more (never silent twice), saying it recurs.
    let again = engine.observe(&at_hour(15, 3));
    assert_eq!(kinds(&again), [(DeviationKind::UnusualTime, Severity::Low)]);
    assert!(has(&again[0], "recurring:1"), "{:?}", again[0].signals);
    assert_eq!(engine.observe(&at_hour(15, 3)), [], "once per hour");
    let s = only(engine.summary());
    assert!(
        s.dimensions
            .contains(&(Dimension::ActiveTime, DimensionState::Stable)),
        "{s:?}"
    );
}

#[test]
fn a_new_host_for_a_baseline_learnt_elsewhere_is_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    engine.persist().expect("persist");
    drop(engine);
    // The same baselines on another runner (as a merged or imported baseline would be).
    let mut engine =
        Engine::open(dir.path(), LearningConfig::default(), "runner-2".into()).expect("open");
    let d = feed(&mut engine, &ci_run(7));
    assert_eq!(kinds(&d), [(DeviationKind::NewHost, Severity::Low)]);
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Host("runner-2".into()))
    );
    // Not accepted: once more in the next run, saying it recurs.
    let again = feed(&mut engine, &ci_run(8));
    assert_eq!(kinds(&again), [(DeviationKind::NewHost, Severity::Low)]);
    assert!(has(&again[0], "recurring:1"));
}

#[test]
fn learning_state_per_dimension_is_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    for run in 1..6 {
        let mut events = ci_run(run);
        // The last learning run still finds a new file: that dimension is unstable.
        if run == 5 {
            events.push(of(
                &job("5"),
                at(5 * 3600),
                5001,
                5000,
                GIT,
                open("/home/runner/work/app/.git/ORIG_HEAD", false),
            ));
        }
        feed(&mut engine, &events);
    }
    let s = only(engine.summary());
    assert!(
        s.dimensions
            .iter()
            .all(|(_, st)| *st == DimensionState::Learning)
    );
    assert_eq!(feed(&mut engine, &ci_run(6)), []);
    let s = only(engine.summary());
    let state = |d| {
        s.dimensions
            .iter()
            .find(|(x, _)| *x == d)
            .map(|(_, st)| *st)
    };
    assert_eq!(state(Dimension::FileAccess), Some(DimensionState::Unstable));
    assert_eq!(state(Dimension::Executable), Some(DimensionState::Stable));
    assert_eq!(state(Dimension::ActiveTime), Some(DimensionState::Learning));
    let line = s.to_string();
    assert!(line.contains("; unstable: file-access;"), "{line}");
    assert!(line.contains("; stable: executable exec-edge"), "{line}");
    assert!(line.contains("; learning: active-time"), "{line}");
    // A new read in an unstable dimension is low; in a stable one the same kind would be low too,
    // but a new write there is medium.
    let read = of(
        &job("7"),
        at(7 * 3600),
        7001,
        7000,
        GIT,
        open("/etc/gitconfig", false),
    );
    let d = engine.observe(&read);
    assert_eq!(kinds(&d), [(DeviationKind::NewFileAccess, Severity::Info)]);
    assert!(has(&d[0], "unstable-dimension"));
}

#[test]
fn baseline_files_without_the_new_dimensions_still_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let baselines = dir.path().join("baselines");
    std::fs::create_dir_all(&baselines).expect("mkdir");
    // As written before sequences, profiles, hosts and hours existed: already judged.
    let old = r#"{"version":1,"workload":"unit:old.service","first_seen_unix_nanos":1,
        "detecting_since_unix_nanos":2,"learning_runs":[],
        "learned":[{"executable":"/usr/bin/app"},
                   {"exec_edge":{"parent":"/sbin/init","child":"/usr/bin/app"}}],"reported":[]}"#;
    std::fs::write(
        baselines.join("unit_old.service-0000000000000000.json"),
        old,
    )
    .expect("write");
    let mut engine = engine(dir.path());
    let s = only(engine.summary());
    assert_eq!((s.executables, s.status), (1, LearningStatus::Detecting));
    // Still judged as before, and silent: the host, hour and tool chains it never recorded
    // learn for a learning period instead of all being new at once.
    let w = Workload::new(WorkloadKind::SystemdUnit, "unit:old.service".into());
    let app = |t, pid| {
        ev(
            &w,
            t,
            pid,
            "/usr/bin/app",
            "/sbin/init",
            exec("/usr/bin/app"),
        )
    };
    assert_eq!(feed(&mut engine, &[app(at(10), 5), app(at(20), 5)]), []);
    let d = feed(
        &mut engine,
        &[ev(
            &w,
            at(30),
            6,
            "/usr/bin/nc",
            "/sbin/init",
            exec("/usr/bin/nc"),
        )],
    );
    assert_eq!(
        kinds(&d),
        [(DeviationKind::NewExecutable, Severity::Medium)]
    );
    let s = only(engine.summary());
    assert!(
        s.dimensions
            .contains(&(Dimension::Sequence, DimensionState::Learning))
    );
    engine.persist().expect("persist");
    drop(engine);
    let mut engine = self::engine(dir.path());
    let s = only(engine.summary());
    assert_eq!((s.hosts, s.active_hours, s.sequences), (1, 1, 1));
    // After the learning period the late dimensions are judged too: the learnt chain is
    // silent, the same workload on another host is new.
    let later = at(2 * 24 * 3600);
    assert_eq!(feed(&mut engine, &[app(later, 7), app(later, 7)]), []);
    engine.persist().expect("persist");
    drop(engine);
    let mut engine =
        Engine::open(dir.path(), LearningConfig::default(), "runner-9".into()).expect("open");
    let d = engine.observe(&app(later, 8));
    assert_eq!(
        kinds(&d),
        [(DeviationKind::NewHost, Severity::Low)],
        "{d:#?}"
    );
}

#[test]
fn a_service_has_one_incident_per_process_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = service_engine(dir.path());
    let w = unit();
    for minute in 0..50 {
        assert_eq!(feed(&mut engine, &reads(&w, minute, 10, 0)), []);
        assert_eq!(feed(&mut engine, &connects(&w, minute, 2)), []);
    }
    // Two requests handled by two worker trees (each a child of the service's main process).
    let t = monday(11 * 3600);
    let tree = |root: u32, kind: EventKind| {
        let mut e = ev(&w, t, root + 1, "/usr/bin/app", "/usr/bin/app", kind);
        std::sync::Arc::make_mut(&mut e.process).ancestry =
            vec![(root, "/usr/bin/app".into()), (1, "/sbin/init".into())];
        e
    };
    let read = tree(
        700,
        open("/var/run/secrets/kubernetes.io/serviceaccount/token", false),
    );
    let mut post_a = tree(700, connect("203.0.113.80", 443, ConnectResult::Connected));
    post_a.context.dns_name = Some("a.example".into());
    let mut post_b = tree(800, connect("203.0.113.81", 443, ConnectResult::Connected));
    post_b.context.dns_name = Some("b.example".into());
    let d = feed(&mut engine, &[read, post_a, post_b]);
    assert_eq!(
        kinds(&d),
        [
            (DeviationKind::NewFileAccess, Severity::High),
            (DeviationKind::NewNetworkDestination, Severity::High),
            (DeviationKind::NewNetworkDestination, Severity::Medium),
        ],
        "{d:#?}"
    );
    assert_eq!(d[0].incident_id, d[1].incident_id);
    assert_ne!(d[1].incident_id, d[2].incident_id);
    assert!(has(&d[1], "after-credential-access") && !has(&d[2], "after-credential-access"));
}

#[test]
fn a_few_attack_runs_do_not_make_a_dimension_unstable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let shell_to = |run: u32, address: &str| {
        let t = at(u64::from(run) * 3600);
        of(
            &job(&run.to_string()),
            t,
            1000 * run,
            1000 * run - 1,
            "/bin/bash",
            connect(address, 4444, ConnectResult::Connected),
        )
    };
    // Runs 7-9: a reverse shell each, to a new address, reached without DNS: high.
    for (run, address) in [(7, "192.0.2.7"), (8, "192.0.2.8"), (9, "192.0.2.9")] {
        let d = engine.observe(&shell_to(run, address));
        assert_eq!(
            kinds(&d),
            [(DeviationKind::NewNetworkDestination, Severity::High)]
        );
    }
    // Clean runs, then another one: the destinations are still a stable dimension.
    for run in 10..13 {
        assert_eq!(feed(&mut engine, &ci_run(run)), []);
    }
    let d = engine.observe(&shell_to(13, "192.0.2.13"));
    assert_eq!(
        kinds(&d),
        [(DeviationKind::NewNetworkDestination, Severity::High)]
    );
    assert!(has(&d[0], "stable-dimension"), "{:?}", d[0].signals);
    // Novelties in most judged runs are another matter: after a few more, it is unstable.
    for run in 14..17 {
        engine.observe(&shell_to(run, &format!("192.0.2.{run}")));
    }
    let d = engine.observe(&shell_to(17, "192.0.2.17"));
    assert!(has(&d[0], "unstable-dimension"), "{:?}", d[0].signals);
}

#[test]
fn a_frozen_baseline_learns_no_hours_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = learned_ci(dir.path());
    let hours = only(engine.summary()).active_hours;
    engine
        .detect
        .baselines_mut()
        .apply(crate::baseline::ops::Operation::Freeze {
            workload: JOB.into(),
        })
        .expect("the job's baseline");
    // Run 30 is at an hour never seen; hours are still learning (less than a week), but a
    // frozen baseline learns nothing.
    assert_eq!(feed(&mut engine, &ci_run(30)), []);
    assert_eq!(only(engine.summary()).active_hours, hours);
}
