//! Every conversion of `sensor.v1` types lives here: to database rows, to the short names the
//! command line uses, to JSON lines and to table cells.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use proto::v1::{
    Deviation, DeviationKind, Severity, StoredDeviation, Workload, WorkloadKind, novelty::What,
};
use serde_json::{Value, json};

/// A deviation as stored: its filterable columns (see `store::MIGRATIONS`), moved out of it,
/// and `body`, the protobuf of the rest. What a column holds is not stored twice: on the ingest
/// path the bytes each row writes (table, WAL, checkpoint) are most of the database's cost, and
/// the duplicated strings were about a third of the protobuf (BENCHMARKS.md). Rows stored before
/// carry the whole deviation in `body`; the columns hold the same values, and win.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviationRow {
    pub id: String,
    pub time_ns: i64,
    pub host: String,
    pub workload_id: String,
    pub workload_kind: i32,
    pub run_id: String,
    pub kind: i32,
    pub severity: i32,
    pub summary: String,
    pub executable: String,
    /// The agent's incident (one run or process tree); empty from agents that set none.
    pub incident_id: String,
    pub body: Vec<u8>,
}

impl From<Deviation> for DeviationRow {
    fn from(mut d: Deviation) -> Self {
        let workload = d.workload.take().unwrap_or_default();
        let executable = d
            .process
            .as_mut()
            .map(|p| std::mem::take(&mut p.executable))
            .unwrap_or_default();
        let mut row = DeviationRow {
            id: std::mem::take(&mut d.id),
            time_ns: std::mem::take(&mut d.time_unix_nanos),
            host: std::mem::take(&mut d.host),
            workload_id: workload.id,
            workload_kind: workload.kind,
            run_id: workload.run_id,
            kind: std::mem::take(&mut d.kind),
            severity: std::mem::take(&mut d.severity),
            summary: std::mem::take(&mut d.summary),
            executable,
            incident_id: std::mem::take(&mut d.incident_id),
            body: Vec::new(),
        };
        row.body = d.encode_to_vec();
        row
    }
}

impl DeviationRow {
    /// What makes a row unique for its agent (the store's key after the agent id): the workload,
    /// the run and the id, which hashes both, so for an honest agent the id alone decides.
    pub fn unique_key(&self) -> (&str, &str, &str) {
        (&self.workload_id, &self.run_id, &self.id)
    }

    /// The stored deviation: its body with the columns put back.
    pub fn into_deviation(self) -> Result<Deviation, prost::DecodeError> {
        let mut d = Deviation::decode(self.body.as_slice())?;
        d.id = self.id;
        d.time_unix_nanos = self.time_ns;
        d.host = self.host;
        d.workload = Some(Workload {
            id: self.workload_id,
            kind: self.workload_kind,
            run_id: self.run_id,
        });
        d.kind = self.kind;
        d.severity = self.severity;
        d.summary = self.summary;
        if let Some(process) = d.process.as_mut() {
            process.executable = self.executable;
        }
        d.incident_id = self.incident_id;
        Ok(d)
    }
}

/// Short, lowercase name of a deviation kind, as the command line spells it (the contract's,
/// [`proto::kind_name`]).
pub fn kind_name(kind: i32) -> &'static str {
    proto::kind_name(DeviationKind::try_from(kind).unwrap_or(DeviationKind::Unspecified))
}

/// Lowercase name of a severity.
pub fn severity_name(severity: i32) -> &'static str {
    match Severity::try_from(severity) {
        Ok(Severity::Info) => "info",
        Ok(Severity::Low) => "low",
        Ok(Severity::Medium) => "medium",
        Ok(Severity::High) => "high",
        Ok(Severity::Critical) => "critical",
        Ok(Severity::Unspecified) | Err(_) => "unspecified",
    }
}

/// Lowercase name of a workload kind.
pub fn workload_kind_name(kind: i32) -> &'static str {
    match WorkloadKind::try_from(kind) {
        Ok(WorkloadKind::Cgroup) => "cgroup",
        Ok(WorkloadKind::SystemdUnit) => "systemd-unit",
        Ok(WorkloadKind::Container) => "container",
        Ok(WorkloadKind::GithubJob) => "github-job",
        Ok(WorkloadKind::GitlabJob) => "gitlab-job",
        Ok(WorkloadKind::Unspecified) | Err(_) => "unspecified",
    }
}

