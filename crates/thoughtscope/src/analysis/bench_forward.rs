//! `thoughtscope bench forward`: one forward pass plus every layer × head's sentence averaging on a
//! real trace cut to a target token count, with wall time and peak RSS, optionally against the
//! Python reference (`scripts/bench_forward_reference.py`: HF transformers eager with
//! `output_attentions` + numpy block means the upstream way) on the same input.
//!
//! Each timed run should have a process to itself so its peak RSS (`VmHWM`) is its own: the
//! binary runs [`bench_forward_once`] in a child process for every run [`bench_forward`] asks for.

use std::path::PathBuf;
use std::time::Instant;

use crate::attention::{sentence_attention, BoundaryMode, Sentences, TokenBounds};
use crate::model::{Loaded, Model, Settings};
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
    /// How the model is loaded and run: the device (the exported inputs are tokenised on the CPU),
    /// the weights, the kernels, and whether the phases (linear, Q·Kᵀ, ...) are timed
    /// (`kernels.phase_timing`; off, the forward runs exactly as outside the bench).
    pub settings: Settings,
    /// Random weights in a real configuration's shapes instead of `model`'s weights (`model`
    /// then only tokenises the text).
    pub random: Option<RandomWeights>,
}

/// `--config <name or config.json> --random-weights --weights-dtype <type>`.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    /// A registry name with an embedded config (`qwen3-4b-thinking-2507`, `qwen-14b`, `llama8`,
    /// ...) or the path of a `config.json`.
    pub config: String,
    pub dtype: crate::model::random::RandomDtype,
    pub seed: u64,
}

impl RandomWeights {
    /// The configuration named by `config`.
    pub(crate) fn resolve_config(&self) -> Result<crate::model::Config> {
        if let Some(config) = crate::model::registry::config(&self.config) {
            return Ok(config?);
        }
        let path = std::path::Path::new(&self.config);
        if path.is_file() {
            return Ok(crate::model::Config::from_json_file(path)?);
        }
        let names: Vec<&str> = crate::model::registry::entries().iter().map(|e| e.name).filter(|n| crate::model::registry::config(n).is_some()).collect();
        Err(Error::invalid(format!("--config {}: neither a config.json file nor one of {}", self.config, names.join(", "))))
    }

    /// A model of the configuration with random weights, tokenising with `tokenizer_model`'s
    /// tokenizer, running on the CPU with `settings`' kernels.
    pub fn load(&self, tokenizer_model: &str, settings: &Settings) -> Result<Loaded> {
        let config = self.resolve_config()?;
        let tokenizer = crate::model::load_tokenizer(tokenizer_model, settings)?;
        let vocab = config.vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(Error::invalid(format!(
                "--config {}: vocabulary of {vocab} is smaller than the tokenizer's ({}); its ids would be out of range",
                self.config,
                tokenizer.vocab_size()
            )));
        }
        let needed = weights_parameters(&config) as f64 * self.dtype.bytes_per_weight();
        if let Some(available) = crate::model::memory::available_memory() {
            if needed > available as f64 {
                return Err(Error::invalid(format!(
                    "--config {} at {:?}: the weights need {:.1} GiB and {:.1} GiB of memory is available (MemAvailable)",
                    self.config,
                    self.dtype,
                    needed / (1u64 << 30) as f64,
                    available as f64 / (1u64 << 30) as f64
                )));
            }
        }
        let mut model = crate::model::random::random_model(config, self.dtype, self.seed)?;
        model.set_kernels(settings.kernels);
        Ok(Loaded {
            model,
            tokenizer,
            name: format!("{}-random-{:?}", self.config, self.dtype).to_lowercase(),
            weights_hash: format!("random-seed-{}", self.seed),
            source: format!("random weights in the shapes of {}", self.config),
            settings: Settings { device: candle_core::Device::Cpu, ..settings.clone() },
        })
    }
}

