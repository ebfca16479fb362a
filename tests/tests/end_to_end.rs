//! The whole product with its real binaries: collector (SQLite) and sensor (kernel programs)
//! talking gRPC over a real socket, and a CI job as the workload.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{free_port, wait_for, workspace_bin};

const JOB: &str = r#"
cat "$WORK/input.txt" > /dev/null
ls "$WORK" > /dev/null
exec 3<>"/dev/tcp/127.0.0.1/$PORT1"; exec 3>&-
if [ -n "$MALICIOUS" ]; then
  /usr/bin/id > /dev/null
  cat "$WORK/secret.txt" > /dev/null
  exec 3<>"/dev/tcp/127.0.0.1/$PORT2"; exec 3>&-
  cp /bin/true "$WORK/dropped"; chmod 755 "$WORK/dropped"; "$WORK/dropped"
  /usr/bin/unshare --uts /bin/true
fi
"#;

use tests::Guard;

fn terminate(mut guard: Guard) -> std::process::ExitStatus {
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) };
    let status = guard.0.wait().unwrap();
    std::mem::forget(guard);
    status
}

fn deviations(server: &str) -> Vec<Value> {
    let out = Command::new(workspace_bin("collector"))
        .args(["deviations", "--server", server, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "collector deviations failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn run_job(dir: &Path, run_id: u32, ports: (u16, u16), malicious: bool) {
    let status = Command::new("/bin/bash")
        .arg(dir.join("job.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_REPOSITORY", "acme/app")
        .env("GITHUB_WORKFLOW", "ci")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_RUN_ID", run_id.to_string())
        .env("WORK", dir.join("work"))
        .env("PORT1", ports.0.to_string())
        .env("PORT2", ports.1.to_string())
        .env("MALICIOUS", if malicious { "1" } else { "" })
        .status()
        .unwrap();
    assert!(status.success(), "job run {run_id} failed");
}

#[test]
fn ci_job_learns_then_reports_new_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("input.txt"), "input").unwrap();
    std::fs::write(work.join("secret.txt"), "secret").unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();
    let known = TcpListener::bind("127.0.0.1:0").unwrap();
    let new = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = (
        known.local_addr().unwrap().port(),
        new.local_addr().unwrap().port(),
    );

    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.path().join("collector.db"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let state = dir.path().join("state");
    let sensor = Guard(
        Command::new(workspace_bin("sensor"))
            .args([
                "run",
                "--collector",
                &server,
                "--learning-runs",
                "3",
                "--state-dir",
            ])
            .arg(&state)
            .spawn()
            .unwrap(),
    );
    wait_for("sensor to attach", Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });

    for run in 1..=4 {
        run_job(dir.path(), run, ports, false);
    }
    run_job(dir.path(), 5, ports, true);

    let workload = "github:acme/app/ci/build";
    let found = wait_for("deviations of run 5", Duration::from_secs(20), || {
        let all: Vec<Value> = deviations(&server)
            .into_iter()
            .filter(|d| d["workload"] == workload)
            .collect();
        let has = |pred: &dyn Fn(&Value) -> bool| all.iter().any(pred);
        let exe =
            has(&|d| d["kind"] == "new-executable" && d["novelty"]["executable"] == "/usr/bin/id");
        let file = has(&|d| {
            d["kind"] == "new-file-access"
                && d["novelty"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/work/secret.txt"))
                && d["novelty"]["intent"] == "read"
        });
        let net = has(&|d| {
            d["kind"] == "new-network-destination"
                && d["novelty"]["address"] == "127.0.0.1"
                && d["novelty"]["port"] == ports.1
        });
        let dropped = has(&|d| {
            d["kind"] == "new-executable"
                && d["novelty"]["executable"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/work/dropped"))
                && d["severity"] == "critical"
                && d["signals"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s == "dropped-then-executed"))
        });
        let privilege = has(&|d| {
            d["kind"] == "new-privilege-use"
                && d["novelty"]["operation"] == "unshare"
                && d["novelty"]["result"] == 0
        });
        (exe && file && net && dropped && privilege).then_some(all)
    });

    for d in &found {
        assert_eq!(d["run_id"], "5", "only the malicious run deviates: {d}");
        for field in [
            "time",
            "host",
            "workload",
            "kind",
            "severity",
            "summary",
            "executable",
        ] {
            assert!(
                d[field].as_str().is_some_and(|s| !s.is_empty()),
                "field {field} missing in {d}"
            );
        }
    }
    // The dropped executable is identified by content: a copy of /bin/true.
    let sha256sum = Command::new("sha256sum").arg("/bin/true").output().unwrap();
    let true_hash = String::from_utf8(sha256sum.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let dropped = found
        .iter()
        .find(|d| {
            d["kind"] == "new-executable"
                && d["novelty"]["executable"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/work/dropped"))
        })
        .unwrap();
    assert_eq!(
        dropped["process"]["executable_sha256"],
        true_hash.as_str(),
        "{dropped}"
    );

    // Reported once: ids are unique.
    let mut ids: Vec<&str> = found.iter().map(|d| d["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), found.len());

    // `sensor status` reports the attached programs and the job's learning state.
    let status = wait_for("status listing the job", Duration::from_secs(10), || {
        let out = Command::new(workspace_bin("sensor"))
            .args(["status", "--json", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        let listed = status["workloads"]
            .as_array()?
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(workload)));
        listed.then_some(status)
    });
    assert_eq!(status["running"], true);
    assert_eq!(status["delivery"]["connected"], true, "{status}");
    assert!(status["attached"].as_array().unwrap().len() > 20);
    let text = Command::new(workspace_bin("sensor"))
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("detecting") && text.contains("(connected; spool"),
        "{text}"
    );

    assert!(terminate(sensor).success(), "sensor exits 0 on SIGTERM");
    assert!(
        terminate(collector).success(),
        "collector exits 0 on SIGTERM"
    );
    drop((known, new));
}
