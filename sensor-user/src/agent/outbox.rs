//! The way out of the agent: findings become deviations (`report`), get the agent's own facts
//! (recent kernel loss; the executable hash, off the loop) and go to the transport's spool, with
//! an optional record of what was spooled (`--record-deviations`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1;

use crate::detect::Finding;
use crate::kernel::Sensor;
use crate::metrics::Metrics;
use crate::report::{Batch, HashWorker, Reporter, Target};
use crate::status::lost_total;
use crate::transport::Transport;

/// Longest wait at shutdown for the hashing of queued deviations.
const HASH_DRAIN: Duration = Duration::from_secs(5);

/// Everything between detection and the spool.
pub(super) struct Outbox {
    pub transport: Transport,
    reporter: Reporter,
    losses: LossWatch,
    hasher: HashWorker,
    spool: Arc<Mutex<Spool>>,
}

/// The last step: metrics, log, record, spool. Shared by the hashing worker and the loop
/// (which sends straight here what the worker has no room for).
struct Spool {
    transport: Transport,
    record: Option<DeviationRecord>,
    metrics: Arc<Metrics>,
}

impl Spool {
    fn send(&mut self, deviations: Vec<v1::Deviation>) {
        for d in &deviations {
            self.metrics.deviation(d);
            let workload = d.workload.as_ref().map_or("", |w| w.id.as_str());
            tracing::info!(workload, summary = %d.summary, "deviation");
        }
        if let Some(record) = self.record.as_mut() {
            record.spooling(deviations.iter().map(|d| d.id.clone()));
        }
        let sent = self.transport.send(deviations);
        if let Some(record) = self.record.as_mut() {
            record.write(if sent.is_ok() {
                "spooled\n"
            } else {
                "failed\n"
            });
        }
        if let Err(e) = sent {
            tracing::error!(error = %e, "could not queue deviations for delivery");
        }
    }
}

impl Outbox {
    pub fn new(
        host: String,
        transport: Transport,
        sensor: &Sensor,
        record: Option<&std::path::Path>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Outbox> {
        let spool = Arc::new(Mutex::new(Spool {
            transport: transport.clone(),
            record: record.map(DeviationRecord::open).transpose()?,
            metrics,
        }));
        let worker_spool = Arc::clone(&spool);
        let hasher = HashWorker::start(move |deviations| {
            if let Ok(mut spool) = worker_spool.lock() {
                spool.send(deviations);
            }
        });
        Ok(Outbox {
            transport,
            reporter: Reporter::new(host),
            losses: LossWatch::new(sensor),
            hasher,
            spool,
        })
    }

    /// Reports `found` and hands the deviations to the hashing worker, or straight to the
    /// spool (unhashed, with the reason) when it has no room. Never blocks on a file.
    pub fn send(&mut self, sensor: &Sensor, found: Vec<Finding>) {
        if found.is_empty() {
            return;
        }
        let lost = self.losses.recent(sensor);
        let targets = found.iter().map(Target::of).collect();
        let deviations = self.reporter.report(found, lost);
        if let Err(unhashed) = self.hasher.submit(Batch {
            deviations,
            targets,
        }) && let Ok(mut spool) = self.spool.lock()
        {
            spool.send(unhashed);
        }
    }

    /// Lets the queued deviations reach the spool (bounded by [`HASH_DRAIN`]).
    pub fn close(self) {
        self.hasher.finish(HASH_DRAIN);
    }
}

/// `--record-deviations`: the agent's own account of what it produced, for tests that check
/// delivery end to end. Text, appended by each agent process in turn:
///
/// - `start`: an agent process opened the file;
/// - `spooling <id>`: one line per deviation, written before they are handed to the spool;
/// - `spooled` / `failed`: the spool took (or refused) the `spooling` lines above it.
///
/// A group of `spooling` lines followed by `start` or the end of the file was interrupted (the
/// agent was killed while spooling it): those deviations may or may not be in the spool. Each
/// line is one `write` with no buffering in the process, so a SIGKILL loses nothing written.
/// Errors are logged, never fatal: it is a debugging aid.
struct DeviationRecord {
    file: std::fs::File,
    path: PathBuf,
}

impl DeviationRecord {
    fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        std::io::Write::write_all(&mut file, b"start\n")?;
        Ok(DeviationRecord {
            file,
            path: path.to_owned(),
        })
    }

    fn write(&mut self, text: &str) {
        use std::io::Write as _;
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record deviations");
        }
    }

    fn spooling(&mut self, ids: impl Iterator<Item = String>) {
        let text: String = ids.map(|id| format!("spooling {id}\n")).collect();
        self.write(&text);
    }
}

/// How long after the kernel lost records a deviation is marked `overlapped-loss`: evidence that
/// would qualify it (an earlier write, the DNS answer, the parent's exec) may be missing.
pub(super) const LOSS_WINDOW: Duration = Duration::from_secs(30);

/// Remembers when the kernel last lost records.
struct LossWatch {
    total: u64,
    at: Option<std::time::Instant>,
}

impl LossWatch {
    fn new(sensor: &Sensor) -> Self {
        LossWatch {
            total: lost_total(sensor),
            at: None,
        }
    }

    /// Whether records were lost within [`LOSS_WINDOW`] (reads the counters now).
    fn recent(&mut self, sensor: &Sensor) -> bool {
        let total = lost_total(sensor);
        if total > self.total {
            self.total = total;
            self.at = Some(std::time::Instant::now());
        }
        self.at.is_some_and(|at| at.elapsed() < LOSS_WINDOW)
    }
}
