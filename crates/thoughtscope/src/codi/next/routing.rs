//! Discrete → continuous attention (the seed's next step "which question tokens route to which
//! continuous thoughts"): at each loop step `k` (the position whose input is the
//! continuous thought of ablation token `k`; in the cotx loop step 0 is BOT), the attention
//! probabilities from that query to every question token, per layer averaged over heads and per
//! head at chosen layers, on the clean (un-ablated) run.
//!
//! Question tokens are positions `0..L` (`L` counts BOS, as [`crate::codi::latent::thought_loop::Layout`]); in the
//! official loop BOT at `L` is not a question token. Values are shares of the full softmax row,
//! not renormalised over the question (the rest goes to BOT and earlier thoughts; the question's
//! total is `question_mass`).
//!
//! **Token classes** ([`TokenClass::of`]), from the token's own text (the tokenizer decoding that
//! one id, special tokens kept) with surrounding whitespace removed:
//! 1. `special`: the tokenizer's BOS (the only special token of a question);
//! 2. `number`: at least one ASCII digit, and nothing but digits, `.` and `,` (`12`, `3.5`,
//!    `1,000`; a tokenizer that splits digits gives one number token per digit);
//! 3. `operator`: nothing but the arithmetic symbols `+ - * / × ÷ = % ^ < >`;
//! 4. `word`: at least one alphabetic character (`apples`, `'s`, `5th`);
//! 5. `other`: the rest — punctuation and symbols (`.`, `?`, `$`, `(`), whitespace-only tokens,
//!    and byte pieces of a split character.
//!
//! Aggregation by class, per problem, layer and thought: the class's attention mass (sum over its
//! tokens) and its mean per token (mass / count; undefined when the question has no token of the
//! class). Over problems: the mean of those, over the problems that have the class.

use std::path::Path;

use candle_core::Tensor;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::codi::latent::codi_model::CodiModel;
use crate::codi::latent::thought_loop::{run_to_eot, LoopOptions, Phase, PhaseHooks, LATENT_STEPS};
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::files::JsonStyle;
use crate::codi::runner::output::{count_column, finite_mean, float_column, text_column};
use crate::codi::runner::step::{run_step, ProblemRecord, Step, StepOutcome};
use crate::codi::seed::eot_attention::{check_layers, scale_layers, UPSTREAM_LAYERS};
use crate::model::{HookPoint, Hooks};
use crate::{Error, Result};

/// Results file stem (`results/<stem>_<tag>.json`).
pub const RESULTS_STEM: &str = "question_to_thought_attention";
/// Summary stem (`results/<stem>_<tag>.{json,csv,md}`).
pub(crate) const SUMMARY_STEM: &str = "attention_by_token_type";

/// Class of a question token (see the module doc for the exact rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenClass {
    Special,
    Number,
    Operator,
    Word,
    Other,
}

/// Arithmetic operator symbols.
pub(crate) const OPERATORS: [char; 11] = ['+', '-', '*', '/', '×', '÷', '=', '%', '^', '<', '>'];

impl TokenClass {
    pub const ALL: [TokenClass; 5] =
        [TokenClass::Special, TokenClass::Number, TokenClass::Operator, TokenClass::Word, TokenClass::Other];

    /// Class of a token from its decoded text; `special` for the tokenizer's special tokens.
    pub fn of(text: &str, special: bool) -> TokenClass {
        if special {
            return TokenClass::Special;
        }
        let t = text.trim();
        if t.chars().any(|c| c.is_ascii_digit()) && t.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ',') {
            TokenClass::Number
        } else if !t.is_empty() && t.chars().all(|c| OPERATORS.contains(&c)) {
            TokenClass::Operator
        } else if t.chars().any(char::is_alphabetic) {
            TokenClass::Word
        } else {
            TokenClass::Other
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenClass::Special => "special",
            TokenClass::Number => "number",
            TokenClass::Operator => "operator",
            TokenClass::Word => "word",
            TokenClass::Other => "other",
        }
    }

    fn index(self) -> usize {
        TokenClass::ALL.iter().position(|&c| c == self).expect("listed")
    }
}

