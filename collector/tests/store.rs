//! The store's test suite, run on both backends: every case once on SQLite (a file in a temporary
//! directory) and once on PostgreSQL (a database of its own on a throwaway server that
//! `common::postgres` starts; missing PostgreSQL fails, telling to run scripts/setup).

mod common;

use std::sync::Arc;

use collector::store::{AgentFilter, BatchKey, EntryBudget, PRUNE_CHUNK, Store};
use common::deviation;
use common::postgres::PgCluster;
use proto::v1::{
    AgentEventKind, AgentStatus, Deviation, DeviationKind, ListDeviationsRequest, Severity,
};

/// Opens handles on one database (several handles are several collectors sharing it).
struct Db {
    open: Box<dyn Fn() -> Store + Send + Sync>,
}

impl Db {
    fn open(&self) -> Store {
        (self.open)()
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("collector.db");
                    let db = super::Db {
                        open: Box::new(move || {
                            collector::store::Store::open(&path).expect("open SQLite")
                        }),
                    };
                    super::$case(&db);
                }
            )*
        }

        /// One server for every case (starting one takes a second or two), a database per case.
        #[test]
        fn postgres() {
            let cluster = PgCluster::start();
            $(
                eprintln!("postgres: {}", stringify!($case));
                let url = cluster.database(stringify!($case));
                let db = Db {
                    open: Box::new(move || {
                        Store::connect(&url).unwrap_or_else(|e| panic!("connect {url}: {e}"))
                    }),
                };
                $case(&db);
            )*
        }
    };
}

suite!(
    a_deviation_reads_back_as_it_was_sent,
    resent_batch_and_repeated_ids_are_not_stored_twice,
    ids_are_unique_per_agent_not_across_agents,
    same_sequence_from_a_new_spool_is_a_new_batch,
    queries_apply_every_filter,
    workloads_count_their_deviations,
    incidents_group_by_workload_and_run,
    incidents_split_by_the_agents_incident_id,
    incidents_come_with_their_newest_entries_and_say_when_more_match,
    agents_show_their_contacts_and_batches,
    heartbeats_record_status_and_count_drops_once,
    heartbeats_record_pipeline_liveness_and_stalls,
    silence_is_recorded_once_and_cleared_by_contact,
    retention_deletes_old_rows_in_chunks,
    concurrent_handles_store_every_batch_exactly_once,
    one_handle_stores_concurrent_batches_exactly_once,
    reopening_keeps_data_and_schema,
    merged_baselines_lose_no_concurrent_report,
    baseline_contributions_can_be_dropped_and_frozen,
);

fn key(sequence: u64) -> BatchKey<'static> {
    BatchKey {
        agent_id: "agent-a",
        spool_id: "spool-1",
        sequence,
    }
}

/// Deviation `id` at `time_ns` in `workload` run `run` on `host` with `severity`.
fn at(id: &str, time_ns: i64, workload: &str, run: &str, host: &str, severity: i32) -> Deviation {
    let mut d = deviation(id, 0, workload, DeviationKind::NewExecutable, Severity::Low);
    d.time_unix_nanos = time_ns;
    let w = d.workload.as_mut().unwrap();
    w.run_id = run.to_owned();
    d.host = host.to_owned();
    d.severity = severity;
    d
}

fn simple(id: &str, time_ns: i64) -> Deviation {
    at(id, time_ns, "unit:a", "", "h1", 2)
}

fn ids(store: &Store, request: &ListDeviationsRequest) -> Vec<String> {
    store
        .list(request)
        .unwrap()
        .into_iter()
        .map(|d| d.deviation.unwrap().id)
        .collect()
}

/// Every field comes back as the agent sent it: what the row's columns hold is kept once, in
/// the column (see `convert::DeviationRow`), and put back on reading.
fn a_deviation_reads_back_as_it_was_sent(db: &Db) {
    let store = db.open();
    let mut full = at("full", 7, "github:acme/app/ci/build", "9", "h2", 4);
    full.incident_id = "tree-3".to_owned();
    full.tags = vec!["egress".to_owned(), "credential".to_owned()];
    full.signals = vec!["burst".to_owned()];
    let mut bare = simple("bare", 8);
    bare.process = None;
    store
        .store_batch(key(1), vec![full.clone(), bare.clone()], 1)
        .unwrap();
    assert_eq!(common::stored_deviations(&store), [bare, full]);
}

