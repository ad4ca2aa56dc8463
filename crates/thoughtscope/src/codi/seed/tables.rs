//! The tables the seed's README shows, and the per-step tables the notebook displays, as polars
//! DataFrames (one function each, so the notebook's cells only call and display).
//!
//! - [`problems_table`]: the sampled problems (step 1);
//! - [`ablation_table`]: per problem, the baseline and each variant's six importances (step 2);
//! - [`attention_table`]: mean attention per variant, block and thought (step 3);
//! - [`importance_table`]: the README's "RQ1: Token Importance" (share of problems per token);
//! - [`correlation_table`]: the README's "RQ2: Attention-Importance Correlation" (r, p, verdict);
//! - [`per_token_table`], [`by_difficulty_table`], [`comparison_frame`]: the rest of
//!   `summary_statistics.json` and the faithful-vs-corrected comparison.

use polars::prelude::*;

use super::ablation::AblationSummary;
use super::analyze::{Analysis, ComparisonRow};
use super::eot_attention::AttentionRecord;
use super::variant::Variant;
use crate::codi::latent::thought_loop::LATENT_STEPS;
use crate::codi::problems::dataset::Problem;
use crate::{Context, Result};

/// Step 1: id, difficulty, gold answer and question of each sampled problem.
pub fn problems_table(problems: &[Problem]) -> Result<DataFrame> {
    df!(
        "problem_id" => problems.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        "difficulty" => problems.iter().map(|p| p.difficulty.clone()).collect::<Vec<_>>(),
        "answer" => problems.iter().map(|p| p.answer_f64()).collect::<Vec<_>>(),
        "question" => problems.iter().map(|p| p.question.clone()).collect::<Vec<_>>(),
    )
    .while_doing("the problems table")
}

