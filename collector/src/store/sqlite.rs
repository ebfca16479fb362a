//! The SQLite backend: one file, one collector.
//!
//! One connection writes and one reads, each behind a mutex: WAL mode lets the reader see
//! committed data while the writer works. Durability: `synchronous = FULL`, so a batch whose
//! transaction committed survives a power loss.
//!
//! Ingest CPU (≥ 200k deviations per collector core-second is the target): a batch's deviations
//! go in with multi-row INSERTs, and batches arriving together share one transaction (group
//! commit, [`Sqlite::store_batch`]): most of SQLite's cost per batch was its own commit.

mod migrations;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};

use prost::Message;
use proto::v1::{AgentEvent, AgentStatus, Deviation, ListDeviationsRequest, StoredDeviation};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter,
    types::Value,
};

use super::{
    AgentFilter, AgentSummary, Arg, BatchKey, BatchOutcome, Contact, DEVIATION_COLUMNS,
    EntryBudget, IncidentEntries, IncidentSummary, IncidentsPage, PRUNE_CHUNK, StoreError,
    WorkloadSummary, contact, count, filter_conditions, incident_conditions, limit,
    sequence_to_sql, silent_event, split_more, stored_deviation,
};
use super::{BaselineUpdate, StoredBaseline, decode_baseline};
use crate::convert::DeviationRow;
use migrations::MIGRATIONS;

/// The columns of an `agents` row, in [`AgentSummary`] order (see `read_agent`).
const AGENT_COLUMNS: &str = "agent_id, batches, stored, duplicates, first_contact_ns,
    last_contact_ns, last_heartbeat_ns, silent, host, version, instance_id, spool_deviations,
    kernel_lost_total, dropped_total, dropped_seen, heartbeat_interval_ms, last_event_ns,
    event_queue_depth, events_decoded_total";

pub struct Sqlite {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// `store_batch` calls waiting for the writer: while there is one, a batch leaves the group
    /// transaction open for it to join (see [`Sqlite::store_batch`]).
    waiting: AtomicUsize,
    /// Which groups have committed, for the batches waiting on theirs.
    commits: Mutex<Commits>,
    committed: Condvar,
}

/// The writing connection and the group transaction open on it.
struct Writer {
    conn: Connection,
    /// The open group: its number and the batches in it.
    group: Option<(u64, usize)>,
    next_group: u64,
}

/// The last group committed (or rolled back), and the recent groups whose commit failed.
#[derive(Default)]
struct Commits {
    done: u64,
    failed: VecDeque<(u64, String)>,
}

