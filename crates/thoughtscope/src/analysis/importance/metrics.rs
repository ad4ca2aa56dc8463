//! The per-chunk metrics on solutions already in memory (see the parent module's doc for the
//! definitions and every quirk). Mirrors thought-anchors `analyze_rollouts.py`:
//! `analyze_problem` (accuracies, `chunk_info`, forced accuracies), `process_chunk_importance`,
//! `calculate_{resampling,counterfactual,forced}_importance_{accuracy,kl}` and
//! `calculate_kl_divergence`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::rollout::answers::normalize_answer;

/// A solution's `is_correct` as upstream's `dict.get` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correctness {
    /// No `is_correct` key (upstream's API-error stubs).
    Missing,
    /// `"is_correct": null`.
    Null,
    Known(bool),
}

/// One entry of a `chunk_<i>/solutions.json` array, reduced to the fields the metrics read.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// `answer`; `None` when the key is absent (an error stub), which upstream reads as `""`.
    pub answer: Option<String>,
    pub is_correct: Correctness,
    /// `chunk_removed`: `Some("")` when absent (upstream's default), `None` when present but not
    /// a string (upstream's `isinstance(…, str)` test then leaves the solution out of the pairs).
    pub chunk_removed: Option<String>,
    pub chunk_resampled: Option<String>,
}

impl Solution {
    /// From one JSON entry; `Err(what)` names the field that has a type upstream cannot use
    /// (a non-string `answer` crashes upstream's `normalize_answer`; a non-boolean `is_correct`
    /// would be counted as neither right nor missing).
    pub(crate) fn from_json(entry: &Value) -> Result<Solution, String> {
        let object = entry.as_object().ok_or_else(|| format!("expected an object, found {}", kind(entry)))?;
        let answer = match object.get("answer") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(format!("field `answer` should be a string, found {}", kind(other))),
        };
        let is_correct = match object.get("is_correct") {
            None => Correctness::Missing,
            Some(Value::Null) => Correctness::Null,
            Some(Value::Bool(b)) => Correctness::Known(*b),
            Some(other) => return Err(format!("field `is_correct` should be true, false or null, found {}", kind(other))),
        };
        let text = |field: &str| match object.get(field) {
            None => Some(String::new()),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        };
        Ok(Solution { answer, is_correct, chunk_removed: text("chunk_removed"), chunk_resampled: text("chunk_resampled") })
    }

    /// `sol.get("answer", "")`.
    fn answer_or_empty(&self) -> &str {
        self.answer.as_deref().unwrap_or("")
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The divergence behind the `*_kl` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlMode {
    /// KL between the normalised-answer distributions, smoothing alpha 1e-9: what upstream
    /// always computes (its `--use_prob_true` flag is `store_false` with default False).
    #[default]
    AnswerDistribution,
    /// KL between the Bernoulli distributions of `is_correct` (alpha 1e-9): what upstream's
    /// `--use_prob_true` was meant to switch on.
    ProbTrue,
}

/// Corrections of upstream bugs that change numbers; all off (faithful) by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Corrections {
    /// `resampling_importance_accuracy` compares a chunk with the next chunk that has
    /// solutions; upstream compares with exactly `chunk_idx + 1`, which gives 0.0 when that chunk
    /// was dropped (shorter than 4 characters) or has no rollouts.
    pub resampling_next_present_chunk: bool,
    /// A chunk with no forced-answer `solutions.json` is left out of the forced metrics; upstream
    /// counts it as forced accuracy 0.0, so it and its predecessor get ± the neighbour's accuracy.
    pub forced_missing_left_out: bool,
    /// `different_trajectories_fraction` and `overdeterminedness` of a chunk with no later chunk
    /// (the last one) computed as for the others; upstream returns 0.0 for both.
    pub last_chunk_trajectories: bool,
    /// Without `chunks_labeled.json`, each chunk's metrics are its own; upstream computes the
    /// metrics of chunk *position* `i` among the kept chunks (`range(len(valid_chunk_indices))`)
    /// and stores them on the `i`-th kept chunk, shifted wherever a short chunk was dropped.
    pub unlabelled_own_index: bool,
}

impl Corrections {
    /// Every correction on.
    pub fn all() -> Corrections {
        Corrections {
            resampling_next_present_chunk: true,
            forced_missing_left_out: true,
            last_chunk_trajectories: true,
            unlabelled_own_index: true,
        }
    }
}

