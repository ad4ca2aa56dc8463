//! Sentence segmentation of a trace (thought-anchors `utils.py`) and the cache identity `text_id` (`attn_funcs.py`).
//!
//! Two modes ([`SentenceMode`]):
//! - `full-cot`: upstream `split_solution_keep_spacing(full_cot)` (`utils.py` at HEAD): sentences
//!   re-derived from `base_solution.full_cot` as exact substrings, trailing whitespace attached.
//!   Quirks reproduced: the text after the last boundary is dropped (so N = len(chunks.json) − 1);
//!   short chunks are merged with a single `" "`, which forces `get_chunk_ranges`' whitespace-
//!   normalised fallback search; the search starts at char 0 (prompt included); the end walk stops
//!   at `last + k >= len` rather than `start + k >= len` (cuts short chunks that reach past the
//!   midpoint of the remaining text); indices are code points; whitespace is Python's `str.isspace`.
//! - `chunks`: sentences = the `chunks.json` chunks, text = the chunks joined by `"\n"`, as the VA
//!   notebook does. Every chunk is a sentence (no final chunk dropped).

use sha2::{Digest, Sha256};

use super::pystr::{collapse_and_strip, collapse_space, is_py_space, is_py_word, py_strip, CodePoints};
use crate::{Error, Result};

/// Where the analysed sentences come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SentenceMode {
    /// Re-derived from `base_solution.full_cot` as upstream's attention code does.
    #[serde(rename = "full-cot")]
    FullCot,
    /// `chunks.json` chunks joined by `"\n"` (the VA notebook).
    #[serde(rename = "chunks")]
    Chunks,
}
crate::model::named_values!(SentenceMode, "sentence mode", { FullCot => "full-cot", Chunks => "chunks" });

impl SentenceMode {
    /// The name used on the command line and in cache manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SentenceMode::FullCot => "full-cot",
            SentenceMode::Chunks => "chunks",
        }
    }
}

/// A text and its sentences, each an exact substring of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentences {
    /// The analysed text (the string fed to the model).
    pub text: String,
    pub sentences: Vec<String>,
    /// `(start, end)` of each sentence in code points of `text`, half-open.
    pub ranges: Vec<(usize, usize)>,
    pub mode: SentenceMode,
}

impl Sentences {
    /// `full-cot` mode: upstream `split_solution_keep_spacing(full_cot)`. A chunk that upstream
    /// would skip with a warning (not found in the text) is an error here.
    pub fn from_full_cot(full_cot: &str) -> Result<Sentences> {
        let chunks = split_solution_into_chunks(full_cot);
        let located = get_chunk_ranges(full_cot, &chunks);
        if let Some(&k) = located.skipped.first() {
            let preview: String = chunks[k].chars().take(60).collect();
            return Err(Error::invalid(format!(
                "full_cot: chunk {k} of {} not found in the text (upstream would skip it): {preview:?}",
                chunks.len()
            )));
        }
        let cp = CodePoints::new(full_cot);
        let sentences = located.ranges.iter().map(|&(a, b)| cp.slice(a, b).to_string()).collect();
        Ok(Sentences { text: full_cot.to_string(), sentences, ranges: located.ranges, mode: SentenceMode::FullCot })
    }

    /// `chunks` mode: text = chunks joined by `"\n"`; sentence k = chunk k.
    pub fn from_chunks(chunks: &[String]) -> Sentences {
        let text = chunks.join("\n");
        let mut ranges = Vec::with_capacity(chunks.len());
        let mut start = 0;
        for chunk in chunks {
            let end = start + chunk.chars().count();
            ranges.push((start, end));
            start = end + 1;
        }
        Sentences { text, sentences: chunks.to_vec(), ranges, mode: SentenceMode::Chunks }
    }

    /// Segment `full_cot` (full-cot mode) or join `chunks` (chunks mode).
    pub fn new(mode: SentenceMode, full_cot: &str, chunks: &[String]) -> Result<Sentences> {
        match mode {
            SentenceMode::FullCot => Sentences::from_full_cot(full_cot),
            SentenceMode::Chunks => Ok(Sentences::from_chunks(chunks)),
        }
    }

    /// Number of sentences N.
    pub fn len(&self) -> usize {
        self.sentences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }

    /// Upstream cache identity `generate_text_hash(text, sentences)`.
    pub fn text_id(&self) -> String {
        text_id(&self.text, &self.sentences)
    }
}

