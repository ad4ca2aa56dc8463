//! Receiver heads against attention suppression: thought-anchors' two white-box views of which
//! sentences of a reasoning trace matter (the third notebook, `notebooks/thought_anchors.ipynb`,
//! and `thoughtscope anchors`).
//!
//! 1. **Receiver heads** over a set of traces ([`corpus_receivers`]): every trace's sentence
//!    attention (through the attention cache, one forward pass per uncached trace), the vertical
//!    scores of every head, their kurtosis, the `top_k` heads of largest mean kurtosis
//!    (`crate::scores::receiver_heads_from_scores`, upstream's selection), and per trace the
//!    receiver score of each sentence (mean vertical score over those heads).
//! 2. **Suppression** of one trace ([`crate::analysis::suppression::cached_suppression`]): the
//!    `N × N` matrix `M[target][source]` of mean `log(KL + 1e-9)`; a source's *outgoing
//!    importance* is the mean of its column over the later targets ([`outgoing_importance`]).
//! 3. **Agreement** ([`crate::scores::spearman`]): Spearman's rho between the trace's receiver
//!    scores and its outgoing importance, with a two-sided permutation p-value; sentences where
//!    either is undefined (the last `proximity_ignore` sentences have no vertical score, the last
//!    sentence no later target) are left out and counted.
//! 4. **Function tags** (`chunks_labeled.json`): the tags of each trace's top sentences by either
//!    measure ([`sentence_rows`], [`tag_summary`]).
//!
//! The outgoing importance is a mean, not a sum, on purpose: every entry is a log, and a sum over
//! the later targets would rank sentences by how many targets follow them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::suppression::{cached_suppression_from, suppression_heatmap, SuppressionFiles};
use crate::attention::{
    cached_sentence_attention, AttnCache, BoundaryMode, CacheLayout, CacheOutcome, SentenceMode, Sentences,
    SuppressionMatrix, SuppressionOptions,
};
use crate::io::{write_atomic, write_json};
use crate::model::{Loaded, Model, Settings};
use crate::plot::{self, ColorLimits, Figure, HeatmapOptions, LineOptions, Report, ScatterOptions, Series};
use crate::rollout::{find_problem_dirs, Rollout};
use crate::scores::{
    head_vertical_scores, receiver_heads_from_scores, receiver_scores, spearman, HeadScores, RankCorrelation, ReceiverHeads,
    ReceiverOptions,
};
use crate::{Context, Error, Result};

/// Everything a run of the analysis depends on.
#[derive(Debug, Clone)]
pub struct AnchorsConfig {
    /// Folder searched (any depth) for trace directories holding `base_solution.json`.
    pub traces: PathBuf,
    /// At most this many of the traces, spread evenly through them in name order
    /// ([`crate::io::shard::evenly_spaced`]), plus [`AnchorsConfig::suppression_trace`] when the
    /// spread leaves it out; `None`: every trace. One forward pass each: the 40 thought-anchors
    /// website traces take about 8 minutes on two cores with SmolLM2.
    pub max_traces: Option<usize>,
    pub model: String,
    /// `Chunks` by default: the units `chunks_labeled.json` tags, so tags line up by index.
    pub sentence_mode: SentenceMode,
    pub boundary_mode: BoundaryMode,
    pub cache_dir: PathBuf,
    /// Top-k heads and the vertical-score options (upstream: 20 heads, `proximity_ignore` 4,
    /// no depth control, mean).
    pub receiver: ReceiverOptions,
    /// Vertical scores of the first `drop_first` sentences set to NaN before the kurtosis and the
    /// receiver scores (the paper version's `drop_first`, without its bug of dropping as many at
    /// the end). 0 = HEAD, which has none; there the first sentence, an attention sink, is every
    /// trace's top receiver.
    pub drop_first: usize,
    /// The trace whose suppression matrix is computed (a trace directory below
    /// [`AnchorsConfig::traces`]; it is analysed for receiver heads too, even where
    /// [`AnchorsConfig::max_traces`] would leave it out); `None`: the one with the fewest tokens
    /// among those with at least [`AnchorsConfig::min_sentences`] sentences (suppression costs
    /// one pass per sentence over the rest of the trace).
    pub suppression_trace: Option<PathBuf>,
    pub min_sentences: usize,
    pub suppression: SuppressionOptions,
    /// Permutations of the rank-correlation test.
    pub permutations: usize,
    pub seed: u64,
    /// Sentences per trace counted as "top" by each measure.
    pub top_sentences: usize,
    /// Output folder.
    pub out: PathBuf,
    /// Heads of the explorer page's token view; a cache miss stores their token pairs in the
    /// entry, from the same pass (0: none). As `va`: 4.
    pub token_heads: usize,
    /// Tokens kept per sentence on each side of a token-view pair (16).
    pub token_max: usize,
    /// How the model is loaded (device, weights, kernels) and the cache read.
    pub settings: Settings,
}

