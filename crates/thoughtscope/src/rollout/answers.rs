//! Answer handling of resampled rollouts, re-stated from thought-anchors `utils.py`
//! (`extract_boxed_answers`, `normalize_answer` / `normalize_latex`, `check_answer`).
//!
//! - [`extract_boxed_answers`]: every `\boxed{` with its braces balanced (nested braces kept in
//!   the answer); an unclosed box takes the rest of the text; empty boxes are dropped; no box at
//!   all, or only empty ones, gives `[""]` (upstream's sentinel, so `answers[0]` always exists).
//! - [`normalize_answer`]: upstream's `normalize_answer(answer, use_sympy=False)`, i.e.
//!   `normalize_latex`, its steps in its order: Python `strip()` and `lower()`; `dfrac`/`tfrac` →
//!   `frac`; every whitespace character removed; `\%` and `{,}` removed; `\times`/`\cdot` → `*`;
//!   `(\d+)[.,](\d+)` → `\1.\2` (one left-to-right pass, so `1,234,567` → `1.234,567`); one pass
//!   of `{([^{}]+)}` → `\1` (innermost braces only); `\pi` → `pi`; `\text{…}`/`\mathrm{…}`
//!   unwrapped; `([a-z]+)\\+\s*(\d+)` → `\1\2`; remaining `\text` removed. It is not idempotent
//!   (each call peels one more level of braces), which the importance metrics rely on where
//!   upstream normalises an answer several times.
//! - [`check_answer`]: equal after [`normalize_answer`] → true, as upstream. Where that fails,
//!   upstream calls sympy (`parse_latex(...).equals(...)` after `prepare_latex_for_sympy`), and
//!   that call needs `antlr4-python3-runtime`, which upstream's `requirements.txt` does not list:
//!   installed from it, the fallback raises, is caught, and answers `False`. We do not run
//!   anything symbolic. Instead, after the same clean-up upstream gives sympy (`\boxed{}` peeled,
//!   `\dfrac`/`\tfrac` → `\frac`, `\left`/`\right`/`\text`/`\textbf`/`\mathrm`/`\!` and every
//!   comma removed), both sides must be *plain numbers*: an optionally signed integer, decimal
//!   (`0.5`; not `.5`, which sympy's LaTeX grammar rejects; no leading zeros), `a/b`, or `\frac{a}{b}` / `\frac ab` of integers; they are then compared as
//!   exact rationals. So `0.5` = `\frac{1}{2}` = `1/2`, `1,000` = `1000` and `2.50` = `2.5`, as
//!   sympy with antlr finds; anything else (`\sqrt{2}`, `x+1`, `2\pi`, intervals, sets) is
//!   unequal unless the normalised strings match. This is conservative against sympy: every
//!   pair we call equal, sympy calls equal too (the enumerated cases are checked in the tests),
//!   while sympy also finds symbolic equalities (`\sqrt{4}` = `2`) that we do not.

use std::sync::LazyLock;

use regex::Regex;

use crate::attention::pystr::{is_py_space, py_strip};

/// Every `\boxed{...}` answer of `text`, in order, braces balanced; `[""]` when there is none.
pub fn extract_boxed_answers(text: &str) -> Vec<String> {
    const OPEN: &str = "\\boxed{";
    let mut answers = Vec::new();
    for (start, _) in text.match_indices(OPEN) {
        let mut depth = 1usize;
        let mut answer = String::new();
        for c in text[start + OPEN.len()..].chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            answer.push(c);
        }
        if !answer.is_empty() {
            answers.push(answer);
        }
    }
    if answers.is_empty() {
        answers.push(String::new());
    }
    answers
}

static DECIMAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\d+)[.,](\d+)").unwrap());
static INNER_BRACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{([^{}]+)\}").unwrap());
static TEXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\text\{([^{}]+)\}").unwrap());
static MATHRM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\mathrm\{([^{}]+)\}").unwrap());
// Python's `\s` is Unicode whitespace plus U+001C–U+001F; whitespace is already gone here, but
// the class is kept as upstream writes it.
static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([a-z]+)\\+[\s\x{1c}-\x{1f}]*(\d+)").unwrap());

/// Upstream's `normalize_answer` (= `normalize_latex`; see the module doc for the steps).
pub fn normalize_answer(answer: &str) -> String {
    let mut s = py_strip(answer).to_lowercase();
    s = s.replace("dfrac", "frac").replace("tfrac", "frac");
    s.retain(|c| !is_py_space(c));
    s = s.replace("\\%", "").replace("{,}", "");
    s = s.replace("\\times", "*").replace("\\cdot", "*");
    s = DECIMAL.replace_all(&s, "${1}.${2}").into_owned();
    s = INNER_BRACES.replace_all(&s, "${1}").into_owned();
    s = s.replace("\\pi", "pi");
    s = TEXT.replace_all(&s, "${1}").into_owned();
    s = MATHRM.replace_all(&s, "${1}").into_owned();
    s = DATE.replace_all(&s, "${1}${2}").into_owned();
    s.replace("\\text", "")
}

