//! [`Explorer`]: one reasoning trace as an interactive, offline, single-file HTML page (the view
//! the thought-anchors website, thought-anchors.com, gives its published traces, on your own
//! cache): the trace as text sentence by sentence coloured by a chosen per-sentence metric, a
//! click on a sentence listing what it attends to and what attends to it, its suppression row
//! and column and its resampling numbers, and a linked sentence × sentence heatmap.
//!
//! What it reads from a problem directory ([`Explorer::from_problem_dir`]), each part optional
//! and, when absent, listed in [`Explorer::missing`] with the command that makes it:
//! - the sentences (`base_solution.json` / `chunks.json`, as every other command);
//! - the sentence attention `[L, H, N, N]` of the trace from the attention cache
//!   (`<cache>/<model>/<text_id>/`, our entries verified by their manifest, thought-anchors'
//!   `<l>_<h>.npy` entries as they are): the receiver heads (top-k by this trace's kurtosis of
//!   vertical scores, as thought-anchors `receiver_head_funcs.py` selects them over a corpus, or
//!   given), the receiver score per sentence, the vertical scores of those heads;
//! - the attention-suppression matrix of a `thoughtscope suppress` folder, else the website's
//!   `step_importance_supp.json`;
//! - thought-anchors' website files: `chunks_labeled.json` (function tags, and per chunk
//!   `accuracy`, `resampling_importance_*`, `counterfactual_importance_*`, `forced_importance_*`,
//!   `different_trajectories_fraction`, `overdeterminedness` when present, names of
//!   thought-anchors `analyze_rollouts.py`), `step_importance.json` (the counterfactual
//!   sentence-to-sentence matrix) and the resampled alternatives `chunk_<k>/solutions.json`
//!   (else the texts of `chunks_resampled.json`).
//!
//! Size budget (what makes a 300-sentence trace open instantly): every number is rounded to 4
//! significant digits; sentence × sentence matrices are stored as their lower triangle
//! (`N(N+1)/2` values: row = the later sentence) and only for the receiver-head average, at most
//! [`ExplorerOptions::max_head_matrices`] single heads (the heads asked for, then the top receiver
//! heads), the suppression matrix and `step_importance.json`; per-head vertical scores only
//! for the receiver heads and the heads asked for; at most
//! [`ExplorerOptions::max_alternatives`] resampled alternatives per chunk, each cut to 240
//! characters. At N = 300 a matrix is about 45k numbers (≈ 0.4 MB); a page with everything
//! (average + 4 heads, suppression, step importance, every resampling field, 5 alternatives per
//! chunk, the token view) is about 4.3 MB (see [`Explorer::size_summary`] and `thoughtscope bench
//! explorer`).
//!
//! The token view (CircuitsVis-style: one sentence pair token by token) needs token attention
//! from a forward pass: per head, each sentence's top source with the first
//! [`ExplorerOptions::token_max`] tokens of both ([`crate::attention::token_pairs`]); the page
//! keeps [`ExplorerOptions::token_heads`] heads of them ([`TokenView`]), each value as a code
//! 0–1000 of its block's largest value. At N = 300 with 4 heads and 16 tokens that is at most
//! 300 × 4 × 256 codes (about 1 MB). Two ways, one code path ([`Explorer::set_token_view`]):
//! [`Explorer::from_problem_dir_with_model`] runs that pass itself (the sentence matrices shown
//! are the same pass's); [`Explorer::from_problem_dir`] reads the token pairs the cache entry
//! stores: the pass that filled it kept those of the heads the page shows
//! ([`ExplorerOptions::token_pairs_to_store`], what `thoughtscope attn`, `va`, `anchors` and the
//! notebooks' cache fills store), so a page made from the cache has the same token view. An
//! entry without token pairs (written before they were stored) lists the view as missing, with
//! the command that adds them.
//!
//! [`WebsiteTrace`] writes a trace back as the thought-anchors website's own files.

mod build;
mod page;
mod synthetic;
mod website;
mod website_read;

use serde::Serialize;

pub use build::ExplorerOptions;
pub(crate) use build::RESAMPLING_FIELDS;
pub(crate) use page::explorer_fragment;
pub use synthetic::{synthetic_explorer, SyntheticTrace};
pub use website::WebsiteTrace;
pub use website_read::read_step_importance;

