//! Hostile agents over real mutual-TLS sockets: undecodable, oversized and mixed messages end
//! only their own stream, with a clear status, while another agent's stream keeps being
//! acknowledged; mutated and random HTTP requests at the web endpoint. Also measures what TLS
//! costs (ignored test).

mod common;

use collector::credentials::ClientArgs;
use common::raw::{self, RawCodec};
use common::tls::{Agent, DEADLINE, TlsCollector, client, connect, deployment, one, stored};
use common::{batch, deviation, temp_db};
use prost::Message as _;
use proto::v1::{DeviationKind, Severity, ingest_client::IngestClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Opens a stream over `channel`, sends `messages` as they are and answers how it ended.
async fn hostile(channel: Channel, messages: Vec<Vec<u8>>) -> Status {
    let mut grpc = raw::unlimited(channel);
    grpc.ready().await.expect("ready");
    let path = raw::stream_deviations();
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            RawCodec,
        )
        .await;
    let mut acks = match response {
        Err(status) => return status,
        Ok(response) => response.into_inner(),
    };
    loop {
        match tokio::time::timeout(DEADLINE, acks.message())
            .await
            .expect("the hostile stream ends in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("hostile stream ended without an error"),
            Err(status) => return status,
        }
    }
}

#[tokio::test]
async fn hostile_messages_end_their_stream_only() {
    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    let server = TlsCollector::start(&db, &certs).await;
    let good = connect(&server.url(), &client(&certs, Some("agent-agent-b")))
        .await
        .unwrap();
    let bad = connect(&server.url(), &client(&certs, Some("agent-agent-a")))
        .await
        .unwrap();
    let mut agent = Agent::open(good).await.unwrap();
    let mut sequence = 0;
    let mut send_good = async || {
        sequence += 1;
        let ack = agent
            .send(one(&format!("good-{sequence}"), "agent-b", sequence))
            .await
            .expect("the healthy agent is still acknowledged");
        assert_eq!(ack.sequence, sequence);
    };
    send_good().await;

    // Not protobuf: a field tag with wire type 7.
    let status = hostile(bad.clone(), vec![vec![0x0f, 0xff, 0xff]]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("not a valid sensor.v1.DeviationBatch"),
        "{status:?}"
    );
    send_good().await;

    // A length prefix far past the end of the message.
    let mut huge_len = vec![0x1a]; // field 3 (deviations), length-delimited
    huge_len.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    huge_len.extend([0u8; 16]);
    let status = hostile(bad.clone(), vec![huge_len]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    send_good().await;

    // Larger than the collector decodes (the 4 MiB cap and a little).
    let oversized = vec![0u8; collector::ingest::MAX_DECODE_BYTES + 1];
    let status = hostile(bad.clone(), vec![oversized]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("larger than"), "{status:?}");
    send_good().await;

    // A valid batch after a good one on the same hostile stream is stored; the garbage after it
    // ends the stream.
    let honest = one("hostile-honest", "agent-a", 1).encode_to_vec();
    let status = hostile(bad, vec![honest, vec![0xff; 64]]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    send_good().await;

    let mut ids: Vec<String> = stored(&server.url(), &certs)
        .await
        .into_iter()
        .map(|(agent, id)| format!("{agent}/{id}"))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "agent-a/hostile-honest",
            "agent-b/good-1",
            "agent-b/good-2",
            "agent-b/good-3",
            "agent-b/good-4",
            "agent-b/good-5"
        ]
    );
    server.stop().await;
}

