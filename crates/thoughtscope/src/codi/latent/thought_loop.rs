//! The CODI latent loop and greedy answer decoding (zhenyi4/codi `test.py`, CoT_Exploration's loop).
//!
//! Two loops:
//! - [`LoopMode::Official`] (`zhenyi4/codi/test.py`): question + BOT in one forward, then six
//!   continuous thoughts z1..z6 at `L+1..L+6`, EOT at `L+7`; the question is `strip()`ped with
//!   double spaces collapsed once; up to 256 new tokens.
//! - [`LoopMode::Cotx`] (CoT_Exploration, used by all its LLaMA experiments): the question alone,
//!   then BOT as loop step 0 at `L` and z1..z5 at `L+1..L+5` (z6 is computed upstream and
//!   discarded), EOT at `L+6`; the raw question; up to 200 new tokens.
//!
//! Either way there are six single-position forwards before EOT; "token k" of the ablation is the
//! k-th of them ([`Layout::step_position`]). Decoding is greedy over the logit slice `[: V0+2]`
//! (upstream excludes only EOT, so pad and bot stay allowed), stopping when the argmax is an EOS.
//! `L` counts BOS.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::answer::{Answer, AnswerParser};
use super::codi_model::CodiModel;
use crate::model::{HookPoint, Hooks, Input, KvCache, Logits, NoHooks};
use crate::{Error, Result};

/// Number of single-position forwards between the question and EOT, in both loops.
pub(crate) const LATENT_STEPS: usize = 6;

/// Which inference loop to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopMode {
    /// Official CODI: Q+BOT, z1..z6, EOT at L+7.
    Official,
    /// CoT_Exploration: Q, then BOT as step 0, z1..z5, EOT at L+6.
    Cotx,
}
crate::model::named_values!(LoopMode, "loop mode", { Official => "official", Cotx => "cotx" });

impl LoopMode {
    /// Upstream `max_new_tokens`.
    pub fn default_max_new_tokens(self) -> usize {
        match self {
            LoopMode::Official => 256,
            LoopMode::Cotx => 200,
        }
    }
    /// The answer parser the loop's own code uses.
    pub fn default_parser(self) -> AnswerParser {
        match self {
            LoopMode::Official => AnswerParser::Official,
            LoopMode::Cotx => AnswerParser::Cotx,
        }
    }
    /// The question text as the loop's code feeds it to the tokenizer.
    pub fn prepare_question(self, question: &str) -> String {
        match self {
            // Python: question.strip().replace('  ', ' ') — one non-overlapping pass.
            LoopMode::Official => question.trim().replace("  ", " "),
            LoopMode::Cotx => question.to_owned(),
        }
    }
}

/// Absolute positions of one run. `question_len` = L, the question's token count including BOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub mode: LoopMode,
    pub question_len: usize,
}

impl Layout {
    /// Position of loop step `k` (0..6): official z_{k+1} at `L+1+k`; cotx BOT/z_k at `L+k`.
    pub fn step_position(&self, k: usize) -> usize {
        match self.mode {
            LoopMode::Official => self.question_len + 1 + k,
            LoopMode::Cotx => self.question_len + k,
        }
    }
    pub fn step_positions(&self) -> Vec<usize> {
        (0..LATENT_STEPS).map(|k| self.step_position(k)).collect()
    }
    /// Position of the EOT input (whose output predicts the first answer token).
    pub fn eot_position(&self) -> usize {
        self.step_position(LATENT_STEPS - 1) + 1
    }
    /// Upstream attention script's key slice `[L+1, L+7)`; in the cotx loop its last key is EOT
    /// itself (CoT_Exploration `2_extract_attention.py`).
    pub fn faithful_attention_keys(&self) -> Vec<usize> {
        (self.question_len + 1..self.question_len + 7).collect()
    }
    /// Position of the last token of the first forward (the question pass): the last question
    /// token (cotx) or BOT (official).
    pub fn last_prompt_position(&self) -> usize {
        match self.mode {
            LoopMode::Official => self.question_len,
            LoopMode::Cotx => self.question_len - 1,
        }
    }
}

/// Where the loop is, told to [`PhaseHooks`] before each forward call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The question pass (official: question + BOT).
    Prompt,
    /// Loop step `k` (0..6), one position.
    Step(usize),
    /// The EOT forward (predicts the first answer token).
    Eot,
    /// Decoding, or teacher forcing a target after EOT.
    Answer,
}

/// Hooks that learn the loop phase before each forward (ablation and attention need it).
pub trait PhaseHooks: Hooks {
    fn enter(&mut self, phase: Phase);
}

