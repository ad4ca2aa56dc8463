//! The real SmolLM2-135M GGUF (fetched by scripts/fetch-model.sh): loading, tokenizer, and parity
//! with HF transformers (eager, f32) on fixtures made by scripts/make_fixtures.py.

use crate::support;
use support::smollm2;
use thoughtscope::chat::apply_chat_template;
use thoughtscope::model::{generate, ChatMessage, GenerateOptions};


#[test]
fn loads_gguf_and_generates() {
    let Some(loaded) = smollm2() else { return };
    let cfg = loaded.model.config();
    assert_eq!((cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim()), (30, 9, 3, 64));
    assert_eq!(loaded.tokenizer.bos(), None);
    let prompt = apply_chat_template(&loaded.tokenizer, &[ChatMessage::user("What is 2 + 3?")], true).unwrap();
    let ids = loaded.tokenizer.encode(&prompt).unwrap();
    let mut stop = loaded.tokenizer.eos().to_vec();
    stop.extend(loaded.tokenizer.token_to_id("<|im_end|>"));
    let out = generate(&loaded.model, &ids, &GenerateOptions { max_new_tokens: 12, stop, ..Default::default() }).unwrap();
    let text = loaded.tokenizer.decode(&out.ids, true).unwrap();
    eprintln!("prompt {prompt:?}\n-> {text:?}");
    assert!(!text.trim().is_empty());
}

/// A decode step over a batch of 20 sequences (more than the 16 rows from which products of
/// several positions take the packed GEMM) gives every sequence the logits it gets alone, bit for
/// bit: decode steps take the row-independent one-pass kernels whatever the batch. The batch's
/// cache has room reserved (its step writes keys and values in place), the single runs' do not.
#[test]
fn a_decode_step_over_a_large_batch_equals_each_sequence_alone() {
    use thoughtscope::model::{Input, KvCache, Logits, NoHooks};
    let Some(loaded) = smollm2() else { return };
    let model = &loaded.model;
    let ids = loaded.tokenizer.encode("Tom has 7 apples and buys 5 more. How many").unwrap();
    let mut prefix = KvCache::new(model);
    model.forward_with(Input::Ids(&ids), &mut prefix, &mut NoHooks, Logits::Last).unwrap();
    let next: Vec<u32> = (0..20).map(|i| 100 + 37 * i).collect();
    let hidden = model.config().hidden_size;
    let step = |cache: &mut KvCache, tokens: &[u32]| -> Vec<Vec<f32>> {
        let x = model.embed(tokens).unwrap().reshape((tokens.len(), 1, hidden)).unwrap();
        let out = model.forward_with(Input::Embeds(&x), cache, &mut NoHooks, Logits::Last).unwrap();
        out.logits().unwrap().squeeze(1).unwrap().to_vec2::<f32>().unwrap()
    };
    let mut reserved = prefix.clone();
    reserved.reserve(4).unwrap();
    let mut batch = KvCache::stack(&vec![&reserved; next.len()]).unwrap();
    let together = step(&mut batch, &next);
    // A second step writes after the first in place; row 7 again equals its run alone.
    let again = step(&mut batch, &next);
    for i in [0, 7, 19] {
        let mut alone = prefix.clone();
        let first = step(&mut alone, &next[i..=i]);
        assert!(first[0] == together[i], "row {i}: the batched step differs from the sequence alone");
        if i == 7 {
            assert!(step(&mut alone, &next[i..=i])[0] == again[i], "row {i}, second step");
        }
    }
    assert_eq!(prefix.len(), ids.len(), "the shared prefix is left as it was");
}