/// Settings of the metrics; the default is upstream's `analyze_rollouts.py` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportanceOptions {
    /// Cosine similarity below which a resampled chunk counts as different (`--similarity_threshold`).
    pub similarity_threshold: f64,
    /// `|·|` of the accuracy differences (`--absolute`).
    pub absolute: bool,
    pub kl: KlMode,
    pub corrections: Corrections,
}

impl Default for ImportanceOptions {
    fn default() -> Self {
        ImportanceOptions { similarity_threshold: super::embedder::SIMILARITY_THRESHOLD, absolute: false, kl: KlMode::AnswerDistribution, corrections: Corrections::default() }
    }
}

/// One problem's inputs, as read from disk (see `load_problem`).
#[derive(Debug, Clone, Default)]
pub struct ProblemSolutions {
    /// `chunks.json` `chunks`, all of them (those under 4 characters are dropped here).
    pub chunks: Vec<String>,
    /// The chunk indices whose `chunk_<i>` folder exists (upstream's 10% rule counts these).
    pub chunk_dirs: BTreeSet<usize>,
    /// Every entry of `chunk_<i>/solutions.json`, for each chunk whose file exists.
    pub rollouts: BTreeMap<usize, Vec<Solution>>,
    /// The forced-answer rollouts of the problem: `None` without a forced folder; else the
    /// solutions of each chunk whose forced `solutions.json` exists.
    pub forced: Option<BTreeMap<usize, Vec<Solution>>>,
    /// The `chunk_idx` of each `chunks_labeled.json` entry, in file order; `None` without one.
    pub labelled: Option<Vec<usize>>,
}

/// Upstream's per-chunk fields for one chunk (names as in `chunks_labeled.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkImportance {
    pub chunk_idx: usize,
    /// `None` when the chunk has no `solutions.json` (upstream stops with a KeyError there).
    pub accuracy: Option<f64>,
    pub resampling_importance_accuracy: f64,
    pub resampling_importance_kl: f64,
    pub counterfactual_importance_accuracy: f64,
    pub counterfactual_importance_kl: f64,
    /// `None` without forced-answer rollouts (upstream then leaves these fields as they were).
    pub forced_importance_accuracy: Option<f64>,
    pub forced_importance_kl: Option<f64>,
    pub different_trajectories_fraction: f64,
    pub overdeterminedness: f64,
}

/// Upstream's `chunk_info` entry: a solution with a non-empty answer other than `"None"`.
#[derive(Debug, Clone)]
struct Kept {
    chunk_removed: Option<String>,
    chunk_resampled: Option<String>,
    /// `sol.get("is_correct", False)`: a missing key reads as false here, `null` as `None`.
    is_correct: Option<bool>,
    /// `normalize_answer(answer)`.
    answer: String,
}

/// `chunks.json` chunks kept by upstream (at least 4 characters), as `(index, text)`.
pub(crate) fn kept_chunks(chunks: &[String]) -> Vec<(usize, &str)> {
    chunks.iter().enumerate().filter(|(_, c)| c.chars().count() >= 4).map(|(i, c)| (i, c.as_str())).collect()
}

/// Accuracy as `analyze_problem` computes it: right / counted over the solutions with a
/// non-empty raw answer, counting those with `is_correct` true or false (missing and null left out).
fn accuracy_of(solutions: &[Solution]) -> f64 {
    let counted = solutions.iter().filter(|s| !s.answer_or_empty().is_empty());
    let (mut right, mut total) = (0usize, 0usize);
    for s in counted {
        match s.is_correct {
            Correctness::Known(b) => {
                total += 1;
                right += b as usize;
            }
            Correctness::Missing | Correctness::Null => {}
        }
    }
    if total > 0 {
        right as f64 / total as f64
    } else {
        0.0
    }
}

/// The same over `chunk_info` entries (normalised answers; a missing `is_correct` counts as false).
fn kept_accuracy(entries: &[&Kept]) -> f64 {
    let counted: Vec<&&Kept> = entries.iter().filter(|k| !k.answer.is_empty() && k.is_correct.is_some()).collect();
    if counted.is_empty() {
        return 0.0;
    }
    counted.iter().filter(|k| k.is_correct == Some(true)).count() as f64 / counted.len() as f64
}

const ALPHA: f64 = 1e-9;

