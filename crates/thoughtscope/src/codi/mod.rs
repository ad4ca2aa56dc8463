//! CODI (continuous chain-of-thought via self-distillation): checkpoint loading, the latent loop,
//! token ablation, attention to the continuous thoughts, dataset sampling and the analysis of
//! CoT_Exploration's attention-vs-importance experiment (`src/experiments/codi_attention_interp/`).
//!
//! Parity first: each upstream behaviour has a faithful mode — the CoT_Exploration 5-latent loop
//! ([`LoopMode::Cotx`]), its off-by-one ablation hook ([`AblationMode::Faithful`]), its
//! attention key slice that includes EOT's self-attention ([`KeySelection::Faithful`]) — and
//! an explicitly named corrected mode.
//!
//! The folders follow the roles, each using only those listed before it:
//! - [`latent`]: the CODI model and its latent loop — checkpoint files, the loaded model, the
//!   CODI-shaped checkpoint `make-model` builds, the loop, the answer parsers. Nothing here knows
//!   about experiments.
//! - [`problems`]: the problems every step runs on — the seed's dataset schema, its stratified
//!   sample, the embedded synthetic set.
//! - [`runner`]: what every step shares — the one resumable, sharded per-problem runner, the
//!   settings sidecar that makes resuming safe, the experiment folder, writing tables and figures.
//! - [`seed`]: the seed's four steps — token ablation, attention to the thoughts, the analysis
//!   with its statistics, the four figures — and the tables the notebook shows of them.
//! - [`next`]: the seed's next steps — compositional ablation (reusing the seed's ablation hook),
//!   question → thought attention, the residual decomposition — then their figures, then the
//!   analyses that write tables and figures (computation, drawing and writing in that order, so
//!   no module of the folder needs one above it).
//! - [`pipeline`]: `run-all` and the notebook's [`Experiment`], which call the steps of both.
//!
//! Steps (CLI `thoughtscope codi <step>`, each one library call):
//! `make-model` ([`make_model`]: a CODI-shaped checkpoint from SmolLM2 — NOT a CODI model),
//! `dataset` ([`make_dataset`]), `ablate` ([`run_ablation`]), `attention` ([`run_attention`]),
//! `analyze` ([`analyze`]), `run-all` ([`run_all`]; `--test-mode`: the seed's 10 problems), and the
//! seed's next steps `compose`, `routing`, `decompose`. Without `--input`, problems come from the
//! embedded synthetic set ([`problems::synthetic`], NOT GSM8K).
//!
//! ```no_run
//! use thoughtscope::codi::{self, CodiModel, LoadOptions, LoopMode, LoopOptions};
//! let settings = thoughtscope::model::Settings::from_env()?;
//! let codi = CodiModel::load("models/codi-smollm2".as_ref(), &LoadOptions::default(), &settings)?;
//! let answer = codi::generate(&codi, "Janet has 3 apples...", &LoopOptions::for_mode(LoopMode::Cotx), &mut thoughtscope::model::NoHooks)?;
//! println!("{}", answer.text);
//! # Ok::<(), thoughtscope::Error>(())
//! ```

pub mod latent;
pub mod next;
pub mod pipeline;
pub mod problems;
pub mod runner;
pub mod seed;

pub use latent::answer::{Answer, AnswerParser};
pub use latent::codi_model::{CodiModel, CodiWeights, LoadOptions, Projection, SpecialIds};
pub use latent::make_model::{make_model, MakeModelOptions};
pub use latent::thought_loop::{
    decode_greedy, decode_greedy_batch, generate, run_from_prompt, run_from_prompts, run_prompt, run_to_eot, Layout, LoopMode, LoopOptions,
    LoopState, Phase, PhaseHooks, PromptState,
};
pub use pipeline::{run_all, sample_problems, Experiment, ModelSpec, RunAllOptions, RunAllReport};
pub use problems::dataset::{load_problems, make_dataset, stratified_sample, Problem};
pub use problems::synthetic::synthetic_problems;
pub use runner::layout::{ExperimentLayout, StepLayout};
pub use runner::meta::RunMeta;
pub use runner::step::{run_step, ProblemRecord, StepOutcome};
pub use seed::ablation::{ablate_problem, run_ablation, AblationMode, AblationOptions, AblationRecord, AblationSummary};
pub use seed::analyze::{analyze, AnalyzeOptions, ImportanceKind, ImportanceRule};
pub use seed::eot_attention::{attention_for_problem, run_attention, AttentionOptions, AttentionRecord, KeySelection};
pub use seed::figures::SEED_FIGURES;
pub use seed::variant::Variant;
