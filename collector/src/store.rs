//! The SQLite database: schema, migrations, storing batches and answering queries.
//!
//! Everything here is synchronous (rusqlite); the gRPC services call it through
//! [`tokio::task::spawn_blocking`]. One connection writes and one reads, each behind a mutex: WAL
//! mode lets the reader see committed data while the writer works.
//!
//! Durability: `synchronous = FULL`, so a batch whose transaction committed survives a power loss.
//! The collector acknowledges a batch only after that commit, and the agent then deletes it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use prost::Message;
use proto::v1::{Deviation, ListDeviationsRequest, StoredDeviation};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter, types::Value};

use crate::convert::DeviationRow;

/// Results returned by a query when the request does not set a limit.
pub const DEFAULT_QUERY_LIMIT: u32 = 1000;
/// Upper bound of a query's limit, whatever the request asks.
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// Schema migrations, applied in order. `PRAGMA user_version` holds how many were applied; append
/// new ones at the end, never edit an applied one.
const MIGRATIONS: &[&str] = &[
    // 1: deviations with their filterable fields and the full protobuf, and received batches.
    "CREATE TABLE deviations (
        id            TEXT    PRIMARY KEY NOT NULL,
        time_ns       INTEGER NOT NULL,
        host          TEXT    NOT NULL,
        workload_id   TEXT    NOT NULL,
        workload_kind INTEGER NOT NULL,
        run_id        TEXT    NOT NULL,
        kind          INTEGER NOT NULL,
        severity      INTEGER NOT NULL,
        summary       TEXT    NOT NULL,
        executable    TEXT    NOT NULL,
        agent_id      TEXT    NOT NULL,
        received_ns   INTEGER NOT NULL,
        proto         BLOB    NOT NULL
    );
    CREATE INDEX deviations_workload_time ON deviations (workload_id, time_ns);
    CREATE INDEX deviations_time ON deviations (time_ns);
    CREATE TABLE batches (
        agent_id    TEXT    NOT NULL,
        spool_id    TEXT    NOT NULL,
        sequence    INTEGER NOT NULL,
        received_ns INTEGER NOT NULL,
        stored      INTEGER NOT NULL,
        duplicates  INTEGER NOT NULL,
        PRIMARY KEY (agent_id, spool_id, sequence)
    ) WITHOUT ROWID;",
];

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {dir} for the database: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this collector knows ({known}); \
         upgrade the collector"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored deviation {id} cannot be decoded: {source}")]
    Decode {
        id: String,
        source: prost::DecodeError,
    },
}

/// A received batch, as the store sees it.
#[derive(Debug, Clone, Copy)]
pub struct BatchKey<'a> {
    pub agent_id: &'a str,
    pub spool_id: &'a str,
    pub sequence: u64,
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Deviations newly stored.
    pub stored: u32,
    /// Deviations not stored because they already were (same id, or the whole batch was resent).
    pub duplicates: u32,
    /// The batch itself had already been stored; nothing was written.
    pub resent: bool,
}

/// The collector's database.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date. A file
    /// that is not a SQLite database, or is corrupt, is reported here rather than on first use.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
        Ok(Store {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a batch's deviations and records the batch as received, in one transaction. A batch
    /// received before is not stored again; a deviation whose id is already stored is skipped.
    pub fn store_batch(
        &self,
        key: BatchKey<'_>,
        deviations: &[Deviation],
        received_ns: i64,
    ) -> Result<BatchOutcome, StoreError> {
        let total = u32::try_from(deviations.len()).unwrap_or(u32::MAX);
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let seen: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM batches WHERE agent_id = ?1 AND spool_id = ?2 AND sequence = ?3",
                params![key.agent_id, key.spool_id, sequence_to_sql(key.sequence)],
                |row| row.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(BatchOutcome {
                stored: 0,
                duplicates: total,
                resent: true,
            });
        }
        let mut stored = 0u32;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO deviations (id, time_ns, host, workload_id, workload_kind,
                    run_id, kind, severity, summary, executable, agent_id, received_ns, proto)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for deviation in deviations {
                let row = DeviationRow::from(deviation);
                stored += insert.execute(params![
                    row.id,
                    row.time_ns,
                    row.host,
                    row.workload_id,
                    row.workload_kind,
                    row.run_id,
                    row.kind,
                    row.severity,
                    row.summary,
                    row.executable,
                    key.agent_id,
                    received_ns,
                    deviation.encode_to_vec(),
                ])? as u32;
            }
        }
        let duplicates = total - stored;
        tx.execute(
            "INSERT INTO batches (agent_id, spool_id, sequence, received_ns, stored, duplicates)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key.agent_id,
                key.spool_id,
                sequence_to_sql(key.sequence),
                received_ns,
                stored,
                duplicates
            ],
        )?;
        tx.commit()?;
        Ok(BatchOutcome {
            stored,
            duplicates,
            resent: false,
        })
    }

    /// Deviations matching every filter set in `request`, newest first.
    pub fn list(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<StoredDeviation>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let mut sql = format!("SELECT id, agent_id, received_ns, proto FROM deviations{filter}");
        sql.push_str(" ORDER BY time_ns DESC, id LIMIT ?");
        let limit = match request.limit {
            0 => DEFAULT_QUERY_LIMIT,
            n => n.min(MAX_QUERY_LIMIT),
        };
        args.push(Value::Integer(limit.into()));

        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(&sql)?;
        let mut rows = statement.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let blob: Vec<u8> = row.get(3)?;
            let deviation = Deviation::decode(blob.as_slice())
                .map_err(|source| StoreError::Decode { id, source })?;
            out.push(StoredDeviation {
                deviation: Some(deviation),
                agent_id: row.get(1)?,
                received_unix_nanos: row.get(2)?,
            });
        }
        Ok(out)
    }
}

