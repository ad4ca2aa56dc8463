//! A thought-anchors (Python-made) cache entry: NaN is read as upstream reads it (partial NaN for a
//! sentence without tokens, and a head NaN everywhere, which the seed's VA statistics turn into NaN
//! deltas and a rollout status saying so, never a score of 0 with status `ok`), while an infinity,
//! which no attention average can be, is an error naming the file.

use thoughtscope::attention::{read_upstream_dir, read_upstream_head};
use thoughtscope::io::npy;

#[test]
fn a_python_cache_head_is_read_with_its_nan_and_an_infinity_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3;
    let mut partial = vec![0.25f32; n * n];
    partial[4] = f32::NAN;
    npy::write_f32(&dir.path().join("0_0.npy"), &[n, n], &partial).unwrap();
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &vec![f32::NAN; n * n]).unwrap();
    assert!(read_upstream_head(dir.path(), 0, 0, n).unwrap()[4].is_nan(), "partial NaN is read as it is");
    assert!(read_upstream_head(dir.path(), 0, 1, n).unwrap().iter().all(|v| v.is_nan()), "an all-NaN head is read as it is");
    assert!(read_upstream_dir(dir.path()).is_ok());
    npy::write_f32(&dir.path().join("0_1.npy"), &[n, n], &[0.5, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let err = read_upstream_head(dir.path(), 0, 1, n).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("inf"), "{err}");
    let err = read_upstream_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("0_1.npy") && err.contains("inf"), "{err}");
}

/// A rollout whose cached heads are all NaN: every best head's delta is NaN and the seed's sum
/// makes its score 0. Before, its status said `ok`; now it says the score measures nothing.
#[test]
fn a_rollout_whose_best_heads_are_all_nan_says_so_in_its_status() {
    use thoughtscope::analysis::{run_va, VaConfig};
    use thoughtscope::attention::Sentences;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rollouts");
    let dir = root.join("rollout_nan");
    std::fs::create_dir_all(&dir).unwrap();
    let chunks: Vec<String> = (0..8).map(|k| format!("Sentence number {k}, long enough to count.")).collect();
    let labels: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let tag = if k == 3 { "verbalized_evaluation_awareness" } else { "active_computation" };
            serde_json::json!({"chunk": c, "chunk_idx": k, "function_tags": [tag]})
        })
        .collect();
    std::fs::write(dir.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    std::fs::write(dir.join("chunks_labeled.json"), serde_json::Value::Array(labels).to_string()).unwrap();
    // A thought-anchors cache entry of SmolLM2's 30 × 9 heads, every matrix NaN.
    let n = chunks.len();
    let entry = tmp.path().join("cache/smollm2-135m").join(Sentences::from_chunks(&chunks).text_id());
    std::fs::create_dir_all(&entry).unwrap();
    for l in 0..30 {
        for h in 0..9 {
            npy::write_f32(&entry.join(format!("{l}_{h}.npy")), &[n, n], &vec![f32::NAN; n * n]).unwrap();
        }
    }
    let config = VaConfig {
        root,
        cache_dir: tmp.path().join("cache"),
        out: Some(tmp.path().join("out")),
        permutations: 10,
        figures: false,
        ..Default::default()
    };
    let result = run_va(&config).unwrap();
    let row = result.summary.iter().find(|s| s.rollout_id == "rollout_nan").unwrap();
    assert_eq!(row.distinctiveness_score, 0.0, "the seed's sum of NaN deltas");
    assert!(row.status.contains("NaN") && row.status.contains("measures nothing"), "status: {}", row.status);
}