impl Default for AnchorsConfig {
    fn default() -> Self {
        AnchorsConfig {
            traces: PathBuf::from("rollouts/apple_boxes"),
            max_traces: None,
            model: "smollm2-135m".into(),
            sentence_mode: SentenceMode::Chunks,
            boundary_mode: BoundaryMode::Prefix,
            cache_dir: PathBuf::from("attn_cache"),
            receiver: ReceiverOptions::default(),
            drop_first: 0,
            suppression_trace: None,
            min_sentences: 12,
            suppression: SuppressionOptions::default(),
            permutations: 1000,
            seed: 0,
            top_sentences: 5,
            out: PathBuf::from("analysis/thought_anchors"),
            token_heads: 4,
            token_max: 16,
            settings: Settings::default(),
        }
    }
}

impl AnchorsConfig {
    /// The traces of a run: [`load_traces`] of [`AnchorsConfig::traces`], at most
    /// [`AnchorsConfig::max_traces`] of them, and the named suppression trace in any case.
    pub fn load_traces(&self) -> Result<Vec<Trace>> {
        load_some_traces(&self.traces, self.sentence_mode, self.max_traces, self.suppression_trace.as_deref())
    }

    /// The suppression options of a run: [`AnchorsConfig::suppression`] with the run's boundaries.
    pub fn suppression_options(&self) -> SuppressionOptions {
        SuppressionOptions { boundary_mode: self.boundary_mode, ..self.suppression.clone() }
    }

    /// The explorer page's options that come from the run's settings (model, cache, sentence
    /// mode, token view); the caller adds what comes from the results.
    pub fn explorer_options(&self) -> crate::plot::ExplorerOptions {
        crate::plot::ExplorerOptions {
            model: Some(self.model.clone()),
            cache_dir: self.cache_dir.clone(),
            mode: self.sentence_mode,
            token_heads: self.token_heads,
            token_max: self.token_max,
            ..Default::default()
        }
    }

    /// Where the suppression run of `trace` is written (and read back from on a rerun).
    pub fn suppression_dir(&self, trace: &Trace) -> PathBuf {
        self.out.join(suppression_subdir(trace))
    }
}

/// The suppression folder of `trace` inside the output folder.
fn suppression_subdir(trace: &Trace) -> PathBuf {
    Path::new("suppression").join(crate::io::path_component(&trace.name.replace('/', "__")))
}

/// One trace: its sentences and each sentence's function tags.
#[derive(Debug, Clone)]
pub struct Trace {
    pub dir: PathBuf,
    /// The path below the traces folder (`model/kind/problem_id`), or the folder's own name.
    pub name: String,
    pub sentences: Sentences,
    /// `tags[i]`: `function_tags` of label `i` (empty where there is no label).
    pub tags: Vec<Vec<String>>,
    /// Tokens under the model's tokenizer (set by [`corpus_receivers`]).
    pub n_tokens: Option<usize>,
}

/// Every trace under `root` ([`find_problem_dirs`]) in `mode`; a folder with no sentences is an
/// error naming it.
pub fn load_traces(root: &Path, mode: SentenceMode) -> Result<Vec<Trace>> {
    load_some_traces(root, mode, None, None)
}

/// [`load_traces`], at most `max` of them ([`crate::io::shard::evenly_spaced`]), with `keep`
/// added (in name order) where it is one of the traces and the spread left it out.
fn load_some_traces(root: &Path, mode: SentenceMode, max: Option<usize>, keep: Option<&Path>) -> Result<Vec<Trace>> {
    let all = find_problem_dirs(root)?;
    if all.is_empty() {
        return Err(Error::format(root, "no trace directories (folders holding base_solution.json) below it"));
    }
    let dirs = match max {
        None => all,
        Some(0) => return Err(Error::invalid("max_traces (--max-traces) is 0: at least one trace is needed")),
        Some(k) => {
            let mut dirs = crate::io::shard::evenly_spaced(&all, k);
            // A trace outside the folder is left to `suppression_trace`, which names it in its error.
            let wanted = keep.and_then(|k| k.canonicalize().ok());
            if let Some(kept) = wanted.and_then(|w| all.iter().find(|d| d.canonicalize().is_ok_and(|d| d == w))) {
                if !dirs.contains(kept) {
                    dirs.push(kept.clone());
                    dirs.sort();
                }
            }
            dirs
        }
    };
    dirs.into_iter().map(|dir| load_trace(root, &dir, mode)).collect()
}

