//! The collector's database, behind one backend-neutral API: SQLite (the default, one file, one
//! collector) or PostgreSQL (a fleet: several collector replicas behind one address share it).
//!
//! `db` selects the backend: `sqlite:///var/lib/x.db` or a plain path is SQLite
//! ([`sqlite`]); `postgres://user:password@host:port/database` (or `postgresql://`) is PostgreSQL
//! ([`postgres`]). Everything here is synchronous; the gRPC services and the web page call it
//! through [`tokio::task::spawn_blocking`] (the PostgreSQL client runs its own small runtime per
//! connection and must not be called on an async worker thread).
//!
//! Exactly-once storage, whichever backend and however many replicas: a batch is acknowledged
//! only after the one transaction that records its key `(agent_id, spool_id, sequence)` and
//! inserts its deviations (unique per agent by id, a repeat is skipped) has committed. The key is
//! inserted first, so a replica storing the same batch at the same time waits for the other's commit and
//! then finds the key: the batch is acknowledged as resent and nothing is stored twice.
//!
//! Agents: every batch and heartbeat is a contact, recorded in the `agents` row (first/last
//! contact, last status, counters). The decisions about an agent (first contact, back after a
//! silence, deviations it reported dropped) are made once, in `agents` ([`contact`]), on the row read
//! under the transaction's lock; the backends only read and write rows. [`Store::mark_silent`]
//! flags agents not heard from for a while. Each of these leaves an `agent_events` row, so queries
//! and the web page show them after the fact.
//!
//! Adding a table (e.g. merged baselines per workload), in both backends:
//! 1. append a migration to `sqlite/migrations.rs` and to `postgres/migrations.rs` (never edit an
//!    applied one; PostgreSQL applies them under an advisory lock, so replicas starting together
//!    migrate once);
//! 2. write the statements as methods of `sqlite::Sqlite` and `postgres::Postgres` (SQLite uses
//!    `?` placeholders and INTEGER/BLOB, PostgreSQL `$n` and BIGINT/BYTEA);
//! 3. add the public method on [`Store`] below, dispatching to both;
//! 4. add its test to `collector/tests/store.rs`, which runs every test on both backends.

mod agents;
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};

use proto::v1::{AgentEvent, AgentStatus, ListDeviationsRequest, StoredDeviation};

use crate::convert::DeviationRow;

use agents::silent_event;
pub use agents::{AgentFilter, AgentSummary, Contact, contact};

/// Results returned by a query when the request does not set a limit.
pub const DEFAULT_QUERY_LIMIT: u32 = 1000;
/// Upper bound of a query's limit, whatever the request asks.
pub const MAX_QUERY_LIMIT: u32 = 10_000;
/// Rows deleted per statement by retention, so that a large purge never holds long locks.
pub const PRUNE_CHUNK: u32 = 5_000;

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
    #[error("database error committing a group of batches: {0}")]
    GroupCommit(String),
    #[error("invalid db {value:?}: {reason}")]
    BadLocation { value: String, reason: String },
    #[error("cannot connect to PostgreSQL at {location}: {reason}")]
    Connect { location: String, reason: String },
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("stored deviation {id} cannot be decoded: {source}")]
    Decode {
        id: String,
        source: prost::DecodeError,
    },
}

/// Where the database is, as `db` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Location {
    /// `sqlite:///abs/path`, `sqlite://rel/path`, `postgres://…`, `postgresql://…`, or a plain
    /// path (SQLite).
    pub fn parse(value: &str) -> Result<Location, StoreError> {
        let bad = |reason: &str| StoreError::BadLocation {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if value.trim().is_empty() {
            return Err(bad(
                "empty; expected a file path, sqlite:///path or postgres://…",
            ));
        }
        if let Some(path) = value.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad("no path after sqlite://"));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Location::Postgres(value.to_owned()));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(bad(&format!(
                "unknown scheme {scheme:?}; expected sqlite:// or postgres://"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(value)))
    }

    /// For logs: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }
}

/// `url` with the password (between `user:` and `@`) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
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
    /// The agent's incident id; empty for deviations without one (grouped by run alone).
    pub incident_id: String,
}

/// An incident and its newest matching deviations, oldest first (ties by id).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEntries {
    pub summary: IncidentSummary,
    pub entries: Vec<StoredDeviation>,
}

