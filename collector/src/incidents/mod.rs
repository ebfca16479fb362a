//! Incidents: stored deviations grouped into what a person reads first. One incident is one CI
//! run, or one process tree of another workload (the agent's `incident_id`; deviations from
//! agents that set none group by workload and run). Each has its highest severity, a
//! one-sentence story in time order ([`story`]) and its deviations beneath it; low and info
//! deviations are collapsed (counted) unless asked for.
//!
//! The store groups deviations into incidents (`Store::incidents_with_entries`, all of them, not
//! only the newest deviations); `collector incidents` asks for them over `Query/ListIncidents`
//! and the web page (`/api/incidents`) reads them the same way ([`query`]). The job summary
//! (`collector report`) groups one run's deviations here ([`group`]). All three tell incidents
//! the same way ([`render`], [`story`]).

pub mod query;
pub mod render;
pub mod story;

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use proto::v1::{Deviation, Severity, StoredDeviation};

use crate::cli::IncidentsArgs;
use crate::query::QueryError;
pub use story::Story;

/// Deviations fetched to group one run's incidents for its job summary (the Query service's cap).
pub const FETCHED: u32 = crate::store::MAX_QUERY_LIMIT;

/// One incident and its deviations.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub workload_id: String,
    /// `WorkloadKind` value.
    pub workload_kind: i32,
    pub run_id: String,
    /// The agent's incident id; empty when its agent set none.
    pub incident_id: String,
    pub max_severity: Severity,
    /// Distinct hosts of `deviations` (and the first of all by name), sorted.
    pub hosts: BTreeSet<String>,
    /// Distinct hosts of all its deviations.
    pub host_count: u64,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Its deviations in all; `deviations` may hold only the newest of them.
    pub total: u64,
    /// Distinct `DeviationKind` values of all its deviations, ascending.
    pub kinds: Vec<i32>,
    /// Oldest first (ties by id), so that the story reads in causal order.
    pub deviations: Vec<StoredDeviation>,
}

/// What collapsing hides: deviations below medium, by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collapsed {
    pub low: usize,
    /// Info and unspecified.
    pub info: usize,
}

impl Collapsed {
    pub fn total(self) -> usize {
        self.low + self.info
    }
}

/// A deviation's severity, typed (values no release knows are unspecified).
pub fn severity(deviation: &Deviation) -> Severity {
    Severity::try_from(deviation.severity).unwrap_or(Severity::Unspecified)
}

/// Whether a deviation is shown when low and info are collapsed.
pub fn shown_by_default(deviation: &Deviation) -> bool {
    severity(deviation) >= Severity::Medium
}

fn inner(stored: &StoredDeviation) -> Option<&Deviation> {
    stored.deviation.as_ref()
}

impl Incident {
    /// Its deviations (oldest first).
    pub fn deviations(&self) -> impl Iterator<Item = &Deviation> {
        self.deviations.iter().filter_map(inner)
    }

    /// The story: told from the medium and higher deviations when there are any (the low ones
    /// beside an exfiltration are noise in its sentence), else from all of them.
    pub fn story(&self) -> Story {
        if self.deviations().any(shown_by_default) {
            Story::tell(self.deviations().filter(|d| shown_by_default(d)))
        } else {
            Story::tell(self.deviations())
        }
    }

    /// Its older deviations left out of `deviations`.
    pub fn left_out(&self) -> u64 {
        self.total.saturating_sub(self.deviations.len() as u64)
    }

    /// How many deviations collapsing hides.
    pub fn collapsed(&self) -> Collapsed {
        let mut collapsed = Collapsed::default();
        for deviation in self.deviations() {
            match severity(deviation) {
                Severity::Low => collapsed.low += 1,
                Severity::Info | Severity::Unspecified => collapsed.info += 1,
                Severity::Medium | Severity::High | Severity::Critical => {}
            }
        }
        collapsed
    }
}

/// The incident a deviation belongs to.
fn key(deviation: &Deviation) -> (String, String, String) {
    let workload = deviation.workload.clone().unwrap_or_default();
    (workload.id, workload.run_id, deviation.incident_id.clone())
}

