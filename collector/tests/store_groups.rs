//! SQLite's group commit when a batch fails: batches stored together share one transaction, so
//! a failure takes the whole group back. What must hold whatever the grouping: a batch is either
//! acknowledged and entirely stored, or refused and not stored at all, and sent again it stores.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use collector::store::{BatchKey, Store};
use common::deviation;
use proto::v1::{Deviation, DeviationKind, ListDeviationsRequest, Severity};

const THREADS: usize = 4;
const BATCHES: usize = 25;
/// The one deviation the database refuses (a trigger planted by the test).
const POISON: &str = "poison";

fn batch(thread: usize, sequence: usize) -> Vec<Deviation> {
    let mut ids: Vec<String> = (0..4)
        .map(|i| format!("t{thread}-s{sequence}-{i}"))
        .collect();
    if (thread, sequence) == (1, 12) {
        ids.push(POISON.to_owned());
    }
    ids.iter()
        .map(|id| deviation(id, 1, "unit:a", DeviationKind::NewFileAccess, Severity::Low))
        .collect()
}

/// Batch `sequence` of `spool` (one spool per writer thread).
fn key(spool: &str, sequence: usize) -> BatchKey<'_> {
    BatchKey {
        agent_id: "agent-a",
        spool_id: spool,
        sequence: sequence as u64,
    }
}

fn stored_ids(store: &Store) -> BTreeSet<String> {
    store
        .list(&ListDeviationsRequest {
            limit: 10_000,
            ..ListDeviationsRequest::default()
        })
        .unwrap()
        .into_iter()
        .map(|d| d.deviation.unwrap().id)
        .collect()
}

#[test]
fn a_failing_batch_takes_its_group_back_and_no_acknowledged_batch_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.db");
    let store = Arc::new(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON deviations WHEN NEW.id = '{POISON}'
         BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;"
    ))
    .unwrap();
    drop(conn);

    // Four ingest threads at once, as four agents' streams: their batches share groups.
    let outcomes: Vec<(usize, usize, bool)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let store = Arc::clone(&store);
                scope.spawn(move || {
                    let spool = format!("spool-{thread}");
                    (1..=BATCHES)
                        .map(|sequence| {
                            let stored = store.store_batch(
                                key(&spool, sequence),
                                batch(thread, sequence),
                                1,
                            );
                            (thread, sequence, stored.is_ok())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });

    let present = stored_ids(&store);
    let mut refused = Vec::new();
    for &(thread, sequence, acknowledged) in &outcomes {
        let ids: Vec<String> = batch(thread, sequence).into_iter().map(|d| d.id).collect();
        let kept = ids.iter().filter(|id| present.contains(*id)).count();
        if acknowledged {
            assert_eq!(
                kept,
                ids.len(),
                "acknowledged batch {thread}/{sequence} lost rows"
            );
        } else {
            assert_eq!(
                kept, 0,
                "refused batch {thread}/{sequence} left rows behind"
            );
            refused.push((thread, sequence));
        }
    }
    assert!(
        refused.contains(&(1, 12)),
        "the poisoned batch must be refused"
    );

    // The agents send their refused batches again: all but the poisoned one store now.
    for (thread, sequence) in refused {
        let spool = format!("spool-{thread}");
        let again = store.store_batch(key(&spool, sequence), batch(thread, sequence), 1);
        assert_eq!(again.is_ok(), (thread, sequence) != (1, 12), "{again:?}");
    }
    assert_eq!(stored_ids(&store).len(), THREADS * BATCHES * 4 - 4);
}

/// A new database gets the page size ingest was measured with (16 KiB); one made with another
/// keeps it, and still opens.
#[test]
fn a_new_database_has_16_kib_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    drop(Store::open(&fresh).unwrap());
    let page_size = |path: &std::path::Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(page_size(&fresh), 16384);

    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
        .unwrap();
    drop(conn);
    let store = Store::open(&old).unwrap();
    assert_eq!(
        store
            .store_batch(key("s", 1), batch(0, 1), 1)
            .unwrap()
            .stored,
        4
    );
    drop(store);
    assert_eq!(page_size(&old), 4096);
}
