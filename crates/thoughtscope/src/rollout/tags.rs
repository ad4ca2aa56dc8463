//! Tag masks: which analysed sentences carry a tag (e.g. `verbalized_evaluation_awareness`, or any
//! upstream function tag), from `chunks_labeled.json`.
//!
//! Alignment rule (explicit, reported in [`TagMask`]): sentence `k` takes the labels of entry `k`.
//! Labels beyond the sentence count are ignored (`truncated`; in `full-cot` mode exactly one is,
//! the dropped final chunk); sentences beyond the labels are untagged (`padded`).
//! [`misaligned_labels`] says which entries' text does not match their sentence.

use super::layout::ChunkLabel;
use crate::attention::pystr::collapse_and_strip;
use crate::attention::Sentences;

/// A boolean mask over N sentences and how the labels were aligned to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMask {
    pub tag: String,
    /// `mask[k]`: sentence k carries the tag.
    pub mask: Vec<bool>,
    /// Number of label entries available.
    pub labels: usize,
    /// Sentences with no label entry (counted as untagged).
    pub padded: usize,
    /// Label entries beyond the last sentence (ignored).
    pub truncated: usize,
}

impl TagMask {
    /// Number of tagged sentences.
    pub fn count(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Indices of the tagged sentences.
    pub fn indices(&self) -> Vec<usize> {
        self.mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect()
    }
}

/// The mask of `tag` over `n` sentences (exact, case-sensitive tag match).
pub fn tag_mask(labels: &[ChunkLabel], tag: &str, n: usize) -> TagMask {
    let mask = (0..n).map(|k| labels.get(k).is_some_and(|l| l.tags.iter().any(|t| t == tag))).collect();
    TagMask {
        tag: tag.to_string(),
        mask,
        labels: labels.len(),
        padded: n.saturating_sub(labels.len()),
        truncated: labels.len().saturating_sub(n),
    }
}

/// Label entries `k < min(labels, N)` whose chunk text differs from sentence k once whitespace
/// runs are collapsed and the ends stripped (full-cot sentences keep the original spacing of
/// merged chunks, which chunks.json joins with `" "`).
pub fn misaligned_labels(labels: &[ChunkLabel], sentences: &Sentences) -> Vec<usize> {
    labels
        .iter()
        .zip(&sentences.sentences)
        .enumerate()
        .filter(|(_, (label, sentence))| {
            let a: Vec<char> = label.chunk.chars().collect();
            let b: Vec<char> = sentence.chars().collect();
            collapse_and_strip(&a) != collapse_and_strip(&b)
        })
        .map(|(k, _)| k)
        .collect()
}