/// Batches stored in one group transaction at most, so that acknowledgements keep coming.
const MAX_GROUP_BATCHES: usize = 16;
/// Failed groups remembered for their waiters (they read it right after the commit).
const FAILED_GROUPS_KEPT: usize = 64;

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        migrate(&writer, path)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        Ok(Sqlite {
            writer: Mutex::new(Writer {
                conn: writer,
                group: None,
                next_group: 1,
            }),
            reader: Mutex::new(reader),
            waiting: AtomicUsize::new(0),
            commits: Mutex::default(),
            committed: Condvar::new(),
        })
    }

    /// Stores a batch with group commit: batches arriving together (several agents, several in
    /// flight each) share one transaction, so one commit (one WAL sync, each touched page
    /// written once) serves them all. A batch that fails rolls its whole group back: none of
    /// the group's batches is acknowledged and their agents send them again (a failure here is
    /// the database's, not one batch's: rows are bound from validated values, and a savepoint
    /// per batch cost ~10 % of ingest CPU in copies of pages into the sub-journal, measured in
    /// BENCHMARKS.md). A batch that sees another waiting for the writer leaves the
    /// group open for it and waits for the commit; the last one commits. Nobody returns before
    /// the group holding its batch committed, so an acknowledgement still means "stored".
    pub fn store_batch(
        &self,
        key: BatchKey<'_>,
        deviations: Vec<Deviation>,
        received_ns: i64,
    ) -> Result<BatchOutcome, StoreError> {
        // Encoded before the writer is taken: batches in flight encode side by side.
        let rows: Vec<DeviationRow> = deviations.into_iter().map(DeviationRow::from).collect();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = lock(&self.writer);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let (group, batches) = match writer.group {
            Some((group, batches)) => (group, batches + 1),
            None => {
                writer.conn.execute_batch("BEGIN IMMEDIATE")?;
                writer.next_group += 1;
                (writer.next_group - 1, 1)
            }
        };
        writer.group = Some((group, batches));
        let stored = match store_one(&writer.conn, key, &rows, received_ns) {
            Ok(stored) => stored,
            Err(e) => {
                self.roll_back_group(&mut writer, &e);
                return Err(e);
            }
        };
        if batches < MAX_GROUP_BATCHES && self.waiting.load(Ordering::SeqCst) > 0 {
            // The waiting batch joins this group and commits it (or passes it on in turn).
            drop(writer);
            self.wait_for_commit(group)?;
        } else {
            self.commit_group(&mut writer)?;
        }
        Ok(stored)
    }

    /// Commits the open group, if any, and tells its waiting batches.
    fn commit_group(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let Some((group, _)) = writer.group.take() else {
            return Ok(());
        };
        let committed = writer.conn.execute_batch("COMMIT");
        if committed.is_err() {
            // A failed COMMIT leaves the transaction open: undo it, none of its batches is
            // acknowledged (their agents send them again).
            let _ = writer.conn.execute_batch("ROLLBACK");
        }
        self.group_done(group, committed.as_ref().err().map(ToString::to_string));
        Ok(committed?)
    }

    /// Undoes the open group after one of its batches failed, and tells its waiting batches.
    fn roll_back_group(&self, writer: &mut Writer, error: &StoreError) {
        let Some((group, _)) = writer.group.take() else {
            return;
        };
        // SQLite may have rolled back already (a full disk does): then there is nothing to undo.
        let _ = writer.conn.execute_batch("ROLLBACK");
        self.group_done(
            group,
            Some(format!(
                "a batch stored in the same transaction failed: {error}"
            )),
        );
    }

    /// Records how `group` ended (`failure` when nothing of it was kept) and wakes its batches.
    fn group_done(&self, group: u64, failure: Option<String>) {
        let mut commits = lock(&self.commits);
        commits.done = group;
        if let Some(failure) = failure {
            commits.failed.push_back((group, failure));
            if commits.failed.len() > FAILED_GROUPS_KEPT {
                commits.failed.pop_front();
            }
        }
        self.committed.notify_all();
    }

    /// Waits until `group` committed; `Err` when its commit failed.
    fn wait_for_commit(&self, group: u64) -> Result<(), StoreError> {
        let mut commits = lock(&self.commits);
        while commits.done < group {
            commits = self
                .committed
                .wait(commits)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        match commits.failed.iter().find(|(g, _)| *g == group) {
            Some((_, e)) => Err(StoreError::GroupCommit(e.clone())),
            None => Ok(()),
        }
    }

    /// The writing connection, with no group transaction open (committed first): for writes
    /// outside `store_batch`.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let mut writer = lock(&self.writer);
        self.commit_group(&mut writer)?;
        Ok(writer)
    }

    pub fn heartbeat(
        &self,
        agent_id: &str,
        status: &AgentStatus,
        received_ns: i64,
    ) -> Result<Vec<AgentEvent>, StoreError> {
        let mut writer = self.writer()?;
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let events = record_contact(&tx, agent_id, Contact::Heartbeat(status), received_ns)?;
        tx.commit()?;
        Ok(events)
    }

    pub fn mark_silent(&self, before_ns: i64, now_ns: i64) -> Result<Vec<AgentEvent>, StoreError> {
        let mut writer = self.writer()?;
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let silenced: Vec<(String, i64)> = {
            let mut update = tx.prepare_cached(
                "UPDATE agents SET silent = 1 WHERE silent = 0 AND last_contact_ns < ?1
                 RETURNING agent_id, last_contact_ns",
            )?;
            update
                .query_map([before_ns], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let events: Vec<AgentEvent> = silenced
            .iter()
            .map(|(agent, last)| silent_event(agent, *last, now_ns))
            .collect();
        insert_events(&tx, &events)?;
        tx.commit()?;
        Ok(events)
    }

    pub fn prune(&self, before_ns: i64) -> Result<u64, StoreError> {
        let writer = self.writer()?;
        let conn = &writer.conn;
        let deleted = conn.execute(
            "DELETE FROM deviations WHERE rowid IN
                (SELECT rowid FROM deviations WHERE time_ns < ?1 LIMIT ?2)",
            params![before_ns, PRUNE_CHUNK],
        )?;
        conn.execute(
            "DELETE FROM batches WHERE (agent_id, spool_id, sequence) IN
                (SELECT agent_id, spool_id, sequence FROM batches WHERE received_ns < ?1 LIMIT ?2)",
            params![before_ns, PRUNE_CHUNK],
        )?;
        conn.execute(
            "DELETE FROM agent_events WHERE id IN
                (SELECT id FROM agent_events WHERE time_ns < ?1 LIMIT ?2)",
            params![before_ns, PRUNE_CHUNK],
        )?;
        Ok(deleted as u64)
    }

    pub fn list(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<StoredDeviation>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let sql = format!(
            "SELECT {DEVIATION_COLUMNS} FROM deviations{filter}
             ORDER BY time_ns DESC, id LIMIT ?"
        );
        args.push(Value::Integer(limit(request.limit).into()));
        read_deviations(&lock(&self.reader), &sql, args)
    }

    pub fn workloads(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<WorkloadSummary>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let sql = format!(
            "SELECT workload_id, MAX(workload_kind), COUNT(*),
                    SUM(severity = 0), SUM(severity = 1), SUM(severity = 2), SUM(severity = 3),
                    SUM(severity = 4), SUM(severity = 5),
                    COUNT(DISTINCT run_id), COUNT(DISTINCT host), MIN(time_ns), MAX(time_ns)
             FROM deviations{filter} GROUP BY workload_id ORDER BY MAX(time_ns) DESC, workload_id
             LIMIT ?"
        );
        args.push(Value::Integer(limit(request.limit).into()));
        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(args), |row| {
            let mut by_severity = [0u64; 6];
            for (i, n) in by_severity.iter_mut().enumerate() {
                *n = count(row.get(3 + i)?);
            }
            Ok(WorkloadSummary {
                id: row.get(0)?,
                kind: row.get(1)?,
                deviations: count(row.get(2)?),
                by_severity,
                runs: count(row.get(9)?),
                hosts: count(row.get(10)?),
                first_ns: row.get(11)?,
                last_ns: row.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn incidents(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        read_incidents(&lock(&self.reader), request, limit(request.limit))
    }

    pub fn incidents_with_entries(
        &self,
        request: &ListDeviationsRequest,
        limit_to: u32,
        budget: EntryBudget,
    ) -> Result<IncidentsPage, StoreError> {
        let conn = lock(&self.reader);
        // One read transaction: the entries come from the snapshot the summaries were read in.
        let tx = conn.unchecked_transaction()?;
        let summaries = read_incidents(&tx, request, limit_to + 1)?;
        let (summaries, more) = split_more(summaries, limit_to);
        let per_incident = budget.per(summaries.len());
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let (filter, mut args) = where_sql(incident_conditions(request, &summary));
            let sql = format!(
                "SELECT {DEVIATION_COLUMNS} FROM deviations{filter}
                 ORDER BY time_ns DESC, id DESC LIMIT ?"
            );
            args.push(Value::Integer(per_incident.into()));
            let mut entries = read_deviations(&tx, &sql, args)?;
            entries.reverse();
            out.push(IncidentEntries { summary, entries });
        }
        tx.commit()?;
        Ok(IncidentsPage {
            incidents: out,
            more,
        })
    }

    pub fn agents(&self, filter: AgentFilter) -> Result<Vec<AgentSummary>, StoreError> {
        let conn = lock(&self.reader);
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE silent = 1 OR ?1 = 0
             ORDER BY last_contact_ns DESC, agent_id LIMIT ?2"
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let rows =
            statement.query_map(params![filter.silent_only, limit(filter.limit)], read_agent)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn agent_events(&self, limit_to: u32) -> Result<Vec<AgentEvent>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(
            "SELECT agent_id, time_ns, kind, count, detail FROM agent_events
             ORDER BY time_ns DESC, id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit(limit_to)], |row| {
            Ok(AgentEvent {
                agent_id: row.get(0)?,
                time_unix_nanos: row.get(1)?,
                kind: row.get(2)?,
                count: count(row.get(3)?),
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// One batch inside the group transaction: its key (a resent batch stores nothing), its
/// deviations, the agent's contact.
fn store_one(
    conn: &Connection,
    key: BatchKey<'_>,
    deviations: &[DeviationRow],
    received_ns: i64,
) -> Result<BatchOutcome, StoreError> {
    let total = u32::try_from(deviations.len()).unwrap_or(u32::MAX);
    let seen: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM batches WHERE agent_id = ?1 AND spool_id = ?2 AND sequence = ?3",
        )?
        .query_row(
            params![key.agent_id, key.spool_id, sequence_to_sql(key.sequence)],
            |row| row.get(0),
        )
        .optional()?;
    if seen.is_some() {
        let outcome = BatchOutcome {
            stored: 0,
            duplicates: total,
            resent: true,
        };
        record_contact(conn, key.agent_id, Contact::Batch(&outcome), received_ns)?;
        return Ok(outcome);
    }
    let stored = insert_deviations(conn, key.agent_id, deviations, received_ns)?;
    let duplicates = total - stored;
    conn.prepare_cached(
        "INSERT INTO batches (agent_id, spool_id, sequence, received_ns, stored, duplicates)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        key.agent_id,
        key.spool_id,
        sequence_to_sql(key.sequence),
        received_ns,
        stored,
        duplicates
    ])?;
    let outcome = BatchOutcome {
        stored,
        duplicates,
        resent: false,
    };
    record_contact(conn, key.agent_id, Contact::Batch(&outcome), received_ns)?;
    Ok(outcome)
}

/// Rows per multi-row INSERT, largest first: a batch is inserted with as many statements of the
/// largest size as fit, then the smaller ones for the rest, so that every statement text is one
/// of these few and stays in the prepared-statement cache. One statement for 64 rows costs far
/// less than 64 single-row ones (one VDBE program run, one bind/reset), which is most of
/// SQLite's CPU per deviation. 64 rows × 12 parameters stays well below SQLite's 32,766 limit.
const INSERT_ROWS: [usize; 4] = [64, 16, 4, 1];

/// The statements for [`INSERT_ROWS`], built once.
static INSERT_SQL: LazyLock<Vec<String>> =
    LazyLock::new(|| INSERT_ROWS.iter().map(|&rows| insert_sql(rows)).collect());

/// The per-row columns of a deviation; `agent_id` and `received_ns` are the batch's (`?1`, `?2`).
const ROW_PARAMS: usize = 12;

/// Inserts a batch's deviations (a repeat of an `(agent_id, workload_id, run_id, id)` already
/// stored is skipped); returns how many were new.
fn insert_deviations(
    tx: &Connection,
    agent_id: &str,
    deviations: &[DeviationRow],
    received_ns: i64,
) -> Result<u32, StoreError> {
    let mut stored = 0usize;
    let mut rest = deviations;
    for (rows, sql) in INSERT_ROWS.iter().zip(INSERT_SQL.iter()) {
        let rows = *rows;
        if rest.len() < rows {
            continue;
        }
        let mut insert = tx.prepare_cached(sql)?;
        while rest.len() >= rows {
            let (chunk, tail) = rest.split_at(rows);
            rest = tail;
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + rows * ROW_PARAMS);
            values.push(&agent_id);
            values.push(&received_ns);
            for row in chunk {
                values.extend_from_slice(&[
                    &row.id as &dyn rusqlite::ToSql,
                    &row.time_ns,
                    &row.host,
                    &row.workload_id,
                    &row.workload_kind,
                    &row.run_id,
                    &row.kind,
                    &row.severity,
                    &row.summary,
                    &row.executable,
                    &row.body,
                    &row.incident_id,
                ]);
            }
            stored += insert.execute(values.as_slice())?;
        }
    }
    Ok(u32::try_from(stored).unwrap_or(u32::MAX))
}

/// `INSERT OR IGNORE` of `rows` deviations in one statement (`?1` agent, `?2` receipt time).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO deviations (agent_id, received_ns, id, time_ns, host, workload_id,
            workload_kind, run_id, kind, severity, summary, executable, proto, incident_id)
         VALUES ",
    );
    for row in 0..rows {
        let first = 3 + row * ROW_PARAMS;
        let params: Vec<String> = (first..first + ROW_PARAMS)
            .map(|n| format!("?{n}"))
            .collect();
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(?1, ?2, {})", params.join(", ")));
    }
    sql
}

/// Reads, updates and writes back the agent's row for a contact, and records its events, inside
/// `tx` (an IMMEDIATE transaction: no other writer can change the row meanwhile).
fn record_contact(
    tx: &Connection,
    agent_id: &str,
    what: Contact<'_>,
    now_ns: i64,
) -> Result<Vec<AgentEvent>, StoreError> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1"
        ))?
        .query_row([agent_id], read_agent)
        .optional()?;
    let (agent, events) = contact(agent_id, row, what, now_ns);
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO agents ({AGENT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19)"
    ))?
    .execute(params![
        agent.agent_id,
        to_sql(agent.batches),
        to_sql(agent.stored),
        to_sql(agent.duplicates),
        agent.first_contact_ns,
        agent.last_contact_ns,
        agent.last_heartbeat_ns,
        agent.silent,
        agent.host,
        agent.version,
        agent.instance_id,
        to_sql(agent.spool_deviations),
        to_sql(agent.kernel_lost_total),
        to_sql(agent.dropped_total),
        to_sql(agent.dropped_seen),
        to_sql(agent.heartbeat_interval_ms),
        agent.last_event_ns,
        to_sql(agent.event_queue_depth),
        to_sql(agent.events_decoded_total),
    ])?;
    insert_events(tx, &events)?;
    Ok(events)
}

