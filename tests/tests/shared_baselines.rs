//! Ephemeral runners share a baseline through the collector: real sensors (real eBPF), one after
//! the other as on short-lived CI runners, each with a fresh state directory, and the real
//! collector merging over gRPC on a real socket.
//!
//! Runner A learns runs 1 and 2 of a job and stops; the collector (quorum 2) does not serve a
//! baseline only one agent contributed. Runner B, fresh, learns run 3 and stops: the collector's
//! merged baseline now holds 3 runs from 2 agents, enough for agents learning from 3 runs.
//! Runner C, fresh, judges from its first run on: a clean run stays silent, and a run with a new
//! executable is reported.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use proto::v1::FetchBaselineRequest;
use proto::v1::baselines_client::BaselinesClient;
use serde_json::Value;
use tests::stack::{Stopped, deviations};
use tests::{free_port, wait_for, workspace_bin};

const WORKLOAD: &str = "github:acme/shared/ci/build";
const JOB: &str = "cat \"$WORK/input.txt\" > /dev/null\nls \"$WORK\" > /dev/null\n\
                   sort \"$WORK/input.txt\" > /dev/null\n\
                   if [ -n \"$EXTRA\" ]; then \"$EXTRA\" > /dev/null; fi\n";

fn runner(name: &str, dir: &Path, server: &str) -> (Stopped, std::path::PathBuf) {
    let state = dir.join(format!("state-{name}"));
    let child = Command::new(workspace_bin("sensor"))
        .args(["run", "--collector", server, "--learning-runs", "3"])
        .args(["--host", name, "--metrics-listen", "", "--state-dir"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Guarded before waiting: a sensor that fails to start is still stopped.
    let sensor = Stopped(child);
    wait_for("sensor to attach", Duration::from_secs(60), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });
    (sensor, state)
}

fn run_job(dir: &Path, run: u32, extra: &str) {
    let status = tests::github_job("acme/shared", run)
        .arg(dir.join("job.sh"))
        .env("WORK", dir.join("work"))
        .env("EXTRA", extra)
        .status()
        .unwrap();
    assert!(status.success());
}

fn merged(server: &str) -> Result<proto::v1::Baseline, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fetch = async {
        let mut client = BaselinesClient::connect(server.to_owned()).await.unwrap();
        client
            .fetch(FetchBaselineRequest {
                workload_id: WORKLOAD.into(),
                agent_id: "test".into(),
                learning_runs: 3,
                ..FetchBaselineRequest::default()
            })
            .await
            .map(tonic::Response::into_inner)
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), fetch).await })
        .expect("the collector answers Fetch within 10 s")
}