/// `sha256(text + "|||" + "|||".join(sentences))[:16]`, or of `text` alone when `sentences` is
/// empty (upstream `generate_text_hash`).
pub fn text_id<S: AsRef<str>>(text: &str, sentences: &[S]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    if !sentences.is_empty() {
        for s in sentences {
            hasher.update(b"|||");
            hasher.update(s.as_ref().as_bytes());
        }
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Upstream `split_solution_into_chunks` at HEAD (`utils.py`): the CoT between `<think>` and
/// `</think>`, cut after `.?!` + space/newline and at blank lines, the remainder after the last
/// boundary **dropped**, chunks under 10 code points merged into a neighbour with `" "`.
pub(crate) fn split_solution_into_chunks(solution_text: &str) -> Vec<String> {
    let mut text = solution_text;
    if text.contains("<think>") {
        text = py_strip(text.split("<think>").nth(1).unwrap_or(""));
    }
    if let Some(end) = text.find("</think>") {
        text = py_strip(&text[..end]);
    }
    let chars: Vec<char> = text.chars().collect();
    let starts_with = |i: usize, pattern: &[char]| chars[i..].starts_with(pattern);

    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let paragraph_end = starts_with(i, &['\n', '\n']) || starts_with(i, &['\r', '\n', '\r', '\n']);
        let sentence_end = i + 1 < chars.len() && matches!(c, '.' | '?' | '!') && matches!(chars[i + 1], ' ' | '\n');
        if paragraph_end || sentence_end {
            let stripped = py_strip(&current);
            if !stripped.is_empty() {
                chunks.push(stripped.to_string());
                current.clear();
            }
        }
    }
    // Upstream HEAD has the "append the last chunk" step commented out: `current` is dropped.

    let mut i = 0;
    while i < chunks.len() {
        if chunks[i].chars().count() < 10 {
            if i == chunks.len() - 1 {
                if i > 0 {
                    let last = chunks.remove(i);
                    chunks[i - 1] = format!("{} {last}", chunks[i - 1]);
                }
            } else {
                let short = chunks.remove(i);
                chunks[i] = format!("{short} {}", chunks[i]);
            }
            if i == 0 && chunks.len() == 1 {
                break;
            }
        } else {
            i += 1;
        }
    }
    chunks
}

/// Result of [`get_chunk_ranges`]: code-point ranges of the chunks that were found, and the
/// indices of chunks upstream skips with a warning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkRanges {
    pub ranges: Vec<(usize, usize)>,
    pub skipped: Vec<usize>,
}

/// Upstream `get_chunk_ranges(full_text, chunks)` (`utils.py`), every quirk included: exact
/// search from a cursor, whitespace-normalised fallback (and its first-word search at
/// `cursor + 100`), the end found by matching non-whitespace content and walking with the
/// `last + k >= len` stop test. Ranges include the whitespace that follows a chunk.
pub fn get_chunk_ranges<S: AsRef<str>>(full_text: &str, chunks: &[S]) -> ChunkRanges {
    let cp = CodePoints::new(full_text);
    let text = &cp.chars;
    let len = text.len();
    let mut out = ChunkRanges::default();
    let mut pos = 0usize;

    for (index, chunk) in chunks.iter().enumerate() {
        let chunk = chunk.as_ref();
        let chunk_chars: Vec<char> = chunk.chars().collect();
        let start = cp.find(chunk, pos).or_else(|| fallback_start(text, &chunk_chars, pos));
        let Some(start) = start else {
            out.skipped.push(index);
            continue;
        };

        // Length of the common prefix of the chunk's and the text's non-whitespace content.
        let chunk_content = collapse_space(&chunk_chars, None);
        let window_end = (start + chunk_chars.len() + 50).min(len);
        let text_content = collapse_space(&text[start..window_end], None);
        let content_match = chunk_content.iter().zip(&text_content).take_while(|(a, b)| a == b).count();

        // Walk over the text until one content character more than matched; `last + k` (not
        // `start + k`) is upstream's stop test.
        let mut last = start;
        let mut content_seen = 0usize;
        for k in 0..(len - start) {
            if last + k >= len {
                break;
            }
            if !is_py_space(text[start + k]) {
                content_seen += 1;
            }
            if content_seen > content_match {
                break;
            }
            last = start + k;
        }
        let end = last + 1;
        pos = end;
        out.ranges.push((start, end));
    }
    out
}

/// The fallback of `get_chunk_ranges` when the chunk is not an exact substring after `pos`.
fn fallback_start(text: &[char], chunk: &[char], pos: usize) -> Option<usize> {
    let len = text.len();
    let normalized = collapse_and_strip(chunk);
    let window = |from: usize, extra: usize| collapse_and_strip(&text[from.min(len)..(from + normalized.len() + extra).min(len)]);
    let scan_end = len.saturating_sub(normalized.len());
    for i in pos..scan_end {
        if window(i, 20).starts_with(&normalized) {
            return Some(i);
        }
        if i == pos + 100 {
            // Second search: first word at a `\b` boundary, then the collapsed text from there.
            let first_word: Vec<char> = normalized.iter().copied().take_while(|&c| !is_py_space(c)).collect();
            if first_word.is_empty() {
                return None; // upstream: IndexError on `chunk_words[0]`
            }
            for j in pos..len.saturating_sub(10) {
                if word_matches_at(text, j, &first_word) && window(j, 30).starts_with(&normalized) {
                    return Some(j);
                }
            }
            return None;
        }
    }
    None
}

/// `re.match(r"\b" + re.escape(word) + r"\b", text[j : j + len(word) + 5])`.
fn word_matches_at(text: &[char], j: usize, word: &[char]) -> bool {
    let slice_end = (j + word.len() + 5).min(text.len());
    let window = &text[j..slice_end];
    if !window.starts_with(word) || !is_py_word(word[0]) {
        return false;
    }
    let before = is_py_word(word[word.len() - 1]);
    let after = window.get(word.len()).is_some_and(|&c| is_py_word(c));
    before != after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_goldens() {
        assert_eq!(text_id("abc", &["a", "bc"]), "199c47ee0b6f7f64");
        assert_eq!(text_id::<&str>("abc", &[]), "ba7816bf8f01cfea");
    }

    #[test]
    fn chunk_ranges_end_walk_quirk() {
        let r = get_chunk_ranges("abc. defghijklmnop. xy", &["abc.", "defghijklmnop."]);
        assert_eq!(r.ranges, vec![(0, 5), (5, 14)]);
        assert!(r.skipped.is_empty());
    }

    #[test]
    fn splitter_drops_final_chunk_and_merges_short_ones() {
        let text = "P <think>\nFirst sentence here. Ok.\n\nSecond long sentence. tail without end</think> answer";
        let chunks = split_solution_into_chunks(text);
        assert_eq!(chunks, vec!["First sentence here.", "Ok. Second long sentence."]);
    }
}
