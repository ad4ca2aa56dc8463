//! Rollouts in the thought-anchors directory layout: reading ([`layout`]: [`Rollout`],
//! [`discover_rollouts`]), tag masks ([`tags`]), writing, taggers, labellers, generation, and resampling
//! continuations of each chunk's prefix ([`resample`], with [`answers`]).
pub mod answers;
pub mod generate;
pub mod labeller;
pub mod layout;
pub mod resample;
pub mod tagger;
pub mod tags;
pub mod write;

pub use layout::{discover_rollouts, find_problem_dirs, read_chunks_file, read_labels_file, ChunkLabel, Rollout};
pub use tags::{misaligned_labels, tag_mask, TagMask};
