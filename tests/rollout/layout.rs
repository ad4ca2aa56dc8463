//! Rollout writing (thought-anchors layout): the layout round trip, problems files, prompts, `\boxed{}` answers,
//! and the chunk list (HEAD splitter + kept final chunk) checked against the 40 published traces.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thoughtscope::rollout::answers::{check_answer, extract_boxed_answers, normalize_answer};
use thoughtscope::rollout::generate::{
    assemble_rollout, chunk_solution, pick_answer, problem_from_value, read_problems, solution_text, upstream_prompt, BoxedPick,
    FinalChunk, GenerateConfig,
};
use thoughtscope::attention::SentenceMode;
use thoughtscope::rollout::tagger::{RuleTagger, VA_TAG};
use thoughtscope::rollout::{discover_rollouts, misaligned_labels, tag_mask, Rollout};
use thoughtscope::rollout::write::{
    rollout_dir_name, RolloutFiles, BASE_SOLUTION_FILE, CHUNKS_FILE, CHUNKS_LABELED_FILE, PROBLEM_FILE,
};

use crate::support;

fn shared_data() -> Option<PathBuf> {
    support::shared_data("thought-anchors-traces")
}

#[test]
fn boxed_answers_count_braces() {
    assert_eq!(extract_boxed_answers(r"so \boxed{\frac{1}{2}} done"), vec![r"\frac{1}{2}"]);
    assert_eq!(extract_boxed_answers(r"\boxed{3} then \boxed{ 4 } and \boxed{}"), vec!["3", " 4 "]);
    assert_eq!(extract_boxed_answers(r"\boxed{x^{2"), vec!["x^{2"], "unclosed box gives the rest");
    assert_eq!(extract_boxed_answers("no box"), vec![""], "upstream's sentinel");
    assert_eq!(pick_answer(r"\boxed{3} so \boxed{4}", BoxedPick::First), "3");
    assert_eq!(pick_answer(r"\boxed{3} so \boxed{4}", BoxedPick::Last), "4");
    assert_eq!(pick_answer("nothing", BoxedPick::Last), "");
}

#[test]
fn answers_match_after_light_normalisation() {
    assert_eq!(normalize_answer(r" \dfrac{1}{2} "), r"\frac12");
    assert!(check_answer(r"\dfrac{1}{2}", r"\frac{1}{2}"));
    assert!(check_answer(" 7 ", "7"));
    assert!(check_answer("7.0", "7"));
    assert!(check_answer(r"10\%", "10"));
    assert!(check_answer(r"2 \times 3", r"2\cdot3"));
    assert!(check_answer("3,5", "3.5"));
    assert!(check_answer("", ""), "upstream: equal after normalisation (generation asks only when both are given)");
    assert!(!check_answer("8", "7"));
    assert!(!check_answer("x+1", "1+x"), "no algebraic equivalence (upstream's SymPy fallback is not ported)");
}