/// One trace directory, named relative to `root`.
pub(crate) fn load_trace(root: &Path, dir: &Path, mode: SentenceMode) -> Result<Trace> {
    let rollout = Rollout::open(dir)?;
    let sentences = rollout.sentences(mode)?;
    if sentences.is_empty() {
        return Err(Error::format(dir, "no sentences to analyse"));
    }
    let labels = rollout.labels.as_deref().unwrap_or(&[]);
    let tags = (0..sentences.len()).map(|i| labels.get(i).map(|l| l.tags.clone()).unwrap_or_default()).collect();
    let relative = dir.strip_prefix(root).ok().filter(|r| !r.as_os_str().is_empty());
    let name = relative.map_or_else(|| rollout.name(), |r| r.to_string_lossy().into_owned());
    Ok(Trace { dir: dir.to_path_buf(), name, sentences, tags, n_tokens: None })
}

/// Receiver heads over a corpus, with each trace's receiver scores.
#[derive(Debug, Clone)]
pub struct CorpusReceivers {
    pub heads: ReceiverHeads,
    /// Per analysed trace (same order as `heads.responses`): name and receiver score per sentence.
    pub scores: Vec<(String, Vec<f64>)>,
    /// Traces left out before the forward pass, with why (longer than the model's context).
    pub too_long: Vec<(String, String)>,
    pub forward_passes: usize,
    pub cache_hits: usize,
}

impl CorpusReceivers {
    /// The receiver scores of trace `name`.
    pub fn scores_of(&self, name: &str) -> Option<&[f64]> {
        self.scores.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice())
    }
}

/// Receiver heads over `traces` under `loaded`: each trace's sentence attention from the cache
/// under `cache_dir` (computed and stored on a miss, with `token_pairs` when given: those of the
/// trace explorer's token view, [`crate::plot::ExplorerOptions::token_pairs_to_store`]), reduced to vertical scores once (those of
/// the first `drop_first` sentences set to NaN); a trace longer than the model's context is left
/// out with a note instead of failing the corpus. Sets each trace's `n_tokens`.
pub fn corpus_receivers(
    loaded: &Loaded,
    cache_dir: &Path,
    traces: &mut [Trace],
    boundary_mode: BoundaryMode,
    options: &ReceiverOptions,
    drop_first: usize,
    token_pairs: Option<crate::attention::TokenPairsToStore>,
) -> Result<CorpusReceivers> {
    let cache = AttnCache::new(cache_dir).strict(loaded.settings.strict_cache).with_token_pairs(token_pairs);
    let context = loaded.model.config().max_position_embeddings;
    let mut too_long = Vec::new();
    let mut per_trace: Vec<(String, HeadScores)> = Vec::new();
    let (mut forward_passes, mut cache_hits) = (0, 0);
    for trace in traces.iter_mut() {
        let n_tokens = loaded.tokenizer.encode(&trace.sentences.text)?.len();
        trace.n_tokens = Some(n_tokens);
        if n_tokens > context {
            too_long.push((trace.name.clone(), format!("{n_tokens} tokens, over the {context}-token context of {}", loaded.name)));
            continue;
        }
        let (attention, outcome, _) =
            cached_sentence_attention(&cache, loaded, &trace.sentences, boundary_mode, CacheLayout::Native)
                .while_doing_with(|| format!("sentence attention of {}", trace.dir.display()))?;
        match outcome {
            CacheOutcome::Computed => forward_passes += 1,
            _ => cache_hits += 1,
        }
        let mut scores = head_vertical_scores(&attention, &options.vertical);
        if drop_first > 0 {
            for head in scores.values.chunks_mut(scores.n.max(1)) {
                head.iter_mut().take(drop_first).for_each(|v| *v = f64::NAN);
            }
        }
        per_trace.push((trace.name.clone(), scores));
    }
    if per_trace.is_empty() {
        return Err(Error::invalid(format!("receiver heads: every trace is longer than the context ({} left out)", too_long.len())));
    }
    let heads = receiver_heads_from_scores(per_trace.iter().map(|(name, scores)| Ok((name.clone(), scores))), options.top_k)?;
    let scores = per_trace
        .iter()
        .filter(|(name, _)| heads.responses.contains(name))
        .map(|(name, head_scores)| Ok((name.clone(), receiver_scores(head_scores, &heads.top_k_heads)?)))
        .collect::<Result<_>>()?;
    Ok(CorpusReceivers { heads, scores, too_long, forward_passes, cache_hits })
}

/// Per analysed trace, the index of its top receiver sentence (`None` when no score is defined).
pub fn top_receiver_sentences(receivers: &CorpusReceivers) -> Vec<(String, Option<usize>)> {
    receivers
        .scores
        .iter()
        .map(|(name, scores)| (name.clone(), descending_ranks(scores).iter().position(|&r| r == 1)))
        .collect()
}

