//! Chat templates: a model's Jinja template rendered over a conversation, as HF transformers'
//! `apply_chat_template(tokenize=False)` does (with Python string methods through
//! minijinja-contrib's `pycompat`). Here and not in the model crate, which keeps no template
//! engine; the template and the BOS/EOS texts it uses come from the [`Tokenizer`].

use crate::model::{ChatMessage, Tokenizer};
use crate::{Error, Result};

/// Render `tokenizer`'s chat template over `messages`; with `add_generation_prompt`, the
/// assistant turn's opening is appended (HF's `add_generation_prompt=True`).
pub fn apply_chat_template(tokenizer: &Tokenizer, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
    let template = tokenizer.chat_template().ok_or_else(|| Error::invalid("this tokenizer has no chat template"))?;
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| Error::invalid(format!("chat template: {e}")))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => tokenizer.bos_token().unwrap_or_default(),
        eos_token => tokenizer.eos_token().unwrap_or_default(),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::invalid(format!("chat template: {e}")))
}