/// Incidents with their entries, and whether more matched than the limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentsPage {
    pub incidents: Vec<IncidentEntries>,
    /// Older incidents matched too; they are left out.
    pub more: bool,
}

/// How many deviations an incidents answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryBudget {
    /// Per incident, its newest.
    pub per_incident: u32,
    /// Over all incidents: each gets an equal share (at least one), so an answer stays bounded
    /// however many incidents it holds.
    pub total: u32,
}

impl EntryBudget {
    /// The entries each of `incidents` incidents gets.
    fn per(self, incidents: usize) -> u32 {
        let incidents = u32::try_from(incidents).unwrap_or(u32::MAX).max(1);
        self.per_incident.min(self.total / incidents).max(1)
    }
}

/// Incident summaries read with a limit of `limit` + 1: the first `limit`, and whether there were
/// more.
fn split_more(mut summaries: Vec<IncidentSummary>, limit: u32) -> (Vec<IncidentSummary>, bool) {
    let limit = limit as usize;
    let more = summaries.len() > limit;
    summaries.truncate(limit);
    (summaries, more)
}

/// The collector's database.
pub struct Store {
    location: Location,
    backend: Backend,
}

enum Backend {
    // Boxed: a pool handle is a pointer, two SQLite connections are not.
    Sqlite(Box<sqlite::Sqlite>),
    Postgres(postgres::Postgres),
}