/// A time in ns since the epoch as a `SystemTime` (times before the epoch become the epoch).
pub fn system_time(unix_nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_nanos).unwrap_or(0))
}

/// A `SystemTime` as ns since the epoch, saturating.
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC with nanoseconds, e.g. `2025-01-02T03:04:05.123456789Z`.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    humantime::format_rfc3339_nanos(system_time(unix_nanos)).to_string()
}

/// One JSON object for `collector deviations --json`.
pub fn to_json(stored: &StoredDeviation) -> Value {
    let default = Deviation::default();
    let d = stored.deviation.as_ref().unwrap_or(&default);
    let workload = d.workload.clone().unwrap_or_default();
    let process = d.process.clone().unwrap_or_default();
    let ancestry: Vec<Value> = process
        .ancestry
        .iter()
        .map(|a| json!({ "pid": a.pid, "executable": a.executable }))
        .collect();
    json!({
        "id": d.id,
        "time": rfc3339_nanos(d.time_unix_nanos),
        "host": d.host,
        "workload": workload.id,
        "workload_kind": workload_kind_name(workload.kind),
        "run_id": workload.run_id,
        "kind": kind_name(d.kind),
        "severity": severity_name(d.severity),
        "summary": d.summary,
        "executable": process.executable,
        "process": {
            "pid": process.pid,
            "ppid": process.ppid,
            "executable": process.executable,
            "argv": process.argv,
            "argv_truncated": process.argv_truncated,
            "uid": process.uid,
            "euid": process.euid,
            "executable_sha256": process.executable_sha256,
            "ancestry": ancestry,
        },
        "novelty": novelty_json(d),
        "signals": d.signals,
        "incident_id": d.incident_id,
        "tags": d.tags,
        "score": d.score,
        // Older agents leave count at 0: one occurrence.
        "count": d.count.max(1),
        "related": d.related.iter().map(|e| json!({
            "deviation_id": e.deviation_id,
            "kind": kind_name(e.kind),
            "summary": e.summary,
            "time": rfc3339_nanos(e.time_unix_nanos),
        })).collect::<Vec<_>>(),
        "samples": d.samples,
        // What a new executable read as it loaded (see the proto's LoadingEvidence).
        "loaded": d.loaded.as_ref().map(|l| json!({ "paths": l.paths, "total": l.total })),
        "agent_id": stored.agent_id,
        "received": rfc3339_nanos(stored.received_unix_nanos),
    })
}

