use std::time::Instant;
use candle_core::Device;
use thoughtscope::attention::{AttentionBlock, AttentionSink};
use thoughtscope::model::{HookSet, Input, KvCache, Logits, Model, NoHooks};

struct Touch(f64);
impl AttentionSink for Touch {
    fn consume(&mut self, b: AttentionBlock<'_>) -> thoughtscope::Result<()> {
        self.0 += b.probs[0] as f64;
        Ok(())
    }
}

fn main() -> thoughtscope::Result<()> {
    let loaded = Model::load("smollm2-135m", &Device::Cpu)?;
    let path = std::env::args().nth(1).unwrap();
    let target: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(3000);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut text = v["full_cot"].as_str().unwrap().to_string();
    let mut ids = loaded.tokenizer.encode(&text)?;
    while ids.len() < target { text.push_str(&text.clone()); ids = loaded.tokenizer.encode(&text)?; }
    ids.truncate(target);
    println!("T = {}", ids.len());
    let t = Instant::now();
    loaded.model.forward_with(Input::Ids(&ids), &mut KvCache::new(&loaded.model), &mut NoHooks, Logits::None)?;
    println!("no sink: {:.2}s", t.elapsed().as_secs_f64());
    let mut sink = Touch(0.0);
    let mut hooks = HookSet::new().with_sink(&mut sink);
    let t = Instant::now();
    loaded.model.forward_with(Input::Ids(&ids), &mut KvCache::new(&loaded.model), &mut hooks, Logits::None)?;
    println!("touch sink: {:.2}s", t.elapsed().as_secs_f64());
    Ok(())
}
