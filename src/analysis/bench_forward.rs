//! `thoughtscope bench forward`: one forward pass plus every layer × head's sentence averaging on a
//! real trace cut to a target token count, with wall time and peak RSS, optionally against the
//! Python reference (`scripts/bench_forward_reference.py`: HF transformers eager with
//! `output_attentions` + numpy block means the upstream way) on the same input.
//!
//! Each timed run should have a process to itself so its peak RSS (`VmHWM`) is its own: the
//! binary runs [`bench_forward_once`] in a child process for every run [`bench_forward`] asks for.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;

use crate::attention::{sentence_attention, BoundaryMode, Sentences, TokenBounds};
use crate::model::{Loaded, Model};
use crate::rollout::Rollout;
use crate::{Error, Result};

/// Settings of [`bench_forward`].
#[derive(Debug, Clone)]
pub struct BenchForwardOptions {
    /// Rollout/problem directory whose `base_solution.full_cot` is the text.
    pub trace: PathBuf,
    pub model: String,
    /// Target token counts; the text is cut at the last sentence that fits.
    pub tokens: Vec<usize>,
    /// Write the exact inputs (text and sentences per size) here for the Python reference.
    pub export_inputs: Option<PathBuf>,
    /// JSON printed by the Python reference on the same inputs; adds ratios.
    pub reference: Option<PathBuf>,
    /// Timed runs per size; the report gives the median and every run.
    pub repeat: usize,
    /// Where the forward pass runs (the exported inputs are tokenised on the CPU).
    pub device: Device,
}

/// The trace's `full_cot` cut after the last sentence that keeps it within `tokens` tokens, and
/// that text's own full-cot sentences.
pub fn bench_input(loaded: &Loaded, full_cot: &str, tokens: usize) -> Result<Sentences> {
    let all = Sentences::from_full_cot(full_cot)?;
    let chars: Vec<char> = all.text.chars().collect();
    let mut best = None;
    let (mut lo, mut hi) = (1usize, all.len());
    // Binary search on the number of sentences kept (token count grows with it).
    while lo <= hi {
        let k = (lo + hi) / 2;
        let end = all.ranges[k - 1].1;
        let text: String = chars[..end].iter().collect();
        if loaded.tokenizer.encode(&text)?.len() <= tokens {
            best = Some((k, text));
            lo = k + 1;
        } else {
            hi = k - 1;
        }
    }
    let (_, text) = best.ok_or_else(|| Error::invalid(format!("no sentence prefix fits in {tokens} tokens")))?;
    // Segment the cut text itself, as upstream would (and the Python reference does).
    Sentences::from_full_cot(&text)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn full_cot(trace: &std::path::Path) -> Result<String> {
    let rollout = Rollout::open(trace)?;
    Ok(rollout.full_cot)
}

/// One timed run at `tokens` in this process: load, cut the text, forward pass and averaging.
/// Its `peak_rss_mib` is this process's, so [`bench_forward`] runs each in a fresh process.
pub fn bench_forward_once(options: &BenchForwardOptions, tokens: usize) -> Result<serde_json::Value> {
    let load_start = Instant::now();
    let loaded = Model::load(&options.model, &options.device)?;
    let load_s = load_start.elapsed().as_secs_f64();
    let sentences = bench_input(&loaded, &full_cot(&options.trace)?, tokens)?;
    let start = Instant::now();
    let (attention, bounds) = sentence_attention(&loaded, &sentences, BoundaryMode::Prefix)?;
    let seconds = start.elapsed().as_secs_f64();
    // Touch the result so nothing is optimised away.
    let checksum: f64 = attention.data().iter().map(|&x| x as f64).sum();
    let flop = forward_flop(loaded.model.config(), bounds.n_tokens);
    let gemm = gemm_gflop_per_s();
    Ok(serde_json::json!({
        "tokens": bounds.n_tokens,
        "sentences": attention.n(),
        "load_s": load_s,
        "forward_and_averaging_s": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "checksum": checksum,
        "threads": rayon::current_num_threads(),
        "forward_tflop": flop / 1e12,
        "achieved_gflop_per_s": flop / seconds / 1e9,
        "gemm_gflop_per_s": gemm,
        "roofline_s": gemm.map(|g| flop / (g * 1e9)),
        "over_roofline": gemm.map(|g| seconds / (flop / (g * 1e9))),
    }))
}

/// Multiply-adds ×2 of one forward pass without the LM head: the linear layers, and causal
/// attention (`Q·Kᵀ` and `P·V` over the keys each query sees, `T(T+1)/2` pairs per head).
pub fn forward_flop(cfg: &crate::model::Config, tokens: usize) -> f64 {
    let (d, hd) = (cfg.hidden_size as f64, cfg.head_dim() as f64);
    let (h, h_kv) = (cfg.num_attention_heads as f64, cfg.num_kv_heads() as f64);
    let linear_per_token = d * h * hd * 2.0 + d * h_kv * hd * 2.0 + 3.0 * d * cfg.intermediate_size as f64;
    let t = tokens as f64;
    let attention = 2.0 * h * hd * t * (t + 1.0) / 2.0;
    cfg.num_hidden_layers as f64 * 2.0 * (linear_per_token * t + attention)
}

/// f32 GEMM throughput of this machine right now, on the decoder's largest product shape (3000 ×
/// 576 by 576 × 1536): the roofline the forward time is compared with. `None` on CPUs
/// without `sgemm`'s kernels (the forward does not use them there).
fn gemm_gflop_per_s() -> Option<f64> {
    use crate::model::cpu::sgemm::{self, MatRef};
    if !sgemm::available() {
        return None;
    }
    let (m, k, n) = (3000, 576, 1536);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0f32; m * n];
    let run = |c: &mut [f32]| sgemm::matmul(MatRef::row_major(&a, k), MatRef::transposed(&b, k), c, m, n, k, n);
    run(&mut c);
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        run(&mut c);
    }
    Some(2.0 * (m * n * k * reps) as f64 / start.elapsed().as_secs_f64() / 1e9)
}