/// Whether `answer` matches `gold`: equal after [`normalize_answer`], or both plain numbers of
/// equal value (see the module doc for what replaces upstream's sympy fallback).
pub fn check_answer(answer: &str, gold: &str) -> bool {
    if normalize_answer(answer) == normalize_answer(gold) {
        return true;
    }
    match (plain_number(&prepare_like_sympy(answer)), plain_number(&prepare_like_sympy(gold))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

static BOXED_LAZY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{(.*?)\}").unwrap());

/// Upstream's `prepare_latex_for_sympy` clean-up (`\cdot`/`\times`/`\div` become operators there;
/// here they simply make the string a non-number).
fn prepare_like_sympy(s: &str) -> String {
    let mut s = BOXED_LAZY.replace_all(s, "${1}").into_owned();
    for (old, new) in [
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cdot", "*"),
        ("\\times", "*"),
        ("\\div", "/"),
        ("\\left", ""),
        ("\\right", ""),
        ("\\textbf", ""),
        ("\\text", ""),
        ("\\mathrm", ""),
        ("\\!", ""),
        (",", ""),
    ] {
        s = s.replace(old, new);
    }
    s
}

/// An exact rational `numerator / denominator` in lowest terms, denominator > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rational {
    numerator: i128,
    denominator: i128,
}

impl Rational {
    fn new(numerator: i128, denominator: i128) -> Option<Rational> {
        if denominator == 0 {
            return None;
        }
        let g = gcd(numerator.unsigned_abs(), denominator.unsigned_abs()).max(1) as i128;
        let sign = if denominator < 0 { -1 } else { 1 };
        Some(Rational { numerator: sign * numerator / g, denominator: sign * denominator / g })
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// Integers without leading zeros: sympy's LaTeX grammar reads `007` as something other than 7.
static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:0|[1-9][0-9]{0,29})$").unwrap());
static DECIMAL_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(0|[1-9][0-9]{0,29})\.([0-9]{1,30})$").unwrap());
static SLASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(0|[1-9][0-9]{0,29})/(0|[1-9][0-9]{0,29})$").unwrap());
static FRAC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\\frac(?:\{(0|[1-9][0-9]{0,29})\}|([0-9]))(?:\{(0|[1-9][0-9]{0,29})\}|([0-9]))$").unwrap()
});

/// `s` (surrounding whitespace ignored) as a plain signed number, else `None`.
fn plain_number(s: &str) -> Option<Rational> {
    let s = py_strip(s);
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let int = |digits: &str| digits.parse::<i128>().ok();
    let value = if INTEGER.is_match(body) {
        Rational::new(int(body)?, 1)?
    } else if let Some(c) = DECIMAL_NUMBER.captures(body) {
        let (whole, fraction) = (int(&c[1])?, &c[2]);
        let scale = 10i128.checked_pow(fraction.len() as u32)?;
        Rational::new(whole.checked_mul(scale)?.checked_add(int(fraction)?)?, scale)?
    } else if let Some(c) = SLASH.captures(body) {
        Rational::new(int(&c[1])?, int(&c[2])?)?
    } else if let Some(c) = FRAC.captures(body) {
        let top = c.get(1).or(c.get(2))?.as_str();
        let bottom = c.get(3).or(c.get(4))?.as_str();
        Rational::new(int(top)?, int(bottom)?)?
    } else {
        return None;
    };
    Some(Rational { numerator: sign * value.numerator, ..value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_answers_balance_nested_braces() {
        assert_eq!(extract_boxed_answers("so \\boxed{\\frac{1}{2}}."), ["\\frac{1}{2}"]);
        assert_eq!(extract_boxed_answers("\\boxed{3} then \\boxed{4}"), ["3", "4"]);
        assert_eq!(extract_boxed_answers("no box"), [""]);
        assert_eq!(extract_boxed_answers("\\boxed{} and \\boxed{}"), [""]);
        assert_eq!(extract_boxed_answers("\\boxed{} \\boxed{7}"), ["7"]);
        // Unclosed: the rest of the text, inner braces kept.
        assert_eq!(extract_boxed_answers("\\boxed{a{b}c"), ["a{b}c"]);
        assert_eq!(extract_boxed_answers("\\boxed{é{ü}}"), ["é{ü}"]);
        // A box inside a box is found twice, as upstream's finditer does.
        assert_eq!(extract_boxed_answers("\\boxed{\\boxed{5}}"), ["\\boxed{5}", "5"]);
    }

    #[test]
    fn normalisation_follows_upstreams_steps_in_order() {
        for (raw, normalized) in [
            ("  \\dfrac{1}{2} ", "\\frac12"),
            ("50\\%", "50"),
            ("1{,}000", "1000"),
            ("1,234,567", "1.234,567"),
            ("3 \\times 4", "3*4"),
            ("2\\cdot\\pi", "2*pi"),
            ("\\text{ October } 30", "october30"),
            ("{{x}}", "{x}"),
            ("\\text{{ab}}", "ab"),
            ("October\\ 30", "october30"),
            ("\\mathrm{cm}", "\\mathrmcm"),
            ("A\tB\u{1c}C", "abc"),
            ("", ""),
        ] {
            assert_eq!(normalize_answer(raw), normalized, "{raw:?}");
        }
        // Not idempotent: each call peels one level of braces.
        assert_eq!(normalize_answer(&normalize_answer("{{x}}")), "x");
    }

    #[test]
    fn checking_is_normalised_equality_or_equal_plain_numbers() {
        for (a, b) in [("\\dfrac{1}{2}", "\\frac{1}{2}"), ("0.5", "\\frac{1}{2}"), ("1/2", "0.5"), ("1,000", "1000"), ("2.50", "2.5"), ("-\\frac34", "-0.75"), ("\\boxed{7}", "7"), ("+3", "3")] {
            assert!(check_answer(a, b), "{a} vs {b}");
        }
        for (a, b) in [("\\sqrt{4}", "2"), ("0.333", "\\frac13"), ("x+1", "1+x"), ("2", "-2"), ("1/0", "1/0x"), ("", "0"), ("(1,2)", "12"), ("007", "7")] {
            assert!(!check_answer(a, b), "{a} vs {b}");
        }
    }
}
