//! `sensor.v1.Query/ListWorkloads` and `ListAgents`: the server side (store summaries to protobuf)
//! and the `collector workloads` / `collector agents` commands that ask for them and print a table
//! or JSON lines.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use proto::v1::{
    AgentEvent, AgentEventKind, AgentSummary, ListAgentsRequest, ListAgentsResponse,
    ListDeviationsRequest, ListWorkloadsRequest, ListWorkloadsResponse, WorkloadSummary,
    query_client::QueryClient,
};
use serde_json::{Value, json};
use tonic::Status;

use crate::cli::{AgentsArgs, DeviationsArgs};
use crate::convert::{rfc3339_nanos, workload_kind_name};
use crate::query::QueryError;
use crate::server::MAX_RESPONSE_BYTES;
use crate::store::{self, AgentFilter, Store};

/// Answers `ListWorkloads` from the store.
pub async fn workloads(
    store: Arc<Store>,
    request: ListWorkloadsRequest,
) -> Result<ListWorkloadsResponse, Status> {
    let filter = request.filter.unwrap_or_default();
    let workloads = blocking(move || store.workloads(&filter)).await?;
    Ok(ListWorkloadsResponse {
        workloads: workloads.iter().map(workload_proto).collect(),
    })
}

/// Answers `ListAgents` from the store.
pub async fn agents(
    store: Arc<Store>,
    request: ListAgentsRequest,
) -> Result<ListAgentsResponse, Status> {
    let (agents, events) = blocking(move || {
        let agents = store.agents_matching(AgentFilter {
            limit: request.limit,
            silent_only: request.silent_only,
        })?;
        let events = match request.events {
            0 => Vec::new(),
            n => store.agent_events(n)?,
        };
        Ok((agents, events))
    })
    .await?;
    Ok(ListAgentsResponse {
        agents: agents.iter().map(agent_proto).collect(),
        events,
    })
}

/// Runs a store query on the blocking pool; errors become `INTERNAL`.
async fn blocking<T: Send + 'static>(
    query: impl FnOnce() -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(query)
        .await
        .map_err(|e| Status::internal(format!("query failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "query failed");
            Status::internal(format!("query failed: {e}"))
        })
}

fn workload_proto(w: &store::WorkloadSummary) -> WorkloadSummary {
    let [_, info, low, medium, high, critical] = w.by_severity;
    WorkloadSummary {
        id: w.id.clone(),
        kind: w.kind,
        deviations: w.deviations,
        info,
        low,
        medium,
        high,
        critical,
        runs: w.runs,
        hosts: w.hosts,
        first_unix_nanos: w.first_ns,
        last_unix_nanos: w.last_ns,
    }
}

fn agent_proto(a: &store::AgentSummary) -> AgentSummary {
    AgentSummary {
        agent_id: a.agent_id.clone(),
        host: a.host.clone(),
        version: a.version.clone(),
        first_contact_unix_nanos: a.first_contact_ns,
        last_contact_unix_nanos: a.last_contact_ns,
        last_heartbeat_unix_nanos: a.last_heartbeat_ns,
        silent: a.silent,
        batches: a.batches,
        stored: a.stored,
        duplicates: a.duplicates,
        dropped_total: a.dropped_total,
        spool_deviations: a.spool_deviations,
        kernel_lost_total: a.kernel_lost_total,
        stalled: a.stalled(),
        last_event_unix_nanos: a.last_event_ns,
        event_queue_depth: a.event_queue_depth,
        events_decoded_total: a.events_decoded_total,
    }
}

/// An agent's state in one word: silent, stalled (alive but not decoding), or ok.
fn state(a: &AgentSummary) -> &'static str {
    if a.silent {
        "silent"
    } else if a.stalled {
        "stalled"
    } else {
        "ok"
    }
}

/// A Query client for `url` with the command's credentials.
pub(crate) async fn connect(
    url: &str,
    credentials: &crate::credentials::ClientArgs,
) -> Result<
    QueryClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            crate::credentials::Bearer,
        >,
    >,
    QueryError,
> {
    let endpoint = credentials
        .endpoint(url)?
        .connect_timeout(std::time::Duration::from_secs(3));
    let bearer = credentials.interceptor()?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| QueryError::Unreachable {
            url: url.to_owned(),
            reason: crate::one_line(&e),
        })?;
    Ok(
        QueryClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
    )
}

pub(crate) fn status_error(url: &str, status: Status) -> QueryError {
    match status.code() {
        tonic::Code::Unavailable => QueryError::Unreachable {
            url: url.to_owned(),
            reason: status.message().to_owned(),
        },
        _ => QueryError::Status {
            url: url.to_owned(),
            status,
        },
    }
}