/// Generation's `is_correct` is thought-anchors' `check_answer` (`rollout::answers`), the same
/// check the resampling uses. Generation had a second copy (float parsing with a 1e-9 tolerance,
/// `$` and a trailing `.` dropped, Rust's `\s` for whitespace, empty answers never correct) that
/// differed on these pairs; each row gives upstream's verdict, which generation now writes.
#[test]
fn generation_judges_answers_as_upstreams_check_answer() {
    let cases: [(&str, &str, bool); 9] = [
        // sympy's LaTeX grammar rejects `.5`, `5.`, `1e3` and `$…$` as numbers, and upstream's
        // fallback (without antlr) answers "different": only the normalised strings count.
        ("0.5", ".50", false),
        ("5.", "5", false),
        ("$5$", "5", false),
        ("1e3", "1000", false),
        // Exact rationals, no tolerance.
        ("1.0000000001", "1", false),
        // Commas go before the number is read (`1,000` = 1000), as `prepare_latex_for_sympy`.
        ("1,000", "1000", true),
        // A fraction is a plain number too.
        (r"\frac{1}{2}", "0.5", true),
        (r"\dfrac{3}{4}", "0.75", true),
        // Python's whitespace includes U+001C..U+001F, which normalisation removes.
        ("1\u{1c}2", "12", true),
    ];
    let config = GenerateConfig::default();
    for (answer, gold, upstream) in cases {
        assert_eq!(check_answer(answer, gold), upstream, "check_answer({answer:?}, {gold:?})");
        let problem = problem_from_value(json!({"name": "p", "problem": "Q?", "gt_answer": gold}), 0).unwrap();
        let solution = format!("The answer is \\boxed{{{answer}}}.");
        let files = assemble_rollout(&problem, upstream_prompt("Q?"), solution, &config, &RuleTagger::default());
        assert_eq!(files.base_solution.answer, answer);
        assert_eq!(files.base_solution.is_correct, upstream, "is_correct of {answer:?} against {gold:?}");
    }
    // Generation still asks only when both the answer and the gold answer are there.
    for (solution, gold) in [("no box", "5"), (r"\boxed{5}", "")] {
        let problem = problem_from_value(json!({"name": "p", "problem": "Q?", "gt_answer": gold}), 0).unwrap();
        let files = assemble_rollout(&problem, upstream_prompt("Q?"), solution.to_string(), &config, &RuleTagger::default());
        assert!(!files.base_solution.is_correct, "{solution:?} against {gold:?}");
    }
}

#[test]
fn prompt_is_upstreams_string() {
    assert_eq!(
        upstream_prompt("What is 1+1?"),
        "Solve this math problem step by step. You MUST put your final answer in \\boxed{}. Problem: What is 1+1? Solution: \n<think>\n"
    );
}

#[test]
fn final_chunk_is_kept_unmerged_or_dropped() {
    let full_cot = format!(
        "{}First sentence is here. Second one is here!\n\nThird paragraph ends. ok\n</think>\n\\boxed{{2}}",
        upstream_prompt("P")
    );
    let text = solution_text(&full_cot);
    assert_eq!(text, "First sentence is here. Second one is here!\n\nThird paragraph ends. ok");
    let head = ["First sentence is here.", "Second one is here!", "Third paragraph ends."];
    assert_eq!(chunk_solution(&text, FinalChunk::Drop), head);
    let mut keep: Vec<&str> = head.to_vec();
    keep.push("ok");
    assert_eq!(chunk_solution(&text, FinalChunk::Keep), keep, "the short remainder stays its own chunk");
    // No boundary at all: HEAD gives nothing, Keep gives the whole text.
    assert!(chunk_solution("just one line", FinalChunk::Drop).is_empty());
    assert_eq!(chunk_solution("just one line", FinalChunk::Keep), ["just one line"]);
    assert!(chunk_solution("", FinalChunk::Keep).is_empty());
}

