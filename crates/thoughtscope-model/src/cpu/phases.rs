//! Where a forward pass spends its time, for `bench forward`: wall time and work of the linear
//! layers, `Q·Kᵀ`, the softmax, `P·V` and the attention sink (sentence averaging), summed over a
//! run. Only forward passes of a model whose [`Kernels::phase_timing`] is on add to them; with it
//! off a timed site costs one branch and no clock read. [`reset`] zeroes the sums before a run.
//!
//! The sums are statics, not fields of the model: they add up the thread time of every rayon
//! worker inside a forward pass, and a measurement tool reads them once after the run, so a handle
//! threaded into every worker would buy nothing. Two timed forwards at once would share them.
//!
//! `Q·Kᵀ` and the softmax run fused, band by band on rayon's threads (the softmax reads the
//! scores while they are in L2), and a sink that splits by head takes each head's rows in the
//! same section, so they have no separate wall times: the section's wall time is split between
//! them in proportion to the thread time each took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Kernels;

/// A timed site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// `linear`: wall time; work = multiply-adds × 2. The MLP's chunked section (`mlp.rs`) counts
    /// here whole, with the residual adds, norms and SiLU·up that run inside it.
    Linear,
    /// The fused `Q·Kᵀ` + softmax section: wall time.
    ScoresAndSoftmax,
    /// `Q·Kᵀ` inside it: thread time; work = multiply-adds × 2 (the whole score rectangle).
    ScoresThread,
    /// The softmax inside it: thread time; work = probabilities computed.
    SoftmaxThread,
    /// `P·V`: wall time; work = multiply-adds × 2.
    Values,
    /// The attention sink (sentence averaging) after the section: wall time; work = bytes of
    /// probabilities handed over.
    Sink,
    /// A sink that splits by head, inside the section: thread time; work = bytes handed over.
    SinkThread,
    /// Element-wise passes over activations (RMSNorm, head split + RoPE, SiLU·up, residual adds):
    /// wall time; work = bytes written.
    Elementwise,
    /// Packing each layer's K and V for the kernels and merging the heads' outputs: wall time;
    /// work = bytes written.
    Layout,
}

const SITES: usize = 9;
static NANOS: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];
static WORK: [AtomicU64; SITES] = [const { AtomicU64::new(0) }; SITES];

/// Zero the sums (before a timed run).
pub fn reset() {
    for i in 0..SITES {
        NANOS[i].store(0, Ordering::Relaxed);
        WORK[i].store(0, Ordering::Relaxed);
    }
}

/// A clock reading when the model times its phases.
#[inline]
pub(crate) fn start(kernels: Kernels) -> Option<Instant> {
    kernels.phase_timing.then(Instant::now)
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

/// The sums since the last [`reset`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Phases {
    /// Linear layers (q/k/v/o, gate/up/down), GFLOP/s; with the MLP's chunked section, which
    /// also runs the residual adds, norms and SiLU·up around it.
    pub linear: PhaseTime,
    /// `Q·Kᵀ`, GFLOP/s (the whole score rectangle of each block, including its masked corner).
    pub scores: PhaseTime,
    /// Causal softmax, G probabilities/s.
    pub softmax: PhaseTime,
    /// `P·V`, GFLOP/s.
    pub values: PhaseTime,
    /// The attention sink (sentence averaging), GB/s of probabilities read.
    pub sink: PhaseTime,
    /// RMSNorm, head split + RoPE, SiLU·up and residual adds, GB/s written.
    pub elementwise: PhaseTime,
    /// K/V packing and the heads' merge, GB/s written.
    pub layout: PhaseTime,
}

impl Phases {
    /// Seconds of all phases together.
    pub fn total_s(&self) -> f64 {
        self.linear.seconds
            + self.scores.seconds
            + self.softmax.seconds
            + self.values.seconds
            + self.sink.seconds
            + self.elementwise.seconds
            + self.layout.seconds
    }

    /// Seconds of the GEMM phases: the linear layers (with the chunked MLP section's adds, norms
    /// and SiLU·up, which run inside it), `Q·Kᵀ` and `P·V`.
    pub fn gemm_s(&self) -> f64 {
        self.linear.seconds + self.scores.seconds + self.values.seconds
    }
}

/// The phases' sums so far.
pub fn snapshot() -> Phases {
    let s = |site: Site| NANOS[site as usize].load(Ordering::Relaxed) as f64 / 1e9;
    let w = |site: Site| WORK[site as usize].load(Ordering::Relaxed) as f64;
    let (scores_thread, softmax_thread, sink_thread) = (s(Site::ScoresThread), s(Site::SoftmaxThread), s(Site::SinkThread));
    let fused = s(Site::ScoresAndSoftmax);
    let threads = scores_thread + softmax_thread + sink_thread;
    let share = |t: f64| if threads > 0.0 { fused * t / threads } else { 0.0 };
    Phases {
        linear: PhaseTime::new(s(Site::Linear), w(Site::Linear), "GFLOP/s"),
        scores: PhaseTime::new(share(scores_thread), w(Site::ScoresThread), "GFLOP/s"),
        softmax: PhaseTime::new(share(softmax_thread), w(Site::SoftmaxThread), "G probabilities/s"),
        values: PhaseTime::new(s(Site::Values), w(Site::Values), "GFLOP/s"),
        sink: PhaseTime::new(s(Site::Sink) + share(sink_thread), w(Site::Sink) + w(Site::SinkThread), "GB/s"),
        elementwise: PhaseTime::new(s(Site::Elementwise), w(Site::Elementwise), "GB/s"),
        layout: PhaseTime::new(s(Site::Layout), w(Site::Layout), "GB/s"),
    }
}
