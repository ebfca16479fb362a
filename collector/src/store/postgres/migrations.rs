//! PostgreSQL schema migrations, applied in order, each recorded in `schema_migrations`. Append
//! new ones at the end, never edit an applied one. Keep `sqlite/migrations.rs` in step.

pub const MIGRATIONS: &[&str] = &[
    // 1: deviations with their filterable fields and the full protobuf, and received batches.
    "CREATE TABLE deviations (
        id            TEXT    PRIMARY KEY,
        time_ns       BIGINT  NOT NULL,
        host          TEXT    NOT NULL,
        workload_id   TEXT    NOT NULL,
        workload_kind INTEGER NOT NULL,
        run_id        TEXT    NOT NULL,
        kind          INTEGER NOT NULL,
        severity      INTEGER NOT NULL,
        summary       TEXT    NOT NULL,
        executable    TEXT    NOT NULL,
        agent_id      TEXT    NOT NULL,
        received_ns   BIGINT  NOT NULL,
        proto         BYTEA   NOT NULL
    );
    CREATE INDEX deviations_workload_time ON deviations (workload_id, time_ns);
    CREATE INDEX deviations_time ON deviations (time_ns);
    CREATE TABLE batches (
        agent_id    TEXT    NOT NULL,
        spool_id    TEXT    NOT NULL,
        sequence    BIGINT  NOT NULL,
        received_ns BIGINT  NOT NULL,
        stored      INTEGER NOT NULL,
        duplicates  INTEGER NOT NULL,
        PRIMARY KEY (agent_id, spool_id, sequence)
    );",
    // 2: agents (last contact, last heartbeat's status, silence) and their events. Batch keys get
    // a time index for retention.
    "CREATE TABLE agents (
        agent_id          TEXT    PRIMARY KEY,
        host              TEXT    NOT NULL DEFAULT '',
        version           TEXT    NOT NULL DEFAULT '',
        instance_id       TEXT    NOT NULL DEFAULT '',
        first_contact_ns  BIGINT  NOT NULL,
        last_contact_ns   BIGINT  NOT NULL,
        last_heartbeat_ns BIGINT  NOT NULL DEFAULT 0,
        silent            BOOLEAN NOT NULL DEFAULT FALSE,
        batches           BIGINT  NOT NULL DEFAULT 0,
        stored            BIGINT  NOT NULL DEFAULT 0,
        duplicates        BIGINT  NOT NULL DEFAULT 0,
        dropped_total     BIGINT  NOT NULL DEFAULT 0,
        dropped_seen      BIGINT  NOT NULL DEFAULT 0,
        spool_deviations  BIGINT  NOT NULL DEFAULT 0,
        kernel_lost_total BIGINT  NOT NULL DEFAULT 0
    );
    CREATE INDEX agents_silent_contact ON agents (silent, last_contact_ns);
    CREATE TABLE agent_events (
        id       BIGSERIAL PRIMARY KEY,
        agent_id TEXT      NOT NULL,
        time_ns  BIGINT    NOT NULL,
        kind     INTEGER   NOT NULL,
        count    BIGINT    NOT NULL,
        detail   TEXT      NOT NULL
    );
    CREATE INDEX agent_events_time ON agent_events (time_ns);
    CREATE INDEX batches_received ON batches (received_ns);",
    // 3: baselines merged across agents per workload (`baselines.rs`): the merged
    // `sensor.v1.Baseline` protobuf and the agents that reported it, one per line.
    "CREATE TABLE merged_baselines (
        workload_id TEXT   PRIMARY KEY,
        body        BYTEA  NOT NULL,
        agent_ids   TEXT   NOT NULL,
        updated_ns  BIGINT NOT NULL
    );",
    // 4: the incident each deviation belongs to (see the SQLite migration 4).
    "ALTER TABLE deviations ADD COLUMN incident_id TEXT NOT NULL DEFAULT '';",
    // 5: deviations are unique per agent, `(agent_id, id)` (see the SQLite migration 5).
    "ALTER TABLE deviations DROP CONSTRAINT deviations_pkey;
    ALTER TABLE deviations ADD PRIMARY KEY (agent_id, id);",
    // 6: pipeline liveness from the last heartbeat (see the SQLite migration 6).
    "ALTER TABLE agents ADD COLUMN heartbeat_interval_ms BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN last_event_ns BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN event_queue_depth BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN events_decoded_total BIGINT NOT NULL DEFAULT 0;",
    // 7: per-agent baseline contributions and frozen merged baselines (see the SQLite
    // migration 7).
    "CREATE TABLE baseline_contributions (
        workload_id TEXT   NOT NULL,
        agent_id    TEXT   NOT NULL,
        body        BYTEA  NOT NULL,
        updated_ns  BIGINT NOT NULL,
        PRIMARY KEY (workload_id, agent_id)
    );
    DELETE FROM merged_baselines;
    ALTER TABLE merged_baselines ADD COLUMN frozen BOOLEAN NOT NULL DEFAULT FALSE;",
    // 8: deviations unique per `(agent_id, workload_id, run_id, id)` (see the SQLite
    // migration 8): the same rule for honest agents, with each run's rows side by side in the
    // key instead of spread by the id's hash.
    "ALTER TABLE deviations DROP CONSTRAINT deviations_pkey;
    ALTER TABLE deviations ADD PRIMARY KEY (agent_id, workload_id, run_id, id);",
];