/// Measures what mutual TLS costs: connection setup and streaming throughput, plain text and
/// TLS side by side on loopback. Run: `cargo test --release -p collector --test hostile --
/// --ignored --nocapture measure_tls_cost`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn measure_tls_cost() {
    const CONNECTS: u32 = 50;
    const BATCHES: u64 = 2000;
    const PER_BATCH: usize = 50;
    let (dir, _) = temp_db();
    let certs = deployment(dir.path());
    let tls = TlsCollector::start(&dir.path().join("tls.db"), &certs).await;
    let plain_db = dir.path().join("plain.db");
    let plain = common::Collector::start(&plain_db).await;
    let agent = client(&certs, Some("agent-agent-a"));
    for (name, url, credentials) in [
        ("plain", plain.url(), ClientArgs::default()),
        ("mtls", tls.url(), agent.clone()),
    ] {
        let started = std::time::Instant::now();
        for _ in 0..CONNECTS {
            let channel = connect(&url, &credentials).await.unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
        }
        let per_connect = started.elapsed() / CONNECTS;

        let channel = connect(&url, &credentials).await.unwrap();
        let (tx, rx) = mpsc::channel(64);
        let mut acks = IngestClient::new(channel)
            .stream_deviations(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let started = std::time::Instant::now();
        let sender = tokio::spawn(async move {
            for sequence in 1..=BATCHES {
                let deviations = (0..PER_BATCH)
                    .map(|i| {
                        deviation(
                            &format!("{sequence}-{i}"),
                            1_700_000_000,
                            "unit:bench.service",
                            DeviationKind::NewFileAccess,
                            Severity::Low,
                        )
                    })
                    .collect();
                tx.send(batch("agent-a", sequence, deviations))
                    .await
                    .unwrap();
            }
        });
        for _ in 0..BATCHES {
            acks.message().await.unwrap().expect("ack");
        }
        sender.await.unwrap();
        let elapsed = started.elapsed();
        let rate = (BATCHES as f64 * PER_BATCH as f64) / elapsed.as_secs_f64();
        eprintln!(
            "{name}: connect+first call {per_connect:?}; {BATCHES} batches of {PER_BATCH} \
             stored and acknowledged in {elapsed:?} ({rate:.0} deviations/s)"
        );
    }
    plain.stop().await;
    tls.stop().await;
}

/// Mutated and random HTTP request heads at the web endpoint (the API off loopback, so with its
/// token check): every connection gets an answer or is closed, and a proper request is answered
/// afterwards.
#[tokio::test]
async fn hostile_http_requests_leave_the_web_endpoint_answering() {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (dir, db) = temp_db();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "web-token\n").unwrap();
    let store = Arc::new(collector::store::Store::open(&db).unwrap());
    let access = collector::auth::Access::new(
        false,
        collector::auth::read_tokens(&token_file).unwrap(),
        [],
    );
    let web = collector::web::Web::new(
        store,
        Arc::new(collector::metrics::Metrics::new()),
        "0.0.0.0".parse().unwrap(),
    )
    .with_access(Arc::new(access))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(collector::web::serve(
        listener,
        Arc::new(web),
        cancel.clone(),
    ));

    let exchange = async |bytes: Vec<u8>| -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        // The endpoint may answer and close before reading everything: not an error here.
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
            .await
            .expect("answered or closed in time");
        String::from_utf8_lossy(&answer).into_owned()
    };
    let good = b"GET /api/deviations?limit=5&since=1h HTTP/1.1\r\nHost: c.example\r\n\
                 Authorization: Bearer web-token\r\n\r\n"
        .to_vec();
    let mut state: u64 = 0x0bad_5eed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut answered, mut served) = (0, 0);
    for case in 0..400 {
        let mut bytes = good.clone();
        match case % 4 {
            0 => {
                for _ in 0..8 {
                    let i = next() as usize % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            1 => bytes.truncate(next() as usize % bytes.len()),
            2 => bytes = (0..next() % 9000).map(|_| next() as u8).collect(),
            _ => {
                let at = next() as usize % bytes.len();
                let junk = format!(
                    "%{:x}%%zz?&=={}\r\n",
                    next(),
                    "A".repeat(next() as usize % 9000)
                );
                bytes.splice(at..at, junk.into_bytes());
            }
        }
        let had_token = bytes.windows(9).any(|w| w == b"web-token");
        let answer = exchange(bytes).await;
        if answer.starts_with("HTTP/1.1 ") {
            answered += 1;
        }
        // Nothing without the token gets data from the API.
        if answer.starts_with("HTTP/1.1 200") && answer.contains("application/json") {
            assert!(had_token, "case {case}: {answer}");
            served += 1;
        }
    }
    let answer = exchange(good).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    eprintln!("400 hostile requests: {answered} answered, {served} served data (with the token)");
    assert!(
        served > 0,
        "some mutations keep the token: the check above is exercised"
    );
    assert!(
        answered > 100,
        "most hostile requests get an HTTP answer: {answered}"
    );
    cancel.cancel();
}
