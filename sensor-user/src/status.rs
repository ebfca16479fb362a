//! `<state-dir>/status.json`: what a running agent is doing, written by the agent and read by
//! `sensor status` (and by tests and benchmarks waiting for readiness or reading counters).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::baseline::Baselines;
use crate::kernel::Sensor;
use crate::kernel::programs::Chosen;
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
        // Which hooks watch opens, file and privilege operations (the runtime probe's choice).
        "hooks": hooks_name(sensor.hooks),
        "attached": sensor.attached,
        "skipped": sensor.skipped.iter().map(|(n, why)| serde_json::json!({"program": n, "reason": why})).collect::<Vec<_>>(),
        "events": events,
        "lost": lost,
        // Repeats filtered on purpose (not losses).
        "suppressed": suppressed_total(&counters),
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

/// The `hooks` field of the status: the set of syscall-event programs the loader chose.
fn hooks_name(chosen: Chosen) -> &'static str {
    match chosen {
        Chosen::Fentry => "fentry",
        Chosen::Tracepoints => "tracepoint-pair",
        Chosen::TracepointExits => "tracepoint",
        Chosen::RawSysExit => "raw-sys-exit",
        Chosen::Lsm => "lsm",
    }
}

/// The `hooks` field for a human (absent in the status of an older agent).
fn hooks_line(hooks: &Value) -> String {
    let how = match hooks.as_str() {
        Some("fentry") => "fentry/fexit",
        Some("tracepoint") => "syscall tracepoints",
        Some("tracepoint-pair") => "syscall tracepoints (opens: entry and exit)",
        Some("raw-sys-exit") => "raw sys_exit (opens) + syscall tracepoints",
        Some("lsm") => "BPF LSM (opens) + syscall tracepoints",
        Some(other) => other,
        None => "unknown",
    };
    format!("hooks: {how} (opens, file and privilege operations)\n")
}

/// What a kernel counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Records the kernel lost (`lost_*`, ring buffer full) or sent incomplete (`read_error`):
    /// what a baseline or a judgement may lack. An operator acts on these.
    Loss,
    /// Repeats the kernel filtered on purpose (`suppressed_*`: the same open or connect again
    /// within its window). Nothing is missing; counted, never logged as a loss.
    Suppressed,
}

impl CounterKind {
    pub fn of(name: &str) -> CounterKind {
        if name.starts_with("suppressed_") {
            CounterKind::Suppressed
        } else {
            CounterKind::Loss
        }
    }
}

/// The loss counters (see [`CounterKind`]) that grew from `last` to `now`, as `(name, new,
/// total)`: what the agent warns about.
pub(crate) fn new_losses(
    last: &[(&'static str, u64)],
    now: &[(&'static str, u64)],
) -> Vec<(&'static str, u64, u64)> {
    now.iter()
        .filter(|(name, _)| CounterKind::of(name) == CounterKind::Loss)
        .map(|&(name, after)| {
            let before = last.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
            (name, after.saturating_sub(before), after)
        })
        .filter(|(_, new, _)| *new > 0)
        .collect()
}

/// Repeats the kernel filtered on purpose, all programs together.
pub(crate) fn suppressed_total(counters: &[(&'static str, u64)]) -> u64 {
    counters
        .iter()
        .filter(|(name, _)| CounterKind::of(name) == CounterKind::Suppressed)
        .map(|(_, n)| n)
        .sum()
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
    out.push_str(&hooks_line(&status["hooks"]));
    out.push_str(&format!(
        "events: {}, lost: {}, repeats filtered: {}\n",
        status["events"],
        status["lost"],
        status["suppressed"].as_u64().unwrap_or(0)
    ));
    if let Some(counters) = status["counters"].as_object() {
        let nonzero: Vec<String> = counters
            .iter()
            .filter(|(k, v)| v.as_u64().unwrap_or(0) > 0 && CounterKind::of(k) == CounterKind::Loss)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !nonzero.is_empty() {
            out.push_str(&format!("losses: {}\n", nonzero.join(" ")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_losses_are_warned_about_and_repeats_are_counted_apart() {
        let last = [("lost_exec", 1), ("suppressed_open", 10), ("read_error", 0)];
        let now = [
            ("lost_exec", 1),
            ("suppressed_open", 900),
            ("read_error", 2),
        ];
        assert_eq!(new_losses(&last, &now), [("read_error", 2, 2)]);
        assert_eq!(new_losses(&now, &now), []);
        assert_eq!(suppressed_total(&now), 900);
        assert_eq!(
            CounterKind::of("suppressed_connect"),
            CounterKind::Suppressed
        );
        assert_eq!(CounterKind::of("lost_open"), CounterKind::Loss);

        let status = serde_json::json!({
            "pid": 0, "running": false, "delivery": {}, "events": 5, "lost": 1, "suppressed": 900,
            "counters": {"lost_exec": 1, "suppressed_open": 900},
        });
        let text = render(&status);
        assert!(
            text.contains("events: 5, lost: 1, repeats filtered: 900\n"),
            "{text}"
        );
        assert!(text.contains("losses: lost_exec=1\n"), "{text}");
        assert!(text.contains("hooks: unknown ("), "{text}");
    }

    #[test]
    fn the_hook_set_in_use_is_named_and_shown() {
        for (chosen, field, shown) in [
            (Chosen::Fentry, "fentry", "hooks: fentry/fexit ("),
            (
                Chosen::TracepointExits,
                "tracepoint",
                "hooks: syscall tracepoints (",
            ),
            (
                Chosen::Tracepoints,
                "tracepoint-pair",
                "hooks: syscall tracepoints (opens: entry and exit) (",
            ),
            (
                Chosen::RawSysExit,
                "raw-sys-exit",
                "hooks: raw sys_exit (opens)",
            ),
            (
                Chosen::Lsm,
                "lsm",
                "hooks: BPF LSM (opens) + syscall tracepoints (",
            ),
        ] {
            assert_eq!(hooks_name(chosen), field);
            let status = serde_json::json!({"pid": 0, "delivery": {}, "hooks": field});
            let text = render(&status);
            assert!(text.contains(shown), "{text}");
        }
    }
}
