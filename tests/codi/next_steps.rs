//! The CODI experiment's three next steps on a tiny random CODI-shaped model, each against a
//! straightforward recomputation through the generic hook machinery (`HookSet` captures and
//! interventions) or by hand in f64:
//! - compositional ablation: singles equal `codi ablate`'s, pairs/triplets equal a run with the
//!   same patch built from `Intervention`s, interactions equal the arithmetic on the record;
//! - question → thought attention: the head-mean/per-head rows equal the captured patterns,
//!   the class aggregation equals a sum by hand; token classes on SmolLM2's real BPE tokens;
//! - residual decomposition: components sum to the final residual, DLA sums to the logit, the
//!   logit lens equals RMSNorm + unembedding computed by hand (with non-unit norm weights).
//!
//! Runs in seconds on CPU.

use crate::codi_support;
use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use thoughtscope::codi::latent::thought_loop::{decode_greedy, gold_logprob};
use thoughtscope::codi::next::analyze::{
    analyze_compose, analyze_decompose, analyze_routing, ComposeAnalysisOptions, DecomposeAnalysisOptions, RoutingAnalysisOptions,
};
use thoughtscope::codi::next::compose::{self, compose_problem, run_compose};
use thoughtscope::codi::next::decompose::{self, decompose_problem, DecomposeOptions};
use thoughtscope::codi::next::routing::{self, routing_for_problem, run_routing, summarize_routing, RoutingOptions, TokenClass};
use thoughtscope::codi::runner::step::{for_shard, StepOutcome};
use thoughtscope::codi::{ablate_problem, AblationMode, AblationOptions, ImportanceKind, StepLayout};
use thoughtscope::codi::{
    run_from_prompt, run_from_prompts, run_prompt, run_to_eot, CodiModel, LoadOptions, LoopMode, LoopOptions, Phase, PhaseHooks,
};
use thoughtscope::model::{HookPoint, HookSet, Hooks, Intervention, NoHooks};
use thoughtscope::io::shard::Shard;
use thoughtscope::model::Settings;

/// A `HookSet` told the loop phase (it needs none): the generic machinery as a loop's hooks.
struct Plain<'a>(HookSet<'a>);

impl PhaseHooks for Plain<'_> {
    fn enter(&mut self, _: Phase) {}
}

impl Hooks for Plain<'_> {
    fn begin(&mut self, offset: usize, len: usize) {
        self.0.begin(offset, len)
    }
    fn wants(&self, point: &HookPoint) -> bool {
        self.0.wants(point)
    }
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> thoughtscope::model::Result<Option<Tensor>> {
        self.0.on(point, value)
    }
}

fn short_loop(mode: LoopMode) -> LoopOptions {
    let mut o = LoopOptions::for_mode(mode);
    o.max_new_tokens = 4;
    o
}

