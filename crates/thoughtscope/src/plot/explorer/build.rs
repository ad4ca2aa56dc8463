//! Building an [`Explorer`] from a problem directory: what exists is read, what does not is
//! listed with the command that makes it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Alternative, Explorer, Matrix, Missing};
use crate::attention::cache::MANIFEST_FILE;
use crate::attention::{
    read_entry_dir, read_entry_token_pairs, sentence_attention_with_token_pairs, BoundaryMode, SentenceAttention, SentenceMode, Sentences,
    TokenPairOptions, TokenPairsToStore,
};
use crate::io::npy;
use crate::model::Loaded;
use crate::rollout::{misaligned_labels, read_chunks_file, read_labels_file, ChunkLabel, Rollout};
use crate::scores::{head_kurtosis, head_vertical_scores, receiver_scores, top_k_heads, HeadScores, VerticalOptions};
use crate::{Error, Result};

/// Per-chunk numbers of thought-anchors' `chunks_labeled.json` (`analyze_rollouts.py`) shown
/// when present: `(field, label, description)`.
pub(crate) const RESAMPLING_FIELDS: &[(&str, &str, &str)] = &[
    ("accuracy", "accuracy after the chunk", "share of resampled continuations from this chunk with the correct answer"),
    ("resampling_importance_accuracy", "resampling importance (accuracy)", "accuracy change when this chunk is resampled"),
    ("resampling_importance_kl", "resampling importance (KL)", "KL between answer distributions with and without resampling this chunk"),
    (
        "counterfactual_importance_accuracy",
        "counterfactual importance (accuracy)",
        "accuracy change over resamples whose chunk differs in meaning",
    ),
    ("counterfactual_importance_kl", "counterfactual importance (KL)", "answer-distribution KL over resamples whose chunk differs in meaning"),
    ("forced_importance_accuracy", "forced-answer importance (accuracy)", "accuracy change when the answer is forced after this chunk"),
    ("forced_importance_kl", "forced-answer importance (KL)", "answer-distribution KL when the answer is forced after this chunk"),
    ("different_trajectories_fraction", "different-trajectories fraction", "share of resamples whose chunk differs in meaning"),
    ("overdeterminedness", "overdeterminedness", "share of resamples that repeat the chunk's meaning"),
];

/// What to read and how much to keep.
#[derive(Debug, Clone)]
pub struct ExplorerOptions {
    /// Model whose cached attention is shown (registry name, GGUF file, HF directory or hub id);
    /// `None`: no attention.
    pub model: Option<String>,
    /// Attention cache root.
    pub cache_dir: PathBuf,
    pub mode: SentenceMode,
    /// A `thoughtscope suppress` output folder; `None`: `<problem_dir>/suppression` when it holds
    /// one.
    pub suppression_dir: Option<PathBuf>,
    /// Receiver heads selected by kurtosis (upstream top 20).
    pub top_k: usize,
    /// Receiver heads given (e.g. `thoughtscope receiver-heads` over a corpus) instead of selected
    /// from this trace alone.
    pub receiver_heads: Option<Vec<(usize, usize)>>,
    /// Heads shown as well (their matrix and vertical scores).
    pub heads: Vec<(usize, usize)>,
    /// Single-head matrices kept (`heads` first, then the top receiver heads): the size budget.
    pub max_head_matrices: usize,
    /// Vertical-score options (released defaults: `p = 4`, no depth control, mean).
    pub vertical: VerticalOptions,
    /// Resampled alternatives kept per chunk (0: `chunk_<k>/solutions.json` not read).
    pub max_alternatives: usize,
    /// Tag of the VA colouring.
    pub va_tag: String,
    /// Heads in the token view (`heads` first, then the top receiver heads), from a forward
    /// pass ([`Explorer::from_problem_dir_with_model`]) or from the token pairs stored in the
    /// cache entry ([`ExplorerOptions::token_pairs_to_store`]); 0: no token view.
    pub token_heads: usize,
    /// Tokens kept per sentence on each side of a token-view pair.
    pub token_max: usize,
    /// Token boundaries of that forward pass.
    pub boundary_mode: BoundaryMode,
}

