//! The PostgreSQL backend: the store of a fleet, where several collector replicas behind one
//! address share one database.
//!
//! Why the synchronous `postgres` crate (rust-postgres) with an `r2d2` pool rather than sqlx: the
//! store's API is synchronous (the services already call it through `spawn_blocking`, as SQLite
//! needs), so the same shape serves both backends; rust-postgres is the long-standing, widely used
//! client (sqlx builds on its own re-implementation), needs no compile-time database, and r2d2 is
//! the pool it is commonly used with (`r2d2_postgres`, from the same ecosystem). Connections are
//! plain TCP, a Unix socket (`host=/run/postgresql` or `?host=%2Frun%2Fpostgresql`), or TLS
//! with the server's certificate and name verified (`?sslmode=verify-full&sslrootcert=<CA>`,
//! optionally `&sslcert=…&sslkey=…`; see `tls.rs`).
//!
//! Exactly-once across replicas: a batch's transaction inserts its key first
//! (`ON CONFLICT DO NOTHING`): a replica storing the same batch concurrently blocks on that key
//! until the first commits, then inserts nothing and acknowledges the batch as resent. Deviations
//! are inserted in one statement, sorted by their key (so two batches sharing ids lock them in the
//! same order), `ON CONFLICT (agent_id, workload_id, run_id, id) DO NOTHING`: ids are unique per
//! agent (and its workload and run, which an id hashes), so no agent can make another's deviation
//! a duplicate. The agent's row is read `FOR UPDATE`. A transaction that still loses a
//! serialization or deadlock race is retried.
//!
//! Migrations run in one transaction holding an advisory lock, recorded in `schema_migrations`:
//! replicas starting together migrate once; the others wait and find the schema current.

mod agents;
mod migrations;
mod tls;

use std::time::Duration;

use postgres::Transaction;
use postgres::types::ToSql;
use prost::Message;
use proto::v1::{AgentEvent, AgentStatus, Deviation, ListDeviationsRequest, StoredDeviation};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    AgentFilter, AgentSummary, Arg, BatchKey, BatchOutcome, Contact, DEVIATION_COLUMNS,
    EntryBudget, IncidentEntries, IncidentSummary, IncidentsPage, PRUNE_CHUNK, StoreError,
    WorkloadSummary, count, filter_conditions, incident_conditions, limit, redact, sequence_to_sql,
    silent_event, split_more, stored_deviation,
};
use super::{BaselineUpdate, StoredBaseline, decode_baseline};
use crate::convert::DeviationRow;
use agents::{AGENT_COLUMNS, insert_events, read_agent, record_contact};
use migrations::MIGRATIONS;

/// Connections kept by one collector. Each ingest stream stores through one at a time; queries
/// and the web page take others.
const POOL_SIZE: u32 = 8;
/// How long to wait for a connection (at start: for the server to answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a transaction that lost a serialization or deadlock race.
const ATTEMPTS: u32 = 5;
/// Key of the advisory lock held while migrating ("sensor" in ASCII).
const MIGRATION_LOCK: i64 = 0x7365_6e73_6f72;

/// One connector type whether or not TLS is on (see `tls.rs`), so one pool type.
type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

pub struct Postgres {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
}

impl Drop for Postgres {
    /// Closing a synchronous client blocks on its own runtime, which panics on an async worker
    /// thread (where the last `Arc<Store>` is often dropped, e.g. when the server stops): the
    /// pool is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closing = std::thread::spawn(move || drop(pool));
            if closing.join().is_err() {
                tracing::warn!("closing the PostgreSQL connections panicked");
            }
        }
    }
}

impl Postgres {
    /// Connects to `url`, checks the server answers and migrates the schema.
    pub fn connect(url: &str) -> Result<Postgres, StoreError> {
        let (rest, tls) = tls::split(url)?;
        let mut config: postgres::Config =
            rest.parse()
                .map_err(|e: postgres::Error| StoreError::BadLocation {
                    value: redact(url),
                    reason: e.to_string(),
                })?;
        // `require` makes rust-postgres insist on TLS (the connector verifies the certificate
        // and the host name: verify-full); `disable` never tries it (its default, `prefer`,
        // would try TLS against an empty set of roots).
        config.ssl_mode(if tls.verify_full {
            postgres::config::SslMode::Require
        } else {
            postgres::config::SslMode::Disable
        });
        let connector = tls.connector(url)?;
        let manager = PostgresConnectionManager::new(config.clone(), connector.clone());
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // r2d2 logs every failed attempt itself; the error returned below says it once.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(manager)
            .map_err(|e| StoreError::Connect {
                location: redact(url),
                // The pool only says it timed out: one more attempt says why (a certificate
                // refused, a password wrong, nobody listening).
                reason: match config.connect(connector) {
                    Err(cause) => causes(&cause),
                    Ok(_) => e.to_string(),
                },
            })?;
        let db = Postgres { pool: Some(pool) };
        db.migrate(url)?;
        Ok(db)
    }

    fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>, StoreError>
    {
        let pool = self.pool.as_ref().expect("the pool lives until drop");
        pool.get().map_err(|e| StoreError::Connect {
            location: "the pool".to_owned(),
            reason: e.to_string(),
        })
    }
}

/// An error and its causes, outermost first ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl Postgres {
    /// Runs `body` in a transaction, committing it; retries on serialization failures and
    /// deadlocks (the transaction was rolled back, so running it again is safe).
    fn transaction<T>(
        &self,
        mut body: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client()?;
        let mut attempt = 1;
        loop {
            let result = client
                .transaction()
                .map_err(StoreError::from)
                .and_then(|mut tx| {
                    let value = body(&mut tx)?;
                    tx.commit()?;
                    Ok(value)
                });
            match result {
                Err(StoreError::Postgres(e)) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "transaction lost a race; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn migrate(&self, url: &str) -> Result<(), StoreError> {
        let known = MIGRATIONS.len();
        let applied =
            self.transaction(|tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version            INTEGER PRIMARY KEY,
                    applied_unix_nanos BIGINT  NOT NULL
                )",
                )?;
                let found: i32 = tx
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                        &[],
                    )?
                    .get(0);
                let found = usize::try_from(found).unwrap_or(0);
                if found > known {
                    return Err(StoreError::TooNew {
                        path: redact(url).into(),
                        found: found as i64,
                        known,
                    });
                }
                for (index, migration) in MIGRATIONS.iter().enumerate().skip(found) {
                    tx.batch_execute(migration)?;
                    let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    tx.execute(
                    "INSERT INTO schema_migrations (version, applied_unix_nanos) VALUES ($1, $2)",
                    &[&version, &crate::convert::unix_nanos(std::time::SystemTime::now())],
                )?;
                }
                Ok(found)
            })?;
        if applied < known {
            tracing::info!(
                db = redact(url),
                from = applied,
                to = known,
                "database schema migrated"
            );
        }
        Ok(())
    }

    pub fn store_batch(
        &self,
        key: BatchKey<'_>,
        deviations: Vec<Deviation>,
        received_ns: i64,
    ) -> Result<BatchOutcome, StoreError> {
        let total = u32::try_from(deviations.len()).unwrap_or(u32::MAX);
        let mut rows: Vec<DeviationRow> = deviations.into_iter().map(DeviationRow::from).collect();
        rows.sort_by(|a, b| a.unique_key().cmp(&b.unique_key()));
        let columns = DeviationColumns::new(&rows);
        let sequence = sequence_to_sql(key.sequence);
        self.transaction(|tx| {
            let new = tx.execute(
                "INSERT INTO batches (agent_id, spool_id, sequence, received_ns, stored, duplicates)
                 VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT DO NOTHING",
                &[&key.agent_id, &key.spool_id, &sequence, &received_ns],
            )?;
            if new == 0 {
                let outcome = BatchOutcome {
                    stored: 0,
                    duplicates: total,
                    resent: true,
                };
                record_contact(tx, key.agent_id, Contact::Batch(&outcome), received_ns)?;
                return Ok(outcome);
            }
            let stored = tx.execute(
                "INSERT INTO deviations (id, time_ns, host, workload_id, workload_kind, run_id,
                    kind, severity, summary, executable, agent_id, received_ns, proto,
                    incident_id)
                 SELECT d.id, d.time_ns, d.host, d.workload_id, d.workload_kind, d.run_id,
                    d.kind, d.severity, d.summary, d.executable, $11, $12, d.proto,
                    d.incident_id FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[],
                    $4::TEXT[], $5::INTEGER[], $6::TEXT[], $7::INTEGER[], $8::INTEGER[],
                    $9::TEXT[], $10::TEXT[], $13::BYTEA[], $14::TEXT[])
                    AS d(id, time_ns, host, workload_id, workload_kind, run_id, kind, severity,
                         summary, executable, proto, incident_id)
                 ON CONFLICT (agent_id, workload_id, run_id, id) DO NOTHING",
                &[
                    &columns.id,
                    &columns.time_ns,
                    &columns.host,
                    &columns.workload_id,
                    &columns.workload_kind,
                    &columns.run_id,
                    &columns.kind,
                    &columns.severity,
                    &columns.summary,
                    &columns.executable,
                    &key.agent_id,
                    &received_ns,
                    &columns.proto,
                    &columns.incident_id,
                ],
            )?;
            let stored = u32::try_from(stored).unwrap_or(u32::MAX);
            let duplicates = total - stored;
            tx.execute(
                "UPDATE batches SET stored = $4, duplicates = $5
                 WHERE agent_id = $1 AND spool_id = $2 AND sequence = $3",
                &[
                    &key.agent_id,
                    &key.spool_id,
                    &sequence,
                    &(stored as i32),
                    &(duplicates as i32),
                ],
            )?;
            let outcome = BatchOutcome {
                stored,
                duplicates,
                resent: false,
            };
            record_contact(tx, key.agent_id, Contact::Batch(&outcome), received_ns)?;
            Ok(outcome)
        })
    }

    pub fn heartbeat(
        &self,
        agent_id: &str,
        status: &AgentStatus,
        received_ns: i64,
    ) -> Result<Vec<AgentEvent>, StoreError> {
        self.transaction(|tx| record_contact(tx, agent_id, Contact::Heartbeat(status), received_ns))
    }

    pub fn mark_silent(&self, before_ns: i64, now_ns: i64) -> Result<Vec<AgentEvent>, StoreError> {
        self.transaction(|tx| {
            // A replica doing the same at the same moment waits on the rows, re-checks `silent`
            // and skips them: each silence is recorded once.
            let rows = tx.query(
                "UPDATE agents SET silent = TRUE WHERE silent = FALSE AND last_contact_ns < $1
                 RETURNING agent_id, last_contact_ns",
                &[&before_ns],
            )?;
            let events: Vec<AgentEvent> = rows
                .iter()
                .map(|r| silent_event(r.get(0), r.get(1), now_ns))
                .collect();
            insert_events(tx, &events)?;
            Ok(events)
        })
    }

    pub fn prune(&self, before_ns: i64) -> Result<u64, StoreError> {
        let chunk = i64::from(PRUNE_CHUNK);
        self.transaction(|tx| {
            let deleted = tx.execute(
                "DELETE FROM deviations WHERE (agent_id, workload_id, run_id, id) IN
                    (SELECT agent_id, workload_id, run_id, id FROM deviations
                     WHERE time_ns < $1 LIMIT $2)",
                &[&before_ns, &chunk],
            )?;
            tx.execute(
                "DELETE FROM batches WHERE (agent_id, spool_id, sequence) IN
                    (SELECT agent_id, spool_id, sequence FROM batches WHERE received_ns < $1
                     LIMIT $2)",
                &[&before_ns, &chunk],
            )?;
            tx.execute(
                "DELETE FROM agent_events WHERE id IN
                    (SELECT id FROM agent_events WHERE time_ns < $1 LIMIT $2)",
                &[&before_ns, &chunk],
            )?;
            Ok(deleted)
        })
    }

    pub fn list(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<StoredDeviation>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let sql = format!(
            "SELECT {DEVIATION_COLUMNS} FROM deviations{filter}
             ORDER BY time_ns DESC, id LIMIT ${}",
            args.len() + 1
        );
        args.push(Box::new(i64::from(limit(request.limit))));
        read_deviations(&self.client()?.query(&sql, &params(&args))?)
    }

    pub fn workloads(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<WorkloadSummary>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let sql = format!(
            "SELECT workload_id, MAX(workload_kind), COUNT(*),
                    COUNT(*) FILTER (WHERE severity = 0), COUNT(*) FILTER (WHERE severity = 1),
                    COUNT(*) FILTER (WHERE severity = 2), COUNT(*) FILTER (WHERE severity = 3),
                    COUNT(*) FILTER (WHERE severity = 4), COUNT(*) FILTER (WHERE severity = 5),
                    COUNT(DISTINCT run_id), COUNT(DISTINCT host), MIN(time_ns), MAX(time_ns)
             FROM deviations{filter} GROUP BY workload_id ORDER BY MAX(time_ns) DESC, workload_id
             LIMIT ${}",
            args.len() + 1
        );
        args.push(Box::new(i64::from(limit(request.limit))));
        let rows = self.client()?.query(&sql, &params(&args))?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut by_severity = [0u64; 6];
                for (i, n) in by_severity.iter_mut().enumerate() {
                    *n = count(row.get(3 + i));
                }
                WorkloadSummary {
                    id: row.get(0),
                    kind: row.get(1),
                    deviations: count(row.get(2)),
                    by_severity,
                    runs: count(row.get(9)),
                    hosts: count(row.get(10)),
                    first_ns: row.get(11),
                    last_ns: row.get(12),
                }
            })
            .collect())
    }

    pub fn incidents(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        let (sql, args) = incidents_sql(request, limit(request.limit));
        let rows = self.client()?.query(&sql, &params(&args))?;
        Ok(rows.iter().map(read_incident).collect())
    }

    pub fn incidents_with_entries(
        &self,
        request: &ListDeviationsRequest,
        limit_to: u32,
        budget: EntryBudget,
    ) -> Result<IncidentsPage, StoreError> {
        let mut client = self.client()?;
        // One snapshot (REPEATABLE READ): the entries agree with the summaries.
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let (sql, args) = incidents_sql(request, limit_to + 1);
        let summaries: Vec<IncidentSummary> = tx
            .query(&sql, &params(&args))?
            .iter()
            .map(read_incident)
            .collect();
        let (summaries, more) = split_more(summaries, limit_to);
        let per_incident = budget.per(summaries.len());
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let (filter, mut args) = where_sql(incident_conditions(request, &summary));
            let sql = format!(
                "SELECT {DEVIATION_COLUMNS} FROM deviations{filter}
                 ORDER BY time_ns DESC, id DESC LIMIT ${}",
                args.len() + 1
            );
            args.push(Box::new(i64::from(per_incident)));
            let mut entries = read_deviations(&tx.query(&sql, &params(&args))?)?;
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
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE silent OR NOT $1
             ORDER BY last_contact_ns DESC, agent_id LIMIT $2"
        );
        let rows = self.client()?.query(
            &sql,
            &[&filter.silent_only, &i64::from(limit(filter.limit))],
        )?;
        Ok(rows.iter().map(read_agent).collect())
    }

    pub fn agent_events(&self, limit_to: u32) -> Result<Vec<AgentEvent>, StoreError> {
        let rows = self.client()?.query(
            "SELECT agent_id, time_ns, kind, count, detail FROM agent_events
             ORDER BY time_ns DESC, id DESC LIMIT $1",
            &[&i64::from(limit(limit_to))],
        )?;
        Ok(rows
            .iter()
            .map(|row| AgentEvent {
                agent_id: row.get(0),
                time_unix_nanos: row.get(1),
                kind: row.get(2),
                count: count(row.get(3)),
                detail: row.get(4),
            })
            .collect())
    }
}

