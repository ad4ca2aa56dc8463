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