fn insert_events(tx: &Connection, events: &[AgentEvent]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO agent_events (agent_id, time_ns, kind, count, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in events {
        insert.execute(params![
            e.agent_id,
            e.time_unix_nanos,
            e.kind,
            to_sql(e.count),
            e.detail
        ])?;
    }
    Ok(())
}

fn read_agent(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentSummary> {
    Ok(AgentSummary {
        agent_id: row.get(0)?,
        batches: count(row.get(1)?),
        stored: count(row.get(2)?),
        duplicates: count(row.get(3)?),
        first_contact_ns: row.get(4)?,
        last_contact_ns: row.get(5)?,
        last_heartbeat_ns: row.get(6)?,
        silent: row.get(7)?,
        host: row.get(8)?,
        version: row.get(9)?,
        instance_id: row.get(10)?,
        spool_deviations: count(row.get(11)?),
        kernel_lost_total: count(row.get(12)?),
        dropped_total: count(row.get(13)?),
        dropped_seen: count(row.get(14)?),
        heartbeat_interval_ms: count(row.get(15)?),
        last_event_ns: row.get(16)?,
        event_queue_depth: count(row.get(17)?),
        events_decoded_total: count(row.get(18)?),
    })
}

/// A counter as a signed column (saturating; counters never get near 2^63).
fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Runs `sql` (selecting [`DEVIATION_COLUMNS`]) and decodes its deviations.
fn read_deviations(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
) -> Result<Vec<StoredDeviation>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let columns = DeviationRow {
            id: row.get(0)?,
            time_ns: row.get(1)?,
            host: row.get(2)?,
            workload_id: row.get(3)?,
            workload_kind: row.get(4)?,
            run_id: row.get(5)?,
            kind: row.get(6)?,
            severity: row.get(7)?,
            summary: row.get(8)?,
            executable: row.get(9)?,
            incident_id: row.get(10)?,
            body: row.get(11)?,
        };
        out.push(stored_deviation(columns, row.get(12)?, row.get(13)?)?);
    }
    Ok(out)
}

