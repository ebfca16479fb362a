//! Delivery of deviations to the collector: a crash-safe spool on disk and one long-lived
//! `sensor.v1.Ingest/StreamDeviations` stream.
//!
//! [`Transport::send`] appends to the spool (`spool`) and wakes the delivery task (`deliver`),
//! which groups deviations into numbered batches, streams them and deletes each batch only when
//! the collector has acknowledged it. When the collector is down the spool grows (up to
//! `spool_max_bytes`) and everything is resent, in order, once it is back; the collector drops
//! what it already stored. Nothing here blocks on the network.

mod deliver;
mod heartbeat;
mod record;
mod spool;
#[cfg(test)]
mod tests;
mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message;
use proto::v1::Deviation;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use deliver::endpoint;
use spool::Spool;
pub use tls::ClientTls;

/// Default largest number of deviations in one batch.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// Default longest time a deviation waits before its batch is sent.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Default size limit of the spool.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The collector refuses batches of more deviations than this (the contract's limit).
const MAX_BATCH_LIMIT: usize = proto::contract::MAX_BATCH_DEVIATIONS;
/// A batch is sealed once its deviations take this many bytes: half the contract's limit, room
/// for the batch's own fields and a last deviation of up to `MAX_DEVIATION_BYTES`.
const MAX_BATCH_BYTES: u64 = (proto::contract::MAX_BATCH_BYTES / 2) as u64;
/// Default time between two heartbeats to the collector.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = heartbeat::DEFAULT_INTERVAL;
/// Spool-full errors are logged at most this often (with the running count).
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where and how to deliver deviations.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The collector, e.g. "http://127.0.0.1:50051".
    pub collector_url: String,
    /// The agent's state directory; the spool lives in `state_dir/spool`.
    pub state_dir: PathBuf,
    /// Identity of this agent at the collector (the host name by default).
    pub agent_id: String,
    /// Most deviations per batch (1..=10000).
    pub max_batch: usize,
    /// Longest time a deviation waits for its batch to fill before it is sent. Only while a
    /// batch is awaiting its acknowledgement: on an idle stream a deviation is sent at once.
    pub flush_interval: Duration,
    /// Size limit of the spool; deviations beyond it are dropped (counted and logged).
    pub spool_max_bytes: u64,
    /// Time between two heartbeats (agent status, so the collector knows this agent is alive
    /// and what it dropped).
    pub heartbeat_interval: Duration,
    /// TLS files for an `https://` collector.
    pub tls: Option<ClientTls>,
}

impl TransportConfig {
    /// A configuration with the defaults: host name as agent id, batches of 256, 200 ms flush,
    /// 256 MiB spool.
    pub fn new(collector_url: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        TransportConfig {
            collector_url: collector_url.into(),
            state_dir: state_dir.into(),
            agent_id: default_agent_id(),
            max_batch: DEFAULT_MAX_BATCH,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls: None,
        }
    }
}

/// This machine's host name (as `uname -n`), or "localhost" if it cannot be read.
pub fn default_agent_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Counters for logs and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Deviations in the spool, not yet acknowledged by the collector.
    pub unacknowledged: u64,
    /// Deviations acknowledged by the collector since start.
    pub acknowledged: u64,
    /// Deviations lost since start: spool full, or refused by the collector as invalid.
    pub dropped: u64,
    /// Whether a stream to the collector is open.
    pub connected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid collector URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    #[error("spool directory {path} is not usable: {source}")]
    SpoolIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool file {path} is corrupt ({reason}); move it away to continue without it")]
    SpoolCorrupt { path: PathBuf, reason: String },
    #[error("spool {path} is in use by another agent")]
    SpoolLocked { path: PathBuf },
    #[error("deviation {id:?} cannot be sent: {reason}")]
    InvalidDeviation { id: String, reason: String },
    #[error("Transport::start must be called within a tokio runtime")]
    NoRuntime,
}

/// Reads how many kernel records' bytes wait for the agent (see `heartbeat`).
pub type QueueDepth = Box<dyn Fn() -> u64 + Send + Sync>;

/// Cloneable handle to the transport.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// State shared by the handles and the delivery task.
struct Inner {
    spool: Mutex<Spool>,
    /// Wakes the delivery task after an append.
    wake: Notify,
    agent_id: String,
    /// The spool's identity, sent with every batch.
    spool_id: String,
    flush_interval: Duration,
    acknowledged: AtomicU64,
    dropped: AtomicU64,
    connected: AtomicBool,
    heartbeat_interval: Duration,
    /// Kernel records lost since start, as last told by [`Transport::set_kernel_lost`].
    kernel_lost: AtomicU64,
    /// Pipeline liveness, as last told by [`Transport::set_liveness`].
    last_event_unix_nanos: AtomicI64,
    events_decoded: AtomicU64,
    /// Reads the pipeline's backlog when a heartbeat is built (see [`Transport::set_queue_depth`]).
    queue_depth: std::sync::OnceLock<QueueDepth>,
    /// When a spool-full error was last logged.
    last_drop_log: Mutex<Option<Instant>>,
}

