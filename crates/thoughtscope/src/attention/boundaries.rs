//! Token boundaries of sentences (upstream `get_sentence_token_boundaries`): which token positions of the model input belong to
//! each sentence.
//!
//! - [`BoundaryMode::Prefix`] (parity, default): upstream `get_sentence_token_boundaries`.
//!   Sentences are located by a sequential search in the space-normalised text (upstream steps 1–2), then
//!   `tok_start = len(encode(text[:char_start]))` (0 when `char_start == 0`) and
//!   `tok_end = len(encode(text[:char_end]))`, counts including BOS when the model adds one.
//!   Quirk reproduced: a prefix ending in a single space tokenises that space alone, so the
//!   first token of the next sentence (`" So"`) is credited to the previous sentence.
//! - [`BoundaryMode::Offsets`] (corrected): one tokenisation of the full text with
//!   character offsets; a token belongs to the sentence that contains its first non-whitespace
//!   character (its first character if it is all whitespace).
//!
//! BOS is a parameter: the `tokenizers` crate does not add the BOS that HF `transformers` adds for
//! R1-Distill models, so it is counted here and never by the tokenizer's post-processor.

use rayon::prelude::*;

use super::pystr::{is_py_space, py_strip, CodePoints};
use super::segment::Sentences;
use crate::{Error, Result};

/// How sentence character ranges become token ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum BoundaryMode {
    /// Upstream prefix tokenisation (parity; the default).
    #[default]
    #[serde(rename = "prefix")]
    Prefix,
    /// Offsets of the full tokenisation (corrected boundaries).
    #[serde(rename = "offsets")]
    Offsets,
}
crate::model::named_values!(BoundaryMode, "boundary mode", { Prefix => "prefix", Offsets => "offsets" });

impl BoundaryMode {
    /// The name used on the command line and in cache manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            BoundaryMode::Prefix => "prefix",
            BoundaryMode::Offsets => "offsets",
        }
    }
}

/// Token ranges of the sentences in the model input (BOS, when added, is position 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBounds {
    /// `(tok_start, tok_end)` per sentence, half-open.
    pub ranges: Vec<(usize, usize)>,
    /// Length of the model input for the whole text, BOS included (T).
    pub n_tokens: usize,
    pub mode: BoundaryMode,
}

impl TokenBounds {
    /// Boundaries of `sentences` with a model tokenizer (its BOS rule included).
    pub fn compute(tokenizer: &crate::model::Tokenizer, sentences: &Sentences, mode: BoundaryMode) -> Result<TokenBounds> {
        token_boundaries(tokenizer.inner(), tokenizer.bos(), &sentences.text, &sentences.sentences, mode)
    }

    /// [`TokenBounds::compute`] for the text that `ids` encodes, checked to cover exactly those
    /// tokens (a tokenizer whose whole-text and prefix encodings disagree would misplace every
    /// sentence).
    pub fn of_ids(tokenizer: &crate::model::Tokenizer, sentences: &Sentences, mode: BoundaryMode, ids: &[u32]) -> Result<TokenBounds> {
        let bounds = Self::compute(tokenizer, sentences, mode)?;
        if ids.len() != bounds.n_tokens {
            return Err(crate::Error::Other(format!(
                "tokenisation of the text gave {} tokens but the boundaries assume {}",
                ids.len(),
                bounds.n_tokens
            )));
        }
        Ok(bounds)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Upstream `normalize_spaces`: these code points become one ASCII space (length-preserving).
fn normalize_space_char(c: char) -> char {
    match c {
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}' => ' ',
        c => c,
    }
}

fn normalize_spaces(s: &str) -> String {
    s.chars().map(normalize_space_char).collect()
}

/// Character ranges of `sentences` in `text` as upstream finds them (steps 1–2): sequential
/// `find` in the space-normalised text, retrying with the stripped sentence (whose end is then
/// `start + len(stripped)`). A sentence found neither way is an error naming it.
pub fn sentence_char_positions<S: AsRef<str>>(text: &str, sentences: &[S]) -> Result<Vec<(usize, usize)>> {
    let normalized_text = normalize_spaces(text);
    let cp = CodePoints::new(&normalized_text);
    let mut search_start = 0;
    let mut positions = Vec::with_capacity(sentences.len());
    for (k, sentence) in sentences.iter().enumerate() {
        let normalized = normalize_spaces(sentence.as_ref());
        let (start, end) = match cp.find(&normalized, search_start) {
            Some(start) => (start, start + normalized.chars().count()),
            None => {
                let stripped = py_strip(&normalized);
                let start = cp.find(stripped, search_start).ok_or_else(|| {
                    let preview: String = sentence.as_ref().chars().take(60).collect();
                    Error::invalid(format!("sentence {k} not found in the text after char {search_start}: {preview:?}"))
                })?;
                (start, start + stripped.chars().count())
            }
        };
        positions.push((start, end));
        search_start = end;
    }
    Ok(positions)
}

/// Token boundaries of `sentences` within `text` (see the module doc for the two modes).
/// `bos`: the id the model input starts with, if any; it is counted in every position.
pub fn token_boundaries<S: AsRef<str>>(
    tokenizer: &tokenizers::Tokenizer,
    bos: Option<u32>,
    text: &str,
    sentences: &[S],
    mode: BoundaryMode,
) -> Result<TokenBounds> {
    let char_ranges = sentence_char_positions(text, sentences)?;
    let bos_len = usize::from(bos.is_some());
    let cp = CodePoints::new(text);
    match mode {
        BoundaryMode::Prefix => {
            // Every distinct prefix is tokenised once (sentence k's start is k−1's end).
            let mut cuts: Vec<usize> = char_ranges
                .iter()
                .flat_map(|&(s, e)| [s, e])
                .filter(|&c| c > 0)
                .chain([cp.len()])
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let counts: Vec<usize> = cuts
                .par_iter()
                .map(|&c| {
                    let encoding = tokenizer.encode_fast(cp.slice(0, c), false)?;
                    Ok(encoding.len() + bos_len)
                })
                .collect::<Result<_>>()?;
            // `len(encode(text[:c]))`; the empty prefix encodes to BOS alone.
            let count_at = |c: usize| if c == 0 { bos_len } else { counts[cuts.binary_search(&c).expect("cut recorded")] };
            // Upstream: `tok_start = 0` when `char_start == 0` (so BOS joins sentence 0).
            let start_at = |c: usize| if c == 0 { 0 } else { count_at(c) };
            let ranges = char_ranges.iter().map(|&(s, e)| (start_at(s), count_at(e))).collect();
            Ok(TokenBounds { ranges, n_tokens: count_at(cp.len()), mode })
        }
        BoundaryMode::Offsets => {
            let encoding = tokenizer.encode_char_offsets(text, false)?;
            let anchors: Vec<usize> = encoding
                .get_offsets()
                .iter()
                .map(|&(s, e)| {
                    let e = e.min(cp.len());
                    (s..e).find(|&c| !is_py_space(cp.chars[c])).unwrap_or(s)
                })
                .collect();
            let ranges = char_ranges
                .iter()
                .map(|&(s, e)| {
                    let inside = |a: &usize| (s..e).contains(a);
                    match (anchors.iter().position(inside), anchors.iter().rposition(inside)) {
                        (Some(first), Some(last)) => (first + bos_len, last + 1 + bos_len),
                        _ => {
                            let before = anchors.iter().filter(|&&a| a < s).count() + bos_len;
                            (before, before)
                        }
                    }
                })
                .collect();
            Ok(TokenBounds { ranges, n_tokens: encoding.len() + bos_len, mode })
        }
    }
}