/// The trace suppression is run on: `choice` (a directory, matched against each trace's
/// directory) or the fewest-token trace with at least `min_sentences` sentences among those with
/// receiver scores (ties: the first by name).
pub fn suppression_trace<'a>(
    traces: &'a [Trace],
    receivers: &CorpusReceivers,
    choice: Option<&Path>,
    min_sentences: usize,
) -> Result<&'a Trace> {
    if let Some(choice) = choice {
        let wanted = choice.canonicalize().map_err(|e| Error::io(choice, e))?;
        return traces
            .iter()
            .find(|t| t.dir.canonicalize().is_ok_and(|d| d == wanted))
            .ok_or_else(|| Error::format(choice, "not one of the traces analysed (suppression_trace)"));
    }
    traces
        .iter()
        .filter(|t| receivers.scores_of(&t.name).is_some() && t.sentences.len() >= min_sentences)
        .min_by_key(|t| (t.n_tokens.unwrap_or(usize::MAX), t.name.clone()))
        .ok_or_else(|| {
            Error::invalid(format!("no analysed trace has at least {min_sentences} sentences to run suppression on (min_sentences)"))
        })
}

/// Per source sentence `s`: the mean of `M[t][s]` over the later targets `t > s` with a defined
/// entry; NaN for the last sentence.
pub fn outgoing_importance(matrix: &SuppressionMatrix) -> Vec<f64> {
    (0..matrix.n)
        .map(|source| {
            let later: Vec<f64> = (source + 1..matrix.n).map(|t| matrix.get(t, source)).filter(|v| v.is_finite()).collect();
            if later.is_empty() {
                f64::NAN
            } else {
                later.iter().sum::<f64>() / later.len() as f64
            }
        })
        .collect()
}

/// One sentence of the suppression trace with both measures.
#[derive(Debug, Clone, Serialize)]
pub struct SentenceRow {
    pub sentence: usize,
    #[serde(with = "crate::scores::stats::nan_as_null")]
    pub receiver_score: f64,
    #[serde(with = "crate::scores::stats::nan_as_null")]
    pub outgoing_importance: f64,
    /// 1 = highest; 0 where the measure is undefined.
    pub receiver_rank: usize,
    pub suppression_rank: usize,
    pub tags: Vec<String>,
    pub text: String,
}

/// 1-based descending ranks of the finite values (ties: the lower index first), 0 for the rest.
fn descending_ranks(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut ranks = vec![0; values.len()];
    for (rank, i) in order.into_iter().enumerate() {
        ranks[i] = rank + 1;
    }
    ranks
}

/// The rows of `trace` given its receiver scores and outgoing importance (either may be empty:
/// then NaN).
pub fn sentence_rows(trace: &Trace, receiver: &[f64], outgoing: &[f64]) -> Vec<SentenceRow> {
    let n = trace.sentences.len();
    let value = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    let receiver: Vec<f64> = (0..n).map(|i| value(receiver, i)).collect();
    let outgoing: Vec<f64> = (0..n).map(|i| value(outgoing, i)).collect();
    let (receiver_ranks, suppression_ranks) = (descending_ranks(&receiver), descending_ranks(&outgoing));
    (0..n)
        .map(|i| SentenceRow {
            sentence: i,
            receiver_score: receiver[i],
            outgoing_importance: outgoing[i],
            receiver_rank: receiver_ranks[i],
            suppression_rank: suppression_ranks[i],
            tags: trace.tags[i].clone(),
            text: trace.sentences.sentences[i].trim().to_owned(),
        })
        .collect()
}

/// Per function tag over every analysed trace: how many sentences carry it, their mean receiver
/// score, and how many are among their trace's `top` sentences by receiver score, with the
/// enrichment `share among top / share among all`.
#[derive(Debug, Clone, Serialize)]
pub struct TagRow {
    pub tag: String,
    pub sentences: usize,
    #[serde(with = "crate::scores::stats::nan_as_null")]
    pub mean_receiver_score: f64,
    pub in_top: usize,
    #[serde(with = "crate::scores::stats::nan_as_null")]
    pub enrichment: f64,
}