/// The incidents matching `request`'s filters, latest first, at most `limit_to`.
fn read_incidents(
    conn: &Connection,
    request: &ListDeviationsRequest,
    limit_to: u32,
) -> Result<Vec<IncidentSummary>, StoreError> {
    let (filter, mut args) = filter_sql(request);
    let sql = format!(
        "SELECT workload_id, MAX(workload_kind), run_id, COUNT(*), MAX(severity),
                GROUP_CONCAT(DISTINCT kind), COUNT(DISTINCT host), MIN(host),
                MIN(time_ns), MAX(time_ns), incident_id
         FROM deviations{filter} GROUP BY workload_id, run_id, incident_id
         ORDER BY MAX(time_ns) DESC, workload_id, run_id, incident_id LIMIT ?"
    );
    args.push(Value::Integer(limit_to.into()));
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(args), |row| {
        let kinds: String = row.get(5)?;
        let mut kinds: Vec<i32> = kinds.split(',').filter_map(|k| k.parse().ok()).collect();
        kinds.sort_unstable();
        Ok(IncidentSummary {
            workload_id: row.get(0)?,
            workload_kind: row.get(1)?,
            run_id: row.get(2)?,
            deviations: count(row.get(3)?),
            max_severity: row.get(4)?,
            kinds,
            hosts: count(row.get(6)?),
            host: row.get(7)?,
            first_ns: row.get(8)?,
            last_ns: row.get(9)?,
            incident_id: row.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The ` WHERE …` clause (or nothing) for the filters set in `request`, with its arguments.
fn filter_sql(request: &ListDeviationsRequest) -> (String, Vec<Value>) {
    where_sql(filter_conditions(request))
}

/// The ` WHERE …` clause (or nothing) joining `conditions`, with their arguments.
fn where_sql((conditions, args): (Vec<&'static str>, Vec<Arg>)) -> (String, Vec<Value>) {
    let args = args
        .into_iter()
        .map(|a| match a {
            Arg::Text(t) => Value::Text(t),
            Arg::Int(i) => Value::Integer(i),
        })
        .collect();
    if conditions.is_empty() {
        (String::new(), args)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), args)
    }
}

/// Connection settings: WAL, full durability, wait rather than fail when the file is busy.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Taken by a new database only (an existing one keeps its own): 16 KiB pages need a quarter
    // of the B-tree balancing, page lookups and WAL frames of 4 KiB ones per stored deviation
    // (+9 % to +26 % ingest per core; 64 KiB was slower again, each commit rewriting whole
    // pages; BENCHMARKS.md).
    conn.pragma_update(None, "page_size", 16384)?;
    // Statement journals (a multi-row INSERT may abort halfway) in memory, not temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Reading the journal mode touches the file header: a file that is not a database fails here.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "database did not switch to WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Applies the migrations the database does not have yet, each in its own transaction.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(open_err)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: PathBuf::from(path),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let next = index + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {migration}; PRAGMA user_version = {next}; COMMIT;"
        ))
        .map_err(open_err)?;
        tracing::info!(path = %path.display(), version = next, "database schema migrated");
    }
    Ok(())
}

