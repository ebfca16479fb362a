//! `<state-dir>/status.json`: what a running agent is doing, written by the agent and read by
//! `sensor status` (and by tests and benchmarks waiting for readiness or reading counters).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::baseline::Baselines;
use crate::kernel::Sensor;
use crate::transport::TransportStats;

/// Where the status of the agent using `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// `state_dir/status.json`, rewritten at start, on every housekeeping tick and at exit: what is
/// attached, event and loss counts, workloads. For operators, and for tests waiting on
/// readiness. Written to a temporary file and renamed, so a reader never sees half of it.
pub(crate) fn write(
    collector: &str,
    state_dir: &Path,
    sensor: &Sensor,
    engine: &Baselines,
    transport: &TransportStats,
    events: u64,
) {
    let counters = sensor.counters();
    let lost = lost_total(sensor);
    let status = serde_json::json!({
        "pid": std::process::id(),
        "collector": collector,
        "delivery": {
            "connected": transport.connected,
            "spooled": transport.unacknowledged,
            "acknowledged": transport.acknowledged,
            "dropped": transport.dropped,
        },
        "attached": sensor.attached,
        "skipped": sensor.skipped.iter().map(|(n, why)| serde_json::json!({"program": n, "reason": why})).collect::<Vec<_>>(),
        "events": events,
        "lost": lost,
        "counters": counters.iter().map(|(n, v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "workloads": engine.summary().iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        // Learning state of each baseline dimension, per workload, for machines.
        "dimensions": engine.summary().iter().map(|w| (
            w.workload.clone(),
            serde_json::Value::Object(w.dimensions.iter().map(|(d, s)| (d.as_str().to_owned(), serde_json::json!(s.as_str()))).collect()),
        )).collect::<serde_json::Map<_, _>>(),
        // Learning windows that overlapped kernel losses, per workload (only those with some).
        "learning_losses": engine.summary().iter().filter(|w| w.learning_losses > 0).map(|w| (
            w.workload.clone(),
            serde_json::json!(w.learning_losses),
        )).collect::<serde_json::Map<_, _>>(),
    });
    let path = path(state_dir);
    let tmp = state_dir.join("status.json.tmp");
    let written =
        std::fs::write(&tmp, status.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not write status file");
    }
}

/// Records the kernel lost, all programs and rings together.
pub(crate) fn lost_total(sensor: &Sensor) -> u64 {
    sensor
        .counters()
        .iter()
        .filter(|(name, _)| name.starts_with("lost_"))
        .map(|(_, n)| n)
        .sum()
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no status at {0}: is `sensor run` using this --state-dir?")]
    Missing(String),
    #[error("status file {0} is unreadable: {1}")]
    Corrupt(String, String),
}

/// The status as JSON, with `running` added (whether its pid is alive).
pub fn read(state_dir: &Path) -> Result<Value, StatusError> {
    let path = path(state_dir);
    let text = std::fs::read_to_string(&path)
        .map_err(|_| StatusError::Missing(path.display().to_string()))?;
    let mut status: Value = serde_json::from_str(&text)
        .map_err(|e| StatusError::Corrupt(path.display().to_string(), e.to_string()))?;
    let pid = status["pid"].as_u64().unwrap_or(0);
    let running = pid != 0 && Path::new(&format!("/proc/{pid}")).exists();
    status["running"] = Value::Bool(running);
    Ok(status)
}

/// A few lines for a human.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let running = if status["running"] == true {
        "running"
    } else {
        "not running (last status)"
    };
    out.push_str(&format!("sensor pid {}: {running}\n", status["pid"]));
    let delivery = &status["delivery"];
    let link = if delivery["connected"] == true {
        "connected"
    } else {
        "not connected"
    };
    out.push_str(&format!(
        "collector: {} ({link}; spool {} unacknowledged, {} acknowledged, {} dropped)\n",
        status["collector"].as_str().unwrap_or("?"),
        delivery["spooled"],
        delivery["acknowledged"],
        delivery["dropped"]
    ));
    let attached = status["attached"].as_array().map_or(0, Vec::len);
    let skipped = status["skipped"].as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "programs: {attached} attached, {skipped} skipped\n"
    ));
    out.push_str(&format!(
        "events: {}, lost: {}\n",
        status["events"], status["lost"]
    ));
    if let Some(counters) = status["counters"].as_object() {
        let nonzero: Vec<String> = counters
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !nonzero.is_empty() {
            out.push_str(&format!("counters: {}\n", nonzero.join(" ")));
        }
    }
    if let Some(workloads) = status["workloads"].as_array() {
        out.push_str(&format!("workloads ({}):\n", workloads.len()));
        for w in workloads {
            out.push_str(&format!("  {}\n", w.as_str().unwrap_or("?")));
        }
    }
    out
}