/// The tiny CODI-shaped model of `codi_support`, with random (non-unit) RMSNorm weights so the
/// final norm's `γ` matters in the decomposition.
fn tiny_codi_random_norms(root: &Path) -> CodiModel {
    let base = root.join("base");
    codi_support::write_tiny_base(&base);
    let file = base.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let mut seed = 11u64;
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("norm.weight") {
            let values: Vec<f32> = (0..t.elem_count())
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    0.5 + (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            *t = Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let codi_dir = root.join("codi");
    let options = thoughtscope::codi::MakeModelOptions {
        base: base.display().to_string(),
        seed: 3,
        lora_r: 4,
        lora_alpha: 8.0,
        base_bf16: false,
    };
    thoughtscope::codi::make_model(&options, &codi_dir, &Settings::default()).unwrap();
    CodiModel::load(&codi_dir, &LoadOptions::default(), &Settings::default()).unwrap()
}

fn load_plain_tiny(root: &Path) -> CodiModel {
    CodiModel::load(&codi_support::tiny_codi(root), &LoadOptions::default(), &Settings::default()).unwrap()
}

/// The faithful / corrected patch of `tokens` rebuilt from generic interventions at
/// `blocks.{layer}.hook_resid_post`, as `1_run_token_ablation.py`'s hook does it.
fn reference_hooks(codi: &CodiModel, question: &str, options: &AblationOptions, tokens: &[usize]) -> HookSet<'static> {
    let loop_options = &options.loop_options;
    let post = HookPoint::ResidPost(options.layer);
    let probe = run_to_eot(codi, question, loop_options, &mut NoHooks).unwrap();
    let layout = probe.layout;
    match options.mode {
        AblationMode::Corrected => HookSet::new().intervene(
            post,
            Intervention::Zero { positions: Some(tokens.iter().map(|&k| layout.step_position(k)).collect()) },
        ),
        AblationMode::Faithful => {
            // Clean vectors: one capture per forward call; calls 1..=6 are the loop steps.
            let source = if options.layer_off_by_one { HookPoint::ResidPre(options.layer) } else { post };
            let mut capture = Plain(HookSet::new().capture(source));
            run_to_eot(codi, question, loop_options, &mut capture).unwrap();
            let clean: Vec<Tensor> = capture.0.captured_all(&source)[1..=6].to_vec();
            let vector = |k: usize| if tokens.contains(&k) { clean[k].zeros_like().unwrap() } else { clean[k].clone() };
            let mut hooks = HookSet::new();
            for k in 0..6 {
                hooks = hooks.intervene(post, Intervention::Replace { positions: Some(vec![layout.step_position(k)]), value: vector(k) });
            }
            if options.patch_prompt {
                hooks = hooks.intervene(
                    post,
                    Intervention::Replace { positions: Some(vec![layout.last_prompt_position()]), value: vector(0) },
                );
            }
            hooks
        }
    }
}

#[test]
fn runs_through_the_loop_together_equal_the_runs_one_by_one() {
    let root = tempfile::tempdir().unwrap();
    let codi = load_plain_tiny(root.path());
    let problems = codi_support::problems();
    let question = &problems[0].question;
    for (mode, loop_mode) in [(AblationMode::Faithful, LoopMode::Cotx), (AblationMode::Corrected, LoopMode::Official)] {
        let mut options = AblationOptions::new(short_loop(loop_mode), mode);
        options.layer = 1;
        let loop_options = &options.loop_options;
        // Each run's own patch (the faithful one also patches the question pass), built from
        // generic interventions; the empty set is the hook alone.
        let sets = [vec![], vec![1], vec![0, 2, 5], vec![3, 4]];
        let mut single_hooks: Vec<Plain> = sets.iter().map(|t| Plain(reference_hooks(&codi, question, &options, t))).collect();
        let prompts: Vec<_> = single_hooks.iter_mut().map(|h| run_prompt(&codi, question, loop_options, h).unwrap()).collect();
        let one_by_one: Vec<_> =
            prompts.iter().zip(&mut single_hooks).map(|(p, h)| run_from_prompt(&codi, p.clone(), loop_options, h).unwrap()).collect();
        let mut batch_hooks: Vec<Plain> = sets.iter().map(|t| Plain(reference_hooks(&codi, question, &options, t))).collect();
        let mut rows: Vec<&mut dyn PhaseHooks> = batch_hooks.iter_mut().map(|h| h as &mut dyn PhaseHooks).collect();
        let together = run_from_prompts(&codi, prompts.clone(), loop_options, &mut rows).unwrap();
        assert_eq!(together.len(), sets.len());
        let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut distinct = std::collections::BTreeSet::new();
        for ((set, a), b) in sets.iter().zip(&one_by_one).zip(&together) {
            let what = format!("{mode:?} {loop_mode:?} {set:?}");
            assert_eq!(b.layout, a.layout, "{what}");
            assert_eq!(bits(&b.eot_logits), bits(&a.eot_logits), "{what}: EOT logits differ from the run alone");
            assert_eq!(b.cache.len(), a.cache.len(), "{what}");
            // The cache continues as the run's own: the same tokens, the same gold log-prob bits.
            let gold = problems[0].answer.to_string();
            let (la, lb) = (gold_logprob(&codi, a, &gold, &mut NoHooks).unwrap(), gold_logprob(&codi, b, &gold, &mut NoHooks).unwrap());
            assert_eq!(la.to_bits(), lb.to_bits(), "{what}: {la} vs {lb}");
            let da = decode_greedy(&codi, a.clone(), loop_options, &mut NoHooks).unwrap();
            let db = decode_greedy(&codi, b.clone(), loop_options, &mut NoHooks).unwrap();
            assert_eq!(da.tokens, db.tokens, "{what}");
            distinct.insert(bits(&a.eot_logits));
        }
        assert_eq!(distinct.len(), sets.len(), "{mode:?}: every patch changes the run, so a row mix-up would show");
    }

    // Runs of different questions, or as many hooks as runs missing, are refused.
    let options = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Corrected);
    let prompt = |q: &str| run_prompt(&codi, q, &options.loop_options, &mut NoHooks).unwrap();
    let (mut h1, mut h2) = (NoHooks, NoHooks);
    let longer = format!("{} And then some more words.", problems[0].question);
    let error = run_from_prompts(&codi, vec![prompt(&problems[0].question), prompt(&longer)], &options.loop_options, &mut [&mut h1, &mut h2])
        .unwrap_err()
        .to_string();
    assert!(error.contains("one question"), "{error}");
    let error =
        run_from_prompts(&codi, vec![prompt(&problems[0].question)], &options.loop_options, &mut [&mut h1, &mut h2]).unwrap_err().to_string();
    assert!(error.contains("1 prompts and 2 hooks"), "{error}");
}