/// [`TagRow`]s of `traces` (matched to `receivers` by name), most frequent in the top first.
pub fn tag_summary(traces: &[Trace], receivers: &CorpusReceivers, top: usize) -> Vec<TagRow> {
    #[derive(Default)]
    struct Tally {
        sentences: usize,
        score_sum: f64,
        scored: usize,
        in_top: usize,
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut all_tagged, mut top_tagged) = (0usize, 0usize);
    for trace in traces {
        let Some(scores) = receivers.scores_of(&trace.name) else { continue };
        let ranks = descending_ranks(scores);
        for (i, tags) in trace.tags.iter().enumerate() {
            let is_top = ranks.get(i).is_some_and(|&r| r >= 1 && r <= top);
            for tag in tags {
                let tally = tallies.entry(tag.clone()).or_default();
                tally.sentences += 1;
                all_tagged += 1;
                if let Some(&s) = scores.get(i).filter(|s| s.is_finite()) {
                    tally.score_sum += s;
                    tally.scored += 1;
                }
                if is_top {
                    tally.in_top += 1;
                    top_tagged += 1;
                }
            }
        }
    }
    let mut rows: Vec<TagRow> = tallies
        .into_iter()
        .map(|(tag, t)| {
            let share_top = t.in_top as f64 / top_tagged as f64;
            let share_all = t.sentences as f64 / all_tagged as f64;
            TagRow {
                tag,
                sentences: t.sentences,
                mean_receiver_score: if t.scored == 0 { f64::NAN } else { t.score_sum / t.scored as f64 },
                in_top: t.in_top,
                enrichment: if top_tagged == 0 { f64::NAN } else { share_top / share_all },
            }
        })
        .collect();
    rows.sort_by(|a, b| b.in_top.cmp(&a.in_top).then(b.sentences.cmp(&a.sentences)).then(a.tag.cmp(&b.tag)));
    rows
}

/// Result of [`run_anchors`].
#[derive(Debug)]
pub struct AnchorsResult {
    pub config: AnchorsConfig,
    pub traces: Vec<Trace>,
    pub receivers: CorpusReceivers,
    /// The suppression trace's name, matrix and files, and whether the matrix was computed.
    pub suppression_trace: String,
    pub suppression: SuppressionMatrix,
    pub suppression_files: SuppressionFiles,
    pub suppression_computed: bool,
    pub outgoing: Vec<f64>,
    pub agreement: RankCorrelation,
    pub rows: Vec<SentenceRow>,
    pub tags: Vec<TagRow>,
    pub model_name: String,
    /// Files written into `config.out`.
    pub files: Vec<PathBuf>,
}

impl AnchorsResult {
    /// One line: corpus, heads, agreement.
    pub fn headline(&self) -> String {
        format!(
            "{} traces ({} left out), top {} receiver heads; {}: Spearman rho {:.3} between receiver score and outgoing suppression importance (n = {}, permutation p = {:.4})",
            self.receivers.heads.responses.len(),
            self.receivers.too_long.len() + self.receivers.heads.skipped.len(),
            self.receivers.heads.top_k_heads.len(),
            self.suppression_trace,
            self.agreement.rho,
            self.agreement.n,
            self.agreement.p_permutation
        )
    }
}

/// The whole analysis: receiver heads over the traces, suppression of one trace, agreement, tags,
/// and the files in `config.out` (`receiver_heads.json`, `sentence_scores.csv`, `tag_summary.csv`,
/// `agreement.json`, `suppression/<trace>/…`, figures, `explorer.html` (the suppression trace in
/// the trace explorer) and `index.html`).
pub fn run_anchors(config: &AnchorsConfig) -> Result<AnchorsResult> {
    // A file where a folder goes, or an --out of other files, fails now, not after the passes.
    crate::io::check_output_folder(&config.out, &[&config.cache_dir])?;
    crate::io::check_folder_or_absent(&config.cache_dir)?;
    config.suppression_options().validate()?;
    let mut traces = config.load_traces()?;
    let loaded = Model::load(&config.model, &config.settings)?;
    let receivers = corpus_receivers(
        &loaded,
        &config.cache_dir,
        &mut traces,
        config.boundary_mode,
        &config.receiver,
        config.drop_first,
        config.explorer_options().token_pairs_to_store(),
    )?;
    let trace = suppression_trace(&traces, &receivers, config.suppression_trace.as_deref(), config.min_sentences)?.clone();
    // The output folder is built whole and swapped in; the suppression run of this trace in the
    // folder it replaces is read back from there, not computed again.
    let out = config.out.clone();
    crate::io::write_output_folder(&out, &[&config.cache_dir], |staging| {
        let subdir = suppression_subdir(&trace);
        let (matrix, files, computed) =
            cached_suppression_from(&staging.join(&subdir), &out.join(&subdir), &loaded, &trace.sentences, &config.suppression_options())?;
        let mut result = anchors_result(config, traces, receivers, &trace, matrix, files, computed, &loaded)?;
        write_outputs(&mut result, staging)?;
        // The paths the files will have once the folder is in place.
        let moved = |p: &Path| out.join(p.strip_prefix(staging).unwrap_or(p));
        result.files = result.files.iter().map(|p| moved(p)).collect();
        let f = &mut result.suppression_files;
        for path in [&mut f.step_importance, &mut f.matrix, &mut f.kl, &mut f.heatmap, &mut f.manifest] {
            *path = moved(path);
        }
        Ok(result)
    })
}

