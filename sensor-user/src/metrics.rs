//! Prometheus metrics of the agent (`sensor run --metrics-listen`, default 127.0.0.1:9464), in
//! the OpenMetrics text format at `/metrics`:
//!
//! | metric | labels | what |
//! |--------|--------|------|
//! | `sensor_events_total` | `kind` (exec, fork, exit, open, file_op, connect, bind, listen, accept, dns, privilege) | kernel events decoded |
//! | `sensor_undecodable_records_total` | | kernel records that did not decode |
//! | `sensor_drains_behind_total` | | reads of the ring that stopped at their batch bound with records still waiting (the agent is behind the kernel) |
//! | `sensor_kernel_losses_total` | `reason` (lost_*, read_error) | the kernel's loss counters: records lost (ring buffer full), reads that failed |
//! | `sensor_suppressed_repeats_total` | `reason` (suppressed_open, suppressed_connect) | repeats the kernel filtered on purpose (not losses) |
//! | `sensor_deviations_total` | `kind`, `severity` | deviations found |
//! | `sensor_deviations_acknowledged_total` | | deviations the collector stored |
//! | `sensor_deviations_dropped_total` | | deviations lost (spool full, refused as invalid) |
//! | `sensor_workloads` | `state` (learning, detecting) | workloads known |
//! | `sensor_spool_depth` | | deviations spooled, not yet acknowledged |
//! | `sensor_collector_connected` | | 1 while a stream to the collector is open |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::baseline::{LearningStatus, WorkloadSummary};
use crate::event::EventKind;
use crate::status::CounterKind;
use crate::transport::TransportStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviationLabels {
    kind: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Decoded events by kind over one read of the ring, added to [`Metrics`] at its end: one
/// labelled-counter lookup per kind and read instead of one per event. Counted by the kind's
/// index (an add per event), named only when added.
#[derive(Debug, Default)]
pub struct EventCounts([u64; KIND_NAMES.len()]);

impl EventCounts {
    pub fn count(&mut self, kind: &EventKind) {
        self.0[kind_index(kind)] += 1;
    }
}

/// The agent's metrics. Updated by the agent loop; encoded by [`serve`].
pub struct Metrics {
    registry: Registry,
    events: Family<KindLabel, Counter>,
    undecodable: Counter,
    behind: Counter,
    kernel: Family<ReasonLabel, Counter>,
    suppressed: Family<ReasonLabel, Counter>,
    deviations: Family<DeviationLabels, Counter>,
    acknowledged: Counter,
    dropped: Counter,
    workloads: Family<StateLabel, Gauge>,
    spool_depth: Gauge,
    connected: Gauge,
    /// Last value seen of each cumulative source (kernel counters, transport totals), so that
    /// counters advance by the difference.
    seen: Mutex<HashMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sensor");
        let m = Metrics {
            events: Family::default(),
            undecodable: Counter::default(),
            behind: Counter::default(),
            kernel: Family::default(),
            suppressed: Family::default(),
            deviations: Family::default(),
            acknowledged: Counter::default(),
            dropped: Counter::default(),
            workloads: Family::default(),
            spool_depth: Gauge::default(),
            connected: Gauge::default(),
            seen: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register("events", "Kernel events decoded, by kind", m.events.clone());
        registry.register(
            "undecodable_records",
            "Kernel records that did not decode",
            m.undecodable.clone(),
        );
        registry.register(
            "drains_behind",
            "Reads of the ring that stopped at their batch bound with records still waiting \
             (the agent is behind the kernel; it reads the rest after its other work)",
            m.behind.clone(),
        );
        registry.register(
            "kernel_losses",
            "Kernel records not delivered whole, by reason: lost_* (ring buffer full), \
             read_error (a read failed, record sent incomplete)",
            m.kernel.clone(),
        );
        registry.register(
            "suppressed_repeats",
            "Repeats the kernel filtered on purpose (the same open or connect within its window), \
             by reason; not losses",
            m.suppressed.clone(),
        );
        registry.register(
            "deviations",
            "Deviations found, by kind and severity",
            m.deviations.clone(),
        );
        registry.register(
            "deviations_acknowledged",
            "Deviations the collector acknowledged",
            m.acknowledged.clone(),
        );
        registry.register(
            "deviations_dropped",
            "Deviations lost: spool full or refused as invalid",
            m.dropped.clone(),
        );
        registry.register(
            "workloads",
            "Workloads known, by learning state",
            m.workloads.clone(),
        );
        registry.register(
            "spool_depth",
            "Deviations spooled and not yet acknowledged by the collector",
            m.spool_depth.clone(),
        );
        registry.register(
            "collector_connected",
            "1 while a stream to the collector is open",
            m.connected.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one decoded event.
    pub fn event(&self, kind: &EventKind) {
        self.events
            .get_or_create(&KindLabel {
                kind: kind_name(kind),
            })
            .inc();
    }

    /// Adds the events of one read of the ring, counted by kind.
    pub fn events(&self, counts: &EventCounts) {
        for (&kind, &n) in KIND_NAMES.iter().zip(&counts.0) {
            if n > 0 {
                self.events.get_or_create(&KindLabel { kind }).inc_by(n);
            }
        }
    }

    /// Counts one record that did not decode.
    pub fn undecodable(&self) {
        self.undecodable.inc();
    }

    /// Counts one read of the ring that left records waiting.
    pub fn drain_behind(&self) {
        self.behind.inc();
    }

    /// Counts one deviation.
    pub fn deviation(&self, deviation: &proto::v1::Deviation) {
        let labels = DeviationLabels {
            kind: proto::v1::DeviationKind::try_from(deviation.kind).map_or_else(
                |_| deviation.kind.to_string(),
                |k| short_name(k.as_str_name(), "DEVIATION_KIND_"),
            ),
            severity: proto::v1::Severity::try_from(deviation.severity).map_or_else(
                |_| deviation.severity.to_string(),
                |s| short_name(s.as_str_name(), "SEVERITY_"),
            ),
        };
        self.deviations.get_or_create(&labels).inc();
    }

    /// Brings the kernel counters (`Sensor::counters`, cumulative) up to date.
    pub fn kernel_counters(&self, counters: &[(&'static str, u64)]) {
        for &(reason, total) in counters {
            let delta = self.advance(reason, total);
            let family = match CounterKind::of(reason) {
                CounterKind::Loss => &self.kernel,
                CounterKind::Suppressed => &self.suppressed,
            };
            let counter = family.get_or_create(&ReasonLabel { reason });
            counter.inc_by(delta);
        }
    }

    /// Brings the delivery figures up to date.
    pub fn transport(&self, stats: TransportStats) {
        self.acknowledged
            .inc_by(self.advance("transport_acknowledged", stats.acknowledged));
        self.dropped
            .inc_by(self.advance("transport_dropped", stats.dropped));
        self.spool_depth
            .set(i64::try_from(stats.unacknowledged).unwrap_or(i64::MAX));
        self.connected.set(i64::from(stats.connected));
    }

    /// Sets the workload gauges.
    pub fn workloads(&self, summary: &[WorkloadSummary]) {
        let detecting = summary
            .iter()
            .filter(|w| matches!(w.status, LearningStatus::Detecting))
            .count();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.workloads
            .get_or_create(&StateLabel { state: "detecting" })
            .set(count(detecting));
        self.workloads
            .get_or_create(&StateLabel { state: "learning" })
            .set(count(summary.len() - detecting));
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// How much the cumulative `source` grew since last seen.
    fn advance(&self, source: &'static str, total: u64) -> u64 {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.insert(source, total).unwrap_or(0);
        total.saturating_sub(last)
    }
}

/// The event's kind, named as its variant (and as the kernel's `lost_*` counters).
pub fn kind_name(kind: &EventKind) -> &'static str {
    KIND_NAMES[kind_index(kind)]
}

/// The `kind` label of each event kind, by [`kind_index`].
const KIND_NAMES: [&str; 12] = [
    "exec",
    "fork",
    "exit",
    "open",
    "file_op",
    "privilege",
    "connect",
    "bind",
    "listen",
    "accept",
    "dns",
    "io_uring",
];

/// Where `kind` is in [`KIND_NAMES`].
fn kind_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::Exec { .. } => 0,
        EventKind::Fork { .. } => 1,
        EventKind::Exit { .. } => 2,
        EventKind::Open { .. } => 3,
        EventKind::FileOp(_) => 4,
        EventKind::Privilege { .. } => 5,
        EventKind::Connect { .. } => 6,
        EventKind::Bind { .. } => 7,
        EventKind::Listen { .. } => 8,
        EventKind::Accept { .. } => 9,
        EventKind::Dns { .. } => 10,
        EventKind::IoUring(_) => 11,
    }
}

/// A protobuf enum value's name without its prefix, in lower case with `-`:
/// `DEVIATION_KIND_NEW_EXEC_EDGE` → `new-exec-edge`, as the collector and the README name it.
fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
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
/// without their HTTP/1 server features; enabling them would compile a general HTTP stack, on
/// every host, for one GET. Each connection gets one answer and is closed (`Connection: close`,
/// which Prometheus handles); request heads over 8 KiB or slower than 5 s are dropped.
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

    fn deviation(
        kind: proto::v1::DeviationKind,
        severity: proto::v1::Severity,
    ) -> proto::v1::Deviation {
        proto::v1::Deviation {
            kind: kind as i32,
            severity: severity as i32,
            ..Default::default()
        }
    }

    #[test]
    fn counts_are_rendered_with_their_labels() {
        let m = Metrics::new();
        m.event(&EventKind::Fork { child_pid: 1 });
        let mut batch = EventCounts::default();
        batch.count(&EventKind::Fork { child_pid: 2 });
        batch.count(&EventKind::Exit { exit_code: 0 });
        batch.count(&EventKind::Exit { exit_code: 1 });
        m.events(&batch);
        m.deviation(&deviation(
            proto::v1::DeviationKind::NewExecEdge,
            proto::v1::Severity::Low,
        ));
        m.kernel_counters(&[("lost_exec", 3), ("suppressed_open", 0)]);
        m.kernel_counters(&[("lost_exec", 5), ("suppressed_open", 1)]);
        m.transport(TransportStats {
            unacknowledged: 4,
            acknowledged: 2,
            dropped: 0,
            connected: true,
        });
        m.workloads(&[]);
        m.drain_behind();
        let text = m.render();
        for line in [
            "sensor_events_total{kind=\"fork\"} 2",
            "sensor_events_total{kind=\"exit\"} 2",
            "sensor_drains_behind_total 1",
            "sensor_deviations_total{kind=\"new-exec-edge\",severity=\"low\"} 1",
            "sensor_kernel_losses_total{reason=\"lost_exec\"} 5",
            "sensor_suppressed_repeats_total{reason=\"suppressed_open\"} 1",
            "sensor_deviations_acknowledged_total 2",
            "sensor_spool_depth 4",
            "sensor_collector_connected 1",
            "sensor_workloads{state=\"detecting\"} 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(
            !text.contains("sensor_kernel_losses_total{reason=\"suppressed"),
            "a filtered repeat is not a loss:\n{text}"
        );
    }

    #[test]
    fn http_answers() {
        let ok = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "a 1\n".into()
        }))
        .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\na 1\n"), "{ok}");
        let head = String::from_utf8(respond(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n", || {
            "a 1\n".into()
        }))
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        let missing = String::from_utf8(respond(b"GET / HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 "));
        let post =
            String::from_utf8(respond(b"POST /metrics HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "));
        let junk = String::from_utf8(respond(b"\x00\xff", String::new)).unwrap();
        assert!(junk.starts_with("HTTP/1.1 405 "));
    }

    #[tokio::test]
    async fn serves_over_tcp_until_cancelled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.undecodable();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::clone(&metrics), cancel.clone()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(
            response.contains("\nsensor_undecodable_records_total 1\n"),
            "{response}"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
