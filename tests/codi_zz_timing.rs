use candle_core::Device;
use thoughtscope::codi::*;
use thoughtscope::model::*;
#[test]
#[ignore]
fn dbg() {
    let dir = std::path::Path::new("tests/fixtures/tiny-codi");
    let w = CodiWeights::load(&dir.join("model.safetensors"), &LoadOptions::default(), &Device::Cpu).unwrap();
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    let out = w.model.forward(Input::Ids(&ids), &mut KvCache::new(&w.model), &mut NoHooks).unwrap();
    let d = (out.logits().unwrap().squeeze(0).unwrap() - &r["logits"]).unwrap().abs().unwrap().max(1).unwrap();
    eprintln!("per-pos max diff {:?}", d.to_vec1::<f32>().unwrap());
    let h = (out.hidden.squeeze(0).unwrap() - &r["final_hidden"]).unwrap().abs().unwrap().max(1).unwrap();
    eprintln!("hidden per-pos {:?}", h.to_vec1::<f32>().unwrap());
    let m = r["logits"].abs().unwrap().max_all().unwrap();
    eprintln!("max logit {m}");
}