impl Default for ExplorerOptions {
    fn default() -> Self {
        ExplorerOptions {
            model: None,
            cache_dir: PathBuf::from("attn_cache"),
            mode: SentenceMode::Chunks,
            suppression_dir: None,
            top_k: 20,
            receiver_heads: None,
            heads: Vec::new(),
            max_head_matrices: 4,
            vertical: VerticalOptions::default(),
            max_alternatives: 5,
            va_tag: crate::rollout::tagger::VA_TAG.into(),
            token_heads: 4,
            token_max: 16,
            boundary_mode: BoundaryMode::Prefix,
        }
    }
}

impl ExplorerOptions {
    /// The receiver heads of a trace with these options: those given, else the `top_k` by
    /// kurtosis of its vertical scores.
    fn receiver_heads_of(&self, scores: &HeadScores) -> Vec<(usize, usize)> {
        match &self.receiver_heads {
            Some(given) => given.clone(),
            None => top_k_heads(&head_kurtosis(scores), self.top_k),
        }
    }

    /// The token view's heads: those asked for, then the receiver heads, at most `token_heads`.
    fn token_view_heads(&self, receivers: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut heads: Vec<(usize, usize)> = Vec::new();
        for &head in self.heads.iter().chain(receivers) {
            if heads.len() < self.token_heads && !heads.contains(&head) {
                heads.push(head);
            }
        }
        heads
    }

    /// What a cache fill stores so that a page made later from the cache with these options has
    /// the same token view as [`Explorer::from_problem_dir_with_model`]: the pairs of the heads
    /// the page would show (chosen from the pass's sentence attention exactly as the page
    /// chooses them from the entry), `token_max` tokens on each side. `None` when `token_heads`
    /// or `token_max` is 0. At N = 300, 4 heads × 16 tokens is at most 307,200 float32 values
    /// (1.2 MB) and the tokens.
    pub fn token_pairs_to_store(&self) -> Option<TokenPairsToStore> {
        if self.token_heads == 0 || self.token_max == 0 {
            return None;
        }
        let options = self.clone();
        let receivers = match &self.receiver_heads {
            Some(given) => format!("the {} receiver heads given", given.len()),
            None => format!(
                "the top receiver heads by kurtosis of this trace's vertical scores (proximity_ignore {}, control_depth {}, {})",
                self.vertical.proximity_ignore,
                self.vertical.control_depth,
                self.vertical.score_type
            ),
        };
        let asked = if self.heads.is_empty() {
            String::new()
        } else {
            format!("heads {} first, then ", self.heads.iter().map(|(l, h)| format!("{l}.{h}")).collect::<Vec<_>>().join(","))
        };
        Some(TokenPairsToStore {
            max_tokens: self.token_max,
            selection: format!("{asked}{receivers}: the first {} (the trace explorer's token view)", self.token_heads),
            choose: std::sync::Arc::new(move |attention: &SentenceAttention| {
                let scores = head_vertical_scores(attention, &options.vertical);
                options.token_view_heads(&options.receiver_heads_of(&scores))
            }),
            add_to_existing: false,
        })
    }
}

fn shell_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

impl Explorer {
    /// Read everything that exists for `dir` (see the module doc); the attention from the cache.
    pub fn from_problem_dir(dir: impl AsRef<Path>, options: &ExplorerOptions) -> Result<Explorer> {
        build(dir.as_ref(), options, None)
    }

    /// As [`Explorer::from_problem_dir`], but the attention comes from one forward pass of
    /// `loaded` over the trace (the cache is not read): the sentence matrices and the token view
    /// ([`super::TokenView`]) are that pass's numbers.
    pub fn from_problem_dir_with_model(dir: impl AsRef<Path>, options: &ExplorerOptions, loaded: &Loaded) -> Result<Explorer> {
        build(dir.as_ref(), options, Some(loaded))
    }
}