/// Locks a connection. A panic while holding it cannot leave a transaction half-applied (rusqlite
/// rolls back on drop), so a poisoned mutex is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Merged baselines and each agent's contribution (`baselines.rs`).
impl Sqlite {
    pub fn update_baseline(
        &self,
        workload_id: &str,
        update: BaselineUpdate<'_>,
        now_ns: i64,
    ) -> Result<StoredBaseline, StoreError> {
        let mut writer = self.writer()?;
        // IMMEDIATE: the write lock is taken before the reads, so no report is lost.
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = read_merged(&tx, workload_id)?;
        match update.contribution {
            Some((agent_id, Some(merge_one))) => {
                let mine = tx
                    .query_row(
                        "SELECT body FROM baseline_contributions
                         WHERE workload_id = ?1 AND agent_id = ?2",
                        params![workload_id, agent_id],
                        |row| row.get::<_, Vec<u8>>(0),
                    )
                    .optional()?
                    .map(|body| decode_baseline(workload_id, &body, agent_id))
                    .transpose()?;
                let mine = merge_one(mine);
                tx.execute(
                    "INSERT INTO baseline_contributions (workload_id, agent_id, body, updated_ns)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (workload_id, agent_id) DO UPDATE
                     SET body = excluded.body, updated_ns = excluded.updated_ns",
                    params![workload_id, agent_id, mine.baseline.encode_to_vec(), now_ns],
                )?;
            }
            Some((agent_id, None)) => {
                tx.execute(
                    "DELETE FROM baseline_contributions WHERE workload_id = ?1 AND agent_id = ?2",
                    params![workload_id, agent_id],
                )?;
            }
            None => {}
        }
        let contributions = read_contributions(&tx, workload_id)?;
        let frozen = update
            .frozen
            .unwrap_or_else(|| old.as_ref().is_some_and(|o| o.frozen));
        let mut merged = (update.merge)(contributions, old);
        merged.frozen = frozen;
        tx.execute(
            "INSERT INTO merged_baselines (workload_id, body, agent_ids, updated_ns, frozen)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (workload_id) DO UPDATE
             SET body = excluded.body, agent_ids = excluded.agent_ids,
                 updated_ns = excluded.updated_ns, frozen = excluded.frozen",
            params![
                workload_id,
                merged.baseline.encode_to_vec(),
                merged.agent_ids.join("\n"),
                now_ns,
                merged.frozen,
            ],
        )?;
        tx.commit()?;
        Ok(merged)
    }