/// Calls `$method` on whichever backend `$self` uses.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match &$self.backend {
            Backend::Sqlite(db) => db.$method($($arg),*),
            Backend::Postgres(db) => db.$method($($arg),*),
        }
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    /// A file that is not a SQLite database, or is corrupt, is reported here rather than on first
    /// use.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_location(Location::Sqlite(path.to_owned()))
    }

    /// Opens the database `db` names (see [`Location::parse`]) and migrates its schema.
    pub fn connect(db: &str) -> Result<Store, StoreError> {
        Self::open_location(Location::parse(db)?)
    }

    pub fn open_location(location: Location) -> Result<Store, StoreError> {
        let backend = match &location {
            Location::Sqlite(path) => Backend::Sqlite(Box::new(sqlite::Sqlite::open(path)?)),
            Location::Postgres(url) => Backend::Postgres(postgres::Postgres::connect(url)?),
        };
        Ok(Store { location, backend })
    }

    /// Where the database is (a PostgreSQL password is not shown).
    pub fn location(&self) -> String {
        self.location.display()
    }

    /// Which backend: "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Stores a batch's deviations, records the batch as received and the agent's contact, in one
    /// transaction. A batch received before is not stored again; a deviation its agent already
    /// stored (same workload, run and id) is skipped. The deviations are taken by value: their fields move into the row's
    /// columns rather than being copied (see `convert::DeviationRow`).
    pub fn store_batch(
        &self,
        key: BatchKey<'_>,
        deviations: Vec<proto::v1::Deviation>,
        received_ns: i64,
    ) -> Result<BatchOutcome, StoreError> {
        dispatch!(self.store_batch(key, deviations, received_ns))
    }

    /// Records a heartbeat: the agent's contact and status, and the events they imply (first
    /// contact, back after silence, deviations dropped). Returns those events.
    pub fn heartbeat(
        &self,
        agent_id: &str,
        status: &AgentStatus,
        received_ns: i64,
    ) -> Result<Vec<AgentEvent>, StoreError> {
        dispatch!(self.heartbeat(agent_id, status, received_ns))
    }

    /// Marks silent every agent not heard from since `before_ns`, once (an agent already silent
    /// stays as it is), recording a `SILENT` event for each. Returns those events.
    pub fn mark_silent(&self, before_ns: i64, now_ns: i64) -> Result<Vec<AgentEvent>, StoreError> {
        dispatch!(self.mark_silent(before_ns, now_ns))
    }

    /// Deletes up to [`PRUNE_CHUNK`] deviations older than `before_ns` (by their time), and as many
    /// batch keys and agent events (by their receipt). Returns the deviations deleted; call again
    /// until it returns less than the chunk.
    pub fn prune(&self, before_ns: i64) -> Result<u64, StoreError> {
        dispatch!(self.prune(before_ns))
    }

    /// Deviations matching every filter set in `request`, newest first.
    pub fn list(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<StoredDeviation>, StoreError> {
        dispatch!(self.list(request))
    }

    /// Workloads with deviations matching `request`'s filters (its limit caps the workloads),
    /// latest deviation first.
    pub fn workloads(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<WorkloadSummary>, StoreError> {
        dispatch!(self.workloads(request))
    }

    /// Deviations matching `request`'s filters grouped by workload and run (its limit caps the
    /// groups), latest first.
    pub fn incidents(
        &self,
        request: &ListDeviationsRequest,
    ) -> Result<Vec<IncidentSummary>, StoreError> {
        dispatch!(self.incidents(request))
    }

    /// Incidents matching `request`'s filters (its limit caps them), latest first, each with its
    /// newest matching deviations (as many as `budget` allows), oldest first; `more` when older
    /// incidents matched too. Read in one snapshot, so the entries agree with the summaries.
    pub fn incidents_with_entries(
        &self,
        request: &ListDeviationsRequest,
        budget: EntryBudget,
    ) -> Result<IncidentsPage, StoreError> {
        dispatch!(self.incidents_with_entries(request, limit(request.limit), budget))
    }

    /// Agents heard from, most recently first; at most `limit` (0 for the default).
    pub fn agents(&self, limit: u32) -> Result<Vec<AgentSummary>, StoreError> {
        self.agents_matching(AgentFilter {
            limit,
            silent_only: false,
        })
    }

    /// Agents matching `filter`, most recently heard from first.
    pub fn agents_matching(&self, filter: AgentFilter) -> Result<Vec<AgentSummary>, StoreError> {
        dispatch!(self.agents(filter))
    }

    /// The latest `limit` agent events (0 for the default), newest first.
    pub fn agent_events(&self, limit: u32) -> Result<Vec<AgentEvent>, StoreError> {
        dispatch!(self.agent_events(limit))
    }

    /// Changes one workload's baseline as `update` says (an agent's contribution merged or
    /// dropped, the merged baseline frozen or thawed) and recomputes the merged baseline from
    /// every contribution with `update.merge`, all in one transaction under the workload's lock
    /// (see `baselines.rs`). Returns the new merged baseline.
    pub fn update_baseline(
        &self,
        workload_id: &str,
        update: BaselineUpdate<'_>,
        now_ns: i64,
    ) -> Result<StoredBaseline, StoreError> {
        dispatch!(self.update_baseline(workload_id, update, now_ns))
    }

    /// The merged baseline of `workload_id`, if any agent reported one.
    pub fn baseline(&self, workload_id: &str) -> Result<Option<StoredBaseline>, StoreError> {
        dispatch!(self.baseline(workload_id))
    }

    /// Every merged baseline, by workload id.
    pub fn baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        dispatch!(self.baselines())
    }

    /// Each agent's own contribution to `workload_id`'s baseline, by agent id.
    pub fn contributions(&self, workload_id: &str) -> Result<Vec<StoredBaseline>, StoreError> {
        dispatch!(self.contributions(workload_id))
    }
}

/// A workload's baseline merged across agents, or one agent's contribution to it, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredBaseline {
    /// The baseline (merged: its `version` and `agents` filled in).
    pub baseline: proto::v1::Baseline,
    /// The agents that reported it, sorted (a contribution: its one agent).
    pub agent_ids: Vec<String>,
    /// Merged baselines: frozen by an operator (reports no longer change it).
    pub frozen: bool,
}

/// What [`Store::update_baseline`] changes.
pub struct BaselineUpdate<'a> {
    /// The agent whose contribution changes: merged with the closure, or deleted with `None`.
    /// `None` as a whole leaves contributions as they are.
    pub contribution: Option<(&'a str, ContributionChange<'a>)>,
    /// Freeze (`Some(true)`) or thaw the merged baseline; `None` keeps its state.
    pub frozen: Option<bool>,
    /// The merged baseline from every contribution (sorted by agent) and the stored one.
    pub merge: &'a mut dyn FnMut(Vec<StoredBaseline>, Option<StoredBaseline>) -> StoredBaseline,
}

/// The closure merging a report into an agent's contribution (`None` the first time), or `None`
/// to delete the contribution.
pub type ContributionChange<'a> =
    Option<&'a mut dyn FnMut(Option<StoredBaseline>) -> StoredBaseline>;

