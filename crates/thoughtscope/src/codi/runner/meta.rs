//! The settings sidecar that makes resumed and merged runs safe: every results file `x.json` has
//! `x.meta.json` beside it naming the step, the model, its weights hash and the step's settings;
//! a rerun or a shard merge with other settings or other weights is refused, naming the field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::read_json_relaxed;
use crate::codi::latent::codi_model::CodiModel;
use crate::{Error, Result};

/// Version of the output layout; bump when a record's meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// What determined an output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub step: String,
    pub model: String,
    pub weights_hash: String,
    pub real_codi: bool,
    pub format_version: u32,
    pub settings: serde_json::Value,
    /// "NOT A CODI MODEL …" for synthetic checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunMeta {
    pub fn new(codi: &CodiModel, step: &str, settings: serde_json::Value) -> Self {
        RunMeta {
            step: step.to_owned(),
            model: codi.name.clone(),
            weights_hash: codi.weights_hash.clone(),
            real_codi: codi.meta.real_codi,
            format_version: FORMAT_VERSION,
            settings,
            note: codi.provenance_note(),
        }
    }

    /// Before (re)starting a step writing `output`: if `output` exists, its sidecar must hold the
    /// same settings (else a [`Error::CacheMismatch`] naming the field); otherwise write the sidecar.
    pub fn check_or_write(&self, meta_path: &Path, output: &Path) -> Result<()> {
        if output.exists() {
            if !meta_path.is_file() {
                return Err(Error::format(
                    output,
                    format!(
                        "exists but has no settings file {}; remove it or choose another output to start afresh",
                        meta_path.display()
                    ),
                ));
            }
            let cached: RunMeta = read_json_relaxed(meta_path)?;
            let have = serde_json::to_value(&cached)?;
            let want = serde_json::to_value(self)?;
            if let Some((field, c, r)) = first_difference("", &have, &want) {
                return Err(Error::CacheMismatch { path: output.to_path_buf(), field, cached: c, requested: r });
            }
            return Ok(());
        }
        crate::io::write_json(meta_path, self)
    }
}

/// Take the results file `out` of `step` for this run ([`crate::io::begin_run`] on its folder,
/// the file's name as the part): a second run writing the same file (another process, or the same
/// shard) fails at once naming this one, and `INCOMPLETE.<file>` beside it
/// ([`super::files::incomplete_marker`]) says the file is partial until
/// [`crate::io::RunLock::finish`].
pub fn lock_results(out: &Path, step: &str) -> Result<crate::io::RunLock> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", out.display())))?;
    crate::io::begin_run(dir, &format!("codi {step}"), Some(&name))
}

/// The first differing leaf of two JSON values, as (dotted path, left, right); `note` is ignored.
fn first_difference(prefix: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if prefix.is_empty() && key == "note" {
                    continue;
                }
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                let null = Value::Null;
                if let Some(d) = first_difference(&path, x.get(key).unwrap_or(&null), y.get(key).unwrap_or(&null)) {
                    return Some(d);
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some((prefix.to_owned(), a.to_string(), b.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codi::runner::files::incomplete_marker;

    #[test]
    fn the_results_lock_marks_its_file_incomplete_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("results").join("attention_weights_test.json");
        let lock = lock_results(&out, "attention").unwrap();
        let marker = incomplete_marker(&out);
        assert_eq!(marker, dir.path().join("results").join("INCOMPLETE.attention_weights_test.json"));
        assert_eq!(lock.marker(), marker);
        assert!(marker.is_file());
        lock.finish().unwrap();
        assert!(!marker.exists());
    }
}