/// Everything the page shows, serialised into it as JSON (`Explorer::to_json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Explorer {
    /// Page title.
    pub title: String,
    /// Where the data came from (the problem directory), shown under the title.
    pub source: String,
    /// The model whose attention is shown, if any.
    pub model: Option<String>,
    /// `chunks` or `full-cot`.
    pub mode: String,
    pub sentences: Vec<String>,
    /// Function tags per sentence (empty lists when unlabelled).
    pub tags: Vec<Vec<String>>,
    /// The tag the VA colouring shows.
    pub va_tag: String,
    /// `[layers, heads]` of the attention, when read.
    pub grid: Option<[usize; 2]>,
    /// Receiver heads `[layer, head]`, largest kurtosis first.
    pub receiver_heads: Vec<[usize; 2]>,
    /// Per-sentence values the text can be coloured by.
    pub metrics: Vec<Metric>,
    /// Sentence × sentence matrices (lower triangles).
    pub matrices: Vec<Matrix>,
    /// Resampled alternatives per chunk (empty lists when none were read).
    pub alternatives: Vec<Vec<Alternative>>,
    /// Token-level attention of each sentence and its top source, for a few heads.
    pub token_view: Option<TokenView>,
    /// Parts not shown, with how to make them.
    pub missing: Vec<Missing>,
    /// Notes on how the data were aligned or selected.
    pub notes: Vec<String>,
}

/// One value per sentence (NaN, shown as "–", where undefined).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metric {
    /// Stable identifier (`receiver`, `vertical_12_3`, `accuracy`, ...).
    pub key: String,
    pub label: String,
    /// `attention`, `suppression`, `resampling`.
    pub group: String,
    /// What the number is, one sentence.
    pub description: String,
    #[serde(serialize_with = "compact::serialize")]
    pub values: Vec<f64>,
}

/// A sentence × sentence matrix, lower triangle row by row: row `i` (the later sentence: the
/// one attending, or the target) holds columns `0..=i`, at `i(i+1)/2 + j`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Matrix {
    pub key: String,
    pub label: String,
    /// `attention`, `suppression` or `importance`.
    pub kind: String,
    /// What a row and a column are.
    pub row_meaning: String,
    pub column_meaning: String,
    /// Single head `[layer, head]`, when it is one.
    pub head: Option<[usize; 2]>,
    #[serde(serialize_with = "compact::serialize")]
    pub lower: Vec<f64>,
}

impl Matrix {
    /// `lower` of a row-major `n × n` matrix (`get(row, column)`), rounded.
    pub(crate) fn from_square(key: &str, label: &str, kind: &str, n: usize, get: impl Fn(usize, usize) -> f64) -> Matrix {
        let mut lower = Vec::with_capacity(n * (n + 1) / 2);
        for i in 0..n {
            for j in 0..=i {
                lower.push(round_significant(get(i, j)));
            }
        }
        let (row_meaning, column_meaning) = match kind {
            "attention" => ("attending (later) sentence", "attended (earlier) sentence"),
            _ => ("target (later) sentence", "source (earlier) sentence"),
        };
        Matrix {
            key: key.into(),
            label: label.into(),
            kind: kind.into(),
            row_meaning: row_meaning.into(),
            column_meaning: column_meaning.into(),
            head: None,
            lower,
        }
    }

    /// Value at (`row`, `column`), `column ≤ row`.
    pub fn get(&self, row: usize, column: usize) -> f64 {
        self.lower[row * (row + 1) / 2 + column]
    }
}

/// The token view's data: for each head kept, each sentence's top earlier source (largest block
/// mean in that head) and the attention between their first tokens, all from one forward pass.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenView {
    /// Tokens kept per sentence on each side of a pair.
    pub max_tokens: usize,
    /// Tokens of each sentence (its whole range in the sentence averages).
    pub lengths: Vec<usize>,
    /// The first `max_tokens` tokens of each sentence, each decoded alone.
    pub tokens: Vec<Vec<String>>,
    pub heads: Vec<TokenHead>,
}

