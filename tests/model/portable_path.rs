//! The portable path (`Kernels::portable` in the settings, `THOUGHTSCOPE_PORTABLE=1`: candle's
//! matmul and the scalar softmax/SiLU instead of the SIMD kernels) against HF transformers' eager
//! f32 outputs on the tiny Llama-3 and Qwen3 fixtures, and against the kernel path. The choice is
//! the model's own, so other tests running meanwhile keep theirs.

use crate::support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use thoughtscope::model::{HookPoint, HookSet, Input, Kernels, KvCache, Model};
use thoughtscope::model::Settings;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest `|a − b| − (atol + rtol·|b|)`: at most 0 means `allclose`.
fn excess(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() - (atol + rtol * y.abs())).fold(f32::NEG_INFINITY, f32::max)
}

/// Logits and every layer's attention pattern for the fixture's ids.
fn run(model: &Model, ids: &[u32]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let layers = model.num_layers();
    let mut hooks = HookSet::new();
    for l in 0..layers {
        hooks = hooks.capture(HookPoint::AttnPattern(l));
    }
    let out = model.forward(Input::Ids(ids), &mut KvCache::new(model), &mut hooks).unwrap();
    let patterns = (0..layers).map(|l| values(hooks.captured(&HookPoint::AttnPattern(l)).unwrap())).collect();
    (values(out.logits().unwrap()), patterns)
}

#[test]
fn portable_path_matches_hf_and_the_kernels() {
    for name in ["tiny-llama3", "tiny-qwen3"] {
        let dir = support::fixture(format!("{name}/config.json")).parent().unwrap().to_path_buf();
        let portable = Settings { kernels: Kernels { portable: true, ..Kernels::default() }, ..Settings::default() };
        let mut model = Model::load_without_tokenizer(dir.to_str().unwrap(), &portable).unwrap();
        let reference: HashMap<String, Tensor> =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<u32> = reference["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();

        assert!(model.kernels().portable, "the settings' kernels are the model's");
        let (logits, patterns) = run(&model, &ids);
        model.set_kernels(Kernels::default());
        let (kernel_logits, kernel_patterns) = run(&model, &ids);

        let e = excess(&logits, &values(&reference["logits"]), 1e-4, 1e-4);
        assert!(e <= 0.0, "{name}: portable logits off HF by {e}");
        for (l, p) in patterns.iter().enumerate() {
            let e = excess(p, &values(&reference["attentions"].get(l).unwrap()), 1e-5, 5e-5);
            assert!(e <= 0.0, "{name}: portable attention of layer {l} off HF by {e}");
            let e = excess(p, &kernel_patterns[l], 1e-5, 5e-5);
            assert!(e <= 0.0, "{name}: portable vs kernel attention of layer {l}: {e}");
        }
        let e = excess(&logits, &kernel_logits, 1e-4, 1e-4);
        assert!(e <= 0.0, "{name}: portable vs kernel logits: {e}");
    }
}
