//! A fleet: two collector replicas (the real gRPC server on loopback sockets, each with its own
//! pool) on one real PostgreSQL, several agents (real tonic streams) sending each batch to one
//! replica and resending it to the other, as an agent does when an acknowledgement is lost and it
//! reconnects through the load balancer to the other replica. Every deviation must be stored
//! exactly once. Also: heartbeats through either replica, silence and return, over gRPC.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::metrics::Metrics;
use collector::store::Store;
use common::postgres::PgCluster;
use common::{AgentStream, batch, deviation};
use proto::v1::{
    AgentEventKind, AgentStatus, DeviationBatch, DeviationKind, ListAgentsRequest,
    ListDeviationsRequest, Severity,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 4;
const BATCHES: u64 = 25;
const PER_BATCH: usize = 8;

/// One replica: the real server over its own connection pool to the shared database, and its
/// upkeep (silence checks).
struct Replica {
    url: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Replica {
    async fn start(db: &str, agent_silence: Duration) -> Replica {
        let db = db.to_owned();
        let store = tokio::task::spawn_blocking(move || Store::connect(&db))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("replica cannot open the database: {e}"));
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        tokio::spawn(collector::upkeep::run(
            Arc::clone(&store),
            Arc::clone(&metrics),
            collector::upkeep::Upkeep {
                agent_silence,
                retention: None,
            },
            shutdown.clone(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(collector::server::serve_with_metrics(
            listener,
            store,
            metrics,
            shutdown.clone(),
        ));
        Replica {
            url,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("replica did not stop")
            .unwrap()
            .unwrap();
    }
}

fn heartbeat(agent: &str, instance: &str, dropped: u64) -> DeviationBatch {
    DeviationBatch {
        agent_id: agent.to_owned(),
        sequence: 0,
        deviations: Vec::new(),
        spool_id: "spool-test".to_owned(),
        status: Some(AgentStatus {
            version: "9.9.9".to_owned(),
            instance_id: instance.to_owned(),
            host: format!("{agent}.example"),
            dropped_total: dropped,
            heartbeat_interval_millis: 100,
            ..AgentStatus::default()
        }),
    }
}

fn agent_batch(agent: usize, sequence: u64) -> DeviationBatch {
    let deviations = (0..PER_BATCH)
        .map(|i| {
            deviation(
                &format!("agent{agent}-b{sequence}-d{i}"),
                1_700_000_000 + sequence as i64,
                &format!("unit:app{agent}.service"),
                DeviationKind::NewExecutable,
                Severity::Medium,
            )
        })
        .collect();
    batch(&format!("agent-{agent}"), sequence, deviations)
}

/// One agent: a stream to each replica; batch n goes to replica n % 2, then (its ack "lost")
/// again to the other. Returns the deviations its acks say were newly stored.
async fn run_agent(agent: usize, urls: [String; 2]) -> u64 {
    let mut streams = [
        AgentStream::open(&urls[0]).await,
        AgentStream::open(&urls[1]).await,
    ];
    let name = format!("agent-{agent}");
    for stream in &mut streams {
        let ack = stream.send(heartbeat(&name, "run-1", 0)).await.unwrap();
        assert_eq!(ack.sequence, 0, "a heartbeat is acknowledged as sequence 0");
    }
    let mut stored = 0u64;
    for sequence in 1..=BATCHES {
        let first = (sequence as usize + agent) % 2;
        let ack = streams[first]
            .send(agent_batch(agent, sequence))
            .await
            .unwrap();
        assert_eq!(ack.sequence, sequence);
        stored += u64::from(ack.stored);
        let resend = streams[1 - first]
            .send(agent_batch(agent, sequence))
            .await
            .unwrap();
        assert_eq!(
            (resend.sequence, resend.stored, resend.duplicates),
            (sequence, 0, PER_BATCH as u32),
            "a resend through the other replica stores nothing"
        );
    }
    // Drops reported once, through either replica, counted once.
    streams[0].send(heartbeat(&name, "run-1", 5)).await.unwrap();
    streams[1].send(heartbeat(&name, "run-1", 5)).await.unwrap();
    stored
}

/// The same batch sent to both replicas at the same instant (no ack lost: both race).
async fn race_same_batch(urls: &[String; 2]) -> u64 {
    let mut a = AgentStream::open(&urls[0]).await;
    let mut b = AgentStream::open(&urls[1]).await;
    let mut stored = 0;
    for sequence in 1..=BATCHES {
        let one = agent_batch(99, sequence);
        let (x, y) = tokio::join!(a.send(one.clone()), b.send(one));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(
            x.stored + y.stored,
            PER_BATCH as u32,
            "batch {sequence}: stored by exactly one replica ({x:?}, {y:?})"
        );
        stored += u64::from(x.stored + y.stored);
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_store_every_deviation_exactly_once() {
    let cluster = PgCluster::start();
    let db = cluster.database("fleet");
    // Both replicas start together on the empty database: one migrates, the other waits.
    let (one, two) = tokio::join!(
        Replica::start(&db, Duration::from_secs(600)),
        Replica::start(&db, Duration::from_secs(600))
    );
    let urls = [one.url.clone(), two.url.clone()];

    let started = Instant::now();
    let agents: Vec<_> = (0..AGENTS)
        .map(|agent| tokio::spawn(run_agent(agent, urls.clone())))
        .collect();
    let racing = tokio::spawn({
        let urls = urls.clone();
        async move { race_same_batch(&urls).await }
    });
    let mut acked = 0;
    for agent in agents {
        acked += agent.await.unwrap();
    }
    acked += racing.await.unwrap();
    let elapsed = started.elapsed();
    let expected = (AGENTS as u64 + 1) * BATCHES * PER_BATCH as u64;
    assert_eq!(acked, expected, "acks count every deviation once");

    // Both replicas answer the same: every deviation, once.
    for url in &urls {
        let stored = collector::query::list(
            url,
            ListDeviationsRequest {
                limit: 10_000,
                ..ListDeviationsRequest::default()
            },
        )
        .await
        .unwrap();
        let ids: Vec<String> = stored
            .into_iter()
            .map(|d| d.deviation.unwrap().id)
            .collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len() as u64, expected, "nothing lost ({url})");
        assert_eq!(distinct.len(), ids.len(), "nothing doubled ({url})");
    }
    eprintln!(
        "{} agents + 1 racing, {BATCHES} batches of {PER_BATCH} each sent twice through 2 replicas: \
         {expected} deviations in {elapsed:?}",
        AGENTS
    );

    let response = collector::listing::list_agents(
        &urls[1],
        ListAgentsRequest {
            limit: 0,
            silent_only: false,
            events: 1000,
        },
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(response.agents.len(), AGENTS + 1);
    for agent in response.agents.iter().filter(|a| a.agent_id != "agent-99") {
        assert_eq!(
            (agent.batches, agent.stored, agent.dropped_total),
            (BATCHES, BATCHES * PER_BATCH as u64, 5),
            "{agent:?}"
        );
        assert_eq!(
            (agent.version.as_str(), agent.silent),
            ("9.9.9", false),
            "{agent:?}"
        );
        assert!(agent.last_heartbeat_unix_nanos >= agent.first_contact_unix_nanos);
    }
    let count = |kind: AgentEventKind| response.events.iter().filter(|e| e.kind() == kind).count();
    assert_eq!(count(AgentEventKind::FirstContact), AGENTS + 1);
    assert_eq!(
        count(AgentEventKind::Dropped),
        AGENTS,
        "one drop report per agent"
    );
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_marked_once_and_cleared_when_it_is_back() {
    let cluster = PgCluster::start();
    let db = cluster.database("silence");
    let silence = Duration::from_millis(600);
    let one = Replica::start(&db, silence).await;
    let two = Replica::start(&db, silence).await;

    let mut stream = AgentStream::open(&one.url).await;
    stream.send(heartbeat("quiet", "run-1", 0)).await.unwrap();
    drop(stream); // The sensor stops.

    let agents = |url: String| async move {
        collector::listing::list_agents(
            &url,
            ListAgentsRequest {
                limit: 0,
                silent_only: false,
                events: 100,
            },
            &Default::default(),
        )
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = agents(two.url.clone()).await;
        if response.agents[0].silent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never marked silent: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas check every 150 ms; give them a few more rounds to (not) double it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = agents(one.url.clone()).await;
    let silences: Vec<_> = response
        .events
        .iter()
        .filter(|e| e.kind() == AgentEventKind::Silent)
        .collect();
    assert_eq!(
        silences.len(),
        1,
        "recorded once across replicas: {silences:?}"
    );
    assert_eq!(silences[0].agent_id, "quiet");

    // It comes back through the other replica.
    let mut stream = AgentStream::open(&two.url).await;
    stream.send(heartbeat("quiet", "run-2", 0)).await.unwrap();
    let response = agents(one.url.clone()).await;
    assert!(!response.agents[0].silent, "{response:?}");
    assert_eq!(response.events[0].kind(), AgentEventKind::Back);
    one.stop().await;
    two.stop().await;
}

/// A `collector serve` child on PostgreSQL, killed if the test ends without stopping it.
struct Serve {
    child: std::process::Child,
    url: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Serve {
    /// The real binary, `serve --db <url>` on an ephemeral port (read from its JSON log).
    fn start(db: &str, config: &std::path::Path) -> Serve {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "", "--db", db])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn collector serve");
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = std::sync::mpsc::channel();
        // From here the child is killed and reaped on drop, whatever fails below.
        let mut serve = Serve {
            child,
            url: String::new(),
            log,
        };
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = serve
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("collector did not log that it serves");
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(
                !line.contains("s3cret"),
                "the password is never logged: {line}"
            );
            if entry["fields"]["message"] == "collector serving" {
                let listen = entry["fields"]["listen"].as_str().unwrap().to_owned();
                assert!(
                    entry["fields"]["db"]
                        .as_str()
                        .unwrap()
                        .starts_with("postgres://"),
                    "{line}"
                );
                serve.url = format!("http://{listen}");
                return serve;
            }
        }
    }

    /// SIGTERM; the exit status and the rest of the log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.log.try_iter().collect();
        (status, rest.join("\n"))
    }
}

/// The shipped binary, twice, on one PostgreSQL: both start (one migrates), a batch sent to one
/// and resent to the other is stored once, `collector agents` reads it from either, and both stop
/// cleanly on SIGTERM (the connection pools are closed off the async threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_from_postgres_and_stops_cleanly() {
    let cluster = PgCluster::start();
    // Trust authentication ignores the password; it is here to check that it is never logged.
    let db = cluster
        .database("binary")
        .replace("postgres@", "postgres:s3cret@");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "").unwrap();
    let (one, two) = {
        let (db, config) = (db.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                let a = scope.spawn(|| Serve::start(&db, &config));
                let b = scope.spawn(|| Serve::start(&db, &config));
                (a.join().unwrap(), b.join().unwrap())
            })
        })
        .await
        .unwrap()
    };

    let mut a = AgentStream::open(&one.url).await;
    let mut b = AgentStream::open(&two.url).await;
    a.send(heartbeat("bin-agent", "r", 0)).await.unwrap();
    let first = a.send(agent_batch(7, 1)).await.unwrap();
    let again = b.send(agent_batch(7, 1)).await.unwrap();
    assert_eq!((first.stored, again.stored), (PER_BATCH as u32, 0));

    let url = two.url.clone();
    let agents = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
            .arg("--config")
            .arg(&config)
            .args(["agents", "--json", "--server", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(agents.status.success(), "{agents:?}");
    let text = String::from_utf8(agents.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "bin-agent and agent-7: {text}");
    assert!(text.contains("\"agent_id\":\"bin-agent\"") && text.contains("\"version\":\"9.9.9\""));

    drop((a, b));
    for serve in [one, two] {
        let (status, log) = tokio::task::spawn_blocking(move || serve.stop())
            .await
            .unwrap();
        assert!(status.success(), "collector exited {status}: {log}");
        assert!(
            !log.contains("panicked") && !log.contains("s3cret"),
            "{log}"
        );
    }
}

/// Ingest rate through the real gRPC server, SQLite (one collector) against PostgreSQL (two
/// replicas, agents split between them). A measurement, not a check: run with
/// `cargo test --release -p collector --test store_replicas -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; prints deviations per second"]
async fn measure_ingest_rate() {
    const AGENTS: usize = 4;
    const BATCHES: u64 = 40;
    const SIZE: usize = 256;
    async fn run(urls: Vec<String>) -> (u64, Duration) {
        let started = Instant::now();
        let tasks: Vec<_> = (0..AGENTS)
            .map(|agent| {
                let url = urls[agent % urls.len()].clone();
                tokio::spawn(async move {
                    let mut stream = AgentStream::open(&url).await;
                    let mut stored = 0u64;
                    for sequence in 1..=BATCHES {
                        let deviations = (0..SIZE)
                            .map(|i| {
                                deviation(
                                    &format!("m{agent}-{sequence}-{i}"),
                                    1_700_000_000,
                                    &format!("unit:m{agent}.service"),
                                    DeviationKind::NewFileAccess,
                                    Severity::Low,
                                )
                            })
                            .collect();
                        let ack = stream
                            .send(batch(&format!("m{agent}"), sequence, deviations))
                            .await
                            .unwrap();
                        stored += u64::from(ack.stored);
                    }
                    stored
                })
            })
            .collect();
        let mut stored = 0;
        for task in tasks {
            stored += task.await.unwrap();
        }
        (stored, started.elapsed())
    }
    let (_dir, path) = common::temp_db();
    let sqlite = common::Collector::start(&path).await;
    let (n, t) = run(vec![sqlite.url()]).await;
    println!(
        "sqlite, 1 collector: {n} deviations in {t:?}: {:.0}/s",
        n as f64 / t.as_secs_f64()
    );
    sqlite.stop().await;

    let cluster = PgCluster::start();
    let db = cluster.database("measure");
    let (one, two) = tokio::join!(
        Replica::start(&db, Duration::from_secs(600)),
        Replica::start(&db, Duration::from_secs(600))
    );
    let (n, t) = run(vec![one.url.clone()]).await;
    println!(
        "postgres, 1 replica: {n} deviations in {t:?}: {:.0}/s",
        n as f64 / t.as_secs_f64()
    );
    let db2 = cluster.database("measure2");
    one.stop().await;
    two.stop().await;
    let (one, two) = tokio::join!(
        Replica::start(&db2, Duration::from_secs(600)),
        Replica::start(&db2, Duration::from_secs(600))
    );
    let (n, t) = run(vec![one.url.clone(), two.url.clone()]).await;
    println!(
        "postgres, 2 replicas: {n} deviations in {t:?}: {:.0}/s",
        n as f64 / t.as_secs_f64()
    );
    one.stop().await;
    two.stop().await;
}

/// A database outage: a batch that cannot be stored is answered `UNAVAILABLE` (so the agent
/// keeps it), and once PostgreSQL is back the same batch, resent, is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_and_doubles_nothing() {
    let cluster = PgCluster::start();
    let db = cluster.database("outage");
    let replica = Replica::start(&db, Duration::from_secs(600)).await;
    let mut agent = AgentStream::open(&replica.url).await;
    let ack = agent.send(agent_batch(1, 1)).await.unwrap();
    assert_eq!(ack.stored, PER_BATCH as u32);

    tokio::task::block_in_place(|| cluster.pause());
    agent.tx.send(agent_batch(1, 2)).await.unwrap();
    // The pool waits up to 10 s for a connection before giving up.
    let status = tokio::time::timeout(Duration::from_secs(30), agent.acks.message())
        .await
        .expect("no answer within 30 s while the database is down")
        .expect_err("nothing can be stored while the database is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(
        status.message().contains("cannot store batch 2"),
        "{status}"
    );

    tokio::task::block_in_place(|| cluster.resume());
    // As the agent does: reconnect and resend until acknowledged.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ack = loop {
        let mut agent = AgentStream::open(&replica.url).await;
        agent.tx.send(agent_batch(1, 2)).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(15), agent.acks.message()).await {
            Ok(Ok(Some(ack))) => break ack,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "never stored after the outage: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!((ack.sequence, ack.stored), (2, PER_BATCH as u32));
    let mut agent = AgentStream::open(&replica.url).await;
    let again = agent.send(agent_batch(1, 2)).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, PER_BATCH as u32));
    let stored = collector::query::list(&replica.url, ListDeviationsRequest::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 2 * PER_BATCH, "both batches, once");
    replica.stop().await;
}
