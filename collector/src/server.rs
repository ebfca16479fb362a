//! The gRPC server: the Ingest, Query and Baselines services, standard health checking
//! (`grpc.health.v1.Health`) and server reflection (`grpc.reflection.v1` and `v1alpha`) over one
//! listener, optionally with mutual TLS, stopped by a token. Who may call what is in
//! [`crate::auth`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::v1::{
    ListDeviationsRequest, ListDeviationsResponse,
    baselines_server::BaselinesServer,
    ingest_server::IngestServer,
    query_server::{Query, QueryServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::auth::{Access, AuthError};
use crate::baselines::BaselinesService;
use crate::ingest::{IngestService, MAX_DECODE_BYTES};
use crate::limits;
use crate::metrics::Metrics;
use crate::scopes::{BaselineScopes, ScopeError};
use crate::store::Store;
use crate::tls::{ServerTlsFiles, TlsError};

/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest query response sent (queries return at most `store::MAX_QUERY_LIMIT` deviations).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// A client gets this long to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the endpoint is secured: TLS (client certificates required), the access rules, and how
/// many agents a shared baseline needs before it is served.
#[derive(Clone)]
pub struct Security {
    pub tls: Option<ServerTlsConfig>,
    pub access: Arc<Access>,
    pub baseline_quorum: u32,
    pub baseline_scopes: Arc<BaselineScopes>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            tls: None,
            access: Arc::default(),
            baseline_quorum: crate::baselines::DEFAULT_QUORUM,
            baseline_scopes: Arc::default(),
        }
    }
}

/// The security settings of `collector serve`, as configured.
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    pub tls: Option<ServerTlsFiles>,
    pub query_token_file: Option<PathBuf>,
    pub query_clients: Vec<String>,
    /// `None`: [`crate::baselines::DEFAULT_QUORUM`].
    pub baseline_quorum: Option<u32>,
    /// `AGENTS=WORKLOAD[,WORKLOAD...]`: which shared baselines each agent may touch.
    pub baseline_scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "refusing to serve plain text on {listen}, which is not a loopback address: agents' \
         data and identities would cross the network unprotected. Set tls_cert, tls_key and \
         tls_client_ca (--tls-cert, --tls-key, --tls-client-ca; `collector certs` makes them), \
         or listen on 127.0.0.1"
    )]
    PlaintextOffLoopback { listen: SocketAddr },
    #[error("query_clients is set but TLS is not: query clients are known by their certificates")]
    QueryClientsWithoutTls,
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(
        "baseline_scopes is set but TLS is not: scopes name agents by their certificates \
         (without TLS any client can claim any agent)"
    )]
    ScopesWithoutTls,
}

impl Security {
    /// Plain text, every agent_id accepted, queries open: for loopback and tests.
    pub fn plaintext() -> Self {
        Security::default()
    }

    /// Reads the files `settings` name and checks them against the address served.
    pub fn load(settings: &SecuritySettings, listen: SocketAddr) -> Result<Self, SecurityError> {
        let tokens = match &settings.query_token_file {
            Some(path) => crate::auth::read_tokens(path)?,
            None => Vec::new(),
        };
        let tls = match &settings.tls {
            Some(files) => Some(files.load()?),
            None if !listen.ip().is_loopback() => {
                return Err(SecurityError::PlaintextOffLoopback { listen });
            }
            None if !settings.query_clients.is_empty() => {
                return Err(SecurityError::QueryClientsWithoutTls);
            }
            None => None,
        };
        let scopes = BaselineScopes::parse(&settings.baseline_scopes)?;
        if scopes.restricted() && tls.is_none() {
            return Err(SecurityError::ScopesWithoutTls);
        }
        let access = Access::new(tls.is_some(), tokens, settings.query_clients.clone());
        Ok(Security {
            baseline_scopes: Arc::new(scopes),
            tls,
            access: Arc::new(access),
            baseline_quorum: settings
                .baseline_quorum
                .unwrap_or(crate::baselines::DEFAULT_QUORUM),
        })
    }

    /// Warns about what these settings leave open (logged once serving, so that a refused start
    /// prints only its error).
    pub fn log_warnings(&self, listen: SocketAddr) {
        if self.tls.is_none() {
            tracing::warn!(
                %listen,
                "serving gRPC in plain text (loopback only): no TLS, agent identities are not \
                 checked; set tls_cert, tls_key and tls_client_ca to require certificates"
            );
        }
        if self.access.queries_open() {
            tracing::warn!(
                "the Query service answers without authentication (plain text on loopback, no \
                 query_token_file)"
            );
        } else if !self.access.queries_possible() {
            tracing::warn!(
                "no query_token_file and no query_clients: the Query service refuses every caller"
            );
        }
    }
}

