//! The collector's operator commands with the real binary: `collector install`/`uninstall` under
//! `--root`, and `collector export` of stored deviations as OCSF lines for a SIEM.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use proto::v1::{
    Deviation, DeviationBatch, DeviationKind, Process, Severity, Workload,
    ingest_client::IngestClient,
};
use serde_json::Value;
use tests::{free_port, wait_for, workspace_bin};

use tests::Guard;

fn collector(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("collector"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn install_writes_a_service_and_uninstall_purge_removes_it() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap();
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    let out = collector(&["install", "--root", root_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("next: systemctl daemon-reload && systemctl enable --now collector"),
        "{stdout}"
    );

    let unit = std::fs::read_to_string(at("/etc/systemd/system/collector.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/collector.service")
        )
        .unwrap()
    );
    for line in [
        "ExecStart=/usr/local/bin/collector serve --config ${CREDENTIALS_DIRECTORY}/config",
        "LoadCredential=config:/etc/sensor/collector.toml",
        "DynamicUser=yes",
        "StateDirectory=sensor-collector",
        "Restart=always",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    let binary = at("/usr/local/bin/collector");
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The installed binary runs with the installed config: it accepts it and would serve from
    // the state directory systemd creates.
    let config = at("/etc/sensor/collector.toml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let port = free_port();
    let state = at("/var/lib/sensor-collector");
    std::fs::create_dir_all(&state).unwrap();
    let _served = Guard(
        Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--metrics-listen", "", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(state.join("collector.db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the installed collector to listen",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    assert!(state.join("collector.db").exists());

    // Uninstall keeps the config and the database; --purge removes them too.
    let out = collector(&["uninstall", "--root", root_arg]);
    assert!(out.status.success());
    assert!(!binary.exists() && !at("/etc/systemd/system/collector.service").exists());
    assert!(config.exists() && state.join("collector.db").exists());
    let out = collector(&["uninstall", "--root", root_arg, "--purge"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!config.exists() && !state.exists(), "{stdout}");
    assert!(stdout.contains("systemctl daemon-reload"), "{stdout}");
}

/// A broken configuration blocks `serve` with its line and reason, never the commands that
/// (re)install or remove the service.
#[test]
fn install_and_uninstall_work_with_a_broken_config() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap();
    let broken = root.path().join("broken.toml");
    std::fs::write(&broken, "listen = [not toml\n").unwrap();
    let broken_arg = broken.to_str().unwrap();
    let serve = collector(&["--config", broken_arg, "serve"]);
    assert_eq!(serve.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&serve.stderr).contains("broken.toml:1"));
    for command in [
        vec!["--config", broken_arg, "install", "--root", root_arg],
        vec!["--config", broken_arg, "uninstall", "--root", root_arg],
    ] {
        let out = collector(&command);
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn deviation(id: &str, time_unix_nanos: i64, severity: Severity) -> Deviation {
    Deviation {
        id: id.to_owned(),
        time_unix_nanos,
        host: "export-host".to_owned(),
        workload: Some(Workload {
            id: "unit:export.service".to_owned(),
            ..Workload::default()
        }),
        kind: DeviationKind::NewExecutable.into(),
        severity: severity.into(),
        summary: format!("new executable for {id}"),
        process: Some(Process {
            pid: 42,
            executable: "/usr/bin/nc".to_owned(),
            argv: vec!["nc".to_owned(), "-l".to_owned()],
            ..Process::default()
        }),
        ..Deviation::default()
    }
}

#[test]
fn export_writes_ocsf_detection_findings() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--metrics-listen", "", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(dir.path().join("collector.db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let base = 1_700_000_000_000_000_000;
    let batch = DeviationBatch {
        agent_id: "export-agent".to_owned(),
        sequence: 1,
        deviations: vec![
            deviation("exp-1", base, Severity::Low),
            deviation("exp-2", base + 2_000_000, Severity::Critical),
            deviation("exp-3", base + 1_000_000, Severity::High),
        ],
        ..DeviationBatch::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = IngestClient::connect(server.clone()).await.unwrap();
        let mut acks = client
            .stream_deviations(tonic::codegen::tokio_stream::iter(vec![batch]))
            .await
            .unwrap()
            .into_inner();
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.stored, 3);
    });

    let file = dir.path().join("findings.jsonl");
    let out = collector(&[
        "export",
        "--server",
        &server,
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 3 deviations"));
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|f| f["finding_info"]["uid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["exp-1", "exp-3", "exp-2"], "oldest first");
    for f in &lines {
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["type_uid"], 200_401);
        assert_eq!(f["device"]["hostname"], "export-host");
        assert_eq!(f["actor"]["process"]["file"]["path"], "/usr/bin/nc");
        assert_eq!(f["unmapped"]["agent_id"], "export-agent");
    }
    assert_eq!(lines[0]["time"], 1_700_000_000_000_i64);
    assert_eq!(lines[2]["severity_id"], 5);

    // Filters apply, and a second export appends.
    let out = collector(&[
        "export",
        "--server",
        &server,
        "--min-severity",
        "high",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 5);

    // Stdout by default.
    let out = collector(&["export", "--server", &server, "--min-severity", "critical"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("\"uid\":\"exp-2\""), "{stdout}");

    // An unreachable collector is one clear line and a failure.
    let out = collector(&[
        "export",
        "--server",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach collector"));
}