/// The columns a stored deviation is read back from: [`DeviationRow`]'s, then its agent and
/// receipt time (see [`stored_deviation`]).
const DEVIATION_COLUMNS: &str = "id, time_ns, host, workload_id, workload_kind, run_id, kind, \
    severity, summary, executable, incident_id, proto, agent_id, received_ns";

/// A deviation read back from its row ([`DEVIATION_COLUMNS`]).
fn stored_deviation(
    row: DeviationRow,
    agent_id: String,
    received_unix_nanos: i64,
) -> Result<StoredDeviation, StoreError> {
    let id = row.id.clone();
    let deviation = row
        .into_deviation()
        .map_err(|source| StoreError::Decode { id, source })?;
    Ok(StoredDeviation {
        deviation: Some(deviation),
        agent_id,
        received_unix_nanos,
    })
}

/// A `merged_baselines` or `baseline_contributions` row's columns as a [`StoredBaseline`].
fn decode_baseline(
    workload_id: &str,
    body: &[u8],
    agent_ids: &str,
) -> Result<StoredBaseline, StoreError> {
    use prost::Message as _;
    let baseline = proto::v1::Baseline::decode(body).map_err(|source| StoreError::Decode {
        id: format!("merged baseline of {workload_id}"),
        source,
    })?;
    Ok(StoredBaseline {
        baseline,
        agent_ids: agent_ids
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        frozen: false,
    })
}

/// The limit a query applies for a requested `limit` (0 for the default).
fn limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_QUERY_LIMIT,
        n => n.min(MAX_QUERY_LIMIT),
    }
}

/// A filter argument, bound the way each backend binds it.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

/// The conditions (`column op ?`, joined with AND) and arguments for the filters set in
/// `request`; each backend writes its own placeholders for the `?`.
fn filter_conditions(request: &ListDeviationsRequest) -> (Vec<&'static str>, Vec<Arg>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    if !request.workload.is_empty() {
        conditions.push("workload_id = ?");
        args.push(Arg::Text(request.workload.clone()));
    }
    if !request.host.is_empty() {
        conditions.push("host = ?");
        args.push(Arg::Text(request.host.clone()));
    }
    if request.kind != 0 {
        conditions.push("kind = ?");
        args.push(Arg::Int(request.kind.into()));
    }
    if request.min_severity != 0 {
        conditions.push("severity >= ?");
        args.push(Arg::Int(request.min_severity.into()));
    }
    if request.since_unix_nanos != 0 {
        conditions.push("time_ns >= ?");
        args.push(Arg::Int(request.since_unix_nanos));
    }
    if request.until_unix_nanos != 0 {
        conditions.push("time_ns < ?");
        args.push(Arg::Int(request.until_unix_nanos));
    }
    (conditions, args)
}

/// [`filter_conditions`] narrowed to one incident's deviations (its workload, run and incident
/// id), for its entries.
fn incident_conditions(
    request: &ListDeviationsRequest,
    incident: &IncidentSummary,
) -> (Vec<&'static str>, Vec<Arg>) {
    let (mut conditions, mut args) = filter_conditions(request);
    conditions.extend(["workload_id = ?", "run_id = ?", "incident_id = ?"]);
    args.extend([
        Arg::Text(incident.workload_id.clone()),
        Arg::Text(incident.run_id.clone()),
        Arg::Text(incident.incident_id.clone()),
    ]);
    (conditions, args)
}

/// Sequences are stored bit for bit in a signed 64-bit column, so every u64 maps to one value.
fn sequence_to_sql(sequence: u64) -> i64 {
    sequence as i64
}

/// A count column (never negative in practice; a negative one reads as 0).
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("/var/lib/c.db").unwrap(),
            Location::Sqlite("/var/lib/c.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///var/lib/c.db").unwrap(),
            Location::Sqlite("/var/lib/c.db".into())
        );
        assert_eq!(
            Location::parse("postgresql://u@h/db").unwrap(),
            Location::Postgres("postgresql://u@h/db".into())
        );
        let e = Location::parse("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("unknown scheme \"mysql\""), "{e}");
        assert!(Location::parse("").is_err());
        assert_eq!(
            Location::parse("postgres://me:secret@db:5432/c")
                .unwrap()
                .display(),
            "postgres://me:***@db:5432/c"
        );
    }
}
