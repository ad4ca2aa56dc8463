//! Rollouts in the thought-anchors directory layout (spec §10): reading ([`layout`]: [`Rollout`],
//! [`discover_rollouts`]), tag masks ([`tags`]), writing, taggers, labellers and generation.
pub mod generate;
pub mod labeller;
pub mod layout;
pub mod tagger;
pub mod tags;
pub mod write;

pub use layout::{discover_rollouts, find_problem_dirs, read_chunks_file, read_labels_file, ChunkLabel, Rollout};
pub use tags::{misaligned_labels, tag_mask, TagMask};