    pub fn baseline(&self, workload_id: &str) -> Result<Option<StoredBaseline>, StoreError> {
        read_merged(&lock(&self.reader), workload_id)
    }

    pub fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(
            "SELECT workload_id, body, agent_ids, frozen FROM merged_baselines
             ORDER BY workload_id",
        )?;
        let rows: Vec<(String, Vec<u8>, String, bool)> = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(workload, body, agents, frozen)| {
                let mut b = decode_baseline(&workload, &body, &agents)?;
                b.frozen = frozen;
                Ok(b)
            })
            .collect()
    }

    pub fn contributions(&self, workload_id: &str) -> Result<Vec<StoredBaseline>, StoreError> {
        read_contributions(&lock(&self.reader), workload_id)
    }
}

fn read_merged(conn: &Connection, workload_id: &str) -> Result<Option<StoredBaseline>, StoreError> {
    conn.query_row(
        "SELECT body, agent_ids, frozen FROM merged_baselines WHERE workload_id = ?1",
        [workload_id],
        |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, bool>(2)?,
            ))
        },
    )
    .optional()?
    .map(|(body, agents, frozen)| {
        let mut b = decode_baseline(workload_id, &body, &agents)?;
        b.frozen = frozen;
        Ok(b)
    })
    .transpose()
}

fn read_contributions(
    conn: &Connection,
    workload_id: &str,
) -> Result<Vec<StoredBaseline>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT agent_id, body FROM baseline_contributions WHERE workload_id = ?1
         ORDER BY agent_id",
    )?;
    let rows: Vec<(String, Vec<u8>)> = statement
        .query_map([workload_id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(agent, body)| decode_baseline(workload_id, &body, &agent))
        .collect()
}