/// A workload as its stored deviations show it (the collector knows nothing else about it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSummary {
    pub id: String,
    /// `WorkloadKind` value.
    pub kind: i32,
    /// Deviations stored.
    pub deviations: u64,
    /// Deviations per severity, indexed by the `Severity` value (0 = unspecified … 5 = critical);
    /// values outside that range count in `deviations` only.
    pub by_severity: [u64; 6],
    /// Distinct runs (CI jobs) and hosts.
    pub runs: u64,
    pub hosts: u64,
    /// Times of its first and last deviation, ns since the epoch.
    pub first_ns: i64,
    pub last_ns: i64,
}

/// The deviations of one run of one workload (all of a workload's, when it has no runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentSummary {
    pub workload_id: String,
    pub workload_kind: i32,
    pub run_id: String,
    pub deviations: u64,
    /// Highest `Severity` value.
    pub max_severity: i32,
    /// Distinct `DeviationKind` values, ascending.
    pub kinds: Vec<i32>,
    /// Distinct hosts, and the first of them by name.
    pub hosts: u64,
    pub host: String,
    pub first_ns: i64,
    pub last_ns: i64,
}

/// An agent as its stored batches show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSummary {
    pub agent_id: String,
    /// Batches stored (resent copies are acknowledged, not recorded).
    pub batches: u64,
    /// Deviations newly stored, and already stored ones, over those batches.
    pub stored: u64,
    pub duplicates: u64,
    /// When its first and last batch were received, ns since the epoch.
    pub first_contact_ns: i64,
    pub last_contact_ns: i64,
}

