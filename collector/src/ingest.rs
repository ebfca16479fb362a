//! `sensor.v1.Ingest`: one task per agent stream stores each batch, then acknowledges it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1::{BatchAck, DeviationBatch, ingest_server::Ingest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataValue};

use crate::convert::unix_nanos;
use crate::limits::{AgentLimits, STREAM_IDLE_TIMEOUT, StreamSlot};
use crate::metrics::{IngestError, Metrics};
use crate::store::{BatchKey, Store};

/// The batch limits and the rejected-batch trailer of the contract (`proto::contract`, shared
/// with the agent). Transport decoding allows a little more ([`MAX_DECODE_BYTES`]) so that a
/// batch just over [`MAX_BATCH_BYTES`] gets a clear `RESOURCE_EXHAUSTED` naming its sequence
/// rather than a transport error.
pub use proto::contract::{MAX_BATCH_BYTES, MAX_BATCH_DEVIATIONS, REJECTED_SEQUENCE_TRAILER};
/// Largest message the gRPC layer decodes at all. tonic checks a message's length prefix before
/// buffering it, so a larger one costs nothing but the refusal.
pub const MAX_DECODE_BYTES: usize = proto::MAX_MESSAGE_BYTES + 64 * 1024;

/// The Ingest service.
pub struct IngestService {
    store: Arc<Store>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Which identity each stream must send as (`crate::auth`); none required by default.
    access: Arc<crate::auth::Access>,
    /// Streams and in-flight batches per agent identity (`crate::limits`).
    limits: Arc<AgentLimits>,
    /// A stream silent this long is closed.
    idle_timeout: Duration,
}

impl IngestService {
    /// A service whose metrics nobody reads.
    pub fn new(store: Arc<Store>, shutdown: CancellationToken) -> Self {
        Self::with_metrics(store, shutdown, Arc::new(Metrics::new()))
    }

    /// A service counting what it ingests in `metrics`.
    pub fn with_metrics(
        store: Arc<Store>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        IngestService {
            store,
            shutdown,
            metrics,
            access: Arc::default(),
            limits: Arc::default(),
            idle_timeout: STREAM_IDLE_TIMEOUT,
        }
    }

