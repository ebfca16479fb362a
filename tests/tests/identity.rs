//! Identity by lineage, with the real sensor (kernel programs) and the real collector: a process
//! inside a CI job that sets another job's or run's variables stays in its job and run, and the
//! claim is reported as a HIGH identity switch; a process that moves itself out of its unit's
//! cgroup stays in the unit, and the move is reported the same way.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::stack::Stack;
use tests::wait_for;

const WORKLOAD: &str = "github:acme/identity/ci/build";
const RUN: &str = "1001";
/// A job that runs normally, then two processes claim another job and another run.
const JOB: &str = r#"
cat /etc/hostname > /dev/null
GITHUB_JOB=x /bin/sh -c 'cat /etc/hostname > /dev/null; /bin/ls / > /dev/null'
GITHUB_RUN_ID=999 /bin/sh -c 'cat /etc/hostname > /dev/null'
"#;

fn identity_switches(stack: &Stack, workload: &str) -> Vec<Value> {
    stack
        .deviations(workload)
        .into_iter()
        .filter(|d| d["kind"] == "identity-switch")
        .collect()
}

#[test]
fn claims_inside_a_job_stay_in_the_job_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();
    let stack = Stack::start(dir.path(), &["--learning-runs", "3"]);
    let status = tests::github_job("acme/identity", RUN)
        .arg(dir.path().join("job.sh"))
        .status()
        .unwrap();
    assert!(status.success());

    let found = wait_for("two identity switches", Duration::from_secs(20), || {
        Some(identity_switches(&stack, WORKLOAD)).filter(|d| d.len() >= 2)
    });
    assert_eq!(found.len(), 2, "one per claim, not per process: {found:#?}");
    for d in &found {
        assert_eq!(d["severity"], "high", "{d}");
        assert_eq!(d["run_id"], RUN, "reported in the real run: {d}");
        assert!(
            d["process"]["executable"]
                .as_str()
                .unwrap_or("")
                .ends_with("sh"),
            "the claiming shell: {d}"
        );
    }
    let claimed: Vec<(&str, &str)> = found
        .iter()
        .map(|d| {
            (
                d["novelty"]["workload"].as_str().unwrap_or(""),
                d["novelty"]["run_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        claimed.contains(&("github:acme/identity/ci/x", RUN)),
        "{claimed:?}"
    );
    assert!(claimed.contains(&(WORKLOAD, "999")), "{claimed:?}");

    // The claimers' activity was learnt into the real job and run, nowhere else.
    let baselines = wait_for(
        "the job's baseline on disk",
        Duration::from_secs(15),
        || {
            let all = stack.baselines();
            all.iter().any(|b| b["workload"] == WORKLOAD).then_some(all)
        },
    );
    let job = baselines
        .iter()
        .find(|b| b["workload"] == WORKLOAD)
        .unwrap();
    assert_eq!(job["runs"], 1, "run 999 was not learnt from: {job}");
    assert!(
        baselines
            .iter()
            .all(|b| !b["workload"].as_str().unwrap_or("").contains("/ci/x")),
        "no baseline for the claimed job: {baselines:#?}"
    );
    assert!(
        stack.deviations("github:acme/identity/ci/x").is_empty(),
        "nothing reported under the claimed job"
    );
}

/// A cgroup v2 directory removed (after its processes left) on drop.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn new(root: &std::path::Path, name: &str) -> Cgroup {
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create a cgroup (root, cgroup v2 mounted)");
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `/bin/sh -c script`, killed on drop.
fn shell(script: &str) -> tests::Guard {
    tests::Guard(
        Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .unwrap(),
    )
}

fn cgroup2_root() -> std::path::PathBuf {
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_path_buf()
    } else {
        "/sys/fs/cgroup".into()
    }
}

#[test]
fn a_process_leaving_its_unit_stays_in_it_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = cgroup2_root();
    let unit = Cgroup::new(&root, "identity-test.service");
    let escape = Cgroup::new(&root, "identity-escape");
    let done = dir.path().join("done");
    let stack = Stack::start(dir.path(), &["--cgroup-root", root.to_str().unwrap()]);

    // Placed in the unit by its parent (a move from a plain cgroup, allowed), then the service
    // moves itself out and keeps working until the test has seen the report.
    let script = format!(
        "echo $$ > {unit}/cgroup.procs\n\
         exec /bin/sh -c 'cat /etc/hostname > /dev/null; echo $$ > {escape}/cgroup.procs; \
         while [ ! -e {done} ]; do cat /etc/hostname > /dev/null; sleep 0.1; done'\n",
        unit = unit.0.display(),
        escape = escape.0.display(),
        done = done.display(),
    );
    let mut service = shell(&script);
    let found = wait_for(
        "the cgroup identity switch",
        Duration::from_secs(20),
        || {
            identity_switches(&stack, "unit:identity-test.service")
                .into_iter()
                .next()
        },
    );
    std::fs::write(&done, "").unwrap();
    assert!(service.0.wait().unwrap().success());
    assert_eq!(found["severity"], "high", "{found}");
    assert_eq!(
        found["novelty"]["workload"], "cgroup:/identity-escape",
        "{found}"
    );
    assert!(
        found["signals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "claimed-by-cgroup-move"),
        "{found}"
    );
    // Its later activity stayed in the unit: the escape cgroup has no baseline (both would be
    // written by the same save).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let baselines = loop {
        let all = stack.baselines();
        if all
            .iter()
            .any(|b| b["workload"] == "unit:identity-test.service")
        {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no baseline for the unit within 20 s: {all:#?}\n{}",
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        baselines
            .iter()
            .all(|b| b["workload"] != "cgroup:/identity-escape"),
        "{baselines:#?}"
    );
}

/// A plain cgroup's service that never started a job nor left its cgroup while it learnt: a
/// process of it starting a job (complete GitHub variables) and one moving itself into a fresh
/// cgroup go where lineage lets them, and each is a HIGH identity switch of the service.
#[test]
fn a_service_that_never_handed_off_doing_so_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = cgroup2_root();
    let svc = Cgroup::new(&root, "handoff-svc");
    let fresh = Cgroup::new(&root, "handoff-fresh");
    let (go, done) = (dir.path().join("go"), dir.path().join("done"));
    let stack = Stack::start(
        dir.path(),
        &[
            "--cgroup-root",
            root.to_str().unwrap(),
            "--learning-period",
            "2s",
        ],
    );
    let script = format!(
        "echo $$ > {svc}/cgroup.procs\n\
         while [ ! -e {go} ]; do cat /etc/hostname > /dev/null; sleep 0.1; done\n\
         env GITHUB_REPOSITORY=evil/x GITHUB_WORKFLOW=ci GITHUB_JOB=lint GITHUB_RUN_ID=5 \
         cat /etc/hostname > /dev/null\n\
         /bin/sh -c 'echo $$ > {fresh}/cgroup.procs; cat /etc/hostname > /dev/null'\n\
         while [ ! -e {done} ]; do sleep 0.1; done\n",
        svc = svc.0.display(),
        fresh = fresh.0.display(),
        go = go.display(),
        done = done.display(),
    );
    let mut service = shell(&script);
    wait_for(
        "the service's baseline detecting",
        Duration::from_secs(30),
        || {
            stack
                .baselines()
                .into_iter()
                .find(|b| b["workload"] == "cgroup:/handoff-svc" && b["state"] == "detecting")
        },
    );
    std::fs::write(&go, "").unwrap();
    let found = wait_for("both handoffs reported", Duration::from_secs(20), || {
        Some(identity_switches(&stack, "cgroup:/handoff-svc")).filter(|d| d.len() >= 2)
    });
    std::fs::write(&done, "").unwrap();
    assert!(service.0.wait().unwrap().success());
    let summaries: Vec<&str> = found
        .iter()
        .map(|d| d["summary"].as_str().unwrap_or(""))
        .collect();
    for d in &found {
        assert_eq!(d["severity"], "high", "{d}");
    }
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("ci-environment:github_job") && s.contains("github:evil/x/ci/lint")),
        "{summaries:#?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("cgroup-move:cgroup") && s.contains("cgroup:/handoff-fresh")),
        "{summaries:#?}"
    );
}
