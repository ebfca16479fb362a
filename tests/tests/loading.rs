//! A new executable's loading, with the real sensor (kernel programs) and the real collector:
//! the shared libraries a new executable maps as it starts are evidence on its one
//! `new-executable` deviation, not deviations of their own (issue 14).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::stack::Stack;
use tests::{wait_for, workspace_bin};

const WORKLOAD: &str = "github:acme/loading/ci/build";
/// What every run does: tools the baseline learns (and their loading: libc, `ld.so.cache`).
const LEARNT: &str = "cat /etc/hostname > /dev/null\n/bin/ls / > /dev/null\n";
/// The judged run adds git, new to the job: it loads libz, which cat and ls do not (`ldd`).
const NEW: &str = "/usr/bin/git --version > /dev/null\n";

fn run_job(dir: &std::path::Path, run: &str, script: &str) {
    let path = dir.join(format!("job-{run}.sh"));
    std::fs::write(&path, script).unwrap();
    let status = Command::new("/bin/bash")
        .arg(&path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_REPOSITORY", "acme/loading")
        .env("GITHUB_WORKFLOW", "ci")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_RUN_ID", run)
        .status()
        .unwrap();
    assert!(status.success());
}

fn is_library(path: &str) -> bool {
    path.contains(".so")
}

#[test]
fn a_new_executables_libraries_are_evidence_on_its_deviation() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--learning-runs", "2"]);
    for run in ["3001", "3002"] {
        run_job(dir.path(), run, LEARNT);
    }
    // The learning runs are learnt once the sensor has seen them (the job's baseline on disk
    // counts its runs when the third run starts judging).
    run_job(dir.path(), "3003", &format!("{LEARNT}{NEW}"));

    let git = wait_for(
        "git's new-executable deviation",
        Duration::from_secs(30),
        || {
            stack.deviations(WORKLOAD).into_iter().find(|d| {
                d["kind"] == "new-executable" && d["novelty"]["executable"] == "/usr/bin/git"
            })
        },
    );
    assert_eq!(git["run_id"], "3003", "{git}");
    let loaded = &git["loaded"];
    let paths: Vec<&str> = loaded["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("loading evidence on the deviation: {git}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        paths.iter().any(|p| p.contains("libz.so")),
        "git's own library named: {paths:?}"
    );
    assert!(
        loaded["total"].as_u64().unwrap_or(0) >= paths.len() as u64,
        "{loaded}"
    );

    // No library read of the run is a row of its own.
    let rows: Vec<Value> = stack
        .deviations(WORKLOAD)
        .into_iter()
        .filter(|d| d["kind"] == "new-file-access")
        .filter(|d| is_library(d["novelty"]["path"].as_str().unwrap_or("")))
        .collect();
    assert!(rows.is_empty(), "libraries reported as rows: {rows:#?}");

    // `collector incidents` shows the evidence beneath the deviation.
    let out = Command::new(workspace_bin("collector"))
        .args(["incidents", "--server", &stack.server, "--all"])
        .args(["--workload", WORKLOAD])
        .output()
        .expect("collector incidents");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .skip_while(|l| !(l.contains("new-executable") && l.contains("/usr/bin/git")))
        .nth(1)
        .unwrap_or_default();
    assert!(
        line.trim_start().starts_with("loaded ") && line.contains("libz.so"),
        "{text}"
    );
}
