//! The gRPC server: the Ingest and Query services over one listener, stopped by a token.

use std::sync::Arc;
use std::time::Duration;

use proto::v1::{
    ListDeviationsRequest, ListDeviationsResponse,
    ingest_server::IngestServer,
    query_server::{Query, QueryServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::ingest::{IngestService, MAX_DECODE_BYTES};
use crate::metrics::Metrics;
use crate::store::Store;

/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest query response sent (queries return at most `store::MAX_QUERY_LIMIT` deviations).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

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
    let ingest = IngestServer::new(IngestService::with_metrics(
        Arc::clone(&store),
        shutdown.clone(),
        metrics,
    ))
    .max_decoding_message_size(MAX_DECODE_BYTES);
    let query =
        QueryServer::new(QueryService { store }).max_encoding_message_size(MAX_RESPONSE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown.cancelled() => {}
    }
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
