//! Reports: findings become `sensor.v1` deviations here, and only here ([`build::deviation`]
//! says what `detect` decided); the agent's own facts are added on the way out: whether the
//! kernel lost records just before ([`Reporter`]) and the executable's content hash, taken off
//! the event loop ([`HashWorker`]).

mod build;
pub mod exe_hash;
pub mod hasher;

use proto::v1;

use crate::detect::{Finding, Signal};

pub use build::deviation;
pub use exe_hash::Target;
pub use hasher::{Batch, HashWorker};

/// Turns findings into deviations for one agent (its host identity).
#[derive(Debug)]
pub struct Reporter {
    host: String,
}

impl Reporter {
    pub fn new(host: String) -> Self {
        Reporter { host }
    }

    /// The deviations of `findings`; `lost`: the kernel lost records shortly before them, so
    /// evidence that would qualify them may be missing (signal `overlapped-loss`).
    pub fn report(&self, findings: Vec<Finding>, lost: bool) -> Vec<v1::Deviation> {
        findings
            .into_iter()
            .map(|mut f| {
                if lost {
                    f.verdict_mut().signals.push(Signal::OverlappedLoss);
                }
                deviation(&self.host, &f)
            })
            .collect()
    }
}
