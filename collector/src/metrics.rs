//! Prometheus metrics of `collector serve`, in the OpenMetrics text format at `/metrics` of its
//! HTTP endpoint ([`crate::web`]; `--metrics-listen`, default 127.0.0.1:9465):
//!
//! | metric | labels | what |
//! |--------|--------|------|
//! | `collector_deviations_ingested_total` | | deviations newly stored |
//! | `collector_batches_total` | | batches stored and acknowledged (resent ones included) |
//! | `collector_batches_resent_total` | | batches acknowledged without storing: already stored |
//! | `collector_duplicates_total` | | deviations not stored because they already were |
//! | `collector_ingest_errors_total` | `reason` (invalid, store, stream) | batches refused as invalid, batches the database could not store, agent streams that broke |
//! | `collector_agents_connected` | | agent streams open |
//! | `collector_heartbeats_total` | | agent heartbeats recorded |
//! | `collector_agent_silences_total` | | agents this collector marked silent (no batch or heartbeat for `agent_silence`) |
//! | `collector_agents_silent` | | agents marked silent now (all replicas' view, as of the last check) |
//! | `collector_agent_dropped_deviations_total` | | deviations agents reported they dropped (spool full or refused) |
//! | `collector_retention_deleted_total` | | deviations deleted past `retention` |

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::BatchOutcome;

/// Why an ingest failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestError {
    /// The batch broke a rule (`ingest::validate`).
    Invalid,
    /// The database could not store it.
    Store,
    /// The agent's stream broke (transport or decoding error).
    Stream,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The collector's metrics, updated by the ingest service and encoded by [`serve`].
pub struct Metrics {
    registry: Registry,
    ingested: Counter,
    batches: Counter,
    resent: Counter,
    duplicates: Counter,
    errors: Family<ReasonLabel, Counter>,
    agents: Gauge,
    heartbeats: Counter,
    silences: Counter,
    silent: Gauge,
    agent_dropped: Counter,
    pruned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("collector");
        let m = Metrics {
            registry: Registry::default(),
            ingested: Counter::default(),
            batches: Counter::default(),
            resent: Counter::default(),
            duplicates: Counter::default(),
            errors: Family::default(),
            agents: Gauge::default(),
            heartbeats: Counter::default(),
            silences: Counter::default(),
            silent: Gauge::default(),
            agent_dropped: Counter::default(),
            pruned: Counter::default(),
        };
        registry.register(
            "deviations_ingested",
            "Deviations newly stored",
            m.ingested.clone(),
        );
        registry.register(
            "batches",
            "Batches stored and acknowledged, resent ones included",
            m.batches.clone(),
        );
        registry.register(
            "batches_resent",
            "Batches acknowledged without storing because they already were",
            m.resent.clone(),
        );
        registry.register(
            "duplicates",
            "Deviations not stored because they already were",
            m.duplicates.clone(),
        );
        registry.register(
            "ingest_errors",
            "Ingest failures by reason: invalid batch, store failure, broken stream",
            m.errors.clone(),
        );
        registry.register("agents_connected", "Agent streams open", m.agents.clone());
        registry.register(
            "heartbeats",
            "Agent heartbeats recorded",
            m.heartbeats.clone(),
        );
        registry.register(
            "agent_silences",
            "Agents this collector marked silent (no batch or heartbeat for agent_silence)",
            m.silences.clone(),
        );
        registry.register(
            "agents_silent",
            "Agents marked silent now, as of the last check",
            m.silent.clone(),
        );
        registry.register(
            "agent_dropped_deviations",
            "Deviations agents reported they dropped (spool full or refused)",
            m.agent_dropped.clone(),
        );
        registry.register(
            "retention_deleted",
            "Deviations deleted past retention",
            m.pruned.clone(),
        );
        // Every reason shows from the start, at 0, so rates and alerts need no special case.
        for reason in [
            IngestError::Invalid,
            IngestError::Store,
            IngestError::Stream,
        ] {
            let _ = m.errors.get_or_create(&label(reason));
        }
        Metrics { registry, ..m }
    }

    /// Counts a stored (and acknowledged) batch.
    pub fn batch(&self, outcome: &BatchOutcome) {
        self.batches.inc();
        if outcome.resent {
            self.resent.inc();
        }
        self.ingested.inc_by(u64::from(outcome.stored));
        self.duplicates.inc_by(u64::from(outcome.duplicates));
    }

    /// Counts a recorded heartbeat and the drops it reported.
    pub fn heartbeat(&self, events: &[proto::v1::AgentEvent]) {
        self.heartbeats.inc();
        for event in events {
            if event.kind() == proto::v1::AgentEventKind::Dropped {
                self.agent_dropped.inc_by(event.count);
            }
        }
    }

    /// Counts agents newly marked silent, and sets how many are silent now.
    pub fn silence(&self, newly: u64, silent_now: i64) {
        self.silences.inc_by(newly);
        self.silent.set(silent_now);
    }

    /// Counts deviations deleted past retention.
    pub fn pruned(&self, deleted: u64) {
        self.pruned.inc_by(deleted);
    }

    /// Counts a failure.
    pub fn error(&self, reason: IngestError) {
        self.errors.get_or_create(&label(reason)).inc();
    }

    /// Counts an agent stream as open until the returned guard is dropped.
    pub fn agent_connected(self: &Arc<Self>) -> AgentGuard {
        self.agents.inc();
        AgentGuard(Arc::clone(self))
    }

    /// Agent streams open now.
    pub fn agents_connected(&self) -> i64 {
        self.agents.get()
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn label(reason: IngestError) -> ReasonLabel {
    ReasonLabel {
        reason: match reason {
            IngestError::Invalid => "invalid",
            IngestError::Store => "store",
            IngestError::Stream => "stream",
        },
    }
}

/// Decrements the connected-agents gauge when the stream's task ends, however it ends.
pub struct AgentGuard(Arc<Metrics>);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.0.agents.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_rendered() {
        let m = Arc::new(Metrics::new());
        m.batch(&BatchOutcome {
            stored: 3,
            duplicates: 1,
            resent: false,
        });
        m.batch(&BatchOutcome {
            stored: 0,
            duplicates: 4,
            resent: true,
        });
        m.error(IngestError::Invalid);
        let guard = m.agent_connected();
        let _second = m.agent_connected();
        drop(guard);
        assert_eq!(m.agents_connected(), 1);
        let text = m.render();
        for line in [
            "collector_deviations_ingested_total 3",
            "collector_batches_total 2",
            "collector_batches_resent_total 1",
            "collector_duplicates_total 5",
            "collector_ingest_errors_total{reason=\"invalid\"} 1",
            "collector_ingest_errors_total{reason=\"store\"} 0",
            "collector_agents_connected 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
