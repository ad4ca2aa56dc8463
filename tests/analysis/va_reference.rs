//! `thoughtscope va` against `scripts/va_reference.py`, a numpy/pandas re-statement of the VA
//! seed notebook's cells run on the same cached matrices: the per-head table, the best heads,
//! the scores, the summary and `meta.json` agree to 1e-12 (strings exactly).
//!
//! Cases: the sample rollouts (whatever they contain); three real R1-Distill traces in chunks
//! and full-cot modes, tag `self_checking`, trim on and off; a synthetic thought-anchors cache
//! (no manifest, no model needed) with an exact tie, a NaN-mixing group (`first()` skipping NaN
//! per column), NaN matrices and a rollout without tags — read, never replaced.
//!
//! pandas' default sort is not stable (and CPU-dependent on ties); the reference reports both its
//! default and `kind='stable'` selections: ours equals the stable one everywhere and the default
//! one wherever no tie decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use thoughtscope::attention::Sentences;
use thoughtscope::io::npy;

use crate::support;

const TOL: f64 = 1e-12;

fn python() -> Option<PathBuf> {
    let python = support::repo().join(".venv/bin/python");
    if python.exists() {
        Some(python)
    } else {
        support::skip(".venv/bin/python absent: run `bash scripts/python-env.sh analysis`");
        None
    }
}

