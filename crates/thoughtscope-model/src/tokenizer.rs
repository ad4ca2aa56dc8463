//! Tokenizers: from an HF `tokenizer.json` (+ `tokenizer_config.json` for the BOS rule and chat
//! template), or built from GGUF metadata with the pre-tokenizer its `tokenizer.ggml.pre` names
//! (candle's own GGUF builder is wrong for `smollm` and `llama-bpe`).
//!
//! BOS: `encode` returns what HF `tokenizer(text)["input_ids"]` gives, i.e. BOS prepended when the
//! model adds one. R1-Distill checkpoints ask for it in `tokenizer_config.json` (`add_bos_token`)
//! while their `tokenizer.json` has no template for it (HF transformers adds it, `tokenizers` does not),
//! so BOS is handled here and never by the inner tokenizer's post-processor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

/// GPT-2's pre-tokenizer regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_GPT2`).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama-3's pre-tokenizer regex (also `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (digits one at a time).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the model-level rules HF applies around it.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Where it came from, for cache manifests (`tokenizer.json:<sha16>` or `gguf:<pre>:<sha16>`).
    identity: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("identity", &self.identity)
            .finish()
    }
}

/// One chat message, as the analysis library's `chat::apply_chat_template` renders them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: "system".into(), content: content.into() }
    }
}

fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Tokenizer {
    /// Load `tokenizer.json`; `tokenizer_config.json` beside it (if any) gives the BOS rule, EOS
    /// and chat template.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::format(path, format!("not a tokenizer.json: {e}")))?;
        let mut tok = Tokenizer {
            inner,
            bos: None,
            eos: vec![],
            chat_template: None,
            bos_token: None,
            eos_token: None,
            identity: format!("tokenizer.json:{}", short_hash(&bytes)),
        };
        // The post-processor's own BOS (e.g. Llama-3's TemplateProcessing) becomes ours.
        let with = tok.inner.encode("a", true).map_err(|e| Error::format(path, e.to_string()))?;
        let without = tok.inner.encode("a", false).map_err(|e| Error::format(path, e.to_string()))?;
        if with.get_ids().len() > without.get_ids().len() {
            tok.bos = with.get_ids().first().copied();
        }
        let config_path = path.with_file_name("tokenizer_config.json");
        if config_path.exists() {
            tok.apply_tokenizer_config(&config_path)?;
        }
        Ok(tok)
    }

    fn apply_tokenizer_config(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        let token_str = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                _ => None,
            }
        };
        self.bos_token = token_str("bos_token");
        self.eos_token = token_str("eos_token");
        if let Some(eos) = self.eos_token.as_deref().and_then(|t| self.inner.token_to_id(t)) {
            self.eos = vec![eos];
        }
        match cfg.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(true) => {
                let name = self.bos_token.clone().ok_or_else(|| {
                    Error::format(path, "field `add_bos_token` is true but `bos_token` is missing")
                })?;
                let id = self.inner.token_to_id(&name).ok_or_else(|| {
                    Error::format(path, format!("field `bos_token`: `{name}` is not in the vocabulary"))
                })?;
                self.bos = Some(id);
            }
            Some(false) => self.bos = None,
            None => {}
        }
        if let Some(t) = cfg.get("chat_template").and_then(|v| v.as_str()) {
            self.chat_template = Some(t.to_string());
        }
        Ok(())
    }

    /// Build the tokenizer stored in GGUF metadata (`tokenizer.ggml.*`), BPE (`gpt2`) only.
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>, path: &Path) -> Result<Tokenizer> {
        let get = |key: &str| {
            metadata.get(key).ok_or_else(|| Error::format(path, format!("missing GGUF metadata key `{key}`")))
        };
        let string = |key: &str| -> Result<String> {
            get(key)?.to_string().cloned().map_err(|e| Error::format(path, format!("`{key}`: {e}")))
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            get(key)?
                .to_vec()
                .map_err(|e| Error::format(path, format!("`{key}`: {e}")))?
                .iter()
                .map(|v| v.to_string().cloned().map_err(|e| Error::format(path, format!("`{key}`: {e}"))))
                .collect()
        };
        let id = |key: &str| -> Option<u32> { metadata.get(key).and_then(|v| v.to_u32().ok()) };

        let model = string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::format(
                path,
                format!("`tokenizer.ggml.model` = `{model}`: only byte-level BPE (`gpt2`) is supported; pass a tokenizer.json"),
            ));
        }
        let pre = string("tokenizer.ggml.pre").unwrap_or_else(|_| "default".to_string());
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| Error::format(path, format!("`tokenizer.ggml.token_type`: {e}")))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };

        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::format(path, format!("`tokenizer.ggml.merges`: malformed merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        let (pre_tokenizer, ignore_merges, nfc) = pre_tokenizer_for(&pre)
            .ok_or_else(|| Error::format(path, format!("`tokenizer.ggml.pre` = `{pre}`: unknown pre-tokenizer")))?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| Error::format(path, format!("building BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        if nfc {
            inner
                .with_normalizer(Some(tokenizers::normalizers::unicode::NFC))
                .map_err(|e| Error::format(path, e.to_string()))?;
        }
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, &t)| AddedToken::from(s.clone(), t == 3).normalized(false))
            .collect();
        inner.add_special_tokens(special).map_err(|e| Error::format(path, format!("special tokens: {e}")))?;

        let bos_id = id("tokenizer.ggml.bos_token_id");
        // llama.cpp's converter writes add_bos_token; without it, follow the SmolLM rule (no BOS).
        let add_bos = metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        let chat_template = metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let name = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize)).cloned();
        let mut hash_input = tokens.join("\u{0}").into_bytes();
        hash_input.extend(pre.as_bytes());
        Ok(Tokenizer {
            inner,
            bos: if add_bos { bos_id } else { None },
            bos_token: name(bos_id),
            eos_token: name(eos.first().copied()),
            eos,
            chat_template,
            identity: format!("gguf:{pre}:{}", short_hash(&hash_input)),
        })
    }

    /// Token ids as HF `tokenizer(text)["input_ids"]`: BOS first when the model adds it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.extend(self.bos);
        ids.extend(self.encode_raw(text)?);
        Ok(ids)
    }

    /// Token ids without BOS (HF `add_special_tokens=False`).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        Ok(self.inner.decode(ids, skip_special)?)
    }

    /// The BOS id that `encode` prepends (`None` when the model adds no BOS).
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// Force the BOS rule (registry entries know better than some tokenizer files).
    pub fn set_bos(&mut self, bos: Option<u32>) {
        self.bos = bos;
    }
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn identity(&self) -> &str {
        &self.identity
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    /// The wrapped `tokenizers::Tokenizer` (adds no BOS by itself).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The BOS token's text, as `tokenizer_config.json` or the GGUF header names it.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }
    /// The EOS token's text, as `tokenizer_config.json` or the GGUF header names it.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value, whether BPE ignores merges
/// for whole-vocabulary words (Llama-3), and whether text is NFC-normalised first (Qwen2).
fn pre_tokenizer_for(pre: &str) -> Option<(PreTokenizerWrapper, bool, bool)> {
    let split = |re: &str| -> PreTokenizerWrapper {
        Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .expect("static regex compiles")
            .into()
    };
    let byte_level = |use_regex: bool| -> PreTokenizerWrapper { ByteLevel::new(false, true, use_regex).into() };
    Some(match pre {
        // SmolLM / StarCoder: every digit alone, then the GPT-2 regex.
        "smollm" | "starcoder" => {
            (Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(), false, false)
        }
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => {
            (Sequence::new(vec![split(LLAMA3_REGEX), byte_level(false)]).into(), true, false)
        }
        "qwen2" | "deepseek-r1-qwen" => (Sequence::new(vec![split(QWEN2_REGEX), byte_level(false)]).into(), false, true),
        "gpt-2" | "gpt2" | "default" => (Sequence::new(vec![split(GPT2_REGEX), byte_level(false)]).into(), false, false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pre_tokenizers_build() {
        for pre in ["smollm", "llama-bpe", "qwen2", "gpt-2"] {
            assert!(pre_tokenizer_for(pre).is_some(), "{pre}");
        }
        assert!(pre_tokenizer_for("mystery").is_none());
    }
}