impl Store {
    /// Workloads with deviations matching `request`'s filters (its limit caps the workloads),
    /// latest deviation first.
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
            for (i, count) in by_severity.iter_mut().enumerate() {
                *count = count_at(row, 3 + i)?;
            }
            Ok(WorkloadSummary {
                id: row.get(0)?,
                kind: row.get(1)?,
                deviations: count_at(row, 2)?,
                by_severity,
                runs: count_at(row, 9)?,
                hosts: count_at(row, 10)?,
                first_ns: row.get(11)?,
                last_ns: row.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deviations matching `request`'s filters grouped by workload and run (its limit caps the
    /// groups), latest first.
    pub fn incidents(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        let (filter, mut args) = filter_sql(request);
        let sql = format!(
            "SELECT workload_id, MAX(workload_kind), run_id, COUNT(*), MAX(severity),
                    GROUP_CONCAT(DISTINCT kind), COUNT(DISTINCT host), MIN(host),
                    MIN(time_ns), MAX(time_ns)
             FROM deviations{filter} GROUP BY workload_id, run_id
             ORDER BY MAX(time_ns) DESC, workload_id, run_id LIMIT ?"
        );
        args.push(Value::Integer(limit(request.limit).into()));
        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(args), |row| {
            let kinds: String = row.get(5)?;
            let mut kinds: Vec<i32> = kinds.split(',').filter_map(|k| k.parse().ok()).collect();
            kinds.sort_unstable();
            Ok(IncidentSummary {
                workload_id: row.get(0)?,
                workload_kind: row.get(1)?,
                run_id: row.get(2)?,
                deviations: count_at(row, 3)?,
                max_severity: row.get(4)?,
                kinds,
                hosts: count_at(row, 6)?,
                host: row.get(7)?,
                first_ns: row.get(8)?,
                last_ns: row.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Agents that delivered at least one batch, most recently heard from first; at most `limit`
    /// (0 for the default).
    pub fn agents(&self, limit_to: u32) -> Result<Vec<AgentSummary>, StoreError> {
        let conn = lock(&self.reader);
        let mut statement = conn.prepare_cached(
            "SELECT agent_id, COUNT(*), SUM(stored), SUM(duplicates), MIN(received_ns),
                    MAX(received_ns)
             FROM batches GROUP BY agent_id ORDER BY MAX(received_ns) DESC, agent_id LIMIT ?",
        )?;
        let rows = statement.query_map([limit(limit_to)], |row| {
            Ok(AgentSummary {
                agent_id: row.get(0)?,
                batches: count_at(row, 1)?,
                stored: count_at(row, 2)?,
                duplicates: count_at(row, 3)?,
                first_contact_ns: row.get(4)?,
                last_contact_ns: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The limit a query applies for a requested `limit` (0 for the default).
fn limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_QUERY_LIMIT,
        n => n.min(MAX_QUERY_LIMIT),
    }
}

/// A count column (never negative in practice; a negative one reads as 0).
fn count_at(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
}

/// The ` WHERE …` clause (or nothing) for the filters set in `request`, with its arguments; the
/// same filters, with the same meaning, as [`Store::list`].
fn filter_sql(request: &ListDeviationsRequest) -> (String, Vec<Value>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if !request.workload.is_empty() {
        conditions.push("workload_id = ?");
        args.push(Value::Text(request.workload.clone()));
    }
    if !request.host.is_empty() {
        conditions.push("host = ?");
        args.push(Value::Text(request.host.clone()));
    }
    if request.kind != 0 {
        conditions.push("kind = ?");
        args.push(Value::Integer(request.kind.into()));
    }
    if request.min_severity != 0 {
        conditions.push("severity >= ?");
        args.push(Value::Integer(request.min_severity.into()));
    }
    if request.since_unix_nanos != 0 {
        conditions.push("time_ns >= ?");
        args.push(Value::Integer(request.since_unix_nanos));
    }
    if request.until_unix_nanos != 0 {
        conditions.push("time_ns < ?");
        args.push(Value::Integer(request.until_unix_nanos));
    }
    if conditions.is_empty() {
        (String::new(), args)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), args)
    }
}

/// Connection settings: WAL, full durability, wait rather than fail when the file is busy.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
            path: path.to_owned(),
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

/// SQLite integers are signed; sequences are stored bit for bit, so every u64 maps to one value.
fn sequence_to_sql(sequence: u64) -> i64 {
    sequence as i64
}

/// Locks a connection. A panic while holding it cannot leave a transaction half-applied (rusqlite
/// rolls back on drop), so a poisoned mutex is still safe to use.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::deviation;

    fn key(sequence: u64) -> BatchKey<'static> {
        BatchKey {
            agent_id: "agent-a",
            spool_id: "spool-1",
            sequence,
        }
    }

    #[test]
    fn resent_batch_and_repeated_ids_are_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let batch = [deviation("a", 10), deviation("b", 20)];
        let first = store.store_batch(key(1), &batch, 1).unwrap();
        assert_eq!(
            (first.stored, first.duplicates, first.resent),
            (2, 0, false)
        );
        let again = store.store_batch(key(1), &batch, 2).unwrap();
        assert_eq!((again.stored, again.duplicates, again.resent), (0, 2, true));
        let overlapping = store
            .store_batch(key(2), &[deviation("b", 20), deviation("c", 30)], 3)
            .unwrap();
        assert_eq!((overlapping.stored, overlapping.duplicates), (1, 1));
        let all = store.list(&ListDeviationsRequest::default()).unwrap();
        let ids: Vec<_> = all
            .iter()
            .map(|d| d.deviation.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(ids, ["c", "b", "a"], "newest first");
    }

    #[test]
    fn same_sequence_from_a_new_spool_is_a_new_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        store.store_batch(key(1), &[deviation("a", 1)], 1).unwrap();
        let wiped = BatchKey {
            spool_id: "spool-2",
            ..key(1)
        };
        let outcome = store.store_batch(wiped, &[deviation("z", 2)], 2).unwrap();
        assert_eq!((outcome.stored, outcome.resent), (1, false));
    }

    /// Deviation `id` at `time` in `workload` run `run` on `host` with `severity`.
    fn at(id: &str, time: i64, workload: &str, run: &str, host: &str, severity: i32) -> Deviation {
        let mut d = deviation(id, time);
        let w = d.workload.as_mut().unwrap();
        w.id = workload.to_owned();
        w.run_id = run.to_owned();
        d.host = host.to_owned();
        d.severity = severity;
        d
    }

    fn sample_store(dir: &Path) -> Store {
        let store = Store::open(&dir.join("c.db")).unwrap();
        let agent_b = BatchKey {
            agent_id: "agent-b",
            ..key(1)
        };
        store
            .store_batch(
                key(1),
                &[
                    at("a", 10, "github:acme/app/ci/build", "7", "h1", 5),
                    at("b", 20, "github:acme/app/ci/build", "7", "h1", 2),
                    at("c", 30, "github:acme/app/ci/build", "8", "h2", 3),
                ],
                1_000,
            )
            .unwrap();
        store
            .store_batch(
                agent_b,
                &[at("d", 25, "unit:web.service", "", "h3", 2)],
                2_000,
            )
            .unwrap();
        store
            .store_batch(
                key(2),
                &[at("a", 10, "github:acme/app/ci/build", "7", "h1", 5)],
                3_000,
            )
            .unwrap();
        store
    }

    #[test]
    fn workloads_count_their_deviations() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample_store(dir.path());
        let all = store.workloads(&ListDeviationsRequest::default()).unwrap();
        assert_eq!(all.len(), 2);
        let ci = &all[0];
        assert_eq!(ci.id, "github:acme/app/ci/build", "latest deviation first");
        assert_eq!(ci.kind, proto::v1::WorkloadKind::GithubJob as i32);
        assert_eq!(
            (ci.deviations, ci.by_severity, ci.runs, ci.hosts),
            (3, [0, 0, 1, 1, 0, 1], 2, 2)
        );
        assert_eq!((ci.first_ns, ci.last_ns), (10, 30));
        assert_eq!(
            (all[1].id.as_str(), all[1].deviations),
            ("unit:web.service", 1)
        );

        let severe = store
            .workloads(&ListDeviationsRequest {
                min_severity: 3,
                ..ListDeviationsRequest::default()
            })
            .unwrap();
        assert_eq!(severe.len(), 1);
        assert_eq!((severe[0].deviations, severe[0].first_ns), (2, 10));
        let one = store
            .workloads(&ListDeviationsRequest {
                limit: 1,
                ..ListDeviationsRequest::default()
            })
            .unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn incidents_group_by_workload_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample_store(dir.path());
        let all = store.incidents(&ListDeviationsRequest::default()).unwrap();
        let groups: Vec<_> = all
            .iter()
            .map(|i| (i.workload_id.as_str(), i.run_id.as_str(), i.deviations))
            .collect();
        assert_eq!(
            groups,
            [
                ("github:acme/app/ci/build", "8", 1),
                ("unit:web.service", "", 1),
                ("github:acme/app/ci/build", "7", 2),
            ],
            "latest first"
        );
        let run7 = &all[2];
        assert_eq!(
            (run7.max_severity, run7.first_ns, run7.last_ns),
            (5, 10, 20)
        );
        assert_eq!(run7.kinds, [proto::v1::DeviationKind::NewExecEdge as i32]);
        assert_eq!((run7.hosts, run7.host.as_str()), (1, "h1"));

        let only = store
            .incidents(&ListDeviationsRequest {
                workload: "unit:web.service".to_owned(),
                ..ListDeviationsRequest::default()
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].host, "h3");
    }

    #[test]
    fn agents_show_their_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample_store(dir.path());
        let agents = store.agents(0).unwrap();
        assert_eq!(
            agents,
            [
                AgentSummary {
                    agent_id: "agent-a".to_owned(),
                    batches: 2,
                    stored: 3,
                    duplicates: 1,
                    first_contact_ns: 1_000,
                    last_contact_ns: 3_000,
                },
                AgentSummary {
                    agent_id: "agent-b".to_owned(),
                    batches: 1,
                    stored: 1,
                    duplicates: 0,
                    first_contact_ns: 2_000,
                    last_contact_ns: 2_000,
                },
            ]
        );
        assert_eq!(store.agents(1).unwrap().len(), 1);
        let empty = Store::open(&dir.path().join("empty.db")).unwrap();
        assert!(empty.agents(0).unwrap().is_empty());
        assert!(
            empty
                .workloads(&ListDeviationsRequest::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = Store::open(&path).err().expect("garbage must not open");
        assert!(err.to_string().contains("not a database"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path)
            .err()
            .expect("newer schema must be refused");
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }
}
