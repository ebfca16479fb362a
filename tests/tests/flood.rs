//! Flooding a dimension (issue 12), with the real sensor (kernel programs) and the real
//! collector: a CI run connects to 20,001 distinct destinations. The collector stores a bounded
//! number of deviations for that run (tens: the budget's singles, an aggregate, the dimension's
//! cardinality deviation), and a new destination in the next run is still reported.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::stack::Stack;
use tests::wait_for;

const WORKLOAD: &str = "github:acme/flood/ci/build";
/// What the flood run may store: tens, not thousands.
const BOUND: usize = 100;

/// Learnt run: one UDP connect (python and the destination dimension are known).
const LEARN: &str = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
    s.connect(('127.0.0.1', 9))\ns.close()\n";
/// 20,001 UDP connects to distinct loopback addresses (no packet leaves the host).
const FLOOD: &str = "import socket\nfor i in range(20001):\n    \
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
    s.connect(('127.%d.%d.%d' % (1 + (i >> 16), (i >> 8) & 255, i & 255), 9))\n    s.close()\n";

fn run_job(run_id: &str, script: &str) {
    let status = Command::new("python3")
        .args(["-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_REPOSITORY", "acme/flood")
        .env("GITHUB_WORKFLOW", "ci")
        .env("GITHUB_JOB", "build")
        .env("GITHUB_RUN_ID", run_id)
        .status()
        .expect("python3");
    assert!(status.success(), "run {run_id} failed");
}

fn of_run<'a>(all: &'a [Value], run: &str) -> Vec<&'a Value> {
    all.iter().filter(|d| d["run_id"] == run).collect()
}

#[test]
fn a_flood_run_stores_tens_and_the_next_run_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &["--learning-runs", "1"]);
    run_job("1", LEARN);
    // The learning run is seen before the judged ones start.
    wait_for("the learning run", Duration::from_secs(30), || {
        stack.baseline(WORKLOAD)
    });
    run_job("2", FLOOD);
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let next = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('127.0.0.1', {port}))\ns.close()\n"
    );
    run_job("3", &next);

    // The next run's new destination is reported, though the flood filled the dimension.
    let reported = wait_for(
        "the next run's new destination",
        Duration::from_secs(300),
        || {
            let all = stack.deviations(WORKLOAD);
            // Alone, or (the dimension is full) as a sample of the run's past-cap aggregate.
            of_run(&all, "3")
                .into_iter()
                .find(|d| d.to_string().contains(&format!("127.0.0.1:{port}/udp")))
                .cloned()
        },
    );
    assert!(
        ["medium", "high", "critical"].contains(&reported["severity"].as_str().unwrap_or("")),
        "{reported}"
    );

    // The flood run's held novelties go out as an aggregate once its kind is quiet.
    let all = wait_for(
        "the flood run's aggregate",
        Duration::from_secs(120),
        || {
            let all = stack.deviations(WORKLOAD);
            of_run(&all, "2")
                .iter()
                .any(|d| d["kind"] == "aggregated")
                .then_some(all)
        },
    );
    let flood = of_run(&all, "2");
    let kinds: Vec<&str> = flood.iter().filter_map(|d| d["kind"].as_str()).collect();
    eprintln!("flood run stored {} deviations: {kinds:?}", flood.len());
    assert!(
        flood.len() <= BOUND,
        "the flood run stored {} deviations",
        flood.len()
    );
    let counted: u64 = flood
        .iter()
        .filter(|d| d["kind"] == "aggregated")
        .filter_map(|d| d["count"].as_u64())
        .sum();
    let singles = flood
        .iter()
        .filter(|d| d["kind"] == "new-destination")
        .count() as u64;
    assert!(
        counted + singles >= 19_000,
        "the flood is counted, not dropped: {counted} aggregated + {singles} single"
    );
}
