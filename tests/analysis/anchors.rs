//! Receiver heads against attention suppression (`analysis::anchors`, `thoughtscope anchors`,
//! the third notebook): the pipeline on three sample rollouts cut to 14 chunks (SmolLM2), checked
//! against its own files and a second computation of each number; the real traces' discovery and
//! tag alignment.

use crate::support;

use std::path::PathBuf;

use serde_json::Value;
use thoughtscope::analysis::anchors::{
    load_traces, outgoing_importance, run_anchors, sentence_rows, tag_summary, AnchorsConfig, CorpusReceivers, Trace,
};
use thoughtscope::attention::{SentenceMode, Sentences, SuppressionMatrix, TokenBounds};
use thoughtscope::io::npy;
use thoughtscope::scores::{spearman, HeadValues, ReceiverHeads};

#[test]
fn pipeline_numbers_equal_their_files_and_a_rerun_reads_them_back() {
    if support::smollm2().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let traces = work.path().join("traces");
    for name in ["rollout_00", "rollout_04", "rollout_08"] {
        support::cut_rollout(&traces, name, 14);
    }
    let config = AnchorsConfig {
        traces: traces.clone(),
        cache_dir: work.path().join("cache"),
        out: work.path().join("out"),
        permutations: 500,
        token_heads: 2,
        token_max: 8,
        ..AnchorsConfig::default()
    };
    let result = run_anchors(&config).unwrap();
    assert_eq!(result.receivers.heads.responses.len(), 3);
    assert_eq!(result.receivers.forward_passes, 3);
    // Each filling pass stored the token view's pairs of the asked size (`--token-heads 2 --token-max 8`).
    let status = thoughtscope::attention::cache_status::cache_status(&config.cache_dir).unwrap();
    let pairs: Vec<(usize, usize)> = status.models[0].token_pairs.values().copied().collect();
    assert_eq!(pairs, vec![(2, 8); 3], "{:?}", status.lines());
    assert_eq!(result.receivers.heads.top_k_heads.len(), 20);
    assert!(result.suppression_computed);
    assert_eq!(result.suppression.n, 14);

    // Outgoing importance: the mean of each source's column below the diagonal, from the .npy.
    let matrix = npy::read(&result.suppression_files.matrix).unwrap();
    assert_eq!(matrix.shape, vec![14, 14]);
    let values = match matrix.data {
        npy::NpyData::F64(v) => v,
        npy::NpyData::F32(_) => panic!("the suppression matrix is float64"),
    };
    for s in 0..13 {
        let column: Vec<f64> = (s + 1..14).map(|t| values[t * 14 + s]).collect();
        let mean = column.iter().sum::<f64>() / column.len() as f64;
        assert!((result.outgoing[s] - mean).abs() < 1e-12, "source {s}");
    }
    assert!(result.outgoing[13].is_nan(), "the last sentence has no later target");

    // Agreement: Spearman of the two columns written to agreement.json, recomputed.
    let agreement: Value = serde_json::from_str(&std::fs::read_to_string(config.out.join("agreement.json")).unwrap()).unwrap();
    let column = |field: &str| -> Vec<f64> {
        agreement["sentences"].as_array().unwrap().iter().map(|r| r[field].as_f64().unwrap_or(f64::NAN)).collect()
    };
    let (receiver, outgoing) = (column("receiver_score"), column("outgoing_importance"));
    let again = spearman(&receiver, &outgoing, 500, 0).unwrap();
    assert_eq!(again, result.agreement);
    // p4 = 4: the last 4 sentences have no vertical score, the last no later target.
    assert_eq!(result.agreement.n, 10);
    assert!(result.agreement.rho.abs() <= 1.0 && result.agreement.p_permutation > 0.0 && result.agreement.p_permutation <= 1.0);
    assert_eq!(agreement["spearman"]["rho"].as_f64().unwrap(), result.agreement.rho);

    // Ranks and tags of the rows.
    let top_receiver = result.rows.iter().find(|r| r.receiver_rank == 1).unwrap();
    let best = receiver.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(top_receiver.receiver_score, best);
    assert!(result.rows.iter().all(|r| !r.tags.is_empty()), "every sample chunk is labelled");

    for name in ["receiver_heads.json", "sentence_scores.csv", "tag_summary.csv", "suppression_trace_sentences.csv", "index.html", "explorer.html"] {
        assert!(config.out.join(name).is_file(), "{name}");
    }
    assert!(std::fs::read_to_string(config.out.join("index.html")).unwrap().contains("href=\"explorer.html\""), "index.html links the explorer");
    use polars::prelude::{CsvReadOptions, SerReader};
    let sentence_scores = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(config.out.join("sentence_scores.csv")))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(sentence_scores.height(), 3 * 14, "a row per sentence of every trace");

    // A rerun: no forward pass, the suppression read back, the same files.
    let first = std::fs::read(config.out.join("agreement.json")).unwrap();
    let rerun = run_anchors(&config).unwrap();
    assert_eq!((rerun.receivers.forward_passes, rerun.suppression_computed), (0, false));
    assert_eq!(std::fs::read(config.out.join("agreement.json")).unwrap(), first);

    // Its explorer page, made from the cache, has the token view: the pairs the first run stored
    // (the trace's own top receiver heads), the corpus receiver heads among them first.
    let page = support::explorer_page_data(&config.out.join("explorer.html"));
    let view = &page["token_view"];
    let heads: Vec<[usize; 2]> = view["heads"].as_array().expect("a token view").iter().map(|h| serde_json::from_value(h["head"].clone()).unwrap()).collect();
    assert_eq!(heads.len(), 2, "--token-heads 2: {heads:?}");
    let corpus: Vec<[usize; 2]> = rerun.receivers.heads.top_k_heads[..2].iter().map(|&(l, h)| [l, h]).collect();
    let shown = corpus.iter().filter(|h| heads.contains(h)).count();
    assert_eq!(heads[..shown], corpus.iter().filter(|h| heads.contains(h)).copied().collect::<Vec<_>>()[..], "corpus heads first");
    assert!(!page["missing"].as_array().unwrap().iter().any(|m| m["part"] == "token view"));
}