/// `calculate_kl_divergence(…, use_prob_true=False)`: answers normalised once more here, empty
/// ones dropped, `Σ p·ln(p/q)` over the union of answers in sorted order (upstream iterates a
/// Python set, whose order varies between runs; the sum differs in the last bits only), floored at 0.
fn answer_kl<'a>(first: impl IntoIterator<Item = &'a str>, second: impl IntoIterator<Item = &'a str>) -> f64 {
    let count = |answers: &mut dyn Iterator<Item = &'a str>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for a in answers {
            let a = normalize_answer(a);
            if !a.is_empty() {
                *counts.entry(a).or_default() += 1;
            }
        }
        counts
    };
    let (p_counts, q_counts) = (count(&mut first.into_iter()), count(&mut second.into_iter()));
    if p_counts.is_empty() || q_counts.is_empty() {
        return 0.0;
    }
    let union: BTreeSet<&String> = p_counts.keys().chain(q_counts.keys()).collect();
    let v = union.len() as f64;
    let p_total = p_counts.values().sum::<usize>() as f64 + ALPHA * v;
    let q_total = q_counts.values().sum::<usize>() as f64 + ALPHA * v;
    let mut kl = 0.0;
    for answer in union {
        let p = (p_counts.get(answer).copied().unwrap_or(0) as f64 + ALPHA) / p_total;
        let q = (q_counts.get(answer).copied().unwrap_or(0) as f64 + ALPHA) / q_total;
        kl += p * (p / q).ln();
    }
    kl.max(0.0)
}

/// `calculate_kl_divergence(…, use_prob_true=True)` on `is_correct` values (`None` not counted).
fn prob_true_kl(first: impl IntoIterator<Item = Option<bool>>, second: impl IntoIterator<Item = Option<bool>>) -> f64 {
    let tally = |values: &mut dyn Iterator<Item = Option<bool>>| {
        values.fold((0usize, 0usize), |(right, total), v| match v {
            Some(b) => (right + b as usize, total + 1),
            None => (right, total),
        })
    };
    let ((r1, t1), (r2, t2)) = (tally(&mut first.into_iter()), tally(&mut second.into_iter()));
    if t1 == 0 || t2 == 0 {
        return 0.0;
    }
    let p = (r1 as f64 + ALPHA) / (t1 as f64 + 2.0 * ALPHA);
    let q = (r2 as f64 + ALPHA) / (t2 as f64 + 2.0 * ALPHA);
    (p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln()).max(0.0)
}

fn raw_correctness(s: &Solution) -> Option<bool> {
    match s.is_correct {
        Correctness::Known(b) => Some(b),
        Correctness::Missing | Correctness::Null => None,
    }
}

fn solutions_kl(mode: KlMode, first: &[Solution], second: &[Solution]) -> f64 {
    match mode {
        KlMode::AnswerDistribution => answer_kl(first.iter().map(Solution::answer_or_empty), second.iter().map(Solution::answer_or_empty)),
        KlMode::ProbTrue => prob_true_kl(first.iter().map(raw_correctness), second.iter().map(raw_correctness)),
    }
}

fn next_key<V>(map: &BTreeMap<usize, V>, after: usize) -> Option<usize> {
    map.range(after + 1..).next().map(|(&k, _)| k)
}

/// Everything `analyze_problem` prepares before the per-chunk metrics.
struct Prepared<'a> {
    accuracies: BTreeMap<usize, f64>,
    info: BTreeMap<usize, Vec<Kept>>,
    raw: &'a BTreeMap<usize, Vec<Solution>>,
    forced_accuracies: Option<BTreeMap<usize, f64>>,
    forced: Option<&'a BTreeMap<usize, Vec<Solution>>>,
}

fn prepare<'a>(problem: &'a ProblemSolutions, kept: &[(usize, &str)], options: &ImportanceOptions) -> Prepared<'a> {
    let mut accuracies = BTreeMap::new();
    let mut info = BTreeMap::new();
    for &(idx, _) in kept {
        let Some(solutions) = problem.rollouts.get(&idx) else { continue };
        accuracies.insert(idx, accuracy_of(solutions));
        if solutions.is_empty() {
            continue;
        }
        let entries = solutions
            .iter()
            .filter(|s| !matches!(s.answer_or_empty(), "" | "None"))
            .map(|s| Kept {
                chunk_removed: s.chunk_removed.clone(),
                chunk_resampled: s.chunk_resampled.clone(),
                is_correct: match s.is_correct {
                    Correctness::Known(b) => Some(b),
                    Correctness::Missing => Some(false),
                    Correctness::Null => None,
                },
                answer: normalize_answer(s.answer_or_empty()),
            })
            .collect();
        info.insert(idx, entries);
    }
    let forced_accuracies = problem.forced.as_ref().map(|forced| {
        let mut out = BTreeMap::new();
        for &(idx, _) in kept {
            match forced.get(&idx) {
                Some(solutions) => {
                    out.insert(idx, accuracy_of(solutions));
                }
                None if !options.corrections.forced_missing_left_out => {
                    out.insert(idx, 0.0);
                }
                None => {}
            }
        }
        out
    });
    Prepared { accuracies, info, raw: &problem.rollouts, forced_accuracies, forced: problem.forced.as_ref() }
}