/// Calls `Query/ListWorkloads` on the collector at `url`.
pub async fn list_workloads(
    url: &str,
    filter: ListDeviationsRequest,
    credentials: &crate::credentials::ClientArgs,
) -> Result<Vec<WorkloadSummary>, QueryError> {
    let mut client = connect(url, credentials).await?;
    let response = client
        .list_workloads(ListWorkloadsRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|s| status_error(url, s))?;
    Ok(response.into_inner().workloads)
}

/// Calls `Query/ListAgents` on the collector at `url`.
pub async fn list_agents(
    url: &str,
    request: ListAgentsRequest,
    credentials: &crate::credentials::ClientArgs,
) -> Result<ListAgentsResponse, QueryError> {
    let mut client = connect(url, credentials).await?;
    let response = client
        .list_agents(request)
        .await
        .map_err(|s| status_error(url, s))?;
    Ok(response.into_inner())
}

/// `collector workloads`: workloads with deviations matching the filters.
pub async fn run_workloads(args: &DeviationsArgs) -> Result<(), QueryError> {
    let filter = crate::query::request(&args.filter, args.limit, SystemTime::now())?;
    let workloads = list_workloads(&args.server, filter, &args.client).await?;
    let out = &mut io::stdout().lock();
    finish(if args.json {
        print_lines(out, workloads.iter().map(workload_json))
    } else {
        print_workloads(out, &workloads)
    })
}

/// `collector agents`: agents (last contact, status, silence), or with `--events` their latest
/// events.
pub async fn run_agents(args: &AgentsArgs) -> Result<(), QueryError> {
    let request = ListAgentsRequest {
        limit: if args.events { 1 } else { args.limit },
        silent_only: args.silent,
        events: if args.events { args.limit.max(1) } else { 0 },
    };
    let response = list_agents(&args.server, request, &args.client).await?;
    let out = &mut io::stdout().lock();
    finish(match (args.events, args.json) {
        (true, true) => print_lines(out, response.events.iter().map(event_json)),
        (true, false) => print_events(out, &response.events),
        (false, true) => print_lines(out, response.agents.iter().map(agent_json)),
        (false, false) => print_agents(out, &response.agents, SystemTime::now()),
    })
}

/// `… | head` closes stdout early; that is not an error.
fn finish(printed: io::Result<()>) -> Result<(), QueryError> {
    match printed {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(QueryError::Output),
    }
}

pub fn workload_json(w: &WorkloadSummary) -> Value {
    json!({
        "id": w.id,
        "kind": workload_kind_name(w.kind),
        "deviations": w.deviations,
        "by_severity": {
            "info": w.info, "low": w.low, "medium": w.medium, "high": w.high,
            "critical": w.critical,
        },
        "runs": w.runs,
        "hosts": w.hosts,
        "first": rfc3339_nanos(w.first_unix_nanos),
        "last": rfc3339_nanos(w.last_unix_nanos),
    })
}

pub fn agent_json(a: &AgentSummary) -> Value {
    json!({
        "agent_id": a.agent_id,
        "host": a.host,
        "version": a.version,
        "state": state(a),
        "first_contact": rfc3339_nanos(a.first_contact_unix_nanos),
        "last_contact": rfc3339_nanos(a.last_contact_unix_nanos),
        "last_heartbeat": (a.last_heartbeat_unix_nanos != 0)
            .then(|| rfc3339_nanos(a.last_heartbeat_unix_nanos)),
        "batches": a.batches,
        "stored": a.stored,
        "duplicates": a.duplicates,
        "dropped": a.dropped_total,
        "spool": a.spool_deviations,
        "kernel_lost": a.kernel_lost_total,
        "last_event": (a.last_event_unix_nanos != 0).then(|| rfc3339_nanos(a.last_event_unix_nanos)),
        "event_queue": a.event_queue_depth,
        "events_decoded": a.events_decoded_total,
    })
}

/// Short name of an agent event kind.
pub fn event_kind_name(kind: i32) -> &'static str {
    match AgentEventKind::try_from(kind) {
        Ok(AgentEventKind::FirstContact) => "first-contact",
        Ok(AgentEventKind::Silent) => "silent",
        Ok(AgentEventKind::Back) => "back",
        Ok(AgentEventKind::Dropped) => "dropped",
        Ok(AgentEventKind::Unspecified) | Err(_) => "unspecified",
    }
}

pub fn event_json(e: &AgentEvent) -> Value {
    json!({
        "time": rfc3339_nanos(e.time_unix_nanos),
        "agent_id": e.agent_id,
        "event": event_kind_name(e.kind),
        "count": e.count,
        "detail": e.detail,
    })
}

