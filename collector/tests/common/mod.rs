//! A real collector on a loopback socket with a temporary database, and a real tonic client.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod attack;
pub mod postgres;
pub mod raw;
pub mod serve;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use collector::store::Store;
use proto::v1::{
    BatchAck, Deviation, DeviationBatch, DeviationKind, Novelty, Process, Severity, Workload,
    WorkloadKind, ingest_client::IngestClient, novelty::What,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// A running in-process collector.
pub struct Collector {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Collector {
    /// Starts the real server on 127.0.0.1:0 over the database at `db`.
    pub async fn start(db: &Path) -> Collector {
        let store = Store::open(db).unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector::server::serve(
            listener,
            Arc::new(store),
            shutdown.clone(),
        ));
        Collector {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits (with a deadline) until it has returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop within 10s")
            .expect("server task panicked")
            .expect("server returned an error");
    }
}

/// One agent stream: batches go in through `tx`, acks come out of `acks`.
pub struct AgentStream {
    pub tx: mpsc::Sender<DeviationBatch>,
    pub acks: Streaming<BatchAck>,
}

impl AgentStream {
    pub async fn open(url: &str) -> AgentStream {
        let mut client = IngestClient::connect(url.to_owned())
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let (tx, rx) = mpsc::channel(16);
        let acks = client
            .stream_deviations(ReceiverStream::new(rx))
            .await
            .expect("open stream")
            .into_inner();
        AgentStream { tx, acks }
    }

    /// Sends a batch and waits (with a deadline) for the next message on the ack stream.
    pub async fn send(&mut self, batch: DeviationBatch) -> Result<BatchAck, tonic::Status> {
        self.tx.send(batch).await.expect("stream closed");
        self.next().await
    }

    pub async fn next(&mut self) -> Result<BatchAck, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(10), self.acks.message())
            .await
            .expect("no answer within 10s")
            .map(|ack| ack.expect("ack stream ended"))
    }
}

pub fn batch(agent_id: &str, sequence: u64, deviations: Vec<Deviation>) -> DeviationBatch {
    DeviationBatch {
        agent_id: agent_id.to_owned(),
        sequence,
        deviations,
        spool_id: "spool-test".to_owned(),
        status: None,
    }
}

/// A complete deviation; `time_s` in seconds since the epoch.
pub fn deviation(
    id: &str,
    time_s: i64,
    workload: &str,
    kind: DeviationKind,
    severity: Severity,
) -> Deviation {
    Deviation {
        id: id.to_owned(),
        time_unix_nanos: time_s * 1_000_000_000,
        host: "host-1".to_owned(),
        workload: Some(Workload {
            id: workload.to_owned(),
            kind: WorkloadKind::GithubJob.into(),
            run_id: "7".to_owned(),
        }),
        kind: kind.into(),
        severity: severity.into(),
        summary: format!("{id} in {workload}"),
        process: Some(Process {
            pid: 4242,
            ppid: 1,
            executable: "/usr/bin/curl".to_owned(),
            argv: vec!["curl".to_owned(), "example.com".to_owned()],
            ..Process::default()
        }),
        signals: Vec::new(),
        novelty: Some(Novelty {
            what: Some(What::Executable("/usr/bin/curl".to_owned())),
        }),
        ..Deviation::default()
    }
}

/// Every deviation `store` holds, newest first, as it reads them back.
pub fn stored_deviations(store: &Store) -> Vec<Deviation> {
    store
        .list(&proto::v1::ListDeviationsRequest::default())
        .expect("list")
        .into_iter()
        .map(|d| d.deviation.expect("deviation"))
        .collect()
}

/// A temporary directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("collector.db");
    (dir, db)
}