/// The trace's `full_cot` cut after the last sentence that keeps it within `tokens` tokens, and
/// that text's own full-cot sentences.
pub(crate) fn bench_input(loaded: &Loaded, full_cot: &str, tokens: usize) -> Result<Sentences> {
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

/// CPU seconds this process has used so far, all threads together (Linux with glibc; `None`
/// elsewhere). On a shared machine a run's wall time moves with the load; its CPU time much less.
pub(crate) fn process_cpu_s() -> Option<f64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the struct it is handed.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
        ok.then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub(crate) fn peak_rss_mib() -> Option<f64> {
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
    use crate::model::cpu::phases;
    let load_start = Instant::now();
    let loaded = match &options.random {
        Some(random) => random.load(&options.model, &options.settings)?,
        None => Model::load(&options.model, &options.settings)?,
    };
    let load_s = load_start.elapsed().as_secs_f64();
    let weights = loaded.model.weight_memory();
    let sentences = bench_input(&loaded, &full_cot(&options.trace)?, tokens)?;
    // The model times its phases when the settings ask (`kernels.phase_timing`); only this run adds.
    phases::reset();
    let (start, cpu_start) = (Instant::now(), process_cpu_s());
    let (attention, bounds) = sentence_attention(&loaded, &sentences, BoundaryMode::Prefix)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s().zip(cpu_start).map(|(end, start)| end - start);
    let phases = loaded.model.kernels().phase_timing.then(phases::snapshot);
    // Before the GEMM calibration, whose buffers are not the job's.
    let peak_rss = peak_rss_mib();
    // The token boundaries (every sentence prefix tokenised) are part of the job and of its time;
    // timed again here on their own, after the run (the tokenizer's word cache is warm in both).
    let boundaries_start = Instant::now();
    TokenBounds::compute(&loaded.tokenizer, &sentences, BoundaryMode::Prefix)?;
    let boundaries_s = boundaries_start.elapsed().as_secs_f64();
    // Touch the result so nothing is optimised away.
    let checksum: f64 = attention.data().iter().map(|&x| x as f64).sum();
    let cfg = loaded.model.config();
    let flop = forward_flop(cfg, bounds.n_tokens);
    let own = gemm_gflop_per_s();
    let calibration = if options.settings.device.is_cpu() { Some(GemmCalibration::measure(cfg, bounds.n_tokens)) } else { None };
    let best = calibration.as_ref().and_then(|c| c.best(false));
    let best_cpu = calibration.as_ref().and_then(|c| c.best(true));
    let threads = rayon::current_num_threads() as f64;
    // The forward's CPU time per thread against the best GEMM rate per CPU-second per thread:
    // the roofline with the load's share of the cores taken out of both.
    let over_roofline_cpu = best_cpu.as_ref().zip(cpu_s).map(|(b, cpu)| cpu / threads / (flop / (b.1 * 1e9)));
    let roofline_s = best.as_ref().map(|b| flop / (b.1 * 1e9));
    let split = phases.as_ref().zip(roofline_s).map(|(p, roofline)| RooflineSplit::new(seconds, p.gemm_s(), roofline));
    let mut phase_json = serde_json::to_value(phases)?;
    if let Some(phases) = phases {
        phase_json["boundaries"] = serde_json::json!({ "seconds": boundaries_s, "what": "token boundaries: every sentence prefix tokenised (timed in a second call after the run)" });
        phase_json["other"] = serde_json::json!({ "seconds": seconds - phases.total_s() - boundaries_s, "what": "embeddings, the final norm, allocations, waits between phases" });
        phase_json["load"] = serde_json::json!({ "seconds": load_s });
    }
    let (layers, heads) = (cfg.num_hidden_layers as f64, cfg.num_attention_heads as f64);
    // What HF's `output_attentions=True` holds for this model and length: every layer × head's
    // T × T probabilities, in the dtype the model runs in.
    let hf_attention_gib = |bytes: f64| layers * heads * (bounds.n_tokens as f64).powi(2) * bytes / (1u64 << 30) as f64;
    Ok(serde_json::json!({
        "model": loaded.name,
        "config": cfg.model_type,
        "parameters": weights_parameters(cfg),
        "weights": weights.by_dtype.iter().map(|(k, (n, b))| (k.clone(), serde_json::json!({"tensors": n, "mib": *b as f64 / (1u64 << 20) as f64}))).collect::<serde_json::Map<_, _>>(),
        "weights_resident_mib": weights.total_bytes() as f64 / (1u64 << 20) as f64,
        "hf_output_attentions_gib_bf16": hf_attention_gib(2.0),
        "hf_output_attentions_gib_f32": hf_attention_gib(4.0),
        "seconds_per_1k_tokens": seconds / bounds.n_tokens as f64 * 1000.0,
        "tokens": bounds.n_tokens,
        "sentences": attention.n(),
        "load_s": load_s,
        "forward_and_averaging_s": seconds,
        "forward_and_averaging_cpu_s": cpu_s,
        "peak_rss_mib": peak_rss,
        "checksum": checksum,
        "threads": rayon::current_num_threads(),
        "isa": isa(loaded.model.kernels()),
        "forward_tflop": flop / 1e12,
        "achieved_gflop_per_s": flop / seconds / 1e9,
        "phases": phase_json,
        "gemm": calibration.as_ref().map(GemmCalibration::to_json),
        "best_gemm_gflop_per_s": best.as_ref().map(|b| b.1),
        "best_gemm": best.as_ref().map(|b| b.0.clone()),
        "roofline_s": roofline_s,
        "over_roofline": roofline_s.map(|r| seconds / r),
        "roofline_split": split,
        "best_gemm_gflop_per_cpu_s": best_cpu.as_ref().map(|b| b.1),
        "over_roofline_cpu": over_roofline_cpu,
        // The first bench's figure: against our own GEMM on one shape (flatters us where a reference is faster).
        "gemm_gflop_per_s": own,
        "over_own_gemm_roofline": own.map(|g| seconds / (flop / (g * 1e9))),
    }))
}

/// Where a run's distance to the roofline comes from (needs the phase timers): the GEMM phases
/// against the time their FLOPs take at the best measured rate, and the time outside them
/// (softmax, sink, element-wise passes, layout, the rest), which no GEMM speed removes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct RooflineSplit {
    /// Seconds in the GEMM phases (linear, with the chunked MLP section's adds and norms; `Q·Kᵀ`;
    /// `P·V`).
    pub gemm_s: f64,
    /// The GEMM phases over the roofline: 1.0 means every product ran at the best measured rate.
    pub gemm_over_roofline: f64,
    /// Wall time outside the GEMM phases.
    pub outside_gemm_s: f64,
    /// `(roofline + outside_gemm_s) / roofline`: this run's ratio had every GEMM run at the best
    /// measured rate and everything else taken the time it took.
    pub floor_over_roofline: f64,
}

