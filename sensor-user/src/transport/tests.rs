//! The transport against a real tonic Ingest server on a loopback socket. The server records every
//! batch it receives, "stores" each (spool, sequence) once like the collector, then acknowledges.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::v1::ingest_server::{Ingest, IngestServer};
use proto::v1::{BatchAck, Deviation, DeviationBatch, Workload};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::record::{self, MAGIC};
use super::*;

#[derive(Default)]
struct Received {
    /// Every batch that arrived, resends included.
    batches: Vec<DeviationBatch>,
    /// (spool_id, sequence) of stored batches.
    stored_batches: HashSet<(String, u64)>,
    /// Ids of stored deviations, in arrival order.
    ids: Vec<String>,
    /// Heartbeats (sequence 0 with a status), apart from the batches.
    heartbeats: Vec<DeviationBatch>,
}

#[derive(Clone, Default)]
struct TestIngest {
    received: Arc<Mutex<Received>>,
    /// Fail the stream instead of acknowledging the next stored batch (an ack lost on the way).
    lose_next_ack: Arc<AtomicBool>,
    /// Refuse this sequence the way the collector refuses an invalid batch.
    reject: Option<u64>,
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl Ingest for TestIngest {
    type StreamDeviationsStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn stream_deviations(
        &self,
        request: Request<Streaming<DeviationBatch>>,
    ) -> Result<Response<Self::StreamDeviationsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(batch)) => batch,
                        _ => return,
                    },
                    () = this.shutdown.cancelled() => return,
                };
                let answer = this.handle(batch);
                let last = answer.is_err();
                if tx.send(answer).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl TestIngest {
    fn handle(&self, batch: DeviationBatch) -> Result<BatchAck, Status> {
        let sequence = batch.sequence;
        if sequence == 0 && batch.status.is_some() {
            self.received.lock().unwrap().heartbeats.push(batch);
            return Ok(BatchAck::default());
        }
        if self.reject == Some(sequence) {
            let mut status = Status::invalid_argument("test: refused");
            status.metadata_mut().insert(
                "sensor-rejected-sequence",
                sequence.to_string().parse().unwrap(),
            );
            return Err(status);
        }
        let mut received = self.received.lock().unwrap();
        received.batches.push(batch.clone());
        let count = batch.deviations.len() as u32;
        let new = received
            .stored_batches
            .insert((batch.spool_id.clone(), sequence));
        if new {
            received
                .ids
                .extend(batch.deviations.into_iter().map(|d| d.id));
        }
        if self.lose_next_ack.swap(false, Ordering::SeqCst) {
            return Err(Status::unavailable("test: connection lost before the ack"));
        }
        Ok(if new {
            BatchAck {
                sequence,
                stored: count,
                duplicates: 0,
            }
        } else {
            BatchAck {
                sequence,
                stored: 0,
                duplicates: count,
            }
        })
    }
}

struct TestServer {
    addr: SocketAddr,
    ingest: TestIngest,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(addr: &str, ingest: TestIngest) -> TestServer {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let service = IngestServer::new(ingest.clone());
        let shutdown = ingest.shutdown.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    shutdown.cancelled_owned(),
                )
                .await
                .expect("test server failed");
        });
        TestServer { addr, ingest, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn ids(&self) -> Vec<String> {
        self.ingest.received.lock().unwrap().ids.clone()
    }

    fn batches(&self) -> Vec<DeviationBatch> {
        self.ingest.received.lock().unwrap().batches.clone()
    }

    async fn stop(self) {
        self.ingest.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("test server did not stop")
            .expect("test server panicked");
    }
}

fn deviation(i: usize) -> Deviation {
    Deviation {
        id: format!("dev-{i:05}"),
        time_unix_nanos: i as i64,
        host: "host-1".to_owned(),
        workload: Some(Workload {
            id: "unit:test.service".to_owned(),
            ..Workload::default()
        }),
        summary: format!("deviation {i}"),
        ..Deviation::default()
    }
}

