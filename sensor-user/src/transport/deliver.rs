//! The delivery task: keeps one `StreamDeviations` stream open, seals and sends spooled batches in
//! sequence order, deletes each when its acknowledgement arrives, reconnects with capped
//! exponential backoff, and on cancellation tries for a few seconds to empty the spool.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proto::contract::REJECTED_SEQUENCE_TRAILER;
use proto::v1::{BatchAck, DeviationBatch, ingest_client::IngestClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Uri};

use super::{ClientTls, Inner, TransportError, spool};

/// Batches sent but not yet acknowledged, at most.
pub(super) const WINDOW: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream whose oldest batch waits longer than this for its acknowledgement is reopened.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed seal (disk trouble), the next attempt waits this long.
const SEAL_RETRY: Duration = Duration::from_secs(1);
/// How long delivery continues after cancellation.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Once the spool is empty while draining, delivery ends after this long without a new `send`.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the otherwise quiet stream notice a vanished collector.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the collector URL and prepares the connection settings: TLS (with `tls`) for
/// `https://`, plain HTTP/2 for `http://`.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(invalid("no host"));
    };
    // `[::1]` in a URL is the name `::1` in a certificate.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let https = match uri.scheme_str() {
        Some("http") if tls.is_some() => {
            return Err(invalid(
                "collector_ca, client_cert and client_key need an https:// collector URL",
            ));
        }
        Some("http") => false,
        Some("https") if tls.is_none() => {
            return Err(invalid(
                "https:// needs collector_ca (--collector-ca), the CA that signed the \
                 collector's certificate, and this agent's client_cert and client_key",
            ));
        }
        Some("https") => true,
        _ => return Err(invalid("expected http://HOST:PORT or https://HOST:PORT")),
    };
    let mut endpoint = Endpoint::from(uri);
    if https {
        let config = tls.cloned().unwrap_or_default().load(&host)?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| invalid(&error_chain(&e)))?;
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// How a session with the collector ended.
enum Ended {
    /// Cancelled and the spool is empty.
    Drained,
    /// Cancelled and the drain time is over.
    Deadline,
    /// The collector refused a batch for good; it was dropped. Reconnect at once.
    Rejected,
    /// Connection or stream failure. `progressed`: it worked for a while, so back off from the
    /// minimum again.
    Failed { reason: String, progressed: bool },
}

/// Cancellation turned into a deadline.
struct Drain {
    cancel: CancellationToken,
    deadline: Option<Instant>,
}

impl Drain {
    fn draining(&self) -> bool {
        self.deadline.is_some()
    }

    fn notice_cancel(&mut self) {
        if self.deadline.is_none() && self.cancel.is_cancelled() {
            self.deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
    }

    /// Runs `future` to completion unless the drain deadline passes first (`None`).
    async fn bounded<F: Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            let cancel = self.cancel.clone();
            tokio::select! {
                output = &mut future => return Some(output),
                () = cancel.cancelled(), if self.deadline.is_none() => self.notice_cancel(),
                () = sleep_until(self.deadline) => return None,
            }
        }
    }
}

/// Sleeps until `at`, forever if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

struct Delivery {
    inner: Arc<Inner>,
    endpoint: Endpoint,
    url: String,
    drain: Drain,
    /// An outage warning was logged and no stream has worked since.
    outage_logged: bool,
    /// Sealing failed; not retried before this time.
    seal_retry_at: Option<Instant>,
}

