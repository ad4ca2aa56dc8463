//! Weights kept at their stored precision (GGUF blocks, bf16/f16 safetensors) give the
//! same numbers, bit for bit, as converting every weight to f32 at load; they take what the file
//! takes; unsupported GGUF types and models that cannot fit are named errors.

use crate::support;

use std::collections::HashMap;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use thoughtscope::model::weights::load_gguf_with;
use thoughtscope::model::{memory, HookPoint, HookSet, Input, KvCache, Model, WeightPrecision};
use thoughtscope::model::Settings;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// Logits, every layer's attention pattern, then one decode step (the few-rows kernels) on top of
/// the cache: all as bits.
fn run(model: &Model, ids: &[u32]) -> Vec<Vec<u32>> {
    let mut hooks = HookSet::new();
    for l in 0..model.num_layers() {
        hooks = hooks.capture(HookPoint::AttnPattern(l));
    }
    let mut cache = KvCache::new(model);
    let out = model.forward(Input::Ids(ids), &mut cache, &mut hooks).unwrap();
    let mut all = vec![bits(out.logits().unwrap()), bits(&out.hidden)];
    for l in 0..model.num_layers() {
        all.push(bits(hooks.captured(&HookPoint::AttnPattern(l)).unwrap()));
    }
    let step = model.forward(Input::Ids(&ids[..1]), &mut cache, &mut thoughtscope::model::NoHooks).unwrap();
    all.push(bits(step.logits().unwrap()));
    all
}

#[test]
fn smollm2_gguf_kept_quantised_equals_dequantised_at_load() {
    let Some(reference) = support::smollm2() else { return };
    let stored = Model::load("smollm2-135m", &Settings { weights: WeightPrecision::Stored, ..Settings::default() }).unwrap();
    let f32 = Model::load("smollm2-135m", &Settings { weights: WeightPrecision::F32, ..Settings::default() }).unwrap();
    let ids = stored.tokenizer.encode("Let me check: 17 times 3 is 51, so the answer is 51. Wait, is that right?").unwrap();
    assert!(ids.len() > 20);
    assert_eq!(run(&stored.model, &ids), run(&f32.model, &ids), "kept Q4_1 vs f32 at load");
    // `support::smollm2` loads at the default precision, which is `stored`.
    assert_eq!(reference.model.weight_memory(), stored.model.weight_memory());

    let (kept, converted) = (stored.model.weight_memory(), f32.model.weight_memory());
    assert!(kept.by_dtype.contains_key("q4_1"), "{kept}");
    assert_eq!(converted.by_dtype.keys().collect::<Vec<_>>(), ["f32"], "{converted}");
    // 135M weights: 540 MB in f32, about a sixth of that as Q4_1 (with Q8_0/Q6_K where the file has them).
    assert!(converted.total_bytes() > 500 << 20 && kept.total_bytes() < converted.total_bytes() / 4, "{kept} vs {converted}");
    let path = std::path::Path::new(&stored.source);
    let expected = memory::expected_weight_bytes(path, WeightPrecision::Stored).unwrap();
    assert_eq!(expected, kept.total_bytes() as u64, "header estimate vs what was kept");
    assert_eq!(memory::expected_weight_bytes(path, WeightPrecision::F32).unwrap(), converted.total_bytes() as u64);
    assert_eq!(
        stored.model.embedding_matrix().unwrap().to_vec2::<f32>().unwrap(),
        f32.model.embedding_matrix().unwrap().to_vec2::<f32>().unwrap()
    );
}

