//! Sentence-level attention: segmentation of a trace into sentences, token boundaries,
//! the streaming sentence averager and the attention cache
//! (thought-anchors `utils.py` and `whitebox-analyses/attention_analysis/attn_funcs.py`).
//!
//! - [`segment`]: [`Sentences`] in `full-cot` mode (upstream `split_solution_keep_spacing`, every
//!   quirk) or `chunks` mode, and the cache identity [`text_id`];
//! - [`boundaries`]: [`TokenBounds`] by prefix tokenisation (parity) or offsets (corrected);
//! - [`average`]: [`SentenceAverager`], an [`AttentionSink`] producing [`SentenceAttention`]
//!   `[L, H, N, N]`, and [`average_matrix`] for one `T × T` matrix;
//! - [`cache`]: [`AttnCache`] with manifests, native and upstream layouts;
//! - [`source`]: [`AttentionSource`], one head's matrix on demand through the cache (upstream
//!   `get_avg_attention_matrix`, the model loaded on the first miss only);
//! - [`suppression`]: the attention-suppression sentence × sentence KL matrix (`attn_supp_funcs.py`);
//! - [`token_pairs`]: each sentence's top-source token block per head, from the same forward pass
//!   as the averages (the trace explorer's token view);
//! (`.npy` reading and `np.save`-identical writing are in [`crate::io::npy`].)

pub mod average;
pub mod boundaries;
pub mod cache;
pub mod cache_status;
pub mod compute;
mod pass;
pub(crate) mod pystr;
pub mod segment;
pub mod source;
pub mod suppression;
pub mod token_pairs;

// The sink interface is the decoder's output channel, so it lives in `model`; re-exported here,
// where the sinks that reduce attention are.
pub use crate::model::{AttentionBlock, AttentionSink, FullAttentionCapture, HeadConsumer};
pub use average::{average_matrix, SentenceAttention, SentenceAverager};
pub use boundaries::{sentence_char_positions, token_boundaries, BoundaryMode, TokenBounds};
pub use cache::{
    read_entry_dir, read_entry_token_pairs, read_upstream_dir, read_upstream_head, AttnCache, CacheKey, CacheLayout, EntryTokenPairs, Lookup,
    Manifest, TokenPairsRecord,
};
pub use compute::{cache_key, cached_sentence_attention, check_sentence_attention_fits, sentence_attention, CacheOutcome};
pub use source::AttentionSource;
pub use suppression::{suppression_matrix, SuppressionMatrix, SuppressionOptions};
pub use segment::{get_chunk_ranges, text_id, ChunkRanges, SentenceMode, Sentences};
pub(crate) use segment::split_solution_into_chunks;
pub use token_pairs::{
    sentence_attention_with_token_pairs, TokenPair, TokenPairCapture, TokenPairOptions, TokenPairs, TokenPairsToStore,
};
