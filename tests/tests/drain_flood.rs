//! A sustained flood of events the agent cannot keep up with does not freeze its loop: while
//! the flood lasts, the agent keeps writing its status, its heartbeats keep carrying a growing
//! decoded total to the collector, and the deviations it finds (here the blind spot the
//! kernel's losses make) reach the collector. Real sensor and collector binaries, real kernel
//! programs, gRPC over a real socket; the flood is this test's own threads opening a file as
//! fast as they can with the kernel's repeat filter off, so every open reaches the agent.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::stack::Stack;
use tests::{wait_for, workspace_bin};

/// Longer than every wait below: each condition must be met while the flood still runs.
const FLOOD: Duration = Duration::from_secs(90);

/// Opens and closes one file in a loop on `threads` threads until `stop` (or [`FLOOD`]).
fn flood(dir: &Path, threads: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let path = dir.join("flooded");
    std::fs::write(&path, "x").unwrap();
    (0..threads)
        .map(|_| {
            let (path, stop) = (path.clone(), Arc::clone(stop));
            std::thread::spawn(move || {
                let end = Instant::now() + FLOOD;
                // Stops too when the file is gone (the test failed and its directory went).
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if std::fs::File::open(&path).is_err() {
                        break;
                    }
                }
            })
        })
        .collect()
}

fn status(state: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(state.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The agent's decoded total as its last heartbeat told the collector.
fn decoded_at_collector(server: &str) -> Option<u64> {
    let out = Command::new(workspace_bin("collector"))
        .args(["agents", "--server", server, "--json"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|a| a["agent_id"] == "test-host" || a["host"] == "test-host")
        .and_then(|a| a["events_decoded"].as_u64())
}

#[test]
fn a_flood_does_not_freeze_the_agent_loop() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(
        dir.path(),
        &["--no-kernel-filter", "--heartbeat-interval", "1s"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads = flood(dir.path(), 2, &stop);
    let flooding = || {
        assert!(
            started.elapsed() < FLOOD,
            "the flood ended before the condition was met"
        );
    };

    // The flood outruns the agent (the case where a drain that reads until the ring is empty
    // never returns): the status the agent rewrites from its loop reports lost records.
    let what = "the status file to report kernel losses (written from the agent's loop)";
    wait_for(what, Duration::from_secs(30), || {
        flooding();
        status(&stack.state)
            .and_then(|s| s["lost"].as_u64())
            .filter(|lost| *lost > 0)
    });

    // Housekeeping runs: the status file is rewritten with a growing event count, twice.
    let mut seen = status(&stack.state).and_then(|s| s["events"].as_u64());
    for round in 0..2 {
        seen = Some(wait_for(
            &format!("status rewrite {round} during the flood"),
            Duration::from_secs(20),
            || {
                flooding();
                let now = status(&stack.state)?["events"].as_u64()?;
                (Some(now) > seen).then_some(now)
            },
        ));
    }

    // Heartbeats carry the agent's progress to the collector during the flood.
    let first = wait_for("a heartbeat with liveness", Duration::from_secs(20), || {
        flooding();
        decoded_at_collector(&stack.server).filter(|n| *n > 0)
    });
    wait_for(
        "a later heartbeat with more decoded",
        Duration::from_secs(20),
        || {
            flooding();
            decoded_at_collector(&stack.server).filter(|n| *n > first)
        },
    );

    // Deviations are delivered during the flood: the blind spot the losses made.
    let out = wait_for(
        "a blind-spot deviation at the collector",
        Duration::from_secs(30),
        || {
            flooding();
            let out = Command::new(workspace_bin("collector"))
                .args(["deviations", "--server", &stack.server, "--json"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|d| d["kind"] == "blind-spot")
                .then_some(text)
        },
    );
    assert!(!out.is_empty());

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}