impl PhaseHooks for NoHooks {
    fn enter(&mut self, _: Phase) {}
}

/// Which logits decoding may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogitSlice {
    /// Upstream: `[: V0+2]`, only EOT excluded (pad and bot can be generated).
    Upstream,
    /// Base vocabulary only (`[: V0]`), a deliberate deviation.
    BaseVocab,
}
crate::model::named_values!(LogitSlice, "logit slice", { Upstream => "upstream", BaseVocab => "base-vocab" });

/// Options of one loop run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopOptions {
    pub mode: LoopMode,
    pub max_new_tokens: usize,
    pub parser: AnswerParser,
    pub logit_slice: LogitSlice,
}

impl LoopOptions {
    /// Upstream defaults of `mode`.
    pub fn for_mode(mode: LoopMode) -> Self {
        LoopOptions {
            mode,
            max_new_tokens: mode.default_max_new_tokens(),
            parser: mode.default_parser(),
            logit_slice: LogitSlice::Upstream,
        }
    }
}

/// State after the EOT forward: enough to decode, or to score a continuation.
#[derive(Debug, Clone)]
pub struct LoopState {
    pub layout: Layout,
    pub cache: KvCache,
    /// Logits of the EOT position (they predict the first answer token), sliced per the options.
    pub eot_logits: Tensor,
}

/// A decoded answer.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    pub text: String,
    pub predicted: Option<Answer>,
}

/// State after the question pass: the cache and the first loop input. Cloning is cheap (the
/// cache shares its tensors), so ablation runs whose hooks leave the question pass alone can all
/// continue from one prompt state; the numbers are those of recomputing it.
#[derive(Debug, Clone)]
pub struct PromptState {
    pub layout: Layout,
    pub cache: KvCache,
    /// Input of loop step 0: BOT's embedding (cotx) or z1 = prj(h) at BOT (official).
    pub next_input: Tensor,
}

/// The question pass (official: question + BOT), told to `hooks` as [`Phase::Prompt`].
pub fn run_prompt(codi: &CodiModel, question: &str, options: &LoopOptions, hooks: &mut dyn PhaseHooks) -> Result<PromptState> {
    let model = &codi.model;
    let special = codi.special;
    let mut ids = codi.tokenizer.encode(&options.mode.prepare_question(question))?;
    let question_len = ids.len();
    let layout = Layout { mode: options.mode, question_len };
    let mut cache = KvCache::new(model);
    if options.mode == LoopMode::Official {
        ids.push(special.bot);
    }
    hooks.enter(Phase::Prompt);
    let out = model.forward_with(Input::Ids(&ids), &mut cache, hooks, Logits::None)?;
    // The latent fed next comes from the last final-normed hidden state (HF hidden_states[-1]).
    let next_input = match options.mode {
        LoopMode::Official => codi.projection.forward(&last_position(&out.hidden)?)?,
        LoopMode::Cotx => model.embed(&[special.bot])?,
    };
    Ok(PromptState { layout, cache, next_input })
}

/// The six loop steps and the EOT forward after a question pass.
pub fn run_from_prompt(codi: &CodiModel, prompt: PromptState, options: &LoopOptions, hooks: &mut dyn PhaseHooks) -> Result<LoopState> {
    let model = &codi.model;
    let PromptState { layout, mut cache, mut next_input } = prompt;
    // 1. Six single-position steps; each output's projection is the next input (the last one is
    //    never used, so it is not computed).
    for step in 0..LATENT_STEPS {
        hooks.enter(Phase::Step(step));
        let out = model.forward_with(Input::Embeds(&next_input), &mut cache, hooks, Logits::None)?;
        if step + 1 < LATENT_STEPS {
            next_input = codi.projection.forward(&last_position(&out.hidden)?)?;
        }
    }
    // 2. EOT.
    hooks.enter(Phase::Eot);
    let eot = model.embed(&[codi.special.eot])?;
    let out = model.forward_with(Input::Embeds(&eot), &mut cache, hooks, Logits::Last)?;
    let eot_logits = slice_logits(codi, options.logit_slice, out.logits()?)?;
    Ok(LoopState { layout, cache, eot_logits })
}