/// Groups `deviations` (any order) into incidents, the one with the latest deviation first.
pub fn group(deviations: Vec<StoredDeviation>) -> Vec<Incident> {
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    let mut incidents: Vec<Incident> = Vec::new();
    for stored in deviations {
        let Some(deviation) = inner(&stored) else {
            continue;
        };
        let (workload_id, run_id, incident_id) = key(deviation);
        let slot = *index
            .entry((workload_id.clone(), run_id.clone(), incident_id.clone()))
            .or_insert_with(|| {
                incidents.push(Incident {
                    workload_id,
                    workload_kind: deviation.workload.as_ref().map_or(0, |w| w.kind),
                    run_id,
                    incident_id,
                    max_severity: Severity::Unspecified,
                    hosts: BTreeSet::new(),
                    host_count: 0,
                    first_ns: i64::MAX,
                    last_ns: i64::MIN,
                    total: 0,
                    kinds: Vec::new(),
                    deviations: Vec::new(),
                });
                incidents.len() - 1
            });
        let incident = &mut incidents[slot];
        incident.max_severity = incident.max_severity.max(severity(deviation));
        incident.hosts.insert(deviation.host.clone());
        incident.first_ns = incident.first_ns.min(deviation.time_unix_nanos);
        incident.last_ns = incident.last_ns.max(deviation.time_unix_nanos);
        incident.kinds.push(deviation.kind);
        incident.deviations.push(stored);
    }
    for incident in &mut incidents {
        incident.total = incident.deviations.len() as u64;
        incident.host_count = incident.hosts.len() as u64;
        incident.kinds.sort_unstable();
        incident.kinds.dedup();
        incident
            .deviations
            .sort_by(|a, b| time_order(a).cmp(&time_order(b)));
    }
    incidents.sort_by(|a, b| {
        b.last_ns
            .cmp(&a.last_ns)
            .then_with(|| a.workload_id.cmp(&b.workload_id))
            .then_with(|| a.run_id.cmp(&b.run_id))
            .then_with(|| a.incident_id.cmp(&b.incident_id))
    });
    incidents
}

/// What orders an incident's deviations: time, then id (only deviations are grouped).
fn time_order(stored: &StoredDeviation) -> (i64, &str) {
    inner(stored).map_or((i64::MIN, ""), |d| (d.time_unix_nanos, d.id.as_str()))
}

/// `collector incidents`: asks the collector for the incidents of the matching deviations and
/// prints them. When more matched than `--limit`, says so on stderr (stdout stays the list).
pub async fn run(args: &IncidentsArgs) -> Result<(), QueryError> {
    let limit = args.limit.max(1);
    let request = crate::query::request(&args.filter, limit, SystemTime::now())?;
    let (incidents, more) = query::fetch(&args.server, request, &args.client).await?;
    let out = &mut std::io::stdout().lock();
    let printed = if args.json {
        render::print_json(out, &incidents)
    } else {
        render::print_text(out, &incidents, args.all)
    };
    if more {
        eprintln!(
            "showing the newest {} incidents; older ones match too (raise --limit, or narrow \
             --since/--until)",
            incidents.len()
        );
    }
    match printed {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(QueryError::Output),
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::Workload;

    use super::*;

    fn stored(
        id: &str,
        time: i64,
        run: &str,
        incident: &str,
        severity: Severity,
    ) -> StoredDeviation {
        StoredDeviation {
            deviation: Some(Deviation {
                id: id.to_owned(),
                time_unix_nanos: time,
                host: "h".to_owned(),
                workload: Some(Workload {
                    id: "github:a/b/ci/c".to_owned(),
                    kind: 4,
                    run_id: run.to_owned(),
                }),
                severity: severity.into(),
                incident_id: incident.to_owned(),
                ..Deviation::default()
            }),
            ..StoredDeviation::default()
        }
    }

    #[test]
    fn groups_by_run_and_incident_latest_first_deviations_oldest_first() {
        let incidents = group(vec![
            stored("b", 20, "1", "", Severity::Low),
            stored("a", 10, "1", "", Severity::High),
            stored("c", 30, "2", "", Severity::Info),
            stored("d", 5, "2", "tree-9", Severity::Medium),
        ]);
        let keys: Vec<_> = incidents
            .iter()
            .map(|i| (i.run_id.as_str(), i.incident_id.as_str()))
            .collect();
        assert_eq!(keys, [("2", ""), ("1", ""), ("2", "tree-9")]);
        let run1 = &incidents[1];
        assert_eq!(run1.max_severity, Severity::High);
        assert_eq!((run1.first_ns, run1.last_ns), (10, 20));
        let ids: Vec<_> = run1.deviations().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(run1.collapsed(), Collapsed { low: 1, info: 0 });
        assert_eq!(incidents[0].collapsed().total(), 1);
    }
}
