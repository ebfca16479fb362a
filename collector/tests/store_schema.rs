//! The schema of both backends: what each refuses (not a database, a newer schema, an
//! unreachable server), and migrations (an old SQLite file carried over; PostgreSQL replicas
//! starting together migrate once).

mod common;

use collector::store::{BatchKey, Store};
use common::deviation;
use common::postgres::PgCluster;
use prost::Message;
use proto::v1::{DeviationKind, Severity};

#[test]
fn sqlite_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Store::open(&path).err().expect("garbage must not open");
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path)
        .err()
        .expect("newer schema must be refused");
    assert!(
        err.to_string().contains("newer than this collector knows"),
        "{err}"
    );
}

/// The first schema (deviations and batches only), as a collector of then left its file.
const FIRST_SCHEMA: &str = "
    CREATE TABLE deviations (id TEXT PRIMARY KEY NOT NULL, time_ns INTEGER NOT NULL,
        host TEXT NOT NULL, workload_id TEXT NOT NULL, workload_kind INTEGER NOT NULL,
        run_id TEXT NOT NULL, kind INTEGER NOT NULL, severity INTEGER NOT NULL,
        summary TEXT NOT NULL, executable TEXT NOT NULL, agent_id TEXT NOT NULL,
        received_ns INTEGER NOT NULL, proto BLOB NOT NULL);
    CREATE TABLE batches (agent_id TEXT NOT NULL, spool_id TEXT NOT NULL,
        sequence INTEGER NOT NULL, received_ns INTEGER NOT NULL, stored INTEGER NOT NULL,
        duplicates INTEGER NOT NULL, PRIMARY KEY (agent_id, spool_id, sequence))
        WITHOUT ROWID;
    PRAGMA user_version = 1;";

/// A database written by the first schema (deviations and batches only) gains the agents table,
/// filled from its batches.
#[test]
fn sqlite_migration_carries_agents_over_from_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(FIRST_SCHEMA).unwrap();
    conn.execute_batch(
        "INSERT INTO batches VALUES ('old', 's', 1, 100, 3, 0), ('old', 's', 2, 200, 1, 1)",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    let agent = &store.agents(0).unwrap()[0];
    assert_eq!(
        (
            agent.agent_id.as_str(),
            agent.batches,
            agent.stored,
            agent.duplicates
        ),
        ("old", 2, 4, 1)
    );
    assert_eq!((agent.first_contact_ns, agent.last_contact_ns), (100, 200));
}

/// Collectors starting together on an empty database migrate it once; the others wait for that
/// and start on the migrated schema.
/// Deviations of a first-schema file survive every table rebuild (migrations 5 and 8), and a
/// repeat of one of them is still a duplicate for its agent, not for another.
#[test]
fn sqlite_migrations_keep_old_deviations_and_their_uniqueness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let old = |id: &str, time_s: i64| {
        deviation(
            id,
            time_s,
            "unit:a",
            DeviationKind::NewExecutable,
            Severity::High,
        )
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(FIRST_SCHEMA).unwrap();
    for d in [old("a", 1), old("b", 2)] {
        let workload = d.workload.clone().unwrap();
        conn.execute(
            "INSERT INTO deviations VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'old', 0, ?11)",
            rusqlite::params![
                d.id,
                d.time_unix_nanos,
                d.host,
                workload.id,
                workload.kind,
                workload.run_id,
                d.kind,
                d.severity,
                d.summary,
                d.process.as_ref().unwrap().executable,
                d.encode_to_vec()
            ],
        )
        .unwrap();
    }
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        common::stored_deviations(&store),
        [old("b", 2), old("a", 1)],
        "every old row, as it was"
    );
    let key = |agent_id| BatchKey {
        agent_id,
        spool_id: "s",
        sequence: 1,
    };
    let again = store
        .store_batch(key("old"), vec![old("a", 1), old("c", 3)], 10)
        .unwrap();
    assert_eq!(
        (again.stored, again.duplicates),
        (1, 1),
        "the old agent's repeat"
    );
    let other = store
        .store_batch(key("other"), vec![old("a", 1)], 11)
        .unwrap();
    assert_eq!(
        (other.stored, other.duplicates),
        (1, 0),
        "another agent's own row"
    );
}

#[test]
fn postgres_replicas_starting_together_migrate_once() {
    let cluster = PgCluster::start();
    let url = cluster.database("migrate");
    let stores: Vec<Store> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| Store::connect(&url).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(stores.len(), 4);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        [1, 2, 3, 4, 5, 6, 7, 8],
        "each migration applied once"
    );
    client
        .batch_execute("INSERT INTO schema_migrations VALUES (99, 0)")
        .unwrap();
    let err = Store::connect(&url)
        .err()
        .expect("newer schema must be refused");
    assert!(
        err.to_string().contains("newer than this collector knows"),
        "{err}"
    );
}

#[test]
fn postgres_unreachable_is_a_clear_error() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/nothing")
        .err()
        .expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:1/nothing"),
        "{text}"
    );
}
