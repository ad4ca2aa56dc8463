//! Where a forward pass spends its time, for `bench forward`: wall time and work of the linear
//! layers, `Q·Kᵀ`, the softmax, `P·V` and the attention sink (sentence averaging), summed over a
//! run. Off unless [`enable`] is called: each timed site then pays one relaxed atomic load, no
//! clock read.
//!
//! `Q·Kᵀ` and the softmax run fused, band by band on rayon's threads (the softmax reads the
//! scores while they are in L2), so they have no separate wall times: the section's wall time is
//! split between them in proportion to the thread time each took.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// A timed site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// `linear`: wall time; work = multiply-adds × 2.
    Linear,
    /// The fused `Q·Kᵀ` + softmax section: wall time.
    ScoresAndSoftmax,
    /// `Q·Kᵀ` inside it: thread time; work = multiply-adds × 2 (the whole score rectangle).
    ScoresThread,
    /// The softmax inside it: thread time; work = probabilities computed.
    SoftmaxThread,
    /// `P·V`: wall time; work = multiply-adds × 2.
    Values,
    /// The attention sink (sentence averaging): wall time; work = bytes of probabilities handed over.
    Sink,
}

const SITES: usize = 6;
static NANOS: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
static WORK: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];

/// Start (or stop) accumulating; starting also zeroes the sums.
pub fn enable(on: bool) {
    if on {
        for i in 0..SITES {
            NANOS[i].store(0, Ordering::Relaxed);
            WORK[i].store(0, Ordering::Relaxed);
        }
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// A clock reading when timing is on.
#[inline]
pub(crate) fn start() -> Option<Instant> {
    if ENABLED.load(Ordering::Relaxed) {
        Some(Instant::now())
    } else {
        None
    }
}

/// Add the time since `started` (if timing was on then) and `work` to `site`.
#[inline]
pub(crate) fn record(site: Site, started: Option<Instant>, work: u64) {
    if let Some(t) = started {
        NANOS[site as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        WORK[site as usize].fetch_add(work, Ordering::Relaxed);
    }
}

/// One phase's total: seconds, work done, and the rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PhaseTime {
    pub seconds: f64,
    /// In the phase's unit (`unit`).
    pub work: f64,
    /// `work / seconds` in giga-units per second.
    pub rate: f64,
    pub unit: &'static str,
}

impl PhaseTime {
    fn new(seconds: f64, work: f64, unit: &'static str) -> Self {
        Self { seconds, work, rate: if seconds > 0.0 { work / seconds / 1e9 } else { 0.0 }, unit }
    }
}

/// The sums since [`enable`]`(true)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Phases {
    /// Linear layers (q/k/v/o, gate/up/down), GFLOP/s.
    pub linear: PhaseTime,
    /// `Q·Kᵀ`, GFLOP/s (the whole score rectangle of each block, including its masked corner).
    pub scores: PhaseTime,
    /// Causal softmax, G probabilities/s.
    pub softmax: PhaseTime,
    /// `P·V`, GFLOP/s.
    pub values: PhaseTime,
    /// The attention sink (sentence averaging), GB/s of probabilities read.
    pub sink: PhaseTime,
}

impl Phases {
    /// Seconds of all phases together.
    pub fn total_s(&self) -> f64 {
        self.linear.seconds + self.scores.seconds + self.softmax.seconds + self.values.seconds + self.sink.seconds
    }
}

/// The phases' sums so far.
pub fn snapshot() -> Phases {
    let s = |site: Site| NANOS[site as usize].load(Ordering::Relaxed) as f64 / 1e9;
    let w = |site: Site| WORK[site as usize].load(Ordering::Relaxed) as f64;
    let (scores_thread, softmax_thread) = (s(Site::ScoresThread), s(Site::SoftmaxThread));
    let fused = s(Site::ScoresAndSoftmax);
    let share = if scores_thread + softmax_thread > 0.0 { scores_thread / (scores_thread + softmax_thread) } else { 0.5 };
    Phases {
        linear: PhaseTime::new(s(Site::Linear), w(Site::Linear), "GFLOP/s"),
        scores: PhaseTime::new(fused * share, w(Site::ScoresThread), "GFLOP/s"),
        softmax: PhaseTime::new(fused * (1.0 - share), w(Site::SoftmaxThread), "G probabilities/s"),
        values: PhaseTime::new(s(Site::Values), w(Site::Values), "GFLOP/s"),
        sink: PhaseTime::new(s(Site::Sink), w(Site::Sink), "GB/s"),
    }
}
