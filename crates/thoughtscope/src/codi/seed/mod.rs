//! The seed's four steps (CoT_Exploration `src/experiments/codi_attention_interp/`), each one
//! library call that the CLI, `run-all` and the notebook share:
//! 1. the dataset (in [`super::problems`], since every step needs its problems);
//! 2. token ablation ([`ablation`], `1_run_token_ablation.py`), whose hook the compositional
//!    ablation of the next steps reuses;
//! 3. attention from EOT to the continuous thoughts ([`eot_attention`], `2_extract_attention.py`);
//! 4. the analysis ([`analyze`], `3_analyze_and_visualize.py`): the join and
//!    `summary_statistics.json` ([`summary`]) and the four figures ([`figures`]).
//!
//! Beside them: the faithful / corrected [`variant`] of the whole experiment, and the tables the
//! notebook shows of each step ([`tables`]). Inside: `variant` uses `ablation` and
//! `eot_attention`; `analyze` uses every step module; `tables` sits on top.

pub mod ablation;
pub mod analyze;
pub mod eot_attention;
pub mod figures;
pub mod summary;
pub mod tables;
pub mod variant;
