//! The library's error type: every variant names the file, field or index it is about, so a
//! user can fix the input without reading the source. Errors from candle, polars and serde_json
//! get what was being done attached ([`Context::while_doing`]), and print as one chain:
//! `writing analysis/x/summary.csv: polars: …`.
//!
//! The model crate has the same type without the polars variant ([`ModelError`], re-exported as
//! `thoughtscope::model::Error`); the two convert into each other variant for variant, so an
//! error keeps its variant and its message whichever layer it crosses.

use std::path::PathBuf;

use thoughtscope_model::Error as ModelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// A file's content is malformed: `what` says which field and what was expected.
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    /// An argument or input value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A cache entry exists but was made with different settings.
    #[error("cache entry {path}: field `{field}` differs (cached {cached}, requested {requested}); remove it or choose another cache or output folder to start afresh")]
    CacheMismatch { path: PathBuf, field: String, cached: String, requested: String },
    /// `source` happened while doing `what` (a file, a tensor, a column).
    #[error("{what}: {source}")]
    Context { what: String, #[source] source: Box<Error> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Memory for a large buffer could not be had (the model crate's
    /// [`OutOfMemory`](thoughtscope_model::Error::OutOfMemory)).
    #[error("out of memory: {what} needs {bytes} bytes ({gib:.2} GiB), which could not be allocated; free memory, raise the limit (ulimit -v) or give a smaller input", gib = *bytes as f64 / (1u64 << 30) as f64)]
    OutOfMemory { what: String, bytes: u64 },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format { path: path.into(), what: what.into() }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// This error, saying it happened while doing `what`.
    pub fn context(self, what: impl Into<String>) -> Self {
        Error::Context { what: what.into(), source: Box::new(self) }
    }
    /// The machine, not the input, is at fault (the model crate's
    /// [`is_environmental`](thoughtscope_model::Error::is_environmental)): such an error fails a
    /// whole command instead of one item's status.
    pub fn is_environmental(&self) -> bool {
        match self {
            Error::Io { source, .. } => thoughtscope_model::io_error_is_environmental(source),
            Error::Context { source, .. } => source.is_environmental(),
            Error::Candle(candle_core::Error::Io(source)) => thoughtscope_model::io_error_is_environmental(source),
            Error::OutOfMemory { .. } => true,
            _ => false,
        }
    }
}

/// A model-crate error as this library's: the same variant, the same message.
impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Io { path, source } => Error::Io { path, source },
            ModelError::Format { path, what } => Error::Format { path, what },
            ModelError::Invalid(what) => Error::Invalid(what),
            ModelError::CacheMismatch { path, field, cached, requested } => {
                Error::CacheMismatch { path, field, cached, requested }
            }
            ModelError::Context { what, source } => Error::Context { what, source: Box::new(Error::from(*source)) },
            ModelError::Candle(e) => Error::Candle(e),
            ModelError::Json(e) => Error::Json(e),
            ModelError::OutOfMemory { what, bytes } => Error::OutOfMemory { what, bytes },
            ModelError::Other(what) => Error::Other(what),
        }
    }
}

/// This library's error where the model crate expects its own (an [`AttentionSink`] or hook this
/// library implements): the same variant, and polars' errors as `Other` with the same message.
///
/// [`AttentionSink`]: crate::model::AttentionSink
impl From<Error> for ModelError {
    fn from(e: Error) -> Self {
        match e {
            Error::Io { path, source } => ModelError::Io { path, source },
            Error::Format { path, what } => ModelError::Format { path, what },
            Error::Invalid(what) => ModelError::Invalid(what),
            Error::CacheMismatch { path, field, cached, requested } => {
                ModelError::CacheMismatch { path, field, cached, requested }
            }
            Error::Context { what, source } => ModelError::Context { what, source: Box::new(ModelError::from(*source)) },
            Error::Candle(e) => ModelError::Candle(e),
            Error::Polars(e) => ModelError::Other(format!("polars: {e}")),
            Error::Json(e) => ModelError::Json(e),
            Error::OutOfMemory { what, bytes } => ModelError::OutOfMemory { what, bytes },
            Error::Other(what) => ModelError::Other(what),
        }
    }
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Other(format!("tokenizer: {e}"))
    }
}

/// `.while_doing("reading X")` on any result whose error converts into [`Error`], as anyhow's
/// `context` does: the message gains what was being done. (Not named `context`: polars' prelude
/// brings its own `context` into scope in the modules that build tables.)
pub trait Context<T> {
    fn while_doing(self, what: impl Into<String>) -> Result<T>;
    /// [`Context::while_doing`] with the message built only on failure.
    fn while_doing_with(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn while_doing(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn while_doing_with(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_read_outermost_first() {
        let inner: Result<(), serde_json::Error> = serde_json::from_str::<u32>("x").map(|_| ());
        let err = inner.while_doing("parsing n").while_doing("reading run.json").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("reading run.json: parsing n: JSON: expected value"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
