use std::path::Path;
use thoughtscope::attention::*;
#[test]
fn dbg() {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tok = thoughtscope::model::Tokenizer::from_gguf(&content.metadata, &gguf).unwrap();
    let r = thoughtscope::rollout::Rollout::open("../shared/data/thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_2238").unwrap();
    let s = r.sentences(SentenceMode::FullCot).unwrap();
    let p = token_boundaries(tok.inner(), Some(1), &s.text, &s.sentences, BoundaryMode::Prefix).unwrap();
    let o = token_boundaries(tok.inner(), Some(1), &s.text, &s.sentences, BoundaryMode::Offsets).unwrap();
    let enc = tok.inner().encode(s.text.as_str(), false).unwrap();
    for k in 1..s.len() {
        if p.ranges[k].0 == o.ranges[k].0 {
            let t = o.ranges[k].0 - 1;
            eprintln!("k={k} start {} prev end {:?} next {:?} toks {:?}", p.ranges[k].0, &s.sentences[k-1][s.sentences[k-1].len().saturating_sub(20)..], &s.sentences[k][..20], &enc.get_tokens()[t-2..t+2]);
        }
    }
}
