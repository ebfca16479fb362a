//! Baselines merged across agents (`sensor.v1.Baselines`, see `proto/sensor/v1/baseline.proto`).
//!
//! Ephemeral CI runners never see enough runs of a job to finish learning it. Each agent reports
//! what it learnt per workload; the collector keeps each agent's contribution on its own (the
//! union of that agent's reports, [`merge`]) and the merged baseline, the union of every
//! contribution ([`recompute`]); an agent that sees a workload start without a mature baseline of
//! its own fetches the merged one. The merged baseline is mature for the asking agent when it
//! holds at least that agent's `learning_runs` distinct runs (or, for workloads without runs,
//! once any agent reported it mature).
//!
//! Poisoning: one agent (a stolen runner certificate) could report made-up runs and behaviours.
//! So a merged baseline is served only once at least `baseline_quorum` distinct agents (default
//! [`DEFAULT_QUORUM`]) contributed to it (below, fetches get `NOT_FOUND` and runners learn on
//! their own), and what is served holds only the behaviours at least that many agents reported
//! ([`supported`]): a behaviour one agent alone claims is never taught to another runner (the
//! price: a rare behaviour seen by fewer runners is reported again where it recurs). An operator
//! can list contributions, drop one agent's (the merged baseline is
//! recomputed without it) and freeze a merged baseline (reports are still kept per agent but no
//! longer change it; a frozen baseline is served whatever the quorum): `collector baselines`.
//! Not done: fetches are not restricted to workloads the asking agent runs (a runner fetches at
//! a job's start, before the collector has seen anything of it from that runner), and baselines
//! are fetched whole (up to the 64 MiB the service decodes), not in pages.
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
use crate::scopes::BaselineScopes;
use crate::store::{BaselineUpdate, Store, StoredBaseline};

/// Most behaviours one report may carry: every dimension full (see the agent's
/// `MAX_BEHAVIOURS_PER_DIMENSION`, 20,000), with room for dimensions added later.
pub const MAX_REPORT_BEHAVIOURS: usize = 16 * 20_000;
/// Longest behaviour, run id or dimension name accepted.
pub const MAX_ITEM_BYTES: usize = 8 * 1024;
/// Most distinct runs kept per workload (the oldest are dropped past it: maturity needs a few).
pub const MAX_RUNS: usize = 1000;
/// Largest report decoded (a full baseline of long paths).
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;
/// Distinct agents that must have contributed before a merged baseline is served.
pub const DEFAULT_QUORUM: u32 = 3;

/// The `Baselines` service.
pub struct BaselinesService {
    store: Arc<Store>,
    access: Arc<Access>,
    quorum: u32,
    scopes: Arc<BaselineScopes>,
}

impl BaselinesService {
    pub fn new(store: Arc<Store>, access: Arc<Access>) -> Self {
        BaselinesService {
            store,
            access,
            quorum: DEFAULT_QUORUM,
            scopes: Arc::default(),
        }
    }

    /// Lets each agent read and contribute to only the workloads its scopes name.
    pub fn with_scopes(mut self, scopes: Arc<BaselineScopes>) -> Self {
        self.scopes = scopes;
        self
    }

    /// Refuses `agent` a workload outside its `baseline_scopes`.
    fn check_scope(&self, agent: Option<&str>, workload: &str) -> Result<(), Status> {
        if self.scopes.allows(agent, workload) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "agent {} may not read or contribute to the shared baseline of workload \
             {workload:?}: no baseline_scopes entry of the collector names both",
            agent.map_or_else(|| "(no certificate)".to_owned(), |a| format!("{a:?}"))
        )))
    }

    /// Serves a merged baseline only once `quorum` distinct agents contributed (0 or 1: any).
    pub fn with_quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }
}

