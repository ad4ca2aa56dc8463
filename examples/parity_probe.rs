use candle_core::{DType, Device};
use thoughtscope::model::{HookPoint, HookSet, Input, KvCache, Model};
fn main() {
    let loaded = Model::load("smollm2-135m", &Device::Cpu).unwrap();
    for name in ["plain","digits","chat","reasoning"] {
    let r = candle_core::safetensors::load(format!("tests/fixtures/smollm2/{name}.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap().iter().map(|&x| x as u32).collect();
    let mut hooks = HookSet::new();
    for l in 0..30 { hooks = hooks.capture(HookPoint::AttnPattern(l)); }
    let out = loaded.model.forward(Input::Ids(&ids), &mut KvCache::new(&loaded.model), &mut hooks).unwrap();
    let lg = out.logits.unwrap().squeeze(0).unwrap();
    let t = lg.dim(0).unwrap();
    let last = lg.get(t-1).unwrap().to_vec1::<f32>().unwrap();
    let wl = r["logits_last"].to_vec1::<f32>().unwrap();
    let m = last.iter().zip(&wl).map(|(a,b)| (a-b).abs()).fold(0f32, f32::max);
    let all = lg.narrow(1,0,1024).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let wa = r["logits_vocab1024"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ma = all.iter().zip(&wa).map(|(a,b)| (a-b).abs()).fold(0f32, f32::max);
    let hd = out.hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let wh = r["final_hidden"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mh = hd.iter().zip(&wh).map(|(a,b)| (a-b).abs()).fold(0f32, f32::max);
    let hmax = wh.iter().fold(0f32, |m,x| m.max(x.abs()));
    println!("{name}: last logits max abs {m:.2e}; all-pos logits(1024) max abs {ma:.2e}; hidden max abs {mh:.2e} (|h| max {hmax:.1})");
    if name != "plain" { continue; }
    let want = r["attentions"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let per = want.len() / 30;
    for l in 0..30 {
        let got = hooks.captured(&HookPoint::AttnPattern(l)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w = &want[l*per..(l+1)*per];
        let (mut amax, mut rmax) = (0f32, 0f32);
        for (a, b) in got.iter().zip(w) { let d = (a-b).abs(); amax = amax.max(d); if *b > 1e-3 { rmax = rmax.max(d / b); } }
        if l % 10 == 0 { println!("layer {l}: max abs {amax:.2e}  max rel (ref>1e-3) {rmax:.2e}"); }
    }
    }
}
#[allow(dead_code)]
fn unused() {}
