//! `thoughtscope bench analysis`: times sentence averaging and vertical scores on fixed random
//! inputs, and can write those inputs (plus our results and timings) for
//! `scripts/bench_analysis_numpy.py`, which times the upstream numpy implementations
//! (`_compute_averaged_matrix`'s loop of block means, `get_vertical_scores` with scipy
//! `rankdata`) on the same data and checks that the numbers agree.
//!
//! Inputs (seeded ChaCha8): `distinct` causal attention matrices `T × T` (BOS-heavy rows of random
//! weights, normalised), N contiguous sentences between a prompt and an answer of T/20 tokens
//! each; head `k` of the `heads` timed uses matrix `k % distinct`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::attention::{average_matrix, AttentionBlock, AttentionSink, SentenceAverager};
use crate::io::npy;
use crate::scores::{vertical_scores, VerticalOptions};
use crate::{Error, Result};

/// Sizes of the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Sequence length T.
    pub tokens: usize,
    /// Sentences N.
    pub sentences: usize,
    /// Heads timed (L × H).
    pub heads: usize,
    /// Distinct attention matrices the heads cycle through (memory: `distinct · T² · 4` bytes).
    pub distinct: usize,
    pub seed: u64,
    /// Write inputs, results and timings here for the numpy script.
    pub write_inputs: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { tokens: 3000, sentences: 150, heads: 270, distinct: 6, seed: 0, write_inputs: None }
    }
}

/// Seconds per stage for all `heads`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tokens: usize,
    pub sentences: usize,
    pub heads: usize,
    /// `average_matrix` per head, one after another (one thread, like the numpy loop).
    pub averaging_sequential_s: f64,
    /// The streaming [`SentenceAverager`] fed `distinct` heads per block (heads in parallel).
    pub averaging_sink_s: f64,
    /// Vertical scores, `p = 4`, no depth control, mean (the released setting).
    pub vertical_s: f64,
    /// Vertical scores, `p = 4`, depth control (rank normalisation), mean.
    pub vertical_depth_s: f64,
    /// Threads available to the sink.
    pub threads: usize,
}

/// Build the inputs, run the timings, optionally write everything for the numpy script.
pub fn bench_analysis(options: &BenchOptions) -> Result<BenchReport> {
    let BenchOptions { tokens: t, sentences: n, heads, distinct, seed, .. } = options.clone();
    if t < 40 || n == 0 || n > t / 2 || distinct == 0 || heads == 0 {
        return Err(Error::invalid(format!(
            "bench: need T ≥ 40, 0 < N ≤ T/2, heads and distinct > 0 (got T {t}, N {n}, heads {heads}, distinct {distinct})"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bounds = random_bounds(&mut rng, t, n);
    let matrices: Vec<f32> = (0..distinct).flat_map(|_| random_attention(&mut rng, t)).collect();
    let matrix = |k: usize| &matrices[(k % distinct) * t * t..(k % distinct + 1) * t * t];

    // Averaging, one head after another.
    let start = Instant::now();
    let mut averaged = Vec::with_capacity(heads * n * n);
    for k in 0..heads {
        averaged.extend(average_matrix(matrix(k), t, &bounds)?);
    }
    let averaging_sequential_s = start.elapsed().as_secs_f64();

    // Averaging through the sink: `distinct` heads per layer, whole matrices as one block.
    let layers = heads.div_ceil(distinct);
    let start = Instant::now();
    let mut sink = SentenceAverager::new(bounds.clone(), layers, distinct);
    for layer in 0..layers {
        sink.consume(AttentionBlock { layer, q_start: 0, heads: distinct, rows: t, kv_len: t, total_keys: t, probs: &matrices })?;
    }
    let streamed = sink.finish()?;
    let averaging_sink_s = start.elapsed().as_secs_f64();
    if streamed.data()[..heads * n * n] != averaged[..] {
        return Err(Error::Other("bench: sink and average_matrix disagree".into()));
    }

    let released = VerticalOptions::default();
    let depth = VerticalOptions { control_depth: true, ..released };
    let time_scores = |opts: &VerticalOptions| -> Result<(f64, Vec<f64>)> {
        let start = Instant::now();
        let mut all = Vec::with_capacity(heads * n);
        for k in 0..heads {
            all.extend(vertical_scores(&averaged[k * n * n..(k + 1) * n * n], n, opts)?.values);
        }
        Ok((start.elapsed().as_secs_f64(), all))
    };
    let (vertical_s, scores) = time_scores(&released)?;
    let (vertical_depth_s, depth_scores) = time_scores(&depth)?;

    let report = BenchReport {
        tokens: t,
        sentences: n,
        heads,
        averaging_sequential_s,
        averaging_sink_s,
        vertical_s,
        vertical_depth_s,
        threads: rayon::current_num_threads(),
    };
    if let Some(dir) = &options.write_inputs {
        write_inputs(dir, options, &bounds, &matrices, &averaged, &scores, &depth_scores, &report)?;
    }
    Ok(report)
}

/// N contiguous sentences between a prompt and an answer of T/20 tokens each.
fn random_bounds(rng: &mut ChaCha8Rng, t: usize, n: usize) -> Vec<(usize, usize)> {
    let (first, last) = (t / 20, t - t / 20);
    let mut cuts: Vec<usize> = Vec::with_capacity(n + 1);
    while cuts.len() < n - 1 {
        let c = rng.random_range(first + 1..last);
        if !cuts.contains(&c) {
            cuts.push(c);
        }
    }
    cuts.push(first);
    cuts.push(last);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// A causal attention matrix: row q has random weights on keys 0..=q, BOS weighted 20×.
fn random_attention(rng: &mut ChaCha8Rng, t: usize) -> Vec<f32> {
    let mut m = vec![0f32; t * t];
    let mut weights = vec![0f64; t];
    for q in 0..t {
        for (k, w) in weights[..=q].iter_mut().enumerate() {
            let u: f64 = rng.random();
            *w = u * u * u * if k == 0 { 20.0 * (q as f64 + 1.0).sqrt() } else { 1.0 };
        }
        let total: f64 = weights[..=q].iter().sum();
        for k in 0..=q {
            m[q * t + k] = (weights[k] / total) as f32;
        }
    }
    m
}

#[allow(clippy::too_many_arguments)]
fn write_inputs(
    dir: &Path,
    options: &BenchOptions,
    bounds: &[(usize, usize)],
    matrices: &[f32],
    averaged: &[f32],
    scores: &[f64],
    depth_scores: &[f64],
    report: &BenchReport,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (t, n, heads) = (options.tokens, options.sentences, options.heads);
    npy::write_f32(&dir.join("attention.npy"), &[options.distinct, t, t], matrices)?;
    npy::write_f32(&dir.join("averaged.npy"), &[heads, n, n], averaged)?;
    let narrow: Vec<f32> = scores.iter().map(|&v| v as f32).collect();
    npy::write_f32(&dir.join("vertical_p4.npy"), &[heads, n], &narrow)?;
    npy::write_f64(&dir.join("vertical_p4_depth.npy"), &[heads, n], depth_scores)?;
    let meta = serde_json::json!({
        "bounds": bounds,
        "heads": heads,
        "distinct": options.distinct,
        "rust": report,
    });
    let path = dir.join("bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&meta)?).map_err(|e| Error::io(&path, e))
}