/// The merged baseline of every contribution (sorted by agent): their union, as [`merge`] makes
/// it. Its version is the stored one's, plus one when runs, behaviours or maturity changed.
pub fn recompute(
    contributions: Vec<StoredBaseline>,
    old: Option<StoredBaseline>,
) -> StoredBaseline {
    let workload_id = old
        .as_ref()
        .map(|o| o.baseline.workload_id.clone())
        .or_else(|| {
            contributions
                .first()
                .map(|c| c.baseline.workload_id.clone())
        })
        .unwrap_or_default();
    let mut merged = StoredBaseline {
        baseline: Baseline {
            workload_id,
            ..Baseline::default()
        },
        ..StoredBaseline::default()
    };
    for c in &contributions {
        if let Some(agent) = c.agent_ids.first() {
            merged = merge(Some(merged), agent, &c.baseline);
        }
    }
    let old_version = old.as_ref().map_or(0, |o| o.baseline.version);
    let same = old.as_ref().is_some_and(|o| {
        o.baseline.runs == merged.baseline.runs
            && o.baseline.dimensions == merged.baseline.dimensions
            && o.baseline.mature == merged.baseline.mature
    });
    merged.baseline.version = if same { old_version } else { old_version + 1 };
    merged.baseline.agents = u32::try_from(merged.agent_ids.len()).unwrap_or(u32::MAX);
    merged
}

/// Merges `report` from `agent_id` into its contribution and recomputes the merged baseline
/// (unless frozen). Returns the merged baseline.
pub fn contribute(
    store: &Store,
    agent_id: &str,
    report: &Baseline,
    now_ns: i64,
) -> Result<StoredBaseline, crate::store::StoreError> {
    store.update_baseline(
        &report.workload_id,
        BaselineUpdate {
            contribution: Some((agent_id, Some(&mut |mine| merge(mine, agent_id, report)))),
            frozen: None,
            merge: &mut |all, old| match old {
                Some(old) if old.frozen => old,
                old => recompute(all, old),
            },
        },
        now_ns,
    )
}

/// Deletes `agent_id`'s contribution to `workload_id` and recomputes the merged baseline without
/// it (frozen or not: dropping a liar's contribution is what an operator freezes to prepare).
pub fn drop_agent(
    store: &Store,
    workload_id: &str,
    agent_id: &str,
) -> Result<StoredBaseline, crate::store::StoreError> {
    store.update_baseline(
        workload_id,
        BaselineUpdate {
            contribution: Some((agent_id, None)),
            frozen: None,
            merge: &mut recompute,
        },
        now_ns(),
    )
}

/// Freezes (or thaws) the merged baseline of `workload_id`; thawing recomputes it from the
/// contributions.
pub fn freeze(
    store: &Store,
    workload_id: &str,
    frozen: bool,
) -> Result<StoredBaseline, crate::store::StoreError> {
    store.update_baseline(
        workload_id,
        BaselineUpdate {
            contribution: None,
            frozen: Some(frozen),
            merge: &mut |all, old| match old {
                Some(old) if frozen => old,
                old => recompute(all, old),
            },
        },
        now_ns(),
    )
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
        frozen: false,
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

/// The baseline served from `contributions` (one per agent) at `quorum`: `None` below it; else
/// the runs of every contribution (a CI run happens on one runner), the behaviours at least
/// `quorum` agents reported, mature (for workloads without runs) when that many agents said so.
/// Version and agent count are the merged baseline's.
pub fn supported(
    merged: &StoredBaseline,
    contributions: &[StoredBaseline],
    quorum: u32,
) -> Option<StoredBaseline> {
    let quorum = quorum.max(1) as usize;
    if contributions.len() < quorum {
        return None;
    }
    let mut support: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for c in contributions {
        for d in &c.baseline.dimensions {
            let counts = support.entry(d.name.as_str()).or_default();
            let distinct: BTreeSet<&str> = d.behaviours.iter().map(String::as_str).collect();
            for b in distinct {
                *counts.entry(b).or_default() += 1;
            }
        }
    }
    let mut served = merged.clone();
    served.baseline.dimensions = support
        .into_iter()
        .map(|(name, counts)| BaselineDimension {
            name: name.to_owned(),
            behaviours: counts
                .into_iter()
                .filter(|&(_, n)| n >= quorum)
                .map(|(b, _)| b.to_owned())
                .collect(),
        })
        .filter(|d| !d.behaviours.is_empty())
        .collect();
    served.baseline.mature = contributions.iter().filter(|c| c.baseline.mature).count() >= quorum;
    Some(served)
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
        self.check_scope(identity.as_deref(), &baseline.workload_id)?;
        let store = Arc::clone(&self.store);
        let agent_id = report.agent_id;
        let workload = baseline.workload_id.clone();
        let merged =
            tokio::task::spawn_blocking(move || contribute(&store, &agent_id, &baseline, now_ns()))
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
        let identity = self.access.ingest_identity(&request)?;
        let request = request.into_inner();
        if request.workload_id.is_empty() {
            return Err(Status::invalid_argument("workload_id is empty"));
        }
        self.check_scope(identity.as_deref(), &request.workload_id)?;
        let store = Arc::clone(&self.store);
        let workload = request.workload_id.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let merged = store.baseline(&workload)?;
            match merged {
                Some(m) if !m.frozen => Ok(Some((store.contributions(&workload)?, m))),
                Some(m) => Ok(Some((Vec::new(), m))),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| internal("reading a baseline", e))?
        .map_err(|e: crate::store::StoreError| internal("reading a baseline", e))?;
        let Some((contributions, merged)) = stored else {
            return Err(Status::not_found(format!(
                "no agent reported a baseline for workload {:?} yet",
                request.workload_id
            )));
        };
        // A frozen baseline is the operator's: served as frozen.
        let served = if merged.frozen {
            Some(merged)
        } else {
            supported(&merged, &contributions, self.quorum)
        };
        match served {
            Some(served) => {
                let whole = answer(served, request.learning_runs);
                if !request.paged {
                    // An agent older than paging: the whole baseline, as before.
                    return Ok(Response::new(whole));
                }
                proto::pages::page(&whole, &request.page_token)
                    .map(Response::new)
                    .map_err(|e| match e {
                        proto::pages::PageError::Stale { .. } => Status::aborted(e.to_string()),
                        _ => Status::invalid_argument(e.to_string()),
                    })
            }
            None => Err(Status::not_found(format!(
                "the baseline of workload {:?} has contributions from {} agent(s), fewer than \
                 the {} required (baseline_quorum)",
                request.workload_id,
                contributions.len(),
                self.quorum
            ))),
        }
    }
}

