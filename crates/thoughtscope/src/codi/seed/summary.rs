//! Statistics of the CODI attention-vs-importance analysis (CoT_Exploration `3_analyze_and_visualize.py`): Pearson r with
//! scipy's two-sided p, pandas-style std (ddof = 1), SEM, least-squares line, and the upstream
//! `summary_statistics.json` (join, overall / per-token / per-difficulty correlations).
//!
//! Upstream quirks kept: per-token and per-difficulty statistics use the *last* attention layer
//! (layer 14) even where the upstream write-up says layer 8; difficulty keys appear in order of
//! first appearance; a constant side makes r and p NaN (written as `null`, since JSON has no NaN).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

use crate::scores::stats::{mean, nan_as_null, pearson, std_ddof1, Pearson};

/// One row of the analysis join: one (problem, latent token) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinedRow {
    pub problem_id: String,
    pub difficulty: String,
    pub token_pos: usize,
    pub importance: f64,
    /// Attention per layer, keyed by layer index.
    pub attention: BTreeMap<usize, f64>,
}

/// `summary_statistics.json`, field for field as upstream writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryStatistics {
    /// `layer_14`, `layer_8`, `layer_4` (descending, as upstream).
    pub overall_correlation: indexed::OrderedMap<Pearson>,
    /// `token_0` … `token_5`.
    pub per_token: indexed::OrderedMap<TokenStats>,
    /// Difficulty buckets in order of first appearance.
    pub by_difficulty: indexed::OrderedMap<DifficultyStats>,
    /// Input results files (names in `results/`) that a run was still writing, or was stopped
    /// in, when these statistics were made: `INCOMPLETE.<file>` lay beside them, so they may
    /// lack problems. Not in upstream's file, and absent when every input was complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete_inputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenStats {
    #[serde(with = "nan_as_null")]
    pub importance_mean: f64,
    #[serde(with = "nan_as_null")]
    pub importance_std: f64,
    #[serde(with = "nan_as_null")]
    pub attention_mean: f64,
    #[serde(with = "nan_as_null")]
    pub attention_std: f64,
    #[serde(with = "nan_as_null")]
    pub correlation: f64,
    #[serde(with = "nan_as_null")]
    pub p_value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifficultyStats {
    pub num_problems: usize,
    #[serde(with = "nan_as_null")]
    pub mean_importance: f64,
    #[serde(with = "nan_as_null")]
    pub correlation: f64,
    #[serde(with = "nan_as_null")]
    pub p_value: f64,
}

/// The statistics of upstream `3_analyze_and_visualize.py` over joined rows. `layers` are the
/// attention layers present (any order); per-token and per-difficulty use the largest one (14
/// upstream). `tokens_per_problem` is 6 upstream (`num_problems = rows // 6`).
pub fn summary_statistics(rows: &[JoinedRow], layers: &[usize], tokens_per_problem: usize) -> Result<SummaryStatistics> {
    let mut layers_desc = layers.to_vec();
    layers_desc.sort_unstable_by(|a, b| b.cmp(a));
    layers_desc.dedup();
    let primary = *layers_desc
        .first()
        .ok_or_else(|| Error::invalid("summary statistics need at least one attention layer"))?;
    let attention_at = |row: &JoinedRow, layer: usize| -> Result<f64> {
        row.attention.get(&layer).copied().ok_or_else(|| {
            Error::invalid(format!(
                "problem {} token {}: no attention value for layer {layer}",
                row.problem_id, row.token_pos
            ))
        })
    };

    let importance: Vec<f64> = rows.iter().map(|r| r.importance).collect();
    let mut overall = indexed::OrderedMap::default();
    for &layer in &layers_desc {
        let attention = rows.iter().map(|r| attention_at(r, layer)).collect::<Result<Vec<_>>>()?;
        overall.push(format!("layer_{layer}"), pearson(&attention, &importance)?);
    }

    let mut per_token = indexed::OrderedMap::default();
    for token in 0..tokens_per_problem {
        let selected: Vec<&JoinedRow> = rows.iter().filter(|r| r.token_pos == token).collect();
        let imp: Vec<f64> = selected.iter().map(|r| r.importance).collect();
        let att = selected.iter().map(|r| attention_at(r, primary)).collect::<Result<Vec<_>>>()?;
        let corr = pearson(&att, &imp)?;
        per_token.push(
            format!("token_{token}"),
            TokenStats {
                importance_mean: mean(&imp),
                importance_std: std_ddof1(&imp),
                attention_mean: mean(&att),
                attention_std: std_ddof1(&att),
                correlation: corr.r,
                p_value: corr.p,
            },
        );
    }

    let mut difficulties: Vec<&str> = Vec::new();
    for row in rows {
        if !difficulties.contains(&row.difficulty.as_str()) {
            difficulties.push(&row.difficulty);
        }
    }
    let mut by_difficulty = indexed::OrderedMap::default();
    for difficulty in difficulties {
        let selected: Vec<&JoinedRow> = rows.iter().filter(|r| r.difficulty == difficulty).collect();
        let imp: Vec<f64> = selected.iter().map(|r| r.importance).collect();
        let att = selected.iter().map(|r| attention_at(r, primary)).collect::<Result<Vec<_>>>()?;
        let corr = pearson(&att, &imp)?;
        by_difficulty.push(
            difficulty.to_owned(),
            DifficultyStats {
                num_problems: selected.len() / tokens_per_problem.max(1),
                mean_importance: mean(&imp),
                correlation: corr.r,
                p_value: corr.p,
            },
        );
    }
    Ok(SummaryStatistics { overall_correlation: overall, per_token, by_difficulty, incomplete_inputs: Vec::new() })
}

/// A JSON object that keeps insertion order (serde_json's map sorts keys without the
/// `preserve_order` feature; upstream's key order is part of the schema).
pub mod indexed {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderedMap<V>(pub Vec<(String, V)>);

    impl<V> Default for OrderedMap<V> {
        fn default() -> Self {
            OrderedMap(Vec::new())
        }
    }

    impl<V> OrderedMap<V> {
        pub fn push(&mut self, key: String, value: V) {
            self.0.push((key, value));
        }
        pub fn get(&self, key: &str) -> Option<&V> {
            self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }
        pub fn keys(&self) -> impl Iterator<Item = &str> {
            self.0.iter().map(|(k, _)| k.as_str())
        }
        pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
            self.0.iter().map(|(k, v)| (k.as_str(), v))
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl<V: Serialize> Serialize for OrderedMap<V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct OrderedVisitor<V>(std::marker::PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
                type Value = OrderedMap<V>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = access.next_entry::<String, V>()? {
                        out.push((k, v));
                    }
                    Ok(OrderedMap(out))
                }
            }
            deserializer.deserialize_map(OrderedVisitor(std::marker::PhantomData))
        }
    }
}
