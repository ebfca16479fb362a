//! Running the product for real: `sensor install`/`uninstall`, configuration files, and the
//! Prometheus endpoints of both binaries over real HTTP.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proto::v1::{Deviation, DeviationKind, Severity, Workload};
use sensor_user::transport::{Transport, TransportConfig};
use tests::{free_port, wait_for, workspace_bin};

/// Kills a child on drop so a failing test leaves nothing running.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

fn sensor(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("sensor"))
        .args(args)
        .output()
        .unwrap()
}

/// The body of `GET /metrics` at `addr`, or `None` while nothing answers there.
fn scrape(addr: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    Some(body.to_owned())
}

/// The sum of the samples of `name` (every label set), or `None` when it has none.
fn sample(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until the metrics at `addr` satisfy `check`; returns them.
fn wait_for_metrics(addr: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_for(what, Duration::from_secs(20), || {
        scrape(addr).filter(|text| check(text))
    })
}

#[test]
fn install_writes_a_service_and_uninstall_purge_removes_it() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap();
    let out = sensor(&["install", "--root", root_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("next: systemctl daemon-reload && systemctl enable --now sensor"),
        "{stdout}"
    );
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));

    let unit = std::fs::read_to_string(at("/etc/systemd/system/sensor.service")).unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    for line in [
        "ExecStart=/usr/local/bin/sensor run --config /etc/sensor/sensor.toml",
        "Restart=always",
        "User=root",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&line), "unit lacks {line:?}:\n{unit}");
    }
    assert!(lines.iter().any(|l| l.starts_with("RestartSec=")), "{unit}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CapabilityBoundingSet=") && l.contains("CAP_BPF")),
        "{unit}"
    );
    assert!(
        stdout.contains(
            &at("/etc/systemd/system/sensor.service")
                .display()
                .to_string()
        )
    );

    let binary = at("/usr/local/bin/sensor");
    assert_eq!(
        std::fs::metadata(&binary).unwrap().len(),
        std::fs::metadata(workspace_bin("sensor")).unwrap().len()
    );
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The installed binary works, and runs with the installed config.
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(version.status.success());
    let config = at("/etc/sensor/sensor.toml");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/sensor.toml")
        )
        .unwrap()
    );
    let status = Command::new(&binary)
        .args(["status", "--config"])
        .arg(&config)
        .args(["--state-dir"])
        .arg(at("/var/lib/sensor"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("is `sensor run` using this --state-dir?"),
        "the installed config is accepted: {stderr}"
    );
    let state = at("/var/lib/sensor");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Uninstall keeps the config and the state; --purge removes them too.
    std::fs::write(state.join("baseline.json"), "{}").unwrap();
    let out = sensor(&["uninstall", "--root", root_arg]);
    assert!(out.status.success());
    assert!(!binary.exists() && !at("/etc/systemd/system/sensor.service").exists());
    assert!(config.exists() && state.join("baseline.json").exists());
    let out = sensor(&["uninstall", "--root", root_arg, "--purge"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!config.exists() && !state.exists(), "{stdout}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(stdout.contains("systemctl daemon-reload"), "{stdout}");
}

#[test]
fn an_invalid_config_is_refused_with_its_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "# a comment\ncollector = \"http://127.0.0.1:1\"\nlearning_runs = -3\n",
    )
    .unwrap();
    let out = sensor(&["run", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("{}:3:17: ", bad.display())),
        "file:line:column: {stderr}"
    );
    assert!(stderr.contains("invalid value"), "reason: {stderr}");

    std::fs::write(&bad, "learning-runs = 3\n").unwrap();
    let out = sensor(&["status", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml:1:1: unknown field `learning-runs`"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.toml");
    let out = sensor(&["run", "--config", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let out = Command::new(workspace_bin("collector"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:1:1: unknown field"), "{stderr}");
}

/// A collector configured by file; returns it with its gRPC URL and metrics address.
fn start_collector(dir: &Path) -> (Guard, String, String) {
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\nlisten = \"127.0.0.1:{port}\"\ndb = \"{}\"\n\
             metrics_listen = \"{metrics}\"\n",
            dir.join("collector.db").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("collector.log")).unwrap();
    let collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("collector metrics", Duration::from_secs(10), || {
        scrape(&metrics)
    });
    let log = std::fs::read_to_string(dir.join("collector.log")).unwrap();
    let first = log.lines().next().expect("the collector logs");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "log_format from the file: {first}"
    );
    (collector, format!("http://127.0.0.1:{port}"), metrics)
}

fn deviation(id: &str) -> Deviation {
    Deviation {
        id: id.to_owned(),
        time_unix_nanos: 1_700_000_000_000_000_000,
        host: "ops-test".to_owned(),
        workload: Some(Workload {
            id: "unit:ops-test.service".to_owned(),
            ..Workload::default()
        }),
        kind: DeviationKind::NewExecutable.into(),
        severity: Severity::Medium.into(),
        summary: format!("deviation {id}"),
        ..Deviation::default()
    }
}

#[test]
fn collector_metrics_count_what_an_agent_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, url, metrics) = start_collector(dir.path());
    let before = scrape(&metrics).unwrap();
    assert_eq!(
        sample(&before, "collector_deviations_ingested_total"),
        Some(0.0)
    );
    assert_eq!(sample(&before, "collector_agents_connected"), Some(0.0));

    // The agent's own transport: spool on disk, one gRPC stream, acknowledged batches.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _enter = runtime.enter();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut config = TransportConfig::new(url, dir.path().join("agent"));
    config.agent_id = "ops-test-agent".to_owned();
    config.flush_interval = Duration::from_millis(20);
    let (transport, task) = Transport::start(config, cancel.clone()).unwrap();
    transport
        .send(vec![deviation("d1"), deviation("d2")])
        .unwrap();
    let text = wait_for_metrics(&metrics, "two deviations ingested", |t| {
        sample(t, "collector_deviations_ingested_total") == Some(2.0)
    });
    assert_eq!(
        sample(&text, "collector_batches_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "collector_agents_connected"),
        Some(1.0),
        "{text}"
    );

    // The same deviation again, in a new batch: acknowledged, not stored twice.
    transport.send(vec![deviation("d1")]).unwrap();
    let text = wait_for_metrics(&metrics, "a duplicate", |t| {
        sample(t, "collector_duplicates_total") == Some(1.0)
    });
    assert_eq!(
        sample(&text, "collector_batches_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "collector_deviations_ingested_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "collector_ingest_errors_total"),
        Some(0.0),
        "{text}"
    );

    cancel.cancel();
    runtime.block_on(task).unwrap();
    wait_for_metrics(&metrics, "the agent to disconnect", |t| {
        sample(t, "collector_agents_connected") == Some(0.0)
    });
    assert!(
        collector.terminate().success(),
        "collector exits 0 on SIGTERM"
    );
}

#[test]
fn sensor_metrics_show_events_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, url, collector_metrics) = start_collector(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let state = dir.path().join("state");
    let config = dir.path().join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"{url}\"\nstate_dir = \"{}\"\nmetrics_listen = \"{metrics}\"\n\
             log_format = \"json\"\n",
            state.display()
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.path().join("sensor.log")).unwrap();
    let sensor = Guard(
        Command::new(workspace_bin("sensor"))
            .args(["run", "--config"])
            .arg(&config)
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    wait_for("sensor to attach", Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });
    tests::run(&mut Command::new("/bin/true"));

    let text = wait_for_metrics(&metrics, "exec events counted", |t| {
        sample(t, "sensor_events_total{kind=\"exec\"}").is_some_and(|n| n > 0.0)
            && sample(t, "sensor_collector_connected") == Some(1.0)
    });
    assert!(sample(&text, "sensor_events_total").unwrap() > 0.0);
    for name in [
        "sensor_kernel_losses_total{reason=\"lost_exec\"}",
        "sensor_kernel_losses_total{reason=\"read_error\"}",
        "sensor_suppressed_repeats_total{reason=\"suppressed_open\"}",
        "sensor_spool_depth",
        "sensor_workloads",
        "sensor_deviations_acknowledged_total",
    ] {
        assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
    }
    let log = std::fs::read_to_string(dir.path().join("sensor.log")).unwrap();
    let first = log.lines().next().expect("the sensor logs");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "log_format from the file: {first}"
    );
    wait_for_metrics(&collector_metrics, "the sensor's stream", |t| {
        sample(t, "collector_agents_connected") == Some(1.0)
    });

    assert!(sensor.terminate().success(), "sensor exits 0 on SIGTERM");
    assert!(
        collector.terminate().success(),
        "collector exits 0 on SIGTERM"
    );
}
