//! The library's error type: every variant names the file, field or index it is about, so a
//! user can fix the input without reading the source.

use std::path::PathBuf;

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
    #[error("cache entry {path}: field `{field}` differs (cached {cached}, requested {requested})")]
    CacheMismatch { path: PathBuf, field: String, cached: String, requested: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
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
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Other(format!("tokenizer: {e}"))
    }
}
