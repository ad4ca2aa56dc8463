//! rollout (work in progress)
pub mod generate;
pub mod labeller;
pub mod tagger;
pub mod write;
