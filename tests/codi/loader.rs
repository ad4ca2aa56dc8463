//! The CODI loader against PyTorch: `tests/fixtures/tiny-codi/` is a tiny checkpoint in the real
//! CODI layout written by PyTorch + PEFT (`scripts/make_fixtures.py`): bf16 base weights, f32
//! LoRA (r 8, alpha 2) and `prj`, three extra vocabulary rows, tied `lm_head`, as
//! `pytorch_model.bin` (zip/pickle, read without Python) and `model.safetensors`. Its
//! `reference.safetensors` holds the merged model's outputs for question + BOT in one pass (the
//! official layout), three latent steps fed through `prj`, and EOT. Both files must reproduce
//! them to 1e-5 (absolute + relative, as `torch.allclose`; latent-step logits to 5e-5).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use thoughtscope::codi::latent::checkpoint::{find_checkpoint, CheckpointFormat};
use thoughtscope::codi::{CodiWeights, LoadOptions};
use thoughtscope::model::{HookPoint, HookSet, Input, KvCache};
use thoughtscope::model::Settings;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-codi")
}

/// Largest `|a − b| / (1 + |b|)`: below 1e-5 means `allclose(a, b, atol=1e-5, rtol=1e-5)`. Logits
/// reach ~56 here, where f32 rounding alone moves them by ~1e-5.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

fn check(file: &Path, reference: &std::collections::HashMap<String, Tensor>) {
    let weights = CodiWeights::load(file, &LoadOptions::default(), &Settings::default()).unwrap();
    assert_eq!((weights.special.base_vocab, weights.special.bot, weights.special.eot), (256, 257, 258));
    assert_eq!(weights.lora_rank, Some(8));
    assert!(!weights.meta.real_codi);
    let model = &weights.model;
    let ids: Vec<u32> = reference["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    assert_eq!(*ids.last().unwrap(), weights.special.bot);

    // Question + BOT in one pass: logits, final-normed hidden states, attention patterns.
    let layers = model.num_layers();
    let mut hooks = HookSet::new();
    for l in 0..layers {
        hooks = hooks.capture(HookPoint::AttnPattern(l));
    }
    let mut cache = KvCache::new(model);
    let out = model.forward(Input::Ids(&ids), &mut cache, &mut hooks).unwrap();
    let name = file.display();
    assert!(max_diff(out.logits().unwrap(), &reference["logits"]) < 1e-5, "{name}: logits");
    assert!(max_diff(&out.hidden, &reference["final_hidden"]) < 1e-5, "{name}: final hidden");
    for l in 0..layers {
        let ours = hooks.captured(&HookPoint::AttnPattern(l)).unwrap();
        assert!(max_diff(ours, &reference["attentions"].get(l).unwrap()) < 1e-5, "{name}: attention layer {l}");
    }

    // Latent steps: z = prj(h_last) fed as an input embedding, three times, then EOT.
    let last = out.hidden.narrow(1, ids.len() - 1, 1).unwrap();
    let mut z = weights.projection.forward(&last).unwrap();
    assert!(max_diff(&z, &reference["projected"]) < 1e-5, "{name}: projection");
    for k in 0..3 {
        assert!(max_diff(&z, &reference["latents"].get(k).unwrap()) < 1e-5, "{name}: latent {k}");
        let mut hooks = HookSet::new();
        for l in 0..layers {
            hooks = hooks.capture(HookPoint::AttnPattern(l));
        }
        let step = model.forward(Input::Embeds(&z), &mut cache, &mut hooks).unwrap();
        assert!(max_diff(&step.hidden, &reference["latent_hidden"].get(k).unwrap()) < 1e-5, "{name}: latent hidden {k}");
        let dl = max_diff(step.logits().unwrap(), &reference["latent_logits"].get(k).unwrap());
        // Fed-back latents are far from token embeddings, so their logits are large; f32
        // rounding differences between PyTorch and candle reach 3e-5 of them (hidden states 4e-6).
        assert!(dl < 5e-5, "{name}: latent logits {k}");
        let patterns = reference[&format!("latent{}.attentions", k + 1)].clone();
        for l in 0..layers {
            let ours = hooks.captured(&HookPoint::AttnPattern(l)).unwrap();
            assert!(max_diff(ours, &patterns.get(l).unwrap()) < 1e-5, "{name}: latent {k} attention layer {l}");
        }
        z = weights.projection.forward(&step.hidden).unwrap();
    }
    assert!(max_diff(&z, &reference["latents"].get(3).unwrap()) < 1e-5, "{name}: latent 3");
    let eot = model.embed(&[weights.special.eot]).unwrap();
    let step = model.forward(Input::Embeds(&eot), &mut cache, &mut thoughtscope::model::NoHooks).unwrap();
    let eot_logits = step.logits().unwrap().squeeze(0).unwrap().squeeze(0).unwrap();
    assert_eq!(eot_logits.dim(D::Minus1).unwrap(), 259);
    assert!(max_diff(&eot_logits, &reference["eot_logits"]) < 1e-5, "{name}: EOT logits");
}

#[test]
fn tiny_codi_bin_and_safetensors_match_pytorch() {
    let dir = fixture();
    assert!(dir.join("reference.safetensors").is_file(), "committed fixture {} is missing", dir.display());
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    // test.py's order: model.safetensors first.
    assert_eq!(find_checkpoint(&dir).unwrap().1, CheckpointFormat::Safetensors);
    check(&dir.join("model.safetensors"), &reference);
    check(&dir.join("pytorch_model.bin"), &reference);
}

#[test]
fn wrong_checkpoints_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CodiWeights::load(&tmp.path().join("missing"), &LoadOptions::default(), &Settings::default()).unwrap_err();
    assert!(err.to_string().contains("no such CODI checkpoint"), "{err}");
    let err = CodiWeights::load(tmp.path(), &LoadOptions::default(), &Settings::default()).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    // A state dict that is not CODI's layout names an offending key.
    let dir = tmp.path().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("transformer.wte.weight".to_string(), t)].into_iter().collect(), dir.join("model.safetensors"))
        .unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).ok();
    let err = CodiWeights::load(&dir, &LoadOptions::default(), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("transformer.wte.weight") || err.contains("config.json"), "{err}");
}