/// The delivery task's body; returns after cancellation (at most a few seconds later).
pub async fn run(inner: Arc<Inner>, endpoint: Endpoint, cancel: CancellationToken) {
    let url = endpoint.uri().to_string();
    let mut delivery = Delivery {
        inner,
        endpoint,
        url,
        drain: Drain {
            cancel,
            deadline: None,
        },
        outage_logged: false,
        seal_retry_at: None,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        match delivery.session().await {
            Ended::Drained => {
                tracing::info!("transport stopped; every deviation was delivered");
                break;
            }
            Ended::Deadline => {
                let left = delivery.inner.spool().unacknowledged();
                tracing::info!(
                    unacknowledged = left,
                    "transport stopped; undelivered deviations stay in the spool"
                );
                break;
            }
            Ended::Rejected => {
                backoff = BACKOFF_MIN;
                continue;
            }
            Ended::Failed { reason, progressed } => {
                delivery.inner.connected.store(false, Ordering::Relaxed);
                if progressed {
                    backoff = BACKOFF_MIN;
                }
                if delivery.outage_logged {
                    tracing::debug!(
                        collector = delivery.url,
                        error = reason,
                        "collector still unreachable"
                    );
                } else {
                    tracing::warn!(
                        collector = delivery.url,
                        error = reason,
                        "collector unreachable or stream broken; deviations stay spooled, retrying with backoff up to {BACKOFF_MAX:?}"
                    );
                    delivery.outage_logged = true;
                }
            }
        }
        if delivery
            .drain
            .bounded(tokio::time::sleep(backoff))
            .await
            .is_none()
        {
            continue; // The next session sees the deadline and ends.
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    delivery.inner.connected.store(false, Ordering::Relaxed);
}

impl Delivery {
    /// One connection and stream, until it fails or delivery stops.
    async fn session(&mut self) -> Ended {
        self.drain.notice_cancel();
        while let Some(deadline) = self.drain.deadline {
            self.seal(true);
            if Instant::now() >= deadline {
                return Ended::Deadline;
            }
            if !self.inner.spool().is_empty() {
                break;
            }
            if self.quiet().await {
                return Ended::Drained;
            }
        }
        let started = Instant::now();
        let failed = |reason: String| Ended::Failed {
            reason,
            progressed: started.elapsed() > BACKOFF_MAX,
        };
        let channel = match self.drain.bounded(self.endpoint.connect()).await {
            None => return Ended::Deadline,
            Some(Err(e)) => return failed(error_chain(&e)),
            Some(Ok(channel)) => channel,
        };
        let (batches, outbound) = mpsc::channel(WINDOW + super::heartbeat::QUEUE);
        let mut client = IngestClient::new(channel);
        let mut acks = match self
            .drain
            .bounded(client.stream_deviations(ReceiverStream::new(outbound)))
            .await
        {
            None => return Ended::Deadline,
            Some(Err(status)) => return failed(format!("{status}")),
            Some(Ok(response)) => response.into_inner(),
        };
        self.inner.connected.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.outage_logged) {
            tracing::info!(
                collector = self.url,
                "connected to collector again; resending spooled batches"
            );
        } else {
            tracing::debug!(collector = self.url, "stream to collector open");
        }

        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_sent: Option<u64> = None;
        let mut progressed = false;
        // When the oldest batch in flight was sent, or last acknowledged.
        let mut waiting_since = Instant::now();
        let mut heartbeat = super::heartbeat::timer(self.inner.heartbeat_interval);
        loop {
            let draining = self.drain.draining();
            // Nothing in flight: what is pending goes out at once (a lone deviation is not held
            // back for the flush interval); while a batch awaits its acknowledgement, new
            // deviations gather into the next one. Batches thus grow with the load by themselves.
            self.seal(draining || in_flight.is_empty());
            while in_flight.len() < WINDOW {
                let Some(sequence) = self.next_batch(last_sent) else {
                    break;
                };
                last_sent = Some(sequence);
                let batch = DeviationBatch {
                    agent_id: self.inner.agent_id.clone(),
                    sequence,
                    deviations: self.read(sequence),
                    spool_id: self.inner.spool_id.clone(),
                    status: None,
                };
                if batches.try_send(batch).is_err() {
                    return failed("stream closed".to_owned());
                }
                if in_flight.is_empty() {
                    waiting_since = Instant::now();
                }
                in_flight.push_back(sequence);
            }
            if draining && in_flight.is_empty() && self.inner.spool().is_empty() {
                if self.quiet().await {
                    return Ended::Drained;
                }
                continue;
            }
            let flush_at = self.inner.spool().pending_since().map(|since| {
                (since + self.inner.flush_interval).max(self.seal_retry_at.unwrap_or(since))
            });
            let ack_deadline = (!in_flight.is_empty()).then(|| waiting_since + ACK_TIMEOUT);
            let cancel = self.drain.cancel.clone();
            tokio::select! {
                message = acks.message() => match message {
                    // A heartbeat's acknowledgement: nothing to delete.
                    Ok(Some(ack)) if ack.sequence == 0 => {
                        tracing::trace!("heartbeat acknowledged");
                    }
                    Ok(Some(ack)) => {
                        if let Err(reason) = self.acknowledge(&ack, &mut in_flight) {
                            return failed(reason);
                        }
                        progressed = true;
                        waiting_since = Instant::now();
                    }
                    Ok(None) => return Ended::Failed {
                        reason: "collector closed the stream".to_owned(),
                        progressed: progressed || started.elapsed() > BACKOFF_MAX,
                    },
                    Err(status) => {
                        if self.drop_rejected(&status) {
                            return Ended::Rejected;
                        }
                        return Ended::Failed {
                            reason: format!("{status}"),
                            progressed: progressed || started.elapsed() > BACKOFF_MAX,
                        };
                    }
                },
                () = self.inner.wake.notified() => {}
                _ = heartbeat.tick(), if !draining => {
                    super::heartbeat::send(&self.inner, &batches, in_flight.len());
                }
                () = sleep_until(flush_at), if !draining => {}
                () = sleep_until(ack_deadline) => return Ended::Failed {
                    reason: format!("no acknowledgement for {ACK_TIMEOUT:?}"),
                    progressed,
                },
                () = cancel.cancelled(), if !draining => self.drain.notice_cancel(),
                () = sleep_until(self.drain.deadline) => return Ended::Deadline,
            }
        }
    }

    /// While draining with an empty spool: true when no deviation was sent for [`DRAIN_QUIET`]
    /// (the agent's last deviations, found while it stops, still go out), false when one was or
    /// the deadline passed.
    async fn quiet(&self) -> bool {
        tokio::select! {
            () = self.inner.wake.notified() => false,
            () = tokio::time::sleep(DRAIN_QUIET) => true,
            () = sleep_until(self.drain.deadline) => false,
        }
    }

    /// Seals the pending deviations into a batch when their flush interval is over (or `now`).
    fn seal(&mut self, now: bool) {
        if self.seal_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let mut spool = self.inner.spool();
        let due = spool
            .pending_since()
            .is_some_and(|since| now || since.elapsed() >= self.inner.flush_interval);
        if !due {
            return;
        }
        self.seal_retry_at = match spool.seal() {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot seal a batch in the spool; retrying in {SEAL_RETRY:?}");
                Some(Instant::now() + SEAL_RETRY)
            }
        };
    }

    fn next_batch(&self, after: Option<u64>) -> Option<u64> {
        self.inner.spool().next_sealed_after(after)
    }

    /// Reads a sealed batch. An unreadable one (damaged on disk) is dropped, loudly, and sent as
    /// an empty batch so the sequence still gets its acknowledgement.
    fn read(&self, sequence: u64) -> Vec<proto::v1::Deviation> {
        let path = self.inner.spool().batch_path(sequence);
        match spool::read_batch(&path) {
            Ok(deviations) => deviations,
            Err(reason) => {
                tracing::error!(sequence, path = %path.display(), reason, "spooled batch is unreadable; dropping it");
                let lost = self.inner.spool().remove(sequence).unwrap_or(0);
                self.inner.count_dropped(lost, "spooled batch unreadable");
                Vec::new()
            }
        }
    }

    /// Deletes the acknowledged batch, which must be the oldest in flight.
    fn acknowledge(&self, ack: &BatchAck, in_flight: &mut VecDeque<u64>) -> Result<(), String> {
        if in_flight.front() != Some(&ack.sequence) {
            return Err(format!(
                "collector acknowledged batch {} while batch {:?} was expected",
                ack.sequence,
                in_flight.front()
            ));
        }
        in_flight.pop_front();
        let count = self.inner.spool().remove(ack.sequence).unwrap_or(0);
        self.inner.acknowledged.fetch_add(count, Ordering::Relaxed);
        tracing::debug!(
            sequence = ack.sequence,
            stored = ack.stored,
            duplicates = ack.duplicates,
            "batch acknowledged"
        );
        Ok(())
    }

    /// If the collector refused a batch for good (it names it in a trailer), drops it from the
    /// spool and reports true.
    fn drop_rejected(&self, status: &tonic::Status) -> bool {
        let Some(sequence) = status
            .metadata()
            .get(REJECTED_SEQUENCE_TRAILER)
            .and_then(|v| v.to_str().ok())
            .and_then(proto::contract::rejected_sequence)
        else {
            return false;
        };
        let Some(count) = self.inner.spool().remove(sequence) else {
            return false;
        };
        tracing::error!(sequence, deviations = count, code = ?status.code(), reason = status.message(), "collector refused a batch; dropping it");
        self.inner.count_dropped(count, "refused by the collector");
        true
    }
}

/// An error and its sources on one line (connection errors keep the useful part in sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
