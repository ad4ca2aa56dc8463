//! Decoder behaviour on small random models: query-block streaming equals the full attention,
//! KV-cached decoding equals one pass, embeddings input equals ids input, and interventions act
//! where they should.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thoughtscope::attention::FullAttentionCapture;
use thoughtscope::model::{Config, HookPoint, HookSet, Input, Intervention, KvCache, Model, NoHooks};

fn tiny_config(model_type: &str) -> Config {
    let json = format!(
        r#"{{"model_type":"{model_type}","vocab_size":97,"hidden_size":32,"intermediate_size":48,
        "num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":512,"tie_word_embeddings":true}}"#
    );
    serde_json::from_str(&json).unwrap()
}

fn random_model(cfg: &Config, seed: u64) -> Model {
    Model::from_tensors(cfg.clone(), random_tensors(cfg, seed), &Device::Cpu).unwrap()
}

fn random_tensors(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = HashMap::new();
    let mut add = |name: String, shape: &[usize], scale: f32, rng: &mut ChaCha8Rng| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect();
        t.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    };
    let (d, hd, h, kv, i) =
        (cfg.hidden_size, cfg.head_dim(), cfg.num_attention_heads, cfg.num_kv_heads(), cfg.intermediate_size);
    add("model.embed_tokens.weight".into(), &[cfg.vocab_size, d], 1.0, &mut rng);
    add("model.norm.weight".into(), &[d], 1.0, &mut rng);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.self_attn.q_proj.weight"), &[h * hd, d], 0.4, &mut rng);
        add(format!("{p}.self_attn.k_proj.weight"), &[kv * hd, d], 0.4, &mut rng);
        add(format!("{p}.self_attn.v_proj.weight"), &[kv * hd, d], 0.4, &mut rng);
        add(format!("{p}.self_attn.o_proj.weight"), &[d, h * hd], 0.2, &mut rng);
        add(format!("{p}.mlp.gate_proj.weight"), &[i, d], 0.3, &mut rng);
        add(format!("{p}.mlp.up_proj.weight"), &[i, d], 0.3, &mut rng);
        add(format!("{p}.mlp.down_proj.weight"), &[d, i], 0.3, &mut rng);
        add(format!("{p}.input_layernorm.weight"), &[d], 1.0, &mut rng);
        add(format!("{p}.post_attention_layernorm.weight"), &[d], 1.0, &mut rng);
        if cfg.model_type == "qwen3" {
            add(format!("{p}.self_attn.q_norm.weight"), &[hd], 1.0, &mut rng);
            add(format!("{p}.self_attn.k_norm.weight"), &[hd], 1.0, &mut rng);
        }
    }
    t
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 97).collect()
}

#[test]
fn streamed_blocks_equal_full_attention_pattern() {
    for arch in ["llama", "qwen3"] {
        let cfg = tiny_config(arch);
        let mut model = random_model(&cfg, 7);
        model.set_attention_block_rows(Some(5));
        let input = ids(23);
        let mut sink = FullAttentionCapture::new();
        let mut hooks = HookSet::new().with_sink(&mut sink);
        let streamed = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut hooks).unwrap();
        drop(hooks);
        assert_eq!(sink.blocks(), 3 * 5, "3 layers × ceil(23/5) blocks");
        assert_eq!((sink.heads(), sink.keys()), (4, 23));

        let mut full = HookSet::new();
        for l in 0..3 {
            full = full.capture(HookPoint::AttnPattern(l));
        }
        let reference = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut full).unwrap();
        for l in 0..3 {
            let p = full.captured(&HookPoint::AttnPattern(l)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in p.iter().zip(sink.layer(l).unwrap()) {
                assert!((a - b).abs() <= 1e-6, "{arch} layer {l}: {a} vs {b}");
            }
            // Causal: row q has zeros after q; rows sum to 1.
            for h in 0..4 {
                for q in 0..23 {
                    let row = &p[(h * 23 + q) * 23..(h * 23 + q + 1) * 23];
                    assert!(row[q + 1..].iter().all(|&x| x == 0.0));
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }
        let a = streamed.logits().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = reference.logits().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "{arch}: logits differ by {max_diff}");
    }
}

#[test]
fn kv_cached_decoding_equals_one_pass() {
    let model = random_model(&tiny_config("llama"), 3);
    let input = ids(12);
    let full = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut NoHooks).unwrap();
    let mut cache = KvCache::new(&model);
    model.forward(Input::Ids(&input[..7]), &mut cache, &mut NoHooks).unwrap();
    model.forward(Input::Ids(&input[7..11]), &mut cache, &mut NoHooks).unwrap();
    let last = model.forward(Input::Ids(&input[11..]), &mut cache, &mut NoHooks).unwrap();
    assert_eq!(cache.len(), 12);
    let a = full.logits().unwrap().narrow(1, 11, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = last.logits().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4);
    }
}

#[test]
fn embeddings_input_equals_ids_input() {
    let model = random_model(&tiny_config("qwen3"), 5);
    let input = ids(9);
    let a = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut NoHooks).unwrap();
    let emb = model.embed(&input).unwrap();
    let b = model.forward(Input::Embeds(&emb), &mut KvCache::new(&model), &mut NoHooks).unwrap();
    let diff = (a.hidden - b.hidden).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn zeroing_resid_post_changes_only_later_positions() {
    let model = random_model(&tiny_config("llama"), 11);
    let input = ids(10);
    let clean = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut NoHooks).unwrap();
    let mut hooks = HookSet::new().intervene(HookPoint::ResidPost(0), Intervention::Zero { positions: Some(vec![6]) });
    let patched = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut hooks).unwrap();
    let per_pos = (clean.hidden - patched.hidden).unwrap().abs().unwrap().max_keepdim(2).unwrap();
    let per_pos = per_pos.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(per_pos[..6].iter().all(|&d| d == 0.0), "{per_pos:?}");
    assert!(per_pos[6..].iter().all(|&d| d > 0.0), "{per_pos:?}");
}

