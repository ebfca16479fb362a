//! Blind spots: the kernel lost records while a workload was active (issue 12). What was lost may
//! be exactly what an attacker flooded the ring to hide, so each window (run or hour) active
//! when records were lost gets one HIGH `blind-spot` deviation.
//!
//! The agent notices a loss by its kernel counters (wall clock), but judges events late when it
//! is behind (a flood is when it is behind): the workloads active when the records were lost may
//! not have been decoded yet. So a loss is kept as a wall-clock interval, and a window gets its
//! blind spot either at once (it was active in the interval by what is decoded) or when one of
//! its events from inside the interval is decoded later.

use std::collections::VecDeque;
use std::sync::Arc;

use proto::v1::DeviationKind;

use crate::attribute::Attributed;

use super::finding::Finding;
use super::ids::hash_fields;
use super::live::RunState;
use super::{judge, severity, windows};

/// Loss intervals kept while their events may still be decoded.
const MAX_LOSSES: usize = 16;
/// An interval is forgotten once events this much newer than its end are decoded (records of
/// different CPUs' rings arrive slightly out of order).
const REORDER_NANOS: i64 = 10_000_000_000;

/// Recent kernel losses: wall-clock intervals (ns since the epoch) and records lost in each.
#[derive(Debug, Default)]
pub(crate) struct Losses(VecDeque<(i64, i64, u64)>);

impl Losses {
    /// Records `lost` records lost between `since` and `now`. A loss that goes on (noticed
    /// every second through a long flood) stays one interval, so a lagging agent still finds
    /// its start.
    pub fn note(&mut self, since: i64, now: i64, lost: u64) {
        if let Some(last) = self.0.back_mut()
            && since <= last.1
        {
            last.1 = last.1.max(now);
            last.2 += lost;
            return;
        }
        if self.0.len() >= MAX_LOSSES {
            self.0.pop_front();
        }
        self.0.push_back((since, now, lost));
    }

    /// The records lost in an interval holding event time `time`; forgets the intervals that
    /// end long before it.
    pub fn at(&mut self, time: i64) -> Option<u64> {
        while self
            .0
            .front()
            .is_some_and(|(_, end, _)| *end + REORDER_NANOS < time)
        {
            self.0.pop_front();
        }
        self.0
            .iter()
            .find(|(since, end, _)| (*since..=*end).contains(&time))
            .map(|(_, _, lost)| *lost)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The blind spot of `state` (a window of `workload` on `host`), told about `event` at `time`;
/// marks the window as told.
pub(crate) fn blind_spot(
    host: &str,
    workload: &str,
    state: &mut RunState,
    event: Arc<Attributed>,
    time: i64,
    lost: u64,
) -> Finding {
    state.blind = true;
    let window = state.window();
    let id = hash_fields(&[host, workload, "blind-spot", &window]);
    let root = judge::tree_root(&event);
    let incident = state.incident(host, workload, root, time).id.clone();
    let verdict = windows::plain_verdict(
        id,
        event,
        DeviationKind::BlindSpot,
        severity::BLIND_SPOT,
        &incident,
    );
    Finding::BlindSpot { lost, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_hold_their_events_and_expire_after_them() {
        let mut l = Losses::default();
        assert_eq!(l.at(5), None);
        l.note(10, 20, 7);
        assert_eq!(l.at(9), None);
        assert_eq!(l.at(10), Some(7));
        assert_eq!(l.at(20), Some(7));
        assert!(!l.is_empty());
        assert_eq!(l.at(20 + REORDER_NANOS + 1), None);
        assert!(l.is_empty());
        for i in 0..(MAX_LOSSES as i64 + 3) {
            l.note(10 * i, 10 * i + 1, 1);
        }
        assert_eq!(l.0.len(), MAX_LOSSES);
    }

    #[test]
    fn a_loss_that_goes_on_is_one_interval() {
        let mut l = Losses::default();
        for second in 0..100 {
            l.note(second * 1_000 - 31_000, second * 1_000, 5);
        }
        assert_eq!(l.0.len(), 1);
        assert_eq!(l.at(-31_000), Some(500), "its start is still found");
    }
}
