//! Prometheus metrics of `collector serve` (`--metrics-listen`, default 127.0.0.1:9465), in the
//! OpenMetrics text format at `/metrics`:
//!
//! | metric | labels | what |
//! |--------|--------|------|
//! | `collector_deviations_ingested_total` | | deviations newly stored |
//! | `collector_batches_total` | | batches stored and acknowledged (resent ones included) |
//! | `collector_batches_resent_total` | | batches acknowledged without storing: already stored |
//! | `collector_duplicates_total` | | deviations not stored because they already were |
//! | `collector_ingest_errors_total` | `reason` (invalid, store, stream) | batches refused as invalid, batches the database could not store, agent streams that broke |
//! | `collector_agents_connected` | | agent streams open |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::store::BatchOutcome;

/// Why an ingest failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestError {
    /// The batch broke a rule (`ingest::validate`).
    Invalid,
    /// The database could not store it.
    Store,
    /// The agent's stream broke (transport or decoding error).
    Stream,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The collector's metrics, updated by the ingest service and encoded by [`serve`].
pub struct Metrics {
    registry: Registry,
    ingested: Counter,
    batches: Counter,
    resent: Counter,
    duplicates: Counter,
    errors: Family<ReasonLabel, Counter>,
    agents: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("collector");
        let m = Metrics {
            registry: Registry::default(),
            ingested: Counter::default(),
            batches: Counter::default(),
            resent: Counter::default(),
            duplicates: Counter::default(),
            errors: Family::default(),
            agents: Gauge::default(),
        };
        registry.register(
            "deviations_ingested",
            "Deviations newly stored",
            m.ingested.clone(),
        );
        registry.register(
            "batches",
            "Batches stored and acknowledged, resent ones included",
            m.batches.clone(),
        );
        registry.register(
            "batches_resent",
            "Batches acknowledged without storing because they already were",
            m.resent.clone(),
        );
        registry.register(
            "duplicates",
            "Deviations not stored because they already were",
            m.duplicates.clone(),
        );
        registry.register(
            "ingest_errors",
            "Ingest failures by reason: invalid batch, store failure, broken stream",
            m.errors.clone(),
        );
        registry.register("agents_connected", "Agent streams open", m.agents.clone());
        // Every reason shows from the start, at 0, so rates and alerts need no special case.
        for reason in [
            IngestError::Invalid,
            IngestError::Store,
            IngestError::Stream,
        ] {
            let _ = m.errors.get_or_create(&label(reason));
        }
        Metrics { registry, ..m }
    }

    /// Counts a stored (and acknowledged) batch.
    pub fn batch(&self, outcome: &BatchOutcome) {
        self.batches.inc();
        if outcome.resent {
            self.resent.inc();
        }
        self.ingested.inc_by(u64::from(outcome.stored));
        self.duplicates.inc_by(u64::from(outcome.duplicates));
    }

    /// Counts a failure.
    pub fn error(&self, reason: IngestError) {
        self.errors.get_or_create(&label(reason)).inc();
    }

    /// Counts an agent stream as open until the returned guard is dropped.
    pub fn agent_connected(self: &Arc<Self>) -> AgentGuard {
        self.agents.inc();
        AgentGuard(Arc::clone(self))
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn label(reason: IngestError) -> ReasonLabel {
    ReasonLabel {
        reason: match reason {
            IngestError::Invalid => "invalid",
            IngestError::Store => "store",
            IngestError::Stream => "stream",
        },
    }
}

/// Decrements the connected-agents gauge when the stream's task ends, however it ends.
pub struct AgentGuard(Arc<Metrics>);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.0.agents.dec();
    }
}

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` on `listener` until `cancel` fires.
///
/// A minimal HTTP/1.1 responder on the tokio listener rather than hyper or axum: the endpoint
/// serves one page to a local scraper, and the hyper and axum in the tree are built (for tonic)
/// without their HTTP/1 server features; enabling them would compile a general HTTP stack for one
/// GET. Each connection gets one answer and is closed (`Connection: close`, which Prometheus
/// handles); request heads over 8 KiB or slower than 5 s are dropped. (The sensor has the same
/// responder; the two crates share no library.)
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, &metrics).await {
                tracing::debug!(error = %e, "metrics: request failed");
            }
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let response = respond(&head, || metrics.render());
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The whole response to the request head `head`.
fn respond(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_rendered() {
        let m = Arc::new(Metrics::new());
        m.batch(&BatchOutcome {
            stored: 3,
            duplicates: 1,
            resent: false,
        });
        m.batch(&BatchOutcome {
            stored: 0,
            duplicates: 4,
            resent: true,
        });
        m.error(IngestError::Invalid);
        let guard = m.agent_connected();
        let _second = m.agent_connected();
        drop(guard);
        let text = m.render();
        for line in [
            "collector_deviations_ingested_total 3",
            "collector_batches_total 2",
            "collector_batches_resent_total 1",
            "collector_duplicates_total 5",
            "collector_ingest_errors_total{reason=\"invalid\"} 1",
            "collector_ingest_errors_total{reason=\"store\"} 0",
            "collector_agents_connected 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn http_answers() {
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\n\r\n", || "a 1\n".into()))
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\na 1\n"));
        let missing = String::from_utf8(respond(b"GET /x HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 "));
        let post =
            String::from_utf8(respond(b"PUT /metrics HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "));
    }
}
