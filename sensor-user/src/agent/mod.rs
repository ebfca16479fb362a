//! The agent: starts every stage and runs the event loop.
//!
//! ```text
//! ring buffers → decode → attribute → detect ─┬→ report → (hash) → spool → collector
//!                                             └→ baselines (learning, operator requests, sharing)
//! ```
//!
//! The loop never waits on anything a watched process controls: it decodes, attributes and
//! judges in memory, and hands findings to the [`outbox`] (which does file access off the loop).

mod outbox;
mod ring_depth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attribute::Attributor;
use crate::baseline::LearningConfig;
use crate::baseline_sync::{BaselineSync, SyncConfig};
use crate::detect::{Engine, Finding};
use crate::kernel::{self, BootClock, Sensor};
use crate::metrics::{EventCounts, Metrics};
use crate::status;
use crate::transport::{Transport, TransportConfig};

use outbox::{LOSS_WINDOW, Outbox};

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
    pub secrets: crate::detect::SecretPaths,
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
/// Most batches read at shutdown (the ring holds a few tens of thousands of records).
const SHUTDOWN_BATCHES: usize = 64;

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
    let engine = Engine::open(
        &config.state_dir,
        config.learning.clone(),
        config.host.clone(),
    )?
    .with_secret_paths(config.secrets.clone());
    let (transport, delivery) = Transport::start(transport_config(&config), cancel.clone())?;
    let (sync, adopt, sync_task) = BaselineSync::start(sync_config(&config))?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, Arc::clone(&metrics), cancel.clone()).await;
    }
    let sensor = Sensor::load(&config.load)?;
    let mut attributor =
        Attributor::new(&config.cgroup_root).with_containers(config.containers.clone());
    attributor.seed_from_proc();
    let outbox = Outbox::new(
        config.host.clone(),
        transport,
        &sensor,
        config.record_deviations.as_deref(),
        Arc::clone(&metrics),
    )
    .map_err(|source| AgentError::Record {
        path: display(config.record_deviations.as_deref()),
        source,
    })?;
    match ring_depth::RingDepth::new(sensor.ring_fd()) {
        Ok(depth) => outbox
            .transport
            .set_queue_depth(Box::new(move || depth.pending_bytes())),
        Err(e) => tracing::warn!(error = %e, "heartbeats cannot report the ring's backlog"),
    }
    tracing::info!(
        programs = sensor.attached.len(),
        collector = %config.collector_url,
        state_dir = %config.state_dir.display(),
        "sensor ready"
    );
    let mut agent = Agent {
        last_counters: sensor.counters(),
        sensor,
        clock: BootClock::now(),
        attributor,
        engine,
        outbox,
        sync,
        metrics,
        events: 0,
        decoded: 0,
        status_phases: 0,
        config,
    };
    agent.write_status();
    agent.metrics.workloads(&agent.engine.baselines().summary());
    agent.refresh_metrics();
    agent.event_loop(adopt, &cancel).await?;
    agent.shutdown();
    let Agent {
        outbox,
        sync,
        sensor,
        ..
    } = agent;
    drop(sensor);
    // Ends the sharing task (after its final report).
    drop(sync);
    outbox.close();
    let _ = sync_task.await;
    let _ = delivery.await;
    tracing::info!("sensor stopped");
    Ok(())
}

/// Baseline sharing's settings, when it is on.
fn sync_config(config: &AgentConfig) -> Option<SyncConfig> {
    config.share_baselines.then(|| SyncConfig {
        collector_url: config.collector_url.clone(),
        tls: config.collector_tls.clone(),
        agent_id: config.host.clone(),
        learning_runs: config.learning.learning_runs,
    })
}

