//! Rates and volume: events of each kind per one-minute window (event time), against the peak
//! the baseline learnt, and distinct new objects per window (enumeration).
//!
//! The envelope is the learnt peak; a window is a spike only past three times the peak and at
//! least [`MIN_EXCESS`] more, so the workload's normal bursts (which set the peak) and ordinary
//! jitter around them stay silent. Counting is an array increment per event; nothing allocates
//! except the distinct-object sets, which only judged novelties (rare) fill.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::baseline::{Dimension, RateDim, WINDOW_SECONDS};
use crate::behaviour::Behaviour;
use crate::event::EventKind;

/// A spike must exceed the learnt peak by at least this many events (see [`threshold`]).
pub const MIN_EXCESS: u32 = 30;
/// Distinct new objects of one dimension in one window that make an enumeration.
pub const ENUMERATION_THRESHOLD: usize = 20;
/// Samples kept per enumeration.
const SAMPLES: usize = 5;

/// The count past which a window is a spike, for a learnt `peak`.
pub fn threshold(peak: u32) -> u32 {
    peak.saturating_mul(3).max(peak.saturating_add(MIN_EXCESS))
}

/// A spike to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spike {
    pub rate: RateDim,
    pub count: u32,
    pub peak: u32,
    pub threshold: u32,
}

/// One run's (or workload's) current window.
#[derive(Debug, Default)]
pub(crate) struct RateWindow {
    window: i64,
    counts: [u32; RateDim::COUNT],
    /// The learnt peaks (copied at start; raised while learning).
    peaks: [u32; RateDim::COUNT],
    /// Rates already reported as spikes in this run (bit per rate).
    spiked: u8,
}

impl RateWindow {
    pub(crate) fn new(peak: impl Fn(RateDim) -> u32) -> Self {
        RateWindow {
            window: i64::MIN,
            peaks: RateDim::ALL.map(peak),
            ..RateWindow::default()
        }
    }

    /// Counts an event of `kind` at `secs` (event time). While `learning`, returns the rates
    /// whose peak it raised, with the new peak (an event counts in at most two rates; an array,
    /// not a `Vec`: while a learning window is at its peak every event raises it); when judged,
    /// the first spike of each rate.
    pub(crate) fn count(
        &mut self,
        kind: &EventKind,
        secs: i64,
        learning: bool,
    ) -> ([Option<(RateDim, u32)>; 2], Option<Spike>) {
        let (a, b) = RateDim::of(kind);
        let mut raised = [None; 2];
        let mut spike = None;
        if a.is_none() {
            return (raised, spike);
        }
        let window = secs.div_euclid(i64::from(WINDOW_SECONDS));
        if window != self.window {
            self.window = window;
            self.counts = [0; RateDim::COUNT];
        }
        for (slot, rate) in [a, b].into_iter().enumerate() {
            let Some(rate) = rate else { continue };
            let i = rate.index();
            self.counts[i] = self.counts[i].saturating_add(1);
            let count = self.counts[i];
            if learning {
                if count > self.peaks[i] {
                    self.peaks[i] = count;
                    raised[slot] = Some((rate, count));
                }
            } else {
                let threshold = threshold(self.peaks[i]);
                let bit = 1u8 << i;
                if count > threshold && self.spiked & bit == 0 {
                    self.spiked |= bit;
                    spike = spike.or(Some(Spike {
                        rate,
                        count,
                        peak: self.peaks[i],
                        threshold,
                    }));
                }
            }
        }
        (raised, spike)
    }
}

/// An enumeration to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enumerated {
    pub dimension: Dimension,
    pub distinct: usize,
    pub samples: Vec<String>,
}

/// Distinct new objects per dimension in the current window of one run.
#[derive(Debug, Default)]
pub(crate) struct NoveltyWindow {
    window: i64,
    seen: Vec<(Dimension, HashSet<u64>, Vec<String>)>,
    /// Dimensions already reported as enumerated in this run (bit per dimension).
    reported: u16,
}