/// The numbers of a run, from the receiver heads and the suppression of `trace`.
#[allow(clippy::too_many_arguments)]
fn anchors_result(
    config: &AnchorsConfig,
    traces: Vec<Trace>,
    receivers: CorpusReceivers,
    trace: &Trace,
    matrix: SuppressionMatrix,
    suppression_files: SuppressionFiles,
    suppression_computed: bool,
    loaded: &Loaded,
) -> Result<AnchorsResult> {
    let outgoing = outgoing_importance(&matrix);
    let receiver = receivers.scores_of(&trace.name).expect("the suppression trace has receiver scores").to_vec();
    let agreement = spearman(&receiver, &outgoing, config.permutations, config.seed)?;
    let rows = sentence_rows(&trace, &receiver, &outgoing);
    let tags = tag_summary(&traces, &receivers, config.top_sentences);
    let result = AnchorsResult {
        config: config.clone(),
        traces,
        receivers,
        suppression_trace: trace.name.clone(),
        suppression: matrix,
        suppression_files,
        suppression_computed,
        outgoing,
        agreement,
        rows,
        tags,
        model_name: loaded.name.clone(),
        files: Vec::new(),
    };
    Ok(result)
}

/// The receiver scores of every analysed trace, a row per sentence: `trace, sentence,
/// receiver_score, receiver_rank, tags, text`.
pub(crate) fn corpus_sentence_table(traces: &[Trace], receivers: &CorpusReceivers) -> Result<DataFrame> {
    let (mut trace, mut sentence, mut score, mut rank, mut tags, mut text) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in traces {
        let Some(scores) = receivers.scores_of(&t.name) else { continue };
        for row in sentence_rows(t, scores, &[]) {
            trace.push(t.name.clone());
            sentence.push(row.sentence as u32);
            score.push(row.receiver_score);
            rank.push(row.receiver_rank as u32);
            tags.push(row.tags.join(";"));
            text.push(row.text);
        }
    }
    Ok(DataFrame::new_infer_height(vec![
        Column::new("trace".into(), trace),
        Column::new("sentence".into(), sentence),
        Column::new("receiver_score".into(), score),
        Column::new("receiver_rank".into(), rank),
        Column::new("function_tags".into(), tags),
        Column::new("text".into(), text),
    ])?)
}

/// `rows` as a table (`sentence, receiver_score, outgoing_importance, receiver_rank,
/// suppression_rank, function_tags, text`), optionally only the sentences in the top `top` by
/// either measure, ordered by receiver rank.
pub fn sentence_table(rows: &[SentenceRow], top: Option<usize>) -> Result<DataFrame> {
    let mut kept: Vec<&SentenceRow> = rows
        .iter()
        .filter(|r| {
            top.is_none_or(|k| (r.receiver_rank >= 1 && r.receiver_rank <= k) || (r.suppression_rank >= 1 && r.suppression_rank <= k))
        })
        .collect();
    if top.is_some() {
        kept.sort_by_key(|r| (if r.receiver_rank == 0 { usize::MAX } else { r.receiver_rank }, r.suppression_rank));
    }
    Ok(DataFrame::new_infer_height(vec![
        Column::new("sentence".into(), kept.iter().map(|r| r.sentence as u32).collect::<Vec<_>>()),
        Column::new("receiver_score".into(), kept.iter().map(|r| r.receiver_score).collect::<Vec<_>>()),
        Column::new("outgoing_importance".into(), kept.iter().map(|r| r.outgoing_importance).collect::<Vec<_>>()),
        Column::new("receiver_rank".into(), kept.iter().map(|r| r.receiver_rank as u32).collect::<Vec<_>>()),
        Column::new("suppression_rank".into(), kept.iter().map(|r| r.suppression_rank as u32).collect::<Vec<_>>()),
        Column::new("function_tags".into(), kept.iter().map(|r| r.tags.join(";")).collect::<Vec<_>>()),
        Column::new("text".into(), kept.iter().map(|r| r.text.clone()).collect::<Vec<_>>()),
    ])?)
}

/// `tags` as a table.
pub fn tag_table(tags: &[TagRow]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        Column::new("function_tag".into(), tags.iter().map(|t| t.tag.clone()).collect::<Vec<_>>()),
        Column::new("sentences".into(), tags.iter().map(|t| t.sentences as u32).collect::<Vec<_>>()),
        Column::new("mean_receiver_score".into(), tags.iter().map(|t| t.mean_receiver_score).collect::<Vec<_>>()),
        Column::new("in_top".into(), tags.iter().map(|t| t.in_top as u32).collect::<Vec<_>>()),
        Column::new("enrichment".into(), tags.iter().map(|t| t.enrichment).collect::<Vec<_>>()),
    ])?)
}

