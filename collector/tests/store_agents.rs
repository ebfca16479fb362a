//! Agents and workloads as the collector records and lists them, through the real server on
//! loopback (SQLite) and the real `collector` binary's `agents` and `workloads` commands:
//! heartbeats, last contact, silence, retention, and their metrics.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use collector::metrics::Metrics;
use collector::store::{BatchKey, Store};
use common::{AgentStream, Collector, batch, deviation, temp_db};
use proto::v1::{
    AgentEventKind, AgentStatus, DeviationBatch, DeviationKind, ListAgentsRequest,
    ListDeviationsRequest, Severity,
};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_collector");

fn heartbeat(agent: &str, dropped: u64) -> DeviationBatch {
    DeviationBatch {
        agent_id: agent.to_owned(),
        sequence: 0,
        deviations: Vec::new(),
        spool_id: "spool-test".to_owned(),
        status: Some(AgentStatus {
            version: "1.2.3".to_owned(),
            instance_id: "run-1".to_owned(),
            host: "runner-7".to_owned(),
            spool_deviations: 12,
            dropped_total: dropped,
            kernel_lost_total: 4,
            heartbeat_interval_millis: 30_000,
            ..AgentStatus::default()
        }),
    }
}

async fn list_agents(url: &str, events: u32) -> proto::v1::ListAgentsResponse {
    collector::listing::list_agents(
        url,
        ListAgentsRequest {
            limit: 0,
            silent_only: false,
            events,
        },
        &Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("ListAgents: {e}"))
}

#[tokio::test]
async fn heartbeats_record_the_agent_and_its_drops() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;

    let before = collector::convert::unix_nanos(SystemTime::now());
    let ack = agent.send(heartbeat("agent-a", 0)).await.unwrap();
    assert_eq!((ack.sequence, ack.stored, ack.duplicates), (0, 0, 0));
    let agents = list_agents(&server.url(), 0).await.agents;
    assert_eq!(agents.len(), 1);
    let a = &agents[0];
    assert_eq!(
        (
            a.agent_id.as_str(),
            a.host.as_str(),
            a.version.as_str(),
            a.spool_deviations,
            a.kernel_lost_total,
            a.batches,
            a.silent
        ),
        ("agent-a", "runner-7", "1.2.3", 12, 4, 0, false)
    );
    assert!(a.last_contact_unix_nanos >= before && a.last_heartbeat_unix_nanos >= before);

    // A batch is a contact too; the spool-full drops come with the next heartbeat.
    let d = deviation(
        "x",
        1,
        "unit:a",
        DeviationKind::NewExecutable,
        Severity::High,
    );
    agent.send(batch("agent-a", 1, vec![d])).await.unwrap();
    agent.send(heartbeat("agent-a", 17)).await.unwrap();
    agent.send(heartbeat("agent-a", 17)).await.unwrap();
    let response = list_agents(&server.url(), 10).await;
    let a = &response.agents[0];
    assert_eq!((a.batches, a.stored, a.dropped_total), (1, 1, 17));
    let kinds: Vec<(AgentEventKind, u64)> = response
        .events
        .iter()
        .map(|e| (e.kind(), e.count))
        .collect();
    assert_eq!(
        kinds,
        [
            (AgentEventKind::Dropped, 17),
            (AgentEventKind::FirstContact, 0)
        ],
        "the drop is recorded once"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_heartbeats_are_refused() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;
    let mut loaded = heartbeat("agent-a", 0);
    loaded.deviations = vec![deviation(
        "x",
        1,
        "unit:a",
        DeviationKind::NewExecutable,
        Severity::High,
    )];
    let status = agent.send(loaded).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("heartbeat"), "{status}");

    let mut agent = AgentStream::open(&server.url()).await;
    let status = agent.send(batch("agent-a", 0, vec![])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("sequences start at 1"),
        "{status}"
    );
    server.stop().await;
}