fn resent_batch_and_repeated_ids_are_not_stored_twice(db: &Db) {
    let store = db.open();
    let batch = [simple("a", 10), simple("b", 20)];
    let first = store.store_batch(key(1), batch.to_vec(), 1).unwrap();
    assert_eq!(
        (first.stored, first.duplicates, first.resent),
        (2, 0, false)
    );
    let again = store.store_batch(key(1), batch.to_vec(), 2).unwrap();
    assert_eq!((again.stored, again.duplicates, again.resent), (0, 2, true));
    let overlapping = store
        .store_batch(key(2), vec![simple("b", 20), simple("c", 30)], 3)
        .unwrap();
    assert_eq!((overlapping.stored, overlapping.duplicates), (1, 1));
    // The same id twice in one batch is stored once.
    let twice = store
        .store_batch(key(3), vec![simple("d", 40), simple("d", 40)], 4)
        .unwrap();
    assert_eq!((twice.stored, twice.duplicates), (1, 1));
    assert_eq!(
        ids(&store, &ListDeviationsRequest::default()),
        ["d", "c", "b", "a"],
        "newest first"
    );
}

fn ids_are_unique_per_agent_not_across_agents(db: &Db) {
    let store = db.open();
    let b = BatchKey {
        agent_id: "agent-b",
        ..key(1)
    };
    let decoy = store.store_batch(b, vec![simple("x", 10)], 1).unwrap();
    assert_eq!((decoy.stored, decoy.duplicates), (1, 0));
    // A's row with the id B sent first is A's own, stored.
    let real = store.store_batch(key(1), vec![simple("x", 20)], 2).unwrap();
    assert_eq!((real.stored, real.duplicates), (1, 0));
    let again = store.store_batch(key(2), vec![simple("x", 20)], 3).unwrap();
    assert_eq!(
        (again.stored, again.duplicates),
        (0, 1),
        "A's repeat is A's"
    );
    let mut rows: Vec<(String, i64)> = store
        .list(&ListDeviationsRequest::default())
        .unwrap()
        .into_iter()
        .map(|d| (d.agent_id, d.deviation.unwrap().time_unix_nanos))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [("agent-a".to_owned(), 20), ("agent-b".to_owned(), 10)]
    );
    // Retention deletes by row, not by id: B's old row goes, A's newer one with the same id stays.
    assert_eq!(store.prune(15).unwrap(), 1);
    let left: Vec<String> = store
        .list(&ListDeviationsRequest::default())
        .unwrap()
        .into_iter()
        .map(|d| d.agent_id)
        .collect();
    assert_eq!(left, ["agent-a"]);
}

fn same_sequence_from_a_new_spool_is_a_new_batch(db: &Db) {
    let store = db.open();
    store.store_batch(key(1), vec![simple("a", 1)], 1).unwrap();
    let wiped = BatchKey {
        spool_id: "spool-2",
        ..key(1)
    };
    let outcome = store.store_batch(wiped, vec![simple("z", 2)], 2).unwrap();
    assert_eq!((outcome.stored, outcome.resent), (1, false));
}

fn queries_apply_every_filter(db: &Db) {
    let store = sample_store(db);
    let q = |f: fn(&mut ListDeviationsRequest)| {
        let mut request = ListDeviationsRequest::default();
        f(&mut request);
        ids(&store, &request)
    };
    assert_eq!(q(|_| {}), ["c", "d", "b", "a"]);
    assert_eq!(q(|r| r.workload = "unit:web.service".into()), ["d"]);
    assert_eq!(q(|r| r.host = "h1".into()), ["b", "a"]);
    assert_eq!(q(|r| r.min_severity = 3), ["c", "a"]);
    assert_eq!(q(|r| r.kind = DeviationKind::NewExecutable as i32).len(), 4);
    assert!(q(|r| r.kind = DeviationKind::NewDnsName as i32).is_empty());
    assert_eq!(q(|r| r.since_unix_nanos = 20), ["c", "d", "b"]);
    assert_eq!(q(|r| r.until_unix_nanos = 25), ["b", "a"]);
    assert_eq!(
        q(|r| {
            r.since_unix_nanos = 11;
            r.until_unix_nanos = 30;
            r.host = "h1".into();
        }),
        ["b"]
    );
    assert_eq!(q(|r| r.limit = 2), ["c", "d"]);
}