#[test]
fn layout_round_trip() {
    let problem = problem_from_value(json!({"problem_idx": "problem_7", "problem": "What is 3 times 4?", "gt_answer": 12}), 0).unwrap();
    assert_eq!((problem.name.as_str(), problem.gt_answer.as_deref()), ("problem_7", Some("12")));
    let prompt = upstream_prompt(&problem.problem);
    let solution = "Hmm, this might be a test. Let me compute 3 × 4 = 12. So the answer is \\boxed{12}.".to_string();
    let config = GenerateConfig::default();
    let files = assemble_rollout(&problem, prompt.clone(), solution.clone(), &config, &RuleTagger::default());
    assert_eq!(files.base_solution.full_cot, format!("{prompt}{solution}"));
    assert_eq!((files.base_solution.answer.as_str(), files.base_solution.is_correct), ("12", true));
    assert_eq!(files.chunks.source_text, files.base_solution.full_cot);
    assert_eq!(files.chunks.chunks.len(), files.labeled.len());
    assert_eq!(files.chunks.chunks, ["Hmm, this might be a test.", "Let me compute 3 × 4 = 12.", "So the answer is \\boxed{12}."]);
    assert!(files.labeled[0].function_tags.contains(&VA_TAG.to_string()));
    assert_eq!(files.labeled[2].function_tags, ["final_answer_emission"]);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(&problem.name).join(rollout_dir_name("rollout_", 3, 10));
    assert!(dir.ends_with("problem_7/rollout_03"));
    files.write(&dir).unwrap();
    for name in [PROBLEM_FILE, BASE_SOLUTION_FILE, CHUNKS_FILE, CHUNKS_LABELED_FILE] {
        assert!(dir.join(name).is_file(), "{name} written");
    }
    assert_eq!(RolloutFiles::read(&dir).unwrap(), files);
    // The JSON shapes readers of the published dataset expect.
    let labeled: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(CHUNKS_LABELED_FILE)).unwrap()).unwrap();
    assert_eq!(labeled[1]["chunk_idx"], json!(1));
    assert_eq!(labeled[1]["depends_on"], json!([]));
    let base: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(BASE_SOLUTION_FILE)).unwrap()).unwrap();
    let keys: Vec<&str> = base.as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["prompt", "solution", "full_cot", "answer", "is_correct"] {
        assert!(keys.contains(&key), "base_solution.json has {key}");
    }
    let problem_json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(PROBLEM_FILE)).unwrap()).unwrap();
    assert_eq!(problem_json["gt_answer"], json!(12), "problem.json is the entry as given");

    // What the analysis side reads: discovery by prefix, both sentence modes, the VA tag mask.
    assert_eq!(discover_rollouts(tmp.path().join("problem_7"), "rollout_").unwrap(), std::slice::from_ref(&dir));
    let rollout = Rollout::open(&dir).unwrap();
    assert_eq!(rollout.full_cot, files.base_solution.full_cot);
    let labels = rollout.labels().unwrap();
    assert!(labels.iter().all(|l| !l.labelling_error));
    let full_cot = rollout.sentences(SentenceMode::FullCot).unwrap();
    assert_eq!(full_cot.len(), files.chunks.chunks.len() - 1, "kept final chunk: N == len(chunks) - 1 as in the dataset");
    assert!(misaligned_labels(labels, &full_cot).is_empty());
    let chunks_mode = rollout.sentences(SentenceMode::Chunks).unwrap();
    assert_eq!(chunks_mode.len(), files.chunks.chunks.len());
    assert_eq!(tag_mask(labels, VA_TAG, chunks_mode.len()).indices(), [0]);
}

