//! The CODI pipeline end to end on a tiny random Llama turned CODI-shaped by `make_model`:
//! checkpoint key layout, LoRA merge and projection, both latent loops' positions, ablation hook
//! semantics (faithful vs corrected), resumable outputs, attention key slices, and the analysis
//! schema. Runs in seconds on CPU with no external files.

use crate::codi_support;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use thoughtscope::codi::seed::ablation::read_ablation;
use thoughtscope::codi::{ablate_problem, analyze, run_ablation, AblationMode, AblationOptions, AnalyzeOptions, ImportanceKind};
use thoughtscope::codi::{attention_for_problem, run_attention, AttentionOptions, KeySelection};
use thoughtscope::codi::{run_to_eot, CodiModel, LoadOptions, LoopMode, LoopOptions};
use thoughtscope::model::{Config, Input, KvCache, Model, NoHooks};
use thoughtscope::model::Settings;

fn load(dir: &std::path::Path) -> CodiModel {
    CodiModel::load(dir, &LoadOptions::default(), &Settings::default()).unwrap()
}

fn short_loop(mode: LoopMode) -> LoopOptions {
    let mut o = LoopOptions::for_mode(mode);
    o.max_new_tokens = 4;
    o
}

#[test]
fn checkpoint_has_codi_layout_and_loader_merges_lora() {
    let root = tempfile::tempdir().unwrap();
    let dir = codi_support::tiny_codi(root.path());
    let raw = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let p = "codi.base_model.model.model.layers.0.self_attn.q_proj";
    assert_eq!(raw[&format!("{p}.lora_A.default.weight")].dims(), &[4, 32]);
    assert_eq!(raw[&format!("{p}.lora_B.default.weight")].dims(), &[32, 4]);
    assert!(raw.contains_key(&format!("{p}.base_layer.weight")));
    assert!(raw.contains_key("codi.base_model.model.model.layers.3.mlp.down_proj.lora_B.default.weight"));
    assert!(raw.contains_key("codi.base_model.model.model.layers.3.input_layernorm.weight"));
    for k in ["prj.1.weight", "prj.1.bias", "prj.3.weight", "prj.3.bias", "prj.ln.weight", "prj.ln.bias"] {
        assert!(raw.contains_key(k), "{k}");
    }
    let v0 = codi_support::vocab().len();
    assert_eq!(raw["codi.base_model.model.model.embed_tokens.weight"].dims(), &[v0 + 3, 32]);

    let codi = load(&dir);
    assert_eq!((codi.special.pad, codi.special.bot, codi.special.eot), (v0 as u32, v0 as u32 + 1, v0 as u32 + 2));
    assert_eq!(codi.lora_rank, Some(4));
    assert!(!codi.meta.real_codi && codi.provenance_note().unwrap().contains("NOT A CODI MODEL"));

    // Reference: merge by hand (W + alpha/r · B·A, alpha 8, r 4) and build the plain model.
    let mut merged: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in &raw {
        let Some(inner) = k.strip_prefix("codi.base_model.model.") else { continue };
        if inner.contains(".lora_") {
            continue;
        }
        let name = inner.replace(".base_layer.", ".");
        let mut w = t.to_dtype(DType::F32).unwrap();
        if let Some(module) = inner.strip_suffix(".base_layer.weight") {
            let a = &raw[&format!("codi.base_model.model.{module}.lora_A.default.weight")];
            let b = &raw[&format!("codi.base_model.model.{module}.lora_B.default.weight")];
            w = (w + (b.matmul(a).unwrap() * 2.0).unwrap()).unwrap();
        }
        merged.insert(name, w);
    }
    let mut config = Config::from_json_file(&dir.join("config.json")).unwrap();
    config.vocab_size = v0 + 3;
    let reference = Model::from_tensors(config, merged, &Device::Cpu).unwrap();
    let ids = [2u32, 3, 4, 5, 30, 40];
    let ours = codi.model.forward(Input::Ids(&ids), &mut KvCache::new(&codi.model), &mut NoHooks).unwrap();
    let theirs = reference.forward(Input::Ids(&ids), &mut KvCache::new(&reference), &mut NoHooks).unwrap();
    let diff = (ours.logits().unwrap() - theirs.logits().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    // LoRA really changed the model (B is not zero as PEFT would start it).
    let base = Model::from_tensors(
        Config::from_json_file(&root.path().join("base/config.json")).unwrap(),
        candle_core::safetensors::load(root.path().join("base/model.safetensors"), &Device::Cpu).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let plain = base.forward(Input::Ids(&ids), &mut KvCache::new(&base), &mut NoHooks).unwrap();
    let ours_base = ours.logits().unwrap().narrow(D::Minus1, 0, v0).unwrap();
    let moved = (ours_base - plain.logits().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(moved.to_scalar::<f32>().unwrap() > 1e-4);

    // Projection = LN(W3 · gelu_erf(W1 h + b1) + b3), eps 1e-5, checked in f64 by hand.
    let h: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let z = codi
        .projection
        .forward(&Tensor::from_vec(h.clone(), (1, 1, 32), &Device::Cpu).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let get = |k: &str| raw[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (w1, b1, w3, b3, g, beta) =
        (get("prj.1.weight"), get("prj.1.bias"), get("prj.3.weight"), get("prj.3.bias"), get("prj.ln.weight"), get("prj.ln.bias"));
    let erf = |x: f64| statrs::function::erf::erf(x);
    let a: Vec<f64> = (0..32)
        .map(|o| {
            let s = b1[o] as f64 + (0..32).map(|i| w1[o * 32 + i] as f64 * h[i] as f64).sum::<f64>();
            0.5 * s * (1.0 + erf(s / std::f64::consts::SQRT_2))
        })
        .collect();
    let y: Vec<f64> = (0..32).map(|o| b3[o] as f64 + (0..32).map(|i| w3[o * 32 + i] as f64 * a[i]).sum::<f64>()).collect();
    let mean = y.iter().sum::<f64>() / 32.0;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 32.0;
    for o in 0..32 {
        let expect = g[o] as f64 * (y[o] - mean) / (var + 1e-5).sqrt() + beta[o] as f64;
        assert!((z[o] as f64 - expect).abs() < 1e-4, "prj[{o}]: {} vs {expect}", z[o]);
    }
}

#[test]
fn loops_place_bot_latents_and_eot_as_upstream() {
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let q = "How many apples does Tom have ?";
    let l = codi.tokenizer.encode(q).unwrap().len();
    let official = run_to_eot(&codi, q, &short_loop(LoopMode::Official), &mut NoHooks).unwrap();
    assert_eq!(official.cache.len(), l + 8); // Q, BOT, z1..z6, EOT
    assert_eq!(official.layout.eot_position(), l + 7);
    assert_eq!(official.layout.step_positions(), (l + 1..l + 7).collect::<Vec<_>>());
    let cotx = run_to_eot(&codi, q, &short_loop(LoopMode::Cotx), &mut NoHooks).unwrap();
    assert_eq!(cotx.cache.len(), l + 7); // Q, BOT, z1..z5, EOT
    assert_eq!(cotx.layout.eot_position(), l + 6);
    assert_eq!(cotx.layout.step_positions(), (l..l + 6).collect::<Vec<_>>());
    // The faithful attention slice ends on EOT itself in the cotx loop (`2_extract_attention.py`).
    assert_eq!(*cotx.layout.faithful_attention_keys().last().unwrap(), cotx.layout.eot_position());
    // Decoding excludes only EOT: the logit slice is V0 + 2 wide.
    assert_eq!(cotx.eot_logits.dims(), &[codi.special.base_vocab as usize + 2]);
}

#[test]
fn faithful_hook_semantics() {
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let problem = &codi_support::problems()[0];
    let mut options = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Corrected);
    options.layer = 1;
    let corrected = ablate_problem(&codi, problem, &options).unwrap();
    assert_eq!(corrected.token_ablations.len(), 6);
    assert_eq!(corrected.importance_scores.len(), 6);

    // Without both bugs, the faithful hook only differs from the corrected one after the target
    // step (it forces later steps back to the clean trajectory); at the last token they agree.
    options.mode = AblationMode::Faithful;
    options.layer_off_by_one = false;
    options.patch_prompt = false;
    let no_bugs = ablate_problem(&codi, problem, &options).unwrap();
    let lp = |r: &thoughtscope::codi::AblationRecord, k: usize| r.token_ablations[k].gold_logprob.unwrap();
    assert!((lp(&no_bugs, 5) - lp(&corrected, 5)).abs() < 1e-4, "{} vs {}", lp(&no_bugs, 5), lp(&corrected, 5));
    assert_eq!(no_bugs.baseline, corrected.baseline);

    // Bug 1 (clean vectors = block input) deletes block `layer`'s update at the other steps.
    options.layer_off_by_one = true;
    let bug1 = ablate_problem(&codi, problem, &options).unwrap();
    assert!((lp(&bug1, 5) - lp(&corrected, 5)).abs() > 1e-6);
    // Bug 2 also overwrites the last question token during the question pass.
    options.patch_prompt = true;
    let bug12 = ablate_problem(&codi, problem, &options).unwrap();
    assert!((lp(&bug12, 3) - lp(&bug1, 3)).abs() > 1e-6);
    // Continuous importance = baseline minus ablated gold log-prob.
    let t = &bug12.token_ablations[2];
    let expect = bug12.baseline.as_ref().unwrap().gold_logprob.unwrap() - t.gold_logprob.unwrap();
    assert!((t.logprob_importance.unwrap() - expect).abs() < 1e-12);

    options.layer = 99;
    assert!(ablate_problem(&codi, problem, &options).unwrap_err().to_string().contains("4 blocks"));
}

#[test]
fn ablation_and_attention_resume_and_analysis_writes_upstream_schema() {
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let problems = codi_support::problems();
    let out = root.path().join("results");
    let mut options = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Faithful);
    options.layer = 2;
    let ablation_path = out.join("token_ablation_results_test.json");

    // First two problems, then all three: the rerun computes only the new one.
    let first = run_ablation(&codi, &problems[..2], &options, &ablation_path).unwrap();
    assert_eq!((first.computed, first.records.len()), (2, 2));
    let second = run_ablation(&codi, &problems, &options, &ablation_path).unwrap();
    assert_eq!((second.computed, second.records.len()), (1, 3));
    // Reused, not recomputed (serde_json float_roundtrip: the values read back are the ones written).
    for (a, b) in second.records[..2].iter().zip(&first.records) {
        assert_eq!((&a.problem_id, &a.importance_scores), (&b.problem_id, &b.importance_scores));
        assert_eq!(a.baseline.as_ref().unwrap().output, b.baseline.as_ref().unwrap().output);
    }
    let on_disk = read_ablation(&ablation_path).unwrap();
    assert_eq!(on_disk.iter().map(|r| r.problem_id.as_str()).collect::<Vec<_>>(), ["p1", "p2", "p3"]);
    // Other settings on the same file are refused, naming the field.
    let mut other = options.clone();
    other.layer = 3;
    let err = run_ablation(&codi, &problems, &other, &ablation_path).unwrap_err().to_string();
    assert!(err.contains("settings.layer"), "{err}");

    // Upstream's JSON field names.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ablation_path).unwrap()).unwrap();
    let rec = &json[0];
    for key in ["problem_id", "difficulty", "expected_answer", "baseline", "token_ablations", "importance_scores", "num_critical_tokens"] {
        assert!(rec.get(key).is_some(), "{key}");
    }
    for key in ["output", "predicted_answer", "correct"] {
        assert!(rec["baseline"].get(key).is_some(), "baseline.{key}");
    }
    for key in ["token_pos", "ablated_output", "predicted_answer", "still_correct", "importance"] {
        assert!(rec["token_ablations"][0].get(key).is_some(), "token_ablations.{key}");
    }

    // Attention: layers beyond the model are an error; faithful keys end on EOT.
    let mut attention_options = AttentionOptions {
        loop_options: short_loop(LoopMode::Cotx),
        layers: vec![1, 2, 14],
        keys: KeySelection::Faithful,
        full_row: true,
    };
    let err = attention_for_problem(&codi, &problems[0], &attention_options).unwrap_err().to_string();
    assert!(err.contains("[14]") && err.contains("4 blocks"), "{err}");
    attention_options.layers = vec![1, 3];
    let attention_path = out.join("attention_weights_test.json");
    let attention = run_attention(&codi, &problems, &attention_options, &attention_path).unwrap().records;
    let a = &attention[0];
    let keys = a.key_positions.as_ref().unwrap();
    assert_eq!(keys.last(), a.query_position.as_ref());
    let layer = a.attention_by_layer.as_ref().unwrap().get("layer_3").unwrap();
    assert_eq!(layer.continuous_token_attention.len(), 6);
    let full = layer.full_row.as_ref().unwrap();
    assert_eq!(full.len(), a.query_position.unwrap() + 1);
    assert!((full.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    for (k, &pos) in keys.iter().enumerate() {
        assert!((layer.continuous_token_attention[k] - full[pos]).abs() < 1e-7);
    }
    assert!((layer.total_attention_to_continuous - layer.continuous_token_attention.iter().sum::<f64>()).abs() < 1e-12);
    // Corrected keys are the ablation's positions.
    let corrected = attention_for_problem(
        &codi,
        &problems[0],
        &AttentionOptions { keys: KeySelection::Corrected, ..attention_options.clone() },
    )
    .unwrap();
    assert_eq!(corrected.key_positions.as_ref().unwrap()[0] + 1, keys[0]);

    // Analysis: the tiny random model's baselines are wrong, so the rule (auto) falls back to the
    // log-prob importance and says so.
    let layout = thoughtscope::codi::ExperimentLayout::seed(root.path(), true);
    assert_eq!((layout.ablation(), layout.attention()), (ablation_path.clone(), attention_path.clone()));
    let options = AnalyzeOptions {
        static_images: thoughtscope::plot::static_export_available(),
        title_note: " (test)".into(),
        ..AnalyzeOptions::default()
    };
    let analysis = analyze(&layout, &options).unwrap();
    assert_eq!(analysis.importance, ImportanceKind::Logprob);
    assert!(analysis.notes.iter().any(|n| n.contains("no baseline")), "{:?}", analysis.notes);
    assert_eq!(analysis.joined.rows.len(), 18);
    let analysis_dir = layout.figures_dir();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layout.summary()).unwrap()).unwrap();
    let overall: Vec<&String> = summary["overall_correlation"].as_object().unwrap().keys().collect();
    assert_eq!(overall.len(), 2);
    assert!(summary["overall_correlation"]["layer_3"].get("r").is_some());
    for key in ["importance_mean", "importance_std", "attention_mean", "attention_std", "correlation", "p_value"] {
        assert!(summary["per_token"]["token_5"].get(key).is_some(), "{key}");
    }
    assert_eq!(summary["by_difficulty"]["2-step"]["num_problems"], 2);
    for name in ["1_importance_by_position", "2_importance_heatmap", "3_attention_vs_importance", "4_correlation_by_position"] {
        assert!(analysis_dir.join(format!("{name}.html")).is_file(), "{name}");
        if options.static_images {
            assert!(analysis_dir.join(format!("{name}.png")).is_file(), "{name}.png");
            assert!(analysis_dir.join(format!("{name}.svg")).is_file(), "{name}.svg");
            assert!(analysis_dir.join(format!("{name}.pdf")).is_file(), "{name}.pdf");
        }
    }
    assert!(root.path().join("index.html").is_file());
    // Binary importance asked for with no correct baseline: a clear error, not an empty table.
    let binary = AnalyzeOptions { importance: thoughtscope::codi::ImportanceRule::Binary, static_images: false, ..AnalyzeOptions::default() };
    let err = analyze(&layout, &binary).unwrap_err().to_string();
    assert!(err.contains("nothing to analyse"), "{err}");
}

#[test]
fn batched_decoding_equals_run_by_run_decoding() {
    use thoughtscope::codi::{decode_greedy, decode_greedy_batch, run_from_prompt, run_prompt, PromptState};
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let question = &codi_support::problems()[0].question;
    for max_new_tokens in [0, 1, 12] {
        let mut options = short_loop(LoopMode::Official);
        options.max_new_tokens = max_new_tokens;
        // Seven runs of one question whose first latent differs (as ablated runs do): equal
        // cache lengths, different trajectories, answers that stop at different steps.
        let prompt = run_prompt(&codi, question, &options, &mut NoHooks).unwrap();
        let states: Vec<_> = (0..7)
            .map(|i| {
                let next_input = (prompt.next_input.clone() * (1.0 - 0.3 * i as f64)).unwrap();
                let run = PromptState { next_input, ..prompt.clone() };
                run_from_prompt(&codi, run, &options, &mut NoHooks).unwrap()
            })
            .collect();
        let one_by_one: Vec<_> =
            states.iter().map(|s| decode_greedy(&codi, s.clone(), &options, &mut NoHooks).unwrap()).collect();
        let batched = decode_greedy_batch(&codi, states, &options).unwrap();
        assert_eq!(batched.len(), 7);
        for (b, o) in batched.iter().zip(&one_by_one) {
            assert_eq!(b.tokens, o.tokens, "max_new_tokens {max_new_tokens}");
            assert_eq!(b.text, o.text);
            assert!(b.tokens.len() <= max_new_tokens);
        }
    }
}

#[test]
fn kv_caches_of_different_lengths_do_not_stack() {
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let short = run_to_eot(&codi, "How many apples ?", &short_loop(LoopMode::Cotx), &mut NoHooks).unwrap();
    let long = run_to_eot(&codi, "How many apples does Tom have ?", &short_loop(LoopMode::Cotx), &mut NoHooks).unwrap();
    let err = KvCache::stack(&[&short.cache, &long.cache]).unwrap_err().to_string();
    assert!(err.contains("one length"), "{err}");
    // A batch-2 cache refuses a batch-1 input.
    let mut both = KvCache::stack(&[&short.cache, &short.cache]).unwrap();
    let err = codi.model.forward(Input::Ids(&[1]), &mut both, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("2 sequences"), "{err}");
    assert_eq!(both.select_rows(&[1]).unwrap().len(), short.cache.len());
}

#[test]
fn sharded_steps_merge_to_the_single_run_byte_for_byte() {
    // Every step goes through one runner: the seed's ablation and attention (indented JSON) and a
    // next step, routing (compact JSON), shard and merge alike.
    use thoughtscope::codi::next::routing::{run_routing, RoutingOptions, RoutingRecord};
    use thoughtscope::codi::runner::files::JsonStyle;
    use thoughtscope::codi::runner::step::{for_shard, run_step, Step};
    use thoughtscope::io::shard::Shard;
    let root = tempfile::tempdir().unwrap();
    let codi = load(&codi_support::tiny_codi(root.path()));
    let problems = codi_support::problems();
    let mut options = AblationOptions::new(short_loop(LoopMode::Cotx), AblationMode::Faithful);
    options.layer = 2;
    options.continuous = true;
    let attention_options = AttentionOptions {
        loop_options: short_loop(LoopMode::Cotx),
        layers: vec![1, 3],
        keys: KeySelection::Faithful,
        full_row: true,
    };
    let routing_options = RoutingOptions { loop_options: short_loop(LoopMode::Cotx), layers: vec![0, 2], head_layers: vec![2] };
    let single = root.path().join("single");
    run_ablation(&codi, &problems, &options, &single.join("ablation.json")).unwrap();
    run_attention(&codi, &problems, &attention_options, &single.join("attention.json")).unwrap();
    run_routing(&codi, &problems, &routing_options, &single.join("routing.json")).unwrap();

    // Two array tasks write their parts; the unsharded step computes nothing and merges them.
    let sharded = root.path().join("sharded");
    let (ablation, attention, routing) = (sharded.join("ablation.json"), sharded.join("attention.json"), sharded.join("routing.json"));
    let mut owned = 0;
    for index in 0..2 {
        let shard = Shard::new(index, 2).unwrap();
        let (mine, part) = for_shard(&problems, &ablation, shard);
        owned += mine.len();
        run_ablation(&codi, &mine, &options, &part).unwrap();
        run_attention(&codi, &mine, &attention_options, &for_shard(&problems, &attention, shard).1).unwrap();
        run_routing(&codi, &mine, &routing_options, &for_shard(&problems, &routing, shard).1).unwrap();
    }
    assert_eq!(owned, problems.len(), "every problem in exactly one shard");
    let merged = run_ablation(&codi, &problems, &options, &ablation).unwrap();
    assert_eq!(merged.computed, 0, "the merge reads the parts, it runs nothing");
    run_attention(&codi, &problems, &attention_options, &attention).unwrap();
    // Routing's merge through the runner itself, with a computation that must not run.
    let step = Step { name: "routing", settings: serde_json::to_value(&routing_options).unwrap(), style: JsonStyle::Compact };
    let merged = run_step(&codi, &step, &problems, &routing, |p| -> thoughtscope::Result<RoutingRecord> {
        panic!("{} was computed again", p.id)
    })
    .unwrap();
    assert_eq!((merged.computed, merged.records.len()), (0, problems.len()));
    for name in ["ablation.json", "attention.json", "routing.json"] {
        let (a, b) = (std::fs::read(single.join(name)).unwrap(), std::fs::read(sharded.join(name)).unwrap());
        assert!(a == b, "{name}: the merge differs from the single run");
    }
}