/// A batch's deviations as one array per column, for a single `unnest` insert.
struct DeviationColumns<'a> {
    id: Vec<&'a str>,
    time_ns: Vec<i64>,
    host: Vec<&'a str>,
    workload_id: Vec<&'a str>,
    workload_kind: Vec<i32>,
    run_id: Vec<&'a str>,
    kind: Vec<i32>,
    severity: Vec<i32>,
    summary: Vec<&'a str>,
    executable: Vec<&'a str>,
    proto: Vec<&'a [u8]>,
    incident_id: Vec<&'a str>,
}

impl<'a> DeviationColumns<'a> {
    fn new(rows: &'a [DeviationRow]) -> Self {
        DeviationColumns {
            id: rows.iter().map(|r| r.id.as_str()).collect(),
            time_ns: rows.iter().map(|r| r.time_ns).collect(),
            host: rows.iter().map(|r| r.host.as_str()).collect(),
            workload_id: rows.iter().map(|r| r.workload_id.as_str()).collect(),
            workload_kind: rows.iter().map(|r| r.workload_kind).collect(),
            run_id: rows.iter().map(|r| r.run_id.as_str()).collect(),
            kind: rows.iter().map(|r| r.kind).collect(),
            severity: rows.iter().map(|r| r.severity).collect(),
            summary: rows.iter().map(|r| r.summary.as_str()).collect(),
            executable: rows.iter().map(|r| r.executable.as_str()).collect(),
            proto: rows.iter().map(|r| r.body.as_slice()).collect(),
            incident_id: rows.iter().map(|r| r.incident_id.as_str()).collect(),
        }
    }
}

