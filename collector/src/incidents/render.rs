//! Incidents as text (`collector incidents`) and JSON (`--json`, `/api/incidents`).

use std::io::{self, Write};

use proto::v1::{Deviation, LoadingEvidence, Severity};
use serde_json::{Value, json};

use super::{Incident, severity, shown_by_default};
use crate::convert::{kind_name, rfc3339_nanos, severity_name, to_json, workload_kind_name};

/// One JSON object per incident: the fields `/api/incidents` always had (workload, run_id,
/// incident, deviations, max_severity, kinds, hosts, host, first, last), then its story, what
/// collapsing hides, and its deviations oldest first (`entries`, each as `collector deviations
/// --json` prints it). An incident with more deviations than the answer held also has
/// `entries_left_out`: how many older ones `entries` lacks.
pub fn incident_json(incident: &Incident) -> Value {
    let story = incident.story();
    let collapsed = incident.collapsed();
    let mut value = json!({
        "workload": incident.workload_id,
        "workload_kind": workload_kind_name(incident.workload_kind),
        "run_id": incident.run_id,
        "incident": incident.incident_id,
        "deviations": incident.total,
        "max_severity": severity_name(incident.max_severity.into()),
        "kinds": incident.kinds.iter().map(|&k| kind_name(k)).collect::<Vec<_>>(),
        "hosts": incident.host_count,
        "host": incident.hosts.first().cloned().unwrap_or_default(),
        "first": rfc3339_nanos(incident.first_ns),
        "last": rfc3339_nanos(incident.last_ns),
        "story": story.text(),
        "steps": story.steps.iter().map(|s| json!({
            "deviation_id": s.deviation_id,
            "text": s.text(),
        })).collect::<Vec<_>>(),
        "more_steps": story.more,
        "collapsed": { "low": collapsed.low, "info": collapsed.info },
        "entries": incident.deviations.iter().map(to_json).collect::<Vec<_>>(),
    });
    if incident.left_out() > 0 {
        value["entries_left_out"] = json!(incident.left_out());
    }
    value
}