/// One question token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionToken {
    pub position: usize,
    pub id: u32,
    /// The tokenizer's decoding of this id alone.
    pub text: String,
    pub class: TokenClass,
}

/// The question's tokens with their classes (BOS included when the tokenizer adds it).
pub fn question_tokens(codi: &CodiModel, question: &str, options: &LoopOptions) -> Result<Vec<QuestionToken>> {
    let ids = codi.tokenizer.encode(&options.mode.prepare_question(question))?;
    let bos = codi.tokenizer.bos();
    ids.iter()
        .enumerate()
        .map(|(position, &id)| {
            let text = codi.tokenizer.decode(&[id], false)?;
            Ok(QuestionToken { position, id, class: TokenClass::of(&text, Some(id) == bos), text })
        })
        .collect()
}

/// Settings of a routing run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingOptions {
    pub loop_options: LoopOptions,
    /// Blocks whose head-mean attention is kept (default: all).
    pub layers: Vec<usize>,
    /// Blocks whose per-head attention is kept too (default: upstream's 4, 8, 14 at the model's
    /// relative depth).
    pub head_layers: Vec<usize>,
}

impl RoutingOptions {
    /// Every block head-averaged, upstream's three blocks per head.
    pub fn for_model(codi: &CodiModel, loop_options: LoopOptions) -> Self {
        let n = codi.model.num_layers();
        RoutingOptions { loop_options, layers: (0..n).collect(), head_layers: scale_layers(&UPSTREAM_LAYERS, n) }
    }
}

/// One problem's record (`error` instead of the attention on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    pub problem_id: String,
    pub difficulty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_answer: Option<serde_json::Number>,
    #[serde(default)]
    pub question_tokens: Vec<QuestionToken>,
    /// Absolute position of loop step k (thought k).
    #[serde(default)]
    pub thought_positions: Vec<usize>,
    #[serde(default)]
    pub layers: Vec<usize>,
    /// `[layer][thought][question token]`: head-mean attention probability.
    #[serde(default)]
    pub head_mean: Vec<Vec<Vec<f32>>>,
    /// `[layer][thought]`: the question's share of the row (sum over question tokens).
    #[serde(default)]
    pub question_mass: Vec<Vec<f32>>,
    #[serde(default)]
    pub head_layers: Vec<usize>,
    /// `[head layer][head][thought][question token]`.
    #[serde(default)]
    pub per_head: Vec<Vec<Vec<Vec<f32>>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProblemRecord for RoutingRecord {
    fn problem_id(&self) -> &str {
        &self.problem_id
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn failed(problem: &Problem, error: String) -> Self {
        RoutingRecord {
            problem_id: problem.id.clone(),
            difficulty: problem.difficulty.clone(),
            expected_answer: None,
            question_tokens: vec![],
            thought_positions: vec![],
            layers: vec![],
            head_mean: vec![],
            question_mass: vec![],
            head_layers: vec![],
            per_head: vec![],
            error: Some(error),
        }
    }
}

/// Per class: attention mass and mean per token (`None` when the question has no such token).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassAttention {
    pub class: TokenClass,
    pub tokens: usize,
    pub mass: f64,
    pub per_token: Option<f64>,
}

/// Aggregate one attention row over the question by token class.
pub(crate) fn by_class(row: &[f32], tokens: &[QuestionToken]) -> Vec<ClassAttention> {
    let mut out: Vec<ClassAttention> =
        TokenClass::ALL.iter().map(|&class| ClassAttention { class, tokens: 0, mass: 0.0, per_token: None }).collect();
    for (value, token) in row.iter().zip(tokens) {
        let slot = &mut out[token.class.index()];
        slot.tokens += 1;
        slot.mass += *value as f64;
    }
    for slot in &mut out {
        slot.per_token = (slot.tokens > 0).then(|| slot.mass / slot.tokens as f64);
    }
    out
}