#[test]
fn tiny_half_checkpoints_equal_the_f32_path_and_hf() {
    for (name, dtype) in [("tiny-qwen3-bf16", "bf16"), ("tiny-llama3-f16", "f16")] {
        let dir = support::fixture(name);
        let stored = Model::load(dir.to_str().unwrap(), &Settings { weights: WeightPrecision::Stored, ..Settings::default() });
        // No tokenizer in the tiny directories: build from the checkpoint as the loader does.
        let stored = stored.map(|l| l.model).or_else(|_| Model::load_without_tokenizer(dir.to_str().unwrap(), &Settings::default())).unwrap();
        let checkpoint = thoughtscope::model::weights::load_hf_dir(&dir).unwrap();
        let f32 = Model::from_weights(
            checkpoint.config,
            checkpoint.tensors,
            HashMap::new(),
            WeightPrecision::F32,
            &Device::Cpu,
        )
        .unwrap();
        // Memory-mapped from the file, not read.
        let memory = stored.weight_memory();
        assert!(memory.by_dtype.contains_key(&format!("{dtype} (mapped)")), "{name}: {memory}");
        assert_eq!(memory.total_bytes() as u64, memory::expected_weight_bytes(&dir, WeightPrecision::Stored).unwrap());
        let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<u32> = reference["input_ids"].to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
        assert_eq!(run(&stored, &ids), run(&f32, &ids), "{name}: kept {dtype} vs f32 at load");
        // Read into memory in their dtype (Model::from_tensors) instead of mapped: the same numbers.
        let read = thoughtscope::model::weights::load_hf_dir(&dir).unwrap();
        let read = Model::from_tensors(read.config, read.tensors, &Device::Cpu).unwrap();
        assert!(read.weight_memory().by_dtype.contains_key(dtype), "{name}: {}", read.weight_memory());
        assert_eq!(run(&read, &ids), run(&f32, &ids), "{name}: {dtype} read vs f32 at load");
        // HF eager on the same checkpoint upcast to f32 at load.
        let out = stored.forward(Input::Ids(&ids), &mut KvCache::new(&stored), &mut thoughtscope::model::NoHooks).unwrap();
        let got = out.logits().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = reference["logits"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / (1e-4 + 1e-4 * b.abs())).fold(0f32, f32::max);
        assert!(worst <= 1.0, "{name}: logits differ from HF by {worst} × (1e-4 + 1e-4·|ref|)");
    }
}

/// A GGUF (written here from SmolLM2's) with one matrix in a type that is not kept quantised.
#[test]
fn unsupported_gguf_type_is_named() {
    let Some(loaded) = support::smollm2() else { return };
    let source = std::path::PathBuf::from(&loaded.source);
    let mut reader = std::io::BufReader::new(std::fs::File::open(&source).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut reader, name, &Device::Cpu).unwrap();
        let q = if name == "blk.0.ffn_up.weight" {
            QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_1).unwrap()
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q8_1.gguf");
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &metadata, &tensor_refs).unwrap();

    let err = load_gguf_with(&path, WeightPrecision::Stored).err().expect("q8_1 refused").to_string();
    for part in ["q8_1.gguf", "blk.0.ffn_up.weight", "q8_1", "q4_k", "--weights f32"] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    // candle cannot convert Q8_1 either: converting at load fails too, naming the tensor.
    let err = load_gguf_with(&path, WeightPrecision::F32).err().expect("q8_1 refused").to_string();
    assert!(err.contains("q8_1.gguf") && err.contains("blk.0.ffn_up.weight"), "{err}");
}

#[test]
fn a_model_larger_than_available_memory_is_refused_before_loading() {
    let available = memory::available_memory().expect("/proc/meminfo");
    // A safetensors header promising more bf16 weights than the machine has, and no data: the
    // check must answer from the header alone.
    let dir = tempfile::tempdir().unwrap();
    let elements = available; // 2 bytes each: twice the memory available
    let header = format!(
        r#"{{"model.embed_tokens.weight":{{"dtype":"BF16","shape":[{elements},1],"data_offsets":[0,{}]}}}}"#,
        elements * 2
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    std::fs::copy(support::fixture("tiny-qwen3/config.json"), dir.path().join("config.json")).unwrap();
    let err = Model::load(dir.path().to_str().unwrap(), &Settings { weights: WeightPrecision::Stored, ..Settings::default() }).err().unwrap().to_string();
    assert!(err.contains("GiB of memory is available") && err.contains(&dir.path().display().to_string()), "{err}");
    assert!(memory::expected_weight_bytes(dir.path(), WeightPrecision::F32).unwrap() == elements * 4);
}

/// A bf16 matrix whose `data_offsets` reach past the file is an error naming the file, the tensor
/// and the field before anything is mapped as weights.
#[test]
fn a_mapped_matrix_outside_its_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"model.embed_tokens.weight":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,32]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    std::fs::copy(support::fixture("tiny-qwen3/config.json"), dir.path().join("config.json")).unwrap();
    let err = thoughtscope::model::weights::load_hf_dir_with(dir.path(), WeightPrecision::Stored).err().unwrap().to_string();
    for part in ["model.safetensors", "model.embed_tokens.weight", "data_offsets"] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
}
