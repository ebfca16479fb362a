//! Stored deviations as OCSF "Detection Finding" events (class 2004, category 2 "Findings",
//! OCSF 1.3), one JSON object per line, for SIEMs that ingest OCSF (Amazon Security Lake,
//! Splunk, Sentinel, Elastic...).
//!
//! The mapping: `finding_info.uid` is the deviation id (stable: re-exporting the same deviation
//! gives the same finding), `time` the kernel event time in ms, `severity_id` the deviation's
//! severity (OCSF 1..5 are exactly our info..critical), `device.hostname` the host, `actor.process`
//! the process that did it. What OCSF has no field for (workload, run, the novelty itself, signals,
//! agent) goes under `unmapped`, as the schema intends, with the same names as
//! `collector deviations --json`.

use proto::v1::{Deviation, StoredDeviation};
use serde_json::{Value, json};

use crate::convert::{kind_name, severity_name, to_json, workload_kind_name};

/// The OCSF schema version the events follow.
pub const VERSION: &str = "1.3.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// Activity "Create": the finding is new.
const ACTIVITY_CREATE: u32 = 1;
/// OCSF hash algorithm id of SHA-256.
const SHA256: u32 = 3;

/// One OCSF Detection Finding for a stored deviation.
pub fn detection_finding(stored: &StoredDeviation) -> Value {
    let default = Deviation::default();
    let d = stored.deviation.as_ref().unwrap_or(&default);
    let workload = d.workload.clone().unwrap_or_default();
    let process = d.process.clone().unwrap_or_default();
    let time_ms = d.time_unix_nanos.div_euclid(1_000_000);
    let received_ms = stored.received_unix_nanos.div_euclid(1_000_000);
    // Our severities and OCSF's severity_id share 0..=5 (unknown, informational, low, medium,
    // high, critical); anything else is OCSF's 99 "other".
    let severity_id = if (0..=5).contains(&d.severity) {
        d.severity
    } else {
        99
    };
    let kind = kind_name(d.kind);
    let file_name = process.executable.rsplit('/').next().unwrap_or_default();
    let mut file = json!({ "path": process.executable, "name": file_name, "type_id": 1 });
    if !process.executable_sha256.is_empty() {
        file["hashes"] = json!([{
            "algorithm_id": SHA256,
            "algorithm": "SHA-256",
            "value": process.executable_sha256,
        }]);
    }
    let ancestry: Vec<Value> = process
        .ancestry
        .iter()
        .map(|a| json!({ "pid": a.pid, "file": { "path": a.executable, "type_id": 1 } }))
        .collect();
    let mut actor_process = json!({
        "pid": process.pid,
        "name": file_name,
        "file": file,
        "cmd_line": process.argv.join(" "),
        "user": { "uid": process.uid.to_string() },
        "parent_process": { "pid": process.ppid },
    });
    if let Some(parent) = process.ancestry.first() {
        actor_process["parent_process"]["file"] =
            json!({ "path": parent.executable, "type_id": 1 });
    }
    let plain = to_json(stored);
    json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": time_ms,
        "severity_id": severity_id,
        "severity": ocsf_severity(severity_id),
        "status_id": 1,
        "status": "New",
        "confidence_id": 0,
        "message": d.summary,
        "metadata": {
            "version": VERSION,
            "uid": d.id,
            "product": {
                "name": "sensor",
                "vendor_name": "sensor",
                "feature": { "name": "behaviour baseline" },
                "version": env!("CARGO_PKG_VERSION"),
            },
            "logged_time": received_ms,
            "log_name": "deviations",
        },
        "finding_info": {
            "uid": d.id,
            "title": d.summary,
            "desc": format!("{kind} in {}", workload.id),
            "types": [kind],
            "analytic": {
                "name": "baseline deviation",
                "type_id": 2,
                "type": "Behavioral",
                "category": kind,
            },
            "created_time": received_ms,
            "first_seen_time": time_ms,
            "last_seen_time": time_ms,
        },
        "device": { "hostname": d.host, "type_id": 0, "type": "Unknown" },
        "actor": { "process": actor_process, "user": { "uid": process.uid.to_string() } },
        "evidences": [{ "process": { "pid": process.pid, "file": { "path": process.executable, "type_id": 1 } } }],
        "unmapped": {
            "workload": workload.id,
            "workload_kind": workload_kind_name(workload.kind),
            "run_id": workload.run_id,
            "kind": kind,
            "severity": severity_name(d.severity),
            "novelty": plain["novelty"],
            "signals": d.signals,
            "ancestry": ancestry,
            "euid": process.euid,
            "argv_truncated": process.argv_truncated,
            "agent_id": stored.agent_id,
        },
    })
}

