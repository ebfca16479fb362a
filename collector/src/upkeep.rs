//! The collector's background upkeep: marking silent the agents not heard from for
//! `agent_silence` (a stopped sensor is itself a signal), and deleting deviations older than
//! `retention`, in chunks. Every replica of a fleet runs it; the store makes each silence recorded
//! once and deletions are idempotent.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1::{AgentEvent, AgentEventKind};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::convert::unix_nanos;
use crate::metrics::Metrics;
use crate::store::{PRUNE_CHUNK, Store};

/// Default `agent_silence`: four missed heartbeats at the agent's default 30 s interval.
pub const DEFAULT_AGENT_SILENCE: &str = "2m";
/// Default `retention`: keep everything. Deviations are few (only what departs from a baseline)
/// and are security evidence, so nothing is deleted unless the operator chooses how long to keep.
pub const DEFAULT_RETENTION: &str = "forever";
/// How often retention runs (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// Pause between two retention chunks, so a large purge leaves room to ingest.
const CHUNK_PAUSE: Duration = Duration::from_millis(50);

/// A positive duration written like "30s", "2m", "1h 30m".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Ok(Span(d)),
            _ => Err(format!(
                "invalid duration {text:?}: expected a positive duration such as 30s, 2m or 1h"
            )),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How long deviations are kept: a duration such as "30d", or "forever".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl FromStr for Retention {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("forever") {
            return Ok(Retention(None));
        }
        text.parse::<Span>()
            .map(|s| Retention(Some(s.0)))
            .map_err(|_| {
                format!(
                    "invalid retention {text:?}: expected a duration such as 30d, or \"forever\""
                )
            })
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the upkeep does.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// An agent not heard from (batch or heartbeat) for this long is marked silent.
    pub agent_silence: Duration,
    /// Deviations older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
}

/// Runs the upkeep until `shutdown`. Database errors are logged and retried at the next round.
pub async fn run(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    upkeep: Upkeep,
    shutdown: CancellationToken,
) {
    // Checking four times per silence period marks an agent silent at most 25% late.
    let check_every =
        (upkeep.agent_silence / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let mut silence = tokio::time::interval(check_every);
    silence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = silence.tick() => check_silence(&store, &metrics, upkeep.agent_silence).await,
            _ = retention.tick(), if upkeep.retention.is_some() => {
                if let Some(keep) = upkeep.retention {
                    prune(&store, &metrics, keep, &shutdown).await;
                }
            }
        }
    }
}

/// Marks silent the agents not heard from for `silence`; logs and counts each.
pub async fn check_silence(store: &Arc<Store>, metrics: &Metrics, silence: Duration) {
    let store = Arc::clone(store);
    let now = SystemTime::now();
    let before = unix_nanos(now.checked_sub(silence).unwrap_or(SystemTime::UNIX_EPOCH));
    let result = tokio::task::spawn_blocking(move || {
        let events = store.mark_silent(before, unix_nanos(now))?;
        let silent = store
            .agents_matching(crate::store::AgentFilter {
                limit: crate::store::MAX_QUERY_LIMIT,
                silent_only: true,
            })?
            .len();
        Ok::<_, crate::store::StoreError>((events, silent))
    })
    .await;
    match result {
        Ok(Ok((events, silent))) => {
            for event in &events {
                log_event(event);
            }
            metrics.silence(events.len() as u64, silent as i64);
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot check for silent agents"),
        Err(e) => tracing::error!(error = %e, "silent-agent check failed"),
    }
}

/// Deletes deviations older than `keep`, a chunk at a time, until none is left or shutdown.
pub async fn prune(
    store: &Arc<Store>,
    metrics: &Metrics,
    keep: Duration,
    shutdown: &CancellationToken,
) {
    let before = unix_nanos(
        SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let mut total = 0u64;
    while !shutdown.is_cancelled() {
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || store.prune(before)).await {
            Ok(Ok(deleted)) => {
                total += deleted;
                metrics.pruned(deleted);
                if deleted < u64::from(PRUNE_CHUNK) {
                    break;
                }
                tokio::time::sleep(CHUNK_PAUSE).await;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "retention: cannot delete old deviations");
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "retention failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, retention = %humantime::format_duration(keep), "deleted deviations past retention");
    }
}

/// Logs an agent event: silence and drops as warnings (they mean missing evidence).
pub fn log_event(event: &AgentEvent) {
    let agent_id = event.agent_id.as_str();
    match event.kind() {
        AgentEventKind::Silent => tracing::warn!(
            agent_id,
            silent_for_s = event.count,
            "agent went silent: no batch or heartbeat; a stopped sensor is itself a signal"
        ),
        AgentEventKind::Back => tracing::info!(
            agent_id,
            silent_for_s = event.count,
            "agent heard from again after being silent"
        ),
        AgentEventKind::Dropped => tracing::warn!(
            agent_id,
            dropped = event.count,
            "agent reports deviations it dropped (spool full or refused)"
        ),
        AgentEventKind::FirstContact => tracing::info!(agent_id, "new agent"),
        AgentEventKind::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            "2m".parse::<Span>().unwrap(),
            Span(Duration::from_secs(120))
        );
        assert!("0s".parse::<Span>().is_err());
        assert!("soon".parse::<Span>().unwrap_err().contains("30s"));
        assert_eq!("forever".parse::<Retention>().unwrap(), Retention(None));
        assert_eq!(
            "30d".parse::<Retention>().unwrap(),
            Retention(Some(Duration::from_secs(30 * 86_400)))
        );
        assert!("-1".parse::<Retention>().unwrap_err().contains("forever"));
    }
}
