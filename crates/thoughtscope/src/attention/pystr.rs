//! Python `str` semantics that upstream's text code relies on, in code points.
//!
//! Python's `str.isspace`, `str.strip`, `str.split()` and the `re` class `\s` agree on one set of
//! whitespace characters, which is Rust's `char::is_whitespace` (Unicode `White_Space`) plus the
//! four information separators U+001C–U+001F. All upstream indices are code-point indices, so the
//! helpers here work on `&[char]` and convert to byte offsets only where a `&str` is needed.

/// Python `str.isspace` (and `re`'s `\s` for `str` patterns) for one character.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `re`'s `\w` for `str` patterns, approximated as `char::is_alphanumeric` or `_`.
/// Python uses `str.isalnum` (letters `L*`, and characters with a numeric type); the two differ
/// only for a few marks and numerals, and upstream uses `\b` only in a last-resort search.
pub(crate) fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python `str.strip()` (no argument).
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python `re.sub(r"\s+", replacement, s)` for a one-character or empty replacement.
pub(crate) fn collapse_space(s: &[char], replacement: Option<char>) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len());
    let mut in_run = false;
    for &c in s {
        if is_py_space(c) {
            if !in_run {
                out.extend(replacement);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Python `re.sub(r"\s+", " ", s).strip()`.
pub(crate) fn collapse_and_strip(s: &[char]) -> Vec<char> {
    let collapsed = collapse_space(s, Some(' '));
    let start = collapsed.iter().position(|&c| !is_py_space(c)).unwrap_or(collapsed.len());
    let end = collapsed.iter().rposition(|&c| !is_py_space(c)).map_or(start, |e| e + 1);
    collapsed[start..end].to_vec()
}

/// A string with a code-point view, for Python-style indexing and `find`.
#[derive(Debug, Clone)]
pub struct CodePoints<'a> {
    pub text: &'a str,
    pub chars: Vec<char>,
    /// `byte_at[i]` = byte offset of code point `i`; `byte_at[len]` = `text.len()`.
    byte_at: Vec<usize>,
}

impl<'a> CodePoints<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut chars = Vec::with_capacity(text.len());
        let mut byte_at = Vec::with_capacity(text.len() + 1);
        for (b, c) in text.char_indices() {
            chars.push(c);
            byte_at.push(b);
        }
        byte_at.push(text.len());
        CodePoints { text, chars, byte_at }
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Byte offset of code point `i` (clamped to the end, as Python slicing clamps).
    pub fn byte(&self, i: usize) -> usize {
        self.byte_at[i.min(self.chars.len())]
    }

    /// `text[start:end]` in code points (clamped like a Python slice).
    pub fn slice(&self, start: usize, end: usize) -> &'a str {
        let end = end.min(self.len());
        let start = start.min(end);
        &self.text[self.byte(start)..self.byte(end)]
    }

    /// Python `text.find(needle, from)`: code-point index of the first occurrence at or after
    /// `from`.
    pub fn find(&self, needle: &str, from: usize) -> Option<usize> {
        if from > self.len() {
            return None;
        }
        let byte_from = self.byte(from);
        let found = self.text[byte_from..].find(needle)? + byte_from;
        // The match starts on a char boundary, so it is one of the recorded offsets.
        Some(self.byte_at.binary_search(&found).expect("match starts on a char boundary"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_information_separators() {
        assert!(is_py_space('\u{1c}') && is_py_space('\u{1f}') && is_py_space('\u{3000}'));
        assert!(!is_py_space('\u{200b}') && !is_py_space('\u{feff}'));
        assert_eq!(py_strip("\u{1d} a b\u{a0}\n"), "a b");
    }

    #[test]
    fn collapse_matches_re_sub() {
        let s: Vec<char> = "  a \n\t b  c ".chars().collect();
        assert_eq!(collapse_space(&s, None).iter().collect::<String>(), "abc");
        assert_eq!(collapse_and_strip(&s).iter().collect::<String>(), "a b c");
    }

    #[test]
    fn find_uses_code_points() {
        let cp = CodePoints::new("₁₆ ab ₁₆ ab");
        assert_eq!(cp.find("ab", 0), Some(3));
        assert_eq!(cp.find("ab", 4), Some(9));
        assert_eq!(cp.find("zz", 0), None);
        assert_eq!(cp.slice(0, 2), "₁₆");
        assert_eq!(cp.slice(9, 100), "ab");
    }
}
