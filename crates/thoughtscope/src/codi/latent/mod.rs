//! The CODI model and its latent loop, below every experiment: reading a checkpoint
//! ([`checkpoint`]), the loaded model with LoRA merged and its projection ([`codi_model`]), a
//! CODI-shaped checkpoint built from a base model for runs without CODI weights ([`make_model`]),
//! the question pass, the six continuous-thought steps, EOT and decoding ([`thought_loop`]), and
//! the answer parsers that decide correctness ([`answer`]).
//!
//! The loop tells hooks its phase ([`thought_loop::PhaseHooks`]); what the experiments do with
//! the hook points (ablate, read attention, decompose) lives with them, so this folder knows
//! nothing of them. Inside: `answer` and `checkpoint` use nothing here, `codi_model` uses
//! `checkpoint`, `make_model` uses both, `thought_loop` uses `codi_model` and `answer`.

pub mod answer;
pub mod checkpoint;
pub mod codi_model;
pub mod make_model;
pub mod thought_loop;