/// One head of the [`TokenView`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenHead {
    /// `[layer, head]`.
    pub head: [usize; 2],
    /// Per sentence, its top source (`null`: none, e.g. the first sentence).
    pub sources: Vec<Option<usize>>,
    /// Per sentence, the mean of the whole block with its source (this head's matrix cell).
    #[serde(serialize_with = "compact::serialize")]
    pub means: Vec<f64>,
    /// Per sentence, the largest value of its block (4 significant digits; `null` without a
    /// source).
    #[serde(serialize_with = "compact::serialize")]
    pub scales: Vec<f64>,
    /// Per sentence, `rows × cols` codes row-major (`rows` = min(max_tokens, its length), `cols`
    /// = min(max_tokens, the source's)): value = code / 1000 × scale, so 0.1 % of the block's
    /// largest value (a third of the bytes of 4-digit numbers); empty without a source.
    pub values: Vec<Vec<u16>>,
}

/// [`TokenHead::values`]' resolution: codes 0 ..= this, the block maximum.
pub const TOKEN_CODE_MAX: u16 = 1000;

impl TokenHead {
    /// The value of code `k` of sentence `i` (as the page computes it).
    pub fn value(&self, i: usize, k: usize) -> f64 {
        f64::from(self.values[i][k]) / f64::from(TOKEN_CODE_MAX) * self.scales[i]
    }
}

impl TokenView {
    /// The view of `heads` (in that order; those not captured are left out) from `pairs`.
    pub fn from_pairs(pairs: &crate::attention::TokenPairs, heads: &[(usize, usize)]) -> TokenView {
        let n = pairs.ranges.len();
        TokenView {
            max_tokens: pairs.max_tokens,
            lengths: (0..n).map(|i| pairs.sentence_tokens(i)).collect(),
            tokens: pairs.tokens.clone(),
            heads: heads
                .iter()
                .filter_map(|&(l, h)| pairs.head(l, h))
                .map(|head| {
                    let scales: Vec<f64> = head
                        .pairs
                        .iter()
                        .map(|p| p.as_ref().map_or(f64::NAN, |p| round_significant(f64::from(p.values.iter().copied().fold(0f32, f32::max)))))
                        .collect();
                    let code = |v: f32, scale: f64| {
                        if scale > 0.0 {
                            (f64::from(v) / scale * f64::from(TOKEN_CODE_MAX)).round().clamp(0.0, f64::from(TOKEN_CODE_MAX)) as u16
                        } else {
                            0
                        }
                    };
                    TokenHead {
                        head: [head.layer, head.head],
                        sources: head.pairs.iter().map(|p| p.as_ref().map(|p| p.source)).collect(),
                        means: head.pairs.iter().map(|p| p.as_ref().map_or(f64::NAN, |p| round_significant(p.mean))).collect(),
                        values: head
                            .pairs
                            .iter()
                            .zip(&scales)
                            .map(|(p, &scale)| p.as_ref().map_or_else(Vec::new, |p| p.values.iter().map(|&v| code(v, scale)).collect()))
                            .collect(),
                        scales,
                    }
                })
                .collect(),
        }
    }

    /// Numbers stored (the size budget's unit).
    pub fn value_count(&self) -> usize {
        self.heads.iter().map(|h| h.values.iter().map(Vec::len).sum::<usize>()).sum()
    }
}

/// One resampled continuation of a chunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alternative {
    /// The resampled chunk (`chunk_resampled`), cut to 240 characters.
    pub text: String,
    pub answer: String,
    pub is_correct: Option<bool>,
}

/// A part the page cannot show, and how to make it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Missing {
    /// `attention`, `suppression`, `resampling`, `tags`.
    pub part: String,
    pub why: String,
    /// The command that makes it.
    pub command: String,
}

/// `value` rounded to 4 significant digits (NaN and infinities stay as they are).
pub(crate) fn round_significant(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    format!("{value:.3e}").parse().unwrap_or(value)
}

mod compact {
    //! Numbers in their shortest form (the values are already rounded), NaN as `null`.
    use serde::Serializer;

    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for value in values {
            if value.is_finite() {
                // A whole number as an integer: `0` rather than `0.0`.
                if value.fract() == 0.0 && value.abs() < 1e15 {
                    seq.serialize_element(&(*value as i64))?;
                } else {
                    seq.serialize_element(value)?;
                }
            } else {
                seq.serialize_element(&Option::<f64>::None)?;
            }
        }
        seq.end()
    }
}