#[test]
fn compositional_ablation_matches_single_ablation_and_generic_interventions() {
    let root = tempfile::tempdir().unwrap();
    let codi = load_plain_tiny(root.path());
    let problems = codi_support::problems();
    let problem = &problems[0];
    let configs = [
        (AblationMode::Corrected, LoopMode::Cotx, false, false),
        (AblationMode::Faithful, LoopMode::Cotx, true, true),
        (AblationMode::Faithful, LoopMode::Official, false, false),
    ];
    for (mode, loop_mode, off_by_one, patch_prompt) in configs {
        let mut options = AblationOptions::new(short_loop(loop_mode), mode);
        options.layer = 1;
        options.layer_off_by_one = off_by_one;
        options.patch_prompt = patch_prompt;
        let what = format!("{mode:?} {loop_mode:?} off_by_one={off_by_one} patch_prompt={patch_prompt}");
        let record = compose_problem(&codi, problem, &options).unwrap();
        assert_eq!(
            (record.single_ablations.len(), record.pair_ablations.len(), record.triplet_ablations.len()),
            (6, 15, 20),
            "{what}"
        );
        assert_eq!(record.pair_importance_scores.len(), 15);

        // Singles: exactly `codi ablate`'s runs.
        let single = ablate_problem(&codi, problem, &options).unwrap();
        assert_eq!(record.baseline, single.baseline, "{what}");
        for (ours, theirs) in record.single_ablations.iter().zip(&single.token_ablations) {
            assert_eq!(ours.tokens, vec![theirs.token_pos]);
            assert_eq!(ours.ablated_output, theirs.ablated_output, "{what}");
            assert_eq!(ours.importance, theirs.importance);
            let (a, b) = (ours.gold_logprob.unwrap(), theirs.gold_logprob.unwrap());
            assert!((a - b).abs() < 1e-5, "{what} token {}: {a} vs {b}", theirs.token_pos);
        }

        // A pair and a triplet (one containing step 0, which bug 2 also patches): the same patch
        // rebuilt from generic interventions, run and decoded one by one.
        let baseline_lp = record.baseline.as_ref().unwrap().gold_logprob.unwrap();
        for tokens in [vec![1, 3], vec![0, 2, 5]] {
            let ours = record.set(&tokens).unwrap();
            let mut hooks = Plain(reference_hooks(&codi, &problem.question, &options, &tokens));
            let state = run_to_eot(&codi, &problem.question, &options.loop_options, &mut hooks).unwrap();
            let lp = gold_logprob(&codi, &state, &problem.answer.to_string(), &mut hooks).unwrap();
            assert!((ours.gold_logprob.unwrap() - lp).abs() < 1e-4, "{what} {tokens:?}: {} vs {lp}", ours.gold_logprob.unwrap());
            assert!((ours.logprob_importance.unwrap() - (baseline_lp - ours.gold_logprob.unwrap())).abs() < 1e-12);
            assert!(ours.logprob_importance.unwrap().abs() > 1e-4, "{what} {tokens:?}: the ablation changed nothing");
            // Not the sum of a single's patch: the set differs from each of its members.
            for &k in &tokens {
                assert!((record.set(&[k]).unwrap().gold_logprob.unwrap() - lp).abs() > 1e-6, "{what} {tokens:?} vs {k}");
            }
            let decoded = decode_greedy(&codi, state, &options.loop_options, &mut NoHooks).unwrap();
            assert_eq!(ours.ablated_output, decoded.text, "{what} {tokens:?}");
        }

        // Interactions: the record's own arithmetic, recomputed.
        for set in record.pair_ablations.iter().chain(&record.triplet_ablations) {
            let singles: Vec<_> = set.tokens.iter().map(|&k| record.set(&[k]).unwrap()).collect();
            let binary: i32 = singles.iter().map(|s| s.importance as i32).sum();
            let lp: f64 = singles.iter().map(|s| s.logprob_importance.unwrap()).sum();
            assert_eq!(set.interaction, Some(set.importance as i32 - binary));
            assert!((set.logprob_interaction.unwrap() - (set.logprob_importance.unwrap() - lp)).abs() < 1e-9);
            if set.tokens.len() == 3 {
                let t = &set.tokens;
                let pairs = [[t[0], t[1]], [t[0], t[2]], [t[1], t[2]]];
                let pair_lp: f64 = pairs.iter().map(|p| record.set(p).unwrap().logprob_importance.unwrap()).sum();
                let expect = set.logprob_importance.unwrap() - pair_lp + lp;
                assert!((set.logprob_third_order_interaction.unwrap() - expect).abs() < 1e-9);
            } else {
                assert_eq!(set.third_order_interaction, None);
            }
        }
    }
}

