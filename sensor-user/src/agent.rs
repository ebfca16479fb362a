//! The agent's main loop: kernel → decode → attribute → baseline/deviation → transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attribute::Attributor;
use crate::baseline::{Engine, LearningConfig};
use crate::exe_hash::ExecutableHashes;
use crate::kernel::{self, BootClock, Sensor};
use crate::metrics::Metrics;
use crate::status;
use crate::transport::{Transport, TransportConfig};

/// Everything `sensor run` needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub collector_url: String,
    pub state_dir: PathBuf,
    pub learning: LearningConfig,
    pub host: String,
    pub cgroup_root: PathBuf,
    /// How container workloads are named, and where from.
    pub containers: crate::attribute::ContainerConfig,
    pub load: kernel::LoadOptions,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Which paths are credential stores.
    pub secrets: crate::deviation::SecretPaths,
    /// Longest wait of a deviation for its batch.
    pub flush_interval: Duration,
    /// Time between two heartbeats to the collector.
    pub heartbeat_interval: Duration,
    /// Append the id of every spooled deviation to this file (`--record-deviations`).
    pub record_deviations: Option<PathBuf>,
    /// TLS files for an `https://` collector.
    pub collector_tls: Option<crate::transport::ClientTls>,
    /// Report learnt baselines to the collector and fetch merged ones (`baseline_sync`).
    pub share_baselines: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("state directory {path} is not usable: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Baseline(#[from] crate::baseline::BaselineError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error("cannot open the --record-deviations file {path}: {source}")]
    Record {
        path: String,
        source: std::io::Error,
    },
}

/// How often baselines are written and counters logged.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// How often the metrics read from the kernel and the transport are refreshed.
const METRICS_REFRESH: Duration = Duration::from_secs(1);

