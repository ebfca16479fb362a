//! Engine scenarios on synthetic attributed events, with baselines in a temporary directory:
//! the detect and report stages chained as the agent chains them, checked on the deviations
//! they produce.

mod bounded;
mod budget;
mod evasion;
mod losses;
mod noise;
mod perf;
mod scoring;
mod sharing;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use proto::v1::{self, DeviationKind, Severity, novelty::What};

use crate::attribute::{Attributed, ProcessInfo, Workload, WorkloadKind};
use crate::baseline::{
    BaselineError, Dimension, DimensionState, LearningConfig, LearningStatus,
    MAX_BEHAVIOURS_PER_DIMENSION, WorkloadSummary,
};
use crate::detect;
use crate::event::{ConnectResult, Event, EventKind, OpenIntent, Protocol};
use crate::report::Reporter;

const JOB: &str = "github:acme/app/ci/build";
const HOST: &str = "host-1";

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn job(run: &str) -> Workload {
    Workload {
        id: JOB.into(),
        kind: WorkloadKind::GithubJob,
        run_id: Some(run.into()),
    }
}

fn unit() -> Workload {
    Workload::new(WorkloadKind::SystemdUnit, "unit:app.service".into())
}

fn ev(
    workload: &Workload,
    time: SystemTime,
    pid: u32,
    exe: &str,
    parent: &str,
    kind: EventKind,
) -> Attributed {
    Attributed {
        event: Event {
            time,
            pid,
            tid: pid,
            ppid: pid - 1,
            uid: 1000,
            euid: 1000,
            cgroup_id: 1,
            kind,
        },
        workload: std::sync::Arc::new(workload.clone()),
        process: std::sync::Arc::new(ProcessInfo {
            pid,
            ppid: pid - 1,
            executable: exe.into(),
            argv: vec![exe.into()],
            argv_truncated: false,
            uid: 1000,
            euid: 1000,
            ancestry: vec![(pid - 1, parent.into())],
            parent_executable: Some(parent.into()),
        }),
        context: Default::default(),
    }
}

fn exec(exe: &str) -> EventKind {
    EventKind::Exec {
        executable: exe.into(),
        argv: vec![exe.into()],
        argv_truncated: false,
        env: Vec::new(),
        env_truncated: false,
        cwd: "/".into(),
        script: None,
        file: Default::default(),
    }
}

fn open(path: &str, write: bool) -> EventKind {
    let intent = OpenIntent {
        read: !write,
        write,
        create: write,
        truncate: false,
    };
    EventKind::Open {
        path: path.into(),
        intent,
        file: Default::default(),
    }
}

fn connect(address: &str, port: u16, result: ConnectResult) -> EventKind {
    EventKind::Connect {
        address: address.parse::<IpAddr>().expect("ip"),
        port,
        protocol: Protocol::Tcp,
        result,
    }
}

/// One ordinary run of the job; pids differ between runs like they do on a real host.
fn normal_run(w: &Workload, time: SystemTime, base_pid: u32) -> Vec<Attributed> {
    let (bash, curl) = (base_pid, base_pid + 1);
    vec![
        ev(
            w,
            time,
            bash,
            "/bin/bash",
            "/usr/bin/runner",
            exec("/bin/bash"),
        ),
        ev(
            w,
            time,
            bash,
            "/bin/bash",
            "/usr/bin/runner",
            EventKind::Fork { child_pid: curl },
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            exec("/usr/bin/curl"),
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            open("/etc/hosts", false),
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            open(&format!("/proc/{curl}/status"), false),
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            open("/home/runner/out.txt", true),
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            connect("140.82.112.3", 443, ConnectResult::InProgress),
        ),
        ev(
            w,
            time,
            curl,
            "/usr/bin/curl",
            "/bin/bash",
            EventKind::Exit { exit_code: 0 },
        ),
    ]
}