/// Each kept chunk's metrics, in output order: the labelled chunks that upstream keeps (those of
/// `chunks_labeled.json` at least 4 characters long in `chunks.json`), else every kept chunk.
/// `similarity(removed, resampled)` is the cosine of the two texts' embeddings, `None` when
/// either has none (the pair is then left out, as upstream's cache lookup does).
pub fn chunk_importances(
    problem: &ProblemSolutions,
    similarity: &dyn Fn(&str, &str) -> Option<f64>,
    options: &ImportanceOptions,
) -> Vec<ChunkImportance> {
    let kept = kept_chunks(&problem.chunks);
    let prepared = prepare(problem, &kept, options);
    let kept_indices: BTreeSet<usize> = kept.iter().map(|&(i, _)| i).collect();
    // (the chunk the output entry is, the chunk whose metrics it gets)
    let targets: Vec<(usize, usize)> = match &problem.labelled {
        Some(labelled) => labelled.iter().filter(|i| kept_indices.contains(i)).map(|&i| (i, i)).collect(),
        None => kept
            .iter()
            .enumerate()
            .map(|(position, &(idx, _))| (idx, if options.corrections.unlabelled_own_index { idx } else { position }))
            .collect(),
    };
    targets.into_iter().map(|(idx, query)| one_chunk(&prepared, idx, query, similarity, options)).collect()
}