impl RoutingRecord {
    /// Index of block `layer` in `layers`.
    pub fn layer_index(&self, layer: usize) -> Option<usize> {
        self.layers.iter().position(|&l| l == layer)
    }
    /// Class aggregation of the head-mean row of (`layer`, thought `k`).
    pub fn class_attention(&self, layer: usize, k: usize) -> Option<Vec<ClassAttention>> {
        let row = self.head_mean.get(self.layer_index(layer)?)?.get(k)?;
        Some(by_class(row, &self.question_tokens))
    }
    /// Class aggregation of one head's row at a per-head layer.
    pub fn head_class_attention(&self, layer: usize, head: usize, k: usize) -> Option<Vec<ClassAttention>> {
        let li = self.head_layers.iter().position(|&l| l == layer)?;
        let row = self.per_head.get(li)?.get(head)?.get(k)?;
        Some(by_class(row, &self.question_tokens))
    }
}

/// Captures, at every loop step, the attention rows over the question keys.
struct RoutingHooks {
    layers: Vec<usize>,
    head_layers: Vec<usize>,
    question_len: usize,
    step: Option<usize>,
    /// `[layer][thought]` head-mean rows.
    head_mean: Vec<Vec<Vec<f32>>>,
    /// `[head layer][thought][head]` rows.
    per_head: Vec<Vec<Vec<Vec<f32>>>>,
}

impl PhaseHooks for RoutingHooks {
    fn enter(&mut self, phase: Phase) {
        self.step = match phase {
            Phase::Step(k) => Some(k),
            _ => None,
        };
    }
}

impl Hooks for RoutingHooks {
    fn wants(&self, point: &HookPoint) -> bool {
        self.step.is_some()
            && matches!(point, HookPoint::AttnPattern(l) if self.layers.contains(l) || self.head_layers.contains(l))
    }
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> crate::model::Result<Option<Tensor>> {
        let HookPoint::AttnPattern(layer) = *point else { return Ok(None) };
        // [1, H, 1, Lk] → the question keys [H, L].
        let keys = value.dim(3)?;
        if keys < self.question_len {
            return Err(Error::Other(format!("attention row of {keys} keys is shorter than the question ({})", self.question_len)).into());
        }
        let rows = value.narrow(3, 0, self.question_len)?.squeeze(0)?.squeeze(1)?;
        if let Some(i) = self.layers.iter().position(|&l| l == layer) {
            self.head_mean[i].push(rows.mean(0)?.to_vec1::<f32>()?);
        }
        if let Some(i) = self.head_layers.iter().position(|&l| l == layer) {
            self.per_head[i].push(rows.to_vec2::<f32>()?);
        }
        Ok(None)
    }
}

/// Attention from every thought to every question token, for one problem.
pub fn routing_for_problem(codi: &CodiModel, problem: &Problem, options: &RoutingOptions) -> Result<RoutingRecord> {
    let n = codi.model.num_layers();
    check_layers("routing layers", &options.layers, n)?;
    check_layers("routing head layers", &options.head_layers, n)?;
    let tokens = question_tokens(codi, &problem.question, &options.loop_options)?;
    let mut hooks = RoutingHooks {
        layers: options.layers.clone(),
        head_layers: options.head_layers.clone(),
        question_len: tokens.len(),
        step: None,
        head_mean: vec![Vec::new(); options.layers.len()],
        per_head: vec![Vec::new(); options.head_layers.len()],
    };
    let state = run_to_eot(codi, &problem.question, &options.loop_options, &mut hooks)?;
    if state.layout.question_len != tokens.len() {
        return Err(Error::Other(format!(
            "question of {} tokens, but the loop saw {}",
            tokens.len(),
            state.layout.question_len
        )));
    }
    let complete = hooks.head_mean.iter().all(|rows| rows.len() == LATENT_STEPS)
        && hooks.per_head.iter().all(|rows| rows.len() == LATENT_STEPS);
    if !complete {
        return Err(Error::Other(format!("expected attention rows of {LATENT_STEPS} loop steps at every layer")));
    }
    let question_mass =
        hooks.head_mean.iter().map(|thoughts| thoughts.iter().map(|row| row.iter().sum()).collect()).collect();
    // [head layer][thought][head] → [head layer][head][thought].
    let per_head = hooks
        .per_head
        .into_iter()
        .map(|thoughts| {
            let heads = thoughts.first().map_or(0, Vec::len);
            (0..heads).map(|h| thoughts.iter().map(|by_head| by_head[h].clone()).collect()).collect()
        })
        .collect();
    Ok(RoutingRecord {
        problem_id: problem.id.clone(),
        difficulty: problem.difficulty.clone(),
        expected_answer: Some(problem.answer.clone()),
        question_tokens: tokens,
        thought_positions: state.layout.step_positions(),
        layers: options.layers.clone(),
        head_mean: hooks.head_mean,
        question_mass,
        head_layers: options.head_layers.clone(),
        per_head,
        error: None,
    })
}

