//! `collector report`: the job summary of one CI run, for the end of the job. What a CI user
//! wants to know there: is the sensor still learning this job or judging it, did this run do
//! anything new (its incidents, each with its story), and which destinations and tools were new.
//! Markdown ([`markdown`]) is plain and link-free, to append to `$GITHUB_STEP_SUMMARY`; JSON is
//! the same data for a script.
//!
//! Everything comes from the collector over gRPC: the run's deviations from the Query service
//! (among the newest 10,000 of its workload, the Query service's cap),
//! the learning state from the merged baseline the agents shared (`sensor.v1.Baselines/Fetch`).
//! A collector that holds no baseline for the workload (agents that do not share baselines), or
//! refuses to show it (a TLS query client may not fetch baselines), gives an unknown learning
//! state, said as such.

pub mod markdown;

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use proto::v1::{
    Baseline, Deviation, DeviationKind, FetchBaselineRequest, ListDeviationsRequest, Severity,
    StoredDeviation, baselines_client::BaselinesClient, novelty::What,
};
use serde_json::{Value, json};

use crate::cli::{ReportArgs, ReportFormat};
use crate::convert::{kind_name, severity_name};
use crate::incidents::{self, Incident};
use crate::query::QueryError;

/// How long to wait for the collector to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the workload's baseline is complete enough to judge runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learning {
    /// The merged baseline holds enough runs: runs are judged against it.
    Judging { runs: usize, agents: u32 },
    /// Fewer runs than the agents learn from: deviations are not reported yet.
    Learning {
        runs: usize,
        learning_runs: u32,
        agents: u32,
    },
    /// No agent shared a baseline for the workload with this collector.
    NotShared,
    /// The collector did not answer about the baseline; why.
    Unknown(String),
}

/// The job summary of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub workload_id: String,
    pub run_id: String,
    pub learning: Learning,
    /// Whether this run is one of the runs the baseline was learnt from.
    pub run_learnt: bool,
    /// The run's incidents, latest first.
    pub incidents: Vec<Incident>,
}

impl Report {
    /// Builds the report of `run_id` from `deviations` of its workload (any run; others are left
    /// out) and the learning state.
    pub fn new(
        workload_id: &str,
        run_id: &str,
        deviations: Vec<StoredDeviation>,
        learning: Learning,
        run_learnt: bool,
    ) -> Report {
        let of_run = deviations
            .into_iter()
            .filter(|s| {
                s.deviation.as_ref().is_some_and(|d| {
                    d.workload
                        .as_ref()
                        .is_some_and(|w| w.id == workload_id && w.run_id == run_id)
                })
            })
            .collect();
        Report {
            workload_id: workload_id.to_owned(),
            run_id: run_id.to_owned(),
            learning,
            run_learnt,
            incidents: incidents::group(of_run),
        }
    }

    /// Every deviation of the run, oldest first.
    pub fn deviations(&self) -> Vec<&Deviation> {
        let mut all: Vec<&Deviation> = self.incidents.iter().flat_map(|i| i.deviations()).collect();
        all.sort_by(|a, b| (a.time_unix_nanos, &a.id).cmp(&(b.time_unix_nanos, &b.id)));
        all
    }

    /// The highest severity of the run (unspecified when it has no deviation).
    pub fn max_severity(&self) -> Severity {
        self.incidents
            .iter()
            .map(|i| i.max_severity)
            .max()
            .unwrap_or(Severity::Unspecified)
    }

