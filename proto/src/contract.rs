//! What both ends of `Ingest.StreamDeviations` hold each other to, written once: batch limits,
//! what makes a batch or a deviation invalid, and the trailer that names a refused batch. The
//! agent checks deviations before it spools them (so it can say why at once); the collector
//! checks batches before it stores them, and refuses for good with [`REJECTED_SEQUENCE_TRAILER`].

use std::fmt;

use prost::Message as _;

use crate::v1::{Deviation, DeviationBatch};

/// Most deviations in one batch.
pub const MAX_BATCH_DEVIATIONS: usize = 10_000;
/// Largest encoded batch, in bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest encoded deviation an agent sends: a quarter of a batch, so every deviation fits.
pub const MAX_DEVIATION_BYTES: usize = 1024 * 1024;
/// Paths a new executable's `Deviation.loaded` evidence names (the rest are counted).
pub const MAX_LOADED_PATHS: usize = 16;
/// gRPC trailer of a refused batch: its sequence (decimal), so the agent drops it instead of
/// resending it forever.
pub const REJECTED_SEQUENCE_TRAILER: &str = "sensor-rejected-sequence";

/// Why a deviation cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviationProblem {
    NoId,
    NoWorkload,
    /// Encoded size, over [`MAX_DEVIATION_BYTES`].
    TooLarge(usize),
}

impl fmt::Display for DeviationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviationProblem::NoId => f.write_str("empty id"),
            DeviationProblem::NoWorkload => f.write_str("no workload"),
            DeviationProblem::TooLarge(size) => {
                write!(f, "{size} bytes encoded, more than {MAX_DEVIATION_BYTES}")
            }
        }
    }
}

/// Checks one deviation as an agent sends it.
pub fn check_deviation(d: &Deviation) -> Result<(), DeviationProblem> {
    if d.id.is_empty() {
        return Err(DeviationProblem::NoId);
    }
    if d.workload.as_ref().is_none_or(|w| w.id.is_empty()) {
        return Err(DeviationProblem::NoWorkload);
    }
    let size = d.encoded_len();
    if size > MAX_DEVIATION_BYTES {
        return Err(DeviationProblem::TooLarge(size));
    }
    Ok(())
}

/// Why a batch is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchProblem {
    NoAgentId {
        sequence: u64,
    },
    /// Sequence 0 is a heartbeat, which carries a status.
    ZeroWithoutStatus,
    HeartbeatWithDeviations,
    TooManyDeviations {
        sequence: u64,
        count: usize,
    },
    TooLarge {
        sequence: u64,
        bytes: usize,
    },
    DeviationWithoutId {
        sequence: u64,
        index: usize,
    },
    DeviationWithoutWorkload {
        sequence: u64,
        id: String,
    },
}

impl BatchProblem {
    /// Over a size limit (gRPC `RESOURCE_EXHAUSTED`), rather than malformed
    /// (`INVALID_ARGUMENT`).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            BatchProblem::TooManyDeviations { .. } | BatchProblem::TooLarge { .. }
        )
    }
}

impl fmt::Display for BatchProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchProblem::NoAgentId { sequence } => {
                write!(f, "batch {sequence}: agent_id is empty")
            }
            BatchProblem::ZeroWithoutStatus => f.write_str(
                "batch sequence 0: sequences start at 1 (0 is a heartbeat, which carries a status)",
            ),
            BatchProblem::HeartbeatWithDeviations => f.write_str(
                "heartbeat (sequence 0) carries deviations; send them in a numbered batch",
            ),
            BatchProblem::TooManyDeviations { sequence, count } => write!(
                f,
                "batch {sequence}: {count} deviations, more than {MAX_BATCH_DEVIATIONS}"
            ),
            BatchProblem::TooLarge { sequence, bytes } => write!(
                f,
                "batch {sequence}: {bytes} bytes, more than {MAX_BATCH_BYTES}"
            ),
            BatchProblem::DeviationWithoutId { sequence, index } => {
                write!(f, "batch {sequence}: deviation #{index} has no id")
            }
            BatchProblem::DeviationWithoutWorkload { sequence, id } => {
                write!(f, "batch {sequence}: deviation {id} has no workload")
            }
        }
    }
}