impl NoveltyWindow {
    /// Counts the new `behaviour` (named `name`) at `secs`; the enumeration it completes, once
    /// per run and dimension.
    pub(crate) fn count(
        &mut self,
        behaviour: &Behaviour,
        name: impl FnOnce() -> String,
        secs: i64,
    ) -> Option<Enumerated> {
        let dimension = behaviour.dimension();
        let bit = 1u16 << dimension.index();
        if self.reported & bit != 0 || matches!(dimension, Dimension::Host | Dimension::ActiveTime)
        {
            return None;
        }
        let window = secs.div_euclid(i64::from(WINDOW_SECONDS));
        if window != self.window {
            self.window = window;
            self.seen.clear();
        }
        let index = match self.seen.iter().position(|(d, ..)| *d == dimension) {
            Some(i) => i,
            None => {
                self.seen.push((dimension, HashSet::new(), Vec::new()));
                self.seen.len() - 1
            }
        };
        let (_, set, samples) = &mut self.seen[index];
        // In memory only (never persisted), so the std hasher's instability does not matter.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        behaviour.hash(&mut hasher);
        if set.insert(hasher.finish()) && samples.len() < SAMPLES {
            samples.push(name());
        }
        if set.len() < ENUMERATION_THRESHOLD {
            return None;
        }
        self.reported |= bit;
        let (_, set, samples) = self.seen.swap_remove(index);
        Some(Enumerated {
            dimension,
            distinct: set.len(),
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::OpenIntent;

    fn open(write: bool) -> EventKind {
        EventKind::Open {
            path: "/x".into(),
            intent: OpenIntent {
                read: !write,
                write,
                ..OpenIntent::default()
            },
            file: Default::default(),
        }
    }

    #[test]
    fn threshold_tolerates_bursts() {
        assert_eq!(threshold(0), 30);
        assert_eq!(threshold(10), 40);
        assert_eq!(threshold(100), 300);
        assert_eq!(threshold(u32::MAX), u32::MAX);
    }

    #[test]
    fn learning_raises_peaks_and_judging_reports_one_spike_per_rate() {
        let mut w = RateWindow::new(|_| 0);
        for _ in 0..5 {
            w.count(&open(true), 0, true);
        }
        let (raised, _) = w.count(&open(true), 1, true);
        assert_eq!(
            raised,
            [Some((RateDim::FileOpen, 6)), Some((RateDim::FileWrite, 6))],
            "a write counts as open and write"
        );
        // Next window, judged: up to max(3 x 6, 6 + 30) = 36 is within the envelope.
        for _ in 0..36 {
            assert_eq!(w.count(&open(false), 60, false).1, None);
        }
        let spike = w.count(&open(false), 61, false).1.expect("spike");
        assert_eq!(
            spike,
            Spike {
                rate: RateDim::FileOpen,
                count: 37,
                peak: 6,
                threshold: 36
            }
        );
        assert_eq!(w.count(&open(false), 62, false).1, None, "once per run");
    }

    #[test]
    fn enumeration_counts_distinct_new_objects_in_a_window() {
        let mut w = NoveltyWindow::default();
        let file = |i: usize| Behaviour::File {
            path: format!("/etc/f{i}"),
            intent: "read".parse().expect("intent"),
        };
        for i in 0..19 {
            assert_eq!(w.count(&file(i), || format!("f{i}"), 10), None);
            // Repeats are not distinct.
            assert_eq!(w.count(&file(i), || format!("f{i}"), 11), None);
        }
        // A new window starts afresh.
        assert_eq!(w.count(&file(19), || "f19".into(), 60), None);
        for i in 0..18 {
            assert_eq!(w.count(&file(i), || format!("f{i}"), 61), None);
        }
        let e = w
            .count(&file(18), || "f18".into(), 62)
            .expect("enumeration");
        assert_eq!((e.dimension, e.distinct), (Dimension::FileAccess, 20));
        assert_eq!(e.samples, ["f19", "f0", "f1", "f2", "f3"]);
        assert_eq!(
            w.count(&file(99), || "f99".into(), 63),
            None,
            "once per run"
        );
    }
}