/// The run with the median time, with every run's time added (`runs_s`).
fn median_run(mut runs: Vec<serde_json::Value>) -> serde_json::Value {
    let key = |r: &serde_json::Value| r["forward_and_averaging_s"].as_f64().unwrap_or(f64::NAN);
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let times: Vec<f64> = runs.iter().map(key).collect();
    let mut median = runs.swap_remove(runs.len() / 2);
    median["runs_s"] = serde_json::json!(times);
    median
}

/// Run the bench; returns the JSON report. `run_once(tokens)` makes one timed run (the
/// binary runs [`bench_forward_once`] in a child process, so each run's peak RSS is its own).
pub fn bench_forward(
    options: &BenchForwardOptions,
    run_once: &mut dyn FnMut(usize) -> Result<serde_json::Value>,
) -> Result<serde_json::Value> {
    if let Some(path) = &options.export_inputs {
        let loaded = Model::load(&options.model, &Device::Cpu)?;
        let cot = full_cot(&options.trace)?;
        let mut inputs = Vec::new();
        for &t in &options.tokens {
            let s = bench_input(&loaded, &cot, t)?;
            // Our token ids and sentence boundaries too: the reference can run on exactly this
            // input (HF's GGUF tokenizer splits some texts differently, see the README).
            let ids = loaded.tokenizer.encode(&s.text)?;
            let bounds = TokenBounds::compute(&loaded.tokenizer, &s, BoundaryMode::Prefix)?;
            inputs.push(serde_json::json!({
                "target_tokens": t,
                "text": s.text,
                "sentences": s.sentences.len(),
                "input_ids": ids,
                "token_bounds": bounds.ranges,
            }));
        }
        let json = serde_json::to_vec_pretty(&inputs)?;
        std::fs::write(path, json).map_err(|e| Error::io(path, e))?;
    }
    let mut runs = Vec::new();
    for &t in &options.tokens {
        let repeats = (0..options.repeat.max(1)).map(|_| run_once(t)).collect::<Result<Vec<_>>>()?;
        runs.push(median_run(repeats));
    }
    let mut report = serde_json::json!({ "thoughtscope": runs });
    if let Some(path) = &options.reference {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let reference: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        let mut ratios = Vec::new();
        for ours in report["thoughtscope"].as_array().cloned().unwrap_or_default() {
            // The reference is one run (a JSON object) or several (`{"runs": [...]}`); match by size.
            let runs = reference["runs"].as_array().cloned().unwrap_or_else(|| vec![reference.clone()]);
            let t = ours["tokens"].as_u64().unwrap_or(0);
            let theirs = runs.iter().min_by_key(|x| x["tokens"].as_u64().unwrap_or(0).abs_diff(t));
            if let Some(theirs) = theirs {
                let ratio = |a: &str, b: &str| -> Option<f64> { Some(theirs[b].as_f64()? / ours[a].as_f64()?) };
                let python_tokens = theirs["tokens"].as_u64();
                // On the same tokens and boundaries both sums of all sentence matrices agree.
                let checksum_rel_diff = ours["checksum"].as_f64().zip(theirs["sum_of_all_sentence_matrices"].as_f64()).map(|(o, p)| (o - p).abs() / p.abs().max(f64::MIN_POSITIVE));
                ratios.push(serde_json::json!({
                    "tokens": t,
                    "python_tokens": python_tokens,
                    "checksum_rel_diff": checksum_rel_diff,
                    "speedup": ratio("forward_and_averaging_s", "forward_plus_averaging_s"),
                    "python_peak_rss_over_ours": theirs["peak_rss_gb"].as_f64().zip(ours["peak_rss_mib"].as_f64()).map(|(p, o)| p * 1024.0 / o),
                }));
            }
        }
        report["python_reference"] = reference;
        report["ratios"] = serde_json::Value::Array(ratios);
    }
    Ok(report)
}