fn print_lines(out: &mut impl Write, values: impl Iterator<Item = Value>) -> io::Result<()> {
    for value in values {
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Rows of cells, aligned on the widest cell of each column (the last column is not padded).
fn print_rows(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, (width, cell)) in widths.iter().zip(row).enumerate() {
            if i == last {
                writeln!(out, "{cell}")?;
            } else {
                write!(out, "{cell:<width$}  ")?;
            }
        }
    }
    out.flush()
}

/// Seconds precision is enough in a table.
fn short_time(unix_nanos: i64) -> String {
    rfc3339_nanos(unix_nanos - unix_nanos.rem_euclid(1_000_000_000)).replace(".000000000", "")
}

pub fn print_workloads(out: &mut impl Write, workloads: &[WorkloadSummary]) -> io::Result<()> {
    if workloads.is_empty() {
        writeln!(out, "no workloads with deviations")?;
        return out.flush();
    }
    let header = [
        "WORKLOAD",
        "KIND",
        "DEVIATIONS",
        "CRIT",
        "HIGH",
        "MED",
        "LOW",
        "INFO",
        "RUNS",
        "HOSTS",
        "LAST",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for w in workloads {
        rows.push(vec![
            w.id.clone(),
            workload_kind_name(w.kind).to_owned(),
            w.deviations.to_string(),
            w.critical.to_string(),
            w.high.to_string(),
            w.medium.to_string(),
            w.low.to_string(),
            w.info.to_string(),
            w.runs.to_string(),
            w.hosts.to_string(),
            short_time(w.last_unix_nanos),
        ]);
    }
    print_rows(out, &rows)
}

pub fn print_agents(
    out: &mut impl Write,
    agents: &[AgentSummary],
    now: SystemTime,
) -> io::Result<()> {
    if agents.is_empty() {
        writeln!(out, "no agents")?;
        return out.flush();
    }
    let now_ns = crate::convert::unix_nanos(now);
    let header = [
        "AGENT",
        "HOST",
        "VERSION",
        "STATE",
        "LAST CONTACT",
        "AGO",
        "BATCHES",
        "STORED",
        "DROPPED",
        "SPOOL",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for a in agents {
        let ago_s = (now_ns - a.last_contact_unix_nanos).max(0) / 1_000_000_000;
        rows.push(vec![
            a.agent_id.clone(),
            a.host.clone(),
            a.version.clone(),
            match state(a) {
                "ok" => "ok".to_owned(),
                trouble => trouble.to_uppercase(),
            },
            short_time(a.last_contact_unix_nanos),
            humantime::format_duration(std::time::Duration::from_secs(ago_s as u64)).to_string(),
            a.batches.to_string(),
            a.stored.to_string(),
            a.dropped_total.to_string(),
            a.spool_deviations.to_string(),
        ]);
    }
    print_rows(out, &rows)
}

pub fn print_events(out: &mut impl Write, events: &[AgentEvent]) -> io::Result<()> {
    if events.is_empty() {
        writeln!(out, "no agent events")?;
        return out.flush();
    }
    let mut rows = vec![
        ["TIME", "AGENT", "EVENT", "DETAIL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for e in events {
        rows.push(vec![
            short_time(e.time_unix_nanos),
            e.agent_id.clone(),
            event_kind_name(e.kind).to_owned(),
            e.detail.clone(),
        ]);
    }
    print_rows(out, &rows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn agents_table_shows_silence_and_aligns() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let agent = |id: &str, silent, ago: i64| AgentSummary {
            agent_id: id.to_owned(),
            host: "runner".to_owned(),
            silent,
            last_contact_unix_nanos: (1_800_000_000 - ago) * 1_000_000_000,
            ..AgentSummary::default()
        };
        let mut out = Vec::new();
        print_agents(
            &mut out,
            &[agent("a", false, 5), agent("a-much-longer-id", true, 300)],
            now,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[2].contains("SILENT") && lines[2].contains("5m"),
            "{text}"
        );
        assert!(
            lines[1].contains(" ok ") && lines[1].contains("5s"),
            "{text}"
        );
        let state_column: Vec<usize> = lines
            .iter()
            .map(|l| {
                l.find("STATE")
                    .or_else(|| l.find("SILENT"))
                    .or_else(|| l.find(" ok ").map(|i| i + 1))
                    .unwrap()
            })
            .collect();
        assert!(state_column.iter().all(|&c| c == state_column[0]), "{text}");
    }

    #[test]
    fn json_names_kinds_and_states() {
        let e = AgentEvent {
            agent_id: "a".to_owned(),
            kind: AgentEventKind::Silent.into(),
            count: 120,
            ..AgentEvent::default()
        };
        assert_eq!(event_json(&e)["event"], "silent");
        let a = AgentSummary {
            silent: true,
            ..AgentSummary::default()
        };
        assert_eq!(agent_json(&a)["state"], "silent");
        assert_eq!(agent_json(&a)["last_heartbeat"], Value::Null);
    }
}