impl RooflineSplit {
    /// From the run's wall time, its GEMM phases' seconds and the roofline (seconds).
    pub fn new(seconds: f64, gemm_s: f64, roofline_s: f64) -> Self {
        let outside_gemm_s = (seconds - gemm_s).max(0.0);
        Self { gemm_s, gemm_over_roofline: gemm_s / roofline_s, outside_gemm_s, floor_over_roofline: (roofline_s + outside_gemm_s) / roofline_s }
    }
}

/// Weights of the decoder's matrices (embedding and LM head counted once each when untied).
fn weights_parameters(cfg: &crate::model::Config) -> u64 {
    let (d, hd) = (cfg.hidden_size as u64, cfg.head_dim() as u64);
    let (q, kv, inter) = (cfg.num_attention_heads as u64 * hd, cfg.num_kv_heads() as u64 * hd, cfg.intermediate_size as u64);
    let per_layer = d * q + 2 * d * kv + q * d + 3 * d * inter;
    let embeddings = cfg.vocab_size as u64 * d * if cfg.tie_word_embeddings { 1 } else { 2 };
    per_layer * cfg.num_hidden_layers as u64 + embeddings
}

/// Which kernel set a forward with `kernels` runs on.
fn isa(kernels: crate::model::Kernels) -> &'static str {
    use crate::model::cpu::{avx512_enabled, sgemm};
    if kernels.portable || !sgemm::available() {
        "portable"
    } else if avx512_enabled() {
        "avx512"
    } else {
        "avx2"
    }
}

/// The decoder's linear products at `tokens` rows: (name, m, k, n, products per layer), `x · Wᵀ`.
pub(crate) fn linear_shapes(cfg: &crate::model::Config, tokens: usize) -> Vec<(&'static str, usize, usize, usize, usize)> {
    let (d, hd) = (cfg.hidden_size, cfg.head_dim());
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_kv_heads() * hd);
    let inter = cfg.intermediate_size;
    vec![("q", tokens, d, q, 1), ("k,v", tokens, d, kv, 2), ("o", tokens, q, d, 1), ("gate,up", tokens, d, inter, 2), ("down", tokens, inter, d, 1)]
}

/// Side of the square product measured beside the model's shapes.
const SQUARE: usize = 2048;

