//! Black-box thought anchors: upstream's per-chunk importance metrics from resampled rollouts,
//! re-stated from thought-anchors `analyze_rollouts.py` (`analyze_problem`,
//! `process_chunk_importance`, `calculate_*_importance_*`, `calculate_kl_divergence`), and the
//! `thoughtscope importance` job that writes them into a `chunks_labeled.json`-shaped file.
//!
//! Inputs (upstream's layout): `<problem>/chunks.json`, optionally `<problem>/chunks_labeled.json`,
//! the rollouts `<rollouts>/chunk_<i>/solutions.json` (arrays of `{chunk_removed,
//! prefix_without_chunk, chunk_resampled, rollout, full_cot, answer, is_correct}`; API-error stubs
//! `{chunk_removed, prefix_without_chunk, error}` have neither `answer` nor `is_correct`, so every
//! count below leaves them out, exactly as upstream's field tests do) and optionally the
//! forced-answer rollouts `<forced>/chunk_<i>/solutions.json`.
//!
//! # Definitions (upstream's, field names as upstream writes them)
//!
//! Kept chunks are those of `chunks.json` with at least 4 characters. For a kept chunk `i` whose
//! `solutions.json` exists:
//! - `accuracy` = right / counted over solutions with a non-empty raw `answer` and `is_correct`
//!   true or false (missing / null not counted); 0.0 when none is counted.
//! - `chunk_info[i]` (non-empty files only): the solutions whose raw `answer` is neither `""`
//!   nor `"None"`, with the answer normalised ([`normalize_answer`](crate::rollout::answers::normalize_answer))
//!   and a missing `is_correct` read as false (null stays null).
//! - `next(i)` is the smallest chunk after `i` in `chunk_info` (chunks with no rollouts or only an
//!   empty array are skipped over).
//! - **counterfactual**: a pair is `(chunk_removed, chunk_resampled)` of a `chunk_info[i]` entry
//!   when both are strings; it is *different* when the cosine of their all-MiniLM-L6-v2
//!   embeddings is `< 0.8` (a cosine of exactly 0.8 is similar).
//!   `different_trajectories_fraction` = different pairs / `len(chunk_info[i])`;
//!   `overdeterminedness` = 1 − distinct resampled chunks / pairs (exact strings);
//!   `counterfactual_importance_accuracy` = acc(different) − acc(`chunk_info[next(i)]`), acc as
//!   above on the normalised answers; `counterfactual_importance_kl` = KL(different ‖
//!   `chunk_info[next(i)]` + similar). Both are 0.0 when no pair is different or `next(i)` has no
//!   entries.
//! - **resampling**: `resampling_importance_accuracy` = `accuracy[i+1] − accuracy[i]` (exactly
//!   `i+1`); `resampling_importance_kl` = KL(all entries of chunk `i` ‖ all of `next(i)`).
//! - **forced** (only with a forced folder): forced accuracy per kept chunk as `accuracy`, 0.0
//!   for a chunk without forced rollouts; `forced_importance_accuracy` = forced accuracy of the
//!   next kept chunk − this one's; `forced_importance_kl` = KL of the two chunks' forced
//!   solutions, 0.0 when either has no non-empty normalised answer.
//! - **KL** (`calculate_kl_divergence`): counts of non-empty normalised answers, `V` = distinct
//!   answers of both, `p = (c₁ + α)/(n₁ + αV)`, `q` likewise, `Σ p·ln(p/q)` floored at 0, α = 1e-9;
//!   0.0 when either side has no answer.
//!
//! # Quirks kept (the default reproduces upstream's published numbers)
//! - `--use_prob_true` is declared `action='store_false'` with `default=False`: it is False
//!   whether given or not, so every published `*_kl` is the answer-distribution KL above with
//!   α = 1e-9 (never Laplace smoothing, never P(true)). [`KlMode::ProbTrue`] computes what the flag
//!   was meant to (binary KL of P(correct), same α).
//! - `--use_similar_chunks` is `store_true` with `default=True`: the counterfactual KL always
//!   compares against next + similar.
//! - Answers are normalised once for `chunk_info`, again to build the counterfactual
//!   distributions, and again inside the KL: three times for `counterfactual_importance_kl`, once
//!   for the other KLs. Normalisation is not idempotent (each pass peels one level of braces).
//! - The resampling KL reads the raw files, so answers `"None"` count there (as `"none"`) while
//!   `chunk_info` and hence the counterfactual metrics drop them.
//! - `resampling_importance_accuracy` uses exactly chunk `i+1` while the KLs use `next(i)`: a
//!   dropped or missing chunk `i+1` gives 0.0 (corrected: [`Corrections::resampling_next_present_chunk`]).
//! - The last chunk (no `next`) gets 0.0 for every counterfactual and resampling field, including
//!   `different_trajectories_fraction` and `overdeterminedness` (corrected:
//!   [`Corrections::last_chunk_trajectories`]), and 0.0 forced fields.
//! - A kept chunk with no forced rollouts has forced accuracy 0.0, so its neighbours' forced
//!   importance jumps (corrected: [`Corrections::forced_missing_left_out`]).
//! - Without `chunks_labeled.json`, upstream computes the metrics of chunk *position* `k` (among
//!   kept chunks) and stores them on the `k`-th kept chunk, a shift wherever a short chunk was
//!   dropped; `accuracy` is the chunk's own (corrected: [`Corrections::unlabelled_own_index`]).
//! - `--absolute` (`|·|` of the three accuracy differences) is off by default, as upstream.
//! - A problem where fewer than 10% of the kept chunks have a `chunk_<i>` folder is not analysed
//!   (upstream prints "25%" but tests 10%).
//! - Labelled entries whose chunk is not kept are dropped from the output;
//!   `absolute_importance_accuracy` / `absolute_importance_kl` are removed; keys are ordered as
//!   upstream's `key_order` (`chunk`, `chunk_idx`, `function_tags`, `depends_on`, `accuracy`, the
//!   metrics, `summary`), then the others (sorted by name here; upstream keeps file order).
//!
//! # Deviations (where upstream gives no number or varies between runs)
//! - A kept chunk without `solutions.json`: upstream stops with a KeyError when it writes
//!   `accuracy`; here its `accuracy` is left out of the output entry (its other fields are
//!   upstream's functions' values, which handle the absence) and the report lists the chunk.
//! - Malformed input (invalid JSON, an `answer` that is not a string, an `is_correct` that is not
//!   a boolean or null, a labelled entry without an integer `chunk_idx`) is an error naming the
//!   file and entry; upstream crashes or, in the forced folder, silently counts 0.0.
//! - `--forced DIR` names the problem's forced folder (`<forced root>/<problem>`); a DIR that does
//!   not exist is an error. Without `--forced` the forced fields of the input are left as they
//!   are, as upstream does when the forced folder of a problem is absent.
//! - The KL sums over answers in sorted order (upstream iterates a Python set, whose order changes
//!   between runs: the last bits differ). Cosines are computed in f64 from f32 embeddings
//!   (upstream: f32).
//! - The embedder is our candle port of the sentence-transformers model ([`embedder`]);
//!   embeddings agree with sentence-transformers' within 1e-5, so only a cosine within ~1e-5 of
//!   0.8 could classify differently.

pub mod embedder;
pub mod files;
pub mod metrics;

pub use embedder::{default_embedder_dir, SentenceEmbedder};
pub use files::{load_problem, run_importance, write_chunks_labeled, ImportanceConfig, ImportanceReport};
pub use metrics::{chunk_importances, ChunkImportance, Correctness, Corrections, ImportanceOptions, KlMode, ProblemSolutions, Solution};