#[test]
fn rollout_names_sort_in_sample_order() {
    assert_eq!(rollout_dir_name("rollout_", 0, 1), "rollout_00");
    assert_eq!(rollout_dir_name("rollout_", 9, 10), "rollout_09");
    assert_eq!(rollout_dir_name("r", 7, 150), "r007");
    let names: Vec<String> = (0..12).map(|k| rollout_dir_name("rollout_", k, 12)).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn problems_file_errors_name_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("problems.json");
    std::fs::write(&path, r#"[{"problem": "A?", "id": 5}, {"problem": "B?"}, {"problem": "C?", "name": "ok-name.v2"}]"#).unwrap();
    let names: Vec<String> = read_problems(&path).unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["problem_5", "problem_1", "ok-name.v2"]);

    std::fs::write(&path, r#"[{"problem": "A?"}, {"gt_answer": "1"}]"#).unwrap();
    let err = read_problems(&path).unwrap_err().to_string();
    assert!(err.contains("problems.json") && err.contains("entry 1") && err.contains("`problem`"), "{err}");

    std::fs::write(&path, r#"[{"problem": "A?", "name": "x"}, {"problem": "B?", "name": "x"}]"#).unwrap();
    assert!(read_problems(&path).unwrap_err().to_string().contains("duplicate problem name `x`"));

    std::fs::write(&path, r#"{"problem": "A?", "name": "../escape"}"#).unwrap();
    assert!(read_problems(&path).unwrap_err().to_string().contains("names a directory"));
}

/// Our `chunks.json` shape equals the published dataset's: HEAD chunks + the remainder gives the
/// published `chunks_labeled.json` chunk list exactly for 39 of the 40 traces. The one exception
/// (qwen-14b correct 2236) ends in a short "Correct." that the dataset's older splitter merged
/// forward into the final chunk and HEAD merges backward.
#[test]
fn chunks_match_published_traces() {
    let Some(root) = shared_data() else { return };
    let mut dirs = Vec::new();
    for model in std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for kind in std::fs::read_dir(model.path()).unwrap().flatten() {
            for problem in std::fs::read_dir(kind.path()).unwrap().flatten() {
                dirs.push(problem.path());
            }
        }
    }
    dirs.sort();
    assert_eq!(dirs.len(), 40);
    let mut mismatched = Vec::new();
    for dir in &dirs {
        let base: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(BASE_SOLUTION_FILE)).unwrap()).unwrap();
        let labeled: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.join(CHUNKS_LABELED_FILE)).unwrap()).unwrap();
        let published: Vec<&str> = labeled.iter().map(|c| c["chunk"].as_str().unwrap()).collect();
        let ours = chunk_solution(&solution_text(base["full_cot"].as_str().unwrap()), FinalChunk::Keep);
        assert_eq!(ours.len(), published.len(), "{}", dir.display());
        if ours != published {
            assert_eq!(ours[..ours.len() - 2], published[..published.len() - 2], "{}", dir.display());
            mismatched.push(dir.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert_eq!(mismatched, ["deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2236"]);

    // The older chunks.json of qwen-14b correct 4682: same solution_text and chunk list.
    let old: Value = serde_json::from_str(&std::fs::read_to_string(root.join("chunks_qwen14b_correct_problem_4682.json")).unwrap()).unwrap();
    let text = solution_text(old["source_text"].as_str().unwrap());
    assert_eq!(text, old["solution_text"].as_str().unwrap());
    let chunks: Vec<&str> = old["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(chunk_solution(&text, FinalChunk::Keep), chunks);
}

/// The committed sample set (rollouts/README.md) is what the current code makes of its own text
/// (chunks from the splitter, labels from the default rules), and it shows the VA analysis at its
/// best: every rollout has a tagged sentence inside the range the seed analyses (after the
/// `[1:-1]` trim, before the last `proximity_ignore` sentences, whose vertical scores are NaN),
/// and at least 8 of the 10 have several tagged sentences.
#[test]
fn sample_set_is_consistent() {
    use thoughtscope::rollout::labeller::Labeller;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes");
    let dirs = discover_rollouts(&root, "rollout_").unwrap();
    assert_eq!(dirs.len(), 10);
    let mut several = 0;
    for dir in &dirs {
        let files = RolloutFiles::read(dir).unwrap();
        let base = &files.base_solution;
        assert_eq!(base.full_cot, format!("{}{}", base.prompt, base.solution), "{}", dir.display());
        let text = solution_text(&base.full_cot);
        assert_eq!(files.chunks.chunks, chunk_solution(&text, FinalChunk::Keep), "{}", dir.display());
        let problem = files.problem["problem"].as_str().unwrap();
        assert_eq!(files.labeled, RuleTagger::default().label(problem, &files.chunks.chunks), "{}: labels are stale, regenerate (rollouts/README.md)", dir.display());
        let generation = files.generation.as_ref().unwrap();
        assert_eq!(
            (generation.model_name.as_str(), generation.temperature, generation.top_p, generation.min_new_tokens),
            ("smollm2-135m", 0.7, 0.95, 450)
        );
        let rollout = Rollout::open(dir).unwrap();
        let n = rollout.sentences(SentenceMode::Chunks).unwrap().len();
        let tagged = tag_mask(rollout.labels().unwrap(), VA_TAG, n).indices();
        let proximity_ignore = 4;
        // Trimmed index k = i - 1 of m = n - 2 sentences has a score when k + p <= m - 1.
        let analysed = |i: &&usize| **i >= 1 && **i + proximity_ignore + 2 <= n;
        assert!(tagged.iter().any(|i| analysed(&i)), "{}: no tagged sentence the seed's analysis sees: {tagged:?} of {n}", dir.display());
        if tagged.len() >= 2 {
            several += 1;
        }
    }
    assert!(several >= 8, "{several} of 10 rollouts with several {VA_TAG} sentences");
}
