//! Readers of the thought-anchors website's files that the explorer shows (the writer, `website`,
//! and the page builder, `build`, both use them).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::attention::suppression::{StepImportance, TargetImpact};
use crate::io::read_json;
use crate::{Error, Result};

/// The website's `chunks_resampled.json`: `{"<k>": ["text", ...]}`.
pub(crate) fn read_chunks_resampled(path: &Path) -> Result<BTreeMap<usize, Vec<String>>> {
    let value: Value = read_json(path)?;
    let object = value.as_object().ok_or_else(|| Error::format(path, "expected an object of chunk index → resampled texts"))?;
    let mut out = BTreeMap::new();
    for (key, texts) in object {
        let k: usize = key.parse().map_err(|_| Error::format(path, format!("key `{key}` should be a chunk index")))?;
        let texts = texts
            .as_array()
            .and_then(|items| items.iter().map(|t| t.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| Error::format(path, format!("`{key}` should be an array of strings")))?;
        out.insert(k, texts);
    }
    Ok(out)
}

/// The website's `step_importance.json` / `step_importance_supp.json`: `[{source_chunk_idx,
/// source_chunk_text, target_impacts: [{target_chunk_idx, importance_score}]}]` (the text may be
/// absent). An error names the file, the record and the field.
pub fn read_step_importance(path: &Path) -> Result<Vec<StepImportance>> {
    let value: Value = read_json(path)?;
    let records = value.as_array().ok_or_else(|| Error::format(path, "expected an array of source records"))?;
    let index = |v: Option<&Value>, what: &str, at: &str| -> Result<usize> {
        v.and_then(Value::as_u64)
            .map(|i| i as usize)
            .ok_or_else(|| Error::format(path, format!("{at}: `{what}` should be a non-negative integer")))
    };
    records
        .iter()
        .enumerate()
        .map(|(r, record)| {
            let at = format!("record {r}");
            let source_chunk_idx = index(record.get("source_chunk_idx"), "source_chunk_idx", &at)?;
            let source_chunk_text = match record.get("source_chunk_text") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(_) => return Err(Error::format(path, format!("{at}: `source_chunk_text` should be a string"))),
            };
            let impacts = record
                .get("target_impacts")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::format(path, format!("{at}: `target_impacts` should be an array")))?;
            let target_impacts = impacts
                .iter()
                .enumerate()
                .map(|(t, impact)| {
                    let at = format!("record {r}, target_impacts[{t}]");
                    Ok(TargetImpact {
                        target_chunk_idx: index(impact.get("target_chunk_idx"), "target_chunk_idx", &at)?,
                        importance_score: impact
                            .get("importance_score")
                            .and_then(Value::as_f64)
                            .ok_or_else(|| Error::format(path, format!("{at}: `importance_score` should be a number")))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(StepImportance { source_chunk_idx, source_chunk_text, target_impacts })
        })
        .collect()
}