/// Step 2: one row per problem and variant: the baseline answer, whether it is right, the six
/// binary importances and the six log-prob drops.
pub fn ablation_table(runs: &[(Variant, &AblationSummary)]) -> Result<DataFrame> {
    let mut variant = Vec::new();
    let mut problem = Vec::new();
    let mut expected = Vec::new();
    let mut answer = Vec::new();
    let mut correct = Vec::new();
    let mut importance = Vec::new();
    let mut logprob = Vec::new();
    for (v, summary) in runs {
        for r in &summary.records {
            variant.push(v.name().to_owned());
            problem.push(r.problem_id.clone());
            expected.push(r.expected_answer.to_string());
            answer.push(r.baseline.as_ref().map_or_else(|| "error".to_owned(), |b| b.predicted_answer.to_string()));
            correct.push(r.baseline.as_ref().map(|b| b.correct));
            importance.push(format!("{:?}", r.importance_scores));
            logprob.push(
                r.token_ablations
                    .iter()
                    .map(|t| t.logprob_importance.map_or("-".to_owned(), |x| format!("{x:.2}")))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    df!(
        "variant" => variant,
        "problem_id" => problem,
        "expected" => expected,
        "baseline answer" => answer,
        "baseline correct" => correct,
        "importance" => importance,
        "Δlog p" => logprob,
    )
    .while_doing("the ablation table")
}

/// Step 3: mean over problems of the attention to each thought, per variant and block.
pub fn attention_table(runs: &[(Variant, &[AttentionRecord])], layers: &[usize]) -> Result<DataFrame> {
    let (mut variant, mut block, mut token, mut mean) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (v, records) in runs {
        for &l in layers {
            for k in 0..LATENT_STEPS {
                let values: Vec<f64> = records.iter().filter_map(|r| r.token_attention(l, k)).collect();
                variant.push(v.name().to_owned());
                block.push(l as u32);
                token.push(k as u32);
                mean.push(if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 });
            }
        }
    }
    df!("variant" => variant, "block" => block, "token" => token, "mean attention" => mean).while_doing("the attention table")
}

/// The seed README's RQ1 table: per token, the mean importance (with binary importance, the share
/// of problems whose answer breaks), highest first.
pub fn importance_table(analysis: &Analysis) -> Result<DataFrame> {
    let mut rows: Vec<(String, f64)> =
        analysis.summary.per_token.iter().map(|(token, t)| (token.replace("token_", "Token "), t.importance_mean)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    df!(
        "Token" => rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        "Importance" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
    )
    .while_doing("the importance table")
}

/// The seed's verdict column: "Significant" for p < 0.05, "Trend" for p < 0.15, else "No correlation".
pub(crate) fn significance(p: f64) -> &'static str {
    if p < 0.05 {
        "Significant"
    } else if p < 0.15 {
        "Trend"
    } else if p.is_nan() {
        "undefined"
    } else {
        "No correlation"
    }
}

/// The seed README's RQ2 table: per attention layer, r, p and the verdict.
pub fn correlation_table(analysis: &Analysis) -> Result<DataFrame> {
    let rows: Vec<(&str, f64, f64)> = analysis.summary.overall_correlation.iter().map(|(l, p)| (l, p.r, p.p)).collect();
    df!(
        "Layer" => rows.iter().map(|r| r.0.replace("layer_", "Layer ")).collect::<Vec<_>>(),
        "Correlation" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "P-value" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "Significance" => rows.iter().map(|r| significance(r.2)).collect::<Vec<_>>(),
    )
    .while_doing("the correlation table")
}

/// `per_token` of `summary_statistics.json`.
pub fn per_token_table(analysis: &Analysis) -> Result<DataFrame> {
    let t: Vec<_> = analysis.summary.per_token.iter().collect();
    df!(
        "token" => t.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
        "importance mean" => t.iter().map(|(_, s)| s.importance_mean).collect::<Vec<_>>(),
        "importance std" => t.iter().map(|(_, s)| s.importance_std).collect::<Vec<_>>(),
        "attention mean" => t.iter().map(|(_, s)| s.attention_mean).collect::<Vec<_>>(),
        "attention std" => t.iter().map(|(_, s)| s.attention_std).collect::<Vec<_>>(),
        "r" => t.iter().map(|(_, s)| s.correlation).collect::<Vec<_>>(),
        "p" => t.iter().map(|(_, s)| s.p_value).collect::<Vec<_>>(),
    )
    .while_doing("the per-token table")
}

/// `by_difficulty` of `summary_statistics.json`.
pub fn by_difficulty_table(analysis: &Analysis) -> Result<DataFrame> {
    let d: Vec<_> = analysis.summary.by_difficulty.iter().collect();
    df!(
        "difficulty" => d.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
        "problems" => d.iter().map(|(_, s)| s.num_problems as u32).collect::<Vec<_>>(),
        "mean importance" => d.iter().map(|(_, s)| s.mean_importance).collect::<Vec<_>>(),
        "r" => d.iter().map(|(_, s)| s.correlation).collect::<Vec<_>>(),
        "p" => d.iter().map(|(_, s)| s.p_value).collect::<Vec<_>>(),
    )
    .while_doing("the per-difficulty table")
}

/// The faithful-vs-corrected comparison ([`super::analyze::comparison_table`]) as a DataFrame.
pub fn comparison_frame(rows: &[ComparisonRow]) -> Result<DataFrame> {
    df!(
        "statistic" => rows.iter().map(|r| r.statistic.clone()).collect::<Vec<_>>(),
        "faithful" => rows.iter().map(|r| r.faithful).collect::<Vec<_>>(),
        "corrected" => rows.iter().map(|r| r.corrected).collect::<Vec<_>>(),
    )
    .while_doing("the comparison table")
}

#[cfg(test)]
mod tests {
    use super::significance;

    #[test]
    fn verdicts_follow_the_seed_readme() {
        // README: r=0.367 p=0.004 Significant; r=0.211 p=0.105 Trend; r=0.013 p=0.919 No correlation.
        assert_eq!(significance(0.004), "Significant");
        assert_eq!(significance(0.105), "Trend");
        assert_eq!(significance(0.919), "No correlation");
    }
}