#[test]
fn compositional_run_resumes_and_writes_table_and_figures() {
    let root = tempfile::tempdir().unwrap();
    let codi = load_plain_tiny(root.path());
    let problems = codi_support::problems();
    let mut options = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Corrected);
    options.layer = 2;
    let layout = StepLayout::new(root.path().join("out"), true, problems.len());
    let out = layout.result(compose::RESULTS_STEM, "json");
    assert!(out.ends_with("results/compositional_ablation_results_test.json"));
    let first = run_compose(&codi, &problems[..1], &options, &out).unwrap().records;
    let all = run_compose(&codi, &problems[..2], &options, &out).unwrap().records;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].pair_importance_scores, first[0].pair_importance_scores);
    let mut other = options.clone();
    other.layer = 3;
    let err = run_compose(&codi, &problems, &other, &out).unwrap_err().to_string();
    assert!(err.contains("settings.layer"), "{err}");

    // The tiny model's baselines are wrong: binary importance has nothing to summarise.
    let err = analyze_compose(&all, &layout, &ComposeAnalysisOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no problem to summarise"), "{err}");
    let analysis_options = ComposeAnalysisOptions {
        importance: ImportanceKind::Logprob,
        all_baselines: true,
        static_images: false,
        title_note: " (test)".into(),
    };
    let analysis = analyze_compose(&all, &layout, &analysis_options).unwrap();
    assert_eq!(analysis.summary.len(), 41);
    // Means by hand for one pair.
    let row = analysis.summary.iter().find(|s| s.tokens == [2, 4]).unwrap();
    assert_eq!((row.label.as_str(), row.problems), ("T2+T4", 2));
    let values: Vec<f64> = all.iter().map(|r| r.set(&[2, 4]).unwrap().logprob_interaction.unwrap()).collect();
    assert!((row.logprob_interaction_mean.unwrap() - (values[0] + values[1]) / 2.0).abs() < 1e-12);
    let singles: Vec<f64> = all
        .iter()
        .map(|r| r.set(&[2]).unwrap().logprob_importance.unwrap() + r.set(&[4]).unwrap().logprob_importance.unwrap())
        .collect();
    assert!((row.logprob_singles_sum_mean.unwrap() - (singles[0] + singles[1]) / 2.0).abs() < 1e-12);
    for file in [
        "results/compositional_table_test.csv",
        "results/compositional_table_test.md",
        "results/compositional_table_test.json",
        "figures/compositional_pair_interaction.html",
        "figures/compositional_triplet_importance.html",
    ] {
        assert!(root.path().join("out").join(file).is_file(), "{file}");
    }
    let csv = std::fs::read_to_string(root.path().join("out/results/compositional_table_test.csv")).unwrap();
    assert_eq!(csv.lines().count(), 42);
    assert!(csv.lines().nth(7).unwrap().starts_with("T0+T1,2,2,"), "{csv}");
    let md = std::fs::read_to_string(root.path().join("out/results/compositional_table_test.md")).unwrap();
    assert!(md.starts_with("| set | size | problems | importance_mean |"), "{md}");
    assert_eq!(compose::problems_table(&all).unwrap().height(), 2);
}

/// One next step through the step runner: a whole run; the same run resumed (nothing computed
/// again); two shard parts (Slurm array tasks), then the unsharded run, which computes nothing
/// and writes the whole run's records, record for record and byte for byte; the same step with
/// `other` settings on the finished file is refused, naming `field`.
fn check_sharded_and_resumed<R: serde::Serialize>(
    dir: &Path,
    name: &str,
    problems: &[thoughtscope::codi::Problem],
    run: impl Fn(&[thoughtscope::codi::Problem], &Path) -> thoughtscope::Result<StepOutcome<R>>,
    run_other: impl Fn(&Path) -> thoughtscope::Result<StepOutcome<R>>,
    field: &str,
) {
    // NaN is `null` on disk: records compare as the JSON they are written as.
    let json = |records: &[R]| records.iter().map(|r| serde_json::to_value(r).unwrap()).collect::<Vec<_>>();
    let whole_path = dir.join("whole").join(format!("{name}.json"));
    let whole = run(problems, &whole_path).unwrap();
    assert_eq!((whole.computed, whole.failed, whole.records.len()), (problems.len(), 0, problems.len()), "{name}");
    let resumed = run(problems, &whole_path).unwrap();
    assert_eq!(resumed.computed, 0, "{name}: a resumed run recomputes nothing");
    assert_eq!(json(&resumed.records), json(&whole.records), "{name}");

    let merged_path = dir.join("sharded").join(format!("{name}.json"));
    let mut owned = 0;
    for index in 0..2 {
        let (mine, part) = for_shard(problems, &merged_path, Shard::new(index, 2).unwrap());
        let outcome = run(&mine, &part).unwrap();
        assert_eq!(outcome.computed, mine.len(), "{name} shard {index}");
        owned += mine.len();
        let marker = part.with_file_name(format!("INCOMPLETE.{}", part.file_name().unwrap().to_string_lossy()));
        assert!(part.is_file() && !marker.exists(), "{name} shard {index}: part written, run finished");
    }
    assert_eq!(owned, problems.len(), "{name}: every problem in exactly one shard");
    let merged = run(problems, &merged_path).unwrap();
    assert_eq!(merged.computed, 0, "{name}: the merge reads the parts, it runs nothing");
    assert_eq!(json(&merged.records), json(&whole.records), "{name}: the merge equals the whole run");
    assert!(std::fs::read(&merged_path).unwrap() == std::fs::read(&whole_path).unwrap(), "{name}: files differ");

    let err = run_other(&whole_path).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains(&format!("`settings.{field}`")) && err.contains(&format!("{name}.json")), "{name}: {err}");
}

