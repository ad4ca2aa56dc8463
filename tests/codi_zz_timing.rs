use candle_core::Device;
use thoughtscope::codi::*;

#[test]
#[ignore]
fn timing() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let input = root.join("../shared/data/codi/llama_cot_original_stratified_1000.json");
    let mut options = RunAllOptions::new(input, "/tmp/codi-smollm2".into(), "/tmp/codi-full8".into());
    options.per_level = Some([2, 2, 2, 2]);
    let report = run_all(&options, &Device::Cpu).unwrap();
    eprintln!("{:?} total {}", report.steps, report.total_s);
}