/// Serves both services on `listener` until `shutdown` is cancelled, then lets open streams end
/// (each agent stream is told `UNAVAILABLE`) for up to a few seconds.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_with_metrics(listener, store, Arc::new(Metrics::new()), shutdown).await
}

/// As [`serve`], counting what is ingested in `metrics`.
pub async fn serve_with_metrics(
    listener: TcpListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_secure(listener, store, metrics, Security::plaintext(), shutdown).await
}

/// As [`serve_with_metrics`], secured by `security`.
pub async fn serve_secure(
    listener: TcpListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    security: Security,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let access = Arc::clone(&security.access);
    let ingest = IngestServer::new(
        IngestService::with_metrics(Arc::clone(&store), shutdown.clone(), metrics)
            .with_access(Arc::clone(&access)),
    )
    .max_decoding_message_size(MAX_DECODE_BYTES);
    let baselines = BaselinesServer::new(
        BaselinesService::new(Arc::clone(&store), Arc::clone(&access))
            .with_quorum(security.baseline_quorum)
            .with_scopes(Arc::clone(&security.baseline_scopes)),
    )
    .max_decoding_message_size(crate::baselines::MAX_DECODE_BYTES);
    let query =
        QueryServer::new(QueryService { store }).max_encoding_message_size(MAX_RESPONSE_BYTES);
    let query = InterceptedService::new(query, move |request: Request<()>| {
        if let Err(status) = access.authorize_query(&request) {
            // An audit trail of refused callers; legitimate clients are not logged.
            tracing::info!(
                peer = ?request.remote_addr(),
                identity = crate::tls::peer_identity(&request),
                reason = status.message(),
                "query refused"
            );
            return Err(status);
        }
        Ok(request)
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    health.set_serving::<QueryServer<QueryService>>().await;
    health
        .set_serving::<BaselinesServer<BaselinesService>>()
        .await;
    // Reflection over `sensor.v1` and health, in both versions tools ask for (grpcurl tries v1,
    // then v1alpha). Both descriptor sets are embedded at build time; `proto`'s tests decode its.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // Bounds per connection and for silent peers (see `crate::limits`).
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(limits::KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(limits::MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(limits::STREAM_WINDOW)
        .initial_connection_window_size(limits::CONNECTION_WINDOW);
    if let Some(tls) = security.tls {
        builder = builder.tls_config(tls.timeout(TLS_HANDSHAKE_TIMEOUT))?;
    }
    let server = builder
        .add_service(ingest)
        .add_service(query)
        .add_service(baselines)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown.cancelled() => {}
    }
    // Watchers (load balancers, probes) learn at once that this collector is going away.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<IngestServer<IngestService>>()
        .await;
    health.set_not_serving::<QueryServer<QueryService>>().await;
    health
        .set_not_serving::<BaselinesServer<BaselinesService>>()
        .await;
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                "connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them"
            );
            Ok(())
        }
    }
}

/// The Query service.
struct QueryService {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_deviations(
        &self,
        request: Request<ListDeviationsRequest>,
    ) -> Result<Response<ListDeviationsResponse>, Status> {
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        let deviations = tokio::task::spawn_blocking(move || store.list(&request))
            .await
            .map_err(|e| Status::internal(format!("query failed: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, "query failed");
                Status::internal(format!("query failed: {e}"))
            })?;
        Ok(Response::new(ListDeviationsResponse { deviations }))
    }

    async fn list_workloads(
        &self,
        request: Request<proto::v1::ListWorkloadsRequest>,
    ) -> Result<Response<proto::v1::ListWorkloadsResponse>, Status> {
        let store = Arc::clone(&self.store);
        crate::listing::workloads(store, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_incidents(
        &self,
        request: Request<proto::v1::ListIncidentsRequest>,
    ) -> Result<Response<proto::v1::ListIncidentsResponse>, Status> {
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        let answer =
            tokio::task::spawn_blocking(move || crate::incidents::query::answer(&store, &request))
                .await
                .map_err(|e| Status::internal(format!("query failed: {e}")))?
                .map_err(|e| {
                    tracing::error!(error = %e, "incidents query failed");
                    Status::internal(format!("query failed: {e}"))
                })?;
        Ok(Response::new(answer))
    }

    async fn list_agents(
        &self,
        request: Request<proto::v1::ListAgentsRequest>,
    ) -> Result<Response<proto::v1::ListAgentsResponse>, Status> {
        let store = Arc::clone(&self.store);
        crate::listing::agents(store, request.into_inner())
            .await
            .map(Response::new)
    }
}
