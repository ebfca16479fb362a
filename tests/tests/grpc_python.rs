//! The proto is the contract, not our Rust code: an independent client written with another gRPC
//! implementation (Python grpcio from PyPI, stubs generated from `proto/sensor/v1/collector.proto`
//! by `grpc_tools.protoc`) streams batches to the real collector binary, checks the acks, and
//! queries the deviations back. `tests/python/client.py` is the client, `tests/python/make-venv`
//! its pinned environment (built under target/ once; `scripts/setup` builds it ahead of time).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{free_port, wait_for, workspace_bin};

use tests::Guard;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv with grpcio, created on first use; panics with pip's output when it cannot be.
fn venv() -> PathBuf {
    // target/tmp → target/grpc-python-venv, where scripts/setup puts it too.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("grpc-python-venv");
    let out = Command::new(repo().join("tests/python/make-venv"))
        .arg(&dir)
        .output()
        .expect("running tests/python/make-venv");
    assert!(
        out.status.success(),
        "cannot create the Python venv with grpcio from PyPI at {} (needs python3 with venv and \
         access to PyPI, or run scripts/setup first):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn a_python_grpcio_client_streams_and_queries() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--metrics-listen", "", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(dir.path().join("collector.db"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let gen_dir = dir.path().join("gen");
    std::fs::create_dir(&gen_dir).unwrap();
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/python/client.py"))
        .args(["--server", &format!("127.0.0.1:{port}")])
        .arg("--proto-root")
        .arg(repo().join("proto"))
        .arg("--gen-dir")
        .arg(&gen_dir)
        .args(["--batches", "3", "--batch-size", "50"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["queried"], 150, "{summary}");
    // Three batches stored, then the resent second one acknowledged as duplicates.
    assert_eq!(
        summary["acks"],
        serde_json::json!([[1, 50, 0], [2, 50, 0], [3, 50, 0], [2, 0, 50]]),
        "{summary}"
    );
    assert!(gen_dir.join("sensor/v1/collector_pb2_grpc.py").exists());

    // Cross-check from our own side: the Rust CLI sees what Python stored, once each.
    let host = summary["host"].as_str().unwrap();
    let listed = Command::new(workspace_bin("collector"))
        .args(["deviations", "--json", "--limit", "1000", "--host", host])
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let rows: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 150);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 150);
    assert!(rows.iter().all(|r| r["agent_id"] == summary["agent_id"]
        && r["kind"] == "new-network-destination"
        && r["novelty"]["address"] == "192.0.2.7"));
}
