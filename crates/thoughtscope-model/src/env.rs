//! The one primitive every environment read in this crate goes through (below the settings, the
//! kernels and the progress reporter, so each can use it without depending on another).

/// A variable's value as text (lossy), when set.
pub(crate) fn env_text(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}
