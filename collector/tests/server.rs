//! The real server over loopback: acknowledgements, duplicates, filters, validation, restarts.

mod common;

use std::time::Duration;

use common::{AgentStream, Collector, batch, deviation, temp_db};
use proto::v1::{DeviationKind, ListDeviationsRequest, Severity};

async fn ids(url: &str, request: ListDeviationsRequest) -> Vec<String> {
    collector::query::list(url, request)
        .await
        .unwrap_or_else(|e| panic!("query: {e}"))
        .into_iter()
        .map(|d| d.deviation.expect("stored deviation has a body").id)
        .collect()
}

#[tokio::test]
async fn batches_are_acked_after_storing_and_resends_are_not_stored_twice() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;
    let d = |id: &str, t| {
        deviation(
            id,
            t,
            "unit:a",
            DeviationKind::NewExecutable,
            Severity::High,
        )
    };

    let ack = agent
        .send(batch("agent-a", 1, vec![d("a", 1), d("b", 2)]))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.stored, ack.duplicates), (1, 2, 0));
    // The ack came after the commit: a query sees the batch.
    assert_eq!(
        ids(&server.url(), ListDeviationsRequest::default()).await,
        ["b", "a"]
    );

    // The same batch again (an agent that missed the ack): acked, nothing stored.
    let ack = agent
        .send(batch("agent-a", 1, vec![d("a", 1), d("b", 2)]))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.stored, ack.duplicates), (1, 0, 2));

    // A new batch repeating a deviation id stores only the new one.
    let ack = agent
        .send(batch("agent-a", 2, vec![d("b", 2), d("c", 3)]))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.stored, ack.duplicates), (2, 1, 1));

    // Pipelined batches are acked in order.
    for seq in 3..=5 {
        agent
            .tx
            .send(batch(
                "agent-a",
                seq,
                vec![d(&format!("p{seq}"), 10 + seq as i64)],
            ))
            .await
            .unwrap();
    }
    for seq in 3..=5 {
        let ack = agent.next().await.unwrap();
        assert_eq!((ack.sequence, ack.stored), (seq, 1));
    }
    assert_eq!(
        ids(&server.url(), ListDeviationsRequest::default())
            .await
            .len(),
        6
    );
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn queries_apply_every_filter() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;
    let mut other_host = deviation(
        "h2",
        50,
        "unit:a",
        DeviationKind::NewExecutable,
        Severity::Low,
    );
    other_host.host = "host-2".to_owned();
    let deviations = vec![
        deviation(
            "x1",
            10,
            "unit:a",
            DeviationKind::NewExecutable,
            Severity::Low,
        ),
        deviation(
            "x2",
            20,
            "unit:a",
            DeviationKind::NewFileAccess,
            Severity::Medium,
        ),
        deviation(
            "x3",
            30,
            "unit:b",
            DeviationKind::NewNetworkDestination,
            Severity::Critical,
        ),
        deviation(
            "x4",
            40,
            "unit:b",
            DeviationKind::NewExecEdge,
            Severity::Info,
        ),
        other_host,
    ];
    agent.send(batch("agent-a", 1, deviations)).await.unwrap();
    let url = server.url();
    let all = ListDeviationsRequest::default();

    assert_eq!(ids(&url, all.clone()).await, ["h2", "x4", "x3", "x2", "x1"]);
    let workload = ListDeviationsRequest {
        workload: "unit:b".into(),
        ..all.clone()
    };
    assert_eq!(ids(&url, workload).await, ["x4", "x3"]);
    let host = ListDeviationsRequest {
        host: "host-2".into(),
        ..all.clone()
    };
    assert_eq!(ids(&url, host).await, ["h2"]);
    let kind = ListDeviationsRequest {
        kind: DeviationKind::NewFileAccess.into(),
        ..all.clone()
    };
    assert_eq!(ids(&url, kind).await, ["x2"]);
    let severe = ListDeviationsRequest {
        min_severity: Severity::Medium.into(),
        ..all.clone()
    };
    assert_eq!(ids(&url, severe).await, ["x3", "x2"]);
    let window = ListDeviationsRequest {
        since_unix_nanos: 20_000_000_000,
        until_unix_nanos: 40_000_000_000,
        ..all.clone()
    };
    assert_eq!(ids(&url, window).await, ["x3", "x2"]);
    let limited = ListDeviationsRequest {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(ids(&url, limited).await, ["h2", "x4"]);
    let combined = ListDeviationsRequest {
        workload: "unit:a".into(),
        host: "host-1".into(),
        min_severity: Severity::Low.into(),
        ..all
    };
    assert_eq!(ids(&url, combined).await, ["x2", "x1"]);
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn invalid_batches_get_a_clear_status_naming_their_sequence() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let good = || {
        deviation(
            "ok",
            1,
            "unit:a",
            DeviationKind::NewExecutable,
            Severity::Low,
        )
    };
    let mut no_workload = good();
    no_workload.workload = None;
    let mut no_id = good();
    no_id.id.clear();
    let mut huge = good();
    // Just over the cap: validated (and named by its sequence), not a transport error.
    huge.summary = "x".repeat(proto::MAX_MESSAGE_BYTES);
    let cases = [
        (
            batch("", 1, vec![good()]),
            tonic::Code::InvalidArgument,
            "agent_id",
        ),
        (
            batch("agent-a", 0, vec![good()]),
            tonic::Code::InvalidArgument,
            "sequence",
        ),
        (
            batch("agent-a", 3, vec![no_workload]),
            tonic::Code::InvalidArgument,
            "workload",
        ),
        (
            batch("agent-a", 4, vec![no_id]),
            tonic::Code::InvalidArgument,
            "no id",
        ),
        (
            batch("agent-a", 5, vec![good(); 10_001]),
            tonic::Code::ResourceExhausted,
            "10001",
        ),
        (
            batch("agent-a", 6, vec![huge]),
            tonic::Code::ResourceExhausted,
            "bytes",
        ),
    ];
    for (batch, code, text) in cases {
        let sequence = batch.sequence;
        let mut agent = AgentStream::open(&server.url()).await;
        let status = agent
            .send(batch)
            .await
            .expect_err("invalid batch must be refused");
        assert_eq!(status.code(), code, "batch {sequence}: {status:?}");
        assert!(
            status.message().contains(text),
            "batch {sequence}: {status:?}"
        );
        let trailer = status
            .metadata()
            .get(collector::ingest::REJECTED_SEQUENCE_TRAILER);
        assert_eq!(
            trailer.and_then(|v| v.to_str().ok()),
            Some(sequence.to_string().as_str()),
            "batch {sequence}: {status:?}"
        );
    }
    // Nothing of the refused batches was stored; the server still works.
    assert!(
        ids(&server.url(), ListDeviationsRequest::default())
            .await
            .is_empty()
    );
    let mut agent = AgentStream::open(&server.url()).await;
    assert_eq!(
        agent
            .send(batch("agent-a", 7, vec![good()]))
            .await
            .unwrap()
            .stored,
        1
    );
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_collector_keeps_its_data_and_its_batch_memory() {
    let (_dir, db) = temp_db();
    let d = |id: &str, t| {
        deviation(
            id,
            t,
            "unit:a",
            DeviationKind::NewExecutable,
            Severity::High,
        )
    };
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;
    agent
        .send(batch("agent-a", 1, vec![d("a", 1), d("b", 2)]))
        .await
        .unwrap();
    drop(agent);
    server.stop().await;

    let server = Collector::start(&db).await;
    assert_eq!(
        ids(&server.url(), ListDeviationsRequest::default()).await,
        ["b", "a"]
    );
    let mut agent = AgentStream::open(&server.url()).await;
    let ack = agent
        .send(batch("agent-a", 1, vec![d("a", 1), d("b", 2)]))
        .await
        .unwrap();
    assert_eq!(
        (ack.stored, ack.duplicates),
        (0, 2),
        "batch 1 was stored before the restart"
    );
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_agent_streams_promptly() {
    let (_dir, db) = temp_db();
    let server = Collector::start(&db).await;
    let mut agent = AgentStream::open(&server.url()).await;
    let d = deviation(
        "a",
        1,
        "unit:a",
        DeviationKind::NewExecutable,
        Severity::High,
    );
    agent.send(batch("agent-a", 1, vec![d])).await.unwrap();
    // The agent keeps its stream open; the server must still stop well within the grace period.
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let status = agent
        .next()
        .await
        .expect_err("stream must end with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
