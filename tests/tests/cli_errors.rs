//! Bad input gives one clear error line and a non-zero exit, never a panic.

use std::process::{Command, Output};

use tests::workspace_bin;

fn assert_clear_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.contains(expect), "stderr lacks {expect:?}: {stderr}");
}

#[test]
fn sensor_refuses_to_run_without_root() {
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(workspace_bin("sensor"))
        .args(["run", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_clear_failure(&out, "must run as root");
}

#[test]
fn sensor_rejects_a_malformed_collector_url() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_bin("sensor"))
        .args(["run", "--collector", "not a url", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_clear_failure(&out, "not a url");
}

#[test]
fn sensor_names_a_corrupt_baseline_file() {
    let state = tempfile::tempdir().unwrap();
    let baselines = state.path().join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    std::fs::write(baselines.join("broken.json"), "{ this is not json").unwrap();
    let out = Command::new(workspace_bin("sensor"))
        .args(["run", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_clear_failure(&out, "broken.json");
}

#[test]
fn sensor_rejects_a_bad_duration() {
    let out = Command::new(workspace_bin("sensor"))
        .args(["run", "--learning-period", "soon"])
        .output()
        .unwrap();
    assert_clear_failure(&out, "soon");
}

#[test]
fn collector_query_without_server_says_so() {
    let port = tests::free_port();
    let out = Command::new(workspace_bin("collector"))
        .args([
            "deviations",
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_clear_failure(&out, "cannot reach collector");
}

#[test]
fn status_without_a_sensor_says_so() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_bin("sensor"))
        .args(["status", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_clear_failure(&out, "is `sensor run` using this --state-dir?");
}
