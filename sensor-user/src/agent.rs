//! The agent's main loop: kernel → decode → attribute → baseline/deviation → transport.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attribute::Attributor;
use crate::baseline::{Engine, LearningConfig};
use crate::kernel::{self, BootClock, Sensor};
use crate::transport::{Transport, TransportConfig};

/// Everything `sensor run` needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub collector_url: String,
    pub state_dir: PathBuf,
    pub learning: LearningConfig,
    pub host: String,
    pub cgroup_root: PathBuf,
    pub load: kernel::LoadOptions,
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
}

/// How often baselines are written and counters logged.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Runs until `cancel` fires, then flushes baselines and the delivery queue.
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    let mut engine = Engine::open(
        &config.state_dir,
        config.learning.clone(),
        config.host.clone(),
    )?;
    let (transport, delivery) = Transport::start(
        TransportConfig {
            collector_url: config.collector_url.clone(),
            state_dir: config.state_dir.clone(),
            agent_id: config.host.clone(),
            max_batch: 256,
            flush_interval: Duration::from_millis(200),
            spool_max_bytes: 256 * 1024 * 1024,
        },
        cancel.clone(),
    )?;
    let mut sensor = Sensor::load(&config.load)?;
    let mut attributor = Attributor::new(&config.cgroup_root);
    attributor.seed_from_proc();
    let clock = BootClock::now();
    tracing::info!(
        programs = sensor.attached.len(),
        collector = %config.collector_url,
        state_dir = %config.state_dir.display(),
        "sensor ready"
    );
    write_status(&config, &sensor, &engine, 0);

    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut last_counters = sensor.counters();
    let mut events: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ready = sensor.ready() => {
                ready?;
                let mut found = Vec::new();
                events += sensor.drain(|record| match kernel::decode(record, &clock) {
                    Ok(event) => found.extend(engine.observe(&attributor.attribute(event))),
                    Err(e) => tracing::warn!(error = %e, "undecodable kernel record"),
                }) as u64;
                deliver(&transport, found);
            }
            _ = tick.tick() => {
                housekeeping(&mut engine, &sensor, &mut last_counters, events);
                write_status(&config, &sensor, &engine, events);
            }
        }
    }

    // Drain what the kernel already wrote, keep it, then let delivery flush.
    let mut found = Vec::new();
    sensor.drain(|record| {
        if let Ok(event) = kernel::decode(record, &clock) {
            found.extend(engine.observe(&attributor.attribute(event)));
        }
    });
    deliver(&transport, found);
    write_status(&config, &sensor, &engine, events);
    drop(sensor);
    if let Err(e) = engine.persist() {
        tracing::error!(error = %e, "could not save baselines at shutdown");
    }
    let _ = delivery.await;
    tracing::info!("sensor stopped");
    Ok(())
}

fn deliver(transport: &Transport, found: Vec<proto::v1::Deviation>) {
    if found.is_empty() {
        return;
    }
    for d in &found {
        tracing::info!(workload = d.workload.as_ref().map(|w| w.id.as_str()).unwrap_or(""), summary = %d.summary, "deviation");
    }
    if let Err(e) = transport.send(found) {
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

/// `state_dir/status.json`, rewritten at start, on every housekeeping tick and at exit: what is
/// attached, event and loss counts, workloads. For operators, and for tests waiting on
/// readiness. Written to a temporary file and renamed, so a reader never sees half of it.
fn write_status(config: &AgentConfig, sensor: &Sensor, engine: &Engine, events: u64) {
    let counters = sensor.counters();
    let lost: u64 = counters
        .iter()
        .filter(|(name, _)| name.starts_with("lost_"))
        .map(|(_, n)| n)
        .sum();
    let status = serde_json::json!({
        "pid": std::process::id(),
        "collector": config.collector_url,
        "attached": sensor.attached,
        "skipped": sensor.skipped.iter().map(|(n, why)| serde_json::json!({"program": n, "reason": why})).collect::<Vec<_>>(),
        "events": events,
        "lost": lost,
        "counters": counters.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "workloads": engine.summary().iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    });
    let path = config.state_dir.join("status.json");
    let tmp = config.state_dir.join("status.json.tmp");
    let written =
        std::fs::write(&tmp, status.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not write status file");
    }
}