#[test]
fn next_steps_shard_merge_resume_and_refuse_other_settings() {
    let root = tempfile::tempdir().unwrap();
    let codi = load_plain_tiny(root.path());
    let problems = codi_support::problems();
    let dir = root.path();

    let mut ablation = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Faithful);
    ablation.layer = 2;
    let other_ablation = AblationOptions { layer: 3, ..ablation.clone() };
    check_sharded_and_resumed(
        dir,
        "compose",
        &problems,
        |problems, out| run_compose(&codi, problems, &ablation, out),
        |out| run_compose(&codi, &problems, &other_ablation, out),
        "layer",
    );

    let routing = RoutingOptions { loop_options: short_loop(LoopMode::Cotx), layers: vec![0, 2], head_layers: vec![2] };
    let other_routing = RoutingOptions { layers: vec![0, 1, 2], ..routing.clone() };
    check_sharded_and_resumed(
        dir,
        "routing",
        &problems,
        |problems, out| run_routing(&codi, problems, &routing, out),
        |out| run_routing(&codi, &problems, &other_routing, out),
        "layers",
    );
    // A shard part made with other settings is refused by the merge, naming the part and the field.
    let (mine, part) = for_shard(&problems, &dir.join("mixed/routing.json"), Shard::new(0, 2).unwrap());
    run_routing(&codi, &mine, &other_routing, &part).unwrap();
    let err = run_routing(&codi, &problems, &routing, &dir.join("mixed/routing.json")).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("routing.shard-0-of-2.json") && err.contains("`settings.layers`"), "{err}");

    let decompose = DecomposeOptions::new(short_loop(LoopMode::Cotx));
    let other_decompose = DecomposeOptions { top_k: 3, ..decompose.clone() };
    check_sharded_and_resumed(
        dir,
        "decompose",
        &problems,
        |problems, out| decompose::run_decompose(&codi, problems, &decompose, out),
        |out| decompose::run_decompose(&codi, &problems, &other_decompose, out),
        "top_k",
    );
}