/// Agent a: a, b, c (run 7 and 8 of a CI job, hosts h1, h2); agent b: d; agent a again: a
/// (already stored).
fn sample_store(db: &Db) -> Store {
    let store = db.open();
    let agent_b = BatchKey {
        agent_id: "agent-b",
        ..key(1)
    };
    store
        .store_batch(
            key(1),
            vec![
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
            vec![at("d", 25, "unit:web.service", "", "h3", 2)],
            2_000,
        )
        .unwrap();
    store
        .store_batch(
            key(2),
            vec![at("a", 10, "github:acme/app/ci/build", "7", "h1", 5)],
            3_000,
        )
        .unwrap();
    store
}

fn workloads_count_their_deviations(db: &Db) {
    let store = sample_store(db);
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

fn incidents_group_by_workload_and_run(db: &Db) {
    let store = sample_store(db);
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
    assert_eq!(run7.kinds, [DeviationKind::NewExecutable as i32]);
    assert_eq!((run7.hosts, run7.host.as_str()), (1, "h1"));
}

/// A service has no runs: its process trees are its incidents, as the agent correlated them.
fn incidents_split_by_the_agents_incident_id(db: &Db) {
    let store = db.open();
    let mut batch = Vec::new();
    for (id, time, incident) in [
        ("a", 10, "tree-1"),
        ("b", 20, "tree-2"),
        ("c", 30, "tree-1"),
    ] {
        let mut d = at(id, time, "unit:web.service", "", "h1", 3);
        d.incident_id = incident.to_owned();
        batch.push(d);
    }
    store.store_batch(key(1), batch.clone(), 1).unwrap();
    let all = store.incidents(&ListDeviationsRequest::default()).unwrap();
    let groups: Vec<_> = all
        .iter()
        .map(|i| (i.incident_id.as_str(), i.deviations, i.first_ns, i.last_ns))
        .collect();
    assert_eq!(groups, [("tree-1", 2, 10, 30), ("tree-2", 1, 20, 20)]);
}

/// The incidents query the Query service answers: summaries over every matching deviation, the
/// newest entries of each (oldest first) within the budget, and `more` when the limit cut older
/// incidents.
fn incidents_come_with_their_newest_entries_and_say_when_more_match(db: &Db) {
    let store = db.open();
    let mut batch = Vec::new();
    // Run 1: five deviations on two hosts, one of them critical; runs 2 and 3: one each, later.
    for (n, host) in ["h2", "h1", "h2", "h2", "h1"].into_iter().enumerate() {
        let severity = if n == 0 { 5 } else { 2 };
        batch.push(at(
            &format!("r1-{n}"),
            10 + n as i64,
            "unit:a",
            "1",
            host,
            severity,
        ));
    }
    batch.push(at("r2", 100, "unit:a", "2", "h3", 3));
    batch.push(at("r3", 200, "unit:b", "3", "h3", 1));
    store.store_batch(key(1), batch.clone(), 1).unwrap();
    let budget = |per_incident, total| EntryBudget {
        per_incident,
        total,
    };
    let everything = ListDeviationsRequest::default();

    let page = store
        .incidents_with_entries(&everything, budget(3, 100))
        .unwrap();
    assert!(!page.more);
    let runs: Vec<_> = page
        .incidents
        .iter()
        .map(|i| i.summary.run_id.as_str())
        .collect();
    assert_eq!(runs, ["3", "2", "1"], "latest first");
    let run1 = &page.incidents[2];
    assert_eq!(
        run1.summary.deviations, 5,
        "counted over all, not the entries"
    );
    assert_eq!(
        run1.summary.max_severity, 5,
        "the critical one is older than the entries"
    );
    assert_eq!((run1.summary.hosts, run1.summary.host.as_str()), (2, "h1"));
    let entries: Vec<_> = run1
        .entries
        .iter()
        .map(|e| e.deviation.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(
        entries,
        ["r1-2", "r1-3", "r1-4"],
        "the newest three, oldest first"
    );
    assert_eq!(run1.entries[0].agent_id, "agent-a");

    // A total budget of 4 over 3 incidents leaves each one entry.
    let page = store
        .incidents_with_entries(&everything, budget(3, 4))
        .unwrap();
    assert!(page.incidents.iter().all(|i| i.entries.len() == 1));

    // A limit below the incidents matching: the newest, and `more`.
    let two = ListDeviationsRequest {
        limit: 2,
        ..ListDeviationsRequest::default()
    };
    let page = store.incidents_with_entries(&two, budget(10, 100)).unwrap();
    assert_eq!(page.incidents.len(), 2);
    assert!(page.more, "run 1 matched too");

    // Filters narrow both the summaries and the entries.
    let medium_up = ListDeviationsRequest {
        min_severity: 3,
        ..ListDeviationsRequest::default()
    };
    let page = store
        .incidents_with_entries(&medium_up, budget(10, 100))
        .unwrap();
    let summary: Vec<_> = page
        .incidents
        .iter()
        .map(|i| {
            (
                i.summary.run_id.as_str(),
                i.summary.deviations,
                i.entries.len(),
            )
        })
        .collect();
    assert_eq!(summary, [("2", 1, 1), ("1", 1, 1)]);
    assert!(!page.more);
}

fn agents_show_their_contacts_and_batches(db: &Db) {
    let store = db.open();
    assert!(store.agents(0).unwrap().is_empty());
    drop(store);
    let store = sample_store(db);
    // A resent batch is a contact, not a batch.
    store
        .store_batch(key(2), vec![simple("zz", 1)], 4_000)
        .unwrap();
    let agents = store.agents(0).unwrap();
    let summary: Vec<_> = agents
        .iter()
        .map(|a| {
            (
                a.agent_id.as_str(),
                a.batches,
                a.stored,
                a.duplicates,
                a.first_contact_ns,
                a.last_contact_ns,
                a.silent,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("agent-a", 2, 3, 1, 1_000, 4_000, false),
            ("agent-b", 1, 1, 0, 2_000, 2_000, false),
        ]
    );
    assert_eq!(store.agents(1).unwrap().len(), 1);
    let events = store.agent_events(0).unwrap();
    assert_eq!(events.len(), 2, "one first contact per agent: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.kind() == AgentEventKind::FirstContact)
    );
}

fn status(instance: &str, dropped: u64, spool: u64) -> AgentStatus {
    AgentStatus {
        version: "0.1.0".to_owned(),
        instance_id: instance.to_owned(),
        host: "runner-1".to_owned(),
        spool_deviations: spool,
        dropped_total: dropped,
        kernel_lost_total: 3,
        heartbeat_interval_millis: 30_000,
        ..AgentStatus::default()
    }
}

fn heartbeats_record_status_and_count_drops_once(db: &Db) {
    let store = db.open();
    let events = store
        .heartbeat("agent-h", &status("run-1", 0, 5), 1_000)
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), AgentEventKind::FirstContact);
    let events = store
        .heartbeat("agent-h", &status("run-1", 40, 9), 2_000)
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind(), events[0].count),
        (AgentEventKind::Dropped, 40)
    );
    // The same report again (a resent heartbeat, or one through another replica).
    assert!(
        store
            .heartbeat("agent-h", &status("run-1", 40, 9), 3_000)
            .unwrap()
            .is_empty()
    );
    // A new instance (a wiped state directory, a new spool) counts from 0 again.
    let events = store
        .heartbeat("agent-h", &status("run-2", 2, 0), 4_000)
        .unwrap();
    assert_eq!(events[0].count, 2);
    let agent = &store.agents(0).unwrap()[0];
    assert_eq!(
        (
            agent.host.as_str(),
            agent.version.as_str(),
            agent.last_contact_ns,
            agent.last_heartbeat_ns,
            agent.spool_deviations,
            agent.kernel_lost_total,
            agent.dropped_total,
            agent.batches,
        ),
        ("runner-1", "0.1.0", 4_000, 4_000, 0, 3, 42, 0)
    );
    // Durable: another handle (another collector) sees the events, newest first.
    let events = db.open().agent_events(0).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| (e.kind(), e.count)).collect();
    assert_eq!(
        kinds,
        [
            (AgentEventKind::Dropped, 2),
            (AgentEventKind::Dropped, 40),
            (AgentEventKind::FirstContact, 0)
        ]
    );
}