    /// Deviations per severity, highest first, only the severities present.
    pub fn by_severity(&self) -> Vec<(Severity, usize)> {
        let all = self.deviations();
        [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Info,
        ]
        .into_iter()
        .map(|s| {
            (
                s,
                all.iter().filter(|d| incidents::severity(d) == s).count(),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect()
    }

    /// The new destinations: network destinations, then DNS names, in time order.
    pub fn destinations(&self) -> Vec<&Deviation> {
        let all = self.deviations();
        let of = |kind: DeviationKind| all.iter().copied().filter(move |d| d.kind == kind as i32);
        of(DeviationKind::NewNetworkDestination)
            .chain(of(DeviationKind::NewDnsName))
            .collect()
    }

    /// The new tools: new executables, then known ones started by a new parent, in time order.
    pub fn tools(&self) -> Vec<&Deviation> {
        let all = self.deviations();
        let of = |kind: DeviationKind| all.iter().copied().filter(move |d| d.kind == kind as i32);
        of(DeviationKind::NewExecutable)
            .chain(of(DeviationKind::NewExecEdge))
            .collect()
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let learning = match &self.learning {
            Learning::Judging { runs, agents } => {
                json!({ "state": "judging", "runs": runs, "agents": agents })
            }
            Learning::Learning {
                runs,
                learning_runs,
                agents,
            } => json!({
                "state": "learning", "runs": runs, "learning_runs": learning_runs,
                "agents": agents,
            }),
            Learning::NotShared => json!({ "state": "not-shared" }),
            Learning::Unknown(reason) => json!({ "state": "unknown", "reason": reason }),
        };
        let mut by_severity = serde_json::Map::new();
        for (severity, n) in self.by_severity() {
            by_severity.insert(severity_name(severity.into()).to_owned(), n.into());
        }
        json!({
            "workload": self.workload_id,
            "run_id": self.run_id,
            "learning": learning,
            "run_learnt": self.run_learnt,
            "deviations": self.deviations().len(),
            "max_severity": severity_name(self.max_severity().into()),
            "by_severity": by_severity,
            "incidents": self.incidents.iter().map(incidents::render::incident_json)
                .collect::<Vec<_>>(),
            "new_destinations": self.destinations().into_iter().map(destination_json)
                .collect::<Vec<_>>(),
            "new_tools": self.tools().into_iter().map(tool_json).collect::<Vec<_>>(),
        })
    }
}

fn executable(d: &Deviation) -> &str {
    d.process.as_ref().map_or("", |p| p.executable.as_str())
}

fn destination_json(d: &Deviation) -> Value {
    let base = json!({
        "deviation_id": d.id,
        "severity": severity_name(d.severity),
        "executable": executable(d),
    });
    let what = match d.novelty.as_ref().and_then(|n| n.what.as_ref()) {
        Some(What::Destination(dest)) => json!({
            "kind": "network", "address": dest.address, "port": dest.port,
            "protocol": dest.protocol, "dns_name": dest.dns_name,
        }),
        Some(What::Dns(query)) => {
            json!({ "kind": "dns", "name": query.name, "type": query.r#type })
        }
        _ => json!({ "kind": kind_name(d.kind) }),
    };
    merge(base, what)
}

fn tool_json(d: &Deviation) -> Value {
    let base = json!({
        "deviation_id": d.id,
        "severity": severity_name(d.severity),
        "signals": d.signals,
    });
    let what = match d.novelty.as_ref().and_then(|n| n.what.as_ref()) {
        Some(What::Executable(path)) => json!({ "kind": "new-executable", "executable": path }),
        Some(What::ExecEdge(edge)) => json!({
            "kind": "new-exec-edge", "executable": edge.child_executable,
            "parent_executable": edge.parent_executable,
        }),
        _ => json!({ "kind": kind_name(d.kind), "executable": executable(d) }),
    };
    merge(base, what)
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// The learning state a fetched merged baseline shows (see `baselines::answer`, which set
/// `mature` for `learning_runs`), and whether `run_id` is one of its runs.
pub fn learning_of(baseline: &Baseline, learning_runs: u32, run_id: &str) -> (Learning, bool) {
    let runs = baseline.runs.len();
    let learning = if baseline.mature {
        Learning::Judging {
            runs,
            agents: baseline.agents,
        }
    } else {
        Learning::Learning {
            runs,
            learning_runs,
            agents: baseline.agents,
        }
    };
    (learning, baseline.runs.iter().any(|r| r == run_id))
}

/// Asks the collector for the merged baseline of `args.workload`.
async fn fetch_learning(args: &ReportArgs) -> Result<(Learning, bool), QueryError> {
    let endpoint = args
        .client
        .endpoint(&args.server)?
        .connect_timeout(CONNECT_TIMEOUT);
    let bearer = args.client.interceptor()?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| QueryError::Unreachable {
            url: args.server.clone(),
            reason: crate::one_line(&e),
        })?;
    let mut client = BaselinesClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(crate::baselines::MAX_DECODE_BYTES);
    let answer = client
        .fetch(FetchBaselineRequest {
            workload_id: args.workload.clone(),
            agent_id: String::new(),
            learning_runs: args.learning_runs,
            ..FetchBaselineRequest::default()
        })
        .await;
    Ok(match answer {
        Ok(baseline) => learning_of(&baseline.into_inner(), args.learning_runs, &args.run),
        Err(status) if status.code() == tonic::Code::NotFound => (Learning::NotShared, false),
        Err(status) => (
            Learning::Unknown(crate::credentials::describe(&status)),
            false,
        ),
    })
}

/// `collector report`: gathers the run's report and prints it.
pub async fn run(args: &ReportArgs) -> Result<(), QueryError> {
    let request = ListDeviationsRequest {
        workload: args.workload.clone(),
        limit: incidents::FETCHED,
        ..ListDeviationsRequest::default()
    };
    let deviations = crate::query::list_with(&args.server, request, &args.client).await?;
    let (learning, run_learnt) = fetch_learning(args).await?;
    let report = Report::new(&args.workload, &args.run, deviations, learning, run_learnt);
    let text = match args.format {
        ReportFormat::Markdown => markdown::render(&report, SystemTime::now()),
        ReportFormat::Json => format!("{}\n", report.json()),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(QueryError::Output),
    }
}