/// `codi routing`: every problem not yet in `out`, `out` rewritten after each (resumable,
/// merging shard parts: [`crate::codi::runner::step`]).
pub fn run_routing(codi: &CodiModel, problems: &[Problem], options: &RoutingOptions, out: &Path) -> Result<StepOutcome<RoutingRecord>> {
    let n = codi.model.num_layers();
    check_layers("routing layers", &options.layers, n)?;
    check_layers("routing head layers", &options.head_layers, n)?;
    let step = Step { name: "routing", settings: serde_json::to_value(options)?, style: JsonStyle::Compact };
    run_step(codi, &step, problems, out, |problem| routing_for_problem(codi, problem, options))
}

/// Means over problems, by token class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingSummary {
    pub problems: usize,
    pub classes: Vec<TokenClass>,
    pub layers: Vec<usize>,
    /// `[layer][thought][class]`: mean over problems of the class's mean attention per token.
    pub per_token: Vec<Vec<Vec<Option<f64>>>>,
    /// `[layer][thought][class]`: mean over problems of the class's attention mass.
    pub mass: Vec<Vec<Vec<Option<f64>>>>,
    /// `[layer][thought]`: mean question mass.
    pub question_mass: Vec<Vec<Option<f64>>>,
    pub head_layers: Vec<usize>,
    /// `[head layer][head][class]`: mean over problems and thoughts of the per-token attention.
    pub head_per_token: Vec<Vec<Vec<Option<f64>>>>,
}

/// Aggregate records (errors skipped; layers from the first complete record).
pub fn summarize_routing(records: &[RoutingRecord]) -> Result<RoutingSummary> {
    let ok: Vec<&RoutingRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let first = ok.first().ok_or_else(|| Error::invalid("routing summary: no successful record"))?;
    let (layers, head_layers) = (first.layers.clone(), first.head_layers.clone());
    if let Some(bad) = ok.iter().find(|r| r.layers != layers || r.head_layers != head_layers) {
        return Err(Error::invalid(format!("routing summary: problem {} was run with other layers", bad.problem_id)));
    }
    let classes = TokenClass::ALL.to_vec();
    let mut per_token = Vec::new();
    let mut mass = Vec::new();
    let mut question_mass = Vec::new();
    for (li, &layer) in layers.iter().enumerate() {
        let mut pt_layer = Vec::new();
        let mut mass_layer = Vec::new();
        for k in 0..LATENT_STEPS {
            let per_problem: Vec<Vec<ClassAttention>> = ok.iter().filter_map(|r| r.class_attention(layer, k)).collect();
            pt_layer.push(
                (0..classes.len()).map(|c| finite_mean(per_problem.iter().filter_map(|p| p[c].per_token))).collect(),
            );
            mass_layer.push(
                (0..classes.len())
                    .map(|c| finite_mean(per_problem.iter().filter(|p| p[c].tokens > 0).map(|p| p[c].mass)))
                    .collect(),
            );
        }
        per_token.push(pt_layer);
        mass.push(mass_layer);
        question_mass.push(
            (0..LATENT_STEPS)
                .map(|k| finite_mean(ok.iter().filter_map(|r| r.question_mass.get(li)?.get(k).map(|&v| v as f64))))
                .collect(),
        );
    }
    let mut head_per_token = Vec::new();
    for (li, &layer) in head_layers.iter().enumerate() {
        let heads = first.per_head.get(li).map_or(0, Vec::len);
        head_per_token.push(
            (0..heads)
                .map(|h| {
                    let rows: Vec<Vec<ClassAttention>> = ok
                        .iter()
                        .flat_map(|r| (0..LATENT_STEPS).filter_map(move |k| r.head_class_attention(layer, h, k)))
                        .collect();
                    (0..classes.len()).map(|c| finite_mean(rows.iter().filter_map(|p| p[c].per_token))).collect()
                })
                .collect(),
        );
    }
    Ok(RoutingSummary { problems: ok.len(), classes, layers, per_token, mass, question_mass, head_layers, head_per_token })
}

