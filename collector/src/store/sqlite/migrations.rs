//! SQLite schema migrations, applied in order. `PRAGMA user_version` holds how many were applied;
//! append new ones at the end, never edit an applied one. Keep `postgres/migrations.rs` in step.

pub const MIGRATIONS: &[&str] = &[
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
    // 2: agents (last contact, last heartbeat's status, silence) and their events; the agents
    // known from earlier batches are carried over. Batch keys get a time index for retention.
    "CREATE TABLE agents (
        agent_id          TEXT    PRIMARY KEY NOT NULL,
        host              TEXT    NOT NULL DEFAULT '',
        version           TEXT    NOT NULL DEFAULT '',
        instance_id       TEXT    NOT NULL DEFAULT '',
        first_contact_ns  INTEGER NOT NULL,
        last_contact_ns   INTEGER NOT NULL,
        last_heartbeat_ns INTEGER NOT NULL DEFAULT 0,
        silent            INTEGER NOT NULL DEFAULT 0,
        batches           INTEGER NOT NULL DEFAULT 0,
        stored            INTEGER NOT NULL DEFAULT 0,
        duplicates        INTEGER NOT NULL DEFAULT 0,
        dropped_total     INTEGER NOT NULL DEFAULT 0,
        dropped_seen      INTEGER NOT NULL DEFAULT 0,
        spool_deviations  INTEGER NOT NULL DEFAULT 0,
        kernel_lost_total INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    INSERT INTO agents (agent_id, first_contact_ns, last_contact_ns, batches, stored, duplicates)
        SELECT agent_id, MIN(received_ns), MAX(received_ns), COUNT(*), SUM(stored), SUM(duplicates)
        FROM batches GROUP BY agent_id;
    CREATE INDEX agents_silent_contact ON agents (silent, last_contact_ns);
    CREATE TABLE agent_events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id TEXT    NOT NULL,
        time_ns  INTEGER NOT NULL,
        kind     INTEGER NOT NULL,
        count    INTEGER NOT NULL,
        detail   TEXT    NOT NULL
    );
    CREATE INDEX agent_events_time ON agent_events (time_ns);
    CREATE INDEX batches_received ON batches (received_ns);",
    // 3: baselines merged across agents per workload (`baselines.rs`): the merged
    // `sensor.v1.Baseline` protobuf and the agents that reported it, one per line.
    "CREATE TABLE merged_baselines (
        workload_id TEXT    PRIMARY KEY NOT NULL,
        body        BLOB    NOT NULL,
        agent_ids   TEXT    NOT NULL,
        updated_ns  INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 4: the incident each deviation belongs to (`Deviation.incident_id`), so incidents group
    // by it rather than by whole runs; empty for rows stored before.
    "ALTER TABLE deviations ADD COLUMN incident_id TEXT NOT NULL DEFAULT '';",
    // 5: deviations are unique per agent, `(agent_id, id)`: ids are the agent's own (a hash of
    // host, workload and behaviour), so another agent that knows or guesses one must not make a
    // later row of this agent a "duplicate". SQLite cannot change a primary key in place: the
    // table is rebuilt, keeping every row.
    "CREATE TABLE deviations_by_agent (
        id            TEXT    NOT NULL,
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
        proto         BLOB    NOT NULL,
        incident_id   TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (agent_id, id)
    );
    INSERT INTO deviations_by_agent (id, time_ns, host, workload_id, workload_kind, run_id, kind,
        severity, summary, executable, agent_id, received_ns, proto, incident_id)
        SELECT id, time_ns, host, workload_id, workload_kind, run_id, kind, severity, summary,
            executable, agent_id, received_ns, proto, incident_id FROM deviations;
    DROP TABLE deviations;
    ALTER TABLE deviations_by_agent RENAME TO deviations;
    CREATE INDEX deviations_workload_time ON deviations (workload_id, time_ns);
    CREATE INDEX deviations_time ON deviations (time_ns);",
    // 6: pipeline liveness from the last heartbeat (`AgentSummary::stalled`).
    "ALTER TABLE agents ADD COLUMN heartbeat_interval_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN last_event_ns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN event_queue_depth INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN events_decoded_total INTEGER NOT NULL DEFAULT 0;",
    // 7: each agent's contribution to a workload's baseline kept on its own, so a merged baseline
    // is recomputed from them (an operator can drop one agent's) and adopted only at a quorum of
    // agents; merged baselines can be frozen. Merged baselines from before cannot be attributed
    // to agents and are deleted: agents report theirs again at every housekeeping tick.
    "CREATE TABLE baseline_contributions (
        workload_id TEXT    NOT NULL,
        agent_id    TEXT    NOT NULL,
        body        BLOB    NOT NULL,
        updated_ns  INTEGER NOT NULL,
        PRIMARY KEY (workload_id, agent_id)
    ) WITHOUT ROWID;
    DELETE FROM merged_baselines;
    ALTER TABLE merged_baselines ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0;",
    // 8: deviations unique per `(agent_id, workload_id, run_id, id)`. For an honest agent this is
    // the same rule as migration 5's `(agent_id, id)` (an id hashes the workload and the run, or
    // hour, it was found in: `detect::ids`), but the key now groups each run's rows: ids are
    // SHA-256 hex, and an index led by them took every insert to a random page (one WAL page
    // write per deviation, ~4x the ingest CPU with a million rows; BENCHMARKS.md). The table is
    // rebuilt, keeping every row.
    "CREATE TABLE deviations_by_run (
        id            TEXT    NOT NULL,
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
        proto         BLOB    NOT NULL,
        incident_id   TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (agent_id, workload_id, run_id, id)
    );
    INSERT INTO deviations_by_run (id, time_ns, host, workload_id, workload_kind, run_id, kind,
        severity, summary, executable, agent_id, received_ns, proto, incident_id)
        SELECT id, time_ns, host, workload_id, workload_kind, run_id, kind, severity, summary,
            executable, agent_id, received_ns, proto, incident_id FROM deviations ORDER BY rowid;
    DROP TABLE deviations;
    ALTER TABLE deviations_by_run RENAME TO deviations;
    CREATE INDEX deviations_workload_time ON deviations (workload_id, time_ns);
    CREATE INDEX deviations_time ON deviations (time_ns);",
];
