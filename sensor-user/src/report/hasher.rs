//! The executable hashes of outgoing deviations, off the event loop: a worker thread takes
//! batches from a bounded queue, hashes each deviation's executable (bounded in time and size,
//! see `exe_hash`), records why when it cannot (signal `executable-not-hashed:<why>`), and hands
//! the batch on. When the queue is full the batch is handed back at once, marked `busy`: the
//! event loop never waits for hashing, and no deviation waits for more than the queue ahead of
//! it times [`exe_hash::TIMEOUT`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use proto::v1;

use super::exe_hash::{ExecutableHashes, Target};
use crate::detect::{HashGaveUp, Signal};

/// Batches waiting for the worker before new ones are sent on unhashed.
pub const QUEUE: usize = 32;

/// Deviations and, for each, the executable to hash.
pub struct Batch {
    pub deviations: Vec<v1::Deviation>,
    pub targets: Vec<Target>,
}

/// The worker's handle; see the module documentation.
pub struct HashWorker {
    queue: Option<mpsc::SyncSender<Batch>>,
    done: mpsc::Receiver<()>,
    depth: Arc<AtomicUsize>,
}

impl HashWorker {
    /// Starts the worker; `deliver` gets every batch once hashed.
    pub fn start(mut deliver: impl FnMut(Vec<v1::Deviation>) + Send + 'static) -> HashWorker {
        let (queue, batches) = mpsc::sync_channel::<Batch>(QUEUE);
        let (finished, done) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::clone(&depth);
        let spawned = std::thread::Builder::new()
            .name("report-hash".into())
            .spawn(move || {
                let hashes = ExecutableHashes::default();
                for mut batch in batches {
                    waiting.fetch_sub(1, Ordering::Relaxed);
                    fill(&hashes, &mut batch);
                    deliver(batch.deviations);
                }
                let _ = finished.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the hashing thread; deviations go unhashed");
        }
        HashWorker {
            queue: Some(queue),
            done,
            depth,
        }
    }

    /// Queues `batch` for hashing, or hands it back marked `busy` when the queue is full (or
    /// the worker is gone). Never blocks.
    pub fn submit(&self, batch: Batch) -> Result<(), Vec<v1::Deviation>> {
        let Some(queue) = &self.queue else {
            return Err(unhashed(batch.deviations, HashGaveUp::Busy));
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(batch) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(b) | mpsc::TrySendError::Disconnected(b)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(unhashed(b.deviations, HashGaveUp::Busy))
            }
        }
    }

    /// Batches waiting for the worker.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Lets the worker finish what is queued, waiting at most `wait`.
    pub fn finish(mut self, wait: Duration) {
        self.queue = None;
        if self.done.recv_timeout(wait).is_err() {
            tracing::warn!("hashing did not finish in time; its queued deviations are lost");
        }
    }
}

/// Hashes each deviation's executable, or says why not.
fn fill(hashes: &ExecutableHashes, batch: &mut Batch) {
    for (d, target) in batch.deviations.iter_mut().zip(&batch.targets) {
        let Some(p) = d.process.as_mut() else {
            continue;
        };
        match hashes.of(target) {
            Ok(hash) => p.executable_sha256 = hash,
            Err(why) => d.signals.push(Signal::ExecutableNotHashed(why).to_string()),
        }
    }
}

fn unhashed(mut deviations: Vec<v1::Deviation>, why: HashGaveUp) -> Vec<v1::Deviation> {
    for d in &mut deviations {
        d.signals.push(Signal::ExecutableNotHashed(why).to_string());
    }
    deviations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        Batch {
            deviations: (0..n)
                .map(|i| v1::Deviation {
                    id: i.to_string(),
                    process: Some(v1::Process::default()),
                    ..v1::Deviation::default()
                })
                .collect(),
            targets: (0..n)
                .map(|_| Target {
                    pid: 0,
                    path: "/nonexistent".into(),
                    identity: None,
                })
                .collect(),
        }
    }

    #[test]
    fn hashes_off_the_caller_and_hands_back_when_full() {
        let (tx, rx) = mpsc::channel();
        let (gate_tx, gate) = mpsc::channel::<()>();
        let worker = HashWorker::start(move |ds| {
            // Blocked until the test opens the gate: the queue fills behind it.
            let _ = gate.recv();
            let _ = tx.send(ds);
        });
        let mut busy = None;
        for _ in 0..(QUEUE + 2) {
            if let Err(ds) = worker.submit(batch(1)) {
                busy = Some(ds);
                break;
            }
        }
        let busy = busy.expect("a full queue hands the batch back");
        assert_eq!(busy[0].signals, ["executable-not-hashed:busy"]);
        for _ in 0..(QUEUE + 2) {
            let _ = gate_tx.send(());
        }
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("delivered");
        assert_eq!(first[0].signals, ["executable-not-hashed:process-gone"]);
        worker.finish(Duration::from_secs(5));
    }
}