/// Mean kurtosis of every head (layers down, heads across), the selected heads listed in the title.
pub fn kurtosis_heatmap(heads: &ReceiverHeads, model: &str) -> Result<Figure> {
    let k = &heads.mean_kurtosis;
    let first: Vec<String> = heads.top_k_heads.iter().take(5).map(|(l, h)| format!("L{l}H{h}")).collect();
    plot::heatmap_matrix(
        &k.values,
        k.layers,
        k.heads,
        &HeatmapOptions {
            title: format!(
                "Mean kurtosis of vertical scores | {model} | {} traces | top: {}",
                heads.responses.len(),
                first.join(", ")
            ),
            x_title: "head".into(),
            y_title: "layer".into(),
            colorbar_title: "kurtosis".into(),
            color_limits: ColorLimits::Auto,
            square_cells: false,
            ..Default::default()
        },
    )
}

/// Receiver score and outgoing importance along the suppression trace `name`, one figure each
/// (their scales differ), each measure's `top` sentences marked.
pub fn trace_curves(rows: &[SentenceRow], name: &str, top: usize) -> Result<(Figure, Figure)> {
    let receiver: Vec<f64> = rows.iter().map(|r| r.receiver_score).collect();
    let outgoing: Vec<f64> = rows.iter().map(|r| r.outgoing_importance).collect();
    let marked = |rank: fn(&SentenceRow) -> usize| -> Vec<usize> {
        rows.iter().filter(|r| (1..=top).contains(&rank(r))).map(|r| r.sentence).collect()
    };
    let receiver_figure = plot::line_scores(
        &[Series::new("receiver score", receiver)],
        &LineOptions {
            title: format!("Receiver score per sentence | {name} | top {top} marked"),
            y_title: "receiver score (mean vertical score of the top heads)".into(),
            highlight: marked(|r| r.receiver_rank),
            highlight_name: format!("top {top}"),
            ..Default::default()
        },
    )?;
    let outgoing_figure = plot::line_scores(
        &[Series::new("outgoing importance", outgoing)],
        &LineOptions {
            title: format!("Outgoing suppression importance | {name} | top {top} marked"),
            x_title: "source sentence".into(),
            y_title: "mean log(KL + 1e-9) over later sentences".into(),
            highlight: marked(|r| r.suppression_rank),
            highlight_name: format!("top {top}"),
            highlight_color: "darkorange".into(),
            ..Default::default()
        },
    )?;
    Ok((receiver_figure, outgoing_figure))
}

/// Receiver score against outgoing importance, one point per sentence (hover: index and tags).
pub fn agreement_scatter(rows: &[SentenceRow], agreement: &RankCorrelation) -> Result<Figure> {
    let x: Vec<f64> = rows.iter().map(|r| r.receiver_score).collect();
    let y: Vec<f64> = rows.iter().map(|r| r.outgoing_importance).collect();
    let labels: Vec<String> = rows.iter().map(|r| format!("sentence {} [{}]", r.sentence, r.tags.join(", "))).collect();
    let a = agreement;
    plot::scatter_with_fit(
        &x,
        &y,
        Some(&labels),
        &ScatterOptions {
            title: format!(
                "Receiver score vs outgoing suppression importance | Spearman rho = {:.3}, permutation p = {:.4} (n = {}, B = {})",
                a.rho, a.p_permutation, a.n, a.permutations
            ),
            x_title: "receiver score".into(),
            y_title: "outgoing importance (mean log KL)".into(),
            name: "sentences".into(),
            ..Default::default()
        },
    )
}

/// The traces: `trace, sentences, tagged (sentences with any function tag), tokens` (tokens once
/// [`corpus_receivers`] has counted them).
pub fn trace_table(traces: &[Trace]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        Column::new("trace".into(), traces.iter().map(|t| t.name.clone()).collect::<Vec<_>>()),
        Column::new("sentences".into(), traces.iter().map(|t| t.sentences.len() as u32).collect::<Vec<_>>()),
        Column::new("tagged".into(), traces.iter().map(|t| t.tags.iter().filter(|g| !g.is_empty()).count() as u32).collect::<Vec<_>>()),
        Column::new("tokens".into(), traces.iter().map(|t| t.n_tokens.map(|n| n as u32)).collect::<Vec<_>>()),
    ])?)
}

/// The selected heads, largest mean kurtosis first: `rank, layer, head, mean_kurtosis`.
pub fn heads_table(heads: &ReceiverHeads) -> Result<DataFrame> {
    let top = &heads.top_k_heads;
    Ok(DataFrame::new_infer_height(vec![
        Column::new("rank".into(), (1..=top.len() as u32).collect::<Vec<_>>()),
        Column::new("layer".into(), top.iter().map(|&(l, _)| l as u32).collect::<Vec<_>>()),
        Column::new("head".into(), top.iter().map(|&(_, h)| h as u32).collect::<Vec<_>>()),
        Column::new("mean_kurtosis".into(), top.iter().map(|&(l, h)| heads.mean_kurtosis.get(l, h)).collect::<Vec<_>>()),
    ])?)
}

