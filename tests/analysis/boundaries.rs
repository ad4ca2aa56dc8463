//! Token boundaries (upstream `get_sentence_token_boundaries`) with a tiny byte-level BPE built here: the single-space shift of
//! prefix tokenisation, BOS counting, the `char_start == 0` rule, space normalisation,
//! the stripped-sentence fallback, and the corrected (offsets) mode.

use thoughtscope::attention::{sentence_char_positions, token_boundaries, BoundaryMode};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

/// Byte-level BPE: every byte alone, plus the merges `Ġ S` → `ĠS` and `ĠS o` → `ĠSo`, with GPT-2's
/// pre-tokenizer regex (a trailing space is its own pre-token; " So" is one).
fn tiny_tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = ByteLevel::alphabet().into_iter().map(|c| c.to_string()).collect();
    tokens.sort();
    tokens.extend(["ĠS".to_string(), "ĠSo".to_string()]);
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = vec![("Ġ".to_string(), "S".to_string()), ("ĠS".to_string(), "o".to_string())];
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().unwrap();
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer
}

const TEXT: &str = "P. Ab. So cd. So ef.";
const SENTENCES: [&str; 3] = ["Ab. ", "So cd. ", "So ef."];

#[test]
fn prefix_mode_credits_the_leading_space_token_to_the_previous_sentence() {
    let tok = tiny_tokenizer();
    // Full text: P . Ġ A b . ĠSo Ġ c d . ĠSo Ġ e f .  (16 tokens)
    assert_eq!(tok.encode(TEXT, false).unwrap().len(), 16);
    let prefix = token_boundaries(&tok, None, TEXT, &SENTENCES, BoundaryMode::Prefix).unwrap();
    assert_eq!(prefix.ranges, vec![(3, 7), (7, 12), (12, 16)]);
    assert_eq!(prefix.n_tokens, 16);
    // Corrected: "ĠSo" (index 6) starts sentence 1, "ĠSo" (index 11) sentence 2.
    let offsets = token_boundaries(&tok, None, TEXT, &SENTENCES, BoundaryMode::Offsets).unwrap();
    assert_eq!(offsets.ranges, vec![(3, 6), (6, 11), (11, 16)]);
}

#[test]
fn bos_is_counted_in_every_position() {
    let tok = tiny_tokenizer();
    let prefix = token_boundaries(&tok, Some(999), TEXT, &SENTENCES, BoundaryMode::Prefix).unwrap();
    assert_eq!(prefix.ranges, vec![(4, 8), (8, 13), (13, 17)]);
    assert_eq!(prefix.n_tokens, 17);
    let offsets = token_boundaries(&tok, Some(999), TEXT, &SENTENCES, BoundaryMode::Offsets).unwrap();
    assert_eq!(offsets.ranges, vec![(4, 7), (7, 12), (12, 17)]);
}

#[test]
fn sentence_at_char_zero_starts_at_token_zero() {
    // Upstream quirk: `tok_start = 0` when `char_start == 0`, so BOS joins it.
    let tok = tiny_tokenizer();
    let prefix = token_boundaries(&tok, Some(999), "Ab. So cd.", &["Ab. ", "So cd."], BoundaryMode::Prefix).unwrap();
    assert_eq!(prefix.ranges[0].0, 0);
    assert_eq!(prefix.ranges[0].1, 5); // BOS A b . Ġ
}

#[test]
fn unicode_spaces_are_normalised_for_the_search_only() {
    // The text has a no-break space; the sentence has an ASCII space. Positions are code points.
    let text = "₁₆.\u{a0}Ab. So cd.";
    let positions = sentence_char_positions(text, &["₁₆. ", "Ab. ", "So cd."]).unwrap();
    assert_eq!(positions, vec![(0, 4), (4, 8), (8, 14)]);
    // Tokenisation uses the original text: the NBSP is two bytes.
    let tok = tiny_tokenizer();
    let prefix = token_boundaries(&tok, None, text, &["₁₆. ", "Ab. ", "So cd."], BoundaryMode::Prefix).unwrap();
    let full = tok.encode(text, false).unwrap().len();
    assert_eq!(prefix.ranges.last().unwrap().1, full);
}

#[test]
fn stripped_sentence_fallback_and_missing_sentence() {
    // " Ab." is not in the text (no space before it), its stripped form is; the end is start + len(stripped).
    assert_eq!(sentence_char_positions("P.Ab.", &[" Ab."]).unwrap(), vec![(2, 5)]);
    let err = sentence_char_positions("P. Ab.", &["Zz."]).unwrap_err().to_string();
    assert!(err.contains("sentence 0 not found"), "{err}");
    // Searching is sequential: a sentence before the cursor is not found.
    assert!(sentence_char_positions("Ab. Cd.", &["Cd.", "Ab."]).is_err());
}
