//! `collector incidents` and `/api/incidents` end to end: the real `collector serve` binary over
//! SQLite and PostgreSQL, deviations streamed to it over gRPC as an agent streams them, the real
//! `collector incidents` command asking it over gRPC, and the web API over HTTP.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::attack::{ATTACK_STORY, HOSTILE_PATH, LIBRARIES, attack_run, clean_run};
use common::postgres::PgCluster;
use common::serve::{Serve, collector};
use common::{AgentStream, batch, deviation};
use proto::v1::{Deviation, DeviationKind, Severity, Workload, WorkloadKind};

const JOB: &str = "github:acme/app/ci/build";
const UNIT: &str = "unit:api.service";

fn ago(seconds: u64) -> i64 {
    (SystemTime::now() - Duration::from_secs(seconds))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Streams `deviations` to the collector at `url` in one batch, as an agent does.
fn send(url: &str, sequence: u64, deviations: Vec<Deviation>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let count = deviations.len() as u32;
        let mut agent = AgentStream::open(url).await;
        let ack = agent
            .send(batch("runner-1", sequence, deviations))
            .await
            .expect("batch stored");
        assert_eq!(ack.stored, count);
    });
}

/// A service's medium deviation, in a process tree of its own (an incident id, no run).
fn service_deviation() -> Deviation {
    let mut d = deviation(
        "svc-1",
        0,
        UNIT,
        DeviationKind::NewExecutable,
        Severity::Medium,
    );
    d.time_unix_nanos = ago(60);
    d.workload = Some(Workload {
        id: UNIT.to_owned(),
        kind: WorkloadKind::SystemdUnit.into(),
        run_id: String::new(),
    });
    d.incident_id = "9f3a0c1d2e4b5a6f".to_owned();
    d
}

/// The blocks of `collector incidents` text, one per incident.
fn blocks(text: &str) -> Vec<&str> {
    text.split("\n\n").collect()
}

fn incidents_through_the_binary(db: &str) {
    let serve = Serve::start(db);
    let url = serve.url.clone();
    // Oldest first: an old run past --since, the detecting run, a clean run, a service.
    send(&url, 1, attack_run(JOB, "41", ago(3 * 3600)));
    send(&url, 2, attack_run(JOB, "42", ago(600)));
    send(&url, 3, clean_run(JOB, "43", ago(300)));
    send(&url, 4, vec![service_deviation()]);

    let text = collector(&["incidents", "--server", &url, "--since", "1h"]);
    let blocks = blocks(&text);
    assert_eq!(blocks.len(), 3, "service, run 43, run 42:\n{text}");
    assert!(
        blocks[0].starts_with("MEDIUM  unit:api.service  incident 9f3a0c1d2e4b  on host-1"),
        "{text}"
    );
    let clean = blocks[1];
    assert!(
        clean.starts_with("LOW  github:acme/app/ci/build  run 43  on runner-1"),
        "{text}"
    );
    assert!(
        clean.contains(
            "\n  created /work/repo/.git/objects/30/tmp_obj_a8Bc0Z → created \
             /work/repo/.git/objects/31/tmp_obj_a8Bc1Z\n"
        ),
        "a clean run's story is told from its low deviations:\n{clean}"
    );
    assert!(
        clean.ends_with("    + 2 low, 0 info collapsed (--all shows them)"),
        "{clean}"
    );
    let attack = blocks[2];
    let lines: Vec<&str> = attack.lines().collect();
    assert!(
        lines[0].starts_with("CRITICAL  github:acme/app/ci/build  run 42  on runner-1")
            && lines[0].ends_with("(26 deviations)"),
        "{attack}"
    );
    assert!(
        lines[1].starts_with(&format!("  {ATTACK_STORY} → created /tmp/[x]")),
        "the story, in time order:\n{attack}"
    );
    // Beneath: the five medium and higher deviations, oldest first; low and info counted.
    let kinds: Vec<&str> = lines[2..7]
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "new-file-access",
            "new-executable",
            "new-exec-edge",
            "new-network-destination",
            "new-file-access"
        ],
        "{attack}"
    );
    assert_eq!(
        lines[7], "    + 20 low, 1 info collapsed (--all shows them)",
        "{attack}"
    );
    assert!(!attack.contains("lib0.so.1"), "{attack}");
    assert!(
        !text.contains("\n# owned"),
        "a newline in a path cannot start a line"
    );

    // Fewer incidents than match: the newest, and stderr says older ones were left out.
    let newest = common::serve::run(&[
        "incidents",
        "--server",
        &url,
        "--since",
        "1h",
        "--limit",
        "2",
    ]);
    assert!(newest.status.success());
    let newest_text = String::from_utf8(newest.stdout).unwrap();
    let trimmed = |b: &[&str]| {
        b.iter()
            .map(|b| b.trim_end().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        trimmed(&newest_text.split("\n\n").collect::<Vec<_>>()),
        trimmed(&blocks[..2]),
        "{newest_text}"
    );
    let note = String::from_utf8(newest.stderr).unwrap();
    assert!(
        note.contains("showing the newest 2 incidents; older ones match too"),
        "{note}"
    );
    let complete = common::serve::run(&["incidents", "--server", &url, "--since", "1h"]);
    assert!(
        !String::from_utf8_lossy(&complete.stderr).contains("showing the newest"),
        "nothing was left out"
    );

    let all = collector(&["incidents", "--server", &url, "--since", "1h", "--all"]);
    for n in 0..LIBRARIES {
        assert!(all.contains(&format!("lib{n}.so.1")), "{all}");
    }
    assert!(!all.contains("collapsed"), "{all}");

    let json = collector(&["incidents", "--server", &url, "--workload", JOB, "--json"]);
    let incidents: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let runs: Vec<&str> = incidents
        .iter()
        .map(|i| i["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["43", "42", "41"], "{json}");
    let run42 = &incidents[1];
    assert_eq!(run42["max_severity"], "critical");
    assert_eq!(run42["deviations"], 26);
    assert_eq!(run42["collapsed"]["low"], 20);
    assert_eq!(run42["collapsed"]["info"], 1);
    assert!(
        run42["story"].as_str().unwrap().starts_with(ATTACK_STORY),
        "{run42}"
    );
    assert_eq!(run42["steps"][1]["deviation_id"], "42-curl");
    let entries = run42["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 26);
    assert_eq!(entries[0]["id"], "42-key");
    assert_eq!(entries[25]["id"], "42-cleanup");
    assert_eq!(
        entries[24]["novelty"]["path"], HOSTILE_PATH,
        "values are kept whole in JSON"
    );

    // The page's API groups and tells the same way.
    let (status, body) = serve.get(&format!(
        "/api/incidents?workload={}&since=1h",
        JOB.replace(':', "%3A").replace('/', "%2F")
    ));
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api_incidents = api["incidents"].as_array().unwrap();
    assert_eq!(api_incidents.len(), 2, "{body}");
    assert_eq!(api_incidents[1]["story"], run42["story"]);
    assert_eq!(api_incidents[1]["entries"], run42["entries"]);
    assert_eq!(api["capped"], false);
}

#[test]
fn incidents_tell_their_story_and_collapse_low_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    incidents_through_the_binary(db.to_str().unwrap());
}

#[test]
fn incidents_tell_their_story_and_collapse_low_rows_on_postgres() {
    let cluster = PgCluster::start();
    incidents_through_the_binary(&cluster.database("incidents"));
}
