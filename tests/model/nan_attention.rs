//! A NaN or an infinity in a query/key weight must stop the forward pass with the layer and the
//! head, on every attention path: the CPU kernels (with and without an attention sink, query
//! blocks and a few rows), the hooked path (candle's softmax), and the portable path. Before the
//! check, the softmax turned the non-finite scores into a flat row of probabilities and the
//! residual stream stayed finite, so `attn` cached uniform attention with exit 0.
//!
//! The portable path is the model's own choice (`Model::set_kernels`): nothing process-wide.

use crate::support;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use thoughtscope::attention::{FullAttentionCapture, SentenceAverager};
use thoughtscope::model::{self, HookPoint, HookSet, Input, Kernels, KvCache, Model, NoHooks, SinkHooks};
use thoughtscope::model::Settings;

/// The tiny Llama-3 fixture (4 query heads of 16 dimensions, 1 KV head, 2 layers) copied to
/// `dir` with `tensor[row, 0]` set to `value`.
fn corrupt_copy(dir: &Path, tensor: &str, row: usize, value: f32) {
    let fixture = support::repo().join("tests/fixtures/tiny-llama3");
    for file in ["config.json", "generation_config.json"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(fixture.join("model.safetensors"), &Device::Cpu).unwrap();
    let weight = &tensors[tensor];
    let (rows, cols) = weight.dims2().unwrap();
    let mut data = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    data[row * cols] = value;
    tensors.insert(tensor.to_owned(), Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 3 + (i * 37) % 500).collect()
}

/// Every path's error for `model` (on its own kernels, then on the portable path), by name.
fn errors(model: &Model) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let mut portable = model.clone();
    portable.set_kernels(Kernels { portable: true, ..model.kernels() });
    let run = |model: &Model, hooks: &mut dyn model::Hooks, n: usize| -> String {
        match model.forward(Input::Ids(&ids(n)), &mut KvCache::new(model), hooks) {
            Ok(_) => "no error".to_owned(),
            Err(e) => e.to_string(),
        }
    };
    let forward = |hooks: &mut dyn model::Hooks, n: usize| run(model, hooks, n);
    let forward_portable = |hooks: &mut dyn model::Hooks, n: usize| run(&portable, hooks, n);
    found.push(("kernels, query blocks", forward(&mut NoHooks, 40)));
    found.push(("kernels, a few rows", forward(&mut NoHooks, 5)));
    let mut capture = FullAttentionCapture::default();
    found.push(("kernels, full capture sink", forward(&mut SinkHooks(&mut capture), 40)));
    let mut averager = SentenceAverager::new(vec![(0, 10), (10, 25), (25, 40)], 2, 4);
    found.push(("kernels, per-head sentence sink", forward(&mut SinkHooks(&mut averager), 40)));
    let mut hooks = HookSet::new().capture(HookPoint::AttnPattern(0));
    found.push(("hooked (candle softmax)", forward(&mut hooks, 40)));
    found.push(("portable, query blocks", forward_portable(&mut NoHooks, 40)));
    found.push(("portable, a few rows", forward_portable(&mut NoHooks, 5)));
    let mut capture = FullAttentionCapture::default();
    found.push(("portable, capture sink", forward_portable(&mut SinkHooks(&mut capture), 40)));
    found
}

#[test]
fn a_non_finite_query_or_key_weight_fails_every_attention_path_naming_layer_and_head() {
    // The intact fixture runs every path.
    let fixture = support::repo().join("tests/fixtures/tiny-llama3");
    let model = Model::load_without_tokenizer(fixture.to_str().unwrap(), &Settings::default()).unwrap();
    for (path, error) in errors(&model) {
        assert_eq!(error, "no error", "intact fixture, {path}");
    }
    // q_proj row 2·16 + 5 feeds query head 2 only; k_proj feeds the one KV head, so every query
    // head of the layer, the first of them head 0.
    let cases = [
        ("model.layers.0.self_attn.q_proj.weight", 2 * 16 + 5, f32::NAN, "layer 0, head 2"),
        ("model.layers.1.self_attn.q_proj.weight", 2 * 16 + 5, f32::INFINITY, "layer 1, head 2"),
        ("model.layers.1.self_attn.k_proj.weight", 3, f32::NAN, "layer 1, head 0"),
    ];
    for (tensor, row, value, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        corrupt_copy(dir.path(), tensor, row, value);
        let model = Model::load_without_tokenizer(dir.path().to_str().unwrap(), &Settings::default()).unwrap();
        for (path, error) in errors(&model) {
            assert!(
                error.contains("non-finite attention scores") && error.contains(want),
                "{tensor}[{row}, 0] = {value}, {path}: want an error naming {want}, got: {error}"
            );
        }
    }
}

/// The same on a GPU (candle's softmax and matrix products there, the check on the row sums of
/// the probabilities). Runs only in a build with `--features cuda` on a machine with a CUDA device;
/// elsewhere it prints a hardware SKIP line.
#[test]
fn a_non_finite_query_weight_fails_on_a_gpu_too() {
    let device = match model::parse_device("cuda") {
        Ok(device) => device,
        Err(error) => {
            support::skip_hardware(format!("no CUDA device ({error})"));
            return;
        }
    };
    let settings = Settings { device, ..Settings::default() };
    let forward = |dir: &Path, hooks: &mut dyn model::Hooks| {
        let model = Model::load_without_tokenizer(dir.to_str().unwrap(), &settings).unwrap();
        match model.forward(Input::Ids(&ids(40)), &mut KvCache::new(&model), hooks) {
            Ok(_) => "no error".to_owned(),
            Err(e) => e.to_string(),
        }
    };
    let fixture = support::repo().join("tests/fixtures/tiny-llama3");
    assert_eq!(forward(&fixture, &mut NoHooks), "no error", "intact fixture on the GPU");
    let dir = tempfile::tempdir().unwrap();
    corrupt_copy(dir.path(), "model.layers.1.self_attn.q_proj.weight", 2 * 16 + 5, f32::NAN);
    for (path, hooks) in [("plain", &mut NoHooks as &mut dyn model::Hooks), ("hooked", &mut HookSet::new().capture(HookPoint::AttnPattern(1)))] {
        let error = forward(dir.path(), hooks);
        assert!(error.contains("non-finite attention scores") && error.contains("layer 1, head 2"), "GPU, {path}: {error}");
    }
}
