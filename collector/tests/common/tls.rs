//! A mutual-TLS collector on loopback with certificates from `collector certs`' code, and the
//! clients the security tests use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use collector::certs::{CertsPlan, create};
use collector::credentials::ClientArgs;
use collector::metrics::Metrics;
use collector::query::list_with;
use collector::server::{Security, SecuritySettings, serve_secure};
use collector::store::Store;
use collector::tls::ServerTlsFiles;
use proto::v1::{
    BatchAck, DeviationBatch, DeviationKind, ListDeviationsRequest, Severity,
    ingest_client::IngestClient,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::{batch, deviation};

pub const TOKEN: &str = "query-token-0123456789";
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A deployment's certificates: the server, agents a and b, query client "ops".
pub fn deployment(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    create(&CertsPlan {
        dir: certs.clone(),
        server_names: vec!["collector.test".to_owned()],
        agents: vec!["agent-a".to_owned(), "agent-b".to_owned()],
        query_clients: vec!["ops".to_owned()],
        validity: Duration::from_secs(86_400),
    })
    .expect("create certificates");
    certs
}

/// A TLS collector on loopback requiring client certificates from `certs/ca.pem`.
pub struct TlsCollector {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TlsCollector {
    pub async fn start(db: &Path, certs: &Path) -> TlsCollector {
        Self::start_on(Store::open(db).expect("open store"), certs).await
    }

    /// A TLS collector over `store` (SQLite or PostgreSQL).
    pub async fn start_on(store: Store, certs: &Path) -> TlsCollector {
        Self::start_scoped(store, certs, &[]).await
    }

    /// As [`TlsCollector::start_on`], with `baseline_scopes`.
    pub async fn start_scoped(store: Store, certs: &Path, scopes: &[String]) -> TlsCollector {
        let token_file = certs.join("query-tokens");
        std::fs::write(&token_file, format!("# test\n{TOKEN}\n")).unwrap();
        let settings = SecuritySettings {
            tls: Some(ServerTlsFiles {
                cert: certs.join("server.pem"),
                key: certs.join("server.key"),
                client_ca: certs.join("ca.pem"),
            }),
            query_token_file: Some(token_file),
            query_clients: vec!["ops".to_owned()],
            baseline_quorum: None,
            baseline_scopes: scopes.to_vec(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let security = Security::load(&settings, addr).expect("security settings load");
        let store = Arc::new(store);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_secure(
            listener,
            store,
            Arc::new(Metrics::new()),
            security,
            shutdown.clone(),
        ));
        TlsCollector {
            addr,
            shutdown,
            task,
        }
    }

    /// The URL by the name every server certificate carries.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server result");
    }
}

/// Credentials trusting `certs/ca.pem`, presenting `certs/<who>.pem` if given.
pub fn client(certs: &Path, who: Option<&str>) -> ClientArgs {
    ClientArgs {
        server_ca: Some(certs.join("ca.pem")),
        client_cert: who.map(|w| certs.join(format!("{w}.pem"))),
        client_key: who.map(|w| certs.join(format!("{w}.key"))),
        ..ClientArgs::default()
    }
}

pub async fn connect(url: &str, credentials: &ClientArgs) -> Result<Channel, String> {
    let endpoint = credentials
        .endpoint(url)
        .expect("endpoint")
        .connect_timeout(DEADLINE);
    endpoint
        .connect()
        .await
        .map_err(|e| collector::one_line(&e))
}

/// An agent stream over `channel`.
pub struct Agent {
    pub tx: mpsc::Sender<DeviationBatch>,
    pub acks: Streaming<BatchAck>,
}

impl Agent {
    pub async fn open(channel: Channel) -> Result<Agent, Status> {
        let (tx, rx) = mpsc::channel(4);
        let acks = tokio::time::timeout(
            DEADLINE,
            IngestClient::new(channel).stream_deviations(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream opens or fails in time")?
        .into_inner();
        Ok(Agent { tx, acks })
    }

    pub async fn send(&mut self, batch: DeviationBatch) -> Result<BatchAck, Status> {
        self.tx.send(batch).await.expect("stream open");
        tokio::time::timeout(DEADLINE, self.acks.message())
            .await
            .expect("answer in time")?
            .ok_or_else(|| Status::unknown("ack stream ended"))
    }
}

/// A batch of one deviation from `agent` (its host too, as agents send).
pub fn one(id: &str, agent: &str, sequence: u64) -> DeviationBatch {
    let mut deviation = deviation(
        id,
        1_700_000_000 + sequence as i64,
        "unit:build.service",
        DeviationKind::NewExecutable,
        Severity::High,
    );
    deviation.host = agent.to_owned();
    batch(agent, sequence, vec![deviation])
}

/// Every stored deviation, asked with the query token over an agent's certificate.
pub async fn stored(url: &str, certs: &Path) -> Vec<(String, String)> {
    let credentials = ClientArgs {
        token: Some(TOKEN.to_owned()),
        ..client(certs, Some("agent-agent-a"))
    };
    list_with(url, ListDeviationsRequest::default(), &credentials)
        .await
        .unwrap_or_else(|e| panic!("query with token: {e}"))
        .into_iter()
        .map(|d| (d.agent_id, d.deviation.expect("body").id))
        .collect()
}