/// The detect and report stages, as the agent chains them.
#[derive(Debug)]
struct Engine {
    detect: detect::Engine,
    report: Reporter,
}

impl Engine {
    fn open(dir: &Path, config: LearningConfig, host: String) -> Result<Engine, BaselineError> {
        Ok(Engine {
            report: Reporter::new(host.clone()),
            detect: detect::Engine::open(dir, config, host)?,
        })
    }

    fn observe(&mut self, event: &Attributed) -> Vec<v1::Deviation> {
        self.report.report(self.detect.observe(event), false)
    }

    fn flush_loading(&mut self) -> Vec<v1::Deviation> {
        self.report.report(self.detect.flush_loading(None), false)
    }

    fn flush_aggregates(&mut self, now: Option<SystemTime>) -> Vec<v1::Deviation> {
        self.report.report(self.detect.flush_aggregates(now), false)
    }

    fn summary(&self) -> Vec<WorkloadSummary> {
        self.detect.baselines().summary()
    }

    fn persist(&mut self) -> Result<(), BaselineError> {
        self.detect.baselines_mut().persist()
    }

    fn note_kernel_loss(&mut self, window: Duration) -> usize {
        self.detect.baselines_mut().note_kernel_loss(window)
    }
}

fn engine(dir: &Path) -> Engine {
    Engine::open(dir, LearningConfig::default(), HOST.into()).expect("open engine")
}

/// The deviations of `events`, once their moments have passed: new executables held for their
/// loading evidence (see `detect::loading`) are released at the end.
fn feed(engine: &mut Engine, events: &[Attributed]) -> Vec<v1::Deviation> {
    let mut out: Vec<v1::Deviation> = events.iter().flat_map(|e| engine.observe(e)).collect();
    out.extend(engine.flush_loading());
    out
}

/// The deviations of `events` as they are judged, with new executables still held.
fn feed_live(engine: &mut Engine, events: &[Attributed]) -> Vec<v1::Deviation> {
    events.iter().flat_map(|e| engine.observe(e)).collect()
}

fn learn_runs(engine: &mut Engine, runs: std::ops::Range<u32>) {
    for run in runs {
        let events = normal_run(
            &job(&run.to_string()),
            at(u64::from(run) * 3600),
            1000 * run,
        );
        assert!(
            feed(engine, &events).is_empty(),
            "run {run} is a learning run"
        );
    }
}

fn only(summary: Vec<WorkloadSummary>) -> WorkloadSummary {
    assert_eq!(summary.len(), 1, "{summary:?}");
    summary.into_iter().next().expect("one workload")
}

#[test]
fn learns_n_runs_then_is_silent_on_an_identical_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let s = only(engine.summary());
    assert_eq!(
        s.status,
        LearningStatus::LearningRuns { seen: 5, needed: 5 }
    );
    assert_eq!(
        (s.executables, s.exec_edges, s.file_accesses, s.destinations),
        (2, 2, 3, 1)
    );

    let run6 = normal_run(&job("6"), at(6 * 3600), 6000);
    assert_eq!(feed(&mut engine, &run6), []);
    assert_eq!(only(engine.summary()).status, LearningStatus::Detecting);

    // Late events of a learning run still learn, even after detection started.
    let late = ev(
        &job("5"),
        at(6 * 3600),
        5001,
        "/usr/bin/curl",
        "/bin/bash",
        open("/etc/late", false),
    );
    assert_eq!(engine.observe(&late), []);
    let again = ev(
        &job("7"),
        at(7 * 3600),
        7001,
        "/usr/bin/curl",
        "/bin/bash",
        open("/etc/late", false),
    );
    assert_eq!(engine.observe(&again), []);
}

