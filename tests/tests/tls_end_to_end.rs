//! Mutual TLS end to end with the built binaries and the agent's real transport: `collector
//! certs` makes a deployment, `collector serve` requires client certificates, the sensor's
//! transport delivers over https:// under its certificate's identity (and cannot deliver under
//! another), `collector deviations` needs a query credential, and a plain-text collector refuses
//! a non-loopback address. Needs `cargo build --workspace --bins` first.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use proto::v1::{Deviation, DeviationKind, Severity, Workload};
use sensor_user::transport::{ClientTls, Transport, TransportConfig};
use tests::{free_port, wait_for, workspace_bin};

const TOKEN: &str = "e2e-query-token";
const AGENT: &str = "e2e-agent";

use tests::Guard;

/// Runs the collector binary to completion, killed (and the test failed) after 30 s.
fn collector(args: &[&str]) -> Output {
    let mut child = Command::new(workspace_bin("collector"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run collector");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("collector {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collector output")
}

fn deviation(id: &str) -> Deviation {
    Deviation {
        id: id.to_owned(),
        time_unix_nanos: 1_700_000_000_000_000_000,
        host: AGENT.to_owned(),
        workload: Some(Workload {
            id: "unit:tls-e2e.service".to_owned(),
            ..Workload::default()
        }),
        kind: DeviationKind::NewExecutable.into(),
        severity: Severity::High.into(),
        summary: format!("deviation {id}"),
        ..Deviation::default()
    }
}

fn agent_tls(certs: &Path) -> ClientTls {
    ClientTls {
        collector_ca: Some(certs.join("ca.pem")),
        client_cert: Some(certs.join(format!("agent-{AGENT}.pem"))),
        client_key: Some(certs.join(format!("agent-{AGENT}.key"))),
    }
}

/// `collector deviations --json` against `url` with extra arguments.
fn deviations(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["deviations", "--server", url, "--json"];
    args.extend(extra);
    collector(&args)
}

#[test]
fn agents_deliver_over_mtls_under_their_certificate_identity() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let certs_s = certs.to_str().unwrap();
    let made = collector(&[
        "certs",
        "--dir",
        certs_s,
        "--agent",
        AGENT,
        "--query-client",
        "ops",
        "--server-name",
        "localhost",
    ]);
    assert!(made.status.success(), "{made:?}");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();

    let port = free_port();
    let log = std::fs::File::create(dir.path().join("collector.log")).unwrap();
    let _server = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.path().join("collector.db"))
            .args(["--metrics-listen", "", "--tls-cert"])
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .arg("--tls-client-ca")
            .arg(certs.join("ca.pem"))
            .arg("--query-token-file")
            .arg(&tokens)
            .args(["--query-client", "ops"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn collector serve"),
    );
    let url = format!("https://localhost:{port}");
    wait_for("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _enter = runtime.enter();
    let start = |agent_id: &str, state: &str| {
        let mut config = TransportConfig::new(url.clone(), dir.path().join(state));
        config.agent_id = agent_id.to_owned();
        config.flush_interval = Duration::from_millis(20);
        config.tls = Some(agent_tls(&certs));
        let cancel = tokio_util::sync::CancellationToken::new();
        let (transport, task) = Transport::start(config, cancel.clone()).expect("transport");
        (transport, task, cancel)
    };

    // The honest agent: delivered and acknowledged.
    let (honest, honest_task, honest_cancel) = start(AGENT, "honest");
    honest
        .send(vec![deviation("tls-1"), deviation("tls-2")])
        .unwrap();
    wait_for("acknowledgement over TLS", Duration::from_secs(10), || {
        (honest.stats().acknowledged == 2).then_some(())
    });

    // The same certificate claiming another agent id: never acknowledged, kept in its spool.
    let (forger, forger_task, forger_cancel) = start("someone-else", "forger");
    forger.send(vec![deviation("forged")]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let stats = forger.stats();
    assert_eq!(
        (stats.acknowledged, stats.unacknowledged),
        (0, 1),
        "{stats:?}"
    );

    // Querying: the query client's certificate works; an agent certificate needs the token.
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let ops_cert = certs.join("query-ops.pem");
    let ops_key = certs.join("query-ops.key");
    let out = deviations(
        &url,
        &[
            "--server-ca",
            ca,
            "--client-cert",
            ops_cert.to_str().unwrap(),
            "--client-key",
            ops_key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["tls-1", "tls-2"], "{lines:?}");
    assert!(
        lines.iter().all(|l| l.to_string().contains(AGENT)),
        "stored under the certificate identity: {lines:?}"
    );

    let agent_cert = certs.join(format!("agent-{AGENT}.pem"));
    let agent_key = certs.join(format!("agent-{AGENT}.key"));
    let as_agent = [
        "--server-ca",
        ca,
        "--client-cert",
        agent_cert.to_str().unwrap(),
        "--client-key",
        agent_key.to_str().unwrap(),
    ];
    let out = deviations(&url, &as_agent);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused without a token");
    assert!(
        stderr.contains("answered Unauthenticated") && stderr.contains("not a query client"),
        "{stderr}"
    );
    let mut with_token = as_agent.to_vec();
    with_token.extend(["--token", TOKEN]);
    let out = deviations(&url, &with_token);
    assert!(out.status.success(), "{out:?}");

    // Without the collector's CA the client refuses to talk.
    let out = deviations(&url, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server-ca"),
        "{out:?}"
    );

    for (cancel, task) in [(honest_cancel, honest_task), (forger_cancel, forger_task)] {
        cancel.cancel();
        runtime.block_on(task).unwrap();
    }
    let log = std::fs::read_to_string(dir.path().join("collector.log")).unwrap();
    assert!(
        log.contains("claims agent_id \\\"someone-else\\\"")
            || log.contains("claims agent_id \"someone-else\""),
        "the collector says why it refused the forger: {log}"
    );
}

#[test]
fn plaintext_collector_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let out = collector(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        db.to_str().unwrap(),
        "--metrics-listen",
        "",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to serve plain text on 0.0.0.0:0") && stderr.contains("tls_cert"),
        "{stderr}"
    );
    assert!(!db.exists(), "nothing created before the refusal");
}
