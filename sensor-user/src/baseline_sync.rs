//! Sharing baselines with the collector (`sensor.v1.Baselines`), off the event path.
//!
//! The agent hands this task the baselines that learnt something ([`BaselineSync::report`],
//! every housekeeping tick and at shutdown) and the workloads that started without a mature
//! baseline ([`BaselineSync::fetch`], after each batch of events). The task reports over gRPC,
//! keeping failed reports to retry with the next tick (reports are idempotent at the collector),
//! and sends each merged baseline it fetches back on a channel for the engine to adopt. When the
//! agent drops the handle, the task makes a last attempt to deliver pending reports (bounded by
//! [`FINAL_FLUSH`]), which is what an ephemeral runner's agent, stopped at the end of its job,
//! relies on. A collector without the service (UNIMPLEMENTED) turns sharing off with one log line.
//!
//! Nothing here blocks the event loop; with the collector down, workloads simply learn locally.

use std::collections::HashMap;
use std::time::Duration;

use proto::v1::baselines_client::BaselinesClient;
use proto::v1::{Baseline, BaselineReport, FetchBaselineRequest};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::transport::{ClientTls, TransportError, endpoint};

/// Longest wait for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time spent delivering pending reports once the agent stops.
pub const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Where and as whom to share baselines.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub collector_url: String,
    pub tls: Option<ClientTls>,
    pub agent_id: String,
    /// The agent's `learning_runs`, sent with fetches (the collector answers `mature` by it).
    pub learning_runs: u32,
}

enum Request {
    Report(Vec<Baseline>),
    Fetch(Vec<String>),
}

/// The agent's handle on the sharing task. Dropping it ends the task (after a final flush).
pub struct BaselineSync {
    requests: Option<mpsc::UnboundedSender<Request>>,
}

impl BaselineSync {
    /// Starts the task (`None`: sharing off, requests are dropped). Returns the handle, the
    /// channel of fetched baselines to adopt, and the task to await at shutdown.
    pub fn start(
        config: Option<SyncConfig>,
    ) -> Result<
        (
            BaselineSync,
            mpsc::UnboundedReceiver<Baseline>,
            tokio::task::JoinHandle<()>,
        ),
        TransportError,
    > {
        let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
        let Some(config) = config else {
            let task = tokio::spawn(async move {
                drop(adopt_tx);
            });
            return Ok((BaselineSync { requests: None }, adopt_rx, task));
        };
        // The one endpoint builder of the agent (URL checks, TLS, keepalive), with a call timeout.
        let channel = endpoint(&config.collector_url, config.tls.as_ref())?
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(config, BaselinesClient::new(channel), rx, adopt_tx));
        Ok((BaselineSync { requests: Some(tx) }, adopt_rx, task))
    }

    /// Queues baselines to report (nothing when empty).
    pub fn report(&self, baselines: Vec<Baseline>) {
        if let (false, Some(tx)) = (baselines.is_empty(), &self.requests) {
            let _ = tx.send(Request::Report(baselines));
        }
    }

    /// Asks for the merged baselines of these workloads (nothing when empty).
    pub fn fetch(&self, workloads: Vec<String>) {
        if let (false, Some(tx)) = (workloads.is_empty(), &self.requests) {
            let _ = tx.send(Request::Fetch(workloads));
        }
    }
}

async fn run(
    config: SyncConfig,
    mut client: BaselinesClient<Channel>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    adopt: mpsc::UnboundedSender<Baseline>,
) {
    let mut pending: HashMap<String, Baseline> = HashMap::new();
    let mut enabled = true;
    while let Some(request) = requests.recv().await {
        if !enabled {
            continue;
        }
        match request {
            Request::Report(baselines) => {
                for b in baselines {
                    pending.insert(b.workload_id.clone(), b);
                }
                enabled = deliver(&config, &mut client, &mut pending).await;
            }
            Request::Fetch(workloads) => {
                for workload in workloads {
                    match fetch(&config, &mut client, &workload).await {
                        Ok(Some(b)) => {
                            let _ = adopt.send(b);
                        }
                        Ok(None) => {}
                        Err(()) => {
                            enabled = false;
                            break;
                        }
                    }
                }
            }
        }
    }
    if enabled && !pending.is_empty() {
        let flushed =
            tokio::time::timeout(FINAL_FLUSH, deliver(&config, &mut client, &mut pending)).await;
        if flushed.is_err() || !pending.is_empty() {
            tracing::warn!(
                pending = pending.len(),
                "could not report every learnt baseline to the collector before stopping"
            );
        }
    }
}

/// Whether the collector offers the service at all.
fn unimplemented(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Unimplemented {
        tracing::info!(
            "the collector does not merge baselines (no sensor.v1.Baselines); sharing is off"
        );
        return true;
    }
    false
}

/// Reports every pending baseline, keeping the ones that fail. Returns `false` when the
/// collector does not offer the service.
async fn deliver(
    config: &SyncConfig,
    client: &mut BaselinesClient<Channel>,
    pending: &mut HashMap<String, Baseline>,
) -> bool {
    let workloads: Vec<String> = pending.keys().cloned().collect();
    for workload in workloads {
        let Some(baseline) = pending.get(&workload).cloned() else {
            continue;
        };
        let report = BaselineReport {
            agent_id: config.agent_id.clone(),
            baseline: Some(baseline),
        };
        match client.report(report).await {
            Ok(ack) => {
                let ack = ack.into_inner();
                tracing::debug!(%workload, version = ack.version, runs = ack.runs, "baseline reported");
                pending.remove(&workload);
            }
            Err(status) if unimplemented(&status) => return false,
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                // The collector's baseline_scopes keep this agent out of the workload: the
                // baseline stays local; trying again would only be refused again.
                tracing::info!(%workload, error = %status.message(), "the collector does not share this workload's baseline with this agent");
                pending.remove(&workload);
            }
            Err(status) => {
                tracing::debug!(%workload, error = %status.message(), "baseline report failed; retrying later");
                // The collector is likely down: try the others at the next tick.
                break;
            }
        }
    }
    true
}