/// [`run_from_prompt`] for several runs of one question at once, run `i` continuing `prompts[i]`
/// with `hooks[i]`: each loop step and the EOT forward is one forward over every run, their caches
/// stacked into one batch, so the weights are read once per step instead of once per run (CPU
/// steps of one position are bound by reading them). Row `i` of every hooked tensor goes to
/// `hooks[i]` alone. The numbers are those of the runs one by one: a one-position step over a
/// batch takes the model's per-row kernels, and the projection is applied row by row. Hooks that
/// read attention or suppress keys are refused (run those one by one).
pub fn run_from_prompts(
    codi: &CodiModel,
    prompts: Vec<PromptState>,
    options: &LoopOptions,
    hooks: &mut [&mut dyn PhaseHooks],
) -> Result<Vec<LoopState>> {
    let model = &codi.model;
    if prompts.len() != hooks.len() {
        return Err(Error::invalid(format!("run_from_prompts: {} prompts and {} hooks", prompts.len(), hooks.len())));
    }
    let Some(layout) = prompts.first().map(|p| p.layout) else { return Ok(Vec::new()) };
    if prompts.iter().any(|p| p.layout != layout) {
        return Err(Error::invalid("run_from_prompts: the runs must continue one question (one layout)"));
    }
    for hook in hooks.iter_mut() {
        let suppresses = (0..model.num_layers()).any(|layer| hook.key_suppression(layer).is_some());
        if hook.attention_sink().is_some() || suppresses {
            return Err(Error::invalid("run_from_prompts: hooks that read attention or suppress keys run one by one (run_from_prompt)"));
        }
    }
    let runs = prompts.len();
    let caches: Vec<&KvCache> = prompts.iter().map(|p| &p.cache).collect();
    let mut cache = KvCache::stack(&caches)?;
    let mut inputs: Vec<Tensor> = prompts.iter().map(|p| p.next_input.clone()).collect();
    drop(prompts);
    let mut rows = RowHooks { hooks };
    // 1. Six single-position steps, as in `run_from_prompt`.
    for step in 0..LATENT_STEPS {
        rows.enter(Phase::Step(step));
        let out = model.forward_with(Input::Embeds(&Tensor::cat(&inputs, 0)?), &mut cache, &mut rows, Logits::None)?;
        if step + 1 < LATENT_STEPS {
            let last = last_position(&out.hidden)?;
            inputs = (0..runs).map(|i| Ok(codi.projection.forward(&last.narrow(0, i, 1)?)?)).collect::<Result<_>>()?;
        }
    }
    // 2. EOT.
    rows.enter(Phase::Eot);
    let eot = model.embed(&[codi.special.eot])?;
    let out = model.forward_with(Input::Embeds(&Tensor::cat(&vec![&eot; runs], 0)?), &mut cache, &mut rows, Logits::Last)?;
    let logits = out.logits()?;
    (0..runs)
        .map(|i| {
            let eot_logits = slice_logits(codi, options.logit_slice, &logits.narrow(0, i, 1)?)?;
            Ok(LoopState { layout, cache: cache.select_rows(&[i])?, eot_logits })
        })
        .collect()
}

/// Hooks of a batch of runs: row `i` of a hooked tensor is shown to `hooks[i]` only (when it
/// wants the point), and what it returns replaces that row.
struct RowHooks<'a, 'h> {
    hooks: &'a mut [&'h mut dyn PhaseHooks],
}

impl Hooks for RowHooks<'_, '_> {
    fn begin(&mut self, offset: usize, len: usize) {
        for hook in self.hooks.iter_mut() {
            hook.begin(offset, len);
        }
    }

    fn wants(&self, point: &HookPoint) -> bool {
        self.hooks.iter().any(|hook| hook.wants(point))
    }

    fn on(&mut self, point: &HookPoint, value: &Tensor) -> crate::model::Result<Option<Tensor>> {
        let mut replaced: Option<Vec<Tensor>> = None;
        for (i, hook) in self.hooks.iter_mut().enumerate() {
            if !hook.wants(point) {
                continue;
            }
            if let Some(new) = hook.on(point, &value.narrow(0, i, 1)?)? {
                let rows = match &mut replaced {
                    Some(rows) => rows,
                    None => replaced.insert((0..value.dim(0)?).map(|j| value.narrow(0, j, 1)).collect::<candle_core::Result<_>>()?),
                };
                rows[i] = new;
            }
        }
        Ok(match replaced {
            Some(rows) => Some(Tensor::cat(&rows, 0)?),
            None => None,
        })
    }
}

impl PhaseHooks for RowHooks<'_, '_> {
    fn enter(&mut self, phase: Phase) {
        for hook in self.hooks.iter_mut() {
            hook.enter(phase);
        }
    }
}

/// Run the prompt, the six loop steps and the EOT forward; `hooks` sees every forward, told its
/// phase first.
pub fn run_to_eot(codi: &CodiModel, question: &str, options: &LoopOptions, hooks: &mut dyn PhaseHooks) -> Result<LoopState> {
    let prompt = run_prompt(codi, question, options, hooks)?;
    run_from_prompt(codi, prompt, options, hooks)
}