/// Every file of a run, into `out` (the staging folder that becomes `config.out`).
fn write_outputs(result: &mut AnchorsResult, out: &Path) -> Result<()> {
    let mut files = Vec::new();
    let heads = &result.receivers.heads;
    let path = out.join("receiver_heads.json");
    let heads_json: serde_json::Value = serde_json::from_str(&heads.to_json()).expect("our own JSON");
    write_json(
        &path,
        &serde_json::json!({
            "model": result.model_name,
            "top_k": result.config.receiver.top_k,
            "proximity_ignore": result.config.receiver.vertical.proximity_ignore,
            "drop_first": result.config.drop_first,
            "traces": heads.responses,
            "skipped": heads.skipped.iter().chain(&result.receivers.too_long).map(|(n, why)| serde_json::json!({"trace": n, "why": why})).collect::<Vec<_>>(),
            "top_k_heads": heads_json["top_k_heads"],
            "mean_kurtosis": heads_json["mean_kurtosis"],
        }),
    )?;
    files.push(path);
    let mut write_csv = |df: DataFrame, name: &str| -> Result<()> {
        let path = out.join(name);
        let mut bytes = Vec::new();
        CsvWriter::new(&mut bytes).finish(&mut df.clone()).while_doing_with(|| format!("writing {}", path.display()))?;
        write_atomic(&path, &bytes)?;
        files.push(path);
        Ok(())
    };
    write_csv(corpus_sentence_table(&result.traces, &result.receivers)?, "sentence_scores.csv")?;
    write_csv(sentence_table(&result.rows, None)?, "suppression_trace_sentences.csv")?;
    write_csv(tag_table(&result.tags)?, "tag_summary.csv")?;
    let path = out.join("agreement.json");
    write_json(
        &path,
        &serde_json::json!({
            "trace": result.suppression_trace,
            "measure_x": "receiver score (mean vertical score over the top-k receiver heads)",
            "measure_y": "outgoing suppression importance (mean over later targets of mean log(KL + 1e-9))",
            "spearman": result.agreement,
            "sentences": result.rows,
        }),
    )?;
    files.push(path);
    let kurtosis = kurtosis_heatmap(heads, &result.model_name)?;
    let supp = suppression_heatmap(&result.suppression, &format!("Attention suppression | {}", result.suppression_trace))?;
    let (receiver_curve, outgoing_curve) = trace_curves(&result.rows, &result.suppression_trace, result.config.top_sentences)?;
    let scatter = agreement_scatter(&result.rows, &result.agreement)?;
    let figures = [
        ("receiver_kurtosis", &kurtosis),
        ("suppression_heatmap", &supp),
        ("receiver_scores", &receiver_curve),
        ("outgoing_importance", &outgoing_curve),
        ("agreement_scatter", &scatter),
    ];
    for (name, figure) in figures {
        let path = out.join(format!("{name}.html"));
        figure.write_html(&path)?;
        files.push(path);
    }
    // The suppression trace in the interactive explorer (cache and suppression read, no pass;
    // the token view from the pairs the entry stores, which are of the trace's own top receiver
    // heads: the corpus heads were not known when it was filled).
    let explorer = out.join("explorer.html");
    let trace = result
        .traces
        .iter()
        .find(|t| t.name == result.suppression_trace)
        .ok_or_else(|| Error::invalid(format!("suppression trace {} is not among the traces", result.suppression_trace)))?;
    let options = crate::plot::ExplorerOptions {
        suppression_dir: result.suppression_files.matrix.parent().map(Path::to_path_buf),
        receiver_heads: Some(heads.top_k_heads.clone()),
        ..result.config.explorer_options()
    };
    let mut page = crate::plot::Explorer::from_problem_dir(&trace.dir, &options)?;
    // Its notes name the suppression folder where it will be, not in the staging folder.
    let (staging, target) = (out.display().to_string(), result.config.out.display().to_string());
    page.notes.iter_mut().for_each(|note| *note = note.replace(&staging, &target));
    page.write_html(&explorer)?;
    files.push(explorer);
    let report = Report::new(format!("Receiver heads vs attention suppression | {}", result.model_name))
        .text(result.headline())
        .html("<p><a href=\"explorer.html\">The suppression trace in the interactive trace explorer</a> (explorer.html)</p>")
        .figure(&kurtosis)
        .table(&heads_table(heads)?)
        .table(&tag_table(&result.tags)?)
        .figure(&supp)
        .figure(&receiver_curve)
        .figure(&outgoing_curve)
        .figure(&scatter)
        .table(&sentence_table(&result.rows, Some(result.config.top_sentences))?);
    let path = out.join("index.html");
    report.write_html(&path)?;
    files.push(path);
    result.files = files;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_descending_with_undefined_last() {
        assert_eq!(descending_ranks(&[0.2, f64::NAN, 0.5, 0.2]), vec![2, 0, 1, 3]);
    }
}
