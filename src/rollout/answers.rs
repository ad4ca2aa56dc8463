//! Answer handling of thought-anchors `utils.py`: `extract_boxed_answers`, `normalize_answer`
//! and `check_answer`, as the resampling engine and the importance metrics call them.
//!
//! A minimal version over the helpers of [`super::generate`] (brace-counted `\boxed{}`
//! contents, `normalize_latex`, equality after normalisation with a numeric fallback standing in
//! for upstream's SymPy equivalence).

/// Every non-empty `\boxed{…}` content in order (upstream returns `[""]` when there is none;
/// callers take the first or `""`, which treats both forms alike).
pub fn extract_boxed_answers(text: &str) -> Vec<String> {
    super::generate::extract_boxed_answers(text)
}

/// Upstream's `normalize_answer(answer)` with `use_sympy=False`: `normalize_latex`.
pub fn normalize_answer(answer: &str) -> String {
    super::generate::normalize_latex(answer)
}

/// Upstream's `check_answer`: equal after normalisation, else (SymPy's place) equal as numbers.
pub fn check_answer(answer: &str, gold: &str) -> bool {
    super::generate::check_answer(answer, gold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_boxed_answer_and_its_check() {
        let text = "so \\boxed{\\frac{1}{2}} and later \\boxed{7}";
        assert_eq!(extract_boxed_answers(text), vec!["\\frac{1}{2}".to_string(), "7".to_string()]);
        assert!(check_answer("\\dfrac{1}{2}", "\\frac{1}{2}"));
        assert!(!check_answer("8", "7"));
        assert_eq!(normalize_answer(" 7 "), "7");
    }
}
