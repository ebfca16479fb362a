//! What one agent, or one connection, may hold of the collector at once, so that one stolen
//! agent certificate cannot exhaust its memory while honest agents keep delivering.
//!
//! Memory an agent can pin is the product of these bounds: per certificate identity at most
//! [`MAX_STREAMS_PER_AGENT`] Ingest streams (each decodes one message of at most
//! [`crate::ingest::MAX_DECODE_BYTES`] at a time, and tonic refuses a larger one from its length
//! prefix, before buffering it) of which [`MAX_IN_FLIGHT_PER_AGENT`] are being stored at once;
//! per connection at most [`CONNECTION_WINDOW`] bytes received and not yet read (HTTP/2 flow
//! control) and [`MAX_STREAMS_PER_CONNECTION`] streams. A stream that sends nothing for
//! [`STREAM_IDLE_TIMEOUT`] is closed (agents send a heartbeat every 30 s by default); a peer that
//! stops answering HTTP/2 pings is dropped after [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`];
//! a TLS handshake gets 10 s (`server.rs`).
//!
//! The per-agent limits apply to certificate identities. Plain text (loopback only) has no
//! identity to count by, and a local agent is trusted as far as the machine is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Ingest streams one agent identity may have open at once (an agent needs one; a restart or a
/// reconnect may briefly overlap the old one).
pub const MAX_STREAMS_PER_AGENT: usize = 4;
/// Batches of one agent identity being stored at once, whatever its streams.
pub const MAX_IN_FLIGHT_PER_AGENT: usize = 2;
/// An Ingest stream that carries no batch or heartbeat for this long is closed.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// HTTP/2 pings to a connection this often...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...which must be answered within this, or the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent HTTP/2 streams (calls) on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Bytes one stream may send ahead of what the collector has read.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Bytes one connection may send ahead of what the collector has read, over all its streams.
pub const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// Open streams and in-flight batches per agent identity.
#[derive(Debug, Default)]
pub struct AgentLimits {
    agents: Mutex<HashMap<String, AgentSlots>>,
}

#[derive(Debug)]
struct AgentSlots {
    streams: usize,
    in_flight: Arc<Semaphore>,
}

/// One open stream of an agent; gives its place back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    limits: Arc<AgentLimits>,
    agent: String,
    in_flight: Arc<Semaphore>,
}

impl AgentLimits {
    /// Takes a stream slot for `agent`, or refuses with `RESOURCE_EXHAUSTED` when it has
    /// [`MAX_STREAMS_PER_AGENT`] open already.
    pub fn open_stream(self: &Arc<Self>, agent: &str) -> Result<StreamSlot, Status> {
        let mut agents = self.lock();
        let slots = agents
            .entry(agent.to_owned())
            .or_insert_with(|| AgentSlots {
                streams: 0,
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_AGENT)),
            });
        if slots.streams >= MAX_STREAMS_PER_AGENT {
            return Err(Status::resource_exhausted(format!(
                "agent {agent:?} has {MAX_STREAMS_PER_AGENT} streams open already; close one \
                 (an agent needs one stream)"
            )));
        }
        slots.streams += 1;
        Ok(StreamSlot {
            limits: Arc::clone(self),
            agent: agent.to_owned(),
            in_flight: Arc::clone(&slots.in_flight),
        })
    }

    /// Streams `agent` has open now.
    pub fn streams(&self, agent: &str) -> usize {
        self.lock().get(agent).map_or(0, |s| s.streams)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentSlots>> {
        // Only counters are held under the lock: a panic cannot leave them inconsistent.
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StreamSlot {
    /// Waits for one of the agent's in-flight places; hold it while the batch is stored. While
    /// waiting nothing more is read from the stream, so HTTP/2 flow control holds the agent back.
    pub async fn in_flight(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut agents = self.limits.lock();
        if let Some(slots) = agents.get_mut(&self.agent) {
            slots.streams = slots.streams.saturating_sub(1);
            if slots.streams == 0 {
                agents.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_agent_and_given_back() {
        let limits = Arc::new(AgentLimits::default());
        let held: Vec<StreamSlot> = (0..MAX_STREAMS_PER_AGENT)
            .map(|_| limits.open_stream("a").unwrap())
            .collect();
        let refused = limits.open_stream("a").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            limits.open_stream("b").is_ok(),
            "another agent is not affected"
        );
        drop(held);
        assert_eq!(limits.streams("a"), 0);
        assert!(limits.open_stream("a").is_ok());
    }
}