/// `collector baselines`: lists, shows, drops an agent's contribution, freezes; prints what it
/// did.
pub fn run_cli(args: &crate::cli::BaselinesArgs) -> anyhow::Result<()> {
    use crate::cli::BaselinesCommand;
    let store = Store::connect(&args.db)?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        BaselinesCommand::List => {
            use std::io::Write as _;
            writeln!(out, "WORKLOAD\tAGENTS\tRUNS\tBEHAVIOURS\tVERSION\tFROZEN")?;
            for b in store.baselines()? {
                writeln!(out, "{}", summary_line(&b))?;
            }
        }
        BaselinesCommand::Show { workload } => {
            use std::io::Write as _;
            let merged = store
                .baseline(workload)?
                .ok_or_else(|| anyhow::anyhow!("no baseline for workload {workload:?}"))?;
            writeln!(out, "merged: {}", summary_line(&merged))?;
            for c in store.contributions(workload)? {
                writeln!(
                    out,
                    "agent {}: {} runs, {} behaviours, mature {}",
                    c.agent_ids.join(","),
                    c.baseline.runs.len(),
                    behaviours(&c.baseline),
                    c.baseline.mature
                )?;
            }
        }
        BaselinesCommand::DropAgent { workload, agent } => {
            use std::io::Write as _;
            let known = store
                .contributions(workload)?
                .iter()
                .any(|c| c.agent_ids.iter().any(|a| a == agent));
            anyhow::ensure!(
                known,
                "agent {agent:?} has no contribution to workload {workload:?}"
            );
            let merged = drop_agent(&store, workload, agent)?;
            writeln!(out, "dropped {agent}; merged: {}", summary_line(&merged))?;
        }
        BaselinesCommand::Freeze { workload, thaw } => {
            use std::io::Write as _;
            anyhow::ensure!(
                store.baseline(workload)?.is_some(),
                "no baseline for workload {workload:?}"
            );
            let merged = freeze(&store, workload, !thaw)?;
            writeln!(out, "{}", summary_line(&merged))?;
        }
    }
    Ok(())
}

fn behaviours(b: &Baseline) -> usize {
    b.dimensions.iter().map(|d| d.behaviours.len()).sum()
}

/// One merged baseline as a tab-separated line of `collector baselines list`.
fn summary_line(b: &StoredBaseline) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        b.baseline.workload_id,
        b.agent_ids.join(","),
        b.baseline.runs.len(),
        behaviours(&b.baseline),
        b.baseline.version,
        if b.frozen { "frozen" } else { "-" }
    )
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
            next_page_token: String::new(),
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
