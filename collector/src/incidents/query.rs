//! `Query/ListIncidents`: incidents grouped by the store (`Store::incidents_with_entries`), each
//! with its newest deviations; the Query service and the web page answer with [`answer`], and
//! `collector incidents` asks with [`fetch`].

use std::collections::BTreeSet;

use proto::v1::{
    IncidentSummary, ListDeviationsRequest, ListIncidentsRequest, ListIncidentsResponse, Severity,
};

use super::Incident;
use crate::credentials::ClientArgs;
use crate::query::QueryError;
use crate::store::{EntryBudget, IncidentEntries, Store, StoreError};

/// Deviations of one incident an answer holds when the request asks for none, and at most: its
/// newest.
pub const ENTRIES_PER_INCIDENT: u32 = 1000;
/// Deviations one answer holds at most over all its incidents (the Query service's cap on
/// deviations): each incident gets an equal share, at least one.
pub const MAX_ENTRIES: u32 = crate::store::MAX_QUERY_LIMIT;

/// The entry budget for a request's `deviations_per_incident` (0 for the default).
pub fn budget(per_incident: u32) -> EntryBudget {
    let per_incident = match per_incident {
        0 => ENTRIES_PER_INCIDENT,
        n => n.min(ENTRIES_PER_INCIDENT),
    };
    EntryBudget {
        per_incident,
        total: MAX_ENTRIES,
    }
}

/// The answer to `request` from `store` (blocking: it reads the database).
pub fn answer(
    store: &Store,
    request: &ListIncidentsRequest,
) -> Result<ListIncidentsResponse, StoreError> {
    let filter = request.filter.clone().unwrap_or_default();
    let page = store.incidents_with_entries(&filter, budget(request.deviations_per_incident))?;
    Ok(ListIncidentsResponse {
        incidents: page.incidents.into_iter().map(summary).collect(),
        more: page.more,
    })
}

/// A stored incident on the wire.
fn summary(stored: IncidentEntries) -> IncidentSummary {
    let s = stored.summary;
    IncidentSummary {
        workload_id: s.workload_id,
        workload_kind: s.workload_kind,
        run_id: s.run_id,
        incident_id: s.incident_id,
        deviations: s.deviations,
        max_severity: s.max_severity,
        kinds: s.kinds,
        hosts: s.hosts,
        host: s.host,
        first_unix_nanos: s.first_ns,
        last_unix_nanos: s.last_ns,
        entries: stored.entries,
    }
}

/// An incident as the collector answered it, ready to tell: its hosts are those of its entries
/// and the first by name (`hosts` counts them all).
pub fn incident(summary: IncidentSummary) -> Incident {
    let mut hosts: BTreeSet<String> = summary
        .entries
        .iter()
        .filter_map(|e| e.deviation.as_ref())
        .map(|d| d.host.clone())
        .collect();
    hosts.insert(summary.host);
    Incident {
        workload_id: summary.workload_id,
        workload_kind: summary.workload_kind,
        run_id: summary.run_id,
        incident_id: summary.incident_id,
        max_severity: Severity::try_from(summary.max_severity).unwrap_or(Severity::Unspecified),
        hosts,
        host_count: summary.hosts,
        first_ns: summary.first_unix_nanos,
        last_ns: summary.last_unix_nanos,
        total: summary.deviations,
        kinds: summary.kinds,
        deviations: summary.entries,
    }
}

/// Calls `Query/ListIncidents` on the collector at `url`: at most `filter.limit` incidents, and
/// whether more matched.
pub async fn fetch(
    url: &str,
    filter: ListDeviationsRequest,
    credentials: &ClientArgs,
) -> Result<(Vec<Incident>, bool), QueryError> {
    let mut client = crate::listing::connect(url, credentials).await?;
    let response = client
        .list_incidents(ListIncidentsRequest {
            filter: Some(filter),
            deviations_per_incident: 0,
        })
        .await
        .map_err(|s| crate::listing::status_error(url, s))?
        .into_inner();
    Ok((
        response.incidents.into_iter().map(incident).collect(),
        response.more,
    ))
}