#[test]
fn routing_rows_equal_captured_patterns_and_classes_aggregate_by_hand() {
    let root = tempfile::tempdir().unwrap();
    let codi = load_plain_tiny(root.path());
    let problems = codi_support::problems();
    for mode in [LoopMode::Cotx, LoopMode::Official] {
        let options = RoutingOptions { loop_options: short_loop(mode), layers: vec![0, 1, 2, 3], head_layers: vec![1, 3] };
        let record = routing_for_problem(&codi, &problems[0], &options).unwrap();
        let question_len = record.question_tokens.len();
        assert_eq!(question_len, codi.tokenizer.encode(&problems[0].question).unwrap().len());
        // "3" and "4" are numbers, "?" other, the rest words or [UNK] (a word: letters).
        let class_of = |text: &str| record.question_tokens.iter().find(|t| t.text == text).unwrap().class;
        assert_eq!((class_of("3"), class_of("?"), class_of("apples")), (TokenClass::Number, TokenClass::Other, TokenClass::Word));

        // Reference: every pattern captured by a HookSet; calls 1..=6 are the loop steps.
        let mut capture = HookSet::new();
        for l in 0..4 {
            capture = capture.capture(HookPoint::AttnPattern(l));
        }
        let mut capture = Plain(capture);
        let state = run_to_eot(&codi, &problems[0].question, &options.loop_options, &mut capture).unwrap();
        assert_eq!(record.thought_positions, state.layout.step_positions());
        for layer in 0..4 {
            let patterns = capture.0.captured_all(&HookPoint::AttnPattern(layer));
            for k in 0..6 {
                // [1, H, 1, keys] → [H][keys]
                let p = patterns[1 + k].squeeze(0).unwrap().squeeze(1).unwrap().to_vec2::<f32>().unwrap();
                let heads = p.len();
                for q in 0..question_len {
                    let mean = p.iter().map(|h| h[q] as f64).sum::<f64>() / heads as f64;
                    assert!((record.head_mean[layer][k][q] as f64 - mean).abs() < 1e-6);
                }
                let mass: f64 = (0..question_len).map(|q| record.head_mean[layer][k][q] as f64).sum();
                assert!((record.question_mass[layer][k] as f64 - mass).abs() < 1e-5);
                if let Some(hi) = options.head_layers.iter().position(|&l| l == layer) {
                    for (ours, theirs) in record.per_head[hi].iter().zip(&p) {
                        // (the reference's question pass took the unfused attention path: round-off)
                        for (a, b) in ours[k].iter().zip(&theirs[..question_len]) {
                            assert!((a - b).abs() < 1e-6);
                        }
                    }
                    assert_eq!(record.per_head[hi].len(), heads);
                }
            }
        }
        // The per-problem table holds the same numbers.
        let table = routing::question_table(&record, 2).unwrap();
        assert_eq!(table.height(), question_len);
        let t4_column = table.column("T4").unwrap().f64().unwrap().clone();
        let t4: Vec<Option<f64>> = (0..question_len).map(|i| t4_column.get(i)).collect();
        assert!(t4.iter().zip(&record.head_mean[2][4]).all(|(a, &b)| (a.unwrap() - b as f64).abs() < 1e-7));
        // By class, by hand.
        let classes = record.class_attention(2, 4).unwrap();
        for c in classes {
            let members: Vec<usize> = record.question_tokens.iter().filter(|t| t.class == c.class).map(|t| t.position).collect();
            let mass: f64 = members.iter().map(|&q| record.head_mean[2][4][q] as f64).sum();
            assert_eq!(c.tokens, members.len());
            assert!((c.mass - mass).abs() < 1e-9);
            assert_eq!(c.per_token.is_some(), !members.is_empty());
        }
    }

    // Several problems: the summary's means by hand, files in the seed layout.
    let options = RoutingOptions { loop_options: short_loop(LoopMode::Cotx), layers: vec![0, 2], head_layers: vec![2] };
    let layout = StepLayout::new(root.path().join("out"), false, problems.len());
    let out = layout.result(routing::RESULTS_STEM, "json");
    let records = run_routing(&codi, &problems, &options, &out).unwrap().records;
    let summary = summarize_routing(&records).unwrap();
    let number = TokenClass::ALL.iter().position(|&c| c == TokenClass::Number).unwrap();
    let with_numbers: Vec<f64> = records
        .iter()
        .filter_map(|r| r.class_attention(2, 1).unwrap()[number].per_token)
        .collect();
    assert_eq!(with_numbers.len(), 2); // the third question has no number
    let expect = with_numbers.iter().sum::<f64>() / 2.0;
    assert!((summary.per_token[1][1][number].unwrap() - expect).abs() < 1e-12);
    let analysis = RoutingAnalysisOptions { heatmaps: 2, static_images: false, title_note: String::new() };
    analyze_routing(&records, &layout, &analysis).unwrap();
    for file in [
        "results/question_to_thought_attention_3.json",
        "results/attention_by_token_type_3.csv",
        "figures/question_to_thought_p1.html",
        "figures/question_to_thought_p2.html",
        "figures/attention_by_token_type.html",
        "figures/attention_by_token_type_per_layer.html",
        "figures/attention_by_token_type_per_head.html",
    ] {
        assert!(root.path().join("out").join(file).is_file(), "{file}");
    }
    let bad = RoutingOptions { head_layers: vec![9], ..options };
    let err = routing_for_problem(&codi, &problems[0], &bad).unwrap_err().to_string();
    assert!(err.contains("layer 9") && err.contains("4 blocks"), "{err}");
}

#[test]
fn token_classes_on_smollm2_bpe_tokens() {
    let Some(loaded) = support::smollm2() else { return };
    let tokenizer = &loaded.tokenizer;
    let text = "Tom has 12 apples, buys 3.5 more + 7 = 22% ?";
    let ids = tokenizer.encode(text).unwrap();
    let classes: Vec<(String, TokenClass)> = ids
        .iter()
        .map(|&id| {
            let t = tokenizer.decode(&[id], false).unwrap();
            let class = TokenClass::of(&t, Some(id) == tokenizer.bos());
            (t, class)
        })
        .collect();
    let of = |needle: &str| classes.iter().find(|(t, _)| t.trim() == needle).unwrap_or_else(|| panic!("{needle} in {classes:?}")).1;
    assert_eq!(of("apples"), TokenClass::Word);
    assert_eq!(of("+"), TokenClass::Operator);
    assert_eq!(of("="), TokenClass::Operator);
    assert_eq!(of("%"), TokenClass::Operator);
    assert_eq!(of("?"), TokenClass::Other);
    assert_eq!(of(","), TokenClass::Other);
    // SmolLM2 splits digits: every digit piece is a number.
    for (t, class) in &classes {
        if t.trim().chars().all(|c| c.is_ascii_digit()) && !t.trim().is_empty() {
            assert_eq!(*class, TokenClass::Number, "{t:?}");
        }
    }
    assert!(classes.iter().filter(|(_, c)| *c == TokenClass::Number).count() >= 6, "{classes:?}");
}

