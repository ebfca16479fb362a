//! Baselines merged across agents (`sensor.v1.Baselines`, see `proto/sensor/v1/baseline.proto`).
//!
//! Ephemeral CI runners never see enough runs of a job to finish learning it. Each agent reports
//! what it learnt per workload; the collector keeps, per workload, the union of every report's
//! behaviours and of the runs they were learnt from ([`merge`]); an agent that sees a workload
//! start without a mature baseline of its own fetches the merged one. The merged baseline is
//! mature for the asking agent when it holds at least that agent's `learning_runs` distinct runs
//! (or, for workloads without runs, once any agent reported it mature).
//!
//! Merging is a union, so reports are idempotent: an agent may resend a report, or report the
//! same baseline after every run, without inflating anything. The read-merge-write happens in one
//! store transaction under the workload's row lock, so replicas merging at once lose nothing.
//!
//! With TLS an agent reports only under its certificate's identity, as for deviations; fetching
//! needs an agent certificate too (query clients may not).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proto::v1::baselines_server::Baselines;
use proto::v1::{
    Baseline, BaselineDimension, BaselineReport, BaselineReportAck, FetchBaselineRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::store::{Store, StoredBaseline};

/// Most behaviours one report may carry: every dimension full (see the agent's
/// `MAX_BEHAVIOURS_PER_DIMENSION`, 20,000), with room for dimensions added later.
pub const MAX_REPORT_BEHAVIOURS: usize = 16 * 20_000;
/// Longest behaviour, run id or dimension name accepted.
pub const MAX_ITEM_BYTES: usize = 8 * 1024;
/// Most distinct runs kept per workload (the oldest are dropped past it: maturity needs a few).
pub const MAX_RUNS: usize = 1000;
/// Largest report decoded (a full baseline of long paths).
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// The `Baselines` service.
pub struct BaselinesService {
    store: Arc<Store>,
    access: Arc<Access>,
}

impl BaselinesService {
    pub fn new(store: Arc<Store>, access: Arc<Access>) -> Self {
        BaselinesService { store, access }
    }
}

/// Checks a report's shape; `identity` is the client certificate's agent identity under TLS.
fn check<'r>(identity: Option<&str>, report: &'r BaselineReport) -> Result<&'r Baseline, Status> {
    if report.agent_id.is_empty() {
        return Err(Status::invalid_argument("agent_id is empty"));
    }
    if let Some(identity) = identity
        && report.agent_id != identity
    {
        return Err(Status::permission_denied(format!(
            "report claims agent_id {:?} but the client certificate identifies {identity:?}",
            report.agent_id
        )));
    }
    let baseline = report
        .baseline
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("baseline is missing"))?;
    if baseline.workload_id.is_empty() {
        return Err(Status::invalid_argument("baseline.workload_id is empty"));
    }
    let behaviours: usize = baseline.dimensions.iter().map(|d| d.behaviours.len()).sum();
    if behaviours > MAX_REPORT_BEHAVIOURS || baseline.runs.len() > MAX_RUNS {
        return Err(Status::resource_exhausted(format!(
            "report of {behaviours} behaviours and {} runs; at most {MAX_REPORT_BEHAVIOURS} and \
             {MAX_RUNS}",
            baseline.runs.len()
        )));
    }
    let too_long = baseline
        .dimensions
        .iter()
        .flat_map(|d| std::iter::once(&d.name).chain(&d.behaviours))
        .chain(&baseline.runs)
        .chain([&baseline.workload_id])
        .any(|s| s.len() > MAX_ITEM_BYTES);
    if too_long {
        return Err(Status::invalid_argument(format!(
            "a behaviour, run id, dimension or workload id is longer than {MAX_ITEM_BYTES} bytes"
        )));
    }
    Ok(baseline)
}

/// Merges `report` (from `agent_id`) into the stored merged baseline of its workload: the union
/// of behaviours per dimension and of runs (in first-seen order, the newest [`MAX_RUNS`]), mature
/// once any report was; the version goes up when any of that changed.
pub fn merge(old: Option<StoredBaseline>, agent_id: &str, report: &Baseline) -> StoredBaseline {
    let mut stored = old.unwrap_or_else(|| StoredBaseline {
        baseline: Baseline {
            workload_id: report.workload_id.clone(),
            ..Baseline::default()
        },
        agent_ids: Vec::new(),
    });
    let merged = &mut stored.baseline;
    let mut dimensions: BTreeMap<String, BTreeSet<String>> = merged
        .dimensions
        .drain(..)
        .map(|d| (d.name, d.behaviours.into_iter().collect()))
        .collect();
    let mut changed = false;
    for d in &report.dimensions {
        let set = dimensions.entry(d.name.clone()).or_default();
        for b in &d.behaviours {
            changed |= set.insert(b.clone());
        }
    }
    merged.dimensions = dimensions
        .into_iter()
        .map(|(name, set)| BaselineDimension {
            name,
            behaviours: set.into_iter().collect(),
        })
        .collect();
    for run in &report.runs {
        if !merged.runs.contains(run) {
            merged.runs.push(run.clone());
            changed = true;
        }
    }
    if merged.runs.len() > MAX_RUNS {
        let extra = merged.runs.len() - MAX_RUNS;
        merged.runs.drain(..extra);
    }
    if report.mature && !merged.mature {
        merged.mature = true;
        changed = true;
    }
    if !stored.agent_ids.iter().any(|a| a == agent_id) {
        stored.agent_ids.push(agent_id.to_owned());
        stored.agent_ids.sort();
    }
    merged.agents = u32::try_from(stored.agent_ids.len()).unwrap_or(u32::MAX);
    if changed {
        merged.version += 1;
    }
    stored
}