/// Times a paged fetch starts again because the baseline changed between its pages.
const FETCH_ATTEMPTS: usize = 3;

/// The merged baseline of `workload`, if the collector has one, fetched page by page (a
/// baseline of any size arrives whole; see `proto::pages`). `Err` when the collector does not
/// offer the service.
async fn fetch(
    config: &SyncConfig,
    client: &mut BaselinesClient<Channel>,
    workload: &str,
) -> Result<Option<Baseline>, ()> {
    for _ in 0..FETCH_ATTEMPTS {
        match fetch_pages(config, client, workload).await {
            Ok(whole) => return Ok(whole),
            // The baseline changed between two pages: start again from the first.
            Err(status) if status.code() == tonic::Code::Aborted => {}
            Err(status) if unimplemented(&status) => return Err(()),
            Err(status) => {
                if status.code() != tonic::Code::NotFound {
                    tracing::debug!(%workload, error = %status.message(), "cannot fetch the merged baseline");
                }
                return Ok(None);
            }
        }
    }
    tracing::debug!(%workload, "the merged baseline kept changing while it was fetched; later");
    Ok(None)
}

/// Every page of `workload`'s merged baseline, put together. A collector older than paging
/// answers the whole baseline at once (no next page).
async fn fetch_pages(
    config: &SyncConfig,
    client: &mut BaselinesClient<Channel>,
    workload: &str,
) -> Result<Option<Baseline>, tonic::Status> {
    let mut assembly = proto::pages::Assembly::default();
    let mut page_token = String::new();
    loop {
        let request = FetchBaselineRequest {
            workload_id: workload.to_owned(),
            agent_id: config.agent_id.clone(),
            learning_runs: config.learning_runs,
            paged: true,
            page_token,
        };
        let page = client.fetch(request).await?.into_inner();
        match assembly.add(page) {
            Ok(Some(next)) => page_token = next,
            Ok(None) => return Ok(assembly.finish()),
            Err(e @ proto::pages::PageError::Stale { .. }) => {
                return Err(tonic::Status::aborted(e.to_string()));
            }
            Err(e) => return Err(tonic::Status::out_of_range(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proto::v1::BaselineReportAck;
    use proto::v1::baselines_server::{Baselines, BaselinesServer};
    use tonic::{Response, Status};

    use super::*;

    /// A collector whose scopes refuse one workload; it records every report it is sent.
    #[derive(Clone, Default)]
    struct Scoped {
        reported: Arc<Mutex<Vec<String>>>,
    }

    const REFUSED: &str = "github:globex/api/ci/test";

    #[tonic::async_trait]
    impl Baselines for Scoped {
        async fn report(
            &self,
            request: tonic::Request<BaselineReport>,
        ) -> Result<Response<BaselineReportAck>, Status> {
            let workload = request
                .into_inner()
                .baseline
                .unwrap_or_default()
                .workload_id;
            self.reported.lock().unwrap().push(workload.clone());
            if workload == REFUSED {
                return Err(Status::permission_denied("no baseline_scopes entry"));
            }
            Ok(Response::new(BaselineReportAck::default()))
        }

        async fn fetch(
            &self,
            _: tonic::Request<FetchBaselineRequest>,
        ) -> Result<Response<Baseline>, Status> {
            Err(Status::permission_denied("no baseline_scopes entry"))
        }
    }

    /// A workload the collector's scopes keep from this agent is dropped from the pending
    /// reports (kept local), and the reports after it still go out in the same round.
    #[tokio::test]
    async fn a_workload_outside_the_collectors_scopes_is_not_retried_nor_blocks_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Scoped::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BaselinesServer::new(collector.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let config = SyncConfig {
            collector_url: format!("http://{addr}"),
            tls: None,
            agent_id: "runner-acme-1".to_owned(),
            learning_runs: 5,
        };
        let channel = endpoint(&config.collector_url, None)
            .unwrap()
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let mut client = BaselinesClient::new(channel);
        let workloads = [
            REFUSED,
            "github:acme/app/ci/build",
            "github:acme/lib/ci/test",
        ];
        let mut pending: HashMap<String, Baseline> = workloads
            .iter()
            .map(|w| {
                let b = Baseline {
                    workload_id: (*w).to_owned(),
                    ..Baseline::default()
                };
                ((*w).to_owned(), b)
            })
            .collect();

        assert!(
            deliver(&config, &mut client, &mut pending).await,
            "sharing stays on"
        );
        assert!(
            pending.is_empty(),
            "nothing left to retry: {:?}",
            pending.keys()
        );
        let mut reported = collector.reported.lock().unwrap().clone();
        reported.sort();
        let mut expected = workloads.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(
            reported, expected,
            "each workload reported once, in one round"
        );

        assert_eq!(
            fetch(&config, &mut client, REFUSED).await,
            Ok(None),
            "a refused fetch is no baseline, and sharing stays on"
        );
        server.abort();
    }
}