#[test]
fn decomposition_sums_exactly_and_logit_lens_matches_by_hand() {
    let root = tempfile::tempdir().unwrap();
    let codi = tiny_codi_random_norms(root.path());
    let gamma = codi.model.final_norm_weight().to_vec1::<f32>().unwrap();
    assert!(gamma.iter().any(|&g| (g - 1.0).abs() > 0.1), "norm weights must not be ones");
    let problems = codi_support::problems();
    for mode in [LoopMode::Cotx, LoopMode::Official] {
        let options = DecomposeOptions::new(short_loop(mode));
        let record = decompose_problem(&codi, &problems[0], &options).unwrap();
        let n = codi.model.num_layers();
        assert_eq!(record.components.len(), 1 + 2 * n);
        assert_eq!(record.position_labels.last().map(String::as_str), Some("EOT"));

        let state = run_to_eot(&codi, &problems[0].question, &options.loop_options, &mut NoHooks).unwrap();
        let eot = state.eot_logits.to_vec1::<f32>().unwrap();
        let argmax = (0..eot.len()).fold(0, |b, i| if eot[i] > eot[b] { i } else { b });
        assert_eq!(record.targets[1].token as usize, argmax);
        let mut expected_positions = state.layout.step_positions();
        expected_positions.push(state.layout.eot_position());
        assert_eq!(record.positions, expected_positions);

        for p in 0..record.positions.len() {
            // Σ components = final residual (float round-off only).
            assert!(record.reconstruction_error[p] < 1e-4, "{mode:?} position {p}: {}", record.reconstruction_error[p]);
            for t in 0..2 {
                // Σ DLA = the logit the model computes there.
                let sum: f64 = record.dla[t][p].iter().sum();
                let logit = record.logits[t][p];
                assert!((sum - logit).abs() < 1e-4 * (1.0 + logit.abs()), "{mode:?} p{p} t{t}: {sum} vs {logit}");
            }
        }
        let (reconstruction, dla) = record.identity_errors();
        assert!(reconstruction < 1e-4 && dla < 1e-3, "{reconstruction} {dla}");
        // At EOT the logits are the model's own output logits.
        for t in 0..2 {
            let expect = eot[record.targets[t].token as usize] as f64;
            assert!((record.logits[t][6] - expect).abs() < 1e-4, "{} vs {expect}", record.logits[t][6]);
        }

        // Logit lens by hand: RMSNorm(x)·γ then W_U in f64, on residuals captured by a HookSet.
        let mut capture = HookSet::new();
        for l in 0..n {
            capture = capture.capture(HookPoint::ResidPost(l));
        }
        let mut capture = Plain(capture);
        run_to_eot(&codi, &problems[0].question, &options.loop_options, &mut capture).unwrap();
        let w_u = codi.model.unembedding_matrix().unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        let width = eot.len();
        let eps = codi.model.config().rms_norm_eps;
        for (p, layer) in [(0usize, 0usize), (3, 2), (6, n - 1)] {
            let x = capture.0.captured_all(&HookPoint::ResidPost(layer))[1 + p].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let s = (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64 + eps).sqrt();
            let logits: Vec<f64> = w_u[..width]
                .iter()
                .map(|row| row.iter().zip(&x).zip(&gamma).map(|((&w, &v), &g)| w as f64 * v as f64 * g as f64 / s).sum())
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            let best = (0..width).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
            let row = &record.logit_lens[p][1 + layer];
            assert_eq!(row.label, format!("{layer}_post"));
            assert_eq!(row.top[0].token as usize, best, "{mode:?} p{p} layer {layer}");
            assert!((row.top[0].logprob - (logits[best] - log_sum)).abs() < 1e-4);
            let gold = record.targets[0].token as usize;
            assert!((row.target_logprobs[0] - (logits[gold] - log_sum)).abs() < 1e-4);
            assert_eq!(row.target_ranks[0], logits.iter().filter(|&&v| v > logits[gold]).count());
            // The lens after the last block is the position's own logits.
            if layer == n - 1 {
                assert!((logits[gold] - record.logits[0][p]).abs() < 1e-4);
            }
        }
        assert!(record.logit_lens[0][0].top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }

    // Summary, tables and figures on two problems.
    let layout = StepLayout::new(root.path().join("out"), true, 2);
    let options = DecomposeOptions::new(short_loop(LoopMode::Cotx));
    let records = decompose::run_decompose(&codi, &problems[..2], &options, &layout.result(decompose::RESULTS_STEM, "json")).unwrap().records;
    let analysis = DecomposeAnalysisOptions { lens_problems: 1, static_images: false, title_note: String::new() };
    let summary = analyze_decompose(&records, &layout, &analysis).unwrap().summary;
    let expect = (records[0].dla[0][6][3] + records[1].dla[0][6][3]) / 2.0;
    assert!((summary.dla_mean[0][6][3].unwrap() - expect).abs() < 1e-12);
    let dla = decompose::dla_table(&summary, 0).unwrap();
    assert_eq!(dla.shape(), (1 + 2 * codi.model.num_layers() + 1, 1 + 7));
    let eot_column = dla.column("EOT").unwrap().f64().unwrap().clone();
    let eot: Vec<Option<f64>> = (0..dla.height()).map(|i| eot_column.get(i)).collect();
    assert!((eot[3].unwrap() - expect).abs() < 1e-12);
    let lens = decompose::lens_table(&records[0]).unwrap();
    assert_eq!(lens.shape(), (1 + codi.model.num_layers(), 1 + 7));
    let files: Vec<PathBuf> = [
        "results/residual_decomposition_test.json",
        "results/direct_logit_attribution_test.csv",
        "results/logit_lens_p1_test.md",
        "figures/direct_logit_attribution.html",
        "figures/direct_logit_attribution_eot.html",
        "figures/logit_lens_p1.html",
    ]
    .iter()
    .map(|f| root.path().join("out").join(f))
    .collect();
    for file in files {
        assert!(file.is_file(), "{}", file.display());
    }
}

#[test]
fn cli_steps_write_the_seed_layout() {
    let root = tempfile::tempdir().unwrap();
    let checkpoint = codi_support::tiny_codi(root.path());
    let dataset = root.path().join("problems.json");
    thoughtscope::codi::problems::dataset::write_problems(&codi_support::problems()[..2], &dataset).unwrap();
    let out = root.path().join("next");
    let run = |step: &str, extra: &[&str]| {
        let mut args = vec!["codi", step, "--checkpoint", checkpoint.to_str().unwrap(), "--dataset", dataset.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--test-mode", "--html-only"]);
        args.extend(extra);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope")).args(&args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{step}: {text}");
        text
    };
    // Block 8 of LLaMA-3.2-1B moves to the same relative depth (block 2 of 4).
    let text = run("compose", &["--max-new-tokens", "2", "--importance", "logprob"]);
    assert!(text.contains("| T0+T1 | 2 | 2 |"), "{text}");
    let meta = std::fs::read_to_string(out.join("results/compositional_ablation_results_test.meta.json")).unwrap();
    assert!(meta.contains("\"layer\": 2"), "{meta}");
    run("routing", &["--heatmaps", "1"]);
    run("decompose", &["--lens-problems", "1"]);
    for file in [
        "results/compositional_ablation_results_test.json",
        "results/compositional_table_test.csv",
        "figures/compositional_pair_interaction.html",
        "results/question_to_thought_attention_test.json",
        "results/attention_by_token_type_test.md",
        "figures/question_to_thought_p1.html",
        "results/residual_decomposition_test.json",
        "results/direct_logit_attribution_test.md",
        "figures/logit_lens_p1.html",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

#[test]
fn cli_next_steps_take_shards_and_merge_them_into_the_whole_run() {
    let root = tempfile::tempdir().unwrap();
    let checkpoint = codi_support::tiny_codi(root.path());
    let dataset = root.path().join("problems.json");
    thoughtscope::codi::problems::dataset::write_problems(&codi_support::problems(), &dataset).unwrap();
    let run = |out: &Path, step: &str, extra: &[&str]| {
        let mut args = vec!["codi", step, "--checkpoint", checkpoint.to_str().unwrap(), "--dataset", dataset.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--test-mode", "--html-only"]);
        args.extend(extra);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
            .args(&args)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("SLURM_ARRAY_TASK_COUNT")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{step} {extra:?}: {text}");
        text
    };
    let (whole, sharded) = (root.path().join("whole"), root.path().join("sharded"));
    let steps: [(&str, &str, &[&str], &str); 3] = [
        ("compose", "compositional_ablation_results", &["--max-new-tokens", "2", "--importance", "logprob"], "compositional_table_test.csv"),
        ("routing", "question_to_thought_attention", &["--heatmaps", "1"], "attention_by_token_type_test.md"),
        ("decompose", "residual_decomposition", &["--lens-problems", "1"], "direct_logit_attribution_test.md"),
    ];
    for (step, stem, extra, table) in steps {
        let text = run(&whole, step, extra);
        assert!(text.contains("3 problems (3 computed now, 0 failed)"), "{step}: {text}");
        for shard in ["0/2", "1/2"] {
            let text = run(&sharded, step, &[extra, &["--shard", shard][..]].concat());
            assert!(text.contains(&format!("shard {shard}: ")), "{step}: {text}");
        }
        let results = format!("results/{stem}_test.json");
        assert!(!sharded.join(&results).exists() && !sharded.join("results").join(table).exists(), "{step}: a shard writes only its part");
        for part in ["shard-0-of-2", "shard-1-of-2"] {
            assert!(sharded.join(format!("results/{stem}_test.{part}.json")).is_file(), "{step} {part}");
        }
        // The unsharded step merges the parts, computing nothing, and analyses the whole.
        let text = run(&sharded, step, extra);
        assert!(text.contains("3 problems (0 computed now, 0 failed)"), "{step}: {text}");
        assert!(std::fs::read(whole.join(&results)).unwrap() == std::fs::read(sharded.join(&results)).unwrap(), "{step}: the merge differs");
        assert!(sharded.join("results").join(table).is_file(), "{step}: {table}");
    }
}