/// The merged baseline as answered to an agent learning from `learning_runs` runs: a workload
/// with runs (a CI job) is mature by its run count alone, whatever the reporters' own settings
/// (an agent learning from 1 run reports its baseline mature after one); one without runs is
/// mature once any agent finished its learning period.
pub fn answer(stored: StoredBaseline, learning_runs: u32) -> Baseline {
    let mut baseline = stored.baseline;
    if !baseline.runs.is_empty() {
        baseline.mature = baseline.runs.len() >= learning_runs.max(1) as usize;
    }
    baseline
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "{what} failed");
    Status::internal(format!("{what} failed: {e}"))
}

#[tonic::async_trait]
impl Baselines for BaselinesService {
    async fn report(
        &self,
        request: Request<BaselineReport>,
    ) -> Result<Response<BaselineReportAck>, Status> {
        let identity = self.access.ingest_identity(&request)?;
        let report = request.into_inner();
        let baseline = check(identity.as_deref(), &report)?.clone();
        let store = Arc::clone(&self.store);
        let agent_id = report.agent_id;
        let workload = baseline.workload_id.clone();
        let merged = tokio::task::spawn_blocking(move || {
            store.update_baseline(
                &baseline.workload_id,
                &mut |old| merge(old, &agent_id, &baseline),
                now_ns(),
            )
        })
        .await
        .map_err(|e| internal("merging a baseline", e))?
        .map_err(|e| internal("merging a baseline", e))?;
        tracing::debug!(
            %workload,
            version = merged.baseline.version,
            runs = merged.baseline.runs.len(),
            agents = merged.agent_ids.len(),
            "baseline report merged"
        );
        Ok(Response::new(BaselineReportAck {
            version: merged.baseline.version,
            runs: u32::try_from(merged.baseline.runs.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn fetch(
        &self,
        request: Request<FetchBaselineRequest>,
    ) -> Result<Response<Baseline>, Status> {
        self.access.ingest_identity(&request)?;
        let request = request.into_inner();
        if request.workload_id.is_empty() {
            return Err(Status::invalid_argument("workload_id is empty"));
        }
        let store = Arc::clone(&self.store);
        let workload = request.workload_id.clone();
        let stored = tokio::task::spawn_blocking(move || store.baseline(&workload))
            .await
            .map_err(|e| internal("reading a baseline", e))?
            .map_err(|e| internal("reading a baseline", e))?;
        match stored {
            Some(stored) => Ok(Response::new(answer(stored, request.learning_runs))),
            None => Err(Status::not_found(format!(
                "no agent reported a baseline for workload {:?} yet",
                request.workload_id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(runs: &[&str], exes: &[&str], mature: bool) -> Baseline {
        Baseline {
            workload_id: "github:a/b/ci/c".into(),
            runs: runs.iter().map(|r| r.to_string()).collect(),
            mature,
            dimensions: vec![BaselineDimension {
                name: "executable".into(),
                behaviours: exes
                    .iter()
                    .map(|e| format!("{{\"executable\":\"{e}\"}}"))
                    .collect(),
            }],
            version: 0,
            agents: 0,
        }
    }

    #[test]
    fn merging_is_a_union_and_idempotent() {
        let a = merge(None, "runner-1", &report(&["1"], &["/bin/a"], false));
        assert_eq!((a.baseline.version, a.baseline.agents), (1, 1));
        let b = merge(Some(a), "runner-2", &report(&["2"], &["/bin/b"], false));
        assert_eq!(b.baseline.runs, ["1", "2"]);
        assert_eq!(b.baseline.dimensions[0].behaviours.len(), 2);
        assert_eq!((b.baseline.version, b.baseline.agents), (2, 2));
        // The same report again changes nothing.
        let c = merge(
            Some(b.clone()),
            "runner-2",
            &report(&["2"], &["/bin/b"], false),
        );
        assert_eq!(c, b);
        // Mature for an agent learning from 2 runs, not from 3.
        assert!(answer(c.clone(), 2).mature);
        assert!(!answer(c.clone(), 3).mature);
        // An agent learning from 1 run reported it mature: agents learning from more runs
        // still need their count of runs.
        let d = merge(Some(c), "runner-3", &report(&["3"], &[], true));
        assert!(!answer(d.clone(), 4).mature);
        assert!(answer(d, 3).mature);
        // Without runs (a service learning for a period), the reporters' word counts.
        let mut service = report(&[], &["/usr/sbin/nginx"], false);
        let s = merge(None, "host-1", &service);
        assert!(!answer(s.clone(), 5).mature);
        service.mature = true;
        assert!(answer(merge(Some(s), "host-2", &service), 5).mature);
    }

    #[test]
    fn reports_are_checked() {
        let ok = BaselineReport {
            agent_id: "runner-1".into(),
            baseline: Some(report(&["1"], &["/bin/a"], false)),
        };
        assert!(check(None, &ok).is_ok());
        assert_eq!(
            check(Some("runner-2"), &ok).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let mut long = ok.clone();
        long.baseline
            .as_mut()
            .unwrap()
            .runs
            .push("x".repeat(MAX_ITEM_BYTES + 1));
        assert_eq!(
            check(None, &long).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let empty = BaselineReport {
            agent_id: String::new(),
            ..ok
        };
        assert!(check(None, &empty).is_err());
    }
}