/// Checks a batch as the collector receives it.
pub fn check_batch(batch: &DeviationBatch) -> Result<(), BatchProblem> {
    let sequence = batch.sequence;
    if batch.agent_id.is_empty() {
        return Err(BatchProblem::NoAgentId { sequence });
    }
    if sequence == 0 && batch.status.is_none() {
        return Err(BatchProblem::ZeroWithoutStatus);
    }
    if sequence == 0 && !batch.deviations.is_empty() {
        return Err(BatchProblem::HeartbeatWithDeviations);
    }
    let count = batch.deviations.len();
    if count > MAX_BATCH_DEVIATIONS {
        return Err(BatchProblem::TooManyDeviations { sequence, count });
    }
    let bytes = batch.encoded_len();
    if bytes > MAX_BATCH_BYTES {
        return Err(BatchProblem::TooLarge { sequence, bytes });
    }
    for (index, d) in batch.deviations.iter().enumerate() {
        match check_deviation(d) {
            Err(DeviationProblem::NoId) => {
                return Err(BatchProblem::DeviationWithoutId { sequence, index });
            }
            Err(DeviationProblem::NoWorkload) => {
                return Err(BatchProblem::DeviationWithoutWorkload {
                    sequence,
                    id: d.id.clone(),
                });
            }
            // The batch's own size bounds what the collector stores.
            Err(DeviationProblem::TooLarge(_)) | Ok(()) => {}
        }
    }
    Ok(())
}

/// The sequence a [`REJECTED_SEQUENCE_TRAILER`] value names.
pub fn rejected_sequence(value: &str) -> Option<u64> {
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{AgentStatus, Workload};

    fn deviation(id: &str, workload: &str) -> Deviation {
        Deviation {
            id: id.into(),
            workload: Some(Workload {
                id: workload.into(),
                ..Workload::default()
            }),
            ..Deviation::default()
        }
    }

    #[test]
    fn both_ends_refuse_the_same() {
        assert_eq!(check_deviation(&deviation("a", "w")), Ok(()));
        assert_eq!(
            check_deviation(&deviation("", "w")),
            Err(DeviationProblem::NoId)
        );
        assert_eq!(
            check_deviation(&deviation("a", "")),
            Err(DeviationProblem::NoWorkload)
        );
        let mut big = deviation("a", "w");
        big.summary = "x".repeat(MAX_DEVIATION_BYTES);
        assert!(matches!(
            check_deviation(&big),
            Err(DeviationProblem::TooLarge(_))
        ));

        let batch = |sequence, deviations| DeviationBatch {
            agent_id: "h".into(),
            sequence,
            deviations,
            ..DeviationBatch::default()
        };
        assert_eq!(check_batch(&batch(1, vec![deviation("a", "w")])), Ok(()));
        assert_eq!(
            check_batch(&batch(0, Vec::new())),
            Err(BatchProblem::ZeroWithoutStatus)
        );
        let mut heartbeat = batch(0, Vec::new());
        heartbeat.status = Some(AgentStatus::default());
        assert_eq!(check_batch(&heartbeat), Ok(()));
        let e = check_batch(&batch(7, vec![deviation("", "w")])).unwrap_err();
        assert_eq!(e.to_string(), "batch 7: deviation #0 has no id");
        assert!(!e.is_too_large());
        let many = batch(8, vec![deviation("a", "w"); MAX_BATCH_DEVIATIONS + 1]);
        assert!(check_batch(&many).unwrap_err().is_too_large());
        assert_eq!(rejected_sequence("42"), Some(42));
        assert_eq!(rejected_sequence("x"), None);
    }
}