fn thoughtscope(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_thoughtscope")).args(args).output().expect("run thoughtscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "thoughtscope {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CSV as polars writes it (fields with commas quoted, `""` for a quote).
struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

fn read_csv(path: &Path) -> Csv {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = parse_csv_line(lines.next().expect("header"));
    let rows = lines.map(parse_csv_line).collect();
    Csv { header, rows }
}

impl Csv {
    fn get(&self, row: usize, name: &str) -> &str {
        let k = self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {:?}", self.header));
        &self.rows[row][k]
    }
    fn float(&self, row: usize, name: &str) -> f64 {
        let s = self.get(row, name);
        if s.is_empty() { f64::NAN } else { s.parse().unwrap_or_else(|_| panic!("{name}: {s:?} is not a number")) }
    }
}

fn json_float(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOL
}

const SEED_HEAD_COLUMNS: [&str; 14] = [
    "rollout_id", "layer", "head", "n_sentences", "n_va", "va_rate", "delta_va_vert", "mean_va_vert", "mean_nonva_vert",
    "lift_in_va", "mean_in_va", "mean_in_nonva", "mean_out_va", "mean_va_to_va",
];
const SEED_SUMMARY_COLUMNS: [&str; 9] = [
    "rollout_id", "n_sentences", "n_va", "va_rate", "distinctiveness_score", "layers", "heads", "delta_va_vert_by_layer",
    "lift_in_va_by_layer",
];
const STRING_COLUMNS: [&str; 5] = ["rollout_id", "layers", "heads", "delta_va_vert_by_layer", "lift_in_va_by_layer"];

/// Row `row` of `csv` equals the reference record in `columns` (strings exactly, numbers to 1e-12).
fn row_matches(csv: &Csv, row: usize, reference: &Value, columns: &[&str]) -> Result<(), String> {
    for &column in columns {
        let expected = &reference[column];
        let ok = if STRING_COLUMNS.contains(&column) {
            csv.get(row, column) == expected.as_str().unwrap_or_default()
        } else {
            same(csv.float(row, column), json_float(expected))
        };
        if !ok {
            return Err(format!("{column}: ours {:?}, reference {expected}", csv.get(row, column)));
        }
    }
    Ok(())
}

/// One `thoughtscope va` run and its reference.
struct Case {
    root: PathBuf,
    cache: PathBuf,
    out: PathBuf,
    tag: &'static str,
    mode: &'static str,
    trim: bool,
    prefix: &'static str,
}

impl Case {
    fn run(&self, python: &Path, extra: &[&str]) -> Value {
        let mut args: Vec<String> = [
            "va", "--root", self.root.to_str().unwrap(), "--prefix", self.prefix, "--cache-dir", self.cache.to_str().unwrap(),
            "--out", self.out.to_str().unwrap(), "--tag", self.tag, "--mode", self.mode, "--permutations", "50", "--no-figures",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !self.trim {
            args.push("--no-trim".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let stdout = thoughtscope(&args);
        eprintln!("{stdout}");
        let reference_path = self.out.join("reference.json");
        let mut command = Command::new(python);
        command.arg(support::repo().join("scripts/va_reference.py")).args([
            "--root", self.root.to_str().unwrap(), "--prefix", self.prefix, "--cache-dir", self.cache.to_str().unwrap(),
            "--model", "smollm2-135m", "--n-layers", "30", "--n-heads", "9", "--tag", self.tag, "--mode", self.mode,
            "--out", reference_path.to_str().unwrap(),
        ]);
        if !self.trim {
            command.arg("--no-trim");
        }
        let out = command.output().expect("run the Python reference");
        assert!(out.status.success(), "va_reference.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let reference: Value = serde_json::from_str(&std::fs::read_to_string(&reference_path).unwrap()).unwrap();
        compare(&self.out, &reference);
        reference
    }
}

/// Everything `thoughtscope va` wrote in `out` against the reference (see the module doc).
fn compare(out: &Path, reference: &Value) {
    let tied: Vec<(String, u64)> = reference["ties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["rollout_id"].as_str().unwrap().to_string(), t["layer"].as_u64().unwrap()))
        .collect();
    let tied_rollouts: Vec<&str> = tied.iter().map(|t| t.0.as_str()).collect();

    // The per-head table: same rows, same order, the seed's columns first.
    let heads = read_csv(&out.join("heads.csv"));
    assert_eq!(heads.header[..14], SEED_HEAD_COLUMNS.map(String::from));
    let rows = reference["rows"].as_array().unwrap();
    assert_eq!(heads.rows.len(), rows.len(), "per-head rows");
    for (k, expected) in rows.iter().enumerate() {
        row_matches(&heads, k, expected, &SEED_HEAD_COLUMNS).unwrap_or_else(|e| panic!("heads.csv row {k}: {e}"));
    }

    // Best head per layer: the stable selection exactly, the default one where no tie decides.
    let best = read_csv(&out.join("best_heads.csv"));
    let mut best_columns = SEED_HEAD_COLUMNS.to_vec();
    best_columns.push("abs_delta_va_vert");
    assert_eq!(best.header[..15], best_columns.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]);
    for variant in ["stable", "default"] {
        let expected = reference[variant]["best_per_layer"].as_array().unwrap();
        assert_eq!(best.rows.len(), expected.len());
        for (k, e) in expected.iter().enumerate() {
            let key = (e["rollout_id"].as_str().unwrap().to_string(), e["layer"].as_u64().unwrap());
            if variant == "default" && tied.contains(&key) {
                let ours: u64 = best.get(k, "head").parse().unwrap();
                let tie = reference["ties"].as_array().unwrap().iter().find(|t| t["rollout_id"] == e["rollout_id"] && t["layer"] == e["layer"]).unwrap();
                assert!(tie["heads"].as_array().unwrap().iter().any(|h| h.as_u64() == Some(ours)), "{key:?}: head {ours} not among the tied heads");
                continue;
            }
            row_matches(&best, k, e, &best_columns).unwrap_or_else(|err| panic!("best_heads.csv row {k} vs {variant}: {err}"));
        }
    }

    // Scores (`agg`, ranked) and the summary: the stable order exactly; the default one as a
    // set, rollouts with a tie compared only through their score.
    let scores = read_csv(&out.join("scores.csv"));
    let summary = read_csv(&out.join("summary.csv"));
    assert_eq!(summary.header[..9], SEED_SUMMARY_COLUMNS.map(String::from));
    for variant in ["stable", "default"] {
        let agg = reference[variant]["agg"].as_array().unwrap();
        let expected = reference[variant]["summary"].as_array().unwrap();
        assert_eq!(scores.rows.len(), agg.len());
        assert!(summary.rows.len() >= expected.len());
        for (k, e) in agg.iter().enumerate() {
            let row = if variant == "stable" { k } else { (0..scores.rows.len()).find(|&r| scores.get(r, "rollout_id") == e["rollout_id"]).unwrap() };
            row_matches(&scores, row, e, &["rollout_id", "distinctiveness_score", "n_va", "n_sentences", "va_rate"])
                .unwrap_or_else(|err| panic!("scores.csv row {row} vs {variant}: {err}"));
        }
        for (k, e) in expected.iter().enumerate() {
            let id = e["rollout_id"].as_str().unwrap();
            let row = if variant == "stable" { k } else { (0..summary.rows.len()).find(|&r| summary.get(r, "rollout_id") == id).unwrap() };
            let columns: &[&str] = if variant == "default" && tied_rollouts.contains(&id) {
                &["rollout_id", "n_sentences", "n_va", "va_rate", "distinctiveness_score", "layers"]
            } else {
                &SEED_SUMMARY_COLUMNS
            };
            row_matches(&summary, row, e, columns).unwrap_or_else(|err| panic!("summary.csv row {row} vs {variant}: {err}"));
        }
        // Sorted by score, descending, in both.
        let ours: Vec<f64> = (0..expected.len()).map(|r| summary.float(r, "distinctiveness_score")).collect();
        assert!(ours.windows(2).all(|w| w[0] >= w[1]), "summary sorted by score: {ours:?}");
    }

    // The chosen rollout and meta.json.
    let chosen: Value = serde_json::from_str(&std::fs::read_to_string(out.join("chosen_rollout.json")).unwrap()).unwrap();
    assert_eq!(chosen["chosen_rollout"], reference["stable"]["best_rollout_id"]);
    let agg = reference["default"]["agg"].as_array().unwrap();
    if agg.len() < 2 || json_float(&agg[0]["distinctiveness_score"]) != json_float(&agg[1]["distinctiveness_score"]) {
        assert_eq!(chosen["chosen_rollout"], reference["default"]["best_rollout_id"]);
    }
    for (id, expected) in reference["stable"]["meta"].as_object().unwrap() {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(out.join(id).join("meta.json")).unwrap()).unwrap();
        for key in ["rollout_id", "n_sentences", "n_va", "va_idxs", "layers", "heads"] {
            assert_eq!(meta[key], expected[key], "{id}/meta.json `{key}`");
        }
    }
}

fn sample_root() -> PathBuf {
    support::repo().join("rollouts/apple_boxes")
}

#[test]
fn va_matches_the_seed_reference_on_the_sample_rollouts() {
    let Some(python) = python() else { return };
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let case = Case {
        root: sample_root(),
        cache: tmp.path().join("cache"),
        out: tmp.path().join("out"),
        tag: "verbalized_evaluation_awareness",
        mode: "chunks",
        trim: true,
        prefix: "rollout_",
    };
    let reference = case.run(&python, &[]);
    assert_eq!(reference["layers"], serde_json::json!([2, 14, 26]), "SmolLM2's representative layers");
}

/// Three short real traces, with a `chunks.json` made from their labels' chunk texts (the
/// published dataset's chunks), under `<tmp>/traces/trace_*`.
fn trace_root(tmp: &Path) -> Option<PathBuf> {
    let traces = support::shared_data("thought-anchors-traces")?;
    let root = tmp.join("traces");
    for (name, rel) in [
        ("trace_a", "deepseek-r1-distill-llama-8b/correct_base_solution/problem_6998"),
        ("trace_b", "deepseek-r1-distill-qwen-14b/incorrect_base_solution/problem_2189"),
        ("trace_c", "deepseek-r1-distill-llama-8b/incorrect_base_solution/problem_2189"),
    ] {
        let dst = root.join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for file in ["base_solution.json", "chunks_labeled.json"] {
            std::fs::copy(traces.join(rel).join(file), dst.join(file)).unwrap();
        }
        let labels: Value = serde_json::from_str(&std::fs::read_to_string(dst.join("chunks_labeled.json")).unwrap()).unwrap();
        let chunks: Vec<&Value> = labels.as_array().unwrap().iter().map(|l| &l["chunk"]).collect();
        std::fs::write(dst.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    }
    Some(root)
}

#[test]
fn va_matches_the_seed_reference_on_real_traces_in_both_modes_with_and_without_trim() {
    let Some(python) = python() else { return };
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(root) = trace_root(tmp.path()) else { return };
    for mode in ["chunks", "full-cot"] {
        for trim in [true, false] {
            let case = Case {
                root: root.clone(),
                cache: tmp.path().join("cache"),
                out: tmp.path().join(format!("out-{mode}-{trim}")),
                tag: "self_checking",
                mode,
                trim,
                prefix: "trace_",
            };
            let reference = case.run(&python, &[]);
            let summary = reference["stable"]["summary"].as_array().unwrap();
            assert!(
                summary.iter().any(|s| json_float(&s["distinctiveness_score"]) > 0.0),
                "{mode}, trim {trim}: some trace carries the tag"
            );
        }
    }
}

/// A deterministic attention-like matrix: positive on and below the diagonal, 0 above.
fn synthetic_matrix(n: usize, salt: u64) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    let mut state = salt.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    for i in 0..n {
        for j in 0..=i {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            m[i * n + j] = ((state >> 40) % 1000 + 1) as f32 / 10_000.0;
        }
    }
    m
}

/// Tagged columns receive 0.5, others `other` (lower triangle).
fn separating_matrix(n: usize, tagged: &[usize], other: f32) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..=i {
            m[i * n + j] = if tagged.contains(&j) { 0.5 } else { other };
        }
    }
    m
}

struct Synthetic {
    root: PathBuf,
    cache: PathBuf,
    /// Every file of the thought-anchors cache with its length and modification time.
    files: BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
}

/// Three rollouts (chunks.json + chunks_labeled.json only, as the seed needs) and a
/// thought-anchors cache of their matrices for a 30 × 9 model, with: at layer 14 of `syn_a` two
/// identical heads that separate the tagged sentences best (an exact tie); at layer 26 of `syn_a`
/// a best head whose untagged block is all 0 (lift NaN: `first()` takes the next row's); at layer
/// 2 of `syn_b` a head that is all NaN and one with scattered NaN; `syn_c` has no tag.
fn synthetic(tmp: &Path) -> Synthetic {
    let root = tmp.join("synthetic");
    let cache = tmp.join("ta_cache");
    let specs: [(&str, usize, Vec<usize>); 3] = [("syn_a", 14, vec![3, 7]), ("syn_b", 12, vec![5]), ("syn_c", 9, vec![])];
    for (name, n, tagged) in &specs {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let chunks: Vec<String> = (0..*n).map(|k| format!("Sentence number {k} of {name}, long enough.")).collect();
        let labels: Vec<Value> = chunks
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let tags = if tagged.contains(&k) { vec!["verbalized_evaluation_awareness"] } else { vec!["active_computation"] };
                serde_json::json!({"chunk": c, "chunk_idx": k, "function_tags": tags})
            })
            .collect();
        std::fs::write(dir.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
        std::fs::write(dir.join("chunks_labeled.json"), Value::Array(labels).to_string()).unwrap();
        let text_id = Sentences::from_chunks(&chunks).text_id();
        let entry = cache.join("smollm2-135m").join(&text_id);
        std::fs::create_dir_all(&entry).unwrap();
        for l in 0..30 {
            for h in 0..9 {
                let mut m = synthetic_matrix(*n, (l * 9 + h) as u64 + 1000 * *n as u64);
                if *name == "syn_a" && l == 14 && (h == 1 || h == 3) {
                    m = separating_matrix(*n, tagged, 0.01);
                }
                if *name == "syn_a" && l == 26 && h == 5 {
                    m = separating_matrix(*n, tagged, 0.0);
                }
                if *name == "syn_b" && l == 2 && h == 0 {
                    m = vec![f32::NAN; n * n];
                }
                if *name == "syn_b" && l == 2 && h == 2 {
                    for k in (0..n * n).step_by(7) {
                        m[k] = f32::NAN;
                    }
                }
                npy::write_f32(&entry.join(format!("{l}_{h}.npy")), &[*n, *n], &m).unwrap();
            }
        }
    }
    let files = cache_files(&cache);
    Synthetic { root, cache, files }
}

fn cache_files(cache: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    for model_dir in std::fs::read_dir(cache.join("smollm2-135m")).unwrap() {
        for file in std::fs::read_dir(model_dir.unwrap().path()).unwrap() {
            let file = file.unwrap();
            let meta = file.metadata().unwrap();
            files.insert(file.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    files
}

#[test]
fn va_reads_a_thought_anchors_cache_as_the_seed_does_without_replacing_it() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let syn = synthetic(tmp.path());
    let out = tmp.path().join("out");
    let case = Case { root: syn.root.clone(), cache: syn.cache.clone(), out: out.clone(), tag: "verbalized_evaluation_awareness", mode: "chunks", trim: true, prefix: "syn_" };
    let reference = case.run(&python, &[]);

    // The situations the cache was built for did occur.
    assert_eq!(reference["ties"], serde_json::json!([{"rollout_id": "syn_a", "layer": 14, "heads": [1, 3]}]));
    let best = read_csv(&out.join("best_heads.csv"));
    let row = |id: &str, layer: &str| (0..best.rows.len()).find(|&r| best.get(r, "rollout_id") == id && best.get(r, "layer") == layer).unwrap();
    let tie = row("syn_a", "14");
    assert_eq!((best.get(tie, "head"), best.get(tie, "tied_heads")), ("1", "3"), "the first scanned of the tied heads");
    let mixed = row("syn_a", "26");
    assert_eq!(best.get(mixed, "head"), "5");
    assert_eq!(best.get(mixed, "mixed_rows"), "true", "lift_in_va came from another row");
    assert!(best.float(mixed, "lift_in_va").is_finite());
    let no_tag = row("syn_c", "2");
    assert_eq!(best.get(no_tag, "head"), "0");
    assert!(best.float(no_tag, "delta_va_vert").is_nan());

    // Read as it is: no forward pass, no model, files untouched, provenance said once.
    let chosen: Value = serde_json::from_str(&std::fs::read_to_string(out.join("chosen_rollout.json")).unwrap()).unwrap();
    assert_eq!((chosen["forward_passes"].as_u64(), chosen["model_loaded"].as_bool()), (Some(0), Some(false)));
    assert_eq!(chosen["notes"].as_array().unwrap().iter().filter(|n| n.as_str().unwrap().contains("unverified")).count(), 1);
    assert_eq!(cache_files(&syn.cache), syn.files, "the thought-anchors cache is unchanged");
    let summary = read_csv(&out.join("summary.csv"));
    assert!((0..summary.rows.len()).all(|r| summary.get(r, "cache") == "thought-anchors (unverified)"));
    let syn_c = (0..summary.rows.len()).find(|&r| summary.get(r, "rollout_id") == "syn_c").unwrap();
    assert_eq!(summary.float(syn_c, "distinctiveness_score"), 0.0, "NaN deltas sum to 0, as pandas sums");
    assert_eq!(summary.get(syn_c, "delta_va_vert_by_layer"), "nan,nan,nan");
}

#[test]
fn va_figures_are_the_seeds_and_index_html_links_them() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let syn = synthetic(tmp.path());
    let out = tmp.path().join("out");
    let reference = Case { root: syn.root.clone(), cache: syn.cache.clone(), out: out.clone(), tag: "verbalized_evaluation_awareness", mode: "chunks", trim: true, prefix: "syn_" }
        .run(&python, &[]);

    // The library's plotting step on syn_a's best head at layer 2.
    use thoughtscope::analysis::va::{load_chunks_and_tag_mask, VaOptions};
    use thoughtscope::analysis::va_report::{head_figures, heatmap_title, vertical_title};
    use thoughtscope::attention::{AttentionSource, BoundaryMode, SentenceMode};
    let rollout = load_chunks_and_tag_mask(syn.root.join("syn_a"), "verbalized_evaluation_awareness", SentenceMode::Chunks).unwrap();
    let mut source = AttentionSource::new("smollm2-135m", &syn.cache, BoundaryMode::Prefix);
    let best = reference["stable"]["best_per_layer"].as_array().unwrap().iter().find(|b| b["rollout_id"] == "syn_a" && b["layer"] == 2).unwrap().clone();
    let head = best["head"].as_u64().unwrap() as usize;
    let (heat, vert, row) = head_figures(&mut source, &rollout, 2, head, &VaOptions::default()).unwrap();
    assert!(!source.model_loaded());
    assert_eq!(heat.title, heatmap_title("syn_a", 2, head, row.stats.delta_va_vert, row.stats.lift_in_va));
    assert!(heat.title.starts_with(&format!("syn_a | layer=2 head={head} | delta_va_vert=")));
    assert_eq!(vert.title, vertical_title("syn_a", 2, head));

    let heat_json = heat.to_json_value();
    let trace = &heat_json["data"][0];
    let z = trace["z"].as_array().unwrap();
    assert_eq!(z.len(), 12, "the trimmed 14 → 12 matrix is drawn");
    let trimmed: Vec<f32> = z.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
    assert_eq!(trace["zmin"].as_f64(), Some(0.0));
    assert_eq!(trace["zmax"].as_f64(), Some(thoughtscope::plot::tril_quantile(&trimmed, 12, 0.99).unwrap()));
    assert_eq!(trace["colorscale"][0][1], "#f7fbff", "matplotlib Blues");
    let shapes = heat_json["layout"]["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 4, "2 tagged sentences × (row band + column band)");
    assert!(shapes.iter().all(|s| s["opacity"] == 0.18 && s["fillcolor"] == "red"));
    assert_eq!(shapes[0]["y0"].as_f64(), Some(1.5), "sentence 3 is trimmed index 2");

    // The vertical-score plot shows the scores behind delta (the reference's).
    let vert_json = vert.to_json_value();
    let expected = reference["vert_scores"][format!("syn_a/2/{head}")].as_array().unwrap();
    let line = vert_json["data"][0]["y"].as_array().unwrap();
    assert_eq!(line.len(), expected.len());
    for (a, b) in line.iter().zip(expected) {
        assert!(same(json_float(a), json_float(b)), "{a} vs {b}");
    }
    assert_eq!(vert_json["data"][2]["name"], "VA");
    assert_eq!(vert_json["data"][2]["x"], serde_json::json!([2.0, 6.0]));

    // The CLI writes them under the seed's names, and index.html links every one.
    thoughtscope(&[
        "va", "--root", syn.root.to_str().unwrap(), "--prefix", "syn_", "--cache-dir", syn.cache.to_str().unwrap(), "--out",
        out.to_str().unwrap(), "--permutations", "20", "--html-only",
    ].map(String::from));
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    for b in reference["stable"]["best_per_layer"].as_array().unwrap() {
        let (id, layer, head) = (b["rollout_id"].as_str().unwrap(), b["layer"].as_u64().unwrap(), b["head"].as_u64().unwrap());
        for stem in [format!("attn_layer{layer:02}_head{head:02}"), format!("vert_layer{layer:02}_head{head:02}")] {
            let file = format!("{id}/{stem}.html");
            assert!(out.join(&file).exists(), "{file}");
            assert!(index.contains(&format!("href=\"{file}\"")), "index.html links {file}");
        }
    }
    assert_eq!(index.matches("class=\"plotly-graph-div").count(), 6, "the chosen rollout's 3 heatmaps + 3 score plots");
    assert_eq!(index.matches("<script").count() - 6, 2, "plotly.js embedded once (beside the PlotlyConfig line)");
    assert!(index.contains("summary.csv") && index.contains("unverified"));
}

#[test]
fn va_dry_run_counts_tags_without_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let syn = synthetic(tmp.path());
    let out = tmp.path().join("out");
    let stdout = thoughtscope(&[
        "va", "--root", syn.root.to_str().unwrap(), "--prefix", "syn_", "--model", "no-such-model", "--out",
        out.to_str().unwrap(), "--dry-run",
    ].map(String::from));
    assert!(stdout.contains("dry run"), "{stdout}");
    let counts = read_csv(&out.join("va_counts.csv"));
    assert_eq!(counts.header[..4], ["rollout_id", "n_sentences", "n_va", "va_rate"].map(String::from));
    let ids: Vec<&str> = (0..3).map(|r| counts.get(r, "rollout_id")).collect();
    assert_eq!(ids, ["syn_a", "syn_b", "syn_c"], "by n_va, then n_sentences, descending");
    assert_eq!((counts.get(0, "n_sentences"), counts.get(0, "n_va")), ("14", "2"), "untrimmed counts");
    assert!(!out.join("summary.csv").exists());
}

#[test]
fn a_cache_entry_without_manifest_is_never_replaced() {
    use thoughtscope::attention::{AttnCache, BoundaryMode, CacheKey, CacheLayout, SentenceAttention, SentenceMode};
    let tmp = tempfile::tempdir().unwrap();
    let cache = AttnCache::new(tmp.path());
    let entry = cache.entry_dir("m", "abc");
    std::fs::create_dir_all(&entry).unwrap();
    npy::write_f32(&entry.join("0_0.npy"), &[2, 2], &[1.0, 0.0, 0.5, 0.5]).unwrap();
    let key = CacheKey {
        model: "m".into(),
        weights_hash: "w".into(),
        dtype: "f32".into(),
        tokenizer: "t".into(),
        sentence_mode: SentenceMode::Chunks,
        boundary_mode: BoundaryMode::Prefix,
        text_id: "abc".into(),
        n: 2,
        layers: 1,
        heads: 1,
    };
    let err = cache.store(&key, &SentenceAttention::zeros(1, 1, 2), CacheLayout::Native, None).unwrap_err().to_string();
    assert!(err.contains("no manifest.json") && err.contains("abc"), "{err}");
    assert_eq!(npy::read(&entry.join("0_0.npy")).unwrap().to_f32(), [1.0, 0.0, 0.5, 0.5]);
    assert_eq!(cache.upstream_entry("m", "abc"), Some(entry));
}

#[test]
fn attn_reads_a_thought_anchors_entry_without_replacing_it() {
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let syn = synthetic(tmp.path());
    let dir = syn.root.join("syn_b");
    std::fs::write(dir.join("base_solution.json"), serde_json::json!({"full_cot": "unused in chunks mode"}).to_string()).unwrap();
    let stdout = thoughtscope(&[
        "attn", dir.to_str().unwrap(), "--mode", "chunks", "--cache-dir", syn.cache.to_str().unwrap(), "--json",
    ].map(String::from));
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["cache"], "thought-anchors (unverified)", "{stdout}");
    assert_eq!(summary["n"], 12);
    assert_eq!(cache_files(&syn.cache), syn.files, "the thought-anchors cache is unchanged");
}