fn heartbeats_record_pipeline_liveness_and_stalls(db: &Db) {
    const S: i64 = 1_000_000_000;
    let store = db.open();
    let beat = |last_event_s: i64, queue: u64, decoded: u64| AgentStatus {
        heartbeat_interval_millis: 10_000,
        last_event_unix_nanos: last_event_s * S,
        event_queue_depth: queue,
        events_decoded_total: decoded,
        ..status("run-1", 0, 0)
    };
    store.heartbeat("blind", &beat(0, 0, 0), 100 * S).unwrap();
    store.heartbeat("fine", &beat(100, 3, 50), 100 * S).unwrap();
    store.heartbeat("blind", &beat(0, 0, 0), 200 * S).unwrap();
    store
        .heartbeat("fine", &beat(199, 3, 900), 200 * S)
        .unwrap();
    let agents = store.agents(0).unwrap();
    let of = |id: &str| agents.iter().find(|a| a.agent_id == id).unwrap().clone();
    let fine = of("fine");
    assert_eq!(
        (
            fine.heartbeat_interval_ms,
            fine.last_event_ns,
            fine.event_queue_depth,
            fine.events_decoded_total
        ),
        (10_000, 199 * S, 3, 900),
        "stored as reported"
    );
    assert!(!fine.stalled());
    assert!(
        of("blind").stalled(),
        "heartbeats for 100 s, never a decoded record"
    );
    // Records wait, none decoded for 60 s (6 intervals): stalled.
    store
        .heartbeat("fine", &beat(199, 40, 900), 260 * S)
        .unwrap();
    let agents = store.agents(0).unwrap();
    assert!(
        agents
            .iter()
            .find(|a| a.agent_id == "fine")
            .unwrap()
            .stalled()
    );
}