/// OCSF's caption for a severity_id.
fn ocsf_severity(id: i32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        99 => "Other",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::deviation;

    fn stored() -> StoredDeviation {
        let mut d = deviation("dev-1", 1_700_000_000_123_456_789);
        d.process.as_mut().unwrap().executable_sha256 = "ab".repeat(32);
        StoredDeviation {
            deviation: Some(d),
            agent_id: "agent-a".to_owned(),
            received_unix_nanos: 1_700_000_001_000_000_000,
        }
    }

    #[test]
    fn finding_has_the_ocsf_required_attributes() {
        let f = detection_finding(&stored());
        // Required by the Detection Finding class (plus the base event's).
        for key in [
            "activity_id",
            "category_uid",
            "class_uid",
            "type_uid",
            "time",
            "severity_id",
            "metadata",
            "finding_info",
        ] {
            assert!(!f[key].is_null(), "{key} missing: {f}");
        }
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["type_uid"], 200_401);
        assert_eq!(f["time"], 1_700_000_000_123_i64);
        assert_eq!(f["metadata"]["version"], VERSION);
        assert_eq!(f["metadata"]["product"]["name"], "sensor");
        assert_eq!(f["finding_info"]["uid"], "dev-1");
        assert_eq!(f["finding_info"]["title"], "deviation dev-1");
        assert_eq!(f["finding_info"]["types"][0], "new-exec-edge");
    }

    #[test]
    fn severity_process_and_workload_map() {
        let f = detection_finding(&stored());
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["severity"], "High");
        assert_eq!(f["device"]["hostname"], "host-1");
        let p = &f["actor"]["process"];
        assert_eq!(p["pid"], 100);
        assert_eq!(p["name"], "nc");
        assert_eq!(p["cmd_line"], "nc -l");
        assert_eq!(p["file"]["path"], "/usr/bin/nc");
        assert_eq!(p["file"]["hashes"][0]["algorithm_id"], 3);
        assert_eq!(p["file"]["hashes"][0]["value"], "ab".repeat(32));
        assert_eq!(p["parent_process"]["file"]["path"], "/usr/bin/bash");
        assert_eq!(f["unmapped"]["workload"], "github:acme/app/ci/build");
        assert_eq!(f["unmapped"]["run_id"], "42");
        assert_eq!(f["unmapped"]["novelty"]["child_executable"], "/usr/bin/nc");
        assert_eq!(f["unmapped"]["signals"][0], "credential");
        assert_eq!(f["unmapped"]["agent_id"], "agent-a");
    }

    #[test]
    fn unknown_severities_and_missing_parts_do_not_panic() {
        let mut s = stored();
        let d = s.deviation.as_mut().unwrap();
        d.severity = 42;
        d.process = None;
        assert_eq!(detection_finding(&s)["severity_id"], 99);
        assert_eq!(detection_finding(&s)["severity"], "Other");
        let empty = detection_finding(&StoredDeviation::default());
        assert_eq!(empty["severity_id"], 0);
        assert!(empty["actor"]["process"]["file"]["hashes"].is_null());
    }
}