fn build(dir: &Path, options: &ExplorerOptions, loaded: Option<&Loaded>) -> Result<Explorer> {
    let (sentences, labels) = read_sentences(dir, options.mode)?;
    if sentences.is_empty() {
        return Err(Error::format(dir, "no sentences to show"));
    }
    let n = sentences.len();
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let title = format!("{name} — trace explorer");
    let mut explorer = Explorer::new(title, sentences.sentences.clone());
    explorer.source = dir.display().to_string();
    explorer.mode = options.mode.as_str().into();
    explorer.va_tag = options.va_tag.clone();
    let mode_flag = format!("--mode {}", options.mode.as_str());
    let dir_arg = shell_path(dir);

    // Tags and the per-chunk resampling numbers (chunks_labeled.json).
    let labels_path = dir.join("chunks_labeled.json");
    match &labels {
        Some(labels) => {
            for (k, label) in labels.iter().take(n).enumerate() {
                explorer.tags[k] = label.tags.clone();
            }
            if labels.len() != n {
                explorer.notes.push(format!(
                    "chunks_labeled.json has {} entries for {n} sentences: entry k labels sentence k",
                    labels.len()
                ));
            }
            let misaligned = misaligned_labels(labels, &sentences);
            if !misaligned.is_empty() {
                explorer.notes.push(format!(
                    "{} label entr{} of chunks_labeled.json differ from their sentence's text (first: {})",
                    misaligned.len(),
                    if misaligned.len() == 1 { "y" } else { "ies" },
                    misaligned[0]
                ));
            }
            add_resampling_metrics(&mut explorer, &labels_path, &dir_arg)?;
        }
        None => {
            explorer.missing.push(Missing {
                part: "tags".into(),
                why: "no chunks_labeled.json (function tags); thoughtscope generate labels the rollouts it writes".into(),
                command: "thoughtscope generate".into(),
            });
            explorer.missing.push(resampling_missing(&dir_arg));
        }
    }
    add_alternatives(&mut explorer, dir, options.max_alternatives)?;
    add_step_importance(&mut explorer, &dir.join("step_importance.json"))?;

    // Attention: one forward pass with the token view, or the cache.
    if let Some(loaded) = loaded {
        let pair_options = TokenPairOptions { max_tokens: options.token_max, ..TokenPairOptions::default() };
        let (attention, bounds, pairs) = sentence_attention_with_token_pairs(loaded, &sentences, options.boundary_mode, &pair_options)?;
        explorer.model = Some(loaded.name.clone());
        explorer.notes.push(format!(
            "attention and token view: one forward pass of {} over {} tokens ({} boundaries), not the cache",
            loaded.name,
            bounds.n_tokens,
            options.boundary_mode.as_str()
        ));
        add_attention(&mut explorer, &attention, options)?;
        // The heads asked for, then the top receiver heads.
        let receivers: Vec<(usize, usize)> = explorer.receiver_heads.iter().map(|&[l, h]| (l, h)).collect();
        let heads = options.token_view_heads(&receivers);
        explorer.set_token_view(&pairs, &heads)?;
        if explorer.token_view.is_some() {
            explorer.notes.push(format!(
                "token view: {} heads, each sentence with its top earlier source in that head (the sentence holding the first token, \
                 where attention sinks, passed over when there is another), the first {} tokens of both",
                heads.len(),
                options.token_max
            ));
        }
    } else {
        add_cached_attention(&mut explorer, options, &sentences, &dir_arg, &mode_flag)?;
    }

    // Suppression: a `thoughtscope suppress` folder, else the website's step_importance_supp.json.
    let supp_json = dir.join("step_importance_supp.json");
    match suppression_folder(dir, options) {
        Some(supp) => add_suppression(&mut explorer, &supp, &sentences)?,
        None if supp_json.is_file() => add_suppression_records(&mut explorer, &supp_json)?,
        None => explorer.missing.push(Missing {
            part: "suppression".into(),
            why: "no attention-suppression run".into(),
            command: format!(
                "thoughtscope suppress {dir_arg} --model {} {mode_flag} --out {}/suppression",
                options.model.as_deref().unwrap_or("smollm2-135m"),
                dir_arg
            ),
        }),
    }
    Ok(explorer)
}

