//! Scores over sentence-averaged attention (thought-anchors `attn_funcs.py`, `receiver_head_funcs.py`): vertical scores, kurtosis, receiver
//! heads and their split-half reliability.
//!
//! - [`vertical`]: [`vertical_scores`] with every upstream parameter, NaN rule and numpy dtype;
//! - [`receiver`]: per-head kurtosis, mean over responses, top-k heads, receiver scores,
//!   split-half reliability, and the corpus run over a cache directory;
//! - [`numpy`]: numpy's float32/float64 reductions, reproduced bit for bit;
//! - [`stats`]: Pearson (scipy), mean/std/SEM (pandas), least squares (numpy) for every analysis.

pub mod numpy;
pub mod receiver;
pub mod stats;
pub mod vertical;

pub use receiver::{
    head_kurtosis, head_vertical_scores, kurtosis, mean_kurtosis, receiver_heads, receiver_heads_from_cache_dir,
    receiver_scores, split_half_reliability, top_k_heads, HeadScores, HeadValues, ReceiverHeads, ReceiverOptions,
};
pub(crate) use receiver::receiver_heads_from_scores;
pub use stats::{spearman, RankCorrelation};
pub use vertical::{vertical_scores, vertical_scores_f64, vertical_scores_npy, Dtype, NumpyValue, ScoreType, VerticalOptions, VerticalScores};
