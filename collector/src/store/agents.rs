//! Agents as the collector knows them: the `agents` row, and what a contact (a stored batch or
//! a heartbeat) changes in it — first contact, back after a silence, deviations reported dropped —
//! decided here once for both backends, which only read and write the rows.

use proto::v1::{AgentEvent, AgentEventKind, AgentStatus};

use super::BatchOutcome;

/// An agent as the collector knows it: its `agents` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    pub agent_id: String,
    /// Batches stored (resent copies are acknowledged, not recorded).
    pub batches: u64,
    /// Deviations newly stored, and already stored ones, over those batches.
    pub stored: u64,
    pub duplicates: u64,
    /// First and last contact (batch or heartbeat), ns since the epoch.
    pub first_contact_ns: i64,
    pub last_contact_ns: i64,
    /// Last heartbeat, ns since the epoch (0 before the first).
    pub last_heartbeat_ns: i64,
    /// Not heard from for longer than the collector's `agent_silence`.
    pub silent: bool,
    /// From its last heartbeat.
    pub host: String,
    pub version: String,
    pub instance_id: String,
    pub spool_deviations: u64,
    pub kernel_lost_total: u64,
    /// Deviations the agent reported dropped, over all its runs.
    pub dropped_total: u64,
    /// The `dropped_total` of the last heartbeat of run `instance_id` (to count only increases).
    pub dropped_seen: u64,
    /// Pipeline liveness from its last heartbeat: its heartbeat interval, when it last decoded a
    /// kernel record (its clock; 0 = never since it started), records waiting to be judged, and
    /// records decoded since it started.
    pub heartbeat_interval_ms: u64,
    pub last_event_ns: i64,
    pub event_queue_depth: u64,
    pub events_decoded_total: u64,
}

/// Heartbeat intervals an agent's pipeline may go without decoding, with records waiting, before
/// it shows as stalled (a few, so that a slow moment or clock skew between agent and collector
/// does not flag it).
pub const STALL_INTERVALS: i64 = 3;

impl AgentSummary {
    /// Whether the agent is alive but blind: its heartbeats arrive, yet its last decoded record is
    /// older than [`STALL_INTERVALS`] heartbeat intervals before its last heartbeat while records
    /// wait in its queue, or it has never decoded one [`STALL_INTERVALS`] intervals after it
    /// started talking. A silent agent is silent, not stalled.
    pub fn stalled(&self) -> bool {
        if self.silent || self.last_heartbeat_ns == 0 || self.heartbeat_interval_ms == 0 {
            return false;
        }
        let window_ns = STALL_INTERVALS
            .saturating_mul(i64::try_from(self.heartbeat_interval_ms).unwrap_or(i64::MAX))
            .saturating_mul(1_000_000);
        if self.events_decoded_total == 0 {
            return self.last_heartbeat_ns.saturating_sub(self.first_contact_ns) > window_ns;
        }
        self.event_queue_depth > 0
            && self.last_event_ns < self.last_heartbeat_ns.saturating_sub(window_ns)
    }
}

/// Which agents [`Store::agents_matching`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFilter {
    /// At most this many (0 for the default).
    pub limit: u32,
    /// Only agents marked silent.
    pub silent_only: bool,
}