#[tokio::test]
async fn silence_and_retention_upkeep_record_log_and_count() {
    let (_dir, db) = temp_db();
    let store = Arc::new(Store::open(&db).unwrap());
    let metrics = Arc::new(Metrics::new());
    let now = collector::convert::unix_nanos(SystemTime::now());
    let day = 86_400 * 1_000_000_000i64;
    let key = BatchKey {
        agent_id: "gone",
        spool_id: "s",
        sequence: 1,
    };
    let old = |id: &str, t| {
        let mut d = deviation(id, 0, "unit:a", DeviationKind::NewExecutable, Severity::Low);
        d.time_unix_nanos = t;
        d
    };
    store
        .store_batch(
            key,
            vec![old("ancient", now - 40 * day), old("recent", now - day)],
            now - 10 * day,
        )
        .unwrap();

    collector::upkeep::check_silence(&store, &metrics, Duration::from_secs(120)).await;
    let token = CancellationToken::new();
    collector::upkeep::prune(&store, &metrics, Duration::from_secs(30 * 86_400), &token).await;

    let text = metrics.render();
    for line in [
        "collector_agent_silences_total 1",
        "collector_agents_silent 1",
        "collector_retention_deleted_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    let left: Vec<String> = store
        .list(&ListDeviationsRequest::default())
        .unwrap()
        .into_iter()
        .map(|d| d.deviation.unwrap().id)
        .collect();
    assert_eq!(left, ["recent"]);
    let event = &store.agent_events(1).unwrap()[0];
    assert_eq!(
        (event.kind(), event.agent_id.as_str()),
        (AgentEventKind::Silent, "gone")
    );
    assert!(event.count >= 10 * 86_400, "silent for ten days: {event:?}");
}

/// Runs the real binary with an empty config file; returns stdout (panics on failure).
fn collector(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .expect("run collector");
    assert!(
        out.status.success(),
        "collector {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workloads_and_agents_commands_print_tables_and_json() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let url = server.url();
    let mut agent = AgentStream::open(&url).await;
    agent.send(heartbeat("agent-cli", 3)).await.unwrap();
    let d = |id: &str, w: &str, s| deviation(id, 1_700_000_000, w, DeviationKind::NewExecutable, s);
    agent
        .send(batch(
            "agent-cli",
            1,
            vec![
                d("a", "github:acme/app/ci/build", Severity::Critical),
                d("b", "github:acme/app/ci/build", Severity::Low),
                d("c", "unit:web.service", Severity::Low),
            ],
        ))
        .await
        .unwrap();

    let url3 = url.clone();
    let (before, within) = tokio::task::spawn_blocking(move || {
        (
            collector(&[
                "deviations",
                "--server",
                &url3,
                "--until",
                "2023-01-01T00:00:00Z",
            ]),
            collector(&[
                "deviations",
                "--server",
                &url3,
                "--json",
                "--since",
                "2023-11-14T00:00:00Z",
                "--until",
                "2023-11-15T00:00:00Z",
            ]),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        before.trim(),
        "no deviations",
        "a time range: nothing before 2023"
    );
    assert_eq!(
        within.lines().count(),
        3,
        "all three are on 2023-11-14: {within}"
    );

    let url2 = url.clone();
    let (workloads, json, agents, events, severe) = tokio::task::spawn_blocking(move || {
        (
            collector(&["workloads", "--server", &url2]),
            collector(&["workloads", "--server", &url2, "--json"]),
            collector(&["agents", "--server", &url2]),
            collector(&["agents", "--server", &url2, "--events", "--json"]),
            collector(&[
                "workloads",
                "--server",
                &url2,
                "--min-severity",
                "high",
                "--json",
            ]),
        )
    })
    .await
    .unwrap();

    let lines: Vec<&str> = workloads.lines().collect();
    assert!(
        lines[0].starts_with("WORKLOAD") && lines[0].contains("CRIT"),
        "{workloads}"
    );
    assert_eq!(lines.len(), 3, "{workloads}");
    let parsed: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ci = parsed
        .iter()
        .find(|w| w["id"] == "github:acme/app/ci/build")
        .expect("the CI workload");
    assert_eq!(ci["deviations"], 2);
    assert_eq!(ci["by_severity"]["critical"], 1);
    assert_eq!(ci["kind"], "github-job");
    let severe: Vec<&str> = severe.lines().collect();
    assert_eq!(
        severe.len(),
        1,
        "the filter reaches the collector: {severe:?}"
    );

    assert!(
        agents.lines().next().unwrap().starts_with("AGENT"),
        "{agents}"
    );
    let row = agents.lines().nth(1).unwrap();
    assert!(
        row.starts_with("agent-cli") && row.contains("runner-7") && row.contains(" ok "),
        "{agents}"
    );
    let events: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dropped", "first-contact"]);
    assert_eq!(events[0]["count"], 3);
    server.stop().await;
}

/// GET `path` from the web endpoint at `addr`; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The web page's API shows silence, drops and the latest agent events.
#[tokio::test]
async fn the_web_api_shows_silent_agents_and_their_events() {
    let (_dir, db) = temp_db();
    let store = Arc::new(Store::open(&db).unwrap());
    let long_ago = collector::convert::unix_nanos(SystemTime::now()) - 3_600 * 1_000_000_000;
    let status = heartbeat("quiet", 9).status.unwrap();
    store.heartbeat("quiet", &status, long_ago).unwrap();
    let metrics = Arc::new(Metrics::new());
    collector::upkeep::check_silence(&store, &metrics, Duration::from_secs(120)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web = collector::web::Web::new(Arc::clone(&store), metrics, addr.ip());
    let cancel = CancellationToken::new();
    tokio::spawn(collector::web::serve(
        listener,
        Arc::new(web),
        cancel.clone(),
    ));
    let body = http_get(addr, "/api/agents").await;
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let agent = &api["agents"][0];
    assert_eq!(
        (
            &agent["agent_id"],
            &agent["silent"],
            &agent["dropped"],
            &agent["version"]
        ),
        (
            &serde_json::json!("quiet"),
            &serde_json::json!(true),
            &serde_json::json!(9),
            &serde_json::json!("1.2.3")
        ),
        "{api}"
    );
    let events: Vec<&str> = api["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["silent", "dropped", "first-contact"], "{api}");
    cancel.cancel();
}