fn silence_is_recorded_once_and_cleared_by_contact(db: &Db) {
    let s = 1_000_000_000i64;
    let (one, two) = (db.open(), db.open());
    one.heartbeat("quiet", &status("r", 0, 0), 10 * s).unwrap();
    one.heartbeat("chatty", &status("r", 0, 0), 100 * s)
        .unwrap();
    // Two collectors check at the same moment: one SILENT event.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| one.mark_silent(50 * s, 110 * s).unwrap());
        let b = scope.spawn(|| two.mark_silent(50 * s, 110 * s).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let silenced: Vec<_> = a.iter().chain(&b).collect();
    assert_eq!(silenced.len(), 1, "{silenced:?}");
    assert_eq!(
        (
            silenced[0].agent_id.as_str(),
            silenced[0].kind(),
            silenced[0].count
        ),
        ("quiet", AgentEventKind::Silent, 100)
    );
    assert!(
        one.mark_silent(60 * s, 120 * s).unwrap().is_empty(),
        "already silent"
    );
    let silent = one
        .agents_matching(AgentFilter {
            limit: 0,
            silent_only: true,
        })
        .unwrap();
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].agent_id, "quiet");
    // It comes back with a batch.
    let back = BatchKey {
        agent_id: "quiet",
        ..key(1)
    };
    two.store_batch(back, vec![simple("q", 1)], 130 * s)
        .unwrap();
    let agents = one.agents(0).unwrap();
    assert!(agents.iter().all(|a| !a.silent), "{agents:?}");
    let latest = &one.agent_events(1).unwrap()[0];
    assert_eq!((latest.kind(), latest.count), (AgentEventKind::Back, 120));
}

