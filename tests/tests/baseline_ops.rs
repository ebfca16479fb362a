//! Operating baselines with the real binaries while the agent runs: `sensor baseline list, show,
//! accept <deviation id>, freeze, diff, export, import, reset`, then a SIGKILLed agent restarts on
//! its state directory with everything it had learnt.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::stack::deviations;
use tests::{free_port, wait_for, workspace_bin};

const WORKLOAD: &str = "github:acme/ops/ci/build";

/// The job: reads a file and runs `ls`; with `$EXTRA` set it also runs that executable.
const JOB: &str = "cat \"$WORK/input.txt\" > /dev/null\nls \"$WORK\" > /dev/null\n\
                   if [ -n \"$EXTRA\" ]; then \"$EXTRA\" > /dev/null; fi\n";

use tests::Guard;

fn sensor(state: &Path, server: &str) -> Guard {
    let _ = std::fs::remove_file(state.join("status.json"));
    let child = Command::new(workspace_bin("sensor"))
        .args(["run", "--collector", server, "--learning-runs", "2"])
        .args(["--metrics-listen", "", "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Guarded before waiting: a sensor that fails to start is still stopped.
    let guard = Guard(child);
    wait_for("sensor to attach", Duration::from_secs(60), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });
    guard
}

fn baseline(state: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("sensor"))
        .arg("baseline")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// Runs `sensor baseline ARGS`, asserts success, returns stdout.
fn ok(state: &Path, args: &[&str]) -> String {
    let out = baseline(state, args);
    assert!(
        out.status.success(),
        "sensor baseline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_job(dir: &Path, run: u32, extra: &str) {
    let status = tests::github_job("acme/ops", run)
        .arg(dir.join("job.sh"))
        .env("WORK", dir.join("work"))
        .env("EXTRA", extra)
        .status()
        .unwrap();
    assert!(status.success());
}

fn listed(state: &Path, workload: &str) -> Option<Value> {
    ok(state, &["list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|b| b["workload"] == workload)
}

#[test]
fn operator_commands_work_beside_a_running_agent_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::fs::write(dir.path().join("work/input.txt"), "x").unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "", "--db"])
            .arg(dir.path().join("collector.db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let state = dir.path().join("state");
    let agent = sensor(&state, &server);

    run_job(dir.path(), 1, "");
    run_job(dir.path(), 2, "");
    run_job(dir.path(), 3, "/usr/bin/id");
    let id = wait_for(
        "the new executable of run 3",
        Duration::from_secs(20),
        || {
            deviations(&server, WORKLOAD)
                .into_iter()
                .find(|d| {
                    d["kind"] == "new-executable" && d["novelty"]["executable"] == "/usr/bin/id"
                })
                .map(|d| d["id"].as_str().unwrap().to_owned())
        },
    );
    let before = wait_for("the baseline on disk", Duration::from_secs(15), || {
        listed(&state, WORKLOAD).filter(|b| b["state"] == "detecting")
    });
    let v1 = before["version"].as_u64().unwrap();
    assert!(v1 >= 1, "{before}");

    // Accept by deviation id: the running agent applies it (the executable and its exec edge)
    // and answers.
    let text = ok(&state, &["accept", &id]);
    assert!(
        text.contains("accepted 2 behaviour") && text.contains(WORKLOAD),
        "{text}"
    );
    let accepted = listed(&state, WORKLOAD).unwrap();
    let v2 = accepted["version"].as_u64().unwrap();
    assert_eq!(v2, v1 + 1, "{accepted}");
    // Run 4 runs it again. Deviations are reported once per behaviour, so the executable would
    // stay quiet anyway; its exec edge, though, is judged only once the executable is known, and
    // would now be new had it not been accepted with it. What the executable's presence newly
    // reveals (its place in the sequence of the shell's children) is accepted too, by id.
    run_job(dir.path(), 4, "/usr/bin/id");
    run_job(dir.path(), 5, "/usr/bin/whoami");
    let all = wait_for("run 5's deviation", Duration::from_secs(20), || {
        let all = deviations(&server, WORKLOAD);
        all.iter()
            .any(|d| d["run_id"] == "5" && d["novelty"]["executable"] == "/usr/bin/whoami")
            .then_some(all)
    });
    let run4: Vec<&Value> = all.iter().filter(|d| d["run_id"] == "4").collect();
    assert!(
        run4.iter().all(|d| d["kind"] == "new-sequence"),
        "run 4 repeats accepted behaviour: {run4:#?}"
    );
    for d in &run4 {
        let text = ok(&state, &["accept", d["id"].as_str().unwrap()]);
        assert!(text.contains("accepted"), "{text}");
    }
    let diff: Value = serde_json::from_str(&ok(
        &state,
        &["diff", &format!("{WORKLOAD}@{v2}"), WORKLOAD, "--json"],
    ))
    .unwrap();
    let sequences = diff["dimensions"]["sequence"]["added"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(sequences, run4.len(), "{diff}");
    let v2 = listed(&state, WORKLOAD).unwrap()["version"]
        .as_u64()
        .unwrap();

    // Freeze; the diff across versions names the accepted behaviour.
    assert!(ok(&state, &["freeze", WORKLOAD]).contains("frozen"));
    assert_eq!(listed(&state, WORKLOAD).unwrap()["state"], "frozen");
    let diff: Value = serde_json::from_str(&ok(
        &state,
        &["diff", &format!("{WORKLOAD}@{v1}"), WORKLOAD, "--json"],
    ))
    .unwrap();
    assert_eq!(
        diff["dimensions"]["executable"]["added"],
        serde_json::json!([{"executable": "/usr/bin/id"}]),
        "{diff}"
    );
    let shown = ok(&state, &["show", WORKLOAD]);
    assert!(
        shown.contains("/usr/bin/id") && shown.contains("accept"),
        "{shown}"
    );

    // Export, then import under another workload id; a newer format version is refused.
    let export = dir.path().join("export.json");
    ok(
        &state,
        &["export", WORKLOAD, "-o", export.to_str().unwrap()],
    );
    let copy = "github:acme/ops/ci/copy";
    assert!(ok(&state, &["import", export.to_str().unwrap(), "--as", copy]).contains("imported"));
    let same = ok(&state, &["diff", export.to_str().unwrap(), copy]);
    assert!(same.contains("hold the same behaviours"), "{same}");
    let mut future: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    future["format_version"] = 99.into();
    let future_file = dir.path().join("future.json");
    std::fs::write(&future_file, future.to_string()).unwrap();
    let refused = baseline(&state, &["import", future_file.to_str().unwrap()]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("format version 99 is not supported"),
        "{error}"
    );

    // A mistyped state directory is named, and nothing is created there.
    let missing = dir.path().join("no-such-state");
    let out = baseline(&missing, &["freeze", WORKLOAD]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("no state directory"), "{error}");
    assert!(!missing.exists());

    // SIGKILL the agent; a new one starts on the same state with everything kept.
    drop(agent);
    let agent = sensor(&state, &server);
    let kept = listed(&state, WORKLOAD).unwrap();
    assert_eq!(
        (kept["state"].as_str(), kept["version"].as_u64()),
        (Some("frozen"), Some(v2 + 1)),
        "{kept}"
    );
    assert!(listed(&state, copy).is_some());
    // Reset through the new agent: learning afresh.
    assert!(ok(&state, &["reset", WORKLOAD]).contains("reset"));
    assert_eq!(listed(&state, WORKLOAD).unwrap()["state"], "learning");
    drop(agent);
}