impl Explorer {
    /// An explorer of `sentences` with nothing else yet (add metrics and matrices, or use
    /// [`Explorer::from_problem_dir`]).
    pub fn new(title: impl Into<String>, sentences: Vec<String>) -> Explorer {
        let n = sentences.len();
        Explorer {
            title: title.into(),
            source: String::new(),
            model: None,
            mode: "chunks".into(),
            sentences,
            tags: vec![Vec::new(); n],
            va_tag: crate::rollout::tagger::VA_TAG.into(),
            grid: None,
            receiver_heads: Vec::new(),
            metrics: Vec::new(),
            matrices: Vec::new(),
            alternatives: vec![Vec::new(); n],
            token_view: None,
            missing: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Number of sentences N.
    pub fn n(&self) -> usize {
        self.sentences.len()
    }

    /// Add a per-sentence metric (values rounded to 4 significant digits); its length must be N.
    pub(crate) fn push_metric(&mut self, key: &str, label: &str, group: &str, description: &str, values: &[f64]) -> crate::Result<()> {
        if values.len() != self.n() {
            return Err(crate::Error::invalid(format!("metric `{key}`: {} values for {} sentences", values.len(), self.n())));
        }
        self.metrics.push(Metric {
            key: key.into(),
            label: label.into(),
            group: group.into(),
            description: description.into(),
            values: values.iter().map(|&v| round_significant(v)).collect(),
        });
        Ok(())
    }

    /// Add a matrix (its triangle must be for N sentences).
    pub(crate) fn push_matrix(&mut self, matrix: Matrix) -> crate::Result<()> {
        let n = self.n();
        if matrix.lower.len() != n * (n + 1) / 2 {
            return Err(crate::Error::invalid(format!(
                "matrix `{}`: {} values, a lower triangle of {n} sentences has {}",
                matrix.key,
                matrix.lower.len(),
                n * (n + 1) / 2
            )));
        }
        self.matrices.push(matrix);
        Ok(())
    }

    pub fn metric(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    pub fn matrix(&self, key: &str) -> Option<&Matrix> {
        self.matrices.iter().find(|m| m.key == key)
    }

    /// The data as compact JSON (what the page embeds).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// One line: sentences, metrics, matrices, the token view and the JSON size.
    pub fn size_summary(&self) -> String {
        let tokens = match &self.token_view {
            Some(view) => format!(", token view of {} heads ({} numbers)", view.heads.len(), view.value_count()),
            None => String::new(),
        };
        format!(
            "{} sentences, {} metrics, {} matrices{tokens}, {} missing part(s), {:.2} MB of JSON",
            self.n(),
            self.metrics.len(),
            self.matrices.len(),
            self.missing.len(),
            self.to_json().len() as f64 / 1e6
        )
    }

    /// Set the token view from `pairs` for `heads` (its sentences must be this explorer's); none
    /// when no head of `heads` was captured.
    pub fn set_token_view(&mut self, pairs: &crate::attention::TokenPairs, heads: &[(usize, usize)]) -> crate::Result<()> {
        if pairs.ranges.len() != self.n() {
            return Err(crate::Error::invalid(format!("token pairs of {} sentences for an explorer of {}", pairs.ranges.len(), self.n())));
        }
        let view = TokenView::from_pairs(pairs, heads);
        self.token_view = (!view.heads.is_empty()).then_some(view);
        Ok(())
    }

    /// A complete, self-contained HTML page (inline CSS and JS, no network).
    pub fn to_html(&self) -> String {
        page::explorer_document(self)
    }

    /// The fragment for a page that may hold several explorers: a `<div id="{id}">` with its
    /// data, style and script, all scoped to that div.
    pub(crate) fn to_inline_html(&self, id: &str) -> String {
        explorer_fragment(self, id)
    }

    /// Write [`Explorer::to_html`] to `path` (atomically).
    pub fn write_html(&self, path: impl AsRef<std::path::Path>) -> crate::Result<()> {
        crate::io::write_atomic(path, self.to_html().as_bytes())
    }

    /// Plain-text outline (the notebook's text fallback).
    pub fn plain_text(&self) -> String {
        let mut out = format!("Explorer {:?}: {}\n", self.title, self.size_summary());
        for missing in &self.missing {
            out.push_str(&format!("missing {}: {} (run `{}`)\n", missing.part, missing.why, missing.command));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(round_significant(0.123456), 0.1235);
        assert_eq!(round_significant(-12346.0), -12350.0);
        assert_eq!(round_significant(1.23456e-7), 1.235e-7);
        assert!(round_significant(f64::NAN).is_nan());
        assert_eq!(round_significant(0.0), 0.0);
    }

    #[test]
    fn json_is_compact_and_nan_is_null() {
        let mut explorer = Explorer::new("t", vec!["a".into(), "b".into()]);
        explorer.push_metric("m", "M", "attention", "", &[0.123456, f64::NAN]).unwrap();
        explorer.push_matrix(Matrix::from_square("x", "X", "attention", 2, |i, j| (i * 2 + j) as f64 / 3.0)).unwrap();
        let json = explorer.to_json();
        assert!(json.contains("\"values\":[0.1235,null]"), "{json}");
        assert!(json.contains("\"lower\":[0,0.6667,1]"), "{json}");
        assert_eq!(explorer.matrix("x").unwrap().get(1, 0), 0.6667);
        assert!(explorer.push_metric("bad", "", "", "", &[1.0]).is_err());
    }

    #[test]
    fn token_view_keeps_the_heads_asked_for_as_codes_of_the_block_maximum() {
        use crate::attention::token_pairs::{HeadTokenPairs, TokenPair, TokenPairs};
        let mut explorer = Explorer::new("t", vec!["a b".into(), "c d e".into(), "f".into()]);
        let pair = |source, values: Vec<f32>| Some(TokenPair { source, mean: 0.0123456, rows: 1, cols: values.len(), values });
        let pairs = TokenPairs {
            max_tokens: 2,
            ranges: vec![(0, 2), (2, 5), (5, 6)],
            heads: vec![
                HeadTokenPairs { layer: 0, head: 1, pairs: vec![None, pair(0, vec![0.5, 0.25]), pair(1, vec![0.0, 0.0])] },
                HeadTokenPairs { layer: 1, head: 0, pairs: vec![None, pair(0, vec![0.1, 0.3]), pair(0, vec![0.2, 0.2])] },
            ],
            tokens: vec![vec!["a".into(), " b".into()], vec!["c".into(), " d".into()], vec!["f".into()]],
        };
        explorer.set_token_view(&pairs, &[(1, 0), (5, 5)]).unwrap();
        let view = explorer.token_view.as_ref().unwrap();
        assert_eq!(view.heads.iter().map(|h| h.head).collect::<Vec<_>>(), [[1, 0]], "the heads asked for that were captured");
        assert_eq!(view.lengths, [2, 3, 1]);
        let head = &view.heads[0];
        assert_eq!(head.sources, [None, Some(0), Some(0)]);
        assert_eq!(head.values[1], [333, 1000]);
        assert!((head.value(1, 0) - 0.1).abs() <= 1e-3 * 0.3 && head.means[1] == 0.01235 && head.scales[0].is_nan());
        let json = explorer.to_json();
        assert!(json.contains(r#""values":[[],[333,1000],[1000,1000]]"#) && json.contains(r#""scales":[null,0.3,0.2]"#), "{json}");
        // An all-zero block keeps codes 0 (no division by a zero maximum).
        explorer.set_token_view(&pairs, &[(0, 1)]).unwrap();
        assert_eq!(explorer.token_view.as_ref().unwrap().heads[0].values[2], [0, 0]);
        // No head kept: no token view.
        explorer.set_token_view(&pairs, &[]).unwrap();
        assert!(explorer.token_view.is_none());
        assert!(explorer.set_token_view(&TokenPairs { ranges: vec![(0, 1)], ..pairs }, &[(0, 1)]).is_err());
    }

    #[test]
    fn page_is_self_contained_and_escapes_the_data() {
        let explorer = Explorer::new("</script><b>x</b>", vec!["a </script> b".into()]);
        let html = explorer.to_html();
        assert!(!html.contains("http://") && !html.contains("https://"), "no network references");
        assert_eq!(html.matches("</script>").count(), html.matches("<script").count());
        assert!(html.contains("ts-data"));
    }
}