fn deviations(range: std::ops::Range<usize>) -> Vec<Deviation> {
    range.map(deviation).collect()
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("dev-{i:05}")).collect()
}

fn config(url: &str, state_dir: &Path) -> TransportConfig {
    TransportConfig {
        agent_id: "agent-test".to_owned(),
        max_batch: 50,
        flush_interval: Duration::from_millis(20),
        ..TransportConfig::new(url, state_dir)
    }
}

/// A loopback URL where nothing listens (bound, then released).
async fn closed_port() -> String {
    // Below the ephemeral range, so no other test's `127.0.0.1:0` server is handed this port
    // in the meantime (a test that later starts its collector here would find it taken).
    let first_ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let span = u64::from(first_ephemeral.saturating_sub(10_000).max(1));
    for i in 0..1000u64 {
        let port =
            10_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            drop(listener);
            return format!("http://127.0.0.1:{port}");
        }
    }
    panic!("no free port below {first_ephemeral}");
}

/// Polls `condition` until it holds, panicking with `what` after 10 seconds.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels the transport and waits for its task, which must end within the drain time.
async fn stop(cancel: CancellationToken, task: JoinHandle<()>) {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(6), task)
        .await
        .expect("delivery task did not end after cancellation")
        .expect("delivery task panicked");
}