/// The f32 GEMM rates this host reaches right now, on the same threads: our kernels and (where it
/// is installed) OpenBLAS, on the decoder's linear shapes at the bench's token count and on a
/// 2048³ square, rounds interleaved so that a change in load hits every entry alike; each
/// figure is the median round.
pub(crate) struct GemmCalibration {
    /// Implementation names, in column order.
    pub implementations: Vec<&'static str>,
    /// Per model shape: name, (m, k, n), products per layer, median seconds per implementation.
    pub shapes: Vec<ShapeTimes>,
    /// Median seconds of the square product per implementation.
    pub square_s: Vec<f64>,
    /// As `shapes` and `square_s`, in CPU seconds per thread (the process's CPU time over the
    /// product divided by the thread count), where the platform reports CPU time.
    pub shapes_cpu: Option<Vec<Vec<f64>>>,
    pub square_cpu: Option<Vec<f64>>,
    /// OpenBLAS's kernel family on this CPU, where it is installed.
    pub openblas_core: Option<String>,
}

/// One model shape's timings: name, (m, k, n), products per layer, median seconds per implementation.
pub(crate) type ShapeTimes = (&'static str, (usize, usize, usize), usize, Vec<f64>);

type GemmFn = fn(crate::model::cpu::sgemm::MatRef, crate::model::cpu::sgemm::MatRef, &mut [f32], usize, usize, usize, usize);

impl GemmCalibration {
    fn implementations() -> Vec<(&'static str, GemmFn)> {
        #[allow(unused_mut)]
        let mut list: Vec<(&'static str, GemmFn)> = Vec::new();
        if crate::model::cpu::sgemm::available() {
            list.push(("thoughtscope", crate::model::cpu::sgemm::matmul));
        }
        if crate::model::cpu::blas::available().is_ok() {
            list.push(("openblas", crate::model::cpu::blas::matmul));
        }
        list
    }

    /// Measure (about a second per implementation at 3k tokens).
    pub fn measure(cfg: &crate::model::Config, tokens: usize) -> Self {
        use crate::model::cpu::sgemm::MatRef;
        const ROUNDS: usize = 5;
        let impls = Self::implementations();
        let shapes = linear_shapes(cfg, tokens);
        let (max_m, max_k, max_n) = shapes.iter().fold((SQUARE, SQUARE, SQUARE), |(m, k, n), s| (m.max(s.1), k.max(s.2), n.max(s.3)));
        let fill = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| ((i * seed) % 251) as f32 / 251.0 - 0.5).collect() };
        let (a, b) = (fill(max_m * max_k, 7919), fill(max_k * max_n, 104729));
        let mut c = vec![0f32; max_m * max_n];
        // (m, k, n) of every product timed: the model's shapes, then the square.
        let products: Vec<(usize, usize, usize)> = shapes.iter().map(|s| (s.1, s.2, s.3)).chain([(SQUARE, SQUARE, SQUARE)]).collect();
        let mut times = vec![vec![Vec::new(); impls.len()]; products.len()];
        let mut cpu_times = vec![vec![Vec::new(); impls.len()]; products.len()];
        let threads = rayon::current_num_threads().max(1) as f64;
        // Round 0 warms up (pages, packing buffers, BLAS threads) and is not kept.
        for round in 0..=ROUNDS {
            for (p, &(m, k, n)) in products.iter().enumerate() {
                for (i, (_, run)) in impls.iter().enumerate() {
                    // `x · Wᵀ` as `linear` computes it: W is `n × k` row-major.
                    let (start, cpu_start) = (Instant::now(), process_cpu_s());
                    run(MatRef::row_major(&a[..m * k], k), MatRef::transposed(&b[..n * k], k), &mut c[..m * n], m, n, k, n);
                    let t = start.elapsed().as_secs_f64();
                    let cpu = process_cpu_s().zip(cpu_start).map(|(end, start)| (end - start) / threads);
                    if round > 0 {
                        times[p][i].push(t);
                        cpu_times[p][i].extend(cpu);
                    }
                }
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let medians_of = |times: Vec<Vec<Vec<f64>>>| -> Vec<Vec<f64>> { times.into_iter().map(|per_impl| per_impl.into_iter().map(median).collect()).collect() };
        let mut medians = medians_of(times);
        let square_s = medians.pop().unwrap_or_default();
        let complete = cpu_times.iter().flatten().all(|t| t.len() == ROUNDS);
        let (shapes_cpu, square_cpu) = if complete {
            let mut cpu = medians_of(cpu_times);
            let square = cpu.pop();
            (Some(cpu), square)
        } else {
            (None, None)
        };
        let openblas_core = crate::model::cpu::blas::core_name();
        Self {
            implementations: impls.iter().map(|i| i.0).collect(),
            shapes: shapes.iter().zip(medians).map(|(s, t)| (s.0, (s.1, s.2, s.3), s.4, t)).collect(),
            square_s,
            shapes_cpu,
            square_cpu,
            openblas_core,
        }
    }

    /// GFLOP/s of implementation `i` over one layer's linear products (each shape weighted by its
    /// count: the rate the forward's linear layers could reach); per CPU-second per thread with
    /// `cpu` (NaN where CPU time is not available).
    pub(crate) fn model_rate(&self, i: usize, cpu: bool) -> f64 {
        let flop: f64 = self.shapes.iter().map(|(_, (m, k, n), count, _)| (2 * m * k * n * count) as f64).sum();
        let seconds: f64 = match (cpu, &self.shapes_cpu) {
            (false, _) => self.shapes.iter().map(|(_, _, count, t)| t[i] * *count as f64).sum(),
            (true, Some(cpu)) => self.shapes.iter().zip(cpu).map(|((_, _, count, _), t)| t[i] * *count as f64).sum(),
            (true, None) => f64::NAN,
        };
        flop / seconds / 1e9
    }

    /// GFLOP/s of implementation `i` on the square product (per CPU-second per thread with `cpu`).
    pub(crate) fn square_rate(&self, i: usize, cpu: bool) -> f64 {
        let seconds = if cpu { self.square_cpu.as_ref().map_or(f64::NAN, |t| t[i]) } else { self.square_s[i] };
        2.0 * (SQUARE as f64).powi(3) / seconds / 1e9
    }

    /// The best rate measured and where: ("openblas on the model's shapes", 250.0).
    pub fn best(&self, cpu: bool) -> Option<(String, f64)> {
        (0..self.implementations.len())
            .flat_map(|i| {
                let name = self.implementations[i];
                [(format!("{name} on the model's shapes"), self.model_rate(i, cpu)), (format!("{name} on {SQUARE}³"), self.square_rate(i, cpu))]
            })
            .filter(|b| b.1.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    pub fn to_json(&self) -> serde_json::Value {
        let per_impl = |f: &dyn Fn(usize) -> f64| -> serde_json::Value {
            self.implementations.iter().enumerate().map(|(i, name)| (name.to_string(), serde_json::json!(f(i)))).collect::<serde_json::Map<_, _>>().into()
        };
        let shapes: Vec<serde_json::Value> = self
            .shapes
            .iter()
            .enumerate()
            .map(|(s, (name, (m, k, n), count, t))| {
                let flop = 2.0 * (m * k * n) as f64;
                let cpu = |i: usize| self.shapes_cpu.as_ref().map_or(f64::NAN, |c| flop / c[s][i] / 1e9);
                serde_json::json!({
                    "shape": name, "m": m, "k": k, "n": n, "per_layer": count,
                    "gflop_per_s": per_impl(&|i| flop / t[i] / 1e9),
                    "gflop_per_cpu_s": per_impl(&cpu),
                })
            })
            .collect();
        let mut json = serde_json::json!({
            "threads": rayon::current_num_threads(),
            "model_shapes": shapes,
            "model_shapes_gflop_per_s": per_impl(&|i| self.model_rate(i, false)),
            "square_2048_gflop_per_s": per_impl(&|i| self.square_rate(i, false)),
            "model_shapes_gflop_per_cpu_s": per_impl(&|i| self.model_rate(i, true)),
            "square_2048_gflop_per_cpu_s": per_impl(&|i| self.square_rate(i, true)),
            "openblas_core": self.openblas_core,
        });
        if let (Some(ours), true) = (self.implementations.iter().position(|&n| n == "thoughtscope"), self.implementations.len() > 1) {
            let best_other = |cpu| (0..self.implementations.len()).filter(|&i| i != ours).map(|i| self.model_rate(i, cpu)).fold(0.0, f64::max);
            json["ours_over_best_reference_on_model_shapes"] = serde_json::json!(self.model_rate(ours, false) / best_other(false));
            json["ours_over_best_reference_on_model_shapes_cpu"] = serde_json::json!(self.model_rate(ours, true) / best_other(true));
        }
        json
    }
}

/// Multiply-adds ×2 of one forward pass without the LM head: the linear layers, and causal
/// attention (`Q·Kᵀ` and `P·V` over the keys each query sees, `T(T+1)/2` pairs per head).
pub(crate) fn forward_flop(cfg: &crate::model::Config, tokens: usize) -> f64 {
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

/// The roofline with torch's matmul rate among the references (measured by the Python reference
/// on the same shapes, in its own process: not the same moment as ours, so the report says so).
fn add_torch_gemm(entry: &mut serde_json::Value, ours: &serde_json::Value, theirs: &serde_json::Value) {
    let torch = &theirs["torch_matmul"];
    let (Some(torch_model), Some(torch_square)) = (torch["model_shapes_gflop_per_s"].as_f64(), torch["square_2048_gflop_per_s"].as_f64()) else {
        return;
    };
    entry["torch_model_shapes_gflop_per_s"] = serde_json::json!(torch_model);
    entry["torch_square_2048_gflop_per_s"] = serde_json::json!(torch_square);
    let own_best = ours["best_gemm_gflop_per_s"].as_f64().unwrap_or(0.0);
    let best = own_best.max(torch_model).max(torch_square);
    entry["best_gemm_with_torch_gflop_per_s"] = serde_json::json!(best);
    if let (Some(s), Some(tflop)) = (ours["forward_and_averaging_s"].as_f64(), ours["forward_tflop"].as_f64()) {
        entry["over_roofline_with_torch"] = serde_json::json!(s / (tflop * 1e12 / (best * 1e9)));
    }
    let rates = &ours["gemm"]["model_shapes_gflop_per_s"];
    if let Some(mine) = rates["thoughtscope"].as_f64() {
        let reference = rates["openblas"].as_f64().unwrap_or(0.0).max(torch_model);
        entry["ours_over_best_reference_on_model_shapes_with_torch"] = serde_json::json!(mine / reference);
    }
    if let (Some(model), Some(square)) = (torch["model_shapes_gflop_per_cpu_s"].as_f64(), torch["square_2048_gflop_per_cpu_s"].as_f64()) {
        let best = ours["best_gemm_gflop_per_cpu_s"].as_f64().unwrap_or(0.0).max(model).max(square);
        entry["best_gemm_with_torch_gflop_per_cpu_s"] = serde_json::json!(best);
        let (cpu, threads, tflop) = (ours["forward_and_averaging_cpu_s"].as_f64(), ours["threads"].as_f64(), ours["forward_tflop"].as_f64());
        if let (Some(cpu), Some(threads), Some(tflop)) = (cpu, threads, tflop) {
            entry["over_roofline_cpu_with_torch"] = serde_json::json!(cpu / threads / (tflop * 1e12 / (best * 1e9)));
        }
        if let Some(mine) = ours["gemm"]["model_shapes_gflop_per_cpu_s"]["thoughtscope"].as_f64() {
            let reference = ours["gemm"]["model_shapes_gflop_per_cpu_s"]["openblas"].as_f64().unwrap_or(0.0).max(model);
            entry["ours_over_best_reference_on_model_shapes_cpu_with_torch"] = serde_json::json!(mine / reference);
        }
    }
    entry["torch_note"] = serde_json::json!("torch's rates come from the Python reference's process, measured just before its forward pass: another moment's load than ours (the _cpu figures depend on it less)");
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
        let loaded = Model::load(&options.model, &Settings { device: candle_core::Device::Cpu, ..options.settings.clone() })?;
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
                let mut entry = serde_json::json!({
                    "tokens": t,
                    "python_tokens": python_tokens,
                    "checksum_rel_diff": checksum_rel_diff,
                    "speedup": ratio("forward_and_averaging_s", "forward_plus_averaging_s"),
                    "python_peak_rss_over_ours": theirs["peak_rss_gb"].as_f64().zip(ours["peak_rss_mib"].as_f64()).map(|(p, o)| p * 1024.0 / o),
                });
                add_torch_gemm(&mut entry, &ours, theirs);
                ratios.push(entry);
            }
        }
        report["python_reference"] = reference;
        report["ratios"] = serde_json::Value::Array(ratios);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::RooflineSplit;

    #[test]
    fn roofline_split_separates_gemm_time_from_the_rest() {
        // 3.3 s wall, 2.8 s in GEMM phases, 2.3 s of GEMM work at the best rate.
        let split = RooflineSplit::new(3.3, 2.8, 2.3);
        assert!((split.outside_gemm_s - 0.5).abs() < 1e-12);
        assert!((split.gemm_over_roofline - 2.8 / 2.3).abs() < 1e-12);
        assert!((split.floor_over_roofline - 2.8 / 2.3).abs() < 1e-12);
        // Phase timers summing past the wall time (clock skew) never give a floor below 1.
        let split = RooflineSplit::new(2.0, 2.1, 2.0);
        assert_eq!((split.outside_gemm_s, split.floor_over_roofline), (0.0, 1.0));
    }
}