/// The summary as a table: one row per (layer, thought, class).
pub fn summary_table(summary: &RoutingSummary) -> Result<DataFrame> {
    // (layer index, thought, class index) in row order.
    let rows: Vec<(usize, usize, usize)> = (0..summary.layers.len())
        .flat_map(|li| (0..LATENT_STEPS).flat_map(move |k| (0..TokenClass::ALL.len()).map(move |c| (li, k, c))))
        .collect();
    Ok(DataFrame::new_infer_height(vec![
        count_column("layer", rows.iter().map(|r| summary.layers[r.0])),
        text_column("thought", rows.iter().map(|r| format!("T{}", r.1))),
        text_column("class", rows.iter().map(|r| summary.classes[r.2].name().to_owned())),
        float_column("attention_per_token", rows.iter().map(|r| summary.per_token[r.0][r.1][r.2])),
        float_column("attention_mass", rows.iter().map(|r| summary.mass[r.0][r.1][r.2])),
    ])?)
}

/// One problem's question-token × thought attention at `layer` (head mean) as a table.
pub fn question_table(record: &RoutingRecord, layer: usize) -> Result<DataFrame> {
    let li = record
        .layer_index(layer)
        .ok_or_else(|| Error::invalid(format!("routing record {} has no layer {layer}", record.problem_id)))?;
    let tokens = &record.question_tokens;
    let mut columns = vec![
        count_column("position", tokens.iter().map(|t| t.position)),
        text_column("token", tokens.iter().map(|t| t.text.clone())),
        text_column("class", tokens.iter().map(|t| t.class.name().to_owned())),
    ];
    for k in 0..LATENT_STEPS {
        let row = &record.head_mean[li][k];
        columns.push(float_column(&format!("T{k}"), (0..tokens.len()).map(|q| row.get(q).map(|&v| v as f64))));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_classes_by_hand() {
        let cases = [
            ("12", TokenClass::Number),
            (" 3.5", TokenClass::Number),
            ("1,000", TokenClass::Number),
            (" +", TokenClass::Operator),
            ("=", TokenClass::Operator),
            ("%", TokenClass::Operator),
            (" apples", TokenClass::Word),
            ("'s", TokenClass::Word),
            ("5th", TokenClass::Word),
            ("?", TokenClass::Other),
            (" $", TokenClass::Other),
            (".", TokenClass::Other),
            ("\n", TokenClass::Other),
            ("", TokenClass::Other),
            ("\u{FFFD}", TokenClass::Other),
        ];
        for (text, class) in cases {
            assert_eq!(TokenClass::of(text, false), class, "{text:?}");
        }
        assert_eq!(TokenClass::of("<|begin_of_text|>", true), TokenClass::Special);
    }

    #[test]
    fn class_aggregation_by_hand() {
        let token = |position, class| QuestionToken { position, id: 0, text: String::new(), class };
        let tokens = [
            token(0, TokenClass::Special),
            token(1, TokenClass::Word),
            token(2, TokenClass::Number),
            token(3, TokenClass::Word),
        ];
        let got = by_class(&[0.5, 0.1, 0.2, 0.15], &tokens);
        assert_eq!(got[TokenClass::Word.index()].tokens, 2);
        assert!((got[TokenClass::Word.index()].mass - 0.25).abs() < 1e-7);
        assert!((got[TokenClass::Word.index()].per_token.unwrap() - 0.125).abs() < 1e-7);
        assert_eq!(got[TokenClass::Operator.index()].per_token, None);
        assert!((got[TokenClass::Special.index()].mass - 0.5).abs() < 1e-7);
    }
}