fn one_chunk(
    prepared: &Prepared,
    chunk_idx: usize,
    query: usize,
    similarity: &dyn Fn(&str, &str) -> Option<f64>,
    options: &ImportanceOptions,
) -> ChunkImportance {
    let signed = |d: f64| if options.absolute { d.abs() } else { d };
    let counterfactual = counterfactual(prepared, query, similarity, options);
    let resampling_importance_accuracy = match prepared.accuracies.get(&query) {
        None => 0.0,
        Some(&current) => {
            let next = if options.corrections.resampling_next_present_chunk {
                next_key(&prepared.accuracies, query)
            } else {
                Some(query + 1)
            };
            match next.and_then(|n| prepared.accuracies.get(&n)) {
                Some(&next) => signed(next - current),
                None => 0.0,
            }
        }
    };
    let resampling_importance_kl = match (prepared.info.contains_key(&query), next_key(&prepared.info, query)) {
        (true, Some(next)) => {
            let (a, b) = (&prepared.raw[&query], &prepared.raw[&next]);
            if a.is_empty() || b.is_empty() {
                0.0
            } else {
                solutions_kl(options.kl, a, b)
            }
        }
        _ => 0.0,
    };
    let (forced_importance_accuracy, forced_importance_kl) = match (&prepared.forced_accuracies, prepared.forced) {
        (Some(accuracies), Some(forced)) if !accuracies.is_empty() => {
            let next = next_key(accuracies, query);
            let accuracy = match (accuracies.get(&query), next) {
                (Some(&current), Some(next)) => signed(accuracies[&next] - current),
                _ => 0.0,
            };
            let kl = match (accuracies.contains_key(&query), next) {
                (true, Some(next)) => {
                    let empty = Vec::new();
                    let current = forced.get(&query).unwrap_or(&empty);
                    let following = forced.get(&next).unwrap_or(&empty);
                    let has_answer = |s: &[Solution]| s.iter().any(|s| !normalize_answer(s.answer_or_empty()).is_empty());
                    if has_answer(&current[..]) && has_answer(&following[..]) {
                        solutions_kl(options.kl, current, following)
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            (Some(accuracy), Some(kl))
        }
        _ => (None, None),
    };
    ChunkImportance {
        chunk_idx,
        accuracy: prepared.accuracies.get(&chunk_idx).copied(),
        resampling_importance_accuracy,
        resampling_importance_kl,
        counterfactual_importance_accuracy: counterfactual.accuracy,
        counterfactual_importance_kl: counterfactual.kl,
        forced_importance_accuracy,
        forced_importance_kl,
        different_trajectories_fraction: counterfactual.different_trajectories_fraction,
        overdeterminedness: counterfactual.overdeterminedness,
    }
}

#[derive(Default)]
struct Counterfactual {
    accuracy: f64,
    kl: f64,
    different_trajectories_fraction: f64,
    overdeterminedness: f64,
}

/// `calculate_counterfactual_importance_accuracy` and `…_kl` together (they split the same pairs).
fn counterfactual(
    prepared: &Prepared,
    query: usize,
    similarity: &dyn Fn(&str, &str) -> Option<f64>,
    options: &ImportanceOptions,
) -> Counterfactual {
    let Some(current) = prepared.info.get(&query) else { return Counterfactual::default() };
    let next_idx = next_key(&prepared.info, query);
    if next_idx.is_none() && !options.corrections.last_chunk_trajectories {
        return Counterfactual::default();
    }
    let mut dissimilar: Vec<&Kept> = Vec::new();
    let mut similar: Vec<&Kept> = Vec::new();
    let mut resampled: Vec<&str> = Vec::new();
    for entry in current {
        let (Some(removed), Some(new)) = (&entry.chunk_removed, &entry.chunk_resampled) else { continue };
        let Some(cosine) = similarity(removed.as_str(), new.as_str()) else { continue };
        if cosine < options.similarity_threshold {
            dissimilar.push(entry);
        } else {
            similar.push(entry);
        }
        resampled.push(new.as_str());
    }
    let different_trajectories_fraction = if current.is_empty() { 0.0 } else { dissimilar.len() as f64 / current.len() as f64 };
    let overdeterminedness = if resampled.is_empty() {
        0.0
    } else {
        1.0 - resampled.iter().collect::<BTreeSet<_>>().len() as f64 / resampled.len() as f64
    };
    let mut out = Counterfactual { different_trajectories_fraction, overdeterminedness, ..Counterfactual::default() };
    let Some(next_idx) = next_idx else { return out };
    let next = &prepared.info[&next_idx];
    if dissimilar.is_empty() || next.is_empty() {
        return out;
    }
    let next_refs: Vec<&Kept> = next.iter().collect();
    out.accuracy = kept_accuracy(&dissimilar) - kept_accuracy(&next_refs);
    if options.absolute {
        out.accuracy = out.accuracy.abs();
    }
    // Upstream normalises the (already normalised) answers once more to build these
    // distributions, and `calculate_kl_divergence` once more again.
    let twice = |entries: &[&Kept]| -> Vec<String> {
        entries.iter().map(|k| normalize_answer(&k.answer)).filter(|a| !a.is_empty()).collect()
    };
    let (dissimilar_answers, similar_answers, next_answers) = (twice(&dissimilar), twice(&similar), twice(&next_refs));
    out.kl = match options.kl {
        KlMode::AnswerDistribution => answer_kl(
            dissimilar_answers.iter().map(String::as_str),
            next_answers.iter().chain(&similar_answers).map(String::as_str),
        ),
        KlMode::ProbTrue => {
            // `answer_correctness`: the last `is_correct` seen for each answer, over this chunk's
            // entries and then the next chunk's.
            let mut correctness: HashMap<String, Option<bool>> = HashMap::new();
            for k in current.iter().chain(next) {
                let a = normalize_answer(&k.answer);
                if !a.is_empty() {
                    correctness.insert(a, k.is_correct);
                }
            }
            let look = |answers: &[String]| -> Vec<Option<bool>> {
                answers.iter().map(|a| correctness.get(a).copied().unwrap_or(Some(false))).collect()
            };
            let comparison: Vec<String> = next_answers.iter().chain(&similar_answers).cloned().collect();
            prob_true_kl(look(&dissimilar_answers), look(&comparison))
        }
    };
    out
}

/// The distinct texts whose embeddings the counterfactual metrics need (upstream's
/// `all_chunks_to_embed`): the string `chunk_removed` / `chunk_resampled` of every `chunk_info`
/// entry, in first-seen order.
pub(crate) fn texts_to_embed(problem: &ProblemSolutions) -> Vec<String> {
    let kept = kept_chunks(&problem.chunks);
    let prepared = prepare(problem, &kept, &ImportanceOptions::default());
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for entries in prepared.info.values() {
        for entry in entries {
            for text in [&entry.chunk_removed, &entry.chunk_resampled].into_iter().flatten() {
                if seen.insert(text.as_str()) {
                    out.push(text.clone());
                }
            }
        }
    }
    out
}