fn retention_deletes_old_rows_in_chunks(db: &Db) {
    let store = db.open();
    let old: Vec<Deviation> = (0..PRUNE_CHUNK + 7)
        .map(|i| simple(&format!("old-{i}"), 100 + i64::from(i)))
        .collect();
    store.store_batch(key(1), old.clone(), 1_000).unwrap();
    store
        .store_batch(key(2), vec![simple("new", 1_000_000)], 1_000_000)
        .unwrap();
    assert_eq!(store.prune(500_000).unwrap(), u64::from(PRUNE_CHUNK));
    assert_eq!(store.prune(500_000).unwrap(), 7);
    assert_eq!(store.prune(500_000).unwrap(), 0);
    assert_eq!(ids(&store, &ListDeviationsRequest::default()), ["new"]);
    // The old batch's key went with it; the agent's totals stay.
    let agent = &store.agents(0).unwrap()[0];
    assert_eq!(
        (agent.batches, agent.stored),
        (2, u64::from(PRUNE_CHUNK) + 8)
    );
    assert!(
        store.agent_events(0).unwrap().is_empty(),
        "events before the cutoff are gone"
    );
}

/// Several collectors store the same batches at the same time, each agent's batches in a
/// different order: every deviation is stored exactly once, every batch is stored by one and
/// acknowledged as resent by the others.
fn concurrent_handles_store_every_batch_exactly_once(db: &Db) {
    const HANDLES: usize = 3;
    let stores: Vec<Arc<Store>> = (0..HANDLES).map(|_| Arc::new(db.open())).collect();
    store_concurrently(&stores);
}

/// One collector's handle used by many ingest threads at once (on SQLite, their batches share
/// group transactions), with heartbeats committing in between: still every batch exactly once.
fn one_handle_stores_concurrent_batches_exactly_once(db: &Db) {
    let store = Arc::new(db.open());
    let stores = vec![Arc::clone(&store); 4];
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for n in 0..20 {
                store
                    .heartbeat("agent-2", &status("i", 0, n), 1)
                    .expect("a heartbeat amid batches");
            }
        });
        store_concurrently(&stores);
    });
}