/// The attention of the cache entry of `options.model`, or what is missing.
fn add_cached_attention(explorer: &mut Explorer, options: &ExplorerOptions, sentences: &Sentences, dir_arg: &str, mode_flag: &str) -> Result<()> {
    let n = sentences.len();
    match &options.model {
        None => explorer.missing.push(Missing {
            part: "attention".into(),
            why: "no model given".into(),
            command: format!(
                "thoughtscope attn {dir_arg} --model smollm2-135m {mode_flag} && thoughtscope explore {dir_arg} --model smollm2-135m {mode_flag}"
            ),
        }),
        Some(model) => {
            let model_name = crate::model::cache_name(model);
            explorer.model = Some(model_name.clone());
            let entry = options.cache_dir.join(crate::io::path_component(&model_name)).join(sentences.text_id());
            if entry.is_dir() {
                let attention = read_entry_dir(&entry)?;
                if attention.n() != n {
                    return Err(Error::format(
                        &entry,
                        format!("cache entry holds {} sentences, the trace has {n} in {} mode", attention.n(), options.mode.as_str()),
                    ));
                }
                let provenance = if entry.join(MANIFEST_FILE).is_file() {
                    "manifest verified"
                } else {
                    "thought-anchors entry, provenance unverified"
                };
                explorer.notes.push(format!("attention: {} ({provenance})", entry.display()));
                add_attention(explorer, &attention, options)?;
                add_stored_token_view(explorer, options, &entry, model, dir_arg, mode_flag)?;
            } else {
                explorer.missing.push(Missing {
                    part: "attention".into(),
                    why: format!("no attention cache entry {}", entry.display()),
                    command: format!(
                        "thoughtscope attn {dir_arg} --model {model} {mode_flag} --cache-dir {}",
                        shell_path(&options.cache_dir)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The token view from the token pairs stored in the cache entry `entry` (the same numbers as
/// [`Explorer::from_problem_dir_with_model`] when they were stored for these options' heads), or
/// what is missing. The page's heads that were stored come first, then other stored heads in
/// place of those that were not (named in a note).
fn add_stored_token_view(explorer: &mut Explorer, options: &ExplorerOptions, entry: &Path, model: &str, dir_arg: &str, mode_flag: &str) -> Result<()> {
    if options.token_heads == 0 || options.token_max == 0 {
        return Ok(());
    }
    let ours = entry.join(MANIFEST_FILE).is_file();
    let explore = format!("thoughtscope explore {dir_arg} --model {model} {mode_flag} --token-view --out trace.html");
    let stored = if ours { read_entry_token_pairs(entry)? } else { None };
    let Some((pairs, record)) = stored else {
        explorer.missing.push(if ours {
            Missing {
                part: "token view".into(),
                why: format!(
                    "the cache entry has no token pairs (written before entries stored them); add them with one pass and make \
                     this page again, or make a page with its own pass: {explore}"
                ),
                command: format!(
                    "thoughtscope attn {dir_arg} --model {model} {mode_flag} --cache-dir {} --add-token-pairs",
                    shell_path(&options.cache_dir)
                ),
            }
        } else {
            Missing {
                part: "token view".into(),
                why: "token-level attention needs a forward pass (a thought-anchors cache entry holds sentence averages only)".into(),
                command: explore,
            }
        });
        return Ok(());
    };
    let receivers: Vec<(usize, usize)> = explorer.receiver_heads.iter().map(|&[l, h]| (l, h)).collect();
    let wanted = options.token_view_heads(&receivers);
    let stored_heads: Vec<(usize, usize)> = pairs.heads.iter().map(|h| (h.layer, h.head)).collect();
    // Stored heads stand in for the page's heads that were not stored (e.g. corpus receiver
    // heads, unknown when the entry was filled), so the view keeps its size.
    let mut heads: Vec<(usize, usize)> = wanted.iter().copied().filter(|h| stored_heads.contains(h)).collect();
    for &head in &stored_heads {
        if heads.len() < wanted.len() && !heads.contains(&head) {
            heads.push(head);
        }
    }
    explorer.set_token_view(&pairs.truncated(options.token_max), &heads)?;
    let Some(view) = &explorer.token_view else {
        explorer.missing.push(Missing {
            part: "token view".into(),
            why: format!("the cache entry's token pairs hold no head ({})", record.selection),
            command: explore,
        });
        return Ok(());
    };
    let name = |heads: &[(usize, usize)]| heads.iter().map(|(l, h)| format!("{l}.{h}")).collect::<Vec<_>>().join(", ");
    explorer.notes.push(format!(
        "token view: the token pairs stored in the cache entry by the pass that filled it (heads {}, the first {} tokens of each \
         sentence and of its top earlier source; stored for {})",
        name(&heads),
        view.max_tokens,
        record.selection
    ));
    let not_stored: Vec<(usize, usize)> = wanted.iter().copied().filter(|h| !stored_heads.contains(h)).collect();
    if !not_stored.is_empty() {
        explorer.notes.push(format!(
            "token view: heads {} of this page have no stored token pairs; `{explore}` computes them (add --heads or --receiver-heads as here)",
            name(&not_stored)
        ));
    }
    if options.token_max > record.max_tokens {
        explorer.notes.push(format!("token view: {} tokens per sentence stored, {} asked for", record.max_tokens, options.token_max));
    }
    Ok(())
}

/// The `thoughtscope suppress` folder of `dir`: the one given, else `<dir>/suppression` when it
/// holds a run.
pub(super) fn suppression_folder(dir: &Path, options: &ExplorerOptions) -> Option<PathBuf> {
    options.suppression_dir.clone().or_else(|| {
        let default = dir.join("suppression");
        default.join("suppression_manifest.json").is_file().then_some(default)
    })
}

impl Explorer {
    /// Receiver heads, their average matrix, vertical scores and a bounded number of single-head
    /// matrices from the `[L, H, N, N]` attention of this trace.
    pub fn add_attention(&mut self, attention: &SentenceAttention, options: &ExplorerOptions) -> Result<()> {
        add_attention(self, attention, options)
    }
}

fn resampling_missing(dir_arg: &str) -> Missing {
    Missing {
        part: "resampling".into(),
        why: "chunks_labeled.json has no accuracy / resampling_importance_* / counterfactual_importance_* fields \
              (thought-anchors' analyze_rollouts.py writes them too)"
            .into(),
        command: format!("thoughtscope resample {dir_arg} && thoughtscope importance {dir_arg}"),
    }
}

fn add_resampling_metrics(explorer: &mut Explorer, path: &Path, dir_arg: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let entries = value.as_array().ok_or_else(|| Error::format(path, "expected an array of chunk labels"))?;
    let n = explorer.n();
    let mut found = 0;
    for &(field, label, description) in RESAMPLING_FIELDS {
        if !entries.iter().any(|e| e.get(field).is_some_and(|v| !v.is_null())) {
            continue;
        }
        let mut values = vec![f64::NAN; n];
        for (k, entry) in entries.iter().take(n).enumerate() {
            values[k] = match entry.get(field) {
                None | Some(Value::Null) => f64::NAN,
                Some(Value::Number(number)) => number.as_f64().unwrap_or(f64::NAN),
                Some(other) => {
                    return Err(Error::format(path, format!("entry {k}: field `{field}` should be a number, found {other}")));
                }
            };
        }
        explorer.push_metric(field, label, "resampling", description, &values)?;
        found += 1;
    }
    if found == 0 {
        explorer.missing.push(resampling_missing(dir_arg));
    }
    Ok(())
}

/// The sentences in `mode` and the chunk labels. A folder without `base_solution.json` is still
/// read in chunks mode (`chunks.json` or `chunks_labeled.json`), as the VA analysis reads it.
pub(super) fn read_sentences(dir: &Path, mode: SentenceMode) -> Result<(Sentences, Option<Vec<ChunkLabel>>)> {
    if mode == SentenceMode::Chunks && !dir.join("base_solution.json").is_file() {
        let labels = read_labels_file(&dir.join("chunks_labeled.json"))?;
        let chunks = match (read_chunks_file(&dir.join("chunks.json"))?, &labels) {
            (Some(chunks), _) => chunks,
            (None, Some(labels)) => labels.iter().map(|l| l.chunk.clone()).collect(),
            (None, None) => {
                return Err(Error::format(dir, "no base_solution.json, chunks.json or chunks_labeled.json: not a trace directory"))
            }
        };
        return Ok((Sentences::from_chunks(&chunks), labels));
    }
    let rollout = Rollout::open(dir)?;
    Ok((rollout.sentences(mode)?, rollout.labels))
}

/// The resampled alternatives of each chunk: `chunk_<k>/solutions.json` (texts and answers),
/// else the website's `chunks_resampled.json` (texts only).
fn add_alternatives(explorer: &mut Explorer, dir: &Path, max: usize) -> Result<()> {
    if max == 0 {
        return Ok(());
    }
    let resampled_path = dir.join("chunks_resampled.json");
    let resampled = if resampled_path.is_file() { super::website_read::read_chunks_resampled(&resampled_path)? } else { Default::default() };
    for k in 0..explorer.n() {
        let path = dir.join(format!("chunk_{k}")).join("solutions.json");
        if !path.is_file() {
            if let Some(texts) = resampled.get(&k) {
                explorer.alternatives[k] =
                    texts.iter().take(max).map(|text| Alternative { text: cut(text, 240), answer: String::new(), is_correct: None }).collect();
            }
            continue;
        }
        let solutions = match crate::io::read_json::<Value>(&path)? {
            // Upstream's API-error stubs (no answer, or an error) are left out, as upstream does.
            Value::Array(items) => items.into_iter().filter(|s| s.get("answer").is_some() && s.get("error").is_none()).collect::<Vec<_>>(),
            _ => return Err(Error::format(&path, "expected an array of solutions")),
        };
        explorer.alternatives[k] = solutions
            .iter()
            .take(max)
            .map(|s| {
                let text = s.get("chunk_resampled").and_then(Value::as_str).unwrap_or_default();
                let answer = match s.get("answer") {
                    Some(Value::String(a)) => a.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Alternative {
                    text: cut(text, 240),
                    answer: cut(&answer, 80),
                    is_correct: s.get("is_correct").and_then(Value::as_bool),
                }
            })
            .collect();
    }
    Ok(())
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// thought-anchors' website `step_importance.json` ([`super::website_read::read_step_importance`]) as a
/// `[target][source]` matrix.
fn add_step_importance(explorer: &mut Explorer, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let square = records_square(&super::website_read::read_step_importance(path)?, explorer.n());
    let n = explorer.n();
    explorer.push_matrix(Matrix::from_square(
        "step_importance",
        "step importance (step_importance.json)",
        "importance",
        n,
        |i, j| square[i * n + j],
    ))
}

/// The website records as a row-major `[target][source]` matrix: NaN where no record gives a
/// later target (and for indices beyond the trace).
fn records_square(records: &[crate::attention::suppression::StepImportance], n: usize) -> Vec<f64> {
    let mut square = vec![f64::NAN; n * n];
    for record in records {
        for impact in &record.target_impacts {
            let (source, target) = (record.source_chunk_idx, impact.target_chunk_idx);
            if source < n && target < n && target > source {
                square[target * n + source] = impact.importance_score;
            }
        }
    }
    square
}

fn add_attention(explorer: &mut Explorer, attention: &SentenceAttention, options: &ExplorerOptions) -> Result<()> {
    let (layers, heads, n) = (attention.layers(), attention.heads(), attention.n());
    if n != explorer.n() {
        return Err(Error::invalid(format!("attention holds {n} sentences, the explorer {}", explorer.n())));
    }
    for &(l, h) in options.heads.iter().chain(options.receiver_heads.iter().flatten()) {
        if l >= layers || h >= heads {
            return Err(Error::invalid(format!("head {l}.{h} outside the attention's {layers} layers × {heads} heads")));
        }
    }
    explorer.grid = Some([layers, heads]);
    let scores = head_vertical_scores(attention, &options.vertical);
    let receiver = options.receiver_heads_of(&scores);
    explorer.notes.push(match &options.receiver_heads {
        Some(given) => format!("receiver heads: {} given", given.len()),
        None => format!(
            "receiver heads: top {} by kurtosis of vertical scores (proximity {}) in this trace alone",
            receiver.len(),
            options.vertical.proximity_ignore
        ),
    });
    explorer.receiver_heads = receiver.iter().map(|&(l, h)| [l, h]).collect();
    if !receiver.is_empty() {
        let values = receiver_scores(&scores, &receiver)?;
        explorer.push_metric(
            "receiver",
            &format!("receiver score (mean of {} receiver heads)", receiver.len()),
            "attention",
            "mean vertical score over the receiver heads: how much later sentences attend to this one",
            &values,
        )?;
        let count = receiver.len() as f64;
        let average = Matrix::from_square(
            "receiver_average",
            &format!("receiver-head average ({} heads)", receiver.len()),
            "attention",
            n,
            |i, j| receiver.iter().map(|&(l, h)| f64::from(attention.matrix(l, h)[i * n + j])).sum::<f64>() / count,
        );
        explorer.push_matrix(average)?;
    }
    let mut shown: Vec<(usize, usize)> = Vec::new();
    for &head in receiver.iter().chain(&options.heads) {
        if !shown.contains(&head) {
            shown.push(head);
        }
    }
    // Explicitly asked heads first in the matrix budget, then the top receiver heads.
    let mut matrix_heads: Vec<(usize, usize)> = options.heads.clone();
    matrix_heads.extend(receiver.iter().copied());
    let mut kept = Vec::new();
    for head in matrix_heads {
        if kept.len() < options.max_head_matrices && !kept.contains(&head) {
            kept.push(head);
        }
    }
    for &(l, h) in &shown {
        explorer.push_metric(
            &format!("vertical_{l}_{h}"),
            &format!("vertical score, layer {l} head {h}"),
            "attention",
            "mean attention this sentence receives from sentences at least the proximity band later, in this head",
            scores.head(l, h),
        )?;
    }
    for &(l, h) in &kept {
        let matrix = attention.matrix(l, h);
        let mut m = Matrix::from_square(&format!("head_{l}_{h}"), &format!("layer {l} head {h}"), "attention", n, |i, j| {
            f64::from(matrix[i * n + j])
        });
        m.head = Some([l, h]);
        explorer.push_matrix(m)?;
    }
    if shown.len() > kept.len() {
        explorer.notes.push(format!(
            "{} head matrices kept of {} heads shown (size budget: max_head_matrices = {})",
            kept.len(),
            shown.len(),
            options.max_head_matrices
        ));
    }
    Ok(())
}

/// The matrix of a `thoughtscope suppress` folder (`suppression_matrix.npy`, `[target][source]`,
/// NaN on and above the diagonal), checked against the trace through its manifest's `text_id`
/// and `n`, and the model the manifest names.
pub(super) fn suppression_square(dir: &Path, sentences: &Sentences) -> Result<(Vec<f64>, String)> {
    let manifest_path = dir.join("suppression_manifest.json");
    let matrix_path = dir.join("suppression_matrix.npy");
    let manifest: Value = crate::io::read_json(&manifest_path)?;
    let n = sentences.len();
    let text_id = manifest.pointer("/key/text_id").and_then(Value::as_str);
    if text_id != Some(sentences.text_id().as_str()) {
        return Err(Error::format(
            &manifest_path,
            format!(
                "field `key.text_id` is {text_id:?}, this trace's is {} ({} mode): another trace or sentence mode",
                sentences.text_id(),
                sentences.mode.as_str()
            ),
        ));
    }
    let array = npy::read(&matrix_path)?;
    if array.shape != [n, n] {
        return Err(Error::format(&matrix_path, format!("shape {:?}, expected [{n}, {n}]", array.shape)));
    }
    let values: Vec<f64> = match array.data {
        npy::NpyData::F64(v) => v,
        npy::NpyData::F32(v) => v.into_iter().map(f64::from).collect(),
    };
    let values = values.iter().enumerate().map(|(x, &v)| if x % n < x / n { v } else { f64::NAN }).collect();
    let model = manifest.pointer("/key/model").and_then(Value::as_str).unwrap_or("?").to_owned();
    Ok((values, model))
}

/// The suppression matrix of a `thoughtscope suppress` folder and the per-sentence incoming and
/// outgoing importances derived from it.
fn add_suppression(explorer: &mut Explorer, dir: &Path, sentences: &Sentences) -> Result<()> {
    let (values, model) = suppression_square(dir, sentences)?;
    explorer.notes.push(format!("suppression: {} (model {model})", dir.display()));
    push_suppression(explorer, &values)
}

/// The same from the website's `step_importance_supp.json` (thought-anchors.com publishes it for
/// most of its traces).
fn add_suppression_records(explorer: &mut Explorer, path: &Path) -> Result<()> {
    let values = records_square(&super::website_read::read_step_importance(path)?, explorer.n());
    explorer.notes.push(format!("suppression: {}", path.display()));
    push_suppression(explorer, &values)
}

fn push_suppression(explorer: &mut Explorer, values: &[f64]) -> Result<()> {
    let n = explorer.n();
    let mut matrix = Matrix::from_square("suppression", "attention suppression: mean log(KL + 1e-9)", "suppression", n, |i, j| values[i * n + j]);
    matrix.row_meaning = "target (later) sentence".into();
    matrix.column_meaning = "suppressed (earlier) sentence".into();
    explorer.push_matrix(matrix)?;
    let mean = |cells: &mut dyn Iterator<Item = f64>| {
        let kept: Vec<f64> = cells.filter(|v| v.is_finite()).collect();
        if kept.is_empty() {
            f64::NAN
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        }
    };
    let outgoing: Vec<f64> = (0..n).map(|s| mean(&mut (s + 1..n).map(|t| values[t * n + s]))).collect();
    let incoming: Vec<f64> = (0..n).map(|t| mean(&mut (0..t).map(|s| values[t * n + s]))).collect();
    explorer.push_metric(
        "suppression_out",
        "suppression: outgoing importance",
        "suppression",
        "mean over later sentences of log(KL + 1e-9) when this sentence is suppressed",
        &outgoing,
    )?;
    explorer.push_metric(
        "suppression_in",
        "suppression: incoming importance",
        "suppression",
        "mean over earlier sentences of log(KL + 1e-9) on this sentence when that one is suppressed",
        &incoming,
    )?;
    Ok(())
}
