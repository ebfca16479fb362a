//! Stock gRPC tooling over mutual TLS: Python grpcio (gRPC C-core with BoringSSL, nothing from
//! this repository) checks the standard health service, lists services by server reflection,
//! is refused by the Query service without a token and answered with one, and is refused
//! without a client certificate. `tests/python/tls_probe.py` is the client; the venv is
//! `tests/python/make-venv`'s (built by scripts/setup). Needs `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{free_port, wait_for, workspace_bin};

use tests::Guard;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The grpcio venv shared with `grpc_python.rs`, created on first use.
fn venv() -> PathBuf {
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
        "cannot create the Python venv with grpcio at {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn grpcio_speaks_health_reflection_and_query_auth_over_mtls() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let made = Command::new(workspace_bin("collector"))
        .args(["certs", "--dir"])
        .arg(&certs)
        .args(["--agent", "py-agent"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "py-token\n").unwrap();
    let port = free_port();
    let _collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--metrics-listen", "", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(dir.path().join("collector.db"))
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .arg("--tls-client-ca")
            .arg(certs.join("ca.pem"))
            .arg("--query-token-file")
            .arg(&tokens)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn collector serve"),
    );
    wait_for("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/python/tls_probe.py"))
        .arg("--target")
        .arg(format!("localhost:{port}"))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("agent-py-agent.pem"))
        .arg("--key")
        .arg(certs.join("agent-py-agent.key"))
        .args(["--token", "py-token"])
        .output()
        .expect("run tls_probe.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        report,
        json!({
            "health": {
                "(server)": "SERVING",
                "sensor.v1.Ingest": "SERVING",
                "sensor.v1.Query": "SERVING",
            },
            "reflection": ["sensor.v1.Ingest", "sensor.v1.Query", "grpc.health.v1.Health"],
            "query_without_token": "UNAUTHENTICATED",
            "query_with_token": "OK",
            "without_client_certificate": "UNAVAILABLE",
        })
    );
}