/// One JSON object per line.
pub fn print_json(out: &mut impl Write, incidents: &[Incident]) -> io::Result<()> {
    for incident in incidents {
        serde_json::to_writer(&mut *out, &incident_json(incident))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// "2026-12-06 23:41:34".
fn short_time(unix_nanos: i64) -> String {
    let text = humantime::format_rfc3339_seconds(crate::convert::system_time(unix_nanos));
    text.to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// Where an incident happened, in words: "run 42", "process tree 3f2a…", "run 42, tree 3f2a…".
fn scope(incident: &Incident) -> String {
    let tree: String = incident.incident_id.chars().take(12).collect();
    match (incident.run_id.is_empty(), tree.is_empty()) {
        (false, _) => format!("run {}", incident.run_id),
        (true, false) => format!("incident {tree}"),
        (true, true) => "no run".to_owned(),
    }
}

/// Each incident: a header line (severity, workload, scope, hosts, times, count), its story, its
/// deviations oldest first (low and info counted on one line unless `all`).
pub fn print_text(out: &mut impl Write, incidents: &[Incident], all: bool) -> io::Result<()> {
    if incidents.is_empty() {
        writeln!(out, "no incidents")?;
        return out.flush();
    }
    for (n, incident) in incidents.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        let mut hosts: Vec<String> = incident.hosts.iter().map(|h| printable(h)).collect();
        let unlisted = incident.host_count.saturating_sub(hosts.len() as u64);
        if unlisted > 0 {
            hosts.push(format!("{unlisted} more"));
        }
        writeln!(
            out,
            "{}  {}  {}  on {}  {} … {}  ({} deviation{})",
            severity_name(incident.max_severity.into()).to_uppercase(),
            printable(&incident.workload_id),
            printable(&scope(incident)),
            hosts.join(", "),
            short_time(incident.first_ns),
            short_time(incident.last_ns),
            incident.total,
            if incident.total == 1 { "" } else { "s" },
        )?;
        writeln!(out, "  {}", incident.story().text())?;
        for deviation in incident.deviations() {
            if all || shown_by_default(deviation) {
                print_deviation(out, deviation)?;
            }
        }
        let collapsed = incident.collapsed();
        if !all && collapsed.total() > 0 {
            writeln!(
                out,
                "    + {} low, {} info collapsed (--all shows them)",
                collapsed.low, collapsed.info
            )?;
        }
        if incident.left_out() > 0 {
            writeln!(
                out,
                "    … showing the newest {} of {} deviations (`collector deviations` lists \
                 the others)",
                incident.deviations.len(),
                incident.total
            )?;
        }
    }
    out.flush()
}

fn print_deviation(out: &mut impl Write, deviation: &Deviation) -> io::Result<()> {
    let severity = match severity(deviation) {
        Severity::Unspecified => "unspecified",
        other => severity_name(other.into()),
    };
    writeln!(
        out,
        "    {:<8}  {}  {:<23}  {}",
        severity,
        short_time(deviation.time_unix_nanos),
        kind_name(deviation.kind),
        printable(&deviation.summary),
    )?;
    if let Some(loaded) = &deviation.loaded {
        print_loaded(out, loaded)?;
    }
    Ok(())
}

/// A new executable's loading evidence, beneath its deviation: the paths named and how many
/// reads in all.
fn print_loaded(out: &mut impl Write, loaded: &LoadingEvidence) -> io::Result<()> {
    let paths: Vec<String> = loaded.paths.iter().map(|p| printable(p)).collect();
    writeln!(
        out,
        "              loaded {} ({} read{} in all)",
        paths.join(", "),
        loaded.total,
        if loaded.total == 1 { "" } else { "s" },
    )
}

/// `text` with control characters (newlines, terminal escapes) replaced: an agent's text cannot
/// start a line of its own or drive the terminal.
fn printable(text: &str) -> String {
    text.replace(|c: char| c.is_control(), "?")
}

#[cfg(test)]
mod tests {
    use proto::v1::{StoredDeviation, Workload};

    use super::*;
    use crate::incidents::group;

    fn stored(id: &str, time_s: i64, severity: Severity, summary: &str) -> StoredDeviation {
        StoredDeviation {
            deviation: Some(Deviation {
                id: id.to_owned(),
                time_unix_nanos: time_s * 1_000_000_000,
                host: "runner-1\u{1b}[2J".to_owned(),
                workload: Some(Workload {
                    id: "github:a/b/ci/c".to_owned(),
                    kind: 4,
                    run_id: "42".to_owned(),
                }),
                kind: 3,
                severity: severity.into(),
                summary: summary.to_owned(),
                ..Deviation::default()
            }),
            ..StoredDeviation::default()
        }
    }

    #[test]
    fn low_and_info_collapse_unless_all() {
        let incidents = group(vec![
            stored("a", 1_800_000_000, Severity::High, "the high one"),
            stored("b", 1_800_000_001, Severity::Low, "a low one"),
            stored("c", 1_800_000_002, Severity::Info, "an info\none"),
        ]);
        let text = |all| {
            let mut out = Vec::new();
            print_text(&mut out, &incidents, all).unwrap();
            String::from_utf8(out).unwrap()
        };
        let collapsed = text(false);
        assert!(collapsed.starts_with("HIGH  github:a/b/ci/c  run 42  on runner-1?[2J  2027-01-15 08:00:00 … 2027-01-15 08:00:02  (3 deviations)\n"), "{collapsed}");
        assert!(collapsed.contains("the high one"), "{collapsed}");
        assert!(!collapsed.contains("a low one"), "{collapsed}");
        assert!(
            collapsed.contains("+ 1 low, 1 info collapsed"),
            "{collapsed}"
        );
        let all = text(true);
        assert!(
            all.contains("a low one") && all.contains("an info?one"),
            "{all}"
        );
        assert!(!all.contains("collapsed"), "{all}");
        let json = incident_json(&incidents[0]);
        assert_eq!(json["deviations"], 3);
        assert_eq!(json["collapsed"]["low"], 1);
        assert_eq!(json["entries"][0]["id"], "a");
        assert_eq!(json["max_severity"], "high");
    }

    #[test]
    fn an_incident_cut_to_its_newest_entries_says_so() {
        let mut incident = group(vec![
            stored("b", 1_800_000_001, Severity::High, "the newer one"),
            stored("c", 1_800_000_002, Severity::Medium, "the newest one"),
        ])
        .remove(0);
        // As the collector answers it: five deviations on three hosts, the newest two included.
        incident.total = 5;
        incident.host_count = 3;
        let mut out = Vec::new();
        print_text(&mut out, std::slice::from_ref(&incident), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("on runner-1?[2J, 2 more  "),
            "{text}"
        );
        assert!(text.contains("(5 deviations)"), "{text}");
        assert!(
            text.ends_with("    … showing the newest 2 of 5 deviations (`collector deviations` lists the others)\n"),
            "{text}"
        );
        let json = incident_json(&incident);
        assert_eq!(json["deviations"], 5);
        assert_eq!(json["hosts"], 3);
        assert_eq!(json["entries_left_out"], 3);
        assert_eq!(json["entries"].as_array().unwrap().len(), 2);
        incident.total = 2;
        assert!(incident_json(&incident).get("entries_left_out").is_none());
    }
}
