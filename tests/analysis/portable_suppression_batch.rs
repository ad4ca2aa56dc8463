//! `batch_sources` on the portable path (candle's matmul and the hook's per-row score mask, no
//! SIMD kernels), chosen for this model alone (`Model::set_kernels`).

use crate::support;

use thoughtscope::attention::SuppressionOptions;
use thoughtscope::model::Kernels;

#[test]
fn batched_sources_equal_one_at_a_time_on_the_portable_path() {
    let Some(loaded) = support::smollm2() else { return };
    let mut model = loaded.model.clone();
    model.set_kernels(Kernels { portable: true, ..model.kernels() });
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(support::fixture("suppression/smollm2.json")).unwrap()).unwrap();
    let ids: Vec<u32> = f["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let ranges: Vec<(usize, usize)> =
        f["ranges"].as_array().unwrap().iter().map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize)).collect();
    let full_vocab = SuppressionOptions { top_p: 1.0, max_tokens: usize::MAX, f16_logits: false, ..Default::default() };
    for (name, options) in [("faithful", SuppressionOptions::default()), ("full vocabulary", full_vocab)] {
        // 3 over 7 sources: full groups and a last group of one. The kernels' test also runs 1
        // again (determinism) and 4; on this slow path one batched run is enough.
        let differences = support::suppression_batch_differences(&model, &ids, &ranges, &options, &[3]);
        support::assert_batch_within_noise(&format!("portable, {name}"), name == "full vocabulary", &differences);
    }
}
