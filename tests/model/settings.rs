//! One settings value decides how a model is loaded and run: the weight precision and the kernels
//! chosen in `Settings` are the loaded model's. Nothing is set in the environment: the value
//! passed to the load is all there is.

use crate::support;

use thoughtscope::model::{Kernels, Model, Settings, WeightPrecision};

#[test]
fn the_weight_precision_and_kernels_of_the_settings_are_the_loaded_models() {
    let dir = support::fixture("tiny-qwen3-bf16");
    let spec = dir.to_str().unwrap();
    let stored = Model::load_without_tokenizer(spec, &Settings::default()).unwrap();
    assert!(stored.weight_memory().by_dtype.contains_key("bf16 (mapped)"), "default: as stored, {}", stored.weight_memory());
    assert_eq!(stored.kernels(), Kernels::default());

    let kernels = Kernels { portable: true, band_bytes: 1 << 16, phase_timing: false };
    let settings = Settings { weights: WeightPrecision::F32, kernels, ..Settings::default() };
    let converted = Model::load_without_tokenizer(spec, &settings).unwrap();
    let memory = converted.weight_memory();
    assert_eq!(memory.by_dtype.keys().collect::<Vec<_>>(), ["f32"], "f32 chosen in the settings: {memory}");
    assert_eq!(converted.kernels(), kernels);
}

/// A full load keeps the settings it was made with, for the analyses that follow it (the memory
/// check, the cache's strictness).
#[test]
fn a_loaded_model_carries_its_settings() {
    let dir = support::fixture("tiny-codi-base");
    let settings = Settings { weights: WeightPrecision::F32, memory_check: false, strict_cache: true, ..Settings::default() };
    let loaded = Model::load(dir.to_str().unwrap(), &settings).unwrap();
    assert_eq!(loaded.model.weight_memory().by_dtype.keys().collect::<Vec<_>>(), ["f32"], "{}", loaded.model.weight_memory());
    assert_eq!((loaded.settings.weights, loaded.settings.memory_check, loaded.settings.strict_cache), (WeightPrecision::F32, false, true));
}
