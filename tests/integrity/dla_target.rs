//! `codi decompose`'s `gold_answer_first` target is the first token of the number, not the space
//! token that SmolLM2's tokenizer (and Llama-3's) puts after `"The answer is:"`. Before, every
//! DLA table explained the logit of `' '`.

use crate::support;

use thoughtscope::codi::latent::thought_loop::{gold_answer_target, gold_number_token};
use thoughtscope::model::Settings;

#[test]
fn the_dla_target_is_the_first_token_of_the_number_with_a_tokenizer_that_keeps_spaces() {
    let tokenizer = match thoughtscope::model::load_tokenizer("smollm2-135m", &Settings::default()) {
        Ok(tokenizer) => tokenizer,
        Err(e) => return support::skip(format!("SmolLM2 GGUF absent ({e}); run scripts/fetch-model.sh")),
    };
    let tokenizer = &tokenizer;
    for (gold, first_char) in [("5", "5"), ("42", "4"), ("1234", "1")] {
        let (tokens, first_scored) = gold_answer_target_of(tokenizer, gold);
        // The tokenizer really keeps the space as a token of its own: the old target.
        assert_eq!(tokenizer.decode(&[tokens[first_scored]], false).unwrap(), " ", "{gold}: the case this test is for");
        let (token, index) = gold_number_token(tokenizer, gold).unwrap();
        let text = tokenizer.decode(&[token], false).unwrap();
        assert_eq!(text.trim(), first_char, "{gold}: target token {token} is {text:?}");
        assert_eq!(tokens[index], token);
        assert!(index > first_scored);
    }
}

/// [`gold_answer_target`] needs a CODI model; the same tokens from the tokenizer alone.
fn gold_answer_target_of(tokenizer: &thoughtscope::model::Tokenizer, gold: &str) -> (Vec<u32>, usize) {
    let _ = gold_answer_target; // the function whose rule this restates
    let prefix = tokenizer.encode_raw("The answer is:").unwrap();
    let full = tokenizer.encode_raw(&format!("The answer is: {gold}")).unwrap();
    assert!(full.starts_with(&prefix));
    (full, prefix.len())
}
