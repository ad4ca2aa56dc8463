//! The seed's experiment folder (CODI README, "File Structure"), under which every step writes.

use std::path::PathBuf;

/// The seed's experiment folder: `<root>/results/` and `<root>/figures/`, files tagged `_test` in
/// test mode and `_100` (the problem count) otherwise: `results/test_dataset_10.json` |
/// `results/full_dataset_100.json`, `results/token_ablation_results_<tag>.json`,
/// `results/attention_weights_<tag>.json`, `results/summary_statistics.json`,
/// `figures/1_importance_by_position.{pdf,png}` … The next steps write
/// `results/<name>_<tag>.json` and `figures/<name>.*` in the same folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayout {
    pub root: PathBuf,
    pub tag: String,
}

/// [`StepLayout`] under the name the seed's pipeline uses.
pub type ExperimentLayout = StepLayout;

impl StepLayout {
    /// `tag` = `test` in test mode, else the number of problems (the seed's `_test` / `_100`).
    pub fn new(root: impl Into<PathBuf>, test_mode: bool, problems: usize) -> Self {
        let tag = if test_mode { "test".to_owned() } else { problems.to_string() };
        StepLayout { root: root.into(), tag }
    }
    /// The seed's names for its two runs: `_test` (10 problems) or `_100`.
    pub fn seed(root: impl Into<PathBuf>, test_mode: bool) -> Self {
        Self::new(root, test_mode, 100)
    }
    pub fn test_mode(&self) -> bool {
        self.tag == "test"
    }
    pub fn results_dir(&self) -> PathBuf {
        self.root.join("results")
    }
    pub fn figures_dir(&self) -> PathBuf {
        self.root.join("figures")
    }
    /// `results/<stem>_<tag>.<ext>`.
    pub fn result(&self, stem: &str, ext: &str) -> PathBuf {
        self.results_dir().join(format!("{stem}_{}.{ext}", self.tag))
    }
    /// `results/test_dataset_10.json` (test mode) or `results/full_dataset_<n>.json`.
    pub fn dataset(&self) -> PathBuf {
        let name = if self.test_mode() { "test_dataset_10.json".to_owned() } else { format!("full_dataset_{}.json", self.tag) };
        self.results_dir().join(name)
    }
    /// `results/token_ablation_results_<tag>.json`.
    pub fn ablation(&self) -> PathBuf {
        self.result("token_ablation_results", "json")
    }
    /// `results/attention_weights_<tag>.json`.
    pub fn attention(&self) -> PathBuf {
        self.result("attention_weights", "json")
    }
    /// `results/summary_statistics.json` (untagged, as the seed).
    pub fn summary(&self) -> PathBuf {
        self.results_dir().join("summary_statistics.json")
    }
    /// `results/joined_rows_<tag>.csv`: the rows behind the statistics (not in the seed).
    pub fn joined_rows(&self) -> PathBuf {
        self.result("joined_rows", "csv")
    }
}

/// A problem id as a file-name part (per-problem tables and figures).
pub(crate) fn file_part(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