/// A counter as a BIGINT (saturating; counters never get near 2^63).
fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

type Param = Box<dyn ToSql + Sync>;

fn params(args: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

/// Decodes rows of [`DEVIATION_COLUMNS`].
fn read_deviations(rows: &[postgres::Row]) -> Result<Vec<StoredDeviation>, StoreError> {
    rows.iter()
        .map(|row| {
            let columns = DeviationRow {
                id: row.get(0),
                time_ns: row.get(1),
                host: row.get(2),
                workload_id: row.get(3),
                workload_kind: row.get(4),
                run_id: row.get(5),
                kind: row.get(6),
                severity: row.get(7),
                summary: row.get(8),
                executable: row.get(9),
                incident_id: row.get(10),
                body: row.get(11),
            };
            stored_deviation(columns, row.get(12), row.get(13))
        })
        .collect()
}

/// The query of the incidents matching `request`'s filters, latest first, at most `limit_to`.
fn incidents_sql(request: &ListDeviationsRequest, limit_to: u32) -> (String, Vec<Param>) {
    let (filter, mut args) = filter_sql(request);
    let sql = format!(
        "SELECT workload_id, MAX(workload_kind), run_id, COUNT(*), MAX(severity),
                array_agg(DISTINCT kind ORDER BY kind), COUNT(DISTINCT host), MIN(host),
                MIN(time_ns), MAX(time_ns), incident_id
         FROM deviations{filter} GROUP BY workload_id, run_id, incident_id
         ORDER BY MAX(time_ns) DESC, workload_id, run_id, incident_id LIMIT ${}",
        args.len() + 1
    );
    args.push(Box::new(i64::from(limit_to)));
    (sql, args)
}

fn read_incident(row: &postgres::Row) -> IncidentSummary {
    IncidentSummary {
        workload_id: row.get(0),
        workload_kind: row.get(1),
        run_id: row.get(2),
        deviations: count(row.get(3)),
        max_severity: row.get(4),
        kinds: row.get(5),
        hosts: count(row.get(6)),
        host: row.get(7),
        first_ns: row.get(8),
        last_ns: row.get(9),
        incident_id: row.get(10),
    }
}

/// The ` WHERE …` clause (or nothing) for the filters set in `request`, with `$n` placeholders
/// (integers compared as BIGINT, which every integer column accepts), and its arguments.
fn filter_sql(request: &ListDeviationsRequest) -> (String, Vec<Param>) {
    where_sql(filter_conditions(request))
}

/// The ` WHERE …` clause (or nothing) joining `conditions`, with their arguments.
fn where_sql((conditions, args): (Vec<&'static str>, Vec<Arg>)) -> (String, Vec<Param>) {
    let mut clauses = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    for (condition, arg) in conditions.into_iter().zip(args) {
        let n = params.len() + 1;
        match arg {
            Arg::Text(t) => {
                clauses.push(condition.replace('?', &format!("${n}")));
                params.push(Box::new(t));
            }
            Arg::Int(i) => {
                clauses.push(condition.replace('?', &format!("${n}::BIGINT")));
                params.push(Box::new(i));
            }
        }
    }
    if clauses.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", clauses.join(" AND ")), params)
    }
}

/// Serialization failures and deadlocks: the server rolled the transaction back; try again.
fn retryable(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    error.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Merged baselines and each agent's contribution (`baselines.rs`).
impl Postgres {
    pub fn update_baseline(
        &self,
        workload_id: &str,
        mut update: BaselineUpdate<'_>,
        now_ns: i64,
    ) -> Result<StoredBaseline, StoreError> {
        self.transaction(|tx| {
            // The merged row exists (empty the first time) and is locked: replicas changing the
            // same workload at once take turns.
            tx.execute(
                "INSERT INTO merged_baselines (workload_id, body, agent_ids, updated_ns)
                 VALUES ($1, ''::bytea, '', 0) ON CONFLICT (workload_id) DO NOTHING",
                &[&workload_id],
            )?;
            let row = tx.query_one(
                "SELECT body, agent_ids, frozen FROM merged_baselines WHERE workload_id = $1
                 FOR UPDATE",
                &[&workload_id],
            )?;
            let old = merged_row(workload_id, &row)?;
            match &mut update.contribution {
                Some((agent_id, Some(merge_one))) => {
                    let mine = tx
                        .query_opt(
                            "SELECT body FROM baseline_contributions
                             WHERE workload_id = $1 AND agent_id = $2",
                            &[&workload_id, agent_id],
                        )?
                        .map(|r| decode_baseline(workload_id, r.get(0), agent_id))
                        .transpose()?;
                    let mine = merge_one(mine);
                    tx.execute(
                        "INSERT INTO baseline_contributions
                            (workload_id, agent_id, body, updated_ns)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (workload_id, agent_id) DO UPDATE
                         SET body = excluded.body, updated_ns = excluded.updated_ns",
                        &[
                            &workload_id,
                            agent_id,
                            &mine.baseline.encode_to_vec(),
                            &now_ns,
                        ],
                    )?;
                }
                Some((agent_id, None)) => {
                    tx.execute(
                        "DELETE FROM baseline_contributions
                         WHERE workload_id = $1 AND agent_id = $2",
                        &[&workload_id, agent_id],
                    )?;
                }
                None => {}
            }
            let contributions = contributions_in(tx, workload_id)?;
            let frozen = update
                .frozen
                .unwrap_or_else(|| old.as_ref().is_some_and(|o| o.frozen));
            let mut merged = (update.merge)(contributions, old);
            merged.frozen = frozen;
            tx.execute(
                "UPDATE merged_baselines SET body = $2, agent_ids = $3, updated_ns = $4,
                    frozen = $5
                 WHERE workload_id = $1",
                &[
                    &workload_id,
                    &merged.baseline.encode_to_vec(),
                    &merged.agent_ids.join("\n"),
                    &now_ns,
                    &merged.frozen,
                ],
            )?;
            Ok(merged)
        })
    }

    pub fn baseline(&self, workload_id: &str) -> Result<Option<StoredBaseline>, StoreError> {
        let mut client = self.client()?;
        let row = client.query_opt(
            "SELECT body, agent_ids, frozen FROM merged_baselines WHERE workload_id = $1",
            &[&workload_id],
        )?;
        match row {
            Some(row) => merged_row(workload_id, &row),
            None => Ok(None),
        }
    }

    pub fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let mut client = self.client()?;
        let rows = client.query(
            "SELECT workload_id, body, agent_ids, frozen FROM merged_baselines
             WHERE body <> ''::bytea ORDER BY workload_id",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let workload: String = row.get(0);
                let mut b = decode_baseline(&workload, row.get(1), row.get(2))?;
                b.frozen = row.get(3);
                Ok(b)
            })
            .collect()
    }

    pub fn contributions(&self, workload_id: &str) -> Result<Vec<StoredBaseline>, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        let out = contributions_in(&mut tx, workload_id)?;
        tx.commit()?;
        Ok(out)
    }
}

/// A `merged_baselines` row (body, agent_ids, frozen); `None` for the empty placeholder.
fn merged_row(
    workload_id: &str,
    row: &postgres::Row,
) -> Result<Option<StoredBaseline>, StoreError> {
    let body: Vec<u8> = row.get(0);
    if body.is_empty() {
        return Ok(None);
    }
    let mut b = decode_baseline(workload_id, &body, row.get(1))?;
    b.frozen = row.get(2);
    Ok(Some(b))
}

fn contributions_in(
    tx: &mut Transaction<'_>,
    workload_id: &str,
) -> Result<Vec<StoredBaseline>, StoreError> {
    tx.query(
        "SELECT agent_id, body FROM baseline_contributions WHERE workload_id = $1
         ORDER BY agent_id",
        &[&workload_id],
    )?
    .iter()
    .map(|row| decode_baseline(workload_id, row.get(1), row.get(0)))
    .collect()
}