fn novelties(w: &Workload, time: SystemTime) -> Vec<Attributed> {
    vec![
        // New executable: reported as such, its edge not also.
        ev(
            w,
            time,
            50,
            "/tmp/payload",
            "/bin/bash",
            exec("/tmp/payload"),
        ),
        // Known executables, new edge.
        ev(w, time, 51, "/bin/bash", "/usr/bin/curl", exec("/bin/bash")),
        ev(
            w,
            time,
            52,
            "/usr/bin/curl",
            "/bin/bash",
            open("/etc/resolv.conf", false),
        ),
        ev(
            w,
            time,
            52,
            "/usr/bin/curl",
            "/bin/bash",
            open("/etc/hosts", true),
        ),
        ev(
            w,
            time,
            52,
            "/usr/bin/curl",
            "/bin/bash",
            open("/home/runner/.ssh/id_ed25519", false),
        ),
        ev(
            w,
            time,
            52,
            "/usr/bin/curl",
            "/bin/bash",
            connect("203.0.113.9", 4444, ConnectResult::Failed(111)),
        ),
        ev(
            w,
            time,
            52,
            "/usr/bin/curl",
            "/bin/bash",
            EventKind::Exit { exit_code: 0 },
        ),
        ev(
            w,
            time,
            51,
            "/bin/bash",
            "/usr/bin/curl",
            EventKind::Exit { exit_code: 0 },
        ),
        ev(
            w,
            time,
            50,
            "/tmp/payload",
            "/bin/bash",
            EventKind::Exit { exit_code: 0 },
        ),
    ]
}

#[test]
fn reports_each_novelty_once_with_kind_severity_and_novelty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);

    let deviations = feed(&mut engine, &novelties(&job("6"), at(6 * 3600)));
    let got: Vec<(DeviationKind, Severity, Option<What>)> = deviations
        .iter()
        .map(|d| {
            (
                d.kind(),
                d.severity(),
                d.novelty.clone().and_then(|n| n.what),
            )
        })
        .collect();
    let file = |path: &str, intent: &str| {
        What::File(v1::FileAccess {
            path: path.into(),
            intent: intent.parse().expect("intent"),
        })
    };
    let want = vec![
        (
            DeviationKind::NewExecutable,
            Severity::High,
            Some(What::Executable("/tmp/payload".into())),
        ),
        (
            DeviationKind::NewExecEdge,
            Severity::Low,
            Some(What::ExecEdge(v1::ExecEdge {
                parent_executable: "/usr/bin/curl".into(),
                child_executable: "/bin/bash".into(),
            })),
        ),
        (
            DeviationKind::NewFileAccess,
            Severity::Low,
            Some(file("/etc/resolv.conf", "read")),
        ),
        (
            // A file the job only ever read, now written (input tampering).
            DeviationKind::NewFileAccess,
            Severity::High,
            Some(file("/etc/hosts", "write|create")),
        ),
        (
            DeviationKind::NewFileAccess,
            Severity::High,
            Some(file("/home/runner/.ssh/id_ed25519", "read")),
        ),
        (
            // After the new credential read of the same run, to an address not resolved from a
            // name, in a stable network dimension: exfiltration-shaped.
            DeviationKind::NewNetworkDestination,
            Severity::Critical,
            Some(What::Destination(v1::NetworkDestination {
                dns_name: String::new(),
                address: "203.0.113.9".into(),
                port: 4444,
                protocol: "tcp".into(),
            })),
        ),
    ];
    assert_eq!(got, want);
    // In a run, the id is the hash of the novelty and the run, nothing in front.
    let payload = crate::behaviour::Behaviour::Executable("/tmp/payload".into());
    let novelty = detect::deviation_id(HOST, JOB, &payload);
    assert_eq!(
        deviations[0].id,
        detect::hash_fields(&[novelty.as_str(), "6"])
    );
    // One incident, the run's; the exfiltration carries the credential read as evidence.
    let incident = &deviations[0].incident_id;
    assert_eq!(incident.len(), 64);
    assert!(deviations.iter().all(|d| d.incident_id == *incident));
    let (ssh, exfil) = (&deviations[4], &deviations[5]);
    assert!(
        exfil.signals.iter().any(|s| s == "after-credential-access"),
        "{:?}",
        exfil.signals
    );
    assert_eq!(exfil.related.len(), 1);
    assert_eq!(exfil.related[0].deviation_id, ssh.id);
    assert_eq!(exfil.related[0].kind(), DeviationKind::NewFileAccess);
    assert!(
        exfil.tags.contains(&"mitre:T1041".to_owned()),
        "{:?}",
        exfil.tags
    );
    assert!(
        ssh.tags.contains(&"mitre:T1552.001".to_owned()),
        "{:?}",
        ssh.tags
    );
    assert!(
        deviations
            .iter()
            .all(|d| d.tags.contains(&"nist-csf:DE.CM-01".to_owned())
                && d.count == 1
                && d.score > 0)
    );
    let first = &deviations[0];
    assert_eq!(first.host, HOST);
    assert_eq!(
        first.summary,
        format!("new executable /tmp/payload run by /bin/bash in {JOB}")
    );
    assert_eq!(
        first.workload.as_ref().map(|w| w.run_id.as_str()),
        Some("6")
    );
    assert_eq!(
        first.time_unix_nanos,
        crate::event::unix_nanos(at(6 * 3600))
    );
    assert_eq!(first.process.as_ref().map(|p| p.pid), Some(50));

    // The same novelties again in the same run: nothing new. In a later run: each once more
    // (never silent twice), under that run's ids, saying it recurs after one earlier run. The
    // baseline did not absorb them (the edge into the new executable stays covered).
    assert_eq!(
        feed(&mut engine, &novelties(&job("6"), at(6 * 3600 + 1))),
        []
    );
    let again = feed(&mut engine, &novelties(&job("7"), at(7 * 3600)));
    assert_eq!(again.len(), 6);
    for (d, first) in again.iter().zip(&deviations) {
        assert_eq!((d.kind, &d.novelty), (first.kind, &first.novelty));
        assert_ne!(d.id, first.id, "the run is part of the id");
        assert!(d.signals.contains(&"recurring:1".to_owned()), "{d:?}");
    }
    assert_eq!(
        feed(&mut engine, &novelties(&job("7"), at(7 * 3600 + 1))),
        [],
        "once per run"
    );
    let s = only(engine.summary());
    assert_eq!((s.executables, s.reported), (2, 6));
}