#[test]
fn outgoing_importance_skips_undefined_targets() {
    let nan = f64::NAN;
    #[rustfmt::skip]
    let values = vec![
        -20.0, -20.0, -20.0,
        -2.0,  -20.0, -20.0,
        nan,   -4.0,  -20.0,
    ];
    let bounds = TokenBounds { ranges: vec![(0, 2), (2, 4), (4, 4)], n_tokens: 4, mode: Default::default() };
    let m = SuppressionMatrix { n: 3, values, kl: vec![], bounds, layers: vec![0], positions_run: 0 };
    let out = outgoing_importance(&m);
    assert_eq!(out[0], -2.0, "the NaN target (no tokens) is left out");
    assert_eq!(out[1], -4.0);
    assert!(out[2].is_nan());
}

#[test]
fn tag_summary_counts_top_sentences_per_trace() {
    let trace = |name: &str, tags: &[&str]| Trace {
        dir: PathBuf::from(name),
        name: name.into(),
        sentences: Sentences::from_chunks(&tags.iter().map(|t| format!("{t}.")).collect::<Vec<_>>()),
        tags: tags.iter().map(|t| vec![t.to_string()]).collect(),
        n_tokens: None,
    };
    let traces = vec![trace("a", &["plan", "check", "compute"]), trace("b", &["plan", "compute"])];
    let kurtosis = HeadValues { layers: 1, heads: 1, values: vec![1.0], dtype: thoughtscope::scores::Dtype::Float64 };
    let receivers = CorpusReceivers {
        heads: ReceiverHeads {
            responses: vec!["a".into(), "b".into()],
            kurtosis: vec![kurtosis.clone(), kurtosis.clone()],
            mean_kurtosis: kurtosis,
            top_k_heads: vec![(0, 0)],
            skipped: vec![],
        },
        scores: vec![("a".into(), vec![0.1, 0.5, f64::NAN]), ("b".into(), vec![0.3, 0.2])],
        too_long: vec![],
        forward_passes: 0,
        cache_hits: 0,
    };
    let rows = tag_summary(&traces, &receivers, 1);
    let get = |tag: &str| rows.iter().find(|r| r.tag == tag).unwrap();
    // Top 1 per trace: "check" in a, "plan" in b.
    assert_eq!((get("check").in_top, get("plan").in_top, get("compute").in_top), (1, 1, 0));
    assert_eq!(get("plan").sentences, 2);
    assert!((get("plan").mean_receiver_score - 0.2).abs() < 1e-15);
    assert!(get("compute").mean_receiver_score == 0.2, "the NaN score is left out of the mean");
    // check: share 1/2 among the top, 1/5 among all.
    assert!((get("check").enrichment - 2.5).abs() < 1e-12);
    let rows = sentence_rows(&traces[0], &[0.1, 0.5, f64::NAN], &[]);
    assert_eq!(rows.iter().map(|r| r.receiver_rank).collect::<Vec<_>>(), vec![2, 1, 0]);
}