/// Runs until `cancel` fires, then flushes baselines and the delivery queue.
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    // Held for the agent's life: one agent per state directory, and `sensor baseline` hands
    // its changes to this agent instead of editing files behind its back.
    let _baseline_lock =
        crate::baseline::requests::lock_for_agent(&config.state_dir, Duration::from_secs(5))?;
    let mut engine = Engine::open(
        &config.state_dir,
        config.learning.clone(),
        config.host.clone(),
    )?
    .with_secret_paths(config.secrets.clone());
    let (transport, delivery) = Transport::start(
        TransportConfig {
            collector_url: config.collector_url.clone(),
            state_dir: config.state_dir.clone(),
            agent_id: config.host.clone(),
            max_batch: 256,
            flush_interval: config.flush_interval,
            heartbeat_interval: config.heartbeat_interval,
            spool_max_bytes: 256 * 1024 * 1024,
            tls: config.collector_tls.clone(),
        },
        cancel.clone(),
    )?;
    let (sync, mut adopt, sync_task) =
        crate::baseline_sync::BaselineSync::start(config.share_baselines.then(|| {
            crate::baseline_sync::SyncConfig {
                collector_url: config.collector_url.clone(),
                tls: config.collector_tls.clone(),
                agent_id: config.host.clone(),
                learning_runs: config.learning.learning_runs,
            }
        }))?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, Arc::clone(&metrics), cancel.clone()).await;
    }
    let mut sensor = Sensor::load(&config.load)?;
    let mut attributor =
        Attributor::new(&config.cgroup_root).with_containers(config.containers.clone());
    attributor.seed_from_proc();
    let clock = BootClock::now();
    tracing::info!(
        programs = sensor.attached.len(),
        collector = %config.collector_url,
        state_dir = %config.state_dir.display(),
        "sensor ready"
    );
    status::write(&config, &sensor, &engine, &transport.stats(), 0);

    metrics.workloads(&engine.summary());
    refresh_metrics(&metrics, &sensor, &transport);

    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut refresh = tokio::time::interval(METRICS_REFRESH);
    let mut last_counters = sensor.counters();
    let mut events: u64 = 0;
    let mut losses = LossWatch::new(&sensor);
    let mut hashes = ExecutableHashes::default();
    let mut record = match &config.record_deviations {
        Some(path) => Some(
            DeviationRecord::open(path).map_err(|source| AgentError::Record {
                path: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ready = sensor.ready() => {
                ready?;
                let mut found = Vec::new();
                events += sensor.drain(|record| match kernel::decode(record, &clock) {
                    Ok(event) => {
                        metrics.event(&event.kind);
                        found.extend(engine.observe(&attributor.attribute(event)));
                    }
                    Err(e) => {
                        metrics.undecodable();
                        tracing::warn!(error = %e, "undecodable kernel record");
                    }
                }) as u64;
                deliver(&transport, &sensor, &mut losses,
                    &mut hashes, &metrics, found, record.as_mut());
                sync.fetch(engine.baselines_to_fetch());
            }
            Some(merged) = adopt.recv() => {
                engine.adopt(&merged);
            }
            _ = tick.tick() => {
                sync.report(engine.baselines_to_report());
                // Deviations held past their budget go out once their kind is quiet.
                let aggregates = engine.flush_aggregates(Some(std::time::SystemTime::now()));
                deliver(&transport, &sensor, &mut losses,
                    &mut hashes, &metrics, aggregates, record.as_mut());
                housekeeping(&mut engine, &sensor, &mut last_counters, events);
                status::write(&config, &sensor, &engine, &transport.stats(), events);
                metrics.workloads(&engine.summary());
            }
            _ = refresh.tick() => {
                refresh_metrics(&metrics, &sensor, &transport);
                engine.serve_requests();
            }
        }
    }

    // Drain what the kernel already wrote, keep it, then let delivery flush.
    let mut found = Vec::new();
    sensor.drain(|record| {
        if let Ok(event) = kernel::decode(record, &clock) {
            metrics.event(&event.kind);
            found.extend(engine.observe(&attributor.attribute(event)));
        }
    });
    found.extend(engine.flush_aggregates(None));
    deliver(
        &transport,
        &sensor,
        &mut losses,
        &mut hashes,
        &metrics,
        found,
        record.as_mut(),
    );
    status::write(&config, &sensor, &engine, &transport.stats(), events);
    drop(sensor);
    if let Err(e) = engine.persist() {
        tracing::error!(error = %e, "could not save baselines at shutdown");
    }
    // An ephemeral runner's agent stops with its job: what it learnt goes to the collector now.
    sync.report(engine.baselines_to_report());
    drop(sync);
    let _ = sync_task.await;
    let _ = delivery.await;
    tracing::info!("sensor stopped");
    Ok(())
}

/// `--record-deviations`: the agent's own account of what it produced, for tests that check
/// delivery end to end. Text, appended by each agent process in turn:
///
/// - `start`: an agent process opened the file;
/// - `spooling <id>`: one line per deviation, written before they are handed to the spool;
/// - `spooled` / `failed`: the spool took (or refused) the `spooling` lines above it.
///
/// A group of `spooling` lines followed by `start` or the end of the file was interrupted (the
/// agent was killed while spooling it): those deviations may or may not be in the spool. Each
/// line is one `write` with no buffering in the process, so a SIGKILL loses nothing written.
/// Errors are logged, never fatal: it is a debugging aid.
struct DeviationRecord {
    file: std::fs::File,
    path: PathBuf,
}

impl DeviationRecord {
    fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        std::io::Write::write_all(&mut file, b"start\n")?;
        Ok(DeviationRecord {
            file,
            path: path.to_owned(),
        })
    }

    fn write(&mut self, text: &str) {
        use std::io::Write as _;
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record deviations");
        }
    }

    fn spooling(&mut self, ids: impl Iterator<Item = String>) {
        let text: String = ids.map(|id| format!("spooling {id}\n")).collect();
        self.write(&text);
    }
}

/// How long after the kernel lost records a deviation is marked `overlapped-loss`: evidence that
/// would qualify it (an earlier write, the DNS answer, the parent's exec) may be missing.
const LOSS_WINDOW: Duration = Duration::from_secs(30);