impl Inner {
    fn spool(&self) -> MutexGuard<'_, Spool> {
        // The spool's invariants hold between its methods; a panic elsewhere cannot break them.
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts dropped deviations; logs an error at most every [`DROP_LOG_INTERVAL`].
    fn count_dropped(&self, count: u64, why: &str) {
        let total = self.dropped.fetch_add(count, Ordering::Relaxed) + count;
        // Kept in the spool until a heartbeat tells the collector, across restarts.
        self.spool().add_dropped(count);
        let mut last = self
            .last_drop_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::error!(
                dropped = count,
                dropped_total = total,
                "deviations dropped: {why}"
            );
        }
    }
}

impl Transport {
    /// Validates the URL (clear error if malformed), opens/recovers the spool (clear error if
    /// corrupt or not writable), spawns the delivery task on the current tokio runtime. Does NOT
    /// require the collector to be up.
    pub fn start(
        config: TransportConfig,
        cancel: CancellationToken,
    ) -> Result<(Transport, tokio::task::JoinHandle<()>), TransportError> {
        let endpoint = deliver::endpoint(&config.collector_url, config.tls.as_ref())?;
        if config.agent_id.is_empty() {
            return Err(TransportError::InvalidConfig(
                "agent_id is empty".to_owned(),
            ));
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&config.max_batch) {
            return Err(TransportError::InvalidConfig(format!(
                "max_batch is {}, must be 1..={MAX_BATCH_LIMIT}",
                config.max_batch
            )));
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let spool_dir = config.state_dir.join("spool");
        let spool = Spool::open(
            &spool_dir,
            config.max_batch,
            MAX_BATCH_BYTES,
            config.spool_max_bytes,
        )?;
        tracing::info!(
            collector = config.collector_url,
            spool = %spool_dir.display(),
            unacknowledged = spool.unacknowledged(),
            "transport started"
        );
        let inner = Arc::new(Inner {
            spool_id: spool.id().to_owned(),
            spool: Mutex::new(spool),
            wake: Notify::new(),
            agent_id: config.agent_id,
            flush_interval: config.flush_interval,
            acknowledged: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            heartbeat_interval: config.heartbeat_interval,
            kernel_lost: AtomicU64::new(0),
            last_event_unix_nanos: AtomicI64::new(0),
            events_decoded: AtomicU64::new(0),
            queue_depth: std::sync::OnceLock::new(),
            last_drop_log: Mutex::new(None),
        });
        let task = runtime.spawn(deliver::run(Arc::clone(&inner), endpoint, cancel));
        Ok((Transport { inner }, task))
    }

    /// Durably appends deviations to the spool (so they survive an agent crash/restart) and wakes
    /// the sender. Never blocks on the network.
    ///
    /// All or nothing for invalid input: if any deviation lacks an id or a workload, or is larger
    /// than 1 MiB, nothing is spooled and the error names it. When the spool is full the
    /// deviations that do not fit are dropped, counted in [`TransportStats::dropped`] and logged;
    /// that is not an error for the caller.
    pub fn send(&self, deviations: Vec<Deviation>) -> Result<(), TransportError> {
        if deviations.is_empty() {
            return Ok(());
        }
        let mut payloads = Vec::with_capacity(deviations.len());
        for deviation in &deviations {
            validate(deviation)?;
            payloads.push(deviation.encode_to_vec());
        }
        let appended = self.inner.spool().append(&payloads)?;
        if appended.dropped > 0 {
            self.inner.count_dropped(
                appended.dropped,
                "spool full (collector unreachable for long?)",
            );
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Records the kernel's lost-record total, reported in the next heartbeats.
    pub fn set_kernel_lost(&self, total: u64) {
        self.inner.kernel_lost.store(total, Ordering::Relaxed);
    }

    /// Records the pipeline's liveness, reported in the next heartbeats: when it last decoded
    /// a kernel record (ns since the epoch) and how many it decoded since the agent started. A
    /// stalled event loop stops telling, so its heartbeats show the stall.
    pub fn set_liveness(&self, last_event_unix_nanos: i64, events_decoded_total: u64) {
        let inner = &self.inner;
        inner
            .last_event_unix_nanos
            .store(last_event_unix_nanos, Ordering::Relaxed);
        inner
            .events_decoded
            .store(events_decoded_total, Ordering::Relaxed);
    }

    /// Where heartbeats read `event_queue_depth` from, when they are built: true even when the
    /// event loop is stuck (set once; later calls are ignored).
    pub fn set_queue_depth(&self, depth: QueueDepth) {
        let _ = self.inner.queue_depth.set(depth);
    }

    /// Snapshot for logs/status.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            unacknowledged: self.inner.spool().unacknowledged(),
            acknowledged: self.inner.acknowledged.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            connected: self.inner.connected.load(Ordering::Relaxed),
        }
    }
}

/// What the collector would refuse, refused here where the caller can still see why (the
/// contract's [`proto::contract::check_deviation`]).
fn validate(deviation: &Deviation) -> Result<(), TransportError> {
    proto::contract::check_deviation(deviation).map_err(|problem| {
        TransportError::InvalidDeviation {
            id: deviation.id.clone(),
            reason: problem.to_string(),
        }
    })
}