    /// Closes a stream that sends nothing for `idle` (default [`STREAM_IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// A service enforcing `access`: with TLS, batches must carry their certificate's identity.
    pub fn with_access(mut self, access: Arc<crate::auth::Access>) -> Self {
        self.access = access;
        self
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamDeviationsStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn stream_deviations(
        &self,
        request: Request<Streaming<DeviationBatch>>,
    ) -> Result<Response<Self::StreamDeviationsStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let identity = self.access.ingest_identity(&request)?;
        // Refused before anything is read: the stream's data never reaches a decoder.
        let slot = identity
            .as_deref()
            .map(|agent| self.limits.open_stream(agent))
            .transpose()
            .inspect_err(|status| {
                tracing::warn!(%peer, identity = identity.as_deref(), reason = status.message(), "agent stream refused");
            })?;
        let idle = self.idle_timeout;
        let inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(16);
        let store = Arc::clone(&self.store);
        let shutdown = self.shutdown.clone();
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let _connected = metrics.agent_connected();
            tracing::info!(%peer, "agent stream opened");
            let end = tokio::select! {
                end = receive(inbound, identity.as_deref(), slot.as_ref(), idle, &store, &metrics, &acks) => end,
                () = shutdown.cancelled() => Err(Status::unavailable("collector is shutting down")),
            };
            match end {
                Ok(()) => tracing::debug!(%peer, "agent stream closed"),
                Err(status) => {
                    tracing::info!(%peer, code = ?status.code(), message = status.message(), "agent stream ended");
                    // The agent may be gone already; nothing to do if it cannot hear this.
                    let _ = acks.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Stores and acknowledges batches until the agent closes its side. `Err` ends the stream with
/// that status.
async fn receive(
    mut inbound: Streaming<DeviationBatch>,
    identity: Option<&str>,
    slot: Option<&StreamSlot>,
    idle: Duration,
    store: &Arc<Store>,
    metrics: &Metrics,
    acks: &mpsc::Sender<Result<BatchAck, Status>>,
) -> Result<(), Status> {
    loop {
        let next = tokio::time::timeout(idle, inbound.message())
            .await
            .map_err(|_| {
                metrics.error(IngestError::Stream);
                Status::unavailable(format!(
                    "no batch or heartbeat for {idle:?}; idle stream closed (reconnect to send)"
                ))
            })?;
        let batch = match next {
            Ok(Some(mut batch)) => {
                let bound = crate::auth::check_batch(identity, &batch)
                    .and_then(|()| crate::auth::bind_hosts(identity, &mut batch));
                if let Err(status) = bound {
                    metrics.error(IngestError::Invalid);
                    return Err(status);
                }
                batch
            }
            Ok(None) => break,
            Err(status) => {
                metrics.error(IngestError::Stream);
                return Err(crate::decode_error::describe(status));
            }
        };
        // Held while the batch is stored: an agent's streams together store at most
        // `MAX_IN_FLIGHT_PER_AGENT` batches at once.
        let _in_flight = match slot {
            Some(slot) => Some(slot.in_flight().await),
            None => None,
        };
        let ack = if batch.sequence == 0 && batch.status.is_some() {
            heartbeat(store, metrics, batch).await?
        } else {
            store_batch(store, metrics, batch).await?
        };
        if acks.send(Ok(ack)).await.is_err() {
            break; // The agent hung up.
        }
    }
    Ok(())
}

/// Validates and stores one batch; answers its acknowledgement.
async fn store_batch(
    store: &Arc<Store>,
    metrics: &Metrics,
    batch: DeviationBatch,
) -> Result<BatchAck, Status> {
    validate(&batch).map_err(|status| {
        metrics.error(IngestError::Invalid);
        rejected(status, batch.sequence)
    })?;
    let store = Arc::clone(store);
    let received_ns = unix_nanos(SystemTime::now());
    let sequence = batch.sequence;
    let outcome = tokio::task::spawn_blocking(move || {
        let key = BatchKey {
            agent_id: &batch.agent_id,
            spool_id: &batch.spool_id,
            sequence: batch.sequence,
        };
        let outcome = store.store_batch(key, batch.deviations, received_ns);
        if let Ok(o) = &outcome {
            tracing::debug!(
                agent_id = batch.agent_id,
                sequence,
                stored = o.stored,
                duplicates = o.duplicates,
                resent = o.resent,
                "batch stored"
            );
        }
        outcome
    })
    .await
    .map_err(|e| {
        metrics.error(IngestError::Store);
        Status::internal(format!("storing batch {sequence} failed: {e}"))
    })?
    .map_err(|e| {
        metrics.error(IngestError::Store);
        tracing::error!(sequence, error = %e, "cannot store batch");
        Status::unavailable(format!("cannot store batch {sequence}: {e}"))
    })?;
    metrics.batch(&outcome);
    Ok(BatchAck {
        sequence,
        stored: outcome.stored,
        duplicates: outcome.duplicates,
    })
}

/// Validates and records a heartbeat (sequence 0 with a status): the agent's contact and status.
/// Answers an acknowledgement of sequence 0.
async fn heartbeat(
    store: &Arc<Store>,
    metrics: &Metrics,
    batch: DeviationBatch,
) -> Result<BatchAck, Status> {
    validate(&batch).map_err(|status| {
        metrics.error(IngestError::Invalid);
        rejected(status, 0)
    })?;
    let store = Arc::clone(store);
    let received_ns = unix_nanos(SystemTime::now());
    let agent_id = batch.agent_id.clone();
    let events = tokio::task::spawn_blocking(move || {
        let status = batch.status.unwrap_or_default();
        store.heartbeat(&batch.agent_id, &status, received_ns)
    })
    .await
    .map_err(|e| {
        metrics.error(IngestError::Store);
        Status::internal(format!("recording the heartbeat failed: {e}"))
    })?
    .map_err(|e| {
        metrics.error(IngestError::Store);
        tracing::error!(agent_id, error = %e, "cannot record a heartbeat");
        Status::unavailable(format!("cannot record the heartbeat: {e}"))
    })?;
    metrics.heartbeat(&events);
    for event in &events {
        crate::upkeep::log_event(event);
    }
    Ok(BatchAck {
        sequence: 0,
        stored: 0,
        duplicates: 0,
    })
}

/// Checks what the store relies on (the contract's [`proto::contract::check_batch`]). Errors
/// name the offending batch or deviation.
pub fn validate(batch: &DeviationBatch) -> Result<(), Status> {
    proto::contract::check_batch(batch).map_err(|problem| {
        if problem.is_too_large() {
            Status::resource_exhausted(problem.to_string())
        } else {
            Status::invalid_argument(problem.to_string())
        }
    })
}

/// Adds the rejected-sequence trailer to a validation error.
fn rejected(mut status: Status, sequence: u64) -> Status {
    if let Ok(value) = MetadataValue::try_from(sequence.to_string()) {
        status
            .metadata_mut()
            .insert(REJECTED_SEQUENCE_TRAILER, value);
    }
    status
}