/// Greedy decoding from the EOT state: argmax, stop (without keeping it) at any EOS, at most
/// `max_new_tokens` tokens; text decoded with special tokens skipped.
pub fn decode_greedy(codi: &CodiModel, state: LoopState, options: &LoopOptions, hooks: &mut dyn PhaseHooks) -> Result<Decoded> {
    let stop = codi.stop_ids();
    let mut cache = state.cache;
    let mut logits = state.eot_logits;
    let mut tokens = Vec::new();
    hooks.enter(Phase::Answer);
    for _ in 0..options.max_new_tokens {
        let next = argmax(&logits.to_vec1::<f32>()?);
        if stop.contains(&next) {
            break;
        }
        tokens.push(next);
        if tokens.len() == options.max_new_tokens {
            break;
        }
        let out = codi.model.forward_with(Input::Ids(&[next]), &mut cache, hooks, Logits::Last)?;
        logits = slice_logits(codi, options.logit_slice, out.logits()?)?;
    }
    finish_decoding(codi, tokens, options)
}

/// [`decode_greedy`] for several runs at once, without hooks (no ablation or attention run
/// intervenes while decoding): every step is one forward over the runs still going, their caches
/// stacked into one batch, so the weights are read once per step instead of once per run (CPU
/// decoding is bound by reading them). Finished runs leave the batch. The caches must have one
/// length, as the runs of one problem do.
pub fn decode_greedy_batch(codi: &CodiModel, states: Vec<LoopState>, options: &LoopOptions) -> Result<Vec<Decoded>> {
    let stop = codi.stop_ids();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); states.len()];
    // Take one argmax for a run; true while it goes on.
    let take = |tokens: &mut Vec<u32>, row: &[f32]| {
        let next = argmax(row);
        if stop.contains(&next) {
            return false;
        }
        tokens.push(next);
        tokens.len() < options.max_new_tokens
    };
    let mut live = Vec::new();
    if options.max_new_tokens > 0 {
        for (i, state) in states.iter().enumerate() {
            if take(&mut tokens[i], &state.eot_logits.to_vec1::<f32>()?) {
                live.push(i);
            }
        }
    }
    if !live.is_empty() {
        let caches: Vec<&KvCache> = live.iter().map(|&i| &states[i].cache).collect();
        let mut cache = KvCache::stack(&caches)?;
        let width = logit_width(codi, options.logit_slice);
        let hidden = codi.model.config().hidden_size;
        while !live.is_empty() {
            let ids: Vec<u32> = live.iter().map(|&i| *tokens[i].last().expect("live runs have a token")).collect();
            let x = codi.model.embed(&ids)?.reshape((ids.len(), 1, hidden))?;
            let out = codi.model.forward_with(Input::Embeds(&x), &mut cache, &mut NoHooks, Logits::Last)?;
            let rows = out.logits()?.squeeze(1)?.narrow(D::Minus1, 0, width)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut keep = Vec::with_capacity(live.len());
            for (row, &i) in live.iter().enumerate() {
                if take(&mut tokens[i], &rows[row]) {
                    keep.push(row);
                }
            }
            if keep.len() != live.len() {
                live = keep.iter().map(|&row| live[row]).collect();
                if !live.is_empty() {
                    cache = cache.select_rows(&keep)?;
                }
            }
        }
    }
    tokens.into_iter().map(|t| finish_decoding(codi, t, options)).collect()
}

/// Text and parsed answer of decoded tokens. The extra rows (pad/bot) are not tokenizer tokens;
/// upstream's decode drops them as special.
fn finish_decoding(codi: &CodiModel, tokens: Vec<u32>, options: &LoopOptions) -> Result<Decoded> {
    let text_ids: Vec<u32> = tokens.iter().copied().filter(|&t| t < codi.special.base_vocab).collect();
    let text = codi.tokenizer.decode(&text_ids, true)?;
    let predicted = options.parser.parse(&text);
    Ok(Decoded { tokens, text, predicted })
}

/// Tokens whose log-prob measures "the model gives the gold answer": the number in
/// `"The answer is: {gold}"` (CODI's training target), i.e. the tokens after those of
/// `"The answer is:"`, teacher-forced together with that prefix. Returns (all target tokens,
/// index of the first scored one).
pub fn gold_answer_target(codi: &CodiModel, gold: &str) -> Result<(Vec<u32>, usize)> {
    answer_tokens(&codi.tokenizer, gold)
}