fn novelty_json(d: &Deviation) -> Value {
    match d.novelty.as_ref().and_then(|n| n.what.as_ref()) {
        Some(What::Executable(path)) => json!({ "executable": path }),
        Some(What::ExecEdge(edge)) => json!({
            "parent_executable": edge.parent_executable,
            "child_executable": edge.child_executable,
        }),
        Some(What::File(file)) => json!({ "path": file.path, "intent": file.intent }),
        Some(What::Destination(dest)) => json!({
            "address": dest.address,
            "port": dest.port,
            "protocol": dest.protocol,
            "dns_name": dest.dns_name,
        }),
        Some(What::Privilege(p)) => json!({
            "operation": p.operation,
            "detail": p.detail,
            "result": p.result,
        }),
        Some(What::Dns(q)) => json!({ "name": q.name, "type": q.r#type }),
        Some(What::Listener(l)) => json!({
            "address": l.address,
            "port": l.port,
            "protocol": l.protocol,
        }),
        Some(What::FileOperation(f)) => json!({
            "operation": f.operation,
            "path": f.path,
            "detail": f.detail,
        }),
        Some(What::Cardinality(c)) => json!({ "dimension": c.dimension, "limit": c.limit }),
        Some(What::Sequence(q)) => json!({
            "parent_executable": q.parent_executable,
            "steps": q.steps,
        }),
        Some(What::Rate(r)) => json!({
            "dimension": r.dimension,
            "count": r.count,
            "window_seconds": r.window_seconds,
            "learned_peak": r.learned_peak,
            "threshold": r.threshold,
        }),
        Some(What::Enumeration(e)) => json!({
            "dimension": e.dimension,
            "distinct": e.distinct,
            "window_seconds": e.window_seconds,
            "threshold": e.threshold,
            "samples": e.samples,
        }),
        Some(What::Time(t)) => json!({ "weekday": t.weekday, "hour": t.hour }),
        Some(What::Host(host)) => json!({ "host": host }),
        Some(What::Aggregate(a)) => json!({
            "kind": kind_name(a.kind),
            "budget": a.budget,
            "sample_ids": a.sample_ids,
        }),
        Some(What::Identity(w)) => json!({
            "workload": w.id,
            "workload_kind": w.kind().as_str_name(),
            "run_id": w.run_id,
        }),
        None => Value::Null,
    }
}

/// The cells of one table row: time, severity, workload, kind, summary.
pub fn table_cells(stored: &StoredDeviation) -> [String; 5] {
    let default = Deviation::default();
    let d = stored.deviation.as_ref().unwrap_or(&default);
    [
        humantime::format_rfc3339_seconds(system_time(d.time_unix_nanos)).to_string(),
        severity_name(d.severity).to_owned(),
        d.workload.as_ref().map_or("", |w| w.id.as_str()).to_owned(),
        kind_name(d.kind).to_owned(),
        d.summary.clone(),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::v1::{Ancestor, ExecEdge, Novelty, Process, Workload};

    /// A complete deviation for tests.
    pub(crate) fn deviation(id: &str, time_unix_nanos: i64) -> Deviation {
        Deviation {
            id: id.to_owned(),
            time_unix_nanos,
            host: "host-1".to_owned(),
            workload: Some(Workload {
                id: "github:acme/app/ci/build".to_owned(),
                kind: WorkloadKind::GithubJob.into(),
                run_id: "42".to_owned(),
            }),
            kind: DeviationKind::NewExecEdge.into(),
            severity: Severity::High.into(),
            summary: format!("deviation {id}"),
            process: Some(Process {
                pid: 100,
                ppid: 1,
                executable: "/usr/bin/nc".to_owned(),
                argv: vec!["nc".to_owned(), "-l".to_owned()],
                ancestry: vec![Ancestor {
                    pid: 1,
                    executable: "/usr/bin/bash".to_owned(),
                }],
                ..Process::default()
            }),
            signals: vec!["credential".to_owned()],
            novelty: Some(Novelty {
                what: Some(What::ExecEdge(ExecEdge {
                    parent_executable: "/usr/bin/bash".to_owned(),
                    child_executable: "/usr/bin/nc".to_owned(),
                })),
            }),
            ..Deviation::default()
        }
    }

    #[test]
    fn a_row_holds_each_value_once_and_gives_the_deviation_back() {
        let mut sent = deviation("x", 1_700_000_000_123_456_789);
        sent.incident_id = "tree-1".to_owned();
        sent.tags = vec!["egress".to_owned()];
        let row = DeviationRow::from(sent.clone());
        assert_eq!(
            (row.id.as_str(), row.host.as_str(), row.executable.as_str()),
            ("x", "host-1", "/usr/bin/nc")
        );
        let body = Deviation::decode(row.body.as_slice()).unwrap();
        assert!(body.id.is_empty() && body.host.is_empty() && body.summary.is_empty());
        assert!(body.workload.is_none() && body.incident_id.is_empty());
        assert!(body.process.as_ref().unwrap().executable.is_empty());
        assert!(
            row.body.len() < sent.encoded_len() * 2 / 3,
            "{}",
            row.body.len()
        );
        assert_eq!(row.into_deviation().unwrap(), sent);

        // No process: none comes back (its executable column is empty).
        sent.process = None;
        assert_eq!(
            DeviationRow::from(sent.clone()).into_deviation().unwrap(),
            sent
        );
    }

    #[test]
    fn a_row_stored_with_the_whole_deviation_reads_back_the_same() {
        let sent = deviation("old", 5);
        let mut row = DeviationRow::from(sent.clone());
        row.body = sent.encode_to_vec();
        assert_eq!(row.into_deviation().unwrap(), sent);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let stored = StoredDeviation {
            deviation: Some(deviation("x", 1_700_000_000_123_456_789)),
            agent_id: "agent-a".to_owned(),
            received_unix_nanos: 1_700_000_001_000_000_000,
        };
        let v = to_json(&stored);
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["kind"], "new-exec-edge");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["workload"], "github:acme/app/ci/build");
        assert_eq!(v["executable"], "/usr/bin/nc");
        assert_eq!(v["process"]["ancestry"][0]["executable"], "/usr/bin/bash");
        assert_eq!(v["novelty"]["child_executable"], "/usr/bin/nc");
        assert_eq!(v["agent_id"], "agent-a");
    }

    #[test]
    fn cardinality_deviations_convert() {
        let mut d = deviation("c", 1);
        d.kind = DeviationKind::CardinalityExploded.into();
        d.novelty = Some(Novelty {
            what: Some(What::Cardinality(proto::v1::Cardinality {
                dimension: "file-access".to_owned(),
                limit: 20_000,
            })),
        });
        let stored = StoredDeviation {
            deviation: Some(d),
            ..StoredDeviation::default()
        };
        let v = to_json(&stored);
        assert_eq!(v["kind"], "cardinality-exploded");
        assert_eq!(v["novelty"]["dimension"], "file-access");
        assert_eq!(v["novelty"]["limit"], 20_000);
        assert_eq!(table_cells(&stored)[3], "cardinality-exploded");
    }

    #[test]
    fn scoring_fields_convert() {
        let mut d = deviation("agg", 1);
        d.kind = DeviationKind::Aggregated.into();
        d.incident_id = "inc-1".to_owned();
        d.tags = vec!["mitre:T1041".to_owned(), "nist-csf:DE.CM-01".to_owned()];
        d.score = 72;
        d.count = 41;
        d.samples = vec!["new file access /etc/a".to_owned()];
        d.related = vec![proto::v1::Evidence {
            deviation_id: "cred".to_owned(),
            kind: DeviationKind::NewFileAccess.into(),
            summary: "ssh key read".to_owned(),
            time_unix_nanos: 0,
        }];
        d.novelty = Some(Novelty {
            what: Some(What::Aggregate(proto::v1::Aggregate {
                kind: DeviationKind::NewFileAccess.into(),
                budget: 20,
                sample_ids: vec!["a".to_owned()],
            })),
        });
        let v = to_json(&StoredDeviation {
            deviation: Some(d),
            ..StoredDeviation::default()
        });
        assert_eq!(v["kind"], "aggregated");
        assert_eq!(
            (
                v["incident_id"].clone(),
                v["score"].clone(),
                v["count"].clone()
            ),
            ("inc-1".into(), 72.into(), 41.into())
        );
        assert_eq!(v["tags"][0], "mitre:T1041");
        assert_eq!(v["related"][0]["kind"], "new-file-access");
        assert_eq!(v["related"][0]["deviation_id"], "cred");
        assert_eq!(v["samples"][0], "new file access /etc/a");
        assert_eq!(v["novelty"]["kind"], "new-file-access");
        assert_eq!(v["novelty"]["budget"], 20);
        // Deviations from older agents count once.
        let old = to_json(&StoredDeviation {
            deviation: Some(deviation("old", 1)),
            ..StoredDeviation::default()
        });
        assert_eq!(old["count"], 1);
        for (kind, name) in [
            (DeviationKind::NewSequence, "new-sequence"),
            (DeviationKind::RateSpike, "rate-spike"),
            (DeviationKind::Enumeration, "enumeration"),
            (DeviationKind::UnusualTime, "unusual-time"),
            (DeviationKind::NewHost, "new-host"),
        ] {
            assert_eq!(kind_name(kind.into()), name);
        }
    }

    #[test]
    fn times_before_the_epoch_do_not_panic() {
        assert_eq!(rfc3339_nanos(-5), "1970-01-01T00:00:00.000000000Z");
        assert!(rfc3339_nanos(i64::MAX).starts_with("2262-"));
    }
}
