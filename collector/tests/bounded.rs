//! One stolen agent certificate against the collector's memory, over real mutual TLS to the real
//! `collector serve` binary: many streams, messages at and far over the cap, idle connections.
//! The collector's peak RSS (VmHWM from /proc) stays bounded while an honest agent keeps being
//! acknowledged. Also: a silent stream is closed after the idle timeout.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use collector::ingest::IngestService;
use common::raw::{self, RawCodec};
use common::tls::{Agent, DEADLINE, client, connect, deployment, one};
use prost::Message as _;
use proto::v1::{Deviation, DeviationBatch, ingest_server::IngestServer};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_collector");
/// The collector's peak RSS under attack must stay below this.
const RSS_BOUND_KIB: u64 = 192 * 1024;

/// A `collector serve` child, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    /// Peak resident memory so far, KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the collector is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }
}

/// `collector serve` with mutual TLS on an ephemeral port; answers the child and its URL.
fn spawn_tls(dir: &std::path::Path, certs: &std::path::Path) -> (Serve, String) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "", "--db"])
        .arg(dir.join("collector.db"))
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--tls-client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--query-token-file")
        .arg(&tokens)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector serve");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let child = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("collector did not log that it serves");
        let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if log["fields"]["message"] == "collector serving" {
            let listen = log["fields"]["listen"].as_str().expect("listen").to_owned();
            let port = listen.rsplit_once(':').unwrap().1.to_owned();
            return (child, format!("https://localhost:{port}"));
        }
    }
}

/// Sends `message` on a new stream, then keeps the stream open without sending more; answers
/// the status the collector ends it with (or `None` if it had not within a few seconds).
async fn hostile_stream(channel: Channel, message: Arc<Vec<u8>>) -> Option<Code> {
    let mut grpc = raw::unlimited(channel);
    grpc.ready().await.ok()?;
    let path = raw::stream_deviations();
    let body = tokio_stream::StreamExt::chain(
        tokio_stream::once(message.as_ref().clone()),
        tokio_stream::pending(),
    );
    let call = grpc.streaming(tonic::Request::new(body), path, RawCodec);
    let ended = async {
        match call.await {
            Err(status) => status.code(),
            Ok(response) => {
                let mut acks = response.into_inner();
                loop {
                    match acks.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Code::Ok,
                        Err(status) => return status.code(),
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .ok()
}

/// A batch of about `bytes` from agent-a that decodes but is refused (sequence 0 without a
/// status): the collector decodes all of it, stores nothing.
fn heavy_batch(bytes: usize) -> Vec<u8> {
    DeviationBatch {
        agent_id: "agent-a".to_owned(),
        sequence: 0,
        deviations: vec![Deviation {
            id: "heavy".to_owned(),
            summary: "x".repeat(bytes - 256),
            ..Deviation::default()
        }],
        ..DeviationBatch::default()
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_agent_cannot_exhaust_the_collectors_memory() {
    let dir = tempfile::tempdir().unwrap();
    let certs = deployment(dir.path());
    let (serve, url) = spawn_tls(dir.path(), &certs);

    // The honest agent (agent-b) sends a batch every 50 ms throughout; each must be acknowledged.
    let honest = connect(&url, &client(&certs, Some("agent-agent-b")))
        .await
        .expect("agent-b connects");
    let mut agent = Agent::open(honest).await.expect("agent-b's stream opens");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let honest_task = {
        let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let ack = agent
                    .send(one(&format!("honest-{sequence}"), "agent-b", sequence))
                    .await
                    .unwrap_or_else(|s| panic!("honest batch {sequence} refused: {s:?}"));
                assert_eq!((ack.sequence, ack.stored), (sequence, 1));
                acked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let wait_for_acks = async |at_least: u64| {
        let deadline = Instant::now() + DEADLINE;
        while acked.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "honest agent stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for_acks(10).await;
    let before = serve.peak_rss_kib();

    // Agent-a's stolen certificate: 200 idle connections...
    let hostile = client(&certs, Some("agent-agent-a"));
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(connect(&url, &hostile).await.expect("an idle connection"));
    }
    // ...then waves of 64 streams at once over 4 connections, each sending one batch just
    // under the 4 MiB cap and holding the stream open, and 8 messages of 64 MiB.
    let channels: Vec<Channel> = idle[..4].to_vec();
    let heavy = Arc::new(heavy_batch(proto::MAX_MESSAGE_BYTES - 1024));
    let huge = Arc::new(vec![0u8; 64 * 1024 * 1024]);
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for wave in 0..3 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..64 {
            calls.spawn(hostile_stream(
                channels[i % channels.len()].clone(),
                Arc::clone(&heavy),
            ));
        }
        for i in 0..8 {
            calls.spawn(hostile_stream(
                channels[i % channels.len()].clone(),
                Arc::clone(&huge),
            ));
        }
        while let Some(code) = calls.join_next().await {
            *codes.entry(format!("{:?}", code.unwrap())).or_default() += 1;
        }
        wait_for_acks(acked.load(Ordering::Relaxed) + 5).await;
        eprintln!(
            "wave {wave}: peak RSS {} KiB, honest acks {}",
            serve.peak_rss_kib(),
            acked.load(Ordering::Relaxed)
        );
    }
    let after = serve.peak_rss_kib();
    stop.store(true, Ordering::Relaxed);
    honest_task
        .await
        .expect("the honest agent kept being acknowledged");
    eprintln!(
        "collector peak RSS: {before} KiB honest only, {after} KiB after 200 idle connections and \
         3 waves of 64 streams of ~4 MiB and 8 of 64 MiB from one certificate; hostile streams \
         ended: {codes:?}; honest batches acknowledged: {}",
        acked.load(Ordering::Relaxed)
    );
    assert!(
        codes.contains_key("Some(ResourceExhausted)"),
        "streams over the per-agent limit are refused: {codes:?}"
    );
    assert!(
        after < RSS_BOUND_KIB,
        "collector peak RSS {after} KiB exceeds {RSS_BOUND_KIB} KiB"
    );
    drop(idle);
}

#[tokio::test]
async fn a_silent_stream_is_closed_after_the_idle_timeout() {
    let (_dir, db) = common::temp_db();
    let store = Arc::new(collector::store::Store::open(&db).unwrap());
    let service = IngestService::new(store, tokio_util::sync::CancellationToken::new())
        .with_idle_timeout(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut stream = common::AgentStream::open(&url).await;
    let ack = stream
        .send(common::batch(
            "quiet",
            1,
            vec![common::deviation(
                "q1",
                1_700_000_000,
                "unit:q.service",
                proto::v1::DeviationKind::NewExecutable,
                proto::v1::Severity::Low,
            )],
        ))
        .await
        .expect("the first batch is acknowledged");
    assert_eq!(ack.stored, 1);
    let started = Instant::now();
    let status = stream
        .next()
        .await
        .expect_err("the silent stream is closed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("idle"), "{status:?}");
    assert!(started.elapsed() < DEADLINE);
}