/// The tokens of `"The answer is: {gold}"` and the index of the first one after the prefix's.
fn answer_tokens(tokenizer: &crate::model::Tokenizer, gold: &str) -> Result<(Vec<u32>, usize)> {
    let prefix = tokenizer.encode_raw("The answer is:")?;
    let full = tokenizer.encode_raw(&format!("The answer is: {gold}"))?;
    let first_scored = if full.starts_with(&prefix) && full.len() > prefix.len() { prefix.len() } else { 0 };
    Ok((full, first_scored))
}

/// The first token of the gold answer that carries the number: the first token from
/// [`gold_answer_target`]'s first scored one whose text is not whitespace only. Tokenizers that
/// keep a space as its own token (SmolLM2's `' '` after `"The answer is:"`; Llama-3 splits the
/// same way) would otherwise make the space the answer's "first token". Returns (token, index in
/// the target tokens).
pub fn gold_number_token(tokenizer: &crate::model::Tokenizer, gold: &str) -> Result<(u32, usize)> {
    let (full, first_scored) = answer_tokens(tokenizer, gold)?;
    for (i, &token) in full.iter().enumerate().skip(first_scored) {
        if !tokenizer.decode(&[token], false)?.trim().is_empty() {
            return Ok((token, i));
        }
    }
    Err(crate::Error::invalid(format!("the gold answer `{gold}` has no token that is not whitespace")))
}

/// Log-probability of the gold answer's number given the EOT state (see [`gold_answer_target`]).
pub fn gold_logprob(codi: &CodiModel, state: &LoopState, gold: &str, hooks: &mut dyn PhaseHooks) -> Result<f64> {
    let (target, first_scored) = gold_answer_target(codi, gold)?;
    let all = per_token_logprobs(codi, state, &target, hooks)?;
    Ok(all[first_scored..].iter().sum())
}

fn per_token_logprobs(codi: &CodiModel, state: &LoopState, target: &[u32], hooks: &mut dyn PhaseHooks) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(target.len());
    if target.is_empty() {
        return Ok(out);
    }
    out.push(log_softmax_at(&state.eot_logits, target[0])?);
    if target.len() > 1 {
        let mut cache = state.cache.clone();
        hooks.enter(Phase::Answer);
        let fwd = codi.model.forward_with(Input::Ids(&target[..target.len() - 1]), &mut cache, hooks, Logits::All)?;
        let width = state.eot_logits.dim(D::Minus1)?;
        let logits = fwd.logits()?.squeeze(0)?.narrow(D::Minus1, 0, width)?;
        for (i, &token) in target[1..].iter().enumerate() {
            out.push(log_softmax_at(&logits.get(i)?, token)?);
        }
    }
    Ok(out)
}

/// The whole loop: run to EOT, decode greedily.
pub fn generate(codi: &CodiModel, question: &str, options: &LoopOptions, hooks: &mut dyn PhaseHooks) -> Result<Decoded> {
    let state = run_to_eot(codi, question, options, hooks)?;
    decode_greedy(codi, state, options, hooks)
}

/// `[1, L, d]` → `[1, 1, d]` at the last position.
fn last_position(hidden: &Tensor) -> Result<Tensor> {
    let len = hidden.dim(1)?;
    Ok(hidden.narrow(1, len - 1, 1)?)
}

/// Last-position logits `[.., vocab]` → 1-D `[width]` (or `[L, width]` for several positions).
fn slice_logits(codi: &CodiModel, slice: LogitSlice, logits: &Tensor) -> Result<Tensor> {
    let width = logit_width(codi, slice);
    let logits = logits.squeeze(0)?;
    let logits = if logits.dim(0)? == 1 { logits.squeeze(0)? } else { logits };
    Ok(logits.narrow(D::Minus1, 0, width)?.to_dtype(DType::F32)?)
}

fn logit_width(codi: &CodiModel, slice: LogitSlice) -> usize {
    match slice {
        LogitSlice::Upstream => codi.special.base_vocab as usize + 2,
        LogitSlice::BaseVocab => codi.special.base_vocab as usize,
    }
}

/// Index of the largest logit; the first on ties, like `torch.argmax`.
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(logits)[token]` in f64 for a 1-D tensor.
fn log_softmax_at(logits: &Tensor, token: u32) -> Result<f64> {
    let values = logits.to_vec1::<f32>()?;
    let token = token as usize;
    if token >= values.len() {
        return Ok(f64::NEG_INFINITY);
    }
    let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = values.iter().map(|&v| (v as f64 - max).exp()).sum();
    Ok(values[token] as f64 - max - sum.ln())
}