/// A contact from an agent: a stored batch or a heartbeat.
#[derive(Debug, Clone, Copy)]
pub enum Contact<'a> {
    Batch(&'a BatchOutcome),
    Heartbeat(&'a AgentStatus),
}

/// What an agent's contact changes: its new row and the events to record.
///
/// `row` is the agent's row as stored (read under the transaction's lock), `None` the first time.
pub fn contact(
    agent_id: &str,
    row: Option<AgentSummary>,
    what: Contact<'_>,
    now_ns: i64,
) -> (AgentSummary, Vec<AgentEvent>) {
    let mut events = Vec::new();
    let event = |kind: AgentEventKind, count: u64, detail: String| AgentEvent {
        agent_id: agent_id.to_owned(),
        time_unix_nanos: now_ns,
        kind: kind.into(),
        count,
        detail,
    };
    let mut agent = match row {
        Some(row) => row,
        None => {
            events.push(event(
                AgentEventKind::FirstContact,
                0,
                "first contact".to_owned(),
            ));
            AgentSummary {
                agent_id: agent_id.to_owned(),
                first_contact_ns: now_ns,
                ..AgentSummary::default()
            }
        }
    };
    if agent.silent {
        let silence_s =
            u64::try_from((now_ns - agent.last_contact_ns) / 1_000_000_000).unwrap_or(0);
        events.push(event(
            AgentEventKind::Back,
            silence_s,
            format!("heard from again after {silence_s} s of silence"),
        ));
        agent.silent = false;
    }
    // Replicas' clocks and out-of-order commits: contact times only move forward.
    agent.last_contact_ns = agent.last_contact_ns.max(now_ns);
    match what {
        Contact::Batch(outcome) => {
            if !outcome.resent {
                agent.batches += 1;
                agent.stored += u64::from(outcome.stored);
                agent.duplicates += u64::from(outcome.duplicates);
            }
        }
        Contact::Heartbeat(status) => {
            let dropped = if status.instance_id == agent.instance_id {
                status.dropped_total.saturating_sub(agent.dropped_seen)
            } else {
                status.dropped_total
            };
            if status.instance_id != agent.instance_id {
                agent.dropped_seen = 0;
            }
            agent.dropped_seen = agent.dropped_seen.max(status.dropped_total);
            if dropped > 0 {
                agent.dropped_total += dropped;
                events.push(event(
                    AgentEventKind::Dropped,
                    dropped,
                    format!(
                        "the agent dropped {dropped} deviations (spool full or refused as invalid)"
                    ),
                ));
            }
            agent.last_heartbeat_ns = agent.last_heartbeat_ns.max(now_ns);
            agent.instance_id.clone_from(&status.instance_id);
            agent.host.clone_from(&status.host);
            agent.version.clone_from(&status.version);
            agent.spool_deviations = status.spool_deviations;
            agent.kernel_lost_total = status.kernel_lost_total;
            agent.heartbeat_interval_ms = u64::from(status.heartbeat_interval_millis);
            agent.last_event_ns = status.last_event_unix_nanos;
            agent.event_queue_depth = status.event_queue_depth;
            agent.events_decoded_total = status.events_decoded_total;
        }
    }
    (agent, events)
}

/// The `SILENT` event of an agent last heard from at `last_contact_ns`.
pub(super) fn silent_event(agent_id: &str, last_contact_ns: i64, now_ns: i64) -> AgentEvent {
    let silence_s = u64::try_from((now_ns - last_contact_ns) / 1_000_000_000).unwrap_or(0);
    AgentEvent {
        agent_id: agent_id.to_owned(),
        time_unix_nanos: now_ns,
        kind: AgentEventKind::Silent.into(),
        count: silence_s,
        detail: format!("no contact for {silence_s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(instance: &str, dropped: u64) -> AgentStatus {
        AgentStatus {
            instance_id: instance.to_owned(),
            dropped_total: dropped,
            ..AgentStatus::default()
        }
    }

    fn kinds(events: &[AgentEvent]) -> Vec<AgentEventKind> {
        events.iter().map(|e| e.kind()).collect()
    }

    #[test]
    fn dropped_counts_only_increases_within_a_run_and_all_of_a_new_run() {
        let (row, events) = contact("a", None, Contact::Heartbeat(&status("r1", 0)), 10);
        assert_eq!(kinds(&events), [AgentEventKind::FirstContact]);
        let (row, events) = contact("a", Some(row), Contact::Heartbeat(&status("r1", 5)), 20);
        assert_eq!(kinds(&events), [AgentEventKind::Dropped]);
        assert_eq!(events[0].count, 5);
        // The same heartbeat again (resent, or through another replica): nothing new.
        let (row, events) = contact("a", Some(row), Contact::Heartbeat(&status("r1", 5)), 30);
        assert!(events.is_empty());
        // A new instance (a new spool): its count starts again from 0.
        let (row, events) = contact("a", Some(row), Contact::Heartbeat(&status("r2", 2)), 40);
        assert_eq!(events[0].count, 2);
        assert_eq!((row.dropped_total, row.last_contact_ns), (7, 40));
    }

    #[test]
    fn an_agent_that_heartbeats_but_does_not_decode_is_stalled() {
        const S: i64 = 1_000_000_000;
        let beat = |last_event_s: i64, queue: u64, decoded: u64| AgentStatus {
            heartbeat_interval_millis: 30_000,
            last_event_unix_nanos: last_event_s * S,
            event_queue_depth: queue,
            events_decoded_total: decoded,
            ..AgentStatus::default()
        };
        let (row, _) = contact("a", None, Contact::Heartbeat(&beat(0, 0, 0)), 1_000 * S);
        assert!(!row.stalled(), "just started: not decoding yet is fine");
        let (row, _) = contact(
            "a",
            Some(row),
            Contact::Heartbeat(&beat(0, 0, 0)),
            1_200 * S,
        );
        assert!(row.stalled(), "three intervals and it never decoded");
        let (row, _) = contact(
            "a",
            Some(row),
            Contact::Heartbeat(&beat(1_190, 5, 9)),
            1_210 * S,
        );
        assert!(!row.stalled(), "decoding, a queue is normal");
        let (row, _) = contact(
            "a",
            Some(row),
            Contact::Heartbeat(&beat(1_190, 0, 9)),
            1_400 * S,
        );
        assert!(
            !row.stalled(),
            "nothing decoded lately, but nothing waits: a quiet host"
        );
        let (mut row, _) = contact(
            "a",
            Some(row),
            Contact::Heartbeat(&beat(1_190, 7, 9)),
            1_400 * S,
        );
        assert!(row.stalled(), "records wait and none decoded for 210 s");
        row.silent = true;
        assert!(!row.stalled(), "silent, not stalled");
    }

    #[test]
    fn contact_after_silence_is_an_event_and_clears_it() {
        let outcome = BatchOutcome {
            stored: 2,
            duplicates: 1,
            resent: false,
        };
        let (mut row, _) = contact("a", None, Contact::Batch(&outcome), 1_000_000_000);
        row.silent = true;
        let (row, events) = contact("a", Some(row), Contact::Batch(&outcome), 61_000_000_000);
        assert_eq!(kinds(&events), [AgentEventKind::Back]);
        assert_eq!(events[0].count, 60);
        assert!(!row.silent);
        assert_eq!((row.batches, row.stored, row.duplicates), (2, 4, 2));
    }
}
