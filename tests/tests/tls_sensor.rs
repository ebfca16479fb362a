//! The real sensor (kernel programs, root) delivering to a mutual-TLS collector: `sensor run`
//! with an https:// collector URL and its certificate, a CI job learnt then deviating, and the
//! deviation stored under the agent's certificate identity. Needs `cargo build --workspace
//! --bins` first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{free_port, wait_for, workspace_bin};

const HOST: &str = "tls-runner";
const TOKEN: &str = "tls-sensor-token";

use tests::Guard;

fn terminate(mut guard: Guard) -> std::process::ExitStatus {
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) };
    let status = guard.0.wait().unwrap();
    std::mem::forget(guard);
    status
}

fn job(dir: &Path, run: u32, extra: bool) {
    let script = if extra {
        "ls / > /dev/null; /usr/bin/id > /dev/null"
    } else {
        "ls / > /dev/null"
    };
    let status = tests::github_job("acme/tls", run)
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "job run {run}");
}

#[test]
fn the_sensor_delivers_over_mtls_under_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let made = Command::new(workspace_bin("collector"))
        .args(["certs", "--dir"])
        .arg(&certs)
        .args(["--agent", HOST])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();

    let port = free_port();
    let collector = Guard(
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
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let url = format!("https://localhost:{port}");

    let state = dir.path().join("state");
    let sensor = Guard(
        Command::new(workspace_bin("sensor"))
            .args(["run", "--collector", &url, "--host", HOST])
            .args([
                "--learning-runs",
                "1",
                "--metrics-listen",
                "",
                "--state-dir",
            ])
            .arg(&state)
            .arg("--collector-ca")
            .arg(certs.join("ca.pem"))
            .arg("--client-cert")
            .arg(certs.join(format!("agent-{HOST}.pem")))
            .arg("--client-key")
            .arg(certs.join(format!("agent-{HOST}.key")))
            .spawn()
            .unwrap(),
    );
    wait_for("sensor to attach", Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });

    job(dir.path(), 1, false);
    job(dir.path(), 2, true);

    let ca = certs.join("ca.pem");
    let query = || -> Vec<Value> {
        let out = Command::new(workspace_bin("collector"))
            .args(["deviations", "--json", "--server", &url, "--token", TOKEN])
            .arg("--server-ca")
            .arg(&ca)
            .arg("--client-cert")
            .arg(certs.join(format!("agent-{HOST}.pem")))
            .arg("--client-key")
            .arg(certs.join(format!("agent-{HOST}.key")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let id = wait_for(
        "the new executable of run 2",
        Duration::from_secs(20),
        || {
            query().into_iter().find(|d| {
                d["workload"] == "github:acme/tls/ci/build"
                    && d["kind"] == "new-executable"
                    && d["novelty"]["executable"] == "/usr/bin/id"
            })
        },
    );
    assert_eq!(id["agent_id"], HOST, "stored under the certificate: {id}");
    assert_eq!(id["run_id"], "2", "{id}");

    let status = Command::new(workspace_bin("sensor"))
        .args(["status", "--json", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["delivery"]["connected"], true, "{status}");

    assert!(terminate(sensor).success(), "sensor exits 0 on SIGTERM");
    assert!(terminate(collector).success());
}
