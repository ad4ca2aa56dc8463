//! CODI (continuous chain-of-thought via self-distillation): checkpoint loading, the latent loop,
//! token ablation, attention to the continuous thoughts, dataset sampling and the analysis of
//! CoT_Exploration's attention-vs-importance experiment (`src/experiments/codi_attention_interp/`).
//!
//! Parity first: each upstream behaviour has a faithful mode — the CoT_Exploration 5-latent loop
//! ([`LoopMode::Cotx`]), its off-by-one ablation hook ([`AblationMode::Faithful`]), its
//! attention key slice that includes EOT's self-attention ([`KeySelection::Faithful`]) — and
//! an explicitly named corrected mode.
//!
//! Steps (CLI `thoughtscope codi <step>`, each one library call):
//! `make-model` ([`make_model`]: a CODI-shaped checkpoint from SmolLM2 — NOT a CODI model),
//! `dataset` ([`make_dataset`]), `ablate` ([`run_ablation`]), `attention` ([`run_attention`]),
//! `analyze` ([`analyze`]), `run-all` ([`run_all`]; `--test-mode`: the seed's 10 problems), and the
//! seed's next steps `compose`, `routing`, `decompose`. Without `--input`, problems come from the
//! embedded synthetic set ([`synthetic`], NOT GSM8K).
//!
//! ```no_run
//! use thoughtscope::codi::{self, CodiModel, LoadOptions, LoopMode, LoopOptions};
//! let settings = thoughtscope::model::Settings::from_env()?;
//! let codi = CodiModel::load("models/codi-smollm2".as_ref(), &LoadOptions::default(), &settings)?;
//! let answer = codi::generate(&codi, "Janet has 3 apples...", &LoopOptions::for_mode(LoopMode::Cotx), &mut thoughtscope::model::NoHooks)?;
//! println!("{}", answer.text);
//! # Ok::<(), thoughtscope::Error>(())
//! ```

pub mod ablate;
pub mod analyze;
pub mod answer;
pub mod attention;
pub mod checkpoint;
pub mod compose;
pub mod dataset;
pub mod decompose;
pub mod figures;
pub mod latent;
pub mod make_model;
pub mod model;
pub mod next_figures;
pub mod next_steps;
pub mod pipeline;
pub mod progress;
pub mod routing;
pub mod stats;
pub mod synthetic;
pub mod tables;

pub use ablate::{ablate_problem, run_ablation, AblationMode, AblationOptions, AblationRecord};
pub use analyze::{analyze, AnalyzeOptions, ImportanceKind, ImportanceRule};
pub use answer::{Answer, AnswerParser};
pub use attention::{attention_for_problem, run_attention, AttentionOptions, AttentionRecord, KeySelection};
pub use dataset::{load_problems, make_dataset, stratified_sample, Problem, PyRandom};
pub use latent::{decode_greedy, decode_greedy_batch, generate, run_from_prompt, run_prompt, run_to_eot, Layout, LoopMode, LoopOptions, LoopState, Phase, PhaseHooks, PromptState};
pub use make_model::{make_model, MakeModelOptions};
pub use model::{BaseModel, CodiModel, CodiWeights, LoadOptions, Projection, SpecialIds};
pub use next_steps::{ExperimentLayout, SEED_FIGURES};
pub use pipeline::{run_all, sample_problems, Experiment, ModelSpec, RunAllOptions, RunAllReport, Variant};
pub use synthetic::synthetic_problems;
pub use progress::RunMeta;