fn spool_files(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("batch-"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn delivers_in_order_and_empties_the_spool() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();

    transport.send(deviations(0..120)).unwrap();
    for i in 120..130 {
        transport.send(vec![deviation(i)]).unwrap();
    }
    wait_for("130 acknowledged", || transport.stats().acknowledged == 130).await;

    assert_eq!(server.ids(), ids(0..130), "in order, each once");
    let batches = server.batches();
    let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    assert!(
        batches
            .iter()
            .all(|b| b.deviations.len() <= 50 && b.agent_id == "agent-test")
    );
    assert!(
        batches.iter().all(|b| b.spool_id.len() == 32),
        "spool id is sent"
    );
    let stats = transport.stats();
    assert_eq!(
        (stats.unacknowledged, stats.dropped, stats.connected),
        (0, 0, true)
    );
    assert!(
        spool_files(dir.path()).is_empty(),
        "acknowledged batches are deleted"
    );
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn collector_down_at_first_gets_everything_once_when_it_starts() {
    let url = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (transport, task) = Transport::start(config(&url, dir.path()), cancel.clone()).unwrap();
    transport.send(deviations(0..75)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // A few failed connection attempts.
    let stats = transport.stats();
    assert_eq!(
        (stats.unacknowledged, stats.acknowledged, stats.connected),
        (75, 0, false)
    );
    transport.send(deviations(75..80)).unwrap();

    let server = TestServer::start(url.trim_start_matches("http://"), TestIngest::default()).await;
    wait_for("80 acknowledged", || transport.stats().acknowledged == 80).await;
    assert_eq!(server.ids(), ids(0..80));
    let sequences: Vec<u64> = server.batches().iter().map(|b| b.sequence).collect();
    assert_eq!(
        sequences.len(),
        sequences.iter().collect::<HashSet<_>>().len(),
        "nothing sent twice: {sequences:?}"
    );
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn collector_restart_and_lost_ack_resend_without_storing_twice() {
    let ingest = TestIngest::default();
    let server = TestServer::start("127.0.0.1:0", ingest.clone()).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    transport.send(deviations(0..10)).unwrap();
    wait_for("first 10 acknowledged", || {
        transport.stats().acknowledged == 10
    })
    .await;

    // The next batch is stored but its ack is lost: it must be resent, and acked as a duplicate.
    ingest.lose_next_ack.store(true, Ordering::SeqCst);
    transport.send(deviations(10..20)).unwrap();
    wait_for("lost ack recovered", || {
        transport.stats().acknowledged == 20
    })
    .await;
    let resent: Vec<u64> = server.batches().iter().map(|b| b.sequence).collect();
    assert_eq!(resent, [1, 2, 2], "batch 2 arrived twice");

    // Collector restarts; what is sent meanwhile arrives once it is back.
    server.stop().await;
    transport.send(deviations(20..40)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!transport.stats().connected);
    let server = TestServer::start(&addr, TestIngest::default()).await;
    wait_for("all 40 acknowledged", || {
        transport.stats().acknowledged == 40
    })
    .await;
    assert_eq!(server.ids(), ids(20..40));
    assert_eq!(
        ingest.received.lock().unwrap().ids,
        ids(0..20),
        "stored once each"
    );
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn spool_and_sequence_survive_a_transport_restart() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();

    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    transport.send(deviations(0..5)).unwrap();
    wait_for("first batch acknowledged", || {
        transport.stats().acknowledged == 5
    })
    .await;
    server.stop().await;
    transport.send(deviations(5..60)).unwrap();
    drop(transport);
    stop(cancel, task).await; // Collector is down: gives up after the drain time.
    assert!(
        !spool_files(dir.path()).is_empty(),
        "undelivered batches stay spooled"
    );

    let server = TestServer::start(&addr, TestIngest::default()).await;
    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    assert_eq!(
        transport.stats().unacknowledged,
        55,
        "recovered from the spool"
    );
    transport.send(deviations(60..70)).unwrap();
    wait_for("everything acknowledged", || {
        transport.stats().acknowledged == 65
    })
    .await;
    assert_eq!(server.ids(), ids(5..70));
    let batches = server.batches();
    assert!(
        batches.iter().all(|b| b.sequence > 1),
        "sequence 1 is never reused"
    );
    assert!(batches.windows(2).all(|w| w[0].sequence < w[1].sequence));
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn idle_stream_sends_a_lone_deviation_at_once() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let slow_flush = TransportConfig {
        flush_interval: Duration::from_secs(60),
        ..config(&server.url(), dir.path())
    };
    let (transport, task) = Transport::start(slow_flush, cancel.clone()).unwrap();
    transport.send(deviations(0..1)).unwrap();
    let started = Instant::now();
    while server.ids().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.ids(), ids(0..1), "not sent within 10 s");
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn cancellation_delivers_what_is_spooled_then_ends() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let slow_flush = TransportConfig {
        flush_interval: Duration::from_secs(60),
        ..config(&server.url(), dir.path())
    };
    let (transport, task) = Transport::start(slow_flush, cancel.clone()).unwrap();
    transport.send(deviations(0..7)).unwrap(); // Would wait a minute for its batch to fill.
    let started = Instant::now();
    stop(cancel, task).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(server.ids(), ids(0..7));
    server.stop().await;
}

#[tokio::test]
async fn deviations_sent_just_after_cancellation_still_go_out() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    cancel.cancel();
    // The agent finds its last deviations while it stops.
    tokio::time::sleep(Duration::from_millis(30)).await;
    transport.send(deviations(0..3)).unwrap();
    stop(cancel, task).await;
    assert_eq!(server.ids(), ids(0..3));
    server.stop().await;
}

#[tokio::test]
async fn refused_batch_is_dropped_and_delivery_continues() {
    let ingest = TestIngest {
        reject: Some(2),
        ..TestIngest::default()
    };
    let server = TestServer::start("127.0.0.1:0", ingest).await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    transport.send(deviations(0..150)).unwrap(); // Batches 1, 2, 3 of 50.
    wait_for("batches 1 and 3 acknowledged", || {
        transport.stats().acknowledged == 100
    })
    .await;
    let stats = transport.stats();
    assert_eq!((stats.dropped, stats.unacknowledged), (50, 0));
    let expected: Vec<String> = ids(0..50).into_iter().chain(ids(100..150)).collect();
    assert_eq!(server.ids(), expected);
    stop(cancel, task).await;
    server.stop().await;
}

/// The agent says it is alive when its stream opens and then at its interval, and reports what
/// it dropped while the collector was away once it is back.
#[tokio::test]
async fn heartbeats_report_status_and_drops_once_connected() {
    let url = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let small = TransportConfig {
        spool_max_bytes: 2048,
        heartbeat_interval: Duration::from_millis(100),
        ..config(&url, dir.path())
    };
    let (transport, task) = Transport::start(small, cancel.clone()).unwrap();
    transport.set_kernel_lost(7);
    transport.set_liveness(1_700_000_000_000_000_000, 42);
    transport.set_queue_depth(Box::new(|| 4096));
    transport.send(deviations(0..100)).unwrap();
    let dropped = transport.stats().dropped;
    assert!(dropped > 0, "the spool overflowed");

    let addr = url.trim_start_matches("http://");
    let server = TestServer::start(addr, TestIngest::default()).await;
    let heartbeats = || server.ingest.received.lock().unwrap().heartbeats.clone();
    wait_for("3 heartbeats", || heartbeats().len() >= 3).await;
    wait_for("everything spooled acknowledged", || {
        transport.stats().unacknowledged == 0
    })
    .await;
    let first = heartbeats()[0].clone();
    let status = first.status.clone().unwrap();
    assert_eq!((first.sequence, first.agent_id.as_str()), (0, "agent-test"));
    assert!(first.deviations.is_empty());
    assert_eq!(status.dropped_total, dropped, "drops reported once back");
    assert_eq!(status.kernel_lost_total, 7);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.heartbeat_interval_millis, 100);
    assert!(!status.instance_id.is_empty());
    assert_eq!(status.host, "agent-test", "the agent's one host identity");
    assert_eq!(
        (status.last_event_unix_nanos, status.events_decoded_total),
        (1_700_000_000_000_000_000, 42),
        "the pipeline's liveness"
    );
    assert_eq!(
        status.event_queue_depth, 4096,
        "read when the heartbeat is built"
    );
    // What was unacknowledged when it was built: all of the spool, or less when acknowledgements
    // of the resent batches came first (the two race on a new stream).
    assert!(
        status.spool_deviations <= 100 - dropped,
        "the spool at the first heartbeat: {} of {}",
        status.spool_deviations,
        100 - dropped
    );
    wait_for("a heartbeat with an empty spool", || {
        heartbeats()
            .last()
            .is_some_and(|h| h.status.as_ref().unwrap().spool_deviations == 0)
    })
    .await;
    // Later heartbeats keep the run's identity.
    let last = heartbeats().last().unwrap().status.clone().unwrap();
    assert_eq!(last.instance_id, status.instance_id);
    // Heartbeats are not batches: every batch is numbered from 1, none was lost.
    assert!(server.batches().iter().all(|b| b.sequence > 0));
    assert_eq!(server.ids().len() as u64, 100 - dropped);
    stop(cancel, task).await;
    server.stop().await;
}

/// Drops while the collector is away survive an agent restart: the next run reports them, under
/// the same spool identity, added to its own.
#[tokio::test]
async fn drops_before_a_restart_are_reported_after_it() {
    let url = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let small = || TransportConfig {
        spool_max_bytes: 2048,
        heartbeat_interval: Duration::from_millis(50),
        ..config(&url, dir.path())
    };
    let cancel = CancellationToken::new();
    let (transport, task) = Transport::start(small(), cancel.clone()).unwrap();
    transport.send(deviations(0..100)).unwrap();
    let first_run = transport.stats().dropped;
    assert!(first_run > 0);
    stop(cancel, task).await;
    drop(transport); // Releases the spool.

    let cancel = CancellationToken::new();
    let (transport, task) = Transport::start(small(), cancel.clone()).unwrap();
    assert_eq!(
        transport.stats().dropped,
        0,
        "the process's own count starts at 0"
    );
    transport.send(deviations(100..200)).unwrap();
    let second_run = transport.stats().dropped;
    assert!(second_run > 0);
    let addr = url.trim_start_matches("http://");
    let server = TestServer::start(addr, TestIngest::default()).await;
    wait_for("a heartbeat", || {
        !server.ingest.received.lock().unwrap().heartbeats.is_empty()
    })
    .await;
    let heartbeat = server.ingest.received.lock().unwrap().heartbeats[0].clone();
    let status = heartbeat.status.unwrap();
    assert_eq!(status.dropped_total, first_run + second_run);
    assert_eq!(
        status.instance_id, heartbeat.spool_id,
        "the count is the spool's"
    );
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn full_spool_drops_and_counts() {
    let url = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let small = TransportConfig {
        spool_max_bytes: 2048,
        ..config(&url, dir.path())
    };
    let (transport, task) = Transport::start(small, cancel.clone()).unwrap();
    transport.send(deviations(0..100)).unwrap();
    let stats = transport.stats();
    assert!(stats.dropped > 0 && stats.unacknowledged > 0, "{stats:?}");
    assert_eq!(stats.dropped + stats.unacknowledged, 100, "{stats:?}");
    stop(cancel, task).await;
}

#[tokio::test]
async fn torn_tail_is_skipped_and_the_rest_delivered() {
    let server = TestServer::start("127.0.0.1:0", TestIngest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut data = MAGIC.to_vec();
    for i in 0..3 {
        record::encode(&prost::Message::encode_to_vec(&deviation(i)), &mut data);
    }
    let whole = data.len();
    record::encode(&prost::Message::encode_to_vec(&deviation(3)), &mut data);
    data.truncate(whole + 10); // Crashed in the middle of the fourth record.
    std::fs::write(spool.join("pending.log"), &data).unwrap();

    let cancel = CancellationToken::new();
    let (transport, task) =
        Transport::start(config(&server.url(), dir.path()), cancel.clone()).unwrap();
    assert_eq!(transport.stats().unacknowledged, 3);
    transport.send(vec![deviation(4)]).unwrap();
    wait_for("4 acknowledged", || transport.stats().acknowledged == 4).await;
    assert_eq!(server.ids(), [ids(0..3), ids(4..5)].concat());
    stop(cancel, task).await;
    server.stop().await;
}

#[tokio::test]
async fn corrupt_spool_is_a_clear_error() {
    let url = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("next-sequence"), "twelve").unwrap();
    let err = Transport::start(config(&url, dir.path()), CancellationToken::new())
        .err()
        .unwrap();
    assert!(matches!(err, TransportError::SpoolCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("next-sequence"), "{err}");

    std::fs::remove_file(spool.join("next-sequence")).unwrap();
    let mut damaged = MAGIC.to_vec();
    record::encode(b"payload", &mut damaged);
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(spool.join("batch-00000000000000000007.log"), &damaged).unwrap();
    let err = Transport::start(config(&url, dir.path()), CancellationToken::new())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("batch-00000000000000000007.log"),
        "{err}"
    );
}

#[tokio::test]
async fn unusable_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "not a url",
        "127.0.0.1:50051",
        "ftp://host:1",
        "https://host:1",
        "http://",
    ] {
        let err = Transport::start(config(url, dir.path()), CancellationToken::new()).err();
        assert!(
            matches!(err, Some(TransportError::InvalidUrl { .. })),
            "{url}: {:?}",
            err.map(|e| e.to_string())
        );
    }
    let url = closed_port().await;
    let cancel = CancellationToken::new();
    let (transport, task) = Transport::start(config(&url, dir.path()), cancel.clone()).unwrap();
    let err = Transport::start(config(&url, dir.path()), CancellationToken::new()).err();
    assert!(
        matches!(err, Some(TransportError::SpoolLocked { .. })),
        "{err:?}"
    );

    let mut no_workload = deviation(1);
    no_workload.workload = None;
    let err = transport.send(vec![deviation(0), no_workload]).err();
    assert!(
        matches!(err, Some(TransportError::InvalidDeviation { .. })),
        "{err:?}"
    );
    assert_eq!(transport.stats().unacknowledged, 0, "all or nothing");
    stop(cancel, task).await;

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = Transport::start(config(&url, &file), CancellationToken::new()).err();
    assert!(
        matches!(err, Some(TransportError::SpoolIo { .. })),
        "{err:?}"
    );
}