#[test]
fn interventions_use_absolute_positions_with_a_cache() {
    let model = random_model(&tiny_config("llama"), 13);
    let input = ids(8);
    let zero_at_6 =
        || HookSet::new().intervene(HookPoint::ResidPost(1), Intervention::Zero { positions: Some(vec![6]) });
    let mut one_pass = zero_at_6();
    let full = model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut one_pass).unwrap();
    let mut cache = KvCache::new(&model);
    let mut split = zero_at_6();
    model.forward(Input::Ids(&input[..5]), &mut cache, &mut split).unwrap();
    let tail = model.forward(Input::Ids(&input[5..]), &mut cache, &mut split).unwrap();
    let a = full.hidden.narrow(1, 5, 3).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = tail.hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5);
    }
}

#[test]
fn key_knockout_gives_zero_probability() {
    let model = random_model(&tiny_config("qwen3"), 17);
    let input = ids(12);
    let mut hooks = HookSet::new()
        .intervene(HookPoint::AttnScores(1), Intervention::KnockoutKeys { ranges: vec![(2, 5)] })
        .capture(HookPoint::AttnPattern(1))
        .capture(HookPoint::AttnPattern(0));
    model.forward(Input::Ids(&input), &mut KvCache::new(&model), &mut hooks).unwrap();
    let p = hooks.captured(&HookPoint::AttnPattern(1)).unwrap().squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    for head in &p {
        for (q, row) in head.iter().enumerate() {
            for (k, &x) in row.iter().enumerate() {
                if (2..5).contains(&k) && q >= 5 {
                    assert_eq!(x, 0.0);
                }
            }
            if q >= 5 {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
    // Layer 0 was not knocked out.
    let p0 = hooks.captured(&HookPoint::AttnPattern(0)).unwrap().squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    assert!(p0[0][8][3] > 0.0);
}

#[test]
fn missing_tensor_is_named() {
    let cfg = tiny_config("llama");
    let err = Model::from_tensors(cfg, HashMap::new(), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.embed_tokens.weight"), "{err}");
}

#[test]
fn a_config_with_other_than_the_weights_layer_count_is_an_error() {
    for layers in [2, 4] {
        let mut cfg = tiny_config("llama");
        let tensors = random_tensors(&cfg, 1);
        cfg.num_hidden_layers = layers;
        let err = Model::from_tensors(cfg, tensors, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers") && err.contains("the weights hold 3"), "{err}");
    }
}

#[test]
fn non_finite_weights_stop_the_forward_pass_at_their_layer() {
    let cfg = tiny_config("llama");
    let mut tensors = random_tensors(&cfg, 1);
    let name = "model.layers.1.mlp.down_proj.weight";
    let w = tensors[name].clone();
    let mut values = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[5] = f32::NAN;
    tensors.insert(name.into(), Tensor::from_vec(values, w.shape(), &Device::Cpu).unwrap());
    let model = Model::from_tensors(cfg, tensors, &Device::Cpu).unwrap();
    for n in [3, 40] {
        let err = model.forward(Input::Ids(&ids(n)), &mut KvCache::new(&model), &mut NoHooks).unwrap_err().to_string();
        assert!(err.contains("blocks.1.hook_resid_post") && err.contains("non-finite"), "{err}");
    }
}

#[test]
fn context_overflow_is_a_clear_error() {
    let mut cfg = tiny_config("llama");
    cfg.max_position_embeddings = 8;
    let model = random_model(&cfg, 1);
    let err = model.forward(Input::Ids(&ids(9)), &mut KvCache::new(&model), &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
}

#[test]
fn min_new_tokens_holds_back_stop_tokens() {
    use thoughtscope::model::{generate, GenerateOptions};
    let model = random_model(&tiny_config("llama"), 3);
    let prompt = ids(5);
    let greedy = generate(&model, &prompt, &GenerateOptions { max_new_tokens: 1, ..Default::default() }).unwrap();
    let first = greedy.ids[0];
    // The greedy first token as a stop token ends generation at once...
    let stop = vec![first];
    let stopped = generate(&model, &prompt, &GenerateOptions { max_new_tokens: 8, stop: stop.clone(), ..Default::default() })
        .unwrap();
    assert_eq!((stopped.ids.clone(), stopped.stopped), (vec![first], true));
    // ...unless it is held back for the first 4 tokens.
    let held = GenerateOptions { max_new_tokens: 8, min_new_tokens: 4, stop, ..Default::default() };
    let out = generate(&model, &prompt, &held).unwrap();
    assert!(out.ids.len() >= 4, "{:?}", out.ids);
    assert!(!out.ids[..4].contains(&first), "{:?}", out.ids);
}

/// A discarding cache (one pass, keys and values dropped per layer) computes the same pass and
/// refuses to be continued.
#[test]
fn a_discarding_cache_gives_the_same_pass_and_cannot_continue() {
    let cfg = tiny_config("qwen3");
    let model = random_model(&cfg, 11);
    let ids = [3u32, 14, 15, 92, 65, 35];
    let kept = model.forward(Input::Ids(&ids), &mut KvCache::new(&model), &mut NoHooks).unwrap();
    let mut discarding = KvCache::discarding(&model);
    let dropped = model.forward(Input::Ids(&ids), &mut discarding, &mut NoHooks).unwrap();
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(bits(kept.logits().unwrap()), bits(dropped.logits().unwrap()));
    let err = model.forward(Input::Ids(&ids[..1]), &mut discarding, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("cannot be continued"), "{err}");
}
