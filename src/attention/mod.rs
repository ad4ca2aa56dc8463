//! Sentence-level attention: segmentation of a trace into sentences, token boundaries,
//! the streaming sentence averager and the attention cache
//! (spec: `thought-anchors-attention.md` §2–§6).
//!
//! - [`segment`]: [`Sentences`] in `full-cot` mode (upstream `split_solution_keep_spacing`, every
//!   quirk) or `chunks` mode, and the cache identity [`text_id`] (§2, §6);
//! - [`boundaries`]: [`TokenBounds`] by prefix tokenisation (parity) or offsets (corrected) (§3);
//! - [`average`]: [`SentenceAverager`], an [`AttentionSink`] producing [`SentenceAttention`]
//!   `[L, H, N, N]`, and [`average_matrix`] for one `T × T` matrix (§5);
//! - [`cache`]: [`AttnCache`] with manifests, native and upstream layouts (§6);
//! - [`npy`]: `.npy` reading and `np.save`-identical writing.

pub mod average;
pub mod bench;
pub mod boundaries;
pub mod cache;
pub mod compute;
pub mod npy;
pub(crate) mod pystr;
pub mod segment;

pub use average::{average_matrix, SentenceAttention, SentenceAverager};
pub use boundaries::{sentence_char_positions, token_boundaries, BoundaryMode, TokenBounds};
pub use compute::{cache_key, cached_sentence_attention, sentence_attention, CacheOutcome};
pub use cache::{read_entry_dir, read_upstream_dir, AttnCache, CacheKey, CacheLayout, Manifest};
pub use segment::{get_chunk_ranges, split_solution_into_chunks, text_id, ChunkRanges, SentenceMode, Sentences};

/// One block of attention probabilities handed from the model runtime to a sink.
///
/// `probs` is row-major `[heads, rows, kv_len]`: entry `(h, r, k)` is the probability that query
/// position `q_start + r` of head `h` puts on key position `k`. Masked (future) keys are exactly 0.
/// Because attention is causal, the runtime may cut a block's columns at the last key any of its
/// rows can see: `kv_len <= total_keys`, and every column `k >= kv_len` is 0 for all rows.
/// Positions are absolute (a KV-cached prefix counts).
#[derive(Debug, Clone, Copy)]
pub struct AttentionBlock<'a> {
    pub layer: usize,
    pub q_start: usize,
    pub heads: usize,
    pub rows: usize,
    pub kv_len: usize,
    /// Number of keys in the whole sequence (the full attention matrix is `total_keys` wide).
    pub total_keys: usize,
    pub probs: &'a [f32],
}

impl AttentionBlock<'_> {
    /// Probabilities of one query row of one head, length `kv_len`.
    pub fn row(&self, head: usize, row: usize) -> &[f32] {
        let start = (head * self.rows + row) * self.kv_len;
        &self.probs[start..start + self.kv_len]
    }
}

/// Consumer of attention probabilities, called by the model for every layer and query block, in
/// order of increasing layer and then increasing `q_start`. Lets an analysis reduce attention as it
/// is produced, so nothing holds `layers × heads × T²`.
pub trait AttentionSink {
    /// Whether this sink wants the probabilities of `layer` at all (skipping saves the work).
    fn wants_layer(&self, layer: usize) -> bool {
        let _ = layer;
        true
    }
    /// Consume one block. Errors abort the forward pass.
    fn consume(&mut self, block: AttentionBlock<'_>) -> crate::Result<()>;
}
