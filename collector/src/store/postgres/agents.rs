//! The `agents` and `agent_events` rows in PostgreSQL: read under the row lock, changed by
//! [`contact`](super::super::contact), written back in the same transaction.

use postgres::Transaction;
use proto::v1::AgentEvent;

use super::to_sql;
use crate::store::{AgentSummary, Contact, StoreError, contact, count};

/// The columns of an `agents` row, in [`AgentSummary`] order (see `read_agent`).
pub(super) const AGENT_COLUMNS: &str = "agent_id, batches, stored, duplicates, first_contact_ns,
    last_contact_ns, last_heartbeat_ns, silent, host, version, instance_id, spool_deviations,
    kernel_lost_total, dropped_total, dropped_seen, heartbeat_interval_ms, last_event_ns,
    event_queue_depth, events_decoded_total";

/// Reads, updates and writes back the agent's row for a contact, and records its events, inside
/// `tx`. The row is locked (`FOR UPDATE`) from the read to the commit, so concurrent contacts of
/// one agent through several replicas apply one after the other.
pub(super) fn record_contact(
    tx: &mut Transaction<'_>,
    agent_id: &str,
    what: Contact<'_>,
    now_ns: i64,
) -> Result<Vec<AgentEvent>, StoreError> {
    let first = tx.execute(
        "INSERT INTO agents (agent_id, first_contact_ns, last_contact_ns) VALUES ($1, $2, $2)
         ON CONFLICT DO NOTHING",
        &[&agent_id, &now_ns],
    )? == 1;
    let row = tx.query_one(
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = $1 FOR UPDATE"),
        &[&agent_id],
    )?;
    let row = (!first).then(|| read_agent(&row));
    let (a, events) = contact(agent_id, row, what, now_ns);
    tx.execute(
        "UPDATE agents SET batches = $2, stored = $3, duplicates = $4, first_contact_ns = $5,
            last_contact_ns = $6, last_heartbeat_ns = $7, silent = $8, host = $9, version = $10,
            instance_id = $11, spool_deviations = $12, kernel_lost_total = $13,
            dropped_total = $14, dropped_seen = $15, heartbeat_interval_ms = $16,
            last_event_ns = $17, event_queue_depth = $18, events_decoded_total = $19
         WHERE agent_id = $1",
        &[
            &a.agent_id,
            &to_sql(a.batches),
            &to_sql(a.stored),
            &to_sql(a.duplicates),
            &a.first_contact_ns,
            &a.last_contact_ns,
            &a.last_heartbeat_ns,
            &a.silent,
            &a.host,
            &a.version,
            &a.instance_id,
            &to_sql(a.spool_deviations),
            &to_sql(a.kernel_lost_total),
            &to_sql(a.dropped_total),
            &to_sql(a.dropped_seen),
            &to_sql(a.heartbeat_interval_ms),
            &a.last_event_ns,
            &to_sql(a.event_queue_depth),
            &to_sql(a.events_decoded_total),
        ],
    )?;
    insert_events(tx, &events)?;
    Ok(events)
}

pub(super) fn insert_events(
    tx: &mut Transaction<'_>,
    events: &[AgentEvent],
) -> Result<(), StoreError> {
    for e in events {
        tx.execute(
            "INSERT INTO agent_events (agent_id, time_ns, kind, count, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &e.agent_id,
                &e.time_unix_nanos,
                &e.kind,
                &to_sql(e.count),
                &e.detail,
            ],
        )?;
    }
    Ok(())
}

pub(super) fn read_agent(row: &postgres::Row) -> AgentSummary {
    AgentSummary {
        agent_id: row.get(0),
        batches: count(row.get(1)),
        stored: count(row.get(2)),
        duplicates: count(row.get(3)),
        first_contact_ns: row.get(4),
        last_contact_ns: row.get(5),
        last_heartbeat_ns: row.get(6),
        silent: row.get(7),
        host: row.get(8),
        version: row.get(9),
        instance_id: row.get(10),
        spool_deviations: count(row.get(11)),
        kernel_lost_total: count(row.get(12)),
        dropped_total: count(row.get(13)),
        dropped_seen: count(row.get(14)),
        heartbeat_interval_ms: count(row.get(15)),
        last_event_ns: row.get(16),
        event_queue_depth: count(row.get(17)),
        events_decoded_total: count(row.get(18)),
    }
}
