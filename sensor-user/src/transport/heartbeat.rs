//! Heartbeats: on every stream the agent opens, and then every `heartbeat_interval`, it sends a
//! `DeviationBatch` of sequence 0 carrying its `AgentStatus` (version, spool depth, deviations
//! dropped and kernel records lost since it started, and the pipeline's liveness: when it last
//! decoded a record, how many it decoded, and how many bytes of records wait in the kernel's
//! ring for it). The collector records the contact, so it
//! can tell a quiet agent (nothing new to report) from a stopped one, and learns of drops once the
//! agent reaches it again. Heartbeats take no spool space and no window slot: a lost one is
//! simply superseded by the next, whose drop count is cumulative over the spool's life (kept in
//! the spool, so drops before a restart are still reported after it). The spool's id names that
//! count (`AgentStatus.instance_id`): a wiped state directory starts a new one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::v1::{AgentStatus, DeviationBatch};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use super::Inner;

/// Default time between two heartbeats.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Room for heartbeats in the stream's queue, beyond the window of batches.
pub const QUEUE: usize = 2;

/// A timer whose first tick is immediate (a heartbeat as soon as the stream is open).
pub fn timer(interval: Duration) -> Interval {
    let mut timer = tokio::time::interval(interval.max(Duration::from_millis(10)));
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// The heartbeat message for the agent's current state.
pub fn message(inner: &Inner) -> DeviationBatch {
    // One lock for both: two `inner.spool()` in one expression would deadlock.
    let (spool_deviations, dropped_total) = {
        let mut spool = inner.spool();
        (spool.unacknowledged(), spool.dropped_total())
    };
    DeviationBatch {
        agent_id: inner.agent_id.clone(),
        sequence: 0,
        deviations: Vec::new(),
        spool_id: inner.spool_id.clone(),
        status: Some(AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_id: inner.spool_id.clone(),
            // The agent's one host identity (`--host`), as in its deviations.
            host: inner.agent_id.clone(),
            spool_deviations,
            dropped_total,
            kernel_lost_total: inner.kernel_lost.load(Ordering::Relaxed),
            heartbeat_interval_millis: u32::try_from(inner.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            last_event_unix_nanos: inner.last_event_unix_nanos.load(Ordering::Relaxed),
            // Records are judged as they are read: what waits is what the kernel wrote into the
            // ring and the agent has not read (bytes), read now, not from the event loop.
            event_queue_depth: inner.queue_depth.get().map_or(0, |depth| depth()),
            events_decoded_total: inner.events_decoded.load(Ordering::Relaxed),
        }),
    }
}

/// Queues a heartbeat unless that would take a place a batch of the window may need (`in_flight`
/// batches are queued or sent); a stalled stream then skips heartbeats rather than batches.
pub fn send(inner: &Inner, queue: &mpsc::Sender<DeviationBatch>, in_flight: usize) {
    let needed_for_batches = super::deliver::WINDOW.saturating_sub(in_flight);
    if queue.capacity() > needed_for_batches {
        // Cannot fail for lack of room (checked above); a closed stream shows on the ack side.
        let _ = queue.try_send(message(inner));
    } else {
        tracing::debug!("stream stalled; heartbeat skipped");
    }
}
