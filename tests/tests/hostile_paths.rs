//! A watched process plants what an agent that opens files on behalf of events would block on,
//! where it would look: its own executable, renamed and replaced by a FIFO, a symlink to a
//! device (`/dev/zero`, a tty), and a large sparse file. The real sensor keeps decoding, says in
//! each deviation why it did not hash the executable, and reports the attack that follows
//! within seconds. Real binaries, real kernel programs, gRPC over a real socket.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tests::stack::Stack;
use tests::wait_for;

/// Each planting step runs a copy of bash that renames its own executable and puts the trap
/// at the old path before it exits. The test pauses the sensor for this run, so by the time
/// the agent looks the process is gone and the trap is there (unpaused, the agent may look
/// first and hash the real executable through `/proc/<pid>/exe`, which is right but tests
/// nothing here).
const JOB: &str = r#"
cat "$WORK/input.txt" > /dev/null
if [ -n "$HOSTILE" ]; then
  for kind in fifo zero tty big; do
    cp /bin/bash "$WORK/t_$kind"
    "$WORK/t_$kind" -c '
      mv "$1" "$1.old"
      case "$2" in
        fifo) mkfifo "$1" ;;
        zero) ln -s /dev/zero "$1" ;;
        tty) ln -s /dev/tty "$1" ;;
        big) truncate -s 250M "$1" ;;
      esac' planter "$WORK/t_$kind" "$kind"
  done
fi
if [ -n "$ATTACK" ]; then
  /usr/bin/id > /dev/null
  cat "$WORK/secret.txt" > /dev/null
fi
"#;

const WORKLOAD: &str = "github:acme/hostile/ci/build";

fn run_job(dir: &Path, run_id: u32, hostile: bool) {
    let status = tests::github_job("acme/hostile", run_id)
        .arg(dir.join("job.sh"))
        .env("WORK", dir.join("work"))
        .env("HOSTILE", if hostile { "1" } else { "" })
        .env("ATTACK", if hostile { "1" } else { "" })
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "job run {run_id} failed");
}

fn events_read(state: &Path) -> u64 {
    std::fs::read_to_string(state.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|s| s["events"].as_u64())
        .unwrap_or(0)
}

fn signals(d: &Value) -> Vec<&str> {
    d["signals"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn planted_traps_neither_stall_the_agent_nor_hide_the_attack() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("input.txt"), "input").unwrap();
    std::fs::write(work.join("secret.txt"), "secret").unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();

    let stack = Stack::start(
        dir.path(),
        &["--learning-runs", "1", "--heartbeat-interval", "1s"],
    );
    let state = &stack.state;

    run_job(dir.path(), 1, false);
    {
        let _paused = stack.sensor.pause();
        run_job(dir.path(), 2, true);
    }

    // The attack after the traps is reported, within seconds.
    let found = wait_for(
        "the attack after the traps",
        Duration::from_secs(15),
        || {
            let all = stack.deviations(WORKLOAD);
            let id = all.iter().any(|d| {
                d["kind"] == "new-executable" && d["novelty"]["executable"] == "/usr/bin/id"
            });
            let secret = all.iter().any(|d| {
                d["kind"] == "new-file-access"
                    && d["novelty"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/work/secret.txt"))
            });
            (id && secret).then_some(all)
        },
    );

    // Each planted executable is reported, without a hash, with the reason.
    let want = [
        ("fifo", "executable-not-hashed:not-regular-file"),
        ("zero", "executable-not-hashed:symlink"),
        ("tty", "executable-not-hashed:symlink"),
        ("big", "executable-not-hashed:replaced"),
    ];
    for (kind, signal) in want {
        let name = format!("/work/t_{kind}");
        let d = found
            .iter()
            .find(|d| {
                d["kind"] == "new-executable"
                    && d["novelty"]["executable"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&name))
            })
            .unwrap_or_else(|| panic!("no deviation for {name}: {found:#?}"));
        assert!(signals(d).contains(&signal), "{kind}: {d}");
        assert_eq!(d["process"]["executable_sha256"], "", "{kind}: {d}");
    }

    // And it keeps decoding: records go on being read after the traps.
    let before = events_read(state);
    run_job(dir.path(), 3, false);
    wait_for(
        "the agent to read more records",
        Duration::from_secs(15),
        || (events_read(state) > before).then_some(()),
    );
}