fn listed(state: &Path) -> Value {
    let out = Command::new(workspace_bin("sensor"))
        .args(["baseline", "list", "--json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|b| b["workload"] == WORKLOAD)
        .unwrap_or(Value::Null)
}

#[test]
fn ephemeral_runners_share_a_merged_baseline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::fs::write(dir.path().join("work/input.txt"), "b\na\n").unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let collector = Stopped(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            // Two runners share this job's baseline (the default quorum is 3).
            .args(["--baseline-quorum", "2"])
            .args(["--metrics-listen", "", "--db"])
            .arg(dir.path().join("collector.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    // Runner A: runs 1 and 2, then the runner goes away.
    let (a, _) = runner("runner-a", dir.path(), &server);
    run_job(dir.path(), 1, "");
    run_job(dir.path(), 2, "");
    drop(a);
    let after_a = merged(&server).expect_err("one agent is below the quorum of 2");
    assert_eq!(after_a.code(), tonic::Code::NotFound, "{after_a:?}");

    // Runner B, fresh: nothing to adopt yet, learns run 3, goes away.
    let (b, state_b) = runner("runner-b", dir.path(), &server);
    run_job(dir.path(), 3, "");
    let on_b = wait_for(
        "runner B's baseline on disk",
        Duration::from_secs(15),
        || Some(listed(&state_b)).filter(|l| l["runs"] == 1),
    );
    assert_eq!(on_b["state"], "learning", "{on_b}");
    drop(b);
    let after_b = merged(&server).expect("two agents: served");
    assert_eq!(
        (after_b.runs.len(), after_b.agents, after_b.mature),
        (3, 2, true),
        "{after_b:?}"
    );

    // Runner C, fresh: judges from its first run on.
    let (c, state_c) = runner("runner-c", dir.path(), &server);
    run_job(dir.path(), 4, "");
    // A real job lasts long enough for the fetch (a few ms) to land while it runs; these take
    // milliseconds, so wait for the adoption (the 3 merged runs, not 1 local one) before going on.
    wait_for(
        "runner C to adopt the merged baseline",
        Duration::from_secs(15),
        || Some(listed(&state_c)).filter(|l| l["runs"] == 3),
    );
    run_job(dir.path(), 5, "");
    run_job(dir.path(), 6, "/usr/bin/id");
    let all = wait_for("run 6's new executable", Duration::from_secs(20), || {
        let all = deviations(&server, WORKLOAD);
        all.iter()
            .any(|d| {
                d["run_id"] == "6"
                    && d["kind"] == "new-executable"
                    && d["novelty"]["executable"] == "/usr/bin/id"
                    && d["host"] == "runner-c"
            })
            .then_some(all)
    });
    // Runner C is a host the merged baseline never saw: that is said once, at low severity
    // (the `new-host` finding); the job's behaviour itself raises nothing before run 6.
    let earlier: Vec<&Value> = all
        .iter()
        .filter(|d| d["run_id"] != "6")
        .filter(|d| !(d["kind"] == "new-host" && d["severity"] == "low"))
        .collect();
    assert!(
        earlier.is_empty(),
        "learning runs and runner C's clean runs stay silent: {earlier:#?}"
    );
    let on_c = wait_for(
        "runner C's baseline on disk",
        Duration::from_secs(15),
        || Some(listed(&state_c)).filter(|l| l["state"] == "detecting"),
    );
    assert_eq!(on_c["runs"], 3, "{on_c}");
    drop(c);

    drop(collector);
}

/// A merged baseline several times larger than one gRPC message (4 MiB) reaches a fresh agent
/// whole: the real collector serves it in pages and the agent's sharing task
/// (`sensor_user::baseline_sync`, as `sensor run` uses it) follows them. Needs no kernel.
#[test]
fn a_baseline_larger_than_one_message_is_fetched_whole() {
    use proto::v1::{Baseline, BaselineDimension, BaselineReport};
    use sensor_user::baseline_sync::{BaselineSync, SyncConfig};

    const BIG: &str = "github:acme/monorepo/ci/build";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Stopped(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--baseline-quorum", "1", "--metrics-listen", "", "--db"])
            .arg(dir.path().join("collector.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // Six dimensions full at the agent's cap (20,000 behaviours each) of ~90-byte behaviours:
    // over 10 MiB, more than twice the message cap.
    let names = [
        "executable",
        "exec-edge",
        "file-access",
        "file-operation",
        "dns-name",
        "network-destination",
    ];
    let dimensions: Vec<BaselineDimension> = names
        .iter()
        .map(|name| BaselineDimension {
            name: (*name).into(),
            behaviours: (0..20_000)
                .map(|i| format!(r#"{{"{name}":"/home/runner/work/monorepo/src/module_{i:06}/generated/lib.rs"}}"#))
                .collect(),
        })
        .collect();
    let behaviours: Vec<String> = dimensions
        .iter()
        .flat_map(|d| d.behaviours.clone())
        .collect();
    let big = Baseline {
        workload_id: BIG.into(),
        runs: (1..=5).map(|r| r.to_string()).collect(),
        mature: true,
        dimensions: dimensions.clone(),
        ..Baseline::default()
    };
    let bytes: usize = behaviours.iter().map(String::len).sum();
    assert!(bytes > 2 * proto::MAX_MESSAGE_BYTES, "{bytes} bytes");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let adopted = rt.block_on(async {
        let mut reporter = BaselinesClient::connect(server.clone()).await.unwrap();
        reporter
            .report(BaselineReport {
                agent_id: "runner-big".into(),
                baseline: Some(big),
            })
            .await
            .expect("the collector takes a 12 MiB report");
        let (sync, mut adopt, task) = BaselineSync::start(Some(SyncConfig {
            collector_url: server.clone(),
            tls: None,
            agent_id: "runner-fresh".into(),
            learning_runs: 5,
        }))
        .unwrap();
        sync.fetch(vec![BIG.to_owned()]);
        let adopted = tokio::time::timeout(Duration::from_secs(60), adopt.recv())
            .await
            .expect("the agent fetches the big baseline within 60 s")
            .expect("a baseline to adopt");
        drop(sync);
        task.await.unwrap();
        adopted
    });
    assert_eq!(adopted.workload_id, BIG);
    assert!(adopted.mature, "5 runs for an agent learning from 5");
    assert_eq!(adopted.runs.len(), 5);
    assert!(adopted.next_page_token.is_empty());
    let got: Vec<&String> = adopted
        .dimensions
        .iter()
        .flat_map(|d| &d.behaviours)
        .collect();
    assert_eq!(got.len(), behaviours.len(), "every behaviour, once");
    let mut want: Vec<&String> = behaviours.iter().collect();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    let mut got_names: Vec<&str> = adopted.dimensions.iter().map(|d| d.name.as_str()).collect();
    got_names.sort_unstable();
    let mut want_names = names.to_vec();
    want_names.sort_unstable();
    assert_eq!(
        got_names, want_names,
        "each dimension once: its pages joined"
    );
}