fn display(path: Option<&std::path::Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn transport_config(config: &AgentConfig) -> TransportConfig {
    TransportConfig {
        collector_url: config.collector_url.clone(),
        state_dir: config.state_dir.clone(),
        agent_id: config.host.clone(),
        max_batch: 256,
        flush_interval: config.flush_interval,
        heartbeat_interval: config.heartbeat_interval,
        spool_max_bytes: 256 * 1024 * 1024,
        tls: config.collector_tls.clone(),
    }
}

/// The running agent's stages.
struct Agent {
    config: AgentConfig,
    sensor: Sensor,
    clock: BootClock,
    attributor: Attributor,
    engine: Engine,
    outbox: Outbox,
    sync: BaselineSync,
    metrics: Arc<Metrics>,
    /// Kernel records read so far.
    events: u64,
    /// Kernel records decoded so far.
    decoded: u64,
    /// `Baselines::phase_changes` when the status was last written.
    status_phases: u64,
    last_counters: Vec<(&'static str, u64)>,
}

impl Agent {
    async fn event_loop(
        &mut self,
        mut adopt: tokio::sync::mpsc::UnboundedReceiver<proto::v1::Baseline>,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        let mut refresh = tokio::time::interval(METRICS_REFRESH);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                ready = self.sensor.ready() => {
                    ready?;
                    let found = self.drain();
                    self.outbox.send(&self.sensor, found);
                    if self.engine.baselines().phase_changes() != self.status_phases {
                        // A workload appeared, or started learning a run or being judged:
                        // status says so now, not at the next tick.
                        self.write_status();
                    }
                    self.sync.fetch(self.engine.baselines_mut().baselines_to_fetch());
                }
                Some(merged) = adopt.recv() => {
                    self.engine.baselines_mut().adopt(&merged);
                }
                _ = tick.tick() => self.housekeeping(),
                _ = refresh.tick() => {
                    // New executables whose wait for loading evidence is over, by the clock.
                    let due = self.engine.flush_loading(Some(std::time::SystemTime::now()));
                    self.outbox.send(&self.sensor, due);
                    let counters = self.refresh_metrics();
                    // Every second, not at housekeeping: a flood that makes the kernel lose
                    // records is told while its run is still on.
                    let blind = losses(
                        &mut self.engine,
                        &mut self.last_counters,
                        counters,
                        METRICS_REFRESH,
                    );
                    self.outbox.send(&self.sensor, blind);
                    self.engine.baselines_mut().serve_requests();
                }
            }
        }
    }

    /// Decodes, attributes and judges the records the kernel wrote, one bounded batch
    /// ([`kernel::DRAIN_BATCH`]): under a flood the loop comes back for the rest after its other
    /// branches had their turn (see [`Sensor::ready`]).
    fn drain(&mut self) -> Vec<Finding> {
        let mut found = Vec::new();
        let (metrics, clock) = (&self.metrics, &self.clock);
        let (engine, attributor) = (&mut self.engine, &mut self.attributor);
        let mut decoded = 0;
        let mut kinds = EventCounts::default();
        let read = self
            .sensor
            .drain(|record| match kernel::decode(record, clock) {
                Ok(event) => {
                    decoded += 1;
                    kinds.count(&event.kind);
                    found.extend(engine.observe(&attributor.attribute(event)));
                }
                Err(e) => {
                    metrics.undecodable();
                    tracing::warn!(error = %e, "undecodable kernel record");
                }
            });
        metrics.events(&kinds);
        self.events += read as u64;
        if self.sensor.behind() {
            self.metrics.drain_behind();
        }
        if decoded > 0 {
            self.decoded += decoded;
            let now = crate::event::unix_nanos(std::time::SystemTime::now());
            self.outbox.transport.set_liveness(now, self.decoded);
        }
        found
    }

    fn housekeeping(&mut self) {
        self.sync
            .report(self.engine.baselines_mut().baselines_to_report());
        // Deviations held past their budget go out once their kind is quiet.
        let aggregates = self
            .engine
            .flush_aggregates(Some(std::time::SystemTime::now()));
        self.outbox.send(&self.sensor, aggregates);
        if let Err(e) = self.engine.baselines_mut().persist() {
            tracing::error!(error = %e, "could not save baselines");
        }
        tracing::debug!(events = self.events, "housekeeping");
        self.write_status();
        self.metrics.workloads(&self.engine.baselines().summary());
    }

    fn write_status(&mut self) {
        self.status_phases = self.engine.baselines().phase_changes();
        status::write(
            &self.config.collector_url,
            &self.config.state_dir,
            &self.sensor,
            self.engine.baselines(),
            &self.outbox.transport.stats(),
            self.events,
        );
    }

    /// Refreshes the metrics; returns the kernel counters read for them.
    fn refresh_metrics(&self) -> Vec<(&'static str, u64)> {
        let transport = &self.outbox.transport;
        let counters = self.sensor.counters();
        self.metrics.kernel_counters(&counters);
        self.metrics.transport(transport.stats());
        transport.set_kernel_lost(status::lost_total(&self.sensor));
        counters
    }

    /// Keeps what the kernel already wrote, sends every held aggregate, saves the baselines and
    /// reports them (an ephemeral runner's agent stops with its job).
    fn shutdown(&mut self) {
        let mut found = self.drain();
        // What is already waiting, not a flood that never ends.
        for _ in 0..SHUTDOWN_BATCHES {
            if !self.sensor.behind() {
                break;
            }
            found.extend(self.drain());
        }
        found.extend(self.engine.flush_aggregates(None));
        self.outbox.send(&self.sensor, found);
        self.write_status();
        if let Err(e) = self.engine.baselines_mut().persist() {
            tracing::error!(error = %e, "could not save baselines at shutdown");
        }
        self.sync
            .report(self.engine.baselines_mut().baselines_to_report());
    }
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

/// Raises the blind spots of the records the kernel lost since the counters `last` were read
/// (`every` ago), marks the baselines that were learning then, logs the losses, and keeps `now`.
fn losses(
    engine: &mut Engine,
    last: &mut Vec<(&'static str, u64)>,
    now: Vec<(&'static str, u64)>,
    every: Duration,
) -> Vec<crate::detect::Finding> {
    let lost = |counters: &[(&str, u64)]| -> u64 {
        counters
            .iter()
            .filter(|(name, _)| name.starts_with("lost_"))
            .map(|(_, n)| n)
            .sum()
    };
    let mut blind = Vec::new();
    if lost(&now) > lost(last) {
        // What was lost was not judged either: a blind spot for each workload active then.
        blind = engine.blind_spots(
            lost(&now) - lost(last),
            std::time::SystemTime::now(),
            every + LOSS_WINDOW,
        );
        // What was lost was not learnt: say so on the baselines that were learning then.
        let marked = engine.baselines_mut().note_kernel_loss(every + LOSS_WINDOW);
        if marked > 0 {
            tracing::warn!(
                workloads = marked,
                "kernel lost records while workloads were learning; their baselines are marked"
            );
        }
    }
    // Losses are an operator's business; repeats filtered on purpose are only counted (metrics,
    // status).
    for (name, new, total) in crate::status::new_losses(last, &now) {
        tracing::warn!(
            counter = name,
            new,
            total,
            "kernel events lost or incomplete"
        );
    }
    *last = now;
    blind
}