#[test]
fn restart_keeps_learning_state_and_dedup() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut engine = engine(dir.path());
        learn_runs(&mut engine, 1..3);
        engine.persist().expect("persist");
    }
    let mut engine = engine(dir.path());
    assert_eq!(
        only(engine.summary()).status,
        LearningStatus::LearningRuns { seen: 2, needed: 5 }
    );
    learn_runs(&mut engine, 3..6);
    assert_eq!(
        feed(&mut engine, &normal_run(&job("6"), at(6 * 3600), 6000)),
        []
    );
    let reported = feed(&mut engine, &novelties(&job("6"), at(6 * 3600)));
    assert_eq!(reported.len(), 6);
    engine.persist().expect("persist");
    drop(engine);

    let mut engine = self::engine(dir.path());
    assert_eq!(only(engine.summary()).status, LearningStatus::Detecting);
    // Reported before the restart: once more in run 8, as recurring.
    let again = feed(&mut engine, &novelties(&job("8"), at(8 * 3600)));
    assert_eq!(again.len(), 6, "reported again in a later run");
    assert!(
        again
            .iter()
            .all(|d| d.signals.contains(&"recurring:1".to_owned()))
    );
    assert_eq!(
        feed(&mut engine, &novelties(&job("8"), at(8 * 3600 + 1))),
        [],
        "once per run"
    );
    let other = ev(
        &job("8"),
        at(8 * 3600),
        80,
        "/usr/bin/curl",
        "/bin/bash",
        open("/etc/passwd", false),
    );
    let new = engine.observe(&other);
    assert_eq!(new.len(), 1);
    assert!(!reported.iter().any(|d| d.id == new[0].id));
    // One workload, one file.
    engine.persist().expect("persist");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("baselines"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("github_acme_app_ci_build-") && files[0].ends_with(".json"));
}

