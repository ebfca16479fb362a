//! The built `collector` binary, end to end: `serve`, `deviations`, signals and error lines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{AgentStream, batch, deviation, temp_db};
use proto::v1::{DeviationKind, ExecEdge, FileAccess, NetworkDestination, Severity, novelty::What};

const BIN: &str = env!("CARGO_BIN_EXE_collector");

/// A `collector serve` child, killed if the test ends without stopping it.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `collector serve` on an ephemeral port; returns the child and its URL (read from its JSON log).
fn spawn_serve(db: &std::path::Path) -> (Serve, String) {
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            // Not the default port: another collector on this machine may hold it.
            "--metrics-listen",
            "",
            "--db",
        ])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector serve");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let child = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(remaining)
            .expect("collector did not log that it serves");
        let log: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if log["fields"]["message"] == "collector serving" {
            let listen = log["fields"]["listen"]
                .as_str()
                .expect("listen field")
                .to_owned();
            return (child, format!("http://{listen}"));
        }
    }
}

/// Runs the binary to completion with a deadline.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "collector {args:?} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "expected one error line, got: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_then_list_as_json_and_table_then_stop_on_sigterm() {
    let (_dir, db) = temp_db();
    let (mut serve, url) = spawn_serve(&db);

    let mut exe = deviation(
        "d-exe",
        1_700_000_000,
        "github:acme/app/ci/build",
        DeviationKind::NewExecutable,
        Severity::High,
    );
    exe.novelty.as_mut().unwrap().what = Some(What::Executable("/usr/bin/curl".into()));
    let mut edge = deviation(
        "d-edge",
        1_700_000_010,
        "github:acme/app/ci/build",
        DeviationKind::NewExecEdge,
        Severity::Medium,
    );
    edge.novelty.as_mut().unwrap().what = Some(What::ExecEdge(ExecEdge {
        parent_executable: "/usr/bin/bash".into(),
        child_executable: "/usr/bin/curl".into(),
    }));
    let mut file = deviation(
        "d-file",
        1_700_000_020,
        "unit:nginx.service",
        DeviationKind::NewFileAccess,
        Severity::Low,
    );
    file.novelty.as_mut().unwrap().what = Some(What::File(FileAccess {
        path: "/etc/shadow".into(),
        intent: "read".into(),
    }));
    let mut net = deviation(
        "d-net",
        1_700_000_030,
        "unit:nginx.service",
        DeviationKind::NewNetworkDestination,
        Severity::Critical,
    );
    net.novelty.as_mut().unwrap().what = Some(What::Destination(NetworkDestination {
        address: "203.0.113.7".into(),
        port: 4444,
        protocol: "tcp".into(),
        dns_name: "c2.example".into(),
    }));
    let mut agent = AgentStream::open(&url).await;
    let ack = agent
        .send(batch("agent-e2e", 1, vec![exe, edge, file, net]))
        .await
        .unwrap();
    assert_eq!(ack.stored, 4);
    drop(agent);

    let out = run(&[
        "deviations",
        "--server",
        &url,
        "--json",
        "--since",
        "100000d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d-net", "d-file", "d-edge", "d-exe"], "newest first");
    let net = &lines[0];
    assert_eq!(net["time"], "2023-11-14T22:13:50.000000000Z");
    assert_eq!(net["host"], "host-1");
    assert_eq!(net["workload"], "unit:nginx.service");
    assert_eq!(net["kind"], "new-network-destination");
    assert_eq!(net["severity"], "critical");
    assert_eq!(net["summary"], "d-net in unit:nginx.service");
    assert_eq!(net["executable"], "/usr/bin/curl");
    assert_eq!(net["run_id"], "7");
    assert_eq!(net["agent_id"], "agent-e2e");
    assert_eq!(net["process"]["pid"], 4242);
    assert_eq!(net["process"]["argv"][1], "example.com");
    assert_eq!(
        net["novelty"],
        serde_json::json!({"address": "203.0.113.7", "port": 4444, "protocol": "tcp", "dns_name": "c2.example"})
    );
    assert_eq!(
        lines[1]["novelty"],
        serde_json::json!({"path": "/etc/shadow", "intent": "read"})
    );
    assert_eq!(lines[2]["novelty"]["parent_executable"], "/usr/bin/bash");
    assert_eq!(
        lines[3]["novelty"],
        serde_json::json!({"executable": "/usr/bin/curl"})
    );

    let filtered = run(&[
        "deviations",
        "--server",
        &url,
        "--json",
        "--workload",
        "unit:nginx.service",
        "--min-severity",
        "high",
    ]);
    let text = String::from_utf8(filtered.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"d-net\""), "{text}");
    let by_kind = run(&[
        "deviations",
        "--server",
        &url,
        "--json",
        "--kind",
        "new-exec-edge",
    ]);
    assert!(
        String::from_utf8(by_kind.stdout)
            .unwrap()
            .contains("\"d-edge\"")
    );

    let table = run(&["deviations", "--server", &url]);
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(rows[0].starts_with("TIME"), "{table}");
    assert!(
        rows[1].contains("critical") && rows[1].contains("d-net in unit:nginx.service"),
        "{table}"
    );
    let summary_column = rows[0].find("SUMMARY").unwrap();
    assert!(
        rows[1..]
            .iter()
            .all(|r| r[summary_column..].starts_with("d-")),
        "{table}"
    );

    let child = &mut serve.0;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn unreachable_collector_is_one_clear_line_and_exit_1() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["deviations", "--server", &url]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(
        line.contains(&format!("cannot reach collector at {url}")),
        "{line}"
    );
    assert!(line.contains("is `collector serve` running?"), "{line}");
}

#[test]
fn address_in_use_is_one_clear_line() {
    let (_dir, db) = temp_db();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["serve", "--listen", &addr, "--db", db.to_str().unwrap()]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains(&format!("cannot listen on {addr}")) && line.contains("in use"),
        "{line}"
    );
}

#[test]
fn corrupt_database_is_one_clear_line() {
    let (_dir, db) = temp_db();
    std::fs::write(&db, vec![0x5a; 16384]).unwrap();
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("cannot open database") && line.contains("not a database"),
        "{line}"
    );
}
