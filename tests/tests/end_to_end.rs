//! The whole product with its real binaries: collector (SQLite) and sensor (kernel programs)
//! talking gRPC over a real socket, and a CI job as the workload.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::stack::Stack;
use tests::{wait_for, workspace_bin};

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

fn run_job(dir: &Path, run_id: u32, ports: (u16, u16), malicious: bool) {
    let status = tests::github_job("acme/app", run_id)
        .arg(dir.join("job.sh"))
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

    let stack = Stack::start(dir.path(), &["--learning-runs", "3"]);
    let state = &stack.state;

    for run in 1..=4 {
        run_job(dir.path(), run, ports, false);
    }
    run_job(dir.path(), 5, ports, true);

    let workload = "github:acme/app/ci/build";
    let found = wait_for("deviations of run 5", Duration::from_secs(20), || {
        let all = stack.deviations(workload);
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
            .arg(state)
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
        .arg(state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("detecting") && text.contains("(connected; spool"),
        "{text}"
    );

    let (sensor, collector) = stack.stop();
    assert!(
        sensor.is_some_and(|s| s.success()),
        "sensor exits 0 on SIGTERM"
    );
    assert!(
        collector.is_some_and(|s| s.success()),
        "collector exits 0 on SIGTERM"
    );
    drop((known, new));
}