#[test]
fn non_ci_workloads_learn_for_a_period_of_event_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LearningConfig {
        learning_runs: 5,
        learning_period: Duration::from_secs(3600),
    };
    let mut engine = Engine::open(dir.path(), config, HOST.into()).expect("open");
    let w = unit();
    assert_eq!(feed(&mut engine, &normal_run(&w, at(0), 100)), []);
    match only(engine.summary()).status {
        LearningStatus::LearningTime { left } => assert_eq!(left, Duration::from_secs(3600)),
        other => panic!("expected time-based learning, got {other:?}"),
    }
    // Still learning just before the period ends.
    let late = ev(
        &w,
        at(3599),
        200,
        "/usr/bin/curl",
        "/bin/bash",
        open("/var/lib/app/db", true),
    );
    assert_eq!(engine.observe(&late), []);
    match only(engine.summary()).status {
        LearningStatus::LearningTime { left } => assert_eq!(left, Duration::from_secs(1)),
        other => panic!("expected time-based learning, got {other:?}"),
    }

    // After it: learnt behaviour is silent, new behaviour is reported.
    assert_eq!(feed(&mut engine, &normal_run(&w, at(3600), 300)), []);
    assert_eq!(
        engine.observe(&ev(
            &w,
            at(3601),
            301,
            "/usr/bin/curl",
            "/bin/bash",
            open("/var/lib/app/db", true)
        )),
        []
    );
    let new = ev(
        &w,
        at(3602),
        302,
        "/usr/bin/wget",
        "/bin/bash",
        exec("/usr/bin/wget"),
    );
    let d = feed(&mut engine, &[new]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind(), DeviationKind::NewExecutable);
    assert_eq!(d[0].severity(), Severity::Medium);
    let wl = d[0].workload.as_ref().expect("workload");
    assert_eq!(
        (wl.id.as_str(), wl.kind(), wl.run_id.as_str()),
        ("unit:app.service", v1::WorkloadKind::SystemdUnit, "")
    );
    // Without a run, the report's id is led by its hour (the collector's key groups them).
    let hour = (1_700_000_000 + 3602) / 3600;
    assert_eq!(&d[0].id[..8], format!("{hour:08x}"), "{}", d[0].id);
    assert_eq!(only(engine.summary()).status, LearningStatus::Detecting);
}

#[test]
fn corrupt_baseline_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let baselines = dir.path().join("baselines");
    std::fs::create_dir_all(&baselines).expect("mkdir");
    let bad = baselines.join("unit_x.service-0000000000000000.json");
    std::fs::write(&bad, "{\"version\": 1, \"workload\": ").expect("write");
    let error = Engine::open(dir.path(), LearningConfig::default(), HOST.into())
        .expect_err("a corrupt file must not load");
    assert!(
        matches!(error, BaselineError::Corrupt { ref path, .. } if *path == bad),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&bad.display().to_string()), "{message}");
    assert!(
        message.contains("move it out of the baselines directory"),
        "{message}"
    );

    std::fs::write(&bad, r#"{"version": 99, "workload": "unit:x.service"}"#).expect("write");
    let error = Engine::open(dir.path(), LearningConfig::default(), HOST.into())
        .expect_err("an unknown version must not load");
    assert!(
        matches!(error, BaselineError::UnsupportedVersion { version: 99, .. }),
        "{error:?}"
    );
}

#[test]
fn summary_display_is_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..3);
    let line = only(engine.summary()).to_string();
    assert_eq!(
        line,
        format!(
            "{JOB}: learning (2/5 runs); 2 executables, 2 exec edges, 3 file accesses, 1 destinations, 0 other, 0 reported"
        )
    );
}