#[test]
fn real_traces_are_found_at_any_depth_with_their_tags() {
    let Some(root) = support::shared_data("thought-anchors-traces") else { return };
    let traces = load_traces(&root, SentenceMode::Chunks).unwrap();
    assert_eq!(traces.len(), 40);
    assert!(traces.iter().all(|t| t.name.contains("/problem_")), "names keep the model and kind folders");
    for t in &traces {
        assert_eq!(t.tags.len(), t.sentences.len());
        assert!(t.tags.iter().all(|g| !g.is_empty()), "{}: every chunk carries function tags", t.name);
    }
}

#[test]
fn the_named_suppression_trace_is_analysed_even_where_the_spread_leaves_it_out() {
    let samples = support::repo().join("rollouts/apple_boxes");
    let names = |config: &AnchorsConfig| config.load_traces().unwrap().into_iter().map(|t| t.name).collect::<Vec<_>>();
    // 10 rollouts, 3 of them spread evenly: items 0, 3 and 6.
    let mut config = AnchorsConfig { traces: samples.clone(), max_traces: Some(3), ..AnchorsConfig::default() };
    assert_eq!(names(&config), ["rollout_00", "rollout_03", "rollout_06"]);
    config.suppression_trace = Some(samples.join("rollout_08"));
    assert_eq!(names(&config), ["rollout_00", "rollout_03", "rollout_06", "rollout_08"], "added, in name order");
    config.suppression_trace = Some(samples.join("rollout_03"));
    assert_eq!(names(&config), ["rollout_00", "rollout_03", "rollout_06"], "already among them: not twice");
    // A folder that is no trace below `traces` is not added.
    config.suppression_trace = Some(support::repo().join("rollouts"));
    assert_eq!(names(&config).len(), 3);
}

#[test]
fn a_folder_without_traces_is_an_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let error = load_traces(work.path(), SentenceMode::Chunks).unwrap_err().to_string();
    assert!(error.contains(&work.path().display().to_string()) && error.contains("base_solution.json"), "{error}");
}

#[test]
fn problem_dirs_follow_links_once_and_survive_a_link_cycle() {
    let work = tempfile::tempdir().unwrap();
    let real = work.path().join("elsewhere");
    let trace = support::cut_rollout(&real, "rollout_08", 3);
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("nested")).unwrap();
    std::os::unix::fs::symlink(&trace, root.join("nested/linked_trace")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("nested/cycle")).unwrap();
    let found = thoughtscope::rollout::find_problem_dirs(&root).unwrap();
    assert_eq!(found, vec![root.join("nested/linked_trace")]);
}