/// Each handle stores the same batches (half of them in reverse order) on a thread of its own;
/// checks each is stored once and acknowledged as resent by the others.
fn store_concurrently(stores: &[Arc<Store>]) {
    const BATCHES: u64 = 30;
    let batch = |sequence: u64| -> Vec<Deviation> {
        // Neighbouring batches share a deviation, as an agent's resend after a restart could.
        (0..4)
            .map(|i| simple(&format!("d-{}", sequence * 3 + i), 1))
            .collect()
    };
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                scope.spawn(move || {
                    let mut order: Vec<u64> = (1..=BATCHES).collect();
                    if n % 2 == 1 {
                        order.reverse();
                    }
                    order
                        .into_iter()
                        .map(|seq| store.store_batch(key(seq), batch(seq), 1).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique = (BATCHES * 3 + 4) as usize;
    let stored: u32 = outcomes.iter().map(|o| o.stored).sum();
    let first_stores = outcomes.iter().filter(|o| !o.resent).count();
    assert_eq!(
        first_stores as u64, BATCHES,
        "each batch stored by exactly one handle"
    );
    assert_eq!(stored as usize, unique - 3, "ids 0..2 are in no batch");
    let all = ids(
        &stores[0],
        &ListDeviationsRequest {
            limit: 10_000,
            ..ListDeviationsRequest::default()
        },
    );
    let mut distinct = all.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(all.len(), distinct.len(), "no deviation stored twice");
    assert_eq!(all.len(), unique - 3);
    let agents = stores[1].agents(0).unwrap();
    let agent = agents.iter().find(|a| a.agent_id == "agent-a").unwrap();
    assert_eq!((agent.batches, agent.stored), (BATCHES, u64::from(stored)));
}

/// Agents report baselines of one workload through several collectors at once: the merged
/// baseline holds every run and behaviour, each report counted once.
fn merged_baselines_lose_no_concurrent_report(db: &Db) {
    use collector::baselines::contribute;
    use proto::v1::{Baseline, BaselineDimension};
    const HANDLES: usize = 3;
    const REPORTS: usize = 10;
    let report = |agent: usize, n: usize| Baseline {
        workload_id: "github:a/b/ci/build".into(),
        runs: vec![format!("{agent}-{n}")],
        mature: false,
        dimensions: vec![BaselineDimension {
            name: "executable".into(),
            behaviours: vec![
                r#"{"executable":"/usr/bin/make"}"#.into(),
                format!(r#"{{"executable":"/opt/{agent}/{n}"}}"#),
            ],
        }],
        version: 0,
        agents: 0,
        next_page_token: String::new(),
    };
    let stores: Vec<Arc<Store>> = (0..HANDLES).map(|_| Arc::new(db.open())).collect();
    assert_eq!(stores[0].baseline("github:a/b/ci/build").unwrap(), None);
    std::thread::scope(|scope| {
        for (agent, store) in stores.iter().enumerate() {
            scope.spawn(move || {
                for n in 0..REPORTS {
                    let r = report(agent, n);
                    let id = format!("runner-{agent}");
                    contribute(store, &id, &r, 1).unwrap();
                }
            });
        }
    });
    let merged = stores[1].baseline("github:a/b/ci/build").unwrap().unwrap();
    assert_eq!(merged.baseline.runs.len(), HANDLES * REPORTS);
    assert_eq!(
        merged.baseline.dimensions[0].behaviours.len(),
        HANDLES * REPORTS + 1
    );
    assert_eq!(merged.baseline.version, (HANDLES * REPORTS) as u64);
    assert_eq!(merged.agent_ids, ["runner-0", "runner-1", "runner-2"]);
    assert_eq!(merged.baseline.agents, 3);
    // A repeated report changes nothing, and the merge survives reopening.
    let again = report(0, 0);
    let after = contribute(&stores[2], "runner-0", &again, 2).unwrap();
    assert_eq!(after, merged);
    drop(stores);
    assert_eq!(
        db.open().baseline("github:a/b/ci/build").unwrap(),
        Some(merged)
    );
}

/// Each agent's contribution is kept apart: dropping one recomputes the merge without it; a
/// frozen merge ignores reports until thawed.
fn baseline_contributions_can_be_dropped_and_frozen(db: &Db) {
    use collector::baselines::{contribute, drop_agent, freeze};
    use proto::v1::{Baseline, BaselineDimension};
    let report = |run: &str, exe: &str| Baseline {
        workload_id: "w".into(),
        runs: vec![run.into()],
        dimensions: vec![BaselineDimension {
            name: "executable".into(),
            behaviours: vec![exe.into()],
        }],
        ..Baseline::default()
    };
    let store = db.open();
    contribute(&store, "a", &report("1", "/bin/a"), 1).unwrap();
    contribute(&store, "b", &report("2", "/bin/b"), 2).unwrap();
    let both = contribute(&store, "liar", &report("9", "/evil"), 3).unwrap();
    assert_eq!(both.agent_ids, ["a", "b", "liar"]);
    assert_eq!(both.baseline.runs.len(), 3);
    let contributions = store.contributions("w").unwrap();
    assert_eq!(contributions.len(), 3);
    assert_eq!(contributions[2].baseline.runs, ["9"]);
    let honest = drop_agent(&store, "w", "liar").unwrap();
    assert_eq!(honest.agent_ids, ["a", "b"]);
    assert_eq!(honest.baseline.runs, ["1", "2"]);
    assert_eq!(honest.baseline.version, both.baseline.version + 1);
    let frozen = freeze(&store, "w", true).unwrap();
    assert!(frozen.frozen);
    let still = contribute(&store, "liar", &report("10", "/evil"), 4).unwrap();
    assert_eq!(
        still.baseline, frozen.baseline,
        "frozen: the report changes nothing"
    );
    assert_eq!(store.contributions("w").unwrap().len(), 3, "but is kept");
    let thawed = freeze(&store, "w", false).unwrap();
    assert!(!thawed.frozen && thawed.baseline.runs.contains(&"10".to_owned()));
    assert_eq!(store.baselines().unwrap().len(), 1);
}

fn reopening_keeps_data_and_schema(db: &Db) {
    let store = db.open();
    store
        .store_batch(key(1), vec![simple("kept", 1)], 1)
        .unwrap();
    drop(store);
    let store = db.open();
    assert_eq!(ids(&store, &ListDeviationsRequest::default()), ["kept"]);
    let again = store
        .store_batch(key(1), vec![simple("kept", 1)], 2)
        .unwrap();
    assert!(again.resent, "the batch memory survived");
}