/// Remembers when the kernel last lost records.
struct LossWatch {
    total: u64,
    at: Option<std::time::Instant>,
}

impl LossWatch {
    fn new(sensor: &Sensor) -> Self {
        LossWatch {
            total: lost_total(sensor),
            at: None,
        }
    }

    /// Whether records were lost within [`LOSS_WINDOW`] (reads the counters now).
    fn recent(&mut self, sensor: &Sensor) -> bool {
        let total = lost_total(sensor);
        if total > self.total {
            self.total = total;
            self.at = Some(std::time::Instant::now());
        }
        self.at.is_some_and(|at| at.elapsed() < LOSS_WINDOW)
    }
}

pub(crate) fn lost_total(sensor: &Sensor) -> u64 {
    sensor
        .counters()
        .iter()
        .filter(|(name, _)| name.starts_with("lost_"))
        .map(|(_, n)| n)
        .sum()
}

/// Serves metrics on `addr` until `cancel`. A port that cannot be bound is logged and the agent
/// runs on without metrics: watching the host matters more than its dashboard.
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>, cancel: CancellationToken) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(url = %format!("http://{addr}/metrics"), "serving metrics");
            tokio::spawn(crate::metrics::serve(listener, metrics, cancel));
        }
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve metrics; running without them");
        }
    }
}

fn refresh_metrics(metrics: &Metrics, sensor: &Sensor, transport: &Transport) {
    metrics.kernel_counters(&sensor.counters());
    metrics.transport(transport.stats());
    transport.set_kernel_lost(lost_total(sensor));
}

fn deliver(
    transport: &Transport,
    sensor: &Sensor,
    losses: &mut LossWatch,
    hashes: &mut ExecutableHashes,
    metrics: &Metrics,
    mut found: Vec<proto::v1::Deviation>,
    record: Option<&mut DeviationRecord>,
) {
    if found.is_empty() {
        return;
    }
    let lost = losses.recent(sensor);
    for d in &mut found {
        if lost {
            d.signals.push("overlapped-loss".to_owned());
        }
        if let Some(p) = d.process.as_mut()
            && let Some(hash) = hashes.of(p.pid, &p.executable)
        {
            p.executable_sha256 = hash;
        }
    }
    for d in &found {
        metrics.deviation(d);
        tracing::info!(workload = d.workload.as_ref().map(|w| w.id.as_str()).unwrap_or(""), summary = %d.summary, "deviation");
    }
    let mut record = record;
    if let Some(record) = record.as_deref_mut() {
        record.spooling(found.iter().map(|d| d.id.clone()));
    }
    let sent = transport.send(found);
    if let Some(record) = record {
        let outcome = if sent.is_ok() {
            "spooled\n"
        } else {
            "failed\n"
        };
        record.write(outcome);
    }
    if let Err(e) = sent {
        tracing::error!(error = %e, "could not queue deviations for delivery");
    }
}

fn housekeeping(
    engine: &mut Engine,
    sensor: &Sensor,
    last: &mut Vec<(&'static str, u64)>,
    events: u64,
) {
    if let Err(e) = engine.persist() {
        tracing::error!(error = %e, "could not save baselines");
    }
    let now = sensor.counters();
    let lost_since = |counters: &[(&str, u64)]| -> u64 {
        counters
            .iter()
            .filter(|(name, _)| name.starts_with("lost_"))
            .map(|(_, n)| n)
            .sum()
    };
    if lost_since(&now) > lost_since(last) {
        // What was lost was not learnt: say so on the baselines that were learning then.
        let marked = engine.note_kernel_loss(HOUSEKEEPING + LOSS_WINDOW);
        if marked > 0 {
            tracing::warn!(
                workloads = marked,
                "kernel lost records while workloads were learning; their baselines are marked"
            );
        }
    }
    for ((name, before), (_, after)) in last.iter().zip(&now) {
        if after > before {
            tracing::warn!(
                counter = name,
                new = after - before,
                total = after,
                "kernel events lost or incomplete"
            );
        }
    }
    *last = now;
    tracing::debug!(events, "housekeeping");
}
